//! openraft storage for one shard group, over the node's shared [`Engine`].
//!
//! [`LogStore`] keeps the group's Raft log and vote in the `raft_log` and
//! `raft_state` column families; every write goes through the engine's writer
//! thread, so vote saves, appends, truncations and purges reach disk in the
//! order openraft issued them, and appends are acknowledged (the
//! `IOFlushed` callback) only once synced. The newest entries also stay in
//! memory ([`LogTail`]): replication and apply read what was just appended
//! from there, not back from RocksDB. The committed index is kept in memory
//! and its row rides along with the group's next append (`save_committed`):
//! no write, and no wake-up of the writer thread, of its own.
//!
//! [`StateMachine`] applies committed entries with the pure
//! `apply_write`: the data changes of a whole
//! batch of entries and the new `last_applied` go into one `WriteBatch`, so
//! after a crash the data and the applied index always agree. A batch is
//! applied right on openraft's state-machine task when every value it reads
//! is in RocksDB's memory ([`Engine::read_cached`]: the keys just written,
//! hot ones), and computed again from scratch on a blocking thread when one
//! is only on disk; either way the same pure function of the same values.
//! Snapshots are a full copy of the group's data range, from a RocksDB
//! snapshot taken under the state-machine lock: the copy runs while later
//! entries are applied.
//!
//! The state machine also keeps the number of keys the group stores, updated
//! by each applied batch and written with it (for INFO keyspace, which must
//! not scan); after a snapshot install it is unknown until counted once.
//! A record that does not decode (value, lock, prepared transaction, log
//! entry) is reported as corrupt, never read as absent. Every row written
//! here is a versioned [`codec`] blob of its own [`Format`].

use std::collections::HashMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, IOFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftLogReader, RaftSnapshotBuilder};
use openraft_legacy::network_v1::SnapshotReceiverFactory;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::codec::{self, Format};
use super::coll::{KeyView, Overlay, Range, ReadView};
use super::command::{LogCmd, OpReply, Proposal, TxnCmd, TxnEntry, WriteCmd};
use super::engine::{
    self, data_key, group_range, log_key, prefix_end, state_key, state_key_with, sub_prefix, tag,
    Cf, DbView, Engine, Op, SnapshotView,
};
use super::log_tail::LogTail;
use super::txn::{apply_txn_notified, blocked_by_lock, Prepared, TxnChange, TxnView};
use super::types::{
    Entry, LogId, Snapshot, SnapshotBytes, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig, Vote,
};
use super::value::{Corrupt, Kind, Place, Stored};

/// A group's Raft: openraft 0.10 names the state machine in the type.
pub type Raft = openraft::Raft<TypeConfig, StateMachine>;

fn read_err(e: impl std::fmt::Display) -> StorageError {
    std::io::Error::other(format!("reading the store: {e}"))
}

fn write_err(e: impl std::fmt::Display) -> StorageError {
    std::io::Error::other(format!("writing the store: {e}"))
}

fn encode<T: Serialize>(kind: Format, v: &T) -> Result<Vec<u8>, StorageError> {
    codec::encode(kind, v).map_err(write_err)
}

fn decode<T: DeserializeOwned>(kind: Format, raw: &[u8]) -> Result<T, StorageError> {
    codec::decode(kind, raw).map_err(read_err)
}

/// A log entry read back, or a storage error naming the group and index
/// (and an error log line): a corrupt entry is never skipped, since this
/// replica would then silently diverge from the others.
fn decode_entry(gid: u64, key: &[u8], raw: &[u8]) -> Result<Entry, StorageError> {
    codec::decode(Format::LogEntry, raw).map_err(|e| {
        let index = key.get(8..16).map_or(0, |b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_be_bytes(a)
        });
        read_err(Corrupt::found(gid, Place::LogEntry(index), &e))
    })
}

/// The Raft log and vote of one group.
#[derive(Clone)]
pub struct LogStore {
    engine: Arc<Engine>,
    gid: u64,
    /// Shared by the store and every reader cloned from it.
    mem: Arc<LogMem>,
}

/// What the log store keeps in memory for one group.
struct LogMem {
    /// The newest entries, so replication and apply do not read back what
    /// was just appended.
    tail: std::sync::Mutex<LogTail>,
    /// The last committed log id handed to `save_committed`, and whether
    /// its row still waits for the group's next append (see there).
    committed: std::sync::Mutex<CommittedRow>,
    /// Encoded bytes appended since the store was opened.
    appended: LogBytes,
}

/// Encoded log bytes a group's log store has appended since it was opened
/// (only ever grows): shared with the group's state machine, which decides
/// from it whether a snapshot is worth building
/// ([`super::snapshot::worth_building`]).
#[derive(Clone, Default)]
pub struct LogBytes(Arc<std::sync::atomic::AtomicU64>);

impl LogBytes {
    fn add(&self, n: u64) {
        self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[derive(Default)]
struct CommittedRow {
    /// `None` until the first `save_committed`.
    latest: Option<Option<LogId>>,
    /// `latest` is not in the batch of any append yet.
    unwritten: bool,
}

/// Budget of a group's in-memory log tail: the entries a follower a little
/// behind still needs. Older ones are read from RocksDB.
const TAIL_MAX_ENTRIES: usize = 256;
const TAIL_MAX_BYTES: usize = 256 << 10;

impl LogStore {
    pub fn new(engine: Arc<Engine>, gid: u64) -> LogStore {
        LogStore {
            engine,
            gid,
            mem: Arc::new(LogMem {
                tail: std::sync::Mutex::new(LogTail::new(TAIL_MAX_ENTRIES, TAIL_MAX_BYTES)),
                committed: std::sync::Mutex::new(CommittedRow::default()),
                appended: LogBytes::default(),
            }),
        }
    }

    /// The count of bytes this store appends, for the group's state
    /// machine ([`StateMachine::follow_log`]).
    pub fn log_bytes(&self) -> LogBytes {
        self.mem.appended.clone()
    }

    fn tail(&self) -> Result<std::sync::MutexGuard<'_, LogTail>, StorageError> {
        self.mem
            .tail
            .lock()
            .map_err(|_| read_err("the log tail lock is poisoned"))
    }

    /// Keep `entries` in the tail and queue them to the writer, synced;
    /// `done` runs once they are on disk (the tail may then let them go).
    fn append_then(
        &self,
        entries: impl IntoIterator<Item = Entry>,
        done: impl FnOnce(Result<(), engine::EngineError>) + Send + 'static,
    ) -> Result<(), StorageError> {
        let mut ops = Vec::new();
        let mut kept = Vec::new();
        let mut last = None;
        let mut bytes = 0;
        for entry in entries {
            let raw = encode(Format::LogEntry, &entry)?;
            let index = entry.log_id.index;
            last = Some(index);
            bytes += raw.len() as u64;
            kept.push((entry, raw.len()));
            ops.push(Op::Put(Cf::Log, log_key(self.gid, index), raw));
        }
        if let Ok(mut c) = self.mem.committed.lock() {
            if let (true, Some(committed)) = (c.unwritten, c.latest) {
                ops.push(Op::Put(
                    Cf::State,
                    state_key(self.gid, tag::COMMITTED),
                    encode(Format::Committed, &committed)?,
                ));
                c.unwritten = false;
            }
        }
        self.tail()?.append(kept);
        self.mem.appended.add(bytes);
        let mem = self.mem.clone();
        self.engine.submit(
            ops,
            true,
            Box::new(move |r| {
                if let (Ok(()), Some(last)) = (&r, last) {
                    if let Ok(mut tail) = mem.tail.lock() {
                        tail.trim(last);
                    }
                }
                done(r)
            }),
        );
        Ok(())
    }

    async fn read_state<T: DeserializeOwned + Send + 'static>(
        &self,
        t: u8,
        kind: Format,
    ) -> Result<Option<T>, StorageError> {
        let key = state_key(self.gid, t);
        let raw = self
            .engine
            .read(move |db| db.get(Cf::State, &key))
            .await
            .map_err(read_err)?;
        raw.map(|r| decode(kind, &r)).transpose()
    }

    async fn put_state<T: Serialize>(
        &self,
        t: u8,
        kind: Format,
        v: &T,
        sync: bool,
    ) -> Result<(), StorageError> {
        let op = Op::Put(Cf::State, state_key(self.gid, t), encode(kind, v)?);
        self.engine.write(vec![op], sync).await.map_err(write_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        if start >= end {
            return Ok(Vec::new());
        }
        // What the tail holds first: an entry below its first index is
        // already written (the tail evicts only written entries).
        let (split, from_tail) = self.tail()?.split(start, end);
        if split <= start {
            return Ok(from_tail);
        }
        let gid = self.gid;
        let rows = self
            .engine
            .read(move |db| {
                db.scan(
                    Cf::Log,
                    &log_key(gid, start),
                    &log_key(gid, split),
                    usize::MAX,
                )
            })
            .await
            .map_err(read_err)?;
        let mut entries = rows
            .iter()
            .map(|(k, v)| decode_entry(gid, k, v))
            .collect::<Result<Vec<_>, _>>()?;
        entries.extend(from_tail);
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_state(tag::VOTE, Format::Vote).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.read_state(tag::PURGED, Format::Purged).await?;
        let gid = self.gid;
        let last = self
            .engine
            .read(move |db| {
                let (start, end) = group_range(gid);
                db.last_in(Cf::Log, &start, &end)
            })
            .await
            .map_err(read_err)?;
        let last_log_id = match last {
            Some((k, v)) => Some(decode_entry(gid, &k, &v)?.log_id),
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_state(tag::VOTE, Format::Vote, vote, true).await
    }

    /// Kept in memory; the row is written with the group's next append
    /// (`append_then`), not on its own. openraft calls this in its core task
    /// before every apply: waiting would put the group behind the fsync the
    /// writer thread may be doing, and a write of its own woke the writer
    /// thread once per commit on every replica (a third of a lone SET's
    /// writer wake-ups). The row only saves a restarted replica from waiting
    /// for its leader before applying what it had committed (the applied
    /// index is written with the data, and a committed index older than the
    /// truth is always safe), so nothing depends on it being current.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        if let Ok(mut c) = self.mem.committed.lock() {
            c.latest = Some(committed);
            c.unwritten = true;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        if let Some(saved) = self
            .mem
            .committed
            .lock()
            .map_err(|_| read_err("the committed lock is poisoned"))?
            .latest
        {
            return Ok(saved);
        }
        Ok(self
            .read_state::<Option<LogId>>(tag::COMMITTED, Format::Committed)
            .await?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.append_then(entries, move |r| {
            callback.io_completed(r.map_err(|e| std::io::Error::other(e.to_string())))
        })
    }

    /// Keep the log up to `last_log_id` and delete every entry after it.
    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), StorageError> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        self.tail()?.truncate(from);
        let (_, end) = group_range(self.gid);
        let op = Op::DeleteRange(Cf::Log, log_key(self.gid, from), end);
        self.engine.write(vec![op], true).await.map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.tail()?.purge(log_id.index);
        let ops = vec![
            Op::Put(
                Cf::State,
                state_key(self.gid, tag::PURGED),
                encode(Format::Purged, &log_id)?,
            ),
            Op::DeleteRange(
                Cf::Log,
                log_key(self.gid, 0),
                log_key(self.gid, log_id.index + 1),
            ),
        ];
        self.engine.write(ops, false).await.map_err(write_err)
    }
}

/// What a snapshot holds: every key-value pair of the group, and the state
/// of transactions in progress (key locks and prepared transactions). The
/// rows are copied as stored (each value in its own versioned format);
/// this is encoded as [`Format::SnapshotData`] inside the snapshot envelope.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct SnapshotData {
    /// (user key, `Stored` encoding)
    pub(super) pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// (`raft_state` key without the group prefix, value) for LOCK and
    /// PREPARED rows.
    pub(super) txn_state: Vec<(Vec<u8>, Vec<u8>)>,
    /// (`sub` row key without the group prefix, value): collections'
    /// element rows.
    pub(super) sub: Vec<(Vec<u8>, Vec<u8>)>,
}

/// [`SnapshotData`] as format version 1 wrote it (no collections).
#[derive(Deserialize)]
struct SnapshotDataV1 {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    txn_state: Vec<(Vec<u8>, Vec<u8>)>,
}

impl SnapshotData {
    pub(super) fn decode(raw: &[u8]) -> Result<SnapshotData, codec::CodecError> {
        let (version, payload) = codec::split(Format::SnapshotData, raw)?;
        if version >= Format::SnapshotData.same_type_since() {
            return codec::decode_payload(Format::SnapshotData, version, payload);
        }
        let v1: SnapshotDataV1 = codec::decode_payload(Format::SnapshotData, version, payload)?;
        Ok(SnapshotData {
            pairs: v1.pairs,
            txn_state: v1.txn_state,
            sub: Vec::new(),
        })
    }
}

/// `[start, end)` of the transaction-state rows (LOCK, PREPARED) of a group.
fn txn_state_range(gid: u64) -> (Vec<u8>, Vec<u8>) {
    (state_key(gid, tag::LOCK), state_key(gid, tag::PREPARED + 1))
}

struct SmInner {
    engine: Arc<Engine>,
    gid: u64,
    applied: Option<LogId>,
    membership: StoredMembership,
    /// Prepared transactions held: while 0, plain writes skip the lock check.
    prepared_count: usize,
    /// Keys the group stores, as `(applied index it is true at, count)`:
    /// known only while that index is the applied one (a snapshot install
    /// moves the applied index and so makes it unknown).
    key_count: Option<(u64, i64)>,
    /// The group's current snapshot as this replica built or installed it
    /// since it opened: its size, and the log bytes appended
    /// ([`LogBytes`]) when it was taken. `None` until then.
    last_snapshot: Option<SnapshotMark>,
}

#[derive(Debug, Clone, Copy)]
struct SnapshotMark {
    bytes: u64,
    log_mark: u64,
}

fn applied_index(applied: &Option<LogId>) -> u64 {
    applied.map_or(0, |l| l.index)
}

/// How a batch changed the number of keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyDelta {
    /// Not tracked (the count was unknown).
    Unknown,
    By(i64),
    /// The group was flushed: this many keys now.
    Exactly(i64),
}

/// The group's state as a batch of entries sees it: the database with this
/// batch's changes layered on top. Everything lands in one `WriteBatch`.
struct Batch<'a> {
    view: &'a DbView,
    gid: u64,
    /// Key records and element rows written by the batch so far.
    data: Overlay,
    locks: HashMap<Bytes, Option<u64>>,
    /// Whether the database may hold lock rows: only while a transaction
    /// is prepared (the count the plain writes' lock check relies on too).
    /// When it holds none, a one-phase transaction's lock checks read
    /// nothing but the locks this batch made.
    locks_in_db: bool,
    prepared: HashMap<u64, Option<Prepared>>,
    /// Set by FLUSHDB: every data key not in `data` is gone.
    cleared: bool,
    /// Whether each key read from the database was there before this
    /// batch (for the key count).
    existed: HashMap<Bytes, bool>,
    error: Option<engine::EngineError>,
}

impl<'a> Batch<'a> {
    fn new(view: &'a DbView, gid: u64, locks_in_db: bool) -> Batch<'a> {
        Batch {
            view,
            gid,
            data: Overlay::default(),
            locks: HashMap::new(),
            locks_in_db,
            prepared: HashMap::new(),
            cleared: false,
            existed: HashMap::new(),
            error: None,
        }
    }

    /// FLUSHDB: drop every data key of the group (one range delete).
    fn clear(&mut self) {
        self.data.clear();
        self.cleared = true;
    }

    fn db_get(&mut self, cf: Cf, key: &[u8]) -> Option<Vec<u8>> {
        match self.view.get(cf, key) {
            Ok(v) => v,
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }

    fn record(&mut self, changes: Vec<TxnChange>) {
        for c in changes {
            match c {
                TxnChange::Data(k, v) => self.data.put(&k, v),
                TxnChange::Sub(k, gen, e, v) => self.data.put_sub(&k, gen, e, v),
                TxnChange::Lock(k, v) => {
                    self.locks.insert(k, v);
                }
                TxnChange::Prepared(t, v) => {
                    self.prepared.insert(t, v);
                }
            }
        }
    }

    /// The key-count change of this batch (`track`: the count is known, so
    /// keys written without being read are looked up).
    fn key_delta(&mut self, track: bool) -> KeyDelta {
        if self.cleared {
            return KeyDelta::Exactly(
                self.data.keys.values().filter(|v| v.is_some()).count() as i64
            );
        }
        if !track {
            return KeyDelta::Unknown;
        }
        let mut delta = 0;
        for (k, v) in &self.data.keys {
            let existed = match self.existed.get(k) {
                Some(e) => *e,
                None => match self.view.exists(Cf::Data, &data_key(self.gid, k)) {
                    Ok(e) => e,
                    Err(e) => {
                        self.error = Some(e);
                        false
                    }
                },
            };
            delta += v.is_some() as i64 - existed as i64;
        }
        KeyDelta::By(delta)
    }

    fn into_ops(self) -> Result<Vec<Op>, StorageError> {
        if let Some(e) = self.error {
            return Err(read_err(e));
        }
        let gid = self.gid;
        let mut ops = Vec::with_capacity(self.data.keys.len() + self.data.subs.len() + 2);
        // A flush is one range delete, before the batch's later writes.
        if self.cleared {
            let (start, end) = group_range(gid);
            ops.push(Op::DeleteRange(Cf::Data, start.clone(), end.clone()));
            ops.push(Op::DeleteRange(Cf::Sub, start, end));
        }
        for (k, v) in self.data.keys {
            ops.push(match v {
                Some(v) => Op::Put(Cf::Data, data_key(gid, &k), v.encode().map_err(write_err)?),
                None => Op::Delete(Cf::Data, data_key(gid, &k)),
            });
        }
        for ((k, gen, e), v) in self.data.subs {
            let mut row = sub_prefix(gid, &k, gen);
            row.extend_from_slice(&e);
            ops.push(match v {
                Some(v) => Op::Put(Cf::Sub, row, v.to_vec()),
                None => Op::Delete(Cf::Sub, row),
            });
        }
        for (k, v) in self.locks {
            let key = state_key_with(gid, tag::LOCK, &k);
            ops.push(match v {
                Some(t) => Op::Put(Cf::State, key, encode(Format::Lock, &t)?),
                None => Op::Delete(Cf::State, key),
            });
        }
        for (t, p) in self.prepared {
            let key = state_key_with(gid, tag::PREPARED, &t.to_be_bytes());
            ops.push(match p {
                Some(p) => Op::Put(Cf::State, key, encode(Format::Prepared, &p)?),
                None => Op::Delete(Cf::State, key),
            });
        }
        Ok(ops)
    }
}

impl ReadView for Batch<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Stored>, Corrupt> {
        if let Some(v) = self.data.key(key) {
            return Ok(v.clone());
        }
        if self.cleared {
            return Ok(None);
        }
        let raw = self.db_get(Cf::Data, &data_key(self.gid, key));
        self.existed
            .entry(Bytes::copy_from_slice(key))
            .or_insert(raw.is_some());
        match raw {
            Some(raw) => Corrupt::check(self.gid, key, &raw).map(Some),
            None => Ok(None),
        }
    }

    fn sub_get(&mut self, key: &[u8], gen: u64, elem: &[u8]) -> Result<Option<Bytes>, Corrupt> {
        if let Some(v) = self.data.sub(key, gen, elem) {
            return Ok(v.clone());
        }
        if self.cleared {
            return Ok(None);
        }
        let mut row = sub_prefix(self.gid, key, gen);
        row.extend_from_slice(elem);
        Ok(self.db_get(Cf::Sub, &row).map(Bytes::from))
    }

    fn sub_range(&mut self, q: &Range<'_>) -> Result<Vec<(Bytes, Bytes)>, Corrupt> {
        let (view, gid, cleared) = (self.view, self.gid, self.cleared);
        let mut error = None;
        let rows = self.data.range_over(q, |limit| {
            if cleared {
                return Ok(Vec::new());
            }
            match sub_rows(view, gid, &Range { limit, ..*q }) {
                Ok(rows) => Ok(rows),
                Err(e) => {
                    error = Some(e);
                    Ok(Vec::new())
                }
            }
        })?;
        if let Some(e) = error {
            self.error = Some(e);
        }
        Ok(rows)
    }
}

impl KeyView for Batch<'_> {
    fn put(&mut self, key: &Bytes, v: Option<Stored>) {
        self.data.put(key, v);
    }

    fn put_sub(&mut self, key: &Bytes, gen: u64, elem: Bytes, v: Option<Bytes>) {
        self.data.put_sub(key, gen, elem, v);
    }
}

impl TxnView for Batch<'_> {
    fn lock(&mut self, key: &[u8]) -> Result<Option<u64>, Corrupt> {
        if let Some(v) = self.locks.get(key) {
            return Ok(*v);
        }
        if !self.locks_in_db {
            return Ok(None);
        }
        let Some(raw) = self.db_get(Cf::State, &state_key_with(self.gid, tag::LOCK, key)) else {
            return Ok(None);
        };
        codec::decode(Format::Lock, &raw)
            .map(Some)
            .map_err(|e| Corrupt::found(self.gid, Place::Lock(Bytes::copy_from_slice(key)), &e))
    }

    fn prepared(&mut self, txn_id: u64) -> Result<Option<Prepared>, Corrupt> {
        if let Some(p) = self.prepared.get(&txn_id) {
            return Ok(p.clone());
        }
        let Some(raw) = self.db_get(
            Cf::State,
            &state_key_with(self.gid, tag::PREPARED, &txn_id.to_be_bytes()),
        ) else {
            return Ok(None);
        };
        codec::decode(Format::Prepared, &raw)
            .map(Some)
            .map_err(|e| Corrupt::found(self.gid, Place::Prepared(txn_id), &e))
    }
}

/// The group's state as the database holds it, for reads served outside
/// apply. A storage error is kept in `error` (the caller reports it).
pub struct DbRead<'a> {
    pub db: &'a DbView,
    pub gid: u64,
    pub error: Option<engine::EngineError>,
}

impl DbRead<'_> {
    fn keep<T: Default>(&mut self, r: Result<T, engine::EngineError>) -> T {
        r.unwrap_or_else(|e| {
            self.error = Some(e);
            T::default()
        })
    }
}

impl ReadView for DbRead<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Stored>, Corrupt> {
        let raw = self.db.get(Cf::Data, &data_key(self.gid, key));
        match self.keep(raw) {
            Some(raw) => Corrupt::check(self.gid, key, &raw).map(Some),
            None => Ok(None),
        }
    }

    fn sub_get(&mut self, key: &[u8], gen: u64, elem: &[u8]) -> Result<Option<Bytes>, Corrupt> {
        let mut row = sub_prefix(self.gid, key, gen);
        row.extend_from_slice(elem);
        let raw = self.db.get(Cf::Sub, &row);
        Ok(self.keep(raw).map(Bytes::from))
    }

    fn sub_range(&mut self, q: &Range<'_>) -> Result<Vec<(Bytes, Bytes)>, Corrupt> {
        let rows = sub_rows(self.db, self.gid, q);
        Ok(self.keep(rows))
    }
}

/// Element rows of a range, read from the database.
pub fn sub_rows(
    view: &DbView,
    gid: u64,
    q: &Range<'_>,
) -> Result<Vec<(Bytes, Bytes)>, engine::EngineError> {
    let prefix = sub_prefix(gid, q.key, q.gen);
    let mut start = prefix.clone();
    start.extend_from_slice(q.from);
    let end = match q.to {
        Some(to) => [&prefix[..], to].concat(),
        None => prefix_end(&prefix).unwrap_or_else(|| vec![0xff; prefix.len() + 1]),
    };
    let strip = |(k, v): engine::Row| {
        (
            Bytes::copy_from_slice(&k[prefix.len()..]),
            Bytes::from(v.into_vec()),
        )
    };
    if q.rev {
        view.iter_rev(Cf::Sub, &start, &end)?
            .take(q.limit)
            .map(|r| r.map(strip))
            .collect()
    } else {
        view.iter(Cf::Sub, &start, &end)?
            .take(q.limit)
            .map(|r| r.map(strip))
            .collect()
    }
}

/// Prepared transactions of a group stored in the database.
pub fn load_prepared(view: &DbView, gid: u64) -> Result<Vec<Prepared>, engine::EngineError> {
    let start = state_key(gid, tag::PREPARED);
    let end = state_key(gid, tag::PREPARED + 1);
    view.scan(Cf::State, &start, &end, usize::MAX)?
        .into_iter()
        .map(|(_, v)| {
            codec::decode(Format::Prepared, &v)
                .map_err(|e| engine::EngineError::Corrupt(e.to_string()))
        })
        .collect()
}

/// How many prepared transactions the group holds once `ops` are written,
/// from the `before` it holds now: each prepared row that `ops` put or
/// delete is looked up (or followed through `ops`) to see whether it
/// changes the count. A point lookup per row touched, not a scan of the
/// group's prepared rows: such a scan also walks the tombstones of every
/// transaction since the rows' last compaction, and once the WAL bound
/// flushes `raft_state` often, those sit in SST blocks (docs/PERFORMANCE.md,
/// "Fast path, step: WAL files reused"). A range delete of `raft_state`
/// among `ops` falls back to the scan, and so does a count that would go
/// below zero (a `before` that was wrong): rounding it up to 0 would turn
/// the lock checks off.
fn count_prepared_after(
    view: &DbView,
    gid: u64,
    before: usize,
    ops: &[Op],
) -> Result<usize, StorageError> {
    let start = state_key(gid, tag::PREPARED);
    if ops
        .iter()
        .any(|op| matches!(op, Op::DeleteRange(Cf::State, ..)))
    {
        return scan_prepared_after(view, gid, ops);
    }
    let mut now: HashMap<&[u8], bool> = HashMap::new();
    let mut count = before as i64;
    for op in ops {
        let (key, present) = match op {
            Op::Put(Cf::State, k, _) if k.starts_with(&start) => (k.as_slice(), true),
            Op::Delete(Cf::State, k) if k.starts_with(&start) => (k.as_slice(), false),
            _ => continue,
        };
        let was = match now.get(key) {
            Some(&was) => was,
            None => view.exists(Cf::State, key).map_err(read_err)?,
        };
        count += i64::from(present) - i64::from(was);
        now.insert(key, present);
    }
    let Ok(count) = usize::try_from(count) else {
        return scan_prepared_after(view, gid, ops);
    };
    // Debug builds (the tests, the chaos harness) check it against the scan.
    #[cfg(debug_assertions)]
    {
        let scanned = scan_prepared_after(view, gid, ops)?;
        assert_eq!(
            count, scanned,
            "prepared rows of group {gid}, from {before}"
        );
    }
    Ok(count)
}

/// [`count_prepared_after`] by a scan of the group's prepared rows.
fn scan_prepared_after(view: &DbView, gid: u64, ops: &[Op]) -> Result<usize, StorageError> {
    let start = state_key(gid, tag::PREPARED);
    let end = state_key(gid, tag::PREPARED + 1);
    let mut keys: std::collections::BTreeSet<Vec<u8>> = view
        .scan(Cf::State, &start, &end, usize::MAX)
        .map_err(read_err)?
        .into_iter()
        .map(|(k, _)| k.into_vec())
        .collect();
    for op in ops {
        match op {
            Op::Put(Cf::State, k, _) if k.starts_with(&start) => {
                keys.insert(k.clone());
            }
            Op::Delete(Cf::State, k) if k.starts_with(&start) => {
                keys.remove(k);
            }
            _ => {}
        }
    }
    Ok(keys.len())
}

/// What an apply reads and moves: the state machine's in-memory state.
#[derive(Clone)]
struct ApplyState {
    applied: Option<LogId>,
    membership: StoredMembership,
    prepared_count: usize,
    /// Keys stored, when known at `applied`.
    key_count: Option<i64>,
}

/// A batch of entries applied, not yet written.
struct Applied {
    replies: Vec<OpReply>,
    /// Keys the batch left holding a list or a sorted set (blocked clients
    /// may pop them).
    filled: Vec<Bytes>,
    /// Data, transaction state, the applied index and the key count: one
    /// `WriteBatch`.
    ops: Vec<Op>,
    after: ApplyState,
    /// Keyspace events, when notifications are wanted (published by the
    /// leader once the batch is written).
    events: Vec<super::notify::Event>,
}

/// Apply `entries` over the group's stored state as `view` shows it: the
/// replies and the one batch of changes, written by the caller. Pure but for
/// the reads (so it can be run again from scratch when a cached-only view
/// missed). `notify`: the keyspace event flags to collect (0: none).
fn compute_apply(
    view: &DbView,
    gid: u64,
    entries: &[Entry],
    before: ApplyState,
    notify: u32,
) -> Result<Applied, StorageError> {
    let ApplyState {
        mut applied,
        mut membership,
        mut prepared_count,
        key_count,
    } = before;
    let mut batch = Batch::new(view, gid, prepared_count > 0);
    let mut replies = Vec::with_capacity(entries.len());
    // Whether a 2PC step (PREPARE, COMMIT, ABORT) was applied: only those
    // make or remove locks and prepared transactions.
    let mut two_phase = false;
    let mut events = Vec::new();
    for entry in entries {
        applied = Some(entry.log_id);
        let index = entry.log_id.index;
        match &entry.payload {
            EntryPayload::Blank => replies.push(OpReply::Ok),
            EntryPayload::Membership(m) => {
                membership = StoredMembership::new(Some(entry.log_id), m.clone());
                replies.push(OpReply::Ok);
            }
            EntryPayload::Normal(LogCmd::Write(cmd)) => {
                let locks = prepared_count > 0 || two_phase;
                replies.push(apply_plain_write(
                    cmd,
                    index,
                    locks,
                    &mut batch,
                    notify,
                    &mut events,
                ));
            }
            EntryPayload::Normal(LogCmd::Batch(cmds)) => {
                let locks = prepared_count > 0 || two_phase;
                let each = cmds
                    .iter()
                    .map(|cmd| {
                        apply_plain_write(cmd, index, locks, &mut batch, notify, &mut events)
                    })
                    .collect();
                replies.push(OpReply::Array(each));
            }
            EntryPayload::Normal(LogCmd::Txn(t)) => {
                two_phase |= !matches!(t.cmd, TxnCmd::OnePhase { .. });
                replies.push(apply_txn_step(t, index, &mut batch, notify, &mut events));
            }
            EntryPayload::Normal(LogCmd::Mixed(parts)) => {
                let mut each = Vec::with_capacity(parts.len());
                for part in parts {
                    each.push(match part {
                        Proposal::Write(cmd) => {
                            let locks = prepared_count > 0 || two_phase;
                            apply_plain_write(cmd, index, locks, &mut batch, notify, &mut events)
                        }
                        Proposal::Txn(t) => {
                            two_phase |= !matches!(t.cmd, TxnCmd::OnePhase { .. });
                            apply_txn_step(t, index, &mut batch, notify, &mut events)
                        }
                    });
                }
                replies.push(OpReply::Array(each));
            }
        }
    }
    let key_count = match batch.key_delta(key_count.is_some()) {
        KeyDelta::Unknown => None,
        KeyDelta::By(d) => key_count.map(|n| n + d),
        KeyDelta::Exactly(n) => Some(n),
    };
    let filled = batch
        .data
        .keys
        .iter()
        .filter(|(_, v)| {
            v.as_ref()
                .and_then(|v| v.coll)
                .is_some_and(|c| matches!(c.kind, Kind::List | Kind::ZSet))
        })
        .map(|(k, _)| k.clone())
        .collect();
    let mut ops = batch.into_ops()?;
    ops.push(Op::Put(
        Cf::State,
        state_key(gid, tag::APPLIED),
        encode(Format::Applied, &(applied, membership.clone()))?,
    ));
    if let Some(n) = key_count {
        ops.push(Op::Put(
            Cf::State,
            state_key(gid, tag::KEY_COUNT),
            encode(Format::KeyCount, &(applied_index(&applied), n))?,
        ));
    }
    if two_phase {
        // Recount after this batch lands (the count gates the lock checks:
        // plain writes', and the reads of lock rows).
        prepared_count = count_prepared_after(view, gid, prepared_count, &ops)?;
    }
    Ok(Applied {
        replies,
        filled,
        events,
        ops,
        after: ApplyState {
            applied,
            membership,
            prepared_count,
            key_count,
        },
    })
}

/// Apply one transaction step (alone or in a mixed batch) over `batch`,
/// recording its changes there for the writes after it. Its reply; its
/// keyspace events (those `notify` asks for) are appended to `events`.
fn apply_txn_step(
    t: &TxnEntry,
    index: u64,
    batch: &mut Batch,
    notify: u32,
    events: &mut Vec<super::notify::Event>,
) -> OpReply {
    let (reply, changes) = apply_txn_notified(t, index, batch, notify, events);
    batch.record(changes);
    reply
}

/// Apply one plain write (alone or in a batch) over `batch`: refused while
/// one of its keys is locked by a prepared transaction (checked only when
/// `locks` says some may be), otherwise applied. Its reply; its keyspace
/// events (those `notify` asks for) are appended to `events`.
fn apply_plain_write(
    cmd: &WriteCmd,
    index: u64,
    locks: bool,
    batch: &mut Batch,
    notify: u32,
    events: &mut Vec<super::notify::Event>,
) -> OpReply {
    if locks {
        if let Some(reply) = blocked_by_lock(&cmd.op.keys(), batch) {
            return reply;
        }
    }
    if cmd.op.clears_group() {
        batch.clear();
    }
    super::notify::apply_notified(cmd, index, batch, notify, events)
}

/// The state machine of one group. Cloning shares it.
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<SmInner>>,
    /// Clients blocked on this group's keys, woken as applies fill them.
    waiters: Arc<super::blocking::Waiters>,
    /// Publishes keyspace events (set once by the host; absent in tests
    /// that run a bare state machine).
    publisher: Arc<OnceLock<Arc<super::notify::Publisher>>>,
    /// The group's log bytes appended (set once by the host).
    log_bytes: Arc<OnceLock<LogBytes>>,
    /// Set by [`StateMachine::close`]: nothing is written any more. Held
    /// for reading by an apply while it writes, so closing waits for it.
    closed: Arc<std::sync::RwLock<bool>>,
}

impl StateMachine {
    /// Load the applied state of a group (empty for a new group).
    pub async fn open(engine: Arc<Engine>, gid: u64) -> Result<StateMachine, StorageError> {
        let key = state_key(gid, tag::APPLIED);
        let raw = engine
            .read(move |db| db.get(Cf::State, &key))
            .await
            .map_err(read_err)?;
        let (applied, membership) = match raw {
            Some(raw) => decode::<(Option<LogId>, StoredMembership)>(Format::Applied, &raw)?,
            None => (None, StoredMembership::default()),
        };
        let prepared_count = engine
            .read(move |db| load_prepared(db, gid))
            .await
            .map_err(read_err)?
            .len();
        let key = state_key(gid, tag::KEY_COUNT);
        let recorded = engine
            .read(move |db| db.get(Cf::State, &key))
            .await
            .map_err(read_err)?;
        let key_count = match (applied, recorded.as_deref().and_then(decode_key_count)) {
            // A group that never applied anything holds nothing.
            (None, _) => Some((0, 0)),
            (Some(a), Some((index, n))) if index == a.index => Some((index, n)),
            _ => None,
        };
        Ok(StateMachine {
            inner: Arc::new(Mutex::new(SmInner {
                engine,
                gid,
                applied,
                membership,
                prepared_count,
                key_count,
                last_snapshot: None,
            })),
            closed: Arc::new(std::sync::RwLock::new(false)),
            waiters: Arc::default(),
            publisher: Arc::default(),
            log_bytes: Arc::default(),
        })
    }

    /// Follow the bytes the group's log store appends (once), so that
    /// snapshots openraft asks for are built only when worth it
    /// ([`super::snapshot::worth_building`]). A state machine that follows
    /// no log builds every one.
    pub fn follow_log(&self, bytes: LogBytes) {
        let _ = self.log_bytes.set(bytes);
    }

    fn logged(&self) -> Option<u64> {
        self.log_bytes.get().map(LogBytes::get)
    }

    /// Whether a snapshot openraft's policy asks for is built now: the
    /// size of the last one and the log bytes appended since, if known.
    async fn snapshot_due(&self) -> bool {
        let last = self.inner.lock().await.last_snapshot;
        let since = match (last, self.logged()) {
            (Some(m), Some(now)) => Some((m.bytes, now.saturating_sub(m.log_mark))),
            _ => None,
        };
        super::snapshot::worth_building(since)
    }

    /// Give the state machine its keyspace event publisher (once).
    pub fn set_publisher(&self, p: Arc<super::notify::Publisher>) {
        let _ = self.publisher.set(p);
    }

    /// Clients blocked on this group's keys.
    pub fn waiters(&self) -> &super::blocking::Waiters {
        &self.waiters
    }

    /// Stop writing: every later apply, snapshot install or snapshot build
    /// fails without touching the database, and an apply that is writing
    /// is waited for. Called before a removed replica's data is deleted.
    ///
    /// openraft's `Raft::shutdown` joins only its core task; the
    /// state-machine worker keeps applying the entries already queued to
    /// it. Without this fence a late apply wrote the group's applied index
    /// back after the deletion, and a replica later re-created on the node
    /// believed it already held entries it never got (data loss, found by
    /// the chaos harness: docs/RELIABILITY.md, bug 6).
    pub async fn close(&self) {
        let _inner = self.inner.lock().await;
        let closed = self.closed.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Ok(mut c) = closed.write() {
                *c = true;
            }
        })
        .await;
    }

    fn check_open(&self) -> Result<(), StorageError> {
        match self.closed.read() {
            Ok(c) if !*c => Ok(()),
            _ => Err(write_err(closed_err())),
        }
    }

    /// Write an applied batch: data and `last_applied` in one `WriteBatch`.
    /// Not synced: the log is, and re-applying committed entries after a
    /// crash gives the same result. Not once the replica is closed
    /// (removed): the fence is held while writing, so closing waits.
    /// `blocking`: this thread may wait out a RocksDB write stall;
    /// otherwise a write that would stall is not made (`Ok(false)`).
    fn write_applied(
        &self,
        engine: &Engine,
        ops: &[Op],
        blocking: bool,
    ) -> Result<bool, StorageError> {
        write_fenced(engine, std::slice::from_ref(&self.closed), ops, blocking)
    }

    /// Remove element rows of dead generations (a collection deleted,
    /// overwritten, expired and purged, or flushed): look at up to `budget`
    /// (key, generation) runs of the `sub` rows after `cursor`, and delete
    /// each run whose key record does not name that generation. Holds the
    /// state-machine lock, so no apply, snapshot build or install runs
    /// between the check and the delete (an install could otherwise bring
    /// back a record naming the generation). Local to this replica: dead
    /// rows are invisible to every reader, so replicas need not agree on
    /// when they go. Returns the cursor to resume from (`None`: the pass
    /// reached the end of the group) and the number of runs deleted.
    pub async fn collect_garbage(
        &self,
        cursor: Option<Vec<u8>>,
        budget: usize,
    ) -> Result<(Option<Vec<u8>>, usize), StorageError> {
        let inner = self.inner.lock().await;
        self.check_open()?;
        let gid = inner.gid;
        let engine = inner.engine.clone();
        let (cursor, dead) = engine
            .read(move |db| {
                let (start, end) = group_range(gid);
                let mut from = cursor.unwrap_or(start);
                let mut dead = Vec::new();
                for _ in 0..budget {
                    let Some((row, _)) = db.iter(Cf::Sub, &from, &end)?.next().transpose()? else {
                        return Ok((None, dead));
                    };
                    let Some((key, gen, _)) = engine::split_sub_key(&row) else {
                        // Not a row this build writes: skip it, leave it.
                        from = [&row[..], &[0]].concat();
                        continue;
                    };
                    let prefix = sub_prefix(gid, key, gen);
                    let next = prefix_end(&prefix).unwrap_or_else(|| end.clone());
                    let live = match db.get(Cf::Data, &data_key(gid, key))? {
                        Some(raw) => match Stored::decode(&raw) {
                            Ok(v) => v.coll.is_some_and(|c| c.gen == gen),
                            // An unreadable record may name it: keep.
                            Err(_) => true,
                        },
                        None => false,
                    };
                    if !live {
                        dead.push(Op::DeleteRange(Cf::Sub, prefix, next.clone()));
                    }
                    from = next;
                }
                Ok((Some(from), dead))
            })
            .await
            .map_err(read_err)?;
        let n = dead.len();
        // From this async task unless RocksDB would stall the write; then
        // on a blocking thread (as an apply does).
        if n > 0 && !self.write_applied(&engine, &dead, false)? {
            let sm = self.clone();
            tokio::task::spawn_blocking(move || sm.write_applied(&engine, &dead, true))
                .await
                .map_err(write_err)??;
        }
        drop(inner);
        Ok((cursor, n))
    }

    /// Whether the group holds prepared transactions (from memory: no I/O).
    pub async fn has_prepared(&self) -> bool {
        self.inner.lock().await.prepared_count > 0
    }

    /// Keys the group stores (expired ones not yet purged included), from
    /// the count kept as entries apply. When it is unknown (after a
    /// snapshot install, or on data written by an older version) the
    /// group's keys are counted once, holding off applies meanwhile.
    pub async fn key_count(&self) -> Result<i64, StorageError> {
        let mut inner = self.inner.lock().await;
        let at = applied_index(&inner.applied);
        if let Some((index, n)) = inner.key_count {
            if index == at {
                return Ok(n);
            }
        }
        let gid = inner.gid;
        let n = inner
            .engine
            .read(move |db| {
                let (start, end) = group_range(gid);
                let mut n = 0i64;
                for row in db.iter(Cf::Data, &start, &end)? {
                    row?;
                    n += 1;
                }
                Ok(n)
            })
            .await
            .map_err(read_err)?;
        inner.key_count = Some((at, n));
        Ok(n)
    }
}

/// The key count row; one that does not decode is an unknown count (the
/// keys are counted again), never a wrong one.
fn decode_key_count(raw: &[u8]) -> Option<(u64, i64)> {
    codec::decode(Format::KeyCount, raw)
        .map_err(|e| tracing::warn!("key count row unreadable ({e}): counting the keys again"))
        .ok()
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotBytes;
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let inner = self.inner.lock().await;
        Ok((inner.applied, inner.membership.clone()))
    }

    /// Takes the whole batch openraft hands over, applies it as one
    /// `WriteBatch` ([`StateMachine::apply_batch`]), then answers each
    /// waiting client in log order.
    async fn apply<Strm>(&mut self, entries: Strm) -> Result<(), StorageError>
    where
        Strm:
            Stream<Item = Result<EntryResponder<TypeConfig>, StorageError>> + Unpin + OptionalSend,
    {
        let items: Vec<EntryResponder<TypeConfig>> = entries
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let (entries, responders): (Vec<Entry>, Vec<_>) = items.into_iter().unzip();
        let replies = self.apply_batch(entries).await?;
        for (reply, responder) in replies.into_iter().zip(responders) {
            if let Some(responder) = responder {
                responder.send(reply);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    /// openraft asks for a snapshot every `snapshot_threshold` entries
    /// (`force` false; it asks again as many entries later when refused).
    /// A large group's is built only once the log since its last one is as
    /// large as that one ([`super::snapshot::worth_building`]), so copying
    /// the group costs at most a byte per byte logged, whatever its size.
    async fn try_create_snapshot_builder(&mut self, force: bool) -> Option<Self::SnapshotBuilder> {
        if force || self.snapshot_due().await {
            return Some(self.clone());
        }
        crate::metrics::SNAPSHOTS
            .with_label_values(&["deferred"])
            .inc();
        None
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotBytes,
    ) -> Result<(), StorageError> {
        self.install(meta, snapshot).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        self.current_snapshot().await
    }
}

impl SnapshotReceiverFactory<TypeConfig> for StateMachine {
    type SnapshotReceiver = SnapshotBytes;

    async fn begin_receiving_snapshot(&mut self) -> Result<SnapshotBytes, StorageError> {
        Ok(Cursor::new(Vec::new()))
    }
}

impl StateMachine {
    /// Apply committed `entries` (one reply per entry, in order): their
    /// data changes and the new applied index go into one `WriteBatch`.
    pub async fn apply_batch(&self, entries: Vec<Entry>) -> Result<Vec<OpReply>, StorageError> {
        let mut replies = StateMachine::apply_many(vec![(self, entries)]).await?;
        replies.pop().unwrap_or_else(|| Ok(Vec::new()))
    }

    /// Apply the committed entries of several groups of one node (state
    /// machines over the same engine): each group's replies, in order. The
    /// data changes and new applied indexes of all of them go into **one**
    /// `WriteBatch`, so a crash keeps or loses each group's batch whole, as
    /// with one group. Each group's batch is computed right here from what
    /// RocksDB holds in memory (the keys just written, hot ones), or on a
    /// blocking thread when a value is only on disk; either way the same
    /// pure function of the same values. The groups' locks are held from
    /// the compute to the end of the write, taken in the order given.
    ///
    /// A group whose batch cannot be computed (a closed state machine, a
    /// row that does not decode) fails alone: its slot holds the error,
    /// nothing of it is written, and the others are applied. The outer
    /// error is the shared write's, which fails every group.
    pub async fn apply_many(
        batches: Vec<(&StateMachine, Vec<Entry>)>,
    ) -> Result<Vec<Result<Vec<OpReply>, StorageError>>, StorageError> {
        let mut replies: Vec<Result<Vec<OpReply>, StorageError>> =
            (0..batches.len()).map(|_| Ok(Vec::new())).collect();
        let failpoint = crate::failpoint::armed("apply-fails-on-key");
        let mut work = Vec::with_capacity(batches.len());
        for (slot, (sm, entries)) in batches.into_iter().enumerate() {
            if entries.is_empty() {
                continue;
            }
            if failpoint && writes_failpoint_key(&entries) {
                replies[slot] = Err(write_err(std::io::Error::other(
                    "failpoint apply-fails-on-key: a write of failpoint:apply-fails",
                )));
                continue;
            }
            let inner = sm.inner.lock().await;
            if let Err(e) = sm.check_open() {
                replies[slot] = Err(e);
                continue;
            }
            work.push((slot, sm, inner, entries));
        }
        let Some(engine) = work.first().map(|w| w.2.engine.clone()) else {
            return Ok(replies);
        };
        let _timer = crate::metrics::APPLY_SECONDS.start_timer();
        let mut done = Vec::with_capacity(work.len());
        for (slot, sm, inner, entries) in work.iter_mut() {
            let before = ApplyState {
                applied: inner.applied,
                membership: inner.membership.clone(),
                prepared_count: inner.prepared_count,
                key_count: inner
                    .key_count
                    .filter(|(index, _)| *index == applied_index(&inner.applied))
                    .map(|(_, n)| n),
            };
            let gid = inner.gid;
            let notify = sm.publisher.get().map_or(0, |p| p.wanted());
            let inline = engine
                .read_cached(|view| compute_apply(view, gid, entries, before.clone(), notify));
            let applied = match inline {
                Some(applied) => applied,
                None => {
                    let (engine, entries) = (engine.clone(), std::mem::take(entries));
                    tokio::task::spawn_blocking(move || {
                        compute_apply(&engine.view(), gid, &entries, before, notify)
                    })
                    .await
                    .map_err(write_err)?
                }
            };
            match applied {
                Ok(applied) => done.push(Some(applied)),
                Err(e) => {
                    tracing::error!(group = gid, "applying committed entries: {e}");
                    replies[*slot] = Err(e);
                    done.push(None);
                }
            }
        }
        // Only the groups computed go on (their locks are held to the end).
        let (mut work, mut done): (Vec<_>, Vec<_>) = work
            .into_iter()
            .zip(done)
            .filter_map(|(w, d)| d.map(|d| (w, d)))
            .unzip();
        if work.is_empty() {
            return Ok(replies);
        }
        // One write for all. An unsynced write (the WAL sync of the log
        // runs outside RocksDB's write queue): it does not wait for an
        // fsync. One RocksDB would stall is made on a blocking thread.
        let ops: Vec<Op> = if done.len() == 1 {
            std::mem::take(&mut done[0].ops)
        } else {
            done.iter_mut()
                .flat_map(|d| std::mem::take(&mut d.ops))
                .collect()
        };
        let fences: Vec<_> = work.iter().map(|w| w.1.closed.clone()).collect();
        if !write_fenced(&engine, &fences, &ops, false)? {
            let engine = engine.clone();
            tokio::task::spawn_blocking(move || write_fenced(&engine, &fences, &ops, true))
                .await
                .map_err(write_err)??;
        }
        for ((slot, sm, inner, _), applied) in work.iter_mut().zip(done) {
            inner.applied = applied.after.applied;
            inner.membership = applied.after.membership;
            inner.prepared_count = applied.after.prepared_count;
            inner.key_count = applied
                .after
                .key_count
                .map(|n| (applied_index(&inner.applied), n));
            if !applied.filled.is_empty() {
                sm.waiters.filled(&applied.filled);
            }
            if !applied.events.is_empty() {
                if let Some(p) = sm.publisher.get() {
                    p.publish(&applied.events);
                }
            }
            replies[*slot] = Ok(applied.replies);
        }
        Ok(replies)
    }

    /// Replace the group's data with a received snapshot's.
    async fn install(
        &self,
        meta: &SnapshotMeta,
        snapshot: SnapshotBytes,
    ) -> Result<(), StorageError> {
        self.install_with(meta, snapshot.into_inner(), Vec::new())
            .await
    }

    /// Replace the group's data with a snapshot's (`bytes`, sealed), and
    /// write `extra` in the same synced write (the batch engine's log
    /// rows, which must move with the data: `batch::apply`).
    pub async fn install_with(
        &self,
        meta: &SnapshotMeta,
        bytes: Vec<u8>,
        extra: Vec<Op>,
    ) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().await;
        self.check_open()?;
        let gid = inner.gid;
        // The receiving service checked the envelope already; a snapshot
        // that fails here was damaged on this node: refuse it.
        let payload = super::snapshot::open(&bytes).map_err(|e| {
            tracing::error!(group = gid, "snapshot refused at install: {e}");
            read_err(e)
        })?;
        let data = SnapshotData::decode(payload).map_err(read_err)?;
        let (start, end) = group_range(gid);
        let (txn_start, txn_end) = txn_state_range(gid);
        let mut ops = vec![
            Op::DeleteRange(Cf::Data, start.clone(), end.clone()),
            Op::DeleteRange(Cf::Sub, start, end),
            Op::DeleteRange(Cf::State, txn_start, txn_end),
        ];
        for (k, v) in data.pairs {
            ops.push(Op::Put(Cf::Data, data_key(gid, &k), v));
        }
        for (k, v) in data.sub {
            ops.push(Op::Put(Cf::Sub, data_key(gid, &k), v));
        }
        let prepared_count = data
            .txn_state
            .iter()
            .filter(|(k, _)| k.first() == Some(&tag::PREPARED))
            .count();
        for (k, v) in data.txn_state {
            let mut key = gid.to_be_bytes().to_vec();
            key.extend_from_slice(&k);
            ops.push(Op::Put(Cf::State, key, v));
        }
        ops.push(Op::Put(
            Cf::State,
            state_key(gid, tag::APPLIED),
            encode(
                Format::Applied,
                &(meta.last_log_id, meta.last_membership.clone()),
            )?,
        ));
        ops.push(Op::Put(
            Cf::State,
            state_key(gid, tag::SNAPSHOT_META),
            encode(Format::SnapshotMeta, meta)?,
        ));
        let size = bytes.len() as u64;
        ops.push(Op::Put(
            Cf::State,
            state_key(gid, tag::SNAPSHOT_DATA),
            bytes,
        ));
        ops.extend(extra);
        inner.engine.write(ops, true).await.map_err(write_err)?;
        inner.last_snapshot = self.logged().map(|log_mark| SnapshotMark {
            bytes: size,
            log_mark,
        });
        inner.applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.prepared_count = prepared_count;
        // The data was replaced: count the keys again when next asked.
        inner.key_count = None;
        crate::metrics::SNAPSHOTS
            .with_label_values(&["installed"])
            .inc();
        tracing::info!(
            group = gid,
            index = meta.last_log_id.map_or(0, |l| l.index),
            "snapshot installed"
        );
        Ok(())
    }

    /// Start copying the group's data as it is now, for a snapshot: the
    /// copy reads a RocksDB snapshot taken before this returns (under the
    /// state-machine lock, so at an applied index exactly, no entry half
    /// in it), and the returned future makes the sealed bytes from it.
    pub async fn start_copy(
        &self,
    ) -> Result<impl std::future::Future<Output = Result<Vec<u8>, engine::EngineError>>, StorageError>
    {
        let inner = self.inner.lock().await;
        self.check_open()?;
        let gid = inner.gid;
        let (taken, copy) = inner
            .engine
            .read_snapshot(move |view| copy_group(view, gid));
        // An error here means the copy ended before taking its snapshot;
        // `copy` then reports why.
        let _ = taken.await;
        Ok(copy)
    }

    /// The stored snapshot, if there is one; one found damaged (or half
    /// there) is built anew and that one returned. Its two rows are always
    /// written together, so they are read together from one RocksDB
    /// snapshot, without the state-machine lock: reading (and checking) a
    /// large snapshot for a follower does not hold the group's applies.
    async fn current_snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        let (gid, engine) = {
            let inner = self.inner.lock().await;
            (inner.gid, inner.engine.clone())
        };
        let keys = [tag::SNAPSHOT_META, tag::SNAPSHOT_DATA].map(|t| (Cf::State, state_key(gid, t)));
        let mut rows = engine
            .read(move |db| db.get_many(&keys))
            .await
            .map_err(read_err)?
            .into_iter();
        let why = match (rows.next().flatten(), rows.next().flatten()) {
            (None, None) => return Ok(None),
            (Some(meta), Some(data)) => match super::snapshot::open(&data) {
                Ok(_) => {
                    return Ok(Some(Snapshot {
                        meta: decode(Format::SnapshotMeta, &meta)?,
                        snapshot: Cursor::new(data),
                    }))
                }
                Err(e) => e.to_string(),
            },
            (Some(_), None) => "its data row is missing".to_string(),
            (None, Some(_)) => "its meta row is missing".to_string(),
        };
        // Never send a damaged snapshot, and never answer "none" here:
        // openraft asks when a follower needs one, and takes "none" for a
        // storage error that stops the group's Raft on this node. A fresh
        // one is built from the data, stored in its place, and sent.
        tracing::error!(
            group = gid,
            "stored snapshot is unusable ({why}): building a new one"
        );
        self.inner.lock().await.last_snapshot = None;
        self.clone().build_snapshot().await.map(Some)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotBytes;

    /// Copies the group's data from a RocksDB snapshot taken while the
    /// state-machine lock is held, so the copy is the state at `applied`
    /// exactly, no entry half in it. The lock is let go as soon as that
    /// snapshot is taken: entries go on being applied while the copy is
    /// made, which takes time in proportion to the group's data (holding
    /// the lock throughout held every write to the group for as long:
    /// docs/PERFORMANCE.md, "Snapshots built beside the writes").
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let inner = self.inner.lock().await;
        self.check_open()?;
        let gid = inner.gid;
        let meta = SnapshotMeta {
            last_log_id: inner.applied,
            last_membership: inner.membership.clone(),
        };
        let engine = inner.engine.clone();
        let log_mark = self.logged();
        let (taken, copy) = engine.read_snapshot(move |view| copy_group(view, gid));
        // An error here means the copy ended before taking its snapshot;
        // `copy` then reports why.
        let _ = taken.await;
        drop(inner);
        let bytes = copy.await.map_err(read_err)?;
        // Stored as the group's current snapshot, unless the replica was
        // removed meanwhile or a newer one was installed while this one was
        // copied (openraft, told of an older snapshot, ignores it). One at
        // the same index holds the same state: replaced, which repairs a
        // stored one found damaged. A stored one whose meta does not decode
        // is reported, not overwritten.
        let mut inner = self.inner.lock().await;
        self.check_open()?;
        let stored = inner
            .engine
            .read(move |db| db.get(Cf::State, &state_key(gid, tag::SNAPSHOT_META)))
            .await
            .map_err(read_err)?
            .map(|raw| decode::<SnapshotMeta>(Format::SnapshotMeta, &raw))
            .transpose()?;
        if stored.is_none_or(|s| s.last_log_id <= meta.last_log_id) {
            let ops = vec![
                Op::Put(
                    Cf::State,
                    state_key(gid, tag::SNAPSHOT_META),
                    encode(Format::SnapshotMeta, &meta)?,
                ),
                Op::Put(
                    Cf::State,
                    state_key(gid, tag::SNAPSHOT_DATA),
                    stored_copy(&bytes),
                ),
            ];
            inner.engine.write(ops, false).await.map_err(write_err)?;
            inner.last_snapshot = log_mark.map(|log_mark| SnapshotMark {
                bytes: bytes.len() as u64,
                log_mark,
            });
            crate::metrics::SNAPSHOTS
                .with_label_values(&["built"])
                .inc();
        }
        Ok(Snapshot {
            meta,
            snapshot: Cursor::new(bytes),
        })
    }
}

/// Test only (failpoint `apply-fails-on-key`): whether a plain write of
/// `entries` writes the key `failpoint:apply-fails`, whose apply then
/// fails as a storage error would.
fn writes_failpoint_key(entries: &[Entry]) -> bool {
    let hit = |cmd: &super::command::WriteCmd| {
        cmd.op
            .keys()
            .iter()
            .any(|k| k.as_ref() == b"failpoint:apply-fails")
    };
    entries.iter().any(|e| match &e.payload {
        EntryPayload::Normal(LogCmd::Write(cmd)) => hit(cmd),
        EntryPayload::Normal(LogCmd::Batch(cmds)) => cmds.iter().any(hit),
        _ => false,
    })
}

/// The snapshot as stored: `bytes`, or (test only, failpoint
/// `snapshot-stored-damaged`) with its last byte flipped, as a disk that
/// damaged the stored value would leave it.
fn stored_copy(bytes: &[u8]) -> Vec<u8> {
    let mut stored = bytes.to_vec();
    if crate::failpoint::armed("snapshot-stored-damaged") {
        if let Some(last) = stored.last_mut() {
            *last ^= 1;
        }
    }
    stored
}

/// The sealed snapshot payload of group `gid` as `view` shows it: its
/// `data` and `sub` rows and its transaction state, keys without the group
/// prefix.
fn copy_group(view: &SnapshotView<'_>, gid: u64) -> Result<Vec<u8>, engine::EngineError> {
    let strip = |rows: Vec<engine::Row>| -> Vec<(Vec<u8>, Vec<u8>)> {
        rows.into_iter()
            .map(|(k, v)| (k[8..].to_vec(), v.into_vec()))
            .collect()
    };
    let (start, end) = group_range(gid);
    let pairs = strip(view.scan(Cf::Data, &start, &end)?);
    let (txn_start, txn_end) = txn_state_range(gid);
    let txn_state = strip(view.scan(Cf::State, &txn_start, &txn_end)?);
    let sub = strip(view.scan(Cf::Sub, &start, &end)?);
    #[cfg(test)]
    tests::copy_gate(gid);
    codec::encode(
        Format::SnapshotData,
        &SnapshotData {
            pairs,
            txn_state,
            sub,
        },
    )
    .map(|payload| super::snapshot::seal(&payload))
    .map_err(|e| engine::EngineError::Corrupt(e.to_string()))
}

/// Write applied batches of the state machines whose fences are given:
/// not once one of them is closed (removed), and each fence is held while
/// writing, so closing waits. `blocking`: a write RocksDB would stall is
/// made anyway; otherwise it is not made and `Ok(false)` says so.
fn write_fenced(
    engine: &Engine,
    fences: &[Arc<std::sync::RwLock<bool>>],
    ops: &[Op],
    blocking: bool,
) -> Result<bool, StorageError> {
    let mut held = Vec::with_capacity(fences.len());
    for f in fences {
        let guard = f.read().map_err(|_| write_err(closed_err()))?;
        if *guard {
            return Err(write_err(closed_err()));
        }
        held.push(guard);
    }
    if blocking {
        engine.write_direct(ops).map_err(write_err)?;
        return Ok(true);
    }
    engine.write_direct_unless_stalled(ops).map_err(write_err)
}

fn closed_err() -> std::io::Error {
    std::io::Error::other("the replica was removed: its state machine is closed")
}

/// Remove every trace of a group: log, state, snapshot and data.
pub async fn destroy_group(engine: &Engine, gid: u64) -> Result<(), engine::EngineError> {
    let (start, end) = group_range(gid);
    let ops = vec![
        Op::DeleteRange(Cf::Log, start.clone(), end.clone()),
        Op::DeleteRange(Cf::State, start.clone(), end.clone()),
        Op::DeleteRange(Cf::Data, start.clone(), end.clone()),
        Op::DeleteRange(Cf::Sub, start, end),
    ];
    engine.write(ops, true).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::errors::ErrorSource;
    use openraft::testing::log::{StoreBuilder, Suite};

    struct Builder;

    /// The suite's own error type, from ours.
    fn suite_err(e: std::io::Error) -> openraft::StorageError<TypeConfig> {
        openraft::StorageError::write(openraft::impls::BoxedErrorSource::from_error(&e))
    }

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachine), openraft::StorageError<TypeConfig>>
        {
            let dir = tempfile::tempdir().map_err(suite_err)?;
            let engine =
                Arc::new(Engine::open(dir.path(), true).map_err(|e| suite_err(write_err(e)))?);
            // A non-zero group id, with a neighbour group's keys around it, so
            // range bounds are exercised.
            let log = LogStore::new(engine.clone(), 7);
            let sm = StateMachine::open(engine, 7).await.map_err(suite_err)?;
            Ok((dir, log, sm))
        }
    }

    fn blank(term: u64, index: u64) -> Entry {
        Entry {
            log_id: crate::shard::types::log_id(term, 1, index),
            payload: EntryPayload::Blank,
        }
    }

    async fn append(log: &LogStore, entries: impl IntoIterator<Item = Entry>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        log.append_then(entries, move |r| {
            let _ = tx.send(r);
        })
        .unwrap();
        rx.await.unwrap().unwrap();
    }

    /// (term, index) of each entry.
    fn ids(entries: &[Entry]) -> Vec<(u64, u64)> {
        entries
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    /// The committed index is kept in memory and written with the group's
    /// next append, never on its own; a restarted store reads that row.
    #[tokio::test]
    async fn the_committed_index_rides_with_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open(dir.path(), false).unwrap());
        let mut log = LogStore::new(engine.clone(), 7);
        append(&log, (1..=3).map(|i| blank(1, i))).await;
        let committed = Some(blank(1, 3).log_id);
        log.save_committed(committed).await.unwrap();
        assert_eq!(log.read_committed().await.unwrap(), committed);
        let row = || {
            let key = state_key(7, tag::COMMITTED);
            engine.view().get(Cf::State, &key).unwrap()
        };
        assert_eq!(row(), None, "written on its own");
        append(&log, (4..=5).map(|i| blank(1, i))).await;
        let raw = row().expect("written with the append");
        assert_eq!(
            decode::<Option<LogId>>(Format::Committed, &raw).unwrap(),
            committed
        );
        let mut restarted = LogStore::new(engine.clone(), 7);
        assert_eq!(restarted.read_committed().await.unwrap(), committed);
    }

    /// Reads that straddle the tail's first index get the stored part from
    /// RocksDB and the rest from the tail, and agree with a store that
    /// reads everything from RocksDB, before and after a truncation.
    #[tokio::test]
    async fn reads_stitch_the_stored_log_and_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open(dir.path(), false).unwrap());
        let mut log = LogStore::new(engine.clone(), 7);
        for start in (1..=600).step_by(10) {
            append(&log, (start..start + 10).map(|i| blank(1, i))).await;
        }
        let first = log.tail().unwrap().first_index().unwrap();
        assert!(first > 1 && first <= 600 - TAIL_MAX_ENTRIES as u64 + 1);
        // An empty tail: everything from RocksDB.
        let mut stored = LogStore::new(engine.clone(), 7);
        let ranges = [(1, 601), (first - 5, first + 5), (first, 601), (590, 700)];
        for (a, b) in ranges {
            let got = log.try_get_log_entries(a..b).await.unwrap();
            let want = stored.try_get_log_entries(a..b).await.unwrap();
            assert_eq!(ids(&got), ids(&want));
            let indices: Vec<u64> = got.iter().map(|e| e.log_id.index).collect();
            assert_eq!(indices, (a..b.min(601)).collect::<Vec<_>>());
        }
        // A new leader's entries replace the end of the log.
        log.truncate_after(Some(blank(1, 594).log_id))
            .await
            .unwrap();
        append(&log, (595..605).map(|i| blank(2, i))).await;
        for (a, b) in ranges {
            let got = log.try_get_log_entries(a..b).await.unwrap();
            assert_eq!(
                ids(&got),
                ids(&stored.try_get_log_entries(a..b).await.unwrap())
            );
        }
        let end = log.try_get_log_entries(590..700).await.unwrap();
        assert_eq!(ids(&end)[4..6], [(1, 594), (2, 595)]);
        assert_eq!(end.len(), 15);
    }

    fn entry(index: u64, cmd: LogCmd) -> Entry {
        Entry {
            log_id: crate::shard::types::log_id(1, 1, index),
            payload: EntryPayload::Normal(cmd),
        }
    }

    fn coll(op: crate::shard::coll::CollWrite) -> WriteCmd {
        WriteCmd {
            now_ms: 1,
            op: crate::shard::command::WriteOp::Coll(op),
        }
    }

    fn hset(key: &str, pairs: &[(&str, &str)]) -> WriteCmd {
        coll(crate::shard::coll::CollWrite::HSet {
            key: Bytes::copy_from_slice(key.as_bytes()),
            pairs: pairs
                .iter()
                .map(|(f, v)| {
                    (
                        Bytes::copy_from_slice(f.as_bytes()),
                        Bytes::copy_from_slice(v.as_bytes()),
                    )
                })
                .collect(),
            reply: crate::shard::coll::HSetReply::Added,
        })
    }

    /// Several groups applied together: one reply list per group in the
    /// order given, each group's rows and applied index its own, all of it
    /// read back by state machines opened again.
    #[tokio::test]
    async fn groups_applied_together_keep_their_own_rows_and_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open(dir.path(), true).unwrap());
        let a = StateMachine::open(engine.clone(), 21).await.unwrap();
        let b = StateMachine::open(engine.clone(), 22).await.unwrap();
        let c = StateMachine::open(engine.clone(), 23).await.unwrap();
        let replies = StateMachine::apply_many(vec![
            (&a, vec![entry(1, LogCmd::Write(hset("h", &[("f", "a")])))]),
            (&c, vec![]),
            (
                &b,
                vec![
                    entry(1, LogCmd::Write(hset("h", &[("f", "b"), ("g", "b")]))),
                    entry(2, LogCmd::Write(del("h"))),
                ],
            ),
        ])
        .await
        .unwrap();
        let replies: Vec<Vec<OpReply>> = replies.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(
            replies,
            vec![
                vec![OpReply::Int(1)],
                vec![],
                vec![OpReply::Int(2), OpReply::Int(1)]
            ]
        );
        for (gid, index, keys) in [(21, Some(1), 1), (22, Some(2), 0), (23, None, 0)] {
            let mut sm = StateMachine::open(engine.clone(), gid).await.unwrap();
            let (applied, _) = sm.applied_state().await.unwrap();
            assert_eq!(applied.map(|l| l.index), index, "group {gid}");
            // The key count was written with the data, not counted anew.
            let recorded = sm.inner.lock().await.key_count;
            assert_eq!(recorded, Some((index.unwrap_or(0), keys)), "group {gid}");
        }
    }

    /// A group that cannot be applied (here: closed) fails alone: the
    /// others of the same call are applied and written, it is not.
    #[tokio::test]
    async fn a_group_that_fails_to_apply_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open(dir.path(), true).unwrap());
        let a = StateMachine::open(engine.clone(), 31).await.unwrap();
        let b = StateMachine::open(engine.clone(), 32).await.unwrap();
        let c = StateMachine::open(engine.clone(), 33).await.unwrap();
        b.close().await;
        let replies = StateMachine::apply_many(vec![
            (&a, vec![entry(1, LogCmd::Write(hset("h", &[("f", "a")])))]),
            (&b, vec![entry(1, LogCmd::Write(hset("h", &[("f", "b")])))]),
            (&c, vec![entry(1, LogCmd::Write(hset("h", &[("f", "c")])))]),
        ])
        .await
        .unwrap();
        assert_eq!(replies[0].as_ref().unwrap(), &vec![OpReply::Int(1)]);
        assert!(replies[1].is_err(), "{:?}", replies[1]);
        assert_eq!(replies[2].as_ref().unwrap(), &vec![OpReply::Int(1)]);
        for (gid, index) in [(31, Some(1)), (32, None), (33, Some(1))] {
            let mut sm = StateMachine::open(engine.clone(), gid).await.unwrap();
            let (applied, _) = sm.applied_state().await.unwrap();
            assert_eq!(applied.map(|l| l.index), index, "group {gid}");
        }
    }

    fn del(key: &str) -> WriteCmd {
        WriteCmd {
            now_ms: 1,
            op: crate::shard::command::WriteOp::Del {
                keys: vec![Bytes::copy_from_slice(key.as_bytes())],
            },
        }
    }

    /// HGETALL of `key` in group `gid`, as (field, value) strings.
    fn hgetall(engine: &Engine, gid: u64, key: &str) -> Vec<(String, String)> {
        let view = engine.view();
        let mut read = DbRead {
            db: &view,
            gid,
            error: None,
        };
        let op = crate::shard::command::ReadOp::Coll(crate::shard::coll::CollRead::HGetAll {
            key: Bytes::copy_from_slice(key.as_bytes()),
            part: crate::shard::coll::HashPart::All,
        });
        match crate::shard::apply::apply_read(&op, 1, usize::MAX, &mut read).unwrap() {
            OpReply::Map(pairs) => pairs
                .into_iter()
                .map(|(f, v)| match (f, v) {
                    (OpReply::Bulk(f), OpReply::Bulk(v)) => (
                        String::from_utf8_lossy(&f).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    ),
                    other => panic!("{other:?}"),
                })
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    fn sub_rows_of(engine: &Engine, gid: u64) -> usize {
        let (start, end) = group_range(gid);
        engine
            .view()
            .scan(Cf::Sub, &start, &end, usize::MAX)
            .unwrap()
            .len()
    }

    /// Writes of one entry share its index, so a collection deleted and
    /// re-created inside one proposer batch gets the same generation: the
    /// elements of the first must not show through in the second.
    #[tokio::test]
    async fn a_collection_recreated_in_one_batch_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open(dir.path(), false).unwrap());
        let sm = StateMachine::open(engine.clone(), 7).await.unwrap();
        let batch = LogCmd::Batch(vec![
            hset("h", &[("a", "1"), ("b", "2")]),
            del("h"),
            hset("h", &[("c", "3")]),
        ]);
        let replies = sm.apply_batch(vec![entry(1, batch)]).await.unwrap();
        assert_eq!(
            replies,
            [OpReply::Array(vec![
                OpReply::Int(2),
                OpReply::Int(1),
                OpReply::Int(1)
            ])]
        );
        assert_eq!(
            hgetall(&engine, 7, "h"),
            [("c".to_string(), "3".to_string())]
        );
        assert_eq!(sub_rows_of(&engine, 7), 1);
    }

    /// A collection written twice by one entry under the same generation
    /// (a proposer batch: HSET then RENAME or SUNIONSTORE onto it) holds
    /// only the second write's elements.
    #[tokio::test]
    async fn a_destination_replaced_in_one_batch_holds_only_its_new_elements() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open(dir.path(), false).unwrap());
        let sm = StateMachine::open(engine.clone(), 7).await.unwrap();
        let rename = WriteCmd {
            now_ms: 1,
            op: crate::shard::command::WriteOp::Move {
                src: Bytes::from_static(b"s"),
                dst: Bytes::from_static(b"d"),
                mode: crate::shard::command::MoveMode::Rename,
            },
        };
        let batch = LogCmd::Batch(vec![
            hset("d", &[("old", "1")]),
            hset("s", &[("new", "2")]),
            rename,
        ]);
        sm.apply_batch(vec![entry(1, batch)]).await.unwrap();
        assert_eq!(
            hgetall(&engine, 7, "d"),
            [("new".to_string(), "2".to_string())]
        );
        assert!(hgetall(&engine, 7, "s").is_empty());
    }

    /// DEL leaves the elements behind, invisible; the collector removes
    /// them and nothing else; a snapshot carries the live elements to a
    /// replica that never saw the writes.
    #[tokio::test]
    async fn dead_elements_are_collected_and_snapshots_carry_live_ones() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open(dir.path(), false).unwrap());
        let mut sm = StateMachine::open(engine.clone(), 7).await.unwrap();
        let big: Vec<(String, String)> = (0..300).map(|i| (format!("f{i}"), "v".into())).collect();
        let pairs: Vec<(&str, &str)> = big.iter().map(|(f, v)| (f.as_str(), v.as_str())).collect();
        // Separate applies: rows written, then their record deleted (in one
        // apply the batch would drop them before writing anything).
        sm.apply_batch(vec![
            entry(1, LogCmd::Write(hset("gone", &pairs))),
            entry(2, LogCmd::Write(hset("kept", &[("x", "1")]))),
        ])
        .await
        .unwrap();
        sm.apply_batch(vec![entry(3, LogCmd::Write(del("gone")))])
            .await
            .unwrap();
        assert_eq!(sub_rows_of(&engine, 7), 301);
        assert!(hgetall(&engine, 7, "gone").is_empty());
        // Re-created: a new generation, its old elements still invisible.
        sm.apply_batch(vec![entry(4, LogCmd::Write(hset("gone", &[("new", "1")])))])
            .await
            .unwrap();
        assert_eq!(
            hgetall(&engine, 7, "gone"),
            [("new".to_string(), "1".to_string())]
        );
        // One run per round: the collector resumes where it stopped.
        let mut cursor = None;
        let mut removed = 0;
        loop {
            let (next, n) = sm.collect_garbage(cursor, 1).await.unwrap();
            removed += n;
            cursor = next;
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(removed, 1);
        assert_eq!(sub_rows_of(&engine, 7), 2);
        assert_eq!(
            hgetall(&engine, 7, "kept"),
            [("x".to_string(), "1".to_string())]
        );

        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let dir2 = tempfile::tempdir().unwrap();
        let engine2 = Arc::new(Engine::open(dir2.path(), false).unwrap());
        let mut other = StateMachine::open(engine2.clone(), 7).await.unwrap();
        other
            .install_snapshot(&snap.meta, snap.snapshot)
            .await
            .unwrap();
        assert_eq!(
            hgetall(&engine2, 7, "kept"),
            [("x".to_string(), "1".to_string())]
        );
        assert_eq!(
            hgetall(&engine2, 7, "gone"),
            [("new".to_string(), "1".to_string())]
        );
        assert_eq!(sub_rows_of(&engine2, 7), 2);
    }

    /// A gated group: its id, the channel its copy says it arrived on, and
    /// the one that lets it go on.
    type Gate = (
        u64,
        std::sync::mpsc::Sender<()>,
        std::sync::mpsc::Receiver<()>,
    );

    /// The group whose snapshot copy stops at [`copy_gate`].
    static GATE: std::sync::Mutex<Option<Gate>> = std::sync::Mutex::new(None);

    /// Called by [`copy_group`] after its reads: the gated group's copy
    /// says it got here and waits to be let go.
    pub(super) fn copy_gate(gid: u64) {
        let gate = GATE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_if(|(id, _, _)| *id == gid);
        if let Some((_, reached, release)) = gate {
            let _ = reached.send(());
            let _ = release.recv();
        }
    }

    /// Start building a snapshot of group `gid` and return once its copy
    /// has read the group and waits at the gate: the build, and the
    /// sender that lets it go on.
    async fn gated_build(
        sm: &mut StateMachine,
        gid: u64,
    ) -> (
        tokio::task::JoinHandle<Result<Snapshot, StorageError>>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (reached_tx, reached_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel();
        *GATE.lock().unwrap() = Some((gid, reached_tx, release_rx));
        let mut builder = sm.get_snapshot_builder().await;
        let build = tokio::spawn(async move { builder.build_snapshot().await });
        tokio::task::spawn_blocking(move || reached_rx.recv())
            .await
            .unwrap()
            .unwrap();
        (build, release_tx)
    }

    /// A snapshot's copy does not hold the group's writes back: entries
    /// are applied while it runs, and it still holds the state at its own
    /// index, none of theirs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_are_applied_while_a_snapshot_is_copied() {
        const GID: u64 = 4242;
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open(dir.path(), false).unwrap());
        let mut sm = StateMachine::open(engine.clone(), GID).await.unwrap();
        sm.apply_batch(vec![entry(1, LogCmd::Write(hset("h", &[("f", "before")])))])
            .await
            .unwrap();

        let (build, release_tx) = gated_build(&mut sm, GID).await;

        // The copy has read the group and waits at the gate: entries apply.
        for i in 2..=21 {
            let write = LogCmd::Write(hset("h", &[("f", "after")]));
            let applied = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                sm.apply_batch(vec![entry(i, write)]),
            )
            .await;
            assert!(applied.is_ok(), "entry {i} waited for the snapshot's copy");
        }
        assert!(!build.is_finished());
        release_tx.send(()).unwrap();
        let snap = build.await.unwrap().unwrap();
        assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(1));
        assert_eq!(
            hgetall(&engine, GID, "h"),
            [("f".to_string(), "after".to_string())]
        );

        // It holds the state at index 1, on a replica that installs it.
        let dir2 = tempfile::tempdir().unwrap();
        let engine2 = Arc::new(Engine::open(dir2.path(), false).unwrap());
        let mut other = StateMachine::open(engine2.clone(), GID).await.unwrap();
        other
            .install_snapshot(&snap.meta, snap.snapshot)
            .await
            .unwrap();
        assert_eq!(
            hgetall(&engine2, GID, "h"),
            [("f".to_string(), "before".to_string())]
        );
        // And it is the group's current snapshot.
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta.last_log_id, snap.meta.last_log_id);
    }

    /// Openraft asks for a snapshot every `snapshot_threshold` entries. A
    /// small group's is built whenever asked; a large one's (over
    /// `SMALL_SNAPSHOT`) only once the log appended since is as large as
    /// it, on the replica that built it and on one that installed it; a
    /// forced one (a follower needs it) always. A stored one found damaged
    /// when read is built anew and stored in its place.
    #[tokio::test]
    async fn a_large_snapshot_is_rebuilt_only_after_as_much_log() {
        const GID: u64 = 4545;
        let asked = |sm: &StateMachine, force| {
            let mut sm = sm.clone();
            async move { sm.try_create_snapshot_builder(force).await.is_some() }
        };
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open(dir.path(), false).unwrap());
        let log = LogStore::new(engine.clone(), GID);
        let mut sm = StateMachine::open(engine.clone(), GID).await.unwrap();
        sm.follow_log(log.log_bytes());
        assert!(asked(&sm, false).await, "no snapshot yet");

        // A small group: rebuilt whenever asked.
        sm.apply_batch(vec![entry(1, LogCmd::Write(hset("h", &[("f", "v")])))])
            .await
            .unwrap();
        sm.build_snapshot().await.unwrap();
        assert!(asked(&sm, false).await, "small snapshot deferred");

        // A large one: 24 values of 64 KiB, 1.5 MiB.
        let big = "x".repeat(64 << 10);
        let write = |i: u64| {
            let key = format!("k{i}");
            entry(i, LogCmd::Write(hset(&key, &[("f", big.as_str())])))
        };
        let mut index = 2;
        for _ in 0..24 {
            append(&log, [write(index)]).await;
            sm.apply_batch(vec![write(index)]).await.unwrap();
            index += 1;
        }
        let size = sm.build_snapshot().await.unwrap().snapshot.get_ref().len() as u64;
        assert!(
            size > crate::shard::snapshot::SMALL_SNAPSHOT,
            "{size} bytes"
        );
        assert!(!asked(&sm, false).await, "rebuilt with no log since");
        assert!(asked(&sm, true).await, "a forced build was refused");

        // Found damaged when read for a follower: a sound one is built at
        // once, sent and stored in its place, at the same index.
        let sound = sm.get_current_snapshot().await.unwrap().unwrap();
        let stored = engine
            .view()
            .get(Cf::State, &state_key(GID, tag::SNAPSHOT_DATA))
            .unwrap()
            .unwrap();
        let mut damaged = stored.to_vec();
        *damaged.last_mut().unwrap() ^= 1;
        let key = state_key(GID, tag::SNAPSHOT_DATA);
        engine
            .write(vec![Op::Put(Cf::State, key, damaged)], false)
            .await
            .unwrap();
        let rebuilt = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(rebuilt.meta, sound.meta);
        assert_eq!(rebuilt.snapshot.get_ref(), sound.snapshot.get_ref());
        let read_again = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(read_again.snapshot.get_ref(), sound.snapshot.get_ref());
        assert_eq!(
            engine
                .view()
                .get(Cf::State, &state_key(GID, tag::SNAPSHOT_DATA))
                .unwrap()
                .unwrap(),
            stored,
            "the damaged one not replaced"
        );
        let size = rebuilt.snapshot.get_ref().len() as u64;
        assert!(!asked(&sm, false).await, "rebuilt with no log since");

        // Half its size logged since: not yet; all of it: built.
        let logged = log.log_bytes().get();
        while log.log_bytes().get() - logged < size / 2 {
            append(&log, [write(index)]).await;
            index += 1;
        }
        assert!(!asked(&sm, false).await, "rebuilt after half as much log");
        while log.log_bytes().get() - logged < size {
            append(&log, [write(index)]).await;
            index += 1;
        }
        assert!(asked(&sm, false).await, "not rebuilt after as much log");

        // A replica that installs it waits for as much log too.
        let dir2 = tempfile::tempdir().unwrap();
        let engine2 = Arc::new(Engine::open(dir2.path(), false).unwrap());
        let log2 = LogStore::new(engine2.clone(), GID);
        let mut other = StateMachine::open(engine2, GID).await.unwrap();
        other.follow_log(log2.log_bytes());
        other
            .install_snapshot(&rebuilt.meta, rebuilt.snapshot)
            .await
            .unwrap();
        assert!(!asked(&other, false).await, "rebuilt right after install");
    }

    /// A snapshot copied while a newer one was installed is not stored
    /// over it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_older_copy_does_not_replace_a_newer_install() {
        const GID: u64 = 4343;
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open(dir.path(), false).unwrap());
        let mut sm = StateMachine::open(engine.clone(), GID).await.unwrap();
        sm.apply_batch(vec![entry(1, LogCmd::Write(hset("h", &[("f", "old")])))])
            .await
            .unwrap();

        // A newer snapshot, from another replica further on.
        let dir2 = tempfile::tempdir().unwrap();
        let engine2 = Arc::new(Engine::open(dir2.path(), false).unwrap());
        let mut ahead = StateMachine::open(engine2.clone(), GID).await.unwrap();
        ahead
            .apply_batch(vec![
                entry(1, LogCmd::Write(hset("h", &[("f", "old")]))),
                entry(2, LogCmd::Write(hset("h", &[("f", "new")]))),
            ])
            .await
            .unwrap();
        let newer = ahead
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();

        let (build, release_tx) = gated_build(&mut sm, GID).await;
        let installed = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            sm.install_snapshot(&newer.meta, newer.snapshot),
        )
        .await;
        assert!(
            matches!(installed, Ok(Ok(()))),
            "the install waited for the snapshot's copy"
        );
        release_tx.send(()).unwrap();
        let older = build.await.unwrap().unwrap();
        assert_eq!(older.meta.last_log_id.map(|l| l.index), Some(1));

        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta.last_log_id.map(|l| l.index), Some(2));
        assert_eq!(
            hgetall(&engine, GID, "h"),
            [("f".to_string(), "new".to_string())]
        );
    }

    #[test]
    fn openraft_storage_suite() -> Result<(), openraft::StorageError<TypeConfig>> {
        tokio::runtime::Runtime::new()
            .map_err(suite_err)?
            .block_on(Suite::test_all(Builder))
    }
}

#[cfg(test)]
mod proptests;
