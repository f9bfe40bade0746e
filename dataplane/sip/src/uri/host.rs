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

/// Dotted-decimal IPv4 (RFC 3261 `IPv4address`): four octets of one to
/// three digits, each at most 255, with no leading zero (so "010" is not
/// read as ten, or as octal eight). Accepts exactly what the standard
/// library's `Ipv4Addr` parser accepts, without its UTF-8 check and
/// generic parser on the path of every Request-URI and Via.
fn parse_ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    // One pass: `i` is the octet being read, `len` its digits so far.
    let (mut i, mut len, mut v) = (0usize, 0usize, 0u16);
    for &b in s {
        match b {
            b'.' => {
                *octets.get_mut(i)? = u8::try_from(v).ok().filter(|_| len > 0)?;
                (i, len, v) = (i + 1, 0, 0);
            }
            b'0'..=b'9' => {
                // A leading zero is only allowed as the whole octet.
                if len == 3 || (len == 1 && v == 0) {
                    return None;
                }
                v = v * 10 + u16::from(b - b'0');
                len += 1;
            }
            _ => return None,
        }
    }
    if i != 3 || len == 0 {
        return None;
    }
    *octets.get_mut(3)? = u8::try_from(v).ok()?;
    Some(Ipv4Addr::from(octets))
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
        if let Some(a) = parse_ipv4(s) {
            return Ok(Self::V4(a));
        }
        if !s.is_empty() && s.iter().all(|&b| b.is_ascii_digit() || b == b'.') {
            return Err(ValueError::Malformed);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn std_parse(s: &[u8]) -> Option<Ipv4Addr> {
        std::str::from_utf8(s).ok()?.parse().ok()
    }

    #[test]
    fn ipv4_accepts_what_std_accepts() {
        for s in [
            "0.0.0.0",
            "255.255.255.255",
            "192.0.2.10",
            "1.2.3.4",
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1.2.3.04",
            "1..2.3",
            ".1.2.3",
            "1.2.3.",
            "1.2.3.4a",
            "1234.1.1.1",
            "1.2.3.0000",
            "",
            "...",
            "1.2.3.-4",
            "0.0.0.00",
        ] {
            assert_eq!(parse_ipv4(s.as_bytes()), std_parse(s.as_bytes()), "{s:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn ipv4_agrees_with_std(s in proptest::collection::vec(
            proptest::sample::select(b"0123456789.a".to_vec()), 0..20)) {
            proptest::prop_assert_eq!(parse_ipv4(&s), std_parse(&s));
        }

        #[test]
        fn every_address_round_trips(o in proptest::array::uniform4(0u8..=255)) {
            let a = Ipv4Addr::from(o);
            proptest::prop_assert_eq!(parse_ipv4(a.to_string().as_bytes()), Some(a));
        }
    }
}
