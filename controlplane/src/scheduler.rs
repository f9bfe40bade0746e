//! The scheduler: dispatches due calls (now, at `scheduleAtUtc`, or at a
//! retry's `next_attempt_at`) and ends the calls of lost switch nodes.
//!
//! Every tick (a second) it claims due calls in the store (safe with several control planes on
//! one PostgreSQL, see `store::dispatch`) and hands each to the link,
//! which places it on the least loaded healthy node.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::store::Store;
use crate::switch_link::{Dispatched, SwitchNodes};

const TICK: Duration = Duration::from_secs(1);
/// Calls claimed per tick; more wait for the next tick.
const BATCH: i64 = 64;
/// Dispatches in flight at once.
const PARALLEL: usize = 16;

/// One pass: sweep lost nodes, claim due calls, dispatch them. Returns
/// what became of each claimed call.
pub async fn tick(link: &Arc<SwitchNodes>, store: &Store, clock: &Clock) -> Vec<Dispatched> {
    let now = clock.now();
    link.sweep_lost_nodes(store, now).await;
    let claimed = match store.claim_due_calls(now, BATCH).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("scheduler: claiming due calls: {e}");
            return Vec::new();
        }
    };
    let limit = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    let mut running = tokio::task::JoinSet::new();
    for call in claimed {
        let link = link.clone();
        let store = store.clone();
        let limit = limit.clone();
        running.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let result = link.dispatch(&store, &call).await;
            if let Dispatched::Failed { status, detail } = &result {
                tracing::warn!(call = %call.call_id, %status, "dispatch failed: {detail}");
            }
            result
        });
    }
    let mut out = Vec::new();
    while let Some(r) = running.join_next().await {
        match r {
            Ok(d) => out.push(d),
            Err(e) => tracing::error!("scheduler: dispatch task failed: {e}"),
        }
    }
    out
}

/// Runs the scheduler until aborted.
pub async fn run(link: Arc<SwitchNodes>, store: Store, clock: Clock) {
    loop {
        tick(&link, &store, &clock).await;
        tokio::time::sleep(TICK).await;
    }
}
