//! Route tests: the whole app driven through `oneshot`, no sockets. Every
//! test runs twice, on SQLite and on PostgreSQL (see `store::testing`).

mod auth;
mod calls;
mod conventions;
mod emails;
mod inbound_calls;
mod prompts;
mod resources;
mod shares;
mod sip_users;
mod sweeps;
mod webhooks;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use codeb_types::{UserId, UtcMillis};
use serde_json::Value;
use tower::ServiceExt as _;

use crate::auth::jwt::SigningKey;
use crate::auth::password;
use crate::clock::Clock;
use crate::config::Config;
use crate::crypto;
use crate::state::AppState;
use crate::store::Role;
use crate::store::testing::TestDb;

pub const ADMIN: &str = "alex";
pub const ADMIN_PW: &str = "correct-horse-battery";
pub const TENANT: &str = "phone.example.test";
pub const ISSUER: &str = "https://phone.example.test";

pub struct Harness {
    pub app: Router,
    pub state: AppState,
    pub db: TestDb,
    pub clock: Clock,
    admin_token: tokio::sync::OnceCell<String>,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Harness {
    pub async fn new(db: TestDb) -> Harness {
        Self::with_switch(db, vec![]).await
    }

    pub async fn with_switch(db: TestDb, switch_urls: Vec<String>) -> Harness {
        let config = Config {
            http_addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: db.dir.path().to_owned(),
            database_url: String::new(),
            public_base_url: url::Url::parse(ISSUER).unwrap(),
            tenant: TENANT.into(),
            issuer: ISSUER.into(),
            admin_user: ADMIN.into(),
            admin_password: Some(ADMIN_PW.into()),
            switch_urls,
            switch_token: None,
            switch_tls: crate::config::SwitchTls::default(),
            switch_lost_after: std::time::Duration::from_secs(5),
            call_retry_delay_unit: std::time::Duration::from_secs(60),
            webhooks: crate::config::WebhookConfig::default(),
            email: crate::config::EmailConfig::unsent(TENANT),
        };
        let clock = Clock::manual(UtcMillis::parse_rfc3339("2026-06-04T17:55:12.401Z").unwrap());
        let now = clock.now();
        crate::server::bootstrap_admin(&db.store, &config, now)
            .await
            .unwrap();
        db.store
            .ensure_catchall(TENANT, "operator", now)
            .await
            .unwrap();
        let key = SigningKey::load_or_create(db.dir.path()).unwrap();
        let state = AppState::new(db.store.clone(), config, key, clock.clone());
        // No DNS in route tests: names resolve from a fixed table.
        let guard = std::sync::Arc::new(
            crate::webhooks::guard_for(&state.config).with_resolver(test_resolver()),
        );
        let state = state.with_guard(guard);
        Harness {
            app: crate::app(state.clone()),
            state,
            db,
            clock,
            admin_token: tokio::sync::OnceCell::new(),
        }
    }

    /// Sends a request; `body` is JSON unless `raw` is used.
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(v) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(&v).unwrap()))
                .unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        self.send(req).await
    }

    pub async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            json,
            text,
        }
    }

    pub async fn get(&self, uri: &str, token: &str) -> Resp {
        self.call(Method::GET, uri, Some(token), None).await
    }

    pub async fn post(&self, uri: &str, token: &str, body: Value) -> Resp {
        self.call(Method::POST, uri, Some(token), Some(body)).await
    }

    pub async fn put(&self, uri: &str, token: &str, body: Value) -> Resp {
        self.call(Method::PUT, uri, Some(token), Some(body)).await
    }

    pub async fn delete(&self, uri: &str, token: &str) -> Resp {
        self.call(Method::DELETE, uri, Some(token), None).await
    }

    /// POSTs a form to the token endpoint.
    pub async fn form(&self, uri: &str, pairs: &[(&str, &str)]) -> Resp {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }

    pub async fn login(&self, user: &str, pw: &str) -> Resp {
        self.form(
            "/oidc.ashx/token",
            &[
                ("grant_type", "password"),
                ("client_id", "codeb-admin"),
                ("username", user),
                ("password", pw),
                ("scope", "openid"),
            ],
        )
        .await
    }

    pub async fn token_for(&self, user: &str, pw: &str) -> String {
        let r = self.login(user, pw).await;
        assert_eq!(r.status, StatusCode::OK, "login {user}: {}", r.text);
        r.json["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn admin(&self) -> String {
        self.admin_token
            .get_or_init(|| self.token_for(ADMIN, ADMIN_PW))
            .await
            .clone()
    }

    /// Adds a user directly in the store.
    pub async fn add_user(&self, name: &str, pw: &str, role: Role, tenant: &str) {
        let hash = password::hash(pw).unwrap();
        let id = UserId::from_random(crypto::random_bytes());
        self.db
            .store
            .create_user(&id, tenant, name, &hash, role, self.clock.now())
            .await
            .unwrap()
            .unwrap();
    }

    /// Mints an API key through the API.
    pub async fn api_key(&self, token: &str) -> (String, String) {
        let r = self
            .post(
                "/api.ashx/v1/api-keys",
                token,
                serde_json::json!({"name": "crm"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        (
            r.json["id"].as_str().unwrap().to_owned(),
            r.json["key"].as_str().unwrap().to_owned(),
        )
    }
}

/// Names route tests resolve: `internal.test` is a private address,
/// `public.test` a public one; anything else does not exist.
pub fn test_resolver() -> crate::webhooks::Resolver {
    crate::webhooks::Resolver::Fixed(std::sync::Arc::new(|host: &str| match host {
        "internal.test" => Some(vec![std::net::IpAddr::from([10, 1, 2, 3])]),
        "public.test" => Some(vec![std::net::IpAddr::from([93, 184, 216, 34])]),
        _ => None,
    }))
}

/// Generates one `#[tokio::test]` per backend for each listed test
/// function (`async fn name(h: Harness)`).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = crate::store::testing::TestDb::sqlite().await;
                    super::$name(super::super::Harness::new(db).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(db) = crate::store::testing::TestDb::postgres().await {
                        super::$name(super::super::Harness::new(db).await).await;
                    }
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;
