//! `/api.ashx/v1/sip-users`: the tenant's SIP users (an extension of the v1
//! spec, whose inbound routes name a `User` but which has no resource for
//! users). A user registers with digest auth (its password) and/or has a
//! static contact (a PBX-style peer); switch nodes get them in the routing
//! snapshot, so an inbound route whose `User` names one rings it, and the
//! AI's `transfer_to_user` tool lists them. The password is write-only
//! (responses say only whether one is set).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use axum::extract::State;

use super::extract::Path;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, ListEnvelope, Paging, QueryParams};
use super::validate;
use crate::auth::Admin;
use crate::state::AppState;
use crate::store::SipUserRecord;

/// Longest static contact URI (the switch refuses longer ones).
const MAX_CONTACT: usize = 256;
/// Shortest password: a registering user's digest secret faces the internet.
const MIN_PASSWORD: usize = 8;

/// Body of `POST /sip-users` (name required) and `PUT /sip-users/{name}`
/// (changes only the fields given; an empty string clears one).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SipUserInput {
    /// The SIP user part: 1–64 of `A-Za-z0-9._+-`, unique on the platform
    /// (a switch node's registrar knows users by name alone).
    pub name: Option<String>,
    /// A label for people, up to 64 characters.
    pub display_name: Option<String>,
    /// Digest password for REGISTER (8–128 characters, no quotes,
    /// backslashes or control characters); write-only. Without one the
    /// user cannot register.
    pub password: Option<String>,
    /// A fixed contact that rings beside registrations:
    /// `sip:[user@]IP[:port][;param]`, the host an IPv4 or bracketed IPv6
    /// address, at most 256 characters.
    pub contact: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SipUserView {
    pub name: String,
    pub display_name: String,
    pub password_set: bool,
    /// Empty when the user has no static contact.
    pub contact: String,
    pub created_at_utc: String,
    pub updated_at_utc: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SipUserDeleted {
    pub deleted: String,
}

impl From<SipUserRecord> for SipUserView {
    fn from(u: SipUserRecord) -> Self {
        SipUserView {
            name: u.name,
            display_name: u.display_name,
            password_set: !u.password.is_empty(),
            contact: u.contact,
            created_at_utc: u.created_at.to_iso(),
            updated_at_utc: u.updated_at.to_iso(),
        }
    }
}

/// Whether `v` is a static contact a switch node can ring: the switch
/// accepts `sip:` URIs up to 256 characters and rings only an IP-literal
/// host (it resolves no names on its SIP thread), never a broadcast,
/// multicast or unspecified address.
fn contact_ok(v: &str) -> bool {
    v.len() <= MAX_CONTACT && parse_contact(v).is_some()
}

fn parse_contact(v: &str) -> Option<()> {
    let rest = v.strip_prefix("sip:")?;
    let (addr, params) = match rest.split_once(';') {
        Some((a, p)) => (a, Some(p)),
        None => (rest, None),
    };
    let host_port = match addr.rsplit_once('@') {
        Some((user, hp)) => {
            validate::sip_user("contact", user).ok()?;
            hp
        }
        None => addr,
    };
    let (ip, port) = match host_port.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']')?;
            let port = match after {
                "" => None,
                a => Some(a.strip_prefix(':')?),
            };
            (IpAddr::V6(h.parse::<Ipv6Addr>().ok()?), port)
        }
        None => {
            let (h, port) = match host_port.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (host_port, None),
            };
            (IpAddr::V4(h.parse::<Ipv4Addr>().ok()?), port)
        }
    };
    if let Some(p) = port
        && !(p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok_and(|n| n > 0))
    {
        return None;
    }
    let forbidden = match ip {
        IpAddr::V4(a) => a.is_broadcast() || a.is_multicast() || a.is_unspecified(),
        IpAddr::V6(a) => a.is_multicast() || a.is_unspecified(),
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    };
    let params_ok = params.is_none_or(|ps| {
        ps.split(';').all(|p| match p.split_once('=') {
            Some((name, value)) => token(name) && token(value),
            None => token(p),
        })
    });
    (!forbidden && params_ok).then_some(())
}

fn apply(u: &mut SipUserRecord, input: SipUserInput) -> ApiResult<()> {
    if let Some(d) = input.display_name {
        u.display_name =
            validate::optional_text("displayName", Some(d), 64, false)?.unwrap_or_default();
    }
    if let Some(p) = input.password {
        validate::credential("password", &p)?;
        if !p.is_empty() && p.chars().count() < MIN_PASSWORD {
            return Err(ApiError::field(
                "password",
                format!("must be at least {MIN_PASSWORD} characters (or empty for none)"),
            ));
        }
        u.password = p;
    }
    if let Some(c) = input.contact {
        if !c.is_empty() && !contact_ok(&c) {
            return Err(ApiError::field(
                "contact",
                "must be sip:[user@]IP[:port][;param=value] with an IPv4 or [IPv6] host, \
                 at most 256 characters (or empty for none)",
            ));
        }
        u.contact = c;
    }
    Ok(())
}

fn no_such_user(name: &str) -> ApiError {
    ApiError::not_found(format!("No SIP user '{}'", name.escape_debug()))
}

/// `GET /v1/sip-users`
pub async fn list(
    State(state): State<AppState>,
    Admin(who): Admin,
    query: QueryParams,
) -> ApiResult<axum::Json<ListEnvelope<SipUserView>>> {
    let paging = Paging::from_query(&query)?;
    let page = state
        .store
        .list_sip_users(&who.tenant, paging.limit, paging.offset)
        .await?;
    let data = page.items.into_iter().map(SipUserView::from).collect();
    Ok(axum::Json(ListEnvelope::new(
        data,
        page.total,
        paging,
        &query,
        "/api.ashx/v1/sip-users",
    )))
}

/// `POST /v1/sip-users`
pub async fn create(
    State(state): State<AppState>,
    Admin(who): Admin,
    JsonBody(mut input): JsonBody<SipUserInput>,
) -> ApiResult<(StatusCode, axum::Json<SipUserView>)> {
    let name = input.name.take().unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::field("name", "is required"));
    }
    validate::sip_user("name", &name)?;
    let now = state.now();
    let mut u = SipUserRecord {
        tenant: who.tenant.clone(),
        name,
        display_name: String::new(),
        password: String::new(),
        contact: String::new(),
        created_at: now,
        updated_at: now,
    };
    apply(&mut u, input)?;
    if !state.store.create_sip_user(&u).await? {
        return Err(ApiError::conflict(
            "duplicate_sip_user",
            format!(
                "The SIP user name '{}' is taken (names are unique on the platform); \
                 choose another",
                u.name
            ),
        ));
    }
    tracing::info!(sip_user = %u.name, "SIP user created");
    Ok((StatusCode::CREATED, axum::Json(u.into())))
}

async fn load(state: &AppState, tenant: &str, name: &str) -> ApiResult<SipUserRecord> {
    if validate::sip_user("name", name).is_err() {
        return Err(no_such_user(name));
    }
    state
        .store
        .sip_user(tenant, name)
        .await?
        .ok_or_else(|| no_such_user(name))
}

/// `GET /v1/sip-users/{name}`
pub async fn get_one(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<SipUserView>> {
    Ok(axum::Json(load(&state, &who.tenant, &name).await?.into()))
}

/// `PUT /v1/sip-users/{name}`
pub async fn update(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(name): Path<String>,
    JsonBody(mut input): JsonBody<SipUserInput>,
) -> ApiResult<axum::Json<SipUserView>> {
    if input.name.take().is_some_and(|n| n != name) {
        return Err(ApiError::field(
            "name",
            "cannot be changed; create a user with the new name and delete this one",
        ));
    }
    let mut u = load(&state, &who.tenant, &name).await?;
    apply(&mut u, input)?;
    u.updated_at = state.now();
    if !state.store.update_sip_user(&u).await? {
        return Err(no_such_user(&name));
    }
    Ok(axum::Json(u.into()))
}

/// `DELETE /v1/sip-users/{name}`
pub async fn remove(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<SipUserDeleted>> {
    let u = load(&state, &who.tenant, &name).await?;
    if !state.store.delete_sip_user(&who.tenant, &u.name).await? {
        return Err(no_such_user(&name));
    }
    Ok(axum::Json(SipUserDeleted { deleted: u.name }))
}

#[cfg(test)]
mod tests {
    use super::contact_ok;

    #[test]
    fn contacts() {
        for ok in [
            "sip:192.0.2.20",
            "sip:pbx@192.0.2.20:5060",
            "sip:a.b+c-d@10.0.0.1;transport=udp",
            "sip:[2001:db8::1]:5070",
            "sip:u@[2001:db8::1];lr",
            "sip:127.0.0.1:5090",
        ] {
            assert!(contact_ok(ok), "{ok}");
        }
        let long = format!("sip:{}@10.0.0.1", "a".repeat(260));
        for bad in [
            "",
            "pbx@192.0.2.20",
            "sips:192.0.2.20",
            "sip:pbx.example.com",
            "sip:pbx@host.example:5060",
            "sip:192.0.2.20:0",
            "sip:192.0.2.20:65536",
            "sip:192.0.2.20:",
            "sip:255.255.255.255",
            "sip:224.0.0.1",
            "sip:0.0.0.0:5060",
            "sip:[::]",
            "sip:[2001:db8::1",
            "sip:[2001:db8::1]x",
            "sip:2001:db8::1",
            "sip:a b@10.0.0.1",
            "sip:a\"@10.0.0.1",
            "sip:10.0.0.1;",
            "sip:10.0.0.1;a=",
            "sip:10.0.0.1>",
            "sip:10.0.0.1\r\nX: y",
            &long,
        ] {
            assert!(!contact_ok(bad), "{bad:?}");
        }
    }
}
