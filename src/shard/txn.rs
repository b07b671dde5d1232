//! A shard's side of transactions: one-phase transactions on a single shard,
//! and the participant's PREPARE / COMMIT / ABORT of two-phase commit.
//!
//! Everything here is pure and deterministic, like [`super::apply::apply_write`]: the
//! decision depends only on the log entry and the group's stored state (data,
//! key locks, prepared transactions), which the caller exposes through
//! [`TxnView`] and updates from the returned [`TxnChange`]s.
//!
//! * **One-phase** (all keys on this shard): check WATCHed versions and that
//!   no key is locked, then run the queued operations in order; the whole
//!   transaction is one Raft entry.
//! * **PREPARE**: check versions and locks; on success lock every key the
//!   transaction touches and remember its operations (staged, not applied);
//!   vote yes (`Int(1)`) or no (`Int(0)`).
//! * **COMMIT**: run the staged operations in order, release the locks, reply
//!   with their results. **ABORT**: drop them and release the locks. Both are
//!   idempotent: a second COMMIT/ABORT of the same transaction changes nothing.
//! * Plain writes to a locked key are refused (`-TRYAGAIN`) without effect;
//!   plain reads see the last committed value, never staged writes.
//!
//! A record that does not decode (a value, a lock, a prepared transaction)
//! is never taken for an absent one: the entry's reply is the
//! [`Corrupt`] error and it changes nothing (a COMMIT of an unreadable
//! prepared transaction keeps its locks). Inside a transaction, an
//! operation that meets a corrupt value answers that error in its place
//! and changes nothing, like a failing command inside Redis's EXEC.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::apply::{admit, apply_read};
use super::coll::{Layer, Overlay, ReadView};
use super::command::{Limits, OpReply, TxnCmd, TxnEntry, TxnOp, Watch, WriteCmd};
use super::notify::{apply_notified, Event};
use super::value::{Corrupt, Stored};

/// A prepared (locked, staged) transaction, as stored by a participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prepared {
    pub txn_id: u64,
    pub ops: Vec<TxnOp>,
    pub keys: Vec<Bytes>,
    /// The proposer's time at PREPARE: recovery acts on old ones.
    pub prepared_at_ms: u64,
}

/// What a transaction may read of the group's state. Each read answers the
/// record, its absence, or the corruption found in its place.
pub trait TxnView: ReadView {
    /// The transaction holding a lock on `key`.
    fn lock(&mut self, key: &[u8]) -> Result<Option<u64>, Corrupt>;
    fn prepared(&mut self, txn_id: u64) -> Result<Option<Prepared>, Corrupt>;
}

impl TxnEntry {
    /// The bytes of keys and values its writes carry (the proposer's
    /// budget, [`super::proposer`]).
    pub fn value_len(&self) -> usize {
        let ops = match &self.cmd {
            TxnCmd::OnePhase { ops, .. } | TxnCmd::Prepare { ops, .. } => ops,
            TxnCmd::Commit { .. } | TxnCmd::Abort { .. } => return 0,
        };
        ops.iter()
            .map(|op| match op {
                TxnOp::Write(w) => w.value_len(),
                TxnOp::Read(_) => 0,
            })
            .fold(0usize, usize::saturating_add)
    }

    /// The leader's check before proposing ([`admit`] on every write of a
    /// one-phase transaction or PREPARE): the first refusal is the reply,
    /// and nothing is proposed.
    pub fn admit(&mut self, limits: &Limits) -> Result<(), OpReply> {
        let ops = match &mut self.cmd {
            TxnCmd::OnePhase { ops, .. } | TxnCmd::Prepare { ops, .. } => ops,
            TxnCmd::Commit { .. } | TxnCmd::Abort { .. } => return Ok(()),
        };
        for op in ops {
            if let TxnOp::Write(w) = op {
                admit(w, limits)?;
            }
        }
        Ok(())
    }
}

/// A change to make after applying a transaction entry.
#[derive(Debug, Clone, PartialEq)]
pub enum TxnChange {
    Data(Bytes, Option<Stored>),
    /// An element row of a collection: (key, gen, element) to a value or
    /// to nothing.
    Sub(Bytes, u64, Bytes, Option<Bytes>),
    Lock(Bytes, Option<u64>),
    Prepared(u64, Option<Prepared>),
}

/// The reply of a one-phase transaction or COMMIT that lost a conflict.
pub const CONFLICT: OpReply = OpReply::Nil;

/// Version of a key as WATCH sees it: its last write's index, 0 when absent.
pub fn version_of(v: Option<&Stored>, now_ms: u64) -> u64 {
    match v {
        Some(v) if v.live_at(now_ms) => v.version,
        _ => 0,
    }
}

fn unique_keys(ops: &[TxnOp]) -> Vec<Bytes> {
    let mut keys: Vec<Bytes> = ops.iter().flat_map(|o| o.keys()).collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Whether the watched versions hold and no key is locked by another
/// transaction.
fn admissible(
    view: &mut dyn TxnView,
    keys: &[Bytes],
    watches: &[Watch],
    me: Option<u64>,
    now_ms: u64,
) -> Result<bool, Corrupt> {
    for (k, v) in watches {
        if version_of(view.get(k)?.as_ref(), now_ms) != *v {
            return Ok(false);
        }
    }
    for k in keys.iter().chain(watches.iter().map(|(k, _)| k)) {
        if view.lock(k)?.is_some_and(|holder| Some(holder) != me) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Run operations in order over the current values, each seeing the ones
/// before it. Returns the replies and the net data changes.
/// Keyspace events (with `flags` not 0) are appended to `events`.
fn run_ops(
    ops: &[TxnOp],
    now_ms: u64,
    index: u64,
    view: &mut dyn TxnView,
    flags: u32,
    events: &mut Vec<Event>,
) -> (Vec<OpReply>, Vec<TxnChange>) {
    let mut layer = Layer::new(view);
    let mut replies = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            TxnOp::Write(w) => {
                let cmd = WriteCmd {
                    now_ms,
                    op: w.clone(),
                };
                replies.push(apply_notified(&cmd, index, &mut layer, flags, events));
            }
            TxnOp::Read(r) => replies
                .push(apply_read(r, now_ms, usize::MAX, &mut layer).unwrap_or_else(|c| c.reply())),
        }
    }
    let Overlay { keys, subs, resets } = layer.ov;
    let mut changes: Vec<TxnChange> = Vec::with_capacity(keys.len() + subs.len());
    for (k, v) in keys {
        // A key deleted and written again: deleted first where this lands
        // (see `Overlay::resets`).
        if v.is_some() && resets.contains(&k) {
            changes.push(TxnChange::Data(k.clone(), None));
        }
        changes.push(TxnChange::Data(k, v));
    }
    changes.extend(
        subs.into_iter()
            .map(|((k, gen, e), v)| TxnChange::Sub(k, gen, e, v)),
    );
    (replies, changes)
}

/// Apply one transaction entry. Deterministic: see the module doc.
pub fn apply_txn(
    entry: &TxnEntry,
    index: u64,
    view: &mut dyn TxnView,
) -> (OpReply, Vec<TxnChange>) {
    apply_txn_notified(entry, index, view, 0, &mut Vec::new())
}

/// [`apply_txn`], appending the keyspace events of the operations it runs
/// (those `flags` asks for; none when 0) to `events`.
pub fn apply_txn_notified(
    entry: &TxnEntry,
    index: u64,
    view: &mut dyn TxnView,
    flags: u32,
    events: &mut Vec<Event>,
) -> (OpReply, Vec<TxnChange>) {
    let mark = events.len();
    match txn_result(entry, index, view, flags, events) {
        Ok(r) => r,
        Err(c) => {
            events.truncate(mark);
            (c.reply(), Vec::new())
        }
    }
}

fn txn_result(
    entry: &TxnEntry,
    index: u64,
    view: &mut dyn TxnView,
    flags: u32,
    events: &mut Vec<Event>,
) -> Result<(OpReply, Vec<TxnChange>), Corrupt> {
    let now = entry.now_ms;
    Ok(match &entry.cmd {
        TxnCmd::OnePhase { ops, watches } => {
            let keys = unique_keys(ops);
            if !admissible(view, &keys, watches, None, now)? {
                return Ok((CONFLICT, Vec::new()));
            }
            let (replies, changes) = run_ops(ops, now, index, view, flags, events);
            (OpReply::Array(replies), changes)
        }
        TxnCmd::Prepare {
            txn_id,
            ops,
            watches,
        } => {
            if view.prepared(*txn_id)?.is_some() {
                return Ok((OpReply::Int(1), Vec::new()));
            }
            // Watched keys are locked too, so they cannot change between the
            // version check and COMMIT.
            let mut keys = unique_keys(ops);
            keys.extend(watches.iter().map(|(k, _)| k.clone()));
            keys.sort();
            keys.dedup();
            if !admissible(view, &keys, watches, Some(*txn_id), now)? {
                return Ok((OpReply::Int(0), Vec::new()));
            }
            let mut changes: Vec<TxnChange> = keys
                .iter()
                .map(|k| TxnChange::Lock(k.clone(), Some(*txn_id)))
                .collect();
            changes.push(TxnChange::Prepared(
                *txn_id,
                Some(Prepared {
                    txn_id: *txn_id,
                    ops: ops.clone(),
                    keys,
                    prepared_at_ms: now,
                }),
            ));
            (OpReply::Int(1), changes)
        }
        TxnCmd::Commit { txn_id } => {
            let Some(p) = view.prepared(*txn_id)? else {
                return Ok((OpReply::Nil, Vec::new()));
            };
            let (replies, mut changes) = run_ops(&p.ops, now, index, view, flags, events);
            release(&p, &mut changes);
            (OpReply::Array(replies), changes)
        }
        TxnCmd::Abort { txn_id } => {
            let Some(p) = view.prepared(*txn_id)? else {
                return Ok((OpReply::Ok, Vec::new()));
            };
            let mut changes = Vec::new();
            release(&p, &mut changes);
            (OpReply::Ok, changes)
        }
    })
}

fn release(p: &Prepared, changes: &mut Vec<TxnChange>) {
    for k in &p.keys {
        changes.push(TxnChange::Lock(k.clone(), None));
    }
    changes.push(TxnChange::Prepared(p.txn_id, None));
}

/// A plain write may not touch a key locked by a prepared transaction:
/// the refusal to reply, if any (an unreadable lock refuses too).
pub fn blocked_by_lock(keys: &[&Bytes], view: &mut dyn TxnView) -> Option<OpReply> {
    for k in keys {
        match view.lock(k) {
            Ok(None) => {}
            Ok(Some(_)) => {
                return Some(OpReply::Error(format!(
                    "TRYAGAIN key {} is locked by a transaction in progress",
                    super::value::printable(k)
                )))
            }
            Err(c) => return Some(c.reply()),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::command::{Expiry, SetCond};
    use crate::shard::command::{ReadOp, WriteOp};
    use std::collections::HashMap;

    #[derive(Default)]
    struct Mem {
        data: HashMap<Bytes, Stored>,
        locks: HashMap<Bytes, u64>,
        prepared: HashMap<u64, Prepared>,
    }

    impl ReadView for Mem {
        fn get(&mut self, key: &[u8]) -> Result<Option<Stored>, Corrupt> {
            Ok(self.data.get(key).cloned())
        }
        fn sub_get(&mut self, _: &[u8], _: u64, _: &[u8]) -> Result<Option<Bytes>, Corrupt> {
            Ok(None)
        }
        fn sub_range(
            &mut self,
            _: &crate::shard::coll::Range<'_>,
        ) -> Result<Vec<(Bytes, Bytes)>, Corrupt> {
            Ok(Vec::new())
        }
    }

    impl TxnView for Mem {
        fn lock(&mut self, key: &[u8]) -> Result<Option<u64>, Corrupt> {
            Ok(self.locks.get(key).copied())
        }
        fn prepared(&mut self, txn_id: u64) -> Result<Option<Prepared>, Corrupt> {
            Ok(self.prepared.get(&txn_id).cloned())
        }
    }

    impl Mem {
        fn apply(&mut self, index: u64, cmd: TxnCmd) -> OpReply {
            let entry = TxnEntry { now_ms: 1000, cmd };
            let (reply, changes) = apply_txn(&entry, index, self);
            for c in changes {
                match c {
                    TxnChange::Data(k, Some(v)) => {
                        self.data.insert(k, v);
                    }
                    TxnChange::Data(k, None) => {
                        self.data.remove(&k);
                    }
                    TxnChange::Lock(k, Some(t)) => {
                        self.locks.insert(k, t);
                    }
                    TxnChange::Lock(k, None) => {
                        self.locks.remove(&k);
                    }
                    TxnChange::Prepared(t, Some(p)) => {
                        self.prepared.insert(t, p);
                    }
                    TxnChange::Prepared(t, None) => {
                        self.prepared.remove(&t);
                    }
                    TxnChange::Sub(..) => unreachable!("no collections in these tests"),
                }
            }
            reply
        }
    }

    fn set(k: &str, v: &str) -> TxnOp {
        TxnOp::Write(WriteOp::Set {
            key: Bytes::copy_from_slice(k.as_bytes()),
            value: Bytes::copy_from_slice(v.as_bytes()),
            expiry: Expiry::Clear,
            cond: SetCond::Always,
            get: false,
        })
    }

    fn get(k: &str) -> TxnOp {
        TxnOp::Read(ReadOp::Get {
            key: Bytes::copy_from_slice(k.as_bytes()),
        })
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn one_phase_runs_in_order_and_reads_its_own_writes() {
        let mut m = Mem::default();
        let r = m.apply(
            5,
            TxnCmd::OnePhase {
                ops: vec![get("a"), set("a", "1"), get("a")],
                watches: vec![],
            },
        );
        assert_eq!(
            r,
            OpReply::Array(vec![OpReply::Nil, OpReply::Ok, OpReply::Bulk(b("1"))])
        );
        assert_eq!(m.data[&b("a")].version, 5);
    }

    #[test]
    fn watch_conflict_changes_nothing() {
        let mut m = Mem::default();
        m.apply(
            1,
            TxnCmd::OnePhase {
                ops: vec![set("a", "1")],
                watches: vec![],
            },
        );
        // Watched while absent (0) but now at version 1: conflict.
        let r = m.apply(
            2,
            TxnCmd::OnePhase {
                ops: vec![set("a", "2")],
                watches: vec![(b("a"), 0)],
            },
        );
        assert_eq!(r, CONFLICT);
        assert_eq!(m.data[&b("a")].data, b("1"));
        let r = m.apply(
            3,
            TxnCmd::OnePhase {
                ops: vec![set("a", "2")],
                watches: vec![(b("a"), 1)],
            },
        );
        assert_eq!(r, OpReply::Array(vec![OpReply::Ok]));
    }

    #[test]
    fn prepare_locks_commit_applies_abort_releases() {
        let mut m = Mem::default();
        let prep = |id, ops| TxnCmd::Prepare {
            txn_id: id,
            ops,
            watches: vec![],
        };
        assert_eq!(
            m.apply(1, prep(7, vec![set("a", "1"), get("b")])),
            OpReply::Int(1)
        );
        // Staged, not applied; both keys locked.
        assert!(m.data.is_empty());
        assert_eq!(m.locks.len(), 2);
        // Idempotent prepare; a second transaction on a locked key votes no.
        assert_eq!(m.apply(2, prep(7, vec![set("a", "1")])), OpReply::Int(1));
        assert_eq!(m.apply(3, prep(8, vec![set("b", "x")])), OpReply::Int(0));
        // One-phase on a locked key is a conflict; plain writes are refused.
        assert_eq!(
            m.apply(
                4,
                TxnCmd::OnePhase {
                    ops: vec![set("a", "z")],
                    watches: vec![]
                }
            ),
            CONFLICT
        );
        let k = b("a");
        assert!(blocked_by_lock(&[&k], &mut m).is_some());
        // Commit applies in order and releases.
        assert_eq!(
            m.apply(5, TxnCmd::Commit { txn_id: 7 }),
            OpReply::Array(vec![OpReply::Ok, OpReply::Nil])
        );
        assert_eq!(m.data[&b("a")].data, b("1"));
        assert_eq!(m.data[&b("a")].version, 5);
        assert!(m.locks.is_empty() && m.prepared.is_empty());
        // Commit again: nothing happens.
        assert_eq!(m.apply(6, TxnCmd::Commit { txn_id: 7 }), OpReply::Nil);
        assert_eq!(m.data[&b("a")].version, 5);

        assert_eq!(m.apply(7, prep(9, vec![set("c", "1")])), OpReply::Int(1));
        assert_eq!(m.apply(8, TxnCmd::Abort { txn_id: 9 }), OpReply::Ok);
        assert!(m.locks.is_empty() && m.prepared.is_empty());
        assert!(!m.data.contains_key(&b("c")));
        assert!(blocked_by_lock(&[&k], &mut m).is_none());
    }

    #[test]
    fn prepare_checks_watched_versions() {
        let mut m = Mem::default();
        m.apply(
            1,
            TxnCmd::OnePhase {
                ops: vec![set("a", "1")],
                watches: vec![],
            },
        );
        let r = m.apply(
            2,
            TxnCmd::Prepare {
                txn_id: 1,
                ops: vec![set("b", "1")],
                watches: vec![(b("a"), 0)],
            },
        );
        assert_eq!(r, OpReply::Int(0));
        assert!(m.locks.is_empty());
    }
}
