//! The simulators' deterministic conversation, sans IO.
//!
//! Its only clock is the caller audio it is fed: `push_audio` advances time
//! by the samples received (a call streams audio, silence included, all the
//! time), so the same audio always gives the same turns, whatever the
//! machine's speed.
//!
//! The script:
//! * it greets when the client asks for a response (turn 0);
//! * it "hears" by energy: 10 ms blocks with RMS at or above
//!   `speech_rms` are speech; an utterance starts after `min_speech_ms` of
//!   speech and ends after `end_silence_ms` of silence;
//! * it answers each utterance with one reply (`Reply n: I heard x.y seconds
//!   from you.`) and reports the input as `[caller spoke x.y s]`;
//! * caller speech that starts while a reply is still playing (by the audio
//!   clock: replies play in real time from when they were sent) interrupts it;
//! * rules in the system prompt: `END_AFTER_TURNS=n` makes the reply to the
//!   caller's n-th utterance a goodbye followed by the `end_call` tool
//!   (`n = 0`: the greeting is the goodbye); a prompt without that rule that
//!   asks to "end the call" means `END_AFTER_TURNS=0`.
//!   `TRANSFER_AFTER_TURNS=n:user` answers the n-th utterance with
//!   `transfer_to_user {user}`.

use std::time::Duration;

/// What the script needs to know about listening.
#[derive(Debug, Clone, Copy)]
pub struct Hearing {
    /// RMS (on the i16 scale) at or above which a 10 ms block is speech.
    pub speech_rms: f64,
    /// Speech needed before an utterance counts as started.
    pub min_speech: Duration,
    /// Silence that ends an utterance.
    pub end_silence: Duration,
}

impl Default for Hearing {
    fn default() -> Self {
        Self {
            speech_rms: 500.0,
            min_speech: Duration::from_millis(60),
            end_silence: Duration::from_millis(500),
        }
    }
}

/// Conversation state that survives a resumed connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Conversation {
    /// AI turns produced so far (the greeting is turn 0).
    pub ai_turns: u32,
    /// Caller utterances heard so far.
    pub utterances: u32,
    /// `end_call` was called.
    pub ended: bool,
}

/// A tool the reply ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolUse {
    /// `end_call {reason}`.
    EndCall,
    /// `transfer_to_user {user}`.
    Transfer(String),
}

/// One AI turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Turn number (0 = greeting).
    pub turn: u32,
    /// The utterance this answers: its number and length in ms.
    pub heard: Option<(u32, u32)>,
    /// What the AI says.
    pub text: String,
    /// Length of the speech, ms.
    pub audio_ms: u32,
    /// Tool called after speaking.
    pub tool: Option<ToolUse>,
}

impl Reply {
    /// The input transcript the simulator reports for `heard`.
    pub fn input_transcript(&self) -> Option<String> {
        self.heard.map(|(_, ms)| heard_text(ms))
    }
}

/// `[caller spoke 1.2 s]`.
pub fn heard_text(ms: u32) -> String {
    format!("[caller spoke {}.{} s]", ms / 1000, (ms % 1000) / 100)
}

/// What happened on the audio clock.
#[derive(Debug, Clone, PartialEq)]
pub enum Act {
    /// An utterance started (at caller-audio ms).
    SpeechStarted {
        /// Start, ms on this connection's audio clock.
        at_ms: u64,
    },
    /// The reply `turn` was still playing: stop it.
    Interrupt {
        /// The interrupted turn.
        turn: u32,
    },
    /// An utterance ended.
    SpeechStopped {
        /// End, ms on the audio clock.
        at_ms: u64,
        /// Utterance number (1-based).
        utterance: u32,
        /// Speech length, ms.
        heard_ms: u32,
    },
    /// A new AI turn to send.
    Speak(Reply),
    /// The reply `turn` has finished playing.
    PlayoutDone {
        /// The turn.
        turn: u32,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Rules {
    end_after: Option<u32>,
    transfer: Option<(u32, String)>,
}

fn rule_number<'a>(prompt: &'a str, key: &str) -> Option<(u32, &'a str)> {
    let rest = &prompt[prompt.find(key)? + key.len()..];
    let digits: String = rest
        .chars()
        .take_while(char::is_ascii_digit)
        .take(4)
        .collect();
    let n = digits.parse().ok()?;
    Some((n, &rest[digits.len()..]))
}

impl Rules {
    fn parse(prompt: &str) -> Self {
        let end_after = rule_number(prompt, "END_AFTER_TURNS=")
            .map(|(n, _)| n)
            .or_else(|| {
                prompt
                    .to_ascii_lowercase()
                    .contains("end the call")
                    .then_some(0)
            });
        let transfer = rule_number(prompt, "TRANSFER_AFTER_TURNS=").and_then(|(n, rest)| {
            let user: String = rest
                .strip_prefix(':')?
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'))
                .take(64)
                .collect();
            (!user.is_empty()).then_some((n, user))
        });
        Self {
            end_after,
            transfer,
        }
    }
}

enum Ear {
    Silent {
        loud_since_us: Option<u64>,
    },
    Speaking {
        start_us: u64,
        last_loud_end_us: u64,
    },
}

/// One connection's script.
pub struct Script {
    rules: Rules,
    hearing: Hearing,
    conv: Conversation,
    ear: Ear,
    /// Caller audio received on this connection, µs.
    clock_us: u64,
    pending: Vec<i16>,
    playing: Option<(u32, u64)>,
}

impl Script {
    /// A script for `prompt`, continuing `conv`.
    pub fn new(prompt: &str, hearing: Hearing, conv: Conversation) -> Self {
        Self {
            rules: Rules::parse(prompt),
            hearing,
            conv,
            ear: Ear::Silent {
                loud_since_us: None,
            },
            clock_us: 0,
            pending: Vec::new(),
            playing: None,
        }
    }

    /// Conversation state (for resumption handles).
    pub fn conversation(&self) -> Conversation {
        self.conv
    }

    /// Caller audio received on this connection, ms.
    pub fn clock_ms(&self) -> u64 {
        self.clock_us / 1000
    }

    /// The client asked for a response with nothing to answer: the greeting,
    /// once per conversation.
    pub fn kickoff(&mut self) -> Option<Reply> {
        if self.conv.ai_turns > 0 || self.conv.ended {
            return None;
        }
        let end = self.rules.end_after == Some(0);
        let text = if end {
            "Hello, this is the CodeB voice simulator. This is a test, goodbye.".to_owned()
        } else {
            "Hello, this is the CodeB voice simulator. How can I help you today?".to_owned()
        };
        Some(self.reply(None, text, end.then_some(ToolUse::EndCall)))
    }

    fn reply(&mut self, heard: Option<(u32, u32)>, text: String, tool: Option<ToolUse>) -> Reply {
        let turn = self.conv.ai_turns;
        self.conv.ai_turns += 1;
        if tool == Some(ToolUse::EndCall) {
            self.conv.ended = true;
        }
        let audio_ms = speech_ms(&text);
        self.playing = Some((turn, self.clock_us + u64::from(audio_ms) * 1000));
        Reply {
            turn,
            heard,
            text,
            audio_ms,
            tool,
        }
    }

    fn answer(&mut self, utterance: u32, heard_ms: u32) -> Option<Reply> {
        if self.conv.ended {
            return None;
        }
        let secs = heard_text(heard_ms);
        let secs = secs
            .trim_start_matches("[caller spoke ")
            .trim_end_matches(" s]");
        let turn = self.conv.ai_turns;
        if self.rules.end_after == Some(utterance) {
            let text =
                format!("Reply {turn}: I heard {secs} seconds from you. Thank you, goodbye.");
            return Some(self.reply(Some((utterance, heard_ms)), text, Some(ToolUse::EndCall)));
        }
        if let Some((n, user)) = &self.rules.transfer
            && *n == utterance
        {
            let text = format!("Reply {turn}: Let me transfer you to {user}.");
            let tool = Some(ToolUse::Transfer(user.clone()));
            return Some(self.reply(Some((utterance, heard_ms)), text, tool));
        }
        let text = format!("Reply {turn}: I heard {secs} seconds from you.");
        Some(self.reply(Some((utterance, heard_ms)), text, None))
    }

    /// Feeds caller audio (mono i16 at `rate_hz`); returns what it caused.
    pub fn push_audio(&mut self, samples: &[i16], rate_hz: u32) -> Vec<Act> {
        let mut acts = Vec::new();
        let block = (rate_hz / 100).max(1) as usize;
        let block_us = 10_000u64;
        self.pending.extend_from_slice(samples);
        let mut consumed = 0;
        while self.pending.len() - consumed >= block {
            let b = &self.pending[consumed..consumed + block];
            consumed += block;
            let energy: f64 = b.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
            let loud = (energy / block as f64).sqrt() >= self.hearing.speech_rms;
            let start = self.clock_us;
            self.clock_us += block_us;
            self.hear_block(loud, start, &mut acts);
            if let Some((turn, end)) = self.playing
                && self.clock_us >= end
            {
                self.playing = None;
                acts.push(Act::PlayoutDone { turn });
            }
        }
        self.pending.drain(..consumed);
        acts
    }

    fn hear_block(&mut self, loud: bool, start: u64, acts: &mut Vec<Act>) {
        let min_speech = self.hearing.min_speech.as_micros() as u64;
        let end_silence = self.hearing.end_silence.as_micros() as u64;
        match &mut self.ear {
            Ear::Silent { loud_since_us } => {
                if !loud {
                    *loud_since_us = None;
                    return;
                }
                let since = *loud_since_us.get_or_insert(start);
                if self.clock_us - since >= min_speech {
                    self.ear = Ear::Speaking {
                        start_us: since,
                        last_loud_end_us: self.clock_us,
                    };
                    acts.push(Act::SpeechStarted {
                        at_ms: since / 1000,
                    });
                    if let Some((turn, _)) = self.playing.take() {
                        acts.push(Act::Interrupt { turn });
                    }
                }
            }
            Ear::Speaking {
                start_us,
                last_loud_end_us,
            } => {
                if loud {
                    *last_loud_end_us = self.clock_us;
                } else if self.clock_us - *last_loud_end_us >= end_silence {
                    let heard_ms = ((*last_loud_end_us - *start_us) / 1000) as u32;
                    let at_ms = *last_loud_end_us / 1000;
                    self.ear = Ear::Silent {
                        loud_since_us: None,
                    };
                    self.conv.utterances += 1;
                    let utterance = self.conv.utterances;
                    acts.push(Act::SpeechStopped {
                        at_ms,
                        utterance,
                        heard_ms,
                    });
                    if let Some(r) = self.answer(utterance, heard_ms) {
                        acts.push(Act::Speak(r));
                    }
                }
            }
        }
    }
}

/// How long the simulator "speaks" `text`: 10 ms per character, 300–1500 ms.
pub fn speech_ms(text: &str) -> u32 {
    (text.len() as u32 * 10).clamp(300, 1500)
}

/// Deterministic speech-like audio for `turn`: a voiced tone (fundamental
/// plus two harmonics) with a 4 Hz syllable envelope, as i16 at `rate_hz`.
pub fn synth(turn: u32, ms: u32, rate_hz: u32) -> Vec<i16> {
    let n = (u64::from(rate_hz) * u64::from(ms) / 1000) as usize;
    let f0 = 120.0 + 15.0 * f64::from(turn % 6);
    let rate = f64::from(rate_hz);
    (0..n)
        .map(|i| {
            let t = i as f64 / rate;
            let tau = std::f64::consts::TAU;
            let voice = (tau * f0 * t).sin()
                + 0.5 * (tau * 2.0 * f0 * t).sin()
                + 0.25 * (tau * 3.0 * f0 * t).sin();
            let envelope = 0.5 * (1.0 - (tau * 4.0 * t).cos());
            (voice * envelope * 7000.0).round() as i16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(ms: u32, rate: u32) -> Vec<i16> {
        (0..rate * ms / 1000)
            .map(|i| if i % 8 < 4 { 4000 } else { -4000 })
            .collect()
    }

    fn silence(ms: u32, rate: u32) -> Vec<i16> {
        vec![0; (rate * ms / 1000) as usize]
    }

    #[test]
    fn greets_hears_answers_and_ends() {
        let mut s = Script::new(
            "Be nice. END_AFTER_TURNS=2",
            Hearing::default(),
            Conversation::default(),
        );
        let g = s.kickoff().unwrap();
        assert_eq!((g.turn, g.tool.clone()), (0, None));
        assert!(s.kickoff().is_none());
        // Greeting plays out on the audio clock.
        let acts = s.push_audio(&silence(g.audio_ms + 10, 16_000), 16_000);
        assert_eq!(acts, vec![Act::PlayoutDone { turn: 0 }]);
        // 1.2 s of speech, then silence.
        let mut acts = s.push_audio(&tone(1200, 16_000), 16_000);
        acts.extend(s.push_audio(&silence(600, 16_000), 16_000));
        assert!(matches!(acts[0], Act::SpeechStarted { .. }));
        assert!(matches!(
            acts[1],
            Act::SpeechStopped {
                utterance: 1,
                heard_ms: 1200,
                ..
            }
        ));
        let Act::Speak(r) = &acts[2] else {
            panic!("{acts:?}")
        };
        assert_eq!(r.turn, 1);
        assert_eq!(r.input_transcript().unwrap(), "[caller spoke 1.2 s]");
        assert_eq!(r.text, "Reply 1: I heard 1.2 seconds from you.");
        // Barge-in during reply 1.
        let acts = s.push_audio(&tone(400, 16_000), 16_000);
        assert!(matches!(acts[0], Act::SpeechStarted { .. }));
        assert_eq!(acts[1], Act::Interrupt { turn: 1 });
        let acts = s.push_audio(&silence(600, 16_000), 16_000);
        let Act::Speak(r) = &acts[1] else {
            panic!("{acts:?}")
        };
        assert_eq!(r.tool, Some(ToolUse::EndCall));
        assert!(r.text.ends_with("goodbye."));
        assert!(s.conversation().ended);
        let mut acts = s.push_audio(&tone(500, 16_000), 16_000);
        acts.extend(s.push_audio(&silence(600, 16_000), 16_000));
        assert!(
            !acts.iter().any(|a| matches!(a, Act::Speak(_))),
            "no reply after end_call"
        );
    }

    #[test]
    fn rules_from_the_prompt() {
        assert_eq!(Rules::parse("x END_AFTER_TURNS=3 y").end_after, Some(3));
        assert_eq!(
            Rules::parse("Say: this is a test, goodbye. Then end the call.").end_after,
            Some(0)
        );
        assert_eq!(Rules::parse("chat").end_after, None);
        assert_eq!(
            Rules::parse("TRANSFER_AFTER_TURNS=1:sales").transfer,
            Some((1, "sales".into()))
        );
        assert_eq!(Rules::parse("TRANSFER_AFTER_TURNS=1").transfer, None);
        let mut s = Script::new("end the call", Hearing::default(), Conversation::default());
        assert_eq!(s.kickoff().unwrap().tool, Some(ToolUse::EndCall));
    }

    #[test]
    fn resumed_conversations_count_on_and_audio_is_deterministic() {
        let conv = Conversation {
            ai_turns: 3,
            utterances: 2,
            ended: false,
        };
        let mut s = Script::new("", Hearing::default(), conv);
        assert!(s.kickoff().is_none());
        let mut acts = s.push_audio(&tone(300, 8_000), 8_000);
        acts.extend(s.push_audio(&silence(600, 8_000), 8_000));
        assert!(
            acts.iter()
                .any(|a| matches!(a, Act::Speak(r) if r.turn == 3 && r.heard == Some((3, 300))))
        );
        assert_eq!(synth(1, 100, 24_000), synth(1, 100, 24_000));
        assert_eq!(synth(1, 100, 24_000).len(), 2400);
        assert!(synth(1, 300, 8_000).iter().any(|&s| s > 3000));
    }
}
