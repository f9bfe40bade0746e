//! Address values: From, To, Contact, Route, Record-Route and friends
//! (`name-addr` / `addr-spec` followed by header parameters, RFC 3261 §20.10,
//! §20.20, §20.39, §25.1).
//!
//! The rules that torture tests probe: a display name is a quoted string or
//! a run of tokens (a comma is neither: RFC 4475 `baddn`); nothing but the
//! URI sits between `<` and `>` (`badaspec`); an addr-spec without brackets
//! ends at the first `;` or white space, so its URI may not contain `?` or
//! `,` (`regbadct`), and the parameters after it belong to the header.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ValueError;
use crate::limits::Limits;
use crate::params::{ParamKind, Params};
use crate::syntax::{Cursor, is_token_char, is_ws, parse_u32, unquote};
use crate::uri::Uri;

/// A display name as written: a quoted string (quotes kept) or tokens
/// separated by white space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(Bytes);

impl DisplayName {
    /// The raw form, quotes included when quoted.
    pub fn raw(&self) -> &Bytes {
        &self.0
    }

    /// `true` if written as a quoted string.
    pub fn is_quoted(&self) -> bool {
        self.0.first() == Some(&b'"')
    }

    /// The text with quotes removed and quoted-pairs resolved.
    pub fn text(&self) -> Cow<'_, [u8]> {
        if self.is_quoted() {
            unquote(&self.0)
        } else {
            Cow::Borrowed(&self.0)
        }
    }
}

/// `[display-name] <URI>` or a bare URI, with header parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display_name: Option<DisplayName>,
    pub uri: Uri,
    /// Header parameters after the address (`tag`, `expires`, `q`, ...).
    pub params: Params,
}

impl NameAddr {
    /// Parses one address value.
    pub fn parse(owner: &Bytes, s: &[u8], limits: &Limits) -> Result<Self, ValueError> {
        let mut c = Cursor::new(s);
        c.skip_ws();
        let mut display_name = None;
        let uri_slice;
        if c.peek() == Some(b'"') {
            display_name = Some(DisplayName(owner.slice_ref(c.quoted()?)));
            c.skip_ws();
            uri_slice = bracketed(&mut c)?;
        } else {
            // Tokens and white space up to '<' make a display name; anything
            // else means this is an addr-spec.
            let probe_start = c.pos();
            let mut probe = c.clone();
            probe.take_while(|b| is_token_char(b) || is_ws(b));
            if probe.peek() == Some(b'<') {
                let words = s.get(probe_start..probe.pos()).unwrap_or_default();
                let words = crate::syntax::trim_ws(words);
                if !words.is_empty() {
                    display_name = Some(DisplayName(owner.slice_ref(words)));
                }
                c = probe;
                uri_slice = bracketed(&mut c)?;
            } else {
                uri_slice = c.take_while(|b| b != b';' && !is_ws(b));
                if uri_slice
                    .iter()
                    .any(|&b| matches!(b, b'?' | b',' | b'<' | b'>' | b'"'))
                {
                    return Err(ValueError::Malformed);
                }
            }
        }
        let uri = Uri::parse_in(owner, uri_slice, limits)?;
        let params = Params::parse(owner.slice_ref(c.rest()), ParamKind::Header, limits)?;
        Ok(Self {
            display_name,
            uri,
            params,
        })
    }

    /// Parses an address from its own bytes with the default limits.
    pub fn from_bytes(b: impl Into<Bytes>) -> Result<Self, ValueError> {
        let b = b.into();
        Self::parse(&b, &b, &Limits::default())
    }

    /// `<uri>` with no display name or parameters.
    pub fn new(uri: Uri) -> Self {
        Self {
            display_name: None,
            uri,
            params: Params::empty(),
        }
    }

    /// The `tag` parameter (From/To).
    pub fn tag(&self) -> Option<&[u8]> {
        self.params.value("tag")
    }

    /// A copy with `;tag=<tag>` appended (replacing none: callers only add
    /// a tag where there is none). Fails if `tag` is not a token.
    pub fn with_tag(&self, tag: &[u8]) -> Result<Self, ValueError> {
        self.with_param(b"tag", Some(tag))
    }

    /// A copy with one more header parameter.
    pub fn with_param(&self, name: &[u8], value: Option<&[u8]>) -> Result<Self, ValueError> {
        let mut raw = BytesMut::from(&self.params.as_bytes()[..]);
        raw.put_u8(b';');
        raw.put_slice(name);
        if let Some(v) = value {
            raw.put_u8(b'=');
            raw.put_slice(v);
        }
        let params = Params::parse(raw.freeze(), ParamKind::Header, &Limits::default())?;
        Ok(Self {
            params,
            ..self.clone()
        })
    }

    /// Writes the value in name-addr form (always bracketed, which is
    /// valid for every address header and never ambiguous).
    pub fn render(&self, out: &mut BytesMut) {
        if let Some(d) = &self.display_name {
            out.put_slice(d.raw());
            out.put_u8(b' ');
        }
        out.put_u8(b'<');
        self.uri.render(out);
        out.put_u8(b'>');
        out.put_slice(self.params.as_bytes());
    }
}

/// Takes `<URI>` and returns the URI slice; nothing but the URI may sit
/// between the brackets.
fn bracketed<'a>(c: &mut Cursor<'a>) -> Result<&'a [u8], ValueError> {
    if !c.eat(b'<') {
        return Err(ValueError::Malformed);
    }
    let inner = c.take_while(|b| b != b'>');
    if !c.eat(b'>') || inner.iter().any(|&b| is_ws(b) || b == b'<') {
        return Err(ValueError::Malformed);
    }
    Ok(inner)
}

/// One Contact value: `*` or an address.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "values live briefly in a bounded Vec; boxing would allocate per contact to shrink the rare `*`"
)]
pub enum Contact {
    /// `Contact: *` (REGISTER only, removes all bindings).
    Star,
    Addr(NameAddr),
}

impl Contact {
    /// Parses one Contact value, checking `expires` (delta-seconds, at most
    /// 2^32-1) and `q` (qvalue) when present.
    pub fn parse(owner: &Bytes, s: &[u8], limits: &Limits) -> Result<Self, ValueError> {
        if crate::syntax::trim_ws(s) == b"*" {
            return Ok(Self::Star);
        }
        let addr = NameAddr::parse(owner, s, limits)?;
        if let Some(p) = addr.params.get("expires") {
            parse_u32(p.value.ok_or(ValueError::Malformed)?)?;
        }
        if let Some(p) = addr.params.get("q") {
            parse_qvalue(p.value.ok_or(ValueError::Malformed)?)?;
        }
        Ok(Self::Addr(addr))
    }

    /// The address, unless this is `*`.
    pub fn addr(&self) -> Option<&NameAddr> {
        match self {
            Self::Star => None,
            Self::Addr(a) => Some(a),
        }
    }

    /// The `expires` parameter, validated at parse time.
    pub fn expires(&self) -> Option<u32> {
        self.addr()?
            .params
            .value("expires")
            .and_then(|v| parse_u32(v).ok())
    }

    /// The `q` parameter in thousandths (`0.33` is 330).
    pub fn q(&self) -> Option<u16> {
        self.addr()?
            .params
            .value("q")
            .and_then(|v| parse_qvalue(v).ok())
    }
}

/// qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ), in thousandths.
pub(crate) fn parse_qvalue(v: &[u8]) -> Result<u16, ValueError> {
    let (int, frac) = match v.iter().position(|&b| b == b'.') {
        Some(i) => (
            v.get(..i).unwrap_or_default(),
            v.get(i + 1..).unwrap_or_default(),
        ),
        None => (v, &b""[..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return Err(ValueError::Malformed);
    }
    let mut thousandths = 0u16;
    for (i, &d) in frac.iter().enumerate() {
        thousandths += u16::from(d - b'0') * [100, 10, 1].get(i).copied().unwrap_or(0);
    }
    match int {
        b"0" => Ok(thousandths),
        b"1" if thousandths == 0 => Ok(1000),
        _ => Err(ValueError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &'static str) -> Result<NameAddr, ValueError> {
        NameAddr::from_bytes(s)
    }

    #[test]
    fn display_names() {
        let a = addr(r#""J Rosenberg \\\""       <sip:jdrosen@example.com>   ;   tag = 98asjd8"#)
            .unwrap();
        assert_eq!(
            a.display_name.as_ref().unwrap().text(),
            &br#"J Rosenberg \""#[..]
        );
        assert_eq!(a.tag(), Some(&b"98asjd8"[..]));
        let a = addr("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(a.display_name.unwrap().text(), &b"caller"[..]);
        let a = addr("token1~` token2'+_ token3*%!.- <sip:mundane@example.com>").unwrap();
        assert_eq!(
            a.display_name.unwrap().raw(),
            "token1~` token2'+_ token3*%!.-"
        );
        let a = addr(r#""%Z%45" <sip:resource@example.com>"#).unwrap();
        assert_eq!(a.display_name.unwrap().text(), &b"%Z%45"[..]);
        let a = addr("<sip:x@y>").unwrap();
        assert!(a.display_name.is_none());
    }

    #[test]
    fn addr_spec_params_belong_to_the_header() {
        let a = addr("sip:+19725552222@gw1.example.net;unknownparam").unwrap();
        assert!(a.params.contains("unknownparam"));
        assert!(a.uri.as_sip().unwrap().params.is_empty());
        let a = addr("<sip:+19725552222@gw1.example.net;unknownparam>").unwrap();
        assert!(a.params.is_empty());
        assert!(a.uri.as_sip().unwrap().params.contains("unknownparam"));
        let a = addr("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(a.tag(), Some(&b"1918181833n"[..]));
        assert!(matches!(
            addr("isbn:2983792873").unwrap().uri,
            Uri::Other(_)
        ));
    }

    #[test]
    fn torture_rejections() {
        for bad in [
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            "\"Mr. J. User <sip:j.user@example.com>",
            "\"Watson, Thomas\" < sip:t.watson@example.org >",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "\"Joe\" <sip:joe@example.org>;;;;",
            "<sip:x@y",
            "\"a\" sip:x@y",
            "",
            "<>",
            "<sip:x@y>;tag=",
        ] {
            assert!(addr(bad).is_err(), "{bad:?}");
        }
        assert!(addr("<sip:user@example.com?Route=%3Csip:sip.example.com%3E>").is_ok());
    }

    #[test]
    fn contacts_star_expires_and_q() {
        let b = Bytes::from("*");
        assert_eq!(
            Contact::parse(&b, &b, &Limits::default()),
            Ok(Contact::Star)
        );
        let b = Bytes::from(
            r#""Quoted string \"\"" <sip:jdrosen@example.com> ; newparam = newvalue ;  secondparam ; q = 0.33"#,
        );
        let c = Contact::parse(&b, &b, &Limits::default()).unwrap();
        assert_eq!(c.q(), Some(330));
        assert_eq!(
            c.addr().unwrap().display_name.as_ref().unwrap().text(),
            &br#"Quoted string """#[..]
        );
        let b = Bytes::from("<sip:user@host129.example.com>  ;expires=280297596632815");
        assert_eq!(
            Contact::parse(&b, &b, &Limits::default()),
            Err(ValueError::OutOfRange)
        );
        let b = Bytes::from("<sip:a@b>;expires=3600;q=1.0");
        let c = Contact::parse(&b, &b, &Limits::default()).unwrap();
        assert_eq!((c.expires(), c.q()), (Some(3600), Some(1000)));
        assert_eq!(parse_qvalue(b"1.5"), Err(ValueError::Malformed));
        assert_eq!(parse_qvalue(b"0.1234"), Err(ValueError::Malformed));
    }

    #[test]
    fn renders_and_adds_tags() {
        let a = addr("Bob <sip:bob@example.com>")
            .unwrap()
            .with_tag(b"a1b2")
            .unwrap();
        let mut out = BytesMut::new();
        a.render(&mut out);
        assert_eq!(&out[..], b"Bob <sip:bob@example.com>;tag=a1b2");
        assert!(addr("<sip:x@y>").unwrap().with_tag(b"bad tag").is_err());
    }
}
