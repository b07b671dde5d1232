//! The replicas a node hosts: creating, opening, serving and destroying them.
//!
//! [`Host`] owns every shard replica on the node. A replica is recorded in
//! RocksDB (`raft_state`, tag `REPLICA`) before its Raft group starts, so a
//! node restarted after `kill -9` reopens exactly the replicas it had and they
//! rejoin their groups from their own logs. Which replicas *should* exist is
//! decided elsewhere (the reconciler in `node::reconcile`); this module only
//! carries that out, and serves reads and writes on the replicas it has.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::{BasicNode, ServerState};
use serde::{Deserialize, Serialize};

use super::apply::{admit, apply_read, count_live, scan_page_of};
use super::command::{Limits, LogCmd, OpReply, ReadOp, ShardRequest, TxnCmd};
use super::driver::{batch_read, batch_result, BatchGroup, Driver};
use super::elements::ReadView;
use super::engine::{
    data_key, group_range, state_key, state_key_with, tag, Cf, DbView, Engine, EngineError, Op,
};
use super::hibernate::{HibernateConfig, Hibernation, Sleep};
use super::lease::Lease;
use super::network::{NetworkFactory, Transport};
use super::proposer;
use super::store::Raft;
use super::store::{destroy_group, DbRead, LogStore, StateMachine};
use super::types::NodeId;
use super::value::{Corrupt, Kind, Stored};
use super::ShardError;
use crate::config::RaftEngine;

/// What the node records about a replica it hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRecord {
    pub group_id: u64,
    pub table: String,
    pub shard: u32,
    /// What drives the group (its table's engine; absent: openraft).
    #[serde(default, skip_serializing_if = "RaftEngine::is_openraft")]
    pub engine: RaftEngine,
    /// A batch-engine group's first voters: its configuration when this
    /// node creates its log (an openraft group learns them from the
    /// replica that initializes it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub voters: Vec<NodeId>,
}

pub struct Replica {
    pub record: ReplicaRecord,
    pub driver: Driver,
    pub sm: StateMachine,
    /// Evidence for answering linearizable reads without a network round.
    pub lease: Arc<Lease>,
    reads: ReadBatcher,
    /// Set by [`Host::remove`] before the group's data is deleted: a read
    /// that overlapped the deletion must not be answered (found by the chaos
    /// harness: a GET on the leader that was just moved off answered nil).
    removed: std::sync::atomic::AtomicBool,
    /// Plain writes and one-phase transactions waiting to be proposed
    /// together.
    proposer: Arc<proposer::Proposer>,
    target: proposer::Target,
    /// Held by a script from its run to its entry's apply, so the scripts
    /// of a group never race each other ([`Host::run_script`]).
    script_turn: tokio::sync::Mutex<()>,
    /// Read-held by every 2PC step's proposal (PREPARE, COMMIT, ABORT); a
    /// script that holds the group's writes back takes it to write (with
    /// [`proposer::Proposer::pause`] for the plain writes and one-phase
    /// transactions).
    txn_gate: tokio::sync::RwLock<()>,
    /// Whether the group hibernates here (`hibernate`).
    pub sleep: Sleep,
    /// Requests served and their time here (`served`).
    pub served: super::served::Served,
}

impl Replica {
    /// The replica's openraft instance, when openraft drives its group.
    pub fn openraft(&self) -> Option<&Raft> {
        self.driver.openraft()
    }

    /// How the group's entries are proposed here.
    pub fn target(&self) -> &proposer::Target {
        &self.target
    }

    /// The group's proposal and leader-change counts on this replica.
    pub fn counters(&self) -> &proposer::GroupCounters {
        &self.target.counters
    }

    fn check_not_removed(&self) -> Result<(), ShardError> {
        if self.removed.load(std::sync::atomic::Ordering::SeqCst) {
            Err(ShardError::UnknownGroup(self.record.group_id))
        } else {
            Ok(())
        }
    }
}

/// Shares one ReadIndex round among the linearizable reads waiting for it.
///
/// Every read takes a ticket on arrival. One leadership check runs at a
/// time; when it starts it covers every ticket issued so far, so each read it
/// serves arrived before its quorum round began (which is what makes the read
/// linearizable). Reads arriving meanwhile wait for the next round. Under
/// load that is one heartbeat round per batch instead of one per read.
#[derive(Default)]
struct ReadBatcher {
    issued: std::sync::atomic::AtomicU64,
    covered: std::sync::atomic::AtomicU64,
    round: tokio::sync::Mutex<()>,
}

/// A membership step of a replica move, run by the group's leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Add a non-voting replica and start replicating to it (returns at
    /// once; progress shows in the leader's status). A no-op when the node
    /// is already a member.
    AddLearner { id: NodeId, addr: String },
    /// Make exactly these nodes the voters (joint consensus inside openraft);
    /// members left out are removed, learners outside the set too.
    SetVoters(Vec<NodeId>),
    /// Remove a learner (undo of a move that did not finish).
    RemoveLearner(NodeId),
    /// Hand the group's leadership to this voter (leader balance; returns
    /// once openraft took it: the target's election follows). A no-op when
    /// the node asked already leads.
    TransferLeader(NodeId),
}

/// Timeouts and Raft settings for every group on the node.
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub raft: Arc<openraft::Config>,
    /// How long a write may wait for its commit before the client is told
    /// the shard is unavailable.
    pub write_timeout: Duration,
    /// How long a linearizable read may wait for the leadership check.
    pub read_timeout: Duration,
    /// What this node enforces on requests, whatever a router allowed.
    pub limits: Limits,
    /// When idle groups hibernate.
    pub hibernate: HibernateConfig,
    /// The batch loop's heartbeat and election timeout, in its ticks
    /// ([`super::batch_clock`]).
    pub batch_clock: (usize, usize),
}

impl HostConfig {
    /// The settings a node runs its groups with, from its configuration.
    pub fn from_node(c: &crate::config::NodeConfig) -> anyhow::Result<HostConfig> {
        Ok(HostConfig {
            raft: Arc::new(super::raft_config(c)?),
            write_timeout: Duration::from_millis(c.write_timeout_ms),
            read_timeout: Duration::from_millis(c.read_timeout_ms),
            limits: super::limits(c)?,
            hibernate: super::hibernate::HibernateConfig::from_node(c),
            batch_clock: super::batch_clock(c)?,
        })
    }
}

/// Runs of one script before it gives up on keys that keep changing.
const MAX_SCRIPT_ATTEMPTS: u32 = 50;
/// Runs of a script that lost to other writes before it holds the group's
/// other writes back for its next run ([`proposer::Proposer::pause`] and
/// the 2PC gate).
const SCRIPT_ATTEMPTS_BEFORE_PAUSE: u32 = 2;

pub struct Host {
    pub node_id: NodeId,
    pub engine: Arc<Engine>,
    pub transport: Arc<Transport>,
    pub hibernation: Arc<Hibernation>,
    config: HostConfig,
    replicas: RwLock<HashMap<u64, Arc<Replica>>>,
    /// Serializes create/remove so two reconcile passes cannot race.
    lifecycle: tokio::sync::Mutex<()>,
    /// Replicas the reconciler keeps although no readable record names them
    /// (orphaned), with why; shown by `shoal status` and `INFO cluster`.
    kept: RwLock<BTreeMap<u64, String>>,
    /// Pub/Sub interest and queues of the groups this node leads.
    pub pubsub: Arc<crate::shard::pubsub::Registry>,
    /// The `notify-keyspace-events` setting and the tables' indexes, as the
    /// node's etcd watch last saw them.
    pub keyspace_events: Arc<super::notify::KeyspaceEvents>,
    /// The script runner and the scripts running now.
    pub scripts: super::script::Scripts,
    /// The node's batch-engine loop, once one runs: where peers' batches
    /// (`KIND_BATCH`) go ([`Host::deliver_batch`]).
    batch: RwLock<Option<super::batch::Handle<super::command::OpReply>>>,
    /// Batch-engine snapshots being received, chunk by chunk.
    batch_snapshots: super::batch::wire::Incoming,
    /// The state machines of the batch groups hosted here, which the
    /// loop's applier applies to ([`Host::start_batch`]).
    machines: super::batch::apply::Machines,
}

impl Host {
    pub fn new(
        node_id: NodeId,
        engine: Arc<Engine>,
        transport: Arc<Transport>,
        config: HostConfig,
    ) -> Arc<Host> {
        Arc::new(Host {
            node_id,
            engine,
            transport,
            hibernation: Hibernation::new(node_id, config.hibernate),
            config,
            replicas: RwLock::new(HashMap::new()),
            lifecycle: tokio::sync::Mutex::new(()),
            kept: RwLock::new(BTreeMap::new()),
            pubsub: Arc::new(crate::shard::pubsub::Registry::new()),
            keyspace_events: Arc::default(),
            scripts: super::script::Scripts::default(),
            batch: RwLock::new(None),
            batch_snapshots: Default::default(),
            machines: Default::default(),
        })
    }

    /// Start the node's batch-engine loop on a thread of its own, its
    /// state machines the replicas' and its messages on the node's Raft
    /// streams; `runtime` runs their async work (the loop's thread is not
    /// one of its workers). Stop it with [`Host::stop_batch`].
    pub fn start_batch(
        &self,
        runtime: tokio::runtime::Handle,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        use super::batch;
        let applier = batch::ShardApplier::new(self.engine.clone(), runtime.clone())
            .shared(self.machines.clone());
        let transport = batch::wire::StreamTransport::new(self.transport.clone(), runtime);
        let mut config = batch::BatchConfig::new(self.node_id);
        config.hibernate_after = self.hibernation.config.hibernate_after;
        (config.heartbeat_ticks, config.election_ticks) = self.config.batch_clock;
        let (handle, thread) = batch::start(config, self.engine.clone(), applier, transport)?;
        self.set_batch(handle);
        Ok(thread)
    }

    /// Ask the node's batch loop to stop (its waiters hear it stopped).
    pub fn stop_batch(&self) {
        if let Some(h) = self.batch_loop() {
            h.stop();
        }
    }

    /// Route peers' batch-engine messages to `handle`'s loop (a restarted
    /// loop replaces the one before).
    pub fn set_batch(&self, handle: super::batch::Handle<super::command::OpReply>) {
        if let Ok(mut b) = self.batch.write() {
            *b = Some(handle);
        }
    }

    /// The node's batch-engine loop, if one runs.
    pub fn batch_loop(&self) -> Option<super::batch::Handle<super::command::OpReply>> {
        self.batch.read().ok().and_then(|b| b.clone())
    }

    /// Take one chunk of a peer's batch-engine snapshot of `gid`
    /// (`RaftService.BatchSnapshot`), at most `limit` bytes in all; the
    /// last one hands the whole snapshot to this node's loop. An error
    /// refuses the chunk and drops the snapshot (the sender starts over).
    pub fn receive_batch_snapshot(
        &self,
        gid: u64,
        raw: &[u8],
        limit: u64,
    ) -> Result<(), super::batch::wire::WireError> {
        let Some(msg) = self.batch_snapshots.chunk(gid, self.node_id, raw, limit)? else {
            return Ok(());
        };
        let delivered = self
            .batch_loop()
            .is_some_and(|h| h.deliver_snapshot(gid, msg));
        if delivered {
            Ok(())
        } else {
            Err(super::batch::wire::WireError::Snapshot(
                "no batch-engine loop runs on this node".into(),
            ))
        }
    }

    /// Hand a peer's batch of Raft messages (`KIND_BATCH`) to this node's
    /// loop. `Ok(false)`: dropped (no loop runs here, or its inbox is
    /// full); an error: the batch is refused whole.
    pub fn deliver_batch(&self, raw: &[u8]) -> Result<bool, super::batch::wire::WireError> {
        let Some(handle) = self.batch_loop() else {
            return Ok(false);
        };
        super::batch::wire::deliver(&handle, self.node_id, raw)
    }

    /// Record which replicas are kept as orphans, and why (replaces the
    /// previous set).
    pub fn set_kept(&self, kept: BTreeMap<u64, String>) {
        if let Ok(mut k) = self.kept.write() {
            *k = kept;
        }
    }

    /// Why the replica of `gid` is kept as an orphan, if it is.
    pub fn kept_reason(&self, gid: u64) -> Option<String> {
        self.kept.read().ok()?.get(&gid).cloned()
    }

    /// Evidence, from this replica alone, that this node is no longer part
    /// of group `gid` (a move or drain finished), or `None`: the replica
    /// never held anything, or its applied (committed) membership leaves
    /// this node out. The reconciler asks the group's leader when this says
    /// nothing (`node::reconcile`). The descriptor alone is never enough to
    /// delete data.
    pub async fn left_group_locally(&self, gid: u64) -> Option<String> {
        use openraft::storage::RaftStateMachine;
        let replica = self.get(gid)?;
        let me = self.node_id;
        let raft = match &replica.driver {
            Driver::Openraft(raft) => raft,
            Driver::Batch(g) => {
                // The configuration this replica applied last.
                let m = g.role.membership();
                if m.voters.is_empty() && m.learners.is_empty() {
                    return Some("its replica here was never given the group's configuration and holds nothing".into());
                }
                let named =
                    m.voters.contains(&me) || m.outgoing.contains(&me) || m.learners.contains(&me);
                return (!m.joint() && !named).then(|| {
                    format!(
                        "its applied configuration, voters {:?}, no longer holds this node",
                        m.voters
                    )
                });
            }
        };
        let m = raft.metrics().borrow_watched().clone();
        let effective = m.membership_config.membership();
        if m.last_log_index.is_none()
            && m.last_applied.is_none()
            && effective.nodes().next().is_none()
        {
            return Some("its replica here was never initialized and holds nothing".into());
        }
        let (_, applied) = replica.sm.clone().applied_state().await.ok()?;
        let mem = applied.membership();
        let uniform = mem.get_joint_config().len() == 1;
        if uniform && mem.nodes().next().is_some() && mem.get_node(&me).is_none() {
            let voters: Vec<NodeId> = mem.voter_ids().collect();
            return Some(format!(
                "its committed membership, voters {voters:?}, no longer holds this node"
            ));
        }
        None
    }

    pub fn get(&self, gid: u64) -> Option<Arc<Replica>> {
        self.replicas.read().ok()?.get(&gid).cloned()
    }

    pub fn group_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .replicas
            .read()
            .map(|r| r.keys().copied().collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    pub fn replicas(&self) -> Vec<Arc<Replica>> {
        let mut v: Vec<Arc<Replica>> = self
            .replicas
            .read()
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by_key(|r| r.record.group_id);
        v
    }

    /// The replicas recorded on disk (whether started or not). A record that
    /// does not decode is an error, not a replica less.
    pub async fn recorded(&self) -> Result<Vec<ReplicaRecord>, ShardError> {
        self.engine
            .read(|db| {
                let rows = db.scan(Cf::State, &[], &[0xff; 9], usize::MAX)?;
                rows.into_iter()
                    .filter(|(k, _)| k.len() == 9 && k[8] == tag::REPLICA)
                    .map(|(k, v)| {
                        serde_json::from_slice::<ReplicaRecord>(&v).map_err(|e| {
                            EngineError::Corrupt(format!(
                                "replica record of group {}: {e}",
                                u64::from_be_bytes(k[..8].try_into().unwrap_or_default())
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(ShardError::from)
    }

    /// Reopen every replica recorded on disk (start-up after a stop or crash).
    pub async fn open_recorded(&self) -> Result<usize, ShardError> {
        let records = self.recorded().await?;
        let n = records.len();
        for record in records {
            self.start(record).await?;
        }
        Ok(n)
    }

    /// Make sure this node hosts a replica of the group. `members` is the
    /// group's initial membership; when `initializer` is set and the group has
    /// never been initialized, this replica initializes it (exactly one
    /// replica of a new group does, the first in the descriptor).
    pub async fn ensure(
        &self,
        record: ReplicaRecord,
        members: BTreeMap<NodeId, BasicNode>,
        initializer: bool,
    ) -> Result<(), ShardError> {
        let replica = match self.get(record.group_id) {
            Some(r) => r,
            None => {
                let _guard = self.lifecycle.lock().await;
                match self.get(record.group_id) {
                    Some(r) => r,
                    None => {
                        // A group this node hosted before and removed may
                        // have left rows behind (an older version wrote the
                        // applied index back after the deletion): a new
                        // replica starts from nothing, or it would skip the
                        // entries it believes it applied.
                        let gid = record.group_id;
                        let recorded = self
                            .engine
                            .read(move |db| db.get(Cf::State, &state_key(gid, tag::REPLICA)))
                            .await?;
                        if recorded.is_none() {
                            destroy_group(&self.engine, gid).await?;
                        }
                        let json = serde_json::to_vec(&record)
                            .map_err(|e| ShardError::Storage(e.to_string()))?;
                        self.engine
                            .write(
                                vec![Op::Put(
                                    Cf::State,
                                    state_key(record.group_id, tag::REPLICA),
                                    json,
                                )],
                                true,
                            )
                            .await?;
                        let r = self.start(record.clone()).await?;
                        tracing::info!(
                            group = record.group_id,
                            table = %record.table,
                            shard = record.shard,
                            "replica created"
                        );
                        r
                    }
                }
            }
        };
        // A batch group's replicas each create it with its first voters;
        // the one that would initialize an openraft group stands first, so
        // a new table's leaders start where placement spread them.
        if let Driver::Batch(g) = &replica.driver {
            if initializer && g.role.leader().is_none() {
                g.handle.campaign(g.gid);
            }
        }
        let raft = replica.openraft();
        if let Some(raft) = raft.filter(|_| initializer) {
            if !raft.is_initialized().await.unwrap_or(true) {
                match raft.initialize(members).await {
                    Ok(()) => tracing::info!(group = record.group_id, "group initialized"),
                    Err(e) => tracing::debug!(group = record.group_id, "initialize: {e}"),
                }
            }
        }
        Ok(())
    }

    async fn start(&self, record: ReplicaRecord) -> Result<Arc<Replica>, ShardError> {
        let gid = record.group_id;
        let sm = StateMachine::open(self.engine.clone(), gid).await?;
        let publisher = Arc::new(super::notify::Publisher {
            gid,
            table: record.table.clone(),
            events: self.keyspace_events.clone(),
            registry: self.pubsub.clone(),
            leads: std::sync::OnceLock::new(),
        });
        sm.set_publisher(publisher.clone());
        let lease = Arc::new(Lease::new(
            self.node_id,
            Duration::from_millis(self.config.raft.election_timeout_max),
        ));
        let counters = Arc::new(proposer::GroupCounters::default());
        let driver = match record.engine {
            RaftEngine::Openraft => {
                let raft = self.start_openraft(gid, &sm, &lease).await?;
                let _ = publisher
                    .leads
                    .set(super::notify::Leads::Openraft(raft.metrics()));
                spawn_leader_logger(gid, raft.clone(), counters.clone());
                Driver::Openraft(raft)
            }
            RaftEngine::Batch => {
                let group = self.start_batch_group(&record, &sm).await?;
                let _ = publisher.leads.set(super::notify::Leads::Batch(
                    group.role.clone(),
                    self.node_id,
                ));
                Driver::Batch(group)
            }
        };
        let (node_id, transport) = (self.node_id, self.transport.clone());
        let target = proposer::Target {
            driver: driver.clone(),
            write_timeout: self.config.write_timeout,
            not_leader: Arc::new(move |leader, node| not_leader(node_id, &transport, leader, node)),
            counters,
        };
        let replica = Arc::new(Replica {
            record,
            driver,
            sm,
            lease,
            reads: ReadBatcher::default(),
            removed: Default::default(),
            proposer: Arc::default(),
            target,
            script_turn: Default::default(),
            txn_gate: Default::default(),
            sleep: Sleep::default(),
            served: Default::default(),
        });
        if let Ok(mut map) = self.replicas.write() {
            map.insert(gid, replica.clone());
        }
        Ok(replica)
    }

    /// Start `gid`'s openraft instance over its stored log.
    async fn start_openraft(
        &self,
        gid: u64,
        sm: &StateMachine,
        lease: &Arc<Lease>,
    ) -> Result<Raft, ShardError> {
        let log = LogStore::new(self.engine.clone(), gid);
        sm.follow_log(log.log_bytes());
        let network = NetworkFactory {
            transport: self.transport.clone(),
            gid,
            lease: lease.clone(),
        };
        Raft::new(
            self.node_id,
            self.config.raft.clone(),
            network,
            log,
            sm.clone(),
        )
        .await
        .map_err(|e| ShardError::Storage(format!("cannot start group {gid}: {e}")))
    }

    /// Open `record`'s group on the node's batch loop, applying to `sm`
    /// (created with the record's first voters when this node has no log
    /// of it; with none for a replica a move adds, which waits for its
    /// leader's snapshot). A node without a loop refuses: the group is not
    /// created.
    async fn start_batch_group(
        &self,
        record: &ReplicaRecord,
        sm: &StateMachine,
    ) -> Result<BatchGroup, ShardError> {
        let gid = record.group_id;
        let handle = self.batch_loop().ok_or_else(|| {
            ShardError::Unavailable(format!(
                "group {gid} runs on the batch engine, and no batch loop runs on this node"
            ))
        })?;
        if let Ok(mut m) = self.machines.lock() {
            m.insert(gid, sm.clone());
        }
        let opened = handle
            .open_group(gid, record.voters.clone())
            .await
            .map_err(|_| ShardError::Unavailable("the batch loop stopped".into()))
            .and_then(|r| r.map_err(|e| ShardError::Storage(format!("cannot open group: {e}"))));
        let role = opened.and_then(|()| {
            handle
                .role(gid)
                .ok_or_else(|| ShardError::Storage(format!("group {gid} has no role")))
        });
        match role {
            Ok(role) => Ok(BatchGroup {
                gid,
                me: self.node_id,
                handle,
                role,
            }),
            Err(e) => {
                if let Ok(mut m) = self.machines.lock() {
                    m.remove(&gid);
                }
                Err(e)
            }
        }
    }

    /// Stop the group's replica and delete its log, state and data.
    pub async fn remove(&self, gid: u64) -> Result<(), ShardError> {
        let _guard = self.lifecycle.lock().await;
        let replica = self.replicas.write().ok().and_then(|mut m| m.remove(&gid));
        if let Some(r) = &replica {
            r.removed.store(true, std::sync::atomic::Ordering::SeqCst);
            self.hibernation.forget(gid);
            // A batch group leaves its loop with every log write queued
            // before on disk: none lands after the deletion below.
            r.driver.shutdown().await;
            if let Ok(mut m) = self.machines.lock() {
                m.remove(&gid);
            }
            // The shutdown leaves openraft's state-machine worker running
            // the applies queued to it: fence them off before deleting.
            r.sm.close().await;
        }
        destroy_group(&self.engine, gid).await?;
        tracing::info!(group = gid, "replica removed and its data deleted");
        Ok(())
    }

    /// Serve a router's request on the replica of `gid`.
    pub async fn execute(&self, gid: u64, req: ShardRequest) -> Result<OpReply, ShardError> {
        self.execute_bounded(gid, req, usize::MAX).await
    }

    /// [`Host::execute`] for a caller that takes replies of at most
    /// `max_reply` bytes (the node's own limit applies too).
    pub async fn execute_bounded(
        &self,
        gid: u64,
        req: ShardRequest,
        max_reply: usize,
    ) -> Result<OpReply, ShardError> {
        let replica = self.get(gid).ok_or(ShardError::UnknownGroup(gid))?;
        // Blocked clients' waits are not counted: their time is waiting.
        let counted = !matches!(
            req,
            ShardRequest::WaitFilled { .. }
                | ShardRequest::WaitFilledFor { .. }
                | ShardRequest::CancelWaits { .. }
                | ShardRequest::PubSubPoll { .. }
        );
        let started = Instant::now();
        let reply = self.serve_bounded(&replica, req, max_reply).await;
        if counted {
            record_served(&replica, started, &reply);
        }
        reply
    }

    /// Answer `req` at once, on the caller's thread, when it is a point read
    /// that needs nothing to wait for: the replica is awake, a linearizable
    /// read finds the leader lease holding (`Host::in_lease`), and the
    /// keys are in memory (row cache, memtables, block cache). `None` means
    /// "take the async path" ([`Host::execute_bounded`]), which reaches the
    /// same answer the same way or waits for what this would not.
    ///
    /// The reply is what [`Host::execute_bounded`] would give; the point is
    /// what it does not cost: a stream's request that is answered here
    /// needs no future of its own on the node (one for the async path holds
    /// every request kind's state, some kilobytes moved per request).
    pub fn try_read_now(
        &self,
        gid: u64,
        req: &ShardRequest,
        max_reply: usize,
    ) -> Option<Result<OpReply, ShardError>> {
        let ShardRequest::Read {
            op,
            linearizable,
            now_ms,
        } = req
        else {
            return None;
        };
        if !is_point_read(op) {
            return None;
        }
        let replica = self.get(gid)?;
        if replica.sleep.is_asleep() || (*linearizable && !self.in_lease(&replica)) {
            return None;
        }
        let started = Instant::now();
        let max_reply = max_reply.min(self.config.limits.max_reply_len);
        let reply = self
            .engine
            .read_cached(|db| serve_read(db, gid, op, *now_ms, max_reply))?;
        if let Some(raft) = replica.openraft() {
            self.hibernation.touch(gid, &replica.sleep, raft);
        }
        // As in serve_bounded: not answered from a replica being removed.
        let reply = reply.and_then(|r| replica.check_not_removed().map(|()| r));
        record_served(&replica, started, &reply);
        Some(reply)
    }

    #[cfg(test)]
    async fn serve(&self, replica: &Replica, req: ShardRequest) -> Result<OpReply, ShardError> {
        self.serve_bounded(replica, req, usize::MAX).await
    }

    /// Serve `req` on `replica`. A read answers only if the replica was not
    /// removed before it finished reading (its data may be half deleted).
    async fn serve_bounded(
        &self,
        replica: &Replica,
        req: ShardRequest,
        max_reply: usize,
    ) -> Result<OpReply, ShardError> {
        // Writes are not checked: a committed write must not be reported as
        // never applied.
        let read = matches!(
            req,
            ShardRequest::Read { .. } | ShardRequest::ReadVersions { .. }
        );
        let reply = self.serve_unchecked(replica, req, max_reply).await?;
        if read {
            replica.check_not_removed()?;
        }
        Ok(reply)
    }

    /// Serve a request. Writes are checked against this node's [`Limits`]
    /// before they are proposed ([`admit`]): a refusal is the reply and
    /// nothing reaches the log. Reads build at most `max_reply` bytes (and
    /// at most the node's own limit).
    async fn serve_unchecked(
        &self,
        replica: &Replica,
        req: ShardRequest,
        max_reply: usize,
    ) -> Result<OpReply, ShardError> {
        let gid = replica.record.group_id;
        self.awaken(replica).await;
        let limits = self.config.limits;
        let max_reply = max_reply.min(limits.max_reply_len);
        // The blocked command a wait belongs to (0: none named).
        let client = match &req {
            ShardRequest::WaitFilledFor { client, .. } => *client,
            _ => 0,
        };
        match req {
            ShardRequest::Write(mut cmd) => match admit(&mut cmd.op, &limits) {
                Ok(()) => {
                    self.check_leader(replica)?;
                    replica.proposer.submit(&replica.target, cmd).await
                }
                Err(refused) => Ok(refused),
            },
            ShardRequest::Txn(mut entry) => match entry.admit(&limits) {
                // A one-phase transaction (a router's pipelined writes to
                // one shard, a one-shard MULTI) joins the plain writes in
                // the proposer, so pipelines of many connections share
                // entries; a script's pause holds it back like them.
                Ok(()) if matches!(entry.cmd, TxnCmd::OnePhase { .. }) => {
                    self.check_leader(replica)?;
                    replica.proposer.submit_txn(&replica.target, entry).await
                }
                Ok(()) => {
                    let _gate = replica.txn_gate.read().await;
                    self.propose(replica, LogCmd::Txn(entry)).await
                }
                Err(refused) => Ok(refused),
            },
            ShardRequest::Read {
                op: ReadOp::KeyCount,
                ..
            } => {
                // From the state machine's counter: any replica, no scan.
                let n = replica.sm.key_count().await?;
                Ok(OpReply::Int(n))
            }
            ShardRequest::Read {
                op,
                linearizable,
                now_ms,
            } => {
                if linearizable {
                    self.linearize(replica).await?;
                }
                // A point read is served here from RocksDB's memory when
                // its keys are there; a scan, or a key on disk, goes to a
                // blocking thread.
                if is_point_read(&op) {
                    let cached = self
                        .engine
                        .read_cached(|db| serve_read(db, gid, &op, now_ms, max_reply));
                    if let Some(reply) = cached {
                        return reply;
                    }
                }
                self.engine
                    .read(move |db| Ok(serve_read(db, gid, &op, now_ms, max_reply)))
                    .await?
            }
            ShardRequest::CancelWaits { client } => {
                replica.sm.waiters().cancel(client);
                Ok(OpReply::Ok)
            }
            ShardRequest::PubSubInterest {
                router,
                channels,
                patterns,
            } => {
                self.pubsub_leader(replica)?;
                let reg = self.pubsub.register(gid, router, channels, patterns);
                Ok(OpReply::Int(reg as i64))
            }
            ShardRequest::Publish {
                kind,
                channel,
                message,
            } => {
                self.pubsub_leader(replica)?;
                Ok(OpReply::Int(
                    self.pubsub.publish(gid, kind, &channel, &message),
                ))
            }
            ShardRequest::PubSubChannels { kind, pattern } => {
                self.pubsub_leader(replica)?;
                if kind == 2 {
                    let p = self.pubsub.patterns(gid);
                    return Ok(OpReply::Array(p.into_iter().map(OpReply::Bulk).collect()));
                }
                let list = self.pubsub.channels(gid, kind, pattern.as_deref());
                Ok(OpReply::Array(
                    list.into_iter()
                        .map(|(c, n)| {
                            OpReply::Array(vec![OpReply::Bulk(c), OpReply::Int(n as i64)])
                        })
                        .collect(),
                ))
            }
            ShardRequest::PubSubPoll {
                router,
                reg,
                after,
                wait_ms,
            } => {
                use crate::shard::pubsub::Polled;
                let deadline = tokio::time::Instant::now()
                    + Duration::from_millis(wait_ms.min(crate::shard::pubsub::MAX_POLL_MS));
                loop {
                    self.pubsub_leader(replica)?;
                    let wake = match self.pubsub.poll(gid, router, reg, after) {
                        Err(e) => return Ok(OpReply::Error(e)),
                        Ok(Polled::Messages(m)) => return Ok(m),
                        Ok(Polled::Wait(wake)) => wake,
                    };
                    if tokio::time::timeout_at(deadline, wake.notified())
                        .await
                        .is_err()
                    {
                        self.pubsub_leader(replica)?;
                        return Ok(OpReply::Array(vec![
                            OpReply::Int(reg as i64),
                            OpReply::Int(0),
                        ]));
                    }
                }
            }
            ShardRequest::WaitFilled {
                keys,
                kind,
                since_ms,
                wait_ms,
                now_ms,
            }
            | ShardRequest::WaitFilledFor {
                keys,
                kind,
                since_ms,
                wait_ms,
                now_ms,
                ..
            } => {
                let Some(mut wait) = replica.sm.waiters().register(&keys, since_ms, client) else {
                    return Ok(OpReply::Error(
                        "ERR too many clients blocked on this node, try again later".into(),
                    ));
                };
                // Registered first, then checked: a push applied in between
                // wakes this wait.
                let filled = self
                    .engine
                    .read(move |db| Ok(any_filled(db, gid, &keys, kind, now_ms)))
                    .await?;
                if filled {
                    return Ok(OpReply::Int(1));
                }
                let wait_for = Duration::from_millis(wait_ms.min(MAX_WAIT_MS));
                match tokio::time::timeout(wait_for, &mut wait.woken).await {
                    Ok(Ok(())) => Ok(OpReply::Int(1)),
                    _ => Ok(OpReply::Nil),
                }
            }
            ShardRequest::Script(call) => self.run_script(replica, call, max_reply).await,
            ShardRequest::ScriptKill => {
                self.check_leader(replica)?;
                Ok(OpReply::Int(self.scripts.kill(gid) as i64))
            }
            ShardRequest::ReadVersions { keys, now_ms: _ } => {
                self.linearize(replica).await?;
                // Point reads too: from memory here when they can be.
                if let Some(reply) = self.engine.read_cached(|db| read_versions(db, gid, &keys)) {
                    return reply;
                }
                self.engine
                    .read(move |db| Ok(read_versions(db, gid, &keys)))
                    .await?
            }
        }
    }

    /// Run one membership step on this node's replica, which must lead the
    /// group. Replies `Ok` with the voters after the step.
    pub async fn change_membership(
        &self,
        gid: u64,
        change: MembershipChange,
    ) -> Result<OpReply, ShardError> {
        let replica = self.get(gid).ok_or(ShardError::UnknownGroup(gid))?;
        self.awaken(&replica).await;
        self.check_leader(&replica)?;
        // The peer map follows etcd's member records only: an AddLearner
        // naming another address for a known node is refused, never
        // followed (it would send the shard's data there). An unknown node
        // is reached at the given address until its record arrives.
        if let MembershipChange::AddLearner { id, addr } = &change {
            match self.transport.peer_addr(*id) {
                Some(known) if known != *addr => {
                    return Err(ShardError::BadRequest(format!(
                        "refusing to add node {id} at {addr} as a learner of group {gid}: etcd's member record has node {id} at {known}"
                    )));
                }
                _ => {}
            }
        }
        let raft = match &replica.driver {
            Driver::Openraft(raft) => raft,
            Driver::Batch(g) => return self.change_batch_membership(g, change).await,
        };
        let membership = raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .clone();
        if let MembershipChange::TransferLeader(to) = change {
            return self.transfer_leader(&replica, to).await;
        }
        let fut = async {
            match &change {
                MembershipChange::TransferLeader(_) => Ok(None),
                MembershipChange::AddLearner { id, addr } => {
                    if membership.get_node(id).is_some() {
                        return Ok(None);
                    }
                    raft.add_learner(*id, BasicNode { addr: addr.clone() }, false)
                        .await
                        .map(Some)
                }
                MembershipChange::SetVoters(voters) => {
                    let set: std::collections::BTreeSet<NodeId> = voters.iter().copied().collect();
                    let current: std::collections::BTreeSet<NodeId> =
                        membership.voter_ids().collect();
                    let uniform = membership.get_joint_config().len() == 1;
                    let no_learners = membership.learner_ids().next().is_none();
                    if uniform && current == set && no_learners {
                        return Ok(None);
                    }
                    raft.change_membership(openraft::ChangeMembers::ReplaceAllVoters(set), false)
                        .await
                        .map(Some)
                }
                MembershipChange::RemoveLearner(id) => {
                    if !membership.learner_ids().any(|l| l == *id) {
                        return Ok(None);
                    }
                    let set = std::collections::BTreeSet::from([*id]);
                    raft.change_membership(openraft::ChangeMembers::RemoveNodes(set), false)
                        .await
                        .map(Some)
                }
            }
        };
        match tokio::time::timeout(self.config.write_timeout * 3, fut).await {
            Err(_) => Err(ShardError::Timeout),
            Ok(Ok(_)) => {
                let voters: Vec<NodeId> = raft
                    .metrics()
                    .borrow_watched()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .collect();
                tracing::info!(group = gid, ?change, ?voters, "membership changed");
                Ok(OpReply::Array(
                    voters.into_iter().map(|v| OpReply::Int(v as i64)).collect(),
                ))
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(self.not_leader(f.leader_id, f.leader_node))
            }
            Ok(Err(e)) => Err(ShardError::Unavailable(e.to_string())),
        }
    }

    /// [`Host::change_membership`] on a batch group, which this node
    /// leads: one configuration change of raft-rs per step, the same
    /// answers (the voters after the step; a step already taken answers
    /// at once). `SetVoters` enters a joint configuration when it changes
    /// more than one voter, which the leader leaves by itself; asked again
    /// while joint (a leader elected half way), it leaves it. A leader
    /// that `SetVoters` leaves out hands its leadership to a voter that
    /// stays first and answers `Unavailable`: the caller asks the new
    /// leader.
    async fn change_batch_membership(
        &self,
        g: &BatchGroup,
        change: MembershipChange,
    ) -> Result<OpReply, ShardError> {
        use raft::prelude::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};
        let gid = g.gid;
        let m = g.role.membership();
        let answer = |voters: &[NodeId]| {
            Ok(OpReply::Array(
                voters.iter().map(|v| OpReply::Int(*v as i64)).collect(),
            ))
        };
        let single = |kind: ConfChangeType, id: NodeId| {
            let mut c = ConfChangeSingle::default();
            c.set_change_type(kind);
            c.node_id = id;
            c
        };
        let not_leader = |l| self.not_leader(l, None);
        let mut cc = ConfChangeV2::default();
        match change {
            MembershipChange::TransferLeader(to) => {
                if to == self.node_id {
                    return answer(&m.voters);
                }
                if !m.voters.contains(&to) {
                    return Err(ShardError::BadRequest(format!(
                        "node {to} is not a voter of group {gid} (voters {:?})",
                        m.voters
                    )));
                }
                let started = tokio::time::timeout(
                    self.config.write_timeout,
                    g.handle.transfer_leader(gid, to),
                )
                .await;
                batch_result(started, not_leader)?;
                tracing::info!(group = gid, to, "leadership transfer started");
                return answer(&m.voters);
            }
            MembershipChange::AddLearner { id, addr } => {
                if m.voters.contains(&id) || m.outgoing.contains(&id) || m.learners.contains(&id) {
                    return answer(&m.voters);
                }
                if self.transport.peer_addr(id).is_none() {
                    self.transport.set_peer(id, addr);
                }
                cc.changes.push(single(ConfChangeType::AddLearnerNode, id));
            }
            MembershipChange::RemoveLearner(id) => {
                if !m.learners.contains(&id) {
                    return answer(&m.voters);
                }
                cc.changes.push(single(ConfChangeType::RemoveNode, id));
            }
            MembershipChange::SetVoters(target) => {
                let mut target = target;
                target.sort_unstable();
                target.dedup();
                if target.is_empty() {
                    return Err(ShardError::BadRequest(format!(
                        "group {gid} needs at least one voter"
                    )));
                }
                if !m.joint()
                    && m.voters == target
                    && m.learners.iter().all(|l| !target.contains(l))
                {
                    return answer(&m.voters);
                }
                if !target.contains(&self.node_id) {
                    // Leave the leading to a voter that stays, first (raft-rs
                    // keeps a leader its configuration leaves out leading).
                    let progress = g.role.progress();
                    let to = target
                        .iter()
                        .filter(|t| m.voters.contains(t))
                        .max_by_key(|t| progress.iter().find(|(id, _)| id == *t).map(|(_, i)| *i))
                        .copied()
                        .ok_or_else(|| {
                            ShardError::Unavailable(format!(
                                "group {gid}: no voter of {target:?} to hand the leadership to"
                            ))
                        })?;
                    let _ = tokio::time::timeout(
                        self.config.write_timeout,
                        g.handle.transfer_leader(gid, to),
                    )
                    .await;
                    return Err(ShardError::Unavailable(format!(
                        "node {} leaves group {gid}: its leadership goes to node {to} first; ask again",
                        self.node_id
                    )));
                }
                if m.joint() {
                    if m.voters != target {
                        return Err(ShardError::Unavailable(format!(
                            "group {gid} is changing its voters to {:?}: ask again once it has",
                            m.voters
                        )));
                    }
                    // An empty change leaves the joint configuration.
                } else {
                    for &id in target.iter().filter(|id| !m.voters.contains(id)) {
                        cc.changes.push(single(ConfChangeType::AddNode, id));
                    }
                    for &id in m.voters.iter().filter(|id| !target.contains(id)) {
                        cc.changes.push(single(ConfChangeType::RemoveNode, id));
                    }
                    cc.set_transition(ConfChangeTransition::Auto);
                }
            }
        }
        let proposed = tokio::time::timeout(
            self.config.write_timeout * 3,
            g.handle.change_membership(gid, cc),
        )
        .await;
        let now = batch_result(proposed, not_leader)?;
        tracing::info!(group = gid, ?now, "membership changed");
        answer(&now.voters)
    }

    /// Hand `replica`'s leadership to voter `to` (openraft's
    /// TransferLeader: this leader stops proposing, and the target, once
    /// its log holds everything this leader has, starts an election that
    /// the other voters grant at once). The lease ends first
    /// ([`Lease::transferring`]): the voters stop refusing the target's
    /// votes as soon as they hear of the transfer, so this leader must not
    /// answer another read from its own state. Writes proposed meanwhile
    /// are sent on to the target (`ForwardToLeader`, never appended here).
    async fn transfer_leader(&self, replica: &Replica, to: NodeId) -> Result<OpReply, ShardError> {
        let gid = replica.record.group_id;
        let Some(raft) = replica.openraft() else {
            return Err(ShardError::BadRequest(format!(
                "group {gid} is not an openraft group"
            )));
        };
        let (me, voters) = {
            let m = raft.metrics();
            let m = m.borrow_watched();
            let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
            (m.id, voters)
        };
        // Answered as the other steps are: the voters.
        let answer = OpReply::Array(voters.iter().map(|v| OpReply::Int(*v as i64)).collect());
        if to == me {
            return Ok(answer);
        }
        if !voters.contains(&to) {
            return Err(ShardError::BadRequest(format!(
                "node {to} is not a voter of group {gid} (voters {voters:?})"
            )));
        }
        replica.lease.transferring();
        // A task of its own, so that a caller that stops waiting cannot
        // leave the lease between `transferring` and `transferred`.
        let (raft, lease) = (raft.clone(), replica.lease.clone());
        let handed = tokio::spawn(async move {
            let taken = async {
                raft.trigger().transfer_leader(to).await?;
                // Behind the transfer in openraft's queue: the term it was
                // taken at.
                raft.with_raft_state(|st| st.vote_ref().leader_id.term)
                    .await
            };
            let taken = taken.await;
            // The core stopped: no term to end, and no lease either (the
            // replica answers nothing any more).
            lease.transferred(*taken.as_ref().unwrap_or(&u64::MAX));
            taken
        });
        match handed.await {
            Ok(Ok(term)) => {
                tracing::info!(group = gid, to, term, "leadership handed over");
                Ok(answer)
            }
            Ok(Err(e)) => Err(ShardError::Unavailable(e.to_string())),
            Err(e) => Err(ShardError::Unavailable(e.to_string())),
        }
    }

    /// A request reached `replica`: note it, and if the group hibernates,
    /// wake it. A leader then heartbeats and waits (at most an election
    /// timeout) for a majority's ack, so the request is judged on a fresh
    /// quorum, not on the ack before it fell asleep.
    pub(crate) async fn awaken(&self, replica: &Replica) {
        let gid = replica.record.group_id;
        let h = &self.hibernation;
        // Batch groups sleep and wake in their loop (`batch::node`).
        let Some(raft) = replica.openraft() else {
            return;
        };
        if !replica.sleep.is_asleep() {
            h.touch(gid, &replica.sleep, raft);
            return;
        }
        let mut rx = raft.metrics();
        let leads_many = {
            let m = rx.borrow_and_update();
            m.state == ServerState::Leader
                && m.membership_config.membership().voter_ids().count() > 1
        };
        h.touch(gid, &replica.sleep, raft);
        if !leads_many || raft.trigger().heartbeat().await.is_err() {
            return;
        }
        let fresh = self.config.raft.heartbeat_interval;
        let _ = tokio::time::timeout(
            Duration::from_millis(self.config.raft.election_timeout_max),
            async {
                while rx.changed().await.is_ok() {
                    let m = rx.borrow_and_update();
                    if m.state != ServerState::Leader
                        || millis_since_quorum_ack(&m).is_some_and(|ms| ms < fresh)
                    {
                        break;
                    }
                }
            },
        )
        .await;
    }

    /// An AppendEntries or Vote for `gid` was handled here: a hibernating
    /// replica wakes, its election clock starting from that message.
    pub fn raft_message_handled(&self, gid: u64) {
        if let Some(r) = self.get(gid) {
            if let Some(raft) = r.openraft().filter(|_| !r.sleep.is_awake()) {
                self.hibernation.wake(gid, &r.sleep, raft, "a raft message");
            }
        }
    }

    /// Wake every group this node leads asleep.
    pub fn wake_led(&self, why: &str) {
        for gid in self.hibernation.led() {
            if let Some(r) = self.get(gid) {
                if let Some(raft) = r.openraft() {
                    self.hibernation.wake(gid, &r.sleep, raft, why);
                }
            }
        }
    }

    /// Propose an entry on the leader and wait for its result.
    async fn propose(&self, replica: &Replica, cmd: LogCmd) -> Result<OpReply, ShardError> {
        self.check_leader(replica)?;
        proposer::propose(&replica.target, cmd).await
    }

    /// Run a script on this leader ([`super::script`]): against the state
    /// as of a linearizable read point plus its own writes, which are then
    /// proposed as one transaction WATCHing every key the script touched.
    /// If one of them changed meanwhile, nothing is applied and the script
    /// runs again; a read-only script checks its keys after it ran.
    async fn run_script(
        &self,
        replica: &Replica,
        call: super::command::ScriptCall,
        max_reply: usize,
    ) -> Result<OpReply, ShardError> {
        use super::command::{TxnCmd, TxnEntry, TxnOp};
        use super::script::{Recording, ScriptRun};
        let gid = replica.record.group_id;
        let Some(runner) = self.scripts.runner() else {
            return Ok(OpReply::Error("ERR this node does not run scripts".into()));
        };
        self.check_leader(replica)?;
        let call = Arc::new(call);
        let limits = self.config.limits;
        let mut turn = None;
        for attempt in 0..MAX_SCRIPT_ATTEMPTS {
            if attempt > 0 {
                // Whoever changed the keys is likely still at it.
                tokio::time::sleep(Duration::from_millis(attempt.min(20) as u64)).await;
                // From its first retry on, a script takes the group's
                // turn, held to its apply: retrying scripts never make each
                // other run again. (A first run does not wait for it, so a
                // script still meets `-BUSY` behind a long one.)
                if turn.is_none() {
                    turn = Some(replica.script_turn.lock().await);
                }
            }
            // Lost to plain writes twice: hold them back for this attempt,
            // so a hot key's INCRs cannot starve the script.
            let _paused = if attempt >= SCRIPT_ATTEMPTS_BEFORE_PAUSE {
                let plain = replica.proposer.pause(&replica.target).await;
                Some((plain, replica.txn_gate.write().await))
            } else {
                None
            };
            self.linearize(replica).await?;
            let guard = match self.scripts.start(gid) {
                Ok(g) => g,
                Err(busy) => return Ok(busy),
            };
            let (runner, call2, kill) = (runner.clone(), call.clone(), guard.kill.clone());
            let (reply, writes, watches, unchanged) = self
                .engine
                .read(move |db| {
                    let now = call2.now_ms;
                    let mut base = DbRead {
                        db,
                        gid,
                        error: None,
                    };
                    let mut rec = Recording::new(&mut base, now);
                    let (reply, mut writes) = {
                        let mut run = ScriptRun::new(&mut rec, now, limits, max_reply);
                        let reply = runner.run(&call2, &mut run, &kill);
                        (reply, run.writes)
                    };
                    // A killed script's writes are dropped: none was
                    // applied yet, so SCRIPT KILL never leaves half a
                    // script behind. (A script that fails otherwise keeps
                    // the writes it made before failing, as in Redis.)
                    let killed = kill.load(std::sync::atomic::Ordering::SeqCst);
                    if killed {
                        writes.clear();
                    }
                    let watches = rec.watches();
                    if let Some(e) = base.error {
                        return Err(e);
                    }
                    // A read-only run is a snapshot if nothing it read
                    // changed by the time it ended.
                    let unchanged = killed || !writes.is_empty() || {
                        let mut again = DbRead {
                            db,
                            gid,
                            error: None,
                        };
                        watches.iter().all(|(k, v)| {
                            again
                                .get(k)
                                .map(|s| super::txn::version_of(s.as_ref(), now) == *v)
                                .unwrap_or(false)
                        })
                    };
                    Ok((reply, writes, watches, unchanged))
                })
                .await?;
            drop(guard);
            if writes.is_empty() {
                if unchanged {
                    return Ok(reply);
                }
                continue;
            }
            let entry = TxnEntry {
                now_ms: call.now_ms,
                cmd: TxnCmd::OnePhase {
                    ops: writes.into_iter().map(TxnOp::Write).collect(),
                    watches,
                },
            };
            match self.propose(replica, LogCmd::Txn(entry)).await? {
                r if r == super::txn::CONFLICT => continue,
                OpReply::Error(e) => return Ok(OpReply::Error(e)),
                _ => return Ok(reply),
            }
        }
        Ok(OpReply::Error(format!(
            "TRYAGAIN the script's keys changed under it {MAX_SCRIPT_ATTEMPTS} times (or a transaction holds them); nothing was written"
        )))
    }

    /// Make a linearizable read safe to serve from this replica's state
    /// machine: at once when the leader lease holds ([`Host::in_lease`]),
    /// otherwise by confirming leadership with a quorum and waiting until
    /// the state machine has applied everything committed before now
    /// (ReadIndex, one round shared by the reads waiting for it).
    async fn linearize(&self, replica: &Replica) -> Result<(), ShardError> {
        use std::sync::atomic::Ordering::SeqCst;
        // The lease first: it alone decides whether no round is needed.
        // (check_leader's test reads openraft's metrics, which a process
        // paused and resumed still finds fresh.)
        if self.in_lease(replica) {
            return Ok(());
        }
        if let Driver::Batch(group) = &replica.driver {
            // The loop shares rounds, and answers at once in a lease
            // (renewing it once half used).
            return batch_read(group, self.config.read_timeout, |l| {
                self.not_leader(l, None)
            })
            .await;
        }
        self.check_leader(replica)?;
        let batch = &replica.reads;
        let ticket = batch.issued.fetch_add(1, SeqCst) + 1;
        let _round = match tokio::time::timeout(self.config.read_timeout, batch.round.lock()).await
        {
            Ok(guard) => guard,
            Err(_) => return Err(ShardError::Timeout),
        };
        if batch.covered.load(SeqCst) >= ticket {
            // A round that started after this read arrived has completed.
            return Ok(());
        }
        let covers = batch.issued.load(SeqCst);
        // (Batch groups returned above.)
        let result = match replica.openraft() {
            Some(raft) => self.read_index(raft).await,
            None => Ok(()),
        };
        if result.is_ok() {
            batch.covered.fetch_max(covers, SeqCst);
        }
        result
    }

    /// Whether this replica may answer a linearizable read alone, with no
    /// network round: it leads, its state machine has applied an entry of
    /// its own term (the blank entry openraft appends on election: every
    /// entry committed by earlier leaders is then applied), the membership
    /// is uniform (a joint one takes the ReadIndex round), and
    /// [`Lease::holds`] for its term and voters. Every write this leader
    /// acknowledged was applied here before its reply, so the state machine
    /// holds everything committed before the read arrived. A batch group
    /// asks the lease its loop published ([`super::batch::Role::reads_alone`]).
    fn in_lease(&self, replica: &Replica) -> bool {
        let raft = match &replica.driver {
            Driver::Openraft(raft) => raft,
            Driver::Batch(g) => return g.role.reads_alone(self.node_id, std::time::Instant::now()),
        };
        let rx = raft.metrics();
        let m = rx.borrow_watched();
        if m.state != ServerState::Leader
            || !m.vote.committed
            || m.vote.leader_id.node_id != self.node_id
        {
            return false;
        }
        let term = m.vote.leader_id.term;
        let applied_own_term = m
            .last_applied
            .is_some_and(|l| l.leader_id.term == term && l.leader_id.node_id == self.node_id);
        // A uniform membership: one set of voters (a joint one takes the
        // ReadIndex round).
        let [voters] = m
            .membership_config
            .membership()
            .get_joint_config()
            .as_slice()
        else {
            return false;
        };
        applied_own_term && replica.lease.holds(term, voters, std::time::Instant::now())
    }

    /// One ReadIndex round: leadership confirmed by a quorum, state machine
    /// applied up to the commit index seen at its start.
    async fn read_index(&self, raft: &Raft) -> Result<(), ShardError> {
        match tokio::time::timeout(
            self.config.read_timeout,
            raft.ensure_linearizable(openraft::ReadPolicy::ReadIndex),
        )
        .await
        {
            Err(_) => Err(ShardError::Timeout),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f)))) => {
                Err(self.not_leader(f.leader_id, f.leader_node))
            }
            Ok(Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(e)))) => {
                Err(ShardError::NoQuorum(e.to_string()))
            }
            Ok(Err(e)) => Err(ShardError::Unavailable(e.to_string())),
        }
    }

    /// Fail fast when this replica knows it is not the leader, or leads but
    /// has not heard from a majority for longer than the leader lease (it is
    /// probably cut off, and the others may have elected a new leader):
    /// nothing is proposed, so the router may safely try elsewhere instead of
    /// waiting out a commit that cannot happen. openraft has no CheckQuorum
    /// step-down (databendlabs/openraft#1898 suggests exactly this admission
    /// check).
    /// [`Host::check_leader`] for Pub/Sub: a replica that no longer leads
    /// forgets the group's listeners, so their routers register with the
    /// new leader rather than wait here for messages that go there.
    fn pubsub_leader(&self, replica: &Replica) -> Result<(), ShardError> {
        let r = self.check_leader(replica);
        if r.is_err() {
            self.pubsub.drop_group(replica.record.group_id);
        }
        r
    }

    fn check_leader(&self, replica: &Replica) -> Result<(), ShardError> {
        let raft = match &replica.driver {
            Driver::Openraft(raft) => raft,
            // A leader cut off from its followers steps down after an
            // election timeout (check-quorum), and its proposals wait.
            Driver::Batch(g) => {
                return match g.role.leader() {
                    Some(l) if l == self.node_id => Ok(()),
                    leader => Err(self.not_leader(leader, None)),
                };
            }
        };
        let rx = raft.metrics();
        let (leader, node) = {
            let m = rx.borrow_watched();
            if m.state == ServerState::Leader {
                let voters = m.membership_config.membership().voter_ids().count();
                let lease = self.config.raft.election_timeout_max;
                return match millis_since_quorum_ack(&m) {
                    Some(ms) if voters > 1 && ms > lease => Err(ShardError::NoQuorum(format!(
                        "leader {} has not heard from a majority for {ms} ms",
                        self.node_id
                    ))),
                    _ => Ok(()),
                };
            }
            let node = m
                .current_leader
                .and_then(|l| m.membership_config.membership().get_node(&l).cloned());
            (m.current_leader, node)
        };
        Err(self.not_leader(leader, node))
    }

    fn not_leader(&self, leader: Option<NodeId>, node: Option<BasicNode>) -> ShardError {
        not_leader(self.node_id, &self.transport, leader, node)
    }
}

/// `NotLeader` naming the leader (never this node) and its address as this
/// node knows it (etcd's member list first, the Raft membership second).
fn not_leader(
    me: NodeId,
    transport: &Transport,
    leader: Option<NodeId>,
    node: Option<BasicNode>,
) -> ShardError {
    let leader = leader.filter(|l| *l != me);
    ShardError::NotLeader {
        leader,
        addr: leader.and_then(|l| transport.peer_addr(l).or_else(|| node.map(|n| n.addr))),
    }
}

/// Longest a blocked client's wait lasts on a node before it is answered
/// `Nil` (the router renews it).
const MAX_WAIT_MS: u64 = 10_000;

/// Whether one of `keys` holds a live collection of `kind` (a record that
/// does not decode counts: the pop that follows reports it).
fn any_filled(db: &DbView, gid: u64, keys: &[Bytes], kind: Kind, now_ms: u64) -> bool {
    keys.iter()
        .any(|k| match db.get(Cf::Data, &data_key(gid, k)) {
            Ok(Some(raw)) => match Stored::decode(&raw) {
                Ok(v) => v.live_at(now_ms) && v.coll.is_some_and(|c| c.kind == kind),
                Err(_) => true,
            },
            Ok(None) => false,
            Err(_) => true,
        })
}

/// Each key's stored value (as stored: the router decodes it, after this
/// node checked it) and whether a transaction locks it, from one snapshot.
fn read_versions(db: &DbView, gid: u64, keys: &[Bytes]) -> Result<OpReply, ShardError> {
    let mut lookups = Vec::with_capacity(keys.len() * 2);
    for k in keys {
        lookups.push((Cf::Data, data_key(gid, k)));
        lookups.push((Cf::State, state_key_with(gid, tag::LOCK, k)));
    }
    let found = db.get_many(&lookups)?;
    let mut rows = Vec::with_capacity(keys.len());
    for (key, pair) in keys.iter().zip(found.chunks(2)) {
        if let Some(raw) = &pair[0] {
            Corrupt::check(gid, key, raw)?;
        }
        rows.push(OpReply::Array(vec![
            pair[0].as_ref().map_or(OpReply::Nil, |raw| {
                OpReply::Bulk(Bytes::copy_from_slice(raw))
            }),
            OpReply::Int(pair[1].is_some() as i64),
        ]));
    }
    Ok(OpReply::Array(rows))
}

/// Whether `op` reads named keys (served from memory when they are
/// there), not the group's counter or its whole range.
fn is_point_read(op: &ReadOp) -> bool {
    !matches!(
        op,
        ReadOp::KeyCount | ReadOp::Scan { .. } | ReadOp::ScanType { .. } | ReadOp::DbSize
    )
}

/// Count a request served by `replica` since `started`, unless it was
/// turned away (not the leader, or the replica is gone): that was not
/// served here.
fn record_served(replica: &Replica, started: Instant, reply: &Result<OpReply, ShardError>) {
    if !matches!(
        reply,
        Err(ShardError::NotLeader { .. } | ShardError::UnknownGroup(_))
    ) {
        replica.served.record(started.elapsed());
    }
}

/// Serve a read from `db` (a blocking thread's view, or a cached-only one
/// on the request's task for point reads): point reads through
/// [`apply_read`], SCAN and DBSIZE by iterating the group's data range. Replies stay within
/// `max_reply` bytes (a SCAN page ends there, an MGET is refused). A value
/// that does not decode is [`ShardError::Corrupt`], never an absent key, an
/// empty value or a count that stops short.
fn serve_read(
    db: &DbView,
    gid: u64,
    op: &ReadOp,
    now_ms: u64,
    max_reply: usize,
) -> Result<OpReply, ShardError> {
    match op {
        ReadOp::Scan {
            after,
            count,
            pattern,
        }
        | ReadOp::ScanType {
            after,
            count,
            pattern,
            ..
        } => {
            let (start, end) = group_range(gid);
            // Strictly after `after`: the smallest key above it is after ++ 0.
            let from = if after.is_empty() {
                start
            } else {
                let mut k = data_key(gid, after);
                k.push(0);
                k
            };
            let rows = db.iter(Cf::Data, &from, &end)?.map(|r| {
                let (k, v) = r?;
                let stored = Corrupt::check(gid, &k[8..], &v)?;
                Ok::<_, ShardError>((Bytes::copy_from_slice(&k[8..]), stored))
            });
            let type_name = match op {
                ReadOp::ScanType { type_name, .. } => Some(type_name.as_str()),
                _ => None,
            };
            scan_page_of(
                rows,
                now_ms,
                *count,
                pattern.as_deref(),
                type_name,
                max_reply,
            )
        }
        ReadOp::DbSize => {
            let (start, end) = group_range(gid);
            let rows = db.iter(Cf::Data, &start, &end)?.map(|r| {
                let (k, v) = r?;
                Ok::<_, ShardError>(Corrupt::check(gid, &k[8..], &v)?)
            });
            count_live(rows, now_ms).map(OpReply::Int)
        }
        _ => {
            let mut view = DbRead {
                db,
                gid,
                error: None,
            };
            let reply = apply_read(op, now_ms, max_reply, &mut view);
            if let Some(e) = view.error {
                return Err(e.into());
            }
            Ok(reply?)
        }
    }
}

/// One log line per leadership change of a group, not per request (and
/// one count in the group's `leader_changes`). It watches openraft's server
/// metrics (state, leader, vote, membership), which change with elections
/// only; its full metrics change with every round, and a task woken by each
/// would cost a wake-up per round per group on every node.
fn spawn_leader_logger(gid: u64, raft: Raft, counters: Arc<proposer::GroupCounters>) {
    let mut rx = raft.server_metrics();
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let (leader, term) = {
                let m = rx.borrow_and_update();
                (m.current_leader, m.vote.leader_id.term)
            };
            if leader != last {
                if leader.is_some() {
                    counters
                        .leader_changes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if let Some(l) = leader {
                    tracing::info!(group = gid, leader = l, term, "leader elected");
                }
                last = leader;
            }
            if rx.changed().await.is_err() {
                break;
            }
        }
    });
}

/// How long ago a quorum last acknowledged this leader, from its metrics
/// (`None` when it is not a leader or never heard from one).
fn millis_since_quorum_ack(m: &openraft::RaftMetrics<super::types::TypeConfig>) -> Option<u64> {
    use openraft::Instant as _;
    m.last_quorum_acked
        .as_ref()
        .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::command::{ReadOp, SetCond, WriteCmd, WriteOp};

    /// A node with one single-replica group, leading it.
    async fn one_group_host(dir: &std::path::Path) -> (Arc<Host>, u64) {
        let host = crate::shard::hostile_tests::host_with(dir, Limits::default()).await;
        (host, crate::shard::hostile_tests::GID)
    }

    /// `SET k v`.
    fn set_k_to_v() -> ShardRequest {
        ShardRequest::Write(WriteCmd {
            now_ms: 1,
            op: WriteOp::Set {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
                expiry: crate::shard::command::Expiry::Clear,
                cond: SetCond::Always,
                get: false,
            },
        })
    }

    #[tokio::test]
    async fn a_read_overlapping_the_removal_of_its_replica_is_not_answered() {
        let dir = tempfile::tempdir().unwrap();
        let (host, gid) = one_group_host(dir.path()).await;
        let set = set_k_to_v();
        host.execute(gid, set).await.unwrap();
        let get = || ShardRequest::Read {
            op: ReadOp::Get {
                key: Bytes::from_static(b"k"),
            },
            linearizable: false,
            now_ms: 2,
        };
        assert_eq!(
            host.execute(gid, get()).await.unwrap(),
            OpReply::Bulk(Bytes::from_static(b"v"))
        );
        // A request that found the replica just before it was removed (the
        // group moved away) reads after its data is gone: it must not
        // answer nil, but send the router elsewhere.
        let stale = host.get(gid).unwrap();
        host.remove(gid).await.unwrap();
        let got = host.serve(&stale, get()).await;
        assert!(
            matches!(got, Err(ShardError::UnknownGroup(g)) if g == gid),
            "{got:?}"
        );
        assert!(matches!(
            host.execute(gid, get()).await,
            Err(ShardError::UnknownGroup(_))
        ));
    }

    /// A point read that needs nothing to wait for is answered at once,
    /// with what the async path answers; anything else is left to it.
    #[tokio::test]
    async fn a_point_read_with_nothing_to_wait_for_is_answered_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (host, gid) = one_group_host(dir.path()).await;
        let set = set_k_to_v();
        assert!(host.try_read_now(gid, &set, usize::MAX).is_none());
        host.execute(gid, set).await.unwrap();
        let read = |op: ReadOp, linearizable: bool| ShardRequest::Read {
            op,
            linearizable,
            now_ms: 2,
        };
        let get = |linearizable| {
            read(
                ReadOp::Get {
                    key: Bytes::from_static(b"k"),
                },
                linearizable,
            )
        };
        // The leader of a group of one holds its lease once it applied an
        // entry of its term: both kinds of read are answered here.
        for linearizable in [true, false] {
            let now = host.try_read_now(gid, &get(linearizable), usize::MAX);
            assert_eq!(
                now,
                Some(Ok(OpReply::Bulk(Bytes::from_static(b"v")))),
                "linearizable: {linearizable}"
            );
            assert_eq!(
                now.unwrap(),
                host.execute(gid, get(linearizable)).await,
                "the async path answers the same"
            );
        }
        // A reply over the caller's limit is the same refusal either way.
        let small = host.try_read_now(gid, &get(true), 0).expect("answered");
        assert_eq!(
            small,
            host.execute_bounded(gid, get(true), 0).await,
            "{small:?}"
        );
        // Scans, counts and unknown groups go the async way.
        for op in [
            ReadOp::DbSize,
            ReadOp::KeyCount,
            ReadOp::Scan {
                after: Bytes::new(),
                count: 10,
                pattern: None,
            },
        ] {
            assert!(host
                .try_read_now(gid, &read(op, true), usize::MAX)
                .is_none());
        }
        assert!(host.try_read_now(gid + 1, &get(true), usize::MAX).is_none());
        // So does a linearizable read on a leader whose lease a vote
        // request of its term ended; an eventual read does not wait on it.
        let replica = host.get(gid).unwrap();
        let term = replica
            .openraft()
            .unwrap()
            .metrics()
            .borrow_watched()
            .vote
            .leader_id
            .term;
        replica
            .lease
            .vote_requested(&crate::shard::types::Vote::new(term, 99));
        assert!(host.try_read_now(gid, &get(true), usize::MAX).is_none());
        assert!(host.try_read_now(gid, &get(false), usize::MAX).is_some());
    }

    /// A router's pipelines (one-phase transactions) and plain writes of
    /// many clients waiting together become one entry, and each client
    /// gets its own reply.
    #[tokio::test]
    async fn pipelines_and_plain_writes_of_many_clients_share_an_entry() {
        use crate::shard::command::{TxnCmd, TxnEntry, TxnOp};
        let dir = tempfile::tempdir().unwrap();
        let (host, gid) = one_group_host(dir.path()).await;
        let b = |s: String| Bytes::from(s.into_bytes());
        let set = |k: String, v: &str| WriteOp::Set {
            key: b(k),
            value: Bytes::copy_from_slice(v.as_bytes()),
            expiry: crate::shard::command::Expiry::Clear,
            cond: SetCond::Always,
            get: false,
        };
        let proposals = || {
            let replica = host.get(gid).unwrap();
            replica
                .counters()
                .proposals
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let before = proposals();
        let mut calls = Vec::new();
        for i in 0..32 {
            let pipeline = ShardRequest::Txn(TxnEntry {
                now_ms: 1,
                cmd: TxnCmd::OnePhase {
                    ops: vec![
                        TxnOp::Write(set(format!("p{i}"), "a")),
                        TxnOp::Read(ReadOp::Get {
                            key: b(format!("p{i}")),
                        }),
                    ],
                    watches: vec![],
                },
            });
            let plain = ShardRequest::Write(WriteCmd {
                now_ms: 1,
                op: set(format!("w{i}"), "b"),
            });
            let host = host.clone();
            calls.push(async move {
                let (p, w) = tokio::join!(host.execute(gid, pipeline), host.execute(gid, plain));
                (p.unwrap(), w.unwrap())
            });
        }
        for (p, w) in futures::future::join_all(calls).await {
            assert_eq!(
                p,
                OpReply::Array(vec![OpReply::Ok, OpReply::Bulk(Bytes::from_static(b"a"))])
            );
            assert_eq!(w, OpReply::Ok);
        }
        let proposals = proposals() - before;
        assert!(
            (1..=4).contains(&proposals),
            "64 requests took {proposals} proposals"
        );
    }

    /// Every row of group `gid` in the `raft_state` column family.
    async fn state_rows(host: &Host, gid: u64) -> Vec<Vec<u8>> {
        host.engine
            .read(move |db| {
                let (start, end) = group_range(gid);
                Ok(db
                    .scan(Cf::State, &start, &end, usize::MAX)?
                    .into_iter()
                    .map(|(k, _)| k.into_vec())
                    .collect())
            })
            .await
            .unwrap()
    }

    fn set_entry(index: u64, key: &'static [u8]) -> crate::shard::types::Entry {
        openraft::Entry {
            log_id: crate::shard::types::log_id(9, 1, index),
            payload: openraft::EntryPayload::Normal(LogCmd::Write(WriteCmd {
                now_ms: 1,
                op: WriteOp::Set {
                    key: Bytes::from_static(key),
                    value: Bytes::from_static(b"late"),
                    expiry: crate::shard::command::Expiry::Clear,
                    cond: SetCond::Always,
                    get: false,
                },
            })),
        }
    }

    #[tokio::test]
    async fn an_apply_still_queued_when_its_replica_is_removed_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (host, gid) = one_group_host(dir.path()).await;
        // openraft's state-machine worker holds its own handle and keeps
        // applying what was queued to it after `Raft::shutdown` returns.
        let worker_sm = host.get(gid).unwrap().sm.clone();
        host.remove(gid).await.unwrap();
        assert_eq!(state_rows(&host, gid).await, Vec::<Vec<u8>>::new());
        let late = worker_sm.apply_batch(vec![set_entry(1000, b"k")]).await;
        assert!(
            late.is_err(),
            "a removed replica applied an entry: {late:?}"
        );
        assert_eq!(
            state_rows(&host, gid).await,
            Vec::<Vec<u8>>::new(),
            "the late apply left the group's applied index behind"
        );
    }

    #[tokio::test]
    async fn a_replica_created_again_on_a_node_starts_from_nothing() {
        use openraft::storage::RaftStateMachine;
        let dir = tempfile::tempdir().unwrap();
        let (host, gid) = one_group_host(dir.path()).await;
        host.remove(gid).await.unwrap();
        // What a late apply left behind before the fence existed: the
        // applied index (and a row) of the removed group.
        let applied = Some(crate::shard::types::LogId::new(
            crate::shard::types::LeaderId {
                term: 9,
                node_id: 1,
            },
            1000,
        ));
        let row = crate::shard::codec::encode(
            crate::shard::codec::Format::Applied,
            &(applied, crate::shard::types::StoredMembership::default()),
        )
        .unwrap();
        host.engine
            .write(
                vec![
                    Op::Put(Cf::State, state_key(gid, tag::APPLIED), row),
                    Op::Put(Cf::Data, data_key(gid, b"k"), b"stale".to_vec()),
                ],
                true,
            )
            .await
            .unwrap();
        // The group moves back onto this node: a learner, not initialized.
        let record = ReplicaRecord {
            group_id: gid,
            table: "t".into(),
            shard: 0,
            engine: Default::default(),
            voters: Vec::new(),
        };
        host.ensure(record, BTreeMap::new(), false).await.unwrap();
        let mut sm = host.get(gid).unwrap().sm.clone();
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(
            applied, None,
            "the new replica would skip the entries up to {applied:?}"
        );
        let rows = host
            .engine
            .read(move |db| {
                let (start, end) = group_range(gid);
                db.scan(Cf::Data, &start, &end, usize::MAX)
            })
            .await
            .unwrap();
        assert!(rows.is_empty(), "stale data survived: {} rows", rows.len());
    }
}
