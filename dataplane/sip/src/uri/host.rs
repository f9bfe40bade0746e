//! Hosts (RFC 3261 §25 `host`): domain names, IPv4 addresses and IPv6
//! references, and the `host [":" port]` split that brackets make safe.

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ValueError;

/// A host: domain name, IPv4 address or IPv6 reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A hostname, case preserved (compare ignoring ASCII case).
    Domain(Bytes),
    V4(Ipv4Addr),
    /// Written `[...]` on the wire.
    V6(Ipv6Addr),
}

fn is_label_char(b: u8) -> bool {
    // RFC 3261 allows alphanum and '-'; '_' is tolerated because SRV-style
    // names with it are common in the wild and carry no ambiguity.
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// hostname = *( domainlabel "." ) toplabel [ "." ], in one pass: labels
/// are non-empty, do not start or end with '-', and the last one starts
/// with a letter, which is what tells "1.2.3.999" (a bad IPv4 address)
/// from a domain.
fn is_hostname(s: &[u8]) -> bool {
    if s.is_empty() || s.len() > 255 {
        return false;
    }
    let body = s.strip_suffix(b".").unwrap_or(s);
    let mut prev = b'.';
    let mut top_first = 0u8;
    for &b in body {
        if b == b'.' {
            if prev == b'.' || prev == b'-' {
                return false;
            }
        } else if !is_label_char(b) || (prev == b'.' && b == b'-') {
            return false;
        } else if prev == b'.' {
            top_first = b;
        }
        prev = b;
    }
    prev != b'.' && prev != b'-' && top_first.is_ascii_alphabetic()
}

impl Host {
    /// Parses a complete host (`hostname / IPv4address / IPv6reference`).
    pub fn parse(owner: &Bytes, s: &[u8]) -> Result<Self, ValueError> {
        if let Some(inner) = s.strip_prefix(b"[").and_then(|r| r.strip_suffix(b"]")) {
            return std::str::from_utf8(inner)
                .ok()
                .and_then(|t| t.parse().ok())
                .map(Self::V6)
                .ok_or(ValueError::Malformed);
        }
        if !s.is_empty() && s.iter().all(|&b| b.is_ascii_digit() || b == b'.') {
            return std::str::from_utf8(s)
                .ok()
                .and_then(|t| t.parse().ok())
                .map(Self::V4)
                .ok_or(ValueError::Malformed);
        }
        if is_hostname(s) {
            Ok(Self::Domain(owner.slice_ref(s)))
        } else {
            Err(ValueError::Malformed)
        }
    }

    /// Parses a host from its own bytes.
    pub fn from_bytes(b: impl Into<Bytes>) -> Result<Self, ValueError> {
        let b = b.into();
        Self::parse(&b, &b)
    }

    /// Writes the host in wire form.
    pub fn render(&self, out: &mut BytesMut) {
        match self {
            Self::Domain(d) => out.put_slice(d),
            Self::V4(a) => out.put_slice(a.to_string().as_bytes()),
            Self::V6(a) => {
                out.put_u8(b'[');
                out.put_slice(a.to_string().as_bytes());
                out.put_u8(b']');
            }
        }
    }
}

/// Splits `host [":" port]` where the host may be an IPv6 reference.
pub(crate) fn split_hostport(s: &[u8]) -> Result<(&[u8], Option<&[u8]>), ValueError> {
    let host_end = if s.first() == Some(&b'[') {
        s.iter()
            .position(|&b| b == b']')
            .map(|i| i + 1)
            .ok_or(ValueError::Malformed)?
    } else {
        s.iter().position(|&b| b == b':').unwrap_or(s.len())
    };
    let (host, rest) = s.split_at_checked(host_end).ok_or(ValueError::Malformed)?;
    match rest {
        [] => Ok((host, None)),
        [b':', port @ ..] => Ok((host, Some(port))),
        _ => Err(ValueError::Malformed),
    }
}
