//! The prompt library: a `systemPrompt` (of a call or a virtual number) that
//! is exactly a known slug stands for a stored prompt's text. Slugs resolve
//! to the tenant's own prompt first, then to a built-in one, so a tenant can
//! override a built-in (`reminder`) for itself by creating a prompt with
//! that slug; deleting it brings the built-in back. Built-ins are not rows:
//! they are listed beside the tenant's prompts and cannot be changed.
//!
//! What a call record stores is what the integrator sent; the slug is
//! resolved when the call is placed (`expand_call_prompt`), so a prompt
//! edited before a scheduled call or a retry goes out is the one used.
//! Virtual numbers are resolved when the routing snapshot is read
//! (`store::switch_config`); a prompt change bumps the configuration
//! version (migration 0010), so the switch nodes get the new text.

use codeb_types::UtcMillis;

use super::WritePool as _;
use super::{Page, Result, RowExt, Store, col, on_pool, opt_ms};

/// Longest prompt text, in bytes.
pub const MAX_PROMPT_TEXT: usize = 32 * 1024;
/// Longest prompt name, in characters.
pub const MAX_PROMPT_NAME: usize = 128;
/// Longest slug.
pub const MAX_SLUG: usize = 64;

/// A prompt shipped with the platform.
#[derive(Debug)]
pub struct BuiltinPrompt {
    pub slug: &'static str,
    pub name: &'static str,
    pub text: &'static str,
}

/// A fingerprint of the built-in prompts (FNV-1a over their slugs and
/// texts, in hex): stable across builds, changed by any change of text.
pub fn builtin_fingerprint() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in BUILTIN_PROMPTS {
        for b in p.slug.bytes().chain([0]).chain(p.text.bytes()).chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// The built-in prompts, in slug order.
pub static BUILTIN_PROMPTS: &[BuiltinPrompt] = &[BuiltinPrompt {
    slug: "reminder",
    name: "Reminder call",
    text: "You are a friendly, concise voice assistant placing an automated reminder \
call. The call context at the end of these instructions names the number you called \
and the call's caller-ID name, which says what the reminder is about.\n\
\n\
1. When the person answers, greet them, say that this is an automated reminder call, \
and deliver the reminder clearly in one or two short sentences. Do not invent dates, \
times, places or names that the call context does not give you.\n\
2. Ask whether they understood. Answer a short question if you can from what you were \
given; otherwise say that you cannot help with that on this call.\n\
3. If they ask to be called at another time, say that you will pass that on, say \
goodbye, and end the call with the end_call tool, reason not-now.\n\
4. If you reach a voicemail greeting or an answering machine, do not leave a message: \
end the call at once with the end_call tool, reason voicemail.\n\
5. Once the reminder is delivered and acknowledged, say goodbye and end the call with \
the end_call tool. Never keep the person on the line longer than needed; the whole \
call should take under a minute.",
}];

/// The built-in prompt with this slug.
pub fn builtin_prompt(slug: &str) -> Option<&'static BuiltinPrompt> {
    BUILTIN_PROMPTS.iter().find(|b| b.slug == slug)
}

/// A slug: 1–64 of `a-z`, `0-9` and `-`.
pub fn is_slug(s: &str) -> bool {
    (1..=MAX_SLUG).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A prompt as the API shows it: the tenant's own, or a built-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptRecord {
    pub slug: String,
    pub name: String,
    pub text: String,
    pub builtin: bool,
    /// None for built-ins.
    pub created_at: Option<UtcMillis>,
    pub updated_at: Option<UtcMillis>,
}

impl From<&BuiltinPrompt> for PromptRecord {
    fn from(b: &BuiltinPrompt) -> Self {
        PromptRecord {
            slug: b.slug.to_owned(),
            name: b.name.to_owned(),
            text: b.text.to_owned(),
            builtin: true,
            created_at: None,
            updated_at: None,
        }
    }
}

fn prompt_from_row(row: &impl RowExt) -> Result<PromptRecord> {
    Ok(PromptRecord {
        slug: col(row, "slug")?,
        name: col(row, "name")?,
        text: col(row, "text")?,
        builtin: col::<i64>(row, "builtin")? != 0,
        created_at: opt_ms(row, "created_at")?,
        updated_at: opt_ms(row, "updated_at")?,
    })
}

/// `($k, $k+1, $k+2), …` from `$first`: one VALUES row per built-in,
/// bound in order after the leading parameters.
fn builtin_values(first: usize) -> String {
    (0..BUILTIN_PROMPTS.len())
        .map(|i| {
            let p = first + 3 * i;
            format!("(${}, ${}, ${})", p, p + 1, p + 2)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The text a call's `systemPrompt` stands for, with the call's context
/// appended when it named a slug; the prompt as given otherwise.
pub fn with_call_context(text: &str, phone: &str, display_name: &str) -> String {
    format!(
        "{text}\n\nCall context: you are calling {phone}; the call's caller-ID name is \"{display_name}\"."
    )
}

/// What [`Store::delete_prompt`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptDelete {
    Deleted,
    NotFound,
    /// Still named: the virtual numbers (up to ten) and how many calls.
    InUse {
        numbers: Vec<String>,
        calls: i64,
    },
}

impl Store {
    /// The tenant's prompts and the built-ins it has not overridden, by
    /// slug.
    pub async fn list_prompts(
        &self,
        tenant: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Page<PromptRecord>> {
        // Only placeholders are generated; the values are bound.
        let with = |first| {
            format!(
                "WITH builtin(slug, name, text) AS (VALUES {}) ",
                builtin_values(first)
            )
        };
        let count_sql = format!(
            "{}SELECT CAST((SELECT COUNT(*) FROM prompts WHERE tenant = $1) + \
             (SELECT COUNT(*) FROM builtin WHERE slug NOT IN \
             (SELECT slug FROM prompts WHERE tenant = $1)) AS BIGINT)",
            with(2)
        );
        let list_sql = format!(
            "{}SELECT slug, name, text, CAST(0 AS BIGINT) AS builtin, created_at, updated_at \
             FROM prompts WHERE tenant = $1 \
             UNION ALL SELECT slug, name, text, CAST(1 AS BIGINT), CAST(NULL AS BIGINT), \
             CAST(NULL AS BIGINT) FROM builtin \
             WHERE slug NOT IN (SELECT slug FROM prompts WHERE tenant = $1) \
             ORDER BY slug LIMIT $2 OFFSET $3",
            with(4)
        );
        on_pool!(self, |pool| {
            let mut count = sqlx::query_scalar(sqlx::AssertSqlSafe(count_sql)).bind(tenant);
            let mut list = sqlx::query(sqlx::AssertSqlSafe(list_sql))
                .bind(tenant)
                .bind(limit)
                .bind(offset);
            for b in BUILTIN_PROMPTS {
                count = count.bind(b.slug).bind(b.name).bind(b.text);
                list = list.bind(b.slug).bind(b.name).bind(b.text);
            }
            let total: i64 = count.fetch_one(pool).await?;
            let rows = list.fetch_all(pool).await?;
            let items = rows.iter().map(prompt_from_row).collect::<Result<_>>()?;
            Ok(Page { items, total })
        })
    }

    /// The tenant's own prompt with this slug (not a built-in).
    pub async fn tenant_prompt(&self, tenant: &str, slug: &str) -> Result<Option<PromptRecord>> {
        on_pool!(self, |pool| {
            let row = sqlx::query(
                "SELECT slug, name, text, CAST(0 AS BIGINT) AS builtin, created_at, updated_at \
                 FROM prompts WHERE tenant = $1 AND slug = $2",
            )
            .bind(tenant)
            .bind(slug)
            .fetch_optional(pool)
            .await?;
            row.as_ref().map(prompt_from_row).transpose()
        })
    }

    /// What `slug` means for this tenant: its own prompt, else a built-in.
    pub async fn prompt(&self, tenant: &str, slug: &str) -> Result<Option<PromptRecord>> {
        if !is_slug(slug) {
            return Ok(None);
        }
        Ok(match self.tenant_prompt(tenant, slug).await? {
            Some(p) => Some(p),
            None => builtin_prompt(slug).map(PromptRecord::from),
        })
    }

    /// Stores a new tenant prompt; false if the tenant has one with this
    /// slug already.
    pub async fn create_prompt(
        &self,
        tenant: &str,
        slug: &str,
        name: &str,
        text: &str,
        now: UtcMillis,
    ) -> Result<bool> {
        on_pool!(self, |pool| {
            let n = sqlx::query(
                "INSERT INTO prompts (tenant, slug, name, text, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT DO NOTHING",
            )
            .bind(tenant)
            .bind(slug)
            .bind(name)
            .bind(text)
            .bind(now.0)
            .execute(pool)
            .await?
            .rows_affected();
            if n > 0 {
                self.config_changed();
            }
            Ok(n > 0)
        })
    }

    /// Replaces a tenant prompt's name and text; false if it has none with
    /// this slug.
    pub async fn update_prompt(
        &self,
        tenant: &str,
        slug: &str,
        name: &str,
        text: &str,
        now: UtcMillis,
    ) -> Result<bool> {
        on_pool!(self, |pool| {
            let n = sqlx::query(
                "UPDATE prompts SET name = $3, text = $4, updated_at = $5 \
                 WHERE tenant = $1 AND slug = $2",
            )
            .bind(tenant)
            .bind(slug)
            .bind(name)
            .bind(text)
            .bind(now.0)
            .execute(pool)
            .await?
            .rows_affected();
            if n > 0 {
                self.config_changed();
            }
            Ok(n > 0)
        })
    }

    /// Deletes a tenant prompt unless something still names it as its
    /// `systemPrompt` (`checked`: a slug with no built-in behind it, whose
    /// users would get the slug itself as instructions): virtual numbers
    /// (up to ten, by number) and calls still to be dialled, including a
    /// retry still to come of one in flight. Checked and deleted in one
    /// transaction, the prompt's row locked on PostgreSQL, so a call
    /// stored at the same moment (which reads the row `FOR SHARE`) is
    /// either counted or stored after the prompt is gone.
    pub async fn delete_prompt(
        &self,
        tenant: &str,
        slug: &str,
        checked: bool,
    ) -> Result<PromptDelete> {
        let lock = if matches!(self.pool, super::Pool::Postgres(_)) {
            "SELECT slug FROM prompts WHERE tenant = $1 AND slug = $2 FOR UPDATE"
        } else {
            "SELECT slug FROM prompts WHERE tenant = $1 AND slug = $2"
        };
        let out = on_pool!(self, |pool| {
            let mut tx = pool.write_tx().await?;
            let found: Option<String> = sqlx::query_scalar(lock)
                .bind(tenant)
                .bind(slug)
                .fetch_optional(&mut *tx)
                .await?;
            if found.is_none() {
                return Ok(PromptDelete::NotFound);
            }
            if checked {
                let numbers: Vec<String> = sqlx::query_scalar(
                    "SELECT number FROM numbers WHERE tenant = $1 AND system_prompt = $2 \
                     ORDER BY number LIMIT 10",
                )
                .bind(tenant)
                .bind(slug)
                .fetch_all(&mut *tx)
                .await?;
                let calls: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM calls WHERE tenant = $1 AND system_prompt = $2 \
                     AND (status IN ('scheduled', 'ended-failed-retry-pending', 'dispatching') \
                     OR (status = 'in-flight' AND retries_left > 0))",
                )
                .bind(tenant)
                .bind(slug)
                .fetch_one(&mut *tx)
                .await?;
                if !numbers.is_empty() || calls > 0 {
                    return Ok(PromptDelete::InUse { numbers, calls });
                }
            }
            sqlx::query("DELETE FROM prompts WHERE tenant = $1 AND slug = $2")
                .bind(tenant)
                .bind(slug)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(PromptDelete::Deleted)
        });
        if matches!(out, Ok(PromptDelete::Deleted)) {
            self.config_changed();
        }
        out
    }

    /// The instructions a call's session gets: a `systemPrompt` that is a
    /// known slug becomes that prompt's text followed by the call's context
    /// (number and caller-ID name); anything else is used as given.
    pub async fn expand_call_prompt(
        &self,
        tenant: &str,
        system_prompt: &str,
        phone: &str,
        display_name: &str,
    ) -> Result<String> {
        Ok(match self.prompt(tenant, system_prompt).await? {
            Some(p) => with_call_context(&p.text, phone, display_name),
            None => system_prompt.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for ok in ["reminder", "a", "follow-up-2", &"x".repeat(64)] {
            assert!(is_slug(ok), "{ok}");
        }
        for bad in [
            "",
            "Reminder",
            "re minder",
            "a_b",
            "é",
            &"x".repeat(65),
            "reminder\n",
        ] {
            assert!(!is_slug(bad), "{bad:?}");
        }
        assert!(BUILTIN_PROMPTS.iter().all(|b| is_slug(b.slug)));
        assert!(
            BUILTIN_PROMPTS.windows(2).all(|w| w[0].slug < w[1].slug),
            "built-ins in slug order"
        );
        let r = builtin_prompt("reminder").unwrap();
        assert!(r.text.contains("end_call") && r.text.len() <= MAX_PROMPT_TEXT);
    }

    #[test]
    fn placeholders_follow_the_builtins() {
        assert_eq!(builtin_values(4), "($4, $5, $6)");
    }
}
