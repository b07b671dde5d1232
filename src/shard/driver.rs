//! What drives a replica's Raft group: an openraft instance of its own, or
//! the node's batch-engine loop (`super::batch`), which drives every batch
//! group of the node together. A table's descriptor says which
//! ([`RaftEngine`]); a replica never changes engine.
//!
//! This module owns the few questions the node asks of either engine the
//! same way: propose an entry, who leads. What each engine does its own
//! way (membership changes and leadership transfer, `Host::change_membership`;
//! openraft's hibernation and metrics) matches on the [`Driver`].

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;

use super::batch::{self, ProposeError, Role};
use super::command::{LogCmd, OpReply};
use super::store::Raft;
use super::types::NodeId;
use super::ShardError;
use crate::config::RaftEngine;

/// A replica's Raft group; cheap to clone.
#[derive(Clone)]
pub enum Driver {
    Openraft(Raft),
    Batch(BatchGroup),
}

/// A group on the node's batch-engine loop.
#[derive(Clone)]
pub struct BatchGroup {
    pub gid: u64,
    /// This node.
    pub me: NodeId,
    pub handle: batch::Handle<OpReply>,
    /// Who leads, as the loop last saw it.
    pub role: Arc<Role>,
}

impl BatchGroup {
    /// Why this replica stopped, if it has: an error of its own (an entry
    /// it could not apply), or its node's loop stopping (a failed log
    /// write: every replica on it stops). It takes no part in its group
    /// until the node restarts.
    pub fn stopped(&self) -> Option<String> {
        if let Some(why) = self.role.stopped.get() {
            return Some(why.clone());
        }
        self.handle
            .stats()
            .stopped
            .get()
            .map(|why| format!("the node's batch Raft loop stopped: {why}"))
    }
}

impl Driver {
    pub fn engine(&self) -> RaftEngine {
        match self {
            Driver::Openraft(_) => RaftEngine::Openraft,
            Driver::Batch(_) => RaftEngine::Batch,
        }
    }

    /// Whether this replica leads its group, as it last knew.
    pub fn leads(&self) -> bool {
        match self {
            Driver::Openraft(raft) => raft.metrics().borrow_watched().state.is_leader(),
            Driver::Batch(g) => g.role.leader() == Some(g.me),
        }
    }

    /// The last index applied here.
    pub fn applied(&self) -> u64 {
        match self {
            Driver::Openraft(raft) => raft
                .metrics()
                .borrow_watched()
                .last_applied
                .map_or(0, |l| l.index),
            Driver::Batch(g) => g.role.applied.load(std::sync::atomic::Ordering::Acquire),
        }
    }

    /// Stop the group on this node (node shutdown, or its replica's
    /// removal: a batch group leaves its loop once every log write queued
    /// for it is on disk).
    pub async fn shutdown(&self) {
        match self {
            Driver::Openraft(raft) => {
                let _ = raft.shutdown().await;
            }
            Driver::Batch(g) => {
                g.handle.close_group(g.gid).await;
            }
        }
    }

    pub fn openraft(&self) -> Option<&Raft> {
        match self {
            Driver::Openraft(raft) => Some(raft),
            Driver::Batch(_) => None,
        }
    }
}

/// How a batch group's proposal (an entry, a configuration change, a
/// transfer) ended, as the node's errors say it. `not_leader` names the
/// leader with its address.
pub fn batch_result<T>(
    result: Result<Result<T, ProposeError>, tokio::time::error::Elapsed>,
    not_leader: impl FnOnce(Option<NodeId>) -> ShardError,
) -> Result<T, ShardError> {
    match result {
        Err(_) => Err(ShardError::Timeout),
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(ProposeError::NotLeader { leader })) => Err(not_leader(leader)),
        // Never queued: nothing can be applied.
        Ok(Err(ProposeError::NoGroup(gid))) => Err(ShardError::UnknownGroup(gid)),
        // Refused, or replaced by a new leader's entry at its index: it
        // was never applied and never will be, so it may be sent again.
        Ok(Err(ProposeError::Dropped)) => Err(ShardError::Unavailable(
            "the proposal was dropped by a change of leader; it was not applied".into(),
        )),
        // Never proposed.
        Ok(Err(ProposeError::Refused(why))) => Err(ShardError::Unavailable(why)),
        Ok(Err(e @ ProposeError::GroupStopped(..))) => Err(ShardError::Unavailable(e.to_string())),
        // Queued, then the loop stopped or the group closed: it may still
        // commit on the other replicas.
        Ok(Err(e @ ProposeError::Stopped(_))) => Err(ShardError::OutcomeUnknown(e.to_string())),
    }
}

/// Propose `entry` on a batch group and wait for its applied reply.
pub async fn batch_propose(
    group: &BatchGroup,
    entry: &LogCmd,
    timeout: Duration,
    not_leader: impl FnOnce(Option<NodeId>) -> ShardError,
) -> Result<OpReply, ShardError> {
    let data = batch::encode_command(entry).map_err(|e| ShardError::Storage(e.to_string()))?;
    let result = tokio::time::timeout(timeout, group.handle.propose(group.gid, data)).await;
    batch_result(result, not_leader)
}

/// How a batch group's linearizable read point ended ([`batch::Handle::read`]).
pub async fn batch_read(
    group: &BatchGroup,
    timeout: Duration,
    not_leader: impl FnOnce(Option<NodeId>) -> ShardError,
) -> Result<(), ShardError> {
    match tokio::time::timeout(timeout, group.handle.read(group.gid)).await {
        Err(_) => Err(ShardError::Timeout),
        Ok(Ok(())) => Ok(()),
        Ok(Err(ProposeError::NotLeader { leader })) => Err(not_leader(leader)),
        Ok(Err(ProposeError::NoGroup(gid))) => Err(ShardError::UnknownGroup(gid)),
        // A read changes nothing: any failure may be retried.
        Ok(Err(e)) => Err(ShardError::Unavailable(e.to_string())),
    }
}
