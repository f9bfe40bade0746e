//! The AI calls' IO: a tokio runtime of its own (so a slow vendor never
//! touches the SIP thread or the control link) with one task per call.

use std::collections::HashMap;
use std::time::Duration;

use codeb_ai::{Codec, Endpoints, Provider, SessionConfig, ToolDecl};
use tokio::sync::mpsc;

use super::task::{self, Control, Notes};
use super::{AiNote, AiRequest, AiStart};
use crate::sip::calls::CallKey;

/// Notes queued towards the SIP thread before tasks wait for it.
const NOTE_QUEUE: usize = 16_384;
/// Control messages queued towards one call's task (a tool result at a
/// time is all the core sends).
const CONTROL_QUEUE: usize = 4;

/// The hub's settings.
#[derive(Debug, Clone)]
pub struct AiSettings {
    /// Where the engines are (`CODEB_GEMINI_URL` / `CODEB_OPENAI_URL`).
    pub endpoints: Endpoints,
    /// The node's vendor keys, used when a call's persona brings none.
    pub gemini_key: String,
    pub openai_key: String,
    /// Bound on connecting a session.
    pub connect_timeout: Duration,
    /// What `wss://` connections trust: the webpki roots, and an
    /// operator's CA file if given (`CODEB_AI_CA_FILE`).
    pub tls: codeb_ai::transport::ClientTls,
    /// Runtime threads.
    pub threads: usize,
}

/// The running hub, owned by the SIP thread's loop.
pub struct AiHub {
    runtime: tokio::runtime::Runtime,
    settings: AiSettings,
    tx: mpsc::Sender<(CallKey, AiNote)>,
    rx: mpsc::Receiver<(CallKey, AiNote)>,
    waker: codeb_io::Waker,
    /// Each running call's control channel (dropped: stop).
    controls: HashMap<CallKey, mpsc::Sender<Control>>,
}

impl std::fmt::Debug for AiHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AiHub")
            .field("calls", &self.controls.len())
            .finish_non_exhaustive()
    }
}

impl AiHub {
    /// Starts the runtime. `waker` wakes the loop that drains
    /// [`Self::poll_note`].
    pub fn start(settings: AiSettings, waker: codeb_io::Waker) -> std::io::Result<AiHub> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(settings.threads.max(1))
            .thread_name("ai")
            .enable_all()
            .build()?;
        let (tx, rx) = mpsc::channel(NOTE_QUEUE);
        Ok(AiHub {
            runtime,
            settings,
            tx,
            rx,
            waker,
            controls: HashMap::new(),
        })
    }

    /// AI calls running.
    pub fn active(&self) -> usize {
        self.controls.len()
    }

    /// Carries out a request of the core.
    pub fn handle(&mut self, req: AiRequest) {
        match req {
            AiRequest::Start(start) => self.begin(*start),
            // Dropping the sender is the stop.
            AiRequest::Stop(key) => drop(self.controls.remove(&key)),
            AiRequest::ToolResult {
                key,
                id,
                name,
                ok,
                detail,
            } => {
                if let Some(c) = self.controls.get(&key)
                    && c.try_send(Control::ToolResult {
                        id,
                        name,
                        ok,
                        detail,
                    })
                    .is_err()
                {
                    tracing::warn!(call = key, "AI task not taking its tool result");
                }
            }
        }
    }

    fn session_config(&self, start: &AiStart) -> SessionConfig {
        let p = &start.persona;
        let key = if p.api_key.is_empty() {
            match start.model.provider {
                Provider::Gemini => self.settings.gemini_key.clone(),
                Provider::OpenAi => self.settings.openai_key.clone(),
            }
        } else {
            p.api_key.clone()
        };
        let mut cfg = SessionConfig::new(start.model.clone(), self.settings.endpoints.clone(), key);
        cfg.voice = (!p.voice.is_empty()).then(|| p.voice.clone());
        cfg.language = (!p.language.is_empty()).then(|| p.language.clone());
        cfg.instructions.clone_from(&p.system_prompt);
        // The model is offered only what the call can do.
        cfg.tools = vec![ToolDecl::end_call()];
        if !start.transfer_users.is_empty() {
            let mut t = ToolDecl::transfer_to_user();
            t.description = format!(
                "Transfer the caller to a person; say that you are transferring first. \
                 user is one of: {}.",
                start.transfer_users.join(", ")
            );
            cfg.tools.push(t);
        }
        cfg.telephony_codec = match start.telephony {
            Codec::Pcma => Codec::Pcma,
            _ => Codec::Pcmu,
        };
        cfg.connect_timeout = self.settings.connect_timeout;
        cfg.tls = Some(self.settings.tls.clone());
        cfg
    }

    fn begin(&mut self, start: AiStart) {
        let key = start.key;
        let cfg = self.session_config(&start);
        let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let notes = Notes {
            key,
            tx: self.tx.clone(),
            waker: self.waker.clone(),
        };
        self.controls.insert(key, control_tx);
        self.runtime.spawn(task::run(start, cfg, notes, control_rx));
    }

    /// The next note from any AI call. A call's `Closed` note is its last.
    pub fn poll_note(&mut self) -> Option<(CallKey, AiNote)> {
        let (key, note) = self.rx.try_recv().ok()?;
        if note == AiNote::Closed {
            self.controls.remove(&key);
        }
        Some((key, note))
    }

    /// Closes every session and waits (bounded) for the tasks.
    pub fn shutdown(mut self) {
        self.controls.clear();
        self.runtime.shutdown_timeout(Duration::from_secs(2));
    }
}
