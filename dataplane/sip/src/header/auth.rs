//! Authentication headers (RFC 3261 §20.7, §20.27, §20.28, §20.44; digest
//! parameters of RFC 2617/8760): `scheme LWS name=value *(COMMA name=value)`.
//!
//! One type serves credentials (Authorization, Proxy-Authorization) and
//! challenges (WWW-Authenticate, Proxy-Authenticate): the grammar is the
//! same, and which parameters matter is the digest layer's business. An
//! unknown scheme (RFC 4475 `regaut01`) parses; answering it is policy.

use std::borrow::Cow;

use bytes::Bytes;

use crate::error::ValueError;
use crate::limits::Limits;
use crate::syntax::{Cursor, is_token_char, trim_ws, unquote};

/// `name=value` pairs separated by commas; values raw (quotes kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthParams {
    raw: Bytes,
}

/// A `(name, raw value)` pair borrowed from an auth-param list.
type AuthPair<'a> = (&'a [u8], &'a [u8]);

fn next_auth_param(raw: &[u8], pos: usize) -> Result<Option<(AuthPair<'_>, usize)>, ValueError> {
    let mut c = Cursor::new(raw);
    c.take(pos).ok_or(ValueError::Malformed)?;
    c.skip_ws();
    if c.at_end() {
        return Ok(None);
    }
    if pos > 0 && !c.eat_separator(b',') {
        return Err(ValueError::Malformed);
    }
    let name = c.token()?;
    if !c.eat_separator(b'=') {
        return Err(ValueError::Malformed);
    }
    let value = match c.peek() {
        Some(b'"') => c.quoted()?,
        _ => c.token()?,
    };
    // The next thing must be a comma or the end, possibly after LWS.
    let after = c.pos();
    c.skip_ws();
    if !c.at_end() && c.peek() != Some(b',') {
        return Err(ValueError::Malformed);
    }
    Ok(Some(((name, value), after)))
}

impl AuthParams {
    fn parse(raw: Bytes, limits: &Limits) -> Result<Self, ValueError> {
        let mut pos = 0;
        let mut names: Vec<&[u8]> = Vec::new();
        while let Some(((name, _), next)) = next_auth_param(&raw, pos)? {
            if names.len() >= limits.max_params {
                return Err(ValueError::TooMany);
            }
            if names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                return Err(ValueError::Repeated);
            }
            names.push(name);
            pos = next;
        }
        if names.is_empty() {
            return Err(ValueError::Malformed);
        }
        Ok(Self { raw })
    }

    /// `(name, raw value)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut pos = 0;
        std::iter::from_fn(move || {
            let (pair, next) = next_auth_param(&self.raw, pos).ok().flatten()?;
            pos = next;
            Some(pair)
        })
    }

    /// The raw value of `name` (ASCII case-insensitive), quotes kept.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The value of `name` with quotes removed and escapes resolved.
    pub fn text(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        self.get(name).map(|v| {
            if v.first() == Some(&b'"') {
                unquote(v)
            } else {
                Cow::Borrowed(v)
            }
        })
    }

    /// The raw wire text.
    pub fn as_bytes(&self) -> &Bytes {
        &self.raw
    }
}

/// A credentials or challenge value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// `Digest`, or any other token.
    pub scheme: Bytes,
    pub params: AuthParams,
}

impl Auth {
    /// Parses `scheme LWS auth-param *(COMMA auth-param)`.
    pub fn parse(owner: &Bytes, s: &[u8], limits: &Limits) -> Result<Self, ValueError> {
        let s = trim_ws(s);
        let mut c = Cursor::new(s);
        let scheme = c.take_while(is_token_char);
        if scheme.is_empty() || !c.skip_ws() {
            return Err(ValueError::Malformed);
        }
        let params = AuthParams::parse(owner.slice_ref(c.rest()), limits)?;
        Ok(Self {
            scheme: owner.slice_ref(scheme),
            params,
        })
    }

    /// `true` for the Digest scheme.
    pub fn is_digest(&self) -> bool {
        self.scheme.eq_ignore_ascii_case(b"Digest")
    }

    /// A parameter's text (unquoted), e.g. `param("nonce")`.
    pub fn param(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        self.params.text(name)
    }

    pub fn realm(&self) -> Option<Cow<'_, [u8]>> {
        self.param("realm")
    }

    pub fn nonce(&self) -> Option<Cow<'_, [u8]>> {
        self.param("nonce")
    }

    pub fn username(&self) -> Option<Cow<'_, [u8]>> {
        self.param("username")
    }

    pub fn uri(&self) -> Option<Cow<'_, [u8]>> {
        self.param("uri")
    }

    pub fn response(&self) -> Option<Cow<'_, [u8]>> {
        self.param("response")
    }

    pub fn algorithm(&self) -> Option<Cow<'_, [u8]>> {
        self.param("algorithm")
    }

    pub fn qop(&self) -> Option<Cow<'_, [u8]>> {
        self.param("qop")
    }

    pub fn cnonce(&self) -> Option<Cow<'_, [u8]>> {
        self.param("cnonce")
    }

    pub fn nc(&self) -> Option<Cow<'_, [u8]>> {
        self.param("nc")
    }

    pub fn opaque(&self) -> Option<Cow<'_, [u8]>> {
        self.param("opaque")
    }

    /// `stale=true` in a challenge.
    pub fn stale(&self) -> bool {
        self.param("stale")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"true"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(s: &'static str) -> Result<Auth, ValueError> {
        let b = Bytes::from(s);
        Auth::parse(&b, &b, &Limits::default())
    }

    #[test]
    fn digest_credentials() {
        let a = auth(r#"Digest username="3000",realm="asterisk",nonce="1517181436/80170188d05f4af45b8530366c8e7e5e",uri="sip:127.0.0.1:5060",response="a4a88b777731349899227dc3170efdcf",algorithm=md5"#).unwrap();
        assert!(a.is_digest());
        assert_eq!(a.username().unwrap(), &b"3000"[..]);
        assert_eq!(a.uri().unwrap(), &b"sip:127.0.0.1:5060"[..]);
        assert_eq!(a.algorithm().unwrap(), &b"md5"[..]);
        assert_eq!(a.params.get("REALM"), Some(&br#""asterisk""#[..]));
        assert_eq!(a.params.iter().count(), 6);
    }

    #[test]
    fn challenges_with_lws_and_unknown_schemes() {
        let a = auth("Digest realm = \"atlanta.com\" ,\tqop=\"auth,auth-int\", nonce=\"84a4\", stale=TRUE, algorithm=MD5").unwrap();
        assert_eq!(a.qop().unwrap(), &b"auth,auth-int"[..]);
        assert!(a.stale());
        let a = auth("NoOneKnowsThisScheme opaque-data=here").unwrap();
        assert!(!a.is_digest());
        assert_eq!(a.param("opaque-data").unwrap(), &b"here"[..]);
    }

    #[test]
    fn rejects_malformed_auth() {
        for bad in [
            "Digest",
            "Digest ",
            "Digest realm",
            "Digest realm=",
            "Digest a=1,,b=2",
            "Digest a=1 b=2",
            "Digest a=\"open",
            "Digest a=1, a=2",
            "=x",
            "Digest a=1,",
        ] {
            assert!(auth(bad).is_err(), "{bad:?}");
        }
    }
}
