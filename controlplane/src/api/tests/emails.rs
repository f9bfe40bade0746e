//! `/emails`: the outbound calls' transcript emails as the outbox holds
//! them, and queueing a failed one again.

use axum::http::StatusCode;
use serde_json::json;

use super::{Harness, TENANT, on_both_backends};
use crate::store::EmailStep;

on_both_backends!(the_outbox_is_listed_shown_and_a_failed_email_retried);

async fn the_outbox_is_listed_shown_and_a_failed_email_retried(h: Harness) {
    let t = h.admin().await;
    // A scheduled call, cancelled: its email is queued.
    let r = h
        .post(
            "/api.ashx/v1/calls",
            &t,
            json!({"phone": "+15557654321", "email": "ops@example.com", "systemPrompt": "x",
                "apiKey": "k", "scheduleAtUtc": "2026-06-05T09:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let call = r.json["callId"].as_str().unwrap().to_owned();
    let r = h
        .post(&format!("/api.ashx/v1/calls/{call}/hangup"), &t, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let list = h.get("/api.ashx/v1/emails", &t).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert_eq!(list.json["total"], 1, "{}", list.text);
    let e = &list.json["data"][0];
    let id = e["id"].as_str().unwrap().to_owned();
    assert_eq!(e["callId"], call.as_str());
    assert_eq!(e["to"], "ops@example.com");
    assert_eq!(e["status"], "queued");
    assert_eq!(e["attempts"], 0);
    assert!(e["nextAttemptUtc"].is_string(), "{e}");
    assert!(e["finishedAtUtc"].is_null(), "{e}");
    assert!(e.get("body").is_none(), "the list carries no message text");
    let one = h.get(&format!("/api.ashx/v1/emails/{id}"), &t).await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text);
    assert!(
        one.json["body"].as_str().unwrap().contains(&call),
        "{}",
        one.text
    );
    assert!(
        one.json["subject"].as_str().unwrap().contains("cancelled"),
        "{}",
        one.text
    );

    // Filters.
    let sent = h.get("/api.ashx/v1/emails?status=sent", &t).await;
    assert_eq!(sent.json["total"], 0, "{}", sent.text);
    let bad = h.get("/api.ashx/v1/emails?status=lost", &t).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json["error"], "invalid_request", "{}", bad.text);
    assert!(
        bad.json["error_description"]
            .as_str()
            .unwrap()
            .contains("status")
    );

    // Queued: nothing to retry.
    let r = h
        .post(&format!("/api.ashx/v1/emails/{id}/retry"), &t, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["requeued"], false);
    assert_eq!(r.json["email"]["status"], "queued");

    // The relay refuses it for good.
    let s = &h.db.store;
    let now = h.clock.now();
    let claimed = s.claim_emails(now, 60_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        s.record_email_attempt(&claimed[0], &EmailStep::Failed, "550 no such user", now)
            .await
            .unwrap()
    );
    let failed = h.get("/api.ashx/v1/emails?status=failed", &t).await;
    assert_eq!(failed.json["total"], 1, "{}", failed.text);
    let e = &failed.json["data"][0];
    assert_eq!(e["lastError"], "550 no such user");
    assert_eq!(e["attempts"], 1);
    assert!(e["nextAttemptUtc"].is_null(), "{e}");
    assert!(e["finishedAtUtc"].is_string(), "{e}");

    // Retried: queued again, due now, attempts start over, the reason kept
    // until the next attempt replaces it; the sender can claim it.
    let r = h
        .post(&format!("/api.ashx/v1/emails/{id}/retry"), &t, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["requeued"], true, "{}", r.text);
    let e = &r.json["email"];
    assert_eq!(e["status"], "queued");
    assert_eq!(e["attempts"], 0);
    assert_eq!(e["lastError"], "550 no such user");
    assert!(e["finishedAtUtc"].is_null(), "{e}");
    let again = s.claim_emails(h.clock.now(), 60_000, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, id);
    assert_eq!(again[0].attempt, 1);

    let r = h.get("/api.ashx/v1/emails/nope", &t).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = h
        .post("/api.ashx/v1/emails/nope/retry", &t, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert_eq!(
        s.email_page(TENANT, None, 50, 0).await.unwrap().total,
        1,
        "one email per call"
    );
}
