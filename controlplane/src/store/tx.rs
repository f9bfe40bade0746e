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

use std::path::PathBuf;
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
    /// An end recorded as lost that its node's own account corrected
    /// (counted once as lost already): inbound or not, and the corrected
    /// outcome label.
    Correction {
        inbound: bool,
        outcome: &'static str,
    },
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
    /// Files the committed state no longer names (a transcript its
    /// correction replaced): removed once the commit is done, so a
    /// transaction that rolls back keeps what its rows still point at.
    obsolete: Vec<PathBuf>,
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
            obsolete: Vec::new(),
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
                Ended::Correction { inbound, outcome } => {
                    self.call_ends.correction(inbound, outcome);
                }
            }
        }
        for path in self.obsolete {
            if let Err(e) = tokio::fs::remove_file(&path).await
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e,
                    "removing a file the committed records no longer name");
            }
        }
        Ok(())
    }

    /// Counts a call this transaction ends, once it commits.
    pub(crate) fn ends(&mut self, ended: Ended) {
        self.ended.push(ended);
    }

    /// Removes `path` once this transaction commits (not if it rolls
    /// back).
    pub(crate) fn remove_after_commit(&mut self, path: PathBuf) {
        self.obsolete.push(path);
    }
}
