//! The SQLite read path of the hot reads (list pages, API-key lookups).
//!
//! sqlx runs every SQLite connection on its own worker thread and copies
//! every column value of every row before the caller sees it; on a 50-row
//! list page that cost more than SQLite itself (benches/README.md). Here a
//! few dedicated threads each own one connection with cached prepared
//! statements. A read is a closure handed to them through a queue; it reads
//! the columns in place (borrowed `&str` straight out of SQLite's row
//! buffer) and renders what it needs before the row moves on, and its result
//! comes back through a oneshot channel. One read (say, a page's total and
//! its rows) costs one hand-off in each direction, whatever it queries.
//!
//! Short reads (an API-key lookup; a list page of at most 100 rows near
//! the start of an index it walks in order) skip the hand-off: they run on
//! the calling thread on one of as many more connections, which never wait
//! for a lock (a busy database sends the read to the threads), and fall
//! back to the threads when all of those are in use (`Readers::run_short`).
//!
//! Freshness: the connections never cache rows (the list pages keep
//! rendered rows filed by row version, which no write can leave stale:
//! `row_cache`). Each read starts its own read transaction (WAL: a
//! snapshot of everything committed before it began), so a write that has
//! returned is visible to the next read, and readers never block the
//! writer. A job that left a transaction open is
//! rolled back before the thread takes the next one, so no snapshot can
//! outlive its job.
//!
//! The connections are opened read-write (a read-only connection cannot
//! recreate the `-shm` file of a WAL database) but run `query_only`, so
//! nothing on this path can write. They are driven through the FFI of the
//! SQLite sqlx already links (`conn`, where all the `unsafe` is).

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

use super::{Result, StoreError};

#[allow(unsafe_code)]
mod conn;

pub(crate) use conn::{Conn, Param, Row, SqliteError};

type Job = Box<dyn FnOnce(&Conn) + Send>;

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    closed: bool,
}

/// Jobs waiting for a reader. Its length is bounded by the requests in
/// flight: every job has a caller awaiting it.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic while holding this lock leaves a consistent VecDeque, so
        // poisoning carries no information here.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, job: Job) -> Result<()> {
        let mut s = self.lock();
        if s.closed {
            return Err(StoreError::ReadPool("the SQLite readers are closed"));
        }
        s.jobs.push_back(job);
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// The next job, or None once the queue is closed and drained.
    fn pop(&self) -> Option<Job> {
        let mut s = self.lock();
        loop {
            if let Some(job) = s.jobs.pop_front() {
                return Some(job);
            }
            if s.closed {
                return None;
            }
            s = self.ready.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

/// Connections for short reads run on the caller's thread (`run_short`).
#[derive(Default)]
struct Inline {
    idle: Vec<Conn>,
    closed: bool,
}

/// A fixed set of reader threads over one SQLite database file, and as
/// many connections for short reads run where they are asked for.
pub(crate) struct Readers {
    queue: Arc<Queue>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    inline: Mutex<Inline>,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers").finish_non_exhaustive()
    }
}

/// Opens one reader connection on `path` (an existing database file).
fn open_connection(path: &Path) -> std::result::Result<Conn, SqliteError> {
    // The busy timeout waits out the brief moments a WAL reader can be
    // refused (another connection recovering the WAL index), as the sqlx
    // pool does.
    let conn = Conn::open(path, Duration::from_secs(10))?;
    conn.execute("PRAGMA query_only = ON")?;
    Ok(conn)
}

/// Ends a read transaction a job left open: it would pin the connection to
/// an old snapshot and hold back WAL checkpoints.
fn end_transaction(conn: &Conn) {
    if conn.in_transaction()
        && let Err(e) = conn.execute("ROLLBACK")
    {
        tracing::error!(error = %e, "could not end a SQLite read transaction");
    }
}

fn serve(conn: Conn, queue: Arc<Queue>) {
    while let Some(job) = queue.pop() {
        // A panicking job loses its own answer (the caller sees the reader
        // gone), not the thread: its statements were reset as they dropped.
        if std::panic::catch_unwind(AssertUnwindSafe(|| job(&conn))).is_err() {
            tracing::error!("a SQLite read panicked");
        }
        end_transaction(&conn);
    }
}

impl Readers {
    /// Opens `threads` connections on the database file at `path` and
    /// starts one thread for each. Connections are opened here, so a
    /// database that cannot be read fails the start, not the first request.
    pub(crate) fn open(path: &Path, threads: usize) -> Result<Readers> {
        let queue = Arc::new(Queue::default());
        // Short reads never wait for a lock on the caller's thread: with no
        // busy timeout a locked database answers at once, and the read
        // goes to the reader threads, which wait.
        let mut inline = Inline::default();
        for _ in 0..threads.max(1) {
            let conn = Conn::open(path, Duration::ZERO)?;
            conn.execute("PRAGMA query_only = ON")?;
            inline.idle.push(conn);
        }
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads.max(1) {
            let conn = open_connection(path)?;
            let q = Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(format!("sqlite-read-{i}"))
                .spawn(move || serve(conn, q));
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    queue.close();
                    return Err(StoreError::Io {
                        path: path.to_owned(),
                        source: e,
                    });
                }
            }
        }
        Ok(Readers {
            queue,
            threads: Mutex::new(handles),
            inline: Mutex::new(inline),
        })
    }

    fn inline(&self) -> MutexGuard<'_, Inline> {
        // A Vec of connections is consistent whatever panicked.
        self.inline.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a short read: one whose cost is bounded and small (a lookup by
    /// a unique key; a list page of at most `SHORT_PAGE_ROWS` rows from
    /// near the start of an index), on the calling thread when an inline
    /// connection is free, which saves the two cross-thread wake-ups of
    /// `run`; with `run` otherwise.
    /// It is what the read would cost the async worker as CPU work anyway
    /// (rendering a page of that size), and it never waits for a lock:
    /// a read that finds the database busy (under WAL, only for moments
    /// such as another connection recovering the WAL index) is done over
    /// by `run`. The read is the same closure either way, so its result
    /// cannot depend on where it ran.
    pub(crate) async fn run_short<R, F>(&self, read: F) -> Result<R>
    where
        R: Send + 'static,
        F: Fn(&Conn) -> Result<R> + Send + 'static,
    {
        let conn = self.inline().idle.pop();
        if let Some(conn) = conn {
            // A panic drops the connection as it unwinds (the pool is one
            // short from then on; reads still have `run`).
            let result = read(&conn);
            end_transaction(&conn);
            let mut inline = self.inline();
            if !inline.closed {
                inline.idle.push(conn);
            }
            drop(inline);
            match result {
                Err(StoreError::Sqlite(e)) if e.is_busy() => {}
                done => return done,
            }
        }
        self.run(read).await
    }

    /// Runs `read` on a reader connection and returns its result. The
    /// closure must read and finish; it must not wait on anything but the
    /// database.
    pub(crate) async fn run<R, F>(&self, read: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Conn) -> Result<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.queue.push(Box::new(move |conn: &Conn| {
            // The caller gave up (its request was dropped): skip the work.
            if tx.is_closed() {
                return;
            }
            let _ = tx.send(read(conn));
        }))?;
        rx.await
            .map_err(|_| StoreError::ReadPool("a SQLite read was lost (reader panicked)"))?
    }

    /// Stops the threads after the queued reads and closes the connections.
    pub(crate) fn close(&self) {
        {
            let mut inline = self.inline();
            inline.closed = true;
            inline.idle.clear();
        }
        self.queue.close();
        let handles = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for h in handles {
            let _ = h.join();
        }
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        // Threads finish the queued jobs and exit; they are not joined here
        // (a drop on an async worker must not block).
        self.queue.close();
    }
}

/// Reads the columns of a row in the order the SELECT lists them, so a
/// record is built by one struct literal written in that same order. A
/// value of the wrong type is a corrupt row, named by its column.
pub(crate) struct Cols<'r, 's> {
    row: &'r Row<'s>,
    next: usize,
}

impl<'r, 's> Cols<'r, 's> {
    pub(crate) fn new(row: &'r Row<'s>) -> Self {
        Cols { row, next: 0 }
    }

    #[inline]
    fn index(&mut self) -> usize {
        let i = self.next;
        self.next += 1;
        i
    }

    #[inline]
    pub(crate) fn opt_text(&mut self) -> Result<Option<&'r str>> {
        let i = self.index();
        self.row
            .text(i)
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    #[inline]
    pub(crate) fn text(&mut self) -> Result<&'r str> {
        let i = self.index();
        match self.row.text(i) {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(self.null(i)),
            Err(e) => Err(StoreError::Corrupt(e.to_string())),
        }
    }

    /// A TEXT column's bytes, not checked to be UTF-8 (`Row::text_bytes`).
    #[inline]
    pub(crate) fn text_bytes(&mut self) -> Result<&'r [u8]> {
        let i = self.index();
        match self.row.text_bytes(i) {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(self.null(i)),
            Err(e) => Err(StoreError::Corrupt(e.to_string())),
        }
    }

    #[inline]
    pub(crate) fn opt_int(&mut self) -> Result<Option<i64>> {
        let i = self.index();
        self.row
            .int(i)
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    #[inline]
    pub(crate) fn int(&mut self) -> Result<i64> {
        let i = self.index();
        match self.row.int(i) {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(self.null(i)),
            Err(e) => Err(StoreError::Corrupt(e.to_string())),
        }
    }

    fn null(&self, i: usize) -> StoreError {
        StoreError::Corrupt(format!(
            "column {}: unexpected NULL",
            self.row.column_name(i)
        ))
    }

    /// Every column was read: the SELECT and the struct literal agree on
    /// how many there are (their order is checked by the tests that compare
    /// this path with the sqlx one).
    pub(crate) fn finish(self) -> Result<()> {
        let n = self.row.column_count();
        if self.next == n {
            Ok(())
        } else {
            Err(StoreError::Corrupt(format!(
                "read {} of {n} columns",
                self.next
            )))
        }
    }
}

/// The most rows a list page read by `Readers::run_short` may ask for, and
/// the furthest into the list it may start: its cost stays within
/// stepping this many index entries and rendering this many rows.
pub(crate) const SHORT_PAGE_ROWS: i64 = 100;
pub(crate) const SHORT_PAGE_OFFSET: i64 = 1_000;

/// Whether a list page of `limit` rows from `offset` is short (for a query
/// that walks an index in the page's order, with no filter that can skip
/// rows).
pub(crate) fn short_page(limit: i64, offset: i64) -> bool {
    (0..=SHORT_PAGE_ROWS).contains(&limit) && (0..=SHORT_PAGE_OFFSET).contains(&offset)
}

/// Reader threads: one per core, at least two (a long search must not hold
/// up every list page), at most four (each holds a connection and its page
/// cache).
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(2)
        .clamp(2, 4)
}

/// Runs `read` inside one read transaction, so what it queries (a page's
/// total and its rows) comes from one snapshot. The transaction ends with
/// `read`, whether it succeeded or not.
pub(crate) fn snapshot<R>(conn: &Conn, read: impl FnOnce() -> Result<R>) -> Result<R> {
    conn.execute("BEGIN")?;
    let result = read();
    let ended = conn.execute(if result.is_ok() { "COMMIT" } else { "ROLLBACK" });
    let value = result?;
    ended?;
    Ok(value)
}

#[cfg(test)]
#[path = "sqlite_read_tests.rs"]
mod tests;
