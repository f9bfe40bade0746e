//! The list pages against the single-row reads, through every write path
//! of calls and transcripts, on SQLite (where list pages come from the
//! cache of rendered rows) and on PostgreSQL (per-field rendering). After
//! each write:
//!
//! - every row of the page is byte for byte what `GET /calls/{id}` answers
//!   for that call (serde's `CallView` of the row read by the pool), and
//!   what the list's own per-field renderer makes of that record; a
//!   transcript row is what both make of the record `GET /transcripts/{id}`
//!   reads;
//! - the page read again (from the cache, on SQLite) is the same bytes;
//! - the row written has a version no row has had before (the trigger that
//!   the cache's freshness rests on fired on this path).
//!
//! Each page is read before the write too, so on SQLite the cache holds the
//! old row when the new one is asked for: a write path that kept a version
//! would show here as a page with the old bytes.

use std::collections::HashSet;

use codeb_types::{CallId, CallStatus, UtcMillis};

use crate::api::calls::{CallView, render_call};
use crate::api::transcripts::{TranscriptListItem, render_item};
use crate::store::testing::{self, NODE, T0, TENANT, TestDb, ended};
use crate::store::{
    CallFilter, DispatchCall, EventKind, NewCall, Speaker, Store, SwitchEvent, TranscriptFilter,
    TranscriptRecord, Turn, on_pool,
};

/// Names with quotes, a newline and non-ASCII, for the JSON checks.
fn new_call(n: u8, retries: i64) -> NewCall {
    NewCall {
        requested_by: "alex \"ops\"".into(),
        display_name: format!("Reminder {n}\n\u{e9}"),
        created_at: T0.plus_ms(i64::from(n)),
        ..testing::new_call(n, retries)
    }
}

/// The versions every row has had, to check each write gives a new one.
#[derive(Default)]
struct Versions(HashSet<i64>);

impl Versions {
    async fn new_for(&mut self, s: &Store, table: &str, id: &str, what: &str) {
        let sql = format!("SELECT row_version FROM {table} WHERE call_id = $1");
        let v: i64 = on_pool!(s, |pool| {
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_one(pool)
                .await
                .unwrap()
        });
        assert!(v > 0, "{what}: {table} {id} has version {v}");
        assert!(
            self.0.insert(v),
            "{what}: {table} {id} kept or reused version {v}"
        );
    }
}

/// A calls page (unfiltered and by `status`), read twice, against each
/// call read alone.
async fn calls_page_is_fresh(s: &Store, status: CallStatus, what: &str) {
    for filter in [
        CallFilter::default(),
        CallFilter {
            statuses: vec![status],
        },
    ] {
        let page = s
            .list_calls_json(TENANT, &filter, 50, 0, render_call)
            .await
            .unwrap();
        let again = s
            .list_calls_json(TENANT, &filter, 50, 0, render_call)
            .await
            .unwrap();
        let listed = s.list_calls(TENANT, &filter, 50, 0).await.unwrap();
        assert_eq!(page.total, listed.total, "{what}");
        assert_eq!(page.rows, listed.items.len(), "{what}");
        let mut alone = Vec::new();
        for c in &listed.items {
            let one = s.call(TENANT, &c.call_id).await.unwrap().unwrap();
            // What `GET /calls/{id}` answers.
            let get = serde_json::to_vec(&CallView::from(&one.as_row())).unwrap();
            let mut by_field = Vec::new();
            render_call(&one.as_row(), &mut by_field).unwrap();
            assert_eq!(get, by_field, "{what}: {}", one.call_id);
            alone.push(get);
        }
        assert_page(what, &filter, page.items(), again.items(), &alone);
    }
}

/// A page read twice is the same both times, and is its rows read one by
/// one, comma-joined as the API joins them.
fn assert_page(
    what: &str,
    filter: &dyn std::fmt::Debug,
    page: &[u8],
    again: &[u8],
    alone: &[Vec<u8>],
) {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert_eq!(text(page), text(again), "{what}: read again");
    assert_eq!(text(page), text(&alone.join(&b',')), "{what}: {filter:?}");
}

/// A transcripts page read twice, against each transcript read alone.
async fn transcripts_page_is_fresh(s: &Store, what: &str) {
    let filters = [
        TranscriptFilter::default(),
        TranscriptFilter {
            caller_sources: vec!["outbound-ai"],
            ..TranscriptFilter::default()
        },
        TranscriptFilter {
            q: Some("remind".into()),
            ..TranscriptFilter::default()
        },
    ];
    for filter in filters {
        let page = s
            .list_transcripts_json(TENANT, &filter, 50, 0, render_item)
            .await
            .unwrap();
        let again = s
            .list_transcripts_json(TENANT, &filter, 50, 0, render_item)
            .await
            .unwrap();
        let listed = s.list_transcripts(TENANT, &filter, 50, 0).await.unwrap();
        assert_eq!(page.total, listed.total, "{what}");
        let mut alone = Vec::new();
        for t in &listed.items {
            let one = s.transcript(TENANT, &t.call_id).await.unwrap().unwrap();
            let serde = serde_json::to_vec(&TranscriptListItem::from(&one.as_row())).unwrap();
            let mut by_field = Vec::new();
            render_item(&one.as_row(), &mut by_field).unwrap();
            assert_eq!(serde, by_field, "{what}: {}", one.call_id);
            alone.push(serde);
        }
        assert_page(what, &filter, page.items(), again.items(), &alone);
    }
}

struct Walk<'a> {
    s: &'a Store,
    versions: Versions,
    seq: i64,
}

impl Walk<'_> {
    /// Reads both lists (filling the cache), runs nothing else: call after
    /// each write with the row written.
    async fn call_written(&mut self, id: &CallId, what: &str) {
        let status = self.s.call(TENANT, id).await.unwrap().unwrap().status;
        self.versions
            .new_for(self.s, "calls", id.as_str(), what)
            .await;
        calls_page_is_fresh(self.s, status, what).await;
        transcripts_page_is_fresh(self.s, what).await;
    }

    async fn transcript_written(&mut self, id: &str, what: &str) {
        self.versions.new_for(self.s, "transcripts", id, what).await;
        transcripts_page_is_fresh(self.s, what).await;
        calls_page_is_fresh(self.s, CallStatus::Scheduled, what).await;
    }

    async fn event(&mut self, call: &DispatchCall, kind: EventKind, now: UtcMillis) {
        self.seq += 1;
        let ev = SwitchEvent {
            journal_id: "j1".into(),
            seq: self.seq,
            at: T0.plus_ms(self.seq * 1000),
            call_id: call.call_id.to_string(),
            attempt: call.attempt,
            tenant: TENANT.into(),
            kind,
        };
        self.s.apply_switch_event(NODE, &ev, now).await.unwrap();
    }
}

async fn every_write_path_shows_in_the_lists(db: TestDb) {
    let s = &db.store;
    let mut w = Walk {
        s,
        versions: Versions::default(),
        seq: 0,
    };
    // Rows around the ones written, so pages have neighbours.
    for n in 100..110u8 {
        let mut c = new_call(n, 0);
        // Not due within the test: only the calls below are claimed.
        c.scheduled_for = Some(T0.plus_ms(86_400_000));
        c.next_attempt_at = T0.plus_ms(86_400_000);
        s.insert_call(&c).await.unwrap();
        w.call_written(&c.call_id, "neighbour inserted").await;
    }

    // Scheduled, then cancelled by hangup.
    let mut c = new_call(1, 0);
    c.scheduled_for = Some(T0.plus_ms(3_600_000));
    c.next_attempt_at = T0.plus_ms(3_600_000);
    s.insert_call(&c).await.unwrap();
    w.call_written(&c.call_id, "scheduled call inserted").await;
    s.hangup_unplaced(TENANT, &c.call_id, T0.plus_ms(10))
        .await
        .unwrap();
    w.call_written(&c.call_id, "hangup").await;

    // Dispatched, placed, answered, talked, ended without answer (retry
    // pending), claimed again by the scheduler, refused by the node.
    let c = new_call(2, 1);
    s.insert_call(&c).await.unwrap();
    w.call_written(&c.call_id, "immediate call inserted").await;
    let claimed = s.claim_call(&c.call_id, T0).await.unwrap().unwrap();
    w.call_written(&c.call_id, "claimed").await;
    assert!(s.set_dispatch_node(&claimed, NODE, None, T0).await.unwrap());
    w.call_written(&c.call_id, "node recorded").await;
    assert!(
        s.mark_placed(&claimed, "tr_0123456789abcdef", "", T0)
            .await
            .unwrap()
    );
    w.call_written(&c.call_id, "placed").await;
    s.reset_switch_cursor(NODE, "j1", T0).await.unwrap();
    let now = T0.plus_ms(10_000);
    w.event(
        &claimed,
        EventKind::Answered {
            trunk_id: "tr_0123456789abcdef".into(),
            answer_ms: 2755,
        },
        now,
    )
    .await;
    w.call_written(&c.call_id, "answered event").await;
    w.event(
        &claimed,
        EventKind::Turn {
            speaker: Speaker::Ai,
            text: "Hi, a reminder.".into(),
            at_ms: 500,
        },
        now,
    )
    .await;
    w.event(
        &claimed,
        EventKind::Usage {
            input: 100,
            output: 50,
        },
        now,
    )
    .await;
    w.call_written(&c.call_id, "turn and usage events").await;
    w.event(&claimed, ended("no-answer", false), now).await;
    w.call_written(&c.call_id, "ended, retry pending").await;
    let due = T0.plus_ms(3_600_000);
    let retry = s.claim_due_calls(due, 10).await.unwrap();
    assert_eq!(retry.len(), 1);
    w.call_written(&c.call_id, "claimed by the scheduler").await;
    s.dispatch_failed(&retry[0], "refused \"by\" the node", due)
        .await
        .unwrap();
    w.call_written(&c.call_id, "dispatch failed").await;

    // Placed and answered, ends with turns: the call and its transcript
    // are written in one transaction.
    let c = new_call(3, 0);
    s.insert_call(&c).await.unwrap();
    let claimed = s.claim_call(&c.call_id, T0).await.unwrap().unwrap();
    s.set_dispatch_node(&claimed, NODE, None, T0).await.unwrap();
    s.mark_placed(&claimed, "", "", T0).await.unwrap();
    w.call_written(&c.call_id, "second call placed").await;
    w.event(
        &claimed,
        EventKind::Turn {
            speaker: Speaker::Caller,
            text: "Thanks \\ bye".into(),
            at_ms: 900,
        },
        now,
    )
    .await;
    w.event(&claimed, ended("finished", true), now).await;
    w.call_written(&c.call_id, "ended with a transcript").await;
    w.transcript_written(c.call_id.as_str(), "transcript from the end event")
        .await;

    // On a node that is lost.
    let c = new_call(4, 0);
    s.insert_call(&c).await.unwrap();
    let claimed = s.claim_call(&c.call_id, T0).await.unwrap().unwrap();
    s.set_dispatch_node(&claimed, NODE, None, T0).await.unwrap();
    w.call_written(&c.call_id, "third call handed to the node")
        .await;
    assert_eq!(
        s.fail_calls_on_node(NODE, crate::store::Lost::All, "node lost", now)
            .await
            .unwrap(),
        1
    );
    w.call_written(&c.call_id, "node lost").await;

    // A transcript saved, then replaced (delete and insert of the same id).
    let mut t = TranscriptRecord {
        call_id: "oac-00000000aaaa".into(),
        tenant: TENANT.into(),
        caller_source: "outbound-ai".into(),
        started_at: T0.plus_ms(5),
        mtime: T0,
        duration_sec: 30,
        rule: "reminder".into(),
        phone: Some("+15551234567".into()),
        outcome: "finished".into(),
        tokens_total: 10,
        turns: vec![Turn {
            speaker: "AI".into(),
            text: "Hello".into(),
            ts: T0,
        }],
        ..TranscriptRecord::default()
    };
    s.save_transcript(t.clone(), T0).await.unwrap();
    w.transcript_written(&t.call_id, "transcript saved").await;
    t.outcome = "replaced \"outcome\"".into();
    t.display_name = Some("Now named".into());
    s.save_transcript(t.clone(), T0.plus_ms(1)).await.unwrap();
    w.transcript_written(&t.call_id, "transcript replaced")
        .await;

    // A write no store method makes (an operator's fix, a later
    // migration): the trigger still gives the rows new versions.
    on_pool!(s, |pool| {
        sqlx::query("UPDATE calls SET error_detail = 'fixed by hand' WHERE call_id = $1")
            .bind(c.call_id.as_str())
            .execute(pool)
            .await
            .unwrap();
        sqlx::query("UPDATE transcripts SET rule = 'fixed by hand' WHERE call_id = $1")
            .bind(&t.call_id)
            .execute(pool)
            .await
            .unwrap();
    });
    w.call_written(&c.call_id, "call updated by hand").await;
    w.transcript_written(&t.call_id, "transcript updated by hand")
        .await;
}

/// Rows written before migration 0013 get versions from it, distinct
/// across both tables; the counter continues above them; their list rows
/// are what the single reads give.
async fn existing_rows_get_versions(db: TestDb) {
    // A database as the builds before 0013 left it: a new one beside the
    // harness's (which is migrated already), migrated up to 0012.
    let url = match &db.store.pool {
        super::super::Pool::Sqlite(_) => {
            format!("sqlite://{}/old.db?mode=rwc", db.dir.path().display())
        }
        super::super::Pool::Postgres(_) => {
            let admin = std::env::var("CODEB_TEST_PG_URL").unwrap();
            crate::store::testing::create_pg_database(&admin).await
        }
    };
    let s = Store::connect(&url, db.dir.path()).await.unwrap();
    match &s.pool {
        super::super::Pool::Sqlite(pool) => super::super::SQLITE_MIGRATIONS
            .run_to(12, pool)
            .await
            .unwrap(),
        super::super::Pool::Postgres(pool) => super::super::POSTGRES_MIGRATIONS
            .run_to(12, pool)
            .await
            .unwrap(),
    }
    let calls: Vec<NewCall> = (0..20u8).map(|n| new_call(n, 0)).collect();
    s.seed_calls(&calls).await.unwrap();
    for n in 0..5u32 {
        let t = TranscriptRecord {
            call_id: format!("oac-0000000000{n:02}"),
            tenant: TENANT.into(),
            caller_source: "vnum".into(),
            started_at: T0.plus_ms(i64::from(n)),
            mtime: T0,
            rule: "remind".into(),
            number: Some("+15550000000".into()),
            outcome: "finished".into(),
            ..TranscriptRecord::default()
        };
        s.insert_transcript_row(&t).await.unwrap();
    }
    s.migrate().await.unwrap();
    // The store opened before the migration still reads (its readers and
    // cache are as new).
    let versions: Vec<i64> = on_pool!(&s, |pool| {
        sqlx::query_scalar(
            "SELECT row_version FROM calls UNION ALL SELECT row_version FROM transcripts",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    });
    assert_eq!(versions.len(), 25);
    let unique: HashSet<i64> = versions.iter().copied().collect();
    assert_eq!(unique.len(), versions.len(), "{versions:?}");
    assert!(versions.iter().all(|&v| v > 0), "{versions:?}");
    calls_page_is_fresh(&s, CallStatus::Scheduled, "migrated").await;
    transcripts_page_is_fresh(&s, "migrated").await;
    let mut w = Walk {
        s: &s,
        versions: Versions(unique),
        seq: 0,
    };
    let c = new_call(50, 0);
    s.insert_call(&c).await.unwrap();
    w.call_written(&c.call_id, "inserted after the migration")
        .await;
    let max: i64 = on_pool!(&s, |pool| {
        sqlx::query_scalar("SELECT row_version FROM calls WHERE call_id = $1")
            .bind(c.call_id.as_str())
            .fetch_one(pool)
            .await
            .unwrap()
    });
    assert!(versions.iter().all(|&v| v < max), "{max} {versions:?}");
    s.close().await;
}

use crate::store::testing::both_backends as both;

both!(
    every_write_path_shows_in_the_lists,
    existing_rows_get_versions
);
