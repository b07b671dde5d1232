//! Faults: which one comes next is a pure function of the seeded RNG
//! ([`next_fault`]); [`Injector`] carries it out on a [`LocalCluster`] and
//! heals it again (every fault is healed before the next begins, so at most a
//! minority of nodes is ever down: one of 3, at most two of 5).
//!
//! Kinds: SIGKILL of a node then restart; SIGKILL of a shard leader with the
//! failover time measured (kill → first acknowledged SET on that shard);
//! SIGSTOP/SIGCONT of a node; SIGKILL of a router and a new router in its
//! place; an etcd restart. Network partitions are not implemented (see
//! docs/RELIABILITY.md).

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::history::Recorder;
use super::resp::{Conn, Value};
use super::workload::Routers;
use crate::cluster::slot::slot;
use crate::devcluster::LocalCluster;

/// A kind of fault the run may inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    KillNode,
    KillLeader,
    PauseNode,
    KillRouter,
    RestartEtcd,
}

impl FaultKind {
    pub const ALL: [FaultKind; 5] = [
        FaultKind::KillNode,
        FaultKind::KillLeader,
        FaultKind::PauseNode,
        FaultKind::KillRouter,
        FaultKind::RestartEtcd,
    ];

    pub fn parse(s: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillNode => "kill-node",
            FaultKind::KillLeader => "kill-leader",
            FaultKind::PauseNode => "pause-node",
            FaultKind::KillRouter => "kill-router",
            FaultKind::RestartEtcd => "restart-etcd",
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
    /// SIGKILL one router, start a new one.
    KillRouter,
    RestartEtcd,
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
                FaultKind::KillRouter => 1,
                FaultKind::RestartEtcd => 1,
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
        FaultKind::KillRouter => Fault::KillRouter,
        FaultKind::RestartEtcd => Fault::RestartEtcd,
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
    pub kill_router: u64,
    pub restart_etcd: u64,
    /// Leader kill → first acknowledged write on that shard (ms).
    pub failover_ms: Vec<u64>,
    /// Leader kills after which no write succeeded within the probe limit.
    pub failover_timeouts: u64,
}

impl FaultStats {
    pub fn total(&self) -> u64 {
        self.kill_node + self.kill_leader + self.pause_node + self.kill_router + self.restart_etcd
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
        }
        Ok(())
    }

    fn describe(&self) -> Result<Vec<ShardInfo>> {
        let addr = self
            .routers
            .all()
            .first()
            .cloned()
            .ok_or_else(|| anyhow!("no router"))?;
        let mut c = Conn::connect(&addr, Duration::from_secs(10))?;
        parse_describe(&c.call(&["TABLE.DESCRIBE", "default"])?)
    }

    fn kill_leader(&mut self, down: Duration, rng: &mut impl Rng) -> Result<()> {
        let shards = self.describe()?;
        let led: Vec<&ShardInfo> = shards.iter().filter(|s| s.leader.is_some()).collect();
        if led.is_empty() {
            self.rec
                .fault("kill-leader skipped: no shard has a known leader");
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

    /// After the run: every node running and not paused, two routers.
    pub fn heal(&mut self) -> Result<()> {
        for id in 1..=self.cluster.node_count() as u64 {
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
