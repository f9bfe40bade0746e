//! Who is calling: bearer tokens (our own ES256 access tokens, or `ak_` API
//! keys) resolved to a `Principal`, and the extractors handlers use to demand
//! one. Every route except the public ones takes `Admin` (or `OidcAdmin`),
//! so an unauthenticated route has to be written as such on purpose.

pub mod jwt;
pub mod oidc;
pub mod password;
pub mod throttle;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use codeb_types::{ApiKeyId, UserId};

use crate::api::error::ApiError;
use crate::crypto;
use crate::state::{API_AUDIENCE, AppState};
use crate::store::Role;

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Oidc { user_id: UserId },
    ApiKey { key_id: ApiKeyId },
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub credential: Credential,
    /// The name shown as `requestedBy`, `createdBy`, `actor`: the user's
    /// name, or for an API key the name of the admin who minted it.
    pub username: String,
    pub role: Role,
    pub tenant: String,
}

/// User names: 1–64 characters of letters, digits and `. _ @ -`, starting
/// with a letter or digit.
pub fn validate_username(name: &str) -> Result<(), &'static str> {
    let ok_len = (1..=64).contains(&name.len());
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
    if ok_len && ok_first && ok_chars {
        Ok(())
    } else {
        Err(
            "must be 1-64 characters of letters, digits, '.', '_', '@' or '-', starting with a letter or digit",
        )
    }
}

pub const API_KEY_PREFIX: &str = "ak_";

/// A new API key: `ak_` + 32 lowercase hex from the OS RNG.
pub fn generate_api_key() -> String {
    format!(
        "{API_KEY_PREFIX}{}",
        hex::encode(crypto::random_bytes::<16>())
    )
}

fn is_api_key_shape(token: &str) -> bool {
    token.strip_prefix(API_KEY_PREFIX).is_some_and(|hex| {
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// What is stored for an API key: its SHA-256, hex.
pub fn api_key_hash(key: &str) -> String {
    crypto::sha256_hex(key.as_bytes())
}

/// Resolves the bearer token of a request, if any.
pub async fn authenticate(state: &AppState, parts: &Parts) -> Result<Principal, ApiError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::missing_bearer());
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("Malformed Authorization header"))?;
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => {
            return Err(ApiError::unauthorized(
                "Authorization must use the Bearer scheme",
            ));
        }
    };
    if token.starts_with(API_KEY_PREFIX) {
        return authenticate_api_key(state, token).await;
    }
    let now = state.now();
    let claims = state
        .signing_key
        .verify_access(
            token,
            &state.config.issuer,
            API_AUDIENCE,
            now.0.div_euclid(1000),
        )
        .map_err(|e| {
            tracing::debug!(reason = %e, "bearer token refused");
            ApiError::unauthorized("Invalid or expired access token")
        })?;
    let user_id =
        UserId::parse(&claims.sub).map_err(|_| ApiError::unauthorized("Invalid access token"))?;
    let (user, session_revoked) = state
        .store
        .user_of_session(&user_id, claims.sid.as_deref())
        .await?
        .ok_or_else(|| ApiError::unauthorized("The token's user no longer exists"))?;
    // A password change or role change revokes earlier tokens: to the
    // millisecond by `iat_ms`; a token without it (an older version's) by
    // its second.
    let revoked = match claims.iat_ms {
        Some(ms) => ms < user.tokens_valid_after.0,
        None => claims.iat.saturating_mul(1000) < user.tokens_valid_after.0.div_euclid(1000) * 1000,
    };
    if revoked {
        return Err(ApiError::unauthorized(
            "The access token was revoked; sign in again",
        ));
    }
    if session_revoked {
        return Err(ApiError::unauthorized(
            "The session was signed out; sign in again",
        ));
    }
    if user.tenant != claims.tenant {
        return Err(ApiError::unauthorized("Invalid access token"));
    }
    Ok(Principal {
        credential: Credential::Oidc { user_id },
        username: user.username,
        role: user.role,
        tenant: user.tenant,
    })
}

async fn authenticate_api_key(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    if !is_api_key_shape(token) {
        return Err(ApiError::unauthorized("Invalid API key"));
    }
    let key = state
        .store
        .api_key_by_hash(&api_key_hash(token))
        .await?
        .ok_or_else(|| ApiError::unauthorized("Invalid or revoked API key"))?;
    let now = state.now();
    let due = {
        let mut touches = state.key_touches.lock().unwrap_or_else(|p| p.into_inner());
        if touches.len() > 100_000 {
            touches.clear();
        }
        match touches.get(&key.id) {
            Some(last) if now.0 - last.0 < 60_000 => false,
            _ => {
                touches.insert(key.id.clone(), now);
                true
            }
        }
    };
    if due {
        let store = state.store.clone();
        let id = key.id.clone();
        tokio::spawn(async move {
            if let Err(e) = store.touch_api_key(&id, now).await {
                tracing::warn!(error = %e, key = %id, "could not record API key use");
            }
        });
    }
    Ok(Principal {
        credential: Credential::ApiKey { key_id: key.id },
        username: key.created_by,
        role: Role::Admin,
        tenant: key.tenant,
    })
}

/// Extractor: a caller with role admin (OIDC token or API key).
#[derive(Debug, Clone)]
pub struct Admin(pub Principal);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let p = authenticate(state, parts).await?;
        if p.role != Role::Admin {
            return Err(ApiError::forbidden("This endpoint requires role=admin"));
        }
        Ok(Admin(p))
    }
}

/// Extractor: an admin who signed in (OIDC), not an API key. Minting API
/// keys needs this, so a leaked key cannot spawn siblings.
#[derive(Debug, Clone)]
pub struct OidcAdmin(pub Principal);

impl FromRequestParts<AppState> for OidcAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Admin(p) = Admin::from_request_parts(parts, state).await?;
        if !matches!(p.credential, Credential::Oidc { .. }) {
            return Err(ApiError::forbidden(
                "API keys cannot mint API keys; use an admin OIDC access token",
            ));
        }
        Ok(OidcAdmin(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_shape() {
        let k = generate_api_key();
        assert!(is_api_key_shape(&k), "{k}");
        assert_eq!(k.len(), 35);
        assert!(!is_api_key_shape("ak_0123456789ABCDEF0123456789abcdef"));
        assert!(!is_api_key_shape("ak_0123456789abcdef0123456789abcde"));
        assert!(!is_api_key_shape("ak_0123456789abcdef0123456789abcdef0"));
        assert!(!is_api_key_shape("bk_0123456789abcdef0123456789abcdef"));
        assert_eq!(api_key_hash("ak_x").len(), 64);
    }

    #[test]
    fn usernames() {
        for ok in ["alex", "a", "ops.team", "alex@example.com", "a-b_c"] {
            assert!(validate_username(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".alex", "al ex", "alex!", "ä", &"a".repeat(65)] {
            assert!(validate_username(bad).is_err(), "{bad}");
        }
    }
}
