//! Hibernation of idle groups (TiKV-style): a group with nothing to do
//! stops its openraft timer on every replica, so it sends no heartbeats and
//! runs no election clock, and one node-level liveness ping per node pair
//! stands in for all of them.
//!
//! This module owns the hibernation state of the node's replicas and the
//! decisions about it; the host calls it on every request and Raft message,
//! and the node runs the loop of [`super::hibernate_loop`].
//!
//! * **Going to sleep.** A leader whose group has been idle (no request)
//!   for `hibernate_after`, with every log entry applied and matched by
//!   every member, a uniform membership and no learner
//!   ([`leader_may_hibernate`]), asks each follower to hibernate
//!   (`KIND_HIBERNATE` on the node pair's Raft stream). A follower accepts
//!   only if it follows that leader in that term and holds and has applied
//!   the same last entry ([`follower_accepts`]); it then stops its timer
//!   (`runtime_config().tick(false)`: no election). When every follower
//!   accepted and no request came meanwhile, the leader stops its own
//!   timer (no heartbeats). One refusal and the leader stays awake.
//! * **Liveness.** Every `ping_every` each node sends every peer one
//!   `KIND_PING` naming the groups it leads asleep, with its boot id.
//! * **Waking.** A leader wakes on any request to the group (write, read,
//!   membership change): its timer runs again and it heartbeats at once. A
//!   replica wakes after any AppendEntries or Vote for the group (after it
//!   was handled, so the election clock starts from that message). A
//!   follower also wakes when its leader's node has not pinged for
//!   `lost_after`, pinged with a new boot id, or has left the group out of
//!   its pings for `lost_after` ([`follower_must_wake`]); its election
//!   clock then has long expired, so it campaigns at its next tick and a
//!   new leader is elected within the usual failover time.
//!
//! Nothing here answers for openraft: no ack, vote or lease is faked. A
//! hibernating leader gets no acks, so a lease based on them lapses and a
//! read after waking confirms leadership with a quorum again.

use openraft::async_runtime::WatchReceiver;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::types::NodeId;

/// Timing of hibernation, from the node's config.
#[derive(Debug, Clone, Copy)]
pub struct HibernateConfig {
    /// A group idle this long may hibernate; `None`: never.
    pub hibernate_after: Option<Duration>,
    /// How often each node pings each peer.
    pub ping_every: Duration,
    /// A follower whose leader's node was silent (or left the group out of
    /// its pings) this long wakes.
    pub lost_after: Duration,
}

impl HibernateConfig {
    pub fn from_node(c: &crate::config::NodeConfig) -> HibernateConfig {
        HibernateConfig {
            hibernate_after: (c.hibernate_after_ms > 0)
                .then(|| Duration::from_millis(c.hibernate_after_ms)),
            ping_every: Duration::from_millis(c.heartbeat_ms),
            lost_after: Duration::from_millis(c.election_timeout_min_ms),
        }
    }
}

/// Leader → follower: hibernate with me (`Format::Hibernate`). The reply is
/// `Result<(), String>` (`Format::HibernateReply`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HibernateRequest {
    pub leader: NodeId,
    pub term: u64,
    /// The leader's last log index, applied and matched by everyone.
    pub last_index: Option<u64>,
    /// The leader's boot id.
    pub boot: u64,
}

/// Node → node, every `ping_every` (`Format::Liveness`): I am alive, and
/// these groups sleep under my leadership. The reply is empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    pub from: NodeId,
    /// Random per process start: a new one means the node restarted.
    pub boot: u64,
    pub asleep: Vec<u64>,
}

/// What a leader replica knows, for [`leader_may_hibernate`].
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderView {
    pub is_leader: bool,
    pub last_index: Option<u64>,
    pub applied: Option<u64>,
    /// Every member's matched index (the leader's own included), when
    /// leading.
    pub matched: Option<Vec<(NodeId, Option<u64>)>>,
    pub uniform: bool,
    pub learners: bool,
    pub idle_for: Duration,
}

/// Whether a leader may ask its group to hibernate; `Err` says why not.
pub fn leader_may_hibernate(v: &LeaderView, after: Duration) -> Result<(), &'static str> {
    if !v.is_leader {
        return Err("not the leader");
    }
    if v.idle_for < after {
        return Err("not idle long enough");
    }
    if !v.uniform {
        return Err("a membership change is under way");
    }
    if v.learners {
        return Err("a learner is catching up");
    }
    if v.applied != v.last_index {
        return Err("not every entry is applied");
    }
    let Some(matched) = &v.matched else {
        return Err("no replication progress");
    };
    if matched.iter().any(|(_, m)| *m != v.last_index) {
        return Err("a member has not matched the last entry");
    }
    Ok(())
}

/// What a follower replica knows, for [`follower_accepts`].
#[derive(Debug, Clone, PartialEq)]
pub struct FollowerView {
    pub is_follower: bool,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_index: Option<u64>,
    pub applied: Option<u64>,
}

/// Whether a follower hibernates when `req` asks; `Err` says why not.
pub fn follower_accepts(v: &FollowerView, req: &HibernateRequest) -> Result<(), String> {
    if !v.is_follower {
        return Err("not a follower".into());
    }
    if v.leader != Some(req.leader) || v.term != req.term {
        return Err(format!(
            "follows {:?} in term {}, not {} in term {}",
            v.leader, v.term, req.leader, req.term
        ));
    }
    if v.last_index != req.last_index || v.applied != req.last_index {
        return Err(format!(
            "holds {:?} and applied {:?}, the leader {:?}",
            v.last_index, v.applied, req.last_index
        ));
    }
    Ok(())
}

/// A follower asleep under `leader`.
#[derive(Debug, Clone, PartialEq)]
pub struct Following {
    pub leader: NodeId,
    /// The leader's boot id when the follower fell asleep.
    pub boot: u64,
    /// Since when the leader's pings leave this group out.
    pub unlisted_since: Option<Instant>,
}

/// The last ping from a peer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Heard {
    pub at: Instant,
    pub boot: u64,
}

/// Why a sleeping follower must wake now, if it must.
pub fn follower_must_wake(
    f: &Following,
    leader: Option<&Heard>,
    now: Instant,
    lost_after: Duration,
) -> Option<&'static str> {
    let Some(h) = leader else {
        return Some("no ping from the leader's node");
    };
    if h.boot != f.boot {
        return Some("the leader's node restarted");
    }
    if now.saturating_duration_since(h.at) >= lost_after {
        return Some("the leader's node went silent");
    }
    if f.unlisted_since
        .is_some_and(|t| now.saturating_duration_since(t) >= lost_after)
    {
        return Some("the leader no longer names the group asleep");
    }
    None
}

const AWAKE: u8 = 0;
const ASKING: u8 = 1;
const ASLEEP: u8 = 2;

/// One replica's hibernation state.
pub struct Sleep {
    state: AtomicU8,
    /// Milliseconds since the node's epoch of the last request.
    last_active: AtomicU64,
    /// Serializes the transitions and the timer switches that go with them.
    lock: Mutex<()>,
}

impl Default for Sleep {
    fn default() -> Self {
        Sleep {
            state: AtomicU8::new(AWAKE),
            last_active: AtomicU64::new(0),
            lock: Mutex::new(()),
        }
    }
}

impl Sleep {
    pub fn is_asleep(&self) -> bool {
        self.state.load(SeqCst) == ASLEEP
    }

    /// Neither asleep nor asking to be.
    pub fn is_awake(&self) -> bool {
        self.state.load(SeqCst) == AWAKE
    }
}

/// The node's hibernation bookkeeping.
pub struct Hibernation {
    pub node_id: NodeId,
    pub config: HibernateConfig,
    pub boot: u64,
    epoch: Instant,
    /// Groups this node leads that sleep or are asking to.
    led: Mutex<HashSet<u64>>,
    /// Groups this node follows asleep.
    following: Mutex<HashMap<u64, Following>>,
    heard: Mutex<HashMap<NodeId, Heard>>,
}

impl Hibernation {
    pub fn new(node_id: NodeId, config: HibernateConfig) -> Arc<Hibernation> {
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Arc::new(Hibernation {
            node_id,
            config,
            boot,
            epoch: Instant::now(),
            led: Mutex::default(),
            following: Mutex::default(),
            heard: Mutex::default(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.uptime().as_millis() as u64
    }

    /// How long ago this node's hibernation (its host) started: with
    /// [`Hibernation::boot`], a time a peer can compare across readings.
    pub fn uptime(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// A request reached the replica of `gid`: note it, and wake the group
    /// if it sleeps here as its leader. A sleeping follower stays asleep: a
    /// READONLY read or a misrouted write needs nothing from the group, and
    /// waking it (its election clock long expired) would depose a healthy
    /// leader.
    pub fn touch(&self, gid: u64, sleep: &Sleep, raft: &super::store::Raft) {
        sleep.last_active.store(self.now_ms(), SeqCst);
        if sleep.state.load(SeqCst) != AWAKE
            && raft.metrics().borrow_watched().state == openraft::ServerState::Leader
        {
            self.wake(gid, sleep, raft, "a request");
        }
    }

    /// How long the replica has had no request.
    pub fn idle_for(&self, sleep: &Sleep) -> Duration {
        Duration::from_millis(self.now_ms().saturating_sub(sleep.last_active.load(SeqCst)))
    }

    /// Wake the replica of `gid` (either role): its timer runs again; a
    /// leader heartbeats at once.
    pub fn wake(&self, gid: u64, sleep: &Sleep, raft: &super::store::Raft, why: &str) {
        let Ok(_g) = sleep.lock.lock() else { return };
        if sleep.state.load(SeqCst) == AWAKE {
            return;
        }
        let was = sleep.state.swap(AWAKE, SeqCst);
        raft.runtime_config().tick(true);
        if let Ok(mut l) = self.led.lock() {
            l.remove(&gid);
        }
        if let Ok(mut f) = self.following.lock() {
            f.remove(&gid);
        }
        if was == ASLEEP {
            tracing::debug!(group = gid, "woken by {why}");
            let raft = raft.clone();
            tokio::spawn(async move {
                if raft.metrics().borrow_watched().state == openraft::ServerState::Leader {
                    let _ = raft.trigger().heartbeat().await;
                }
            });
        }
    }

    /// Leader side, before asking the followers: the group is named asleep
    /// in pings from now on. Returns the activity stamp to check at the end,
    /// or `None` if the group is not awake.
    pub fn begin_asking(&self, gid: u64, sleep: &Sleep) -> Option<u64> {
        let _g = sleep.lock.lock().ok()?;
        if sleep.state.load(SeqCst) != AWAKE {
            return None;
        }
        sleep.state.store(ASKING, SeqCst);
        if let Ok(mut l) = self.led.lock() {
            l.insert(gid);
        }
        Some(sleep.last_active.load(SeqCst))
    }

    /// Leader side, after the followers answered: sleep if they all
    /// accepted and no request came since `stamp`, else stay awake.
    pub fn finish_asking(
        &self,
        gid: u64,
        sleep: &Sleep,
        raft: &super::store::Raft,
        stamp: u64,
        all_accepted: bool,
    ) -> bool {
        let Ok(_g) = sleep.lock.lock() else {
            return false;
        };
        if sleep.state.load(SeqCst) != ASKING {
            // Woken meanwhile (which forgot the group), or asked to sleep
            // as a follower after losing the lead: no longer led asleep.
            if let Ok(mut l) = self.led.lock() {
                l.remove(&gid);
            }
            return false;
        }
        if all_accepted && sleep.last_active.load(SeqCst) == stamp {
            sleep.state.store(ASLEEP, SeqCst);
            raft.runtime_config().tick(false);
            return true;
        }
        sleep.state.store(AWAKE, SeqCst);
        if let Ok(mut l) = self.led.lock() {
            l.remove(&gid);
        }
        false
    }

    /// Follower side: a leader asks `gid` to hibernate.
    pub fn on_request(
        &self,
        gid: u64,
        sleep: &Sleep,
        raft: &super::store::Raft,
        req: &HibernateRequest,
    ) -> Result<(), String> {
        let _g = sleep
            .lock
            .lock()
            .map_err(|_| "hibernation state poisoned".to_string())?;
        let m = raft.metrics().borrow_watched().clone();
        let view = FollowerView {
            is_follower: m.state == openraft::ServerState::Follower,
            leader: m.current_leader,
            term: m.current_term,
            last_index: m.last_log_index,
            applied: m.last_applied.map(|l| l.index),
        };
        follower_accepts(&view, req)?;
        // The request itself shows the leader's node alive: a follower
        // that has not had its first ping yet must not wake at once.
        if let Ok(mut heard) = self.heard.lock() {
            heard.entry(req.leader).or_insert(Heard {
                at: Instant::now(),
                boot: req.boot,
            });
        }
        sleep.state.store(ASLEEP, SeqCst);
        raft.runtime_config().tick(false);
        if let Ok(mut f) = self.following.lock() {
            f.insert(
                gid,
                Following {
                    leader: req.leader,
                    boot: req.boot,
                    unlisted_since: None,
                },
            );
        }
        Ok(())
    }

    /// The ping this node sends its peers now.
    pub fn ping(&self) -> Ping {
        let mut asleep: Vec<u64> = self
            .led
            .lock()
            .map(|l| l.iter().copied().collect())
            .unwrap_or_default();
        asleep.sort_unstable();
        Ping {
            from: self.node_id,
            boot: self.boot,
            asleep,
        }
    }

    /// A peer's ping. Returns true when the peer is new, restarted or back
    /// after silence: the groups this node leads asleep should wake so the
    /// peer's replicas hear their leader again.
    pub fn on_ping(&self, ping: &Ping) -> bool {
        let now = Instant::now();
        let back = {
            let Ok(mut heard) = self.heard.lock() else {
                return false;
            };
            let prev = heard.insert(
                ping.from,
                Heard {
                    at: now,
                    boot: ping.boot,
                },
            );
            prev.is_none_or(|p| {
                p.boot != ping.boot || now.saturating_duration_since(p.at) >= self.config.lost_after
            })
        };
        if let Ok(mut following) = self.following.lock() {
            let listed: HashSet<u64> = ping.asleep.iter().copied().collect();
            for (gid, f) in following.iter_mut() {
                if f.leader != ping.from {
                    continue;
                }
                if listed.contains(gid) {
                    f.unlisted_since = None;
                } else {
                    f.unlisted_since.get_or_insert(now);
                }
            }
        }
        back
    }

    /// The sleeping followers that must wake now, with why.
    pub fn followers_to_wake(&self) -> Vec<(u64, &'static str)> {
        let now = Instant::now();
        let heard = self.heard.lock().map(|h| h.clone()).unwrap_or_default();
        self.following
            .lock()
            .map(|f| {
                f.iter()
                    .filter_map(|(gid, f)| {
                        follower_must_wake(f, heard.get(&f.leader), now, self.config.lost_after)
                            .map(|why| (*gid, why))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The replica of `gid` is gone.
    pub fn forget(&self, gid: u64) {
        if let Ok(mut l) = self.led.lock() {
            l.remove(&gid);
        }
        if let Ok(mut f) = self.following.lock() {
            f.remove(&gid);
        }
    }

    /// Groups this node leads that sleep or are asking to.
    pub fn led(&self) -> Vec<u64> {
        self.led
            .lock()
            .map(|l| l.iter().copied().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle_leader() -> LeaderView {
        LeaderView {
            is_leader: true,
            last_index: Some(7),
            applied: Some(7),
            matched: Some(vec![(1, Some(7)), (2, Some(7)), (3, Some(7))]),
            uniform: true,
            learners: false,
            idle_for: Duration::from_secs(11),
        }
    }

    const AFTER: Duration = Duration::from_secs(10);

    /// A named change to a view that must turn the answer into a refusal.
    type Case<V> = (&'static str, Box<dyn Fn(&mut V)>);

    #[test]
    fn an_idle_caught_up_leader_may_hibernate() {
        assert_eq!(leader_may_hibernate(&idle_leader(), AFTER), Ok(()));
    }

    #[test]
    fn a_leader_stays_awake_unless_everything_is_settled() {
        let cases: Vec<Case<LeaderView>> = vec![
            ("follower", Box::new(|v| v.is_leader = false)),
            (
                "recent request",
                Box::new(|v| v.idle_for = Duration::from_secs(9)),
            ),
            ("joint membership", Box::new(|v| v.uniform = false)),
            ("learner", Box::new(|v| v.learners = true)),
            ("unapplied entry", Box::new(|v| v.applied = Some(6))),
            (
                "lagging follower",
                Box::new(|v| v.matched = Some(vec![(1, Some(7)), (2, Some(6)), (3, Some(7))])),
            ),
            (
                "follower with nothing",
                Box::new(|v| v.matched = Some(vec![(1, Some(7)), (2, None)])),
            ),
            ("no progress", Box::new(|v| v.matched = None)),
        ];
        for (name, change) in cases {
            let mut v = idle_leader();
            change(&mut v);
            assert!(leader_may_hibernate(&v, AFTER).is_err(), "{name}: {v:?}");
        }
    }

    fn request() -> HibernateRequest {
        HibernateRequest {
            leader: 1,
            term: 3,
            last_index: Some(7),
            boot: 42,
        }
    }

    fn follower() -> FollowerView {
        FollowerView {
            is_follower: true,
            leader: Some(1),
            term: 3,
            last_index: Some(7),
            applied: Some(7),
        }
    }

    #[test]
    fn a_caught_up_follower_of_that_leader_accepts() {
        assert_eq!(follower_accepts(&follower(), &request()), Ok(()));
    }

    #[test]
    fn a_follower_refuses_another_leader_term_or_log() {
        let cases: Vec<Case<FollowerView>> = vec![
            ("candidate", Box::new(|v| v.is_follower = false)),
            ("other leader", Box::new(|v| v.leader = Some(2))),
            ("no leader", Box::new(|v| v.leader = None)),
            ("older term", Box::new(|v| v.term = 2)),
            ("newer term", Box::new(|v| v.term = 4)),
            ("shorter log", Box::new(|v| v.last_index = Some(6))),
            ("longer log", Box::new(|v| v.last_index = Some(8))),
            ("unapplied", Box::new(|v| v.applied = Some(6))),
        ];
        for (name, change) in cases {
            let mut v = follower();
            change(&mut v);
            assert!(follower_accepts(&v, &request()).is_err(), "{name}: {v:?}");
        }
    }

    #[test]
    fn a_sleeping_follower_wakes_when_its_leader_is_lost_or_lets_go() {
        let lost = Duration::from_millis(1000);
        let t0 = Instant::now();
        let f = Following {
            leader: 1,
            boot: 42,
            unlisted_since: None,
        };
        let fresh = Heard { at: t0, boot: 42 };
        let at = |ms| t0 + Duration::from_millis(ms);
        // Pinged recently, listed: sleeps on.
        assert_eq!(follower_must_wake(&f, Some(&fresh), at(999), lost), None);
        // Silent for the whole window.
        assert!(follower_must_wake(&f, Some(&fresh), at(1000), lost).is_some());
        // Never heard from.
        assert!(follower_must_wake(&f, None, at(0), lost).is_some());
        // Restarted.
        let reborn = Heard { at: t0, boot: 43 };
        assert!(follower_must_wake(&f, Some(&reborn), at(0), lost).is_some());
        // Left out of the pings: not at once (a ping may cross the
        // request), but once the window passed.
        let unlisted = Following {
            unlisted_since: Some(t0),
            ..f.clone()
        };
        let later = Heard {
            at: at(1500),
            boot: 42,
        };
        assert_eq!(
            follower_must_wake(&unlisted, Some(&later), at(999), lost),
            None
        );
        assert!(follower_must_wake(&unlisted, Some(&later), at(1500), lost).is_some());
    }

    #[test]
    fn pings_track_which_groups_the_leader_names_and_report_returns() {
        let h = Hibernation::new(
            2,
            HibernateConfig {
                hibernate_after: Some(AFTER),
                ping_every: Duration::from_millis(250),
                lost_after: Duration::from_millis(1000),
            },
        );
        for gid in [10, 11] {
            h.following.lock().unwrap().insert(
                gid,
                Following {
                    leader: 1,
                    boot: 42,
                    unlisted_since: None,
                },
            );
        }
        let ping = |boot, asleep: Vec<u64>| Ping {
            from: 1,
            boot,
            asleep,
        };
        assert!(h.on_ping(&ping(42, vec![10, 11])), "a new peer");
        assert!(!h.on_ping(&ping(42, vec![10])), "the same peer again");
        let f = h.following.lock().unwrap().clone();
        assert!(f[&10].unlisted_since.is_none());
        assert!(f[&11].unlisted_since.is_some());
        assert!(h.followers_to_wake().is_empty(), "not yet");
        assert!(h.on_ping(&ping(43, vec![10, 11])), "a restart");
        let mut woken: Vec<u64> = h.followers_to_wake().into_iter().map(|(g, _)| g).collect();
        woken.sort_unstable();
        assert_eq!(woken, vec![10, 11], "a restarted leader's followers wake");
    }
}
