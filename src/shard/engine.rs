//! The node's one RocksDB instance, and the only module that talks to it.
//!
//! Every Raft group on a node shares one database with three column families:
//!
//! | column family | key | value |
//! |---|---|---|
//! | `raft_log`   | group id (8, BE) ++ log index (8, BE) | openraft `Entry` (a batch-engine group's: [`super::batch::log`]) |
//! | `raft_state` | group id (8, BE) ++ tag (1)            | vote, committed, purged, applied, snapshot, locks, prepared transactions, key count, replica record; a batch-engine group's hard state and configuration |
//! | `data`       | group id (8, BE) ++ user key           | [`Stored`](super::value::Stored) |
//!
//! Values are versioned [`codec`] blobs (the replica record is JSON, the
//! snapshot an envelope around one). The `default` column family holds one
//! row, the data-directory marker: a database with rows but without it was
//! written by a build whose formats carried no version, and is refused at
//! open instead of being misread.
//!
//! There is never a column family per group: opening hundreds of them makes
//! start-up slow, and a group's keys are one contiguous range anyway, which
//! makes deleting a group one range delete per family.
//!
//! Writes go through one writer thread that merges whatever is queued into a
//! single `WriteBatch` and a single fsync: log appends from many groups share
//! one sync (group commit). Every write is acknowledged only after RocksDB
//! accepted it, synced when the caller asked for durability. The sync is a
//! WAL sync after the write, outside RocksDB's write queue, so the state
//! machine's unsynced writes ([`Engine::write_direct`]) never wait for it.
//! RocksDB reuses obsolete WAL files rather than creating new ones, so a
//! sync overwrites allocated blocks and does not also write the file's
//! inode (`WalFiles` below says why, and what bounds the WALs for it).
//! Nothing that may wait for the disk runs on async worker threads: reads
//! use [`Engine::read`] (a blocking task), synced writes [`Engine::write`]
//! (the writer thread). Two things do run there: [`Engine::read_cached`],
//! reads that RocksDB may answer only from memory (memtables, block cache)
//! and that report a miss instead of going to disk, and the state
//! machine's unsynced [`Engine::write_direct`], which no fsync holds up.
//!
//! With fsync on, the WAL is flushed by hand (RocksDB's `manual_wal_flush`):
//! a write puts its WAL record in RocksDB's buffer, and the buffer reaches
//! the file only when the writer thread syncs (`FlushWAL(sync)`), when
//! RocksDB switches memtables or closes, or when the buffer fills. So an
//! apply (`write_direct`) costs no `write` system call of its own; its
//! record goes out with the next synced log append, in the same `write`.
//! What that changes: a process killed between an apply and the next sync
//! loses the buffered records, as a machine losing power loses unsynced WAL
//! records without it. Both lose a suffix of the WAL, never a record from
//! its middle, and every record is one whole batch, so what is left is the
//! state after some earlier apply, its applied index with it (they are in
//! one batch): openraft applies the rest again from the log, which was
//! synced before any of it was applied. A write the caller wants durable is
//! synced, and a sync writes out every record before it. Measured in
//! docs/PERFORMANCE.md, "WAL flushed by hand".
//!
//! Point reads of `data` rows ([`DbView::get`], [`DbView::exists`]) look in
//! the [`row_cache`] first, and every write of `data` rows tells it what
//! changes, before and after RocksDB takes it: the cache answers exactly
//! what RocksDB would, one hash lookup instead of a skip-list walk.

use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;

use rocksdb::{
    ColumnFamilyDescriptor, DBWithThreadMode, MultiThreaded, Options, WriteBatch, WriteOptions,
};

use super::codec::{self, Format};
use super::row_cache::{self, Change, RowCache};

/// Multi-threaded mode: column family handles can be used from any thread.
type DB = DBWithThreadMode<MultiThreaded>;

pub const CF_LOG: &str = "raft_log";
pub const CF_STATE: &str = "raft_state";
pub const CF_DATA: &str = "data";
/// Element rows of collections (hash fields, set members, ...): see
/// [`sub_prefix`].
pub const CF_SUB: &str = "sub";

/// A column family, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cf {
    Log,
    State,
    Data,
    Sub,
}

impl Cf {
    fn name(self) -> &'static str {
        match self {
            Cf::Log => CF_LOG,
            Cf::State => CF_STATE,
            Cf::Data => CF_DATA,
            Cf::Sub => CF_SUB,
        }
    }
}

/// Tags of the per-group records in `raft_state`.
pub mod tag {
    /// The replica exists on this node (value: JSON `ReplicaRecord`).
    pub const REPLICA: u8 = 0;
    pub const VOTE: u8 = 1;
    pub const COMMITTED: u8 = 2;
    pub const PURGED: u8 = 3;
    /// Last applied log id and membership, written with the data they describe.
    pub const APPLIED: u8 = 4;
    pub const SNAPSHOT_META: u8 = 5;
    pub const SNAPSHOT_DATA: u8 = 6;
    /// `LOCK ++ user key` -> the transaction (id, `Format::Lock`) holding the key.
    pub const LOCK: u8 = 7;
    /// `PREPARED ++ txn id (8 B BE)` -> `Prepared` (`Format::Prepared`).
    pub const PREPARED: u8 = 8;
    /// Keys stored in the group: (applied index, count) (`Format::KeyCount`),
    /// written with the data; trusted only while the index is the
    /// group's applied index.
    pub const KEY_COUNT: u8 = 9;
    /// A batch-engine group's Raft hard state (term, vote, commit)
    /// (`Format::BatchHardState`; `super::batch`).
    pub const BATCH_HARD_STATE: u8 = 10;
    /// A batch-engine group's Raft configuration (`Format::BatchConfState`).
    pub const BATCH_CONF_STATE: u8 = 11;
    /// Where a batch-engine group's log starts: the index and term of the
    /// last entry compacted away or covered by an installed snapshot
    /// (`Format::BatchLogStart`).
    pub const BATCH_LOG_START: u8 = 12;
}

/// One change in a write batch.
#[derive(Debug, Clone)]
pub enum Op {
    Put(Cf, Vec<u8>, Vec<u8>),
    Delete(Cf, Vec<u8>),
    /// Delete `[from, to)`.
    DeleteRange(Cf, Vec<u8>, Vec<u8>),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("the storage writer has stopped")]
    WriterGone,
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The data directory is not in formats this build reads.
    #[error("unreadable data directory: {0}")]
    Format(String),
}

type Done = Box<dyn FnOnce(Result<(), EngineError>) + Send>;

/// Run RocksDB's flush and compaction threads at the lowest CPU priority
/// (nice 19), so that on busy cores the threads serving requests run first.
/// The pools belong to RocksDB's default environment, shared by every
/// database in the process; each thread lowers itself when it next picks up
/// a job. Why (a SET's p99.9 under the flushes that all nodes of a machine
/// start together) and the sustained run that found no write stall:
/// docs/PERFORMANCE.md, "RocksDB's background threads at low priority".
pub fn lower_background_priority() -> Result<(), EngineError> {
    let mut env = rocksdb::Env::new()?;
    env.lower_thread_pool_cpu_priority();
    env.lower_high_priority_thread_pool_cpu_priority();
    Ok(())
}

struct WriteJob {
    ops: Vec<Op>,
    sync: bool,
    done: Done,
}

/// Handle to the node's database. Cheap to share behind an `Arc`.
pub struct Engine {
    db: Arc<DB>,
    /// The options the database was opened with: they hold its statistics
    /// (tickers only: block cache hits and misses, stall time).
    opts: Options,
    /// `None` only while dropping.
    writer: Option<mpsc::Sender<WriteJob>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    /// The latest bytes of recently used `data` rows ([`row_cache`]).
    cache: Arc<RowCache>,
    /// Whether synced writes reach the disk (`fsync` = `always`).
    fsync: bool,
}

/// Dropping the engine stops the writer thread and waits for it, so the
/// database is closed when the drop returns (a process that exits while
/// another thread still closes RocksDB can abort in its destructors).
impl Drop for Engine {
    fn drop(&mut self) {
        self.writer = None;
        if let Some(t) = self.writer_thread.take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

/// `[start, end)` covering every key of a group in any column family.
pub fn group_range(gid: u64) -> (Vec<u8>, Vec<u8>) {
    let start = gid.to_be_bytes().to_vec();
    let end = match gid.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        None => vec![0xff; 9],
    };
    (start, end)
}

pub fn log_key(gid: u64, index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(16);
    k.extend_from_slice(&gid.to_be_bytes());
    k.extend_from_slice(&index.to_be_bytes());
    k
}

pub fn state_key(gid: u64, tag: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.extend_from_slice(&gid.to_be_bytes());
    k.push(tag);
    k
}

/// A per-group state key with a suffix: `gid ++ tag ++ suffix`.
pub fn state_key_with(gid: u64, tag: u8, suffix: &[u8]) -> Vec<u8> {
    let mut k = state_key(gid, tag);
    k.extend_from_slice(suffix);
    k
}

pub fn data_key(gid: u64, user_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + user_key.len());
    k.extend_from_slice(&gid.to_be_bytes());
    k.extend_from_slice(user_key);
    k
}

/// The prefix of the element rows of generation `gen` of collection `key`
/// in group `gid` (column family `sub`):
/// `gid (8 B BE) | key length (4 B BE) | key | gen (8 B BE)`, then the
/// element's own suffix. The length keeps one key's rows from running into
/// another's; the group prefix keeps [`group_range`] covering them.
pub fn sub_prefix(gid: u64, key: &[u8], gen: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(20 + key.len());
    k.extend_from_slice(&gid.to_be_bytes());
    k.extend_from_slice(&(key.len() as u32).to_be_bytes());
    k.extend_from_slice(key);
    k.extend_from_slice(&gen.to_be_bytes());
    k
}

/// The (key, gen) of an element row of group `gid` and the element's
/// suffix; `None` for a row that is not laid out as [`sub_prefix`] says.
pub fn split_sub_key(row: &[u8]) -> Option<(&[u8], u64, &[u8])> {
    let rest = row.get(8..)?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let key = rest.get(4..4 + len)?;
    let gen = u64::from_be_bytes(rest.get(4 + len..12 + len)?.try_into().ok()?);
    Some((key, gen, &rest[12 + len..]))
}

/// The smallest byte string after every string that starts with `prefix`
/// (`None`: there is none, the prefix is all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// How the write-ahead log's files are sized and reused.
///
/// Each fsync of a WAL file that grows also writes the file's inode (its
/// size changed), a second write to the device per sync; on this
/// project's machine, an ext4 without a journal on a virtio disk, that
/// made a sync cost 51-74 µs of CPU instead of 37-39 (docs/PERFORMANCE.md,
/// "Fast path, step: WAL files reused"). RocksDB's WAL recycling reuses
/// an obsolete WAL file instead of deleting it, so the next WAL overwrites
/// blocks that are already allocated and sized: the sync writes data only.
/// A reused file holds the previous WAL's records after the new ones;
/// RocksDB's recyclable record format carries the log number, so recovery
/// stops where the new records end (with the default point-in-time
/// recovery mode, which shoal keeps; RocksDB fixed a recovery hole in
/// that combination in PR 12403, before the 10.4 release shoal builds).
/// A WAL file only becomes obsolete once every column family with rows in
/// it has flushed them; `raft_state` gets few bytes and would keep every
/// WAL alive until the default limit of several GiB, so the limit on the
/// WALs' total size forces those flushes early. Reaching it flushes every
/// column family at once; since all replicas of a group take the same
/// writes, one limit for every node would have them all flush at the same
/// moment, so each process draws its own (docs/PERFORMANCE.md, "WAL
/// limits drawn per node").
#[derive(Debug, Clone, Copy)]
struct WalFiles {
    /// Obsolete WAL files kept for reuse.
    recycled: usize,
    /// Once the live WALs pass this, the column families whose rows hold
    /// the oldest one are flushed, which makes it obsolete.
    max_total_bytes: u64,
    /// Each column family's memtable size (`None`: RocksDB's 64 MiB).
    write_buffer_bytes: Option<usize>,
}

impl Default for WalFiles {
    fn default() -> WalFiles {
        WalFiles {
            recycled: 4,
            // Drawn per process, between 32 and 48 MiB (see above).
            max_total_bytes: (32 << 20) + rand::random::<u64>() % (16 << 20),
            write_buffer_bytes: None,
        }
    }
}

impl Engine {
    /// Open (or create) the database under `path` and start the writer
    /// thread, with a row cache of the default size.
    pub fn open(path: &Path, fsync: bool) -> Result<Engine, EngineError> {
        Engine::open_with_cache(path, fsync, row_cache::DEFAULT_CAPACITY)
    }

    /// [`Engine::open`] with a row cache of `cache_bytes` (0: none).
    pub fn open_with_cache(
        path: &Path,
        fsync: bool,
        cache_bytes: usize,
    ) -> Result<Engine, EngineError> {
        Engine::open_tuned(path, fsync, cache_bytes, WalFiles::default())
    }

    fn open_tuned(
        path: &Path,
        fsync: bool,
        cache_bytes: usize,
        wal: WalFiles,
    ) -> Result<Engine, EngineError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        // See the module docs: the WAL reaches its file with the syncs.
        // Without fsync nothing would flush it but memtable switches.
        opts.set_manual_wal_flush(fsync);
        opts.set_keep_log_file_num(4);
        opts.set_recycle_log_file_num(wal.recycled);
        opts.set_max_total_wal_size(wal.max_total_bytes);
        opts.enable_statistics();
        opts.set_statistics_level(rocksdb::statistics::StatsLevel::ExceptHistogramOrTimers);
        let cfs = [CF_LOG, CF_STATE, CF_DATA, CF_SUB].map(|name| {
            let mut cf_opts = Options::default();
            if let Some(bytes) = wal.write_buffer_bytes {
                cf_opts.set_write_buffer_size(bytes);
            }
            cf_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
            if name != CF_LOG {
                // Point lookups of absent keys (a SET of a new key, its
                // lock row) are answered by the filter, in memory, instead
                // of a data block read: `read_cached` then rarely misses.
                let mut table = rocksdb::BlockBasedOptions::default();
                table.set_bloom_filter(10.0, false);
                cf_opts.set_block_based_table_factory(&table);
            }
            ColumnFamilyDescriptor::new(name, cf_opts)
        });
        let db = Arc::new(DB::open_cf_descriptors(&opts, path, cfs)?);
        check_marker(&db)?;
        let (tx, rx) = mpsc::channel::<WriteJob>();
        let writer_db = db.clone();
        let cache = Arc::new(RowCache::new(cache_bytes));
        let writer_cache = cache.clone();
        let writer_thread = std::thread::Builder::new()
            .name("shoal-rocksdb-writer".into())
            .spawn(move || writer_loop(writer_db, writer_cache, rx, fsync))
            .map_err(|e| EngineError::Corrupt(format!("cannot start writer thread: {e}")))?;
        Ok(Engine {
            db,
            opts,
            writer: Some(tx),
            writer_thread: Some(writer_thread),
            cache,
            fsync,
        })
    }

    /// A RocksDB integer property (`rocksdb.cur-size-all-mem-tables`...)
    /// summed over the column families (0 where unknown).
    pub fn property_total(&self, name: &str) -> u64 {
        [Cf::Log, Cf::State, Cf::Data, Cf::Sub]
            .into_iter()
            .filter_map(|cf| {
                let h = self.db.cf_handle(cf.name())?;
                self.db.property_int_value_cf(&h, name).ok().flatten()
            })
            .sum()
    }

    /// A RocksDB statistics ticker (counted since the database opened).
    pub fn ticker(&self, ticker: rocksdb::statistics::Ticker) -> u64 {
        self.opts.get_ticker_count(ticker)
    }

    /// Queue a batch; `done` runs on the writer thread once it is written
    /// (and synced, if `sync`). Batches are written in submission order.
    pub fn submit(&self, ops: Vec<Op>, sync: bool, done: Done) {
        let job = WriteJob { ops, sync, done };
        let Some(writer) = &self.writer else {
            (job.done)(Err(EngineError::WriterGone));
            return;
        };
        if let Err(mpsc::SendError(job)) = writer.send(job) {
            (job.done)(Err(EngineError::WriterGone));
        }
    }

    /// Write a batch from the calling thread and sync the WAL (when fsync
    /// is on) before returning: the writer thread's work, done here by a
    /// thread that has nothing better to do while it waits (the batch
    /// engine's loop). It does not wait behind the writer's queue: what is
    /// synced is the whole WAL up to this batch, whoever wrote it.
    pub fn write_synced(&self, ops: &[Op]) -> Result<(), EngineError> {
        write_synced(&self.db, &self.cache, std::iter::once(ops), self.fsync)
    }

    /// Write a batch and wait until it is written (and synced, if `sync`).
    pub async fn write(&self, ops: Vec<Op>, sync: bool) -> Result<(), EngineError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(
            ops,
            sync,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.await.map_err(|_| EngineError::WriterGone)?
    }

    /// Write a batch right away, from the calling thread, without waiting
    /// in the writer's queue behind synced log appends (nor, since the
    /// writer syncs the WAL outside RocksDB's write queue, behind an
    /// fsync). For the state machine, whose writes need no sync (the log is
    /// the durable record) and are ordered by the state-machine lock.
    pub fn write_direct(&self, ops: &[Op]) -> Result<(), EngineError> {
        let mut batch = batch_for(ops.iter());
        add_ops(&self.db, &mut batch, ops)?;
        let guard = begin_write(&self.cache, ops.iter());
        self.db.write_opt(batch, &WriteOptions::default())?;
        if let Some(g) = guard {
            g.written();
        }
        Ok(())
    }

    /// [`Engine::write_direct`] for an async worker thread: a write RocksDB
    /// would hold up (a write stall: too many memtables or level-0 files
    /// waiting for flush or compaction) is not made, and `Ok(false)` tells
    /// the caller to make it with `write_direct` on a blocking thread.
    pub fn write_direct_unless_stalled(&self, ops: &[Op]) -> Result<bool, EngineError> {
        let mut batch = batch_for(ops.iter());
        add_ops(&self.db, &mut batch, ops)?;
        let mut wo = WriteOptions::default();
        wo.set_no_slowdown(true);
        let guard = begin_write(&self.cache, ops.iter());
        match self.db.write_opt(batch, &wo) {
            Ok(()) => {
                if let Some(g) = guard {
                    g.written();
                }
                Ok(true)
            }
            Err(e) if e.kind() == rocksdb::ErrorKind::Incomplete => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Run a read against the database on a blocking thread.
    pub async fn read<T, F>(&self, f: F) -> Result<T, EngineError>
    where
        F: FnOnce(&DbView) -> Result<T, EngineError> + Send + 'static,
        T: Send + 'static,
    {
        let view = self.view();
        tokio::task::spawn_blocking(move || f(&view))
            .await
            .map_err(|e| EngineError::Corrupt(format!("read task failed: {e}")))?
    }

    /// Start `f` on a blocking thread against a RocksDB snapshot of the
    /// whole database, taken there before `f` runs. The receiver is told
    /// once the snapshot is taken: from then on no write changes what `f`
    /// reads, so a caller that held writes back for a consistent view may
    /// let them go on while `f` copies. The future yields what `f` returns.
    pub fn read_snapshot<T, F>(
        &self,
        f: F,
    ) -> (
        tokio::sync::oneshot::Receiver<()>,
        impl std::future::Future<Output = Result<T, EngineError>>,
    )
    where
        F: FnOnce(&SnapshotView<'_>) -> Result<T, EngineError> + Send + 'static,
        T: Send + 'static,
    {
        let db = self.db.clone();
        let (taken_tx, taken_rx) = tokio::sync::oneshot::channel();
        let task = tokio::task::spawn_blocking(move || {
            let view = SnapshotView {
                db: &db,
                snapshot: db.snapshot(),
            };
            let _ = taken_tx.send(());
            f(&view)
        });
        let out = async move {
            task.await
                .map_err(|e| EngineError::Corrupt(format!("read task failed: {e}")))?
        };
        (taken_rx, out)
    }

    /// Run `f` right here, on the calling (async) thread, against what
    /// RocksDB holds in memory: its memtables and block cache. A read that
    /// would go to disk is not made; `None` then tells the caller to use
    /// [`Engine::read`] instead, and whatever `f` returned is dropped (so `f`
    /// must not act on its reads, only compute from them). Point reads of
    /// recent or hot keys, and the state machine's reads before an apply,
    /// thus skip the blocking-pool hop.
    pub fn read_cached<T>(&self, f: impl FnOnce(&DbView) -> T) -> Option<T> {
        let view = DbView {
            db: self.db.clone(),
            cache: self.cache.clone(),
            cached_only: true,
            missed: std::cell::Cell::new(false),
        };
        let out = f(&view);
        (!view.missed()).then_some(out)
    }

    /// Write every memtable out to SST files, so reads must go to the
    /// files (until the block cache holds their blocks): tests use it to
    /// take the path of a value that is not in memory.
    #[cfg(test)]
    pub fn flush(&self) -> Result<(), EngineError> {
        for cf in [Cf::Log, Cf::State, Cf::Data] {
            self.db.flush_cf(&handle(&self.db, cf)?)?;
        }
        Ok(())
    }

    /// Synchronous view, for code already on a blocking thread.
    pub fn view(&self) -> DbView {
        DbView {
            db: self.db.clone(),
            cache: self.cache.clone(),
            cached_only: false,
            missed: std::cell::Cell::new(false),
        }
    }

    /// The row cache's hits, misses and bytes (node metrics).
    pub fn row_cache_stats(&self) -> row_cache::Stats {
        self.cache.stats()
    }
}

/// Tell the row cache that the `data` rows among `ops` are about to be
/// written; `None` when there are none (the cache is not involved).
fn begin_write<'a>(
    cache: &'a RowCache,
    ops: impl Iterator<Item = &'a Op>,
) -> Option<row_cache::WriteGuard<'a>> {
    if cache.is_off() {
        // It holds nothing, so nothing needs dropping.
        return None;
    }
    let changes: Vec<Change<'a>> = ops
        .filter_map(|op| match op {
            Op::Put(Cf::Data, k, v) => Some(Change::Put(k, v)),
            Op::Delete(Cf::Data, k) => Some(Change::Delete(k)),
            Op::DeleteRange(Cf::Data, _, _) => Some(Change::DeleteRange),
            _ => None,
        })
        .collect();
    (!changes.is_empty()).then(|| cache.begin_write(changes))
}

/// A key-value pair read from RocksDB.
pub type Row = (Box<[u8]>, Box<[u8]>);

/// Read access to the database: off the async workers, or, made by
/// [`Engine::read_cached`], on them but only from memory.
#[derive(Clone)]
pub struct DbView {
    db: Arc<DB>,
    /// Point reads of `data` rows look here first; reads from a RocksDB
    /// snapshot ([`DbView::get_many`]) and iterators never do.
    cache: Arc<RowCache>,
    /// Reads only what is in memory (memtables, block cache).
    cached_only: bool,
    /// A cached-only read found its data was not in memory.
    missed: std::cell::Cell<bool>,
}

impl DbView {
    /// Whether a read was refused because its data was not in memory (a
    /// cached-only view): its result, an error, must not be used.
    pub fn missed(&self) -> bool {
        self.missed.get()
    }

    fn read_options(&self) -> rocksdb::ReadOptions {
        let mut ro = rocksdb::ReadOptions::default();
        if self.cached_only {
            ro.set_read_tier(rocksdb::ReadTier::BlockCache);
        }
        ro
    }

    /// A RocksDB result, noting a read refused by the cached-only tier.
    fn checked<T>(&self, r: Result<T, rocksdb::Error>) -> Result<T, EngineError> {
        r.map_err(|e| {
            if self.cached_only && e.kind() == rocksdb::ErrorKind::Incomplete {
                self.missed.set(true);
            }
            EngineError::from(e)
        })
    }

    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let epoch = match self.cached_row(cf, key, <[u8]>::to_vec) {
            Ok(v) => return Ok(Some(v)),
            Err(epoch) => epoch,
        };
        let handle = self.cf(cf)?;
        let found = self.checked(self.db.get_cf_opt(&handle, key, &self.read_options()))?;
        self.fill(epoch, key, found.as_deref());
        Ok(found)
    }

    /// Whether `key` is present, without copying its value out (unless it
    /// goes into the row cache).
    pub fn exists(&self, cf: Cf, key: &[u8]) -> Result<bool, EngineError> {
        let epoch = match self.cached_row(cf, key, |_| ()) {
            Ok(()) => return Ok(true),
            Err(epoch) => epoch,
        };
        let handle = self.cf(cf)?;
        let found = self.checked(
            self.db
                .get_pinned_cf_opt(&handle, key, &self.read_options()),
        )?;
        self.fill(epoch, key, found.as_deref());
        Ok(found.is_some())
    }

    /// What `f` makes of a `data` row in the row cache (a copy, or nothing
    /// when only its presence matters); on a miss, the epoch to
    /// [`DbView::fill`] with (`None` for the other column families, which
    /// it does not hold).
    fn cached_row<T>(
        &self,
        cf: Cf,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, Option<u64>> {
        match cf {
            Cf::Data => self.cache.get(key, f).map_err(Some),
            _ => Err(None),
        }
    }

    /// Hand what RocksDB answered after a row-cache miss back to the cache.
    fn fill(&self, epoch: Option<u64>, key: &[u8], found: Option<&[u8]>) {
        if let (Some(epoch), Some(v)) = (epoch, found) {
            self.cache.fill(key, v, epoch);
        }
    }

    /// A point read straight from RocksDB, past the row cache (tests
    /// compare the two).
    #[cfg(test)]
    pub fn get_uncached(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let handle = self.cf(cf)?;
        self.checked(self.db.get_cf_opt(&handle, key, &self.read_options()))
    }

    /// Several point reads from one consistent snapshot of the database.
    pub fn get_many(&self, keys: &[(Cf, Vec<u8>)]) -> Result<Vec<Option<Vec<u8>>>, EngineError> {
        let snapshot = self.db.snapshot();
        keys.iter()
            .map(|(cf, k)| {
                let handle = self.cf(*cf)?;
                self.checked(snapshot.get_cf_opt(&handle, k, self.read_options()))
            })
            .collect()
    }

    /// Key-value pairs with `start <= key < end`, in key order, at most `limit`.
    pub fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Row>, EngineError> {
        self.iter(cf, start, end)?.take(limit).collect()
    }

    /// Lazily iterate the pairs with `start <= key < end`, in key order.
    pub fn iter(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
    ) -> Result<impl Iterator<Item = Result<Row, EngineError>> + '_, EngineError> {
        let handle = self.cf(cf)?;
        let mut ro = self.read_options();
        ro.set_iterate_upper_bound(end.to_vec());
        let iter = self.db.iterator_cf_opt(
            &handle,
            ro,
            rocksdb::IteratorMode::From(start, rocksdb::Direction::Forward),
        );
        Ok(iter.map(|item| self.checked(item)))
    }

    /// Lazily iterate the pairs with `start <= key < end`, in reverse key
    /// order.
    pub fn iter_rev(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
    ) -> Result<impl Iterator<Item = Result<Row, EngineError>> + '_, EngineError> {
        let handle = self.cf(cf)?;
        let mut ro = self.read_options();
        ro.set_iterate_lower_bound(start.to_vec());
        ro.set_iterate_upper_bound(end.to_vec());
        let iter = self
            .db
            .iterator_cf_opt(&handle, ro, rocksdb::IteratorMode::End);
        Ok(iter.map(|item| self.checked(item)))
    }

    /// The last key-value pair with `start <= key < end`.
    pub fn last_in(&self, cf: Cf, start: &[u8], end: &[u8]) -> Result<Option<Row>, EngineError> {
        let handle = self.cf(cf)?;
        let mut ro = self.read_options();
        ro.set_iterate_lower_bound(start.to_vec());
        ro.set_iterate_upper_bound(end.to_vec());
        let mut iter = self
            .db
            .iterator_cf_opt(&handle, ro, rocksdb::IteratorMode::End);
        match iter.next() {
            Some(item) => Ok(Some(self.checked(item)?)),
            None => Ok(None),
        }
    }

    fn cf(&self, cf: Cf) -> Result<Arc<rocksdb::BoundColumnFamily<'_>>, EngineError> {
        self.db
            .cf_handle(cf.name())
            .ok_or_else(|| EngineError::Corrupt(format!("missing column family {}", cf.name())))
    }
}

/// Reads from one RocksDB snapshot ([`Engine::read_snapshot`]): every
/// read sees the database as it was when the snapshot was taken, whatever
/// was written since. Never the row cache, which holds only the latest.
pub struct SnapshotView<'a> {
    db: &'a DB,
    snapshot: rocksdb::SnapshotWithThreadMode<'a, DB>,
}

impl SnapshotView<'_> {
    /// Key-value pairs with `start <= key < end`, in key order.
    pub fn scan(&self, cf: Cf, start: &[u8], end: &[u8]) -> Result<Vec<Row>, EngineError> {
        let handle = handle(self.db, cf)?;
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_upper_bound(end.to_vec());
        self.snapshot
            .iterator_cf_opt(
                &handle,
                ro,
                rocksdb::IteratorMode::From(start, rocksdb::Direction::Forward),
            )
            .map(|item| item.map_err(EngineError::from))
            .collect()
    }
}

impl std::fmt::Debug for DbView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DbView")
    }
}

/// Key of the data-directory marker, in the `default` column family.
const MARKER_KEY: &[u8] = b"shoal-formats";

/// Check (or, on an empty database, write) the data-directory marker: rows
/// without it were written by a build whose formats carried no version,
/// and reading them could misread them.
fn check_marker(db: &DB) -> Result<(), EngineError> {
    if let Some(raw) = db.get(MARKER_KEY)? {
        return codec::decode::<()>(Format::DataDir, &raw).map_err(|e| {
            EngineError::Format(format!("{e}; this build cannot read this data directory"))
        });
    }
    for cf in [Cf::Log, Cf::State, Cf::Data] {
        let h = handle(db, cf)?;
        if db
            .iterator_cf(&h, rocksdb::IteratorMode::Start)
            .next()
            .transpose()?
            .is_some()
        {
            return Err(EngineError::Format(format!(
                "column family {} holds rows written by an earlier build whose formats \
                 carried no version; this build cannot read them: re-create the data \
                 directory",
                cf.name()
            )));
        }
    }
    let marker =
        codec::encode(Format::DataDir, &()).map_err(|e| EngineError::Format(e.to_string()))?;
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    db.put_opt(MARKER_KEY, marker, &wo)?;
    Ok(())
}

/// What the `slow-fsync` failpoint adds to every WAL sync (tests of the
/// fsync latency event).
const SLOW_FSYNC_MS: u64 = 20;

/// Merge queued jobs into one batch and one sync; report to each job.
fn writer_loop(db: Arc<DB>, cache: Arc<RowCache>, rx: mpsc::Receiver<WriteJob>, fsync: bool) {
    const MAX_JOBS: usize = 512;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_JOBS {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let result = write_jobs(&db, &cache, &jobs, fsync);
        for job in jobs {
            (job.done)(result.clone());
        }
    }
}

/// Write the jobs as one batch, then, if any asked for durability, sync the
/// WAL once. The sync is `FlushWAL(sync)` after an unsynced write rather
/// than a synced write: RocksDB's write queue lets one writer group at a
/// time through, so a synced write would hold every other write (the state
/// machine's unsynced applies, [`Engine::write_direct`]) behind the fsync,
/// while `SyncWAL` runs outside that queue. What is synced is the same: the
/// whole WAL up to and including this batch.
fn write_jobs(
    db: &DB,
    cache: &RowCache,
    jobs: &[WriteJob],
    fsync: bool,
) -> Result<(), EngineError> {
    let sync = jobs.iter().any(|j| j.sync);
    write_synced(db, cache, jobs.iter().map(|j| &j.ops[..]), sync && fsync)
}

/// Write `ops` as one batch, then, if `sync`, sync the WAL once (see
/// [`write_jobs`]).
fn write_synced<'a>(
    db: &DB,
    cache: &'a RowCache,
    ops: impl Iterator<Item = &'a [Op]> + Clone,
    sync: bool,
) -> Result<(), EngineError> {
    let mut batch = batch_for(ops.clone().flatten());
    for ops in ops.clone() {
        add_ops(db, &mut batch, ops)?;
    }
    let guard = begin_write(cache, ops.flatten());
    db.write_opt(batch, &WriteOptions::default())?;
    if let Some(g) = guard {
        g.written();
    }
    if sync {
        let started = std::time::Instant::now();
        db.flush_wal(true)?;
        if crate::failpoint::armed("slow-fsync") {
            std::thread::sleep(std::time::Duration::from_millis(SLOW_FSYNC_MS));
        }
        let took = started.elapsed();
        crate::metrics::FSYNC_SECONDS.observe(took.as_secs_f64());
        crate::metrics::node_event("fsync", took);
    }
    Ok(())
}

/// An empty batch with room for `ops`: a batch of a large value is not
/// copied at each doubling of RocksDB's buffer.
fn batch_for<'a>(ops: impl Iterator<Item = &'a Op>) -> WriteBatch {
    let bytes: usize = ops
        .map(|op| match op {
            Op::Put(_, k, v) => k.len() + v.len() + 16,
            Op::Delete(_, k) => k.len() + 8,
            Op::DeleteRange(_, from, to) => from.len() + to.len() + 12,
        })
        .sum();
    // RocksDB's header (12 bytes) is added to what is asked.
    WriteBatch::with_capacity_bytes(bytes + 12)
}

fn add_ops(db: &DB, batch: &mut WriteBatch, ops: &[Op]) -> Result<(), EngineError> {
    for op in ops {
        match op {
            Op::Put(cf, k, v) => batch.put_cf(&handle(db, *cf)?, k, v),
            Op::Delete(cf, k) => batch.delete_cf(&handle(db, *cf)?, k),
            Op::DeleteRange(cf, from, to) => batch.delete_range_cf(&handle(db, *cf)?, from, to),
        }
    }
    Ok(())
}

fn handle(db: &DB, cf: Cf) -> Result<Arc<rocksdb::BoundColumnFamily<'_>>, EngineError> {
    db.cf_handle(cf.name())
        .ok_or_else(|| EngineError::Corrupt(format!("missing column family {}", cf.name())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_db(path: &Path) -> DB {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        DB::open_cf(&opts, path, [CF_LOG, CF_STATE, CF_DATA, CF_SUB]).unwrap()
    }

    #[test]
    fn a_new_directory_gets_the_marker_and_opens_again() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), false).unwrap();
        drop(engine);
        let db = raw_db(dir.path());
        assert_eq!(db.get(MARKER_KEY).unwrap(), Some(vec![1, 21]));
        drop(db);
        Engine::open(dir.path(), false).unwrap();
    }

    /// `lower_background_priority`: a flush runs on a thread at nice 19.
    /// (The pools are the process's: other tests' flushes run low too.)
    #[test]
    fn background_threads_run_at_the_lowest_priority() {
        lower_background_priority().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = raw_db(dir.path());
        let cf = db.cf_handle(CF_DATA).unwrap();
        db.put_cf(&cf, b"k", b"v").unwrap();
        db.flush_cf(&cf).unwrap();
        // (name, nice) of this process's threads, from /proc.
        let threads: Vec<(String, i64)> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| {
                let t = t.ok()?.path();
                let name = std::fs::read_to_string(t.join("comm")).ok()?;
                let stat = std::fs::read_to_string(t.join("stat")).ok()?;
                // Fields after the name's closing parenthesis; nice is the 19th field.
                let nice = stat.rsplit(')').next()?.split_whitespace().nth(16)?;
                Some((name.trim().to_string(), nice.parse().ok()?))
            })
            .collect();
        let flushers: Vec<_> = threads
            .iter()
            .filter(|(name, _)| name == "rocksdb:high")
            .collect();
        assert!(!flushers.is_empty(), "no flush thread in {threads:?}");
        assert!(flushers.iter().all(|(_, nice)| *nice == 19), "{flushers:?}");
    }

    /// Rows without the marker were written by a build whose formats
    /// carried no version: the node refuses to start on them.
    #[test]
    fn an_unversioned_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = raw_db(dir.path());
        let cf = db.cf_handle(CF_STATE).unwrap();
        db.put_cf(&cf, state_key(1, tag::VOTE), [1, 0, 0, 0])
            .unwrap();
        drop(cf);
        drop(db);
        let e = Engine::open(dir.path(), false).err().unwrap();
        assert!(
            matches!(&e, EngineError::Format(m) if m.contains("earlier build")),
            "{e}"
        );
    }

    /// Every file of `from` copied to `to` while the database is open: what
    /// a process killed at that moment leaves on disk.
    fn crash_image(from: &Path, to: &Path) {
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    }

    /// With fsync on, an unsynced apply's WAL record stays in RocksDB's
    /// buffer until a sync, and a sync writes it out with its own: a
    /// process killed after a synced write has every earlier write, and a
    /// clean close loses nothing either.
    #[test]
    fn a_sync_writes_out_every_earlier_unsynced_write() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), true).unwrap();
        let applied = data_key(1, b"applied");
        engine
            .write_direct(&[Op::Put(Cf::Data, applied.clone(), b"a".to_vec())])
            .unwrap();
        let log = log_key(1, 7);
        let (tx, rx) = std::sync::mpsc::channel();
        engine.submit(
            vec![Op::Put(Cf::Log, log.clone(), b"entry".to_vec())],
            true,
            Box::new(move |r| tx.send(r).unwrap()),
        );
        rx.recv().unwrap().unwrap();
        let later = data_key(1, b"later");
        engine
            .write_direct(&[Op::Put(Cf::Data, later.clone(), b"l".to_vec())])
            .unwrap();

        let image = tempfile::tempdir().unwrap();
        crash_image(dir.path(), image.path());
        let crashed = Engine::open(image.path(), true).unwrap();
        assert_eq!(
            crashed.view().get(Cf::Data, &applied).unwrap(),
            Some(b"a".to_vec())
        );
        assert_eq!(
            crashed.view().get(Cf::Log, &log).unwrap(),
            Some(b"entry".to_vec())
        );
        // The apply after the sync is still in the buffer: no `write` of
        // its own reached the file.
        assert_eq!(crashed.view().get(Cf::Data, &later).unwrap(), None);
        drop(crashed);

        drop(engine);
        let reopened = Engine::open(dir.path(), true).unwrap();
        assert_eq!(
            reopened.view().get(Cf::Data, &later).unwrap(),
            Some(b"l".to_vec())
        );
    }

    /// A cached-only read answers from the memtable, and says so when the
    /// value is only on disk instead of reading it or answering "absent".
    #[test]
    fn cached_reads_answer_from_memory_and_report_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), false).unwrap();
        let key = data_key(1, b"k");
        engine
            .write_direct(&[Op::Put(Cf::Data, key.clone(), b"v".to_vec())])
            .unwrap();
        let got = engine.read_cached(|db| db.get(Cf::Data, &key).unwrap());
        assert_eq!(got, Some(Some(b"v".to_vec())));
        engine.flush().unwrap();
        drop(engine);
        let engine = Engine::open(dir.path(), false).unwrap();
        assert_eq!(
            engine.read_cached(|db| db.get(Cf::Data, &key)).map(|_| ()),
            None
        );
        assert_eq!(
            engine.view().get(Cf::Data, &key).unwrap(),
            Some(b"v".to_vec())
        );
    }

    /// Every point read through the row cache answers what RocksDB
    /// holds, whichever way the writes came (direct, the writer thread,
    /// range deletes), with reads filling the cache in between.
    #[test]
    fn the_row_cache_always_answers_what_rocksdb_holds() {
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().unwrap();
        // A small cache, so generations turn over during the run.
        let engine = Engine::open_with_cache(dir.path(), false, 8 * 1024).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let key = |i: u32| data_key(u64::from(i % 3), &i.to_be_bytes());
        for step in 0..5_000 {
            let i = rng.gen_range(0..64u32);
            let value = vec![rng.gen::<u8>(); rng.gen_range(1..200)];
            let ops = match rng.gen_range(0..10) {
                0..=4 => vec![Op::Put(Cf::Data, key(i), value)],
                5 | 6 => vec![Op::Delete(Cf::Data, key(i))],
                7 => {
                    let (from, to) = group_range(u64::from(i % 3));
                    vec![
                        Op::DeleteRange(Cf::Data, from, to),
                        Op::Put(Cf::Data, key(i), value),
                    ]
                }
                _ => vec![
                    Op::Put(Cf::Data, key(i), value.clone()),
                    Op::Put(Cf::State, state_key(1, tag::APPLIED), value),
                    Op::Delete(Cf::Data, key(i + 1)),
                ],
            };
            if rng.gen_bool(0.3) {
                let (tx, rx) = std::sync::mpsc::channel();
                engine.submit(ops, false, Box::new(move |r| tx.send(r).unwrap()));
                rx.recv().unwrap().unwrap();
            } else {
                engine.write_direct(&ops).unwrap();
            }
            let view = engine.view();
            for j in 0..64u32 {
                let k = key(j);
                let want = view.get_uncached(Cf::Data, &k).unwrap();
                assert_eq!(
                    view.get(Cf::Data, &k).unwrap(),
                    want,
                    "key {j} at step {step}"
                );
                assert_eq!(view.exists(Cf::Data, &k).unwrap(), want.is_some());
            }
        }
        let stats = engine.row_cache_stats();
        assert!(stats.hits > 100_000 && stats.bytes <= 8 * 1024, "{stats:?}");
    }

    /// Writers on two threads race on one key, round after round, while a
    /// third thread reads (and fills): after each round the cached row is
    /// RocksDB's.
    #[test]
    fn racing_writers_leave_no_stale_row_in_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open(dir.path(), false).unwrap());
        let key = data_key(1, b"k");
        let rounds = 20_000u32;
        let barrier = Arc::new(std::sync::Barrier::new(3));
        let writers: Vec<_> = (1..=2u8)
            .map(|w| {
                let (engine, barrier, key) = (engine.clone(), barrier.clone(), key.clone());
                std::thread::spawn(move || {
                    for n in 0..rounds {
                        barrier.wait();
                        let value = vec![w; 1 + (n % 50) as usize];
                        engine
                            .write_direct(&[Op::Put(Cf::Data, key.clone(), value)])
                            .unwrap();
                        // A read between the writes fills, or tries to.
                        engine.view().get(Cf::Data, &key).unwrap();
                        barrier.wait();
                    }
                })
            })
            .collect();
        let mut stale = 0;
        for _ in 0..rounds {
            barrier.wait();
            barrier.wait();
            let view = engine.view();
            let want = view.get_uncached(Cf::Data, &key).unwrap();
            stale += (view.get(Cf::Data, &key).unwrap() != want) as u32;
        }
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(stale, 0, "rounds that left a stale row");
    }

    #[test]
    fn a_newer_marker_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = raw_db(dir.path());
        db.put(MARKER_KEY, [2, Format::DataDir.tag()]).unwrap();
        drop(db);
        let e = Engine::open(dir.path(), false).err().unwrap();
        assert!(
            matches!(&e, EngineError::Format(m) if m.contains("version 2 is unknown")),
            "{e}"
        );
    }

    /// WAL files tiny enough that the crash test below reuses several a
    /// second.
    fn tiny_wals() -> WalFiles {
        WalFiles {
            recycled: 4,
            max_total_bytes: 256 << 10,
            write_buffer_bytes: Some(128 << 10),
        }
    }

    fn crash_row(i: u64) -> Vec<u8> {
        let mut k = 1u64.to_be_bytes().to_vec();
        k.extend_from_slice(&i.to_be_bytes());
        k
    }

    fn crash_value(i: u64) -> Vec<u8> {
        let mut v = i.to_be_bytes().to_vec();
        v.extend((0..600u32).map(|j| (i as u8).wrapping_add(j as u8)));
        v
    }

    /// The child of [`synced_writes_survive_kill_9_with_reused_wals`], run
    /// when that test starts this test binary again, for itself, with
    /// `SHOAL_WAL_CRASH_DIR` set: synced log rows, each after an unsynced
    /// data row as a node's applies interleave with its appends, into tiny
    /// WALs; it prints each row's index once its write is acknowledged,
    /// until it is killed.
    fn wal_crash_child(dir: &Path) {
        use std::io::Write;
        let from: u64 = std::env::var("SHOAL_WAL_CRASH_FROM")
            .unwrap()
            .parse()
            .unwrap();
        let engine = Engine::open_tuned(dir, true, 0, tiny_wals()).unwrap();
        let mut out = std::io::stdout().lock();
        for i in from.. {
            let data = Op::Put(Cf::Data, data_key(1, &i.to_be_bytes()), vec![7; 300]);
            engine.write_direct(&[data]).unwrap();
            let (tx, rx) = mpsc::channel();
            let row = Op::Put(Cf::Log, crash_row(i), crash_value(i));
            engine.submit(vec![row], true, Box::new(move |r| tx.send(r).unwrap()));
            rx.recv().unwrap().unwrap();
            writeln!(out, "acked {i}").unwrap();
            out.flush().unwrap();
        }
    }

    /// Synced writes survive `kill -9` while WAL files are being reused:
    /// after each of five kills, at varied moments, the log rows are
    /// exactly 0..n for an n past the last acknowledged one (none lost, no
    /// hole, no stale record of a reused file read back), with their bytes.
    #[test]
    fn synced_writes_survive_kill_9_with_reused_wals() {
        use std::io::BufRead;
        if let Some(dir) = std::env::var_os("SHOAL_WAL_CRASH_DIR") {
            return wal_crash_child(Path::new(&dir));
        }
        let dir = tempfile::tempdir().unwrap();
        let mut next = 0u64;
        for round in 0..5u64 {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "shard::engine::tests::synced_writes_survive_kill_9_with_reused_wals",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env("SHOAL_WAL_CRASH_DIR", dir.path())
                .env("SHOAL_WAL_CRASH_FROM", next.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
            let kill_after = 300 + round * 250;
            let mut acked = None;
            let mut reached = false;
            for line in stdout.lines() {
                if let Some(i) = line.unwrap().strip_prefix("acked ") {
                    let i: u64 = i.parse().unwrap();
                    acked = Some(i);
                    if i + 1 - next >= kill_after {
                        reached = true;
                        break;
                    }
                }
            }
            // Killed while writing, not after it failed or stopped.
            assert!(
                reached && child.try_wait().unwrap().is_none(),
                "the child stopped by itself after row {acked:?} (round {round})"
            );
            child.kill().unwrap();
            child.wait().unwrap();
            let acked = acked.expect("the child acknowledged no write");

            let engine = Engine::open_tuned(dir.path(), true, 0, tiny_wals()).unwrap();
            let view = engine.view();
            for i in 0..=acked {
                let got = view.get(Cf::Log, &crash_row(i)).unwrap();
                assert!(
                    got == Some(crash_value(i)),
                    "row {i} of 0..={acked} lost or changed after kill {round}"
                );
            }
            let rows = view
                .scan(Cf::Log, &crash_row(0), &crash_row(u64::MAX), usize::MAX)
                .unwrap();
            for (n, (k, v)) in rows.iter().enumerate() {
                let n = n as u64;
                assert!(
                    **k == *crash_row(n) && **v == *crash_value(n),
                    "after kill {round} the log is not rows 0..{}: row {n} differs",
                    rows.len()
                );
            }
            assert!(rows.len() as u64 > acked);
            next = rows.len() as u64;
        }
        // The kills did land on reused files: RocksDB's info log says so.
        let mut reused = 0;
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name().to_string_lossy().starts_with("LOG") {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                reused += text.matches("from recycle list").count();
            }
        }
        assert!(reused >= 5, "only {reused} WAL files were reused");
    }
}
