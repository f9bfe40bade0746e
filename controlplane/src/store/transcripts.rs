//! Transcripts: one per call, stored twice on purpose. The database row
//! (metadata plus the turns as JSON) serves the API; the text file in
//! `<data>/transcripts/`, named as the v1 spec names it, is what operators
//! grep and archive. The file is written first (atomically, via rename), so
//! a row never points at a missing file.

use std::path::PathBuf;
use std::sync::Arc;

use codeb_types::UtcMillis;
use serde::{Deserialize, Serialize};

use super::row_cache::{self, RowCache};
use super::sqlite_read::{self, Cols, Conn, Param, Row};
use super::tx::{StoreTx, on_tx};
use super::{
    JsonPage, Page, Pool, Result, RowExt, Store, StoreError, col, like_escape, ms, on_pool, opt_ms,
};

/// One utterance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// `AI` or `Caller`.
    pub speaker: String,
    pub text: String,
    #[serde(with = "epoch_ms")]
    pub ts: UtcMillis,
}

/// Turns are stored as JSON with epoch-millisecond stamps.
mod epoch_ms {
    use codeb_types::UtcMillis;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &UtcMillis, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(t.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<UtcMillis, D::Error> {
        i64::deserialize(d).map(UtcMillis)
    }
}

/// Transcript metadata (without turns) plus the turns when loaded singly.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TranscriptRecord {
    pub call_id: String,
    pub tenant: String,
    /// `outbound-ai`, `vnum` or `office-tab`.
    pub caller_source: String,
    pub started_at: UtcMillis,
    pub answered_at: Option<UtcMillis>,
    pub ended_at: Option<UtcMillis>,
    pub mtime: UtcMillis,
    pub duration_sec: i64,
    pub rule: String,
    pub caller: Option<String>,
    pub phone: Option<String>,
    pub number: Option<String>,
    pub display_name: Option<String>,
    pub requested_by: Option<String>,
    pub email: Option<String>,
    pub outcome: String,
    pub voice: Option<String>,
    pub language: Option<String>,
    pub model: Option<String>,
    pub trunk_id: Option<String>,
    pub answered: Option<bool>,
    pub error_detail: Option<String>,
    pub tokens_total: i64,
    pub tokens_prompt: Option<i64>,
    pub input_turns: i64,
    pub output_turns: i64,
    pub turn_count: i64,
    pub size: i64,
    pub source: Option<String>,
    pub file: String,
    pub turns: Vec<Turn>,
}

/// Which transcripts a list shows.
#[derive(Debug, Clone, Default)]
pub struct TranscriptFilter {
    /// `caller_source` values to include; empty: all.
    pub caller_sources: Vec<&'static str>,
    /// Case-insensitive substring of caller, number, displayName or rule.
    pub q: Option<String>,
    pub since: Option<UtcMillis>,
}

macro_rules! list_columns {
    () => {
        "call_id, tenant, caller_source, started_at, answered_at, ended_at, \
    mtime, duration_sec, rule, caller, phone, number, display_name, requested_by, email, \
    outcome, voice, language, model, trunk_id, answered, error_detail, tokens_total, \
    tokens_prompt, input_turns, output_turns, turn_count, size, source, file"
    };
}

/// A transcript as a list page reads it: the text borrows the row it came
/// from (SQLite's row buffer on the read path, a `TranscriptRecord`
/// otherwise). Fields are in the order `list_columns!` selects them.
#[derive(Debug, Clone, Copy)]
pub struct TranscriptRow<'a> {
    pub call_id: &'a str,
    pub tenant: &'a str,
    pub caller_source: &'a str,
    pub started_at: UtcMillis,
    pub answered_at: Option<UtcMillis>,
    pub ended_at: Option<UtcMillis>,
    pub mtime: UtcMillis,
    pub duration_sec: i64,
    pub rule: &'a str,
    pub caller: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub number: Option<&'a str>,
    pub display_name: Option<&'a str>,
    pub requested_by: Option<&'a str>,
    pub email: Option<&'a str>,
    pub outcome: &'a str,
    pub voice: Option<&'a str>,
    pub language: Option<&'a str>,
    pub model: Option<&'a str>,
    pub trunk_id: Option<&'a str>,
    pub answered: Option<bool>,
    pub error_detail: Option<&'a str>,
    pub tokens_total: i64,
    pub tokens_prompt: Option<i64>,
    pub input_turns: i64,
    pub output_turns: i64,
    pub turn_count: i64,
    pub size: i64,
    pub source: Option<&'a str>,
    pub file: &'a str,
}

impl TranscriptRecord {
    pub fn as_row(&self) -> TranscriptRow<'_> {
        TranscriptRow {
            call_id: &self.call_id,
            tenant: &self.tenant,
            caller_source: &self.caller_source,
            started_at: self.started_at,
            answered_at: self.answered_at,
            ended_at: self.ended_at,
            mtime: self.mtime,
            duration_sec: self.duration_sec,
            rule: &self.rule,
            caller: self.caller.as_deref(),
            phone: self.phone.as_deref(),
            number: self.number.as_deref(),
            display_name: self.display_name.as_deref(),
            requested_by: self.requested_by.as_deref(),
            email: self.email.as_deref(),
            outcome: &self.outcome,
            voice: self.voice.as_deref(),
            language: self.language.as_deref(),
            model: self.model.as_deref(),
            trunk_id: self.trunk_id.as_deref(),
            answered: self.answered,
            error_detail: self.error_detail.as_deref(),
            tokens_total: self.tokens_total,
            tokens_prompt: self.tokens_prompt,
            input_turns: self.input_turns,
            output_turns: self.output_turns,
            turn_count: self.turn_count,
            size: self.size,
            source: self.source.as_deref(),
            file: &self.file,
        }
    }
}

/// Renders one transcript of a list page as one JSON value.
pub type RenderTranscript = fn(&TranscriptRow<'_>, &mut Vec<u8>) -> serde_json::Result<()>;

/// Reads a row selected with `list_columns!` and then `row_version`, in
/// place.
fn transcript_row<'r>(row: &'r Row<'_>) -> Result<(TranscriptRow<'r>, i64)> {
    let mut c = Cols::new(row);
    let t = TranscriptRow {
        call_id: c.text()?,
        tenant: c.text()?,
        caller_source: c.text()?,
        started_at: UtcMillis(c.int()?),
        answered_at: c.opt_int()?.map(UtcMillis),
        ended_at: c.opt_int()?.map(UtcMillis),
        mtime: UtcMillis(c.int()?),
        duration_sec: c.int()?,
        rule: c.text()?,
        caller: c.opt_text()?,
        phone: c.opt_text()?,
        number: c.opt_text()?,
        display_name: c.opt_text()?,
        requested_by: c.opt_text()?,
        email: c.opt_text()?,
        outcome: c.text()?,
        voice: c.opt_text()?,
        language: c.opt_text()?,
        model: c.opt_text()?,
        trunk_id: c.opt_text()?,
        answered: c.opt_int()?.map(|v| v != 0),
        error_detail: c.opt_text()?,
        tokens_total: c.int()?,
        tokens_prompt: c.opt_int()?,
        input_turns: c.int()?,
        output_turns: c.int()?,
        turn_count: c.int()?,
        size: c.int()?,
        source: c.opt_text()?,
        file: c.text()?,
    };
    let version = c.int()?;
    c.finish()?;
    Ok((t, version))
}

/// A transcript list's criteria, as bound to the queries (absent ones are
/// NULL, so each query shape is one statement).
#[derive(Debug, Clone)]
struct ListArgs {
    tenant: String,
    since: Option<i64>,
    /// `%q%` for LIKE, wildcards escaped.
    pattern: Option<String>,
    /// `"q"` for the SQLite FTS5 trigram index (three characters or more).
    phrase: Option<String>,
    src_a: Option<&'static str>,
    src_b: Option<&'static str>,
    limit: i64,
    offset: i64,
}

impl ListArgs {
    fn new(tenant: &str, filter: &TranscriptFilter, limit: i64, offset: i64) -> ListArgs {
        let q = filter.q.as_ref().map(|q| q.to_lowercase());
        let src_a = filter.caller_sources.first().copied();
        ListArgs {
            tenant: tenant.to_owned(),
            since: filter.since.map(|t| t.0),
            pattern: q.as_ref().map(|q| format!("%{}%", like_escape(q))),
            phrase: q
                .as_ref()
                .filter(|q| q.chars().count() >= 3)
                .map(|q| format!("\"{}\"", q.replace('"', "\"\""))),
            src_a,
            src_b: filter.caller_sources.get(1).copied().or(src_a),
            limit,
            offset,
        }
    }

    /// Without a text or time criterion the total comes from the
    /// trigger-maintained counts.
    fn counted(&self) -> bool {
        self.pattern.is_none() && self.since.is_none()
    }
}

// SQLite's statements, in `?N` form (numbered parameters, so the FTS
// phrase can be ?8 wherever it appears), for the read path and the pool.
// `q` is a case-insensitive substring: the FTS5 trigram index narrows rows
// first (a quoted phrase matches exactly that substring, for three or more
// characters; CROSS JOIN makes SQLite read the matches first instead of
// walking every row of the tenant) and LIKE confirms.
macro_rules! sqlite_filter {
    () => {
        "tenant = ?1 AND (?2 IS NULL OR started_at >= ?2) \
         AND (?3 IS NULL OR transcripts.search_text LIKE ?3 ESCAPE '\\') \
         AND (?4 IS NULL OR caller_source = ?4 OR caller_source = ?5)"
    };
}
macro_rules! sqlite_fts_from {
    () => {
        " FROM transcripts_fts CROSS JOIN transcripts \
         ON transcripts.rowid = transcripts_fts.rowid \
         WHERE transcripts_fts MATCH ?8 AND "
    };
}
const SQLITE_COUNTED: &str = "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM transcript_counts \
     WHERE tenant = ?1 AND (?2 IS NULL OR caller_source = ?2 OR caller_source = ?3)";
const SQLITE_COUNT_FTS: &str = concat!("SELECT COUNT(*)", sqlite_fts_from!(), sqlite_filter!());
const SQLITE_COUNT: &str = concat!("SELECT COUNT(*) FROM transcripts WHERE ", sqlite_filter!());
const SQLITE_PAGE_FTS: &str = concat!(
    "SELECT ",
    list_columns!(),
    ", row_version",
    sqlite_fts_from!(),
    sqlite_filter!(),
    " ORDER BY started_at DESC, call_id DESC LIMIT ?6 OFFSET ?7"
);
const SQLITE_PAGE: &str = concat!(
    "SELECT ",
    list_columns!(),
    ", row_version FROM transcripts WHERE ",
    sqlite_filter!(),
    " ORDER BY started_at DESC, call_id DESC LIMIT ?6 OFFSET ?7"
);

// Pages without a text criterion read each row's id and version first
// (`row_cache`); with no criterion but the tenant, from the list index
// alone. The rows themselves are read (with SQLITE_PAGE or SQLITE_PAGE_ALL)
// only when the cache lacks one.
const SQLITE_KEYS: &str = concat!(
    "SELECT call_id, row_version FROM transcripts WHERE ",
    sqlite_filter!(),
    " ORDER BY started_at DESC, call_id DESC LIMIT ?6 OFFSET ?7"
);
const SQLITE_KEYS_ALL: &str = "SELECT call_id, row_version FROM transcripts WHERE tenant = ?1 \
     ORDER BY started_at DESC, call_id DESC LIMIT ?2 OFFSET ?3";
const SQLITE_PAGE_ALL: &str = concat!(
    "SELECT ",
    list_columns!(),
    ", row_version FROM transcripts WHERE tenant = ?1 \
     ORDER BY started_at DESC, call_id DESC LIMIT ?2 OFFSET ?3"
);

/// A transcript list page on a SQLite reader connection: total and rows
/// from one snapshot; without a text criterion the rows' JSON comes from
/// the cache of rendered rows where it holds their versions (`row_cache`).
fn read_transcripts(
    conn: &Conn,
    cache: &RowCache,
    a: &ListArgs,
    render: RenderTranscript,
) -> Result<JsonPage> {
    // ?1..?8 as the statements number them; a statement is given exactly
    // as many as its highest number.
    let all = [
        Param::Text(&a.tenant),
        a.since.into(),
        a.pattern.as_deref().into(),
        a.src_a.into(),
        a.src_b.into(),
        Param::Int(a.limit),
        Param::Int(a.offset),
        a.phrase.as_deref().into(),
    ];
    sqlite_read::snapshot(conn, || {
        let (sql, params) = if a.counted() {
            (
                SQLITE_COUNTED,
                &[Param::Text(&a.tenant), a.src_a.into(), a.src_b.into()][..],
            )
        } else if a.phrase.is_some() {
            (SQLITE_COUNT_FTS, &all[..])
        } else {
            (SQLITE_COUNT, &all[..5])
        };
        let total = conn
            .one_row(sql, params, |r| Cols::new(r).int())?
            .unwrap_or(0);
        let mut page = JsonPage::new(total, a.limit);
        if a.pattern.is_some() {
            // A search: its cost is the text index, not the rows, and
            // reading keys first would run it twice.
            let (sql, params) = if a.phrase.is_some() {
                (SQLITE_PAGE_FTS, &all[..])
            } else {
                (SQLITE_PAGE, &all[..7])
            };
            conn.each_row(sql, params, |row| {
                page.push_with(|out| Ok(render(&transcript_row(row)?.0, out)?))
            })?;
            return Ok(page);
        }
        let tenant_only = [
            Param::Text(&a.tenant),
            Param::Int(a.limit),
            Param::Int(a.offset),
        ];
        let (keys_sql, rows_sql, params) = if a.counted() && a.src_a.is_none() {
            (SQLITE_KEYS_ALL, SQLITE_PAGE_ALL, &tenant_only[..])
        } else {
            (SQLITE_KEYS, SQLITE_PAGE, &all[..7])
        };
        row_cache::cached_page(
            conn,
            cache,
            render as usize,
            &mut page,
            keys_sql,
            rows_sql,
            params,
            |row, id, out| {
                let (t, version) = transcript_row(row)?;
                if t.call_id.as_bytes() != id {
                    return Err(StoreError::Corrupt(format!(
                        "page row {} where its keys had {}",
                        t.call_id,
                        String::from_utf8_lossy(id)
                    )));
                }
                render(&t, out)?;
                Ok(version)
            },
        )?;
        Ok(page)
    })
}

fn transcript_from_row(row: &impl RowExt, with_turns: bool) -> Result<TranscriptRecord> {
    let turns = if with_turns {
        let json: String = col(row, "turns")?;
        serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(format!("turns: {e}")))?
    } else {
        Vec::new()
    };
    Ok(TranscriptRecord {
        call_id: col(row, "call_id")?,
        tenant: col(row, "tenant")?,
        caller_source: col(row, "caller_source")?,
        started_at: ms(row, "started_at")?,
        answered_at: opt_ms(row, "answered_at")?,
        ended_at: opt_ms(row, "ended_at")?,
        mtime: ms(row, "mtime")?,
        duration_sec: col(row, "duration_sec")?,
        rule: col(row, "rule")?,
        caller: col(row, "caller")?,
        phone: col(row, "phone")?,
        number: col(row, "number")?,
        display_name: col(row, "display_name")?,
        requested_by: col(row, "requested_by")?,
        email: col(row, "email")?,
        outcome: col(row, "outcome")?,
        voice: col(row, "voice")?,
        language: col(row, "language")?,
        model: col(row, "model")?,
        trunk_id: col(row, "trunk_id")?,
        answered: col::<Option<i64>>(row, "answered")?.map(|v| v != 0),
        error_detail: col(row, "error_detail")?,
        tokens_total: col(row, "tokens_total")?,
        tokens_prompt: col(row, "tokens_prompt")?,
        input_turns: col(row, "input_turns")?,
        output_turns: col(row, "output_turns")?,
        turn_count: col(row, "turn_count")?,
        size: col(row, "size")?,
        source: col(row, "source")?,
        file: col(row, "file")?,
        turns,
    })
}

/// The file name the v1 spec gives a transcript:
/// `outbound-ai-YYYYMMDD-HHMMSS-<callId>.txt` or
/// `vnum-<number>-YYYYMMDD-HHMMSS-<callId>.txt`.
pub fn transcript_file_name(t: &TranscriptRecord) -> String {
    let stamp = t.started_at.to_compact();
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    match (t.caller_source.as_str(), &t.number) {
        ("outbound-ai", _) | (_, None) => {
            format!("outbound-ai-{stamp}-{}.txt", safe(&t.call_id))
        }
        (_, Some(number)) => format!("vnum-{}-{stamp}-{}.txt", safe(number), safe(&t.call_id)),
    }
}

/// The human-readable text file: a header, then one line per turn.
fn render_text(t: &TranscriptRecord) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut field = |k: &str, v: &str| {
        if !v.is_empty() {
            let _ = writeln!(out, "{k:<12} {v}");
        }
    };
    field("Call:", &t.call_id);
    field("Source:", &t.caller_source);
    field("Rule:", &t.rule);
    field("Phone:", t.phone.as_deref().unwrap_or(""));
    field("Number:", t.number.as_deref().unwrap_or(""));
    field("Caller:", t.caller.as_deref().unwrap_or(""));
    field("Name:", t.display_name.as_deref().unwrap_or(""));
    field("Started:", &t.started_at.to_iso());
    field(
        "Ended:",
        &t.ended_at.map(UtcMillis::to_iso).unwrap_or_default(),
    );
    field("Duration:", &format!("{} s", t.duration_sec));
    field("Outcome:", &t.outcome);
    field("Tokens:", &t.tokens_total.to_string());
    out.push('\n');
    for turn in &t.turns {
        let _ = writeln!(
            out,
            "[{}] {}: {}",
            turn.ts.to_iso(),
            turn.speaker,
            turn.text
        );
    }
    out
}

fn search_text(t: &TranscriptRecord) -> String {
    [
        t.caller.as_deref(),
        t.phone.as_deref(),
        t.number.as_deref(),
        t.display_name.as_deref(),
    ]
    .into_iter()
    .flatten()
    .chain(std::iter::once(t.rule.as_str()))
    .collect::<Vec<_>>()
    .join("\n")
    .to_lowercase()
}

impl Store {
    pub fn transcripts_dir(&self) -> PathBuf {
        self.data_dir.join("transcripts")
    }

    /// Writes the text file, then the row (replacing an earlier transcript
    /// of the same call). Fills in `file`, `size`, `mtime` and `turn_count`.
    pub async fn save_transcript(
        &self,
        t: TranscriptRecord,
        now: UtcMillis,
    ) -> Result<TranscriptRecord> {
        let t = self.write_transcript_file(t, now).await?;
        self.insert_transcript_row(&t).await?;
        Ok(t)
    }

    /// The text file alone, written atomically (temporary file + rename),
    /// so rewriting it (an event applied again after a crash) is harmless.
    /// Fills in `file`, `size`, `mtime` and `turn_count`; the row is the
    /// caller's to insert.
    pub async fn write_transcript_file(
        &self,
        mut t: TranscriptRecord,
        now: UtcMillis,
    ) -> Result<TranscriptRecord> {
        t.file = transcript_file_name(&t);
        t.turn_count = i64::try_from(t.turns.len()).unwrap_or(i64::MAX);
        t.mtime = now;
        let text = render_text(&t);
        t.size = i64::try_from(text.len()).unwrap_or(i64::MAX);
        let dir = self.transcripts_dir();
        let io = |path: PathBuf| move |source| StoreError::Io { path, source };
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io(dir.clone()))?;
        let path = dir.join(&t.file);
        let tmp = dir.join(format!(".{}.tmp", t.file));
        tokio::fs::write(&tmp, text.as_bytes())
            .await
            .map_err(io(tmp.clone()))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(io(path.clone()))?;
        Ok(t)
    }

    /// The row alone (used by `save_transcript` and by the benchmark seeder,
    /// which does not need 100k files).
    pub async fn insert_transcript_row(&self, t: &TranscriptRecord) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.insert_transcript_row(t).await?;
        tx.commit().await
    }

    /// Newest first.
    pub async fn list_transcripts(
        &self,
        tenant: &str,
        filter: &TranscriptFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Page<TranscriptRecord>> {
        let a = ListArgs::new(tenant, filter, limit, offset);
        // PostgreSQL answers `q` from the trigram GIN index.
        macro_rules! transcript_filter {
            () => {
                "tenant = $1 AND ($2 IS NULL OR started_at >= $2) \
                 AND ($3 IS NULL OR transcripts.search_text LIKE $3 ESCAPE '\\') \
                 AND ($4 IS NULL OR caller_source = $4 OR caller_source = $5)"
            };
        }
        const COUNTS: &str = "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM transcript_counts \
             WHERE tenant = $1 AND ($2 IS NULL OR caller_source = $2 OR caller_source = $3)";
        // The SQLite count and page statements take the same parameters.
        macro_rules! sqlite_args {
            ($q:expr) => {
                $q.bind(&a.tenant)
                    .bind(a.since)
                    .bind(&a.pattern)
                    .bind(a.src_a)
                    .bind(a.src_b)
                    .bind(a.limit)
                    .bind(a.offset)
                    .bind(&a.phrase)
            };
        }
        let (total, rows) = match &self.pool {
            Pool::Sqlite(pool) => {
                let total: i64 = if a.counted() {
                    sqlx::query_scalar(SQLITE_COUNTED)
                        .bind(&a.tenant)
                        .bind(a.src_a)
                        .bind(a.src_b)
                        .fetch_one(pool)
                        .await?
                } else {
                    sqlite_args!(sqlx::query_scalar(if a.phrase.is_some() {
                        SQLITE_COUNT_FTS
                    } else {
                        SQLITE_COUNT
                    }))
                    .fetch_one(pool)
                    .await?
                };
                let rows = sqlite_args!(sqlx::query(if a.phrase.is_some() {
                    SQLITE_PAGE_FTS
                } else {
                    SQLITE_PAGE
                }))
                .fetch_all(pool)
                .await?;
                let items = rows
                    .iter()
                    .map(|r| transcript_from_row(r, false))
                    .collect::<Result<Vec<_>>>()?;
                (total, items)
            }
            Pool::Postgres(pool) => {
                let total: i64 = if a.counted() {
                    sqlx::query_scalar(COUNTS)
                        .bind(&a.tenant)
                        .bind(a.src_a)
                        .bind(a.src_b)
                        .fetch_one(pool)
                        .await?
                } else {
                    sqlx::query_scalar(concat!(
                        "SELECT COUNT(*) FROM transcripts WHERE ",
                        transcript_filter!()
                    ))
                    .bind(&a.tenant)
                    .bind(a.since)
                    .bind(&a.pattern)
                    .bind(a.src_a)
                    .bind(a.src_b)
                    .fetch_one(pool)
                    .await?
                };
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    list_columns!(),
                    " FROM transcripts WHERE ",
                    transcript_filter!(),
                    " ORDER BY started_at DESC, call_id DESC LIMIT $6 OFFSET $7"
                ))
                .bind(&a.tenant)
                .bind(a.since)
                .bind(&a.pattern)
                .bind(a.src_a)
                .bind(a.src_b)
                .bind(a.limit)
                .bind(a.offset)
                .fetch_all(pool)
                .await?;
                let items = rows
                    .iter()
                    .map(|r| transcript_from_row(r, false))
                    .collect::<Result<Vec<_>>>()?;
                (total, items)
            }
        };
        Ok(Page { items: rows, total })
    }

    /// `list_transcripts` with each row rendered by `render` as it is read:
    /// on SQLite in place on the read path, elsewhere from the records.
    pub async fn list_transcripts_json(
        &self,
        tenant: &str,
        filter: &TranscriptFilter,
        limit: i64,
        offset: i64,
        render: RenderTranscript,
    ) -> Result<JsonPage> {
        let Some(readers) = &self.readers else {
            let page = self.list_transcripts(tenant, filter, limit, offset).await?;
            let mut out = JsonPage::new(page.total, limit);
            for t in &page.items {
                out.push_with(|buf| Ok(render(&t.as_row(), buf)?))?;
            }
            return Ok(out);
        };
        let a = ListArgs::new(tenant, filter, limit, offset);
        // Without criteria the total is a counter and the page walks the
        // (tenant, started_at) index in order: its cost is bounded by
        // offset + limit.
        let short = a.counted() && a.src_a.is_none() && sqlite_read::short_page(limit, offset);
        let caches = Arc::clone(&self.row_cache);
        let read = move |conn: &Conn| read_transcripts(conn, &caches.transcripts, &a, render);
        if short {
            readers.run_short(read).await
        } else {
            readers.run(read).await
        }
    }

    pub async fn transcript(
        &self,
        tenant: &str,
        call_id: &str,
    ) -> Result<Option<TranscriptRecord>> {
        on_pool!(self, |pool| {
            let sql = concat!(
                "SELECT ",
                list_columns!(),
                ", turns FROM transcripts WHERE tenant = $1 AND call_id = $2"
            );
            let row = sqlx::query(sql)
                .bind(tenant)
                .bind(call_id)
                .fetch_optional(pool)
                .await?;
            row.as_ref()
                .map(|r| transcript_from_row(r, true))
                .transpose()
        })
    }
}

impl StoreTx {
    /// Inserts (or replaces) a transcript row inside this transaction.
    pub async fn insert_transcript_row(&mut self, t: &TranscriptRecord) -> Result<()> {
        let turns = serde_json::to_string(&t.turns)
            .map_err(|e| StoreError::Corrupt(format!("turns: {e}")))?;
        on_tx!(self, |tx| {
            sqlx::query("DELETE FROM transcripts WHERE call_id = $1")
                .bind(&t.call_id)
                .execute(&mut **tx)
                .await?;
            sqlx::query(
                "INSERT INTO transcripts (call_id, tenant, caller_source, started_at, answered_at, \
                 ended_at, mtime, duration_sec, rule, caller, phone, number, display_name, \
                 requested_by, email, outcome, voice, language, model, trunk_id, answered, \
                 error_detail, tokens_total, tokens_prompt, input_turns, output_turns, turn_count, \
                 size, source, file, turns, search_text) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
                 $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32)",
            )
            .bind(&t.call_id)
            .bind(&t.tenant)
            .bind(&t.caller_source)
            .bind(t.started_at.0)
            .bind(t.answered_at.map(|v| v.0))
            .bind(t.ended_at.map(|v| v.0))
            .bind(t.mtime.0)
            .bind(t.duration_sec)
            .bind(&t.rule)
            .bind(&t.caller)
            .bind(&t.phone)
            .bind(&t.number)
            .bind(&t.display_name)
            .bind(&t.requested_by)
            .bind(&t.email)
            .bind(&t.outcome)
            .bind(&t.voice)
            .bind(&t.language)
            .bind(&t.model)
            .bind(&t.trunk_id)
            .bind(t.answered.map(i64::from))
            .bind(&t.error_detail)
            .bind(t.tokens_total)
            .bind(t.tokens_prompt)
            .bind(t.input_turns)
            .bind(t.output_turns)
            .bind(t.turn_count)
            .bind(t.size)
            .bind(&t.source)
            .bind(&t.file)
            .bind(&turns)
            .bind(search_text(t))
            .execute(&mut **tx)
            .await?;
        });
        Ok(())
    }
}
