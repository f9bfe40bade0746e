//! The claim: which due deliveries a worker takes next, under a lease.
//!
//! One statement picks them, on both backends the same way:
//! - `due`: the oldest claimable rows (due, not leased, not waiting behind
//!   an earlier pending delivery of the same call to the same
//!   subscription), from the pending index in due order, at most `limit`,
//!   skipping subscriptions already at their cap;
//! - `fits`: of those, per subscription only as many as its cap leaves
//!   room for (a window over the few rows read, not over the backlog), so
//!   a subscription with a backlog no longer costs a claim `limit` locked
//!   rows to keep the few that fit;
//! - `more`: when `due` was full and the cap dropped rows from it (one
//!   subscription's backlog filled the window), the head of the queue of
//!   every other active subscription, through the per-subscription index,
//!   so a subscription behind someone else's backlog goes out on this
//!   claim rather than after that backlog drains;
//! - the oldest `limit` of those.
//!
//! On PostgreSQL the same statement then locks the picked rows `FOR UPDATE
//! SKIP LOCKED` (a row another replica is claiming right now is passed
//! over, never claimed twice), holds those of a subscription found paused
//! (see the module docs of `outbox`), and leases the rest: one round trip
//! besides the transaction's begin and commit. SQLite has one writer at a
//! time; there the picked rows are read, then held or leased.

use std::collections::HashMap;

use codeb_types::{DeliveryId, SubscriptionId, UtcMillis};

use super::super::{Pool, Result, RowExt, Store, StoreError, WritePool, col, flag, opt_ms};
use super::ClaimedDelivery;
use crate::crypto;

/// A row of `$a` is claimable at `$1`.
macro_rules! claimable {
    ($a:literal) => {
        concat!(
            $a,
            ".state = 'pending' AND ",
            $a,
            ".next_attempt_at <= $1 AND (",
            $a,
            ".lease_until IS NULL OR ",
            $a,
            ".lease_until <= $1) AND (",
            $a,
            ".order_key IS NULL OR NOT EXISTS (SELECT 1 FROM webhook_deliveries p \
             WHERE p.state = 'pending' AND p.webhook_id = ",
            $a,
            ".webhook_id AND p.order_key = ",
            $a,
            ".order_key AND p.seq < ",
            $a,
            ".seq))"
        )
    };
}

/// The CTEs up to `picked` (the seqs to claim). Parameters: `$1` now, `$2`
/// limit, `$3` subscriptions at their cap, `$4`/`$5` subscriptions with
/// attempts in flight and how many, `$6` the cap. `$full_d`/`$full_w`
/// exclude `$3` from deliveries `d` / subscriptions `w`; `$busy` is the
/// table `b(webhook_id, n)` of `$4`/`$5`.
macro_rules! picked {
    ($full_d:literal, $full_w:literal, $busy:literal) => {
        concat!(
            "WITH due AS MATERIALIZED (SELECT d.seq, d.webhook_id, d.next_attempt_at \
             FROM webhook_deliveries d WHERE ",
            claimable!("d"),
            " AND ",
            $full_d,
            " ORDER BY d.next_attempt_at, d.seq LIMIT $2), \
             fits AS MATERIALIZED (SELECT r.seq FROM (SELECT due.seq, \
             row_number() OVER (PARTITION BY due.webhook_id \
             ORDER BY due.next_attempt_at, due.seq) + COALESCE(b.n, 0) AS nth \
             FROM due LEFT JOIN ",
            $busy,
            " ON b.webhook_id = due.webhook_id) r WHERE r.nth <= $6), \
             more AS (SELECT (SELECT q.seq FROM webhook_deliveries q \
             WHERE q.webhook_id = w.id AND ",
            claimable!("q"),
            " ORDER BY q.next_attempt_at, q.seq LIMIT 1) AS seq FROM webhooks w \
             WHERE (SELECT COUNT(*) FROM due) = $2 AND (SELECT COUNT(*) FROM fits) < $2 \
             AND w.active = 1 AND ",
            $full_w,
            " AND w.id NOT IN (SELECT webhook_id FROM due)), \
             picked AS (SELECT u.seq FROM (SELECT seq FROM fits UNION ALL \
             SELECT seq FROM more WHERE seq IS NOT NULL) u \
             JOIN webhook_deliveries o ON o.seq = u.seq \
             ORDER BY o.next_attempt_at, o.seq LIMIT $2)"
        )
    };
}

const SQLITE_CLAIM: &str = concat!(
    picked!(
        "d.webhook_id NOT IN (SELECT value FROM json_each($3))",
        "w.id NOT IN (SELECT value FROM json_each($3))",
        "(SELECT i.value AS webhook_id, json_extract($5, '$[' || i.key || ']') AS n \
         FROM json_each($4) i) b"
    ),
    " SELECT d.seq, d.id, d.webhook_id, d.attempts, d.next_attempt_at, d.order_key, e.name, e.body, \
     w.url, w.secret, w.prev_secret, w.prev_secret_until, w.active \
     FROM picked JOIN webhook_deliveries d ON d.seq = picked.seq \
     JOIN webhooks w ON w.id = d.webhook_id \
     JOIN webhook_events e ON e.seq = d.event_seq \
     ORDER BY d.next_attempt_at, d.seq"
);

/// `$7` lease until, `$8` lease token. Rows of a subscription paused by
/// this statement's snapshot are held only under a share lock on a
/// subscription still paused, so a resume cannot miss them; one being
/// changed right now is skipped (neither leased nor held) and looked at
/// again by the next claim. The rows returned are the leased ones.
const POSTGRES_CLAIM: &str = concat!(
    picked!(
        "d.webhook_id <> ALL($3::text[])",
        "w.id <> ALL($3::text[])",
        "UNNEST($4::text[], $5::bigint[]) AS b(webhook_id, n)"
    ),
    ", locked AS MATERIALIZED (SELECT d.seq, d.webhook_id FROM webhook_deliveries d \
     WHERE d.seq IN (SELECT seq FROM picked) AND d.state = 'pending' \
     AND (d.lease_until IS NULL OR d.lease_until <= $1) FOR UPDATE SKIP LOCKED), \
     held AS (UPDATE webhook_deliveries h SET state = 'held' FROM locked l \
     WHERE h.seq = l.seq AND l.webhook_id IN (SELECT w.id FROM webhooks w \
     WHERE w.id IN (SELECT webhook_id FROM locked) AND w.active = 0 \
     FOR SHARE SKIP LOCKED)) \
     UPDATE webhook_deliveries d SET lease_until = $7, lease_token = $8 \
     FROM locked l, webhooks w, webhook_events e \
     WHERE d.seq = l.seq AND w.id = l.webhook_id AND w.active = 1 AND e.seq = d.event_seq \
     RETURNING d.seq, d.id, d.webhook_id, d.attempts, d.next_attempt_at, d.order_key, e.name, e.body, \
     w.url, w.secret, w.prev_secret, w.prev_secret_until"
);

/// A claimed row and its due time (the claim's order).
fn claimed_from_row(
    row: &impl RowExt,
    token: i64,
    now: UtcMillis,
) -> Result<(i64, ClaimedDelivery)> {
    let id: String = col(row, "id")?;
    let webhook_id: String = col(row, "webhook_id")?;
    let prev_secret: String = col(row, "prev_secret")?;
    let prev_until = opt_ms(row, "prev_secret_until")?;
    let attempts: i64 = col(row, "attempts")?;
    let due: i64 = col(row, "next_attempt_at")?;
    let order_key: Option<String> = col(row, "order_key")?;
    Ok((
        due,
        ClaimedDelivery {
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
            ordered: order_key.is_some(),
        },
    ))
}

/// The subscriptions at their cap, and those with attempts in flight
/// (ids, counts).
fn busy_lists(
    in_flight: &HashMap<SubscriptionId, usize>,
    per_subscription: usize,
) -> (Vec<String>, Vec<String>, Vec<i64>) {
    let mut full = Vec::new();
    let mut ids = Vec::with_capacity(in_flight.len());
    let mut counts = Vec::with_capacity(in_flight.len());
    for (sub, n) in in_flight {
        if *n == 0 {
            continue;
        }
        if *n >= per_subscription {
            full.push(sub.as_str().to_owned());
        }
        ids.push(sub.as_str().to_owned());
        counts.push(i64::try_from(*n).unwrap_or(i64::MAX));
    }
    (full, ids, counts)
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("claim parameter: {e}")))
}

impl Store {
    /// Claims up to `limit` due deliveries for `lease_ms`, at most
    /// `per_subscription` in flight per subscription counting `in_flight`
    /// (this worker's running attempts), in due order.
    pub async fn claim_deliveries(
        &self,
        now: UtcMillis,
        lease_ms: i64,
        limit: i64,
        in_flight: &HashMap<SubscriptionId, usize>,
        per_subscription: usize,
    ) -> Result<Vec<ClaimedDelivery>> {
        let (full, busy_ids, busy_counts) = busy_lists(in_flight, per_subscription);
        let cap = i64::try_from(per_subscription).unwrap_or(i64::MAX);
        let token = i64::from_be_bytes(crypto::random_bytes::<8>());
        let until = now.0.saturating_add(lease_ms);
        let mut claimed = match &self.pool {
            Pool::Sqlite(pool) => {
                let mut tx = pool.write_tx().await?;
                let rows = sqlx::query(SQLITE_CLAIM)
                    .bind(now.0)
                    .bind(limit)
                    .bind(json(&full)?)
                    .bind(json(&busy_ids)?)
                    .bind(json(&busy_counts)?)
                    .bind(cap)
                    .fetch_all(&mut *tx)
                    .await?;
                let mut live = Vec::with_capacity(rows.len());
                let mut paused = Vec::new();
                for r in &rows {
                    let c = claimed_from_row(r, token, now)?;
                    // One writer at a time: `active` cannot change under us.
                    if flag(r, "active")? {
                        live.push(c);
                    } else {
                        paused.push(c.1.seq);
                    }
                }
                if !paused.is_empty() {
                    sqlx::query(
                        "UPDATE webhook_deliveries SET state = 'held' \
                         WHERE seq IN (SELECT value FROM json_each($1))",
                    )
                    .bind(json(&paused)?)
                    .execute(&mut *tx)
                    .await?;
                }
                if !live.is_empty() {
                    let seqs: Vec<i64> = live.iter().map(|(_, c)| c.seq).collect();
                    sqlx::query(
                        "UPDATE webhook_deliveries SET lease_until = $1, lease_token = $2 \
                         WHERE seq IN (SELECT value FROM json_each($3))",
                    )
                    .bind(until)
                    .bind(token)
                    .bind(json(&seqs)?)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                live
            }
            Pool::Postgres(pool) => {
                // The due rows must come from the pending index in its
                // order, stopping at the limit. After a burst of events,
                // before autovacuum has analysed the table, the planner
                // believes few rows are due and picks a bitmap scan that
                // reads and sorts every due row instead (measured: 0.9 s
                // per claim with 100k due, against 14 ms). Set in the
                // same round trip as BEGIN.
                let mut tx = pool
                    .begin_with("BEGIN; SET LOCAL enable_bitmapscan = off")
                    .await?;
                let rows = sqlx::query(POSTGRES_CLAIM)
                    .bind(now.0)
                    .bind(limit)
                    .bind(&full)
                    .bind(&busy_ids)
                    .bind(&busy_counts)
                    .bind(cap)
                    .bind(until)
                    .bind(token)
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                rows.iter()
                    .map(|r| claimed_from_row(r, token, now))
                    .collect::<Result<Vec<_>>>()?
            }
        };
        claimed.sort_unstable_by_key(|(due, c)| (*due, c.seq));
        Ok(claimed.into_iter().map(|(_, c)| c).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_lists_split_full_from_busy() {
        let a = SubscriptionId::parse("aaaaaaaaaaaaaaaa").unwrap();
        let b = SubscriptionId::parse("bbbbbbbbbbbbbbbb").unwrap();
        let c = SubscriptionId::parse("cccccccccccccccc").unwrap();
        let m = HashMap::from([(a, 16), (b, 3), (c, 0)]);
        let (full, mut ids, counts) = busy_lists(&m, 16);
        assert_eq!(full, ["aaaaaaaaaaaaaaaa"]);
        assert_eq!(counts.iter().sum::<i64>(), 19);
        ids.sort();
        assert_eq!(ids, ["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"]);
    }
}
