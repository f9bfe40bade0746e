//! `/api.ashx/v1/api-keys`: long-lived `ak_` keys for server-to-server use.
//! A key is shown once at creation and stored only as its SHA-256; minting
//! needs an admin signed in with OIDC, so a leaked key cannot make more.

use axum::extract::State;

use super::extract::Path;
use axum::http::StatusCode;
use codeb_types::ApiKeyId;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, ListEnvelope, Paging, QueryParams};
use super::validate;
use crate::auth::{Admin, OidcAdmin, api_key_hash, generate_api_key};
use crate::crypto;
use crate::state::AppState;
use crate::store::ApiKeyRecord;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyInput {
    /// What the key is for, e.g. `crm-sync`.
    pub name: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyCreated {
    pub id: String,
    pub name: String,
    /// The key itself (`ak_` + 32 hex). Shown only in this response.
    pub key: String,
    pub created_at_utc: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    pub created_at_utc: String,
    pub created_by: String,
    pub last_used_utc: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyRevoked {
    pub revoked: String,
}

impl From<ApiKeyRecord> for ApiKeyView {
    fn from(k: ApiKeyRecord) -> Self {
        ApiKeyView {
            id: k.id.to_string(),
            name: k.name,
            created_at_utc: k.created_at.to_iso(),
            created_by: k.created_by,
            last_used_utc: k.last_used_at.map(|t| t.to_iso()),
        }
    }
}

/// `GET /v1/api-keys`
pub async fn list(
    State(state): State<AppState>,
    Admin(who): Admin,
    query: QueryParams,
) -> ApiResult<axum::Json<ListEnvelope<ApiKeyView>>> {
    let paging = Paging::from_query(&query)?;
    let page = state
        .store
        .list_api_keys(Some(&who.tenant), paging.limit, paging.offset)
        .await?;
    let data = page.items.into_iter().map(ApiKeyView::from).collect();
    Ok(axum::Json(ListEnvelope::new(
        data,
        page.total,
        paging,
        &query,
        "/api.ashx/v1/api-keys",
    )))
}

/// `POST /v1/api-keys`
pub async fn create(
    State(state): State<AppState>,
    OidcAdmin(who): OidcAdmin,
    JsonBody(input): JsonBody<ApiKeyInput>,
) -> ApiResult<(StatusCode, axum::Json<ApiKeyCreated>)> {
    let name = validate::required_text("name", input.name, 64, false)?;
    let key = generate_api_key();
    let record = state
        .store
        .create_api_key(
            &ApiKeyId::from_random(crypto::random_bytes()),
            &who.tenant,
            &name,
            &api_key_hash(&key),
            &who.username,
            state.now(),
        )
        .await?;
    tracing::info!(key = %record.id, name = %record.name, by = %who.username, "API key minted");
    Ok((
        StatusCode::CREATED,
        axum::Json(ApiKeyCreated {
            id: record.id.to_string(),
            name: record.name,
            key,
            created_at_utc: record.created_at.to_iso(),
        }),
    ))
}

/// `DELETE /v1/api-keys/{id}`: the key stops working at once.
pub async fn revoke(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<ApiKeyRevoked>> {
    let not_found = || ApiError::not_found(format!("No API key with id={id}"));
    let key_id = ApiKeyId::parse(&id).map_err(|_| not_found())?;
    if !state
        .store
        .revoke_api_key(Some(&who.tenant), &key_id, state.now())
        .await?
    {
        return Err(not_found());
    }
    tracing::info!(key = %key_id, by = %who.username, "API key revoked");
    Ok(axum::Json(ApiKeyRevoked {
        revoked: key_id.to_string(),
    }))
}
