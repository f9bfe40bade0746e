//! Signed JWT access tokens (ES256, RFC 7519 / RFC 9068) and the signing key
//! behind them.
//!
//! The key is an ECDSA P-256 key created on first start and kept in the data
//! directory (`oidc-signing-key.p8`, PKCS#8 DER, mode 0600). Verification is
//! deliberately narrow: exactly three parts, header `alg` must be `ES256`
//! and `typ` must be `at+jwt` (so `alg=none`, HMAC confusion and ID tokens
//! used as access tokens all fail), `kid` must be ours, the signature must
//! verify, and `iss`, `aud`, `exp`, `iat` must hold.

use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

use crate::crypto;

/// Clock skew tolerated on `exp`, `iat` and `nbf`, in seconds.
const LEEWAY_SECS: i64 = 5;
/// Tokens longer than this are refused before any parsing.
const MAX_TOKEN_LEN: usize = 8 * 1024;
const KEY_FILE: &str = "oidc-signing-key.p8";

/// Claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub preferred_username: String,
    pub role: String,
    pub tenant: String,
    pub client_id: String,
    pub scope: String,
    /// When it was issued, to the millisecond (a private claim; `iat` is
    /// whole seconds): a password or role change revokes the tokens issued
    /// before it in the same second too. Absent in tokens of older
    /// versions, which are judged by `iat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat_ms: Option<i64>,
    /// The sign-in session (its refresh-token family) the token belongs
    /// to: revoking the session (sign-out, or a replayed refresh token)
    /// revokes its access tokens too. Absent without `offline_access` (no
    /// session to revoke) and in older tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// Why a token was refused. Details go to the log, never to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported algorithm or token type")]
    WrongAlgorithm,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("bad signature")]
    BadSignature,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or write the signing key {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the signing key {0} is not a valid P-256 PKCS#8 key")]
    Invalid(PathBuf),
    #[error("could not generate a signing key")]
    Generate,
}

pub struct SigningKey {
    pair: EcdsaKeyPair,
    kid: String,
    x: String,
    y: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

impl SigningKey {
    /// Loads the key from the data directory, creating it on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<SigningKey, KeyError> {
        let path = data_dir.join(KEY_FILE);
        let io = |source| KeyError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::read(&path) {
            Ok(der) => Self::from_pkcs8(&der).ok_or_else(|| KeyError::Invalid(path.clone())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir).map_err(io)?;
                let doc = EcdsaKeyPair::generate_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &SystemRandom::new(),
                )
                .map_err(|_| KeyError::Generate)?;
                write_private(&path, doc.as_ref()).map_err(io)?;
                Self::from_pkcs8(doc.as_ref()).ok_or(KeyError::Generate)
            }
            Err(e) => Err(io(e)),
        }
    }

    pub fn generate() -> Result<SigningKey, KeyError> {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| KeyError::Generate)?;
        Self::from_pkcs8(doc.as_ref()).ok_or(KeyError::Generate)
    }

    fn from_pkcs8(der: &[u8]) -> Option<SigningKey> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der).ok()?;
        // Uncompressed SEC1 point: 0x04 || X (32) || Y (32).
        let point = pair.public_key().as_ref();
        if point.len() != 65 || point[0] != 4 {
            return None;
        }
        let x = B64.encode(&point[1..33]);
        let y = B64.encode(&point[33..65]);
        // RFC 7638 thumbprint of the public JWK: stable across restarts.
        let thumb_input = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = B64.encode(crypto::sha256(thumb_input.as_bytes()));
        Some(SigningKey { pair, kid, x, y })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWKS document (`/oidc.ashx/jwks`).
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
                "kid": self.kid, "x": self.x, "y": self.y,
            }]
        })
    }

    /// Signs `claims` with the given `typ` header (`at+jwt` for access
    /// tokens, `JWT` for ID tokens).
    pub fn sign<C: Serialize>(&self, typ: &str, claims: &C) -> String {
        let header = Header {
            alg: "ES256".into(),
            typ: typ.into(),
            kid: self.kid.clone(),
        };
        // Serializing plain structs of strings and integers cannot fail.
        let h = B64.encode(serde_json::to_vec(&header).unwrap_or_default());
        let p = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{h}.{p}");
        #[allow(clippy::expect_used)]
        let sig = self
            .pair
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .expect("ECDSA signing with a valid key does not fail");
        format!("{signing_input}.{}", B64.encode(sig.as_ref()))
    }

    /// Verifies an access token and returns its claims.
    pub fn verify_access(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
        now_secs: i64,
    ) -> Result<AccessClaims, JwtError> {
        self.verify_access_at(token, issuer, audience, Some(now_secs))
    }

    /// Verifies an access token's signature, issuer and audience whatever
    /// its times: an expired token presented for revocation still names its
    /// session (RFC 7009 revokes what the token stands for).
    pub fn verify_access_any_time(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
    ) -> Result<AccessClaims, JwtError> {
        self.verify_access_at(token, issuer, audience, None)
    }

    fn verify_access_at(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
        now_secs: Option<i64>,
    ) -> Result<AccessClaims, JwtError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let header: Header = B64
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(JwtError::Malformed)?;
        if header.alg != "ES256" || header.typ != "at+jwt" {
            return Err(JwtError::WrongAlgorithm);
        }
        if header.kid != self.kid {
            return Err(JwtError::UnknownKey);
        }
        let sig = B64.decode(s).map_err(|_| JwtError::Malformed)?;
        let signing_input = &token[..h.len() + 1 + p.len()];
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.pair.public_key().as_ref())
            .verify(signing_input.as_bytes(), &sig)
            .map_err(|_| JwtError::BadSignature)?;
        let claims: AccessClaims = B64
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(JwtError::Malformed)?;
        if claims.iss != issuer {
            return Err(JwtError::WrongIssuer);
        }
        if claims.aud != audience {
            return Err(JwtError::WrongAudience);
        }
        let Some(now_secs) = now_secs else {
            return Ok(claims);
        };
        if claims.exp <= now_secs - LEEWAY_SECS {
            return Err(JwtError::Expired);
        }
        if claims.iat > now_secs + LEEWAY_SECS {
            return Err(JwtError::NotYetValid);
        }
        Ok(claims)
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "http://127.0.0.1:8080";
    const AUD: &str = "codeb-api";

    fn claims(now: i64) -> AccessClaims {
        AccessClaims {
            iss: ISS.into(),
            sub: "usr_0123456789abcdef".into(),
            aud: AUD.into(),
            exp: now + 3600,
            iat: now,
            jti: "j".into(),
            preferred_username: "alex".into(),
            role: "admin".into(),
            tenant: "127.0.0.1".into(),
            client_id: "codeb-admin".into(),
            scope: "openid".into(),
            iat_ms: Some(now * 1000 + 250),
            sid: Some("f00d".into()),
        }
    }

    #[test]
    fn round_trip_and_claim_checks() {
        let key = SigningKey::generate().unwrap();
        let now = 1_800_000_000;
        let tok = key.sign("at+jwt", &claims(now));
        assert_eq!(key.verify_access(&tok, ISS, AUD, now).unwrap(), claims(now));
        assert_eq!(
            key.verify_access(&tok, "http://evil", AUD, now),
            Err(JwtError::WrongIssuer)
        );
        assert_eq!(
            key.verify_access(&tok, ISS, "other", now),
            Err(JwtError::WrongAudience)
        );
        assert_eq!(
            key.verify_access(&tok, ISS, AUD, now + 3600 + 6),
            Err(JwtError::Expired)
        );
        assert!(key.verify_access(&tok, ISS, AUD, now + 3600 + 4).is_ok());
        assert_eq!(
            key.verify_access(&tok, ISS, AUD, now - 60),
            Err(JwtError::NotYetValid)
        );
    }

    #[test]
    fn forgeries_fail() {
        let key = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let now = 1_800_000_000;
        // Signed by another key (with our kid swapped in, it still fails).
        let forged = other.sign("at+jwt", &claims(now));
        assert_eq!(
            key.verify_access(&forged, ISS, AUD, now),
            Err(JwtError::UnknownKey)
        );
        let tok = key.sign("at+jwt", &claims(now));
        let mut parts: Vec<&str> = forged.split('.').collect();
        let our_header = tok.split('.').next().unwrap();
        parts[0] = our_header;
        assert_eq!(
            key.verify_access(&parts.join("."), ISS, AUD, now),
            Err(JwtError::BadSignature)
        );
        // alg=none with an empty signature.
        let none = B64.encode(br#"{"alg":"none","typ":"at+jwt","kid":"x"}"#);
        let body = tok.split('.').nth(1).unwrap();
        assert_eq!(
            key.verify_access(&format!("{none}.{body}."), ISS, AUD, now),
            Err(JwtError::WrongAlgorithm)
        );
        // HS256 header.
        let hs = B64.encode(format!(
            r#"{{"alg":"HS256","typ":"at+jwt","kid":"{}"}}"#,
            key.kid()
        ));
        assert_eq!(
            key.verify_access(&format!("{hs}.{body}.AAAA"), ISS, AUD, now),
            Err(JwtError::WrongAlgorithm)
        );
        // An ID token (typ JWT) is not an access token.
        let id = key.sign("JWT", &claims(now));
        assert_eq!(
            key.verify_access(&id, ISS, AUD, now),
            Err(JwtError::WrongAlgorithm)
        );
        // Tampered payload.
        let mut c = claims(now);
        c.role = "admin2".into();
        let evil_body = B64.encode(serde_json::to_vec(&c).unwrap());
        let sig = tok.split('.').nth(2).unwrap();
        assert_eq!(
            key.verify_access(&format!("{our_header}.{evil_body}.{sig}"), ISS, AUD, now),
            Err(JwtError::BadSignature)
        );
        for junk in ["", "a.b", "a.b.c.d", "....", "ak_nope", &"x".repeat(9000)] {
            assert!(key.verify_access(junk, ISS, AUD, now).is_err(), "{junk}");
        }
    }

    #[test]
    fn key_persists_in_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let a = SigningKey::load_or_create(dir.path()).unwrap();
        let b = SigningKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.kid(), b.kid());
        let now = 1_800_000_000;
        let tok = a.sign("at+jwt", &claims(now));
        assert!(b.verify_access(&tok, ISS, AUD, now).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join(KEY_FILE), b"garbage").unwrap();
        assert!(matches!(
            SigningKey::load_or_create(dir.path()),
            Err(KeyError::Invalid(_))
        ));
    }
}
