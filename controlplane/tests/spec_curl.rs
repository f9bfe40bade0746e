//! Whole-binary test: starts `codeb serve` on a free port and runs the v1
//! spec's curl examples with the real `curl`, adapted to local data, on
//! SQLite and on PostgreSQL. Also drives the `codeb admin` commands.

#![allow(clippy::unwrap_used)] // a test: failing loudly is the point

mod common;

use std::process::Command;

use common::{ADMIN, ADMIN_PW, Server, curl};
use serde_json::{Value, json};

/// `POST /v1/api-keys` as `auth` (an `Authorization:` header): the new
/// key's JSON.
fn mint_key(server: &Server, auth: &str, name: &str) -> Value {
    let body = json!({ "name": name }).to_string();
    let (code, key, raw) = curl(&[
        "-X",
        "POST",
        "-H",
        auth,
        "-H",
        "Content-Type: application/json",
        "-d",
        &body,
        &server.url("/api.ashx/v1/api-keys"),
    ]);
    assert_eq!(code, 201, "{raw}");
    key
}

fn run_spec_examples(server: &Server) {
    // Authentication: the spec's token request, verbatim apart from host and credentials.
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
        "-d",
        "scope=openid",
    ]);
    assert_eq!(code, 200, "{raw}");
    let oidc = tok["access_token"].as_str().unwrap().to_owned();
    let auth = format!("Authorization: Bearer {oidc}");
    // Quick start 1: mint an API key (the page's backend), then use it as $TOKEN.
    let key = mint_key(server, &auth, "quick-start");
    let token = key["key"].as_str().unwrap().to_owned();
    let bearer = format!("Authorization: Bearer {token}");
    // Quick start 3.
    let (code, cat, _) = curl(&[&server.url("/api.ashx/v1")]);
    assert_eq!(code, 200);
    assert_eq!(cat["version"], "v1");
    let (code, routes, raw) = curl(&["-H", &bearer, &server.url("/api.ashx/v1/inbound-routes")]);
    assert_eq!(code, 200, "{raw}");
    assert_eq!(routes["data"][0]["did"], "*");
    // Quick start 4 / POST /v1/calls example: immediate, and no switch is configured here.
    let call = json!({
        "phone": "+15551234567", "displayName": "Reminder", "email": "ops@example.com",
        "systemPrompt": "You are calling Alex to remind them about a test appointment tomorrow at 14:00.",
        "apiKey": "AIza-local-test", "voice": "Aoede", "language": "en-US", "maxSeconds": 180
    });
    let (code, err, raw) = curl(&[
        "-X",
        "POST",
        &server.url("/api.ashx/v1/calls"),
        "-H",
        &bearer,
        "-H",
        "Content-Type: application/json",
        "-d",
        &call.to_string(),
    ]);
    assert_eq!(code, 503, "{raw}");
    assert_eq!(err["error"], "bridge_not_configured");
    let mut scheduled = call.clone();
    scheduled["scheduleAtUtc"] = json!("2099-01-01T09:00:00Z");
    let (code, _, raw) = curl(&[
        "-X",
        "POST",
        &server.url("/api.ashx/v1/calls"),
        "-H",
        &bearer,
        "-H",
        "Content-Type: application/json",
        "-d",
        &scheduled.to_string(),
    ]);
    assert_eq!(code, 400, "more than a year ahead is refused: {raw}");
    scheduled["scheduleAtUtc"] = json!(plus_hours(2));
    let (code, created, raw) = curl(&[
        "-X",
        "POST",
        &server.url("/api.ashx/v1/calls"),
        "-H",
        &bearer,
        "-H",
        "Content-Type: application/json",
        "-d",
        &scheduled.to_string(),
    ]);
    assert_eq!(code, 200, "{raw}");
    assert_eq!(created["ok"], true);
    assert_eq!(created["tenant"], "127.0.0.1");
    assert_eq!(created["whitelistAdded"], true);
    let call_id = created["callId"].as_str().unwrap().to_owned();
    // GET /v1/calls example.
    let (code, list, _) = curl(&[
        "-H",
        &bearer,
        &server.url("/api.ashx/v1/calls?status=in-flight,scheduled&limit=20"),
    ]);
    assert_eq!(code, 200);
    assert_eq!(
        (
            list["total"].as_i64(),
            list["limit"].as_i64(),
            list["offset"].as_i64()
        ),
        (Some(1), Some(20), Some(0))
    );
    assert_eq!(list["next"], Value::Null);
    assert_eq!(list["data"][0]["callId"], call_id.as_str());
    assert_eq!(list["data"][0]["requestedBy"], ADMIN);
    // GET /v1/calls/{id}.
    let (code, one, _) = curl(&[
        "-H",
        &bearer,
        &server.url(&format!("/api.ashx/v1/calls/{call_id}")),
    ]);
    assert_eq!(code, 200);
    assert_eq!(one["status"], "scheduled");
    let (code, nf, _) = curl(&[
        "-H",
        &bearer,
        &server.url("/api.ashx/v1/calls/oac-0123456789ab"),
    ]);
    assert_eq!((code, nf["error"].as_str()), (404, Some("not_found")));
    // POST /v1/calls/{id}/hangup.
    let (code, hung, _) = curl(&[
        "-X",
        "POST",
        "-H",
        &bearer,
        &server.url(&format!("/api.ashx/v1/calls/{call_id}/hangup")),
    ]);
    assert_eq!(code, 200);
    assert_eq!(hung["newStatus"], "cancelled");
    assert_eq!(hung["actor"], ADMIN);
    let (_, again, _) = curl(&[
        "-X",
        "POST",
        "-H",
        &bearer,
        &server.url(&format!("/api.ashx/v1/calls/{call_id}/hangup")),
    ]);
    assert_eq!(again["wasNoop"], true);
    // GET /v1/numbers.
    let (code, _, raw) = curl(&[
        "-X",
        "POST",
        "-H",
        &bearer,
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"name":"codebdemo","number":"1234","voice":"Aoede","visibility":"public","systemPrompt":"Receptionist"}"#,
        &server.url("/api.ashx/v1/numbers"),
    ]);
    assert_eq!(code, 201, "{raw}");
    let (code, nums, _) = curl(&["-H", &bearer, &server.url("/api.ashx/v1/numbers")]);
    assert_eq!(code, 200);
    assert_eq!(nums["tenant"], "127.0.0.1");
    assert_eq!(nums["data"][0]["name"], "codebdemo");
    // GET /v1/transcripts (empty here) and a transcript that does not exist.
    let (code, ts, _) = curl(&[
        "-H",
        &bearer,
        &server.url("/api.ashx/v1/transcripts?source=outbound-ai&limit=10"),
    ]);
    assert_eq!((code, ts["total"].as_i64()), (200, Some(0)));
    let (code, nt, _) = curl(&[
        "-H",
        &bearer,
        &server.url("/api.ashx/v1/transcripts/oac-0123456789ab"),
    ]);
    assert_eq!(code, 404);
    assert_eq!(
        nt["error_description"],
        "No transcript for callId=oac-0123456789ab"
    );
    // Inbound routes: every example in order.
    let (code, r, _) = curl(&[
        "-H",
        &bearer,
        &server.url("/api.ashx/v1/inbound-routes/%2A"),
    ]);
    assert_eq!(
        (code, r.clone()),
        (200, json!({"did": "*", "user": "operator"}))
    );
    let (code, r, _) = curl(&[
        "-X",
        "POST",
        "-H",
        &bearer,
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"Did":"+15551234567","User":"alex"}"#,
        &server.url("/api.ashx/v1/inbound-routes"),
    ]);
    assert_eq!(
        (code, r),
        (201, json!({"Did": "+15551234567", "User": "alex"}))
    );
    let (code, r, _) = curl(&[
        "-X",
        "POST",
        "-H",
        &bearer,
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"Did":"+15551234567","User":"alex"}"#,
        &server.url("/api.ashx/v1/inbound-routes"),
    ]);
    assert_eq!((code, r["error"].as_str()), (409, Some("duplicate_route")));
    let (code, r, _) = curl(&[
        "-X",
        "PUT",
        "-H",
        &bearer,
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"User":"frontdesk"}"#,
        &server.url("/api.ashx/v1/inbound-routes/%2A"),
    ]);
    assert_eq!((code, r), (200, json!({"Did": "*", "User": "frontdesk"})));
    curl(&[
        "-X",
        "POST",
        "-H",
        &bearer,
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"Did":"anonymous","FromNumber":"*","User":"callcentre"}"#,
        &server.url("/api.ashx/v1/inbound-routes"),
    ]);
    let (code, r, _) = curl(&[
        "-X",
        "PUT",
        "-H",
        &bearer,
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"User":"callcentre"}"#,
        &server.url("/api.ashx/v1/inbound-routes/anonymous?fromNumber=%2A"),
    ]);
    assert_eq!(
        (code, r),
        (
            200,
            json!({"Did": "anonymous", "FromNumber": "*", "User": "callcentre"})
        )
    );
    let (code, r, _) = curl(&[
        "-X",
        "DELETE",
        "-H",
        &bearer,
        &server.url("/api.ashx/v1/inbound-routes/%2B15551234567"),
    ]);
    assert_eq!(
        (code, r),
        (
            200,
            json!({"deleted": {"Did": "+15551234567", "User": "alex"}})
        )
    );
    let (code, r, _) = curl(&[
        "-X",
        "DELETE",
        "-H",
        &bearer,
        &server.url("/api.ashx/v1/inbound-routes/%2A"),
    ]);
    assert_eq!(
        (code, r["error"].as_str()),
        (400, Some("cannot_delete_catchall"))
    );
    let (code, r, _) = curl(&[
        "-H",
        &bearer,
        &server.url("/api.ashx/v1/inbound-routes/%2B4400000000"),
    ]);
    assert_eq!(
        (code, r["error_description"].as_str()),
        (404, Some("No inbound route with did='+4400000000'"))
    );
    // GET /v1/webhooks.
    let (code, w, _) = curl(&["-H", &bearer, &server.url("/api.ashx/v1/webhooks")]);
    assert_eq!(
        (code, w["total"].as_i64(), w["next"].clone()),
        (200, Some(0), Value::Null)
    );
    // Headers every response carries.
    let out = Command::new("curl")
        .args([
            "-sS",
            "-D",
            "-",
            "-o",
            "/dev/null",
            &server.url("/api.ashx/v1"),
        ])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(head.contains("cache-control: no-store"), "{head}");
    // The CLI: keys list shows the key's id but never the key; revoke stops it at once.
    let (ok, listing) = server.admin_cmd(&["keys", "list"]);
    assert!(ok, "{listing}");
    let key_id = key["id"].as_str().unwrap();
    assert!(
        listing.contains(key_id) && !listing.contains(&token),
        "{listing}"
    );
    let (ok, out) = server.admin_cmd(&["keys", "revoke", key_id]);
    assert!(ok, "{out}");
    let (code, _, _) = curl(&["-H", &bearer, &server.url("/api.ashx/v1/calls")]);
    assert_eq!(code, 401);
    // Users: add a viewer (403 on the API), change a password, remove.
    let (ok, out) = server.admin_cmd(&[
        "users",
        "add",
        "vic",
        "--role",
        "viewer",
        "--password",
        "viewer-pass-1",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = server.admin_cmd(&["users", "add", "vic", "--password", "viewer-pass-1"]);
    assert!(!ok && out.contains("already exists"), "{out}");
    let login = |user: &str, pw: &str| {
        curl(&[
            "-X",
            "POST",
            &server.url("/oidc.ashx/token"),
            "-d",
            "grant_type=password",
            "-d",
            "client_id=codeb-admin",
            "-d",
            &format!("username={user}"),
            "-d",
            &format!("password={pw}"),
        ])
    };
    let (code, v, _) = login("vic", "viewer-pass-1");
    assert_eq!(code, 200);
    let vauth = format!(
        "Authorization: Bearer {}",
        v["access_token"].as_str().unwrap()
    );
    assert_eq!(
        curl(&["-H", &vauth, &server.url("/api.ashx/v1/calls")]).0,
        403
    );
    let (ok, out) = server.admin_cmd(&["users", "passwd", "vic", "--password", "viewer-pass-2"]);
    assert!(ok, "{out}");
    assert_eq!(login("vic", "viewer-pass-1").0, 400);
    assert_eq!(login("vic", "viewer-pass-2").0, 200);
    let (ok, out) = server.admin_cmd(&["users", "list"]);
    assert!(
        ok && out.contains("vic") && out.contains("viewer") && out.contains(ADMIN),
        "{out}"
    );
    // A mistyped data directory is refused, and no database appears there.
    let root = tempfile::tempdir().unwrap();
    let typo = root.path().join("typo");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_codeb"))
        .args(["admin", "users", "list"])
        .env("CODEB_DATA_DIR", &typo)
        .env_remove("CODEB_DATABASE_URL")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no database at"),
        "{err}"
    );
    assert!(!typo.exists(), "nothing created at {}", typo.display());
    // Piped into a reader that stops at once (`| head -0`): a quiet end.
    let mut list = std::process::Command::new(env!("CARGO_BIN_EXE_codeb"))
        .args(["admin", "users", "list"])
        .envs(server.env.iter().cloned())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(list.stdout.take());
    let done = list.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(
        done.status.success() && !err.contains("panicked"),
        "{:?}: {err}",
        done.status
    );
    // A role change keeps the password.
    let (ok, out) = server.admin_cmd(&["users", "role", "vic", "admin"]);
    assert!(ok, "{out}");
    let (code, v, _) = login("vic", "viewer-pass-2");
    assert_eq!(code, 200, "the password stayed");
    let vauth = format!(
        "Authorization: Bearer {}",
        v["access_token"].as_str().unwrap()
    );
    assert_eq!(
        curl(&["-H", &vauth, &server.url("/api.ashx/v1/calls")]).0,
        200,
        "now an admin"
    );
    // An API key vic mints stays valid when vic is removed, and the
    // removal says so.
    let vkey = mint_key(server, &vauth, "vic-integration");
    let vkey_id = vkey["id"].as_str().unwrap().to_owned();
    let (ok, out) = server.admin_cmd(&["users", "role", "vic", "viewer"]);
    assert!(ok, "{out}");
    let (ok, out) = server.admin_cmd(&["users", "remove", "vic"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("API key {vkey_id}"))
            && out.contains("that 'vic' minted stays valid"),
        "{out}"
    );
    let (ok, out) = server.admin_cmd(&["keys", "revoke", &vkey_id]);
    assert!(ok, "{out}");
    assert_eq!(login("vic", "viewer-pass-2").0, 400);
    // The tenant's last admin stays, unless forced: nobody could sign in
    // to manage it.
    for args in [
        &["users", "remove", ADMIN][..],
        &["users", "role", ADMIN, "viewer"],
        &[
            "users",
            "passwd",
            ADMIN,
            "--role",
            "viewer",
            "--password",
            "another-pass-1",
        ],
    ] {
        let (ok, out) = server.admin_cmd(args);
        assert!(!ok && out.contains("is the last admin"), "{args:?}: {out}");
    }
    assert_eq!(login(ADMIN, ADMIN_PW).0, 200);
}

fn plus_hours(h: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    codeb_types::UtcMillis(i64::try_from(now).unwrap() + h * 3_600_000).to_iso()
}

#[test]
fn spec_examples_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None);
    run_spec_examples(&server);
    // The database and the signing key live in the data dir.
    assert!(dir.path().join("codeb.db").exists());
    assert!(dir.path().join("oidc-signing-key.p8").exists());
}

#[test]
fn spec_examples_on_postgres() {
    let Some(url) = common::pg_database("codeb_curl") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), Some(&url));
    run_spec_examples(&server);
    assert!(
        !dir.path().join("codeb.db").exists(),
        "PostgreSQL, not SQLite"
    );
}

#[test]
fn help_documents_every_setting() {
    let out = Command::new(env!("CARGO_BIN_EXE_codeb"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "CODEB_HTTP_ADDR",
        "CODEB_DATA_DIR",
        "CODEB_DATABASE_URL",
        "CODEB_PUBLIC_BASE_URL",
        "CODEB_ADMIN_USER",
        "CODEB_ADMIN_PASSWORD",
        "CODEB_SWITCH_URLS",
        "CODEB_SWITCH_LOST_AFTER",
        "CODEB_WEBHOOK_ALLOW",
        "CODEB_WEBHOOK_RETRY_SCHEDULE",
        "CODEB_WEBHOOK_TIMEOUT",
    ] {
        assert!(help.contains(var), "--help lacks {var}:\n{help}");
    }
    for cmd in ["serve", "dev", "migrate", "admin"] {
        assert!(help.contains(cmd), "--help lacks {cmd}");
    }
}
