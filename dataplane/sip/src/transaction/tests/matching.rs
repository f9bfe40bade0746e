use super::layer::{evs, layer, out};
use super::*;
use crate::KnownHeader;
use crate::header::Header;

fn with_via(mut req: Request, via: &'static str) -> Request {
    req.headers.remove(KnownHeader::Via);
    req.headers
        .insert(0, Header::new(KnownHeader::Via, via).unwrap());
    req
}

fn new_request_id(l: &mut TransactionLayer<Peer>) -> Option<TransactionId> {
    evs(l).into_iter().find_map(|e| match e {
        Event::Request { id, .. } => Some(id),
        _ => None,
    })
}

#[test]
fn keys_follow_17_1_3_and_17_2_3() {
    let inv = invite("z9hG4bKk1");
    let ack = request_with(Method::Ack, "z9hG4bKk1", 1, Some("t"));
    let cancel = crate::cancel_for(&inv).unwrap();
    let server = TransactionKey::server(&inv).unwrap();
    assert_eq!(TransactionKey::server(&ack).unwrap(), server);
    assert_eq!(TransactionKey::cancelled_by(&cancel).unwrap(), server);
    assert_ne!(TransactionKey::server(&cancel).unwrap(), server);
    let client = TransactionKey::client_request(&inv).unwrap();
    assert_eq!(
        TransactionKey::client_response(&reply(&inv, 180, Some("t"))).unwrap(),
        client
    );
    assert_ne!(
        TransactionKey::client_request(&cancel).unwrap(),
        client,
        "a CANCEL shares the branch but not the transaction"
    );
    // Sent-by hosts compare without case.
    let a = with_via(invite("x"), "SIP/2.0/UDP Host.Example.COM;branch=z9hG4bKk2");
    let b = with_via(invite("x"), "SIP/2.0/UDP host.example.com;branch=z9hG4bKk2");
    assert_eq!(
        TransactionKey::server(&a).unwrap(),
        TransactionKey::server(&b).unwrap()
    );
    // RFC 2543: the ACK's key is the alias the INVITE registers.
    let old = invite("2543-k3");
    let old_ack = request_with(Method::Ack, "2543-k3", 1, Some("t"));
    let key = TransactionKey::server(&old).unwrap();
    assert!(key.is_legacy());
    assert_eq!(
        key.legacy_ack(Some(bytes::Bytes::from("t"))),
        Some(TransactionKey::server(&old_ack).unwrap())
    );
    assert!(server.legacy_ack(None).is_none());
}

#[test]
fn detached_keys_are_equal_and_own_their_bytes() {
    let wire = bytes::Bytes::from_static(
        b"INVITE sip:bob@example.com SIP/2.0\r\n\
          Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKd1\r\n\
          Max-Forwards: 70\r\n\
          From: <sip:alice@example.com>;tag=a1\r\n\
          To: <sip:bob@example.com>\r\n\
          Call-ID: d1@192.0.2.10\r\n\
          CSeq: 1 INVITE\r\n\
          Content-Length: 0\r\n\r\n",
    );
    let crate::Message::Request(req) =
        crate::parse_datagram(wire.clone(), &crate::Limits::default()).unwrap()
    else {
        panic!("a request")
    };
    let inside = |b: &bytes::Bytes| wire.as_ptr_range().contains(&b.as_ptr());
    let legacy = with_via(req.clone(), "SIP/2.0/UDP 192.0.2.10;branch=2543-d1");
    for key in [
        TransactionKey::server(&req).unwrap(),
        TransactionKey::client_request(&req).unwrap(),
        TransactionKey::server(&legacy).unwrap(),
    ] {
        let detached = key.detached();
        assert_eq!(detached, key);
        match detached {
            TransactionKey::Client { branch, .. } | TransactionKey::Server { branch, .. } => {
                assert!(!inside(&branch))
            }
            TransactionKey::Legacy(k) => {
                assert!(
                    ![&k.request_uri, &k.call_id, &k.top_via]
                        .into_iter()
                        .any(inside)
                );
                assert!(!k.from_tag.iter().any(inside));
            }
        }
    }
    // The source does hold slices of the message (what the copy is for).
    match TransactionKey::server(&req).unwrap() {
        TransactionKey::Server { branch, .. } => assert!(inside(&branch)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn sent_by_and_method_separate_transactions_with_one_branch() {
    let t0 = Instant::now();
    let mut l = layer(16);
    l.handle_message(t0, invite("z9hG4bKs1").into(), udp());
    let first = new_request_id(&mut l).unwrap();
    let elsewhere = with_via(invite("x"), "SIP/2.0/UDP 192.0.2.11:5060;branch=z9hG4bKs1");
    l.handle_message(t0, elsewhere.into(), udp());
    let second = new_request_id(&mut l).unwrap();
    l.handle_message(t0, request(Method::Options, "z9hG4bKs1").into(), udp());
    let third = new_request_id(&mut l).unwrap();
    assert!(first != second && second != third && first != third);
    assert_eq!(l.len(), 3);
}

#[test]
fn rfc2543_requests_match_on_uri_tags_call_id_cseq_and_via() {
    let t0 = Instant::now();
    let mut l = layer(16);
    let old = invite("2543-abc");
    l.handle_message(t0, old.clone().into(), udp());
    let id = new_request_id(&mut l).unwrap();
    l.handle_message(t0 + ms(500), old.clone().into(), udp());
    assert_eq!(
        new_request_id(&mut l),
        None,
        "a 2543 retransmission is absorbed"
    );
    // A new CSeq is a new transaction; so is a Via without any branch.
    l.handle_message(
        t0,
        request_with(Method::Invite, "2543-abc", 2, None).into(),
        udp(),
    );
    assert!(new_request_id(&mut l).is_some());
    let bare = with_via(invite("x"), "SIP/2.0/UDP 192.0.2.10:5060");
    l.handle_message(t0, bare.clone().into(), udp());
    assert!(new_request_id(&mut l).is_some());
    l.handle_message(t0, bare.into(), udp());
    assert_eq!(new_request_id(&mut l), None);
    // The ACK for our non-2xx matches with the To tag we sent.
    l.respond(t0, id, reply(&old, 486, Some("ours"))).unwrap();
    out(&mut l);
    l.handle_message(
        t0 + secs(1),
        request_with(Method::Ack, "2543-abc", 1, Some("ours")).into(),
        udp(),
    );
    assert!(evs(&mut l).is_empty());
    assert_eq!(l.state(id), Some(State::Confirmed));
    // An ACK with another tag is not ours.
    l.handle_message(
        t0 + secs(1),
        request_with(Method::Ack, "2543-abc", 1, Some("theirs")).into(),
        udp(),
    );
    assert!(matches!(
        evs(&mut l)[..],
        [Event::Ack {
            transaction: None,
            ..
        }]
    ));
}

#[test]
fn rfc2543_acks_for_2xx_reach_the_tu_through_the_transaction() {
    let t0 = Instant::now();
    let mut l = layer(16);
    let old = invite("2543-ok");
    l.handle_message(t0, old.clone().into(), udp());
    let id = new_request_id(&mut l).unwrap();
    l.respond(t0, id, reply(&old, 200, Some("ours"))).unwrap();
    let ack = request_with(Method::Ack, "2543-ok", 1, Some("ours"));
    l.handle_message(t0 + ms(5), ack.clone().into(), udp());
    assert_eq!(
        evs(&mut l),
        vec![Event::Ack {
            request: ack,
            transaction: Some(id)
        }]
    );
}

#[test]
fn unmatchable_messages_are_counted_and_dropped() {
    let t0 = Instant::now();
    let mut l = layer(16);
    let mut no_via = invite("z9hG4bKm");
    no_via.headers.remove(KnownHeader::Via);
    l.handle_message(t0, no_via.into(), udp());
    let mut no_cseq = reply(&invite("z9hG4bKm"), 200, None);
    no_cseq.headers.remove(KnownHeader::CSeq);
    l.handle_message(t0, no_cseq.into(), udp());
    // RFC 2543 matching needs Call-ID, CSeq, From and To.
    let mut old = invite("2543-m");
    old.headers.remove(KnownHeader::CallId);
    l.handle_message(t0, old.into(), udp());
    assert_eq!(l.stats().malformed, 3);
    assert!(evs(&mut l).is_empty() && out(&mut l).is_empty() && l.is_empty());
}
