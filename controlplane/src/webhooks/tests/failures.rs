//! Receivers that fail: down, slow past the timeout, asking for time with
//! `Retry-After`, gone (410), and failing long enough to be paused.

use std::sync::Arc;
use std::time::Duration;

use codeb_types::{EventName, UtcMillis};
use serde_json::json;

use super::{Answer, Fx, QUIET, Receiver, SOON, TENANT, closed_port, on_both, statuses};
use crate::store::DeliveryState;

on_both!(
    receiver_down_gives_up_after_four_attempts,
    a_timeout_is_a_failed_attempt,
    retry_after_is_honoured,
    gone_disables_and_holds_later_events,
    twenty_failures_pause_the_subscription,
    a_resumed_dead_receiver_pauses_again_at_twenty,
    a_receiver_down_for_a_moment_is_probed_not_paused,
    a_receiver_refusing_some_events_is_not_slowed,
    a_down_receivers_retry_after_spaces_the_probes,
    the_purge_expires_the_undelivered_and_keeps_their_log,
);

async fn receiver_down_gives_up_after_four_attempts(mut fx: Fx) {
    let url = format!("http://127.0.0.1:{}/h", closed_port());
    let (sub, _) = fx.subscribe(&url, &["*"]).await;
    fx.start();
    fx.event(EventName::CallEnded, json!({}), None).await;
    for (n, wait) in [(1, 5_000), (2, 30_000), (3, 120_000)] {
        fx.until(&sub, "an attempt", |d| d[0].attempts == n).await;
        fx.advance(wait);
    }
    let d = fx
        .until(&sub, "giving up", |d| d[0].state == DeliveryState::Failed)
        .await;
    assert_eq!(d[0].attempts, 4);
    assert!(d[0].log.iter().all(|a| a.status_code.is_none()));
    assert!(
        d[0].log[0].error.starts_with("connection failed"),
        "{}",
        d[0].log[0].error
    );
    let s = fx.subscription(&sub).await;
    assert_eq!((s.failures, s.active), (4, true));
    fx.stop().await;
}

async fn a_timeout_is_a_failed_attempt(mut fx: Fx) {
    fx.cfg.timeout = Duration::from_millis(300);
    let rx = Receiver::start(Arc::new(|i, _| {
        if i == 0 {
            Answer::status(200).after(Duration::from_millis(1500))
        } else {
            Answer::status(200)
        }
    }))
    .await;
    let (sub, _) = fx.subscribe(&rx.url("/h"), &["*"]).await;
    fx.start();
    fx.event(EventName::CallEnded, json!({}), None).await;
    let d = fx.until(&sub, "attempt 1", |d| d[0].attempts == 1).await;
    assert_eq!(d[0].last_error, "timed out after 300 ms");
    assert!(d[0].log[0].latency_ms >= 300);
    fx.advance(5_000);
    let hits = rx.wait_for(2, SOON).await;
    fx.until(&sub, "success", |d| d[0].state == DeliveryState::Succeeded)
        .await;
    assert_eq!(
        hits[0].header("x-codeb-delivery-id"),
        hits[1].header("x-codeb-delivery-id")
    );
    assert_eq!(hits[1].header("x-codeb-attempt"), "2");
    fx.stop().await;
}

/// IMF-fixdate, as an HTTP server writes `Retry-After`.
fn http_date(t: UtcMillis) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let c = t.civil();
    let weekday = DAYS[usize::try_from(t.0.div_euclid(86_400_000).rem_euclid(7)).unwrap()];
    format!(
        "{weekday}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        c.day,
        MONTHS[usize::try_from(c.month - 1).unwrap()],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

async fn retry_after_is_honoured(mut fx: Fx) {
    let clock = fx.clock.clone();
    let rx = Receiver::start(Arc::new(move |i, _| match i {
        0 => Answer::status(429).with("retry-after", "60"),
        1 => Answer::status(503).with("retry-after", http_date(clock.now().plus_ms(200_000))),
        _ => Answer::status(200),
    }))
    .await;
    let (sub, _) = fx.subscribe(&rx.url("/h"), &["*"]).await;
    fx.start();
    let t0 = fx.clock.now();
    fx.event(EventName::CallEnded, json!({}), None).await;
    let d = fx.until(&sub, "attempt 1", |d| d[0].attempts == 1).await;
    assert_eq!(d[0].next_attempt_at, t0.plus_ms(60_000), "not the 5 s step");
    fx.advance(5_000);
    rx.stays_at(1, QUIET).await;
    fx.advance(55_000);
    rx.wait_for(2, SOON).await;
    let d = fx.until(&sub, "attempt 2", |d| d[0].attempts == 2).await;
    // An HTTP-date has whole seconds.
    let date = t0.plus_ms(60_000 + 200_000).0 / 1000 * 1000;
    assert_eq!(d[0].next_attempt_at, UtcMillis(date));
    fx.advance(30_000);
    rx.stays_at(2, QUIET).await;
    fx.advance(170_000);
    rx.wait_for(3, SOON).await;
    fx.until(&sub, "success", |d| d[0].state == DeliveryState::Succeeded)
        .await;
    fx.stop().await;
}

async fn gone_disables_and_holds_later_events(mut fx: Fx) {
    let rx = Receiver::start(statuses(&[410, 200])).await;
    let (sub, _) = fx.subscribe(&rx.url("/h"), &["*"]).await;
    fx.start();
    fx.event(EventName::CallEnded, json!({"n": 1}), None).await;
    let d = fx
        .until(&sub, "giving up", |d| d[0].state == DeliveryState::Failed)
        .await;
    assert_eq!(d[0].attempts, 1, "no retry after 410");
    let s = fx.subscription(&sub).await;
    assert!(!s.active);
    assert!(s.paused_reason.contains("410 Gone"), "{}", s.paused_reason);
    fx.event(EventName::CallEnded, json!({"n": 2}), None).await;
    fx.advance(60_000);
    rx.stays_at(1, QUIET).await;
    assert!(
        fx.store
            .resume_subscription(TENANT, &sub)
            .await
            .unwrap()
            .is_some()
    );
    let hits = rx.wait_for(2, SOON).await;
    assert_eq!(hits[1].json()["data"]["n"], 2, "held, then delivered");
    fx.stop().await;
}

async fn twenty_failures_pause_the_subscription(mut fx: Fx) {
    // Five deliveries, four attempts each: the twentieth failure pauses.
    // 503: the receiver is down (a refusal such as 500 is an answer).
    let rx = Receiver::start(Arc::new(|i, _| {
        Answer::status(if i < 20 { 503 } else { 200 })
    }))
    .await;
    let (sub, _) = fx.subscribe(&rx.url("/h"), &["*"]).await;
    // All five are due when the workers start: the first round goes at once.
    for n in 0..5 {
        fx.event(
            EventName::CallEnded,
            json!({"n": n}),
            Some(&format!("oac-00000000000{n}")),
        )
        .await;
    }
    fx.start();
    // The first round goes at once; then the receiver looks down (two
    // failures in a row), and it is probed once per 5 s: each later
    // attempt waits for its own retry time and for that.
    fx.until(&sub, "the first round", |d| {
        d.len() == 5 && d.iter().all(|d| d.attempts == 1)
    })
    .await;
    for _ in 0..200 {
        if !fx.subscription(&sub).await.active {
            break;
        }
        fx.advance(5_000);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = fx
        .until(&sub, "the last attempt", |d| {
            d.iter().all(|d| d.state == DeliveryState::Failed)
        })
        .await;
    let mut starts: Vec<UtcMillis> = d
        .iter()
        .flat_map(|d| d.log.iter().map(|a| a.started_at))
        .collect();
    starts.sort_unstable();
    assert_eq!(starts.len(), 20);
    assert!(starts[..5].iter().all(|t| *t == starts[0]), "{starts:?}");
    assert!(
        starts[4..].windows(2).all(|w| w[1].0 - w[0].0 >= 5_000),
        "one probe per 5 s once failing: {starts:?}"
    );
    let s = fx.subscription(&sub).await;
    assert_eq!((s.active, s.failures), (false, 20));
    assert!(
        s.paused_reason
            .contains("after 20 consecutive failed attempts; last: HTTP 503"),
        "{}",
        s.paused_reason
    );
    assert!(s.paused_at.is_some());
    // Paused: events are kept, nothing is sent.
    fx.event(EventName::CallEnded, json!({"n": "held"}), None)
        .await;
    fx.advance(600_000);
    rx.stays_at(20, QUIET).await;
    fx.store.resume_subscription(TENANT, &sub).await.unwrap();
    let hits = rx.wait_for(21, SOON).await;
    assert_eq!(hits[20].json()["data"]["n"], "held");
    fx.until(&sub, "the held one delivered", |d| {
        d.last()
            .is_some_and(|d| d.state == DeliveryState::Succeeded)
    })
    .await;
    assert_eq!(fx.subscription(&sub).await.failures, 0);
    fx.stop().await;
}

/// A subscription resumed while its receiver is still down is probed one
/// delivery at a time (its last attempt failed), so it pauses again at its
/// 20th consecutive failure, not after a whole batch of attempts past it
/// (up to `per_subscription` at once used to run: 34 failures were seen).
/// Its next attempt waits until the last failure is written, so none goes
/// out between the 20th failure and the pause it causes.
async fn a_resumed_dead_receiver_pauses_again_at_twenty(mut fx: Fx) {
    let rx = Receiver::start(Arc::new(|i, _| {
        Answer::status(if i == 0 { 410 } else { 500 })
    }))
    .await;
    let (sub, _) = fx.subscribe(&rx.url("/h"), &["*"]).await;
    fx.start();
    fx.event(EventName::CallEnded, json!({"n": "first"}), None)
        .await;
    fx.until(&sub, "disabled by 410", |d| {
        d[0].state == DeliveryState::Failed
    })
    .await;
    // A backlog of unrelated events, all claimable at once when resumed.
    for n in 0..60 {
        fx.event(EventName::CallEnded, json!({"n": n}), None).await;
    }
    assert!(!fx.subscription(&sub).await.active);
    fx.store.resume_subscription(TENANT, &sub).await.unwrap();
    fx.store.wake_deliveries();
    // One delivery at a time, and once the receiver looks down one per
    // 5 s of the (manual) clock.
    let deadline = tokio::time::Instant::now() + SOON;
    while fx.subscription(&sub).await.active {
        assert!(tokio::time::Instant::now() < deadline, "never paused again");
        assert!(
            rx.hits().len() <= 21,
            "past 20 failures: {}",
            rx.hits().len()
        );
        fx.advance(5_000);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = fx.subscription(&sub).await;
    assert_eq!(s.failures, 20);
    // Every hit after the first was one of those failures.
    fx.advance(600_000);
    rx.stays_at(1 + usize::try_from(s.failures).unwrap(), QUIET)
        .await;
    fx.stop().await;
}

/// A receiver that is up and refuses some events (a 400 for a type it
/// does not handle) is not treated as down: its other events go on at
/// once, and only the refused ones wait for their retries.
async fn a_receiver_refusing_some_events_is_not_slowed(mut fx: Fx) {
    let rx = Receiver::start(Arc::new(|_, hit| {
        // The first five in a row are refused.
        let refused = hit.json()["data"]["n"].as_i64().unwrap_or(0) < 5;
        Answer::status(if refused { 400 } else { 200 })
    }))
    .await;
    let (sub, _) = fx.subscribe(&rx.url("/h"), &["*"]).await;
    fx.cfg.per_subscription = 1;
    fx.start();
    for n in 0..10 {
        fx.event(EventName::CallEnded, json!({"n": n}), None).await;
    }
    // Every first attempt while the (manual) clock stands still.
    rx.wait_for(10, SOON).await;
    fx.until(&sub, "five delivered", |d| {
        d.iter()
            .filter(|d| d.state == DeliveryState::Succeeded)
            .count()
            == 5
    })
    .await;
    assert!(fx.subscription(&sub).await.active);
    fx.stop().await;
}

/// A receiver down that asks for time (503 with Retry-After) is probed
/// when it asked, not every 5 s (each probe would count to the 20).
async fn a_down_receivers_retry_after_spaces_the_probes(mut fx: Fx) {
    let rx = Receiver::start(Arc::new(|i, _| {
        if i < 2 {
            Answer::status(503).with("retry-after", "30")
        } else {
            Answer::status(200)
        }
    }))
    .await;
    let (sub, _) = fx.subscribe(&rx.url("/h"), &["*"]).await;
    fx.cfg.per_subscription = 1;
    fx.start();
    for n in 0..3 {
        fx.event(EventName::CallEnded, json!({"n": n}), None).await;
    }
    rx.wait_for(2, SOON).await;
    // Their results written (each retry's time read from the clock) before
    // it moves.
    fx.until(&sub, "two failures recorded", |d| {
        d.iter()
            .filter(|d| d.attempts == 1 && d.last_status == Some(503))
            .count()
            == 2
    })
    .await;
    fx.advance(29_999);
    rx.stays_at(2, QUIET).await;
    fx.advance(1);
    rx.wait_for(3, SOON).await;
    fx.until(&sub, "all delivered", |d| {
        d.len() == 3 && d.iter().all(|d| d.state == DeliveryState::Succeeded)
    })
    .await;
    fx.stop().await;
}

/// A receiver down for a moment (a restart) while events keep coming is
/// not paused: after two failures in a row it is probed once per retry
/// step (5 s), not run through its 20 failures in the milliseconds its
/// refused requests take; once it is back, the next probe delivers and
/// everything held goes.
async fn a_receiver_down_for_a_moment_is_probed_not_paused(mut fx: Fx) {
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let d = down.clone();
    let rx = Receiver::start(Arc::new(move |_, _| {
        Answer::status(if d.load(std::sync::atomic::Ordering::SeqCst) {
            503
        } else {
            200
        })
    }))
    .await;
    let (sub, _) = fx.subscribe(&rx.url("/h"), &["*"]).await;
    // One attempt at a time, as for a subscription already failing.
    fx.cfg.per_subscription = 1;
    fx.start();
    for n in 0..40 {
        fx.event(EventName::CallEnded, json!({"n": n}), None).await;
    }
    rx.wait_for(2, SOON).await;
    // Nothing more while the (manual) clock stands still: without the
    // probe interval, the other 38 events' first attempts would fail at
    // once and pause the subscription at 20.
    rx.stays_at(2, QUIET).await;
    fx.until(&sub, "two failures recorded", |d| {
        d.iter().filter(|d| d.attempts == 1).count() == 2
    })
    .await;
    assert!(fx.subscription(&sub).await.active);
    fx.advance(4_999);
    rx.stays_at(2, QUIET).await;
    down.store(false, std::sync::atomic::Ordering::SeqCst);
    fx.advance(1);
    fx.until(&sub, "everything delivered", |d| {
        d.len() == 40 && d.iter().all(|d| d.state == DeliveryState::Succeeded)
    })
    .await;
    let s = fx.subscription(&sub).await;
    assert_eq!((s.active, s.failures), (true, 0));
    assert_eq!(rx.hits().len(), 42, "two failures, then each once");
    fx.stop().await;
}

async fn the_purge_expires_the_undelivered_and_keeps_their_log(mut fx: Fx) {
    let rx = Receiver::start(Arc::new(|_, hit| {
        Answer::status(if hit.path == "/bad" { 500 } else { 200 })
    }))
    .await;
    let (bad, _) = fx.subscribe(&rx.url("/bad"), &["*"]).await;
    let (good, _) = fx.subscribe(&rx.url("/good"), &["*"]).await;
    let t0 = fx.clock.now();
    fx.start();
    fx.event(EventName::CallEnded, json!({}), None).await;
    fx.until(&bad, "attempt 1", |d| d[0].attempts == 1).await;
    fx.until(&good, "delivered", |d| {
        d[0].state == DeliveryState::Succeeded
    })
    .await;
    fx.stop().await;
    fx.advance(10_000);
    let now = fx.clock.now();
    // Retention ends just after the event: the retry still waiting is
    // expired, the delivered one deleted.
    let purged = fx.store.purge_deliveries(t0.plus_ms(1), now).await.unwrap();
    assert_eq!(purged, (1, 1));
    assert!(fx.deliveries(&good).await.is_empty());
    let d = fx.deliveries(&bad).await;
    assert_eq!(d[0].state, DeliveryState::Failed);
    assert!(
        d[0].last_error.starts_with("expired"),
        "{}",
        d[0].last_error
    );
    assert_eq!(d[0].finished_at, Some(now));
    // The attempt that failed is still in the log, as it was.
    assert_eq!(d[0].log.len(), 1);
    assert_eq!(
        (d[0].log[0].attempt, d[0].log[0].status_code),
        (1, Some(500))
    );
    assert_eq!(d[0].log[0].started_at, t0);
    assert!(
        d[0].log[0].error.starts_with("HTTP 500"),
        "{}",
        d[0].log[0].error
    );
    // Later the expired one goes too, and with it the event.
    let purged = fx
        .store
        .purge_deliveries(now.plus_ms(1), now.plus_ms(2))
        .await
        .unwrap();
    assert_eq!(purged, (0, 1));
    assert!(fx.deliveries(&bad).await.is_empty());
}
