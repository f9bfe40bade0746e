//! Applying a switch node's events. Each event is applied in one
//! transaction with the node's cursor (`switch_cursors`) and the webhook
//! events it causes, so after a crash an event is either wholly applied
//! (and its seq is at or below the cursor, so a resend is skipped) or not
//! at all (and the resend applies it). Nothing here reads the clock; `now`
//! is passed in.
//!
//! An event only touches a call that this node carries in its current
//! attempt (`node_url` matches, status `dispatching` or `in-flight`);
//! anything else (a call already ended, or moved to another node after this
//! one was declared lost) is logged and skipped, and the cursor still moves.
//! Inbound calls to virtual numbers (`vnum…` ids, created by their
//! `InboundCall` event) follow the same rule with their own record: see
//! `store::inbound`.

use codeb_types::{CallStatus, EventName, UtcMillis};
use serde_json::json;

use super::dispatch::{AttemptEnd, Finish, LiveCall, cut, not_before};
use super::tx::{StoreTx, TxInner, on_tx};
use super::{Result, Store, col};

/// Bounds on what a node may send (beyond them the value is cut or the
/// turn dropped, with a log line).
pub const MAX_TURN_TEXT: usize = 16 * 1024;
pub const MAX_TURNS_PER_ATTEMPT: i64 = 10_000;

/// Who spoke a transcript turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    Ai,
    Caller,
}

impl Speaker {
    /// As the v1 spec's transcripts spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Speaker::Ai => "AI",
            Speaker::Caller => "Caller",
        }
    }
}

/// What happened, already checked and bounded by the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Answered {
        trunk_id: String,
        answer_ms: i64,
    },
    Started,
    Transferred {
        to_user: String,
        to_phone: String,
        trunk_id: String,
        transfer_type: String,
    },
    Ended(AttemptEnd),
    Turn {
        speaker: Speaker,
        text: String,
        at_ms: i64,
    },
    /// Token counts to add to the call's totals.
    Usage {
        input: i64,
        output: i64,
    },
    /// An inbound call reached a virtual number (the first event of a
    /// call whose id the node assigned; see `store::inbound`).
    Inbound(InboundStart),
    /// Something this control plane does not act on (yet): the name, for
    /// the log.
    Ignored(&'static str),
}

/// What a node reports about a new inbound call, checked and bounded by
/// the link: `virtual_number` is a valid number, the caller-controlled
/// `did` and `from_number` are cut to `MAX_INBOUND_FIELD` bytes with control
/// characters replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundStart {
    pub did: String,
    pub from_number: String,
    pub virtual_number: String,
    pub trunk_id: Option<String>,
    /// The node process carrying the call ('' from a node that does not
    /// say).
    pub instance: String,
}

/// Longest DID, caller number or trunk id kept from an inbound call.
pub const MAX_INBOUND_FIELD: usize = 64;

/// One event of a node's journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchEvent {
    pub journal_id: String,
    pub seq: i64,
    pub at: UtcMillis,
    pub call_id: String,
    /// The call's attempt the event belongs to; 0 when the node did not
    /// say.
    pub attempt: i64,
    pub tenant: String,
    pub kind: EventKind,
}

/// Where a node's stream resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub journal_id: String,
    pub last_seq: i64,
}

/// What applying an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Its effects and the cursor move were committed.
    Applied,
    /// Committed the cursor move only (call unknown, ended, or elsewhere).
    Skipped(String),
    /// At or below the cursor: applied before; nothing changed.
    Duplicate,
    /// From another journal than the cursor's: nothing changed.
    WrongJournal,
}

/// The outcome of the hangup the control plane sends a node that comes
/// back still carrying calls it ended as lost: their `Ended` then
/// corrects their times, not why they ended.
pub const LOST_HANGUP_OUTCOME: &str = "lost";

impl Store {
    /// The stored cursor of a node, if it ever had one.
    pub async fn switch_cursor(&self, node_url: &str) -> Result<Option<Cursor>> {
        super::on_pool!(self, |pool| {
            let row =
                sqlx::query("SELECT journal_id, last_seq FROM switch_cursors WHERE node_url = $1")
                    .bind(node_url)
                    .fetch_optional(pool)
                    .await?;
            row.map(|r| {
                Ok(Cursor {
                    journal_id: col(&r, "journal_id")?,
                    last_seq: col(&r, "last_seq")?,
                })
            })
            .transpose()
        })
    }

    /// Points a node's cursor at the start of a journal (first contact, or
    /// the node lost its journal and started a new one), unless it is at
    /// that journal already: another control plane sharing the database may
    /// have reset it and applied events since this one last read it, and
    /// starting over would apply those again. Read the cursor after.
    pub async fn reset_switch_cursor(
        &self,
        node_url: &str,
        journal_id: &str,
        now: UtcMillis,
    ) -> Result<()> {
        super::on_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO switch_cursors (node_url, journal_id, last_seq, updated_at) \
                 VALUES ($1, $2, 0, $3) ON CONFLICT (node_url) DO UPDATE SET \
                 journal_id = excluded.journal_id, last_seq = 0, updated_at = excluded.updated_at \
                 WHERE switch_cursors.journal_id <> excluded.journal_id",
            )
            .bind(node_url)
            .bind(journal_id)
            .bind(now.0)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Applies one event of `node_url`'s journal (see the module docs).
    pub async fn apply_switch_event(
        &self,
        node_url: &str,
        ev: &SwitchEvent,
        now: UtcMillis,
    ) -> Result<Applied> {
        let mut tx = self.begin().await?;
        let cursor = tx.lock_cursor(node_url).await?;
        match cursor {
            Some(c) if c.journal_id != ev.journal_id => return Ok(Applied::WrongJournal),
            Some(c) if ev.seq <= c.last_seq => return Ok(Applied::Duplicate),
            None => return Ok(Applied::WrongJournal),
            Some(c) if ev.seq != c.last_seq + 1 => {
                tracing::error!(node = %node_url, journal = %ev.journal_id, after = c.last_seq,
                    seq = ev.seq, "switch journal has a gap: events in between are lost");
            }
            Some(_) => {}
        }
        let outcome = self.apply_effects(&mut tx, node_url, ev, now).await?;
        on_tx!(tx, |t| {
            sqlx::query(
                "UPDATE switch_cursors SET last_seq = $1, updated_at = $2 WHERE node_url = $3",
            )
            .bind(ev.seq)
            .bind(now.0)
            .bind(node_url)
            .execute(&mut **t)
            .await?;
        });
        tx.commit().await?;
        if let Applied::Skipped(why) = &outcome {
            tracing::info!(node = %node_url, seq = ev.seq, call = %ev.call_id, "switch event skipped: {why}");
        }
        Ok(outcome)
    }

    async fn apply_effects(
        &self,
        tx: &mut StoreTx,
        node_url: &str,
        ev: &SwitchEvent,
        now: UtcMillis,
    ) -> Result<Applied> {
        if let EventKind::Ignored(what) = ev.kind {
            return Ok(Applied::Skipped(format!("{what} events are not handled")));
        }
        // Inbound calls have node-assigned `vnum…` ids and their own table;
        // outbound calls are `oac-…`, so the id alone tells them apart.
        if matches!(ev.kind, EventKind::Inbound(_))
            || codeb_types::VnumCallId::parse(&ev.call_id).is_ok()
        {
            return self.apply_inbound_event(tx, node_url, ev, now).await;
        }
        let Some(call) = tx.lock_call(&ev.call_id).await? else {
            return Ok(Applied::Skipped("no such call".into()));
        };
        if call.tenant != ev.tenant {
            return Ok(Applied::Skipped(format!(
                "event tenant {} is not the call's",
                ev.tenant
            )));
        }
        // An attempt this control plane ended as lost with its node (cut
        // off or frozen past `CODEB_SWITCH_LOST_AFTER`, while the call went
        // on), whose node now answers again: see `correct_lost_end`.
        let lost = call.lost_attempt == Some(call.attempt)
            && call.lost_node.as_deref() == Some(node_url)
            && (ev.attempt == 0 || ev.attempt == call.attempt)
            && matches!(
                call.status,
                CallStatus::EndedFailedFinal | CallStatus::EndedFailedRetryPending
            );
        if !lost {
            if call.status.is_terminal() {
                return Ok(Applied::Skipped(format!("call is already {}", call.status)));
            }
            if !matches!(call.status, CallStatus::Dispatching | CallStatus::InFlight)
                || call.node_url.as_deref() != Some(node_url)
            {
                return Ok(Applied::Skipped(format!(
                    "call is {} on {} (an earlier attempt's event)",
                    call.status,
                    call.node_url.as_deref().unwrap_or("no node")
                )));
            }
            if ev.attempt > 0 && ev.attempt != call.attempt {
                return Ok(Applied::Skipped(format!(
                    "event of attempt {}; the call is on attempt {}",
                    ev.attempt, call.attempt
                )));
            }
        }
        match &ev.kind {
            // A lost attempt's start is not sent late: its corrected end
            // says it was answered. (Its transfer is: who took the call is
            // news the end does not carry.)
            EventKind::Started if lost => {
                return Ok(Applied::Skipped(
                    "an event of an attempt ended as lost (its end corrects the record)".into(),
                ));
            }
            EventKind::Answered {
                trunk_id,
                answer_ms,
            } => {
                let trunk = (!trunk_id.is_empty())
                    .then_some(trunk_id.as_str())
                    .or(call.trunk_id.as_deref());
                let answered_at = not_before(ev.at, call.dispatched_at).0;
                if lost {
                    // The answer time is kept for the corrected end; the
                    // event itself is not sent late.
                    on_tx!(tx, |t| {
                        sqlx::query(
                            "UPDATE calls SET answered_at = COALESCE(answered_at, $1), \
                             trunk_id = $2, updated_at = $3 WHERE call_id = $4",
                        )
                        .bind(answered_at)
                        .bind(trunk)
                        .bind(now.0)
                        .bind(&call.call_id)
                        .execute(&mut **t)
                        .await?;
                    });
                    return Ok(Applied::Applied);
                }
                on_tx!(tx, |t| {
                    sqlx::query(concat!(
                        "UPDATE calls SET status = 'in-flight', answered_at = $1, ",
                        super::dispatch::new_attempt_sql!(),
                        "trunk_id = $2, lease_until = NULL, updated_at = $3 WHERE call_id = $4"
                    ))
                    .bind(answered_at)
                    .bind(trunk)
                    .bind(now.0)
                    .bind(&call.call_id)
                    .execute(&mut **t)
                    .await?;
                });
                let data = json!({
                    "callId": call.call_id,
                    "phone": call.phone,
                    "displayName": call.display_name,
                    "trunkId": trunk.unwrap_or_default(),
                    "direction": "outbound",
                    "source": "outbound-ai",
                    "answerMs": answer_ms,
                });
                tx.record_event(
                    &call.tenant,
                    EventName::CallAnswered,
                    data,
                    Some(&call.call_id),
                    now,
                )
                .await?;
            }
            EventKind::Started => {
                let data = json!({
                    "callId": call.call_id,
                    "phone": call.phone,
                    "displayName": call.display_name,
                    "direction": "outbound",
                    "source": "outbound-ai",
                });
                tx.record_event(
                    &call.tenant,
                    EventName::CallStarted,
                    data,
                    Some(&call.call_id),
                    now,
                )
                .await?;
            }
            EventKind::Transferred {
                to_user,
                to_phone,
                trunk_id,
                transfer_type,
            } => {
                let mut data = json!({
                    "callId": call.call_id,
                    "fromOutbound": call.call_id,
                    "fromPhone": call.phone,
                    "transferType": transfer_type,
                    "source": "outbound-ai",
                });
                if lost {
                    // After the loss's terminal event, before the
                    // corrected one.
                    data["corrected"] = json!(true);
                }
                for (k, v) in [
                    ("toUser", to_user),
                    ("toPhone", to_phone),
                    ("trunkId", trunk_id),
                ] {
                    if !v.is_empty() {
                        data[k] = json!(v);
                    }
                }
                tx.record_event(
                    &call.tenant,
                    EventName::CallTransferred,
                    data,
                    Some(&call.call_id),
                    now,
                )
                .await?;
            }
            EventKind::Turn {
                speaker,
                text,
                at_ms,
            } => {
                let turn = (*speaker, text.as_str(), *at_ms);
                if let Some(skipped) = tx.add_turn(&call.call_id, call.attempt, ev, turn).await? {
                    return Ok(skipped);
                }
            }
            EventKind::Usage { input, output } => {
                tx.add_usage(Usage::Outbound, &call.call_id, (*input, *output), now)
                    .await?;
            }
            EventKind::Ended(end) if lost => {
                self.correct_lost_end(tx, call, end, now).await?;
            }
            EventKind::Ended(end) => {
                self.finish_attempt(tx, &call, end, Finish::Ended, now)
                    .await?;
            }
            EventKind::Ignored(_) | EventKind::Inbound(_) => {}
        }
        Ok(Applied::Applied)
    }

    /// The end of an attempt ended as lost, from its node. The node's
    /// account is the truth (its turns and usage are already kept): its
    /// end replaces the one made up at the loss (status, outcome, times,
    /// transcript), with `outbound-ai.finished` (and `transcript.saved`)
    /// sent again, marked `"corrected": true`. A retry not yet placed is
    /// called off when the callee was reached after all. An end caused by
    /// the hangup sent when the node came back ([`LOST_HANGUP_OUTCOME`])
    /// keeps the loss's outcome and detail; a user's hangup that reached
    /// the node first (`cancelled`) cancels.
    async fn correct_lost_end(
        &self,
        tx: &mut StoreTx,
        mut call: LiveCall,
        end: &AttemptEnd,
        now: UtcMillis,
    ) -> Result<()> {
        let mut end = end.clone();
        if end.outcome == LOST_HANGUP_OUTCOME {
            let (outcome, detail) = tx.call_end_reason(&call.call_id).await?;
            end.outcome = outcome;
            end.error_detail = detail;
        }
        // The retry the loss took is given back; the real end decides
        // again whether to try once more.
        if call.status == CallStatus::EndedFailedRetryPending {
            call.retries_left += 1;
        }
        let was = call.status;
        let status = self
            .finish_attempt(tx, &call, &end, Finish::Correction, now)
            .await?;
        tracing::warn!(call = %call.call_id, attempt = call.attempt, was = %was,
            now = %status, "the end of an attempt ended as lost arrived from its node; \
            the record is corrected");
        Ok(())
    }
}

/// Which kind of call a node's token usage is added to.
#[derive(Debug, Clone, Copy)]
pub(super) enum Usage {
    Outbound,
    Inbound,
}

impl StoreTx {
    /// Adds a node's token usage (input, output) to a call's counts.
    pub(super) async fn add_usage(
        &mut self,
        kind: Usage,
        call_id: &str,
        (input, output): (i64, i64),
        now: UtcMillis,
    ) -> Result<()> {
        let sql = match kind {
            Usage::Outbound => {
                "UPDATE calls SET tokens_in = tokens_in + $1, \
                 tokens_out = tokens_out + $2, updated_at = $3 WHERE call_id = $4"
            }
            Usage::Inbound => {
                "UPDATE inbound_calls SET tokens_in = tokens_in + $1, \
                 tokens_out = tokens_out + $2, updated_at = $3 WHERE call_id = $4"
            }
        };
        on_tx!(self, |t| {
            sqlx::query(sql)
                .bind(input)
                .bind(output)
                .bind(now.0)
                .bind(call_id)
                .execute(&mut **t)
                .await?;
        });
        Ok(())
    }

    /// The stored outcome and errorDetail of a call.
    async fn call_end_reason(&mut self, call_id: &str) -> Result<(String, String)> {
        Ok(on_tx!(self, |t| {
            let row =
                sqlx::query("SELECT ended_reason, error_detail FROM calls WHERE call_id = $1")
                    .bind(call_id)
                    .fetch_one(&mut **t)
                    .await?;
            (col(&row, "ended_reason")?, col(&row, "error_detail")?)
        }))
    }

    /// The node's cursor row, locked for this transaction.
    async fn lock_cursor(&mut self, node_url: &str) -> Result<Option<Cursor>> {
        let row = match &mut self.inner {
            TxInner::Sqlite(t) => {
                sqlx::query("SELECT journal_id, last_seq FROM switch_cursors WHERE node_url = $1")
                    .bind(node_url)
                    .fetch_optional(&mut **t)
                    .await?
                    .map(|r| cursor_from(&r))
                    .transpose()?
            }
            TxInner::Postgres(t) => sqlx::query(
                "SELECT journal_id, last_seq FROM switch_cursors WHERE node_url = $1 FOR UPDATE",
            )
            .bind(node_url)
            .fetch_optional(&mut **t)
            .await?
            .map(|r| cursor_from(&r))
            .transpose()?,
        };
        Ok(row)
    }

    /// Stores one transcript turn of an attempt (once per event: a
    /// replayed event inserts nothing); Some(skip) past the attempt's turn
    /// limit.
    pub(super) async fn add_turn(
        &mut self,
        call_id: &str,
        attempt: i64,
        ev: &SwitchEvent,
        (speaker, text, at_ms): (Speaker, &str, i64),
    ) -> Result<Option<Applied>> {
        if text.trim().is_empty() {
            return Ok(Some(Applied::Skipped("an empty transcript turn".into())));
        }
        if self.turn_count(call_id, attempt).await? >= MAX_TURNS_PER_ATTEMPT {
            return Ok(Some(Applied::Skipped(format!(
                "more than {MAX_TURNS_PER_ATTEMPT} transcript turns"
            ))));
        }
        let text = cut(text, MAX_TURN_TEXT);
        on_tx!(self, |t| {
            sqlx::query(
                "INSERT INTO call_turns (call_id, attempt, journal_id, seq, speaker, \
                 text, at_ms, interrupted) VALUES ($1, $2, $3, $4, $5, $6, $7, 0) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(call_id)
            .bind(attempt)
            .bind(&ev.journal_id)
            .bind(ev.seq)
            .bind(speaker.as_str())
            .bind(&text)
            .bind(at_ms)
            .execute(&mut **t)
            .await?;
        });
        Ok(None)
    }

    async fn turn_count(&mut self, call_id: &str, attempt: i64) -> Result<i64> {
        on_tx!(self, |t| {
            Ok(sqlx::query_scalar(
                "SELECT COUNT(*) FROM call_turns WHERE call_id = $1 AND attempt = $2",
            )
            .bind(call_id)
            .bind(attempt)
            .fetch_one(&mut **t)
            .await?)
        })
    }
}

fn cursor_from(r: &impl super::RowExt) -> Result<Cursor> {
    Ok(Cursor {
        journal_id: col(r, "journal_id")?,
        last_seq: col(r, "last_seq")?,
    })
}
