//! The email outbox: each outbound AI call's transcript + outcome email.
//!
//! The row is written by the transaction that records the call's terminal
//! state (`finish_attempt`, or cancelling a call that never reached a
//! switch), so it exists exactly when the end does, with the transcript
//! turns that transaction saved. A retry-pending attempt queues nothing:
//! the email reports how the call finally ended. Which states send one:
//! `ended-success`, `ended-failed-final` and `cancelled` — every way a
//! call stops for good, since the requester asked to hear how it went.
//!
//! The sender (`crate::email`) claims due rows under a lease (PostgreSQL:
//! `FOR UPDATE SKIP LOCKED`, so control planes sharing a database never
//! send one email twice) and records each attempt under the lease token it
//! claimed with. Nothing here touches transcripts: a failed email is a
//! row marked `failed`, never a lost transcript.

use codeb_types::UtcMillis;

use super::tx::{StoreTx, on_tx};
use super::{Page, Pool, Result, RowExt, Store, WritePool, col, ms, on_pool, opt_ms};
use crate::crypto;

/// A queued email's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailState {
    Queued,
    Sent,
    Failed,
}

impl EmailState {
    pub const fn as_str(self) -> &'static str {
        match self {
            EmailState::Queued => "queued",
            EmailState::Sent => "sent",
            EmailState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<EmailState> {
        match s {
            "queued" => Some(EmailState::Queued),
            "sent" => Some(EmailState::Sent),
            "failed" => Some(EmailState::Failed),
            _ => None,
        }
    }
}

/// An email in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailRecord {
    pub id: String,
    pub tenant: String,
    pub call_id: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub state: EmailState,
    pub attempts: i64,
    pub next_attempt_at: UtcMillis,
    pub last_error: String,
    pub created_at: UtcMillis,
    pub finished_at: Option<UtcMillis>,
}

/// An email a sender holds the lease on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedEmail {
    pub seq: i64,
    pub id: String,
    pub call_id: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub created_at: UtcMillis,
    /// The number of this attempt (1-based).
    pub attempt: i64,
    pub lease_token: i64,
}

/// What follows an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailStep {
    Sent,
    RetryAt(UtcMillis),
    Failed,
}

macro_rules! email_columns {
    () => {
        "id, tenant, call_id, recipient, subject, body, state, attempts, next_attempt_at, \
         last_error, created_at, finished_at"
    };
}

fn email_from_row(r: &impl RowExt) -> Result<EmailRecord> {
    let state: String = col(r, "state")?;
    Ok(EmailRecord {
        id: col(r, "id")?,
        tenant: col(r, "tenant")?,
        call_id: col(r, "call_id")?,
        recipient: col(r, "recipient")?,
        subject: col(r, "subject")?,
        body: col(r, "body")?,
        state: EmailState::parse(&state)
            .ok_or_else(|| super::StoreError::Corrupt(format!("email state {state}")))?,
        attempts: col(r, "attempts")?,
        next_attempt_at: ms(r, "next_attempt_at")?,
        last_error: col(r, "last_error")?,
        created_at: ms(r, "created_at")?,
        finished_at: opt_ms(r, "finished_at")?,
    })
}

fn claimed_from_row(r: &impl RowExt, token: i64) -> Result<ClaimedEmail> {
    Ok(ClaimedEmail {
        seq: col(r, "seq")?,
        id: col(r, "id")?,
        call_id: col(r, "call_id")?,
        recipient: col(r, "recipient")?,
        subject: col(r, "subject")?,
        body: col(r, "body")?,
        created_at: ms(r, "created_at")?,
        attempt: col::<i64>(r, "attempts")?.saturating_add(1),
        lease_token: token,
    })
}

macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE email_outbox SET lease_until = $2, lease_token = $3 WHERE seq IN \
             (SELECT seq FROM email_outbox WHERE state = 'queued' AND next_attempt_at <= $1 \
             AND (lease_until IS NULL OR lease_until <= $1) ORDER BY next_attempt_at, seq \
             LIMIT $4",
            $lock,
            ") RETURNING seq, id, call_id, recipient, subject, body, created_at, attempts"
        )
    };
}

/// What a corrected call's email, sent after an earlier one about the
/// same call went out, says first (subject and body).
const CORRECTED_SUBJECT: &str = "Corrected: ";
const CORRECTED_PREAMBLE: &str = "This corrects the earlier email about this call: the \
switch node carrying it was cut off, and the call was recorded as failed until the node \
reported how it really ended.\n\n";

impl StoreTx {
    /// Queues a call's email inside this transaction: once per call (a
    /// second one for the same call is ignored) unless it `replaces` the
    /// first, for a corrected end of a call whose loss queued one. A correction rewrites an email no send
    /// was ever tried for (nobody has seen it). Once one was tried, it may
    /// have arrived (a send under way, or one whose connection dropped
    /// after the message): the correction takes the place of one not yet
    /// sent (waiting to retry, being sent, failed for good), as a new
    /// message (a Message-ID of its own, tried afresh) marked as
    /// correcting the first, and a send under way loses its lease, so it
    /// is not recorded as the correction's; after one was sent, it is the
    /// call's next email, marked the same way (so too when the sent one is
    /// no longer in the outbox, purged after the retention).
    pub(super) async fn queue_email(
        &mut self,
        tenant: &str,
        call_id: &str,
        recipient: &str,
        (subject, body): (&str, &str),
        replaces: bool,
        now: UtcMillis,
    ) -> Result<()> {
        let mut revision = 0;
        let (mut subject, mut body) = (subject.to_owned(), body.to_owned());
        let id = format!("em_{}", hex::encode(crypto::random_bytes::<12>()));
        if replaces {
            let corrected = (
                format!(
                    "{CORRECTED_SUBJECT}{}",
                    crate::email::message::cut_chars(
                        &subject,
                        crate::email::message::MAX_SUBJECT_CHARS
                            .saturating_sub(CORRECTED_SUBJECT.chars().count())
                    )
                ),
                format!("{CORRECTED_PREAMBLE}{body}"),
            );
            // The latest email of the call, as each case below finds it.
            macro_rules! latest {
                () => {
                    "call_id = $4 AND revision = \
                     (SELECT MAX(revision) FROM email_outbox WHERE call_id = $4)"
                };
            }
            let cases: [(&str, &(String, String)); 2] = [
                // Never tried (nor being tried): nobody has seen it.
                (
                    concat!(
                        "UPDATE email_outbox SET recipient = $1, subject = $2, body = $3 \
                         WHERE state = 'queued' AND attempts = 0 AND lease_token IS NULL \
                         AND $5 = $5 AND $6 = $6 AND ",
                        latest!()
                    ),
                    &(subject.clone(), body.clone()),
                ),
                // Tried and not sent: it may have arrived all the same.
                (
                    concat!(
                        "UPDATE email_outbox SET recipient = $1, subject = $2, body = $3, \
                         id = $6, state = 'queued', attempts = 0, next_attempt_at = $5, \
                         created_at = $5, last_error = '', finished_at = NULL, \
                         lease_until = NULL, lease_token = NULL \
                         WHERE state IN ('queued', 'failed') AND ",
                        latest!()
                    ),
                    &corrected,
                ),
            ];
            for (sql, (subj, text)) in cases {
                let rewritten = on_tx!(self, |t| {
                    sqlx::query(sql)
                        .bind(recipient)
                        .bind(subj)
                        .bind(text)
                        .bind(call_id)
                        .bind(now.0)
                        .bind(&id)
                        .execute(&mut **t)
                        .await?
                        .rows_affected()
                });
                if rewritten > 0 {
                    return Ok(());
                }
            }
            // Sent: the correction is the call's next email.
            let last: Option<i64> = on_tx!(self, |t| {
                sqlx::query_scalar("SELECT MAX(revision) FROM email_outbox WHERE call_id = $1")
                    .bind(call_id)
                    .fetch_one(&mut **t)
                    .await?
            });
            // Sent, or already purged from the outbox (`purge_emails`: a
            // node back after the retention): either way it went, and the
            // correction says so.
            revision = last.map_or(0, |last| last.saturating_add(1));
            (subject, body) = corrected;
        }
        on_tx!(self, |t| {
            sqlx::query(
                "INSERT INTO email_outbox (id, tenant, call_id, recipient, subject, body, state, \
                 attempts, next_attempt_at, created_at, revision) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'queued', 0, $7, $7, $8) ON CONFLICT DO NOTHING",
            )
            .bind(&id)
            .bind(tenant)
            .bind(call_id)
            .bind(recipient)
            .bind(&subject)
            .bind(&body)
            .bind(now.0)
            .bind(revision)
            .execute(&mut **t)
            .await?;
        });
        Ok(())
    }
}

impl Store {
    /// Claims up to `limit` due emails for `lease_ms`.
    pub async fn claim_emails(
        &self,
        now: UtcMillis,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedEmail>> {
        // Positive: never the NULL of an unclaimed row.
        // A read first: an idle outbox costs no write lock (SQLite has one
        // writer) and no write transaction.
        let due: Option<i64> = on_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT seq FROM email_outbox WHERE state = 'queued' AND next_attempt_at <= $1 \
                 AND (lease_until IS NULL OR lease_until <= $1) LIMIT 1",
            )
            .bind(now.0)
            .fetch_optional(pool)
            .await?
        });
        if due.is_none() {
            return Ok(Vec::new());
        }
        let token = i64::from_le_bytes(crypto::random_bytes::<8>()) & i64::MAX;
        let until = now.0.saturating_add(lease_ms);
        let rows = match &self.pool {
            Pool::Sqlite(pool) => {
                let mut tx = pool.write_tx().await?;
                let rows = sqlx::query(claim_sql!(""))
                    .bind(now.0)
                    .bind(until)
                    .bind(token)
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                rows.iter()
                    .map(|r| claimed_from_row(r, token))
                    .collect::<Result<Vec<_>>>()?
            }
            Pool::Postgres(pool) => {
                // SKIP LOCKED: rows another control plane is claiming right
                // now are passed over, not waited for and not taken twice.
                let rows = sqlx::query(claim_sql!(" FOR UPDATE SKIP LOCKED"))
                    .bind(now.0)
                    .bind(until)
                    .bind(token)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?;
                rows.iter()
                    .map(|r| claimed_from_row(r, token))
                    .collect::<Result<Vec<_>>>()?
            }
        };
        Ok(rows)
    }

    /// Records an attempt's result under the lease it was claimed with;
    /// false if the lease was lost (another sender took the row over).
    pub async fn record_email_attempt(
        &self,
        email: &ClaimedEmail,
        step: &EmailStep,
        error: &str,
        now: UtcMillis,
    ) -> Result<bool> {
        let (state, next, finished) = match step {
            EmailStep::Sent => (EmailState::Sent, now, Some(now.0)),
            EmailStep::RetryAt(t) => (EmailState::Queued, *t, None),
            EmailStep::Failed => (EmailState::Failed, now, Some(now.0)),
        };
        let error = super::cut_text(error, 1024);
        on_pool!(self, |pool| {
            let n = sqlx::query(
                "UPDATE email_outbox SET state = $1, attempts = $2, next_attempt_at = $3, \
                 last_error = $4, finished_at = $5, lease_until = NULL, lease_token = NULL \
                 WHERE seq = $6 AND lease_token = $7 AND state = 'queued'",
            )
            .bind(state.as_str())
            .bind(email.attempt)
            .bind(next.0)
            .bind(&error)
            .bind(finished)
            .bind(email.seq)
            .bind(email.lease_token)
            .execute(pool)
            .await?
            .rows_affected();
            Ok(n == 1)
        })
    }

    /// Hands back leases of attempts that never finished (shutdown), so
    /// the next sender takes them at once.
    pub async fn release_email_lease(&self, email: &ClaimedEmail) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query(
                "UPDATE email_outbox SET lease_until = NULL, lease_token = NULL \
                 WHERE seq = $1 AND lease_token = $2",
            )
            .bind(email.seq)
            .bind(email.lease_token)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// The latest email of a call (a correction sent after the first is
    /// the latest), if one was queued.
    pub async fn call_email(&self, tenant: &str, call_id: &str) -> Result<Option<EmailRecord>> {
        on_pool!(self, |pool| {
            let row = sqlx::query(concat!(
                "SELECT ",
                email_columns!(),
                " FROM email_outbox WHERE tenant = $1 AND call_id = $2 \
                 ORDER BY revision DESC LIMIT 1"
            ))
            .bind(tenant)
            .bind(call_id)
            .fetch_optional(pool)
            .await?;
            row.as_ref().map(email_from_row).transpose()
        })
    }

    /// A page of a tenant's emails, newest first, optionally of one state.
    pub async fn email_page(
        &self,
        tenant: &str,
        state: Option<EmailState>,
        limit: i64,
        offset: i64,
    ) -> Result<Page<EmailRecord>> {
        let state = state.map(EmailState::as_str);
        on_pool!(self, |pool| {
            let total: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM email_outbox WHERE tenant = $1 \
                 AND ($2 IS NULL OR state = $2)",
            )
            .bind(tenant)
            .bind(state)
            .fetch_one(pool)
            .await?;
            let rows = sqlx::query(concat!(
                "SELECT ",
                email_columns!(),
                " FROM email_outbox WHERE tenant = $1 AND ($2 IS NULL OR state = $2) \
                 ORDER BY seq DESC LIMIT $3 OFFSET $4"
            ))
            .bind(tenant)
            .bind(state)
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await?;
            let items = rows.iter().map(email_from_row).collect::<Result<_>>()?;
            Ok(Page { items, total })
        })
    }

    /// One email of a tenant by its id.
    pub async fn email(&self, tenant: &str, id: &str) -> Result<Option<EmailRecord>> {
        on_pool!(self, |pool| {
            let row = sqlx::query(concat!(
                "SELECT ",
                email_columns!(),
                " FROM email_outbox WHERE tenant = $1 AND id = $2"
            ))
            .bind(tenant)
            .bind(id)
            .fetch_optional(pool)
            .await?;
            row.as_ref().map(email_from_row).transpose()
        })
    }

    /// Queues a failed email again, due now, with a fresh retry schedule
    /// (its attempts start over; `last_error` stays until the next attempt
    /// replaces it). Only a failed email: a sent one would reach its
    /// recipient twice, a queued one is already on its way. The same row,
    /// so the same Message-ID. Answers the email as it is afterwards.
    pub async fn retry_email(
        &self,
        tenant: &str,
        id: &str,
        now: UtcMillis,
    ) -> Result<Option<(bool, EmailRecord)>> {
        let requeued = on_pool!(self, |pool| {
            sqlx::query(
                "UPDATE email_outbox SET state = 'queued', attempts = 0, next_attempt_at = $3, \
                 finished_at = NULL, lease_until = NULL, lease_token = NULL \
                 WHERE tenant = $1 AND id = $2 AND state = 'failed'",
            )
            .bind(tenant)
            .bind(id)
            .bind(now.0)
            .execute(pool)
            .await?
            .rows_affected()
        }) == 1;
        Ok(self.email(tenant, id).await?.map(|e| (requeued, e)))
    }

    /// Deletes sent and failed emails that finished before `cutoff`.
    /// Returns how many.
    pub async fn purge_emails(&self, cutoff: UtcMillis) -> Result<u64> {
        on_pool!(self, |pool| {
            Ok(sqlx::query(
                "DELETE FROM email_outbox WHERE state IN ('sent', 'failed') AND finished_at < $1",
            )
            .bind(cutoff.0)
            .execute(pool)
            .await?
            .rows_affected())
        })
    }

    /// How many emails wait to be sent (due or not).
    pub async fn email_backlog(&self) -> Result<i64> {
        on_pool!(self, |pool| {
            Ok(
                sqlx::query_scalar("SELECT COUNT(*) FROM email_outbox WHERE state = 'queued'")
                    .fetch_one(pool)
                    .await?,
            )
        })
    }
}

/// How a call's attempt ended, for its email.
pub(super) struct CallEnd<'a> {
    pub status: codeb_types::CallStatus,
    pub outcome: &'a str,
    pub detail: &'a str,
    pub end: &'a super::AttemptEnd,
    pub answered_at: Option<UtcMillis>,
    pub transcript: Option<&'a super::TranscriptRecord>,
}

impl StoreTx {
    /// Queues the email of a call that ended for good (nothing for a
    /// retry-pending attempt, or a call without an address).
    pub(super) async fn queue_call_email(
        &mut self,
        call: &super::LiveCall,
        e: &CallEnd<'_>,
        replaces: bool,
        now: UtcMillis,
    ) -> Result<()> {
        if !e.status.is_terminal() || call.email.is_empty() {
            return Ok(());
        }
        let summary = crate::email::message::CallSummary {
            call_id: &call.call_id,
            phone: &call.phone,
            display_name: &call.display_name,
            status: e.status,
            outcome: e.outcome,
            answered: e.end.answered,
            attempt: call.attempt,
            dispatched_at: call.dispatched_at,
            answered_at: e.answered_at,
            ended_at: e.end.ended_at,
            talk_seconds: e.end.talk_seconds,
            duration_seconds: e.end.duration_seconds,
            error_detail: e.detail,
            trunk_id: call.trunk_id.as_deref(),
            tokens: call.tokens_in.saturating_add(call.tokens_out),
            transcript: e.transcript.map(|t| (t.file.as_str(), t.turns.as_slice())),
        };
        let (subject, body) = crate::email::message::render_call_email(&summary);
        self.queue_email(
            &call.tenant,
            &call.call_id,
            &call.email,
            (&subject, &body),
            replaces,
            now,
        )
        .await
    }
}

#[cfg(test)]
#[path = "emails_tests.rs"]
mod tests;
