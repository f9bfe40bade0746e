//! Parse and print cost of the messages a call is made of (INVITE with SDP,
//! 200 with SDP, ACK, BYE), with the typed views a B2BUA reads.
//!
//! cargo bench -p codeb-benches --bench sip_messages

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use codeb_sip::{Limits, parse_datagram};
use criterion::{Criterion, criterion_group, criterion_main};

// Each sample is its head (without Content-Length) and body; the
// Content-Length is computed when the message is assembled, so a body
// edit cannot leave a wrong length behind (which would make the parser
// cut the body, or refuse the message as truncated).
const INVITE_HEAD: &str = "INVITE sip:+15551234567@192.0.2.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK776asdhds;rport\r\nMax-Forwards: 70\r\nTo: <sip:+15551234567@192.0.2.10>\r\nFrom: \"Alice\" <sip:+15559876543@203.0.113.5>;tag=1928301774\r\nCall-ID: a84b4c76e66710@203.0.113.5\r\nCSeq: 314159 INVITE\r\nContact: <sip:alice@203.0.113.5:5060>\r\nAllow: INVITE, ACK, CANCEL, OPTIONS, BYE\r\nSupported: timer\r\nSession-Expires: 1800\r\nUser-Agent: Carrier-GW/1.0\r\nContent-Type: application/sdp\r\n";
const INVITE_SDP: &str = "v=0\r\no=alice 2890844526 2890844526 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n";
const OK_HEAD: &str = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK776asdhds;rport=5060;received=203.0.113.5\r\nTo: <sip:+15551234567@192.0.2.10>;tag=a6c85cf\r\nFrom: \"Alice\" <sip:+15559876543@203.0.113.5>;tag=1928301774\r\nCall-ID: a84b4c76e66710@203.0.113.5\r\nCSeq: 314159 INVITE\r\nContact: <sip:codeb@192.0.2.10:5060>\r\nContent-Type: application/sdp\r\n";
const OK_SDP: &str = "v=0\r\no=codeb 1 1 IN IP4 192.0.2.10\r\ns=codeb\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\na=ptime:20\r\n";
const ACK_HEAD: &str = "ACK sip:codeb@192.0.2.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKnashds8\r\nMax-Forwards: 70\r\nTo: <sip:+15551234567@192.0.2.10>;tag=a6c85cf\r\nFrom: \"Alice\" <sip:+15559876543@203.0.113.5>;tag=1928301774\r\nCall-ID: a84b4c76e66710@203.0.113.5\r\nCSeq: 314159 ACK\r\n";
const BYE_HEAD: &str = "BYE sip:codeb@192.0.2.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKnashds9\r\nMax-Forwards: 70\r\nTo: <sip:+15551234567@192.0.2.10>;tag=a6c85cf\r\nFrom: \"Alice\" <sip:+15559876543@203.0.113.5>;tag=1928301774\r\nCall-ID: a84b4c76e66710@203.0.113.5\r\nCSeq: 314160 BYE\r\n";

/// A sample's datagram: head, the computed Content-Length, the body.
fn datagram(head: &str, body: &str) -> Bytes {
    Bytes::from(format!(
        "{head}Content-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    for (name, head, body) in [
        ("INVITE", INVITE_HEAD, INVITE_SDP),
        ("200", OK_HEAD, OK_SDP),
        ("ACK", ACK_HEAD, ""),
        ("BYE", BYE_HEAD, ""),
    ] {
        let wire = datagram(head, body);
        let parsed = parse_datagram(wire.clone(), &limits).expect("the sample parses");
        assert_eq!(parsed.body(), body.as_bytes(), "{name}: the whole body");
        c.bench_function(&format!("parse {name}"), |b| {
            b.iter(|| parse_datagram(std::hint::black_box(wire.clone()), &limits).unwrap())
        });
        c.bench_function(&format!("parse {name} + B2BUA views"), |b| {
            b.iter(|| {
                let m = parse_datagram(std::hint::black_box(wire.clone()), &limits).unwrap();
                let h = m.headers();
                (
                    h.top_via().unwrap(),
                    h.from().unwrap(),
                    h.to().unwrap(),
                    h.call_id().unwrap(),
                    h.cseq().unwrap(),
                )
            })
        });
        let msg = parse_datagram(wire.clone(), &limits).unwrap();
        c.bench_function(&format!("print {name}"), |b| {
            b.iter(|| {
                let mut out = BytesMut::with_capacity(1024);
                std::hint::black_box(&msg).write_to(&mut out);
                out
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
