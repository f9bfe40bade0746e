//! Store-level tests of dispatch and event application, each run on SQLite
//! and on PostgreSQL. Time is passed in; nothing sleeps.

use codeb_types::{CallId, CallStatus, UtcMillis};

use crate::store::testing::{self, NODE, T0, TENANT, TestDb, ended, event_data, events};
use crate::store::{
    Applied, AttemptEnd, DISPATCH_LEASE_MS, DispatchCall, EventKind, NewCall, Speaker, Store,
    SwitchEvent,
};

fn new_call(n: u8, at: UtcMillis, retries: i64) -> NewCall {
    NewCall {
        next_attempt_at: at,
        ..testing::new_call(n, retries)
    }
}

async fn status(s: &Store, id: &CallId) -> CallStatus {
    s.call(TENANT, id).await.unwrap().unwrap().status
}

/// Inserts, claims, hands to NODE and marks placed.
async fn in_flight(s: &Store, n: u8, retries: i64) -> DispatchCall {
    in_flight_call(s, new_call(n, T0, retries)).await
}

/// [`in_flight`] for the call `c`.
async fn in_flight_call(s: &Store, c: NewCall) -> DispatchCall {
    s.insert_call(&c).await.unwrap();
    let claimed = s.claim_call(&c.call_id, T0).await.unwrap().unwrap();
    assert!(s.set_dispatch_node(&claimed, NODE, None, T0).await.unwrap());
    assert!(
        s.mark_placed(&claimed, "tr_0123456789abcdef", "", T0)
            .await
            .unwrap()
    );
    s.reset_switch_cursor(NODE, "j1", T0).await.unwrap();
    claimed
}

fn ev(seq: i64, call: &DispatchCall, kind: EventKind) -> SwitchEvent {
    SwitchEvent {
        journal_id: "j1".into(),
        seq,
        at: T0.plus_ms(seq * 1000),
        call_id: call.call_id.to_string(),
        attempt: call.attempt,
        tenant: TENANT.into(),
        kind,
    }
}

async fn claims_are_exclusive(db: TestDb) {
    // Two stores on one database: two control planes.
    let a = db.store.clone();
    let b = Store::open(&db.url, db.dir.path()).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..40u8 {
        let c = new_call(n, T0, 0);
        ids.push(c.call_id.clone());
        a.insert_call(&c).await.unwrap();
    }
    // Not due yet: nothing is claimed.
    assert!(
        a.claim_due_calls(T0.plus_ms(-1), 100)
            .await
            .unwrap()
            .is_empty()
    );
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = s.claim_due_calls(T0, 3).await.unwrap();
                if batch.is_empty() {
                    break got;
                }
                got.extend(batch.into_iter().map(|c| c.call_id.to_string()));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let mut unique = all.clone();
    unique.dedup();
    assert_eq!(all.len(), 40, "every call claimed once");
    assert_eq!(unique.len(), 40, "no call claimed twice");
    for id in &ids {
        let c = a.call(TENANT, id).await.unwrap().unwrap();
        assert_eq!(c.status, CallStatus::Dispatching);
        assert_eq!(c.attempt, 1);
        assert_eq!(c.dispatched_at, Some(T0));
    }
    // Held under a lease: nobody takes them again until it runs out ...
    assert!(
        a.claim_due_calls(T0.plus_ms(1000), 100)
            .await
            .unwrap()
            .is_empty()
    );
    // ... then an interrupted dispatch is taken over with the same attempt
    // and the node it was handed to.
    let first = a.claim_call(&ids[0], T0).await.unwrap();
    assert!(first.is_none(), "claim_call only takes scheduled calls");
    let later = T0.plus_ms(DISPATCH_LEASE_MS);
    let again = b.claim_due_calls(later, 100).await.unwrap();
    assert_eq!(again.len(), 40);
    assert!(again.iter().all(|c| c.attempt == 1));
    b.close().await;
}

async fn stuck_dispatch_returns_to_its_node(db: TestDb) {
    let s = &db.store;
    let c = new_call(1, T0, 0);
    s.insert_call(&c).await.unwrap();
    let first = s.claim_call(&c.call_id, T0).await.unwrap().unwrap();
    assert!(s.set_dispatch_node(&first, NODE, None, T0).await.unwrap());
    // The dispatcher died here. After the lease, the call is claimed again
    // with the node recorded, and the old claim is worthless.
    let later = T0.plus_ms(DISPATCH_LEASE_MS);
    let again = s.claim_due_calls(later, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].node_url.as_deref(), Some(NODE));
    assert_eq!(again[0].attempt, 1);
    assert_ne!(again[0].lease_token, first.lease_token);
    assert!(!s.mark_placed(&first, "", "", later).await.unwrap());
    assert!(
        s.dispatch_failed(&first, "x", later)
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.mark_placed(&again[0], "", "", later).await.unwrap());
    assert_eq!(status(s, &c.call_id).await, CallStatus::InFlight);
}

async fn failed_dispatch_retries_on_time(db: TestDb) {
    let s = &db.store;
    let c = new_call(2, T0, 1);
    s.insert_call(&c).await.unwrap();
    let claimed = s.claim_call(&c.call_id, T0).await.unwrap().unwrap();
    let st = s
        .dispatch_failed(&claimed, "RESOURCE_EXHAUSTED: node full", T0)
        .await
        .unwrap();
    assert_eq!(st, Some(CallStatus::EndedFailedRetryPending));
    let rec = s.call(TENANT, &c.call_id).await.unwrap().unwrap();
    assert_eq!(rec.retries_left, 0);
    assert_eq!(rec.error_detail, "RESOURCE_EXHAUSTED: node full");
    assert_eq!(rec.ended_reason, "failed");
    // Due retryDelayMinutes later, not a millisecond before, and the
    // record says when.
    let due = T0.plus_ms(5 * 60_000);
    assert_eq!(rec.scheduled_for, Some(due));
    assert!(
        s.claim_due_calls(due.plus_ms(-1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let retry = s.claim_due_calls(due, 10).await.unwrap();
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].attempt, 2);
    assert_eq!(retry[0].node_url, None, "a new attempt may go to any node");
    // The last attempt's end shows until the next is placed (one that
    // cannot be placed yet goes back to waiting with it).
    let rec = s.call(TENANT, &c.call_id).await.unwrap().unwrap();
    assert_eq!(
        (rec.ended_reason.as_str(), rec.error_detail.as_str()),
        ("failed", "RESOURCE_EXHAUSTED: node full")
    );
    assert!(rec.ended_at.is_some());
    // No retries left: final.
    let st = s
        .dispatch_failed(&retry[0], "no switch node", due)
        .await
        .unwrap();
    assert_eq!(st, Some(CallStatus::EndedFailedFinal));
    assert!(
        s.claim_due_calls(due.plus_ms(3_600_000), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let finished = event_data(s, TENANT, "outbound-ai.finished").await;
    assert_eq!(finished.len(), 2, "each attempt reports its end");
    assert_eq!(finished[1]["errorDetail"], "no switch node");
    assert_eq!(finished[1]["answered"], false);
}

async fn a_deferred_dispatch_waits_as_before_its_claim(db: TestDb) {
    let s = &db.store;
    let c = new_call(3, T0, 1);
    s.insert_call(&c).await.unwrap();
    let first = s.claim_call(&c.call_id, T0).await.unwrap().unwrap();
    assert_eq!(first.attempt, 1);
    let later = T0.plus_ms(5_000);
    assert_eq!(
        s.defer_dispatch(&first, later, "not placed yet: trunk full", T0)
            .await
            .unwrap(),
        crate::store::Deferral::Deferred
    );
    let rec = s.call(TENANT, &c.call_id).await.unwrap().unwrap();
    assert_eq!(
        (rec.status, rec.attempt, rec.retries_left),
        (CallStatus::Scheduled, 0, 1)
    );
    assert_eq!(rec.error_detail, "not placed yet: trunk full");
    assert_eq!(rec.scheduled_for, Some(later), "when it is tried again");
    assert!(
        s.claim_due_calls(later.plus_ms(-1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Claimed again at its time: still attempt 1, which then fails.
    let again = s.claim_due_calls(later, 10).await.unwrap();
    assert_eq!(again[0].attempt, 1);
    // A stale claim (the lease token of the first) defers nothing.
    assert_eq!(
        s.defer_dispatch(&first, later, "x", later).await.unwrap(),
        crate::store::Deferral::Lost
    );
    s.dispatch_failed(&again[0], "busy here", later)
        .await
        .unwrap();
    // The retry, deferred, waits as a retry: its attempt and the retry
    // it is spending are not lost.
    let due = later.plus_ms(5 * 60_000);
    let retry = s.claim_due_calls(due, 10).await.unwrap();
    assert_eq!(retry[0].attempt, 2);
    assert_eq!(
        s.defer_dispatch(&retry[0], due.plus_ms(5_000), "not placed yet", due)
            .await
            .unwrap(),
        crate::store::Deferral::Deferred
    );
    let rec = s.call(TENANT, &c.call_id).await.unwrap().unwrap();
    assert_eq!(
        (rec.status, rec.attempt, rec.retries_left),
        (CallStatus::EndedFailedRetryPending, 1, 0)
    );
    // Attempt 1's end still shows: the call says how it last ended, and
    // why the next has not gone yet.
    assert_eq!(
        (
            rec.ended_reason.as_str(),
            rec.ended_at,
            rec.error_detail.as_str()
        ),
        ("failed", Some(later), "not placed yet")
    );
    let retry = s.claim_due_calls(due.plus_ms(5_000), 10).await.unwrap();
    assert_eq!(retry[0].attempt, 2);
    // One outbound-ai.finished: the attempt that really ended.
    assert_eq!(event_data(s, TENANT, "outbound-ai.finished").await.len(), 1);
    // Cancelled while it waits: the earlier attempt's detail is not the
    // cancelled call's.
    s.defer_dispatch(&retry[0], due.plus_ms(10_000), "not placed yet", due)
        .await
        .unwrap();
    let r = s.hangup_unplaced(TENANT, &c.call_id, due).await.unwrap();
    assert!(
        matches!(r, crate::store::HangupResult::Cancelled { .. }),
        "{r:?}"
    );
    let rec = s.call(TENANT, &c.call_id).await.unwrap().unwrap();
    assert_eq!(
        (rec.status, rec.error_detail.as_str()),
        (CallStatus::Cancelled, "")
    );
}

/// A new attempt's record starts clean once it is placed: the last
/// attempt's end (outcome, detail, times, turns) is cleared then.
async fn a_placed_retry_starts_clean(db: TestDb) {
    let s = &db.store;
    let c = new_call(6, T0, 1);
    s.insert_call(&c).await.unwrap();
    let first = s.claim_call(&c.call_id, T0).await.unwrap().unwrap();
    s.dispatch_failed(&first, "no switch node", T0)
        .await
        .unwrap();
    let due = T0.plus_ms(5 * 60_000);
    let retry = s.claim_due_calls(due, 10).await.unwrap();
    assert_eq!(retry[0].attempt, 2);
    assert!(
        s.set_dispatch_node(&retry[0], NODE, None, due)
            .await
            .unwrap()
    );
    assert!(s.mark_placed(&retry[0], "", "i1", due).await.unwrap());
    let rec = s.call(TENANT, &c.call_id).await.unwrap().unwrap();
    assert_eq!(rec.status, CallStatus::InFlight);
    assert_eq!(
        (
            rec.ended_reason.as_str(),
            rec.ended_at,
            rec.error_detail.as_str()
        ),
        ("", None, "")
    );
}

/// Two control planes share the database and both meet a node's journal
/// for the first time: the second one's reset, from its stale view of the
/// cursor, does not send the cursor back to the start, so the events the
/// first applied are not applied again. A new journal still starts over.
async fn a_second_control_planes_first_contact_applies_nothing_again(db: TestDb) {
    let a = db.store.clone();
    let b = Store::open(&db.url, db.dir.path()).await.unwrap();
    let call = in_flight(&a, 4, 0).await;
    let answered = EventKind::Answered {
        trunk_id: String::new(),
        answer_ms: 1,
    };
    let first = ev(1, &call, answered.clone());
    assert_eq!(
        a.apply_switch_event(NODE, &first, T0).await.unwrap(),
        Applied::Applied
    );
    b.reset_switch_cursor(NODE, "j1", T0).await.unwrap();
    let cursor = b.switch_cursor(NODE).await.unwrap().unwrap();
    assert_eq!((cursor.journal_id.as_str(), cursor.last_seq), ("j1", 1));
    assert_eq!(
        b.apply_switch_event(NODE, &first, T0).await.unwrap(),
        Applied::Duplicate
    );
    assert_eq!(event_data(&a, TENANT, "call.answered").await.len(), 1);
    b.reset_switch_cursor(NODE, "j2", T0).await.unwrap();
    let cursor = a.switch_cursor(NODE).await.unwrap().unwrap();
    assert_eq!((cursor.journal_id.as_str(), cursor.last_seq), ("j2", 0));
}

async fn events_apply_once(db: TestDb) {
    let s = &db.store;
    let call = in_flight(s, 3, 0).await;
    let answered = ev(
        1,
        &call,
        EventKind::Answered {
            trunk_id: "tr_0123456789abcdef".into(),
            answer_ms: 2755,
        },
    );
    let now = T0.plus_ms(10_000);
    assert_eq!(
        s.apply_switch_event(NODE, &answered, now).await.unwrap(),
        Applied::Applied
    );
    assert_eq!(
        s.apply_switch_event(NODE, &answered, now).await.unwrap(),
        Applied::Duplicate,
        "the same seq again changes nothing"
    );
    let a = event_data(s, TENANT, "call.answered").await;
    assert_eq!(a.len(), 1);
    assert_eq!(
        a[0],
        serde_json::json!({"callId": call.call_id.as_str(), "phone": "+15551234567",
            "displayName": "Reminder", "trunkId": "tr_0123456789abcdef",
            "direction": "outbound", "source": "outbound-ai", "answerMs": 2755})
    );
    let turns = [
        (Speaker::Ai, "Hi, this is a reminder.", 500),
        (Speaker::Caller, "Thanks, bye.", 4000),
    ];
    let mut seq = 2;
    for (speaker, text, at_ms) in turns {
        let e = ev(
            seq,
            &call,
            EventKind::Turn {
                speaker,
                text: text.into(),
                at_ms,
            },
        );
        assert_eq!(
            s.apply_switch_event(NODE, &e, now).await.unwrap(),
            Applied::Applied
        );
        seq += 1;
    }
    let usage = ev(
        seq,
        &call,
        EventKind::Usage {
            input: 100,
            output: 50,
        },
    );
    s.apply_switch_event(NODE, &usage, now).await.unwrap();
    assert_eq!(
        s.apply_switch_event(NODE, &usage, now).await.unwrap(),
        Applied::Duplicate
    );
    seq += 1;
    // The switch's INVITE went out 5 s after the dispatch (a burst): its
    // duration counts from there.
    let kind = match ended("finished", true) {
        EventKind::Ended(e) => EventKind::Ended(AttemptEnd {
            duration_seconds: 59,
            ..e
        }),
        other => other,
    };
    let end = ev(seq, &call, kind);
    assert_eq!(
        s.apply_switch_event(NODE, &end, now).await.unwrap(),
        Applied::Applied
    );
    assert_eq!(
        s.apply_switch_event(NODE, &end, now).await.unwrap(),
        Applied::Duplicate
    );
    let rec = s.call(TENANT, &call.call_id).await.unwrap().unwrap();
    assert_eq!(rec.status, CallStatus::EndedSuccess);
    assert_eq!(rec.ended_reason, "finished");
    assert_eq!(rec.duration_sec, 58);
    assert_eq!(
        rec.answered_at,
        Some(T0.plus_ms(1000)),
        "from the Answered event"
    );
    assert!(
        rec.transcript_path.starts_with("outbound-ai-"),
        "{}",
        rec.transcript_path
    );
    // Terminal event, then transcript.saved, each once.
    let names: Vec<String> = events(s, TENANT).await.into_iter().map(|e| e.0).collect();
    assert_eq!(
        names,
        ["call.answered", "outbound-ai.finished", "transcript.saved"]
    );
    let fin = &event_data(s, TENANT, "outbound-ai.finished").await[0];
    assert_eq!(fin["outcome"], "finished");
    assert_eq!(fin["talkSec"], 58);
    assert_eq!(fin["trunk"], "tr_0123456789abcdef");
    let t = s
        .transcript(TENANT, call.call_id.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.turns.len(), 2);
    assert_eq!(t.turns[0].speaker, "AI");
    assert_eq!(t.turns[1].ts, T0.plus_ms(1000 + 4000));
    assert_eq!(t.tokens_total, 150);
    assert!(s.transcripts_dir().join(&t.file).exists());
    // Its start, end and duration agree, as the spec's example does.
    assert_eq!(
        (t.started_at, t.ended_at, t.duration_sec),
        (T0.plus_ms(1_000), Some(T0.plus_ms(60_000)), 59)
    );
    // An event for a call that already ended is skipped, but moves the
    // cursor (it will not come back).
    let late = ev(seq + 1, &call, EventKind::Started);
    assert!(matches!(
        s.apply_switch_event(NODE, &late, now).await.unwrap(),
        Applied::Skipped(_)
    ));
    assert_eq!(
        s.switch_cursor(NODE).await.unwrap().unwrap().last_seq,
        seq + 1
    );
    // Another journal's events are not applied against this cursor.
    let mut other = ev(seq + 2, &call, EventKind::Started);
    other.journal_id = "j2".into();
    assert_eq!(
        s.apply_switch_event(NODE, &other, now).await.unwrap(),
        Applied::WrongJournal
    );
}

async fn a_failed_application_leaves_no_trace(db: TestDb) {
    let s = &db.store;
    let call = in_flight(s, 4, 0).await;
    let turn = ev(
        1,
        &call,
        EventKind::Turn {
            speaker: Speaker::Ai,
            text: "Hello".into(),
            at_ms: 0,
        },
    );
    s.apply_switch_event(NODE, &turn, T0).await.unwrap();
    // The transcript cannot be written (a file where its directory goes):
    // the Ended event fails as a whole.
    std::fs::write(s.transcripts_dir(), b"in the way").unwrap();
    let end = ev(2, &call, ended("far-hangup", true));
    assert!(s.apply_switch_event(NODE, &end, T0).await.is_err());
    assert_eq!(status(s, &call.call_id).await, CallStatus::InFlight);
    assert_eq!(s.switch_cursor(NODE).await.unwrap().unwrap().last_seq, 1);
    assert!(
        event_data(s, TENANT, "outbound-ai.finished")
            .await
            .is_empty()
    );
    // Resent after the problem is fixed, it applies once.
    std::fs::remove_file(s.transcripts_dir()).unwrap();
    assert_eq!(
        s.apply_switch_event(NODE, &end, T0).await.unwrap(),
        Applied::Applied
    );
    assert_eq!(status(s, &call.call_id).await, CallStatus::EndedSuccess);
    assert_eq!(event_data(s, TENANT, "outbound-ai.finished").await.len(), 1);
    assert_eq!(event_data(s, TENANT, "transcript.saved").await.len(), 1);
}

async fn no_answer_is_retried_then_final(db: TestDb) {
    let s = &db.store;
    let call = in_flight(s, 5, 1).await;
    let now = T0.plus_ms(70_000);
    s.apply_switch_event(NODE, &ev(1, &call, ended("no-answer", false)), now)
        .await
        .unwrap();
    let rec = s.call(TENANT, &call.call_id).await.unwrap().unwrap();
    assert_eq!(rec.status, CallStatus::EndedFailedRetryPending);
    assert_eq!(rec.retries_left, 0);
    // Re-queued retryDelayMinutes after the attempt ended here.
    let due = now.plus_ms(5 * 60_000);
    assert_eq!(rec.scheduled_for, Some(due), "the record says when");
    assert!(
        s.claim_due_calls(due.plus_ms(-1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let retry = s.claim_due_calls(due, 10).await.unwrap().pop().unwrap();
    assert_eq!(retry.attempt, 2);
    assert!(s.set_dispatch_node(&retry, NODE, None, due).await.unwrap());
    assert!(s.mark_placed(&retry, "", "", due).await.unwrap());
    // A late event of the first attempt (a node replaying it, say) does
    // not touch the retry.
    let late = s
        .apply_switch_event(NODE, &ev(2, &call, ended("finished", true)), due)
        .await
        .unwrap();
    assert!(matches!(late, Applied::Skipped(_)), "{late:?}");
    assert_eq!(status(s, &call.call_id).await, CallStatus::InFlight);
    s.apply_switch_event(NODE, &ev(3, &retry, ended("no-answer", false)), due)
        .await
        .unwrap();
    let rec = s.call(TENANT, &call.call_id).await.unwrap().unwrap();
    assert_eq!(rec.status, CallStatus::EndedFailedFinal);
    assert_eq!(rec.attempt, 2);
    // not-now and voicemail are never retried; a cancelled call is
    // cancelled.
    for (n, outcome, answered, want) in [
        (6, "not-now", true, CallStatus::EndedSuccess),
        (7, "voicemail", true, CallStatus::EndedFailedFinal),
        (8, "cancelled", false, CallStatus::Cancelled),
        (9, "busy", false, CallStatus::EndedFailedRetryPending),
    ] {
        let c = in_flight(s, n, 3).await;
        let cursor = s.switch_cursor(NODE).await.unwrap().unwrap().last_seq;
        let counted = s.call_ends().attempts(want, outcome);
        s.apply_switch_event(NODE, &ev(cursor + 1, &c, ended(outcome, answered)), now)
            .await
            .unwrap();
        assert_eq!(status(s, &c.call_id).await, want, "{outcome}");
        // Counted for the metrics, by status and outcome.
        assert_eq!(s.call_ends().attempts(want, outcome), counted + 1);
    }
}

async fn a_restarted_node_ends_only_what_its_earlier_processes_carried(db: TestDb) {
    let s = &db.store;
    let placed = |n: u8, instance: &'static str| async move {
        let c = new_call(n, T0, 1);
        s.insert_call(&c).await.unwrap();
        let claimed = s.claim_call(&c.call_id, T0).await.unwrap().unwrap();
        assert!(s.set_dispatch_node(&claimed, NODE, None, T0).await.unwrap());
        assert!(s.mark_placed(&claimed, "", instance, T0).await.unwrap());
        claimed
    };
    let old = placed(20, "i1").await;
    let now = placed(21, "i2").await;
    let unknown = placed(22, "").await;
    // Events moved this one on before PlaceCall's answer was recorded.
    let c = new_call(23, T0, 1);
    s.insert_call(&c).await.unwrap();
    let raced = s.claim_call(&c.call_id, T0).await.unwrap().unwrap();
    assert!(s.set_dispatch_node(&raced, NODE, None, T0).await.unwrap());
    // Still dispatching (another dispatcher's, its lease run out): not
    // this one's to record.
    s.record_node_instance(&raced, NODE, "i1").await.unwrap();
    s.reset_switch_cursor(NODE, "j1", T0).await.unwrap();
    let answered = EventKind::Answered {
        trunk_id: String::new(),
        answer_ms: 1,
    };
    s.apply_switch_event(NODE, &ev(1, &raced, answered), T0)
        .await
        .unwrap();
    assert_eq!(status(s, &raced.call_id).await, CallStatus::InFlight);
    s.record_node_instance(&raced, NODE, "i1").await.unwrap();
    s.record_node_instance(&raced, NODE, "i2").await.unwrap();
    let detail = "restarted";
    let lost = crate::store::Lost::CarriedBefore("i2");
    assert_eq!(
        s.fail_calls_on_node(NODE, lost, detail, T0).await.unwrap(),
        2
    );
    for (c, want) in [
        (&old, CallStatus::EndedFailedRetryPending),
        // Answered: not rung again.
        (&raced, CallStatus::EndedFailedFinal),
        (&now, CallStatus::InFlight),
        (&unknown, CallStatus::InFlight),
    ] {
        assert_eq!(status(s, &c.call_id).await, want, "{}", c.call_id);
    }
    assert_eq!(
        s.fail_calls_on_node(NODE, lost, detail, T0).await.unwrap(),
        0
    );
}

async fn lost_node_ends_its_calls(db: TestDb) {
    let s = &db.store;
    let a = in_flight(s, 10, 1).await;
    let b = in_flight(s, 11, 0).await;
    s.apply_switch_event(
        NODE,
        &ev(
            1,
            &b,
            EventKind::Answered {
                trunk_id: String::new(),
                answer_ms: 1,
            },
        ),
        T0,
    )
    .await
    .unwrap();
    // Its conversation so far arrived before the node went silent.
    for (seq, speaker, text) in [
        (2, Speaker::Ai, "Hello, this is the clinic."),
        (3, Speaker::Caller, "Hi."),
        (4, Speaker::Ai, "Your appointment is tomorrow."),
    ] {
        let turn = EventKind::Turn {
            speaker,
            text: text.into(),
            at_ms: seq * 1000,
        };
        s.apply_switch_event(NODE, &ev(seq, &b, turn), T0)
            .await
            .unwrap();
    }
    let now = T0.plus_ms(30_000);
    let detail = format!("switch node {NODE} lost");
    assert_eq!(
        s.fail_calls_on_node(NODE, crate::store::Lost::All, &detail, now)
            .await
            .unwrap(),
        2
    );
    // The end the control plane made counts the turns that were saved
    // (it said 0 and 0 beside a transcript of three).
    let finished = event_data(s, TENANT, "outbound-ai.finished").await;
    let fb = finished
        .iter()
        .find(|f| f["callId"] == b.call_id.as_str())
        .unwrap();
    assert_eq!(
        (&fb["inputTurns"], &fb["outputTurns"]),
        (&1.into(), &2.into())
    );
    let ra = s.call(TENANT, &a.call_id).await.unwrap().unwrap();
    assert_eq!(ra.status, CallStatus::EndedFailedRetryPending);
    assert_eq!(ra.error_detail, detail);
    let rb = s.call(TENANT, &b.call_id).await.unwrap().unwrap();
    assert_eq!(
        rb.status,
        CallStatus::EndedFailedFinal,
        "answered: not retried"
    );
    assert_eq!(rb.duration_sec, 29);
    assert_eq!(
        s.fail_calls_on_node(NODE, crate::store::Lost::All, &detail, now)
            .await
            .unwrap(),
        0
    );
    // Once its retry is placed, the node's late report of the lost
    // attempt is skipped: the call has moved on.
    let retry = s.claim_due_calls(now.plus_ms(3_600_000), 10).await.unwrap();
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].attempt, 2);
    let late = ev(5, &a, ended("finished", true));
    assert!(matches!(
        s.apply_switch_event(NODE, &late, now).await.unwrap(),
        Applied::Skipped(_)
    ));
    assert_eq!(status(s, &a.call_id).await, CallStatus::Dispatching);
    // Before that, it corrects the record (the whole story is in
    // switch_link's tests): b talked on and finished.
    let late = ev(6, &b, ended("finished", true));
    assert!(matches!(
        s.apply_switch_event(NODE, &late, now).await.unwrap(),
        Applied::Applied
    ));
    let rb = s.call(TENANT, &b.call_id).await.unwrap().unwrap();
    assert_eq!(
        (rb.status, rb.ended_reason.as_str(), rb.duration_sec),
        (CallStatus::EndedSuccess, "finished", 58)
    );
    // Its transcript replaces the loss's: one file, the row's.
    let files: Vec<String> = std::fs::read_dir(s.transcripts_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(files, vec![rb.transcript_path.clone()]);
    // Once: a second end of that attempt is skipped.
    let again = ev(7, &b, ended("failed", true));
    assert!(matches!(
        s.apply_switch_event(NODE, &again, now).await.unwrap(),
        Applied::Skipped(_)
    ));
}

async fn hangup_of_an_unplaced_dispatch_cancels_it(db: TestDb) {
    let s = &db.store;
    let c = new_call(12, T0, 0);
    s.insert_call(&c).await.unwrap();
    let claimed = s.claim_call(&c.call_id, T0).await.unwrap().unwrap();
    let r = s.hangup_unplaced(TENANT, &c.call_id, T0).await.unwrap();
    assert!(
        matches!(r, crate::store::HangupResult::Cancelled { .. }),
        "{r:?}"
    );
    assert!(!s.set_dispatch_node(&claimed, NODE, None, T0).await.unwrap());
    // Subscribers hear of it: outbound-ai.finished, outcome cancelled.
    let finished = event_data(s, TENANT, "outbound-ai.finished").await;
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["callId"], c.call_id.as_str());
    assert_eq!(finished[0]["outcome"], "cancelled");
    assert_eq!(finished[0]["answered"], false);
    // It rang nowhere: no attempt was made, none was dialled.
    let rec = s.call(TENANT, &c.call_id).await.unwrap().unwrap();
    assert_eq!((rec.attempt, rec.dispatched_at), (0, None));
    let placed = in_flight(s, 13, 0).await;
    let r = s
        .hangup_unplaced(TENANT, &placed.call_id, T0)
        .await
        .unwrap();
    assert!(
        matches!(&r, crate::store::HangupResult::OnSwitch(CallStatus::InFlight, n, 1) if n == NODE),
        "{r:?}"
    );
}

/// A dispatching call is cancelled for a node that said it has not placed
/// it only if the call is still that node's and that attempt's (it may have
/// moved on meanwhile: then the hangup must go where it is now).
async fn a_call_unknown_to_its_node_is_cancelled_only_there(db: TestDb) {
    let s = &db.store;
    let c = new_call(14, T0, 0);
    s.insert_call(&c).await.unwrap();
    let claimed = s.claim_call(&c.call_id, T0).await.unwrap().unwrap();
    assert!(s.set_dispatch_node(&claimed, NODE, None, T0).await.unwrap());
    for (node, attempt) in [("http://other:1", 1), (NODE, 2)] {
        let r = s
            .hangup_unknown_to_node(TENANT, &c.call_id, node, attempt, T0)
            .await
            .unwrap();
        assert!(
            matches!(&r, crate::store::HangupResult::OnSwitch(CallStatus::Dispatching, n, 1) if n == NODE),
            "{r:?}"
        );
    }
    let r = s
        .hangup_unknown_to_node(TENANT, &c.call_id, NODE, 1, T0)
        .await
        .unwrap();
    assert!(
        matches!(r, crate::store::HangupResult::Cancelled { .. }),
        "{r:?}"
    );
    assert_eq!(status(s, &c.call_id).await, CallStatus::Cancelled);
}

async fn the_retry_delay_unit_scales_retry_delay_minutes(db: TestDb) {
    // CODEB_CALL_RETRY_DELAY_UNIT=1s: retryDelayMinutes 5 waits 5 s.
    let s = &db
        .store
        .clone()
        .with_retry_delay_unit(std::time::Duration::from_secs(1));
    let call = in_flight(s, 9, 1).await;
    let now = T0.plus_ms(70_000);
    s.apply_switch_event(NODE, &ev(1, &call, ended("no-answer", false)), now)
        .await
        .unwrap();
    assert_eq!(
        status(s, &call.call_id).await,
        CallStatus::EndedFailedRetryPending
    );
    let due = now.plus_ms(5_000);
    assert!(
        s.claim_due_calls(due.plus_ms(-1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let retry = s.claim_due_calls(due, 10).await.unwrap();
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].attempt, 2);
}

/// A node whose clock runs behind the control plane's stamps the answer
/// and the end before the dispatch: the record still reads dispatched ≤
/// answered ≤ ended, whether the answer came as its own event or only with
/// the end.
async fn a_node_clock_behind_keeps_the_record_in_order(db: TestDb) {
    let s = &db.store;
    // One journal: the second call's events carry on its numbering.
    let mut seq = 1;
    for (n, with_answered_event) in [(5, true), (6, false)] {
        let call = in_flight(s, n, 0).await;
        let behind = |ms: i64| T0.plus_ms(-ms);
        if with_answered_event {
            let mut answered = ev(
                seq,
                &call,
                EventKind::Answered {
                    trunk_id: String::new(),
                    answer_ms: 10,
                },
            );
            answered.at = behind(3);
            s.apply_switch_event(NODE, &answered, T0).await.unwrap();
            seq += 1;
            let rec = s.call(TENANT, &call.call_id).await.unwrap().unwrap();
            assert_eq!(rec.answered_at, Some(T0), "the answer as it is applied");
        }
        let kind = match ended("finished", true) {
            EventKind::Ended(e) => EventKind::Ended(AttemptEnd {
                answered_at: Some(behind(3)),
                ended_at: behind(1),
                talk_seconds: 0,
                duration_seconds: 0,
                ..e
            }),
            other => other,
        };
        s.apply_switch_event(NODE, &ev(seq, &call, kind), T0)
            .await
            .unwrap();
        seq += 1;
        let rec = s.call(TENANT, &call.call_id).await.unwrap().unwrap();
        assert_eq!(rec.status, CallStatus::EndedSuccess);
        assert_eq!(rec.dispatched_at, Some(T0));
        assert_eq!(
            rec.answered_at,
            Some(T0),
            "answered event: {with_answered_event}"
        );
        assert_eq!(
            rec.ended_at,
            Some(T0),
            "answered event: {with_answered_event}"
        );
    }
}

/// A transcript turn with no words (an AI turn cut before it said any)
/// is not stored: no empty line in the transcript, not counted.
async fn an_empty_turn_is_not_stored(db: TestDb) {
    let s = &db.store;
    let call = in_flight(s, 5, 0).await;
    for (seq, text) in [(1, "  "), (2, "Hello")] {
        let turn = ev(
            seq,
            &call,
            EventKind::Turn {
                speaker: Speaker::Ai,
                text: text.into(),
                at_ms: 0,
            },
        );
        let applied = s.apply_switch_event(NODE, &turn, T0).await.unwrap();
        assert_eq!(
            matches!(applied, Applied::Skipped(_)),
            text.trim().is_empty(),
            "{text:?}: {applied:?}"
        );
    }
    let end = ev(3, &call, ended("finished", true));
    s.apply_switch_event(NODE, &end, T0).await.unwrap();
    let t = s
        .transcript(TENANT, call.call_id.as_str())
        .await
        .unwrap()
        .unwrap();
    let texts: Vec<&str> = t.turns.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(texts, ["Hello"]);
}

use crate::store::testing::both_backends as both;

both!(
    an_empty_turn_is_not_stored,
    a_placed_retry_starts_clean,
    claims_are_exclusive,
    stuck_dispatch_returns_to_its_node,
    failed_dispatch_retries_on_time,
    a_deferred_dispatch_waits_as_before_its_claim,
    events_apply_once,
    a_second_control_planes_first_contact_applies_nothing_again,
    a_failed_application_leaves_no_trace,
    no_answer_is_retried_then_final,
    the_retry_delay_unit_scales_retry_delay_minutes,
    lost_node_ends_its_calls,
    a_restarted_node_ends_only_what_its_earlier_processes_carried,
    hangup_of_an_unplaced_dispatch_cancels_it,
    a_call_unknown_to_its_node_is_cancelled_only_there,
    a_node_clock_behind_keeps_the_record_in_order,
    a_trunk_delete_and_a_call_through_it_do_not_cross,
    a_corrected_retry_waits_from_the_real_end,
    a_retry_waits_while_a_lost_attempt_may_still_be_up,
    a_lost_repeat_retries_after_its_last_placecall,
    a_replaced_file_goes_only_when_its_transaction_commits,
    a_lost_attempts_transfer_is_told_late,
    nodes_with_calls_beyond_a_list_say_when_they_were_heard,
    a_prompt_an_in_flight_call_will_retry_with_is_kept,
);

/// A call in flight with a retry to come names a tenant prompt: the retry
/// is placed with the prompt's text again, so the prompt is not deleted
/// (its slug would become the retry's instructions); once the call has no
/// retry left, it goes.
async fn a_prompt_an_in_flight_call_will_retry_with_is_kept(db: TestDb) {
    use crate::store::PromptDelete;
    let s = &db.store;
    s.create_prompt(TENANT, "dentist", "Dentist", "Remind them.", T0)
        .await
        .unwrap();
    let c = in_flight_call(
        s,
        NewCall {
            system_prompt: "dentist".into(),
            ..new_call(32, T0, 1)
        },
    )
    .await;
    assert_eq!(status(s, &c.call_id).await, CallStatus::InFlight);
    assert_eq!(
        s.delete_prompt(TENANT, "dentist", true).await.unwrap(),
        PromptDelete::InUse {
            numbers: Vec::new(),
            calls: 1
        }
    );
    assert!(s.tenant_prompt(TENANT, "dentist").await.unwrap().is_some());
    // Its last attempt: nothing will name the prompt again.
    crate::store::on_pool!(s, |pool| {
        sqlx::query("UPDATE calls SET retries_left = 0 WHERE call_id = $1")
            .bind(c.call_id.as_str())
            .execute(pool)
            .await
            .unwrap();
    });
    assert_eq!(
        s.delete_prompt(TENANT, "dentist", true).await.unwrap(),
        PromptDelete::Deleted
    );
    assert_eq!(
        s.delete_prompt(TENANT, "dentist", true).await.unwrap(),
        PromptDelete::NotFound
    );
}

/// The nodes carrying live calls beyond a control plane's list, with when
/// any noted hearing from them (the latest note stands).
async fn nodes_with_calls_beyond_a_list_say_when_they_were_heard(db: TestDb) {
    let s = &db.store;
    let late = T0.plus_ms(10_000);
    assert!(
        s.nodes_with_calls_beyond(&[], late, 16)
            .await
            .unwrap()
            .is_empty()
    );
    in_flight(s, 31, 0).await;
    assert_eq!(
        s.nodes_with_calls_beyond(&[], late, 16).await.unwrap(),
        [(NODE.to_owned(), None)]
    );
    s.note_node_heard(NODE, T0.plus_ms(1_000)).await.unwrap();
    s.note_node_heard(NODE, T0).await.unwrap();
    assert_eq!(
        s.nodes_with_calls_beyond(&["http://other:1"], late, 16)
            .await
            .unwrap(),
        [(NODE.to_owned(), Some(T0.plus_ms(1_000)))]
    );
    // Heard since the cutoff: not listed (nor counted against the limit).
    s.note_node_heard(NODE, T0.plus_ms(2_000)).await.unwrap();
    assert!(
        s.nodes_with_calls_beyond(&[], T0.plus_ms(2_000), 1)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.nodes_with_calls_beyond(&[], late, 16).await.unwrap(),
        [(NODE.to_owned(), Some(T0.plus_ms(2_000)))]
    );
    assert!(
        s.nodes_with_calls_beyond(&[NODE], late, 16)
            .await
            .unwrap()
            .is_empty()
    );
}

/// An attempt ended as lost whose node, meanwhile, had its AI hand the
/// callee to a person: the node's account tells the transfer late (who
/// took the call is news the corrected end does not carry), marked
/// corrected, between the loss's end and the corrected one; its start is
/// not told late.
async fn a_lost_attempts_transfer_is_told_late(db: TestDb) {
    let s = &db.store;
    let a = in_flight(s, 22, 0).await;
    s.fail_calls_on_node(NODE, crate::store::Lost::All, "lost", T0.plus_ms(30_000))
        .await
        .unwrap();
    let late = [
        EventKind::Started,
        EventKind::Transferred {
            to_user: "sales".into(),
            to_phone: String::new(),
            trunk_id: "tr_00000000000000a1".into(),
            transfer_type: "outbound-to-user".into(),
        },
        ended("transferred-to-vnum", true),
    ];
    let mut applied = Vec::new();
    for (seq, kind) in (1..).zip(late) {
        applied.push(
            s.apply_switch_event(NODE, &ev(seq, &a, kind), T0.plus_ms(600_000))
                .await
                .unwrap(),
        );
    }
    assert!(matches!(applied[0], Applied::Skipped(_)), "{applied:?}");
    assert_eq!(applied[1..], [Applied::Applied, Applied::Applied]);
    let transferred = event_data(s, TENANT, "call.transferred").await;
    assert_eq!(transferred.len(), 1);
    assert_eq!(
        (&transferred[0]["toUser"], &transferred[0]["corrected"]),
        (&serde_json::json!("sales"), &serde_json::json!(true))
    );
    assert!(event_data(s, TENANT, "call.started").await.is_empty());
    let names: Vec<String> = events(s, TENANT).await.into_iter().map(|e| e.0).collect();
    let finished: Vec<usize> = names
        .iter()
        .enumerate()
        .filter(|(_, n)| *n == "outbound-ai.finished")
        .map(|(i, _)| i)
        .collect();
    let t = names.iter().position(|n| n == "call.transferred").unwrap();
    assert_eq!(finished.len(), 2, "{names:?}");
    assert!(finished[0] < t && t < finished[1], "{names:?}");
}

/// A file a transaction's new state no longer names (a transcript its
/// correction replaced) is removed once it commits; a transaction that
/// rolls back (its rows still name the file) leaves it.
async fn a_replaced_file_goes_only_when_its_transaction_commits(db: TestDb) {
    let s = &db.store;
    let path = db.dir.path().join("replaced.txt");
    std::fs::write(&path, b"the loss's transcript").unwrap();
    let mut tx = s.begin().await.unwrap();
    tx.remove_after_commit(path.clone());
    drop(tx);
    assert!(path.exists(), "rolled back: kept");
    let mut tx = s.begin().await.unwrap();
    tx.remove_after_commit(path.clone());
    assert!(path.exists(), "not before the commit");
    tx.commit().await.unwrap();
    assert!(!path.exists(), "committed: removed");
}

/// A call lost with a node that is only unreachable may still ring, or
/// talk, there: its retry waits until that attempt must have ended (ring
/// time, talk limit, a margin), not just its delay, so the callee is not
/// called twice at once. Lost with a restarted node (its process, and
/// the call, gone), the delay alone.
async fn a_retry_waits_while_a_lost_attempt_may_still_be_up(db: TestDb) {
    let s = &db.store;
    for (n, lost, due) in [
        // Dispatched at T0, max 60 s: 10 (its PlaceCall's answer wait) +
        // 60 + 60 + 30 s.
        (22, crate::store::Lost::All, T0.plus_ms(160_000)),
        // Lost at T0 + 10 s, one minute's delay.
        (
            23,
            crate::store::Lost::CarriedBefore("i2"),
            T0.plus_ms(70_000),
        ),
    ] {
        let c = NewCall {
            retry_delay_minutes: 1,
            ..new_call(n, T0, 1)
        };
        s.insert_call(&c).await.unwrap();
        let claimed = s.claim_call(&c.call_id, T0).await.unwrap().unwrap();
        assert!(s.set_dispatch_node(&claimed, NODE, None, T0).await.unwrap());
        assert!(
            s.mark_placed(&claimed, "tr_0123456789abcdef", "i1", T0)
                .await
                .unwrap()
        );
        s.sweep_calls_on_node(NODE, lost, "lost", T0.plus_ms(10_000), T0.plus_ms(10_000))
            .await
            .unwrap();
        let rec = s.call(TENANT, &c.call_id).await.unwrap().unwrap();
        assert_eq!(rec.status, CallStatus::EndedFailedRetryPending, "{lost:?}");
        assert_eq!(rec.scheduled_for, Some(due), "{lost:?}");
        if lost == crate::store::Lost::All {
            // The node answers again as the same process: the attempt may
            // still be up there, so the wait stands.
            let now = T0.plus_ms(20_000);
            assert_eq!(s.release_lost_retries(NODE, "i1", now).await.unwrap(), 0);
            // As another process: the attempt is gone; its delay alone.
            assert_eq!(s.release_lost_retries(NODE, "i2", now).await.unwrap(), 1);
            let rec = s.call(TENANT, &c.call_id).await.unwrap().unwrap();
            assert_eq!(rec.scheduled_for, Some(T0.plus_ms(70_000)));
        }
    }
}

/// A dispatching call lost with its node after a repeated PlaceCall (the
/// first's answer lost, the repeat's too): its retry waits until the
/// repeat's attempt must be over, not the first claim's.
async fn a_lost_repeat_retries_after_its_last_placecall(db: TestDb) {
    let s = &db.store;
    let c = NewCall {
        retry_delay_minutes: 1,
        ..new_call(24, T0, 1)
    };
    s.insert_call(&c).await.unwrap();
    let claimed = s.claim_call(&c.call_id, T0).await.unwrap().unwrap();
    assert!(s.set_dispatch_node(&claimed, NODE, None, T0).await.unwrap());
    s.placecall_sending(&claimed, T0).await.unwrap();
    let repeat_at = T0.plus_ms(crate::store::DISPATCH_LEASE_MS);
    let again = s.claim_due_calls(repeat_at, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].placecall_sent_at, Some(T0));
    s.placecall_sending(&again[0], repeat_at).await.unwrap();
    let lost_at = repeat_at.plus_ms(10_000);
    s.sweep_calls_on_node(NODE, crate::store::Lost::All, "lost", lost_at, lost_at)
        .await
        .unwrap();
    let rec = s.call(TENANT, &c.call_id).await.unwrap().unwrap();
    assert_eq!(rec.status, CallStatus::EndedFailedRetryPending);
    assert_eq!(rec.scheduled_for, Some(repeat_at.plus_ms(160_000)));
}

/// A lost attempt whose real end (read later) is a failure that is
/// retried: the retry the loss took is given back and spent again, and
/// the next attempt is due its delay after the real end, not after the
/// correction arrived (minutes later, say).
async fn a_corrected_retry_waits_from_the_real_end(db: TestDb) {
    let s = &db.store;
    let a = in_flight(s, 21, 2).await;
    let lost_at = T0.plus_ms(30_000);
    s.fail_calls_on_node(NODE, crate::store::Lost::All, "lost", lost_at)
        .await
        .unwrap();
    let rec = s.call(TENANT, &a.call_id).await.unwrap().unwrap();
    assert_eq!(
        (rec.status, rec.retries_left),
        (CallStatus::EndedFailedRetryPending, 1)
    );
    // Read ten minutes later: rang out at T0 + 60 s.
    let read_at = T0.plus_ms(600_000);
    let late = ev(1, &a, ended("no-answer", false));
    assert_eq!(
        s.apply_switch_event(NODE, &late, read_at).await.unwrap(),
        Applied::Applied
    );
    let rec = s.call(TENANT, &a.call_id).await.unwrap().unwrap();
    assert_eq!(
        (rec.status, rec.ended_reason.as_str(), rec.retries_left),
        (CallStatus::EndedFailedRetryPending, "no-answer", 1)
    );
    // Five minutes (retryDelayMinutes) after the real end.
    assert_eq!(rec.scheduled_for, Some(T0.plus_ms(60_000 + 300_000)));
    // Counted once as an end (the loss), and once as corrected.
    let ends = s.call_ends();
    assert_eq!(
        ends.attempts(CallStatus::EndedFailedRetryPending, "failed"),
        1
    );
    assert_eq!(
        ends.attempts(CallStatus::EndedFailedRetryPending, "no-answer"),
        0
    );
    assert_eq!(ends.corrections(false, "no-answer"), 1);
}

/// A trunk DELETE and a call stored through that trunk at the same
/// moment (two control planes, say): either the delete sees the call and
/// is refused, or it went first and the call is refused; never a stored
/// call naming a trunk that is gone. Raced many times (on PostgreSQL the
/// guard and the insert are separate statements of separate transactions).
async fn a_trunk_delete_and_a_call_through_it_do_not_cross(db: TestDb) {
    let s = &db.store;
    let other = Store::open(&db.url, db.dir.path()).await.unwrap();
    let (mut deleted, mut stored) = (0, 0);
    for n in 0..30u8 {
        let trunk = testing::trunk(n, false);
        s.create_trunk(&trunk).await.unwrap();
        let call = NewCall {
            trunk_id: Some(trunk.id.clone()),
            scheduled_for: Some(T0.plus_ms(3_600_000)),
            next_attempt_at: T0.plus_ms(3_600_000),
            ..testing::new_call(n, 0)
        };
        let (ins, del) = tokio::join!(
            s.insert_call_checked(&call),
            other.delete_trunk(TENANT, &trunk.id, false)
        );
        let (ins, del) = (ins.unwrap(), del.unwrap());
        assert_ne!(ins.is_ok(), del, "round {n}: stored {ins:?}, deleted {del}");
        deleted += usize::from(del);
        stored += usize::from(ins.is_ok());
    }
    assert_eq!(deleted + stored, 30);
}

/// A transcript's start is its end less the switch's whole-second
/// duration, kept between the dispatch and the answer: rounding never puts
/// it before the call was placed or after it was answered.
#[test]
fn a_transcript_starts_between_the_dispatch_and_the_answer() {
    use super::transcript_start;
    let at = |ms: i64| UtcMillis(1_700_000_000_000 + ms);
    let end = |ended: i64, secs: i64| AttemptEnd {
        ended_at: at(ended),
        duration_seconds: secs,
        ..AttemptEnd::default()
    };
    // INVITE 2 s after the dispatch: the start is the INVITE.
    assert_eq!(
        transcript_start(Some(at(0)), Some(at(5_000)), &end(20_000, 18)),
        at(2_000)
    );
    // 19.52 s rounded up to 20: not before the dispatch.
    assert_eq!(
        transcript_start(Some(at(0)), Some(at(3_000)), &end(19_520, 20)),
        at(0)
    );
    // 4.4 s rounded down to 4, answered 0.2 s after the INVITE: not after
    // the answer.
    assert_eq!(
        transcript_start(Some(at(0)), Some(at(200)), &end(4_400, 4)),
        at(200)
    );
    // Never answered, no duration: the dispatch.
    assert_eq!(transcript_start(Some(at(0)), None, &end(30_000, 0)), at(0));
}
