//! Whole-binary webhook tests: real `codeb serve` processes, killed with
//! SIGKILL in the middle of a retry sequence and in the middle of an
//! attempt, and two of them on one PostgreSQL, delivering to a real HTTP
//! receiver. Short retry steps (`CODEB_WEBHOOK_RETRY_SCHEDULE`) keep it
//! fast; the production schedule is tested with a stepped clock in the
//! library's tests.

#![allow(clippy::unwrap_used)] // a test: failing loudly is the point

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use common::{Server, api_key, curl, post};
use serde_json::{Value, json};

/// One request the receiver got: (delivery id, attempt, event).
type Seen = (String, String, String);

/// Answer (status, delay) for the n-th request.
type Script = Arc<dyn Fn(usize) -> (u16, Duration) + Send + Sync>;

struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    _rt: tokio::runtime::Runtime,
}

#[derive(Clone)]
struct RxState {
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Script,
}

async fn receive(State(st): State<RxState>, req: Request) -> StatusCode {
    let headers = req.headers().clone();
    drop(req);
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let seen = (
        h("x-codeb-delivery-id"),
        h("x-codeb-attempt"),
        h("x-codeb-event"),
    );
    let (status, delay) = {
        let mut all = st.seen.lock().unwrap();
        all.push(seen);
        (st.script)(all.len() - 1)
    };
    tokio::time::sleep(delay).await;
    StatusCode::from_u16(status).unwrap()
}

impl Receiver {
    fn start(script: Script) -> Receiver {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}/codeb-webhook", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(receive).with_state(RxState {
            seen: seen.clone(),
            script,
        });
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, seen, _rt: rt }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn wait_for(&self, n: usize) -> Vec<Seen> {
        wait(&format!("{n} requests at the receiver"), || {
            let s = self.seen();
            (s.len() >= n).then_some(s)
        })
    }
}

fn wait<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

const FAST_RETRIES: [(&str, &str); 3] = [
    ("CODEB_WEBHOOK_ALLOW", "127.0.0.0/8"),
    ("CODEB_WEBHOOK_RETRY_SCHEDULE", "1s,1s,1s"),
    ("CODEB_WEBHOOK_TIMEOUT", "1s"),
];

fn subscribe(server: &Server, key: &str, url: &str) -> String {
    let (code, sub, raw) = post(
        server,
        key,
        "/api.ashx/v1/webhooks",
        &json!({"url": url, "events": ["*"]}),
    );
    assert_eq!(code, 201, "{raw}");
    sub["id"].as_str().unwrap().to_owned()
}

fn fire(server: &Server, key: &str, sub: &str) -> String {
    let (code, r, raw) = post(
        server,
        key,
        &format!("/api.ashx/v1/webhooks/{sub}/test"),
        &json!({}),
    );
    assert_eq!(code, 202, "{raw}");
    r["deliveryId"].as_str().unwrap().to_owned()
}

/// The delivery log entry of `delivery`, once `done` holds for it.
fn logged(
    server: &Server,
    key: &str,
    sub: &str,
    delivery: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    wait(&format!("delivery {delivery} in the log"), || {
        let (_, log, _) = curl(&[
            "-H",
            &format!("Authorization: Bearer {key}"),
            &server.url(&format!("/api.ashx/v1/webhooks/{sub}/deliveries")),
        ]);
        log["data"]
            .as_array()?
            .iter()
            .find(|d| d["id"] == delivery)
            .filter(|d| done(d))
            .cloned()
    })
}

fn restart_scenario(dir: &Path, db: Option<&str>) {
    // Requests 0 and 1 fail, 2 succeeds; 3 is held past the timeout (the
    // server is killed while waiting for it); later ones succeed.
    let rx = Receiver::start(Arc::new(|n| match n {
        0 | 1 => (500, Duration::ZERO),
        3 => (200, Duration::from_secs(5)),
        _ => (200, Duration::ZERO),
    }));
    let s1 = Server::start_with(dir, db, &FAST_RETRIES, Stdio::inherit());
    let key = api_key(&s1);
    let sub = subscribe(&s1, &key, &rx.url);
    let d1 = fire(&s1, &key, &sub);
    rx.wait_for(1);
    logged(&s1, &key, &sub, &d1, |d| d["attempts"] == 1);
    // Killed between attempt 1 and attempt 2.
    s1.kill();
    let s2 = Server::start_with(dir, db, &FAST_RETRIES, Stdio::inherit());
    let seen = rx.wait_for(3);
    let d = logged(&s2, &key, &sub, &d1, |d| d["state"] == "succeeded");
    assert_eq!(d["attempts"], 3);
    let codes: Vec<&Value> = d["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["statusCode"])
        .collect();
    assert_eq!(codes, vec![&json!(500), &json!(500), &json!(200)]);
    let attempts: Vec<(&str, &str)> = seen
        .iter()
        .map(|(id, a, _)| (id.as_str(), a.as_str()))
        .collect();
    assert_eq!(
        attempts,
        vec![(d1.as_str(), "1"), (d1.as_str(), "2"), (d1.as_str(), "3")]
    );
    // Killed with an attempt in flight: after the lease runs out the
    // restarted server sends it again, same id, same attempt number.
    let d2 = fire(&s2, &key, &sub);
    rx.wait_for(4);
    s2.kill();
    let s3 = Server::start_with(dir, db, &FAST_RETRIES, Stdio::inherit());
    let seen = rx.wait_for(5);
    assert_eq!(seen[3].0, d2);
    assert_eq!((seen[4].0.as_str(), seen[4].1.as_str()), (d2.as_str(), "1"));
    let d = logged(&s3, &key, &sub, &d2, |d| d["state"] == "succeeded");
    assert_eq!(d["attempts"], 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rx.seen().len(), 5, "nothing sent twice after success");
}

#[test]
fn killed_mid_retry_and_mid_attempt_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    restart_scenario(dir.path(), None);
}

#[test]
fn killed_mid_retry_and_mid_attempt_on_postgres() {
    let Some(url) = common::pg_database("codeb_wh_restart") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    restart_scenario(dir.path(), Some(&url));
}

#[test]
fn two_replicas_on_one_postgres_deliver_each_event_once() {
    let Some(url) = common::pg_database("codeb_wh_replicas") else {
        return;
    };
    let rx = Receiver::start(Arc::new(|_| (200, Duration::from_millis(20))));
    let dir = tempfile::tempdir().unwrap();
    let mut env = FAST_RETRIES.to_vec();
    // "webhook delivered" lines tell which replica sent what.
    env.push(("CODEB_LOG", "codeb::webhooks=debug,warn"));
    let log_a = dir.path().join("a.log");
    let log_b = dir.path().join("b.log");
    let a = Server::start_with(
        dir.path(),
        Some(&url),
        &env,
        File::create(&log_a).unwrap().into(),
    );
    let b = Server::start_with(
        dir.path(),
        Some(&url),
        &env,
        File::create(&log_b).unwrap().into(),
    );
    let key = api_key(&a);
    let subs: Vec<String> = (0..4).map(|_| subscribe(&a, &key, &rx.url)).collect();
    let mut fired = Vec::new();
    for n in 0..100 {
        // Events are recorded through both replicas.
        let server = if n % 2 == 0 { &a } else { &b };
        fired.push(fire(server, &key, &subs[n % subs.len()]));
    }
    rx.wait_for(100);
    std::thread::sleep(Duration::from_secs(1));
    let seen = rx.seen();
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for (id, attempt, event) in &seen {
        *per_id.entry(id.as_str()).or_default() += 1;
        assert_eq!((attempt.as_str(), event.as_str()), ("1", "webhook.test"));
    }
    assert_eq!(seen.len(), 100, "each delivery exactly once");
    for id in &fired {
        assert_eq!(per_id.get(id.as_str()), Some(&1), "{id}");
    }
    let delivered_by = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .filter(|l| l.contains("webhook delivered"))
            .count()
    };
    let (na, nb) = (delivered_by(&log_a), delivered_by(&log_b));
    assert_eq!(na + nb, 100, "replica A sent {na}, B sent {nb}");
    assert!(na > 0 && nb > 0, "both replicas deliver: A {na}, B {nb}");
}
