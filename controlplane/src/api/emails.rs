//! `/api.ashx/v1/emails`: the transcript + outcome emails of the tenant's
//! outbound calls, as the outbox holds them (our addition to the v1 spec,
//! which promises the email but gives no way to see it). An operator sees
//! what was sent, what waits for the SMTP relay and why one failed, and
//! queues a failed one again once the relay is fixed.

use axum::extract::State;

use super::extract::Path;
use codeb_types::UtcMillis;
use serde::Serialize;

use super::error::{ApiError, ApiResult};
use super::extract::{ListEnvelope, Paging, QueryParams};
use crate::auth::Admin;
use crate::state::AppState;
use crate::store::{EmailRecord, EmailState};

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailView {
    /// Also the local part of the message's `Message-ID`.
    pub id: String,
    /// The outbound call the email reports.
    pub call_id: String,
    /// The call's `email`.
    pub to: String,
    pub subject: String,
    /// `queued` (waiting for the relay or for its next attempt), `sent`
    /// (the relay accepted it) or `failed` (`lastError` says why).
    pub status: &'static str,
    pub attempts: i64,
    /// When the next attempt is due; null unless queued.
    pub next_attempt_utc: Option<String>,
    /// Why the last attempt failed; empty if none did.
    pub last_error: String,
    pub created_at_utc: String,
    pub finished_at_utc: Option<String>,
    /// The message text; only on `GET /emails/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl EmailView {
    fn new(e: EmailRecord, with_body: bool) -> EmailView {
        EmailView {
            status: e.state.as_str(),
            next_attempt_utc: (e.state == EmailState::Queued).then(|| e.next_attempt_at.to_iso()),
            id: e.id,
            call_id: e.call_id,
            to: e.recipient,
            subject: e.subject,
            attempts: e.attempts,
            last_error: e.last_error,
            created_at_utc: e.created_at.to_iso(),
            finished_at_utc: e.finished_at.map(UtcMillis::to_iso),
            body: with_body.then_some(e.body),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryReply {
    /// False when the email was not failed (nothing changed).
    pub requeued: bool,
    pub email: EmailView,
}

/// `GET /v1/emails`: newest first; `status=queued|sent|failed` filters.
pub async fn list(
    State(state): State<AppState>,
    Admin(who): Admin,
    query: QueryParams,
) -> ApiResult<axum::Json<ListEnvelope<EmailView>>> {
    let paging = Paging::from_query(&query)?;
    let status = match query.get("status").map(str::trim) {
        None | Some("") => None,
        Some(s) => Some(EmailState::parse(s).ok_or_else(|| {
            ApiError::field(
                "status",
                format!("unknown status '{s}' (valid: queued, sent, failed)"),
            )
        })?),
    };
    let page = state
        .store
        .email_page(&who.tenant, status, paging.limit, paging.offset)
        .await?;
    let data = page
        .items
        .into_iter()
        .map(|e| EmailView::new(e, false))
        .collect();
    Ok(axum::Json(ListEnvelope::new(
        data,
        page.total,
        paging,
        &query,
        "/api.ashx/v1/emails",
    )))
}

fn no_such_email(id: &str) -> ApiError {
    ApiError::not_found(format!("No email with id={id}"))
}

/// `GET /v1/emails/{id}`: with the message text.
pub async fn get_one(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<EmailView>> {
    let email = state
        .store
        .email(&who.tenant, &id)
        .await?
        .ok_or_else(|| no_such_email(&id))?;
    Ok(axum::Json(EmailView::new(email, true)))
}

/// `POST /v1/emails/{id}/retry`: a failed email is queued again, due now,
/// with its attempts starting over; any other is left as it is.
pub async fn retry(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<RetryReply>> {
    let (requeued, email) = state
        .store
        .retry_email(&who.tenant, &id, state.now())
        .await?
        .ok_or_else(|| no_such_email(&id))?;
    if requeued {
        tracing::info!(email = %id, call = %email.call_id, actor = %who.username,
            "failed email queued again");
    }
    Ok(axum::Json(RetryReply {
        requeued,
        email: EmailView::new(email, false),
    }))
}
