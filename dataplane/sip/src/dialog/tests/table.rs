use super::*;

/// A UAS dialog for an INVITE with Call-ID `call`, answered with 200.
fn answered(t0: Instant, ids: &mut IdGenerator, call: &str) -> (Dialog<Peer>, Request) {
    let mut inv = invite(&[], &[]);
    inv.headers.remove(KnownHeader::CallId);
    inv.headers
        .push(Header::new(KnownHeader::CallId, call.to_owned()).unwrap());
    let mut d = Dialog::uas(&inv, b"b", bob_local(), alice_peer(), no_timers(), ids).unwrap();
    bob_answers(t0, &mut d, &inv, 200);
    (d, inv)
}

/// A request Alice sends in the dialog with Call-ID `call`.
fn from_alice(method: Method, call: &str, cseq: u32) -> Request {
    with_header(
        RequestBuilder::new(method, Uri::parse("sip:bob@192.0.2.20").unwrap())
            .from(&NameAddr::from_bytes("<sip:alice@example.com>;tag=alice1").unwrap())
            .to(&NameAddr::from_bytes("<sip:bob@example.com>;tag=b").unwrap())
            .call_id(call.to_owned())
            .cseq(cseq)
            .build()
            .unwrap(),
        KnownHeader::Via,
        "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKa",
    )
}

#[test]
fn the_table_routes_aggregates_timers_and_forgets_the_dead() {
    let t0 = Instant::now();
    let mut ids = IdGenerator::new(20);
    let mut table = DialogTable::new(2);
    let (d1, _) = answered(t0, &mut ids, "c1");
    let (d2, _) = answered(t0 + ms(100), &mut ids, "c2");
    let id1 = table.insert(d1).unwrap();
    let id2 = table.insert(d2).unwrap();
    assert_eq!(table.len(), 2);
    let confirmed: Vec<_> = std::iter::from_fn(|| table.poll_event()).collect();
    assert_eq!(
        confirmed,
        vec![
            (id1.clone(), DialogEvent::Confirmed),
            (id2.clone(), DialogEvent::Confirmed)
        ]
    );
    let (dup, _) = answered(t0, &mut ids, "c1");
    assert_eq!(table.insert(dup).unwrap_err(), DialogError::Exists);
    let (d3, _) = answered(t0, &mut ids, "c3");
    assert_eq!(table.insert(d3).unwrap_err(), DialogError::TableFull);

    // One deadline for both dialogs' 2xx retransmissions.
    assert_eq!(table.poll_timeout(), Some(t0 + ms(500)));
    table.handle_timeout(t0 + ms(500));
    assert_eq!(std::iter::from_fn(|| table.poll_transmit()).count(), 1);
    assert_eq!(table.poll_timeout(), Some(t0 + ms(600)));
    table.handle_timeout(t0 + ms(600));
    assert_eq!(std::iter::from_fn(|| table.poll_transmit()).count(), 1);
    assert_eq!(table.poll_timeout(), Some(t0 + ms(1500)));

    // The ACK for dialog 1 is routed to it and stops its retransmissions.
    let ack = from_alice(Method::Ack, "c1", 1);
    assert_eq!(table.find_request(&ack), Some(id1.clone()));
    assert_eq!(
        table.update(&id1, |d| d.handle_request(t0, &ack)),
        Some(Incoming::Ack)
    );
    assert_eq!(table.poll_timeout(), Some(t0 + ms(1600)));

    // A BYE ends dialog 1; the table drops it after its last event.
    let bye = from_alice(Method::Bye, "c1", 2);
    assert_eq!(
        table.update(&id1, |d| d.handle_request(t0, &bye)),
        Some(Incoming::Accept)
    );
    assert_eq!(
        table.poll_event(),
        Some((id1.clone(), DialogEvent::Terminated(Termination::RemoteBye)))
    );
    assert!(table.get(&id1).is_none());
    assert_eq!(table.find_request(&bye), None);
    assert_eq!(table.update(&id1, |_| ()), None);

    // Dialog 2 times out waiting for its ACK; the TU then ends it.
    table.handle_timeout(t0 + secs(40));
    let events: Vec<_> = std::iter::from_fn(|| table.poll_event()).collect();
    assert_eq!(
        events,
        vec![(id2.clone(), DialogEvent::AckTimeout { cseq: 1 })]
    );
    assert_eq!(table.poll_timeout(), None);
    let bye = table.update(&id2, |d| d.request(Method::Bye).map(|_| ()));
    assert_eq!(bye, Some(Ok(())));
    assert!(table.is_empty());

    // Responses find their dialog the other way round.
    let (d4, inv4) = answered(t0, &mut ids, "c4");
    let ok = d4.reply(&inv4, StatusCode::OK).build().unwrap();
    let mut uac = Dialog::uac(
        t0,
        &inv4,
        &ok,
        alice_local(),
        bob_peer(),
        no_timers(),
        &mut ids,
    )
    .unwrap();
    drain(&mut uac);
    let uac_id = table.insert(uac).unwrap();
    assert_eq!(table.find_response(&ok), Some(uac_id.clone()));
    assert_eq!(table.remove(&uac_id).map(|d| d.id().clone()), Some(uac_id));
}

#[test]
fn the_timer_heap_stays_bounded_under_churn() {
    let t0 = Instant::now();
    let mut ids = IdGenerator::new(21);
    let mut table = DialogTable::new(10_000);
    let mut all = Vec::new();
    for i in 0..2_000 {
        let (d, _) = answered(t0, &mut ids, &format!("churn{i}"));
        all.push(table.insert(d).unwrap());
    }
    // Every ACK moves a deadline; stale heap entries must not pile up.
    for (i, id) in all.iter().enumerate() {
        let ack = from_alice(Method::Ack, &format!("churn{i}"), 1);
        table.update(id, |d| d.handle_request(t0, &ack));
    }
    assert_eq!(table.poll_timeout(), None);
    for (i, id) in all.iter().enumerate() {
        let bye = from_alice(Method::Bye, &format!("churn{i}"), 2);
        table.update(id, |d| d.handle_request(t0, &bye));
    }
    assert!(table.is_empty());
    assert!(
        table.timers.len() <= 1024,
        "{} stale entries kept",
        table.timers.len()
    );
}
