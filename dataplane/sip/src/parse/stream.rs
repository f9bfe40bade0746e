//! Stream transports (TCP, TLS): where one message ends and the next
//! begins, decided by Content-Length, which streams must carry (§18.3),
//! and CRLF keep-alives (RFC 5626 §3.5.1).

use bytes::Bytes;

use super::head::{leading_crlfs, next_line};
use super::{Mode, assemble, declared_length, parse_head, parse_start_line};
use crate::error::ParseError;
use crate::header::KnownHeader;
use crate::limits::Limits;
use crate::message::Message;
use crate::syntax::{is_token_char, is_ws};

/// What [`frame_stream`] found at the front of a stream buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// One message occupies the first `len` octets: split them off and
    /// hand them to [`parse_stream_message`].
    Complete { len: usize },
    /// The buffer starts with `len` octets of CRLF keep-alive (RFC 5626
    /// §3.5.1: a double CRLF is a ping to answer with one CRLF). Consume.
    KeepAlive { len: usize },
    /// More input is needed: exactly `needed` more octets once the head is
    /// complete, an unknown amount before.
    Incomplete { needed: Option<usize> },
}

/// Reads an unfolded Content-Length from raw line octets.
fn stream_length(raw: &[u8]) -> Result<usize, ParseError> {
    let unfolded = raw.iter().copied().filter(|&b| b != b'\r' && b != b'\n');
    let mut value: usize = 0;
    let (mut seen_digit, mut seen_trailing_ws) = (false, false);
    for b in unfolded {
        match b {
            b'0'..=b'9' if !seen_trailing_ws => {
                seen_digit = true;
                value = value
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(usize::from(b - b'0')))
                    .ok_or(ParseError::MessageTooLarge)?;
            }
            b' ' | b'\t' => seen_trailing_ws = seen_digit,
            _ => return Err(ParseError::BadContentLength),
        }
    }
    if seen_digit {
        Ok(value)
    } else {
        Err(ParseError::BadContentLength)
    }
}

/// Finds the extent of the first message in a stream buffer (TCP, TLS)
/// without copying: a light pass over the head for line structure and
/// Content-Length, which streams must carry (§18.3). Errors mean the
/// stream cannot be resynchronised and the connection should be closed.
pub fn frame_stream(buf: &[u8], limits: &Limits) -> Result<Frame, ParseError> {
    let crlfs = leading_crlfs(buf);
    if crlfs > 0 {
        return Ok(Frame::KeepAlive { len: crlfs });
    }
    let mut pos = 0;
    let mut lines = 0usize;
    let mut length: Option<(usize, usize)> = None;
    let mut in_length = false;
    let mut count = 0usize;
    let head_len = loop {
        let Some(line) = next_line(buf, pos, limits.max_line_len)? else {
            if buf.len() > limits.max_message_len {
                return Err(ParseError::MessageTooLarge);
            }
            return Ok(Frame::Incomplete { needed: None });
        };
        pos = line.next;
        if line.start == line.end {
            break line.next;
        }
        lines += 1;
        if lines > limits.max_headers + 1 {
            return Err(ParseError::TooManyHeaders);
        }
        let text = buf.get(line.start..line.end).unwrap_or_default();
        if lines > 1 && text.first().is_some_and(|&b| is_ws(b)) {
            if in_length {
                length = length.map(|(s, _)| (s, line.end));
            }
            continue;
        }
        in_length = false;
        if lines == 1 {
            continue;
        }
        let name_len = text
            .iter()
            .position(|&b| !is_token_char(b))
            .unwrap_or(text.len());
        let name = text.get(..name_len).unwrap_or_default();
        if KnownHeader::lookup(name) == Some(KnownHeader::ContentLength) {
            count += 1;
            let colon = text
                .iter()
                .position(|&b| b == b':')
                .ok_or(ParseError::MalformedHeaderLine)?;
            length = Some((line.start + colon + 1, line.end));
            in_length = true;
        }
    };
    let declared = match (count, length) {
        (0, _) | (_, None) => return Err(ParseError::MissingContentLength),
        (1, Some((s, e))) => stream_length(buf.get(s..e).unwrap_or_default())?,
        _ => return Err(ParseError::MultipleContentLength),
    };
    let total = head_len
        .checked_add(declared)
        .ok_or(ParseError::MessageTooLarge)?;
    if total > limits.max_message_len {
        return Err(ParseError::MessageTooLarge);
    }
    Ok(match total.checked_sub(buf.len()) {
        Some(needed) if needed > 0 => Frame::Incomplete {
            needed: Some(needed),
        },
        _ => Frame::Complete { len: total },
    })
}

/// Parses exactly one message framed by [`frame_stream`]: Content-Length
/// must be present and match the octets after the head.
pub fn parse_stream_message(buf: Bytes, limits: &Limits) -> Result<Message, ParseError> {
    if buf.len() > limits.max_message_len {
        return Err(ParseError::MessageTooLarge);
    }
    let head = parse_head(&buf, limits, Mode::Strict)?;
    let start = parse_start_line(&buf, &head, limits)?;
    let declared =
        declared_length(&head.headers, limits)?.ok_or(ParseError::MissingContentLength)?;
    let available = buf.len().saturating_sub(head.body_start);
    if declared != available {
        return Err(ParseError::TruncatedBody);
    }
    let body = buf.slice(head.body_start..);
    Ok(assemble(start, head.headers, body))
}
