//! Parameter lists (`;name=value`) of header values and URIs, and the
//! comma splitter for multi-value headers.
//!
//! A [`Params`] keeps the raw wire text of its list and is validated once
//! when built; lookups re-scan it. That keeps typed header views free of
//! per-parameter allocation, and printing a parsed value reproduces it
//! byte for byte.

use std::borrow::Cow;
use std::net::Ipv6Addr;

use bytes::Bytes;

use crate::error::ValueError;
use crate::limits::Limits;
use crate::syntax::{
    Cursor, escaped_eq_ignore_case, is_escaped_text, is_param_char, is_token_char, pct_decode,
    unquote,
};

/// Which grammar a parameter list follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParamKind {
    /// `generic-param` of header values: LWS allowed around `;` and `=`,
    /// values are token, host or quoted-string; names compare ignoring case.
    #[default]
    Header,
    /// `uri-parameter`: no white space, `%HH` escapes allowed, names compare
    /// after unescaping (RFC 3261 §19.1.4).
    Uri,
}

/// One parameter, borrowed from its list. Values are raw: a quoted header
/// parameter keeps its quotes, a URI parameter keeps its escapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    pub name: &'a [u8],
    pub value: Option<&'a [u8]>,
}

impl Param<'_> {
    /// The value with quotes removed and `quoted-pair`s or `%HH` resolved.
    pub fn value_text(&self, kind: ParamKind) -> Option<Cow<'_, [u8]>> {
        let v = self.value?;
        Some(match kind {
            ParamKind::Header if v.first() == Some(&b'"') => unquote(v),
            ParamKind::Header => Cow::Borrowed(v),
            ParamKind::Uri => pct_decode(v),
        })
    }
}

/// A validated parameter list, e.g. `;tag=1918181833n;lr`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Params {
    raw: Bytes,
    kind: ParamKind,
}

fn ipv6_reference(v: &[u8]) -> bool {
    v.strip_prefix(b"[")
        .and_then(|s| s.strip_suffix(b"]"))
        .and_then(|s| std::str::from_utf8(s).ok())
        .is_some_and(|s| s.parse::<Ipv6Addr>().is_ok())
}

/// Reads the parameter starting at `pos` (at or before its `;`). Returns
/// `None` at the end of the list.
fn next_param(
    raw: &[u8],
    pos: usize,
    kind: ParamKind,
) -> Result<Option<(Param<'_>, usize)>, ValueError> {
    let mut c = Cursor::new(raw);
    c.take(pos).ok_or(ValueError::Malformed)?;
    match kind {
        ParamKind::Header => {
            c.skip_ws();
            if c.at_end() {
                return Ok(None);
            }
            if !c.eat(b';') {
                return Err(ValueError::Malformed);
            }
            c.skip_ws();
            let name = c.token()?;
            let value = if c.eat_separator(b'=') {
                Some(match c.peek() {
                    Some(b'"') => c.quoted()?,
                    Some(b'[') => {
                        let start = c.pos();
                        c.take_while(|b| b != b']');
                        if !c.eat(b']') {
                            return Err(ValueError::Malformed);
                        }
                        let full = raw.get(start..c.pos()).ok_or(ValueError::Malformed)?;
                        if !ipv6_reference(full) {
                            return Err(ValueError::Malformed);
                        }
                        full
                    }
                    // gen-value is token / host / quoted-string; ':' is
                    // admitted too because Via `received` carries bare IPv6
                    // addresses (RFC 5118 §4.5) and it separates nothing here.
                    _ => {
                        let v = c.take_while(|b| is_token_char(b) || b == b':');
                        if v.is_empty() {
                            return Err(ValueError::Malformed);
                        }
                        v
                    }
                })
            } else {
                None
            };
            Ok(Some((Param { name, value }, c.pos())))
        }
        ParamKind::Uri => {
            if c.at_end() {
                return Ok(None);
            }
            if !c.eat(b';') {
                return Err(ValueError::Malformed);
            }
            let uri_char = |b: u8| is_param_char(b) || b == b'%';
            let name = c.take_while(uri_char);
            if name.is_empty() || !is_escaped_text(name, is_param_char) {
                return Err(ValueError::Malformed);
            }
            let value = if c.eat(b'=') {
                let v = c.take_while(uri_char);
                if v.is_empty() || !is_escaped_text(v, is_param_char) {
                    return Err(ValueError::Malformed);
                }
                Some(v)
            } else {
                None
            };
            Ok(Some((Param { name, value }, c.pos())))
        }
    }
}

/// Compares a raw parameter name with a plain one under `kind`'s rules.
fn name_matches(kind: ParamKind, raw: &[u8], plain: &[u8]) -> bool {
    match kind {
        ParamKind::Header => raw.eq_ignore_ascii_case(plain),
        ParamKind::Uri => escaped_eq_ignore_case(raw, plain),
    }
}

impl Params {
    /// An empty list.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Validates `raw` (which starts at the first `;`, possibly after white
    /// space for header parameters) against the grammar of `kind`, the
    /// parameter bound and the no-duplicates rule.
    pub fn parse(raw: Bytes, kind: ParamKind, limits: &Limits) -> Result<Self, ValueError> {
        let mut pos = 0;
        let mut count = 0usize;
        while let Some((param, next)) = next_param(&raw, pos, kind)? {
            count += 1;
            if count > limits.max_params {
                return Err(ValueError::TooMany);
            }
            // A parameter must not appear twice (RFC 3261 §19.1.1); the list
            // is bounded by max_params, so the quadratic scan is bounded too.
            let plain = match kind {
                ParamKind::Header => Cow::Borrowed(param.name),
                ParamKind::Uri => pct_decode(param.name),
            };
            let earlier = ParamIter {
                raw: raw.get(..pos).unwrap_or_default(),
                pos: 0,
                kind,
            };
            if earlier.clone().any(|p| name_matches(kind, p.name, &plain)) {
                return Err(ValueError::Repeated);
            }
            pos = next;
        }
        Ok(Self { raw, kind })
    }

    /// The grammar this list follows.
    pub fn kind(&self) -> ParamKind {
        self.kind
    }

    /// The raw wire text, e.g. `;tag=abc;lr`.
    pub fn as_bytes(&self) -> &Bytes {
        &self.raw
    }

    /// Parameters in order.
    pub fn iter(&self) -> ParamIter<'_> {
        ParamIter {
            raw: &self.raw,
            pos: 0,
            kind: self.kind,
        }
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// `true` when there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// The parameter called `name` (ASCII case-insensitive; URI parameter
    /// names are compared unescaped).
    pub fn get(&self, name: impl AsRef<[u8]>) -> Option<Param<'_>> {
        let name = name.as_ref();
        self.iter().find(|p| name_matches(self.kind, p.name, name))
    }

    /// `true` if a parameter called `name` is present, with or without value.
    pub fn contains(&self, name: impl AsRef<[u8]>) -> bool {
        self.get(name).is_some()
    }

    /// The raw value of `name`, if present with a value.
    pub fn value(&self, name: impl AsRef<[u8]>) -> Option<&[u8]> {
        self.get(name).and_then(|p| p.value)
    }

    /// The value of `name` as a zero-copy slice of the list.
    pub fn value_bytes(&self, name: impl AsRef<[u8]>) -> Option<Bytes> {
        self.value(name).map(|v| self.raw.slice_ref(v))
    }
}

/// Iterator over a validated [`Params`].
#[derive(Debug, Clone)]
pub struct ParamIter<'a> {
    raw: &'a [u8],
    pos: usize,
    kind: ParamKind,
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = Param<'a>;

    fn next(&mut self) -> Option<Param<'a>> {
        // The list was validated when built, so an error cannot occur here;
        // ending the iteration is the safe answer if it ever did.
        let (param, next) = next_param(self.raw, self.pos, self.kind).ok().flatten()?;
        self.pos = next;
        Some(param)
    }
}

/// Splits a header value at top-level commas, respecting quoted strings
/// (with their escapes) and `<...>`, and trims each element. An empty value
/// yields one empty element; callers reject empty elements where the
/// grammar has no room for them (RFC 4475 `badinv01`).
pub(crate) fn split_list(s: &[u8]) -> SplitList<'_> {
    SplitList {
        s,
        pos: 0,
        done: false,
    }
}

/// Offset of the first comma outside quoted strings and `<...>`, or the
/// length when there is none. Unterminated quotes and brackets run to the
/// end, so the element fails its own grammar later.
fn list_item_end(rest: &[u8]) -> usize {
    let tail = |from: usize| rest.get(from..).unwrap_or_default();
    let mut i = 0;
    while let Some(off) = memchr::memchr3(b',', b'"', b'<', tail(i)) {
        let at = i + off;
        match rest.get(at) {
            Some(b',') => return at,
            Some(b'"') => {
                let mut j = at + 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', tail(j)) {
                        None => return rest.len(),
                        Some(o) if rest.get(j + o) == Some(&b'\\') => j += o + 2,
                        Some(o) => {
                            j += o + 1;
                            break;
                        }
                    }
                }
                i = j;
            }
            _ => match memchr::memchr(b'>', tail(at + 1)) {
                None => return rest.len(),
                Some(o) => i = at + o + 2,
            },
        }
    }
    rest.len()
}

#[derive(Debug, Clone)]
pub(crate) struct SplitList<'a> {
    s: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> Iterator for SplitList<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.done {
            return None;
        }
        let rest = self.s.get(self.pos..).unwrap_or_default();
        let end = list_item_end(rest);
        let item = rest.get(..end).unwrap_or_default();
        if end >= rest.len() {
            self.done = true;
        } else {
            self.pos += end + 1;
        }
        Some(crate::syntax::trim_ws(item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(s: &'static str) -> Result<Params, ValueError> {
        Params::parse(Bytes::from(s), ParamKind::Header, &Limits::default())
    }

    fn uri(s: &'static str) -> Result<Params, ValueError> {
        Params::parse(Bytes::from(s), ParamKind::Uri, &Limits::default())
    }

    #[test]
    fn header_params_allow_lws_and_quoted_values() {
        let p = header(" ;   tag    = 1918181833n").unwrap();
        assert_eq!(p.value("TAG"), Some(&b"1918181833n"[..]));
        let p = header("; newparam =  newvalue ;  secondparam ; q = 0.33").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p.value("newparam"), Some(&b"newvalue"[..]));
        assert_eq!(p.get("secondparam").map(|x| x.value), Some(None));
        assert_eq!(p.value("q"), Some(&b"0.33"[..]));
        let p = header(";text=\"a;b, c\";received=[2001:db8::9:255]").unwrap();
        assert_eq!(
            p.get("text")
                .unwrap()
                .value_text(ParamKind::Header)
                .unwrap(),
            &b"a;b, c"[..]
        );
        assert_eq!(p.value("received"), Some(&b"[2001:db8::9:255]"[..]));
        assert_eq!(p.value_bytes("received").unwrap(), "[2001:db8::9:255]");
    }

    #[test]
    fn header_params_reject_empty_duplicate_and_excess() {
        assert_eq!(header(";;").unwrap_err(), ValueError::Malformed);
        assert_eq!(header(";a=").unwrap_err(), ValueError::Malformed);
        assert_eq!(header("a").unwrap_err(), ValueError::Malformed);
        assert_eq!(header(";a=\"open").unwrap_err(), ValueError::Malformed);
        assert_eq!(header(";x=[1:2:3").unwrap_err(), ValueError::Malformed);
        assert_eq!(header(";tag=1;TAG=2").unwrap_err(), ValueError::Repeated);
        let many: String = (0..33).map(|i| format!(";p{i}")).collect();
        assert_eq!(
            Params::parse(Bytes::from(many), ParamKind::Header, &Limits::default()).unwrap_err(),
            ValueError::TooMany
        );
        assert!(header("").unwrap().is_empty());
    }

    #[test]
    fn uri_params_compare_unescaped() {
        let p = uri(";%6C%72;n%61me=v%61lue%25%34%31").unwrap();
        assert!(p.contains("lr"));
        let name = p.get("name").unwrap();
        assert_eq!(name.value_text(ParamKind::Uri).unwrap(), &b"value%41"[..]);
        assert_eq!(uri("; lr").unwrap_err(), ValueError::Malformed);
        assert_eq!(uri(";a=%zz").unwrap_err(), ValueError::Malformed);
        assert_eq!(
            uri(";maddr=[2001:db8::1]").unwrap().value("maddr"),
            Some(&b"[2001:db8::1]"[..])
        );
    }

    #[test]
    fn lists_split_outside_quotes_and_angles() {
        let items: Vec<_> = split_list(br#""a, \"b" <sip:x@y;p=1,2>;q=1 , c,  "#).collect();
        assert_eq!(
            items,
            vec![&br#""a, \"b" <sip:x@y;p=1,2>;q=1"#[..], b"c", b""]
        );
        let items: Vec<_> = split_list(b"SIP/2.0/UDP 192.0.2.15;;,;,,").collect();
        assert_eq!(
            items,
            vec![&b"SIP/2.0/UDP 192.0.2.15;;"[..], b";", b"", b""]
        );
        assert_eq!(split_list(b"").collect::<Vec<_>>(), vec![&b""[..]]);
    }
}
