use super::*;

fn start(peer: Peer) -> (Instant, ClientNonInvite<Peer>) {
    let t0 = Instant::now();
    let mut tx = ClientNonInvite::new(
        t0,
        request(Method::Bye, "z9hG4bKcn1"),
        peer,
        Timers::default(),
    )
    .unwrap();
    assert_eq!(method(&sent(&mut tx)[0]), Some(Method::Bye));
    (t0, tx)
}

#[test]
fn timer_e_doubles_up_to_t2_until_timer_f() {
    let (t0, mut tx) = start(udp());
    assert_eq!(tx.state(), State::Trying);
    let log = run(&mut tx, t0, secs(100));
    // 0.5, 1.5, 3.5, 7.5, then every 4 s: 11.5 ... 31.5; F at 32 s.
    let expected = capped(500, 4000);
    assert_eq!(expected.len(), 10);
    assert_eq!(send_times(&log), expected);
    assert_eq!(log.last().map(|(at, _)| *at), Some(secs(32)));
    assert_eq!(
        events(&mut tx),
        vec![
            TransactionEvent::Timeout(Timer::F),
            TransactionEvent::Terminated
        ]
    );
}

#[test]
fn proceeding_retransmits_every_t2() {
    let (t0, mut tx) = start(udp());
    let req = tx.request().cloned().unwrap();
    tx.handle_timeout(t0 + ms(500));
    assert_eq!(sent(&mut tx).len(), 1);
    let trying = reply(&req, 100, None);
    tx.handle_response(t0 + ms(600), trying.clone());
    assert_eq!(tx.state(), State::Proceeding);
    assert_eq!(events(&mut tx), vec![TransactionEvent::Response(trying)]);
    let log = run(&mut tx, t0, secs(100));
    // The pending firing (1.5 s) keeps its schedule; then every T2.
    let expected: Vec<_> = [1500, 5500, 9500, 13500, 17500, 21500, 25500, 29500]
        .into_iter()
        .map(ms)
        .collect();
    assert_eq!(send_times(&log), expected);
    assert_eq!(events(&mut tx)[0], TransactionEvent::Timeout(Timer::F));
}

#[test]
fn finals_go_up_once_and_timer_k_absorbs_the_rest() {
    let (t0, mut tx) = start(udp());
    let req = tx.request().cloned().unwrap();
    let ok = reply(&req, 200, Some("b"));
    tx.handle_response(t0 + ms(100), ok.clone());
    assert_eq!(tx.state(), State::Completed);
    // Past the final only what is resent is kept (a lingering table is cheap).
    assert!(tx.request().is_none());
    tx.handle_response(t0 + ms(900), ok.clone());
    assert!(sent(&mut tx).is_empty());
    assert_eq!(events(&mut tx), vec![TransactionEvent::Response(ok)]);
    assert_eq!(tx.next_timer(), Some((t0 + ms(5100), Timer::K)));
    tx.handle_timeout(t0 + ms(5100));
    assert_eq!(events(&mut tx), vec![TransactionEvent::Terminated]);
}

#[test]
fn reliable_transports_skip_e_and_k() {
    let (t0, mut tx) = start(tcp());
    let req = tx.request().cloned().unwrap();
    assert_eq!(tx.next_timer(), Some((t0 + secs(32), Timer::F)));
    let ok = reply(&req, 481, Some("b"));
    tx.handle_response(t0, ok.clone());
    assert_eq!(
        events(&mut tx),
        vec![TransactionEvent::Response(ok), TransactionEvent::Terminated]
    );
}

#[test]
fn a_late_caller_gets_the_timeout_alone() {
    let (t0, mut tx) = start(udp());
    tx.handle_timeout(t0 + secs(33));
    assert!(sent(&mut tx).is_empty());
    assert_eq!(events(&mut tx)[0], TransactionEvent::Timeout(Timer::F));
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
    assert_eq!(tx.poll_timeout(), None);
    for (m, e) in [
        (Method::Invite, TransactionError::WrongMethod),
        (Method::Ack, TransactionError::AckIsNotATransaction),
    ] {
        assert_eq!(
            ClientNonInvite::new(t0, request(m, "z9hG4bK1"), udp(), Timers::default()).unwrap_err(),
            e
        );
    }
}
