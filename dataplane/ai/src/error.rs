//! Errors, sorted by who is at fault: our configuration, the vendor's
//! refusal (bad key, bad request), the vendor breaking its protocol, or the
//! network.

/// Why a session could not start or had to end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The call's `model` names no engine we speak.
    #[error("unknown voice-AI model {0:?}")]
    UnknownModel(String),
    /// Our own configuration is unusable (bad endpoint URL, TLS setup).
    #[error("voice-AI configuration: {0}")]
    Config(String),
    /// The vendor refused us: bad API key, bad request, quota. `code` is the
    /// WebSocket close code or HTTP status; `kind` the vendor's error code
    /// (`invalid_api_key`) when it sent one.
    #[error("voice-AI engine refused the session ({code}{}): {message}", kind.as_deref().map(|k| format!(", {k}")).unwrap_or_default())]
    Rejected {
        /// Close code (Gemini 1007/1008, OpenAI 3000) or HTTP status
        /// (400: OpenAI refused our `session.update`).
        code: u16,
        /// Vendor error code, if any.
        kind: Option<String>,
        /// Vendor's message.
        message: String,
    },
    /// The vendor sent something that breaks its own protocol.
    #[error("voice-AI protocol violation: {0}")]
    Protocol(String),
    /// Connecting, TLS or the socket failed.
    #[error("voice-AI transport: {0}")]
    Transport(String),
    /// No answer within the bound.
    #[error("voice-AI engine timed out: {0}")]
    Timeout(&'static str),
    /// The session's command queue is full (the engine connection is
    /// stalled or reconnecting for longer than the queue covers).
    #[error("voice-AI session is not keeping up")]
    Busy,
    /// A caller-side argument is out of bounds.
    #[error("voice-AI request: {0}")]
    Invalid(&'static str),
    /// The session is gone (closed, or its driver ended).
    #[error("voice-AI session closed")]
    Closed,
}

impl EngineError {
    pub(crate) fn transport(e: impl std::fmt::Display) -> Self {
        Self::Transport(e.to_string())
    }
}
