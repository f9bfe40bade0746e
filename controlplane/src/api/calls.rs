//! `/api.ashx/v1/calls`: place, list, inspect and hang up outbound AI calls.

use axum::extract::State;

use super::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use codeb_types::{CallId, CallStatus, E164, TrunkId, UtcMillis};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, Paging, QueryParams};
use super::json::{self, Iso};
use super::validate;
use crate::auth::Admin;
use crate::crypto;
use crate::state::AppState;
use crate::store::{CallFilter, CallRow, DISPATCH_LEASE_MS, DefaultTrunk, HangupResult, NewCall};
use crate::switch_link::{Dispatched, Hangup, LinkError};

pub const DEFAULT_MODEL: &str = codeb_types::vendor::GEMINI_DEFAULT_MODEL;
/// Gemini's default voice (the spec's); see [`codeb_types::Vendor`].
pub const DEFAULT_VOICE: &str = "Aoede";
pub const DEFAULT_LANGUAGE: &str = "en-US";
const MAX_PROMPT_CHARS: usize = 20_000;
/// A `scheduleAtUtc` this far in the past is refused; nearer is "now".
const PAST_TOLERANCE_MS: i64 = 5 * 60_000;
const MAX_SCHEDULE_AHEAD_MS: i64 = 366 * 24 * 3_600_000;

/// Request body of `POST /v1/calls`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateCall {
    /// E.164, e.g. +15551234567 (required).
    #[schema(required = true, nullable = false)]
    pub phone: Option<String>,
    /// Caller-ID label; defaults to phone.
    pub display_name: Option<String>,
    /// Where the transcript + outcome email is sent (required).
    #[schema(required = true, nullable = false)]
    pub email: Option<String>,
    /// The AI agent's instructions, or a known prompt slug (required).
    #[schema(required = true, nullable = false)]
    pub system_prompt: Option<String>,
    /// AI engine API key (required).
    #[schema(required = true, nullable = false)]
    pub api_key: Option<String>,
    pub model: Option<String>,
    pub voice: Option<String>,
    pub language: Option<String>,
    /// 10–3600, default 300.
    pub max_seconds: Option<i64>,
    /// 0–10, default 0.
    pub retries: Option<i64>,
    /// 1–1440, default 5.
    pub retry_delay_minutes: Option<i64>,
    /// ISO-8601 UTC; omitted: dial immediately.
    pub schedule_at_utc: Option<String>,
    /// Trunk to use; default: the tenant's default trunk.
    pub trunk_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateCallReply {
    pub ok: bool,
    pub call_id: String,
    pub tenant: String,
    pub whitelist_added: bool,
    pub whitelist_error: Option<String>,
    pub bridge_reply: Option<String>,
    /// `scheduled`, `dispatching`, `in-flight`, `ended-success`,
    /// `ended-failed-retry-pending`, `ended-failed-final` or `cancelled`.
    pub status: String,
}

// It borrows the row it shows, so a list page renders rows without copying
// their text (a `///` line here would change the OpenAPI description).
/// One call record, as both the list and `GET /calls/{id}` show it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallView<'a> {
    pub call_id: &'a str,
    pub tenant: &'a str,
    pub requested_by: &'a str,
    pub phone: &'a str,
    pub display_name: &'a str,
    pub email: &'a str,
    pub voice: &'a str,
    pub language: &'a str,
    pub model: &'a str,
    /// `scheduled`, `dispatching`, `in-flight`, `ended-success`,
    /// `ended-failed-retry-pending`, `ended-failed-final` or `cancelled`.
    pub status: &'a str,
    #[schema(value_type = String)]
    pub created_at_utc: Iso,
    #[schema(value_type = Option<String>)]
    pub scheduled_for_utc: Option<Iso>,
    #[schema(value_type = Option<String>)]
    pub dispatched_at_utc: Option<Iso>,
    #[schema(value_type = Option<String>)]
    pub answered_at_utc: Option<Iso>,
    #[schema(value_type = Option<String>)]
    pub ended_at_utc: Option<Iso>,
    pub ended_reason: &'a str,
    pub duration_sec: i64,
    pub trunk_id: Option<&'a str>,
    pub transcript_path: &'a str,
    pub error_detail: &'a str,
    pub attempt: i64,
    pub retries_left: i64,
    pub retry_delay_minutes: i64,
    pub max_seconds: i64,
    pub retries: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HangupReply {
    pub ok: bool,
    pub call_id: String,
    pub new_status: String,
    pub actor: String,
    pub was_noop: bool,
}

impl<'a> From<&CallRow<'a>> for CallView<'a> {
    fn from(c: &CallRow<'a>) -> Self {
        CallView {
            call_id: c.call_id,
            tenant: c.tenant,
            requested_by: c.requested_by,
            phone: c.phone,
            display_name: c.display_name,
            email: c.email,
            voice: c.voice,
            language: c.language,
            model: c.model,
            status: c.status.as_str(),
            created_at_utc: Iso(c.created_at),
            scheduled_for_utc: Iso::opt(c.scheduled_for),
            dispatched_at_utc: Iso::opt(c.dispatched_at),
            answered_at_utc: Iso::opt(c.answered_at),
            ended_at_utc: Iso::opt(c.ended_at),
            ended_reason: c.ended_reason,
            duration_sec: c.duration_sec,
            trunk_id: c.trunk_id,
            transcript_path: c.transcript_path,
            error_detail: c.error_detail,
            attempt: c.attempt,
            retries_left: c.retries_left,
            retry_delay_minutes: c.retry_delay_minutes,
            max_seconds: c.max_seconds,
            retries: c.retries,
        }
    }
}

/// A list page's row renderer (runs on the store's read path): what serde
/// writes for `CallView::from(c)`, field for field (the test below holds it
/// to that), without serde's per-field dispatch and key escaping.
pub(crate) fn render_call(c: &CallRow<'_>, out: &mut Vec<u8>) -> serde_json::Result<()> {
    let mut o = json::ObjectWriter::begin(out);
    o.str(json::key!("callId"), c.call_id);
    o.str(json::key!("tenant"), c.tenant);
    o.str(json::key!("requestedBy"), c.requested_by);
    o.str(json::key!("phone"), c.phone);
    o.str(json::key!("displayName"), c.display_name);
    o.str(json::key!("email"), c.email);
    o.str(json::key!("voice"), c.voice);
    o.str(json::key!("language"), c.language);
    o.str(json::key!("model"), c.model);
    o.str(json::key!("status"), c.status.as_str());
    o.iso(json::key!("createdAtUtc"), Iso(c.created_at));
    o.iso_or_null(json::key!("scheduledForUtc"), Iso::opt(c.scheduled_for));
    o.iso_or_null(json::key!("dispatchedAtUtc"), Iso::opt(c.dispatched_at));
    o.iso_or_null(json::key!("answeredAtUtc"), Iso::opt(c.answered_at));
    o.iso_or_null(json::key!("endedAtUtc"), Iso::opt(c.ended_at));
    o.str(json::key!("endedReason"), c.ended_reason);
    o.int(json::key!("durationSec"), c.duration_sec);
    o.str_or_null(json::key!("trunkId"), c.trunk_id);
    o.str(json::key!("transcriptPath"), c.transcript_path);
    o.str(json::key!("errorDetail"), c.error_detail);
    o.int(json::key!("attempt"), c.attempt);
    o.int(json::key!("retriesLeft"), c.retries_left);
    o.int(json::key!("retryDelayMinutes"), c.retry_delay_minutes);
    o.int(json::key!("maxSeconds"), c.max_seconds);
    o.int(json::key!("retries"), c.retries);
    o.end();
    Ok(())
}

/// A hangup that could not reach the node carrying the call.
pub(super) fn hangup_link_error(e: LinkError) -> ApiError {
    hangup_error(e, "")
}

/// [`hangup_link_error`], saying `more` of what was done all the same.
fn hangup_error(e: LinkError, more: &str) -> ApiError {
    match e {
        LinkError::Unreachable(detail) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bridge_unreachable",
            format!(
                "The switch node carrying the call cannot be reached, so it was not hung up; \
                 try again (if the node stays away, the call ends as lost){more}: {detail}"
            ),
        ),
        other => link_error(other),
    }
}

pub(super) fn link_error(e: LinkError) -> ApiError {
    match e {
        LinkError::NotConfigured => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "bridge_not_configured",
            "No switch is configured (set CODEB_SWITCH_URLS); only scheduled calls can be stored",
        ),
        LinkError::Unreachable(detail) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bridge_unreachable",
            format!("No switch node can take the call: {detail}"),
        ),
    }
}

/// Checks a create request and turns it into a storable call.
async fn validate_create(
    state: &AppState,
    tenant: &str,
    requested_by: &str,
    body: CreateCall,
    now: UtcMillis,
) -> ApiResult<NewCall> {
    // Every required field that is missing, in one answer (not one per
    // request, as an integrator fixing them one at a time would find).
    let missing: Vec<&str> = [
        ("phone", &body.phone),
        ("email", &body.email),
        ("systemPrompt", &body.system_prompt),
        ("apiKey", &body.api_key),
    ]
    .into_iter()
    .filter(|(_, v)| v.as_deref().is_none_or(|v| v.trim().is_empty()))
    .map(|(name, _)| name)
    .collect();
    if missing.len() > 1 {
        return Err(ApiError::bad_request(format!(
            "{}: are required",
            missing.join(", ")
        )));
    }
    let phone_raw = validate::required_text("phone", body.phone, 32, false)?;
    let phone = E164::parse(phone_raw.trim()).map_err(|e| ApiError::field("phone", e))?;
    let display_name = validate::optional_text("displayName", body.display_name, 64, false)?
        .unwrap_or_else(|| phone.to_string());
    let email = validate::required_text("email", body.email, 254, false)?;
    validate::email("email", &email)?;
    let system_prompt =
        validate::required_text("systemPrompt", body.system_prompt, MAX_PROMPT_CHARS, true)?;
    let ai_api_key = validate::required_text("apiKey", body.api_key, 512, false)?;
    validate::token("apiKey", &ai_api_key, 512)?;
    let model = match validate::optional_text("model", body.model, 200, false)? {
        Some(m) => {
            validate::token("model", &m, 200)?;
            validate::model("model", &m)?;
            m
        }
        None => DEFAULT_MODEL.to_owned(),
    };
    // No voice: the default of the model's vendor (the spec's Aoede for
    // Gemini; a Gemini voice would fail an OpenAI session).
    let voice = body.voice.filter(|v| !v.is_empty()).unwrap_or_else(|| {
        codeb_types::Vendor::of_model(&model)
            .default_voice()
            .to_owned()
    });
    validate::voice("voice", &voice)?;
    validate::voice_for_model("voice", &voice, &model)?;
    let language = body
        .language
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_LANGUAGE.to_owned());
    validate::language("language", &language)?;
    let max_seconds = validate::int_range("maxSeconds", body.max_seconds.unwrap_or(300), 10, 3600)?;
    let retries = validate::int_range("retries", body.retries.unwrap_or(0), 0, 10)?;
    let retry_delay_minutes = validate::int_range(
        "retryDelayMinutes",
        body.retry_delay_minutes.unwrap_or(5),
        1,
        1440,
    )?;
    let scheduled_for = match body.schedule_at_utc.filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => {
            let at =
                UtcMillis::parse_rfc3339(&s).map_err(|e| ApiError::field("scheduleAtUtc", e))?;
            if at.0 < now.0 - PAST_TOLERANCE_MS {
                return Err(ApiError::field("scheduleAtUtc", "is in the past"));
            }
            if at.0 > now.0 + MAX_SCHEDULE_AHEAD_MS {
                return Err(ApiError::field(
                    "scheduleAtUtc",
                    "is more than 366 days ahead",
                ));
            }
            // A time that has already come is an immediate call.
            (at > now).then_some(at)
        }
    };
    let trunk_id = match body.trunk_id.filter(|s| !s.is_empty()) {
        None => {
            // Refused here, not when the call is placed: it would be stored,
            // answered `ok`, and fail at once.
            if state.store.default_trunk_choice(tenant).await? == DefaultTrunk::NoneMarked {
                return Err(ApiError::field(
                    "trunkId",
                    "is required: the tenant has several trunks and none is marked \
                     default (set isDefault on one, or name one here)",
                ));
            }
            None
        }
        Some(s) => {
            let id = TrunkId::parse(&s).map_err(|e| ApiError::field("trunkId", e))?;
            if state.store.trunk(tenant, &id).await?.is_none() {
                return Err(ApiError::field("trunkId", format!("no trunk with id {id}")));
            }
            Some(id)
        }
    };
    Ok(NewCall {
        call_id: CallId::from_random(crypto::random_bytes()),
        tenant: tenant.to_owned(),
        requested_by: requested_by.to_owned(),
        phone,
        display_name,
        email,
        system_prompt,
        ai_api_key,
        model,
        voice,
        language,
        max_seconds,
        retries,
        retry_delay_minutes,
        trunk_id,
        // An immediate call is stored due now and claimed by the request
        // itself (see `create`).
        status: CallStatus::Scheduled,
        created_at: now,
        scheduled_for,
        // An immediate call is claimed by the request that stores it; the
        // scheduler only takes it if that request died before dispatching.
        next_attempt_at: scheduled_for.unwrap_or(now.plus_ms(DISPATCH_LEASE_MS)),
    })
}

/// `POST /v1/calls`
pub async fn create(
    State(state): State<AppState>,
    Admin(who): Admin,
    JsonBody(body): JsonBody<CreateCall>,
) -> ApiResult<axum::Json<CreateCallReply>> {
    let now = state.now();
    let call = validate_create(&state, &who.tenant, &who.username, body, now).await?;
    let immediate = call.scheduled_for.is_none();
    // An immediate call needs a switch that can take it now; nothing is
    // stored if there is none, so a client that retries the POST does not
    // leave orphans.
    if immediate {
        state.switch.choose_probing().await.map_err(link_error)?;
        // It would be stored, answered `ok`, and fail at once. (A
        // scheduled call may get its trunk before it is due.)
        if call.trunk_id.is_none()
            && state.store.default_trunk_choice(&who.tenant).await? == DefaultTrunk::NoTrunks
        {
            return Err(ApiError::field(
                "trunkId",
                "the tenant has no trunk to place the call through: add one (POST /api.ashx/v1/trunks) first",
            ));
        }
    }
    let Ok((record, whitelist_added)) = state.store.insert_call_checked(&call).await? else {
        // Deleted since it was checked above.
        let id = call.trunk_id.as_ref().map_or("", |t| t.as_str());
        return Err(ApiError::field("trunkId", format!("no trunk with id {id}")));
    };
    tracing::info!(call = %record.call_id, tenant = %record.tenant, status = %record.status, "call stored");
    let mut bridge_reply = None;
    if immediate {
        // Dispatch here, so the reply says what the switch answered. If the
        // scheduler claimed it first, it is already on its way.
        if let Some(claimed) = state.store.claim_call(&record.call_id, state.now()).await? {
            let outcome = state.switch.dispatch(&state.store, &claimed).await;
            bridge_reply = Some(bridge_text(&outcome));
        }
    }
    let status = state
        .store
        .call(&who.tenant, &record.call_id)
        .await?
        .map_or(record.status, |c| c.status);
    Ok(axum::Json(CreateCallReply {
        ok: true,
        call_id: record.call_id.to_string(),
        tenant: record.tenant,
        whitelist_added,
        whitelist_error: None,
        bridge_reply,
        status: status.to_string(),
    }))
}

/// `bridgeReply`: what the switch said, as a JSON string (the spec shows a
/// string holding JSON).
fn bridge_text(d: &Dispatched) -> String {
    let v = match d {
        Dispatched::Placed {
            node,
            trunk_id,
            duplicate,
        } => {
            serde_json::json!({"placed": true, "node": node, "trunkId": trunk_id, "duplicate": duplicate})
        }
        Dispatched::Failed { status, detail } => {
            serde_json::json!({"placed": false, "status": status.as_str(), "error": detail})
        }
        Dispatched::Unknown { node, detail } => serde_json::json!({
            "placed": null, "node": node, "error": detail,
            "note": "the switch did not answer in time; the call is retried on the same node"
        }),
        Dispatched::Deferred { until, detail } => serde_json::json!({
            "placed": false, "deferred": true, "retryAtUtc": until.to_iso(), "error": detail,
            "note": "no room on the trunk or node, or no node up, now; the call waits, its attempt not spent"
        }),
        Dispatched::Lost => {
            serde_json::json!({"placed": false, "error": "taken over or cancelled"})
        }
    };
    v.to_string()
}

/// `GET /v1/calls`
pub async fn list(
    State(state): State<AppState>,
    Admin(who): Admin,
    query: QueryParams,
) -> ApiResult<Response> {
    let paging = Paging::from_query(&query)?;
    let mut filter = CallFilter::default();
    if let Some(list) = query.get("status") {
        for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let status = CallStatus::parse(s).ok_or_else(|| {
                ApiError::field(
                    "status",
                    format!("unknown status '{s}' (valid: {})", CallStatus::expected()),
                )
            })?;
            if !filter.statuses.contains(&status) {
                filter.statuses.push(status);
            }
        }
    }
    let page = state
        .store
        .list_calls_json(
            &who.tenant,
            &filter,
            paging.limit,
            paging.offset,
            render_call,
        )
        .await?;
    Ok(json::list_response(
        page,
        paging,
        &query,
        "/api.ashx/v1/calls",
    ))
}

fn no_such_call(id: &str) -> ApiError {
    ApiError::not_found(format!("No call with id={id}"))
}

/// `GET /v1/calls/{id}`
pub async fn get_one(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let call_id = CallId::parse(&id).map_err(|_| no_such_call(&id))?;
    let call = state
        .store
        .call(&who.tenant, &call_id)
        .await?
        .ok_or_else(|| no_such_call(&id))?;
    Ok(axum::Json(CallView::from(&call.as_row())).into_response())
}

/// How long a hangup of a call on a switch waits for the call's end to
/// come back before answering with the status it has then.
pub const HANGUP_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Polls `f` every 100 ms until it gives a value or `limit` has passed
/// (a switch's end takes some tens of ms to come back through its journal
/// and the event stream; a mass hangup costs at most 30 reads a call).
pub async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    limit: std::time::Duration,
    mut f: impl FnMut() -> F,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `POST /v1/calls/{id}/hangup`: idempotent.
pub async fn hangup(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<HangupReply>> {
    let call_id = CallId::parse(&id).map_err(|_| no_such_call(&id))?;
    let now = state.now();
    let reply = |status, was_noop| HangupReply {
        ok: true,
        call_id: call_id.to_string(),
        new_status: CallStatus::to_string(&status),
        actor: who.username.clone(),
        was_noop,
    };
    match state
        .store
        .hangup_unplaced(&who.tenant, &call_id, now)
        .await?
    {
        HangupResult::NotFound => Err(no_such_call(&id)),
        HangupResult::Noop(status) => Ok(axum::Json(reply(status, true))),
        HangupResult::Cancelled { lost_on } => {
            tracing::info!(call = %call_id, actor = %who.username, "scheduled call cancelled");
            if let Some(node) = lost_on {
                // Its lost attempt may still be up there.
                state.switch.want_lost_hangups(&node);
            }
            Ok(axum::Json(reply(CallStatus::Cancelled, false)))
        }
        HangupResult::OnSwitch(status, node, attempt) => {
            // The switch ends it (CANCEL or BYE) and its event says so: the
            // status shown is the call's once that event is in (normally
            // `cancelled` within a fraction of a second), or the current
            // one if it takes longer than HANGUP_WAIT.
            // Of several hangups at once, the one the switch acted on is
            // not a no-op; the others are.
            let (mut status, mut node, mut attempt) = (status, node, attempt);
            let mut moves = 0;
            let hung = loop {
                let hung = match state.switch.hangup(&node, call_id.as_str(), attempt).await {
                    Ok(h) => h,
                    Err(e) => {
                        // Asked to hang up: whatever becomes of this
                        // attempt, the callee is not dialled again.
                        state
                            .store
                            .note_hangup_request(&who.tenant, &call_id, now)
                            .await?;
                        return Err(hangup_error(
                            e,
                            "; its retries are called off, so it is not dialled again",
                        ));
                    }
                };
                if hung != Hangup::Unknown || status != CallStatus::Dispatching {
                    break hung;
                }
                // Still being dispatched and its attempt unknown to its
                // node: its PlaceCall has not reached the node, and the
                // node, told of the hangup, refuses it if it still comes.
                // It is cancelled here, unless it moved on meanwhile (its
                // dispatcher deferred it and another took it to another
                // node): then the hangup goes there.
                match state
                    .store
                    .hangup_unknown_to_node(&who.tenant, &call_id, &node, attempt, now)
                    .await?
                {
                    HangupResult::Cancelled { lost_on } => {
                        // (Or it was lost meanwhile, waiting for its
                        // retry: hung up there if the node still has it.)
                        if let Some(lost) = lost_on {
                            state.switch.want_lost_hangups(&lost);
                        }
                        tracing::info!(call = %call_id, actor = %who.username, node = %node,
                            "call cancelled before its node knew it");
                        return Ok(axum::Json(reply(CallStatus::Cancelled, false)));
                    }
                    HangupResult::OnSwitch(s, n, a) if (n != node || a != attempt) && moves < 3 => {
                        moves += 1;
                        (status, node, attempt) = (s, n, a);
                    }
                    HangupResult::OnSwitch(s, ..) => {
                        status = s;
                        break hung;
                    }
                    HangupResult::Noop(s) => return Ok(axum::Json(reply(s, true))),
                    HangupResult::NotFound => return Err(no_such_call(&id)),
                }
            };
            let noop = hung.was_noop();
            tracing::info!(call = %call_id, actor = %who.username, node = %node, noop, "hangup sent to the switch");
            let ended = wait_for(HANGUP_WAIT, || async {
                let c = state.store.call(&who.tenant, &call_id).await.ok()??;
                (!matches!(c.status, CallStatus::Dispatching | CallStatus::InFlight))
                    .then_some(c.status)
            })
            .await;
            Ok(axum::Json(reply(ended.unwrap_or(status), noop)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::json::samples;

    /// The list rows are byte for byte what serde makes of `CallView` (the
    /// shape `GET /calls/{id}` and the OpenAPI document describe), across
    /// text that needs escaping, NULLs, extreme numbers and every status.
    #[test]
    fn render_call_is_serde_of_call_view() {
        let strings = samples::strings();
        let ints = samples::ints();
        let times: Vec<Option<UtcMillis>> = [None, Some(0), Some(-1), Some(1_767_225_600_123)]
            .into_iter()
            .chain(ints.iter().map(|&n| Some(n)))
            .map(|t| t.map(UtcMillis))
            .collect();
        let s = |i: usize| strings[i % strings.len()].as_str();
        let n = |i: usize| ints[i % ints.len()];
        let t = |i: usize| times[i % times.len()];
        for i in 0..strings.len() * 3 {
            let row = CallRow {
                call_id: s(i),
                tenant: s(i + 1),
                requested_by: s(i + 2),
                phone: s(i + 3),
                display_name: s(i + 4),
                email: s(i + 5),
                model: s(i + 6),
                voice: s(i + 7),
                language: s(i + 8),
                max_seconds: n(i),
                retries: n(i + 1),
                retry_delay_minutes: n(i + 2),
                trunk_id: (i % 3 != 0).then(|| s(i + 9)),
                status: CallStatus::ALL[i % CallStatus::ALL.len()],
                created_at: t(i).unwrap_or(UtcMillis(7)),
                scheduled_for: t(i + 1),
                dispatched_at: t(i + 2),
                answered_at: t(i + 3),
                ended_at: t(i + 4),
                ended_reason: s(i + 10),
                duration_sec: n(i + 3),
                transcript_path: s(i + 11),
                error_detail: s(i + 12),
                attempt: n(i + 4),
                retries_left: n(i + 5),
            };
            let mut out = Vec::new();
            render_call(&row, &mut out).unwrap();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&CallView::from(&row)).unwrap(),
                "{row:?}"
            );
        }
    }
}
