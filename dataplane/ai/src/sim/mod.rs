//! Local simulators of Gemini Live and OpenAI Realtime for tests and
//! `codeb dev`: the vendors' paths, key checks, message shapes, frame types
//! and close codes, driven by the deterministic [`script`].
//!
//! Every simulator logs what it did as [`SimRecord`]s so tests can assert
//! each turn; [`SimServer::wait_for`] waits (bounded) for a record. A
//! [`SimObserver`] in the config sees the audio as it passes, with when,
//! for benchmarks that time a client's audio path.

pub mod g711;
pub mod gemini;
pub mod openai;
pub mod script;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::transport::Io;
pub use script::{Conversation, Hearing};

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The one API key accepted; empty: any non-empty key is accepted
    /// (`codeb dev`, where callers bring whatever key they like).
    pub api_key: String,
    /// How the script hears.
    pub hearing: Hearing,
    /// Connection lifetime on the caller-audio clock (Gemini): `goAway`
    /// `go_away_notice` before it, then close 1008. `None`: unlimited.
    pub connection_lifetime: Option<Duration>,
    /// Notice given by `goAway`.
    pub go_away_notice: Duration,
    /// Report token usage (off: clients must fall back to the estimate).
    pub send_usage: bool,
    /// Length of each audio chunk sent, ms.
    pub chunk_ms: u32,
    /// Told of the audio each connection hears and says (none by default).
    pub observer: Option<Arc<dyn SimObserver>>,
    /// When set, a resumed connection (Gemini) waits for a permit of this
    /// semaphore before its `setupComplete`, so a test can act while a
    /// client's resumption is still opening.
    pub resume_gate: Option<Arc<tokio::sync::Semaphore>>,
    /// Messages as out of order, and as spare, as the vendors may send
    /// them. Gemini: the second half of the caller's transcript after the
    /// answer's first audio, and the answer's last words after
    /// `generationComplete`. OpenAI: the caller's transcript after the
    /// response to it is done, and a function call's arguments without
    /// its name. Off: each in order and whole.
    pub late_transcripts: bool,
    /// OpenAI: how long a response that calls a function stays under way
    /// after the call's arguments are done (the real server's
    /// `response.done` follows them, while a quick client may already be
    /// answering the call): a `response.create` read meanwhile is refused
    /// with `conversation_already_has_active_response`, as the vendor
    /// refuses it. Zero: `response.done` at once.
    pub tool_response_window: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            api_key: "sim-key".into(),
            hearing: Hearing::default(),
            connection_lifetime: None,
            go_away_notice: Duration::from_secs(1),
            send_usage: true,
            chunk_ms: 40,
            observer: None,
            resume_gate: None,
            late_transcripts: false,
            tool_response_window: Duration::from_millis(50),
        }
    }
}

/// A simulator connection as a [`SimObserver`] sees it.
#[derive(Debug, Clone)]
pub struct ObservedConn {
    /// Unique among the simulator's connections.
    pub id: u64,
    /// The system instruction the client set up the session with (Gemini
    /// `systemInstruction`, OpenAI `instructions`): the persona's prompt,
    /// where a benchmark can mark which call a connection carries.
    pub instructions: Arc<str>,
}

/// Sees the audio passing through a simulator, with the instant of each
/// event, so a benchmark can time a client's audio path against the
/// simulator's clock (the same process's `Instant`). It changes nothing the
/// simulator does. Methods run on the connection's task: keep them short.
pub trait SimObserver: Send + Sync + std::fmt::Debug {
    /// Caller audio arrived: `samples` (mono, `rate_hz`) decoded from one
    /// client message, which had been read and parsed at `at`.
    fn heard(&self, conn: &ObservedConn, samples: &[i16], rate_hz: u32, at: Instant);
    /// The AI's turn `turn` starts: its first audio chunk is sent right
    /// after `at` (the turn's audio starts from silence, so its onset is
    /// the first chunk).
    fn says(&self, conn: &ObservedConn, turn: u32, at: Instant);
}

/// Something the simulator did or saw.
#[derive(Debug, Clone, PartialEq)]
pub enum SimRecord {
    /// A WebSocket was accepted; `resumed` if it resumed a conversation.
    Connected {
        /// Resumed with a handle.
        resumed: bool,
    },
    /// OpenAI: an `error` event sent for a client event (its code).
    ClientError {
        /// The error's code.
        code: String,
    },
    /// The key was wrong (the connection was then closed as the vendor does).
    Rejected {
        /// Close code used.
        code: u16,
    },
    /// The setup / session.update the client sent.
    Setup(Value),
    /// An utterance was heard.
    Heard {
        /// Utterance number in the conversation (1-based).
        utterance: u32,
        /// Its length, ms.
        ms: u32,
    },
    /// An AI turn was sent.
    Said {
        /// Turn number in the conversation (0 = greeting).
        turn: u32,
        /// Its transcript.
        text: String,
        /// Audio length, ms.
        audio_ms: u32,
    },
    /// The turn was interrupted by caller speech.
    Interrupted {
        /// The turn.
        turn: u32,
    },
    /// A tool was called.
    ToolCall {
        /// Turn it ended.
        turn: u32,
        /// Function.
        name: String,
        /// Id the client must answer.
        call_id: String,
    },
    /// The client answered a tool call.
    ToolResponse {
        /// Id answered.
        call_id: String,
        /// The response / output.
        response: Value,
    },
    /// OpenAI `conversation.item.truncate`.
    Truncated {
        /// The assistant item truncated.
        item_id: String,
        /// Audio played, ms.
        audio_end_ms: u64,
    },
    /// Usage reported.
    Usage {
        /// Prompt / input tokens.
        prompt: u64,
        /// Response / output tokens.
        response: u64,
        /// Total.
        total: u64,
    },
    /// `goAway` sent.
    GoAway,
    /// The simulator closed the connection with this code.
    Closed {
        /// Close code.
        code: u16,
    },
}

/// A shared, observable log of [`SimRecord`]s.
#[derive(Debug, Clone, Default)]
pub struct SimLog {
    inner: Arc<(Mutex<Vec<SimRecord>>, Notify)>,
}

impl SimLog {
    fn lock(&self) -> MutexGuard<'_, Vec<SimRecord>> {
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a record.
    pub fn push(&self, r: SimRecord) {
        self.lock().push(r);
        self.inner.1.notify_waiters();
    }

    /// Everything so far.
    pub fn records(&self) -> Vec<SimRecord> {
        self.lock().clone()
    }

    /// Waits until `pred` holds for the log, at most `timeout`.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&[SimRecord]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.1.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if pred(&self.lock()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return pred(&self.lock());
            }
        }
    }
}

/// State shared by a simulator's connections.
pub(crate) struct Shared {
    pub cfg: SimConfig,
    pub log: SimLog,
    handles: Mutex<std::collections::HashMap<String, Conversation>>,
    seq: AtomicU64,
}

/// Resumption handles kept (oldest are dropped past it).
const MAX_HANDLES: usize = 10_000;

impl Shared {
    pub(crate) fn key_ok(&self, key: Option<&str>) -> bool {
        match key {
            Some(k) if self.cfg.api_key.is_empty() => !k.is_empty(),
            Some(k) => k == self.cfg.api_key,
            None => false,
        }
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// The connection as the observer will see it (None: no observer).
    pub(crate) fn observed(&self, instructions: &str) -> Option<ObservedConn> {
        self.cfg.observer.as_ref().map(|_| ObservedConn {
            id: self.next_id(),
            instructions: instructions.into(),
        })
    }

    /// Tells the observer of heard audio (read at `at`).
    pub(crate) fn observe_heard(
        &self,
        conn: Option<&ObservedConn>,
        samples: &[i16],
        rate_hz: u32,
        at: Instant,
    ) {
        if let (Some(o), Some(c)) = (&self.cfg.observer, conn) {
            o.heard(c, samples, rate_hz, at);
        }
    }

    /// Tells the observer a turn's audio starts now.
    pub(crate) fn observe_says(&self, conn: Option<&ObservedConn>, turn: u32) {
        if let (Some(o), Some(c)) = (&self.cfg.observer, conn) {
            o.says(c, turn, Instant::now());
        }
    }

    /// Stores `conv` under a fresh handle.
    pub(crate) fn save(&self, conv: Conversation) -> String {
        let h = format!("simres-{:08}", self.next_id());
        let mut m = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_HANDLES {
            m.clear();
        }
        m.insert(h.clone(), conv);
        h
    }

    pub(crate) fn restore(&self, handle: &str) -> Option<Conversation> {
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(handle)
            .copied()
    }
}

/// Which vendor a simulator plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// Gemini Live.
    Gemini,
    /// OpenAI Realtime.
    OpenAi,
}

/// A running simulator.
#[derive(Debug)]
pub struct SimServer {
    addr: SocketAddr,
    log: SimLog,
    task: JoinHandle<()>,
    tls: bool,
}

/// The simulator's TLS server configuration (aws-lc, the safe default
/// protocol versions): `chain` leaf first, and the leaf's key. What
/// [`SimServer::start`] takes to serve `wss://`, as the vendors do.
pub fn tls_config(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(cfg))
}

impl SimServer {
    /// Serves `vendor` on `listener` (TLS when `tls` is given).
    pub fn start(
        vendor: Vendor,
        listener: TcpListener,
        cfg: SimConfig,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let log = SimLog::default();
        let shared = Arc::new(Shared {
            cfg,
            log: log.clone(),
            handles: Mutex::new(Default::default()),
            seq: AtomicU64::new(1),
        });
        let is_tls = tls.is_some();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let shared = Arc::clone(&shared);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let io: Box<dyn Io> = match acceptor {
                        Some(a) => match a.accept(tcp).await {
                            Ok(s) => Box::new(s),
                            Err(e) => {
                                tracing::debug!(error = %e, "simulator TLS handshake failed");
                                return;
                            }
                        },
                        None => Box::new(tcp),
                    };
                    let r = match vendor {
                        Vendor::Gemini => gemini::serve_connection(io, shared).await,
                        Vendor::OpenAi => openai::serve_connection(io, shared).await,
                    };
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "simulator connection ended");
                    }
                });
            }
        });
        Ok(Self {
            addr,
            log,
            task,
            tls: is_tls,
        })
    }

    /// Binds `addr` and serves `vendor` in plain WebSocket.
    pub async fn bind(vendor: Vendor, addr: &str, cfg: SimConfig) -> std::io::Result<Self> {
        Self::start(vendor, TcpListener::bind(addr).await?, cfg, None)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL (`ws://` or `wss://127.0.0.1:port`), usable as
    /// `CODEB_GEMINI_URL` / `CODEB_OPENAI_URL`.
    pub fn url(&self) -> String {
        format!("{}://{}", if self.tls { "wss" } else { "ws" }, self.addr)
    }

    /// The log.
    pub fn log(&self) -> &SimLog {
        &self.log
    }

    /// Everything logged so far.
    pub fn records(&self) -> Vec<SimRecord> {
        self.log.records()
    }

    /// Waits until `pred` holds for the log, at most `timeout`.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&[SimRecord]) -> bool) -> bool {
        self.log.wait_for(timeout, pred).await
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Mono i16 from little-endian bytes (an odd trailing byte is ignored).
pub(crate) fn pcm16(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// Little-endian bytes of mono i16.
pub(crate) fn pcm16_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// `text` split into about `n` pieces on word boundaries (for transcript
/// fragments that ride along the audio chunks).
pub(crate) fn pieces(text: &str, n: usize) -> Vec<String> {
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    let per = words.len().div_ceil(n.max(1)).max(1);
    words.chunks(per).map(|c| c.concat()).collect()
}

/// Tokens for `ms` of audio at 25 tokens per second.
pub(crate) fn audio_tokens(ms: u64) -> u64 {
    ms * crate::event::TOKENS_PER_AUDIO_SECOND / 1000
}
