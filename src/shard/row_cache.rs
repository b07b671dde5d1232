//! The node's row cache: the latest bytes of recently read or written
//! `data` rows, in a hash table, in front of RocksDB.
//!
//! A point read of a key RocksDB holds in its memtable walks a skip list of
//! every version written since the last flush: under `GET -c 50` that walk
//! was a quarter of a node's CPU, and under `SET -c 50` the key-count lookup
//! of a blind SET a fifth of the worker's. This cache answers those reads
//! with one hash lookup: reads got faster; SET did not, the CPU it freed
//! went to the rest of the write path (docs/PERFORMANCE.md, "Fast path,
//! step: a row cache").
//!
//! It holds exactly what RocksDB holds, or nothing: it is never a source of
//! truth, only a shorter way to the same bytes. The rules that keep it so:
//!
//! * Every write that touches `data` goes through [`RowCache::begin_write`]
//!   before RocksDB sees it (which drops the rows it writes, or everything
//!   for a range delete) and [`WriteGuard`]'s drop after (which puts the
//!   written values in, but only when no other write of `data` began or
//!   ended meanwhile: two writes racing from two threads may reach RocksDB
//!   in either order, so neither may say which value is last).
//! * A read that missed fills the cache only when no write was in progress
//!   and none happened since the read began ([`RowCache::fill`] with the
//!   epoch the read took first): otherwise it could put back a value a
//!   write had just replaced.
//! * While a write is in progress its rows are absent, so readers go to
//!   RocksDB and see the write's effect monotonically, as RocksDB shows it.
//!
//! The memory is bounded: two generations of at most half the capacity
//! each; when the young one is full it becomes the old one and the old one
//! is freed (on a thread of its own: freeing many rows takes milliseconds).
//! A hit in the old generation moves the row to the young one, so what is
//! read keeps its place. Values over [`MAX_VALUE`] are not kept.
//!
//! Pure bookkeeping: no I/O and no RocksDB here ([`super::engine`] calls it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Values larger than this are read from RocksDB every time (a large value
/// is dominated by its copy, not by the lookup).
pub const MAX_VALUE: usize = 16 * 1024;
/// What a row costs beyond its key and value bytes (the table's slot, the
/// two allocations' headers), for the capacity.
const ROW_OVERHEAD: usize = 64;

/// Default capacity in bytes (`row_cache_mb` in the node's configuration).
pub const DEFAULT_CAPACITY: usize = 64 << 20;

/// A write of `data` rows, as the cache sees it.
pub enum Change<'a> {
    Put(&'a [u8], &'a [u8]),
    Delete(&'a [u8]),
    /// A range delete (`FLUSHDB`, a snapshot install, a dropped group):
    /// the whole cache is emptied.
    DeleteRange,
}

#[derive(Default)]
struct Inner {
    young: HashMap<Box<[u8]>, Box<[u8]>>,
    young_bytes: usize,
    old: HashMap<Box<[u8]>, Box<[u8]>>,
    old_bytes: usize,
    /// Changes on every write's start and end: a read's fill and a write's
    /// insert are taken only if it did not change since they began.
    epoch: u64,
    /// Writes of `data` between their start and their end.
    writing: u32,
}

/// See the module documentation.
pub struct RowCache {
    inner: Mutex<Inner>,
    /// Bytes (keys, values, [`ROW_OVERHEAD`]) the two generations hold at
    /// most together.
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Counters for the node's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub hits: u64,
    pub misses: u64,
    pub bytes: u64,
}

impl RowCache {
    /// A cache of at most `capacity` bytes; 0 keeps nothing.
    pub fn new(capacity: usize) -> RowCache {
        RowCache {
            inner: Mutex::default(),
            capacity,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Whether the cache keeps nothing (`row_cache_mb = 0`).
    pub fn is_off(&self) -> bool {
        self.capacity == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The bookkeeping never panics half way; a poisoned lock still
        // guards consistent maps.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What `f` makes of the row's bytes, if cached (under the lock: a
    /// caller that only asks whether the key exists copies nothing). A
    /// miss returns the epoch to hand to [`RowCache::fill`] once RocksDB
    /// answered.
    pub fn get<T>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> T) -> Result<T, u64> {
        if self.capacity == 0 {
            return Err(0);
        }
        let mut inner = self.lock();
        if let Some(v) = inner.young.get(key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(f(v));
        }
        if let Some((k, v)) = inner.old.remove_entry(key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            inner.old_bytes -= cost(&k, &v);
            let out = f(&v);
            self.insert(&mut inner, k, v);
            return Ok(out);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        Err(inner.epoch)
    }

    /// Keep `value`, read from RocksDB for `key` by a read that began at
    /// `epoch` (from [`RowCache::get`]), unless a write began since.
    pub fn fill(&self, key: &[u8], value: &[u8], epoch: u64) {
        if self.capacity == 0 || value.len() > MAX_VALUE {
            return;
        }
        let mut inner = self.lock();
        if inner.epoch != epoch || inner.writing > 0 {
            return;
        }
        self.insert(&mut inner, key.into(), value.into());
    }

    /// A write of `changes` is about to reach RocksDB: its rows leave the
    /// cache until the returned guard is dropped after the write (`ok` set
    /// on it when RocksDB took the write).
    pub fn begin_write<'a>(&'a self, changes: Vec<Change<'a>>) -> WriteGuard<'a> {
        let mut inner = self.lock();
        inner.writing += 1;
        inner.epoch += 1;
        for c in &changes {
            match c {
                Change::Put(k, _) | Change::Delete(k) => remove(&mut inner, k),
                Change::DeleteRange => {
                    let young = std::mem::take(&mut inner.young);
                    let old = std::mem::take(&mut inner.old);
                    inner.young_bytes = 0;
                    inner.old_bytes = 0;
                    free_later(young, old);
                }
            }
        }
        WriteGuard {
            cache: self,
            changes,
            epoch: inner.epoch,
            ok: false,
        }
    }

    /// Hits, misses and bytes held.
    pub fn stats(&self) -> Stats {
        let inner = self.lock();
        Stats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes: (inner.young_bytes + inner.old_bytes) as u64,
        }
    }

    /// Put a row in the young generation, turning it over when full.
    fn insert(&self, inner: &mut Inner, key: Box<[u8]>, value: Box<[u8]>) {
        let c = cost(&key, &value);
        if c > self.capacity / 2 {
            return;
        }
        if inner.young_bytes + c > self.capacity / 2 {
            let young = std::mem::take(&mut inner.young);
            let old = std::mem::replace(&mut inner.old, young);
            inner.old_bytes = inner.young_bytes;
            inner.young_bytes = 0;
            free_later(old, HashMap::new());
        }
        // The same key in the old generation would be an older value.
        if let Some((k, v)) = inner.old.remove_entry(&key) {
            inner.old_bytes -= cost(&k, &v);
        }
        let key_len = key.len();
        inner.young_bytes += c;
        if let Some(prev) = inner.young.insert(key, value) {
            inner.young_bytes -= key_len + prev.len() + ROW_OVERHEAD;
        }
    }
}

fn cost(key: &[u8], value: &[u8]) -> usize {
    key.len() + value.len() + ROW_OVERHEAD
}

fn remove(inner: &mut Inner, key: &[u8]) {
    if let Some((k, v)) = inner.young.remove_entry(key) {
        inner.young_bytes -= cost(&k, &v);
    }
    if let Some((k, v)) = inner.old.remove_entry(key) {
        inner.old_bytes -= cost(&k, &v);
    }
}

/// Free a generation away from the caller: dropping a few hundred thousand
/// rows takes milliseconds, which a node worker must not spend.
fn free_later(a: HashMap<Box<[u8]>, Box<[u8]>>, b: HashMap<Box<[u8]>, Box<[u8]>>) {
    if a.len() + b.len() < 1024 {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("shoal-row-cache-free".into())
        .spawn(move || drop((a, b)));
    // Without a thread (the process is at its limit), the maps were moved
    // into the failed closure and are dropped here: slower, still correct.
    drop(spawned);
}

/// A write of `data` in progress; dropping it ends the write (see
/// [`RowCache::begin_write`]).
pub struct WriteGuard<'a> {
    cache: &'a RowCache,
    changes: Vec<Change<'a>>,
    epoch: u64,
    ok: bool,
}

impl WriteGuard<'_> {
    /// RocksDB took the write: its values may enter the cache.
    pub fn written(mut self) {
        self.ok = true;
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        let cache = self.cache;
        let mut inner = cache.lock();
        // Alone from start to end: no other write could have reached
        // RocksDB after this one, so these values are the latest.
        let alone = inner.writing == 1 && inner.epoch == self.epoch;
        if self.ok && alone && cache.capacity > 0 {
            for c in &self.changes {
                if let Change::Put(k, v) = c {
                    if v.len() <= MAX_VALUE {
                        cache.insert(&mut inner, (*k).into(), (*v).into());
                    }
                }
            }
        }
        inner.writing -= 1;
        inner.epoch += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(c: &RowCache, k: &[u8]) -> Option<Vec<u8>> {
        c.get(k, <[u8]>::to_vec).ok()
    }

    #[test]
    fn a_fill_is_kept_only_when_no_write_came_between() {
        let c = RowCache::new(1 << 20);
        let e = c.get(b"k", |_| ()).unwrap_err();
        c.fill(b"k", b"v1", e);
        assert_eq!(hit(&c, b"k"), Some(b"v1".to_vec()));

        // A read began, then a write of another key ran: the read's value
        // may predate a write of its own key too, so it is not kept.
        let e = c.get(b"j", |_| ()).unwrap_err();
        c.begin_write(vec![Change::Put(b"x", b"1")]).written();
        c.fill(b"j", b"old", e);
        assert_eq!(hit(&c, b"j"), None);

        // No fill while a write is in progress, whatever its epoch.
        let g = c.begin_write(vec![Change::Put(b"y", b"1")]);
        let e = c.get(b"j", |_| ()).unwrap_err();
        c.fill(b"j", b"v", e);
        assert_eq!(hit(&c, b"j"), None);
        drop(g);
        // Not written: y stays out.
        assert_eq!(hit(&c, b"y"), None);
    }

    #[test]
    fn a_write_alone_leaves_its_values_and_drops_its_deletes() {
        let c = RowCache::new(1 << 20);
        c.begin_write(vec![Change::Put(b"a", b"1"), Change::Put(b"b", b"2")])
            .written();
        assert_eq!(hit(&c, b"a"), Some(b"1".to_vec()));
        c.begin_write(vec![Change::Delete(b"a"), Change::Put(b"b", b"3")])
            .written();
        assert_eq!(hit(&c, b"a"), None);
        assert_eq!(hit(&c, b"b"), Some(b"3".to_vec()));
        // What the caller makes of the row is taken under the lock.
        assert_eq!(c.get(b"b", |v| v == b"3"), Ok(true));
        assert!(c.get(b"a", |_| ()).is_err());
        // A range delete empties everything.
        c.begin_write(vec![Change::DeleteRange, Change::Put(b"c", b"4")])
            .written();
        assert_eq!(hit(&c, b"b"), None);
        assert_eq!(hit(&c, b"c"), Some(b"4".to_vec()));
    }

    #[test]
    fn overlapping_writes_leave_their_rows_out() {
        let c = RowCache::new(1 << 20);
        c.begin_write(vec![Change::Put(b"k", b"0")]).written();
        // Two threads' writes of k overlap: RocksDB may have taken them in
        // either order, so neither value may enter, and the old one is gone.
        let first = c.begin_write(vec![Change::Put(b"k", b"1")]);
        let second = c.begin_write(vec![Change::Put(b"k", b"2")]);
        second.written();
        assert_eq!(hit(&c, b"k"), None);
        first.written();
        assert_eq!(hit(&c, b"k"), None);
        // One that starts and ends while another runs is not alone either.
        let outer = c.begin_write(vec![Change::Put(b"z", b"1")]);
        c.begin_write(vec![Change::Put(b"k", b"3")]).written();
        outer.written();
        assert_eq!(hit(&c, b"k"), None);
        assert_eq!(hit(&c, b"z"), None);
        // Alone again: cached again.
        c.begin_write(vec![Change::Put(b"k", b"4")]).written();
        assert_eq!(hit(&c, b"k"), Some(b"4".to_vec()));
    }

    #[test]
    fn memory_stays_under_the_capacity_and_read_rows_stay() {
        let cap = 64 * 1024;
        let c = RowCache::new(cap);
        let value = [7u8; 100];
        for i in 0..10_000u32 {
            c.begin_write(vec![Change::Put(&i.to_be_bytes(), &value)])
                .written();
            // Key 0 is read all along: it keeps its place.
            assert!(hit(&c, &0u32.to_be_bytes()).is_some(), "row 0 lost at {i}");
            assert!(c.stats().bytes as usize <= cap);
        }
        // Overwriting one key counts it once.
        let c = RowCache::new(cap);
        for _ in 0..100 {
            c.begin_write(vec![Change::Put(b"same", &value)]).written();
        }
        assert_eq!(c.stats().bytes as usize, cost(b"same", &value));
        c.begin_write(vec![Change::Delete(b"same")]).written();
        assert_eq!(c.stats().bytes, 0);
        // Large values and a zero capacity keep nothing.
        c.begin_write(vec![Change::Put(b"big", &vec![0u8; MAX_VALUE + 1])])
            .written();
        assert_eq!(hit(&c, b"big"), None);
        let none = RowCache::new(0);
        none.begin_write(vec![Change::Put(b"a", b"1")]).written();
        assert_eq!(hit(&none, b"a"), None);
    }
}
