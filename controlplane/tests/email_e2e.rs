//! Whole-binary email test: a real `codeb serve` with `CODEB_SMTP_URL`
//! pointing at a local SMTP sink (a tokio server in this process). Calls
//! are created through the API; their ends are played into the same
//! database the way a switch node's events arrive (this process opens the
//! store as a second control plane would, and applies the node's events),
//! so no switch is needed. Shown: a call that ends produces exactly one
//! email carrying its transcript; a 451 is retried and then accepted; a
//! 550 marks the email failed and leaves the transcript alone. On SQLite
//! and on PostgreSQL.

#![allow(clippy::unwrap_used)] // a test: failing loudly is the point

mod common;
#[path = "support/smtp_sink.rs"]
mod smtp_sink;

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use codeb::store::{AttemptEnd, EmailState, EventKind, Speaker, Store, SwitchEvent};
use codeb_types::{CallId, UtcMillis};
use common::{ADMIN, ADMIN_PW, Server, api, curl};
use serde_json::json;
use smtp_sink::{Answer, Sink, qp_decode};

const NODE: &str = "http://10.9.9.9:50051";
/// The tenant of a server whose public URL is http://127.0.0.1:port.
const TENANT: &str = "127.0.0.1";

#[test]
fn emails_on_sqlite() {
    run(None);
}

#[test]
fn emails_on_postgres() {
    if let Some(url) = common::pg_database("codeb_email_e2e") {
        run(Some(url));
    }
}

fn now() -> UtcMillis {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    UtcMillis(i64::try_from(d.as_millis()).unwrap())
}

fn wait<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn token(server: &Server) -> String {
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
    tok["access_token"].as_str().unwrap().to_owned()
}

/// A call to be dialled in an hour (so nothing else touches it).
fn create_call(server: &Server, token: &str, email: &str) -> String {
    let at = now().plus_ms(3_600_000).to_iso();
    let body = json!({"phone": "+15551234567", "displayName": "Dentist reminder",
        "email": email, "systemPrompt": "reminder", "apiKey": "AIza-test", "scheduleAtUtc": at});
    let r = api(server, token, "POST", "/api.ashx/v1/calls", Some(&body));
    r["callId"].as_str().unwrap().to_owned()
}

/// Plays a switch node's handling of the call: placed, answered, two
/// turns, ended `finished`.
async fn play_call(store: &Store, id: &str) {
    let t = now();
    let call = store
        .claim_call(&CallId::parse(id).unwrap(), t)
        .await
        .unwrap()
        .unwrap();
    assert!(store.set_dispatch_node(&call, NODE, None, t).await.unwrap());
    assert!(store.mark_placed(&call, "", "", t).await.unwrap());
    if store.switch_cursor(NODE).await.unwrap().is_none() {
        store.reset_switch_cursor(NODE, "j1", t).await.unwrap();
    }
    let kinds = [
        EventKind::Answered {
            trunk_id: String::new(),
            answer_ms: 800,
        },
        EventKind::Turn {
            speaker: Speaker::Ai,
            text: "Hello, this is your dentist reminder for Tuesday.".into(),
            at_ms: 300,
        },
        EventKind::Turn {
            speaker: Speaker::Caller,
            text: "Danke, bis Dienstag.".into(),
            at_ms: 3500,
        },
        EventKind::Ended(AttemptEnd {
            outcome: "finished".into(),
            answered: true,
            answered_at: Some(t),
            ended_at: t.plus_ms(6000),
            talk_seconds: 6,
            duration_seconds: 7,
            input_turns: 1,
            output_turns: 1,
            ..AttemptEnd::default()
        }),
    ];
    for kind in kinds {
        let seq = store.switch_cursor(NODE).await.unwrap().unwrap().last_seq + 1;
        let ev = SwitchEvent {
            journal_id: "j1".into(),
            seq,
            at: now(),
            call_id: id.to_owned(),
            attempt: 0,
            tenant: TENANT.into(),
            kind,
        };
        let applied = store.apply_switch_event(NODE, &ev, now()).await.unwrap();
        assert_eq!(applied, codeb::store::Applied::Applied);
    }
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.split("\r\n")
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(": ")))
        .unwrap_or("")
}

fn run(database_url: Option<String>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let script: smtp_sink::Script = Arc::new(|to: &str, n: usize| match (to, n) {
        ("later@example.com", 0) => Answer::AtEnd(451),
        ("never@example.com", _) => Answer::AtRcpt(550),
        _ => Answer::Accept,
    });
    let sink = rt.block_on(Sink::start(script));
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        database_url.as_deref(),
        &[
            ("CODEB_SMTP_URL", &sink.url()),
            ("CODEB_SMTP_RETRY_SCHEDULE", "1s"),
            ("CODEB_SMTP_TIMEOUT", "5s"),
        ],
        Stdio::inherit(),
    );
    let tok = token(&server);
    let url = database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}/codeb.db?mode=rwc", dir.path().display()));
    let store = rt.block_on(Store::open(&url, dir.path())).unwrap();
    let ok = create_call(&server, &tok, "ok@example.com");
    let later = create_call(&server, &tok, "later@example.com");
    let never = create_call(&server, &tok, "never@example.com");
    for id in [&ok, &later, &never] {
        rt.block_on(play_call(&store, id));
    }
    let email = |id: &str| rt.block_on(store.call_email(TENANT, id)).unwrap().unwrap();
    wait("every email settled", || {
        let settled = email(&ok).state == EmailState::Sent
            && email(&later).state == EmailState::Sent
            && email(&never).state == EmailState::Failed;
        settled.then_some(())
    });
    // Nothing more arrives later: exactly one accepted message per call.
    std::thread::sleep(Duration::from_millis(1500));
    let accepted = sink.accepted();
    let to: Vec<&str> = accepted.iter().map(|r| r.to.as_str()).collect();
    assert_eq!(to.len(), 2, "{to:?}");
    assert!(to.contains(&"ok@example.com") && to.contains(&"later@example.com"));
    // The email of the call that ended carries its transcript.
    let m = accepted.iter().find(|r| r.to == "ok@example.com").unwrap();
    assert_eq!(m.from, "codeb@[127.0.0.1]");
    let data = &m.data;
    assert_eq!(header(data, "To"), "<ok@example.com>");
    assert_eq!(header(data, "Content-Type"), "text/plain; charset=utf-8");
    assert_eq!(
        header(data, "Content-Transfer-Encoding"),
        "quoted-printable"
    );
    assert_eq!(
        header(data, "Subject"),
        format!("Call to +15551234567 (Dentist reminder): finished [{ok}]")
    );
    let body = qp_decode(data.split_once("\r\n\r\n").unwrap().1);
    for want in [
        "Status:      ended-success",
        "Outcome:     finished",
        "AI: Hello, this is your dentist reminder for Tuesday.",
        "Caller: Danke, bis Dienstag.",
    ] {
        assert!(body.contains(want), "{want} in:\n{body}");
    }
    // 451 then accepted: two tries, the second went through.
    let l = email(&later);
    assert_eq!(l.attempts, 2);
    let tries = sink
        .received()
        .into_iter()
        .filter(|r| r.to == "later@example.com")
        .count();
    assert_eq!(tries, 2);
    // 550: failed with the reason, after one attempt; the call and its
    // transcript are as they were.
    let n = email(&never);
    assert_eq!(n.attempts, 1);
    assert!(n.last_error.contains("RCPT TO: 550"), "{}", n.last_error);
    let call = api(
        &server,
        &tok,
        "GET",
        &format!("/api.ashx/v1/calls/{never}"),
        None,
    );
    assert_eq!(call["status"], "ended-success");
    let t = api(
        &server,
        &tok,
        "GET",
        &format!("/api.ashx/v1/transcripts/{never}"),
        None,
    );
    assert_eq!(t["turns"].as_array().unwrap().len(), 2, "{t}");
    assert_eq!(t["email"], "never@example.com");
    // The sender's counters.
    let metrics = {
        let auth = format!("Authorization: Bearer {tok}");
        curl(&["-H", &auth, &server.url("/metrics")]).2
    };
    assert!(metrics.contains("codeb_emails_sent_total 2"), "{metrics}");
    assert!(metrics.contains("codeb_emails_failed_total 1"), "{metrics}");
    rt.block_on(store.close());
    drop(server);
}
