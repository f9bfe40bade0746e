//! A SQLite connection for the read path, called through the
//! `libsqlite3-sys` that sqlx already links (the bundled SQLite: one SQLite
//! in the binary, no second wrapper crate). It offers only what the reads
//! need: cached prepared statements, integer and text parameters, and rows
//! whose text is borrowed from SQLite's buffer for as long as the row is
//! current.
//!
//! Every `unsafe` block is one FFI call (or the slice over what it
//! returned) with the invariant it relies on written next to it. The
//! invariants rest on three facts of this type: the `sqlite3*` and every
//! `sqlite3_stmt*` are valid from a successful open/prepare until `Drop`;
//! a `Conn` is used by one thread at a time (it is `Send`, not `Sync`, and
//! opened with `SQLITE_OPEN_NOMUTEX`); and a `Row` cannot outlive the step
//! that produced it (it exists only inside the callback of `each_row`, and
//! the statement is not stepped or reset while the callback runs).

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char, c_int};
use std::hash::{BuildHasherDefault, Hasher};
use std::marker::PhantomData;
use std::path::Path;
use std::ptr::{self, NonNull};
use std::time::Duration;

use libsqlite3_sys as ffi;

/// A SQLite result code with its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (SQLite code {code})")]
pub struct SqliteError {
    pub code: c_int,
    pub message: String,
}

impl SqliteError {
    /// The database was locked (SQLITE_BUSY or SQLITE_LOCKED).
    pub(crate) fn is_busy(&self) -> bool {
        self.code & 0xff == ffi::SQLITE_BUSY || self.code & 0xff == ffi::SQLITE_LOCKED
    }
}

/// A misread column: the row is not what the query promised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {problem}")]
pub(crate) struct ColumnError {
    pub column: String,
    pub problem: &'static str,
}

/// A value bound to a statement parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Param<'a> {
    Null,
    Int(i64),
    Text(&'a str),
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(v)
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(v)
    }
}

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(v: Option<&'a str>) -> Self {
        v.map_or(Param::Null, Param::Text)
    }
}

impl From<Option<i64>> for Param<'_> {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Param::Null, Param::Int)
    }
}

/// A value a statement parameter holds (SQLite keeps bindings across
/// resets).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bound {
    Null,
    Int(i64),
    Text(Box<str>),
}

impl Bound {
    fn is(&self, p: &Param<'_>) -> bool {
        match (self, p) {
            (Bound::Null, Param::Null) => true,
            (Bound::Int(a), Param::Int(b)) => a == b,
            (Bound::Text(a), Param::Text(b)) => **a == **b,
            _ => false,
        }
    }
}

/// One prepared statement, finalized on drop, with what its parameters
/// hold. A parameter is bound again only when its value changes: with
/// STAT4 (on in the bundled SQLite) binding a parameter the plan depends on
/// (`tenant = ?1`) marks the statement expired, and the next step
/// re-prepares it, which cost a tenth of the server's CPU on list pages.
struct Stmt {
    raw: NonNull<ffi::sqlite3_stmt>,
    /// None: unknown (not bound yet, or a bind failed).
    bound: Vec<Option<Bound>>,
}

impl Drop for Stmt {
    fn drop(&mut self) {
        // SAFETY: the pointer came from a successful prepare and is
        // finalized exactly once, here.
        unsafe {
            ffi::sqlite3_finalize(self.raw.as_ptr());
        }
    }
}

/// Prepared statements kept per connection; past this many shapes the cache
/// is emptied and refilled (the reads have a handful of hot shapes).
const STATEMENT_CACHE: usize = 64;

/// Hashes the statement cache's keys, SQL texts written in this crate (no
/// outside input chooses them, so there is nothing to defend against):
/// eight bytes per step instead of SipHash's per-byte rounds, for the
/// several lookups of every request.
#[derive(Default, Clone, Copy)]
struct SqlHasher(u64);

impl Hasher for SqlHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A cache slot: None while its statement is in use.
type Cache = HashMap<Box<str>, Option<Stmt>, BuildHasherDefault<SqlHasher>>;

pub(crate) struct Conn {
    db: NonNull<ffi::sqlite3>,
    cache: RefCell<Cache>,
}

// SAFETY: the connection is opened with SQLITE_OPEN_NOMUTEX ("multi-thread"
// mode): SQLite allows using it from any thread as long as no two threads
// use it at once. `Conn` is not `Sync` and all use goes through `&self` on
// the one thread that owns it, so moving it to its reader thread is sound.
unsafe impl Send for Conn {}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Statements first: sqlite3_close refuses (and the handle stays
        // open) while any statement is unfinalized. Every statement lives
        // in the cache or in a running `each_row`, which has returned (or
        // unwound, dropping its statement) before the connection drops.
        self.cache.get_mut().clear();
        // SAFETY: `db` is valid until here and closed exactly once.
        unsafe {
            ffi::sqlite3_close(self.db.as_ptr());
        }
    }
}

/// The message of the last error on `db`.
fn last_error(db: NonNull<ffi::sqlite3>, code: c_int) -> SqliteError {
    // SAFETY: `db` is a valid handle; sqlite3_errmsg returns a NUL-terminated
    // string owned by SQLite that stays valid until the next call on `db`,
    // and it is copied out before that.
    let message = unsafe {
        let p = ffi::sqlite3_errmsg(db.as_ptr());
        if p.is_null() {
            String::from("unknown error")
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    SqliteError { code, message }
}

impl Conn {
    /// Opens an existing database file read-write, in multi-thread mode,
    /// and sets the busy timeout.
    pub(crate) fn open(path: &Path, busy: Duration) -> Result<Conn, SqliteError> {
        let name = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| SqliteError {
            code: ffi::SQLITE_MISUSE,
            message: "database path contains a NUL byte".into(),
        })?;
        // The `Send` below needs a SQLite built with threading support
        // (SQLITE_THREADSAFE 1 or 2, as the bundled build is).
        // SAFETY: a pure query of a compile-time setting.
        if unsafe { ffi::sqlite3_threadsafe() } == 0 {
            return Err(SqliteError {
                code: ffi::SQLITE_MISUSE,
                message: "SQLite was built without thread support".into(),
            });
        }
        let mut db: *mut ffi::sqlite3 = ptr::null_mut();
        let flags = ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_NOMUTEX;
        // SAFETY: `name` is NUL-terminated and outlives the call; `db` is a
        // valid out-pointer; a null VFS name selects the default VFS.
        let rc = unsafe { ffi::sqlite3_open_v2(name.as_ptr(), &mut db, flags, ptr::null()) };
        let Some(db) = NonNull::new(db) else {
            return Err(SqliteError {
                code: rc,
                message: "out of memory opening the database".into(),
            });
        };
        // From here `Conn`'s drop closes the handle, also on failure.
        let conn = Conn {
            db,
            cache: RefCell::new(Cache::default()),
        };
        if rc != ffi::SQLITE_OK {
            return Err(last_error(db, rc));
        }
        let ms = c_int::try_from(busy.as_millis()).unwrap_or(c_int::MAX);
        // SAFETY: `db` is a valid open handle.
        let rc = unsafe { ffi::sqlite3_busy_timeout(db.as_ptr(), ms) };
        conn.check(rc)?;
        Ok(conn)
    }

    fn check(&self, rc: c_int) -> Result<(), SqliteError> {
        if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(last_error(self.db, rc))
        }
    }

    /// Whether a transaction is open (autocommit is off).
    pub(crate) fn in_transaction(&self) -> bool {
        // SAFETY: `db` is a valid open handle.
        unsafe { ffi::sqlite3_get_autocommit(self.db.as_ptr()) == 0 }
    }

    /// The cached statement for `sql`, or a newly prepared one. The caller
    /// puts it back with `release`; while it is out, a nested use of the
    /// same text prepares its own.
    fn take(&self, sql: &str) -> Result<Stmt, SqliteError> {
        if let Some(stmt) = self.cache.borrow_mut().get_mut(sql).and_then(Option::take) {
            return Ok(stmt);
        }
        let len = c_int::try_from(sql.len()).map_err(|_| SqliteError {
            code: ffi::SQLITE_TOOBIG,
            message: "statement too long".into(),
        })?;
        let mut stmt: *mut ffi::sqlite3_stmt = ptr::null_mut();
        // SAFETY: `sql` is valid for `len` bytes (no NUL needed when the
        // length is given); `stmt` is a valid out-pointer; the tail pointer
        // may be null. PERSISTENT tells SQLite the statement is long-lived.
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                self.db.as_ptr(),
                sql.as_ptr().cast::<c_char>(),
                len,
                ffi::SQLITE_PREPARE_PERSISTENT,
                &mut stmt,
                ptr::null_mut(),
            )
        };
        self.check(rc)?;
        // A text with no statement in it (only a comment) yields null.
        NonNull::new(stmt)
            .map(|raw| Stmt {
                raw,
                bound: Vec::new(),
            })
            .ok_or_else(|| SqliteError {
                code: ffi::SQLITE_MISUSE,
                message: "empty statement".into(),
            })
    }

    /// How often the cached statement for `sql` was re-prepared (tests).
    #[cfg(test)]
    pub(crate) fn reprepares(&self, sql: &str) -> Option<c_int> {
        let cache = self.cache.borrow();
        let stmt = cache.get(sql)?.as_ref()?;
        // SAFETY: a valid statement; reading a counter without resetting it.
        Some(unsafe {
            ffi::sqlite3_stmt_status(stmt.raw.as_ptr(), ffi::SQLITE_STMTSTATUS_REPREPARE, 0)
        })
    }

    fn release(&self, sql: &str, stmt: Stmt) {
        let mut cache = self.cache.borrow_mut();
        if let Some(slot) = cache.get_mut(sql) {
            // A nested use of the same text may have put one back first;
            // one is enough (the other finalizes as it drops).
            if slot.is_none() {
                *slot = Some(stmt);
            }
            return;
        }
        if cache.len() >= STATEMENT_CACHE {
            // Slots in use go too; their statements come back as new
            // entries.
            cache.clear();
        }
        cache.insert(sql.into(), Some(stmt));
    }

    /// Runs `sql` with `params` bound to ?1, ?2, … and calls `row` for each
    /// result row, in order. The statement is reset before this returns,
    /// whatever happened, so it never holds a read snapshot afterwards
    /// (its bindings stay: see `Stmt`).
    pub(crate) fn each_row<E>(
        &self,
        sql: &str,
        params: &[Param<'_>],
        mut row: impl FnMut(&Row<'_>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<SqliteError>,
    {
        let mut stmt = self.take(sql)?;
        let s = stmt.raw.as_ptr();
        let result = (|| {
            self.bind(&mut stmt, params)?;
            loop {
                // SAFETY: `s` is a valid statement of this connection, used
                // only by this thread.
                match unsafe { ffi::sqlite3_step(s) } {
                    ffi::SQLITE_ROW => row(&Row {
                        stmt: s,
                        // SAFETY: `s` is valid and positioned on a row.
                        columns: unsafe { ffi::sqlite3_column_count(s) },
                        _step: PhantomData,
                    })?,
                    ffi::SQLITE_DONE => return Ok(()),
                    rc => return Err(E::from(last_error(self.db, rc))),
                }
            }
        })();
        // SAFETY: `s` is valid; reset ends the statement's read. Its code
        // repeats the step's error, already reported above.
        unsafe {
            ffi::sqlite3_reset(s);
        }
        self.release(sql, stmt);
        result
    }

    /// `each_row` for a query of one row: the first row's value, or None.
    pub(crate) fn one_row<T, E>(
        &self,
        sql: &str,
        params: &[Param<'_>],
        read: impl FnOnce(&Row<'_>) -> Result<T, E>,
    ) -> Result<Option<T>, E>
    where
        E: From<SqliteError>,
    {
        let mut read = Some(read);
        let mut out = None;
        self.each_row(sql, params, |r| -> Result<(), E> {
            if let Some(f) = read.take() {
                out = Some(f(r)?);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Runs a statement that returns no rows (BEGIN, COMMIT, a PRAGMA).
    pub(crate) fn execute(&self, sql: &str) -> Result<(), SqliteError> {
        self.each_row(sql, &[], |_| Ok(()))
    }

    fn bind(&self, stmt: &mut Stmt, params: &[Param<'_>]) -> Result<(), SqliteError> {
        let s = stmt.raw.as_ptr();
        // SAFETY: `s` is a valid statement.
        let wanted = unsafe { ffi::sqlite3_bind_parameter_count(s) };
        if usize::try_from(wanted).ok() != Some(params.len()) {
            return Err(SqliteError {
                code: ffi::SQLITE_RANGE,
                message: format!(
                    "statement takes {wanted} parameters, {} given",
                    params.len()
                ),
            });
        }
        stmt.bound.resize(params.len(), None);
        for (slot, (p, held)) in params.iter().zip(stmt.bound.iter_mut()).enumerate() {
            if held.as_ref().is_some_and(|b| b.is(p)) {
                continue;
            }
            *held = None;
            // `params.len()` equals a c_int count, so every index fits.
            let i = c_int::try_from(slot + 1).unwrap_or(c_int::MAX);
            // SAFETY: `s` is valid and `i` is within 1..=count. Text is
            // bound with SQLITE_TRANSIENT, so SQLite copies it before the
            // call returns and nothing borrows `v` afterwards.
            let rc = unsafe {
                match *p {
                    Param::Null => ffi::sqlite3_bind_null(s, i),
                    Param::Int(v) => ffi::sqlite3_bind_int64(s, i, v),
                    Param::Text(v) => {
                        let len = c_int::try_from(v.len()).map_err(|_| SqliteError {
                            code: ffi::SQLITE_TOOBIG,
                            message: "parameter too long".into(),
                        })?;
                        ffi::sqlite3_bind_text(
                            s,
                            i,
                            v.as_ptr().cast::<c_char>(),
                            len,
                            ffi::SQLITE_TRANSIENT(),
                        )
                    }
                }
            };
            self.check(rc)?;
            *held = Some(match *p {
                Param::Null => Bound::Null,
                Param::Int(v) => Bound::Int(v),
                Param::Text(v) => Bound::Text(v.into()),
            });
        }
        Ok(())
    }
}

/// The current row of a statement. Text read from it borrows SQLite's
/// buffer, valid until the statement steps again, which cannot happen
/// while this `Row` (and anything borrowed from it) is alive.
pub(crate) struct Row<'s> {
    stmt: *mut ffi::sqlite3_stmt,
    /// `sqlite3_column_count`, asked once per row rather than per column.
    columns: c_int,
    _step: PhantomData<&'s Stmt>,
}

impl Row<'_> {
    pub(crate) fn column_count(&self) -> usize {
        usize::try_from(self.columns).unwrap_or(0)
    }

    /// The column's name, for error messages.
    pub(crate) fn column_name(&self, i: usize) -> String {
        let Ok(i) = c_int::try_from(i) else {
            return "?".into();
        };
        // SAFETY: `stmt` is valid; an out-of-range index returns null; the
        // name is copied out before the statement is touched again.
        unsafe {
            let p = ffi::sqlite3_column_name(self.stmt, i);
            if p.is_null() {
                "?".into()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        }
    }

    fn error(&self, i: c_int, problem: &'static str) -> ColumnError {
        ColumnError {
            column: self.column_name(usize::try_from(i).unwrap_or(usize::MAX)),
            problem,
        }
    }

    #[inline]
    fn index(&self, i: usize) -> Result<c_int, ColumnError> {
        match c_int::try_from(i) {
            Ok(c) if c < self.columns => Ok(c),
            _ => Err(ColumnError {
                column: i.to_string(),
                problem: "no such column",
            }),
        }
    }

    /// A TEXT column (None for NULL), borrowed from the row.
    #[inline]
    pub(crate) fn text(&self, i: usize) -> Result<Option<&str>, ColumnError> {
        match self.text_bytes(i)? {
            None => Ok(None),
            Some(bytes) => std::str::from_utf8(bytes).map(Some).map_err(|_| {
                self.error(
                    c_int::try_from(i).unwrap_or(c_int::MAX),
                    "text is not valid UTF-8",
                )
            }),
        }
    }

    /// A TEXT column's bytes (None for NULL), borrowed from the row and not
    /// checked to be UTF-8: for values only compared with others, such as
    /// the ids of a page's keys (`row_cache`).
    #[inline]
    pub(crate) fn text_bytes(&self, i: usize) -> Result<Option<&[u8]>, ColumnError> {
        let i = self.index(i)?;
        // SAFETY: `stmt` is valid, positioned on a row, and `i` is in range,
        // so `sqlite3_column_value` returns the row's own value (never
        // null). SQLite calls it unprotected: the `sqlite3_value_*`
        // accessors used on it are not serialized by the connection's
        // mutex, which is sound here because a `Conn` is only ever used by
        // one thread at a time (see the module comment); in exchange they
        // skip the per-call checks of the `sqlite3_column_*` family, which
        // a 50-row page calls a thousand times. The type is read before any
        // conversion, so the text pointer is the stored TEXT itself; text
        // and then bytes is the order SQLite documents for a pointer and
        // its length. The bytes stay valid until the next step/reset of
        // `stmt`, which the borrow of `self` rules out for the returned
        // slice's lifetime.
        let bytes = unsafe {
            let v = ffi::sqlite3_column_value(self.stmt, i);
            match ffi::sqlite3_value_type(v) {
                ffi::SQLITE_NULL => return Ok(None),
                ffi::SQLITE_TEXT => {}
                _ => return Err(self.error(i, "expected text")),
            }
            let p = ffi::sqlite3_value_text(v);
            let n = usize::try_from(ffi::sqlite3_value_bytes(v)).unwrap_or(0);
            if p.is_null() {
                if n == 0 {
                    return Ok(Some(b""));
                }
                return Err(self.error(i, "out of memory reading text"));
            }
            std::slice::from_raw_parts(p, n)
        };
        Ok(Some(bytes))
    }

    /// An INTEGER column (None for NULL).
    #[inline]
    pub(crate) fn int(&self, i: usize) -> Result<Option<i64>, ColumnError> {
        let i = self.index(i)?;
        // SAFETY: as in `text`: the row's own value, read on the one thread
        // using this connection.
        unsafe {
            let v = ffi::sqlite3_column_value(self.stmt, i);
            match ffi::sqlite3_value_type(v) {
                ffi::SQLITE_NULL => Ok(None),
                ffi::SQLITE_INTEGER => Ok(Some(ffi::sqlite3_value_int64(v))),
                _ => Err(self.error(i, "expected an integer")),
            }
        }
    }
}
