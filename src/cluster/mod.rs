//! The router's side of the cluster: slots, the routing view mirrored from
//! etcd, the client that sends shard requests to leaders, and table
//! administration (creation, bootstrap of `default`).
//!
//! Owns no durable state: everything here can be rebuilt from etcd.

pub mod admin;
pub mod client;
pub mod plan;
pub mod rebalance;
pub mod routes;
pub mod txn;

use crate::meta::MetaError;

/// Errors of the routing layer, each mapped to one RESP error prefix.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    /// No leader or no majority within the request deadline.
    #[error("CLUSTERDOWN shard {group} of table {table} has no quorum")]
    NoQuorum { group: u64, table: String },
    /// A write was sent but no answer came within the deadline: the shard
    /// may have lost its majority, and the write may still commit later
    /// (for instance after a partition heals), so its outcome is unknown.
    #[error(
        "CLUSTERDOWN shard {group} of table {table} has no quorum: the write timed out \
         and may or may not have been applied"
    )]
    WriteTimedOut { group: u64, table: String },
    /// No replica could be reached by the request deadline, and TLS says
    /// why (`why`: one sentence naming a node, what failed and the fix).
    #[error("CLUSTERDOWN shard {group} of table {table} is unreachable: {why}")]
    Unreachable {
        group: u64,
        table: String,
        why: String,
    },
    /// Transient; the client should retry.
    #[error("TRYAGAIN {0}")]
    TryAgain(String),
    #[error("ERR unknown table '{0}'")]
    UnknownTable(String),
    /// The table's record in etcd does not decode: not served until an
    /// operator fixes it (`shoal status` shows it).
    #[error("CLUSTERDOWN the metadata record of table '{name}' is unreadable ({error}); see shoal status")]
    UnreadableTable { name: String, error: String },
    #[error("ERR table '{name}' is {state}, not available")]
    TableNotAvailable { name: String, state: &'static str },
    #[error("ERR {0}")]
    Invalid(String),
    #[error("ERR metadata: {0}")]
    Meta(#[from] MetaError),
    #[error("ERR internal: {0}")]
    Internal(String),
    /// A shard met a record it cannot decode (`ERR corrupt data at group
    /// <g> key <k>`): reported as is, never retried.
    #[error("{0}")]
    Corrupt(crate::shard::value::Corrupt),
    /// A shard refused a transaction step with this error reply (its
    /// text, prefix included), e.g. a value over the node's size limit.
    #[error("{0}")]
    Refused(String),
}

impl ClusterError {
    /// The RESP error text (prefix word included).
    pub fn resp_message(&self) -> String {
        self.to_string()
    }
}
