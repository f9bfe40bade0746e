//! Store-level tests of inbound virtual-number calls, each run on SQLite
//! and on PostgreSQL. Events go through the same path as the link's
//! (`apply_switch_event`, one transaction with the cursor); time is passed
//! in.

use codeb_proto::v1 as pb;
use codeb_types::UtcMillis;
use serde_json::json;

use crate::store::testing::{TestDb, event_data, events};
use crate::store::{
    Applied, AttemptEnd, CallFilter, EventKind, InboundStart, NumberRecord, Speaker, Store,
    SwitchEvent, TranscriptFilter,
};

const TENANT: &str = "t.example";
const NODE: &str = "http://10.0.0.1:50051";
const OTHER_NODE: &str = "http://10.0.0.2:50051";
/// 2026-05-28T20:26:40Z.
const T0: UtcMillis = UtcMillis(1_780_000_000_000);
const CALL: &str = "vnum0123456789ab";

fn number(tenant: &str, number: &str, save: bool) -> NumberRecord {
    NumberRecord {
        tenant: tenant.into(),
        number: number.into(),
        name: "codebdemo".into(),
        mode: "live-voice-ai".into(),
        voice: "Aoede".into(),
        language: "en-US".into(),
        model: "m".into(),
        save_transcripts: save,
        max_duration_sec: 3500,
        visibility: "public".into(),
        system_prompt: "You are the receptionist.".into(),
        ai_api_key: "key".into(),
        created_at: T0,
        updated_at: T0,
    }
}

fn ev(seq: i64, call: &str, tenant: &str, kind: EventKind) -> SwitchEvent {
    SwitchEvent {
        journal_id: "j1".into(),
        seq,
        at: T0.plus_ms(seq * 1000),
        call_id: call.into(),
        attempt: 1,
        tenant: tenant.into(),
        kind,
    }
}

fn start(vnum: &str) -> EventKind {
    EventKind::Inbound(InboundStart {
        did: "+15551234567".into(),
        from_number: "+35699123456".into(),
        virtual_number: vnum.into(),
        trunk_id: Some("tr_0123456789abcdef".into()),
        instance: String::new(),
    })
}

fn answered() -> EventKind {
    EventKind::Answered {
        trunk_id: String::new(),
        answer_ms: 120,
    }
}

fn turn(speaker: Speaker, text: &str, at_ms: i64) -> EventKind {
    EventKind::Turn {
        speaker,
        text: text.into(),
        at_ms,
    }
}

fn ended(outcome: &str) -> EventKind {
    EventKind::Ended(AttemptEnd {
        outcome: outcome.into(),
        answered: true,
        answered_at: Some(T0.plus_ms(2000)),
        ended_at: T0.plus_ms(40_000),
        talk_seconds: 38,
        duration_seconds: 39,
        input_turns: 1,
        output_turns: 2,
        ..AttemptEnd::default()
    })
}

/// NODE's cursor at the start of journal j1 again, whatever it applied of
/// it (a reset to the journal it is at changes nothing).
async fn restart_journal(s: &Store) {
    s.reset_switch_cursor(NODE, "j0", T0).await.unwrap();
    s.reset_switch_cursor(NODE, "j1", T0).await.unwrap();
}

/// Applies `kinds` as seq 1, 2, … of journal j1 and checks each applied.
async fn apply_all(s: &Store, call: &str, tenant: &str, kinds: Vec<EventKind>) -> Vec<SwitchEvent> {
    restart_journal(s).await;
    let mut out = Vec::new();
    for (i, kind) in kinds.into_iter().enumerate() {
        let e = ev(i64::try_from(i).unwrap() + 1, call, tenant, kind);
        assert_eq!(
            s.apply_switch_event(NODE, &e, T0.plus_ms(50_000))
                .await
                .unwrap(),
            Applied::Applied,
            "{e:?}"
        );
        out.push(e);
    }
    out
}

fn whole_call() -> Vec<EventKind> {
    vec![
        start("1234"),
        answered(),
        EventKind::Started,
        turn(Speaker::Ai, "Hello, CodeB reception.", 300),
        turn(Speaker::Caller, "Hi, is Alex in?", 2500),
        EventKind::Usage {
            input: 1000,
            output: 200,
        },
        turn(Speaker::Ai, "Putting you through.", 4000),
        EventKind::Usage {
            input: 40,
            output: 0,
        },
        EventKind::Transferred {
            to_user: "alex".into(),
            to_phone: String::new(),
            trunk_id: String::new(),
            transfer_type: String::new(),
        },
        ended("finished"),
    ]
}

async fn a_whole_inbound_call_is_recorded(db: TestDb) {
    let s = &db.store;
    assert!(
        s.create_number(&number(TENANT, "1234", true))
            .await
            .unwrap()
    );
    apply_all(s, CALL, TENANT, whole_call()).await;

    let rec = s.inbound_call(TENANT, CALL).await.unwrap().unwrap();
    assert_eq!(
        (
            rec.number.as_str(),
            rec.did.as_str(),
            rec.from_number.as_str()
        ),
        ("1234", "+15551234567", "+35699123456")
    );
    assert_eq!(rec.trunk_id.as_deref(), Some("tr_0123456789abcdef"));
    assert_eq!(rec.node_url, NODE);
    assert!(rec.number_known && rec.save_transcripts && rec.answered);
    assert_eq!(rec.created_at, T0.plus_ms(1000));
    assert_eq!(rec.answered_at, Some(T0.plus_ms(2000)));
    assert_eq!(rec.started_at, Some(T0.plus_ms(3000)));
    assert_eq!(rec.ended_at, Some(T0.plus_ms(40_000)));
    assert_eq!(rec.answer_ms, Some(120));
    assert_eq!((rec.tokens_in, rec.tokens_out), (1040, 200));
    assert_eq!((rec.talk_sec, rec.duration_sec), (38, 39));
    assert_eq!((rec.input_turns, rec.output_turns), (1, 2));
    assert_eq!(rec.outcome, "finished");
    assert_eq!(rec.transfers, 1);
    let file = format!("vnum-1234-20260528-202641-{CALL}.txt");
    assert_eq!(rec.transcript_path, file);

    // The transcript: row, file, and how the list filters see it.
    let t = s.transcript(TENANT, CALL).await.unwrap().unwrap();
    assert_eq!(t.caller_source, "vnum");
    assert_eq!(t.rule, "vnum:codebdemo");
    assert_eq!(t.number.as_deref(), Some("1234"));
    assert_eq!(t.caller.as_deref(), Some("+35699123456"));
    assert_eq!(t.phone, None);
    assert_eq!(t.tokens_total, 1240);
    assert_eq!(t.duration_sec, 39);
    assert_eq!(t.file, file);
    let speakers: Vec<&str> = t.turns.iter().map(|t| t.speaker.as_str()).collect();
    assert_eq!(speakers, ["AI", "Caller", "AI"]);
    assert_eq!(
        t.turns[1].ts,
        T0.plus_ms(2000 + 2500),
        "offset from the answer"
    );
    let text = std::fs::read_to_string(s.transcripts_dir().join(&file)).unwrap();
    assert!(text.contains("Number:      1234"), "{text}");
    assert!(text.contains("AI: Putting you through."), "{text}");
    let vnum = TranscriptFilter {
        caller_sources: vec!["vnum", "office-tab"],
        ..TranscriptFilter::default()
    };
    let page = s.list_transcripts(TENANT, &vnum, 50, 0).await.unwrap();
    assert_eq!((page.total, page.items[0].call_id.as_str()), (1, CALL));
    let outbound = TranscriptFilter {
        caller_sources: vec!["outbound-ai"],
        ..TranscriptFilter::default()
    };
    assert_eq!(
        s.list_transcripts(TENANT, &outbound, 50, 0)
            .await
            .unwrap()
            .total,
        0
    );
    let q = TranscriptFilter {
        q: Some("CODEBDEMO".into()),
        ..TranscriptFilter::default()
    };
    assert_eq!(
        s.list_transcripts(TENANT, &q, 50, 0).await.unwrap().total,
        1
    );
    // GET /calls is outbound AI calls only.
    let calls = s
        .list_calls(TENANT, &CallFilter::default(), 50, 0)
        .await
        .unwrap();
    assert_eq!(calls.total, 0);
    assert!(calls.items.is_empty());

    // Webhook events, in order, with the inbound payloads.
    let names: Vec<String> = events(s, TENANT).await.into_iter().map(|e| e.0).collect();
    assert_eq!(
        names,
        [
            "call.answered",
            "call.started",
            "call.transferred",
            "call.ended",
            "transcript.saved"
        ]
    );
    assert_eq!(
        event_data(s, TENANT, "call.answered").await,
        [
            json!({"callId": CALL, "did": "+15551234567", "fromNumber": "+35699123456",
            "direction": "inbound", "source": "gemini-live", "answerMs": 120})
        ]
    );
    assert_eq!(
        event_data(s, TENANT, "call.started").await,
        [
            json!({"callId": CALL, "number": "1234", "did": "+15551234567",
            "direction": "inbound", "source": "gemini-live"})
        ]
    );
    assert_eq!(
        event_data(s, TENANT, "call.transferred").await,
        [json!({"callId": CALL, "fromVnum": "1234", "toUser": "alex",
            "transferType": "vnum-to-officetab", "room": "", "source": "vnum"})]
    );
    assert_eq!(
        event_data(s, TENANT, "call.ended").await,
        [
            json!({"callId": CALL, "number": "+15551234567", "room": "", "outcome": "finished",
            "durationSec": 39, "tokens": 1240, "source": "sip"})
        ]
    );
    assert_eq!(
        event_data(s, TENANT, "transcript.saved").await,
        [
            json!({"callId": CALL, "number": "1234", "file": file, "outcome": "finished",
            "source": "vnum"})
        ]
    );
    // Every event row names the call.
    assert!(
        events(s, TENANT)
            .await
            .iter()
            .all(|e| e.1.as_deref() == Some(CALL))
    );
}

async fn replayed_events_apply_once(db: TestDb) {
    let s = &db.store;
    assert!(
        s.create_number(&number(TENANT, "1234", true))
            .await
            .unwrap()
    );
    let applied = apply_all(s, CALL, TENANT, whole_call()).await;
    let before = s.inbound_call(TENANT, CALL).await.unwrap().unwrap();
    let events_before = events(s, TENANT).await;
    // The whole journal resent (a restart before the ack): each is at or
    // below the cursor.
    for e in &applied {
        assert_eq!(
            s.apply_switch_event(NODE, e, T0.plus_ms(99_000))
                .await
                .unwrap(),
            Applied::Duplicate
        );
    }
    // The node reporting the same things again under new seqs (a node bug
    // or its own replay) changes nothing either.
    let mut seq = i64::try_from(applied.len()).unwrap();
    for kind in whole_call() {
        seq += 1;
        let e = ev(seq, CALL, TENANT, kind);
        assert!(
            matches!(
                s.apply_switch_event(NODE, &e, T0.plus_ms(99_000))
                    .await
                    .unwrap(),
                Applied::Skipped(_)
            ),
            "{e:?}"
        );
    }
    assert_eq!(s.inbound_call(TENANT, CALL).await.unwrap().unwrap(), before);
    assert_eq!(events(s, TENANT).await, events_before);
    assert_eq!(s.switch_cursor(NODE).await.unwrap().unwrap().last_seq, seq);
    let t = s.transcript(TENANT, CALL).await.unwrap().unwrap();
    assert_eq!(t.turns.len(), 3);

    // Within a live call: a second InboundCall, Answered or Started for
    // the same id is a duplicate, not a second record or webhook.
    let call2 = "vnum00000000beef";
    let mut next = |kind| {
        seq += 1;
        ev(seq, call2, TENANT, kind)
    };
    for (kind, first) in [
        (start("1234"), true),
        (start("1234"), false),
        (answered(), true),
        (answered(), false),
        (EventKind::Started, true),
        (EventKind::Started, false),
    ] {
        let got = s.apply_switch_event(NODE, &next(kind), T0).await.unwrap();
        assert_eq!(got == Applied::Applied, first, "{got:?}");
    }
    let answers = event_data(s, TENANT, "call.answered").await;
    assert_eq!(answers.len(), 2, "one per call");
    assert_eq!(event_data(s, TENANT, "call.started").await.len(), 2);
    // Another node's events for this call are not applied to it.
    s.reset_switch_cursor(OTHER_NODE, "k1", T0).await.unwrap();
    let mut foreign = ev(1, call2, TENANT, ended("finished"));
    foreign.journal_id = "k1".into();
    assert!(matches!(
        s.apply_switch_event(OTHER_NODE, &foreign, T0)
            .await
            .unwrap(),
        Applied::Skipped(_)
    ));
    assert_eq!(
        s.inbound_call(TENANT, call2)
            .await
            .unwrap()
            .unwrap()
            .ended_at,
        None
    );
    // Nor another tenant's.
    let other_tenant = next(ended("finished"));
    let other_tenant = SwitchEvent {
        tenant: "evil.example".into(),
        ..other_tenant
    };
    assert!(matches!(
        s.apply_switch_event(NODE, &other_tenant, T0).await.unwrap(),
        Applied::Skipped(_)
    ));
    assert!(
        s.inbound_call("evil.example", call2)
            .await
            .unwrap()
            .is_none()
    );
}

async fn a_failed_end_leaves_no_trace(db: TestDb) {
    let s = &db.store;
    assert!(
        s.create_number(&number(TENANT, "1234", true))
            .await
            .unwrap()
    );
    apply_all(
        s,
        CALL,
        TENANT,
        vec![start("1234"), answered(), turn(Speaker::Ai, "Hello", 0)],
    )
    .await;
    // The transcript cannot be written: the End fails as a whole.
    std::fs::write(s.transcripts_dir(), b"in the way").unwrap();
    let end = ev(4, CALL, TENANT, ended("far-hangup"));
    assert!(s.apply_switch_event(NODE, &end, T0).await.is_err());
    // Rolled back: not counted as ended either.
    assert_eq!(s.call_ends().inbound_count("far-hangup"), 0);
    assert_eq!(
        s.inbound_call(TENANT, CALL)
            .await
            .unwrap()
            .unwrap()
            .ended_at,
        None
    );
    assert!(event_data(s, TENANT, "call.ended").await.is_empty());
    assert_eq!(s.switch_cursor(NODE).await.unwrap().unwrap().last_seq, 3);
    std::fs::remove_file(s.transcripts_dir()).unwrap();
    assert_eq!(
        s.apply_switch_event(NODE, &end, T0).await.unwrap(),
        Applied::Applied
    );
    assert_eq!(s.call_ends().inbound_count("far-hangup"), 1);
    assert_eq!(event_data(s, TENANT, "call.ended").await.len(), 1);
    assert_eq!(event_data(s, TENANT, "transcript.saved").await.len(), 1);
}

async fn unknown_numbers_are_recorded_without_transcripts(db: TestDb) {
    let s = &db.store;
    let stranger = "nobody.example";
    let kinds = vec![
        start("999"),
        answered(),
        EventKind::Started,
        turn(
            Speaker::Caller,
            "My card number is 4111 1111 1111 1111",
            100,
        ),
        EventKind::Usage {
            input: 10,
            output: 5,
        },
        ended("far-hangup"),
    ];
    apply_all(s, CALL, stranger, kinds).await;
    let rec = s.inbound_call(stranger, CALL).await.unwrap().unwrap();
    assert!(!rec.number_known && !rec.save_transcripts);
    assert_eq!(rec.number_name, "");
    assert_eq!(rec.outcome, "far-hangup");
    assert_eq!(rec.transcript_path, "");
    assert!(s.transcript(stranger, CALL).await.unwrap().is_none());
    assert!(!s.transcripts_dir().exists(), "no file either");
    let names: Vec<String> = events(s, stranger).await.into_iter().map(|e| e.0).collect();
    assert_eq!(names, ["call.answered", "call.started", "call.ended"]);
    assert_eq!(event_data(s, stranger, "call.ended").await[0]["tokens"], 15);
    // Not visible to any other tenant.
    assert!(s.inbound_call(TENANT, CALL).await.unwrap().is_none());
    assert!(events(s, TENANT).await.is_empty());
    // The turn's text was never stored.
    let stored: i64 = crate::store::on_pool!(s, |pool| {
        sqlx::query_scalar("SELECT COUNT(*) FROM call_turns WHERE call_id = $1")
            .bind(CALL)
            .fetch_one(pool)
            .await
            .unwrap()
    });
    assert_eq!(stored, 0);

    // A known number that does not save transcripts: the same.
    assert!(s.create_number(&number(TENANT, "55", false)).await.unwrap());
    let call = "vnum0000000000aa";
    restart_journal(s).await;
    for (i, kind) in [
        start("55"),
        answered(),
        turn(Speaker::Ai, "Hello", 0),
        ended("finished"),
    ]
    .into_iter()
    .enumerate()
    {
        let e = ev(i64::try_from(i).unwrap() + 1, call, TENANT, kind);
        assert_eq!(
            s.apply_switch_event(NODE, &e, T0).await.unwrap(),
            Applied::Applied
        );
    }
    let rec = s.inbound_call(TENANT, call).await.unwrap().unwrap();
    assert!(rec.number_known && !rec.save_transcripts);
    assert!(s.transcript(TENANT, call).await.unwrap().is_none());
    assert!(event_data(s, TENANT, "transcript.saved").await.is_empty());
    // Events before (or without) an InboundCall are skipped.
    let orphan = ev(5, "vnum00000000dead", TENANT, answered());
    assert!(matches!(
        s.apply_switch_event(NODE, &orphan, T0).await.unwrap(),
        Applied::Skipped(_)
    ));
}

async fn oversized_fields_are_bounded(db: TestDb) {
    let s = &db.store;
    assert!(
        s.create_number(&number(TENANT, "1234", true))
            .await
            .unwrap()
    );
    s.reset_switch_cursor(NODE, "j1", T0).await.unwrap();
    let wire = |seq: u64, call_id: &str, kind| pb::Event {
        seq,
        journal_id: "j1".into(),
        at_unix_ms: 1_780_000_000_000 + seq * 1000,
        call_id: call_id.into(),
        attempt: 1,
        tenant: TENANT.into(),
        kind: Some(kind),
    };
    let apply = |e: pb::Event| async move {
        let e = crate::switch_link::events::convert(&e).unwrap();
        s.apply_switch_event(NODE, &e, T0).await.unwrap()
    };
    // A caller's huge From and DID are cut, not a reason to lose the call.
    let first = wire(
        1,
        CALL,
        pb::event::Kind::Inbound(pb::InboundCall {
            did: "9".repeat(100_000),
            from_number: format!("evil\r\nX-Injected: 1{}", "x".repeat(100_000)),
            virtual_number: "1234".into(),
            trunk_id: "t".repeat(1000),
            instance_id: String::new(),
        }),
    );
    assert_eq!(apply(first).await, Applied::Applied);
    let rec = s.inbound_call(TENANT, CALL).await.unwrap().unwrap();
    assert_eq!(rec.did.len(), crate::store::MAX_INBOUND_FIELD);
    assert_eq!(rec.from_number.len(), crate::store::MAX_INBOUND_FIELD);
    assert!(rec.from_number.starts_with("evil??X-Injected"));
    assert_eq!(rec.trunk_id, None, "an invalid trunk id is dropped");
    // A huge turn is cut to the bound.
    let big = wire(
        2,
        CALL,
        pb::event::Kind::Turn(pb::TranscriptTurn {
            role: "ai".into(),
            text: "é".repeat(100_000),
            at_ms: 1,
            interrupted: false,
        }),
    );
    assert_eq!(apply(big).await, Applied::Applied);
    // Unattributable InboundCalls are refused (skipped, cursor moved):
    // a bad id, a bad virtual number, no tenant.
    let bad_id = wire(
        3,
        "oac-0123456789ab",
        pb::event::Kind::Inbound(pb::InboundCall {
            virtual_number: "1234".into(),
            ..Default::default()
        }),
    );
    let bad_number = wire(
        4,
        "vnum0000000000bb",
        pb::event::Kind::Inbound(pb::InboundCall {
            virtual_number: "1".repeat(40),
            ..Default::default()
        }),
    );
    let mut no_tenant = wire(
        5,
        "vnum0000000000cc",
        pb::event::Kind::Inbound(pb::InboundCall {
            virtual_number: "1234".into(),
            ..Default::default()
        }),
    );
    no_tenant.tenant = String::new();
    for e in [bad_id, bad_number, no_tenant] {
        assert!(matches!(apply(e).await, Applied::Skipped(_)));
    }
    assert!(
        s.inbound_call(TENANT, "vnum0000000000bb")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(s.switch_cursor(NODE).await.unwrap().unwrap().last_seq, 5);
    // Huge outcome and error detail are cut when the call ends.
    let end = wire(
        6,
        CALL,
        pb::event::Kind::Ended(pb::CallEnded {
            outcome: "o".repeat(10_000),
            error_detail: "d".repeat(100_000),
            answered: true,
            ..Default::default()
        }),
    );
    assert_eq!(apply(end).await, Applied::Applied);
    let rec = s.inbound_call(TENANT, CALL).await.unwrap().unwrap();
    assert_eq!(rec.outcome.len(), 64);
    assert_eq!(rec.error_detail.len(), 1024);
    let t = s.transcript(TENANT, CALL).await.unwrap().unwrap();
    assert_eq!(
        t.turns[0].text.len(),
        crate::store::switch_events::MAX_TURN_TEXT
    );
}

async fn a_restarted_node_ends_the_inbound_calls_its_earlier_process_carried(db: TestDb) {
    let s = &db.store;
    assert!(
        s.create_number(&number(TENANT, "1234", true))
            .await
            .unwrap()
    );
    let begun = |instance: &str| {
        let EventKind::Inbound(mut st) = start("1234") else {
            unreachable!()
        };
        st.instance = instance.into();
        EventKind::Inbound(st)
    };
    let calls = [
        ("vnum00000000000a", "i1"),
        ("vnum00000000000b", "i2"),
        ("vnum00000000000c", ""),
    ];
    for (id, instance) in calls {
        apply_all(s, id, TENANT, vec![begun(instance), answered()]).await;
    }
    let lost = crate::store::Lost::CarriedBefore("i2");
    assert_eq!(
        s.fail_calls_on_node(NODE, lost, "restarted", T0)
            .await
            .unwrap(),
        1
    );
    for (id, instance) in calls {
        let rec = s.inbound_call(TENANT, id).await.unwrap().unwrap();
        assert_eq!(rec.ended_at.is_some(), instance == "i1", "{id}");
    }
    // Ended with the process: no hangup is due for it once the node's
    // new process is known.
    let later = T0.plus_ms(1_000);
    assert_eq!(
        s.lost_calls_to_hang_up(NODE, later, 10).await.unwrap(),
        ["vnum00000000000a"]
    );
    assert_eq!(
        s.lost_calls_ended_by_restart(NODE, "i2", later)
            .await
            .unwrap(),
        1
    );
    assert!(
        s.lost_calls_to_hang_up(NODE, later, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Inbound and outbound calls ended as lost with a node wait for their
/// hangup there, oldest first, until it is recorded; not those of another
/// node, nor once a day has passed.
async fn lost_calls_wait_for_their_hangup_until_it_is_recorded(db: TestDb) {
    let s = &db.store;
    assert!(
        s.create_number(&number(TENANT, "1234", true))
            .await
            .unwrap()
    );
    apply_all(s, CALL, TENANT, vec![start("1234"), answered()]).await;
    let outbound = crate::store::NewCall {
        created_at: T0,
        next_attempt_at: T0,
        ..crate::store::testing::new_call(1, 0)
    };
    s.insert_call(&outbound).await.unwrap();
    let claimed = s.claim_call(&outbound.call_id, T0).await.unwrap().unwrap();
    assert!(s.set_dispatch_node(&claimed, NODE, None, T0).await.unwrap());
    assert!(s.mark_placed(&claimed, "", "", T0).await.unwrap());
    let lost_at = T0.plus_ms(10_000);
    assert_eq!(
        s.fail_calls_on_node(NODE, crate::store::Lost::All, "lost", lost_at)
            .await
            .unwrap(),
        2
    );
    let now = lost_at.plus_ms(5_000);
    let due = s.lost_calls_to_hang_up(NODE, now, 10).await.unwrap();
    assert_eq!(due.len(), 2, "{due:?}");
    assert!(due.contains(&CALL.to_owned()) && due.contains(&outbound.call_id.to_string()));
    assert_eq!(
        s.lost_calls_to_hang_up(NODE, now, 1).await.unwrap().len(),
        1
    );
    assert!(
        s.lost_calls_to_hang_up(OTHER_NODE, now, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let day_later = lost_at.plus_ms(24 * 3600 * 1000 + 1);
    assert!(
        s.lost_calls_to_hang_up(NODE, day_later, 10)
            .await
            .unwrap()
            .is_empty()
    );
    s.lost_call_hung_up(CALL, now).await.unwrap();
    assert_eq!(
        s.lost_calls_to_hang_up(NODE, now, 10).await.unwrap(),
        [outbound.call_id.to_string()]
    );
    s.lost_call_hung_up(outbound.call_id.as_str(), now)
        .await
        .unwrap();
    assert!(
        s.lost_calls_to_hang_up(NODE, now, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_lost_node_ends_its_inbound_calls(db: TestDb) {
    let s = &db.store;
    assert!(
        s.create_number(&number(TENANT, "1234", true))
            .await
            .unwrap()
    );
    apply_all(
        s,
        CALL,
        TENANT,
        vec![start("1234"), answered(), turn(Speaker::Ai, "Hello", 0)],
    )
    .await;
    let now = T0.plus_ms(32_000);
    let detail = format!("switch node {NODE} lost");
    assert_eq!(
        s.fail_calls_on_node(NODE, crate::store::Lost::All, &detail, now)
            .await
            .unwrap(),
        1
    );
    let rec = s.inbound_call(TENANT, CALL).await.unwrap().unwrap();
    assert_eq!(rec.ended_at, Some(now));
    assert_eq!(
        (rec.outcome.as_str(), rec.error_detail.as_str()),
        ("failed", detail.as_str())
    );
    assert_eq!((rec.talk_sec, rec.duration_sec), (30, 31));
    assert!(rec.answered);
    assert_eq!(
        event_data(s, TENANT, "call.ended").await[0]["outcome"],
        "failed"
    );
    assert_eq!(event_data(s, TENANT, "transcript.saved").await.len(), 1);
    assert_eq!(
        s.fail_calls_on_node(NODE, crate::store::Lost::All, &detail, now)
            .await
            .unwrap(),
        0
    );
    // The node was only cut off: its account, read when it answers
    // again, corrects the record (its turn, usage and end), and
    // subscribers are told again, marked corrected.
    for (seq, kind) in [
        (4, turn(Speaker::Caller, "Is the office open today?", 5_000)),
        (
            5,
            EventKind::Usage {
                input: 40,
                output: 60,
            },
        ),
        (
            6,
            EventKind::Transferred {
                to_user: "alex".into(),
                to_phone: String::new(),
                trunk_id: String::new(),
                transfer_type: String::new(),
            },
        ),
        (7, ended("finished")),
    ] {
        let late = ev(seq, CALL, TENANT, kind);
        assert_eq!(
            s.apply_switch_event(NODE, &late, now).await.unwrap(),
            Applied::Applied
        );
    }
    let rec = s.inbound_call(TENANT, CALL).await.unwrap().unwrap();
    assert_eq!(
        (rec.outcome.as_str(), rec.error_detail.as_str()),
        ("finished", "")
    );
    assert_eq!((rec.talk_sec, rec.duration_sec), (38, 39));
    assert_eq!(rec.ended_at, Some(T0.plus_ms(40_000)));
    assert_eq!(rec.tokens_in + rec.tokens_out, 100);
    let ends = event_data(s, TENANT, "call.ended").await;
    assert_eq!(ends.len(), 2);
    assert_eq!(
        (&ends[1]["outcome"], &ends[1]["corrected"]),
        (&json!("finished"), &json!(true))
    );
    let saved = event_data(s, TENANT, "transcript.saved").await;
    assert_eq!(saved.len(), 2);
    assert_eq!(saved[1]["corrected"], true);
    let t = s
        .transcript(TENANT, CALL)
        .await
        .unwrap()
        .expect("the corrected transcript");
    assert_eq!(t.turns.len(), 2, "{t:?}");
    // Counted once as an end (the loss), and once as corrected.
    assert_eq!(s.call_ends().inbound_count("failed"), 1);
    assert_eq!(s.call_ends().inbound_count("finished"), 0);
    assert_eq!(s.call_ends().corrections(true, "finished"), 1);
    // The transfer the node made meanwhile is told late, marked, before
    // the corrected end.
    let transferred = event_data(s, TENANT, "call.transferred").await;
    assert_eq!(transferred.len(), 1);
    assert_eq!(
        (&transferred[0]["toUser"], &transferred[0]["corrected"]),
        (&json!("alex"), &json!(true))
    );
    assert_eq!(rec.transfers, 1);
    let names: Vec<String> = events(s, TENANT).await.into_iter().map(|e| e.0).collect();
    let at = |n: &str| names.iter().rposition(|x| x == n).unwrap();
    assert!(at("call.transferred") < at("call.ended"), "{names:?}");
    // Once: a second end is skipped.
    let again = ev(8, CALL, TENANT, ended("failed"));
    assert!(matches!(
        s.apply_switch_event(NODE, &again, now).await.unwrap(),
        Applied::Skipped(_)
    ));
}

/// An inbound call ended as lost, hung up on its node's return (the
/// hangup's outcome says so): the node's end corrects its times, not why
/// it ended.
async fn a_lost_inbound_call_hung_up_on_return_keeps_its_reason(db: TestDb) {
    let s = &db.store;
    assert!(
        s.create_number(&number(TENANT, "1234", true))
            .await
            .unwrap()
    );
    apply_all(s, CALL, TENANT, vec![start("1234"), answered()]).await;
    let now = T0.plus_ms(32_000);
    let detail = format!("switch node {NODE} lost");
    s.fail_calls_on_node(NODE, crate::store::Lost::All, &detail, now)
        .await
        .unwrap();
    let late = ev(3, CALL, TENANT, ended(crate::store::LOST_HANGUP_OUTCOME));
    assert_eq!(
        s.apply_switch_event(NODE, &late, now).await.unwrap(),
        Applied::Applied
    );
    let rec = s.inbound_call(TENANT, CALL).await.unwrap().unwrap();
    assert_eq!(
        (
            rec.outcome.as_str(),
            rec.error_detail.as_str(),
            rec.talk_sec
        ),
        ("failed", detail.as_str(), 38)
    );
}

/// A caller the node refused before any answer (here 488, no codec in
/// common) has a record all the same: ended, `failed`, unanswered, with
/// the status and why, and only `call.ended` among the events.
async fn a_call_refused_before_the_answer_is_recorded(db: TestDb) {
    let s = &db.store;
    assert!(
        s.create_number(&number(TENANT, "1234", true))
            .await
            .unwrap()
    );
    let refused = EventKind::Ended(AttemptEnd {
        outcome: "failed".into(),
        error_detail: "refused with SIP 488: no common codec".into(),
        answered: false,
        ended_at: T0.plus_ms(10),
        sip_status: 488,
        ..AttemptEnd::default()
    });
    apply_all(s, CALL, TENANT, vec![start("1234"), refused]).await;
    let rec = s.inbound_call(TENANT, CALL).await.unwrap().unwrap();
    assert_eq!(rec.outcome, "failed");
    assert_eq!(rec.error_detail, "refused with SIP 488: no common codec");
    assert_eq!(rec.sip_status, 488);
    assert!(!rec.answered && rec.answered_at.is_none());
    assert_eq!(rec.ended_at, Some(T0.plus_ms(10)));
    assert_eq!((rec.talk_sec, rec.duration_sec), (0, 0));
    let names: Vec<String> = events(s, TENANT).await.into_iter().map(|e| e.0).collect();
    assert_eq!(names, ["call.ended"]);
    let data = &event_data(s, TENANT, "call.ended").await[0];
    assert_eq!(
        (&data["outcome"], &data["errorDetail"], &data["sipStatus"]),
        (
            &json!("failed"),
            &json!("refused with SIP 488: no common codec"),
            &json!(488)
        )
    );
}

use crate::store::testing::both_backends as both;

both!(
    lost_calls_wait_for_their_hangup_until_it_is_recorded,
    a_whole_inbound_call_is_recorded,
    replayed_events_apply_once,
    a_failed_end_leaves_no_trace,
    unknown_numbers_are_recorded_without_transcripts,
    oversized_fields_are_bounded,
    a_lost_node_ends_its_inbound_calls,
    a_lost_inbound_call_hung_up_on_return_keeps_its_reason,
    a_restarted_node_ends_the_inbound_calls_its_earlier_process_carried,
    a_call_refused_before_the_answer_is_recorded,
);
