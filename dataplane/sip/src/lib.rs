//! Sans-IO SIP: the message layer.
//!
//! No sockets, no clock, no threads: bytes in, [`Message`]s out, and back.
//!
//! * [`parse_datagram`] / [`frame_stream`] + [`parse_stream_message`] turn
//!   received octets into a [`Message`] whose header values and body are
//!   zero-copy slices of the input, under the bounds of [`Limits`].
//! * [`Headers`] keeps every header line in order (unknown ones opaque, in
//!   their original spelling) and offers typed views: [`Via`], [`NameAddr`]
//!   (From/To/Route), [`Contact`], [`CSeq`], [`MediaType`], [`Auth`], ...
//! * [`Message::to_bytes`] prints canonically; [`RequestBuilder`],
//!   [`ResponseBuilder::reply_to`], [`cancel_for`] and [`ack_for_non2xx`]
//!   construct messages.
//! * [`screen_datagram`] / [`check_request`] classify a received request
//!   the way RFC 4475 §3 expects of a server: accept, answer (400, 416,
//!   420, 505, ...) or drop.
//!
//! ```
//! use codeb_sip::{Limits, Message, parse_datagram};
//!
//! let wire = "OPTIONS sip:bob@example.com SIP/2.0\r\n\
//!             Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds\r\n\
//!             Max-Forwards: 70\r\nTo: <sip:bob@example.com>\r\n\
//!             From: Alice <sip:alice@example.com>;tag=1928301774\r\n\
//!             Call-ID: a84b4c76e66710\r\nCSeq: 63104 OPTIONS\r\n\
//!             Content-Length: 0\r\n\r\n";
//! let msg = parse_datagram(wire.into(), &Limits::default()).unwrap();
//! let h = msg.headers();
//! assert_eq!(h.cseq().unwrap().seq, 63104);
//! assert_eq!(h.from().unwrap().tag(), Some(&b"1928301774"[..]));
//! assert_eq!(h.top_via().unwrap().branch.as_deref(), Some(&b"z9hG4bK776asdhds"[..]));
//! ```

mod builder;
pub mod dialog;
pub mod digest;
mod error;
pub mod header;
mod limits;
mod message;
mod method;
pub mod multipart;
mod params;
mod parse;
mod print;
pub mod sdp;
mod syntax;
pub mod transaction;
mod uri;
pub mod validate;

pub use builder::{RequestBuilder, ResponseBuilder, ack_for_non2xx, cancel_for};
pub use dialog::{Dialog, DialogConfig, DialogId, DialogTable};
pub use error::{ParseError, ValueError};
pub use header::{
    Auth, CSeq, Contact, DisplayName, Header, HeaderName, Headers, KnownHeader, MediaType,
    NameAddr, Reason, Refresher, Rport, SessionExpires, Transport, Via,
};
pub use limits::Limits;
pub use message::{Message, Request, Response, StatusCode, Version};
pub use method::{Method, MethodSet};
pub use params::{Param, ParamKind, Params};
pub use parse::{Frame, frame_stream, parse_datagram, parse_stream_message};
pub use transaction::{
    Address, IdGenerator, Peer, Timers, TransactionError, TransactionId, TransactionLayer, Transmit,
};
pub use uri::{AbsoluteUri, Host, SipScheme, SipUri, TelUri, Uri};
pub use validate::{
    Policy, Problem, Role, Verdict, check_request, check_response, rejection, screen_datagram,
    screen_stream_message,
};
