//! The built-in OIDC issuer: the token endpoint (password and refresh_token
//! grants, RFC 6749 §4.3 and §6), token revocation (RFC 7009), discovery and
//! the JWKS. Errors use OAuth's own body (`{error, error_description}`) and
//! statuses (RFC 6749 §5.2).

use std::net::IpAddr;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use codeb_types::UtcMillis;
use serde::Serialize;

use super::jwt::AccessClaims;
use super::password;
use crate::api::error::ApiError;
use crate::api::extract::ClientIp;
use crate::crypto;
use crate::state::{ACCESS_TOKEN_SECS, API_AUDIENCE, AppState, CLIENT_ID, REFRESH_TOKEN_SECS};
use crate::store::{RefreshOutcome, UserRecord};

const SCOPES: &[&str] = &["openid", "offline_access", "profile"];
const REFRESH_PREFIX: &str = "rt_";

fn oauth_error(status: StatusCode, code: &'static str, description: &str) -> ApiError {
    ApiError::new(status, code, description)
}

fn invalid_request(description: &str) -> ApiError {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

fn invalid_grant(description: &str) -> ApiError {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

/// Parses an `application/x-www-form-urlencoded` body; a parameter given
/// twice is an error (RFC 6749 §3.2).
fn parse_form(headers: &HeaderMap, body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(invalid_request(
            "This endpoint takes an application/x-www-form-urlencoded body",
        ));
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(invalid_request(&format!(
                "Parameter '{k}' was given more than once"
            )));
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

fn param<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn required<'a>(form: &'a [(String, String)], name: &str) -> Result<&'a str, ApiError> {
    param(form, name).ok_or_else(|| invalid_request(&format!("Missing parameter '{name}'")))
}

fn check_client(form: &[(String, String)]) -> Result<(), ApiError> {
    match param(form, "client_id") {
        Some(CLIENT_ID) => Ok(()),
        Some(_) => Err(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Unknown client_id",
        )),
        None => Err(invalid_request("Missing parameter 'client_id'")),
    }
}

/// Validates a requested scope string; returns the normalized scope.
fn parse_scope(requested: Option<&str>) -> Result<String, ApiError> {
    let requested = requested.unwrap_or("openid");
    let mut scopes: Vec<&str> = Vec::new();
    for s in requested.split(' ').filter(|s| !s.is_empty()) {
        if !SCOPES.contains(&s) {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                &format!("Unsupported scope '{s}' (supported: {})", SCOPES.join(" ")),
            ));
        }
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    if !scopes.contains(&"openid") {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "scope must include openid",
        ));
    }
    Ok(scopes.join(" "))
}

#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    scope: String,
    id_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
}

#[derive(Serialize)]
struct IdClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
    iat: i64,
    preferred_username: &'a str,
}

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// The refresh token that goes with a token response.
enum Refresh {
    /// Start a new family (password grant), if `offline_access` was granted.
    NewFamily,
    /// Already minted and stored by a rotation of this family.
    Rotated { token: String, family: String },
}

/// Mints the token response for a user.
async fn issue(
    state: &AppState,
    user: &UserRecord,
    scope: String,
    refresh: Refresh,
    now: UtcMillis,
) -> Result<Response, ApiError> {
    let iat = now.0.div_euclid(1000);
    let offline = scope.split(' ').any(|s| s == "offline_access");
    // The session: the refresh-token family, made here for a sign-in.
    let (family, rotated) = match refresh {
        Refresh::Rotated { token, family } => (Some(family), Some(token)),
        Refresh::NewFamily if offline => (Some(hex::encode(crypto::random_bytes::<16>())), None),
        Refresh::NewFamily => (None, None),
    };
    let claims = AccessClaims {
        iss: state.config.issuer.clone(),
        sub: user.id.to_string(),
        aud: API_AUDIENCE.to_owned(),
        exp: iat + ACCESS_TOKEN_SECS,
        iat,
        jti: hex::encode(crypto::random_bytes::<16>()),
        preferred_username: user.username.clone(),
        role: user.role.as_str().to_owned(),
        tenant: user.tenant.clone(),
        client_id: CLIENT_ID.to_owned(),
        scope: scope.clone(),
        iat_ms: Some(now.0),
        sid: family.clone(),
    };
    let access_token = state.signing_key.sign("at+jwt", &claims);
    let id_token = state.signing_key.sign(
        "JWT",
        &IdClaims {
            iss: &state.config.issuer,
            sub: user.id.as_str(),
            aud: CLIENT_ID,
            exp: iat + ACCESS_TOKEN_SECS,
            iat,
            preferred_username: &user.username,
        },
    );
    let refresh_token = match (rotated, family) {
        (Some(token), _) => Some(token),
        (None, Some(family)) => {
            let token = format!(
                "{REFRESH_PREFIX}{}",
                hex::encode(crypto::random_bytes::<32>())
            );
            state
                .store
                .insert_refresh_token(
                    &crypto::sha256_hex(token.as_bytes()),
                    &family,
                    &user.id,
                    &scope,
                    now,
                    now.plus_ms(REFRESH_TOKEN_SECS * 1000),
                )
                .await?;
            Some(token)
        }
        (None, None) => None,
    };
    let body = TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: ACCESS_TOKEN_SECS,
        scope,
        id_token,
        refresh_token,
    };
    Ok(no_store(axum::Json(body).into_response()))
}

/// `POST /oidc.ashx/token`
pub async fn token(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let form = parse_form(&headers, &body)?;
    let grant = required(&form, "grant_type")?;
    match grant {
        "password" => password_grant(&state, ip, &form).await,
        "refresh_token" => refresh_grant(&state, &form).await,
        other => Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!("grant_type '{other}' is not supported (use password or refresh_token)"),
        )),
    }
}

async fn password_grant(
    state: &AppState,
    ip: IpAddr,
    form: &[(String, String)],
) -> Result<Response, ApiError> {
    check_client(form)?;
    let username = required(form, "username")?.to_owned();
    let password = required(form, "password")?.to_owned();
    let scope = parse_scope(param(form, "scope"))?;
    let now = state.now();
    if let Err(retry) = state.throttle.check(&username, ip, now) {
        return Err(oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            "Too many failed sign-in attempts; wait before trying again",
        )
        .with_retry_after(retry));
    }
    let user = state.store.user_by_username(&username).await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let ok = tokio::task::spawn_blocking(move || match stored {
        Some(h) => password::verify(&password, &h),
        None => {
            password::verify_dummy(&password);
            false
        }
    })
    .await
    .unwrap_or(false);
    let Some(user) = user.filter(|_| ok) else {
        state.throttle.record_failure(&username, ip, now);
        tracing::info!(user = %username, %ip, "failed sign-in");
        return Err(invalid_grant("Invalid username or password"));
    };
    state.throttle.record_success(&username, ip);
    issue(state, &user, scope, Refresh::NewFamily, now).await
}

async fn refresh_grant(state: &AppState, form: &[(String, String)]) -> Result<Response, ApiError> {
    check_client(form)?;
    let presented = required(form, "refresh_token")?;
    if !presented.starts_with(REFRESH_PREFIX) || presented.len() > 128 {
        return Err(invalid_grant("Invalid refresh token"));
    }
    let now = state.now();
    // The replacement is minted up front so rotation is one transaction.
    let next = format!(
        "{REFRESH_PREFIX}{}",
        hex::encode(crypto::random_bytes::<32>())
    );
    let outcome = state
        .store
        .rotate_refresh_token(
            &crypto::sha256_hex(presented.as_bytes()),
            &crypto::sha256_hex(next.as_bytes()),
            now,
            now.plus_ms(REFRESH_TOKEN_SECS * 1000),
        )
        .await?;
    let rotated = match outcome {
        RefreshOutcome::Rotated(r) => r,
        RefreshOutcome::Replayed => {
            tracing::warn!("a spent refresh token was replayed; its family is revoked");
            return Err(invalid_grant("Invalid refresh token"));
        }
        RefreshOutcome::Invalid => return Err(invalid_grant("Invalid refresh token")),
    };
    let user = state
        .store
        .user_by_id(&rotated.user_id)
        .await?
        .ok_or_else(|| invalid_grant("Invalid refresh token"))?;
    let scope = match param(form, "scope") {
        None => rotated.scope.clone(),
        Some(asked) => {
            let asked = parse_scope(Some(asked))?;
            if !asked
                .split(' ')
                .all(|s| rotated.scope.split(' ').any(|g| g == s))
            {
                return Err(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "A refresh cannot widen the granted scope",
                ));
            }
            asked
        }
    };
    issue(
        state,
        &user,
        scope,
        Refresh::Rotated {
            token: next,
            family: rotated.family,
        },
        now,
    )
    .await
}

/// `POST /oidc.ashx/revoke` (RFC 7009): always 200 for a well-formed request.
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let form = parse_form(&headers, &body)?;
    check_client(&form)?;
    let token = required(&form, "token")?;
    if token.starts_with(REFRESH_PREFIX) {
        state
            .store
            .revoke_refresh_family(&crypto::sha256_hex(token.as_bytes()), state.now())
            .await?;
    } else if let Ok(claims) =
        state
            .signing_key
            .verify_access_any_time(token, &state.config.issuer, API_AUDIENCE)
        && let Some(sid) = claims.sid
    {
        // An access token of ours, expired or not: its session ends
        // (every token of it).
        state.store.revoke_session(&sid, state.now()).await?;
    }
    Ok(StatusCode::OK.into_response())
}

/// `GET /.well-known/openid-configuration`
pub async fn discovery(State(state): State<AppState>) -> Response {
    let iss = &state.config.issuer;
    axum::Json(serde_json::json!({
        "issuer": iss,
        "token_endpoint": format!("{iss}/oidc.ashx/token"),
        "revocation_endpoint": format!("{iss}/oidc.ashx/revoke"),
        "jwks_uri": format!("{iss}/oidc.ashx/jwks"),
        "grant_types_supported": ["password", "refresh_token"],
        "response_types_supported": ["token"],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": SCOPES,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "preferred_username", "role", "tenant"],
    }))
    .into_response()
}

/// `GET /oidc.ashx/jwks`
pub async fn jwks(State(state): State<AppState>) -> Response {
    axum::Json(state.signing_key.jwks()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        assert_eq!(parse_scope(None).unwrap(), "openid");
        assert_eq!(
            parse_scope(Some("openid offline_access")).unwrap(),
            "openid offline_access"
        );
        assert_eq!(parse_scope(Some("openid  openid")).unwrap(), "openid");
        assert_eq!(
            parse_scope(Some("offline_access")).unwrap_err().code,
            "invalid_scope"
        );
        assert_eq!(
            parse_scope(Some("openid admin")).unwrap_err().code,
            "invalid_scope"
        );
    }
}
