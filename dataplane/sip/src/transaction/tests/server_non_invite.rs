use super::*;

fn start(peer: Peer) -> (Instant, ServerNonInvite<Peer>) {
    let t0 = Instant::now();
    let tx = ServerNonInvite::new(
        t0,
        request(Method::Options, "z9hG4bKsn1"),
        peer,
        Timers::default(),
    )
    .unwrap();
    (t0, tx)
}

fn again() -> Request {
    request(Method::Options, "z9hG4bKsn1")
}

#[test]
fn trying_proceeding_completed_answer_retransmissions_as_figure_8_says() {
    let (t0, mut tx) = start(udp());
    let req = tx.request().cloned().unwrap();
    assert_eq!(tx.state(), State::Trying);
    tx.handle_request(t0 + ms(500), again());
    assert!(sent(&mut tx).is_empty());
    tx.respond(t0 + ms(600), reply(&req, 183, Some("s")))
        .unwrap();
    assert_eq!(tx.state(), State::Proceeding);
    assert_eq!(status(&sent(&mut tx)[0]), Some(183));
    tx.handle_request(t0 + ms(700), again());
    assert_eq!(status(&sent(&mut tx)[0]), Some(183));
    tx.respond(t0 + secs(1), reply(&req, 200, Some("s")))
        .unwrap();
    assert_eq!(tx.state(), State::Completed);
    // Past the final only what is resent is kept (a lingering table is cheap).
    assert!(tx.request().is_none());
    assert_eq!(status(&sent(&mut tx)[0]), Some(200));
    tx.handle_request(t0 + secs(2), again());
    assert_eq!(status(&sent(&mut tx)[0]), Some(200));
    assert_eq!(
        tx.respond(t0, reply(&req, 500, Some("s"))),
        Err(TransactionError::WrongState(State::Completed))
    );
    // Timer J: 64·T1 after the final.
    assert_eq!(tx.next_timer(), Some((t0 + secs(33), Timer::J)));
    tx.handle_timeout(t0 + secs(33));
    assert_eq!(events(&mut tx), vec![TransactionEvent::Terminated]);
}

#[test]
fn timer_j_is_zero_on_reliable_transports() {
    let (t0, mut tx) = start(tcp());
    let req = tx.request().cloned().unwrap();
    tx.respond(t0, reply(&req, 200, Some("s"))).unwrap();
    assert_eq!(events(&mut tx), vec![TransactionEvent::Terminated]);
    assert_eq!(tx.state(), State::Terminated);
}

#[test]
fn a_silent_tu_is_given_up_on_after_64_t1() {
    let (t0, mut tx) = start(udp());
    assert_eq!(tx.next_timer(), Some((t0 + secs(32), Timer::Unanswered)));
    tx.handle_timeout(t0 + secs(32));
    assert_eq!(
        events(&mut tx),
        vec![
            TransactionEvent::Timeout(Timer::Unanswered),
            TransactionEvent::Terminated
        ]
    );
}

#[test]
fn transport_errors_and_construction() {
    let (t0, mut tx) = start(udp());
    tx.handle_transport_error(t0);
    assert_eq!(
        events(&mut tx),
        vec![
            TransactionEvent::TransportError,
            TransactionEvent::Terminated
        ]
    );
    for (m, e) in [
        (Method::Invite, TransactionError::WrongMethod),
        (Method::Ack, TransactionError::AckIsNotATransaction),
    ] {
        assert_eq!(
            ServerNonInvite::new(t0, request(m, "z9hG4bK1"), udp(), Timers::default()).unwrap_err(),
            e
        );
    }
}
