//! Transcripts: one per call, stored twice on purpose. The database row
//! (metadata plus the turns as JSON) serves the API; the text file in
//! `<data>/transcripts/`, named as the v1 spec names it, is what operators
//! grep and archive. The file is written first (atomically, via rename), so
//! a row never points at a missing file.

use std::path::PathBuf;

use codeb_types::UtcMillis;
use serde::{Deserialize, Serialize};

use super::tx::{StoreTx, on_tx};
use super::{Page, Pool, Result, RowExt, Store, StoreError, col, like_escape, ms, on_pool, opt_ms};

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
        // Absent criteria are bound as NULL, so each dialect has one
        // statement. `q` is a case-insensitive substring (LIKE with its
        // wildcards escaped). PostgreSQL answers it from the trigram GIN
        // index; SQLite first narrows rows with the FTS5 trigram index
        // (a quoted phrase matches exactly that substring, for three or
        // more characters) and LIKE confirms.
        let q = filter.q.as_ref().map(|q| q.to_lowercase());
        let pattern = q.as_ref().map(|q| format!("%{}%", like_escape(q)));
        let phrase = q
            .as_ref()
            .filter(|q| q.chars().count() >= 3)
            .map(|q| format!("\"{}\"", q.replace('"', "\"\"")));
        let since = filter.since.map(|t| t.0);
        let src_a = filter.caller_sources.first().copied();
        let src_b = filter.caller_sources.get(1).copied().or(src_a);
        macro_rules! transcript_filter {
            () => {
                "tenant = $1 AND ($2 IS NULL OR started_at >= $2) \
                 AND ($3 IS NULL OR transcripts.search_text LIKE $3 ESCAPE '\\') \
                 AND ($4 IS NULL OR caller_source = $4 OR caller_source = $5)"
            };
        }
        // With a phrase, SQLite reads the matching rows out of the FTS index
        // first (CROSS JOIN fixes that order) instead of walking every row
        // of the tenant and probing the index for each.
        macro_rules! sqlite_fts_from {
            () => {
                " FROM transcripts_fts CROSS JOIN transcripts \
                 ON transcripts.rowid = transcripts_fts.rowid \
                 WHERE transcripts_fts MATCH $8 AND "
            };
        }
        const COUNTS: &str = "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM transcript_counts \
             WHERE tenant = $1 AND ($2 IS NULL OR caller_source = $2 OR caller_source = $3)";
        let counted = pattern.is_none() && since.is_none();
        let (total, rows) = match &self.pool {
            Pool::Sqlite(pool) => {
                let total: i64 = match (&phrase, counted) {
                    (_, true) => {
                        sqlx::query_scalar(COUNTS)
                            .bind(tenant)
                            .bind(src_a)
                            .bind(src_b)
                            .fetch_one(pool)
                            .await?
                    }
                    (Some(phrase), false) => {
                        sqlx::query_scalar(concat!(
                            "SELECT COUNT(*)",
                            sqlite_fts_from!(),
                            transcript_filter!()
                        ))
                        .bind(tenant)
                        .bind(since)
                        .bind(&pattern)
                        .bind(src_a)
                        .bind(src_b)
                        .bind(limit)
                        .bind(offset)
                        .bind(phrase)
                        .fetch_one(pool)
                        .await?
                    }
                    (None, false) => {
                        sqlx::query_scalar(concat!(
                            "SELECT COUNT(*) FROM transcripts WHERE ",
                            transcript_filter!()
                        ))
                        .bind(tenant)
                        .bind(since)
                        .bind(&pattern)
                        .bind(src_a)
                        .bind(src_b)
                        .fetch_one(pool)
                        .await?
                    }
                };
                let rows = match &phrase {
                    Some(phrase) => {
                        sqlx::query(concat!(
                            "SELECT ",
                            list_columns!(),
                            sqlite_fts_from!(),
                            transcript_filter!(),
                            " ORDER BY started_at DESC, call_id DESC LIMIT $6 OFFSET $7"
                        ))
                        .bind(tenant)
                        .bind(since)
                        .bind(&pattern)
                        .bind(src_a)
                        .bind(src_b)
                        .bind(limit)
                        .bind(offset)
                        .bind(phrase)
                        .fetch_all(pool)
                        .await?
                    }
                    None => {
                        sqlx::query(concat!(
                            "SELECT ",
                            list_columns!(),
                            " FROM transcripts WHERE ",
                            transcript_filter!(),
                            " ORDER BY started_at DESC, call_id DESC LIMIT $6 OFFSET $7"
                        ))
                        .bind(tenant)
                        .bind(since)
                        .bind(&pattern)
                        .bind(src_a)
                        .bind(src_b)
                        .bind(limit)
                        .bind(offset)
                        .fetch_all(pool)
                        .await?
                    }
                };
                let items = rows
                    .iter()
                    .map(|r| transcript_from_row(r, false))
                    .collect::<Result<Vec<_>>>()?;
                (total, items)
            }
            Pool::Postgres(pool) => {
                let total: i64 = if counted {
                    sqlx::query_scalar(COUNTS)
                        .bind(tenant)
                        .bind(src_a)
                        .bind(src_b)
                        .fetch_one(pool)
                        .await?
                } else {
                    sqlx::query_scalar(concat!(
                        "SELECT COUNT(*) FROM transcripts WHERE ",
                        transcript_filter!()
                    ))
                    .bind(tenant)
                    .bind(since)
                    .bind(&pattern)
                    .bind(src_a)
                    .bind(src_b)
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
                .bind(tenant)
                .bind(since)
                .bind(&pattern)
                .bind(src_a)
                .bind(src_b)
                .bind(limit)
                .bind(offset)
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
