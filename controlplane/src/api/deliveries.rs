//! The delivery log (`GET /webhooks/{id}/deliveries`: each delivery with
//! its attempts, status codes, latency and errors) and replay (`POST
//! /webhooks/deliveries/{id}/replay`: the same event body again, under a
//! new delivery id, so "exactly once per delivery id" holds for replays
//! too).

use axum::extract::State;

use super::extract::Path;
use axum::http::StatusCode;
use codeb_types::{DeliveryId, SubscriptionId, UtcMillis};
use serde::Serialize;

use super::error::{ApiError, ApiResult};
use super::extract::{ListEnvelope, Paging, QueryParams};
use crate::auth::Admin;
use crate::state::AppState;
use crate::store::{AttemptLog, DeliveryRecord, DeliveryState, ReplayOutcome};

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    /// 1-based; the `X-CodeB-Attempt` it was sent with.
    pub attempt: i64,
    pub at_utc: String,
    /// Null when no response came (refused, connection failed, timed out).
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    /// Empty on success.
    pub error: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    /// The `X-CodeB-Delivery-Id` / `webhook-id` of every attempt.
    pub id: String,
    pub event: String,
    pub event_id: String,
    pub call_id: Option<String>,
    /// `pending`, `held` (its subscription is paused), `succeeded` or
    /// `failed`.
    pub state: String,
    pub attempts: i64,
    pub created_at_utc: String,
    /// When the next attempt is due (pending only).
    pub next_attempt_utc: Option<String>,
    pub finished_at_utc: Option<String>,
    pub last_status_code: Option<i64>,
    pub last_error: String,
    /// The delivery this one replays, if it is a replay.
    pub replay_of: Option<String>,
    pub log: Vec<AttemptView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayQueued {
    pub ok: bool,
    /// The new delivery's id.
    pub delivery_id: String,
    pub replay_of: String,
}

impl From<AttemptLog> for AttemptView {
    fn from(a: AttemptLog) -> Self {
        AttemptView {
            attempt: a.attempt,
            at_utc: a.started_at.to_iso(),
            status_code: a.status_code,
            latency_ms: a.latency_ms,
            error: a.error,
        }
    }
}

impl From<DeliveryRecord> for DeliveryView {
    fn from(d: DeliveryRecord) -> Self {
        let pending = d.state == DeliveryState::Pending;
        DeliveryView {
            id: d.id.to_string(),
            event: d.event,
            event_id: d.event_id.to_string(),
            call_id: d.call_id,
            state: d.state.as_str().to_owned(),
            attempts: d.attempts,
            created_at_utc: d.created_at.to_iso(),
            next_attempt_utc: pending.then(|| d.next_attempt_at.to_iso()),
            finished_at_utc: d.finished_at.map(UtcMillis::to_iso),
            last_status_code: d.last_status,
            last_error: d.last_error,
            replay_of: d.replay_of,
            log: d.log.into_iter().map(AttemptView::from).collect(),
        }
    }
}

/// `GET /v1/webhooks/{id}/deliveries` (newest first; `?state=` filters).
pub async fn list(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
    query: QueryParams,
) -> ApiResult<axum::Json<ListEnvelope<DeliveryView>>> {
    let not_found = || ApiError::not_found(format!("No webhook subscription with id={id}"));
    let sid = SubscriptionId::parse(&id).map_err(|_| not_found())?;
    let paging = Paging::from_query(&query)?;
    let filter = match query.get("state").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(DeliveryState::parse(s).ok_or_else(|| {
            ApiError::field("state", "must be pending, held, succeeded or failed")
        })?),
    };
    let page = state
        .store
        .list_deliveries(&who.tenant, &sid, filter, paging.limit, paging.offset)
        .await?
        .ok_or_else(not_found)?;
    let data = page.items.into_iter().map(DeliveryView::from).collect();
    Ok(axum::Json(ListEnvelope::new(
        data,
        page.total,
        paging,
        &query,
        &format!("/api.ashx/v1/webhooks/{sid}/deliveries"),
    )))
}

/// `POST /v1/webhooks/deliveries/{id}/replay`
pub async fn replay(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, axum::Json<ReplayQueued>)> {
    let not_found = || ApiError::not_found(format!("No webhook delivery with id={id}"));
    let did = DeliveryId::parse(&id).map_err(|_| not_found())?;
    match state
        .store
        .replay_delivery(&who.tenant, &did, state.now())
        .await?
    {
        ReplayOutcome::NotFound => Err(not_found()),
        ReplayOutcome::StillPending => Err(ApiError::conflict(
            "delivery_pending",
            format!(
                "Delivery {id} has not finished yet (it is pending, or held while its \
                 subscription is paused); replay it once it has succeeded or failed"
            ),
        )),
        ReplayOutcome::Queued(new_id) => {
            tracing::info!(delivery = %new_id, replay_of = %did, by = %who.username, "webhook delivery replayed");
            Ok((
                StatusCode::ACCEPTED,
                axum::Json(ReplayQueued {
                    ok: true,
                    delivery_id: new_id.to_string(),
                    replay_of: did.to_string(),
                }),
            ))
        }
    }
}
