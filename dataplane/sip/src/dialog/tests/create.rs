use super::*;

#[test]
fn the_uac_dialog_follows_12_1_2() {
    let t0 = Instant::now();
    let mut ids = IdGenerator::new(1);
    let inv = invite(&["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"], &[]);
    let mut bob = Dialog::uas(
        &inv,
        b"bob1",
        bob_local(),
        alice_peer(),
        no_timers(),
        &mut ids,
    )
    .unwrap();
    let ringing = bob_answers(t0, &mut bob, &inv, 180);
    // The 180 carries Bob's tag, Contact and the Record-Route.
    assert_eq!(ringing.headers.to().unwrap().tag(), Some(&b"bob1"[..]));
    assert_eq!(ringing.headers.record_routes().unwrap().len(), 2);
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
    assert_eq!(alice.state(), DialogState::Early);
    assert_eq!(alice.side(), Side::Uac);
    assert_eq!(
        alice.id(),
        &DialogId {
            call_id: Bytes::from("call-7@192.0.2.10"),
            local_tag: Bytes::from("alice1"),
            remote_tag: Bytes::from("bob1"),
        }
    );
    assert_eq!(DialogId::of_response(&ringing).as_ref(), Some(alice.id()));
    // The UAC's route set is the Record-Route reversed; the UAS's in order.
    let hosts = |d: &Dialog<Peer>| -> Vec<String> {
        d.route_set()
            .iter()
            .map(|r| r.uri.to_bytes())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect()
    };
    assert_eq!(
        hosts(&alice),
        vec!["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    );
    assert_eq!(
        hosts(&bob),
        vec!["sip:p2.example.com;lr", "sip:p1.example.com;lr"]
    );
    assert_eq!(alice.remote_target().to_bytes(), "sip:bob@192.0.2.20:5060");
    assert_eq!(bob.remote_target().to_bytes(), "sip:alice@192.0.2.10:5060");
    assert_eq!((alice.local_seq(), alice.remote_seq()), (Some(1), None));
    assert_eq!((bob.local_seq(), bob.remote_seq()), (None, Some(1)));
    assert!(alice.is_pending() && bob.is_pending());
    assert!(drain(&mut alice).0.is_empty() && events(&mut alice).is_empty());

    let ok = bob_answers(t0 + ms(100), &mut bob, &inv, 200);
    assert_eq!(bob.state(), DialogState::Confirmed);
    alice.handle_response(t0 + ms(120), &ok);
    assert_eq!(alice.state(), DialogState::Confirmed);
    assert!(!alice.is_pending() && !bob.is_pending());
    let (out, evs) = drain(&mut alice);
    assert_eq!(evs, vec![DialogEvent::Confirmed]);
    assert_eq!(out.len(), 1);
    let (to, ack) = &out[0];
    assert_eq!(to, &bob_peer());
    let ack = ack.as_request().unwrap();
    // §13.2.2.4: the INVITE's CSeq number, a branch of its own, the
    // dialog's route set.
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.headers.cseq().unwrap().seq, 1);
    assert_ne!(
        ack.headers.top_via().unwrap().branch.as_deref(),
        Some(&b"z9hG4bKinv1"[..])
    );
    assert_eq!(ack.uri.to_bytes(), "sip:bob@192.0.2.20:5060");
    assert_eq!(ack.headers.routes().unwrap().len(), 2);
    assert_eq!(DialogId::of_request(ack).as_ref(), Some(bob.id()));
    // Every retransmission of the 2xx gets the very same ACK.
    alice.handle_response(t0 + ms(600), &ok);
    alice.handle_response(t0 + ms(1600), &ok);
    let again = drain(&mut alice).0;
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|(_, m)| m.as_request() == Some(ack)));
    assert!(events(&mut alice).is_empty());
}

#[test]
fn a_2xx_alone_makes_a_confirmed_dialog() {
    let t0 = Instant::now();
    let mut ids = IdGenerator::new(2);
    let inv = invite(&[], &[]);
    let mut bob =
        Dialog::uas(&inv, b"b", bob_local(), alice_peer(), no_timers(), &mut ids).unwrap();
    let ok = bob_answers(t0, &mut bob, &inv, 200);
    assert_eq!(events(&mut bob), vec![DialogEvent::Confirmed]);
    let mut alice = Dialog::uac(
        t0,
        &inv,
        &ok,
        alice_local(),
        bob_peer(),
        no_timers(),
        &mut ids,
    )
    .unwrap();
    assert_eq!(alice.state(), DialogState::Confirmed);
    let (out, evs) = drain(&mut alice);
    assert_eq!(evs, vec![DialogEvent::Confirmed]);
    assert_eq!(out.len(), 1);
    assert!(alice.route_set().is_empty());
}

#[test]
fn without_auto_ack_the_tu_acks_with_a_body() {
    let t0 = Instant::now();
    let mut ids = IdGenerator::new(3);
    let inv = invite(&[], &[]);
    let cfg = DialogConfig {
        auto_ack: false,
        ..no_timers()
    };
    let mut bob = Dialog::uas(&inv, b"b", bob_local(), alice_peer(), cfg, &mut ids).unwrap();
    let ok = bob_answers(t0, &mut bob, &inv, 200);
    let mut alice = Dialog::uac(t0, &inv, &ok, alice_local(), bob_peer(), cfg, &mut ids).unwrap();
    let (out, evs) = drain(&mut alice);
    assert!(out.is_empty());
    assert_eq!(
        evs,
        vec![DialogEvent::Confirmed, DialogEvent::AckDue { cseq: 1 }]
    );
    // A retransmitted 2xx before the TU's ACK changes nothing.
    alice.handle_response(t0 + ms(500), &ok);
    assert!(drain(&mut alice).0.is_empty());
    assert_eq!(alice.ack_builder(2).unwrap_err(), DialogError::NothingToAck);
    let sdp = crate::MediaType::from_bytes("application/sdp").unwrap();
    let ack = alice
        .ack_builder(1)
        .unwrap()
        .body(&sdp, Bytes::from_static(b"v=0\r\n"))
        .build()
        .unwrap();
    alice.send_ack(t0 + ms(600), &ack).unwrap();
    let out = sent(&mut alice);
    assert_eq!(out[0].body(), &Bytes::from_static(b"v=0\r\n"));
    alice.handle_response(t0 + ms(900), &ok);
    assert_eq!(sent(&mut alice), out);
    assert_eq!(
        bob.handle_request(t0 + secs(1), out[0].as_request().unwrap()),
        Incoming::Ack
    );
}

#[test]
fn creation_refuses_what_makes_no_dialog() {
    let t0 = Instant::now();
    let mut ids = IdGenerator::new(4);
    let inv = invite(&[], &[]);
    let uac = |resp: &Response, ids: &mut IdGenerator| {
        Dialog::uac(t0, &inv, resp, alice_local(), bob_peer(), no_timers(), ids).map(|_| ())
    };
    let trying = inv.reply(StatusCode::TRYING, None).build().unwrap();
    assert_eq!(uac(&trying, &mut ids), Err(DialogError::NotDialogCreating));
    let busy = inv
        .reply(StatusCode::BUSY_HERE, Some(b"b"))
        .build()
        .unwrap();
    assert_eq!(uac(&busy, &mut ids), Err(DialogError::NotDialogCreating));
    let untagged = inv.reply(StatusCode::RINGING, None).build().unwrap();
    assert_eq!(uac(&untagged, &mut ids), Err(DialogError::NoRemoteTag));
    let bye = Request {
        method: Method::Bye,
        ..inv.clone()
    };
    assert_eq!(
        Dialog::uac(
            t0,
            &bye,
            &busy,
            alice_local(),
            bob_peer(),
            no_timers(),
            &mut ids
        )
        .map(|_| ()),
        Err(DialogError::NotDialogCreating)
    );
    let uas = |r: &Request, ids: &mut IdGenerator| {
        Dialog::uas(r, b"b", bob_local(), alice_peer(), no_timers(), ids).map(|_| ())
    };
    let mut in_dialog = inv.clone();
    in_dialog.headers.remove(KnownHeader::To);
    in_dialog
        .headers
        .push(Header::new(KnownHeader::To, "<sip:bob@example.com>;tag=x").unwrap());
    assert_eq!(
        uas(&in_dialog, &mut ids),
        Err(DialogError::NotDialogCreating)
    );
    let mut no_contact = inv.clone();
    no_contact.headers.remove(KnownHeader::Contact);
    assert_eq!(uas(&no_contact, &mut ids), Err(DialogError::NoContact));
    let mut no_call_id = inv.clone();
    no_call_id.headers.remove(KnownHeader::CallId);
    assert_eq!(
        uas(&no_call_id, &mut ids),
        Err(DialogError::Invalid(crate::ValueError::Missing))
    );
    assert!(matches!(
        Dialog::uas(
            &inv,
            b"bad tag",
            bob_local(),
            alice_peer(),
            no_timers(),
            &mut ids
        ),
        Err(DialogError::Invalid(_))
    ));
}

#[test]
fn a_failed_invite_ends_the_early_dialog_on_both_sides() {
    let t0 = Instant::now();
    let mut ids = IdGenerator::new(5);
    let inv = invite(&[], &[]);
    let mut bob =
        Dialog::uas(&inv, b"b", bob_local(), alice_peer(), no_timers(), &mut ids).unwrap();
    let ringing = bob_answers(t0, &mut bob, &inv, 183);
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
    let busy = bob_answers(t0 + secs(5), &mut bob, &inv, 486);
    alice.handle_response(t0 + secs(5), &busy);
    for d in [&mut alice, &mut bob] {
        assert_eq!(d.state(), DialogState::Terminated);
        assert_eq!(
            events(d),
            vec![DialogEvent::Terminated(Termination::Rejected)]
        );
        assert_eq!(d.request(Method::Bye).unwrap_err(), DialogError::Terminated);
    }
}

#[test]
fn early_targets_follow_later_provisionals() {
    let t0 = Instant::now();
    let mut ids = IdGenerator::new(6);
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
    let mut moved = inv
        .reply(StatusCode::SESSION_PROGRESS, Some(b"b"))
        .build()
        .unwrap();
    moved
        .headers
        .push(Header::new(KnownHeader::Contact, "<sip:bob@198.51.100.7>").unwrap());
    alice.handle_response(t0 + secs(1), &moved);
    assert_eq!(alice.remote_target().to_bytes(), "sip:bob@198.51.100.7");
    alice.terminate(Termination::Gone);
    alice.terminate(Termination::Gone);
    assert_eq!(
        events(&mut alice),
        vec![DialogEvent::Terminated(Termination::Gone)]
    );
}
