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
//!
//! **Snapshots** have a channel of their own, so that a large one never
//! holds up the stream: [`StreamTransport::send_snapshot`] sends the
//! message without its data first, then the data, in chunks of
//! [`wire::SNAPSHOT_CHUNK`], one `RaftService.BatchSnapshot` call each
//! ([`SnapshotChunk`]), and tells the loop whether the whole went. The
//! receiving node checks each chunk as openraft groups' snapshots are
//! checked (offsets in order, the size limit, the envelope's checksum at
//! the end: [`super::super::snapshot::Receiver`]), keeps the bytes
//! ([`Incoming`]), and hands the whole message to its loop once the last
//! chunk checks out.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use protobuf::Message as _;
use raft::prelude::Message;
use serde::{Deserialize, Serialize};

use super::node::{Handle, SnapshotDone, Transport};
use crate::shard::codec::{self, Format};
use crate::shard::network;
use crate::shard::stream::KIND_BATCH;
use crate::shard::wire;

/// A batch's payload past which no more messages join it.
pub const BATCH_BYTES: usize = wire::APPEND_BUDGET;

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

/// One chunk of a snapshot, as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// Names the snapshot: every chunk of one carries the same.
    pub id: String,
    /// Where `data` starts in the snapshot's data.
    pub offset: u64,
    /// The last chunk.
    pub done: bool,
    /// At offset 0: the raft-rs message carrying the snapshot, without its
    /// data (protobuf); empty in later chunks.
    pub message: Bytes,
    pub data: Bytes,
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
    #[error("snapshot refused: {0}")]
    Snapshot(String),
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

/// Snapshots received at once by a node, at most: with the size limit of
/// each, what bounds the memory they hold (a peer could otherwise start
/// one for every group id there is).
pub const MAX_INCOMING: usize = 8;

/// A snapshot that has had no chunk for this long is given up when room
/// is needed for another (its sender died, or gave up on it).
const INCOMING_STALE: Duration = Duration::from_secs(60);

/// Snapshots being received by a node, one per group, at most
/// [`MAX_INCOMING`]: the chunks so far (checked by
/// [`Receiver`](crate::shard::snapshot::Receiver)) and the message they
/// belong to.
#[derive(Default)]
pub struct Incoming {
    checks: crate::shard::snapshot::Receiver,
    parts: std::sync::Mutex<std::collections::HashMap<u64, Part>>,
}

/// A snapshot being received.
struct Part {
    id: String,
    msg: Message,
    data: Vec<u8>,
    /// When its last chunk came.
    last: std::time::Instant,
}

impl Incoming {
    /// Take one chunk (`raw`, a [`SnapshotChunk`]) of a snapshot of group
    /// `gid` for node `me`, whose data may be at most `limit` bytes. The
    /// whole message once its last chunk checks out; an error drops the
    /// group's snapshot (the sender starts again from the first chunk).
    pub fn chunk(
        &self,
        gid: u64,
        me: u64,
        raw: &[u8],
        limit: u64,
    ) -> Result<Option<Message>, WireError> {
        let chunk: SnapshotChunk = codec::decode(Format::BatchSnapshotChunk, raw)?;
        let mut parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        if chunk.offset == 0 && !parts.contains_key(&gid) && parts.len() >= MAX_INCOMING {
            parts.retain(|_, p| p.last.elapsed() < INCOMING_STALE);
            if parts.len() >= MAX_INCOMING {
                return Err(WireError::Snapshot(format!(
                    "{MAX_INCOMING} snapshots are being received already"
                )));
            }
        }
        let checked =
            self.checks
                .chunk(gid, &chunk.id, chunk.offset, &chunk.data, chunk.done, limit);
        let complete = match checked {
            Ok(c) => c == crate::shard::snapshot::Chunk::Complete,
            Err(e) => {
                parts.remove(&gid);
                return Err(WireError::Snapshot(e.to_string()));
            }
        };
        if chunk.offset == 0 {
            let mut msg = Message::default();
            let refused = if msg.merge_from_bytes(&chunk.message).is_err() {
                Some(WireError::Message { group: gid })
            } else if msg.to != me {
                Some(WireError::WrongNode { to: msg.to, me })
            } else {
                None
            };
            if let Some(e) = refused {
                parts.remove(&gid);
                return Err(e);
            }
            let part = Part {
                id: chunk.id.clone(),
                msg,
                data: Vec::new(),
                last: std::time::Instant::now(),
            };
            parts.insert(gid, part);
        }
        let Some(part) = parts.get_mut(&gid) else {
            return Err(WireError::Snapshot("a chunk of no snapshot".into()));
        };
        if part.id != chunk.id {
            // The checks above refuse it first; kept as a guard.
            parts.remove(&gid);
            return Err(WireError::Snapshot("a chunk of another snapshot".into()));
        }
        part.data.extend_from_slice(&chunk.data);
        part.last = std::time::Instant::now();
        if !complete {
            return Ok(None);
        }
        let Part { mut msg, data, .. } = parts.remove(&gid).expect("looked up above");
        if let Some(s) = msg.snapshot.as_mut() {
            s.data = data;
        }
        Ok(Some(msg))
    }
}

/// How long one snapshot chunk may take to be received.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

/// The loop's [`Transport`] over the node's Raft streams: one post per
/// batch, to the address the node's [`network::Transport`] knows for the
/// peer; snapshots in chunks, one call each, on the node's gRPC channel.
pub struct StreamTransport {
    network: Arc<network::Transport>,
    /// The runtime the streams' tasks run on (the loop's thread is not
    /// one of its workers).
    runtime: tokio::runtime::Handle,
    /// Bytes of snapshot data per call.
    chunk: usize,
}

impl StreamTransport {
    pub fn new(network: Arc<network::Transport>, runtime: tokio::runtime::Handle) -> Self {
        StreamTransport {
            network,
            runtime,
            chunk: wire::SNAPSHOT_CHUNK,
        }
    }

    /// Snapshot data sent `chunk` bytes per call (tests: many chunks).
    pub fn with_snapshot_chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk.max(1);
        self
    }
}

/// Send `msg`'s snapshot to the node at `addr` as [`SnapshotChunk`]s.
async fn send_snapshot(
    network: Arc<network::Transport>,
    addr: String,
    gid: u64,
    mut msg: Message,
    chunk: usize,
) -> Result<(), String> {
    use crate::proto::raft_service_client::RaftServiceClient;
    let data = msg
        .snapshot
        .as_mut()
        .map(|s| std::mem::take(&mut s.data))
        .unwrap_or_default();
    let meta = msg.snapshot.as_ref().and_then(|s| s.metadata.clone());
    let (index, term) = meta.map_or((0, 0), |m| (m.index, m.term));
    let id = format!(
        "{gid}-{index}-{term}-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let head = Bytes::from(msg.write_to_bytes().map_err(|e| e.to_string())?);
    let channel = network.channel(&addr)?;
    let mut client = RaftServiceClient::new(channel)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(wire::RAFT_REPLY_FRAME_MAX);
    let data = Bytes::from(data);
    let mut offset = 0usize;
    loop {
        let end = (offset + chunk).min(data.len());
        let done = end == data.len();
        let piece = SnapshotChunk {
            id: id.clone(),
            offset: offset as u64,
            done,
            message: if offset == 0 {
                head.clone()
            } else {
                Bytes::new()
            },
            data: data.slice(offset..end),
        };
        let payload =
            codec::encode(Format::BatchSnapshotChunk, &piece).map_err(|e| e.to_string())?;
        let call = client.batch_snapshot(crate::proto::RaftMessage {
            group_id: gid,
            payload,
        });
        match tokio::time::timeout(CHUNK_TIMEOUT, call).await {
            Ok(Ok(_)) => {}
            Ok(Err(status)) => return Err(status.message().to_string()),
            Err(_) => return Err("a chunk took too long".into()),
        }
        if done {
            return Ok(());
        }
        offset = end;
    }
}

impl Transport for StreamTransport {
    fn send(&mut self, to: u64, msgs: Vec<(u64, Message)>) -> usize {
        let Some(addr) = self.network.peer_addr(to) else {
            tracing::debug!(node = to, "no address for a peer: its messages are dropped");
            return 0;
        };
        let _in_runtime = self.runtime.enter();
        let mut sent = 0;
        for payload in encode(&msgs) {
            let len = payload.len();
            if let Err(e) = self.network.post_raw(&addr, KIND_BATCH, payload, BATCH_TTL) {
                // Not queued: no stream could be opened. Raft sends again.
                tracing::debug!(node = to, "Raft messages not sent: {e:?}");
                return sent;
            }
            sent += len;
        }
        sent
    }

    fn send_snapshot(&mut self, to: u64, gid: u64, msg: Message, done: SnapshotDone) {
        let Some(addr) = self.network.peer_addr(to) else {
            tracing::warn!(node = to, gid, "no address for a peer: snapshot not sent");
            return done(false);
        };
        let (network, chunk) = (self.network.clone(), self.chunk);
        self.runtime.spawn(async move {
            match send_snapshot(network, addr, gid, msg, chunk).await {
                Ok(()) => done(true),
                Err(e) => {
                    tracing::warn!(node = to, gid, "snapshot not sent: {e}");
                    done(false)
                }
            }
        });
    }
}
