//! The calls a node may still carry after this control plane ended them
//! as lost (see migration 0017): a node that was only cut off or frozen
//! goes on with them, and once it answers again each is hung up there, so
//! its far end gets a BYE and its AI stops instead of going on with no
//! record to show for it. Kept in the database, not in memory, so that a
//! control plane restarted meanwhile (or another one sharing the
//! database) still hangs them up.
//!
//! A call is due a hangup while it is ended as lost with its node, that
//! attempt is over here (ended for good, or cancelled during the wait for
//! its retry), and the node has not taken the hangup yet. The node's own
//! end (a correction) clears the loss, and a node known to have restarted
//! ended them itself.

use super::{Result, Store, on_pool};
use codeb_types::UtcMillis;

/// Calls ended longer ago than this are not hung up: nothing runs that
/// long (`maxSeconds` is at most an hour, `maxDurationSec` four).
const HORIZON_MS: i64 = 24 * 3600 * 1000;

impl Store {
    /// Up to `limit` calls (outbound and inbound) ended as lost with
    /// `node_url` that it may still carry and has not been told to hang
    /// up, oldest first.
    pub async fn lost_calls_to_hang_up(
        &self,
        node_url: &str,
        now: UtcMillis,
        limit: i64,
    ) -> Result<Vec<String>> {
        let since = now.plus_ms(-HORIZON_MS).0;
        on_pool!(self, |pool| {
            Ok(sqlx::query_scalar(
                "SELECT call_id FROM ( \
                   SELECT call_id, ended_at FROM calls \
                   WHERE lost_node = $1 AND lost_hangup_at IS NULL \
                   AND lost_attempt = attempt AND ended_at >= $2 \
                   AND status IN ('ended-failed-final', 'cancelled') \
                   UNION ALL \
                   SELECT call_id, ended_at FROM inbound_calls \
                   WHERE node_url = $1 AND lost = 1 AND lost_hangup_at IS NULL \
                   AND ended_at >= $2 \
                 ) AS due ORDER BY ended_at, call_id LIMIT $3",
            )
            .bind(node_url)
            .bind(since)
            .bind(limit)
            .fetch_all(pool)
            .await?)
        })
    }

    /// Records that the node took the hangup of `call_id` (or no longer
    /// knew the call).
    pub async fn lost_call_hung_up(&self, call_id: &str, now: UtcMillis) -> Result<()> {
        let table = if codeb_types::VnumCallId::parse(call_id).is_ok() {
            "UPDATE inbound_calls SET lost_hangup_at = $1 WHERE call_id = $2"
        } else {
            "UPDATE calls SET lost_hangup_at = $1 WHERE call_id = $2"
        };
        on_pool!(self, |pool| {
            sqlx::query(table)
                .bind(now.0)
                .bind(call_id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// `node_url` is now the process `instance`: the calls an earlier
    /// process of it was carrying when they were ended as lost ended with
    /// that process, and are not hung up. Returns how many.
    pub async fn lost_calls_ended_by_restart(
        &self,
        node_url: &str,
        instance: &str,
        now: UtcMillis,
    ) -> Result<u64> {
        let mut n = 0;
        for sql in [
            "UPDATE calls SET lost_hangup_at = $3 \
             WHERE lost_node = $1 AND lost_hangup_at IS NULL \
             AND node_instance <> '' AND node_instance <> $2",
            "UPDATE inbound_calls SET lost_hangup_at = $3 \
             WHERE node_url = $1 AND lost = 1 AND lost_hangup_at IS NULL \
             AND node_instance <> '' AND node_instance <> $2",
        ] {
            n += on_pool!(self, |pool| {
                sqlx::query(sql)
                    .bind(node_url)
                    .bind(instance)
                    .bind(now.0)
                    .execute(pool)
                    .await?
                    .rows_affected()
            });
        }
        Ok(n)
    }
}
