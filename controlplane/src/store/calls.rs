//! Outbound AI calls: the record, the state model (`scheduled` →
//! `dispatching` → `in-flight` → `ended-*` / `cancelled`) and the per-tenant
//! number whitelist that every call adds its target to.

use std::sync::Arc;

use codeb_types::{CallId, CallStatus, E164, EventName, TrunkId, UtcMillis};
use sqlx::AssertSqlSafe;

use super::row_cache::{self, RowCache};
use super::sqlite_read::{self, Cols, Conn, Param, Row};
use super::tx::on_tx;
use super::{
    AttemptEnd, JsonPage, Page, Result, RowExt, Store, StoreError, WritePool, col, ms, on_pool,
    opt_ms,
};

/// A validated call request, ready to store.
#[derive(Debug, Clone)]
pub struct NewCall {
    pub call_id: CallId,
    pub tenant: String,
    pub requested_by: String,
    pub phone: E164,
    pub display_name: String,
    pub email: String,
    pub system_prompt: String,
    pub ai_api_key: String,
    pub model: String,
    pub voice: String,
    pub language: String,
    pub max_seconds: i64,
    pub retries: i64,
    pub retry_delay_minutes: i64,
    pub trunk_id: Option<TrunkId>,
    pub status: CallStatus,
    pub created_at: UtcMillis,
    /// `scheduleAtUtc` as given (None: dial immediately).
    pub scheduled_for: Option<UtcMillis>,
    /// When the scheduler should pick it up.
    pub next_attempt_at: UtcMillis,
}

/// A stored call, as `GET /v1/calls` shows it.
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub call_id: CallId,
    pub tenant: String,
    pub requested_by: String,
    pub phone: String,
    pub display_name: String,
    pub email: String,
    pub model: String,
    pub voice: String,
    pub language: String,
    pub max_seconds: i64,
    pub retries: i64,
    pub retry_delay_minutes: i64,
    pub trunk_id: Option<String>,
    pub status: CallStatus,
    pub created_at: UtcMillis,
    pub scheduled_for: Option<UtcMillis>,
    pub dispatched_at: Option<UtcMillis>,
    pub answered_at: Option<UtcMillis>,
    pub ended_at: Option<UtcMillis>,
    pub ended_reason: String,
    pub duration_sec: i64,
    pub transcript_path: String,
    pub error_detail: String,
    pub attempt: i64,
    pub retries_left: i64,
}

/// A call as a list page reads it: the text borrows the row it came from
/// (SQLite's row buffer on the read path, a `CallRecord` otherwise).
/// Fields are in the order `call_columns!` selects them.
#[derive(Debug, Clone, Copy)]
pub struct CallRow<'a> {
    pub call_id: &'a str,
    pub tenant: &'a str,
    pub requested_by: &'a str,
    pub phone: &'a str,
    pub display_name: &'a str,
    pub email: &'a str,
    pub model: &'a str,
    pub voice: &'a str,
    pub language: &'a str,
    pub max_seconds: i64,
    pub retries: i64,
    pub retry_delay_minutes: i64,
    pub trunk_id: Option<&'a str>,
    pub status: CallStatus,
    pub created_at: UtcMillis,
    pub scheduled_for: Option<UtcMillis>,
    pub dispatched_at: Option<UtcMillis>,
    pub answered_at: Option<UtcMillis>,
    pub ended_at: Option<UtcMillis>,
    pub ended_reason: &'a str,
    pub duration_sec: i64,
    pub transcript_path: &'a str,
    pub error_detail: &'a str,
    pub attempt: i64,
    pub retries_left: i64,
}

impl CallRecord {
    pub fn as_row(&self) -> CallRow<'_> {
        CallRow {
            call_id: self.call_id.as_str(),
            tenant: &self.tenant,
            requested_by: &self.requested_by,
            phone: &self.phone,
            display_name: &self.display_name,
            email: &self.email,
            model: &self.model,
            voice: &self.voice,
            language: &self.language,
            max_seconds: self.max_seconds,
            retries: self.retries,
            retry_delay_minutes: self.retry_delay_minutes,
            trunk_id: self.trunk_id.as_deref(),
            status: self.status,
            created_at: self.created_at,
            scheduled_for: self.scheduled_for,
            dispatched_at: self.dispatched_at,
            answered_at: self.answered_at,
            ended_at: self.ended_at,
            ended_reason: &self.ended_reason,
            duration_sec: self.duration_sec,
            transcript_path: &self.transcript_path,
            error_detail: &self.error_detail,
            attempt: self.attempt,
            retries_left: self.retries_left,
        }
    }
}

/// Renders one call of a list page as one JSON value.
pub type RenderCall = fn(&CallRow<'_>, &mut Vec<u8>) -> serde_json::Result<()>;

macro_rules! call_columns {
    () => {
        "call_id, tenant, requested_by, phone, display_name, email, model, \
    voice, language, max_seconds, retries, retry_delay_minutes, trunk_id, status, created_at, \
    scheduled_for, dispatched_at, answered_at, ended_at, ended_reason, duration_sec, \
    transcript_path, error_detail, attempt, retries_left"
    };
}

fn call_from_row(row: &impl RowExt) -> Result<CallRecord> {
    let id: String = col(row, "call_id")?;
    let status: String = col(row, "status")?;
    Ok(CallRecord {
        call_id: CallId::parse(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        tenant: col(row, "tenant")?,
        requested_by: col(row, "requested_by")?,
        phone: col(row, "phone")?,
        display_name: col(row, "display_name")?,
        email: col(row, "email")?,
        model: col(row, "model")?,
        voice: col(row, "voice")?,
        language: col(row, "language")?,
        max_seconds: col(row, "max_seconds")?,
        retries: col(row, "retries")?,
        retry_delay_minutes: col(row, "retry_delay_minutes")?,
        trunk_id: col(row, "trunk_id")?,
        status: CallStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("call status {status}")))?,
        created_at: ms(row, "created_at")?,
        scheduled_for: opt_ms(row, "scheduled_for")?,
        dispatched_at: opt_ms(row, "dispatched_at")?,
        answered_at: opt_ms(row, "answered_at")?,
        ended_at: opt_ms(row, "ended_at")?,
        ended_reason: col(row, "ended_reason")?,
        duration_sec: col(row, "duration_sec")?,
        transcript_path: col(row, "transcript_path")?,
        error_detail: col(row, "error_detail")?,
        attempt: col(row, "attempt")?,
        retries_left: col(row, "retries_left")?,
    })
}

/// Reads a row selected with `call_columns!` and then `row_version`, in
/// place. The same checks as `call_from_row`: a malformed id or an
/// unknown status is a corrupt row.
fn call_row<'r>(row: &'r Row<'_>) -> Result<(CallRow<'r>, i64)> {
    let mut c = Cols::new(row);
    let call = CallRow {
        call_id: c.text()?,
        tenant: c.text()?,
        requested_by: c.text()?,
        phone: c.text()?,
        display_name: c.text()?,
        email: c.text()?,
        model: c.text()?,
        voice: c.text()?,
        language: c.text()?,
        max_seconds: c.int()?,
        retries: c.int()?,
        retry_delay_minutes: c.int()?,
        trunk_id: c.opt_text()?,
        status: {
            let s = c.text()?;
            CallStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("call status {s}")))?
        },
        created_at: UtcMillis(c.int()?),
        scheduled_for: c.opt_int()?.map(UtcMillis),
        dispatched_at: c.opt_int()?.map(UtcMillis),
        answered_at: c.opt_int()?.map(UtcMillis),
        ended_at: c.opt_int()?.map(UtcMillis),
        ended_reason: c.text()?,
        duration_sec: c.int()?,
        transcript_path: c.text()?,
        error_detail: c.text()?,
        attempt: c.int()?,
        retries_left: c.int()?,
    };
    let version = c.int()?;
    c.finish()?;
    CallId::parse(call.call_id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok((call, version))
}

/// ` AND status IN ('a', 'b')` for a status filter (empty: no clause).
/// Statuses are from a closed enum, so inlining their spellings is safe and
/// lets both dialects use the (tenant, status, ...) index.
fn status_clause(statuses: &[CallStatus]) -> String {
    if statuses.is_empty() {
        return String::new();
    }
    let list: Vec<String> = statuses
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    format!(" AND status IN ({})", list.join(", "))
}

/// A list page's total and rows on a SQLite reader connection, from one
/// snapshot: the rows' ids and versions from the list index, each row's
/// JSON from the cache of rendered rows or, for a version not in it, read
/// and rendered here (`row_cache`).
fn read_calls(
    conn: &Conn,
    cache: &RowCache,
    tenant: &str,
    statuses: &[CallStatus],
    limit: i64,
    offset: i64,
    render: RenderCall,
) -> Result<JsonPage> {
    // The statement text is the cache key: the set of statuses is put in
    // one order, so each set is one cached statement. The unfiltered list,
    // the common one, needs no text built.
    const COUNT: &str = "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM call_counts \
                         WHERE tenant = ?1";
    const KEYS: &str = "SELECT call_id, row_version FROM calls WHERE tenant = ?1";
    const ORDER: &str = " ORDER BY created_at DESC, call_id DESC LIMIT ?2 OFFSET ?3";
    const KEYS_ALL: &str = "SELECT call_id, row_version FROM calls WHERE tenant = ?1 \
                            ORDER BY created_at DESC, call_id DESC LIMIT ?2 OFFSET ?3";
    const ROWS: &str = concat!(
        "SELECT ",
        call_columns!(),
        ", row_version FROM calls WHERE tenant = ?1"
    );
    const ROWS_ALL: &str = concat!(
        "SELECT ",
        call_columns!(),
        ", row_version FROM calls WHERE tenant = ?1",
        " ORDER BY created_at DESC, call_id DESC LIMIT ?2 OFFSET ?3"
    );
    let (count_sql, keys_sql, rows_sql) = if statuses.is_empty() {
        (
            std::borrow::Cow::Borrowed(COUNT),
            std::borrow::Cow::Borrowed(KEYS_ALL),
            std::borrow::Cow::Borrowed(ROWS_ALL),
        )
    } else {
        let clause = status_clause(statuses);
        (
            std::borrow::Cow::Owned(format!("{COUNT}{clause}")),
            std::borrow::Cow::Owned(format!("{KEYS}{clause}{ORDER}")),
            std::borrow::Cow::Owned(format!("{ROWS}{clause}{ORDER}")),
        )
    };
    sqlite_read::snapshot(conn, || {
        let total = conn
            .one_row(&count_sql, &[Param::Text(tenant)], |r| Cols::new(r).int())?
            .unwrap_or(0);
        let mut page = JsonPage::new(total, limit);
        row_cache::cached_page(
            conn,
            cache,
            render as usize,
            &mut page,
            &keys_sql,
            &rows_sql,
            &[Param::Text(tenant), Param::Int(limit), Param::Int(offset)],
            |row, id, out| {
                let (call, version) = call_row(row)?;
                if call.call_id.as_bytes() != id {
                    return Err(StoreError::Corrupt(format!(
                        "page row {} where its keys had {}",
                        call.call_id,
                        String::from_utf8_lossy(id)
                    )));
                }
                render(&call, out)?;
                Ok(version)
            },
        )?;
        Ok(page)
    })
}

/// Which calls a list shows.
#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    /// Empty: every status.
    pub statuses: Vec<CallStatus>,
}

/// What `POST /calls/{id}/hangup` found and did.
#[derive(Debug, Clone)]
pub enum HangupResult {
    NotFound,
    /// Already over; nothing changed.
    Noop(CallStatus),
    /// It had not reached the switch: now `cancelled`. Or its attempt was
    /// ended as lost with the node named (waiting for its retry), which
    /// may still carry it: it is hung up there once the node answers
    /// (`SwitchLink::hang_up_lost`).
    Cancelled {
        lost_on: Option<String>,
    },
    /// It is on a switch (the node's URL, and the attempt there): only
    /// the switch can end it.
    OnSwitch(CallStatus, String, i64),
}

/// The trunk a new call names was deleted before it was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrunkGone;

/// The INSERT of one call row, as a query to execute on either backend.
macro_rules! insert_call_query {
    ($c:expr) => {{
        let c: &NewCall = $c;
        sqlx::query(
            "INSERT INTO calls (call_id, tenant, requested_by, phone, display_name, email, \
             system_prompt, ai_api_key, model, voice, language, max_seconds, retries, \
             retry_delay_minutes, trunk_id, status, created_at, scheduled_for, next_attempt_at, \
             retries_left, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
             $18, $19, $20, $17)",
        )
        .bind(c.call_id.as_str())
        .bind(&c.tenant)
        .bind(&c.requested_by)
        .bind(c.phone.as_str())
        .bind(&c.display_name)
        .bind(&c.email)
        .bind(&c.system_prompt)
        .bind(&c.ai_api_key)
        .bind(&c.model)
        .bind(&c.voice)
        .bind(&c.language)
        .bind(c.max_seconds)
        .bind(c.retries)
        .bind(c.retry_delay_minutes)
        .bind(c.trunk_id.as_ref().map(TrunkId::as_str))
        .bind(c.status.as_str())
        .bind(c.created_at.0)
        .bind(c.scheduled_for.map(|t| t.0))
        .bind(c.next_attempt_at.0)
        .bind(c.retries)
    }};
}

impl Store {
    /// Outbound calls not yet ended, by status (every tenant): what the
    /// control plane has in hand, for its metrics. Served by the
    /// `(status, next_attempt_at)` index, whatever the history holds.
    pub async fn live_call_counts(&self) -> Result<Vec<(String, i64)>> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, (String, i64)>(
                "SELECT status, COUNT(*) FROM calls WHERE status IN \
                 ('scheduled', 'dispatching', 'in-flight', 'ended-failed-retry-pending') \
                 GROUP BY status",
            )
            .fetch_all(pool)
            .await?)
        })
    }

    /// Stores a call and adds its number to the tenant's whitelist, in one
    /// transaction. Returns the record and whether the number was new to the
    /// whitelist.
    pub async fn insert_call(&self, c: &NewCall) -> Result<(CallRecord, bool)> {
        self.insert_call_checked(c)
            .await?
            .map_err(|TrunkGone| StoreError::Corrupt(format!("trunk {:?} is gone", c.trunk_id)))
    }

    /// Stores a new call (see [`Store::insert_call`]), unless the trunk it
    /// names is gone. The trunks it may be dialled through (the one it
    /// names, or all of the tenant's for one that names none) are read
    /// inside the same transaction, `FOR SHARE` on PostgreSQL, so a trunk
    /// DELETE running at the same moment either sees this call (and is
    /// refused as in use) or has committed first (and this call is
    /// refused, or, naming no trunk, waits for one as a scheduled call
    /// may).
    pub async fn insert_call_checked(
        &self,
        c: &NewCall,
    ) -> Result<std::result::Result<(CallRecord, bool), TrunkGone>> {
        let prompt_lock = self.prompt_share_lock(&c.system_prompt);
        let lock = if matches!(self.pool, super::Pool::Postgres(_)) {
            "SELECT id FROM trunks WHERE tenant = $1 AND ($2 IS NULL OR id = $2) FOR SHARE"
        } else {
            "SELECT id FROM trunks WHERE tenant = $1 AND ($2 IS NULL OR id = $2)"
        };
        on_pool!(self, |pool| {
            let mut tx = pool.write_tx().await?;
            let trunk = c.trunk_id.as_ref().map(|t| t.as_str());
            let found: Vec<String> = sqlx::query_scalar(lock)
                .bind(&c.tenant)
                .bind(trunk)
                .fetch_all(&mut *tx)
                .await?;
            if trunk.is_some() && found.is_empty() {
                return Ok(Err(TrunkGone));
            }
            // A tenant prompt the call names, read FOR SHARE likewise: a
            // DELETE of it at the same moment either counts this call
            // (and is refused) or has committed first.
            if let Some(lock) = prompt_lock {
                sqlx::query(lock)
                    .bind(&c.tenant)
                    .bind(&c.system_prompt)
                    .fetch_optional(&mut *tx)
                    .await?;
            }
            let added = sqlx::query(
                "INSERT INTO whitelist (tenant, phone, added_at, added_by) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&c.tenant)
            .bind(c.phone.as_str())
            .bind(c.created_at.0)
            .bind(&c.requested_by)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            insert_call_query!(c).execute(&mut *tx).await?;
            tx.commit().await?;
            if added {
                self.config_changed();
            }
            let record = self
                .call(&c.tenant, &c.call_id)
                .await?
                .ok_or_else(|| StoreError::Corrupt("inserted call vanished".into()))?;
            Ok(Ok((record, added)))
        })
    }

    pub async fn call(&self, tenant: &str, id: &CallId) -> Result<Option<CallRecord>> {
        on_pool!(self, |pool| {
            let sql = concat!(
                "SELECT ",
                call_columns!(),
                " FROM calls WHERE tenant = $1 AND call_id = $2"
            );
            let row = sqlx::query(sql)
                .bind(tenant)
                .bind(id.as_str())
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(call_from_row).transpose()
        })
    }

    /// Newest first.
    pub async fn list_calls(
        &self,
        tenant: &str,
        filter: &CallFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Page<CallRecord>> {
        on_pool!(self, |pool| {
            let status_clause = status_clause(&filter.statuses);
            // Totals come from the trigger-maintained counts (migration 0002).
            let total: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM call_counts WHERE tenant = $1{status_clause}"
            )))
            .bind(tenant)
            .fetch_one(pool)
            .await?;
            let sql = format!(
                concat!(
                    "SELECT ",
                    call_columns!(),
                    " FROM calls WHERE tenant = $1{} ORDER BY created_at DESC, call_id DESC \
                     LIMIT $2 OFFSET $3"
                ),
                status_clause
            );
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(tenant)
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await?;
            let items = rows.iter().map(call_from_row).collect::<Result<_>>()?;
            Ok(Page { items, total })
        })
    }

    /// `list_calls` with each row rendered by `render` as it is read: on
    /// SQLite in place on the read path, elsewhere from the records.
    pub async fn list_calls_json(
        &self,
        tenant: &str,
        filter: &CallFilter,
        limit: i64,
        offset: i64,
        render: RenderCall,
    ) -> Result<JsonPage> {
        let Some(readers) = &self.readers else {
            let page = self.list_calls(tenant, filter, limit, offset).await?;
            let mut out = JsonPage::new(page.total, limit);
            for c in &page.items {
                out.push_with(|buf| Ok(render(&c.as_row(), buf)?))?;
            }
            return Ok(out);
        };
        let tenant = tenant.to_owned();
        let mut statuses = filter.statuses.clone();
        statuses.sort_by_key(|s| CallStatus::ALL.iter().position(|a| a == s));
        statuses.dedup();
        // Without a status filter the page walks the (tenant, created_at)
        // index in order: its cost is bounded by offset + limit.
        let short = statuses.is_empty() && sqlite_read::short_page(limit, offset);
        let caches = Arc::clone(&self.row_cache);
        let read = move |conn: &Conn| {
            read_calls(
                conn,
                &caches.calls,
                &tenant,
                &statuses,
                limit,
                offset,
                render,
            )
        };
        if short {
            readers.run_short(read).await
        } else {
            readers.run(read).await
        }
    }

    /// A hangup asked for a call its node could not be reached to hang
    /// up: its retries are called off, so however its attempt ends (lost
    /// with the node, most likely), the callee is not dialled again; and
    /// the request is recorded, so that a dispatch of it still under way
    /// cancels it instead of placing it (migration 0020). False if the
    /// call is no longer on a switch.
    pub async fn note_hangup_request(
        &self,
        tenant: &str,
        id: &CallId,
        now: UtcMillis,
    ) -> Result<bool> {
        on_pool!(self, |pool| {
            let n = sqlx::query(
                "UPDATE calls SET retries_left = 0, hangup_requested_at = $3, updated_at = $3 \
                 WHERE tenant = $1 AND call_id = $2 AND status IN ('dispatching', 'in-flight')",
            )
            .bind(tenant)
            .bind(id.as_str())
            .bind(now.0)
            .execute(pool)
            .await?
            .rows_affected();
            Ok(n > 0)
        })
    }

    /// Cancels a call that has not reached a switch; reports what it found
    /// otherwise. The status check and the update are one transaction (the
    /// row locked on PostgreSQL), so a scheduler that claims the call at
    /// the same moment either wins (the call is `dispatching`, the switch
    /// ends it) or loses (it is cancelled). A cancelled call's email is
    /// queued in the same transaction.
    pub async fn hangup_unplaced(
        &self,
        tenant: &str,
        id: &CallId,
        now: UtcMillis,
    ) -> Result<HangupResult> {
        self.hangup_where(tenant, id, now, None).await
    }

    /// [`Self::hangup_unplaced`] of a call whose attempt `node_url` said it
    /// has not placed (and, told so by the hangup, never will: its
    /// PlaceCall, if still on its way, is refused there): one still
    /// `dispatching` there is cancelled as one not handed to a node yet.
    pub async fn hangup_unknown_to_node(
        &self,
        tenant: &str,
        id: &CallId,
        node_url: &str,
        attempt: i64,
        now: UtcMillis,
    ) -> Result<HangupResult> {
        self.hangup_where(tenant, id, now, Some((node_url, attempt)))
            .await
    }

    /// Cancels a call this dispatcher holds the claim of (its lease
    /// token) and has placed nowhere (a hangup was asked for meanwhile):
    /// false if the claim is no longer its own.
    pub async fn cancel_claimed(&self, call: &super::DispatchCall, now: UtcMillis) -> Result<bool> {
        let mut tx = self.begin().await?;
        let Some(live) = tx.lock_call(call.call_id.as_str()).await? else {
            return Ok(false);
        };
        if live.status != CallStatus::Dispatching || live.lease_token != Some(call.lease_token) {
            return Ok(false);
        }
        self.cancel_locked(tx, &live, now).await?;
        Ok(true)
    }

    async fn hangup_where(
        &self,
        tenant: &str,
        id: &CallId,
        now: UtcMillis,
        unknown_to: Option<(&str, i64)>,
    ) -> Result<HangupResult> {
        let mut tx = self.begin().await?;
        let Some(call) = tx
            .lock_call(id.as_str())
            .await?
            .filter(|c| c.tenant == tenant)
        else {
            return Ok(HangupResult::NotFound);
        };
        match (call.status, &call.node_url) {
            (s, _) if s.is_terminal() => Ok(HangupResult::Noop(s)),
            // Not handed to a node yet: a dispatcher holding the claim
            // finds it cancelled when it records its node, and stops.
            (CallStatus::Scheduled | CallStatus::EndedFailedRetryPending, _)
            | (CallStatus::Dispatching, None) => self.cancel_locked(tx, &call, now).await,
            (CallStatus::Dispatching, Some(node))
                if unknown_to == Some((node.as_str(), call.attempt)) =>
            {
                self.cancel_locked(tx, &call, now).await
            }
            (s, Some(node)) => Ok(HangupResult::OnSwitch(s, node.clone(), call.attempt)),
            (s, None) => Err(StoreError::Corrupt(format!(
                "call {id} is {s} without a switch node"
            ))),
        }
    }

    /// Cancels the call locked in `tx` and commits.
    async fn cancel_locked(
        &self,
        mut tx: super::tx::StoreTx,
        call: &super::dispatch::LiveCall,
        now: UtcMillis,
    ) -> Result<HangupResult> {
        let (tenant, id) = (call.tenant.as_str(), call.call_id.as_str());
        // A call still `dispatching` was claimed (its attempt counted, its
        // dispatch time set) but rang nowhere: it is recorded as not
        // dialled in that attempt, as a deferred dispatch is.
        let mut call = call.clone();
        if call.status == CallStatus::Dispatching {
            call.attempt = (call.attempt - 1).max(0);
            call.dispatched_at = None;
        }
        let call = &call;
        on_tx!(tx, |t| {
            sqlx::query(
                "UPDATE calls SET status = 'cancelled', ended_reason = 'cancelled', \
                 error_detail = '', duration_sec = 0, input_turns = 0, output_turns = 0, \
                 attempt = CASE WHEN status = 'dispatching' AND attempt > 0 \
                     THEN attempt - 1 ELSE attempt END, \
                 dispatched_at = CASE WHEN status = 'dispatching' THEN NULL \
                     ELSE dispatched_at END, \
                 ended_at = $1, next_attempt_at = NULL, lease_until = NULL, \
                 lease_token = NULL, updated_at = $1 \
                 WHERE tenant = $2 AND call_id = $3",
            )
            .bind(now.0)
            .bind(tenant)
            .bind(id)
            .execute(&mut **t)
            .await?;
        });
        let end = AttemptEnd {
            outcome: "cancelled".into(),
            ended_at: now,
            ..AttemptEnd::default()
        };
        let ending = super::emails::CallEnd {
            status: CallStatus::Cancelled,
            outcome: "cancelled",
            detail: "",
            end: &end,
            answered_at: None,
            transcript: None,
        };
        tx.queue_call_email(call, &ending, false, now).await?;
        tx.ends(super::tx::Ended::Attempt(
            CallStatus::Cancelled,
            "cancelled",
        ));
        // The glossary's `cancelled` ("Scheduled call was
        // cancelled") is an outbound-ai outcome: subscribers hear
        // of it as they do of every other end.
        tx.record_event(
            &call.tenant,
            EventName::OutboundAiFinished,
            super::dispatch::finished_data(call, &end, "cancelled", ""),
            Some(&call.call_id),
            now,
        )
        .await?;
        tx.commit().await?;
        let lost_on = call
            .lost_node
            .clone()
            .filter(|_| call.lost_attempt == Some(call.attempt));
        Ok(HangupResult::Cancelled { lost_on })
    }

    /// Whether the number is on the tenant's whitelist.
    pub async fn is_whitelisted(&self, tenant: &str, phone: &str) -> Result<bool> {
        on_pool!(self, |pool| {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM whitelist WHERE tenant = $1 AND phone = $2",
            )
            .bind(tenant)
            .bind(phone)
            .fetch_one(pool)
            .await?;
            Ok(n > 0)
        })
    }

    /// Bulk insert used by the benchmark seeder and tests: many calls in one
    /// transaction, without whitelist bookkeeping.
    pub async fn seed_calls(&self, calls: &[NewCall]) -> Result<()> {
        on_pool!(self, |pool| {
            let mut tx = pool.write_tx().await?;
            for c in calls {
                insert_call_query!(c).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }
}
