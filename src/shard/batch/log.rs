//! One batch-engine group's Raft log, hard state and configuration: raft-rs's
//! [`Storage`] over an in-memory copy of the rows the node's RocksDB holds.
//!
//! The loop ([`super::node`]) is the only writer. It hands each change here
//! together with the list of engine [`Op`]s it is building for the turn:
//! this module changes its memory at once (raft-rs reads what it was just
//! given before it is on disk, as it requires) and adds the rows that make
//! the change durable; the loop writes every group's rows of a turn in one
//! batch with one sync.
//!
//! Rows (same column families and key layout as the openraft groups; a
//! group is run by one engine or the other, never both):
//! * `raft_log`: `log_key(gid, index)` → [`StoredEntry`] (`Format::BatchEntry`);
//! * `raft_state`: `state_key(gid, BATCH_HARD_STATE)` → [`StoredHardState`],
//!   `state_key(gid, BATCH_CONF_STATE)` → [`StoredConfState`],
//!   `state_key(gid, BATCH_LOG_START)` → [`StoredLogStart`] (absent: the
//!   log starts at index 1). The configuration row is what says the group
//!   exists on this node.
//!
//! The log since its start is kept in memory and read back at open. The
//! loop compacts it ([`GroupLog::compact`]: the entries up to an applied
//! index leave memory and their rows go, and the start row moves) and
//! replaces it with an installed snapshot ([`GroupLog::apply_snapshot`]).
//! A leader asked for entries it no longer has answers with a snapshot:
//! raft-rs asks [`Storage::snapshot`], which says what is wanted
//! ([`GroupLog::take_wanted`]); the loop has the applier copy the group's
//! data off its thread and hands the result back
//! ([`GroupLog::set_prepared`]) for raft-rs's next ask.

use std::cell::{Cell, RefCell};

use raft::prelude::{ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use serde::{Deserialize, Serialize};

use crate::shard::codec::{self, Format};
use crate::shard::engine::{log_key, state_key, tag, Cf, DbView, EngineError, Op};

/// A log entry as stored (its index is in the row's key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEntry {
    pub term: u64,
    /// raft-rs's `EntryType`: 0 normal, 1 configuration change, 2
    /// configuration change v2.
    pub kind: u8,
    #[serde(
        serialize_with = "codec::as_bytes",
        deserialize_with = "codec::byte_buf"
    )]
    pub data: Vec<u8>,
    #[serde(
        serialize_with = "codec::as_bytes",
        deserialize_with = "codec::byte_buf"
    )]
    pub context: Vec<u8>,
}

/// A [`StoredEntry`] as written: the entry's bytes borrowed, not copied
/// (the same encoding).
#[derive(Serialize)]
struct StoredEntryRef<'a> {
    term: u64,
    kind: u8,
    #[serde(serialize_with = "codec::as_bytes")]
    data: &'a [u8],
    #[serde(serialize_with = "codec::as_bytes")]
    context: &'a [u8],
}

/// The hard state as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredHardState {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
}

/// Where the log starts, as stored: the last entry before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLogStart {
    pub index: u64,
    pub term: u64,
}

/// The configuration as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredConfState {
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub voters_outgoing: Vec<u64>,
    pub learners_next: Vec<u64>,
    pub auto_leave: bool,
}

impl StoredEntryRef<'_> {
    fn of(e: &Entry) -> StoredEntryRef<'_> {
        StoredEntryRef {
            term: e.term,
            kind: e.entry_type as u8,
            data: &e.data,
            context: &e.context,
        }
    }
}

impl StoredEntry {
    fn into_entry(self, index: u64) -> Result<Entry, EngineError> {
        let kind = match self.kind {
            0 => EntryType::EntryNormal,
            1 => EntryType::EntryConfChange,
            2 => EntryType::EntryConfChangeV2,
            k => {
                return Err(EngineError::Corrupt(format!(
                    "log entry {index}: unknown entry type {k}"
                )))
            }
        };
        let mut e = Entry {
            term: self.term,
            index,
            data: self.data,
            context: self.context,
            ..Default::default()
        };
        e.set_entry_type(kind);
        Ok(e)
    }
}

impl From<&ConfState> for StoredConfState {
    fn from(c: &ConfState) -> StoredConfState {
        StoredConfState {
            voters: c.voters.clone(),
            learners: c.learners.clone(),
            voters_outgoing: c.voters_outgoing.clone(),
            learners_next: c.learners_next.clone(),
            auto_leave: c.auto_leave,
        }
    }
}

impl From<StoredConfState> for ConfState {
    fn from(s: StoredConfState) -> ConfState {
        ConfState {
            voters: s.voters,
            learners: s.learners,
            voters_outgoing: s.voters_outgoing,
            learners_next: s.learners_next,
            auto_leave: s.auto_leave,
        }
    }
}

fn encode<T: Serialize>(kind: Format, v: &T) -> Vec<u8> {
    // The stored types are plain structs of integers and byte strings:
    // postcard cannot fail on them (the golden tests encode each).
    codec::encode(kind, v).expect("batch-engine rows always encode")
}

/// [`encode`] for entries, which may be megabytes: one allocation.
fn encode_sized<T: Serialize>(kind: Format, v: &T) -> Vec<u8> {
    codec::encode_sized(kind, v).expect("batch-engine rows always encode")
}

fn decode<T: serde::de::DeserializeOwned>(
    kind: Format,
    gid: u64,
    raw: &[u8],
) -> Result<T, EngineError> {
    codec::decode(kind, raw).map_err(|e| EngineError::Corrupt(format!("group {gid}: {e}")))
}

/// One group's log and Raft state; see the module doc.
#[derive(Debug)]
pub struct GroupLog {
    gid: u64,
    hard: HardState,
    conf: ConfState,
    /// The last entry before `entries` (compacted away, or covered by an
    /// installed snapshot): (index, term); (0, 0) for a log from index 1.
    start: (u64, u64),
    /// Every entry after `start`, in order.
    entries: Vec<Entry>,
    /// Bytes of the entries' data and context in memory.
    bytes: u64,
    /// The least index a snapshot asked for by raft-rs must cover (0:
    /// none asked for since the last [`GroupLog::take_wanted`]).
    wanted: Cell<u64>,
    /// A snapshot built for raft-rs's next ask, handed out once.
    prepared: RefCell<Option<Snapshot>>,
}

fn entry_bytes(e: &Entry) -> u64 {
    (e.data.len() + e.context.len()) as u64
}

impl GroupLog {
    /// The group as this node stored it, or `None` if it has no Raft rows
    /// here at all (the group does not exist on this node). Rows of a log
    /// or a vote without the configuration row (an openraft group's, or a
    /// damaged one) are refused: creating the group over them would mix
    /// two logs and could vote twice in a term.
    pub fn open(view: &DbView, gid: u64) -> Result<Option<GroupLog>, EngineError> {
        let Some(raw) = view.get(Cf::State, &state_key(gid, tag::BATCH_CONF_STATE))? else {
            let (start, end) = (log_key(gid, 0), log_key(gid, u64::MAX));
            let logged = view.iter(Cf::Log, &start, &end)?.next().is_some();
            let voted = [tag::BATCH_HARD_STATE, tag::VOTE, tag::BATCH_LOG_START]
                .into_iter()
                .map(|t| view.get(Cf::State, &state_key(gid, t)))
                .collect::<Result<Vec<_>, _>>()?
                .iter()
                .any(Option::is_some);
            if logged || voted {
                return Err(EngineError::Corrupt(format!(
                    "group {gid}: Raft rows without a batch-engine configuration \
                     (another engine's group, or a damaged one)"
                )));
            }
            return Ok(None);
        };
        let conf: StoredConfState = decode(Format::BatchConfState, gid, &raw)?;
        let hard = match view.get(Cf::State, &state_key(gid, tag::BATCH_HARD_STATE))? {
            Some(raw) => {
                let h: StoredHardState = decode(Format::BatchHardState, gid, &raw)?;
                HardState {
                    term: h.term,
                    vote: h.vote,
                    commit: h.commit,
                }
            }
            None => HardState::default(),
        };
        let start = match view.get(Cf::State, &state_key(gid, tag::BATCH_LOG_START))? {
            Some(raw) => {
                let s: StoredLogStart = decode(Format::BatchLogStart, gid, &raw)?;
                (s.index, s.term)
            }
            None => (0, 0),
        };
        let mut entries = Vec::new();
        let mut bytes = 0;
        // Rows at or before the start are never read: a compaction deletes
        // them in the write that moves the start.
        let (from, end) = (log_key(gid, start.0 + 1), log_key(gid, u64::MAX));
        for row in view.iter(Cf::Log, &from, &end)? {
            let (key, value) = row?;
            let index = key
                .get(8..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| {
                    EngineError::Corrupt(format!("group {gid}: a log key of {} bytes", key.len()))
                })?;
            let want = start.0 + entries.len() as u64 + 1;
            if index != want {
                return Err(EngineError::Corrupt(format!(
                    "group {gid}: log entry {index} where {want} was expected (a holed log)"
                )));
            }
            let stored: StoredEntry = decode(Format::BatchEntry, gid, &value)?;
            let e = stored.into_entry(index)?;
            bytes += entry_bytes(&e);
            entries.push(e);
        }
        Ok(Some(GroupLog {
            gid,
            hard,
            conf: conf.into(),
            start,
            entries,
            bytes,
            wanted: Cell::new(0),
            prepared: RefCell::new(None),
        }))
    }

    /// A new group whose first configuration is `voters`, and the rows that
    /// record it.
    pub fn create(gid: u64, voters: &[u64], ops: &mut Vec<Op>) -> GroupLog {
        let conf = ConfState {
            voters: voters.to_vec(),
            ..Default::default()
        };
        ops.push(Op::Put(
            Cf::State,
            state_key(gid, tag::BATCH_CONF_STATE),
            encode(Format::BatchConfState, &StoredConfState::from(&conf)),
        ));
        GroupLog {
            gid,
            hard: HardState::default(),
            conf,
            start: (0, 0),
            entries: Vec::new(),
            bytes: 0,
            wanted: Cell::new(0),
            prepared: RefCell::new(None),
        }
    }

    pub fn gid(&self) -> u64 {
        self.gid
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf
    }

    /// The first index still in the log.
    fn first(&self) -> u64 {
        self.start.0 + 1
    }

    /// The last index before the log (compacted away or covered by a
    /// snapshot; 0 while the log starts at 1).
    pub fn log_start(&self) -> u64 {
        self.start.0
    }

    fn last(&self) -> u64 {
        self.start.0 + self.entries.len() as u64
    }

    /// Entries in memory, and their bytes.
    pub fn len_and_bytes(&self) -> (u64, u64) {
        (self.entries.len() as u64, self.bytes)
    }

    /// Append `ents` (contiguous, from raft-rs's ready), replacing any
    /// entries at or after the first one's index: a new leader's log wins
    /// over an old uncommitted suffix.
    pub fn append(&mut self, ents: Vec<Entry>, ops: &mut Vec<Op>) {
        let Some(first) = ents.first().map(|e| e.index) else {
            return;
        };
        let new_last = first + ents.len() as u64 - 1;
        let old_last = self.last();
        assert!(
            first > self.start.0 && first <= old_last + 1,
            "group {}: append at {first} outside the log ({}..={old_last})",
            self.gid,
            self.first()
        );
        let keep = (first - self.first()) as usize;
        let dropped: u64 = self.entries[keep..].iter().map(entry_bytes).sum();
        self.bytes -= dropped;
        self.entries.truncate(keep);
        if old_last > new_last {
            ops.push(Op::DeleteRange(
                Cf::Log,
                log_key(self.gid, new_last + 1),
                log_key(self.gid, old_last + 1),
            ));
        }
        for e in ents {
            ops.push(Op::Put(
                Cf::Log,
                log_key(self.gid, e.index),
                encode_sized(Format::BatchEntry, &StoredEntryRef::of(&e)),
            ));
            self.bytes += entry_bytes(&e);
            self.entries.push(e);
        }
    }

    /// Drop the entries up to `to` (applied on this node, so durable and
    /// committed) from memory, and add the rows that delete them and move
    /// the start. `false`: nothing to compact (`to` is before the log's
    /// first index or past its end).
    pub fn compact(&mut self, to: u64, ops: &mut Vec<Op>) -> bool {
        if to < self.first() || to > self.last() {
            return false;
        }
        let n = (to - self.start.0) as usize;
        let term = self.entries[n - 1].term;
        let dropped: u64 = self.entries[..n].iter().map(entry_bytes).sum();
        self.bytes -= dropped;
        self.entries.drain(..n);
        self.start = (to, term);
        ops.push(Op::DeleteRange(
            Cf::Log,
            log_key(self.gid, 0),
            log_key(self.gid, to + 1),
        ));
        ops.push(self.start_row());
        true
    }

    /// Replace the log with a snapshot's end: no entries, the start at the
    /// snapshot's index and term, its configuration, and a commit index of
    /// at least its index; and the rows that record it.
    pub fn apply_snapshot(&mut self, meta: &SnapshotMetadata, ops: &mut Vec<Op>) {
        self.entries.clear();
        self.bytes = 0;
        self.start = (meta.index, meta.term);
        self.hard.commit = self.hard.commit.max(meta.index);
        ops.push(Op::DeleteRange(
            Cf::Log,
            log_key(self.gid, 0),
            log_key(self.gid, u64::MAX),
        ));
        ops.push(self.start_row());
        ops.push(self.hard_state_row());
        if let Some(conf) = meta.conf_state.as_ref() {
            self.set_conf_state(conf.clone(), ops);
        }
    }

    fn start_row(&self) -> Op {
        let start = StoredLogStart {
            index: self.start.0,
            term: self.start.1,
        };
        Op::Put(
            Cf::State,
            state_key(self.gid, tag::BATCH_LOG_START),
            encode(Format::BatchLogStart, &start),
        )
    }

    /// The least index of a snapshot raft-rs asked for since the last
    /// call, if it asked (and none was prepared for it).
    pub fn take_wanted(&self) -> Option<u64> {
        match self.wanted.replace(0) {
            0 => None,
            i => Some(i),
        }
    }

    /// A snapshot built for raft-rs's next ask (replacing an older one).
    pub fn set_prepared(&self, snapshot: Snapshot) {
        *self.prepared.borrow_mut() = Some(snapshot);
    }

    /// Take a new hard state; with `ops`, also write it.
    pub fn set_hard_state(&mut self, hs: HardState, ops: Option<&mut Vec<Op>>) {
        self.hard = hs;
        if let Some(ops) = ops {
            ops.push(self.hard_state_row());
        }
    }

    /// The row of the current hard state.
    pub fn hard_state_row(&self) -> Op {
        let h = StoredHardState {
            term: self.hard.term,
            vote: self.hard.vote,
            commit: self.hard.commit,
        };
        Op::Put(
            Cf::State,
            state_key(self.gid, tag::BATCH_HARD_STATE),
            encode(Format::BatchHardState, &h),
        )
    }

    /// The commit index is at least `index` (known committed: applied).
    /// In memory only; written with the next hard state.
    pub fn raise_commit(&mut self, index: u64) {
        self.hard.commit = self.hard.commit.max(index);
    }

    /// Take a configuration a committed change produced, and its row.
    pub fn set_conf_state(&mut self, conf: ConfState, ops: &mut Vec<Op>) {
        ops.push(Op::Put(
            Cf::State,
            state_key(self.gid, tag::BATCH_CONF_STATE),
            encode(Format::BatchConfState, &StoredConfState::from(&conf)),
        ));
        self.conf = conf;
    }
}

impl Storage for GroupLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard.clone(), self.conf.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let from = (low - self.first()) as usize;
        let to = (high - self.first()) as usize;
        let mut ents = self.entries[from..to].to_vec();
        raft::util::limit_size(&mut ents, max_size.into());
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.start.0 {
            return Ok(self.start.1);
        }
        if idx < self.start.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.entries.get((idx - self.first()) as usize) {
            Some(e) => Ok(e.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    /// A leader needs a snapshot for a follower that is behind the log's
    /// start. One prepared at or past `request_index` is handed out (once:
    /// its bytes leave memory with it); otherwise the ask is noted for the
    /// loop, which has one built off its thread, and raft-rs asks again
    /// on the follower's next answer.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // One older than the log's start would leave the follower still
        // short of it: built anew.
        let least = request_index.max(self.start.0);
        let mut prepared = self.prepared.borrow_mut();
        if prepared
            .as_ref()
            .is_some_and(|s| s.get_metadata().index >= least)
        {
            return Ok(prepared.take().expect("checked above"));
        }
        self.wanted.set(self.wanted.get().max(least.max(1)));
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}
