//! Transcript share links: a revocable public URL per random token. Only
//! the token's SHA-256 is stored; lists and events show its last eight
//! characters. Each change (create, view, revoke) and its `share.*` event
//! are one transaction, so a subscriber hears of exactly the changes that
//! happened.

use codeb_types::{EventName, ShareId, UtcMillis};
use serde_json::json;

use super::tx::on_tx;
use super::{Page, Result, RowExt, Store, StoreError, col, ms, on_pool, opt_ms};

/// A share about to be stored.
#[derive(Debug, Clone)]
pub struct NewShare {
    pub id: ShareId,
    pub tenant: String,
    pub call_id: String,
    pub token_hash: String,
    pub token_tail: String,
    /// 0: never expires.
    pub ttl_hours: i64,
    pub created_by: String,
    pub created_at: UtcMillis,
    pub expires_at: Option<UtcMillis>,
}

/// A stored share (never its token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareRecord {
    pub id: ShareId,
    pub tenant: String,
    pub call_id: String,
    pub token_tail: String,
    pub ttl_hours: i64,
    pub created_by: String,
    pub created_at: UtcMillis,
    pub expires_at: Option<UtcMillis>,
    pub views: i64,
    pub last_viewed_at: Option<UtcMillis>,
}

impl ShareRecord {
    /// How events and lists show the token: `...` and its last 8 characters.
    pub fn masked_token(&self) -> String {
        format!("...{}", self.token_tail)
    }

    pub fn is_expired(&self, now: UtcMillis) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// A share that was just opened, with its transcript's file name.
#[derive(Debug, Clone)]
pub struct ShareView {
    pub share: ShareRecord,
    pub file: String,
}

macro_rules! share_columns {
    () => {
        "id, tenant, call_id, token_tail, ttl_hours, created_by, created_at, expires_at, \
         views, last_viewed_at"
    };
}

fn share_from_row(row: &impl RowExt) -> Result<ShareRecord> {
    let id: String = col(row, "id")?;
    Ok(ShareRecord {
        id: ShareId::parse(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        tenant: col(row, "tenant")?,
        call_id: col(row, "call_id")?,
        token_tail: col(row, "token_tail")?,
        ttl_hours: col(row, "ttl_hours")?,
        created_by: col(row, "created_by")?,
        created_at: ms(row, "created_at")?,
        expires_at: opt_ms(row, "expires_at")?,
        views: col(row, "views")?,
        last_viewed_at: opt_ms(row, "last_viewed_at")?,
    })
}

impl Store {
    /// Stores a share of an existing transcript and records
    /// `share.created`. Returns the transcript's file name, or None when
    /// the tenant has no transcript for the call.
    pub async fn create_share(&self, s: &NewShare) -> Result<Option<String>> {
        let mut tx = self.begin().await?;
        let file: Option<String> = on_tx!(tx, |t| {
            let file: Option<String> = sqlx::query_scalar(
                "SELECT file FROM transcripts WHERE tenant = $1 AND call_id = $2",
            )
            .bind(&s.tenant)
            .bind(&s.call_id)
            .fetch_optional(&mut **t)
            .await?;
            if file.is_some() {
                sqlx::query(
                    "INSERT INTO transcript_shares (id, tenant, call_id, token_hash, token_tail, \
                     ttl_hours, created_by, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(s.id.as_str())
                .bind(&s.tenant)
                .bind(&s.call_id)
                .bind(&s.token_hash)
                .bind(&s.token_tail)
                .bind(s.ttl_hours)
                .bind(&s.created_by)
                .bind(s.created_at.0)
                .bind(s.expires_at.map(|t| t.0))
                .execute(&mut **t)
                .await?;
            }
            file
        });
        let Some(file) = file else {
            return Ok(None);
        };
        let data = json!({
            "token": format!("...{}", s.token_tail),
            "file": file,
            "ttlHours": s.ttl_hours,
            "createdBy": s.created_by,
            "expiresUtc": s.expires_at.map(UtcMillis::to_iso),
        });
        tx.record_event(
            &s.tenant,
            EventName::ShareCreated,
            data,
            Some(&s.call_id),
            s.created_at,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(file))
    }

    /// The shares of one transcript, newest first; None when the tenant
    /// has no transcript for the call.
    pub async fn list_shares(
        &self,
        tenant: &str,
        call_id: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Option<Page<ShareRecord>>> {
        on_pool!(self, |pool| {
            let exists: Option<String> = sqlx::query_scalar(
                "SELECT call_id FROM transcripts WHERE tenant = $1 AND call_id = $2",
            )
            .bind(tenant)
            .bind(call_id)
            .fetch_optional(pool)
            .await?;
            if exists.is_none() {
                return Ok(None);
            }
            let total: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM transcript_shares WHERE tenant = $1 AND call_id = $2",
            )
            .bind(tenant)
            .bind(call_id)
            .fetch_one(pool)
            .await?;
            let rows = sqlx::query(concat!(
                "SELECT ",
                share_columns!(),
                " FROM transcript_shares WHERE tenant = $1 AND call_id = $2 \
                 ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
            ))
            .bind(tenant)
            .bind(call_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await?;
            let items = rows.iter().map(share_from_row).collect::<Result<_>>()?;
            Ok(Some(Page { items, total }))
        })
    }

    /// Deletes a share (its URL answers 404 from now on) and records
    /// `share.revoked`. Returns the share, or None when not found.
    pub async fn revoke_share(
        &self,
        tenant: &str,
        call_id: &str,
        id: &ShareId,
        revoked_by: &str,
        now: UtcMillis,
    ) -> Result<Option<ShareRecord>> {
        let mut tx = self.begin().await?;
        let found = on_tx!(tx, |t| {
            let row = sqlx::query(concat!(
                "SELECT ",
                share_columns!(),
                " FROM transcript_shares WHERE tenant = $1 AND call_id = $2 AND id = $3"
            ))
            .bind(tenant)
            .bind(call_id)
            .bind(id.as_str())
            .fetch_optional(&mut **t)
            .await?;
            match row {
                None => None,
                Some(row) => {
                    let share = share_from_row(&row)?;
                    sqlx::query("DELETE FROM transcript_shares WHERE id = $1")
                        .bind(id.as_str())
                        .execute(&mut **t)
                        .await?;
                    let file: Option<String> = sqlx::query_scalar(
                        "SELECT file FROM transcripts WHERE tenant = $1 AND call_id = $2",
                    )
                    .bind(tenant)
                    .bind(call_id)
                    .fetch_optional(&mut **t)
                    .await?;
                    Some((share, file.unwrap_or_default()))
                }
            }
        });
        let Some((share, file)) = found else {
            return Ok(None);
        };
        let data = json!({
            "token": share.masked_token(),
            "file": file,
            "revokedBy": revoked_by,
        });
        tx.record_event(tenant, EventName::ShareRevoked, data, Some(call_id), now)
            .await?;
        tx.commit().await?;
        Ok(Some(share))
    }

    /// Opens a share by its token's hash: counts the view and records
    /// `share.viewed`. None when no live (unexpired) share has that token
    /// or its transcript is gone; nothing is counted then.
    pub async fn view_share(
        &self,
        token_hash: &str,
        viewer_ip: &str,
        now: UtcMillis,
    ) -> Result<Option<ShareView>> {
        let mut tx = self.begin().await?;
        let found = on_tx!(tx, |t| {
            let row = sqlx::query(concat!(
                "SELECT ",
                share_columns!(),
                " FROM transcript_shares WHERE token_hash = $1"
            ))
            .bind(token_hash)
            .fetch_optional(&mut **t)
            .await?;
            match row {
                None => None,
                Some(row) => {
                    let share = share_from_row(&row)?;
                    let file: Option<String> = sqlx::query_scalar(
                        "SELECT file FROM transcripts WHERE tenant = $1 AND call_id = $2",
                    )
                    .bind(&share.tenant)
                    .bind(&share.call_id)
                    .fetch_optional(&mut **t)
                    .await?;
                    match file {
                        Some(file) if !share.is_expired(now) => {
                            sqlx::query(
                                "UPDATE transcript_shares SET views = views + 1, \
                                 last_viewed_at = $2 WHERE id = $1",
                            )
                            .bind(share.id.as_str())
                            .bind(now.0)
                            .execute(&mut **t)
                            .await?;
                            Some((share, file))
                        }
                        _ => None,
                    }
                }
            }
        });
        let Some((mut share, file)) = found else {
            return Ok(None);
        };
        share.views += 1;
        share.last_viewed_at = Some(now);
        let data = json!({
            "token": share.masked_token(),
            "file": file,
            "viewerIp": viewer_ip,
        });
        let (tenant, call_id) = (share.tenant.clone(), share.call_id.clone());
        tx.record_event(&tenant, EventName::ShareViewed, data, Some(&call_id), now)
            .await?;
        tx.commit().await?;
        Ok(Some(ShareView { share, file }))
    }
}
