//! Constructing messages: request and response builders, the §8.2.6
//! response to a request, and the two requests RFC 3261 derives from
//! another (CANCEL, §9.1; ACK for a non-2xx final response, §17.1.1.3).
//!
//! Builders validate everything they are given (header values cannot carry
//! CR, LF or stray control characters) and report the first problem from
//! `build()`, so a call chain needs one `?`. Content-Length is never set by
//! hand: the printer writes it from the body.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ValueError;
use crate::header::{CSeq, Header, HeaderName, Headers, KnownHeader, MediaType, NameAddr, Via};
use crate::message::{Request, Response, StatusCode, Version};
use crate::method::Method;
use crate::syntax::is_token;
use crate::uri::Uri;

fn rendered(f: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut out = BytesMut::new();
    f(&mut out);
    out.freeze()
}

/// Shared by both builders: a header list and the first error seen.
#[derive(Debug, Clone, Default)]
struct Parts {
    headers: Headers,
    body: Bytes,
    error: Option<ValueError>,
}

impl Parts {
    fn push(&mut self, name: impl Into<HeaderName>, value: Bytes) {
        match Header::new(name, value) {
            Ok(h) => self.headers.push(h),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }

    fn body(&mut self, content_type: &MediaType, body: Bytes) {
        self.headers.remove(KnownHeader::ContentType);
        self.push(
            KnownHeader::ContentType,
            rendered(|o| content_type.render(o)),
        );
        self.body = body;
    }
}

/// Builds a request.
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    method: Method,
    uri: Uri,
    parts: Parts,
}

impl RequestBuilder {
    pub fn new(method: Method, uri: Uri) -> Self {
        Self {
            method,
            uri,
            parts: Parts::default(),
        }
    }

    /// Appends a header.
    pub fn header(mut self, name: impl Into<HeaderName>, value: impl Into<Bytes>) -> Self {
        self.parts.push(name, value.into());
        self
    }

    /// Appends a Via value (the caller puts its own Via first).
    pub fn via(self, via: &Via) -> Self {
        self.header(KnownHeader::Via, rendered(|o| via.render(o)))
    }

    pub fn from(self, addr: &NameAddr) -> Self {
        self.header(KnownHeader::From, rendered(|o| addr.render(o)))
    }

    pub fn to(self, addr: &NameAddr) -> Self {
        self.header(KnownHeader::To, rendered(|o| addr.render(o)))
    }

    pub fn contact(self, addr: &NameAddr) -> Self {
        self.header(KnownHeader::Contact, rendered(|o| addr.render(o)))
    }

    pub fn route(self, addr: &NameAddr) -> Self {
        self.header(KnownHeader::Route, rendered(|o| addr.render(o)))
    }

    /// Call-ID (validated as `word ["@" word]`).
    pub fn call_id(mut self, id: impl Into<Bytes>) -> Self {
        let id = id.into();
        match crate::header::parse_call_id(&id, &id, &crate::Limits::default()) {
            Ok(id) => self.parts.push(KnownHeader::CallId, id),
            Err(e) => {
                self.parts.error.get_or_insert(e);
            }
        }
        self
    }

    /// CSeq with this request's method.
    pub fn cseq(self, seq: u32) -> Self {
        let cseq = CSeq {
            seq,
            method: self.method.clone(),
        };
        self.header(KnownHeader::CSeq, rendered(|o| cseq.render(o)))
    }

    pub fn max_forwards(self, hops: u8) -> Self {
        self.header(KnownHeader::MaxForwards, hops.to_string())
    }

    /// Sets the body and its Content-Type.
    pub fn body(mut self, content_type: &MediaType, body: Bytes) -> Self {
        self.parts.body(content_type, body);
        self
    }

    /// The request, or the first invalid input.
    pub fn build(self) -> Result<Request, ValueError> {
        if let Some(e) = self.parts.error {
            return Err(e);
        }
        Ok(Request {
            method: self.method,
            uri: self.uri,
            version: Version::SIP_2_0,
            headers: self.parts.headers,
            body: self.parts.body,
        })
    }
}

/// Builds a response.
#[derive(Debug, Clone)]
pub struct ResponseBuilder {
    status: StatusCode,
    reason: Bytes,
    parts: Parts,
}

impl ResponseBuilder {
    /// A response with the canonical reason phrase and no headers.
    pub fn new(status: StatusCode) -> Self {
        Self {
            status,
            reason: Bytes::from_static(status.canonical_reason().as_bytes()),
            parts: Parts::default(),
        }
    }

    /// A response to a request with these headers, per RFC 3261 §8.2.6:
    /// every Via in order, From, To, Call-ID and CSeq copied verbatim, and
    /// `to_tag` added to To unless it has a tag already or the status is
    /// 100 (which also copies Timestamp, §8.2.6.1). A To that does not parse
    /// is copied as it is, without a tag. Record-Route is the dialog layer's
    /// to copy (§12.1.1): only it knows whether the response makes a dialog.
    pub fn reply_to(request: &Headers, status: StatusCode, to_tag: Option<&[u8]>) -> Self {
        let mut b = Self::new(status);
        let copy = |b: &mut Self, name: KnownHeader| {
            for v in request.get_all(name) {
                b.parts.push(name, v.clone());
            }
        };
        copy(&mut b, KnownHeader::Via);
        copy(&mut b, KnownHeader::From);
        for to in request.get_all(KnownHeader::To) {
            let tagged = match (status == StatusCode::TRYING, to_tag, request.to()) {
                (false, Some(tag), Ok(addr)) if addr.tag().is_none() => {
                    if !is_token(tag) {
                        b.parts.error.get_or_insert(ValueError::Malformed);
                    }
                    let mut v = BytesMut::from(&to[..]);
                    v.put_slice(b";tag=");
                    v.put_slice(tag);
                    v.freeze()
                }
                _ => to.clone(),
            };
            b.parts.push(KnownHeader::To, tagged);
        }
        copy(&mut b, KnownHeader::CallId);
        copy(&mut b, KnownHeader::CSeq);
        if status == StatusCode::TRYING {
            copy(&mut b, KnownHeader::Timestamp);
        }
        b
    }

    /// Replaces the reason phrase (no control characters).
    pub fn reason(mut self, reason: impl Into<Bytes>) -> Self {
        let reason = reason.into();
        if reason.iter().any(|&b| crate::syntax::is_ctl(b)) {
            self.parts.error.get_or_insert(ValueError::Malformed);
        } else {
            self.reason = reason;
        }
        self
    }

    /// Appends a header.
    pub fn header(mut self, name: impl Into<HeaderName>, value: impl Into<Bytes>) -> Self {
        self.parts.push(name, value.into());
        self
    }

    pub fn contact(self, addr: &NameAddr) -> Self {
        self.header(KnownHeader::Contact, rendered(|o| addr.render(o)))
    }

    /// Sets the body and its Content-Type.
    pub fn body(mut self, content_type: &MediaType, body: Bytes) -> Self {
        self.parts.body(content_type, body);
        self
    }

    /// The response, or the first invalid input.
    pub fn build(self) -> Result<Response, ValueError> {
        if let Some(e) = self.parts.error {
            return Err(e);
        }
        Ok(Response {
            version: Version::SIP_2_0,
            status: self.status,
            reason: self.reason,
            headers: self.parts.headers,
            body: self.parts.body,
        })
    }
}

impl Request {
    /// [`ResponseBuilder::reply_to`] this request.
    pub fn reply(&self, status: StatusCode, to_tag: Option<&[u8]>) -> ResponseBuilder {
        ResponseBuilder::reply_to(&self.headers, status, to_tag)
    }
}

/// Copies the lines of `names` from `src` to `dst`, in order per name.
fn copy_headers(src: &Headers, dst: &mut Headers, names: &[KnownHeader]) {
    for &name in names {
        for v in src.get_all(name) {
            dst.push(Header::from_wire(name.into(), v.clone()));
        }
    }
}

/// The top Via of `request` as a header line of its own.
fn top_via_line(request: &Request) -> Result<Header, ValueError> {
    let via = request.headers.top_via()?;
    Header::new(KnownHeader::Via, rendered(|o| via.render(o)))
}

/// CANCEL for a pending request (RFC 3261 §9.1): same Request-URI,
/// Call-ID, From, To, CSeq number and Route set, and only the top Via, so
/// that it matches the INVITE's server transaction hop by hop.
pub fn cancel_for(request: &Request) -> Result<Request, ValueError> {
    let mut headers = Headers::with_limits(*request.headers.limits());
    headers.push(top_via_line(request)?);
    copy_headers(
        &request.headers,
        &mut headers,
        &[KnownHeader::MaxForwards, KnownHeader::From, KnownHeader::To],
    );
    copy_headers(&request.headers, &mut headers, &[KnownHeader::CallId]);
    let cseq = CSeq {
        seq: request.headers.cseq()?.seq,
        method: Method::Cancel,
    };
    headers.push(Header::new(
        KnownHeader::CSeq,
        rendered(|o| cseq.render(o)),
    )?);
    copy_headers(&request.headers, &mut headers, &[KnownHeader::Route]);
    Ok(Request {
        method: Method::Cancel,
        uri: request.uri.clone(),
        version: Version::SIP_2_0,
        headers,
        body: Bytes::new(),
    })
}

/// ACK for a non-2xx final response to `invite` (RFC 3261 §17.1.1.3):
/// the INVITE's Request-URI, top Via, From, Call-ID and Route set, the
/// response's To (with its tag), and the CSeq number with method ACK.
pub fn ack_for_non2xx(invite: &Request, response: &Response) -> Result<Request, ValueError> {
    let mut headers = Headers::with_limits(*invite.headers.limits());
    headers.push(top_via_line(invite)?);
    copy_headers(
        &invite.headers,
        &mut headers,
        &[KnownHeader::MaxForwards, KnownHeader::From],
    );
    headers.push(Header::from_wire(
        KnownHeader::To.into(),
        response.headers.single(KnownHeader::To)?.clone(),
    ));
    copy_headers(&invite.headers, &mut headers, &[KnownHeader::CallId]);
    let cseq = CSeq {
        seq: invite.headers.cseq()?.seq,
        method: Method::Ack,
    };
    headers.push(Header::new(
        KnownHeader::CSeq,
        rendered(|o| cseq.render(o)),
    )?);
    copy_headers(&invite.headers, &mut headers, &[KnownHeader::Route]);
    Ok(Request {
        method: Method::Ack,
        uri: invite.uri.clone(),
        version: Version::SIP_2_0,
        headers,
        body: Bytes::new(),
    })
}

#[cfg(test)]
mod tests;
