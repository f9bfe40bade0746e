//! The simulators on the wire, seen by a raw WebSocket client: frame types,
//! the vendors' tolerated spellings, and their error and close codes.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use codeb_ai::EngineError;
use codeb_ai::config::{GEMINI_PATH, OPENAI_PATH};
use codeb_ai::sim::Vendor;
use codeb_ai::transport::{Ws, connect};
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

async fn raw(url: &str, headers: &[(&'static str, String)]) -> Ws {
    connect(&url::Url::parse(url).unwrap(), headers, None)
        .await
        .unwrap()
}

async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

/// Next JSON message; asserts it came in a binary frame (`binary`) or a text one.
async fn next_json(ws: &mut Ws, binary: bool) -> Value {
    match next(ws).await {
        Message::Binary(b) if binary => serde_json::from_slice(&b).unwrap(),
        Message::Text(t) if !binary => serde_json::from_str(t.as_str()).unwrap(),
        other => panic!("unexpected frame {other:?}"),
    }
}

async fn close_of(ws: &mut Ws) -> (u16, String) {
    loop {
        if let Message::Close(Some(f)) = next(ws).await {
            return (u16::from(f.code), f.reason.as_str().to_owned());
        }
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

fn pcm_b64(ms: u32, loud: bool) -> String {
    let samples: Vec<u8> = (0..16 * ms)
        .flat_map(|i| {
            (if loud && i % 16 < 8 {
                5000i16
            } else if loud {
                -5000
            } else {
                0
            })
            .to_le_bytes()
        })
        .collect();
    B64.encode(samples)
}

#[tokio::test]
async fn gemini_sends_binary_json_and_takes_snake_case_and_media_chunks() {
    let sim = sim(Vendor::Gemini, sim_cfg()).await;
    let mut ws = raw(&format!("{}{GEMINI_PATH}?key=sim-key", sim.url()), &[]).await;
    send(
        &mut ws,
        json!({"setup": {"model": "models/gemini-x", "generation_config": {"response_modalities": "audio"},
                         "system_instruction": {"parts": [{"text": "chat"}]}}}),
    )
    .await;
    assert_eq!(next_json(&mut ws, true).await, json!({"setupComplete": {}}));
    send(&mut ws, json!({"client_content": {"turns": [{"role": "user", "parts": [{"text": "hi"}]}], "turn_complete": true}})).await;
    let first = next_json(&mut ws, true).await;
    let inline = &first["serverContent"]["modelTurn"]["parts"][0]["inlineData"];
    assert_eq!(inline["mimeType"], "audio/pcm;rate=24000");
    assert_eq!(
        B64.decode(inline["data"].as_str().unwrap()).unwrap().len(),
        40 * 24 * 2
    );
    // Deprecated mediaChunks still carry audio: 0.7 s silence, 0.5 s speech, 0.6 s silence.
    for (ms, loud) in [(700, false), (500, true), (600, false)] {
        send(&mut ws, json!({"realtimeInput": {"mediaChunks": [{"mimeType": "audio/pcm;rate=16000", "data": pcm_b64(ms, loud)}]}})).await;
    }
    loop {
        let m = next_json(&mut ws, true).await;
        if let Some(t) = m.pointer("/serverContent/inputTranscription/text") {
            assert_eq!(t, "[caller spoke 0.5 s]");
            break;
        }
        assert!(m.get("sessionResumptionUpdate").is_none(), "not asked for");
    }
}

#[tokio::test]
async fn gemini_rejects_what_google_rejects() {
    let sim = sim(Vendor::Gemini, sim_cfg()).await;
    let url = format!("{}{GEMINI_PATH}?key=sim-key", sim.url());

    let mut ws = raw(&url, &[]).await;
    send(&mut ws, json!({"setup": {"model": "models/x", "generationConfig": {"inputAudioTranscription": {}}}})).await;
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 1007);
    assert!(
        reason.contains(r#"Unknown name "inputAudioTranscription" at 'setup.generation_config'"#),
        "{reason}"
    );

    let mut ws = raw(&url, &[]).await;
    send(
        &mut ws,
        json!({"realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=16000", "data": ""}}}),
    )
    .await;
    assert_eq!(close_of(&mut ws).await.0, 1007, "setup must come first");

    let mut ws = raw(&url, &[]).await;
    send(
        &mut ws,
        json!({"setup": {"model": "models/x", "sessionResumption": {"handle": "forged"}}}),
    )
    .await;
    assert_eq!(close_of(&mut ws).await.0, 1007);

    let mut ws = raw(&url, &[]).await;
    send(&mut ws, json!({"setup": {"model": "models/x"}})).await;
    next_json(&mut ws, true).await;
    send(&mut ws, json!({"toolResponse": {"functionResponses": [{"id": "fc-nope", "name": "end_call", "response": {}}]}})).await;
    assert_eq!(close_of(&mut ws).await.0, 1007, "a response to no call");

    let wrong_path = format!("{}/ws/other?key=sim-key", sim.url());
    let Err(err) = connect(&url::Url::parse(&wrong_path).unwrap(), &[], None).await else {
        panic!("a wrong path must not upgrade");
    };
    assert!(
        matches!(err, EngineError::Rejected { code: 404, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn openai_speaks_text_frames_and_refuses_beta_clients() {
    let sim = sim(Vendor::OpenAi, sim_cfg()).await;
    let url = format!("{}{OPENAI_PATH}?model=gpt-realtime", sim.url());
    let auth = vec![("authorization", "Bearer sim-key".to_owned())];

    let mut ws = raw(&url, &auth).await;
    let created = next_json(&mut ws, false).await;
    assert_eq!(created["type"], "session.created");
    assert_eq!(created["session"]["model"], "gpt-realtime");
    assert!(created["event_id"].as_str().unwrap().starts_with("event_"));
    send(&mut ws, json!({"type": "response.cancel"})).await;
    let e = next_json(&mut ws, false).await;
    assert_eq!(
        (e["type"].as_str(), e["error"]["code"].as_str()),
        (Some("error"), Some("response_cancel_not_active"))
    );
    send(&mut ws, json!({"type": "no.such.event"})).await;
    assert_eq!(
        next_json(&mut ws, false).await["error"]["type"],
        "invalid_request_error"
    );
    send(&mut ws, json!({"type": "session.update", "session": {"modalities": ["audio"], "input_audio_format": "g711_ulaw"}})).await;
    assert_eq!(
        close_of(&mut ws).await,
        (4000, "beta_api_shape_disabled".to_owned())
    );

    let mut beta = auth.clone();
    beta.push(("openai-beta", "realtime=v1".to_owned()));
    let mut ws = raw(&url, &beta).await;
    assert_eq!(close_of(&mut ws).await.0, 4000);

    let mut ws = raw(&format!("{}{OPENAI_PATH}", sim.url()), &auth).await;
    assert_eq!(
        next_json(&mut ws, false).await["error"]["code"],
        "missing_model"
    );
}

#[tokio::test]
async fn gemini_honours_no_interruption_and_the_clients_silence() {
    let sim = sim(Vendor::Gemini, sim_cfg()).await;
    let mut ws = raw(&format!("{}{GEMINI_PATH}?key=sim-key", sim.url()), &[]).await;
    send(
        &mut ws,
        json!({"setup": {"model": "models/x", "realtimeInputConfig": {
            "automaticActivityDetection": {"silenceDurationMs": 200}, "activityHandling": "NO_INTERRUPTION"}}}),
    )
    .await;
    next_json(&mut ws, true).await;
    send(&mut ws, json!({"realtimeInput": {"text": "hi"}})).await;
    // Speak over the greeting, then 250 ms of silence: enough with 200 ms.
    for (ms, loud) in [(100, false), (400, true), (250, false)] {
        send(&mut ws, json!({"realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=16000", "data": pcm_b64(ms, loud)}}})).await;
    }
    loop {
        let m = next_json(&mut ws, true).await;
        assert!(
            m.pointer("/serverContent/interrupted").is_none(),
            "NO_INTERRUPTION"
        );
        if m.pointer("/serverContent/inputTranscription/text")
            .is_some()
        {
            break;
        }
    }
}

#[tokio::test]
async fn sessions_refuse_partial_samples_locally() {
    let sim = sim(Vendor::Gemini, sim_cfg()).await;
    let (session, _rx) = codeb_ai::connect(config(&sim, "", "sim-key", "chat"))
        .await
        .unwrap();
    let err = session
        .send_audio(bytes::Bytes::from_static(&[1, 2, 3]))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Invalid(_)));
    assert!(
        session
            .try_send_audio(bytes::Bytes::from(vec![0u8; 300 * 1024]))
            .is_err()
    );
    session
        .try_send_audio(bytes::Bytes::from(vec![0u8; 640]))
        .unwrap();
}

#[tokio::test]
async fn an_empty_simulator_key_accepts_any_key_but_none() {
    let mut sc = sim_cfg();
    sc.api_key = String::new();
    let gemini = sim(Vendor::Gemini, sc.clone()).await;
    let openai = sim(Vendor::OpenAi, sc).await;
    codeb_ai::connect(config(&gemini, "", "AIza-anything", "chat"))
        .await
        .unwrap();
    codeb_ai::connect(config(
        &openai,
        "openai/gpt-realtime",
        "sk-anything",
        "chat",
    ))
    .await
    .unwrap();
    let Err(EngineError::Rejected { code: 1007, .. }) =
        codeb_ai::connect(config(&gemini, "", "", "chat")).await
    else {
        panic!("an empty key is no key");
    };
}
