//! `/api.ashx/v1/prompts`: the tenant's prompt library (an extension of the
//! v1 spec, which says a `systemPrompt` may be "a known prompt slug").
//! Built-in prompts (`reminder`) are listed beside the tenant's, marked
//! `builtin: true`, and cannot be changed or deleted; a tenant prompt with
//! a built-in's slug overrides it for that tenant (and deleting it brings
//! the built-in back). See `store::prompts` for when slugs are resolved.

use axum::extract::State;

use super::extract::Path;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, ListEnvelope, Paging, QueryParams};
use super::validate;
use crate::auth::Admin;
use crate::state::AppState;
use crate::store::{
    MAX_PROMPT_NAME, MAX_PROMPT_TEXT, PromptDelete, PromptRecord, builtin_prompt, is_slug,
};

/// Body of `POST /prompts` (slug and text required) and `PUT
/// /prompts/{slug}` (name and/or text; the slug is the path's).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromptInput {
    /// 1–64 of `a-z`, `0-9`, `-`.
    pub slug: Option<String>,
    /// A label for people (default: the slug), up to 128 characters.
    pub name: Option<String>,
    /// The instructions, up to 32 KiB; newlines and tabs allowed.
    pub text: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromptView {
    pub slug: String,
    pub name: String,
    pub text: String,
    /// Shipped with the platform: read-only.
    pub builtin: bool,
    /// Null for built-ins.
    pub created_at_utc: Option<String>,
    pub updated_at_utc: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeletedPrompt {
    pub deleted: PromptView,
}

impl From<PromptRecord> for PromptView {
    fn from(p: PromptRecord) -> Self {
        PromptView {
            slug: p.slug,
            name: p.name,
            text: p.text,
            builtin: p.builtin,
            created_at_utc: p.created_at.map(|t| t.to_iso()),
            updated_at_utc: p.updated_at.map(|t| t.to_iso()),
        }
    }
}

fn no_such_prompt(slug: &str) -> ApiError {
    ApiError::not_found(format!("No prompt '{}'", slug.escape_debug()))
}

fn read_only(slug: &str) -> ApiError {
    ApiError::conflict(
        "builtin_prompt",
        format!(
            "'{slug}' is a built-in prompt and cannot be changed or deleted; \
             POST /api.ashx/v1/prompts with this slug to override it for this tenant"
        ),
    )
}

fn text(value: Option<String>, required: bool) -> ApiResult<Option<String>> {
    let t = if required {
        Some(validate::required_text(
            "text",
            value,
            MAX_PROMPT_TEXT,
            true,
        )?)
    } else {
        validate::optional_text("text", value, MAX_PROMPT_TEXT, true)?
    };
    if t.as_ref().is_some_and(|t| t.len() > MAX_PROMPT_TEXT) {
        return Err(ApiError::field(
            "text",
            format!("must be at most {MAX_PROMPT_TEXT} bytes"),
        ));
    }
    Ok(t)
}

fn name(value: Option<String>) -> ApiResult<Option<String>> {
    validate::optional_text("name", value, MAX_PROMPT_NAME, false)
}

/// `GET /v1/prompts`
pub async fn list(
    State(state): State<AppState>,
    Admin(who): Admin,
    query: QueryParams,
) -> ApiResult<axum::Json<ListEnvelope<PromptView>>> {
    let paging = Paging::from_query(&query)?;
    let page = state
        .store
        .list_prompts(&who.tenant, paging.limit, paging.offset)
        .await?;
    let data = page.items.into_iter().map(PromptView::from).collect();
    Ok(axum::Json(ListEnvelope::new(
        data,
        page.total,
        paging,
        &query,
        "/api.ashx/v1/prompts",
    )))
}

/// `POST /v1/prompts`
pub async fn create(
    State(state): State<AppState>,
    Admin(who): Admin,
    JsonBody(input): JsonBody<PromptInput>,
) -> ApiResult<(StatusCode, axum::Json<PromptView>)> {
    let slug = validate::required_text("slug", input.slug, 64, false)?;
    if !is_slug(&slug) {
        return Err(ApiError::field(
            "slug",
            "must be 1-64 characters of a-z, 0-9 and '-'",
        ));
    }
    let text = text(input.text, true)?.unwrap_or_default();
    let name = name(input.name)?.unwrap_or_else(|| slug.clone());
    let now = state.now();
    if !state
        .store
        .create_prompt(&who.tenant, &slug, &name, &text, now)
        .await?
    {
        return Err(ApiError::conflict(
            "duplicate_prompt",
            format!("A prompt '{slug}' already exists; PUT /api.ashx/v1/prompts/{slug} changes it"),
        ));
    }
    let view = PromptView {
        slug,
        name,
        text,
        builtin: false,
        created_at_utc: Some(now.to_iso()),
        updated_at_utc: Some(now.to_iso()),
    };
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// `GET /v1/prompts/{slug}`: the tenant's prompt, else the built-in.
pub async fn get_one(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(slug): Path<String>,
) -> ApiResult<axum::Json<PromptView>> {
    let p = state
        .store
        .prompt(&who.tenant, &slug)
        .await?
        .ok_or_else(|| no_such_prompt(&slug))?;
    Ok(axum::Json(p.into()))
}

/// `PUT /v1/prompts/{slug}`: changes the fields given.
pub async fn update(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(slug): Path<String>,
    JsonBody(input): JsonBody<PromptInput>,
) -> ApiResult<axum::Json<PromptView>> {
    if input.slug.as_ref().is_some_and(|s| *s != slug) {
        return Err(ApiError::field(
            "slug",
            "cannot be changed; create a prompt with the new slug and delete this one",
        ));
    }
    let new_name = name(input.name)?;
    let new_text = text(input.text, false)?;
    let Some(mut p) = state.store.tenant_prompt(&who.tenant, &slug).await? else {
        return Err(match builtin_prompt(&slug) {
            Some(_) => read_only(&slug),
            None => no_such_prompt(&slug),
        });
    };
    if let Some(n) = new_name {
        p.name = n;
    }
    if let Some(t) = new_text {
        p.text = t;
    }
    let now = state.now();
    if !state
        .store
        .update_prompt(&who.tenant, &slug, &p.name, &p.text, now)
        .await?
    {
        return Err(no_such_prompt(&slug));
    }
    p.updated_at = Some(now);
    Ok(axum::Json(p.into()))
}

/// `DELETE /v1/prompts/{slug}`
pub async fn remove(
    State(state): State<AppState>,
    Admin(who): Admin,
    Path(slug): Path<String>,
) -> ApiResult<axum::Json<DeletedPrompt>> {
    let Some(p) = state.store.tenant_prompt(&who.tenant, &slug).await? else {
        return Err(match builtin_prompt(&slug) {
            Some(_) => read_only(&slug),
            None => no_such_prompt(&slug),
        });
    };
    // A tenant prompt still named by a number or a call waiting to be
    // dialled is kept: its slug would be used as the AI's instructions,
    // word for word. (Deleting a tenant's own `reminder` brings back the
    // built-in, so that is allowed.)
    let checked = builtin_prompt(&slug).is_none();
    match state
        .store
        .delete_prompt(&who.tenant, &slug, checked)
        .await?
    {
        PromptDelete::Deleted => {}
        PromptDelete::NotFound => return Err(no_such_prompt(&slug)),
        PromptDelete::InUse { numbers, calls } => {
            let mut users = Vec::new();
            if !numbers.is_empty() {
                users.push(format!("virtual numbers {}", numbers.join(", ")));
            }
            if calls > 0 {
                let s = if calls == 1 { "" } else { "s" };
                users.push(format!("{calls} call{s} still to be dialled"));
            }
            return Err(ApiError::conflict(
                "prompt_in_use",
                format!(
                    "Prompt '{slug}' is the systemPrompt of {}; change those first",
                    users.join(" and ")
                ),
            ));
        }
    }
    Ok(axum::Json(DeletedPrompt { deleted: p.into() }))
}
