//! The batch engine's node loop: one thread drives every group of the node.
//!
//! A turn of the loop:
//! 1. takes everything queued for it (proposals, peers' messages, finished
//!    disk writes) and steps each into its group;
//! 2. ticks every group when a tick is due;
//! 3. collects the ready work of every group that has some: the leaders'
//!    messages go out at once, one [`Transport::send`] per peer node for
//!    all groups; new entries and hard states of all groups become **one**
//!    engine write with **one** sync; the entries each group may now apply
//!    go to the [`Applier`] in **one** call.
//!
//! The loop makes that write and sync itself ([`Engine::write_synced`]),
//! then each group learns that its ready is persisted, and the messages
//! that had to wait for it (a follower's append replies and votes) go out
//! at once. A turn that leaves one of its groups with ready work of the
//! turn's own making (a lone voter's entries, committed once its sync
//! persisted them; the rest of an apply held to
//! [`BatchConfig::max_apply_bytes`]) is followed by another at once: no
//! input would come to prompt it before the next tick.
//!
//! After a sync that took longer than
//! [`BatchConfig::slow_sync`], the loop hands its writes to the engine's
//! writer thread for [`SLOW_DISK_HANDOFF`] and goes on turning: it hears
//! of each sync in a later turn, and the messages that waited for it go
//! out with that turn's, in the same send per peer.
//!
//! A linearizable read ([`Handle::read`]) is answered by a leader alone
//! while it holds a lease ([`BatchConfig::lease`]), at its commit index;
//! otherwise it waits for one ReadIndex round: the reads that reach a
//! leader in one turn share one round (raft-rs's safe read-only mode: a
//! heartbeat to a quorum confirms the leader, and gives it the lease).
//! Either way it is answered once the group has applied up to that index.
//! A leader that steps down fails the reads it had not confirmed with
//! [`ProposeError::NotLeader`]; a read is always safe to retry.
//!
//! A proposal is answered when its entry is applied: with the applier's
//! reply if the entry at its index is still the one it proposed, or with
//! [`ProposeError::Dropped`] if a new leader replaced it. A failed write or
//! apply stops the loop (the node fails closed) and fails every waiter.
//!
//! **Hibernation.** A leader whose group had no request (proposal, read,
//! configuration change, transfer) for [`BatchConfig::hibernate_after`],
//! with every entry committed, applied and matched by every voter, one
//! configuration and no learner, stops ticking the group and sends each
//! follower a hibernate message (a heartbeat the loop keeps to itself,
//! never stepped into raft-rs) naming its term and last index. A follower
//! that follows that leader in that term and holds and applied the same
//! last entry stops ticking it too; one that does not stays awake, and
//! its election clock's (pre-)vote request wakes the leader. A sleeping
//! group sends nothing and runs no clock. It wakes on any request, and on
//! any message but a late answer to its leader's last heartbeats or
//! appends; a woken leader heartbeats at once and counts its quorum check
//! from then. For liveness each loop pings (a message of no group) every
//! peer that shares a sleeping group with it and was sent nothing for a
//! heartbeat interval; a sleeping follower whose leader's node was not
//! heard from for an election timeout wakes, and campaigns once its
//! election clock, stopped while it slept, runs out. No ack is faked: a
//! sleeping leader's lease lapses on its own clock, and a follower's
//! refusal to vote, counted in ticks, only lasts longer while it sleeps.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::prelude::{
    ConfChange, ConfChangeSingle, ConfChangeV2, Entry, EntryType, Message, MessageType, Snapshot,
    SnapshotMetadata,
};
use raft::{RawNode, SnapshotStatus, StateRole, Storage};
use tokio::sync::oneshot;

use super::log::GroupLog;
use super::BatchError;
use crate::shard::engine::{Engine, EngineError, Op};

/// The group id of a node's liveness ping to a peer (no group's): sent
/// while groups sleep, in place of their heartbeats.
const PING_GID: u64 = u64::MAX;

/// The context of the loop's own hibernate message (a heartbeat that is
/// never stepped into raft-rs).
const HIBERNATE: &[u8] = b"shoal-batch-hibernate";

/// A heartbeat the loop sends of its own (a ping, or a hibernate
/// message): the receiving loop handles it, raft-rs never sees it.
fn loop_heartbeat(from: u64, to: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgHeartbeat);
    m.from = from;
    m.to = to;
    m
}

fn is_hibernate(m: &Message) -> bool {
    m.get_msg_type() == MessageType::MsgHeartbeat && m.context[..] == *HIBERNATE
}

/// How long the loop hands its synced writes to the writer thread after
/// one of its own took longer than [`BatchConfig::slow_sync`].
pub const SLOW_DISK_HANDOFF: Duration = Duration::from_secs(5);

/// How a node's loop runs its groups.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// This node's id: its peer id in every group it hosts.
    pub node_id: u64,
    /// One tick of every group's Raft clock.
    pub tick: Duration,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// Ticks without a leader before a follower stands (raft-rs randomizes
    /// between this and twice this).
    pub election_ticks: usize,
    /// Most bytes of entries in one append message.
    pub max_append_bytes: u64,
    /// Most append messages in flight to one follower.
    pub max_inflight: usize,
    /// Most bytes of proposals a leader holds uncommitted per group; past
    /// it a proposal is refused ([`ProposeError::Dropped`]) instead of
    /// growing memory while followers are away.
    pub max_uncommitted_bytes: u64,
    /// Most bytes of committed entries handed to the applier per group
    /// per turn (a restarted node applies a long log in pieces).
    pub max_apply_bytes: u64,
    /// A group's log is compacted once it holds this many entries, or
    /// [`BatchConfig::compact_bytes`] of them: up to what every follower
    /// has, or, once the log is four times either bound, up to what this
    /// replica applied (a follower further behind then gets a snapshot).
    pub compact_entries: u64,
    pub compact_bytes: u64,
    /// A sync the loop made itself that took longer than this hands its
    /// next writes to the writer thread for [`SLOW_DISK_HANDOFF`].
    pub slow_sync: Duration,
    /// A group whose leader had no request for this long hibernates
    /// (module doc, "Hibernation"); `None`: never.
    pub hibernate_after: Option<Duration>,
}

impl BatchConfig {
    pub fn new(node_id: u64) -> BatchConfig {
        BatchConfig {
            node_id,
            tick: Duration::from_millis(50),
            heartbeat_ticks: 2,
            election_ticks: 10,
            max_append_bytes: 1 << 20,
            max_inflight: 256,
            max_uncommitted_bytes: 64 << 20,
            max_apply_bytes: 16 << 20,
            compact_entries: 10_000,
            compact_bytes: 64 << 20,
            slow_sync: Duration::from_millis(50),
            hibernate_after: None,
        }
    }

    /// Ticks of no request after which a leader puts its group to sleep.
    fn hibernate_ticks(&self) -> Option<usize> {
        let after = self.hibernate_after?;
        let tick = self.tick.as_micros().max(1);
        Some(usize::try_from(after.as_micros().div_ceil(tick)).unwrap_or(usize::MAX))
    }

    /// How long a sleeping follower waits to hear from its leader's node
    /// before it wakes: an election timeout.
    fn lost_after(&self) -> Duration {
        self.quiet()
    }

    /// How long a quorum's answer to a leader's heartbeat lets it answer
    /// reads alone, from when the heartbeat was sent. A follower that took
    /// the heartbeat refuses votes until `election_ticks` ticks have
    /// passed since (raft-rs with check-quorum), so for at least
    /// `election_ticks` less one tick lengths; the lease is 90 % of that,
    /// the rest a margin for clocks that run at different rates and for
    /// scheduling.
    pub fn lease(&self) -> Duration {
        let ticks = u32::try_from(self.election_ticks.saturating_sub(1)).unwrap_or(0);
        self.tick * ticks * 9 / 10
    }

    /// How long a replica reopened from its stored log grants no vote: the
    /// refusal a leader's lease counts on is in memory, so a follower that
    /// restarted keeps it for a whole election timeout from its start.
    fn quiet(&self) -> Duration {
        self.tick * u32::try_from(self.election_ticks).unwrap_or(u32::MAX)
    }
}

/// Why a proposal was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("group {0} is not hosted on this node")]
    NoGroup(u64),
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    /// The entry was replaced by a new leader's: it was never applied.
    #[error("the proposal was dropped by a change of leader")]
    Dropped,
    /// The loop stopped (shutdown, or a storage failure) before the
    /// entry was applied: its outcome is unknown.
    #[error("the node's Raft loop stopped: {0}")]
    Stopped(String),
    /// A membership change or leadership transfer the group cannot take
    /// now (another change under way, a target that is no voter): nothing
    /// was proposed.
    #[error("{0}")]
    Refused(String),
    /// This replica had stopped on an error of its own (an entry it could
    /// not apply) before the request came: nothing was proposed.
    #[error("group {0} stopped on this node until it restarts: {1}")]
    GroupStopped(u64, String),
}

/// Each group's replies of an [`Applier::apply`], or why it failed.
pub type GroupReplies<R> = Vec<Result<Vec<R>, BatchError>>;

/// Applies committed entries to the node's state machines.
pub trait Applier: Send + 'static {
    /// What a proposal's waiter gets when its entry is applied.
    type Reply: Send + 'static;

    /// The last index `gid` has applied (0 for none); the loop hands over
    /// the entries after it when it opens the group.
    fn applied(&mut self, gid: u64) -> Result<u64, BatchError>;

    /// Apply one turn's newly committed entries of every group, each
    /// group's in log order (empty entries included, so that an applied
    /// index can follow them; configuration changes are the loop's and
    /// come as empty entries). One reply per entry, in the same shape.
    ///
    /// A group that cannot be applied fails alone (its slot holds why;
    /// the loop stops that group and applies the others); the outer error
    /// fails them all (a write of the data that failed), and stops the
    /// loop.
    fn apply(
        &mut self,
        groups: &[(u64, Vec<Entry>)],
    ) -> Result<GroupReplies<Self::Reply>, BatchError>;

    /// Start a snapshot of `gid`'s data as applied now: what the copy
    /// reads is fixed before this returns (the loop applies nothing in
    /// between); the job, run off the loop's thread, makes its bytes.
    fn snapshot(&mut self, gid: u64) -> Result<SnapshotJob, BatchError>;

    /// Replace `gid`'s data with a snapshot's, applied up to `index` (of
    /// `term`), and write `log_ops` (the log's rows moved to the snapshot)
    /// in the same synced write: a crash keeps both or neither.
    fn install(
        &mut self,
        gid: u64,
        index: u64,
        term: u64,
        data: Vec<u8>,
        log_ops: Vec<Op>,
    ) -> Result<(), BatchError>;

    /// `gid` left this node's loop ([`Handle::close_group`]): drop what
    /// is kept for it.
    fn forget(&mut self, _gid: u64) {}
}

/// Tells the loop whether a snapshot reached its follower whole
/// ([`Transport::send_snapshot`]).
pub type SnapshotDone = Box<dyn FnOnce(bool) + Send>;

/// Makes a snapshot's bytes, off the loop's thread ([`Applier::snapshot`]).
pub type SnapshotJob = Box<dyn FnOnce() -> Result<Vec<u8>, BatchError> + Send>;

/// Carries one turn's messages to a peer node.
pub trait Transport: Send + 'static {
    /// Send `msgs` (group id, message), every group's for node `to`
    /// together. Delivery may fail silently: Raft resends. Returns the
    /// bytes put on the wire (0 when none was, or in process).
    fn send(&mut self, to: u64, msgs: Vec<(u64, Message)>) -> usize;

    /// Send a snapshot (`msg`, whose data may be large) of group `gid` to
    /// node `to` without holding up [`Transport::send`]'s messages, and
    /// call `done` with whether the node got it whole. By default it goes
    /// as any message, and counts as sent.
    fn send_snapshot(&mut self, to: u64, gid: u64, msg: Message, done: SnapshotDone) {
        self.send(to, vec![(gid, msg)]);
        done(true);
    }
}

/// Counters of what the loop did, for benchmarks and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Turns that found ready work.
    pub turns: AtomicU64,
    /// Engine writes (each with one sync).
    pub syncs: AtomicU64,
    /// Those of them the loop made itself (the others went to the writer
    /// thread: after a slow sync, see [`SLOW_DISK_HANDOFF`]).
    pub syncs_in_loop: AtomicU64,
    /// Entries appended to logs (all groups).
    pub entries: AtomicU64,
    /// Raft messages sent.
    pub messages: AtomicU64,
    /// Sends to a peer (each carrying one turn's messages for it).
    pub sends: AtomicU64,
    /// Applier calls.
    pub applies: AtomicU64,
    /// ReadIndex rounds started (each for all the reads of a group that
    /// arrived in one turn, or to renew a lease).
    pub read_rounds: AtomicU64,
    /// Reads a leader answered in its lease, without a round.
    pub lease_reads: AtomicU64,
    /// Peers' messages dropped because the inbox was full.
    pub dropped: AtomicU64,
    /// Log compactions (all groups).
    pub compactions: AtomicU64,
    /// Snapshots built, sent and installed (all groups).
    pub snapshots_built: AtomicU64,
    pub snapshots_sent: AtomicU64,
    pub snapshots_installed: AtomicU64,
    /// Groups put to sleep here (as leader or follower), and woken.
    pub hibernated: AtomicU64,
    pub woken: AtomicU64,
    /// Ticks that came a whole tick late (the thread was held), after
    /// which the loop's leaders heartbeat at once.
    pub late_ticks: AtomicU64,
    /// Bytes sent to each peer node ([`Transport::send`]'s count).
    pub sent_bytes: std::sync::Mutex<BTreeMap<u64, u64>>,
    /// Why the loop stopped, once it has on an error (a failed write or
    /// apply, a panic inside raft-rs): every replica on it is then stopped
    /// until the node restarts. Not set by a shutdown.
    pub stopped: std::sync::OnceLock<String>,
}

impl Stats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What a node knows of one of its groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    pub is_leader: bool,
    /// The leader this replica knows of (0: none).
    pub leader: u64,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    /// The first index still in the log (compacted before it).
    pub first_index: u64,
    pub last_index: u64,
    /// Entries in memory.
    pub log_entries: u64,
}

/// Who leads a group as this node last saw it, readable without asking
/// the loop (the loop stores it after every ready of the group).
#[derive(Debug, Default)]
pub struct Role {
    /// The leader this replica knows of (0: none).
    pub leader: AtomicU64,
    pub term: AtomicU64,
    /// The last index applied here.
    pub applied: AtomicU64,
    /// The lease this replica holds as leader, as the loop last set it:
    /// (term, until, the commit index when it was granted).
    lease: std::sync::Mutex<Option<(u64, Instant, u64)>>,
    /// Half of [`BatchConfig::lease`].
    half_lease: Duration,
    /// The group's configuration as this replica last applied it.
    membership: std::sync::Mutex<Membership>,
    /// The last index in this replica's log, as of the last tick.
    pub last_index: AtomicU64,
    /// The last index before this replica's log (compacted away or
    /// covered by a snapshot; 0: the log starts at 1), as of the last tick.
    pub log_start: AtomicU64,
    /// The index of the last snapshot this replica installed or built for
    /// a follower (0: none since it opened).
    pub snapshot: AtomicU64,
    /// Leaders this replica saw elected (as openraft replicas count them:
    /// a change to no leader is not one).
    pub leader_changes: AtomicU64,
    /// While this replica leads: each other replica's matched index, as
    /// of the last tick (empty otherwise).
    progress: std::sync::Mutex<Vec<(u64, u64)>>,
    /// The group hibernates on this replica.
    pub asleep: std::sync::atomic::AtomicBool,
    /// Why this replica stopped on an error of its own (an entry it could
    /// not apply): it takes no part in its group until the node restarts.
    pub stopped: std::sync::OnceLock<String>,
}

/// A group's configuration: who votes and who only follows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    /// The voters (in a joint configuration, the incoming ones).
    pub voters: Vec<u64>,
    /// In a joint configuration, the outgoing voters (else empty).
    pub outgoing: Vec<u64>,
    pub learners: Vec<u64>,
}

impl Membership {
    fn of(conf: &raft::prelude::ConfState) -> Membership {
        let sorted = |v: &[u64]| {
            let mut v = v.to_vec();
            v.sort_unstable();
            v
        };
        Membership {
            voters: sorted(&conf.voters),
            outgoing: sorted(&conf.voters_outgoing),
            learners: sorted(&[conf.learners.as_slice(), &conf.learners_next].concat()),
        }
    }

    /// A change half way: old and new voters both decide.
    pub fn joint(&self) -> bool {
        !self.outgoing.is_empty()
    }
}

impl Role {
    /// The group's configuration as this replica last applied it.
    pub fn membership(&self) -> Membership {
        self.membership
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// While this replica leads: each other replica's matched log index,
    /// as of the last tick.
    pub fn progress(&self) -> Vec<(u64, u64)> {
        self.progress.lock().map(|p| p.clone()).unwrap_or_default()
    }

    fn set_membership(&self, conf: &raft::prelude::ConfState) {
        if let Ok(mut m) = self.membership.lock() {
            *m = Membership::of(conf);
        }
    }

    pub fn leader(&self) -> Option<u64> {
        let l = self.leader.load(Ordering::Acquire);
        (l != 0).then_some(l)
    }

    /// Whether this replica, as leader, may answer a linearizable read
    /// from its applied state now, with no message to the loop: it holds
    /// a lease in its current term that is not yet half used (past half,
    /// a read through [`Handle::read`] renews it), and it has applied
    /// everything committed when the lease was granted (an entry of its
    /// own term among it, as for any lease). Every write it acknowledged
    /// was applied before its reply, so the applied state holds every
    /// write acknowledged before the read arrived.
    pub fn reads_alone(&self, me: u64, now: Instant) -> bool {
        let Ok(lease) = self.lease.lock() else {
            return false;
        };
        let Some((term, until, floor)) = *lease else {
            return false;
        };
        self.leader() == Some(me)
            && self.term.load(Ordering::Acquire) == term
            && until.saturating_duration_since(now) > self.half_lease
            && self.applied.load(Ordering::Acquire) >= floor
    }

    fn set_lease(&self, lease: Option<(u64, Instant, u64)>) {
        if let Ok(mut l) = self.lease.lock() {
            *l = lease;
        }
    }
}

/// Every open group's [`Role`], shared by the loop and its handles.
type Roles = Arc<RwLock<HashMap<u64, Arc<Role>>>>;

type Waiter<R> = oneshot::Sender<Result<R, ProposeError>>;
type ReadWaiter = oneshot::Sender<Result<(), ProposeError>>;
type ConfWaiter = oneshot::Sender<Result<Membership, ProposeError>>;

enum Input<R> {
    Propose {
        gid: u64,
        data: Vec<u8>,
        reply: Waiter<R>,
    },
    /// Peers' messages and the bytes they were counted as in the inbox.
    Raft(Vec<(u64, Message)>, usize),
    Persisted {
        seq: u64,
        result: Result<(), EngineError>,
    },
    Open {
        gid: u64,
        voters: Vec<u64>,
        done: oneshot::Sender<Result<(), String>>,
    },
    Campaign(u64),
    /// Take the group out of the loop; `done` once every log write queued
    /// before is on disk (its rows may then be deleted).
    Close {
        gid: u64,
        done: oneshot::Sender<()>,
    },
    /// A snapshot reached a follower whole (`ok`), or could not be sent.
    SnapshotSent {
        gid: u64,
        to: u64,
        ok: bool,
    },
    /// A snapshot job ended: the snapshot's index, term and configuration,
    /// and its bytes or why there are none.
    SnapshotBuilt {
        gid: u64,
        meta: SnapshotMetadata,
        result: Result<Vec<u8>, BatchError>,
    },
    Status {
        gid: u64,
        reply: oneshot::Sender<Option<GroupStatus>>,
    },
    Read {
        gid: u64,
        reply: ReadWaiter,
    },
    ConfChange {
        gid: u64,
        cc: ConfChangeV2,
        reply: ConfWaiter,
    },
    Transfer {
        gid: u64,
        to: u64,
        reply: oneshot::Sender<Result<(), ProposeError>>,
    },
    Stop,
}

/// Most bytes of peers' messages queued for the loop and not yet taken.
/// Past it, messages are dropped as a lossy network would drop them (Raft
/// sends again), instead of growing memory while the loop is behind or a
/// peer floods it.
pub const MAX_INBOX_BYTES: usize = 256 << 20;

/// The way in to a running loop; cheap to clone.
pub struct Handle<R> {
    tx: mpsc::Sender<Input<R>>,
    stats: Arc<Stats>,
    /// Bytes of peers' messages queued for the loop ([`MAX_INBOX_BYTES`]).
    inbox: Arc<AtomicUsize>,
    roles: Roles,
}

impl<R> Clone for Handle<R> {
    fn clone(&self) -> Self {
        Handle {
            tx: self.tx.clone(),
            stats: self.stats.clone(),
            inbox: self.inbox.clone(),
            roles: self.roles.clone(),
        }
    }
}

/// What a message is counted as in the loop's inbox: its entries' bytes
/// and a fixed share for the rest.
pub fn message_bytes(msg: &Message) -> usize {
    let entries: usize = msg
        .entries
        .iter()
        .map(|e| e.data.len() + e.context.len() + 32)
        .sum();
    entries + msg.context.len() + msg.snapshot.as_ref().map_or(0, |s| s.data.len()) + 64
}

impl<R: Send + 'static> Handle<R> {
    /// Propose `data` to `gid`; the answer comes once the entry is applied.
    /// A loop that is gone (stopped, or ended by a bug) answers
    /// [`ProposeError::Stopped`]: the outcome is unknown.
    pub fn propose(
        &self,
        gid: u64,
        data: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<R, ProposeError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        self.ask(Input::Propose { gid, data, reply }, rx)
    }

    /// Send the loop `input`, which holds the sender of `rx`, and wait for
    /// the answer. A loop that is gone drops the input and with it the
    /// sender: [`ProposeError::Stopped`].
    fn ask<T>(
        &self,
        input: Input<R>,
        rx: oneshot::Receiver<Result<T, ProposeError>>,
    ) -> impl std::future::Future<Output = Result<T, ProposeError>> + Send + 'static
    where
        T: Send + 'static,
    {
        let _ = self.tx.send(input);
        async move {
            rx.await
                .unwrap_or_else(|_| Err(ProposeError::Stopped("the Raft loop ended".into())))
        }
    }

    /// Hand over a snapshot message a peer sent (received whole, within
    /// the node's snapshot size limit: not counted against the inbox).
    pub fn deliver_snapshot(&self, gid: u64, msg: Message) -> bool {
        self.tx.send(Input::Raft(vec![(gid, msg)], 0)).is_ok()
    }

    /// Hand over messages a peer sent. `false`: dropped, the loop's inbox
    /// is full ([`MAX_INBOX_BYTES`]) or the loop is gone.
    pub fn deliver(&self, msgs: Vec<(u64, Message)>) -> bool {
        let bytes: usize = msgs.iter().map(|(_, m)| message_bytes(m)).sum();
        if self.inbox.fetch_add(bytes, Ordering::Relaxed) + bytes > MAX_INBOX_BYTES {
            self.inbox.fetch_sub(bytes, Ordering::Relaxed);
            Stats::add(&self.stats.dropped, msgs.len() as u64);
            return false;
        }
        if self.tx.send(Input::Raft(msgs, bytes)).is_err() {
            self.inbox.fetch_sub(bytes, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Open `gid` from this node's storage, or create it with `voters` as
    /// its first configuration if it has none here.
    pub fn open_group(&self, gid: u64, voters: Vec<u64>) -> oneshot::Receiver<Result<(), String>> {
        let (done, rx) = oneshot::channel();
        let _ = self.tx.send(Input::Open { gid, voters, done });
        rx
    }

    /// Wait until `gid` may be read linearizably on this node: this replica
    /// leads, holds a lease or had a quorum confirm it after the call, and
    /// has applied everything committed before the call. Then read its
    /// rows.
    pub fn read(&self, gid: u64) -> impl std::future::Future<Output = Result<(), ProposeError>> {
        let (reply, rx) = oneshot::channel();
        self.ask(Input::Read { gid, reply }, rx)
    }

    /// Take `gid` out of the loop: its waiters fail with
    /// [`ProposeError::Stopped`] (a proposal's outcome is unknown), its
    /// messages are dropped from then on,
    /// and the answer comes once every log write queued before is on disk,
    /// so that the group's rows may be deleted with none landing after.
    /// `false`: the loop is gone (it writes nothing more either).
    pub async fn close_group(&self, gid: u64) -> bool {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Input::Close { gid, done }).is_err() {
            return false;
        }
        rx.await.is_ok()
    }

    /// Propose a change of `gid`'s configuration on its leader here; the
    /// answer is the configuration once the change is applied. A change
    /// that enters a joint configuration is answered when it is entered:
    /// the leader leaves it by itself (`transition` auto), and a leader
    /// elected in the middle leaves it when asked again with an empty
    /// change. Refused ([`ProposeError::Refused`]) while another change is
    /// under way.
    pub fn change_membership(
        &self,
        gid: u64,
        cc: ConfChangeV2,
    ) -> impl std::future::Future<Output = Result<Membership, ProposeError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        self.ask(Input::ConfChange { gid, cc, reply }, rx)
    }

    /// Hand `gid`'s leadership from this replica to voter `to` (raft-rs's
    /// transfer: `to` stands once its log holds all of this leader's, and
    /// the voters grant it at once). Answered when the transfer starts;
    /// this replica's lease ends first, and it takes no proposal until the
    /// transfer ends or is given up (after an election timeout).
    pub fn transfer_leader(
        &self,
        gid: u64,
        to: u64,
    ) -> impl std::future::Future<Output = Result<(), ProposeError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        self.ask(Input::Transfer { gid, to, reply }, rx)
    }

    /// The group's [`Role`] on this node, once it is open.
    pub fn role(&self, gid: u64) -> Option<Arc<Role>> {
        self.roles.read().ok()?.get(&gid).cloned()
    }

    /// Make this replica stand for election now.
    pub fn campaign(&self, gid: u64) {
        let _ = self.tx.send(Input::Campaign(gid));
    }

    pub fn status(&self, gid: u64) -> oneshot::Receiver<Option<GroupStatus>> {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Input::Status { gid, reply });
        rx
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Ask the loop to stop; join the thread [`start`] returned to wait.
    pub fn stop(&self) {
        let _ = self.tx.send(Input::Stop);
    }
}

/// Start a node's loop on a thread of its own.
pub fn start<A: Applier, T: Transport>(
    config: BatchConfig,
    engine: Arc<Engine>,
    applier: A,
    transport: T,
) -> std::io::Result<(Handle<A::Reply>, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel();
    let stats = Arc::new(Stats::default());
    let inbox = Arc::new(AtomicUsize::new(0));
    let roles = Roles::default();
    let handle = Handle {
        tx: tx.clone(),
        stats: stats.clone(),
        inbox: inbox.clone(),
        roles: roles.clone(),
    };
    let logger = slog::Logger::root(super::ToTracing, slog::o!("node" => config.node_id));
    let mut lp = Loop {
        config,
        engine,
        applier,
        transport,
        groups: HashMap::new(),
        rx,
        tx,
        logger,
        jobs: VecDeque::new(),
        next_seq: 0,
        slow_disk_until: None,
        next_read: 1,
        read_groups: HashSet::new(),
        dirty_hard_states: HashSet::new(),
        stats,
        inbox,
        snapshotting: HashSet::new(),
        outbox: HashMap::new(),
        roles,
        stopped: None,
        stopped_groups: HashMap::new(),
        last_heard: HashMap::new(),
        last_sent: HashMap::new(),
        again: false,
    };
    let node_id = lp.config.node_id;
    let stats = lp.stats.clone();
    let thread = std::thread::Builder::new()
        .name("batch-raft".into())
        .spawn(move || {
            // raft-rs panics on what it holds impossible (a peer's commit
            // index past this log, say). The loop then ends like a failed
            // write: every waiter hears it stopped (its sender dropped),
            // and the reason is logged, not lost with the thread.
            let run = std::panic::AssertUnwindSafe(|| lp.run());
            if let Err(panic) = std::panic::catch_unwind(run) {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic".into());
                tracing::error!(node = node_id, "batch Raft loop stops: {why}");
                let _ = stats.stopped.set(why);
            }
        })?;
    Ok((handle, thread))
}

struct Group<R> {
    raw: RawNode<GroupLog>,
    /// Proposals waiting for their entry: (index, term, waiter), by index.
    waiting: VecDeque<(u64, u64, Waiter<R>)>,
    /// Reads that arrived this turn, not yet in a ReadIndex round.
    reads_new: Vec<ReadWaiter>,
    /// ReadIndex rounds in flight, oldest first.
    reads_asked: VecDeque<Round>,
    /// Confirmed rounds waiting for the apply: (read index, reads).
    reads_ready: VecDeque<(u64, Vec<ReadWaiter>)>,
    /// The lease this replica holds as leader: (term, until).
    lease: Option<(u64, Instant)>,
    /// Until when this replica grants no vote (reopened from a stored log:
    /// [`BatchConfig::quiet`]).
    quiet_until: Option<Instant>,
    /// A configuration change proposed here: (index, term, waiter).
    conf_waiting: Option<(u64, u64, ConfWaiter)>,
    /// A change that adds a replica was applied: the log's first entry
    /// goes once applied ([`Loop::compact`]), so that no leader's log
    /// starts at index 1 any more and a new replica, whose empty log
    /// starts at 0, gets the group by snapshot, with its configuration,
    /// instead of entries that would leave it without one.
    drop_first: bool,
    /// Ticks since the last request, while this replica leads.
    idle_ticks: usize,
    role: Arc<Role>,
}

/// A ReadIndex round in flight.
struct Round {
    ctx: u64,
    /// When it was asked (before its heartbeats went out), and in which
    /// term: a quorum's answer gives a lease from then.
    sent: Instant,
    term: u64,
    reads: Vec<ReadWaiter>,
}

impl<R> Group<R> {
    /// A request reached the group: it is not idle, and if it sleeps it
    /// wakes (a leader heartbeats at once, and its check of a quorum
    /// counts from now). `true`: it slept.
    fn touch(&mut self) -> bool {
        self.idle_ticks = 0;
        self.wake()
    }

    /// Hibernating: not ticked (module doc, "Hibernation"). The loop
    /// alone sets it; [`Role::asleep`] is also what `Status` reports.
    fn asleep(&self) -> bool {
        self.role.asleep.load(Ordering::Relaxed)
    }

    fn wake(&mut self) -> bool {
        if !self.asleep() {
            return false;
        }
        self.role.asleep.store(false, Ordering::Release);
        if self.raw.raft.state == StateRole::Leader {
            self.raw.raft.election_elapsed = 0;
            self.raw.ping();
        }
        true
    }

    fn sleep(&mut self) {
        self.role.asleep.store(true, Ordering::Release);
    }

    /// The configuration this replica applied last is joint.
    fn joint(&self) -> bool {
        !self.raw.store().conf_state().voters_outgoing.is_empty()
    }

    /// Whether this leader may put its group to sleep: idle long enough,
    /// nothing waiting, every entry committed, applied and matched by
    /// every voter, which all answered lately; one configuration, no
    /// learner, no change or transfer under way.
    fn may_hibernate(&self, me: u64, idle_ticks: usize) -> bool {
        let r = &self.raw.raft;
        let last = r.raft_log.last_index();
        let conf = r.prs().conf();
        r.state == StateRole::Leader
            && self.idle_ticks >= idle_ticks
            && r.lead_transferee.is_none()
            && !r.has_pending_conf()
            && conf.learners().is_empty()
            && !self.joint()
            && r.raft_log.committed == last
            && r.raft_log.applied == last
            && self.waiting.is_empty()
            && self.conf_waiting.is_none()
            && self.reads_new.is_empty()
            && self.reads_asked.is_empty()
            && self.reads_ready.is_empty()
            && r.prs()
                .iter()
                .filter(|(id, _)| **id != me)
                .all(|(_, p)| p.matched == last && p.recent_active)
    }

    /// Whether this follower may sleep on its leader's word (`m`, the
    /// leader's hibernate message): it follows that leader in that term
    /// and holds, has committed and has applied the leader's last entry.
    fn may_sleep_on(&self, m: &Message) -> bool {
        let r = &self.raw.raft;
        r.state == StateRole::Follower
            && r.leader_id == m.from
            && r.term == m.term
            && r.raft_log.last_index() == m.commit
            && r.raft_log.committed == m.commit
            && r.raft_log.applied == m.commit
            && !self.raw.has_ready()
    }

    /// Fail the reads no quorum confirmed (this replica stopped leading).
    fn fail_unconfirmed_reads(&mut self, err: &ProposeError) {
        let asked = self.reads_asked.drain(..).flat_map(|r| r.reads);
        for w in self.reads_new.drain(..).chain(asked) {
            let _ = w.send(Err(err.clone()));
        }
    }

    /// Fail everything waiting on this group (the loop stops).
    fn fail_all(&mut self, err: &ProposeError) {
        self.fail_unconfirmed_reads(err);
        let proposals = self.waiting.drain(..).map(|(_, _, w)| w);
        for w in proposals {
            let _ = w.send(Err(err.clone()));
        }
        for w in self.reads_ready.drain(..).flat_map(|(_, w)| w) {
            let _ = w.send(Err(err.clone()));
        }
        if let Some((_, _, w)) = self.conf_waiting.take() {
            let _ = w.send(Err(err.clone()));
        }
    }

    /// Answer the confirmed reads the apply has reached.
    fn answer_reads(&mut self) {
        let applied = self.raw.raft.raft_log.applied;
        while self.reads_ready.front().is_some_and(|(i, _)| *i <= applied) {
            let (_, waiters) = self.reads_ready.pop_front().expect("checked");
            for w in waiters {
                let _ = w.send(Ok(()));
            }
        }
    }

    fn not_leader(&self) -> ProposeError {
        let leader = self.raw.raft.leader_id;
        ProposeError::NotLeader {
            leader: (leader != 0).then_some(leader),
        }
    }
}

/// A group's part of a pending engine write.
struct Persist {
    gid: u64,
    ready: u64,
    messages: Vec<Message>,
    /// The index of a snapshot this ready installed (0: none): applied
    /// once the ready is persisted, as raft-rs requires.
    snapshot: u64,
}

struct Loop<A: Applier, T> {
    config: BatchConfig,
    engine: Arc<Engine>,
    applier: A,
    transport: T,
    groups: HashMap<u64, Group<A::Reply>>,
    rx: mpsc::Receiver<Input<A::Reply>>,
    tx: mpsc::Sender<Input<A::Reply>>,
    logger: slog::Logger,
    /// Engine writes not yet synced, oldest first: (seq, what each group
    /// learns when it is).
    jobs: VecDeque<(u64, Vec<Persist>)>,
    next_seq: u64,
    /// Until when synced writes go to the writer thread (after a sync of
    /// the loop's own took longer than `slow_sync`).
    slow_disk_until: Option<Instant>,
    /// The context of the next ReadIndex round.
    next_read: u64,
    /// Groups with reads that arrived this turn.
    read_groups: HashSet<u64>,
    /// Groups whose hard state changed only in its commit index: written
    /// with the next synced write, not on its own (a commit index may be
    /// lost; Raft learns it again).
    dirty_hard_states: HashSet<u64>,
    stats: Arc<Stats>,
    /// Bytes of peers' messages queued and not yet taken (the handles').
    inbox: Arc<AtomicUsize>,
    /// Groups with a snapshot job running.
    snapshotting: HashSet<u64>,
    /// Messages that waited for the disk and may go now, per peer: sent
    /// with the next turn's leader messages, in the same send.
    outbox: HashMap<u64, Vec<(u64, Message)>>,
    roles: Roles,
    /// Why the loop stopped, once it has.
    stopped: Option<String>,
    /// Replicas stopped on an error of their own ([`Loop::stop_group`]),
    /// and why: they are out of `groups` until the node restarts.
    stopped_groups: HashMap<u64, String>,
    /// When each peer node was last heard from (any batch of messages),
    /// and when this node last sent it one: sleeping groups' liveness.
    last_heard: HashMap<u64, Instant>,
    last_sent: HashMap<u64, Instant>,
    /// The last turn left a group with ready work of its own making (see
    /// [`Loop::turn`]): the next turn comes at once, not with the next
    /// input or tick.
    again: bool,
}

impl<A: Applier, T: Transport> Loop<A, T> {
    fn run(&mut self) {
        let mut next_tick = Instant::now() + self.config.tick;
        while self.stopped.is_none() {
            let wait = if self.again {
                Duration::ZERO
            } else {
                next_tick.saturating_duration_since(Instant::now())
            };
            match self.rx.recv_timeout(wait) {
                Ok(input) => self.take(input),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            while self.stopped.is_none() {
                match self.rx.try_recv() {
                    Ok(input) => self.take(input),
                    Err(_) => break,
                }
            }
            if Instant::now() >= next_tick {
                let me = self.config.node_id;
                let idle = self.config.hibernate_ticks();
                let mut sleepy = Vec::new();
                // A whole tick missed: the thread was held (a huge entry
                // encoded, written or applied here). Its leaders' followers
                // heard nothing meanwhile, so they hear from them now
                // rather than at the next heartbeat tick, which could be
                // past their election timeout.
                let late = Instant::now().saturating_duration_since(next_tick) >= self.config.tick;
                if late {
                    Stats::add(&self.stats.late_ticks, 1);
                }
                for (&gid, g) in self.groups.iter_mut() {
                    if g.asleep() {
                        continue;
                    }
                    g.raw.tick();
                    publish_progress(me, g);
                    if let Some(idle) = idle {
                        g.idle_ticks = g.idle_ticks.saturating_add(1);
                        if g.may_hibernate(me, idle) {
                            // Its followers are told to sleep now; a
                            // heartbeat after that would wake them.
                            sleepy.push(gid);
                            continue;
                        }
                    }
                    if late {
                        g.raw.ping();
                    }
                }
                self.hibernate(sleepy);
                self.check_sleepers();
                next_tick += self.config.tick;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + self.config.tick;
                }
            }
            if self.stopped.is_none() {
                self.turn();
            }
        }
        let why = self.stopped.clone().unwrap_or_else(|| "stopped".into());
        let err = ProposeError::Stopped(why);
        for g in self.groups.values_mut() {
            g.fail_all(&err);
        }
        // Fail what arrived after the stop, too.
        while let Ok(input) = self.rx.try_recv() {
            match input {
                Input::Propose { reply, .. } => {
                    let _ = reply.send(Err(err.clone()));
                }
                Input::Read { reply, .. } => {
                    let _ = reply.send(Err(err.clone()));
                }
                _ => {}
            }
        }
    }

    fn fail(&mut self, why: String) {
        tracing::error!(node = self.config.node_id, "batch Raft loop stops: {why}");
        let _ = self.stats.stopped.set(why.clone());
        self.stopped = Some(why);
    }

    fn take(&mut self, input: Input<A::Reply>) {
        match input {
            Input::Propose { gid, data, reply } => self.propose(gid, data, reply),
            Input::Raft(msgs, bytes) => {
                self.inbox.fetch_sub(bytes, Ordering::Relaxed);
                // A batch comes from one node: it is alive.
                if let Some((_, m)) = msgs.first() {
                    self.last_heard.insert(m.from, Instant::now());
                }
                for (gid, msg) in msgs {
                    if gid == PING_GID {
                        continue;
                    }
                    let Some(g) = self.groups.get_mut(&gid) else {
                        tracing::debug!(gid, "a message for a group not hosted here");
                        continue;
                    };
                    if is_hibernate(&msg) {
                        // Never stepped: raft-rs knows nothing of it.
                        if !g.asleep() && g.may_sleep_on(&msg) {
                            g.sleep();
                            Stats::add(&self.stats.hibernated, 1);
                        }
                        continue;
                    }
                    // Any message wakes a group, but answers to a leader's
                    // last heartbeats and appends, which may land after
                    // it fell asleep.
                    let answer = matches!(
                        msg.get_msg_type(),
                        MessageType::MsgHeartbeatResponse | MessageType::MsgAppendResponse
                    );
                    if !answer && g.wake() {
                        Stats::add(&self.stats.woken, 1);
                    }
                    let vote = matches!(
                        msg.get_msg_type(),
                        MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
                    );
                    if vote && g.quiet_until.is_some_and(|t| Instant::now() < t) {
                        tracing::debug!(gid, "a vote request while reopened lately: ignored");
                        continue;
                    }
                    if let Err(e) = g.raw.step(msg) {
                        tracing::debug!(gid, "step: {e}");
                    }
                    if g.raw.store().take_wanted().is_some() {
                        self.start_snapshot(gid);
                    }
                }
            }
            Input::SnapshotBuilt { gid, meta, result } => self.snapshot_built(gid, meta, result),
            Input::SnapshotSent { gid, to, ok } => {
                if let Some(g) = self.groups.get_mut(&gid) {
                    let status = if ok {
                        Stats::add(&self.stats.snapshots_sent, 1);
                        SnapshotStatus::Finish
                    } else {
                        SnapshotStatus::Failure
                    };
                    g.raw.report_snapshot(to, status);
                }
            }
            Input::Persisted { seq, result } => self.persisted(seq, result),
            Input::Open { gid, voters, done } => {
                let r = self.open(gid, &voters);
                let _ = done.send(r);
            }
            Input::Close { gid, done } => self.close(gid, done),
            Input::Campaign(gid) => {
                if let Some(g) = self.groups.get_mut(&gid) {
                    if g.touch() {
                        Stats::add(&self.stats.woken, 1);
                    }
                    if let Err(e) = g.raw.campaign() {
                        tracing::debug!(gid, "campaign: {e}");
                    }
                }
            }
            Input::Status { gid, reply } => {
                let s = self.groups.get(&gid).map(|g| {
                    let r = &g.raw.raft;
                    GroupStatus {
                        is_leader: r.state == StateRole::Leader,
                        leader: r.leader_id,
                        term: r.term,
                        commit: r.raft_log.committed,
                        applied: r.raft_log.applied,
                        first_index: r.raft_log.first_index(),
                        last_index: r.raft_log.last_index(),
                        log_entries: g.raw.store().len_and_bytes().0,
                    }
                });
                let _ = reply.send(s);
            }
            Input::Read { gid, reply } => match self.groups.get_mut(&gid) {
                None => {
                    let err = match self.stopped_groups.get(&gid) {
                        Some(why) => ProposeError::GroupStopped(gid, why.clone()),
                        None => ProposeError::NoGroup(gid),
                    };
                    let _ = reply.send(Err(err));
                }
                Some(g) if g.raw.raft.state != StateRole::Leader => {
                    let _ = reply.send(Err(g.not_leader()));
                }
                Some(g) => {
                    if g.touch() {
                        Stats::add(&self.stats.woken, 1);
                    }
                    g.reads_new.push(reply);
                    self.read_groups.insert(gid);
                }
            },
            Input::ConfChange { gid, cc, reply } => self.change_conf(gid, cc, reply),
            Input::Transfer { gid, to, reply } => {
                let _ = reply.send(self.transfer(gid, to));
            }
            Input::Stop => self.stopped = Some("the node is shutting down".into()),
        }
    }

    /// Put `gids` (this node leads them, [`Group::may_hibernate`]) to
    /// sleep, and ask their followers to sleep too: a heartbeat message
    /// of the loop's own ([`is_hibernate`]) naming the leader's term and
    /// last index, which a follower takes only if it holds and applied
    /// the same ([`Group::may_sleep_on`]). A follower that does not stays
    /// awake; its election clock then runs out, and its (pre-)vote
    /// request wakes the leader, which heartbeats again.
    fn hibernate(&mut self, gids: Vec<u64>) {
        if gids.is_empty() {
            return;
        }
        let me = self.config.node_id;
        let mut out: HashMap<u64, Vec<(u64, Message)>> = HashMap::new();
        for gid in gids {
            let Some(g) = self.groups.get_mut(&gid) else {
                continue;
            };
            g.sleep();
            Stats::add(&self.stats.hibernated, 1);
            let r = &g.raw.raft;
            for to in r.prs().conf().voters().ids().iter().filter(|&id| id != me) {
                let mut m = loop_heartbeat(me, to);
                m.term = r.term;
                m.commit = r.raft_log.last_index();
                m.context = HIBERNATE.to_vec();
                out.entry(to).or_default().push((gid, m));
            }
        }
        self.send(out);
    }

    /// Once a tick, while some group sleeps here: wake each sleeping
    /// follower whose leader's node has not been heard from for an
    /// election timeout (it campaigns once its election clock, stopped
    /// while it slept, runs out), and ping each node that shares a
    /// sleeping group with this one and was sent nothing for a heartbeat
    /// interval, so that its sleeping followers hear this node lives.
    fn check_sleepers(&mut self) {
        let now = Instant::now();
        let me = self.config.node_id;
        let lost = self.config.lost_after();
        let mut peers = HashSet::new();
        let mut woken = 0;
        for g in self.groups.values_mut().filter(|g| g.asleep()) {
            let r = &g.raw.raft;
            if r.state != StateRole::Leader {
                let heard = self.last_heard.get(&r.leader_id);
                if heard.is_none_or(|t| now.saturating_duration_since(*t) > lost) {
                    g.wake();
                    woken += 1;
                    continue;
                }
            }
            peers.extend(r.prs().conf().voters().ids().iter().filter(|&id| id != me));
        }
        Stats::add(&self.stats.woken, woken);
        let every = self.config.tick * u32::try_from(self.config.heartbeat_ticks).unwrap_or(1);
        let mut out: HashMap<u64, Vec<(u64, Message)>> = HashMap::new();
        for to in peers {
            let quiet = self
                .last_sent
                .get(&to)
                .is_none_or(|t| now.saturating_duration_since(*t) >= every);
            if quiet {
                out.entry(to)
                    .or_default()
                    .push((PING_GID, loop_heartbeat(me, to)));
            }
        }
        self.send(out);
    }

    /// [`Handle::change_membership`].
    fn change_conf(&mut self, gid: u64, cc: ConfChangeV2, reply: ConfWaiter) {
        let g = match self.led(gid) {
            Ok(g) => g,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        // raft-rs would turn a change it cannot take into an empty entry;
        // say why instead.
        let joint = g.joint();
        let leave = cc.changes.is_empty();
        let why = if g.raw.raft.has_pending_conf() || g.conf_waiting.is_some() {
            Some("another membership change of the group is not applied yet")
        } else if g.raw.raft.lead_transferee.is_some() {
            Some("a leadership transfer is under way")
        } else if joint && !leave {
            Some("the group is in a joint configuration: leave it first")
        } else if !joint && leave {
            Some("the group is not in a joint configuration")
        } else {
            None
        };
        if let Some(why) = why {
            let _ = reply.send(Err(ProposeError::Refused(format!("group {gid}: {why}"))));
            return;
        }
        match g.raw.propose_conf_change(Vec::new(), cc) {
            Ok(()) => {
                let index = g.raw.raft.raft_log.last_index();
                g.conf_waiting = Some((index, g.raw.raft.term, reply));
            }
            Err(e) => {
                tracing::debug!(gid, "propose a configuration change: {e}");
                let _ = reply.send(Err(ProposeError::Dropped));
            }
        }
    }

    /// [`Handle::transfer_leader`].
    fn transfer(&mut self, gid: u64, to: u64) -> Result<(), ProposeError> {
        let me = self.config.node_id;
        let g = self.led(gid)?;
        if to == me {
            return Ok(());
        }
        if !g.raw.raft.prs().conf().voters().contains(to) {
            return Err(ProposeError::Refused(format!(
                "node {to} is not a voter of group {gid}"
            )));
        }
        // The voters grant the target's vote at once, lease or not: this
        // leader answers no read alone from now on.
        g.lease = None;
        g.role.set_lease(None);
        g.raw.transfer_leader(to);
        Ok(())
    }

    fn open(&mut self, gid: u64, voters: &[u64]) -> Result<(), String> {
        if self.groups.contains_key(&gid) {
            return Ok(());
        }
        if let Some(why) = self.stopped_groups.get(&gid) {
            return Err(ProposeError::GroupStopped(gid, why.clone()).to_string());
        }
        let view = self.engine.view();
        let mut quiet_until = None;
        let log = match GroupLog::open(&view, gid).map_err(|e| e.to_string())? {
            Some(log) => {
                if log.hard_state().term > 0 {
                    quiet_until = Some(Instant::now() + self.config.quiet());
                }
                log
            }
            None => {
                let mut ops = Vec::new();
                let log = GroupLog::create(gid, voters, &mut ops);
                self.engine
                    .write_direct(&ops)
                    .map_err(|e| format!("creating group {gid}: {e}"))?;
                log
            }
        };
        let applied = self
            .applier
            .applied(gid)
            .map_err(|e| format!("group {gid}: {e}"))?;
        let last = log.last_index().map_err(|e| format!("group {gid}: {e}"))?;
        if applied > last {
            // The data is ahead of the log it came from: not this node's
            // log, or a log that lost synced writes. Refuse the group.
            return Err(format!(
                "group {gid}: applied index {applied} is past the stored log's end {last}"
            ));
        }
        let start = log.first_index().map_err(|e| format!("group {gid}: {e}"))? - 1;
        if applied < start {
            // Entries between the two were compacted or replaced by a
            // snapshot that the data never got: they cannot be applied.
            return Err(format!(
                "group {gid}: applied index {applied} is before the stored log's start {start}"
            ));
        }
        // The stored commit index may lag (it is not synced on its own),
        // but what was applied was committed.
        let mut log = log;
        log.raise_commit(applied);
        let cfg = raft::Config {
            id: self.config.node_id,
            election_tick: self.config.election_ticks,
            heartbeat_tick: self.config.heartbeat_ticks,
            max_size_per_msg: self.config.max_append_bytes,
            max_inflight_msgs: self.config.max_inflight,
            max_uncommitted_size: self.config.max_uncommitted_bytes,
            max_committed_size_per_ready: self.config.max_apply_bytes,
            applied,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        let logger = self.logger.new(slog::o!("group" => gid));
        let raw = RawNode::new(&cfg, log, &logger).map_err(|e| format!("group {gid}: {e}"))?;
        let role = Arc::new(Role {
            half_lease: self.config.lease() / 2,
            ..Role::default()
        });
        role.term.store(raw.raft.term, Ordering::Release);
        role.applied.store(applied, Ordering::Release);
        role.last_index
            .store(raw.raft.raft_log.last_index(), Ordering::Release);
        role.log_start
            .store(raw.store().log_start(), Ordering::Release);
        role.set_membership(raw.store().conf_state());
        if let Ok(mut roles) = self.roles.write() {
            roles.insert(gid, role.clone());
        }
        self.groups.insert(
            gid,
            Group {
                raw,
                waiting: VecDeque::new(),
                reads_new: Vec::new(),
                reads_asked: VecDeque::new(),
                lease: None,
                quiet_until,
                reads_ready: VecDeque::new(),
                conf_waiting: None,
                drop_first: false,
                idle_ticks: 0,
                role,
            },
        );
        Ok(())
    }

    /// [`Handle::close_group`].
    fn close(&mut self, gid: u64, done: oneshot::Sender<()>) {
        if self.stopped_groups.remove(&gid).is_some() {
            self.applier.forget(gid);
        }
        if let Some(mut g) = self.groups.remove(&gid) {
            // A proposal may still commit on the other replicas: its
            // outcome is unknown, as when the loop stops.
            g.fail_all(&ProposeError::Stopped(format!(
                "group {gid} was closed on this node"
            )));
            if let Ok(mut roles) = self.roles.write() {
                roles.remove(&gid);
            }
            self.read_groups.remove(&gid);
            self.dirty_hard_states.remove(&gid);
            for msgs in self.outbox.values_mut() {
                msgs.retain(|(g, _)| *g != gid);
            }
            self.applier.forget(gid);
        }
        // Writes complete in order: once this empty one has, none queued
        // before it can land after the caller deletes the rows.
        self.engine.submit(
            Vec::new(),
            false,
            Box::new(move |_| {
                let _ = done.send(());
            }),
        );
    }

    /// Take `gid`'s replica out of the loop after an error of its own (an
    /// entry it could not apply): it takes no part in its group (no vote,
    /// no append, no apply) until the node restarts and reopens it from
    /// its log, as an openraft replica stopped by its storage. Its waiters
    /// hear it stopped (outcome unknown: the entry may be applied by the
    /// other replicas), `Status` and `/metrics` show it (`Role::stopped`),
    /// and the loop's other groups go on.
    fn stop_group(&mut self, gid: u64, why: String) {
        tracing::error!(
            node = self.config.node_id,
            gid,
            "the replica stops until the node restarts: {why}"
        );
        let Some(mut g) = self.groups.remove(&gid) else {
            return;
        };
        let err = ProposeError::Stopped(format!("group {gid} stopped on this node: {why}"));
        g.fail_all(&err);
        g.role.leader.store(0, Ordering::Release);
        g.role.set_lease(None);
        let _ = g.role.stopped.set(why.clone());
        self.stopped_groups.insert(gid, why);
        self.read_groups.remove(&gid);
        self.dirty_hard_states.remove(&gid);
        for msgs in self.outbox.values_mut() {
            msgs.retain(|(g, _)| *g != gid);
        }
    }

    /// `gid`'s group, which this replica must lead; else why not.
    fn led(&mut self, gid: u64) -> Result<&mut Group<A::Reply>, ProposeError> {
        if let Some(why) = self.stopped_groups.get(&gid) {
            return Err(ProposeError::GroupStopped(gid, why.clone()));
        }
        let g = self
            .groups
            .get_mut(&gid)
            .ok_or(ProposeError::NoGroup(gid))?;
        if g.raw.raft.state != StateRole::Leader {
            return Err(g.not_leader());
        }
        if g.touch() {
            Stats::add(&self.stats.woken, 1);
        }
        Ok(g)
    }

    fn propose(&mut self, gid: u64, data: Vec<u8>, reply: Waiter<A::Reply>) {
        let g = match self.led(gid) {
            Ok(g) => g,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        match g.raw.propose(Vec::new(), data) {
            Ok(()) => {
                let index = g.raw.raft.raft_log.last_index();
                let term = g.raw.raft.term;
                g.waiting.push_back((index, term, reply));
            }
            Err(e) => {
                tracing::debug!(gid, "propose: {e}");
                let _ = reply.send(Err(ProposeError::Dropped));
            }
        }
        if g.raw.store().take_wanted().is_some() {
            self.start_snapshot(gid);
        }
    }

    /// One turn's ready work of every group: see the module doc.
    fn turn(&mut self) {
        self.again = false;
        // One ReadIndex round per group for all the reads of this turn.
        for gid in std::mem::take(&mut self.read_groups) {
            let Some(g) = self.groups.get_mut(&gid) else {
                continue;
            };
            if g.reads_new.is_empty() {
                continue;
            }
            if !g.raw.raft.commit_to_current_term() {
                // A new leader answers no ReadIndex before an entry of its
                // own term commits (raft-rs drops the request): wait.
                self.read_groups.insert(gid);
                continue;
            }
            let now = Instant::now();
            let term = g.raw.raft.term;
            let leased = g.raw.raft.state == StateRole::Leader
                && g.lease.is_some_and(|(t, until)| t == term && now < until);
            let mut reads = std::mem::take(&mut g.reads_new);
            if leased {
                // No other leader can exist until the lease ends: what
                // this one has committed is all that was acknowledged.
                Stats::add(&self.stats.lease_reads, reads.len() as u64);
                g.reads_ready
                    .push_back((g.raw.raft.raft_log.committed, reads));
                g.answer_reads();
                // Renewed, by a round with no read waiting on it, once
                // half used.
                let until = g.lease.map_or(now, |(_, until)| until);
                if until.saturating_duration_since(now) > self.config.lease() / 2
                    || !g.reads_asked.is_empty()
                {
                    continue;
                }
                reads = Vec::new();
            }
            let ctx = self.next_read;
            self.next_read += 1;
            g.raw.read_index(ctx.to_be_bytes().to_vec());
            Stats::add(&self.stats.read_rounds, 1);
            g.reads_asked.push_back(Round {
                ctx,
                sent: now,
                term,
                reads,
            });
        }
        let mut ops: Vec<Op> = Vec::new();
        let mut sync = false;
        // What waited for the disk goes first, with this turn's messages.
        let mut out = std::mem::take(&mut self.outbox);
        let mut persists = Vec::new();
        let mut applies = Vec::new();
        let mut appended = 0;
        let mut snapshots_out = Vec::new();
        let mut failed = None;
        let lease = self.config.lease();
        for (&gid, g) in self.groups.iter_mut() {
            if !g.raw.has_ready() {
                continue;
            }
            let mut rd = g.raw.ready();
            if let Some(ss) = rd.ss() {
                let before = g.role.leader.swap(ss.leader_id, Ordering::AcqRel);
                if ss.leader_id != 0 && before != ss.leader_id {
                    g.role.leader_changes.fetch_add(1, Ordering::Relaxed);
                }
                if ss.raft_state != StateRole::Leader {
                    g.lease = None;
                    g.role.set_lease(None);
                    let err = g.not_leader();
                    g.fail_unconfirmed_reads(&err);
                }
            }
            g.role.term.store(g.raw.raft.term, Ordering::Release);
            for rs in rd.take_read_states() {
                let Ok(ctx) = <[u8; 8]>::try_from(&rs.request_ctx[..]) else {
                    continue;
                };
                let ctx = u64::from_be_bytes(ctx);
                // Rounds complete in order; one skipped was lost with a
                // change of leader.
                while let Some(round) = g.reads_asked.pop_front() {
                    if round.ctx == ctx {
                        // A quorum took heartbeats sent after the round
                        // was asked: a lease from then, in its term; none
                        // while a leadership transfer is under way (the
                        // voters grant its target's vote at once).
                        if round.term == g.raw.raft.term
                            && g.raw.raft.state == StateRole::Leader
                            && g.raw.raft.lead_transferee.is_none()
                        {
                            let until = round.sent + lease;
                            if g.lease.is_none_or(|(t, u)| t != round.term || u < until) {
                                g.lease = Some((round.term, until));
                                let floor = g.raw.raft.raft_log.committed;
                                g.role.set_lease(Some((round.term, until, floor)));
                            }
                        }
                        g.reads_ready.push_back((rs.index, round.reads));
                        break;
                    }
                    if round.ctx > ctx {
                        g.reads_asked.push_front(round);
                        break;
                    }
                    let err = g.not_leader();
                    for w in round.reads {
                        let _ = w.send(Err(err.clone()));
                    }
                }
            }
            g.answer_reads();
            for m in rd.take_messages() {
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    snapshots_out.push((gid, m));
                    continue;
                }
                out.entry(m.to).or_default().push((gid, m));
            }
            let mut snapshot = 0;
            if !rd.snapshot().is_empty() {
                match install(
                    &self.engine,
                    &mut self.applier,
                    !self.jobs.is_empty(),
                    gid,
                    g,
                    &rd,
                ) {
                    Ok(index) => {
                        snapshot = index;
                        g.role.snapshot.store(index, Ordering::Release);
                        Stats::add(&self.stats.snapshots_installed, 1);
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            let committed = rd.take_committed_entries();
            if !rd.entries().is_empty() {
                appended += rd.entries().len() as u64;
                g.raw.mut_store().append(rd.take_entries(), &mut ops);
                sync = true;
            }
            if let Some(hs) = rd.hs() {
                let hs = hs.clone();
                if rd.must_sync() {
                    g.raw.mut_store().set_hard_state(hs, Some(&mut ops));
                    self.dirty_hard_states.remove(&gid);
                    sync = true;
                } else {
                    g.raw.mut_store().set_hard_state(hs, None);
                    self.dirty_hard_states.insert(gid);
                }
            }
            persists.push(Persist {
                gid,
                ready: rd.number(),
                messages: rd.take_persisted_messages(),
                snapshot,
            });
            g.raw.advance_append_async(rd);
            if !committed.is_empty() {
                applies.push((gid, committed));
            }
        }
        if let Some(why) = failed {
            return self.fail(why);
        }
        if persists.is_empty() {
            self.send(out);
            return;
        }
        Stats::add(&self.stats.turns, 1);
        let turned: Vec<u64> = persists.iter().map(|p| p.gid).collect();
        self.send(out);
        // Snapshots on their own channel; raft-rs hears how each went
        // (one that failed is sent again when the follower next answers).
        for (gid, m) in snapshots_out {
            let (to, tx) = (m.to, self.tx.clone());
            let done = Box::new(move |ok| {
                let _ = tx.send(Input::SnapshotSent { gid, to, ok });
            });
            self.transport.send_snapshot(to, gid, m, done);
        }
        if sync {
            for gid in self.dirty_hard_states.drain() {
                if let Some(g) = self.groups.get(&gid) {
                    ops.push(g.raw.store().hard_state_row());
                }
            }
            Stats::add(&self.stats.entries, appended);
            Stats::add(&self.stats.syncs, 1);
            // While the disk is quick and nothing of ours is at the
            // writer, the loop writes and syncs itself: the thread would
            // only wait for the writer's news, and two wake-ups (to the
            // writer and back) leave every Raft round's path. After a
            // slow sync it hands its writes to the writer thread for a
            // while (`sync_here`).
            if self.jobs.is_empty() && self.slow_disk_until.is_none_or(|t| Instant::now() >= t) {
                if let Err(e) = self.sync_here(&ops) {
                    return self.fail(format!("writing the Raft log: {e}"));
                }
                self.persisted_now(persists);
            } else {
                self.submit(ops, persists);
            }
        } else if let Some((_, last)) = self.jobs.back_mut() {
            // Nothing of these readies needs the disk, but an earlier ready
            // of the same group may still be on its way there: they are
            // persisted when it is (readies complete in order).
            last.extend(persists);
        } else {
            self.persisted_now(persists);
        }
        if !applies.is_empty() {
            self.apply(applies);
        }
        // What this turn did may itself make ready work that no input
        // will come to prompt: a lone voter commits its entries once its
        // own sync has persisted them, and an apply held to
        // `max_apply_bytes` leaves the rest for the next ready.
        self.again = turned
            .iter()
            .any(|gid| self.groups.get(gid).is_some_and(|g| g.raw.has_ready()));
    }

    /// Write and sync `ops` on the loop's thread. One that took longer
    /// than `slow_sync` sends the loop's next writes to the writer thread
    /// for [`SLOW_DISK_HANDOFF`], so that a stalling disk does not stop
    /// its ticks (heartbeats, leases, elections) and its groups that can
    /// commit without this replica (a leader's followers are a quorum) go
    /// on committing.
    fn sync_here(&mut self, ops: &[Op]) -> Result<(), EngineError> {
        let started = Instant::now();
        self.slow_disk_until = None;
        self.engine.write_synced(ops)?;
        Stats::add(&self.stats.syncs_in_loop, 1);
        let took = started.elapsed();
        if took > self.config.slow_sync {
            tracing::warn!(
                node = self.config.node_id,
                took_ms = took.as_millis() as u64,
                "slow Raft log sync: the batch loop hands its writes to the writer thread for {} s",
                SLOW_DISK_HANDOFF.as_secs()
            );
            self.slow_disk_until = Some(Instant::now() + SLOW_DISK_HANDOFF);
        }
        Ok(())
    }

    /// Hand `ops` to the engine's writer thread; the groups of `persists`
    /// learn in a later turn that they are on disk ([`Input::Persisted`]).
    fn submit(&mut self, ops: Vec<Op>, persists: Vec<Persist>) {
        self.next_seq += 1;
        let seq = self.next_seq;
        self.jobs.push_back((seq, persists));
        let tx = self.tx.clone();
        self.engine.submit(
            ops,
            true,
            Box::new(move |result| {
                let _ = tx.send(Input::Persisted { seq, result });
            }),
        );
    }

    /// Tell the groups of `persists` their readies are on disk, and send
    /// what waited for that.
    fn persisted_now(&mut self, persists: Vec<Persist>) {
        self.finish(persists);
        let ready = std::mem::take(&mut self.outbox);
        self.send(ready);
    }

    fn send(&mut self, out: HashMap<u64, Vec<(u64, Message)>>) {
        let now = Instant::now();
        for (to, msgs) in out {
            self.last_sent.insert(to, now);
            Stats::add(&self.stats.messages, msgs.len() as u64);
            Stats::add(&self.stats.sends, 1);
            let bytes = self.transport.send(to, msgs) as u64;
            if bytes > 0 {
                if let Ok(mut sent) = self.stats.sent_bytes.lock() {
                    *sent.entry(to).or_default() += bytes;
                }
            }
        }
    }

    fn persisted(&mut self, seq: u64, result: Result<(), EngineError>) {
        if let Err(e) = result {
            return self.fail(format!("writing the Raft log: {e}"));
        }
        let Some((front, _)) = self.jobs.front() else {
            return self.fail(format!("write {seq} reported, none pending"));
        };
        if *front != seq {
            return self.fail(format!("write {seq} reported before write {front}"));
        }
        let (_, persists) = self.jobs.pop_front().expect("checked above");
        self.finish(persists);
    }

    /// Tell each group its ready is on disk; what waited for it goes out
    /// with the next turn's messages ([`Loop::outbox`]: a turn follows
    /// the inputs that brought the news at once).
    fn finish(&mut self, persists: Vec<Persist>) {
        for p in persists {
            let Some(g) = self.groups.get_mut(&p.gid) else {
                continue;
            };
            g.raw.on_persist_ready(p.ready);
            if p.snapshot > g.raw.raft.raft_log.applied {
                g.raw.advance_apply_to(p.snapshot);
                g.role.applied.store(p.snapshot, Ordering::Release);
                g.role.set_membership(g.raw.store().conf_state());
            }
            for m in p.messages {
                self.outbox.entry(m.to).or_default().push((p.gid, m));
            }
        }
    }

    fn apply(&mut self, mut applies: Vec<(u64, Vec<Entry>)>) {
        let mut compacted = Vec::with_capacity(applies.len());
        // Configuration changes are the loop's: apply them here and hand
        // the applier an empty entry in their place.
        let mut conf_ops = Vec::new();
        for (gid, entries) in applies.iter_mut() {
            for e in entries.iter_mut() {
                if e.get_entry_type() == EntryType::EntryNormal {
                    continue;
                }
                let g = self.groups.get_mut(gid).expect("a group with ready work");
                let cc = decode_conf_change(e);
                let cs = cc
                    .as_ref()
                    .map_err(|err| raft::Error::ConfChangeError(err.clone()))
                    .and_then(|cc| g.raw.apply_conf_change(cc));
                let ours = g
                    .conf_waiting
                    .take_if(|(index, term, _)| *index == e.index && *term == e.term);
                match cs {
                    Ok(cs) => {
                        // A replica added: its empty log must not be
                        // followed from index 1 (`Group::drop_first`).
                        g.drop_first |= cc.as_ref().is_ok_and(|cc| conf_adds(cc, &cs));
                        let membership = Membership::of(&cs);
                        tracing::info!(gid, ?membership, "configuration changed");
                        g.role.set_membership(&cs);
                        g.raw.mut_store().set_conf_state(cs, &mut conf_ops);
                        if let Some((_, _, w)) = ours {
                            let _ = w.send(Ok(membership));
                        }
                    }
                    Err(err) => {
                        tracing::warn!(gid, "configuration change refused: {err}");
                        if let Some((_, _, w)) = ours {
                            let _ = w.send(Err(ProposeError::Refused(format!(
                                "group {gid}: the change was refused: {err}"
                            ))));
                        }
                    }
                }
                e.set_entry_type(EntryType::EntryNormal);
                e.data = Default::default();
            }
            // A change proposed here whose index now holds another entry
            // (a new leader's, or an empty one raft-rs put in its place)
            // was never applied.
            if let Some(g) = self.groups.get_mut(gid) {
                let last = entries.last().map_or(0, |e| e.index);
                if let Some((_, _, w)) = g.conf_waiting.take_if(|(index, _, _)| *index <= last) {
                    let _ = w.send(Err(ProposeError::Dropped));
                }
            }
        }
        if !conf_ops.is_empty() {
            if let Err(e) = self.engine.write_direct(&conf_ops) {
                return self.fail(format!("writing a configuration: {e}"));
            }
        }
        Stats::add(&self.stats.applies, 1);
        let replies = match self.applier.apply(&applies) {
            Ok(r) => r,
            Err(e) => return self.fail(format!("applying: {e}")),
        };
        for ((gid, entries), replies) in applies.into_iter().zip(replies) {
            let replies = match replies {
                Ok(replies) => replies,
                Err(e) => {
                    self.stop_group(gid, format!("applying: {e}"));
                    continue;
                }
            };
            let Some(g) = self.groups.get_mut(&gid) else {
                continue;
            };
            let mut last = 0;
            for (e, reply) in entries.iter().zip(replies) {
                last = e.index;
                let mut reply = Some(reply);
                while let Some(&(index, term, _)) = g.waiting.front() {
                    if index > e.index {
                        break;
                    }
                    let (_, _, w) = g.waiting.pop_front().expect("peeked");
                    let r = if index == e.index && term == e.term {
                        reply.take().ok_or(ProposeError::Dropped)
                    } else {
                        Err(ProposeError::Dropped)
                    };
                    let _ = w.send(r);
                }
            }
            if last > 0 {
                g.raw.advance_apply_to(last);
                g.role.applied.store(last, Ordering::Release);
            }
            g.answer_reads();
            compacted.push(gid);
        }
        self.compact(compacted);
    }

    /// Compact the logs of `gids` that grew past the bounds
    /// ([`BatchConfig::compact_entries`]); their rows go in one write.
    fn compact(&mut self, gids: Vec<u64>) {
        let mut ops = Vec::new();
        let me = self.config.node_id;
        for gid in gids {
            let Some(g) = self.groups.get_mut(&gid) else {
                continue;
            };
            if std::mem::take(&mut g.drop_first)
                && g.raw.raft.raft_log.applied >= 1
                && g.raw.mut_store().compact(1, &mut ops)
            {
                Stats::add(&self.stats.compactions, 1);
            }
            let (len, bytes) = g.raw.store().len_and_bytes();
            let (entries, size) = (self.config.compact_entries, self.config.compact_bytes);
            if len < entries && bytes < size {
                continue;
            }
            let applied = g.raw.raft.raft_log.applied;
            let mut to = applied;
            if g.raw.raft.state == StateRole::Leader && len < 4 * entries && bytes < 4 * size {
                // Keep what a follower still lacks, within the bounds.
                let behind = g
                    .raw
                    .raft
                    .prs()
                    .iter()
                    .filter(|(id, _)| **id != me)
                    .map(|(_, p)| p.matched)
                    .min();
                to = to.min(behind.unwrap_or(applied));
            }
            if g.raw.mut_store().compact(to, &mut ops) {
                Stats::add(&self.stats.compactions, 1);
            }
        }
        if ops.is_empty() {
            return;
        }
        // Applied entries are durable already: deleting them needs no sync.
        if let Err(e) = self.engine.write_direct(&ops) {
            self.fail(format!("compacting logs: {e}"));
        }
    }

    /// Have the applier copy `gid`'s data for a snapshot at its applied
    /// index, unless a copy is under way; the bytes are made off this
    /// thread and come back as [`Input::SnapshotBuilt`].
    fn start_snapshot(&mut self, gid: u64) {
        if self.snapshotting.contains(&gid) {
            return;
        }
        let Some(g) = self.groups.get(&gid) else {
            return;
        };
        let index = g.raw.raft.raft_log.applied;
        // The copy is of the data as applied; the metadata must name the
        // same index. They differ only between a snapshot's install and
        // raft-rs learning it is on disk: no snapshot then (raft-rs asks
        // again).
        match self.applier.applied(gid) {
            Ok(data) if data == index => {}
            Ok(data) => {
                tracing::debug!(gid, "data at {data}, Raft at {index}: snapshot later");
                return;
            }
            Err(e) => {
                tracing::error!(gid, "cannot start a snapshot: {e}");
                return;
            }
        }
        let term = match g.raw.raft.raft_log.term(index) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(gid, "no term for applied index {index}: {e}");
                return;
            }
        };
        let meta = SnapshotMetadata {
            conf_state: Some(g.raw.store().conf_state().clone()),
            index,
            term,
        };
        let job = match self.applier.snapshot(gid) {
            Ok(job) => job,
            Err(e) => {
                tracing::error!(gid, "cannot start a snapshot: {e}");
                return;
            }
        };
        let tx = self.tx.clone();
        let spawned = std::thread::Builder::new()
            .name("batch-snapshot".into())
            .spawn(move || {
                let result = job();
                let _ = tx.send(Input::SnapshotBuilt { gid, meta, result });
            });
        match spawned {
            Ok(_) => {
                self.snapshotting.insert(gid);
            }
            Err(e) => tracing::error!(gid, "cannot start a snapshot thread: {e}"),
        }
    }

    fn snapshot_built(
        &mut self,
        gid: u64,
        meta: SnapshotMetadata,
        result: Result<Vec<u8>, BatchError>,
    ) {
        self.snapshotting.remove(&gid);
        let Some(g) = self.groups.get(&gid) else {
            return;
        };
        match result {
            Ok(data) => {
                Stats::add(&self.stats.snapshots_built, 1);
                g.role.snapshot.store(meta.index, Ordering::Release);
                tracing::info!(
                    gid,
                    index = meta.index,
                    bytes = data.len(),
                    "snapshot built for a follower behind the log"
                );
                g.raw.store().set_prepared(Snapshot {
                    data,
                    metadata: Some(meta),
                });
            }
            Err(e) => tracing::error!(gid, "building a snapshot: {e}"),
        }
    }
}

/// Store what `shoal status` and the replica mover read of `g` without
/// asking the loop: its log's end and, on a leader, how far each other
/// replica matches it.
fn publish_progress<R>(me: u64, g: &Group<R>) {
    let r = &g.raw.raft;
    g.role
        .last_index
        .store(r.raft_log.last_index(), Ordering::Release);
    g.role
        .log_start
        .store(g.raw.store().log_start(), Ordering::Release);
    let progress = if r.state == StateRole::Leader {
        let mut p: Vec<(u64, u64)> = r
            .prs()
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(id, p)| (*id, p.matched))
            .collect();
        p.sort_unstable();
        p
    } else {
        Vec::new()
    };
    if let Ok(mut held) = g.role.progress.lock() {
        *held = progress;
    }
}

/// The configuration change an entry holds, as a `ConfChangeV2` (a v1
/// change is its one step, as raft-rs applies it).
fn decode_conf_change(e: &Entry) -> Result<ConfChangeV2, String> {
    if e.get_entry_type() != EntryType::EntryConfChange {
        let mut cc = ConfChangeV2::default();
        cc.merge_from_bytes(&e.data)
            .map_err(|err| err.to_string())?;
        return Ok(cc);
    }
    let mut v1 = ConfChange::default();
    v1.merge_from_bytes(&e.data)
        .map_err(|err| err.to_string())?;
    let mut step = ConfChangeSingle::default();
    step.set_change_type(v1.get_change_type());
    step.node_id = v1.node_id;
    let mut cc = ConfChangeV2::default();
    cc.changes.push(step);
    cc.context = v1.context;
    Ok(cc)
}

/// Whether `cc` (applied, giving `cs`) added a replica.
fn conf_adds(cc: &ConfChangeV2, cs: &raft::prelude::ConfState) -> bool {
    use raft::prelude::ConfChangeType;
    cc.changes.iter().any(|c| {
        matches!(
            c.get_change_type(),
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode
        ) && (cs.voters.contains(&c.node_id) || cs.learners.contains(&c.node_id))
    })
}

/// Install the snapshot of `rd` for group `gid`: the data and the log's
/// new start in one synced write, after every log write queued before it
/// (`queued`: some are), so none of them lands after it. The snapshot's
/// index, or why it failed (which stops the loop).
fn install<A: Applier, R>(
    engine: &Engine,
    applier: &mut A,
    queued: bool,
    gid: u64,
    g: &mut Group<R>,
    rd: &raft::Ready,
) -> Result<u64, String> {
    if queued {
        let (tx, rx) = mpsc::channel();
        engine.submit(
            Vec::new(),
            false,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv()
            .map_err(|_| "the log writer is gone".to_string())?
            .map_err(|e| format!("writing the Raft log: {e}"))?;
    }
    let snap = rd.snapshot();
    let meta = snap.get_metadata();
    let mut log_ops = Vec::new();
    g.raw.mut_store().apply_snapshot(meta, &mut log_ops);
    applier
        .install(gid, meta.index, meta.term, snap.data.clone(), log_ops)
        .map_err(|e| format!("installing a snapshot of group {gid}: {e}"))?;
    tracing::info!(
        gid,
        index = meta.index,
        bytes = snap.data.len(),
        "snapshot installed"
    );
    Ok(meta.index)
}
