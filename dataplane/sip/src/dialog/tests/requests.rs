use super::*;

fn uris(r: &Request) -> (String, Vec<String>) {
    let s = |u: &Uri| String::from_utf8_lossy(&u.to_bytes()).into_owned();
    (
        s(&r.uri),
        r.headers
            .routes()
            .unwrap()
            .iter()
            .map(|a| s(&a.uri))
            .collect(),
    )
}

/// Bob's side of a confirmed call whose INVITE carried `record_routes`.
fn bob_with_routes(record_routes: &[&str]) -> Dialog<Peer> {
    let t0 = Instant::now();
    let mut ids = IdGenerator::new(9);
    let inv = invite(record_routes, &[]);
    let mut bob =
        Dialog::uas(&inv, b"b", bob_local(), alice_peer(), no_timers(), &mut ids).unwrap();
    bob_answers(t0, &mut bob, &inv, 200);
    let ack = with_header(
        RequestBuilder::new(Method::Ack, Uri::parse("sip:bob@192.0.2.20").unwrap())
            .call_id("call-7@192.0.2.10")
            .cseq(1)
            .build()
            .unwrap(),
        KnownHeader::Via,
        "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKack",
    );
    assert_eq!(bob.handle_request(t0, &ack), Incoming::Ack);
    bob
}

#[test]
fn loose_routing_keeps_the_remote_target_in_the_request_uri() {
    let mut bob = bob_with_routes(&["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]);
    let bye = bob.request(Method::Bye).unwrap().build().unwrap();
    assert_eq!(
        uris(&bye),
        (
            "sip:alice@192.0.2.10:5060".to_owned(),
            vec![
                "sip:p2.example.com;lr".to_owned(),
                "sip:p1.example.com;lr".to_owned()
            ]
        )
    );
}

#[test]
fn strict_routing_moves_the_first_route_into_the_request_uri() {
    let bob = bob_with_routes(&[
        "<sip:p2.example.com;method=INVITE;transport=udp?X=y>",
        "<sip:p1.example.com;lr>",
    ]);
    let (uri, routes) = bob.request_target();
    assert_eq!(uri.to_bytes(), "sip:p2.example.com;transport=udp");
    let routes: Vec<_> = routes.iter().map(|r| r.uri.to_bytes()).collect();
    assert_eq!(
        routes,
        vec!["sip:p1.example.com;lr", "sip:alice@192.0.2.10:5060"]
    );
    // §8.1.2: a strict router is the next hop itself.
    assert_eq!(
        bob.next_hop().to_bytes(),
        "sip:p2.example.com;method=INVITE;transport=udp?X=y"
    );
}

#[test]
fn without_routes_requests_go_to_the_remote_target() {
    let bob = bob_with_routes(&[]);
    assert_eq!(
        bob.request_target(),
        (bob.remote_target().clone(), Vec::new())
    );
    assert_eq!(&bob.next_hop(), bob.remote_target());
}

#[test]
fn requests_carry_the_dialog_and_count_cseq() {
    let mut c = call_with(no_timers(), &[]);
    let info = c.alice.request(Method::Info).unwrap().build().unwrap();
    let h = &info.headers;
    assert_eq!(h.cseq().unwrap().seq, 2);
    assert_eq!(h.from().unwrap().tag(), Some(&b"alice1"[..]));
    assert_eq!(h.to().unwrap().tag(), Some(&b"bob1"[..]));
    assert_eq!(h.call_id().unwrap(), "call-7@192.0.2.10");
    assert_eq!(h.max_forwards().unwrap(), Some(70));
    assert!(h.top_via().unwrap().is_rfc3261_branch());
    assert_eq!(
        h.get(KnownHeader::Contact),
        None,
        "INFO refreshes no target"
    );
    assert_eq!(DialogId::of_request(&info).as_ref(), Some(c.bob.id()));
    let reinvite = c.alice.request(Method::Invite).unwrap().build().unwrap();
    assert_eq!(reinvite.headers.cseq().unwrap().seq, 3);
    assert!(reinvite.headers.get(KnownHeader::Contact).is_some());
    assert_ne!(
        info.headers.top_via().unwrap().branch,
        reinvite.headers.top_via().unwrap().branch
    );
    // The UAS side starts its own numbering.
    let bob_info = c.bob.request(Method::Info).unwrap().build().unwrap();
    assert_eq!(bob_info.headers.cseq().unwrap().seq, 1);
    assert_eq!(bob_info.headers.from().unwrap().tag(), Some(&b"bob1"[..]));
    assert_eq!(bob_info.uri.to_bytes(), "sip:alice@192.0.2.10:5060");
    assert_eq!(c.bob.local_seq(), Some(1));
}

#[test]
fn requests_respect_14_1_and_15() {
    let mut c = call_with(no_timers(), &[]);
    for m in [Method::Ack, Method::Cancel] {
        assert_eq!(c.alice.request(m).unwrap_err(), DialogError::WrongMethod);
    }
    c.alice.request(Method::Invite).unwrap();
    assert_eq!(
        c.alice.request(Method::Invite).unwrap_err(),
        DialogError::Pending
    );
    assert_eq!(
        c.alice.request(Method::Update).unwrap_err(),
        DialogError::Pending
    );
    // Their INVITE pending blocks ours too.
    let reinvite = c.bob.request(Method::Invite).unwrap().build().unwrap();
    assert!(matches!(
        c.alice.handle_request(c.t0, &reinvite),
        Incoming::Reject(_)
    ));
    let bye = c.alice.request(Method::Bye).unwrap().build().unwrap();
    assert_eq!(bye.headers.get(KnownHeader::Contact), None);
    assert_eq!(c.alice.state(), DialogState::Terminated);
    assert_eq!(
        events(&mut c.alice),
        vec![DialogEvent::Terminated(Termination::LocalBye)]
    );
    assert_eq!(
        c.alice.request(Method::Info).unwrap_err(),
        DialogError::Terminated
    );

    // Early dialogs: no re-INVITE, and the caller CANCELs instead of BYE.
    let t0 = Instant::now();
    let mut ids = IdGenerator::new(10);
    let inv = invite(&[], &[]);
    let mut bob =
        Dialog::uas(&inv, b"b", bob_local(), alice_peer(), no_timers(), &mut ids).unwrap();
    let ringing = bob_answers(t0, &mut bob, &inv, 180);
    let mut alice = Dialog::uac(
        t0,
        &inv,
        &ringing,
        alice_local(),
        bob_peer(),
        no_timers(),
        &mut ids,
    )
    .unwrap();
    assert_eq!(
        alice.request(Method::Invite).unwrap_err(),
        DialogError::WrongState
    );
    assert_eq!(
        alice.request(Method::Bye).unwrap_err(),
        DialogError::WrongState
    );
    assert!(
        alice.request(Method::Update).is_ok(),
        "UPDATE works in early dialogs"
    );
    // The callee may not BYE before its 2xx is ACKed, or before the ACK
    // wait gives up.
    bob_answers(t0, &mut bob, &inv, 200);
    assert_eq!(
        bob.request(Method::Bye).unwrap_err(),
        DialogError::WrongState
    );
    bob.handle_timeout(t0 + secs(32));
    assert_eq!(
        events(&mut bob),
        vec![DialogEvent::Confirmed, DialogEvent::AckTimeout { cseq: 1 }]
    );
    assert!(bob.request(Method::Bye).is_ok());
}

#[test]
fn cseq_exhaustion_is_an_error_not_a_wrap() {
    let mut c = call_with(no_timers(), &[]);
    c.alice.local_seq = Some(u32::MAX);
    assert_eq!(
        c.alice.request(Method::Info).unwrap_err(),
        DialogError::SequenceExhausted
    );
}
