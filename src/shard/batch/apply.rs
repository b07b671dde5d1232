//! The batch engine's applier for shard groups: each group's committed
//! entries go through the same [`StateMachine`] an openraft group uses
//! (the pure apply, the row cache, the key count, and the applied index
//! written in the same `WriteBatch` as the data), so a SET does on this
//! engine exactly what it does on openraft. All the groups of a turn go
//! into one RocksDB write ([`StateMachine::apply_many`]).
//!
//! An entry's data is one [`LogCmd`] (`Format::BatchCommand`); an empty
//! entry (a new leader's, or a configuration change the loop applied) is
//! applied as a blank one, which only moves the applied index. The applied
//! index each group's state machine holds is what the loop gives raft-rs
//! when it opens the group, so a restarted node applies only what comes
//! after it: an INCR is never applied twice. A command that does not decode
//! is corrupt data and stops the loop; it is never skipped.
//!
//! The state machine's methods are async (a read that misses RocksDB's
//! memory goes to a blocking thread); the loop thread, which is not a
//! runtime thread, runs them to completion on the node's runtime.

use std::collections::HashMap;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::EntryPayload;
use raft::prelude::Entry;

use super::node::{Applier, GroupReplies, SnapshotJob};
use super::BatchError;
use crate::shard::codec::{self, Format};
use crate::shard::command::{LogCmd, OpReply};
use crate::shard::engine::{Engine, Op};
use crate::shard::store::StateMachine;
use crate::shard::types::{self, log_id};

/// Encode a command as a batch-engine entry's data.
pub fn encode_command(cmd: &LogCmd) -> Result<Vec<u8>, codec::CodecError> {
    codec::encode(Format::BatchCommand, cmd)
}

/// Applies shard groups' entries with shoal's state machine; see the
/// module doc.
pub struct ShardApplier {
    engine: Arc<Engine>,
    runtime: tokio::runtime::Handle,
    machines: HashMap<u64, StateMachine>,
    /// State machines the node opened for its replicas
    /// ([`ShardApplier::shared`]), taken in place of opening another.
    shared: Machines,
}

/// The state machines a node's replicas serve from, by group: the applier
/// applies to the same one (its row cache, key count and waiters are the
/// replica's), not to a second copy.
pub type Machines = Arc<std::sync::Mutex<HashMap<u64, StateMachine>>>;

impl ShardApplier {
    /// `runtime` runs the state machines' async work; the loop thread must
    /// not be one of its worker threads.
    pub fn new(engine: Arc<Engine>, runtime: tokio::runtime::Handle) -> ShardApplier {
        ShardApplier {
            engine,
            runtime,
            machines: HashMap::new(),
            shared: Machines::default(),
        }
    }

    /// Apply to the state machines in `machines` (the node's replicas')
    /// when a group is there.
    pub fn shared(mut self, machines: Machines) -> ShardApplier {
        self.shared = machines;
        self
    }

    /// `gid`'s committed entries as its state machine applies them (and
    /// its state machine open).
    fn decode(&mut self, gid: u64, entries: &[Entry]) -> Result<Vec<types::Entry>, BatchError> {
        let mut batch = Vec::with_capacity(entries.len());
        for e in entries {
            let payload = if e.data.is_empty() {
                EntryPayload::Blank
            } else {
                let cmd: LogCmd = codec::decode(Format::BatchCommand, &e.data).map_err(|err| {
                    BatchError::Corrupt(format!("group {gid} entry {}: {err}", e.index))
                })?;
                EntryPayload::Normal(cmd)
            };
            // The leader's node is not in a raft-rs entry; the state
            // machine keeps only the index and term of what it applied.
            batch.push(types::Entry {
                log_id: log_id(e.term, 0, e.index),
                payload,
            });
        }
        self.machine(gid)?;
        Ok(batch)
    }

    fn machine(&mut self, gid: u64) -> Result<&mut StateMachine, BatchError> {
        if !self.machines.contains_key(&gid) {
            let shared = self.shared.lock().ok().and_then(|m| m.get(&gid).cloned());
            if let Some(sm) = shared {
                self.machines.insert(gid, sm);
                return Ok(self.machines.get_mut(&gid).expect("inserted above"));
            }
            let sm = self
                .runtime
                .block_on(StateMachine::open(self.engine.clone(), gid))
                .map_err(|e| {
                    BatchError::Apply(format!("opening group {gid}'s state machine: {e}"))
                })?;
            self.machines.insert(gid, sm);
        }
        Ok(self.machines.get_mut(&gid).expect("inserted above"))
    }
}

impl Applier for ShardApplier {
    type Reply = OpReply;

    fn forget(&mut self, gid: u64) {
        self.machines.remove(&gid);
    }

    fn applied(&mut self, gid: u64) -> Result<u64, BatchError> {
        let runtime = self.runtime.clone();
        let sm = self.machine(gid)?;
        let (applied, _) = runtime
            .block_on(sm.applied_state())
            .map_err(|e| BatchError::Apply(format!("group {gid}: {e}")))?;
        Ok(applied.map_or(0, |l| l.index))
    }

    fn apply(&mut self, groups: &[(u64, Vec<Entry>)]) -> Result<GroupReplies<OpReply>, BatchError> {
        let mut replies: GroupReplies<OpReply> =
            (0..groups.len()).map(|_| Ok(Vec::new())).collect();
        let mut batches = Vec::with_capacity(groups.len());
        for (slot, (gid, entries)) in groups.iter().enumerate() {
            match self.decode(*gid, entries) {
                Ok(batch) => batches.push((slot, *gid, batch)),
                Err(e) => replies[slot] = Err(e),
            }
        }
        // Every group of the turn in one RocksDB write.
        let slots: Vec<usize> = batches.iter().map(|(slot, _, _)| *slot).collect();
        let batches = batches
            .into_iter()
            .map(|(_, gid, batch)| (&self.machines[&gid], batch))
            .collect();
        let applied = self
            .runtime
            .block_on(StateMachine::apply_many(batches))
            .map_err(|e| BatchError::Apply(e.to_string()))?;
        for (slot, result) in slots.into_iter().zip(applied) {
            replies[slot] = result.map_err(|e| BatchError::Apply(e.to_string()));
        }
        Ok(replies)
    }

    fn snapshot(&mut self, gid: u64) -> Result<SnapshotJob, BatchError> {
        let runtime = self.runtime.clone();
        let sm = self.machine(gid)?;
        let copy = runtime
            .block_on(sm.start_copy())
            .map_err(|e| BatchError::Apply(format!("group {gid}: snapshot: {e}")))?;
        Ok(Box::new(move || {
            runtime
                .block_on(copy)
                .map_err(|e| BatchError::Apply(format!("group {gid}: snapshot: {e}")))
        }))
    }

    fn install(
        &mut self,
        gid: u64,
        index: u64,
        term: u64,
        data: Vec<u8>,
        log_ops: Vec<Op>,
    ) -> Result<(), BatchError> {
        let runtime = self.runtime.clone();
        let sm = self.machine(gid)?;
        // Membership is the loop's (the configuration row), not the state
        // machine's: an empty one is recorded with the applied index.
        let meta = types::SnapshotMeta {
            last_log_id: Some(log_id(term, 0, index)),
            last_membership: types::StoredMembership::default(),
        };
        runtime
            .block_on(sm.install_with(&meta, data, log_ops))
            .map_err(|e| BatchError::Apply(format!("group {gid}: installing a snapshot: {e}")))
    }
}
