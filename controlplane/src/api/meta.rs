//! Self-description and operations endpoints: the `GET /api.ashx/v1`
//! catalogue, the OpenAPI document, health, readiness and metrics.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::ENDPOINTS;
use crate::auth::Admin;
use crate::metrics::NodeSample;
use crate::state::AppState;

/// Changes with every build, so monitoring can tell when handlers changed.
pub const BUILD: &str = match option_env!("CODEB_BUILD") {
    Some(b) => b,
    None => env!("CARGO_PKG_VERSION"),
};

#[derive(Serialize, utoipa::ToSchema)]
pub struct CatalogueEntry {
    pub method: String,
    pub path: String,
    pub description: String,
    pub area: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Catalogue {
    pub name: &'static str,
    pub version: &'static str,
    pub build: &'static str,
    pub endpoints: Vec<CatalogueEntry>,
    pub auth: &'static str,
    pub pagination: &'static str,
    pub errors: &'static str,
}

/// `GET /api.ashx/v1`: every route, from the table that serves them.
pub async fn catalogue() -> axum::Json<Catalogue> {
    axum::Json(Catalogue {
        name: "CodeB Platform REST API",
        version: "v1",
        build: BUILD,
        endpoints: ENDPOINTS
            .iter()
            .map(|e| CatalogueEntry {
                method: e.method.as_str().to_owned(),
                path: e.path.to_owned(),
                description: e.description.to_owned(),
                area: e.area.to_owned(),
            })
            .collect(),
        auth: "Authorization: Bearer <token>. token = OIDC access token (role=admin) OR an ak_-prefixed API key minted via /api-keys-admin.html",
        pagination: "?limit=N&offset=M  (defaults 50, 0)",
        errors: "{ error: <code>, error_description: <text> }",
    })
}

/// `GET /api.ashx/v1/openapi.json`
pub async fn openapi(State(state): State<AppState>, _admin: Admin) -> Response {
    axum::Json(super::openapi::document(&state.config.issuer, BUILD)).into_response()
}

pub async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => axum::Json(serde_json::json!({ "status": "ready" })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({ "status": "database unavailable" })),
            )
                .into_response()
        }
    }
}

/// `GET /metrics` (needs a bearer: configure the scraper with an API key).
pub async fn metrics(State(state): State<AppState>, _admin: Admin) -> Response {
    let calls = match state.store.live_call_counts().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "metrics: live calls not counted");
            Vec::new()
        }
    };
    let nodes: Vec<NodeSample> = state
        .switch
        .nodes()
        .iter()
        .map(|n| {
            let h = n.health();
            NodeSample {
                url: n.url().to_owned(),
                up: h.healthy,
                active_calls: h.stats.map_or(0, |s| i64::from(s.active_calls)),
            }
        })
        .collect();
    state.metrics.set_live(&calls, &nodes);
    let mut resp = state.metrics.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}
