//! `/api.ashx/v1/transcripts`: list (newest first, filtered) and fetch one
//! with its turns. Fields a call did not have are left out, as the spec's
//! examples show (a vnum transcript has `number`, not `phone`).

use axum::extract::State;

use super::extract::Path;
use axum::response::Response;
use codeb_types::UtcMillis;
use serde::Serialize;

use super::error::{ApiError, ApiResult};
use super::extract::{Paging, QueryParams};
use super::json::{self, Iso};
use crate::auth::Admin;
use crate::state::AppState;
use crate::store::{TranscriptFilter, TranscriptRecord, TranscriptRow};

const MAX_Q_CHARS: usize = 200;

// One transcript of the list. It borrows the row it shows, so a page
// renders rows without copying their text (a doc comment would add an
// OpenAPI description).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TranscriptListItem<'a> {
    pub call_id: &'a str,
    /// `outbound-ai`, `vnum` or `office-tab`.
    pub caller_source: &'a str,
    #[schema(value_type = String)]
    pub started_utc: Iso,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub ended_utc: Option<Iso>,
    #[schema(value_type = String)]
    pub mtime_utc: Iso,
    pub duration_sec: i64,
    pub rule: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<&'a str>,
    pub outcome: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voice: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<&'a str>,
    pub tokens_total: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_prompt: Option<i64>,
    pub turn_count: i64,
    pub size: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'a str>,
    pub file: &'a str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TurnView {
    /// `AI` or `Caller`.
    pub speaker: String,
    pub text: String,
    pub ts: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TranscriptView {
    pub call_id: String,
    pub caller_source: String,
    pub tenant: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trunk_id: Option<String>,
    pub rule: String,
    pub started_utc: String,
    pub answered_utc: Option<String>,
    pub ended_utc: Option<String>,
    pub duration_sec: i64,
    pub answered: bool,
    pub outcome: String,
    pub error_detail: String,
    pub input_turns: i64,
    pub output_turns: i64,
    pub tokens_total: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_prompt: Option<i64>,
    pub file: String,
    pub turns: Vec<TurnView>,
}

impl<'a> From<&TranscriptRow<'a>> for TranscriptListItem<'a> {
    fn from(t: &TranscriptRow<'a>) -> Self {
        TranscriptListItem {
            call_id: t.call_id,
            caller_source: t.caller_source,
            started_utc: Iso(t.started_at),
            ended_utc: Iso::opt(t.ended_at),
            mtime_utc: Iso(t.mtime),
            duration_sec: t.duration_sec,
            rule: t.rule,
            phone: t.phone,
            number: t.number,
            caller: t.caller,
            display_name: t.display_name,
            outcome: t.outcome,
            voice: t.voice,
            language: t.language,
            model: t.model,
            tokens_total: t.tokens_total,
            tokens_prompt: t.tokens_prompt,
            turn_count: t.turn_count,
            size: t.size,
            source: t.source,
            file: t.file,
        }
    }
}

/// A list page's row renderer (runs on the store's read path): what serde
/// writes for `TranscriptListItem::from(t)`, field for field (the test
/// below holds it to that), without serde's per-field dispatch and key
/// escaping.
pub(crate) fn render_item(t: &TranscriptRow<'_>, out: &mut Vec<u8>) -> serde_json::Result<()> {
    let mut o = json::ObjectWriter::begin(out);
    o.str(json::key!("callId"), t.call_id);
    o.str(json::key!("callerSource"), t.caller_source);
    o.iso(json::key!("startedUtc"), Iso(t.started_at));
    o.skip_iso(json::key!("endedUtc"), Iso::opt(t.ended_at));
    o.iso(json::key!("mtimeUtc"), Iso(t.mtime));
    o.int(json::key!("durationSec"), t.duration_sec);
    o.str(json::key!("rule"), t.rule);
    o.skip_str(json::key!("phone"), t.phone);
    o.skip_str(json::key!("number"), t.number);
    o.skip_str(json::key!("caller"), t.caller);
    o.skip_str(json::key!("displayName"), t.display_name);
    o.str(json::key!("outcome"), t.outcome);
    o.skip_str(json::key!("voice"), t.voice);
    o.skip_str(json::key!("language"), t.language);
    o.skip_str(json::key!("model"), t.model);
    o.int(json::key!("tokensTotal"), t.tokens_total);
    o.skip_int(json::key!("tokensPrompt"), t.tokens_prompt);
    o.int(json::key!("turnCount"), t.turn_count);
    o.int(json::key!("size"), t.size);
    o.skip_str(json::key!("source"), t.source);
    o.str(json::key!("file"), t.file);
    o.end();
    Ok(())
}

impl From<TranscriptRecord> for TranscriptView {
    fn from(t: TranscriptRecord) -> Self {
        TranscriptView {
            answered: t.answered.unwrap_or(t.answered_at.is_some()),
            call_id: t.call_id,
            caller_source: t.caller_source,
            tenant: t.tenant,
            requested_by: t.requested_by,
            phone: t.phone,
            number: t.number,
            caller: t.caller,
            display_name: t.display_name,
            email: t.email,
            voice: t.voice,
            language: t.language,
            model: t.model,
            trunk_id: t.trunk_id,
            rule: t.rule,
            started_utc: t.started_at.to_iso(),
            answered_utc: t.answered_at.map(UtcMillis::to_iso),
            ended_utc: t.ended_at.map(UtcMillis::to_iso),
            duration_sec: t.duration_sec,
            outcome: t.outcome,
            error_detail: t.error_detail.unwrap_or_default(),
            input_turns: t.input_turns,
            output_turns: t.output_turns,
            tokens_total: t.tokens_total,
            tokens_prompt: t.tokens_prompt,
            file: t.file,
            turns: t
                .turns
                .into_iter()
                .map(|turn| TurnView {
                    speaker: turn.speaker,
                    text: turn.text,
                    ts: turn.ts.to_iso(),
                })
                .collect(),
        }
    }
}

/// `GET /v1/transcripts`
pub async fn list(
    State(state): State<AppState>,
    Admin(who): Admin,
    query: QueryParams,
) -> ApiResult<Response> {
    let paging = Paging::from_query(&query)?;
    let mut filter = TranscriptFilter::default();
    match query.get("source").filter(|s| !s.is_empty()) {
        None => {}
        // "vnum" covers both browser (vnum) and office-tab caller sources.
        Some("vnum") => filter.caller_sources = vec!["vnum", "office-tab"],
        Some("outbound-ai") => filter.caller_sources = vec!["outbound-ai"],
        Some(_) => return Err(ApiError::field("source", "must be vnum or outbound-ai")),
    }
    if let Some(q) = query.get("q").filter(|s| !s.is_empty()) {
        if q.chars().count() > MAX_Q_CHARS {
            return Err(ApiError::field(
                "q",
                format!("must be at most {MAX_Q_CHARS} characters"),
            ));
        }
        filter.q = Some(q.to_owned());
    }
    if let Some(since) = query.get("since").filter(|s| !s.is_empty()) {
        filter.since =
            Some(UtcMillis::parse_rfc3339(since).map_err(|e| ApiError::field("since", e))?);
    }
    let page = state
        .store
        .list_transcripts_json(
            &who.tenant,
            &filter,
            paging.limit,
            paging.offset,
            render_item,
        )
        .await?;
    Ok(json::list_response(
        page,
        paging,
        &query,
        "/api.ashx/v1/transcripts",
    ))
}

/// `GET /v1/transcripts/{callId}`
pub async fn get_one(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(call_id): Path<String>,
) -> ApiResult<axum::Json<TranscriptView>> {
    let t = state
        .store
        .transcript(&who.tenant, &call_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No transcript for callId={call_id}")))?;
    Ok(axum::Json(t.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::json::samples;

    /// The list rows are byte for byte what serde makes of
    /// `TranscriptListItem` (the shape the OpenAPI document describes),
    /// with each optional field present and absent.
    #[test]
    fn render_item_is_serde_of_list_item() {
        let strings = samples::strings();
        let ints = samples::ints();
        let s = |i: usize| strings[i % strings.len()].as_str();
        let n = |i: usize| ints[i % ints.len()];
        // Field k is absent when bit k of the row number is clear, so the
        // rows cover every field absent and present, first and last.
        let some = |i: usize, k: u32| (i >> (k % 12)) & 1 == 1;
        for i in 0..strings.len() * 30 {
            let row = TranscriptRow {
                call_id: s(i),
                tenant: s(i + 1),
                caller_source: s(i + 2),
                started_at: UtcMillis(n(i)),
                answered_at: some(i, 0).then(|| UtcMillis(n(i + 1))),
                ended_at: some(i, 1).then(|| UtcMillis(n(i + 2))),
                mtime: UtcMillis(n(i + 3)),
                duration_sec: n(i + 4),
                rule: s(i + 3),
                caller: some(i, 2).then(|| s(i + 4)),
                phone: some(i, 3).then(|| s(i + 5)),
                number: some(i, 4).then(|| s(i + 6)),
                display_name: some(i, 5).then(|| s(i + 7)),
                requested_by: some(i, 6).then(|| s(i + 8)),
                email: some(i, 7).then(|| s(i + 9)),
                outcome: s(i + 10),
                voice: some(i, 8).then(|| s(i + 11)),
                language: some(i, 9).then(|| s(i + 12)),
                model: some(i, 10).then(|| s(i + 13)),
                trunk_id: some(i, 11).then(|| s(i + 14)),
                answered: some(i, 0).then_some(i % 2 == 0),
                error_detail: some(i, 1).then(|| s(i + 15)),
                tokens_total: n(i + 5),
                tokens_prompt: some(i, 2).then(|| n(i + 6)),
                input_turns: n(i + 7),
                output_turns: n(i + 8),
                turn_count: n(i + 9),
                size: n(i + 10),
                source: some(i, 3).then(|| s(i + 16)),
                file: s(i + 17),
            };
            let mut out = Vec::new();
            render_item(&row, &mut out).unwrap();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&TranscriptListItem::from(&row)).unwrap(),
                "{row:?}"
            );
        }
    }
}
