//! Media types: Content-Type (`type/subtype;param=value`) and the ranges of
//! Accept (`*/*`, `type/*`, with accept-params such as `q`).

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ValueError;
use crate::limits::Limits;
use crate::params::{ParamKind, Params};
use crate::syntax::Cursor;

/// A media type or, in Accept, a media range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    /// `application`, or `*` in a range.
    pub ty: Bytes,
    /// `sdp`, or `*` in a range.
    pub subtype: Bytes,
    pub params: Params,
}

impl MediaType {
    /// Parses `type SLASH subtype *(SEMI param)`; `*` is accepted only where
    /// `range` is set (Accept), and `*/subtype` never.
    pub fn parse(
        owner: &Bytes,
        s: &[u8],
        range: bool,
        limits: &Limits,
    ) -> Result<Self, ValueError> {
        let mut c = Cursor::new(s);
        c.skip_ws();
        let ty = c.token()?;
        if !c.eat_separator(b'/') {
            return Err(ValueError::Malformed);
        }
        let subtype = c.token()?;
        let (wild_ty, wild_sub) = (ty == b"*", subtype == b"*");
        // Only Accept has ranges, and a range is `*/*` or `type/*`.
        let shape_ok = match (wild_ty, wild_sub) {
            (false, false) => true,
            (false, true) | (true, true) => range,
            (true, false) => false,
        };
        if !shape_ok {
            return Err(ValueError::Malformed);
        }
        let params = Params::parse(owner.slice_ref(c.rest()), ParamKind::Header, limits)?;
        // m-parameter = m-attribute EQUAL m-value: Content-Type parameters
        // always carry a value (accept-params may not).
        if !range && params.iter().any(|p| p.value.is_none()) {
            return Err(ValueError::Malformed);
        }
        Ok(Self {
            ty: owner.slice_ref(ty),
            subtype: owner.slice_ref(subtype),
            params,
        })
    }

    /// Parses a Content-Type from its own bytes with the default limits.
    pub fn from_bytes(b: impl Into<Bytes>) -> Result<Self, ValueError> {
        let b = b.into();
        Self::parse(&b, &b, false, &Limits::default())
    }

    /// `true` if this type (or range) covers `ty/subtype`, ignoring case.
    pub fn matches(&self, ty: &[u8], subtype: &[u8]) -> bool {
        let ty_ok = &self.ty[..] == b"*" || self.ty.eq_ignore_ascii_case(ty);
        let sub_ok = &self.subtype[..] == b"*" || self.subtype.eq_ignore_ascii_case(subtype);
        ty_ok && sub_ok
    }

    /// `true` if this type equals `essence` (`"application/sdp"`), ignoring
    /// case and parameters.
    pub fn is(&self, essence: &str) -> bool {
        essence.split_once('/').is_some_and(|(t, s)| {
            self.ty.eq_ignore_ascii_case(t.as_bytes())
                && self.subtype.eq_ignore_ascii_case(s.as_bytes())
        })
    }

    /// Writes `type/subtype` and the parameters as received.
    pub fn render(&self, out: &mut BytesMut) {
        out.put_slice(&self.ty);
        out.put_u8(b'/');
        out.put_slice(&self.subtype);
        out.put_slice(self.params.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &'static str, range: bool) -> Result<MediaType, ValueError> {
        let b = Bytes::from(s);
        MediaType::parse(&b, &b, range, &Limits::default())
    }

    #[test]
    fn content_types() {
        let m = parse("multipart/mixed;boundary=7a9cbec02ceef655", false).unwrap();
        assert!(m.is("Multipart/Mixed"));
        assert_eq!(m.params.value("boundary"), Some(&b"7a9cbec02ceef655"[..]));
        assert!(
            parse("application / sdp", false)
                .unwrap()
                .is("application/sdp")
        );
        for bad in [
            "application",
            "*/*",
            "text/*",
            "AAAA",
            "a/b;c",
            "a/b c",
            "/sdp",
            "",
        ] {
            assert!(parse(bad, false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn accept_ranges() {
        assert!(parse("*/*", true).unwrap().matches(b"application", b"sdp"));
        assert!(
            parse("application/*;q=0.5", true)
                .unwrap()
                .matches(b"APPLICATION", b"pidf+xml")
        );
        assert!(
            !parse("text/nobodyKnowsThis", true)
                .unwrap()
                .matches(b"application", b"sdp")
        );
        for bad in ["*/sdp", "Allow: SUBSCRIBE", "AAAA"] {
            assert!(parse(bad, true).is_err(), "{bad:?}");
        }
        let mut out = BytesMut::new();
        parse("application/sdp;level=1", true)
            .unwrap()
            .render(&mut out);
        assert_eq!(&out[..], b"application/sdp;level=1");
    }
}
