//! Transcript share links: create (token once), list (masked), the public
//! page (no auth, views counted), expiry, revoke, and the `share.*` events
//! with the spec's payloads.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

use super::{ADMIN, Harness, ISSUER, TENANT, on_both_backends};
use crate::store::testing;

on_both_backends!(share_links_end_to_end);

const CALL: &str = "oac-0123456789ab";
const FILE: &str = "outbound-ai-20260101-120000-oac-0123456789ab.txt";

async fn open(h: &Harness, token: &str, from: &str) -> super::Resp {
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(format!("/share/{token}"))
        .body(Body::empty())
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(from.parse::<SocketAddr>().unwrap()));
    h.send(req).await
}

async fn share_links_end_to_end(h: Harness) {
    let t = h.admin().await;
    let transcript = super::resources::transcript(CALL, "outbound-ai", "2026-01-01T12:00:00Z");
    h.db.store
        .save_transcript(transcript, h.clock.now())
        .await
        .unwrap();
    // A subscriber to everything, so the events are queued for delivery.
    let r = h
        .post(
            "/api.ashx/v1/webhooks",
            &t,
            json!({"url": "https://public.test/h", "events": ["*"]}),
        )
        .await;
    let webhook = r.json["id"].as_str().unwrap().to_owned();
    let shares = format!("/api.ashx/v1/transcripts/{CALL}/shares");
    let r = h.post(&shares, &t, json!({"ttlHours": 2})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let token = r.json["token"].as_str().unwrap().to_owned();
    let id = r.json["id"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 43);
    assert_eq!(r.json["url"], format!("{ISSUER}/share/{token}"));
    assert_eq!(r.json["callId"], CALL);
    assert_eq!(r.json["ttlHours"], 2);
    assert_eq!(r.json["createdBy"], ADMIN);
    assert_eq!(r.json["expiresUtc"], "2026-06-04T19:55:12.401Z");
    let tail = &token[token.len() - 8..];
    // No body: the default lifetime (the spec's 168 h); 0 = never.
    let r = h.call(Method::POST, &shares, Some(&t), None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["ttlHours"], 168);
    let r = h.post(&shares, &t, json!({"ttlHours": 0})).await;
    assert_eq!(r.json["expiresUtc"], Value::Null);
    for bad in [
        json!({"ttlHours": -1}),
        json!({"ttlHours": 8761}),
        json!({"ttl": 1}),
    ] {
        let r = h.post(&shares, &t, bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let r = h
        .post(
            "/api.ashx/v1/transcripts/oac-ffffffffffff/shares",
            &t,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        h.get("/api.ashx/v1/transcripts/oac-ffffffffffff/shares", &t)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // The public page: no auth, HTML, escaped, contained; the view counts.
    let page = open(&h, &token, "203.0.113.42:51000").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert_eq!(
        page.headers[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    assert!(page.text.contains("Just confirming — ünïcode ok?"));
    assert!(
        page.text
            .contains("Hi Alex, calling about your test appointment.")
    );
    assert_eq!(page.headers[header::REFERRER_POLICY], "no-referrer");
    assert!(
        page.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );
    assert_eq!(page.headers[header::CACHE_CONTROL], "no-store");
    h.clock.advance_ms(60_000);
    assert_eq!(
        open(&h, &token, "[2001:4860::8]:443").await.status,
        StatusCode::OK
    );
    let list = h.get(&shares, &t).await;
    assert_eq!(list.json["total"], 3);
    assert!(!list.text.contains(&token), "tokens never listed");
    let first = list.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(first["token"], format!("...{tail}"));
    assert_eq!(first["views"], 2);
    assert_eq!(first["lastViewedUtc"], "2026-06-04T17:56:12.401Z");
    assert_eq!(first["expired"], false);
    // Unknown or malformed tokens: 404, nothing counted.
    for bad in [
        "A".repeat(43),
        "short".to_owned(),
        format!("{}=", &token[..42]),
    ] {
        assert_eq!(
            open(&h, &bad, "198.51.100.1:1").await.status,
            StatusCode::NOT_FOUND
        );
    }
    // Expired after two hours.
    h.clock.advance_ms(2 * 3_600_000);
    let t = h.token_for(ADMIN, super::ADMIN_PW).await;
    let r = open(&h, &token, "203.0.113.42:51000").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // A browser opens it: the HTML not-found page, contained like the page.
    assert_eq!(r.headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(r.text.contains("No such share link"), "{}", r.text);
    assert_eq!(r.headers[header::REFERRER_POLICY], "no-referrer");
    assert_eq!(r.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let list = h.get(&shares, &t).await;
    let first = list.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (first["expired"].clone(), first["views"].clone()),
        (json!(true), json!(2))
    );
    // Revoke: the link is gone at once.
    let never = list.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["ttlHours"] == 0)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = h.delete(&format!("{shares}/{id}"), &t).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json, json!({"deleted": id}));
    assert_eq!(
        h.delete(&format!("{shares}/{id}"), &t).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.delete(&format!("{shares}/sh_nope"), &t).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.delete(
            &format!("/api.ashx/v1/transcripts/oac-ffffffffffff/shares/{never}"),
            &t
        )
        .await
        .status,
        StatusCode::NOT_FOUND,
        "a share is addressed under its own transcript"
    );
    assert_eq!(h.get(&shares, &t).await.json["total"], 2);
    // The events, with the spec's payloads.
    let created = testing::event_data(&h.db.store, TENANT, "share.created").await;
    assert_eq!(created.len(), 3);
    assert_eq!(
        created[0],
        json!({"token": format!("...{tail}"), "file": FILE, "ttlHours": 2,
            "createdBy": ADMIN, "expiresUtc": "2026-06-04T19:55:12.401Z"})
    );
    assert_eq!(created[2]["expiresUtc"], Value::Null);
    let viewed = testing::event_data(&h.db.store, TENANT, "share.viewed").await;
    assert_eq!(
        viewed,
        vec![
            json!({"token": format!("...{tail}"), "file": FILE, "viewerIp": "203.0.113.42"}),
            json!({"token": format!("...{tail}"), "file": FILE, "viewerIp": "2001:4860::8"}),
        ]
    );
    let revoked = testing::event_data(&h.db.store, TENANT, "share.revoked").await;
    assert_eq!(
        revoked,
        vec![json!({"token": format!("...{tail}"), "file": FILE, "revokedBy": ADMIN})]
    );
    // Each is on its way to the subscriber, keyed to the call.
    let events = testing::events(&h.db.store, TENANT).await;
    assert!(
        events
            .iter()
            .filter(|(n, _, _)| n.starts_with("share."))
            .all(|(_, call, _)| call.as_deref() == Some(CALL))
    );
    let log = h
        .get(&format!("/api.ashx/v1/webhooks/{webhook}/deliveries"), &t)
        .await;
    assert_eq!(log.json["total"], 6, "3 created + 2 viewed + 1 revoked");
}
