//! The control link: the switch's side of the gRPC contract
//! (`codeb.switch.v1.Switch`), served by a small tokio runtime on threads
//! of its own, and the event journal.
//!
//! The SIP thread owns all call state and never waits on the runtime:
//! - commands (PlaceCall, Hangup, ApplyConfig) cross to it through a
//!   bounded queue plus a reactor wake-up (the reactor's eventfd
//!   [`codeb_io::Waker`]); it answers each through a oneshot channel. A
//!   full queue is answered UNAVAILABLE at once, never waited on.
//! - events leave it as small structs through a bounded queue to the
//!   journal thread, which numbers, encodes and writes them (one fsync per
//!   batch) and only then streams them to subscribers. If that queue is
//!   momentarily full the SIP thread keeps the events (up to
//!   [`MAX_PENDING_EVENTS`]) and retries on its next turn.
//! - figures for Stats (active calls, config version, its own CPU load)
//!   are published as atomics.

pub mod cert;
pub mod grpc;
pub mod journal;
pub mod snapshot;
pub mod tls;

use std::collections::{HashMap, VecDeque};
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use codeb_proto::v1::{self, event};
use tokio::sync::{broadcast, oneshot};

use crate::config::SwitchConfig;
use crate::sip::Core;
use crate::sip::calls::{
    CallEvent, CallEventKind, Originate, OriginateError, Placed, TransferError, TransferTarget,
    UnknownCall,
};

/// Commands waiting for the SIP thread, at most.
pub const COMMAND_QUEUE: usize = 1024;
/// Events waiting for the journal thread, at most.
const EVENT_QUEUE: usize = 8192;
/// Events the SIP thread holds while the journal's queue is full, at most.
pub const MAX_PENDING_EVENTS: usize = 1 << 20;
/// Commands the SIP thread runs per loop turn (the rest wait a turn, so
/// signalling is never starved by a burst of commands).
const COMMANDS_PER_TURN: usize = 256;
/// Events the journal writes per batch (one fsync each).
const JOURNAL_BATCH: usize = 512;
/// How long the journal gathers events after the first of a batch before
/// writing them: at a few hundred events a second (AI calls' turns and
/// usage) each used to get a write, an fdatasync and a wake-up of the
/// gRPC streams of its own. A batch costs the journal ~130 µs of CPU
/// whatever its size (300 AI calls: 5 ms gave ~100 batches a second,
/// 4% of the switch's CPU), and 20 ms is small beside what a subscriber
/// does with an event (a webhook, a database row). The journal sleeps
/// through it rather than waiting on the queue, so the events that come
/// meanwhile wake nobody.
const JOURNAL_GATHER: Duration = Duration::from_millis(20);

/// How long a stopping switch waits for a connected control plane to
/// acknowledge its last events (the calls it ended) before it exits.
pub const ACK_WAIT: Duration = Duration::from_secs(5);

/// How long a stopping switch lets its gRPC connections finish (their
/// event streams' closing statuses, a request in flight).
const SERVER_STOP: Duration = Duration::from_secs(2);

/// A request for the SIP thread.
#[derive(Debug)]
pub enum Command {
    Place(
        Box<Originate>,
        oneshot::Sender<Result<Placed, OriginateError>>,
    ),
    Hangup {
        call_id: String,
        outcome: String,
        attempt: u32,
        /// `true`: the call was already ending.
        reply: oneshot::Sender<Result<bool, UnknownCall>>,
    },
    Transfer {
        call_id: String,
        target: TransferTarget,
        reply: oneshot::Sender<Result<(), TransferError>>,
    },
    Apply {
        config: Box<SwitchConfig>,
        addrs: HashMap<String, SocketAddr>,
        /// Answered with whether it was applied (false: not newer).
        reply: oneshot::Sender<bool>,
    },
}

/// What Stats reports, kept current by the SIP and journal threads.
#[derive(Debug)]
pub struct NodeState {
    pub node_id: String,
    /// Random per process start (see the proto's `StatsReply`).
    pub instance_id: String,
    pub journal_id: String,
    pub max_calls: u32,
    pub started: Instant,
    config_version: AtomicU64,
    active_calls: AtomicU32,
    /// f32 bits of the SIP thread's busy fraction.
    load: AtomicU32,
    draining: AtomicBool,
    /// A stop signal came: Stats says draining (so no new call is sent
    /// here) while the calls end and commands such as Hangup still run.
    stopping: AtomicBool,
    last_seq: AtomicU64,
    journal_full: AtomicBool,
    /// Events the journal thread has taken from the SIP thread (written,
    /// or lost to a failed write): at shutdown, equal to what the SIP
    /// side forwarded once nothing is on its way to the journal.
    journaled: AtomicU64,
    /// When the SIP thread last published its figures (about once a
    /// second), in ms since `started`.
    beat_ms: AtomicU64,
}

/// A SIP thread silent this long is taken as hung: Stats fails, so the
/// control plane sends no call here and, if it stays so, ends the calls
/// the node carries as lost (instead of leaving them in flight).
pub const SIP_STALL: Duration = Duration::from_secs(10);

impl NodeState {
    pub fn config_version(&self) -> u64 {
        self.config_version.load(Ordering::Relaxed)
    }

    pub fn active_calls(&self) -> u32 {
        self.active_calls.load(Ordering::Relaxed)
    }

    pub fn load(&self) -> f32 {
        f32::from_bits(self.load.load(Ordering::Relaxed))
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the switch is stopping (a signal came) or has stopped
    /// taking commands.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed) || self.draining()
    }

    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Relaxed)
    }

    /// How long the SIP thread has been silent, if longer than
    /// [`SIP_STALL`]: not before its first turn (the start binds its
    /// addresses meanwhile), nor once it is stopping (it may have left its
    /// loop, its ends journaled, while the link waits for acknowledgements).
    pub fn sip_stalled(&self, now: Instant) -> Option<Duration> {
        let beat_ms = self.beat_ms.load(Ordering::Relaxed);
        if beat_ms == 0 || self.stopping() {
            return None;
        }
        let beat = self.started + Duration::from_millis(beat_ms);
        let silent = now.saturating_duration_since(beat);
        (silent > SIP_STALL).then_some(silent)
    }

    pub fn journal_full(&self) -> bool {
        self.journal_full.load(Ordering::Relaxed)
    }

    /// The control link's gauges, in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let gauges: [(&str, &str, String); 4] = [
            (
                "codeb_journal_last_seq",
                "Highest event seq written to the journal",
                self.last_seq().to_string(),
            ),
            (
                "codeb_journal_full",
                "The event journal is full: new calls are refused",
                u8::from(self.journal_full()).to_string(),
            ),
            (
                "codeb_config_version",
                "Version of the running configuration",
                self.config_version().to_string(),
            ),
            (
                "codeb_sip_thread_load",
                "CPU busy fraction of the SIP thread over the last seconds",
                format!("{:.3}", self.load()),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
    }
}

/// The SIP thread's end of the link.
#[derive(Debug)]
pub struct SipSide {
    commands: Receiver<Command>,
    events: Option<SyncSender<CallEvent>>,
    pending: VecDeque<CallEvent>,
    state: Arc<NodeState>,
    /// Version of the last snapshot pushed (None: running on the file).
    pushed: Option<u64>,
    load: LoadMeter,
    /// Events handed to the journal thread.
    forwarded: u64,
}

impl SipSide {
    /// Runs queued commands against the core.
    pub fn run_commands(&mut self, core: &mut Core, now: Instant) {
        core.set_journal_full(self.state.journal_full());
        for _ in 0..COMMANDS_PER_TURN {
            let Ok(cmd) = self.commands.try_recv() else {
                return;
            };
            match cmd {
                // Whoever asked has stopped waiting (the control link's
                // reply wait ran out and said so): the call is not placed
                // behind its back; asked again, it is placed then.
                Command::Place(req, reply) if reply.is_closed() => {
                    tracing::warn!(call_id = %req.call_id, attempt = req.attempt,
                        "PlaceCall given up by the control link before the SIP thread took it; not placed");
                }
                Command::Place(req, reply) => {
                    let _ = reply.send(core.place_call(now, *req));
                }
                Command::Hangup {
                    call_id,
                    outcome,
                    attempt,
                    reply,
                } => {
                    let outcome = (!outcome.is_empty()).then_some(outcome.as_str());
                    let _ = reply.send(core.hangup_attempt(now, &call_id, outcome, attempt));
                }
                Command::Transfer {
                    call_id,
                    target,
                    reply,
                } => {
                    let _ = reply.send(core.transfer_call(now, &call_id, target));
                }
                Command::Apply {
                    config,
                    addrs,
                    reply,
                } => {
                    let version = config.version;
                    if self.pushed.is_some_and(|v| version <= v) {
                        let _ = reply.send(false);
                        continue;
                    }
                    core.apply_config(*config, addrs);
                    self.pushed = Some(version);
                    self.state.config_version.store(version, Ordering::Relaxed);
                    let _ = reply.send(true);
                }
            }
        }
    }

    /// Hands the core's call events to the journal thread.
    pub fn forward_events(&mut self, core: &mut Core) {
        while let Some(ev) = core.poll_call_event() {
            if self.pending.len() >= MAX_PENDING_EVENTS {
                // The journal thread has not taken events for a long while
                // (a hung disk): keep the SIP thread's memory bounded.
                tracing::error!(call_id = %ev.call_id, "event journal is not keeping up; event dropped");
                continue;
            }
            self.pending.push_back(ev);
        }
        let Some(tx) = &self.events else {
            return;
        };
        while let Some(ev) = self.pending.pop_front() {
            match tx.try_send(ev) {
                Ok(()) => self.forwarded += 1,
                Err(TrySendError::Full(ev)) => {
                    self.pending.push_front(ev);
                    return;
                }
                Err(TrySendError::Disconnected(ev)) => {
                    tracing::error!(call_id = %ev.call_id, "event journal thread is gone; event lost");
                }
            }
        }
    }

    /// Publishes the figures Stats reads; call about once a second (it
    /// samples the thread's CPU time).
    pub fn publish(&mut self, core: &Core, now: Instant) {
        let s = &self.state;
        let beat = now.saturating_duration_since(s.started).as_millis().max(1);
        s.beat_ms
            .store(u64::try_from(beat).unwrap_or(u64::MAX), Ordering::Relaxed);
        s.active_calls.store(
            u32::try_from(core.active_calls()).unwrap_or(u32::MAX),
            Ordering::Relaxed,
        );
        if self.pushed.is_none() {
            s.config_version
                .store(core.config_version(), Ordering::Relaxed);
        }
        if let Some(load) = self.load.sample(now) {
            s.load.store(load.to_bits(), Ordering::Relaxed);
        }
    }

    /// Whether a snapshot was pushed (SIGHUP then leaves the file alone).
    pub fn pushed(&self) -> bool {
        self.pushed.is_some()
    }

    pub fn state(&self) -> &Arc<NodeState> {
        &self.state
    }

    /// Sends what is still pending and closes the queue (at shutdown).
    pub fn close(&mut self, core: &mut Core) {
        self.forward_events(core);
        if let Some(tx) = self.events.take() {
            for ev in self.pending.drain(..) {
                if tx.send(ev).is_err() {
                    break;
                }
            }
        }
    }
}

/// The SIP thread's CPU time over wall time, averaged over the last five
/// one-second samples.
#[derive(Debug)]
struct LoadMeter {
    last: Option<(Instant, Duration)>,
    samples: VecDeque<f32>,
}

/// CPU time this thread has used.
#[allow(unsafe_code)]
fn thread_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a live local.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    if rc != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    ))
}

impl LoadMeter {
    fn new() -> LoadMeter {
        LoadMeter {
            last: None,
            samples: VecDeque::new(),
        }
    }

    fn sample(&mut self, now: Instant) -> Option<f32> {
        let cpu = thread_cpu_time()?;
        let Some((at, was)) = self.last else {
            self.last = Some((now, cpu));
            return None;
        };
        let wall = now.saturating_duration_since(at);
        if wall < Duration::from_millis(500) {
            return None;
        }
        self.last = Some((now, cpu));
        let busy = (cpu.saturating_sub(was).as_secs_f64() / wall.as_secs_f64()).clamp(0.0, 1.0);
        if self.samples.len() == 5 {
            self.samples.pop_front();
        }
        self.samples.push_back(busy as f32);
        Some(self.samples.iter().sum::<f32>() / self.samples.len() as f32)
    }
}

/// The control link's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub grpc_addr: SocketAddr,
    pub data_dir: PathBuf,
    /// None: a random id kept in `$CODEB_DATA_DIR/node_id`.
    pub node_id: Option<String>,
    pub journal: journal::Limits,
    pub max_calls: usize,
    /// Version of the snapshot the switch starts on, when it was pushed.
    pub pushed_version: Option<u64>,
    pub config_version: u64,
    /// `CODEB_SWITCH_TOKEN`: calls without it are refused (None: any).
    pub token: Option<String>,
    /// `CODEB_SWITCH_TLS_*`: the link is served over TLS (None:
    /// plaintext); SIGHUP reads its files again.
    pub tls: Option<Arc<tls::LinkTls>>,
}

/// The running link.
pub struct Link {
    pub sip: SipSide,
    pub local_addr: SocketAddr,
    runtime: tokio::runtime::Runtime,
    journal_thread: std::thread::JoinHandle<()>,
    shutdown: Option<oneshot::Sender<()>>,
    /// The gRPC server's task, which ends once its connections have.
    server: tokio::task::JoinHandle<()>,
    journal: Arc<Mutex<journal::Journal>>,
    /// Permits of the event streams (one taken per connected subscriber).
    subscribers: Arc<tokio::sync::Semaphore>,
    /// Set at shutdown: the event streams end.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

fn node_id(data_dir: &Path, given: Option<String>) -> anyhow::Result<String> {
    if let Some(id) = given.filter(|s| !s.is_empty()) {
        anyhow::ensure!(
            id.len() <= 64 && id.bytes().all(|b| b.is_ascii_graphic()),
            "CODEB_NODE_ID: up to 64 printable characters"
        );
        return Ok(id);
    }
    let p = data_dir.join("node_id");
    if let Ok(s) = std::fs::read_to_string(&p)
        && !s.trim().is_empty()
        && s.trim().len() <= 64
    {
        return Ok(s.trim().to_owned());
    }
    let id = format!("sw-{}", random_hex()?);
    std::fs::write(&p, &id)?;
    Ok(id)
}

/// 16 hex digits from the kernel's random source.
fn random_hex() -> std::io::Result<String> {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The protobuf form of a call event (journal_id and seq set on writing);
/// `instance` is this process's (see the proto's `StatsReply`).
fn to_proto(ev: CallEvent, instance: &str) -> v1::Event {
    let kind = match ev.kind {
        CallEventKind::Inbound {
            did,
            from_number,
            virtual_number,
            trunk_id,
        } => event::Kind::Inbound(v1::InboundCall {
            did,
            from_number,
            virtual_number,
            trunk_id,
            instance_id: instance.to_owned(),
        }),
        CallEventKind::Answered {
            trunk_id,
            answer_ms,
            inbound,
        } => event::Kind::Answered(v1::CallAnswered {
            direction: if inbound { "inbound" } else { "outbound" }.into(),
            trunk_id,
            answer_ms,
        }),
        CallEventKind::Started => event::Kind::Started(v1::CallStarted {}),
        CallEventKind::Turn {
            role,
            text,
            at_ms,
            interrupted,
        } => event::Kind::Turn(v1::TranscriptTurn {
            role: role.as_str().into(),
            text,
            at_ms,
            interrupted,
        }),
        CallEventKind::Usage {
            input,
            output,
            estimated,
        } => event::Kind::Usage(v1::Usage {
            input_tokens: input,
            output_tokens: output,
            estimated,
        }),
        CallEventKind::Transferred {
            to_user,
            to_phone,
            trunk_id,
            transfer_type,
        } => event::Kind::Transferred(v1::CallTransferred {
            to_user,
            to_phone,
            trunk_id,
            transfer_type,
        }),
        CallEventKind::Ended {
            outcome,
            error_detail,
            answered,
            answered_at_unix_ms,
            talk_seconds,
            duration_seconds,
            sip_status,
            input_turns,
            output_turns,
        } => event::Kind::Ended(v1::CallEnded {
            outcome,
            error_detail,
            answered,
            answered_at_unix_ms,
            talk_seconds,
            duration_seconds,
            sip_status: u32::from(sip_status),
            input_turns,
            output_turns,
        }),
    };
    v1::Event {
        seq: 0,
        journal_id: String::new(),
        at_unix_ms: ev.at_unix_ms,
        call_id: ev.call_id,
        attempt: ev.attempt,
        tenant: ev.tenant,
        kind: Some(kind),
    }
}

/// A failed journal write is tried again this many times, this far apart.
const JOURNAL_WRITE_TRIES: u32 = 5;
const JOURNAL_RETRY_WAIT: Duration = Duration::from_millis(200);

/// Writes events as they come, one durable batch at a time, then
/// streams them.
fn journal_loop(
    rx: Receiver<CallEvent>,
    journal: Arc<Mutex<journal::Journal>>,
    live: broadcast::Sender<Arc<v1::Event>>,
    state: Arc<NodeState>,
) {
    // A batch that used up its tries leaves the disk taken as failing:
    // later batches get one try each until a write succeeds again, so a
    // backlog (at shutdown, say) is not held up a second per batch.
    let mut failing = false;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![to_proto(first, &state.instance_id)];
        // Disconnected: the SIP thread is done; what it sent is read and
        // this batch is the last.
        let take = |batch: &mut Vec<v1::Event>| {
            while batch.len() < JOURNAL_BATCH {
                match rx.try_recv() {
                    Ok(ev) => batch.push(to_proto(ev, &state.instance_id)),
                    Err(_) => break,
                }
            }
        };
        take(&mut batch);
        // A backlog goes at once, in full batches.
        if batch.len() < JOURNAL_BATCH {
            std::thread::sleep(JOURNAL_GATHER);
            take(&mut batch);
        }
        let taken = batch.len() as u64;
        let mut j = journal.lock().unwrap_or_else(|p| p.into_inner());
        // A failed write (a full disk) is tried again a few times, the
        // journal's lock let go in between; then the batch is lost.
        let mut tries = 0;
        let written = loop {
            match j.append(batch) {
                Ok(w) => {
                    failing = false;
                    break w;
                }
                Err(failed) if tries < JOURNAL_WRITE_TRIES && !failing => {
                    tries += 1;
                    tracing::error!(error = %failed.error, events = failed.events.len(), tries,
                        "event journal write failed; trying again");
                    batch = failed.events;
                    drop(j);
                    std::thread::sleep(JOURNAL_RETRY_WAIT);
                    j = journal.lock().unwrap_or_else(|p| p.into_inner());
                }
                Err(failed) => {
                    failing = true;
                    j.dropped += failed.events.len() as u64;
                    tracing::error!(error = %failed.error, events = failed.events.len(),
                        "event journal write failed again; the events of this batch are lost");
                    break Vec::new();
                }
            }
        };
        state.last_seq.store(j.last_seq(), Ordering::Relaxed);
        // After `last_seq`: whoever sees every event taken sees them written.
        state.journaled.fetch_add(taken, Ordering::Release);
        let full = j.is_full();
        if full && !state.journal_full.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                retained = j.retained(),
                bytes = j.retained_bytes(),
                "event journal is full: new calls are refused until the control plane acknowledges events"
            );
        }
        drop(j);
        for ev in written {
            // No subscriber is fine: the events are on disk.
            let _ = live.send(Arc::new(ev));
        }
    }
}

/// Whether a stopping switch is done waiting for its last events to be
/// acknowledged: every event is journaled and acknowledged, no control
/// plane is connected to hear them, a second stop signal came
/// (`stop_now`), or `until` passed. It logs why, once, when it is done.
fn ack_wait_over(
    journal: &Mutex<journal::Journal>,
    subscribers: &tokio::sync::Semaphore,
    journaled: bool,
    now: Instant,
    until: Instant,
    stop_now: bool,
) -> bool {
    if stop_now {
        tracing::info!(
            "stopping at once (a second signal); unacknowledged events wait in the journal"
        );
        return true;
    }
    let (acked, last) = {
        let j = journal.lock().unwrap_or_else(|p| p.into_inner());
        (j.acked(), j.last_seq())
    };
    if journaled && acked >= last {
        return true;
    }
    if subscribers.available_permits() >= grpc::MAX_SUBSCRIBERS {
        // `unacknowledged` counts journaled events; with
        // `all_journaled=false` some are still on their way to it.
        tracing::info!(
            unacknowledged = last - acked,
            all_journaled = journaled,
            "no control plane connected at shutdown: its last events wait in the journal"
        );
        return true;
    }
    if now >= until {
        tracing::warn!(
            unacknowledged = last - acked,
            all_journaled = journaled,
            "the control plane did not acknowledge the last events in time; they wait in the journal"
        );
        return true;
    }
    false
}

/// Opens the journal, binds the gRPC address and starts serving.
pub fn start(settings: Settings, waker: codeb_io::Waker) -> anyhow::Result<Link> {
    use anyhow::Context as _;
    let node_id = node_id(&settings.data_dir, settings.node_id.clone())?;
    let journal = journal::Journal::open(&settings.data_dir.join("events"), settings.journal)
        .context("opening the event journal")?;
    let state = Arc::new(NodeState {
        node_id,
        instance_id: random_hex().context("a random instance id")?,
        journal_id: journal.id().to_owned(),
        max_calls: u32::try_from(settings.max_calls).unwrap_or(u32::MAX),
        started: Instant::now(),
        config_version: AtomicU64::new(settings.config_version),
        active_calls: AtomicU32::new(0),
        load: AtomicU32::new(0f32.to_bits()),
        draining: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
        last_seq: AtomicU64::new(journal.last_seq()),
        journal_full: AtomicBool::new(journal.is_full()),
        beat_ms: AtomicU64::new(0),
        journaled: AtomicU64::new(0),
    });
    tracing::info!(
        journal_id = %state.journal_id,
        last_seq = journal.last_seq(),
        acked = journal.acked(),
        retained = journal.retained(),
        "event journal open"
    );
    let journal = Arc::new(Mutex::new(journal));
    let (live, _) = broadcast::channel(4096);
    let (cmd_tx, cmd_rx) = mpsc::sync_channel(COMMAND_QUEUE);
    let (ev_tx, ev_rx) = mpsc::sync_channel(EVENT_QUEUE);
    let listener = crate::rebind::bind_retrying("gRPC", crate::rebind::WAIT, || {
        std::net::TcpListener::bind(settings.grpc_addr)
    })
    .with_context(|| format!("binding gRPC {}", settings.grpc_addr))?;
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    let journal_thread = {
        let (journal, live, state) = (journal.clone(), live.clone(), state.clone());
        std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || journal_loop(ev_rx, journal, live, state))?
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("grpc")
        .enable_all()
        .build()?;
    let (stopping, stopping_rx) = tokio::sync::watch::channel(false);
    let service = grpc::Service::new(grpc::Shared {
        state: state.clone(),
        journal: journal.clone(),
        live,
        commands: cmd_tx,
        waker,
        data_dir: settings.data_dir.clone(),
        stopping: stopping_rx,
    });
    let subscribers = service.subscribers();
    let (stop_tx, stop_rx) = oneshot::channel();
    let listener = {
        let _guard = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    // `CODEB_SWITCH_TLS_CLIENT_CA`: callers must show a client certificate
    // it signed.
    let client_certs = settings.tls.as_ref().is_some_and(|t| t.client_certs());
    if !local_addr.ip().is_loopback() {
        if settings.token.is_none() && !client_certs {
            tracing::warn!(addr = %local_addr,
                "the gRPC control link takes any caller: set CODEB_SWITCH_TOKEN (here and on the control planes), or keep it on a network only they reach");
        }
        if settings.tls.is_none() {
            tracing::warn!(addr = %local_addr,
                "the gRPC control link is plaintext (its token and the calls' prompts and keys included): set CODEB_SWITCH_TLS_CERT and _KEY, or keep it on a network only the control planes reach");
        }
    }
    let tls = settings.tls.is_some();
    let server = runtime.spawn(grpc::serve(
        service,
        listener,
        stop_rx,
        grpc::Auth::new(settings.token.as_deref()),
        settings.tls.clone(),
    ));
    tracing::info!(addr = %local_addr, token = settings.token.is_some(), tls,
        client_certificates = client_certs, "gRPC control link listening");
    Ok(Link {
        sip: SipSide {
            commands: cmd_rx,
            events: Some(ev_tx),
            pending: VecDeque::new(),
            state,
            pushed: settings.pushed_version,
            load: LoadMeter::new(),
            forwarded: 0,
        },
        local_addr,
        runtime,
        journal_thread,
        shutdown: Some(stop_tx),
        server,
        journal,
        subscribers,
        stopping,
    })
}

impl Link {
    /// The switch is stopping and its calls' ends are reported: true once
    /// it need not wait longer for a connected control plane to acknowledge their
    /// ends (at most until `until`; `stop_now`: a second stop signal came).
    /// The caller keeps its loop turning meanwhile, so SIP is still
    /// answered (503 to new calls) and events are still forwarded.
    pub fn acknowledged(&self, now: Instant, until: Instant, stop_now: bool) -> bool {
        let journaled = self.sip.pending.is_empty()
            && self.sip.state.journaled.load(Ordering::Acquire) == self.sip.forwarded;
        ack_wait_over(
            &self.journal,
            &self.subscribers,
            journaled,
            now,
            until,
            stop_now,
        )
    }

    /// Stops serving: writes the last events, waits for the journal,
    /// closes the event streams with a status, and stops the gRPC server
    /// (`stop_now`: a second stop signal came, so its connections are not
    /// waited for).
    pub fn shutdown(mut self, core: &mut Core, stop_now: bool) {
        self.sip.state.set_draining();
        self.sip.close(core);
        let Link {
            sip,
            runtime,
            journal_thread,
            shutdown,
            server,
            stopping,
            ..
        } = self;
        // The journal thread writes (and streams) what is left, then stops.
        drop(sip);
        if journal_thread.join().is_err() {
            tracing::error!("event journal thread panicked");
        }
        // Each stream sends what it has not yet sent, then ends with
        // UNAVAILABLE, so the server's graceful stop has nothing to wait for.
        let _ = stopping.send(true);
        if let Some(tx) = shutdown {
            let _ = tx.send(());
        }
        // The server's graceful stop: the streams' statuses reach their
        // clients (dropping the runtime would cut them mid-stream).
        let wait = if stop_now {
            Duration::ZERO
        } else {
            SERVER_STOP
        };
        // The timer is made inside the runtime (it needs its clock).
        let drained = runtime.block_on(async move { tokio::time::timeout(wait, server).await });
        if drained.is_err() && !stop_now {
            tracing::warn!(
                "gRPC connections still open {SERVER_STOP:?} after the stop; closing them"
            );
        }
        runtime.shutdown_timeout(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> NodeState {
        NodeState {
            node_id: "n".into(),
            instance_id: "i".into(),
            journal_id: "j".into(),
            max_calls: 1,
            started: Instant::now(),
            config_version: AtomicU64::new(0),
            active_calls: AtomicU32::new(0),
            load: AtomicU32::new(0),
            draining: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            last_seq: AtomicU64::new(0),
            journal_full: AtomicBool::new(false),
            journaled: AtomicU64::new(0),
            beat_ms: AtomicU64::new(0),
        }
    }

    /// A disk that fails every write costs the first batch its retries and
    /// each later one a single try: a backlog (at shutdown) is dropped and
    /// counted in about a second, not a second per batch.
    #[test]
    fn a_failing_disk_costs_one_round_of_retries_not_one_per_batch() {
        let dir = tempfile::tempdir().unwrap();
        let limits = journal::Limits {
            max_events: 1_000_000,
            max_bytes: 1 << 30,
        };
        let mut j = journal::Journal::open(dir.path(), limits).unwrap();
        j.fail_every_write = true;
        let j = Arc::new(Mutex::new(j));
        let n = JOURNAL_BATCH * 4;
        let (tx, rx) = mpsc::sync_channel(n);
        for k in 0..n {
            tx.send(crate::sip::calls::CallEvent {
                at_unix_ms: 1,
                call_id: format!("oac-{k}"),
                attempt: 1,
                tenant: "t".into(),
                kind: crate::sip::calls::CallEventKind::Started,
            })
            .unwrap();
        }
        drop(tx);
        let (live, _) = broadcast::channel(16);
        let t0 = Instant::now();
        journal_loop(rx, j.clone(), live, Arc::new(state()));
        let took = t0.elapsed();
        assert!(took < Duration::from_millis(2500), "{took:?}");
        assert_eq!(j.lock().unwrap().dropped, n as u64);
    }

    /// Stats fails once the SIP thread has not published for SIP_STALL.
    #[test]
    fn a_silent_sip_thread_is_stalled() {
        let s = state();
        let at = |ms: u64| s.started + Duration::from_millis(ms);
        // Not before its first turn.
        assert_eq!(s.sip_stalled(at(60_000)), None);
        s.beat_ms.store(5_000, Ordering::Relaxed);
        assert_eq!(s.sip_stalled(at(15_000)), None);
        assert_eq!(
            s.sip_stalled(at(16_000)),
            Some(Duration::from_millis(11_000))
        );
        // Nor once it is stopping.
        s.set_stopping();
        assert_eq!(s.sip_stalled(at(16_000)), None);
    }
}
