//! `/api.ashx/v1/inbound-routes`: the first-match DID routing table. List
//! and GET items are camelCase; POST/PUT/DELETE echo PascalCase, exactly as
//! the spec's examples do (integrators parse both).

use axum::extract::State;

use super::extract::Path;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, ListEnvelope, Paging, QueryParams};
use super::validate;
use crate::auth::Admin;
use crate::state::{AppState, CATCHALL_DEFAULT_USER};
use crate::store::{InboundRoute, RouteError};

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteItem {
    pub did: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_number: Option<String>,
    pub user: String,
}

/// The PascalCase echo of a written row.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RouteEcho {
    #[serde(rename = "Did")]
    pub did: String,
    #[serde(rename = "FromNumber", skip_serializing_if = "Option::is_none")]
    pub from_number: Option<String>,
    #[serde(rename = "User")]
    pub user: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RouteDeleted {
    pub deleted: RouteEcho,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteInput {
    /// Phone number, extension, `anonymous`, `*`, or any matchable string.
    #[schema(required = true, nullable = false)]
    pub did: Option<String>,
    /// Optional caller pattern (`*` wildcard, e.g. `+356*`).
    pub from_number: Option<String>,
    /// The user whose phones ring.
    #[schema(required = true, nullable = false)]
    pub user: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteUserInput {
    /// The user whose phones ring.
    #[schema(required = true, nullable = false)]
    pub user: Option<String>,
}

impl From<InboundRoute> for RouteItem {
    fn from(r: InboundRoute) -> Self {
        RouteItem {
            did: r.did,
            from_number: r.from_number,
            user: r.user,
        }
    }
}

impl From<InboundRoute> for RouteEcho {
    fn from(r: InboundRoute) -> Self {
        RouteEcho {
            did: r.did,
            from_number: r.from_number,
            user: r.user,
        }
    }
}

/// DIDs and From patterns: 1–64 bytes of visible characters (no
/// spaces), as the switch takes them.
fn pattern(field: &str, v: &str) -> ApiResult<()> {
    if (1..=64).contains(&v.len()) && !v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            "must be 1-64 bytes of characters without spaces",
        ))
    }
}

fn from_filter(query: &QueryParams) -> ApiResult<Option<String>> {
    match query.get("fromNumber").filter(|s| !s.is_empty()) {
        Some(f) => {
            pattern("fromNumber", f)?;
            Ok(Some(f.to_owned()))
        }
        None => Ok(None),
    }
}

async fn ensure_catchall(state: &AppState, tenant: &str) -> ApiResult<()> {
    state
        .store
        .ensure_catchall(tenant, CATCHALL_DEFAULT_USER, state.now())
        .await?;
    Ok(())
}

/// `GET /v1/inbound-routes`: in evaluation order.
pub async fn list(
    State(state): State<AppState>,
    Admin(who): Admin,
    query: QueryParams,
) -> ApiResult<axum::Json<ListEnvelope<RouteItem>>> {
    let paging = Paging::from_query(&query)?;
    ensure_catchall(&state, &who.tenant).await?;
    let page = state
        .store
        .list_routes(&who.tenant, paging.limit, paging.offset)
        .await?;
    let data = page.items.into_iter().map(RouteItem::from).collect();
    Ok(axum::Json(ListEnvelope::new(
        data,
        page.total,
        paging,
        &query,
        "/api.ashx/v1/inbound-routes",
    )))
}

/// `GET /v1/inbound-routes/{did}`
pub async fn get_one(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(did): Path<String>,
    query: QueryParams,
) -> ApiResult<axum::Json<RouteItem>> {
    let from = from_filter(&query)?;
    ensure_catchall(&state, &who.tenant).await?;
    let route = state
        .store
        .route(&who.tenant, &did, from.as_deref(), true)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No inbound route with did='{did}'")))?;
    Ok(axum::Json(route.into()))
}

/// `POST /v1/inbound-routes`: inserted just before the catchall.
pub async fn create(
    State(state): State<AppState>,
    Admin(who): Admin,
    JsonBody(input): JsonBody<RouteInput>,
) -> ApiResult<(StatusCode, axum::Json<RouteEcho>)> {
    let did = validate::required_text("Did", input.did, 64, false)?;
    pattern("Did", &did)?;
    let from_number = validate::optional_text("FromNumber", input.from_number, 64, false)?;
    if let Some(f) = &from_number {
        pattern("FromNumber", f)?;
    }
    let user = validate::required_text("User", input.user, 64, false)?;
    validate::sip_user("User", &user)?;
    ensure_catchall(&state, &who.tenant).await?;
    let route = InboundRoute {
        did,
        from_number,
        user,
    };
    match state
        .store
        .create_route(&who.tenant, &route, state.now())
        .await?
    {
        Ok(()) => Ok((StatusCode::CREATED, axum::Json(route.into()))),
        Err(_) => Err(ApiError::conflict(
            "duplicate_route",
            match &route.from_number {
                None => format!("An inbound route already exists for Did='{}'", route.did),
                Some(f) => format!(
                    "An inbound route already exists for Did='{}' FromNumber='{f}'",
                    route.did
                ),
            },
        )),
    }
}

/// `PUT /v1/inbound-routes/{did}[?fromNumber=…]`: only User changes.
pub async fn update(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(did): Path<String>,
    query: QueryParams,
    JsonBody(input): JsonBody<RouteUserInput>,
) -> ApiResult<axum::Json<RouteEcho>> {
    let from = from_filter(&query)?;
    let user = validate::required_text("User", input.user, 64, false)?;
    validate::sip_user("User", &user)?;
    ensure_catchall(&state, &who.tenant).await?;
    let route = state
        .store
        .update_route_user(&who.tenant, &did, from.as_deref(), &user)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(match &from {
                Some(f) => format!("No inbound route with Did='{did}' FromNumber='{f}'"),
                None => format!("No inbound route with Did='{did}'"),
            })
        })?;
    Ok(axum::Json(route.into()))
}

/// `DELETE /v1/inbound-routes/{did}[?fromNumber=…]`
pub async fn remove(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(did): Path<String>,
    query: QueryParams,
) -> ApiResult<axum::Json<RouteDeleted>> {
    let from = from_filter(&query)?;
    ensure_catchall(&state, &who.tenant).await?;
    match state
        .store
        .delete_route(&who.tenant, &did, from.as_deref())
        .await?
    {
        Ok(Some(route)) => Ok(axum::Json(RouteDeleted {
            deleted: route.into(),
        })),
        // The spec's DELETE example spells it `Did` (its GET, `did`).
        Ok(None) => Err(ApiError::not_found(format!(
            "No inbound route with Did='{did}'"
        ))),
        Err(RouteError::CannotDeleteCatchall) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "cannot_delete_catchall",
            "The '*' catchall row cannot be deleted -- the bridge requires it for unmatched inbound calls",
        )),
        Err(RouteError::Duplicate) => Err(ApiError::internal()),
    }
}
