//! The session: a sans-IO [`Engine`] per vendor, driven by one task that
//! owns the WebSocket.
//!
//! Drain contract of an [`Engine`]: every call may push frames to send (`out`)
//! and events to report (`events`); the driver sends the frames in order,
//! then forwards the events. `EngineEvent::Usage` from an engine is a
//! per-report increment; the driver sums it into the call's [`Usage`] and
//! forwards the running total. An engine never reads the clock or touches a
//! socket: reconnects happen when it returns [`Step::Reconnect`].

use std::future::Future;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use url::Url;

use crate::config::{AudioFormat, Provider, SessionConfig};
use crate::error::EngineError;
use crate::event::{EngineEvent, Usage};
use crate::transport::{self, Client, Outbox};
use crate::wakes::WakeSet;

/// Commands queued to a session (about 10 s of 20 ms audio frames).
const COMMAND_QUEUE: usize = 512;
/// Events queued to the call before the driver waits for it.
const EVENT_QUEUE: usize = 1024;
/// Largest audio chunk accepted in one command.
pub const MAX_AUDIO_CHUNK: usize = 256 * 1024;
/// Longest text or tool output accepted in one command.
pub const MAX_TEXT: usize = 64 * 1024;
/// Longest a write to the vendor may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts to re-establish a dropped or retiring connection.
const RECONNECT_ATTEMPTS: u32 = 3;
/// Frames written to the vendor in one go, at most, when commands queued
/// up (20 ms audio frames are under 1 KiB each).
const MAX_BATCH: usize = 32;

/// What the call asks of the session.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Caller audio in the session's input format.
    Audio(Bytes),
    /// A user text turn.
    Text(String),
    /// The result of a tool call.
    ToolResult {
        /// The call's id.
        call_id: String,
        /// The function name.
        name: String,
        /// The result (a JSON object).
        output: Value,
    },
    /// Barge-in bookkeeping: the AI audio actually played of the current
    /// item, in ms (OpenAI `conversation.item.truncate`; Gemini needs none).
    Truncate {
        /// Milliseconds played.
        played_ms: u32,
    },
    /// End the session.
    Close,
}

/// What the driver does after an engine handled a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Keep going.
    Continue,
    /// Open a new connection now (the engine has what it needs to resume).
    Reconnect,
    /// End the session.
    Close {
        /// Close code seen, if any.
        code: Option<u16>,
        /// Why, if it was not a normal end.
        error: Option<EngineError>,
    },
}

/// Caller audio the session's driver reads itself, where it waits for the
/// vendor's frames and the call's commands: a frame goes from its source
/// to the socket in one task, instead of a hop through
/// [`Session::try_send_audio`]'s queue and a second task per frame.
pub trait AudioInput: Send + 'static {
    /// Appends the caller audio waiting, in `format` (the session's input
    /// format), to `out` (empty on entry): `Ready(true)` when some was
    /// appended, `Ready(false)` once the input has ended (it is not polled
    /// again), `Pending` when there is none yet (`cx` is woken when there
    /// is).
    fn poll_audio(
        &mut self,
        cx: &mut Context<'_>,
        format: AudioFormat,
        out: &mut Vec<u8>,
    ) -> Poll<bool>;
}

/// Caller audio read from an [`AudioInput`] while a resumed connection
/// opens, sent once it is up; beyond this much the newest is dropped.
const MAX_BACKLOG_BYTES: usize = 1 << 20;

/// Where and how to open a connection: URL and extra request headers.
pub type Target = (Url, Vec<(&'static str, String)>);

/// A vendor protocol, sans IO.
pub trait Engine: Send + Sync + 'static {
    /// The vendor.
    fn provider(&self) -> Provider;
    /// The format caller audio must be in.
    fn input_format(&self) -> AudioFormat;
    /// URL and extra headers of the next connection (the key goes where the
    /// vendor wants it: Gemini `?key=`, OpenAI `Authorization: Bearer`).
    fn target(&self) -> Result<Target, EngineError>;
    /// A connection opened: frames to send first (setup / session.update).
    fn on_open(&mut self, out: &mut Outbox) -> Result<(), EngineError>;
    /// A command from the call.
    fn on_command(&mut self, cmd: Command, out: &mut Outbox) -> Result<(), EngineError>;
    /// Caller audio in the input format (what [`Command::Audio`] carries,
    /// without the copy into a `Bytes`).
    fn on_audio(&mut self, audio: &[u8], out: &mut Outbox) -> Result<(), EngineError> {
        self.on_command(Command::Audio(Bytes::copy_from_slice(audio)), out)
    }
    /// A text or binary frame from the vendor (already UTF-8).
    fn on_message(
        &mut self,
        text: &str,
        events: &mut Vec<EngineEvent>,
        out: &mut Outbox,
    ) -> Result<Step, EngineError>;
    /// The connection ended (close frame, or `None` if it just dropped).
    fn on_close(&mut self, code: Option<u16>, reason: &str, events: &mut Vec<EngineEvent>) -> Step;
}

/// Handle to a live session; cheap to clone. Dropping every handle ends
/// the session.
#[derive(Debug, Clone)]
pub struct Session {
    tx: mpsc::Sender<Command>,
    provider: Provider,
    input_format: AudioFormat,
}

impl Session {
    /// The vendor in use.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The format [`Session::send_audio`] expects.
    pub fn input_format(&self) -> AudioFormat {
        self.input_format
    }

    /// Queues caller audio without waiting: `Busy` if the queue is full (the
    /// switch drops the frame rather than stall its media worker).
    pub fn try_send_audio(&self, data: Bytes) -> Result<(), EngineError> {
        self.check_audio(&data)?;
        self.tx.try_send(Command::Audio(data)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => EngineError::Busy,
            mpsc::error::TrySendError::Closed(_) => EngineError::Closed,
        })
    }

    /// Queues caller audio, waiting for room.
    pub async fn send_audio(&self, data: Bytes) -> Result<(), EngineError> {
        self.check_audio(&data)?;
        self.send(Command::Audio(data)).await
    }

    /// Sends a user text turn.
    pub async fn send_text(&self, text: impl Into<String>) -> Result<(), EngineError> {
        let text = text.into();
        if text.len() > MAX_TEXT {
            return Err(EngineError::Invalid("text too long"));
        }
        self.send(Command::Text(text)).await
    }

    /// Answers a [`EngineEvent::ToolCall`].
    pub async fn tool_result(
        &self,
        call_id: impl Into<String>,
        name: impl Into<String>,
        output: Value,
    ) -> Result<(), EngineError> {
        if output.to_string().len() > MAX_TEXT {
            return Err(EngineError::Invalid("tool output too long"));
        }
        self.send(Command::ToolResult {
            call_id: call_id.into(),
            name: name.into(),
            output,
        })
        .await
    }

    /// Reports how much of the interrupted AI audio was played.
    pub async fn truncate(&self, played_ms: u32) -> Result<(), EngineError> {
        self.send(Command::Truncate { played_ms }).await
    }

    /// Ends the session; [`EngineEvent::Closed`] follows.
    pub async fn close(&self) -> Result<(), EngineError> {
        self.send(Command::Close).await
    }

    fn check_audio(&self, data: &[u8]) -> Result<(), EngineError> {
        if data.len() > MAX_AUDIO_CHUNK {
            return Err(EngineError::Invalid("audio chunk too large"));
        }
        if !data
            .len()
            .is_multiple_of(self.input_format.bytes_per_sample() as usize)
        {
            return Err(EngineError::Invalid("audio chunk is not whole samples"));
        }
        Ok(())
    }

    async fn send(&self, cmd: Command) -> Result<(), EngineError> {
        self.tx.send(cmd).await.map_err(|_| EngineError::Closed)
    }
}

/// Starts a session with the engine `cfg.model` names: connects, sets up,
/// waits until the vendor is ready, then hands back the handle and the
/// event stream (its first event is [`EngineEvent::Ready`]).
pub async fn connect(
    cfg: SessionConfig,
) -> Result<(Session, mpsc::Receiver<EngineEvent>), EngineError> {
    start(
        engine_for(&cfg),
        cfg.tls.clone(),
        (cfg.connect_timeout, cfg.idle_ping),
        None,
    )
    .await
}

/// [`connect`], with the caller audio read from `input` by the session
/// itself (the handle's audio calls still work beside it).
pub async fn connect_with_input(
    cfg: SessionConfig,
    input: Box<dyn AudioInput>,
) -> Result<(Session, mpsc::Receiver<EngineEvent>), EngineError> {
    start(
        engine_for(&cfg),
        cfg.tls.clone(),
        (cfg.connect_timeout, cfg.idle_ping),
        Some(input),
    )
    .await
}

/// The engine `cfg.model` names.
fn engine_for(cfg: &SessionConfig) -> Box<dyn Engine> {
    match cfg.model.provider {
        Provider::Gemini => Box::new(crate::gemini::GeminiEngine::new(cfg)),
        Provider::OpenAi => Box::new(crate::openai::OpenAiEngine::new(cfg)),
    }
}

/// Starts a session on any [`Engine`] (what [`connect`] does after picking
/// one), reading caller audio from `input` if given; `timing`: the bound
/// on connecting, and [`SessionConfig::idle_ping`].
pub async fn start(
    mut engine: Box<dyn Engine>,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    timing: (Duration, Duration),
    input: Option<Box<dyn AudioInput>>,
) -> Result<(Session, mpsc::Receiver<EngineEvent>), EngineError> {
    let (connect_timeout, idle_ping) = timing;
    let mut usage = Usage::default();
    let mut early = Vec::new();
    let link = tokio::time::timeout(
        connect_timeout,
        open(engine.as_mut(), tls.as_ref(), &mut early, &mut usage),
    )
    .await
    .map_err(|_| EngineError::Timeout("session setup"))??;
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    let session = Session {
        tx,
        provider: engine.provider(),
        input_format: engine.input_format(),
    };
    let driver = Driver {
        engine,
        tls,
        connect_timeout,
        usage,
        ev_tx,
        cmd_rx: rx,
        input,
        audio: Vec::new(),
        backlog: Vec::new(),
        wakes: WakeSet::new(SOURCES),
        first: 0,
        resumed: std::collections::VecDeque::new(),
        idle_ping,
        last_heard: std::time::Instant::now(),
        pinged: false,
    };
    tokio::spawn(driver.run(link, early));
    Ok((session, ev_rx))
}

/// Opens a connection and runs it until the engine reports `Ready` or
/// `Resumed`; events seen on the way are appended to `events`.
async fn open(
    engine: &mut dyn Engine,
    tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
    events: &mut Vec<EngineEvent>,
    usage: &mut Usage,
) -> Result<Client, EngineError> {
    let (url, headers) = engine.target()?;
    let mut link = Client::new(transport::connect(&url, &headers, tls).await?);
    engine.on_open(link.outbox())?;
    send_all(&mut link).await?;
    loop {
        let mut evs = Vec::new();
        let step = match link.next().await {
            Some(Ok(Message::Text(t))) => engine.on_message(t.as_str(), &mut evs, link.outbox())?,
            Some(Ok(Message::Binary(b))) => {
                let t = std::str::from_utf8(&b)
                    .map_err(|_| EngineError::Protocol("binary frame is not UTF-8 JSON".into()))?;
                engine.on_message(t, &mut evs, link.outbox())?
            }
            Some(Ok(Message::Close(f))) => {
                let (code, reason) = close_parts(f.as_ref());
                engine.on_close(code, &reason, &mut evs)
            }
            Some(Ok(_)) => Step::Continue,
            Some(Err(e)) => engine.on_close(None, &e.to_string(), &mut evs),
            None => engine.on_close(None, "connection dropped during setup", &mut evs),
        };
        send_all(&mut link).await?;
        let ready = evs
            .iter()
            .any(|e| matches!(e, EngineEvent::Ready | EngineEvent::Resumed));
        account(usage, &mut evs);
        events.append(&mut evs);
        match step {
            Step::Continue if ready => return Ok(link),
            Step::Continue => {}
            Step::Reconnect => {
                return Err(EngineError::Protocol(
                    "engine asked to reconnect during setup".into(),
                ));
            }
            Step::Close { code, error } => {
                return Err(error.unwrap_or(EngineError::Rejected {
                    code: code.unwrap_or(1006),
                    kind: None,
                    message: "closed during setup".into(),
                }));
            }
        }
    }
}

fn close_parts(f: Option<&CloseFrame>) -> (Option<u16>, String) {
    match f {
        Some(f) => (Some(u16::from(f.code)), f.reason.as_str().to_owned()),
        None => (None, String::new()),
    }
}

/// Sums usage increments into the running total and rewrites them to it;
/// counts AI audio for the fallback estimate.
fn account(usage: &mut Usage, events: &mut [EngineEvent]) {
    for e in events.iter_mut() {
        match e {
            EngineEvent::Usage(inc) => {
                usage.add_report(inc.prompt_tokens, inc.response_tokens, inc.total_tokens);
                *inc = *usage;
            }
            EngineEvent::Audio { data, format } => {
                usage.audio_out_us = usage
                    .audio_out_us
                    .saturating_add(format.duration_us(data.len()));
            }
            _ => {}
        }
    }
}

/// Sends what `link`'s outbox holds, in order. A vendor that takes none
/// of it for [`WRITE_TIMEOUT`] counts as gone (a stalled socket must not
/// stall the call).
async fn send_all(link: &mut Client) -> Result<(), EngineError> {
    if link.outbox().is_empty() {
        return Ok(());
    }
    // Nearly every write completes at once: only one that has to wait
    // gets a timer (one per 20 ms frame per call otherwise).
    let first = std::future::poll_fn(|cx| Poll::Ready(link.poll_send(cx))).await;
    if let Poll::Ready(r) = first {
        return r;
    }
    tokio::time::timeout(WRITE_TIMEOUT, std::future::poll_fn(|cx| link.poll_send(cx)))
        .await
        .unwrap_or(Err(EngineError::Timeout("vendor stopped reading")))
}

/// Sends a close frame (bounded like any write); the socket is dropped after.
async fn close_ws(link: &mut Client, code: CloseCode, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    link.close(frame, WRITE_TIMEOUT).await;
}

struct Driver {
    engine: Box<dyn Engine>,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    connect_timeout: Duration,
    usage: Usage,
    ev_tx: mpsc::Sender<EngineEvent>,
    cmd_rx: mpsc::Receiver<Command>,
    /// Caller audio the driver reads itself (None: only commands, or the
    /// input ended).
    input: Option<Box<dyn AudioInput>>,
    /// What the input gave, reused.
    audio: Vec<u8>,
    /// Input read while a connection was being resumed.
    backlog: Vec<u8>,
    /// Which of the socket and the commands woke the task (the input is
    /// polled on every wake-up).
    wakes: WakeSet,
    /// The source polled first next time.
    first: usize,
    /// When the session last moved to a new connection (the latest
    /// [`MAX_RESUMES`]): a vendor that accepts each new connection and
    /// drops it again at once is given up on, not resumed for ever.
    resumed: std::collections::VecDeque<std::time::Instant>,
    /// The vendor watchdog ([`SessionConfig::idle_ping`]): when the
    /// connection last brought a frame, and whether it was pinged since.
    idle_ping: Duration,
    last_heard: std::time::Instant,
    pinged: bool,
}

/// Connection moves allowed within [`RESUME_WINDOW`] (Gemini retires a
/// connection every ten minutes or so; five a minute is a failing vendor).
const MAX_RESUMES: usize = 5;
const RESUME_WINDOW: Duration = Duration::from_secs(60);

/// Runs `fut` (a resumed connection opening) while still reading the
/// caller: what comes meanwhile is kept in `backlog` (up to
/// [`MAX_BACKLOG_BYTES`], whole samples) to be sent once it is up.
async fn keep_listening<T>(
    fut: impl Future<Output = T>,
    input: &mut Option<Box<dyn AudioInput>>,
    format: AudioFormat,
    audio: &mut Vec<u8>,
    backlog: &mut Vec<u8>,
) -> T {
    let whole = format.bytes_per_sample().max(1) as usize;
    let mut fut = std::pin::pin!(fut);
    loop {
        tokio::select! {
            r = &mut fut => return r,
            more = next_input(input, format, audio), if input.is_some() => {
                if more {
                    let room = MAX_BACKLOG_BYTES.saturating_sub(backlog.len());
                    let n = audio.len().min(room) / whole * whole;
                    backlog.extend_from_slice(&audio[..n]);
                }
            }
        }
    }
}

/// Polls `input` (if any) into `audio`: `Ready(true)` when audio came,
/// `Ready(false)` when the input ended (it is then dropped); `Pending`
/// without an input.
fn poll_input(
    input: &mut Option<Box<dyn AudioInput>>,
    cx: &mut Context<'_>,
    format: AudioFormat,
    audio: &mut Vec<u8>,
) -> Poll<bool> {
    let Some(src) = input else {
        return Poll::Pending;
    };
    audio.clear();
    let more = std::task::ready!(src.poll_audio(cx, format, audio));
    if !more {
        *input = None;
    }
    Poll::Ready(more)
}

/// Keep going after an engine call that worked; end the session with
/// the error of one that did not.
fn go_or_end(r: Result<(), EngineError>) -> Flow {
    match r {
        Ok(()) => Flow::Go,
        Err(e) => Flow::End {
            code: None,
            error: Some(e),
        },
    }
}

/// What woke the driver.
enum Woke {
    Frame(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    Command(Option<Command>),
    /// Caller audio in the driver's `audio` (true), or the input ended.
    Input(bool),
}

/// The driver's sources, by their bit in its [`WakeSet`].
const SOURCE_INPUT: usize = 0;
const SOURCE_SOCKET: usize = 1;
const SOURCES: usize = 3;
const ALL_SOURCES: u32 = (1 << SOURCES) - 1;

/// [`poll_input`] as a future (never ready without an input).
async fn next_input(
    input: &mut Option<Box<dyn AudioInput>>,
    format: AudioFormat,
    audio: &mut Vec<u8>,
) -> bool {
    std::future::poll_fn(|cx| poll_input(input, cx, format, audio)).await
}

enum Flow {
    Go,
    Reconnect,
    End {
        code: Option<u16>,
        error: Option<EngineError>,
    },
}

impl Driver {
    async fn run(mut self, mut link: Client, mut early: Vec<EngineEvent>) {
        if self.emit(&mut early).await.is_err() {
            close_ws(&mut link, CloseCode::Normal, "call ended").await;
            return;
        }
        let format = self.engine.input_format();
        // Reused: a caller frame every 20 ms passes through it.
        let mut evs = Vec::new();
        let (code, error) = loop {
            evs.clear();
            let woke = std::future::poll_fn(|cx| self.poll_sources(cx, &mut link, format)).await;
            if matches!(woke, Woke::Frame(Some(Ok(_)))) {
                self.last_heard = std::time::Instant::now();
                self.pinged = false;
            }
            let flow = match woke {
                Woke::Frame(msg) => self.on_frame(msg, &mut evs, link.outbox()),
                Woke::Command(cmd) => self.on_commands(cmd, &mut link).await,
                Woke::Input(true) => {
                    let audio = std::mem::take(&mut self.audio);
                    let flow = self.on_audio(&audio, link.outbox());
                    self.audio = audio;
                    flow
                }
                Woke::Input(false) => Flow::Go,
            };
            let flow = match flow {
                Flow::Go => self.watchdog(link.outbox(), &mut evs),
                f => f,
            };
            let sent = send_all(&mut link).await;
            // A failed write ends the connection: what the engine says
            // of that (the turn in flight's transcript) goes out with
            // the rest.
            let flow = match (flow, sent) {
                (Flow::Go, Err(e)) => self.lost(e, &mut evs),
                (f, _) => f,
            };
            account(&mut self.usage, &mut evs);
            // Most turns (a caller frame sent) have no events.
            if !evs.is_empty() && self.emit(&mut evs).await.is_err() {
                // Nobody listens any more: the call is gone.
                close_ws(&mut link, CloseCode::Normal, "call ended").await;
                return;
            }
            match flow {
                Flow::Go => {}
                Flow::End { code, error } => {
                    close_ws(&mut link, CloseCode::Normal, "call ended").await;
                    break (code, error);
                }
                Flow::Reconnect if !self.may_resume(std::time::Instant::now()) => {
                    close_ws(&mut link, CloseCode::Normal, "call ended").await;
                    break (
                        None,
                        Some(EngineError::Transport(format!(
                            "the connection was lost {MAX_RESUMES} times within {} s",
                            RESUME_WINDOW.as_secs()
                        ))),
                    );
                }
                Flow::Reconnect => match self.reconnect(&mut link).await {
                    Ok(new) => {
                        link = new;
                        self.last_heard = std::time::Instant::now();
                        self.pinged = false;
                        // The resumption polled the input with the task's
                        // own waker, and the new socket was never polled:
                        // every source is looked at again.
                        self.wakes.again(ALL_SOURCES);
                        // What the caller said meanwhile, in order, in
                        // chunks of at most a tenth of a second.
                        let backlog = std::mem::take(&mut self.backlog);
                        let f = self.engine.input_format();
                        let chunk = (f.rate_hz / 10).max(1) * f.bytes_per_sample().max(1);
                        let mut flow = Flow::Go;
                        for piece in backlog.chunks(chunk as usize) {
                            flow = self.on_audio(piece, link.outbox());
                            if !matches!(flow, Flow::Go) {
                                break;
                            }
                        }
                        let sent = send_all(&mut link).await;
                        match (flow, sent) {
                            (Flow::Go, Ok(())) => {}
                            (Flow::End { code, error }, _) => break (code, error),
                            (_, Err(e)) => break (None, Some(e)),
                            (Flow::Reconnect, Ok(())) => {}
                        }
                    }
                    Err(e) => break (None, Some(e)),
                },
            }
        };
        let usage = self.usage;
        let _ = self
            .ev_tx
            .send(EngineEvent::Closed { code, error, usage })
            .await;
    }

    /// The next thing one of the driver's sources has. The caller's
    /// audio, which wakes the task every 20 ms, is polled on every
    /// wake-up with the task's own waker (a ring read); the socket and
    /// the command channel only when their own wakers fired (see
    /// [`WakeSet`]), not for every caller frame. The first source polled
    /// rotates, so a busy one does not starve the others.
    fn poll_sources(
        &mut self,
        cx: &mut Context<'_>,
        link: &mut Client,
        format: AudioFormat,
    ) -> Poll<Woke> {
        let mut left = self.wakes.take(cx) | 1 << SOURCE_INPUT;
        for k in 0..SOURCES {
            let i = (self.first + k) % SOURCES;
            let bit = 1 << i;
            if left & bit == 0 {
                continue;
            }
            left &= !bit;
            let ready = match i {
                SOURCE_INPUT => {
                    poll_input(&mut self.input, cx, format, &mut self.audio).map(Woke::Input)
                }
                SOURCE_SOCKET => {
                    let mut scx = self.wakes.context(i);
                    link.poll_next(&mut scx).map(Woke::Frame)
                }
                _ => {
                    let mut scx = self.wakes.context(i);
                    self.cmd_rx.poll_recv(&mut scx).map(Woke::Command)
                }
            };
            if ready.is_ready() {
                self.wakes.again(left | bit);
                self.first = (i + 1) % SOURCES;
                return ready;
            }
        }
        Poll::Pending
    }

    /// Pings a connection the vendor has been silent on for `idle_ping`,
    /// and takes one silent for twice that as lost (the pong, or any
    /// frame, would have come).
    fn watchdog(&mut self, out: &mut Outbox, evs: &mut Vec<EngineEvent>) -> Flow {
        let quiet = self.last_heard.elapsed();
        if quiet >= self.idle_ping * 2 {
            tracing::warn!(
                quiet_ms = quiet.as_millis() as u64,
                "the voice-AI vendor sent nothing, not even a pong: the connection is taken as lost"
            );
            return self.lost(
                EngineError::Timeout("the vendor sent nothing, not even a pong to a ping"),
                evs,
            );
        }
        if quiet >= self.idle_ping && !self.pinged {
            out.ping(b"codeb");
            self.pinged = true;
        }
        Flow::Go
    }

    /// The connection failed under a write: the engine closes its side,
    /// its events (to be accounted and sent) appended to `evs`.
    fn lost(&mut self, e: EngineError, evs: &mut Vec<EngineEvent>) -> Flow {
        let step = self.engine.on_close(None, &e.to_string(), evs);
        self.step(step)
    }

    fn step(&self, step: Step) -> Flow {
        match step {
            Step::Continue => Flow::Go,
            Step::Reconnect => Flow::Reconnect,
            Step::Close { code, error } => Flow::End { code, error },
        }
    }

    fn on_frame(
        &mut self,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
        evs: &mut Vec<EngineEvent>,
        out: &mut Outbox,
    ) -> Flow {
        let step = match msg {
            Some(Ok(Message::Text(t))) => self.engine.on_message(t.as_str(), evs, out),
            Some(Ok(Message::Binary(b))) => match std::str::from_utf8(&b) {
                Ok(t) => self.engine.on_message(t, evs, out),
                Err(_) => Err(EngineError::Protocol(
                    "binary frame is not UTF-8 JSON".into(),
                )),
            },
            Some(Ok(Message::Close(f))) => {
                let (code, reason) = close_parts(f.as_ref());
                Ok(self.engine.on_close(code, &reason, evs))
            }
            Some(Ok(_)) => Ok(Step::Continue),
            Some(Err(e)) => Ok(self.engine.on_close(None, &e.to_string(), evs)),
            None => Ok(self.engine.on_close(None, "connection dropped", evs)),
        };
        match step {
            Ok(s) => self.step(s),
            Err(e) => Flow::End {
                code: None,
                error: Some(e),
            },
        }
    }

    /// `first` and whatever else the call queued meanwhile (a runtime
    /// that fell behind finds several frames waiting): their frames go
    /// out in one write instead of one each. Nothing waits for a batch
    /// to fill, so no frame is held back.
    async fn on_commands(&mut self, first: Option<Command>, link: &mut Client) -> Flow {
        let mut flow = self.on_command(first, link).await;
        while matches!(flow, Flow::Go) && link.outbox().len() < MAX_BATCH {
            let Ok(cmd) = self.cmd_rx.try_recv() else {
                break;
            };
            if matches!(cmd, Command::Close) {
                // What was queued before the close goes first; the close
                // ends the session whether or not that went out.
                let _ = send_all(link).await;
            }
            flow = self.on_command(Some(cmd), link).await;
        }
        flow
    }

    /// Caller audio from the input.
    fn on_audio(&mut self, audio: &[u8], out: &mut Outbox) -> Flow {
        self.count_audio(audio.len());
        go_or_end(self.engine.on_audio(audio, out))
    }

    /// Caller audio sent, for the usage estimate.
    fn count_audio(&mut self, bytes: usize) {
        let us = self.engine.input_format().duration_us(bytes);
        self.usage.audio_in_us = self.usage.audio_in_us.saturating_add(us);
    }

    async fn on_command(&mut self, cmd: Option<Command>, link: &mut Client) -> Flow {
        match cmd {
            None | Some(Command::Close) => {
                close_ws(link, CloseCode::Normal, "call ended").await;
                Flow::End {
                    code: Some(1000),
                    error: None,
                }
            }
            Some(cmd) => {
                if let Command::Audio(a) = &cmd {
                    self.count_audio(a.len());
                }
                go_or_end(self.engine.on_command(cmd, link.outbox()))
            }
        }
    }

    /// Whether the session may move to a new connection at `now` (and
    /// counts the move if so): not a sixth time within a minute.
    fn may_resume(&mut self, now: std::time::Instant) -> bool {
        while self
            .resumed
            .front()
            .is_some_and(|t| now.duration_since(*t) >= RESUME_WINDOW)
        {
            self.resumed.pop_front();
        }
        if self.resumed.len() >= MAX_RESUMES {
            return false;
        }
        self.resumed.push_back(now);
        true
    }

    /// Retires `old` and opens a resumed connection, retrying a few times.
    async fn reconnect(&mut self, old: &mut Client) -> Result<Client, EngineError> {
        close_ws(old, CloseCode::Normal, "resuming").await;
        let mut last = EngineError::Closed;
        let format = self.engine.input_format();
        for attempt in 0..RECONNECT_ATTEMPTS {
            if attempt > 0 {
                let pause = tokio::time::sleep(Duration::from_millis(100 << attempt));
                let (input, audio, backlog) = (&mut self.input, &mut self.audio, &mut self.backlog);
                keep_listening(pause, input, format, audio, backlog).await;
            }
            let mut evs = Vec::new();
            let opening = tokio::time::timeout(
                self.connect_timeout,
                open(
                    self.engine.as_mut(),
                    self.tls.as_ref(),
                    &mut evs,
                    &mut self.usage,
                ),
            );
            let opened = keep_listening(
                opening,
                &mut self.input,
                format,
                &mut self.audio,
                &mut self.backlog,
            )
            .await
            .unwrap_or(Err(EngineError::Timeout("session resumption")));
            self.emit(&mut evs).await.map_err(|_| EngineError::Closed)?;
            match opened {
                Ok(ws) => return Ok(ws),
                // A refusal will not change on retry.
                Err(e @ EngineError::Rejected { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "voice-AI session resumption failed");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Forwards `evs` (left empty) to the call: at once while its queue
    /// has room (nearly always), else waiting for room.
    async fn emit(&mut self, evs: &mut Vec<EngineEvent>) -> Result<(), ()> {
        for e in evs.drain(..) {
            match self.ev_tx.try_send(e) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(e)) => {
                    self.ev_tx.send(e).await.map_err(|_| ())?;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;
    use crate::config::{Endpoints, ModelChoice};
    use serde_json::json;

    #[test]
    fn a_failed_write_reports_the_turn_in_flight() {
        let cfg = SessionConfig::new(
            ModelChoice::from_model("").unwrap(),
            Endpoints::parse("ws://127.0.0.1:1", "ws://127.0.0.1:1").unwrap(),
            "k",
        );
        let mut engine = engine_for(&cfg);
        let (mut evs, mut out) = (Vec::new(), Outbox::new());
        engine.on_open(&mut out).unwrap();
        for m in [
            json!({"setupComplete": {}}),
            json!({"serverContent": {"outputTranscription": {"text": "Hel"}}}),
        ] {
            engine
                .on_message(&m.to_string(), &mut evs, &mut out)
                .unwrap();
        }
        let (_commands, cmd_rx) = mpsc::channel(1);
        let (ev_tx, _events) = mpsc::channel(1);
        let mut driver = Driver {
            engine,
            tls: None,
            connect_timeout: Duration::from_secs(1),
            usage: Usage::default(),
            ev_tx,
            cmd_rx,
            input: None,
            audio: Vec::new(),
            backlog: Vec::new(),
            wakes: WakeSet::new(SOURCES),
            first: 0,
            resumed: std::collections::VecDeque::new(),
            idle_ping: Duration::from_secs(15),
            last_heard: std::time::Instant::now(),
            pinged: false,
        };
        let mut evs = Vec::new();
        let flow = driver.lost(EngineError::Transport("broken pipe".into()), &mut evs);
        assert_eq!(
            evs,
            vec![
                EngineEvent::OutputTranscript {
                    text: "Hel".into(),
                    is_final: true
                },
                EngineEvent::TurnComplete
            ]
        );
        // No resumption handle yet: the session ends, with the error.
        assert!(matches!(flow, Flow::End { error: Some(_), .. }));

        // Five moves to a new connection within a minute, not a sixth;
        // a minute after the first, one more.
        let t0 = std::time::Instant::now();
        for i in 0..5 {
            assert!(driver.may_resume(t0 + Duration::from_secs(i)), "move {i}");
        }
        assert!(!driver.may_resume(t0 + Duration::from_secs(59)));
        assert!(driver.may_resume(t0 + Duration::from_secs(60)));
        assert!(!driver.may_resume(t0 + Duration::from_secs(60)));
    }
}
