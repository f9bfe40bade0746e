//! Header fields: the ordered list of raw `name: value` slots a message
//! carries, and typed, lazily parsed views of the headers a B2BUA acts on.
//!
//! Storage is raw on purpose: values are zero-copy slices of the received
//! buffer (folded values are unfolded once, into a fresh buffer), unknown
//! headers pass through untouched and in order, and printing needs no
//! knowledge of header grammars. Typed views parse on each call, bounded by
//! the [`Limits`](crate::Limits) the message was parsed under; callers keep
//! the result if they need it twice.

mod addr;
mod auth;
mod fields;
mod media;
mod name;
mod reason;
mod replaces;
mod scalar;
mod via;
mod views;

use bytes::Bytes;

pub use addr::{Contact, DisplayName, NameAddr};
pub use auth::{Auth, AuthParams};
pub use fields::Headers;
pub use media::MediaType;
pub use name::{HeaderName, KnownHeader};
pub use reason::Reason;
pub use replaces::Replaces;
pub use scalar::{
    CSeq, Refresher, SessionExpires, parse_call_id, parse_delta_seconds, parse_max_forwards,
};
pub use via::{BRANCH_MAGIC_COOKIE, Rport, Transport, Via};

use crate::error::ValueError;
use crate::syntax::{is_ctl, is_token, trim_ws};

/// `true` if `value` holds no raw control character the grammar forbids.
/// Known headers may carry them only as a quoted-pair inside a quoted
/// string (RFC 4475 `intmeth` escapes BEL, NUL and DEL that way); unknown
/// headers are opaque text and may carry none.
pub(crate) fn value_is_clean(value: &[u8], known: bool) -> bool {
    if !value.iter().any(|&b| is_ctl(b)) {
        return true;
    }
    if !known {
        return false;
    }
    let (mut in_quote, mut escaped) = (false, false);
    for &b in value {
        if escaped {
            escaped = false;
            if b == b'\r' || b == b'\n' {
                return false;
            }
            continue;
        }
        match b {
            b'"' => in_quote = !in_quote,
            b'\\' if in_quote => escaped = true,
            _ if is_ctl(b) => return false,
            _ => {}
        }
    }
    true
}

/// One header field: a name and its (unfolded, trimmed) value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    name: HeaderName,
    value: Bytes,
}

impl Header {
    /// Builds a header for sending. Leading and trailing white space is
    /// dropped; CR, LF and other raw control characters are refused, so a
    /// value can never smuggle a line into the printed message.
    pub fn new(name: impl Into<HeaderName>, value: impl Into<Bytes>) -> Result<Self, ValueError> {
        let name = name.into();
        if let HeaderName::Other(n) = &name
            && !is_token(n)
        {
            return Err(ValueError::Malformed);
        }
        let value = value.into();
        let trimmed = value.slice_ref(trim_ws(&value));
        if !value_is_clean(&trimmed, name.known().is_some()) {
            return Err(ValueError::Malformed);
        }
        Ok(Self {
            name,
            value: trimmed,
        })
    }

    /// Built by the framer, which has already validated both parts.
    pub(crate) fn from_wire(name: HeaderName, value: Bytes) -> Self {
        Self { name, value }
    }

    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    pub fn value(&self) -> &Bytes {
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_cannot_smuggle_lines() {
        assert!(Header::new(KnownHeader::Subject, "a\r\nVia: x").is_err());
        assert!(Header::new(KnownHeader::Subject, "a\nb").is_err());
        assert!(Header::new(HeaderName::parse("X-A").unwrap(), "a\0b").is_err());
        assert!(Header::new(KnownHeader::To, "\"BEL:\\\x07\" <sip:a@b>").is_ok());
        assert!(Header::new(KnownHeader::To, "\"raw\x07\" <sip:a@b>").is_err());
        assert_eq!(
            Header::new(KnownHeader::Subject, "  hi  ").unwrap().value(),
            "hi"
        );
        assert!(Header::new(HeaderName::Other(Bytes::from("bad name")), "x").is_err());
    }
}
