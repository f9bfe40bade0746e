use super::layer::{drive, evs, layer, out};
use super::*;
use crate::cancel_for;

/// A UAS table holding one INVITE server transaction.
fn uas_with_invite(branch: &str) -> (Instant, TransactionLayer<Peer>, TransactionId, Request) {
    let t0 = Instant::now();
    let mut l = layer(16);
    let inv = invite(branch);
    l.handle_message(t0, inv.clone().into(), udp());
    let Some(Event::Request { id, .. }) = evs(&mut l).pop() else {
        panic!("no request event")
    };
    (t0, l, id, inv)
}

fn cancel_event(l: &mut TransactionLayer<Peer>) -> (TransactionId, Option<TransactionId>) {
    match evs(l).pop() {
        Some(Event::Cancel { id, invite, .. }) => (id, invite),
        other => panic!("expected a CANCEL event, got {other:?}"),
    }
}

#[test]
fn a_cancel_for_a_ringing_invite_gets_200_and_the_invite_487() {
    let (t0, mut l, inv_id, inv) = uas_with_invite("z9hG4bKc1");
    l.respond(t0, inv_id, reply(&inv, 180, Some("ring")))
        .unwrap();
    out(&mut l);
    l.handle_message(t0 + secs(1), cancel_for(&inv).unwrap().into(), udp());
    let (cancel_id, target) = cancel_event(&mut l);
    assert_eq!(target, Some(inv_id));
    assert_eq!(l.cancel_target(l.request(cancel_id).unwrap()), Some(inv_id));
    assert_eq!(
        l.answer_cancel(t0 + secs(1), cancel_id, b"unused"),
        Ok(CancelOutcome::Cancelled { invite: inv_id })
    );
    let sent = out(&mut l);
    let summary: Vec<_> = sent
        .iter()
        .map(|(t, m)| {
            let h = m.headers();
            (
                t.transaction,
                status(m),
                h.cseq().unwrap().method,
                h.to().unwrap().params.value_bytes("tag"),
            )
        })
        .collect();
    let tag = Some(bytes::Bytes::from("ring"));
    assert_eq!(
        summary,
        vec![
            (Some(cancel_id), Some(200), Method::Cancel, tag.clone()),
            (Some(inv_id), Some(487), Method::Invite, tag),
        ]
    );
    assert_eq!(l.state(inv_id), Some(State::Completed));
    l.handle_message(
        t0 + secs(2),
        request_with(Method::Ack, "z9hG4bKc1", 1, Some("ring")).into(),
        udp(),
    );
    assert_eq!(l.state(inv_id), Some(State::Confirmed));
    // A retransmitted CANCEL gets the 200 again, from its transaction.
    l.handle_message(t0 + secs(2), cancel_for(&inv).unwrap().into(), udp());
    assert_eq!(status(&out(&mut l)[0].1), Some(200));
    assert!(evs(&mut l).is_empty());
}

#[test]
fn cancel_uses_the_callers_tag_when_the_invite_had_none() {
    let (t0, mut l, inv_id, inv) = uas_with_invite("z9hG4bKc2");
    l.handle_message(t0, cancel_for(&inv).unwrap().into(), udp());
    let (cancel_id, _) = cancel_event(&mut l);
    l.answer_cancel(t0, cancel_id, b"fresh").unwrap();
    for (_, m) in out(&mut l) {
        assert_eq!(m.headers().to().unwrap().tag(), Some(&b"fresh"[..]));
    }
    assert_eq!(l.state(inv_id), Some(State::Completed));
}

#[test]
fn a_cancel_after_the_final_response_changes_nothing() {
    let (t0, mut l, inv_id, inv) = uas_with_invite("z9hG4bKc3");
    l.respond(t0, inv_id, reply(&inv, 200, Some("s"))).unwrap();
    out(&mut l);
    l.handle_message(t0, cancel_for(&inv).unwrap().into(), udp());
    let (cancel_id, _) = cancel_event(&mut l);
    assert_eq!(
        l.answer_cancel(t0, cancel_id, b"s"),
        Ok(CancelOutcome::TooLate { invite: inv_id })
    );
    let sent = out(&mut l);
    assert_eq!(sent.len(), 1);
    assert_eq!(status(&sent[0].1), Some(200));
    assert_eq!(l.state(inv_id), Some(State::Accepted));
}

#[test]
fn a_cancel_matching_nothing_gets_481() {
    let t0 = Instant::now();
    let mut l = layer(16);
    l.handle_message(t0, cancel_for(&invite("z9hG4bKc4")).unwrap().into(), udp());
    let (cancel_id, target) = cancel_event(&mut l);
    assert_eq!(target, None);
    assert_eq!(
        l.answer_cancel(t0, cancel_id, b"t"),
        Ok(CancelOutcome::NoMatch)
    );
    assert_eq!(status(&out(&mut l)[0].1), Some(481));
    assert_eq!(
        l.answer_cancel(t0, cancel_id, b"t"),
        Err(TransactionError::WrongState(State::Completed))
    );
}

#[test]
fn answer_cancel_only_takes_cancels() {
    let (t0, mut l, inv_id, _) = uas_with_invite("z9hG4bKc5");
    assert_eq!(
        l.answer_cancel(t0, inv_id, b"t"),
        Err(TransactionError::WrongKind)
    );
    assert_eq!(
        l.answer_cancel(t0, TransactionId(12345), b"t"),
        Err(TransactionError::Unknown)
    );
}

/// A UAC table with one client INVITE sent.
fn uac_with_invite(max: usize) -> (Instant, TransactionLayer<Peer>, TransactionId) {
    let t0 = Instant::now();
    let mut l = layer(max);
    let id = l.send_request(t0, invite("z9hG4bKu1"), udp()).unwrap();
    out(&mut l);
    (t0, l, id)
}

#[test]
fn cancel_waits_for_a_provisional_then_goes_out() {
    let (t0, mut l, inv) = uac_with_invite(16);
    assert_eq!(l.cancel(t0 + ms(100), inv), Ok(CancelStatus::Deferred));
    assert_eq!(l.cancel(t0 + ms(100), inv), Ok(CancelStatus::Deferred));
    assert!(
        out(&mut l).is_empty(),
        "§9.1: no CANCEL before a provisional"
    );
    assert_eq!(l.occupancy(), 2);
    let invite_req = l.request(inv).unwrap().clone();
    l.handle_message(
        t0 + ms(800),
        reply(&invite_req, 180, Some("b")).into(),
        udp(),
    );
    let sent = out(&mut l);
    let cancels: Vec<_> = sent
        .iter()
        .filter(|(_, m)| method(m) == Some(Method::Cancel))
        .collect();
    assert_eq!(cancels.len(), 1);
    let (t, m) = cancels[0];
    assert_eq!(t.destination, udp());
    let c = m.as_request().unwrap();
    assert_eq!(
        c.headers.top_via().unwrap().branch.as_deref(),
        Some(&b"z9hG4bKu1"[..])
    );
    assert_eq!(c.headers.cseq().unwrap().seq, 1);
    let events = evs(&mut l);
    let cancel_id = events
        .iter()
        .find_map(|e| match e {
            Event::CancelSent { invite, cancel } if *invite == inv => Some(*cancel),
            _ => None,
        })
        .expect("CancelSent");
    assert_eq!(l.cancel(t0, inv), Ok(CancelStatus::Sent(cancel_id)));
    assert_eq!(l.occupancy(), 2);
    // 200 to the CANCEL, 487 to the INVITE (which the transaction ACKs).
    l.handle_message(t0 + secs(1), reply(c, 200, Some("b")).into(), udp());
    l.handle_message(
        t0 + secs(1),
        reply(&invite_req, 487, Some("b")).into(),
        udp(),
    );
    assert_eq!(method(&out(&mut l)[0].1), Some(Method::Ack));
    let statuses: Vec<_> = evs(&mut l)
        .into_iter()
        .filter_map(|e| match e {
            Event::Response { id, response } => Some((id, response.status.as_u16())),
            _ => None,
        })
        .collect();
    assert_eq!(statuses, vec![(cancel_id, 200), (inv, 487)]);
}

#[test]
fn a_final_before_the_provisional_drops_the_deferred_cancel() {
    let (t0, mut l, inv) = uac_with_invite(16);
    assert_eq!(l.cancel(t0, inv), Ok(CancelStatus::Deferred));
    let invite_req = l.request(inv).unwrap().clone();
    l.handle_message(
        t0 + ms(300),
        reply(&invite_req, 200, Some("b")).into(),
        udp(),
    );
    assert!(
        out(&mut l)
            .iter()
            .all(|(_, m)| method(m) != Some(Method::Cancel))
    );
    assert_eq!(l.occupancy(), 1);
    assert_eq!(l.cancel(t0, inv), Ok(CancelStatus::TooLate));
}

#[test]
fn an_unanswered_cancel_gives_up_after_64_t1() {
    let (t0, mut l, inv) = uac_with_invite(16);
    let invite_req = l.request(inv).unwrap().clone();
    l.handle_message(
        t0 + ms(100),
        reply(&invite_req, 183, Some("b")).into(),
        udp(),
    );
    let Ok(CancelStatus::Sent(_)) = l.cancel(t0 + secs(1), inv) else {
        panic!("CANCEL not sent")
    };
    evs(&mut l);
    drive(&mut l, t0 + secs(40));
    let events = evs(&mut l);
    assert!(events.contains(&Event::Timeout {
        id: inv,
        timer: Timer::Cancel
    }));
    assert!(events.contains(&Event::Terminated { id: inv }));
}

#[test]
fn cancel_reports_misuse_and_respects_the_bound() {
    let (t0, mut l, inv) = uac_with_invite(2);
    assert_eq!(
        l.cancel(t0, TransactionId(777)),
        Err(TransactionError::Unknown)
    );
    let bye = l
        .send_request(t0, request(Method::Bye, "z9hG4bKu2"), udp())
        .unwrap();
    assert_eq!(l.cancel(t0, bye), Err(TransactionError::WrongKind));
    // Full: no slot for the CANCEL.
    assert_eq!(l.cancel(t0, inv), Err(TransactionError::TableFull));
    // A deferred CANCEL holds its slot: new requests see a full table.
    let (t0, mut l, inv) = uac_with_invite(2);
    assert_eq!(l.cancel(t0, inv), Ok(CancelStatus::Deferred));
    l.handle_message(t0, request(Method::Options, "z9hG4bKu3").into(), udp());
    assert_eq!(status(&out(&mut l)[0].1), Some(503));
    let invite_req = l.request(inv).unwrap().clone();
    l.handle_message(
        t0 + ms(100),
        reply(&invite_req, 180, Some("b")).into(),
        udp(),
    );
    assert!(
        out(&mut l)
            .iter()
            .any(|(_, m)| method(m) == Some(Method::Cancel))
    );
    assert_eq!((l.len(), l.occupancy()), (2, 2));
}
