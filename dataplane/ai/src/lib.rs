//! Voice-AI engines for the switch.
//!
//! One session abstraction ([`connect`] → [`Session`] + a stream of
//! [`EngineEvent`]s) over two vendor protocols, picked by the call's `model`:
//!
//! * Gemini Live `BidiGenerateContent` ([`gemini`]): PCM16 16 kHz in, 24 kHz
//!   out, `goAway` + session resumption so a call outlives a connection;
//! * OpenAI Realtime, GA shapes ([`openai`]): G.711 both ways, no transcoding.
//!
//! Each vendor is a sans-IO [`Engine`] (frames in, events and frames out);
//! one driver task ([`session`]) owns the socket, reconnects when the engine
//! asks, and keeps the usage clock. [`sim`] holds protocol-faithful local
//! simulators of both vendors, which the tests and `codeb dev` talk to.

pub mod config;
pub mod error;
pub mod event;
pub mod gemini;
pub mod openai;
pub mod session;
pub mod sim;
pub mod transport;

pub use config::{AudioFormat, Codec, Endpoints, ModelChoice, Provider, SessionConfig, ToolDecl};
pub use error::EngineError;
pub use event::{EngineEvent, Usage};
pub use session::{Command, Engine, Session, Step, connect};
