//! The AI leg of a call: a live voice-AI session (`codeb_ai`) joined to one
//! SIP leg through the media worker's AI tap (`codeb_media::tap`).
//!
//! The split follows the rest of the switch: the SIP thread (sans-IO
//! [`crate::sip::Core`]) decides when a call gets an AI leg and what its
//! end means, and hands the IO to the [`hub`]: a small tokio runtime with
//! one task per AI call, which owns the WebSocket session and the engine
//! side of the tap. The task never touches call state; it reports
//! [`AiNote`]s back through a queue and a wake-up of the SIP thread's
//! reactor, and the core turns them into the call's events (CallStarted,
//! TranscriptTurn, Usage) and actions (hang up after `end_call`, fail the
//! call when the engine is lost).
//!
//! Audio never passes the SIP thread: the media worker decodes the leg's
//! RTP into the tap's caller ring (16 kHz for Gemini, 8 kHz for OpenAI's
//! G.711 sessions) and paces the engine's audio out every ptime.

pub mod audio;
pub mod hub;
mod task;

use std::time::Instant;

use codeb_ai::{Codec, ModelChoice, Provider};
use codeb_media::tap::{TapConfig, TapEngine};

use crate::sip::calls::CallKey;

/// Longest system prompt accepted from the control plane.
pub const MAX_PROMPT: usize = 64 * 1024;
/// How early an AI call's playout packet may go (see
/// [`TapConfig::pacing_slack`]): small beside the far end's jitter
/// buffer, large beside the gaps between the worker's wake-ups at a few
/// hundred calls.
pub const PACING_SLACK: std::time::Duration = std::time::Duration::from_millis(2);
/// Caller audio in a long silence goes to the engine in messages of
/// this many ms instead of one per 20 ms frame (see
/// [`TapConfig::quiet_batch_ms`]): half an AI call's messages or more
/// are the caller listening. 100 ms is the top of what the vendors ask
/// for (Gemini: 20–100 ms chunks) and what the session reads at once.
pub const QUIET_BATCH_MS: u32 = 100;
/// How long after the caller's last sound frames still go one by one:
/// the engine's voice detection ends the caller's turn on this silence
/// (the sessions ask for [`codeb_ai::config::DEFAULT_VAD_SILENCE_MS`]),
/// so it must reach the engine frame by frame; 200 ms more for the
/// engine's own framing and a last sound frame under the tap's
/// threshold.
pub const QUIET_AFTER_MS: u32 = codeb_ai::config::DEFAULT_VAD_SILENCE_MS + 200;

/// Who the AI is on a call: the control plane's persona.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Persona {
    /// e.g. `gemini-2.5-flash-native-audio`, `openai/gpt-realtime`; empty:
    /// the default Gemini Live model.
    pub model: String,
    pub voice: String,
    /// BCP 47.
    pub language: String,
    pub system_prompt: String,
    /// The vendor key for this session; empty: the node's key for the
    /// vendor.
    pub api_key: String,
    /// Users the AI may transfer to.
    pub transfer_targets: Vec<String>,
    pub save_transcript: bool,
}

impl Persona {
    /// Checks what came over the wire: bounded, and a model we can run.
    pub fn check(&self) -> Result<ModelChoice, String> {
        if self.system_prompt.len() > MAX_PROMPT {
            return Err(format!("ai.system_prompt: at most {MAX_PROMPT} bytes"));
        }
        if self.voice.len() > 64 || self.language.len() > 35 || self.api_key.len() > 512 {
            return Err("ai.voice, ai.language or ai.api_key too long".into());
        }
        if self.transfer_targets.len() > 64
            || !self.transfer_targets.iter().all(|t| user_name_ok(t))
        {
            return Err(format!(
                "ai.transfer_targets: at most 64 user names of 1-{MAX_USER} letters, digits or _-.+"
            ));
        }
        ModelChoice::from_model(&self.model).map_err(|e| format!("ai.model: {e}"))
    }

    /// The tap's rates for the engine this persona runs on: Gemini hears
    /// 16 kHz and speaks 24 kHz PCM; OpenAI's telephony sessions speak
    /// G.711 (8 kHz) both ways.
    ///
    /// Playout ticks may go up to [`PACING_SLACK`] early, so the media
    /// worker sends every tapped call's packet falling due in that span
    /// on one wake-up instead of sleeping between each call's own
    /// 20 ms slot.
    ///
    /// In a long silence the caller's audio goes to the engine in
    /// messages of `quiet_batch_ms` (see [`QUIET_BATCH_MS`]).
    pub fn tap_config(provider: Provider, quiet_batch_ms: u32) -> TapConfig {
        let base = TapConfig {
            pacing_slack: PACING_SLACK,
            quiet_batch_ms,
            quiet_after_ms: QUIET_AFTER_MS,
            ..TapConfig::default()
        };
        match provider {
            Provider::Gemini => base,
            Provider::OpenAi => TapConfig {
                to_engine_rate: 8_000,
                from_engine_rate: 8_000,
                ..base
            },
        }
    }
}

/// What the core asks of the hub.
#[derive(Debug)]
pub enum AiRequest {
    /// Open the call's session and join it to the tap.
    Start(Box<AiStart>),
    /// The call is over, or its caller was handed to a person: close
    /// the session (its last notes follow).
    Stop(CallKey),
    /// The answer to a tool call the session is waiting for (a transfer
    /// that could not be made).
    ToolResult {
        key: CallKey,
        /// The engine's id of the call.
        id: String,
        name: String,
        ok: bool,
        detail: String,
    },
}

/// A call's AI leg, ready to connect.
#[derive(Debug)]
pub struct AiStart {
    pub key: CallKey,
    pub call_id: String,
    pub persona: Persona,
    pub model: ModelChoice,
    /// The G.711 law of the SIP leg (OpenAI sessions speak it natively).
    pub telephony: Codec,
    pub tap: TapEngine,
    /// When the call was answered: transcript offsets count from here.
    /// None: the call is answered as its session starts (a virtual
    /// number's caller rings until the AI is ready).
    pub answered_at: Option<Instant>,
    /// Listen for an answering machine (placed calls): one ends the call
    /// as `voicemail`.
    pub detect_voicemail: bool,
    /// The caller's leg is G.711: its audio carries nothing above 4 kHz,
    /// so the detector may listen at 8 kHz whatever the engine's rate.
    pub narrowband_caller: bool,
    /// Users the AI may transfer the caller to (no `transfer_to_user`
    /// tool when empty).
    pub transfer_users: Vec<String>,
}

/// Who spoke a transcript turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Caller,
    Ai,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Caller => "caller",
            Role::Ai => "ai",
        }
    }
}

/// What an AI call's task reports to the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AiNote {
    /// The session is up and audio flows both ways.
    Started,
    /// One whole turn of the conversation.
    Turn {
        role: Role,
        text: String,
        /// From the answer.
        at_ms: u32,
        /// An AI turn cut by the caller: `text` is what was played.
        interrupted: bool,
    },
    /// The AI called `end_call` and its goodbye has played out.
    EndCall { reason: String },
    /// The AI called `transfer_to_user`: the engine waits for the answer
    /// to tool call `id` (sent only if the transfer fails; one that
    /// succeeds stops the session).
    Transfer { id: String, user: String },
    /// The engine called tool call `id` off (Gemini's
    /// `toolCallCancellation`, on the caller cutting in): a transfer it
    /// asked for that still rings is called off, and no answer is sent.
    ToolCancelled { id: String },
    /// The session could not start or was lost; the call cannot go on.
    Failed { detail: String },
    /// Tokens used since the last Usage note: the vendor's reports as they
    /// come, or, at the end of a session it never reported on, the
    /// estimate from the audio.
    Usage {
        input: u64,
        output: u64,
        estimated: bool,
    },
    /// The session was stopped (the far end hung up, or the call ended
    /// for another reason): the outcome the conversation had reached by
    /// then, if it had one. The end_call reason's outcome while the AI
    /// was saying its goodbye; `finished` once the AI had answered the
    /// caller and was not speaking (the spec's "caller hung up after a
    /// real exchange"); `None` while the AI was still talking or before
    /// any exchange ("hung up before the AI was done": `far-hangup`).
    Reached { outcome: Option<String> },
    /// The task is done; nothing follows.
    Closed,
}

/// How long a note that does not wake the SIP thread may wait for it
/// ([`AiNote::wakes`]): its loop looks at the notes at least this often
/// while AI calls run. Small beside the event journal's own gathering.
pub const NOTE_LATENCY: std::time::Duration = std::time::Duration::from_millis(20);

impl AiNote {
    /// Whether the SIP thread must act on the note at once (the call's
    /// state changes: it starts, ends, fails or transfers). Transcript
    /// turns and usage only become events for the control plane: they
    /// wait for the thread's next turn, at most [`NOTE_LATENCY`], in
    /// order with the rest. At a few hundred AI calls they are most of
    /// the notes, and each used to wake the thread for itself.
    pub fn wakes(&self) -> bool {
        !matches!(
            self,
            AiNote::Turn { .. } | AiNote::Usage { .. } | AiNote::Reached { .. }
        )
    }
}

/// The longest user name a transfer may name.
pub const MAX_USER: usize = 64;

/// A user name as a transfer may carry it: 1 to [`MAX_USER`] characters
/// of letters, digits and `_ - . +`.
pub fn user_name_ok(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= MAX_USER
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.+".contains(&b))
}

/// The outcome an `end_call` reason maps to (the spec's glossary); any
/// other reason is a normal end.
pub fn end_outcome(reason: &str) -> &'static str {
    match reason.trim().to_ascii_lowercase().as_str() {
        "voicemail" => "voicemail",
        "not-now" | "not now" | "call back later" | "callback" => "not-now",
        _ => "finished",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personas_are_checked() {
        let p = Persona::default();
        assert_eq!(p.check().map(|m| m.provider), Ok(Provider::Gemini));
        let p = Persona {
            model: "openai/gpt-realtime".into(),
            ..Persona::default()
        };
        assert_eq!(p.check().map(|m| m.provider), Ok(Provider::OpenAi));
        let p = Persona {
            model: "claude-3".into(),
            ..Persona::default()
        };
        assert!(p.check().is_err());
        let p = Persona {
            system_prompt: "x".repeat(MAX_PROMPT + 1),
            ..Persona::default()
        };
        assert!(p.check().is_err());
    }

    #[test]
    fn transfer_user_names_are_bounded() {
        assert!(user_name_ok("sales"));
        assert!(user_name_ok("+4930123"));
        assert!(!user_name_ok(""));
        assert!(!user_name_ok("a b"));
        assert!(!user_name_ok("sales@evil.example"));
        assert!(!user_name_ok(&"x".repeat(MAX_USER + 1)));
    }

    #[test]
    fn end_reasons_map_to_outcomes() {
        assert_eq!(end_outcome("voicemail"), "voicemail");
        assert_eq!(end_outcome(" Not-Now "), "not-now");
        assert_eq!(end_outcome("the caller said goodbye"), "finished");
        assert_eq!(end_outcome(""), "finished");
    }

    #[test]
    fn tap_rates_follow_the_engine() {
        let g = Persona::tap_config(Provider::Gemini, QUIET_BATCH_MS);
        assert_eq!((g.to_engine_rate, g.from_engine_rate), (16_000, 24_000));
        assert_eq!(g.quiet_batch_ms, QUIET_BATCH_MS);
        let o = Persona::tap_config(Provider::OpenAi, 0);
        assert_eq!(o.quiet_batch_ms, 0);
        assert_eq!((o.to_engine_rate, o.from_engine_rate), (8_000, 8_000));
        assert_eq!(g.pacing_slack, PACING_SLACK);
        assert_eq!(o.pacing_slack, PACING_SLACK);
    }
}
