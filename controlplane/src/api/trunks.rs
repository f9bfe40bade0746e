//! `/api.ashx/v1/trunks`: SIP trunks calls go out through. The password is
//! write-only (responses say only whether one is set).

use axum::extract::State;

use super::extract::Path;
use axum::http::StatusCode;
use codeb_types::TrunkId;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, ListEnvelope, Paging, QueryParams};
use super::validate;
use crate::auth::Admin;
use crate::crypto;
use crate::state::AppState;
use crate::store::DefaultTrunk;
use crate::store::TrunkRecord;

/// What the switch reaches a trunk over (it has no TLS transport: a `tls`
/// trunk would make every switch node refuse the whole configuration).
const TRANSPORTS: &[&str] = &["udp", "tcp"];

/// Body of `POST /trunks` and `PUT /trunks/{id}` (PUT changes only the
/// fields given).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrunkInput {
    pub name: Option<String>,
    /// Host name or IP address of the carrier's SIP server (required on POST).
    pub host: Option<String>,
    /// Default 5060 (5061 for tls).
    pub port: Option<i64>,
    /// `udp` (default), `tcp` or `tls`.
    pub transport: Option<String>,
    /// Digest user name.
    pub username: Option<String>,
    /// Digest password; write-only.
    pub password: Option<String>,
    /// User part of the From URI (default: the digest user name).
    pub from_user: Option<String>,
    /// Host part of the From URI (default: the trunk host).
    pub from_domain: Option<String>,
    /// 0 = unlimited.
    pub max_concurrent_calls: Option<i64>,
    /// 0 = unlimited.
    pub calls_per_second: Option<i64>,
    /// The tenant's default trunk for calls that name none.
    pub is_default: Option<bool>,
    /// REGISTER to the trunk (needs username and password).
    pub register: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrunkView {
    pub id: String,
    pub name: String,
    pub host: String,
    pub port: i64,
    pub transport: String,
    pub username: String,
    pub password_set: bool,
    pub from_user: String,
    pub from_domain: String,
    pub max_concurrent_calls: i64,
    pub calls_per_second: i64,
    pub is_default: bool,
    pub register: bool,
    pub created_at_utc: String,
    pub updated_at_utc: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TrunkDeleted {
    pub deleted: String,
}

impl From<TrunkRecord> for TrunkView {
    fn from(t: TrunkRecord) -> Self {
        TrunkView {
            id: t.id.to_string(),
            name: t.name,
            host: t.host,
            port: t.port,
            transport: t.transport,
            username: t.username,
            password_set: !t.password.is_empty(),
            from_user: t.from_user,
            from_domain: t.from_domain,
            max_concurrent_calls: t.max_concurrent_calls,
            calls_per_second: t.calls_per_second,
            is_default: t.is_default,
            register: t.register,
            created_at_utc: t.created_at.to_iso(),
            updated_at_utc: t.updated_at.to_iso(),
        }
    }
}

fn apply(t: &mut TrunkRecord, input: TrunkInput, creating: bool) -> ApiResult<()> {
    if let Some(host) = input.host {
        t.host = validate::host("host", &host)?;
    }
    if let Some(transport) = input.transport {
        validate::one_of("transport", &transport, TRANSPORTS)?;
        t.transport = transport;
    }
    match input.port {
        Some(port) => t.port = validate::int_range("port", port, 1, 65_535)?,
        None if creating => t.port = 5060,
        None => {}
    }
    if let Some(name) = validate::optional_text("name", input.name, 64, false)? {
        t.name = name;
    }
    if let Some(u) = input.username {
        validate::credential("username", &u)?;
        t.username = u;
    }
    if let Some(p) = input.password {
        validate::credential("password", &p)?;
        t.password = p;
    }
    if let Some(u) = input.from_user {
        if !u.is_empty() {
            validate::sip_user("fromUser", &u)?;
        }
        t.from_user = u;
    }
    if let Some(d) = input.from_domain {
        t.from_domain = if d.is_empty() {
            d
        } else {
            validate::host("fromDomain", &d)?
        };
    }
    if let Some(n) = input.max_concurrent_calls {
        t.max_concurrent_calls = validate::int_range("maxConcurrentCalls", n, 0, 100_000)?;
    }
    if let Some(n) = input.calls_per_second {
        t.calls_per_second = validate::int_range("callsPerSecond", n, 0, 10_000)?;
    }
    if let Some(d) = input.is_default {
        t.is_default = d;
    }
    if let Some(r) = input.register {
        t.register = r;
    }
    if t.register && (t.username.is_empty() || t.password.is_empty()) {
        return Err(ApiError::field("register", "needs username and password"));
    }
    if t.name.is_empty() {
        t.name = t.host.clone();
    }
    Ok(())
}

fn no_such_trunk(id: &str) -> ApiError {
    ApiError::not_found(format!("No trunk with id={id}"))
}

/// `GET /v1/trunks`
pub async fn list(
    State(state): State<AppState>,
    Admin(who): Admin,
    query: QueryParams,
) -> ApiResult<axum::Json<ListEnvelope<TrunkView>>> {
    let paging = Paging::from_query(&query)?;
    let page = state
        .store
        .list_trunks(&who.tenant, paging.limit, paging.offset)
        .await?;
    let data = page.items.into_iter().map(TrunkView::from).collect();
    Ok(axum::Json(ListEnvelope::new(
        data,
        page.total,
        paging,
        &query,
        "/api.ashx/v1/trunks",
    )))
}

/// `POST /v1/trunks`
pub async fn create(
    State(state): State<AppState>,
    Admin(who): Admin,
    JsonBody(input): JsonBody<TrunkInput>,
) -> ApiResult<(StatusCode, axum::Json<TrunkView>)> {
    if input.host.as_deref().is_none_or(str::is_empty) {
        return Err(ApiError::field("host", "is required"));
    }
    let now = state.now();
    let mut t = TrunkRecord {
        id: TrunkId::from_random(crypto::random_bytes()),
        tenant: who.tenant.clone(),
        name: String::new(),
        host: String::new(),
        port: 5060,
        transport: "udp".to_owned(),
        username: String::new(),
        password: String::new(),
        from_user: String::new(),
        from_domain: String::new(),
        max_concurrent_calls: 0,
        calls_per_second: 0,
        is_default: false,
        register: false,
        created_at: now,
        updated_at: now,
    };
    apply(&mut t, input, true)?;
    state.store.create_trunk(&t).await?;
    tracing::info!(trunk = %t.id, host = %t.host, "trunk created");
    Ok((StatusCode::CREATED, axum::Json(t.into())))
}

async fn load(state: &AppState, tenant: &str, id: &str) -> ApiResult<TrunkRecord> {
    let trunk_id = TrunkId::parse(id).map_err(|_| no_such_trunk(id))?;
    state
        .store
        .trunk(tenant, &trunk_id)
        .await?
        .ok_or_else(|| no_such_trunk(id))
}

/// `GET /v1/trunks/{id}`
pub async fn get_one(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<TrunkView>> {
    Ok(axum::Json(load(&state, &who.tenant, &id).await?.into()))
}

/// `PUT /v1/trunks/{id}`
pub async fn update(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<TrunkInput>,
) -> ApiResult<axum::Json<TrunkView>> {
    let mut t = load(&state, &who.tenant, &id).await?;
    apply(&mut t, input, false)?;
    t.updated_at = state.now();
    if !state.store.update_trunk(&t).await? {
        return Err(no_such_trunk(&id));
    }
    Ok(axum::Json(t.into()))
}

/// `DELETE /v1/trunks/{id}`
pub async fn remove(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<TrunkDeleted>> {
    let t = load(&state, &who.tenant, &id).await?;
    // A call waiting to be dialled through it would fail at its turn (and
    // spend its retries): the trunk is kept until those are cancelled or
    // dialled.
    let in_use = |calls: i64| {
        let s = if calls == 1 { "" } else { "s" };
        ApiError::conflict(
            "trunk_in_use",
            format!(
                "Trunk '{id}' would dial {calls} call{s} not dialled yet or with a retry left (their trunkId, or the tenant's default); cancel them or let them finish first"
            ),
        )
    };
    // Calls naming no trunk use the tenant's default.
    let default = matches!(
        state.store.default_trunk_choice(&who.tenant).await?,
        DefaultTrunk::Chosen(d) if d.id == t.id
    );
    let calls = state
        .store
        .trunk_waiting_calls(&who.tenant, &t.id, default)
        .await?;
    if calls > 0 {
        return Err(in_use(calls));
    }
    if !state
        .store
        .delete_trunk(&who.tenant, &t.id, default)
        .await?
    {
        // One was placed meanwhile, or the trunk went.
        let calls = state
            .store
            .trunk_waiting_calls(&who.tenant, &t.id, default)
            .await?;
        return Err(if calls > 0 {
            in_use(calls)
        } else {
            no_such_trunk(&id)
        });
    }
    Ok(axum::Json(TrunkDeleted {
        deleted: t.id.to_string(),
    }))
}
