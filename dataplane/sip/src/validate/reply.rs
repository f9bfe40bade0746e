//! Stateless replies to refused requests: the §8.2.6 copy of the
//! request's headers, a deterministic To-tag, and the header the status
//! calls for (Allow for 501, Unsupported for 420, Accept for 415).

use bytes::{BufMut, Bytes, BytesMut};

use super::{Policy, Problem};
use crate::builder::ResponseBuilder;
use crate::error::ValueError;
use crate::header::{Headers, KnownHeader};
use crate::message::Response;
use crate::method::Method;

/// A deterministic To-tag for a stateless reply: retransmissions of the
/// same request get the same tag (§8.2.7), and `key` keeps it unguessable.
pub fn stateless_tag(request: &Headers, key: u64) -> [u8; 16] {
    // FNV-1a: not cryptographic, but the key makes the output depend on a
    // secret, and collisions only cost a tag that is not unique.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ key;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes.iter().chain(b"\0") {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for name in [
        KnownHeader::Via,
        KnownHeader::From,
        KnownHeader::CallId,
        KnownHeader::CSeq,
    ] {
        feed(request.get(name).map_or(&b""[..], |v| &v[..]));
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let nibble = (hash >> (60 - 4 * i)) & 0xf;
        *o = b"0123456789abcdef"
            .get(nibble as usize)
            .copied()
            .unwrap_or(b'0');
    }
    out
}

fn joined<'a>(items: impl Iterator<Item = &'a [u8]>) -> Bytes {
    let mut out = BytesMut::new();
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.put_slice(b", ");
        }
        out.put_slice(item);
    }
    out.freeze()
}

/// The response that reports `problem` for a request with these headers,
/// with the header the status calls for (Allow, Unsupported, Accept).
pub fn rejection(
    request: &Headers,
    problem: &Problem,
    policy: &Policy<'_>,
) -> Result<Response, ValueError> {
    let tag = stateless_tag(request, policy.tag_key);
    let mut b = ResponseBuilder::reply_to(request, problem.status(), Some(&tag))
        .reason(problem.to_string());
    match problem {
        Problem::NotImplemented => {
            if let Some(set) = policy.implemented {
                let methods: Vec<Method> = set.iter().collect();
                b = b.header(
                    KnownHeader::Allow,
                    joined(methods.iter().map(Method::as_bytes)),
                );
            }
        }
        Problem::BadExtension(tags) => {
            b = b.header(
                KnownHeader::Unsupported,
                joined(tags.iter().map(|t| &t[..])),
            )
        }
        Problem::UnsupportedMediaType => {
            if let Some(accepted) = policy.accepted {
                b = b.header(
                    KnownHeader::Accept,
                    joined(accepted.iter().map(|a| a.as_bytes())),
                );
            }
        }
        _ => {}
    }
    b.build()
}
