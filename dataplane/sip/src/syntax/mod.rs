//! The lexical layer of RFC 3261 §25: character classes, linear white space,
//! quoted strings, `%HH` escapes and overflow-checked integers.
//!
//! Everything here works on borrowed byte slices and never indexes out of
//! bounds: callers slice the owning `Bytes` with `Bytes::slice_ref` once a
//! sub-slice has been validated. Header values reach this layer already
//! unfolded (the framer removes line continuations), so "LWS" here is only
//! SP and HTAB.

mod cursor;
mod text;

pub(crate) use cursor::Cursor;
pub(crate) use text::{
    escaped_eq_ignore_case, is_escaped_text, pct_decode, quoted_string_len, unquote,
};

use crate::error::ValueError;

const TOKEN: u16 = 1 << 0;
const UNRESERVED: u16 = 1 << 1;
const USER_UNRESERVED: u16 = 1 << 2;
const PASSWORD_EXTRA: u16 = 1 << 3;
const PARAM_UNRESERVED: u16 = 1 << 4;
const HNV_UNRESERVED: u16 = 1 << 5;
const WORD: u16 = 1 << 6;
const RESERVED: u16 = 1 << 7;
const SCHEME: u16 = 1 << 8;

const fn mark(table: &mut [u16; 256], chars: &[u8], class: u16) {
    let mut i = 0;
    while i < chars.len() {
        table[chars[i] as usize] |= class;
        i += 1;
    }
}

const fn build_classes() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut c = 0usize;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphanumeric() {
            t[c] |= TOKEN | UNRESERVED | WORD | SCHEME;
        }
        c += 1;
    }
    mark(&mut t, b"-.!%*_+`'~", TOKEN);
    mark(&mut t, b"-_.!~*'()", UNRESERVED);
    mark(&mut t, b"&=+$,;?/", USER_UNRESERVED);
    mark(&mut t, b"&=+$,", PASSWORD_EXTRA);
    mark(&mut t, b"[]/:&+$", PARAM_UNRESERVED);
    mark(&mut t, b"[]/?:+$", HNV_UNRESERVED);
    mark(&mut t, b"-.!%*_+`'~()<>:\\\"/[]?{}", WORD);
    mark(&mut t, b";/?:@&=+$,", RESERVED);
    mark(&mut t, b"+-.", SCHEME);
    t
}

static CLASSES: [u16; 256] = build_classes();

fn has(b: u8, class: u16) -> bool {
    CLASSES[usize::from(b)] & class != 0
}

/// `token` characters (RFC 3261 §25.1).
pub(crate) fn is_token_char(b: u8) -> bool {
    has(b, TOKEN)
}

/// Characters allowed unescaped in a SIP URI user part.
pub(crate) fn is_user_char(b: u8) -> bool {
    has(b, UNRESERVED | USER_UNRESERVED)
}

/// Characters allowed unescaped in a SIP URI password.
pub(crate) fn is_password_char(b: u8) -> bool {
    has(b, UNRESERVED | PASSWORD_EXTRA)
}

/// `paramchar` without the escape: allowed unescaped in URI parameters.
pub(crate) fn is_param_char(b: u8) -> bool {
    has(b, UNRESERVED | PARAM_UNRESERVED)
}

/// Allowed unescaped in URI header names and values.
pub(crate) fn is_hnv_char(b: u8) -> bool {
    has(b, UNRESERVED | HNV_UNRESERVED)
}

/// `word` characters (Call-ID).
pub(crate) fn is_word_char(b: u8) -> bool {
    has(b, WORD)
}

/// `uric` without the escape, plus the IPv6 brackets RFC 2732 added.
pub(crate) fn is_uric_char(b: u8) -> bool {
    has(b, RESERVED | UNRESERVED) || b == b'[' || b == b']'
}

/// Characters after the first in a URI scheme.
pub(crate) fn is_scheme_char(b: u8) -> bool {
    has(b, SCHEME)
}

/// SP or HTAB: the only white space left once a header is unfolded.
pub(crate) fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// An octet the grammar never allows raw in a header: CTL other than HTAB.
pub(crate) fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// `true` for a non-empty run of token characters.
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token_char(b))
}

/// Strips SP/HTAB from both ends.
pub(crate) fn trim_ws(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_ws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_ws(b)).map_or(start, |i| i + 1);
    s.get(start..end).unwrap_or_default()
}

/// Parses `1*DIGIT` into a `u64` no larger than `max`, with overflow checks.
///
/// Leading zeros are accepted (RFC 4475 `wsinv` has `0009`), but the digit
/// count is still bounded by the arithmetic, so `"000…0001"` costs only its
/// length.
pub(crate) fn parse_bounded(s: &[u8], max: u64) -> Result<u64, ValueError> {
    if s.is_empty() {
        return Err(ValueError::Malformed);
    }
    let mut value: u64 = 0;
    let mut overflow = false;
    for &b in s {
        if !b.is_ascii_digit() {
            return Err(ValueError::Malformed);
        }
        // Keep scanning after an overflow so that "99999x" is reported as
        // malformed rather than out of range.
        match value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
        {
            Some(v) if v <= max => value = v,
            _ => overflow = true,
        }
    }
    if overflow {
        Err(ValueError::OutOfRange)
    } else {
        Ok(value)
    }
}

/// `1*DIGIT` as a `u32` (CSeq, delta-seconds).
pub(crate) fn parse_u32(s: &[u8]) -> Result<u32, ValueError> {
    parse_bounded(s, u64::from(u32::MAX))
        .and_then(|v| u32::try_from(v).map_err(|_| ValueError::OutOfRange))
}

/// `1*DIGIT` as a port number.
pub(crate) fn parse_port(s: &[u8]) -> Result<u16, ValueError> {
    parse_bounded(s, u64::from(u16::MAX))
        .and_then(|v| u16::try_from(v).map_err(|_| ValueError::OutOfRange))
}

#[cfg(test)]
mod tests;
