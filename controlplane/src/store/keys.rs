//! Credentials that outlive one request: `ak_` API keys (stored only as
//! SHA-256 hashes) and rotating OIDC refresh tokens (also hashed), grouped in
//! families so a replayed, already-rotated token revokes its whole family.

use codeb_types::{ApiKeyId, UserId, UtcMillis};

use super::sqlite_read::{Cols, Param};
use super::{Page, Result, RowExt, Store, StoreError, WritePool, col, ms, on_pool, opt_ms};

#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub tenant: String,
    pub name: String,
    pub created_by: String,
    pub created_at: UtcMillis,
    pub last_used_at: Option<UtcMillis>,
}

fn key_from_row(row: &impl RowExt) -> Result<ApiKeyRecord> {
    let id: String = col(row, "id")?;
    Ok(ApiKeyRecord {
        id: ApiKeyId::parse(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        tenant: col(row, "tenant")?,
        name: col(row, "name")?,
        created_by: col(row, "created_by")?,
        created_at: ms(row, "created_at")?,
        last_used_at: opt_ms(row, "last_used_at")?,
    })
}

macro_rules! key_columns {
    () => {
        "id, tenant, name, created_by, created_at, last_used_at"
    };
}

/// What a refresh token resolved to.
#[derive(Debug, Clone)]
pub struct RefreshToken {
    pub user_id: UserId,
    pub scope: String,
    pub family: String,
}

#[derive(Debug, Clone)]
pub enum RefreshOutcome {
    /// The presented token was valid; it is now spent and the new one issued.
    Rotated(RefreshToken),
    /// The token had already been rotated: somebody replayed it, so its whole
    /// family is revoked (RFC 9700 §4.14.2).
    Replayed,
    /// Unknown, expired or revoked.
    Invalid,
}

impl Store {
    pub async fn create_api_key(
        &self,
        id: &ApiKeyId,
        tenant: &str,
        name: &str,
        key_hash: &str,
        created_by: &str,
        now: UtcMillis,
    ) -> Result<ApiKeyRecord> {
        on_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO api_keys (id, tenant, name, key_hash, created_by, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id.as_str())
            .bind(tenant)
            .bind(name)
            .bind(key_hash)
            .bind(created_by)
            .bind(now.0)
            .execute(pool)
            .await?;
            Ok(ApiKeyRecord {
                id: id.clone(),
                tenant: tenant.to_owned(),
                name: name.to_owned(),
                created_by: created_by.to_owned(),
                created_at: now,
                last_used_at: None,
            })
        })
    }

    /// The live (not revoked) key with this hash. Every request with an
    /// API key asks this, so on SQLite it takes the read path (a lookup by
    /// a unique key: a short read); a key revoked a moment ago is already
    /// gone from the next read.
    pub async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>> {
        if let Some(readers) = &self.readers {
            let key_hash = key_hash.to_owned();
            return readers
                .run_short(move |conn| {
                    conn.one_row(
                        concat!(
                            "SELECT ",
                            key_columns!(),
                            " FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL"
                        ),
                        &[Param::Text(&key_hash)],
                        |row| {
                            let mut c = Cols::new(row);
                            let key = ApiKeyRecord {
                                id: ApiKeyId::parse(c.text()?)
                                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                                tenant: c.text()?.to_owned(),
                                name: c.text()?.to_owned(),
                                created_by: c.text()?.to_owned(),
                                created_at: UtcMillis(c.int()?),
                                last_used_at: c.opt_int()?.map(UtcMillis),
                            };
                            c.finish()?;
                            Ok(key)
                        },
                    )
                })
                .await;
        }
        on_pool!(self, |pool| {
            let sql = concat!(
                "SELECT ",
                key_columns!(),
                " FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"
            );
            let row = sqlx::query(sql).bind(key_hash).fetch_optional(pool).await?;
            row.as_ref().map(key_from_row).transpose()
        })
    }

    pub async fn touch_api_key(&self, id: &ApiKeyId, now: UtcMillis) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
                .bind(now.0)
                .bind(id.as_str())
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Live keys of a tenant (all tenants when `tenant` is None, for the CLI).
    pub async fn list_api_keys(
        &self,
        tenant: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Page<ApiKeyRecord>> {
        on_pool!(self, |pool| {
            let total: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL AND ($1 IS NULL OR tenant = $1)",
            )
                .bind(tenant)
                .fetch_one(pool)
                .await?;
            let sql = concat!(
                "SELECT ",
                key_columns!(),
                " FROM api_keys WHERE revoked_at IS NULL AND ($1 IS NULL OR tenant = $1) \
                 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
            );
            let rows = sqlx::query(sql)
                .bind(tenant)
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await?;
            let items = rows.iter().map(key_from_row).collect::<Result<_>>()?;
            Ok(Page { items, total })
        })
    }

    /// Revokes a live key; false if there is none with that id (in that tenant).
    pub async fn revoke_api_key(
        &self,
        tenant: Option<&str>,
        id: &ApiKeyId,
        now: UtcMillis,
    ) -> Result<bool> {
        on_pool!(self, |pool| {
            let res = sqlx::query(
                "UPDATE api_keys SET revoked_at = $1 \
                 WHERE id = $2 AND revoked_at IS NULL AND ($3 IS NULL OR tenant = $3)",
            )
            .bind(now.0)
            .bind(id.as_str())
            .bind(tenant)
            .execute(pool)
            .await?;
            Ok(res.rows_affected() > 0)
        })
    }

    pub async fn insert_refresh_token(
        &self,
        token_hash: &str,
        family: &str,
        user_id: &UserId,
        scope: &str,
        now: UtcMillis,
        expires_at: UtcMillis,
    ) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, family, user_id, scope, issued_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(token_hash)
            .bind(family)
            .bind(user_id.as_str())
            .bind(scope)
            .bind(now.0)
            .bind(expires_at.0)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Spends `old_hash` and, if it was valid, stores `new_hash` in the same
    /// family, atomically.
    pub async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: UtcMillis,
        new_expires_at: UtcMillis,
    ) -> Result<RefreshOutcome> {
        on_pool!(self, |pool| {
            let mut tx = pool.write_tx().await?;
            let row = sqlx::query(
                "SELECT family, user_id, scope, expires_at, used_at, revoked_at \
                 FROM refresh_tokens WHERE token_hash = $1",
            )
            .bind(old_hash)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Ok(RefreshOutcome::Invalid);
            };
            let family: String = col(&row, "family")?;
            if opt_ms(&row, "revoked_at")?.is_some() {
                return Ok(RefreshOutcome::Invalid);
            }
            if opt_ms(&row, "used_at")?.is_some() {
                sqlx::query(
                    "UPDATE refresh_tokens SET revoked_at = $1 WHERE family = $2 AND revoked_at IS NULL",
                )
                .bind(now.0)
                .bind(&family)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                return Ok(RefreshOutcome::Replayed);
            }
            if ms(&row, "expires_at")? <= now {
                return Ok(RefreshOutcome::Invalid);
            }
            let user_id: String = col(&row, "user_id")?;
            let user_id =
                UserId::parse(&user_id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let scope: String = col(&row, "scope")?;
            sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2")
                .bind(now.0)
                .bind(old_hash)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, family, user_id, scope, issued_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(new_hash)
            .bind(&family)
            .bind(user_id.as_str())
            .bind(&scope)
            .bind(now.0)
            .bind(new_expires_at.0)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(RefreshOutcome::Rotated(RefreshToken {
                user_id,
                scope,
                family,
            }))
        })
    }

    /// Revokes the family the token belongs to (RFC 7009). Unknown tokens
    /// are not an error.
    pub async fn revoke_refresh_family(&self, token_hash: &str, now: UtcMillis) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = $1 WHERE revoked_at IS NULL AND family = \
                 (SELECT family FROM refresh_tokens WHERE token_hash = $2)",
            )
            .bind(now.0)
            .bind(token_hash)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Revokes a session: its refresh-token family, and so the access
    /// tokens that name it (`sid`).
    pub async fn revoke_session(&self, family: &str, now: UtcMillis) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = $1 WHERE revoked_at IS NULL AND family = $2",
            )
            .bind(now.0)
            .bind(family)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Drops refresh tokens that can no longer be used.
    pub async fn purge_refresh_tokens(&self, now: UtcMillis) -> Result<u64> {
        on_pool!(self, |pool| {
            let res = sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1")
                .bind(now.0)
                .execute(pool)
                .await?;
            Ok(res.rows_affected())
        })
    }
}
