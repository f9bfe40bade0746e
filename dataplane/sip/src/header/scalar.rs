//! Single-valued scalar headers: CSeq, Call-ID, Max-Forwards, the
//! delta-seconds family (Expires, Min-Expires, Min-SE), Content-Length and
//! Session-Expires (RFC 4028).
//!
//! Every number is parsed with overflow checks and range-checked against
//! its field: CSeq and delta-seconds at most 2^32-1, Max-Forwards at most
//! 255 (RFC 4475 `scalar02` / `scalarlg` overflow all of them).

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ValueError;
use crate::limits::Limits;
use crate::method::Method;
use crate::params::{ParamKind, Params};
use crate::syntax::{Cursor, is_word_char, parse_bounded, parse_u32, trim_ws};

/// `CSeq: <seq> <method>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    /// Parses `1*DIGIT LWS Method`.
    pub fn parse(owner: &Bytes, s: &[u8]) -> Result<Self, ValueError> {
        let mut c = Cursor::new(trim_ws(s));
        let digits = c.take_while(|b| b.is_ascii_digit());
        if !c.skip_ws() {
            return Err(ValueError::Malformed);
        }
        let seq = parse_u32(digits)?;
        let method = Method::from_token(owner, c.rest())?;
        Ok(Self { seq, method })
    }

    /// Writes `seq SP method`.
    pub fn render(&self, out: &mut BytesMut) {
        out.put_slice(self.seq.to_string().as_bytes());
        out.put_u8(b' ');
        out.put_slice(self.method.as_bytes());
    }
}

/// Validates a Call-ID (`word ["@" word]`) no longer than the identifier
/// bound, and returns it as a slice of `owner`.
pub fn parse_call_id(owner: &Bytes, s: &[u8], limits: &Limits) -> Result<Bytes, ValueError> {
    let s = trim_ws(s);
    if s.len() > limits.max_ident_len {
        return Err(ValueError::TooLong);
    }
    let mut parts = s.splitn(2, |&b| b == b'@');
    let valid = parts.all(|w| !w.is_empty() && w.iter().all(|&b| is_word_char(b)));
    if valid && !s.is_empty() {
        Ok(owner.slice_ref(s))
    } else {
        Err(ValueError::Malformed)
    }
}

/// `Max-Forwards: 1*DIGIT`, at most 255.
pub fn parse_max_forwards(s: &[u8]) -> Result<u8, ValueError> {
    parse_bounded(trim_ws(s), 255).and_then(|v| u8::try_from(v).map_err(|_| ValueError::OutOfRange))
}

/// `delta-seconds` (Expires, Min-Expires, Min-SE), at most 2^32-1.
pub fn parse_delta_seconds(s: &[u8]) -> Result<u32, ValueError> {
    parse_u32(trim_ws(s))
}

/// Who refreshes a session timer (RFC 4028).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    Uac,
    Uas,
}

/// `Session-Expires: delta-seconds [;refresher=uac|uas] *(;generic-param)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionExpires {
    pub interval: u32,
    pub refresher: Option<Refresher>,
    pub params: Params,
}

impl SessionExpires {
    /// Parses a Session-Expires value.
    pub fn parse(owner: &Bytes, s: &[u8], limits: &Limits) -> Result<Self, ValueError> {
        let s = trim_ws(s);
        let end = s
            .iter()
            .position(|&b| b == b';' || crate::syntax::is_ws(b))
            .unwrap_or(s.len());
        let (digits, rest) = s.split_at_checked(end).ok_or(ValueError::Malformed)?;
        let interval = parse_u32(digits)?;
        let params = Params::parse(owner.slice_ref(rest), ParamKind::Header, limits)?;
        let refresher = match params.get("refresher") {
            None => None,
            Some(p) => match p.value {
                Some(v) if v.eq_ignore_ascii_case(b"uac") => Some(Refresher::Uac),
                Some(v) if v.eq_ignore_ascii_case(b"uas") => Some(Refresher::Uas),
                _ => return Err(ValueError::Malformed),
            },
        };
        Ok(Self {
            interval,
            refresher,
            params,
        })
    }
}

/// `Content-Length: 1*DIGIT`; the framer applies the message-size bound.
pub(crate) fn parse_content_length(s: &[u8]) -> Result<u32, ValueError> {
    parse_u32(trim_ws(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cseq(s: &'static str) -> Result<CSeq, ValueError> {
        let b = Bytes::from(s);
        CSeq::parse(&b, &b)
    }

    #[test]
    fn cseq_bounds_and_methods() {
        assert_eq!(
            cseq("0009  INVITE"),
            Ok(CSeq {
                seq: 9,
                method: Method::Invite
            })
        );
        assert_eq!(cseq("4294967295 BYE").map(|c| c.seq), Ok(u32::MAX));
        assert_eq!(
            cseq("36893488147419103232 REGISTER"),
            Err(ValueError::OutOfRange)
        );
        assert_eq!(cseq("1"), Err(ValueError::Malformed));
        assert_eq!(cseq("INVITE"), Err(ValueError::Malformed));
        assert_eq!(cseq("-1 INVITE"), Err(ValueError::Malformed));
        assert_eq!(cseq("1 INVITE extra"), Err(ValueError::Malformed));
        let ext = cseq("29344 RE%47IST%45R").unwrap();
        assert_eq!(ext.method.as_bytes(), b"RE%47IST%45R");
        let mut out = BytesMut::new();
        ext.render(&mut out);
        assert_eq!(&out[..], b"29344 RE%47IST%45R");
    }

    #[test]
    fn call_ids() {
        let l = Limits::default();
        let b = Bytes::from("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{");
        assert!(parse_call_id(&b, &b, &l).is_ok());
        for bad in ["", "a@b@c", "@b", "a@", "has space", "semi;colon"] {
            let b = Bytes::from(bad);
            assert_eq!(
                parse_call_id(&b, &b, &l),
                Err(ValueError::Malformed),
                "{bad}"
            );
        }
        let b = Bytes::from("x".repeat(257));
        assert_eq!(parse_call_id(&b, &b, &l), Err(ValueError::TooLong));
    }

    #[test]
    fn small_scalars() {
        assert_eq!(parse_max_forwards(b"0068"), Ok(68));
        assert_eq!(parse_max_forwards(b"255"), Ok(255));
        assert_eq!(parse_max_forwards(b"300"), Err(ValueError::OutOfRange));
        assert_eq!(
            parse_delta_seconds(b"10000000000000000000000000000"),
            Err(ValueError::OutOfRange)
        );
        assert_eq!(parse_content_length(b"-999"), Err(ValueError::Malformed));
        assert_eq!(parse_content_length(b" 150 "), Ok(150));
    }

    #[test]
    fn session_expires() {
        let l = Limits::default();
        let b = Bytes::from("1800;refresher=uas;x=1");
        let se = SessionExpires::parse(&b, &b, &l).unwrap();
        assert_eq!((se.interval, se.refresher), (1800, Some(Refresher::Uas)));
        assert!(se.params.contains("x"));
        let b = Bytes::from("90");
        assert_eq!(SessionExpires::parse(&b, &b, &l).unwrap().refresher, None);
        for bad in ["", "abc", "90;refresher=both", "90;refresher", "90 junk"] {
            let b = Bytes::from(bad);
            assert!(SessionExpires::parse(&b, &b, &l).is_err(), "{bad}");
        }
    }
}
