use bytes::Bytes;

use super::*;
use crate::header::Transport;
use crate::uri::Host;
use crate::{Limits, Message, parse_datagram};

fn invite() -> Request {
    let via = Via::new(
        &Transport::Udp,
        &Host::from_bytes("pc33.atlanta.example.com").unwrap(),
        None,
        b"z9hG4bKnashds8",
        true,
    )
    .unwrap();
    RequestBuilder::new(
        Method::Invite,
        Uri::parse("sip:bob@biloxi.example.com").unwrap(),
    )
    .via(&via)
    .max_forwards(70)
    .from(&NameAddr::from_bytes("Alice <sip:alice@atlanta.example.com>;tag=1928301774").unwrap())
    .to(&NameAddr::from_bytes("Bob <sip:bob@biloxi.example.com>").unwrap())
    .call_id("a84b4c76e66710@pc33.atlanta.example.com")
    .cseq(314159)
    .contact(&NameAddr::from_bytes("<sip:alice@pc33.atlanta.example.com>").unwrap())
    .route(&NameAddr::from_bytes("<sip:proxy.example.com;lr>").unwrap())
    .body(
        &MediaType::from_bytes("application/sdp").unwrap(),
        Bytes::from_static(b"v=0\r\n"),
    )
    .build()
    .unwrap()
}

#[test]
fn built_requests_print_and_reparse() {
    let req = invite();
    let wire = Message::Request(req.clone()).to_bytes();
    let text = String::from_utf8(wire.to_vec()).unwrap();
    assert!(text.starts_with("INVITE sip:bob@biloxi.example.com SIP/2.0\r\nVia: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8;rport\r\n"));
    assert!(text.contains("\r\nCSeq: 314159 INVITE\r\n"));
    assert!(text.ends_with("Content-Length: 5\r\n\r\nv=0\r\n"));
    let back = parse_datagram(wire, &Limits::default()).unwrap();
    let back = back.as_request().unwrap();
    assert_eq!(back.headers.cseq().unwrap().seq, 314159);
    assert_eq!(back.headers.from().unwrap().tag(), Some(&b"1928301774"[..]));
    assert_eq!(back.headers.content_type().unwrap().unwrap().subtype, "sdp");
}

#[test]
fn builders_report_bad_input() {
    let uri = Uri::parse("sip:a@b").unwrap();
    assert!(
        RequestBuilder::new(Method::Bye, uri.clone())
            .call_id("has space")
            .build()
            .is_err()
    );
    assert!(
        RequestBuilder::new(Method::Bye, uri.clone())
            .header(KnownHeader::Subject, "a\r\nVia: x")
            .build()
            .is_err()
    );
    assert!(
        RequestBuilder::new(Method::Bye, uri)
            .header(KnownHeader::Subject, "fine")
            .build()
            .is_ok()
    );
    assert!(
        ResponseBuilder::new(StatusCode::OK)
            .reason("OK\r\nX: y")
            .build()
            .is_err()
    );
}

#[test]
fn reply_copies_dialog_headers_and_tags_to() {
    let req = invite();
    let ok = req.reply(StatusCode::OK, Some(b"a6c85cf")).build().unwrap();
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(&ok.reason[..], b"OK");
    assert_eq!(ok.headers.to().unwrap().tag(), Some(&b"a6c85cf"[..]));
    assert_eq!(
        ok.headers.call_id().unwrap(),
        req.headers.call_id().unwrap()
    );
    assert_eq!(ok.headers.cseq().unwrap(), req.headers.cseq().unwrap());
    assert_eq!(
        ok.headers.get(KnownHeader::Via),
        req.headers.get(KnownHeader::Via)
    );
    assert_eq!(
        ok.headers.get(KnownHeader::From),
        req.headers.get(KnownHeader::From)
    );
    assert_eq!(ok.headers.count(KnownHeader::Route), 0);

    let trying = req
        .reply(StatusCode::TRYING, Some(b"a6c85cf"))
        .build()
        .unwrap();
    assert_eq!(trying.headers.to().unwrap().tag(), None);
    assert!(req.reply(StatusCode::OK, Some(b"bad tag")).build().is_err());

    // A To that already has a tag keeps it.
    let mut in_dialog = req.clone();
    in_dialog.headers.remove(KnownHeader::To);
    in_dialog
        .headers
        .push(Header::new(KnownHeader::To, "<sip:bob@biloxi.example.com>;tag=xyz").unwrap());
    let r = in_dialog
        .reply(StatusCode::OK, Some(b"other"))
        .build()
        .unwrap();
    assert_eq!(r.headers.to().unwrap().tag(), Some(&b"xyz"[..]));
}

#[test]
fn cancel_and_ack_follow_the_rfc() {
    let req = invite();
    let cancel = cancel_for(&req).unwrap();
    assert_eq!(cancel.method, Method::Cancel);
    assert_eq!(cancel.uri, req.uri);
    assert_eq!(cancel.headers.via_count(), 1);
    assert_eq!(
        cancel.headers.top_via().unwrap(),
        req.headers.top_via().unwrap()
    );
    assert_eq!(
        cancel.headers.cseq().unwrap(),
        CSeq {
            seq: 314159,
            method: Method::Cancel
        }
    );
    assert_eq!(cancel.headers.count(KnownHeader::Route), 1);
    assert!(cancel.body.is_empty());

    let busy = req
        .reply(StatusCode::BUSY_HERE, Some(b"tt"))
        .build()
        .unwrap();
    let ack = ack_for_non2xx(&req, &busy).unwrap();
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.headers.to().unwrap().tag(), Some(&b"tt"[..]));
    assert_eq!(
        ack.headers.cseq().unwrap(),
        CSeq {
            seq: 314159,
            method: Method::Ack
        }
    );
    assert_eq!(
        ack.headers.top_via().unwrap().branch,
        req.headers.top_via().unwrap().branch
    );
}
