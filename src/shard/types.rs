//! openraft type configuration shared by every shard group.

use std::io::Cursor;

use super::command::{LogCmd, OpReply};

openraft::declare_raft_types!(
    /// One shard group: log entries carry [`LogCmd`]s, applying one yields an [`OpReply`].
    /// Leader ids are openraft's default ("advanced", `(term, node)`), the
    /// same shape 0.9 stored, so logs and votes written by 0.9 read as they are.
    pub TypeConfig:
        D = LogCmd,
        R = OpReply,
);

/// What a snapshot is held in while it is built, sent and installed.
pub type SnapshotBytes = Cursor<Vec<u8>>;
pub type NodeId = u64;
pub type Node = openraft::BasicNode;
/// What a replica's Raft publishes about itself (state, vote, leader...).
pub type Metrics =
    openraft::type_config::alias::WatchReceiverOf<TypeConfig, openraft::RaftMetrics<TypeConfig>>;
pub type Payload = openraft::EntryPayload<LogCmd, NodeId, Node>;
pub type Entry = openraft::Entry<CommittedLeaderId, Payload>;
/// `(term, node)`: in openraft's "advanced" mode the committed leader id
/// is the leader id itself.
pub type LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, NodeId>;
pub type CommittedLeaderId = LeaderId;
pub type LogId = openraft::LogId<CommittedLeaderId>;
pub type Vote = openraft::Vote<LeaderId>;
/// What shoal's storage code returns: openraft 0.10's storage traits take
/// plain I/O errors.
pub type StorageError = std::io::Error;
pub type StoredMembership = openraft::StoredMembership<CommittedLeaderId, NodeId, Node>;
pub type SnapshotMeta = openraft::SnapshotMeta<CommittedLeaderId, NodeId, Node>;
pub type Snapshot = openraft::Snapshot<CommittedLeaderId, NodeId, Node, SnapshotBytes>;

/// The log id of entry `index` written by `node`'s leadership in `term`.
pub fn log_id(term: u64, node: NodeId, index: u64) -> LogId {
    LogId::new(
        LeaderId {
            term,
            node_id: node,
        },
        index,
    )
}
