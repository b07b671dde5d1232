//! What a node reports about itself and its replicas (`ShardService.Status`),
//! read by routers (is there a leader yet?) and by `shoal status`.

use openraft::async_runtime::WatchReceiver;
use serde::{Deserialize, Serialize};

use super::host::Host;

/// Transactions this node's leaders resolved after their coordinator
/// disappeared (counted by `node::txn_recovery`, reported in the status).
pub static TXN_RECOVERED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Dead collections (key generations) whose element rows this node's
/// collector removed, one per replica (counted by
/// `purger::spawn_element_collector`, reported in the status).
pub static COLLECTIONS_COLLECTED: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: u64,
    pub groups: Vec<GroupStatus>,
    /// Transactions this node's leaders resolved after their coordinator
    /// disappeared (since the node started).
    #[serde(default)]
    pub txn_recovered: u64,
    /// Dead collections (deleted, overwritten, expired or flushed) whose
    /// element rows this node's collector removed since it started, one per
    /// replica that removed them.
    #[serde(default)]
    pub collections_collected: u64,
    /// Waits of blocked clients this node's replicas hold now.
    #[serde(default)]
    pub blocked_waits: u64,
    /// The node's LATENCY events (`fsync`, `raft-commit`) of 1 ms or more.
    #[serde(default)]
    pub latency: std::collections::BTreeMap<String, crate::metrics::EventLog>,
    /// When this node read its replicas' `served` counts, on its own clock
    /// (all zero from a node that does not say).
    #[serde(default)]
    pub counted_at: super::served::CountedAt,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupStatus {
    pub group_id: u64,
    pub table: String,
    pub shard: u32,
    /// "leader", "follower", "candidate", "learner" or "shutdown".
    pub role: String,
    pub leader: Option<u64>,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    /// On the leader: each replica's matched log index.
    pub replication: Vec<(u64, u64)>,
    /// Voters of the group's effective membership (as this replica knows it).
    #[serde(default)]
    pub voters: Vec<u64>,
    /// Learners (replicas being added) of that membership.
    #[serde(default)]
    pub learners: Vec<u64>,
    /// The membership is a joint configuration (a change half way).
    #[serde(default)]
    pub joint: bool,
    /// The group hibernates on this replica (`shard::hibernate`).
    #[serde(default)]
    pub hibernating: bool,
    /// Set when no readable record in etcd names this replica: it is kept
    /// (never deleted on absence) and this says why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orphaned: Option<String>,
    /// Requests this replica served since it started, and their time
    /// (`super::served`).
    #[serde(default)]
    pub served: super::served::ServedCounts,
    /// Set when the replica's Raft stopped on a fatal error (a storage
    /// error; on the batch engine also its node's loop stopping): why. It
    /// takes no part in its group until the node restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// A batch group's status, from what its loop publishes
/// ([`super::batch::Role`]: its configuration as last applied here, its
/// log's end and, on a leader, each replica's matched index as of the
/// loop's last tick).
fn batch_status(
    host: &Host,
    r: &super::host::Replica,
    g: &super::driver::BatchGroup,
) -> GroupStatus {
    use std::sync::atomic::Ordering::Acquire;
    let leader = g.role.leader();
    let applied = g.role.applied.load(Acquire);
    let m = g.role.membership();
    let me = host.node_id;
    let stopped = g.stopped();
    let role = if stopped.is_some() {
        "shutdown"
    } else if leader == Some(me) {
        "leader"
    } else if m.learners.contains(&me) {
        "learner"
    } else {
        "follower"
    };
    let mut voters = m.voters.clone();
    for v in &m.outgoing {
        if !voters.contains(v) {
            voters.push(*v);
        }
    }
    GroupStatus {
        voters,
        learners: m.learners.clone(),
        joint: m.joint(),
        hibernating: g.role.asleep.load(Acquire),
        orphaned: host.kept_reason(r.record.group_id),
        served: r.served.counts(),
        stopped,
        group_id: r.record.group_id,
        table: r.record.table.clone(),
        shard: r.record.shard,
        role: role.into(),
        leader,
        term: g.role.term.load(Acquire),
        last_log_index: g.role.last_index.load(Acquire).max(applied),
        applied_index: applied,
        replication: g.role.progress(),
    }
}

/// Status of the requested groups (all when `gids` is empty).
pub fn node_status(host: &Host, gids: &[u64]) -> NodeStatus {
    let counted_at =
        super::served::CountedAt::new(host.hibernation.boot, host.hibernation.uptime());
    let groups = host
        .replicas()
        .into_iter()
        .filter(|r| gids.is_empty() || gids.contains(&r.record.group_id))
        .map(|r| {
            let raft = match &r.driver {
                super::driver::Driver::Openraft(raft) => raft,
                super::driver::Driver::Batch(g) => return batch_status(host, &r, g),
            };
            let m = raft.metrics().borrow_watched().clone();
            let membership = m.membership_config.membership();
            GroupStatus {
                voters: membership.voter_ids().collect(),
                learners: membership.learner_ids().collect(),
                joint: membership.get_joint_config().len() > 1,
                hibernating: r.sleep.is_asleep(),
                orphaned: host.kept_reason(r.record.group_id),
                served: r.served.counts(),
                stopped: m.running_state.as_ref().err().map(|e| e.to_string()),
                group_id: r.record.group_id,
                table: r.record.table.clone(),
                shard: r.record.shard,
                role: format!("{:?}", m.state).to_lowercase(),
                leader: m.current_leader,
                term: m.current_term,
                last_log_index: m.last_log_index.unwrap_or(0),
                applied_index: m.last_applied.map_or(0, |l| l.index),
                replication: m
                    .replication
                    .map(|r| {
                        r.iter()
                            .map(|(id, l)| (*id, l.map_or(0, |l| l.index)))
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect();
    NodeStatus {
        node_id: host.node_id,
        groups,
        txn_recovered: TXN_RECOVERED.load(std::sync::atomic::Ordering::Relaxed),
        collections_collected: COLLECTIONS_COLLECTED.load(std::sync::atomic::Ordering::Relaxed),
        blocked_waits: host
            .replicas()
            .iter()
            .map(|r| r.sm.waiters().len() as u64)
            .sum(),
        latency: crate::metrics::NODE_EVENTS.snapshot(),
        counted_at,
    }
}
