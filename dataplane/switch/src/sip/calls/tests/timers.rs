//! Session timers (RFC 4028) and the missing ACK (§13.3.1.4) on a call:
//! the switch refreshes each leg where it is the refresher, falls back from
//! UPDATE to re-INVITE, honours 422, and ends both legs when a session
//! expires or A never ACKs.

use codeb_sip::Method;
use codeb_sip::dialog::{Incoming, SessionTimerConfig};

use super::*;

/// A peer that answers a request of the switch in its dialog with `status`
/// (an SDP answer on a 2xx to INVITE).
fn answer(h: &mut Harness, at: &str, d: &mut Dialog<Peer>, req: &Request, status: StatusCode) {
    assert_eq!(d.handle_request(h.now, req), Incoming::Accept, "{req:?}");
    let mut r = d.reply(req, status);
    if req.method == Method::Invite && status.is_success() {
        r = r.body(&super::super::sdp_type(), sdp_answer("192.0.2.99", 42000));
    }
    let r = r.build().unwrap();
    d.sent_response(h.now, &r);
    h.send(at, r);
}

fn session_expires(m: &impl HasHeaders) -> Option<String> {
    header(m, KnownHeader::SessionExpires)
}

#[test]
fn b_leg_is_refreshed_at_half_the_interval_and_the_timer_restarts() {
    let mut h = Harness::new(Some(SessionTimerConfig::default()));
    let mut call = answered_call(
        &mut h,
        Setup {
            b_timer: Some(SessionTimerConfig::default()),
            ..Setup::default()
        },
    );
    let offered = session_expires(&call.to_b).expect("B-leg INVITE offers a session timer");
    assert!(offered.starts_with("1800"), "{offered}");
    assert!(
        header(&call.to_b, KnownHeader::Supported).is_some_and(|s| s.contains("timer")),
        "Supported: timer on the B-leg INVITE"
    );

    // The switch refreshes both legs: B, which asked it to (refresher=uac
    // in B's 2xx), and A, which does not support timers (so the switch,
    // as UAS, is the refresher). A's 2xx to that refresh has no
    // Session-Expires, and "the session timer disappears at that point"
    // (RFC 4028 §7.2): the second round refreshes B only.
    for round in 0..2 {
        h.advance(secs(899));
        assert!(
            h.take(A).is_empty(),
            "round {round}: no refresh before half-time"
        );
        assert!(
            h.take(B).is_empty(),
            "round {round}: no refresh before half-time"
        );
        // Exactly at half-time (UDP retransmissions follow 500 ms later).
        h.advance(secs(1));
        let legs = [
            (A, &mut call.a, &call.ok.body),
            (B, &mut call.b, &call.to_b.body),
        ];
        for (at, d, ours) in legs.into_iter().skip(round) {
            let mut got = h.take(at);
            assert_eq!(got.len(), 1, "round {round}, {at}: {got:#?}");
            let refresh = request(got.remove(0));
            assert!(
                matches!(refresh.method, Method::Invite | Method::Update),
                "{}",
                refresh.method
            );
            if refresh.method == Method::Invite {
                // A refresh repeats what we sent, unchanged (RFC 3264 §8).
                assert_eq!(&refresh.body, ours, "round {round}");
            }
            answer(&mut h, at, d, &refresh, StatusCode::OK);
            if refresh.method == Method::Invite {
                assert_eq!(request(h.one(at)).method, Method::Ack);
            }
        }
        assert!(h.take(A).is_empty(), "round {round}: A's timer is gone");
    }
    assert_eq!(h.core.active_calls(), 1);
}

/// B puts the call on hold while our refreshing UPDATE (no body) to it
/// is still unanswered: the hold re-INVITE is answered at once, not
/// refused with 491 (a refresh is no offer, RFC 3311 §5.2).
#[test]
fn a_hold_reinvite_crossing_our_refresh_update_is_answered() {
    let (mut h, mut call, _update) = refreshing_b_by_update();
    let reinvite = hold_reinvite(&mut call.b, "192.0.2.20", 42000, 0);
    h.send(B, reinvite);
    let got = response(h.one(B));
    assert_eq!(got.status, StatusCode::OK, "{got:?}");
    assert!(String::from_utf8_lossy(&got.body).contains("a=recvonly"));
}

/// A call whose B leg takes UPDATE, at the half-time of its session
/// timer: the refreshing UPDATE the switch sent B.
fn refreshing_b_by_update() -> (Harness, Call, Request) {
    let mut h = Harness::new(Some(SessionTimerConfig::default()));
    let call = answered_call(
        &mut h,
        Setup {
            b_timer: Some(SessionTimerConfig::default()),
            b_extra: &[(KnownHeader::Allow, "INVITE, ACK, BYE, CANCEL, UPDATE")],
            ..Setup::default()
        },
    );
    h.advance(secs(900));
    let update = request(h.one(B));
    assert_eq!(update.method, Method::Update);
    (h, call, update)
}

#[test]
fn update_refused_falls_back_to_reinvite() {
    let (mut h, mut call, update) = refreshing_b_by_update();
    assert!(
        update.body.is_empty(),
        "a refreshing UPDATE carries no offer"
    );
    answer(
        &mut h,
        B,
        &mut call.b,
        &update,
        StatusCode::METHOD_NOT_ALLOWED,
    );
    let reinvite = request(h.one(B));
    assert_eq!(reinvite.method, Method::Invite);
    assert_eq!(reinvite.body, call.to_b.body);
    answer(&mut h, B, &mut call.b, &reinvite, StatusCode::OK);
    assert_eq!(request(h.one(B)).method, Method::Ack);
    assert_eq!(h.core.active_calls(), 1);
}

#[test]
fn a_refresher_that_never_refreshes_ends_both_legs() {
    let mut h = Harness::new(Some(SessionTimerConfig::default()));
    let mut call = answered_call(
        &mut h,
        Setup {
            a_extra: &[
                (KnownHeader::Supported, "timer"),
                (KnownHeader::SessionExpires, "90;refresher=uac"),
            ],
            ..Setup::default()
        },
    );
    let granted = session_expires(&call.ok).expect("the 2xx grants a session interval");
    assert!(
        granted.starts_with("90") && granted.contains("refresher=uac"),
        "{granted}"
    );

    // RFC 4028 §10: BYE at expiry minus min(32 s, interval / 3) = 60 s.
    h.advance(secs(59));
    assert!(h.take(A).is_empty());
    assert!(h.take(B).is_empty());
    h.advance(secs(1));
    let bye_a = request(h.one(A));
    let bye_b = request(h.one(B));
    assert_eq!((&bye_a.method, &bye_b.method), (&Method::Bye, &Method::Bye));
    answer(&mut h, A, &mut call.a, &bye_a, StatusCode::OK);
    answer(&mut h, B, &mut call.b, &bye_b, StatusCode::OK);
    assert_eq!(h.core.active_calls(), 0);
    assert_eq!(h.core.dialogs(), 0);
}

#[test]
fn a_refresh_from_a_keeps_the_call_up() {
    let mut h = Harness::new(Some(SessionTimerConfig::default()));
    let mut call = answered_call(
        &mut h,
        Setup {
            a_extra: &[
                (KnownHeader::Supported, "timer"),
                (KnownHeader::SessionExpires, "90;refresher=uac"),
            ],
            ..Setup::default()
        },
    );
    for _ in 0..3 {
        h.advance(secs(45));
        let update = call.a.request(Method::Update).unwrap().build().unwrap();
        h.send(A, update.clone());
        let ok = response(h.one(A));
        assert_eq!(ok.status, StatusCode::OK);
        assert!(ok.body.is_empty(), "no offer, no answer (RFC 3311 §5.2)");
        call.a.handle_response(h.now, &ok);
    }
    assert!(h.take(B).is_empty(), "B sees nothing of A's refreshes");
    assert_eq!(h.core.active_calls(), 1);
}

/// The phases with calls in them, as the metrics count them.
fn phases(h: &Harness) -> Vec<(&'static str, usize)> {
    let by_phase = h.core.calls_by_phase();
    by_phase.into_iter().filter(|(_, n)| *n > 0).collect()
}

#[test]
fn calls_are_counted_by_phase() {
    let mut h = Harness::new(None);
    assert!(phases(&h).is_empty());
    let invite = h.invite_from_a("1000", &[]);
    h.send(A, invite);
    assert_eq!(request(h.one(B)).method, Method::Invite);
    assert_eq!(phases(&h), [("routing", 1)]);

    let mut h = Harness::new(None);
    let mut call = answered_call(&mut h, Setup::default());
    assert_eq!(phases(&h), [("confirmed", 1)]);
    assert_eq!(h.core.media_stats().1, 2, "one RTP port per leg");
    hang_up(&mut h, A, &mut call.a);
    assert_eq!(phases(&h), [("ending", 1)], "B's BYE is unanswered");
    // The ports go as soon as the call is ending, not when B answers.
    assert_eq!(h.core.media_stats().1, 0);
    hung_up(&mut h, B, &mut call.b);
    assert!(phases(&h).is_empty());
    assert_all_ended(&h);
}

#[test]
fn missing_ack_ends_the_call() {
    let mut h = Harness::new(None);
    let mut call = answered_call(
        &mut h,
        Setup {
            no_ack: true,
            ..Setup::default()
        },
    );
    assert_eq!(phases(&h), [("answered", 1)]);
    // Our 2xx is retransmitted at T1, 2·T1, ... capped at T2 (§13.3.1.4).
    h.advance(Duration::from_millis(1600));
    let again = h.take(A);
    assert_eq!(
        again.len(),
        2,
        "2xx retransmitted at 0.5 s and 1.5 s? {again:#?}"
    );
    assert!(
        again
            .iter()
            .all(|m| response(m.clone()).status == StatusCode::OK)
    );
    h.advance(Duration::from_millis(30_300));
    let retransmits = h.take(A);
    assert!(
        retransmits
            .iter()
            .all(|m| m.as_response().is_some_and(|r| r.status == StatusCode::OK)),
        "{retransmits:#?}"
    );
    assert!(retransmits.len() >= 8, "{}", retransmits.len());
    assert!(h.take(B).is_empty());
    // 64·T1 without an ACK: the call is over; both legs get a BYE.
    h.advance(Duration::from_millis(100));
    assert_eq!(phases(&h), [("ending", 1)]);
    assert_eq!(h.core.media_stats().1, 0);
    for (at, d) in [(A, &mut call.a), (B, &mut call.b)] {
        let bye = request(h.one(at));
        assert_eq!(bye.method, Method::Bye);
        answer(&mut h, at, d, &bye, StatusCode::OK);
    }
    h.advance(secs(40));
    assert_eq!(h.core.active_calls(), 0);
}

#[test]
fn a_call_hung_up_while_our_2xx_waits_for_its_ack_still_ends() {
    let mut h = Harness::new(None);
    let mut call = answered_call(
        &mut h,
        Setup {
            no_ack: true,
            ..Setup::default()
        },
    );
    // B hangs up before A's ACK: our BYE to A must wait for it (§15).
    h.advance(secs(1));
    h.take(A);
    hang_up(&mut h, B, &mut call.b);
    assert_eq!(phases(&h), [("ending", 1)]);
    // No ACK ever comes: at 64·T1 the BYE goes anyway, and once it is
    // answered nothing of the call is left (it stayed ending for good).
    h.advance(secs(32));
    let bye: Vec<_> = h
        .take(A)
        .into_iter()
        .filter_map(|m| m.as_request().cloned())
        .collect();
    // (sent at 32 s, and again at T1 until answered)
    assert!(
        !bye.is_empty() && bye.iter().all(|r| r.method == Method::Bye),
        "{bye:#?}"
    );
    answer(&mut h, A, &mut call.a, &bye[0], StatusCode::OK);
    assert!(phases(&h).is_empty(), "{:?}", phases(&h));
    assert_all_ended(&h);
}

#[test]
fn b_leg_422_is_retried_once_with_the_interval_asked_for() {
    let mut h = Harness::new(Some(SessionTimerConfig::default()));
    let invite = h.invite_from_a("1000", &[]);
    h.send(A, invite);
    let first = request(h.one(B));
    let too_brief = first
        .reply(StatusCode::new(422).unwrap(), Some(b"bobtag"))
        .header(KnownHeader::MinSe, "3600")
        .build()
        .unwrap();
    h.send(B, too_brief.clone());
    let mut got = h.take(B);
    let ack = request(got.remove(0));
    assert_eq!(ack.method, Method::Ack);
    let second = request(got.remove(0));
    assert_eq!(second.method, Method::Invite);
    assert!(
        session_expires(&second).is_some_and(|s| s.starts_with("3600")),
        "{:?}",
        session_expires(&second)
    );
    assert_ne!(
        second.headers.cseq().unwrap().seq,
        first.headers.cseq().unwrap().seq
    );
    // A second 422 is not chased: A gets the failure.
    let again = second
        .reply(StatusCode::new(422).unwrap(), Some(b"bobtag2"))
        .header(KnownHeader::MinSe, "7200")
        .build()
        .unwrap();
    h.send(B, again);
    let got = h.take(B);
    assert_eq!(got.len(), 1, "only the ACK: {got:#?}");
    let fail = response(h.one(A));
    assert!(fail.status.as_u16() >= 400, "{}", fail.status);
}
