//! Bounds on everything the parser will accept from a peer.
//!
//! Every loop in the parser and in the typed header views is bounded by one
//! of these numbers or by the input length, so a hostile message costs at
//! most a small multiple of its own size. The defaults are chosen so that
//! every valid message of RFC 4475 and RFC 5118 passes; the comments say
//! which message sets the floor.

/// Configurable parser bounds. `Limits::default()` is the production setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Whole message, head and body. 65,535 is the largest UDP payload; the
    /// same bound applies to stream transports so one connection cannot make
    /// us buffer more per message.
    pub max_message_len: usize,
    /// One logical header line including its continuations, and the start
    /// line. RFC 4475 `longreq` needs about 700; real Identity and
    /// Authorization headers stay well under 2 KiB.
    pub max_line_len: usize,
    /// Header lines (not values) in one message.
    pub max_headers: usize,
    /// Via values in one message. RFC 4475 `longreq` carries 34; 70 matches
    /// the recommended initial Max-Forwards, so no request that was forwarded
    /// legitimately can carry more.
    pub max_via: usize,
    /// Values of one list header (Contact, Route, Accept, Supported, ...)
    /// summed over all its lines.
    pub max_values: usize,
    /// One URI, in the start line or in a header.
    pub max_uri_len: usize,
    /// Parameters of one header value or one URI.
    pub max_params: usize,
    /// Call-ID, tags and Via branch: the keys of our dialog and transaction
    /// tables, so they bound per-call memory. RFC 4475 `longreq` has a
    /// 215-octet branch and a 155-octet tag.
    pub max_ident_len: usize,
}

impl Limits {
    /// The production defaults (see the field docs for the reasoning).
    pub const DEFAULT: Self = Self {
        max_message_len: 65_535,
        max_line_len: 4_096,
        max_headers: 128,
        max_via: 70,
        max_values: 64,
        max_uri_len: 2_048,
        max_params: 32,
        max_ident_len: 256,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}
