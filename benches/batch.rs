//! What a replicated write costs on the batch engine (`shoal::shard::batch`,
//! raft-rs, one loop per node) and on openraft (each group its own tasks,
//! as shard groups run today), with 1 group and with 8, side by side in one
//! run.
//!
//! Three nodes in this process, each its own RocksDB (fsync on, in a
//! temporary directory on the data disk). Both engines use shoal's own log
//! writer thread (one sync for whatever is queued) and shoal's own state
//! machine (`store::StateMachine::apply_batch`: the SET applied as on a
//! shard, row cache, key count and applied index included). Messages cross
//! in process: the batch engine hands each turn's batch to the peer's loop;
//! openraft calls the peer group's `append_entries` / `vote`. No sockets
//! and no encoding on either side: what the engines cost, not the network.
//! Group g is led by node g % 3 + 1, as `shoal dev` spreads shard leaders.
//! 50 clients each keep one SET in flight (a key chosen at random over
//! 100,000, a 64-byte value) to the leader of the key's group, one entry
//! per SET (no proposer merging on either side).
//!
//! For each engine and group count it prints SETs per second, latency, the
//! CPU of the whole process per SET (every thread: Raft, log writers,
//! RocksDB, clients) and its context switches; for the batch engine also
//! what lies behind it, summed over the nodes: log syncs, entries, loop
//! turns, sends to peers, applier calls. Run it with `bench/batch`;
//! `cargo test` never builds it.
//!
//!   cargo bench --bench batch -- [--writes N] [--clients N] [--warm N]
//!                                [--groups 1,8] [--engines batch,openraft]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest, VoteResponse};
use openraft::{EntryPayload, ServerState};
use openraft_legacy::network_v1::{
    Adapter, InstallSnapshotError, InstallSnapshotRequest, InstallSnapshotResponse, RaftNetwork,
};
use raft::prelude::{Entry, Message};
use shoal::config::NodeConfig;
use shoal::shard::batch::{start, Applier, BatchConfig, Handle, ProposeError, Stats, Transport};
use shoal::shard::command::{Expiry, LogCmd, SetCond, WriteCmd, WriteOp};
use shoal::shard::engine::{Engine, EngineError};
use shoal::shard::store::{LogStore, Raft, StateMachine};
use shoal::shard::types::{log_id, Node, SnapshotBytes, TypeConfig};

fn set_cmd(key: &str) -> LogCmd {
    LogCmd::Write(WriteCmd {
        now_ms: 1_700_000_000_000,
        op: WriteOp::Set {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(&[b'v'; 64]),
            expiry: Expiry::Clear,
            cond: SetCond::Always,
            get: false,
        },
    })
}

// ---- the batch engine, applying through shoal's state machine ----

struct ShoalApplier {
    engine: Arc<Engine>,
    rt: tokio::runtime::Handle,
    machines: HashMap<u64, StateMachine>,
}

impl Applier for ShoalApplier {
    type Reply = ();

    fn applied(&self, _gid: u64) -> u64 {
        0
    }

    fn apply(&mut self, groups: &[(u64, Vec<Entry>)]) -> Result<Vec<Vec<()>>, EngineError> {
        let mut out = Vec::with_capacity(groups.len());
        for (gid, entries) in groups {
            if !self.machines.contains_key(gid) {
                let sm = self
                    .rt
                    .block_on(StateMachine::open(self.engine.clone(), *gid))
                    .map_err(|e| EngineError::Corrupt(e.to_string()))?;
                self.machines.insert(*gid, sm);
            }
            let batch = entries
                .iter()
                .map(|e| {
                    let payload = if e.data.is_empty() {
                        EntryPayload::Blank
                    } else {
                        EntryPayload::Normal(postcard::from_bytes::<LogCmd>(&e.data).unwrap())
                    };
                    shoal::shard::types::Entry {
                        log_id: log_id(e.term, 0, e.index),
                        payload,
                    }
                })
                .collect();
            let sm = &self.machines[gid];
            self.rt
                .block_on(sm.apply_batch(batch))
                .map_err(|e| EngineError::Corrupt(e.to_string()))?;
            out.push(vec![(); entries.len()]);
        }
        Ok(out)
    }
}

type Nodes = Arc<Mutex<HashMap<u64, Handle<()>>>>;

struct Local {
    nodes: Nodes,
}

impl Transport for Local {
    fn send(&mut self, to: u64, msgs: Vec<(u64, Message)>) {
        if let Some(h) = self.nodes.lock().unwrap().get(&to) {
            h.deliver(msgs);
        }
    }
}

// ---- openraft, each group its own Raft, as shard groups run today ----

type Rafts = Arc<RwLock<HashMap<(u64, u64), Raft>>>;

struct Factory {
    gid: u64,
    rafts: Rafts,
}

struct Peer {
    gid: u64,
    target: u64,
    rafts: Rafts,
}

#[derive(Debug)]
struct Gone(&'static str);

impl std::fmt::Display for Gone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Gone {}

impl RaftNetworkFactory<TypeConfig> for Factory {
    type Network = Adapter<TypeConfig, Peer, SnapshotBytes>;

    async fn new_client(&mut self, target: u64, _node: &Node) -> Self::Network {
        Adapter::new(Peer {
            gid: self.gid,
            target,
            rafts: self.rafts.clone(),
        })
    }
}

impl Peer {
    fn raft<E: std::error::Error>(&self) -> Result<Raft, RPCError<TypeConfig, E>> {
        let rafts = self.rafts.read().unwrap();
        rafts
            .get(&(self.target, self.gid))
            .cloned()
            .ok_or_else(|| RPCError::Unreachable(Unreachable::new(&Gone("no such group"))))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig, RaftError<TypeConfig>>>
    {
        let raft = self.raft()?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<TypeConfig>,
        RPCError<TypeConfig, RaftError<TypeConfig, InstallSnapshotError>>,
    > {
        Err(RPCError::Network(NetworkError::new(&Gone(
            "no snapshots in this benchmark",
        ))))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig, RaftError<TypeConfig>>> {
        let raft = self.raft()?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

// ---- the run ----

enum Cluster {
    Batch {
        handles: Vec<Handle<()>>,
        nodes: Nodes,
        threads: Vec<std::thread::JoinHandle<()>>,
    },
    OpenRaft {
        rafts: Rafts,
    },
}

impl Cluster {
    async fn batch(dir: &std::path::Path, groups: u64) -> Cluster {
        let nodes: Nodes = Arc::default();
        let mut threads = Vec::new();
        let mut handles = Vec::new();
        for id in 1..=3u64 {
            let engine = Arc::new(Engine::open(&dir.join(format!("n{id}")), true).unwrap());
            let applier = ShoalApplier {
                engine: engine.clone(),
                rt: tokio::runtime::Handle::current(),
                machines: HashMap::new(),
            };
            let transport = Local {
                nodes: nodes.clone(),
            };
            let (h, t) = start(BatchConfig::new(id), engine, applier, transport).unwrap();
            nodes.lock().unwrap().insert(id, h.clone());
            for gid in 1..=groups {
                h.open_group(gid, vec![1, 2, 3]).await.unwrap().unwrap();
            }
            handles.push(h);
            threads.push(t);
        }
        for gid in 1..=groups {
            handles[(gid % 3) as usize].campaign(gid);
        }
        Cluster::Batch {
            handles,
            nodes,
            threads,
        }
    }

    async fn openraft(dir: &std::path::Path, groups: u64) -> Cluster {
        let config = Arc::new(shoal::shard::raft_config(&NodeConfig::default()).unwrap());
        let rafts: Rafts = Arc::default();
        for id in 1..=3u64 {
            let engine = Arc::new(Engine::open(&dir.join(format!("n{id}")), true).unwrap());
            for gid in 1..=groups {
                let log = LogStore::new(engine.clone(), gid);
                let sm = StateMachine::open(engine.clone(), gid).await.unwrap();
                sm.follow_log(log.log_bytes());
                let network = Factory {
                    gid,
                    rafts: rafts.clone(),
                };
                let raft = Raft::new(id, config.clone(), network, log, sm)
                    .await
                    .unwrap();
                rafts.write().unwrap().insert((id, gid), raft);
            }
        }
        let members: BTreeMap<u64, Node> = (1..=3).map(|id| (id, Node::new(""))).collect();
        for gid in 1..=groups {
            let raft = rafts.read().unwrap()[&(gid % 3 + 1, gid)].clone();
            raft.initialize(members.clone()).await.unwrap();
        }
        Cluster::OpenRaft { rafts }
    }

    /// The node that leads `gid` (index 0..3), once one does.
    async fn leader(&self, gid: u64) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for id in 1..=3u64 {
                let leads = match self {
                    Cluster::Batch { handles, .. } => handles[(id - 1) as usize]
                        .status(gid)
                        .await
                        .unwrap()
                        .is_some_and(|s| s.is_leader),
                    Cluster::OpenRaft { rafts } => {
                        let raft = rafts.read().unwrap()[&(id, gid)].clone();
                        let m = raft.metrics().borrow_watched().clone();
                        m.state == ServerState::Leader
                    }
                };
                if leads {
                    return (id - 1) as usize;
                }
            }
            assert!(Instant::now() < deadline, "group {gid} elected no leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Propose one SET; `Err(Some(node index))` names a leader to try.
    async fn write(&self, node: usize, gid: u64, cmd: LogCmd) -> Result<(), Option<usize>> {
        match self {
            Cluster::Batch { handles, .. } => {
                let data = postcard::to_allocvec(&cmd).unwrap();
                match handles[node].propose(gid, data).await.unwrap() {
                    Ok(()) => Ok(()),
                    Err(ProposeError::NotLeader { leader: Some(l) }) => Err(Some((l - 1) as usize)),
                    Err(ProposeError::NotLeader { leader: None } | ProposeError::Dropped) => {
                        Err(None)
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            Cluster::OpenRaft { rafts } => {
                let raft = rafts.read().unwrap()[&(node as u64 + 1, gid)].clone();
                match raft.client_write(cmd).await {
                    Ok(_) => Ok(()),
                    Err(RaftError::APIError(
                        openraft::error::ClientWriteError::ForwardToLeader(f),
                    )) => Err(f.leader_id.map(|l| (l - 1) as usize)),
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }

    fn stats(&self) -> Option<[u64; 5]> {
        let Cluster::Batch { handles, .. } = self else {
            return None;
        };
        let mut t = [0; 5];
        for h in handles {
            let s: &Stats = h.stats();
            t[0] += s.syncs.load(Ordering::Relaxed);
            t[1] += s.entries.load(Ordering::Relaxed);
            t[2] += s.turns.load(Ordering::Relaxed);
            t[3] += s.sends.load(Ordering::Relaxed);
            t[4] += s.applies.load(Ordering::Relaxed);
        }
        Some(t)
    }

    async fn stop(self) {
        match self {
            Cluster::Batch {
                handles,
                nodes,
                threads,
            } => {
                for h in &handles {
                    h.stop();
                }
                nodes.lock().unwrap().clear();
                for t in threads {
                    tokio::task::block_in_place(|| t.join().unwrap());
                }
            }
            Cluster::OpenRaft { rafts } => {
                let all: Vec<Raft> = rafts.write().unwrap().drain().map(|(_, r)| r).collect();
                for r in all {
                    let _ = r.shutdown().await;
                }
            }
        }
    }
}

struct Figures {
    writes_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us: f64,
    switches: f64,
    /// syncs, entries, turns, sends, applier calls per write (batch only)
    rounds: Option<[f64; 5]>,
}

fn rusage() -> (f64, f64) {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let cpu = ru.ru_utime.tv_sec as f64 * 1e6
        + ru.ru_utime.tv_usec as f64
        + ru.ru_stime.tv_sec as f64 * 1e6
        + ru.ru_stime.tv_usec as f64;
    (cpu, (ru.ru_nvcsw + ru.ru_nivcsw) as f64)
}

async fn phase(
    cluster: &Arc<Cluster>,
    leaders: &Arc<Mutex<HashMap<u64, usize>>>,
    groups: u64,
    clients: u64,
    n: u64,
) -> Vec<Duration> {
    let per = n / clients;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let cluster = cluster.clone();
        let leaders = leaders.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per as usize);
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (c + 1);
            for _ in 0..per {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let key = format!("key:{:012}", x % 100_000);
                let gid = x % groups + 1;
                let t0 = Instant::now();
                loop {
                    let node = leaders.lock().unwrap()[&gid];
                    match cluster.write(node, gid, set_cmd(&key)).await {
                        Ok(()) => break,
                        Err(Some(l)) => {
                            leaders.lock().unwrap().insert(gid, l);
                        }
                        Err(None) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                lat.push(t0.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

async fn run(engine: &str, groups: u64, writes: u64, clients: u64, warm: u64) -> Figures {
    let dir = tempfile::Builder::new()
        .prefix("shoal-bench-batch")
        .tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()))
        .unwrap();
    let cluster = Arc::new(match engine {
        "batch" => Cluster::batch(dir.path(), groups).await,
        "openraft" => Cluster::openraft(dir.path(), groups).await,
        other => panic!("unknown engine {other}"),
    });
    let leaders: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    for gid in 1..=groups {
        let l = cluster.leader(gid).await;
        leaders.lock().unwrap().insert(gid, l);
    }
    phase(&cluster, &leaders, groups, clients, warm).await;
    let before = cluster.stats();
    let (cpu0, sw0) = rusage();
    let t0 = Instant::now();
    let mut lat = phase(&cluster, &leaders, groups, clients, writes).await;
    let wall = t0.elapsed().as_secs_f64();
    let (cpu1, sw1) = rusage();
    let after = cluster.stats();
    lat.sort();
    let n = lat.len() as f64;
    let rounds = match (before, after) {
        (Some(b), Some(a)) => Some(std::array::from_fn(|i| (a[i] - b[i]) as f64 / n)),
        _ => None,
    };
    let f = Figures {
        writes_per_s: n / wall,
        p50_ms: lat[lat.len() / 2].as_secs_f64() * 1e3,
        p99_ms: lat[lat.len() * 99 / 100].as_secs_f64() * 1e3,
        cpu_us: (cpu1 - cpu0) / n,
        switches: (sw1 - sw0) / n,
        rounds,
    };
    Arc::into_inner(cluster)
        .expect("the clients are done")
        .stop()
        .await;
    f
}

fn main() {
    let mut writes = 100_000u64;
    let mut clients = 50u64;
    let mut warm = 20_000u64;
    let mut groups = vec![1u64, 8];
    let mut engines = vec!["batch".to_string(), "openraft".to_string()];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().expect("a value after the flag");
        match a.as_str() {
            "--writes" => writes = val().parse().unwrap(),
            "--clients" => clients = val().parse().unwrap(),
            "--warm" => warm = val().parse().unwrap(),
            "--groups" => groups = val().split(',').map(|g| g.parse().unwrap()).collect(),
            "--engines" => engines = val().split(',').map(String::from).collect(),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for e in &engines {
        for &g in &groups {
            rows.push((
                format!("{e}, {g}"),
                rt.block_on(run(e, g, writes, clients, warm)),
            ));
        }
    }
    println!(
        "3 nodes in one process, fsync on, {clients} clients, {writes} SETs of 64 B \
         (after {warm}); columns: engine, groups"
    );
    print!("| per SET |");
    for (name, _) in &rows {
        print!(" {name} |");
    }
    println!();
    print!("|---|");
    for _ in &rows {
        print!("---:|");
    }
    println!();
    let line = |name: &str, get: &dyn Fn(&Figures) -> String| {
        print!("| {name} |");
        for (_, f) in &rows {
            print!(" {} |", get(f));
        }
        println!();
    };
    let round =
        |i: usize| move |f: &Figures| f.rounds.map_or("–".into(), |r| format!("{:.3}", r[i]));
    line("SETs/s", &|f| format!("{:.0}", f.writes_per_s));
    line("p50 ms", &|f| format!("{:.2}", f.p50_ms));
    line("p99 ms", &|f| format!("{:.2}", f.p99_ms));
    line("CPU µs, whole process", &|f| format!("{:.1}", f.cpu_us));
    line("context switches", &|f| format!("{:.2}", f.switches));
    line("log syncs (3 nodes)", &round(0));
    line("entries appended (3 nodes)", &round(1));
    line("loop turns (3 nodes)", &round(2));
    line("sends to peers (3 nodes)", &round(3));
    line("applier calls (3 nodes)", &round(4));
}
