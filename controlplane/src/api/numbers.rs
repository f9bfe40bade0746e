//! `/api.ashx/v1/numbers`: virtual numbers answered by an AI persona.
//! The AI engine key is write-only: responses show its last four characters.

use axum::extract::State;

use super::extract::Path;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::calls::{DEFAULT_LANGUAGE, DEFAULT_MODEL, DEFAULT_VOICE};
use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, ListEnvelope, Paging, QueryParams};
use super::validate;
use crate::auth::Admin;
use crate::state::AppState;
use crate::store::NumberRecord;

const MODES: &[&str] = &["live-voice-ai", "disabled"];
const VISIBILITIES: &[&str] = &["public", "signed-in"];
const DEFAULT_MAX_DURATION: i64 = 3500;

/// A number's own instructions, in bytes (the switch takes 64 KiB).
const MAX_NUMBER_PROMPT_BYTES: usize = 60_000;

/// Body of `POST /numbers` and `PUT /numbers/{number}` (PUT changes only
/// the fields given; `number` is taken from the path there).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NumberInput {
    /// Digits, optionally with a leading + (required on POST).
    pub number: Option<String>,
    pub name: Option<String>,
    /// `live-voice-ai` (default) or `disabled`.
    pub mode: Option<String>,
    pub voice: Option<String>,
    pub language: Option<String>,
    pub model: Option<String>,
    pub save_transcripts: Option<bool>,
    /// 10–14400 seconds, default 3500.
    pub max_duration_sec: Option<i64>,
    /// `public` or `signed-in` (default).
    pub visibility: Option<String>,
    /// The persona's instructions (required when mode is live-voice-ai).
    pub system_prompt: Option<String>,
    /// AI engine key; write-only.
    pub gemini_api_key: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NumberView {
    pub name: String,
    pub number: String,
    pub mode: String,
    pub voice: String,
    pub language: String,
    pub save_transcripts: bool,
    pub max_duration_sec: i64,
    pub visibility: String,
    pub system_prompt: String,
    /// Masked: `...` and the last four characters.
    pub gemini_api_key: Option<String>,
    pub model: String,
    pub created_at_utc: String,
    pub updated_at_utc: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeletedNumber {
    pub deleted: NumberView,
}

impl From<NumberRecord> for NumberView {
    fn from(n: NumberRecord) -> Self {
        NumberView {
            gemini_api_key: validate::mask_secret(&n.ai_api_key),
            name: n.name,
            number: n.number,
            mode: n.mode,
            voice: n.voice,
            language: n.language,
            save_transcripts: n.save_transcripts,
            max_duration_sec: n.max_duration_sec,
            visibility: n.visibility,
            system_prompt: n.system_prompt,
            model: n.model,
            created_at_utc: n.created_at.to_iso(),
            updated_at_utc: n.updated_at.to_iso(),
        }
    }
}

fn valid_number(field: &str, n: &str) -> ApiResult<()> {
    let digits = n.strip_prefix('+').unwrap_or(n);
    if (1..=32).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            "must be 1-32 digits, optionally with a leading +",
        ))
    }
}

/// Applies the fields given in `input` to `n` and checks the result.
fn apply(n: &mut NumberRecord, input: NumberInput) -> ApiResult<()> {
    let vendor_before = codeb_types::Vendor::of_model(&n.model);
    if let Some(name) = validate::optional_text("name", input.name, 64, false)? {
        n.name = name;
    }
    if let Some(mode) = input.mode {
        validate::one_of("mode", &mode, MODES)?;
        n.mode = mode;
    }
    let voice_given = input.voice.is_some();
    if let Some(voice) = input.voice {
        validate::voice("voice", &voice)?;
        n.voice = voice;
    }
    if let Some(language) = input.language {
        validate::language("language", &language)?;
        n.language = language;
    }
    if let Some(model) = input.model {
        // Empty: the default model, as on POST /calls.
        n.model = if model.is_empty() {
            crate::api::calls::DEFAULT_MODEL.to_owned()
        } else {
            validate::token("model", &model, 200)?;
            validate::model("model", &model)?;
            model
        };
    }
    if let Some(save) = input.save_transcripts {
        n.save_transcripts = save;
    }
    if let Some(max) = input.max_duration_sec {
        n.max_duration_sec = validate::int_range("maxDurationSec", max, 10, 14_400)?;
    }
    if let Some(v) = input.visibility {
        validate::one_of("visibility", &v, VISIBILITIES)?;
        n.visibility = v;
    }
    if let Some(prompt) = input.system_prompt {
        n.system_prompt = validate::optional_text("systemPrompt", Some(prompt), 20_000, true)?
            .unwrap_or_default();
        // The switch takes 64 KiB of instructions: 20,000 characters of
        // four bytes each would not fit.
        if n.system_prompt.len() > MAX_NUMBER_PROMPT_BYTES {
            return Err(ApiError::field(
                "systemPrompt",
                format!("must be at most {MAX_NUMBER_PROMPT_BYTES} bytes"),
            ));
        }
    }
    // The masked key a GET shows, written back unchanged (read, edit,
    // PUT), keeps the key it stands for.
    if let Some(key) = input
        .gemini_api_key
        .filter(|k| Some(k) != validate::mask_secret(&n.ai_api_key).as_ref())
    {
        if !key.is_empty() {
            validate::token("geminiApiKey", &key, 512)?;
        }
        n.ai_api_key = key;
    }
    // A voice this request did not name (the default, or one kept from
    // before the model changed vendor) follows the model's vendor, both
    // ways: a voice is one vendor's name.
    let vendor = codeb_types::Vendor::of_model(&n.model);
    if !voice_given
        && (vendor != vendor_before
            || validate::voice_for_model("voice", &n.voice, &n.model).is_err())
    {
        n.voice = codeb_types::Vendor::of_model(&n.model)
            .default_voice()
            .to_owned();
    }
    validate::voice_for_model("voice", &n.voice, &n.model)?;
    if n.mode == "live-voice-ai" && n.system_prompt.trim().is_empty() {
        return Err(ApiError::field(
            "systemPrompt",
            "is required when mode is live-voice-ai",
        ));
    }
    Ok(())
}

fn no_such_number(n: &str) -> ApiError {
    ApiError::not_found(format!("No virtual number '{n}'"))
}

/// `GET /v1/numbers`
pub async fn list(
    State(state): State<AppState>,
    Admin(who): Admin,
    query: QueryParams,
) -> ApiResult<axum::Json<ListEnvelope<NumberView>>> {
    let paging = Paging::from_query(&query)?;
    let page = state
        .store
        .list_numbers(&who.tenant, paging.limit, paging.offset)
        .await?;
    let data = page.items.into_iter().map(NumberView::from).collect();
    let mut env = ListEnvelope::new(data, page.total, paging, &query, "/api.ashx/v1/numbers");
    env.tenant = Some(who.tenant);
    Ok(axum::Json(env))
}

/// `POST /v1/numbers`
pub async fn create(
    State(state): State<AppState>,
    Admin(who): Admin,
    JsonBody(mut input): JsonBody<NumberInput>,
) -> ApiResult<(StatusCode, axum::Json<NumberView>)> {
    let number = validate::required_text("number", input.number.take(), 33, false)?;
    valid_number("number", &number)?;
    let now = state.now();
    let mut n = NumberRecord {
        tenant: who.tenant.clone(),
        name: number.clone(),
        number,
        mode: MODES[0].to_owned(),
        voice: DEFAULT_VOICE.to_owned(),
        language: DEFAULT_LANGUAGE.to_owned(),
        model: DEFAULT_MODEL.to_owned(),
        save_transcripts: true,
        max_duration_sec: DEFAULT_MAX_DURATION,
        visibility: "signed-in".to_owned(),
        system_prompt: String::new(),
        ai_api_key: String::new(),
        created_at: now,
        updated_at: now,
    };
    apply(&mut n, input)?;
    if !state.store.create_number(&n).await? {
        return Err(ApiError::conflict(
            "duplicate_number",
            format!("A virtual number '{}' already exists", n.number),
        ));
    }
    Ok((StatusCode::CREATED, axum::Json(n.into())))
}

/// `GET /v1/numbers/{number}`
pub async fn get_one(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(number): Path<String>,
) -> ApiResult<axum::Json<NumberView>> {
    let n = state
        .store
        .number(&who.tenant, &number)
        .await?
        .ok_or_else(|| no_such_number(&number))?;
    Ok(axum::Json(n.into()))
}

/// `PUT /v1/numbers/{number}`
pub async fn update(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(number): Path<String>,
    JsonBody(mut input): JsonBody<NumberInput>,
) -> ApiResult<axum::Json<NumberView>> {
    if input
        .number
        .take()
        .is_some_and(|body_number| body_number != number)
    {
        return Err(ApiError::field(
            "number",
            "cannot be changed; delete the number and create it again",
        ));
    }
    let mut n = state
        .store
        .number(&who.tenant, &number)
        .await?
        .ok_or_else(|| no_such_number(&number))?;
    apply(&mut n, input)?;
    n.updated_at = state.now();
    if !state.store.update_number(&n).await? {
        return Err(no_such_number(&number));
    }
    Ok(axum::Json(n.into()))
}

/// `DELETE /v1/numbers/{number}`
pub async fn remove(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(number): Path<String>,
) -> ApiResult<axum::Json<DeletedNumber>> {
    let n = state
        .store
        .number(&who.tenant, &number)
        .await?
        .ok_or_else(|| no_such_number(&number))?;
    if !state.store.delete_number(&who.tenant, &number).await? {
        return Err(no_such_number(&number));
    }
    Ok(axum::Json(DeletedNumber { deleted: n.into() }))
}
