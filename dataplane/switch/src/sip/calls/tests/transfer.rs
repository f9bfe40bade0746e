//! Transfers of an AI call's party: the AI's `transfer_to_user` dials the
//! user on the call's free side; an answer bridges the parties and stops
//! the AI; busy, no answer or an unknown user leave the call with the AI,
//! which is told why; a hangup while the user rings cancels the dialling.

use super::originate::{ai_request, answer, challenge, ended, events, place, with_ai};
use super::*;
use crate::ai::{AiNote, AiRequest};
use crate::sip::calls::{CallEventKind, TRANSFER_RING, TRANSFERRED, TransferTarget};

/// A placed AI call, answered by the carrier: the harness, the carrier's
/// dialog and the call's key (from the AI start, which must offer `bob`).
pub(super) fn answered_ai_call(call_id: &str) -> (Harness, Dialog<Peer>, u64) {
    let mut h = Harness::new(None);
    let invite = place(&mut h, call_id, with_ai);
    let invite = challenge(&mut h, &invite);
    let carrier = answer(&mut h, &invite);
    let AiRequest::Start(start) = ai_request(&mut h) else {
        panic!("no AI start");
    };
    assert_eq!(start.transfer_users, ["bob"], "the tenant's users");
    let _ = events(&mut h);
    (h, carrier, start.key)
}

pub(super) fn transfer_to(h: &mut Harness, key: u64, user: &str) {
    h.core.ai_note(
        h.now,
        key,
        AiNote::Transfer {
            id: "fc-1".into(),
            user: user.into(),
        },
    );
}

/// The tool result the AI gets back: (ok, detail).
fn tool_result(h: &mut Harness) -> (bool, String) {
    match ai_request(h) {
        AiRequest::ToolResult { id, ok, detail, .. } => {
            assert_eq!(id, "fc-1");
            (ok, detail)
        }
        r => panic!("expected a tool result, got {r:?}"),
    }
}

/// Bob's phone answers `invite` (PCMA at 192.0.2.20:42000); his dialog.
fn bob_answers(h: &mut Harness, invite: &Request) -> Dialog<Peer> {
    answer_invite(h, B, invite, b"bobtag", ("192.0.2.20", 42000))
}

fn plain(invite: &Request, status: StatusCode) -> Response {
    invite.reply(status, Some(b"bobtag")).build().unwrap()
}

#[test]
fn the_ai_hands_the_callee_to_a_user_and_the_two_are_bridged() {
    let (mut h, carrier, key) = answered_ai_call("oac-tr1");
    assert_eq!(
        h.core.calls.ports_in_use(),
        1,
        "the callee's port alone: the AI takes the other side"
    );
    transfer_to(&mut h, key, "bob");
    assert_eq!(h.core.calls.ports_in_use(), 2, "the free side's, opened");
    let to_bob = request(h.one(B));
    assert_eq!(to_bob.method, Method::Invite);
    let from = header(&to_bob, KnownHeader::From).unwrap();
    assert!(
        from.contains("+15551230000"),
        "bob sees the callee's number: {from}"
    );
    let offer = String::from_utf8_lossy(&to_bob.body).into_owned();
    assert!(
        offer.contains("m=audio 30002 RTP/AVP 8 0"),
        "the free side's port (the callee's is 30000), the callee's codec (PCMA) first: {offer}"
    );
    assert!(h.take(CARRIER).is_empty(), "the callee hears nothing of it");
    let mut bob = bob_answers(&mut h, &to_bob);
    assert!(
        matches!(ai_request(&mut h), AiRequest::Stop(k) if k == key),
        "the AI leaves"
    );
    let evs = events(&mut h);
    assert_eq!(
        evs.iter().map(|e| &e.kind).collect::<Vec<_>>(),
        [&CallEventKind::Transferred {
            to_user: "bob".into(),
            to_phone: String::new(),
            trunk_id: "tr_00000000000000ca".into(),
            transfer_type: "outbound-to-user".into(),
        }]
    );
    // A note that crossed the stop changes nothing.
    h.core.ai_note(
        h.now,
        key,
        AiNote::EndCall {
            reason: "bye".into(),
        },
    );
    assert!(h.take(CARRIER).is_empty(), "no BYE from a late end_call");
    h.core.ai_note(h.now, key, AiNote::Closed);
    assert!(events(&mut h).is_empty(), "the call goes on, bridged");
    h.advance(secs(40));
    // Bob hangs up: the callee gets the BYE; the call ends transferred.
    let bye = bob.request(Method::Bye).unwrap().build().unwrap();
    h.send(B, bye);
    assert_eq!(response(h.one(B)).status, StatusCode::OK);
    let bye = request(h.one(CARRIER));
    assert_eq!(bye.method, Method::Bye);
    h.send(
        CARRIER,
        carrier.reply(&bye, StatusCode::OK).build().unwrap(),
    );
    let evs = events(&mut h);
    let (outcome, _, answered, talk, _) = ended(&evs);
    assert_eq!((outcome.as_str(), answered), (TRANSFERRED, true));
    assert!(talk >= 40, "the bridged talk counts: {talk}");
    assert_eq!(h.core.active_calls(), 0);
    assert_eq!(h.core.dialogs(), 0);
    assert_eq!(h.core.calls.ports_in_use(), 0, "both ports are free");
}

#[test]
fn a_busy_user_leaves_the_call_with_the_ai_and_the_ai_is_told() {
    let (mut h, _carrier, key) = answered_ai_call("oac-tr2");
    transfer_to(&mut h, key, "bob");
    let to_bob = request(h.one(B));
    h.send(B, plain(&to_bob, StatusCode::BUSY_HERE));
    assert_eq!(request(h.one(B)).method, Method::Ack);
    let (ok, why) = tool_result(&mut h);
    assert!(!ok);
    assert_eq!(why, "the target is busy");
    assert!(events(&mut h).is_empty(), "no transfer, no end");
    assert_eq!(h.core.active_calls(), 1);

    // A second try that only rings is given up after the ring time.
    transfer_to(&mut h, key, "bob");
    let to_bob = request(h.one(B));
    h.send(B, plain(&to_bob, StatusCode::RINGING));
    h.advance(TRANSFER_RING);
    let cancel = request(h.one(B));
    assert_eq!(cancel.method, Method::Cancel);
    let (ok, why) = tool_result(&mut h);
    assert_eq!((ok, why.as_str()), (false, "the target did not answer"));
    h.send(B, plain(&cancel, StatusCode::OK));
    h.send(B, plain(&to_bob, StatusCode::REQUEST_TERMINATED));
    assert_eq!(request(h.one(B)).method, Method::Ack);
    assert!(h.take(CARRIER).is_empty());
    assert_eq!(h.core.active_calls(), 1, "the AI still has the callee");
    assert_eq!(
        h.core.calls.ports_in_use(),
        2,
        "the second try used the port the first opened"
    );
}

/// The engine calls off the transfer it asked for (Gemini's
/// `toolCallCancellation`: the caller cut in) while the user rings: the
/// ringing stops, the engine gets no answer (it waits for none), and the
/// AI keeps the callee. A call-off naming another tool call, or coming
/// once nothing rings, changes nothing.
#[test]
fn a_transfer_the_engine_calls_off_stops_ringing_and_the_ai_keeps_the_call() {
    let (mut h, _carrier, key) = answered_ai_call("oac-tr9");
    transfer_to(&mut h, key, "bob");
    let to_bob = request(h.one(B));
    h.send(B, plain(&to_bob, StatusCode::RINGING));
    h.core.ai_note(
        h.now,
        key,
        AiNote::ToolCancelled {
            id: "fc-other".into(),
        },
    );
    assert!(h.take(B).is_empty(), "not this transfer's call");
    h.core
        .ai_note(h.now, key, AiNote::ToolCancelled { id: "fc-1".into() });
    let cancel = request(h.one(B));
    assert_eq!(cancel.method, Method::Cancel);
    h.send(B, plain(&cancel, StatusCode::OK));
    h.send(B, plain(&to_bob, StatusCode::REQUEST_TERMINATED));
    assert_eq!(request(h.one(B)).method, Method::Ack);
    assert!(h.core.poll_ai_request().is_none(), "no tool answer");
    assert!(events(&mut h).is_empty(), "no transfer, no end");
    assert_eq!(h.core.active_calls(), 1, "the AI still has the callee");
    h.core
        .ai_note(h.now, key, AiNote::ToolCancelled { id: "fc-1".into() });
    assert!(h.take(B).is_empty() && h.core.poll_ai_request().is_none());
    assert_eq!(h.core.active_calls(), 1);
}

/// The worker could not take in the sockets of the leg opened for a
/// transfer: the transfer fails (the ringing target is cancelled, the AI
/// told) and the AI keeps the callee; the port goes back, and a later
/// transfer opens the leg again.
#[test]
fn a_transfer_whose_leg_failed_on_its_worker_fails_and_the_ai_keeps_the_call() {
    let (mut h, _carrier, key) = answered_ai_call("oac-tr7");
    transfer_to(&mut h, key, "bob");
    let to_bob = request(h.one(B));
    h.send(B, plain(&to_bob, StatusCode::RINGING));
    assert_eq!(h.core.calls.ports_in_use(), 2);
    h.core.media_failed(h.now, key, crate::media::LegSide::A);
    // As the SIP thread's loop does after reading media events.
    h.core.drain(h.now);
    let cancel = request(h.one(B));
    assert_eq!(cancel.method, Method::Cancel);
    let (ok, why) = tool_result(&mut h);
    assert!(!ok);
    assert!(why.contains("media"), "{why}");
    assert!(h.take(CARRIER).is_empty(), "the callee stays with the AI");
    h.send(B, plain(&cancel, StatusCode::OK));
    h.send(B, plain(&to_bob, StatusCode::REQUEST_TERMINATED));
    assert_eq!(request(h.one(B)).method, Method::Ack);
    assert_eq!(h.core.active_calls(), 1);
    assert_eq!(
        h.core.calls.ports_in_use(),
        1,
        "the failed leg's port is back"
    );
    assert!(events(&mut h).is_empty(), "no end, no transfer");
    // The next try opens the leg afresh.
    transfer_to(&mut h, key, "bob");
    assert_eq!(request(h.one(B)).method, Method::Invite);
    assert_eq!(h.core.calls.ports_in_use(), 2);
}

/// The failure of the free side's leg comes after its transfer already
/// failed (a target that refused at once): the AI keeps the call, and the
/// port goes back.
#[test]
fn a_free_sides_leg_that_failed_after_its_transfer_leaves_the_call_be() {
    let (mut h, _carrier, key) = answered_ai_call("oac-tr9");
    transfer_to(&mut h, key, "bob");
    let to_bob = request(h.one(B));
    h.send(B, plain(&to_bob, StatusCode::BUSY_HERE));
    assert_eq!(request(h.one(B)).method, Method::Ack);
    let (ok, _) = tool_result(&mut h);
    assert!(!ok);
    assert_eq!(h.core.calls.ports_in_use(), 2);
    h.core.media_failed(h.now, key, crate::media::LegSide::A);
    h.core.drain(h.now);
    assert!(h.take(CARRIER).is_empty() && h.take(B).is_empty());
    assert_eq!(h.core.active_calls(), 1, "the AI still has the callee");
    assert_eq!(
        h.core.calls.ports_in_use(),
        1,
        "the failed leg's port is back"
    );
    assert!(events(&mut h).is_empty());
}

/// A placed AI call whose callee's leg failed on its worker while it
/// still rings: that leg is no free side (the callee's SDP names its
/// port), so the call ends, failed and saying why, instead of ringing on
/// with no media.
#[test]
fn a_ringing_ai_calls_callee_leg_that_failed_ends_the_call() {
    let mut h = Harness::new(None);
    let invite = place(&mut h, "oac-tr10", with_ai);
    let invite = challenge(&mut h, &invite);
    h.send(
        CARRIER,
        invite
            .reply(StatusCode::RINGING, Some(b"calleetag"))
            .build()
            .unwrap(),
    );
    let _ = events(&mut h);
    let key = *h.core.calls.calls.keys().next().unwrap();
    h.core.media_failed(h.now, key, crate::media::LegSide::B);
    h.core.drain(h.now);
    let cancel = request(h.one(CARRIER));
    assert_eq!(cancel.method, Method::Cancel);
    h.send(CARRIER, cancel.reply(StatusCode::OK, None).build().unwrap());
    h.send(
        CARRIER,
        invite
            .reply(StatusCode::REQUEST_TERMINATED, Some(b"calleetag"))
            .build()
            .unwrap(),
    );
    let evs = events(&mut h);
    let (outcome, detail, answered, _, _) = ended(&evs);
    assert_eq!((outcome.as_str(), answered), ("failed", false));
    assert!(detail.contains("media"), "{detail}");
    assert_eq!(h.core.calls.ports_in_use(), 0);
}

/// A leg that failed while the call is not transferring (here the
/// callee's own, as if at the call's open): the call cannot carry audio,
/// so it ends, failed and saying why.
#[test]
fn a_call_whose_own_leg_failed_on_its_worker_ends() {
    let (mut h, carrier, key) = answered_ai_call("oac-tr8");
    h.core.media_failed(h.now, key, crate::media::LegSide::B);
    h.core.drain(h.now);
    let bye = request(h.one(CARRIER));
    assert_eq!(bye.method, Method::Bye);
    h.send(
        CARRIER,
        carrier.reply(&bye, StatusCode::OK).build().unwrap(),
    );
    assert!(
        matches!(ai_request(&mut h), AiRequest::Stop(k) if k == key),
        "the AI is stopped"
    );
    h.core.ai_note(h.now, key, AiNote::Closed);
    let evs = events(&mut h);
    let (outcome, detail, answered, _, _) = ended(&evs);
    assert_eq!((outcome.as_str(), answered), ("failed", true));
    assert!(detail.contains("media"), "{detail}");
    assert_eq!(h.core.calls.ports_in_use(), 0);
}

/// With no port left for the free side, the transfer is refused at once
/// and the AI keeps the callee; the port it would have taken is not
/// counted as held.
#[test]
fn a_transfer_with_no_media_port_left_is_refused() {
    let (mut h, _carrier, key) = answered_ai_call("oac-tr6");
    let super::super::media::MediaPorts::Pool(pool) = &mut h.core.calls.media else {
        panic!("the sans-IO core runs on a bare pool");
    };
    let mut taken = Vec::new();
    while let Some(p) = pool.allocate() {
        taken.push(p);
    }
    let held = h.core.calls.ports_in_use();
    transfer_to(&mut h, key, "bob");
    let (ok, why) = tool_result(&mut h);
    assert!(!ok);
    assert!(why.contains("no media port"), "{why}");
    assert!(h.take(B).is_empty(), "bob is not called");
    assert_eq!(h.core.active_calls(), 1, "the AI still has the callee");
    assert_eq!(h.core.calls.ports_in_use(), held);
    // A port freed meanwhile: the next try goes ahead.
    let super::super::media::MediaPorts::Pool(pool) = &mut h.core.calls.media else {
        panic!();
    };
    pool.release(taken[0]);
    transfer_to(&mut h, key, "bob");
    let offer = request(h.one(B)).body;
    let offer = String::from_utf8_lossy(&offer);
    assert!(offer.contains(&format!("m=audio {} ", taken[0])), "{offer}");
}

#[test]
fn a_user_the_call_may_not_reach_is_refused_at_once() {
    let (mut h, _carrier, key) = answered_ai_call("oac-tr3");
    transfer_to(&mut h, key, "mallory");
    let (ok, why) = tool_result(&mut h);
    assert!(!ok);
    assert!(why.contains("mallory"), "{why}");
    assert!(h.take(B).is_empty());
    // The control plane's transfer of an unknown call, or to a number
    // off the whitelist, is refused too.
    assert!(
        h.core
            .transfer_call(h.now, "oac-nope", TransferTarget::User("bob".into()))
            .is_err()
    );
}

/// AI call `call_id` transferring its callee to bob, whose phone rings,
/// when the callee hangs up: the harness, the call's key, the INVITE to
/// bob and our CANCEL of it.
fn callee_hangs_up_while_bob_rings(call_id: &str) -> (Harness, u64, Request, Request) {
    let (mut h, mut carrier, key) = answered_ai_call(call_id);
    h.core
        .transfer_call(h.now, call_id, TransferTarget::User("bob".into()))
        .unwrap();
    let to_bob = request(h.one(B));
    h.send(B, plain(&to_bob, StatusCode::RINGING));
    let bye = carrier.request(Method::Bye).unwrap().build().unwrap();
    h.send(CARRIER, bye);
    assert_eq!(response(h.one(CARRIER)).status, StatusCode::OK);
    let cancel = request(h.one(B));
    assert_eq!(cancel.method, Method::Cancel);
    (h, key, to_bob, cancel)
}

#[test]
fn hanging_up_while_the_user_rings_cancels_the_transfer() {
    let (mut h, key, to_bob, cancel) = callee_hangs_up_while_bob_rings("oac-tr4");
    h.send(B, plain(&cancel, StatusCode::OK));
    h.send(B, plain(&to_bob, StatusCode::REQUEST_TERMINATED));
    assert_eq!(request(h.one(B)).method, Method::Ack);
    assert!(matches!(ai_request(&mut h), AiRequest::Stop(k) if k == key));
    h.core.ai_note(h.now, key, AiNote::Closed);
    let evs = events(&mut h);
    assert_eq!(ended(&evs).0, "far-hangup");
    assert_eq!(h.core.active_calls(), 0);
}

/// A user with two phones, one busy and the other not answering: the AI
/// is told the best answer of the two (busy), not the last one's.
#[test]
fn a_transfer_to_two_phones_reports_the_best_answer() {
    let (mut h, _carrier, key) = answered_ai_call("oac-tr6");
    super::forking::register_bob_at_b2(&mut h);
    transfer_to(&mut h, key, "bob");
    let to_b = request(h.one(B));
    let to_b2 = request(h.one(B2));
    h.send(B, plain(&to_b, StatusCode::BUSY_HERE));
    assert_eq!(request(h.one(B)).method, Method::Ack);
    h.send(
        B2,
        to_b2
            .reply(StatusCode::REQUEST_TIMEOUT, Some(b"b2tag"))
            .build()
            .unwrap(),
    );
    assert_eq!(request(h.one(B2)).method, Method::Ack);
    let (ok, why) = tool_result(&mut h);
    assert_eq!((ok, why.as_str()), (false, "the target is busy"));
}

/// The user answers just as the call ends (their 200 crosses our
/// CANCEL): the call is over, so their dialog is ACKed and hung up at
/// once, no transfer is reported, and nothing outlives the call.
#[test]
fn a_user_answering_as_the_call_ends_is_hung_up_on() {
    let (mut h, key, to_bob, cancel) = callee_hangs_up_while_bob_rings("oac-tr5");
    // Bob picks up before the CANCEL reaches his phone.
    let mut bob = Dialog::uas(
        &to_bob,
        b"bobtag",
        local(B),
        Peer::udp(addr(SW)),
        peer_config(None),
        &mut h.ids,
    )
    .unwrap();
    answer_with_sdp(&mut h, B, &mut bob, &to_bob, ("192.0.2.20", 42000));
    h.send(B, plain(&cancel, StatusCode::OK));
    let sent: Vec<Request> = h
        .take(B)
        .into_iter()
        .filter_map(|m| match m {
            codeb_sip::Message::Request(r) => Some(r),
            codeb_sip::Message::Response(_) => None,
        })
        .collect();
    let methods: Vec<_> = sent.iter().map(|r| r.method.clone()).collect();
    assert_eq!(
        methods,
        [Method::Ack, Method::Bye],
        "ACK, then BYE to the user"
    );
    h.send(B, sent[1].reply(StatusCode::OK, None).build().unwrap());
    assert!(matches!(ai_request(&mut h), AiRequest::Stop(k) if k == key));
    h.core.ai_note(h.now, key, AiNote::Closed);
    let evs = events(&mut h);
    assert!(
        !evs.iter()
            .any(|e| matches!(e.kind, CallEventKind::Transferred { .. })),
        "{evs:#?}"
    );
    assert_eq!(ended(&evs).0, "far-hangup");
    assert_eq!(h.core.active_calls(), 0);
    assert_eq!(h.core.dialogs(), 0, "the user's dialog is gone too");
}

/// DID 7000 is a virtual number whose AI answers callers from A.
pub(super) const RECEPTIONIST: &str = r#"
[[virtual_numbers]]
number = "7000"

[[routes]]
did = "7000"
virtual_number = "7000"
"#;

/// A caller refused before the AI could answer (here: no codec in
/// common, 488) still leaves a record: InboundCall, then CallEnded
/// `failed` with the status it got (before, nothing was reported).
#[test]
fn a_virtual_number_call_refused_before_the_answer_is_reported() {
    let mut h = Harness::with_config(None, RECEPTIONIST);
    let g722 = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 40000 RTP/AVP 9\r\n";
    let invite = h
        .invite(A, "\"Carol\" <sip:+15550002222@192.0.2.10>", "7000")
        .body(
            &crate::sip::calls::sdp_type(),
            Bytes::from_static(g722.as_bytes()),
        )
        .build()
        .unwrap();
    h.send(A, invite);
    assert_eq!(response(h.one(A)).status, StatusCode::NOT_ACCEPTABLE_HERE);
    let evs = events(&mut h);
    assert_eq!(evs.len(), 2, "{evs:#?}");
    assert_eq!(evs[0].call_id, evs[1].call_id);
    assert!(evs[0].call_id.starts_with("vnum"));
    assert_eq!(
        evs[0].kind,
        CallEventKind::Inbound {
            did: "7000".into(),
            from_number: "+15550002222".into(),
            virtual_number: "7000".into(),
            trunk_id: "tr_0000000000000001".into(),
        }
    );
    let (outcome, detail, answered, talk, sip) = ended(&evs);
    assert_eq!(
        (outcome.as_str(), answered, talk, sip),
        ("failed", false, 0, 488)
    );
    assert!(detail.starts_with("refused with SIP 488: "), "{detail}");
    assert_eq!(h.core.active_calls(), 0);
    assert_eq!(h.core.stats.virtual_number_refused, 1);
}

#[test]
fn a_virtual_numbers_caller_is_handed_to_a_user() {
    let mut h = Harness::with_config(None, RECEPTIONIST);
    let invite = h.invite_from_a("7000", &[]);
    let (ok, start) = super::vnum::ai_answers(&mut h, &invite);
    let mut caller = a_dialog(&mut h, &invite, &ok, true, None);
    let key = start.key;
    let call_id = start.call_id.clone();
    let _ = events(&mut h);
    assert_eq!(h.core.calls.ports_in_use(), 1, "the caller's port alone");

    transfer_to(&mut h, key, "bob");
    assert_eq!(h.core.calls.ports_in_use(), 2, "the free side's, opened");
    let to_bob = request(h.one(B));
    let from = header(&to_bob, KnownHeader::From).unwrap();
    assert!(from.contains("+15550002222"), "bob sees the caller: {from}");
    let offer = String::from_utf8_lossy(&to_bob.body).into_owned();
    assert!(
        offer.contains("RTP/AVP 8 0"),
        "the caller's codec (PCMA) first: {offer}"
    );
    let _bob = bob_answers(&mut h, &to_bob);
    assert!(matches!(ai_request(&mut h), AiRequest::Stop(k) if k == key));
    let evs = events(&mut h);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0].call_id, call_id);
    assert_eq!(
        evs[0].kind,
        CallEventKind::Transferred {
            to_user: "bob".into(),
            to_phone: String::new(),
            trunk_id: "tr_0000000000000001".into(),
            transfer_type: "vnum-to-officetab".into(),
        }
    );
    h.core.ai_note(h.now, key, AiNote::Closed);
    // The caller hangs up: bob gets the BYE.
    let bye = caller.request(Method::Bye).unwrap().build().unwrap();
    h.send(A, bye);
    assert_eq!(response(h.one(A)).status, StatusCode::OK);
    let bye = request(h.one(B));
    assert_eq!(bye.method, Method::Bye);
    h.send(B, plain(&bye, StatusCode::OK));
    let evs = events(&mut h);
    assert_eq!(ended(&evs).0, TRANSFERRED);
    assert_eq!(h.core.active_calls(), 0);
    assert_eq!(h.core.calls.ports_in_use(), 0, "both ports are free");
}

#[test]
fn a_number_transfer_goes_out_through_the_calls_trunk() {
    let (mut h, _carrier, _key) = answered_ai_call("oac-tr5");
    let to_phone = |n: &str| TransferTarget::Phone {
        number: n.into(),
        trunk_id: String::new(),
    };
    let refused = h.core.transfer_call(h.now, "oac-tr5", to_phone("sales"));
    assert!(refused.is_err(), "not a number: {refused:?}");
    h.core
        .transfer_call(h.now, "oac-tr5", to_phone("+15557654321"))
        .unwrap();
    // Through the call's own trunk (the carrier, with its credentials).
    let invite = request(h.one(CARRIER));
    assert_eq!(invite.method, Method::Invite);
    assert!(
        text(&invite.uri).starts_with("sip:+15557654321@carrier.example"),
        "{}",
        text(&invite.uri)
    );
    assert!(
        h.core
            .transfer_call(h.now, "oac-tr5", to_phone("+15557654322"))
            .is_err(),
        "one transfer at a time"
    );
}

fn text(u: &codeb_sip::Uri) -> String {
    let mut b = bytes::BytesMut::new();
    u.render(&mut b);
    String::from_utf8_lossy(&b).into_owned()
}
