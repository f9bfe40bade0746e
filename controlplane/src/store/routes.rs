//! The per-tenant inbound route table. The switch evaluates it top to
//! bottom and the first row whose DID (and optional From pattern) matches
//! wins; the `*` row without a From filter is the catchall, always present
//! and always last. Rows are addressed by the (DID, FromNumber) pair, which
//! a unique index keeps unique. "No From filter" is stored as ''.

use codeb_types::UtcMillis;

use super::{Page, Result, RowExt, Store, WritePool, col, on_pool};

pub const CATCHALL_DID: &str = "*";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundRoute {
    pub did: String,
    pub from_number: Option<String>,
    pub user: String,
}

impl InboundRoute {
    pub fn is_catchall(&self) -> bool {
        self.did == CATCHALL_DID && self.from_number.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    Duplicate,
    CannotDeleteCatchall,
}

fn route_from_row(row: &impl RowExt) -> Result<InboundRoute> {
    let from: String = col(row, "from_number")?;
    Ok(InboundRoute {
        did: col(row, "did")?,
        from_number: (!from.is_empty()).then_some(from),
        user: col(row, "user_name")?,
    })
}

/// Evaluation order: the catchall last, everything else by insertion.
macro_rules! route_order {
    () => {
        "CASE WHEN did = '*' AND from_number = '' THEN 1 ELSE 0 END, position, id"
    };
}

impl Store {
    /// Inserts the catchall row if the tenant has none.
    pub async fn ensure_catchall(
        &self,
        tenant: &str,
        default_user: &str,
        now: UtcMillis,
    ) -> Result<()> {
        on_pool!(self, |pool| {
            let present: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM inbound_routes WHERE tenant = $1 AND did = '*' AND from_number = ''",
            )
            .bind(tenant)
            .fetch_one(pool)
            .await?;
            if present == 0 {
                sqlx::query(
                    "INSERT INTO inbound_routes (tenant, position, did, from_number, user_name, created_at) \
                     VALUES ($1, 0, '*', '', $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(tenant)
                .bind(default_user)
                .bind(now.0)
                .execute(pool)
                .await?;
                self.config_changed();
            }
            Ok(())
        })
    }

    /// The table in evaluation order.
    pub async fn list_routes(
        &self,
        tenant: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Page<InboundRoute>> {
        on_pool!(self, |pool| {
            let total: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM inbound_routes WHERE tenant = $1")
                    .bind(tenant)
                    .fetch_one(pool)
                    .await?;
            let sql = concat!(
                "SELECT did, from_number, user_name FROM inbound_routes WHERE tenant = $1 \
                 ORDER BY ",
                route_order!(),
                " LIMIT $2 OFFSET $3"
            );
            let rows = sqlx::query(sql)
                .bind(tenant)
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await?;
            let items = rows.iter().map(route_from_row).collect::<Result<_>>()?;
            Ok(Page { items, total })
        })
    }

    /// The row addressed by `did` and `from`: with `from` given, exactly that
    /// pair; without, the row with no From filter (PUT's addressing) or,
    /// when `first_with_did` is set (GET's: "first row whose Did
    /// matches"), the first row with that DID in evaluation order.
    pub async fn route(
        &self,
        tenant: &str,
        did: &str,
        from: Option<&str>,
        first_with_did: bool,
    ) -> Result<Option<InboundRoute>> {
        on_pool!(self, |pool| {
            let exact = "SELECT did, from_number, user_name FROM inbound_routes \
                 WHERE tenant = $1 AND did = $2 AND from_number = $3";
            if from.is_some() || !first_with_did {
                let row = sqlx::query(exact)
                    .bind(tenant)
                    .bind(did)
                    .bind(from.unwrap_or(""))
                    .fetch_optional(pool)
                    .await?;
                return row.as_ref().map(route_from_row).transpose();
            }
            let first = concat!(
                "SELECT did, from_number, user_name FROM inbound_routes WHERE tenant = $1 AND did = $2 \
                 ORDER BY ",
                route_order!(),
                " LIMIT 1"
            );
            let row = sqlx::query(first)
                .bind(tenant)
                .bind(did)
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(route_from_row).transpose()
        })
    }

    /// Appends a row (it sorts before the catchall).
    pub async fn create_route(
        &self,
        tenant: &str,
        route: &InboundRoute,
        now: UtcMillis,
    ) -> Result<Result<(), RouteError>> {
        on_pool!(self, |pool| {
            let mut tx = pool.write_tx().await?;
            let next: i64 = sqlx::query_scalar(
                "SELECT COALESCE(MAX(position), 0) + 1 FROM inbound_routes WHERE tenant = $1",
            )
            .bind(tenant)
            .fetch_one(&mut *tx)
            .await?;
            let res = sqlx::query(
                "INSERT INTO inbound_routes (tenant, position, did, from_number, user_name, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(tenant)
            .bind(next)
            .bind(&route.did)
            .bind(route.from_number.as_deref().unwrap_or(""))
            .bind(&route.user)
            .bind(now.0)
            .execute(&mut *tx)
            .await?;
            if res.rows_affected() == 0 {
                return Ok(Err(RouteError::Duplicate));
            }
            tx.commit().await?;
            self.config_changed();
            Ok(Ok(()))
        })
    }

    /// Changes the user of the row addressed by the exact (DID, From) pair.
    pub async fn update_route_user(
        &self,
        tenant: &str,
        did: &str,
        from: Option<&str>,
        user: &str,
    ) -> Result<Option<InboundRoute>> {
        on_pool!(self, |pool| {
            let res = sqlx::query(
                "UPDATE inbound_routes SET user_name = $1 \
                 WHERE tenant = $2 AND did = $3 AND from_number = $4",
            )
            .bind(user)
            .bind(tenant)
            .bind(did)
            .bind(from.unwrap_or(""))
            .execute(pool)
            .await?;
            if res.rows_affected() == 0 {
                return Ok(None);
            }
            self.config_changed();
            Ok(Some(InboundRoute {
                did: did.to_owned(),
                from_number: from.map(str::to_owned),
                user: user.to_owned(),
            }))
        })
    }

    /// Deletes the first row whose DID matches in evaluation order (with
    /// `from`, exactly that pair), as `route()` finds it for GET; the
    /// catchall is refused.
    pub async fn delete_route(
        &self,
        tenant: &str,
        did: &str,
        from: Option<&str>,
    ) -> Result<Result<Option<InboundRoute>, RouteError>> {
        on_pool!(self, |pool| {
            let mut tx = pool.write_tx().await?;
            let first = concat!(
                "SELECT did, from_number, user_name FROM inbound_routes WHERE tenant = $1 AND did = $2 \
                 AND ($3 = 0 OR from_number = $4) \
                 ORDER BY ",
                route_order!(),
                " LIMIT 1"
            );
            let row = sqlx::query(first)
                .bind(tenant)
                .bind(did)
                .bind(i64::from(from.is_some()))
                .bind(from.unwrap_or(""))
                .fetch_optional(&mut *tx)
                .await?;
            let Some(route) = row.as_ref().map(route_from_row).transpose()? else {
                return Ok(Ok(None));
            };
            if route.is_catchall() {
                return Ok(Err(RouteError::CannotDeleteCatchall));
            }
            sqlx::query(
                "DELETE FROM inbound_routes WHERE tenant = $1 AND did = $2 AND from_number = $3",
            )
            .bind(tenant)
            .bind(&route.did)
            .bind(route.from_number.as_deref().unwrap_or(""))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            self.config_changed();
            Ok(Ok(Some(route)))
        })
    }
}
