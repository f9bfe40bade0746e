//! Dispatching calls to switch nodes and ending their attempts.
//!
//! A due call (`scheduled` or `ended-failed-retry-pending` whose
//! `next_attempt_at` has come) is *claimed*: it becomes `dispatching` under
//! a lease (`lease_until`, `lease_token`). On PostgreSQL the claim selects
//! rows `FOR UPDATE SKIP LOCKED`, so control planes sharing the database
//! never claim the same call; SQLite has one writer (`BEGIN IMMEDIATE`).
//! The dispatcher records the node it chose *before* `PlaceCall`, so a call
//! left in `dispatching` by a crash (its lease runs out) is claimed again
//! and placed again on the same node with the same call id, which the
//! node's idempotency turns into a no-op if it was placed the first time.
//!
//! Ending an attempt (an `Ended` event, a refused `PlaceCall`, a lost node)
//! goes through one function, which decides the status:
//!
//! | outcome | answered | status |
//! |---|---|---|
//! | `cancelled` | any | `cancelled` |
//! | `no-answer`, `busy`, `failed` | no | `ended-failed-retry-pending` while `retriesLeft` > 0, else `ended-failed-final` |
//! | `failed`, `voicemail` | any | `ended-failed-final` (`voicemail`: a machine took the call; the glossary gives it no retry) |
//! | anything else (`finished`, `far-hangup`, `not-now`, `max-duration`, `transferred-to-vnum`, …) | yes | `ended-success` |
//! | anything else | no | `ended-failed-final` |
//!
//! Only unanswered technical failures and `no-answer`/`busy` are retried: a
//! person who picked up is never rung again by a retry. Each ended attempt
//! records `outbound-ai.finished` (and `transcript.saved` after it when the
//! attempt produced turns) in the same transaction, and an attempt that
//! ends the call for good queues its email there too (`store::emails`).

use codeb_types::{CallId, CallStatus, EventName, UtcMillis};
use serde_json::json;

use super::switch_events::Speaker;
use super::tx::{Ended, StoreTx, TxInner, on_tx};
use super::{Pool, Result, RowExt, Store, StoreError, TranscriptRecord, Turn, col, opt_ms};
use crate::crypto;
use crate::metrics::outcome_label;

/// How long a dispatcher holds a claimed call before another may take it
/// over (it covers a config push and `PlaceCall`, both with deadlines well
/// inside this).
pub const DISPATCH_LEASE_MS: i64 = 60_000;

/// Longest `errorDetail` stored; longer details (engine errors) are cut.
pub(super) const MAX_ERROR_DETAIL: usize = 1024;

/// A claimed call with what `PlaceCall` needs.
#[derive(Debug, Clone)]
pub struct DispatchCall {
    pub call_id: CallId,
    pub tenant: String,
    pub phone: String,
    pub display_name: String,
    pub system_prompt: String,
    pub ai_api_key: String,
    pub model: String,
    pub voice: String,
    pub language: String,
    pub max_seconds: i64,
    pub trunk_id: Option<String>,
    pub attempt: i64,
    /// Set when this is a repeat of an interrupted dispatch: it must go to
    /// this node again.
    pub node_url: Option<String>,
    pub lease_token: i64,
    /// When the attempt was first dispatched.
    pub dispatched_at: Option<UtcMillis>,
    /// When its last PlaceCall was sent (an interrupted dispatch's).
    pub placecall_sent_at: Option<UtcMillis>,
    /// A hangup was asked for while its node could not be reached
    /// (migration 0020): it is to be cancelled, not placed.
    pub hangup_requested: bool,
}

/// What [`Store::defer_dispatch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferral {
    /// The call waits, as before its claim.
    Deferred,
    /// Not deferred: a hangup was asked for meanwhile (its node could not
    /// be reached); the dispatcher cancels it instead.
    HangupRequested,
    /// The claim was lost (cancelled, or taken over).
    Lost,
}

/// The longest a PlaceCall may take to reach the node and be acted on
/// after it is sent (the control plane's own wait for its answer).
const PLACECALL_WAIT_SECONDS: i64 = 10;

/// When an attempt whose last PlaceCall was sent at `sent` (or that was
/// dispatched then) must be over, whatever became of it: its PlaceCall
/// acted on, rung out, talked to its limit (the node's own where none is
/// stored), ended.
fn attempt_latest_end(sent: UtcMillis, max_seconds: i64) -> UtcMillis {
    let talk = match max_seconds {
        s if s > 0 => s,
        _ => 3600,
    };
    sent.plus_ms(
        (PLACECALL_WAIT_SECONDS + PLACED_RING_SECONDS + talk + LOST_END_MARGIN_SECONDS)
            .saturating_mul(1000),
    )
}

impl DispatchCall {
    /// Whether the attempt must be over by `now` whatever became of its
    /// last PlaceCall.
    pub fn surely_over(&self, now: UtcMillis) -> bool {
        self.placecall_sent_at
            .or(self.dispatched_at)
            .is_some_and(|at| now.0 > attempt_latest_end(at, self.max_seconds).0)
    }
}

fn dispatch_from_row(row: &impl RowExt) -> Result<DispatchCall> {
    let id: String = col(row, "call_id")?;
    Ok(DispatchCall {
        call_id: CallId::parse(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        tenant: col(row, "tenant")?,
        phone: col(row, "phone")?,
        display_name: col(row, "display_name")?,
        system_prompt: col(row, "system_prompt")?,
        ai_api_key: col(row, "ai_api_key")?,
        model: col(row, "model")?,
        voice: col(row, "voice")?,
        language: col(row, "language")?,
        max_seconds: col(row, "max_seconds")?,
        trunk_id: col(row, "trunk_id")?,
        attempt: col(row, "attempt")?,
        node_url: col(row, "node_url")?,
        lease_token: col::<Option<i64>>(row, "lease_token")?.unwrap_or_default(),
        dispatched_at: opt_ms(row, "dispatched_at")?,
        placecall_sent_at: opt_ms(row, "placecall_sent_at")?,
        hangup_requested: opt_ms(row, "hangup_requested_at")?.is_some(),
    })
}

/// A call on (or being handed to) a switch, as ending its attempt needs it.
#[derive(Debug, Clone)]
pub struct LiveCall {
    pub call_id: String,
    pub tenant: String,
    pub status: CallStatus,
    pub phone: String,
    pub display_name: String,
    pub requested_by: String,
    pub email: String,
    pub model: String,
    pub voice: String,
    pub language: String,
    pub trunk_id: Option<String>,
    pub node_url: Option<String>,
    pub lease_token: Option<i64>,
    pub attempt: i64,
    pub retries_left: i64,
    pub retry_delay_minutes: i64,
    pub dispatched_at: Option<UtcMillis>,
    pub answered_at: Option<UtcMillis>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    /// The switch process carrying the call ('' until placed, or placed
    /// by a node that does not say).
    pub node_instance: String,
    /// The attempt ended as lost with its node, and that node (see
    /// migration 0015).
    pub lost_attempt: Option<i64>,
    pub lost_node: Option<String>,
    /// The call's talk-time limit (the switch ends it there).
    pub max_seconds: i64,
    /// When the attempt's last PlaceCall was sent (migration 0018).
    pub placecall_sent_at: Option<UtcMillis>,
}

macro_rules! live_columns {
    () => {
        "call_id, tenant, status, phone, display_name, requested_by, email, model, voice, \
         language, trunk_id, node_url, lease_token, attempt, retries_left, retry_delay_minutes, \
         dispatched_at, answered_at, tokens_in, tokens_out, node_instance, lost_attempt, \
         lost_node, max_seconds, placecall_sent_at"
    };
}

pub(super) fn live_from_row(row: &impl RowExt) -> Result<LiveCall> {
    let status: String = col(row, "status")?;
    Ok(LiveCall {
        call_id: col(row, "call_id")?,
        tenant: col(row, "tenant")?,
        status: CallStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("call status {status}")))?,
        phone: col(row, "phone")?,
        display_name: col(row, "display_name")?,
        requested_by: col(row, "requested_by")?,
        email: col(row, "email")?,
        model: col(row, "model")?,
        voice: col(row, "voice")?,
        language: col(row, "language")?,
        trunk_id: col(row, "trunk_id")?,
        node_url: col(row, "node_url")?,
        lease_token: col(row, "lease_token")?,
        attempt: col(row, "attempt")?,
        retries_left: col(row, "retries_left")?,
        retry_delay_minutes: col(row, "retry_delay_minutes")?,
        dispatched_at: opt_ms(row, "dispatched_at")?,
        answered_at: opt_ms(row, "answered_at")?,
        tokens_in: col(row, "tokens_in")?,
        tokens_out: col(row, "tokens_out")?,
        node_instance: col(row, "node_instance")?,
        lost_attempt: col(row, "lost_attempt")?,
        lost_node: col(row, "lost_node")?,
        max_seconds: col(row, "max_seconds")?,
        placecall_sent_at: opt_ms(row, "placecall_sent_at")?,
    })
}

/// How an attempt ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttemptEnd {
    pub outcome: String,
    pub error_detail: String,
    pub answered: bool,
    pub answered_at: Option<UtcMillis>,
    pub ended_at: UtcMillis,
    pub talk_seconds: i64,
    pub duration_seconds: i64,
    pub input_turns: i64,
    pub output_turns: i64,
    /// The final SIP status of the dialling; 0 when answered or unknown.
    pub sip_status: i64,
}

/// `t`, or `floor` when `t` is before it. A node stamps its events with its
/// own clock, which may run a few milliseconds (or, on another host, more)
/// behind the control plane's: a record must still read dispatched ≤
/// answered ≤ ended.
pub(super) fn not_before(t: UtcMillis, floor: Option<UtcMillis>) -> UtcMillis {
    floor.map_or(t, |f| t.max(f))
}

impl AttemptEnd {
    /// This end with its times put in the call's order: answered (`answered`
    /// as recorded, else the end's own) not before `dispatched`, the end not
    /// before the answer or the dispatch.
    pub(super) fn on_timeline(
        &self,
        dispatched: Option<UtcMillis>,
        answered: Option<UtcMillis>,
    ) -> AttemptEnd {
        let mut end = self.clone();
        end.answered_at = answered
            .or(end.answered_at)
            .map(|a| not_before(a, dispatched));
        end.ended_at = not_before(end.ended_at, end.answered_at.or(dispatched));
        end
    }

    /// This end with its turn counts taken from the stored `turns`
    /// (speaker, text, time) when it has none: an end the control plane
    /// made itself (a lost or restarted node) carries no counts from the
    /// node, though the node's turns arrived and were saved.
    pub(super) fn with_turn_counts(&self, turns: &[(String, String, i64)]) -> AttemptEnd {
        let mut end = self.clone();
        if end.input_turns == 0 && end.output_turns == 0 {
            let count = |who: Speaker| {
                let n = turns.iter().filter(|t| t.0 == who.as_str()).count();
                i64::try_from(n).unwrap_or(i64::MAX)
            };
            end.input_turns = count(Speaker::Caller);
            end.output_turns = count(Speaker::Ai);
        }
        end
    }
}

/// When an outbound call's transcript starts: its end less the switch's
/// duration (counted from the INVITE, which in a burst may come seconds
/// after the dispatch), so that start, end and durationSec agree as in the
/// spec's example. The duration is in whole seconds, so the start is kept
/// between the dispatch and the answer (or the end): never before the call
/// was placed, nor after it was answered.
pub(super) fn transcript_start(
    dispatched: Option<UtcMillis>,
    answered: Option<UtcMillis>,
    end: &AttemptEnd,
) -> UtcMillis {
    let latest = answered.unwrap_or(end.ended_at);
    let earliest = dispatched.unwrap_or(latest).min(latest);
    let started = if end.duration_seconds > 0 {
        end.ended_at
            .plus_ms(-end.duration_seconds.saturating_mul(1000))
    } else {
        earliest
    };
    UtcMillis(started.0.clamp(earliest.0, latest.0))
}

/// Whether an attempt that ended this way may be tried again (see the
/// module table).
pub fn retryable_outcome(outcome: &str, answered: bool) -> bool {
    !answered && matches!(outcome, "no-answer" | "busy" | "failed")
}

/// The status an attempt's end leads to, given the retries left.
pub(super) fn status_after(end: &AttemptEnd, retries_left: i64) -> CallStatus {
    match end.outcome.as_str() {
        "cancelled" => CallStatus::Cancelled,
        o if retryable_outcome(o, end.answered) => {
            if retries_left > 0 {
                CallStatus::EndedFailedRetryPending
            } else {
                CallStatus::EndedFailedFinal
            }
        }
        "failed" | "voicemail" => CallStatus::EndedFailedFinal,
        _ if end.answered => CallStatus::EndedSuccess,
        _ => CallStatus::EndedFailedFinal,
    }
}

/// The `outbound-ai.finished` payload of an attempt's end (the spec's
/// shape), with its `outcome` and `errorDetail` as stored.
pub(super) fn finished_data(
    call: &LiveCall,
    end: &AttemptEnd,
    outcome: &str,
    detail: &str,
) -> serde_json::Value {
    json!({
        "callId": call.call_id,
        "phone": call.phone,
        "displayName": call.display_name,
        "outcome": outcome,
        "answered": end.answered,
        "talkSec": end.talk_seconds,
        "trunk": call.trunk_id.clone().unwrap_or_default(),
        "inputTurns": end.input_turns,
        "outputTurns": end.output_turns,
        "errorDetail": detail,
    })
}

/// How long a placed call rings at most (PlaceCall's
/// `ring_timeout_seconds`).
pub const PLACED_RING_SECONDS: i64 = 60;
/// Beyond its ring time and talk limit, how long a lost attempt may still
/// take to end (its BYE, the AI session's close, clocks apart).
const LOST_END_MARGIN_SECONDS: i64 = 30;

/// Whose account ends an attempt ([`Store::finish_attempt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Finish<'a> {
    /// The node's (its `Ended` event), or a dispatch that failed.
    Ended,
    /// The control plane's: the attempt was lost with this node, which
    /// may still carry it (`may_go_on`: unreachable, not restarted).
    Lost { node: &'a str, may_go_on: bool },
    /// The node's, read after the attempt was ended as [`Finish::Lost`]:
    /// it replaces that end (see `store::switch_events`).
    Correction,
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn new_lease_token() -> i64 {
    // Positive, so it never collides with the NULL/0 of an unclaimed row.
    i64::from_le_bytes(crypto::random_bytes::<8>()) & i64::MAX
}

/// What ending a node's calls did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Calls whose attempt ended. Those a node that was only unreachable
    /// may still carry wait for their hangup there (`store::lost_hangups`).
    pub ended: usize,
}

/// Which of a node's calls it lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost<'a> {
    /// Every call: the node has been unreachable too long.
    All,
    /// The calls an earlier process of the node carried: it restarted
    /// and now runs as this instance (calls placed before instances were
    /// recorded, '' here, are left to the first rule).
    CarriedBefore(&'a str),
}

impl Lost<'_> {
    /// Whether a call carried by `instance` is lost.
    pub fn takes(self, instance: &str) -> bool {
        match self {
            Lost::All => true,
            Lost::CarriedBefore(now) => !instance.is_empty() && instance != now,
        }
    }
}

/// What a call's row says of its last attempt's end, cleared once the
/// next attempt is placed (not when it is claimed: one that cannot be
/// placed yet goes back to waiting with the last end still to show).
macro_rules! new_attempt_sql {
    () => {
        "ended_at = NULL, ended_reason = '', error_detail = '', duration_sec = 0, \
         input_turns = 0, output_turns = 0, "
    };
}
pub(super) use new_attempt_sql;

/// The claim: one statement, so a row is either claimed whole or not.
/// A `dispatching` row (an interrupted dispatch) keeps its attempt number,
/// node and dispatch time; a due row starts a new attempt.
macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE calls SET \
             attempt = CASE WHEN status = 'dispatching' THEN attempt ELSE attempt + 1 END, \
             node_url = CASE WHEN status = 'dispatching' THEN node_url ELSE NULL END, \
             node_instance = CASE WHEN status = 'dispatching' THEN node_instance ELSE '' END, \
             dispatched_at = CASE WHEN status = 'dispatching' THEN COALESCE(dispatched_at, $1) \
                 ELSE $1 END, \
             placecall_sent_at = CASE WHEN status = 'dispatching' THEN placecall_sent_at \
                 ELSE NULL END, \
             answered_at = CASE WHEN status = 'dispatching' THEN answered_at ELSE NULL END, \
             status = 'dispatching', lease_until = $2, lease_token = $3, updated_at = $1 \
             WHERE call_id IN (SELECT call_id FROM calls WHERE \
             (($5 IS NULL AND ((status IN ('scheduled', 'ended-failed-retry-pending') \
               AND next_attempt_at <= $1) \
              OR (status = 'dispatching' AND (lease_until IS NULL OR lease_until <= $1)))) \
             OR (call_id = $5 AND status = 'scheduled')) \
             ORDER BY next_attempt_at, call_id LIMIT $4",
            $lock,
            ") RETURNING call_id, tenant, phone, display_name, system_prompt, ai_api_key, model, \
             voice, language, max_seconds, trunk_id, attempt, node_url, lease_token, dispatched_at, \
             placecall_sent_at, hangup_requested_at"
        )
    };
}

impl Store {
    /// Claims up to `limit` calls that are due at `now` (and interrupted
    /// dispatches whose lease ran out), for `DISPATCH_LEASE_MS`.
    pub async fn claim_due_calls(&self, now: UtcMillis, limit: i64) -> Result<Vec<DispatchCall>> {
        self.claim(now, limit, None).await
    }

    /// Claims one `scheduled` call at once, whatever its due time (an
    /// immediate call from the API). None if it is no longer `scheduled`
    /// (the scheduler took it first, or it was cancelled).
    pub async fn claim_call(&self, id: &CallId, now: UtcMillis) -> Result<Option<DispatchCall>> {
        Ok(self.claim(now, 1, Some(id.as_str())).await?.pop())
    }

    async fn claim(
        &self,
        now: UtcMillis,
        limit: i64,
        only: Option<&str>,
    ) -> Result<Vec<DispatchCall>> {
        let token = new_lease_token();
        let lease = now.0.saturating_add(DISPATCH_LEASE_MS);
        let rows = match &self.pool {
            Pool::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let rows = sqlx::query(claim_sql!(""))
                    .bind(now.0)
                    .bind(lease)
                    .bind(token)
                    .bind(limit)
                    .bind(only)
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                rows.iter()
                    .map(dispatch_from_row)
                    .collect::<Result<Vec<_>>>()?
            }
            Pool::Postgres(pool) => {
                let rows = sqlx::query(claim_sql!(" FOR UPDATE SKIP LOCKED"))
                    .bind(now.0)
                    .bind(lease)
                    .bind(token)
                    .bind(limit)
                    .bind(only)
                    .fetch_all(pool)
                    .await?;
                rows.iter()
                    .map(dispatch_from_row)
                    .collect::<Result<Vec<_>>>()?
            }
        };
        Ok(rows)
    }

    /// Records the node (and trunk) a claimed call is being handed to,
    /// before `PlaceCall`. False if the claim was lost (cancelled, or taken
    /// over after the lease ran out).
    pub async fn set_dispatch_node(
        &self,
        call: &DispatchCall,
        node_url: &str,
        trunk_id: Option<&str>,
        now: UtcMillis,
    ) -> Result<bool> {
        super::on_pool!(self, |pool| {
            let res = sqlx::query(
                "UPDATE calls SET node_url = $1, trunk_id = COALESCE($2, trunk_id), updated_at = $3 \
                 WHERE call_id = $4 AND status = 'dispatching' AND lease_token = $5",
            )
            .bind(node_url)
            .bind(trunk_id)
            .bind(now.0)
            .bind(call.call_id.as_str())
            .bind(call.lease_token)
            .execute(pool)
            .await?;
            Ok(res.rows_affected() == 1)
        })
    }

    /// A PlaceCall for the claimed attempt is being sent now: its repeat
    /// stays on this node until the attempt must be over counted from
    /// here ([`DispatchCall::surely_over`]).
    pub async fn placecall_sending(&self, call: &DispatchCall, now: UtcMillis) -> Result<()> {
        super::on_pool!(self, |pool| {
            sqlx::query(
                "UPDATE calls SET placecall_sent_at = $1 \
                 WHERE call_id = $2 AND status = 'dispatching' AND lease_token = $3",
            )
            .bind(now.0)
            .bind(call.call_id.as_str())
            .bind(call.lease_token)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// `PlaceCall` succeeded: the call is `in-flight` (unless events got
    /// there first). `trunk_id` is the node's answer ('' keeps the row's),
    /// `instance` the node process now carrying it.
    pub async fn mark_placed(
        &self,
        call: &DispatchCall,
        trunk_id: &str,
        instance: &str,
        now: UtcMillis,
    ) -> Result<bool> {
        super::on_pool!(self, |pool| {
            let res = sqlx::query(concat!(
                "UPDATE calls SET status = 'in-flight', ",
                new_attempt_sql!(),
                "trunk_id = CASE WHEN $1 = '' THEN trunk_id ELSE $1 END, \
                     node_instance = $5, lease_until = NULL, updated_at = $2 \
                     WHERE call_id = $3 AND status = 'dispatching' AND lease_token = $4"
            ))
            .bind(trunk_id)
            .bind(now.0)
            .bind(call.call_id.as_str())
            .bind(call.lease_token)
            .bind(instance)
            .execute(pool)
            .await?;
            Ok(res.rows_affected() == 1)
        })
    }

    /// A dispatch interrupted before it reached the node was made again,
    /// and the node rang it only now (it was no duplicate): the attempt
    /// was dispatched `at`, not when the first try claimed it (a lease,
    /// a minute, earlier). Never after its answer.
    pub async fn redispatched(
        &self,
        call: &DispatchCall,
        node_url: &str,
        at: UtcMillis,
    ) -> Result<()> {
        super::on_pool!(self, |pool| {
            sqlx::query(
                "UPDATE calls SET dispatched_at = CASE WHEN answered_at IS NOT NULL \
                 AND answered_at < $1 THEN answered_at ELSE $1 END \
                 WHERE call_id = $2 AND attempt = $3 AND node_url = $4",
            )
            .bind(at.0)
            .bind(call.call_id.as_str())
            .bind(call.attempt)
            .bind(node_url)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// The process carrying an attempt that events moved on to in-flight
    /// before [`Store::mark_placed`] could (first answer wins). A row still
    /// `dispatching` is another dispatcher's (its lease ran out), which
    /// records its own.
    pub async fn record_node_instance(
        &self,
        call: &DispatchCall,
        node_url: &str,
        instance: &str,
    ) -> Result<()> {
        super::on_pool!(self, |pool| {
            sqlx::query(
                "UPDATE calls SET node_instance = $1 \
                 WHERE call_id = $2 AND attempt = $3 AND node_url = $4 AND node_instance = '' \
                 AND status = 'in-flight'",
            )
            .bind(instance)
            .bind(call.call_id.as_str())
            .bind(call.attempt)
            .bind(node_url)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// The call could not be placed (no node, or the node refused it): the
    /// attempt ends `failed` with `detail`. Returns the new status, or None
    /// if the claim was lost meanwhile.
    pub async fn dispatch_failed(
        &self,
        call: &DispatchCall,
        detail: &str,
        now: UtcMillis,
    ) -> Result<Option<CallStatus>> {
        let mut tx = self.begin().await?;
        let Some(live) = tx.lock_call(call.call_id.as_str()).await? else {
            return Ok(None);
        };
        if live.status != CallStatus::Dispatching || live.lease_token != Some(call.lease_token) {
            return Ok(None);
        }
        let end = AttemptEnd {
            outcome: "failed".into(),
            error_detail: detail.to_owned(),
            ended_at: now,
            ..AttemptEnd::default()
        };
        let status = self
            .finish_attempt(&mut tx, &live, &end, Finish::Ended, now)
            .await?;
        tx.commit().await?;
        Ok(Some(status))
    }

    /// The node had no room for the call (the trunk's concurrency or
    /// calls-per-second limit, the node's call limit, its media ports):
    /// nothing rang, so the attempt is not spent. The call goes back to
    /// waiting as it was before the claim (`scheduled`, or
    /// `ended-failed-retry-pending` for a retry), due again at `until`
    /// (its `scheduledForUtc`), with `detail` as its errorDetail meanwhile. False if the claim was
    /// lost (cancelled, or taken over).
    pub async fn defer_dispatch(
        &self,
        call: &DispatchCall,
        until: UtcMillis,
        detail: &str,
        now: UtcMillis,
    ) -> Result<Deferral> {
        let detail = cut(detail, MAX_ERROR_DETAIL);
        super::on_pool!(self, |pool| {
            let res = sqlx::query(
                "UPDATE calls SET attempt = attempt - 1, \
                 status = CASE WHEN attempt > 1 THEN 'ended-failed-retry-pending' \
                     ELSE 'scheduled' END, \
                 node_url = NULL, node_instance = '', dispatched_at = NULL, \
                 next_attempt_at = $1, scheduled_for = $1, error_detail = $2, lease_until = NULL, \
                 lease_token = NULL, updated_at = $3 \
                 WHERE call_id = $4 AND status = 'dispatching' AND lease_token = $5 \
                 AND hangup_requested_at IS NULL",
            )
            .bind(until.0)
            .bind(&detail)
            .bind(now.0)
            .bind(call.call_id.as_str())
            .bind(call.lease_token)
            .execute(pool)
            .await?;
            if res.rows_affected() == 1 {
                return Ok(Deferral::Deferred);
            }
            let asked: Option<i64> = sqlx::query_scalar(
                "SELECT hangup_requested_at FROM calls WHERE call_id = $1 \
                 AND status = 'dispatching' AND lease_token = $2",
            )
            .bind(call.call_id.as_str())
            .bind(call.lease_token)
            .fetch_optional(pool)
            .await?
            .flatten();
            Ok(match asked {
                Some(_) => Deferral::HangupRequested,
                None => Deferral::Lost,
            })
        })
    }

    /// Calls this node carries (or is being handed), oldest first.
    pub async fn live_calls_on_node(&self, node_url: &str) -> Result<Vec<LiveCall>> {
        super::on_pool!(self, |pool| {
            let rows = sqlx::query(concat!(
                "SELECT ",
                live_columns!(),
                " FROM calls WHERE node_url = $1 AND status IN ('dispatching', 'in-flight') \
                 ORDER BY dispatched_at, call_id"
            ))
            .bind(node_url)
            .fetch_all(pool)
            .await?;
            rows.iter().map(live_from_row).collect()
        })
    }

    /// Notes that `node_url` was heard from at `at` (kept if later than
    /// what is noted).
    pub async fn note_node_heard(&self, node_url: &str, at: UtcMillis) -> Result<()> {
        super::on_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO switch_nodes_heard (node_url, heard_at) VALUES ($1, $2) \
                 ON CONFLICT (node_url) DO UPDATE SET heard_at = CASE \
                 WHEN excluded.heard_at > switch_nodes_heard.heard_at \
                 THEN excluded.heard_at ELSE switch_nodes_heard.heard_at END",
            )
            .bind(node_url)
            .bind(at.0)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// The nodes that carry live calls (outbound or inbound), are not in
    /// `watched`, and no control plane has noted hearing from since
    /// `cutoff`, with when one last did (none: never); at most `limit` of
    /// them.
    pub async fn nodes_with_calls_beyond(
        &self,
        watched: &[&str],
        cutoff: UtcMillis,
        limit: usize,
    ) -> Result<Vec<(String, Option<UtcMillis>)>> {
        let rows: Vec<(String, Option<i64>)> = super::on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT u.node_url, h.heard_at FROM ( \
                 SELECT DISTINCT node_url FROM calls \
                 WHERE status IN ('dispatching', 'in-flight') AND node_url IS NOT NULL \
                 UNION SELECT DISTINCT node_url FROM inbound_calls WHERE ended_at IS NULL \
                 ) u LEFT JOIN switch_nodes_heard h ON h.node_url = u.node_url \
                 ORDER BY u.node_url",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .filter(|(url, at)| {
                !watched.contains(&url.as_str()) && at.is_none_or(|at| at < cutoff.0)
            })
            .take(limit)
            .map(|(url, at)| (url, at.map(UtcMillis)))
            .collect())
    }

    /// [`Store::sweep_calls_on_node`], counting the calls it ended.
    pub async fn fail_calls_on_node(
        &self,
        node_url: &str,
        lost: Lost<'_>,
        detail: &str,
        now: UtcMillis,
    ) -> Result<usize> {
        Ok(self
            .sweep_calls_on_node(node_url, lost, detail, now, now)
            .await?
            .ended)
    }

    /// Ends the attempts a node lost: each call's attempt ends `failed`
    /// with `detail` (and is retried per its settings), one transaction
    /// per call; inbound calls the node carried end the same way (see
    /// `store::inbound`). Their end is put at `seen` (at most `now`): when
    /// the node was last heard from, which is all that is known of it,
    /// not when its loss was noticed (seconds later).
    pub async fn sweep_calls_on_node(
        &self,
        node_url: &str,
        lost: Lost<'_>,
        detail: &str,
        seen: UtcMillis,
        now: UtcMillis,
    ) -> Result<Swept> {
        let at = UtcMillis(seen.0.min(now.0));
        let mut ended = 0;
        for call in self.live_calls_on_node(node_url).await? {
            if !lost.takes(&call.node_instance) {
                continue;
            }
            let mut tx = self.begin().await?;
            let Some(live) = tx.lock_call(&call.call_id).await? else {
                continue;
            };
            if !matches!(live.status, CallStatus::Dispatching | CallStatus::InFlight)
                || live.node_url.as_deref() != Some(node_url)
                || !lost.takes(&live.node_instance)
            {
                continue;
            }
            let talk = live.answered_at.map_or(0, |a| at.seconds_since(a));
            let end = AttemptEnd {
                outcome: "failed".into(),
                error_detail: detail.to_owned(),
                answered: live.answered_at.is_some(),
                answered_at: live.answered_at,
                ended_at: at,
                talk_seconds: talk,
                duration_seconds: live.dispatched_at.map_or(0, |d| at.seconds_since(d)),
                ..AttemptEnd::default()
            };
            let how = Finish::Lost {
                node: node_url,
                may_go_on: matches!(lost, Lost::All),
            };
            self.finish_attempt(&mut tx, &live, &end, how, now).await?;
            tx.commit().await?;
            ended += 1;
        }
        let inbound = self
            .fail_inbound_calls_on_node(node_url, lost, detail, at, now)
            .await?;
        ended += inbound.len();
        Ok(Swept { ended })
    }

    /// A node came back as another process (`instance`): the attempts it
    /// carried before, lost with it while it was unreachable, are over
    /// for certain, so their retries need not wait for them to end (see
    /// [`Finish::Lost`]): each is due its retry delay after the loss.
    /// Returns how many were brought forward.
    pub async fn release_lost_retries(
        &self,
        node_url: &str,
        instance: &str,
        now: UtcMillis,
    ) -> Result<u64> {
        let unit = self.retry_delay_unit_ms;
        super::on_pool!(self, |pool| {
            Ok(sqlx::query(
                "UPDATE calls SET next_attempt_at = ended_at + retry_delay_minutes * $3, \
                 scheduled_for = ended_at + retry_delay_minutes * $3, updated_at = $4 \
                 WHERE lost_node = $1 AND lost_attempt = attempt \
                 AND status = 'ended-failed-retry-pending' \
                 AND node_instance <> '' AND node_instance <> $2 \
                 AND ended_at IS NOT NULL \
                 AND next_attempt_at > ended_at + retry_delay_minutes * $3",
            )
            .bind(node_url)
            .bind(instance)
            .bind(unit)
            .bind(now.0)
            .execute(pool)
            .await?
            .rows_affected())
        })
    }

    /// Ends the current attempt of `call` inside `tx`: status, timings,
    /// retry scheduling, `outbound-ai.finished`, and the transcript (file,
    /// row, `transcript.saved`) when the attempt produced turns.
    pub(super) async fn finish_attempt(
        &self,
        tx: &mut StoreTx,
        call: &LiveCall,
        end: &AttemptEnd,
        how: Finish<'_>,
        now: UtcMillis,
    ) -> Result<CallStatus> {
        let status = status_after(end, call.retries_left);
        let retry = status == CallStatus::EndedFailedRetryPending;
        let retries_left = if retry {
            call.retries_left - 1
        } else {
            call.retries_left
        };
        let delay_ms = call
            .retry_delay_minutes
            .saturating_mul(self.retry_delay_unit_ms);
        // A corrected end's retry waits from when the attempt really
        // ended, not from when the node told of it.
        let retry_from = match how {
            Finish::Correction => UtcMillis(end.ended_at.0.min(now.0)),
            Finish::Ended | Finish::Lost { .. } => now,
        };
        let mut next_attempt_at = retry_from.plus_ms(delay_ms);
        // A node that is only unreachable may still ring the callee, or
        // have them talking to the AI: the retry waits until that attempt
        // must have ended (the node ends it by its ring time and talk
        // limit), so that nobody is called twice at once, and the node's
        // own end, if it comes back, can call the retry off.
        if let Finish::Lost {
            may_go_on: true, ..
        } = how
            && let Some(sent) = call.placecall_sent_at.or(call.dispatched_at)
        {
            let latest_end = attempt_latest_end(sent, call.max_seconds);
            next_attempt_at = UtcMillis(next_attempt_at.0.max(latest_end.0));
        }
        let next_attempt_at = retry.then_some(next_attempt_at.0);
        // The answer time recorded from the Answered event stands.
        let end = &end.on_timeline(call.dispatched_at, call.answered_at);
        let answered_at = end.answered_at;
        let detail = cut(&end.error_detail, MAX_ERROR_DETAIL);
        let outcome = cut(&end.outcome, 64);
        // A correction's attempt was counted when it was ended as lost.
        tx.ends(match how {
            Finish::Correction => Ended::Correction {
                inbound: false,
                outcome: outcome_label(&outcome),
            },
            Finish::Ended | Finish::Lost { .. } => Ended::Attempt(status, outcome_label(&outcome)),
        });
        let turns = tx.attempt_turns(&call.call_id, call.attempt).await?;
        let counted = end.with_turn_counts(&turns);
        let end = &counted;
        let transcript = if turns.is_empty() {
            None
        } else {
            // The switch counts the duration from its INVITE: the
            // transcript starts that long before its end, so that its
            // start, end and durationSec agree (in a burst the dispatch
            // may come seconds before the INVITE).
            let started = transcript_start(call.dispatched_at, answered_at, end);
            let base = answered_at.unwrap_or(started);
            let record = TranscriptRecord {
                call_id: call.call_id.clone(),
                tenant: call.tenant.clone(),
                caller_source: "outbound-ai".into(),
                started_at: started,
                answered_at,
                ended_at: Some(end.ended_at),
                duration_sec: end.duration_seconds,
                rule: format!("outbound: {} ({})", call.phone, call.display_name),
                phone: Some(call.phone.clone()),
                display_name: Some(call.display_name.clone()),
                requested_by: Some(call.requested_by.clone()),
                email: Some(call.email.clone()),
                outcome: outcome.clone(),
                voice: Some(call.voice.clone()),
                language: Some(call.language.clone()),
                model: Some(call.model.clone()),
                trunk_id: call.trunk_id.clone(),
                answered: Some(end.answered),
                error_detail: Some(detail.clone()),
                tokens_total: call.tokens_in.saturating_add(call.tokens_out),
                tokens_prompt: Some(call.tokens_in),
                input_turns: end.input_turns,
                output_turns: end.output_turns,
                source: Some("tenant".into()),
                turns: turns
                    .into_iter()
                    .map(|(speaker, text, at_ms)| Turn {
                        speaker,
                        text,
                        ts: base.plus_ms(at_ms),
                    })
                    .collect(),
                ..TranscriptRecord::default()
            };
            // A correction's transcript replaces the one the loss wrote,
            // whose file name (from its start time) may differ.
            let earlier = match how {
                Finish::Correction => tx.call_transcript_path(&call.call_id).await?,
                Finish::Ended | Finish::Lost { .. } => None,
            };
            let record = self.write_transcript_file(record, now).await?;
            tx.insert_transcript_row(&record).await?;
            if let Some(old) = earlier.filter(|old| !old.is_empty() && *old != record.file) {
                tx.remove_after_commit(self.transcripts_dir().join(&old));
            }
            Some(record)
        };
        let transcript_path = transcript.as_ref().map(|t| t.file.clone());
        let lost_node = match how {
            Finish::Lost { node, .. } => Some(node),
            Finish::Ended | Finish::Correction => None,
        };
        macro_rules! update {
            ($t:expr) => {
                sqlx::query(
                    "UPDATE calls SET status = $1, ended_at = $2, ended_reason = $3, \
                     error_detail = $4, duration_sec = $5, answered_at = $6, retries_left = $7, \
                     next_attempt_at = $8, input_turns = $9, output_turns = $10, \
                     scheduled_for = CASE WHEN $12 = 1 THEN $8 ELSE scheduled_for END, \
                     transcript_path = COALESCE($11, transcript_path), \
                     node_url = CASE WHEN $12 = 1 THEN NULL ELSE node_url END, \
                     lost_attempt = CASE WHEN $15 IS NULL THEN NULL ELSE attempt END, \
                     lost_node = $15, lost_hangup_at = NULL, \
                     lease_until = NULL, lease_token = NULL, updated_at = $13 \
                     WHERE call_id = $14",
                )
                .bind(status.as_str())
                .bind(end.ended_at.0)
                .bind(&outcome)
                .bind(&detail)
                .bind(end.talk_seconds)
                .bind(answered_at.map(|t| t.0))
                .bind(retries_left)
                .bind(next_attempt_at)
                .bind(end.input_turns)
                .bind(end.output_turns)
                .bind(transcript_path.as_deref())
                .bind(i64::from(retry))
                .bind(now.0)
                .bind(&call.call_id)
                .bind(lost_node)
                .execute(&mut **$t)
                .await?
            };
        }
        match &mut tx.inner {
            TxInner::Sqlite(t) => {
                update!(t);
            }
            TxInner::Postgres(t) => {
                update!(t);
            }
        }
        // A correction says so, beside the spec's fields.
        let corrected = |mut data: serde_json::Value| {
            if how == Finish::Correction {
                data["corrected"] = json!(true);
            }
            data
        };
        tx.record_event(
            &call.tenant,
            EventName::OutboundAiFinished,
            corrected(finished_data(call, end, &outcome, &detail)),
            Some(&call.call_id),
            now,
        )
        .await?;
        if let Some(t) = &transcript {
            let data = corrected(json!({
                "callId": call.call_id,
                "phone": call.phone,
                "displayName": call.display_name,
                "file": t.file,
                "outcome": t.outcome,
                "source": "outbound-ai",
            }));
            tx.record_event(
                &call.tenant,
                EventName::TranscriptSaved,
                data,
                Some(&call.call_id),
                now,
            )
            .await?;
        }
        // The transcript + outcome email, with this very transcript, in
        // the same transaction (see `store::emails`).
        let ending = super::emails::CallEnd {
            status,
            outcome: &outcome,
            detail: &detail,
            end,
            answered_at,
            transcript: transcript.as_ref(),
        };
        // A correction replaces an email only where the loss queued one:
        // it made the call's end final (a retry-pending loss sent none).
        let replaces = how == Finish::Correction && call.status.is_terminal();
        tx.queue_call_email(call, &ending, replaces, now).await?;
        tracing::info!(call = %call.call_id, attempt = call.attempt, status = %status,
            outcome = %end.outcome, detail = %detail, "call attempt ended");
        Ok(status)
    }
}

impl StoreTx {
    /// The transcript file a call's row names, if any.
    pub(super) async fn call_transcript_path(&mut self, call_id: &str) -> Result<Option<String>> {
        Ok(on_tx!(self, |t| {
            sqlx::query_scalar::<_, String>("SELECT transcript_path FROM calls WHERE call_id = $1")
                .bind(call_id)
                .fetch_optional(&mut **t)
                .await?
        }))
    }

    /// The call row, locked for this transaction (`FOR UPDATE` on
    /// PostgreSQL; SQLite's write transaction already excludes others).
    pub(super) async fn lock_call(&mut self, call_id: &str) -> Result<Option<LiveCall>> {
        let row = match &mut self.inner {
            TxInner::Sqlite(t) => sqlx::query(concat!(
                "SELECT ",
                live_columns!(),
                " FROM calls WHERE call_id = $1"
            ))
            .bind(call_id)
            .fetch_optional(&mut **t)
            .await?
            .as_ref()
            .map(live_from_row)
            .transpose()?,
            TxInner::Postgres(t) => sqlx::query(concat!(
                "SELECT ",
                live_columns!(),
                " FROM calls WHERE call_id = $1 FOR UPDATE"
            ))
            .bind(call_id)
            .fetch_optional(&mut **t)
            .await?
            .as_ref()
            .map(live_from_row)
            .transpose()?,
        };
        Ok(row)
    }

    /// The turns of one attempt in the order the switch reported them:
    /// (speaker, text, ms after the answer).
    pub(super) async fn attempt_turns(
        &mut self,
        call_id: &str,
        attempt: i64,
    ) -> Result<Vec<(String, String, i64)>> {
        super::tx::on_tx!(self, |t| {
            let rows = sqlx::query(
                "SELECT speaker, text, at_ms FROM call_turns WHERE call_id = $1 AND attempt = $2 \
                 ORDER BY journal_id, seq",
            )
            .bind(call_id)
            .bind(attempt)
            .fetch_all(&mut **t)
            .await?;
            rows.iter()
                .map(|r| Ok((col(r, "speaker")?, col(r, "text")?, col(r, "at_ms")?)))
                .collect()
        })
    }
}

#[cfg(test)]
#[path = "dispatch_tests.rs"]
mod tests;
