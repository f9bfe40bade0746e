//! RFC 5118 IPv6 torture messages (`shared/testdata/sip/rfc5118/wire`,
//! the send-ready copies; see its CHANGES.txt): the verdict §4 expects per
//! message, and the addresses read back.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::net::{IpAddr, Ipv6Addr};

use bytes::Bytes;
use codeb_sip::{Host, Limits, Message, ParseError, Problem, ValueError, Verdict, parse_datagram};
use common::{Outcome, UAS, files, outcome, screen};

fn parsed(b: &Bytes) -> Message {
    parse_datagram(b.clone(), &Limits::default()).expect("message should parse")
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn ruri_host(m: &Message) -> (Host, Option<u16>) {
    let uri = m.as_request().unwrap().uri.as_sip().unwrap();
    (uri.host.clone(), uri.port)
}

type Check = fn(&Bytes, &Verdict);

const CASES: &[(&str, &str, Outcome, Check)] = &[
    ("ipv6-good", "4.1", Outcome::Accept, |b, _| {
        assert_eq!(ruri_host(&parsed(b)), (Host::V6(v6("2001:db8::10")), None));
    }),
    // Unbracketed, "2001" is the host and "db8::10" a bad port.
    ("ipv6-bad", "4.2", Outcome::Reply(400), |_, v| {
        let Verdict::Reply { problem, .. } = v else {
            unreachable!()
        };
        assert_eq!(
            problem,
            &Problem::Unparsable(ParseError::BadRequestUri(ValueError::Malformed))
        );
    }),
    // Everything inside the brackets is the address; there is no port.
    ("port-ambiguous", "4.3", Outcome::Accept, |b, _| {
        assert_eq!(
            ruri_host(&parsed(b)),
            (Host::V6(v6("2001:db8::10:5070")), None)
        );
    }),
    ("port-unambiguous", "4.4", Outcome::Accept, |b, _| {
        assert_eq!(
            ruri_host(&parsed(b)),
            (Host::V6(v6("2001:db8::10")), Some(5070))
        );
    }),
    (
        "via-received-param-with-delim",
        "4.5",
        Outcome::Accept,
        |b, _| {
            let via = parsed(b).headers().top_via().unwrap();
            assert_eq!(via.host, Host::V6(v6("2001:db8::9:1")));
            assert_eq!(via.received, Some(IpAddr::V6(v6("2001:db8::9:255"))));
        },
    ),
    (
        "via-received-param-no-delim",
        "4.5",
        Outcome::Accept,
        |b, _| {
            let via = parsed(b).headers().top_via().unwrap();
            assert_eq!(via.received, Some(IpAddr::V6(v6("2001:db8::9:255"))));
        },
    ),
    ("ipv6-in-sdp", "4.6", Outcome::Accept, |b, _| {
        assert_eq!(parsed(b).body().len(), 251);
    }),
    ("mult-ip-in-header", "4.7", Outcome::Accept, |b, _| {
        let vias = parsed(b).headers().vias().unwrap();
        assert_eq!(vias.len(), 3);
        assert_eq!(
            (vias[0].host.clone(), vias[0].port),
            (Host::V6(v6("2001:db8::9:1")), Some(6050))
        );
        assert_eq!(vias[1].host, Host::V4([192, 0, 2, 1].into()));
        assert_eq!(vias[2].received, Some(IpAddr::V4([192, 0, 2, 200].into())));
    }),
    ("mult-ip-in-sdp", "4.8", Outcome::Accept, |b, _| {
        assert_eq!(parsed(b).body().len(), 189);
    }),
    ("ipv4-mapped-ipv6", "4.9", Outcome::Accept, |b, _| {
        let m = parsed(b);
        let via = m.headers().top_via().unwrap();
        assert_eq!(
            (via.host, via.port),
            (Host::V6(v6("::ffff:192.0.2.10")), Some(19823))
        );
        let contact = m.headers().contacts().unwrap().remove(0);
        assert_eq!(
            contact.addr().unwrap().uri.as_sip().unwrap().host,
            Host::V6(v6("::ffff:192.0.2.2"))
        );
    }),
    (
        "ipv6-bug-abnf-3-colons",
        "4.10",
        Outcome::Reply(400),
        |_, v| {
            let Verdict::Reply { problem, .. } = v else {
                unreachable!()
            };
            assert_eq!(
                problem,
                &Problem::Unparsable(ParseError::BadRequestUri(ValueError::Malformed))
            );
        },
    ),
    (
        "ipv6-correct-abnf-2-colons",
        "4.10",
        Outcome::Accept,
        |b, _| {
            let m = parsed(b);
            assert_eq!(ruri_host(&m).0, Host::V6(v6("2001:db8::192.0.2.1")));
            assert_eq!(
                m.headers().to().unwrap().uri.as_sip().unwrap().host,
                Host::V6(v6("2001:db8::192.0.2.1"))
            );
        },
    ),
];

#[test]
fn every_ipv6_torture_message_gets_the_rfc_verdict() {
    let corpus = files("rfc5118/wire", "sip");
    assert_eq!(corpus.len(), 12);
    let mut failures = Vec::new();
    for (name, bytes) in &corpus {
        let (_, section, expect, check) = CASES
            .iter()
            .find(|c| c.0 == name)
            .unwrap_or_else(|| panic!("no expectation for {name}"));
        let verdict = screen(bytes, &UAS);
        let got = outcome(&verdict);
        if got != *expect {
            failures.push(format!(
                "{name} (§{section}): expected {expect:?}, got {got:?} ({verdict:?})"
            ));
            continue;
        }
        check(bytes, &verdict);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
