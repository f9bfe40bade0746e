//! A call's media pipeline: two legs bridged (relay or transcode), or one
//! leg tapped by a voice-AI engine. Sans-IO; one media worker drives many.
//!
//! # Drain contract
//!
//! The worker owns the sockets and the clock. For each pipeline it:
//!
//! 1. passes every datagram received on a leg's RTP (or RTCP) socket to
//!    [`Pipeline::handle_rtp`] (or [`Pipeline::handle_rtcp`]) with the time
//!    it arrived and its source address;
//! 2. calls [`Pipeline::handle_timeout`] when the instant from
//!    [`Pipeline::poll_timeout`] has passed (jitter-buffer playout, AI
//!    playout pacing, RTCP reports, inactivity, DTMF timeouts);
//! 3. after either, sends everything [`Pipeline::poll_transmit`] returns
//!    (each names the leg, RTP or RTCP socket, and destination), and reads
//!    [`Pipeline::poll_event`] until `None`.
//!
//! The transmit queue is bounded ([`TX_QUEUE`] packets); a worker that does
//! not drain it after each call loses packets (counted in [`LegStats`]).
//! A timeout with more to send than the queue holds (transcoded playout
//! after a late turn) stops when it is full and leaves
//! [`Pipeline::poll_timeout`] at or before `now`: drain, then call again.
//! Nothing here allocates after construction.
//!
//! # Modes
//!
//! * **Relay** (same codec on both legs): each packet is validated, filtered
//!   by the leg's source latch, accounted, and copied to the other leg with
//!   SSRC, sequence, timestamp and payload type rewritten.
//! * **Transcode** (different codecs): packets go into the leg's jitter
//!   buffer; at each playout time the frame is decoded (or concealed:
//!   Opus FEC/PLC), resampled to the other leg's rate, encoded and sent.
//! * **AI tap** (one leg): the caller's audio is decoded as soon as each
//!   frame is here in order (the jitter buffer then only waits for gaps;
//!   the engine has no playout clock to feed), resampled to 16 kHz (by
//!   default) and pushed to the engine ring; engine audio
//!   (24 kHz by default) is paced out one packet per ptime, with flush
//!   (barge-in) and a played-milliseconds counter; see [`crate::tap`].
//!
//! DTMF: RFC 4733 events are reported once ([`Event::Dtmf`]) and relayed to
//! the other leg with its own telephone-event payload type (translated onto
//! its timeline when transcoding); on G.711 legs without telephone-event,
//! in-band tones are detected when `inband_dtmf` is set.

mod ai_tap;
mod leg;
mod reports;
#[cfg(test)]
mod tests;
mod txqueue;
mod types;

use crate::dtmf::TelephoneEvent;
use crate::latch::{LatchVerdict, Stream};
use crate::resample::Resampler;
use crate::rewrite::Source;
use crate::rtp::{MAX_PACKET_LEN, RtpHeader, RtpPacket, is_rtcp, rewrite_header};
use crate::tap::{TapConfig, TapEngine, TapWorker};
use ai_tap::Tap;
use leg::{LegState, Receive};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use txqueue::TxQueue;
pub use types::{
    ConfigError, DropReason, Event, Leg, LegConfig, LegStats, PacketKind, PipelineConfig, Transmit,
    Verdict,
};

/// Packets the transmit queue holds.
pub const TX_QUEUE: usize = 8;
const EVENT_QUEUE: usize = 32;
const PTIME: Duration = Duration::from_millis(20);
/// Largest 20 ms frame (48 kHz).
const MAX_FRAME: usize = 960;
/// Largest packet decoded at once: 120 ms at 48 kHz (Opus's longest).
const MAX_DECODE: usize = 6 * MAX_FRAME;
/// In-band DTMF detection takes 20 ms of 8 kHz audio at a time: the
/// detector reports at most one digit per 20 ms it is given, and a far
/// end's packet may carry more (two digits back to back can both end
/// within one of 120 ms).
const INBAND_CHUNK: usize = 160;

/// Per-mode state.
enum Mode {
    Relay,
    Transcode {
        /// [A→B, B→A].
        resample: [Box<Resampler>; 2],
    },
    Tap(Box<Tap>),
}

/// Scratch buffers: a frame's audio on its way through a pipeline.
struct Scratch {
    /// Decoded audio: a leg's carried-over samples, then a packet's.
    pcm: [i16; MAX_FRAME + MAX_DECODE],
    pcm2: [i16; MAX_FRAME],
    payload: [u8; MAX_PACKET_LEN],
}

thread_local! {
    /// The scratch buffers of every pipeline the thread drives. Nothing
    /// stays in them from one operation to the next (each writes what it
    /// reads there first), so one set serves all, and stays in cache:
    /// one set per pipeline (some 17 KB each) was cold again at every
    /// frame of every call once a worker carried hundreds, and a frame
    /// writes some forty lines of it. Laid out in place, never allocated.
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            pcm: [0; MAX_FRAME + MAX_DECODE],
            pcm2: [0; MAX_FRAME],
            payload: [0; MAX_PACKET_LEN],
        })
    };
}

/// Runs `f` with the thread's scratch buffers. Only the operations that
/// fill and drain them call this, never one inside another's `f` (the
/// buffers are passed down instead).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with_borrow_mut(f)
}

/// One call's media state machine. See the module docs for the drain
/// contract.
pub struct Pipeline {
    cfg: PipelineConfig,
    legs: [Option<LegState>; 2],
    mode: Mode,
    tx: TxQueue,
    events: VecDeque<Event>,
    events_dropped: u64,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.mode {
            Mode::Relay => "relay",
            Mode::Transcode { .. } => "transcode",
            Mode::Tap(_) => "ai-tap",
        };
        f.debug_struct("Pipeline").field("mode", &mode).finish()
    }
}

fn check_pt(pt: u8) -> Result<(), ConfigError> {
    if pt > 127 || (64..=95).contains(&pt) {
        return Err(ConfigError::PayloadType(pt));
    }
    Ok(())
}

fn check_leg(l: &LegConfig) -> Result<(), ConfigError> {
    check_pt(l.codec.payload_type)?;
    if let Some(te) = l.telephone_event {
        check_pt(te)?;
        if te == l.codec.payload_type {
            return Err(ConfigError::PayloadType(te));
        }
    }
    Ok(())
}

impl Pipeline {
    /// Bridges two legs: relay when their codecs carry the same bitstream,
    /// transcode otherwise.
    pub fn bridge(
        now: Instant,
        cfg: PipelineConfig,
        a: LegConfig,
        b: LegConfig,
    ) -> Result<Pipeline, ConfigError> {
        check_leg(&a)?;
        check_leg(&b)?;
        let relay = a.codec.relay_compatible(&b.codec);
        let mode = if relay {
            Mode::Relay
        } else {
            Mode::Transcode {
                resample: [
                    Box::new(Resampler::new(a.codec.pcm_rate, b.codec.pcm_rate)?),
                    Box::new(Resampler::new(b.codec.pcm_rate, a.codec.pcm_rate)?),
                ],
            }
        };
        let receive = if relay {
            Receive::Relay
        } else {
            Receive::Paced
        };
        let legs = [
            Some(LegState::new(now, Leg::A, &cfg, a, receive)?),
            Some(LegState::new(now, Leg::B, &cfg, b, receive)?),
        ];
        Ok(Pipeline::assemble(cfg, legs, mode))
    }

    /// Taps one leg (the caller, [`Leg::A`]) with a voice-AI engine; the
    /// returned handle goes to the AI side.
    pub fn ai_tap(
        now: Instant,
        cfg: PipelineConfig,
        caller: LegConfig,
        tap: TapConfig,
    ) -> Result<(Pipeline, TapEngine), ConfigError> {
        check_leg(&caller)?;
        let to_engine = Resampler::new(caller.codec.pcm_rate, tap.to_engine_rate)?;
        let from_engine = Resampler::new(tap.from_engine_rate, caller.codec.pcm_rate)?;
        let (worker, engine) = TapWorker::new(&tap);
        let legs = [
            Some(LegState::new(
                now,
                Leg::A,
                &cfg,
                caller,
                Receive::OnArrival,
            )?),
            None,
        ];
        let mode = Mode::Tap(Box::new(Tap {
            cfg: tap,
            worker,
            to_engine,
            from_engine,
            next_tick: now + PTIME,
            partial_waiting: false,
            source: 0,
            sending: false,
            speaking: false,
        }));
        Ok((Pipeline::assemble(cfg, legs, mode), engine))
    }

    fn assemble(cfg: PipelineConfig, legs: [Option<LegState>; 2], mode: Mode) -> Pipeline {
        Pipeline {
            cfg,
            legs,
            mode,
            tx: TxQueue::new(),
            events: VecDeque::with_capacity(EVENT_QUEUE),
            events_dropped: 0,
        }
    }

    /// True when the legs' codecs differ (decode/resample/encode).
    pub fn is_transcoding(&self) -> bool {
        matches!(self.mode, Mode::Transcode { .. })
    }

    pub fn stats(&self, leg: Leg) -> Option<LegStats> {
        self.legs[leg.index()].as_ref().map(|l| l.stats)
    }

    /// RFC 3550 receive statistics of the far end's stream on `leg`:
    /// (expected, received, cumulative lost, jitter in RTP units).
    pub fn receive_stats(&self, leg: Leg) -> Option<(u64, u64, i64, u32)> {
        self.legs[leg.index()].as_ref().map(|l| {
            (
                l.recv.expected(),
                l.recv.received(),
                l.recv.lost_total(),
                l.recv.jitter_rtp(),
            )
        })
    }

    /// Packets dropped from other sources than the latched one on `leg`.
    pub fn dropped_foreign(&self, leg: Leg) -> u64 {
        self.legs[leg.index()]
            .as_ref()
            .map_or(0, |l| l.latch.dropped() + l.rtcp_latch.dropped())
    }

    /// The stream `leg` sends its far end: its SSRC and where its
    /// numbering stands, and what was sent on it (the sender report's
    /// counts).
    pub fn stream(
        &self,
        leg: Leg,
    ) -> Option<(&crate::rewrite::StreamRewriter, crate::stats::SendStats)> {
        self.legs[leg.index()]
            .as_ref()
            .map(|l| (&l.rewriter, l.send))
    }

    /// Carries on `stream`, which the far end of `leg` was receiving
    /// before this pipeline (the switch's plain relay, or an earlier
    /// pipeline), with what was `sent` on it: the same SSRC, sequence
    /// numbers and timestamps continuing from it and its sender counts
    /// going on, so a call moved between relay, transcoding and AI audio
    /// is one stream to that far end (RFC 3550 §6.4.1: the counts reset
    /// only with the SSRC). Only a stream at the leg's clock rate is
    /// taken; false if it was not.
    pub fn continue_stream(
        &mut self,
        leg: Leg,
        stream: &crate::rewrite::StreamRewriter,
        sent: crate::stats::SendStats,
    ) -> bool {
        match &mut self.legs[leg.index()] {
            Some(l) if l.rewriter.clock_rate() == stream.clock_rate() => {
                l.rewriter = stream.clone();
                // This pipeline's sources are not the earlier one's, even
                // where their ids match (each numbers its own from 1): its
                // first packet starts a new run from the last one sent.
                l.rewriter.rebase();
                l.send = sent;
                true
            }
            _ => false,
        }
    }

    /// The far end of `leg` holds the call (our side of its stream is
    /// `recvonly`/`inactive`): nothing is encoded, numbered or sent to it
    /// (RTCP still goes, RFC 3264 §5.1). Off hold, its stream goes on by
    /// one sequence number from the last packet it got
    /// ([`StreamRewriter::rebase`](crate::rewrite::StreamRewriter::rebase)).
    pub fn hold(&mut self, leg: Leg, held: bool) {
        if let Some(l) = &mut self.legs[leg.index()] {
            if l.held && !held {
                l.rewriter.rebase();
            }
            l.held = held;
        }
    }

    /// Where we send the leg's RTP (latched, or the SDP address).
    pub fn destination(&self, leg: Leg) -> Option<SocketAddr> {
        self.legs[leg.index()]
            .as_ref()
            .and_then(|l| l.latch.destination())
    }

    /// Events lost because nobody drained them.
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    /// The far end's SDP changed (re-INVITE): learn its address anew.
    pub fn update_remote(&mut self, leg: Leg, rtp: Option<SocketAddr>, rtcp: Option<SocketAddr>) {
        if let Some(l) = &mut self.legs[leg.index()] {
            l.cfg.remote_rtp = rtp;
            l.cfg.remote_rtcp = rtcp;
            l.latch.relearn(rtp);
            let rtcp =
                rtcp.or_else(|| rtp.map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1))));
            l.rtcp_latch.relearn(rtcp);
        }
    }

    /// The IPs `leg`'s far end may send from once its source is locked
    /// ([`SourceLatch::locked_ips`](crate::latch::SourceLatch::locked_ips));
    /// None while it is learned.
    pub fn locked_source_ips(&self, leg: Leg) -> Option<[Option<std::net::IpAddr>; 3]> {
        self.legs[leg.index()].as_ref()?.latch.locked_ips()
    }

    /// Trusts `ip`, where the far end of `leg` signals from, as its SDP's
    /// IP is trusted ([`SourceLatch::trust`](crate::latch::SourceLatch::trust)).
    pub fn trust_source(&mut self, leg: Leg, ip: Option<std::net::IpAddr>) {
        if let Some(l) = &mut self.legs[leg.index()] {
            l.latch.trust(ip);
            l.rtcp_latch.trust(ip);
        }
    }

    fn emit(&mut self, e: Event) {
        if self.events.len() == EVENT_QUEUE {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(e);
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit<'_>> {
        let s = self.tx.pop()?;
        Some(Transmit {
            leg: s.leg,
            kind: s.kind,
            destination: s.dst,
            data: &s.buf[..s.len],
        })
    }

    /// The earliest instant [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut at = |i: Option<Instant>| {
            if let Some(i) = i {
                t = Some(t.map_or(i, |t| t.min(i)));
            }
        };
        // Only transcoding holds frames back (see `playout`).
        let holds = matches!(self.mode, Mode::Transcode { .. });
        for l in self.legs.iter().flatten() {
            at(Some(l.next_rtcp));
            at(l.inactivity_deadline(&self.cfg));
            at(l.dtmf.next_timeout());
            at(l.rx.as_ref().and_then(|r| r.jb.next_due()));
            if holds {
                at(l.rx.as_ref().and_then(|r| r.held));
            }
        }
        if let Mode::Tap(tap) = &self.mode {
            at(Some(tap.due()));
        }
        t
    }

    /// A datagram from `src` on `leg`'s RTP socket (RTCP too with rtcp-mux).
    pub fn handle_rtp(&mut self, now: Instant, leg: Leg, src: SocketAddr, data: &[u8]) -> Verdict {
        let Some(l) = &mut self.legs[leg.index()] else {
            return Verdict::Dropped(DropReason::NoLeg);
        };
        if l.cfg.rtcp_mux && is_rtcp(data) {
            return self.handle_rtcp(now, leg, src, data);
        }
        let Ok(pkt) = RtpPacket::parse(data) else {
            l.stats.malformed += 1;
            return Verdict::Dropped(DropReason::Malformed);
        };
        let pt = pkt.payload_type();
        let is_te = l.cfg.telephone_event == Some(pt);
        if pt != l.cfg.codec.payload_type && !is_te {
            l.stats.unknown_payload_type += 1;
            return Verdict::Dropped(DropReason::UnknownPayloadType);
        }
        // A payload the decoded path cannot hold (Opus past its 1,275-byte
        // bound) is malformed: refused before it can name the latch's
        // candidate, so only a packet we would play teaches the source.
        if !is_te
            && l.rx
                .as_ref()
                .is_some_and(|rx| pkt.payload().len() > rx.jb.max_payload())
        {
            l.stats.malformed += 1;
            return Verdict::Dropped(DropReason::Malformed);
        }
        match l.latch.check(
            now,
            src,
            Stream::Rtp {
                ssrc: pkt.ssrc(),
                seq: pkt.sequence(),
            },
        ) {
            LatchVerdict::Drop => {
                l.stats.wrong_source += 1;
                return Verdict::Dropped(DropReason::WrongSource);
            }
            LatchVerdict::Learned(address) => self.emit(Event::Latched { leg, address }),
            LatchVerdict::Accept => {}
        }
        let Some(l) = &mut self.legs[leg.index()] else {
            return Verdict::Dropped(DropReason::NoLeg);
        };
        l.on_received(
            now,
            pkt.ssrc(),
            pkt.sequence(),
            pkt.timestamp(),
            pkt.payload().len(),
        );
        if is_te {
            return self.on_telephone_event(now, leg, &pkt);
        }
        match self.mode {
            Mode::Relay => {
                self.inband_detect_payload(leg, pkt.payload());
                self.relay(now, leg, &pkt, pt)
            }
            Mode::Transcode { .. } | Mode::Tap(_) => {
                let Some(l) = &mut self.legs[leg.index()] else {
                    return Verdict::Dropped(DropReason::NoLeg);
                };
                let Some(rx) = &mut l.rx else {
                    return Verdict::Dropped(DropReason::NoLeg);
                };
                let was_idle = rx.jb.next_due().is_none();
                use crate::jitter::Insert;
                match rx.jb.insert(
                    now,
                    pkt.sequence(),
                    pkt.timestamp(),
                    pkt.marker(),
                    pkt.payload(),
                ) {
                    Insert::Stored if was_idle => {
                        rx.talkspurt = rx.talkspurt.wrapping_add(1);
                    }
                    Insert::Resync => {
                        rx.talkspurt = rx.talkspurt.wrapping_add(1);
                    }
                    Insert::Stored => {}
                    Insert::Late | Insert::Duplicate => {
                        l.stats.late += 1;
                        return Verdict::Dropped(DropReason::Late);
                    }
                    Insert::TooLarge => {
                        l.stats.malformed += 1;
                        return Verdict::Dropped(DropReason::Malformed);
                    }
                }
                if matches!(self.mode, Mode::Tap(_)) {
                    // Frames the buffer releases on arrival go now.
                    self.playout(now, leg);
                }
                Verdict::Buffered
            }
        }
    }

    /// Runs in-band DTMF detection on a G.711 payload (relay path).
    fn inband_detect_payload(&mut self, leg: Leg, payload: &[u8]) {
        let Some(law) = self.legs[leg.index()]
            .as_ref()
            .filter(|l| l.inband.is_some())
            .and_then(|l| l.cfg.codec.law())
        else {
            return;
        };
        let mut pcm = [0i16; INBAND_CHUNK];
        for codes in payload.chunks(INBAND_CHUNK) {
            let n = law.decode(codes, &mut pcm);
            self.inband_detect(leg, &pcm[..n]);
        }
    }

    /// Feeds 8 kHz audio to `leg`'s in-band DTMF detector 20 ms at a
    /// time, reporting every digit that ends in it.
    fn inband_detect(&mut self, leg: Leg, pcm: &[i16]) {
        for chunk in pcm.chunks(INBAND_CHUNK) {
            let Some(det) = self.legs[leg.index()]
                .as_mut()
                .and_then(|l| l.inband.as_mut())
            else {
                return;
            };
            if let Some(digit) = det.push(chunk) {
                self.emit(Event::Dtmf { leg, digit });
            }
        }
    }

    fn relay(&mut self, now: Instant, from: Leg, pkt: &RtpPacket<'_>, pt: u8) -> Verdict {
        let [a, b] = &mut self.legs;
        let (Some(src_leg), Some(dst_leg)) = (match from {
            Leg::A => (a.as_mut(), b.as_mut()),
            Leg::B => (b.as_mut(), a.as_mut()),
        }) else {
            return Verdict::Dropped(DropReason::NoLeg);
        };
        if dst_leg.held {
            return Verdict::Consumed;
        }
        let out_pt = if pt == src_leg.cfg.codec.payload_type {
            dst_leg.cfg.codec.payload_type
        } else {
            match dst_leg.cfg.telephone_event {
                Some(te) => te,
                None => return Verdict::Consumed,
            }
        };
        let Some(dst) = dst_leg.latch.destination() else {
            dst_leg.stats.no_destination += 1;
            return Verdict::Dropped(DropReason::NoDestination);
        };
        let rw = dst_leg.rewriter.map(
            now,
            Source::Relay { ssrc: pkt.ssrc() },
            pkt.sequence(),
            pkt.timestamp(),
        );
        let Some(slot) = self.tx.push(dst_leg.leg, PacketKind::Rtp, dst) else {
            dst_leg.stats.queue_full += 1;
            return Verdict::Dropped(DropReason::QueueFull);
        };
        let bytes = pkt.as_bytes();
        slot.buf[..bytes.len()].copy_from_slice(bytes);
        slot.len = bytes.len();
        let header = RtpHeader {
            marker: pkt.marker() || rw.marker,
            payload_type: out_pt,
            sequence: rw.sequence,
            timestamp: rw.timestamp,
            ssrc: dst_leg.rewriter.ssrc(),
        };
        if rewrite_header(&mut slot.buf[..bytes.len()], &header).is_err() {
            self.tx.unpush();
            return Verdict::Dropped(DropReason::Malformed);
        }
        if pt != src_leg.cfg.codec.payload_type {
            let at = pkt.header_len();
            crate::dtmf::rescale_durations(
                &mut slot.buf[at..at + pkt.payload().len()],
                src_leg.cfg.telephone_event_clock,
                dst_leg.cfg.telephone_event_clock,
            );
        }
        dst_leg.send.on_sent(
            now,
            rw.timestamp,
            pkt.payload().len(),
            dst_leg.rewriter.clock_rate(),
        );
        dst_leg.stats.rtp_out += 1;
        Verdict::Forwarded
    }

    fn on_telephone_event(&mut self, now: Instant, leg: Leg, pkt: &RtpPacket<'_>) -> Verdict {
        let Ok(ev) = TelephoneEvent::parse(pkt.payload()) else {
            if let Some(l) = &mut self.legs[leg.index()] {
                l.stats.malformed += 1;
            }
            return Verdict::Dropped(DropReason::Malformed);
        };
        let mut also = None;
        let digit = self.legs[leg.index()]
            .as_mut()
            .and_then(|l| l.dtmf.on_packet(now, pkt.timestamp(), &ev, &mut also));
        for digit in [digit, also].into_iter().flatten() {
            self.emit(Event::Dtmf { leg, digit });
        }
        match self.mode {
            Mode::Relay => {
                let pt = pkt.payload_type();
                self.relay(now, leg, pkt, pt)
            }
            Mode::Transcode { .. } => self.translate_event(now, leg, pkt, &ev),
            Mode::Tap(_) => Verdict::Consumed,
        }
    }

    /// Re-sends a telephone-event on the other leg's own timeline (the two
    /// legs' streams are generated separately when transcoding).
    fn translate_event(
        &mut self,
        now: Instant,
        from: Leg,
        pkt: &RtpPacket<'_>,
        ev: &TelephoneEvent,
    ) -> Verdict {
        let [a, b] = &mut self.legs;
        let (Some(src_leg), Some(dst_leg)) = (match from {
            Leg::A => (a.as_mut(), b.as_mut()),
            Leg::B => (b.as_mut(), a.as_mut()),
        }) else {
            return Verdict::Dropped(DropReason::NoLeg);
        };
        let Some(te_pt) = dst_leg.cfg.telephone_event.filter(|_| !dst_leg.held) else {
            return Verdict::Consumed;
        };
        let (Some(rx), Some(tx)) = (&src_leg.rx, &mut dst_leg.tx) else {
            return Verdict::Dropped(DropReason::NoLeg);
        };
        let Some(dst) = dst_leg.latch.destination() else {
            dst_leg.stats.no_destination += 1;
            return Verdict::Dropped(DropReason::NoDestination);
        };
        let start = match tx.te_map {
            Some((their, ours)) if their == pkt.timestamp() => ours,
            _ => {
                tx.te_map = Some((pkt.timestamp(), tx.ts));
                tx.ts
            }
        };
        // Each leg's events run on its own negotiated clock.
        let scale = |d: u16| {
            (u64::from(d) * u64::from(dst_leg.cfg.telephone_event_clock)
                / u64::from(src_leg.cfg.telephone_event_clock.max(1)))
            .min(u64::from(u16::MAX)) as u16
        };
        let out_ev = TelephoneEvent {
            duration: scale(ev.duration),
            ..*ev
        };
        let seq = tx.seq;
        tx.seq = tx.seq.wrapping_add(1);
        let rw = dst_leg
            .rewriter
            .map(now, Source::Local { id: rx.talkspurt }, seq, start);
        let Some(slot) = self.tx.push(dst_leg.leg, PacketKind::Rtp, dst) else {
            dst_leg.stats.queue_full += 1;
            return Verdict::Dropped(DropReason::QueueFull);
        };
        let header = RtpHeader {
            marker: pkt.marker() || rw.marker,
            payload_type: te_pt,
            sequence: rw.sequence,
            timestamp: rw.timestamp,
            ssrc: dst_leg.rewriter.ssrc(),
        };
        match header.write_packet(&out_ev.to_bytes(), &mut slot.buf) {
            Ok(n) => slot.len = n,
            Err(_) => {
                self.tx.unpush();
                return Verdict::Dropped(DropReason::Malformed);
            }
        }
        let clock = dst_leg.rewriter.clock_rate();
        dst_leg.send.on_sent(now, rw.timestamp, 4, clock);
        dst_leg.stats.rtp_out += 1;
        Verdict::Forwarded
    }

    /// Says goodbye on every leg as the call ends (RFC 3550 §6.6): a last
    /// report with a BYE for our source, queued as a transmit like any
    /// other. Call it once, then drain the transmits.
    pub fn end(&mut self, now: Instant) {
        for i in 0..self.legs.len() {
            self.send_report(now, i, true);
        }
    }

    /// Does whatever is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for leg in [Leg::A, Leg::B] {
            self.playout(now, leg);
        }
        self.tap_ticks(now);
        for i in 0..2 {
            let Some(l) = &mut self.legs[i] else { continue };
            let leg = l.leg;
            if let Some(e) = l.check_inactivity(now, &self.cfg) {
                self.emit(e);
            }
            let Some(l) = &mut self.legs[i] else { continue };
            if let Some(digit) = l.dtmf.poll(now) {
                self.emit(Event::Dtmf { leg, digit });
            }
            let Some(l) = &mut self.legs[i] else { continue };
            // A queue that playout filled takes the report on the next
            // turn, once drained (the report is still due then).
            if now >= l.next_rtcp && self.tx.len < TX_QUEUE {
                l.next_rtcp = now + self.cfg.rtcp_interval;
                self.send_report(now, i, false);
            }
        }
    }

    /// Plays out every packet due in `leg`'s jitter buffer, whatever its
    /// duration: decoded audio goes on in 20 ms frames, and what is short
    /// of a whole frame waits for the next packet's. A transcoded packet
    /// longer than the transmit queue holds frames of (a far end's 180 ms
    /// of G.711 is nine) goes out in parts: when the queue is full the
    /// rest waits here, due at once, for the worker to drain the queue
    /// and come back, so no frame is lost to the queue's size.
    fn playout(&mut self, now: Instant, leg: Leg) {
        with_scratch(|scratch| self.playout_through(now, leg, scratch));
    }

    fn playout_through(&mut self, now: Instant, leg: Leg, scratch: &mut Scratch) {
        let i = leg.index();
        let queued = matches!(self.mode, Mode::Transcode { .. });
        loop {
            let room = if queued {
                TX_QUEUE - self.tx.len
            } else {
                usize::MAX
            };
            let Some(l) = &mut self.legs[i] else { return };
            let Some(rx) = &mut l.rx else { return };
            let frame = l.cfg.codec.frame_samples().max(1);
            let carry = rx.carry_len;
            let pcm = &mut scratch.pcm;
            pcm[..carry].copy_from_slice(&rx.carry[..carry]);
            let talkspurt = rx.talkspurt;
            // Whole frames left over from the last turn go before another
            // packet is taken.
            let n = if carry >= frame {
                0
            } else {
                let rate = u128::from(l.cfg.codec.pcm_rate);
                // A lost packet is as long as the far end's packets, in
                // whole 2.5 ms steps (what Opus can conceal).
                let step = (l.cfg.codec.pcm_rate / 400).max(1) as usize;
                let lost = (rx.jb.ptime().as_micros() * rate / 1_000_000) as usize;
                let lost = (lost / step * step).clamp(step, MAX_DECODE);
                let room = &mut pcm[carry..carry + MAX_DECODE];
                use crate::jitter::Playout;
                let res = match rx.jb.pop(now) {
                    None => return,
                    Some(Playout::Frame { payload, .. }) => rx.dec.decode_packet(payload, room),
                    Some(Playout::Lost { next, .. }) => {
                        rx.dec.conceal(next, &mut room[..lost]).map(|()| lost)
                    }
                };
                let n = res.unwrap_or_else(|_| {
                    l.stats.codec_errors += 1;
                    room[..frame].fill(0);
                    frame
                });
                if l.inband.is_some() && l.cfg.codec.pcm_rate == 8_000 {
                    self.inband_detect(leg, &scratch.pcm[carry..carry + n]);
                }
                n
            };
            let total = carry + n;
            let frames = (total / frame).min(room);
            let sent = frames * frame;
            for start in (0..sent).step_by(frame) {
                self.deliver_decoded(now, leg, &mut *scratch, start..start + frame, talkspurt);
            }
            let Some(rx) = self.legs[i].as_mut().and_then(|l| l.rx.as_mut()) else {
                return;
            };
            rx.carry_len = total - sent;
            rx.carry[..total - sent].copy_from_slice(&scratch.pcm[sent..total]);
            if !queued {
                continue;
            }
            if rx.carry_len >= frame && self.tx.len == TX_QUEUE {
                // The queue is full: due again as soon as it is drained.
                rx.held = Some(now);
                return;
            }
            // Whole frames left with room in the queue (frames that had
            // nowhere to go took none) go on the next pass of the loop.
            // Only transcoding holds frames back: an AI tap's go to the
            // engine's ring, and its playout never writes this line.
            rx.held = None;
        }
    }

    /// Sends a decoded 20 ms frame (in `scratch.pcm[frame]`) where this
    /// mode wants it.
    fn deliver_decoded(
        &mut self,
        now: Instant,
        from: Leg,
        scratch: &mut Scratch,
        frame: std::ops::Range<usize>,
        talkspurt: u32,
    ) {
        let Scratch { pcm, pcm2, payload } = scratch;
        let n = frame.len();
        let pcm = &pcm[frame];
        match &mut self.mode {
            Mode::Relay => {}
            Mode::Transcode { resample } => {
                let r = &mut resample[from.index()];
                let out_n = r.output_len();
                if r.process(&pcm[..n], &mut pcm2[..out_n]).is_err() {
                    return;
                }
                let to = from.other();
                let Some(dst_leg) = &mut self.legs[to.index()] else {
                    return;
                };
                send_encoded(
                    now,
                    dst_leg,
                    &mut self.tx,
                    &pcm2[..out_n],
                    payload,
                    Source::Local { id: talkspurt },
                );
            }
            Mode::Tap(tap) => {
                let out_n = tap.to_engine.output_len();
                if tap.to_engine.process(&pcm[..n], &mut pcm2[..out_n]).is_ok() {
                    tap.worker.push_caller(&pcm2[..out_n]);
                }
            }
        }
    }
}

/// Encodes `pcm` for `dst_leg` and queues the packet; true when queued
/// (or owed to nobody: the far end holds the call).
fn send_encoded(
    now: Instant,
    dst_leg: &mut LegState,
    tx: &mut TxQueue,
    pcm: &[i16],
    payload: &mut [u8; MAX_PACKET_LEN],
    source: Source,
) -> bool {
    if dst_leg.held {
        // Taken as sent: a held far end is owed nothing.
        return true;
    }
    let Some(path) = &mut dst_leg.tx else {
        return false;
    };
    let body = &mut payload[..MAX_PACKET_LEN - 12];
    let Ok(n) = path.enc.encode(pcm, body) else {
        dst_leg.stats.codec_errors += 1;
        return false;
    };
    let (seq, ts) = (path.seq, path.ts);
    path.seq = path.seq.wrapping_add(1);
    path.ts = path.ts.wrapping_add(dst_leg.cfg.codec.frame_ticks());
    let rw = dst_leg.rewriter.map(now, source, seq, ts);
    let Some(dst) = dst_leg.latch.destination() else {
        dst_leg.stats.no_destination += 1;
        return false;
    };
    let Some(slot) = tx.push(dst_leg.leg, PacketKind::Rtp, dst) else {
        dst_leg.stats.queue_full += 1;
        return false;
    };
    let header = RtpHeader {
        marker: rw.marker,
        payload_type: dst_leg.cfg.codec.payload_type,
        sequence: rw.sequence,
        timestamp: rw.timestamp,
        ssrc: dst_leg.rewriter.ssrc(),
    };
    match header.write_packet(&payload[..n], &mut slot.buf) {
        Ok(len) => slot.len = len,
        Err(_) => {
            tx.unpush();
            return false;
        }
    }
    let clock = dst_leg.rewriter.clock_rate();
    dst_leg.send.on_sent(now, rw.timestamp, n, clock);
    dst_leg.stats.rtp_out += 1;
    true
}
