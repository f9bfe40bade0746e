//! What a call does with what its legs send: topology hiding on the
//! B-leg INVITE, re-INVITE and UPDATE answered by the switch on the leg
//! they arrive on, INFO relayed, BYE relayed, the dialog's own checks
//! (CSeq order → 500), and 488 when no codec is common.

use codeb_sip::Method;
use codeb_sip::dialog::Incoming;

use super::*;

fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_b_leg_sees_nothing_of_a() {
    let mut h = Harness::new(None);
    let invite = h.invite_from_a("1000", &[(KnownHeader::Subject, "internal")]);
    // An internal header in an odd spelling, as a raw line.
    let raw = String::from_utf8(Message::from(invite.clone()).to_bytes().to_vec()).unwrap();
    let raw = raw.replacen(
        "\r\n",
        "\r\nX-Bypass-me : lol\r\nX-Internal-Route: 10.0.0.7\r\n",
        1,
    );
    h.core
        .handle_datagram(h.now, codeb_io::SocketId(0), addr(A), raw.as_bytes());
    let to_b = request(h.one(B));
    let wire = text(&Message::from(to_b.clone()).to_bytes());
    let a_call_id = text(&invite.headers.call_id().unwrap());
    for leak in [
        a_call_id.as_str(),
        "192.0.2.10",
        "X-Bypass",
        "X-Internal",
        "10.0.0.7",
        "internal",
        "sip:peer@",
    ] {
        assert!(!wire.contains(leak), "{leak:?} leaked to B:\n{wire}");
    }
    assert_eq!(to_b.headers.vias().unwrap().len(), 1, "only our Via");
    assert!(
        wire.contains("+15550002222"),
        "the caller's number is carried"
    );
    assert!(wire.contains("Carol"), "and the display name");
    // Our media, every codec we offer.
    let sdp = text(&to_b.body);
    assert!(sdp.contains("c=IN IP4 192.0.2.1\r\n"), "{sdp}");
    for codec in [
        "PCMU/8000",
        "PCMA/8000",
        "opus/48000",
        "telephone-event/8000",
    ] {
        assert!(sdp.contains(codec), "{codec} offered:\n{sdp}");
    }
}

/// Our 2xx says what the caller may send in the dialog and which
/// extensions we take (RFC 3261 §13.3.1.4 SHOULD): a carrier decides by
/// them whether to REFER, UPDATE or PRACK.
#[test]
fn our_2xx_lists_allow_and_supported() {
    let mut h = Harness::new(None);
    let call = answered_call(&mut h, Setup::default());
    let allow = header(&call.ok, KnownHeader::Allow).expect("Allow");
    for m in [
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "REFER", "INFO",
    ] {
        assert!(allow.contains(m), "{allow}");
    }
    let supported: Vec<String> = call
        .ok
        .headers
        .get_all(KnownHeader::Supported)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    let supported = supported.join(", ");
    for ext in ["replaces", "norefersub", "100rel"] {
        assert!(supported.contains(ext), "{supported}");
    }
}

#[test]
fn a_hold_reinvite_is_answered_on_its_own_leg() {
    let mut h = Harness::new(None);
    let mut call = answered_call(&mut h, Setup::default());
    let before = text(&call.ok.body);
    let reinvite = hold_reinvite(&mut call.a, "192.0.2.10", 40000, 8);
    h.send(A, reinvite);
    let ok = response(h.one(A));
    assert_eq!(ok.status, StatusCode::OK);
    let answer = text(&ok.body);
    assert!(
        answer.contains("a=recvonly"),
        "hold answered recvonly:\n{answer}"
    );
    assert!(answer.contains("c=IN IP4 192.0.2.1\r\n"), "{answer}");
    // Same session, next version (RFC 3264 §8).
    let o = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("o="))
            .unwrap()
            .split(' ')
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let (o1, o2) = (o(&before), o(&answer));
    assert_eq!(o1[1], o2[1], "session id kept");
    assert_eq!(
        o2[2].parse::<u64>().unwrap(),
        o1[2].parse::<u64>().unwrap() + 1,
        "version bumped"
    );
    call.a.handle_response(h.now, &ok);
    h.flush(A, &mut call.a);
    assert!(h.take(B).is_empty(), "B is not disturbed");
    assert!(h.take(A).is_empty(), "the ACK stopped our 2xx");
    assert_eq!(h.core.active_calls(), 1);
}

/// A re-INVITE without an offer (a PBX's after a transfer, say) gets our
/// offer in the 2xx, and the ACK carries the answer (RFC 3261 §14.2): A's
/// media moves where it says. An ACK without one leaves the media be.
#[test]
fn an_offerless_reinvites_ack_answer_moves_the_media() {
    let mut h = Harness::new(None);
    // Its own ACK (auto, bodiless) is never sent: the test sends one.
    let mut call = answered_call(&mut h, Setup::default());
    let a_remote = |h: &Harness| {
        let c = h.core.calls.calls.values().next().unwrap();
        c.a.negotiated.as_ref().and_then(|n| n.remote)
    };
    let before = a_remote(&h);
    let reinvite_answered = |h: &mut Harness, a: &mut Dialog<Peer>, answer: Option<&str>| {
        let reinvite = a.request(Method::Invite).unwrap().build().unwrap();
        let cseq = reinvite.headers.cseq().unwrap().seq;
        h.send(A, reinvite);
        let ok = response(h.one(A));
        assert_eq!(ok.status, StatusCode::OK);
        assert!(text(&ok.body).contains("m=audio"), "our offer in the 2xx");
        a.handle_response(h.now, &ok);
        let mut ack = a.ack_builder(cseq).unwrap();
        if let Some(answer) = answer {
            ack = ack.body(&super::super::sdp_type(), Bytes::from(answer.to_owned()));
        }
        h.send(A, ack.build().unwrap());
        assert!(h.take(A).is_empty(), "the ACK stopped our 2xx");
        assert!(h.take(B).is_empty(), "B is not disturbed");
    };
    reinvite_answered(&mut h, &mut call.a, None);
    assert_eq!(a_remote(&h), before, "no answer: unchanged");
    let moved = "v=0\r\no=- 7 7 IN IP4 192.0.2.77\r\ns=-\r\nc=IN IP4 192.0.2.77\r\nt=0 0\r\nm=audio 47000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    reinvite_answered(&mut h, &mut call.a, Some(moved));
    assert_eq!(a_remote(&h), Some("192.0.2.77:47000".parse().unwrap()));
    assert_ne!(a_remote(&h), before);
    assert_eq!(h.core.active_calls(), 1);
}

#[test]
fn info_is_relayed_to_the_other_leg() {
    let mut h = Harness::new(None);
    let mut call = answered_call(&mut h, Setup::default());
    let body = Bytes::from_static(b"Signal=5\r\nDuration=160\r\n");
    let ct =
        codeb_sip::header::MediaType::from_bytes(Bytes::from_static(b"application/dtmf-relay"))
            .unwrap();
    let info = call
        .a
        .request(Method::Info)
        .unwrap()
        .body(&ct, body.clone())
        .build()
        .unwrap();
    h.send(A, info);
    assert_eq!(response(h.one(A)).status, StatusCode::OK);
    let relayed = request(h.one(B));
    assert_eq!(relayed.method, Method::Info);
    assert_eq!(relayed.body, body);
    assert_eq!(
        header(&relayed, KnownHeader::ContentType).as_deref(),
        Some("application/dtmf-relay")
    );
    assert_eq!(call.b.handle_request(h.now, &relayed), Incoming::Accept);
    h.send(B, call.b.reply(&relayed, StatusCode::OK).build().unwrap());
    assert!(h.take(A).is_empty());
}

#[test]
fn an_out_of_order_cseq_gets_500() {
    let mut h = Harness::new(None);
    let mut call = answered_call(&mut h, Setup::default());
    let first = call.a.request(Method::Info).unwrap().build().unwrap();
    let second = call.a.request(Method::Info).unwrap().build().unwrap();
    h.send(A, second);
    assert_eq!(response(h.one(A)).status, StatusCode::OK);
    let _ = h.take(B);
    h.send(A, first);
    assert_eq!(response(h.one(A)).status.as_u16(), 500);
    assert!(h.take(B).is_empty(), "a refused request goes nowhere");
}

/// Peers ping their calls with OPTIONS inside the dialog and take 481 as
/// "the call is gone": a ping of a live call is 200 and goes no further,
/// one out of order is 500, and one after the call ended is 481 (it was
/// 200 whatever the dialog, so a far end never learnt its call had gone).
#[test]
fn options_in_a_dialog_answer_for_the_call() {
    let mut h = Harness::new(None);
    let mut call = answered_call(&mut h, Setup::default());
    let first = call.a.request(Method::Options).unwrap().build().unwrap();
    let second = call.a.request(Method::Options).unwrap().build().unwrap();
    h.send(A, second.clone());
    let ok = response(h.one(A));
    assert_eq!(ok.status, StatusCode::OK);
    assert!(header(&ok, KnownHeader::Allow).is_some_and(|a| a.contains("INVITE")));
    assert_eq!(
        ok.headers.to().unwrap().tag(),
        second.headers.to().unwrap().tag(),
        "answered in the dialog"
    );
    assert!(h.take(B).is_empty(), "a ping stays on its leg");
    h.send(A, first);
    assert_eq!(response(h.one(A)).status.as_u16(), 500);
    let late = call.a.request(Method::Options).unwrap().build().unwrap();
    hang_up(&mut h, A, &mut call.a);
    hung_up(&mut h, B, &mut call.b);
    assert_all_ended(&h);
    h.send(A, late);
    assert_eq!(response(h.one(A)).status, StatusCode::CALL_DOES_NOT_EXIST);
    // Outside any dialog it is the switch's own capabilities, as before.
    let ping = h
        .out_of_dialog(Method::Options, A, "<sip:carrier@192.0.2.10>", "1000")
        .build()
        .unwrap();
    h.send(A, ping);
    assert_eq!(response(h.one(A)).status, StatusCode::OK);
}

#[test]
fn bye_from_b_ends_both_legs_and_frees_the_ports() {
    let mut h = Harness::new(None);
    let mut call = answered_call(&mut h, Setup::default());
    assert!(h.core.calls.ports_in_use() > 0);
    let bye = call.b.request(Method::Bye).unwrap().build().unwrap();
    h.send(B, bye);
    assert_eq!(response(h.one(B)).status, StatusCode::OK);
    let to_a = request(h.one(A));
    assert_eq!(to_a.method, Method::Bye);
    assert_eq!(call.a.handle_request(h.now, &to_a), Incoming::Accept);
    h.send(A, call.a.reply(&to_a, StatusCode::OK).build().unwrap());
    assert_eq!(h.core.active_calls(), 0);
    assert_eq!(h.core.dialogs(), 0);
    assert_eq!(h.core.calls.ports_in_use(), 0);
    // A request in the ended dialog: 481.
    let late = call.b.request(Method::Info);
    assert!(late.is_err(), "B's own dialog ended with its BYE");
}

/// B hangs up and A hangs up too before our BYE reaches it: A's BYE gets
/// 200, not 481 (RFC 5407 §3.2.1), and the call still ends once A answers
/// ours.
#[test]
fn a_bye_from_a_crossing_ours_gets_200() {
    let mut h = Harness::new(None);
    let mut call = answered_call(&mut h, Setup::default());
    hang_up(&mut h, B, &mut call.b);
    let ours = request(h.one(A));
    assert_eq!(ours.method, Method::Bye);
    let theirs = call.a.request(Method::Bye).unwrap().build().unwrap();
    h.send(A, theirs);
    assert_eq!(response(h.one(A)).status, StatusCode::OK);
    assert_eq!(h.core.active_calls(), 1, "our BYE is still out");
    let answer = call.a.reply(&ours, StatusCode::OK).build().unwrap();
    h.send(A, answer);
    assert_all_ended(&h);

    // Again, our BYE never answered (A gone after its own): the call ends
    // when it times out, and nothing of it is left.
    let mut call = answered_call(&mut h, Setup::default());
    hang_up(&mut h, B, &mut call.b);
    let _ours = request(h.one(A));
    let theirs = call.a.request(Method::Bye).unwrap().build().unwrap();
    h.send(A, theirs);
    assert_eq!(response(h.one(A)).status, StatusCode::OK);
    h.advance(Duration::from_secs(40));
    assert_all_ended(&h);
}

#[test]
fn no_common_codec_is_488() {
    let mut h = Harness::new(None);
    let invite = h.invite_from_a("1000", &[]);
    let g729 = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 40000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n";
    let raw = String::from_utf8(Message::from(invite.clone()).to_bytes().to_vec()).unwrap();
    let (head, old) = raw.split_once("\r\n\r\n").unwrap();
    let head = head.replace(
        &format!("Content-Length: {}", old.len()),
        &format!("Content-Length: {}", g729.len()),
    );
    assert!(head.contains(&format!("Content-Length: {}", g729.len())));
    h.core.handle_datagram(
        h.now,
        codeb_io::SocketId(0),
        addr(A),
        format!("{head}\r\n\r\n{g729}").as_bytes(),
    );
    assert_eq!(response(h.one(A)).status.as_u16(), 488);
    assert!(h.take(B).is_empty(), "nothing rings");
    assert_eq!(h.core.active_calls(), 0);
}

/// B answers the switch's INVITE; returns our 2xx to A.
fn late_offer_answered(h: &mut Harness) -> (Request, Response) {
    let invite = h.offerless_invite_from_a("1000", &[]);
    h.send(A, invite.clone());
    let to_b = request(h.one(B));
    assert!(!to_b.body.is_empty(), "B gets our offer as for any call");
    answer_invite(h, B, &to_b, b"bobtag", ("192.0.2.20", 42000));
    let ok = response(h.one(A));
    assert_eq!(ok.status, StatusCode::OK);
    (invite, ok)
}

#[test]
fn a_late_offer_is_made_in_our_2xx_and_answered_in_the_ack() {
    let mut h = Harness::new(None);
    let (invite, ok) = late_offer_answered(&mut h);
    let offer = String::from_utf8_lossy(&ok.body).into_owned();
    assert!(
        offer.contains("m=audio 30000 RTP/AVP 0 8"),
        "our full offer to A: {offer}"
    );
    let mut a = a_dialog(&mut h, &invite, &ok, false, None);
    let answer = "v=0\r\no=- 5 5 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n";
    let ack = a
        .ack_builder(1)
        .unwrap()
        .body(
            &super::super::sdp_type(),
            bytes::Bytes::from_static(answer.as_bytes()),
        )
        .build()
        .unwrap();
    h.send(A, ack);
    assert!(h.take(A).is_empty() && h.take(B).is_empty(), "nothing else");
    assert_eq!(h.core.active_calls(), 1, "the call is up");
    let call = h.core.calls.calls.values().next().unwrap();
    let a_codec = call.a.negotiated.as_ref().map(|n| n.codec);
    assert_eq!(
        a_codec,
        Some(codeb_sip::sdp::Codec::Pcma),
        "A's answer was taken"
    );
}

#[test]
fn a_late_offer_left_unanswered_ends_the_call() {
    let mut h = Harness::new(None);
    let (invite, ok) = late_offer_answered(&mut h);
    let mut a = a_dialog(&mut h, &invite, &ok, false, None);
    let ack = a.ack_builder(1).unwrap().build().unwrap();
    h.send(A, ack);
    assert_eq!(request(h.one(A)).method, Method::Bye);
    assert_eq!(request(h.one(B)).method, Method::Bye);
}

/// An INVITE that already went through us (our own Via: our address and
/// branch prefix) is refused with 482; a Via naming another port of our
/// host, or our port with someone else's branch, is not ours.
#[test]
fn an_invite_carrying_our_own_via_is_482() {
    for (second_via, looped) in [
        (
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKcb0123456789abcdef",
            true,
        ),
        (
            "SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bKcb0123456789abcdef",
            false,
        ),
        ("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKother", false),
        (
            "SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKcb0123456789abcdef",
            false,
        ),
    ] {
        let mut h = Harness::new(None);
        let invite = h.invite_from_a("1000", &[]);
        let raw = String::from_utf8(Message::from(invite).to_bytes().to_vec()).unwrap();
        let (top, rest) = raw.split_once("\r\nMax-Forwards").unwrap();
        let raw = format!("{top}\r\nVia: {second_via}\r\nMax-Forwards{rest}");
        h.core
            .handle_datagram(h.now, codeb_io::SocketId(0), addr(A), raw.as_bytes());
        let to_a = h.take(A);
        let refused = to_a
            .iter()
            .any(|m| matches!(m, Message::Response(r) if r.status.as_u16() == 482));
        assert_eq!(refused, looped, "{second_via}: {to_a:?}");
        assert_eq!(
            h.take(B).is_empty(),
            looped,
            "{second_via}: B gets the INVITE unless looped"
        );
    }
}

/// A SIP-I body (ITU-T Q.1912.5): the SDP beside an encapsulated ISUP
/// message, whose handling is `disposition`'s.
fn sip_i(sdp: &str, disposition: &str) -> (codeb_sip::header::MediaType, Bytes) {
    let ct = codeb_sip::header::MediaType::from_bytes(Bytes::from_static(
        b"multipart/mixed;boundary=unique-boundary-1",
    ))
    .unwrap();
    let body = format!(
        "--unique-boundary-1\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n\
         --unique-boundary-1\r\nContent-Type: application/isup;version=itu-t92+\r\n\
         {disposition}\r\n\x01\x10\x48\x00\x0a\x03\x02\x0a\x08\r\n--unique-boundary-1--\r\n"
    );
    (ct, Bytes::from(body))
}

/// SIP-I and SIP-T carriers send the SDP in a multipart beside the ISUP
/// message, both ways: the switch takes the SDP and carries the call
/// (they were refused with 415); an ISUP part marked required is refused
/// with 415 naming what is taken (RFC 5621 §9), a broken multipart 400.
#[test]
fn a_sip_i_carrier_call_is_carried_on_its_sdp() {
    let mut h = Harness::new(None);
    let offer = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 40000 RTP/AVP 8\r\n";
    let (ct, body) = sip_i(offer, "Content-Disposition: signal;handling=optional\r\n");
    let invite = h
        .invite(A, "<sip:+15550002222@192.0.2.10>", "1000")
        .body(&ct, body)
        .build()
        .unwrap();
    h.send(A, invite.clone());
    let to_b = request(h.one(B));
    assert_eq!(to_b.method, Method::Invite);
    assert!(
        to_b.headers
            .content_type()
            .unwrap()
            .unwrap()
            .is("application/sdp")
    );
    assert!(text(&to_b.body).contains("m=audio"), "B is offered our SDP");
    // B is a SIP-I carrier too: its 200's SDP is in a multipart.
    let mut b = Dialog::uas(
        &to_b,
        b"bobtag",
        local(B),
        Peer::udp(addr(SW)),
        peer_config(None),
        &mut h.ids,
    )
    .unwrap();
    let (ct, body) = sip_i(
        &text(&sdp_answer("192.0.2.20", 42000)),
        "Content-Disposition: signal;handling=optional\r\n",
    );
    let ok_b = b
        .reply(&to_b, StatusCode::OK)
        .body(&ct, body)
        .build()
        .unwrap();
    b.sent_response(h.now, &ok_b);
    h.send(B, ok_b);
    assert_eq!(request(h.one(B)).method, Method::Ack);
    let ok = response(h.one(A));
    assert_eq!(ok.status, StatusCode::OK, "A's call is answered");
    assert!(text(&ok.body).contains("m=audio"), "A gets our answer");
    assert_eq!(h.core.active_calls(), 1);

    // The ISUP must be understood: 415, and what the switch takes.
    let (ct, body) = sip_i(offer, "Content-Disposition: signal;handling=required\r\n");
    let invite = h
        .invite(A, "<sip:+15550002222@192.0.2.10>", "1000")
        .body(&ct, body)
        .build()
        .unwrap();
    h.send(A, invite);
    let refused = response(h.one(A));
    assert_eq!(refused.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let accept = header(&refused, KnownHeader::Accept).unwrap();
    assert!(accept.contains("application/sdp") && accept.contains("multipart/mixed"));
    // Cut short: no close delimiter.
    let (ct, body) = sip_i(offer, "");
    let invite = h
        .invite(A, "<sip:+15550002222@192.0.2.10>", "1000")
        .body(&ct, body.slice(..60))
        .build()
        .unwrap();
    h.send(A, invite);
    assert_eq!(response(h.one(A)).status, StatusCode::BAD_REQUEST);
    assert!(h.take(B).is_empty(), "neither reached B");
    assert_eq!(h.core.active_calls(), 1);
}

/// A switch told to stop (SIGTERM) ends its calls before it exits: the
/// answered call's legs get their BYE, and a new INVITE gets 503. Before,
/// it exited at once and far ends sat in dead calls.
#[test]
fn a_switch_shutting_down_hangs_up_its_calls_and_takes_no_new_one() {
    let mut h = Harness::new(None);
    let mut call = answered_call(&mut h, Setup::default());
    assert!(h.core.shut_down_calls(h.now), "the call is still ending");
    let bye_a = request(h.one(A));
    let bye_b = request(h.one(B));
    assert_eq!((&bye_a.method, &bye_b.method), (&Method::Bye, &Method::Bye));
    let invite = h.invite_from_a("1000", &[]);
    h.send(A, invite);
    let refused = response(h.one(A));
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        header(&refused, KnownHeader::RetryAfter).as_deref(),
        Some("10"),
        "upstream sends this node nothing new for a while"
    );
    answer_bye(&mut h, A, &mut call.a, &bye_a);
    answer_bye(&mut h, B, &mut call.b, &bye_b);
    assert!(!h.core.shut_down_calls(h.now), "nothing left: it may exit");
    assert_eq!(h.core.active_calls(), 0);
}
