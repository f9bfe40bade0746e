//! What a call's email says, and the RFC 5322 message it travels in. Pure
//! functions: the caller passes the times.
//!
//! - `render_call_email` turns a call's end into a subject and a plain-text
//!   body (outcome, times, duration, error detail, the transcript turns),
//!   stored in the outbox when the call ends.
//! - `build_message` wraps a stored email into the bytes sent after `DATA`:
//!   `Date` (when it was queued) and `Message-ID` (from its fixed id), so a
//!   retry sends the very same message; the subject is ASCII or RFC 2047
//!   encoded words; the body is UTF-8 in quoted-printable (RFC 2045), which
//!   keeps every line short and 7-bit whatever the transcript holds, so no
//!   relay has to offer 8BITMIME and no turn breaks the 998-octet line limit.
//! - `dot_stuff` is SMTP's transparency (RFC 5321 §4.5.2).

use std::fmt::Write as _;

use base64::Engine as _;
use codeb_types::{CallStatus, UtcMillis};

use crate::store::Turn;

/// Largest body stored for one email; a longer transcript is cut with a
/// note saying where the whole one is.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Longest subject, in characters.
pub const MAX_SUBJECT_CHARS: usize = 200;

/// A call's end, as its email reports it.
#[derive(Debug, Clone)]
pub struct CallSummary<'a> {
    pub call_id: &'a str,
    pub phone: &'a str,
    pub display_name: &'a str,
    pub status: CallStatus,
    pub outcome: &'a str,
    pub answered: bool,
    pub attempt: i64,
    pub dispatched_at: Option<UtcMillis>,
    pub answered_at: Option<UtcMillis>,
    pub ended_at: UtcMillis,
    pub talk_seconds: i64,
    pub duration_seconds: i64,
    pub error_detail: &'a str,
    pub trunk_id: Option<&'a str>,
    pub tokens: i64,
    /// The transcript file's name and its turns, when the call had any.
    pub transcript: Option<(&'a str, &'a [Turn])>,
}

pub(crate) fn cut_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

/// Subject and body of a call's email.
pub fn render_call_email(c: &CallSummary<'_>) -> (String, String) {
    let who = if c.display_name.is_empty() || c.display_name == c.phone {
        c.phone.to_owned()
    } else {
        format!("{} ({})", c.phone, c.display_name)
    };
    let outcome = if c.outcome.is_empty() {
        c.status.as_str()
    } else {
        c.outcome
    };
    let subject = cut_chars(
        &format!("Call to {who}: {outcome} [{}]", c.call_id),
        MAX_SUBJECT_CHARS,
    );
    let mut b = String::new();
    let _ = writeln!(b, "Outbound AI call {} to {who}", c.call_id);
    b.push('\n');
    let mut field = |k: &str, v: &str| {
        if !v.is_empty() {
            let _ = writeln!(b, "{k:<13}{v}");
        }
    };
    field("Status:", c.status.as_str());
    field("Outcome:", outcome);
    field("Answered:", if c.answered { "yes" } else { "no" });
    // A call cancelled before it was dialled had no attempt.
    field(
        "Attempt:",
        &if c.attempt > 0 {
            c.attempt.to_string()
        } else {
            "none (not dialled)".to_owned()
        },
    );
    field(
        "Dialled:",
        &c.dispatched_at.map(UtcMillis::to_iso).unwrap_or_default(),
    );
    field(
        "Answered at:",
        &c.answered_at.map(UtcMillis::to_iso).unwrap_or_default(),
    );
    field("Ended:", &c.ended_at.to_iso());
    field("Talk time:", &format!("{} s", c.talk_seconds.max(0)));
    if c.dispatched_at.is_some() {
        field("Duration:", &format!("{} s", c.duration_seconds.max(0)));
    }
    field("Trunk:", c.trunk_id.unwrap_or(""));
    if c.tokens > 0 {
        field("AI tokens:", &c.tokens.to_string());
    }
    field("Error:", c.error_detail);
    b.push('\n');
    match c.transcript {
        Some((file, turns)) if !turns.is_empty() => {
            let _ = writeln!(b, "Transcript ({} turns, {file}):", turns.len());
            b.push('\n');
            let note = format!(
                "\n[The transcript is longer than this email can carry; the whole of it is \
                 at GET /api.ashx/v1/transcripts/{}]\n",
                c.call_id
            );
            for t in turns {
                let line = format!("[{}] {}: {}\n", t.ts.to_iso(), t.speaker, t.text);
                if b.len() + line.len() + note.len() > MAX_BODY_BYTES {
                    b.push_str(&note);
                    break;
                }
                b.push_str(&line);
            }
        }
        _ => {
            b.push_str("No transcript: nothing was said on this call.\n");
        }
    }
    (subject, b)
}

/// An email as the outbox holds it, ready to be wrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing<'a> {
    /// The outbox id: the Message-ID's left part.
    pub id: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub subject: &'a str,
    pub body: &'a str,
    /// When it was queued: the `Date`.
    pub queued_at: UtcMillis,
    pub call_id: &'a str,
}

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Thu, 04 Jun 2026 17:55:12 +0000` (RFC 5322 §3.3).
pub fn rfc5322_date(t: UtcMillis) -> String {
    let c = t.civil();
    let days = t.0.div_euclid(86_400_000);
    // 1970-01-01 was a Thursday.
    let dow = usize::try_from((days + 4).rem_euclid(7)).unwrap_or(0);
    let mon = usize::try_from(c.month - 1).unwrap_or(0).min(11);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} +0000",
        DAYS[dow], c.day, MONTHS[mon], c.year, c.hour, c.minute, c.second
    )
}

/// A header value as printable ASCII: as is when it already is one (long
/// values folded at spaces), else RFC 2047 `B` encoded words of UTF-8, each
/// at most 75 characters, one per folded line.
pub fn encode_header_value(name: &str, value: &str) -> String {
    let printable = value.bytes().all(|b| (b' '..=b'~').contains(&b));
    if printable && !value.contains("=?") {
        return fold(name.len() + 2, value);
    }
    // "=?utf-8?B?" + base64 + "?=": 39 input bytes → 52 + 12 characters,
    // so even the first line ("Subject: " + word) stays within 78.
    const CHUNK: usize = 39;
    let mut words = Vec::new();
    let mut start = 0;
    while start < value.len() {
        let mut end = (start + CHUNK).min(value.len());
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(&value[start..end]);
        words.push(format!("=?utf-8?B?{b64}?="));
        start = end;
    }
    words.join("\r\n ")
}

/// Folds at spaces so lines stay near 78 characters (`used`: what the
/// header name takes on the first line).
fn fold(used: usize, value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    let mut line = used;
    for (i, word) in value.split(' ').enumerate() {
        if i > 0 {
            if line + 1 + word.len() > 78 && line > 1 {
                out.push_str("\r\n ");
                line = 1;
            } else {
                out.push(' ');
                line += 1;
            }
        }
        out.push_str(word);
        line += word.len();
    }
    out
}

/// Quoted-printable (RFC 2045 §6.7) of UTF-8 text: CRLF line ends, lines of
/// at most 76 characters (soft breaks `=`), trailing space and tab encoded.
pub fn quoted_printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let lines: Vec<&str> = text.split('\n').collect();
    let last = lines.len() - 1;
    for (n, raw) in lines.iter().enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let bytes = line.as_bytes();
        let mut width = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let at_end = i + 1 == bytes.len();
            let literal =
                ((b'!'..=b'~').contains(&b) && b != b'=') || (matches!(b, b' ' | b'\t') && !at_end);
            let piece_len = if literal { 1 } else { 3 };
            // Room for the piece and, unless the line ends here, a soft `=`.
            let room = if at_end { 76 } else { 75 };
            if width + piece_len > room {
                out.push_str("=\r\n");
                width = 0;
            }
            if literal {
                out.push(char::from(b));
            } else {
                let _ = write!(out, "={b:02X}");
            }
            width += piece_len;
        }
        if n != last {
            out.push_str("\r\n");
        }
    }
    if !out.ends_with("\r\n") {
        out.push_str("\r\n");
    }
    out
}

/// The message sent after `DATA` (before dot-stuffing): headers, a blank
/// line, the quoted-printable body; CRLF throughout.
pub fn build_message(m: &Outgoing<'_>, host: &str) -> String {
    let mut out = String::new();
    let mut header = |name: &str, value: &str| {
        let _ = write!(out, "{name}: {value}\r\n");
    };
    header("Date", &rfc5322_date(m.queued_at));
    header("From", &format!("CodeB <{}>", m.from));
    header("To", &format!("<{}>", m.to));
    header("Subject", &encode_header_value("Subject", m.subject));
    header("Message-ID", &format!("<{}@{host}>", m.id));
    header("MIME-Version", "1.0");
    header("Content-Type", "text/plain; charset=utf-8");
    header("Content-Transfer-Encoding", "quoted-printable");
    // RFC 3834: machines do not answer it (no vacation replies).
    header("Auto-Submitted", "auto-generated");
    header("X-CodeB-Call-Id", m.call_id);
    out.push_str("\r\n");
    out.push_str(&quoted_printable(m.body));
    out
}

/// SMTP transparency: a line starting with `.` gets another in front; the
/// end-of-data line is added. `msg` has CRLF line ends.
pub fn dot_stuff(msg: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 16);
    let mut at_line_start = true;
    for &b in msg.as_bytes() {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
