//! `/api.ashx/v1/inbound-calls`: inbound calls to the tenant's virtual
//! numbers, answered by their AI persona (our addition to the v1 spec,
//! whose `GET /calls` lists outbound AI calls only). Every inbound call is
//! here, whether or not its number saves transcripts; the transcript, when
//! there is one, is at `/transcripts/{callId}` (`transcriptPath` names its
//! file). Field names follow the spec's vocabulary for calls and
//! transcripts.

use axum::extract::State;

use super::extract::Path;
use codeb_types::{UtcMillis, VnumCallId};
use serde::Serialize;

use super::calls::{HangupReply, hangup_link_error};
use super::error::{ApiError, ApiResult};
use super::extract::{ListEnvelope, Paging, QueryParams};
use crate::auth::Admin;
use crate::state::AppState;
use crate::store::InboundCallRecord;

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InboundCallView {
    /// `vnum` + 12 hex, assigned by the switch node.
    pub call_id: String,
    pub tenant: String,
    /// `in-flight` until the call ends, then `ended`.
    pub status: String,
    /// The virtual number the call reached.
    pub number: String,
    /// The number's name when the call began; empty if the tenant had no
    /// such number then (`numberKnown: false`).
    pub number_name: String,
    pub number_known: bool,
    /// The DID the caller dialled and the caller's number, as the switch
    /// received them.
    pub did: String,
    pub from_number: String,
    pub trunk_id: Option<String>,
    pub save_transcripts: bool,
    pub created_at_utc: String,
    pub answered_at_utc: Option<String>,
    /// When the AI session was up (`call.started`).
    pub started_at_utc: Option<String>,
    pub ended_at_utc: Option<String>,
    /// Milliseconds from the INVITE to the 200 OK.
    pub answer_ms: Option<i64>,
    pub answered: bool,
    /// The spec's outcome glossary; empty while the call is up.
    pub outcome: String,
    pub error_detail: String,
    pub talk_sec: i64,
    pub duration_sec: i64,
    /// The final SIP status when the call failed before the answer.
    pub sip_status: i64,
    pub input_turns: i64,
    pub output_turns: i64,
    pub tokens_total: i64,
    pub tokens_prompt: i64,
    pub transfers: i64,
    pub transcript_path: String,
}

/// `in-flight` until the call ends, then `ended`.
fn status(c: &InboundCallRecord) -> &'static str {
    if c.ended_at.is_some() {
        "ended"
    } else {
        "in-flight"
    }
}

impl From<InboundCallRecord> for InboundCallView {
    fn from(c: InboundCallRecord) -> Self {
        InboundCallView {
            status: status(&c).to_owned(),
            call_id: c.call_id,
            tenant: c.tenant,
            number: c.number,
            number_name: c.number_name,
            number_known: c.number_known,
            did: c.did,
            from_number: c.from_number,
            trunk_id: c.trunk_id,
            save_transcripts: c.save_transcripts,
            created_at_utc: c.created_at.to_iso(),
            answered_at_utc: c.answered_at.map(UtcMillis::to_iso),
            started_at_utc: c.started_at.map(UtcMillis::to_iso),
            ended_at_utc: c.ended_at.map(UtcMillis::to_iso),
            answer_ms: c.answer_ms,
            // Answered once the answer is recorded, not only at the end.
            answered: c.answered || c.answered_at.is_some(),
            outcome: c.outcome,
            error_detail: c.error_detail,
            talk_sec: c.talk_sec,
            duration_sec: c.duration_sec,
            sip_status: c.sip_status,
            input_turns: c.input_turns,
            output_turns: c.output_turns,
            tokens_total: c.tokens_in.saturating_add(c.tokens_out),
            tokens_prompt: c.tokens_in,
            transfers: c.transfers,
            transcript_path: c.transcript_path,
        }
    }
}

/// `GET /v1/inbound-calls`
pub async fn list(
    State(state): State<AppState>,
    Admin(who): Admin,
    query: QueryParams,
) -> ApiResult<axum::Json<ListEnvelope<InboundCallView>>> {
    let paging = Paging::from_query(&query)?;
    let page = state
        .store
        .list_inbound_calls(&who.tenant, paging.limit, paging.offset)
        .await?;
    let data = page.items.into_iter().map(InboundCallView::from).collect();
    Ok(axum::Json(ListEnvelope::new(
        data,
        page.total,
        paging,
        &query,
        "/api.ashx/v1/inbound-calls",
    )))
}

async fn find(state: &AppState, tenant: &str, call_id: &str) -> ApiResult<InboundCallRecord> {
    let missing = || ApiError::not_found(format!("No inbound call with id={call_id}"));
    let id = VnumCallId::parse(call_id).map_err(|_| missing())?;
    state
        .store
        .inbound_call(tenant, id.as_str())
        .await?
        .ok_or_else(missing)
}

/// `GET /v1/inbound-calls/{callId}`
pub async fn get_one(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(call_id): Path<String>,
) -> ApiResult<axum::Json<InboundCallView>> {
    Ok(axum::Json(
        find(&state, &who.tenant, &call_id).await?.into(),
    ))
}

/// `POST /v1/inbound-calls/{callId}/hangup`: idempotent, like the outbound
/// calls' hangup. The switch node carrying the call sends the BYE; the end
/// (outcome `cancelled`) arrives as its event, so the status answered is
/// the current one.
pub async fn hangup(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(call_id): Path<String>,
) -> ApiResult<axum::Json<HangupReply>> {
    let call = find(&state, &who.tenant, &call_id).await?;
    let ended = call.ended_at.is_some();
    // Of several hangups at once, the one the switch acted on is not a
    // no-op; the others are.
    let was_noop = ended
        || state
            .switch
            .hangup(&call.node_url, &call.call_id, 0)
            .await
            .map_err(hangup_link_error)?
            .was_noop();
    if !ended {
        tracing::info!(call = %call.call_id, actor = %who.username, node = %call.node_url,
            noop = was_noop, "inbound call hangup sent to the switch");
    }
    // As for /calls: the status once the switch's end is in, if it comes
    // within HANGUP_WAIT.
    let call = if ended {
        call
    } else {
        super::calls::wait_for(super::calls::HANGUP_WAIT, || async {
            let c = find(&state, &who.tenant, &call.call_id).await.ok()?;
            c.ended_at.is_some().then_some(c)
        })
        .await
        .unwrap_or(call)
    };
    Ok(axum::Json(HangupReply {
        ok: true,
        new_status: status(&call).to_owned(),
        call_id: call.call_id,
        actor: who.username,
        was_noop,
    }))
}
