//! Our OpenAI Realtime client against the OpenAI simulator over real sockets.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use codeb_ai::sim::{SimRecord, Vendor};
use codeb_ai::{AudioFormat, Codec, EngineError, EngineEvent, Provider};
use common::*;
use serde_json::json;

const GREETING: &str = "Hello, this is the CodeB voice simulator. How can I help you today?";

#[tokio::test]
async fn a_whole_conversation_in_g711() {
    let sim = sim(Vendor::OpenAi, sim_cfg()).await;
    let mut cfg = config(
        &sim,
        "openai/gpt-realtime",
        "sim-key",
        "Be kind. END_AFTER_TURNS=2",
    );
    cfg.voice = Some("marin".into());
    let mut c = Caller::connect(cfg).await;
    assert_eq!(c.session.provider(), Provider::OpenAi);
    assert_eq!(c.session.input_format(), AudioFormat::PCMU);

    c.until("ready", |e| *e == EngineEvent::Ready).await;
    let (text, evs) = c.ai_says().await;
    assert_eq!(text, GREETING);
    // 670 ms of μ-law at 8 kHz, no transcoding.
    assert_eq!(audio_bytes(&evs, AudioFormat::PCMU), 670 * 8);
    c.until("greeting usage", |e| matches!(e, EngineEvent::Usage(_)))
        .await;
    c.until("greeting done", |e| *e == EngineEvent::TurnComplete)
        .await;

    c.silence(700).await;
    c.speak(1200).await;
    c.silence(400).await;
    // Every speech start is a barge-in signal; nothing is playing here.
    c.until("speech started", |e| *e == EngineEvent::Interrupted)
        .await;
    let evs = c
        .until("caller transcript", |e| {
            matches!(e, EngineEvent::InputTranscript { is_final: true, .. })
        })
        .await;
    assert_eq!(
        evs.last(),
        Some(&EngineEvent::InputTranscript {
            text: "[caller spoke 1.2 s]".into(),
            is_final: true
        })
    );
    let (text, evs) = c.ai_says().await;
    assert_eq!(text, "Reply 1: I heard 1.2 seconds from you.");
    assert_eq!(audio_bytes(&evs, AudioFormat::PCMU), 380 * 8);
    c.until("reply 1 done", |e| *e == EngineEvent::TurnComplete)
        .await;

    // Barge-in during reply 1: flush, then tell the server what was played.
    c.speak(400).await;
    c.until("barge-in", |e| *e == EngineEvent::Interrupted)
        .await;
    c.session.truncate(160).await.unwrap();
    assert!(
        sim.wait_for(WAIT, |r| r.iter().any(|r| matches!(
            r,
            SimRecord::Truncated {
                audio_end_ms: 160,
                ..
            }
        )))
        .await
    );

    c.silence(400).await;
    let (text, _) = c.ai_says().await;
    assert_eq!(
        text,
        "Reply 2: I heard 0.4 seconds from you. Thank you, goodbye."
    );
    let evs = c
        .until("end_call", |e| matches!(e, EngineEvent::ToolCall { .. }))
        .await;
    let Some(EngineEvent::ToolCall {
        call_id,
        name,
        args,
    }) = evs.last().cloned()
    else {
        unreachable!()
    };
    assert_eq!(
        (name.as_str(), args),
        ("end_call", json!({"reason": "finished"}))
    );
    c.until("goodbye done", |e| *e == EngineEvent::TurnComplete)
        .await;
    c.session
        .tool_result(&call_id, &name, json!({"ok": true}))
        .await
        .unwrap();
    // The response to the tool output says nothing: usage, but no AI turn.
    let evs = c
        .until("post-tool usage", |e| matches!(e, EngineEvent::Usage(_)))
        .await;
    assert!(!evs.contains(&EngineEvent::TurnComplete));

    c.session.close().await.unwrap();
    let evs = c
        .until("closed", |e| matches!(e, EngineEvent::Closed { .. }))
        .await;
    let Some(EngineEvent::Closed { code, error, usage }) = evs.last().cloned() else {
        unreachable!()
    };
    assert_eq!((code, error), (Some(1000), None));

    let recs = sim.records();
    let turns: Vec<u32> = recs
        .iter()
        .filter_map(|r| match r {
            SimRecord::Said { turn, .. } => Some(*turn),
            _ => None,
        })
        .collect();
    assert_eq!(turns, vec![0, 1, 2]);
    assert!(recs.contains(&SimRecord::Heard {
        utterance: 1,
        ms: 1200
    }));
    assert!(recs.contains(&SimRecord::Heard {
        utterance: 2,
        ms: 400
    }));
    assert!(recs.contains(&SimRecord::Interrupted { turn: 1 }));
    assert!(recs.contains(&SimRecord::ToolResponse {
        call_id,
        response: json!("{\"ok\":true}")
    }));
    let setup = recs.iter().find_map(|r| match r {
        SimRecord::Setup(s) => Some(s.clone()),
        _ => None,
    });
    let setup = setup.unwrap();
    assert_eq!(setup["audio"]["output"]["voice"], "marin");
    assert_eq!(setup["audio"]["input"]["format"]["type"], "audio/pcmu");
    assert_eq!(setup["instructions"], "Be kind. END_AFTER_TURNS=2");
    let (mut t, mut n) = (0, 0);
    for rec in &recs {
        if let SimRecord::Usage { total, .. } = rec {
            (t, n) = (t + total, n + 1);
        }
    }
    assert_eq!(n, 4, "greeting, two replies, the post-tool response");
    assert_eq!((usage.total_tokens, usage.reports), (t, 4));
    assert_eq!(usage.audio_in_us, 3_100_000);
}

#[tokio::test]
async fn a_law_and_transfer_to_user() {
    let sim = sim(Vendor::OpenAi, sim_cfg()).await;
    let mut cfg = config(
        &sim,
        "gpt-realtime",
        "sim-key",
        "TRANSFER_AFTER_TURNS=1:sales",
    );
    cfg.telephony_codec = Codec::Pcma;
    let mut c = Caller::connect(cfg).await;
    assert_eq!(c.session.input_format(), AudioFormat::PCMA);
    let (_, evs) = c.ai_says().await;
    assert_eq!(audio_bytes(&evs, AudioFormat::PCMA), 670 * 8);
    c.silence(700).await;
    c.speak(500).await;
    c.silence(400).await;
    let evs = c
        .until("transfer", |e| matches!(e, EngineEvent::ToolCall { .. }))
        .await;
    let Some(EngineEvent::ToolCall { name, args, .. }) = evs.last().cloned() else {
        unreachable!()
    };
    assert_eq!(
        (name.as_str(), args),
        ("transfer_to_user", json!({"user": "sales"}))
    );
    assert!(sim.records().contains(&SimRecord::Heard {
        utterance: 1,
        ms: 500
    }));
}

/// The server as spare and out of order as it may be: the caller's
/// transcript after the response to it, and the function call's arguments
/// without its name (our client takes it from the call's output item).
#[tokio::test]
async fn a_late_transcript_and_a_nameless_function_call() {
    let sim = sim(
        Vendor::OpenAi,
        codeb_ai::sim::SimConfig {
            late_transcripts: true,
            ..sim_cfg()
        },
    )
    .await;
    let cfg = config(
        &sim,
        "gpt-realtime",
        "sim-key",
        "TRANSFER_AFTER_TURNS=1:sales",
    );
    let mut c = Caller::connect(cfg).await;
    c.ai_says().await;
    c.silence(700).await;
    c.speak(500).await;
    c.silence(400).await;
    let evs = c
        .until("transfer", |e| matches!(e, EngineEvent::ToolCall { .. }))
        .await;
    assert!(
        !evs.iter()
            .any(|e| matches!(e, EngineEvent::InputTranscript { is_final: true, .. })),
        "the transcript comes after the response: {}",
        summary(&evs)
    );
    let Some(EngineEvent::ToolCall { name, args, .. }) = evs.last().cloned() else {
        unreachable!()
    };
    assert_eq!(
        (name.as_str(), args),
        ("transfer_to_user", json!({"user": "sales"}))
    );
    let evs = c
        .until("caller transcript", |e| {
            matches!(e, EngineEvent::InputTranscript { is_final: true, .. })
        })
        .await;
    assert!(
        evs.contains(&EngineEvent::TurnComplete),
        "after the response's end: {}",
        summary(&evs)
    );
    assert_eq!(
        evs.last(),
        Some(&EngineEvent::InputTranscript {
            text: "[caller spoke 0.5 s]".into(),
            is_final: true
        })
    );
}

#[tokio::test]
async fn a_wrong_key_is_a_clean_rejection() {
    let sim = sim(Vendor::OpenAi, sim_cfg()).await;
    let err = codeb_ai::connect(config(&sim, "openai/gpt-realtime", "sk-wrong", "hi"))
        .await
        .unwrap_err();
    let EngineError::Rejected {
        code,
        kind,
        message,
    } = err
    else {
        panic!("{err:?}")
    };
    assert_eq!((code, kind.as_deref()), (3000, Some("invalid_api_key")));
    assert!(
        message.starts_with("Incorrect API key provided"),
        "{message}"
    );
    assert!(
        !message.contains("sk-wrong"),
        "the key is not echoed in full"
    );
    assert!(sim.records().contains(&SimRecord::Rejected { code: 3000 }));
}

#[tokio::test]
async fn a_voice_openai_does_not_have_fails_the_session_cleanly() {
    // Gemini's default voice named for an OpenAI model: OpenAI answers
    // the session.update with an error, and the session must end with
    // it, not wait for a readiness that never comes.
    let sim = sim(Vendor::OpenAi, sim_cfg()).await;
    let mut cfg = config(&sim, "openai/gpt-realtime", "sim-key", "hi");
    cfg.voice = Some("Aoede".into());
    let err = tokio::time::timeout(WAIT, codeb_ai::connect(cfg))
        .await
        .expect("no hang");
    let Some(EngineError::Rejected {
        code,
        kind,
        message,
    }) = err.err()
    else {
        panic!("not a rejection")
    };
    assert_eq!((code, kind.as_deref()), (400, Some("invalid_value")));
    assert!(message.starts_with("Invalid value: 'Aoede'"), "{message}");
}
