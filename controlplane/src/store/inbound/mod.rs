//! Inbound calls to virtual numbers, answered by the number's AI persona.
//!
//! A switch node assigns the call id (`vnum` + 12 hex) and reports the call
//! on its event stream: `InboundCall` (which creates the record here), then
//! `CallAnswered`, `CallStarted`, transcript turns, usage, perhaps
//! `CallTransferred`, and `CallEnded` (which finalizes it: there are no
//! retries for a call someone else placed). Each event is applied in the
//! transaction that moves the node's cursor (`switch_events`), so it takes
//! effect exactly once across restarts of either side.
//!
//! Decisions:
//! - The records live in `inbound_calls`, not `calls`: the v1 spec defines
//!   `GET /v1/calls` as outbound AI calls, and the outbound state model
//!   (scheduler, retries, whitelist) does not apply. They surface through
//!   `GET /v1/inbound-calls` (our addition), their transcripts
//!   (`callerSource` `vnum`, `GET /v1/transcripts?source=vnum`) and their
//!   webhook events.
//! - An `InboundCall` for a number the tenant does not have (deleted while
//!   a node still ran an older snapshot, or a node on its own
//!   `switch.toml`) is recorded anyway: a caller was answered and engine
//!   tokens were spent, and an operator reconciling traffic and cost must
//!   see that call, and the warning says why it looks odd. Its transcript
//!   is not saved, since no `saveTranscripts` consent is on record for it.
//! - The number's settings (name, `saveTranscripts`) are taken when the call
//!   begins, so editing the number mid-call does not split a transcript.
//!   Turns of a number that does not save transcripts are not stored at
//!   all (counts still come from `CallEnded`).
//! - Only the node that reported the call applies events to it; an event
//!   for a call that ended (or that a lost node's sweep ended) is skipped.
//!
//! Webhook payloads, as the spec's event catalogue gives them for the SIP
//! inbound AI path (`source` spelled as the spec spells that path per
//! event):
//! - `call.answered`: `callId`, `did`, `fromNumber`, `direction: inbound`,
//!   `source: gemini-live` (the spec's name for the SIP AI receptionist,
//!   whichever engine answers), `answerMs`; no `trunkId` (outbound only).
//! - `call.started`: `callId`, `number` (the virtual number), `did`,
//!   `direction: inbound`, `source: gemini-live`; no `room` (vnum/WebRTC
//!   only).
//! - `call.transferred`: `callId`, `fromVnum`, `toUser`/`toPhone`,
//!   `transferType`, `room`, `source: vnum`.
//! - `call.ended`: `callId`, `number` (the DID, as the spec says for
//!   inbound SIP), `room`, `outcome`, `durationSec`, `tokens`, `source: sip`;
//!   beside them `errorDetail` (when the switch said why) and `sipStatus`
//!   (when the caller got a final response before the answer), and
//!   `corrected: true` on a node's account of a call ended as lost.
//! - `transcript.saved` (after `call.ended`): `callId`, `number` (the
//!   virtual number), `file`, `outcome`, `source: vnum`.
//!
//! `room` is the signalling room of the spec's WebRTC path; a SIP call has
//! none, so where the payload carries the key it is the empty string (a
//! made-up room name would mislead, and parsers expecting the key get a
//! string).

mod apply;

use codeb_types::UtcMillis;

use super::tx::{StoreTx, TxInner};
use super::{Page, Result, RowExt, Store, col, flag, ms, on_pool, opt_ms};

/// Transcript turns of an inbound call are stored under this attempt
/// number (the call has exactly one).
const ATTEMPT: i64 = 1;

/// A stored inbound call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundCallRecord {
    pub call_id: String,
    pub tenant: String,
    pub node_url: String,
    pub number: String,
    pub did: String,
    pub from_number: String,
    pub trunk_id: Option<String>,
    /// Whether the tenant had the number when the call began.
    pub number_known: bool,
    pub number_name: String,
    pub save_transcripts: bool,
    pub created_at: UtcMillis,
    pub answered_at: Option<UtcMillis>,
    pub answer_ms: Option<i64>,
    pub started_at: Option<UtcMillis>,
    pub ended_at: Option<UtcMillis>,
    pub outcome: String,
    pub error_detail: String,
    pub answered: bool,
    pub talk_sec: i64,
    pub duration_sec: i64,
    pub sip_status: i64,
    pub input_turns: i64,
    pub output_turns: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub transfers: i64,
    pub transcript_path: String,
    /// Ended by the control plane because its node was lost; the node's
    /// own end, read later, corrects it.
    pub lost: bool,
}

macro_rules! inbound_columns {
    () => {
        "call_id, tenant, node_url, number, did, from_number, trunk_id, number_known, \
         number_name, save_transcripts, created_at, answered_at, answer_ms, started_at, ended_at, \
         outcome, error_detail, answered, talk_sec, duration_sec, sip_status, input_turns, \
         output_turns, tokens_in, tokens_out, transfers, transcript_path, lost"
    };
}

fn inbound_from_row(row: &impl RowExt) -> Result<InboundCallRecord> {
    Ok(InboundCallRecord {
        call_id: col(row, "call_id")?,
        tenant: col(row, "tenant")?,
        node_url: col(row, "node_url")?,
        number: col(row, "number")?,
        did: col(row, "did")?,
        from_number: col(row, "from_number")?,
        trunk_id: col(row, "trunk_id")?,
        number_known: flag(row, "number_known")?,
        number_name: col(row, "number_name")?,
        save_transcripts: flag(row, "save_transcripts")?,
        created_at: ms(row, "created_at")?,
        answered_at: opt_ms(row, "answered_at")?,
        answer_ms: col(row, "answer_ms")?,
        started_at: opt_ms(row, "started_at")?,
        ended_at: opt_ms(row, "ended_at")?,
        outcome: col(row, "outcome")?,
        error_detail: col(row, "error_detail")?,
        answered: flag(row, "answered")?,
        talk_sec: col(row, "talk_sec")?,
        duration_sec: col(row, "duration_sec")?,
        sip_status: col(row, "sip_status")?,
        input_turns: col(row, "input_turns")?,
        output_turns: col(row, "output_turns")?,
        tokens_in: col(row, "tokens_in")?,
        tokens_out: col(row, "tokens_out")?,
        transfers: col(row, "transfers")?,
        transcript_path: col(row, "transcript_path")?,
        lost: flag(row, "lost")?,
    })
}

impl InboundCallRecord {
    /// The transcript `rule`, as the spec's example spells it
    /// (`vnum:<name>`); the number stands in when the tenant did not have
    /// it.
    fn rule(&self) -> String {
        if self.number_name.is_empty() {
            format!("vnum:{}", self.number)
        } else {
            format!("vnum:{}", self.number_name)
        }
    }
}

impl Store {
    /// One inbound call of a tenant.
    pub async fn inbound_call(
        &self,
        tenant: &str,
        call_id: &str,
    ) -> Result<Option<InboundCallRecord>> {
        on_pool!(self, |pool| {
            let row = sqlx::query(concat!(
                "SELECT ",
                inbound_columns!(),
                " FROM inbound_calls WHERE tenant = $1 AND call_id = $2"
            ))
            .bind(tenant)
            .bind(call_id)
            .fetch_optional(pool)
            .await?;
            row.as_ref().map(inbound_from_row).transpose()
        })
    }

    /// A tenant's inbound calls, newest first.
    pub async fn list_inbound_calls(
        &self,
        tenant: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Page<InboundCallRecord>> {
        on_pool!(self, |pool| {
            let total: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM inbound_calls WHERE tenant = $1")
                    .bind(tenant)
                    .fetch_one(pool)
                    .await?;
            let rows = sqlx::query(concat!(
                "SELECT ",
                inbound_columns!(),
                " FROM inbound_calls WHERE tenant = $1 \
                 ORDER BY created_at DESC, call_id DESC LIMIT $2 OFFSET $3"
            ))
            .bind(tenant)
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await?;
            let items = rows.iter().map(inbound_from_row).collect::<Result<_>>()?;
            Ok(Page { items, total })
        })
    }
}

impl StoreTx {
    /// The inbound call row, locked for this transaction (`FOR UPDATE` on
    /// PostgreSQL; SQLite's write transaction already excludes others).
    async fn lock_inbound_call(&mut self, call_id: &str) -> Result<Option<InboundCallRecord>> {
        let row = match &mut self.inner {
            TxInner::Sqlite(t) => sqlx::query(concat!(
                "SELECT ",
                inbound_columns!(),
                " FROM inbound_calls WHERE call_id = $1"
            ))
            .bind(call_id)
            .fetch_optional(&mut **t)
            .await?
            .as_ref()
            .map(inbound_from_row)
            .transpose()?,
            TxInner::Postgres(t) => sqlx::query(concat!(
                "SELECT ",
                inbound_columns!(),
                " FROM inbound_calls WHERE call_id = $1 FOR UPDATE"
            ))
            .bind(call_id)
            .fetch_optional(&mut **t)
            .await?
            .as_ref()
            .map(inbound_from_row)
            .transpose()?,
        };
        Ok(row)
    }
}

#[cfg(test)]
mod tests;
