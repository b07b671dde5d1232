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
//!   `state_key(gid, BATCH_CONF_STATE)` → [`StoredConfState`]. The
//!   configuration row is what says the group exists on this node.
//!
//! The whole log is kept in memory and read back whole at open: this first
//! step never compacts a log (snapshots come with the step that moves
//! shard groups onto this engine; docs/ARCHITECTURE.md, "The batch
//! engine"). A stored log that does not start at index 1 is refused.

use raft::prelude::{ConfState, Entry, EntryType, HardState, Snapshot};
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
    pub data: Vec<u8>,
    pub context: Vec<u8>,
}

/// The hard state as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredHardState {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
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

impl StoredEntry {
    fn from_entry(e: &Entry) -> StoredEntry {
        StoredEntry {
            term: e.term,
            kind: e.entry_type as u8,
            data: e.data.to_vec(),
            context: e.context.to_vec(),
        }
    }

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
    /// Every entry since index 1, in order.
    entries: Vec<Entry>,
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
            let voted = [tag::BATCH_HARD_STATE, tag::VOTE]
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
        let mut entries = Vec::new();
        let (start, end) = (log_key(gid, 0), log_key(gid, u64::MAX));
        for row in view.iter(Cf::Log, &start, &end)? {
            let (key, value) = row?;
            let index = key
                .get(8..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| {
                    EngineError::Corrupt(format!("group {gid}: a log key of {} bytes", key.len()))
                })?;
            let want = entries.len() as u64 + 1;
            if index != want {
                return Err(EngineError::Corrupt(format!(
                    "group {gid}: log entry {index} where {want} was expected \
                     (a compacted or holed log, which this engine does not read yet)"
                )));
            }
            let stored: StoredEntry = decode(Format::BatchEntry, gid, &value)?;
            entries.push(stored.into_entry(index)?);
        }
        Ok(Some(GroupLog {
            gid,
            hard,
            conf: conf.into(),
            entries,
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
            entries: Vec::new(),
        }
    }

    pub fn gid(&self) -> u64 {
        self.gid
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard
    }

    fn last(&self) -> u64 {
        self.entries.len() as u64
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
            first >= 1 && first <= old_last + 1,
            "group {}: append at {first} leaves a gap after {old_last}",
            self.gid
        );
        self.entries.truncate((first - 1) as usize);
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
                encode(Format::BatchEntry, &StoredEntry::from_entry(&e)),
            ));
            self.entries.push(e);
        }
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
        if low < 1 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut ents = self.entries[(low - 1) as usize..(high - 1) as usize].to_vec();
        raft::util::limit_size(&mut ents, max_size.into());
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == 0 {
            return Ok(0);
        }
        match self.entries.get((idx - 1) as usize) {
            Some(e) => Ok(e.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // Never asked for: a leader sends a snapshot only to a follower
        // that needs entries the leader has compacted, and this step
        // never compacts.
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}
