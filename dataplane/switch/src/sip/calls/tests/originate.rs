//! Calls the switch places itself (PlaceCall), with the carrier scripted
//! in-process and time stepped: the digest challenge answered, answer and
//! far hangup, busy, the ring timeout's CANCEL, Hangup before and after
//! the answer, the talk-time limit, the trunk's limits, and idempotency.

use codeb_sip::dialog::Incoming;
use codeb_sip::digest::{Algorithm, Check, Verifier};

use super::*;
use crate::sip::calls::{CallEvent, CallEventKind, Originate, OriginateError};

const CARRIER_TRUNK: &str = "tr_00000000000000ca";

pub(super) fn place(h: &mut Harness, call_id: &str, tweak: impl FnOnce(&mut Originate)) -> Request {
    let mut req = Originate {
        call_id: call_id.into(),
        tenant: "example.com".into(),
        phone: "+15551230000".into(),
        display_name: "Reminder \"Bot\"".into(),
        trunk_id: CARRIER_TRUNK.into(),
        ..Originate::default()
    };
    tweak(&mut req);
    let placed = h.core.place_call(h.now, req).expect("placed");
    assert_eq!(placed.trunk_id, CARRIER_TRUNK);
    assert!(!placed.duplicate);
    let invite = request(h.one(CARRIER));
    assert_eq!(invite.method, Method::Invite);
    invite
}

/// The carrier's plain reply (provisional or failure) to `invite`.
pub(super) fn reply(h: &mut Harness, invite: &Request, status: StatusCode) {
    let r = invite.reply(status, Some(b"carriertag")).build().unwrap();
    h.send(CARRIER, r);
}

/// The carrier answers: its dialog, after the switch's ACK.
pub(super) fn answer(h: &mut Harness, invite: &Request) -> Dialog<Peer> {
    answer_invite(h, CARRIER, invite, b"carriertag", ("192.0.2.30", 44000))
}

pub(super) fn events(h: &mut Harness) -> Vec<CallEvent> {
    std::iter::from_fn(|| h.core.poll_call_event()).collect()
}

/// The one CallEnded among `evs`: (outcome, detail, answered, talk, status).
pub(super) fn ended(evs: &[CallEvent]) -> (String, String, bool, u32, u16) {
    let ends: Vec<_> = evs
        .iter()
        .filter_map(|e| match &e.kind {
            CallEventKind::Ended {
                outcome,
                error_detail,
                answered,
                talk_seconds,
                sip_status,
                ..
            } => Some((
                outcome.clone(),
                error_detail.clone(),
                *answered,
                *talk_seconds,
                *sip_status,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(ends.len(), 1, "{evs:#?}");
    ends[0].clone()
}

/// Answers the switch's INVITE with a digest challenge and checks the
/// credentials of the INVITE it sends again; returns that INVITE.
pub(super) fn challenge(h: &mut Harness, invite: &Request) -> Request {
    let verifier = Verifier::new([3; 32], "carrier.example");
    let nonce = verifier.nonce(1_700_000_000, [1; 8]);
    let r = invite
        .reply(StatusCode::UNAUTHORIZED, Some(b"authtag"))
        .header(
            KnownHeader::WwwAuthenticate,
            verifier.challenge(&nonce, Algorithm::Md5, false),
        )
        .build()
        .unwrap();
    h.send(CARRIER, r);
    let mut got = h.take(CARRIER);
    assert_eq!(
        got.len(),
        2,
        "ACK of the 401 and the INVITE again: {got:#?}"
    );
    assert_eq!(request(got.remove(0)).method, Method::Ack);
    let again = request(got.remove(0));
    assert_eq!(again.method, Method::Invite);
    let creds = again.headers.authorizations().unwrap();
    assert_eq!(creds.len(), 1);
    assert_eq!(
        verifier.check(&creds[0], "INVITE", "s3cret", 1_700_000_001),
        Check::Ok,
        "the trunk's credentials answer the challenge"
    );
    again
}

#[test]
fn placed_call_authenticates_is_answered_and_ends_with_the_far_hangup() {
    let mut h = Harness::new(None);
    let invite = place(&mut h, "oac-000000000001", |_| {});
    assert_eq!(
        text_uri(&invite.uri),
        "sip:+15551230000@carrier.example:5060"
    );
    let from = header(&invite, KnownHeader::From).unwrap();
    assert!(
        from.starts_with("\"Reminder Bot\" <sip:acct@carrier.example>"),
        "{from}"
    );
    assert!(invite.body.starts_with(b"v=0"), "an SDP offer");
    assert!(
        String::from_utf8_lossy(&invite.body).contains("c=IN IP4 192.0.2.1"),
        "our media address"
    );
    let invite = challenge(&mut h, &invite);
    reply(&mut h, &invite, StatusCode::RINGING);
    assert!(events(&mut h).is_empty());
    h.advance(secs(3));
    let mut carrier = answer(&mut h, &invite);
    let evs = events(&mut h);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0].call_id, "oac-000000000001");
    assert_eq!(evs[0].tenant, "example.com");
    assert_eq!(
        evs[0].kind,
        CallEventKind::Answered {
            trunk_id: CARRIER_TRUNK.into(),
            answer_ms: 3000,
            inbound: false,
        }
    );
    assert_eq!(evs[0].at_unix_ms, 1_700_000_003_000);
    assert_eq!(h.core.placed_calls(), 1);

    // Without a persona the call has no AI leg: it stays up until the
    // carrier hangs up. 6.5 s of talk is 7 whole seconds (to the nearest,
    // as the spec's example rounds 144.5 s to 145).
    h.advance(Duration::from_millis(6_500));
    assert!(h.take(CARRIER).is_empty());
    let bye = carrier.request(Method::Bye).unwrap().build().unwrap();
    h.send(CARRIER, bye);
    let ok = response(h.one(CARRIER));
    assert_eq!(ok.status, StatusCode::OK);
    let evs = events(&mut h);
    let (outcome, detail, answered, talk, status) = ended(&evs);
    assert_eq!(
        (outcome.as_str(), detail.as_str(), answered, talk, status),
        ("far-hangup", "", true, 7, 0)
    );
    match &evs[0].kind {
        CallEventKind::Ended {
            answered_at_unix_ms,
            duration_seconds,
            ..
        } => {
            assert_eq!(*answered_at_unix_ms, 1_700_000_003_000);
            assert_eq!(*duration_seconds, 10);
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(h.core.placed_calls(), 0);
    assert_eq!(h.core.active_calls(), 0);
    assert_eq!(h.core.calls.ports_in_use(), 0, "the media port is free");
}

fn text_uri(u: &Uri) -> String {
    let mut b = bytes::BytesMut::new();
    u.render(&mut b);
    String::from_utf8_lossy(&b).into_owned()
}

#[test]
fn busy_and_other_failures_become_outcomes() {
    for (status, outcome, detail) in [
        (StatusCode::BUSY_HERE, "busy", ""),
        (StatusCode::new(600).unwrap(), "busy", ""),
        (StatusCode::TEMPORARILY_UNAVAILABLE, "no-answer", ""),
        // The carrier's own 408: its callee did not answer in time.
        (StatusCode::REQUEST_TIMEOUT, "no-answer", ""),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "failed",
            "SIP 503 Service Unavailable",
        ),
        (StatusCode::DECLINE, "failed", "SIP 603 Decline"),
    ] {
        let mut h = Harness::new(None);
        let invite = place(&mut h, "oac-busy", |_| {});
        reply(&mut h, &invite, StatusCode::RINGING);
        reply(&mut h, &invite, status);
        let ack = request(h.one(CARRIER));
        assert_eq!(ack.method, Method::Ack, "the failure is ACKed");
        h.advance(secs(40));
        let evs = events(&mut h);
        assert_eq!(
            ended(&evs),
            (
                outcome.to_owned(),
                detail.to_owned(),
                false,
                0,
                status.as_u16()
            ),
            "{status}"
        );
        assert_eq!(h.core.active_calls(), 0);
    }
}

/// A trunk that never answers the INVITE at all (down, or unreachable):
/// Timer B's 408 is ours, and the attempt `failed` saying so, not
/// `no-answer` as if a callee had let it ring.
#[test]
fn a_trunk_that_never_answers_fails_the_attempt() {
    let mut h = Harness::new(None);
    let invite = place(&mut h, "oac-silent", |_| {});
    assert_eq!(invite.method, Method::Invite);
    h.advance(secs(40));
    let evs = events(&mut h);
    assert_eq!(
        ended(&evs),
        (
            "failed".into(),
            "the trunk did not answer the INVITE (no SIP response)".into(),
            false,
            0,
            408
        )
    );
    assert_eq!(h.core.active_calls(), 0);
}

#[test]
fn ring_timeout_cancels_and_ends_as_no_answer() {
    let mut h = Harness::new(None);
    let invite = place(&mut h, "oac-ring", |r| r.ring_timeout_seconds = 20);
    reply(&mut h, &invite, StatusCode::RINGING);
    h.advance(Duration::from_millis(19_999));
    assert!(h.take(CARRIER).is_empty(), "still ringing");
    h.advance(Duration::from_millis(1));
    let cancel = request(h.one(CARRIER));
    assert_eq!(cancel.method, Method::Cancel);
    h.send(CARRIER, cancel.reply(StatusCode::OK, None).build().unwrap());
    reply(&mut h, &invite, StatusCode::REQUEST_TERMINATED);
    assert_eq!(request(h.one(CARRIER)).method, Method::Ack);
    let evs = events(&mut h);
    assert_eq!(
        ended(&evs),
        ("no-answer".into(), String::new(), false, 0, 487)
    );
    assert_eq!(h.core.active_calls(), 0);
}

#[test]
fn hangup_before_the_answer_cancels() {
    let mut h = Harness::new(None);
    let invite = place(&mut h, "oac-early", |_| {});
    reply(&mut h, &invite, StatusCode::RINGING);
    h.core
        .hangup_call(h.now, "oac-early", None)
        .expect("a known call");
    let cancel = request(h.one(CARRIER));
    assert_eq!(cancel.method, Method::Cancel);
    h.send(CARRIER, cancel.reply(StatusCode::OK, None).build().unwrap());
    // The carrier's 200 crossed our CANCEL: ACKed, then hung up.
    let mut carrier = Dialog::uas(
        &invite,
        b"carriertag",
        local(CARRIER),
        Peer::udp(addr(SW)),
        peer_config(None),
        &mut h.ids,
    )
    .unwrap();
    let ok = carrier
        .reply(&invite, StatusCode::OK)
        .body(&super::super::sdp_type(), sdp_answer("192.0.2.30", 44000))
        .build()
        .unwrap();
    carrier.sent_response(h.now, &ok);
    h.send(CARRIER, ok);
    let got: Vec<_> = h.take(CARRIER).into_iter().map(request).collect();
    let methods: Vec<_> = got.iter().map(|r| r.method.clone()).collect();
    assert_eq!(
        methods,
        vec![Method::Ack, Method::Bye],
        "a late 2xx is hung up"
    );
    assert!(events(&mut h).is_empty(), "over once the BYE is answered");
    // The BYE answered, the call is over at once: its INVITE got its
    // final response, nothing is left to wait for (it waited out the
    // INVITE transaction's 32 s).
    h.send(CARRIER, got[1].reply(StatusCode::OK, None).build().unwrap());
    let evs = events(&mut h);
    let (outcome, _, answered, _, _) = ended(&evs);
    assert_eq!((outcome.as_str(), answered), ("cancelled", false));
    assert!(
        evs.iter()
            .all(|e| !matches!(e.kind, CallEventKind::Answered { .. })),
        "a cancelled call never reports an answer"
    );
    assert_eq!(h.core.active_calls(), 0);
}

/// The end is reported, and timed, as our BYE goes out (RFC 3261
/// §15.1.1), not when the far end answers it: a far end that never does
/// kept the record in-flight for 64·T1 and added that to its talk time.
#[test]
fn hangup_after_the_answer_sends_bye_and_reports_the_end_at_once() {
    let mut h = Harness::new(None);
    let invite = place(&mut h, "oac-bye", |_| {});
    let mut carrier = answer(&mut h, &invite);
    let _ = events(&mut h);
    h.advance(secs(4));
    assert_eq!(
        h.core.hangup_call(h.now, "oac-bye", Some("finished")),
        Ok(false),
        "this hangup ends it"
    );
    let evs = events(&mut h);
    assert_eq!(ended(&evs), ("finished".into(), String::new(), true, 4, 0));
    let at = h.core.wall_ms(h.now);
    assert_eq!(evs[0].at_unix_ms, at);
    assert_eq!(
        h.core.hangup_call(h.now, "oac-bye", None),
        Ok(true),
        "a second one, while the BYE is out, changes nothing"
    );
    let bye = request(h.one(CARRIER));
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(carrier.handle_request(h.now, &bye), Incoming::Accept);
    // The far end never answers: the BYE times out, and nothing more is
    // reported.
    h.advance(secs(40));
    let _ = h.take(CARRIER);
    assert!(events(&mut h).is_empty());
    assert_eq!(h.core.active_calls(), 0);
    assert_eq!(
        h.core.hangup_call(h.now, "oac-bye", None),
        Err(crate::sip::calls::UnknownCall("oac-bye".into())),
        "an ended call is unknown"
    );
}

#[test]
fn talk_time_limit_hangs_up() {
    let mut h = Harness::new(None);
    let invite = place(&mut h, "oac-max", |r| r.max_seconds = 5);
    let mut carrier = answer(&mut h, &invite);
    let _ = events(&mut h);
    h.advance(Duration::from_millis(4_999));
    assert!(h.take(CARRIER).is_empty());
    h.advance(Duration::from_millis(1));
    let bye = request(h.one(CARRIER));
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(carrier.handle_request(h.now, &bye), Incoming::Accept);
    h.send(
        CARRIER,
        carrier.reply(&bye, StatusCode::OK).build().unwrap(),
    );
    let evs = events(&mut h);
    assert_eq!(
        ended(&evs),
        ("max-duration".into(), String::new(), true, 5, 0)
    );
}

/// The control link asks for `attempt` of call `id` through the carrier.
fn ask_to_place(
    h: &mut Harness,
    id: &str,
    attempt: u32,
) -> Result<crate::sip::calls::Placed, OriginateError> {
    h.core.place_call(
        h.now,
        Originate {
            call_id: id.into(),
            phone: "+15551230000".into(),
            trunk_id: CARRIER_TRUNK.into(),
            attempt,
            ..Originate::default()
        },
    )
}

/// A full event journal refuses new calls, but an attempt placed already
/// is still told as such (its first answer lost, the control plane asks
/// again; told "refused" it would place the call elsewhere as well), and
/// so is one asked of a switch that is shutting down.
#[test]
fn a_full_journal_or_a_shutdown_refuses_new_calls_not_repeats() {
    let mut h = Harness::new(None);
    let _invite = place(&mut h, "oac-placed", |_| {});
    let ask = |h: &mut Harness, id: &str| ask_to_place(h, id, 1);
    h.core.set_journal_full(true);
    assert!(matches!(
        ask(&mut h, "oac-new"),
        Err(OriginateError::ResourceExhausted(m)) if m.contains("journal")
    ));
    assert!(ask(&mut h, "oac-placed").unwrap().duplicate);
    assert!(h.take(CARRIER).is_empty(), "nothing rings");
    h.core.set_journal_full(false);
    h.core.shut_down_calls(h.now);
    assert!(ask(&mut h, "oac-placed").unwrap().duplicate);
    assert!(matches!(
        ask(&mut h, "oac-new"),
        Err(OriginateError::ResourceExhausted(m)) if m.contains("shutting down")
    ));
}

/// A hangup names its attempt: one not placed here is never placed after
/// (its PlaceCall was still on its way), a retry still is; one that ended
/// here is over; one while another attempt is up ends that one and the
/// attempt named is not placed after it.
#[test]
fn a_hangup_of_an_attempt_not_placed_here_keeps_it_from_ringing() {
    let mut h = Harness::new(None);
    let ask = ask_to_place;
    assert!(h.core.hangup_attempt(h.now, "oac-h1", None, 1).is_err());
    assert!(matches!(
        ask(&mut h, "oac-h1", 1),
        Err(OriginateError::FailedPrecondition(m)) if m.contains("hung up before")
    ));
    assert!(h.take(CARRIER).is_empty(), "nothing rings");
    assert!(
        !ask(&mut h, "oac-h1", 2).unwrap().duplicate,
        "a retry rings"
    );
    assert_eq!(request(h.one(CARRIER)).method, Method::Invite);
    // Attempt 2 is up; a hangup naming attempt 3 ends it, and 3 never rings.
    assert_eq!(h.core.hangup_attempt(h.now, "oac-h1", None, 3), Ok(false));
    h.advance(secs(40));
    let _ = events(&mut h);
    assert!(matches!(
        ask(&mut h, "oac-h1", 3),
        Err(OriginateError::FailedPrecondition(m)) if m.contains("hung up before")
    ));
    // Attempt 2 ended here: it is over, not unknown.
    assert_eq!(h.core.hangup_attempt(h.now, "oac-h1", None, 2), Ok(true));
}

#[test]
fn placing_again_is_idempotent() {
    let mut h = Harness::new(None);
    let invite = place(&mut h, "oac-twice", |_| {});
    let again = h
        .core
        .place_call(
            h.now,
            Originate {
                call_id: "oac-twice".into(),
                phone: "+15551230000".into(),
                trunk_id: CARRIER_TRUNK.into(),
                ..Originate::default()
            },
        )
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.trunk_id, CARRIER_TRUNK);
    assert!(h.take(CARRIER).is_empty(), "nothing rings twice");
    reply(&mut h, &invite, StatusCode::BUSY_HERE);
    assert_eq!(request(h.one(CARRIER)).method, Method::Ack);
    h.advance(secs(40));
    let _ = events(&mut h);
    // Still a duplicate after the call ended.
    let later = h
        .core
        .place_call(
            h.now,
            Originate {
                call_id: "oac-twice".into(),
                phone: "+15551230000".into(),
                ..Originate::default()
            },
        )
        .unwrap();
    assert!(later.duplicate);
    assert!(h.take(CARRIER).is_empty());
    // A retry is a new attempt of the same call: it rings.
    let retry = h
        .core
        .place_call(
            h.now,
            Originate {
                call_id: "oac-twice".into(),
                phone: "+15551230000".into(),
                trunk_id: CARRIER_TRUNK.into(),
                attempt: 2,
                ..Originate::default()
            },
        )
        .unwrap();
    assert!(!retry.duplicate);
    assert_eq!(request(h.one(CARRIER)).method, Method::Invite);
    // A third attempt while the second rings is refused, not dialled.
    assert!(matches!(
        h.core.place_call(
            h.now,
            Originate {
                call_id: "oac-twice".into(),
                phone: "+15551230000".into(),
                trunk_id: CARRIER_TRUNK.into(),
                attempt: 3,
                ..Originate::default()
            },
        ),
        Err(OriginateError::FailedPrecondition(m)) if m.contains("still in progress")
    ));
    assert!(h.take(CARRIER).is_empty());
}

#[test]
fn refusals_name_their_reason() {
    let extra = r#"
[[trunks]]
id = "tr_00000000000000cb"
tenant = "example.com"
host = "carrier.example"
max_concurrent_calls = 1
options_interval = 0
"#;
    let mut h = Harness::with_config(None, extra);
    let base = Originate {
        call_id: "oac-1".into(),
        tenant: "example.com".into(),
        phone: "+15551230000".into(),
        ..Originate::default()
    };
    let try_place = |h: &mut Harness, f: &dyn Fn(&mut Originate)| {
        let mut r = base.clone();
        f(&mut r);
        h.core.place_call(h.now, r)
    };
    assert!(matches!(
        try_place(&mut h, &|r| r.phone = "12ab".into()),
        Err(OriginateError::InvalidArgument(_))
    ));
    assert!(matches!(
        try_place(&mut h, &|r| r.call_id = String::new()),
        Err(OriginateError::InvalidArgument(_))
    ));
    assert!(matches!(
        try_place(&mut h, &|r| r.trunk_id = "tr_nope".into()),
        Err(OriginateError::FailedPrecondition(_))
    ));
    // Tenant example.com's only trunk is its default; it has no address.
    assert!(matches!(
        try_place(&mut h, &|_| {}),
        Err(OriginateError::FailedPrecondition(m)) if m.contains("no address")
    ));
    assert!(matches!(
        try_place(&mut h, &|r| r.tenant = "other.example".into()),
        Err(OriginateError::FailedPrecondition(m)) if m.contains("no default trunk")
    ));
    assert!(h.take(CARRIER).is_empty());
}

#[test]
fn trunk_limits_refuse_with_resource_exhausted() {
    let extra = r#"
[[trunks]]
id = "tr_00000000000000cc"
host = "carrier.example"
max_concurrent_calls = 1
options_interval = 0
"#;
    let mut h = Harness::with_config(None, extra);
    h.core
        .trunk_addrs
        .insert("tr_00000000000000cc".into(), addr(CARRIER));
    let mk = |id: &str| Originate {
        call_id: id.into(),
        phone: "+15551230000".into(),
        trunk_id: "tr_00000000000000cc".into(),
        ..Originate::default()
    };
    h.core.place_call(h.now, mk("oac-a")).unwrap();
    let invite = request(h.one(CARRIER));
    assert!(matches!(
        h.core.place_call(h.now, mk("oac-b")),
        Err(OriginateError::ResourceExhausted(m)) if m.contains("limit")
    ));
    reply(&mut h, &invite, StatusCode::BUSY_HERE);
    h.advance(secs(1));
    assert!(
        h.core.place_call(h.now, mk("oac-c")).is_ok(),
        "the slot is free again"
    );
}

pub(super) fn with_ai(r: &mut Originate) {
    r.ai = Some(crate::ai::Persona {
        model: "gemini-live-2.5-flash".into(),
        system_prompt: "Remind the callee of the appointment.".into(),
        ..crate::ai::Persona::default()
    });
}

/// The hub's next request: the call's AI start (its key) or a stop.
pub(super) fn ai_request(h: &mut Harness) -> crate::ai::AiRequest {
    h.core.poll_ai_request().expect("a request for the AI hub")
}

#[test]
fn an_ai_call_reports_its_conversation_and_ends_when_the_ai_says_goodbye() {
    use crate::ai::{AiNote, AiRequest, Role};
    let mut h = Harness::new(None);
    let invite = place(&mut h, "oac-ai", with_ai);
    let invite = challenge(&mut h, &invite);
    reply(&mut h, &invite, StatusCode::RINGING);
    h.advance(secs(2));
    let carrier = answer(&mut h, &invite);
    let key = match ai_request(&mut h) {
        AiRequest::Start(s) => {
            assert_eq!(s.call_id, "oac-ai");
            assert_eq!(s.tap.to_engine_rate(), 16_000, "Gemini hears 16 kHz");
            assert_eq!(s.tap.from_engine_rate(), 24_000);
            assert_eq!(
                s.persona.system_prompt,
                "Remind the callee of the appointment."
            );
            s.key
        }
        r => panic!("{r:?}"),
    };
    assert_eq!(h.core.ai_calls(), 1);
    h.core.ai_note(h.now, key, AiNote::Started);
    // An AI turn cut before its first word is none.
    for (role, text) in [
        (Role::Ai, " "),
        (Role::Ai, "Hello!"),
        (Role::Caller, "Hi."),
        (Role::Ai, "Bye."),
    ] {
        h.core.ai_note(
            h.now,
            key,
            AiNote::Turn {
                role,
                text: text.into(),
                at_ms: 100,
                interrupted: false,
            },
        );
    }
    h.advance(secs(5));
    h.core.ai_note(
        h.now,
        key,
        AiNote::EndCall {
            reason: "voicemail".into(),
        },
    );
    let bye = request(h.one(CARRIER));
    assert_eq!(bye.method, Method::Bye, "the AI's end_call hangs up");
    let ok = carrier.reply(&bye, StatusCode::OK).build().unwrap();
    h.send(CARRIER, ok);
    assert!(matches!(ai_request(&mut h), AiRequest::Stop(k) if k == key));
    let evs = events(&mut h);
    let kinds: Vec<_> = evs
        .iter()
        .map(|e| std::mem::discriminant(&e.kind))
        .collect();
    assert_eq!(
        kinds.len(),
        5,
        "answered, started, three turns; the end waits: {evs:#?}"
    );
    assert_eq!(evs[1].kind, CallEventKind::Started);
    // The session's last word, then the held end.
    h.core.ai_note(
        h.now,
        key,
        AiNote::Usage {
            input: 120,
            output: 80,
            estimated: false,
        },
    );
    h.core.ai_note(h.now, key, AiNote::Closed);
    let evs = events(&mut h);
    assert_eq!(
        evs[0].kind,
        CallEventKind::Usage {
            input: 120,
            output: 80,
            estimated: false
        }
    );
    assert_eq!(ended(&evs), ("voicemail".into(), String::new(), true, 5, 0));
    match &evs[1].kind {
        CallEventKind::Ended {
            input_turns,
            output_turns,
            ..
        } => assert_eq!((*input_turns, *output_turns), (1, 2)),
        k => panic!("{k:?}"),
    }
    assert_eq!(h.core.ai_calls(), 0);
    assert_eq!(h.core.active_calls(), 0);
}

#[test]
fn an_ai_session_that_never_closes_does_not_hold_the_end_forever() {
    use crate::ai::AiRequest;
    let mut h = Harness::new(None);
    let invite = place(&mut h, "oac-ai2", with_ai);
    let invite = challenge(&mut h, &invite);
    let mut carrier = answer(&mut h, &invite);
    assert!(matches!(ai_request(&mut h), AiRequest::Start(_)));
    let _ = events(&mut h);
    let bye = carrier.request(Method::Bye).unwrap().build().unwrap();
    h.send(CARRIER, bye);
    assert_eq!(response(h.one(CARRIER)).status, StatusCode::OK);
    assert!(matches!(ai_request(&mut h), AiRequest::Stop(_)));
    assert!(events(&mut h).is_empty(), "held for the session's close");
    h.advance(super::super::ai::AI_CLOSE_GRACE);
    let evs = events(&mut h);
    assert_eq!(ended(&evs).0, "far-hangup");
    assert_eq!(h.core.ai_calls(), 0);
}

/// Hung up, the call's AI session is told to stop at once, not when the
/// far end answers our BYE (up to 64·T1 when it is gone: the session
/// would talk on, and bill, meanwhile).
#[test]
fn the_ai_stops_as_the_call_ends_not_when_the_bye_is_answered() {
    use crate::ai::AiRequest;
    let mut h = Harness::new(None);
    let invite = place(&mut h, "oac-ai5", with_ai);
    let invite = challenge(&mut h, &invite);
    let _carrier = answer(&mut h, &invite);
    let AiRequest::Start(start) = ai_request(&mut h) else {
        panic!("no start");
    };
    h.core.hangup_call(h.now, "oac-ai5", None).unwrap();
    assert_eq!(request(h.one(CARRIER)).method, Method::Bye);
    assert!(matches!(ai_request(&mut h), AiRequest::Stop(k) if k == start.key));
    // The BYE is never answered: the call ends when its transaction does,
    // and no second Stop goes out.
    h.advance(secs(40));
    let _ = h.take(CARRIER);
    let evs = events(&mut h);
    assert_eq!(ended(&evs).0, "cancelled");
    assert_eq!(ended(&evs).3, 0, "talk time runs to the hangup");
    assert!(h.core.poll_ai_request().is_none());
    assert_eq!(h.core.active_calls(), 0);
}

#[test]
fn a_far_hangup_after_a_real_exchange_or_during_the_goodbye_is_the_outcome_reached() {
    use crate::ai::{AiNote, AiRequest};
    // The spec's glossary: `finished` includes "caller hung up after a
    // real exchange"; `far-hangup` is a hang-up "before the AI was done".
    // The AI session says what the conversation had reached when it was
    // stopped; only a far-end hang-up takes it.
    for (i, reached) in [None, Some("finished"), Some("not-now")]
        .into_iter()
        .enumerate()
    {
        let mut h = Harness::new(None);
        let invite = place(&mut h, &format!("oac-ai-r{i}"), with_ai);
        let invite = challenge(&mut h, &invite);
        let mut carrier = answer(&mut h, &invite);
        let AiRequest::Start(start) = ai_request(&mut h) else {
            panic!("no start");
        };
        let _ = events(&mut h);
        let bye = carrier.request(Method::Bye).unwrap().build().unwrap();
        h.send(CARRIER, bye);
        assert_eq!(response(h.one(CARRIER)).status, StatusCode::OK);
        assert!(matches!(ai_request(&mut h), AiRequest::Stop(k) if k == start.key));
        h.core.ai_note(
            h.now,
            start.key,
            AiNote::Reached {
                outcome: reached.map(str::to_owned),
            },
        );
        h.core.ai_note(h.now, start.key, AiNote::Closed);
        let evs = events(&mut h);
        assert_eq!(
            ended(&evs).0,
            reached.unwrap_or("far-hangup"),
            "{reached:?}"
        );
    }
    // A call ended for another reason keeps it (here max-duration: the
    // conversation had reached `finished`, but the switch ended it).
    let mut h = Harness::new(None);
    let invite = place(&mut h, "oac-ai-rmax", with_ai);
    let invite = challenge(&mut h, &invite);
    let carrier = answer(&mut h, &invite);
    let AiRequest::Start(start) = ai_request(&mut h) else {
        panic!("no start");
    };
    let _ = events(&mut h);
    h.advance(Duration::from_secs(3600));
    let bye = request(h.one(CARRIER));
    assert_eq!(bye.method, Method::Bye);
    h.send(
        CARRIER,
        carrier.reply(&bye, StatusCode::OK).build().unwrap(),
    );
    assert!(matches!(ai_request(&mut h), AiRequest::Stop(_)));
    h.core.ai_note(
        h.now,
        start.key,
        AiNote::Reached {
            outcome: Some("finished".into()),
        },
    );
    h.core.ai_note(h.now, start.key, AiNote::Closed);
    assert_eq!(ended(&events(&mut h)).0, "max-duration");
}

#[test]
fn a_failed_ai_session_ends_the_call_as_failed() {
    use crate::ai::{AiNote, AiRequest};
    let mut h = Harness::new(None);
    let invite = place(&mut h, "oac-ai3", with_ai);
    let invite = challenge(&mut h, &invite);
    let carrier = answer(&mut h, &invite);
    let AiRequest::Start(start) = ai_request(&mut h) else {
        panic!("no start");
    };
    let key = start.key;
    h.core.ai_note(
        h.now,
        key,
        AiNote::Failed {
            detail: "AI engine: rejected (1008)".into(),
        },
    );
    // The call ends: its session (whatever is left of it) is told to stop.
    assert!(matches!(ai_request(&mut h), AiRequest::Stop(k) if k == key));
    h.core.ai_note(h.now, key, AiNote::Closed);
    let bye = request(h.one(CARRIER));
    assert_eq!(bye.method, Method::Bye);
    h.send(
        CARRIER,
        carrier.reply(&bye, StatusCode::OK).build().unwrap(),
    );
    let evs = events(&mut h);
    assert_eq!(
        ended(&evs),
        (
            "failed".into(),
            "AI engine: rejected (1008)".into(),
            true,
            0,
            0
        )
    );
    // A persona the node cannot run fails the call at once.
    let invite = place(&mut h, "oac-ai4", |r| {
        with_ai(r);
        if let Some(p) = &mut r.ai {
            p.model = "claude-3".into();
        }
    });
    let invite = challenge(&mut h, &invite);
    let ok = invite
        .reply(StatusCode::OK, Some(b"carriertag"))
        .body(&super::super::sdp_type(), sdp_answer("192.0.2.30", 44000))
        .build()
        .unwrap();
    h.send(CARRIER, ok);
    let sent: Vec<_> = h
        .take(CARRIER)
        .into_iter()
        .map(|m| request(m).method)
        .collect();
    assert_eq!(sent, [Method::Ack, Method::Bye], "answered, then hung up");
    assert!(h.core.poll_ai_request().is_none());
}

/// `n` OPTIONS from `from` at one instant; how many the flood limits drop.
fn options_burst(h: &mut Harness, from: &str, n: usize) -> u64 {
    let before = h.core.stats.dropped_rate_limited;
    let ip = addr(from).ip();
    for i in 0..n {
        let ping = format!(
            "OPTIONS sip:{SW} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKburst{i}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:ping@{ip}>;tag=t{i}\r\nTo: <sip:{SW}>\r\n\
             Call-ID: burst{i}@{ip}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        h.core
            .handle_datagram(h.now, SocketId(0), addr(from), ping.as_bytes());
    }
    h.collect();
    h.core.stats.dropped_rate_limited - before
}

#[test]
fn a_trunk_we_call_out_through_is_not_flood_limited() {
    let mut h = Harness::new(None);
    // The carrier trunk lists no inbound networks (and this address is in
    // no other trunk's); its own address, where our calls go and whence
    // their answers come, is still not limited.
    let carrier = "203.0.113.30:5060";
    h.core.apply_config(
        config(""),
        HashMap::from([(CARRIER_TRUNK.to_owned(), addr(carrier))]),
    );
    assert_eq!(options_burst(&mut h, carrier, 400), 0);
    // Any other source is: past its burst, messages are dropped.
    assert!(options_burst(&mut h, "198.51.100.7:5060", 400) > 0);
}

/// `invite` as a proxy on its way would have record-routed it.
fn record_routed(invite: &Request, route: &str) -> Request {
    let text = String::from_utf8(Message::Request(invite.clone()).to_bytes().to_vec()).unwrap();
    let (first, rest) = text.split_once("\r\n").unwrap();
    let routed = format!("{first}\r\nRecord-Route: {route}\r\n{rest}");
    request(codeb_sip::parse_datagram(Bytes::from(routed), &codeb_sip::Limits::default()).unwrap())
}

/// The carrier at CARRIER answers `invite` with Contact `contact`; the
/// switch's ACK goes to `ack_to` (and nothing to CARRIER unless that is
/// it); the carrier's dialog.
fn answered_with_contact(
    h: &mut Harness,
    invite: &Request,
    contact: &str,
    ack_to: &str,
) -> Dialog<Peer> {
    let mut d = Dialog::uas(
        invite,
        b"gwtag",
        local(contact),
        Peer::udp(addr(SW)),
        peer_config(None),
        &mut h.ids,
    )
    .unwrap();
    answer_with_sdp(h, CARRIER, &mut d, invite, ("192.0.2.30", 44000));
    let ack = request(h.one(ack_to));
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(d.handle_request(h.now, &ack), Incoming::Ack);
    if ack_to != CARRIER {
        assert!(
            h.take(CARRIER).is_empty(),
            "the ACK goes by the next hop only"
        );
    }
    d
}

/// A carrier's dialog goes where RFC 3261 §12.2.1.1 says: to its proxy's
/// Record-Route, else its gateway's Contact, not back to the address the
/// 2xx came from; a Contact in a private network behind a public source
/// (NAT) is not followed.
#[test]
fn a_carrier_dialog_follows_its_record_route_and_contact() {
    const PROXY: &str = "192.0.2.31:5070";
    const GATEWAY: &str = "192.0.2.32:5062";
    let mut h = Harness::new(None);
    // Record-routed: ACK and BYE to the proxy, with the route as Route.
    let invite = place(&mut h, "oac-rr", |_| {});
    let routed = record_routed(&invite, "<sip:192.0.2.31:5070;lr>");
    let mut carrier = answered_with_contact(&mut h, &routed, GATEWAY, PROXY);
    let _ = events(&mut h);
    h.core.hangup_call(h.now, "oac-rr", None).unwrap();
    let bye = request(h.one(PROXY));
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(
        header(&bye, KnownHeader::Route).as_deref(),
        Some("<sip:192.0.2.31:5070;lr>")
    );
    assert_eq!(text_uri(&bye.uri), "sip:peer@192.0.2.32:5062");
    assert_eq!(carrier.handle_request(h.now, &bye), Incoming::Accept);
    h.send(PROXY, carrier.reply(&bye, StatusCode::OK).build().unwrap());
    assert_eq!(h.core.active_calls(), 0);
    // No route set: the gateway's Contact.
    let invite = place(&mut h, "oac-gw", |_| {});
    let mut carrier = answered_with_contact(&mut h, &invite, GATEWAY, GATEWAY);
    h.core.hangup_call(h.now, "oac-gw", None).unwrap();
    let bye = request(h.one(GATEWAY));
    assert_eq!(carrier.handle_request(h.now, &bye), Incoming::Accept);
    h.send(
        GATEWAY,
        carrier.reply(&bye, StatusCode::OK).build().unwrap(),
    );
    // A private Contact from a public address: back where the 2xx came from.
    let invite = place(&mut h, "oac-nat", |_| {});
    let _carrier = answered_with_contact(&mut h, &invite, "10.0.0.9:5060", CARRIER);
    h.core.hangup_call(h.now, "oac-nat", None).unwrap();
    assert_eq!(request(h.one(CARRIER)).method, Method::Bye);
    assert!(h.take("10.0.0.9:5060").is_empty());
}

/// A callee whose 2xx carries no usable answer did pick up: the call ends
/// failed, but answered, so no retry rings that person again.
#[test]
fn an_answer_without_usable_sdp_is_answered_and_failed() {
    let mut h = Harness::new(None);
    let invite = place(&mut h, "oac-nosdp", |_| {});
    let mut d = Dialog::uas(
        &invite,
        b"nosdp",
        local(CARRIER),
        Peer::udp(addr(SW)),
        peer_config(None),
        &mut h.ids,
    )
    .unwrap();
    let ok = d.reply(&invite, StatusCode::OK).build().unwrap();
    d.sent_response(h.now, &ok);
    h.send(CARRIER, ok);
    let methods: Vec<Method> = h
        .take(CARRIER)
        .into_iter()
        .map(|m| request(m).method)
        .collect();
    assert_eq!(methods, [Method::Ack, Method::Bye]);
    let evs = events(&mut h);
    let (outcome, detail, answered, _, _) = ended(&evs);
    assert_eq!((outcome.as_str(), answered), ("failed", true));
    assert!(detail.contains("no usable SDP"), "{detail}");
}

/// A switch that stops while a placed call rings sends CANCEL; a carrier
/// that never answers it kept the call's end unreported (it comes when
/// the call is gone, up to 64·T1 later, after the process exited). At the
/// end of the stop's grace the end is reported, once.
#[test]
fn a_stopping_switch_reports_a_placed_call_whose_cancel_went_unanswered() {
    let mut h = Harness::new(None);
    let invite = place(&mut h, "oac-stop-ringing", |_| {});
    reply(&mut h, &invite, StatusCode::RINGING);
    assert!(h.core.shut_down_calls(h.now), "the call is still ending");
    let cancel = request(h.one(CARRIER));
    assert_eq!(cancel.method, Method::Cancel);
    assert!(
        ended_events(&events(&mut h)) == 0,
        "no end before the CANCEL is answered"
    );
    h.advance(Duration::from_secs(5));
    assert_eq!(h.core.report_unfinished_ends(h.now), 1);
    let evs = events(&mut h);
    let (outcome, detail, answered, _, _) = ended(&evs);
    assert_eq!(
        (outcome.as_str(), detail.as_str(), answered),
        ("failed", "the switch shut down", false)
    );
    assert_eq!(h.core.report_unfinished_ends(h.now), 0, "once");
    // The carrier's late 487 ends the call without a second report.
    reply(&mut h, &invite, StatusCode::REQUEST_TERMINATED);
    assert_eq!(ended_events(&events(&mut h)), 0);
}

fn ended_events(evs: &[CallEvent]) -> usize {
    evs.iter()
        .filter(|e| matches!(e.kind, CallEventKind::Ended { .. }))
        .count()
}
