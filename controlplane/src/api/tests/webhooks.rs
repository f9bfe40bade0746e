//! Webhook routes beyond create/list/delete: test fire, the delivery log,
//! replay, resume, secret rotation, and the SSRF guard at creation. No
//! receiver runs here (delivery itself is tested in `webhooks::tests`);
//! attempt results are recorded through the store as a worker would.

use axum::http::StatusCode;
use codeb_types::{EventName, SubscriptionId};
use serde_json::{Value, json};

use super::{ADMIN, Harness, TENANT, on_both_backends};
use crate::store::testing;
use crate::store::{AttemptOutcome, NextStep};

on_both_backends!(
    test_fire_log_and_replay,
    pause_resume_and_rotation,
    receiver_urls_pass_the_ssrf_guard,
);

async fn subscribe(h: &Harness, t: &str, events: Value) -> (String, String) {
    let r = h
        .post(
            "/api.ashx/v1/webhooks",
            t,
            json!({"url": "https://public.test/hook", "events": events}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    (
        r.json["id"].as_str().unwrap().to_owned(),
        r.json["secret"].as_str().unwrap().to_owned(),
    )
}

/// One subscription as `GET /webhooks` shows it.
async fn listed(h: &Harness, t: &str, id: &str) -> Value {
    let list = h.get("/api.ashx/v1/webhooks", t).await;
    list.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap()
        .clone()
}

/// Claims everything due and records `next` for it, as a worker would.
async fn finish_all(h: &Harness, next: NextStep, status: Option<u16>, gone: bool) -> usize {
    let now = h.clock.now();
    let claimed = h
        .state
        .store
        .claim_deliveries(now, 60_000, 100, &mut crate::store::Room::new(100))
        .await
        .unwrap();
    let outcomes: Vec<AttemptOutcome> = claimed
        .iter()
        .map(|c| AttemptOutcome {
            seq: c.seq,
            lease_token: c.lease_token,
            webhook_id: c.webhook_id.clone(),
            attempt: c.attempt,
            started_at: now,
            status,
            latency_ms: 12,
            error: if next == NextStep::Succeeded {
                String::new()
            } else {
                format!("HTTP {}", status.unwrap_or(0))
            },
            next,
            gone,
        })
        .collect();
    h.state
        .store
        .record_attempts(&outcomes, now, 20)
        .await
        .unwrap();
    claimed.len()
}

async fn test_fire_log_and_replay(h: Harness) {
    let t = h.admin().await;
    let (id, _) = subscribe(&h, &t, json!(["call.ended"])).await;
    let (other, _) = subscribe(&h, &t, json!(["*"])).await;
    let r = h
        .post(&format!("/api.ashx/v1/webhooks/{id}/test"), &t, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.json["event"], "webhook.test");
    let delivery = r.json["deliveryId"].as_str().unwrap().to_owned();
    assert!(codeb_types::DeliveryId::parse(&delivery).is_ok());
    // Only the subscription fired at, even though it does not list the event.
    let log = h
        .get(&format!("/api.ashx/v1/webhooks/{id}/deliveries"), &t)
        .await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.text);
    assert_eq!(log.json["total"], 1);
    let d = &log.json["data"][0];
    assert_eq!(d["id"], delivery.as_str());
    assert_eq!(d["event"], "webhook.test");
    assert_eq!(d["state"], "pending");
    assert_eq!(d["attempts"], 0);
    assert_eq!(d["nextAttemptUtc"], "2026-06-04T17:55:12.401Z");
    assert_eq!(d["log"], json!([]));
    assert_eq!(
        h.get(&format!("/api.ashx/v1/webhooks/{other}/deliveries"), &t)
            .await
            .json["total"],
        0
    );
    let data = testing::event_data(&h.db.store, TENANT, "webhook.test").await;
    assert_eq!(data[0]["webhookId"], id.as_str());
    assert_eq!(data[0]["requestedBy"], ADMIN);
    let (_, _, body) = testing::events(&h.db.store, TENANT).await.remove(0);
    assert!(
        body.starts_with(&format!(
            r#"{{"event":"webhook.test","tenant":"{TENANT}","ts":"2026-06-04T17:55:12.401Z","data":{{"#
        )),
        "{body}"
    );
    // A pending delivery cannot be replayed.
    let r = h
        .post(
            &format!("/api.ashx/v1/webhooks/deliveries/{delivery}/replay"),
            &t,
            json!({}),
        )
        .await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (StatusCode::CONFLICT, Some("delivery_pending"))
    );
    // Attempt 1 fails, retried 5 s later; the log shows it.
    assert_eq!(
        finish_all(
            &h,
            NextStep::RetryAt(h.clock.now().plus_ms(5_000)),
            Some(500),
            false
        )
        .await,
        1
    );
    let d = h
        .get(&format!("/api.ashx/v1/webhooks/{id}/deliveries"), &t)
        .await
        .json["data"][0]
        .clone();
    assert_eq!(d["attempts"], 1);
    assert_eq!(d["nextAttemptUtc"], "2026-06-04T17:55:17.401Z");
    assert_eq!(d["lastStatusCode"], 500);
    assert_eq!(
        d["log"],
        json!([{"attempt": 1, "atUtc": "2026-06-04T17:55:12.401Z", "statusCode": 500,
            "latencyMs": 12, "error": "HTTP 500"}])
    );
    assert_eq!(
        finish_all(&h, NextStep::Failed, Some(500), false).await,
        0,
        "not due before its time"
    );
    h.clock.advance_ms(5_000);
    assert_eq!(finish_all(&h, NextStep::Failed, Some(500), false).await, 1);
    let item = listed(&h, &t, &id).await;
    assert_eq!(item["failures"], 2);
    assert_eq!(item["active"], true);
    let r = h
        .get(
            &format!("/api.ashx/v1/webhooks/{id}/deliveries?state=failed"),
            &t,
        )
        .await;
    assert_eq!(r.json["total"], 1);
    assert_eq!(
        r.json["data"][0]["finishedAtUtc"],
        "2026-06-04T17:55:17.401Z"
    );
    assert_eq!(r.json["data"][0]["nextAttemptUtc"], Value::Null);
    // Replay: a new delivery of the same event, under a new id.
    let r = h
        .post(
            &format!("/api.ashx/v1/webhooks/deliveries/{delivery}/replay"),
            &t,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let replay = r.json["deliveryId"].as_str().unwrap().to_owned();
    assert_ne!(replay, delivery);
    assert_eq!(r.json["replayOf"], delivery.as_str());
    let log = h
        .get(
            &format!("/api.ashx/v1/webhooks/{id}/deliveries?limit=1"),
            &t,
        )
        .await;
    assert_eq!(log.json["total"], 2);
    assert_eq!(log.json["data"][0]["id"], replay.as_str());
    assert_eq!(log.json["data"][0]["replayOf"], delivery.as_str());
    assert_eq!(
        log.json["next"],
        format!("/api.ashx/v1/webhooks/{id}/deliveries?limit=1&offset=1")
    );
    let both = h
        .get(&format!("/api.ashx/v1/webhooks/{id}/deliveries"), &t)
        .await;
    assert_eq!(
        both.json["data"][0]["eventId"], both.json["data"][1]["eventId"],
        "the same event"
    );
    assert_eq!(
        finish_all(&h, NextStep::Succeeded, Some(204), false).await,
        1
    );
    let item = listed(&h, &t, &id).await;
    assert_eq!(item["failures"], 0, "a success resets the count");
    assert_eq!(item["lastFiredUtc"], "2026-06-04T17:55:17.413Z");
    // Unknown and malformed ids; bad filters.
    for (uri, body) in [
        ("/api.ashx/v1/webhooks/0123456789abcdef/test", true),
        ("/api.ashx/v1/webhooks/nope/test", true),
        ("/api.ashx/v1/webhooks/0123456789abcdef/resume", true),
        ("/api.ashx/v1/webhooks/0123456789abcdef/rotate-secret", true),
        (
            "/api.ashx/v1/webhooks/deliveries/dlv_0123456789abcdef/replay",
            true,
        ),
        ("/api.ashx/v1/webhooks/deliveries/nope/replay", true),
        ("/api.ashx/v1/webhooks/0123456789abcdef/deliveries", false),
    ] {
        let r = if body {
            h.post(uri, &t, json!({})).await
        } else {
            h.get(uri, &t).await
        };
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}: {}", r.text);
    }
    let r = h
        .get(
            &format!("/api.ashx/v1/webhooks/{id}/deliveries?state=lost"),
            &t,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Deleting the subscription removes its log.
    assert_eq!(
        h.delete(&format!("/api.ashx/v1/webhooks/{id}"), &t)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        h.post(
            &format!("/api.ashx/v1/webhooks/deliveries/{replay}/replay"),
            &t,
            json!({})
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
}

async fn pause_resume_and_rotation(h: Harness) {
    let t = h.admin().await;
    let (id, secret) = subscribe(&h, &t, json!(["*"])).await;
    let sid = SubscriptionId::parse(&id).unwrap();
    // A 410 disables at once, and the reason shows in the list.
    h.db.store
        .record_event(
            TENANT,
            EventName::CallEnded,
            json!({}),
            Some("oac-0123456789ab"),
            h.clock.now(),
        )
        .await
        .unwrap();
    assert_eq!(finish_all(&h, NextStep::Failed, Some(410), true).await, 1);
    let item = h.get("/api.ashx/v1/webhooks", &t).await.json["data"][0].clone();
    assert_eq!(item["active"], false);
    assert_eq!(item["failures"], 1);
    assert!(
        item["pausedReason"].as_str().unwrap().contains("410 Gone"),
        "{item}"
    );
    assert_eq!(item["pausedAtUtc"], "2026-06-04T17:55:12.401Z");
    // Events go on being recorded for it, held until it resumes.
    h.db.store
        .record_event(
            TENANT,
            EventName::TranscriptSaved,
            json!({}),
            None,
            h.clock.now(),
        )
        .await
        .unwrap();
    assert_eq!(
        finish_all(&h, NextStep::Succeeded, Some(200), false).await,
        0
    );
    let held = h
        .get(
            &format!("/api.ashx/v1/webhooks/{id}/deliveries?state=held"),
            &t,
        )
        .await;
    assert_eq!(held.status, StatusCode::OK, "{}", held.text);
    assert_eq!(held.json["total"], 1);
    assert_eq!(held.json["data"][0]["event"], "transcript.saved");
    assert_eq!(held.json["data"][0]["state"], "held");
    assert_eq!(held.json["data"][0]["nextAttemptUtc"], Value::Null);
    let bad = h
        .get(
            &format!("/api.ashx/v1/webhooks/{id}/deliveries?state=paused"),
            &t,
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    assert!(
        bad.text.contains("pending, held, succeeded or failed"),
        "{}",
        bad.text
    );
    let r = h
        .post(&format!("/api.ashx/v1/webhooks/{id}/resume"), &t, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["active"], true);
    assert_eq!(r.json["failures"], 0);
    assert!(r.json.get("pausedReason").is_none(), "{}", r.text);
    assert_eq!(
        finish_all(&h, NextStep::Succeeded, Some(200), false).await,
        1
    );
    // Rotation: a new secret, the old one signing beside it for 24 h.
    let r = h
        .call(
            axum::http::Method::POST,
            &format!("/api.ashx/v1/webhooks/{id}/rotate-secret"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let fresh = r.json["secret"].as_str().unwrap().to_owned();
    assert!(fresh.starts_with("whsec_") && fresh != secret);
    assert_eq!(
        r.json["previousSecretExpiresUtc"],
        "2026-06-05T17:55:12.401Z"
    );
    let list = h.get("/api.ashx/v1/webhooks", &t).await;
    assert!(!list.text.contains(&fresh) && !list.text.contains(&secret));
    h.db.store
        .record_event(TENANT, EventName::CallEnded, json!({}), None, h.clock.now())
        .await
        .unwrap();
    let claimed = h
        .state
        .store
        .claim_deliveries(h.clock.now(), 1_000, 10, &mut crate::store::Room::new(10))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].secret, fresh);
    assert_eq!(claimed[0].prev_secret.as_deref(), Some(secret.as_str()));
    // After the grace period only the new secret signs.
    h.clock.advance_ms(24 * 3_600_000 + 1);
    let claimed = h
        .state
        .store
        .claim_deliveries(h.clock.now(), 1_000, 10, &mut crate::store::Room::new(10))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "the lease ran out: claimable again");
    assert_eq!(
        claimed[0].attempt, 1,
        "same attempt: no result was recorded"
    );
    assert_eq!(claimed[0].prev_secret, None);
    let t = h.token_for(ADMIN, super::ADMIN_PW).await;
    for bad in [
        json!({"graceHours": 169}),
        json!({"graceHours": -1}),
        json!({"grace": 1}),
    ] {
        let r = h
            .post(
                &format!("/api.ashx/v1/webhooks/{id}/rotate-secret"),
                &t,
                bad.clone(),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
    }
    let r = h
        .post(
            &format!("/api.ashx/v1/webhooks/{id}/rotate-secret"),
            &t,
            json!({"graceHours": 0}),
        )
        .await;
    assert_eq!(
        r.json["previousSecretExpiresUtc"],
        "2026-06-05T17:55:12.402Z"
    );
    let s =
        h.db.store
            .subscription(TENANT, &sid)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(s.prev_secret, fresh, "only the last secret is kept");
    assert_eq!(s.secret, r.json["secret"].as_str().unwrap());
}

async fn receiver_urls_pass_the_ssrf_guard(h: Harness) {
    let t = h.admin().await;
    for url in [
        "http://127.0.0.1/",
        "http://127.1:8080/",
        "http://2130706433/",
        "http://0x7f.0.0.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:c0a8:101::]/",
        "http://0.0.0.0:9000/",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/",
        "http://224.0.0.1/",
        "http://240.0.0.1/",
        "http://255.255.255.255/",
        "http://192.0.2.1/",
        "http://198.51.100.1/",
        "http://203.0.113.1/",
        "http://198.18.0.1/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
        "http://[ff02::1]/",
        "http://[2001:db8::1]/",
        "https://internal.test/hook",
    ] {
        let r = h
            .post(
                "/api.ashx/v1/webhooks",
                &t,
                json!({"url": url, "events": ["*"]}),
            )
            .await;
        assert_eq!(
            (r.status, r.json["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("url_not_allowed")),
            "{url}: {}",
            r.text
        );
    }
    for url in [
        "https://public.test/hook",
        "https://8.8.8.8/hook",
        "http://[2606:4700:4700::1111]/",
        "https://not-yet-in-dns.example/hook",
    ] {
        let r = h
            .post(
                "/api.ashx/v1/webhooks",
                &t,
                json!({"url": url, "events": ["*"]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{url}: {}", r.text);
    }
    assert_eq!(h.get("/api.ashx/v1/webhooks", &t).await.json["total"], 4);
}
