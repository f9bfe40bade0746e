//! The whole system: `codeb serve` driving a real `codeb-switch` over the
//! gRPC link, SIPp as the trunk's callee, the voice-AI simulator
//! (`codeb-ai-sim`, Gemini Live's wire protocol) as the persona's engine,
//! and an HTTP receiver for the webhooks. `POST /calls` → the call is
//! answered at SIPp → `call.answered`, then `call.started` once the AI
//! talks → hangup → the switch sends BYE and reports the end →
//! `outbound-ai.finished`. A second call is ended by the AI itself
//! (`end_call` after its greeting): `finished`, with its transcript saved
//! and served.
//!
//! `codeb-switch` and `codeb-ai-sim` are other packages' binaries, so the
//! test finds them beside `codeb` in the target directory (the workspace
//! test command builds them).
//! Where it has not been built the test says so and passes only when the
//! run does not require every peer (`CODEB_REQUIRE_PG=1`, set by
//! `tests/run`, turns that into a failure).

#![allow(clippy::unwrap_used)] // a test: failing loudly is the point

mod common;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use common::{ADMIN, ADMIN_PW, Server, curl};
use serde_json::{Value, json};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free for UDP and TCP on loopback now.
fn free_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn sibling_binary(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_codeb")).with_file_name(name);
    p.exists().then_some(p)
}

/// The events the receiver got for one call, in order.
fn events_of(seen: &Seen, call_id: &str) -> Vec<(String, Value)> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(_, v)| v["data"]["callId"] == call_id)
        .cloned()
        .collect()
}

fn wait<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (event name, parsed body) of every delivery.
type Seen = Arc<Mutex<Vec<(String, Value)>>>;

async fn receive(State(seen): State<Seen>, req: Request) -> StatusCode {
    let event = req
        .headers()
        .get("x-codeb-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    seen.lock().unwrap().push((event, v));
    StatusCode::OK
}

fn post(server: &Server, token: &str, path: &str, body: &Value) -> (u16, Value, String) {
    curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {token}"),
        "-H",
        "Content-Type: application/json",
        "-d",
        &body.to_string(),
        &server.url(path),
    ])
}

fn get(server: &Server, token: &str, path: &str) -> Value {
    let (code, v, raw) = curl(&[
        "-H",
        &format!("Authorization: Bearer {token}"),
        &server.url(path),
    ]);
    assert_eq!(code, 200, "{raw}");
    v
}

#[test]
fn a_call_through_the_real_switch_is_answered_hung_up_and_reported() {
    let (Some(switch_bin), Some(sim_bin)) = (
        sibling_binary("codeb-switch"),
        sibling_binary("codeb-ai-sim"),
    ) else {
        assert!(
            std::env::var("CODEB_REQUIRE_PG").as_deref() != Ok("1"),
            "codeb-switch or codeb-ai-sim is not built beside codeb: run \
             `cargo build -p codeb-switch -p codeb-ai --bins` (the workspace test command builds them)"
        );
        eprintln!("codeb-switch or codeb-ai-sim is not built: skipping the whole-system call test");
        return;
    };
    let dir = tempfile::tempdir().unwrap();

    // The persona's engine: the simulators, accepting any key.
    let (gemini, openai) = (free_port(), free_port());
    let _sim = Killed(
        Command::new(&sim_bin)
            .env("CODEB_SIM_GEMINI_ADDR", format!("127.0.0.1:{gemini}"))
            .env("CODEB_SIM_OPENAI_ADDR", format!("127.0.0.1:{openai}"))
            .env("CODEB_SIM_API_KEY", "")
            .stdout(Stdio::null())
            .spawn()
            .expect("start codeb-ai-sim"),
    );
    wait("the simulator's port", 20, || {
        std::net::TcpStream::connect(("127.0.0.1", gemini))
            .ok()
            .map(|_| ())
    });

    // The trunk's far end: SIPp's uas answers two calls, each waiting for
    // our BYE.
    let callee_port = free_port();
    let mut callee = Killed(
        Command::new("sipp")
            .args(["-sn", "uas", "-i", "127.0.0.1", "-p"])
            .arg(callee_port.to_string())
            .args(["-m", "2", "-nostdin", "-timeout", "60s", "-timeout_error"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp is installed (Debian sip-tester)"),
    );

    // The switch, configured only through the link.
    let switch_dir = dir.path().join("switch");
    std::fs::create_dir_all(&switch_dir).unwrap();
    let (sip, grpc, metrics) = (free_port(), free_port(), free_port());
    let rtp = 30_000 + (sip % 100) * 100;
    let _switch = Killed(
        Command::new(&switch_bin)
            .env("CODEB_SIP_ADDR", format!("127.0.0.1:{sip}"))
            .env("CODEB_SWITCH_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
            .env("CODEB_RTP_PORTS", format!("{rtp}-{}", rtp + 99))
            .env("CODEB_DATA_DIR", &switch_dir)
            .env("CODEB_SWITCH_METRICS_ADDR", format!("127.0.0.1:{metrics}"))
            .env("CODEB_GEMINI_URL", format!("ws://127.0.0.1:{gemini}"))
            .env("CODEB_OPENAI_URL", format!("ws://127.0.0.1:{openai}"))
            // For personas without a key of their own (the number below).
            .env("CODEB_GEMINI_API_KEY", "node-key")
            .env("CODEB_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start codeb-switch"),
    );
    wait("the switch's gRPC port", 20, || {
        std::net::TcpStream::connect(("127.0.0.1", grpc))
            .ok()
            .map(|_| ())
    });

    // The webhook receiver.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let seen: Seen = Arc::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .fallback(receive)
        .with_state(seen.clone());
    rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let cp_dir = dir.path().join("cp");
    let grpc_url = format!("http://127.0.0.1:{grpc}");
    let server = Server::start_with(
        &cp_dir,
        None,
        &[
            ("CODEB_SWITCH_URLS", grpc_url.as_str()),
            ("CODEB_WEBHOOK_ALLOW", "127.0.0.0/8"),
        ],
        Stdio::inherit(),
    );
    let (code, tok, raw) = curl(&[
        "-X",
        "POST",
        &server.url("/oidc.ashx/token"),
        "-d",
        "grant_type=password",
        "-d",
        "client_id=codeb-admin",
        "-d",
        &format!("username={ADMIN}"),
        "-d",
        &format!("password={ADMIN_PW}"),
    ]);
    assert_eq!(code, 200, "{raw}");
    let token = tok["access_token"].as_str().unwrap().to_owned();
    let (code, _, raw) = post(
        &server,
        &token,
        "/api.ashx/v1/webhooks",
        &json!({"url": hook_url, "events": ["*"]}),
    );
    assert_eq!(code, 201, "{raw}");
    let (code, trunk, raw) = post(
        &server,
        &token,
        "/api.ashx/v1/trunks",
        &json!({"name": "carrier", "host": "127.0.0.1", "port": callee_port,
                "transport": "udp", "isDefault": true}),
    );
    assert_eq!(code, 201, "{raw}");
    let trunk_id = trunk["id"].as_str().unwrap().to_owned();

    let (code, placed, raw) = post(
        &server,
        &token,
        "/api.ashx/v1/calls",
        &json!({"phone": "+15551230000", "displayName": "Reminder",
                "email": "ops@example.com", "systemPrompt": "Say hi, then goodbye.",
                "apiKey": "test-key", "maxSeconds": 60}),
    );
    assert_eq!(code, 200, "{raw}");
    assert_eq!(placed["status"], "in-flight", "{raw}");
    let id = placed["callId"].as_str().unwrap().to_owned();
    let call_path = format!("/api.ashx/v1/calls/{id}");

    // SIPp answers: the record and the webhook say so.
    let answered = wait("call.answered at the receiver", 30, || {
        seen.lock()
            .unwrap()
            .iter()
            .find(|(e, _)| e == "call.answered")
            .cloned()
    });
    let data = &answered.1["data"];
    assert_eq!(data["callId"], id.as_str());
    assert_eq!(data["phone"], "+15551230000");
    assert_eq!(data["trunkId"], trunk_id.as_str());
    assert_eq!(data["direction"], "outbound");
    let call = get(&server, &token, &call_path);
    assert_eq!(call["status"], "in-flight");
    assert!(call["answeredAtUtc"].is_string(), "{call}");
    assert_eq!(call["trunkId"], trunk_id.as_str());
    // The AI joins the call.
    wait("call.started at the receiver", 30, || {
        events_of(&seen, &id)
            .into_iter()
            .find(|(e, _)| e == "call.started")
    });

    // Hang up: BYE to SIPp, the end comes back as an event.
    let (code, r, raw) = post(&server, &token, &format!("{call_path}/hangup"), &json!({}));
    assert_eq!(code, 200, "{raw}");
    assert_eq!(r["wasNoop"], false);
    let finished = wait("outbound-ai.finished at the receiver", 30, || {
        seen.lock()
            .unwrap()
            .iter()
            .find(|(e, _)| e == "outbound-ai.finished")
            .cloned()
    });
    let data = &finished.1["data"];
    assert_eq!(data["callId"], id.as_str());
    assert_eq!(data["outcome"], "cancelled");
    assert_eq!(data["answered"], true);
    assert_eq!(data["trunk"], trunk_id.as_str());
    let call = wait("the call's final status", 10, || {
        let c = get(&server, &token, &call_path);
        (c["status"] != "in-flight").then_some(c)
    });
    assert_eq!(call["status"], "cancelled", "{call}");
    assert_eq!(call["endedReason"], "cancelled");
    assert!(call["endedAtUtc"].is_string());
    // Each event once, answered before started before finished.
    let names: Vec<String> = events_of(&seen, &id).into_iter().map(|(e, _)| e).collect();
    let at = |n: &str| names.iter().position(|x| x == n).unwrap();
    assert!(at("call.answered") < at("call.started"), "{names:?}");
    assert!(at("call.started") < at("outbound-ai.finished"), "{names:?}");
    for n in ["call.answered", "call.started", "outbound-ai.finished"] {
        assert_eq!(
            names.iter().filter(|x| *x == n).count(),
            1,
            "{n}: {names:?}"
        );
    }

    // A call the AI ends itself: its greeting is its goodbye.
    let (code, placed, raw) = post(
        &server,
        &token,
        "/api.ashx/v1/calls",
        &json!({"phone": "+15551230000", "displayName": "Reminder",
                "email": "ops@example.com",
                "systemPrompt": "Greet the callee, then end the call. END_AFTER_TURNS=0",
                "apiKey": "test-key", "maxSeconds": 60}),
    );
    assert_eq!(code, 200, "{raw}");
    let id2 = placed["callId"].as_str().unwrap().to_owned();
    let saved = wait("transcript.saved at the receiver", 40, || {
        events_of(&seen, &id2)
            .into_iter()
            .find(|(e, _)| e == "transcript.saved")
    });
    let finished = events_of(&seen, &id2)
        .into_iter()
        .find(|(e, _)| e == "outbound-ai.finished")
        .expect("the terminal event before transcript.saved");
    assert_eq!(finished.1["data"]["outcome"], "finished", "{finished:?}");
    assert_eq!(finished.1["data"]["outputTurns"], 1, "{finished:?}");
    let file = saved.1["data"]["file"].as_str().unwrap().to_owned();
    assert!(
        file.starts_with("outbound-ai-") && file.ends_with(&format!("-{id2}.txt")),
        "{file}"
    );
    let text = std::fs::read_to_string(cp_dir.join("transcripts").join(&file)).unwrap();
    assert!(
        !text.trim().is_empty(),
        "the transcript file has the greeting"
    );
    let t = get(&server, &token, &format!("/api.ashx/v1/transcripts/{id2}"));
    assert_eq!(t["outcome"], "finished", "{t}");
    assert_eq!(t["answered"], true);
    let turns = t["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 1, "{t}");
    assert_eq!(turns[0]["speaker"], "AI");
    assert!(t["tokensTotal"].as_i64().unwrap() > 0, "{t}");

    // SIPp got both BYEs and finished its two calls cleanly.
    let st = wait("SIPp to finish", 15, || callee.0.try_wait().unwrap());
    assert!(st.success(), "SIPp: {st}");

    // Inbound: a virtual number answered by its persona. The carrier's
    // trunk names no inbound networks, so its own address is where its
    // calls come from.
    let version = || {
        let text = std::process::Command::new("curl")
            .args(["-s", &format!("http://127.0.0.1:{metrics}/metrics")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&text.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("codeb_config_version "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = version();
    let (code, _, raw) = post(
        &server,
        &token,
        "/api.ashx/v1/numbers",
        &json!({"name": "reception", "number": "7000", "saveTranscripts": true,
                "systemPrompt": "You are the receptionist. END_AFTER_TURNS=0"}),
    );
    assert_eq!(code, 201, "{raw}");
    let (code, _, raw) = post(
        &server,
        &token,
        "/api.ashx/v1/inbound-routes",
        &json!({"Did": "7000", "User": "7000"}),
    );
    assert!(code == 200 || code == 201, "{raw}");
    wait("the new configuration on the switch", 20, || {
        (version() > before).then_some(())
    });
    let scenario = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../dataplane/switch/tests/scenarios/uac_wait_bye.xml");
    let caller = Command::new("sipp")
        .arg(format!("127.0.0.1:{sip}"))
        .args(["-sf", scenario.to_str().unwrap(), "-s", "7000", "-m", "1"])
        .args(["-i", "127.0.0.1", "-p"])
        .arg(free_port().to_string())
        .args(["-nostdin", "-timeout", "30s", "-timeout_error"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(caller.success(), "the caller got the AI's BYE: {caller}");
    let saved = wait("transcript.saved (vnum) at the receiver", 30, || {
        seen.lock()
            .unwrap()
            .iter()
            .find(|(e, v)| e == "transcript.saved" && v["data"]["source"] == "vnum")
            .cloned()
    });
    let vnum_id = saved.1["data"]["callId"].as_str().unwrap().to_owned();
    assert!(vnum_id.starts_with("vnum"), "{vnum_id}");
    let names: Vec<String> = events_of(&seen, &vnum_id)
        .into_iter()
        .map(|(e, _)| e)
        .collect();
    for n in [
        "call.answered",
        "call.started",
        "call.ended",
        "transcript.saved",
    ] {
        assert_eq!(
            names.iter().filter(|x| *x == n).count(),
            1,
            "{n}: {names:?}"
        );
    }
    let inbound = get(
        &server,
        &token,
        &format!("/api.ashx/v1/inbound-calls/{vnum_id}"),
    );
    assert_eq!(inbound["outcome"], "finished", "{inbound}");
    assert_eq!(inbound["number"], "7000", "{inbound}");
    assert_eq!(inbound["outputTurns"], 1, "{inbound}");
    let t = get(
        &server,
        &token,
        &format!("/api.ashx/v1/transcripts/{vnum_id}"),
    );
    assert_eq!(t["callerSource"], "vnum", "{t}");
    assert_eq!(t["turns"][0]["speaker"], "AI", "{t}");
}
