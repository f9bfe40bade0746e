//! Differential test against rsip 0.4 (a dev-dependency oracle only): on
//! messages both parsers accept, the start line, Call-ID, CSeq, header line
//! count and body must agree. rsip is lenient and dormant, so where it
//! rejects a message we accept, that is not a finding; where both accept
//! and disagree, the test fails unless the case is listed with its cause.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use bytes::Bytes;
use codeb_sip::{CSeq, KnownHeader, Limits, Message, Method, parse_datagram};
use rsip::prelude::{HeadersExt, ToTypedHeader, UntypedHeader};

/// What both parsers say about one message, as comparable text.
#[derive(Debug, PartialEq, Eq)]
struct Summary {
    start: String,
    call_id: Option<String>,
    cseq: Option<(u32, String)>,
    header_lines: usize,
    body: Vec<u8>,
}

fn ours(m: &Message) -> Summary {
    let start = match m {
        Message::Request(r) => format!(
            "{} {}",
            r.method,
            String::from_utf8_lossy(&r.uri.to_bytes())
        )
        .to_ascii_lowercase(),
        Message::Response(r) => r.status.to_string(),
    };
    let h = m.headers();
    Summary {
        start,
        // First lines, not the validated single values: repeats (RFC 4475
        // `multi01`) are for the validator to refuse, not a parse difference.
        call_id: h
            .get(KnownHeader::CallId)
            .map(|c| String::from_utf8_lossy(c).into_owned()),
        cseq: h
            .get(KnownHeader::CSeq)
            .and_then(|c| CSeq::parse(c, c).ok())
            .map(|c| (c.seq, c.method.to_string())),
        header_lines: h.len(),
        body: m.body().to_vec(),
    }
}

fn theirs(m: &rsip::SipMessage) -> Summary {
    let start = match m {
        // rsip prints some URI parameter values in upper case; they
        // compare case-insensitively anyway (RFC 3261 §19.1.4).
        rsip::SipMessage::Request(r) => format!("{} {}", r.method, r.uri).to_ascii_lowercase(),
        rsip::SipMessage::Response(r) => r.status_code.code().to_string(),
    };
    Summary {
        start,
        call_id: m
            .call_id_header()
            .ok()
            .map(|c| c.value().trim().to_string()),
        cseq: m
            .cseq_header()
            .ok()
            .and_then(|c| c.typed().ok())
            .map(|c| (c.seq, c.method.to_string())),
        header_lines: match m {
            rsip::SipMessage::Request(r) => r.headers.iter().count(),
            rsip::SipMessage::Response(r) => r.headers.iter().count(),
        },
        body: m.body().clone(),
    }
}

/// Both parsers' view, or `None` when rsip refuses the message.
fn compare(bytes: &Bytes) -> Option<(Summary, Summary)> {
    let ours = parse_datagram(bytes.clone(), &Limits::default()).ok()?;
    let theirs_msg = rsip::SipMessage::try_from(&bytes[..]).ok()?;
    Some((self::ours(&ours), theirs(&theirs_msg)))
}

/// Messages every SIP parser should read the same way: canonical
/// requests and responses as our builder prints them.
fn canonical() -> Vec<Bytes> {
    let mut out = Vec::new();
    for (method, cseq_method) in [
        (Method::Invite, "INVITE"),
        (Method::Register, "REGISTER"),
        (Method::Bye, "BYE"),
    ] {
        for body in [&b""[..], b"v=0\r\n"] {
            let mut req = codeb_sip::RequestBuilder::new(
                method.clone(),
                codeb_sip::Uri::parse("sip:bob@example.com:5070;transport=udp").unwrap(),
            )
            .header(
                codeb_sip::KnownHeader::Via,
                "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKdiff1;rport",
            )
            .max_forwards(70)
            .header(
                codeb_sip::KnownHeader::From,
                "\"Alice\" <sip:alice@example.com>;tag=88sja8x",
            )
            .header(codeb_sip::KnownHeader::To, "<sip:bob@example.com>")
            .call_id("diff-1@192.0.2.1")
            .cseq(4711)
            .header(
                codeb_sip::KnownHeader::Contact,
                "<sip:alice@192.0.2.1:5060>",
            );
            if !body.is_empty() {
                req = req.body(
                    &codeb_sip::MediaType::from_bytes("application/sdp").unwrap(),
                    Bytes::copy_from_slice(body),
                );
            }
            let req = req.build().unwrap();
            assert_eq!(req.headers.cseq().unwrap().method.to_string(), cseq_method);
            let resp = req
                .reply(codeb_sip::StatusCode::OK, Some(b"t0"))
                .build()
                .unwrap();
            out.push(Message::Request(req).to_bytes());
            out.push(Message::Response(resp).to_bytes());
        }
    }
    out
}

#[test]
fn canonical_messages_agree_with_rsip() {
    for bytes in canonical() {
        let (ours, theirs) = compare(&bytes)
            .unwrap_or_else(|| panic!("rsip refused {:?}", String::from_utf8_lossy(&bytes)));
        assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(&bytes));
    }
}

/// Torture messages where both parse but rsip reads them differently, with
/// the reason (always an rsip shortcoming, checked by hand).
const KNOWN_RSIP_DIFFERENCES: &[(&str, &str)] = &[(
    "dblreq",
    "rsip ignores Content-Length on a datagram (keeps the second request as body, RFC 3261 §18.3 says discard) \
     and does not map the compact form `I:` to Call-ID",
)];

#[test]
fn torture_messages_agree_with_rsip_where_both_parse() {
    let mut both = 0;
    let mut differences = Vec::new();
    for dir in ["rfc4475", "rfc5118/wire"] {
        let ext = if dir == "rfc4475" { "dat" } else { "sip" };
        for (name, bytes) in common::files(dir, ext) {
            let Some((ours, theirs)) = compare(&bytes) else {
                continue;
            };
            both += 1;
            if ours != theirs && !KNOWN_RSIP_DIFFERENCES.iter().any(|(n, _)| *n == name) {
                differences.push(format!("{name}:\n  ours:   {ours:?}\n  theirs: {theirs:?}"));
            }
        }
    }
    eprintln!("rsip and codeb-sip both parsed {both} corpus messages");
    assert!(
        both >= 10,
        "rsip parsed only {both} corpus messages; the comparison would be vacuous"
    );
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}
