//! The node side: shard replicas, each an openraft group over the node's one
//! RocksDB.
//!
//! * [`codec`]: every binary format (log entries, RPC payloads, stored
//!   values, Raft state rows, snapshot data) with its version byte.
//! * [`command`]: shard commands as values (the wire and log types).
//! * [`apply`]: the pure, deterministic logic that applies them;
//!   [`txn`] for transactions, [`decimal`] for INCRBYFLOAT's arithmetic.
//! * [`value`]: a stored value, and the corruption error.
//! * [`txn`]: one-phase transactions and the participant side of 2PC.
//! * [`engine`]: the RocksDB instance (column families, key layout, the
//!   group-commit writer thread). Nothing else touches RocksDB;
//!   [`row_cache`] keeps the latest bytes of recently used rows in front of it.
//! * [`batch`]: the batch engine being built to replace openraft: every
//!   group of a node driven by one raft-rs loop (not yet on the request
//!   path).
//! * [`store`]: openraft's log storage and state machine for one group;
//!   [`log_tail`] keeps the newest log entries in memory.
//! * [`network`]: Raft messages between nodes over gRPC, routed by group id.
//! * [`host`]: the replicas this node hosts; serving requests on them;
//!   [`lease`] says when a leader may answer a linearizable read alone.
//! * [`hibernate`]: idle groups stop their Raft timers; one liveness ping
//!   per node pair stands in for their heartbeats ([`hibernate_loop`] runs
//!   it).
//! * [`purger`]: background expiry on the groups this node leads.
//! * [`service`]: the gRPC services (RaftService, ShardService).
//! * [`snapshot`]: the snapshot envelope (version, checksum) and its check.
//! * [`status`]: what a node reports about its replicas.
//! * [`script`]: scripts on a leader: the request, the runner the node is
//!   given, the view a script reads and writes through.
//!
//! This layer never decides *which* replicas should exist (that is
//! `node::reconcile`), and never parses or writes RESP bytes: its replies
//! are values (`OpReply`), whose error texts are Redis's.

pub mod apply;
pub mod batch;
pub mod bitmap;
pub mod blocking;
pub mod codec;
pub mod coll;
pub mod command;
pub mod decimal;
pub mod driver;
pub mod elements;
pub mod engine;
pub mod hibernate;
pub mod hibernate_loop;
pub mod host;
pub mod lease;
pub mod link;
pub mod list;
pub mod log_tail;
pub mod network;
pub mod notify;
pub mod proposer;
pub mod pubsub;
pub mod purger;
pub mod row_cache;
pub mod script;
pub mod served;
pub mod service;
pub mod snapshot;
pub mod status;
pub mod store;
pub mod stream;
pub mod txn;
pub mod types;
pub mod value;
pub mod wire;
pub mod zset;

#[cfg(test)]
mod format_tests;
#[cfg(test)]
mod hostile_tests;

use serde::{Deserialize, Serialize};

/// Errors of the shard layer, as a router sees them. Retryable ones
/// (`NotLeader`, `UnknownGroup`) are distinct from those that end a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ShardError {
    /// This replica is not the leader; `leader` is who is, when known.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        leader: Option<u64>,
        addr: Option<String>,
    },
    /// The leader could not reach a majority.
    #[error("no quorum: {0}")]
    NoQuorum(String),
    /// The request was not answered in time; for a write the outcome is unknown.
    #[error("timed out waiting for the shard")]
    Timeout,
    /// This node does not host the group (not created yet, or dropped).
    #[error("group {0} is not hosted here")]
    UnknownGroup(u64),
    #[error("shard unavailable: {0}")]
    Unavailable(String),
    /// A write was proposed but failed before its result was known (e.g. the
    /// replica shut down): it may still commit, so it must not be resent.
    #[error("write outcome unknown: {0}")]
    OutcomeUnknown(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A stored record does not decode: reported to the client, never read
    /// as an absent key. Not retried elsewhere (the router fails closed).
    #[error("{0}")]
    Corrupt(value::Corrupt),
}

impl From<value::Corrupt> for ShardError {
    fn from(c: value::Corrupt) -> Self {
        ShardError::Corrupt(c)
    }
}

impl From<engine::EngineError> for ShardError {
    fn from(e: engine::EngineError) -> Self {
        ShardError::Storage(e.to_string())
    }
}

impl From<types::StorageError> for ShardError {
    fn from(e: types::StorageError) -> Self {
        ShardError::Storage(e.to_string())
    }
}

/// The limits the node enforces on requests, from its config.
pub fn limits(c: &crate::config::NodeConfig) -> anyhow::Result<command::Limits> {
    // INCRBYFLOAT's longest result (about 330 bytes) always fits.
    anyhow::ensure!(
        c.max_value_len >= 1024,
        "max_value_len must be at least 1024 bytes"
    );
    anyhow::ensure!(
        c.max_reply_len >= 1024,
        "max_reply_len must be at least 1024 bytes"
    );
    Ok(command::Limits {
        max_value_len: c.max_value_len,
        max_reply_len: c.max_reply_len,
    })
}

/// The batch loop's heartbeat interval and election timeout for every
/// group on a node, in its ticks: (heartbeat, election).
pub fn batch_clock(c: &crate::config::NodeConfig) -> anyhow::Result<(usize, usize)> {
    let tick = batch::BatchConfig::new(0).tick.as_millis().max(1) as u64;
    let heartbeat = c.batch_heartbeat_ms.div_ceil(tick).max(1);
    let election = c.batch_election_timeout_ms.div_ceil(tick);
    anyhow::ensure!(
        election > heartbeat,
        "batch_election_timeout_ms ({}) must be longer than batch_heartbeat_ms ({}) in ticks of {tick} ms",
        c.batch_election_timeout_ms,
        c.batch_heartbeat_ms
    );
    Ok((usize::try_from(heartbeat)?, usize::try_from(election)?))
}

/// openraft settings for every group on a node.
pub fn raft_config(c: &crate::config::NodeConfig) -> anyhow::Result<openraft::Config> {
    let cfg = openraft::Config {
        cluster_name: format!("shoal-{}", c.cluster),
        heartbeat_interval: c.heartbeat_ms,
        election_timeout_min: c.election_timeout_min_ms,
        election_timeout_max: c.election_timeout_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(c.snapshot_threshold),
        max_in_snapshot_log_to_keep: c.snapshot_keep_logs,
        install_snapshot_timeout: 5_000,
        snapshot_max_chunk_size: wire::SNAPSHOT_CHUNK as u64,
        ..Default::default()
    };
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("invalid raft settings: {e}"))
}

#[cfg(test)]
mod config_tests {
    use crate::config::NodeConfig;

    #[test]
    fn node_limits_come_from_the_config_and_tiny_ones_are_refused() {
        assert_eq!(
            crate::shard::limits(&NodeConfig::default()).unwrap(),
            crate::shard::command::Limits::default()
        );
        let tiny = NodeConfig {
            max_value_len: 100,
            ..NodeConfig::default()
        };
        assert!(crate::shard::limits(&tiny).is_err());
        assert!(crate::shard::raft_config(&NodeConfig::default()).is_ok());
    }

    /// The batch loop's clock: the defaults are its own (100 ms
    /// heartbeats, 500 ms elections in 50 ms ticks), others round up to
    /// ticks, and an election no longer than a heartbeat is refused.
    #[test]
    fn the_batch_clock_comes_from_the_config_in_ticks() {
        use crate::shard::batch_clock;
        assert_eq!(batch_clock(&NodeConfig::default()).unwrap(), (2, 10));
        let slow = NodeConfig {
            batch_heartbeat_ms: 2_000,
            batch_election_timeout_ms: 6_010,
            ..NodeConfig::default()
        };
        assert_eq!(batch_clock(&slow).unwrap(), (40, 121));
        let bad = NodeConfig {
            batch_heartbeat_ms: 500,
            batch_election_timeout_ms: 480,
            ..NodeConfig::default()
        };
        assert!(batch_clock(&bad).is_err());
    }
}
