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

use openraft::error::{NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft_legacy::network_v1::{
    Adapter, InstallSnapshotError, InstallSnapshotRequest, InstallSnapshotResponse, RaftNetwork,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_rustls::rustls;
use tonic::transport::Channel;

use super::codec::{self, Format};
use super::lease::Lease;
use super::link;
use super::stream::{CallError, Peer, Service, Streams, KIND_APPEND, KIND_TRANSFER, KIND_VOTE};
use super::types::{LogId, Node, NodeId, SnapshotBytes, TypeConfig};
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
        self.raft.call(addr, || self.peer(addr), request, ttl).await
    }

    /// Post one one-way message of `kind` to the node at `addr` on the
    /// Raft stream ([`Streams::post`]): an error says it was not queued;
    /// once queued it may still be lost with its stream, silently. It is
    /// dropped on the node past `ttl`.
    pub fn post_raw(
        &self,
        addr: &str,
        kind: u32,
        payload: Vec<u8>,
        ttl: Duration,
    ) -> Result<(), CallError> {
        let request = StreamRequest {
            id: 0,
            group_id: 0,
            request: payload,
            max_reply_len: 0,
            timeout_ms: u32::try_from(ttl.as_millis()).unwrap_or(u32::MAX),
            kind,
        };
        self.raft.post(addr, || self.peer(addr), request)
    }

    /// How streams reach the node at `addr`: its channel, and a framed
    /// link ([`super::link`]) dialled where `dial_via` says, under the
    /// cluster's TLS when set (the node's certificate must name the host of
    /// `addr`).
    pub fn peer(&self, addr: &str) -> Result<Peer, String> {
        let channel = self.channel(addr)?;
        let dial = self.dial_via.get(addr).map_or(addr, String::as_str);
        let tls = match &self.tls {
            None => None,
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(crate::tls::host_of(addr))
                    .map_err(|e| format!("bad host in {addr}: {e}"))?;
                Some((tls.link_client.clone(), name))
            }
        };
        Ok(Peer {
            channel,
            link: Some(link::Dial {
                addr: dial.to_string(),
                tls,
            }),
        })
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
    /// openraft 0.10 speaks `RaftNetworkV2`; the legacy adapter turns its
    /// whole-snapshot sends into the chunked InstallSnapshot calls the
    /// receiving `RaftService` takes (`wire::SNAPSHOT_CHUNK` at a time).
    type Network = Adapter<TypeConfig, GroupNetwork, SnapshotBytes>;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Self::Network {
        Adapter::new(GroupNetwork {
            transport: self.transport.clone(),
            gid: self.gid,
            target,
            fallback_addr: node.addr.clone(),
            lease: self.lease.clone(),
            sent: SentCounters::to(target),
        })
    }
}

/// The sent-message and sent-byte counters of one peer, one pair per kind
/// of message, looked up once when openraft makes the client (not per
/// message on the replication path).
struct SentCounters([(prometheus::IntCounter, prometheus::IntCounter); 4]);

impl SentCounters {
    fn to(target: NodeId) -> SentCounters {
        let peer = target.to_string();
        SentCounters(
            [Rpc::Append, Rpc::Vote, Rpc::Snapshot, Rpc::Transfer].map(|rpc| {
                let labels = [peer.as_str(), rpc.name()];
                (
                    crate::metrics::RAFT_SENT_MESSAGES.with_label_values(&labels),
                    crate::metrics::RAFT_SENT_BYTES.with_label_values(&labels),
                )
            }),
        )
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
    Transfer,
}

impl Rpc {
    /// The `kind` label of the sent-message metrics.
    fn name(self) -> &'static str {
        match self {
            Rpc::Append => "append",
            Rpc::Vote => "vote",
            Rpc::Snapshot => "snapshot",
            Rpc::Transfer => "transfer",
        }
    }

    /// The formats of the request and of the reply.
    fn formats(self) -> (Format, Format) {
        match self {
            Rpc::Append => (Format::RaftAppend, Format::RaftAppendReply),
            Rpc::Vote => (Format::RaftVote, Format::RaftVoteReply),
            Rpc::Snapshot => (Format::RaftSnapshot, Format::RaftSnapshotReply),
            Rpc::Transfer => (Format::RaftTransfer, Format::RaftTransferReply),
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
    ) -> Result<Resp, RPCError<TypeConfig, RaftError<TypeConfig, E>>>
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
            Rpc::Transfer => KIND_TRANSFER,
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
            .call(&addr, || transport.peer(&addr), request, ttl)
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
        let result: Result<Resp, RaftError<TypeConfig, E>> = codec::decode(reply_format, &reply)
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
    ) -> Result<Resp, RPCError<TypeConfig, RaftError<TypeConfig, E>>>
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
        let result: Result<Resp, RaftError<TypeConfig, E>> =
            codec::decode(reply_format, &reply.payload)
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl GroupNetwork {
    /// One AppendEntries as it is: the lease hears of each one the peer
    /// accepts.
    async fn append_one(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig, RaftError<TypeConfig>>>
    {
        // Taken before the request leaves: the peer hears it later.
        let sent = Instant::now();
        let reply = self.call(Rpc::Append, rpc, option.hard_ttl()).await;
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
}

impl RaftNetwork<TypeConfig> for GroupNetwork {
    /// An AppendEntries over [`wire::APPEND_BUDGET`] goes as several, one
    /// after the other, each under the budget (openraft 0.10 has no
    /// `PayloadTooLarge` for the network to ask for fewer entries). Each
    /// part commits at most up to its own last entry, so a follower never
    /// commits an entry of its own that a later part would replace. The
    /// answer is the first part's failure, or `PartialSuccess` up to the
    /// last part accepted when a later part fails.
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig, RaftError<TypeConfig>>>
    {
        if rpc.entries.is_empty() {
            // Only the commit index (or a heartbeat): tokio resumes a
            // yielded task once nothing else is ready on this worker (at
            // the latest after 61 polls), so the apply of what was just
            // committed and the client's reply go first and the commit
            // round to the followers is off the client's path.
            tokio::task::yield_now().await;
        }
        let parts = split_entries(
            rpc.entries.len(),
            |i| codec::payload_len(&rpc.entries[i]),
            wire::APPEND_BUDGET,
        );
        if parts.len() < 2 {
            return self.append_one(&rpc, &option).await;
        }
        tracing::info!(
            group = self.gid,
            peer = self.target,
            parts = parts.len(),
            "AppendEntries over the wire budget: sent in parts"
        );
        let AppendEntriesRequest {
            vote,
            mut prev_log_id,
            entries,
            leader_commit,
        } = rpc;
        let mut entries = entries.into_iter();
        let mut matched: Option<LogId> = None;
        for (n, len) in parts.into_iter().enumerate() {
            let part: Vec<_> = entries.by_ref().take(len).collect();
            let last = part.last().map(|e| e.log_id);
            let req = AppendEntriesRequest {
                vote,
                prev_log_id,
                entries: part,
                leader_commit: leader_commit.min(last),
            };
            let reply = self.append_one(&req, &option).await;
            match reply {
                Ok(AppendEntriesResponse::Success) => {
                    matched = last;
                    prev_log_id = last;
                }
                other if n == 0 => return other,
                Ok(AppendEntriesResponse::PartialSuccess(upto)) => {
                    return Ok(AppendEntriesResponse::PartialSuccess(upto.max(matched)))
                }
                Ok(AppendEntriesResponse::HigherVote(v)) => {
                    return Ok(AppendEntriesResponse::HigherVote(v))
                }
                Ok(AppendEntriesResponse::Conflict) | Err(_) => {
                    return Ok(AppendEntriesResponse::PartialSuccess(matched))
                }
            }
        }
        Ok(AppendEntriesResponse::Success)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<TypeConfig>,
        RPCError<TypeConfig, RaftError<TypeConfig, InstallSnapshotError>>,
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
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig, RaftError<TypeConfig>>> {
        self.call(Rpc::Vote, &rpc, option.hard_ttl()).await
    }

    /// Sent by a leader that hands its group over (to the target and to
    /// every other voter, which then stop refusing the target's votes).
    /// The sender's lease already ended (`Host::change_membership`).
    async fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call::<_, TransferLeaderResponse<TypeConfig>, openraft::error::Infallible>(
                Rpc::Transfer,
                &rpc,
                option.hard_ttl(),
            )
            .await
        {
            Ok(reply) => Ok(reply),
            Err(RPCError::Timeout(t)) => Err(RPCError::Timeout(t)),
            Err(RPCError::Unreachable(u)) => Err(RPCError::Unreachable(u)),
            Err(e) => Err(RPCError::Network(NetworkError::new(&TransportError(
                e.to_string(),
            )))),
        }
    }
}

/// How to cut `n` entries (entry `i` taking `len(i)` bytes on the wire)
/// into consecutive parts of at most `budget` bytes each: the number of
/// entries in each part, in order. An entry bigger than the budget goes
/// alone. Sizes are counted, not encoded: nothing is copied.
fn split_entries(n: usize, len: impl Fn(usize) -> usize, budget: usize) -> Vec<usize> {
    let mut parts = Vec::new();
    let (mut count, mut bytes) = (0usize, 0usize);
    for i in 0..n {
        let l = len(i);
        if count > 0 && bytes.saturating_add(l) > budget {
            parts.push(count);
            (count, bytes) = (0, 0);
        }
        count += 1;
        bytes = bytes.saturating_add(l);
    }
    if count > 0 {
        parts.push(count);
    }
    parts
}

/// A vote request as openraft 0.9 sent it (`Format::RaftVote` version 1).
#[derive(serde::Deserialize)]
struct VoteRequestV1 {
    vote: super::types::Vote,
    last_log_id: Option<LogId>,
}

/// Decode a `Format::RaftVote` request of any version: version 1 (openraft
/// 0.9) has no `leadership_transfer`, which is then false.
pub fn decode_vote(raw: &[u8]) -> Result<VoteRequest<TypeConfig>, codec::CodecError> {
    let (version, payload) = codec::split(Format::RaftVote, raw)?;
    if version >= Format::RaftVote.same_type_since() {
        return codec::decode_payload(Format::RaftVote, version, payload);
    }
    let v1: VoteRequestV1 = codec::decode_payload(Format::RaftVote, version, payload)?;
    Ok(VoteRequest::new(v1.vote, v1.last_log_id))
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

#[cfg(test)]
mod tests {
    use super::split_entries;

    #[test]
    fn appends_over_the_budget_are_cut_into_parts_that_fit() {
        let sizes = |s: &'static [usize]| move |i: usize| s[i];
        // Everything fits: one part, sent as it is.
        assert_eq!(split_entries(3, sizes(&[10, 10, 10]), 30), vec![3]);
        assert_eq!(split_entries(0, sizes(&[]), 30), Vec::<usize>::new());
        // Parts as full as the budget allows, in order.
        assert_eq!(
            split_entries(5, sizes(&[10, 10, 10, 10, 10]), 25),
            vec![2, 2, 1]
        );
        // An entry bigger than the budget goes alone, never held back.
        assert_eq!(split_entries(3, sizes(&[5, 100, 5]), 20), vec![1, 1, 1]);
        assert_eq!(split_entries(1, sizes(&[100]), 20), vec![1]);
    }
}
