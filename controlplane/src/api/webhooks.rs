//! `/api.ashx/v1/webhooks`: subscriptions, their test fire, resume and
//! secret rotation. The signing secret is generated here, returned once by
//! `POST` (and by a rotation), and never again. A receiver URL passes the
//! SSRF guard before it is stored. (The delivery log is in `deliveries`.)

use axum::extract::State;

use super::extract::Path;
use axum::http::StatusCode;
use codeb_types::{EventName, SubscriptionId, UtcMillis};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, ListEnvelope, OptionalJsonBody, Paging, QueryParams};
use crate::auth::Admin;
use crate::crypto;
use crate::state::AppState;
use crate::store::{Audience, SubscriptionRecord};
use crate::webhooks::sign::generate_secret;
use crate::webhooks::{GuardError, UrlGuard};

const MAX_URL_LEN: usize = 2048;

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub active: bool,
    pub created_at_utc: String,
    pub created_by: String,
    pub last_fired_utc: Option<String>,
    pub failures: i64,
    /// Why the subscription stopped (present only while it is paused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_at_utc: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionCreated {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub active: bool,
    pub created_at_utc: String,
    pub created_by: String,
    /// The HMAC signing secret. Shown only in this response.
    pub secret: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SubscriptionDeleted {
    pub deleted: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionInput {
    /// http(s) URL of the receiver.
    pub url: Option<String>,
    /// Event names, or `["*"]` for all.
    pub events: Option<Vec<String>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestFired {
    pub ok: bool,
    pub webhook_id: String,
    pub event: String,
    pub event_id: String,
    /// Its `X-CodeB-Delivery-Id`; follow it in the delivery log.
    pub delivery_id: String,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotateInput {
    /// Hours the previous secret keeps signing beside the new one
    /// (0-168, default 24; 0 retires it at once).
    pub grace_hours: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRotated {
    pub id: String,
    /// The new signing secret. Shown only in this response.
    pub secret: String,
    /// Until then the previous secret also signs (`X-CodeB-Signature`
    /// stays with it; `X-CodeB-Signature-Next` carries the new one).
    pub previous_secret_expires_utc: String,
}

const DEFAULT_GRACE_HOURS: i64 = 24;
const MAX_GRACE_HOURS: i64 = 168;

impl From<SubscriptionRecord> for SubscriptionView {
    fn from(s: SubscriptionRecord) -> Self {
        let paused = !s.active;
        SubscriptionView {
            id: s.id.to_string(),
            url: s.url,
            events: s.events,
            active: s.active,
            created_at_utc: s.created_at.to_iso(),
            created_by: s.created_by,
            last_fired_utc: s.last_fired_at.map(|t| t.to_iso()),
            failures: s.failures,
            paused_reason: (paused && !s.paused_reason.is_empty()).then_some(s.paused_reason),
            paused_at_utc: s.paused_at.filter(|_| paused).map(UtcMillis::to_iso),
        }
    }
}

fn receiver_url(raw: &str) -> ApiResult<url::Url> {
    if raw.len() > MAX_URL_LEN {
        return Err(ApiError::field(
            "url",
            format!("must be at most {MAX_URL_LEN} characters"),
        ));
    }
    let url =
        url::Url::parse(raw).map_err(|e| ApiError::field("url", format!("is not a URL ({e})")))?;
    UrlGuard::target(&url).map_err(|e| ApiError::field("url", e))?;
    Ok(url)
}

/// The SSRF guard's verdict on a new receiver URL.
async fn guarded(state: &AppState, url: &url::Url) -> ApiResult<()> {
    state.guard.check_new_url(url).await.map_err(|e| match e {
        GuardError::BadUrl(why) => ApiError::field("url", why),
        other => ApiError::new(
            StatusCode::BAD_REQUEST,
            "url_not_allowed",
            format!(
                "url: {other}; webhooks may not reach internal addresses \
                 (an operator can allow a network with CODEB_WEBHOOK_ALLOW)"
            ),
        ),
    })
}

fn subscription_id(id: &str) -> ApiResult<SubscriptionId> {
    SubscriptionId::parse(id)
        .map_err(|_| ApiError::not_found(format!("No webhook subscription with id={id}")))
}

fn event_list(events: Option<Vec<String>>) -> ApiResult<Vec<String>> {
    let events = events.unwrap_or_default();
    if events.is_empty() {
        return Err(ApiError::field(
            "events",
            "is required: a list of event names, or [\"*\"]",
        ));
    }
    if events.len() > 64 {
        return Err(ApiError::field("events", "lists too many entries"));
    }
    let mut out: Vec<String> = Vec::new();
    for e in events {
        if e != "*" && EventName::parse(&e).is_none() {
            return Err(ApiError::field(
                "events",
                format!("unknown event '{e}' (valid: *, {})", EventName::expected()),
            ));
        }
        if !out.contains(&e) {
            out.push(e);
        }
    }
    if out.iter().any(|e| e == "*") {
        out = vec!["*".to_owned()];
    }
    Ok(out)
}

/// `GET /v1/webhooks`
pub async fn list(
    State(state): State<AppState>,
    Admin(who): Admin,
    query: QueryParams,
) -> ApiResult<axum::Json<ListEnvelope<SubscriptionView>>> {
    let paging = Paging::from_query(&query)?;
    let page = state
        .store
        .list_subscriptions(&who.tenant, paging.limit, paging.offset)
        .await?;
    let data = page.items.into_iter().map(SubscriptionView::from).collect();
    Ok(axum::Json(ListEnvelope::new(
        data,
        page.total,
        paging,
        &query,
        "/api.ashx/v1/webhooks",
    )))
}

/// `POST /v1/webhooks`
pub async fn create(
    State(state): State<AppState>,
    Admin(who): Admin,
    JsonBody(input): JsonBody<SubscriptionInput>,
) -> ApiResult<(StatusCode, axum::Json<SubscriptionCreated>)> {
    let url = receiver_url(input.url.as_deref().unwrap_or(""))?;
    let events = event_list(input.events)?;
    guarded(&state, &url).await?;
    let secret = generate_secret();
    let record = SubscriptionRecord {
        id: SubscriptionId::from_random(crypto::random_bytes()),
        tenant: who.tenant.clone(),
        url: url.to_string(),
        events,
        secret: secret.clone(),
        active: true,
        created_at: state.now(),
        created_by: who.username.clone(),
        last_fired_at: None,
        failures: 0,
        paused_reason: String::new(),
        paused_at: None,
        prev_secret: String::new(),
        prev_secret_until: None,
    };
    state.store.create_subscription(&record).await?;
    tracing::info!(webhook = %record.id, url = %record.url, "webhook subscription created");
    Ok((
        StatusCode::CREATED,
        axum::Json(SubscriptionCreated {
            id: record.id.to_string(),
            url: record.url,
            events: record.events,
            active: record.active,
            created_at_utc: record.created_at.to_iso(),
            created_by: record.created_by,
            secret,
        }),
    ))
}

/// `DELETE /v1/webhooks/{id}`
pub async fn remove(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<SubscriptionDeleted>> {
    let sid = subscription_id(&id)?;
    if !state.store.delete_subscription(&who.tenant, &sid).await? {
        return Err(ApiError::not_found(format!(
            "No webhook subscription with id={id}"
        )));
    }
    Ok(axum::Json(SubscriptionDeleted {
        deleted: sid.to_string(),
    }))
}

/// `POST /v1/webhooks/{id}/test`: fires `webhook.test` at this
/// subscription only (whatever events it lists).
pub async fn test_fire(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, axum::Json<TestFired>)> {
    let sid = subscription_id(&id)?;
    if state.store.subscription(&who.tenant, &sid).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "No webhook subscription with id={id}"
        )));
    }
    let data = serde_json::json!({
        "webhookId": sid.as_str(),
        "requestedBy": who.username,
        "message": "Test event from the CodeB platform: if the signature verifies, your receiver is ready.",
    });
    let mut tx = state.store.begin().await?;
    let (event_id, deliveries) = tx
        .record_event_for(
            &who.tenant,
            EventName::WebhookTest,
            &data,
            None,
            Audience::One(&sid),
            state.now(),
        )
        .await?;
    tx.commit().await?;
    let delivery = deliveries
        .first()
        .ok_or_else(|| ApiError::not_found(format!("No webhook subscription with id={id}")))?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(TestFired {
            ok: true,
            webhook_id: sid.to_string(),
            event: EventName::WebhookTest.as_str().to_owned(),
            event_id: event_id.to_string(),
            delivery_id: delivery.to_string(),
        }),
    ))
}

/// `POST /v1/webhooks/{id}/resume`: reactivates a paused subscription
/// (failures back to 0); deliveries held meanwhile go out in order.
pub async fn resume(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<SubscriptionView>> {
    let sid = subscription_id(&id)?;
    let s = state
        .store
        .resume_subscription(&who.tenant, &sid)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No webhook subscription with id={id}")))?;
    tracing::info!(webhook = %sid, by = %who.username, "webhook subscription resumed");
    Ok(axum::Json(s.into()))
}

/// `POST /v1/webhooks/{id}/rotate-secret`
pub async fn rotate_secret(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
    OptionalJsonBody(input): OptionalJsonBody<RotateInput>,
) -> ApiResult<axum::Json<SecretRotated>> {
    let sid = subscription_id(&id)?;
    let grace = super::validate::int_range(
        "graceHours",
        input.grace_hours.unwrap_or(DEFAULT_GRACE_HOURS),
        0,
        MAX_GRACE_HOURS,
    )?;
    let secret = generate_secret();
    let until = state.now().plus_ms(grace * 3_600_000);
    if !state
        .store
        .rotate_secret(&who.tenant, &sid, &secret, until)
        .await?
    {
        return Err(ApiError::not_found(format!(
            "No webhook subscription with id={id}"
        )));
    }
    tracing::info!(webhook = %sid, by = %who.username, grace_hours = grace, "webhook secret rotated");
    Ok(axum::Json(SecretRotated {
        id: sid.to_string(),
        secret,
        previous_secret_expires_utc: until.to_iso(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_events() {
        assert!(receiver_url("https://hooks.example.com/codeb").is_ok());
        for bad in [
            "ftp://x.com/",
            "not a url",
            "https://user:pw@x.com/",
            "file:///etc/passwd",
            "http://",
        ] {
            assert!(receiver_url(bad).is_err(), "{bad}");
        }
        assert_eq!(
            event_list(Some(vec!["*".into(), "call.ended".into()])).unwrap(),
            vec!["*"]
        );
        assert_eq!(
            event_list(Some(vec!["call.ended".into(), "call.ended".into()])).unwrap(),
            vec!["call.ended"]
        );
        assert!(event_list(Some(vec!["call.exploded".into()])).is_err());
        assert!(event_list(Some(vec![])).is_err());
        assert!(event_list(None).is_err());
    }
}
