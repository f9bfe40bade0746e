//! Test databases: a fresh SQLite file per test, and, when
//! `CODEB_TEST_PG_URL` names a PostgreSQL server, a fresh database on it per
//! test. `tests/run` (and CI) set `CODEB_REQUIRE_PG=1`, which turns a missing
//! server into a failure instead of a skip, so the PostgreSQL half of the
//! suite cannot silently stop running.

use codeb_types::{CallId, CallStatus, E164, UtcMillis};
use tempfile::TempDir;

use super::{AttemptEnd, EventKind, NewCall, Store};

pub struct TestDb {
    pub store: Store,
    pub dir: TempDir,
    /// The database URL, to open a second store on it (a restart, a replica).
    pub url: String,
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/codeb.db?mode=rwc", dir.path().display());
        let store = Store::open(&url, dir.path()).await.expect("open sqlite");
        TestDb { store, dir, url }
    }

    /// A fresh PostgreSQL database, or None when no server is configured
    /// (and none is required).
    pub async fn postgres() -> Option<TestDb> {
        let Ok(admin_url) = std::env::var("CODEB_TEST_PG_URL") else {
            assert!(
                std::env::var("CODEB_REQUIRE_PG").as_deref() != Ok("1"),
                "CODEB_REQUIRE_PG=1 but CODEB_TEST_PG_URL is not set"
            );
            eprintln!("CODEB_TEST_PG_URL not set: skipping the PostgreSQL run of this test");
            return None;
        };
        let url = create_pg_database(&admin_url).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&url, dir.path()).await.expect("open postgres");
        Some(TestDb { store, dir, url })
    }
}

/// Creates a uniquely named database and returns its URL.
pub async fn create_pg_database(admin_url: &str) -> String {
    use sqlx::Connection as _;
    let name = format!(
        "codeb_t_{}",
        hex::encode(crate::crypto::random_bytes::<8>())
    );
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .expect("connect to PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let _ = conn.close().await;
    let mut url = url::Url::parse(admin_url).expect("CODEB_TEST_PG_URL is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Every recorded event of a tenant, oldest first: (name, call id, body).
pub async fn events(store: &Store, tenant: &str) -> Vec<(String, Option<String>, String)> {
    super::on_pool!(store, |pool| {
        sqlx::query_as(
            "SELECT name, call_id, body FROM webhook_events WHERE tenant = $1 ORDER BY seq",
        )
        .bind(tenant)
        .fetch_all(pool)
        .await
        .expect("read events")
    })
}

/// Each event's `data`, parsed from its body, for the events named `name`.
pub async fn event_data(store: &Store, tenant: &str, name: &str) -> Vec<serde_json::Value> {
    events(store, tenant)
        .await
        .into_iter()
        .filter(|(n, _, _)| n == name)
        .map(|(_, _, body)| {
            let v: serde_json::Value = serde_json::from_str(&body).expect("event body is JSON");
            v["data"].clone()
        })
        .collect()
}

/// Turns each named `async fn(TestDb)` into two tests, one on SQLite and
/// one on PostgreSQL (which passes without running when no PostgreSQL is
/// configured; `CODEB_REQUIRE_PG=1` makes that a failure in
/// [`TestDb::postgres`]), in modules `sqlite` and `postgres` of the
/// calling module.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(crate::store::testing::TestDb::sqlite().await).await;
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                if let Some(db) = crate::store::testing::TestDb::postgres().await {
                    super::$name(db).await;
                }
            })*
        }
    };
}
pub(crate) use both_backends;

/// The tenant and switch node of the store tests' calls.
pub const TENANT: &str = "t.example";
pub const NODE: &str = "http://10.0.0.1:50051";

/// The instant the store tests' calls start at.
pub const T0: UtcMillis = UtcMillis(1_780_000_000_000);

/// Call `n` of [`TENANT`], created and due at [`T0`]; tests override the
/// fields they are about.
pub fn new_call(n: u8, retries: i64) -> NewCall {
    NewCall {
        call_id: CallId::from_random([n; 6]),
        tenant: TENANT.into(),
        requested_by: "alex".into(),
        phone: E164::parse("+15551234567").expect("a valid number"),
        display_name: "Reminder".into(),
        email: "ops@example.com".into(),
        system_prompt: "Say hi".into(),
        ai_api_key: "key".into(),
        model: "m".into(),
        voice: "Aoede".into(),
        language: "en-US".into(),
        max_seconds: 60,
        retries,
        retry_delay_minutes: 5,
        trunk_id: None,
        status: CallStatus::Scheduled,
        created_at: T0,
        scheduled_for: None,
        next_attempt_at: T0,
    }
}

/// Trunk `n` of [`TENANT`] (a carrier on loopback), marked default or not.
pub fn trunk(n: u8, is_default: bool) -> crate::store::TrunkRecord {
    crate::store::TrunkRecord {
        id: codeb_types::TrunkId::from_random([n; 8]),
        tenant: TENANT.into(),
        name: format!("carrier {n}"),
        host: "127.0.0.1".into(),
        port: 5070,
        transport: "udp".into(),
        username: String::new(),
        password: String::new(),
        from_user: String::new(),
        from_domain: String::new(),
        max_concurrent_calls: 0,
        calls_per_second: 0,
        is_default,
        register: false,
        created_at: UtcMillis(1),
        updated_at: UtcMillis(1),
    }
}

/// The switch's end of an attempt that began at [`T0`] and lasted a
/// minute (58 s of it talk when answered), with one turn each way.
pub fn ended(outcome: &str, answered: bool) -> EventKind {
    EventKind::Ended(AttemptEnd {
        outcome: outcome.into(),
        answered,
        answered_at: answered.then_some(T0.plus_ms(2000)),
        ended_at: T0.plus_ms(60_000),
        talk_seconds: if answered { 58 } else { 0 },
        duration_seconds: 60,
        input_turns: 1,
        output_turns: 1,
        ..AttemptEnd::default()
    })
}
