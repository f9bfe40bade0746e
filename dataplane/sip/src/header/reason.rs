//! The Reason header value (RFC 3326): `protocol *(;cause=N / ;text="..." /
//! ;generic-param)`, as sent in BYE and CANCEL to explain a hang-up.

use std::borrow::Cow;

use bytes::Bytes;

use crate::error::ValueError;
use crate::limits::Limits;
use crate::params::{ParamKind, Params};
use crate::syntax::{Cursor, parse_bounded, unquote};

/// One Reason value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// `SIP`, `Q.850` or another token.
    pub protocol: Bytes,
    /// The `cause` parameter (a SIP status or a Q.850 cause).
    pub cause: Option<u16>,
    pub params: Params,
}

impl Reason {
    /// Parses one Reason value; `cause` must be digits (at most 65535) and
    /// `text` a quoted string.
    pub fn parse(owner: &Bytes, s: &[u8], limits: &Limits) -> Result<Self, ValueError> {
        let mut c = Cursor::new(s);
        c.skip_ws();
        let protocol = c.token()?;
        let params = Params::parse(owner.slice_ref(c.rest()), ParamKind::Header, limits)?;
        let cause = match params.get("cause") {
            None => None,
            Some(p) => {
                let v = p.value.ok_or(ValueError::Malformed)?;
                Some(
                    u16::try_from(parse_bounded(v, u64::from(u16::MAX))?)
                        .map_err(|_| ValueError::OutOfRange)?,
                )
            }
        };
        if params
            .get("text")
            .is_some_and(|p| p.value.is_none_or(|v| v.first() != Some(&b'"')))
        {
            return Err(ValueError::Malformed);
        }
        Ok(Self {
            protocol: owner.slice_ref(protocol),
            cause,
            params,
        })
    }

    /// The `text` parameter, unquoted.
    pub fn text(&self) -> Option<Cow<'_, [u8]>> {
        self.params.value("text").map(unquote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(s: &'static str) -> Result<Reason, ValueError> {
        let b = Bytes::from(s);
        Reason::parse(&b, &b, &Limits::default())
    }

    #[test]
    fn parses_q850_and_sip_reasons() {
        let r = reason("Q.850 ;cause=16 ;text=\"Terminated\"").unwrap();
        assert_eq!(&r.protocol[..], b"Q.850");
        assert_eq!(r.cause, Some(16));
        assert_eq!(r.text().unwrap(), &b"Terminated"[..]);
        assert_eq!(
            reason("SIP;cause=200;text=\"Call completed elsewhere\"")
                .unwrap()
                .cause,
            Some(200)
        );
        assert_eq!(reason("SIP").unwrap().cause, None);
    }

    #[test]
    fn rejects_bad_reasons() {
        assert_eq!(reason("SIP;cause=99999999"), Err(ValueError::OutOfRange));
        for bad in [
            "",
            ";cause=1",
            "SIP;cause",
            "SIP;cause=x",
            "SIP;text=bare",
            "SIP junk",
        ] {
            assert!(reason(bad).is_err(), "{bad:?}");
        }
    }
}
