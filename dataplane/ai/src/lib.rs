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
//!
//! How a call uses it (the switch's side):
//!
//! ```text
//! let model = ModelChoice::from_model(&call.model)?;          // picks the vendor
//! let mut cfg = SessionConfig::new(model, Endpoints::from_env()?, call.api_key);
//! cfg.voice / language / instructions = …;                     // tools: end_call, transfer_to_user
//! let (session, mut events) = codeb_ai::connect(cfg).await?;    // Ready is the first event
//! media worker: session.try_send_audio(frame)                  // in session.input_format(), every ptime
//! events:  Audio{data, format}   -> resample/encode, queue for playout
//!          Interrupted            -> flush playout; session.truncate(played_ms);
//!                                    played_text() cuts the AI turn at what was heard
//!          InputTranscript/OutputTranscript{is_final: true} -> transcript turns
//!          TurnComplete           -> outputTurns += 1
//!          ToolCall{end_call}     -> tool_result, wait for TurnComplete + drained playout, BYE
//!          ToolCall{transfer_to_user} -> REFER / bridge, tool_result
//!          Usage(total)           -> running tokens;  GoAway/Resumed: informational
//!          Closed{usage, error}   -> last event; usage.tokens_total() for the record
//! ```

pub mod config;
pub mod error;
pub mod event;
pub mod gemini;
pub mod openai;
pub mod session;
pub mod sim;
pub mod transport;
mod wakes;

pub use config::{AudioFormat, Codec, Endpoints, ModelChoice, Provider, SessionConfig, ToolDecl};
pub use error::EngineError;
pub use event::{EngineEvent, Usage, played_text};
pub use session::{Command, Engine, Session, Step, connect};
