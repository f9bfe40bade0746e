//! `/api.ashx/v1/webhooks`: subscriptions. The signing secret is generated
//! here, returned once by `POST`, and never again.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine as _;
use codeb_types::{EventName, SubscriptionId};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, ListEnvelope, Paging, QueryParams};
use crate::auth::Admin;
use crate::crypto;
use crate::state::AppState;
use crate::store::SubscriptionRecord;

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

impl From<SubscriptionRecord> for SubscriptionView {
    fn from(s: SubscriptionRecord) -> Self {
        SubscriptionView {
            id: s.id.to_string(),
            url: s.url,
            events: s.events,
            active: s.active,
            created_at_utc: s.created_at.to_iso(),
            created_by: s.created_by,
            last_fired_utc: s.last_fired_at.map(|t| t.to_iso()),
            failures: s.failures,
        }
    }
}

fn receiver_url(raw: &str) -> ApiResult<String> {
    if raw.len() > MAX_URL_LEN {
        return Err(ApiError::field(
            "url",
            format!("must be at most {MAX_URL_LEN} characters"),
        ));
    }
    let url =
        url::Url::parse(raw).map_err(|e| ApiError::field("url", format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::field(
            "url",
            "must be an http or https URL with a host",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::field("url", "must not carry credentials"));
    }
    Ok(url.to_string())
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
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(crypto::random_bytes::<32>())
    );
    let record = SubscriptionRecord {
        id: SubscriptionId::from_random(crypto::random_bytes()),
        tenant: who.tenant.clone(),
        url,
        events,
        secret: secret.clone(),
        active: true,
        created_at: state.now(),
        created_by: who.username.clone(),
        last_fired_at: None,
        failures: 0,
        paused_reason: String::new(),
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
    let not_found = || ApiError::not_found(format!("No webhook subscription with id={id}"));
    let sid = SubscriptionId::parse(&id).map_err(|_| not_found())?;
    if !state.store.delete_subscription(&who.tenant, &sid).await? {
        return Err(not_found());
    }
    Ok(axum::Json(SubscriptionDeleted {
        deleted: sid.to_string(),
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
