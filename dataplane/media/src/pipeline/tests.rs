//! Pipelines driven deterministically: time is stepped, never slept.

use super::*;
use crate::codec::CodecSpec;
use crate::dtmf::{DtmfSender, DtmfSource, char_event};
use crate::g711::Law;
use crate::goertzel::{power_i16, sine};
use crate::latch::LatchConfig;
use crate::rtcp::ReportBlock;
use crate::rtcp::{Compound, CompoundWriter, RtcpPacket};
use crate::tap::TapEngine;
use std::time::SystemTime;

const FAR_A: &str = "198.51.100.10:40000";
const FAR_B: &str = "203.0.113.20:50000";
const ATTACKER: &str = "192.0.2.66:12345";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Sent {
    leg: Leg,
    kind: PacketKind,
    dst: SocketAddr,
    data: Vec<u8>,
}

struct Harness {
    p: Pipeline,
    now: Instant,
    sent: Vec<Sent>,
    events: Vec<Event>,
}

impl Harness {
    fn new(p: Pipeline, now: Instant) -> Self {
        Harness {
            p,
            now,
            sent: Vec::new(),
            events: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(t) = self.p.poll_transmit() {
            self.sent.push(Sent {
                leg: t.leg,
                kind: t.kind,
                dst: t.destination,
                data: t.data.to_vec(),
            });
        }
        while let Some(e) = self.p.poll_event() {
            self.events.push(e);
        }
    }

    fn rtp(&mut self, leg: Leg, src: &str, data: &[u8]) -> Verdict {
        let v = self.p.handle_rtp(self.now, leg, addr(src), data);
        self.drain();
        v
    }

    /// Runs every timeout up to `t` in order, as a worker would.
    fn advance_to(&mut self, t: Instant) {
        while let Some(due) = self.p.poll_timeout() {
            if due > t {
                break;
            }
            self.now = self.now.max(due);
            self.p.handle_timeout(self.now);
            self.drain();
        }
        self.now = self.now.max(t);
    }

    fn advance(&mut self, d: Duration) {
        let t = self.now + d;
        self.advance_to(t);
    }

    fn rtp_to(&self, leg: Leg) -> Vec<RtpPacket<'_>> {
        self.sent
            .iter()
            .filter(|s| s.leg == leg && !is_rtcp(&s.data) && s.kind == PacketKind::Rtp)
            .map(|s| RtpPacket::parse(&s.data).unwrap())
            .collect()
    }
}

/// An RTP packet from a far end.
fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 12 + payload.len()];
    RtpHeader {
        marker,
        payload_type: pt,
        sequence: seq,
        timestamp: ts,
        ssrc,
    }
    .write_packet(payload, &mut b)
    .unwrap();
    b
}

fn leg(codec: CodecSpec, ssrc: u32, remote: &str) -> LegConfig {
    LegConfig {
        remote_rtp: Some(addr(remote)),
        first_seq: 1000,
        first_ts: 50_000,
        ..LegConfig::new(codec, ssrc)
    }
}

fn cfg() -> PipelineConfig {
    PipelineConfig {
        latch: LatchConfig {
            learn_packets: 3,
            learn_window: Duration::from_millis(500),
            ..LatchConfig::default()
        },
        ..PipelineConfig::default()
    }
}

fn ulaw_frame(x: &[i16]) -> Vec<u8> {
    let mut out = vec![0u8; x.len()];
    Law::Ulaw.encode(x, &mut out);
    out
}

#[test]
fn relay_rewrites_header_and_enforces_strict_source() {
    let t0 = Instant::now();
    let p = Pipeline::bridge(
        t0,
        cfg(),
        leg(CodecSpec::pcmu(), 0xaaaa, FAR_A),
        leg(
            CodecSpec {
                payload_type: 0,
                ..CodecSpec::pcmu()
            },
            0xbbbb,
            FAR_B,
        ),
    )
    .unwrap();
    assert!(!p.is_transcoding());
    let mut h = Harness::new(p, t0);
    for i in 0..10u16 {
        let v = h.rtp(
            Leg::A,
            FAR_A,
            &packet(
                0,
                7 + i,
                160 * u32::from(i),
                0x1234,
                i == 0,
                &[i as u8; 160],
            ),
        );
        assert_eq!(v, Verdict::Forwarded);
        h.now += PTIME;
    }
    let out = h.rtp_to(Leg::B);
    assert_eq!(out.len(), 10);
    for (i, p) in out.iter().enumerate() {
        assert_eq!(p.ssrc(), 0xbbbb);
        assert_eq!(p.sequence(), 1000 + i as u16);
        assert_eq!(p.timestamp(), 50_000 + 160 * i as u32);
        assert_eq!(p.payload(), &[i as u8; 160][..]);
        assert_eq!(p.marker(), i == 0);
    }
    assert!(h.sent.iter().all(|s| s.dst == addr(FAR_B)));
    assert_eq!(
        h.events[0],
        Event::Latched {
            leg: Leg::A,
            address: addr(FAR_A)
        }
    );

    // Latched: an attacker spraying valid RTP at the port forwards nothing.
    let before = h.sent.len();
    for i in 0..50u16 {
        let v = h.rtp(
            Leg::A,
            ATTACKER,
            &packet(0, 100 + i, 0, 0x666, false, &[0x55; 160]),
        );
        assert_eq!(v, Verdict::Dropped(DropReason::WrongSource));
    }
    // Garbage is dropped as malformed, wrong payload types as unknown.
    assert_eq!(
        h.rtp(Leg::A, FAR_A, &[0x80, 0, 1]),
        Verdict::Dropped(DropReason::Malformed)
    );
    assert_eq!(
        h.rtp(Leg::A, FAR_A, &packet(18, 1, 1, 0x1234, false, &[0; 20])),
        Verdict::Dropped(DropReason::UnknownPayloadType)
    );
    assert_eq!(h.sent.len(), before);
    let st = h.p.stats(Leg::A).unwrap();
    assert_eq!(
        (st.wrong_source, st.malformed, st.unknown_payload_type),
        (50, 1, 1)
    );
    assert_eq!(h.p.dropped_foreign(Leg::A), 50);
    assert_eq!(h.p.stats(Leg::B).unwrap().rtp_out, 10);
    // B has not sent yet: its destination is its SDP address.
    assert_eq!(h.p.destination(Leg::B), Some(addr(FAR_B)));
}

/// A far end behind NAT (its SDP names a private address) whose NAT
/// rebinds mid-call: its stream (same SSRC), from the same public IP on a
/// new port after a pause, is followed and reported as a latch; another
/// stream from that port is not, nor the old port afterwards.
#[test]
fn a_pipeline_leg_follows_its_nat_to_a_new_port() {
    let t0 = Instant::now();
    let p = Pipeline::bridge(
        t0,
        cfg(),
        leg(CodecSpec::pcmu(), 1, "10.0.0.5:4000"),
        leg(CodecSpec::pcma(), 2, FAR_B),
    )
    .unwrap();
    let mut h = Harness::new(p, t0);
    h.p.trust_source(Leg::A, Some(addr(FAR_A).ip()));
    let mut seq = 0u16;
    let mut send = |h: &mut Harness, from: SocketAddr, ssrc: u32| {
        seq += 1;
        let ts = 160 * u32::from(seq);
        let at = format!("{from}");
        h.rtp(Leg::A, &at, &packet(0, seq, ts, ssrc, false, &[0x55; 160]))
    };
    let old = addr(FAR_A);
    for _ in 0..5 {
        assert_ne!(
            send(&mut h, old, 77),
            Verdict::Dropped(DropReason::WrongSource)
        );
        h.now += PTIME;
    }
    let new = SocketAddr::new(old.ip(), old.port() + 10);
    h.events.clear();
    h.now += Duration::from_millis(100);
    assert_eq!(
        send(&mut h, new, 78),
        Verdict::Dropped(DropReason::WrongSource)
    );
    assert_ne!(
        send(&mut h, new, 77),
        Verdict::Dropped(DropReason::WrongSource)
    );
    assert_eq!(h.p.destination(Leg::A), Some(new));
    assert_eq!(
        h.events,
        vec![Event::Latched {
            leg: Leg::A,
            address: new
        }]
    );
    assert_eq!(
        send(&mut h, old, 77),
        Verdict::Dropped(DropReason::WrongSource)
    );
}

#[test]
fn relay_source_change_stays_one_stream_and_relatch_needs_policy() {
    let t0 = Instant::now();
    let p = Pipeline::bridge(
        t0,
        cfg(),
        leg(CodecSpec::pcma(), 1, FAR_A),
        leg(
            CodecSpec {
                payload_type: 8,
                ..CodecSpec::pcma()
            },
            2,
            FAR_B,
        ),
    )
    .unwrap();
    let mut h = Harness::new(p, t0);
    for i in 0..5u16 {
        h.rtp(
            Leg::A,
            FAR_A,
            &packet(8, i, 160 * u32::from(i), 77, false, &[1; 160]),
        );
        h.now += PTIME;
    }
    // The far end restarts with a new SSRC and random numbers (e.g. after a
    // transfer on its side): the B side still sees one continuous stream.
    h.now += Duration::from_millis(60);
    for i in 0..3u16 {
        h.rtp(
            Leg::A,
            FAR_A,
            &packet(
                8,
                40_000 + i,
                9_999_000 + 160 * u32::from(i),
                78,
                false,
                &[2; 160],
            ),
        );
        h.now += PTIME;
    }
    let out = h.rtp_to(Leg::B);
    let seqs: Vec<u16> = out.iter().map(|p| p.sequence()).collect();
    assert_eq!(seqs, (1000..1008).collect::<Vec<_>>());
    // The jump covers the real gap: 20 ms after packet 4 plus 60 ms.
    assert_eq!(out[5].timestamp() - out[4].timestamp(), 640);
    assert!(out[5].marker());
    assert!(out.iter().all(|p| p.ssrc() == 2));

    // The far end moves (re-INVITE): only after update_remote is it heard.
    let moved = "198.51.100.99:41000";
    assert_eq!(
        h.rtp(Leg::A, moved, &packet(8, 9, 0, 78, false, &[3; 160])),
        Verdict::Dropped(DropReason::WrongSource)
    );
    h.p.update_remote(Leg::A, Some(addr(moved)), None);
    assert_eq!(
        h.rtp(
            Leg::A,
            moved,
            &packet(8, 40_003, 9_999_480, 78, false, &[3; 160])
        ),
        Verdict::Forwarded
    );
    assert_eq!(
        h.rtp(
            Leg::A,
            FAR_A,
            &packet(8, 40_004, 9_999_640, 78, false, &[3; 160])
        ),
        Verdict::Dropped(DropReason::WrongSource)
    );
}

/// Presses `key` for 100 ms on `from` (its far end `far`), as
/// telephone-events of payload type `pt` on a `clock` Hz clock, one packet
/// a ptime; what the pipeline made of each packet.
fn press(h: &mut Harness, from: Leg, far: &str, pt: u8, key: char, clock: u32) -> Vec<Verdict> {
    let mut tx = DtmfSender::new(
        char_event(key).unwrap(),
        10,
        Duration::from_millis(100),
        clock,
        PTIME,
        3200,
    );
    let mut verdicts = Vec::new();
    let mut seq = 20;
    while let Some(ev) = tx.next_packet() {
        verdicts.push(h.rtp(
            from,
            far,
            &packet(pt, seq, ev.timestamp, 5, ev.marker, &ev.payload),
        ));
        seq += 1;
        h.now += PTIME;
    }
    verdicts
}

#[test]
fn relay_dtmf_uses_other_legs_payload_type_and_reports_once() {
    let t0 = Instant::now();
    let mut a = leg(CodecSpec::pcmu(), 1, FAR_A);
    a.telephone_event = Some(101);
    let mut b = leg(CodecSpec::pcmu(), 2, FAR_B);
    b.telephone_event = Some(96);
    let mut h = Harness::new(Pipeline::bridge(t0, cfg(), a, b).unwrap(), t0);
    let verdicts = press(&mut h, Leg::A, FAR_A, 101, '#', 8000);
    assert!(
        verdicts.iter().all(|v| *v == Verdict::Forwarded),
        "{verdicts:?}"
    );
    let out = h.rtp_to(Leg::B);
    assert_eq!(out.len(), 7);
    assert!(out.iter().all(|p| p.payload_type() == 96));
    let digits: Vec<_> = h
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Dtmf { leg: Leg::A, digit } => Some(*digit),
            _ => None,
        })
        .collect();
    assert_eq!(digits.len(), 1);
    assert_eq!(digits[0].char(), Some('#'));
    assert_eq!(digits[0].duration, Duration::from_millis(100));
}

/// Events run on their leg's negotiated clock: keys from an Opus leg
/// (events at 48 kHz, or at 8 kHz as many far ends pair them with Opus)
/// are timed right and reach a PCMU leg at 8 kHz, and back.
#[test]
fn dtmf_crosses_clock_rates_when_transcoding() {
    for (from_opus, opus_events) in [
        (true, 48_000),
        (false, 48_000),
        (true, 8_000),
        (false, 8_000),
    ] {
        let t0 = Instant::now();
        let mut a = leg(CodecSpec::opus(111, 8_000), 1, FAR_A);
        a.telephone_event = Some(102);
        a.telephone_event_clock = opus_events;
        let mut b = leg(CodecSpec::pcmu(), 2, FAR_B);
        b.telephone_event = Some(101);
        let mut h = Harness::new(Pipeline::bridge(t0, cfg(), a, b).unwrap(), t0);
        let (from, far, to, pt, clock, out_pt, out_clock) = if from_opus {
            (Leg::A, FAR_A, Leg::B, 102, opus_events, 101, 8_000)
        } else {
            (Leg::B, FAR_B, Leg::A, 101, 8_000, 102, opus_events)
        };
        let case = format!("from Opus: {from_opus}, Opus events at {opus_events} Hz");
        press(&mut h, from, far, pt, '5', clock);
        let digits: Vec<_> = h
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Dtmf { leg, digit } if *leg == from => Some(*digit),
                _ => None,
            })
            .collect();
        assert_eq!(digits.len(), 1, "{case}");
        assert_eq!(digits[0].char(), Some('5'));
        assert_eq!(digits[0].duration, Duration::from_millis(100), "{case}");
        let out: Vec<_> = h
            .rtp_to(to)
            .into_iter()
            .filter(|p| p.payload_type() == out_pt)
            .collect();
        let last = TelephoneEvent::parse(out.last().unwrap().payload()).unwrap();
        assert!(last.end);
        assert_eq!(
            u32::from(last.duration),
            out_clock / 10,
            "100 ms at {out_clock} Hz ({case})"
        );
    }
}

/// Relayed events between legs whose events run on different clocks
/// (Opus on both, events at 8 kHz on one and 48 kHz on the other) have
/// their durations put on the receiving leg's clock.
#[test]
fn relayed_dtmf_is_put_on_the_other_legs_event_clock() {
    let t0 = Instant::now();
    let mut a = leg(CodecSpec::opus(111, 48_000), 1, FAR_A);
    a.telephone_event = Some(101);
    a.telephone_event_clock = 8_000;
    let mut b = leg(CodecSpec::opus(111, 48_000), 2, FAR_B);
    b.telephone_event = Some(102);
    b.telephone_event_clock = 48_000;
    let mut h = Harness::new(Pipeline::bridge(t0, cfg(), a, b).unwrap(), t0);
    press(&mut h, Leg::A, FAR_A, 101, '7', 8_000);
    let out = h.rtp_to(Leg::B);
    let last = TelephoneEvent::parse(out.last().unwrap().payload()).unwrap();
    assert_eq!(out.last().unwrap().payload_type(), 102);
    assert!(last.end);
    assert_eq!(last.duration, 4_800, "100 ms at 48 kHz");
}

#[test]
fn relay_inband_dtmf_on_g711_without_telephone_event() {
    let t0 = Instant::now();
    let mut h = Harness::new(
        Pipeline::bridge(
            t0,
            cfg(),
            leg(CodecSpec::pcmu(), 1, FAR_A),
            leg(CodecSpec::pcmu(), 2, FAR_B),
        )
        .unwrap(),
        t0,
    );
    // '8' (852 + 1336 Hz) for 100 ms, then silence.
    let row = sine(852.0, 8000, 6000.0, 800, 0);
    let col = sine(1336.0, 8000, 6000.0, 800, 0);
    let mut x: Vec<i16> = row.iter().zip(&col).map(|(a, b)| a + b).collect();
    x.extend(vec![0i16; 800]);
    for (i, f) in x.chunks_exact(160).enumerate() {
        h.rtp(
            Leg::A,
            FAR_A,
            &packet(0, i as u16, 160 * i as u32, 9, false, &ulaw_frame(f)),
        );
        h.now += PTIME;
    }
    let digits: Vec<_> = h
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Dtmf { digit, .. } => Some(*digit),
            _ => None,
        })
        .collect();
    assert_eq!(digits.len(), 1);
    assert_eq!(digits[0].char(), Some('8'));
    assert_eq!(digits[0].source, DtmfSource::InBand);
    // The audio itself was relayed untouched.
    assert_eq!(h.rtp_to(Leg::B).len(), 10);
}

/// 8 kHz samples of DTMF `digit` ('1'..'9') for `ms`.
fn dtmf_tone(digit: char, ms: usize) -> Vec<i16> {
    let d = digit.to_digit(10).unwrap() as usize - 1;
    let (row, col) = (
        [697.0, 770.0, 852.0][d / 3],
        [1209.0, 1336.0, 1477.0][d % 3],
    );
    let n = ms * 8;
    let r = sine(row, 8000, 6000.0, n, 0);
    let c = sine(col, 8000, 6000.0, n, 0);
    r.iter().zip(&c).map(|(a, b)| a + b).collect()
}

#[test]
fn inband_dtmf_in_long_packets_reports_every_digit() {
    // A far end packing 120 ms into a packet (ptime 120), dialling two
    // digits back to back: both end within the one packet. The detector
    // reports at most one digit per 20 ms it is given, so the payload
    // handed over whole lost the first digit; relayed and transcoded.
    let mut x = dtmf_tone('1', 40);
    x.extend(dtmf_tone('5', 40));
    x.extend(vec![0i16; 320]);
    assert_eq!(x.len(), 960);
    let payload = ulaw_frame(&x);
    for transcode in [false, true] {
        let t0 = Instant::now();
        let b = if transcode {
            CodecSpec::pcma()
        } else {
            CodecSpec::pcmu()
        };
        let mut h = Harness::new(
            Pipeline::bridge(
                t0,
                cfg(),
                leg(CodecSpec::pcmu(), 1, FAR_A),
                leg(b, 2, FAR_B),
            )
            .unwrap(),
            t0,
        );
        h.rtp(Leg::A, FAR_A, &packet(0, 1, 0, 9, false, &payload));
        h.advance(Duration::from_millis(200));
        let digits: Vec<_> = h
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Dtmf { digit, .. } => digit.char(),
                _ => None,
            })
            .collect();
        assert_eq!(digits, ['1', '5'], "transcode {transcode}");
    }
}

/// Feeds `frames` 20 ms frames of a tone from leg A's far end, encoded by
/// `encode`, stepping time; returns the harness.
fn feed_tone(
    h: &mut Harness,
    pt: u8,
    ticks: u32,
    frames: usize,
    skip: &[usize],
    mut encode: impl FnMut(usize) -> Vec<u8>,
) {
    for i in 0..frames {
        if !skip.contains(&i) {
            let v = h.rtp(
                Leg::A,
                FAR_A,
                &packet(pt, i as u16, ticks * i as u32, 42, i == 0, &encode(i)),
            );
            assert_eq!(v, Verdict::Buffered, "frame {i}");
        }
        h.advance(PTIME);
    }
}

/// A transcoding bridge: A speaks PCMU (SSRC 1), B PCMA (SSRC 2).
fn opus_to_pcmu(t0: Instant) -> Harness {
    let p = Pipeline::bridge(
        t0,
        cfg(),
        leg(CodecSpec::opus(111, 8_000), 1, FAR_A),
        leg(CodecSpec::pcmu(), 2, FAR_B),
    )
    .unwrap();
    Harness::new(p, t0)
}

fn pcmu_to_pcma(t0: Instant) -> Harness {
    let p = Pipeline::bridge(
        t0,
        cfg(),
        leg(CodecSpec::pcmu(), 1, FAR_A),
        leg(CodecSpec::pcma(), 2, FAR_B),
    )
    .unwrap();
    Harness::new(p, t0)
}

#[test]
fn transcode_pcmu_to_pcma_keeps_audio_and_paces_one_frame_per_ptime() {
    let t0 = Instant::now();
    let mut h = pcmu_to_pcma(t0);
    assert!(h.p.is_transcoding());
    let x = sine(1000.0, 8000, 8000.0, 160 * 50, 0);
    feed_tone(&mut h, 0, 160, 50, &[], |i| {
        ulaw_frame(&x[i * 160..(i + 1) * 160])
    });
    h.advance(Duration::from_millis(300));
    let out = h.rtp_to(Leg::B);
    // One packet per received frame, then concealment while the stream
    // looks paused (at most max_delay = 200 ms of it).
    assert!((50..=60).contains(&out.len()), "{}", out.len());
    let mut pcm = Vec::new();
    for (i, p) in out.iter().enumerate() {
        assert_eq!(p.payload_type(), 8);
        assert_eq!(p.ssrc(), 2);
        assert_eq!(p.sequence(), 1000 + i as u16);
        assert_eq!(p.timestamp(), 50_000 + 160 * i as u32);
        let mut f = [0i16; 160];
        Law::Alaw.decode(p.payload(), &mut f);
        pcm.extend_from_slice(&f);
    }
    let on = power_i16(&pcm[800..8000], 1000.0, 8000.0);
    assert!(on > 100.0 * power_i16(&pcm[800..8000], 1700.0, 8000.0));
    assert_eq!(h.p.stats(Leg::B).unwrap().rtp_out, out.len() as u64);
}

/// PCMU packets of `ms` milliseconds from A (a 1 kHz tone), paced at
/// their own duration; `skip` are lost.
fn feed_ptime(h: &mut Harness, ms: u32, packets: u32, skip: &[u32]) {
    let x = sine(1000.0, 8000, 8000.0, 8 * ms as usize * packets as usize, 0);
    for i in 0..packets {
        if !skip.contains(&i) {
            feed_one(h, &x, ms, i);
        }
        h.advance(Duration::from_millis(u64::from(ms)));
    }
}

/// Sends packet `i` of `ms` each of the µ-law tone `x` from A's far end;
/// a transcoding pipeline buffers it.
fn feed_one(h: &mut Harness, x: &[i16], ms: u32, i: u32) {
    let n = 8 * ms as usize;
    let f = ulaw_frame(&x[i as usize * n..][..n]);
    let v = h.rtp(
        Leg::A,
        FAR_A,
        &packet(0, i as u16, i * n as u32, 42, i == 0, &f),
    );
    assert_eq!(v, Verdict::Buffered, "packet {i}");
}

#[test]
fn transcode_sends_nothing_through_a_far_ends_silence_and_marks_the_next_talkspurt() {
    // A far end with silence suppression (DTX): 0.4 s of speech, then
    // 1.5 s of nothing but comfort noise (RFC 3389, payload type 13)
    // every 200 ms, then speech again with the marker bit and its
    // timestamp 1.9 s on.
    let t0 = Instant::now();
    let mut h = pcmu_to_pcma(t0);
    let x = sine(1000.0, 8000, 8000.0, 160 * 20, 0);
    for i in 0..20u16 {
        let f = &x[usize::from(i) * 160..usize::from(i + 1) * 160];
        let v = h.rtp(
            Leg::A,
            FAR_A,
            &packet(0, i, 160 * u32::from(i), 42, i == 0, &ulaw_frame(f)),
        );
        assert_eq!(v, Verdict::Buffered);
        h.advance(PTIME);
    }
    let talk = h.rtp_to(Leg::B).len();
    for k in 0..7u16 {
        h.advance(Duration::from_millis(200));
        // Comfort noise is not this leg's codec: counted, not forwarded.
        let cn = packet(13, 20 + k, 3_200 + 1_600 * u32::from(k), 42, false, &[40]);
        assert_eq!(
            h.rtp(Leg::A, FAR_A, &cn),
            Verdict::Dropped(DropReason::UnknownPayloadType)
        );
    }
    let gap_end = h.now + Duration::from_millis(100);
    h.advance_to(gap_end);
    let out = h.rtp_to(Leg::B);
    // What was said, then at most the jitter buffer's longest wait
    // (200 ms) of concealment, then nothing for the rest of the silence.
    let filled = out.len() - 20;
    assert!(filled <= 10, "{filled} frames sent through the silence");
    assert!(talk <= out.len());
    let quiet_from = out.len();
    // Speech again: 15,200 ticks (1.9 s) after the first talkspurt began.
    for i in 0..10u16 {
        let f = &x[usize::from(i) * 160..usize::from(i + 1) * 160];
        let ts = 15_200 + 160 * u32::from(i);
        let v = h.rtp(
            Leg::A,
            FAR_A,
            &packet(0, 27 + i, ts, 42, i == 0, &ulaw_frame(f)),
        );
        assert_eq!(v, Verdict::Buffered);
        h.advance(PTIME);
    }
    h.advance(Duration::from_millis(100));
    let out = h.rtp_to(Leg::B);
    assert!(
        out.len() >= quiet_from + 10,
        "{} after {quiet_from}",
        out.len()
    );
    let (last_quiet, first) = (&out[quiet_from - 1], &out[quiet_from]);
    // One stream to the other side: sequence numbers run on, the new
    // talkspurt is marked and its timestamp follows the time that passed
    // (so the far end's jitter buffer plays the silence as silence).
    assert_eq!(first.sequence(), last_quiet.sequence().wrapping_add(1));
    assert!(first.marker());
    assert!(out[quiet_from + 1..].iter().all(|p| !p.marker()));
    assert_eq!(first.ssrc(), last_quiet.ssrc());
    // From the last speech frame to the new talkspurt the far end's
    // clock moved 12,160 ticks (1.52 s); ours moves as much, the
    // concealed frames included.
    let dt = first.timestamp().wrapping_sub(last_quiet.timestamp());
    assert_eq!(dt + 160 * filled as u32, 12_160);
    let mut pcm = [0i16; 160];
    Law::Alaw.decode(out[quiet_from + 3].payload(), &mut pcm);
    assert!(power_i16(&pcm, 1000.0, 8000.0) > 100.0 * power_i16(&pcm, 1700.0, 8000.0));
}

#[test]
fn transcode_takes_packets_of_any_duration_and_sends_20_ms_frames() {
    for (ms, lost) in [(30u32, None), (10, None), (60, None), (30, Some(20u32))] {
        let t0 = Instant::now();
        let mut h = pcmu_to_pcma(t0);
        let packets = 1200 / ms;
        feed_ptime(&mut h, ms, packets, &lost.into_iter().collect::<Vec<_>>());
        h.advance(Duration::from_millis(300));
        let out = h.rtp_to(Leg::B);
        // 1.2 s of audio in 20 ms frames (a lost packet concealed for its
        // whole duration), then concealment until the stream counts as
        // paused (200 ms and up to a packet more); until the duration is
        // learned (the third packet) a gap is concealed 20 ms at a time.
        assert!(
            (60..=78).contains(&out.len()),
            "{ms} ms: {} frames",
            out.len()
        );
        let mut pcm = Vec::new();
        for (i, p) in out.iter().enumerate() {
            assert_eq!(p.payload().len(), 160);
            assert_eq!(p.timestamp(), 50_000 + 160 * i as u32);
            let mut f = [0i16; 160];
            Law::Alaw.decode(p.payload(), &mut f);
            pcm.extend_from_slice(&f);
        }
        let y = &pcm[800..8000];
        assert!(
            power_i16(y, 1000.0, 8000.0) > 100.0 * power_i16(y, 1700.0, 8000.0),
            "{ms} ms: the tone survives"
        );
        let a = h.p.stats(Leg::A).unwrap();
        assert_eq!(a.codec_errors, 0, "{ms} ms");
    }
}

#[test]
fn transcode_takes_g711_packets_of_up_to_200_ms_and_opus_up_to_its_limit() {
    // RFC 3551 4.2: a receiver should take packets of up to 200 ms. For
    // G.711 a datagram holds some 180 ms (1,440 bytes here): nine 20 ms
    // frames a packet, more than the transmit queue holds at once.
    let t0 = Instant::now();
    let mut h = pcmu_to_pcma(t0);
    feed_ptime(&mut h, 180, 8, &[]);
    h.advance(Duration::from_millis(200));
    let out = h.rtp_to(Leg::B);
    assert!(out.len() >= 8 * 9, "{} frames", out.len());
    let mut pcm = Vec::new();
    for (i, p) in out.iter().enumerate() {
        assert_eq!(p.payload().len(), 160);
        assert_eq!(p.timestamp(), 50_000 + 160 * i as u32, "frame {i}");
        let mut f = [0i16; 160];
        Law::Alaw.decode(p.payload(), &mut f);
        pcm.extend_from_slice(&f);
    }
    let y = &pcm[800..8 * 9 * 160];
    assert!(power_i16(y, 1000.0, 8000.0) > 100.0 * power_i16(y, 1700.0, 8000.0));
    let (a, b) = (h.p.stats(Leg::A).unwrap(), h.p.stats(Leg::B).unwrap());
    assert_eq!((a.malformed, a.codec_errors, b.queue_full), (0, 0, 0));

    // Opus's longest packet is 1,275 bytes (RFC 6716): a longer payload
    // is refused as malformed, not stored to fail in the decoder.
    let t0 = Instant::now();
    let mut h = opus_to_pcmu(t0);
    assert_eq!(
        h.rtp(Leg::A, FAR_A, &packet(111, 1, 0, 7, true, &[0x08; 1276])),
        Verdict::Dropped(DropReason::Malformed)
    );
    assert_eq!(h.p.stats(Leg::A).unwrap().malformed, 1);
}

#[test]
fn a_payload_too_long_to_play_does_not_teach_the_latch() {
    // A far end behind NAT (not at its SDP address) is learned from its
    // first packet; a stranger's oversize datagram before it must not
    // take that place and leave the far end dropped as a wrong source.
    let t0 = Instant::now();
    let mut h = opus_to_pcmu(t0);
    let stranger = "203.0.113.9:4000";
    let nat = "198.51.100.77:61000";
    assert_eq!(
        h.rtp(Leg::A, stranger, &packet(111, 1, 0, 7, true, &[0x08; 1276])),
        Verdict::Dropped(DropReason::Malformed)
    );
    assert!(h.events.is_empty(), "{:?}", h.events);
    assert_eq!(h.p.destination(Leg::A), Some(addr(FAR_A)));
    assert_eq!(
        h.rtp(Leg::A, nat, &packet(111, 2, 960, 0x77, false, &[0x08; 40])),
        Verdict::Buffered
    );
    assert_eq!(
        h.events,
        [Event::Latched {
            leg: Leg::A,
            address: addr(nat)
        }]
    );
    let a = h.p.stats(Leg::A).unwrap();
    assert_eq!((a.malformed, a.wrong_source, a.rtp_in), (1, 0, 1));
}

#[test]
fn long_packets_for_a_leg_with_nowhere_to_send_leave_nothing_due() {
    // B's far end is not known yet (no SDP address, nothing latched):
    // its frames go nowhere, take no room in the queue, and so never
    // leave a timeout due at once.
    let t0 = Instant::now();
    let mut b = leg(CodecSpec::pcma(), 2, FAR_B);
    b.remote_rtp = None;
    let p = Pipeline::bridge(t0, cfg(), leg(CodecSpec::pcmu(), 1, FAR_A), b).unwrap();
    let mut h = Harness::new(p, t0);
    let x = sine(1000.0, 8000, 8000.0, 1440 * 8, 0);
    for i in 0..8 {
        feed_one(&mut h, &x, 180, i);
        for _ in 0..9 {
            h.now += Duration::from_millis(20);
            h.p.handle_timeout(h.now);
            h.drain();
            let due = h.p.poll_timeout();
            assert!(due.is_none_or(|d| d > h.now), "packet {i}: due at once");
        }
    }
    let b = h.p.stats(Leg::B).unwrap();
    assert_eq!((b.rtp_out, b.queue_full), (0, 0));
    assert!(b.no_destination >= 8 * 9 - 9, "{}", b.no_destination);
}

#[test]
fn transcode_loses_no_frame_when_more_are_due_than_the_transmit_queue_holds() {
    // A far end sending 100 ms of G.711 a packet (five 20 ms frames),
    // and a worker that comes late, when three packets are due at once:
    // fifteen frames, more than the queue holds. The rest waits, due at
    // once, for the worker to drain the queue and come back.
    let t0 = Instant::now();
    let mut h = pcmu_to_pcma(t0);
    let x = sine(1000.0, 8000, 8000.0, 800 * 12, 0);
    for i in 0..12 {
        feed_one(&mut h, &x, 100, i);
        if i == 7 {
            // The late turn, 150 ms after the one before: one call, then
            // drained.
            h.now += Duration::from_millis(50);
            let before = h.sent.len();
            h.p.handle_timeout(h.now);
            h.drain();
            assert_eq!(h.sent.len() - before, TX_QUEUE);
            assert!(h.p.poll_timeout().is_some_and(|due| due <= h.now));
            h.now += Duration::from_millis(50);
        } else {
            h.now += Duration::from_millis(100);
        }
        if i != 6 {
            h.advance(Duration::ZERO);
        }
    }
    h.advance(Duration::from_millis(200));
    let out = h.rtp_to(Leg::B);
    assert!(out.len() >= 60, "{} frames", out.len());
    for (i, p) in out.iter().enumerate() {
        assert_eq!(p.payload().len(), 160);
        assert_eq!(p.timestamp(), 50_000 + 160 * i as u32, "frame {i}");
    }
    let mut pcm = Vec::new();
    for p in &out[..60] {
        let mut f = [0i16; 160];
        Law::Alaw.decode(p.payload(), &mut f);
        pcm.extend_from_slice(&f);
    }
    let y = &pcm[800..];
    assert!(power_i16(y, 1000.0, 8000.0) > 100.0 * power_i16(y, 1700.0, 8000.0));
    assert_eq!(h.p.stats(Leg::B).unwrap().queue_full, 0);
    // RTCP reports still go out beside it.
    h.advance(Duration::from_secs(6));
    assert!(h.sent.iter().any(|s| s.leg == Leg::B && is_rtcp(&s.data)));
    assert_eq!(h.p.stats(Leg::B).unwrap().queue_full, 0);
}

/// One AI-tapped call driven for `steps` ptimes: a caller packet of
/// `packet_ms` (a tone at `caller_hz`) whenever one is due, engine audio
/// (a tone at `engine_hz`, written in uneven pieces) every other step;
/// returns (what the engine heard, the RTP payloads the caller got).
struct TapRun {
    h: Harness,
    engine: TapEngine,
    caller: Vec<i16>,
    engine_pcm: Vec<i16>,
    packet_ms: u32,
    heard: Vec<i16>,
}

impl TapRun {
    fn new(t0: Instant, packet_ms: u32, caller_hz: f32, engine_hz: f32) -> Self {
        let (h, engine) = tap_pipeline(t0, true);
        TapRun {
            h,
            engine,
            caller: sine(caller_hz, 8000, 9000.0, 8000, 0),
            engine_pcm: sine(engine_hz, 24_000, 12_000.0, 24_000, 0),
            packet_ms,
            heard: Vec::new(),
        }
    }

    fn step(&mut self, i: u32) {
        let ms = i * 20;
        if ms.is_multiple_of(self.packet_ms) {
            let seq = ms / self.packet_ms;
            let n = (self.packet_ms * 8) as usize;
            let at = seq as usize * n;
            let payload = ulaw_frame(&self.caller[at..at + n]);
            let pkt = packet(0, seq as u16, seq * n as u32, 42, seq == 0, &payload);
            self.h.rtp(Leg::A, FAR_A, &pkt);
        }
        if i.is_multiple_of(2) {
            let at = (i as usize * 397) % 20_000;
            self.engine
                .write_engine(&self.engine_pcm[at..at + 700 + (i as usize % 3) * 150]);
        }
        self.h.advance(PTIME);
        let mut got = [0i16; 4096];
        let n = self.engine.read_caller(&mut got);
        self.heard.extend_from_slice(&got[..n]);
    }

    fn sent(&self) -> Vec<Vec<u8>> {
        self.h
            .rtp_to(Leg::A)
            .iter()
            .map(|p| p.payload().to_vec())
            .collect()
    }
}

#[test]
fn ai_taps_driven_side_by_side_give_what_each_gives_alone() {
    // A thread's pipelines share their scratch buffers: nothing in them
    // may carry over from one call's frame to another call's.
    let t0 = Instant::now();
    let steps = 40;
    let mut alone = [
        TapRun::new(t0, 20, 700.0, 500.0),
        TapRun::new(t0, 30, 1100.0, 900.0),
    ];
    for r in &mut alone {
        for i in 0..steps {
            r.step(i);
        }
    }
    let mut together = [
        TapRun::new(t0, 20, 700.0, 500.0),
        TapRun::new(t0, 30, 1100.0, 900.0),
    ];
    for i in 0..steps {
        for r in &mut together {
            r.step(i);
        }
    }
    for (a, t) in alone.iter().zip(&together) {
        assert!(a.heard.len() > 30 * 320 && a.sent().len() > 30);
        assert_eq!(a.heard, t.heard);
        assert_eq!(a.sent(), t.sent());
    }
    assert_ne!(alone[0].heard, alone[1].heard);
    assert_ne!(alone[0].sent(), alone[1].sent());
}

#[test]
fn ai_tap_takes_30_ms_packets() {
    let t0 = Instant::now();
    let (mut h, mut engine) = tap_pipeline(t0, true);
    feed_ptime(&mut h, 30, 20, &[]);
    let mut got = vec![0i16; 16_000];
    let n = engine.read_caller(&mut got);
    // 600 ms of caller audio, at 16 kHz, in whole 20 ms frames.
    assert_eq!(n, 30 * 320, "{n}");
    let y = &got[320 * 3..n];
    assert!(power_i16(y, 1000.0, 16_000.0) > 100.0 * power_i16(y, 1900.0, 16_000.0));
}

#[test]
fn transcode_output_is_paced_by_playout_not_arrival() {
    let t0 = Instant::now();
    let mut h = pcmu_to_pcma(t0);
    // Ten frames arrive in one burst (a network hiccup released them).
    for i in 0..10u16 {
        h.rtp(
            Leg::A,
            FAR_A,
            &packet(0, i, 160 * u32::from(i), 42, false, &[0xff; 160]),
        );
    }
    assert!(
        h.rtp_to(Leg::B).is_empty(),
        "nothing leaves before playout time"
    );
    let mut per_tick = Vec::new();
    for _ in 0..8 {
        let before = h.rtp_to(Leg::B).len();
        h.advance(PTIME);
        per_tick.push(h.rtp_to(Leg::B).len() - before);
    }
    // The burst drains at most one frame per ptime (plus one catch-up drop
    // when over target, which sends nothing).
    assert!(per_tick.iter().all(|&n| n <= 1), "{per_tick:?}");
    assert!(per_tick.iter().sum::<usize>() >= 6, "{per_tick:?}");
}

#[test]
fn transcode_opus_with_loss_uses_fec_and_stream_stays_continuous() {
    let t0 = Instant::now();
    let mut h = opus_to_pcmu(t0);
    let x = sine(440.0, 8000, 8000.0, 160 * 60, 0);
    let mut enc = crate::opus::OpusEncoder::new(8_000, 20).unwrap();
    // Packet 30 is lost (and 31 arrives in order, carrying its FEC).
    feed_tone(&mut h, 111, 960, 60, &[30], |i| {
        let mut b = [0u8; 400];
        let n = enc.encode(&x[i * 160..(i + 1) * 160], &mut b).unwrap();
        b[..n].to_vec()
    });
    h.advance(Duration::from_millis(300));
    let out = h.rtp_to(Leg::B);
    // The lost frame is rebuilt, not skipped (trailing concealment after
    // the stream stops may follow).
    assert!((60..=70).contains(&out.len()), "{}", out.len());
    for w in out.windows(2) {
        assert_eq!(w[1].sequence(), w[0].sequence().wrapping_add(1));
        assert_eq!(w[1].timestamp(), w[0].timestamp().wrapping_add(160));
    }
    // The rebuilt frame carries the tone.
    let mut f = [0i16; 160];
    Law::Ulaw.decode(out[30].payload(), &mut f);
    let e: f64 = f.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / 160.0;
    assert!(e > 1e6, "rebuilt frame energy {e}");
    let (expected, received, lost, _) = h.p.receive_stats(Leg::A).unwrap();
    assert_eq!((expected, received, lost), (59, 58, 1));
}

#[test]
fn transcode_translates_telephone_events_between_clocks() {
    let t0 = Instant::now();
    let mut a = leg(CodecSpec::opus(111, 8_000), 1, FAR_A);
    a.telephone_event = Some(101);
    let mut b = leg(CodecSpec::pcmu(), 2, FAR_B);
    b.telephone_event = Some(100);
    let mut h = Harness::new(Pipeline::bridge(t0, cfg(), a, b).unwrap(), t0);
    let mut tx = DtmfSender::new(5, 10, Duration::from_millis(60), 48_000, PTIME, 96_000);
    let mut seq = 0;
    while let Some(ev) = tx.next_packet() {
        h.rtp(
            Leg::A,
            FAR_A,
            &packet(101, seq, ev.timestamp, 5, ev.marker, &ev.payload),
        );
        seq += 1;
        h.now += PTIME;
    }
    let out = h.rtp_to(Leg::B);
    let evs: Vec<_> = out
        .iter()
        .filter(|p| p.payload_type() == 100)
        .map(|p| (p.timestamp(), TelephoneEvent::parse(p.payload()).unwrap()))
        .collect();
    assert_eq!(evs.len(), 5);
    // 60 ms at 48 kHz is 2880; at 8 kHz, 480.
    assert_eq!(evs.last().unwrap().1.duration, 480);
    assert!(evs.iter().all(|e| e.0 == evs[0].0 && e.1.event == 5));
    assert!(out[0].marker());
    assert_eq!(
        h.events
            .iter()
            .filter(|e| matches!(e, Event::Dtmf { .. }))
            .count(),
        1
    );
}

fn tap_pipeline(t0: Instant, send_silence: bool) -> (Harness, TapEngine) {
    let (p, e) = Pipeline::ai_tap(
        t0,
        cfg(),
        leg(CodecSpec::pcmu(), 7, FAR_A),
        TapConfig {
            send_silence,
            ..TapConfig::default()
        },
    )
    .unwrap();
    (Harness::new(p, t0), e)
}

/// A tap whose caller has no address yet (a call still ringing) sends
/// nothing, not even silence, and keeps the engine's audio: once the
/// address is set (the answer), the first frame goes out first.
#[test]
fn ai_tap_holds_its_playout_until_the_caller_has_an_address() {
    let t0 = Instant::now();
    let (p, mut engine) = Pipeline::ai_tap(
        t0,
        cfg(),
        LegConfig {
            remote_rtp: None,
            ..leg(CodecSpec::pcmu(), 7, FAR_A)
        },
        TapConfig::default(),
    )
    .unwrap();
    let mut h = Harness::new(p, t0);
    let greeting = sine(500.0, 24_000, 10_000.0, 24_000 / 2, 0);
    engine.write_engine(&greeting);
    h.advance(Duration::from_millis(400));
    assert_eq!(h.rtp_to(Leg::A).len(), 0, "nothing while ringing");
    assert_eq!(engine.played_ms(), 0);
    h.p.update_remote(Leg::A, Some(addr(FAR_A)), None);
    h.advance(Duration::from_millis(600));
    let sent = h.rtp_to(Leg::A);
    assert!(sent.len() >= 25, "{}", sent.len());
    // The greeting's first frame is audio, not the silence before it.
    let first = sent[0].payload().to_vec();
    assert!(first.iter().any(|&b| b != 0xff && b != 0x7f), "{first:?}");
    assert_eq!(engine.played_ms(), 500, "all of the half-second greeting");
}

#[test]
fn ai_tap_caller_audio_reaches_engine_at_16k() {
    let t0 = Instant::now();
    let (mut h, mut engine) = tap_pipeline(t0, true);
    let x = sine(700.0, 8000, 8000.0, 160 * 40, 0);
    feed_tone(&mut h, 0, 160, 40, &[], |i| {
        ulaw_frame(&x[i * 160..(i + 1) * 160])
    });
    h.advance(Duration::from_millis(300));
    let mut got = vec![0i16; 16_000];
    let n = engine.read_caller(&mut got);
    // One 16 kHz frame per caller frame, plus trailing concealment.
    assert!(n % 320 == 0 && (40 * 320..=50 * 320).contains(&n), "{n}");
    let y = &got[320 * 5..320 * 40];
    let on = power_i16(y, 700.0, 16_000.0);
    assert!(on > 100.0 * power_i16(y, 1900.0, 16_000.0));
    assert_eq!(engine.to_engine_rate(), 16_000);
}

#[test]
fn ai_tap_keeps_the_engines_audio_running_while_the_caller_sends_nothing() {
    // A caller with silence suppression (or not started yet): the engine
    // still gets 20 ms of audio every 20 ms, silence, so its voice
    // detection can end the caller's turn.
    let t0 = Instant::now();
    let (mut h, mut engine) = tap_pipeline(t0, true);
    let mut got = vec![0i16; 16_000 * 4];
    h.advance(Duration::from_secs(1));
    let n = engine.read_caller(&mut got);
    assert!(
        (49 * 320..=51 * 320).contains(&n),
        "{n} samples in 1 s before RTP"
    );
    assert!(got[..n].iter().all(|s| *s == 0));
    // Half a second of speech, then the far end stops sending (its VAD).
    let x = sine(700.0, 8000, 8000.0, 160 * 25, 0);
    feed_tone(&mut h, 0, 160, 25, &[], |i| {
        ulaw_frame(&x[i * 160..(i + 1) * 160])
    });
    let n = engine.read_caller(&mut got);
    assert!(n >= 24 * 320, "{n}: the speech as it came");
    // Read as the AI side does, as it comes (the ring holds a second).
    let mut after = Vec::new();
    for _ in 0..20 {
        h.advance(Duration::from_millis(100));
        let n = engine.read_caller(&mut got);
        after.extend_from_slice(&got[..n]);
    }
    let n = after.len();
    assert!(
        (98 * 320..=102 * 320).contains(&n),
        "{n} samples in the 2 s after the speech"
    );
    let quiet = &after[n - 90 * 320..];
    assert!(
        quiet.iter().all(|s| *s == 0),
        "silence, after the concealment"
    );
    // Speech again: the filling stops, the caller's audio goes as it comes.
    feed_tone(&mut h, 0, 160, 10, &[], |i| {
        ulaw_frame(&x[i * 160..(i + 1) * 160])
    });
    let n = engine.read_caller(&mut got);
    assert!((9 * 320..=12 * 320).contains(&n), "{n}");
    assert!(power_i16(&got[320..n], 700.0, 16_000.0) > 1000.0);
}

#[test]
fn ai_tap_hands_each_caller_frame_to_the_engine_as_it_arrives() {
    let t0 = Instant::now();
    let (mut h, mut engine) = tap_pipeline(t0, true);
    let mut got = vec![0i16; 4 * 320];
    // No jitter-buffer delay on the way to the engine: each frame is there
    // at the instant its packet arrived, in order.
    for seq in 0..3u16 {
        let v = h.rtp(
            Leg::A,
            FAR_A,
            &packet(0, seq, u32::from(seq) * 160, 42, seq == 0, &[0xff; 160]),
        );
        assert_eq!(v, Verdict::Buffered);
        assert_eq!(engine.read_caller(&mut got), 320, "frame {seq}");
        h.advance(PTIME);
    }
    // 4 before 3: 4 waits for 3, then both go at once.
    h.rtp(Leg::A, FAR_A, &packet(0, 4, 640, 42, false, &[0xff; 160]));
    assert_eq!(engine.read_caller(&mut got), 0);
    h.rtp(Leg::A, FAR_A, &packet(0, 3, 480, 42, false, &[0xff; 160]));
    assert_eq!(engine.read_caller(&mut got), 640);
}

#[test]
fn ai_tap_paces_engine_audio_flushes_within_a_ptime_and_reports_played() {
    let t0 = Instant::now();
    let (mut h, mut engine) = tap_pipeline(t0, true);
    // A learned far end to send to.
    h.rtp(Leg::A, FAR_A, &packet(0, 1, 0, 3, false, &[0xff; 160]));
    // One second of 24 kHz engine audio arrives at once.
    let tone = sine(500.0, 24_000, 10_000.0, 24_000, 0);
    assert_eq!(engine.write_engine(&tone), 24_000);
    let mut per_tick = Vec::new();
    for _ in 0..10 {
        let before = h.rtp_to(Leg::A).len();
        h.advance(PTIME);
        per_tick.push(h.rtp_to(Leg::A).len() - before);
    }
    assert!(per_tick.iter().all(|&n| n == 1), "paced: {per_tick:?}");
    assert_eq!(engine.played_ms(), 200);
    // Barge-in.
    engine.flush();
    h.advance(PTIME);
    let flushed: Vec<_> = h
        .events
        .iter()
        .filter_map(|e| match e {
            Event::PlayoutFlushed {
                played_ms,
                discarded_ms,
            } => Some((*played_ms, *discarded_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(flushed, vec![(200, 800)]);
    // The packet of that tick and all later ones are silence.
    for _ in 0..3 {
        h.advance(PTIME);
    }
    let out = h.rtp_to(Leg::A);
    assert_eq!(out.len(), 14);
    for p in &out[10..] {
        assert!(
            p.payload().iter().all(|&b| b == 0xff),
            "silence after flush"
        );
    }
    // Before the flush: the tone, continuous numbering throughout.
    let mut pcm = [0i16; 160];
    Law::Ulaw.decode(out[8].payload(), &mut pcm);
    assert!(power_i16(&pcm, 500.0, 8000.0) > 100.0 * power_i16(&pcm, 1500.0, 8000.0));
    for w in out.windows(2) {
        assert_eq!(w[1].sequence(), w[0].sequence().wrapping_add(1));
        assert_eq!(w[1].timestamp(), w[0].timestamp().wrapping_add(160));
    }
    assert_eq!(engine.played_ms(), 200);
    // New audio written after the flush plays.
    engine.write_engine(&tone[..4800]);
    h.advance(PTIME * 2);
    assert_eq!(engine.played_ms(), 240);
}

#[test]
fn ai_tap_kick_starts_a_turn_at_once_and_paces_from_there() {
    let t0 = Instant::now();
    let (mut h, mut engine) = tap_pipeline(t0, true);
    h.rtp(Leg::A, FAR_A, &packet(0, 1, 0, 3, false, &[0xff; 160]));
    for _ in 0..3 {
        h.advance(PTIME);
    }
    let silent = h.rtp_to(Leg::A).len();
    assert_eq!(silent, 3);
    // A turn lands 7 ms after a silence packet: sent now, not 13 ms later.
    h.advance(Duration::from_millis(7));
    let tone = sine(500.0, 24_000, 10_000.0, 4_800, 0);
    engine.write_engine(&tone);
    h.p.kick_playout(h.now);
    h.advance(Duration::ZERO);
    assert_eq!(h.rtp_to(Leg::A).len(), silent + 1);
    // A kick while the engine speaks changes nothing.
    h.advance(Duration::from_millis(5));
    h.p.kick_playout(h.now);
    h.advance(Duration::from_millis(14));
    assert_eq!(h.rtp_to(Leg::A).len(), silent + 1);
    h.advance(Duration::from_millis(1));
    assert_eq!(h.rtp_to(Leg::A).len(), silent + 2);
    // One continuous stream for the far end.
    let out = h.rtp_to(Leg::A);
    for w in out.windows(2) {
        assert_eq!(w[1].sequence(), w[0].sequence().wrapping_add(1));
        assert_eq!(w[1].timestamp(), w[0].timestamp().wrapping_add(160));
    }
    let mut pcm = [0i16; 160];
    Law::Ulaw.decode(out[silent].payload(), &mut pcm);
    assert!(power_i16(&pcm, 500.0, 8000.0) > 100.0 * power_i16(&pcm, 1500.0, 8000.0));
}

#[test]
fn ai_tap_pacing_slack_sends_early_on_the_same_grid() {
    let t0 = Instant::now();
    let (p, mut engine) = Pipeline::ai_tap(
        t0,
        cfg(),
        leg(CodecSpec::pcmu(), 7, FAR_A),
        TapConfig {
            pacing_slack: Duration::from_millis(2),
            ..TapConfig::default()
        },
    )
    .unwrap();
    let mut h = Harness::new(p, t0);
    h.rtp(Leg::A, FAR_A, &packet(0, 1, 0, 3, false, &[0xff; 160]));
    engine.write_engine(&sine(500.0, 24_000, 10_000.0, 24_000, 0));
    // The tick of slot 20 ms is due at 18 ms, and not before.
    assert_eq!(h.p.poll_timeout(), Some(t0 + Duration::from_millis(18)));
    h.now = t0 + Duration::from_millis(17);
    h.p.handle_timeout(h.now);
    h.drain();
    assert_eq!(h.rtp_to(Leg::A).len(), 0);
    // A worker awake at 19 ms for another call sends this one's too; the
    // next slot stays at 40 ms (due at 38 ms).
    h.now = t0 + Duration::from_millis(19);
    h.p.handle_timeout(h.now);
    h.drain();
    assert_eq!(h.rtp_to(Leg::A).len(), 1);
    assert_eq!(h.p.poll_timeout(), Some(t0 + Duration::from_millis(38)));
    // Over a second: one packet per ptime, none late, none lost.
    h.advance_to(t0 + Duration::from_millis(1_019));
    assert_eq!(h.rtp_to(Leg::A).len(), 51);
    assert_eq!(engine.played_ms(), 1_000);
    // A slack beyond a quarter ptime is held to 5 ms.
    let (p, _e) = Pipeline::ai_tap(
        t0,
        cfg(),
        leg(CodecSpec::pcmu(), 7, FAR_A),
        TapConfig {
            pacing_slack: Duration::from_secs(1),
            ..TapConfig::default()
        },
    )
    .unwrap();
    assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_millis(15)));
}

#[test]
fn ai_tap_follows_a_codec_change_without_the_engine_noticing() {
    let t0 = Instant::now();
    let (mut h, mut engine) = tap_pipeline(t0, true);
    let mut got = vec![0i16; 16_000];
    let tone = sine(700.0, 8000, 8000.0, 160 * 20, 0);
    for i in 0..5u16 {
        let f = ulaw_frame(&tone[usize::from(i) * 160..][..160]);
        h.rtp(
            Leg::A,
            FAR_A,
            &packet(0, i, u32::from(i) * 160, 42, i == 0, &f),
        );
        h.advance(PTIME);
    }
    assert_eq!(engine.read_caller(&mut got), 5 * 320);
    // What the caller has been hearing: the tap's paced stream.
    let (ssrc, seq) = {
        let out = h.rtp_to(Leg::A);
        let last = out.last().expect("the tap paces the caller's stream");
        (last.ssrc(), last.sequence())
    };
    let sent_before = h.rtp_to(Leg::A).len();
    // Re-INVITE: the caller moves to PCMA, at the same clock rate: the
    // stream carries on (the SSRC offered for a new one is not taken).
    assert!(h.p.retap(h.now, leg(CodecSpec::pcma(), 77, FAR_A)).unwrap());
    // PCMU now is a payload type the leg no longer carries.
    let f = ulaw_frame(&tone[..160]);
    assert_eq!(
        h.rtp(Leg::A, FAR_A, &packet(0, 5, 800, 42, false, &f)),
        Verdict::Dropped(DropReason::UnknownPayloadType)
    );
    for i in 0..15u16 {
        let mut f = vec![0u8; 160];
        Law::Alaw.encode(&tone[usize::from(i) * 160..][..160], &mut f);
        let v = h.rtp(
            Leg::A,
            FAR_A,
            &packet(8, 100 + i, 9000 + u32::from(i) * 160, 43, false, &f),
        );
        assert_eq!(v, Verdict::Buffered);
        h.advance(PTIME);
    }
    let n = engine.read_caller(&mut got);
    assert_eq!(n, 15 * 320);
    let y = &got[320 * 3..n];
    assert!(power_i16(y, 700.0, 16_000.0) > 100.0 * power_i16(y, 1900.0, 16_000.0));
    // The engine's audio goes out in PCMA on the same stream, numbered on.
    let before = h.rtp_to(Leg::A).len();
    engine.write_engine(&sine(500.0, 24_000, 10_000.0, 4_800, 0));
    h.advance(PTIME * 3);
    let out = h.rtp_to(Leg::A);
    let last = &out[out.len() - 1];
    assert!(out.len() > before);
    assert_eq!((last.payload_type(), last.ssrc()), (8, ssrc));
    let after: Vec<u16> = out[sent_before..].iter().map(|p| p.sequence()).collect();
    let want: Vec<u16> = (1..=after.len() as u16)
        .map(|k| seq.wrapping_add(k))
        .collect();
    assert_eq!(after, want, "numbering carried on");
    let mut pcm = [0i16; 160];
    Law::Alaw.decode(last.payload(), &mut pcm);
    assert!(power_i16(&pcm, 500.0, 8000.0) > 100.0 * power_i16(&pcm, 1500.0, 8000.0));
    // A codec at another clock rate (L16 at 16 kHz) is a new stream, its
    // own SSRC (RFC 7160 §4.1).
    assert!(
        h.p.retap(h.now, leg(CodecSpec::l16(96, 16_000), 78, FAR_A))
            .unwrap()
    );
    engine.write_engine(&sine(500.0, 24_000, 10_000.0, 2_400, 0));
    h.advance(PTIME * 3);
    let out = h.rtp_to(Leg::A);
    let last = &out[out.len() - 1];
    assert_eq!((last.payload_type(), last.ssrc()), (96, 78));
    // Not a tap: nothing to do.
    let mut relay = Pipeline::bridge(
        t0,
        cfg(),
        leg(CodecSpec::pcmu(), 1, FAR_A),
        leg(CodecSpec::pcmu(), 2, FAR_B),
    )
    .unwrap();
    assert!(!relay.retap(t0, leg(CodecSpec::pcma(), 3, FAR_A)).unwrap());
}

#[test]
fn ai_tap_without_silence_resumes_with_real_time_gap() {
    let t0 = Instant::now();
    let (mut h, mut engine) = tap_pipeline(t0, false);
    h.rtp(Leg::A, FAR_A, &packet(0, 1, 0, 3, false, &[0xff; 160]));
    engine.write_engine(&[1000; 480 * 2]);
    h.advance(PTIME * 5);
    assert_eq!(h.rtp_to(Leg::A).len(), 2);
    h.advance(Duration::from_millis(400));
    engine.write_engine(&[1000; 480]);
    h.advance(PTIME);
    let out = h.rtp_to(Leg::A);
    assert_eq!(out.len(), 3);
    assert_eq!(out[2].sequence(), out[1].sequence().wrapping_add(1));
    assert!(out[2].marker());
    // Sent at the 40 ms and 520 ms ticks: 480 ms of real time apart.
    let dt = out[2].timestamp().wrapping_sub(out[1].timestamp());
    assert_eq!(dt, 3_840);
}

#[test]
fn inactivity_is_reported_once_and_rearmed() {
    let t0 = Instant::now();
    let cfg = PipelineConfig {
        inactivity_timeout: Duration::from_secs(10),
        ..cfg()
    };
    let mut h = Harness::new(
        Pipeline::bridge(
            t0,
            cfg,
            leg(CodecSpec::pcmu(), 1, FAR_A),
            leg(CodecSpec::pcmu(), 2, FAR_B),
        )
        .unwrap(),
        t0,
    );
    h.advance(Duration::from_secs(5));
    h.rtp(Leg::A, FAR_A, &packet(0, 1, 0, 3, false, &[0xff; 160]));
    h.advance(Duration::from_secs(9));
    let inactive = |h: &Harness| {
        h.events
            .iter()
            .filter_map(|e| match e {
                Event::Inactive { leg, .. } => Some(*leg),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    // B never sent: reported at 10 s. A sent at 5 s: not yet.
    assert_eq!(inactive(&h), vec![Leg::B]);
    h.advance(Duration::from_secs(2));
    assert_eq!(inactive(&h), vec![Leg::B, Leg::A]);
    h.advance(Duration::from_secs(60));
    assert_eq!(inactive(&h).len(), 2);
    h.rtp(Leg::A, FAR_A, &packet(0, 2, 160, 3, false, &[0xff; 160]));
    h.advance(Duration::from_secs(11));
    assert_eq!(inactive(&h), vec![Leg::B, Leg::A, Leg::A]);
}

#[test]
fn rtcp_reports_per_leg_and_far_end_reports_are_read() {
    let t0 = Instant::now();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let cfg = PipelineConfig {
        rtcp_interval: Duration::from_secs(5),
        wallclock: Some((t0, wall)),
        ..cfg()
    };
    let mut h = Harness::new(
        Pipeline::bridge(
            t0,
            cfg,
            leg(CodecSpec::pcmu(), 0xa, FAR_A),
            leg(CodecSpec::pcmu(), 0xb, FAR_B),
        )
        .unwrap(),
        t0,
    );
    for i in 0..100u16 {
        if i != 50 {
            h.rtp(
                Leg::A,
                FAR_A,
                &packet(0, i, 160 * u32::from(i), 0x77, false, &[0xff; 160]),
            );
        }
        h.now += PTIME;
    }
    h.advance_to(t0 + Duration::from_secs(5));
    let reports: Vec<_> = h
        .sent
        .iter()
        .filter(|s| s.kind == PacketKind::Rtcp)
        .collect();
    assert_eq!(reports.len(), 2);
    for r in &reports {
        let c = Compound::parse(&r.data).unwrap();
        let pkts: Vec<_> = c.packets().collect();
        match (r.leg, pkts[0]) {
            // A: we received from it (report block with the loss), sent nothing.
            (Leg::A, RtcpPacket::ReceiverReport { ssrc, reports }) => {
                assert_eq!(ssrc, 0xa);
                let b: Vec<ReportBlock> = reports.iter().collect();
                assert_eq!(b[0].ssrc, 0x77);
                assert_eq!(b[0].cumulative_lost, 1);
                assert_eq!(b[0].highest_seq, 99);
                assert_eq!(r.dst, addr("198.51.100.10:40001"));
            }
            // B: we sent to it (SR with counts), received nothing.
            (
                Leg::B,
                RtcpPacket::SenderReport {
                    ssrc,
                    info,
                    reports,
                },
            ) => {
                assert_eq!(ssrc, 0xb);
                assert_eq!(info.packet_count, 99);
                assert_eq!(info.octet_count, 99 * 160);
                assert_eq!(info.ntp >> 32, 1_800_000_005 + 2_208_988_800);
                assert!(reports.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(pkts[1], RtcpPacket::Sdes { .. }));
    }
    // B's far end reports 5% loss on our stream.
    let mut buf = [0u8; 64];
    let mut w = CompoundWriter::new(&mut buf);
    w.receiver_report(
        0x99,
        &[ReportBlock {
            ssrc: 0xb,
            fraction_lost: 13,
            cumulative_lost: 5,
            jitter: 40,
            ..ReportBlock::default()
        }],
    )
    .unwrap();
    let n = w.len();
    let v =
        h.p.handle_rtcp(h.now, Leg::B, addr("203.0.113.20:50001"), &buf[..n]);
    assert_eq!(v, Verdict::Consumed);
    let st = h.p.stats(Leg::B).unwrap();
    assert_eq!(
        (st.far_fraction_lost, st.far_cumulative_lost, st.far_jitter),
        (13, 5, 40)
    );
    assert_eq!(
        h.p.handle_rtcp(h.now, Leg::B, addr("203.0.113.20:50001"), &buf[..n - 1]),
        Verdict::Dropped(DropReason::Malformed)
    );
    // A's far end has sent no RTCP yet: a stranger's report on that port
    // is not the first one learned (its IP is not the RTP's or the SDP's).
    assert_eq!(
        h.p.handle_rtcp(h.now, Leg::A, addr("192.0.2.66:12345"), &buf[..n]),
        Verdict::Dropped(DropReason::WrongSource)
    );
    assert_eq!(
        h.p.handle_rtcp(h.now, Leg::A, addr("198.51.100.10:40001"), &buf[..n]),
        Verdict::Consumed
    );
}

#[test]
fn rtcp_mux_is_demultiplexed_on_the_rtp_socket() {
    let t0 = Instant::now();
    let mut a = leg(CodecSpec::pcmu(), 0xa, FAR_A);
    a.rtcp_mux = true;
    let mut h = Harness::new(
        Pipeline::bridge(t0, cfg(), a, leg(CodecSpec::pcmu(), 0xb, FAR_B)).unwrap(),
        t0,
    );
    h.rtp(Leg::A, FAR_A, &packet(0, 1, 0, 0x77, false, &[0xff; 160]));
    let mut buf = [0u8; 64];
    let mut w = CompoundWriter::new(&mut buf);
    w.receiver_report(0x77, &[]).unwrap();
    let n = w.len();
    assert_eq!(h.rtp(Leg::A, FAR_A, &buf[..n]), Verdict::Consumed);
    assert_eq!(h.p.stats(Leg::A).unwrap().rtcp_in, 1);
    h.advance(Duration::from_secs(6));
    let r: Vec<_> = h
        .sent
        .iter()
        .filter(|s| s.leg == Leg::A && is_rtcp(&s.data))
        .collect();
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].kind, r[0].dst), (PacketKind::Rtp, addr(FAR_A)));
}

#[test]
fn muxed_rtcp_that_latches_reports_it() {
    // Behind a NAT, a far end's first datagram on an rtcp-mux port can be
    // RTCP: it moves where the leg's RTP goes, and says so.
    let t0 = Instant::now();
    let nat = "198.51.100.77:61000";
    let mut a = leg(CodecSpec::pcmu(), 0xa, FAR_A);
    a.rtcp_mux = true;
    let mut h = Harness::new(
        Pipeline::bridge(t0, cfg(), a, leg(CodecSpec::pcmu(), 0xb, FAR_B)).unwrap(),
        t0,
    );
    let mut buf = [0u8; 64];
    let mut w = CompoundWriter::new(&mut buf);
    w.receiver_report(0x77, &[]).unwrap();
    let n = w.len();
    assert_eq!(h.rtp(Leg::A, nat, &buf[..n]), Verdict::Consumed);
    assert_eq!(h.p.destination(Leg::A), Some(addr(nat)));
    assert_eq!(
        h.events,
        [Event::Latched {
            leg: Leg::A,
            address: addr(nat)
        }]
    );
    // RTP from the same address is accepted without a second event; the
    // SDP's address still takes over during learning, and says so.
    h.rtp(Leg::A, nat, &packet(0, 1, 0, 0x77, false, &[0xff; 160]));
    assert_eq!(h.events.len(), 1);
    assert_eq!(h.rtp(Leg::A, FAR_A, &buf[..n]), Verdict::Consumed);
    assert_eq!(h.p.destination(Leg::A), Some(addr(FAR_A)));
    assert_eq!(
        h.events[1..],
        [Event::Latched {
            leg: Leg::A,
            address: addr(FAR_A)
        }]
    );
}

#[test]
fn config_errors() {
    let t0 = Instant::now();
    let mut bad = leg(CodecSpec::pcmu(), 1, FAR_A);
    bad.telephone_event = Some(0);
    assert!(matches!(
        Pipeline::bridge(t0, cfg(), bad, leg(CodecSpec::pcmu(), 2, FAR_B)),
        Err(ConfigError::PayloadType(0))
    ));
    let rtcp_range = leg(CodecSpec::l16(72, 16_000), 1, FAR_A);
    assert!(Pipeline::bridge(t0, cfg(), rtcp_range, leg(CodecSpec::pcmu(), 2, FAR_B)).is_err());
    let bad_rate = TapConfig {
        from_engine_rate: 22_050,
        ..TapConfig::default()
    };
    assert!(Pipeline::ai_tap(t0, cfg(), leg(CodecSpec::pcmu(), 1, FAR_A), bad_rate).is_err());
}
