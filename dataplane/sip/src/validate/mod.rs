//! Server-side screening of received messages: what a UAS or proxy does
//! with a request before any transaction or dialog sees it (RFC 3261 §8.2,
//! §16.3, §18.1.2, §18.2.1; the verdicts RFC 4475 §3 expects).
//!
//! [`check_request`] runs the checks in the RFC's order and names the first
//! problem: 505 for a version other than 2.0; 400 for any header we have a
//! typed view of that is missing, repeated or malformed; 501 only if the
//! [`Policy`] lists its implemented methods (whether an unknown method is
//! refused or forwarded is the caller's decision, so it is off by default);
//! 400 for a CSeq method that is not the request's; 416 for a Request-URI
//! scheme we do not serve; 483 for Max-Forwards 0 when forwarding; 420 for
//! Require tags outside the supported set; 415 for a body type outside the
//! accepted set; 406 for an INVITE whose Accept excludes our answer type.
//!
//! [`screen_datagram`] composes parsing and checking into a [`Verdict`].
//! Requests that do not parse are still answered (400/505/513) when their
//! header lines frame and carry a Via to copy: the transport sends such a
//! reply to the datagram's source when the top Via itself is unusable. ACK
//! is never answered (§17). Responses are dropped, never answered, when
//! malformed. What stays with the caller, because only it has the state:
//! a client transport drops responses with more than one Via (§18.1.2,
//! RFC 4475 `bcast`; see [`Headers::via_count`]) and responses that match
//! no client transaction (§17.1.3), and a proxy that does not forward an
//! unknown method answers it 501 through [`Policy::implemented`].

mod check;
mod reply;

use bytes::Bytes;
use thiserror::Error;

pub use check::{check_request, check_response};
pub use reply::{rejection, stateless_tag};

use crate::error::{ParseError, ValueError};
use crate::header::{Headers, KnownHeader};
use crate::limits::Limits;
use crate::message::{Message, Response, StatusCode};
use crate::method::{Method, MethodSet};
use crate::parse::{parse_datagram, parse_stream_message, salvage};

/// Whether we end requests or forward them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// User agent server, registrar, or a B2BUA's answering side.
    Uas,
    /// Forwards requests: checks Proxy-Require and Max-Forwards.
    Proxy,
}

/// What a server supports; the checks that are policy read it.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    pub role: Role,
    /// When set, methods outside it get 501 with Allow.
    pub implemented: Option<MethodSet>,
    /// Option tags we understand (Require for a UAS, Proxy-Require for a
    /// proxy), compared ignoring case.
    pub supported: &'a [&'a str],
    /// When set, bodies of other types get 415 with Accept (`"type/subtype"`).
    pub accepted: Option<&'a [&'a str]>,
    /// When set, an INVITE whose Accept excludes this type gets 406 (RFC
    /// 4475 `sdp01`: we could not send our answer).
    pub answer_type: Option<&'a str>,
    /// Whether `tel:` Request-URIs are served (otherwise 416).
    pub accept_tel: bool,
    /// Secret mixed into stateless To-tags so they are not predictable.
    pub tag_key: u64,
}

impl Policy<'static> {
    /// A permissive UAS: only syntax, version, scheme and mandatory headers.
    pub const fn uas() -> Self {
        Self {
            role: Role::Uas,
            implemented: None,
            supported: &[],
            accepted: None,
            answer_type: None,
            accept_tel: false,
            tag_key: 0,
        }
    }

    /// A permissive proxy.
    pub const fn proxy() -> Self {
        Self {
            role: Role::Proxy,
            ..Self::uas()
        }
    }
}

/// The first thing wrong with a message. `Display` is the reason phrase.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Problem {
    #[error("{0}")]
    Unparsable(ParseError),
    #[error("Version Not Supported")]
    UnsupportedVersion,
    #[error("Bad {0} ({1})")]
    BadHeader(KnownHeader, ValueError),
    #[error("Via Branch Has No Transaction Identifier")]
    EmptyBranch,
    #[error("CSeq Method Does Not Match Request Method")]
    CSeqMethodMismatch,
    #[error("Request-URI Must Not Carry Headers")]
    HeadersInRequestUri,
    #[error("Missing Content-Type for Message Body")]
    MissingContentType,
    #[error("Contact * Only Alone in REGISTER With Expires 0")]
    MisplacedStarContact,
    #[error("REGISTER To Must Be a SIP or SIPS URI")]
    NonSipAddressOfRecord,
    #[error("Not Implemented")]
    NotImplemented,
    #[error("Unsupported URI Scheme")]
    UnsupportedScheme,
    #[error("Too Many Hops")]
    TooManyHops,
    /// The option tags we do not support, for the Unsupported header.
    #[error("Bad Extension")]
    BadExtension(Vec<Bytes>),
    #[error("Unsupported Media Type")]
    UnsupportedMediaType,
    #[error("Not Acceptable")]
    NotAcceptable,
}

impl Problem {
    /// The status a server answers this problem with.
    pub fn status(&self) -> StatusCode {
        let code = match self {
            Self::Unparsable(e) => e.status(),
            Self::UnsupportedVersion => 505,
            Self::NotImplemented => 501,
            Self::UnsupportedScheme => 416,
            Self::TooManyHops => 483,
            Self::BadExtension(_) => 420,
            Self::UnsupportedMediaType => 415,
            Self::NotAcceptable => 406,
            _ => 400,
        };
        StatusCode::new(code).unwrap_or(StatusCode::BAD_REQUEST)
    }
}

/// What to do with a received datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the transaction layer.
    Accept(Message),
    /// Send `response` (statelessly) and forget the request.
    Reply {
        response: Response,
        problem: Problem,
    },
    /// Discard silently.
    Drop(Problem),
}

/// Answers `problem` if the request can be answered: never an ACK, and
/// only with a Via to copy.
fn answer(
    headers: &Headers,
    method: Option<&Method>,
    problem: Problem,
    policy: &Policy<'_>,
) -> Verdict {
    if method == Some(&Method::Ack) || headers.get(KnownHeader::Via).is_none() {
        return Verdict::Drop(problem);
    }
    match rejection(headers, &problem, policy) {
        Ok(response) => Verdict::Reply { response, problem },
        Err(_) => Verdict::Drop(problem),
    }
}

/// Parses and screens one datagram as a server would.
pub fn screen_datagram(buf: Bytes, limits: &Limits, policy: &Policy<'_>) -> Verdict {
    screen(buf, limits, policy, parse_datagram)
}

/// [`screen_datagram`] for one message framed from a stream
/// ([`crate::frame_stream`]): a request that frames but does not parse is
/// answered the same way.
pub fn screen_stream_message(buf: Bytes, limits: &Limits, policy: &Policy<'_>) -> Verdict {
    screen(buf, limits, policy, parse_stream_message)
}

fn screen(
    buf: Bytes,
    limits: &Limits,
    policy: &Policy<'_>,
    parse: fn(Bytes, &Limits) -> Result<Message, crate::ParseError>,
) -> Verdict {
    match parse(buf.clone(), limits) {
        Ok(Message::Request(req)) => match check_request(&req, policy) {
            Ok(()) => Verdict::Accept(Message::Request(req)),
            Err(problem) => answer(&req.headers, Some(&req.method), problem, policy),
        },
        Ok(Message::Response(resp)) => match check_response(&resp) {
            Ok(()) => Verdict::Accept(Message::Response(resp)),
            Err(problem) => Verdict::Drop(problem),
        },
        Err(e) => match salvage(&buf, limits) {
            Some((method, headers)) => {
                answer(&headers, method.as_ref(), Problem::Unparsable(e), policy)
            }
            None => Verdict::Drop(Problem::Unparsable(e)),
        },
    }
}

#[cfg(test)]
mod tests;
