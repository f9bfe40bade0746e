//! Virtual numbers: inbound numbers answered by an AI persona (prompt,
//! voice, language, limits). The AI engine key is stored so the switch can
//! use it, and never leaves the API unmasked.

use codeb_types::UtcMillis;

use super::WritePool as _;
use super::{Page, Result, RowExt, Store, col, flag, ms, on_pool};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberRecord {
    pub tenant: String,
    pub number: String,
    pub name: String,
    pub mode: String,
    pub voice: String,
    pub language: String,
    pub model: String,
    pub save_transcripts: bool,
    pub max_duration_sec: i64,
    pub visibility: String,
    pub system_prompt: String,
    pub ai_api_key: String,
    pub created_at: UtcMillis,
    pub updated_at: UtcMillis,
}

macro_rules! number_columns {
    () => {
        "tenant, number, name, mode, voice, language, model, \
    save_transcripts, max_duration_sec, visibility, system_prompt, ai_api_key, created_at, \
    updated_at"
    };
}

pub(super) fn number_from_row(row: &impl RowExt) -> Result<NumberRecord> {
    Ok(NumberRecord {
        tenant: col(row, "tenant")?,
        number: col(row, "number")?,
        name: col(row, "name")?,
        mode: col(row, "mode")?,
        voice: col(row, "voice")?,
        language: col(row, "language")?,
        model: col(row, "model")?,
        save_transcripts: flag(row, "save_transcripts")?,
        max_duration_sec: col(row, "max_duration_sec")?,
        visibility: col(row, "visibility")?,
        system_prompt: col(row, "system_prompt")?,
        ai_api_key: col(row, "ai_api_key")?,
        created_at: ms(row, "created_at")?,
        updated_at: ms(row, "updated_at")?,
    })
}

impl Store {
    pub async fn list_numbers(
        &self,
        tenant: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Page<NumberRecord>> {
        on_pool!(self, |pool| {
            let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM numbers WHERE tenant = $1")
                .bind(tenant)
                .fetch_one(pool)
                .await?;
            let sql = concat!(
                "SELECT ",
                number_columns!(),
                " FROM numbers WHERE tenant = $1 \
                 ORDER BY number LIMIT $2 OFFSET $3"
            );
            let rows = sqlx::query(sql)
                .bind(tenant)
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await?;
            let items = rows.iter().map(number_from_row).collect::<Result<_>>()?;
            Ok(Page { items, total })
        })
    }

    pub async fn number(&self, tenant: &str, number: &str) -> Result<Option<NumberRecord>> {
        on_pool!(self, |pool| {
            let sql = concat!(
                "SELECT ",
                number_columns!(),
                " FROM numbers WHERE tenant = $1 AND number = $2"
            );
            let row = sqlx::query(sql)
                .bind(tenant)
                .bind(number)
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(number_from_row).transpose()
        })
    }

    /// Adds a number; false if the tenant already has it.
    pub async fn create_number(&self, n: &NumberRecord) -> Result<bool> {
        let lock = self.prompt_share_lock(&n.system_prompt);
        on_pool!(self, |pool| {
            let mut tx = pool.write_tx().await?;
            if let Some(lock) = lock {
                sqlx::query(lock)
                    .bind(&n.tenant)
                    .bind(&n.system_prompt)
                    .fetch_optional(&mut *tx)
                    .await?;
            }
            let res = sqlx::query(
                "INSERT INTO numbers (tenant, number, name, mode, voice, language, model, \
                 save_transcripts, max_duration_sec, visibility, system_prompt, ai_api_key, \
                 created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&n.tenant)
            .bind(&n.number)
            .bind(&n.name)
            .bind(&n.mode)
            .bind(&n.voice)
            .bind(&n.language)
            .bind(&n.model)
            .bind(i64::from(n.save_transcripts))
            .bind(n.max_duration_sec)
            .bind(&n.visibility)
            .bind(&n.system_prompt)
            .bind(&n.ai_api_key)
            .bind(n.created_at.0)
            .bind(n.updated_at.0)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            self.config_changed();
            Ok(res.rows_affected() > 0)
        })
    }

    /// Replaces every editable field; false if there is no such number.
    pub async fn update_number(&self, n: &NumberRecord) -> Result<bool> {
        let lock = self.prompt_share_lock(&n.system_prompt);
        on_pool!(self, |pool| {
            let mut tx = pool.write_tx().await?;
            if let Some(lock) = lock {
                sqlx::query(lock)
                    .bind(&n.tenant)
                    .bind(&n.system_prompt)
                    .fetch_optional(&mut *tx)
                    .await?;
            }
            let res = sqlx::query(
                "UPDATE numbers SET name = $1, mode = $2, voice = $3, language = $4, model = $5, \
                 save_transcripts = $6, max_duration_sec = $7, visibility = $8, system_prompt = $9, \
                 ai_api_key = $10, updated_at = $11 WHERE tenant = $12 AND number = $13",
            )
            .bind(&n.name)
            .bind(&n.mode)
            .bind(&n.voice)
            .bind(&n.language)
            .bind(&n.model)
            .bind(i64::from(n.save_transcripts))
            .bind(n.max_duration_sec)
            .bind(&n.visibility)
            .bind(&n.system_prompt)
            .bind(&n.ai_api_key)
            .bind(n.updated_at.0)
            .bind(&n.tenant)
            .bind(&n.number)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            self.config_changed();
            Ok(res.rows_affected() > 0)
        })
    }

    /// On PostgreSQL, the query that reads a tenant prompt `FOR SHARE` when
    /// `system_prompt` is a slug: a number stored naming it and a DELETE
    /// of the prompt at the same moment do not cross (the delete counts
    /// the number, or has committed first). SQLite's write transactions
    /// are one at a time already.
    pub(super) fn prompt_share_lock(&self, system_prompt: &str) -> Option<&'static str> {
        (matches!(self.pool, super::Pool::Postgres(_)) && super::prompts::is_slug(system_prompt))
            .then_some("SELECT slug FROM prompts WHERE tenant = $1 AND slug = $2 FOR SHARE")
    }

    pub async fn delete_number(&self, tenant: &str, number: &str) -> Result<bool> {
        on_pool!(self, |pool| {
            let res = sqlx::query("DELETE FROM numbers WHERE tenant = $1 AND number = $2")
                .bind(tenant)
                .bind(number)
                .execute(pool)
                .await?;
            self.config_changed();
            Ok(res.rows_affected() > 0)
        })
    }
}
