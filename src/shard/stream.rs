//! One multiplexed stream per pair of processes: router → node
//! (`ShardService.ExecuteStream`, the data path) and node → node
//! (`RaftService.Stream`, every group's AppendEntries and Vote).
//!
//! Every caller that sends to a node shares its stream: a caller queues its
//! request with a one-shot for the answer; the stream's
//! driver task takes everything queued at that moment, gives each request an
//! id and sends them as **one** frame (no timer: a frame goes out as soon as
//! the driver runs, so a lone request waits for nothing); replies come back
//! batched by the node, in any order, and are matched by id.
//!
//! The retry rule stays exact. A request is *sent* once the driver hands its
//! frame to the established stream:
//! * not yet sent when the stream could not be opened or broke: the caller
//!   gets [`CallError::NeverSent`] and may try another replica;
//! * sent, and the stream broke before its answer: [`CallError::Lost`]: the
//!   node may have applied it, so a write is "outcome unknown", never resent;
//! * no answer within the caller's timeout: [`CallError::TimedOut`].
//!
//! A broken stream fails all its waiters at once and is replaced by a new one
//! on the next request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::channel::mpsc as fmpsc;
use futures::SinkExt;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;

use super::link::{self, Opened};
use crate::proto::raft_service_client::RaftServiceClient;
use crate::proto::shard_service_client::ShardServiceClient;
use crate::proto::{ExecuteBatch, ExecuteReplyBatch, StreamRequest};

/// `StreamRequest.kind` on `RaftService.Stream`.
pub const KIND_APPEND: u32 = 1;
pub const KIND_VOTE: u32 = 2;
/// A leader asks a follower to hibernate (`hibernate`).
pub const KIND_HIBERNATE: u32 = 3;
/// The node-level liveness ping (group id 0).
pub const KIND_PING: u32 = 4;
/// A leader hands its group to a peer (openraft's TransferLeader).
pub const KIND_TRANSFER: u32 = 5;
/// One turn's Raft messages of the batch engine for the receiving node,
/// every group's together (`shard::batch::wire`). One-way: posted
/// ([`Streams::post`]), never answered.
pub const KIND_BATCH: u32 = 6;

/// Most requests in one frame.
const MAX_BATCH: usize = 1024;
/// A frame stops growing past this many bytes of requests (one request of
/// any size still goes alone).
pub const MAX_BATCH_BYTES: usize = 1 << 20;
/// Frames handed to gRPC but not yet written.
const FRAMES_QUEUED: usize = 16;
/// Past this many unanswered requests, those whose caller gave up are
/// forgotten.
const SWEEP_AT: usize = 8192;

/// Why a call got no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The request never left this router: safe to send elsewhere.
    NeverSent(String),
    /// Sent, then the stream broke: the node may or may not have run it.
    Lost(String),
    /// Sent; no answer in time.
    TimedOut,
    /// The peer answered that it did not serve it (no such group, a payload
    /// it cannot read): nothing was done.
    Refused(String),
    /// The stream could not be opened because TLS failed (the node refused
    /// this process's certificate, or this process the node's): nothing
    /// was sent. The text is one sentence naming the node, what failed and
    /// the likely fix.
    Tls(String),
}

/// What a sent request got: its encoded reply, or why there is none.
pub type Answer = Result<Vec<u8>, CallError>;

/// A request waiting for the driver.
struct Queued {
    req: StreamRequest,
    reply: Waiter,
}

/// Where a request's answer goes: its caller's one-shot
/// ([`Streams::call`]), or its slot in a [`Gather`] shared by the requests
/// queued together ([`Streams::queue_gathered`]).
enum Waiter {
    One(oneshot::Sender<Answer>),
    Slot(Slot),
    /// A one-way request ([`Streams::post`]): nobody waits, and the node
    /// sends no answer.
    Posted,
}

impl Waiter {
    fn send(self, answer: Answer) {
        match self {
            Waiter::One(tx) => {
                let _ = tx.send(answer);
            }
            Waiter::Slot(mut slot) => slot.fill(answer),
            Waiter::Posted => {}
        }
    }

    /// The caller stopped waiting.
    fn is_closed(&self) -> bool {
        match self {
            Waiter::One(tx) => tx.is_closed(),
            Waiter::Slot(slot) => slot.gather.abandoned(),
            Waiter::Posted => false,
        }
    }
}

/// The answers of requests queued together, kept in one place: the caller
/// is woken once, when the last has come, instead of once per answer
/// through a one-shot of each (under `GET -P 16` the one-shots and the set
/// of futures awaiting them were a tenth of the router's CPU).
struct Gather {
    state: Mutex<Gathering>,
    /// The caller dropped its [`Gathered`]: nobody waits any more.
    abandoned: std::sync::atomic::AtomicBool,
}

struct Gathering {
    answers: Vec<Option<Answer>>,
    /// Queued requests not answered yet.
    left: usize,
    waker: Option<std::task::Waker>,
}

impl Gather {
    fn lock(&self) -> std::sync::MutexGuard<'_, Gathering> {
        // Plain data, consistent after every statement: a panic elsewhere
        // while it was held leaves nothing half done.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn abandoned(&self) -> bool {
        self.abandoned.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// One request's place in a [`Gather`]. Dropped unanswered (its driver
/// went away without failing it), it answers that the stream stopped.
struct Slot {
    gather: std::sync::Arc<Gather>,
    index: usize,
    /// Answered, or given back unqueued: nothing more to say.
    done: bool,
}

impl Slot {
    fn fill(&mut self, answer: Answer) {
        self.done = true;
        let waker = {
            let mut g = self.gather.lock();
            if g.answers[self.index].is_some() {
                return;
            }
            g.answers[self.index] = Some(answer);
            g.left -= 1;
            if g.left > 0 {
                return;
            }
            g.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.done {
            self.fill(Err(CallError::Lost("the stream's driver stopped".into())));
        }
    }
}

/// The caller's side of the answers of up to `n` requests queued together
/// ([`Streams::queue_gathered`]), each in a slot of its own: one place
/// they are filled into, and one wake-up when the last is in.
pub struct Gathered {
    gather: std::sync::Arc<Gather>,
}

impl Gathered {
    pub fn new(n: usize) -> Gathered {
        Gathered {
            gather: std::sync::Arc::new(Gather {
                state: Mutex::new(Gathering {
                    answers: (0..n).map(|_| None).collect(),
                    left: 0,
                    waker: None,
                }),
                abandoned: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Wait until every queued request has its answer.
    pub async fn all(&self) {
        std::future::poll_fn(|cx| {
            let mut g = self.gather.lock();
            if g.left == 0 {
                return std::task::Poll::Ready(());
            }
            if !g.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                g.waker = Some(cx.waker().clone());
            }
            std::task::Poll::Pending
        })
        .await
    }

    /// The answers so far, by slot (`None`: not queued, or not answered
    /// yet).
    pub fn take(&self) -> Vec<Option<Answer>> {
        let mut g = self.gather.lock();
        let n = g.answers.len();
        std::mem::replace(&mut g.answers, (0..n).map(|_| None).collect())
    }
}

impl Drop for Gathered {
    fn drop(&mut self) {
        // Requests not yet sent are then not sent at all.
        self.gather
            .abandoned
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How to reach a node: its gRPC channel, and where and how to open a
/// framed link to it ([`super::link`]; `None`: the gRPC stream only).
#[derive(Debug, Clone)]
pub struct Peer {
    pub channel: Channel,
    pub link: Option<link::Dial>,
}

/// Which service's stream (defined with the links that carry it).
pub use super::link::Service;

impl Service {
    /// What a dialer of this service is, for error sentences.
    fn dialer(self) -> &'static str {
        match self {
            Service::Shard => "router",
            Service::Raft => "node",
        }
    }

    /// Open the stream; reply frames over `max_reply_frame` bytes are
    /// refused (the stream then breaks).
    async fn open(
        self,
        channel: Channel,
        outbound: fmpsc::Receiver<ExecuteBatch>,
        max_reply_frame: usize,
    ) -> Result<tonic::Streaming<ExecuteReplyBatch>, tonic::Status> {
        let r = match self {
            Service::Shard => {
                ShardServiceClient::new(channel)
                    .max_decoding_message_size(max_reply_frame)
                    .max_encoding_message_size(usize::MAX)
                    .execute_stream(outbound)
                    .await
            }
            Service::Raft => {
                RaftServiceClient::new(channel)
                    .max_decoding_message_size(max_reply_frame)
                    .max_encoding_message_size(usize::MAX)
                    .stream(outbound)
                    .await
            }
        };
        r.map(|r| r.into_inner())
    }
}

/// One process's streams of one service, one per peer address.
pub struct Streams {
    service: Service,
    /// Largest reply frame decoded (`shard::wire`).
    max_reply_frame: usize,
    streams: Mutex<HashMap<String, mpsc::UnboundedSender<Queued>>>,
}

impl Streams {
    /// Streams of `service` taking reply frames of at most
    /// `max_reply_frame` bytes ([`super::wire::RAFT_REPLY_FRAME_MAX`],
    /// [`super::wire::shard_reply_frame_max`]).
    pub fn new(service: Service, max_reply_frame: usize) -> Streams {
        Streams {
            service,
            max_reply_frame,
            streams: Mutex::default(),
        }
    }

    /// Send `req` (its id is set here) to the node at `addr`, reached as
    /// `peer` says, and wait up to `timeout` for the encoded reply.
    pub async fn call(
        &self,
        addr: &str,
        peer: impl Fn() -> Result<Peer, String>,
        req: StreamRequest,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(
            addr,
            &peer,
            Queued {
                req,
                reply: Waiter::One(tx),
            },
        )?;
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => Err(CallError::TimedOut),
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(CallError::Lost("the stream's driver stopped".into())),
        }
    }

    /// Queue `item` on the live stream to `addr`. A closed queue is a
    /// stream that died: it is replaced once. An error says the request
    /// was not queued, so never sent.
    fn enqueue(
        &self,
        addr: &str,
        peer: &impl Fn() -> Result<Peer, String>,
        mut item: Queued,
    ) -> Result<(), CallError> {
        for _ in 0..2 {
            let queue = self.queue(addr, peer)?;
            match queue.send(item) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(back)) => {
                    item = back;
                    if let Ok(mut s) = self.streams.lock() {
                        if s.get(addr).is_some_and(|q| q.is_closed()) {
                            s.remove(addr);
                        }
                    }
                }
            }
        }
        Err(CallError::NeverSent(format!("no stream to {addr}")))
    }

    /// Queue the one-way request `req` on the stream to `addr`: it goes out
    /// in the next frame, like any other, and nothing waits for it (the
    /// node answers no [`KIND_BATCH`]). An error says it was not queued
    /// (no stream could be opened); once queued, a stream that breaks
    /// loses it silently: what posts must not need every request to
    /// arrive (Raft resends).
    pub fn post(
        &self,
        addr: &str,
        peer: impl Fn() -> Result<Peer, String>,
        req: StreamRequest,
    ) -> Result<(), CallError> {
        self.enqueue(
            addr,
            &peer,
            Queued {
                req,
                reply: Waiter::Posted,
            },
        )
    }

    /// Queue every request of `reqs` on the stream to `addr` at once (one
    /// look-up of the stream, no timer: the caller keeps one deadline for
    /// all of them), each `(slot, request)` answered in its slot of
    /// `gathered` (slots below its `n`, each used once, whichever stream
    /// carries it). Returns the slots of the requests that were not queued
    /// (no stream could be opened or it closed): those were never sent.
    pub fn queue_gathered(
        &self,
        addr: &str,
        peer: impl Fn() -> Result<Peer, String>,
        reqs: Vec<(usize, StreamRequest)>,
        gathered: &Gathered,
    ) -> Vec<usize> {
        let Ok(queue) = self.queue(addr, &peer) else {
            return reqs.into_iter().map(|(i, _)| i).collect();
        };
        // All of them are counted first, so answers to the first cannot
        // look like the last while the rest are being queued.
        gathered.gather.lock().left += reqs.len();
        let mut unqueued = Vec::new();
        for (index, req) in reqs {
            let slot = Slot {
                gather: gathered.gather.clone(),
                index,
                done: false,
            };
            if let Err(mpsc::error::SendError(back)) = queue.send(Queued {
                req,
                reply: Waiter::Slot(slot),
            }) {
                if let Waiter::Slot(mut slot) = back.reply {
                    slot.done = true;
                    slot.gather.lock().left -= 1;
                }
                unqueued.push(index);
            }
        }
        unqueued
    }

    /// The queue of the live stream to `addr`, opening one if needed.
    fn queue(
        &self,
        addr: &str,
        peer: &impl Fn() -> Result<Peer, String>,
    ) -> Result<mpsc::UnboundedSender<Queued>, CallError> {
        let mut streams = self
            .streams
            .lock()
            .map_err(|_| CallError::NeverSent("stream table poisoned".into()))?;
        if let Some(q) = streams.get(addr).filter(|q| !q.is_closed()) {
            return Ok(q.clone());
        }
        let peer = peer().map_err(CallError::NeverSent)?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(drive(
            self.service,
            self.max_reply_frame,
            addr.to_string(),
            peer,
            rx,
        ));
        streams.insert(addr.to_string(), tx.clone());
        Ok(tx)
    }
}

/// The driver of one stream: open it (a framed link when the node serves
/// one, else the gRPC stream), then move frames out and replies in until
/// it breaks; then fail every waiter.
async fn drive(
    service: Service,
    max_reply_frame: usize,
    addr: String,
    peer: Peer,
    mut queue: mpsc::UnboundedReceiver<Queued>,
) {
    // Why the link was not used, when it was tried: said once the gRPC
    // stream is open, for only then is it known that the node is there.
    let mut no_link = None;
    if let Some(dial) = &peer.link {
        // Nothing is sent on a link before the node acknowledged it, so a
        // failure to open one means nothing was sent.
        match link::open(dial, service, max_reply_frame).await {
            Ok(Opened::Link(out, inbound)) => {
                let out = out.with(|b: ExecuteBatch| {
                    futures::future::ready(Ok::<_, std::io::Error>(link::frame(&b)))
                });
                run(addr, queue, Box::pin(out), inbound).await;
                return;
            }
            Ok(Opened::NotSpoken) => no_link = Some("answered a framed link without its ack"),
            Ok(Opened::Closed) => no_link = Some("closed a framed link before answering it"),
            Err(e) => {
                let error = match e {
                    link::OpenError::Tls(e) => {
                        match crate::tls::log_dial_failure(&addr, &e, service.dialer()) {
                            Some(sentence) => CallError::Tls(sentence),
                            None => CallError::NeverSent(format!(
                                "could not open a link to {addr}: {e}"
                            )),
                        }
                    }
                    link::OpenError::Other(why) => {
                        CallError::NeverSent(format!("could not open a link to {addr}: {why}"))
                    }
                };
                fail_queued(&mut queue, &error);
                return;
            }
        }
    }
    let (frames, outbound) = fmpsc::channel::<ExecuteBatch>(FRAMES_QUEUED);
    // Nothing is handed to the stream before the node accepted it, so a
    // failure to open it means nothing was sent.
    let inbound = match service.open(peer.channel, outbound, max_reply_frame).await {
        Ok(r) => r,
        Err(status) => {
            let link = no_link.map_or(String::new(), |why| format!(" (it {why})"));
            let error = match crate::tls::log_dial_failure(&addr, &status, service.dialer()) {
                Some(sentence) => CallError::Tls(sentence),
                None => CallError::NeverSent(format!(
                    "could not open a stream to {addr}{link}: {}",
                    status.message()
                )),
            };
            fail_queued(&mut queue, &error);
            return;
        }
    };
    if let Some(why) = no_link {
        tracing::info!(
            node = %addr,
            "node {addr} {why}: it does not serve framed links (an older version?); using its gRPC stream"
        );
    }
    run(addr, queue, frames, Box::pin(inbound)).await;
}

/// Move frames out to `frames` and replies in from `inbound` until either
/// breaks. A frame is written by this task itself (a link's socket, or the
/// gRPC stream's queue); while it is being written no new frame is made,
/// but replies keep being read, so a peer slow to read cannot stall them.
async fn run<S, I>(
    addr: String,
    mut queue: mpsc::UnboundedReceiver<Queued>,
    mut frames: S,
    mut inbound: I,
) where
    S: futures::Sink<ExecuteBatch> + Unpin,
    I: futures::Stream<Item = Result<ExecuteReplyBatch, tonic::Status>> + Unpin,
{
    use futures::StreamExt;
    // A frame handed to `frames` and not yet flushed.
    let mut flushing = false;
    let mut waiting: HashMap<u64, Waiter> = HashMap::new();
    let mut next_id: u64 = 0;
    let why = loop {
        tokio::select! {
            flushed = std::future::poll_fn(|cx| frames.poll_flush_unpin(cx)), if flushing => {
                flushing = false;
                if flushed.is_err() {
                    // Some of it may have gone out: what is waiting is
                    // unknown (below).
                    break format!("the stream to {addr} broke while sending");
                }
            }
            first = queue.recv(), if !flushing => {
                let Some(first) = first else {
                    // Every sender is gone (the router is shutting down).
                    break "the router closed the stream".to_string();
                };
                // Requests in flight mean other callers are busy, and the
                // ones woken by the same readiness (other connections of
                // the router) have yet to run: let them queue theirs first,
                // so one frame carries them all (without this a frame
                // carried 1.25 requests at 50 clients). A lone caller, with
                // nothing in flight, is sent at once.
                if !waiting.is_empty() {
                    tokio::task::yield_now().await;
                }
                let mut batch = Vec::new();
                let mut bytes = 0usize;
                let mut item = Some(first);
                while let Some(q) = item.take() {
                    // A caller that gave up before its request was sent is
                    // simply not sent.
                    if !q.reply.is_closed() {
                        next_id += 1;
                        let mut req = q.req;
                        req.id = next_id;
                        bytes += req.request.len();
                        if !matches!(q.reply, Waiter::Posted) {
                            waiting.insert(next_id, q.reply);
                        }
                        batch.push(req);
                    }
                    if batch.len() >= MAX_BATCH || bytes >= MAX_BATCH_BYTES {
                        break;
                    }
                    item = queue.try_recv().ok();
                }
                if batch.is_empty() {
                    continue;
                }
                let ids: Vec<u64> = batch.iter().map(|r| r.id).collect();
                let ready = std::future::poll_fn(|cx| frames.poll_ready_unpin(cx)).await;
                if ready.is_err() || frames.start_send_unpin(ExecuteBatch { requests: batch }).is_err() {
                    // The stream's sending side closed: this frame never
                    // went out.
                    for id in ids {
                        if let Some(w) = waiting.remove(&id) {
                            w.send(Err(CallError::NeverSent(format!("the stream to {addr} closed"))));
                        }
                    }
                    break format!("the stream to {addr} closed");
                }
                flushing = true;
                if waiting.len() > SWEEP_AT {
                    waiting.retain(|_, w| !w.is_closed());
                }
            }
            msg = inbound.next() => match msg.transpose() {
                Ok(Some(batch)) => {
                    for r in batch.replies {
                        if let Some(w) = waiting.remove(&r.id) {
                            w.send(if r.refused.is_empty() {
                                Ok(r.reply)
                            } else {
                                Err(CallError::Refused(r.refused))
                            });
                        }
                    }
                }
                Ok(None) => break format!("node {addr} ended the stream"),
                Err(status) => break format!("the stream to {addr} broke: {}", status.message()),
            },
        }
    };
    tracing::debug!(node = %addr, "{why}");
    // Sent and unanswered: unknown. Queued and never taken: not sent.
    for (_, w) in waiting.drain() {
        w.send(Err(CallError::Lost(why.clone())));
    }
    fail_queued(&mut queue, &CallError::NeverSent(why));
}

/// Close the queue and answer everything still in it with `error` (one
/// that says nothing was sent).
fn fail_queued(queue: &mut mpsc::UnboundedReceiver<Queued>, error: &CallError) {
    queue.close();
    while let Ok(q) = queue.try_recv() {
        q.reply.send(Err(error.clone()));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::pin::Pin;

    use tonic::{Request, Response, Status, Streaming};

    use super::*;
    use crate::proto::shard_service_server::{ShardService, ShardServiceServer};
    use crate::proto::{
        ChangeMembershipRequest, ExecuteReply, ExecuteReplyBatch, ExecuteRequest, StatusReply,
        StatusRequest, StreamReply,
    };
    use crate::shard::network::Transport;
    use crate::shard::wire;

    /// How a fake node behaves on a stream.
    #[derive(Clone, Copy, PartialEq)]
    enum Fake {
        /// Answers each request with its own bytes.
        Echo,
        /// Reads the first frame, then breaks the stream.
        Dies,
        /// Accepts the stream and never answers.
        Silent,
    }

    type Replies = Pin<Box<dyn futures::Stream<Item = Result<ExecuteReplyBatch, Status>> + Send>>;

    #[tonic::async_trait]
    impl ShardService for Fake {
        type ExecuteStreamStream = Replies;

        async fn execute_stream(
            &self,
            req: Request<Streaming<ExecuteBatch>>,
        ) -> Result<Response<Replies>, Status> {
            if *self == Fake::Silent {
                return Ok(Response::new(Box::pin(futures::stream::pending())));
            }
            let inbound = req.into_inner();
            let dies = *self == Fake::Dies;
            let out = futures::stream::unfold(Some(inbound), move |inbound| async move {
                let mut inbound = inbound?;
                let batch = inbound.message().await.ok()??;
                if dies {
                    return Some((Err(Status::unavailable("node died")), None));
                }
                Some((Ok(echo(batch)), Some(inbound)))
            });
            Ok(Response::new(Box::pin(out)))
        }

        async fn execute(
            &self,
            _: Request<ExecuteRequest>,
        ) -> Result<Response<ExecuteReply>, Status> {
            Err(Status::unimplemented("test"))
        }

        async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
            Err(Status::unimplemented("test"))
        }

        async fn change_membership(
            &self,
            _: Request<ChangeMembershipRequest>,
        ) -> Result<Response<ExecuteReply>, Status> {
            Err(Status::unimplemented("test"))
        }
    }

    async fn serve(fake: Fake) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let incoming = tokio_stream_of(l);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ShardServiceServer::new(fake))
                .serve_with_incoming(incoming),
        );
        addr
    }

    /// The listener's connections as the stream tonic serves.
    fn tokio_stream_of(
        l: tokio::net::TcpListener,
    ) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
        futures::stream::unfold(l, |l| async move {
            let conn = l.accept().await.map(|(s, _)| s);
            Some((conn, l))
        })
    }

    /// Each request's own bytes as its reply (shared with `link`'s tests).
    pub(crate) fn echo(batch: ExecuteBatch) -> ExecuteReplyBatch {
        let replies = batch
            .requests
            .into_iter()
            .map(|r| StreamReply {
                id: r.id,
                reply: r.request,
                refused: String::new(),
            })
            .collect();
        ExecuteReplyBatch { replies }
    }

    /// A request of `body` for group 1 (shared with `link`'s tests).
    pub(crate) fn request(body: &[u8]) -> StreamRequest {
        StreamRequest {
            id: 0,
            group_id: 1,
            request: body.to_vec(),
            max_reply_len: 0,
            timeout_ms: 1000,
            kind: 0,
        }
    }

    /// `body` sent to `addr` on `streams`, its reply within 5 s (shared
    /// with `link`'s tests).
    pub(crate) async fn call(
        streams: &Streams,
        addr: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, CallError> {
        let transport = Transport::new();
        streams
            .call(
                addr,
                || transport.peer(addr),
                request(body),
                Duration::from_secs(5),
            )
            .await
    }

    #[tokio::test]
    async fn concurrent_calls_share_the_stream_and_get_their_own_replies() {
        let addr = serve(Fake::Echo).await;
        let streams = Streams::new(Service::Shard, wire::shard_reply_frame_max(1 << 20));
        let calls = (0..200u32).map(|i| {
            let (streams, addr) = (&streams, &addr);
            async move { (i, call(streams, addr, &i.to_be_bytes()).await) }
        });
        for (i, r) in futures::future::join_all(calls).await {
            assert_eq!(r.unwrap(), i.to_be_bytes().to_vec());
        }
        assert_eq!(streams.streams.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn requests_queued_at_once_get_their_own_replies() {
        let addr = serve(Fake::Echo).await;
        let streams = Streams::new(Service::Shard, wire::shard_reply_frame_max(1 << 20));
        let transport = Transport::new();
        let reqs = (0..50u32)
            .map(|i| (i as usize, request(&i.to_be_bytes())))
            .collect();
        let gathered = Gathered::new(50);
        let unqueued = streams.queue_gathered(&addr, || transport.peer(&addr), reqs, &gathered);
        assert!(unqueued.is_empty(), "{unqueued:?}");
        tokio::time::timeout(Duration::from_secs(10), gathered.all())
            .await
            .expect("every answer within 10 s");
        let got = gathered.take();
        assert_eq!(got.len(), 50);
        for (i, answer) in got.into_iter().enumerate() {
            let answer = answer.expect("answered");
            assert_eq!(answer.unwrap(), (i as u32).to_be_bytes().to_vec());
        }
        // Slots are the caller's: a gather may leave some out, and the
        // requests of several streams may share one.
        let gathered = Gathered::new(3);
        let other_addr = serve(Fake::Echo).await;
        let unqueued = streams.queue_gathered(
            &addr,
            || transport.peer(&addr),
            vec![(2, request(b"two"))],
            &gathered,
        );
        assert!(unqueued.is_empty());
        let unqueued = streams.queue_gathered(
            &other_addr,
            || transport.peer(&other_addr),
            vec![(0, request(b"zero"))],
            &gathered,
        );
        assert!(unqueued.is_empty());
        tokio::time::timeout(Duration::from_secs(10), gathered.all())
            .await
            .expect("both answers within 10 s");
        let got = gathered.take();
        assert_eq!(got[0].clone().unwrap().unwrap(), b"zero".to_vec());
        assert!(got[1].is_none());
        assert_eq!(got[2].clone().unwrap().unwrap(), b"two".to_vec());
        // A node that refuses the connection: queued, then never sent.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let nowhere = closed.local_addr().unwrap().to_string();
        drop(closed);
        let gathered = Gathered::new(1);
        let unqueued = streams.queue_gathered(
            &nowhere,
            || transport.peer(&nowhere),
            vec![(0, request(b"x"))],
            &gathered,
        );
        assert!(unqueued.is_empty());
        tokio::time::timeout(Duration::from_secs(10), gathered.all())
            .await
            .expect("answered within 10 s");
        let got = gathered.take().remove(0).expect("answered");
        assert!(matches!(got, Err(CallError::NeverSent(_))), "{got:?}");
        // No way to reach it at all: not queued (never sent either), and
        // nothing to wait for.
        let other = Streams::new(Service::Shard, wire::shard_reply_frame_max(1 << 20));
        let gathered = Gathered::new(1);
        let unqueued = other.queue_gathered(
            &nowhere,
            || Err("no peer".into()),
            vec![(0, request(b"x"))],
            &gathered,
        );
        assert_eq!(unqueued, vec![0]);
        gathered.all().await;
        assert!(gathered.take()[0].is_none());
    }

    #[tokio::test]
    async fn a_silent_node_leaves_a_gather_unanswered() {
        let addr = serve(Fake::Silent).await;
        let streams = Streams::new(Service::Shard, wire::shard_reply_frame_max(1 << 20));
        let transport = Transport::new();
        let gathered = Gathered::new(2);
        streams.queue_gathered(
            &addr,
            || transport.peer(&addr),
            vec![(0, request(b"a")), (1, request(b"b"))],
            &gathered,
        );
        let waited = tokio::time::timeout(Duration::from_millis(300), gathered.all()).await;
        assert!(waited.is_err(), "a silent node answered");
        assert!(gathered.take().iter().all(Option::is_none));
    }

    #[tokio::test]
    async fn a_refused_connection_sends_nothing() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        let r = call(
            &Streams::new(Service::Shard, wire::shard_reply_frame_max(1 << 20)),
            &addr,
            b"x",
        )
        .await;
        assert!(matches!(r, Err(CallError::NeverSent(_))), "{r:?}");
    }

    #[tokio::test]
    async fn a_connection_that_never_becomes_a_stream_sends_nothing() {
        // Accepts, reads, never speaks HTTP/2, then closes.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut buf = [0u8; 4096];
                    let _ = tokio::time::timeout(Duration::from_millis(300), async {
                        while s.read(&mut buf).await.unwrap_or(0) > 0 {}
                    })
                    .await;
                });
            }
        });
        let r = call(
            &Streams::new(Service::Shard, wire::shard_reply_frame_max(1 << 20)),
            &addr,
            b"x",
        )
        .await;
        assert!(matches!(r, Err(CallError::NeverSent(_))), "{r:?}");
    }

    #[tokio::test]
    async fn a_stream_broken_after_sending_loses_the_request_and_is_replaced() {
        let addr = serve(Fake::Dies).await;
        let streams = Streams::new(Service::Shard, wire::shard_reply_frame_max(1 << 20));
        let r = call(&streams, &addr, b"x").await;
        assert!(matches!(r, Err(CallError::Lost(_))), "{r:?}");
        // The next call opens a new stream (and loses again: it dies).
        let r = call(&streams, &addr, b"y").await;
        assert!(matches!(r, Err(CallError::Lost(_))), "{r:?}");
    }

    #[tokio::test]
    async fn no_answer_in_time_is_a_timeout() {
        // An HTTP/2 server that accepts the stream and never answers.
        let addr = serve(Fake::Silent).await;
        let transport = Transport::new();
        let r = Streams::new(Service::Shard, wire::shard_reply_frame_max(1 << 20))
            .call(
                &addr,
                || transport.peer(&addr),
                request(b"x"),
                Duration::from_millis(300),
            )
            .await;
        assert_eq!(r, Err(CallError::TimedOut));
    }
}
