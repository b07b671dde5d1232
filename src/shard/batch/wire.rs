//! The batch engine between nodes: each turn's Raft messages for a peer
//! node, every group's together, as one-way requests on the node pair's
//! Raft stream ([`KIND_BATCH`] on [`super::super::stream`], over the framed
//! link when the peer serves one).
//!
//! **One-way.** Raft needs no answer to a message: a reply is a message of
//! its own, sent back in a later turn of the peer's loop. So a batch is
//! posted ([`Streams::post`](super::super::stream::Streams::post)): nothing
//! waits for it, the node answers nothing, and a batch lost with a broken
//! stream is lost as a network would lose it (Raft sends again: the leader
//! resends what a follower did not acknowledge, heartbeats come every
//! tick). The stream still carries the other kinds' calls, with their own
//! rules.
//!
//! **Frames.** A batch is [`WireBatch`] (`Format::BatchMessages`): a list
//! of (group id, raft-rs `Message` in its protobuf encoding). A turn's
//! messages for one peer become as many batches as keep each under
//! [`BATCH_BYTES`] (one message larger than that goes alone; an entry is
//! bounded by the proposer, so a message by [`wire::MAX_APPEND`]); the
//! stream packs them into its frames.
//!
//! **The receiving node** ([`deliver`]) decodes a batch and hands it to
//! its loop in one piece. A batch that does not decode, or names another
//! node as its receiver, is refused whole: nothing of it is stepped. The
//! loop's inbox is bounded ([`MAX_INBOX_BYTES`](super::node::MAX_INBOX_BYTES)).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use protobuf::Message as _;
use raft::prelude::Message;
use serde::{Deserialize, Serialize};

use super::node::{Handle, Transport};
use crate::shard::codec::{self, Format};
use crate::shard::network;
use crate::shard::stream::KIND_BATCH;
use crate::shard::wire;

/// A batch's payload past which no more messages join it.
pub const BATCH_BYTES: usize = wire::APPEND_BUDGET;

/// The largest snapshot sent in a message: a request of one message must
/// fit the receiving node's frame ([`wire::RAFT_FRAME_MAX`]), with room
/// for the message around the data.
pub const MAX_SNAPSHOT_MESSAGE: usize = wire::MAX_APPEND - (64 << 10);

/// How long a batch may wait on the receiving node before it is dropped
/// unstepped: past a few election timeouts its messages are stale.
pub const BATCH_TTL: Duration = Duration::from_secs(5);

/// One batch of messages for a node, as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireBatch {
    pub messages: Vec<WireMessage>,
}

/// One group's message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMessage {
    pub group: u64,
    /// raft-rs's `eraftpb.Message`, protobuf-encoded.
    pub raft: Bytes,
}

/// Why a received batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("bad batch: {0}")]
    Codec(#[from] codec::CodecError),
    #[error("bad Raft message for group {group}")]
    Message { group: u64 },
    #[error("a message for node {to} reached node {me}")]
    WrongNode { to: u64, me: u64 },
}

/// `msgs` (group id, message), all for one node, as the payloads of the
/// requests that carry them, in order.
pub fn encode(msgs: &[(u64, Message)]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut batch = WireBatch {
        messages: Vec::new(),
    };
    let mut bytes = 0usize;
    for (gid, msg) in msgs {
        let raft = match msg.write_to_bytes() {
            Ok(raw) => Bytes::from(raw),
            Err(e) => {
                // prost encodes any message it built; a failure here is a
                // bug, and Raft sends again.
                tracing::error!(group = gid, "cannot encode a Raft message: {e}");
                continue;
            }
        };
        if bytes > 0 && bytes + raft.len() > BATCH_BYTES {
            out.push(encode_batch(&batch));
            batch.messages.clear();
            bytes = 0;
        }
        bytes += raft.len();
        batch.messages.push(WireMessage { group: *gid, raft });
    }
    if !batch.messages.is_empty() {
        out.push(encode_batch(&batch));
    }
    out
}

fn encode_batch(batch: &WireBatch) -> Vec<u8> {
    // A list of integers and byte strings: postcard cannot fail on it.
    codec::encode(Format::BatchMessages, batch).expect("a message batch always encodes")
}

/// A received batch's messages, checked to be for node `me`.
pub fn decode(raw: &[u8], me: u64) -> Result<Vec<(u64, Message)>, WireError> {
    let batch: WireBatch = codec::decode(Format::BatchMessages, raw)?;
    let mut msgs = Vec::with_capacity(batch.messages.len());
    for m in batch.messages {
        let mut msg = Message::default();
        msg.merge_from_bytes(&m.raft)
            .map_err(|_| WireError::Message { group: m.group })?;
        if msg.to != me {
            return Err(WireError::WrongNode { to: msg.to, me });
        }
        msgs.push((m.group, msg));
    }
    Ok(msgs)
}

/// Hand a received batch to this node's loop. `Ok(false)`: decoded, but
/// dropped (the loop's inbox is full, or the loop is gone).
pub fn deliver<R: Send + 'static>(
    handle: &Handle<R>,
    me: u64,
    raw: &[u8],
) -> Result<bool, WireError> {
    let msgs = decode(raw, me)?;
    Ok(handle.deliver(msgs))
}

/// The loop's [`Transport`] over the node's Raft streams: one post per
/// batch, to the address the node's [`network::Transport`] knows for the
/// peer.
pub struct StreamTransport {
    network: Arc<network::Transport>,
    /// The runtime the streams' tasks run on (the loop's thread is not
    /// one of its workers).
    runtime: tokio::runtime::Handle,
}

impl StreamTransport {
    pub fn new(network: Arc<network::Transport>, runtime: tokio::runtime::Handle) -> Self {
        StreamTransport { network, runtime }
    }
}

impl Transport for StreamTransport {
    fn send(&mut self, to: u64, msgs: Vec<(u64, Message)>) {
        let Some(addr) = self.network.peer_addr(to) else {
            tracing::debug!(node = to, "no address for a peer: its messages are dropped");
            return;
        };
        let _in_runtime = self.runtime.enter();
        for payload in encode(&msgs) {
            if let Err(e) = self.network.post_raw(&addr, KIND_BATCH, payload, BATCH_TTL) {
                // Not queued: no stream could be opened. Raft sends again.
                tracing::debug!(node = to, "Raft messages not sent: {e:?}");
                return;
            }
        }
    }
}
