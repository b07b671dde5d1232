//! The size limits of every gRPC message between nodes and routers: what a
//! node's `RaftService` and `ShardService` decode, what a router and a peer
//! node decode of the replies, and the byte budget past which a leader
//! splits an AppendEntries. Each limit is named once here, with what it is
//! matched to, so an authenticated but hostile (or broken) peer cannot make
//! a process allocate more than the largest message the cluster itself
//! makes (docs/SECURITY.md, "Message sizes").
//!
//! A message over a limit is refused by tonic before it is decoded: a unary
//! call is answered `OutOfRange`, a stream ends with that status, and
//! nothing of the message is applied.

use super::{proposer, stream};

/// Room for what surrounds the payloads: protobuf fields, codec headers,
/// openraft's log ids and votes, the other fields of a write.
pub const SLACK: usize = 1 << 20;

/// The largest encoded `ShardRequest` a router sends, matched to what a
/// node's `ShardService` has always decoded in one message (64 MiB). The
/// router answers a bigger request (a MULTI of many large values) with an
/// error before sending it ([`request_too_large`]).
pub const MAX_SHARD_REQUEST: usize = 64 << 20;

/// What a node's `ShardService` decodes in one message: a router's stream
/// frame, which stops growing past [`stream::MAX_BATCH_BYTES`] and then
/// holds one more request of at most [`MAX_SHARD_REQUEST`].
pub const SHARD_FRAME_MAX: usize = stream::MAX_BATCH_BYTES + MAX_SHARD_REQUEST + SLACK;

/// The largest Raft log entry: a proposer's batch stops growing past
/// [`proposer::MAX_BATCH_BYTES`] and then holds one more write, itself a
/// request of at most [`MAX_SHARD_REQUEST`] (a transaction is one request,
/// proposed alone).
pub const MAX_ENTRY: usize = proposer::MAX_BATCH_BYTES + MAX_SHARD_REQUEST + SLACK;

/// An AppendEntries whose encoding passes this many bytes is not sent: the
/// leader's network answers openraft `PayloadTooLarge` with the number of
/// entries that fit (at least one), and openraft sends those first. A few
/// MiB: a follower catching up gets many moderate messages, not one of
/// hundreds of MiB.
pub const APPEND_BUDGET: usize = 4 << 20;

/// The largest AppendEntries: one entry alone (more than one entry stays
/// under [`APPEND_BUDGET`], which is smaller).
pub const MAX_APPEND: usize = MAX_ENTRY + SLACK;

/// The size of the snapshot chunks a leader sends, openraft's
/// `snapshot_max_chunk_size` (set in `shard::raft_config`).
pub const SNAPSHOT_CHUNK: usize = 3 << 20;

/// The largest InstallSnapshot a node accepts: one chunk. (It arrives on
/// `RaftService`, whose decoding limit is [`RAFT_FRAME_MAX`]; a chunk over
/// this is refused after decoding, before it is buffered.)
pub const MAX_SNAPSHOT_MESSAGE: usize = SNAPSHOT_CHUNK + SLACK;

/// What a node's `RaftService` decodes in one message: a peer's stream
/// frame, which stops growing past [`stream::MAX_BATCH_BYTES`] and then
/// holds one more AppendEntries of at most [`MAX_APPEND`]. The unary calls
/// share it (a service has one limit).
pub const RAFT_FRAME_MAX: usize = stream::MAX_BATCH_BYTES + MAX_APPEND;

/// A node's reply frame stops growing past this many bytes of replies (one
/// reply of any allowed size still goes alone).
pub const REPLY_BATCH_BYTES: usize = 1 << 20;

/// How far an encoded reply may pass the reply limit the router sent
/// (`max_reply_len`, counted as RESP): the encoding's own overhead. A node
/// answers a longer reply with an error ([`reply_too_large`]).
pub const REPLY_SLACK: usize = 64 << 10;

/// What a peer decodes of a node's `RaftService` stream replies: a frame of
/// small answers (AppendEntries and Vote results, pings).
pub const RAFT_REPLY_FRAME_MAX: usize = REPLY_BATCH_BYTES + SLACK;

/// What a router decodes of a node's `ShardService` replies, when it asks
/// for replies of at most `max_reply` bytes (its `max_reply_len`, which
/// the node also caps at its own): a frame of [`REPLY_BATCH_BYTES`] plus one
/// reply.
pub fn shard_reply_frame_max(max_reply: usize) -> usize {
    max_reply
        .saturating_add(REPLY_SLACK)
        .saturating_add(REPLY_BATCH_BYTES)
        .saturating_add(SLACK)
}

/// The router's error for a request too large to send.
pub fn request_too_large(len: usize) -> String {
    format!(
        "ERR request too large: {len} bytes for one shard, at most {MAX_SHARD_REQUEST}; split the transaction or the command"
    )
}

/// The node's error for a reply longer than the caller takes. A write it
/// answers was applied.
pub fn reply_too_large(len: usize, max_reply: usize) -> String {
    format!(
        "ERR reply too large: {len} bytes, over the reply limit of {max_reply} (max-reply-len); a write it answers was applied"
    )
}

// The limits hold what the cluster makes, checked when building: a lone
// entry of the largest size fits an append, which fits a stream frame after
// a full batch; a snapshot chunk fits the service's limit; nothing is over
// 100 MiB.
const _: () = {
    assert!(MAX_APPEND > MAX_ENTRY && MAX_ENTRY > MAX_SHARD_REQUEST);
    assert!(APPEND_BUDGET < MAX_APPEND);
    assert!(RAFT_FRAME_MAX >= stream::MAX_BATCH_BYTES + MAX_APPEND);
    assert!(RAFT_FRAME_MAX > MAX_SNAPSHOT_MESSAGE);
    assert!(SHARD_FRAME_MAX >= stream::MAX_BATCH_BYTES + MAX_SHARD_REQUEST);
    assert!(RAFT_FRAME_MAX < 100 << 20 && SHARD_FRAME_MAX < 100 << 20);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_routers_reply_limit_follows_its_max_reply_len() {
        assert!(shard_reply_frame_max(64 << 20) > (64 << 20) + REPLY_BATCH_BYTES);
        assert!(shard_reply_frame_max(64 << 20) < 100 << 20);
        assert_eq!(shard_reply_frame_max(usize::MAX), usize::MAX);
    }
}
