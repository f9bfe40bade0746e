//! Webhook subscriptions: a receiver URL, the events it wants (names or
//! `*`), its signing secret (write-only through the API; the previous one
//! keeps signing during a rotation's grace period) and the delivery
//! counters the API shows.

use codeb_types::{SubscriptionId, UtcMillis};

use super::tx::on_tx;
use super::{Page, Result, RowExt, Store, StoreError, col, flag, ms, on_pool, opt_ms};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRecord {
    pub id: SubscriptionId,
    pub tenant: String,
    pub url: String,
    pub events: Vec<String>,
    pub secret: String,
    pub active: bool,
    pub created_at: UtcMillis,
    pub created_by: String,
    pub last_fired_at: Option<UtcMillis>,
    pub failures: i64,
    pub paused_reason: String,
    pub paused_at: Option<UtcMillis>,
    /// The secret before the last rotation ('' when none) and until when
    /// it still signs.
    pub prev_secret: String,
    pub prev_secret_until: Option<UtcMillis>,
}

macro_rules! subscription_columns {
    () => {
        "id, tenant, url, events, secret, active, created_at, \
    created_by, last_fired_at, failures, paused_reason, paused_at, prev_secret, prev_secret_until"
    };
}

fn subscription_from_row(row: &impl RowExt) -> Result<SubscriptionRecord> {
    let id: String = col(row, "id")?;
    let events: String = col(row, "events")?;
    Ok(SubscriptionRecord {
        id: SubscriptionId::parse(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        tenant: col(row, "tenant")?,
        url: col(row, "url")?,
        events: serde_json::from_str(&events)
            .map_err(|e| StoreError::Corrupt(format!("webhook events: {e}")))?,
        secret: col(row, "secret")?,
        active: flag(row, "active")?,
        created_at: ms(row, "created_at")?,
        created_by: col(row, "created_by")?,
        last_fired_at: opt_ms(row, "last_fired_at")?,
        failures: col(row, "failures")?,
        paused_reason: col(row, "paused_reason")?,
        paused_at: opt_ms(row, "paused_at")?,
        prev_secret: col(row, "prev_secret")?,
        prev_secret_until: opt_ms(row, "prev_secret_until")?,
    })
}

impl Store {
    pub async fn create_subscription(&self, s: &SubscriptionRecord) -> Result<()> {
        on_pool!(self, |pool| {
            let events = serde_json::to_string(&s.events)
                .map_err(|e| StoreError::Corrupt(format!("webhook events: {e}")))?;
            sqlx::query(
                "INSERT INTO webhooks (id, tenant, url, events, secret, active, created_at, \
                 created_by, last_fired_at, failures, paused_reason) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(s.id.as_str())
            .bind(&s.tenant)
            .bind(&s.url)
            .bind(events)
            .bind(&s.secret)
            .bind(i64::from(s.active))
            .bind(s.created_at.0)
            .bind(&s.created_by)
            .bind(s.last_fired_at.map(|t| t.0))
            .bind(s.failures)
            .bind(&s.paused_reason)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    pub async fn list_subscriptions(
        &self,
        tenant: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Page<SubscriptionRecord>> {
        on_pool!(self, |pool| {
            let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhooks WHERE tenant = $1")
                .bind(tenant)
                .fetch_one(pool)
                .await?;
            let sql = concat!(
                "SELECT ",
                subscription_columns!(),
                " FROM webhooks WHERE tenant = $1 \
                 ORDER BY created_at, id LIMIT $2 OFFSET $3"
            );
            let rows = sqlx::query(sql)
                .bind(tenant)
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await?;
            let items = rows
                .iter()
                .map(subscription_from_row)
                .collect::<Result<_>>()?;
            Ok(Page { items, total })
        })
    }

    pub async fn subscription(
        &self,
        tenant: &str,
        id: &SubscriptionId,
    ) -> Result<Option<SubscriptionRecord>> {
        on_pool!(self, |pool| {
            let sql = concat!(
                "SELECT ",
                subscription_columns!(),
                " FROM webhooks WHERE tenant = $1 AND id = $2"
            );
            let row = sqlx::query(sql)
                .bind(tenant)
                .bind(id.as_str())
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(subscription_from_row).transpose()
        })
    }

    pub async fn delete_subscription(&self, tenant: &str, id: &SubscriptionId) -> Result<bool> {
        on_pool!(self, |pool| {
            let res = sqlx::query("DELETE FROM webhooks WHERE tenant = $1 AND id = $2")
                .bind(tenant)
                .bind(id.as_str())
                .execute(pool)
                .await?;
            Ok(res.rows_affected() > 0)
        })
    }

    /// Replaces the secret; the old one keeps signing until `prev_until`
    /// (an older previous secret is dropped). False when not found.
    pub async fn rotate_secret(
        &self,
        tenant: &str,
        id: &SubscriptionId,
        new_secret: &str,
        prev_until: UtcMillis,
    ) -> Result<bool> {
        on_pool!(self, |pool| {
            let res = sqlx::query(
                "UPDATE webhooks SET prev_secret = secret, prev_secret_until = $3, secret = $4 \
                 WHERE tenant = $1 AND id = $2",
            )
            .bind(tenant)
            .bind(id.as_str())
            .bind(prev_until.0)
            .bind(new_secret)
            .execute(pool)
            .await?;
            Ok(res.rows_affected() > 0)
        })
    }

    /// Reactivates a subscription and clears its failure count; deliveries
    /// held while it was paused become due. Returns it, or None.
    pub async fn resume_subscription(
        &self,
        tenant: &str,
        id: &SubscriptionId,
    ) -> Result<Option<SubscriptionRecord>> {
        let mut tx = self.begin().await?;
        let n = on_tx!(tx, |t| {
            let n = sqlx::query(
                "UPDATE webhooks SET active = 1, failures = 0, paused_reason = '', \
                 paused_at = NULL WHERE tenant = $1 AND id = $2",
            )
            .bind(tenant)
            .bind(id.as_str())
            .execute(&mut **t)
            .await?
            .rows_affected();
            if n > 0 {
                // What was held goes out again; the claim keeps each
                // call's deliveries in their original order (seq). On
                // PostgreSQL whatever holds deliveries locks the
                // subscription row first, as the update above did, so
                // nothing becomes held after this statement.
                sqlx::query(
                    "UPDATE webhook_deliveries SET state = 'pending' \
                     WHERE webhook_id = $1 AND state = 'held'",
                )
                .bind(id.as_str())
                .execute(&mut **t)
                .await?;
            }
            n
        });
        if n == 0 {
            return Ok(None);
        }
        tx.announce_deliveries().await?;
        tx.commit().await?;
        self.subscription(tenant, id).await
    }
}
