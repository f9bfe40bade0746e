//! Framing: turns received octets into a [`Message`] without copying them.
//!
//! What this module owns: where the start line, each header line and the
//! body begin and end; line continuations (folding); the start line's
//! grammar; Content-Length rules for datagram and stream transports
//! (RFC 3261 §7.5, §18.3). It does not judge header contents beyond what
//! framing needs; see [`crate::validate`] for that.
//!
//! Submodules: `head` frames lines and header slots, `start` reads the
//! start line, `stream` finds message boundaries on TCP/TLS.

mod head;
mod start;
mod stream;

use bytes::Bytes;

use crate::error::ParseError;
use crate::header::{Headers, KnownHeader};
use crate::limits::Limits;
use crate::message::{Message, Request, Response};
use crate::method::Method;
use crate::syntax::is_token;

pub(crate) use head::{Head, Mode, parse_head};
use start::{StartLine, is_status_line, parse_start_line};
pub use stream::{Frame, frame_stream, parse_stream_message};

/// Content-Length of a framed head: absent, one value, or an error.
fn declared_length(headers: &Headers, limits: &Limits) -> Result<Option<usize>, ParseError> {
    let mut all = headers.get_all(KnownHeader::ContentLength);
    let first = all.next();
    if all.next().is_some() {
        return Err(ParseError::MultipleContentLength);
    }
    let Some(v) = first else { return Ok(None) };
    let n = crate::syntax::parse_bounded(v, u64::MAX).map_err(|e| match e {
        crate::error::ValueError::OutOfRange => ParseError::MessageTooLarge,
        _ => ParseError::BadContentLength,
    })?;
    match usize::try_from(n) {
        Ok(n) if n <= limits.max_message_len => Ok(Some(n)),
        _ => Err(ParseError::MessageTooLarge),
    }
}

fn assemble(start: StartLine, headers: Headers, body: Bytes) -> Message {
    match start {
        StartLine::Request {
            method,
            uri,
            version,
        } => Message::Request(Request {
            method,
            uri,
            version,
            headers,
            body,
        }),
        StartLine::Response {
            version,
            status,
            reason,
        } => Message::Response(Response {
            version,
            status,
            reason,
            headers,
            body,
        }),
    }
}

/// Parses one UDP datagram. A body shorter than Content-Length is an error;
/// octets beyond it are discarded (§18.3, RFC 4475 `dblreq`); without
/// Content-Length the body is the rest of the datagram.
pub fn parse_datagram(buf: Bytes, limits: &Limits) -> Result<Message, ParseError> {
    if buf.len() > limits.max_message_len {
        return Err(ParseError::MessageTooLarge);
    }
    let head = parse_head(&buf, limits, Mode::Strict)?;
    let start = parse_start_line(&buf, &head, limits)?;
    let available = buf.len().saturating_sub(head.body_start);
    let body_len = match declared_length(&head.headers, limits)? {
        Some(n) if n > available => return Err(ParseError::TruncatedBody),
        Some(n) => n,
        None => available,
    };
    let body = buf.slice(head.body_start..head.body_start + body_len);
    Ok(assemble(start, head.headers, body))
}

/// For a request that failed to parse, the method token (if readable) and
/// whatever header lines frame, so that a 4xx can still be addressed.
/// `None` for responses and for starts that are not a request at all.
pub(crate) fn salvage(buf: &Bytes, limits: &Limits) -> Option<(Option<Method>, Headers)> {
    if buf.len() > limits.max_message_len {
        return None;
    }
    let head = parse_head(buf, limits, Mode::Salvage).ok()?;
    let line = buf
        .get(head.start_line.0..head.start_line.1)
        .unwrap_or_default();
    if is_status_line(line) {
        return None;
    }
    let method_tok = line.split(|&b| b == b' ').next().unwrap_or_default();
    if !is_token(method_tok) {
        return None;
    }
    Some((Method::from_token(buf, method_tok).ok(), head.headers))
}

#[cfg(test)]
mod tests;
