//! The message model: requests and responses with their start line, header
//! fields and body, all sharing the received buffer.
//!
//! A parsed `Message` is well framed and has a readable start line; nothing
//! more. Whether its headers make sense is for [`crate::validate`] to say,
//! and typed views report errors per header.

use bytes::Bytes;

use crate::header::Headers;
use crate::method::Method;
use crate::uri::Uri;

/// `SIP/<major>.<minor>`. Only 2.0 is served; others parse so that a server
/// can answer 505 (RFC 4475 `badvers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    pub major: u16,
    pub minor: u16,
}

impl Version {
    pub const SIP_2_0: Self = Self { major: 2, minor: 0 };

    /// Parses `SIP/1*DIGIT.1*DIGIT` ("SIP" in any case).
    pub(crate) fn parse(s: &[u8]) -> Option<Self> {
        let (proto, rest) = s.split_at_checked(4)?;
        if !proto.eq_ignore_ascii_case(b"SIP/") {
            return None;
        }
        let dot = rest.iter().position(|&b| b == b'.')?;
        let num = |d: &[u8]| {
            crate::syntax::parse_bounded(d, u64::from(u16::MAX))
                .ok()
                .and_then(|v| u16::try_from(v).ok())
        };
        Some(Self {
            major: num(rest.get(..dot)?)?,
            minor: num(rest.get(dot + 1..)?)?,
        })
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SIP/{}.{}", self.major, self.minor)
    }
}

/// A status code, 100 to 699.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusCode(u16);

impl StatusCode {
    pub const TRYING: Self = Self(100);
    pub const RINGING: Self = Self(180);
    pub const SESSION_PROGRESS: Self = Self(183);
    pub const OK: Self = Self(200);
    pub const BAD_REQUEST: Self = Self(400);
    pub const UNAUTHORIZED: Self = Self(401);
    pub const FORBIDDEN: Self = Self(403);
    pub const NOT_FOUND: Self = Self(404);
    pub const METHOD_NOT_ALLOWED: Self = Self(405);
    pub const NOT_ACCEPTABLE: Self = Self(406);
    pub const PROXY_AUTHENTICATION_REQUIRED: Self = Self(407);
    pub const REQUEST_TIMEOUT: Self = Self(408);
    pub const UNSUPPORTED_MEDIA_TYPE: Self = Self(415);
    pub const UNSUPPORTED_URI_SCHEME: Self = Self(416);
    pub const BAD_EXTENSION: Self = Self(420);
    pub const INTERVAL_TOO_BRIEF: Self = Self(423);
    pub const TEMPORARILY_UNAVAILABLE: Self = Self(480);
    pub const CALL_DOES_NOT_EXIST: Self = Self(481);
    pub const LOOP_DETECTED: Self = Self(482);
    pub const TOO_MANY_HOPS: Self = Self(483);
    pub const BUSY_HERE: Self = Self(486);
    pub const REQUEST_TERMINATED: Self = Self(487);
    pub const NOT_ACCEPTABLE_HERE: Self = Self(488);
    pub const SERVER_INTERNAL_ERROR: Self = Self(500);
    pub const NOT_IMPLEMENTED: Self = Self(501);
    pub const SERVICE_UNAVAILABLE: Self = Self(503);
    pub const VERSION_NOT_SUPPORTED: Self = Self(505);
    pub const MESSAGE_TOO_LARGE: Self = Self(513);
    pub const DECLINE: Self = Self(603);

    /// `None` outside 100..=699.
    pub const fn new(code: u16) -> Option<Self> {
        if code >= 100 && code <= 699 {
            Some(Self(code))
        } else {
            None
        }
    }

    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// 1xx.
    pub const fn is_provisional(self) -> bool {
        self.0 < 200
    }

    /// 2xx.
    pub const fn is_success(self) -> bool {
        self.0 >= 200 && self.0 < 300
    }

    /// 200 to 699.
    pub const fn is_final(self) -> bool {
        self.0 >= 200
    }

    /// The RFC 3261 §21 reason phrase, or a class-generic one.
    pub fn canonical_reason(self) -> &'static str {
        match self.0 {
            100 => "Trying",
            180 => "Ringing",
            181 => "Call Is Being Forwarded",
            182 => "Queued",
            183 => "Session Progress",
            200 => "OK",
            202 => "Accepted",
            300 => "Multiple Choices",
            301 => "Moved Permanently",
            302 => "Moved Temporarily",
            305 => "Use Proxy",
            380 => "Alternative Service",
            400 => "Bad Request",
            401 => "Unauthorized",
            402 => "Payment Required",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            406 => "Not Acceptable",
            407 => "Proxy Authentication Required",
            408 => "Request Timeout",
            410 => "Gone",
            413 => "Request Entity Too Large",
            414 => "Request-URI Too Long",
            415 => "Unsupported Media Type",
            416 => "Unsupported URI Scheme",
            420 => "Bad Extension",
            421 => "Extension Required",
            422 => "Session Interval Too Small",
            423 => "Interval Too Brief",
            480 => "Temporarily Unavailable",
            481 => "Call/Transaction Does Not Exist",
            482 => "Loop Detected",
            483 => "Too Many Hops",
            484 => "Address Incomplete",
            485 => "Ambiguous",
            486 => "Busy Here",
            487 => "Request Terminated",
            488 => "Not Acceptable Here",
            491 => "Request Pending",
            493 => "Undecipherable",
            500 => "Server Internal Error",
            501 => "Not Implemented",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Server Time-out",
            505 => "Version Not Supported",
            513 => "Message Too Large",
            600 => "Busy Everywhere",
            603 => "Decline",
            604 => "Does Not Exist Anywhere",
            606 => "Not Acceptable",
            c if c < 200 => "Provisional",
            c if c < 300 => "Success",
            c if c < 400 => "Redirection",
            c if c < 500 => "Client Error",
            c if c < 600 => "Server Error",
            _ => "Global Failure",
        }
    }
}

impl std::fmt::Display for StatusCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: Headers,
    pub body: Bytes,
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub version: Version,
    pub status: StatusCode,
    /// Reason phrase as received (may be empty, may be UTF-8).
    pub reason: Bytes,
    pub headers: Headers,
    pub body: Bytes,
}

/// A SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

impl Message {
    pub fn headers(&self) -> &Headers {
        match self {
            Self::Request(r) => &r.headers,
            Self::Response(r) => &r.headers,
        }
    }

    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            Self::Request(r) => &mut r.headers,
            Self::Response(r) => &mut r.headers,
        }
    }

    pub fn body(&self) -> &Bytes {
        match self {
            Self::Request(r) => &r.body,
            Self::Response(r) => &r.body,
        }
    }

    pub fn version(&self) -> Version {
        match self {
            Self::Request(r) => r.version,
            Self::Response(r) => r.version,
        }
    }

    pub fn as_request(&self) -> Option<&Request> {
        match self {
            Self::Request(r) => Some(r),
            Self::Response(_) => None,
        }
    }

    pub fn as_response(&self) -> Option<&Response> {
        match self {
            Self::Response(r) => Some(r),
            Self::Request(_) => None,
        }
    }

    pub fn is_request(&self) -> bool {
        matches!(self, Self::Request(_))
    }
}

impl From<Request> for Message {
    fn from(r: Request) -> Self {
        Self::Request(r)
    }
}

impl From<Response> for Message {
    fn from(r: Response) -> Self {
        Self::Response(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(Version::parse(b"SIP/2.0"), Some(Version::SIP_2_0));
        assert_eq!(Version::parse(b"sip/02.00"), Some(Version::SIP_2_0));
        assert_eq!(
            Version::parse(b"SIP/7.0"),
            Some(Version { major: 7, minor: 0 })
        );
        for bad in [
            &b"SIP/2"[..],
            b"SIP/2.",
            b"SIP/.0",
            b"HTTP/1.1",
            b"SIP/2.0 ",
            b"SIP/99999.0",
            b"SIP",
        ] {
            assert_eq!(
                Version::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(Version::SIP_2_0.to_string(), "SIP/2.0");
    }

    #[test]
    fn status_codes() {
        assert_eq!(StatusCode::new(99), None);
        assert_eq!(StatusCode::new(700), None);
        let s = StatusCode::new(183).unwrap();
        assert!(s.is_provisional() && !s.is_final());
        assert!(StatusCode::OK.is_success());
        assert_eq!(
            StatusCode::BAD_EXTENSION.canonical_reason(),
            "Bad Extension"
        );
        assert_eq!(
            StatusCode::new(499).unwrap().canonical_reason(),
            "Client Error"
        );
    }
}
