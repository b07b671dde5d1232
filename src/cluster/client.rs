//! Sending shard requests to the right node.
//!
//! [`ShardClient`] holds one gRPC channel per node (shared by every
//! connection of the router) and a cached leader per group. A request goes to
//! the cached leader, or to the replicas in turn; a not-leader answer corrects
//! the cache and the request is retried there at once. Retrying stops at a
//! deadline, after which the client sees `-CLUSTERDOWN`, so no request hangs.
//!
//! A write is retried only when it surely was not applied (the node said it is
//! not the leader, does not host the group, or could not be reached at all);
//! a write that timed out at the leader, or whose connection broke after it
//! was sent (the leader died mid-request), has an unknown outcome and is
//! reported, never resent: the entry may already be in the log of a majority,
//! and resending it would apply it twice (found by the chaos harness).
//!
//! A node that did not answer at all (an RPC timeout: partitioned, paused)
//! or could not be reached is a *suspect* for [`SUSPECT_FOR`]: it is dropped
//! as cached leader and skipped while other replicas remain, so requests move
//! to the majority instead of waiting on a dead link again and again (found
//! by the chaos harness's partitions). Reads are resent to another replica
//! after such a timeout; writes are not (their outcome is unknown).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::routes::{RouteView, TableRoute};
use super::ClusterError;
use crate::proto::shard_service_client::ShardServiceClient;
use crate::proto::{ChangeMembershipRequest, StatusRequest, StreamRequest};
use crate::shard::codec::{self, Format};
use crate::shard::command::{OpReply, ShardRequest};
use crate::shard::host::MembershipChange;
use crate::shard::network::Transport;
use crate::shard::status::NodeStatus;
use crate::shard::stream::{CallError, Gathered, Service, Streams};
use crate::shard::wire;
use crate::shard::ShardError;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Total time a request may spend finding a leader and being served.
    pub request_timeout: Duration,
    /// Time one RPC may take (the node bounds its own waits below this).
    pub rpc_timeout: Duration,
    /// Advertised node address → address dialled (see `RouterConfig::dial_via`).
    pub dial_via: std::collections::BTreeMap<String, String>,
    /// Largest reply a node should build for one request (bytes; sent with
    /// each request, the node also applies its own limit).
    pub max_reply_len: usize,
    /// Mutual TLS to the nodes (`--cluster-tls-*`); plaintext when `None`.
    pub tls: Option<crate::tls::ClusterTls>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: Duration::from_secs(5),
            rpc_timeout: Duration::from_secs(4),
            dial_via: Default::default(),
            max_reply_len: 64 * 1024 * 1024,
            tls: None,
        }
    }
}

/// How long a node that did not answer is avoided.
pub const SUSPECT_FOR: Duration = Duration::from_secs(5);

/// How long a router waits for a script (EVAL, FCALL) to answer. A script
/// that runs longer is left to SCRIPT KILL; its client is told the outcome
/// is unknown.
pub const SCRIPT_WAIT: Duration = Duration::from_secs(600);

pub struct ShardClient {
    transport: Arc<Transport>,
    /// Node → until when it is avoided (it did not answer an RPC).
    suspects: Mutex<HashMap<u64, Instant>>,
    /// Whether `suspects` may hold anyone: while it does not (the common
    /// case), a request takes no lock to learn that nobody is suspect.
    any_suspect: std::sync::atomic::AtomicBool,
    routes: watch::Receiver<Arc<RouteView>>,
    leaders: Mutex<HashMap<u64, u64>>,
    config: ClientConfig,
    /// Spreads eventual reads over replicas.
    next: std::sync::atomic::AtomicUsize,
    /// One request stream per node (the data path).
    streams: Streams,
    /// What the router's metrics count of the retries and failures here.
    pub stats: ClientStats,
}

/// Counts of the router's retries (a request sent again to another node)
/// and of writes whose outcome it could not learn.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Sent again to the leader a node named (a MOVED-style redirect).
    pub redirects: std::sync::atomic::AtomicU64,
    /// Sent again after a pause: no leader known, a node down or no quorum.
    pub backoffs: std::sync::atomic::AtomicU64,
    /// Writes answered TRYAGAIN because they may or may not have applied.
    pub outcome_unknown: std::sync::atomic::AtomicU64,
}

/// `req` for group `gid` as a stream request taking replies of at most
/// `max_reply` bytes (its timeout is set per attempt). One over the size a
/// node accepts is refused here: the node would refuse it, and break the
/// stream other requests share.
fn stream_request(
    gid: u64,
    req: &ShardRequest,
    max_reply: usize,
) -> Result<StreamRequest, ClusterError> {
    let payload = codec::encode(Format::ShardRequest, req)
        .map_err(|e| ClusterError::Internal(e.to_string()))?;
    if payload.len() > wire::MAX_SHARD_REQUEST {
        return Err(ClusterError::Refused(wire::request_too_large(
            payload.len(),
        )));
    }
    Ok(StreamRequest {
        id: 0,
        group_id: gid,
        request: payload,
        // 0 means "no limit but the node's own".
        max_reply_len: (max_reply as u64).max(1),
        timeout_ms: 0,
        kind: 0,
    })
}

/// How a failed attempt should be handled.
enum Attempt {
    /// Try again (at `leader` if known).
    Retry { leader: Option<u64> },
    /// Stop and report this.
    Fail(ClusterError),
    /// Not sent: TLS to the node failed (this sentence says how). Another
    /// replica is tried; the sentence is reported if none answers.
    Unreachable(String),
}

impl ShardClient {
    pub fn new(routes: watch::Receiver<Arc<RouteView>>, config: ClientConfig) -> Arc<ShardClient> {
        Arc::new(ShardClient {
            transport: Transport::with(config.dial_via.clone(), config.tls.clone()),
            suspects: Mutex::new(HashMap::new()),
            any_suspect: std::sync::atomic::AtomicBool::new(false),
            routes,
            leaders: Mutex::new(HashMap::new()),
            streams: Streams::new(
                Service::Shard,
                wire::shard_reply_frame_max(config.max_reply_len),
            ),
            config,
            next: std::sync::atomic::AtomicUsize::new(0),
            stats: ClientStats::default(),
        })
    }

    pub fn routes(&self) -> Arc<RouteView> {
        self.routes.borrow().clone()
    }

    pub fn routes_receiver(&self) -> watch::Receiver<Arc<RouteView>> {
        self.routes.clone()
    }

    pub fn cached_leader(&self, gid: u64) -> Option<u64> {
        self.leaders.lock().ok()?.get(&gid).copied()
    }

    fn set_leader(&self, gid: u64, leader: Option<u64>) {
        if let Ok(mut l) = self.leaders.lock() {
            match leader {
                Some(n) => l.insert(gid, n),
                None => l.remove(&gid),
            };
        }
    }

    fn is_suspect(&self, node: u64) -> bool {
        if !self.any_suspect.load(std::sync::atomic::Ordering::Acquire) {
            return false;
        }
        self.suspects
            .lock()
            .ok()
            .and_then(|s| s.get(&node).copied())
            .is_some_and(|until| Instant::now() < until)
    }

    /// `node` did not answer: avoid it for a while, and stop taking it for
    /// the leader of `gid`.
    fn suspect(&self, node: u64, gid: u64) {
        if let Ok(mut s) = self.suspects.lock() {
            s.insert(node, Instant::now() + SUSPECT_FOR);
            self.any_suspect
                .store(true, std::sync::atomic::Ordering::Release);
        }
        if self.cached_leader(gid) == Some(node) {
            self.set_leader(gid, None);
        }
    }

    fn answered(&self, node: u64) {
        if !self.any_suspect.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        if let Ok(mut s) = self.suspects.lock() {
            s.remove(&node);
            if s.is_empty() {
                self.any_suspect
                    .store(false, std::sync::atomic::Ordering::Release);
            }
        }
    }

    fn client(&self, node: u64) -> Result<ShardServiceClient<tonic::transport::Channel>, String> {
        let addr = self
            .routes()
            .addrs
            .get(&node)
            .cloned()
            .ok_or_else(|| format!("node {node} has no known address"))?;
        let ch = self.transport.channel(&addr)?;
        Ok(ShardServiceClient::new(ch)
            .max_decoding_message_size(wire::shard_reply_frame_max(self.config.max_reply_len))
            .max_encoding_message_size(wire::SHARD_FRAME_MAX))
    }

    /// Run `req` on shard `shard` of `table`.
    pub async fn execute(
        &self,
        table: &TableRoute,
        shard: usize,
        req: ShardRequest,
    ) -> Result<OpReply, ClusterError> {
        let max_reply = self.config.max_reply_len;
        self.execute_bounded(table, shard, req, max_reply).await
    }

    /// [`ShardClient::execute`] taking a reply of at most `max_reply` bytes:
    /// the node builds nothing bigger (a SCAN page ends sooner, an MGET is
    /// refused).
    pub async fn execute_bounded(
        &self,
        table: &TableRoute,
        shard: usize,
        req: ShardRequest,
        max_reply: usize,
    ) -> Result<OpReply, ClusterError> {
        self.execute_from(table, shard, req, max_reply, Instant::now())
            .await
    }

    /// Point reads of one pipeline (`(table, shard, read, reply limit)`),
    /// their replies in the same order. Every read's first attempt is
    /// queued at once, on the streams to the nodes that answer them (a
    /// linearizable read to its group's cached leader, a READONLY read to a
    /// replica in turn), under one timer for all of them. A read with no
    /// cached leader, or whose first attempt failed in any way, then goes
    /// the whole way of [`ShardClient::execute_bounded`] (a read is safe to
    /// send again), its deadline running from the start.
    pub async fn read_many(
        &self,
        reads: Vec<(&TableRoute, usize, ShardRequest, usize)>,
    ) -> Vec<Result<OpReply, ClusterError>> {
        let started = Instant::now();
        let mut out: Vec<Option<Result<OpReply, ClusterError>>> =
            reads.iter().map(|_| None).collect();
        // Where each read's first attempt went: (node, group, eventual).
        let mut sent: Vec<Option<(u64, u64, bool)>> = reads.iter().map(|_| None).collect();
        let timeout = self.config.rpc_timeout.min(self.config.request_timeout);
        let routes = self.routes();
        let mut by_addr: HashMap<&str, Vec<(usize, StreamRequest)>> = HashMap::new();
        let mut turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for (i, (table, shard, req, max_reply)) in reads.iter().enumerate() {
            let ShardRequest::Read { linearizable, .. } = req else {
                continue;
            };
            let Some(sd) = table.desc.shards.get(*shard) else {
                continue;
            };
            let gid = sd.group_id;
            let node = if *linearizable {
                self.cached_leader(gid).filter(|&l| !self.is_suspect(l))
            } else {
                (!sd.replicas.is_empty()).then(|| self.in_turn(&sd.replicas, &mut turn))
            };
            let Some(node) = node else { continue };
            let Some(addr) = routes.addrs.get(&node) else {
                continue;
            };
            // One that cannot be sent says why on the whole way.
            let Ok(mut request) = stream_request(gid, req, *max_reply) else {
                continue;
            };
            request.timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
            sent[i] = Some((node, gid, !linearizable));
            by_addr.entry(addr.as_str()).or_default().push((i, request));
        }
        let gathered = Gathered::new(reads.len());
        let mut queued = false;
        for (addr, items) in by_addr {
            queued = true;
            let unqueued =
                self.streams
                    .queue_gathered(addr, || self.transport.peer(addr), items, &gathered);
            for i in unqueued {
                sent[i] = None;
            }
        }
        if queued {
            let timely = tokio::time::timeout(timeout, gathered.all()).await.is_ok();
            for (i, got) in gathered.take().into_iter().enumerate() {
                let Some(got) = got else { continue };
                if let Some((node, gid, eventual)) = sent[i].take() {
                    out[i] = self.first_reply(node, gid, eventual, got);
                }
            }
            if !timely {
                // No answer in time: as for one request, the node is a
                // suspect and the read goes elsewhere.
                for (node, gid, _) in sent.iter_mut().filter_map(Option::take) {
                    self.suspect(node, gid);
                }
            }
        }
        let rest = reads
            .into_iter()
            .zip(&out)
            .filter(|(_, done)| done.is_none())
            .map(|((table, shard, req, max_reply), _)| {
                self.execute_from(table, shard, req, max_reply, started)
            });
        let mut rest = futures::future::join_all(rest).await.into_iter();
        out.into_iter()
            .map(|done| match done {
                Some(r) => r,
                None => rest
                    .next()
                    .unwrap_or_else(|| Err(ClusterError::Internal("a read got no reply".into()))),
            })
            .collect()
    }

    /// What a read's first attempt on `node` got: its reply, or `None` to
    /// send it again the whole way (noting what the failure says, as
    /// [`ShardClient::attempt`] does).
    fn first_reply(
        &self,
        node: u64,
        gid: u64,
        eventual: bool,
        got: Result<Vec<u8>, CallError>,
    ) -> Option<Result<OpReply, ClusterError>> {
        match got {
            Ok(bytes) => {
                self.answered(node);
                match codec::decode::<Result<OpReply, ShardError>>(Format::ShardReply, &bytes) {
                    Ok(Ok(reply)) => Some(Ok(reply)),
                    Ok(Err(ShardError::NotLeader { leader, .. })) if !eventual => {
                        self.set_leader(gid, leader);
                        None
                    }
                    _ => None,
                }
            }
            Err(_) => {
                self.suspect(node, gid);
                None
            }
        }
    }

    /// The next of `replicas` in `turn` that is not a suspect, or just the
    /// next one if all are. `replicas` is not empty.
    fn in_turn(&self, replicas: &[u64], turn: &mut usize) -> u64 {
        let n = replicas.len().max(1);
        for _ in 0..n {
            *turn += 1;
            let r = replicas[*turn % n];
            if !self.is_suspect(r) {
                return r;
            }
        }
        *turn += 1;
        replicas[*turn % n]
    }

    /// [`ShardClient::execute_bounded`] for a request first tried at
    /// `started`: its deadline runs from then.
    async fn execute_from(
        &self,
        table: &TableRoute,
        shard: usize,
        req: ShardRequest,
        max_reply: usize,
        started: Instant,
    ) -> Result<OpReply, ClusterError> {
        let sd = table
            .desc
            .shards
            .get(shard)
            .ok_or_else(|| ClusterError::Internal(format!("no shard {shard}")))?;
        let gid = sd.group_id;
        let no_quorum = || ClusterError::NoQuorum {
            group: gid,
            table: table.desc.name.clone(),
        };
        // Why the replicas could not be reached, when TLS says so: what the
        // client hears instead of a bare "no quorum" at the deadline.
        let mut unreachable: Option<String> = None;
        let give_up = |unreachable: &Option<String>| match unreachable {
            Some(why) => ClusterError::Unreachable {
                group: gid,
                table: table.desc.name.clone(),
                why: why.clone(),
            },
            None => no_quorum(),
        };
        let eventual = matches!(
            req,
            ShardRequest::Read {
                linearizable: false,
                ..
            }
        );
        let resend_safe = matches!(
            req,
            ShardRequest::Read { .. }
                | ShardRequest::ReadVersions { .. }
                | ShardRequest::WaitFilled { .. }
                | ShardRequest::WaitFilledFor { .. }
                | ShardRequest::CancelWaits { .. }
                | ShardRequest::PubSubInterest { .. }
                | ShardRequest::PubSubPoll { .. }
                | ShardRequest::PubSubChannels { .. }
        );
        // A script runs for as long as it runs (Redis sets no limit; SCRIPT
        // KILL ends one): its answer is awaited up to SCRIPT_WAIT, and a
        // node that dies meanwhile is noticed by the connection's HTTP/2
        // keepalive instead of the RPC timeout.
        let script = matches!(req, ShardRequest::Script(_));
        let (request_timeout, rpc_timeout) = if script {
            (SCRIPT_WAIT, SCRIPT_WAIT)
        } else {
            (self.config.request_timeout, self.config.rpc_timeout)
        };
        let request = stream_request(gid, &req, max_reply)?;
        let deadline = started + request_timeout;
        let mut turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A suspect cached leader is not asked first; a leader named by a
        // not-leader reply is, unless it already failed this request (it
        // may have come back and still lead).
        let cached = if eventual {
            None
        } else {
            self.cached_leader(gid)
        };
        let mut hint = cached.filter(|&l| !self.is_suspect(l));
        let mut tried: Vec<u64> = Vec::new();
        let mut backoff = Duration::from_millis(20);
        loop {
            let target = match hint.take() {
                // A replica being added by a move may already lead.
                Some(l)
                    if (sd.replicas.contains(&l) || sd.learners.contains(&l))
                        && !(tried.contains(&l) && self.is_suspect(l)) =>
                {
                    l
                }
                _ => self.in_turn(&sd.replicas, &mut turn),
            };
            tried.push(target);
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(give_up(&unreachable));
            }
            match self
                .attempt(
                    target,
                    &request,
                    remaining.min(rpc_timeout),
                    eventual,
                    resend_safe,
                )
                .await
            {
                Ok(reply) => {
                    // The cache is written only when it may have changed:
                    // another leader, or an earlier attempt that failed
                    // (and may have dropped the cached one).
                    if !eventual && (cached != Some(target) || tried.len() > 1) {
                        self.set_leader(gid, Some(target));
                    }
                    return Ok(reply);
                }
                Err(Attempt::Fail(ClusterError::NoQuorum { .. })) => return Err(no_quorum()),
                Err(Attempt::Fail(ClusterError::WriteTimedOut { .. })) => {
                    return Err(ClusterError::WriteTimedOut {
                        group: gid,
                        table: table.desc.name.clone(),
                    })
                }
                Err(Attempt::Fail(e)) => return Err(e),
                Err(Attempt::Unreachable(why)) => {
                    unreachable = Some(why);
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if remaining.is_zero() {
                        return Err(give_up(&unreachable));
                    }
                    self.stats
                        .backoffs
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(backoff.min(remaining)).await;
                    backoff = (backoff * 2).min(Duration::from_millis(300));
                }
                Err(Attempt::Retry { leader }) => {
                    if !eventual {
                        self.set_leader(gid, leader);
                    }
                    let bump = |n: &std::sync::atomic::AtomicU64| {
                        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    };
                    if let Some(l) = leader {
                        if l != target {
                            bump(&self.stats.redirects);
                            hint = Some(l);
                            continue;
                        }
                    }
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if remaining.is_zero() {
                        return Err(give_up(&unreachable));
                    }
                    bump(&self.stats.backoffs);
                    tokio::time::sleep(backoff.min(remaining)).await;
                    backoff = (backoff * 2).min(Duration::from_millis(300));
                }
            }
        }
    }

    async fn attempt(
        &self,
        node: u64,
        req: &StreamRequest,
        timeout: Duration,
        eventual: bool,
        resend_safe: bool,
    ) -> Result<OpReply, Attempt> {
        let gid = req.group_id;
        let addr = self
            .routes()
            .addrs
            .get(&node)
            .cloned()
            .ok_or(Attempt::Retry { leader: None })?;
        let mut req = req.clone();
        req.timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        let call = self
            .streams
            .call(&addr, || self.transport.peer(&addr), req, timeout);
        let reply = match call.await {
            // No answer in time: for a write the outcome is unknown; a read
            // may go to another replica.
            Err(CallError::TimedOut) => {
                self.suspect(node, gid);
                return Err(if eventual || resend_safe {
                    Attempt::Retry { leader: None }
                } else {
                    Attempt::Fail(self.timed_out(gid, resend_safe))
                });
            }
            Err(CallError::Tls(why)) => {
                self.suspect(node, gid);
                return Err(Attempt::Unreachable(why));
            }
            Err(CallError::NeverSent(why) | CallError::Refused(why)) => {
                tracing::debug!(node, group = gid, "not sent: {why}");
                self.suspect(node, gid);
                return Err(Attempt::Retry { leader: None });
            }
            Err(CallError::Lost(why)) => {
                tracing::debug!(node, group = gid, "lost: {why}");
                self.suspect(node, gid);
                if !resend_safe {
                    return Err(Attempt::Fail(ClusterError::TryAgain(format!(
                        "the connection to node {node} broke during a write to shard {gid}: \
                         it may or may not have been applied"
                    ))));
                }
                return Err(Attempt::Retry { leader: None });
            }
            Ok(reply) => {
                self.answered(node);
                reply
            }
        };
        let result: Result<OpReply, ShardError> = codec::decode(Format::ShardReply, &reply)
            .map_err(|e| Attempt::Fail(ClusterError::Internal(format!("bad reply: {e}"))))?;
        match result {
            Ok(r) => Ok(r),
            Err(ShardError::NotLeader { leader, addr: _ }) => Err(Attempt::Retry { leader }),
            Err(ShardError::UnknownGroup(_)) => Err(Attempt::Retry { leader: None }),
            Err(ShardError::Unavailable(_)) => Err(Attempt::Retry { leader: None }),
            Err(ShardError::NoQuorum(_)) => Err(Attempt::Retry { leader: None }),
            Err(ShardError::Timeout) => {
                // The leader could not commit in time: maybe it is cut off
                // from its peers. Ask the replicas afresh next time.
                if self.cached_leader(gid) == Some(node) {
                    self.set_leader(gid, None);
                }
                Err(Attempt::Fail(self.timed_out(gid, resend_safe)))
            }
            Err(ShardError::OutcomeUnknown(e)) => {
                self.stats
                    .outcome_unknown
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(Attempt::Fail(ClusterError::TryAgain(format!(
                    "the write to shard {gid} may or may not have been applied: {e}"
                ))))
            }
            Err(ShardError::Storage(e)) => Err(Attempt::Fail(ClusterError::Internal(e))),
            Err(ShardError::BadRequest(e)) => Err(Attempt::Fail(ClusterError::Internal(e))),
            Err(ShardError::Corrupt(c)) => Err(Attempt::Fail(ClusterError::Corrupt(c))),
        }
    }

    /// The error for a request that got no answer in time. A read simply
    /// failed; a write may still commit later, so its outcome is unknown
    /// (counted) and the message says so.
    fn timed_out(&self, gid: u64, read: bool) -> ClusterError {
        let (group, table) = (gid, String::new());
        if read {
            ClusterError::NoQuorum { group, table }
        } else {
            self.stats
                .outcome_unknown
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ClusterError::WriteTimedOut { group, table }
        }
    }

    /// Run one membership step on `node`, which must lead group `gid`.
    /// Returns the group's voters afterwards. Not retried: the rebalancer
    /// re-reads the group's state and decides again.
    pub async fn change_membership(
        &self,
        node: u64,
        gid: u64,
        change: &MembershipChange,
    ) -> Result<Vec<u64>, ClusterError> {
        let mut client = self.client(node).map_err(ClusterError::Internal)?;
        let req = ChangeMembershipRequest {
            group_id: gid,
            change: codec::encode(Format::MembershipChange, change)
                .map_err(|e| ClusterError::Internal(e.to_string()))?,
        };
        let reply = tokio::time::timeout(Duration::from_secs(30), client.change_membership(req))
            .await
            .map_err(|_| ClusterError::TryAgain(format!("node {node} did not answer in time")))?
            .map_err(|s| ClusterError::TryAgain(format!("node {node}: {}", s.message())))?;
        let result: Result<OpReply, ShardError> =
            codec::decode(Format::ShardReply, &reply.into_inner().reply)
                .map_err(|e| ClusterError::Internal(format!("bad reply: {e}")))?;
        match result {
            Ok(OpReply::Array(v)) => Ok(v
                .into_iter()
                .filter_map(|r| match r {
                    OpReply::Int(i) => Some(i as u64),
                    _ => None,
                })
                .collect()),
            Ok(other) => Err(ClusterError::Internal(format!(
                "unexpected reply {other:?}"
            ))),
            Err(e) => Err(ClusterError::TryAgain(format!(
                "group {gid} on node {node}: {e}"
            ))),
        }
    }

    /// Ask a node about its replicas (all when `gids` is empty).
    pub async fn node_status(&self, node: u64, gids: Vec<u64>) -> Result<NodeStatus, ClusterError> {
        let mut client = self.client(node).map_err(ClusterError::Internal)?;
        let reply = tokio::time::timeout(
            Duration::from_secs(2),
            client.status(StatusRequest { group_ids: gids }),
        )
        .await
        .map_err(|_| ClusterError::Internal(format!("node {node} did not answer")))?
        .map_err(|s| ClusterError::Internal(format!("node {node}: {}", s.message())))?;
        serde_json::from_slice(&reply.into_inner().json)
            .map_err(|e| ClusterError::Internal(e.to_string()))
    }
}
