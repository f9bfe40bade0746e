//! SIP trunks: where outbound calls leave and inbound calls arrive from,
//! with their credentials (write-only through the API) and limits. A tenant
//! has at most one default trunk; that invariant is kept in the same
//! transaction as the write that could break it.

use codeb_types::{TrunkId, UtcMillis};

use super::{Page, Result, RowExt, Store, StoreError, WritePool, col, flag, ms, on_pool};

/// Which trunk a call that names none goes out through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultTrunk {
    /// The one marked default, or the tenant's only trunk.
    Chosen(Box<TrunkRecord>),
    /// The tenant has no trunk.
    NoTrunks,
    /// Several trunks and none marked default: the call must name one.
    NoneMarked,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkRecord {
    pub id: TrunkId,
    pub tenant: String,
    pub name: String,
    pub host: String,
    pub port: i64,
    pub transport: String,
    pub username: String,
    pub password: String,
    pub from_user: String,
    pub from_domain: String,
    pub max_concurrent_calls: i64,
    pub calls_per_second: i64,
    pub is_default: bool,
    pub register: bool,
    pub created_at: UtcMillis,
    pub updated_at: UtcMillis,
}

macro_rules! trunk_columns {
    () => {
        "id, tenant, name, host, port, transport, username, password, \
    from_user, from_domain, max_concurrent_calls, calls_per_second, is_default, register, \
    created_at, updated_at"
    };
}

pub(super) fn trunk_from_row(row: &impl RowExt) -> Result<TrunkRecord> {
    let id: String = col(row, "id")?;
    Ok(TrunkRecord {
        id: TrunkId::parse(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        tenant: col(row, "tenant")?,
        name: col(row, "name")?,
        host: col(row, "host")?,
        port: col(row, "port")?,
        transport: col(row, "transport")?,
        username: col(row, "username")?,
        password: col(row, "password")?,
        from_user: col(row, "from_user")?,
        from_domain: col(row, "from_domain")?,
        max_concurrent_calls: col(row, "max_concurrent_calls")?,
        calls_per_second: col(row, "calls_per_second")?,
        is_default: flag(row, "is_default")?,
        register: flag(row, "register")?,
        created_at: ms(row, "created_at")?,
        updated_at: ms(row, "updated_at")?,
    })
}

/// Unmarks the tenant's current default trunk (run before marking another).
macro_rules! clear_default_query {
    ($tenant:expr, $now:expr) => {
        sqlx::query(
            "UPDATE trunks SET is_default = 0, updated_at = $1 WHERE tenant = $2 AND is_default = 1",
        )
        .bind($now.0)
        .bind($tenant)
    };
}

/// The calls that may still be dialled through trunk `$2` of tenant `$1`
/// (`$3` = 1: it is the tenant's default, which calls naming no trunk
/// use).
macro_rules! trunk_users_sql {
    () => {
        "calls.tenant = $1 \
         AND (calls.trunk_id = $2 OR ($3 = 1 AND calls.trunk_id IS NULL)) \
         AND (calls.status IN ('scheduled', 'ended-failed-retry-pending', 'dispatching') \
              OR (calls.status = 'in-flight' AND calls.retries_left > 0))"
    };
}

impl Store {
    pub async fn list_trunks(
        &self,
        tenant: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Page<TrunkRecord>> {
        on_pool!(self, |pool| {
            let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM trunks WHERE tenant = $1")
                .bind(tenant)
                .fetch_one(pool)
                .await?;
            let sql = concat!(
                "SELECT ",
                trunk_columns!(),
                " FROM trunks WHERE tenant = $1 \
                 ORDER BY created_at, id LIMIT $2 OFFSET $3"
            );
            let rows = sqlx::query(sql)
                .bind(tenant)
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await?;
            let items = rows.iter().map(trunk_from_row).collect::<Result<_>>()?;
            Ok(Page { items, total })
        })
    }

    pub async fn trunk(&self, tenant: &str, id: &TrunkId) -> Result<Option<TrunkRecord>> {
        on_pool!(self, |pool| {
            let sql = concat!(
                "SELECT ",
                trunk_columns!(),
                " FROM trunks WHERE tenant = $1 AND id = $2"
            );
            let row = sqlx::query(sql)
                .bind(tenant)
                .bind(id.as_str())
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(trunk_from_row).transpose()
        })
    }

    /// The trunk a call uses when it names none: the one marked default, or
    /// the tenant's only trunk.
    pub async fn default_trunk(&self, tenant: &str) -> Result<Option<TrunkRecord>> {
        Ok(match self.default_trunk_choice(tenant).await? {
            DefaultTrunk::Chosen(t) => Some(*t),
            DefaultTrunk::NoTrunks | DefaultTrunk::NoneMarked => None,
        })
    }

    /// [`Store::default_trunk`], saying why there is none.
    pub async fn default_trunk_choice(&self, tenant: &str) -> Result<DefaultTrunk> {
        on_pool!(self, |pool| {
            let sql = concat!(
                "SELECT ",
                trunk_columns!(),
                " FROM trunks WHERE tenant = $1 \
                 ORDER BY is_default DESC, created_at LIMIT 2"
            );
            let rows = sqlx::query(sql).bind(tenant).fetch_all(pool).await?;
            let trunks = rows
                .iter()
                .map(trunk_from_row)
                .collect::<Result<Vec<_>>>()?;
            Ok(match trunks.as_slice() {
                [] => DefaultTrunk::NoTrunks,
                [only] => DefaultTrunk::Chosen(Box::new(only.clone())),
                [first, ..] if first.is_default => DefaultTrunk::Chosen(Box::new(first.clone())),
                _ => DefaultTrunk::NoneMarked,
            })
        })
    }

    pub async fn create_trunk(&self, t: &TrunkRecord) -> Result<()> {
        on_pool!(self, |pool| {
            let mut tx = pool.write_tx().await?;
            if t.is_default {
                clear_default_query!(&t.tenant, t.updated_at)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(
                "INSERT INTO trunks (id, tenant, name, host, port, transport, username, password, \
                 from_user, from_domain, max_concurrent_calls, calls_per_second, is_default, \
                 register, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            )
            .bind(t.id.as_str())
            .bind(&t.tenant)
            .bind(&t.name)
            .bind(&t.host)
            .bind(t.port)
            .bind(&t.transport)
            .bind(&t.username)
            .bind(&t.password)
            .bind(&t.from_user)
            .bind(&t.from_domain)
            .bind(t.max_concurrent_calls)
            .bind(t.calls_per_second)
            .bind(i64::from(t.is_default))
            .bind(i64::from(t.register))
            .bind(t.created_at.0)
            .bind(t.updated_at.0)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            self.config_changed();
            Ok(())
        })
    }

    /// Replaces every editable field; false if there is no such trunk.
    pub async fn update_trunk(&self, t: &TrunkRecord) -> Result<bool> {
        on_pool!(self, |pool| {
            let mut tx = pool.write_tx().await?;
            if t.is_default {
                clear_default_query!(&t.tenant, t.updated_at)
                    .execute(&mut *tx)
                    .await?;
            }
            let res = sqlx::query(
                "UPDATE trunks SET name = $1, host = $2, port = $3, transport = $4, username = $5, \
                 password = $6, from_user = $7, from_domain = $8, max_concurrent_calls = $9, \
                 calls_per_second = $10, is_default = $11, register = $12, updated_at = $13 \
                 WHERE tenant = $14 AND id = $15",
            )
            .bind(&t.name)
            .bind(&t.host)
            .bind(t.port)
            .bind(&t.transport)
            .bind(&t.username)
            .bind(&t.password)
            .bind(&t.from_user)
            .bind(&t.from_domain)
            .bind(t.max_concurrent_calls)
            .bind(t.calls_per_second)
            .bind(i64::from(t.is_default))
            .bind(i64::from(t.register))
            .bind(t.updated_at.0)
            .bind(&t.tenant)
            .bind(t.id.as_str())
            .execute(&mut *tx)
            .await?;
            if res.rows_affected() == 0 {
                return Ok(false);
            }
            tx.commit().await?;
            self.config_changed();
            Ok(true)
        })
    }

    /// Calls of `tenant` that may still be dialled through trunk `id`:
    /// not dialled yet (scheduled, waiting for a retry, being dispatched)
    /// or in progress with a retry left, naming it, or naming no trunk
    /// while it is the tenant's default (`default`: the one marked, or the
    /// only one).
    pub async fn trunk_waiting_calls(
        &self,
        tenant: &str,
        id: &TrunkId,
        default: bool,
    ) -> Result<i64> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_scalar(concat!(
                "SELECT COUNT(*) FROM calls WHERE ",
                trunk_users_sql!()
            ))
            .bind(tenant)
            .bind(id.as_str())
            .bind(i64::from(default))
            .fetch_one(pool)
            .await?)
        })
    }

    /// Deletes the trunk, unless a call may still be dialled through it
    /// (see [`Store::trunk_waiting_calls`]); true if it was deleted.
    pub async fn delete_trunk(&self, tenant: &str, id: &TrunkId, default: bool) -> Result<bool> {
        on_pool!(self, |pool| {
            let mut tx = pool.write_tx().await?;
            // On PostgreSQL the row is locked first, in a statement of its
            // own: a call being stored through it (which holds it FOR
            // SHARE, `Store::insert_call_checked`) commits before the
            // guard below reads the calls, with a snapshot of its own.
            if let super::Pool::Postgres(_) = &self.pool {
                sqlx::query("SELECT id FROM trunks WHERE tenant = $1 AND id = $2 FOR UPDATE")
                    .bind(tenant)
                    .bind(id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            }
            let res = sqlx::query(concat!(
                "DELETE FROM trunks WHERE tenant = $1 AND id = $2 AND NOT EXISTS \
                 (SELECT 1 FROM calls WHERE ",
                trunk_users_sql!(),
                ")"
            ))
            .bind(tenant)
            .bind(id.as_str())
            .bind(i64::from(default))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            self.config_changed();
            Ok(res.rows_affected() > 0)
        })
    }
}
