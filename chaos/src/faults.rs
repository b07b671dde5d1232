//! Faults: which one comes next is a pure function of the seeded RNG
//! ([`next_fault`]); [`Injector`] carries it out on a [`LocalCluster`] and
//! heals it again (every fault is healed before the next begins, so at most a
//! minority of nodes is ever down: one of 3, at most two of 5).
//!
//! Kinds: SIGKILL of a node then restart; SIGKILL of a shard leader with the
//! failover time measured (kill → first acknowledged SET on that shard);
//! SIGSTOP/SIGCONT of a node; SIGSTOP of a shard leader past the election
//! timeout, resumed while it is still cut off from its peers but not from a
//! router (its leader lease must have run out); SIGKILL of a router and a new router in its
//! place; an etcd restart; network partitions through the cluster's
//! cuttable links ([`shoal::devcluster::links`]): one node isolated, the
//! nodes split into a majority and a minority with each router on one side,
//! or one router cut off from some nodes; and replica moves under all of
//! these (`join-drain`: an extra node joins, is later drained, then stopped).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::history::Recorder;
use super::resp::{Conn, Value};
use super::workload::Routers;
use shoal::devcluster::links::node_endpoint;
use shoal::devcluster::LocalCluster;
use shoal::slot::slot;

/// A kind of fault the run may inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    KillNode,
    KillLeader,
    PauseNode,
    /// SIGSTOP a shard's leader past the election timeout, cut it from its
    /// peers, and let one router reach only it; SIGCONT it while still cut
    /// off: the routers' reads reach a leader whose lease ran out.
    PauseLeader,
    KillRouter,
    RestartEtcd,
    /// One node cut off from every other node and every router.
    IsolateNode,
    /// The nodes split into a majority and a minority; each router on one
    /// side.
    SplitNodes,
    /// One router cut off from some nodes.
    CutRouter,
    /// Replica moves under the other faults: a new node joins (the
    /// rebalancer moves replicas onto it); the next time, it is drained
    /// (they move off again); the next, once empty, it is stopped.
    JoinDrain,
}

impl FaultKind {
    pub const ALL: [FaultKind; 10] = [
        FaultKind::KillNode,
        FaultKind::KillLeader,
        FaultKind::PauseNode,
        FaultKind::PauseLeader,
        FaultKind::KillRouter,
        FaultKind::RestartEtcd,
        FaultKind::IsolateNode,
        FaultKind::SplitNodes,
        FaultKind::CutRouter,
        FaultKind::JoinDrain,
    ];

    /// Whether this kind needs the cluster's links ([`LocalCluster::links`]).
    pub fn is_partition(self) -> bool {
        matches!(
            self,
            FaultKind::IsolateNode
                | FaultKind::SplitNodes
                | FaultKind::CutRouter
                | FaultKind::PauseLeader
        )
    }

    pub fn parse(s: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillNode => "kill-node",
            FaultKind::KillLeader => "kill-leader",
            FaultKind::PauseNode => "pause-node",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::KillRouter => "kill-router",
            FaultKind::RestartEtcd => "restart-etcd",
            FaultKind::IsolateNode => "isolate-node",
            FaultKind::SplitNodes => "split-nodes",
            FaultKind::CutRouter => "cut-router",
            FaultKind::JoinDrain => "join-drain",
        }
    }
}

/// One concrete fault, with how long it lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL these nodes (a minority), restart them after `down`.
    KillNodes {
        ids: Vec<u64>,
        down: Duration,
    },
    /// SIGKILL the leader of a random shard, measure failover, restart it
    /// after `down`.
    KillLeader {
        down: Duration,
    },
    /// SIGSTOP the node, SIGCONT after `paused`.
    PauseNode {
        id: u64,
        paused: Duration,
    },
    /// SIGSTOP the leader of a random shard, cut it from the other nodes
    /// and cut router slot `router` from every node but it; SIGCONT after
    /// `paused` (past the election timeout), heal `isolated` later.
    PauseLeader {
        paused: Duration,
        isolated: Duration,
        router: usize,
    },
    /// SIGKILL one router, start a new one.
    KillRouter,
    RestartEtcd,
    /// Cut the network between `sides` (node ids, and routers by their
    /// index among the live ones, 0 or 1): every endpoint on one side from
    /// every endpoint on another. Endpoints on no side keep every link.
    /// Healed after `lasts`.
    Partition {
        sides: Vec<Side>,
        lasts: Duration,
    },
    /// The next step of a join → drain → stop cycle of an extra node. Not
    /// healed: the moves it starts run on under the faults that follow.
    JoinDrain,
}

/// One side of a partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Side {
    pub nodes: Vec<u64>,
    /// Slots in the injector's list of live routers.
    pub routers: Vec<usize>,
}

impl Side {
    /// The links endpoints on this side; `router` names a live router slot.
    pub fn endpoints(&self, router: impl Fn(usize) -> String) -> Vec<String> {
        self.nodes
            .iter()
            .map(|&n| node_endpoint(n))
            .chain(self.routers.iter().map(|&r| router(r)))
            .collect()
    }
}

/// Endpoint pairs to cut so that no endpoint of one side reaches one of
/// another (pure). `router` names a live router slot.
pub fn partition_cuts(sides: &[Side], router: impl Fn(usize) -> String) -> Vec<(String, String)> {
    let names = |s: &Side| s.endpoints(&router);
    let mut cuts = Vec::new();
    for (i, a) in sides.iter().enumerate() {
        for b in &sides[i + 1..] {
            for x in names(a) {
                for y in names(b) {
                    // Routers never dial routers: no link to cut.
                    if x.starts_with("node-") || y.starts_with("node-") {
                        cuts.push((x.clone(), y));
                    }
                }
            }
        }
    }
    cuts
}

/// The next fault (pure): a kind among `kinds` weighted towards node faults,
/// its target and its duration. With 5 or more nodes a kill may take two.
pub fn next_fault(rng: &mut impl Rng, nodes: usize, kinds: &[FaultKind]) -> Option<Fault> {
    let weights: Vec<(FaultKind, u32)> = kinds
        .iter()
        .map(|&k| {
            let w = match k {
                FaultKind::KillNode => 3,
                FaultKind::KillLeader => 3,
                FaultKind::PauseNode => 3,
                FaultKind::PauseLeader => 2,
                FaultKind::KillRouter => 1,
                FaultKind::RestartEtcd => 1,
                FaultKind::IsolateNode | FaultKind::SplitNodes | FaultKind::CutRouter => 2,
                FaultKind::JoinDrain => 1,
            };
            (k, w)
        })
        .collect();
    let total: u32 = weights.iter().map(|w| w.1).sum();
    if total == 0 || nodes == 0 {
        return None;
    }
    let mut roll = rng.gen_range(0..total);
    let kind = weights
        .iter()
        .find(|(_, w)| {
            if roll < *w {
                true
            } else {
                roll -= w;
                false
            }
        })
        .map(|w| w.0)?;
    let node = |rng: &mut dyn rand::RngCore| rng.gen_range(1..=nodes as u64);
    Some(match kind {
        FaultKind::KillNode => {
            let minority = (nodes - 1) / 2;
            let count = if minority >= 2 && rng.gen_bool(0.3) {
                2
            } else {
                1
            };
            let mut ids = Vec::new();
            while ids.len() < count.min(minority.max(1)) {
                let id = node(rng);
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            Fault::KillNodes {
                ids,
                down: Duration::from_millis(rng.gen_range(500..6_000)),
            }
        }
        FaultKind::KillLeader => Fault::KillLeader {
            down: Duration::from_millis(rng.gen_range(500..4_000)),
        },
        FaultKind::PauseNode => Fault::PauseNode {
            id: node(rng),
            paused: Duration::from_millis(rng.gen_range(300..5_000)),
        },
        // Followers elect after leader lease + election timeout (2 + 1..2 s
        // with the default settings): paused 4.5–8 s, a new leader has
        // usually taken writes by the SIGCONT.
        FaultKind::PauseLeader => Fault::PauseLeader {
            paused: Duration::from_millis(rng.gen_range(4_500..8_000)),
            isolated: Duration::from_millis(rng.gen_range(1_000..3_000)),
            router: rng.gen_range(0..2),
        },
        FaultKind::KillRouter => Fault::KillRouter,
        FaultKind::RestartEtcd => Fault::RestartEtcd,
        FaultKind::JoinDrain => Fault::JoinDrain,
        FaultKind::IsolateNode => {
            let id = node(rng);
            // Half the time the routers still reach it: cut off from its
            // peers only.
            let routers = if rng.gen_bool(0.5) {
                vec![0, 1]
            } else {
                vec![]
            };
            Fault::Partition {
                sides: vec![
                    Side {
                        nodes: vec![id],
                        routers: vec![],
                    },
                    Side {
                        nodes: (1..=nodes as u64).filter(|&n| n != id).collect(),
                        routers,
                    },
                ],
                lasts: Duration::from_millis(rng.gen_range(1_000..8_000)),
            }
        }
        FaultKind::SplitNodes => {
            let mut ids: Vec<u64> = (1..=nodes as u64).collect();
            ids.shuffle(rng);
            let minority = ids.split_off(nodes - (nodes - 1) / 2);
            let mut sides = vec![
                Side {
                    nodes: ids,
                    routers: vec![],
                },
                Side {
                    nodes: minority,
                    routers: vec![],
                },
            ];
            for r in 0..2 {
                sides[rng.gen_range(0..2)].routers.push(r);
            }
            Fault::Partition {
                sides,
                lasts: Duration::from_millis(rng.gen_range(1_000..8_000)),
            }
        }
        FaultKind::CutRouter => {
            let mut ids: Vec<u64> = (1..=nodes as u64).collect();
            ids.shuffle(rng);
            ids.truncate(rng.gen_range(1..=nodes));
            Fault::Partition {
                sides: vec![
                    Side {
                        nodes: vec![],
                        routers: vec![rng.gen_range(0..2)],
                    },
                    Side {
                        nodes: ids,
                        routers: vec![],
                    },
                ],
                lasts: Duration::from_millis(rng.gen_range(1_000..8_000)),
            }
        }
    })
}

/// One shard as `TABLE.DESCRIBE` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub group: u64,
    pub slots: (u16, u16),
    pub replicas: Vec<u64>,
    pub leader: Option<u64>,
}

/// Parse a RESP2 `TABLE.DESCRIBE` reply: a flat map whose `shards` entry is
/// an array of flat maps (`group_id, g, slots, [a, b], replicas, [..],
/// leader, n|nil`).
pub fn parse_describe(v: &Value) -> Result<Vec<ShardInfo>> {
    fn pairs(v: &Value) -> Result<Vec<(String, &Value)>> {
        let Value::Array(Some(items)) = v else {
            return Err(anyhow!("expected a flat map, got {v:?}"));
        };
        Ok(items
            .chunks(2)
            .filter(|c| c.len() == 2)
            .filter_map(|c| c[0].text().map(|k| (k, &c[1])))
            .collect())
    }
    fn int(v: &Value) -> Option<i64> {
        match v {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }
    fn ints(v: &Value) -> Vec<i64> {
        match v {
            Value::Array(Some(items)) => items.iter().filter_map(int).collect(),
            _ => vec![],
        }
    }
    let top = pairs(v)?;
    let shards = top
        .iter()
        .find(|(k, _)| k == "shards")
        .map(|(_, v)| *v)
        .ok_or_else(|| anyhow!("no shards in {v:?}"))?;
    let Value::Array(Some(shards)) = shards else {
        return Err(anyhow!("shards is not an array"));
    };
    shards
        .iter()
        .map(|s| {
            let mut info = ShardInfo {
                group: 0,
                slots: (0, 0),
                replicas: vec![],
                leader: None,
            };
            for (k, v) in pairs(s)? {
                match k.as_str() {
                    "group_id" => info.group = int(v).unwrap_or(0) as u64,
                    "slots" => {
                        let s = ints(v);
                        if s.len() == 2 {
                            info.slots = (s[0] as u16, s[1] as u16);
                        }
                    }
                    "replicas" => info.replicas = ints(v).into_iter().map(|r| r as u64).collect(),
                    "leader" => info.leader = int(v).map(|l| l as u64),
                    _ => {}
                }
            }
            Ok(info)
        })
        .collect()
}

/// A key whose slot falls in `slots`.
pub fn key_in(slots: (u16, u16), prefix: &str) -> String {
    (0u64..)
        .map(|n| format!("{prefix}:{n}"))
        .find(|k| (slots.0..=slots.1).contains(&slot(k.as_bytes())))
        .expect("some key hashes into every slot range")
}

/// What the injector did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FaultStats {
    pub kill_node: u64,
    pub kill_leader: u64,
    pub pause_node: u64,
    /// Shard leaders paused past the election timeout and resumed cut off.
    #[serde(default)]
    pub pause_leader: u64,
    pub kill_router: u64,
    pub restart_etcd: u64,
    /// Network partitions (isolate-node, split-nodes, cut-router).
    #[serde(default)]
    pub partition: u64,
    /// Extra nodes joined (replicas moved onto them) and drained (moved off).
    #[serde(default)]
    pub joins: u64,
    #[serde(default)]
    pub drains: u64,
    /// Drained nodes found empty and stopped.
    #[serde(default)]
    pub drains_done: u64,
    /// Replicas extra nodes held when their drain began (moved onto them).
    #[serde(default)]
    pub replicas_moved_on: u64,
    /// Leader kill → first acknowledged write on that shard (ms).
    pub failover_ms: Vec<u64>,
    /// Leader kills after which no write succeeded within the probe limit.
    pub failover_timeouts: u64,
}

impl FaultStats {
    pub fn total(&self) -> u64 {
        self.kill_node
            + self.kill_leader
            + self.pause_node
            + self.pause_leader
            + self.kill_router
            + self.restart_etcd
            + self.partition
            + self.joins
            + self.drains
    }

    /// (median, max) failover in ms.
    pub fn failover(&self) -> Option<(u64, u64)> {
        let mut v = self.failover_ms.clone();
        v.sort_unstable();
        Some((*v.get(v.len() / 2)?, *v.last()?))
    }
}

/// How long a failover probe keeps trying.
const FAILOVER_LIMIT: Duration = Duration::from_secs(30);

/// Carries out faults on a cluster and heals them.
pub struct Injector<'a> {
    pub cluster: &'a mut LocalCluster,
    pub routers: Routers,
    pub rec: Recorder,
    pub stats: FaultStats,
    /// Indexes (into `cluster.router_addrs()`) of routers that run.
    pub live_routers: Vec<usize>,
    /// Where the join → drain → stop cycle of an extra node stands.
    pub extra: Extra,
    /// Extra nodes drained and stopped on purpose (not restarted by heal).
    pub retired: Vec<u64>,
}

/// The extra node of [`Fault::JoinDrain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    None,
    Joined(u64),
    Draining(u64),
}

impl<'a> Injector<'a> {
    pub fn new(cluster: &'a mut LocalCluster, routers: Routers, rec: Recorder) -> Injector<'a> {
        let live_routers = (0..cluster.router_addrs().len()).collect();
        Injector {
            cluster,
            routers,
            rec,
            stats: FaultStats::default(),
            live_routers,
            extra: Extra::None,
            retired: Vec::new(),
        }
    }

    fn publish_routers(&self) {
        let all = self.cluster.router_addrs();
        self.routers
            .set(self.live_routers.iter().map(|&i| all[i].clone()).collect());
    }

    /// Inject `fault` and heal it before returning.
    pub fn inject(&mut self, fault: &Fault, rng: &mut impl Rng) -> Result<()> {
        match fault {
            Fault::KillNodes { ids, down } => {
                self.stats.kill_node += 1;
                for &id in ids {
                    self.rec.fault(format!("kill -9 node {id}"));
                    self.cluster.kill_node(id)?;
                }
                std::thread::sleep(*down);
                for &id in ids {
                    self.rec.fault(format!("restart node {id}"));
                    self.cluster.start_node(id)?;
                }
            }
            Fault::KillLeader { down } => {
                self.stats.kill_leader += 1;
                self.kill_leader(*down, rng)?;
            }
            Fault::PauseNode { id, paused } => {
                self.stats.pause_node += 1;
                self.rec.fault(format!("SIGSTOP node {id}"));
                self.cluster.pause_node(*id)?;
                std::thread::sleep(*paused);
                self.rec.fault(format!("SIGCONT node {id}"));
                self.cluster.resume_node(*id)?;
            }
            Fault::PauseLeader {
                paused,
                isolated,
                router,
            } => self.pause_leader(*paused, *isolated, *router, rng)?,
            Fault::KillRouter => {
                if self.live_routers.len() < 2 {
                    return Ok(());
                }
                self.stats.kill_router += 1;
                let victim = self
                    .live_routers
                    .remove(rng.gen_range(0..self.live_routers.len()));
                self.publish_routers();
                self.rec.fault(format!("kill -9 router {victim}"));
                self.cluster.kill_router(victim)?;
                let addr = self.cluster.add_router().context("starting a new router")?;
                self.live_routers
                    .push(self.cluster.router_addrs().len() - 1);
                self.publish_routers();
                self.rec.fault(format!("new router on {addr}"));
            }
            Fault::RestartEtcd => {
                self.stats.restart_etcd += 1;
                self.rec.fault("restart etcd");
                self.cluster.etcd_mut().restart()?;
                self.rec.fault("etcd is back");
            }
            Fault::JoinDrain => self.join_drain()?,
            Fault::Partition { sides, lasts } => {
                let names: Vec<String> = self
                    .live_routers
                    .iter()
                    .map(|&i| self.cluster.router_name(i).unwrap_or("?").to_string())
                    .collect();
                let router = |slot: usize| names.get(slot).cloned().unwrap_or_default();
                // A joined extra node goes with the side that has most nodes.
                let mut sides = sides.clone();
                if let Extra::Joined(e) | Extra::Draining(e) = self.extra {
                    if let Some(big) = sides.iter_mut().max_by_key(|s| s.nodes.len()) {
                        big.nodes.push(e);
                    }
                }
                let sides = &sides;
                let cuts = partition_cuts(sides, router);
                let Some(links) = self.cluster.links() else {
                    bail!("a partition needs a cluster started with links");
                };
                self.stats.partition += 1;
                let shown: Vec<String> = sides
                    .iter()
                    .map(|s| s.endpoints(router).join(" "))
                    .collect();
                self.rec.fault(format!("partition {}", shown.join(" | ")));
                for (a, b) in &cuts {
                    links.cut(a, b);
                }
                std::thread::sleep(*lasts);
                links.heal();
                self.rec.fault("partition healed");
            }
        }
        Ok(())
    }

    /// One command on a fresh connection to the first live router.
    fn call_router(&self, args: &[&str]) -> Result<Value> {
        let addr = self
            .routers
            .all()
            .first()
            .cloned()
            .ok_or_else(|| anyhow!("no router"))?;
        let mut c = Conn::connect(&addr, Duration::from_secs(10))?;
        Ok(c.call(args)?)
    }

    fn describe(&self) -> Result<Vec<ShardInfo>> {
        parse_describe(&self.call_router(&["TABLE.DESCRIBE", "default"])?)
    }

    /// The shards whose published leader is a node that runs: a drained
    /// node, stopped and retired, may still be named the leader of a group
    /// it led until etcd's record catches up.
    fn led_shards(&mut self) -> Result<Vec<ShardInfo>> {
        let mut led = Vec::new();
        for s in self.describe()? {
            let Some(l) = s.leader else { continue };
            let known = l >= 1 && l as usize <= self.cluster.node_count();
            if known && !self.retired.contains(&l) && self.cluster.node_pid(l).is_some() {
                led.push(s);
            }
        }
        Ok(led)
    }

    fn kill_leader(&mut self, down: Duration, rng: &mut impl Rng) -> Result<()> {
        let led = self.led_shards()?;
        if led.is_empty() {
            self.rec
                .fault("kill-leader skipped: no shard has a known leader that runs");
            return Ok(());
        }
        let shard = led[rng.gen_range(0..led.len())].clone();
        let leader = shard.leader.expect("filtered");
        let key = key_in(shard.slots, &format!("failover:{}", shard.group));
        self.rec.fault(format!(
            "kill -9 node {leader}, leader of group {}",
            shard.group
        ));
        self.cluster.kill_node(leader)?;
        let killed = Instant::now();
        let mut n = 0u64;
        let mut conn: Option<Conn> = None;
        let took = loop {
            if killed.elapsed() > FAILOVER_LIMIT {
                break None;
            }
            n += 1;
            if conn.is_none() {
                conn = self
                    .routers
                    .pick(rng)
                    .and_then(|a| Conn::connect(&a, Duration::from_secs(10)).ok());
            }
            let Some(c) = conn.as_mut() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let val = n.to_string();
            match c.call(&["SET", key.as_str(), val.as_str()]) {
                Ok(Value::Simple(s)) if s == "OK" => break Some(killed.elapsed()),
                Ok(_) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => conn = None,
            }
        };
        match took {
            Some(d) => {
                self.stats.failover_ms.push(d.as_millis() as u64);
                self.rec.fault(format!(
                    "group {} accepts writes again after {} ms",
                    shard.group,
                    d.as_millis()
                ));
            }
            None => {
                self.stats.failover_timeouts += 1;
                self.rec.fault(format!(
                    "group {} accepted no write within {FAILOVER_LIMIT:?}",
                    shard.group
                ));
            }
        }
        std::thread::sleep(down);
        self.rec.fault(format!("restart node {leader}"));
        self.cluster.start_node(leader)?;
        Ok(())
    }

    /// [`Fault::PauseLeader`]: the stale-read fault of the leader lease.
    /// The old leader is cut from its peers right after the SIGSTOP (before
    /// any vote request can reach it), so when it resumes it still believes
    /// it leads, its published metrics are from before the pause, and the
    /// router that reaches only it sends it reads. Only the lease's clock
    /// stands between them and the value from before the pause.
    fn pause_leader(
        &mut self,
        paused: Duration,
        isolated: Duration,
        router: usize,
        rng: &mut impl Rng,
    ) -> Result<()> {
        let led = self.led_shards()?;
        if led.is_empty() {
            self.rec
                .fault("pause-leader skipped: no shard has a known leader that runs");
            return Ok(());
        }
        let shard = led[rng.gen_range(0..led.len())].clone();
        let leader = shard.leader.expect("filtered");
        let names: Vec<String> = self
            .live_routers
            .iter()
            .map(|&i| self.cluster.router_name(i).unwrap_or("?").to_string())
            .collect();
        let slot = router % names.len().max(1);
        let mut others: Vec<u64> = (1..=self.cluster.node_count() as u64)
            .filter(|&n| n != leader && !self.retired.contains(&n))
            .collect();
        if let Extra::Joined(e) | Extra::Draining(e) = self.extra {
            if e != leader && !others.contains(&e) {
                others.push(e);
            }
        }
        let sides = [
            Side {
                nodes: vec![leader],
                routers: vec![slot],
            },
            Side {
                nodes: others,
                routers: vec![],
            },
        ];
        let cuts = partition_cuts(&sides, |i| names.get(i).cloned().unwrap_or_default());
        self.stats.pause_leader += 1;
        self.rec.fault(format!(
            "SIGSTOP node {leader}, leader of group {}; cut it from its peers, {} reaches only it",
            shard.group,
            names.get(slot).map_or("?", String::as_str)
        ));
        self.cluster.pause_node(leader)?;
        let Some(links) = self.cluster.links() else {
            let _ = self.cluster.resume_node(leader);
            bail!("pause-leader needs a cluster started with links");
        };
        for (a, b) in &cuts {
            links.cut(a, b);
        }
        std::thread::sleep(paused);
        self.rec
            .fault(format!("SIGCONT node {leader}, still cut from its peers"));
        self.cluster.resume_node(leader)?;
        std::thread::sleep(isolated);
        if let Some(links) = self.cluster.links() {
            links.heal();
        }
        self.rec.fault("partition healed");
        Ok(())
    }

    fn join_drain(&mut self) -> Result<()> {
        match self.extra {
            Extra::None => {
                let id = self.cluster.add_node().context("adding a node")?;
                self.stats.joins += 1;
                self.rec
                    .fault(format!("node {id} joins: replicas move onto it"));
                self.extra = Extra::Joined(id);
            }
            Extra::Joined(id) => {
                let held = self
                    .describe()
                    .map(|d| d.iter().filter(|s| s.replicas.contains(&id)).count())
                    .unwrap_or(0);
                self.stats.replicas_moved_on += held as u64;
                let reply = self.call_router(&["CLUSTER.DRAIN", &id.to_string()]);
                match reply {
                    Ok(Value::Simple(s)) if s == "OK" => {
                        self.stats.drains += 1;
                        self.rec
                            .fault(format!("drain node {id}: its {held} replicas move off it"));
                        self.extra = Extra::Draining(id);
                    }
                    other => self
                        .rec
                        .fault(format!("drain of node {id} not started: {other:?}")),
                }
            }
            Extra::Draining(id) => {
                let holds = self.describe()?.iter().any(|s| s.replicas.contains(&id));
                if holds {
                    self.rec.fault(format!("drain of node {id} still running"));
                } else {
                    self.stats.drains_done += 1;
                    self.rec
                        .fault(format!("node {id} drained: holds no replica; stopping it"));
                    self.cluster.stop_node(id)?;
                    self.retired.push(id);
                    self.extra = Extra::None;
                }
            }
        }
        Ok(())
    }

    /// After the run: every node running and not paused (but retired extra
    /// nodes), two routers.
    pub fn heal(&mut self) -> Result<()> {
        if let Some(links) = self.cluster.links() {
            links.heal();
        }
        for id in 1..=self.cluster.node_count() as u64 {
            if self.retired.contains(&id) {
                continue;
            }
            let _ = self.cluster.resume_node(id);
            if self.cluster.node_pid(id).is_none() {
                self.rec.fault(format!("heal: start node {id}"));
                self.cluster.start_node(id)?;
            }
        }
        while self.live_routers.len() < 2 {
            self.cluster.add_router()?;
            self.live_routers
                .push(self.cluster.router_addrs().len() - 1);
        }
        self.publish_routers();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn faults_are_deterministic_and_kill_only_a_minority() {
        let a: Vec<_> = {
            let mut rng = StdRng::seed_from_u64(42);
            (0..50)
                .map(|_| next_fault(&mut rng, 3, &FaultKind::ALL))
                .collect()
        };
        let b: Vec<_> = {
            let mut rng = StdRng::seed_from_u64(42);
            (0..50)
                .map(|_| next_fault(&mut rng, 3, &FaultKind::ALL))
                .collect()
        };
        assert_eq!(a, b);
        let mut rng = StdRng::seed_from_u64(1);
        for nodes in [3usize, 5] {
            for _ in 0..500 {
                if let Some(Fault::KillNodes { ids, .. }) =
                    next_fault(&mut rng, nodes, &FaultKind::ALL)
                {
                    assert!(ids.len() <= (nodes - 1) / 2 && !ids.is_empty());
                    assert!(ids.iter().all(|&i| i >= 1 && i <= nodes as u64));
                }
            }
        }
        assert_eq!(next_fault(&mut rng, 3, &[]), None);
        assert!(matches!(
            next_fault(&mut rng, 3, &[FaultKind::RestartEtcd]),
            Some(Fault::RestartEtcd)
        ));
    }

    #[test]
    fn a_paused_leader_stays_paused_past_the_election_timeout() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..200 {
            let Some(Fault::PauseLeader {
                paused,
                isolated,
                router,
            }) = next_fault(&mut rng, 3, &[FaultKind::PauseLeader])
            else {
                panic!("only pause-leader was asked for");
            };
            // Followers wait leader lease + election timeout (2 + 2 s at
            // most with the defaults) before they elect.
            assert!(paused >= Duration::from_millis(4_500), "{paused:?}");
            assert!(isolated >= Duration::from_secs(1));
            assert!(router < 2);
        }
        assert!(FaultKind::PauseLeader.is_partition(), "it needs the links");
        assert_eq!(
            FaultKind::parse("pause-leader"),
            Some(FaultKind::PauseLeader)
        );
    }

    #[test]
    fn partitions_leave_a_majority_and_cut_only_across_sides() {
        let mut rng = StdRng::seed_from_u64(9);
        let kinds = [
            FaultKind::IsolateNode,
            FaultKind::SplitNodes,
            FaultKind::CutRouter,
        ];
        let mut seen = [0; 3];
        for nodes in [3usize, 5] {
            for _ in 0..300 {
                let Some(Fault::Partition { sides, lasts }) = next_fault(&mut rng, nodes, &kinds)
                else {
                    panic!("only partitions were asked for");
                };
                assert!(lasts >= Duration::from_secs(1) && lasts < Duration::from_secs(8));
                let mut all: Vec<u64> = sides.iter().flat_map(|s| s.nodes.clone()).collect();
                all.sort_unstable();
                all.dedup();
                let listed: usize = sides.iter().map(|s| s.nodes.len()).sum();
                assert_eq!(all.len(), listed, "a node on two sides: {sides:?}");
                // Some side keeps a majority of the nodes, unless only a
                // router is cut off.
                let majority = sides.iter().any(|s| s.nodes.len() > nodes / 2);
                let router_only = sides.iter().any(|s| s.nodes.is_empty());
                assert!(majority || router_only, "{sides:?}");
                match (sides[0].nodes.len(), sides[0].routers.len()) {
                    (1, 0) => seen[0] += 1,
                    (0, 1) => seen[2] += 1,
                    _ => seen[1] += 1,
                }
            }
        }
        assert!(
            seen.iter().all(|&n| n > 50),
            "every shape is drawn: {seen:?}"
        );

        let sides = vec![
            Side {
                nodes: vec![2],
                routers: vec![1],
            },
            Side {
                nodes: vec![1, 3],
                routers: vec![0],
            },
        ];
        let names = ["router", "router-3"];
        let cuts = partition_cuts(&sides, |i| names[i].to_string());
        let want: Vec<(String, String)> = [
            ("node-2", "node-1"),
            ("node-2", "node-3"),
            ("node-2", "router"),
            ("router-3", "node-1"),
            ("router-3", "node-3"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(cuts, want, "every cross pair but router–router");
    }

    #[test]
    fn describe_reply_parses() {
        let b = |s: &str| Value::Bulk(Some(s.as_bytes().to_vec()));
        let shard = Value::Array(Some(vec![
            b("group_id"),
            Value::Int(7),
            b("slots"),
            Value::Array(Some(vec![Value::Int(0), Value::Int(2047)])),
            b("replicas"),
            Value::Array(Some(vec![Value::Int(1), Value::Int(2), Value::Int(3)])),
            b("leader"),
            Value::Int(2),
        ]));
        let mut nil_leader = shard.clone();
        if let Value::Array(Some(items)) = &mut nil_leader {
            items[7] = Value::Bulk(None);
        }
        let reply = Value::Array(Some(vec![
            b("name"),
            b("default"),
            b("shards"),
            Value::Array(Some(vec![shard, nil_leader])),
        ]));
        let shards = parse_describe(&reply).unwrap();
        assert_eq!(
            shards[0],
            ShardInfo {
                group: 7,
                slots: (0, 2047),
                replicas: vec![1, 2, 3],
                leader: Some(2)
            }
        );
        assert_eq!(shards[1].leader, None);
        let k = key_in((100, 200), "p");
        assert!((100..=200).contains(&slot(k.as_bytes())));
    }
}
