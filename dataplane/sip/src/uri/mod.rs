//! URIs: SIP and SIPS (RFC 3261 §19.1), TEL (RFC 3966) and any other
//! absolute URI kept opaque so that a server can answer 416.
//!
//! Parts are zero-copy slices in their escaped wire form; `*_unescaped`
//! accessors resolve `%HH`. Hosts follow RFC 3261 §25 strictly, including
//! the IPv6 reference rules exercised by RFC 5118 (`[2001:db8::10:5070]` is
//! an address, `2001:db8::10` without brackets is not a host).

mod host;
mod sip;
mod tel;

use bytes::{BufMut, Bytes, BytesMut};

pub use host::Host;
pub(crate) use host::split_hostport;
pub use sip::{SipScheme, SipUri};
pub use tel::TelUri;

use crate::error::ValueError;
use crate::limits::Limits;
use crate::syntax::{is_escaped_text, is_scheme_char, is_uric_char};

/// An absolute URI of a scheme this stack does not interpret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsoluteUri {
    pub scheme: Bytes,
    /// Everything after the `:`.
    pub rest: Bytes,
}

/// A parsed URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    Sip(SipUri),
    Tel(TelUri),
    /// Unknown scheme: syntactically an absolute URI, otherwise opaque. A
    /// server that receives one as Request-URI answers 416.
    Other(AbsoluteUri),
}

impl Uri {
    /// Parses `s`, a sub-slice of `owner` holding exactly one URI.
    pub(crate) fn parse_in(owner: &Bytes, s: &[u8], limits: &Limits) -> Result<Self, ValueError> {
        if s.len() > limits.max_uri_len {
            return Err(ValueError::TooLong);
        }
        let colon = s
            .iter()
            .position(|&b| b == b':')
            .ok_or(ValueError::Malformed)?;
        let (scheme, rest) = s.split_at_checked(colon).ok_or(ValueError::Malformed)?;
        let rest = rest.get(1..).unwrap_or_default();
        let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
            && scheme.iter().all(|&b| is_scheme_char(b));
        if !scheme_ok || rest.is_empty() {
            return Err(ValueError::Malformed);
        }
        if scheme.eq_ignore_ascii_case(b"sip") {
            SipUri::parse_after_scheme(owner, SipScheme::Sip, rest, limits).map(Self::Sip)
        } else if scheme.eq_ignore_ascii_case(b"sips") {
            SipUri::parse_after_scheme(owner, SipScheme::Sips, rest, limits).map(Self::Sip)
        } else if scheme.eq_ignore_ascii_case(b"tel") {
            TelUri::parse_after_scheme(owner, rest, limits).map(Self::Tel)
        } else if is_escaped_text(rest, is_uric_char) {
            Ok(Self::Other(AbsoluteUri {
                scheme: owner.slice_ref(scheme),
                rest: owner.slice_ref(rest),
            }))
        } else {
            Err(ValueError::Malformed)
        }
    }

    /// Parses a URI from its own bytes with the default limits.
    pub fn parse(b: impl Into<Bytes>) -> Result<Self, ValueError> {
        let b = b.into();
        Self::parse_in(&b, &b, &Limits::default())
    }

    /// The SIP/SIPS URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Self::Sip(u) => Some(u),
            _ => None,
        }
    }

    /// The scheme as written (canonical lower case for sip/sips/tel).
    pub fn scheme(&self) -> &[u8] {
        match self {
            Self::Sip(u) if u.scheme == SipScheme::Sips => b"sips",
            Self::Sip(_) => b"sip",
            Self::Tel(_) => b"tel",
            Self::Other(a) => &a.scheme,
        }
    }

    /// Writes the URI in wire form.
    pub fn render(&self, out: &mut BytesMut) {
        match self {
            Self::Sip(u) => u.render(out),
            Self::Tel(t) => {
                out.put_slice(b"tel:");
                out.put_slice(&t.number);
                out.put_slice(t.params.as_bytes());
            }
            Self::Other(a) => {
                out.put_slice(&a.scheme);
                out.put_u8(b':');
                out.put_slice(&a.rest);
            }
        }
    }

    /// The URI in wire form.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.render(&mut out);
        out.freeze()
    }
}

#[cfg(test)]
mod tests;
