//! Parallel forking to every contact of the routed user: the first 2xx
//! wins, the other branches are cancelled, a 2xx from a losing fork is
//! ACKed and hung up (§13.2.2.4), and when every fork fails A gets the
//! best failure (§16.7).

use bytes::Bytes;
use codeb_sip::Method;
use codeb_sip::header::Contact;

use crate::registrar::Registration;

use super::*;

/// Bob is also registered at B2, so his calls ring B (his fixed contact)
/// and B2.
pub(super) fn two_phones() -> Harness {
    let mut h = Harness::new(None);
    register_bob_at_b2(&mut h);
    h
}

/// Bob registers B2 as a second phone.
pub(super) fn register_bob_at_b2(h: &mut Harness) {
    let owner = Bytes::from_static(b"<sip:bob@192.0.2.21:5060>");
    let contact = Contact::parse(&owner, &owner, &codeb_sip::Limits::default()).unwrap();
    let now = h.now;
    h.core
        .registrar_mut()
        .register(
            &Registration {
                user: "bob",
                contacts: &[contact],
                header_expires: Some(3600),
                call_id: b"reg-1",
                cseq: 1,
                source: addr(B2),
                conn: None,
            },
            now,
        )
        .unwrap();
}

/// A calls 1000; both phones get an INVITE.
fn ring_both(h: &mut Harness) -> (Request, Request, Request) {
    let invite = h.invite_from_a("1000", &[]);
    h.send(A, invite.clone());
    let to_b = request(h.one(B));
    let to_b2 = request(h.one(B2));
    assert_eq!(
        (&to_b.method, &to_b2.method),
        (&Method::Invite, &Method::Invite)
    );
    assert_ne!(
        to_b.headers.top_via().unwrap().branch,
        to_b2.headers.top_via().unwrap().branch,
        "each fork is its own client transaction"
    );
    (invite, to_b, to_b2)
}

fn reply(req: &Request, status: u16, tag: &[u8]) -> Response {
    let mut b = req.reply(StatusCode::new(status).unwrap(), Some(tag));
    if status == 200 {
        b = b
            .contact(&local(B).contact)
            .body(&super::super::sdp_type(), sdp_answer("192.0.2.20", 42000));
    }
    b.build().unwrap()
}

#[test]
fn first_answer_wins_and_the_other_fork_is_cancelled() {
    let mut h = two_phones();
    let (_, to_b, to_b2) = ring_both(&mut h);
    h.send(B2, reply(&to_b2, 180, b"t2"));
    assert_eq!(
        response(h.one(A)).status.as_u16(),
        180,
        "ringing is relayed"
    );
    h.send(B, reply(&to_b, 200, b"t1"));
    assert_eq!(request(h.one(B)).method, Method::Ack);
    let cancel = request(h.one(B2));
    assert_eq!(cancel.method, Method::Cancel);
    assert_eq!(
        cancel.headers.top_via().unwrap().branch,
        to_b2.headers.top_via().unwrap().branch,
        "CANCEL matches the INVITE's branch (§9.1)"
    );
    assert_eq!(response(h.one(A)).status, StatusCode::OK);
    // B2 confirms the CANCEL and ends its INVITE with 487, which we ACK.
    h.send(B2, reply(&cancel, 200, b"t2"));
    h.send(B2, reply(&to_b2, 487, b"t2"));
    let ack = request(h.one(B2));
    assert_eq!(ack.method, Method::Ack);
    assert!(h.take(A).is_empty(), "A hears nothing of the loser");
    assert_eq!(h.core.active_calls(), 1);
    assert_eq!(h.core.dialogs(), 2, "A's dialog and the winner's only");
}

#[test]
fn a_late_2xx_from_the_losing_fork_is_acked_and_hung_up() {
    let mut h = two_phones();
    let (_, to_b, to_b2) = ring_both(&mut h);
    h.send(B2, reply(&to_b2, 180, b"t2"));
    assert_eq!(response(h.one(A)).status.as_u16(), 180);
    h.send(B, reply(&to_b, 200, b"t1"));
    assert_eq!(request(h.one(B)).method, Method::Ack);
    assert_eq!(request(h.one(B2)).method, Method::Cancel);
    assert_eq!(response(h.one(A)).status, StatusCode::OK);
    // B2 answered before our CANCEL arrived.
    h.send(B2, reply(&to_b2, 200, b"t2"));
    let got = h.take(B2);
    let methods: Vec<_> = got.into_iter().map(|m| request(m).method).collect();
    assert_eq!(methods, [Method::Ack, Method::Bye]);
    assert!(h.take(A).is_empty(), "A gets one 2xx only");
    assert_eq!(h.core.dialogs(), 2);
}

#[test]
fn a_fork_that_never_answered_is_cancelled_once_it_rings() {
    let mut h = two_phones();
    let (_, to_b, to_b2) = ring_both(&mut h);
    h.send(B, reply(&to_b, 200, b"t1"));
    assert_eq!(request(h.one(B)).method, Method::Ack);
    assert!(
        h.take(B2).is_empty(),
        "no CANCEL before a provisional response (§9.1)"
    );
    h.send(B2, reply(&to_b2, 100, b"t2"));
    assert_eq!(request(h.one(B2)).method, Method::Cancel);
}

#[test]
fn when_every_fork_fails_a_gets_the_6xx_first() {
    let mut h = two_phones();
    let (_, to_b, to_b2) = ring_both(&mut h);
    h.send(B, reply(&to_b, 486, b"t1"));
    assert_eq!(request(h.one(B)).method, Method::Ack);
    assert!(
        h.take(A).is_empty(),
        "no final while a fork is still ringing"
    );
    h.send(B2, reply(&to_b2, 603, b"t2"));
    assert_eq!(request(h.one(B2)).method, Method::Ack);
    assert_eq!(response(h.one(A)).status.as_u16(), 603);
    h.advance(secs(40));
    assert_eq!(h.core.active_calls(), 0);
    assert_eq!(h.core.dialogs(), 0);
}

/// A phone's challenge (meant for the switch, not the caller) loses to
/// the other fork's 404: the caller heard 480 for 401 + 404.
#[test]
fn a_failure_the_caller_can_hear_as_it_is_wins_over_a_challenge() {
    let mut h = two_phones();
    let (_, to_b, to_b2) = ring_both(&mut h);
    h.send(B, reply(&to_b, 401, b"t1"));
    assert_eq!(request(h.one(B)).method, Method::Ack);
    h.send(B2, reply(&to_b2, 404, b"t2"));
    assert_eq!(request(h.one(B2)).method, Method::Ack);
    assert_eq!(response(h.one(A)).status.as_u16(), 404);
}

/// A 6xx from one fork ends the call at once (RFC 3261 §16.7 step 5):
/// the fork still ringing is cancelled and A gets the 6xx. Before, the
/// call waited for the other fork, which with a phone that rings on was
/// forever.
#[test]
fn a_6xx_from_one_fork_cancels_the_others_and_reaches_a_at_once() {
    let mut h = two_phones();
    let (_, to_b, to_b2) = ring_both(&mut h);
    h.send(B2, reply(&to_b2, 180, b"t2"));
    assert_eq!(response(h.one(A)).status.as_u16(), 180);
    h.send(B, reply(&to_b, 603, b"t1"));
    assert_eq!(request(h.one(B)).method, Method::Ack);
    let cancel = request(h.one(B2));
    assert_eq!(cancel.method, Method::Cancel);
    assert_eq!(response(h.one(A)).status.as_u16(), 603);
    h.send(B2, reply(&cancel, 200, b"t2"));
    h.send(B2, reply(&to_b2, 487, b"t2"));
    assert_eq!(request(h.one(B2)).method, Method::Ack);
    assert!(h.take(A).is_empty(), "one final to A");
    assert_eq!(h.core.active_calls(), 0);
}

/// Phones that ring and never answer: after the ring timeout (Timer C,
/// RFC 3261 §16.6 step 11) every fork is cancelled and A gets 408, and the
/// call's media ports are free again. Before, such a call rang for good,
/// and enough of them exhausted the ports (503 for every new call).
#[test]
fn a_call_nobody_answers_is_given_up_after_the_ring_timeout() {
    let mut h = two_phones();
    let (_, to_b, to_b2) = ring_both(&mut h);
    h.send(B, reply(&to_b, 180, b"t1"));
    assert_eq!(response(h.one(A)).status.as_u16(), 180);
    h.send(B2, reply(&to_b2, 180, b"t2"));
    let _ = h.take(A);
    h.advance(secs(179));
    assert!(
        h.take(A).is_empty() && h.take(B).is_empty(),
        "still ringing"
    );
    h.advance(secs(1));
    assert_eq!(request(h.one(B)).method, Method::Cancel);
    assert_eq!(request(h.one(B2)).method, Method::Cancel);
    assert_eq!(response(h.one(A)).status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(h.core.calls.ports_in_use(), 0, "its ports are free");
    h.send(B, reply(&to_b, 487, b"t1"));
    h.send(B2, reply(&to_b2, 487, b"t2"));
    h.advance(secs(40));
    assert_eq!(h.core.active_calls(), 0);
}

#[test]
fn cancel_from_a_cancels_every_fork() {
    let mut h = two_phones();
    let (invite, to_b, to_b2) = ring_both(&mut h);
    // A fork is cancelled once it has answered provisionally (§9.1); the
    // rings go to A.
    h.send(B, reply(&to_b, 180, b"t1"));
    h.send(B2, reply(&to_b2, 180, b"t2"));
    let rings = h.take(A);
    assert!(!rings.is_empty());
    assert!(
        rings
            .into_iter()
            .all(|m| response(m).status.as_u16() == 180)
    );
    let cancel = codeb_sip::cancel_for(&invite).unwrap();
    h.send(A, cancel);
    let mut to_a: Vec<u16> = h
        .take(A)
        .into_iter()
        .map(|m| response(m).status.as_u16())
        .collect();
    to_a.sort_unstable();
    assert_eq!(to_a, [200, 487], "CANCEL answered, INVITE terminated");
    for (at, fork, tag) in [(B, &to_b, b"t1"), (B2, &to_b2, b"t2")] {
        let c = request(h.one(at));
        assert_eq!(c.method, Method::Cancel);
        h.send(at, reply(&c, 200, tag));
        h.send(at, reply(fork, 487, tag));
        assert_eq!(request(h.one(at)).method, Method::Ack);
    }
    h.advance(secs(40));
    assert_eq!(h.core.active_calls(), 0);
}

/// An upstream proxy forked A's INVITE and both copies reach us (the
/// same Call-ID, From tag and CSeq, another branch): the copy is refused
/// with 482 (RFC 3261 §8.2.2.2), not answered as a second call; once the
/// call is over, the same Call-ID may call again.
#[test]
fn a_merged_copy_of_a_call_in_progress_is_refused_with_482() {
    let mut h = Harness::new(None);
    let invite = h.invite_from_a("1000", &[]);
    h.send(A, invite.clone());
    let to_b = request(h.one(B));
    assert_eq!(to_b.method, Method::Invite);
    assert_eq!(h.core.active_calls(), 1);
    let text = String::from_utf8(Message::Request(invite.clone()).to_bytes().to_vec()).unwrap();
    let branch = invite.headers.vias().unwrap()[0].branch.clone().unwrap();
    let branch = String::from_utf8(branch.to_vec()).unwrap();
    let copy = text.replace(&branch, &format!("{branch}-fork2"));
    h.core
        .handle_datagram(h.now, SocketId(0), addr(A), copy.as_bytes());
    h.collect();
    let got = response(h.one(A));
    assert_eq!(got.status, StatusCode::LOOP_DETECTED);
    assert_eq!(h.core.active_calls(), 1, "no second call");
    assert!(h.take(B).is_empty(), "nothing rang for the copy");
    // B declines: the call is over, and its key with it.
    let decline = to_b
        .reply(StatusCode::BUSY_HERE, Some(b"bobtag"))
        .build()
        .unwrap();
    h.send(B, decline);
    h.take(A);
    h.take(B);
    assert_eq!(h.core.active_calls(), 0);
    assert!(h.core.calls.by_a_request.is_empty());
}

/// A body in a content coding we do not decode is refused with 415 and
/// the coding we take (RFC 3261 §8.2.3), not read as SDP; `identity` is
/// no coding at all.
#[test]
fn an_offer_in_a_content_coding_we_do_not_decode_gets_415() {
    let mut h = Harness::new(None);
    let invite = h.invite_from_a("1000", &[(KnownHeader::ContentEncoding, "gzip")]);
    h.send(A, invite);
    let got = response(h.one(A));
    assert_eq!(got.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        header(&got, KnownHeader::AcceptEncoding).as_deref(),
        Some("identity")
    );
    assert!(h.take(B).is_empty());
    assert_eq!(h.core.active_calls(), 0);
    let invite = h.invite_from_a("1000", &[(KnownHeader::ContentEncoding, "identity")]);
    h.send(A, invite);
    assert_eq!(request(h.one(B)).method, Method::Invite, "rings");
}

/// A call whose media the worker could not set up (it could not take in
/// a leg's sockets) is given up at once while it rings: every fork is
/// cancelled and A gets 503, instead of a call that would connect with no
/// audio and never go quiet.
#[test]
fn a_ringing_call_whose_media_failed_is_given_up() {
    let mut h = two_phones();
    let (_, to_b, to_b2) = ring_both(&mut h);
    h.send(B, reply(&to_b, 180, b"t1"));
    h.send(B2, reply(&to_b2, 180, b"t2"));
    let _ = h.take(A);
    let key = *h.core.calls.calls.keys().next().unwrap();
    h.core.media_failed(h.now, key, crate::media::LegSide::B);
    // As the SIP thread's loop does after reading media events.
    h.core.drain(h.now);
    assert_eq!(request(h.one(B)).method, Method::Cancel);
    assert_eq!(request(h.one(B2)).method, Method::Cancel);
    assert_eq!(response(h.one(A)).status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.core.calls.ports_in_use(), 0, "its ports are free");
    h.send(B, reply(&to_b, 487, b"t1"));
    h.send(B2, reply(&to_b2, 487, b"t2"));
    h.advance(secs(40));
    assert_eq!(h.core.active_calls(), 0);
}

/// A tenant's route rings only that tenant's users: user names are one
/// namespace across tenants, and a route naming another tenant's user
/// (carol, of b.example, from a route of a.example) reaches no one.
#[test]
fn a_route_does_not_ring_another_tenants_user() {
    for (carols, rung) in [("b.example", false), ("a.example", true)] {
        let mut h = Harness::new(None);
        let mut c = config(&format!(
            "[[users]]\nname = \"carol\"\ncontact = \"sip:carol@{B2}\"\n"
        ));
        c.trunks[0].tenant = "a.example".into();
        for u in c.users.iter_mut().filter(|u| u.name == "carol") {
            u.tenant = carols.into();
        }
        c.routes.insert(
            0,
            crate::config::RouteConfig {
                tenant: "a.example".into(),
                did: "3000".into(),
                from: None,
                user: Some("carol".into()),
                trunk: None,
                virtual_number: None,
            },
        );
        h.core.apply_config(c, std::collections::HashMap::new());
        let invite = h.invite_from_a("3000", &[]);
        h.send(A, invite);
        let to_carol = h.take(B2);
        assert_eq!(
            !to_carol.is_empty(),
            rung,
            "carol of {carols}: {to_carol:?}"
        );
        if !rung {
            let r = response(h.one(A));
            assert!(r.status.as_u16() >= 400, "{:?}", r.status);
        }
    }
}
