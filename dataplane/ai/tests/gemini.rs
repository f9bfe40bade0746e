//! Our Gemini Live client against the Gemini simulator over real sockets.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use codeb_ai::sim::{SimRecord, Vendor, gemini::BAD_KEY_REASON};
use codeb_ai::{AudioFormat, EngineError, EngineEvent, Provider, Usage};
use common::*;
use serde_json::json;

/// A Gemini simulator with `cfg`, and a caller connected to it with
/// `prompt`; the server comes back too, as dropping it stops it.
async fn gemini(cfg: codeb_ai::sim::SimConfig, prompt: &str) -> (codeb_ai::sim::SimServer, Caller) {
    let sim = sim(Vendor::Gemini, cfg).await;
    let model = "models/gemini-2.5-flash-native-audio-preview-12-2025";
    let c = Caller::connect(config(&sim, model, "sim-key", prompt)).await;
    (sim, c)
}

const GREETING: &str = "Hello, this is the CodeB voice simulator. How can I help you today?";

#[tokio::test]
async fn a_whole_conversation_turn_by_turn() {
    let (sim, mut c) = gemini(sim_cfg(), "Be kind. END_AFTER_TURNS=2").await;
    assert_eq!(c.session.provider(), Provider::Gemini);
    assert_eq!(c.session.input_format(), AudioFormat::PCM16_16K);

    // Ready, then the greeting (asked for by the kickoff turn): 670 ms at 24 kHz.
    let evs = c.until("ready", |e| *e == EngineEvent::Ready).await;
    assert_eq!(evs.len(), 1);
    let (text, evs) = c.ai_says().await;
    assert_eq!(text, GREETING);
    assert_eq!(audio_bytes(&evs, AudioFormat::PCM16_24K), 670 * 24 * 2);
    let fragments: String = evs
        .iter()
        .filter_map(|e| match e {
            EngineEvent::OutputTranscript {
                text,
                is_final: false,
            } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(fragments, GREETING);
    c.until("greeting turn complete", |e| {
        *e == EngineEvent::TurnComplete
    })
    .await;

    // The greeting plays out (its usage comes with its turnComplete,
    // once it has played by the audio clock); the caller speaks 1.2 s;
    // the AI answers.
    c.silence(700).await;
    c.until("greeting usage", |e| matches!(e, EngineEvent::Usage(_)))
        .await;
    c.speak(1200).await;
    c.silence(400).await;
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
    assert_eq!(audio_bytes(&evs, AudioFormat::PCM16_24K), 380 * 24 * 2);
    c.until("reply 1 complete", |e| *e == EngineEvent::TurnComplete)
        .await;

    // The caller talks over reply 1 (still playing by the audio clock).
    c.speak(400).await;
    c.until("barge-in", |e| *e == EngineEvent::Interrupted)
        .await;

    // Second utterance: the prompt's rule makes this the goodbye + end_call.
    c.silence(400).await;
    // The goodbye is spoken, then end_call; the turn (and its final
    // transcript) waits for the tool response.
    let evs = c
        .until("end_call", |e| matches!(e, EngineEvent::ToolCall { .. }))
        .await;
    assert!(!evs.iter().any(|e| matches!(
        e,
        EngineEvent::TurnComplete | EngineEvent::OutputTranscript { is_final: true, .. }
    )));
    assert_eq!(audio_bytes(&evs, AudioFormat::PCM16_24K), 580 * 24 * 2);
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
    c.session
        .tool_result(&call_id, &name, json!({"ok": true}))
        .await
        .unwrap();
    let (text, _) = c.ai_says().await;
    assert_eq!(
        text,
        "Reply 2: I heard 0.4 seconds from you. Thank you, goodbye."
    );
    c.until("goodbye turn complete", |e| *e == EngineEvent::TurnComplete)
        .await;
    // Its usage once it has played.
    c.silence(600).await;
    c.until("goodbye usage", |e| matches!(e, EngineEvent::Usage(_)))
        .await;

    c.session.close().await.unwrap();
    let evs = c
        .until("closed", |e| matches!(e, EngineEvent::Closed { .. }))
        .await;
    let Some(EngineEvent::Closed { code, error, usage }) = evs.last().cloned() else {
        unreachable!()
    };
    assert_eq!((code, error), (Some(1000), None));

    // Every turn, as the simulator saw it.
    let recs = sim.records();
    let said: Vec<(u32, u32)> = recs
        .iter()
        .filter_map(|r| match r {
            SimRecord::Said { turn, audio_ms, .. } => Some((*turn, *audio_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(said.iter().map(|s| s.0).collect::<Vec<_>>(), vec![0, 1, 2]);
    let heard: Vec<_> = recs
        .iter()
        .filter(|r| matches!(r, SimRecord::Heard { .. }))
        .cloned()
        .collect();
    assert_eq!(
        heard,
        vec![
            SimRecord::Heard {
                utterance: 1,
                ms: 1200
            },
            SimRecord::Heard {
                utterance: 2,
                ms: 400
            }
        ]
    );
    assert!(recs.contains(&SimRecord::Interrupted { turn: 1 }));
    assert!(recs.contains(&SimRecord::ToolResponse {
        call_id,
        response: json!({"ok": true})
    }));
    let setup = recs.iter().find_map(|r| match r {
        SimRecord::Setup(s) => Some(s.clone()),
        _ => None,
    });
    let setup = setup.unwrap();
    assert_eq!(
        setup["generationConfig"]["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"],
        "Aoede"
    );
    assert_eq!(
        setup["systemInstruction"]["parts"][0]["text"],
        "Be kind. END_AFTER_TURNS=2"
    );

    // Usage: the sum of what the simulator reported, one report per turn.
    let (mut p, mut r, mut t, mut n) = (0, 0, 0, 0);
    for rec in &recs {
        if let SimRecord::Usage {
            prompt,
            response,
            total,
        } = rec
        {
            (p, r, t, n) = (p + prompt, r + response, t + total, n + 1);
        }
    }
    assert_eq!(n, 3);
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.response_tokens,
            usage.total_tokens,
            usage.reports
        ),
        (p, r, t, 3)
    );
    assert_eq!(usage.tokens_total(), t);
    // Audio clock: 0.7 + 1.2 + 0.4 + 0.4 + 0.4 + 0.6 s sent; 0.67 + 0.38 + 0.58 s received.
    assert_eq!(usage.audio_in_us, 3_700_000);
    assert_eq!(usage.audio_out_us, 670_000 + 380_000 + 580_000);
}

#[tokio::test]
async fn a_wrong_key_is_a_clean_rejection() {
    let sim = sim(Vendor::Gemini, sim_cfg()).await;
    let cfg = config(&sim, "", "not-the-key", "hi");
    let err = codeb_ai::connect(cfg).await.unwrap_err();
    assert_eq!(
        err,
        EngineError::Rejected {
            code: 1007,
            kind: None,
            message: BAD_KEY_REASON.into()
        }
    );
    assert!(sim.records().contains(&SimRecord::Rejected { code: 1007 }));
}

/// A Gemini simulator whose connections live `life_ms` of caller audio,
/// with `goAway` `notice_ms` before; a caller that has heard the greeting,
/// spoken 0.8 s and heard the reply; the events of that reply.
async fn until_reply_one(
    life_ms: u64,
    notice_ms: u64,
) -> (codeb_ai::sim::SimServer, Caller, Vec<EngineEvent>) {
    let mut sc = sim_cfg();
    sc.connection_lifetime = Some(Duration::from_millis(life_ms));
    sc.go_away_notice = Duration::from_millis(notice_ms);
    let sim = sim(Vendor::Gemini, sc).await;
    let mut c = Caller::connect(config(&sim, "gemini-live-2.5-flash", "sim-key", "chat")).await;
    assert_eq!(c.ai_says().await.0, GREETING);
    c.silence(700).await;
    c.speak(800).await;
    c.silence(400).await;
    let (text, evs) = c.ai_says().await;
    assert_eq!(text, "Reply 1: I heard 0.8 seconds from you.");
    (sim, c, evs)
}

#[tokio::test]
async fn go_away_resumes_transparently_and_the_conversation_continues() {
    let (sim, mut c, _) = until_reply_one(3000, 500).await;
    // Audio clock passes 2.5 s: goAway. No model turn follows, so the
    // client waits for one (the caller might be speaking); the connection
    // closes at 3 s and the client resumes then, on a new connection.
    c.silence(1300).await;
    let evs = c.until("resumed", |e| *e == EngineEvent::Resumed).await;
    assert!(
        evs.contains(&EngineEvent::GoAway { time_left_ms: 500 }),
        "{}",
        summary(&evs)
    );
    assert!(
        !evs.iter()
            .any(|e| matches!(e, EngineEvent::Closed { .. } | EngineEvent::Ready))
    );
    // Same conversation: the next utterance is number 2, the next turn is 2.
    c.speak(800).await;
    c.silence(400).await;
    let (text, evs) = c.ai_says().await;
    assert_eq!(text, "Reply 2: I heard 0.8 seconds from you.");
    assert!(evs.contains(&EngineEvent::InputTranscript {
        text: "[caller spoke 0.8 s]".into(),
        is_final: true
    }));
    let recs = sim.records();
    assert!(recs.contains(&SimRecord::GoAway));
    assert_eq!(
        recs.iter()
            .filter(|r| matches!(r, SimRecord::Connected { .. }))
            .cloned()
            .collect::<Vec<_>>(),
        vec![
            SimRecord::Connected { resumed: false },
            SimRecord::Connected { resumed: true }
        ]
    );
    assert!(recs.contains(&SimRecord::Heard {
        utterance: 2,
        ms: 800
    }));
    // Only one greeting in the whole call.
    assert_eq!(
        recs.iter()
            .filter(|r| matches!(r, SimRecord::Said { turn: 0, .. }))
            .count(),
        1
    );
}

/// After `goAway` the client moves to a new connection at the end of the
/// next answered turn, its `turnComplete` (which carries the turn's usage
/// and comes once the turn has played by the audio clock), not at its
/// `generationComplete`: the usage of every turn arrives, none is left on
/// the old connection.
#[tokio::test]
async fn go_away_moves_after_the_turns_usage_has_come() {
    let (sim, mut c, evs) = until_reply_one(6000, 5000).await;
    assert!(
        evs.iter().any(|e| matches!(e, EngineEvent::GoAway { .. })),
        "{}",
        summary(&evs)
    );
    // Reply 1 plays; its turnComplete brings its usage, then the move.
    c.silence(500).await;
    let evs = c.until("resumed", |e| *e == EngineEvent::Resumed).await;
    assert!(
        evs.iter().any(|e| matches!(e, EngineEvent::Usage(_))),
        "reply 1's usage before the move: {}",
        summary(&evs)
    );
    c.session.close().await.unwrap();
    let evs = c
        .until("closed", |e| matches!(e, EngineEvent::Closed { .. }))
        .await;
    let Some(EngineEvent::Closed { usage, .. }) = evs.last().cloned() else {
        unreachable!()
    };
    let reported = sim
        .records()
        .iter()
        .filter(|r| matches!(r, SimRecord::Usage { .. }))
        .count();
    assert_eq!((reported, usage.reports), (2, 2), "greeting and reply 1");
}

#[tokio::test]
async fn an_abrupt_1008_close_also_resumes() {
    let mut sc = sim_cfg();
    sc.connection_lifetime = Some(Duration::from_millis(1500));
    sc.go_away_notice = Duration::ZERO;
    let sim = sim(Vendor::Gemini, sc).await;
    let mut c = Caller::connect(config(&sim, "", "sim-key", "chat")).await;
    assert_eq!(c.ai_says().await.0, GREETING);
    c.silence(1600).await;
    let evs = c.until("resumed", |e| *e == EngineEvent::Resumed).await;
    assert!(!evs.iter().any(|e| matches!(e, EngineEvent::GoAway { .. })));
    c.speak(600).await;
    c.silence(400).await;
    assert_eq!(
        c.ai_says().await.0,
        "Reply 1: I heard 0.6 seconds from you."
    );
    assert!(sim.records().contains(&SimRecord::Closed { code: 1008 }));
}

/// A vendor that takes every new connection and drops it again at once
/// is not resumed for ever: the sixth loss within a minute ends the
/// session with an error.
#[tokio::test]
async fn a_connection_lost_again_and_again_ends_the_session() {
    let mut sc = sim_cfg();
    sc.connection_lifetime = Some(Duration::from_millis(200));
    sc.go_away_notice = Duration::ZERO;
    let sim = sim(Vendor::Gemini, sc).await;
    let mut c = Caller::connect(config(&sim, "", "sim-key", "chat")).await;
    assert_eq!(c.ai_says().await.0, GREETING);
    // Each connection is closed after 0.2 s of the caller's audio.
    // Paced, so that each new connection gets its share, until the
    // session refuses more.
    let f = c.session.input_format();
    let frame = vec![0u8; (f.rate_hz / 50 * f.bytes_per_sample()) as usize];
    for _ in 0..200 {
        if c.session
            .send_audio(Bytes::from(frame.clone()))
            .await
            .is_err()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let evs = c
        .until("closed", |e| matches!(e, EngineEvent::Closed { .. }))
        .await;
    let resumed = evs.iter().filter(|e| **e == EngineEvent::Resumed).count();
    assert_eq!(resumed, 5, "{}", summary(&evs));
    let Some(EngineEvent::Closed { error, .. }) = evs.last() else {
        unreachable!()
    };
    assert!(
        matches!(error, Some(EngineError::Transport(m)) if m.contains("lost 5 times")),
        "{error:?}"
    );
}

/// A vendor that takes the session and then sends nothing at all, not even
/// a pong to the session's ping, is taken as gone after twice
/// `idle_ping`: the session ends with an error (no resumption handle yet)
/// instead of leaving the call silent.
#[tokio::test]
async fn a_vendor_that_goes_silent_is_given_up_on() {
    use futures_util::{SinkExt, StreamExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let _setup = ws.next().await;
        ws.send(tokio_tungstenite::tungstenite::Message::text(
            r#"{"setupComplete":{}}"#,
        ))
        .await
        .unwrap();
        // Hung: holds the connection, reads and answers nothing.
        std::future::pending::<()>().await;
        drop(ws);
    });
    let endpoints = codeb_ai::config::Endpoints::parse(&url, &url).unwrap();
    let mut cfg = codeb_ai::SessionConfig::new(
        codeb_ai::config::ModelChoice::from_model("").unwrap(),
        endpoints,
        "k",
    );
    cfg.kickoff = None;
    cfg.idle_ping = Duration::from_millis(200);
    let (session, mut rx) = codeb_ai::connect(cfg).await.unwrap();
    assert_eq!(rx.recv().await, Some(EngineEvent::Ready));
    let f = session.input_format();
    let frame = vec![0u8; (f.rate_hz / 50 * f.bytes_per_sample()) as usize];
    let started = std::time::Instant::now();
    let closed = loop {
        let _ = session.send_audio(Bytes::from(frame.clone())).await;
        match tokio::time::timeout(Duration::from_millis(20), rx.recv()).await {
            Ok(Some(EngineEvent::Closed { error, .. })) => break error,
            Ok(None) => panic!("no Closed event"),
            Ok(Some(_)) | Err(_) => {}
        }
        assert!(started.elapsed() < Duration::from_secs(5), "still up");
    };
    assert!(
        matches!(&closed, Some(EngineError::Transport(m)) if m.contains("not even a pong")),
        "{closed:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    server.abort();
}

/// A vendor that is quiet but answers the session's pings (the
/// simulator, while the caller says nothing) keeps the session.
#[tokio::test]
async fn a_quiet_vendor_that_answers_pings_is_kept() {
    let sim = sim(Vendor::Gemini, sim_cfg()).await;
    let mut cfg = config(&sim, "", "sim-key", "chat");
    cfg.idle_ping = Duration::from_millis(100);
    let mut c = Caller::connect(cfg).await;
    assert_eq!(c.ai_says().await.0, GREETING);
    for _ in 0..20 {
        c.silence(60).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.speak(600).await;
    c.silence(400).await;
    let (text, evs) = c.ai_says().await;
    assert_eq!(text, "Reply 1: I heard 0.6 seconds from you.");
    assert!(
        !evs.iter()
            .any(|e| matches!(e, EngineEvent::Closed { .. } | EngineEvent::Resumed)),
        "{}",
        summary(&evs)
    );
}

#[tokio::test]
async fn without_reported_usage_the_audio_clock_estimates_it() {
    let mut sc = sim_cfg();
    sc.send_usage = false;
    let sim = sim(Vendor::Gemini, sc).await;
    let mut c = Caller::connect(config(&sim, "", "sim-key", "chat")).await;
    c.ai_says().await;
    c.silence(1000).await;
    c.until("turn complete", |e| *e == EngineEvent::TurnComplete)
        .await;
    // Make sure the driver has counted all the caller audio before closing.
    c.session.close().await.unwrap();
    let evs = c
        .until("closed", |e| matches!(e, EngineEvent::Closed { .. }))
        .await;
    let Some(EngineEvent::Closed { usage, .. }) = evs.last().cloned() else {
        unreachable!()
    };
    assert_eq!(usage.reports, 0);
    assert_eq!(
        (usage.audio_in_us, usage.audio_out_us),
        (1_000_000, 670_000)
    );
    // 25 tokens per second of 1.67 s of audio.
    assert_eq!(usage.tokens_total(), 41);
    assert_eq!(usage.tokens_prompt(), 25);
}

#[tokio::test]
async fn unknown_models_are_refused_before_connecting() {
    assert!(matches!(
        codeb_ai::ModelChoice::from_model("claude-voice"),
        Err(EngineError::UnknownModel(_))
    ));
}

/// Heard audio as an observer was told of it: connection, instructions,
/// samples, rate, when.
type HeardAt = (u64, String, usize, u32, std::time::Instant);

/// What an observer was told.
#[derive(Debug, Default)]
struct Seen {
    heard: std::sync::Mutex<Vec<HeardAt>>,
    says: std::sync::Mutex<Vec<(u64, u32, std::time::Instant)>>,
}

impl codeb_ai::sim::SimObserver for Seen {
    fn heard(
        &self,
        conn: &codeb_ai::sim::ObservedConn,
        samples: &[i16],
        rate_hz: u32,
        at: std::time::Instant,
    ) {
        self.heard.lock().unwrap().push((
            conn.id,
            conn.instructions.to_string(),
            samples.len(),
            rate_hz,
            at,
        ));
    }

    fn says(&self, conn: &codeb_ai::sim::ObservedConn, turn: u32, at: std::time::Instant) {
        self.says.lock().unwrap().push((conn.id, turn, at));
    }
}

#[tokio::test]
async fn an_observer_sees_the_audio_heard_and_each_turn_start() {
    let seen = std::sync::Arc::new(Seen::default());
    let before = std::time::Instant::now();
    let (_sim, mut c) = gemini(
        codeb_ai::sim::SimConfig {
            observer: Some(seen.clone()),
            ..sim_cfg()
        },
        "Be brief. CALL=7",
    )
    .await;
    let (text, _) = c.ai_says().await;
    assert_eq!(text, GREETING);
    let greeted = std::time::Instant::now();
    c.silence(700).await;
    c.speak(300).await;
    c.silence(400).await;
    c.ai_says().await;
    c.session.close().await.unwrap();

    let says = seen.says.lock().unwrap().clone();
    assert_eq!(says.iter().map(|s| s.1).collect::<Vec<_>>(), [0, 1]);
    assert!(before <= says[0].2 && says[0].2 <= greeted);
    let heard = seen.heard.lock().unwrap();
    assert!(
        heard
            .iter()
            .all(|h| h.0 == says[0].0 && h.1.contains("CALL=7") && h.3 == 16_000)
    );
    assert!(heard.windows(2).all(|w| w[0].4 <= w[1].4));
    // The reply started only once the speech and the end-of-utterance
    // silence (300 ms here) had been heard: 1.3 s at 16 kHz at least.
    let before_reply: usize = heard.iter().filter(|h| h.4 <= says[1].2).map(|h| h.2).sum();
    assert!(before_reply >= 1300 * 16, "{before_reply}");
    assert!(heard.iter().map(|h| h.2).sum::<usize>() <= 1400 * 16);
}

#[tokio::test]
async fn messages_larger_than_a_socket_read_arrive_whole() {
    // One-second chunks: the 670 ms greeting is one message of ~43 KiB of
    // base64, ten times the client's 4 KiB socket read.
    let (_sim, mut c) = gemini(
        codeb_ai::sim::SimConfig {
            chunk_ms: 1000,
            ..sim_cfg()
        },
        "Be kind.",
    )
    .await;
    c.until("ready", |e| *e == EngineEvent::Ready).await;
    let (text, evs) = c.ai_says().await;
    assert_eq!(text, GREETING);
    assert_eq!(audio_bytes(&evs, AudioFormat::PCM16_24K), 670 * 24 * 2);
}

#[tokio::test]
async fn audio_queued_in_a_burst_all_reaches_the_engine() {
    let seen = std::sync::Arc::new(Seen::default());
    let (_sim, mut c) = gemini(
        codeb_ai::sim::SimConfig {
            observer: Some(seen.clone()),
            ..sim_cfg()
        },
        "Be brief.",
    )
    .await;
    c.until("ready", |e| *e == EngineEvent::Ready).await;
    // 40 frames queued before the session's task runs (this test's
    // runtime has one thread), so it finds them waiting and writes them
    // in batches.
    const FRAMES: i16 = 40;
    for f in 0..FRAMES {
        let pcm: Vec<u8> = (0..320).flat_map(|i| (f * 320 + i).to_le_bytes()).collect();
        c.session.try_send_audio(bytes::Bytes::from(pcm)).unwrap();
    }
    let want = usize::try_from(FRAMES).unwrap() * 320;
    let heard = || {
        seen.heard
            .lock()
            .unwrap()
            .iter()
            .map(|h| h.2)
            .sum::<usize>()
    };
    let _ = tokio::time::timeout(WAIT, async {
        while heard() < want {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(heard(), want, "every queued frame reached the engine");
    c.session.close().await.unwrap();
    c.until("closed", |e| matches!(e, EngineEvent::Closed { .. }))
        .await;
}

/// Caller audio the session reads itself, fed by the test one frame at a
/// time; counts the frames the session has read.
struct Frames(
    tokio::sync::mpsc::UnboundedReceiver<Vec<i16>>,
    Arc<AtomicUsize>,
);

/// `ms` of 16 kHz caller audio in 20 ms frames: a 300 Hz tone, or silence.
fn speak(tx: &tokio::sync::mpsc::UnboundedSender<Vec<i16>>, ms: u32, loud: bool) {
    for f in 0..ms / 20 {
        let pcm = (0..320)
            .map(|i| {
                let t = f64::from(f * 320 + i) / 16_000.0;
                if loud {
                    ((std::f64::consts::TAU * 300.0 * t).sin() * 6000.0) as i16
                } else {
                    0
                }
            })
            .collect();
        tx.send(pcm).unwrap();
    }
}

impl codeb_ai::session::AudioInput for Frames {
    fn poll_audio(
        &mut self,
        cx: &mut std::task::Context<'_>,
        format: AudioFormat,
        out: &mut Vec<u8>,
    ) -> std::task::Poll<bool> {
        assert_eq!(format, AudioFormat::PCM16_16K);
        self.0.poll_recv(cx).map(|f| match f {
            Some(pcm) => {
                out.extend(pcm.iter().flat_map(|s| s.to_le_bytes()));
                self.1.fetch_add(1, Ordering::SeqCst);
                true
            }
            None => false,
        })
    }
}

#[tokio::test]
async fn audio_the_session_reads_itself_is_heard_also_after_a_resumption() {
    let mut sc = sim_cfg();
    sc.connection_lifetime = Some(Duration::from_millis(1500));
    sc.go_away_notice = Duration::ZERO;
    let sim = sim(Vendor::Gemini, sc).await;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut c = caller_reading(&sim, Frames(rx, Arc::default())).await;
    assert_eq!(c.ai_says().await.0, GREETING);
    // Past the connection's 1.5 s of audio: closed with 1008, resumed.
    speak(&tx, 1600, false);
    c.until("resumed", |e| *e == EngineEvent::Resumed).await;
    speak(&tx, 600, true);
    speak(&tx, 400, false);
    assert_eq!(
        c.ai_says().await.0,
        "Reply 1: I heard 0.6 seconds from you."
    );
    // All 2.6 s of input were counted for the usage estimate.
    assert_eq!(end_cleanly(&mut c, tx).await.audio_in_us, 2_600_000);
    assert!(sim.records().contains(&SimRecord::Closed { code: 1008 }));
}

/// Ends the caller's input, then the session (the input ending is not the
/// session ending): it must close without an error; its usage.
async fn end_cleanly(c: &mut Caller, tx: tokio::sync::mpsc::UnboundedSender<Vec<i16>>) -> Usage {
    drop(tx);
    c.session.close().await.unwrap();
    let evs = c
        .until("closed", |e| matches!(e, EngineEvent::Closed { .. }))
        .await;
    let Some(EngineEvent::Closed { error, usage, .. }) = evs.last() else {
        unreachable!()
    };
    assert_eq!(*error, None);
    *usage
}

/// A session on `sim` reading its caller audio from `input`.
async fn caller_reading(sim: &codeb_ai::sim::SimServer, input: Frames) -> Caller {
    let cfg = config(sim, "", "sim-key", "chat");
    let (session, events) = codeb_ai::session::connect_with_input(cfg, Box::new(input))
        .await
        .unwrap();
    Caller {
        session,
        rx: events,
        seen: Vec::new(),
    }
}

#[tokio::test]
async fn audio_read_while_a_resumption_opens_is_sent_once_it_is_up() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let mut sc = sim_cfg();
    sc.connection_lifetime = Some(Duration::from_millis(1500));
    sc.go_away_notice = Duration::ZERO;
    sc.resume_gate = Some(Arc::clone(&gate));
    let sim = sim(Vendor::Gemini, sc).await;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let read = Arc::new(AtomicUsize::new(0));
    let mut c = caller_reading(&sim, Frames(rx, Arc::clone(&read))).await;
    assert_eq!(c.ai_says().await.0, GREETING);
    // Past the connection's 1.5 s: closed with 1008; the resumed
    // connection is open but held before its setupComplete.
    speak(&tx, 1600, false);
    assert!(
        sim.wait_for(Duration::from_secs(5), |r| r
            .contains(&SimRecord::Connected { resumed: true }))
            .await
    );
    // The caller speaks meanwhile, and the session reads all of it before
    // the resumption is up.
    speak(&tx, 600, true);
    speak(&tx, 400, false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while read.load(Ordering::SeqCst) < 130 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "session read {} of 130 frames",
            read.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Not resumed yet: the gate holds it.
    while let Ok(e) = c.rx.try_recv() {
        assert_ne!(e, EngineEvent::Resumed);
        c.seen.push(e);
    }
    gate.add_permits(1);
    c.until("resumed", |e| *e == EngineEvent::Resumed).await;
    // What was said during the resumption reaches the engine once it is up.
    assert_eq!(
        c.ai_says().await.0,
        "Reply 1: I heard 0.6 seconds from you."
    );
    assert_eq!(end_cleanly(&mut c, tx).await.audio_in_us, 2_600_000);
}
