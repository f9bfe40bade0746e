//! Restarts and replicas: a delivery keeps its id through a restart
//! between attempts, a crash during one and a shutdown during one; two
//! sets of workers on one database deliver each delivery once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use codeb_types::EventName;
use serde_json::json;

use super::{Answer, Fx, QUIET, Receiver, SOON, on_both, statuses, verified};
use crate::store::DeliveryState;

on_both!(
    a_restart_between_attempts_keeps_the_id,
    a_crash_during_an_attempt_resends_after_the_lease,
    a_shutdown_during_an_attempt_hands_it_back,
    two_replicas_deliver_each_delivery_once,
);

async fn a_restart_between_attempts_keeps_the_id(mut fx: Fx) {
    let rx = Receiver::start(statuses(&[500, 500, 200])).await;
    let (sub, secret) = fx.subscribe(&rx.url("/h"), &["*"]).await;
    fx.start();
    fx.event(EventName::CallEnded, json!({}), None).await;
    fx.until(&sub, "attempt 1", |d| d[0].attempts == 1).await;
    fx.stop().await;
    // A new process: its own connection, nothing in memory.
    let restarted = fx.reopen().await;
    fx.start_on(restarted);
    fx.advance(5_000);
    rx.wait_for(2, SOON).await;
    fx.until(&sub, "attempt 2", |d| d[0].attempts == 2).await;
    fx.stop().await;
    let again = fx.reopen().await;
    fx.start_on(again);
    fx.advance(30_000);
    let hits = rx.wait_for(3, SOON).await;
    let d = fx
        .until(&sub, "success", |d| d[0].state == DeliveryState::Succeeded)
        .await;
    let seen: Vec<(&str, &str)> = hits
        .iter()
        .map(|h| (h.header("x-codeb-delivery-id"), h.header("x-codeb-attempt")))
        .collect();
    let id = d[0].id.as_str();
    assert_eq!(seen, vec![(id, "1"), (id, "2"), (id, "3")]);
    assert!(hits.iter().all(|h| verified(&secret, h)));
    rx.stays_at(3, QUIET).await;
    fx.stop().await;
}

async fn a_crash_during_an_attempt_resends_after_the_lease(mut fx: Fx) {
    let rx = Receiver::start(Arc::new(|i, _| {
        if i == 0 {
            Answer::status(200).after(Duration::from_secs(5))
        } else {
            Answer::status(200)
        }
    }))
    .await;
    let (sub, _) = fx.subscribe(&rx.url("/h"), &["*"]).await;
    fx.start();
    fx.event(EventName::CallEnded, json!({}), None).await;
    rx.wait_for(1, SOON).await;
    // Dies with the request in flight: no result, the lease stays.
    fx.kill().await;
    let restarted = fx.reopen().await;
    fx.start_on(restarted);
    rx.stays_at(1, QUIET).await;
    fx.advance(i64::try_from(fx.cfg.lease.as_millis()).unwrap());
    let hits = rx.wait_for(2, SOON).await;
    let d = fx
        .until(&sub, "success", |d| d[0].state == DeliveryState::Succeeded)
        .await;
    // The same delivery, the same attempt number: the first one's result
    // was never known. A receiver de-duplicating on the id sees one event.
    for h in &hits {
        assert_eq!(h.header("x-codeb-delivery-id"), d[0].id.as_str());
        assert_eq!(h.header("x-codeb-attempt"), "1");
    }
    assert_eq!(d[0].attempts, 1);
    fx.stop().await;
}

async fn a_shutdown_during_an_attempt_hands_it_back(mut fx: Fx) {
    fx.cfg.shutdown_grace = Duration::from_millis(200);
    let rx = Receiver::start(Arc::new(|i, _| {
        if i == 0 {
            Answer::status(200).after(Duration::from_secs(5))
        } else {
            Answer::status(200)
        }
    }))
    .await;
    let (sub, _) = fx.subscribe(&rx.url("/h"), &["*"]).await;
    fx.start();
    fx.event(EventName::CallEnded, json!({}), None).await;
    rx.wait_for(1, SOON).await;
    fx.stop().await;
    // No clock movement needed: the lease was handed back.
    let restarted = fx.reopen().await;
    fx.start_on(restarted);
    let hits = rx.wait_for(2, SOON).await;
    let d = fx
        .until(&sub, "success", |d| d[0].state == DeliveryState::Succeeded)
        .await;
    assert_eq!(
        hits[1].header("x-codeb-delivery-id"),
        hits[0].header("x-codeb-delivery-id")
    );
    assert_eq!(d[0].attempts, 1);
    fx.stop().await;
}

async fn two_replicas_deliver_each_delivery_once(mut fx: Fx) {
    let rx = Receiver::start(Arc::new(|_, _| {
        Answer::status(200).after(Duration::from_millis(2))
    }))
    .await;
    let mut subs = Vec::new();
    for i in 0..8 {
        subs.push(fx.subscribe(&rx.url(&format!("/r{i}")), &["*"]).await.0);
    }
    let other = fx.reopen().await;
    fx.start();
    fx.start_on(other.clone());
    for n in 0..25 {
        // Events come in through both processes.
        let store = if n % 2 == 0 { &fx.store } else { &other };
        store
            .record_event(
                super::TENANT,
                EventName::CallEnded,
                json!({"n": n}),
                Some(&format!("oac-{n:012x}")),
                fx.clock.now(),
            )
            .await
            .unwrap();
    }
    let hits = rx.wait_for(200, SOON).await;
    rx.stays_at(200, QUIET).await;
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for h in &hits {
        *per_id
            .entry(h.header("x-codeb-delivery-id").to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_id.len(), 200);
    assert!(
        per_id.values().all(|n| *n == 1),
        "a delivery went out twice"
    );
    for sub in &subs {
        fx.until(sub, "all recorded", |d| {
            d.len() == 25
                && d.iter()
                    .all(|d| d.state == DeliveryState::Succeeded && d.attempts == 1)
        })
        .await;
    }
    fx.stop().await;
}
