//! What a replicated write costs on the batch engine (`shoal::shard::batch`,
//! raft-rs, one loop per node) and on openraft (each group its own tasks,
//! as shard groups run today), with 1 group and with 8, side by side in one
//! run.
//!
//! Three nodes in this process, each its own RocksDB (fsync on, in a
//! temporary directory on the data disk). Engine `batch-sockets` is the
//! batch engine with its messages over real TCP links between the nodes
//! (`batch::wire`: each turn's batch for a peer encoded and posted on the
//! node pair's Raft stream, served by the node's own Raft service), to
//! weigh the wire against the in-process hand-over. Both engines use shoal's own log
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
//! After every key is written once and a warm-up, the same clients send
//! SETs, then linearizable GETs: a ReadIndex round (the batch loop shares
//! one per group per turn; openraft's `ensure_linearizable` with
//! `ReadPolicy::ReadIndex`), the apply caught up, then the row read from
//! RocksDB.
//!
//! For each engine and group count it prints requests per second, latency,
//! the CPU of the whole process per request (every thread: Raft, log
//! writers, RocksDB, clients) and its context switches; for the batch
//! engine also what lies behind it, summed over the nodes: log syncs,
//! entries, loop turns, sends to peers, applier calls, ReadIndex rounds.
//! Run it with `bench/batch`; `cargo test` never builds it.
//!
//!   cargo bench --bench batch -- [--writes N] [--clients N] [--warm N]
//!                                [--groups 1,8] [--engines batch,batch-sockets,openraft]
//!   cargo bench --bench batch -- --idle 1000
//!
//! `--idle N` measures instead N idle groups on the batch engine over
//! sockets: the three nodes' CPU and memory over 10 s once every group has
//! a leader (the idle-groups target of issue 15), without hibernation and
//! then, on a second cluster, with every replica asleep.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest, VoteResponse};
use openraft::ServerState;
use openraft_legacy::network_v1::{
    Adapter, InstallSnapshotError, InstallSnapshotRequest, InstallSnapshotResponse, RaftNetwork,
};
use raft::prelude::Message;
use shoal::config::NodeConfig;
use shoal::shard::batch::wire::StreamTransport;
use shoal::shard::batch::{
    encode_command, start, BatchConfig, Handle, ProposeError, ShardApplier, Stats, Transport,
};
use shoal::shard::command::{Expiry, LogCmd, OpReply, SetCond, WriteCmd, WriteOp};
use shoal::shard::engine::{data_key, Cf, Engine};
use shoal::shard::host::{Host, HostConfig};
use shoal::shard::store::{LogStore, Raft, StateMachine};
use shoal::shard::types::{Node, SnapshotBytes, TypeConfig};

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

type Nodes = Arc<Mutex<HashMap<u64, Handle<OpReply>>>>;

struct Local {
    nodes: Nodes,
}

impl Transport for Local {
    fn send(&mut self, to: u64, msgs: Vec<(u64, Message)>) -> usize {
        if let Some(h) = self.nodes.lock().unwrap().get(&to) {
            h.deliver(msgs);
        }
        0
    }
}

/// A node's [`Host`] with no openraft groups: what serves the batch
/// engine's messages off the links.
fn host(id: u64, engine: Arc<Engine>) -> Arc<Host> {
    let config = HostConfig::from_node(&NodeConfig::default()).unwrap();
    Host::new(id, engine, shoal::shard::network::Transport::new(), config)
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
        engines: Vec<Arc<Engine>>,
        handles: Vec<Handle<OpReply>>,
        nodes: Nodes,
        threads: Vec<std::thread::JoinHandle<()>>,
        /// Over sockets: each node's listener task.
        servers: Vec<tokio::task::JoinHandle<()>>,
    },
    OpenRaft {
        engines: Vec<Arc<Engine>>,
        rafts: Rafts,
    },
}

impl Cluster {
    /// The batch engine; `sockets`: its messages cross real TCP links
    /// (each node a [`Host`] serving framed links with the node's own
    /// Raft service, [`StreamTransport`] between them), else in process.
    /// `hibernate`: each loop's `BatchConfig::hibernate_after`.
    async fn batch(
        dir: &std::path::Path,
        groups: u64,
        sockets: bool,
        hibernate: Option<Duration>,
    ) -> Cluster {
        let nodes: Nodes = Arc::default();
        let mut threads = Vec::new();
        let mut handles = Vec::new();
        let mut engines = Vec::new();
        let mut servers = Vec::new();
        let mut listeners = Vec::new();
        for _ in 1..=3u64 {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let addrs: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().to_string())
            .collect();
        for (id, listener) in (1..=3u64).zip(listeners) {
            let engine = Arc::new(Engine::open(&dir.join(format!("n{id}")), true).unwrap());
            engines.push(engine.clone());
            let runtime = tokio::runtime::Handle::current();
            let applier = ShardApplier::new(engine.clone(), runtime.clone());
            let mut config = BatchConfig::new(id);
            config.hibernate_after = hibernate;
            let (h, t) = if sockets {
                let host = host(id, engine.clone());
                for (peer, addr) in (1..=3u64).zip(&addrs) {
                    host.transport.set_peer(peer, addr.clone());
                }
                servers.push(shoal::shard::service::serve_plaintext(
                    listener,
                    host.clone(),
                    1 << 30,
                ));
                let transport = StreamTransport::new(host.transport.clone(), runtime);
                let (h, t) = start(config, engine, applier, transport).unwrap();
                host.set_batch(h.clone());
                (h, t)
            } else {
                let transport = Local {
                    nodes: nodes.clone(),
                };
                start(config, engine, applier, transport).unwrap()
            };
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
            engines,
            handles,
            nodes,
            threads,
            servers,
        }
    }

    async fn openraft(dir: &std::path::Path, groups: u64) -> Cluster {
        let config = Arc::new(shoal::shard::raft_config(&NodeConfig::default()).unwrap());
        let rafts: Rafts = Arc::default();
        let mut engines = Vec::new();
        for id in 1..=3u64 {
            let engine = Arc::new(Engine::open(&dir.join(format!("n{id}")), true).unwrap());
            engines.push(engine.clone());
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
        Cluster::OpenRaft { engines, rafts }
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
                    Cluster::OpenRaft { rafts, .. } => {
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
                let data = encode_command(&cmd).unwrap();
                match handles[node].propose(gid, data).await {
                    Ok(_) => Ok(()),
                    Err(ProposeError::NotLeader { leader: Some(l) }) => Err(Some((l - 1) as usize)),
                    Err(ProposeError::NotLeader { leader: None } | ProposeError::Dropped) => {
                        Err(None)
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            Cluster::OpenRaft { rafts, .. } => {
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

    /// A linearizable GET: a ReadIndex round (shared with the reads that
    /// come with it), the apply caught up, then the row read.
    async fn read(&self, node: usize, gid: u64, key: &str) -> Result<(), Option<usize>> {
        let engine = match self {
            Cluster::Batch {
                handles, engines, ..
            } => {
                match handles[node].read(gid).await {
                    Ok(()) => {}
                    Err(ProposeError::NotLeader { leader: Some(l) }) => {
                        return Err(Some((l - 1) as usize))
                    }
                    Err(ProposeError::NotLeader { leader: None }) => return Err(None),
                    Err(e) => panic!("{e}"),
                }
                &engines[node]
            }
            Cluster::OpenRaft { rafts, engines } => {
                let raft = rafts.read().unwrap()[&(node as u64 + 1, gid)].clone();
                if let Err(e) = raft
                    .ensure_linearizable(openraft::ReadPolicy::ReadIndex)
                    .await
                {
                    let leader = e.forward_to_leader().and_then(|f| f.leader_id);
                    return Err(leader.map(|l| (l - 1) as usize));
                }
                &engines[node]
            }
        };
        let row = engine.view().get(Cf::Data, &data_key(gid, key.as_bytes()));
        assert!(row.unwrap().is_some(), "{key} was written");
        Ok(())
    }

    fn stats(&self) -> Option<[u64; 6]> {
        let Cluster::Batch { handles, .. } = self else {
            return None;
        };
        let mut t = [0; 6];
        for h in handles {
            let s: &Stats = h.stats();
            t[0] += s.syncs.load(Ordering::Relaxed);
            t[1] += s.entries.load(Ordering::Relaxed);
            t[2] += s.turns.load(Ordering::Relaxed);
            t[3] += s.sends.load(Ordering::Relaxed);
            t[4] += s.applies.load(Ordering::Relaxed);
            t[5] += s.read_rounds.load(Ordering::Relaxed);
        }
        Some(t)
    }

    async fn stop(self) {
        match self {
            Cluster::Batch {
                handles,
                nodes,
                threads,
                servers,
                ..
            } => {
                for s in servers {
                    s.abort();
                }
                for h in &handles {
                    h.stop();
                }
                nodes.lock().unwrap().clear();
                for t in threads {
                    tokio::task::block_in_place(|| t.join().unwrap());
                }
            }
            Cluster::OpenRaft { rafts, .. } => {
                let all: Vec<Raft> = rafts.write().unwrap().drain().map(|(_, r)| r).collect();
                for r in all {
                    let _ = r.shutdown().await;
                }
            }
        }
    }
}

struct Row {
    set: Figures,
    get: Figures,
}

struct Figures {
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us: f64,
    switches: f64,
    /// syncs, entries, turns, sends, applier calls, ReadIndex rounds per
    /// request (batch only)
    rounds: Option<[f64; 6]>,
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

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Every key once (so that each GET finds its row).
    Fill,
    Set,
    Get,
}

const KEYS: u64 = 100_000;

/// Who the clients send to, and how they spread.
struct Load {
    cluster: Arc<Cluster>,
    leaders: Arc<Mutex<HashMap<u64, usize>>>,
    groups: u64,
    clients: u64,
}

async fn phase(load: &Load, n: u64, mode: Mode) -> Vec<Duration> {
    let (groups, clients) = (load.groups, load.clients);
    let per = if mode == Mode::Fill {
        KEYS / clients
    } else {
        n / clients
    };
    let mut tasks = Vec::new();
    for c in 0..clients {
        let cluster = load.cluster.clone();
        let leaders = load.leaders.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per as usize);
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (c + 1);
            for i in 0..per {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let k = match mode {
                    Mode::Fill => c + i * clients,
                    _ => x % KEYS,
                };
                let key = format!("key:{k:012}");
                let gid = k % groups + 1;
                let t0 = Instant::now();
                loop {
                    let node = leaders.lock().unwrap()[&gid];
                    let r = if mode == Mode::Get {
                        cluster.read(node, gid, &key).await
                    } else {
                        cluster.write(node, gid, set_cmd(&key)).await
                    };
                    match r {
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

async fn measure(load: &Load, n: u64, mode: Mode) -> Figures {
    let before = load.cluster.stats();
    let (cpu0, sw0) = rusage();
    let t0 = Instant::now();
    let mut lat = phase(load, n, mode).await;
    let wall = t0.elapsed().as_secs_f64();
    let (cpu1, sw1) = rusage();
    let after = load.cluster.stats();
    lat.sort();
    let n = lat.len() as f64;
    let rounds = match (before, after) {
        (Some(b), Some(a)) => Some(std::array::from_fn(|i| (a[i] - b[i]) as f64 / n)),
        _ => None,
    };
    Figures {
        per_s: n / wall,
        p50_ms: lat[lat.len() / 2].as_secs_f64() * 1e3,
        p99_ms: lat[lat.len() * 99 / 100].as_secs_f64() * 1e3,
        cpu_us: (cpu1 - cpu0) / n,
        switches: (sw1 - sw0) / n,
        rounds,
    }
}

async fn run(engine: &str, groups: u64, writes: u64, clients: u64, warm: u64) -> Row {
    let dir = tempfile::Builder::new()
        .prefix("shoal-bench-batch")
        .tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()))
        .unwrap();
    let cluster = Arc::new(match engine {
        "batch" => Cluster::batch(dir.path(), groups, false, None).await,
        "batch-sockets" => Cluster::batch(dir.path(), groups, true, None).await,
        "openraft" => Cluster::openraft(dir.path(), groups).await,
        other => panic!("unknown engine {other}"),
    });
    let leaders: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    for gid in 1..=groups {
        let l = cluster.leader(gid).await;
        leaders.lock().unwrap().insert(gid, l);
    }
    let load = Load {
        cluster,
        leaders,
        groups,
        clients,
    };
    phase(&load, 0, Mode::Fill).await;
    phase(&load, warm, Mode::Set).await;
    let set = measure(&load, writes, Mode::Set).await;
    let get = measure(&load, writes, Mode::Get).await;
    let cluster = load.cluster;
    Arc::into_inner(cluster)
        .expect("the clients are done")
        .stop()
        .await;
    Row { set, get }
}

/// `groups` idle groups on the batch engine over sockets (each node
/// hosting a replica of each, leaders spread): the CPU and memory of the
/// three nodes over `secs` seconds once every group has a leader, and
/// with `hibernate`, once every replica of every group sleeps.
async fn idle(groups: u64, secs: u64, hibernate: Option<Duration>) {
    let dir = tempfile::Builder::new()
        .prefix("shoal-bench-batch")
        .tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()))
        .unwrap();
    let rss = || {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            })
            .unwrap_or(0.0)
            / 1024.0
    };
    let before = rss();
    let cluster = Cluster::batch(dir.path(), groups, true, hibernate).await;
    for gid in 1..=groups {
        cluster.leader(gid).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut asleep = 0;
    if let (Some(after), Cluster::Batch { handles, .. }) = (hibernate, &cluster) {
        let deadline = Instant::now() + after + Duration::from_secs(30);
        loop {
            asleep = handles
                .iter()
                .flat_map(|h| (1..=groups).filter_map(|gid| h.role(gid)))
                .filter(|r| r.asleep.load(Ordering::Acquire))
                .count();
            if asleep as u64 == 3 * groups || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let t0 = Instant::now();
    let (cpu0, _) = rusage();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (cpu1, _) = rusage();
    let wall = t0.elapsed().as_secs_f64();
    let core = (cpu1 - cpu0) / 1e6 / wall * 100.0;
    let after = rss();
    let how = match hibernate {
        None => "no hibernation".to_string(),
        Some(after) => format!(
            "hibernating after {} s ({asleep} of {} replicas asleep)",
            after.as_secs_f64(),
            3 * groups
        ),
    };
    println!(
        "{groups} idle groups x 3 replicas, 3 nodes in one process (batch engine over sockets), {how}, {secs} s: \
         CPU {:.2} % of a core per node ({core:.2} % for all three), \
         memory {:.0} MiB per node ({:.0} MiB resident for all, {before:.0} before the cluster)",
        core / 3.0,
        (after - before) / 3.0,
        after
    );
    cluster.stop().await;
}

fn main() {
    let mut writes = 100_000u64;
    let mut clients = 50u64;
    let mut warm = 20_000u64;
    let mut groups = vec![1u64, 8];
    let mut engines = vec!["batch".to_string(), "openraft".to_string()];
    let mut idle_groups = None;
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench targets too, without
        // `--bench`: this is a benchmark, not a test.
        println!("batch: a benchmark; run it with bench/batch (or cargo bench --bench batch)");
        return;
    }
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().expect("a value after the flag");
        match a.as_str() {
            "--writes" => writes = val().parse().unwrap(),
            "--clients" => clients = val().parse().unwrap(),
            "--warm" => warm = val().parse().unwrap(),
            "--groups" => groups = val().split(',').map(|g| g.parse().unwrap()).collect(),
            "--engines" => engines = val().split(',').map(String::from).collect(),
            "--idle" => idle_groups = Some(val().parse().unwrap()),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    if let Some(groups) = idle_groups {
        rt.block_on(idle(groups, 10, None));
        rt.block_on(idle(groups, 10, Some(Duration::from_secs(2))));
        return;
    }
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
         (after {KEYS} to fill and {warm} of warm-up), then {writes} GETs; \
         columns: engine, groups"
    );
    for (what, get_row) in [
        ("SET", (|r: &Row| &r.set) as fn(&Row) -> &Figures),
        ("GET", |r: &Row| &r.get),
    ] {
        println!();
        print!("| per {what} |");
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
            for (_, r) in &rows {
                print!(" {} |", get(get_row(r)));
            }
            println!();
        };
        let round =
            |i: usize| move |f: &Figures| f.rounds.map_or("–".into(), |r| format!("{:.3}", r[i]));
        line(&format!("{what}s/s"), &|f| format!("{:.0}", f.per_s));
        line("p50 ms", &|f| format!("{:.2}", f.p50_ms));
        line("p99 ms", &|f| format!("{:.2}", f.p99_ms));
        line("CPU µs, whole process", &|f| format!("{:.1}", f.cpu_us));
        line("context switches", &|f| format!("{:.2}", f.switches));
        if what == "SET" {
            line("log syncs (3 nodes)", &round(0));
            line("entries appended (3 nodes)", &round(1));
            line("loop turns (3 nodes)", &round(2));
            line("sends to peers (3 nodes)", &round(3));
            line("applier calls (3 nodes)", &round(4));
        } else {
            line("ReadIndex rounds (3 nodes)", &round(5));
            line("loop turns (3 nodes)", &round(2));
            line("sends to peers (3 nodes)", &round(3));
        }
    }
}
