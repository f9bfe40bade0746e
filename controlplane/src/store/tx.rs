//! A write transaction that outlives one store call, so a caller can record
//! an event (and its webhook deliveries) in the same commit as the state
//! change that caused it: either both happen or neither does.
//!
//! ```ignore
//! let mut tx = store.begin().await?;
//! // ... the caller's own writes on `tx` ...
//! tx.record_event(tenant, EventName::CallEnded, data, Some(call_id), now).await?;
//! tx.commit().await?; // wakes the delivery workers
//! ```

use std::sync::Arc;

use tokio::sync::Notify;

use super::{Pool, Result, Store, WritePool};
use crate::metrics::CallEnds;
use codeb_types::CallStatus;

/// A call this transaction ends, counted when it commits.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ended {
    /// An outbound attempt, by the status it left its call in, and its
    /// outcome label (`metrics::outcome_label`).
    Attempt(CallStatus, &'static str),
    /// An inbound call, by its outcome label.
    Inbound(&'static str),
}

pub(crate) enum TxInner {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// Runs `$body` with `$t` bound to the native transaction (`&mut
/// sqlx::Transaction<..>`; execute on `&mut **$t`); compiled once per
/// backend, like `on_pool!`.
macro_rules! on_tx {
    ($tx:expr, |$t:ident| $body:expr) => {
        match &mut $tx.inner {
            $crate::store::tx::TxInner::Sqlite($t) => $body,
            $crate::store::tx::TxInner::Postgres($t) => $body,
        }
    };
}
pub(crate) use on_tx;

/// An open write transaction (`BEGIN IMMEDIATE` on SQLite). Dropping it
/// without `commit` rolls it back.
pub struct StoreTx {
    pub(crate) inner: TxInner,
    wake: Arc<Notify>,
    /// Set when deliveries were queued, so the commit wakes the workers.
    pub(crate) queued_deliveries: bool,
    /// Calls this transaction ends, counted in `call_ends` once it commits.
    ended: Vec<Ended>,
    call_ends: CallEnds,
}

impl std::fmt::Debug for StoreTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreTx")
            .field("queued_deliveries", &self.queued_deliveries)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<StoreTx> {
        let inner = match &self.pool {
            Pool::Sqlite(p) => TxInner::Sqlite(p.write_tx().await?),
            Pool::Postgres(p) => TxInner::Postgres(p.write_tx().await?),
        };
        Ok(StoreTx {
            inner,
            wake: self.outbox_wake.clone(),
            queued_deliveries: false,
            ended: Vec::new(),
            call_ends: self.call_ends.clone(),
        })
    }
}

impl StoreTx {
    /// Commits; if deliveries were queued, wakes this process's delivery
    /// workers (other replicas hear of them through PostgreSQL `NOTIFY`,
    /// which the same commit publishes).
    pub async fn commit(self) -> Result<()> {
        match self.inner {
            TxInner::Sqlite(t) => t.commit().await?,
            TxInner::Postgres(t) => t.commit().await?,
        }
        if self.queued_deliveries {
            self.wake.notify_one();
        }
        for e in self.ended {
            match e {
                Ended::Attempt(status, outcome) => self.call_ends.attempt(status, outcome),
                Ended::Inbound(outcome) => self.call_ends.inbound(outcome),
            }
        }
        Ok(())
    }

    /// Counts a call this transaction ends, once it commits.
    pub(crate) fn ends(&mut self, ended: Ended) {
        self.ended.push(ended);
    }
}
