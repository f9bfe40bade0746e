//! The voice-AI runtime's user-space work per WebSocket message, both
//! ways, without the kernel: a caller frame of audio into the bytes the
//! engine's socket is handed (engine JSON, base64, WebSocket framing and
//! mask, the write call on a socket that takes everything), and an
//! engine audio or transcript message into the session's events.
//!
//! cargo bench -p codeb-benches --bench ai -- --warm-up-time 1 --measurement-time 3

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use codeb_ai::gemini::GeminiEngine;
use codeb_ai::openai::OpenAiEngine;
use codeb_ai::transport::{Client, Io, Ws, ws_config};
use codeb_ai::{Codec, Endpoints, Engine, ModelChoice, SessionConfig};
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::SinkExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

/// A socket that takes every write at once and never has anything to
/// read.
struct Sink;

impl AsyncRead for Sink {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Pending
    }
}

impl AsyncWrite for Sink {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(black_box(buf).len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Io for Sink {
    fn poll_read_ready(&self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Pending
    }
}

fn ws() -> Ws {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let io: Box<dyn Io> = Box::new(Sink);
    rt.block_on(WebSocketStream::from_raw_socket(
        io,
        Role::Client,
        Some(ws_config()),
    ))
}

fn cfg(model: &str) -> SessionConfig {
    let mut c = SessionConfig::new(
        ModelChoice::from_model(model).unwrap(),
        Endpoints::parse("ws://127.0.0.1:1", "ws://127.0.0.1:1").unwrap(),
        "k",
    );
    c.telephony_codec = Codec::Pcmu;
    c
}

/// Speech-like bytes (the encoders do not care what they are).
fn audio(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 131 % 251) as u8).collect()
}

fn bench_caller_frames(c: &mut Criterion) {
    let mut cx = Context::from_waker(Waker::noop());
    let cases: [(&str, &str, usize); 3] = [
        ("gemini 20 ms (640 B PCM16 16 kHz)", "", 640),
        ("gemini 100 ms (3200 B PCM16 16 kHz)", "", 3200),
        ("openai 20 ms (160 B G.711)", "openai/gpt-realtime", 160),
    ];
    for (name, model, len) in cases {
        let pcm = audio(len);
        let mut engine: Box<dyn Engine> = if model.is_empty() {
            Box::new(GeminiEngine::new(&cfg(model)))
        } else {
            Box::new(OpenAiEngine::new(&cfg(model)))
        };
        let mut link = Client::new(ws());
        c.bench_function(&format!("ai caller frame -> wire, {name}"), |b| {
            b.iter(|| {
                engine.on_audio(black_box(&pcm), link.outbox()).unwrap();
                assert!(link.poll_send(&mut cx).is_ready());
            })
        });
    }
    // The way the frames went before the session wrote its own: a
    // `String` per message, handed to tungstenite, which copies it into
    // its write buffer, masks it there and writes on flush.
    for (name, head, tail, len) in [
        (
            "gemini 20 ms",
            r#"{"realtimeInput":{"audio":{"mimeType":"audio/pcm;rate=16000","data":""#,
            r#""}}}"#,
            640,
        ),
        (
            "gemini 100 ms",
            r#"{"realtimeInput":{"audio":{"mimeType":"audio/pcm;rate=16000","data":""#,
            r#""}}}"#,
            3200,
        ),
    ] {
        let pcm = audio(len);
        let mut ws = ws();
        c.bench_function(
            &format!("ai caller frame -> wire, {name}, String + tungstenite (before)"),
            |b| {
                b.iter(|| {
                    let n = base64::encoded_len(pcm.len(), true).unwrap();
                    let mut s = String::with_capacity(head.len() + n + tail.len());
                    s.push_str(head);
                    B64.encode_string(black_box(&pcm), &mut s);
                    s.push_str(tail);
                    assert!(ws.start_send_unpin(Message::text(s)).is_ok());
                    assert!(ws.poll_flush_unpin(&mut cx).is_ready());
                })
            },
        );
    }
}

fn bench_engine_audio(c: &mut Criterion) {
    // Gemini: 40 ms of PCM16 24 kHz, as the simulator (and Google) sends it.
    let data = B64.encode(audio(1920));
    let msg = serde_json::json!({"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": data}}]}}}).to_string();
    message_row(
        c,
        "ai engine audio message -> event, gemini 40 ms (1920 B)",
        &mut GeminiEngine::new(&cfg("")),
        &msg,
        None,
    );
    // The way it was read before (0cc8546): a JSON tree, the base64
    // copied into it, then decoded.
    c.bench_function(
        "ai engine audio message -> event, gemini 40 ms (1920 B), JSON tree (before)",
        |b| {
            b.iter(|| {
                let v: serde_json::Value = serde_json::from_str(black_box(&msg)).unwrap();
                let parts = v
                    .pointer("/serverContent/modelTurn/parts")
                    .and_then(serde_json::Value::as_array)
                    .unwrap();
                let mut n = 0;
                for p in parts {
                    let d = p
                        .pointer("/inlineData/data")
                        .and_then(serde_json::Value::as_str)
                        .unwrap();
                    n += bytes::Bytes::from(B64.decode(d).unwrap()).len();
                }
                n
            })
        },
    );
    // Its transcript, which comes beside every audio message: read
    // without a tree (e96fa1f), and with a field the engine ignores
    // beside it, which sends it the tree's way (what every transcript
    // cost before, plus the two borrowed reads that fail first).
    for (name, msg) in [
        (
            "ai engine transcript message -> event, gemini",
            serde_json::json!({"serverContent": {"outputTranscription": {"text": "a few words "}}}),
        ),
        (
            "ai engine transcript message -> event, gemini, JSON tree (before)",
            serde_json::json!({"serverContent": {"outputTranscription": {"text": "a few words "}}, "x": 1}),
        ),
    ] {
        let done = serde_json::json!({"serverContent": {"turnComplete": true}}).to_string();
        // The turn's end keeps the engine's transcript short.
        message_row(
            c,
            name,
            &mut GeminiEngine::new(&cfg("")),
            &msg.to_string(),
            Some(&done),
        );
    }
    let data = B64.encode(audio(320));
    let msg = serde_json::json!({"type": "response.output_audio.delta", "response_id": "resp_1", "item_id": "item_1", "output_index": 0, "content_index": 0, "delta": data}).to_string();
    message_row(
        c,
        "ai engine audio message -> event, openai 40 ms (320 B G.711)",
        &mut OpenAiEngine::new(&cfg("openai/gpt-realtime")),
        &msg,
        None,
    );
}

/// A criterion row: one vendor message through an engine to its events,
/// then `after`, if given, in the same iteration (what keeps the
/// engine's state from growing across iterations).
fn message_row<E: Engine>(
    c: &mut Criterion,
    name: &str,
    engine: &mut E,
    msg: &str,
    after: Option<&str>,
) {
    let (mut evs, mut out) = (Vec::new(), codeb_ai::transport::Outbox::new());
    c.bench_function(name, |b| {
        b.iter(|| {
            evs.clear();
            engine
                .on_message(black_box(msg), &mut evs, &mut out)
                .unwrap();
            if let Some(after) = after {
                engine.on_message(after, &mut evs, &mut out).unwrap();
            }
            evs.len()
        })
    });
}

criterion_group!(benches, bench_caller_frames, bench_engine_audio);
criterion_main!(benches);
