//! TEL URIs (RFC 3966): a global or local subscriber number and its
//! parameters; a local number needs its phone-context.

use bytes::Bytes;

use crate::error::ValueError;
use crate::limits::Limits;
use crate::params::{ParamKind, Params};

/// A `tel:` URI (RFC 3966): the subscriber number and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelUri {
    /// `+1-201-555-0123` or a local number; visual separators kept.
    pub number: Bytes,
    pub params: Params,
}

impl TelUri {
    /// `true` for a global number (`+` prefix).
    pub fn is_global(&self) -> bool {
        self.number.first() == Some(&b'+')
    }

    pub(super) fn parse_after_scheme(
        owner: &Bytes,
        s: &[u8],
        limits: &Limits,
    ) -> Result<Self, ValueError> {
        let end = s.iter().position(|&b| b == b';').unwrap_or(s.len());
        let (number, params) = s.split_at_checked(end).ok_or(ValueError::Malformed)?;
        let visual = |b: u8| matches!(b, b'-' | b'.' | b'(' | b')');
        let (digits, global) = match number.strip_prefix(b"+") {
            Some(d) => (d, true),
            None => (number, false),
        };
        let valid = if global {
            digits.iter().any(u8::is_ascii_digit)
                && digits.iter().all(|&b| b.is_ascii_digit() || visual(b))
        } else {
            let dial = |b: u8| b.is_ascii_hexdigit() || b == b'*' || b == b'#';
            digits.iter().any(|&b| dial(b)) && digits.iter().all(|&b| dial(b) || visual(b))
        };
        if !valid {
            return Err(ValueError::Malformed);
        }
        let params = Params::parse(owner.slice_ref(params), ParamKind::Uri, limits)?;
        // A local number is meaningless without its context (RFC 3966 §5.1.5).
        if !global && !params.contains("phone-context") {
            return Err(ValueError::Malformed);
        }
        Ok(Self {
            number: owner.slice_ref(number),
            params,
        })
    }
}
