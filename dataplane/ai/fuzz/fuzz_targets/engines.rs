//! A voice-AI session as a vendor's server may drive it: the sans-IO
//! Gemini Live and OpenAI Realtime engines fed arbitrary frames, between
//! the call's own commands (caller audio, text, tool results, truncation)
//! and connection ends (close codes, resumption on a new connection).
//!
//! Input: one flags byte (bit 0 OpenAI, bit 1 A-law for OpenAI, bit 2 no
//! kickoff text), then steps split at 0xFF (a byte no UTF-8 text holds, so
//! JSON in a step stays whole). A step's first byte says what it is; the
//! rest is its body.
//!
//! Asserts: no panic (a protocol error ends the session, as the driver
//! does); `Ready` at most once per session; every event bounded by the
//! frame it came from: audio no longer than the frame, PCM16 of whole
//! samples at 8–48 kHz, transcript fragments and ids no longer than the
//! frame, a whole turn's transcript within the engines' bound, `goAway`
//! within a day; and at most a few frames queued for the vendor per step.
#![no_main]

use bytes::Bytes;
use codeb_ai::config::{Codec, Endpoints, ModelChoice, SessionConfig};
use codeb_ai::gemini::GeminiEngine;
use codeb_ai::openai::OpenAiEngine;
use codeb_ai::transport::Outbox;
use codeb_ai::{Command, Engine, EngineEvent, Step};
use libfuzzer_sys::fuzz_target;

/// Frames one step may queue beyond one per piece of its body: a kickoff
/// text after `Ready`, a tool result, a truncation.
const FRAMES_PER_STEP: usize = 4;

/// The engines' bound on one turn's transcript, in characters.
const MAX_TRANSCRIPT_CHARS: usize = 16 * 1024;

fn engine(flags: u8) -> Box<dyn Engine> {
    let openai = flags & 1 != 0;
    let model = if openai {
        "openai/gpt-realtime"
    } else {
        "gemini-live-2.5-flash"
    };
    let model = ModelChoice::from_model(model).expect("a model string of ours");
    let endpoints = Endpoints::parse("ws://127.0.0.1:9", "ws://127.0.0.1:9").expect("our URLs");
    let mut cfg = SessionConfig::new(model, endpoints, "fuzz-key");
    if flags & 2 != 0 {
        cfg.telephony_codec = Codec::Pcma;
    }
    if flags & 4 != 0 {
        cfg.kickoff = None;
    }
    if openai {
        Box::new(OpenAiEngine::new(&cfg))
    } else {
        Box::new(GeminiEngine::new(&cfg))
    }
}

/// Checks the events one vendor frame of `len` bytes gave.
fn check(events: &[EngineEvent], len: usize, readies: &mut usize) {
    assert!(
        events.len() <= len + 8,
        "{} events from {len} bytes",
        events.len()
    );
    for e in events {
        match e {
            EngineEvent::Ready => *readies += 1,
            EngineEvent::Audio { data, format } => {
                assert!(data.len() <= len);
                assert!((8_000..=48_000).contains(&format.rate_hz), "{format:?}");
                if format.codec == Codec::PcmS16le {
                    assert!(data.len().is_multiple_of(2), "half a sample");
                }
            }
            // A fragment comes from this frame; a whole turn's text may
            // gather earlier frames' fragments, up to the engines' bound
            // (16 Ki characters).
            EngineEvent::InputTranscript { text, is_final }
            | EngineEvent::OutputTranscript { text, is_final } => {
                let bound = if *is_final {
                    len.max(4 * MAX_TRANSCRIPT_CHARS)
                } else {
                    len
                };
                assert!(text.len() <= bound, "{} bytes of transcript", text.len());
            }
            EngineEvent::OutputRevised { text } => {
                assert!(text.len() <= len.max(4 * MAX_TRANSCRIPT_CHARS));
            }
            EngineEvent::ToolCall { call_id, name, .. } => {
                assert!(!name.is_empty());
                assert!(call_id.len() + name.len() <= len);
            }
            EngineEvent::ToolCallCancelled { ids } => {
                assert!(ids.iter().map(String::len).sum::<usize>() <= len);
            }
            EngineEvent::GoAway { time_left_ms } => assert!(*time_left_ms <= 86_400_000),
            EngineEvent::Error { message, .. } => assert!(message.len() <= len.max(64)),
            EngineEvent::Closed { .. } => panic!("Closed is the driver's to send"),
            EngineEvent::Interrupted
            | EngineEvent::TurnComplete
            | EngineEvent::Usage(_)
            | EngineEvent::Resumed => {}
        }
    }
    assert!(*readies <= 1, "Ready twice");
}

fn command(body: &[u8]) -> Command {
    let (&kind, rest) = body.split_first().unwrap_or((&0, &[]));
    let text = String::from_utf8_lossy(rest).into_owned();
    match kind % 4 {
        0 => Command::Audio(Bytes::copy_from_slice(rest)),
        1 => Command::Text(text),
        2 => Command::ToolResult {
            call_id: text.clone(),
            name: "end_call".into(),
            output: serde_json::json!({ "result": text }),
        },
        _ => Command::Truncate {
            played_ms: rest
                .iter()
                .take(4)
                .fold(0u32, |n, b| n << 8 | u32::from(*b)),
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, script)) = data.split_first() else {
        return;
    };
    let mut engine = engine(flags);
    let mut out = Outbox::new();
    engine.on_open(&mut out).expect("the opening frames");
    let mut readies = 0;
    let mut events = Vec::new();
    for step in script.split(|b| *b == 0xFF).take(256) {
        let Some((&op, body)) = step.split_first() else {
            continue;
        };
        let before = out.len();
        let resumed = matches!(op % 8, 0..=4 | 7);
        events.clear();
        match op % 8 {
            // A text frame (binary frames reach the engine as text once
            // they are UTF-8; the driver refuses the others).
            0..=4 => {
                let text = String::from_utf8_lossy(body);
                match engine.on_message(&text, &mut events, &mut out) {
                    Ok(Step::Close { .. }) => {
                        check(&events, text.len(), &mut readies);
                        return;
                    }
                    Ok(Step::Reconnect) => {
                        check(&events, text.len(), &mut readies);
                        out = Outbox::new();
                        engine
                            .on_open(&mut out)
                            .expect("the frames of a resumption");
                    }
                    Ok(Step::Continue) => check(&events, text.len(), &mut readies),
                    Err(_) => return,
                }
            }
            5 => {
                if engine.on_audio(body, &mut out).is_err() {
                    return;
                }
            }
            6 => {
                if engine.on_command(command(body), &mut out).is_err() {
                    return;
                }
            }
            _ => {
                let code = (body.len() >= 2).then(|| u16::from_be_bytes([body[0], body[1]]));
                let reason = String::from_utf8_lossy(body.get(2..).unwrap_or_default());
                match engine.on_close(code, &reason, &mut events) {
                    Step::Close { .. } => return,
                    Step::Reconnect => {
                        out = Outbox::new();
                        engine
                            .on_open(&mut out)
                            .expect("the frames of a resumption");
                    }
                    Step::Continue => {}
                }
                assert!(events.iter().all(|e| !matches!(e, EngineEvent::Ready)));
            }
        }
        let queued = if resumed && out.len() < before {
            out.len()
        } else {
            out.len() - before
        };
        assert!(queued <= FRAMES_PER_STEP, "one step queued {queued} frames");
        if out.len() > 64 {
            // What the driver's writes would have taken by now.
            out = Outbox::new();
        }
    }
});
