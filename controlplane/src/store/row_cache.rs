//! Rendered list rows, kept in memory by row version (SQLite read path).
//!
//! A list page costs little beyond its rows: reading 25–30 columns of 50
//! rows out of SQLite and writing them as JSON was most of a page's CPU
//! (benches/README.md). Calls and transcripts carry a `row_version` that a
//! database trigger replaces on every INSERT and UPDATE of the row with a
//! number no row has had before (migration 0013), and the list indexes
//! carry it too. So a page reads its rows' `(call_id, row_version)` pairs
//! from the index alone, takes each row's JSON from here when it was
//! rendered from exactly that version, and reads and renders only the rows
//! it does not find (in the same snapshot), which it adds.
//!
//! Why this cannot serve stale bytes: an entry is the renderer's output for
//! the row as one snapshot held it, filed under the version that snapshot
//! gave the row. Any later change to the row, by whatever code, gives it a
//! new version in the same transaction, so no later page asks for the old
//! entry again. A version is never reused (a counter that only grows on
//! SQLite, a sequence on PostgreSQL; a rolled-back version was never
//! visible to a reader, so nothing was filed under it), not even by a row
//! deleted and inserted again. Entries are also filed by the renderer (two
//! renderers' outputs never mix) and hold the row's id, checked on lookup.
//! Nothing else is cached: the page's total, its order and which rows it
//! holds come from the snapshot of every request.
//!
//! The memory is bounded: entries go into a young generation; when it holds
//! half the budget it becomes the old one (the previous old one is
//! dropped), and a row found in the old generation moves back to the young
//! one. Rows read often stay; a row not read for a while goes after at most
//! two turns.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::sqlite_read::{Cols, Conn, Param, Row};
use super::{JsonPage, Result, StoreError};

/// Bytes of rendered rows kept per table (calls, transcripts): about 50k
/// call rows; the rows of the pages people look at (the newest) stay.
pub(crate) const CACHE_BYTES: usize = 32 << 20;

/// What an entry costs beyond its JSON and id (the map's slot, the `Arc`'s
/// counts), roughly.
const ENTRY_OVERHEAD: usize = 96;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    /// The renderer's address (`RenderCall`/`RenderTranscript`).
    render: usize,
    version: i64,
}

/// Hashes a `Key` with a rotate, xor and multiply per word (as rustc's
/// FxHasher does) instead of SipHash, which was a visible share of a cached
/// page's CPU (50 lookups). Nothing here needs SipHash's defence against
/// chosen keys: versions are numbers the database hands out, which no
/// client picks, and renderers are two function addresses.
#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    #[inline]
    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }
}

type KeyMap = HashMap<Key, Entry, std::hash::BuildHasherDefault<KeyHasher>>;

/// A row rendered by a page: its version, id and JSON.
type Rendered = (i64, Box<[u8]>, Arc<[u8]>);

struct Entry {
    id: Box<[u8]>,
    json: Arc<[u8]>,
}

impl Entry {
    fn cost(&self) -> usize {
        self.id.len() + self.json.len() + ENTRY_OVERHEAD
    }
}

#[derive(Default)]
struct Generations {
    young: KeyMap,
    old: KeyMap,
    young_bytes: usize,
}

impl Generations {
    /// Files `entry`; when that fills the young generation, it becomes the
    /// old one and the previous old one is returned, for the caller to
    /// drop after unlocking (freeing tens of thousands of entries must not
    /// hold up every list page).
    #[must_use]
    fn insert(&mut self, key: Key, entry: Entry, budget: usize) -> Option<KeyMap> {
        self.young_bytes += entry.cost();
        if let Some(previous) = self.young.insert(key, entry) {
            self.young_bytes -= previous.cost();
        }
        if self.young_bytes > budget / 2 {
            self.young_bytes = 0;
            let young = std::mem::take(&mut self.young);
            return Some(std::mem::replace(&mut self.old, young));
        }
        None
    }
}

/// One table's rendered rows.
pub(crate) struct RowCache {
    gens: Mutex<Generations>,
    budget: usize,
}

impl std::fmt::Debug for RowCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowCache")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// The rows of a page as its index gave them, in page order: each row's
/// id (its bytes, only ever compared) and version.
#[derive(Debug, Default)]
pub(crate) struct PageKeys {
    ids: Vec<u8>,
    /// (end of the id in `ids`, version); the id starts where the previous
    /// one ended.
    rows: Vec<(usize, i64)>,
}

impl PageKeys {
    /// Room for `rows` keys, so collecting a page's keys does not grow
    /// the buffers a dozen times (ids are 16 characters today).
    fn with_capacity(rows: usize) -> PageKeys {
        PageKeys {
            ids: Vec::with_capacity(rows * 24),
            rows: Vec::with_capacity(rows),
        }
    }

    fn push(&mut self, id: &[u8], version: i64) {
        self.ids.extend_from_slice(id);
        self.rows.push((self.ids.len(), version));
    }

    fn iter(&self) -> impl Iterator<Item = (&[u8], i64)> {
        let mut start = 0;
        self.rows.iter().map(move |&(end, version)| {
            let id = self.ids.get(start..end).unwrap_or(b"");
            start = end;
            (id, version)
        })
    }
}

impl RowCache {
    pub(crate) fn new(budget: usize) -> RowCache {
        RowCache {
            gens: Mutex::new(Generations::default()),
            budget,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Generations> {
        // Every change to the maps is one insert or swap: a panic cannot
        // leave them half-changed.
        self.gens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached JSON of each row of `keys`, in order; None where the
    /// cache does not hold that version of that row.
    fn get(&self, render: usize, keys: &PageKeys) -> Vec<Option<Arc<[u8]>>> {
        let mut dropped = Vec::new();
        let mut g = self.lock();
        let found = keys
            .iter()
            .map(|(id, version)| {
                let key = Key { render, version };
                if let Some(e) = g.young.get(&key) {
                    return (*e.id == *id).then(|| Arc::clone(&e.json));
                }
                let e = g.old.remove(&key)?;
                if *e.id != *id {
                    return None;
                }
                let json = Arc::clone(&e.json);
                dropped.extend(g.insert(key, e, self.budget));
                Some(json)
            })
            .collect();
        drop(g);
        drop(dropped);
        found
    }

    fn put(&self, render: usize, rows: Vec<Rendered>) {
        if rows.is_empty() {
            return;
        }
        let mut dropped = Vec::new();
        let mut g = self.lock();
        for (version, id, json) in rows {
            dropped.extend(g.insert(Key { render, version }, Entry { id, json }, self.budget));
        }
        drop(g);
        drop(dropped);
    }

    /// Entries held (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let g = self.lock();
        g.young.len() + g.old.len()
    }
}

/// The caches of the two list tables.
#[derive(Debug)]
pub(crate) struct RowCaches {
    pub(crate) calls: RowCache,
    pub(crate) transcripts: RowCache,
}

impl Default for RowCaches {
    fn default() -> Self {
        RowCaches {
            calls: RowCache::new(CACHE_BYTES),
            transcripts: RowCache::new(CACHE_BYTES),
        }
    }
}

/// Reads a page's `(id, row_version)` pairs with `keys_sql` (a query
/// selecting exactly those two columns, in page order) and appends each
/// row's JSON to `page`, from `cache` when it holds that version. When any
/// row is missing, the page's rows are read once with `rows_sql` (the same
/// query selecting whole rows, with the same `params`), on the same
/// connection and so in the same snapshot when called inside one: the same
/// rows in the same order. `render_row` renders each missing one, checking
/// it is the row whose id it is given, and returns its version; rows
/// rendered here are added to the cache. (A page with misses costs what it
/// did before the cache plus the key walk: one statement for the rows, not
/// one per row.)
#[allow(clippy::too_many_arguments)]
pub(crate) fn cached_page(
    conn: &Conn,
    cache: &RowCache,
    render: usize,
    page: &mut JsonPage,
    keys_sql: &str,
    rows_sql: &str,
    params: &[Param<'_>],
    mut render_row: impl FnMut(&Row<'_>, &[u8], &mut Vec<u8>) -> Result<i64>,
) -> Result<()> {
    let mut keys = PageKeys::with_capacity(page.expected_rows());
    conn.each_row(keys_sql, params, |row| -> Result<()> {
        let mut c = Cols::new(row);
        let id = c.text_bytes()?;
        let version = c.int()?;
        c.finish()?;
        keys.push(id, version);
        Ok(())
    })?;
    let hits = cache.get(render, &keys);
    if hits.iter().all(Option::is_some) {
        for json in hits.into_iter().flatten() {
            page.push_with(|out| {
                out.extend_from_slice(&json);
                Ok(())
            })?;
        }
        return Ok(());
    }
    let mut rendered = Vec::new();
    let mut listed = keys.iter().zip(hits);
    conn.each_row(rows_sql, params, |row| -> Result<()> {
        let Some(((id, _), hit)) = listed.next() else {
            return Err(StoreError::Corrupt(
                "a page's rows outnumber its keys in one snapshot".into(),
            ));
        };
        match hit {
            Some(json) => page.push_with(|out| {
                out.extend_from_slice(&json);
                Ok(())
            }),
            None => {
                let mut json = Vec::with_capacity(768);
                let version = render_row(row, id, &mut json)?;
                page.push_with(|out| {
                    out.extend_from_slice(&json);
                    Ok(())
                })?;
                rendered.push((version, Box::from(id), Arc::from(json)));
                Ok(())
            }
        }
    })?;
    if listed.next().is_some() {
        return Err(StoreError::Corrupt(
            "a page's keys outnumber its rows in one snapshot".into(),
        ));
    }
    cache.put(render, rendered);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(rows: &[(&str, i64)]) -> PageKeys {
        let mut k = PageKeys::default();
        for (id, v) in rows {
            k.push(id.as_bytes(), *v);
        }
        k
    }

    fn id(s: &str) -> Box<[u8]> {
        Box::from(s.as_bytes())
    }

    fn json(s: &str) -> Arc<[u8]> {
        Arc::from(s.as_bytes())
    }

    fn found(c: &RowCache, render: usize, rows: &[(&str, i64)]) -> Vec<Option<String>> {
        c.get(render, &keys(rows))
            .into_iter()
            .map(|j| j.map(|j| String::from_utf8(j.to_vec()).unwrap()))
            .collect()
    }

    #[test]
    fn page_keys_keep_order_and_ids() {
        let k = keys(&[("a", 1), ("", 2), ("ccc", 3)]);
        assert_eq!(
            k.iter().collect::<Vec<_>>(),
            vec![(&b"a"[..], 1), (&b""[..], 2), (&b"ccc"[..], 3)]
        );
    }

    /// A hit needs the same renderer, the same version and the same id.
    #[test]
    fn lookups_match_renderer_version_and_id() {
        let c = RowCache::new(1 << 20);
        c.put(1, vec![(7, id("a"), json("{a7}"))]);
        assert_eq!(
            found(&c, 1, &[("a", 7), ("a", 8), ("b", 7)]),
            vec![Some("{a7}".into()), None, None]
        );
        assert_eq!(found(&c, 2, &[("a", 7)]), vec![None]);
        // A newer version is a different entry; the old one is not served
        // for it.
        c.put(1, vec![(8, id("a"), json("{a8}"))]);
        assert_eq!(
            found(&c, 1, &[("a", 8), ("a", 7)]),
            vec![Some("{a8}".into()), Some("{a7}".into())]
        );
    }

    /// The cache never holds much more than its budget, and what was read
    /// recently survives a turn of generations.
    #[test]
    fn memory_is_bounded_and_recent_rows_stay() {
        let row = "x".repeat(1000);
        let budget = 100 * (1000 + 4 + ENTRY_OVERHEAD);
        let c = RowCache::new(budget);
        for v in 0..10_000i64 {
            c.put(1, vec![(v, id(&format!("{v:04}")), json(&row))]);
            if v % 10 == 0 {
                // Row 0 is read all the time.
                assert_eq!(found(&c, 1, &[("0000", 0)]), vec![Some(row.clone())], "{v}");
            }
            assert!(c.len() <= 101, "{} entries", c.len());
        }
        assert_eq!(found(&c, 1, &[("0001", 1)]), vec![None]);
        assert_eq!(found(&c, 1, &[("9999", 9999)]), vec![Some(row)]);
    }
}

#[cfg(test)]
#[path = "row_cache_tests.rs"]
mod write_path_tests;
