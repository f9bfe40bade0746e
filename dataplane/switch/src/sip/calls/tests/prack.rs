//! A caller that requires `100rel` (RFC 3262) gets every provisional
//! response reliably: `Require: 100rel` and an RSeq, retransmitted until
//! its PRACK, one at a time; our 2xx waits for the PRACK of a provisional
//! that carried SDP; no PRACK within 64·T1 fails the call with 500; an
//! offer in a PRACK is answered in its 200 (or refused with 488).

use codeb_sip::dialog::Dialog;

use super::*;

const REQUIRE: &[(KnownHeader, &str)] = &[(KnownHeader::Require, "100rel")];

/// A calls bob requiring 100rel.
fn ringing_bob(h: &mut Harness) -> (Request, Request, Dialog<Peer>) {
    bob_called(h, REQUIRE)
}

/// A calls bob with `extra` headers; A's INVITE, bob's, and bob's side.
fn bob_called(h: &mut Harness, extra: &[(KnownHeader, &str)]) -> (Request, Request, Dialog<Peer>) {
    let invite = h.invite_from_a("1000", extra);
    h.send(A, invite.clone());
    let to_b = request(h.one(B));
    assert_eq!(to_b.method, Method::Invite);
    for name in [KnownHeader::Supported, KnownHeader::Require] {
        let tags = header(&to_b, name).unwrap_or_default();
        assert!(!tags.contains("100rel"), "never asked of B: {tags}");
    }
    let b = bob_side(h, &to_b);
    (invite, to_b, b)
}

/// Bob's side of the dialog `to_b` (the switch's INVITE to him) makes.
fn bob_side(h: &mut Harness, to_b: &Request) -> Dialog<Peer> {
    Dialog::uas(
        to_b,
        b"bobtag",
        local(B),
        Peer::udp(addr(SW)),
        peer_config(None),
        &mut h.ids,
    )
    .unwrap()
}

/// The status and CSeq method of each response A got.
fn a_got(h: &mut Harness) -> Vec<(u16, Method)> {
    h.take(A)
        .into_iter()
        .map(response)
        .map(|r| (r.status.as_u16(), r.headers.cseq().unwrap().method))
        .collect()
}

/// Bob's `status` to `to_b` with his SDP.
fn with_sdp(b: &Dialog<Peer>, to_b: &Request, status: StatusCode) -> Response {
    b.reply(to_b, status)
        .body(&super::super::sdp_type(), sdp_answer("192.0.2.20", 42000))
        .build()
        .unwrap()
}

fn rseq(r: &Response) -> u32 {
    header(r, KnownHeader::RSeq).unwrap().parse().unwrap()
}

/// The early dialog A makes from `provisional`.
fn early(h: &mut Harness, invite: &Request, provisional: &Response) -> Dialog<Peer> {
    Dialog::uac(
        h.now,
        invite,
        provisional,
        local(A),
        Peer::udp(addr(SW)),
        peer_config(None),
        &mut h.ids,
    )
    .unwrap()
}

/// A's PRACK for `provisional` in the early dialog it makes.
fn prack(h: &mut Harness, invite: &Request, provisional: &Response, rack: &str) -> Request {
    early(h, invite, provisional)
        .request(Method::Prack)
        .unwrap()
        .header(KnownHeader::RAck, rack.to_owned())
        .build()
        .unwrap()
}

#[test]
fn early_media_goes_reliably_and_the_answer_waits_for_its_prack() {
    let mut h = Harness::new(None);
    let (invite, to_b, mut b) = ringing_bob(&mut h);
    let progress = with_sdp(&b, &to_b, StatusCode::SESSION_PROGRESS);
    h.send(B, progress);
    let to_a = response(h.one(A));
    assert_eq!(to_a.status, StatusCode::SESSION_PROGRESS);
    assert_eq!(header(&to_a, KnownHeader::Require).unwrap(), "100rel");
    assert!(!to_a.body.is_empty(), "early media SDP");
    let n = rseq(&to_a);

    // Unacknowledged, it is sent again after T1, then 2·T1, with the same
    // RSeq.
    h.advance(Duration::from_millis(500));
    let again = response(h.one(A));
    assert_eq!((again.status, rseq(&again)), (to_a.status, n));
    h.advance(Duration::from_millis(999));
    assert!(h.take(A).is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(rseq(&response(h.one(A))), n);

    // Bob rings meanwhile: no second reliable 1xx before the first's PRACK.
    let ringing = b.reply(&to_b, StatusCode::RINGING).build().unwrap();
    h.send(B, ringing);
    assert!(h.take(A).is_empty());

    // Bob answers: B's 2xx is ACKed, A's waits, as the 183 carried SDP.
    let ok_b = with_sdp(&b, &to_b, StatusCode::OK);
    b.sent_response(h.now, &ok_b);
    h.send(B, ok_b);
    assert_eq!(request(h.one(B)).method, Method::Ack);
    assert!(h.take(A).is_empty(), "no 2xx before the PRACK");

    // A PRACK for another RSeq matches nothing: 481.
    let wrong = prack(&mut h, &invite, &to_a, &format!("{} 1 INVITE", n + 1));
    h.send(A, wrong);
    assert_eq!(response(h.one(A)).status, StatusCode::CALL_DOES_NOT_EXIST);

    // The right one: 200 for it, then our 2xx to the INVITE, and no more
    // retransmissions of the 183.
    let right = prack(&mut h, &invite, &to_a, &format!("{n} 2 INVITE"));
    h.send(A, right);
    assert_eq!(
        response(h.one(A)).status,
        StatusCode::CALL_DOES_NOT_EXIST,
        "the CSeq in RAck must be the INVITE's"
    );
    let right = prack(&mut h, &invite, &to_a, &format!("{n} 1 INVITE"));
    h.send(A, right);
    let answers: Vec<Response> = h.take(A).into_iter().map(response).collect();
    let got: Vec<(u16, Method)> = answers
        .iter()
        .map(|r| (r.status.as_u16(), r.headers.cseq().unwrap().method))
        .collect();
    assert_eq!(got, [(200, Method::Prack), (200, Method::Invite)]);
    let mut a = a_dialog(&mut h, &invite, &answers[1], true, None);
    h.advance(secs(10));
    assert!(h.take(A).is_empty(), "nothing retransmitted");
    assert_eq!(h.core.active_calls(), 1);

    let bye = a.request(Method::Bye).unwrap().build().unwrap();
    h.send(A, bye);
    assert_eq!(response(h.one(A)).status, StatusCode::OK);
    assert_eq!(request(h.one(B)).method, Method::Bye);
}

/// Bob rings, then sends early media (a carrier's announcement) before
/// A has PRACKed the 180: the 183 waits for that PRACK and then goes,
/// reliably, with our answer, so A hears the announcement (before, it
/// was dropped and A heard nothing).
#[test]
fn early_media_that_comes_before_the_prack_of_a_180_follows_the_prack() {
    let mut h = Harness::new(None);
    let (invite, to_b, b) = ringing_bob(&mut h);
    h.send(B, b.reply(&to_b, StatusCode::RINGING).build().unwrap());
    let ringing = response(h.one(A));
    assert_eq!(ringing.status, StatusCode::RINGING);
    assert!(ringing.body.is_empty());
    let n = rseq(&ringing);
    h.send(B, with_sdp(&b, &to_b, StatusCode::SESSION_PROGRESS));
    assert!(h.take(A).is_empty(), "not before the 180's PRACK");
    let pracked = prack(&mut h, &invite, &ringing, &format!("{n} 1 INVITE"));
    h.send(A, pracked);
    let got: Vec<Response> = h.take(A).into_iter().map(response).collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        (
            got[0].status.as_u16(),
            got[0].headers.cseq().unwrap().method
        ),
        (200, Method::Prack)
    );
    let progress = &got[1];
    assert_eq!(progress.status, StatusCode::SESSION_PROGRESS);
    assert_eq!(rseq(progress), n + 1);
    assert!(!progress.body.is_empty(), "our answer, for the early media");
}

/// Bob answers quickly: our 2xx goes before A's PRACK of the 180 (which
/// had no SDP), and the PRACK crosses it. It still gets 200: a 481 would
/// make A end the call it just got (RFC 3261 §12.2.1.2).
#[test]
fn a_prack_crossing_our_2xx_gets_200() {
    let mut h = Harness::new(None);
    let (invite, to_b, mut b) = ringing_bob(&mut h);
    h.send(B, b.reply(&to_b, StatusCode::RINGING).build().unwrap());
    let ringing = response(h.one(A));
    let n = rseq(&ringing);
    let ok_b = with_sdp(&b, &to_b, StatusCode::OK);
    b.sent_response(h.now, &ok_b);
    h.send(B, ok_b);
    assert_eq!(request(h.one(B)).method, Method::Ack);
    assert_eq!(a_got(&mut h), [(200, Method::Invite)], "not held");
    // With a body, too, which is no offer now (RFC 3262 §5): the media
    // stays as the INVITE's offer and answer made it.
    let before = a_side(&h);
    let moved = "v=0\r\no=- 1 2 IN IP4 192.0.2.99\r\ns=-\r\nc=IN IP4 192.0.2.99\r\nt=0 0\r\nm=audio 40900 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    assert_eq!(rseq(&ringing), n);
    let late = prack_offering(&mut h, &invite, &ringing, moved);
    h.send(A, late);
    assert_eq!(a_got(&mut h), [(200, Method::Prack)]);
    assert_eq!(a_side(&h), before);
    assert_eq!(h.core.active_calls(), 1);
}

/// A's PRACK for `provisional` carrying `offer`.
pub(super) fn prack_offering(
    h: &mut Harness,
    invite: &Request,
    provisional: &Response,
    offer: &str,
) -> Request {
    early(h, invite, provisional)
        .request(Method::Prack)
        .unwrap()
        .header(KnownHeader::RAck, format!("{} 1 INVITE", rseq(provisional)))
        .body(&super::super::sdp_type(), Bytes::from(offer.to_owned()))
        .build()
        .unwrap()
}

/// The A leg's negotiated codec and far end, as the relay is told them.
fn a_side(h: &Harness) -> (codeb_sip::sdp::Codec, Option<SocketAddr>) {
    let call = h.core.calls.calls.values().next().unwrap();
    let n = call.a.negotiated.as_ref().unwrap();
    (n.codec, n.remote)
}

/// A calls bob requiring 100rel, bob sends early media: A's INVITE and
/// the reliable 183 A got (with our answer).
fn early_media_to_a() -> (Harness, Request, Response) {
    let mut h = Harness::new(None);
    let (invite, to_b, b) = ringing_bob(&mut h);
    h.send(B, with_sdp(&b, &to_b, StatusCode::SESSION_PROGRESS));
    let to_a = response(h.one(A));
    (h, invite, to_a)
}

#[test]
fn an_offer_in_the_prack_is_answered_in_its_200_and_the_call_follows_it() {
    let (mut h, invite, to_a) = early_media_to_a();
    let port = super::attended::audio_port(&to_a.body);
    assert_eq!(
        a_side(&h).0,
        codeb_sip::sdp::Codec::Pcma,
        "A offered PCMA first"
    );
    // A moves to PCMU on another port in its PRACK (RFC 3262 §5).
    let offer = "v=0\r\no=- 1 2 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 40002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let p = prack_offering(&mut h, &invite, &to_a, offer);
    h.send(A, p);
    let ok = response(h.one(A));
    assert_eq!(
        (ok.status, ok.headers.cseq().unwrap().method),
        (StatusCode::OK, Method::Prack)
    );
    let answer = String::from_utf8_lossy(&ok.body).into_owned();
    assert!(
        answer.contains(&format!("m=audio {port} RTP/AVP 0")),
        "our answer, on the port we gave A, in PCMU: {answer}"
    );
    assert_eq!(
        a_side(&h),
        (
            codeb_sip::sdp::Codec::Pcmu,
            Some(SocketAddr::from(([192, 0, 2, 10], 40002)))
        )
    );
}

#[test]
fn an_offer_in_the_prack_we_cannot_answer_gets_488() {
    let (mut h, invite, to_a) = early_media_to_a();
    let offer = "v=0\r\no=- 1 2 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 40002 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n";
    let p = prack_offering(&mut h, &invite, &to_a, offer);
    h.send(A, p);
    assert_eq!(response(h.one(A)).status, StatusCode::NOT_ACCEPTABLE_HERE);
    assert_eq!(
        a_side(&h).0,
        codeb_sip::sdp::Codec::Pcma,
        "the call keeps PCMA"
    );
}

/// B answered while our reliable 183 waited for its PRACK, so our 2xx
/// waits too; the PRACK comes with an offer we cannot answer (488). It
/// still acknowledged the 183: our 2xx goes (before, it was held for good
/// while B talked to nobody).
#[test]
fn a_2xx_held_for_a_prack_we_refuse_with_488_still_goes() {
    let mut h = Harness::new(None);
    let (invite, to_b, mut b) = ringing_bob(&mut h);
    h.send(B, with_sdp(&b, &to_b, StatusCode::SESSION_PROGRESS));
    let to_a = response(h.one(A));
    let ok_b = with_sdp(&b, &to_b, StatusCode::OK);
    b.sent_response(h.now, &ok_b);
    h.send(B, ok_b);
    assert_eq!(request(h.one(B)).method, Method::Ack);
    assert!(h.take(A).is_empty(), "our 2xx waits for the PRACK");
    let g729 = "v=0\r\no=- 1 2 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 40002 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n";
    let p = prack_offering(&mut h, &invite, &to_a, g729);
    h.send(A, p);
    assert_eq!(a_got(&mut h), [(488, Method::Prack), (200, Method::Invite)]);
}

#[test]
fn ringing_without_a_prack_fails_the_call_after_64_t1() {
    let mut h = Harness::new(None);
    let (_invite, to_b, b) = ringing_bob(&mut h);
    let ringing = b.reply(&to_b, StatusCode::RINGING).build().unwrap();
    h.send(B, ringing);
    let to_a = response(h.one(A));
    assert_eq!(to_a.status, StatusCode::RINGING);
    assert!(to_a.body.is_empty());
    assert!(header(&to_a, KnownHeader::RSeq).is_some());
    h.advance(secs(31));
    // T1, 2T1, ... 16T1 (T2 does not cap them, §3 of RFC 3262).
    let resent = h.take(A);
    assert_eq!(resent.len(), 5, "{resent:#?}");
    h.advance(secs(1));
    let finals: Vec<u16> = h
        .take(A)
        .into_iter()
        .map(|m| response(m).status.as_u16())
        .collect();
    assert_eq!(
        finals,
        [180, 500],
        "the last retransmission at 63·T1, then 500"
    );
    assert_eq!(request(h.one(B)).method, Method::Cancel);
}

#[test]
fn a_caller_that_does_not_require_100rel_gets_plain_provisionals() {
    let mut h = Harness::new(None);
    let (_invite, to_b, b) = bob_called(&mut h, &[(KnownHeader::Supported, "100rel")]);
    h.send(B, b.reply(&to_b, StatusCode::RINGING).build().unwrap());
    let to_a = response(h.one(A));
    assert_eq!(to_a.status, StatusCode::RINGING);
    assert_eq!(header(&to_a, KnownHeader::RSeq), None);
    h.advance(secs(2));
    assert!(h.take(A).is_empty(), "not retransmitted");
}

#[test]
fn a_callee_that_hangs_up_before_the_prack_fails_the_callers_invite() {
    let mut h = Harness::new(None);
    let (_invite, to_b, mut b) = ringing_bob(&mut h);
    let progress = with_sdp(&b, &to_b, StatusCode::SESSION_PROGRESS);
    h.send(B, progress);
    assert_eq!(response(h.one(A)).status, StatusCode::SESSION_PROGRESS);
    let ok_b = with_sdp(&b, &to_b, StatusCode::OK);
    b.sent_response(h.now, &ok_b);
    h.send(B, ok_b);
    let ack = request(h.one(B));
    assert_eq!(ack.method, Method::Ack);
    b.handle_request(h.now, &ack);
    // Our 2xx to A waits for the PRACK; bob hangs up meanwhile.
    let bye = b.request(Method::Bye).unwrap().build().unwrap();
    h.send(B, bye);
    assert_eq!(response(h.one(B)).status, StatusCode::OK);
    assert_eq!(
        response(h.one(A)).status,
        StatusCode::TEMPORARILY_UNAVAILABLE
    );
    assert_eq!(h.core.active_calls(), 0);
    // Until A ACKs it, only the 480 is sent again (Timer G), never the 183.
    h.advance(secs(40));
    let again = h.take(A);
    assert!(!again.is_empty());
    assert!(
        again
            .into_iter()
            .all(|m| response(m).status == StatusCode::TEMPORARILY_UNAVAILABLE)
    );
}

/// A calls bob requiring 100rel with no offer in its INVITE, and bob
/// rings: A's INVITE, bob's, bob's side, and the 180 A got.
fn late_offer_ringing(h: &mut Harness) -> (Request, Request, Dialog<Peer>, Response) {
    let invite = h.offerless_invite_from_a("1000", REQUIRE);
    h.send(A, invite.clone());
    let to_b = request(h.one(B));
    assert!(!to_b.body.is_empty(), "B gets our offer as for any call");
    let b = bob_side(h, &to_b);
    h.send(B, b.reply(&to_b, StatusCode::RINGING).build().unwrap());
    let to_a = response(h.one(A));
    (invite, to_b, b, to_a)
}

/// A's answer to our offer: PCMA on 192.0.2.10:40000.
const A_ANSWER: &str = "v=0\r\no=- 5 5 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n";

#[test]
fn a_late_offer_goes_in_the_first_reliable_provisional_and_the_prack_answers_it() {
    let mut h = Harness::new(None);
    let (invite, to_b, mut b, to_a) = late_offer_ringing(&mut h);
    assert_eq!(to_a.status, StatusCode::RINGING);
    assert_eq!(header(&to_a, KnownHeader::Require).unwrap(), "100rel");
    let offer = String::from_utf8_lossy(&to_a.body).into_owned();
    assert!(
        offer.contains("m=audio 30000 RTP/AVP 0 8"),
        "our offer in the first reliable 1xx (RFC 3262 §5): {offer}"
    );

    let p = prack_offering(&mut h, &invite, &to_a, A_ANSWER);
    h.send(A, p);
    let ok = response(h.one(A));
    assert_eq!(
        (ok.status, ok.headers.cseq().unwrap().method),
        (StatusCode::OK, Method::Prack)
    );
    assert!(ok.body.is_empty(), "an answer is not answered: {ok:?}");
    assert_eq!(
        a_side(&h),
        (
            codeb_sip::sdp::Codec::Pcma,
            Some(SocketAddr::from(([192, 0, 2, 10], 40000)))
        ),
        "the PRACK's answer was taken"
    );

    // Bob answers: A's 2xx repeats the description the 180 gave (no new
    // offer), and A's ACK without a body keeps the call.
    let ok_b = with_sdp(&b, &to_b, StatusCode::OK);
    b.sent_response(h.now, &ok_b);
    h.send(B, ok_b);
    assert_eq!(request(h.one(B)).method, Method::Ack);
    let ok_a = response(h.one(A));
    assert_eq!(ok_a.status, StatusCode::OK);
    assert_eq!(ok_a.body, to_a.body, "the same session description");
    let _a = a_dialog(&mut h, &invite, &ok_a, true, None);
    assert!(h.take(A).is_empty() && h.take(B).is_empty(), "nothing else");
    assert_eq!(h.core.active_calls(), 1, "the call is up");
    assert_eq!(a_side(&h).0, codeb_sip::sdp::Codec::Pcma);
}

#[test]
fn a_prack_that_does_not_answer_a_late_offer_fails_the_call_with_488() {
    let mut h = Harness::new(None);
    let (invite, _to_b, _b, to_a) = late_offer_ringing(&mut h);
    assert!(!to_a.body.is_empty(), "our offer");
    let p = prack(&mut h, &invite, &to_a, &format!("{} 1 INVITE", rseq(&to_a)));
    h.send(A, p);
    assert_eq!(
        a_got(&mut h),
        [(200, Method::Prack), (488, Method::Invite)],
        "the PRACK acknowledged; the INVITE fails"
    );
    assert_eq!(request(h.one(B)).method, Method::Cancel);
}

#[test]
fn a_late_offer_from_a_caller_that_only_supports_100rel_rings_plainly() {
    let mut h = Harness::new(None);
    let invite = h.offerless_invite_from_a("1000", &[(KnownHeader::Supported, "100rel")]);
    h.send(A, invite);
    let to_b = request(h.one(B));
    let b = bob_side(&mut h, &to_b);
    h.send(B, b.reply(&to_b, StatusCode::RINGING).build().unwrap());
    let to_a = response(h.one(A));
    assert_eq!(to_a.status, StatusCode::RINGING);
    assert_eq!(header(&to_a, KnownHeader::RSeq), None, "not reliable");
    assert!(to_a.body.is_empty(), "the offer waits for our 2xx");
}

/// Bob answers while A's PRACK for the 180 with our offer is outstanding:
/// B is ACKed, A's 2xx waits for the PRACK (it answers our offer).
fn late_offer_answered_by_bob_first() -> (Harness, Request, Response) {
    let mut h = Harness::new(None);
    let (invite, to_b, mut b, to_a) = late_offer_ringing(&mut h);
    let ok_b = with_sdp(&b, &to_b, StatusCode::OK);
    b.sent_response(h.now, &ok_b);
    h.send(B, ok_b);
    assert_eq!(request(h.one(B)).method, Method::Ack);
    assert!(h.take(A).is_empty(), "no 2xx before the PRACK");
    (h, invite, to_a)
}

#[test]
fn a_2xx_held_for_the_prack_that_answers_our_offer_goes_after_it() {
    let (mut h, invite, to_a) = late_offer_answered_by_bob_first();
    let p = prack_offering(&mut h, &invite, &to_a, A_ANSWER);
    h.send(A, p);
    let got: Vec<Response> = h.take(A).into_iter().map(response).collect();
    let kinds: Vec<(u16, Method)> = got
        .iter()
        .map(|r| (r.status.as_u16(), r.headers.cseq().unwrap().method))
        .collect();
    assert_eq!(kinds, [(200, Method::Prack), (200, Method::Invite)]);
    assert_eq!(got[1].body, to_a.body, "the same description");
    let _a = a_dialog(&mut h, &invite, &got[1], true, None);
    assert!(h.take(B).is_empty());
    assert_eq!(h.core.active_calls(), 1);
}

#[test]
fn a_prack_without_the_answer_after_bob_answered_hangs_bob_up() {
    let (mut h, invite, to_a) = late_offer_answered_by_bob_first();
    let p = prack(&mut h, &invite, &to_a, &format!("{} 1 INVITE", rseq(&to_a)));
    h.send(A, p);
    assert_eq!(a_got(&mut h), [(200, Method::Prack), (488, Method::Invite)]);
    assert_eq!(request(h.one(B)).method, Method::Bye, "B is not left up");
}

#[test]
fn a_cancel_while_the_2xx_waits_for_the_prack_hangs_bob_up() {
    let (mut h, invite, _to_a) = late_offer_answered_by_bob_first();
    h.send(A, codeb_sip::cancel_for(&invite).unwrap());
    assert_eq!(
        a_got(&mut h),
        [(200, Method::Cancel), (487, Method::Invite)],
        "CANCEL answered, INVITE terminated"
    );
    assert_eq!(request(h.one(B)).method, Method::Bye, "B is not left up");
}

/// Bob's early media comes before A has answered our offer: it is kept,
/// and once A's PRACK answers, A gets a 183 (the same description) and
/// both legs are known to the relay.
#[test]
fn early_media_before_the_prack_answer_is_relayed_after_it() {
    let mut h = Harness::new(None);
    let invite = h.offerless_invite_from_a("1000", REQUIRE);
    h.send(A, invite.clone());
    let to_b = request(h.one(B));
    let b = bob_side(&mut h, &to_b);
    h.send(B, with_sdp(&b, &to_b, StatusCode::SESSION_PROGRESS));
    let to_a = response(h.one(A));
    assert_eq!(
        to_a.status,
        StatusCode::RINGING,
        "our offer, not early media"
    );
    assert!(!to_a.body.is_empty());
    let p = prack_offering(&mut h, &invite, &to_a, A_ANSWER);
    h.send(A, p);
    let got: Vec<Response> = h.take(A).into_iter().map(response).collect();
    let kinds: Vec<(u16, Method)> = got
        .iter()
        .map(|r| (r.status.as_u16(), r.headers.cseq().unwrap().method))
        .collect();
    assert_eq!(kinds, [(200, Method::Prack), (183, Method::Invite)]);
    assert_eq!(got[1].body, to_a.body, "the same description");
    assert!(header(&got[1], KnownHeader::RSeq).is_some(), "reliably");
    let call = h.core.calls.calls.values().next().unwrap();
    assert!(call.a.negotiated.is_some() && call.b.negotiated.is_some());
}
