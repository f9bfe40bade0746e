//! Transcript share links: `POST/GET /transcripts/{callId}/shares`,
//! `DELETE /transcripts/{callId}/shares/{id}`, and the public page
//! `GET /share/{token}` (no auth; every open is counted and fires
//! `share.viewed`). The token (32 random bytes, base64url) is shown once,
//! in the create response; only its SHA-256 is stored.

use axum::extract::State;

use super::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine as _;
use codeb_types::{ShareId, UtcMillis};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{ClientIp, ListEnvelope, OptionalJsonBody, Paging, QueryParams};
use super::share_page;
use crate::auth::Admin;
use crate::crypto;
use crate::state::AppState;
use crate::store::{NewShare, ShareRecord};

/// The spec's example lifetime.
const DEFAULT_TTL_HOURS: i64 = 168;
const MAX_TTL_HOURS: i64 = 8760;
/// base64url of 32 bytes, unpadded.
const TOKEN_LEN: usize = 43;

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShareInput {
    /// Hours until the link stops working (0 = never; default 168, at
    /// most 8760).
    pub ttl_hours: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShareCreated {
    pub id: String,
    pub call_id: String,
    /// The share token. Shown only in this response.
    pub token: String,
    /// The public URL (`<public base URL>/share/<token>`).
    pub url: String,
    pub ttl_hours: i64,
    pub created_by: String,
    pub created_at_utc: String,
    /// Null when the link never expires.
    pub expires_utc: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShareItem {
    pub id: String,
    pub call_id: String,
    /// `...` and the token's last 8 characters.
    pub token: String,
    pub ttl_hours: i64,
    pub created_by: String,
    pub created_at_utc: String,
    pub expires_utc: Option<String>,
    pub expired: bool,
    pub views: i64,
    pub last_viewed_utc: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ShareDeleted {
    pub deleted: String,
}

fn item(s: ShareRecord, now: UtcMillis) -> ShareItem {
    ShareItem {
        token: s.masked_token(),
        expired: s.is_expired(now),
        id: s.id.to_string(),
        call_id: s.call_id,
        ttl_hours: s.ttl_hours,
        created_by: s.created_by,
        created_at_utc: s.created_at.to_iso(),
        expires_utc: s.expires_at.map(UtcMillis::to_iso),
        views: s.views,
        last_viewed_utc: s.last_viewed_at.map(UtcMillis::to_iso),
    }
}

fn no_transcript(call_id: &str) -> ApiError {
    ApiError::not_found(format!("No transcript for callId={call_id}"))
}

/// `POST /v1/transcripts/{callId}/shares`
pub async fn create(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(call_id): Path<String>,
    OptionalJsonBody(input): OptionalJsonBody<ShareInput>,
) -> ApiResult<(StatusCode, axum::Json<ShareCreated>)> {
    let ttl = super::validate::int_range(
        "ttlHours",
        input.ttl_hours.unwrap_or(DEFAULT_TTL_HOURS),
        0,
        MAX_TTL_HOURS,
    )?;
    let token =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(crypto::random_bytes::<32>());
    let now = state.now();
    let share = NewShare {
        id: ShareId::from_random(crypto::random_bytes()),
        tenant: who.tenant.clone(),
        call_id: call_id.clone(),
        token_hash: crypto::sha256_hex(token.as_bytes()),
        token_tail: token[token.len() - 8..].to_owned(),
        ttl_hours: ttl,
        created_by: who.username.clone(),
        created_at: now,
        expires_at: (ttl > 0).then(|| now.plus_ms(ttl * 3_600_000)),
    };
    if state.store.create_share(&share).await?.is_none() {
        return Err(no_transcript(&call_id));
    }
    tracing::info!(share = %share.id, call = %call_id, by = %who.username, ttl_hours = ttl, "transcript share created");
    Ok((
        StatusCode::CREATED,
        axum::Json(ShareCreated {
            id: share.id.to_string(),
            call_id,
            url: format!("{}/share/{token}", state.config.issuer),
            token,
            ttl_hours: ttl,
            created_by: share.created_by,
            created_at_utc: now.to_iso(),
            expires_utc: share.expires_at.map(UtcMillis::to_iso),
        }),
    ))
}

/// `GET /v1/transcripts/{callId}/shares` (newest first, expired ones too).
pub async fn list(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(call_id): Path<String>,
    query: QueryParams,
) -> ApiResult<axum::Json<ListEnvelope<ShareItem>>> {
    let paging = Paging::from_query(&query)?;
    let page = state
        .store
        .list_shares(&who.tenant, &call_id, paging.limit, paging.offset)
        .await?
        .ok_or_else(|| no_transcript(&call_id))?;
    let now = state.now();
    let data = page.items.into_iter().map(|s| item(s, now)).collect();
    let path = format!(
        "/api.ashx/v1/transcripts/{}/shares",
        url::form_urlencoded::byte_serialize(call_id.as_bytes()).collect::<String>()
    );
    Ok(axum::Json(ListEnvelope::new(
        data, page.total, paging, &query, &path,
    )))
}

/// `DELETE /v1/transcripts/{callId}/shares/{id}`: the link answers 404
/// from now on.
pub async fn remove(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path((call_id, id)): Path<(String, String)>,
) -> ApiResult<axum::Json<ShareDeleted>> {
    let not_found = || ApiError::not_found(format!("No share with id={id} for callId={call_id}"));
    let sid = ShareId::parse(&id).map_err(|_| not_found())?;
    state
        .store
        .revoke_share(&who.tenant, &call_id, &sid, &who.username, state.now())
        .await?
        .ok_or_else(not_found)?;
    tracing::info!(share = %sid, call = %call_id, by = %who.username, "transcript share revoked");
    Ok(axum::Json(ShareDeleted {
        deleted: sid.to_string(),
    }))
}

fn is_token_shape(t: &str) -> bool {
    t.len() == TOKEN_LEN
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `GET /share/{token}`: public. An unknown, revoked or expired token gets
/// the HTML not-found page (404), which says nothing about which.
pub async fn page(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(token): Path<String>,
) -> ApiResult<Response> {
    if !is_token_shape(&token) {
        return Ok(share_page::not_found());
    }
    let viewer = crate::webhooks::addr::canonical(ip).to_string();
    let Some(view) = state
        .store
        .view_share(&crypto::sha256_hex(token.as_bytes()), &viewer, state.now())
        .await?
    else {
        return Ok(share_page::not_found());
    };
    let Some(transcript) = state
        .store
        .transcript(&view.share.tenant, &view.share.call_id)
        .await?
    else {
        return Ok(share_page::not_found());
    };
    Ok(share_page::response(&transcript))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape() {
        let t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xfb; 32]);
        assert!(is_token_shape(&t), "{t}");
        assert!(!is_token_shape(&t[1..]));
        assert!(!is_token_shape(&format!("{}=", &t[1..])));
        assert!(!is_token_shape("../../etc/passwd"));
    }
}
