//! Head framing: physical lines, continuation lines and header slots.
//!
//! Costs: one `memchr` pass per line, one control-character scan that
//! vectorises, one `Vec` of header slots (capacity 16, bounded by
//! `Limits::max_headers`). Folded values are the only copy, bounded by the
//! line length limit.

use bytes::Bytes;

use crate::error::ParseError;
use crate::header::{Header, HeaderName, Headers, KnownHeader, value_is_clean};
use crate::limits::Limits;
use crate::syntax::{is_ctl, is_token_char, is_ws, trim_ws};

/// One physical line: `[start, end)` excludes the CRLF; `next` follows it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Line {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) next: usize,
    pub(super) has_ctl: bool,
}

/// Finds the line starting at `pos`. `Ok(None)` means no CRLF yet.
pub(super) fn next_line(s: &[u8], pos: usize, max_len: usize) -> Result<Option<Line>, ParseError> {
    let rest = s.get(pos..).unwrap_or_default();
    // Only look as far as a line may reach: a CR at index `max_len` still
    // ends a line of the maximum length.
    let window = rest.get(..max_len.saturating_add(1)).unwrap_or(rest);
    let Some(i) = memchr::memchr2(b'\r', b'\n', window) else {
        return if rest.len() > max_len {
            Err(ParseError::LineTooLong)
        } else {
            Ok(None)
        };
    };
    if window.get(i) == Some(&b'\n') {
        return Err(ParseError::BareLineBreak);
    }
    match rest.get(i + 1) {
        Some(b'\n') => {
            let text = rest.get(..i).unwrap_or_default();
            // Non-short-circuit OR so the scan vectorises.
            let has_ctl = text.iter().fold(false, |acc, &b| acc | is_ctl(b));
            Ok(Some(Line {
                start: pos,
                end: pos + i,
                next: pos + i + 2,
                has_ctl,
            }))
        }
        Some(_) => Err(ParseError::BareLineBreak),
        None => Ok(None),
    }
}

/// Number of leading CRLF octets (ignored before a start line, §7.5).
pub(super) fn leading_crlfs(s: &[u8]) -> usize {
    s.chunks_exact(2).take_while(|c| *c == b"\r\n").count() * 2
}

/// Strict framing refuses every defect; salvage framing, used only to find
/// the headers needed to answer a broken request, skips bad header lines
/// and accepts a datagram that ends without the empty line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Strict,
    Salvage,
}

/// A header being assembled from its first line and continuations.
struct Pending {
    line_start: usize,
    name: (usize, usize),
    value: (usize, usize),
    folded: bool,
    has_ctl: bool,
}

/// The framed head: start line range, header slots, body offset.
pub(crate) struct Head {
    pub(crate) start_line: (usize, usize),
    pub(crate) start_has_ctl: bool,
    pub(crate) headers: Headers,
    pub(crate) body_start: usize,
}

#[inline(always)]
fn finish(
    buf: &Bytes,
    p: Pending,
    headers: &mut Headers,
    limits: &Limits,
    mode: Mode,
) -> Result<(), ParseError> {
    let s: &[u8] = buf;
    let name_slice = s.get(p.name.0..p.name.1).unwrap_or_default();
    let raw = s.get(p.value.0..p.value.1).unwrap_or_default();
    let value = if p.folded {
        // Each continuation is CRLF followed by white space; dropping the
        // CRLF leaves that white space as the separator (§7.3.1).
        let unfolded: Vec<u8> = raw
            .iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect();
        let unfolded = Bytes::from(unfolded);
        unfolded.slice_ref(trim_ws(&unfolded))
    } else {
        buf.slice_ref(trim_ws(raw))
    };
    let name = HeaderName::from_wire(buf, name_slice);
    if p.has_ctl && !value_is_clean(&value, name.known().is_some()) {
        return match mode {
            Mode::Strict => Err(ParseError::ControlCharacter),
            Mode::Salvage => Ok(()),
        };
    }
    if headers.len() >= limits.max_headers && mode == Mode::Strict {
        return Err(ParseError::TooManyHeaders);
    }
    // Salvaging, the last four places are kept for what an answer copies
    // (From, To, Call-ID, CSeq; once each, the Vias came first), so the
    // answer itself stays within the bound.
    if mode == Mode::Salvage && headers.len() + ANSWER_HEADERS >= limits.max_headers {
        let answers = name.known().is_some_and(|k| {
            matches!(
                k,
                KnownHeader::From | KnownHeader::To | KnownHeader::CallId | KnownHeader::CSeq
            ) && headers.get(k).is_none()
        });
        if !answers {
            return Ok(());
        }
    }
    headers.push(Header::from_wire(name, value));
    Ok(())
}

/// Headers besides Via that a stateless answer copies.
const ANSWER_HEADERS: usize = 4;

/// Frames the start line and header section of `buf`.
pub(crate) fn parse_head(buf: &Bytes, limits: &Limits, mode: Mode) -> Result<Head, ParseError> {
    let s: &[u8] = buf;
    let mut pos = leading_crlfs(s);
    if pos >= s.len() {
        return Err(ParseError::Empty);
    }
    let start = next_line(s, pos, limits.max_line_len)?.ok_or(ParseError::UnterminatedHead)?;
    pos = start.next;
    let mut headers = Headers::with_limits(*limits);
    let mut pending: Option<Pending> = None;
    let body_start = loop {
        let line = match next_line(s, pos, limits.max_line_len) {
            Ok(Some(line)) => line,
            Ok(None) if mode == Mode::Salvage => break s.len(),
            Ok(None) => return Err(ParseError::UnterminatedHead),
            // A line past the bound is skipped whole, with what it
            // continues: the message can still be answered (513).
            Err(ParseError::LineTooLong) if mode == Mode::Salvage => {
                let rest = s.get(pos..).unwrap_or_default();
                // A header before it is whole; one it continues is not kept.
                let continues = rest.first().is_some_and(|&b| is_ws(b));
                if let Some(p) = pending.take()
                    && !continues
                {
                    finish(buf, p, &mut headers, limits, mode)?;
                }
                let Some(i) = memchr::memmem::find(rest, b"\r\n") else {
                    break s.len();
                };
                pos += i + 2;
                continue;
            }
            Err(e) => return Err(e),
        };
        pos = line.next;
        if line.start == line.end {
            break line.next;
        }
        let first = s.get(line.start).copied().unwrap_or(b' ');
        if is_ws(first) {
            match pending.as_mut() {
                Some(p) => {
                    p.value.1 = line.end;
                    p.folded = true;
                    p.has_ctl |= line.has_ctl;
                    if line.end - p.line_start > limits.max_line_len {
                        if mode == Mode::Salvage {
                            pending = None;
                            continue;
                        }
                        return Err(ParseError::LineTooLong);
                    }
                }
                None if mode == Mode::Salvage => {}
                None => return Err(ParseError::MalformedHeaderLine),
            }
            continue;
        }
        if let Some(p) = pending.take() {
            finish(buf, p, &mut headers, limits, mode)?;
        }
        let text = s.get(line.start..line.end).unwrap_or_default();
        let name_len = text
            .iter()
            .position(|&b| !is_token_char(b))
            .unwrap_or(text.len());
        let after_name = text.get(name_len..).unwrap_or_default();
        let ws = after_name.iter().take_while(|&&b| is_ws(b)).count();
        if name_len == 0 || after_name.get(ws) != Some(&b':') {
            match mode {
                Mode::Strict => return Err(ParseError::MalformedHeaderLine),
                Mode::Salvage => continue,
            }
        }
        pending = Some(Pending {
            line_start: line.start,
            name: (line.start, line.start + name_len),
            value: (line.start + name_len + ws + 1, line.end),
            folded: false,
            has_ctl: line.has_ctl,
        });
    };
    if let Some(p) = pending.take() {
        finish(buf, p, &mut headers, limits, mode)?;
    }
    Ok(Head {
        start_line: (start.start, start.end),
        start_has_ctl: start.has_ctl,
        headers,
        body_start,
    })
}
