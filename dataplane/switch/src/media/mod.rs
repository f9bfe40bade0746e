//! The media engine: N worker threads, each with its own reactor (io_uring
//! where it works, epoll otherwise), carrying the RTP and RTCP of the calls
//! pinned to it for their whole life.
//!
//! The SIP thread asks for a call's media with [`MediaEngine::open`]: the
//! least-loaded worker is chosen, two even RTP ports (and the odd RTCP
//! ports above them) are taken from that worker's shard of
//! `CODEB_RTP_PORTS`, bound ahead by the worker or bound here (so a port
//! that is busy is skipped at once and the SDP only ever names bound
//! ports), and the sockets move to the worker with a command. A call
//! whose other party is a voice-AI engine opens one leg
//! ([`MediaEngine::open_leg`]) and gets the second only if it is
//! transferred to a person ([`MediaEngine::add_leg`]). Commands cross
//! through a bounded queue and a wake-up of the worker's reactor; the
//! worker never waits on the SIP thread. Events (a call's RTP went quiet)
//! come back the same way.
//!
//! What a worker does with a packet is in [`worker`]: validate, filter by
//! source (learn, then lock), rewrite the header into the other leg's
//! stream, send. No lock and no allocation per packet.

mod flood;
mod recorder;
mod worker;

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use codeb_io::{Options, Reactor, Waker};
use codeb_media::codec::CodecKind;
use codeb_media::pipeline::{ConfigError, LegConfig, Pipeline, PipelineConfig};
use codeb_media::record::{self, RecordFeed};
use codeb_media::tap::{TapConfig, TapEngine};

use crate::ports::{PortPool, PortRange};

pub use worker::LegStats;

/// Commands queued per worker before `open` answers "busy".
const COMMAND_QUEUE: usize = 4096;
/// RTP/RTCP pairs each worker keeps bound ahead of calls, so that call
/// setup on the SIP thread makes no socket calls (socket, bind and
/// setsockopt for four sockets cost the SIP thread about a tenth of its
/// time per call at 700 calls/s); a call finds its pairs ready and the
/// worker binds more in batches. Prebinding stops while a shard has fewer
/// than `PREBIND_MIN_FREE` free pairs, so it never starves `open`.
const PREBIND_TARGET: usize = 256;
const PREBIND_BATCH: usize = 64;
const PREBIND_MIN_FREE: usize = 4 * PREBIND_BATCH;
/// How long `open` waits for pairs being bound ahead when nothing else is
/// free (a shard near exhaustion).
const PREBIND_WAIT: Duration = Duration::from_millis(100);
/// Events queued towards the SIP thread.
const EVENT_QUEUE: usize = 16_384;
/// Datagrams a worker's loop turn waits for when coalescing
/// ([`MediaSettings::coalesce`]): at 2,500 calls (250k datagrams/s) a
/// turn then comes every ~250 µs instead of at every arrival.
pub const COALESCE_DATAGRAMS: u32 = 64;
/// How long a worker whose calls all run a decoded pipeline (AI tap,
/// transcoding) may hold back a loop turn, unless
/// [`MediaSettings::coalesce`] allows more. Such calls already spend
/// tens of ms in a jitter buffer or a vendor's round trip, so 1 ms is
/// small beside it; at 200 AI calls it took the switch from 55% to 31%
/// of a core (benches/README.md).
pub const DECODED_COALESCE: Duration = Duration::from_millis(1);

/// Engine settings.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    /// Worker threads (at least one).
    pub workers: usize,
    /// The address media sockets bind to (the SIP address's IP).
    pub bind_ip: IpAddr,
    pub ports: PortRange,
    /// A call whose legs both received nothing for this long is reported.
    pub inactivity: Duration,
    /// How often each relayed leg gets our RTCP report (SR or RR with
    /// SDES); RFC 3550's 5 s is the usual value.
    pub rtcp_interval: Duration,
    /// Use epoll even where io_uring works.
    pub force_epoll: bool,
    /// How long a worker may hold back a loop turn to gather datagrams
    /// (up to [`COALESCE_DATAGRAMS`]) instead of turning for each one
    /// while it relays any call packet for packet; zero turns at every
    /// arrival. Bounds the latency it adds. A worker whose calls are all
    /// decoded waits up to [`DECODED_COALESCE`] (or this, if longer).
    pub coalesce: Duration,
    /// Where call recordings go (None: calls cannot be recorded).
    pub record_dir: Option<PathBuf>,
    /// Receive each worker's ports through one socket where the kernel
    /// and the process's privileges allow (`codeb_io`'s port steering):
    /// one multishot receive drains every call's datagrams instead of
    /// one receive per port per datagram. Where it cannot be done the
    /// worker says why once and each port receives for itself.
    pub steer: bool,
    /// Datagrams a second on one port past which the port is paused for
    /// 2 s (`flood.rs`); 0: never.
    pub flood_pps: u32,
}

/// [`MediaSettings::flood_pps`] by default.
pub const DEFAULT_FLOOD_PPS: u32 = flood::DEFAULT_LIMIT;

/// Which leg of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegSide {
    A = 0,
    B = 1,
}

/// A call's media on the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MediaHandle {
    worker: usize,
    id: u64,
}

/// What [`MediaEngine::open`] gives the SIP thread: the ports to put in
/// each leg's SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenedMedia {
    pub handle: MediaHandle,
    pub ports: [u16; 2],
}

/// A leg's RTP/RTCP sockets on their way to the worker.
enum LegSockets {
    /// Bound ahead by the worker, on this RTP port.
    Prebound(u16),
    /// Bound by the SIP thread, on this RTP port.
    Bound(Box<Pair>, u16),
}

impl LegSockets {
    fn port(&self) -> u16 {
        match self {
            LegSockets::Prebound(p) | LegSockets::Bound(_, p) => *p,
        }
    }
}

/// What a leg's far end negotiated: where to send, and the payload type
/// our packets to it carry for the call's codec (and for
/// telephone-event, if negotiated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote {
    pub addr: SocketAddr,
    pub payload_type: u8,
    /// The codec `payload_type` carries (what a recording decodes).
    pub codec: CodecKind,
    pub clock_rate: u32,
    pub dtmf_payload_type: Option<u8>,
    /// The clock telephone-events on this leg run on (negotiated; the
    /// audio's, or 8 kHz beside Opus from many far ends).
    pub dtmf_clock_rate: u32,
    /// We send RTP to this far end: the direction agreed with it lets us
    /// (`sendrecv`/`sendonly` on our side), and it named an address (not
    /// the `0.0.0.0` of an RFC 2543 hold). RTCP goes either way (RFC 3264
    /// §5.1).
    pub we_send: bool,
    /// The IP this far end's signalling comes from: trusted for its media
    /// as the SDP's IP is (strict source; behind NAT the SDP names a
    /// private address, and the media comes from the public one).
    pub signalling: Option<IpAddr>,
    /// This far end's silence counts towards the RTP inactivity timeout:
    /// only while the stream is `sendrecv`. On hold (any other direction)
    /// a far end may send music, comfort noise or nothing at all, and a
    /// call is not hung up for that (the session timer still ends a dead
    /// one).
    pub times_out: bool,
}

/// What the engine reports.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// Neither leg has received RTP for the inactivity timeout.
    Inactive {
        handle: MediaHandle,
        stats: [LegStats; 2],
    },
    /// The call's media is closed; its final counters.
    Closed {
        handle: MediaHandle,
        stats: [LegStats; 2],
    },
    /// The worker could not take in `leg`'s sockets (its fixed-file table
    /// or the kernel refused them): the leg carries no audio. The call's
    /// owner ends the call, or fails what the leg was added for
    /// (nothing else would: a leg with no socket never goes quiet). Sent
    /// until the event queue takes it.
    LegFailed { handle: MediaHandle, leg: LegSide },
    /// A key the far end of `leg` pressed: an RFC 4733 telephone-event
    /// (whatever path the call's media takes), or a tone heard in the
    /// audio of a G.711 leg that negotiated no telephone-event.
    Dtmf {
        handle: MediaHandle,
        leg: LegSide,
        digit: codeb_media::dtmf::Digit,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("no RTP ports left on any worker")]
    NoPorts,
    #[error("media worker is overloaded (command queue full)")]
    Busy,
    #[error("media worker has stopped")]
    Stopped,
    #[error("media socket: {0}")]
    Socket(#[from] io::Error),
    #[error("media pipeline: {0}")]
    Pipeline(#[from] ConfigError),
    #[error("recording is not enabled on this node")]
    NotRecording,
}

enum Command {
    /// A new call, with sockets for legs A and B (None: a leg the call
    /// does not have yet).
    Open {
        id: u64,
        legs: Box<[Option<LegSockets>; 2]>,
    },
    /// Sockets for a leg the call opened without.
    AddLeg {
        id: u64,
        leg: LegSide,
        sockets: LegSockets,
    },
    /// Bind an RTP/RTCP pair on each of these (even) ports for later calls.
    Prebind {
        ports: Vec<u16>,
    },
    Remote {
        id: u64,
        leg: LegSide,
        remote: Remote,
    },
    /// From now on the leg's RTP goes to (and comes from) a voice-AI
    /// engine through this pipeline, instead of being relayed.
    Tap {
        id: u64,
        leg: LegSide,
        pipeline: Box<Pipeline>,
    },
    /// Both legs through this (transcoding) pipeline; None: back to the
    /// plain relay.
    Bridge {
        id: u64,
        pipeline: Option<Box<Pipeline>>,
    },
    /// Copy the call's audio into this recording from now on.
    Record {
        id: u64,
        feed: Box<RecordFeed>,
    },
    /// A tapped call's leg renegotiated its codec.
    Retap {
        id: u64,
        caller: Box<LegConfig>,
    },
    /// A tapped call's engine audio landed in an empty ring.
    TapKick {
        id: u64,
    },
    Close {
        id: u64,
    },
    Stop,
}

/// What became of a port the SIP thread asked a worker to bind ahead.
enum Bound {
    Ready(u16),
    Failed(u16),
}

struct Worker {
    tx: SyncSender<Command>,
    waker: Waker,
    pool: PortPool,
    calls: usize,
    thread: Option<JoinHandle<()>>,
    /// Outcomes of `Command::Prebind`.
    bound: Receiver<Bound>,
    /// Ports bound ahead on the worker, ready for calls (oldest first).
    ready: std::collections::VecDeque<u16>,
    /// Ports asked to be bound ahead whose outcome has not come back.
    requested: usize,
    /// Wake-ups wait for [`MediaEngine::wake_workers`] (see
    /// [`MediaEngine::set_deferred_wakes`]).
    defer_wakes: bool,
    wake_pending: bool,
    /// What the worker's reactor counted, as it published it.
    io: Arc<WorkerIo>,
}

impl Worker {
    /// Makes sure the worker looks at its queue: now, or when the owner
    /// wakes the workers, if it defers.
    fn kick(&mut self) {
        if self.defer_wakes {
            self.wake_pending = true;
        } else {
            self.waker.wake();
        }
    }

    /// Takes in what the worker has bound ahead since last asked.
    fn collect_bound(&mut self) {
        while let Ok(b) = self.bound.try_recv() {
            self.requested = self.requested.saturating_sub(1);
            match b {
                Bound::Ready(port) => self.ready.push_back(port),
                // Busy (another process) or failed: back to the pool, to be
                // tried again when its turn comes round.
                Bound::Failed(port) => self.pool.release(port),
            }
        }
    }

    /// Waits (at most `PREBIND_WAIT`) for every port being bound ahead.
    fn wait_bound(&mut self) {
        if std::mem::take(&mut self.wake_pending) {
            self.waker.wake();
        }
        let deadline = Instant::now() + PREBIND_WAIT;
        while self.requested > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.bound.recv_timeout(left) {
                Ok(b) => {
                    self.requested = self.requested.saturating_sub(1);
                    match b {
                        Bound::Ready(port) => self.ready.push_back(port),
                        Bound::Failed(port) => self.pool.release(port),
                    }
                }
                Err(_) => break,
            }
        }
    }

    /// `n` ports bound ahead, if there are.
    fn take_ready(&mut self, n: usize) -> Option<Vec<LegSockets>> {
        if self.ready.len() < n {
            return None;
        }
        Some(self.ready.drain(..n).map(LegSockets::Prebound).collect())
    }

    /// Takes back the sockets of a command the worker never got: ports
    /// bound ahead are still bound there, ready for a later call (in
    /// their order, first); ports bound here go back to the pool (their
    /// sockets close as they drop).
    fn give_back(&mut self, legs: impl DoubleEndedIterator<Item = LegSockets>) {
        for l in legs.rev() {
            match l {
                LegSockets::Prebound(p) => self.ready.push_front(p),
                LegSockets::Bound(_, p) => self.pool.release(p),
            }
        }
    }

    /// Asks the worker to bind another batch ahead, when it holds fewer
    /// than the target and the shard has room to spare.
    fn prebind(&mut self) {
        let outstanding = self.ready.len() + self.requested;
        let free = self.pool.capacity() - self.pool.in_use();
        if outstanding + PREBIND_BATCH > PREBIND_TARGET || free < PREBIND_MIN_FREE {
            return;
        }
        let ports: Vec<u16> = (0..PREBIND_BATCH)
            .map_while(|_| self.pool.allocate())
            .collect();
        let n = ports.len();
        match self.tx.try_send(Command::Prebind { ports }) {
            Ok(()) => {
                self.requested += n;
                self.kick();
            }
            Err(TrySendError::Full(Command::Prebind { ports }))
            | Err(TrySendError::Disconnected(Command::Prebind { ports })) => {
                for p in ports {
                    self.pool.release(p);
                }
            }
            Err(_) => {}
        }
    }

    /// Ports of this shard held by calls (not those bound ahead).
    fn ports_in_use(&self) -> usize {
        self.pool
            .in_use()
            .saturating_sub(self.ready.len() + self.requested)
    }
}

/// One worker's reactor counters, as it last published them (about once
/// a second), for metrics.
#[derive(Debug, Default)]
pub(super) struct WorkerIo {
    pub(super) stats: codeb_io::SharedStats,
    /// Its ports are received through port steering.
    steering: std::sync::atomic::AtomicBool,
    /// Ports paused for a flood since the start, and paused now.
    pub(super) flood_pauses: AtomicU64,
    pub(super) flooded_ports: AtomicU64,
    /// Kernel source filters the kernel refused since the start.
    pub(super) filters_refused: AtomicU64,
}

/// The media workers' IO, summed over workers (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaIo {
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    /// Datagrams too large for a receive buffer (dropped).
    pub truncated: u64,
    /// Sends the kernel refused (each a lost packet).
    pub send_errors: u64,
    /// Steered datagrams for a port no call holds any more.
    pub steered_strays: u64,
    /// Workers whose ports are received through port steering.
    pub steering_workers: usize,
    /// Ports paused for a flood since the start, and paused now.
    pub flood_pauses: u64,
    pub flooded_ports: u64,
    /// Kernel source filters the kernel refused (those ports' latches
    /// alone turn strangers away).
    pub filters_refused: u64,
}

/// The engine, owned by the SIP thread.
pub struct MediaEngine {
    workers: Vec<Worker>,
    events: Receiver<MediaEvent>,
    bind_ip: IpAddr,
    next_id: u64,
    /// Packets relayed by all workers (for metrics).
    relayed: Arc<AtomicU64>,
    /// The recorder thread and its directory, if recording is enabled.
    recorder: Option<(recorder::Recorder, PathBuf)>,
}

impl std::fmt::Debug for MediaEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaEngine")
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

/// Splits a port range into `n` shards of whole even/odd pairs.
fn shards(range: PortRange, n: usize) -> Vec<PortRange> {
    let first = u32::from(range.first + range.first % 2);
    let pairs = (u32::from(range.last) + 1 - first) / 2;
    let n = u32::try_from(n.max(1)).unwrap_or(1).min(pairs.max(1));
    let per = pairs / n;
    (0..n)
        .map(|i| {
            let start = first + i * per * 2;
            let end = if i + 1 == n {
                u32::from(range.last)
            } else {
                start + per * 2 - 1
            };
            PortRange {
                first: u16::try_from(start).unwrap_or(u16::MAX),
                last: u16::try_from(end).unwrap_or(u16::MAX),
            }
        })
        .collect()
}

impl MediaEngine {
    /// Starts the workers. `notify` wakes whoever drains
    /// [`Self::poll_event`] (the SIP thread's reactor).
    pub fn start(settings: &MediaSettings, notify: Option<Waker>) -> io::Result<MediaEngine> {
        let (ev_tx, events) = sync_channel(EVENT_QUEUE);
        let relayed = Arc::new(AtomicU64::new(0));
        let mut workers = Vec::new();
        for (i, range) in shards(settings.ports, settings.workers)
            .into_iter()
            .enumerate()
        {
            // A reactor stays on the thread that made it (io_uring is
            // single-issuer): it is built there and its waker sent back.
            let opts = Options {
                force_epoll: settings.force_epoll,
                ring_entries: 4096,
                buffers: 4096,
                buffer_len: 2048,
                max_connections: 0,
                // Every media socket of the worker, up to the fd limit.
                fixed_files: 1 << 16,
            };
            let (init_tx, init_rx) = sync_channel::<io::Result<Waker>>(1);
            let (tx, rx) = sync_channel(COMMAND_QUEUE);
            // Room for every port outstanding at once, so the worker's
            // reports never find it full.
            let (bound_tx, bound) = sync_channel(PREBIND_TARGET + PREBIND_BATCH);
            let bind_ip = settings.bind_ip;
            let events = ev_tx.clone();
            let notify = notify.clone();
            let inactivity = settings.inactivity;
            let rtcp_interval = settings.rtcp_interval;
            let flood_pps = settings.flood_pps;
            let coalesce = settings.coalesce;
            let count = Arc::clone(&relayed);
            let workers_n = settings.workers.max(1);
            let steer = settings.steer;
            let io = Arc::new(WorkerIo::default());
            let worker_io = Arc::clone(&io);
            let thread = std::thread::Builder::new()
                .name(format!("media-{i}"))
                .spawn(move || {
                    let mut reactor = match Reactor::new(&opts) {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = init_tx.send(Err(e));
                            return;
                        }
                    };
                    let steering = if steer {
                        match reactor.steer_ports(bind_ip, range.first..=range.last) {
                            Ok(()) => {
                                worker_io.steering.store(true, Ordering::Relaxed);
                                "on".to_owned()
                            }
                            Err(e) => format!("off ({e}): each port's socket receives for itself"),
                        }
                    } else {
                        "off (CODEB_RTP_STEER=off)".to_owned()
                    };
                    let coalescing = worker::Coalescing {
                        relay: coalesce,
                        decoded: coalesce.max(DECODED_COALESCE),
                    };
                    if i == 0 {
                        let can = reactor.can_coalesce();
                        tracing::info!(
                            backend = reactor.backend(),
                            workers = workers_n,
                            relay_coalesce_us = if can { coalescing.relay.as_micros() } else { 0 },
                            decoded_coalesce_us = if can {
                                coalescing.decoded.as_micros()
                            } else {
                                0
                            },
                            port_steering = %steering,
                            "media workers starting"
                        );
                    } else {
                        tracing::debug!(worker = i, port_steering = %steering, "media worker starting");
                    }
                    if init_tx.send(Ok(reactor.waker())).is_err() {
                        return;
                    }
                    worker::Worker::new(
                        reactor,
                        rx,
                        events,
                        notify,
                        worker::Timing {
                            inactivity,
                            rtcp_interval,
                            coalescing,
                            flood_pps,
                        },
                        count,
                        i,
                    )
                    .prebinding(bind_ip, bound_tx)
                    .publishing(worker_io)
                    .run();
                })?;
            let waker = init_rx
                .recv()
                .map_err(|_| io::Error::other("media worker did not start"))??;
            workers.push(Worker {
                tx,
                waker,
                pool: PortPool::new(range),
                calls: 0,
                thread: Some(thread),
                bound,
                ready: std::collections::VecDeque::new(),
                requested: 0,
                defer_wakes: false,
                wake_pending: false,
                io,
            });
        }
        let recorder = match &settings.record_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                Some((recorder::Recorder::start()?, dir.clone()))
            }
            None => None,
        };
        Ok(MediaEngine {
            workers,
            events,
            bind_ip: settings.bind_ip,
            next_id: 1,
            relayed,
            recorder,
        })
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// The workers' IO counters (each as of its last housekeeping round,
    /// about a second ago at most).
    pub fn io(&self) -> MediaIo {
        self.workers.iter().fold(MediaIo::default(), |mut m, w| {
            let s = w.io.stats.load();
            m.datagrams_in += s.datagrams_in;
            m.datagrams_out += s.datagrams_out;
            m.truncated += s.datagrams_truncated;
            m.send_errors += s.send_errors;
            m.steered_strays += s.steered_strays;
            m.steering_workers += usize::from(w.io.steering.load(Ordering::Relaxed));
            m.flood_pauses += w.io.flood_pauses.load(Ordering::Relaxed);
            m.flooded_ports += w.io.flooded_ports.load(Ordering::Relaxed);
            m.filters_refused += w.io.filters_refused.load(Ordering::Relaxed);
            m
        })
    }

    /// With `on`, commands no longer wake their worker one by one: the
    /// owner calls [`Self::wake_workers`] once it has issued a batch (the
    /// SIP thread, once per loop turn). Each wake-up is a syscall on the
    /// SIP thread and a context switch on the worker; a call issues four
    /// commands.
    pub fn set_deferred_wakes(&mut self, on: bool) {
        for w in &mut self.workers {
            w.defer_wakes = on;
        }
        if !on {
            self.wake_workers();
        }
    }

    /// Wakes every worker with commands queued since the last call.
    pub fn wake_workers(&mut self) {
        for w in &mut self.workers {
            if std::mem::take(&mut w.wake_pending) {
                w.waker.wake();
            }
        }
    }

    /// Calls open on the engine.
    pub fn calls(&self) -> usize {
        self.workers.iter().map(|w| w.calls).sum()
    }

    /// Packets relayed since start.
    pub fn relayed(&self) -> u64 {
        self.relayed.load(Ordering::Relaxed)
    }

    /// RTP ports in use (every leg of every call; not those bound ahead).
    pub fn ports_in_use(&self) -> usize {
        self.workers.iter().map(Worker::ports_in_use).sum()
    }

    /// Opens a call's media: two RTP/RTCP port pairs on the least-loaded
    /// worker that has ports. Pairs the worker bound ahead are used first;
    /// without them the pairs are bound here.
    pub fn open(&mut self) -> Result<OpenedMedia, MediaError> {
        let (handle, [a, b]) = self.open_legs(&[LegSide::A, LegSide::B])?;
        match (a, b) {
            (Some(a), Some(b)) => Ok(OpenedMedia {
                handle,
                ports: [a, b],
            }),
            _ => Err(MediaError::NoPorts),
        }
    }

    /// Opens the media of a call that has one leg: its other party is a
    /// voice-AI engine, fed through a tap. One RTP/RTCP pair, as
    /// [`Self::open`] takes them; the other leg gets one if the call is
    /// handed to a person ([`Self::add_leg`]). Returns the leg's port.
    pub fn open_leg(&mut self, side: LegSide) -> Result<(MediaHandle, u16), MediaError> {
        let (handle, ports) = self.open_legs(&[side])?;
        let port = ports[side as usize].ok_or(MediaError::NoPorts)?;
        Ok((handle, port))
    }

    /// Gives a call opened with one leg its other one. Returns the RTP
    /// port. A call stays on its worker, so the pair comes from that
    /// worker's shard; when the shard has none free, it is bound here from
    /// the shard with the most free (it returns there when the call ends,
    /// and it is not steered: it receives on its own socket).
    pub fn add_leg(&mut self, handle: MediaHandle, side: LegSide) -> Result<u16, MediaError> {
        let wi = handle.worker;
        if wi >= self.workers.len() {
            return Err(MediaError::Stopped);
        }
        let mut sockets = self.take_legs(wi, 1)?.and_then(|mut l| l.pop());
        if sockets.is_none() {
            let mut others: Vec<usize> = (0..self.workers.len()).filter(|&o| o != wi).collect();
            others.sort_by_key(|&o| {
                let pool = &self.workers[o].pool;
                std::cmp::Reverse(pool.capacity() - pool.in_use())
            });
            for o in others {
                if let Some(mut bound) = self.bind_pairs(o, 1)?
                    && let Some((pair, port)) = bound.pop()
                {
                    sockets = Some(LegSockets::Bound(Box::new(pair), port));
                    break;
                }
            }
        }
        let Some(sockets) = sockets else {
            return Err(MediaError::NoPorts);
        };
        let port = sockets.port();
        self.send_legs(
            wi,
            Command::AddLeg {
                id: handle.id,
                leg: side,
                sockets,
            },
        )?;
        self.workers[wi].prebind();
        Ok(port)
    }

    /// A call with sockets for `sides` on the least-loaded worker that
    /// has the ports; each side's RTP port.
    fn open_legs(
        &mut self,
        sides: &[LegSide],
    ) -> Result<(MediaHandle, [Option<u16>; 2]), MediaError> {
        let mut order: Vec<usize> = (0..self.workers.len()).collect();
        order.sort_by_key(|&i| self.workers[i].calls);
        for wi in order {
            let Some(taken) = self.take_legs(wi, sides.len())? else {
                continue;
            };
            let mut legs = [None, None];
            let mut ports = [None, None];
            for (&side, sockets) in sides.iter().zip(taken) {
                ports[side as usize] = Some(sockets.port());
                legs[side as usize] = Some(sockets);
            }
            let id = self.next_id;
            self.send_legs(
                wi,
                Command::Open {
                    id,
                    legs: Box::new(legs),
                },
            )?;
            let w = &mut self.workers[wi];
            w.calls += 1;
            w.prebind();
            self.next_id += 1;
            return Ok((MediaHandle { worker: wi, id }, ports));
        }
        Err(MediaError::NoPorts)
    }

    /// `n` legs' sockets from worker `wi`'s shard: pairs the worker bound
    /// ahead first, else pairs bound here; None when the shard has too
    /// few free ports.
    fn take_legs(&mut self, wi: usize, n: usize) -> Result<Option<Vec<LegSockets>>, MediaError> {
        self.workers[wi].collect_bound();
        if let Some(ready) = self.workers[wi].take_ready(n) {
            return Ok(Some(ready));
        }
        if let Some(bound) = self.bind_pairs(wi, n)? {
            return Ok(Some(
                bound
                    .into_iter()
                    .map(|(pair, port)| LegSockets::Bound(Box::new(pair), port))
                    .collect(),
            ));
        }
        let w = &mut self.workers[wi];
        if w.requested > 0 {
            // Nothing free but what is being bound ahead.
            w.wait_bound();
            return Ok(w.take_ready(n));
        }
        Ok(None)
    }

    /// Queues a command that carries sockets (open, add a leg) and wakes
    /// the worker; if the worker cannot take it, its ports are given back.
    fn send_legs(&mut self, wi: usize, cmd: Command) -> Result<(), MediaError> {
        let w = &mut self.workers[wi];
        let (err, cmd) = match w.tx.try_send(cmd) {
            Ok(()) => {
                w.kick();
                return Ok(());
            }
            Err(TrySendError::Full(c)) => (MediaError::Busy, c),
            Err(TrySendError::Disconnected(c)) => (MediaError::Stopped, c),
        };
        match cmd {
            Command::Open { legs, .. } => {
                let [a, b] = *legs;
                w.give_back([a, b].into_iter().flatten());
            }
            // Bound from another worker's shard: it goes back there.
            Command::AddLeg {
                sockets: LegSockets::Bound(pair, port),
                ..
            } if !w.pool.covers(port) => {
                drop(pair);
                self.release_port(port);
            }
            Command::AddLeg { sockets, .. } => w.give_back(std::iter::once(sockets)),
            _ => {}
        }
        Err(err)
    }

    /// Ports bound ahead and ready for calls, on every worker, in the
    /// order calls take them.
    #[cfg(test)]
    fn ready_ports(&mut self) -> Vec<u16> {
        self.workers
            .iter_mut()
            .flat_map(|w| {
                w.collect_bound();
                w.ready.iter().copied().collect::<Vec<_>>()
            })
            .collect()
    }

    /// `n` bound RTP/RTCP pairs from one worker's shard, or None when it
    /// has too few free ports. Busy ports (another process, or a socket
    /// still closing) are skipped and stay marked for a later retry.
    fn bind_pairs(&mut self, wi: usize, n: usize) -> Result<Option<Vec<(Pair, u16)>>, MediaError> {
        let ip = self.bind_ip;
        let pool = &mut self.workers[wi].pool;
        let mut got: Vec<(Pair, u16)> = Vec::with_capacity(n);
        let mut busy = Vec::new();
        let attempts = pool.capacity();
        for _ in 0..attempts {
            if got.len() == n {
                break;
            }
            let Some(port) = pool.allocate() else {
                break;
            };
            match Pair::bind(ip, port) {
                Ok(pair) => got.push((pair, port)),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => busy.push(port),
                Err(e) => {
                    for (_, p) in &got {
                        pool.release(*p);
                    }
                    for p in busy {
                        pool.release(p);
                    }
                    pool.release(port);
                    return Err(e.into());
                }
            }
        }
        for p in busy {
            pool.release(p);
        }
        if got.len() < n {
            for (_, p) in &got {
                pool.release(*p);
            }
            return Ok(None);
        }
        Ok(Some(got))
    }

    /// Tells the worker where a leg's far end is and what it speaks.
    pub fn set_remote(
        &mut self,
        handle: MediaHandle,
        leg: LegSide,
        remote: Remote,
    ) -> Result<(), MediaError> {
        self.command(
            handle.worker,
            Command::Remote {
                id: handle.id,
                leg,
                remote,
            },
        )
    }

    /// Hands one leg of a call to a voice-AI engine: the leg's audio is
    /// decoded for the engine and the engine's audio paced out to it, by
    /// the call's worker (see [`codeb_media::pipeline`], AI tap). Returns
    /// the engine side of the tap.
    pub fn start_tap(
        &mut self,
        now: Instant,
        handle: MediaHandle,
        leg: LegSide,
        caller: LegConfig,
        tap: TapConfig,
    ) -> Result<TapEngine, MediaError> {
        let (pipeline, mut engine) = Pipeline::ai_tap(now, tap_pipeline_config(now), caller, tap)?;
        if let Some(w) = self.workers.get(handle.worker) {
            let (tx, waker, id) = (w.tx.clone(), w.waker.clone(), handle.id);
            engine.set_kick(Box::new(move || {
                // A full queue only loses the head start: the worker's own
                // tick plays the turn within a ptime.
                if tx.try_send(Command::TapKick { id }).is_ok() {
                    waker.wake();
                }
            }));
        }
        self.command(
            handle.worker,
            Command::Tap {
                id: handle.id,
                leg,
                pipeline: Box::new(pipeline),
            },
        )?;
        Ok(engine)
    }

    /// A tapped leg renegotiated (a re-INVITE changed its codec): the tap
    /// decodes and encodes `caller`'s codec from now on; the AI side's
    /// handle is unchanged.
    pub fn retap(&mut self, handle: MediaHandle, caller: LegConfig) -> Result<(), MediaError> {
        self.command(
            handle.worker,
            Command::Retap {
                id: handle.id,
                caller: Box::new(caller),
            },
        )
    }

    /// Bridges a call's two legs through a transcoding pipeline (their
    /// codecs differ), or with `None` returns them to the plain relay.
    pub fn set_bridge(
        &mut self,
        now: Instant,
        handle: MediaHandle,
        legs: Option<(LegConfig, LegConfig)>,
    ) -> Result<(), MediaError> {
        let pipeline = match legs {
            Some((a, b)) => Some(Box::new(Pipeline::bridge(
                now,
                bridge_pipeline_config(now),
                a,
                b,
            )?)),
            None => None,
        };
        self.command(
            handle.worker,
            Command::Bridge {
                id: handle.id,
                pipeline,
            },
        )
    }

    /// Records a call from now on into `<record dir>/<name>.wav`: left
    /// channel what leg A's far end says, right leg B's (for an AI call,
    /// the AI's audio is the other channel). Returns the file's path.
    pub fn record(&mut self, handle: MediaHandle, name: &str) -> Result<PathBuf, MediaError> {
        let Some((_, dir)) = &self.recorder else {
            return Err(MediaError::NotRecording);
        };
        let path = dir.join(format!("{name}.wav"));
        let (feed, source) = record::ring(Instant::now());
        self.command(
            handle.worker,
            Command::Record {
                id: handle.id,
                feed: Box::new(feed),
            },
        )?;
        match &self.recorder {
            Some((r, _)) if r.add(source, path.clone()) => Ok(path),
            _ => Err(MediaError::Busy),
        }
    }

    /// Gives back the port of a leg whose sockets its worker could not
    /// take in ([`MediaEvent::LegFailed`]): they are gone, and the call
    /// may get that leg again with [`Self::add_leg`]. Also used for every
    /// port a closed call held.
    ///
    /// A port returns to the shard it came from (a leg added to a call
    /// may have taken it from another worker's).
    pub fn release_port(&mut self, port: u16) {
        if let Some(w) = self.workers.iter_mut().find(|w| w.pool.covers(port)) {
            w.pool.release(port);
        }
    }

    /// Closes a call's media; its ports (those its legs have) return to
    /// the pool (a port whose socket the worker has not closed yet is
    /// skipped by a later `open`).
    pub fn close(&mut self, handle: MediaHandle, ports: impl IntoIterator<Item = u16>) {
        if self
            .command(handle.worker, Command::Close { id: handle.id })
            .is_err()
        {
            tracing::warn!(
                worker = handle.worker,
                "media close not queued; the worker reports the call when it goes quiet"
            );
        }
        if let Some(w) = self.workers.get_mut(handle.worker) {
            w.calls = w.calls.saturating_sub(1);
        }
        for p in ports {
            self.release_port(p);
        }
    }

    fn command(&mut self, worker: usize, cmd: Command) -> Result<(), MediaError> {
        let w = self.workers.get_mut(worker).ok_or(MediaError::Stopped)?;
        match w.tx.try_send(cmd) {
            Ok(()) => {
                w.kick();
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(MediaError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(MediaError::Stopped),
        }
    }

    /// The next event from any worker.
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.try_recv().ok()
    }
}

impl Drop for MediaEngine {
    fn drop(&mut self) {
        for w in &mut self.workers {
            // A full queue still ends: the worker stops when the sender
            // is gone.
            let _ = w.tx.try_send(Command::Stop);
            w.waker.wake();
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Settings of an AI-tap pipeline. The worker watches the call's
/// inactivity itself (`CODEB_RTP_TIMEOUT`), so the pipeline's own
/// timeout is only a far backstop.
pub fn tap_pipeline_config(now: Instant) -> PipelineConfig {
    PipelineConfig {
        inactivity_timeout: Duration::from_secs(24 * 3600),
        wallclock: Some((now, std::time::SystemTime::now())),
        ..PipelineConfig::default()
    }
}

/// Settings of a transcoding bridge (inactivity is the worker's, as for
/// taps).
pub fn bridge_pipeline_config(now: Instant) -> PipelineConfig {
    tap_pipeline_config(now)
}

/// An RTP socket and the RTCP socket on the port above it.
struct Pair {
    rtp: UdpSocket,
    rtcp: UdpSocket,
}

impl Pair {
    fn bind(ip: IpAddr, port: u16) -> io::Result<Pair> {
        let rtp = UdpSocket::bind(SocketAddr::new(ip, port))?;
        let rtcp = UdpSocket::bind(SocketAddr::new(ip, port.wrapping_add(1)))?;
        // Bursts of a few hundred calls' packets must not overflow the
        // default buffer between two loop turns.
        let _ = codeb_io::set_recv_buffer(&rtp, 256 * 1024);
        // Media never needs local fragmentation, and without it each send
        // skips the kernel's shared IP ID generator (a measured cost per
        // relayed packet; see `set_no_fragment`). Failing that, the
        // default stands.
        for s in [&rtp, &rtcp] {
            let _ = codeb_io::set_no_fragment(s);
        }
        Ok(Pair { rtp, rtcp })
    }
}

#[cfg(test)]
mod tests;
