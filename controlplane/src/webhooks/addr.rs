//! Which IP addresses a webhook may never reach, and CIDR blocks for the
//! operator's exceptions (`CODEB_WEBHOOK_ALLOW`).
//!
//! The table follows the IANA special-purpose address registries: anything
//! that is not ordinary public unicast is refused. IPv6 forms that carry an
//! IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`,
//! 6to4 `2002:aabb:ccdd::`) are judged by the IPv4 address inside, so
//! `[::ffff:127.0.0.1]` is loopback like `127.0.0.1`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 or IPv6 network, `addr/prefix` (a bare address is a /32 or
/// /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpNet> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(net.to_bits()) << 96,
                u128::from(ip.to_bits()) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(net.to_bits(), ip.to_bits(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - u32::from(prefix));
    a & mask == b & mask
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<IpNet, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("'{s}' is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("'{s}' has a bad prefix length (0-{max})"))?,
        };
        IpNet::new(addr, prefix).ok_or_else(|| format!("'{s}' is not a CIDR block"))
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The address a socket really talks to: an IPv4-mapped IPv6 address is
/// its IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8, what: &'static str) -> (u32, u8, &'static str) {
    (u32::from_be_bytes([a, b, c, d]), prefix, what)
}

/// IANA IPv4 special-purpose blocks that are not public unicast.
const V4_TABLE: &[(u32, u8, &str)] = &[
    v4(0, 0, 0, 0, 8, "unspecified (this network)"),
    v4(10, 0, 0, 0, 8, "private"),
    v4(100, 64, 0, 0, 10, "CGNAT (shared address space)"),
    v4(127, 0, 0, 0, 8, "loopback"),
    v4(169, 254, 0, 0, 16, "link-local"),
    v4(172, 16, 0, 0, 12, "private"),
    v4(192, 0, 0, 0, 24, "reserved (IETF protocol assignments)"),
    v4(192, 0, 2, 0, 24, "documentation"),
    v4(192, 88, 99, 0, 24, "reserved (6to4 relay anycast)"),
    v4(192, 168, 0, 0, 16, "private"),
    v4(198, 18, 0, 0, 15, "reserved (benchmarking)"),
    v4(198, 51, 100, 0, 24, "documentation"),
    v4(203, 0, 113, 0, 24, "documentation"),
    v4(224, 0, 0, 0, 4, "multicast"),
    v4(240, 0, 0, 0, 4, "reserved"),
];

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let bits = ip.to_bits();
    V4_TABLE.iter().find_map(|(net, prefix, what)| {
        let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
        (bits & mask == *net).then_some(*what)
    })
}

fn in6(ip: Ipv6Addr, net: [u16; 8], prefix: u8) -> bool {
    prefix_eq(Ipv6Addr::from(net).to_bits(), ip.to_bits(), prefix)
}

/// "a loopback address", "an unspecified (this network) address".
fn phrase(what: &str) -> String {
    let article = if what.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {what} address")
}

/// Why `ip` must not be reached ("a loopback address", "the NAT64 form
/// of 10.0.0.1, a private address"), or None for public unicast.
pub fn forbidden(ip: IpAddr) -> Option<String> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4).map(phrase),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v6_reason(ip: Ipv6Addr) -> Option<String> {
    let embedded = |form: &str, v4: Ipv4Addr| {
        v4_reason(v4).map(|what| format!("the {form} form of {v4}, {}", phrase(what)))
    };
    if ip.is_unspecified() {
        return Some(phrase("unspecified"));
    }
    if ip.is_loopback() {
        return Some(phrase("loopback"));
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return embedded("IPv4-mapped", v4);
    }
    let o = ip.octets();
    // NAT64 well-known prefix: the last 32 bits are the IPv4 address.
    if in6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96) {
        return embedded("NAT64", Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    // 6to4: bits 16..48 are the IPv4 address of the site.
    if in6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        return embedded("6to4", Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    let table: &[([u16; 8], u8, &str)] = &[
        (
            [0x64, 0xff9b, 1, 0, 0, 0, 0, 0],
            48,
            "private (local-use NAT64)",
        ),
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "documentation"),
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "documentation"),
        (
            [0x2001, 0, 0, 0, 0, 0, 0, 0],
            23,
            "reserved (IETF protocol assignments, Teredo)",
        ),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "private (unique local)"),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local"),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "private (site-local)"),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast"),
    ];
    if let Some((_, _, what)) = table.iter().find(|(net, p, _)| in6(ip, *net, *p)) {
        return Some(phrase(what));
    }
    // Global unicast is 2000::/3; everything else (IPv4-compatible ::/96,
    // discard-only 100::/64, unassigned space) is not a receiver.
    if !in6(ip, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3) {
        return Some(phrase("reserved"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(s: &str) -> Option<String> {
        forbidden(s.parse().unwrap())
    }

    #[test]
    fn the_table() {
        let refused = [
            ("0.0.0.0", "an unspecified (this network) address"),
            ("0.1.2.3", "unspecified"),
            ("10.1.2.3", "private"),
            ("100.64.0.1", "CGNAT"),
            ("100.127.255.254", "CGNAT"),
            ("127.0.0.1", "loopback"),
            ("127.255.255.255", "loopback"),
            ("169.254.169.254", "link-local"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.0.0.8", "reserved"),
            ("192.0.2.10", "documentation"),
            ("192.88.99.1", "reserved"),
            ("192.168.1.1", "private"),
            ("198.18.0.1", "reserved"),
            ("198.19.255.255", "reserved"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.42", "documentation"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "reserved"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            (
                "::ffff:127.0.0.1",
                "the IPv4-mapped form of 127.0.0.1, a loopback address",
            ),
            (
                "::ffff:10.0.0.1",
                "IPv4-mapped form of 10.0.0.1, a private address",
            ),
            ("::ffff:169.254.169.254", "link-local"),
            (
                "64:ff9b::7f00:1",
                "the NAT64 form of 127.0.0.1, a loopback address",
            ),
            ("64:ff9b::a9fe:a9fe", "NAT64 form of 169.254.169.254"),
            ("64:ff9b:1::1", "local-use NAT64"),
            ("2002:7f00:1::1", "6to4 form of 127.0.0.1"),
            ("2002:c0a8:101::1", "6to4 form of 192.168.1.1"),
            ("::127.0.0.1", "reserved"),
            ("100::1", "reserved"),
            ("2001::1", "Teredo"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("fc00::1", "unique local"),
            ("fd12:3456::1", "unique local"),
            ("fe80::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("5f00::1", "reserved"),
        ];
        for (ip, want) in refused {
            let got = why(ip).unwrap_or_else(|| panic!("{ip} must be refused"));
            assert!(got.contains(want), "{ip}: {got} (wanted {want})");
        }
        for ok in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "198.17.255.255",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(why(ok), None, "{ok} is public");
        }
    }

    #[test]
    fn cidr_blocks() {
        let n: IpNet = "127.0.0.0/8".parse().unwrap();
        assert!(n.contains("127.9.9.9".parse().unwrap()));
        assert!(!n.contains("128.0.0.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let h: IpNet = "10.0.0.5".parse().unwrap();
        assert_eq!(h.to_string(), "10.0.0.5/32");
        assert!(h.contains("10.0.0.5".parse().unwrap()));
        assert!(!h.contains("10.0.0.6".parse().unwrap()));
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe12::1".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "banana",
            "10.0.0.0/x",
            "10.0.0/8",
            "",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
        assert_eq!(
            canonical("::ffff:127.0.0.1".parse().unwrap()),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            canonical("::1".parse().unwrap()),
            "::1".parse::<IpAddr>().unwrap()
        );
    }
}
