//! Held deliveries: a paused subscription's backlog is `held` (the claim
//! never sees it), an attempt in flight at the pause still records its
//! result (and a retry it asks for is held), and resuming sends it all,
//! each call's deliveries in the order they were recorded.
//!
//! The first test runs real workers and a receiver; the others drive the
//! store step by step as a worker would, so the interleavings are exact.

use codeb_types::{EventName, SubscriptionId, UtcMillis};
use serde_json::json;

use super::{Fx, QUIET, Receiver, SOON, TENANT, always, on_both, statuses, verified};
use crate::store::{
    AttemptOutcome, ClaimedDelivery, DeliveryRecord, DeliveryState, NextStep, ReplayOutcome,
};

on_both!(
    a_paused_backlog_is_held_then_sent_in_order,
    a_retry_landing_after_the_pause_is_held,
    the_claim_holds_a_pending_delivery_of_a_paused_subscription,
    an_event_recorded_during_a_resume_goes_out,
    resume_is_per_tenant,
);

const CALL_A: &str = "oac-aaaaaaaaaaaa";
const CALL_B: &str = "oac-bbbbbbbbbbbb";

/// Claims everything due at `now`, as one worker would.
async fn claim(fx: &Fx, now: UtcMillis) -> Vec<ClaimedDelivery> {
    fx.store
        .claim_deliveries(now, 60_000, 100, &mut crate::store::Room::new(100))
        .await
        .unwrap()
}

/// Records one attempt's result; returns how many subscriptions it paused.
async fn record(
    fx: &Fx,
    c: &ClaimedDelivery,
    next: NextStep,
    status: u16,
    now: UtcMillis,
) -> usize {
    let outcome = AttemptOutcome {
        seq: c.seq,
        lease_token: c.lease_token,
        webhook_id: c.webhook_id.clone(),
        attempt: c.attempt,
        started_at: now,
        status: Some(status),
        latency_ms: 3,
        error: if next == NextStep::Succeeded {
            String::new()
        } else {
            format!("HTTP {status}")
        },
        next,
        gone: status == 410,
    };
    fx.store
        .record_attempts(&[outcome], now, 20)
        .await
        .unwrap()
        .len()
}

/// The state of each of the subscription's deliveries, oldest first.
async fn states(fx: &Fx, sub: &SubscriptionId) -> Vec<DeliveryState> {
    fx.deliveries(sub).await.iter().map(|d| d.state).collect()
}

async fn with_state(fx: &Fx, sub: &SubscriptionId, state: DeliveryState) -> Vec<DeliveryRecord> {
    fx.store
        .list_deliveries(TENANT, sub, Some(state), 100, 0)
        .await
        .unwrap()
        .unwrap()
        .items
}

/// The `n` of each claimed delivery's event, in claim order.
fn ns(claimed: &[ClaimedDelivery]) -> Vec<serde_json::Value> {
    claimed
        .iter()
        .map(|c| serde_json::from_str::<serde_json::Value>(&c.body).unwrap()["data"]["n"].clone())
        .collect()
}

async fn a_paused_backlog_is_held_then_sent_in_order(mut fx: Fx) {
    // The first delivery is answered 410: the subscription is disabled.
    let rx = Receiver::start(statuses(&[410, 200])).await;
    let other = Receiver::start(always(200)).await;
    let (sub, secret) = fx.subscribe(&rx.url("/h"), &["*"]).await;
    let (sub2, _) = fx.subscribe(&other.url("/o"), &["*"]).await;
    fx.start();
    fx.event(EventName::CallEnded, json!({"n": "first"}), None)
        .await;
    fx.until(&sub, "disabled", |d| d[0].state == DeliveryState::Failed)
        .await;
    assert!(!fx.subscription(&sub).await.active);
    // A backlog of two calls, interleaved.
    for n in 0..6 {
        let call = if n % 2 == 0 { CALL_A } else { CALL_B };
        fx.event(
            EventName::CallEnded,
            json!({"n": n, "callId": call}),
            Some(call),
        )
        .await;
    }
    // The other subscription is not held up; this one gets nothing.
    other.wait_for(7, SOON).await;
    fx.until(&sub2, "the other one delivered", |d| {
        d.len() == 7 && d.iter().all(|d| d.state == DeliveryState::Succeeded)
    })
    .await;
    fx.advance(600_000);
    rx.stays_at(1, QUIET).await;
    assert_eq!(with_state(&fx, &sub, DeliveryState::Held).await.len(), 6);
    assert!(
        with_state(&fx, &sub, DeliveryState::Pending)
            .await
            .is_empty()
    );
    assert_eq!(fx.store.delivery_backlog().await.unwrap(), 6);
    fx.stop().await;
    // Not even a day later does a claim find any of it.
    assert!(
        claim(&fx, fx.clock.now().plus_ms(86_400_000))
            .await
            .is_empty()
    );
    assert_eq!(
        fx.store.next_delivery_due(fx.clock.now()).await.unwrap(),
        None
    );
    fx.store
        .resume_subscription(TENANT, &sub)
        .await
        .unwrap()
        .unwrap();
    assert!(with_state(&fx, &sub, DeliveryState::Held).await.is_empty());
    fx.start();
    let hits = rx.wait_for(7, SOON).await;
    for (call, want) in [(CALL_A, [0, 2, 4]), (CALL_B, [1, 3, 5])] {
        let got: Vec<serde_json::Value> = hits[1..]
            .iter()
            .filter(|h| h.json()["data"]["callId"] == call)
            .map(|h| h.json()["data"]["n"].clone())
            .collect();
        assert_eq!(got, want.map(|n| json!(n)), "order of {call}");
    }
    assert!(hits.iter().all(|h| verified(&secret, h)));
    fx.until(&sub, "all delivered", |d| {
        d.iter()
            .filter(|d| d.state == DeliveryState::Succeeded)
            .count()
            == 6
    })
    .await;
    rx.stays_at(7, QUIET).await;
    assert_eq!(fx.store.delivery_backlog().await.unwrap(), 0);
    fx.stop().await;
}

async fn a_retry_landing_after_the_pause_is_held(fx: Fx) {
    use DeliveryState::{Failed, Held, Pending, Succeeded};
    let (sub, _) = fx.subscribe("http://hooks.test/h", &["*"]).await;
    let t0 = fx.clock.now();
    fx.event(EventName::CallEnded, json!({"n": 1}), Some(CALL_A))
        .await;
    fx.event(EventName::TranscriptSaved, json!({"n": 2}), Some(CALL_A))
        .await;
    fx.event(EventName::CallEnded, json!({"n": 3}), None).await;
    // 1 and 3 go out; 2 waits behind 1 (same call).
    let c = claim(&fx, t0).await;
    assert_eq!(ns(&c), [json!(1), json!(3)]);
    // 3's receiver answers 410: paused while 1 is still being attempted.
    assert_eq!(record(&fx, &c[1], NextStep::Failed, 410, t0).await, 1);
    assert!(!fx.subscription(&sub).await.active);
    assert_eq!(states(&fx, &sub).await, [Pending, Held, Failed]);
    // 1's result lands after the pause and asks for a retry: held.
    let t1 = t0.plus_ms(800);
    let retry_at = t1.plus_ms(5_000);
    record(&fx, &c[0], NextStep::RetryAt(retry_at), 500, t1).await;
    let d = fx.deliveries(&sub).await;
    assert_eq!(states(&fx, &sub).await, [Held, Held, Failed]);
    assert_eq!((d[0].attempts, d[0].last_status), (1, Some(500)));
    // A replay while paused is queued, and held with the rest.
    let ReplayOutcome::Queued(replay) = fx
        .store
        .replay_delivery(TENANT, &d[2].id, t1)
        .await
        .unwrap()
    else {
        panic!("replay not queued");
    };
    // So is a held delivery not replayable: it has not finished.
    assert_eq!(
        fx.store
            .replay_delivery(TENANT, &d[1].id, t1)
            .await
            .unwrap(),
        ReplayOutcome::StillPending
    );
    assert_eq!(states(&fx, &sub).await, [Held, Held, Failed, Held]);
    assert!(claim(&fx, t1.plus_ms(86_400_000)).await.is_empty());
    // Resumed: the retry (at its time) and the replay; 2 only after 1.
    fx.store
        .resume_subscription(TENANT, &sub)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(states(&fx, &sub).await, [Pending, Pending, Failed, Pending]);
    let c = claim(&fx, t1).await;
    assert_eq!(c.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), [replay]);
    record(&fx, &c[0], NextStep::Succeeded, 200, t1).await;
    assert!(claim(&fx, retry_at.plus_ms(-1)).await.is_empty());
    let c = claim(&fx, retry_at).await;
    assert_eq!((ns(&c), c[0].attempt), (vec![json!(1)], 2));
    assert!(claim(&fx, retry_at).await.is_empty(), "2 overtook 1");
    record(&fx, &c[0], NextStep::Succeeded, 200, retry_at).await;
    let c = claim(&fx, retry_at).await;
    assert_eq!((ns(&c), c[0].attempt), (vec![json!(2)], 1));
    record(&fx, &c[0], NextStep::Succeeded, 200, retry_at).await;
    assert_eq!(
        states(&fx, &sub).await,
        [Succeeded, Succeeded, Failed, Succeeded]
    );
}

/// Stands for an event recorded as a pause commits (PostgreSQL, two
/// transactions): its delivery was written pending for a paused
/// subscription.
async fn slip_past_the_pause(fx: &Fx, sub: &SubscriptionId) {
    crate::store::on_pool!(fx.store, |pool| {
        sqlx::query("UPDATE webhook_deliveries SET state = 'pending' WHERE webhook_id = $1 AND state = 'held'")
            .bind(sub.as_str())
            .execute(pool)
            .await
            .unwrap();
    });
}

async fn the_claim_holds_a_pending_delivery_of_a_paused_subscription(fx: Fx) {
    let (sub, _) = fx.subscribe("http://hooks.test/h", &["*"]).await;
    let (sub2, _) = fx
        .subscribe("http://hooks.test/other", &["call.ended"])
        .await;
    let now = fx.clock.now();
    fx.event(EventName::CallEnded, json!({"n": 1}), None).await;
    let c = claim(&fx, now).await;
    let mine = c.iter().find(|c| c.webhook_id == sub).unwrap();
    assert_eq!(record(&fx, mine, NextStep::Failed, 410, now).await, 1);
    let theirs = c.iter().find(|c| c.webhook_id == sub2).unwrap();
    record(&fx, theirs, NextStep::Succeeded, 200, now).await;
    fx.event(EventName::TranscriptSaved, json!({"n": 2}), Some(CALL_A))
        .await;
    assert_eq!(
        states(&fx, &sub).await,
        [DeliveryState::Failed, DeliveryState::Held]
    );
    slip_past_the_pause(&fx, &sub).await;
    assert!(claim(&fx, now).await.is_empty(), "sent while paused");
    assert_eq!(
        states(&fx, &sub).await,
        [DeliveryState::Failed, DeliveryState::Held]
    );
    // Still the one the resume sends.
    fx.store
        .resume_subscription(TENANT, &sub)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ns(&claim(&fx, now).await), [json!(2)]);
}

async fn an_event_recorded_during_a_resume_goes_out(fx: Fx) {
    let (sub, _) = fx.subscribe("http://hooks.test/h", &["*"]).await;
    let now = fx.clock.now();
    fx.event(EventName::CallEnded, json!({"n": 1}), None).await;
    let c = claim(&fx, now).await;
    record(&fx, &c[0], NextStep::Failed, 410, now).await;
    // The event's transaction sees the subscription paused and writes its
    // delivery held; a resume starts before it commits.
    let mut tx = fx.store.begin().await.unwrap();
    tx.record_event(TENANT, EventName::CallEnded, json!({"n": 2}), None, now)
        .await
        .unwrap();
    let resume = {
        let (store, sub) = (fx.store.clone(), sub.clone());
        tokio::spawn(async move { store.resume_subscription(TENANT, &sub).await })
    };
    // Long enough for the resume to reach its statements (and, were it
    // not made to wait for the event, to finish before the commit).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    tx.commit().await.unwrap();
    resume.await.unwrap().unwrap().unwrap();
    assert_eq!(
        states(&fx, &sub).await,
        [DeliveryState::Failed, DeliveryState::Pending],
        "held for a subscription that is active"
    );
    assert_eq!(ns(&claim(&fx, now).await), [json!(2)]);
}

async fn resume_is_per_tenant(fx: Fx) {
    let (sub, _) = fx.subscribe("http://hooks.test/h", &["*"]).await;
    let now = fx.clock.now();
    fx.event(EventName::CallEnded, json!({"n": 1}), None).await;
    let c = claim(&fx, now).await;
    record(&fx, &c[0], NextStep::Failed, 410, now).await;
    fx.event(EventName::CallEnded, json!({"n": 2}), None).await;
    assert!(
        fx.store
            .resume_subscription("other.example.test", &sub)
            .await
            .unwrap()
            .is_none()
    );
    assert!(!fx.subscription(&sub).await.active);
    assert_eq!(
        states(&fx, &sub).await,
        [DeliveryState::Failed, DeliveryState::Held]
    );
    assert!(claim(&fx, now).await.is_empty());
}
