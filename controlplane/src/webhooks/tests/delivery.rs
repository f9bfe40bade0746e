//! The happy paths and their promises: signed both ways over the exact
//! bytes, the retry schedule, order within a call, a slow receiver's
//! isolation, redirects, and signing through a secret rotation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use codeb_types::EventName;
use serde_json::json;

use super::{
    Answer, Fx, QUIET, Receiver, SOON, TENANT, always, codeb_sig, on_both, standard_ok, statuses,
    verified,
};
use crate::store::{DeliveryState, event_body};

on_both!(
    signed_over_the_exact_bytes,
    retries_follow_the_schedule,
    one_call_arrives_in_order,
    a_slow_receiver_delays_no_one_else,
    redirects_are_not_followed,
    rotation_signs_with_both_secrets,
);

async fn signed_over_the_exact_bytes(mut fx: Fx) {
    let rx = Receiver::start(always(200)).await;
    let (sub, secret) = fx.subscribe(&rx.url("/codeb-webhook"), &["*"]).await;
    fx.start();
    let data = json!({
        "callId": "oac-0123456789ab",
        "text": "Grüße — 日本語, \"quoted\", back\\slash,\ttab,\nnewline,  two  spaces ",
        "emoji": "📞\u{2028}",
        "nested": {"list": [1, 2.5, null, true, -0.0, 1e21], "empty": {}},
    });
    let at = fx.clock.now();
    fx.event(EventName::CallEnded, data.clone(), Some("oac-0123456789ab"))
        .await;
    let hit = rx.wait_for(1, SOON).await.remove(0);
    // The bytes sent are the bytes recorded, UTF-8 as is.
    let expected = event_body(TENANT, EventName::CallEnded, &data, at).unwrap();
    assert_eq!(hit.body, expected.as_bytes());
    assert!(
        std::str::from_utf8(&hit.body)
            .unwrap()
            .contains("Grüße — 日本語")
    );
    let v = hit.json();
    assert_eq!(
        (v["event"].as_str(), v["tenant"].as_str(), v["ts"].as_str()),
        (
            Some("call.ended"),
            Some(TENANT),
            Some("2026-06-04T17:55:12.401Z")
        )
    );
    assert_eq!(v["data"], data);
    // Headers of the spec and of Standard Webhooks.
    assert_eq!(hit.path, "/codeb-webhook");
    assert_eq!(hit.header("content-type"), "application/json");
    assert!(hit.header("user-agent").starts_with("CodeB-Webhooks/"));
    assert_eq!(hit.header("x-codeb-event"), "call.ended");
    assert_eq!(hit.header("x-codeb-attempt"), "1");
    let id = hit.header("x-codeb-delivery-id").to_owned();
    assert!(codeb_types::DeliveryId::parse(&id).is_ok(), "{id}");
    assert_eq!(hit.header("webhook-id"), id);
    assert_eq!(hit.header("webhook-timestamp"), (at.0 / 1000).to_string());
    assert!(verified(&secret, &hit), "{:?}", hit.headers);
    // The verifier is not fooled by one changed byte or another secret.
    let mut tampered = hit.clone();
    let mut body = tampered.body.to_vec();
    body[10] ^= 1;
    tampered.body = body.into();
    assert!(!verified(&secret, &tampered));
    assert_ne!(
        hit.header("x-codeb-signature"),
        codeb_sig("whsec_other", &hit.body)
    );
    let d = fx
        .until(&sub, "success", |d| {
            d.first()
                .is_some_and(|d| d.state == DeliveryState::Succeeded)
        })
        .await;
    assert_eq!(d[0].id.as_str(), id);
    assert_eq!(d[0].attempts, 1);
    assert_eq!(d[0].log.len(), 1);
    assert_eq!(d[0].log[0].status_code, Some(200));
    assert_eq!(d[0].log[0].error, "");
    let s = fx.subscription(&sub).await;
    assert_eq!((s.failures, s.active), (0, true));
    assert!(s.last_fired_at.is_some());
    rx.stays_at(1, QUIET).await;
    fx.stop().await;
}

async fn retries_follow_the_schedule(mut fx: Fx) {
    let rx = Receiver::start(statuses(&[500, 503, 200])).await;
    let (sub, secret) = fx.subscribe(&rx.url("/h"), &["call.ended"]).await;
    fx.start();
    let t0 = fx.clock.now();
    fx.event(EventName::CallEnded, json!({"n": 1}), None).await;
    rx.wait_for(1, SOON).await;
    let d = fx.until(&sub, "attempt 1", |d| d[0].attempts == 1).await;
    assert_eq!(d[0].state, DeliveryState::Pending);
    assert_eq!(d[0].next_attempt_at, t0.plus_ms(5_000));
    assert_eq!(d[0].last_status, Some(500));
    // Not a millisecond early.
    fx.advance(4_999);
    rx.stays_at(1, QUIET).await;
    fx.advance(1);
    rx.wait_for(2, SOON).await;
    let d = fx.until(&sub, "attempt 2", |d| d[0].attempts == 2).await;
    assert_eq!(d[0].next_attempt_at, t0.plus_ms(5_000 + 30_000));
    fx.advance(29_000);
    rx.stays_at(2, QUIET).await;
    fx.advance(1_000);
    let hits = rx.wait_for(3, SOON).await;
    let d = fx
        .until(&sub, "success", |d| d[0].state == DeliveryState::Succeeded)
        .await;
    // One delivery id throughout, attempts numbered 1..3, each signed.
    let ids: Vec<&str> = hits
        .iter()
        .map(|h| h.header("x-codeb-delivery-id"))
        .collect();
    assert_eq!(ids, vec![d[0].id.as_str(); 3]);
    let attempts: Vec<&str> = hits.iter().map(|h| h.header("x-codeb-attempt")).collect();
    assert_eq!(attempts, vec!["1", "2", "3"]);
    assert!(hits.iter().all(|h| verified(&secret, h)));
    assert!(hits.windows(2).all(|w| w[0].body == w[1].body), "same body");
    assert!(
        hits.windows(2)
            .all(|w| w[0].header("x-codeb-signature") == w[1].header("x-codeb-signature")),
        "the spec's signature is the same on every retry"
    );
    let codes: Vec<Option<i64>> = d[0].log.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, vec![Some(500), Some(503), Some(200)]);
    assert_eq!(d[0].log[1].started_at, t0.plus_ms(5_000));
    let s = fx.subscription(&sub).await;
    assert_eq!(s.failures, 0, "the success reset the count");
    fx.stop().await;
}

async fn one_call_arrives_in_order(mut fx: Fx) {
    // The first call.ended of call A fails once; its transcript.saved must
    // wait for it, while call B goes ahead.
    let failed = Arc::new(AtomicBool::new(false));
    let f = failed.clone();
    let rx = Receiver::start(Arc::new(move |_, hit| {
        let body = String::from_utf8_lossy(&hit.body).into_owned();
        if body.contains("call.ended")
            && body.contains("oac-aaaaaaaaaaaa")
            && !f.swap(true, Ordering::SeqCst)
        {
            Answer::status(500)
        } else {
            Answer::status(200)
        }
    }))
    .await;
    let (sub, _) = fx.subscribe(&rx.url("/h"), &["*"]).await;
    fx.start();
    let a = Some("oac-aaaaaaaaaaaa");
    fx.event(EventName::CallEnded, json!({"callId": a}), a)
        .await;
    fx.event(EventName::TranscriptSaved, json!({"callId": a}), a)
        .await;
    fx.event(
        EventName::CallEnded,
        json!({"callId": "oac-bbbbbbbbbbbb"}),
        Some("oac-bbbbbbbbbbbb"),
    )
    .await;
    rx.wait_for(2, SOON).await;
    fx.until(&sub, "A's first attempt recorded", |d| d[0].attempts == 1)
        .await;
    rx.stays_at(2, QUIET).await;
    assert!(
        rx.hits()
            .iter()
            .all(|h| h.header("x-codeb-event") == "call.ended"),
        "transcript.saved waited"
    );
    fx.advance(5_000);
    let hits = rx.wait_for(4, SOON).await;
    let of_a: Vec<(String, &str)> = hits
        .iter()
        .filter(|h| h.json()["data"]["callId"] == "oac-aaaaaaaaaaaa")
        .map(|h| {
            (
                h.header("x-codeb-event").to_owned(),
                h.header("x-codeb-attempt"),
            )
        })
        .collect();
    assert_eq!(
        of_a,
        vec![
            ("call.ended".to_owned(), "1"),
            ("call.ended".to_owned(), "2"),
            ("transcript.saved".to_owned(), "1")
        ]
    );
    fx.until(&sub, "all delivered", |d| {
        d.len() == 3 && d.iter().all(|d| d.state == DeliveryState::Succeeded)
    })
    .await;
    fx.stop().await;
}

async fn a_slow_receiver_delays_no_one_else(mut fx: Fx) {
    // The slow receiver answers nothing until the test says so: every
    // fast delivery must get through while all of its attempts hang,
    // however slow the machine running the test is.
    let (open, gate) = tokio::sync::watch::channel(false);
    let slow = Receiver::start(Arc::new(move |_, _| {
        Answer::status(200).when_open(gate.clone())
    }))
    .await;
    let fast = Receiver::start(always(204)).await;
    let (slow_sub, _) = fx.subscribe(&slow.url("/slow"), &["*"]).await;
    let (fast_sub, _) = fx.subscribe(&fast.url("/fast"), &["*"]).await;
    // No attempt times out while the gate is shut.
    fx.cfg.timeout = SOON;
    fx.start();
    for i in 0..40 {
        fx.event(EventName::CallEnded, json!({"i": i}), None).await;
    }
    fast.wait_for(40, SOON).await;
    fx.until(&fast_sub, "all fast ones recorded", |d| {
        d.len() == 40 && d.iter().all(|d| d.state == DeliveryState::Succeeded)
    })
    .await;
    let n = slow.hits().len();
    assert!(
        n <= fx.cfg.per_subscription,
        "the slow receiver holds at most its share: {n} in flight"
    );
    assert!(
        fx.store
            .list_deliveries(TENANT, &slow_sub, Some(DeliveryState::Succeeded), 100, 0)
            .await
            .unwrap()
            .unwrap()
            .items
            .is_empty(),
        "none of the slow receiver's attempts has ended yet"
    );
    open.send(true).unwrap();
    slow.wait_for(40, SOON).await;
    fx.until(&slow_sub, "all delivered", |d| {
        d.len() == 40 && d.iter().all(|d| d.state == DeliveryState::Succeeded)
    })
    .await;
    fx.stop().await;
}

async fn redirects_are_not_followed(mut fx: Fx) {
    let target = Receiver::start(always(200)).await;
    let location = target.url("/elsewhere");
    let rx = Receiver::start(Arc::new(move |_, _| {
        Answer::status(302).with("location", location.clone())
    }))
    .await;
    let (sub, _) = fx.subscribe(&rx.url("/h"), &["*"]).await;
    fx.start();
    fx.event(EventName::CallEnded, json!({}), None).await;
    rx.wait_for(1, SOON).await;
    let d = fx.until(&sub, "attempt 1", |d| d[0].attempts == 1).await;
    assert_eq!(d[0].state, DeliveryState::Pending, "a 3xx is a failure");
    assert_eq!(d[0].last_status, Some(302));
    assert!(
        d[0].last_error.starts_with("HTTP 302"),
        "{}",
        d[0].last_error
    );
    target.stays_at(0, QUIET).await;
    fx.stop().await;
}

async fn rotation_signs_with_both_secrets(mut fx: Fx) {
    let rx = Receiver::start(always(200)).await;
    let (sub, old) = fx.subscribe(&rx.url("/h"), &["*"]).await;
    let new = crate::webhooks::sign::generate_secret();
    let until = fx.clock.now().plus_ms(3_600_000);
    assert!(
        fx.store
            .rotate_secret(TENANT, &sub, &new, until)
            .await
            .unwrap()
    );
    fx.start();
    fx.event(EventName::CallEnded, json!({}), None).await;
    let hit = rx.wait_for(1, SOON).await.remove(0);
    // Receivers that still hold the old secret verify as before; those
    // that switched early verify the -Next header; Standard Webhooks lists
    // both.
    assert_eq!(hit.header("x-codeb-signature"), codeb_sig(&old, &hit.body));
    assert_eq!(
        hit.header("x-codeb-signature-next"),
        codeb_sig(&new, &hit.body)
    );
    assert!(standard_ok(&old, &hit) && standard_ok(&new, &hit));
    assert_eq!(hit.header("webhook-signature").split(' ').count(), 2);
    fx.advance(3_600_000);
    fx.event(EventName::CallEnded, json!({}), None).await;
    let hit = rx.wait_for(2, SOON).await.remove(1);
    assert!(verified(&new, &hit));
    assert!(!standard_ok(&old, &hit));
    assert_eq!(hit.header("x-codeb-signature-next"), "");
    assert_eq!(
        hit.header("webhook-timestamp"),
        ((until.0) / 1000).to_string()
    );
    fx.stop().await;
}
