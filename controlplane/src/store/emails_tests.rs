//! The email outbox at the store level, each test on SQLite and on
//! PostgreSQL: the email is written with the call's end (and only then),
//! carries that end's transcript, and is claimed by one sender.

use codeb_types::CallStatus;

use super::{EmailState, EmailStep};
use crate::store::testing::{self, NODE, T0, TENANT, TestDb, ended};
use crate::store::{Applied, DispatchCall, EventKind, NewCall, Speaker, Store, SwitchEvent};

fn new_call(n: u8, retries: i64) -> NewCall {
    NewCall {
        display_name: "Zahnarzt Müller".into(),
        email: format!("ops{n}@example.com"),
        ..testing::new_call(n, retries)
    }
}

async fn in_flight(s: &Store, n: u8, retries: i64) -> DispatchCall {
    let c = new_call(n, retries);
    s.insert_call(&c).await.unwrap();
    let claimed = s.claim_call(&c.call_id, T0).await.unwrap().unwrap();
    assert!(s.set_dispatch_node(&claimed, NODE, None, T0).await.unwrap());
    assert!(s.mark_placed(&claimed, "", "", T0).await.unwrap());
    if s.switch_cursor(NODE).await.unwrap().is_none() {
        s.reset_switch_cursor(NODE, "j1", T0).await.unwrap();
    }
    claimed
}

async fn apply(s: &Store, call: &DispatchCall, kind: EventKind) -> Applied {
    let seq = s.switch_cursor(NODE).await.unwrap().unwrap().last_seq + 1;
    let ev = SwitchEvent {
        journal_id: "j1".into(),
        seq,
        at: T0.plus_ms(seq * 1000),
        call_id: call.call_id.to_string(),
        attempt: call.attempt,
        tenant: TENANT.into(),
        kind,
    };
    s.apply_switch_event(NODE, &ev, T0.plus_ms(60_000))
        .await
        .unwrap()
}

fn turn(speaker: Speaker, text: &str, at_ms: i64) -> EventKind {
    EventKind::Turn {
        speaker,
        text: text.into(),
        at_ms,
    }
}

async fn an_ended_call_queues_one_email_with_its_transcript(db: TestDb) {
    let s = &db.store;
    let call = in_flight(s, 1, 0).await;
    let id = call.call_id.as_str();
    apply(
        s,
        &call,
        turn(Speaker::Ai, "Hi, this is your reminder.", 500),
    )
    .await;
    assert!(
        s.call_email(TENANT, id).await.unwrap().is_none(),
        "nothing before the end"
    );
    apply(s, &call, turn(Speaker::Caller, "Danke, tschüss.", 4000)).await;
    assert_eq!(
        apply(s, &call, ended("finished", true)).await,
        Applied::Applied
    );
    let e = s.call_email(TENANT, id).await.unwrap().unwrap();
    assert_eq!(e.state, EmailState::Queued);
    assert_eq!(e.recipient, "ops1@example.com");
    assert_eq!(e.attempts, 0);
    assert_eq!(
        e.subject,
        format!("Call to +15551234567 (Zahnarzt Müller): finished [{id}]")
    );
    for want in [
        "Status:      ended-success",
        "AI: Hi, this is your reminder.",
        "Caller: Danke, tschüss.",
    ] {
        assert!(e.body.contains(want), "{want} in {}", e.body);
    }
    let t = s.transcript(TENANT, id).await.unwrap().unwrap();
    assert!(e.body.contains(&t.file), "names the transcript file");
    // The end applies once, so the email is queued once.
    assert!(matches!(
        apply(s, &call, ended("finished", true)).await,
        Applied::Skipped(_)
    ));
    assert_eq!(s.email_page(TENANT, None, 10, 0).await.unwrap().total, 1);
}

async fn only_the_final_attempt_and_cancellations_send_email(db: TestDb) {
    let s = &db.store;
    let call = in_flight(s, 2, 1).await;
    let id = call.call_id.as_str();
    apply(s, &call, ended("no-answer", false)).await;
    let rec = s.call(TENANT, &call.call_id).await.unwrap().unwrap();
    assert_eq!(rec.status, CallStatus::EndedFailedRetryPending);
    assert!(
        s.call_email(TENANT, id).await.unwrap().is_none(),
        "a retry is coming: no email yet"
    );
    let due = T0.plus_ms(60_000 + 5 * 60_000);
    let retry = s.claim_due_calls(due, 10).await.unwrap().pop().unwrap();
    s.dispatch_failed(&retry, "SIP 503 Service Unavailable", due)
        .await
        .unwrap();
    let e = s.call_email(TENANT, id).await.unwrap().unwrap();
    assert!(e.subject.contains(": failed ["), "{}", e.subject);
    assert!(
        e.body.contains("Error:       SIP 503 Service Unavailable"),
        "{}",
        e.body
    );
    assert!(e.body.contains("Attempt:     2"), "{}", e.body);
    assert!(e.body.contains("No transcript"), "{}", e.body);
    // A scheduled call cancelled before it was dialled reports that too.
    let c = new_call(3, 0);
    s.insert_call(&c).await.unwrap();
    let r = s.hangup_unplaced(TENANT, &c.call_id, T0).await.unwrap();
    assert!(
        matches!(r, crate::store::HangupResult::Cancelled { .. }),
        "{r:?}"
    );
    let e = s
        .call_email(TENANT, c.call_id.as_str())
        .await
        .unwrap()
        .unwrap();
    assert!(e.subject.contains(": cancelled ["), "{}", e.subject);
    // A hangup of another tenant's call neither cancels it nor emails.
    let other = new_call(4, 0);
    s.insert_call(&other).await.unwrap();
    let r = s
        .hangup_unplaced("other.example", &other.call_id, T0)
        .await
        .unwrap();
    assert!(matches!(r, crate::store::HangupResult::NotFound), "{r:?}");
    assert!(
        s.call_email(TENANT, other.call_id.as_str())
            .await
            .unwrap()
            .is_none()
    );
}

async fn a_rolled_back_end_queues_nothing(db: TestDb) {
    let s = &db.store;
    let call = in_flight(s, 5, 0).await;
    apply(s, &call, turn(Speaker::Ai, "Hello", 0)).await;
    // The transcript cannot be written: the end fails whole.
    std::fs::write(s.transcripts_dir(), b"in the way").unwrap();
    let ev = SwitchEvent {
        journal_id: "j1".into(),
        seq: 2,
        at: T0,
        call_id: call.call_id.to_string(),
        attempt: call.attempt,
        tenant: TENANT.into(),
        kind: ended("far-hangup", true),
    };
    assert!(s.apply_switch_event(NODE, &ev, T0).await.is_err());
    assert_eq!(s.email_page(TENANT, None, 10, 0).await.unwrap().total, 0);
    std::fs::remove_file(s.transcripts_dir()).unwrap();
    assert_eq!(
        s.apply_switch_event(NODE, &ev, T0).await.unwrap(),
        Applied::Applied
    );
    let e = s
        .call_email(TENANT, call.call_id.as_str())
        .await
        .unwrap()
        .unwrap();
    assert!(e.body.contains("AI: Hello"), "{}", e.body);
}

async fn claims_are_exclusive_and_results_need_the_lease(db: TestDb) {
    let a = db.store.clone();
    let b = Store::open(&db.url, db.dir.path()).await.unwrap();
    for n in 10..40u8 {
        let c = new_call(n, 0);
        a.insert_call(&c).await.unwrap();
        a.hangup_unplaced(TENANT, &c.call_id, T0).await.unwrap();
    }
    assert_eq!(a.email_backlog().await.unwrap(), 30);
    assert!(
        a.claim_emails(T0.plus_ms(-1), 60_000, 100)
            .await
            .unwrap()
            .is_empty(),
        "not due before they were queued"
    );
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = s.claim_emails(T0, 60_000, 3).await.unwrap();
                if batch.is_empty() {
                    break got;
                }
                got.extend(batch);
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let mut ids: Vec<&str> = all.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        (all.len(), ids.len()),
        (30, 30),
        "each claimed exactly once"
    );
    assert!(all.iter().all(|e| e.attempt == 1));
    // A retry: queued again, due later, attempts counted.
    let first = &all[0];
    let later = T0.plus_ms(30_000);
    assert!(
        a.record_email_attempt(first, &EmailStep::RetryAt(later), "451 busy", T0)
            .await
            .unwrap()
    );
    assert!(
        !a.record_email_attempt(first, &EmailStep::Sent, "", T0)
            .await
            .unwrap(),
        "its lease is spent"
    );
    assert!(
        a.claim_emails(later.plus_ms(-1), 60_000, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let again = a.claim_emails(later, 60_000, 100).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].id.as_str(), again[0].attempt),
        (first.id.as_str(), 2)
    );
    // An expired lease is taken over; the old holder cannot record.
    let second = &all[1];
    let after_lease = T0.plus_ms(60_000);
    let taken = b.claim_emails(after_lease, 60_000, 100).await.unwrap();
    assert!(taken.iter().any(|e| e.id == second.id));
    assert!(
        !a.record_email_attempt(second, &EmailStep::Failed, "x", after_lease)
            .await
            .unwrap()
    );
    let mine = taken.iter().find(|e| e.id == second.id).unwrap();
    assert!(
        b.record_email_attempt(mine, &EmailStep::Failed, "550 no such user", after_lease)
            .await
            .unwrap()
    );
    let rec = a.call_email(TENANT, &mine.call_id).await.unwrap().unwrap();
    assert_eq!(rec.state, EmailState::Failed);
    assert_eq!(rec.last_error, "550 no such user");
    assert_eq!(rec.finished_at, Some(after_lease));
    // Finished emails are purged after the retention; queued ones stay.
    assert_eq!(a.purge_emails(after_lease).await.unwrap(), 0);
    assert_eq!(a.purge_emails(after_lease.plus_ms(1)).await.unwrap(), 1);
    assert!(a.call_email(TENANT, &mine.call_id).await.unwrap().is_none());
    assert_eq!(a.email_backlog().await.unwrap(), 29);
    b.close().await;
}

/// A call recorded as lost (failed, for good) whose email has gone when
/// its node's own account says it really finished: a second email goes,
/// saying it corrects the first, which stays as sent.
async fn a_correction_after_the_email_went_sends_another(db: TestDb) {
    let s = &db.store;
    let call = in_flight(s, 50, 0).await;
    let id = call.call_id.as_str();
    s.fail_calls_on_node(
        NODE,
        crate::store::Lost::All,
        "switch node lost",
        T0.plus_ms(30_000),
    )
    .await
    .unwrap();
    let first = s.call_email(TENANT, id).await.unwrap().unwrap();
    assert!(first.subject.contains(": failed ["), "{}", first.subject);
    let claimed = s
        .claim_emails(T0.plus_ms(30_000), 60_000, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        s.record_email_attempt(&claimed[0], &EmailStep::Sent, "", T0.plus_ms(31_000))
            .await
            .unwrap()
    );
    assert_eq!(
        apply(s, &call, ended("finished", true)).await,
        Applied::Applied
    );
    let corrected = s.call_email(TENANT, id).await.unwrap().unwrap();
    assert_ne!(corrected.id, first.id);
    assert_eq!(corrected.state, EmailState::Queued);
    assert!(
        corrected.subject.starts_with("Corrected: Call to ")
            && corrected.subject.contains(": finished ["),
        "{}",
        corrected.subject
    );
    assert!(
        corrected
            .body
            .starts_with("This corrects the earlier email"),
        "{}",
        corrected.body
    );
    let all = s.email_page(TENANT, None, 10, 0).await.unwrap();
    assert_eq!(all.total, 2);
    let sent = s.email(TENANT, &first.id).await.unwrap().unwrap();
    assert_eq!(sent.state, EmailState::Sent, "the first stays as it went");
    assert_eq!(s.email_backlog().await.unwrap(), 1);
}

/// A call recorded as lost (failed, for good), its email in `state` when
/// its node's own account says it really finished: the email as the
/// correction leaves it, and the first one as it was.
async fn corrected_while(
    s: &Store,
    n: u8,
    state: &str,
) -> (super::EmailRecord, super::EmailRecord, super::ClaimedEmail) {
    let call = in_flight(s, n, 0).await;
    let id = call.call_id.as_str();
    let lost_at = T0.plus_ms(30_000);
    s.fail_calls_on_node(NODE, crate::store::Lost::All, "switch node lost", lost_at)
        .await
        .unwrap();
    let first = s.call_email(TENANT, id).await.unwrap().unwrap();
    // A lease that ran out before the correction came (a slow send).
    let lease = if state == "expired" { 1 } else { 600_000 };
    let claimed = s.claim_emails(lost_at, lease, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    match state {
        "leased" | "expired" => {}
        "failed" => assert!(
            s.record_email_attempt(&claimed[0], &EmailStep::Failed, "550 no such user", lost_at)
                .await
                .unwrap()
        ),
        _ => unreachable!(),
    }
    assert_eq!(
        apply(s, &call, ended("finished", true)).await,
        Applied::Applied
    );
    let now = s.call_email(TENANT, id).await.unwrap().unwrap();
    (first, now, claimed[0].clone())
}

/// The first email failed for good (it may still have arrived: a
/// connection lost after the message): the correction takes its place,
/// marked as one, under a Message-ID of its own, and is tried afresh.
async fn a_correction_of_a_failed_email_takes_its_place(db: TestDb) {
    let s = &db.store;
    let (first, now, _) = corrected_while(s, 51, "failed").await;
    assert_ne!(now.id, first.id, "a Message-ID of its own");
    assert_eq!((now.state, now.attempts), (EmailState::Queued, 0));
    assert!(now.last_error.is_empty() && now.finished_at.is_none());
    assert!(
        now.subject.starts_with("Corrected: Call to ") && now.subject.contains(": finished ["),
        "{}",
        now.subject
    );
    assert_eq!(s.email_page(TENANT, None, 10, 0).await.unwrap().total, 1);
    assert_eq!(s.email_backlog().await.unwrap(), 1);
}

/// The first email's send ran past its lease when the correction came:
/// it may yet arrive, and it must not be recorded as the correction's.
async fn a_correction_after_a_lease_ran_out_is_marked_too(db: TestDb) {
    let s = &db.store;
    let (first, now, claimed) = corrected_while(s, 53, "expired").await;
    assert_ne!(now.id, first.id);
    assert!(now.subject.starts_with("Corrected: "), "{}", now.subject);
    assert!(
        !s.record_email_attempt(&claimed, &EmailStep::Sent, "", T0.plus_ms(61_000))
            .await
            .unwrap(),
        "the late send is not recorded as the correction's"
    );
    assert_eq!(
        s.call_email(TENANT, &claimed.call_id)
            .await
            .unwrap()
            .unwrap()
            .state,
        EmailState::Queued
    );
}

/// The first email is being sent when the correction comes: it may
/// arrive, so the correction says it corrects it, under a Message-ID of
/// its own; the send under way is not recorded as the correction's.
async fn a_correction_during_the_send_is_marked_and_goes_after_it(db: TestDb) {
    let s = &db.store;
    let (first, now, claimed) = corrected_while(s, 52, "leased").await;
    assert_ne!(now.id, first.id, "a Message-ID of its own");
    assert_eq!(now.state, EmailState::Queued);
    assert!(now.subject.starts_with("Corrected: "), "{}", now.subject);
    assert!(now.body.starts_with("This corrects the earlier email"));
    assert!(
        !s.record_email_attempt(&claimed, &EmailStep::Sent, "", T0.plus_ms(31_000))
            .await
            .unwrap(),
        "the send under way lost its lease"
    );
    // Due from the correction (applied at T0 + 60 s), tried afresh.
    let again = s
        .claim_emails(T0.plus_ms(60_000), 60_000, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].id.as_str(), again[0].attempt),
        (now.id.as_str(), 1)
    );
}

/// The loss's email went, and was purged from the outbox (the retention
/// ran out) before its node came back with the real end: the correction
/// still says it corrects an earlier email.
async fn a_correction_after_the_sent_email_was_purged_is_marked(db: TestDb) {
    let s = &db.store;
    let call = in_flight(s, 54, 0).await;
    let id = call.call_id.as_str();
    let lost_at = T0.plus_ms(30_000);
    s.fail_calls_on_node(NODE, crate::store::Lost::All, "switch node lost", lost_at)
        .await
        .unwrap();
    let claimed = s.claim_emails(lost_at, 60_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        s.record_email_attempt(&claimed[0], &EmailStep::Sent, "", lost_at)
            .await
            .unwrap()
    );
    assert_eq!(s.purge_emails(lost_at.plus_ms(1)).await.unwrap(), 1);
    assert!(s.call_email(TENANT, id).await.unwrap().is_none());
    assert_eq!(
        apply(s, &call, ended("finished", true)).await,
        Applied::Applied
    );
    let now = s.call_email(TENANT, id).await.unwrap().unwrap();
    assert!(
        now.subject.starts_with("Corrected: Call to ") && now.subject.contains(": finished ["),
        "{}",
        now.subject
    );
    assert!(now.body.starts_with("This corrects the earlier email"));
}

/// A loss that left a retry pending sent no email: the real end, when it
/// comes, sends the call's first email, not marked as a correction.
async fn a_correction_of_a_retry_pending_loss_sends_the_first_email(db: TestDb) {
    let s = &db.store;
    let call = in_flight(s, 55, 1).await;
    let id = call.call_id.as_str();
    s.fail_calls_on_node(
        NODE,
        crate::store::Lost::All,
        "switch node lost",
        T0.plus_ms(30_000),
    )
    .await
    .unwrap();
    assert!(
        s.call_email(TENANT, id).await.unwrap().is_none(),
        "a retry is pending: no email yet"
    );
    assert_eq!(
        apply(s, &call, ended("finished", true)).await,
        Applied::Applied
    );
    let first = s.call_email(TENANT, id).await.unwrap().unwrap();
    assert!(
        first.subject.starts_with("Call to ") && first.subject.contains(": finished ["),
        "{}",
        first.subject
    );
    assert!(!first.body.starts_with("This corrects"));
}

use crate::store::testing::both_backends as both;

both!(
    a_correction_after_the_email_went_sends_another,
    a_correction_after_the_sent_email_was_purged_is_marked,
    a_correction_of_a_retry_pending_loss_sends_the_first_email,
    a_correction_of_a_failed_email_takes_its_place,
    a_correction_after_a_lease_ran_out_is_marked_too,
    a_correction_during_the_send_is_marked_and_goes_after_it,
    an_ended_call_queues_one_email_with_its_transcript,
    only_the_final_attempt_and_cancellations_send_email,
    a_rolled_back_end_queues_nothing,
    claims_are_exclusive_and_results_need_the_lease,
);
