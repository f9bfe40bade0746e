//! Signing a delivery. Every POST carries two independent signatures of
//! the same raw body:
//!
//! - `X-CodeB-Signature: sha256=<hex>`, the v1 spec's: HMAC-SHA256 of the
//!   raw body keyed with **the secret string's bytes as shown**, `whsec_`
//!   prefix included, so the spec's Flask, Express and openssl recipes work
//!   verbatim with the value copied from the create response.
//! - Standard Webhooks (`webhook-id`, `webhook-timestamp`,
//!   `webhook-signature: v1,<base64>`): HMAC-SHA256 of `id.timestamp.body`
//!   keyed with **the base64-decoded part after `whsec_`**, as that
//!   specification and its libraries define it. The timestamp lets a
//!   receiver refuse replays of an old request.
//!
//! During a secret rotation's grace period the previous secret keeps
//! signing: `X-CodeB-Signature` stays with the previous secret (receivers
//! that have not switched keep working), `X-CodeB-Signature-Next` carries
//! the new secret's signature (receivers may switch before the period
//! ends), and `webhook-signature` lists both, newest first, as Standard
//! Webhooks allows.

use base64::Engine as _;

use crate::crypto;

pub const SECRET_PREFIX: &str = "whsec_";

/// A new secret: `whsec_` + base64 of 32 random bytes.
pub fn generate_secret() -> String {
    format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(crypto::random_bytes::<32>())
    )
}

/// `sha256=<hex>` keyed with the secret string's bytes.
pub fn codeb_signature(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(crypto::hmac_sha256(secret.as_bytes(), body))
    )
}

/// The Standard Webhooks key: the base64 after `whsec_`. A secret that is
/// not in that form (none we mint) is used as raw bytes, as the reference
/// libraries do.
pub fn standard_key(secret: &str) -> Vec<u8> {
    let b64 = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_else(|_| secret.as_bytes().to_vec())
}

/// One Standard Webhooks signature: `v1,<base64>`.
pub fn standard_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mac = crypto::hmac_sha256_parts(
        &standard_key(secret),
        &[id.as_bytes(), b".", ts.as_bytes(), b".", body],
    );
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac)
    )
}

/// What a delivery attempt is signed over and with.
#[derive(Debug, Clone, Copy)]
pub struct Signing<'a> {
    pub event: &'a str,
    pub delivery_id: &'a str,
    /// 1-based.
    pub attempt: i64,
    /// Unix seconds of this attempt.
    pub timestamp: i64,
    pub body: &'a [u8],
    pub secret: &'a str,
    /// The previous secret, during a rotation's grace period.
    pub prev_secret: Option<&'a str>,
}

/// Every header of a delivery POST except Content-Type and Host.
pub fn delivery_headers(s: &Signing<'_>) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("x-codeb-event", s.event.to_owned()),
        ("x-codeb-delivery-id", s.delivery_id.to_owned()),
        ("x-codeb-attempt", s.attempt.to_string()),
        ("webhook-id", s.delivery_id.to_owned()),
        ("webhook-timestamp", s.timestamp.to_string()),
    ];
    let current = standard_signature(s.secret, s.delivery_id, s.timestamp, s.body);
    match s.prev_secret {
        Some(prev) => {
            h.push(("x-codeb-signature", codeb_signature(prev, s.body)));
            h.push(("x-codeb-signature-next", codeb_signature(s.secret, s.body)));
            let old = standard_signature(prev, s.delivery_id, s.timestamp, s.body);
            h.push(("webhook-signature", format!("{current} {old}")));
        }
        None => {
            h.push(("x-codeb-signature", codeb_signature(s.secret, s.body)));
            h.push(("webhook-signature", current));
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_reference_vector() {
        // The vector published with the Standard Webhooks reference
        // libraries: a receiver using any of them accepts what we send.
        assert_eq!(
            standard_signature(
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn codeb_signature_matches_the_spec_recipe() {
        // `printf '%s' "$BODY" | openssl dgst -sha256 -hmac "$SECRET" -hex`
        // with SECRET=key and BODY='The quick brown fox jumps over the lazy dog'.
        assert_eq!(
            codeb_signature("key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        let s = generate_secret();
        assert!(s.starts_with("whsec_") && s.len() == 6 + 44, "{s}");
        assert_eq!(standard_key(&s).len(), 32);
        assert_eq!(standard_key("not base64!"), b"not base64!".to_vec());
    }

    #[test]
    fn rotation_signs_with_both() {
        let body = b"{}";
        let base = Signing {
            event: "webhook.test",
            delivery_id: "dlv_0123456789abcdef",
            attempt: 2,
            timestamp: 1_700_000_000,
            body,
            secret: "whsec_bmV3bmV3bmV3bmV3bmV3bmV3bmV3bmV3bmV3bmU=",
            prev_secret: None,
        };
        let get =
            |h: &[(&str, String)], k: &str| h.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        let plain = delivery_headers(&base);
        assert_eq!(
            get(&plain, "x-codeb-signature").unwrap(),
            codeb_signature(base.secret, body)
        );
        assert_eq!(get(&plain, "x-codeb-attempt").unwrap(), "2");
        assert_eq!(
            get(&plain, "webhook-id"),
            get(&plain, "x-codeb-delivery-id")
        );
        assert!(get(&plain, "x-codeb-signature-next").is_none());
        let old = "whsec_b2xkb2xkb2xkb2xkb2xkb2xkb2xkb2xkb2xkb2w=";
        let rotating = delivery_headers(&Signing {
            prev_secret: Some(old),
            ..base
        });
        assert_eq!(
            get(&rotating, "x-codeb-signature").unwrap(),
            codeb_signature(old, body)
        );
        assert_eq!(
            get(&rotating, "x-codeb-signature-next").unwrap(),
            codeb_signature(base.secret, body)
        );
        let sigs = get(&rotating, "webhook-signature").unwrap();
        let parts: Vec<&str> = sigs.split(' ').collect();
        assert_eq!(
            parts,
            vec![
                standard_signature(base.secret, base.delivery_id, base.timestamp, body),
                standard_signature(old, base.delivery_id, base.timestamp, body)
            ]
        );
    }
}
