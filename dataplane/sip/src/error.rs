//! Typed errors of the message layer, sorted by who is at fault.
//!
//! * [`ParseError`]: the peer sent octets we cannot frame into a message, or
//!   a start line we cannot read. Grouped as "over our bounds" (the peer may
//!   be fine, our [`Limits`](crate::Limits) say no), "framing" and "start
//!   line". Its `Display` is a reason phrase fit for a 400 response.
//! * [`ValueError`]: one header value, URI or parameter is wrong. The peer is
//!   at fault when it came off the wire; our caller is when it came from a
//!   builder (the printer refuses to emit it either way).
//!
//! Neither carries strings: reason phrases are static, and the header a
//! [`ValueError`] belongs to is attached by the validator.

use thiserror::Error;

/// Why a byte sequence is not a SIP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ParseError {
    // --- Over our bounds: the peer may be standards-conformant, but the
    // --- message exceeds a configured `Limits` value.
    /// The message (head and body) is longer than `Limits::max_message_len`.
    #[error("Message Too Large")]
    MessageTooLarge,
    /// One logical header line (with its continuations) or the start line
    /// is longer than `Limits::max_line_len`.
    #[error("Header Line Too Long")]
    LineTooLong,
    /// More header lines than `Limits::max_headers`.
    #[error("Too Many Header Fields")]
    TooManyHeaders,

    // --- Framing: the boundaries of the message or of a line are unclear.
    /// Nothing but CRLFs (a keep-alive over a datagram transport).
    #[error("Empty Message")]
    Empty,
    /// A CR not followed by LF, or an LF not preceded by CR.
    #[error("Bare CR or LF")]
    BareLineBreak,
    /// The datagram ended before the empty line that closes the headers.
    #[error("Missing Empty Line After Header Fields")]
    UnterminatedHead,
    /// A header line without a `name:` prefix, or a continuation line with
    /// no header to continue.
    #[error("Malformed Header Line")]
    MalformedHeaderLine,
    /// A raw control character where the grammar allows none.
    #[error("Control Character in Header Field")]
    ControlCharacter,
    /// Content-Length is not `1*DIGIT` or overflows.
    #[error("Malformed Content-Length")]
    BadContentLength,
    /// Two or more Content-Length values: the body's extent is ambiguous.
    #[error("Multiple Content-Length Values")]
    MultipleContentLength,
    /// A message on a stream transport without Content-Length (§18.3).
    #[error("Missing Content-Length")]
    MissingContentLength,
    /// The datagram holds fewer body octets than Content-Length announces.
    #[error("Content-Length Larger Than Body")]
    TruncatedBody,

    // --- Start line.
    /// Not `Method SP Request-URI SP SIP-Version` with single spaces.
    #[error("Malformed Request Line")]
    BadRequestLine,
    /// The Request-URI does not parse (e.g. `<sip:…>` or a bad host).
    #[error("Malformed Request-URI")]
    BadRequestUri(ValueError),
    /// Not `SIP-Version SP 3DIGIT SP Reason-Phrase`.
    #[error("Malformed Status Line")]
    BadStatusLine,
}

impl ParseError {
    /// The status a server answers with when it can answer at all: 513 for a
    /// message over one of our size bounds (the whole, one header line, the
    /// number of header lines), 400 otherwise.
    pub fn status(self) -> u16 {
        match self {
            Self::MessageTooLarge | Self::LineTooLong | Self::TooManyHeaders => 513,
            _ => 400,
        }
    }
}

/// Why one value (header field value, URI, parameter) is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ValueError {
    /// A header the message must carry is absent.
    #[error("missing")]
    Missing,
    /// A single-valued header, or a parameter, appears more than once.
    #[error("repeated")]
    Repeated,
    /// The value does not match its grammar.
    #[error("malformed")]
    Malformed,
    /// A number outside the range its field allows.
    #[error("out of range")]
    OutOfRange,
    /// Longer than a configured bound (URI, identifier).
    #[error("too long")]
    TooLong,
    /// More values or parameters than a configured bound.
    #[error("too many values")]
    TooMany,
}
