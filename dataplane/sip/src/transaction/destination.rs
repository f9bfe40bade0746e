//! Where responses go (RFC 3261 §18.2.2 with RFC 3581 `rport`), the
//! `received`/`rport` stamping a server transport applies to a request's
//! top Via (§18.2.1, RFC 3581 §4), and [`Peer`], a ready-made transport
//! address that follows both.

use std::net::{IpAddr, SocketAddr};

use bytes::{BufMut, BytesMut};

use super::Address;
use crate::error::ValueError;
use crate::header::{Header, Headers, KnownHeader, Rport, Transport, Via};
use crate::params::{ParamKind, Params, split_list};
use crate::uri::Host;

/// Where to send a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseRoute {
    /// Back over the connection the request arrived on (reliable
    /// transports; if it has closed, open one to this address).
    Connection(SocketAddr),
    /// A datagram to this address.
    Datagram(SocketAddr),
    /// Multicast to `maddr` (resolved per RFC 3263 §5 if a name).
    Multicast { host: Host, port: u16, ttl: u8 },
}

fn default_port(transport: &Transport) -> u16 {
    match transport {
        Transport::Tls | Transport::TlsSctp | Transport::Wss => 5061,
        _ => 5060,
    }
}

/// Where the response to a request goes, from its top Via and the packet's
/// source (§18.2.2, RFC 3581 §4):
///
/// * reliable transport: back over the same connection;
/// * `maddr`: multicast to it, on the sent-by port (or the default);
/// * `rport`: to the source address and port, which is what `received` and
///   the filled-in `rport` record (this is what gets through NATs);
/// * otherwise: to `received` (or the source address, which `received`
///   would record) on the sent-by port, or the transport's default port.
pub fn response_destination(top_via: &Via, source: SocketAddr, reliable: bool) -> ResponseRoute {
    if reliable {
        return ResponseRoute::Connection(source);
    }
    let port = top_via
        .port
        .unwrap_or_else(|| default_port(&top_via.transport));
    if let Some(maddr) = &top_via.maddr {
        return ResponseRoute::Multicast {
            host: maddr.clone(),
            port,
            ttl: top_via.ttl.unwrap_or(1),
        };
    }
    if top_via.rport.is_some() {
        return ResponseRoute::Datagram(source);
    }
    let ip = top_via.received.unwrap_or(source.ip());
    ResponseRoute::Datagram(SocketAddr::new(ip, port))
}

/// Adds `received` (and fills in a requested `rport`) on the top Via of a
/// received request, as a server transport must (§18.2.1, RFC 3581 §4):
/// `received` when the sent-by host is a name or differs from the source
/// address, or whenever `rport` was requested. Returns whether anything
/// changed.
pub fn stamp_received(headers: &mut Headers, source: SocketAddr) -> Result<bool, ValueError> {
    let index = headers
        .iter()
        .position(|h| h.name().known() == Some(KnownHeader::Via))
        .ok_or(ValueError::Missing)?;
    let line = headers
        .iter()
        .nth(index)
        .map(|h| h.value().clone())
        .ok_or(ValueError::Missing)?;
    let first = split_list(&line).next().ok_or(ValueError::Malformed)?;
    let mut via = Via::parse(&line, first, headers.limits())?;
    let sent_by_is_source = matches!(
        (&via.host, source.ip()),
        (Host::V4(a), IpAddr::V4(b)) if *a == b
    ) || matches!(
        (&via.host, source.ip()),
        (Host::V6(a), IpAddr::V6(b)) if *a == b
    );
    let fill_rport = via.rport == Some(Rport::Requested);
    if sent_by_is_source && !fill_rport {
        return Ok(false);
    }
    let mut raw = BytesMut::new();
    for p in via.params.iter() {
        if p.name.eq_ignore_ascii_case(b"received") {
            continue;
        }
        raw.put_u8(b';');
        raw.put_slice(p.name);
        if p.name.eq_ignore_ascii_case(b"rport") && fill_rport {
            raw.put_slice(format!("={}", source.port()).as_bytes());
        } else if let Some(v) = p.value {
            raw.put_u8(b'=');
            raw.put_slice(v);
        }
    }
    raw.put_slice(b";received=");
    raw.put_slice(source.ip().to_string().as_bytes());
    via.params = Params::parse(raw.freeze(), ParamKind::Header, headers.limits())?;
    let mut value = BytesMut::new();
    via.render(&mut value);
    // Keep the other values of a comma-joined Via line as they were.
    let rest_start = first.as_ptr() as usize - line.as_ptr() as usize + first.len();
    if let Some(rest) = line.get(rest_start..).filter(|r| !r.is_empty()) {
        value.put_slice(rest);
    }
    let new = Header::new(KnownHeader::Via, value.freeze())?;
    let mut i = 0;
    headers.retain(|_| {
        i += 1;
        i != index + 1
    });
    headers.insert(index, new);
    Ok(true)
}

/// A transport address: the transport and the peer's socket address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl Peer {
    pub fn udp(addr: SocketAddr) -> Self {
        Self {
            transport: Transport::Udp,
            addr,
        }
    }

    pub fn tcp(addr: SocketAddr) -> Self {
        Self {
            transport: Transport::Tcp,
            addr,
        }
    }
}

impl Address for Peer {
    fn is_reliable(&self) -> bool {
        !self.transport.is_datagram()
    }

    /// Follows [`response_destination`]; a multicast `maddr` is not
    /// served (a carrier switch never answers multicast requests) and
    /// falls back to the unicast source.
    fn respond_to(&self, top_via: &Via) -> Self {
        match response_destination(top_via, self.addr, self.is_reliable()) {
            ResponseRoute::Connection(addr) | ResponseRoute::Datagram(addr) => Self {
                transport: self.transport.clone(),
                addr,
            },
            ResponseRoute::Multicast { .. } => self.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn via(s: &'static str) -> Via {
        Via::from_bytes(s).unwrap()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn responses_follow_18_2_2_and_rfc3581() {
        let src = sa("192.0.2.7:40000");
        let route = |v, reliable| response_destination(&via(v), src, reliable);
        assert_eq!(
            route("SIP/2.0/TCP a.example.com;branch=z9hG4bK1", true),
            ResponseRoute::Connection(src)
        );
        assert_eq!(
            route("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;rport", false),
            ResponseRoute::Datagram(src)
        );
        assert_eq!(
            route(
                "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;received=192.0.2.7",
                false
            ),
            ResponseRoute::Datagram(sa("192.0.2.7:5070"))
        );
        assert_eq!(
            route("SIP/2.0/UDP a.example.com;branch=z9hG4bK1", false),
            ResponseRoute::Datagram(sa("192.0.2.7:5060"))
        );
        assert_eq!(
            route(
                "SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK1;maddr=239.1.1.1;ttl=4",
                false
            ),
            ResponseRoute::Multicast {
                host: Host::V4("239.1.1.1".parse().unwrap()),
                port: 5060,
                ttl: 4
            }
        );
        let peer = Peer::udp(src);
        assert_eq!(
            peer.respond_to(&via("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1"))
                .addr,
            sa("192.0.2.7:5070")
        );
        assert!(Peer::tcp(src).is_reliable() && !peer.is_reliable());
    }

    fn headers(vias: &[&'static str]) -> Headers {
        let mut h = Headers::new();
        for v in vias {
            h.push(Header::new(KnownHeader::Via, *v).unwrap());
        }
        h.push(Header::new(KnownHeader::CallId, "x").unwrap());
        h
    }

    #[test]
    fn stamping_adds_received_and_fills_rport() {
        let src = sa("192.0.2.7:40000");
        let mut h = headers(&["SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1"]);
        assert_eq!(stamp_received(&mut h, src), Ok(false));
        let mut h = headers(&[
            "SIP/2.0/UDP pc.example.com;rport;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2",
            "SIP/2.0/UDP c;branch=z9hG4bK3",
        ]);
        assert_eq!(stamp_received(&mut h, src), Ok(true));
        let top = h.top_via().unwrap();
        assert_eq!(top.rport, Some(Rport::Port(40000)));
        assert_eq!(top.received, Some(src.ip()));
        assert_eq!(top.branch.as_deref(), Some(&b"z9hG4bK1"[..]));
        assert_eq!(h.via_count(), 3);
        assert_eq!(
            h.vias().unwrap()[1].branch.as_deref(),
            Some(&b"z9hG4bK2"[..])
        );
        // Stamping twice replaces `received` instead of repeating it.
        assert_eq!(stamp_received(&mut h, sa("198.51.100.1:1")), Ok(true));
        assert_eq!(
            h.top_via().unwrap().received,
            Some(sa("198.51.100.1:1").ip())
        );
        assert_eq!(
            stamp_received(&mut Headers::new(), src),
            Err(ValueError::Missing)
        );
    }
}
