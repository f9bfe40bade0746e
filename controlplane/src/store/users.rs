//! Platform users (people who sign in to the API and admin UI), with their
//! roles and argon2 password hashes. A password change or removal also
//! invalidates the user's outstanding tokens.

use codeb_types::{UserId, UtcMillis};

use super::{Result, RowExt, Store, StoreError, WritePool, col, flag, ms, on_pool};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Full access to the v1 API.
    Admin,
    /// Signs in, but the v1 API answers 403 (the spec requires role=admin).
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: UserId,
    pub tenant: String,
    pub username: String,
    pub password_hash: String,
    pub role: Role,
    pub created_at: UtcMillis,
    /// Access tokens issued before this instant are no longer accepted.
    pub tokens_valid_after: UtcMillis,
}

fn user_from_row(row: &impl RowExt) -> Result<UserRecord> {
    let id: String = col(row, "id")?;
    let role: String = col(row, "role")?;
    Ok(UserRecord {
        id: UserId::parse(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        tenant: col(row, "tenant")?,
        username: col(row, "username")?,
        password_hash: col(row, "password_hash")?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("role {role}")))?,
        created_at: ms(row, "created_at")?,
        tokens_valid_after: ms(row, "tokens_valid_after")?,
    })
}

macro_rules! user_columns {
    () => {
        "id, tenant, username, password_hash, role, created_at, tokens_valid_after"
    };
}

impl Store {
    /// Adds a user; `Ok(None)` if the username is taken.
    pub async fn create_user(
        &self,
        id: &UserId,
        tenant: &str,
        username: &str,
        password_hash: &str,
        role: Role,
        now: UtcMillis,
    ) -> Result<Option<UserRecord>> {
        on_pool!(self, |pool| {
            let res = sqlx::query(
                "INSERT INTO users (id, tenant, username, password_hash, role, created_at, updated_at, tokens_valid_after) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6, 0) ON CONFLICT DO NOTHING",
            )
            .bind(id.as_str())
            .bind(tenant)
            .bind(username)
            .bind(password_hash)
            .bind(role.as_str())
            .bind(now.0)
            .execute(pool)
            .await?;
            if res.rows_affected() == 0 {
                return Ok(None);
            }
            self.user_by_id(id).await
        })
    }

    pub async fn user_by_username(&self, username: &str) -> Result<Option<UserRecord>> {
        on_pool!(self, |pool| {
            let sql = concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE username = $1"
            );
            let row = sqlx::query(sql).bind(username).fetch_optional(pool).await?;
            row.as_ref().map(user_from_row).transpose()
        })
    }

    pub async fn user_by_id(&self, id: &UserId) -> Result<Option<UserRecord>> {
        on_pool!(self, |pool| {
            let sql = concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1");
            let row = sqlx::query(sql)
                .bind(id.as_str())
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(user_from_row).transpose()
        })
    }

    /// A bearer's user and whether its session (`sid`, a refresh-token
    /// family) was revoked, in one query: every OIDC-authenticated request
    /// asks both. Without a session (NULL never matches), never revoked.
    pub async fn user_of_session(
        &self,
        id: &UserId,
        sid: Option<&str>,
    ) -> Result<Option<(UserRecord, bool)>> {
        on_pool!(self, |pool| {
            let sql = concat!(
                "SELECT ",
                user_columns!(),
                ", CAST(CASE WHEN EXISTS (SELECT 1 FROM refresh_tokens \
                 WHERE family = $2 AND revoked_at IS NOT NULL) THEN 1 ELSE 0 END AS BIGINT) \
                 AS session_revoked FROM users WHERE id = $1"
            );
            let row = sqlx::query(sql)
                .bind(id.as_str())
                .bind(sid)
                .fetch_optional(pool)
                .await?;
            row.as_ref()
                .map(|r| Ok((user_from_row(r)?, flag(r, "session_revoked")?)))
                .transpose()
        })
    }

    pub async fn list_users(&self) -> Result<Vec<UserRecord>> {
        on_pool!(self, |pool| {
            let sql = concat!(
                "SELECT ",
                user_columns!(),
                " FROM users ORDER BY tenant, username"
            );
            let rows = sqlx::query(sql).fetch_all(pool).await?;
            rows.iter().map(user_from_row).collect()
        })
    }

    pub async fn count_users(&self) -> Result<i64> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM users")
                .fetch_one(pool)
                .await?)
        })
    }

    /// Sets a new password hash (and optionally role). Tokens issued before
    /// `now` stop working and refresh tokens are revoked. Returns false if
    /// there is no such user.
    pub async fn update_user(
        &self,
        username: &str,
        password_hash: Option<&str>,
        role: Option<Role>,
        now: UtcMillis,
    ) -> Result<bool> {
        on_pool!(self, |pool| {
            let mut tx = pool.write_tx().await?;
            let res = sqlx::query(
                "UPDATE users SET password_hash = COALESCE($1, password_hash), role = COALESCE($2, role), \
                 updated_at = $3, tokens_valid_after = $3 WHERE username = $4",
            )
            .bind(password_hash)
            .bind(role.map(Role::as_str))
            .bind(now.0)
            .bind(username)
            .execute(&mut *tx)
            .await?;
            if res.rows_affected() == 0 {
                return Ok(false);
            }
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = $1 WHERE revoked_at IS NULL AND user_id = \
                 (SELECT id FROM users WHERE username = $2)",
            )
            .bind(now.0)
            .bind(username)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Removes a user and their refresh tokens. Returns false if absent.
    pub async fn remove_user(&self, username: &str) -> Result<bool> {
        on_pool!(self, |pool| {
            let mut tx = pool.write_tx().await?;
            sqlx::query(
                "DELETE FROM refresh_tokens WHERE user_id = (SELECT id FROM users WHERE username = $1)",
            )
            .bind(username)
            .execute(&mut *tx)
            .await?;
            let res = sqlx::query("DELETE FROM users WHERE username = $1")
                .bind(username)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(res.rows_affected() > 0)
        })
    }
}
