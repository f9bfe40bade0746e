//! The SQLite read path against the sqlx pool it stands in for: the same
//! database read both ways must give the same rows (every column, in
//! order), the same totals and the same tenant scoping; a write must be
//! visible to the very next read; a read that misbehaves (panics, leaves a
//! transaction open, tries to write) must not poison the next one.

use std::io::Write as _;

use codeb_types::{CallId, CallStatus, E164, UtcMillis};

use super::{Cols, Param, Readers};
use crate::store::testing::{self, T0, TENANT, TestDb};
use crate::store::{
    CallFilter, CallRow, NewCall, Store, StoreError, TranscriptFilter, TranscriptRecord,
    TranscriptRow, on_pool,
};

const OTHER: &str = "other.example";

/// Renders every field (Debug), so two paths agree only if every column
/// was read into the right field.
fn render_call(c: &CallRow<'_>, out: &mut Vec<u8>) -> serde_json::Result<()> {
    write!(out, "{c:?}").map_err(serde_json::Error::io)
}

fn render_transcript(t: &TranscriptRow<'_>, out: &mut Vec<u8>) -> serde_json::Result<()> {
    write!(out, "{t:?}").map_err(serde_json::Error::io)
}

fn call(n: u32, tenant: &str) -> NewCall {
    let b = n.to_be_bytes();
    NewCall {
        call_id: CallId::from_random([b[0], b[1], b[2], b[3], 0xab, 0xcd]),
        tenant: tenant.into(),
        requested_by: format!("user \"{n}\" \u{e9}\\"),
        phone: E164::parse(&format!("+1555{:07}", n)).unwrap(),
        display_name: format!("Name {n}\n\t<b>"),
        max_seconds: 60 + i64::from(n),
        status: CallStatus::ALL[n as usize % CallStatus::ALL.len()],
        // Some share a creation time, so the call_id tie-break matters.
        created_at: T0.plus_ms(i64::from(n / 3) * 1000),
        scheduled_for: n.is_multiple_of(5).then(|| T0.plus_ms(3_600_000)),
        next_attempt_at: T0,
        ..testing::new_call(0, i64::from(n % 4))
    }
}

/// 90 calls in TENANT and 10 in OTHER, with the nullable columns filled on
/// some rows so both NULL and values are read.
async fn seed_calls(s: &Store) {
    let mut calls: Vec<NewCall> = (0..90).map(|n| call(n, TENANT)).collect();
    calls.extend((90..100).map(|n| call(n, OTHER)));
    s.seed_calls(&calls).await.unwrap();
    on_pool!(s, |pool| {
        sqlx::query(
            "UPDATE calls SET dispatched_at = created_at + 1, answered_at = created_at + 2, \
             ended_at = created_at + 3, ended_reason = 'completed', duration_sec = 42, \
             trunk_id = 'tr_0123456789abcdef', transcript_path = 'a/b.txt', \
             error_detail = 'x\u{1}y', attempt = 2 WHERE max_seconds % 3 = 0",
        )
        .execute(pool)
        .await
        .unwrap();
    });
}

async fn calls_both_ways(
    s: &Store,
    tenant: &str,
    filter: &CallFilter,
    limit: i64,
    offset: i64,
) -> (Vec<u8>, i64, Vec<u8>, i64) {
    let fast = s
        .list_calls_json(tenant, filter, limit, offset, render_call)
        .await
        .unwrap();
    let page = s.list_calls(tenant, filter, limit, offset).await.unwrap();
    let mut slow = Vec::new();
    for (i, c) in page.items.iter().enumerate() {
        if i > 0 {
            slow.push(b',');
        }
        render_call(&c.as_row(), &mut slow).unwrap();
    }
    (fast.items().to_vec(), fast.total, slow, page.total)
}

#[tokio::test]
async fn call_pages_match_the_pool() {
    let db = TestDb::sqlite().await;
    let s = &db.store;
    assert!(s.readers.is_some(), "a file database gets the read path");
    seed_calls(s).await;
    let filters = [
        vec![],
        vec![CallStatus::InFlight, CallStatus::Scheduled],
        vec![CallStatus::Scheduled, CallStatus::InFlight],
        vec![CallStatus::Cancelled],
        vec![CallStatus::EndedSuccess, CallStatus::EndedSuccess],
    ];
    for statuses in filters {
        let filter = CallFilter { statuses };
        for (limit, offset) in [(50, 0), (50, 50), (500, 0), (7, 3), (10, 1000)] {
            let (fast, fast_total, slow, slow_total) =
                calls_both_ways(s, TENANT, &filter, limit, offset).await;
            assert_eq!(fast_total, slow_total, "{filter:?} {limit} {offset}");
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                String::from_utf8(slow).unwrap(),
                "{filter:?} {limit} {offset}"
            );
        }
    }
    let all = CallFilter::default();
    let (page, total, _, _) = calls_both_ways(s, TENANT, &all, 500, 0).await;
    assert_eq!(total, 90);
    let text = String::from_utf8(page).unwrap();
    assert!(text.contains("dispatched_at: Some(") && text.contains("trunk_id: None"));
    assert!(!text.contains(OTHER), "another tenant's rows stay out");
    let (_, other_total, _, _) = calls_both_ways(s, OTHER, &all, 500, 0).await;
    assert_eq!(other_total, 10);
}

fn transcript(n: u32, tenant: &str) -> TranscriptRecord {
    let vnum = n.is_multiple_of(3);
    TranscriptRecord {
        call_id: format!("oac-{n:012x}"),
        tenant: tenant.into(),
        caller_source: if vnum { "vnum" } else { "outbound-ai" }.into(),
        started_at: T0.plus_ms(i64::from(n / 2) * 60_000),
        answered_at: n.is_multiple_of(2).then(|| T0.plus_ms(1)),
        ended_at: (n % 4 != 1).then(|| T0.plus_ms(2)),
        mtime: T0.plus_ms(3),
        duration_sec: i64::from(n),
        rule: format!("rule-{}", n % 7),
        caller: vnum.then(|| format!("+3569912{n:04}")),
        phone: (!vnum).then(|| format!("+1555123{n:04}")),
        number: vnum.then(|| "+15550001111".into()),
        display_name: n
            .is_multiple_of(5)
            .then(|| format!("Renewal 100%_{n} \"q\"")),
        requested_by: Some("alex".into()),
        email: None,
        outcome: "completed".into(),
        voice: Some("Aoede".into()),
        language: None,
        model: Some("m".into()),
        trunk_id: None,
        answered: (n % 3 == 1).then_some(n.is_multiple_of(2)),
        error_detail: n.is_multiple_of(6).then(|| "boom".into()),
        tokens_total: i64::from(n) * 10,
        tokens_prompt: (n % 2 == 1).then_some(7),
        input_turns: 1,
        output_turns: 2,
        turn_count: 3,
        size: 100,
        source: vnum.then(|| "browser".into()),
        file: format!("f-{n}.txt"),
        turns: Vec::new(),
    }
}

#[tokio::test]
async fn transcript_pages_match_the_pool() {
    let db = TestDb::sqlite().await;
    let s = &db.store;
    for n in 0..60 {
        s.insert_transcript_row(&transcript(n, TENANT))
            .await
            .unwrap();
    }
    for n in 60..66 {
        s.insert_transcript_row(&transcript(n, OTHER))
            .await
            .unwrap();
    }
    let filter =
        |sources: Vec<&'static str>, q: Option<&str>, since: Option<UtcMillis>| TranscriptFilter {
            caller_sources: sources,
            q: q.map(str::to_owned),
            since,
        };
    let filters = [
        filter(vec![], None, None),
        filter(vec!["vnum", "office-tab"], None, None),
        filter(vec!["outbound-ai"], None, None),
        // FTS phrase (three characters or more) and LIKE alone (fewer).
        filter(vec![], Some("RENEWAL"), None),
        filter(vec![], Some("12"), None),
        filter(vec![], Some("100%_"), None),
        filter(vec![], Some("\"q\""), None),
        filter(vec!["vnum", "office-tab"], Some("rule-3"), None),
        filter(vec![], None, Some(T0.plus_ms(10 * 60_000))),
        filter(vec!["outbound-ai"], Some("+1555"), Some(T0.plus_ms(60_000))),
    ];
    let mut seen_rows = 0;
    for f in &filters {
        for (limit, offset) in [(50, 0), (7, 3), (500, 0), (5, 100)] {
            let fast = s
                .list_transcripts_json(TENANT, f, limit, offset, render_transcript)
                .await
                .unwrap();
            let page = s.list_transcripts(TENANT, f, limit, offset).await.unwrap();
            let mut slow = Vec::new();
            for (i, t) in page.items.iter().enumerate() {
                if i > 0 {
                    slow.push(b',');
                }
                render_transcript(&t.as_row(), &mut slow).unwrap();
            }
            assert_eq!(fast.total, page.total, "{f:?} {limit} {offset}");
            assert_eq!(fast.rows, page.items.len());
            assert_eq!(
                String::from_utf8(fast.items().to_vec()).unwrap(),
                String::from_utf8(slow).unwrap(),
                "{f:?} {limit} {offset}"
            );
            assert!(!page.items.iter().any(|t| t.tenant != TENANT));
            seen_rows += page.items.len();
        }
    }
    assert!(seen_rows > 200, "the filters select rows ({seen_rows})");
    let renewal = s
        .list_transcripts_json(
            TENANT,
            &filter(vec![], Some("renewal"), None),
            50,
            0,
            render_transcript,
        )
        .await
        .unwrap();
    assert_eq!(renewal.total, 12);
}

#[tokio::test]
async fn a_write_is_seen_by_the_next_read() {
    let db = TestDb::sqlite().await;
    let s = &db.store;
    let all = CallFilter::default();
    for n in 0..20 {
        let before = s
            .list_calls_json(TENANT, &all, 1, 0, render_call)
            .await
            .unwrap();
        assert_eq!(before.total, i64::from(n));
        let mut c = call(n, TENANT);
        c.created_at = T0.plus_ms(i64::from(n) * 1000);
        s.seed_calls(std::slice::from_ref(&c)).await.unwrap();
        let after = s
            .list_calls_json(TENANT, &all, 1, 0, render_call)
            .await
            .unwrap();
        assert_eq!(after.total, i64::from(n) + 1);
        let text = String::from_utf8(after.items().to_vec()).unwrap();
        assert!(text.contains(c.call_id.as_str()), "newest first: {text}");
    }
}

fn readers_on(db: &TestDb, threads: usize) -> Readers {
    Readers::open(&db.dir.path().join("codeb.db"), threads).unwrap()
}

async fn count_calls(r: &Readers) -> i64 {
    r.run(|c| {
        c.one_row("SELECT COUNT(*) FROM calls", &[], |r| Cols::new(r).int())
            .map(|n| n.unwrap_or(-1))
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_transaction_left_open_is_ended() {
    let db = TestDb::sqlite().await;
    // One thread, so the next read runs on the same connection.
    let r = readers_on(&db, 1);
    assert_eq!(count_calls(&r).await, 0);
    r.run(|c| {
        c.execute("BEGIN")?;
        c.one_row("SELECT COUNT(*) FROM calls", &[], |r| Cols::new(r).int())?;
        assert!(c.in_transaction());
        Ok(())
    })
    .await
    .unwrap();
    db.store.seed_calls(&[call(1, TENANT)]).await.unwrap();
    assert_eq!(count_calls(&r).await, 1, "not the old snapshot");
    r.close();
}

#[tokio::test]
async fn a_panicking_read_loses_only_its_answer() {
    let db = TestDb::sqlite().await;
    db.store.seed_calls(&[call(1, TENANT)]).await.unwrap();
    let r = readers_on(&db, 1);
    let lost = r
        .run(|c| -> crate::store::Result<()> {
            // Mid-statement: the statement is out of the cache and reading.
            c.each_row(
                "SELECT call_id FROM calls",
                &[],
                |_| -> crate::store::Result<()> { panic!("a bug in a read") },
            )
        })
        .await;
    assert!(matches!(lost, Err(StoreError::ReadPool(_))), "{lost:?}");
    db.store.seed_calls(&[call(2, TENANT)]).await.unwrap();
    assert_eq!(count_calls(&r).await, 2, "the same thread, a fresh read");
    r.close();
    let closed = r.run(|_| Ok(())).await;
    assert!(matches!(closed, Err(StoreError::ReadPool(_))), "{closed:?}");
}

#[tokio::test]
async fn readers_cannot_write() {
    let db = TestDb::sqlite().await;
    db.store.seed_calls(&[call(1, TENANT)]).await.unwrap();
    let r = readers_on(&db, 2);
    let refused = r.run(|c| Ok(c.execute("DELETE FROM calls")?)).await;
    assert!(matches!(refused, Err(StoreError::Sqlite(_))), "{refused:?}");
    assert_eq!(count_calls(&r).await, 1);
    r.close();
}

#[tokio::test]
async fn a_corrupt_row_is_an_error_not_a_panic() {
    let db = TestDb::sqlite().await;
    let s = &db.store;
    s.seed_calls(&[call(1, TENANT)]).await.unwrap();
    on_pool!(s, |pool| {
        sqlx::query("UPDATE calls SET status = 'bogus'")
            .execute(pool)
            .await
            .unwrap();
    });
    let all = CallFilter::default();
    let e = s
        .list_calls_json(TENANT, &all, 50, 0, render_call)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
    on_pool!(s, |pool| {
        sqlx::query("UPDATE calls SET status = 'scheduled', duration_sec = 'many'")
            .execute(pool)
            .await
            .unwrap();
    });
    let e = s
        .list_calls_json(TENANT, &all, 50, 0, render_call)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("duration_sec"), "{e}");
}

#[tokio::test]
async fn api_keys_are_read_fresh() {
    let db = TestDb::sqlite().await;
    let s = &db.store;
    let id = codeb_types::ApiKeyId::from_random([7; 8]);
    let created = s
        .create_api_key(&id, TENANT, "ci \"bot\"", "hash-1", "alex", T0)
        .await
        .unwrap();
    let found = s.api_key_by_hash("hash-1").await.unwrap().unwrap();
    assert_eq!(format!("{found:?}"), format!("{created:?}"));
    assert!(s.api_key_by_hash("hash-2").await.unwrap().is_none());
    s.touch_api_key(&id, T0.plus_ms(5)).await.unwrap();
    let touched = s.api_key_by_hash("hash-1").await.unwrap().unwrap();
    assert_eq!(touched.last_used_at, Some(T0.plus_ms(5)));
    assert!(s.revoke_api_key(Some(TENANT), &id, T0).await.unwrap());
    assert!(
        s.api_key_by_hash("hash-1").await.unwrap().is_none(),
        "a revoked key is gone from the very next read"
    );
}

#[tokio::test]
async fn parameters_are_checked_and_bound() {
    let db = TestDb::sqlite().await;
    let r = readers_on(&db, 1);
    let wrong = r
        .run(|c| c.one_row("SELECT ?1 + ?2", &[Param::Int(1)], |r| Cols::new(r).int()))
        .await;
    assert!(matches!(wrong, Err(StoreError::Sqlite(_))), "{wrong:?}");
    let echoed = r
        .run(|c| {
            c.one_row(
                "SELECT ?1, ?2, ?3, ?4",
                &[
                    Param::Text("h\u{e9} \"x\"\0y"),
                    Param::Int(i64::MIN),
                    Param::Null,
                    Param::Text(""),
                ],
                |r| {
                    let mut c = Cols::new(r);
                    let out = (
                        c.text()?.to_owned(),
                        c.int()?,
                        c.opt_text()?.map(str::to_owned),
                        c.text()?.to_owned(),
                    );
                    c.finish()?;
                    Ok(out)
                },
            )
        })
        .await
        .unwrap();
    assert_eq!(
        echoed,
        Some(("h\u{e9} \"x\"\0y".to_owned(), i64::MIN, None, String::new()))
    );
    let bad = r
        .run(|c| {
            c.one_row("SELECT CAST(x'ff' AS TEXT)", &[], |r| {
                Ok(Cols::new(r).text()?.to_owned())
            })
        })
        .await;
    assert!(bad.unwrap_err().to_string().contains("UTF-8"));
    // The unchecked read gives the stored bytes as they are, and refuses
    // what `text` refuses apart from UTF-8.
    let raw = r
        .run(|c| {
            c.one_row("SELECT CAST(x'ff41' AS TEXT), ''", &[], |r| {
                let mut c = Cols::new(r);
                let out = (c.text_bytes()?.to_vec(), c.text_bytes()?.to_vec());
                c.finish()?;
                Ok(out)
            })
        })
        .await
        .unwrap();
    assert_eq!(raw, Some((vec![0xff, b'A'], Vec::new())));
    for sql in ["SELECT NULL", "SELECT 7"] {
        let refused = r
            .run(move |c| c.one_row(sql, &[], |r| Ok(Cols::new(r).text_bytes()?.to_vec())))
            .await;
        assert!(refused.is_err(), "{sql}");
    }
    let not_int = r
        .run(|c| c.one_row("SELECT 'x'", &[], |r| Cols::new(r).int()))
        .await;
    assert!(not_int.unwrap_err().to_string().contains("integer"));
    let short = r
        .run(|c| c.one_row("SELECT 1, 2", &[], |r| Cols::new(r).finish()))
        .await;
    assert!(short.unwrap_err().to_string().contains("0 of 2"));
    r.close();
}

/// A parameter the plan depends on is bound again only when its value
/// changes (binding it expires the statement under STAT4, and the next
/// step re-prepares it: a list page's query did, on every request).
#[tokio::test]
async fn unchanged_parameters_are_not_bound_again() {
    let db = TestDb::sqlite().await;
    seed_calls(&db.store).await;
    let r = readers_on(&db, 1);
    const PAGE: &str = "SELECT call_id FROM calls WHERE tenant = ?1 \
                        ORDER BY created_at DESC, call_id DESC LIMIT ?2 OFFSET ?3";
    let runs = r
        .run(|c| {
            let mut out = Vec::new();
            for (tenant, offset) in [
                (TENANT, 0),
                (TENANT, 0),
                (TENANT, 0),
                (TENANT, 0),
                (OTHER, 5),
            ] {
                let mut rows = 0;
                c.each_row(
                    PAGE,
                    &[Param::Text(tenant), Param::Int(50), Param::Int(offset)],
                    |_| -> crate::store::Result<()> {
                        rows += 1;
                        Ok(())
                    },
                )?;
                out.push((rows, c.reprepares(PAGE).unwrap_or(-1)));
            }
            Ok(out)
        })
        .await
        .unwrap();
    let (rows, reprepares): (Vec<_>, Vec<_>) = runs.into_iter().unzip();
    assert_eq!(rows, [50, 50, 50, 50, 5]);
    assert_eq!(reprepares[1], reprepares[3], "same values: {reprepares:?}");
    r.close();
}

fn on_reader_thread() -> bool {
    std::thread::current()
        .name()
        .is_some_and(|n| n.starts_with("sqlite-read-"))
}

/// A short read runs on the caller's thread, sees every write that has
/// returned, cannot write, and leaves no transaction open behind it.
#[tokio::test]
async fn short_reads_run_here_and_fresh() {
    let db = TestDb::sqlite().await;
    let r = readers_on(&db, 1);
    let count = |c: &super::Conn| {
        c.one_row("SELECT COUNT(*) FROM calls", &[], |r| Cols::new(r).int())
            .map(|n| (n.unwrap_or(-1), on_reader_thread()))
    };
    assert_eq!(r.run_short(count).await.unwrap(), (0, false));
    // One inline connection: the next short read gets this one back.
    r.run_short(|c| {
        c.execute("BEGIN")?;
        c.one_row("SELECT COUNT(*) FROM calls", &[], |r| Cols::new(r).int())?;
        Ok(())
    })
    .await
    .unwrap();
    db.store.seed_calls(&[call(1, TENANT)]).await.unwrap();
    assert_eq!(
        r.run_short(count).await.unwrap(),
        (1, false),
        "the transaction left open was ended: not the old snapshot"
    );
    let refused = r.run_short(|c| Ok(c.execute("DELETE FROM calls")?)).await;
    assert!(matches!(refused, Err(StoreError::Sqlite(_))), "{refused:?}");
    assert_eq!(r.run_short(count).await.unwrap(), (1, false));
    r.close();
    let closed = r.run_short(|_| Ok(())).await;
    assert!(matches!(closed, Err(StoreError::ReadPool(_))), "{closed:?}");
}

/// A short read that finds the database locked is done over by a reader
/// thread (which waits for locks), not failed; other errors are answers.
#[tokio::test]
async fn a_busy_short_read_goes_to_a_reader() {
    let db = TestDb::sqlite().await;
    let r = readers_on(&db, 1);
    let tries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = tries.clone();
    let done = r
        .run_short(move |_| {
            if t.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                return Err(StoreError::Sqlite(super::SqliteError {
                    code: libsqlite3_sys::SQLITE_BUSY,
                    message: "database is locked".into(),
                }));
            }
            Ok(on_reader_thread())
        })
        .await
        .unwrap();
    assert!(done, "the second try ran on a reader thread");
    assert_eq!(tries.load(std::sync::atomic::Ordering::SeqCst), 2);
    let failed = r
        .run_short(|c| c.one_row("SELECT nope", &[], |r| Cols::new(r).int()))
        .await;
    assert!(matches!(failed, Err(StoreError::Sqlite(_))), "{failed:?}");
    r.close();
}

/// With every inline connection taken, a short read is handed to the
/// reader threads instead of waiting for one.
#[tokio::test]
async fn short_reads_beyond_the_inline_connections_are_handed_off() {
    let db = TestDb::sqlite().await;
    let r = std::sync::Arc::new(readers_on(&db, 1));
    let inner = r.clone();
    let nested = r
        .run_short(move |_| {
            // Inside a short read the only inline connection is taken, so
            // this one is handed off (awaited on a thread and runtime of
            // its own, as a read cannot await).
            let inner = inner.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                rt.block_on(inner.run_short(|_| Ok(on_reader_thread())))
            })
            .join()
            .unwrap()
        })
        .await
        .unwrap();
    assert!(nested, "handed to a reader thread");
    r.close();
}
