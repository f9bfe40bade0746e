//! The checks themselves: every header with a typed view, then the rules
//! of RFC 3261 §8.2 (and §16.3 for proxies) in the RFC's order.

use bytes::Bytes;

use super::{Policy, Problem, Role};
use crate::error::ValueError;
use crate::header::{
    BRANCH_MAGIC_COOKIE, CSeq, Contact, Headers, KnownHeader, MediaType, NameAddr, Via,
};
use crate::message::{Request, Response, Version};
use crate::method::Method;
use crate::uri::Uri;

pub(super) fn bad(name: KnownHeader) -> impl Fn(ValueError) -> Problem {
    move |e| Problem::BadHeader(name, e)
}

/// The views later checks need, parsed once by [`check_headers`].
struct Core {
    top_via: Via,
    cseq: CSeq,
    to: NameAddr,
    contacts: Vec<Contact>,
    content_type: Option<MediaType>,
    max_forwards: Option<u8>,
    expires: Option<u32>,
    accept: Vec<MediaType>,
}

/// Checks every header that has a typed view, in a fixed order, and the
/// rules that tie a few of them together.
fn check_headers(h: &Headers, body: &Bytes) -> Result<Core, Problem> {
    use KnownHeader as K;
    let top_via = h
        .vias()
        .map_err(bad(K::Via))?
        .into_iter()
        .next()
        .ok_or(Problem::BadHeader(K::Via, ValueError::Missing))?;
    h.from().map_err(bad(K::From))?;
    let to = h.to().map_err(bad(K::To))?;
    h.call_id().map_err(bad(K::CallId))?;
    let cseq = h.cseq().map_err(bad(K::CSeq))?;
    let max_forwards = h.max_forwards().map_err(bad(K::MaxForwards))?;
    let contacts = h.contacts().map_err(bad(K::Contact))?;
    h.routes().map_err(bad(K::Route))?;
    h.record_routes().map_err(bad(K::RecordRoute))?;
    let content_type = h.content_type().map_err(bad(K::ContentType))?;
    let accept = h.accept().map_err(bad(K::Accept))?;
    h.allow().map_err(bad(K::Allow))?;
    for tags in [K::Supported, K::Require, K::ProxyRequire, K::Unsupported] {
        h.option_tags(tags).map_err(bad(tags))?;
    }
    let expires = h.expires().map_err(bad(K::Expires))?;
    h.min_expires().map_err(bad(K::MinExpires))?;
    h.session_expires().map_err(bad(K::SessionExpires))?;
    h.min_se().map_err(bad(K::MinSe))?;
    h.authorizations().map_err(bad(K::Authorization))?;
    h.proxy_authorizations()
        .map_err(bad(K::ProxyAuthorization))?;
    h.www_authenticates().map_err(bad(K::WwwAuthenticate))?;
    h.proxy_authenticates().map_err(bad(K::ProxyAuthenticate))?;
    h.reasons().map_err(bad(K::Reason))?;
    if !body.is_empty() && content_type.is_none() {
        return Err(Problem::MissingContentType);
    }
    Ok(Core {
        top_via,
        cseq,
        to,
        contacts,
        content_type,
        max_forwards,
        expires,
        accept,
    })
}

fn unsupported_tags(h: &Headers, name: KnownHeader, supported: &[&str]) -> Vec<Bytes> {
    h.option_tags(name)
        .unwrap_or_default()
        .into_iter()
        .filter(|t| {
            !supported
                .iter()
                .any(|s| s.as_bytes().eq_ignore_ascii_case(t))
        })
        .collect()
}

/// Classifies a parsed request; `Ok` means hand it on.
pub fn check_request(req: &Request, policy: &Policy<'_>) -> Result<(), Problem> {
    let h = &req.headers;
    if req.version != Version::SIP_2_0 {
        return Err(Problem::UnsupportedVersion);
    }
    let core = check_headers(h, &req.body)?;
    // "z9hG4bK" alone claims RFC 3261 matching but gives no identifier
    // (RFC 4475 `badbranch`); refusing it keeps transaction keys unique.
    if core.top_via.branch.as_deref() == Some(BRANCH_MAGIC_COOKIE) {
        return Err(Problem::EmptyBranch);
    }
    if core.contacts.contains(&Contact::Star) {
        let alone = core.contacts.len() == 1;
        if req.method != Method::Register || !alone || core.expires != Some(0) {
            return Err(Problem::MisplacedStarContact);
        }
    }
    if policy
        .implemented
        .is_some_and(|set| !set.contains(&req.method))
    {
        return Err(Problem::NotImplemented);
    }
    if core.cseq.method != req.method {
        return Err(Problem::CSeqMethodMismatch);
    }
    match &req.uri {
        Uri::Other(_) => return Err(Problem::UnsupportedScheme),
        Uri::Tel(_) if !policy.accept_tel => return Err(Problem::UnsupportedScheme),
        Uri::Sip(u) if u.headers.is_some() => return Err(Problem::HeadersInRequestUri),
        _ => {}
    }
    // A registrar needs a SIP or SIPS address-of-record (RFC 4475 `unksm2`).
    if req.method == Method::Register
        && policy.role == Role::Uas
        && !matches!(core.to.uri, Uri::Sip(_))
    {
        return Err(Problem::NonSipAddressOfRecord);
    }
    if policy.role == Role::Proxy && core.max_forwards == Some(0) {
        return Err(Problem::TooManyHops);
    }
    // Require and Proxy-Require are ignored in ACK and CANCEL (§8.2.2.3).
    if !matches!(req.method, Method::Ack | Method::Cancel) {
        let name = match policy.role {
            Role::Uas => KnownHeader::Require,
            Role::Proxy => KnownHeader::ProxyRequire,
        };
        let unknown = unsupported_tags(h, name, policy.supported);
        if !unknown.is_empty() {
            return Err(Problem::BadExtension(unknown));
        }
    }
    if let (Some(accepted), false) = (policy.accepted, req.body.is_empty())
        && !core
            .content_type
            .as_ref()
            .is_some_and(|ct| accepted.iter().any(|a| ct.is(a)))
    {
        return Err(Problem::UnsupportedMediaType);
    }
    if let (Some(answer), Method::Invite) = (policy.answer_type, &req.method)
        && h.get(KnownHeader::Accept).is_some()
    {
        let acceptable = answer.split_once('/').is_some_and(|(t, s)| {
            core.accept
                .iter()
                .any(|r| r.matches(t.as_bytes(), s.as_bytes()))
        });
        if !acceptable {
            return Err(Problem::NotAcceptable);
        }
    }
    Ok(())
}

/// Syntax checks for a received response; any problem means drop it.
pub fn check_response(resp: &Response) -> Result<(), Problem> {
    if resp.version != Version::SIP_2_0 {
        return Err(Problem::UnsupportedVersion);
    }
    check_headers(&resp.headers, &resp.body).map(|_| ())
}
