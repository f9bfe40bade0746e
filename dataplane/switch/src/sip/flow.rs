//! Transport addresses as the SIP core sees them: a UDP peer on one of our
//! sockets, a TCP connection, or a TCP peer reached over whichever
//! connection the core has to it (opened on demand, RFC 3261 §18.1.1: how
//! TCP trunks and TCP user contacts are addressed, so a dialog outlives any
//! one connection). Responses go back over the flow a request came in on (RFC
//! 3581 `rport` behaviour for UDP, connection reuse for TCP, §18.2.2).

use std::net::{IpAddr, SocketAddr};

use codeb_io::{ConnId, SocketId};
use codeb_sip::transaction::Address;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flow {
    Udp {
        socket: SocketId,
        peer: SocketAddr,
    },
    Tcp {
        conn: ConnId,
        peer: SocketAddr,
    },
    /// TCP to `peer`: the core sends over its open connection to it, or
    /// has the IO loop open one and queues until it is up. Never handed to
    /// the IO loop (`Outgoing` always names a connection).
    TcpTo {
        peer: SocketAddr,
    },
}

impl Flow {
    pub fn peer(&self) -> SocketAddr {
        match self {
            Flow::Udp { peer, .. } | Flow::Tcp { peer, .. } | Flow::TcpTo { peer } => *peer,
        }
    }

    pub fn transport(&self) -> &'static str {
        match self {
            Flow::Udp { .. } => "UDP",
            Flow::Tcp { .. } | Flow::TcpTo { .. } => "TCP",
        }
    }
}

impl Address for Flow {
    fn is_reliable(&self) -> bool {
        matches!(self, Flow::Tcp { .. } | Flow::TcpTo { .. })
    }
}

/// Destinations we never send to, whatever a message asks (RFC 4475
/// `bcast`: a Via or Contact naming a broadcast address must not turn the
/// switch into an amplifier).
pub fn is_forbidden_destination(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(v4) => v4.is_broadcast() || v4.is_multicast() || v4.is_unspecified(),
        IpAddr::V6(v6) => v6.is_multicast() || v6.is_unspecified(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden() {
        for bad in [
            "255.255.255.255:5060",
            "224.0.0.1:5060",
            "0.0.0.0:5060",
            "[ff02::1]:5060",
        ] {
            assert!(is_forbidden_destination(&bad.parse().unwrap()), "{bad}");
        }
        for ok in ["127.0.0.1:5060", "192.0.2.10:5060", "[2001:db8::1]:5060"] {
            assert!(!is_forbidden_destination(&ok.parse().unwrap()), "{ok}");
        }
    }
}
