//! Delivery tests with real HTTP receivers (axum servers on 127.0.0.1)
//! that check every signature with their own HMAC code (the `hmac` and
//! `sha2` crates, not the aws-lc-rs code that signs), on SQLite and on
//! PostgreSQL. Time is a manual clock: a test steps through the 5 s, 30 s,
//! 120 s schedule by moving it and waking the workers; only receivers that
//! are slow on purpose spend real time.

mod delivery;
mod failures;
mod guarded;
mod held;
mod python;
mod restarts;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use codeb_types::{EventId, EventName, SubscriptionId, UtcMillis};
use hmac::{Hmac, KeyInit, Mac};

use super::dispatcher::{self, DeliveryConfig, DispatcherHandle};
use super::{IpNet, Resolver, RetryPolicy, UrlGuard, WebhookClient};
use crate::clock::Clock;
use crate::store::testing::TestDb;
use crate::store::{DeliveryRecord, Store, SubscriptionRecord};

pub const TENANT: &str = "phone.example.test";

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Hit {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a delivery body is JSON")
    }
}

/// How a receiver answers.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub delay: Duration,
    /// Held until the test opens the gate (sends `true`).
    pub gate: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
            gate: None,
        }
    }

    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Answer {
        self.headers.push((name, value.into()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }

    /// Answers only once `gate` is open, however long that takes.
    pub fn when_open(mut self, gate: tokio::sync::watch::Receiver<bool>) -> Answer {
        self.gate = Some(gate);
        self
    }
}

/// Decides the answer from the hit's index (0-based) and the hit.
pub type Script = Arc<dyn Fn(usize, &Hit) -> Answer + Send + Sync>;

pub fn always(status: u16) -> Script {
    Arc::new(move |_, _| Answer::status(status))
}

/// The n-th hit gets the n-th status; the last one repeats.
pub fn statuses(list: &[u16]) -> Script {
    let list = list.to_vec();
    Arc::new(move |i, _| Answer::status(list[i.min(list.len() - 1)]))
}

#[derive(Clone)]
struct ReceiverState {
    hits: Arc<Mutex<Vec<Hit>>>,
    script: Script,
}

async fn receive(State(st): State<ReceiverState>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let hit = Hit {
        path,
        headers,
        body,
    };
    let answer = {
        let mut hits = st.hits.lock().unwrap();
        let i = hits.len();
        hits.push(hit.clone());
        (st.script)(i, &hit)
    };
    if let Some(mut gate) = answer.gate {
        let _ = gate.wait_for(|open| *open).await;
    }
    tokio::time::sleep(answer.delay).await;
    let mut resp = (StatusCode::from_u16(answer.status).unwrap(), "").into_response();
    for (k, v) in answer.headers {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}

/// A local HTTP receiver that records every request.
pub struct Receiver {
    pub addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub async fn start(script: Script) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, script)
    }

    pub fn serve(listener: tokio::net::TcpListener, script: Script) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(ReceiverState {
                hits: hits.clone(),
                script,
            });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, hits, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Hit> {
        let deadline = Instant::now() + within;
        loop {
            let hits = self.hits();
            if hits.len() >= n {
                return hits;
            }
            assert!(
                Instant::now() < deadline,
                "receiver got {} requests, expected {n}",
                hits.len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Asserts that no more than `n` requests arrive during `wait`.
    pub async fn stays_at(&self, n: usize, wait: Duration) {
        tokio::time::sleep(wait).await;
        assert_eq!(
            self.hits().len(),
            n,
            "unexpected requests: {:?}",
            self.hits()
        );
    }
}

fn hmac256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

/// The spec's recipe: `sha256=` + hex HMAC of the raw body, keyed with the
/// secret string as shown.
pub fn codeb_sig(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac256(secret.as_bytes(), &[body]))
    )
}

/// Standard Webhooks: does any `v1,` signature in the header verify with
/// this secret (the base64 after `whsec_` is the key)?
pub fn standard_ok(secret: &str, hit: &Hit) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let want = base64::engine::general_purpose::STANDARD.encode(hmac256(
        &key,
        &[
            hit.header("webhook-id").as_bytes(),
            b".",
            hit.header("webhook-timestamp").as_bytes(),
            b".",
            &hit.body,
        ],
    ));
    hit.header("webhook-signature")
        .split(' ')
        .any(|s| s == format!("v1,{want}"))
}

/// Both signatures verify with `secret`.
pub fn verified(secret: &str, hit: &Hit) -> bool {
    hit.header("x-codeb-signature") == codeb_sig(secret, &hit.body) && standard_ok(secret, hit)
}

/// A port nothing listens on.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn fixed_names() -> Resolver {
    Resolver::Fixed(Arc::new(|host: &str| match host {
        "hooks.test" | "localhost.test" => Some(vec![[127, 0, 0, 1].into()]),
        _ => None,
    }))
}

/// A store, a manual clock, a guard and delivery workers.
pub struct Fx {
    pub db: TestDb,
    pub store: Store,
    pub clock: Clock,
    pub cfg: DeliveryConfig,
    pub guard: Arc<UrlGuard>,
    pub client: Option<WebhookClient>,
    running: Vec<DispatcherHandle>,
}

impl Fx {
    /// Receivers on 127.0.0.0/8 are allowed; names from `fixed_names`.
    pub fn new(db: TestDb) -> Fx {
        let allow: IpNet = "127.0.0.0/8".parse().unwrap();
        Self::with_guard(db, UrlGuard::new(vec![allow], vec![], fixed_names()))
    }

    pub fn with_guard(db: TestDb, guard: UrlGuard) -> Fx {
        let mut cfg = DeliveryConfig::new(RetryPolicy::default(), Duration::from_secs(2));
        cfg.idle_poll = Duration::from_millis(50);
        cfg.shutdown_grace = Duration::from_secs(1);
        Fx {
            store: db.store.clone(),
            db,
            clock: Clock::manual(UtcMillis::parse_rfc3339("2026-06-04T17:55:12.401Z").unwrap()),
            cfg,
            guard: Arc::new(guard),
            client: None,
            running: Vec::new(),
        }
    }

    /// Starts workers on `store` (the fixture's, or a second connection
    /// standing for another process).
    pub fn start_on(&mut self, store: Store) {
        let client = self
            .client
            .clone()
            .unwrap_or_else(|| WebhookClient::new(self.guard.clone(), self.cfg.timeout).unwrap());
        self.running.push(dispatcher::start(
            store,
            self.clock.clone(),
            client,
            self.cfg.clone(),
            None,
        ));
    }

    pub fn start(&mut self) {
        self.start_on(self.store.clone());
    }

    /// Graceful shutdown of every running worker set.
    pub async fn stop(&mut self) {
        for d in self.running.drain(..) {
            d.shutdown().await;
        }
    }

    /// Kills every running worker set, as a crash would.
    pub async fn kill(&mut self) {
        for d in self.running.drain(..) {
            d.kill().await;
        }
    }

    /// A second connection to the same database (a restarted process, or
    /// another replica).
    pub async fn reopen(&self) -> Store {
        Store::open(&self.db.url, self.db.dir.path()).await.unwrap()
    }

    pub async fn subscribe(&self, url: &str, events: &[&str]) -> (SubscriptionId, String) {
        let secret = super::sign::generate_secret();
        let s = SubscriptionRecord {
            id: SubscriptionId::from_random(crate::crypto::random_bytes()),
            tenant: TENANT.into(),
            url: url.into(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            secret: secret.clone(),
            active: true,
            created_at: self.clock.now(),
            created_by: "alex".into(),
            last_fired_at: None,
            failures: 0,
            paused_reason: String::new(),
            paused_at: None,
            prev_secret: String::new(),
            prev_secret_until: None,
        };
        self.store.create_subscription(&s).await.unwrap();
        (s.id, secret)
    }

    pub async fn event(
        &self,
        name: EventName,
        data: serde_json::Value,
        call: Option<&str>,
    ) -> EventId {
        self.store
            .record_event(TENANT, name, data, call, self.clock.now())
            .await
            .unwrap()
    }

    /// Moves the clock and wakes the workers (as the passing of time would).
    pub fn advance(&self, ms: i64) {
        self.clock.advance_ms(ms);
        self.store.wake_deliveries();
    }

    /// The subscription's deliveries, oldest first.
    pub async fn deliveries(&self, sub: &SubscriptionId) -> Vec<DeliveryRecord> {
        let mut page = self
            .store
            .list_deliveries(TENANT, sub, None, 500, 0)
            .await
            .unwrap()
            .unwrap();
        page.items.reverse();
        page.items
    }

    pub async fn subscription(&self, sub: &SubscriptionId) -> SubscriptionRecord {
        self.store.subscription(TENANT, sub).await.unwrap().unwrap()
    }

    /// Polls the deliveries until `done` holds (results are written
    /// asynchronously, a moment after the receiver answered).
    pub async fn until(
        &self,
        sub: &SubscriptionId,
        what: &str,
        done: impl Fn(&[DeliveryRecord]) -> bool,
    ) -> Vec<DeliveryRecord> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let d = self.deliveries(sub).await;
            if done(&d) {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {d:#?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// One multi-threaded `#[tokio::test]` per backend for each listed
/// `async fn name(fx: Fx)`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = crate::store::testing::TestDb::sqlite().await;
                    super::$name(crate::webhooks::tests::Fx::new(db)).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(db) = crate::store::testing::TestDb::postgres().await {
                        super::$name(crate::webhooks::tests::Fx::new(db)).await;
                    }
                }
            )*
        }
    };
}
pub(crate) use on_both;

/// Long enough for anything local to happen.
pub const SOON: Duration = Duration::from_secs(10);
/// How long "nothing more arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(300);
