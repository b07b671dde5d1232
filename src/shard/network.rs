//! Raft transport between nodes: one gRPC connection per peer, shared by
//! every group, and on it one stream ([`Streams`]) that carries every
//! group's AppendEntries and Vote in batched frames; snapshots keep their own
//! unary calls.
//!
//! [`Transport`] is node-wide: it knows each peer's address (kept fresh from
//! etcd's member list) and holds one lazily connected tonic channel per
//! address. Each group gets a [`NetworkFactory`] that stamps its group id on
//! every message, so the peer's single `RaftService` can dispatch it.
//! Messages are openraft's own request/response types, each in its own
//! versioned [`codec`] format (`Format::RaftAppend`, ...). Each
//! AppendEntries a peer accepts is reported, with the time it was sent, to
//! the group's [`Lease`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;

use super::codec::{self, Format};
use super::lease::Lease;
use super::stream::{CallError, Service, Streams, KIND_APPEND, KIND_VOTE};
use super::types::{Node, NodeId, TypeConfig};
use super::wire;
use crate::proto::raft_service_client::RaftServiceClient;
use crate::proto::{RaftMessage, StreamRequest};
use crate::tls::ClusterTls;

/// Peer addresses and one channel per address, shared by all groups of a
/// node, and over each channel one Raft stream that carries every group's
/// AppendEntries and Vote ([`Streams`]).
pub struct Transport {
    /// Advertised address → address actually dialled (`dial_via`).
    dial_via: HashMap<String, String>,
    peers: RwLock<HashMap<NodeId, String>>,
    channels: RwLock<HashMap<String, Channel>>,
    raft: Streams,
    /// Mutual TLS on every channel (`--cluster-tls-*`); plaintext when
    /// `None`.
    tls: Option<ClusterTls>,
}

impl Default for Transport {
    fn default() -> Transport {
        Transport {
            dial_via: HashMap::new(),
            peers: RwLock::default(),
            channels: RwLock::default(),
            raft: Streams::new(Service::Raft, wire::RAFT_REPLY_FRAME_MAX),
            tls: None,
        }
    }
}

impl Transport {
    pub fn new() -> Arc<Transport> {
        Arc::new(Transport::default())
    }

    /// A transport that dials `to` whenever it is asked for `from`, over
    /// mutual TLS when `tls` is given.
    pub fn with(
        dial_via: impl IntoIterator<Item = (String, String)>,
        tls: Option<ClusterTls>,
    ) -> Arc<Transport> {
        Arc::new(Transport {
            dial_via: dial_via.into_iter().collect(),
            tls,
            ..Transport::default()
        })
    }

    /// Record (or correct) where a node listens.
    pub fn set_peer(&self, id: NodeId, addr: String) {
        if let Ok(mut peers) = self.peers.write() {
            peers.insert(id, addr);
        }
    }

    pub fn peer_addr(&self, id: NodeId) -> Option<String> {
        self.peers.read().ok()?.get(&id).cloned()
    }

    /// Every known peer and its address.
    pub fn peers(&self) -> Vec<(NodeId, String)> {
        self.peers
            .read()
            .map(|p| p.iter().map(|(id, a)| (*id, a.clone())).collect())
            .unwrap_or_default()
    }

    /// Send one message of `kind` (for group `gid`, 0 for the node) to
    /// the node at `addr` on the Raft stream, and wait up to `ttl` for the
    /// raw reply.
    pub async fn call_raw(
        &self,
        addr: &str,
        gid: u64,
        kind: u32,
        payload: Vec<u8>,
        ttl: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let request = StreamRequest {
            id: 0,
            group_id: gid,
            request: payload,
            max_reply_len: 0,
            timeout_ms: u32::try_from(ttl.as_millis()).unwrap_or(u32::MAX),
            kind,
        };
        self.raft
            .call(addr, || self.channel(addr), request, ttl)
            .await
    }

    /// A channel to `addr` (or to where `dial_via` sends it), created on
    /// first use (connection is lazy and re-established by tonic after
    /// failures). With TLS the node's certificate must name the host of
    /// `addr`, the advertised address, wherever the channel really goes.
    pub fn channel(&self, addr: &str) -> Result<Channel, String> {
        if let Some(ch) = self.channels.read().ok().and_then(|c| c.get(addr).cloned()) {
            return Ok(ch);
        }
        let dial = self.dial_via.get(addr).map_or(addr, String::as_str);
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Channel::from_shared(format!("{scheme}://{dial}"))
            .map_err(|e| format!("bad address {addr}: {e}"))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.client_for(addr))
                .map_err(|e| format!("cannot set up TLS to {addr}: {e}"))?;
        }
        let ch = endpoint.connect_lazy();
        if let Ok(mut chans) = self.channels.write() {
            chans.entry(addr.to_string()).or_insert_with(|| ch.clone());
        }
        Ok(ch)
    }
}

/// Creates per-peer clients for one group.
pub struct NetworkFactory {
    pub transport: Arc<Transport>,
    pub gid: u64,
    /// Where accepted AppendEntries are recorded for the leader lease.
    pub lease: Arc<Lease>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = GroupNetwork;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> GroupNetwork {
        GroupNetwork {
            transport: self.transport.clone(),
            gid: self.gid,
            target,
            fallback_addr: node.addr.clone(),
            lease: self.lease.clone(),
            sent: SentCounters::to(target),
        }
    }
}

/// The sent-message and sent-byte counters of one peer, one pair per kind
/// of message, looked up once when openraft makes the client (not per
/// message on the replication path).
struct SentCounters([(prometheus::IntCounter, prometheus::IntCounter); 3]);

impl SentCounters {
    fn to(target: NodeId) -> SentCounters {
        let peer = target.to_string();
        SentCounters([Rpc::Append, Rpc::Vote, Rpc::Snapshot].map(|rpc| {
            let labels = [peer.as_str(), rpc.name()];
            (
                crate::metrics::RAFT_SENT_MESSAGES.with_label_values(&labels),
                crate::metrics::RAFT_SENT_BYTES.with_label_values(&labels),
            )
        }))
    }

    fn count(&self, rpc: Rpc, bytes: usize) {
        let (messages, sent) = &self.0[rpc as usize];
        messages.inc();
        sent.inc_by(bytes as u64);
    }
}

/// A client from one group's replica to the same group's replica on `target`.
pub struct GroupNetwork {
    transport: Arc<Transport>,
    gid: u64,
    target: NodeId,
    /// Address recorded in the Raft membership; etcd's member list wins.
    fallback_addr: String,
    lease: Arc<Lease>,
    sent: SentCounters,
}

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

impl Rpc {
    /// The `kind` label of the sent-message metrics.
    fn name(self) -> &'static str {
        match self {
            Rpc::Append => "append",
            Rpc::Vote => "vote",
            Rpc::Snapshot => "snapshot",
        }
    }

    /// The formats of the request and of the reply.
    fn formats(self) -> (Format, Format) {
        match self {
            Rpc::Append => (Format::RaftAppend, Format::RaftAppendReply),
            Rpc::Vote => (Format::RaftVote, Format::RaftVoteReply),
            Rpc::Snapshot => (Format::RaftSnapshot, Format::RaftSnapshotReply),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

impl GroupNetwork {
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let addr = self
            .transport
            .peer_addr(self.target)
            .unwrap_or_else(|| self.fallback_addr.clone());
        let (req_format, reply_format) = rpc.formats();
        let payload =
            codec::encode(req_format, req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.sent.count(rpc, payload.len());
        let unreachable = |why: String| {
            RPCError::Unreachable(Unreachable::new(&TransportError(format!(
                "node {} at {addr}: {why}",
                self.target
            ))))
        };
        let kind = match rpc {
            Rpc::Append => KIND_APPEND,
            Rpc::Vote => KIND_VOTE,
            Rpc::Snapshot => return self.unary_snapshot(&addr, payload, ttl, reply_format).await,
        };
        let request = StreamRequest {
            id: 0,
            group_id: self.gid,
            request: payload,
            max_reply_len: 0,
            timeout_ms: u32::try_from(ttl.as_millis()).unwrap_or(u32::MAX),
            kind,
        };
        let transport = &self.transport;
        let reply = match transport
            .raft
            .call(&addr, || transport.channel(&addr), request, ttl)
            .await
        {
            Ok(reply) => reply,
            Err(CallError::TimedOut) => {
                return Err(RPCError::Network(NetworkError::new(&TransportError(
                    format!("rpc to node {} timed out after {ttl:?}", self.target),
                ))))
            }
            // Connection failures and a peer that does not host the group
            // (yet) are "unreachable": openraft backs off instead of spinning.
            Err(
                CallError::NeverSent(why)
                | CallError::Lost(why)
                | CallError::Refused(why)
                | CallError::Tls(why),
            ) => return Err(unreachable(why)),
        };
        let result: Result<Resp, RaftError<NodeId, E>> = codec::decode(reply_format, &reply)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// InstallSnapshot, on its own unary call: a big chunk never holds up
    /// the groups' stream.
    async fn unary_snapshot<Resp, E>(
        &mut self,
        addr: &str,
        payload: Vec<u8>,
        ttl: Duration,
        reply_format: Format,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let channel = self
            .transport
            .channel(addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&TransportError(e))))?;
        let msg = RaftMessage {
            group_id: self.gid,
            payload,
        };
        let mut client = RaftServiceClient::new(channel)
            .max_decoding_message_size(wire::RAFT_REPLY_FRAME_MAX)
            .max_encoding_message_size(usize::MAX);
        let reply = match tokio::time::timeout(ttl, client.install_snapshot(msg)).await {
            Err(_) => {
                return Err(RPCError::Network(NetworkError::new(&TransportError(
                    format!("rpc to node {} timed out after {ttl:?}", self.target),
                ))))
            }
            Ok(Err(status)) => {
                return Err(RPCError::Unreachable(Unreachable::new(&TransportError(
                    format!("node {} at {addr}: {}", self.target, status.message()),
                ))));
            }
            Ok(Ok(reply)) => reply.into_inner(),
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            codec::decode(reply_format, &reply.payload)
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for GroupNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        if let Some(fit) = entries_over_budget(&rpc, wire::APPEND_BUDGET) {
            // openraft sends the first `fit` entries, then the rest.
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fit),
            ));
        }
        // Taken before the request leaves: the peer hears it later.
        let sent = Instant::now();
        let reply = self.call(Rpc::Append, &rpc, option.hard_ttl()).await;
        // Every answer but HigherVote means the peer took our vote (and
        // refreshed its own promise not to vote for another leader).
        if let Ok(
            AppendEntriesResponse::Success
            | AppendEntriesResponse::PartialSuccess(_)
            | AppendEntriesResponse::Conflict,
        ) = &reply
        {
            self.lease.acked(&rpc.vote, self.target, sent);
        }
        reply
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        // Test only: corrupt every snapshot this node sends until a receiver
        // has refused one (a send lost to a transient error does not count).
        static REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let mut rpc = rpc;
        let corrupt = rpc.done
            && !rpc.data.is_empty()
            && crate::failpoint::armed("snapshot-send-corrupt")
            && !REFUSED.load(std::sync::atomic::Ordering::SeqCst);
        if corrupt {
            let last = rpc.data.len() - 1;
            rpc.data[last] ^= 0x01;
            tracing::warn!(
                group = self.gid,
                "failpoint snapshot-send-corrupt: corrupting a snapshot chunk"
            );
        }
        let done = rpc.done;
        let reply = self.call(Rpc::Snapshot, &rpc, option.hard_ttl()).await;
        if done && reply.is_ok() {
            crate::metrics::SNAPSHOTS.with_label_values(&["sent"]).inc();
        }
        if corrupt
            && matches!(
                &reply,
                Err(RPCError::RemoteError(RemoteError {
                    source: RaftError::APIError(InstallSnapshotError::SnapshotMismatch(_)),
                    ..
                }))
            )
        {
            REFUSED.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        reply
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, option.hard_ttl()).await
    }
}

/// When `rpc` would pass `budget` bytes on the wire and holds more than
/// one entry: how many of its first entries fit (at least one, so an entry
/// bigger than the budget still goes, alone). `None`: send it as it is.
fn entries_over_budget(rpc: &AppendEntriesRequest<TypeConfig>, budget: usize) -> Option<u64> {
    if rpc.entries.len() < 2 {
        return None;
    }
    // Sizes are counted, not encoded: nothing is copied.
    let mut total = 0usize;
    for (fit, entry) in rpc.entries.iter().enumerate() {
        total = total.saturating_add(codec::payload_len(entry));
        if total > budget {
            return Some((fit as u64).max(1));
        }
    }
    None
}

/// Encode a server-side result for the wire, as `format` (used by the
/// RaftService and the ShardService).
pub fn encode_result<T: Serialize, E: Serialize>(format: Format, r: &Result<T, E>) -> Vec<u8> {
    codec::encode(format, r).unwrap_or_else(|e| {
        // Encoding our own values cannot fail short of a bug; answer with an
        // error the peer can at least decode as "not this".
        tracing::error!("cannot encode a reply: {e}");
        Vec::new()
    })
}
