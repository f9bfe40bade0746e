//! A call's media pipeline under a script read from the fuzz input: RTP
//! datagrams shaped from fuzzed header fields (sequence, timestamp, SSRC,
//! payload type including telephone-event, marker, CSRCs, extension,
//! padding, sizes up to and past the MTU) or raw bytes, RTCP compounds,
//! from the far end, a NATed address, a stranger or the other leg's peer;
//! time steps from none to 31 h (past the wrap of a 48 kHz RTP clock);
//! timeouts run as a worker runs them; re-INVITEs (`update_remote`,
//! `retap`); and for the AI tap, engine audio, flushes and caller reads.
//! Every mode: relay (G.711, Opus), transcoding (PCMU/PCMA, G.711/Opus,
//! L16/G.711) and the AI tap (G.711, Opus).
//!
//! Asserts after each step, with everything drained: no panic; at most a
//! queue's worth of packets and events; every packet within the MTU and
//! well formed (our RTP stream on the leg, or an RTCP compound); RTP goes
//! only to the leg's current destination; a leg's destination moves only
//! on a datagram from the new address on that leg, with a `Latched` event
//! (RTCP on an rtcp-mux leg too), or on `update_remote`; a dropped,
//! buffered or consumed datagram sends nothing, a forwarded one exactly one
//! packet to the other leg; and after `handle_timeout(now)` nothing is due
//! at `now` any more (a worker would spin on it) unless the transmit queue
//! is full (the worker drains it and comes back).
#![no_main]

mod input;

use codeb_media::codec::CodecSpec;
use codeb_media::g711::{alaw_encode, ulaw_encode};
use codeb_media::latch::LatchConfig;
use codeb_media::opus::OpusEncoder;
use codeb_media::pipeline::{
    DropReason, Event, Leg, LegConfig, PacketKind, Pipeline, PipelineConfig, TX_QUEUE, Verdict,
};
use codeb_media::rtcp::{Compound, CompoundWriter, ReportBlock, SenderInfo};
use codeb_media::rtp::{MAX_PACKET_LEN, RtpPacket, is_rtcp};
use codeb_media::tap::{TapConfig, TapEngine};
use input::Input;
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

/// More events than the pipeline queues in one step would be a runaway.
const MAX_EVENTS: usize = 32;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a literal address")
}

/// Addresses datagrams come from: each leg's SDP address and a NATed one,
/// a stranger, an IPv6 one, and the RTCP ports above the SDP ones.
struct Addrs {
    sdp: [SocketAddr; 2],
    nat: [SocketAddr; 2],
    stranger: SocketAddr,
    v6: SocketAddr,
}

impl Addrs {
    fn new() -> Self {
        Addrs {
            sdp: [addr("192.0.2.10:4000"), addr("192.0.2.20:5000")],
            nat: [addr("198.51.100.10:34000"), addr("198.51.100.20:35000")],
            stranger: addr("203.0.113.66:6666"),
            v6: addr("[2001:db8::1]:4000"),
        }
    }

    fn pick(&self, b: u8, leg: Leg, current: Option<SocketAddr>) -> SocketAddr {
        let i = leg_index(leg);
        let up = |a: SocketAddr| SocketAddr::new(a.ip(), a.port().wrapping_add(1));
        match b % 10 {
            // Mostly whoever the leg sends to (so packets get through).
            0..=3 => current.unwrap_or(self.sdp[i]),
            4 => self.sdp[i],
            5 => self.nat[i],
            6 => self.stranger,
            7 => self.sdp[1 - i],
            8 => self.v6,
            _ => up(current.unwrap_or(self.sdp[i])),
        }
    }
}

fn leg_index(leg: Leg) -> usize {
    match leg {
        Leg::A => 0,
        Leg::B => 1,
    }
}

/// Real Opus packets (20 ms, FEC on): silence, then tones.
fn opus_packets() -> &'static [Vec<u8>] {
    static PACKETS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    PACKETS.get_or_init(|| {
        let mut enc = OpusEncoder::new(48_000, 20).expect("opus encoder");
        let mut out = Vec::new();
        for k in 0..12u32 {
            let pcm: Vec<i16> = (0..960u32)
                .map(|n| {
                    let t = f64::from(k * 960 + n) / 48_000.0;
                    let f = 200.0 + 150.0 * f64::from(k);
                    let amp = if k == 0 { 0.0 } else { 8_000.0 };
                    (amp * (2.0 * std::f64::consts::PI * f * t).sin()) as i16
                })
                .collect();
            let mut buf = [0u8; 1275];
            let n = enc.encode(&pcm, &mut buf).expect("opus encode");
            out.push(buf[..n].to_vec());
        }
        out
    })
}

/// One 8 kHz G.711 frame of a DTMF tone (or silence for `digit` > 15).
fn dtmf_frame(digit: u8, index: u32, len: usize, alaw: bool) -> Vec<u8> {
    const ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
    const COLS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
    (0..len)
        .map(|n| {
            let s = if digit > 15 {
                0
            } else {
                let t = (f64::from(index) * len as f64 + n as f64) / 8_000.0;
                let (r, c) = (ROWS[usize::from(digit / 4)], COLS[usize::from(digit % 4)]);
                let w = |f: f64| (2.0 * std::f64::consts::PI * f * t).sin();
                (6_000.0 * (w(r) + w(c))) as i16
            };
            if alaw { alaw_encode(s) } else { ulaw_encode(s) }
        })
        .collect()
}

/// Per-leg state of the far end the script plays.
#[derive(Default, Clone, Copy)]
struct Far {
    seq: u16,
    ts: u32,
    ssrc: u32,
    packets: u32,
    te_duration: u16,
}

/// What a mode byte builds.
struct Setup {
    a: LegConfig,
    b: Option<LegConfig>,
    tap: TapConfig,
}

fn setup(inp: &mut Input<'_>, addrs: &Addrs) -> Setup {
    let mode = inp.byte();
    let flags = inp.byte();
    // Without a second codec, an AI tap.
    let (ca, cb) = match mode % 9 {
        0 => (CodecSpec::pcmu(), Some(CodecSpec::pcmu())),
        1 => (
            CodecSpec::opus(111, 48_000),
            Some(CodecSpec::opus(96, 16_000)),
        ),
        2 => (CodecSpec::pcmu(), Some(CodecSpec::pcma())),
        3 => (CodecSpec::pcma(), Some(CodecSpec::opus(111, 16_000))),
        4 => (CodecSpec::l16(96, 16_000), Some(CodecSpec::pcmu())),
        5 => (CodecSpec::opus(111, 48_000), Some(CodecSpec::pcmu())),
        6 => (CodecSpec::pcmu(), None),
        7 => (CodecSpec::opus(111, 16_000), None),
        _ => (CodecSpec::pcma(), None),
    };
    let leg = |codec, i: usize, te: Option<u8>| LegConfig {
        telephone_event: te,
        remote_rtp: (flags & (0x20 << i) == 0).then_some(addrs.sdp[i]),
        rtcp_mux: flags & (0x04 << i) != 0,
        inband_dtmf: flags & 0x10 != 0,
        ..LegConfig::new(codec, 0x1000_0001 + i as u32 * 0x1111_1111)
    };
    let a = leg(ca, 0, (flags & 1 != 0).then_some(101));
    let b = cb.map(|c| leg(c, 1, (flags & 2 != 0).then_some(100)));
    let tap = TapConfig {
        send_silence: mode & 0x10 == 0,
        pacing_slack: Duration::from_millis(u64::from(mode >> 5)),
        quiet_batch_ms: if mode & 0x80 != 0 { 200 } else { 0 },
        ..TapConfig::default()
    };
    Setup { a, b, tap }
}

struct Run {
    p: Pipeline,
    engine: Option<TapEngine>,
    cfg: [Option<LegConfig>; 2],
    addrs: Addrs,
    start: Instant,
    now: Instant,
    far: [Far; 2],
    /// Addresses a leg's RTCP may go to: its SDP RTCP address, RTCP ports
    /// above its RTP destinations, and sources of RTCP it accepted.
    rtcp_ok: [Vec<SocketAddr>; 2],
    /// RTP and RTCP packets seen going to each leg.
    seen: [(u64, u64); 2],
}

/// What a step was, for the checks after it.
enum Step {
    Datagram {
        leg: Leg,
        src: SocketAddr,
        rtcp: bool,
        verdict: Verdict,
    },
    Remote {
        leg: Leg,
        rtp: Option<SocketAddr>,
    },
    Timeout,
    Other,
}

impl Run {
    fn destinations(&self) -> [Option<SocketAddr>; 2] {
        [self.p.destination(Leg::A), self.p.destination(Leg::B)]
    }

    fn rtp_datagram(&mut self, inp: &mut Input<'_>, leg: Leg) -> Vec<u8> {
        let i = leg_index(leg);
        let Some(cfg) = self.cfg[i] else {
            return inp.bytes(64).to_vec();
        };
        let other_pt = self.cfg[1 - i].map_or(0, |c| c.codec.payload_type);
        let shape = inp.byte();
        let more = inp.byte();
        let te_pt = cfg.telephone_event;
        let pt = match shape % 8 {
            0..=3 => cfg.codec.payload_type,
            4 | 5 => te_pt.unwrap_or(cfg.codec.payload_type),
            6 => other_pt,
            _ => inp.byte() & 0x7f,
        };
        let is_te = Some(pt) == te_pt;
        let far = &mut self.far[i];
        if far.packets == 0 || more & 0x80 != 0 {
            far.ssrc = inp.u32();
            far.seq = inp.u16();
            far.ts = inp.u32();
        }
        let ticks = cfg.codec.frame_ticks();
        match more % 8 {
            0 => {
                far.seq = far.seq.wrapping_add(u16::from(inp.byte()));
                far.ts = far
                    .ts
                    .wrapping_add(ticks.wrapping_mul(u32::from(inp.byte())));
            }
            1 => {
                let back = u16::from(inp.byte() % 20);
                far.seq = far.seq.wrapping_sub(back);
                far.ts = far.ts.wrapping_sub(ticks.wrapping_mul(u32::from(back)));
            }
            2 => far.ts = far.ts.wrapping_add(u32::from(inp.u16())),
            3 => {} // a duplicate
            _ if !is_te => {
                far.seq = far.seq.wrapping_add(1);
                far.ts = far.ts.wrapping_add(ticks);
            }
            _ => far.seq = far.seq.wrapping_add(1),
        }
        far.packets += 1;
        let (seq, ts, ssrc) = (far.seq, far.ts, far.ssrc);

        let payload: Vec<u8> = if is_te && shape & 0x40 == 0 {
            let ev = inp.byte();
            let end = ev & 0x80 != 0;
            far.te_duration = if end {
                far.te_duration
            } else {
                far.te_duration.wrapping_add(160)
            };
            let mut p = vec![ev & 0x1f, (u8::from(end) << 7) | 10];
            p.extend_from_slice(&far.te_duration.to_be_bytes());
            if end {
                far.te_duration = 0;
            }
            p
        } else {
            let kind = inp.byte();
            let frame = cfg.codec.frame_samples();
            let len = match kind % 8 {
                0 | 1 => match cfg.codec.law() {
                    Some(_) => 160,
                    None => frame * 2,
                },
                2 => usize::from(inp.byte()) * 6,
                3 => usize::from(kind >> 3) * 80,
                _ => 160,
            };
            match (cfg.codec.law(), kind % 8) {
                (Some(law), 0 | 1 | 3) => dtmf_frame(
                    kind >> 4,
                    far.packets,
                    len,
                    law == codeb_media::g711::Law::Alaw,
                ),
                (None, 0 | 1) if cfg.codec.kind == codeb_media::codec::CodecKind::Opus => {
                    let packets = opus_packets();
                    packets[usize::from(kind >> 3) % packets.len()].clone()
                }
                _ => {
                    let mut p = inp.bytes(len).to_vec();
                    p.resize(len, kind);
                    p
                }
            }
        };

        let csrcs = if shape & 0x20 != 0 { more & 0x0f } else { 0 };
        let ext_words = if shape & 0x10 != 0 {
            usize::from(inp.byte() % 4)
        } else {
            0
        };
        let pad = if more & 0x40 != 0 { inp.byte() } else { 0 };
        let mut d = Vec::with_capacity(MAX_PACKET_LEN);
        d.push(0x80 | (u8::from(pad != 0) << 5) | (u8::from(shape & 0x10 != 0) << 4) | csrcs);
        d.push((u8::from(more & 0x20 != 0) << 7) | pt);
        d.extend_from_slice(&seq.to_be_bytes());
        d.extend_from_slice(&ts.to_be_bytes());
        d.extend_from_slice(&ssrc.to_be_bytes());
        for c in 0..u32::from(csrcs) {
            d.extend_from_slice(&(0xc000 + c).to_be_bytes());
        }
        if shape & 0x10 != 0 {
            d.extend_from_slice(&[0xbe, 0xde, 0, ext_words as u8]);
            d.extend(std::iter::repeat_n(0x11, 4 * ext_words));
        }
        d.extend_from_slice(&payload);
        if pad != 0 {
            // A pad count that may or may not fit what precedes it.
            d.extend(std::iter::repeat_n(0, usize::from(pad % 8)));
            d.push(pad);
        }
        d
    }

    fn rtcp_datagram(&mut self, inp: &mut Input<'_>, leg: Leg) -> Vec<u8> {
        let i = leg_index(leg);
        let kind = inp.byte();
        if kind.is_multiple_of(4) {
            let n = usize::from(inp.byte());
            return inp.bytes(n).to_vec();
        }
        let ours = self.cfg[i].map_or(0, |c| c.ssrc);
        let theirs = self.far[i].ssrc;
        let mut blocks = Vec::new();
        for _ in 0..(kind >> 2) % 4 {
            blocks.push(ReportBlock {
                ssrc: if inp.byte().is_multiple_of(4) {
                    inp.u32()
                } else {
                    ours
                },
                fraction_lost: inp.byte(),
                cumulative_lost: inp.u32() as i32,
                highest_seq: inp.u32(),
                jitter: inp.u32(),
                last_sr: inp.u32(),
                delay_since_last_sr: inp.u32(),
            });
        }
        let mut buf = [0u8; MAX_PACKET_LEN];
        let mut w = CompoundWriter::new(&mut buf);
        let res = if kind & 0x10 != 0 {
            let info = SenderInfo {
                ntp: u64::from(inp.u32()) << 32,
                rtp_timestamp: inp.u32(),
                packet_count: inp.u32(),
                octet_count: inp.u32(),
            };
            w.sender_report(theirs, &info, &blocks)
        } else {
            w.receiver_report(theirs, &blocks)
        };
        res.and_then(|()| w.sdes_cname(theirs, b"far@example.com"))
            .and_then(|()| {
                if kind & 0x20 != 0 {
                    w.bye(theirs)
                } else {
                    Ok(())
                }
            })
            .expect("room for a small compound");
        let n = w.len();
        buf[..n].to_vec()
    }

    /// Drains the pipeline and checks what came out of `step`.
    fn check(&mut self, step: &Step, before: [Option<SocketAddr>; 2]) {
        let after = self.destinations();
        let mut sent: Vec<(Leg, PacketKind, SocketAddr, Vec<u8>)> = Vec::new();
        while let Some(t) = self.p.poll_transmit() {
            sent.push((t.leg, t.kind, t.destination, t.data.to_vec()));
            assert!(sent.len() <= TX_QUEUE, "more than a queue of transmits");
        }
        let mut events = Vec::new();
        while let Some(e) = self.p.poll_event() {
            events.push(e);
            assert!(events.len() <= MAX_EVENTS, "more than a queue of events");
        }
        for l in [Leg::A, Leg::B] {
            let i = leg_index(l);
            if let Some(d) = after[i] {
                let up = SocketAddr::new(d.ip(), d.port().wrapping_add(1));
                if !self.rtcp_ok[i].contains(&up) {
                    self.rtcp_ok[i].push(up);
                }
            }
        }

        for (leg, kind, dst, data) in &sent {
            let i = leg_index(*leg);
            assert!(!data.is_empty() && data.len() <= MAX_PACKET_LEN);
            let cfg = self.cfg[i].expect("packets only to a leg that exists");
            let rtcp = *kind == PacketKind::Rtcp || (cfg.rtcp_mux && is_rtcp(data));
            if rtcp {
                self.seen[i].1 += 1;
                assert!(*kind == PacketKind::Rtcp || cfg.rtcp_mux);
                Compound::parse(data).expect("our RTCP parses");
                if cfg.rtcp_mux {
                    assert_eq!(Some(*dst), after[i], "muxed RTCP to the RTP destination");
                } else {
                    assert!(
                        self.rtcp_ok[i].contains(dst),
                        "RTCP to {dst}, never a destination of leg {leg:?}"
                    );
                }
            } else {
                self.seen[i].0 += 1;
                let p = RtpPacket::parse(data).expect("our RTP parses");
                assert_eq!(p.ssrc(), cfg.ssrc, "our stream on the leg");
                assert!(
                    p.payload_type() == cfg.codec.payload_type
                        || Some(p.payload_type()) == cfg.telephone_event,
                    "payload type {} on leg {leg:?}",
                    p.payload_type()
                );
                assert_eq!(Some(*dst), after[i], "RTP only to the leg's destination");
            }
        }

        // Where a leg sends moves only for a reason.
        for l in [Leg::A, Leg::B] {
            let i = leg_index(l);
            if before[i] == after[i] {
                continue;
            }
            match step {
                Step::Datagram {
                    leg, src, verdict, ..
                } if *leg == l => {
                    assert_eq!(after[i], Some(*src), "moved to the sender");
                    assert_ne!(*verdict, Verdict::Dropped(DropReason::WrongSource));
                    assert!(
                        events.contains(&Event::Latched {
                            leg: l,
                            address: *src
                        }),
                        "moved without a Latched event"
                    );
                }
                Step::Remote { leg, rtp } if *leg == l => assert_eq!(after[i], *rtp),
                _ => panic!(
                    "leg {l:?} destination moved {:?} -> {:?}",
                    before[i], after[i]
                ),
            }
        }

        match step {
            Step::Datagram {
                leg,
                src,
                rtcp,
                verdict,
            } => {
                let i = leg_index(*leg);
                match verdict {
                    Verdict::Forwarded => {
                        assert_eq!(sent.len(), 1, "a forwarded packet is one packet");
                        assert_eq!(sent[0].0, leg.other());
                        assert_eq!(sent[0].1, PacketKind::Rtp);
                    }
                    Verdict::Dropped(DropReason::WrongSource) => {
                        assert!(sent.is_empty() && events.is_empty());
                    }
                    Verdict::Consumed if *rtcp && !self.rtcp_ok[i].contains(src) => {
                        assert!(sent.is_empty());
                        self.rtcp_ok[i].push(*src);
                    }
                    _ => assert!(sent.is_empty(), "{verdict:?} sent {} packets", sent.len()),
                }
            }
            Step::Remote { .. } => assert!(sent.is_empty()),
            Step::Timeout => {
                // Work left due at once only when the transmit queue is
                // full (the worker drains it and comes back).
                if let Some(due) = self.p.poll_timeout() {
                    assert!(
                        due > self.now || sent.len() == TX_QUEUE,
                        "due at {due:?}, now {:?}, {} sent",
                        self.now,
                        sent.len()
                    );
                }
            }
            Step::Other => {}
        }
        // Drained after every step, nothing is lost, and the counters
        // agree with what was seen.
        assert_eq!(self.p.events_dropped(), 0, "events lost while drained");
        for l in [Leg::A, Leg::B] {
            if let Some(st) = self.p.stats(l) {
                assert_eq!(
                    (st.rtp_out, st.rtcp_out),
                    self.seen[leg_index(l)],
                    "leg {l:?} counters"
                );
            }
        }
        for e in &events {
            match e {
                Event::Inactive { since, .. } => assert!(*since <= self.now),
                Event::Dtmf { digit, .. } => assert!(digit.duration <= Duration::from_secs(60)),
                Event::Latched { .. } | Event::PlayoutFlushed { .. } => {}
            }
        }
    }

    fn step(&mut self, inp: &mut Input<'_>) {
        let op = inp.byte();
        let leg = if op & 0x80 != 0 { Leg::B } else { Leg::A };
        let i = leg_index(leg);
        let before = self.destinations();
        let step = match op % 16 {
            // An RTP-shaped datagram, or (6) raw bytes.
            k @ 0..=6 => {
                let data = if k == 6 {
                    let n = usize::from(inp.u16() % 1600);
                    inp.bytes(n).to_vec()
                } else {
                    self.rtp_datagram(inp, leg)
                };
                let src = self.addrs.pick(inp.byte(), leg, before[i]);
                let verdict = self.p.handle_rtp(self.now, leg, src, &data);
                let rtcp = self.cfg[i].is_some_and(|c| c.rtcp_mux) && is_rtcp(&data);
                Step::Datagram {
                    leg,
                    src,
                    rtcp,
                    verdict,
                }
            }
            7 => {
                let data = self.rtcp_datagram(inp, leg);
                let muxed = self.cfg[i].is_some_and(|c| c.rtcp_mux);
                let src = self.addrs.pick(inp.byte(), leg, before[i]);
                let verdict = if muxed && op & 0x40 != 0 {
                    self.p.handle_rtp(self.now, leg, src, &data)
                } else {
                    self.p.handle_rtcp(self.now, leg, src, &data)
                };
                Step::Datagram {
                    leg,
                    src,
                    rtcp: true,
                    verdict,
                }
            }
            8 | 9 => {
                let b = inp.byte();
                self.now += match b % 8 {
                    0 => Duration::ZERO,
                    1..=4 => Duration::from_millis(u64::from(b >> 3)),
                    5 => Duration::from_millis(20),
                    6 => Duration::from_secs(u64::from(b >> 3)),
                    _ => Duration::from_secs(3_600 * u64::from(b >> 3) + 61),
                };
                self.p.handle_timeout(self.now);
                Step::Timeout
            }
            10 | 11 => {
                // A worker's timer: jump to what is due next.
                if let Some(due) = self.p.poll_timeout() {
                    self.now = self.now.max(due);
                }
                self.p.handle_timeout(self.now);
                Step::Timeout
            }
            12 => {
                let b = inp.byte();
                let rtp = match b % 4 {
                    0 => None,
                    1 => Some(self.addrs.nat[i]),
                    _ => Some(self.addrs.sdp[i]),
                };
                let rtcp = (b & 4 != 0).then(|| self.addrs.pick(b >> 3, leg, rtp));
                self.p.update_remote(leg, rtp, rtcp);
                if let Some(c) = self.cfg[i].as_mut() {
                    c.remote_rtp = rtp;
                    c.remote_rtcp = rtcp;
                }
                for a in [
                    rtcp,
                    rtp.map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1))),
                ]
                .into_iter()
                .flatten()
                {
                    self.rtcp_ok[i].push(a);
                }
                Step::Remote {
                    leg,
                    rtp: if self.cfg[i].is_some() {
                        rtp
                    } else {
                        before[i]
                    },
                }
            }
            13 | 14 => {
                self.engine_op(inp);
                Step::Other
            }
            // A retapped leg starts learning anew from its SDP address.
            _ => match self.retap(inp) {
                Some(rtp) => Step::Remote { leg: Leg::A, rtp },
                None => Step::Other,
            },
        };
        self.check(&step, before);
    }

    fn engine_op(&mut self, inp: &mut Input<'_>) {
        let b = inp.byte();
        match b % 6 {
            0 | 1 => {
                if let Some(e) = &mut self.engine {
                    let n = usize::from(inp.u16() % 8_192);
                    let pcm: Vec<i16> = (0..n)
                        .map(|k| ((k as i32 * i32::from(b)) % 16_000) as i16)
                        .collect();
                    let took = e.write_engine(&pcm);
                    assert!(took <= n);
                }
            }
            2 => {
                if let Some(e) = &mut self.engine {
                    e.flush();
                }
            }
            3 => self.p.flush_playout(),
            4 => self.p.kick_playout(self.now),
            _ => {
                if let Some(e) = &mut self.engine {
                    let mut out = vec![0i16; 4_096];
                    while e.read_caller(&mut out) > 0 {}
                }
            }
        }
    }

    /// A re-INVITE on the tapped leg that changes its codec.
    fn retap(&mut self, inp: &mut Input<'_>) -> Option<Option<SocketAddr>> {
        let b = inp.byte();
        let codec = match b % 4 {
            0 => CodecSpec::pcmu(),
            1 => CodecSpec::pcma(),
            2 => CodecSpec::opus(111, 48_000),
            _ => CodecSpec::opus(96, 8_000),
        };
        let old = self.cfg[0]?;
        // At the same RTP clock rate our stream to the caller carries on
        // (its SSRC); at another it is a new one, the SSRC given here.
        let ssrc = if old.codec.clock_rate == codec.clock_rate {
            old.ssrc
        } else {
            old.ssrc.wrapping_add(1)
        };
        let cfg = LegConfig {
            telephone_event: (b & 4 != 0).then_some(101),
            ..LegConfig {
                codec,
                ..LegConfig::new(codec, ssrc)
            }
        };
        let cfg = LegConfig {
            remote_rtp: old.remote_rtp,
            remote_rtcp: old.remote_rtcp,
            rtcp_mux: old.rtcp_mux,
            ..cfg
        };
        if !self.p.retap(self.now, cfg).expect("a valid leg") {
            return None;
        }
        self.cfg[0] = Some(cfg);
        self.far[0] = Far::default();
        Some(cfg.remote_rtp)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let addrs = Addrs::new();
    let s = setup(&mut inp, &addrs);
    let latch = inp.byte();
    let start = Instant::now();
    let cfg = PipelineConfig {
        latch: LatchConfig {
            learn_packets: u32::from(latch % 8),
            learn_window: Duration::from_millis(u64::from(latch >> 3) * 40),
            ..LatchConfig::default()
        },
        inactivity_timeout: Duration::from_secs(30),
        wallclock: Some((start, SystemTime::now())),
        ..PipelineConfig::default()
    };
    let (p, engine) = match s.b {
        Some(b) => (
            Pipeline::bridge(start, cfg, s.a, b).expect("a valid bridge"),
            None,
        ),
        None => {
            let (p, e) = Pipeline::ai_tap(start, cfg, s.a, s.tap).expect("a valid tap");
            (p, Some(e))
        }
    };
    let mut rtcp_ok = [Vec::new(), Vec::new()];
    for (i, c) in [Some(s.a), s.b].iter().enumerate() {
        if let Some(c) = c {
            let up = c
                .remote_rtp
                .map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1)));
            rtcp_ok[i].extend(c.remote_rtcp.or(up));
        }
    }
    let mut run = Run {
        p,
        engine,
        cfg: [Some(s.a), s.b],
        addrs,
        start,
        now: start,
        far: [Far::default(); 2],
        rtcp_ok,
        seen: [(0, 0); 2],
    };
    let mut steps = 0;
    while !inp.is_empty() && steps < 1_000 {
        run.step(&mut inp);
        steps += 1;
    }
    assert!(run.now >= run.start);
});
