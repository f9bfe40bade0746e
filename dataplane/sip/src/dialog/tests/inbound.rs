use super::*;

fn rejected(i: Incoming) -> Response {
    match i {
        Incoming::Reject(r) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn cseq_order_is_enforced_with_500() {
    let mut c = call_with(no_timers(), &[]);
    let first = c.alice.request(Method::Info).unwrap().build().unwrap();
    let second = c.alice.request(Method::Info).unwrap().build().unwrap();
    assert_eq!(c.bob.handle_request(c.t0, &second), Incoming::Accept);
    assert_eq!(c.bob.remote_seq(), Some(3));
    let late = rejected(c.bob.handle_request(c.t0, &first));
    assert_eq!(late.status, StatusCode::SERVER_INTERNAL_ERROR);
    assert_eq!(&late.reason[..], b"Out of Order");
    assert_eq!(late.headers.to().unwrap().tag(), Some(&b"bob1"[..]));
    assert_eq!(c.bob.remote_seq(), Some(3));
    // Equal is not lower (§12.2.2 only refuses lower numbers).
    assert_eq!(c.bob.handle_request(c.t0, &second), Incoming::Accept);
    let bad = Request {
        headers: {
            let mut h = second.headers.clone();
            h.remove(KnownHeader::CSeq);
            h
        },
        ..second
    };
    assert_eq!(
        rejected(c.bob.handle_request(c.t0, &bad)).status,
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn our_2xx_repeats_t1_doubling_to_t2_until_acked() {
    let t0 = Instant::now();
    let mut ids = IdGenerator::new(11);
    let inv = invite(&[], &[]);
    let mut bob =
        Dialog::uas(&inv, b"b", bob_local(), alice_peer(), no_timers(), &mut ids).unwrap();
    let ok = bob_answers(t0, &mut bob, &inv, 200);
    events(&mut bob);
    let mut times = Vec::new();
    while let Some(at) = bob.poll_timeout().filter(|at| *at < t0 + secs(40)) {
        bob.handle_timeout(at);
        if let Some(t) = bob.poll_transmit() {
            assert_eq!(t.payload, Message::Response(ok.clone()).to_bytes());
            assert_eq!(t.destination, alice_peer());
            times.push(at - t0);
        }
    }
    let expected: Vec<_> = [
        500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500,
    ]
    .into_iter()
    .map(ms)
    .collect();
    assert_eq!(times, expected);
    assert_eq!(events(&mut bob), vec![DialogEvent::AckTimeout { cseq: 1 }]);
    assert_eq!(bob.poll_timeout(), None);
}

#[test]
fn the_ack_stops_retransmission_and_late_acks_are_ignored() {
    let mut c = call_with(no_timers(), &[]);
    assert_eq!(c.bob.poll_timeout(), None);
    let ack = c.alice.ack_builder(1).unwrap().build().unwrap();
    assert_eq!(c.bob.handle_request(c.t0 + secs(1), &ack), Incoming::Ignore);
    // An ACK for another CSeq does not stop a pending 2xx either.
    let reinvite = c.alice.request(Method::Invite).unwrap().build().unwrap();
    assert_eq!(c.bob.handle_request(c.t0, &reinvite), Incoming::Accept);
    let ok = bob_answers(c.t0 + secs(2), &mut c.bob, &reinvite, 200);
    assert!(c.bob.poll_timeout().is_some());
    assert_eq!(c.bob.handle_request(c.t0, &ack), Incoming::Ignore);
    c.alice.handle_response(c.t0 + secs(2), &ok);
    let ack2 = sent(&mut c.alice);
    assert_eq!(ack2[0].headers().cseq().unwrap().seq, 2);
    assert_eq!(
        c.bob.handle_request(c.t0, ack2[0].as_request().unwrap()),
        Incoming::Ack
    );
    assert_eq!(c.bob.poll_timeout(), None);
}

#[test]
fn glare_gets_491_and_the_14_1_back_off() {
    let mut c = call_with(no_timers(), &[]);
    let ours = c.alice.request(Method::Invite).unwrap().build().unwrap();
    let theirs = c.bob.request(Method::Invite).unwrap().build().unwrap();
    let r = rejected(c.alice.handle_request(c.t0, &theirs));
    assert_eq!(r.status.as_u16(), 491);
    let r2 = rejected(c.bob.handle_request(c.t0, &ours));
    assert_eq!(r2.status.as_u16(), 491);
    // Alice owns the Call-ID: 2.1–4 s; Bob: 0–2 s.
    let now = c.t0 + secs(10);
    c.alice.handle_response(now, &r2);
    c.bob.handle_response(now, &r);
    let alice_at = c.alice.poll_timeout().unwrap() - now;
    let bob_at = c.bob.poll_timeout().unwrap() - now;
    assert!(alice_at >= ms(2100) && alice_at <= secs(4), "{alice_at:?}");
    assert!(bob_at <= secs(2), "{bob_at:?}");
    assert!(!c.alice.is_pending());
    c.alice.handle_timeout(now + alice_at);
    assert_eq!(events(&mut c.alice), vec![DialogEvent::RetryRequest]);
    // The retry goes out with a new CSeq.
    let retry = c.alice.request(Method::Invite).unwrap().build().unwrap();
    assert_eq!(retry.headers.cseq().unwrap().seq, 3);
}

#[test]
fn a_second_invite_before_our_final_gets_500_with_retry_after() {
    let mut c = call_with(no_timers(), &[]);
    let first = c.alice.request(Method::Invite).unwrap().build().unwrap();
    assert_eq!(c.bob.handle_request(c.t0, &first), Incoming::Accept);
    // A broken peer sends another before Bob answered the first.
    c.alice.ours_pending = None;
    let second = c.alice.request(Method::Invite).unwrap().build().unwrap();
    let r = rejected(c.bob.handle_request(c.t0, &second));
    assert_eq!(r.status, StatusCode::SERVER_INTERNAL_ERROR);
    let secs: u32 = std::str::from_utf8(r.headers.get(KnownHeader::RetryAfter).unwrap())
        .unwrap()
        .parse()
        .unwrap();
    assert!(secs <= 10);
}

#[test]
fn target_refresh_applies_only_when_answered_with_2xx() {
    let mut c = call_with(no_timers(), &[]);
    let moved = |r: Request| {
        let mut r = r;
        r.headers.remove(KnownHeader::Contact);
        with_header(r, KnownHeader::Contact, "<sip:alice@203.0.113.50:5070>")
    };
    let refused = moved(c.alice.request(Method::Invite).unwrap().build().unwrap());
    assert_eq!(c.bob.handle_request(c.t0, &refused), Incoming::Accept);
    let nah = bob_answers(c.t0, &mut c.bob, &refused, 488);
    assert_eq!(
        c.bob.remote_target().to_bytes(),
        "sip:alice@192.0.2.10:5060"
    );
    c.alice.handle_response(c.t0, &nah);
    assert_eq!(
        c.alice.state(),
        DialogState::Confirmed,
        "a failed re-INVITE keeps the dialog"
    );
    let update = moved(c.alice.request(Method::Update).unwrap().build().unwrap());
    assert_eq!(c.bob.handle_request(c.t0, &update), Incoming::Accept);
    let ok = bob_answers(c.t0, &mut c.bob, &update, 200);
    assert_eq!(
        c.bob.remote_target().to_bytes(),
        "sip:alice@203.0.113.50:5070"
    );
    assert!(
        c.bob.poll_timeout().is_none(),
        "UPDATE's 2xx is not retransmitted"
    );
    // Alice learns Bob's new Contact from the 2xx.
    let mut ok2 = ok;
    ok2.headers.remove(KnownHeader::Contact);
    ok2.headers
        .push(Header::new(KnownHeader::Contact, "<sip:bob@203.0.113.60>").unwrap());
    c.alice.handle_response(c.t0, &ok2);
    assert_eq!(c.alice.remote_target().to_bytes(), "sip:bob@203.0.113.60");
}

#[test]
fn updates_collide_only_when_both_carry_offers() {
    let mut c = call_with(no_timers(), &[]);
    c.alice.request(Method::Invite).unwrap();
    let plain = c.bob.request(Method::Update).unwrap().build().unwrap();
    let offer = body(plain.clone(), "v=0\r\n");
    assert_eq!(c.alice.handle_request(c.t0, &plain), Incoming::Accept);
    assert_eq!(
        rejected(c.alice.handle_request(c.t0, &offer))
            .status
            .as_u16(),
        491
    );
}

/// Our session refresh, an UPDATE without a body, is no offer: the
/// peer's re-INVITE or UPDATE offer meanwhile is taken, not refused with
/// a 491 that would hold its hold or resume back by seconds. An UPDATE of
/// ours with an offer still collides, and ours waits for neither.
#[test]
fn our_bodiless_refresh_update_collides_with_no_offer_of_the_peer() {
    let sdp = "v=0\r\n";
    for ours_offers in [false, true] {
        let mut c = call_with(no_timers(), &[]);
        let mut refresh = c.alice.request(Method::Update).unwrap().build().unwrap();
        if ours_offers {
            refresh = body(refresh, sdp);
        }
        c.alice.request_sent(&refresh);
        assert_eq!(
            c.alice.request(Method::Invite).err(),
            Some(DialogError::Pending),
            "one of ours at a time"
        );
        let reinvite = body(c.bob.request(Method::Invite).unwrap().build().unwrap(), sdp);
        let got = c.alice.handle_request(c.t0, &reinvite);
        if ours_offers {
            assert_eq!(rejected(got).status.as_u16(), 491);
        } else {
            assert_eq!(got, Incoming::Accept, "a refresh is no offer");
        }
    }
    let mut c = call_with(no_timers(), &[]);
    let refresh = c.alice.request(Method::Update).unwrap().build().unwrap();
    c.alice.request_sent(&refresh);
    let update = body(c.bob.request(Method::Update).unwrap().build().unwrap(), sdp);
    assert_eq!(c.alice.handle_request(c.t0, &update), Incoming::Accept);
}

#[test]
fn bye_ends_the_dialog_and_later_requests_get_481() {
    let mut c = call_with(no_timers(), &[]);
    let info = c.alice.request(Method::Info).unwrap().build().unwrap();
    let bye = c.alice.request(Method::Bye).unwrap().build().unwrap();
    assert_eq!(c.bob.handle_request(c.t0, &bye), Incoming::Accept);
    assert_eq!(c.bob.state(), DialogState::Terminated);
    assert_eq!(
        events(&mut c.bob),
        vec![DialogEvent::Terminated(Termination::RemoteBye)]
    );
    assert_eq!(
        rejected(c.bob.handle_request(c.t0, &info)).status,
        StatusCode::CALL_DOES_NOT_EXIST
    );
    // Whatever the TU still sends, a terminated dialog arms nothing.
    bob_answers(c.t0, &mut c.bob, &c.invite, 200);
    assert_eq!(c.bob.poll_timeout(), None);
    assert!(events(&mut c.bob).is_empty() && sent(&mut c.bob).is_empty());
    // CANCEL is hop by hop: the dialog lets it through.
    let cancel = crate::cancel_for(&c.invite).unwrap();
    assert_eq!(c.bob.handle_request(c.t0, &cancel), Incoming::Accept);
}

/// RFC 5407 §3.2.1: both ends hang up at once. Each answers the other's
/// BYE with 200 while its own is out; anything else in a dialog we ended,
/// and a BYE in one the peer ended, still gets 481.
#[test]
fn a_bye_crossing_ours_gets_200() {
    let mut c = call_with(no_timers(), &[]);
    let info = c.alice.request(Method::Info).unwrap().build().unwrap();
    let ours = c.bob.request(Method::Bye).unwrap().build().unwrap();
    assert_eq!(c.bob.state(), DialogState::Terminated);
    assert_eq!(
        events(&mut c.bob),
        vec![DialogEvent::Terminated(Termination::LocalBye)]
    );
    assert_eq!(
        rejected(c.bob.handle_request(c.t0, &info)).status,
        StatusCode::CALL_DOES_NOT_EXIST
    );
    let theirs = c.alice.request(Method::Bye).unwrap().build().unwrap();
    let answer = rejected(c.bob.handle_request(c.t0, &theirs));
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers.to().unwrap().tag(), Some(&b"bob1"[..]));
    assert_eq!(
        rejected(c.alice.handle_request(c.t0, &ours)).status,
        StatusCode::OK
    );

    let mut c = call_with(no_timers(), &[]);
    let bye = c.alice.request(Method::Bye).unwrap().build().unwrap();
    assert_eq!(c.bob.handle_request(c.t0, &bye), Incoming::Accept);
    assert_eq!(
        rejected(c.bob.handle_request(c.t0, &bye)).status,
        StatusCode::CALL_DOES_NOT_EXIST
    );
}

#[test]
fn responses_481_and_408_end_the_dialog() {
    for code in [481, 408] {
        let mut c = call_with(no_timers(), &[]);
        let info = c.alice.request(Method::Info).unwrap().build().unwrap();
        let r = c
            .bob
            .reply(&info, StatusCode::new(code).unwrap())
            .build()
            .unwrap();
        c.alice.handle_response(c.t0, &r);
        assert_eq!(
            events(&mut c.alice),
            vec![DialogEvent::Terminated(Termination::Gone)]
        );
    }
    let mut c = call_with(no_timers(), &[]);
    c.alice.request_failed(c.t0);
    assert_eq!(c.alice.state(), DialogState::Terminated);
}

/// RFC 3311 §5.2: an UPDATE offer in the early dialog while the offer of
/// the INVITE that created it is unanswered gets 500 with Retry-After; a
/// reliable provisional with SDP answers that offer (an UPDATE then goes
/// through), and so does a final response.
#[test]
fn an_update_offer_before_the_invites_offer_is_answered_gets_500() {
    let t0 = Instant::now();
    let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    for answered_by in ["reliable 183", "nothing", "no offer"] {
        let mut ids = IdGenerator::new(7);
        let offered = if answered_by == "no offer" {
            invite(&[], &[])
        } else {
            body(invite(&[], &[]), sdp)
        };
        let mut bob = Dialog::uas(
            &offered,
            b"bob1",
            bob_local(),
            alice_peer(),
            no_timers(),
            &mut ids,
        )
        .unwrap();
        let ringing = bob_answers(t0, &mut bob, &offered, 180);
        if answered_by == "reliable 183" {
            let early = bob.reply(&offered, StatusCode::SESSION_PROGRESS).body(
                &crate::MediaType::from_bytes("application/sdp").unwrap(),
                Bytes::from_static(sdp.as_bytes()),
            );
            assert!(matches!(bob.send_reliably(t0, early), Some(Ok(_))));
        }
        let mut alice = Dialog::uac(
            t0,
            &offered,
            &ringing,
            alice_local(),
            bob_peer(),
            no_timers(),
            &mut ids,
        )
        .unwrap();
        let update = body(alice.request(Method::Update).unwrap().build().unwrap(), sdp);
        let got = bob.handle_request(t0, &update);
        if answered_by == "nothing" {
            let r = rejected(got);
            assert_eq!(r.status, StatusCode::SERVER_INTERNAL_ERROR);
            let secs: u32 = std::str::from_utf8(r.headers.get(KnownHeader::RetryAfter).unwrap())
                .unwrap()
                .parse()
                .unwrap();
            assert!(secs <= 10);
            alice.handle_response(t0, &r);
            // An UPDATE without an offer is not refused.
            let bare = alice.request(Method::Update).unwrap().build().unwrap();
            assert_eq!(bob.handle_request(t0, &bare), Incoming::Accept);
            let ok = bob_answers(t0, &mut bob, &bare, 200);
            alice.handle_response(t0, &ok);
            // Answered by the 2xx: an offer goes through afterwards.
            let _ = bob_answers(t0, &mut bob, &offered, 200);
            let again = body(alice.request(Method::Update).unwrap().build().unwrap(), sdp);
            assert_eq!(bob.handle_request(t0, &again), Incoming::Accept);
        } else {
            assert_eq!(got, Incoming::Accept, "{answered_by}");
        }
    }
}

/// RFC 3311 §5.2 and RFC 3262 §5: to an offerless INVITE our offer goes in
/// the first reliable provisional response; until the PRACK that answers
/// it, an UPDATE offer collides with it (491), an UPDATE without one does
/// not; after the PRACK an UPDATE offer goes through.
#[test]
fn an_update_offer_while_our_offer_in_a_reliable_1xx_awaits_its_prack_gets_491() {
    let t0 = Instant::now();
    let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let mut ids = IdGenerator::new(7);
    let offerless = invite(&[], &[]);
    let mut bob = Dialog::uas(
        &offerless,
        b"bob1",
        bob_local(),
        alice_peer(),
        no_timers(),
        &mut ids,
    )
    .unwrap();
    let ringing = bob.reply(&offerless, StatusCode::RINGING).body(
        &crate::MediaType::from_bytes("application/sdp").unwrap(),
        Bytes::from_static(sdp.as_bytes()),
    );
    let Some(Ok(ringing)) = bob.send_reliably(t0, ringing) else {
        panic!("not sent reliably");
    };
    let mut alice = Dialog::uac(
        t0,
        &offerless,
        &ringing,
        alice_local(),
        bob_peer(),
        no_timers(),
        &mut ids,
    )
    .unwrap();
    let update = body(alice.request(Method::Update).unwrap().build().unwrap(), sdp);
    let r = rejected(bob.handle_request(t0, &update));
    assert_eq!(r.status.as_u16(), 491, "collides with our open offer");
    alice.handle_response(t0, &r);
    let bare = alice.request(Method::Update).unwrap().build().unwrap();
    assert_eq!(bob.handle_request(t0, &bare), Incoming::Accept);
    let ok = bob_answers(t0, &mut bob, &bare, 200);
    alice.handle_response(t0, &ok);

    let rseq = std::str::from_utf8(ringing.headers.get(KnownHeader::RSeq).unwrap())
        .unwrap()
        .to_owned();
    let prack = body(
        alice
            .request(Method::Prack)
            .unwrap()
            .header(KnownHeader::RAck, format!("{rseq} 1 INVITE"))
            .build()
            .unwrap(),
        sdp,
    );
    assert_eq!(bob.handle_request(t0, &prack), Incoming::Accept);
    assert_eq!(bob.handle_prack(&prack), crate::dialog::Prack::Acknowledged);
    let ok = bob_answers(t0, &mut bob, &prack, 200);
    alice.handle_response(t0, &ok);
    let again = body(alice.request(Method::Update).unwrap().build().unwrap(), sdp);
    assert_eq!(bob.handle_request(t0, &again), Incoming::Accept);
}

/// RFC 3262 §3: a reliable provisional without SDP may be followed by the
/// 2xx before its PRACK; the PRACK that then crosses the 2xx still
/// acknowledges it (once), instead of being refused (481 would make the
/// caller end the dialog). A non-2xx final leaves nothing to acknowledge.
#[test]
fn a_prack_crossing_the_2xx_still_acknowledges_its_1xx_once() {
    let t0 = Instant::now();
    for (final_status, acknowledged) in [(200, true), (486, false)] {
        let mut ids = IdGenerator::new(9);
        let offer = invite(&[], &[]);
        let mut bob = Dialog::uas(
            &offer,
            b"bob1",
            bob_local(),
            alice_peer(),
            no_timers(),
            &mut ids,
        )
        .unwrap();
        let Some(Ok(ringing)) = bob.send_reliably(t0, bob.reply(&offer, StatusCode::RINGING))
        else {
            panic!("not sent reliably");
        };
        let mut alice = Dialog::uac(
            t0,
            &offer,
            &ringing,
            alice_local(),
            bob_peer(),
            no_timers(),
            &mut ids,
        )
        .unwrap();
        let last = bob_answers(t0, &mut bob, &offer, final_status);
        let rseq = std::str::from_utf8(ringing.headers.get(KnownHeader::RSeq).unwrap())
            .unwrap()
            .to_owned();
        let prack = |alice: &mut Dialog<Peer>| {
            alice
                .request(Method::Prack)
                .unwrap()
                .header(KnownHeader::RAck, format!("{rseq} 1 INVITE"))
                .build()
                .unwrap()
        };
        let first = prack(&mut alice);
        if !acknowledged {
            assert_ne!(bob.handle_prack(&first), crate::dialog::Prack::Acknowledged);
            continue;
        }
        alice.handle_response(t0, &last);
        assert_eq!(bob.handle_request(t0, &first), Incoming::Accept);
        assert_eq!(bob.handle_prack(&first), crate::dialog::Prack::Late);
        let second = prack(&mut alice);
        assert_eq!(bob.handle_request(t0, &second), Incoming::Accept);
        assert_eq!(bob.handle_prack(&second), crate::dialog::Prack::NoMatch);
    }
}
