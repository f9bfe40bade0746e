//! Matching messages to transactions: the keys of §17.1.3 (client),
//! §17.2.3 (server, with the RFC 2543 fallback) and §9.2 (CANCEL).
//!
//! A key is computed once per message and looked up in a hash map, so
//! matching costs the same with ten transactions or a hundred thousand.
//! Branches are compared as octets: they are opaque tokens that every
//! implementation echoes verbatim, and folding case would cost an
//! allocation per message for no interoperability gain.

use bytes::{Bytes, BytesMut};

use crate::error::ValueError;
use crate::header::Via;
use crate::message::{Request, Response};
use crate::method::Method;

/// A Via sent-by (host and port), the host in a canonical, lower-case
/// spelling so that `Example.COM` and `example.com` compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SentBy {
    pub host: Bytes,
    pub port: Option<u16>,
}

impl SentBy {
    pub fn of(via: &Via) -> Self {
        let mut host = BytesMut::new();
        via.host.render(&mut host);
        host.make_ascii_lowercase();
        Self {
            host: host.freeze(),
            port: via.port,
        }
    }
}

/// The RFC 2543 matching fields (§17.2.3, for branches without the magic
/// cookie): Request-URI, To tag, From tag, Call-ID, CSeq and top Via.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LegacyKey {
    pub request_uri: Bytes,
    pub to_tag: Option<Bytes>,
    pub from_tag: Option<Bytes>,
    pub call_id: Bytes,
    pub cseq: u32,
    pub method: Method,
    /// The top Via in canonical form.
    pub top_via: Bytes,
}

/// What identifies a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TransactionKey {
    /// A client transaction: our branch and the method (§17.1.3). A CANCEL
    /// shares its INVITE's branch and differs by method.
    Client { branch: Bytes, method: Method },
    /// An RFC 3261 server transaction: branch, sent-by and method, with
    /// ACK folded into INVITE (§17.2.3).
    Server {
        branch: Bytes,
        sent_by: SentBy,
        method: Method,
    },
    /// A server transaction created by an RFC 2543 client.
    Legacy(Box<LegacyKey>),
}

/// A copy of `b` in an allocation of its own.
fn own(b: &Bytes) -> Bytes {
    Bytes::copy_from_slice(b)
}

fn own_method(m: &Method) -> Method {
    match m {
        Method::Extension(b) => Method::Extension(own(b)),
        other => other.clone(),
    }
}

fn tag_of(addr: Result<crate::header::NameAddr, ValueError>) -> Result<Option<Bytes>, ValueError> {
    Ok(addr?.params.value_bytes("tag"))
}

impl TransactionKey {
    /// The same key holding its own copies of the bytes it names. Parsed
    /// fields are slices of the message they came from, so a key kept in
    /// the table would otherwise keep that whole message alive for as long
    /// as its transaction lingers (32 s after a final response on UDP).
    pub fn detached(&self) -> Self {
        match self {
            Self::Client { branch, method } => Self::Client {
                branch: own(branch),
                method: own_method(method),
            },
            Self::Server {
                branch,
                sent_by,
                method,
            } => Self::Server {
                branch: own(branch),
                sent_by: SentBy {
                    host: own(&sent_by.host),
                    port: sent_by.port,
                },
                method: own_method(method),
            },
            Self::Legacy(k) => Self::Legacy(Box::new(LegacyKey {
                request_uri: own(&k.request_uri),
                to_tag: k.to_tag.as_ref().map(own),
                from_tag: k.from_tag.as_ref().map(own),
                call_id: own(&k.call_id),
                cseq: k.cseq,
                method: own_method(&k.method),
                top_via: own(&k.top_via),
            })),
        }
    }

    /// The key of the client transaction that sends `request`: its top Via
    /// must carry an RFC 3261 branch, which the layer relies on to match
    /// responses.
    pub fn client_request(request: &Request) -> Result<Self, ValueError> {
        let via = request.headers.top_via()?;
        match via.branch {
            Some(branch) if via_has_cookie(&branch) => Ok(Self::Client {
                branch,
                method: request.method.clone(),
            }),
            _ => Err(ValueError::Malformed),
        }
    }

    /// The key of the client transaction `response` belongs to: top Via
    /// branch and CSeq method.
    pub fn client_response(response: &Response) -> Result<Self, ValueError> {
        let via = response.headers.top_via()?;
        Ok(Self::Client {
            branch: via.branch.ok_or(ValueError::Missing)?,
            method: response.headers.cseq()?.method,
        })
    }

    /// The key of the server transaction `request` belongs to. An ACK maps
    /// to its INVITE's transaction when the branch has the magic cookie;
    /// under RFC 2543 it maps to the alias the INVITE transaction
    /// registers when it sends its final response (see [`Self::legacy_ack`]).
    pub fn server(request: &Request) -> Result<Self, ValueError> {
        let method = match request.method {
            Method::Ack => Method::Invite,
            ref m => m.clone(),
        };
        Self::server_as(request, method, true)
    }

    /// The key of the INVITE server transaction a CANCEL cancels: the
    /// CANCEL's own key with method INVITE (§9.2).
    pub fn cancelled_by(cancel: &Request) -> Result<Self, ValueError> {
        Self::server_as(cancel, Method::Invite, false)
    }

    fn server_as(request: &Request, method: Method, ack_alias: bool) -> Result<Self, ValueError> {
        let via = request.headers.top_via()?;
        if let Some(branch) = via.branch.as_ref().filter(|b| via_has_cookie(b)) {
            return Ok(Self::Server {
                branch: branch.clone(),
                sent_by: SentBy::of(&via),
                method,
            });
        }
        let h = &request.headers;
        let mut top_via = BytesMut::new();
        via.render(&mut top_via);
        let method = if ack_alias && request.method == Method::Ack {
            Method::Ack
        } else {
            method
        };
        Ok(Self::Legacy(Box::new(LegacyKey {
            request_uri: request.uri.to_bytes(),
            to_tag: tag_of(h.to())?,
            from_tag: tag_of(h.from())?,
            call_id: h.call_id()?,
            cseq: h.cseq()?.seq,
            method,
            top_via: top_via.freeze(),
        })))
    }

    /// For an RFC 2543 INVITE transaction that answered with a final
    /// response carrying `to_tag`: the key its ACK will have (same fields,
    /// the response's To tag, method ACK). `None` for other keys.
    pub fn legacy_ack(&self, to_tag: Option<Bytes>) -> Option<Self> {
        match self {
            Self::Legacy(k) if k.method == Method::Invite => {
                Some(Self::Legacy(Box::new(LegacyKey {
                    to_tag,
                    method: Method::Ack,
                    ..(**k).clone()
                })))
            }
            _ => None,
        }
    }

    /// `true` for RFC 2543 keys.
    pub fn is_legacy(&self) -> bool {
        matches!(self, Self::Legacy(_))
    }
}

fn via_has_cookie(branch: &[u8]) -> bool {
    branch.starts_with(crate::header::BRANCH_MAGIC_COOKIE)
}
