//! The webhook outbox: events, their deliveries (one per matching
//! subscription) and the log of delivery attempts.
//!
//! Recording an event inserts the event, with the exact body every
//! subscriber will receive, and its delivery rows in one transaction (the
//! caller's, if it has one). Workers claim due rows under a lease (on
//! PostgreSQL `FOR UPDATE SKIP LOCKED`, so replicas never claim the same
//! row), deliver, and record each attempt's result under the lease token
//! they claimed with: a worker whose lease ran out cannot overwrite the
//! row another worker has since claimed. A delivery's id never changes, so
//! a crash between attempts, or during one, only ever re-sends the same id.
//!
//! A lease also moves the delivery's `next_attempt_at` to the lease's end
//! (when it goes again if the attempt's result never arrives), so the
//! rows being attempted drop out of the due range of the pending index:
//! a claim reads only rows it can take, not every attempt in flight
//! before them (up to `concurrency` heap rows per claim otherwise).
//!
//! Order: deliveries of one call (`order_key`) to one subscription are
//! claimable only when no earlier one of them is still pending, so
//! `transcript.saved` never overtakes the terminal event before it.
//!
//! Held: the deliveries of a paused subscription are `held`, not
//! `pending`, so the claim query (which walks the pending index in due
//! order) never wades through a paused subscription's backlog; resuming
//! makes them pending again, in their original order. Pausing holds what
//! is not being attempted right now; an attempt in flight still records
//! its result, and a retry it asks for is held.
//!
//! Pause and resume race with everything that reads `active` to choose
//! between held and pending. On SQLite writers take turns. On PostgreSQL
//! the two mistakes a race could make are handled apart:
//! - a held delivery of an active subscription would never go out, so
//!   whatever writes `held` first locks the subscription rows it decides
//!   for (a resume then waits for it, or it sees the resume);
//! - a pending delivery of a paused subscription (an event recorded as
//!   the pause commits) must not go out, so the claim checks `active` and
//!   holds such a row instead of leasing it.

use std::collections::HashMap;

use codeb_types::{DeliveryId, EventId, EventName, SubscriptionId, UtcMillis};
use serde::Serialize;

use super::tx::{StoreTx, on_tx};
use super::{
    Page, Pool, Result, RowExt, Store, StoreError, WritePool, col, flag, like_escape, ms, on_pool,
    opt_ms,
};
use crate::crypto;

/// The PostgreSQL notification channel that tells every replica's workers
/// that deliveries are due.
pub(crate) const OUTBOX_CHANNEL: &str = "codeb_outbox";

/// Which subscriptions of the tenant an event goes to.
#[derive(Debug, Clone, Copy)]
pub enum Audience<'a> {
    /// Every subscription whose `events` lists the event or `*`.
    Subscribers,
    /// Only this subscription, whatever it lists (`webhook.test`).
    One(&'a SubscriptionId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Due now or later, or being attempted.
    Pending,
    /// Waiting for its paused subscription to resume.
    Held,
    Succeeded,
    Failed,
}

impl DeliveryState {
    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Held => "held",
            DeliveryState::Succeeded => "succeeded",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(DeliveryState::Pending),
            "held" => Some(DeliveryState::Held),
            "succeeded" => Some(DeliveryState::Succeeded),
            "failed" => Some(DeliveryState::Failed),
            _ => None,
        }
    }
}

/// The envelope the v1 spec promises on every delivery, in its key order.
#[derive(Serialize)]
struct Envelope<'a> {
    event: &'a str,
    tenant: &'a str,
    ts: String,
    data: &'a serde_json::Value,
}

/// The exact bytes POSTed for an event: `{event, tenant, ts, data}`.
pub fn event_body(
    tenant: &str,
    name: EventName,
    data: &serde_json::Value,
    at: UtcMillis,
) -> Result<String> {
    serde_json::to_string(&Envelope {
        event: name.as_str(),
        tenant,
        ts: at.to_iso(),
        data,
    })
    .map_err(|e| StoreError::Corrupt(format!("event body: {e}")))
}

/// A delivery a worker now holds the lease on.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub seq: i64,
    pub id: DeliveryId,
    /// Proves the claim when the result is recorded.
    pub lease_token: i64,
    pub webhook_id: SubscriptionId,
    pub event: String,
    pub body: String,
    /// The number of this attempt (1-based).
    pub attempt: i64,
    pub url: String,
    pub secret: String,
    /// The previous secret while its rotation grace period runs.
    pub prev_secret: Option<String>,
    /// The subscription's consecutive failed attempts when claimed.
    pub failures: i64,
}

/// No probe gate is set further ahead than this: the Retry-After cap
/// (10 min) and the longest probe interval (1 min).
const GATE_MAX_MS: i64 = 11 * 60 * 1000;

/// How many attempts each subscription may have in flight: up to
/// `per_subscription`, but one at a time while it is failing (its last
/// attempt here failed, or its stored count of consecutive failures is
/// above 0). A resumed subscription whose receiver is still down is then
/// probed one delivery at a time, and pauses again at its 20th failure
/// instead of a whole batch of attempts past it. It is per process: a
/// success seen by another replica frees this one's limit only after its
/// own next success.
///
/// After two attempts in a row that found its receiver down (no answer,
/// or 502, 503, 504, 429; a receiver that answers and refuses an event
/// is up), none of the subscription's deliveries is tried before
/// `not_before`: the retry schedule's first step later (1–60 s), or what
/// its Retry-After asked. A receiver that is down for a moment (a
/// restart, a deploy) while events keep coming is probed every few
/// seconds, not run through its 20 failures in the milliseconds its
/// refused connections take, which would pause it. Per process: each
/// replica probes on its own.
#[derive(Debug, Clone, Default)]
pub struct Room {
    pub in_flight: HashMap<SubscriptionId, usize>,
    /// Subscriptions whose last attempt in this process failed.
    pub failing: std::collections::HashSet<SubscriptionId>,
    /// A failing subscription's next attempt waits until then.
    pub not_before: HashMap<SubscriptionId, UtcMillis>,
    pub per_subscription: usize,
}

impl Room {
    pub fn new(per_subscription: usize) -> Room {
        Room {
            per_subscription,
            ..Room::default()
        }
    }

    fn cap(&self, sub: &SubscriptionId, stored_failures: i64) -> usize {
        if stored_failures > 0 || self.failing.contains(sub) {
            1
        } else {
            self.per_subscription
        }
    }
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Succeeded,
    RetryAt(UtcMillis),
    /// No further attempts (exhausted, or the receiver is gone).
    Failed,
}

/// The result of one attempt, as a worker reports it.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub seq: i64,
    pub lease_token: i64,
    pub webhook_id: SubscriptionId,
    pub attempt: i64,
    pub started_at: UtcMillis,
    pub status: Option<u16>,
    pub latency_ms: i64,
    /// Empty on success.
    pub error: String,
    pub next: NextStep,
    /// The receiver answered 410: disable the subscription.
    pub gone: bool,
}

/// A subscription that stopped because of the results just recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paused {
    pub webhook_id: SubscriptionId,
    pub reason: String,
}

/// One attempt in the delivery log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptLog {
    pub attempt: i64,
    pub started_at: UtcMillis,
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    pub error: String,
}

/// A delivery as the delivery log shows it.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub id: DeliveryId,
    pub event_id: EventId,
    pub event: String,
    pub call_id: Option<String>,
    pub state: DeliveryState,
    pub attempts: i64,
    /// When the next attempt is due; while an attempt is in flight, the
    /// end of its lease (when the delivery goes again should its result
    /// never arrive).
    pub next_attempt_at: UtcMillis,
    pub created_at: UtcMillis,
    pub finished_at: Option<UtcMillis>,
    pub last_status: Option<i64>,
    pub last_error: String,
    pub replay_of: Option<String>,
    pub log: Vec<AttemptLog>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    NotFound,
    /// The delivery has not finished yet; there is nothing to replay.
    StillPending,
    /// A new delivery of the same event body was queued.
    Queued(DeliveryId),
}

fn new_delivery_id() -> DeliveryId {
    DeliveryId::from_random(crypto::random_bytes())
}

/// Per-subscription effect of a batch of attempt results.
#[derive(Debug, Default)]
struct CounterChange {
    /// A success was seen: `failures` restarts from `add`.
    reset: bool,
    /// Failed attempts after the last success in the batch.
    add: i64,
    fired: Option<i64>,
    gone: bool,
    last_error: String,
}

fn counter_changes(applied: &[&AttemptOutcome]) -> Vec<(String, CounterChange)> {
    let mut order: Vec<String> = Vec::new();
    let mut by_sub: HashMap<String, CounterChange> = HashMap::new();
    for o in applied {
        let key = o.webhook_id.as_str().to_owned();
        let c = by_sub.entry(key.clone()).or_insert_with(|| {
            order.push(key);
            CounterChange::default()
        });
        if o.next == NextStep::Succeeded {
            c.reset = true;
            c.add = 0;
            c.fired = Some(o.started_at.0 + o.latency_ms);
        } else {
            c.add += 1;
            c.last_error.clone_from(&o.error);
        }
        c.gone |= o.gone;
    }
    order
        .into_iter()
        .filter_map(|k| by_sub.remove(&k).map(|c| (k, c)))
        .collect()
}

fn pause_reason(c: &CounterChange, pause_after: i64, now: UtcMillis) -> String {
    if c.gone {
        format!(
            "disabled at {}: the receiver answered 410 Gone",
            now.to_iso()
        )
    } else {
        format!(
            "auto-paused at {} after {pause_after} consecutive failed attempts; last: {}",
            now.to_iso(),
            c.last_error
        )
    }
}

/// The state a recorded result leaves a delivery in (`$state` is the
/// result's): a retry of a subscription paused meanwhile is held.
macro_rules! retry_state {
    ($state:literal, $row:literal) => {
        concat!(
            "CASE WHEN ",
            $state,
            " = 'pending' AND NOT EXISTS (SELECT 1 FROM webhooks w \
             WHERE w.id = ",
            $row,
            ".webhook_id AND w.active = 1) THEN 'held' ELSE ",
            $state,
            " END"
        )
    };
}

/// Holds a just-paused subscription's pending deliveries, except those
/// being attempted right now (their results still land).
const HOLD: &str = "UPDATE webhook_deliveries SET state = 'held' \
     WHERE webhook_id = $1 AND state = 'pending' \
     AND (lease_until IS NULL OR lease_until <= $2)";

/// The attempt log holds every attempt but a delivery's latest, which
/// stays on its row (`last_*`, numbered `attempts`): a delivery that
/// succeeds at once writes no log row. Before the row takes a new
/// attempt, or is expired, this copies the latest into the log (the
/// caller adds the `WHERE`).
macro_rules! keep_latest {
    () => {
        "(delivery_seq, attempt, started_at, status_code, latency_ms, error) \
         SELECT seq, attempts, last_started_at, last_status, last_latency_ms, last_error \
         FROM webhook_deliveries"
    };
}

fn state_of(next: NextStep) -> &'static str {
    match next {
        NextStep::Succeeded => DeliveryState::Succeeded.as_str(),
        NextStep::RetryAt(_) => DeliveryState::Pending.as_str(),
        NextStep::Failed => DeliveryState::Failed.as_str(),
    }
}

fn next_at(o: &AttemptOutcome, now: UtcMillis) -> i64 {
    match o.next {
        NextStep::RetryAt(t) => t.0,
        _ => now.0,
    }
}

fn finished_at(o: &AttemptOutcome, now: UtcMillis) -> Option<i64> {
    match o.next {
        NextStep::RetryAt(_) => None,
        _ => Some(now.0),
    }
}

/// Relays notifications until the connection fails.
async fn relay(
    pool: &sqlx::PgPool,
    wake: &tokio::sync::Notify,
) -> std::result::Result<std::convert::Infallible, sqlx::Error> {
    let mut l = sqlx::postgres::PgListener::connect_with(pool).await?;
    l.listen(OUTBOX_CHANNEL).await?;
    loop {
        l.recv().await?;
        wake.notify_one();
    }
}

/// The claim: first the due rows in due order from the pending index
/// alone, then their bodies and subscriptions. `$skip` excludes busy
/// subscriptions; `$lock` is PostgreSQL's row locking. `active` shows the
/// rows that slipped past a pause (see the module docs).
macro_rules! claim_select {
    ($skip:literal, $lock:literal) => {
        concat!(
            "WITH due AS MATERIALIZED (SELECT d.seq FROM webhook_deliveries d \
             WHERE d.state = 'pending' AND d.next_attempt_at <= $1 \
             AND (d.lease_until IS NULL OR d.lease_until <= $1) AND ",
            $skip,
            " AND (d.order_key IS NULL OR NOT EXISTS (SELECT 1 FROM webhook_deliveries p \
             WHERE p.state = 'pending' AND p.webhook_id = d.webhook_id \
             AND p.order_key = d.order_key AND p.seq < d.seq)) \
             ORDER BY d.next_attempt_at, d.seq LIMIT $2",
            $lock,
            ") SELECT d.seq, d.id, d.webhook_id, d.attempts, e.name, e.body, w.url, w.secret, \
             w.prev_secret, w.prev_secret_until, w.active, w.failures \
             FROM due JOIN webhook_deliveries d ON d.seq = due.seq \
             JOIN webhooks w ON w.id = d.webhook_id \
             JOIN webhook_events e ON e.seq = d.event_seq \
             ORDER BY d.next_attempt_at, d.seq"
        )
    };
}

/// Due rows as the claim query returns them, apart: those to lease, and
/// those of a subscription that is paused (by the query's snapshot).
fn split_claim<R: RowExt>(
    rows: &[R],
    token: i64,
    now: UtcMillis,
) -> Result<(Vec<ClaimedDelivery>, Vec<ClaimedDelivery>)> {
    let mut live = Vec::with_capacity(rows.len());
    let mut paused = Vec::new();
    for r in rows {
        let c = claimed_from_row(r, token, now)?;
        if flag(r, "active")? {
            live.push(c);
        } else {
            paused.push(c);
        }
    }
    Ok((live, paused))
}

fn claimed_from_row(row: &impl RowExt, token: i64, now: UtcMillis) -> Result<ClaimedDelivery> {
    let id: String = col(row, "id")?;
    let webhook_id: String = col(row, "webhook_id")?;
    let prev_secret: String = col(row, "prev_secret")?;
    let prev_until = opt_ms(row, "prev_secret_until")?;
    let attempts: i64 = col(row, "attempts")?;
    Ok(ClaimedDelivery {
        seq: col(row, "seq")?,
        id: DeliveryId::parse(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        lease_token: token,
        webhook_id: SubscriptionId::parse(&webhook_id)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        event: col(row, "name")?,
        body: col(row, "body")?,
        attempt: attempts + 1,
        url: col(row, "url")?,
        secret: col(row, "secret")?,
        prev_secret: (!prev_secret.is_empty() && prev_until.is_some_and(|t| t > now))
            .then_some(prev_secret),
        failures: col(row, "failures")?,
    })
}

/// Keeps at most `room(sub)` rows per subscription, in claim order.
/// A subscription whose stored failures are above 0 joins `room.failing`,
/// so the next claim skips it while its one attempt is out (its rows would
/// otherwise fill the claim's limit again only to be dropped here).
fn fit_to_room(rows: Vec<ClaimedDelivery>, room: &mut Room) -> Vec<ClaimedDelivery> {
    for r in &rows {
        if r.failures > 0 && !room.failing.contains(&r.webhook_id) {
            room.failing.insert(r.webhook_id.clone());
        }
    }
    let room = &*room;
    let mut taken: HashMap<SubscriptionId, usize> = HashMap::new();
    rows.into_iter()
        .filter(|r| {
            let busy = room.in_flight.get(&r.webhook_id).copied().unwrap_or(0);
            let n = taken.entry(r.webhook_id.clone()).or_insert(0);
            if busy + *n < room.cap(&r.webhook_id, r.failures) {
                *n += 1;
                true
            } else {
                false
            }
        })
        .collect()
}

impl StoreTx {
    /// Records an event and queues a delivery to every subscription of
    /// `tenant` that wants it, inside this transaction. `call_id` keeps the
    /// deliveries of one call in order per subscription. Returns the
    /// event's id.
    pub async fn record_event(
        &mut self,
        tenant: &str,
        name: EventName,
        data: serde_json::Value,
        call_id: Option<&str>,
        now: UtcMillis,
    ) -> Result<EventId> {
        let (id, _) = self
            .record_event_for(tenant, name, &data, call_id, Audience::Subscribers, now)
            .await?;
        Ok(id)
    }

    /// `record_event` with an explicit audience; also returns the ids of
    /// the deliveries queued.
    pub async fn record_event_for(
        &mut self,
        tenant: &str,
        name: EventName,
        data: &serde_json::Value,
        call_id: Option<&str>,
        audience: Audience<'_>,
        now: UtcMillis,
    ) -> Result<(EventId, Vec<DeliveryId>)> {
        let event_id = EventId::from_random(crypto::random_bytes());
        let body = event_body(tenant, name, data, now)?;
        // Names come from a closed enum; escaping keeps LIKE literal anyway.
        let wants = format!("%\"{}\"%", like_escape(name.as_str()));
        let target = match audience {
            Audience::Subscribers => None,
            Audience::One(id) => Some(id.as_str()),
        };
        let queued = on_tx!(self, |t| {
            let seq: i64 = sqlx::query_scalar(
                "INSERT INTO webhook_events (id, tenant, name, call_id, body, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
            )
            .bind(event_id.as_str())
            .bind(tenant)
            .bind(name.as_str())
            .bind(call_id)
            .bind(&body)
            .bind(now.0)
            .fetch_one(&mut **t)
            .await?;
            let subs: Vec<(String, i64)> = sqlx::query_as(
                "SELECT id, active FROM webhooks WHERE tenant = $1 AND \
                 (($3 IS NULL AND (events LIKE '%\"*\"%' OR events LIKE $2 ESCAPE '\\')) \
                 OR id = $3) ORDER BY id",
            )
            .bind(tenant)
            .bind(&wants)
            .bind(target)
            .fetch_all(&mut **t)
            .await?;
            let ids: Vec<String> = subs
                .iter()
                .map(|_| new_delivery_id().as_str().to_owned())
                .collect();
            (seq, subs, ids)
        });
        let (seq, subs, ids) = queued;
        if !subs.is_empty() {
            self.insert_deliveries(seq, tenant, call_id, &subs, &ids, None, now)
                .await?;
        }
        let ids = ids
            .iter()
            .map(|s| DeliveryId::parse(s).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect::<Result<Vec<_>>>()?;
        Ok((event_id, ids))
    }

    /// Inserts the deliveries of one event (pending, or held for a paused
    /// subscription; `subs` is (id, active)) and announces them.
    #[allow(clippy::too_many_arguments)]
    async fn insert_deliveries(
        &mut self,
        event_seq: i64,
        tenant: &str,
        order_key: Option<&str>,
        subs: &[(String, i64)],
        ids: &[String],
        replay_of: Option<&str>,
        now: UtcMillis,
    ) -> Result<()> {
        let state = |active: i64| {
            if active != 0 {
                DeliveryState::Pending.as_str()
            } else {
                DeliveryState::Held.as_str()
            }
        };
        match &mut self.inner {
            super::tx::TxInner::Sqlite(t) => {
                // A writer at a time: `active` cannot change under us.
                for ((sub, active), id) in subs.iter().zip(ids) {
                    sqlx::query(
                        "INSERT INTO webhook_deliveries (id, event_seq, webhook_id, tenant, \
                         order_key, state, attempts, next_attempt_at, created_at, replay_of) \
                         VALUES ($1, $2, $3, $4, $5, $8, 0, $6, $6, $7)",
                    )
                    .bind(id)
                    .bind(event_seq)
                    .bind(sub)
                    .bind(tenant)
                    .bind(order_key)
                    .bind(now.0)
                    .bind(replay_of)
                    .bind(state(*active))
                    .execute(&mut **t)
                    .await?;
                }
            }
            super::tx::TxInner::Postgres(t) => {
                let webhooks: Vec<&str> = subs.iter().map(|(s, _)| s.as_str()).collect();
                let mut states: Vec<&str> = subs.iter().map(|(_, a)| state(*a)).collect();
                // Held only if still paused once locked: a resume running
                // now either commits first (the row is then active and
                // drops out) or waits for this transaction and then sees
                // these rows held. Paused subscriptions only, so the usual
                // event locks nothing it did not already.
                let paused: Vec<&str> = subs
                    .iter()
                    .filter(|(_, a)| *a == 0)
                    .map(|(s, _)| s.as_str())
                    .collect();
                if !paused.is_empty() {
                    let still: Vec<String> = sqlx::query_scalar(
                        "SELECT id FROM webhooks WHERE id = ANY($1::text[]) AND active = 0 \
                         ORDER BY id FOR SHARE",
                    )
                    .bind(&paused)
                    .fetch_all(&mut **t)
                    .await?;
                    for (st, (sub, _)) in states.iter_mut().zip(subs) {
                        *st = if still.contains(sub) {
                            DeliveryState::Held.as_str()
                        } else {
                            DeliveryState::Pending.as_str()
                        };
                    }
                }
                // One statement for all subscribers: an event for 1,000
                // subscriptions is one round trip, not 1,000.
                sqlx::query(
                    "INSERT INTO webhook_deliveries (id, event_seq, webhook_id, tenant, \
                     order_key, state, attempts, next_attempt_at, created_at, replay_of) \
                     SELECT u.id, $3, u.webhook_id, $4, $5, u.state, 0, $6, $6, $7 \
                     FROM UNNEST($1::text[], $2::text[], $8::text[]) AS u(id, webhook_id, state)",
                )
                .bind(ids)
                .bind(&webhooks)
                .bind(event_seq)
                .bind(tenant)
                .bind(order_key)
                .bind(now.0)
                .bind(replay_of)
                .bind(&states)
                .execute(&mut **t)
                .await?;
                // Delivered at commit, to every replica's workers.
                sqlx::query("SELECT pg_notify($1, '')")
                    .bind(OUTBOX_CHANNEL)
                    .execute(&mut **t)
                    .await?;
            }
        }
        self.queued_deliveries = true;
        Ok(())
    }

    /// Tells every replica's workers that deliveries may have become due
    /// (a subscription resumed), once this transaction commits.
    pub(crate) async fn announce_deliveries(&mut self) -> Result<()> {
        if let super::tx::TxInner::Postgres(t) = &mut self.inner {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(OUTBOX_CHANNEL)
                .execute(&mut **t)
                .await?;
        }
        self.queued_deliveries = true;
        Ok(())
    }
}

impl Store {
    /// Records an event and its deliveries in a transaction of its own.
    pub async fn record_event(
        &self,
        tenant: &str,
        name: EventName,
        data: serde_json::Value,
        call_id: Option<&str>,
        now: UtcMillis,
    ) -> Result<EventId> {
        let mut tx = self.begin().await?;
        let id = tx.record_event(tenant, name, data, call_id, now).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The signal delivery workers in this process wait on.
    pub fn outbox_wake(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.outbox_wake.clone()
    }

    /// Wakes this process's delivery workers.
    pub fn wake_deliveries(&self) {
        self.outbox_wake.notify_one();
    }

    /// On PostgreSQL, listens for other replicas' (and other processes')
    /// `NOTIFY` and wakes the local workers; reconnects after errors. On
    /// SQLite there is no one else to hear from: returns at once.
    pub async fn relay_outbox_notifications(&self, stop: tokio::sync::watch::Receiver<bool>) {
        let Pool::Postgres(pool) = &self.pool else {
            return;
        };
        let mut stop = stop;
        loop {
            tokio::select! {
                Err(e) = relay(pool, &self.outbox_wake) => {
                    tracing::warn!(error = %e, "outbox notification listener failed; reconnecting");
                }
                _ = stop.wait_for(|s| *s) => return,
            }
            // Polling covers the gap; wake once in case something arrived.
            self.outbox_wake.notify_one();
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Claims up to `limit` due deliveries for `lease_ms`, leaving each
    /// subscription no more in flight than `room` allows; subscriptions
    /// found failing as stored are added to `room.failing`.
    pub async fn claim_deliveries(
        &self,
        now: UtcMillis,
        lease_ms: i64,
        limit: i64,
        room: &mut Room,
    ) -> Result<Vec<ClaimedDelivery>> {
        // Full already (a failing one with one attempt out is), or waiting
        // to be probed again: not asked for.
        // Past, or further ahead than any gate is set (the clock was
        // stepped back): lifted.
        room.not_before
            .retain(|_, t| *t > now && t.0 <= now.0.saturating_add(GATE_MAX_MS));
        let skip: Vec<String> = room
            .in_flight
            .iter()
            .filter(|(k, n)| **n >= room.cap(k, 0))
            .map(|(k, _)| k)
            .chain(room.not_before.keys())
            .map(|k| k.as_str().to_owned())
            .collect();
        let token = i64::from_be_bytes(crypto::random_bytes::<8>());
        let until = now.0.saturating_add(lease_ms);
        match &self.pool {
            Pool::Sqlite(pool) => {
                let skip_json = serde_json::to_string(&skip)
                    .map_err(|e| StoreError::Corrupt(format!("skip list: {e}")))?;
                let mut tx = pool.write_tx().await?;
                let rows = sqlx::query(claim_select!(
                    "d.webhook_id NOT IN (SELECT value FROM json_each($3))",
                    ""
                ))
                .bind(now.0)
                .bind(limit)
                .bind(&skip_json)
                .fetch_all(&mut *tx)
                .await?;
                let (claimed, paused) = split_claim(&rows, token, now)?;
                // In this transaction `active` cannot change: hold them.
                for c in &paused {
                    sqlx::query("UPDATE webhook_deliveries SET state = 'held' WHERE seq = $1")
                        .bind(c.seq)
                        .execute(&mut *tx)
                        .await?;
                }
                let claimed = fit_to_room(claimed, &mut *room);
                for c in &claimed {
                    sqlx::query(
                        "UPDATE webhook_deliveries SET lease_until = $1, lease_token = $2, \
                         next_attempt_at = $1 WHERE seq = $3",
                    )
                    .bind(until)
                    .bind(token)
                    .bind(c.seq)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(claimed)
            }
            Pool::Postgres(pool) => {
                let mut tx = pool.write_tx().await?;
                // The due rows must come from the pending index in its
                // order, stopping at the limit. After a burst of events,
                // before autovacuum has analysed the table, the planner
                // believes few rows are due and picks a bitmap scan that
                // reads and sorts every due row instead (measured: 0.9 s
                // per claim with 100k due, against 14 ms).
                sqlx::query("SET LOCAL enable_bitmapscan = off")
                    .execute(&mut *tx)
                    .await?;
                // SKIP LOCKED: rows another replica is claiming right now
                // are passed over, not waited for and not claimed twice.
                let rows = sqlx::query(claim_select!(
                    "d.webhook_id <> ALL($3::text[])",
                    " FOR UPDATE SKIP LOCKED"
                ))
                .bind(now.0)
                .bind(limit)
                .bind(&skip)
                .fetch_all(&mut *tx)
                .await?;
                let (claimed, paused) = split_claim(&rows, token, now)?;
                if !paused.is_empty() {
                    // Held only under a share lock on a subscription still
                    // paused, so a resume cannot miss them; one being
                    // changed right now is skipped (neither leased nor
                    // held) and looked at again by the next claim.
                    let mut subs: Vec<&str> =
                        paused.iter().map(|c| c.webhook_id.as_str()).collect();
                    subs.sort_unstable();
                    subs.dedup();
                    let still: Vec<String> = sqlx::query_scalar(
                        "SELECT id FROM webhooks WHERE id = ANY($1::text[]) AND active = 0 \
                         ORDER BY id FOR SHARE SKIP LOCKED",
                    )
                    .bind(&subs)
                    .fetch_all(&mut *tx)
                    .await?;
                    let hold: Vec<i64> = paused
                        .iter()
                        .filter(|c| still.iter().any(|s| s == c.webhook_id.as_str()))
                        .map(|c| c.seq)
                        .collect();
                    if !hold.is_empty() {
                        sqlx::query(
                            "UPDATE webhook_deliveries SET state = 'held' \
                             WHERE seq = ANY($1::bigint[])",
                        )
                        .bind(&hold)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                let claimed = fit_to_room(claimed, &mut *room);
                let seqs: Vec<i64> = claimed.iter().map(|c| c.seq).collect();
                if !seqs.is_empty() {
                    sqlx::query(
                        "UPDATE webhook_deliveries SET lease_until = $1, lease_token = $2, \
                         next_attempt_at = $1 WHERE seq = ANY($3::bigint[])",
                    )
                    .bind(until)
                    .bind(token)
                    .bind(&seqs)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(claimed)
            }
        }
    }

    /// How many deliveries are not finished (due, leased, scheduled for a
    /// retry, or held for a paused subscription).
    pub async fn delivery_backlog(&self) -> Result<i64> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_scalar(
                "SELECT COUNT(*) FROM webhook_deliveries WHERE state IN ('pending', 'held')",
            )
            .fetch_one(pool)
            .await?)
        })
    }

    /// The earliest future moment a pending delivery becomes due (to sleep
    /// until then), if any.
    pub async fn next_delivery_due(&self, now: UtcMillis) -> Result<Option<UtcMillis>> {
        on_pool!(self, |pool| {
            let t: Option<i64> = sqlx::query_scalar(
                "SELECT MIN(next_attempt_at) FROM webhook_deliveries \
                 WHERE state = 'pending' AND next_attempt_at > $1",
            )
            .bind(now.0)
            .fetch_one(pool)
            .await?;
            Ok(t.map(UtcMillis))
        })
    }

    /// Records attempt results (one transaction for the batch): the
    /// delivery rows, the attempt log and the subscriptions' counters,
    /// pausing a subscription at `pause_after` consecutive failures or on
    /// 410. Results under a lease that is no longer theirs are dropped.
    /// Returns the subscriptions this batch paused.
    pub async fn record_attempts(
        &self,
        outcomes: &[AttemptOutcome],
        now: UtcMillis,
        pause_after: i64,
    ) -> Result<Vec<Paused>> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let mut paused = Vec::new();
        match &self.pool {
            Pool::Sqlite(pool) => {
                let mut tx = pool.write_tx().await?;
                let mut applied = Vec::new();
                for o in outcomes {
                    let update = sqlx::query(concat!(
                        "UPDATE webhook_deliveries SET state = ",
                        retry_state!("$1", "webhook_deliveries"),
                        ", attempts = $2, \
                         next_attempt_at = $3, lease_until = NULL, lease_token = NULL, \
                         last_status = $4, last_error = $5, finished_at = $6, \
                         last_started_at = $9, last_latency_ms = $10 \
                         WHERE seq = $7 AND lease_token = $8 AND state = 'pending'"
                    ))
                    .bind(state_of(o.next))
                    .bind(o.attempt)
                    .bind(next_at(o, now))
                    .bind(o.status.map(i64::from))
                    .bind(&o.error)
                    .bind(finished_at(o, now))
                    .bind(o.seq)
                    .bind(o.lease_token)
                    .bind(o.started_at.0)
                    .bind(o.latency_ms);
                    if o.attempt > 1 {
                        sqlx::query(concat!(
                            "INSERT INTO webhook_attempts ",
                            keep_latest!(),
                            " WHERE seq = $1 AND lease_token = $2 AND state = 'pending' \
                             AND last_started_at IS NOT NULL ON CONFLICT DO NOTHING"
                        ))
                        .bind(o.seq)
                        .bind(o.lease_token)
                        .execute(&mut *tx)
                        .await?;
                    }
                    let n = update.execute(&mut *tx).await?.rows_affected();
                    if n == 0 {
                        continue;
                    }
                    applied.push(o);
                }
                for (sub, c) in counter_changes(&applied) {
                    sqlx::query(
                        "UPDATE webhooks SET \
                         failures = CASE WHEN $2 = 1 THEN $3 ELSE failures + $3 END, \
                         last_fired_at = COALESCE($4, last_fired_at) WHERE id = $1",
                    )
                    .bind(&sub)
                    .bind(i64::from(c.reset))
                    .bind(c.add)
                    .bind(c.fired)
                    .execute(&mut *tx)
                    .await?;
                    if c.add == 0 && !c.gone {
                        continue;
                    }
                    let reason = pause_reason(&c, pause_after, now);
                    let n = sqlx::query(
                        "UPDATE webhooks SET active = 0, paused_reason = $2, paused_at = $3 \
                         WHERE id = $1 AND active = 1 AND ($4 = 1 OR failures >= $5)",
                    )
                    .bind(&sub)
                    .bind(&reason)
                    .bind(now.0)
                    .bind(i64::from(c.gone))
                    .bind(pause_after)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if n > 0 {
                        sqlx::query(HOLD)
                            .bind(&sub)
                            .bind(now.0)
                            .execute(&mut *tx)
                            .await?;
                        paused.push((sub, reason));
                    }
                }
                tx.commit().await?;
            }
            Pool::Postgres(pool) => {
                let mut tx = pool.write_tx().await?;
                // The batch's subscriptions first, in one order for every
                // writer (no deadlocks between replicas): a pause or resume
                // in progress finishes before the rows below choose
                // between pending and held, and none starts until this
                // batch commits.
                let mut subs: Vec<&str> = outcomes.iter().map(|o| o.webhook_id.as_str()).collect();
                subs.sort_unstable();
                subs.dedup();
                sqlx::query(
                    "SELECT id FROM webhooks WHERE id = ANY($1::text[]) ORDER BY id \
                     FOR NO KEY UPDATE",
                )
                .bind(&subs)
                .fetch_all(&mut *tx)
                .await?;
                let col_i64 = |f: fn(&AttemptOutcome) -> i64| -> Vec<i64> {
                    outcomes.iter().map(f).collect()
                };
                let seqs = col_i64(|o| o.seq);
                let tokens = col_i64(|o| o.lease_token);
                let attempts = col_i64(|o| o.attempt);
                let states: Vec<&str> = outcomes.iter().map(|o| state_of(o.next)).collect();
                let next: Vec<i64> = outcomes.iter().map(|o| next_at(o, now)).collect();
                let statuses: Vec<Option<i64>> =
                    outcomes.iter().map(|o| o.status.map(i64::from)).collect();
                let errors: Vec<&str> = outcomes.iter().map(|o| o.error.as_str()).collect();
                let finished: Vec<Option<i64>> =
                    outcomes.iter().map(|o| finished_at(o, now)).collect();
                let started = col_i64(|o| o.started_at.0);
                let latency = col_i64(|o| o.latency_ms);
                // Retries: the attempt before, still on the row, moves to
                // the log first (first attempts, nearly all, write no log).
                let retries: Vec<&AttemptOutcome> =
                    outcomes.iter().filter(|o| o.attempt > 1).collect();
                if !retries.is_empty() {
                    let seqs: Vec<i64> = retries.iter().map(|o| o.seq).collect();
                    let tokens: Vec<i64> = retries.iter().map(|o| o.lease_token).collect();
                    sqlx::query(concat!(
                        "INSERT INTO webhook_attempts ",
                        keep_latest!(),
                        " WHERE seq IN (SELECT d.seq FROM webhook_deliveries d \
                         JOIN UNNEST($1::bigint[], $2::bigint[]) AS u(seq, token) \
                         ON d.seq = u.seq AND d.lease_token = u.token \
                         WHERE d.state = 'pending' AND d.last_started_at IS NOT NULL) \
                         ON CONFLICT DO NOTHING"
                    ))
                    .bind(&seqs)
                    .bind(&tokens)
                    .execute(&mut *tx)
                    .await?;
                }
                // The whole batch's rows in one statement: the rate this
                // path sustains is the delivery rate of the platform.
                let done: Vec<i64> = sqlx::query_scalar(concat!(
                    "UPDATE webhook_deliveries d SET state = ",
                    retry_state!("u.state", "d"),
                    ", attempts = u.attempt, \
                     next_attempt_at = u.next_at, lease_until = NULL, lease_token = NULL, \
                     last_status = u.status, last_error = u.error, finished_at = u.finished, \
                     last_started_at = u.started, last_latency_ms = u.latency \
                     FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], \
                     $5::bigint[], $6::bigint[], $7::text[], $8::bigint[], $9::bigint[], \
                     $10::bigint[]) \
                     AS u(seq, token, attempt, state, next_at, status, error, finished, \
                     started, latency) \
                     WHERE d.seq = u.seq AND d.lease_token = u.token AND d.state = 'pending' \
                     RETURNING d.seq"
                ))
                .bind(&seqs)
                .bind(&tokens)
                .bind(&attempts)
                .bind(&states)
                .bind(&next)
                .bind(&statuses)
                .bind(&errors)
                .bind(&finished)
                .bind(&started)
                .bind(&latency)
                .fetch_all(&mut *tx)
                .await?;
                let done: std::collections::HashSet<i64> = done.into_iter().collect();
                let applied: Vec<&AttemptOutcome> =
                    outcomes.iter().filter(|o| done.contains(&o.seq)).collect();
                let changes = counter_changes(&applied);
                if !changes.is_empty() {
                    let ids: Vec<&str> = changes.iter().map(|(k, _)| k.as_str()).collect();
                    let resets: Vec<bool> = changes.iter().map(|(_, c)| c.reset).collect();
                    let adds: Vec<i64> = changes.iter().map(|(_, c)| c.add).collect();
                    let fired: Vec<Option<i64>> = changes.iter().map(|(_, c)| c.fired).collect();
                    sqlx::query(
                        "UPDATE webhooks w SET \
                         failures = CASE WHEN u.reset THEN u.add ELSE w.failures + u.add END, \
                         last_fired_at = COALESCE(u.fired, w.last_fired_at) \
                         FROM UNNEST($1::text[], $2::bool[], $3::bigint[], $4::bigint[]) \
                         AS u(id, reset, add, fired) WHERE w.id = u.id",
                    )
                    .bind(&ids)
                    .bind(&resets)
                    .bind(&adds)
                    .bind(&fired)
                    .execute(&mut *tx)
                    .await?;
                    let failing: Vec<&(String, CounterChange)> = changes
                        .iter()
                        .filter(|(_, c)| c.add > 0 || c.gone)
                        .collect();
                    if !failing.is_empty() {
                        let ids: Vec<&str> = failing.iter().map(|(k, _)| k.as_str()).collect();
                        let gone: Vec<bool> = failing.iter().map(|(_, c)| c.gone).collect();
                        let reasons: Vec<String> = failing
                            .iter()
                            .map(|(_, c)| pause_reason(c, pause_after, now))
                            .collect();
                        let rows: Vec<(String, String)> = sqlx::query_as(
                            "UPDATE webhooks w SET active = 0, paused_reason = u.reason, \
                             paused_at = $4 \
                             FROM UNNEST($1::text[], $2::bool[], $3::text[]) \
                             AS u(id, gone, reason) \
                             WHERE w.id = u.id AND w.active = 1 AND (u.gone OR w.failures >= $5) \
                             RETURNING w.id, w.paused_reason",
                        )
                        .bind(&ids)
                        .bind(&gone)
                        .bind(&reasons)
                        .bind(now.0)
                        .bind(pause_after)
                        .fetch_all(&mut *tx)
                        .await?;
                        for (sub, _) in &rows {
                            sqlx::query(HOLD)
                                .bind(sub)
                                .bind(now.0)
                                .execute(&mut *tx)
                                .await?;
                        }
                        paused.extend(rows);
                    }
                }
                tx.commit().await?;
            }
        }
        paused
            .into_iter()
            .map(|(id, reason)| {
                Ok(Paused {
                    webhook_id: SubscriptionId::parse(&id)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    reason,
                })
            })
            .collect()
    }

    /// Gives back leases a worker will not use (shutting down mid-attempt),
    /// so the next worker re-sends at once (due `now`) instead of after
    /// the lease.
    pub async fn release_leases(&self, leases: &[(i64, i64)], now: UtcMillis) -> Result<()> {
        on_pool!(self, |pool| {
            let mut tx = pool.write_tx().await?;
            for (seq, token) in leases {
                sqlx::query(
                    "UPDATE webhook_deliveries SET lease_until = NULL, lease_token = NULL, \
                     next_attempt_at = $3 \
                     WHERE seq = $1 AND lease_token = $2 AND state = 'pending'",
                )
                .bind(seq)
                .bind(token)
                .bind(now.0)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// The delivery log of one subscription, newest first; None when the
    /// subscription does not exist in the tenant.
    pub async fn list_deliveries(
        &self,
        tenant: &str,
        webhook: &SubscriptionId,
        state: Option<DeliveryState>,
        limit: i64,
        offset: i64,
    ) -> Result<Option<Page<DeliveryRecord>>> {
        let state = state.map(DeliveryState::as_str);
        on_pool!(self, |pool| {
            let exists: Option<String> =
                sqlx::query_scalar("SELECT id FROM webhooks WHERE tenant = $1 AND id = $2")
                    .bind(tenant)
                    .bind(webhook.as_str())
                    .fetch_optional(pool)
                    .await?;
            if exists.is_none() {
                return Ok(None);
            }
            macro_rules! page_filter {
                () => {
                    "d.tenant = $1 AND d.webhook_id = $2 AND ($3 IS NULL OR d.state = $3)"
                };
            }
            let total: i64 = sqlx::query_scalar(concat!(
                "SELECT COUNT(*) FROM webhook_deliveries d WHERE ",
                page_filter!()
            ))
            .bind(tenant)
            .bind(webhook.as_str())
            .bind(state)
            .fetch_one(pool)
            .await?;
            let rows = sqlx::query(concat!(
                "SELECT d.seq, d.id, e.id AS event_id, e.name, e.call_id, d.state, d.attempts, \
                 d.next_attempt_at, d.created_at, d.finished_at, d.last_status, d.last_error, \
                 d.last_started_at, d.last_latency_ms, \
                 d.replay_of FROM webhook_deliveries d \
                 JOIN webhook_events e ON e.seq = d.event_seq WHERE ",
                page_filter!(),
                " ORDER BY d.seq DESC LIMIT $4 OFFSET $5"
            ))
            .bind(tenant)
            .bind(webhook.as_str())
            .bind(state)
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await?;
            let logs = sqlx::query(concat!(
                "SELECT delivery_seq, attempt, started_at, status_code, latency_ms, error \
                 FROM webhook_attempts WHERE delivery_seq IN (SELECT d.seq \
                 FROM webhook_deliveries d WHERE ",
                page_filter!(),
                " ORDER BY d.seq DESC LIMIT $4 OFFSET $5) ORDER BY delivery_seq, attempt"
            ))
            .bind(tenant)
            .bind(webhook.as_str())
            .bind(state)
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await?;
            let mut by_seq: HashMap<i64, Vec<AttemptLog>> = HashMap::new();
            for r in &logs {
                by_seq
                    .entry(col(r, "delivery_seq")?)
                    .or_default()
                    .push(AttemptLog {
                        attempt: col(r, "attempt")?,
                        started_at: ms(r, "started_at")?,
                        status_code: col(r, "status_code")?,
                        latency_ms: col(r, "latency_ms")?,
                        error: col(r, "error")?,
                    });
            }
            let mut items = Vec::with_capacity(rows.len());
            for r in &rows {
                let seq: i64 = col(r, "seq")?;
                let id: String = col(r, "id")?;
                let event_id: String = col(r, "event_id")?;
                let state: String = col(r, "state")?;
                let attempts: i64 = col(r, "attempts")?;
                let last_status: Option<i64> = col(r, "last_status")?;
                let last_error: String = col(r, "last_error")?;
                let mut log = by_seq.remove(&seq).unwrap_or_default();
                // The latest attempt lives on the row (see `keep_latest!`).
                if let Some(started_at) = opt_ms(r, "last_started_at")?
                    && log.last().is_none_or(|l| l.attempt < attempts)
                {
                    let latency_ms: Option<i64> = col(r, "last_latency_ms")?;
                    log.push(AttemptLog {
                        attempt: attempts,
                        started_at,
                        status_code: last_status,
                        latency_ms: latency_ms.unwrap_or(0),
                        error: last_error.clone(),
                    });
                }
                items.push(DeliveryRecord {
                    id: DeliveryId::parse(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    event_id: EventId::parse(&event_id)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    event: col(r, "name")?,
                    call_id: col(r, "call_id")?,
                    state: DeliveryState::parse(&state)
                        .ok_or_else(|| StoreError::Corrupt(format!("delivery state {state}")))?,
                    attempts,
                    next_attempt_at: ms(r, "next_attempt_at")?,
                    created_at: ms(r, "created_at")?,
                    finished_at: opt_ms(r, "finished_at")?,
                    last_status,
                    last_error,
                    replay_of: col(r, "replay_of")?,
                    log,
                });
            }
            Ok(Some(Page { items, total }))
        })
    }

    /// Queues a new delivery (new id, attempts from 1) of a finished
    /// delivery's event to the same subscription.
    pub async fn replay_delivery(
        &self,
        tenant: &str,
        id: &DeliveryId,
        now: UtcMillis,
    ) -> Result<ReplayOutcome> {
        let mut tx = self.begin().await?;
        let found: Option<(i64, String, String, i64)> = on_tx!(tx, |t| {
            sqlx::query_as(
                "SELECT d.event_seq, d.webhook_id, d.state, w.active \
                 FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
                 WHERE d.tenant = $1 AND d.id = $2",
            )
            .bind(tenant)
            .bind(id.as_str())
            .fetch_optional(&mut **t)
            .await?
        });
        let Some((event_seq, webhook_id, state, active)) = found else {
            return Ok(ReplayOutcome::NotFound);
        };
        if state == DeliveryState::Pending.as_str() || state == DeliveryState::Held.as_str() {
            return Ok(ReplayOutcome::StillPending);
        }
        let new_id = new_delivery_id();
        // A replay is out of band: it neither waits for nor holds up the
        // call's live deliveries (no order key).
        tx.insert_deliveries(
            event_seq,
            tenant,
            None,
            &[(webhook_id, active)],
            &[new_id.as_str().to_owned()],
            Some(id.as_str()),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(ReplayOutcome::Queued(new_id))
    }

    /// Housekeeping: deliveries still pending after `cutoff` (held for a
    /// paused subscription that long) are failed as expired; finished
    /// deliveries, their logs, and events without deliveries older than
    /// `cutoff` are deleted. Returns (expired, deleted) delivery counts.
    pub async fn purge_deliveries(&self, cutoff: UtcMillis, now: UtcMillis) -> Result<(u64, u64)> {
        on_pool!(self, |pool| {
            let mut tx = pool.write_tx().await?;
            // The latest attempt's error is about to be overwritten: into
            // the log with it first.
            sqlx::query(concat!(
                "INSERT INTO webhook_attempts ",
                keep_latest!(),
                " WHERE state IN ('pending', 'held') AND created_at < $1 \
                 AND last_started_at IS NOT NULL ON CONFLICT DO NOTHING"
            ))
            .bind(cutoff.0)
            .execute(&mut *tx)
            .await?;
            let expired = sqlx::query(
                "UPDATE webhook_deliveries SET state = 'failed', finished_at = $2, \
                 lease_until = NULL, lease_token = NULL, \
                 last_started_at = NULL, last_latency_ms = NULL, \
                 last_error = 'expired: still undelivered at the end of the retention period' \
                 WHERE state IN ('pending', 'held') AND created_at < $1",
            )
            .bind(cutoff.0)
            .bind(now.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let deleted = sqlx::query(
                "DELETE FROM webhook_deliveries WHERE state IN ('succeeded', 'failed') \
                 AND created_at < $1 \
                 AND (finished_at IS NULL OR finished_at < $1)",
            )
            .bind(cutoff.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query(
                "DELETE FROM webhook_events WHERE created_at < $1 AND NOT EXISTS \
                 (SELECT 1 FROM webhook_deliveries d WHERE d.event_seq = webhook_events.seq)",
            )
            .bind(cutoff.0)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok((expired, deleted))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_the_spec_envelope_in_order() {
        let b = event_body(
            "phone.codeb.io",
            EventName::CallEnded,
            &serde_json::json!({"callId": "vnum0123456789ab", "durationSec": 39}),
            UtcMillis::parse_rfc3339("2026-01-01T12:00:00Z").unwrap(),
        )
        .unwrap();
        assert_eq!(
            b,
            r#"{"event":"call.ended","tenant":"phone.codeb.io","ts":"2026-01-01T12:00:00.000Z","data":{"callId":"vnum0123456789ab","durationSec":39}}"#
        );
    }

    fn outcome(sub: &str, next: NextStep, error: &str) -> AttemptOutcome {
        AttemptOutcome {
            seq: 1,
            lease_token: 1,
            webhook_id: SubscriptionId::parse(sub).unwrap(),
            attempt: 1,
            started_at: UtcMillis(1000),
            status: None,
            latency_ms: 5,
            error: error.into(),
            next,
            gone: false,
        }
    }

    #[test]
    fn counters_count_failures_after_the_last_success() {
        let a = "aaaaaaaaaaaaaaaa";
        let b = "bbbbbbbbbbbbbbbb";
        let os = [
            outcome(a, NextStep::RetryAt(UtcMillis(5)), "HTTP 500"),
            outcome(b, NextStep::Succeeded, ""),
            outcome(a, NextStep::Succeeded, ""),
            outcome(a, NextStep::Failed, "HTTP 502"),
            outcome(a, NextStep::RetryAt(UtcMillis(9)), "timed out"),
        ];
        let refs: Vec<&AttemptOutcome> = os.iter().collect();
        let c = counter_changes(&refs);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].0, a);
        assert!(c[0].1.reset);
        assert_eq!(c[0].1.add, 2);
        assert_eq!(c[0].1.last_error, "timed out");
        assert_eq!(c[0].1.fired, Some(1005));
        assert!(c[1].1.reset && c[1].1.add == 0);
    }

    #[test]
    fn room_per_subscription() {
        let mk = |sub: &str, seq| ClaimedDelivery {
            seq,
            id: DeliveryId::from_random([0; 8]),
            lease_token: 0,
            webhook_id: SubscriptionId::parse(sub).unwrap(),
            event: String::new(),
            body: String::new(),
            attempt: 1,
            url: String::new(),
            secret: String::new(),
            prev_secret: None,
            failures: 0,
        };
        let a = "aaaaaaaaaaaaaaaa";
        let b = "bbbbbbbbbbbbbbbb";
        let rows = vec![mk(a, 1), mk(a, 2), mk(b, 3), mk(a, 4), mk(b, 5)];
        let mut room = Room::new(2);
        room.in_flight = HashMap::from([(SubscriptionId::parse(a).unwrap(), 1)]);
        let kept: Vec<i64> = fit_to_room(rows.clone(), &mut room)
            .iter()
            .map(|c| c.seq)
            .collect();
        assert_eq!(kept, vec![1, 3, 5]);
        // Failing here: one at a time, so a with one out gets none.
        room.failing.insert(SubscriptionId::parse(a).unwrap());
        let kept: Vec<i64> = fit_to_room(rows.clone(), &mut room)
            .iter()
            .map(|c| c.seq)
            .collect();
        assert_eq!(kept, vec![3, 5]);
        // Failing as stored: b's first row only.
        let stored: Vec<ClaimedDelivery> = rows
            .into_iter()
            .map(|mut r| {
                r.failures = 3;
                r
            })
            .collect();
        let mut room = Room::new(2);
        let kept: Vec<i64> = fit_to_room(stored, &mut room)
            .iter()
            .map(|c| c.seq)
            .collect();
        assert_eq!(kept, vec![1, 3]);
        // Marked failing, so the next claim skips both while their one
        // attempt is out.
        assert_eq!(room.failing.len(), 2);
    }
}
