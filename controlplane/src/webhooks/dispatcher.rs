//! The delivery workers of one control plane: a loop that claims due
//! deliveries and runs each attempt as its own task, and a recorder that
//! writes attempt results back in batches.
//!
//! - Claims are leases in the database, so any number of replicas can run
//!   this loop against one PostgreSQL and each delivery goes to one of them.
//! - At most `concurrency` attempts run at once and at most
//!   `per_subscription` for any one subscription (one while it is
//!   failing), so a slow or dead receiver holds a bounded share and never
//!   delays the others.
//! - The loop sleeps until a delivery is due, an event is recorded (a local
//!   wake, or PostgreSQL `NOTIFY` from another process), an attempt
//!   finishes, or `idle_poll` passes (which covers expired leases).
//! - With a backlog and nearly every slot busy, it gathers `claim_min`
//!   free slots (for at most `claim_wait`) before claiming again, so a
//!   drain at full speed claims rows by the dozen, not one by one.
//! - Time comes from the `Clock`: with a manual clock a test steps through
//!   5 s, 30 s and 120 s of retry schedule without waiting.
//! - On shutdown it stops claiming, lets running attempts finish for
//!   `shutdown_grace`, records their results, and hands back the leases of
//!   attempts it had to abandon, so the next start re-sends them at once
//!   under the same delivery id.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use codeb_types::{SubscriptionId, UtcMillis};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::client::{SendError, WebhookClient};
use super::schedule::{AttemptResult, RETRY_AFTER_CAP, RetryPolicy, parse_retry_after};
use super::sign::{Signing, delivery_headers};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{AttemptOutcome, ClaimedDelivery, NextStep, Room, Store};

/// Most attempt results written in one transaction.
const RECORD_BATCH: usize = 512;
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub policy: RetryPolicy,
    /// Time limit of one attempt: connect, request, response.
    pub timeout: Duration,
    /// How long a claim holds a delivery; longer than an attempt can take.
    pub lease: Duration,
    pub concurrency: usize,
    pub per_subscription: usize,
    /// Most deliveries claimed in one query.
    pub batch: usize,
    /// With more due than fits and attempts running, the loop waits for
    /// this many free slots before claiming again, at most `claim_wait`
    /// after the first one freed: a claim costs the database about the
    /// same for one row as for dozens, and at full speed attempts end one
    /// by one.
    pub claim_min: usize,
    pub claim_wait: Duration,
    pub idle_poll: Duration,
    /// Finished deliveries (and pending ones that old) are purged after this.
    pub retention: Duration,
    pub shutdown_grace: Duration,
}

impl DeliveryConfig {
    pub fn new(policy: RetryPolicy, timeout: Duration) -> DeliveryConfig {
        DeliveryConfig {
            policy,
            timeout,
            lease: timeout * 2 + Duration::from_secs(2),
            concurrency: 512,
            per_subscription: 16,
            batch: 256,
            claim_min: 64,
            claim_wait: Duration::from_millis(5),
            idle_poll: Duration::from_secs(1),
            retention: Duration::from_secs(30 * 24 * 3600),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

struct Shared {
    store: Store,
    clock: Clock,
    client: WebhookClient,
    cfg: DeliveryConfig,
    metrics: Option<Arc<Metrics>>,
}

/// The running workers; `shutdown` stops them.
#[derive(Debug)]
pub struct DispatcherHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl DispatcherHandle {
    /// Stops claiming, finishes or hands back running attempts, returns
    /// when everything is recorded.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "webhook dispatcher ended abnormally");
        }
    }

    /// Stops dead, as a crash would: nothing is recorded or handed back,
    /// leases run out on their own. For tests of exactly that.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Starts the delivery workers.
pub fn start(
    store: Store,
    clock: Clock,
    client: WebhookClient,
    cfg: DeliveryConfig,
    metrics: Option<Arc<Metrics>>,
) -> DispatcherHandle {
    let (stop, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        store,
        clock,
        client,
        cfg,
        metrics,
    });
    let task = tokio::spawn(run(shared, stop_rx));
    DispatcherHandle { stop, task }
}

/// How an attempt went, as far as the pace of its subscription's next
/// attempts is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reached {
    /// The receiver took it (2xx).
    Delivered,
    /// The receiver answered but refused it (a 4xx, a 500): it is up, so
    /// its other events go on at the usual pace.
    Refused,
    /// No answer (connection refused, timeout), or one that says the
    /// receiver is down or overloaded (502, 503, 504, 429), with the
    /// time it asked for (Retry-After).
    Down(Option<Duration>),
}

impl Reached {
    fn of(result: &AttemptResult, delivered: bool) -> Reached {
        match result {
            _ if delivered => Reached::Delivered,
            AttemptResult::NoAnswer => Reached::Down(None),
            AttemptResult::Status {
                status: 429 | 502 | 503 | 504,
                retry_after,
            } => Reached::Down(*retry_after),
            AttemptResult::Status { .. } => Reached::Refused,
        }
    }
}

/// The wait between probes of a subscription whose receiver looks down:
/// the retry schedule's first step, within these bounds.
const PROBE_MIN: Duration = Duration::from_secs(1);
const PROBE_MAX: Duration = Duration::from_secs(60);

/// Attempts running now.
struct InFlight {
    /// task -> (subscription, seq, lease token)
    tasks: HashMap<tokio::task::Id, (SubscriptionId, i64, i64)>,
    /// Attempts per subscription, and which are failing.
    room: Room,
    /// Consecutive attempts per subscription that found its receiver
    /// down (in this process; an answer of any kind resets it).
    down: HashMap<SubscriptionId, u32>,
    /// How long a subscription whose receiver looks down waits between
    /// attempts.
    probe_every: i64,
}

impl InFlight {
    fn new(per_subscription: usize, probe_every: Duration) -> InFlight {
        InFlight {
            tasks: HashMap::new(),
            room: Room::new(per_subscription),
            down: HashMap::new(),
            probe_every: millis(probe_every.clamp(PROBE_MIN, PROBE_MAX)),
        }
    }

    fn add(&mut self, task: tokio::task::Id, d: &ClaimedDelivery) {
        self.tasks
            .insert(task, (d.webhook_id.clone(), d.seq, d.lease_token));
        *self.room.in_flight.entry(d.webhook_id.clone()).or_default() += 1;
    }

    /// Forgets a finished task (`reached`: how it went; None: it did not
    /// finish), started at `now`; returns its lease. A failed attempt keeps its
    /// subscription's slot until its result is written
    /// ([`Self::recorded`]): the next attempt of a failing subscription
    /// waits for the count of failures that may pause it. After two
    /// attempts in a row that found the receiver down, the next waits for
    /// `probe_every`, or the Retry-After it asked for (capped).
    fn done(
        &mut self,
        task: tokio::task::Id,
        reached: Option<Reached>,
        now: UtcMillis,
    ) -> Option<(i64, i64)> {
        let (sub, seq, token) = self.tasks.remove(&task)?;
        match reached {
            Some(Reached::Delivered) => {
                self.room.failing.remove(&sub);
                self.room.not_before.remove(&sub);
                self.down.remove(&sub);
                self.release(&sub);
            }
            Some(Reached::Refused) => {
                self.room.failing.insert(sub.clone());
                self.down.remove(&sub);
            }
            Some(Reached::Down(asked)) => {
                self.room.failing.insert(sub.clone());
                let n = self.down.entry(sub.clone()).or_insert(0);
                *n = n.saturating_add(1);
                if *n >= 2 {
                    let hint = asked.map_or(0, |d| millis(d.min(RETRY_AFTER_CAP)));
                    let at = now.plus_ms(self.probe_every.max(hint));
                    let t = self.room.not_before.entry(sub).or_insert(at);
                    *t = (*t).max(at);
                }
            }
            None => self.release(&sub),
        }
        Some((seq, token))
    }

    /// When the first subscription waiting to be probed may be tried,
    /// after `now`.
    fn next_probe(&self, now: UtcMillis) -> Option<UtcMillis> {
        self.room
            .not_before
            .values()
            .copied()
            .filter(|t| *t > now)
            .min()
    }

    /// A failed attempt's result is written: its slot is free.
    fn recorded(&mut self, sub: &SubscriptionId) {
        self.release(sub);
    }

    /// Forgets what this process remembers of subscriptions with nothing
    /// in flight and no probe to wait for: one deleted while failing, or
    /// one that failed and got no event since, would otherwise be kept
    /// for the life of the process. A subscription whose failures are
    /// stored is still held to one attempt at a time by that count
    /// ([`Room`]); it only starts counting attempts that find its
    /// receiver down afresh.
    fn forget_idle(&mut self, now: UtcMillis) {
        let Room {
            in_flight,
            failing,
            not_before,
            ..
        } = &mut self.room;
        not_before.retain(|s, at| *at > now || in_flight.contains_key(s));
        let keep = |s: &SubscriptionId| in_flight.contains_key(s) || not_before.contains_key(s);
        failing.retain(|s| keep(s));
        self.down.retain(|s, _| keep(s));
    }

    fn release(&mut self, sub: &SubscriptionId) {
        if let Some(n) = self.room.in_flight.get_mut(sub) {
            *n -= 1;
            if *n == 0 {
                self.room.in_flight.remove(sub);
            }
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

async fn run(sh: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let wake = sh.store.outbox_wake();
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let (recorded_tx, mut recorded_rx) = mpsc::unbounded_channel();
    let recorder = tokio::spawn(record(sh.clone(), done_rx, recorded_tx));
    let relay = {
        let store = sh.store.clone();
        let stop = stop.clone();
        tokio::spawn(async move { store.relay_outbox_notifications(stop).await })
    };
    let mut tasks: JoinSet<(Reached, UtcMillis)> = JoinSet::new();
    let probe_every = sh.cfg.policy.delays.first().copied().unwrap_or_default();
    let mut in_flight = InFlight::new(sh.cfg.per_subscription, probe_every);
    let mut housekeeping_at = Instant::now() + Duration::from_secs(60);
    // The last claim filled its batch: more is due than was taken.
    let mut backlog = false;
    let mut coalesce_until: Option<Instant> = None;
    let claim_min = sh
        .cfg
        .claim_min
        .min(sh.cfg.batch)
        .min(sh.cfg.concurrency / 2);
    tracing::info!(
        concurrency = sh.cfg.concurrency,
        per_subscription = sh.cfg.per_subscription,
        "webhook delivery started"
    );
    loop {
        if *stop.borrow() {
            break;
        }
        while let Some(r) = tasks.try_join_next_with_id() {
            finished(r, &mut in_flight, sh.clock.now());
        }
        while let Ok(sub) = recorded_rx.try_recv() {
            in_flight.recorded(&sub);
        }
        if Instant::now() >= housekeeping_at {
            housekeeping_at = Instant::now() + HOUSEKEEPING_EVERY;
            housekeep(&sh).await;
            in_flight.forget_idle(sh.clock.now());
        }
        let want = sh
            .cfg
            .concurrency
            .saturating_sub(tasks.len())
            .min(sh.cfg.batch);
        if backlog && want > 0 && want < claim_min && !tasks.is_empty() {
            // A backlog and most slots busy: gather a few more free slots
            // (for at most `claim_wait`) rather than claim one at a time.
            let until = *coalesce_until.get_or_insert_with(|| Instant::now() + sh.cfg.claim_wait);
            if Instant::now() < until {
                tokio::select! {
                    Some(r) = tasks.join_next_with_id() => finished(r, &mut in_flight, sh.clock.now()),
                    () = tokio::time::sleep_until(until.into()) => {}
                    r = stop.changed() => if r.is_err() { break },
                }
                continue;
            }
        }
        coalesce_until = None;
        let mut got = 0;
        if want > 0 {
            let claim = sh
                .store
                .claim_deliveries(
                    sh.clock.now(),
                    millis(sh.cfg.lease),
                    i64::try_from(want).unwrap_or(i64::MAX),
                    &mut in_flight.room,
                )
                .await;
            match claim {
                Ok(claimed) => {
                    got = claimed.len();
                    backlog = got == want;
                    for d in claimed {
                        let handle = tasks.spawn(attempt(sh.clone(), d.clone(), done_tx.clone()));
                        in_flight.add(handle.id(), &d);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming webhook deliveries failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        r = stop.changed() => if r.is_err() { break },
                    }
                    continue;
                }
            }
        }
        if want > 0 && got == want {
            // A full batch: more may be due right now.
            continue;
        }
        let mut pause = if want == 0 {
            sh.cfg.idle_poll
        } else {
            idle_pause(&sh).await
        };
        // A failing subscription due to be probed again wakes the loop.
        let now = sh.clock.now();
        if want > 0
            && let Some(t) = in_flight.next_probe(now)
        {
            let wait = u64::try_from(t.0 - now.0).unwrap_or(1);
            pause = pause.min(Duration::from_millis(wait));
        }
        tokio::select! {
            () = wake.notified() => {}
            Some(r) = tasks.join_next_with_id(), if !tasks.is_empty() => finished(r, &mut in_flight, sh.clock.now()),
            () = tokio::time::sleep(pause) => {}
            r = stop.changed() => if r.is_err() { break },
        }
    }
    // Shutdown: no new claims; let running attempts finish for a while.
    let grace = sh.cfg.shutdown_grace;
    let drained = tokio::time::timeout(grace, async {
        while let Some(r) = tasks.join_next_with_id().await {
            finished(r, &mut in_flight, sh.clock.now());
        }
    })
    .await;
    let mut abandoned = Vec::new();
    if drained.is_err() {
        tasks.abort_all();
        while let Some(r) = tasks.join_next_with_id().await {
            match r {
                Ok((id, (reached, started))) => {
                    in_flight.done(id, Some(reached), started);
                }
                Err(e) => abandoned.extend(in_flight.done(e.id(), None, sh.clock.now())),
            }
        }
    }
    // Every result sent so far is written before the leases go back, so a
    // lease is only released for an attempt whose result never arrived.
    drop(done_tx);
    if let Err(e) = recorder.await {
        tracing::error!(error = %e, "webhook result recorder ended abnormally");
    }
    if !abandoned.is_empty() {
        tracing::info!(
            n = abandoned.len(),
            "handing back deliveries interrupted by shutdown"
        );
        if let Err(e) = sh.store.release_leases(&abandoned, sh.clock.now()).await {
            tracing::warn!(error = %e, "could not hand back leases; they expire on their own");
        }
    }
    let _ = relay.await;
    tracing::info!("webhook delivery stopped");
}

fn finished(
    r: Result<(tokio::task::Id, (Reached, UtcMillis)), tokio::task::JoinError>,
    in_flight: &mut InFlight,
    now: UtcMillis,
) {
    match r {
        // Paced from when the attempt started.
        Ok((id, (reached, started))) => {
            in_flight.done(id, Some(reached), started);
        }
        Err(e) => {
            // A panicked attempt: its lease expires and the delivery is
            // retried under the same id.
            tracing::error!(error = %e, "a webhook delivery attempt failed abnormally");
            in_flight.done(e.id(), None, now);
        }
    }
}

/// How long to sleep when nothing is claimable: until the next scheduled
/// retry, at most `idle_poll`.
async fn idle_pause(sh: &Shared) -> Duration {
    let now = sh.clock.now();
    match sh.store.next_delivery_due(now).await {
        Ok(Some(t)) => Duration::from_millis(u64::try_from(t.0 - now.0).unwrap_or(1).max(1))
            .min(sh.cfg.idle_poll),
        Ok(None) => sh.cfg.idle_poll,
        Err(e) => {
            tracing::warn!(error = %e, "reading the next webhook retry time failed");
            sh.cfg.idle_poll
        }
    }
}

async fn housekeep(sh: &Shared) {
    let now = sh.clock.now();
    let cutoff = now.plus_ms(-millis(sh.cfg.retention));
    match sh.store.purge_deliveries(cutoff, now).await {
        Ok((0, 0)) => {}
        Ok((expired, deleted)) => {
            tracing::info!(expired, deleted, "webhook delivery log purged")
        }
        Err(e) => tracing::warn!(error = %e, "purging the webhook delivery log failed"),
    }
}

/// One attempt: sign, POST, decide what follows, report; how it went,
/// and when it started.
async fn attempt(
    sh: Arc<Shared>,
    d: ClaimedDelivery,
    done: mpsc::UnboundedSender<AttemptOutcome>,
) -> (Reached, UtcMillis) {
    let started = sh.clock.now();
    let t0 = Instant::now();
    let headers = delivery_headers(&Signing {
        event: &d.event,
        delivery_id: d.id.as_str(),
        attempt: d.attempt,
        timestamp: started.0.div_euclid(1000),
        body: d.body.as_bytes(),
        secret: &d.secret,
        prev_secret: d.prev_secret.as_deref(),
    });
    let sent = sh
        .client
        .post(&d.url, &headers, Bytes::from(d.body.clone()))
        .await;
    let elapsed = t0.elapsed();
    let now = sh.clock.now();
    let (status, error, result, label) = match sent {
        Ok(r) if (200..300).contains(&r.status) => (
            Some(r.status),
            String::new(),
            AttemptResult::Status {
                status: r.status,
                retry_after: None,
            },
            "success",
        ),
        Ok(r) => {
            let error = if r.snippet.is_empty() {
                format!("HTTP {}", r.status)
            } else {
                format!("HTTP {}: {}", r.status, r.snippet)
            };
            let retry_after = r
                .retry_after
                .as_deref()
                .and_then(|v| parse_retry_after(v, now));
            (
                Some(r.status),
                error,
                AttemptResult::Status {
                    status: r.status,
                    retry_after,
                },
                "http_error",
            )
        }
        Err(e) => {
            let label = match e {
                SendError::Refused(_) => "refused",
                SendError::Timeout(_) => "timeout",
                SendError::Transport(_) => "transport_error",
            };
            (None, e.to_string(), AttemptResult::NoAnswer, label)
        }
    };
    let decision = sh.cfg.policy.decide(d.attempt, &result, now);
    if let Some(m) = &sh.metrics {
        m.observe_webhook_attempt(label, elapsed.as_secs_f64());
    }
    if error.is_empty() {
        tracing::debug!(delivery = %d.id, webhook = %d.webhook_id, attempt = d.attempt,
            ms = elapsed.as_millis(), "webhook delivered");
    } else {
        tracing::info!(delivery = %d.id, webhook = %d.webhook_id, attempt = d.attempt,
            error = %error, next = ?decision.next, "webhook attempt failed");
    }
    // The same test as the recorder's release of a failed attempt's slot.
    let reached = Reached::of(&result, decision.next == NextStep::Succeeded);
    let _ = done.send(AttemptOutcome {
        seq: d.seq,
        lease_token: d.lease_token,
        webhook_id: d.webhook_id,
        attempt: d.attempt,
        started_at: started,
        status,
        latency_ms: millis(elapsed),
        error,
        next: decision.next,
        gone: decision.gone,
    });
    (reached, started)
}

/// Writes attempt results in batches (whatever has arrived since the last
/// write), then wakes the claim loop: a result can make the next delivery
/// of the same call claimable.
/// `recorded` hears the subscription of each failed attempt once its
/// result is written (or given up on).
async fn record(
    sh: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<AttemptOutcome>,
    recorded: mpsc::UnboundedSender<SubscriptionId>,
) {
    let wake = sh.store.outbox_wake();
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < RECORD_BATCH {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        let mut tries: u32 = 0;
        loop {
            let now = sh.clock.now();
            match sh
                .store
                .record_attempts(&batch, now, sh.cfg.policy.pause_after)
                .await
            {
                Ok(paused) => {
                    for p in paused {
                        tracing::warn!(webhook = %p.webhook_id, reason = %p.reason,
                            "webhook subscription paused");
                    }
                    break;
                }
                Err(e) if tries < 10 => {
                    tries += 1;
                    tracing::warn!(error = %e, n = batch.len(), "recording webhook attempts failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200) * tries).await;
                }
                Err(e) => {
                    // The leases run out and the deliveries go again under
                    // their ids: duplicates for the receiver to drop, no loss.
                    tracing::error!(error = %e, n = batch.len(),
                        "giving up recording webhook attempts; they will be retried");
                    break;
                }
            }
        }
        for o in batch.drain(..) {
            if o.next != NextStep::Succeeded {
                let _ = recorded.send(o.webhook_id);
            }
        }
        wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(n: u8) -> SubscriptionId {
        SubscriptionId::from_random([n; 8])
    }

    /// What the process remembers of a failing subscription goes once it
    /// has nothing in flight and no probe due later; a subscription with
    /// an attempt out, or a probe still to wait for, keeps it.
    #[test]
    fn idle_subscriptions_are_forgotten_busy_ones_kept() {
        let now = UtcMillis(1_700_000_000_000);
        let mut f = InFlight::new(16, Duration::from_secs(5));
        let (busy, probing, idle) = (sub(1), sub(2), sub(3));
        for s in [&busy, &probing, &idle] {
            f.room.failing.insert(s.clone());
            f.down.insert(s.clone(), 1);
        }
        f.room.in_flight.insert(busy.clone(), 1);
        f.room.not_before.insert(busy.clone(), now.plus_ms(-1));
        f.room
            .not_before
            .insert(probing.clone(), now.plus_ms(5_000));
        f.room.not_before.insert(idle.clone(), now.plus_ms(-1));
        f.forget_idle(now);
        for s in [&busy, &probing] {
            assert!(f.room.failing.contains(s) && f.down.contains_key(s));
            assert!(f.room.not_before.contains_key(s));
        }
        assert!(!f.room.failing.contains(&idle));
        assert!(!f.down.contains_key(&idle));
        assert!(!f.room.not_before.contains_key(&idle));
        // Its probe time passed and its attempt came back: forgotten too.
        f.room.in_flight.remove(&busy);
        f.forget_idle(now.plus_ms(10_000));
        assert!(f.room.failing.is_empty() && f.down.is_empty() && f.room.not_before.is_empty());
    }
}
