//! A virtual number's caller rings while the number's AI session starts,
//! and is answered only once it is up: an engine that fails, or is not
//! ready in time, gets the caller a 503 (its carrier may route the call
//! elsewhere) instead of an answer and a hang-up; a caller who gives up
//! meanwhile stops the session. Each leaves a truthful record.

use super::originate::{ai_request, ended, events};
use super::transfer::RECEPTIONIST;
use super::*;
use crate::ai::{AiNote, AiRequest, AiStart};
use crate::sip::calls::CallEventKind;
use crate::sip::calls::vnum::AI_READY_TIMEOUT;

/// Sends A's INVITE to the virtual number: A hears 180 (no SDP: nothing
/// plays yet) and the AI session is asked for.
fn rings(h: &mut Harness, invite: &Request) -> Box<AiStart> {
    h.send(A, invite.clone());
    let ringing = response(h.one(A));
    assert_eq!(
        ringing.status,
        StatusCode::RINGING,
        "rings while the AI starts"
    );
    assert!(ringing.body.is_empty(), "no early media: {ringing:?}");
    let AiRequest::Start(start) = ai_request(h) else {
        panic!("no AI start");
    };
    assert_eq!(start.answered_at, None, "answered as the session starts");
    start
}

/// A rings the virtual number and its AI session comes up: A gets our
/// 2xx then. Returns that 2xx and the session's start.
pub(super) fn ai_answers(h: &mut Harness, invite: &Request) -> (Response, Box<AiStart>) {
    let start = rings(h, invite);
    h.core.ai_note(h.now, start.key, AiNote::Started);
    let ok = response(h.one(A));
    assert_eq!(ok.status, StatusCode::OK, "the AI answers");
    (ok, start)
}

#[test]
fn the_caller_rings_until_the_ai_session_is_up_then_is_answered() {
    let mut h = Harness::with_config(None, RECEPTIONIST);
    let invite = h.invite_from_a("7000", &[]);
    let start = rings(&mut h, &invite);
    let evs = events(&mut h);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert!(matches!(evs[0].kind, CallEventKind::Inbound { .. }));
    // The session takes 1.5 s to come up: the caller only rings.
    h.advance(Duration::from_millis(1500));
    assert!(h.take(A).is_empty(), "no answer before the AI is up");
    assert_eq!(h.core.stats.virtual_number_calls, 0);
    h.core.ai_note(h.now, start.key, AiNote::Started);
    let ok = response(h.one(A));
    assert_eq!(ok.status, StatusCode::OK);
    assert!(!ok.body.is_empty(), "our SDP answer");
    let evs = events(&mut h);
    let kinds: Vec<_> = evs.iter().map(|e| &e.kind).collect();
    assert!(
        matches!(
            kinds[..],
            [
                CallEventKind::Answered {
                    answer_ms: 1500,
                    inbound: true,
                    ..
                },
                CallEventKind::Started
            ]
        ),
        "answered (after 1.5 s of ringing), then started: {kinds:#?}"
    );
    assert_eq!(h.core.stats.virtual_number_calls, 1);
    let _caller = a_dialog(&mut h, &invite, &ok, true, None);
    // The ring deadline no longer applies once answered.
    h.advance(AI_READY_TIMEOUT + Duration::from_secs(1));
    assert!(h.take(A).is_empty());
    assert_eq!(h.core.active_calls(), 1);
}

/// The number's talk-time limit counts from the answer, not from the
/// INVITE: 10 s of ringing do not shorten a 20-s call.
#[test]
fn the_talk_time_limit_counts_from_the_answer() {
    let config = RECEPTIONIST.replacen(
        "number = \"7000\"\n",
        "number = \"7000\"\nmax_seconds = 20\n",
        1,
    );
    assert_ne!(config, RECEPTIONIST);
    let mut h = Harness::with_config(None, &config);
    let invite = h.invite_from_a("7000", &[]);
    let start = rings(&mut h, &invite);
    h.advance(Duration::from_secs(10));
    h.core.ai_note(h.now, start.key, AiNote::Started);
    let ok = response(h.one(A));
    let caller = a_dialog(&mut h, &invite, &ok, true, None);
    let _ = events(&mut h);
    h.advance(Duration::from_millis(19_900));
    assert!(h.take(A).is_empty(), "talking 19.9 s after the answer");
    h.advance(Duration::from_millis(100));
    let bye = request(h.one(A));
    assert_eq!(bye.method, Method::Bye);
    h.send(A, caller.reply(&bye, StatusCode::OK).build().unwrap());
    assert!(matches!(ai_request(&mut h), AiRequest::Stop(k) if k == start.key));
    h.core.ai_note(h.now, start.key, AiNote::Closed);
    let evs = events(&mut h);
    let (outcome, _, answered, talk, _) = ended(&evs);
    assert_eq!(
        (outcome.as_str(), answered, talk),
        ("max-duration", true, 20)
    );
}

#[test]
fn an_ai_that_cannot_start_gets_the_caller_a_503_and_a_failed_record() {
    let mut h = Harness::with_config(None, RECEPTIONIST);
    let invite = h.invite_from_a("7000", &[]);
    let start = rings(&mut h, &invite);
    let detail = "AI engine: could not connect to the vendor";
    h.core.ai_note(
        h.now,
        start.key,
        AiNote::Failed {
            detail: detail.into(),
        },
    );
    let refused = response(h.one(A));
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.core.stats.virtual_number_refused, 1, "counted as refused");
    // The CallEnded waits for the session to close.
    h.core.ai_note(h.now, start.key, AiNote::Closed);
    let evs = events(&mut h);
    let (outcome, why, answered, talk, sip) = ended(&evs);
    assert_eq!(
        (outcome.as_str(), why.as_str(), answered, talk, sip),
        ("failed", detail, false, 0, 503)
    );
    assert!(
        !evs.iter()
            .any(|e| matches!(e.kind, CallEventKind::Answered { .. })),
        "never answered: {evs:#?}"
    );
    h.advance(Duration::from_secs(40));
    assert_eq!(h.core.active_calls(), 0);
}

#[test]
fn an_ai_not_ready_in_time_is_given_up_with_a_503() {
    let mut h = Harness::with_config(None, RECEPTIONIST);
    let invite = h.invite_from_a("7000", &[]);
    let start = rings(&mut h, &invite);
    h.advance(AI_READY_TIMEOUT - Duration::from_millis(10));
    assert!(h.take(A).is_empty(), "still ringing");
    h.advance(Duration::from_millis(10));
    let refused = response(h.one(A));
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(matches!(ai_request(&mut h), AiRequest::Stop(k) if k == start.key));
    // A session that comes up after all is too late: nothing answers.
    h.core.ai_note(h.now, start.key, AiNote::Started);
    assert!(h.take(A).is_empty());
    h.core.ai_note(h.now, start.key, AiNote::Closed);
    let evs = events(&mut h);
    assert!(
        !evs.iter().any(|e| matches!(e.kind, CallEventKind::Started)),
        "{evs:#?}"
    );
    let (outcome, why, answered, _, sip) = ended(&evs);
    assert_eq!((outcome.as_str(), answered, sip), ("failed", false, 503));
    assert_eq!(why, "the AI engine was not ready within 15 s");
}

/// A node whose AI connect timeout is raised (`CODEB_AI_CONNECT_TIMEOUT`
/// 30 s) lets a virtual number's caller ring while the session starts
/// that long and 5 s more, past the default 15 s, and then says so.
#[test]
fn a_longer_ai_connect_timeout_lets_the_caller_ring_longer() {
    let mut h = Harness::with_config(None, RECEPTIONIST);
    h.core.set_ai_connect_timeout(Duration::from_secs(30));
    let invite = h.invite_from_a("7000", &[]);
    let start = rings(&mut h, &invite);
    h.advance(Duration::from_millis(34_990));
    assert!(h.take(A).is_empty(), "still ringing past the default 15 s");
    h.advance(Duration::from_millis(10));
    let refused = response(h.one(A));
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(matches!(ai_request(&mut h), AiRequest::Stop(k) if k == start.key));
    h.core.ai_note(h.now, start.key, AiNote::Closed);
    let evs = events(&mut h);
    let (outcome, why, _, _, sip) = ended(&evs);
    assert_eq!((outcome.as_str(), sip), ("failed", 503));
    assert_eq!(why, "the AI engine was not ready within 35 s");
}

#[test]
fn a_caller_who_gives_up_while_the_ai_starts_stops_the_session() {
    let mut h = Harness::with_config(None, RECEPTIONIST);
    let invite = h.invite_from_a("7000", &[]);
    let start = rings(&mut h, &invite);
    h.send(A, codeb_sip::cancel_for(&invite).unwrap());
    let mut to_a: Vec<u16> = h
        .take(A)
        .into_iter()
        .map(|m| response(m).status.as_u16())
        .collect();
    to_a.sort_unstable();
    assert_eq!(to_a, [200, 487], "CANCEL answered, INVITE terminated");
    assert!(matches!(ai_request(&mut h), AiRequest::Stop(k) if k == start.key));
    h.core.ai_note(h.now, start.key, AiNote::Closed);
    let evs = events(&mut h);
    let (outcome, why, answered, _, sip) = ended(&evs);
    assert_eq!(
        (outcome.as_str(), why.as_str(), answered, sip),
        ("far-hangup", "", false, 487)
    );
    assert_eq!(h.core.stats.virtual_number_refused, 1);
    assert_eq!(h.core.stats.virtual_number_calls, 0);
    h.advance(Duration::from_secs(40));
    assert_eq!(h.core.active_calls(), 0);
}

#[test]
fn hanging_up_a_ringing_virtual_number_call_refuses_it_with_480() {
    let mut h = Harness::with_config(None, RECEPTIONIST);
    let invite = h.invite_from_a("7000", &[]);
    let start = rings(&mut h, &invite);
    let already = h.core.hangup_call(h.now, &start.call_id, None).unwrap();
    assert!(!already);
    let refused = response(h.one(A));
    assert_eq!(refused.status, StatusCode::TEMPORARILY_UNAVAILABLE);
    assert!(matches!(ai_request(&mut h), AiRequest::Stop(k) if k == start.key));
    h.core.ai_note(h.now, start.key, AiNote::Closed);
    let evs = events(&mut h);
    let (outcome, _, answered, _, sip) = ended(&evs);
    assert_eq!((outcome.as_str(), answered, sip), ("cancelled", false, 480));
}

/// With the event journal full, a virtual number's caller gets 503 at
/// once: no AI starts and no record is made (it could not be kept).
#[test]
fn a_full_journal_refuses_virtual_number_calls() {
    let mut h = Harness::with_config(None, RECEPTIONIST);
    h.core.set_journal_full(true);
    let invite = h.invite_from_a("7000", &[]);
    h.send(A, invite);
    let refused = response(h.one(A));
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(h.core.poll_ai_request().is_none(), "no AI starts");
    assert!(events(&mut h).is_empty(), "no record");
    assert_eq!(h.core.active_calls(), 0);
    h.core.set_journal_full(false);
    let invite = h.invite_from_a("7000", &[]);
    rings(&mut h, &invite);
}

/// A caller that requires reliable provisional responses gets its 180
/// reliably (RFC 3262); the 2xx need not wait for its PRACK, as the 180
/// carried no SDP (§3).
#[test]
fn a_100rel_caller_gets_its_ringing_reliably() {
    let mut h = Harness::with_config(None, RECEPTIONIST);
    let invite = h.invite_from_a("7000", &[(KnownHeader::Require, "100rel")]);
    h.send(A, invite.clone());
    let ringing = response(h.one(A));
    assert_eq!(ringing.status, StatusCode::RINGING);
    assert!(
        header(&ringing, KnownHeader::RSeq).is_some(),
        "sent reliably: {ringing:?}"
    );
    let AiRequest::Start(start) = ai_request(&mut h) else {
        panic!("no AI start");
    };
    h.core.ai_note(h.now, start.key, AiNote::Started);
    let ok = response(h.one(A));
    assert_eq!(ok.status, StatusCode::OK);
}

/// A caller whose INVITE has no offer but who takes reliable provisional
/// responses rings too: our offer goes in a reliable 180, its PRACK
/// answers it (the codec is its choice), and only then does the AI
/// session start; the 2xx repeats our description once the AI is up.
#[test]
fn a_late_offer_that_takes_100rel_rings_with_our_offer_until_the_ai_is_up() {
    let mut h = Harness::with_config(None, RECEPTIONIST);
    let invite = h.offerless_invite_from_a("7000", &[(KnownHeader::Supported, "100rel")]);
    h.send(A, invite.clone());
    let ringing = response(h.one(A));
    assert_eq!(ringing.status, StatusCode::RINGING);
    assert!(header(&ringing, KnownHeader::RSeq).is_some(), "reliably");
    assert!(!ringing.body.is_empty(), "our offer");
    assert!(
        h.core.poll_ai_request().is_none(),
        "no AI before the codec is known"
    );
    let answer = "v=0\r\no=- 5 5 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n";
    let p = super::prack::prack_offering(&mut h, &invite, &ringing, answer);
    h.send(A, p);
    let ok = response(h.one(A));
    assert_eq!(ok.headers.cseq().unwrap().method, Method::Prack);
    assert!(ok.body.is_empty());
    let AiRequest::Start(start) = ai_request(&mut h) else {
        panic!("no AI start");
    };
    assert_eq!(
        start.telephony,
        codeb_ai::Codec::Pcma,
        "the caller's choice"
    );
    assert_eq!(start.answered_at, None);
    h.advance(Duration::from_millis(800));
    assert!(h.take(A).is_empty(), "rings while the AI starts");
    h.core.ai_note(h.now, start.key, AiNote::Started);
    let ok = response(h.one(A));
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body, ringing.body, "the same description, no new offer");
    let _caller = a_dialog(&mut h, &invite, &ok, true, None);
    assert!(h.take(A).is_empty());
    assert_eq!(h.core.active_calls(), 1);
    assert_eq!(h.core.stats.virtual_number_calls, 1);
}

/// A late-offer caller that never PRACKs the 180 with our offer is
/// refused at the ring deadline, and the record says why (not the AI,
/// which was never started).
#[test]
fn a_late_offer_caller_that_never_pracks_is_refused_for_that() {
    let mut h = Harness::with_config(None, RECEPTIONIST);
    let invite = h.offerless_invite_from_a("7000", &[(KnownHeader::Supported, "100rel")]);
    h.send(A, invite);
    assert_eq!(response(h.one(A)).status, StatusCode::RINGING);
    h.advance(AI_READY_TIMEOUT);
    let finals: Vec<u16> = h
        .take(A)
        .into_iter()
        .map(|m| response(m).status.as_u16())
        .filter(|s| *s >= 200)
        .collect();
    assert_eq!(finals, [503]);
    assert!(h.core.poll_ai_request().is_none(), "no AI was started");
    let evs = events(&mut h);
    let (outcome, detail, answered, _, sip) = ended(&evs);
    assert_eq!((outcome.as_str(), answered, sip), ("failed", false, 503));
    assert!(detail.contains("did not answer our SDP offer"), "{detail}");
}

/// Without 100rel a late offer's answer can only come in the ACK: the
/// caller is answered at once with our offer, and the AI starts with the
/// ACK's answer.
#[test]
fn a_late_offer_without_100rel_is_answered_at_once() {
    let mut h = Harness::with_config(None, RECEPTIONIST);
    let invite = h.offerless_invite_from_a("7000", &[]);
    h.send(A, invite.clone());
    let ok = response(h.one(A));
    assert_eq!(ok.status, StatusCode::OK);
    assert!(!ok.body.is_empty(), "our offer");
    assert!(h.core.poll_ai_request().is_none());
    let mut caller = a_dialog(&mut h, &invite, &ok, false, None);
    let answer = "v=0\r\no=- 5 5 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let ack = caller
        .ack_builder(1)
        .unwrap()
        .body(
            &super::super::sdp_type(),
            Bytes::from_static(answer.as_bytes()),
        )
        .build()
        .unwrap();
    h.send(A, ack);
    let AiRequest::Start(start) = ai_request(&mut h) else {
        panic!("no AI start");
    };
    assert_eq!(start.telephony, codeb_ai::Codec::Pcmu);
    assert!(start.answered_at.is_some(), "answered before the session");
}

/// A switch shutting down while a virtual number's caller rings refuses
/// it (503) and stays up until the call's end is out: the CallEnded waits
/// for its AI session to close, and the process must not exit before.
#[test]
fn shutting_down_while_it_rings_waits_for_the_calls_end() {
    let mut h = Harness::with_config(None, RECEPTIONIST);
    let invite = h.invite_from_a("7000", &[]);
    let start = rings(&mut h, &invite);
    let _ = events(&mut h);
    assert!(h.core.shut_down_calls(h.now), "its end is not out yet");
    let refused = response(h.one(A));
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(matches!(ai_request(&mut h), AiRequest::Stop(k) if k == start.key));
    assert!(events(&mut h).is_empty());
    assert!(
        h.core.shut_down_calls(h.now),
        "still waiting for the session"
    );
    h.core.ai_note(h.now, start.key, AiNote::Closed);
    let evs = events(&mut h);
    let (outcome, why, answered, _, sip) = ended(&evs);
    assert_eq!(
        (outcome.as_str(), why.as_str(), answered, sip),
        ("failed", "the switch shut down", false, 503)
    );
    assert!(!h.core.shut_down_calls(h.now), "done");
}

/// An UPDATE with an offer while the caller rings (its INVITE's offer not
/// answered yet: our 180 has no SDP) gets 500 with a Retry-After of 0-10
/// s (RFC 3311 §5.2), and the call is answered as usual afterwards.
#[test]
fn an_update_offer_while_it_rings_is_refused_with_retry_after() {
    let mut h = Harness::with_config(None, RECEPTIONIST);
    let invite = h.invite_from_a("7000", &[]);
    h.send(A, invite.clone());
    let ringing = response(h.one(A));
    assert_eq!(ringing.status, StatusCode::RINGING);
    let AiRequest::Start(start) = ai_request(&mut h) else {
        panic!("no AI start");
    };
    let mut caller = a_dialog(&mut h, &invite, &ringing, false, None);
    let sdp = "v=0\r\no=- 1 2 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 40002 RTP/AVP 0\r\n";
    let update = caller
        .request(Method::Update)
        .unwrap()
        .body(
            &crate::sip::calls::sdp_type(),
            Bytes::from_static(sdp.as_bytes()),
        )
        .build()
        .unwrap();
    h.send(A, update);
    let refused = response(h.one(A));
    assert_eq!(refused.status, StatusCode::SERVER_INTERNAL_ERROR);
    let retry: u32 = header(&refused, KnownHeader::RetryAfter)
        .expect("a Retry-After")
        .parse()
        .unwrap();
    assert!(retry <= 10, "{retry}");
    h.core.ai_note(h.now, start.key, AiNote::Started);
    assert_eq!(response(h.one(A)).status, StatusCode::OK);
}

/// At the end of a shutdown, a call's end still held for an AI session
/// that has not closed goes out without it, for the link to journal.
#[test]
fn a_held_end_goes_out_when_the_switch_stops() {
    let mut h = Harness::with_config(None, RECEPTIONIST);
    let invite = h.invite_from_a("7000", &[]);
    let _start = rings(&mut h, &invite);
    let _ = events(&mut h);
    assert!(h.core.shut_down_calls(h.now));
    assert_eq!(response(h.one(A)).status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(events(&mut h).is_empty(), "held for the AI session");
    assert_eq!(h.core.release_held_ends(), 1);
    let evs = events(&mut h);
    let (outcome, why, _, _, sip) = ended(&evs);
    assert_eq!(
        (outcome.as_str(), why.as_str(), sip),
        ("failed", "the switch shut down", 503)
    );
    assert!(!h.core.shut_down_calls(h.now));
    assert_eq!(h.core.release_held_ends(), 0);
}
