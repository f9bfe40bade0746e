//! The public share page in a real headless Chromium, against a real
//! `codeb serve` (SQLite). The transcript is written into the server's
//! database the way a call's end writes it (this process opens the store
//! as a second control plane would); the share link is made through the
//! API. Shown: the page renders the turns in order, hostile text in a turn
//! shows as text and runs nothing, the view is counted (share list and the
//! `share.viewed` event), the headers keep a page with a secret in its URL
//! contained, and a revoked, expired or unknown token gets the HTML
//! not-found page with status 404.
//!
//! Without Chromium the test prints a skip line, unless
//! `CODEB_REQUIRE_CHROMIUM=1` (set by tests/run), which fails it.

#![allow(clippy::unwrap_used)] // a test: failing loudly is the point

mod common;

use codeb::store::{Store, TranscriptRecord, Turn};
use codeb_types::UtcMillis;
use common::{Server, api, browser};
use serde_json::{Value, json};
use sqlx::Connection as _;

/// The tenant of a server whose public URL is http://127.0.0.1:port.
const TENANT: &str = "127.0.0.1";
const CALL: &str = "oac-5a5a5a5a5a5a";
/// Would retitle the page if it ran.
const IMG: &str = r#"<img src=x onerror="document.title='pwned'">"#;
/// Would close a script block and mark the body if it ran.
const SCRIPT: &str = "</script><script>document.body.dataset.x=1</script>";

fn now() -> UtcMillis {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    UtcMillis(i64::try_from(d.as_millis()).unwrap())
}

/// The turns, in the order they were spoken.
fn turns(t0: UtcMillis) -> Vec<Turn> {
    [
        ("AI", "Hello, this is the clinic calling about Tuesday."),
        ("Caller", IMG),
        ("AI", SCRIPT),
        ("Caller", "\"Quoted\" & 'single' — ünïcode <b>not bold</b>"),
        ("AI", "Thank you, goodbye."),
    ]
    .iter()
    .enumerate()
    .map(|(i, (speaker, text))| Turn {
        speaker: (*speaker).into(),
        text: (*text).into(),
        ts: t0.plus_ms(i64::try_from(i).unwrap() * 1500),
    })
    .collect()
}

/// How a browser serialises `s` as the text of an element.
fn as_dom_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Status and headers (lower-case names) of a plain GET; counts as a view.
fn get_head(url: &str) -> (u16, Vec<(String, String)>) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o", "/dev/null", "-D", "-", url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// What a public page with a secret in its URL must say about itself.
fn assert_contained(headers: &[(String, String)], what: &str) {
    assert_eq!(
        header(headers, "content-type"),
        "text/html; charset=utf-8",
        "{what}"
    );
    let csp = header(headers, "content-security-policy");
    for part in [
        "default-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{what}: CSP {csp:?} lacks {part}");
    }
    assert_eq!(
        header(headers, "x-content-type-options"),
        "nosniff",
        "{what}"
    );
    assert_eq!(header(headers, "referrer-policy"), "no-referrer", "{what}");
    assert_eq!(header(headers, "cache-control"), "no-store", "{what}");
    assert_eq!(header(headers, "x-robots-tag"), "noindex", "{what}");
}

/// The share as the list shows it.
fn listed(server: &Server, token: &str, id: &str) -> Value {
    let list = api(
        server,
        token,
        "GET",
        &format!("/api.ashx/v1/transcripts/{CALL}/shares"),
        None,
    );
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap()
        .clone()
}

#[test]
fn the_share_page_renders_safely_in_chromium() {
    let Some(chromium) = browser::chromium() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None);
    let db_url = format!("sqlite://{}/codeb.db?mode=rwc", dir.path().display());
    let store = rt.block_on(Store::open(&db_url, dir.path())).unwrap();
    let t0 = now().plus_ms(-60_000);
    let record = TranscriptRecord {
        call_id: CALL.into(),
        tenant: TENANT.into(),
        caller_source: "outbound-ai".into(),
        started_at: t0,
        answered_at: Some(t0),
        ended_at: Some(t0.plus_ms(9_000)),
        duration_sec: 9,
        outcome: "finished".into(),
        turns: turns(t0),
        ..TranscriptRecord::default()
    };
    rt.block_on(store.save_transcript(record, now())).unwrap();
    let tok = common::admin_token(&server);
    let shares = format!("/api.ashx/v1/transcripts/{CALL}/shares");
    let created = api(
        &server,
        &tok,
        "POST",
        &shares,
        Some(&json!({"ttlHours": 0})),
    );
    let share_url = created["url"].as_str().unwrap().to_owned();
    let share_id = created["id"].as_str().unwrap().to_owned();
    let token = created["token"].as_str().unwrap().to_owned();
    assert_eq!(share_url, server.url(&format!("/share/{token}")));

    // The page, as Chromium leaves it.
    let dom = browser::dump_dom(&chromium, &share_url);
    assert!(
        dom.contains(&format!("<title>Transcript {CALL}</title>")),
        "the title changed: {dom}"
    );
    let mut at = 0;
    for t in turns(t0) {
        let text = as_dom_text(&t.text);
        let found = dom[at..]
            .find(&text)
            .unwrap_or_else(|| panic!("turn {:?} missing or out of order in {dom}", t.text));
        at += found + text.len();
    }
    // The hostile turns are text: no element came of them, nothing ran.
    let lower = dom.to_ascii_lowercase();
    for element in ["<img", "<script", "<b>"] {
        assert!(!lower.contains(element), "{element} in the DOM: {dom}");
    }
    assert!(dom.contains("<body>"), "the body was changed: {dom}");
    assert!(!lower.contains("data-x"), "the body was marked: {dom}");
    assert!(!dom.contains("pwned</title>"));

    // That open counted, and fired share.viewed with the viewer's address.
    let item = listed(&server, &tok, &share_id);
    assert_eq!(item["views"], 1, "{item}");
    assert!(item["lastViewedUtc"].is_string(), "{item}");
    let viewed: Vec<String> = rt.block_on(async {
        let mut conn = sqlx::SqliteConnection::connect(&db_url).await.unwrap();
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT body FROM webhook_events WHERE name = 'share.viewed' ORDER BY seq",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        rows.into_iter().map(|(b,)| b).collect()
    });
    assert_eq!(viewed.len(), 1, "{viewed:?}");
    let ev: Value = serde_json::from_str(&viewed[0]).unwrap();
    assert_eq!(ev["data"]["viewerIp"], "127.0.0.1");
    assert_eq!(
        ev["data"]["token"],
        format!("...{}", &token[token.len() - 8..])
    );

    // The headers of the page itself (a second view).
    let (status, headers) = get_head(&share_url);
    assert_eq!(status, 200);
    assert_contained(&headers, "the page");
    assert_eq!(listed(&server, &tok, &share_id)["views"], 2);

    // Revoked: the HTML not-found page, in the browser too, and not counted.
    api(
        &server,
        &tok,
        "DELETE",
        &format!("{shares}/{share_id}"),
        None,
    );
    let (status, headers) = get_head(&share_url);
    assert_eq!(status, 404);
    assert_contained(&headers, "revoked");
    let gone = browser::dump_dom(&chromium, &share_url);
    assert!(gone.contains("No such share link"), "{gone}");
    assert!(
        !gone.contains("clinic"),
        "a revoked link still shows: {gone}"
    );

    // Expired: a link whose time has passed (moved back in the database,
    // as the clock would move forward).
    let brief = api(
        &server,
        &tok,
        "POST",
        &shares,
        Some(&json!({"ttlHours": 1})),
    );
    let brief_url = brief["url"].as_str().unwrap().to_owned();
    assert_eq!(get_head(&brief_url).0, 200);
    rt.block_on(async {
        let mut conn = sqlx::SqliteConnection::connect(&db_url).await.unwrap();
        let n = sqlx::query("UPDATE transcript_shares SET expires_at = $1 WHERE id = $2")
            .bind(now().plus_ms(-1).0)
            .bind(brief["id"].as_str().unwrap())
            .execute(&mut conn)
            .await
            .unwrap()
            .rows_affected();
        assert_eq!(n, 1);
    });
    let (status, headers) = get_head(&brief_url);
    assert_eq!(status, 404);
    assert_contained(&headers, "expired");
    assert_eq!(
        listed(&server, &tok, brief["id"].as_str().unwrap())["views"],
        1
    );

    // Unknown and malformed tokens: the same page.
    for bad in ["A".repeat(43), "short".to_owned()] {
        let (status, headers) = get_head(&server.url(&format!("/share/{bad}")));
        assert_eq!(status, 404, "{bad}");
        assert_contained(&headers, &bad);
    }
    rt.block_on(store.close());
}
