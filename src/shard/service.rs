//! gRPC services of a node: `RaftService` (peer replicas) and `ShardService`
//! (routers, `shoal status`). Both only decode, dispatch by group id to the
//! [`Host`], and encode, each message in its own [`codec`] format; no
//! decision is made here.

use std::sync::Arc;

use std::time::{Duration, Instant};

use tonic::{Request, Response, Status, Streaming};

use openraft::error::RaftError;
use openraft::raft::{TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse};
use openraft_legacy::network_v1::{
    ChunkedSnapshotReceiver, InstallSnapshotError, InstallSnapshotRequest, SnapshotMismatch,
    SnapshotSegmentId,
};

use super::codec::{self, Format};
use super::command::{OpReply, ShardRequest};
use super::hibernate::{HibernateRequest, Ping};
use super::host::Host;
use super::link;
use super::network::{decode_vote, encode_result};
use super::snapshot::Receiver;
use super::status::node_status;
use super::stream::{KIND_APPEND, KIND_BATCH, KIND_HIBERNATE, KIND_PING, KIND_TRANSFER, KIND_VOTE};
use super::types::TypeConfig;
use super::wire;
use super::ShardError;
use crate::proto::raft_service_server::{RaftService, RaftServiceServer};
use crate::proto::shard_service_server::{ShardService, ShardServiceServer};
use crate::proto::{
    ChangeMembershipRequest, ExecuteBatch, ExecuteReply, ExecuteReplyBatch, ExecuteRequest,
    RaftMessage, StatusReply, StatusRequest, StreamReply, StreamRequest,
};

#[derive(Clone)]
pub struct NodeService {
    pub host: Arc<Host>,
    /// Snapshots being received, checked chunk by chunk.
    pub snapshots: Arc<Receiver>,
    /// Largest snapshot accepted, in bytes.
    pub max_snapshot_len: u64,
}

impl NodeService {
    pub fn new(host: Arc<Host>, max_snapshot_len: u64) -> NodeService {
        NodeService {
            host,
            snapshots: Arc::default(),
            max_snapshot_len,
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(format: Format, raw: &[u8]) -> Result<T, Status> {
    codec::decode(format, raw).map_err(|e| Status::invalid_argument(format!("bad payload: {e}")))
}

impl NodeService {
    fn raft(&self, gid: u64) -> Result<super::store::Raft, Status> {
        self.host
            .get(gid)
            .and_then(|r| r.openraft().cloned())
            .ok_or_else(|| Status::not_found(format!("group {gid} is not hosted here")))
    }
}

#[tonic::async_trait]
impl RaftService for NodeService {
    type StreamStream = ReplyFrames;

    async fn stream(
        &self,
        req: Request<Streaming<ExecuteBatch>>,
    ) -> Result<Response<ReplyFrames>, Status> {
        let host = self.host.clone();
        Ok(Response::new(serve_stream(
            req.into_inner(),
            move |r, at| serve_raft_request(&host, r, at),
        )))
    }

    async fn append_entries(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let msg = req.into_inner();
        let raft = self.raft(msg.group_id)?;
        let res = raft
            .append_entries(decode(Format::RaftAppend, &msg.payload)?)
            .await;
        self.host.raft_message_handled(msg.group_id);
        Ok(Response::new(RaftMessage {
            group_id: msg.group_id,
            payload: encode_result(Format::RaftAppendReply, &res),
        }))
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let msg = req.into_inner();
        let res = vote(
            &self.host,
            msg.group_id,
            decode_vote(&msg.payload)
                .map_err(|e| Status::invalid_argument(format!("bad payload: {e}")))?,
        )
        .await
        .ok_or_else(|| Status::not_found(format!("group {} is not hosted here", msg.group_id)))?;
        Ok(Response::new(RaftMessage {
            group_id: msg.group_id,
            payload: encode_result(Format::RaftVoteReply, &res),
        }))
    }

    async fn batch_snapshot(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let msg = req.into_inner();
        if msg.payload.len() > wire::MAX_SNAPSHOT_MESSAGE {
            return Err(Status::out_of_range(format!(
                "snapshot chunk of {} bytes, over the limit of {}",
                msg.payload.len(),
                wire::MAX_SNAPSHOT_MESSAGE
            )));
        }
        self.host
            .receive_batch_snapshot(msg.group_id, &msg.payload, self.max_snapshot_len)
            .map_err(|e| {
                tracing::warn!(group = msg.group_id, "{e}");
                Status::invalid_argument(e.to_string())
            })?;
        Ok(Response::new(RaftMessage {
            group_id: msg.group_id,
            payload: Vec::new(),
        }))
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let msg = req.into_inner();
        let gid = msg.group_id;
        let raft = self.raft(gid)?;
        if msg.payload.len() > wire::MAX_SNAPSHOT_MESSAGE {
            return Err(Status::out_of_range(format!(
                "snapshot chunk of {} bytes, over the limit of {} (snapshot chunks are {} bytes)",
                msg.payload.len(),
                wire::MAX_SNAPSHOT_MESSAGE,
                wire::SNAPSHOT_CHUNK
            )));
        }
        let req: InstallSnapshotRequest<TypeConfig> = decode(Format::RaftSnapshot, &msg.payload)?;
        let checked = self.snapshots.chunk(
            gid,
            &req.meta.snapshot_id,
            req.offset,
            &req.data,
            req.done,
            self.max_snapshot_len,
        );
        let res = match checked {
            Ok(_) => ChunkedSnapshotReceiver::install_snapshot(&raft, req).await,
            Err(e) => {
                // Refused before openraft saw the last chunk: answer as
                // openraft does to a chunk out of place, so the leader sends
                // the snapshot again from the start.
                tracing::error!(group = gid, snapshot = %req.meta.snapshot_id, "snapshot refused: {e}; the leader will send it again");
                let at = |offset| SnapshotSegmentId {
                    id: req.meta.snapshot_id.clone(),
                    offset,
                };
                Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(
                    SnapshotMismatch {
                        expect: at(0),
                        got: at(req.offset),
                    },
                )))
            }
        };
        Ok(Response::new(RaftMessage {
            group_id: msg.group_id,
            payload: encode_result(Format::RaftSnapshotReply, &res),
        }))
    }
}

/// Requests of one stream being served at once; past it the node stops
/// reading the stream (HTTP/2 flow control then holds the sender).
pub const STREAM_IN_FLIGHT: usize = 4096;

/// Most replies sent in one frame.
const REPLY_BATCH: usize = 1024;

/// The replies of a stream, as frames: each one reply waited for, then every
/// other one ready.
type ReplyFrames =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<ExecuteReplyBatch, Status>> + Send>>;

fn reply(id: u64, reply: Vec<u8>) -> StreamReply {
    StreamReply {
        id,
        reply,
        refused: String::new(),
    }
}

fn refused(id: u64, why: String) -> StreamReply {
    StreamReply {
        id,
        reply: Vec::new(),
        refused: why,
    }
}

/// Serve a stream with `serve`: read batches while fewer than
/// [`STREAM_IN_FLIGHT`] requests are in flight, run them concurrently in
/// one task, and send finished replies packed into frames. A reply waits
/// for room in the sender's queue, so a peer that stops reading stops the
/// node from reading it.
fn serve_stream<I, F, Fut>(inbound: I, serve: F) -> ReplyFrames
where
    I: futures::Stream<Item = Result<ExecuteBatch, Status>> + Send + Unpin + 'static,
    F: Fn(StreamRequest, Instant) -> Handled<Fut> + Send + 'static,
    Fut: std::future::Future<Output = StreamReply> + Send + 'static,
{
    use tokio::sync::mpsc::error::TrySendError;
    /// What the set of running requests holds: a pointer each, so adding
    /// one moves a few bytes, not the request's whole state.
    type Running = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
    let (tx, rx) = tokio::sync::mpsc::channel::<StreamReply>(STREAM_IN_FLIGHT);
    let (broke, ended) = tokio::sync::oneshot::channel::<Option<Status>>();
    tokio::spawn(async move {
        use futures::stream::{FuturesUnordered, StreamExt};
        let mut inbound = inbound;
        let mut running = FuturesUnordered::new();
        let mut open = true;
        let mut error = None;
        loop {
            tokio::select! {
                batch = inbound.next(), if open && running.len() < STREAM_IN_FLIGHT => match batch.transpose() {
                    Ok(Some(batch)) => {
                        let received = Instant::now();
                        for r in batch.requests {
                            match serve(r, received) {
                                // Answered already: no future to run, unless
                                // the reply side is behind.
                                Handled::Now(reply) => match tx.try_send(reply) {
                                    Ok(()) => {}
                                    Err(TrySendError::Full(reply)) => {
                                        let tx = tx.clone();
                                        running.push(Box::pin(async move {
                                            let _ = tx.send(reply).await;
                                        }) as Running);
                                    }
                                    Err(TrySendError::Closed(_)) => {}
                                },
                                Handled::Later(served) => {
                                    let tx = tx.clone();
                                    running.push(Box::pin(async move {
                                        let _ = tx.send(served.await).await;
                                    }) as Running);
                                }
                                Handled::Done => {}
                            }
                        }
                    }
                    // The sender closed its side, or the stream broke:
                    // finish what runs (a write is never abandoned half way).
                    Ok(None) => open = false,
                    Err(status) => {
                        if is_too_large(&status) {
                            tracing::warn!("refused a stream frame: {}", status.message());
                        }
                        error = Some(status);
                        open = false;
                    }
                },
                Some(()) = running.next(), if !running.is_empty() => {}
                else => break,
            }
        }
        // Sent before `tx` is dropped, so the reply side reads it once
        // every reply is out.
        let _ = broke.send(error);
    });
    let frames = futures::stream::unfold((rx, Some(ended)), |(mut rx, ended)| async move {
        let Some(first) = rx.recv().await else {
            // Every reply is out: end as the inbound side ended, with the
            // error that broke it (a frame over the size limit) if any.
            let status = ended?.await.ok().flatten()?;
            return Some((Err(status), (rx, None)));
        };
        let mut bytes = first.reply.len();
        let mut replies = vec![first];
        while replies.len() < REPLY_BATCH && bytes < wire::REPLY_BATCH_BYTES {
            match rx.try_recv() {
                Ok(r) => {
                    bytes += r.reply.len();
                    replies.push(r);
                }
                Err(_) => break,
            }
        }
        Some((Ok(ExecuteReplyBatch { replies }), (rx, ended)))
    });
    Box::pin(frames)
}

/// Serve a framed link ([`super::link`]) accepted on `io` from `peer`:
/// the same requests, replies and limits as the gRPC stream of the service
/// it names. Runs on tasks of its own.
pub fn serve_link<IO>(io: IO, host: Arc<Host>, peer: String)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    link::serve(
        io,
        peer,
        request_frame_max,
        move |service, inbound| match service {
            link::Service::Shard => {
                serve_stream(inbound, move |r, at| serve_execute(host.clone(), r, at))
            }
            link::Service::Raft => {
                serve_stream(inbound, move |r, at| serve_raft_request(&host, r, at))
            }
        },
    );
}

/// The plaintext listener's connections for tonic; framed links
/// (`shard::link`, told by their first bytes, looked at on a task per
/// connection) are served apart.
pub fn plaintext_incoming(
    listener: tokio::net::TcpListener,
    host: Arc<Host>,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<tokio::net::TcpStream>>(64);
    tokio::spawn(async move {
        loop {
            let (socket, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, most likely: let a moment pass.
                    tracing::debug!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let _ = socket.set_nodelay(true);
            let (tx, host) = (tx.clone(), host.clone());
            tokio::spawn(async move {
                if link::is_link(&socket).await {
                    link::keepalive(&socket);
                    serve_link(socket, host, peer.to_string());
                } else {
                    let _ = tx.send(Ok(socket)).await;
                }
            });
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { Some((rx.recv().await?, rx)) })
}

/// Serve on `listener` what a node serves on its port in plaintext: its
/// gRPC services and framed links, with `host` (for tests and benchmarks
/// of the wire between nodes). Ends when aborted.
pub fn serve_plaintext(
    listener: tokio::net::TcpListener,
    host: Arc<Host>,
    max_snapshot_len: u64,
) -> tokio::task::JoinHandle<()> {
    let service = NodeService::new(host.clone(), max_snapshot_len);
    let server = tonic::transport::Server::builder()
        .add_service(raft_server(service.clone()))
        .add_service(shard_server(service));
    tokio::spawn(async move {
        let _ = server
            .serve_with_incoming(plaintext_incoming(listener, host))
            .await;
    })
}

/// The largest request frame a node decodes for `service`: its gRPC
/// service's decoding limit.
fn request_frame_max(service: link::Service) -> usize {
    match service {
        link::Service::Shard => wire::SHARD_FRAME_MAX,
        link::Service::Raft => wire::RAFT_FRAME_MAX,
    }
}

/// Whether tonic refused a message over the service's decoding limit.
fn is_too_large(status: &Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
    )
}

/// The node's `RaftService`, decoding messages of at most
/// [`wire::RAFT_FRAME_MAX`] bytes.
pub fn raft_server(service: NodeService) -> RaftServiceServer<NodeService> {
    RaftServiceServer::new(service)
        .max_decoding_message_size(wire::RAFT_FRAME_MAX)
        .max_encoding_message_size(usize::MAX)
}

/// The node's `ShardService`, decoding messages of at most
/// [`wire::SHARD_FRAME_MAX`] bytes. Replies are bounded by the caller's
/// `max_reply_len` (`execute_reply`) and frames by
/// [`wire::REPLY_BATCH_BYTES`] plus one reply.
pub fn shard_server(service: NodeService) -> ShardServiceServer<NodeService> {
    ShardServiceServer::new(service)
        .max_decoding_message_size(wire::SHARD_FRAME_MAX)
        .max_encoding_message_size(usize::MAX)
}

/// Whether a request waited on the node past the time its sender waits.
fn expired(r: &StreamRequest, received: Instant) -> bool {
    received.elapsed() > Duration::from_millis(r.timeout_ms.into())
}

/// Hand a vote request to the group's replica, `None` when it is not hosted
/// here. The leader lease hears of it first: once openraft may grant it,
/// this node must stop answering reads alone ([`super::lease`]).
async fn vote(
    host: &Host,
    gid: u64,
    req: VoteRequest<TypeConfig>,
) -> Option<Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>>> {
    let replica = host.get(gid)?;
    let raft = replica.openraft()?;
    replica.lease.vote_requested(&req.vote);
    let res = raft.vote(req).await;
    host.raft_message_handled(gid);
    Some(res)
}

/// The encoded reply to a router that takes replies of `max_reply` bytes
/// (0: no limit but the node's). One that passes it by more than the
/// encoding's overhead is replaced by an error: the router would refuse
/// the frame carrying it, and with it every reply of its stream
/// ([`wire::shard_reply_frame_max`]).
fn execute_reply(result: &Result<OpReply, ShardError>, max_reply: u64) -> Vec<u8> {
    let encoded = encode_result(Format::ShardReply, result);
    let limit = usize::try_from(max_reply).unwrap_or(usize::MAX);
    if max_reply == 0 || encoded.len() <= limit.saturating_add(wire::REPLY_SLACK) {
        return encoded;
    }
    let refused: Result<OpReply, ShardError> =
        Ok(OpReply::Error(wire::reply_too_large(encoded.len(), limit)));
    encode_result(Format::ShardReply, &refused)
}

/// What a stream's handler makes of one request: its reply, when it could
/// answer at once, or the work that will.
enum Handled<F> {
    Now(StreamReply),
    Later(F),
    /// A one-way request, done: nothing to answer.
    Done,
}

/// The async part of a router's request, boxed: it holds the state of
/// every kind of request, some kilobytes, moved once into the heap.
type LaterReply = std::pin::Pin<Box<dyn std::future::Future<Output = StreamReply> + Send>>;

/// One request off a router's stream, answered as `Execute` answers: a
/// point read that needs nothing to wait for at once
/// ([`Host::try_read_now`]), anything else by a future.
fn serve_execute(host: Arc<Host>, r: StreamRequest, received: Instant) -> Handled<LaterReply> {
    let answered = |result: Result<OpReply, ShardError>| {
        Handled::Now(reply(r.id, execute_reply(&result, r.max_reply_len)))
    };
    if expired(&r, received) {
        // The router stopped waiting before this could start: nothing done.
        return answered(Err(ShardError::Unavailable(
            "the request waited past its deadline on the node".into(),
        )));
    }
    let request = match decode::<ShardRequest>(Format::ShardRequest, &r.request) {
        Ok(request) => request,
        Err(e) => return answered(Err(ShardError::BadRequest(e.message().to_string()))),
    };
    let max_reply = match r.max_reply_len {
        0 => usize::MAX,
        n => usize::try_from(n).unwrap_or(usize::MAX),
    };
    if let Some(result) = host.try_read_now(r.group_id, &request, max_reply) {
        return answered(result);
    }
    Handled::Later(Box::pin(async move {
        let result = host.execute_bounded(r.group_id, request, max_reply).await;
        reply(r.id, execute_reply(&result, r.max_reply_len))
    }))
}

/// One request off a peer's Raft stream: a batch-engine batch is handed to
/// the node's loop at once, in the order of the stream, and answered with
/// nothing (it is one-way: a batch that waited past its deadline, does not
/// decode or finds no loop is dropped, and Raft sends again); every other
/// kind is served by [`serve_raft`].
fn serve_raft_request(
    host: &Arc<Host>,
    r: StreamRequest,
    received: Instant,
) -> Handled<impl std::future::Future<Output = StreamReply>> {
    if r.kind != KIND_BATCH {
        return Handled::Later(serve_raft(host.clone(), r, received));
    }
    if expired(&r, received) {
        tracing::debug!("a batch of Raft messages waited past its deadline: dropped");
        return Handled::Done;
    }
    match host.deliver_batch(&r.request) {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!("a batch of Raft messages dropped (no loop, or its inbox is full)")
        }
        Err(e) => tracing::warn!("a batch of Raft messages refused: {e}"),
    }
    Handled::Done
}

/// One AppendEntries, Vote or TransferLeader off a peer's stream, answered as the unary
/// calls answer; a group not hosted here or an unreadable payload is
/// refused (the sender sees the peer as unreachable for that group).
async fn serve_raft(host: Arc<Host>, r: StreamRequest, received: Instant) -> StreamReply {
    if expired(&r, received) {
        return refused(r.id, "waited past its deadline".into());
    }
    if r.kind == KIND_PING {
        return match decode::<Ping>(Format::Liveness, &r.request) {
            Ok(ping) => {
                if host.hibernation.on_ping(&ping) {
                    // A peer is new, restarted or back: the groups this
                    // node leads asleep heartbeat again so its replicas
                    // hear their leader (and do not campaign).
                    host.wake_led("a peer came back");
                }
                reply(r.id, Vec::new())
            }
            Err(e) => refused(r.id, e.message().to_string()),
        };
    }
    let Some(replica) = host.get(r.group_id) else {
        return refused(r.id, format!("group {} is not hosted here", r.group_id));
    };
    let Some(raft) = replica.openraft().cloned() else {
        return refused(
            r.id,
            format!("group {} is not an openraft group", r.group_id),
        );
    };
    match r.kind {
        KIND_APPEND => match decode(Format::RaftAppend, &r.request) {
            Ok(req) => {
                let res = raft.append_entries(req).await;
                host.raft_message_handled(r.group_id);
                reply(r.id, encode_result(Format::RaftAppendReply, &res))
            }
            Err(e) => refused(r.id, e.message().to_string()),
        },
        KIND_VOTE => match decode_vote(&r.request) {
            Ok(req) => match vote(&host, r.group_id, req).await {
                Some(res) => reply(r.id, encode_result(Format::RaftVoteReply, &res)),
                None => refused(r.id, format!("group {} is not hosted here", r.group_id)),
            },
            Err(e) => refused(r.id, format!("bad payload: {e}")),
        },
        KIND_TRANSFER => {
            match decode::<TransferLeaderRequest<TypeConfig>>(Format::RaftTransfer, &r.request) {
                Ok(req) => {
                    // The group may sleep here: its timer must run again
                    // under whichever leader comes out of the transfer.
                    host.awaken(&replica).await;
                    let res: Result<TransferLeaderResponse<TypeConfig>, RaftError<TypeConfig>> =
                        raft.handle_transfer_leader(req)
                            .await
                            .map_err(RaftError::Fatal);
                    reply(r.id, encode_result(Format::RaftTransferReply, &res))
                }
                Err(e) => refused(r.id, e.message().to_string()),
            }
        }
        KIND_HIBERNATE => match decode::<HibernateRequest>(Format::Hibernate, &r.request) {
            Ok(req) => {
                let res = host
                    .hibernation
                    .on_request(r.group_id, &replica.sleep, &raft, &req);
                reply(r.id, encode_result(Format::HibernateReply, &res))
            }
            Err(e) => refused(r.id, e.message().to_string()),
        },
        other => refused(r.id, format!("unknown raft message kind {other}")),
    }
}

#[tonic::async_trait]
impl ShardService for NodeService {
    type ExecuteStreamStream = ReplyFrames;

    async fn execute_stream(
        &self,
        req: Request<Streaming<ExecuteBatch>>,
    ) -> Result<Response<ReplyFrames>, Status> {
        let host = self.host.clone();
        Ok(Response::new(serve_stream(
            req.into_inner(),
            move |r, at| serve_execute(host.clone(), r, at),
        )))
    }

    async fn execute(
        &self,
        req: Request<ExecuteRequest>,
    ) -> Result<Response<ExecuteReply>, Status> {
        let msg = req.into_inner();
        let result: Result<OpReply, ShardError> =
            match decode::<ShardRequest>(Format::ShardRequest, &msg.request) {
                Ok(request) => {
                    let max_reply = match msg.max_reply_len {
                        0 => usize::MAX,
                        n => usize::try_from(n).unwrap_or(usize::MAX),
                    };
                    self.host
                        .execute_bounded(msg.group_id, request, max_reply)
                        .await
                }
                Err(e) => Err(ShardError::BadRequest(e.message().to_string())),
            };
        Ok(Response::new(ExecuteReply {
            reply: execute_reply(&result, msg.max_reply_len),
        }))
    }

    async fn change_membership(
        &self,
        req: Request<ChangeMembershipRequest>,
    ) -> Result<Response<ExecuteReply>, Status> {
        let msg = req.into_inner();
        let result: Result<OpReply, ShardError> =
            match decode(Format::MembershipChange, &msg.change) {
                Ok(change) => self.host.change_membership(msg.group_id, change).await,
                Err(e) => Err(ShardError::BadRequest(e.message().to_string())),
            };
        Ok(Response::new(ExecuteReply {
            reply: encode_result(Format::ShardReply, &result),
        }))
    }

    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let status = node_status(&self.host, &req.into_inner().group_ids);
        let json = serde_json::to_vec(&status).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(StatusReply { json }))
    }
}
