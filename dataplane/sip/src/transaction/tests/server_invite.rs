use super::*;

fn start(peer: Peer, trying_now: bool) -> (Instant, ServerInvite<Peer>) {
    let t0 = Instant::now();
    let tx = ServerInvite::new(
        t0,
        invite("z9hG4bKsi1"),
        peer,
        Timers::default(),
        trying_now,
    )
    .unwrap();
    (t0, tx)
}

fn ack(tag: &str) -> Request {
    request_with(Method::Ack, "z9hG4bKsi1", 1, Some(tag))
}

#[test]
fn trying_goes_out_after_200ms_of_tu_silence() {
    let (t0, mut tx) = start(udp(), false);
    assert!(sent(&mut tx).is_empty());
    // A retransmission before anything was sent is absorbed.
    tx.handle_request(t0 + ms(100), invite("z9hG4bKsi1"));
    assert!(sent(&mut tx).is_empty());
    assert_eq!(tx.next_timer(), Some((t0 + ms(200), Timer::Trying)));
    tx.handle_timeout(t0 + ms(200));
    let trying = sent(&mut tx);
    assert_eq!(
        trying.iter().map(status).collect::<Vec<_>>(),
        vec![Some(100)]
    );
    // 100 carries no To tag (§8.2.6.1).
    assert_eq!(trying[0].headers().to().unwrap().tag(), None);
    tx.handle_request(t0 + ms(600), invite("z9hG4bKsi1"));
    assert_eq!(status(&sent(&mut tx)[0]), Some(100));
    assert_eq!(tx.poll_timeout(), None);
    assert!(events(&mut tx).is_empty());
}

#[test]
fn trying_goes_out_at_once_when_asked() {
    let (_, mut tx) = start(udp(), true);
    assert_eq!(status(&sent(&mut tx)[0]), Some(100));
    assert_eq!(tx.poll_timeout(), None);
}

#[test]
fn an_early_tu_answer_suppresses_trying_and_is_retransmitted() {
    let (t0, mut tx) = start(udp(), false);
    let req = tx.request().cloned().unwrap();
    tx.respond(t0 + ms(50), reply(&req, 180, Some("s1")))
        .unwrap();
    assert_eq!(status(&sent(&mut tx)[0]), Some(180));
    assert_eq!(tx.local_tag().map(|t| &t[..]), Some(&b"s1"[..]));
    assert!(run(&mut tx, t0, secs(10)).is_empty());
    tx.handle_request(t0 + secs(1), invite("z9hG4bKsi1"));
    assert_eq!(status(&sent(&mut tx)[0]), Some(180));
    tx.send_trying(t0 + secs(1));
    assert!(sent(&mut tx).is_empty());
}

#[test]
fn non_2xx_finals_repeat_on_timer_g_until_timer_h() {
    let (t0, mut tx) = start(udp(), true);
    let req = tx.request().cloned().unwrap();
    sent(&mut tx);
    tx.respond(t0, reply(&req, 486, Some("s1"))).unwrap();
    assert_eq!(status(&sent(&mut tx)[0]), Some(486));
    assert_eq!(tx.state(), State::Completed);
    // Past the final only what is resent is kept (a lingering table is cheap).
    assert!(tx.request().is_none());
    assert_eq!(tx.final_status(), Some(StatusCode::BUSY_HERE));
    let log = run(&mut tx, t0, secs(100));
    assert_eq!(send_times(&log), capped(500, 4000));
    assert!(
        log.iter()
            .flat_map(|(_, s)| s)
            .all(|m| status(m) == Some(486))
    );
    assert_eq!(log.last().map(|(at, _)| *at), Some(secs(32)));
    assert_eq!(
        events(&mut tx),
        vec![
            TransactionEvent::Timeout(Timer::H),
            TransactionEvent::Terminated
        ]
    );
}

#[test]
fn the_ack_is_absorbed_and_timer_i_ends_it() {
    let (t0, mut tx) = start(udp(), false);
    let req = tx.request().cloned().unwrap();
    tx.respond(t0, reply(&req, 404, Some("s1"))).unwrap();
    sent(&mut tx);
    // A retransmitted INVITE in Completed gets the final again.
    tx.handle_request(t0 + ms(100), invite("z9hG4bKsi1"));
    assert_eq!(status(&sent(&mut tx)[0]), Some(404));
    tx.handle_request(t0 + ms(300), ack("s1"));
    assert_eq!(tx.state(), State::Confirmed);
    // Confirmed absorbs everything and retransmits nothing.
    tx.handle_request(t0 + ms(400), ack("s1"));
    tx.handle_request(t0 + ms(400), invite("z9hG4bKsi1"));
    assert!(sent(&mut tx).is_empty());
    assert!(events(&mut tx).is_empty());
    assert_eq!(tx.next_timer(), Some((t0 + ms(5300), Timer::I)));
    assert!(send_times(&run(&mut tx, t0, secs(10))).is_empty());
    assert_eq!(events(&mut tx), vec![TransactionEvent::Terminated]);
}

#[test]
fn reliable_transports_skip_g_and_i() {
    let (t0, mut tx) = start(tcp(), false);
    let req = tx.request().cloned().unwrap();
    tx.respond(t0, reply(&req, 480, Some("s1"))).unwrap();
    assert_eq!(tx.next_timer(), Some((t0 + secs(32), Timer::H)));
    tx.handle_request(t0 + ms(10), ack("s1"));
    assert_eq!(events(&mut tx), vec![TransactionEvent::Terminated]);
}

#[test]
fn accepted_absorbs_invites_passes_2xx_and_acks_until_timer_l() {
    let (t0, mut tx) = start(udp(), false);
    let req = tx.request().cloned().unwrap();
    let ok = reply(&req, 200, Some("s1"));
    tx.respond(t0, ok.clone()).unwrap();
    assert_eq!(tx.state(), State::Accepted);
    // Past the final only what is resent is kept (a lingering table is cheap).
    assert!(tx.request().is_none());
    assert_eq!(sent(&mut tx).len(), 1);
    tx.handle_request(t0 + ms(500), invite("z9hG4bKsi1"));
    assert!(sent(&mut tx).is_empty());
    // The dialog's 2xx retransmissions pass through; other statuses don't.
    tx.respond(t0 + ms(500), ok).unwrap();
    assert_eq!(status(&sent(&mut tx)[0]), Some(200));
    assert_eq!(
        tx.respond(t0, reply(&req, 500, Some("s1"))),
        Err(TransactionError::WrongState(State::Accepted))
    );
    // An ACK reusing the INVITE's branch goes to the TU.
    tx.handle_request(t0 + secs(1), ack("s1"));
    assert_eq!(events(&mut tx), vec![TransactionEvent::Ack(ack("s1"))]);
    assert_eq!(tx.next_timer(), Some((t0 + secs(32), Timer::L)));
    tx.handle_timeout(t0 + secs(32));
    assert_eq!(events(&mut tx), vec![TransactionEvent::Terminated]);
}

#[test]
fn finals_cannot_be_replaced_and_early_acks_are_ignored() {
    let (t0, mut tx) = start(udp(), false);
    let req = tx.request().cloned().unwrap();
    tx.handle_request(t0, ack("s1"));
    assert_eq!(tx.state(), State::Proceeding);
    tx.respond(t0, reply(&req, 486, Some("s1"))).unwrap();
    assert_eq!(
        tx.respond(t0, reply(&req, 200, Some("s1"))),
        Err(TransactionError::WrongState(State::Completed))
    );
    tx.handle_transport_error(t0);
    assert_eq!(
        events(&mut tx),
        vec![
            TransactionEvent::TransportError,
            TransactionEvent::Terminated
        ]
    );
    assert_eq!(
        tx.respond(t0, reply(&req, 486, Some("s1"))),
        Err(TransactionError::WrongState(State::Terminated))
    );
    assert_eq!(
        ServerInvite::new(
            t0,
            request(Method::Bye, "z9hG4bK1"),
            udp(),
            Timers::default(),
            false
        )
        .unwrap_err(),
        TransactionError::WrongMethod
    );
}
