//! Storage: one `Store` over SQLite (embedded default, WAL) or PostgreSQL,
//! chosen by the database URL at start.
//!
//! Every query is written once and compiled for both backends: a store
//! method's body sits inside `on_pool!`, which expands it once per native
//! sqlx pool, so there is no runtime-generic driver converting every value
//! on the hot path. The schema keeps the SQL portable: times are epoch
//! milliseconds (`BIGINT`), flags are 0/1 `BIGINT`s, text is `TEXT`,
//! placeholders are `$1..$n` (SQLite accepts that spelling). Where the
//! dialects differ (migrations, write-transaction start, text search) the
//! `Dialect` decides. Every query is scoped by tenant; a row of another
//! tenant is indistinguishable from a missing one.

mod calls;
mod dispatch;
mod emails;
mod inbound;
mod keys;
mod lost_hangups;
mod numbers;
mod outbox;
mod prompts;
mod routes;
mod row_cache;
mod shares;
mod sip_users;
mod sqlite_read;
mod switch_config;
mod switch_events;
mod transcripts;
mod trunks;
pub(crate) mod tx;
mod users;
mod webhooks;

pub use calls::{CallFilter, CallRecord, CallRow, HangupResult, NewCall, RenderCall};
pub use dispatch::{
    AttemptEnd, DISPATCH_LEASE_MS, Deferral, DispatchCall, LiveCall, Lost, PLACED_RING_SECONDS,
    Swept, cut as cut_text, retryable_outcome,
};
pub use emails::{ClaimedEmail, EmailRecord, EmailState, EmailStep};
pub use inbound::InboundCallRecord;
pub use keys::{ApiKeyRecord, RefreshOutcome, RefreshToken};
pub use numbers::NumberRecord;
pub use outbox::{
    AttemptLog, AttemptOutcome, Audience, ClaimedDelivery, DeliveryRecord, DeliveryState, NextStep,
    Paused, ReplayOutcome, Room, event_body,
};
pub use prompts::{
    BUILTIN_PROMPTS, BuiltinPrompt, MAX_PROMPT_NAME, MAX_PROMPT_TEXT, MAX_SLUG, PromptDelete,
    PromptRecord, builtin_prompt, is_slug,
};
pub use routes::{InboundRoute, RouteError};
pub use shares::{NewShare, ShareRecord, ShareView};
pub use sip_users::SipUserRecord;
pub use switch_config::{ConfigRows, TenantRoute};
pub use switch_events::{
    Applied, Cursor, EventKind, InboundStart, LOST_HANGUP_OUTCOME, MAX_INBOUND_FIELD, Speaker,
    SwitchEvent,
};
pub use transcripts::{RenderTranscript, TranscriptFilter, TranscriptRecord, TranscriptRow, Turn};
pub use trunks::{DefaultTrunk, TrunkRecord};
pub use tx::StoreTx;
pub use users::{Role, UserRecord};
pub use webhooks::SubscriptionRecord;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use codeb_types::UtcMillis;

use crate::metrics::CallEnds;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{PgPool, Row, SqlStr, SqlitePool};
use tokio::sync::Notify;

/// The SQL migrations, embedded by `build.rs`: (version, description, SQL).
mod embedded {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}

static SQLITE_MIGRATIONS: LazyLock<Migrator> = LazyLock::new(|| migrator(embedded::SQLITE));
static POSTGRES_MIGRATIONS: LazyLock<Migrator> = LazyLock::new(|| migrator(embedded::POSTGRES));

/// A migrator over embedded migrations, as `sqlx::migrate!` builds one:
/// the checksum is of the SQL as written, and a file that starts with
/// `-- no-transaction` runs outside a transaction.
fn migrator(list: &'static [(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        list.iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    SqlStr::from_static(sql),
                    sql.starts_with("-- no-transaction"),
                )
            })
            .collect(),
    )
}

/// Which SQL dialect the pool speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] sqlite_read::SqliteError),
    #[error("database read pool: {0}")]
    ReadPool(&'static str),
    #[error("rendering a row: {0}")]
    Render(#[from] serde_json::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot connect: {0}")]
    Unreachable(String),
    #[error("unsupported database URL (expected sqlite:// or postgres://): {0}")]
    UnsupportedUrl(String),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
    #[error("file error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the native pool of whichever backend
/// the store has; the body is compiled once per backend.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// The storage handle shared by the API, the CLI and background tasks.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: Pool,
    /// SQLite (a database file): the read path of the hot list pages and
    /// key lookups (`sqlite_read`); None on PostgreSQL and in-memory SQLite.
    readers: Option<Arc<sqlite_read::Readers>>,
    /// The list pages' rendered rows, by row version (`row_cache`; used
    /// with `readers`).
    row_cache: Arc<row_cache::RowCaches>,
    dialect: Dialect,
    data_dir: Arc<Path>,
    /// Woken when webhook deliveries become due in this process (an event
    /// was recorded, a subscription resumed, a delivery replayed).
    outbox_wake: Arc<Notify>,
    /// Woken when the routing configuration changed in this process.
    config_wake: Arc<Notify>,
    /// Calls ended by this process's commits, for the metrics.
    call_ends: CallEnds,
    /// What one unit of a call's `retryDelayMinutes` is, ms (a minute;
    /// `CODEB_CALL_RETRY_DELAY_UNIT` shortens it for tests).
    retry_delay_unit_ms: i64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dialect", &self.dialect)
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl Store {
    /// The calls this process's commits ended (shown by the metrics).
    pub fn call_ends(&self) -> &CallEnds {
        &self.call_ends
    }

    /// Opens the database behind `url` and runs pending migrations.
    pub async fn open(url: &str, data_dir: &Path) -> Result<Store> {
        let store = Self::connect(url, data_dir).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Opens the database without migrating (for `codeb migrate` and tests).
    pub async fn connect(url: &str, data_dir: &Path) -> Result<Store> {
        let mut readers = None;
        let (pool, dialect) = if url.starts_with("sqlite:") {
            std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
                path: data_dir.to_owned(),
                source,
            })?;
            // WAL lets readers run beside the single writer; NORMAL sync is
            // durable across process crashes; the busy timeout queues
            // writers instead of failing them.
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options.clone())
                .await?;
            // The pool has created the file by now; an in-memory database
            // has none, and keeps every read on the pool.
            let file = options.get_filename();
            if file.is_file() {
                readers = Some(Arc::new(sqlite_read::Readers::open(
                    file,
                    sqlite_read::default_threads(),
                )?));
            }
            (Pool::Sqlite(pool), Dialect::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?;
            // One connection first: a pool that cannot connect says only
            // that it timed out; this says why (refused, password, no such
            // database, no route).
            let unreachable = StoreError::Unreachable;
            match tokio::time::timeout(
                Duration::from_secs(10),
                sqlx::ConnectOptions::connect(&options),
            )
            .await
            {
                Ok(Ok(c)) => {
                    let _ = sqlx::Connection::close(c).await;
                }
                Ok(Err(e)) => return Err(unreachable(e.to_string())),
                Err(_) => return Err(unreachable("no answer within 10 s".into())),
            }
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            (Pool::Postgres(pool), Dialect::Postgres)
        } else {
            return Err(StoreError::UnsupportedUrl(redact_url(url)));
        };
        Ok(Store {
            pool,
            readers,
            row_cache: Arc::default(),
            dialect,
            data_dir: Arc::from(data_dir),
            outbox_wake: Arc::new(Notify::new()),
            config_wake: Arc::new(Notify::new()),
            call_ends: CallEnds::default(),
            retry_delay_unit_ms: 60_000,
        })
    }

    /// Makes one unit of `retryDelayMinutes` last `unit` instead of a
    /// minute (`CODEB_CALL_RETRY_DELAY_UNIT`, for tests).
    pub fn with_retry_delay_unit(mut self, unit: Duration) -> Store {
        self.retry_delay_unit_ms = i64::try_from(unit.as_millis()).unwrap_or(i64::MAX);
        self
    }

    pub async fn migrate(&self) -> Result<()> {
        match &self.pool {
            Pool::Sqlite(p) => SQLITE_MIGRATIONS.run(p).await?,
            Pool::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await?,
        }
        Ok(())
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Readiness: the database answers a trivial query.
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    pub async fn close(&self) {
        if let Some(r) = &self.readers {
            let r = Arc::clone(r);
            // Joining waits for reads in progress: off the async workers.
            let _ = tokio::task::spawn_blocking(move || r.close()).await;
        }
        on_pool!(self, |pool| pool.close().await)
    }
}

/// Starting a transaction that will write. SQLite takes the write lock up
/// front (`BEGIN IMMEDIATE`), so two writers queue on the busy timeout
/// instead of one failing when it upgrades a read lock.
pub(crate) trait WritePool {
    type Db: sqlx::Database;
    fn write_tx(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self::Db>>> + Send;
}

impl WritePool for SqlitePool {
    type Db = sqlx::Sqlite;
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.begin_with("BEGIN IMMEDIATE").await?)
    }
}

impl WritePool for PgPool {
    type Db = sqlx::Postgres;
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        Ok(self.begin().await?)
    }
}

/// Removes a password from a database URL before it is shown anywhere.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparseable URL>".to_owned(),
    }
}

// Row access: the column types the schema uses, read the same way from
// either backend's rows. A column of the wrong type is a corrupt row,
// reported with the column name rather than as a panic.

pub(crate) trait Cell: Sized {
    fn from_sqlite(row: &SqliteRow, name: &str) -> std::result::Result<Self, sqlx::Error>;
    fn from_pg(row: &PgRow, name: &str) -> std::result::Result<Self, sqlx::Error>;
}

macro_rules! cell {
    ($($t:ty),*) => {$(
        impl Cell for $t {
            fn from_sqlite(row: &SqliteRow, name: &str) -> std::result::Result<Self, sqlx::Error> {
                row.try_get(name)
            }
            fn from_pg(row: &PgRow, name: &str) -> std::result::Result<Self, sqlx::Error> {
                row.try_get(name)
            }
        }
    )*};
}
cell!(String, i64, Option<String>, Option<i64>);

pub(crate) trait RowExt {
    fn cell<T: Cell>(&self, name: &str) -> std::result::Result<T, sqlx::Error>;
}

impl RowExt for SqliteRow {
    fn cell<T: Cell>(&self, name: &str) -> std::result::Result<T, sqlx::Error> {
        T::from_sqlite(self, name)
    }
}

impl RowExt for PgRow {
    fn cell<T: Cell>(&self, name: &str) -> std::result::Result<T, sqlx::Error> {
        T::from_pg(self, name)
    }
}

fn col<T: Cell>(row: &impl RowExt, name: &str) -> Result<T> {
    row.cell::<T>(name)
        .map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
}

fn flag(row: &impl RowExt, name: &str) -> Result<bool> {
    Ok(col::<i64>(row, name)? != 0)
}

fn opt_ms(row: &impl RowExt, name: &str) -> Result<Option<UtcMillis>> {
    Ok(col::<Option<i64>>(row, name)?.map(UtcMillis))
}

fn ms(row: &impl RowExt, name: &str) -> Result<UtcMillis> {
    Ok(UtcMillis(col::<i64>(row, name)?))
}

/// Escapes `%`, `_` and `\` for a `LIKE ... ESCAPE '\'` pattern.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A page of rows plus the total that matched the filter.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
}

/// A page rendered while its rows were read: the rows' JSON values
/// separated by commas (the inside of the envelope's `data` array), so no
/// row is copied into an owned record first. The buffer starts with the
/// envelope's opening (`JsonPage::HEAD`), so the response is finished in
/// the same buffer rather than copied into a new one.
#[derive(Debug, Clone)]
pub struct JsonPage {
    buf: Vec<u8>,
    pub rows: usize,
    pub total: i64,
    /// The most rows the page was asked for (its limit, bounded).
    expected_rows: usize,
}

impl JsonPage {
    /// What the buffer starts with: the list envelope up to its rows.
    pub const HEAD: &'static [u8] = b"{\"data\":[";

    pub fn new(total: i64, limit: i64) -> JsonPage {
        // About what a call row takes, so a page rarely reallocates.
        let rows = usize::try_from(limit.clamp(0, 500)).unwrap_or(0);
        let mut buf = Vec::with_capacity(rows * 640 + 256);
        buf.extend_from_slice(Self::HEAD);
        JsonPage {
            buf,
            rows: 0,
            total,
            expected_rows: rows,
        }
    }

    /// The most rows the page was asked for (at most 500), for sizing what
    /// is collected beside it.
    pub(crate) fn expected_rows(&self) -> usize {
        self.expected_rows
    }

    /// Appends one row, rendered by `render` as a single JSON value.
    pub fn push_with(&mut self, render: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> Result<()> {
        if self.rows > 0 {
            self.buf.push(b',');
        }
        render(&mut self.buf)?;
        self.rows += 1;
        Ok(())
    }

    /// The rows: JSON values separated by commas.
    pub fn items(&self) -> &[u8] {
        &self.buf[Self::HEAD.len()..]
    }

    /// The whole buffer: `HEAD` and then the rows, for the envelope to be
    /// finished in.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod connect_tests {
    use super::Store;

    /// A PostgreSQL that cannot be reached is named with the reason, and
    /// the URL's password is not.
    #[tokio::test]
    async fn an_unreachable_postgres_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let err = Store::connect("postgres://codeb:s3cret@127.0.0.1:1/codeb", dir.path())
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("cannot connect: "), "{err}");
        assert!(err.to_lowercase().contains("refused"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{err}"
        );
    }
}
