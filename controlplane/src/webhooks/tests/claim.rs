//! The claim, driven step by step as a worker would: the per-subscription
//! cap holds inside one claim and across a worker's attempts in flight, a
//! subscription behind another's backlog is served on the next claim (in
//! its call's order), and two claimers never get the same row.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use codeb_types::{EventName, SubscriptionId, UtcMillis};
use serde_json::json;

use super::{Fx, on_both};
use crate::store::{AttemptOutcome, ClaimedDelivery, NextStep, Store};

on_both!(
    the_cap_holds_per_subscription,
    a_backlog_does_not_starve_another_subscription,
    two_claimers_never_get_the_same_row,
);

const CAP: usize = 16;

async fn claim_on(
    store: &Store,
    now: UtcMillis,
    limit: i64,
    busy: &[(&SubscriptionId, usize)],
) -> Vec<ClaimedDelivery> {
    let in_flight: HashMap<SubscriptionId, usize> =
        busy.iter().map(|(s, n)| ((*s).clone(), *n)).collect();
    store
        .claim_deliveries(now, 60_000, limit, &in_flight, CAP)
        .await
        .unwrap()
}

/// (subscription, `n` of the event) of each claimed delivery, in order.
fn who(c: &[ClaimedDelivery], a: &SubscriptionId) -> Vec<(char, i64)> {
    c.iter()
        .map(|c| {
            let v: serde_json::Value = serde_json::from_str(&c.body).unwrap();
            let n = v["data"]["n"].as_i64().unwrap();
            (if &c.webhook_id == a { 'A' } else { 'B' }, n)
        })
        .collect()
}

fn only(c: &[ClaimedDelivery], sub: &SubscriptionId) -> usize {
    c.iter().filter(|c| &c.webhook_id == sub).count()
}

async fn the_cap_holds_per_subscription(fx: Fx) {
    let (a, _) = fx.subscribe("http://hooks.test/a", &["call.ended"]).await;
    let (b, _) = fx
        .subscribe("http://hooks.test/b", &["transcript.saved"])
        .await;
    for n in 0..40 {
        fx.event(EventName::CallEnded, json!({"n": n}), None).await;
    }
    for n in 0..3 {
        fx.event(EventName::TranscriptSaved, json!({"n": 100 + n}), None)
            .await;
    }
    let now = fx.clock.now();
    // The window (43 rows) holds everything: A is cut to the cap.
    let c = claim_on(&fx.store, now, 100, &[]).await;
    let mut want: Vec<(char, i64)> = (0..16).map(|n| ('A', n)).collect();
    want.extend((100..103).map(|n| ('B', n)));
    assert_eq!(who(&c, &a), want);
    // Ten of A's attempts still running in this worker: six more fit.
    let c = claim_on(&fx.store, now, 100, &[(&a, 10)]).await;
    assert_eq!(who(&c, &a), (16..22).map(|n| ('A', n)).collect::<Vec<_>>());
    // At the cap: nothing, and none of A's rows are leased by trying.
    assert!(claim_on(&fx.store, now, 100, &[(&a, 16)]).await.is_empty());
    // The limit counts too.
    let c = claim_on(&fx.store, now, 5, &[]).await;
    assert_eq!(who(&c, &a), (22..27).map(|n| ('A', n)).collect::<Vec<_>>());
    assert_eq!(only(&c, &b), 0);
}

async fn a_backlog_does_not_starve_another_subscription(fx: Fx) {
    const CALL: &str = "oac-bbbbbbbbbbbb";
    let (a, _) = fx.subscribe("http://hooks.test/a", &["call.ended"]).await;
    let (b, _) = fx
        .subscribe("http://hooks.test/b", &["transcript.saved"])
        .await;
    // A's backlog is recorded first: 300 rows ahead of B's in due order.
    for n in 0..300 {
        fx.event(EventName::CallEnded, json!({"n": n}), None).await;
    }
    // B's two deliveries belong to one call: the second waits for the first.
    for n in [1000, 1001] {
        fx.event(EventName::TranscriptSaved, json!({"n": n}), Some(CALL))
            .await;
    }
    let now = fx.clock.now();
    // The 20-row window is all A; A gets its cap, B its head.
    let c = claim_on(&fx.store, now, 20, &[]).await;
    assert_eq!(only(&c, &a), CAP);
    assert_eq!(
        who(&c, &a)
            .into_iter()
            .filter(|(s, _)| *s == 'B')
            .collect::<Vec<_>>(),
        [('B', 1000)]
    );
    let b_first = c.iter().find(|c| c.webhook_id == b).unwrap().clone();
    // A's attempts are running; one finished. B's second waits for its first.
    let c = claim_on(&fx.store, now, 20, &[(&a, 15), (&b, 1)]).await;
    assert_eq!(who(&c, &a), [('A', 16)]);
    // B's first succeeds: its second goes out on the next claim, although
    // 283 of A's rows are still ahead of it.
    let done = AttemptOutcome {
        seq: b_first.seq,
        lease_token: b_first.lease_token,
        webhook_id: b.clone(),
        attempt: 1,
        started_at: now,
        status: Some(200),
        latency_ms: 2,
        error: String::new(),
        next: NextStep::Succeeded,
        gone: false,
    };
    fx.store.record_attempts(&[done], now, 20).await.unwrap();
    let c = claim_on(&fx.store, now, 20, &[(&a, 15)]).await;
    assert_eq!(who(&c, &a), [('A', 17), ('B', 1001)]);
}

async fn two_claimers_never_get_the_same_row(fx: Fx) {
    let mut subs = Vec::new();
    for i in 0..5 {
        subs.push(
            fx.subscribe(&format!("http://hooks.test/{i}"), &["*"])
                .await
                .0,
        );
    }
    for n in 0..60 {
        fx.event(EventName::CallEnded, json!({"n": n}), None).await;
    }
    let total = 5 * 60;
    let now = fx.clock.now();
    let other = fx.reopen().await;
    let claimed = Arc::new(AtomicUsize::new(0));
    let run = |store: Store, claimed: Arc<AtomicUsize>| async move {
        let mut mine = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        // Until every row is claimed by one or the other: a claim that
        // comes back empty only lost a race for rows the other is taking.
        while claimed.load(Ordering::SeqCst) < total {
            assert!(Instant::now() < deadline, "claims stopped short");
            // No cap worth the name: only the rows decide.
            let c = store
                .claim_deliveries(now, 60_000, 7, &HashMap::new(), 1_000)
                .await
                .unwrap();
            claimed.fetch_add(c.len(), Ordering::SeqCst);
            if c.is_empty() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            mine.extend(c.into_iter().map(|c| c.seq));
        }
        mine
    };
    let (x, y) = tokio::join!(
        tokio::spawn(run(fx.store.clone(), claimed.clone())),
        tokio::spawn(run(other.clone(), claimed.clone()))
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    let all: HashSet<i64> = x.iter().chain(&y).copied().collect();
    assert_eq!(x.len() + y.len(), all.len(), "a row was claimed twice");
    assert_eq!(all.len(), total, "every row claimed once");
    other.close().await;
}
