//! The start line: `Method SP Request-URI SP SIP-Version` or
//! `SIP-Version SP Status-Code SP Reason-Phrase` (RFC 3261 §7.1, §7.2).

use bytes::Bytes;

use super::Head;
use crate::error::ParseError;
use crate::limits::Limits;
use crate::message::{StatusCode, Version};
use crate::method::Method;
use crate::syntax::is_token;
use crate::uri::Uri;

pub(super) enum StartLine {
    Request {
        method: Method,
        uri: Uri,
        version: Version,
    },
    Response {
        version: Version,
        status: StatusCode,
        reason: Bytes,
    },
}

pub(super) fn is_status_line(line: &[u8]) -> bool {
    line.get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
}

pub(super) fn parse_start_line(
    buf: &Bytes,
    head: &Head,
    limits: &Limits,
) -> Result<StartLine, ParseError> {
    let line = buf
        .get(head.start_line.0..head.start_line.1)
        .unwrap_or_default();
    if is_status_line(line) {
        if head.start_has_ctl {
            return Err(ParseError::BadStatusLine);
        }
        let sp = line
            .iter()
            .position(|&b| b == b' ')
            .ok_or(ParseError::BadStatusLine)?;
        let version =
            Version::parse(line.get(..sp).unwrap_or_default()).ok_or(ParseError::BadStatusLine)?;
        let rest = line.get(sp + 1..).unwrap_or_default();
        let code = rest
            .get(..3)
            .filter(|d| d.iter().all(u8::is_ascii_digit))
            .ok_or(ParseError::BadStatusLine)?;
        // Exactly three digits, then SP (or nothing: a missing SP before an
        // empty reason is harmless and common enough to accept).
        let reason = match rest.get(3..) {
            Some([]) | None => &[][..],
            Some([b' ', reason @ ..]) => reason,
            Some(_) => return Err(ParseError::BadStatusLine),
        };
        let code = code
            .iter()
            .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
        let status = StatusCode::new(code).ok_or(ParseError::BadStatusLine)?;
        return Ok(StartLine::Response {
            version,
            status,
            reason: buf.slice_ref(reason),
        });
    }
    if head.start_has_ctl {
        return Err(ParseError::BadRequestLine);
    }
    // Method SP Request-URI SP SIP-Version, single spaces, nothing trailing
    // (RFC 4475 `lwsstart`, `trws`, `lwsruri`).
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (method, uri, version) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(u), Some(v)) if is_token(m) && !u.is_empty() => (m, u, v),
        _ => return Err(ParseError::BadRequestLine),
    };
    let version = Version::parse(version).ok_or(ParseError::BadRequestLine)?;
    let method = Method::from_token(buf, method).map_err(|_| ParseError::BadRequestLine)?;
    let uri = Uri::parse_in(buf, uri, limits).map_err(ParseError::BadRequestUri)?;
    Ok(StartLine::Request {
        method,
        uri,
        version,
    })
}
