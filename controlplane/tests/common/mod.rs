//! What the whole-binary tests share: a `codeb serve` child process on a
//! free port, `curl`, fresh PostgreSQL databases from
//! `CODEB_TEST_PG_URL` (a missing server fails the test when
//! `CODEB_REQUIRE_PG=1`), and headless Chromium (`browser`; missing, it
//! fails the test when `CODEB_REQUIRE_CHROMIUM=1`; `cdp` drives it like a
//! person).

#![allow(dead_code)] // each test binary uses its own part

pub mod browser;
pub mod cdp;
pub mod platform;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const ADMIN: &str = "alex";
pub const ADMIN_PW: &str = "whole-binary-password";

pub struct Server {
    pub child: Child,
    pub base: String,
    pub env: Vec<(String, String)>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port free on loopback now, in 10000–29999: below the kernel's
/// ephemeral range, so that a process restarted on it (a switch node, the
/// control plane) finds it free again; an ephemeral port could meanwhile
/// be handed to another test's outgoing connection.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    for _ in 0..10_000 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let port = 10_000 + (h.finish() % 20_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 10000-29999");
}

impl Server {
    pub fn start(data_dir: &Path, database_url: Option<&str>) -> Server {
        Self::start_with(data_dir, database_url, &[], Stdio::inherit())
    }

    /// With extra environment and somewhere for the log (stderr) to go.
    pub fn start_with(
        data_dir: &Path,
        database_url: Option<&str>,
        extra_env: &[(&str, &str)],
        log: Stdio,
    ) -> Server {
        let port = free_port();
        let mut env = vec![
            ("CODEB_HTTP_ADDR".to_owned(), format!("127.0.0.1:{port}")),
            ("CODEB_DATA_DIR".to_owned(), data_dir.display().to_string()),
            ("CODEB_ADMIN_USER".to_owned(), ADMIN.to_owned()),
            ("CODEB_ADMIN_PASSWORD".to_owned(), ADMIN_PW.to_owned()),
            ("CODEB_LOG".to_owned(), "warn".to_owned()),
        ];
        if let Some(url) = database_url {
            env.push(("CODEB_DATABASE_URL".to_owned(), url.to_owned()));
        }
        for (k, v) in extra_env {
            env.retain(|(name, _)| name != k);
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
        Self::start_env(env, log)
    }

    /// With exactly this environment (that of an earlier `Server`, to
    /// start it again on its data directory and port).
    pub fn start_env(env: Vec<(String, String)>, log: Stdio) -> Server {
        let base = env
            .iter()
            .find(|(k, _)| k == "CODEB_HTTP_ADDR")
            .map(|(_, addr)| format!("http://{addr}"))
            .expect("CODEB_HTTP_ADDR is set");
        let child = Command::new(env!("CARGO_BIN_EXE_codeb"))
            .arg("serve")
            .envs(env.iter().cloned())
            .env_remove("CODEB_PUBLIC_BASE_URL")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start codeb serve");
        let server = Server { child, base, env };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if curl(&["-s", &format!("{}/healthz", server.base)]).0 == 200 {
                return server;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("codeb serve did not become healthy");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL: no shutdown, nothing flushed — a crash.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn admin_cmd(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_codeb"))
            .arg("admin")
            .args(args)
            .envs(self.env.iter().cloned())
            .output()
            .expect("run codeb admin");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

/// An access token of the bootstrap admin (password grant).
pub fn admin_token(server: &Server) -> String {
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

/// A new API key of the bootstrap admin (checked against the database, so
/// it outlives restarts and any replica accepts it).
pub fn api_key(server: &Server) -> String {
    let token = admin_token(server);
    let (code, key, raw) = post(
        server,
        &token,
        "/api.ashx/v1/api-keys",
        &serde_json::json!({"name": "e2e"}),
    );
    assert_eq!(code, 201, "{raw}");
    key["key"].as_str().unwrap().to_owned()
}

/// POSTs `body` as JSON to `server`'s `path` with a bearer token (an
/// access token or API key).
pub fn post(server: &Server, token: &str, path: &str, body: &Value) -> (u16, Value, String) {
    post_url(&server.url(""), token, path, body)
}

/// `post` to the control plane at `base`.
pub fn post_url(base: &str, token: &str, path: &str, body: &Value) -> (u16, Value, String) {
    curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {token}"),
        "-H",
        "Content-Type: application/json",
        "-d",
        &body.to_string(),
        &format!("{base}{path}"),
    ])
}

/// An API call with `token` as the bearer; asserts a 2xx and returns the
/// JSON body.
pub fn api(server: &Server, token: &str, method: &str, path: &str, body: Option<&Value>) -> Value {
    let auth = format!("Authorization: Bearer {token}");
    let url = server.url(path);
    let text = body.map(Value::to_string);
    let mut args = vec![
        "-X",
        method,
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
    ];
    if let Some(t) = &text {
        args.extend(["-d", t.as_str()]);
    }
    args.push(&url);
    let (code, v, raw) = curl(&args);
    assert!((200..300).contains(&code), "{method} {path}: {code} {raw}");
    v
}

/// Runs curl with `args`; returns (status, body as JSON or Null, raw body).
pub fn curl(args: &[&str]) -> (u16, Value, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
        body.to_owned(),
    )
}

/// A fresh, empty PostgreSQL database named after `prefix`; None when no
/// server is configured and none is required.
pub fn pg_database(prefix: &str) -> Option<String> {
    let Ok(admin_url) = std::env::var("CODEB_TEST_PG_URL") else {
        assert!(
            std::env::var("CODEB_REQUIRE_PG").as_deref() != Ok("1"),
            "CODEB_REQUIRE_PG=1 but CODEB_TEST_PG_URL is not set"
        );
        eprintln!("CODEB_TEST_PG_URL not set: skipping");
        return None;
    };
    let url = tokio::runtime::Runtime::new().unwrap().block_on(async {
        use sqlx::Connection as _;
        let name = format!("{prefix}_{}", std::process::id());
        let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name}"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let mut u = url::Url::parse(&admin_url).unwrap();
        u.set_path(&format!("/{name}"));
        u.to_string()
    });
    Some(url)
}
