//! One media worker: a reactor thread relaying the RTP of its calls.
//!
//! Per packet, with no lock and no allocation in the steady state: find the
//! socket's call and leg (an index), validate the RTP header (bounded
//! parse), filter the source (learn the far end during a short window,
//! then drop every other address: no RTP bleed, no injection), account it
//! (RFC 3550 receive statistics), map its payload type onto the other
//! leg's, and rewrite SSRC, sequence and timestamp so that leg's far end
//! sees one continuous stream of ours. Rewritten packets collect in one
//! buffer during a loop turn and are sent after it.
//!
//! RTCP arriving on the odd ports (or multiplexed on the RTP port) is
//! validated and counted, not forwarded: each leg is its own RTP session,
//! and the worker sends each relayed leg its own report every RTCP
//! interval (an SR once we have sent on the leg, else an RR; a report
//! block on the far end's stream; SDES CNAME).
//!
//! A leg handed to a voice-AI engine (an AI tap), and the legs of a call
//! whose codecs differ (a transcoding bridge), are not relayed: their
//! packets go through the call's [`Pipeline`] (decode, resample, encode,
//! jitter buffer, engine audio paced out every ptime, RTCP reports), whose
//! timers the loop runs beside the reactor.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasher;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::time::{Duration, Instant};

use codeb_io::{Event, Reactor, SocketId, Waker};
use codeb_media::dtmf::{Digit, DtmfReceiver, TelephoneEvent};
use codeb_media::inband::{DetectorConfig, DtmfDetector};
use codeb_media::latch::{LatchConfig, LatchVerdict, SourceLatch, Stream};
use codeb_media::pipeline::{self, LegConfig, PacketKind, Pipeline};
use codeb_media::record::{RecCodec, RecordFeed};
use codeb_media::rewrite::{Source, StreamRewriter};
use codeb_media::rtcp::{self, CompoundWriter, RtcpPacket, SenderInfo};
use codeb_media::rtp::{self, RtpHeader, RtpPacket};
use codeb_media::stats::{ReceiveStats, SendStats};

use super::{Bound, Command, LegSide, LegSockets, MediaEvent, MediaHandle, Pair, Remote};

/// How often quiet calls are looked for.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Flooded ports are logged at most this often per worker.
const FLOOD_LOG_EVERY: Duration = Duration::from_secs(10);
/// G.711's 20 ms frame at 8 kHz, until a leg's remote says otherwise.
const DEFAULT_CLOCK: u32 = 8000;
/// SDES CNAME of the switch's streams.
const CNAME: &[u8] = b"codeb-switch";
/// A relayed telephone-event whose end packets were all lost is reported
/// when the next one starts, or at the next quiet check (the pipelines'
/// own clock covers theirs).
const DTMF_END_TIMEOUT: Duration = Duration::from_millis(300);
/// The clock of telephone-events until a leg's far end is known (then
/// the negotiated one applies).
const DTMF_CLOCK: u32 = 8000;
/// A key is at least 40 ms of tone (ITU-T Q.24), so no far end presses
/// two within this.
const DTMF_MIN_GAP: Duration = Duration::from_millis(40);
/// Room for one report (SR, one block, SDES).
const REPORT_ROOM: usize = 256;

/// A leg's counters, as reported with its call's events.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LegStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Valid RTP or RTCP from an address other than the far end's
    /// (learned, then locked).
    pub dropped_source: u64,
    /// Datagrams the kernel dropped at the leg's ports: from other IPs
    /// once its source filter was set (see [`sync_filter`]), or past a
    /// full receive buffer.
    pub dropped_kernel: u64,
    /// Not RTP (bad version, lengths past the datagram, ...).
    pub dropped_invalid: u64,
    /// RTP that could not be relayed (the other leg has no far end yet,
    /// or an unknown dynamic payload type).
    pub dropped_unrouted: u64,
    pub rtcp_packets: u64,
    /// RFC 3550 A.3 cumulative loss and A.8 jitter of what the far end
    /// sends.
    pub lost: i64,
    pub jitter_ms: f64,
}

struct Leg {
    /// The leg's RTP and RTCP sockets; None for the leg an AI call opens
    /// without (its other party is the engine) until it is transferred
    /// to a person.
    sockets: Option<LegIo>,
    latch: SourceLatch,
    remote: Option<Remote>,
    /// The stream this leg's far end receives from us.
    out: StreamRewriter,
    rx: ReceiveStats,
    /// Packets lost while pipelines that carried the leg before the
    /// current path received its stream.
    lost_elsewhere: i64,
    stats: LegStats,
    last_rx: Option<Instant>,
    /// The far end's stream (the SSRC of its last accepted packet), for
    /// our report block.
    remote_ssrc: Option<u32>,
    /// What we sent on the leg, for our SR.
    send: SendStats,
    /// Where the far end's RTCP comes from on our RTCP port, learned
    /// like its RTP (see `latch`), expecting the port above its SDP
    /// address: RTCP from anyone else is dropped and counted, and our
    /// reports go there.
    rtcp_latch: SourceLatch,
    /// The far end multiplexes RTCP on its RTP port (RFC 5761): valid
    /// RTCP came to our RTP port from its RTP source, so our reports go
    /// from our RTP port to where its RTP goes.
    rtcp_mux: bool,
    next_report: Option<Instant>,
    /// Keys the far end sends as telephone-events, while they are relayed.
    dtmf: DtmfReceiver,
    /// Keys heard in the far end's audio: a G.711 far end that negotiated
    /// no telephone-event.
    inband: Option<DtmfDetector>,
    /// When this leg's last key was reported (see [`DTMF_MIN_GAP`]).
    last_digit: Option<Instant>,
    /// The source IPs the kernel was last asked to let through to this
    /// leg's ports (see [`sync_filter`]); None: all.
    kernel_filter: Option<SourceIps>,
}

/// A leg's sockets in the worker's reactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LegIo {
    rtp: SocketId,
    rtcp: SocketId,
}

impl Leg {
    #[cfg(test)]
    fn rtp(&self) -> Option<SocketId> {
        self.sockets.map(|s| s.rtp)
    }

    #[cfg(test)]
    fn rtcp(&self) -> Option<SocketId> {
        self.sockets.map(|s| s.rtcp)
    }

    /// Whether a key from this leg at `now` is reported: at most one per
    /// [`DTMF_MIN_GAP`], so a far end cannot flood the SIP thread's event
    /// queue (shared with every call's end) with telephone-events that
    /// each change their timestamp.
    fn admit_digit(&mut self, now: Instant) -> bool {
        admit_digit(&mut self.last_digit, now)
    }
}

/// [`Leg::admit_digit`] on the leg's `last_digit` alone.
fn admit_digit(last: &mut Option<Instant>, now: Instant) -> bool {
    if last.is_some_and(|t| now.saturating_duration_since(t) < DTMF_MIN_GAP) {
        return false;
    }
    *last = Some(now);
    true
}

impl Leg {
    fn snapshot(&self) -> LegStats {
        LegStats {
            lost: self.rx.lost_total().saturating_add(self.lost_elsewhere),
            jitter_ms: self.rx.jitter().as_secs_f64() * 1000.0,
            ..self.stats
        }
    }
}

/// What a call's pipeline carries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PipeKind {
    /// One leg and a voice-AI engine (the pipeline's leg A is that leg).
    Tap(LegSide),
    /// Both legs, transcoded between their codecs.
    Bridge,
}

impl PipeKind {
    /// The pipeline's leg for one of the call's legs, if it carries it.
    fn leg_of(self, side: LegSide) -> Option<pipeline::Leg> {
        match self {
            PipeKind::Tap(s) if s == side => Some(pipeline::Leg::A),
            PipeKind::Tap(_) => None,
            PipeKind::Bridge => Some(match side {
                LegSide::A => pipeline::Leg::A,
                LegSide::B => pipeline::Leg::B,
            }),
        }
    }

    /// The call's leg for one of the pipeline's.
    fn side_of(self, leg: pipeline::Leg) -> usize {
        match (self, leg) {
            (PipeKind::Tap(s), _) => s as usize,
            (PipeKind::Bridge, pipeline::Leg::A) => 0,
            (PipeKind::Bridge, pipeline::Leg::B) => 1,
        }
    }
}

/// A call whose packets go through a media pipeline instead of the plain
/// relay: an AI tap, or a transcoding bridge.
struct Piped {
    kind: PipeKind,
    pipeline: Box<Pipeline>,
}

struct Call {
    legs: [Leg; 2],
    pipe: Option<Piped>,
    /// When both legs last got a far end: the inactivity clock starts
    /// there (a call still ringing has no media to miss).
    routed_at: Option<Instant>,
    reported_quiet: bool,
    /// The call's recording, if it is recorded.
    record: Option<Box<RecordFeed>>,
    /// The pipeline's deadline as entered in the worker's timer heap
    /// (entries for other instants are stale).
    scheduled: Option<Instant>,
}

impl Call {
    /// Each leg's counts; loss and jitter from whichever receives its
    /// stream: the pipeline for a leg it carries (transcoded, tapped),
    /// else the relay's own statistics.
    fn stats(&self) -> [LegStats; 2] {
        let mut out = [self.legs[0].snapshot(), self.legs[1].snapshot()];
        if let Some(p) = &self.pipe {
            for side in [LegSide::A, LegSide::B] {
                let Some((_, _, lost, jitter)) = p
                    .kind
                    .leg_of(side)
                    .and_then(|leg| p.pipeline.receive_stats(leg))
                else {
                    continue;
                };
                let clock = self.legs[side as usize]
                    .remote
                    .map_or(8000, |r| r.clock_rate)
                    .max(1);
                let s = &mut out[side as usize];
                // The relay's and earlier pipelines' loss, and this one's.
                s.lost = s.lost.saturating_add(lost);
                s.jitter_ms = f64::from(jitter) * 1000.0 / f64::from(clock);
            }
        }
        out
    }
}

/// Everything but the reactor, so a poll callback can use it.
struct State {
    worker: usize,
    calls: HashMap<u64, Call>,
    /// Calls relayed packet for packet (no pipeline): while there are any,
    /// the loop keeps the relay's coalescing window.
    relays: usize,
    /// Pipelines' deadlines (pacing, jitter-buffer playout, reports), by
    /// call: each loop turn touches only the calls that are due, so a
    /// worker with N tapped calls does not walk all N at every one of
    /// their 50-per-second ticks.
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    /// By socket id: (call, leg, is RTCP).
    sockets: Vec<Option<(u64, LegSide, bool)>>,
    /// This turn's rewritten packets, back to back, and where each goes.
    out: Vec<u8>,
    sends: Vec<(SocketId, SocketAddr, usize, usize)>,
    unknown_socket: u64,
    /// Flooded ports, paused for a while.
    flood: super::flood::FloodGuard,
    /// When a flood was last logged, and pauses since then not logged.
    flood_logged: Option<Instant>,
    flood_unlogged: u64,
    /// Our RTCP reports among this turn's sends (not relayed packets).
    reports_queued: usize,
    ssrc_seed: std::collections::hash_map::RandomState,
    /// Keys pressed this turn, reported after it: (call, leg, key).
    digits: Vec<(u64, LegSide, Digit)>,
    /// Kernel source filters to set after this turn (see [`sync_filter`]).
    filters: Vec<(SocketId, Option<SourceIps>)>,
    /// Ports whose filter could not be set (port steering: one socket
    /// receives for all), and when that was last logged.
    filters_refused: u64,
    filters_logged: Option<Instant>,
}

/// A locked latch's IPs (see [`SourceLatch::locked_ips`]).
type SourceIps = [Option<std::net::IpAddr>; 3];

/// Brings the kernel source filter of `side`'s ports in line with the
/// latch that judges its packets (the pipeline's, for a leg it carries):
/// the IPs a locked latch can still accept, or none while it learns. It
/// is set once a stranger's datagram has been turned away from a locked
/// leg (so calls nobody sprays cost the kernel nothing), and from then on
/// the kernel drops every datagram from an IP the latch would drop anyway,
/// before it costs a read or fills the port's buffer. It follows the
/// latch when the leg learns again, trusts another IP or moves to or
/// from a pipeline.
fn sync_filter(filters: &mut Vec<(SocketId, Option<SourceIps>)>, call: &mut Call, side: LegSide) {
    let want = match &call.pipe {
        Some(p) => match p.kind.leg_of(side) {
            Some(l) => p.pipeline.locked_source_ips(l),
            None => call.legs[side as usize].latch.locked_ips(),
        },
        None => call.legs[side as usize].latch.locked_ips(),
    };
    filter_leg(filters, &mut call.legs[side as usize], want);
}

/// Asks for `want` as `leg`'s kernel source filter, if it is not already.
fn filter_leg(
    filters: &mut Vec<(SocketId, Option<SourceIps>)>,
    leg: &mut Leg,
    want: Option<SourceIps>,
) {
    if leg.kernel_filter != want {
        leg.kernel_filter = want;
        if let Some(LegIo { rtp, rtcp }) = leg.sockets {
            filters.push((rtp, want));
            if rtcp != rtp {
                filters.push((rtcp, want));
            }
        }
    }
}

/// How long a loop turn may be held back to gather datagrams (see
/// [`super::MediaSettings::coalesce`]): the tighter window while the
/// worker relays any call packet for packet (its latency is the relay's
/// whole delay), the looser one while every call it carries runs a
/// decoded pipeline (AI tap, transcoding), whose jitter buffer or vendor
/// round trip dwarfs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Coalescing {
    pub relay: Duration,
    pub decoded: Duration,
}

/// A worker's clocks: when a quiet call is reported, how often RTCP
/// goes out, and how long a loop turn may gather datagrams.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    pub inactivity: Duration,
    pub rtcp_interval: Duration,
    pub coalescing: Coalescing,
    /// Datagrams a second on one port past which it is paused (0: never).
    pub flood_pps: u32,
}

pub(super) struct Worker {
    reactor: Reactor,
    coalescing: Coalescing,
    /// The window in effect (None before the first choice).
    coalescing_now: Option<Duration>,
    rx: Receiver<Command>,
    events: SyncSender<MediaEvent>,
    notify: Option<Waker>,
    inactivity: Duration,
    rtcp_interval: Duration,
    relayed: Arc<AtomicU64>,
    dropped_events: u64,
    /// Legs whose sockets could not be taken in, not yet reported (the
    /// event queue was full): told again every check, as nothing else
    /// would end their calls.
    unreported_failures: Vec<(u64, LegSide)>,
    /// Pairs bound ahead of calls (see `MediaEngine::open`), by RTP port.
    prebound: HashMap<u16, [UdpSocket; 2]>,
    /// Where prebinding binds, and where its outcomes go.
    prebind: Option<(std::net::IpAddr, SyncSender<Bound>)>,
    /// Where the reactor's counters go (metrics).
    io: Option<Arc<super::WorkerIo>>,
    st: State,
}

impl Worker {
    pub(super) fn new(
        reactor: Reactor,
        rx: Receiver<Command>,
        events: SyncSender<MediaEvent>,
        notify: Option<Waker>,
        timing: Timing,
        relayed: Arc<AtomicU64>,
        worker: usize,
    ) -> Worker {
        let Timing {
            inactivity,
            rtcp_interval,
            coalescing,
            flood_pps,
        } = timing;
        Worker {
            reactor,
            coalescing,
            coalescing_now: None,
            rx,
            events,
            notify,
            inactivity,
            rtcp_interval: rtcp_interval.max(Duration::from_millis(100)),
            relayed,
            dropped_events: 0,
            unreported_failures: Vec::new(),
            prebound: HashMap::new(),
            prebind: None,
            io: None,
            st: State {
                worker,
                calls: HashMap::new(),
                relays: 0,
                timers: BinaryHeap::new(),
                sockets: Vec::new(),
                out: Vec::with_capacity(64 * 1024),
                sends: Vec::with_capacity(512),
                unknown_socket: 0,
                flood: super::flood::FloodGuard::new(flood_pps),
                flood_logged: None,
                flood_unlogged: 0,
                reports_queued: 0,
                ssrc_seed: std::collections::hash_map::RandomState::new(),
                digits: Vec::new(),
                filters: Vec::new(),
                filters_refused: 0,
                filters_logged: None,
            },
        }
    }

    /// Lets the SIP thread ask this worker to bind pairs ahead of calls
    /// on `ip`; each port's outcome goes back on `bound`.
    pub(super) fn prebinding(mut self, ip: std::net::IpAddr, bound: SyncSender<Bound>) -> Self {
        self.prebind = Some((ip, bound));
        self
    }

    /// Publishes the reactor's counters to `io` with each housekeeping
    /// round (about once a second, as often as metrics are rendered),
    /// not per loop turn.
    pub(super) fn publishing(mut self, io: Arc<super::WorkerIo>) -> Self {
        self.io = Some(io);
        self
    }

    fn publish_io(&self) {
        if let Some(io) = &self.io {
            io.stats.publish(&self.reactor.stats());
            let r = std::sync::atomic::Ordering::Relaxed;
            io.flood_pauses.store(self.st.flood.pauses, r);
            io.flooded_ports.store(self.st.flood.paused() as u64, r);
            io.filters_refused.store(self.st.filters_refused, r);
        }
    }

    /// Sets the kernel source filters this turn asked for. A port that
    /// cannot take one (steered) keeps its latch's filtering alone.
    fn source_filters(&mut self) {
        if self.st.filters.is_empty() {
            return;
        }
        let Worker { reactor, st, .. } = self;
        for (socket, want) in st.filters.drain(..) {
            let ips: Option<Vec<std::net::IpAddr>> =
                want.map(|w| w.into_iter().flatten().collect());
            match reactor.filter_udp_sources(socket, ips.as_deref()) {
                Ok(()) => {}
                // The call ended this turn: its ports are gone.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // A steered port: its latch alone turns strangers away.
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {}
                Err(e) => {
                    st.filters_refused += 1;
                    let now = Instant::now();
                    if st
                        .filters_logged
                        .is_none_or(|t| now.saturating_duration_since(t) >= FLOOD_LOG_EVERY)
                    {
                        tracing::warn!(worker = st.worker, error = %e, refused = st.filters_refused,
                            "media port source filter refused by the kernel; the latch alone turns strangers away");
                        st.filters_logged = Some(now);
                    }
                }
            }
        }
    }

    /// Pauses the ports this turn found flooded, and reads again those
    /// whose pause is over. `turn`: this turn's clock, if it read any
    /// datagram.
    fn floods(&mut self, turn: Option<Instant>) {
        if self.st.flood.idle() {
            return;
        }
        let now = turn.unwrap_or_else(Instant::now);
        let Worker { reactor, st, .. } = self;
        let mut paused = 0u64;
        for s in st.flood.take_flooded() {
            match reactor.pause_udp(SocketId(s)) {
                Ok(()) => {
                    st.flood.paused_at(now, s);
                    paused += 1;
                }
                Err(e) => {
                    st.flood.forget(s);
                    tracing::warn!(worker = st.worker, error = %e, "flooded port not paused");
                }
            }
        }
        if paused > 0 {
            st.flood_unlogged += paused;
            // One line per worker per 10 s, however many ports flood.
            if st
                .flood_logged
                .is_none_or(|t| now.saturating_duration_since(t) >= FLOOD_LOG_EVERY)
            {
                tracing::warn!(
                    worker = st.worker,
                    ports = st.flood_unlogged,
                    paused_now = st.flood.paused(),
                    "media ports flooded (datagrams past CODEB_RTP_FLOOD_PPS a second); each is not read for 2 s"
                );
                st.flood_logged = Some(now);
                st.flood_unlogged = 0;
            }
        }
        if st.flood.next_due().is_some_and(|t| t <= now) {
            for s in st.flood.due(now) {
                if let Err(e) = reactor.resume_udp(SocketId(s)) {
                    tracing::debug!(worker = st.worker, error = %e, "paused port not resumed");
                }
            }
        }
    }

    pub(super) fn run(&mut self) {
        let every = CHECK_EVERY.min(self.rtcp_interval);
        let mut next_check = Instant::now() + every;
        // AI sessions run on another thread, often on this core: woken
        // per frame, one would preempt this loop in mid-turn and take
        // its calls' frames one at a time. They are woken together
        // below, once this turn's packets are out.
        codeb_media::tap::defer_wakes();
        loop {
            if !self.commands() {
                break;
            }
            // A far end learned again must not wait a poll behind the
            // filter of the one before.
            self.source_filters();
            self.choose_coalescing();
            let now = Instant::now();
            if now >= next_check {
                self.report_failures();
                self.check_quiet(now);
                self.st.reports(now, self.rtcp_interval);
                self.publish_io();
                next_check = now + every;
            }
            let next_tap = self.st.tap_timers(now);
            if !self.st.sends.is_empty() {
                self.flush();
            }
            let wait = next_tap
                .map_or(next_check, |t| t.min(next_check))
                .min(self.st.flood.next_due().unwrap_or(next_check))
                .saturating_duration_since(now);
            codeb_media::tap::wake_deferred();
            let Worker { reactor, st, .. } = self;
            // One clock read per loop turn: a turn's datagrams arrived
            // together, and per-packet reads would be pure overhead.
            let mut turn: Option<Instant> = None;
            let polled = reactor.poll(Some(wait), &mut |ev| {
                if let Event::Datagram { socket, from, data } = ev {
                    let now = *turn.get_or_insert_with(Instant::now);
                    st.datagram(now, socket, from, data);
                }
            });
            if let Err(e) = polled {
                tracing::error!(worker = self.st.worker, error = %e, "media worker reactor failed");
                break;
            }
            self.floods(turn);
            self.source_filters();
            self.flush();
            self.report_digits();
        }
        self.publish_io();
        let ids: Vec<u64> = self.st.calls.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
        // The calls' last reports and BYEs are queued: one more turn
        // submits them (io_uring sends nothing until it is entered).
        let _ = self.reactor.poll(Some(Duration::ZERO), &mut |_| {});
        codeb_media::tap::wake_deferred();
    }

    /// Reports the keys pressed this turn.
    fn report_digits(&mut self) {
        if self.st.digits.is_empty() {
            return;
        }
        let worker = self.st.worker;
        // The buffer goes back, emptied, with its capacity.
        let mut digits = std::mem::take(&mut self.st.digits);
        for (id, leg, digit) in digits.drain(..) {
            self.emit(MediaEvent::Dtmf {
                handle: MediaHandle { worker, id },
                leg,
                digit,
            });
        }
        self.st.digits = digits;
    }

    /// Sends this turn's packets.
    fn flush(&mut self) {
        let n = self.st.sends.len();
        for &(socket, to, start, end) in &self.st.sends {
            if let Some(bytes) = self.st.out.get(start..end) {
                // A send error is a lost packet, as on the wire.
                let _ = self.reactor.send_to(socket, to, bytes);
            }
        }
        self.st.sends.clear();
        self.st.out.clear();
        let n = n.saturating_sub(std::mem::take(&mut self.st.reports_queued));
        if n > 0 {
            self.relayed.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Sets the loop's coalescing window from what the worker carries.
    fn choose_coalescing(&mut self) {
        let want = if self.st.relays == 0 && !self.st.calls.is_empty() {
            self.coalescing.decoded
        } else {
            self.coalescing.relay
        };
        if self.coalescing_now == Some(want) {
            return;
        }
        self.coalescing_now = Some(want);
        // One completion is "turn at every arrival", the reactor's off.
        let completions = if want.is_zero() {
            1
        } else {
            super::COALESCE_DATAGRAMS
        };
        self.reactor.set_coalescing(completions, want);
    }

    /// Applies queued commands; false when the worker must stop.
    fn commands(&mut self) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(Command::Open { id, legs }) => self.open(id, *legs),
                Ok(Command::AddLeg { id, leg, sockets }) => self.add_leg(id, leg, sockets),
                Ok(Command::Prebind { ports }) => self.bind_ahead(&ports),
                Ok(Command::Remote { id, leg, remote }) => self.remote(id, leg, remote),
                Ok(Command::Tap { id, leg, pipeline }) => {
                    self.pipe(id, Some((PipeKind::Tap(leg), pipeline)));
                }
                Ok(Command::Bridge { id, pipeline }) => {
                    self.pipe(id, pipeline.map(|p| (PipeKind::Bridge, p)));
                }
                Ok(Command::Record { id, feed }) => {
                    if let Some(call) = self.st.calls.get_mut(&id) {
                        call.record = Some(feed);
                    }
                }
                Ok(Command::TapKick { id }) => self.kick(id),
                Ok(Command::Retap { id, caller }) => self.retap(id, *caller),
                Ok(Command::Close { id }) => self.close(id),
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    /// A tapped call's leg changed codec.
    fn retap(&mut self, id: u64, caller: LegConfig) {
        let Some(p) = self.st.calls.get_mut(&id).and_then(|c| c.pipe.as_mut()) else {
            return;
        };
        if let Err(e) = p.pipeline.retap(Instant::now(), caller) {
            tracing::warn!(worker = self.st.worker, call = id, error = %e,
                "AI tap kept its old codec");
        }
        self.st.schedule(id);
    }

    /// A tapped call's engine started a turn: play it from now.
    fn kick(&mut self, id: u64) {
        let Some(p) = self.st.calls.get_mut(&id).and_then(|c| c.pipe.as_mut()) else {
            return;
        };
        p.pipeline.kick_playout(Instant::now());
        self.st.schedule(id);
    }

    /// Binds an RTP/RTCP pair on each port for later calls, and tells the
    /// SIP thread which are ready (a port another process holds is not).
    fn bind_ahead(&mut self, ports: &[u16]) {
        let Some((ip, bound)) = &self.prebind else {
            return;
        };
        for &port in ports {
            let outcome = match Pair::bind(*ip, port) {
                Ok(pair) => {
                    self.prebound.insert(port, [pair.rtp, pair.rtcp]);
                    Bound::Ready(port)
                }
                Err(_) => Bound::Failed(port),
            };
            // The channel holds every port the SIP thread has outstanding,
            // so it is never full; if the SIP thread is gone, so are we.
            let _ = bound.try_send(outcome);
        }
    }

    /// A leg's sockets entered in the reactor and mapped to the call's
    /// leg; None (logged) when they could not be.
    fn leg_io(&mut self, id: u64, side: LegSide, sockets: LegSockets) -> Option<LegIo> {
        let [rtp_sock, rtcp_sock] = match sockets {
            LegSockets::Bound(pair, _) => [pair.rtp, pair.rtcp],
            LegSockets::Prebound(port) => {
                let Some(pair) = self.prebound.remove(&port) else {
                    tracing::error!(
                        worker = self.st.worker,
                        call = id,
                        port,
                        "prebound media port missing; the leg has no media"
                    );
                    return None;
                };
                pair
            }
        };
        let added =
            self.reactor
                .add_udp(rtp_sock)
                .and_then(|rtp| match self.reactor.add_udp(rtcp_sock) {
                    Ok(rtcp) => Ok((rtp, rtcp)),
                    Err(e) => {
                        let _ = self.reactor.remove_udp(rtp);
                        Err(e)
                    }
                });
        match added {
            Ok((rtp, rtcp)) => {
                self.st.map_socket(rtp, id, side, false);
                self.st.map_socket(rtcp, id, side, true);
                Some(LegIo { rtp, rtcp })
            }
            Err(e) => {
                tracing::error!(worker = self.st.worker, call = id, error = %e,
                    "media sockets not added; the leg has no media");
                None
            }
        }
    }

    /// A new call, with the legs it has sockets for. If a leg's sockets
    /// cannot be taken in, the call has no media here, and the SIP thread
    /// is told ([`MediaEvent::LegFailed`]) so that it ends the call.
    fn open(&mut self, id: u64, legs: [Option<LegSockets>; 2]) {
        let mut io = [None, None];
        let mut failed = false;
        for (side, sockets) in [LegSide::A, LegSide::B].into_iter().zip(legs) {
            let Some(sockets) = sockets else {
                continue;
            };
            if failed {
                // Dropping them closes them; a prebound pair leaves the map.
                if let LegSockets::Prebound(port) = sockets {
                    self.prebound.remove(&port);
                }
                continue;
            }
            io[side as usize] = self.leg_io(id, side, sockets);
            if io[side as usize].is_none() {
                failed = true;
                self.leg_failed(id, side);
            }
        }
        if failed {
            for leg in io.into_iter().flatten() {
                self.forget_io(leg);
            }
            return;
        }
        let [a, b] = io;
        self.st.relays += 1;
        let legs = [
            self.new_leg(id, LegSide::A, a),
            self.new_leg(id, LegSide::B, b),
        ];
        let replaced = self.st.calls.insert(
            id,
            Call {
                legs,
                pipe: None,
                routed_at: None,
                reported_quiet: false,
                record: None,
                scheduled: None,
            },
        );
        // Ids are never reused; were one, the old call's sockets go.
        if let Some(old) = replaced {
            if old.pipe.is_none() {
                self.st.relays = self.st.relays.saturating_sub(1);
            }
            for leg in &old.legs {
                self.forget_leg(leg);
            }
        }
    }

    /// Sockets for a leg its call opened without (an AI call handed to a
    /// person). Nothing else about the leg changes: its far end comes
    /// with the next `Remote`. Sockets that cannot be taken in are
    /// reported ([`MediaEvent::LegFailed`]).
    fn add_leg(&mut self, id: u64, side: LegSide, sockets: LegSockets) {
        let has = match self.st.calls.get(&id) {
            Some(call) => call.legs[side as usize].sockets.is_some(),
            None => {
                // Its open failed here (logged then).
                if let LegSockets::Prebound(port) = sockets {
                    self.prebound.remove(&port);
                }
                return;
            }
        };
        if has {
            tracing::error!(worker = self.st.worker, call = id, leg = ?side,
                "a leg that has sockets was given more; the new ones are closed");
            if let LegSockets::Prebound(port) = sockets {
                self.prebound.remove(&port);
            }
            return;
        }
        let Some(io) = self.leg_io(id, side, sockets) else {
            return self.leg_failed(id, side);
        };
        if let Some(call) = self.st.calls.get_mut(&id) {
            let leg = &mut call.legs[side as usize];
            leg.sockets = Some(io);
            // No filter on sockets that are new.
            leg.kernel_filter = None;
        }
    }

    fn leg_failed(&mut self, id: u64, leg: LegSide) {
        self.unreported_failures.push((id, leg));
        self.report_failures();
    }

    /// Reports legs that failed ([`MediaEvent::LegFailed`]) until the
    /// event queue takes them.
    fn report_failures(&mut self) {
        while let Some(&(id, leg)) = self.unreported_failures.first() {
            let ev = MediaEvent::LegFailed {
                handle: MediaHandle {
                    worker: self.st.worker,
                    id,
                },
                leg,
            };
            if self.events.try_send(ev).is_err() {
                break;
            }
            self.unreported_failures.remove(0);
            if let Some(w) = &self.notify {
                w.wake();
            }
        }
    }

    fn new_leg(&self, id: u64, side: LegSide, sockets: Option<LegIo>) -> Leg {
        let ssrc = self.st.ssrc_seed.hash_one((id, side as u8)) as u32;
        let seq_ts = self.st.ssrc_seed.hash_one((side as u8, id));
        Leg {
            sockets,
            latch: SourceLatch::new(LatchConfig::default(), None),
            remote: None,
            out: StreamRewriter::new(
                ssrc,
                DEFAULT_CLOCK,
                DEFAULT_CLOCK / 50,
                seq_ts as u16,
                (seq_ts >> 32) as u32,
            ),
            rx: ReceiveStats::new(DEFAULT_CLOCK),
            lost_elsewhere: 0,
            stats: LegStats::default(),
            last_rx: None,
            remote_ssrc: None,
            send: SendStats::default(),
            rtcp_latch: SourceLatch::new(LatchConfig::default(), None),
            rtcp_mux: false,
            next_report: None,
            dtmf: DtmfReceiver::new(DTMF_CLOCK, DTMF_END_TIMEOUT),
            inband: None,
            last_digit: None,
            kernel_filter: None,
        }
    }

    fn remote(&mut self, id: u64, side: LegSide, remote: Remote) {
        let Some(call) = self.st.calls.get_mut(&id) else {
            return;
        };
        let leg = &mut call.legs[side as usize];
        // An RFC 2543 hold (`c=0.0.0.0`) names no address: the far end
        // stays where it was, and gets no RTP meanwhile (`we_send`).
        let remote = match leg.remote {
            Some(old) if remote.addr.ip().is_unspecified() => Remote {
                addr: old.addr,
                ..remote
            },
            _ => remote,
        };
        let moved = leg.remote.is_none_or(|r| r.addr != remote.addr);
        if leg.remote.is_none_or(|r| r.clock_rate != remote.clock_rate) {
            let rate = remote.clock_rate.max(1);
            // What it sends runs on that clock too; what we send it starts
            // on a new base.
            leg.rx.set_clock_rate(rate);
            leg.send.new_timeline();
            leg.out = StreamRewriter::new(
                leg.out.ssrc(),
                rate,
                rate / 50,
                self.st.ssrc_seed.hash_one((id, side as u8, rate)) as u16,
                self.st.ssrc_seed.hash_one((rate, id)) as u32,
            );
        }
        if leg.remote.is_none_or(|r| {
            r.clock_rate != remote.clock_rate
                || r.dtmf_payload_type != remote.dtmf_payload_type
                || r.dtmf_clock_rate != remote.dtmf_clock_rate
                || r.payload_type != remote.payload_type
        }) {
            leg.dtmf = DtmfReceiver::new(remote.dtmf_clock_rate, DTMF_END_TIMEOUT);
            // In-band only where no telephone-event was agreed, and only
            // G.711 (the static types) can be heard without decoding.
            leg.inband = (remote.dtmf_payload_type.is_none()
                && matches!(remote.payload_type, 0 | 8))
            .then(|| DtmfDetector::new(DetectorConfig::default()));
        }
        let resumed = leg.remote.is_some_and(|r| !r.times_out) && remote.times_out;
        // Off hold, what the relay sends it again goes on by one sequence
        // number from the last packet it got (its source went on counting
        // meanwhile); a pipeline holds and rebases its own streams.
        if leg.remote.is_some_and(|r| !r.we_send) && remote.we_send {
            leg.out.rebase();
        }
        leg.remote = Some(remote);
        // The quiet clock starts again when the call is routed, and when
        // a far end comes off hold (an AI call has only the one leg).
        if resumed || call.legs.iter().all(|l| l.remote.is_some()) {
            call.routed_at = Some(Instant::now());
            call.reported_quiet = false;
        }
        let leg = &mut call.legs[side as usize];
        if moved {
            // A new far end (answer, re-INVITE): learn it again.
            let to = Some(remote.addr).filter(|a| !a.ip().is_unspecified());
            leg.latch.relearn(to);
            leg.rtcp_latch.relearn(to.map(rtcp_port));
            leg.rtcp_mux = false;
            if let Some(p) = &mut call.pipe
                && let Some(leg) = p.kind.leg_of(side)
            {
                p.pipeline.update_remote(leg, to, None);
            }
        }
        leg.latch.trust(remote.signalling);
        leg.rtcp_latch.trust(remote.signalling);
        if let Some(p) = &mut call.pipe
            && let Some(l) = p.kind.leg_of(side)
        {
            p.pipeline.trust_source(l, remote.signalling);
            p.pipeline.hold(l, !remote.we_send);
        }
        // Learned again, or trusting another IP: a filter follows.
        if call.legs[side as usize].kernel_filter.is_some() {
            sync_filter(&mut self.st.filters, call, side);
        }
    }

    /// Puts a call's packets through a pipeline (an AI tap: one leg and
    /// the engine, whose inactivity clock then runs on that leg alone; a
    /// bridge: both legs transcoded), or back on the plain relay (None).
    ///
    /// Each far end keeps receiving one stream across the move: the new
    /// path continues the SSRC and numbering of the one it replaces
    /// ([`Pipeline::continue_stream`]).
    fn pipe(&mut self, id: u64, pipe: Option<(PipeKind, Box<Pipeline>)>) {
        let Some(call) = self.st.calls.get_mut(&id) else {
            return;
        };
        let was_relay = call.pipe.is_none();
        // What each far end has been receiving: from the pipeline that
        // carries its leg, else from the relay's own rewriter.
        if let Some(old) = &call.pipe {
            for (side, leg) in call.legs.iter_mut().enumerate() {
                let side = if side == 0 { LegSide::A } else { LegSide::B };
                if let Some((s, sent)) = old.kind.leg_of(side).and_then(|l| old.pipeline.stream(l))
                    && s.clock_rate() == leg.out.clock_rate()
                {
                    leg.out = s.clone();
                    leg.send = sent;
                }
                // What it lost while the old pipeline received it stays
                // in the call's account.
                if let Some((_, _, lost, _)) = old
                    .kind
                    .leg_of(side)
                    .and_then(|l| old.pipeline.receive_stats(l))
                {
                    leg.lost_elsewhere = leg.lost_elsewhere.saturating_add(lost);
                }
            }
        }
        let Some((kind, mut pipeline)) = pipe else {
            call.pipe = None;
            call.scheduled = None;
            for side in [LegSide::A, LegSide::B] {
                if call.legs[side as usize].kernel_filter.is_some() {
                    sync_filter(&mut self.st.filters, call, side);
                }
            }
            if !was_relay {
                self.st.relays += 1;
            }
            return;
        };
        for side in [LegSide::A, LegSide::B] {
            if let Some(l) = kind.leg_of(side) {
                let leg = &call.legs[side as usize];
                pipeline.continue_stream(l, &leg.out, leg.send);
                pipeline.trust_source(l, leg.remote.and_then(|r| r.signalling));
                pipeline.hold(l, leg.remote.is_some_and(|r| !r.we_send));
            }
        }
        if matches!(kind, PipeKind::Tap(_)) {
            call.routed_at = Some(Instant::now());
            call.reported_quiet = false;
        }
        call.pipe = Some(Piped { kind, pipeline });
        call.scheduled = None;
        // The pipeline's latch judges the legs it carries now.
        for side in [LegSide::A, LegSide::B] {
            if call.legs[side as usize].kernel_filter.is_some() {
                sync_filter(&mut self.st.filters, call, side);
            }
        }
        if was_relay {
            self.st.relays = self.st.relays.saturating_sub(1);
        }
        self.st.schedule(id);
    }

    fn close(&mut self, id: u64) {
        // Its timer entries go stale and are dropped as they come up.
        let Some(mut call) = self.st.calls.remove(&id) else {
            return;
        };
        self.goodbye(id, &mut call);
        if call.pipe.is_none() {
            self.st.relays = self.st.relays.saturating_sub(1);
        }
        let mut stats = call.stats();
        for (leg, stats) in call.legs.iter().zip(&mut stats) {
            for s in leg.sockets.iter().flat_map(|s| [s.rtp, s.rtcp]) {
                stats.dropped_kernel += self.reactor.udp_drops(s).unwrap_or(0);
            }
        }
        for leg in &call.legs {
            self.forget_leg(leg);
        }
        self.emit(MediaEvent::Closed {
            handle: MediaHandle {
                worker: self.st.worker,
                id,
            },
            stats,
        });
    }

    /// A last RTCP report with a BYE for our source on each leg of an
    /// ending call that has a far end (RFC 3550 §6.6), so the far end's
    /// RTCP knows the stream ended rather than timing it out; sent before
    /// the legs' sockets go.
    fn goodbye(&mut self, id: u64, call: &mut Call) {
        let now = Instant::now();
        let st = &mut self.st;
        let on_pipe = |call: &Call, side: LegSide| {
            call.pipe
                .as_ref()
                .is_some_and(|p| p.kind.leg_of(side).is_some())
        };
        if let Some(p) = &mut call.pipe {
            p.pipeline.end(now);
        }
        drain(
            now,
            id,
            call,
            &mut st.out,
            &mut st.sends,
            &mut st.timers,
            &mut st.digits,
        );
        let ntp = ntp_now();
        let piped = [LegSide::A, LegSide::B].map(|side| on_pipe(call, side));
        for (leg, piped) in call.legs.iter_mut().zip(piped) {
            if piped {
                continue;
            }
            if let Some(remote) = leg.remote
                && queue_report(&mut st.out, &mut st.sends, leg, remote, now, ntp, true)
            {
                st.reports_queued += 1;
            }
        }
        self.flush();
    }

    fn forget_leg(&mut self, leg: &Leg) {
        if let Some(io) = leg.sockets {
            self.forget_io(io);
        }
    }

    fn forget_io(&mut self, leg: LegIo) {
        // A filter still queued for these sockets must not reach the next
        // sockets given their ids.
        self.st
            .filters
            .retain(|(s, _)| *s != leg.rtp && *s != leg.rtcp);
        for s in [leg.rtp, leg.rtcp] {
            if let Some(slot) = self.st.sockets.get_mut(s.0 as usize) {
                *slot = None;
            }
            self.st.flood.forget(s.0);
            let _ = self.reactor.remove_udp(s);
        }
    }

    fn check_quiet(&mut self, now: Instant) {
        let mut quiet = Vec::new();
        for (id, call) in &mut self.st.calls {
            // A relayed key whose end packets were all lost.
            for (side, leg) in [LegSide::A, LegSide::B].into_iter().zip(&mut call.legs) {
                if let Some(d) = leg.dtmf.poll(now)
                    && leg.admit_digit(now)
                {
                    self.st.digits.push((*id, side, d));
                }
            }
            let Some(routed) = call.routed_at else {
                continue;
            };
            // A far end on hold sends nothing, rightly: its silence is no
            // sign of a dead call (the session timer still is). The clock
            // starts again when it comes off hold (`routed_at`).
            if call
                .legs
                .iter()
                .any(|l| l.remote.is_some_and(|r| !r.times_out))
            {
                continue;
            }
            let last = call
                .legs
                .iter()
                .filter_map(|l| l.last_rx)
                .max()
                .map_or(routed, |rx| rx.max(routed));
            let is_quiet = now.saturating_duration_since(last) >= self.inactivity;
            if is_quiet && !call.reported_quiet {
                call.reported_quiet = true;
                quiet.push((*id, call.stats()));
            } else if !is_quiet {
                call.reported_quiet = false;
            }
        }
        for (id, stats) in quiet {
            self.emit(MediaEvent::Inactive {
                handle: MediaHandle {
                    worker: self.st.worker,
                    id,
                },
                stats,
            });
        }
    }

    fn emit(&mut self, ev: MediaEvent) {
        if self.events.try_send(ev).is_err() {
            self.dropped_events += 1;
            if self.dropped_events.is_power_of_two() {
                tracing::warn!(
                    worker = self.st.worker,
                    dropped = self.dropped_events,
                    "media events dropped: the SIP thread is not draining them"
                );
            }
        }
        if let Some(w) = &self.notify {
            w.wake();
        }
    }
}

/// Where a far end's RTCP goes without `a=rtcp` (RFC 3550 11): the port
/// above its RTP.
fn rtcp_port(rtp: SocketAddr) -> SocketAddr {
    SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1))
}

/// [`State::schedule`] for a call already looked up (the loop's hot
/// paths have it in hand: no second hash and probe of the table).
fn schedule(timers: &mut BinaryHeap<Reverse<(Instant, u64)>>, id: u64, call: &mut Call) {
    let Some(due) = call.pipe.as_mut().and_then(|p| p.pipeline.poll_timeout()) else {
        return;
    };
    if call.scheduled.is_some_and(|s| s <= due) {
        return;
    }
    call.scheduled = Some(due);
    timers.push(Reverse((due, id)));
}

/// Queues what a call's pipeline wants sent on its legs' sockets, then
/// enters its next deadline in the timer heap.
fn drain(
    now: Instant,
    id: u64,
    call: &mut Call,
    out: &mut Vec<u8>,
    sends: &mut Vec<(SocketId, SocketAddr, usize, usize)>,
    timers: &mut BinaryHeap<Reverse<(Instant, u64)>>,
    digits: &mut Vec<(u64, LegSide, Digit)>,
) {
    let Call {
        legs, pipe, record, ..
    } = call;
    let Some(p) = pipe else {
        return;
    };
    let kind = p.kind;
    let p = &mut p.pipeline;
    while let Some(t) = p.poll_transmit() {
        let side = kind.side_of(t.leg);
        let leg = &mut legs[side];
        // A pipeline only carries legs that have sockets.
        let Some(io) = leg.sockets else {
            continue;
        };
        let socket = match t.kind {
            PacketKind::Rtp => {
                leg.stats.tx_packets += 1;
                leg.stats.tx_bytes += t.data.len() as u64;
                // The engine's voice, on the channel of the side the AI
                // takes (a bridge's output is what was recorded coming in).
                if let (PipeKind::Tap(_), Some(rec)) = (kind, record.as_deref_mut()) {
                    record_rtp(rec, 1 - side as u8, leg.remote, Instant::now(), t.data);
                }
                io.rtp
            }
            PacketKind::Rtcp => io.rtcp,
        };
        let start = out.len();
        out.extend_from_slice(t.data);
        sends.push((socket, t.destination, start, out.len()));
    }
    while let Some(ev) = p.poll_event() {
        match ev {
            pipeline::Event::Dtmf { leg, digit } => {
                let i = kind.side_of(leg);
                let side = if i == 0 { LegSide::A } else { LegSide::B };
                if legs[i].admit_digit(now) {
                    digits.push((id, side, digit));
                }
            }
            ev => tracing::trace!(?ev, "media pipeline event"),
        }
    }
    schedule(timers, id, call);
}

/// Runs a relayed G.711 payload through the leg's in-band detector, 20 ms
/// at a time (the detector reports one key per push).
fn inband_digits(
    det: &mut DtmfDetector,
    payload_type: u8,
    payload: &[u8],
    report: &mut impl FnMut(Digit),
) {
    let law = if payload_type == 8 {
        codeb_media::g711::Law::Alaw
    } else {
        codeb_media::g711::Law::Ulaw
    };
    let mut pcm = [0i16; 160];
    for codes in payload.chunks(pcm.len()) {
        let n = law.decode(codes, &mut pcm);
        if let Some(d) = det.push(&pcm[..n]) {
            report(d);
        }
    }
}

/// Copies an RTP packet's audio into a recording, if it is the leg's
/// negotiated codec.
fn record_rtp(rec: &mut RecordFeed, channel: u8, remote: Option<Remote>, at: Instant, data: &[u8]) {
    let Some(r) = remote else {
        return;
    };
    let Ok(pkt) = RtpPacket::parse(data) else {
        return;
    };
    if pkt.payload_type() != r.payload_type {
        return;
    }
    if let Some(codec) = RecCodec::of(r.codec, r.clock_rate) {
        rec.push(
            channel,
            codec,
            pkt.ssrc(),
            pkt.timestamp(),
            at,
            pkt.payload(),
        );
    }
}

/// Queues a relayed leg's RTCP report to where its RTCP goes: an SR if we
/// have sent on it, else an RR, with SDES CNAME, and a BYE for our source
/// when `bye` (the leg is ending, RFC 3550 §6.6). False when nothing could
/// be queued (no address yet, or no room).
fn queue_report(
    out: &mut Vec<u8>,
    sends: &mut Vec<(SocketId, SocketAddr, usize, usize)>,
    leg: &mut Leg,
    remote: Remote,
    now: Instant,
    ntp: u64,
    bye: bool,
) -> bool {
    let Some(io) = leg.sockets else {
        return false;
    };
    let (socket, to) = if leg.rtcp_mux {
        (io.rtp, leg.latch.destination().unwrap_or(remote.addr))
    } else {
        let to = leg.rtcp_latch.destination();
        (io.rtcp, to.unwrap_or_else(|| rtcp_port(remote.addr)))
    };
    if to.ip().is_unspecified() {
        // Held from its first SDP (RFC 2543): no address yet.
        return false;
    }
    let ours = leg.out.ssrc();
    let block = match leg.remote_ssrc {
        Some(ssrc) if leg.rx.received() > 0 => Some(leg.rx.report_block(now, ssrc)),
        _ => None,
    };
    let start = out.len();
    out.resize(start + REPORT_ROOM, 0);
    let mut w = CompoundWriter::new(&mut out[start..]);
    let written = if leg.send.packets > 0 {
        let info = SenderInfo {
            ntp,
            rtp_timestamp: leg.send.rtp_ts_at(now, remote.clock_rate),
            packet_count: leg.send.packets as u32,
            octet_count: leg.send.octets as u32,
        };
        w.sender_report(ours, &info, block.as_slice())
    } else {
        w.receiver_report(ours, block.as_slice())
    }
    .and_then(|_| w.sdes_cname(ours, CNAME))
    .and_then(|_| if bye { w.bye(ours) } else { Ok(()) });
    let n = w.len();
    match written {
        Ok(()) => {
            out.truncate(start + n);
            sends.push((socket, to, start, start + n));
            true
        }
        Err(_) => {
            out.truncate(start);
            false
        }
    }
}

/// The NTP timestamp (RFC 3550 §4) of the wall clock now.
fn ntp_now() -> u64 {
    let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) else {
        return 0;
    };
    let secs = d.as_secs() + 2_208_988_800;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

impl State {
    /// Sends each relayed leg its RTCP report when one is due (legs on a
    /// pipeline get theirs from it).
    fn reports(&mut self, now: Instant, interval: Duration) {
        let mut ntp: Option<u64> = None;
        for call in self.calls.values_mut() {
            for (i, leg) in call.legs.iter_mut().enumerate() {
                let side = if i == 0 { LegSide::A } else { LegSide::B };
                if call
                    .pipe
                    .as_ref()
                    .is_some_and(|p| p.kind.leg_of(side).is_some())
                {
                    continue;
                }
                let Some(remote) = leg.remote else {
                    continue;
                };
                let due = *leg.next_report.get_or_insert(now + interval);
                if now < due {
                    continue;
                }
                leg.next_report = Some(now + interval);
                let ntp = *ntp.get_or_insert_with(ntp_now);
                if queue_report(&mut self.out, &mut self.sends, leg, remote, now, ntp, false) {
                    self.reports_queued += 1;
                }
            }
        }
    }

    /// Runs the pipelines' due timers (AI playout pacing, jitter-buffer
    /// playout, RTCP reports); returns when the next one falls due.
    fn tap_timers(&mut self, now: Instant) -> Option<Instant> {
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now {
                return Some(at);
            }
            self.timers.pop();
            let Some(call) = self.calls.get_mut(&id) else {
                continue;
            };
            if call.scheduled != Some(at) {
                continue;
            }
            call.scheduled = None;
            let Some(p) = &mut call.pipe else {
                continue;
            };
            // The entry is the deadline the pipeline gave when it was
            // scheduled; had it moved, `schedule` would have entered the
            // new one, unless it moved later, and a pipeline's timeout
            // does nothing that is not due. So no second poll_timeout
            // (its deadlines sit on several of the call's cold lines).
            p.pipeline.handle_timeout(now);
            drain(
                now,
                id,
                call,
                &mut self.out,
                &mut self.sends,
                &mut self.timers,
                &mut self.digits,
            );
        }
        None
    }

    /// Enters a call's pipeline deadline in the timer heap, unless an
    /// entry at or before it is there already (an earlier entry finds the
    /// later deadline when it comes up).
    fn schedule(&mut self, id: u64) {
        if let Some(call) = self.calls.get_mut(&id) {
            schedule(&mut self.timers, id, call);
        }
    }

    fn map_socket(&mut self, s: SocketId, id: u64, side: LegSide, rtcp: bool) {
        let i = s.0 as usize;
        if self.sockets.len() <= i {
            self.sockets.resize(i + 1, None);
        }
        self.sockets[i] = Some((id, side, rtcp));
    }

    fn datagram(&mut self, now: Instant, socket: SocketId, from: SocketAddr, data: &[u8]) {
        self.flood.datagram(now, socket.0);
        let Some(&Some((id, side, is_rtcp))) = self.sockets.get(socket.0 as usize) else {
            self.unknown_socket += 1;
            return;
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if let Some(p) = &mut call.pipe
            && let Some(leg) = p.kind.leg_of(side)
        {
            let verdict = if is_rtcp {
                p.pipeline.handle_rtcp(now, leg, from, data)
            } else {
                p.pipeline.handle_rtp(now, leg, from, data)
            };
            let this = &mut call.legs[side as usize];
            let stranger = matches!(
                verdict,
                pipeline::Verdict::Dropped(pipeline::DropReason::WrongSource)
            );
            match verdict {
                pipeline::Verdict::Dropped(pipeline::DropReason::WrongSource) => {
                    this.stats.dropped_source += 1;
                }
                pipeline::Verdict::Dropped(pipeline::DropReason::Malformed) => {
                    this.stats.dropped_invalid += 1;
                }
                pipeline::Verdict::Dropped(_) => this.stats.dropped_unrouted += 1,
                _ => {
                    if is_rtcp || rtp::is_rtcp(data) {
                        this.stats.rtcp_packets += 1;
                    } else {
                        this.stats.rx_packets += 1;
                        this.stats.rx_bytes += data.len() as u64;
                        if let Some(rec) = call.record.as_deref_mut() {
                            record_rtp(rec, side as u8, this.remote, now, data);
                        }
                    }
                    this.last_rx = Some(now);
                    call.reported_quiet = false;
                }
            }
            if stranger && call.legs[side as usize].kernel_filter.is_none() {
                sync_filter(&mut self.filters, call, side);
            }
            // Also enters the pipeline's next deadline, which a packet
            // can move (jitter buffer playout).
            drain(
                now,
                id,
                call,
                &mut self.out,
                &mut self.sends,
                &mut self.timers,
                &mut self.digits,
            );
            return;
        }
        let (this, other) = match side {
            LegSide::A => {
                let [a, b] = &mut call.legs;
                (a, b)
            }
            LegSide::B => {
                let [a, b] = &mut call.legs;
                (b, a)
            }
        };
        if is_rtcp || rtp::is_rtcp(data) {
            let Ok(compound) = rtcp::Compound::parse(data) else {
                this.stats.dropped_invalid += 1;
                return;
            };
            // Strict source for RTCP too: on its own port it is learned
            // as RTP is; multiplexed on the RTP port it is taken only from
            // the far end's RTP source (it does not move where RTP goes).
            // On its own port, only from an IP the RTP latch knows as the
            // far end's: a stranger's reports taught that port's latch
            // where ours go, and kept a dead call from timing out.
            let from_far_end = if is_rtcp {
                this.latch.knows_ip(from.ip())
                    && this.rtcp_latch.check(now, from, Stream::Rtcp) != LatchVerdict::Drop
            } else {
                this.latch.destination() == Some(from)
            };
            if !from_far_end {
                this.stats.dropped_source += 1;
                if this.kernel_filter.is_none() {
                    let want = this.latch.locked_ips();
                    filter_leg(&mut self.filters, this, want);
                }
                return;
            }
            this.rtcp_mux |= !is_rtcp;
            // RTCP from the far end keeps a held call alive.
            this.stats.rtcp_packets += 1;
            this.last_rx = Some(now);
            call.reported_quiet = false;
            for p in compound.packets() {
                if let RtcpPacket::SenderReport { ssrc, info, .. } = p
                    && Some(ssrc) == this.remote_ssrc
                {
                    this.rx.on_sender_report(now, info.ntp);
                }
            }
            return;
        }
        let Ok(pkt) = RtpPacket::parse(data) else {
            this.stats.dropped_invalid += 1;
            return;
        };
        let stream = Stream::Rtp {
            ssrc: pkt.ssrc(),
            seq: pkt.sequence(),
        };
        if this.latch.check(now, from, stream) == LatchVerdict::Drop {
            this.stats.dropped_source += 1;
            // A stranger at a locked leg: the kernel turns the rest away.
            if this.kernel_filter.is_none() {
                let want = this.latch.locked_ips();
                filter_leg(&mut self.filters, this, want);
            }
            return;
        }
        this.stats.rx_packets += 1;
        this.stats.rx_bytes += data.len() as u64;
        this.last_rx = Some(now);
        call.reported_quiet = false;
        if this.remote_ssrc.is_some_and(|s| s != pkt.ssrc()) {
            this.rx.new_source();
        }
        this.rx
            .update(now, pkt.sequence(), pkt.timestamp(), pkt.payload().len());
        this.remote_ssrc = Some(pkt.ssrc());
        if let Some(rec) = call.record.as_deref_mut() {
            record_rtp(rec, side as u8, this.remote, now, data);
        }
        if let Some(here) = this.remote {
            let digits = &mut self.digits;
            let last_digit = &mut this.last_digit;
            let mut report = |d: Digit| {
                if admit_digit(last_digit, now) {
                    digits.push((id, side, d));
                }
            };
            if Some(pkt.payload_type()) == here.dtmf_payload_type {
                if let Ok(ev) = TelephoneEvent::parse(pkt.payload()) {
                    let mut also = None;
                    let first = this.dtmf.on_packet(now, pkt.timestamp(), &ev, &mut also);
                    // Two keys from one packet (the first one's ends all
                    // lost, the second's only packet an end) are both
                    // real: the gap applies to the pair (at most two keys
                    // per DTMF_MIN_GAP).
                    match (first, also) {
                        (Some(d), Some(e)) => {
                            if admit_digit(last_digit, now) {
                                digits.push((id, side, d));
                                digits.push((id, side, e));
                            }
                        }
                        (Some(d), None) | (None, Some(d)) => report(d),
                        (None, None) => {}
                    }
                }
            } else if let Some(det) = &mut this.inband
                && pkt.payload_type() == here.payload_type
            {
                inband_digits(det, here.payload_type, pkt.payload(), &mut report);
            }
        }
        let (Some(there), Some(here), Some(there_io)) = (other.remote, this.remote, other.sockets)
        else {
            this.stats.dropped_unrouted += 1;
            return;
        };
        if !there.we_send {
            // The other far end does not take RTP now (on hold: our side
            // of its stream is `recvonly`/`inactive`), or named no address.
            this.stats.dropped_unrouted += 1;
            return;
        }
        let pt = pkt.payload_type();
        let out_pt = if pt == here.payload_type {
            there.payload_type
        } else if Some(pt) == here.dtmf_payload_type {
            match there.dtmf_payload_type {
                Some(p) => p,
                None => {
                    this.stats.dropped_unrouted += 1;
                    return;
                }
            }
        } else if pt == rtp::COMFORT_NOISE {
            // Comfort noise (RFC 3389, static type 13) means the same on
            // both legs, and phones send it unoffered. Another type the
            // leg did not agree to (a static codec such as G.729 among
            // them) the far end did not agree to either: not forwarded.
            pt
        } else {
            this.stats.dropped_unrouted += 1;
            return;
        };
        let to = other.latch.destination().unwrap_or(there.addr);
        let mapped = other.out.map(
            now,
            Source::Relay { ssrc: pkt.ssrc() },
            pkt.sequence(),
            pkt.timestamp(),
        );
        let start = self.out.len();
        self.out.extend_from_slice(data);
        let end = self.out.len();
        let header = RtpHeader {
            marker: pkt.marker() || mapped.marker,
            payload_type: out_pt,
            sequence: mapped.sequence,
            timestamp: mapped.timestamp,
            ssrc: other.out.ssrc(),
        };
        if rtp::rewrite_header(&mut self.out[start..end], &header).is_err() {
            self.out.truncate(start);
            this.stats.dropped_invalid += 1;
            return;
        }
        if Some(pt) == here.dtmf_payload_type {
            let at = start + pkt.header_len();
            codeb_media::dtmf::rescale_durations(
                &mut self.out[at..at + pkt.payload().len()],
                here.dtmf_clock_rate,
                there.dtmf_clock_rate,
            );
        }
        other.stats.tx_packets += 1;
        other.stats.tx_bytes += data.len() as u64;
        other.send.on_sent(
            now,
            mapped.timestamp,
            pkt.payload().len(),
            other.out.clock_rate(),
        );
        self.sends.push((there_io.rtp, to, start, end));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::mpsc::sync_channel;

    use codeb_media::codec::{CodecKind, CodecSpec};

    use super::*;

    fn sockets() -> [Option<LegSockets>; 2] {
        let leg = || {
            let bind = || UdpSocket::bind((IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).unwrap();
            let (rtp, rtcp) = (bind(), bind());
            let port = rtp.local_addr().unwrap().port();
            Some(LegSockets::Bound(Box::new(Pair { rtp, rtcp }), port))
        };
        [leg(), leg()]
    }

    /// A worker with call 1 transcoded PCMU (A) ↔ PCMA (B), both far ends
    /// known: the worker, A's RTP socket and the far ends.
    fn transcoded_call() -> (Worker, SocketId, [SocketAddr; 2]) {
        let far = addresses().far;
        let mut w = one_call();
        w.pipe(1, Some((PipeKind::Bridge, transcoding())));
        w.remote(1, LegSide::A, far_end(0, far[0], [0, 8]));
        w.remote(1, LegSide::B, far_end(1, far[1], [0, 8]));
        let socket = w.st.calls[&1].legs[0].rtp().unwrap();
        (w, socket, far)
    }

    fn transcoding() -> Box<Pipeline> {
        let now = Instant::now();
        Box::new(
            Pipeline::bridge(
                now,
                super::super::bridge_pipeline_config(now),
                LegConfig::new(CodecSpec::pcmu(), 1),
                LegConfig::new(CodecSpec::pcma(), 2),
            )
            .unwrap(),
        )
    }

    /// PCMU packet `seq` of a far end's stream of `samples`-long packets
    /// (SSRC 0x4242): a 500 Hz square wave, loud enough to be no silence.
    fn loud_pcmu(seq: u16, samples: usize) -> Vec<u8> {
        let header = RtpHeader {
            marker: seq == 0,
            payload_type: 0,
            sequence: seq,
            timestamp: u32::from(seq) * samples as u32,
            ssrc: 0x4242,
        };
        let mut packet = vec![0u8; 12 + samples];
        header.write(&mut packet).unwrap();
        for (k, b) in packet[12..].iter_mut().enumerate() {
            *b = codeb_media::g711::ulaw_encode(if k % 16 < 8 { 8000 } else { -8000 });
        }
        packet
    }

    /// A worker on a reactor of its own, driven by hand: no thread, no
    /// loop.
    fn worker(coalescing: Coalescing) -> Worker {
        worker_reporting(coalescing).0
    }

    /// A worker, and where its events go.
    fn worker_reporting(coalescing: Coalescing) -> (Worker, Receiver<MediaEvent>) {
        let reactor = Reactor::new(&codeb_io::Options::default()).unwrap();
        let (_commands, rx) = sync_channel(1);
        let (events, reported) = sync_channel(16);
        let w = Worker::new(
            reactor,
            rx,
            events,
            None,
            Timing {
                inactivity: Duration::from_secs(60),
                rtcp_interval: Duration::from_secs(5),
                coalescing,
                flood_pps: 0,
            },
            Arc::new(AtomicU64::new(0)),
            0,
        );
        (w, reported)
    }

    /// Sockets the worker cannot take in (here a pair it is told it bound
    /// ahead, which it did not) are reported, for a new call and for a
    /// leg added later, so that the SIP thread ends the call instead of
    /// leaving it silent: nothing else would (a leg with no socket never
    /// goes quiet).
    #[test]
    fn a_leg_whose_sockets_cannot_be_taken_in_is_reported() {
        let (mut w, events) = worker_reporting(Coalescing {
            relay: Duration::from_micros(50),
            decoded: Duration::from_millis(1),
        });
        let failed = |ev: Result<MediaEvent, _>| match ev {
            Ok(MediaEvent::LegFailed { handle, leg }) => Some((handle.id, leg)),
            _ => None,
        };
        // A new call: it is not kept, and its other leg's sockets go.
        let [a, _] = sockets();
        w.open(1, [a, Some(LegSockets::Prebound(40_000))]);
        assert!(!w.st.calls.contains_key(&1));
        assert!(
            w.st.sockets.iter().all(Option::is_none),
            "A's sockets are gone"
        );
        assert_eq!(failed(events.try_recv()), Some((1, LegSide::B)));
        // A leg added later: the call keeps the leg it has.
        let [a, _] = sockets();
        w.open(2, [a, None]);
        w.add_leg(2, LegSide::B, LegSockets::Prebound(40_002));
        assert!(w.st.calls[&2].legs[0].sockets.is_some());
        assert!(w.st.calls[&2].legs[1].sockets.is_none());
        assert_eq!(failed(events.try_recv()), Some((2, LegSide::B)));
        // Added to a call that is gone, or to a leg that has sockets:
        // closed, and nothing to report.
        w.add_leg(3, LegSide::B, LegSockets::Prebound(40_004));
        let [extra, _] = sockets();
        w.add_leg(2, LegSide::A, extra.unwrap());
        assert!(events.try_recv().is_err());
        assert_eq!(w.st.sockets.iter().flatten().count(), 2, "call 2's A leg");
        // A full event queue loses no failure: it is told again at the
        // next check, once there is room.
        for _ in 0..16 {
            w.emit(MediaEvent::Inactive {
                handle: MediaHandle { worker: 0, id: 2 },
                stats: Default::default(),
            });
        }
        w.add_leg(2, LegSide::B, LegSockets::Prebound(40_006));
        assert_eq!(w.unreported_failures, [(2, LegSide::B)]);
        while events.try_recv().is_ok() {}
        w.report_failures();
        assert!(w.unreported_failures.is_empty());
        assert_eq!(failed(events.try_recv()), Some((2, LegSide::B)));
    }

    #[test]
    fn turns_wait_longer_only_while_every_call_is_decoded() {
        let relay = Duration::from_micros(50);
        let decoded = Duration::from_millis(1);
        let mut w = worker(Coalescing { relay, decoded });
        let window = |w: &mut Worker| {
            w.choose_coalescing();
            w.coalescing_now.unwrap()
        };
        assert_eq!(window(&mut w), relay, "no calls");
        w.open(1, sockets());
        w.open(2, sockets());
        assert_eq!(window(&mut w), relay);
        w.pipe(1, Some((PipeKind::Bridge, transcoding())));
        assert_eq!(window(&mut w), relay, "call 2 is still relayed");
        w.pipe(2, Some((PipeKind::Tap(LegSide::A), transcoding())));
        assert_eq!(window(&mut w), decoded);
        // Back to the plain relay, and decoded again once it ends.
        w.pipe(1, None);
        assert_eq!(window(&mut w), relay);
        w.close(1);
        assert_eq!(window(&mut w), decoded);
        // A pipeline replaced by another changes nothing.
        w.pipe(2, Some((PipeKind::Bridge, transcoding())));
        assert_eq!(window(&mut w), decoded);
        w.close(2);
        assert_eq!(window(&mut w), relay, "no calls");
        assert_eq!(w.st.relays, 0);
    }

    /// A transcoded call whose far end sends 100 ms packets, and a turn
    /// late enough that three are due at once: fifteen frames, more than
    /// the pipeline's transmit queue holds. The worker's timer pass drains
    /// the queue and runs the pipeline again until nothing is due, so
    /// every frame goes out and none is dropped for the queue's size.
    #[test]
    fn a_late_turn_sends_every_frame_a_transcoded_call_has_due() {
        let (mut w, socket, [far_a, far_b]) = transcoded_call();
        let t0 = Instant::now();
        let mut now = t0;
        let mut frames = 0;
        let mut pass = |w: &mut Worker, now: Instant| {
            if let Some(next) = w.st.tap_timers(now) {
                assert!(next > now, "the pass leaves nothing due");
            }
            for &(_, dst, start, end) in &w.st.sends {
                let p = RtpPacket::parse(&w.st.out[start..end]).unwrap();
                if dst == far_b && p.payload_type() == 8 {
                    assert_eq!(p.payload().len(), 160);
                    frames += 1;
                }
            }
            w.st.sends.clear();
            w.st.out.clear();
        };
        for i in 0..12u16 {
            w.st.datagram(now, socket, far_a, &loud_pcmu(i, 800));
            if i == 7 {
                // The late turn: 150 ms after the one before.
                now += Duration::from_millis(50);
            }
            if i != 6 {
                pass(&mut w, now);
            }
            now += Duration::from_millis(if i == 7 { 50 } else { 100 });
        }
        for _ in 0..15 {
            now += Duration::from_millis(20);
            pass(&mut w, now);
        }
        let piped = w.st.calls[&1].pipe.as_ref().unwrap();
        let b = piped.pipeline.stats(pipeline::Leg::B).unwrap();
        assert_eq!(b.queue_full, 0);
        assert!(frames >= 60, "{frames} frames of 1.2 s");
        assert_eq!(b.rtp_out, frames);
    }

    /// A far end on hold (it sent `a=sendonly`/`a=inactive`, so our side
    /// of its stream is `recvonly`/`inactive`) gets
    /// no RTP, and a call with a held leg is not hung up for its silence;
    /// off hold, both work as before and the quiet clock starts again.
    #[test]
    fn a_held_far_end_gets_no_rtp_and_its_silence_is_no_timeout() {
        let [far_a, far_b] = addresses().far;
        let mut w = one_call();
        let held = |we_send: bool, times_out: bool| Remote {
            we_send,
            times_out,
            ..far_end(1, far_b, [0, 0])
        };
        w.remote(1, LegSide::A, far_end(0, far_a, [0, 0]));
        // B put the call on hold: a=inactive.
        w.remote(1, LegSide::B, held(false, false));
        let [a, b] = [0, 1].map(|i| w.st.calls[&1].legs[i].rtp().unwrap());
        let packet = |seq: u16| {
            let mut p = vec![0u8; 12 + 160];
            let h = RtpHeader {
                marker: false,
                payload_type: 0,
                sequence: seq,
                timestamp: u32::from(seq) * 160,
                ssrc: 0x77,
            };
            h.write(&mut p).unwrap();
            p
        };
        let t0 = Instant::now();
        // A's music on hold goes nowhere while B holds.
        w.st.datagram(t0, a, far_a, &packet(1));
        assert!(w.st.sends.is_empty(), "nothing to a held far end");
        assert_eq!(w.st.calls[&1].legs[0].stats.dropped_unrouted, 1);
        // A `sendonly` hold of B's (it may play music, we only receive):
        // B's RTP still reaches A.
        w.remote(1, LegSide::B, held(false, false));
        w.st.datagram(t0, b, far_b, &packet(1));
        assert_eq!(w.st.sends.len(), 1, "B's audio reaches A");
        assert_eq!(w.st.sends[0].1, far_a);
        w.st.sends.clear();
        w.st.out.clear();
        // Inactive again, and nobody sends for longer than the timeout:
        // the call is not reported quiet.
        w.remote(1, LegSide::B, held(false, false));
        w.check_quiet(t0 + Duration::from_secs(600));
        assert!(!w.st.calls[&1].reported_quiet, "a held call is not dead");
        // Off hold: the clock starts again from there.
        w.remote(1, LegSide::B, held(true, true));
        let resumed = w.st.calls[&1].routed_at.unwrap();
        w.check_quiet(resumed + Duration::from_secs(59));
        assert!(!w.st.calls[&1].reported_quiet);
        w.check_quiet(resumed + Duration::from_secs(60));
        assert!(w.st.calls[&1].reported_quiet, "quiet off hold is reported");
        // And A's audio reaches B again; after another hold, through a
        // hundred of A's packets, B's stream goes on by one, no gap.
        w.st.datagram(resumed, a, far_a, &packet(2));
        assert_eq!(w.st.sends.len(), 1);
        assert_eq!(w.st.sends[0].1, far_b);
        let seq_of = |w: &Worker| {
            let &(_, _, start, end) = w.st.sends.last().unwrap();
            RtpPacket::parse(&w.st.out[start..end]).unwrap().sequence()
        };
        let before = seq_of(&w);
        w.remote(1, LegSide::B, held(false, false));
        for seq in 3..103 {
            w.st.datagram(resumed, a, far_a, &packet(seq));
        }
        w.remote(1, LegSide::B, held(true, true));
        w.st.datagram(resumed, a, far_a, &packet(103));
        assert_eq!(seq_of(&w), before.wrapping_add(1), "no gap after a hold");
    }

    /// An RFC 2543 hold (`c=0.0.0.0`; the SIP side gives the engine an
    /// unspecified address that does not send) leaves the far end where it
    /// was: it gets no RTP, its learnt source stays, and off hold it gets
    /// audio again. A far end whose very first SDP held the call has no
    /// address at all, and nothing goes to `0.0.0.0` (this host, to Linux).
    #[test]
    fn an_rfc_2543_hold_keeps_the_far_end_and_sends_it_nothing() {
        let [far_a, far_b] = addresses().far;
        let mut w = one_call();
        let unspecified: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let held = Remote {
            we_send: false,
            times_out: false,
            ..far_end(1, unspecified, [0, 0])
        };
        w.remote(1, LegSide::A, far_end(0, far_a, [0, 0]));
        w.remote(1, LegSide::B, far_end(1, far_b, [0, 0]));
        let [a, b] = [0, 1].map(|i| w.st.calls[&1].legs[i].rtp().unwrap());
        let t0 = Instant::now();
        w.st.datagram(t0, b, far_b, &loud_pcmu(1, 160));
        w.remote(1, LegSide::B, held);
        assert_eq!(w.st.calls[&1].legs[1].remote.unwrap().addr, far_b);
        assert_eq!(w.st.calls[&1].legs[1].latch.destination(), Some(far_b));
        w.st.sends.clear();
        w.st.out.clear();
        w.st.datagram(t0, a, far_a, &loud_pcmu(1, 160));
        assert!(w.st.sends.is_empty(), "nothing to a far end on hold");
        w.check_quiet(t0 + Duration::from_secs(600));
        assert!(!w.st.calls[&1].reported_quiet, "a held call is not dead");
        w.remote(1, LegSide::B, far_end(1, far_b, [0, 0]));
        w.st.datagram(t0, a, far_a, &loud_pcmu(2, 160));
        assert_eq!(w.st.sends.len(), 1);
        assert_eq!(w.st.sends[0].1, far_b, "off hold, where it was");
        w.st.sends.clear();
        w.st.out.clear();

        // A call whose B held from its first SDP: its RTCP report finds
        // no address and goes nowhere.
        let mut w = one_call();
        w.remote(1, LegSide::A, far_end(0, far_a, [0, 0]));
        w.remote(1, LegSide::B, held);
        let a = w.st.calls[&1].legs[0].rtp().unwrap();
        w.st.datagram(t0, a, far_a, &loud_pcmu(1, 160));
        assert!(w.st.sends.is_empty(), "nothing to a far end on hold");
        w.st.reports(t0, Duration::from_secs(5));
        w.st.reports(t0 + Duration::from_secs(6), Duration::from_secs(5));
        let to: Vec<SocketAddr> = w.st.sends.iter().map(|s| s.1).collect();
        assert_eq!(to.len(), 1, "A's report only: {to:?}");
        assert_eq!(to[0].ip(), far_a.ip());
    }

    /// One call whose A is behind NAT: its SDP names a private address,
    /// and its signalling comes from far A's IP. B is where it said.
    fn call_with_a_behind_nat() -> Worker {
        let [far_a, far_b] = addresses().far;
        let mut w = one_call();
        let private: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        w.remote(
            1,
            LegSide::A,
            Remote {
                signalling: Some(far_a.ip()),
                ..far_end(0, private, [0, 0])
            },
        );
        w.remote(1, LegSide::B, far_end(1, far_b, [0, 0]));
        w
    }

    /// A far end behind NAT (its SDP names a private address) takes its
    /// call back from a scanner that sprayed first, by the IP its
    /// signalling comes from.
    #[test]
    fn the_signalling_ip_takes_a_call_back_from_a_scanner() {
        let [far_a, _] = addresses().far;
        let mut w = call_with_a_behind_nat();
        let a = w.st.calls[&1].legs[0].rtp().unwrap();
        let scanner: SocketAddr = "203.0.113.66:1".parse().unwrap();
        let t0 = Instant::now();
        for seq in 0..10 {
            w.st.datagram(t0, a, scanner, &loud_pcmu(seq, 160));
        }
        assert_eq!(w.st.calls[&1].legs[0].latch.destination(), Some(scanner));
        w.st.sends.clear();
        w.st.out.clear();
        // The phone's media, from its public IP on the port its NAT chose.
        w.st.datagram(t0, a, far_a, &loud_pcmu(10, 160));
        assert_eq!(w.st.calls[&1].legs[0].latch.destination(), Some(far_a));
        assert_eq!(w.st.sends.len(), 1, "its audio reaches B");
        w.st.sends.clear();
        w.st.datagram(t0, a, scanner, &loud_pcmu(11, 160));
        assert!(w.st.sends.is_empty(), "the scanner is out");
    }

    /// A far end's NAT rebinds mid-call: its stream, from the same public
    /// IP, comes from a new port once the old mapping has gone quiet. The
    /// leg follows it (B's audio goes to the new port) and the old port is
    /// a stranger from then on.
    #[test]
    fn a_relayed_leg_follows_its_nat_to_a_new_port() {
        let [far_a, far_b] = addresses().far;
        let mut w = call_with_a_behind_nat();
        let [a, b] = [0, 1].map(|i| w.st.calls[&1].legs[i].rtp().unwrap());
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        for seq in 0..10 {
            w.st.datagram(at(20 * u64::from(seq)), a, far_a, &loud_pcmu(seq, 160));
        }
        assert!(w.st.calls[&1].legs[0].latch.is_locked());
        let rebound = SocketAddr::new(far_a.ip(), far_a.port() + 2);
        // Still sending from the old port: the new one is dropped.
        w.st.datagram(at(200), a, rebound, &loud_pcmu(10, 160));
        assert_eq!(w.st.calls[&1].legs[0].latch.destination(), Some(far_a));
        // The old mapping quiet for 100 ms: followed.
        w.st.datagram(at(280), a, rebound, &loud_pcmu(11, 160));
        assert_eq!(w.st.calls[&1].legs[0].latch.destination(), Some(rebound));
        w.st.sends.clear();
        w.st.out.clear();
        w.st.datagram(at(290), b, far_b, &loud_pcmu(1, 160));
        assert_eq!(w.st.sends.len(), 1);
        assert_eq!(w.st.sends[0].1, rebound, "B's audio reaches A's new port");
        w.st.sends.clear();
        w.st.out.clear();
        w.st.datagram(at(300), a, far_a, &loud_pcmu(12, 160));
        assert!(w.st.sends.is_empty(), "the old port is a stranger now");
        w.st.datagram(at(300), a, rebound, &loud_pcmu(12, 160));
        assert_eq!(w.st.sends.len(), 1, "the new port is relayed");
        assert_eq!(w.st.calls[&1].legs[0].stats.dropped_source, 2);
    }

    /// A pipeline's RTP to a held far end is not sent either (its RTCP
    /// is): the same for the transcoded bridge and the AI tap, whose
    /// packets both leave through `drain`.
    #[test]
    fn a_pipeline_sends_no_rtp_to_a_held_far_end() {
        let [far_a, far_b] = addresses().far;
        let mut w = one_call();
        w.pipe(1, Some((PipeKind::Bridge, transcoding())));
        w.remote(1, LegSide::A, far_end(0, far_a, [0, 8]));
        let held = |on: bool| Remote {
            we_send: !on,
            times_out: !on,
            ..far_end(1, far_b, [0, 8])
        };
        w.remote(1, LegSide::B, held(true));
        let socket = w.st.calls[&1].legs[0].rtp().unwrap();
        let mut now = Instant::now();
        let to_b = |w: &mut Worker, now: Instant, seq: u16| {
            w.st.datagram(now, socket, far_a, &loud_pcmu(seq, 160));
            w.st.tap_timers(now);
            let rtp =
                w.st.sends
                    .iter()
                    .filter(|&&(_, dst, start, end)| {
                        dst == far_b && !rtp::is_rtcp(&w.st.out[start..end])
                    })
                    .count();
            w.st.sends.clear();
            w.st.out.clear();
            rtp
        };
        let mut sent = 0;
        for seq in 0..20 {
            sent += to_b(&mut w, now, seq);
            now += Duration::from_millis(20);
        }
        assert_eq!(sent, 0, "nothing to B while it holds");
        w.remote(1, LegSide::B, held(false));
        for seq in 20..40 {
            sent += to_b(&mut w, now, seq);
            now += Duration::from_millis(20);
        }
        assert!(sent >= 15, "B hears A again: {sent} packets");
        // Held again and back: B's stream goes on by one, no gap for the
        // frames it was not sent.
        let last_to_b = |w: &Worker| {
            w.st.sends
                .iter()
                .filter(|&&(_, dst, start, end)| {
                    dst == far_b && !rtp::is_rtcp(&w.st.out[start..end])
                })
                .map(|&(_, _, start, end)| {
                    RtpPacket::parse(&w.st.out[start..end]).unwrap().sequence()
                })
                .next_back()
        };
        let mut last = None;
        for seq in 40..45 {
            w.st.datagram(now, socket, far_a, &loud_pcmu(seq, 160));
            w.st.tap_timers(now);
            last = last_to_b(&w).or(last);
            w.st.sends.clear();
            w.st.out.clear();
            now += Duration::from_millis(20);
        }
        w.remote(1, LegSide::B, held(true));
        for seq in 45..60 {
            assert_eq!(to_b(&mut w, now, seq), 0);
            now += Duration::from_millis(20);
        }
        w.remote(1, LegSide::B, held(false));
        let mut next = None;
        for seq in 60..65 {
            w.st.datagram(now, socket, far_a, &loud_pcmu(seq, 160));
            w.st.tap_timers(now);
            next = next.or_else(|| {
                w.st.sends
                    .iter()
                    .find(|&&(_, dst, start, end)| {
                        dst == far_b && !rtp::is_rtcp(&w.st.out[start..end])
                    })
                    .map(|&(_, _, start, end)| {
                        RtpPacket::parse(&w.st.out[start..end]).unwrap().sequence()
                    })
            });
            w.st.sends.clear();
            w.st.out.clear();
            now += Duration::from_millis(20);
        }
        assert_eq!(
            next,
            last.map(|s: u16| s.wrapping_add(1)),
            "no gap after the hold"
        );
    }

    /// A worker with call 1 relayed PCMU ↔ PCMU, B's far end as `b` makes
    /// it from the usual one; the worker and the far ends.
    fn relayed_pcmu(b: impl FnOnce(Remote) -> Remote) -> (Worker, [SocketAddr; 2]) {
        let [far_a, far_b] = addresses().far;
        let mut w = one_call();
        w.remote(1, LegSide::A, far_end(0, far_a, [0, 0]));
        w.remote(1, LegSide::B, b(far_end(1, far_b, [0, 0])));
        (w, [far_a, far_b])
    }

    /// A µ-law packet of silence from `ssrc` with this sequence number and
    /// timestamp.
    fn silence(ssrc: u32, seq: u16, ts: u32) -> Vec<u8> {
        let mut p = vec![0xffu8; 12 + 160];
        RtpHeader {
            marker: false,
            payload_type: 0,
            sequence: seq,
            timestamp: ts,
            ssrc,
        }
        .write(&mut p)
        .unwrap();
        p
    }

    /// A far end whose codec changes clock (a re-INVITE to Opus): what we
    /// send it starts on a new timestamp base, and our sender reports
    /// follow that base, not the old stream's (whichever side of it the
    /// new base falls).
    #[test]
    fn sender_reports_follow_a_new_clock_on_the_far_end() {
        for id in 0..8u64 {
            let (mut w, [far_a, far_b]) = relayed_pcmu(|b| b);
            w.st.ssrc_seed = std::hash::RandomState::new();
            let a = w.st.calls[&1].legs[0].rtp().unwrap();
            let mut now = Instant::now();
            for k in 0..5u16 {
                w.st.datagram(now, a, far_a, &silence(0x51, k, u32::from(k) * 160));
                now += Duration::from_millis(20);
            }
            let opus = |r: Remote| Remote {
                payload_type: 0,
                clock_rate: 48_000,
                ..r
            };
            w.remote(1, LegSide::B, opus(far_end(1, far_b, [0, 0])));
            w.remote(1, LegSide::A, opus(far_end(0, far_a, [0, 0])));
            w.st.sends.clear();
            w.st.out.clear();
            for k in 5..10u16 {
                w.st.datagram(now, a, far_a, &silence(0x51, k, u32::from(k) * 960));
                now += Duration::from_millis(20);
            }
            let last =
                w.st.sends
                    .iter()
                    .filter(|s| s.1 == far_b)
                    .map(|&(_, _, start, end)| {
                        RtpPacket::parse(&w.st.out[start..end]).unwrap().timestamp()
                    })
                    .next_back()
                    .unwrap();
            let at = w.st.calls[&1].legs[1]
                .send
                .rtp_ts_at(now - Duration::from_millis(20), 48_000);
            assert_eq!(at, last, "run {id}");
        }
    }

    /// A leg's loss stays in the call's account across its paths: what
    /// the relay saw lost, then what a pipeline saw, then after it.
    #[test]
    fn a_legs_loss_is_kept_across_relay_and_pipeline() {
        let (mut w, [far_a, far_b]) = relayed_pcmu(|b| b);
        let a = w.st.calls[&1].legs[0].rtp().unwrap();
        let mut now = Instant::now();
        let send = |w: &mut Worker, now: &mut Instant, ssrc: u32, seqs: std::ops::Range<u16>| {
            for k in seqs.filter(|k| k % 10 != 7) {
                w.st.datagram(*now, a, far_a, &silence(ssrc, k, u32::from(k) * 160));
                *now += Duration::from_millis(20);
            }
        };
        send(&mut w, &mut now, 0x61, 0..20);
        assert_eq!(w.st.calls[&1].stats()[0].lost, 2);
        let leg = |codec, ssrc, far| LegConfig {
            remote_rtp: Some(far),
            ..LegConfig::new(codec, ssrc)
        };
        let bridge = Pipeline::bridge(
            now,
            super::super::bridge_pipeline_config(now),
            leg(CodecSpec::pcmu(), 1, far_a),
            leg(CodecSpec::pcma(), 2, far_b),
        )
        .unwrap();
        w.pipe(1, Some((PipeKind::Bridge, Box::new(bridge))));
        send(&mut w, &mut now, 0x61, 20..40);
        // A new source meanwhile: its own numbering.
        send(&mut w, &mut now, 0x62, 1000..1020);
        assert_eq!(w.st.calls[&1].stats()[0].lost, 2 + 2 + 2);
        w.pipe(1, None);
        send(&mut w, &mut now, 0x62, 1020..1040);
        assert_eq!(w.st.calls[&1].stats()[0].lost, 2 + 2 + 2 + 2);
    }

    /// A relayed key between legs whose events run on different clocks
    /// (8 kHz on A, 48 kHz on B) reaches B with its duration on B's clock,
    /// and is timed on A's.
    #[test]
    fn relayed_keys_are_put_on_the_other_legs_event_clock() {
        use codeb_media::dtmf::TelephoneEvent;
        let (mut w, [far_a, _]) = relayed_pcmu(|b| Remote {
            dtmf_clock_rate: 48_000,
            ..b
        });
        let a = w.st.calls[&1].legs[0].rtp().unwrap();
        let ev = TelephoneEvent {
            event: 5,
            end: true,
            volume: 10,
            duration: 640,
        };
        let mut p = vec![0u8; 16];
        RtpHeader {
            marker: true,
            payload_type: 101,
            sequence: 1,
            timestamp: 8000,
            ssrc: 0x77,
        }
        .write(&mut p)
        .unwrap();
        p[12..].copy_from_slice(&ev.to_bytes());
        w.st.datagram(Instant::now(), a, far_a, &p);
        let sent = w.st.sends.last().expect("relayed to B");
        let out = RtpPacket::parse(&w.st.out[sent.2..sent.3]).unwrap();
        assert_eq!(out.payload_type(), 96);
        assert_eq!(
            TelephoneEvent::parse(out.payload()).unwrap().duration,
            3_840
        );
        let digit = w.st.digits.drain(..).next().expect("reported");
        assert_eq!(
            digit.2.duration,
            Duration::from_millis(80),
            "timed on A's clock"
        );
    }

    /// Keys are reported whatever path a call's media takes: relayed
    /// telephone-events once per key (their end is sent three times), tones
    /// in the G.711 audio of a leg that agreed no telephone-event, and a
    /// pipeline's own reports.
    #[test]
    fn keys_pressed_are_reported_on_the_relay_and_through_a_pipeline() {
        use codeb_media::dtmf::{DtmfSource, TelephoneEvent};
        // B agreed no telephone-event.
        let (mut w, [far_a, far_b]) = relayed_pcmu(|b| Remote {
            dtmf_payload_type: None,
            ..b
        });
        let [a, b] = [0, 1].map(|i| w.st.calls[&1].legs[i].rtp().unwrap());
        let packet = |pt: u8, seq: u16, ts: u32, payload: &[u8]| {
            let mut p = vec![0u8; 12 + payload.len()];
            let h = RtpHeader {
                marker: false,
                payload_type: pt,
                sequence: seq,
                timestamp: ts,
                ssrc: 0x77,
            };
            h.write(&mut p).unwrap();
            p[12..].copy_from_slice(payload);
            p
        };
        let mut now = Instant::now();
        // '5' from A: three updates, then its end three times.
        for (i, (end, duration)) in [
            (false, 160),
            (false, 320),
            (false, 480),
            (true, 640),
            (true, 640),
            (true, 640),
        ]
        .into_iter()
        .enumerate()
        {
            let ev = TelephoneEvent {
                event: 5,
                end,
                volume: 10,
                duration,
            };
            w.st.datagram(now, a, far_a, &packet(101, i as u16, 8000, &ev.to_bytes()));
            now += Duration::from_millis(20);
        }
        let got: Vec<_> = w.st.digits.drain(..).collect();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0].0, got[0].1), (1, LegSide::A));
        assert_eq!(got[0].2.char(), Some('5'));
        assert_eq!(got[0].2.source, DtmfSource::TelephoneEvent);
        assert_eq!(got[0].2.duration, Duration::from_millis(80));
        // '2' whose end packets are all lost, then '3' of which only an
        // end arrives: both keys, from the one packet that shows both.
        for (i, (event, end, ts)) in [(2, false, 12_000), (2, false, 12_000), (3, true, 13_000)]
            .into_iter()
            .enumerate()
        {
            let ev = TelephoneEvent {
                event,
                end,
                volume: 10,
                duration: 320,
            };
            w.st.datagram(
                now,
                a,
                far_a,
                &packet(101, 10 + i as u16, ts, &ev.to_bytes()),
            );
            now += Duration::from_millis(20);
        }
        let keys: Vec<_> = w.st.digits.drain(..).map(|d| d.2.char()).collect();
        assert_eq!(keys, [Some('2'), Some('3')]);
        now += Duration::from_millis(40);
        // A far end sending a whole key in every packet, 20 ms apart: one
        // report per 40 ms at most (no key is shorter), not one a packet.
        for i in 0..20u16 {
            let ev = TelephoneEvent {
                event: 1,
                end: true,
                volume: 10,
                duration: 160,
            };
            let ts = 20_000 + u32::from(i) * 160;
            w.st.datagram(now, a, far_a, &packet(101, 50 + i, ts, &ev.to_bytes()));
            now += Duration::from_millis(20);
        }
        assert_eq!(w.st.digits.drain(..).count(), 10);
        // '7' as a tone in B's µ-law audio (852 + 1209 Hz) for 100 ms,
        // then silence.
        let tone = |n: usize| -> Vec<u8> {
            (0..160)
                .map(|k| {
                    let t = (n * 160 + k) as f64 / 8000.0;
                    let x = 6000.0 * (std::f64::consts::TAU * 852.0 * t).sin()
                        + 6000.0 * (std::f64::consts::TAU * 1209.0 * t).sin();
                    codeb_media::g711::ulaw_encode(x as i16)
                })
                .collect()
        };
        for n in 0..10usize {
            let payload = if n < 5 { tone(n) } else { vec![0xff; 160] };
            w.st.datagram(
                now,
                b,
                far_b,
                &packet(0, n as u16, n as u32 * 160, &payload),
            );
            now += Duration::from_millis(20);
        }
        let got: Vec<_> = w.st.digits.drain(..).collect();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0].0, got[0].1), (1, LegSide::B));
        assert_eq!(got[0].2.char(), Some('7'));
        assert_eq!(got[0].2.source, DtmfSource::InBand);
        // A's far end has telephone-event: its tones are not listened for.
        for n in 0..10usize {
            w.st.datagram(
                now,
                a,
                far_a,
                &packet(0, 100 + n as u16, n as u32 * 160, &tone(n)),
            );
            now += Duration::from_millis(20);
        }
        assert!(w.st.digits.is_empty());
        // Through a pipeline (transcoding A's µ-law to B's A-law).
        let leg = |codec, ssrc, far, te| LegConfig {
            remote_rtp: Some(far),
            telephone_event: te,
            ..LegConfig::new(codec, ssrc)
        };
        let bridge = Pipeline::bridge(
            now,
            super::super::bridge_pipeline_config(now),
            leg(CodecSpec::pcmu(), 1, far_a, Some(101)),
            leg(CodecSpec::pcma(), 2, far_b, None),
        )
        .unwrap();
        w.pipe(1, Some((PipeKind::Bridge, Box::new(bridge))));
        for (i, end) in [false, true, true, true].into_iter().enumerate() {
            let ev = TelephoneEvent {
                event: 11,
                end,
                volume: 10,
                duration: 160 * (i as u16 + 1),
            };
            w.st.datagram(
                now,
                a,
                far_a,
                &packet(101, 200 + i as u16, 9000, &ev.to_bytes()),
            );
            now += Duration::from_millis(20);
            let _ = w.st.tap_timers(now);
        }
        let got: Vec<_> = w.st.digits.drain(..).collect();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0].1, got[0].2.char()), (LegSide::A, Some('#')));
    }

    /// A relayed far end whose codec runs at 48 kHz: its jitter is
    /// measured on that clock (a paced stream reads 100 ms of it on 8 kHz).
    #[test]
    fn a_relayed_48_khz_stream_is_measured_on_its_own_clock() {
        let [far_a, far_b] = addresses().far;
        let mut w = one_call();
        let opus = |side, addr| Remote {
            payload_type: 111,
            codec: CodecKind::Opus,
            clock_rate: 48_000,
            dtmf_clock_rate: 48_000,
            ..far_end(side, addr, [0, 0])
        };
        w.remote(1, LegSide::A, opus(0, far_a));
        w.remote(1, LegSide::B, opus(1, far_b));
        let socket = w.st.calls[&1].legs[0].rtp().unwrap();
        let t0 = Instant::now();
        for seq in 0..50u16 {
            let header = RtpHeader {
                marker: seq == 0,
                payload_type: 111,
                sequence: seq,
                timestamp: u32::from(seq) * 960,
                ssrc: 0x4243,
            };
            let mut packet = [0u8; 12 + 60];
            header.write(&mut packet).unwrap();
            let at = t0 + Duration::from_millis(20 * u64::from(seq));
            w.st.datagram(at, socket, far_a, &packet);
        }
        let stats = w.st.calls[&1].legs[0].snapshot();
        assert!(stats.rx_packets >= 50, "{stats:?}");
        assert!(stats.jitter_ms < 0.5, "{stats:?}");
    }

    /// A call moved from the relay to a transcoding pipeline, to another
    /// one and back (a re-INVITE changing a codec, an AI leg handed to a
    /// person) stays one stream to each far end: one SSRC, sequence
    /// numbers counting on.
    #[test]
    fn a_far_end_sees_one_stream_across_relay_and_pipeline() {
        let [far_a, far_b] = addresses().far;
        let mut w = one_call();
        w.remote(1, LegSide::A, far_end(0, far_a, [0, 8]));
        w.remote(1, LegSide::B, far_end(1, far_b, [0, 8]));
        let socket = w.st.calls[&1].legs[0].rtp().unwrap();
        let mut now = Instant::now();
        let mut seq = 0u16;
        // RTP headers (ssrc, sequence) sent to B's far end so far.
        let mut to_b: Vec<(u32, u16)> = Vec::new();
        let mut step = |w: &mut Worker, now: Instant, seq: &mut u16| {
            let header = RtpHeader {
                marker: *seq == 0,
                payload_type: 0,
                sequence: *seq,
                timestamp: u32::from(*seq) * 160,
                ssrc: 0x4242,
            };
            let mut packet = [0u8; 12 + 160];
            header.write(&mut packet).unwrap();
            for (k, b) in packet[12..].iter_mut().enumerate() {
                *b = codeb_media::g711::ulaw_encode(if k % 16 < 8 { 8000 } else { -8000 });
            }
            w.st.datagram(now, socket, far_a, &packet);
            let _ = w.st.tap_timers(now);
            for &(_, dst, start, end) in &w.st.sends {
                let p = RtpPacket::parse(&w.st.out[start..end]).unwrap();
                if dst == far_b {
                    to_b.push((p.ssrc(), p.sequence()));
                }
            }
            w.st.sends.clear();
            w.st.out.clear();
            *seq += 1;
        };
        let mut run = |w: &mut Worker, now: &mut Instant, n: usize| {
            for _ in 0..n {
                step(w, *now, &mut seq);
                *now += Duration::from_millis(20);
            }
        };
        run(&mut w, &mut now, 5);
        // As the SIP layer builds a bridge: the legs' far ends known.
        let leg = |codec, ssrc, far| LegConfig {
            remote_rtp: Some(far),
            ..LegConfig::new(codec, ssrc)
        };
        let bridge = |now| {
            Pipeline::bridge(
                now,
                super::super::bridge_pipeline_config(now),
                leg(CodecSpec::pcmu(), 1, far_a),
                leg(CodecSpec::pcma(), 2, far_b),
            )
            .unwrap()
        };
        w.pipe(1, Some((PipeKind::Bridge, Box::new(bridge(now)))));
        run(&mut w, &mut now, 10);
        // Rebuilt mid-talkspurt (a re-INVITE): the new pipeline's audio
        // has the same local source id as the old one's, and numbering of
        // its own from the start.
        w.pipe(1, Some((PipeKind::Bridge, Box::new(bridge(now)))));
        run(&mut w, &mut now, 10);
        w.pipe(1, None);
        run(&mut w, &mut now, 5);
        assert!(to_b.len() >= 25, "{to_b:?}");
        // Its sender report counts every packet of the stream, whichever
        // path sent it.
        assert_eq!(w.st.calls[&1].legs[1].send.packets, to_b.len() as u64);
        let ssrc = to_b[0].0;
        for (i, pair) in to_b.windows(2).enumerate() {
            assert_eq!(pair[1].0, ssrc, "packet {}: one SSRC: {to_b:x?}", i + 1);
            assert_eq!(
                pair[1].1,
                pair[0].1.wrapping_add(1),
                "packet {}: sequence counts on: {to_b:x?}",
                i + 1
            );
        }
    }

    /// RTCP on a relayed leg is held to its far end as RTP is: a
    /// stranger's RTCP is dropped and counted and keeps nothing alive; a
    /// NATed far end's RTCP port is learned and our reports go there; a
    /// far end that multiplexes RTCP on its RTP port gets our reports
    /// from our RTP port, at its RTP source.
    #[test]
    fn relayed_rtcp_is_taken_only_from_the_far_end_and_reports_follow_it() {
        let Addresses {
            far, nat, stranger, ..
        } = addresses();
        let nat_rtcp = SocketAddr::new(nat[0].ip(), nat[0].port() + 1);
        let mut w = one_call();
        for side in [LegSide::A, LegSide::B] {
            w.remote(1, side, far_end(side as usize, far[side as usize], [0, 0]));
        }
        let (rtp, rtcp) = {
            let leg = &w.st.calls[&1].legs[0];
            (leg.rtp().unwrap(), leg.rtcp().unwrap())
        };
        let (rr, n) = empty_rr();
        let t0 = Instant::now();
        // The NATed far end's RTCP comes first and is learned; five more
        // lock it.
        for k in 0..6 {
            w.st.datagram(t0 + Duration::from_millis(k), rtcp, nat_rtcp, &rr[..n]);
        }
        let st = w.st.calls[&1].legs[0].stats;
        assert_eq!((st.rtcp_packets, st.dropped_source), (6, 0));
        // A stranger's RTCP, on either port, is dropped and keeps nothing
        // alive.
        let later = t0 + Duration::from_secs(30);
        w.st.datagram(later, rtcp, stranger, &rr[..n]);
        w.st.datagram(later, rtp, stranger, &rr[..n]);
        let leg = &w.st.calls[&1].legs[0];
        assert_eq!((leg.stats.rtcp_packets, leg.stats.dropped_source), (6, 2));
        assert_eq!(leg.last_rx, Some(t0 + Duration::from_millis(5)));
        // Our report goes to the learned port, from our RTCP port.
        w.st.reports(t0, Duration::from_secs(5));
        w.st.reports(t0 + Duration::from_secs(5), Duration::from_secs(5));
        let to_a: Vec<_> =
            w.st.sends
                .iter()
                .filter(|s| s.0 == rtcp || s.0 == rtp)
                .collect();
        assert_eq!(to_a.len(), 1);
        assert_eq!((to_a[0].0, to_a[0].1), (rtcp, nat_rtcp));
        w.st.sends.clear();
        w.st.out.clear();
        // Muxed: RTCP at our RTP port from where A's RTP comes.
        let mut pkt = [0u8; 12 + 160];
        RtpHeader {
            marker: false,
            payload_type: 0,
            sequence: 1,
            timestamp: 160,
            ssrc: 0x5151,
        }
        .write(&mut pkt)
        .unwrap();
        w.st.datagram(later, rtp, nat[0], &pkt);
        w.st.sends.clear();
        w.st.out.clear();
        w.st.datagram(later, rtp, nat[0], &rr[..n]);
        assert_eq!(w.st.calls[&1].legs[0].stats.rtcp_packets, 7);
        w.st.reports(later, Duration::from_secs(5));
        let to_a: Vec<_> =
            w.st.sends
                .iter()
                .filter(|s| s.0 == rtcp || s.0 == rtp)
                .collect();
        assert_eq!(to_a.len(), 1);
        assert_eq!((to_a[0].0, to_a[0].1), (rtp, nat[0]));
    }

    /// A transcoded call's loss is counted where its stream is received,
    /// in the pipeline: the call's end logged 0 lost for any loss.
    #[test]
    fn a_transcoded_call_reports_the_loss_its_pipeline_saw() {
        let (mut w, socket, [far_a, _]) = transcoded_call();
        let t0 = Instant::now();
        for i in 0..20u16 {
            if i == 5 || i == 6 {
                continue;
            }
            let at = t0 + Duration::from_millis(20 * u64::from(i));
            w.st.datagram(at, socket, far_a, &loud_pcmu(i, 160));
            w.st.sends.clear();
            w.st.out.clear();
        }
        let stats = w.st.calls[&1].stats();
        assert_eq!(stats[0].lost, 2);
        assert_eq!(stats[1].lost, 0);
    }

    /// A stranger whose RTCP reaches a call's RTCP port before the far end
    /// sends any (many never do) is not learned: it got our reports, and
    /// its one report a second kept a dead call from timing out.
    #[test]
    fn a_strangers_rtcp_first_is_not_learned() {
        let Addresses { far, stranger, .. } = addresses();
        let mut w = one_call();
        for side in [LegSide::A, LegSide::B] {
            w.remote(1, side, far_end(side as usize, far[side as usize], [0, 0]));
        }
        let rtcp = w.st.calls[&1].legs[0].rtcp().unwrap();
        let (rr, n) = empty_rr();
        let t0 = Instant::now();
        for k in 0..10 {
            w.st.datagram(t0 + Duration::from_secs(k), rtcp, stranger, &rr[..n]);
        }
        let leg = &w.st.calls[&1].legs[0];
        assert_eq!((leg.stats.rtcp_packets, leg.stats.dropped_source), (0, 10));
        assert_eq!(leg.last_rx, None, "nothing kept the call alive");
        w.st.reports(t0, Duration::from_secs(5));
        w.st.reports(t0 + Duration::from_secs(5), Duration::from_secs(5));
        assert!(
            w.st.sends.iter().all(|s| s.1.ip() != stranger.ip()),
            "no report went to the stranger"
        );
        // The far end's own RTCP, from its SDP's IP, is taken.
        let far_rtcp = SocketAddr::new(far[0].ip(), far[0].port() + 1);
        w.st.datagram(t0 + Duration::from_secs(11), rtcp, far_rtcp, &rr[..n]);
        assert_eq!(w.st.calls[&1].legs[0].stats.rtcp_packets, 1);
    }

    /// A call that ends says so on every leg's RTCP (RFC 3550 §6.6): a last
    /// report, SDES and a BYE for the stream we sent, relayed or through a
    /// pipeline, before its sockets close.
    #[test]
    fn an_ending_call_sends_a_bye_on_each_leg() {
        for piped in [false, true] {
            let mut w = one_call();
            if piped {
                w.pipe(1, Some((PipeKind::Bridge, transcoding())));
            }
            // Each far end's RTCP port (its RTP port + 1) is a real socket.
            let far_rtcp = [0, 1].map(|_| {
                let s = UdpSocket::bind((IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                s
            });
            for (side, s) in [LegSide::A, LegSide::B].into_iter().zip(&far_rtcp) {
                let rtcp = s.local_addr().unwrap();
                let rtp = SocketAddr::new(rtcp.ip(), rtcp.port() - 1);
                w.remote(1, side, far_end(side as usize, rtp, [0, 8]));
            }
            w.close(1);
            // The reactor submits what was queued on its next turn.
            w.reactor
                .poll(Some(Duration::from_millis(20)), &mut |_| {})
                .unwrap();
            for s in &far_rtcp {
                let mut buf = [0u8; 512];
                let (n, _) = s.recv_from(&mut buf).expect("a report with a BYE");
                let c = rtcp::Compound::parse(&buf[..n]).unwrap();
                let pkts: Vec<_> = c.packets().collect();
                let RtcpPacket::ReceiverReport { ssrc, .. } = pkts[0] else {
                    panic!("piped {piped}: {pkts:?}");
                };
                assert!(matches!(pkts[1], RtcpPacket::Sdes { .. }), "{pkts:?}");
                let RtcpPacket::Bye { ssrcs } = pkts[2] else {
                    panic!("piped {piped}: {pkts:?}");
                };
                assert_eq!(ssrcs, ssrc.to_be_bytes(), "piped {piped}: ours ends");
            }
            assert!(w.st.calls.is_empty());
        }
    }

    /// A far end's empty receiver report (SSRC 0x5151) and its length.
    fn empty_rr() -> ([u8; 64], usize) {
        let mut rr = [0u8; 64];
        let n = {
            let mut cw = CompoundWriter::new(&mut rr);
            cw.receiver_report(0x5151, &[]).unwrap();
            cw.len()
        };
        (rr, n)
    }

    /// xorshift64*: a fixed, seeded stream of choices.
    struct Rng(u64);

    impl Rng {
        fn seeded(seed: u64) -> Rng {
            Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
        }

        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn pick<T: Copy>(&mut self, of: &[T]) -> T {
            of[self.below(of.len() as u64) as usize]
        }
    }

    /// A datagram as anyone on the network might send to a leg's port:
    /// RTP with every header field chosen (CSRCs, extension, padding,
    /// payload types known and not), an RTCP compound, or raw bytes.
    fn datagram(r: &mut Rng, ssrcs: &[u32]) -> Vec<u8> {
        match r.below(10) {
            0 => (0..r.below(80)).map(|_| r.next() as u8).collect(),
            1 => {
                let mut buf = [0u8; 256];
                let mut w = CompoundWriter::new(&mut buf);
                w.receiver_report(r.pick(ssrcs), &[]).unwrap();
                w.sdes_cname(r.pick(ssrcs), b"far").unwrap();
                let n = w.len();
                buf[..n].to_vec()
            }
            _ => {
                let csrcs = if r.below(4) == 0 { r.below(16) } else { 0 };
                let extension = r.below(5) == 0;
                let padding = r.below(6) == 0;
                let pt = r.pick(&[0u8, 0, 0, 0, 101, 101, 8, 13, 96, 127, 72]);
                let marker = r.below(8) == 0;
                let mut d = vec![
                    0x80 | u8::from(padding) << 5 | u8::from(extension) << 4 | csrcs as u8,
                    u8::from(marker) << 7 | pt,
                ];
                d.extend_from_slice(&(r.below(8) as u16).to_be_bytes());
                d.extend_from_slice(&(160 * r.below(8) as u32).to_be_bytes());
                d.extend_from_slice(&r.pick(ssrcs).to_be_bytes());
                for _ in 0..csrcs {
                    d.extend_from_slice(&(r.next() as u32).to_be_bytes());
                }
                if extension {
                    let words = r.below(4) as u16;
                    d.extend_from_slice(&[0xbe, 0xde]);
                    d.extend_from_slice(&words.to_be_bytes());
                    d.extend((0..4 * words).map(|_| r.next() as u8));
                }
                d.extend((0..r.pick(&[0u64, 1, 20, 160, 160, 320])).map(|_| r.next() as u8));
                if padding {
                    let n = r.below(5) as u8;
                    d.extend(std::iter::repeat_n(0, n.saturating_sub(1) as usize));
                    d.push(n);
                }
                if r.below(12) == 0 {
                    d.truncate(r.below(d.len() as u64 + 1) as usize);
                }
                d
            }
        }
    }

    /// Who sends to a call's ports in the random tests: each leg's far
    /// end as its SDP says, the same behind a NAT, where a re-INVITE
    /// moves it, and a stranger.
    struct Addresses {
        far: [SocketAddr; 2],
        nat: [SocketAddr; 2],
        moved: [SocketAddr; 2],
        stranger: SocketAddr,
    }

    /// The far end of leg `side` at `addr`, with `codecs[side]` and
    /// telephone-event at 101 (A) or 96 (B).
    fn far_end(side: usize, addr: SocketAddr, codecs: [u8; 2]) -> Remote {
        Remote {
            addr,
            payload_type: codecs[side],
            codec: if codecs[side] == 8 {
                CodecKind::Pcma
            } else {
                CodecKind::Pcmu
            },
            clock_rate: 8000,
            dtmf_payload_type: Some([101, 96][side]),
            dtmf_clock_rate: 8000,
            we_send: true,
            times_out: true,
            signalling: None,
        }
    }

    /// A worker with call 1 open, relayed until a test pipes it.
    fn one_call() -> Worker {
        let mut w = worker(Coalescing {
            relay: Duration::from_micros(50),
            decoded: Duration::from_millis(1),
        });
        w.open(1, sockets());
        w
    }

    /// A source filter asked for a call's socket that has not reached the
    /// kernel when the call ends must not reach the next call's socket
    /// given the same id: that call would never hear its far end.
    #[test]
    fn a_filter_queued_for_an_ended_calls_socket_misses_the_socket_reusing_its_id() {
        let mut w = one_call();
        let old = w.st.calls[&1].legs[0].sockets.unwrap();
        let only_far = Some([Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))), None, None]);
        filter_leg(
            &mut w.st.filters,
            &mut w.st.calls.get_mut(&1).unwrap().legs[0],
            only_far,
        );
        assert_eq!(w.st.filters.len(), 2, "RTP and RTCP");
        w.close(1);
        // The ring lets go of the closed sockets' slots.
        for _ in 0..3 {
            w.reactor.poll(Some(Duration::ZERO), &mut |_| {}).unwrap();
        }
        w.open(2, sockets());
        let reused = w.st.calls[&2]
            .legs
            .iter()
            .filter_map(|l| l.sockets)
            .flat_map(|io| [io.rtp, io.rtcp])
            .find(|&s| s == old.rtp)
            .expect("the ended call's RTP socket id is given to the new call");
        assert!(w.st.filters.is_empty());
        w.source_filters();
        // The kernel delivers a datagram from anywhere to the new socket.
        let to = w.reactor.local_addr(reused).unwrap();
        let far = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 9), 0)).unwrap();
        far.send_to(&[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1], to)
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = false;
        while !got {
            assert!(
                Instant::now() < deadline,
                "the new call's socket heard nothing"
            );
            w.reactor
                .poll(Some(Duration::from_millis(20)), &mut |ev| {
                    if let Event::Datagram { socket, .. } = ev {
                        got |= socket == reused;
                    }
                })
                .unwrap();
        }
    }

    /// A re-INVITE moving one leg's far end between its two addresses;
    /// returns the leg.
    fn reinvite(w: &mut Worker, r: &mut Rng, sdp: &mut [SocketAddr; 2], codecs: [u8; 2]) -> usize {
        let Addresses { far, moved, .. } = addresses();
        let side = r.below(2) as usize;
        sdp[side] = if sdp[side] == far[side] {
            moved[side]
        } else {
            far[side]
        };
        w.remote(
            1,
            [LegSide::A, LegSide::B][side],
            far_end(side, sdp[side], codecs),
        );
        side
    }

    fn addresses() -> Addresses {
        let a = |s: &str| s.parse().unwrap();
        Addresses {
            far: [a("198.51.100.10:40000"), a("203.0.113.20:50000")],
            nat: [a("198.51.100.10:61000"), a("203.0.113.20:62000")],
            moved: [a("198.51.100.11:40002"), a("203.0.113.21:50002")],
            stranger: a("192.0.2.66:12345"),
        }
    }

    /// A call transcoded between PCMU (A) and PCMA (B), under seeded
    /// random datagrams as above, its timers run as the loop runs them:
    /// each datagram is counted once by what the pipeline made of it, and
    /// everything sent goes from the leg's own sockets to an address the
    /// leg heard valid RTP from (or its SDP address), as well-formed RTP
    /// of the leg's codec under the pipeline's SSRC, or RTCP.
    #[test]
    fn transcoding_pipeline_under_random_datagrams() {
        let Addresses {
            far, nat, stranger, ..
        } = addresses();
        let codecs = [0, 8];
        for seed in 1..=12u64 {
            let (mut r, mut w) = (Rng::seeded(seed), one_call());
            w.pipe(1, Some((PipeKind::Bridge, transcoding())));
            let mut sdp = far;
            for side in [LegSide::A, LegSide::B] {
                w.remote(1, side, far_end(side as usize, sdp[side as usize], codecs));
            }
            let c = &w.st.calls[&1];
            let sockets = [
                (c.legs[0].rtp().unwrap(), c.legs[0].rtcp().unwrap()),
                (c.legs[1].rtp().unwrap(), c.legs[1].rtcp().unwrap()),
            ];
            // The streams the relay's legs had: the pipeline carries them on.
            let piped = c.pipe.as_ref().unwrap();
            let ssrcs = [pipeline::Leg::A, pipeline::Leg::B]
                .map(|l| piped.pipeline.stream(l).unwrap().0.ssrc());
            assert_eq!(ssrcs, [0, 1].map(|i| c.legs[i].out.ssrc()));
            let mut now = Instant::now();
            let mut received = [0u64; 2];
            let mut rtp_sent = [0u64; 2];
            // Sources each leg accepted valid RTP (RTCP) from since its
            // far end last changed.
            let mut heard: [Vec<SocketAddr>; 2] = [vec![], vec![]];
            let mut heard_rtcp: [Vec<SocketAddr>; 2] = [vec![], vec![]];
            for step in 0..1500 {
                now += Duration::from_millis(r.pick(&[0, 1, 5, 20, 20, 20, 100, 700]));
                if r.below(300) == 0 {
                    let side = reinvite(&mut w, &mut r, &mut sdp, codecs);
                    heard[side].clear();
                    heard_rtcp[side].clear();
                } else {
                    let side = r.below(2) as usize;
                    let (rtp_socket, rtcp_socket) = sockets[side];
                    let socket = if r.below(6) == 0 {
                        rtcp_socket
                    } else {
                        rtp_socket
                    };
                    let from = r.pick(&[sdp[side], sdp[side], nat[side], stranger, sdp[1 - side]]);
                    let mut data = datagram(&mut r, &[0x1111, 0x2222]);
                    if data.len() > 1 && r.below(2) == 0 {
                        // Mostly the leg's own codec, so audio flows.
                        data[1] = (data[1] & 0x80) | [0, 8][side];
                    }
                    let before = w.st.calls[&1].legs[side].stats;
                    w.st.datagram(now, socket, from, &data);
                    received[side] += 1;
                    let after = w.st.calls[&1].legs[side].stats;
                    // What the pipeline's latch judged: RTP of the leg's
                    // codec on its RTP port, not refused for its source
                    // (it may still be dropped after, as late or too long).
                    let judged = socket == rtp_socket
                        && RtpPacket::parse(&data).is_ok_and(|p| p.payload_type() == codecs[side]);
                    if judged
                        && after.dropped_source == before.dropped_source
                        && !heard[side].contains(&from)
                    {
                        heard[side].push(from);
                    }
                    if after.rtcp_packets > before.rtcp_packets {
                        heard_rtcp[side].push(from);
                    }
                }
                if let Some(next) = w.st.tap_timers(now) {
                    assert!(next > now, "seed {seed} step {step}: left due");
                }
                for &(socket, dst, start, end) in &w.st.sends {
                    let data = &w.st.out[start..end];
                    let leg = sockets
                        .iter()
                        .position(|&(a, b)| a == socket || b == socket);
                    let Some(leg) = leg else {
                        panic!("seed {seed} step {step}: sent from no leg's socket");
                    };
                    if rtp::is_rtcp(data) {
                        // Where RTCP came from, else the port above
                        // where RTP goes.
                        let below = SocketAddr::new(dst.ip(), dst.port().wrapping_sub(1));
                        assert!(
                            heard_rtcp[leg].contains(&dst)
                                || below == sdp[leg]
                                || heard[leg].contains(&below),
                            "seed {seed} step {step}: leg {leg} reported to {dst}"
                        );
                        rtcp::Compound::parse(data).unwrap();
                        continue;
                    }
                    assert!(
                        dst == sdp[leg] || heard[leg].contains(&dst),
                        "seed {seed} step {step}: leg {leg} sent to {dst}, which it never heard"
                    );
                    assert_eq!(socket, sockets[leg].0, "RTP from the leg's RTP socket");
                    let p = RtpPacket::parse(data).unwrap();
                    assert_eq!(p.ssrc(), ssrcs[leg], "seed {seed} step {step}");
                    assert!(
                        p.payload_type() == [0, 8][leg] || p.payload_type() == [101, 96][leg],
                        "seed {seed} step {step}: payload type {}",
                        p.payload_type()
                    );
                    rtp_sent[leg] += 1;
                }
                w.st.sends.clear();
                w.st.out.clear();
                for (i, leg) in w.st.calls[&1].legs.iter().enumerate() {
                    let st = leg.stats;
                    assert_eq!(
                        st.rx_packets
                            + st.rtcp_packets
                            + st.dropped_source
                            + st.dropped_invalid
                            + st.dropped_unrouted,
                        received[i],
                        "seed {seed} step {step}: leg {i}'s datagrams each counted once: {st:?}"
                    );
                    assert_eq!(st.tx_packets, rtp_sent[i]);
                }
            }
            assert!(rtp_sent.iter().all(|&n| n > 0), "seed {seed}: {rtp_sent:?}");
        }
    }

    /// The relay's own fast path (the worker's, not a pipeline's) under
    /// seeded random datagrams from the far ends, NATed addresses and a
    /// stranger, on every socket of a call, with time stepping and
    /// re-INVITEs moving the far ends. Each datagram is counted exactly
    /// once; it sends at most one packet, only to the other leg's far end
    /// from that leg's RTP socket, only for valid RTP of the leg's payload
    /// types from an address the leg heard it from (or its SDP address),
    /// carrying the datagram's payload under our SSRC and the other leg's
    /// payload type; and once a leg's far end is locked nothing from
    /// anyone else goes anywhere.
    #[test]
    fn relay_fast_path_under_random_datagrams() {
        let Addresses {
            far, nat, stranger, ..
        } = addresses();
        let codecs = [0, 0];
        for seed in 1..=24u64 {
            let (mut r, mut w) = (Rng::seeded(seed), one_call());
            let mut sdp = far;
            // Sometimes the answer comes late: B has no far end yet.
            w.remote(1, LegSide::A, far_end(0, sdp[0], codecs));
            let mut b_known = r.below(3) != 0;
            if b_known {
                w.remote(1, LegSide::B, far_end(1, sdp[1], codecs));
            }
            let legs = |w: &Worker| {
                let c = &w.st.calls[&1];
                [
                    (c.legs[0].rtp().unwrap(), c.legs[0].rtcp().unwrap()),
                    (c.legs[1].rtp().unwrap(), c.legs[1].rtcp().unwrap()),
                ]
            };
            let ours = |w: &Worker| {
                let c = &w.st.calls[&1];
                [c.legs[0].out.ssrc(), c.legs[1].out.ssrc()]
            };
            let mut now = Instant::now();
            let mut received = [0u64; 2];
            let mut sent = [0u64; 2];
            // Sources each leg accepted valid RTP from since its far end
            // last changed.
            let mut heard: [Vec<SocketAddr>; 2] = [vec![], vec![]];
            let mut locked: [Option<SocketAddr>; 2] = [None, None];
            // When each leg last accepted RTP, its SSRC and sequence.
            let mut last: [Option<(Instant, u32, u16)>; 2] = [None, None];
            for step in 0..1500 {
                now += Duration::from_millis(r.pick(&[0, 1, 5, 20, 20, 20, 100, 700]));
                if step == 200 && !b_known {
                    // The late answer.
                    w.remote(1, LegSide::B, far_end(1, sdp[1], codecs));
                    b_known = true;
                    heard[1].clear();
                    locked[1] = None;
                    last[1] = None;
                    continue;
                } else if r.below(300) == 0 {
                    // A re-INVITE (or the late answer) moves a far end.
                    let side = reinvite(&mut w, &mut r, &mut sdp, codecs);
                    b_known |= side == 1;
                    heard[side].clear();
                    locked[side] = None;
                    last[side] = None;
                    continue;
                }
                let side = r.below(2) as usize;
                let (rtp_socket, rtcp_socket) = legs(&w)[side];
                let socket = if r.below(6) == 0 {
                    rtcp_socket
                } else {
                    rtp_socket
                };
                let from = r.pick(&[
                    sdp[side],
                    sdp[side],
                    nat[side],
                    nat[side],
                    stranger,
                    sdp[1 - side],
                ]);
                let data = datagram(&mut r, &[0x1111, 0x2222, 0x3333]);
                let before = w.st.calls[&1].legs[side].stats;
                w.st.datagram(now, socket, from, &data);
                received[side] += 1;
                let after = w.st.calls[&1].legs[side].stats;
                let accepted = after.rx_packets > before.rx_packets;
                if accepted && socket == rtp_socket {
                    if !heard[side].contains(&from) {
                        heard[side].push(from);
                    }
                    let input = RtpPacket::parse(&data).unwrap();
                    let (ssrc, seq) = (input.ssrc(), input.sequence());
                    // Strict source: once locked, only the locked address,
                    // but for the SDP's IP taking over from another IP, the
                    // SDP's exact address from another port of its IP, and
                    // the locked stream itself (its SSRC, its numbering
                    // carried on) from another port of its IP after 100 ms
                    // without RTP, unless locked on the SDP's address (a
                    // NAT that rebound).
                    if let Some(l) = locked[side]
                        && from != l
                    {
                        let sdp_ip = sdp[side].ip();
                        // (Before B's answer its latch has no SDP address.)
                        let expected = (side == 0 || b_known).then_some(sdp[side]);
                        let rebound = from.ip() == l.ip()
                            && Some(l) != expected
                            && last[side].is_some_and(|(at, s, q)| {
                                s == ssrc
                                    && now.duration_since(at) >= Duration::from_millis(100)
                                    && (1..=3000).contains(&seq.wrapping_sub(q))
                            });
                        assert!(
                            (from.ip() == sdp_ip && l.ip() != sdp_ip)
                                || from == sdp[side]
                                || rebound,
                            "seed {seed} step {step}: locked on {l}, accepted from {from}"
                        );
                        locked[side] = Some(from);
                    }
                    last[side] = Some((now, ssrc, seq));
                }
                assert!(
                    w.st.sends.len() <= 1,
                    "seed {seed} step {step}: one datagram, one send at most"
                );
                if let Some((out_socket, dst, start, end)) = w.st.sends.pop() {
                    let other = 1 - side;
                    assert!(accepted && socket == rtp_socket, "seed {seed} step {step}");
                    assert_eq!(
                        out_socket,
                        legs(&w)[other].0,
                        "from the other leg's RTP socket"
                    );
                    assert!(
                        dst == sdp[other] || heard[other].contains(&dst),
                        "seed {seed} step {step}: sent to {dst}, which leg {other} never heard"
                    );
                    let input = RtpPacket::parse(&data).unwrap();
                    let output = RtpPacket::parse(&w.st.out[start..end]).unwrap();
                    assert_eq!(output.ssrc(), ours(&w)[other]);
                    assert_eq!(output.payload(), input.payload());
                    let dtmf = [101u8, 96];
                    let pt = match input.payload_type() {
                        0 => 0,
                        t if t == dtmf[side] => dtmf[other],
                        rtp::COMFORT_NOISE => rtp::COMFORT_NOISE,
                        t => {
                            panic!("seed {seed} step {step}: leg {side}'s unknown type {t} relayed")
                        }
                    };
                    assert_eq!(output.payload_type(), pt);
                    assert!(output.marker() || !input.marker());
                    sent[other] += 1;
                } else if accepted && socket == rtp_socket {
                    assert!(after.dropped_unrouted > before.dropped_unrouted || !b_known);
                }
                w.st.out.clear();
                if let Some(d) = w.st.calls[&1].legs[side].latch.destination()
                    && w.st.calls[&1].legs[side].latch.is_locked()
                {
                    locked[side].get_or_insert(d);
                }
                for (i, leg) in w.st.calls[&1].legs.iter().enumerate() {
                    let st = leg.stats;
                    assert_eq!(
                        st.rx_packets + st.rtcp_packets + st.dropped_source + st.dropped_invalid,
                        received[i],
                        "seed {seed} step {step}: leg {i}'s datagrams each counted once: {st:?}"
                    );
                    assert_eq!(st.tx_packets, sent[i]);
                }
            }
            assert!(sent.iter().all(|&n| n > 0), "seed {seed}: {sent:?}");
        }
    }
}
