//! The Via header value (RFC 3261 §20.42, §18.2.1; RFC 3581 rport; RFC 5118
//! §4.5 for IPv6 `received`).
//!
//! The parameters the transaction and transport layers act on are
//! extracted and checked once: branch, received, rport, maddr, ttl. All
//! parameters, those included, stay in [`Via::params`] in wire order.

use std::net::IpAddr;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ValueError;
use crate::limits::Limits;
use crate::params::{ParamKind, Params};
use crate::syntax::{Cursor, is_ws, parse_bounded, parse_port};
use crate::uri::{Host, split_hostport};

/// The RFC 3261 branch prefix ("magic cookie", §8.1.1.7).
pub const BRANCH_MAGIC_COOKIE: &[u8] = b"z9hG4bK";

/// The transport of a Via `sent-protocol`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Sctp,
    TlsSctp,
    Ws,
    Wss,
    /// Any other token (RFC 4475 `transports` has `UNKNOWN`).
    Other(Bytes),
}

impl Transport {
    fn from_token(owner: &Bytes, t: &[u8]) -> Self {
        const KNOWN: [(&[u8], Transport); 7] = [
            (b"UDP", Transport::Udp),
            (b"TCP", Transport::Tcp),
            (b"TLS", Transport::Tls),
            (b"SCTP", Transport::Sctp),
            (b"TLS-SCTP", Transport::TlsSctp),
            (b"WS", Transport::Ws),
            (b"WSS", Transport::Wss),
        ];
        KNOWN
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(t))
            .map_or_else(|| Self::Other(owner.slice_ref(t)), |(_, tr)| tr.clone())
    }

    /// Canonical spelling.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Udp => b"UDP",
            Self::Tcp => b"TCP",
            Self::Tls => b"TLS",
            Self::Sctp => b"SCTP",
            Self::TlsSctp => b"TLS-SCTP",
            Self::Ws => b"WS",
            Self::Wss => b"WSS",
            Self::Other(b) => b,
        }
    }

    /// `true` for transports that keep message boundaries themselves.
    pub fn is_datagram(&self) -> bool {
        matches!(self, Self::Udp)
    }
}

/// The `rport` parameter (RFC 3581).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rport {
    /// `;rport` without value: the client asks to have it filled in.
    Requested,
    /// `;rport=5060`, as filled in by a server.
    Port(u16),
}

/// One Via value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// protocol-name, normally `SIP`.
    pub protocol: Bytes,
    /// protocol-version, normally `2.0`.
    pub version: Bytes,
    pub transport: Transport,
    /// sent-by host.
    pub host: Host,
    /// sent-by port.
    pub port: Option<u16>,
    pub branch: Option<Bytes>,
    pub received: Option<IpAddr>,
    pub rport: Option<Rport>,
    pub maddr: Option<Host>,
    pub ttl: Option<u8>,
    /// Every parameter in wire order, the ones above included.
    pub params: Params,
}

fn parse_received(v: &[u8]) -> Result<IpAddr, ValueError> {
    // RFC 3261's grammar says IPv4address / IPv6address; RFC 5118 §4.5 shows
    // senders that bracket the IPv6 form, and both are accepted.
    let bare = v
        .strip_prefix(b"[")
        .and_then(|s| s.strip_suffix(b"]"))
        .unwrap_or(v);
    std::str::from_utf8(bare)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ValueError::Malformed)
}

impl Via {
    /// Parses one Via value (one element of a comma-separated Via line).
    pub fn parse(owner: &Bytes, s: &[u8], limits: &Limits) -> Result<Self, ValueError> {
        let mut c = Cursor::new(s);
        c.skip_ws();
        let protocol = c.token()?;
        if !c.eat_separator(b'/') {
            return Err(ValueError::Malformed);
        }
        let version = c.token()?;
        if !c.eat_separator(b'/') {
            return Err(ValueError::Malformed);
        }
        let transport = Transport::from_token(owner, c.token()?);
        if !c.skip_ws() {
            return Err(ValueError::Malformed);
        }
        // sent-by = host [ COLON port ], with SWS allowed around the colon.
        let host_part = if c.peek() == Some(b'[') {
            let start = c.pos();
            c.take_while(|b| b != b']');
            if !c.eat(b']') {
                return Err(ValueError::Malformed);
            }
            s.get(start..c.pos()).unwrap_or_default()
        } else {
            c.take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        };
        let (host_only, _) = split_hostport(host_part)?;
        let host = Host::parse(owner, host_only)?;
        let port = if c.eat_separator(b':') {
            Some(parse_port(c.take_while(|b| b.is_ascii_digit()))?)
        } else {
            None
        };
        let rest = c.rest();
        if rest.first().is_some_and(|&b| !is_ws(b) && b != b';') {
            return Err(ValueError::Malformed);
        }
        let params = Params::parse(owner.slice_ref(rest), ParamKind::Header, limits)?;
        let mut via = Self {
            protocol: owner.slice_ref(protocol),
            version: owner.slice_ref(version),
            transport,
            host,
            port,
            branch: None,
            received: None,
            rport: None,
            maddr: None,
            ttl: None,
            params: Params::empty(),
        };
        for p in params.iter() {
            let name = p.name;
            if name.eq_ignore_ascii_case(b"branch") {
                let v = p.value.ok_or(ValueError::Malformed)?;
                if v.len() > limits.max_ident_len {
                    return Err(ValueError::TooLong);
                }
                via.branch = Some(params.as_bytes().slice_ref(v));
            } else if name.eq_ignore_ascii_case(b"received") {
                via.received = Some(parse_received(p.value.ok_or(ValueError::Malformed)?)?);
            } else if name.eq_ignore_ascii_case(b"rport") {
                via.rport = Some(match p.value {
                    None => Rport::Requested,
                    Some(v) => Rport::Port(parse_port(v)?),
                });
            } else if name.eq_ignore_ascii_case(b"maddr") {
                via.maddr = Some(Host::parse(
                    params.as_bytes(),
                    p.value.ok_or(ValueError::Malformed)?,
                )?);
            } else if name.eq_ignore_ascii_case(b"ttl") {
                let v = p
                    .value
                    .filter(|v| v.len() <= 3)
                    .ok_or(ValueError::Malformed)?;
                via.ttl =
                    Some(u8::try_from(parse_bounded(v, 255)?).map_err(|_| ValueError::OutOfRange)?);
            }
        }
        via.params = params;
        Ok(via)
    }

    /// Parses a Via from its own bytes with the default limits.
    pub fn from_bytes(b: impl Into<Bytes>) -> Result<Self, ValueError> {
        let b = b.into();
        Self::parse(&b, &b, &Limits::default())
    }

    /// Builds `SIP/2.0/<transport> <host>[:port];branch=<branch>` (plus
    /// `;rport` when asked), validated like a received value.
    pub fn new(
        transport: &Transport,
        host: &Host,
        port: Option<u16>,
        branch: &[u8],
        rport: bool,
    ) -> Result<Self, ValueError> {
        let mut out = BytesMut::new();
        out.put_slice(b"SIP/2.0/");
        out.put_slice(transport.as_bytes());
        out.put_u8(b' ');
        host.render(&mut out);
        if let Some(p) = port {
            out.put_slice(format!(":{p}").as_bytes());
        }
        out.put_slice(b";branch=");
        out.put_slice(branch);
        if rport {
            out.put_slice(b";rport");
        }
        Self::from_bytes(out.freeze())
    }

    /// `true` when the branch carries the RFC 3261 magic cookie.
    pub fn is_rfc3261_branch(&self) -> bool {
        self.branch
            .as_deref()
            .is_some_and(|b| b.starts_with(BRANCH_MAGIC_COOKIE))
    }

    /// Writes the value in canonical form (single spaces, no folding).
    pub fn render(&self, out: &mut BytesMut) {
        out.put_slice(&self.protocol);
        out.put_u8(b'/');
        out.put_slice(&self.version);
        out.put_u8(b'/');
        out.put_slice(self.transport.as_bytes());
        out.put_u8(b' ');
        self.host.render(out);
        if let Some(p) = self.port {
            out.put_slice(format!(":{p}").as_bytes());
        }
        out.put_slice(self.params.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn via(s: &'static str) -> Result<Via, ValueError> {
        Via::from_bytes(s)
    }

    #[test]
    fn extracts_transaction_and_transport_params() {
        let v = via("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d87543-1--d87543-;rport;received=192.0.2.1;maddr=224.2.0.1;ttl=16").unwrap();
        assert_eq!(v.transport, Transport::Udp);
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.branch.as_deref(), Some(&b"z9hG4bK-d87543-1--d87543-"[..]));
        assert!(v.is_rfc3261_branch());
        assert_eq!(v.rport, Some(Rport::Requested));
        assert_eq!(v.received, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(v.maddr, Some(Host::V4("224.2.0.1".parse().unwrap())));
        assert_eq!(v.ttl, Some(16));
        assert_eq!(v.params.len(), 5);
        assert_eq!(
            via("SIP/2.0/TCP h;rport=5061").unwrap().rport,
            Some(Rport::Port(5061))
        );
    }

    #[test]
    fn tolerates_lws_everywhere_the_grammar_does() {
        let v = via("SIP  /   2.0 /UDP    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(&v.protocol[..], b"SIP");
        assert_eq!(&v.version[..], b"2.0");
        assert!(!v.is_rfc3261_branch());
        let v =
            via("SIP  / 2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8").unwrap();
        assert_eq!(v.transport, Transport::Tcp);
        assert_eq!(v.branch.as_deref(), Some(&b"z9hG4bK9ikj8"[..]));
        let v = via("SIP/2.0/UDP host.example.com : 5060").unwrap();
        assert_eq!(v.port, Some(5060));
    }

    #[test]
    fn ipv6_sent_by_and_received() {
        let v = via("SIP/2.0/UDP [::ffff:192.0.2.10]:19823;branch=z9hG4bKbh19").unwrap();
        assert_eq!(v.host, Host::V6("::ffff:192.0.2.10".parse().unwrap()));
        assert_eq!(v.port, Some(19823));
        let with = via("SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKas3")
            .unwrap();
        let without =
            via("SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3").unwrap();
        assert_eq!(with.received, Some("2001:db8::9:255".parse().unwrap()));
        assert_eq!(without.received, with.received);
    }

    #[test]
    fn rejects_malformed_vias() {
        for bad in [
            "SIP/2.0/UDP 192.0.2.15;;",
            ";",
            "",
            "SIP/2.0 host",
            "SIP/2.0/UDP",
            "SIP/2.0/UDPhost",
            "SIP/2.0/UDP host;branch",
            "SIP/2.0/UDP host;received=example.com",
            "SIP/2.0/UDP host;ttl=256",
            "SIP/2.0/UDP host;rport=x",
            "SIP/2.0/UDP host:99999",
            "SIP/2.0/UDP host junk",
            "SIP/2.0/UDP [::1",
            "SIP/2.0/UDP host;branch=a;branch=b",
        ] {
            assert!(via(bad).is_err(), "{bad:?}");
        }
        let long = format!("SIP/2.0/UDP h;branch={}", "b".repeat(300));
        assert_eq!(Via::from_bytes(long), Err(ValueError::TooLong));
    }

    #[test]
    fn builds_and_renders() {
        let v = Via::new(
            &Transport::Tcp,
            &Host::V6("2001:db8::1".parse().unwrap()),
            Some(5060),
            b"z9hG4bKabc",
            true,
        )
        .unwrap();
        let mut out = BytesMut::new();
        v.render(&mut out);
        assert_eq!(
            &out[..],
            b"SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bKabc;rport"
        );
        assert!(
            Via::new(
                &Transport::Udp,
                &Host::V4([127, 0, 0, 1].into()),
                None,
                b"bad branch",
                false
            )
            .is_err()
        );
    }
}
