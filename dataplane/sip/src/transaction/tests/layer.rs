use super::*;

pub(super) fn layer(max: usize) -> TransactionLayer<Peer> {
    TransactionLayer::new(Config {
        max_transactions: max,
        ..Config::default()
    })
}

pub(super) fn out(l: &mut TransactionLayer<Peer>) -> Vec<(Transmit<Peer>, Message)> {
    std::iter::from_fn(|| l.poll_transmit())
        .map(|t| {
            let m = parse(&t);
            (t, m)
        })
        .collect()
}

pub(super) fn evs(l: &mut TransactionLayer<Peer>) -> Vec<Event<Peer>> {
    std::iter::from_fn(|| l.poll_event()).collect()
}

/// Jumps the table from deadline to deadline up to `until`.
pub(super) fn drive(l: &mut TransactionLayer<Peer>, until: Instant) {
    while let Some(at) = l.poll_timeout().filter(|at| *at <= until) {
        l.handle_timeout(at);
    }
}

fn received_id(events: &[Event<Peer>]) -> TransactionId {
    match events.first() {
        Some(Event::Request { id, .. }) => *id,
        other => panic!("expected a request event, got {other:?}"),
    }
}

#[test]
fn a_server_transaction_lives_answers_and_is_removed() {
    let t0 = Instant::now();
    let mut l = layer(16);
    l.handle_message(t0, invite("z9hG4bKl1").into(), udp());
    let ev = evs(&mut l);
    assert_eq!(ev.len(), 1);
    let id = received_id(&ev);
    assert_eq!(l.kind(id), Some(Kind::ServerInvite));
    assert_eq!(l.len(), 1);
    // The retransmission never reaches the TU.
    l.handle_message(t0 + ms(100), invite("z9hG4bKl1").into(), udp());
    assert!(evs(&mut l).is_empty());
    assert_eq!(l.stats().retransmissions_absorbed, 1);
    let busy = reply(l.request(id).unwrap(), 486, Some("s"));
    l.respond(t0 + ms(150), id, busy).unwrap();
    let sent = out(&mut l);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0.transaction, Some(id));
    assert_eq!(sent[0].0.destination, udp());
    l.handle_message(
        t0 + ms(300),
        request_with(Method::Ack, "z9hG4bKl1", 1, Some("s")).into(),
        udp(),
    );
    assert!(evs(&mut l).is_empty(), "the ACK for a non-2xx is absorbed");
    assert_eq!(l.state(id), Some(State::Confirmed));
    drive(&mut l, t0 + secs(60));
    assert_eq!(evs(&mut l), vec![Event::Terminated { id }]);
    assert!(l.is_empty());
    assert_eq!(l.state(id), None);
    assert_eq!(l.poll_timeout(), None);
    // With the transaction gone, the same INVITE is new again.
    l.handle_message(t0 + secs(61), invite("z9hG4bKl1").into(), udp());
    assert_ne!(received_id(&evs(&mut l)), id);
}

#[test]
fn acks_for_2xx_and_stray_responses() {
    let t0 = Instant::now();
    let mut l = layer(16);
    l.handle_message(t0, invite("z9hG4bKl2").into(), udp());
    let id = received_id(&evs(&mut l));
    l.respond(t0, id, reply(l.request(id).unwrap(), 200, Some("s")))
        .unwrap();
    out(&mut l);
    // The ACK for a 2xx has a branch of its own: it goes to the TU.
    let ack = request_with(Method::Ack, "z9hG4bKother", 1, Some("s"));
    l.handle_message(t0 + ms(10), ack.clone().into(), udp());
    assert_eq!(
        evs(&mut l),
        vec![Event::Ack {
            request: ack,
            transaction: None
        }]
    );
    assert_eq!(l.stats().stray_acks, 1);
    // A retransmitted INVITE after the 2xx is absorbed (RFC 6026).
    l.handle_message(t0 + ms(20), invite("z9hG4bKl2").into(), udp());
    assert!(evs(&mut l).is_empty() && out(&mut l).is_empty());
    // Responses for no transaction, or with two Vias, are dropped.
    l.handle_message(
        t0,
        reply(&invite("z9hG4bKnone"), 200, Some("x")).into(),
        udp(),
    );
    let mut two_vias = reply(&invite("z9hG4bKnone"), 200, Some("x"));
    two_vias.headers.push(
        crate::header::Header::new(crate::KnownHeader::Via, "SIP/2.0/UDP b;branch=z9hG4bKx")
            .unwrap(),
    );
    l.handle_message(t0, two_vias.into(), udp());
    assert_eq!(l.stats().stray_responses, 2);
    assert!(evs(&mut l).is_empty());
}

#[test]
fn client_transactions_route_responses_by_branch_and_method() {
    let t0 = Instant::now();
    let mut l = layer(16);
    let id = l
        .send_request(t0, request(Method::Options, "z9hG4bKc1"), udp())
        .unwrap();
    let sent = out(&mut l);
    assert_eq!(sent[0].0.transaction, Some(id));
    let ok = reply(l.request(id).unwrap(), 200, Some("b"));
    // Same branch, other CSeq method: not this transaction.
    let mut wrong = ok.clone();
    wrong.headers.remove(crate::KnownHeader::CSeq);
    wrong
        .headers
        .push(crate::header::Header::new(crate::KnownHeader::CSeq, "1 INFO").unwrap());
    l.handle_message(t0, wrong.into(), udp());
    assert!(evs(&mut l).is_empty());
    l.handle_message(t0 + ms(30), ok.clone().into(), udp());
    assert_eq!(evs(&mut l), vec![Event::Response { id, response: ok }]);
    drive(&mut l, t0 + secs(10));
    assert_eq!(evs(&mut l), vec![Event::Terminated { id }]);
    assert!(l.is_empty());
}

#[test]
fn timer_b_through_the_table_takes_microseconds() {
    let wall = Instant::now();
    let t0 = Instant::now();
    let mut l = layer(16);
    let id = l.send_request(t0, invite("z9hG4bKb"), udp()).unwrap();
    let mut invites = out(&mut l).len();
    while let Some(at) = l.poll_timeout() {
        l.handle_timeout(at);
        invites += out(&mut l).len();
    }
    assert_eq!(invites, 7);
    assert_eq!(
        evs(&mut l),
        vec![
            Event::Timeout {
                id,
                timer: Timer::B
            },
            Event::Terminated { id }
        ]
    );
    assert!(
        wall.elapsed() < secs(1),
        "32 s of protocol time must not take wall time"
    );
}

#[test]
fn the_table_is_bounded_and_refuses_with_503() {
    let t0 = Instant::now();
    let mut l = layer(2);
    l.handle_message(t0, invite("z9hG4bKf1").into(), udp());
    l.send_request(t0, request(Method::Bye, "z9hG4bKf2"), udp())
        .unwrap();
    out(&mut l);
    evs(&mut l);
    assert_eq!(l.len(), 2);
    l.handle_message(t0, request(Method::Options, "z9hG4bKf3").into(), udp());
    assert!(evs(&mut l).is_empty());
    let refused = out(&mut l);
    assert_eq!(refused.len(), 1);
    let (t, m) = &refused[0];
    assert_eq!(t.transaction, None);
    assert_eq!(status(m), Some(503));
    assert_eq!(
        m.headers()
            .get(crate::KnownHeader::RetryAfter)
            .map(|v| &v[..]),
        Some(&b"5"[..])
    );
    assert!(m.headers().to().unwrap().tag().is_some());
    assert_eq!(
        l.send_request(t0, request(Method::Bye, "z9hG4bKf4"), udp()),
        Err(TransactionError::TableFull)
    );
    // ACKs are never answered; they still reach the TU.
    l.handle_message(
        t0,
        request_with(Method::Ack, "z9hG4bKf5", 1, Some("x")).into(),
        udp(),
    );
    assert!(out(&mut l).is_empty());
    assert_eq!(evs(&mut l).len(), 1);
    assert_eq!(l.stats().rejected_full, 1);
    assert_eq!(l.len(), 2);
}

#[test]
fn the_last_eighth_of_the_table_is_kept_for_what_ends_or_continues_a_dialog() {
    let t0 = Instant::now();
    let mut l = layer(16);
    for i in 0..14 {
        l.handle_message(t0, invite(&format!("z9hG4bKn{i}")).into(), udp());
    }
    evs(&mut l);
    out(&mut l);
    assert_eq!(l.len(), 14);
    // New things stop at 14 of 16, received or sent.
    l.handle_message(t0, request(Method::Options, "z9hG4bKo1").into(), udp());
    let refused = out(&mut l);
    assert_eq!(refused.len(), 1);
    assert_eq!(status(&refused[0].1), Some(503));
    assert_eq!(
        l.send_request(t0, invite("z9hG4bKo2"), udp()),
        Err(TransactionError::TableFull)
    );
    assert_eq!(l.stats().rejected_full, 1);
    // A BYE inside a dialog still gets a transaction, and so does ours.
    l.handle_message(
        t0,
        request_with(Method::Bye, "z9hG4bKb1", 2, Some("x")).into(),
        udp(),
    );
    assert!(matches!(
        &evs(&mut l)[..],
        [Event::Request { request, .. }] if request.method == Method::Bye
    ));
    l.send_request(
        t0,
        request_with(Method::Bye, "z9hG4bKb2", 3, Some("y")),
        udp(),
    )
    .unwrap();
    assert_eq!(l.len(), 16);
    // Beyond the whole table, nothing.
    assert_eq!(
        l.send_request(
            t0,
            request_with(Method::Bye, "z9hG4bKb3", 4, Some("y")),
            udp()
        ),
        Err(TransactionError::TableFull)
    );
}

#[test]
fn send_and_respond_report_misuse() {
    let t0 = Instant::now();
    let mut l = layer(16);
    assert_eq!(
        l.send_request(t0, request(Method::Ack, "z9hG4bK1"), udp()),
        Err(TransactionError::AckIsNotATransaction)
    );
    assert_eq!(
        l.send_request(t0, request(Method::Bye, "2543-branch"), udp()),
        Err(TransactionError::NoBranch)
    );
    let id = l
        .send_request(t0, request(Method::Bye, "z9hG4bK1"), udp())
        .unwrap();
    assert_eq!(
        l.send_request(t0, request(Method::Bye, "z9hG4bK1"), udp()),
        Err(TransactionError::DuplicateBranch)
    );
    let r = reply(&request(Method::Bye, "z9hG4bK1"), 200, None);
    assert_eq!(
        l.respond(t0, id, r.clone()),
        Err(TransactionError::WrongKind)
    );
    assert_eq!(l.send_trying(t0, id), Err(TransactionError::WrongKind));
    assert_eq!(
        l.respond(t0, TransactionId(999), r),
        Err(TransactionError::Unknown)
    );
    l.handle_transport_error(t0, id);
    assert_eq!(
        evs(&mut l),
        vec![Event::TransportError { id }, Event::Terminated { id }]
    );
    assert!(l.is_empty());
}

#[test]
fn responses_follow_the_via_of_the_request() {
    let t0 = Instant::now();
    let mut l = layer(16);
    let mut req = invite("z9hG4bKr1");
    // Sent-by says 5070, the packet came from a NAT'd port without rport.
    let source = Peer::udp("203.0.113.9:31000".parse().unwrap());
    crate::transaction::stamp_received(&mut req.headers, source.addr).unwrap();
    l.handle_message(t0, req.into(), source.clone());
    let id = received_id(&evs(&mut l));
    l.send_trying(t0, id).unwrap();
    let sent = out(&mut l);
    assert_eq!(
        sent[0].0.destination.addr,
        "203.0.113.9:5060".parse().unwrap()
    );
    let via = sent[0].1.headers().top_via().unwrap();
    assert_eq!(via.received, Some("203.0.113.9".parse().unwrap()));
}

#[test]
fn thousands_of_timers_stay_cheap_and_the_heap_stays_bounded() {
    let t0 = Instant::now();
    let mut l = layer(100_000);
    let mut ids = Vec::new();
    for i in 0..4_000 {
        let branch = format!("z9hG4bKmany{i}");
        ids.push(
            l.send_request(t0 + ms(i % 97), request(Method::Options, &branch), udp())
                .unwrap(),
        );
    }
    let discard = |l: &mut TransactionLayer<Peer>| while l.poll_transmit().is_some() {};
    discard(&mut l);
    assert_eq!(l.poll_timeout(), Some(t0 + ms(500)));
    // Answer every other one: their deadlines move to Timer K.
    for id in ids.iter().step_by(2) {
        let r = reply(l.request(*id).unwrap(), 200, Some("b"));
        l.handle_message(t0 + ms(200), r.into(), udp());
    }
    drive(&mut l, t0 + secs(20));
    discard(&mut l);
    assert!(l.timer_entries() <= 2 * l.len() + 1024);
    drive(&mut l, t0 + secs(100));
    assert!(l.is_empty());
    assert_eq!(l.poll_timeout(), None);
    assert_eq!(
        evs(&mut l)
            .iter()
            .filter(|e| matches!(e, Event::Terminated { .. }))
            .count(),
        4_000
    );
}
