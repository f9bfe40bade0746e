//! The HTTP surface: one route table (`ENDPOINTS`) that builds the router,
//! the `GET /api.ashx/v1` catalogue and the OpenAPI document, so none of the
//! three can drift from the others.
//!
//! Layer order (outermost first): `common` (request id, `Cache-Control:
//! no-store`, early 413, metrics, error logging) → body limit → routes.

pub mod api_keys;
pub mod calls;
pub mod deliveries;
pub mod emails;
pub mod error;
pub mod extract;
pub mod inbound_calls;
pub mod inbound_routes;
pub mod json;
pub mod meta;
pub mod numbers;
pub mod openapi;
pub mod prompts;
pub mod share_page;
pub mod shares;
pub mod sip_users;
pub mod transcripts;
pub mod trunks;
pub mod validate;
pub mod webhooks;

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};

use self::error::ApiError;
use self::extract::MAX_BODY_BYTES;
use crate::auth::oidc;
use crate::metrics::{Route, method_label};
use crate::state::AppState;

/// Who may call an endpoint. Enforced by the handler's extractor (`Admin`,
/// `OidcAdmin`, or none); the sweep test checks every row against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    Admin,
    /// Admin, signed in with OIDC (API keys are refused).
    OidcAdmin,
}

/// Schema of a request or response body for the OpenAPI document.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    None,
    /// One JSON object of the named component schema.
    One(openapi::SchemaFn),
    /// The list envelope around items of the named schema.
    List(openapi::SchemaFn),
    /// Not JSON (form posts, text).
    Other(&'static str),
}

#[derive(Debug)]
pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    pub description: &'static str,
    pub area: &'static str,
    pub access: Access,
    pub request: Body,
    /// Success status and body.
    pub response: (u16, Body),
    pub handler: fn() -> MethodRouter<AppState>,
}

macro_rules! ep {
    ($m:ident $path:literal, $area:literal, $access:ident, $desc:literal,
     req: $req:expr, resp: $status:literal $resp:expr, $router:ident($h:path)) => {
        Endpoint {
            method: Method::$m,
            path: $path,
            description: $desc,
            area: $area,
            access: Access::$access,
            request: $req,
            response: ($status, $resp),
            handler: || $router($h),
        }
    };
}

use openapi::schema as s;

/// Every route the control plane serves.
pub static ENDPOINTS: &[Endpoint] = &[
    ep!(GET "/api.ashx/v1", "meta", Public, "Self-describing endpoint catalogue",
        req: Body::None, resp: 200 Body::One(s::<meta::Catalogue>), get(meta::catalogue)),
    ep!(GET "/api.ashx/v1/openapi.json", "meta", Admin, "OpenAPI 3.1 description of this API",
        req: Body::None, resp: 200 Body::Other("application/json"), get(meta::openapi)),
    ep!(POST "/api.ashx/v1/calls", "outbound-ai", Admin, "Initiate an outbound AI call",
        req: Body::One(s::<calls::CreateCall>), resp: 200 Body::One(s::<calls::CreateCallReply>),
        post(calls::create)),
    ep!(GET "/api.ashx/v1/calls", "outbound-ai", Admin, "List outbound AI calls",
        req: Body::None, resp: 200 Body::List(s::<calls::CallView<'static>>), get(calls::list)),
    ep!(GET "/api.ashx/v1/calls/{id}", "outbound-ai", Admin, "Get one call's status + outcome",
        req: Body::None, resp: 200 Body::One(s::<calls::CallView<'static>>), get(calls::get_one)),
    ep!(POST "/api.ashx/v1/calls/{id}/hangup", "outbound-ai", Admin, "Cancel/terminate a call",
        req: Body::None, resp: 200 Body::One(s::<calls::HangupReply>), post(calls::hangup)),
    ep!(GET "/api.ashx/v1/numbers", "numbers", Admin, "List virtual numbers",
        req: Body::None, resp: 200 Body::List(s::<numbers::NumberView>), get(numbers::list)),
    ep!(POST "/api.ashx/v1/numbers", "numbers", Admin, "Create a virtual number",
        req: Body::One(s::<numbers::NumberInput>), resp: 201 Body::One(s::<numbers::NumberView>),
        post(numbers::create)),
    ep!(GET "/api.ashx/v1/numbers/{number}", "numbers", Admin, "Get one virtual number",
        req: Body::None, resp: 200 Body::One(s::<numbers::NumberView>), get(numbers::get_one)),
    ep!(PUT "/api.ashx/v1/numbers/{number}", "numbers", Admin, "Update a virtual number (fields given)",
        req: Body::One(s::<numbers::NumberInput>), resp: 200 Body::One(s::<numbers::NumberView>),
        put(numbers::update)),
    ep!(DELETE "/api.ashx/v1/numbers/{number}", "numbers", Admin, "Delete a virtual number",
        req: Body::None, resp: 200 Body::One(s::<numbers::DeletedNumber>), delete(numbers::remove)),
    ep!(GET "/api.ashx/v1/prompts", "prompts", Admin,
        "List the prompt library: the tenant's prompts and the built-ins (a systemPrompt may name a slug)",
        req: Body::None, resp: 200 Body::List(s::<prompts::PromptView>), get(prompts::list)),
    ep!(POST "/api.ashx/v1/prompts", "prompts", Admin,
        "Create a prompt (a built-in's slug overrides it for this tenant)",
        req: Body::One(s::<prompts::PromptInput>), resp: 201 Body::One(s::<prompts::PromptView>),
        post(prompts::create)),
    ep!(GET "/api.ashx/v1/prompts/{slug}", "prompts", Admin, "Get one prompt by slug",
        req: Body::None, resp: 200 Body::One(s::<prompts::PromptView>), get(prompts::get_one)),
    ep!(PUT "/api.ashx/v1/prompts/{slug}", "prompts", Admin, "Update a prompt (fields given; built-ins are read-only)",
        req: Body::One(s::<prompts::PromptInput>), resp: 200 Body::One(s::<prompts::PromptView>),
        put(prompts::update)),
    ep!(DELETE "/api.ashx/v1/prompts/{slug}", "prompts", Admin, "Delete a prompt (built-ins are read-only)",
        req: Body::None, resp: 200 Body::One(s::<prompts::DeletedPrompt>), delete(prompts::remove)),
    ep!(GET "/api.ashx/v1/inbound-calls", "inbound-calls", Admin,
        "List inbound calls to virtual numbers (AI persona answered)",
        req: Body::None, resp: 200 Body::List(s::<inbound_calls::InboundCallView>),
        get(inbound_calls::list)),
    ep!(GET "/api.ashx/v1/inbound-calls/{callId}", "inbound-calls", Admin,
        "Get one inbound call's record + outcome",
        req: Body::None, resp: 200 Body::One(s::<inbound_calls::InboundCallView>),
        get(inbound_calls::get_one)),
    ep!(POST "/api.ashx/v1/inbound-calls/{callId}/hangup", "inbound-calls", Admin,
        "Hang up an inbound call (the switch sends BYE; idempotent)",
        req: Body::None, resp: 200 Body::One(s::<calls::HangupReply>),
        post(inbound_calls::hangup)),
    ep!(GET "/api.ashx/v1/emails", "emails", Admin,
        "List the outbound calls' transcript emails (status=queued|sent|failed)",
        req: Body::None, resp: 200 Body::List(s::<emails::EmailView>), get(emails::list)),
    ep!(GET "/api.ashx/v1/emails/{id}", "emails", Admin, "Get one email, with its text",
        req: Body::None, resp: 200 Body::One(s::<emails::EmailView>), get(emails::get_one)),
    ep!(POST "/api.ashx/v1/emails/{id}/retry", "emails", Admin,
        "Queue a failed email again (attempts start over)",
        req: Body::None, resp: 200 Body::One(s::<emails::RetryReply>), post(emails::retry)),
    ep!(GET "/api.ashx/v1/transcripts", "transcripts", Admin, "List transcripts",
        req: Body::None, resp: 200 Body::List(s::<transcripts::TranscriptListItem<'static>>),
        get(transcripts::list)),
    ep!(GET "/api.ashx/v1/transcripts/{callId}", "transcripts", Admin, "Get full transcript by callId",
        req: Body::None, resp: 200 Body::One(s::<transcripts::TranscriptView>),
        get(transcripts::get_one)),
    ep!(POST "/api.ashx/v1/transcripts/{callId}/shares", "transcripts", Admin,
        "Create a public share link for a transcript (token shown once)",
        req: Body::One(s::<shares::ShareInput>), resp: 201 Body::One(s::<shares::ShareCreated>),
        post(shares::create)),
    ep!(GET "/api.ashx/v1/transcripts/{callId}/shares", "transcripts", Admin,
        "List a transcript's share links (tokens masked)",
        req: Body::None, resp: 200 Body::List(s::<shares::ShareItem>), get(shares::list)),
    ep!(DELETE "/api.ashx/v1/transcripts/{callId}/shares/{id}", "transcripts", Admin,
        "Revoke a transcript share link",
        req: Body::None, resp: 200 Body::One(s::<shares::ShareDeleted>), delete(shares::remove)),
    ep!(GET "/share/{token}", "transcripts", Public, "A shared transcript (public page; counts the view)",
        req: Body::None, resp: 200 Body::Other("text/html"), get(shares::page)),
    ep!(GET "/api.ashx/v1/inbound-routes", "inbound-routes", Admin, "List inbound DID routes",
        req: Body::None, resp: 200 Body::List(s::<inbound_routes::RouteItem>),
        get(inbound_routes::list)),
    ep!(POST "/api.ashx/v1/inbound-routes", "inbound-routes", Admin, "Create an inbound route",
        req: Body::One(s::<inbound_routes::RouteInput>), resp: 201 Body::One(s::<inbound_routes::RouteEcho>),
        post(inbound_routes::create)),
    ep!(GET "/api.ashx/v1/inbound-routes/{did}", "inbound-routes", Admin, "Get one inbound route by DID",
        req: Body::None, resp: 200 Body::One(s::<inbound_routes::RouteItem>),
        get(inbound_routes::get_one)),
    ep!(DELETE "/api.ashx/v1/inbound-routes/{did}", "inbound-routes", Admin, "Delete one inbound route by DID",
        req: Body::None, resp: 200 Body::One(s::<inbound_routes::RouteDeleted>),
        delete(inbound_routes::remove)),
    ep!(PUT "/api.ashx/v1/inbound-routes/{did}", "inbound-routes", Admin, "Update one inbound route's User",
        req: Body::One(s::<inbound_routes::RouteUserInput>), resp: 200 Body::One(s::<inbound_routes::RouteEcho>),
        put(inbound_routes::update)),
    ep!(GET "/api.ashx/v1/webhooks", "webhooks", Admin, "List webhook subscriptions",
        req: Body::None, resp: 200 Body::List(s::<webhooks::SubscriptionView>), get(webhooks::list)),
    ep!(POST "/api.ashx/v1/webhooks", "webhooks", Admin, "Create a webhook subscription (secret shown once)",
        req: Body::One(s::<webhooks::SubscriptionInput>), resp: 201 Body::One(s::<webhooks::SubscriptionCreated>),
        post(webhooks::create)),
    ep!(DELETE "/api.ashx/v1/webhooks/{id}", "webhooks", Admin, "Delete a webhook subscription",
        req: Body::None, resp: 200 Body::One(s::<webhooks::SubscriptionDeleted>), delete(webhooks::remove)),
    ep!(POST "/api.ashx/v1/webhooks/{id}/test", "webhooks", Admin, "Fire webhook.test at one subscription",
        req: Body::None, resp: 202 Body::One(s::<webhooks::TestFired>), post(webhooks::test_fire)),
    ep!(POST "/api.ashx/v1/webhooks/{id}/resume", "webhooks", Admin,
        "Reactivate a paused subscription (held deliveries go out)",
        req: Body::None, resp: 200 Body::One(s::<webhooks::SubscriptionView>), post(webhooks::resume)),
    ep!(POST "/api.ashx/v1/webhooks/{id}/rotate-secret", "webhooks", Admin,
        "New signing secret (shown once); the old one signs beside it for a grace period",
        req: Body::One(s::<webhooks::RotateInput>), resp: 200 Body::One(s::<webhooks::SecretRotated>),
        post(webhooks::rotate_secret)),
    ep!(GET "/api.ashx/v1/webhooks/{id}/deliveries", "webhooks", Admin,
        "Delivery log: attempts, status codes, latency, errors",
        req: Body::None, resp: 200 Body::List(s::<deliveries::DeliveryView>), get(deliveries::list)),
    ep!(POST "/api.ashx/v1/webhooks/deliveries/{id}/replay", "webhooks", Admin,
        "Send a finished delivery's event again (new delivery id)",
        req: Body::None, resp: 202 Body::One(s::<deliveries::ReplayQueued>), post(deliveries::replay)),
    ep!(GET "/api.ashx/v1/trunks", "trunks", Admin, "List SIP trunks",
        req: Body::None, resp: 200 Body::List(s::<trunks::TrunkView>), get(trunks::list)),
    ep!(POST "/api.ashx/v1/trunks", "trunks", Admin, "Create a SIP trunk",
        req: Body::One(s::<trunks::TrunkInput>), resp: 201 Body::One(s::<trunks::TrunkView>),
        post(trunks::create)),
    ep!(GET "/api.ashx/v1/trunks/{id}", "trunks", Admin, "Get one SIP trunk",
        req: Body::None, resp: 200 Body::One(s::<trunks::TrunkView>), get(trunks::get_one)),
    ep!(PUT "/api.ashx/v1/trunks/{id}", "trunks", Admin, "Update a SIP trunk (fields given)",
        req: Body::One(s::<trunks::TrunkInput>), resp: 200 Body::One(s::<trunks::TrunkView>),
        put(trunks::update)),
    ep!(DELETE "/api.ashx/v1/trunks/{id}", "trunks", Admin, "Delete a SIP trunk",
        req: Body::None, resp: 200 Body::One(s::<trunks::TrunkDeleted>), delete(trunks::remove)),
    ep!(GET "/api.ashx/v1/sip-users", "sip-users", Admin,
        "List SIP users (who inbound routes ring and transfer_to_user may name)",
        req: Body::None, resp: 200 Body::List(s::<sip_users::SipUserView>), get(sip_users::list)),
    ep!(POST "/api.ashx/v1/sip-users", "sip-users", Admin,
        "Create a SIP user (digest password for REGISTER and/or a static contact)",
        req: Body::One(s::<sip_users::SipUserInput>), resp: 201 Body::One(s::<sip_users::SipUserView>),
        post(sip_users::create)),
    ep!(GET "/api.ashx/v1/sip-users/{name}", "sip-users", Admin, "Get one SIP user",
        req: Body::None, resp: 200 Body::One(s::<sip_users::SipUserView>), get(sip_users::get_one)),
    ep!(PUT "/api.ashx/v1/sip-users/{name}", "sip-users", Admin,
        "Update a SIP user (fields given; an empty string clears one)",
        req: Body::One(s::<sip_users::SipUserInput>), resp: 200 Body::One(s::<sip_users::SipUserView>),
        put(sip_users::update)),
    ep!(DELETE "/api.ashx/v1/sip-users/{name}", "sip-users", Admin, "Delete a SIP user",
        req: Body::None, resp: 200 Body::One(s::<sip_users::SipUserDeleted>), delete(sip_users::remove)),
    ep!(GET "/api.ashx/v1/api-keys", "api-keys", Admin, "List API keys (never the keys themselves)",
        req: Body::None, resp: 200 Body::List(s::<api_keys::ApiKeyView>), get(api_keys::list)),
    ep!(POST "/api.ashx/v1/api-keys", "api-keys", OidcAdmin, "Mint an API key (shown once; needs an OIDC admin bearer)",
        req: Body::One(s::<api_keys::ApiKeyInput>), resp: 201 Body::One(s::<api_keys::ApiKeyCreated>),
        post(api_keys::create)),
    ep!(DELETE "/api.ashx/v1/api-keys/{id}", "api-keys", Admin, "Revoke an API key",
        req: Body::None, resp: 200 Body::One(s::<api_keys::ApiKeyRevoked>), delete(api_keys::revoke)),
    ep!(POST "/oidc.ashx/token", "auth", Public, "OIDC token endpoint (password and refresh_token grants)",
        req: Body::Other("application/x-www-form-urlencoded"), resp: 200 Body::Other("application/json"),
        post(oidc::token)),
    ep!(POST "/oidc.ashx/revoke", "auth", Public, "Revoke a refresh token (RFC 7009)",
        req: Body::Other("application/x-www-form-urlencoded"), resp: 200 Body::None, post(oidc::revoke)),
    ep!(GET "/oidc.ashx/jwks", "auth", Public, "JSON Web Key Set of the token signing key",
        req: Body::None, resp: 200 Body::Other("application/json"), get(oidc::jwks)),
    ep!(GET "/.well-known/openid-configuration", "auth", Public, "OIDC discovery document",
        req: Body::None, resp: 200 Body::Other("application/json"), get(oidc::discovery)),
    ep!(GET "/outbound-ai-monitor.html", "ui", Public,
        "Admin page: outbound AI calls as they progress (hang up, read the transcript)",
        req: Body::None, resp: 200 Body::Other("text/html"), get(crate::ui::monitor)),
    ep!(GET "/webhooks-admin.html", "ui", Public,
        "Admin page: webhook subscriptions (create, test fire, rotate, deliveries, replay)",
        req: Body::None, resp: 200 Body::Other("text/html"), get(crate::ui::webhooks)),
    ep!(GET "/api-keys-admin.html", "ui", Public, "Admin page: mint and revoke API keys",
        req: Body::None, resp: 200 Body::Other("text/html"), get(crate::ui::api_keys)),
    ep!(GET "/ui/admin.js", "ui", Public, "Script of the admin pages",
        req: Body::None, resp: 200 Body::Other("text/javascript"), get(crate::ui::script)),
    ep!(GET "/ui/admin.css", "ui", Public, "Style sheet of the admin pages",
        req: Body::None, resp: 200 Body::Other("text/css"), get(crate::ui::style)),
    ep!(GET "/healthz", "ops", Public, "Liveness: the process answers",
        req: Body::None, resp: 200 Body::Other("application/json"), get(meta::healthz)),
    ep!(GET "/readyz", "ops", Public, "Readiness: the database answers",
        req: Body::None, resp: 200 Body::Other("application/json"), get(meta::readyz)),
    ep!(GET "/metrics", "ops", Admin, "Prometheus metrics",
        req: Body::None, resp: 200 Body::Other("application/openmetrics-text"), get(meta::metrics)),
];

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let mut router = Router::new();
    for ep in ENDPOINTS {
        router = router.route(ep.path, (ep.handler)());
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), common))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("No such endpoint; GET /api.ashx/v1 lists them")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method not allowed on this endpoint; see the Allow header",
    )
}

async fn common(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(Route::Fixed("unmatched"), |p| Route::Matched(p.clone()));
    let declared_len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut resp = if declared_len.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        extract::too_large().into_response()
    } else {
        next.run(req).await
    };
    let status = resp.status();
    // Axum's own rejections (e.g. a body over the limit read by a non-JSON
    // handler) come back as text; keep every error in the API's shape.
    if status == StatusCode::PAYLOAD_TOO_LARGE && !is_json(&resp) {
        resp = extract::too_large().into_response();
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let elapsed = start.elapsed().as_secs_f64();
    if status.is_server_error() {
        tracing::warn!(%method, route = route.as_str(), status = status.as_u16(), elapsed_ms = elapsed * 1000.0, "request failed");
    } else {
        tracing::debug!(%method, route = route.as_str(), status = status.as_u16(), elapsed_ms = elapsed * 1000.0, "request");
    }
    state
        .metrics
        .observe(route, method_label(&method), status.as_u16(), elapsed);
    resp
}

fn is_json(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

#[cfg(test)]
pub(crate) mod tests;
