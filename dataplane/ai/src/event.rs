//! What a session reports to the call: audio, barge-in, transcripts, tool
//! calls, usage and the end.

use bytes::Bytes;
use serde_json::Value;

use crate::config::AudioFormat;
use crate::error::EngineError;

/// Tokens Google bills per second of audio: the fallback when the vendor
/// reports no usage.
pub const TOKENS_PER_AUDIO_SECOND: u64 = 25;

/// An event from a live session, in the order the vendor sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// The session is set up (`setupComplete` / `session.updated`); sent once.
    Ready,
    /// AI speech to play out, in `format` (Gemini: PCM16 24 kHz; OpenAI: G.711).
    Audio {
        /// Encoded samples.
        data: Bytes,
        /// Their format.
        format: AudioFormat,
    },
    /// The caller started talking over the AI: flush playout now.
    Interrupted,
    /// What the caller said. Non-final events are fragments as they arrive;
    /// the final one carries the whole utterance.
    InputTranscript {
        /// Fragment or whole text.
        text: String,
        /// Whole-utterance text.
        is_final: bool,
    },
    /// What the AI said; same fragment/final rule as the input side.
    OutputTranscript {
        /// Fragment or whole text.
        text: String,
        /// Whole-turn text.
        is_final: bool,
    },
    /// The whole text of the turn the last [`Self::TurnComplete`] ended,
    /// revised: more of its transcript came after it ended (Gemini's may
    /// follow `generationComplete`). Not a turn of its own.
    OutputRevised {
        /// The turn's whole text.
        text: String,
    },
    /// The AI finished (or abandoned) a turn: `outputTurns += 1`.
    TurnComplete,
    /// The model wants a function run; answer with `Session::tool_result`.
    ToolCall {
        /// Id to answer with.
        call_id: String,
        /// Function name (`end_call`, `transfer_to_user`).
        name: String,
        /// Arguments (a JSON object).
        args: Value,
    },
    /// The model withdrew earlier tool calls.
    ToolCallCancelled {
        /// Their ids.
        ids: Vec<String>,
    },
    /// Token usage so far (cumulative over the whole call).
    Usage(Usage),
    /// The vendor announced the connection will end (Gemini `goAway`); the
    /// session resumes on a new connection by itself.
    GoAway {
        /// Time the vendor said was left, in milliseconds.
        time_left_ms: u64,
    },
    /// The session moved to a new connection and carries on (Gemini
    /// session resumption).
    Resumed,
    /// A non-fatal vendor error event (OpenAI `error`).
    Error {
        /// Vendor code.
        code: Option<String>,
        /// Vendor message.
        message: String,
    },
    /// The session ended; the last event. `error` is `None` after a
    /// `Session::close` or a normal close by the vendor.
    Closed {
        /// Close code, if a close frame was seen.
        code: Option<u16>,
        /// Why.
        error: Option<EngineError>,
        /// Final usage.
        usage: Usage,
    },
}

/// Token usage of a call: what the vendor reported, summed, plus the audio
/// clock for the fallback estimate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Sum of reported prompt/input tokens.
    pub prompt_tokens: u64,
    /// Sum of reported response/output tokens.
    pub response_tokens: u64,
    /// Sum of reported total tokens.
    pub total_tokens: u64,
    /// Number of usage reports summed.
    pub reports: u32,
    /// Caller audio sent, in microseconds.
    pub audio_in_us: u64,
    /// AI audio received, in microseconds.
    pub audio_out_us: u64,
}

impl Usage {
    /// Adds one vendor report (per-turn increments: Gemini `usageMetadata`,
    /// OpenAI `response.done.usage`). Saturates instead of overflowing.
    pub fn add_report(&mut self, prompt: u64, response: u64, total: u64) {
        self.prompt_tokens = self.prompt_tokens.saturating_add(prompt);
        self.response_tokens = self.response_tokens.saturating_add(response);
        let total = if total == 0 {
            prompt.saturating_add(response)
        } else {
            total
        };
        self.total_tokens = self.total_tokens.saturating_add(total);
        self.reports = self.reports.saturating_add(1);
    }

    /// The estimate from the audio clock: 25 tokens per second of audio in
    /// plus audio out.
    pub fn estimated_tokens(&self) -> u64 {
        let us = self.audio_in_us.saturating_add(self.audio_out_us);
        us.saturating_mul(TOKENS_PER_AUDIO_SECOND) / 1_000_000
    }

    /// `tokensTotal` for the record: the vendor's sum, or the estimate if it
    /// never reported.
    pub fn tokens_total(&self) -> u64 {
        if self.reports > 0 {
            self.total_tokens
        } else {
            self.estimated_tokens()
        }
    }

    /// `tokensPrompt` for the record: reported, or the caller-audio estimate.
    pub fn tokens_prompt(&self) -> u64 {
        if self.reports > 0 {
            self.prompt_tokens
        } else {
            self.audio_in_us.saturating_mul(TOKENS_PER_AUDIO_SECOND) / 1_000_000
        }
    }
}

/// The part of an AI turn's transcript the caller actually heard, when
/// barge-in stopped playout after `played_us` of `total_us` audio: the text
/// is cut in proportion, back to the last word boundary (whole text when
/// everything played).
pub fn played_text(text: &str, played_us: u64, total_us: u64) -> &str {
    if total_us == 0 || played_us >= total_us {
        return text;
    }
    let want = (text.len() as u128 * u128::from(played_us) / u128::from(total_us)) as usize;
    let mut cut = want.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    // Back to the end of the last whole word.
    let head = &text[..cut];
    let end = if text[cut..].starts_with(char::is_whitespace) || cut == text.len() {
        head.len()
    } else {
        head.rfind(char::is_whitespace).unwrap_or(0)
    };
    text[..end].trim_end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn played_text_is_cut_at_a_word() {
        let t = "Hello there, this is a test.";
        assert_eq!(played_text(t, 10, 10), t);
        assert_eq!(played_text(t, 0, 10), "");
        assert_eq!(played_text(t, 5, 10), "Hello there,");
        assert_eq!(played_text(t, 1, 28), "");
        assert_eq!(played_text(t, 5, 28), "Hello");
        assert_eq!(played_text("Grüße aus Köln", 9, 14), "Grüße");
        assert_eq!(played_text("x", 1, 0), "x");
    }

    #[test]
    fn reported_usage_wins_over_the_estimate() {
        let mut u = Usage {
            audio_in_us: 2_000_000,
            audio_out_us: 1_000_000,
            ..Usage::default()
        };
        assert_eq!(u.tokens_total(), 75);
        assert_eq!(u.tokens_prompt(), 50);
        u.add_report(10, 5, 0);
        u.add_report(20, 7, 30);
        assert_eq!(
            (u.prompt_tokens, u.response_tokens, u.total_tokens),
            (30, 12, 45)
        );
        assert_eq!(u.tokens_total(), 45);
        assert_eq!(u.tokens_prompt(), 30);
        u.add_report(u64::MAX, u64::MAX, u64::MAX);
        assert_eq!(u.total_tokens, u64::MAX);
    }
}
