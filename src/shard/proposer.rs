//! Proposal batching on a group's leader: the plain writes and one-phase
//! transactions (a router's pipelined writes to one shard) waiting for the
//! group, from any number of router connections, become one Raft entry.
//!
//! A proposal joins the group's queue. At most [`MAX_RUNNING`] proposers
//! run per group; a proposal that finds fewer running starts one (a task),
//! and a proposer takes everything queued (up to [`MAX_BATCH`] proposals
//! or [`MAX_BATCH_BYTES`]), proposes it as one entry (`LogCmd::Batch` when
//! all are plain writes, `LogCmd::Mixed` otherwise; a lone one stays a
//! `LogCmd::Write` or `LogCmd::Txn`), hands each its own reply, and goes on
//! while the queue is not empty. No timer: under no load a write is
//! proposed at once; under load the batch is whatever arrived while the
//! previous proposals were in flight, so batches grow with the load.
//!
//! The state machine applies a batch's parts in order, each exactly as if
//! it were its own entry (its own lock check, its own reply); only the
//! version stamped on the keys (the entry's index) is shared.
//! An error of the whole proposal (not the leader, timeout, outcome
//! unknown) is every part's answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::oneshot;

use super::command::{LogCmd, OpReply, Proposal, TxnEntry, WriteCmd};
use super::driver::{batch_propose, Driver};
use super::types::NodeId;
use super::ShardError;

/// Proposals in flight per group at most.
pub const MAX_RUNNING: usize = 2;
/// Proposals in one entry at most.
pub const MAX_BATCH: usize = 256;
/// An entry stops growing past this many bytes of values (a single write
/// of any admitted size still goes alone).
pub const MAX_BATCH_BYTES: usize = 1 << 20;

type Reply = Result<OpReply, ShardError>;

/// Turns openraft's "forward to leader" into the node's `NotLeader` error
/// (with the leader's address as this node knows it).
pub type NotLeaderFn =
    Arc<dyn Fn(Option<NodeId>, Option<openraft::BasicNode>) -> ShardError + Send + Sync>;

/// What a proposer needs of its group.
#[derive(Clone)]
pub struct Target {
    pub driver: Driver,
    pub write_timeout: Duration,
    pub not_leader: NotLeaderFn,
    pub counters: Arc<GroupCounters>,
}

/// What a node's metrics count per group replica.
#[derive(Debug, Default)]
pub struct GroupCounters {
    /// Entries this replica proposed as leader.
    pub proposals: AtomicU64,
    /// Times the replica saw its group's leader change.
    pub leader_changes: AtomicU64,
}

#[derive(Default)]
struct State {
    queue: Vec<(Proposal, oneshot::Sender<Reply>)>,
    running: usize,
    /// [`Proposer::pause`] guards alive: while any is, writes queue up and
    /// no proposer starts or goes on to a next batch.
    paused: usize,
}

/// One group's queue of writes waiting to be proposed.
#[derive(Default)]
pub struct Proposer {
    state: Mutex<State>,
    /// Told whenever the last running proposer stops.
    idle: tokio::sync::Notify,
}

/// While alive, the group's plain writes wait in the queue; dropping it
/// starts proposers for what queued meanwhile.
pub struct Paused {
    proposer: Arc<Proposer>,
    target: Target,
}

impl Drop for Paused {
    fn drop(&mut self) {
        let starts = match self.proposer.state.lock() {
            Ok(mut s) => {
                s.paused -= 1;
                let wanted = if s.paused == 0 && !s.queue.is_empty() {
                    MAX_RUNNING.saturating_sub(s.running)
                } else {
                    0
                };
                s.running += wanted;
                wanted
            }
            Err(_) => 0,
        };
        for _ in 0..starts {
            tokio::spawn(run(self.proposer.clone(), self.target.clone()));
        }
    }
}

impl Proposer {
    /// Propose `cmd` (already admitted, on a node that believes it leads)
    /// with whatever else is waiting, and wait for its own reply.
    pub async fn submit(self: &Arc<Self>, target: &Target, cmd: WriteCmd) -> Reply {
        self.submit_proposal(target, Proposal::Write(cmd)).await
    }

    /// [`Proposer::submit`] for a one-phase transaction (already admitted).
    pub async fn submit_txn(self: &Arc<Self>, target: &Target, entry: TxnEntry) -> Reply {
        self.submit_proposal(target, Proposal::Txn(entry)).await
    }

    async fn submit_proposal(self: &Arc<Self>, target: &Target, cmd: Proposal) -> Reply {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut s = self
                .state
                .lock()
                .map_err(|_| ShardError::Unavailable("proposal queue poisoned".into()))?;
            s.queue.push((cmd, tx));
            let start = s.paused == 0 && s.running < MAX_RUNNING;
            if start {
                s.running += 1;
            }
            start
        };
        if start {
            tokio::spawn(run(self.clone(), target.clone()));
        }
        rx.await.unwrap_or_else(|_| {
            Err(ShardError::OutcomeUnknown(
                "the proposal carrying this write was abandoned".into(),
            ))
        })
    }

    /// Hold the group's plain writes back and wait until every proposal
    /// of this proposer has returned (been applied, or failed): a script
    /// that lost to plain writes too often runs against a state that no
    /// plain write changes until its own entry is applied.
    pub async fn pause(self: &Arc<Self>, target: &Target) -> Paused {
        let paused = {
            if let Ok(mut s) = self.state.lock() {
                s.paused += 1;
            }
            Paused {
                proposer: self.clone(),
                target: target.clone(),
            }
        };
        loop {
            let idle = self.idle.notified();
            if self.state.lock().map_or(true, |s| s.running == 0) {
                return paused;
            }
            idle.await;
        }
    }

    /// The next batch, or `None` (and this proposer stops) when the queue
    /// is empty or a pause holds the writes back.
    fn next_batch(&self) -> Option<Vec<(Proposal, oneshot::Sender<Reply>)>> {
        let mut s = self.state.lock().ok()?;
        if s.queue.is_empty() || s.paused > 0 {
            s.running -= 1;
            if s.running == 0 {
                self.idle.notify_waiters();
            }
            return None;
        }
        let mut bytes = 0usize;
        let mut take = 0;
        for (cmd, _) in s.queue.iter() {
            if take > 0 && (take >= MAX_BATCH || bytes >= MAX_BATCH_BYTES) {
                break;
            }
            bytes = bytes.saturating_add(cmd.value_len());
            take += 1;
        }
        Some(s.queue.drain(..take).collect())
    }
}

/// A proposer: batches until the queue is empty.
async fn run(proposer: Arc<Proposer>, target: Target) {
    while let Some(batch) = proposer.next_batch() {
        let (parts, waiters): (Vec<Proposal>, Vec<_>) = batch.into_iter().unzip();
        let n = parts.len();
        let result = propose(&target, entry_of(parts)).await;
        match result {
            Ok(OpReply::Array(replies)) if n > 1 && replies.len() == n => {
                for (w, r) in waiters.into_iter().zip(replies) {
                    let _ = w.send(Ok(r));
                }
            }
            Ok(reply) if n == 1 => {
                if let Some(w) = waiters.into_iter().next() {
                    let _ = w.send(Ok(reply));
                }
            }
            Ok(other) => {
                let e = ShardError::Storage(format!("a batch of {n} writes answered {other:?}"));
                for w in waiters {
                    let _ = w.send(Err(e.clone()));
                }
            }
            Err(e) => {
                for w in waiters {
                    let _ = w.send(Err(e.clone()));
                }
            }
        }
    }
}

/// The entry that carries `parts`: a lone part as itself, plain writes as
/// a `Batch` (the entry older nodes know), anything else as `Mixed`.
fn entry_of(mut parts: Vec<Proposal>) -> LogCmd {
    if parts.len() == 1 {
        return match parts.pop().expect("one part") {
            Proposal::Write(cmd) => LogCmd::Write(cmd),
            Proposal::Txn(entry) => LogCmd::Txn(entry),
        };
    }
    if parts.iter().all(|p| matches!(p, Proposal::Write(_))) {
        let writes = parts
            .into_iter()
            .filter_map(|p| match p {
                Proposal::Write(cmd) => Some(cmd),
                Proposal::Txn(_) => None,
            })
            .collect();
        return LogCmd::Batch(writes);
    }
    LogCmd::Mixed(parts)
}

/// Propose `entry` on the group's leader and wait for its applied result.
/// Counts the proposal and, when it succeeds, its commit time (the
/// `raft-commit` LATENCY event and histogram).
pub async fn propose(target: &Target, entry: LogCmd) -> Reply {
    target.counters.proposals.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let reply = match &target.driver {
        Driver::Openraft(raft) => {
            match tokio::time::timeout(target.write_timeout, raft.client_write(entry)).await {
                Err(_) => Err(ShardError::Timeout),
                Ok(Ok(resp)) => Ok(resp.data),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                    Err((target.not_leader)(f.leader_id, f.leader_node))
                }
                // The entry may have been appended before the failure.
                Ok(Err(e)) => Err(ShardError::OutcomeUnknown(e.to_string())),
            }
        }
        Driver::Batch(group) => {
            batch_propose(group, &entry, target.write_timeout, |leader| {
                (target.not_leader)(leader, None)
            })
            .await
        }
    };
    if reply.is_ok() {
        let took = started.elapsed();
        crate::metrics::COMMIT_SECONDS.observe(took.as_secs_f64());
        crate::metrics::node_event("raft-commit", took);
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::command::{Expiry, SetCond, TxnCmd, WriteOp};
    use bytes::Bytes;

    fn set(k: &'static str) -> Proposal {
        Proposal::Write(WriteCmd {
            now_ms: 1,
            op: WriteOp::Set {
                key: Bytes::from_static(k.as_bytes()),
                value: Bytes::from_static(b"v"),
                expiry: Expiry::Clear,
                cond: SetCond::Always,
                get: false,
            },
        })
    }

    fn pipeline() -> Proposal {
        Proposal::Txn(TxnEntry {
            now_ms: 1,
            cmd: TxnCmd::OnePhase {
                ops: Vec::new(),
                watches: Vec::new(),
            },
        })
    }

    /// Plain writes keep the entry kinds every node knows; only a batch
    /// with a transaction in it is `Mixed`.
    #[test]
    fn parts_become_the_simplest_entry_that_carries_them() {
        assert!(matches!(entry_of(vec![set("a")]), LogCmd::Write(_)));
        assert!(matches!(entry_of(vec![pipeline()]), LogCmd::Txn(_)));
        assert!(matches!(
            entry_of(vec![set("a"), set("b")]),
            LogCmd::Batch(w) if w.len() == 2
        ));
        assert!(matches!(
            entry_of(vec![set("a"), pipeline(), set("b")]),
            LogCmd::Mixed(p) if p.len() == 3 && matches!(p[1], Proposal::Txn(_))
        ));
    }
}
