use super::*;

fn start(peer: Peer) -> (Instant, ClientInvite<Peer>) {
    let t0 = Instant::now();
    let mut tx = ClientInvite::new(t0, invite("z9hG4bKci1"), peer, Timers::default()).unwrap();
    let first = sent(&mut tx);
    assert_eq!(first.len(), 1);
    assert_eq!(method(&first[0]), Some(Method::Invite));
    (t0, tx)
}

#[test]
fn timer_a_doubles_without_cap_until_timer_b() {
    let (t0, mut tx) = start(udp());
    assert_eq!(tx.state(), State::Calling);
    let log = run(&mut tx, t0, secs(100));
    // 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s: six retransmissions, then B at 32 s.
    assert_eq!(send_times(&log), doubling(500, 6));
    assert!(
        log.iter()
            .flat_map(|(_, s)| s)
            .all(|m| method(m) == Some(Method::Invite))
    );
    assert_eq!(log.last().map(|(at, _)| *at), Some(secs(32)));
    assert_eq!(
        events(&mut tx),
        vec![
            TransactionEvent::Timeout(Timer::B),
            TransactionEvent::Terminated
        ]
    );
    assert_eq!(tx.state(), State::Terminated);
    assert_eq!(tx.poll_timeout(), None);
}

#[test]
fn reliable_transports_do_not_retransmit() {
    let (t0, mut tx) = start(tcp());
    assert_eq!(tx.next_timer(), Some((t0 + secs(32), Timer::B)));
    let log = run(&mut tx, t0, secs(100));
    assert!(send_times(&log).is_empty());
    assert_eq!(events(&mut tx)[0], TransactionEvent::Timeout(Timer::B));
}

#[test]
fn configured_timers_scale_everything() {
    let t0 = Instant::now();
    let timers = Timers {
        t1: ms(100),
        ..Timers::default()
    };
    let mut tx = ClientInvite::new(t0, invite("z9hG4bKci2"), udp(), timers).unwrap();
    sent(&mut tx);
    let log = run(&mut tx, t0, secs(100));
    assert_eq!(send_times(&log), doubling(100, 6));
    assert_eq!(log.last().map(|(at, _)| *at), Some(ms(6400)));
}

#[test]
fn a_late_caller_gets_the_timeout_without_a_last_retransmission() {
    let (t0, mut tx) = start(udp());
    tx.handle_timeout(t0 + secs(40));
    assert!(sent(&mut tx).is_empty());
    assert_eq!(
        events(&mut tx),
        vec![
            TransactionEvent::Timeout(Timer::B),
            TransactionEvent::Terminated
        ]
    );
}

#[test]
fn provisionals_stop_retransmission_and_go_up() {
    let (t0, mut tx) = start(udp());
    let req = tx.request().cloned().unwrap();
    tx.handle_timeout(t0 + ms(500));
    assert_eq!(sent(&mut tx).len(), 1);
    let ringing = reply(&req, 180, Some("b1"));
    tx.handle_response(t0 + ms(700), ringing.clone());
    tx.handle_response(t0 + ms(800), ringing.clone());
    assert_eq!(tx.state(), State::Proceeding);
    assert_eq!(
        events(&mut tx),
        vec![
            TransactionEvent::Response(ringing.clone()),
            TransactionEvent::Response(ringing)
        ]
    );
    // Proceeding waits without a timer of its own.
    assert_eq!(tx.poll_timeout(), None);
    assert!(run(&mut tx, t0, secs(600)).is_empty());
}

#[test]
fn non_2xx_finals_are_acked_by_the_transaction_and_absorbed() {
    let (t0, mut tx) = start(udp());
    let req = tx.request().cloned().unwrap();
    tx.handle_response(t0 + ms(100), reply(&req, 180, Some("b1")));
    let busy = reply(&req, 486, Some("b1"));
    tx.handle_response(t0 + ms(200), busy.clone());
    let ack = sent(&mut tx);
    assert_eq!(ack.len(), 1);
    let ack = ack[0].as_request().unwrap();
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.headers.cseq().unwrap().seq, 1);
    assert_eq!(ack.headers.cseq().unwrap().method, Method::Ack);
    assert_eq!(ack.headers.to().unwrap().tag(), Some(&b"b1"[..]));
    // Same branch as the INVITE: it belongs to the same transaction.
    assert_eq!(
        ack.headers.top_via().unwrap().branch.as_deref(),
        Some(&b"z9hG4bKci1"[..])
    );
    assert_eq!(tx.state(), State::Completed);
    // Past the final only what is resent is kept (a lingering table is cheap).
    assert!(tx.request().is_none());
    let evs = events(&mut tx);
    assert_eq!(evs.last(), Some(&TransactionEvent::Response(busy.clone())));
    // A retransmitted final gets the same ACK and nobody hears of it.
    tx.handle_response(t0 + secs(1), busy);
    assert_eq!(method(&sent(&mut tx)[0]), Some(Method::Ack));
    assert!(events(&mut tx).is_empty());
    // Timer D: 32 s after the final.
    assert_eq!(tx.next_timer(), Some((t0 + ms(200) + secs(32), Timer::D)));
    tx.handle_timeout(t0 + ms(200) + secs(32));
    assert_eq!(events(&mut tx), vec![TransactionEvent::Terminated]);
}

#[test]
fn timer_d_is_zero_on_reliable_transports() {
    let (t0, mut tx) = start(tcp());
    let req = tx.request().cloned().unwrap();
    let busy = reply(&req, 603, Some("b1"));
    tx.handle_response(t0, busy.clone());
    assert_eq!(method(&sent(&mut tx)[0]), Some(Method::Ack));
    assert_eq!(
        events(&mut tx),
        vec![
            TransactionEvent::Response(busy),
            TransactionEvent::Terminated
        ]
    );
    assert_eq!(tx.state(), State::Terminated);
}

#[test]
fn every_2xx_goes_up_until_timer_m() {
    let (t0, mut tx) = start(udp());
    let req = tx.request().cloned().unwrap();
    let ok = reply(&req, 200, Some("b1"));
    tx.handle_response(t0 + ms(50), ok.clone());
    assert_eq!(tx.state(), State::Accepted);
    // Past the final only what is resent is kept (a lingering table is cheap).
    assert!(tx.request().is_none());
    // No ACK from the transaction: ACKing a 2xx is the dialog's job.
    assert!(sent(&mut tx).is_empty());
    let fork = reply(&req, 200, Some("b2"));
    tx.handle_response(t0 + secs(1), ok.clone());
    tx.handle_response(t0 + secs(2), fork.clone());
    tx.handle_response(t0 + secs(3), reply(&req, 500, Some("b3")));
    tx.handle_response(t0 + secs(3), reply(&req, 183, Some("b3")));
    assert_eq!(
        events(&mut tx),
        vec![
            TransactionEvent::Response(ok.clone()),
            TransactionEvent::Response(ok),
            TransactionEvent::Response(fork)
        ]
    );
    assert_eq!(tx.next_timer(), Some((t0 + ms(50) + secs(32), Timer::M)));
    tx.handle_timeout(t0 + secs(40));
    assert_eq!(events(&mut tx), vec![TransactionEvent::Terminated]);
}

#[test]
fn a_final_may_come_straight_from_calling() {
    let (t0, mut tx) = start(udp());
    let req = tx.request().cloned().unwrap();
    tx.handle_response(t0, reply(&req, 404, Some("x")));
    assert_eq!(tx.state(), State::Completed);
    let (t0, mut tx) = start(udp());
    tx.handle_response(t0, reply(&req, 202, Some("x")));
    assert_eq!(tx.state(), State::Accepted);
}

#[test]
fn cancel_arms_the_9_1_wait_only_in_proceeding() {
    let (t0, mut tx) = start(udp());
    let req = tx.request().cloned().unwrap();
    assert!(!tx.cancel_sent(t0));
    tx.handle_response(t0 + ms(100), reply(&req, 180, Some("b1")));
    events(&mut tx);
    assert!(tx.cancel_sent(t0 + secs(10)));
    assert_eq!(tx.next_timer(), Some((t0 + secs(42), Timer::Cancel)));
    tx.handle_timeout(t0 + secs(42));
    assert_eq!(
        events(&mut tx),
        vec![
            TransactionEvent::Timeout(Timer::Cancel),
            TransactionEvent::Terminated
        ]
    );
}

#[test]
fn transport_errors_end_the_transaction() {
    let (t0, mut tx) = start(udp());
    let req = tx.request().cloned().unwrap();
    tx.handle_transport_error(t0);
    tx.handle_transport_error(t0);
    assert_eq!(
        events(&mut tx),
        vec![
            TransactionEvent::TransportError,
            TransactionEvent::Terminated
        ]
    );
    tx.handle_response(t0, reply(&req, 200, Some("b")));
    assert!(events(&mut tx).is_empty());
}

#[test]
fn construction_checks_method_and_branch() {
    let t0 = Instant::now();
    assert_eq!(
        ClientInvite::new(
            t0,
            request(Method::Bye, "z9hG4bK1"),
            udp(),
            Timers::default()
        )
        .unwrap_err(),
        TransactionError::WrongMethod
    );
    assert_eq!(
        ClientInvite::new(t0, invite("old-branch"), udp(), Timers::default()).unwrap_err(),
        TransactionError::NoBranch
    );
}
