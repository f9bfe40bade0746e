//! Typed views of the headers a B2BUA acts on, parsed from the current
//! lines under the message's limits. The five that every layer reads
//! (top Via, From, To, Call-ID, CSeq) are parsed once per message and
//! kept until a line changes; the rest are parsed on each call.

use bytes::Bytes;

use super::scalar::parse_content_length;
use super::{
    Auth, CSeq, Contact, Headers, KnownHeader, MediaType, NameAddr, Reason, SessionExpires, Via,
    parse_call_id, parse_delta_seconds, parse_max_forwards,
};
use crate::error::ValueError;
use crate::method::Method;
use crate::params::split_list;
use crate::syntax::is_token;

impl Headers {
    /// Every Via value, top first, bounded by `Limits::max_via`.
    pub fn vias(&self) -> Result<Vec<Via>, ValueError> {
        self.parse_list(KnownHeader::Via, self.limits().max_via, false, |o, s| {
            Via::parse(o, s, self.limits())
        })
    }

    /// The topmost Via value.
    pub fn top_via(&self) -> Result<Via, ValueError> {
        self.parsed()
            .top_via
            .get_or_init(|| self.parse_top_via())
            .clone()
    }

    fn parse_top_via(&self) -> Result<Via, ValueError> {
        let line = self.get(KnownHeader::Via).ok_or(ValueError::Missing)?;
        let first = split_list(line)
            .next()
            .filter(|s| !s.is_empty())
            .ok_or(ValueError::Malformed)?;
        Via::parse(line, first, self.limits())
    }

    /// Number of Via values (not lines), without parsing them.
    pub fn via_count(&self) -> usize {
        self.get_all(KnownHeader::Via)
            .map(|v| split_list(v).count())
            .sum()
    }

    fn single_addr(&self, name: KnownHeader) -> Result<NameAddr, ValueError> {
        let v = self.single(name)?;
        let addr = NameAddr::parse(v, v, self.limits())?;
        if let Some(p) = addr.params.get("tag") {
            match p.value {
                Some(tag) if tag.len() > self.limits().max_ident_len => {
                    return Err(ValueError::TooLong);
                }
                Some(tag) if is_token(tag) => {}
                _ => return Err(ValueError::Malformed),
            }
        }
        Ok(addr)
    }

    /// The From value; its tag, if any, is a token within the identifier
    /// bound.
    pub fn from(&self) -> Result<NameAddr, ValueError> {
        self.parsed()
            .from
            .get_or_init(|| self.single_addr(KnownHeader::From))
            .clone()
    }

    /// The To value (same checks as From).
    pub fn to(&self) -> Result<NameAddr, ValueError> {
        self.parsed()
            .to
            .get_or_init(|| self.single_addr(KnownHeader::To))
            .clone()
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Result<Bytes, ValueError> {
        self.parsed()
            .call_id
            .get_or_init(|| {
                let v = self.single(KnownHeader::CallId)?;
                parse_call_id(v, v, self.limits())
            })
            .clone()
    }

    /// The CSeq.
    pub fn cseq(&self) -> Result<CSeq, ValueError> {
        self.parsed()
            .cseq
            .get_or_init(|| {
                let v = self.single(KnownHeader::CSeq)?;
                CSeq::parse(v, v)
            })
            .clone()
    }

    /// Max-Forwards, if present.
    pub fn max_forwards(&self) -> Result<Option<u8>, ValueError> {
        self.optional(KnownHeader::MaxForwards)?
            .map(|v| parse_max_forwards(v))
            .transpose()
    }

    /// Content-Length as declared, if present. (The parsed body already
    /// has the right length; this is the header as sent.)
    pub fn content_length(&self) -> Result<Option<u32>, ValueError> {
        self.optional(KnownHeader::ContentLength)?
            .map(|v| parse_content_length(v))
            .transpose()
    }

    /// Content-Type, if present.
    pub fn content_type(&self) -> Result<Option<MediaType>, ValueError> {
        self.optional(KnownHeader::ContentType)?
            .map(|v| MediaType::parse(v, v, false, self.limits()))
            .transpose()
    }

    /// Expires, if present.
    pub fn expires(&self) -> Result<Option<u32>, ValueError> {
        self.optional(KnownHeader::Expires)?
            .map(|v| parse_delta_seconds(v))
            .transpose()
    }

    /// Min-Expires, if present.
    pub fn min_expires(&self) -> Result<Option<u32>, ValueError> {
        self.optional(KnownHeader::MinExpires)?
            .map(|v| parse_delta_seconds(v))
            .transpose()
    }

    /// Session-Expires, if present.
    pub fn session_expires(&self) -> Result<Option<SessionExpires>, ValueError> {
        self.optional(KnownHeader::SessionExpires)?
            .map(|v| SessionExpires::parse(v, v, self.limits()))
            .transpose()
    }

    /// Min-SE (delta-seconds; parameters ignored), if present.
    pub fn min_se(&self) -> Result<Option<u32>, ValueError> {
        self.optional(KnownHeader::MinSe)?
            .map(|v| {
                let end = v.iter().position(|&b| b == b';').unwrap_or(v.len());
                parse_delta_seconds(v.get(..end).unwrap_or_default())
            })
            .transpose()
    }

    /// Every Contact value (`*` included).
    pub fn contacts(&self) -> Result<Vec<Contact>, ValueError> {
        self.parse_list(
            KnownHeader::Contact,
            self.limits().max_values,
            false,
            |o, s| Contact::parse(o, s, self.limits()),
        )
    }

    fn addr_list(&self, name: KnownHeader) -> Result<Vec<NameAddr>, ValueError> {
        self.parse_list(name, self.limits().max_values, false, |o, s| {
            NameAddr::parse(o, s, self.limits())
        })
    }

    /// Route values, in order.
    pub fn routes(&self) -> Result<Vec<NameAddr>, ValueError> {
        self.addr_list(KnownHeader::Route)
    }

    /// Record-Route values, in order.
    pub fn record_routes(&self) -> Result<Vec<NameAddr>, ValueError> {
        self.addr_list(KnownHeader::RecordRoute)
    }

    /// Option tags of Require, Proxy-Require, Supported or Unsupported.
    pub fn option_tags(&self, name: KnownHeader) -> Result<Vec<Bytes>, ValueError> {
        let allow_empty = name == KnownHeader::Supported;
        self.parse_list(name, self.limits().max_values, allow_empty, |o, s| {
            if is_token(s) {
                Ok(o.slice_ref(s))
            } else {
                Err(ValueError::Malformed)
            }
        })
    }

    /// Methods listed in Allow.
    pub fn allow(&self) -> Result<Vec<Method>, ValueError> {
        self.parse_list(
            KnownHeader::Allow,
            self.limits().max_values,
            true,
            Method::from_token,
        )
    }

    /// Media ranges listed in Accept (empty Accept: no body accepted).
    pub fn accept(&self) -> Result<Vec<MediaType>, ValueError> {
        self.parse_list(
            KnownHeader::Accept,
            self.limits().max_values,
            true,
            |o, s| MediaType::parse(o, s, true, self.limits()),
        )
    }

    fn auth_list(&self, name: KnownHeader) -> Result<Vec<Auth>, ValueError> {
        let mut out = Vec::new();
        for v in self.get_all(name) {
            if out.len() >= self.limits().max_values {
                return Err(ValueError::TooMany);
            }
            out.push(Auth::parse(v, v, self.limits())?);
        }
        Ok(out)
    }

    /// Authorization values (one per realm).
    pub fn authorizations(&self) -> Result<Vec<Auth>, ValueError> {
        self.auth_list(KnownHeader::Authorization)
    }

    /// Proxy-Authorization values.
    pub fn proxy_authorizations(&self) -> Result<Vec<Auth>, ValueError> {
        self.auth_list(KnownHeader::ProxyAuthorization)
    }

    /// WWW-Authenticate challenges.
    pub fn www_authenticates(&self) -> Result<Vec<Auth>, ValueError> {
        self.auth_list(KnownHeader::WwwAuthenticate)
    }

    /// Proxy-Authenticate challenges.
    pub fn proxy_authenticates(&self) -> Result<Vec<Auth>, ValueError> {
        self.auth_list(KnownHeader::ProxyAuthenticate)
    }

    /// Reason values.
    pub fn reasons(&self) -> Result<Vec<Reason>, ValueError> {
        self.parse_list(
            KnownHeader::Reason,
            self.limits().max_values,
            false,
            |o, s| Reason::parse(o, s, self.limits()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{Header, HeaderName};
    use crate::limits::Limits;

    fn headers(lines: &[(&str, &'static str)]) -> Headers {
        let mut h = Headers::new();
        for (n, v) in lines {
            h.push(Header::new(HeaderName::parse(n.to_string()).unwrap(), *v).unwrap());
        }
        h
    }

    /// The five cached views' results, compared by value.
    type Five = (
        Result<Via, ValueError>,
        Result<NameAddr, ValueError>,
        Result<NameAddr, ValueError>,
        Result<Bytes, ValueError>,
        Result<CSeq, ValueError>,
    );

    fn cached(h: &Headers) -> Five {
        (h.top_via(), h.from(), h.to(), h.call_id(), h.cseq())
    }

    /// The same five parsed afresh from a copy of the lines alone.
    fn fresh(h: &Headers) -> Five {
        let mut copy = Headers::new();
        for line in h.iter() {
            copy.push(line.clone());
        }
        cached(&copy)
    }

    #[test]
    fn cached_views_follow_every_change_to_the_lines() {
        let mut h = headers(&[
            ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"),
            ("From", "<sip:a@b>;tag=1"),
            ("To", "<sip:c@d>"),
            ("Call-ID", "x@y"),
            ("CSeq", "1 INVITE"),
        ]);
        let first = cached(&h);
        assert_eq!(
            first.0.as_ref().unwrap().branch.as_deref(),
            Some(&b"z9hG4bK1"[..])
        );
        assert_eq!(cached(&h), first, "a second read is the same");

        // Every mutator, each after the views were read, must leave views
        // equal to those of freshly parsed lines.
        h.insert(
            0,
            Header::new(KnownHeader::Via, "SIP/2.0/TCP p;branch=z9hG4bK2").unwrap(),
        );
        assert_eq!(
            h.top_via().unwrap().branch.as_deref(),
            Some(&b"z9hG4bK2"[..])
        );
        assert_eq!(cached(&h), cached(&h));
        h.push(Header::new(KnownHeader::To, "<sip:e@f>").unwrap());
        assert_eq!(h.to().unwrap_err(), ValueError::Repeated);
        assert_eq!(h.remove(KnownHeader::To), 2);
        assert_eq!(h.to().unwrap_err(), ValueError::Missing);
        h.push(Header::new(KnownHeader::To, "<sip:g@h>;tag=9").unwrap());
        assert_eq!(
            h.to().unwrap().params.get("tag").and_then(|p| p.value),
            Some(&b"9"[..])
        );
        assert_eq!(h.remove_named(b"i"), 1);
        assert_eq!(h.call_id().unwrap_err(), ValueError::Missing);
        h.retain(|l| l.name().known() != Some(KnownHeader::CSeq));
        assert_eq!(h.cseq().unwrap_err(), ValueError::Missing);
        h.retain(|l| {
            l.name().known() != Some(KnownHeader::Via) || l.value().starts_with(b"SIP/2.0/UDP")
        });
        assert_eq!(
            h.top_via().unwrap().branch.as_deref(),
            Some(&b"z9hG4bK1"[..])
        );
        assert_eq!(cached(&h), fresh(&h));

        // A clone keeps what was parsed, and its own changes do not reach
        // the original.
        let mut c = h.clone();
        assert_eq!(cached(&c), cached(&h));
        c.remove(KnownHeader::From);
        assert_eq!(c.from().unwrap_err(), ValueError::Missing);
        assert!(h.from().is_ok());
    }

    #[test]
    fn single_and_list_access() {
        let h = headers(&[
            ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/TCP b"),
            ("v", "SIP/2.0/UDP c"),
            ("To", "sip:a@b"),
            ("To", "sip:c@d"),
            ("Supported", ""),
            ("Require", "100rel, timer"),
            ("Allow", "INVITE, ACK,FOO"),
            ("Accept", "application/sdp, */*;q=0.1"),
        ]);
        assert_eq!(h.via_count(), 3);
        assert_eq!(h.vias().unwrap().len(), 3);
        assert_eq!(
            h.top_via().unwrap().branch.as_deref(),
            Some(&b"z9hG4bK1"[..])
        );
        assert_eq!(h.to().unwrap_err(), ValueError::Repeated);
        assert_eq!(h.from().unwrap_err(), ValueError::Missing);
        assert_eq!(h.option_tags(KnownHeader::Supported).unwrap().len(), 0);
        assert_eq!(
            h.option_tags(KnownHeader::Require).unwrap(),
            vec![Bytes::from("100rel"), Bytes::from("timer")]
        );
        assert_eq!(h.allow().unwrap().len(), 3);
        assert_eq!(h.accept().unwrap().len(), 2);
        assert_eq!(h.max_forwards(), Ok(None));
    }

    #[test]
    fn limits_bound_lists_and_tags() {
        let mut h = Headers::with_limits(Limits {
            max_via: 2,
            max_ident_len: 4,
            ..Limits::default()
        });
        h.push(
            Header::new(
                KnownHeader::Via,
                "SIP/2.0/UDP a, SIP/2.0/UDP b, SIP/2.0/UDP c",
            )
            .unwrap(),
        );
        h.push(Header::new(KnownHeader::From, "<sip:a@b>;tag=12345").unwrap());
        assert_eq!(h.vias().unwrap_err(), ValueError::TooMany);
        assert_eq!(h.from().unwrap_err(), ValueError::TooLong);
        let h = headers(&[
            ("Via", "SIP/2.0/UDP a,,"),
            ("Allow", "Allow: SUBSCRIBE, NOTIFY"),
            ("Require", ""),
        ]);
        assert_eq!(h.vias().unwrap_err(), ValueError::Malformed);
        assert_eq!(h.allow().unwrap_err(), ValueError::Malformed);
        assert_eq!(
            h.option_tags(KnownHeader::Require).unwrap_err(),
            ValueError::Malformed
        );
    }
}
