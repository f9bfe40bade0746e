//! Quoted strings (`qdtext`, `quoted-pair`, UTF8-NONASCII) and `%HH`
//! escapes: validating them and resolving them, borrowing when nothing
//! needs resolving.

use std::borrow::Cow;

use crate::error::ValueError;

/// Length of the UTF8-NONASCII sequence starting at `s[0]` (RFC 3261 §25.1:
/// a lead octet C0–FD followed by the right number of 80–BF octets).
fn utf8_nonascii_len(s: &[u8]) -> Option<usize> {
    let lead = *s.first()?;
    let len = match lead {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        0xf8..=0xfb => 5,
        0xfc..=0xfd => 6,
        _ => return None,
    };
    let tail = s.get(1..len)?;
    tail.iter()
        .all(|&b| (0x80..=0xbf).contains(&b))
        .then_some(len)
}

/// Given `s` starting with `"`, returns the length of the quoted-string
/// including both quotes, validating `qdtext` and `quoted-pair`.
pub(crate) fn quoted_string_len(s: &[u8]) -> Result<usize, ValueError> {
    if s.first() != Some(&b'"') {
        return Err(ValueError::Malformed);
    }
    let mut i = 1;
    loop {
        let b = *s.get(i).ok_or(ValueError::Malformed)?;
        match b {
            b'"' => return Ok(i + 1),
            b'\\' => {
                // quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
                let escaped = *s.get(i + 1).ok_or(ValueError::Malformed)?;
                if escaped > 0x7f || escaped == b'\r' || escaped == b'\n' {
                    return Err(ValueError::Malformed);
                }
                i += 2;
            }
            b' ' | b'\t' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e => i += 1,
            0x80..=0xff => {
                i += utf8_nonascii_len(s.get(i..).unwrap_or_default())
                    .ok_or(ValueError::Malformed)?
            }
            _ => return Err(ValueError::Malformed),
        }
    }
}

/// Removes the quotes of a validated quoted-string and resolves its
/// `quoted-pair`s. Borrows unless an escape is present.
pub(crate) fn unquote(quoted: &[u8]) -> Cow<'_, [u8]> {
    let inner = quoted
        .strip_prefix(b"\"")
        .and_then(|s| s.strip_suffix(b"\""))
        .unwrap_or(quoted);
    if !inner.contains(&b'\\') {
        return Cow::Borrowed(inner);
    }
    let mut out = Vec::with_capacity(inner.len());
    let mut iter = inner.iter();
    while let Some(&b) = iter.next() {
        if b == b'\\' {
            if let Some(&next) = iter.next() {
                out.push(next);
            }
        } else {
            out.push(b);
        }
    }
    Cow::Owned(out)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `true` if every octet is allowed by `allowed` or starts a valid `%HH`.
pub(crate) fn is_escaped_text(s: &[u8], allowed: fn(u8) -> bool) -> bool {
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b == b'%' {
            let hex = s.get(i + 1..i + 3).unwrap_or_default();
            if hex.len() != 2 || !hex.iter().all(|&h| hex_val(h).is_some()) {
                return false;
            }
            i += 3;
        } else if allowed(b) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// Resolves `%HH` escapes (RFC 3261 §19.1.2). Borrows when nothing is
/// escaped; a `%` not followed by two hex digits is kept literally, which
/// only happens for text that was not validated with [`is_escaped_text`].
pub(crate) fn pct_decode(s: &[u8]) -> Cow<'_, [u8]> {
    if !s.contains(&b'%') {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        let decoded = (b == b'%')
            .then(|| Some(hex_val(*s.get(i + 1)?)? << 4 | hex_val(*s.get(i + 2)?)?))
            .flatten();
        match decoded {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

/// Compares escaped URI text with a plain name, ignoring ASCII case, the
/// way RFC 3261 §19.1.4 compares parameter names.
pub(crate) fn escaped_eq_ignore_case(escaped: &[u8], plain: &[u8]) -> bool {
    if escaped.contains(&b'%') {
        pct_decode(escaped).eq_ignore_ascii_case(plain)
    } else {
        escaped.eq_ignore_ascii_case(plain)
    }
}
