//! The batch engine: every Raft group of a node driven by one loop, so that
//! the groups share their rounds.
//!
//! **Why.** Each shard replica is its own openraft group today, and
//! openraft runs each group as its own tasks with its own log writes,
//! messages and applies: a round costs the same whether it carries one
//! write or twenty, and eight shards cost eight rounds where one would do.
//! Measured, the default table of 8 shards spends 234 µs of CPU per SET
//! against 97 µs for one shard taking the same load (docs/PERFORMANCE.md,
//! "Where a round's CPU goes"). openraft's engine is private, so one loop
//! cannot drive many of its groups. raft-rs (TiKV's Raft) is built to be
//! driven that way: its `RawNode` does no I/O and hands back what to
//! write, send and apply.
//!
//! **What this module owns.**
//! * [`node`]: the loop. One thread per node steps every group; one turn
//!   makes one log write with one sync for all groups, one send per peer
//!   node for all groups' messages, one applier call for all groups'
//!   committed entries, and one ReadIndex round per group for the
//!   linearizable reads that came in it.
//! * [`apply`]: the applier of shard groups, over the same state machine
//!   openraft groups use.
//! * [`log`]: a group's Raft log, hard state and configuration, kept in
//!   memory and in the node's RocksDB ([`Engine`](super::engine::Engine),
//!   the same column families as the openraft groups).
//! * [`wire`]: each turn's messages for a peer node as one-way batches on
//!   the node pair's Raft stream, and their delivery on the receiving node.
//!
//! **Status.** Being built in steps (docs/ARCHITECTURE.md, "The batch
//! engine", has the plan). Built and tested with real RocksDB, real
//! threads and real TCP links: the loop, the shard applier, linearizable
//! reads, the wire between nodes, log compaction and snapshots (on a
//! chunked channel of their own). `bench/batch` measures its SETs and
//! GETs beside openraft's at 1, 3 and 8 groups, in process and over
//! sockets. Tables created with `ENGINE batch` run on it (the node's
//! side is `shard::driver`), and take replica moves and leadership
//! transfers (raft-rs configuration changes, `Handle::change_membership`
//! and `Handle::transfer_leader`); their idle groups hibernate (the
//! loop's own, `node`'s module doc).

pub mod apply;
pub mod log;
pub mod node;
pub mod wire;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod wire_tests;

pub use apply::{encode_command, ShardApplier};
pub use log::GroupLog;
pub use node::{
    start, Applier, BatchConfig, GroupReplies, GroupStatus, Handle, Membership, ProposeError, Role,
    SnapshotJob, Stats, Transport,
};

use std::fmt::Write as _;

use super::engine::EngineError;

/// Errors of the batch engine's storage and applier. Any of them stops the
/// node's loop: it fails closed rather than run on data it cannot trust.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// An entry that does not decode.
    #[error("corrupt log entry: {0}")]
    Corrupt(String),
    /// The state machine could not open or apply.
    #[error("state machine: {0}")]
    Apply(String),
}

/// raft-rs logs through slog; this drain forwards its records to
/// `tracing`, with their key-value pairs in the message.
pub(crate) struct ToTracing;

struct KvText(String);

impl slog::Serializer for KvText {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments) -> slog::Result {
        let _ = write!(self.0, ", {key}: {val}");
        Ok(())
    }
}

impl slog::Drain for ToTracing {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        let level = match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::Level::ERROR,
            slog::Level::Warning => tracing::Level::WARN,
            slog::Level::Info => tracing::Level::INFO,
            slog::Level::Debug => tracing::Level::DEBUG,
            slog::Level::Trace => tracing::Level::TRACE,
        };
        // Format only what a subscriber will keep.
        let enabled = match level {
            tracing::Level::ERROR => tracing::enabled!(target: "raft", tracing::Level::ERROR),
            tracing::Level::WARN => tracing::enabled!(target: "raft", tracing::Level::WARN),
            tracing::Level::INFO => tracing::enabled!(target: "raft", tracing::Level::INFO),
            tracing::Level::DEBUG => tracing::enabled!(target: "raft", tracing::Level::DEBUG),
            _ => tracing::enabled!(target: "raft", tracing::Level::TRACE),
        };
        if !enabled {
            return Ok(());
        }
        let mut kv = KvText(String::new());
        let _ = slog::KV::serialize(&record.kv(), record, &mut kv);
        let _ = slog::KV::serialize(values, record, &mut kv);
        let msg = record.msg();
        let kv = kv.0;
        match level {
            tracing::Level::ERROR => tracing::error!(target: "raft", "{msg}{kv}"),
            tracing::Level::WARN => tracing::warn!(target: "raft", "{msg}{kv}"),
            tracing::Level::INFO => tracing::info!(target: "raft", "{msg}{kv}"),
            tracing::Level::DEBUG => tracing::debug!(target: "raft", "{msg}{kv}"),
            _ => tracing::trace!(target: "raft", "{msg}{kv}"),
        }
        Ok(())
    }
}
