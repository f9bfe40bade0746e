//! The engines fed mutated vendor frames: whatever a vendor sends, an engine
//! returns events, a protocol error or nothing — it never panics.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use codeb_ai::gemini::GeminiEngine;
use codeb_ai::openai::OpenAiEngine;
use codeb_ai::transport::Outbox;
use codeb_ai::{Endpoints, Engine, ModelChoice, SessionConfig};
use serde_json::{Value, json};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn wild(rng: &mut Rng) -> Value {
    match rng.below(9) {
        0 => Value::Null,
        1 => json!(u64::MAX),
        2 => json!(-1),
        3 => json!(1.5e300),
        4 => json!("x".repeat(rng.below(70_000) as usize)),
        5 => json!("%%%not base64"),
        6 => json!([]),
        7 => json!({}),
        _ => json!(true),
    }
}

fn mutate(v: &mut Value, rng: &mut Rng) {
    match v {
        Value::Object(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                match rng.below(6) {
                    0 => {
                        m.insert(k, wild(rng));
                    }
                    1 => {
                        m.remove(&k);
                    }
                    _ => {
                        if let Some(child) = m.get_mut(&k) {
                            mutate(child, rng);
                        }
                    }
                }
            }
        }
        Value::Array(a) => {
            for child in a.iter_mut() {
                mutate(child, rng);
            }
            if rng.below(4) == 0 {
                a.push(wild(rng));
            }
        }
        other => {
            if rng.below(3) == 0 {
                *other = wild(rng);
            }
        }
    }
}

fn gemini_corpus() -> Vec<Value> {
    vec![
        json!({"setupComplete": {}}),
        json!({"serverContent": {"inputTranscription": {"text": "hi"}}}),
        json!({"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": "AAAA"}}]}}}),
        json!({"serverContent": {"outputTranscription": {"text": "Hello"}, "interrupted": true, "turnComplete": true, "generationComplete": true}}),
        json!({"toolCall": {"functionCalls": [{"id": "fc-1", "name": "end_call", "args": {"reason": "x"}}]}}),
        json!({"toolCallCancellation": {"ids": ["fc-1"]}}),
        json!({"goAway": {"timeLeft": "9.5s"}}),
        json!({"sessionResumptionUpdate": {"newHandle": "h", "resumable": true}}),
        json!({"serverContent": {"turnComplete": true}, "usageMetadata": {"promptTokenCount": 1, "responseTokenCount": 2, "totalTokenCount": 3}}),
    ]
}

fn openai_corpus() -> Vec<Value> {
    vec![
        json!({"type": "session.updated", "session": {}}),
        json!({"type": "input_audio_buffer.speech_started", "item_id": "i"}),
        json!({"type": "conversation.item.input_audio_transcription.completed", "transcript": "hi"}),
        json!({"type": "response.output_audio.delta", "item_id": "i", "delta": "AAAA"}),
        json!({"type": "response.output_audio_transcript.delta", "delta": "He"}),
        json!({"type": "response.output_audio_transcript.done", "transcript": "Hello"}),
        json!({"type": "response.function_call_arguments.done", "call_id": "c", "name": "end_call", "arguments": "{}"}),
        json!({"type": "response.done", "response": {"usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}}}),
        json!({"type": "error", "error": {"code": "x", "message": "y"}}),
    ]
}

fn run(engine: &mut dyn Engine, corpus: &[Value], rng: &mut Rng, rounds: usize) {
    let mut out = Outbox::new();
    engine.on_open(&mut out).unwrap();
    for _ in 0..rounds {
        let mut v = corpus[rng.below(corpus.len() as u64) as usize].clone();
        mutate(&mut v, rng);
        let (mut ev, mut out) = (Vec::new(), Outbox::new());
        let _ = engine.on_message(&v.to_string(), &mut ev, &mut out);
        if rng.below(50) == 0 {
            let _ = engine.on_close(Some(rng.below(5000) as u16), "x", &mut ev);
            engine.on_open(&mut out).unwrap();
        }
    }
    // Not JSON at all.
    let _ = engine.on_message("\u{0}{[", &mut Vec::new(), &mut Outbox::new());
}

fn cfg(model: &str) -> SessionConfig {
    let e = Endpoints::parse("ws://127.0.0.1:1", "ws://127.0.0.1:1").unwrap();
    SessionConfig::new(ModelChoice::from_model(model).unwrap(), e, "k")
}

#[test]
fn gemini_survives_mutated_frames() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    run(
        &mut GeminiEngine::new(&cfg("")),
        &gemini_corpus(),
        &mut rng,
        20_000,
    );
}

#[test]
fn openai_survives_mutated_frames() {
    let mut rng = Rng(0xd1b5_4a32_d192_ed03);
    run(
        &mut OpenAiEngine::new(&cfg("openai/gpt-realtime")),
        &openai_corpus(),
        &mut rng,
        20_000,
    );
}
