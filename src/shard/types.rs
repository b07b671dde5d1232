//! openraft type configuration shared by every shard group.

use std::io::Cursor;

use super::command::{LogCmd, OpReply};

openraft::declare_raft_types!(
    /// One shard group: log entries carry [`LogCmd`]s, applying one yields an [`OpReply`].
    pub TypeConfig:
        D = LogCmd,
        R = OpReply,
);

pub type NodeId = u64;
pub type Node = openraft::BasicNode;
pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
