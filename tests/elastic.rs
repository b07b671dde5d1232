//! Elastic clusters against real etcd, node and router processes: nodes
//! join and receive their share of replicas while a client keeps working,
//! a drained node ends empty, a dead node's replicas are re-created
//! elsewhere, and a rebalancer killed half way through a move is finished by
//! the next one.
//!
//! The tests take a lock so they run one at a time (each starts five or six
//! processes; the machines that run them have few cores).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::{Connection, RedisResult};
use shoal::cluster::client::{ClientConfig, ShardClient};
use shoal::cluster::rebalance::leader_status;
use shoal::cluster::routes;
use shoal::devcluster::{ClusterOpts, LocalCluster};
use shoal::meta::descriptor::TableDescriptor;
use shoal::meta::etcd::{MemberState, Meta};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn start(dir: &tempfile::TempDir, nodes: usize, shards: u32, router_args: &[&str]) -> LocalCluster {
    let mut opts = ClusterOpts::new(env!("CARGO_BIN_EXE_shoal"), dir.path());
    opts.nodes = nodes;
    opts.default_shards = shards;
    // Small snapshots: new replicas catch up by snapshot install plus log.
    opts.node_args = ["--snapshot-threshold", "200", "--log-level", "info"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    opts.router_args = router_args.iter().map(|s| s.to_string()).collect();
    LocalCluster::start(opts).expect("cluster starts")
}

fn connect(addr: &str) -> Connection {
    let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
    let con = client.get_connection().unwrap();
    con.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    con
}

/// Run `f`, retrying (bounded) on the transient errors a moving cluster may
/// answer; any other error fails the test. Counts the retries in `retries`.
fn retry<T>(retries: &AtomicU64, mut f: impl FnMut() -> RedisResult<T>) -> T {
    let mut last = None;
    for _ in 0..100 {
        match f() {
            Ok(v) => return v,
            Err(e) => {
                let code = e.code().unwrap_or("");
                assert!(
                    code == "TRYAGAIN" || code == "CLUSTERDOWN",
                    "unexpected error: {e}"
                );
                retries.fetch_add(1, Ordering::Relaxed);
                last = Some(e);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    panic!("still failing after 100 retries: {last:?}");
}

fn write_keys(addr: &str, prefix: &str, n: usize) -> Vec<(String, String)> {
    let mut con = connect(addr);
    let retries = AtomicU64::new(0);
    (0..n)
        .map(|i| {
            let (k, v) = (format!("{prefix}{i}"), format!("value-{prefix}-{i}"));
            retry(&retries, || {
                redis::cmd("SET").arg(&k).arg(&v).query::<()>(&mut con)
            });
            (k, v)
        })
        .collect()
}

fn read_all(addr: &str, keys: &[(String, String)]) {
    let mut con = connect(addr);
    let retries = AtomicU64::new(0);
    for (k, v) in keys {
        let got: Option<String> = retry(&retries, || redis::cmd("GET").arg(k).query(&mut con));
        assert_eq!(got.as_deref(), Some(v.as_str()), "key {k}");
    }
}

/// Observes etcd and the nodes from the test.
struct Observer {
    rt: tokio::runtime::Runtime,
    meta: Meta,
    client: Arc<ShardClient>,
}

impl Observer {
    fn new(cluster: &LocalCluster) -> Observer {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let etcd = cluster.etcd_url();
        let (meta, client) = rt.block_on(async move {
            let meta = Meta::connect(&[etcd], "default").await.unwrap();
            let view = routes::follow(&meta).await.unwrap();
            (meta, ShardClient::new(view, ClientConfig::default()))
        });
        Observer { rt, meta, client }
    }

    fn table(&self) -> TableDescriptor {
        self.rt
            .block_on(self.meta.get_table("default"))
            .unwrap()
            .unwrap()
            .0
    }

    fn member_state(&self, id: u64) -> Option<MemberState> {
        let members = self.rt.block_on(self.meta.members()).unwrap();
        members.get(&id).map(|m| m.state)
    }

    /// Replicas of the table per node.
    fn loads(&self, t: &TableDescriptor) -> BTreeMap<u64, usize> {
        let mut out = BTreeMap::new();
        for s in &t.shards {
            for n in &s.replicas {
                *out.entry(*n).or_insert(0) += 1;
            }
        }
        out
    }

    /// Every shard's actual voters (asked of its leader) match the
    /// descriptor, with no move or learner left.
    fn memberships_match(&self, t: &TableDescriptor) -> Result<(), String> {
        for s in &t.shards {
            if s.moving.is_some() || !s.learners.is_empty() {
                return Err(format!("group {} still moving", s.group_id));
            }
            let st = self
                .rt
                .block_on(leader_status(&self.client, &s.replicas, s.group_id));
            let Some((_, st)) = st else {
                return Err(format!("group {} has no leader", s.group_id));
            };
            let voters: BTreeSet<u64> = st.voters.iter().copied().collect();
            let listed: BTreeSet<u64> = s.replicas.iter().copied().collect();
            if voters != listed || st.joint || !st.learners.is_empty() {
                return Err(format!(
                    "group {}: voters {voters:?} (joint {}, learners {:?}) but etcd lists {listed:?}",
                    s.group_id, st.joint, st.learners
                ));
            }
        }
        Ok(())
    }

    /// Groups of the default table each of `nodes` leads, per their own
    /// statuses (a group claimed by two, the newer term wins); `None` while
    /// a node does not answer or some group has no leader.
    fn leaders(&self, nodes: &[u64], groups: usize) -> Option<BTreeMap<u64, usize>> {
        let mut led: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for n in nodes {
            let st = self.rt.block_on(self.client.node_status(*n, vec![])).ok()?;
            for g in st.groups {
                if g.role == "leader" && g.table == "default" {
                    let e = led.entry(g.group_id).or_insert((g.term, *n));
                    if g.term > e.0 {
                        *e = (g.term, *n);
                    }
                }
            }
        }
        if led.len() != groups {
            return None;
        }
        let mut out: BTreeMap<u64, usize> = nodes.iter().map(|n| (*n, 0)).collect();
        for (_, n) in led.values() {
            *out.entry(*n).or_insert(0) += 1;
        }
        Some(out)
    }

    /// Groups node `id` hosts, per its own status.
    fn hosted(&self, id: u64) -> usize {
        self.rt
            .block_on(self.client.node_status(id, vec![]))
            .map(|s| s.groups.len())
            .unwrap_or(usize::MAX)
    }
}

fn wait_for(
    what: &str,
    cluster: &mut LocalCluster,
    timeout: Duration,
    mut f: impl FnMut() -> bool,
) {
    let started = Instant::now();
    if !common::wait_until(timeout, &mut f) {
        panic!(
            "timed out after {timeout:?} waiting for {what}\n{}",
            cluster.logs()
        );
    }
    eprintln!("{what}: {:?}", started.elapsed());
}

/// Drain node `id` with the CLI while a client keeps writing, until etcd
/// lists it removed; what the client wrote.
fn drain_while_writing(
    cluster: &mut LocalCluster,
    obs: &Observer,
    id: u64,
) -> Vec<(String, String)> {
    let work = Workload::start(cluster.router_addr());
    let node = id.to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "node",
            "drain",
            &node,
            "--no-wait",
            "--etcd",
            &cluster.etcd_url(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        &format!("node {id} drained and removed"),
        cluster,
        Duration::from_secs(180),
        || obs.member_state(id) == Some(MemberState::Removed),
    );
    let (acked, retries) = work.finish();
    eprintln!(
        "drained: client made {} writes, {retries} retries",
        acked.len()
    );
    acked
}

fn info_cluster(addr: &str) -> String {
    let mut con = connect(addr);
    redis::cmd("INFO")
        .arg("cluster")
        .query(&mut con)
        .unwrap_or_default()
}

/// A client writing and reading in a loop; every acknowledged write is kept.
struct Workload {
    stop: Arc<AtomicBool>,
    retries: Arc<AtomicU64>,
    handle: std::thread::JoinHandle<Vec<(String, String)>>,
}

impl Workload {
    fn start(addr: String) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let retries = Arc::new(AtomicU64::new(0));
        let (s, r) = (stop.clone(), retries.clone());
        let handle = std::thread::spawn(move || {
            let mut con = connect(&addr);
            let mut acked: Vec<(String, String)> = Vec::new();
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                let (k, v) = (format!("live{i}"), format!("v{i}"));
                retry(&r, || {
                    redis::cmd("SET").arg(&k).arg(&v).query::<()>(&mut con)
                });
                acked.push((k, v));
                let (rk, rv) = &acked[(i as usize * 7919) % acked.len()];
                let got: Option<String> = retry(&r, || redis::cmd("GET").arg(rk).query(&mut con));
                assert_eq!(got.as_deref(), Some(rv.as_str()), "read of {rk}");
                i += 1;
            }
            acked
        });
        Workload {
            stop,
            retries,
            handle,
        }
    }

    fn finish(self) -> (Vec<(String, String)>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let acked = self.handle.join().expect("the client saw no error");
        (acked, self.retries.load(Ordering::Relaxed))
    }
}

/// Nodes 4 and 5 join a 3-node cluster (16 shards x 3): replicas spread to
/// 9 or 10 per node while a client keeps writing and reading; then node 2 is
/// drained and stopped, and everything still reads.
#[test]
fn nodes_join_then_one_is_drained() {
    let _serial = serial();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(&dir, 3, 16, &["--max-moves-per-node", "3"]);
    let router = cluster.router_addr();
    let obs = Observer::new(&cluster);
    let data = write_keys(&router, "seed", 600);

    let work = Workload::start(router.clone());
    assert_eq!(cluster.add_node().unwrap(), 4);
    assert_eq!(cluster.add_node().unwrap(), 5);
    let mut saw_moves = String::new();
    wait_for(
        "nodes 4 and 5 balanced",
        &mut cluster,
        Duration::from_secs(180),
        || {
            if saw_moves.is_empty() {
                let info = info_cluster(&router);
                if info.contains("move0:") {
                    saw_moves = info;
                }
            }
            let t = obs.table();
            let loads = obs.loads(&t);
            loads.len() == 5
                && loads.values().all(|c| *c == 9 || *c == 10)
                && t.shards.iter().all(|s| s.moving.is_none())
        },
    );
    let (acked, retries) = work.finish();
    eprintln!(
        "joined: client made {} writes, {retries} retries",
        acked.len()
    );
    assert!(
        saw_moves.contains("caught_up="),
        "INFO showed no move in progress: {saw_moves}"
    );
    let t = obs.table();
    for s in &t.shards {
        assert_eq!(s.replicas.len(), 3);
    }
    wait_for(
        "memberships match etcd",
        &mut cluster,
        Duration::from_secs(20),
        || obs.memberships_match(&obs.table()).is_ok(),
    );
    read_all(&router, &data);
    read_all(&router, &acked);

    // Drain node 2 with the CLI; a client keeps working meanwhile.
    let acked2 = drain_while_writing(&mut cluster, &obs, 2);
    let t = obs.table();
    let loads = obs.loads(&t);
    assert!(!loads.contains_key(&2), "{loads:?}");
    assert!(t.shards.iter().all(|s| s.replicas.len() == 3));
    // Evacuation takes the nearest fit; balancing evens the rest out after.
    wait_for(
        "48 replicas over 4 nodes: 12 each",
        &mut cluster,
        Duration::from_secs(120),
        || {
            let t = obs.table();
            obs.loads(&t).values().all(|c| *c == 12) && t.shards.iter().all(|s| s.moving.is_none())
        },
    );
    wait_for(
        "node 2 deleted its replicas",
        &mut cluster,
        Duration::from_secs(20),
        || obs.hosted(2) == 0,
    );
    wait_for(
        "memberships match etcd",
        &mut cluster,
        Duration::from_secs(20),
        || obs.memberships_match(&obs.table()).is_ok(),
    );
    read_all(&router, &data);
    read_all(&router, &acked);
    read_all(&router, &acked2);
    cluster.stop_node(2).unwrap();
    read_all(&router, &data);
    read_all(&router, &acked2);
    let mut con = connect(&router);
    redis::cmd("SET")
        .arg("after")
        .arg("drain")
        .query::<()>(&mut con)
        .unwrap();
    eprintln!("nodes_join_then_one_is_drained: {:?}", started.elapsed());
}

/// A node dead past the repair time has its replicas re-created on the
/// others; a second failure then still leaves every shard a majority.
/// Draining below the replica count is refused.
#[test]
fn dead_node_is_repaired_before_a_second_failure() {
    let _serial = serial();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(&dir, 4, 8, &["--repair-after-ms", "3000"]);
    let router = cluster.router_addr();
    let obs = Observer::new(&cluster);
    let data = write_keys(&router, "k", 400);

    cluster.kill_node(4).unwrap();
    wait_for(
        "node 4's replicas re-created elsewhere",
        &mut cluster,
        Duration::from_secs(120),
        || {
            let t = obs.table();
            t.shards
                .iter()
                .all(|s| s.moving.is_none() && !s.replicas.contains(&4) && s.replicas.len() == 3)
        },
    );
    wait_for(
        "memberships match etcd",
        &mut cluster,
        Duration::from_secs(20),
        || obs.memberships_match(&obs.table()).is_ok(),
    );
    // Three nodes left and three replicas: a drain must be refused.
    let mut con = connect(&router);
    let err = redis::cmd("CLUSTER.DRAIN")
        .arg(1)
        .query::<()>(&mut con)
        .unwrap_err();
    assert!(err.to_string().contains("needs 3 replicas"), "{err}");

    cluster.kill_node(2).unwrap();
    read_all(&router, &data);
    let mut con = connect(&router);
    let retries = AtomicU64::new(0);
    retry(&retries, || {
        redis::cmd("SET")
            .arg("after")
            .arg("failures")
            .query::<()>(&mut con)
    });
    eprintln!(
        "dead_node_is_repaired_before_a_second_failure: {:?}",
        started.elapsed()
    );
}

/// A node that was stopped leads nothing when it comes back (its groups
/// elected leaders elsewhere, and nothing else moves them): leader balance
/// hands it its share again. The transfers are invisible to a client
/// writing and reading its own writes meanwhile (no error, no retry), and
/// every acknowledged write is still there.
#[test]
fn leader_balance_gives_a_restarted_node_its_share() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(&dir, 3, 6, &["--leader-balance-interval-ms", "1000"]);
    let router = cluster.router_addr();
    let obs = Observer::new(&cluster);
    let data = write_keys(&router, "k", 200);

    cluster.stop_node(2).unwrap();
    wait_for(
        "all six groups led by nodes 1 and 3",
        &mut cluster,
        Duration::from_secs(60),
        || obs.leaders(&[1, 3], 6).is_some(),
    );
    let more = write_keys(&router, "m", 100);
    let work = Workload::start(router.clone());
    cluster.start_node(2).unwrap();
    wait_for(
        "node 2 leads two of the six groups again",
        &mut cluster,
        Duration::from_secs(60),
        || obs.leaders(&[1, 2, 3], 6) == Some(BTreeMap::from([(1, 2), (2, 2), (3, 2)])),
    );
    // Some traffic under the new leaders before the client stops.
    std::thread::sleep(Duration::from_millis(500));
    let (acked, retries) = work.finish();
    assert!(acked.len() > 10, "the client kept writing: {}", acked.len());
    assert_eq!(retries, 0, "leadership moved without a client seeing it");
    read_all(&router, &data);
    read_all(&router, &more);
    read_all(&router, &acked);
    // Balanced stays put: nothing moves in the next rounds.
    let before = obs.leaders(&[1, 2, 3], 6);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(obs.leaders(&[1, 2, 3], 6), before);
}

/// Tables on the batch engine move and balance as openraft's do: node 4
/// joins a 3-node cluster (6 shards x 3) and takes its share of replicas
/// (each a raft-rs learner that gets the group by snapshot, then a voter
/// through a joint configuration) while a client keeps working; node 2 is
/// drained, its leaderships handed over first, and ends empty; a
/// restarted node is given its share of leaders back. Nothing acknowledged
/// is lost, and every group's voters are what etcd lists.
#[test]
fn batch_tables_move_drain_and_balance_their_leaders() {
    let _serial = serial();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(
        &dir,
        3,
        6,
        &[
            "--default-engine",
            "batch",
            "--max-moves-per-node",
            "3",
            "--leader-balance-interval-ms",
            "1000",
        ],
    );
    let router = cluster.router_addr();
    let obs = Observer::new(&cluster);
    assert_eq!(obs.table().engine, shoal::config::RaftEngine::Batch);
    let data = write_keys(&router, "seed", 300);

    let work = Workload::start(router.clone());
    assert_eq!(cluster.add_node().unwrap(), 4);
    wait_for(
        "node 4 took its share: 18 replicas over 4 nodes",
        &mut cluster,
        Duration::from_secs(180),
        || {
            let t = obs.table();
            let loads = obs.loads(&t);
            loads.len() == 4
                && loads.values().all(|c| *c == 4 || *c == 5)
                && t.shards.iter().all(|s| s.moving.is_none())
        },
    );
    let (acked, retries) = work.finish();
    eprintln!(
        "joined: client made {} writes, {retries} retries",
        acked.len()
    );
    wait_for(
        "memberships match etcd",
        &mut cluster,
        Duration::from_secs(30),
        || obs.memberships_match(&obs.table()).is_ok(),
    );
    read_all(&router, &data);
    read_all(&router, &acked);

    let acked2 = drain_while_writing(&mut cluster, &obs, 2);
    let t = obs.table();
    assert!(!obs.loads(&t).contains_key(&2), "{:?}", obs.loads(&t));
    wait_for(
        "node 2 deleted its replicas",
        &mut cluster,
        Duration::from_secs(30),
        || obs.hosted(2) == 0,
    );
    wait_for(
        "memberships match etcd",
        &mut cluster,
        Duration::from_secs(30),
        || obs.memberships_match(&obs.table()).is_ok(),
    );
    cluster.stop_node(2).unwrap();
    read_all(&router, &data);
    read_all(&router, &acked);
    read_all(&router, &acked2);

    // Leaders: node 3 stops, the others take its groups; back, it is
    // handed its share by transfers.
    wait_for(
        "every replica moved off node 2: 18 over nodes 1, 3 and 4",
        &mut cluster,
        Duration::from_secs(120),
        || {
            let t = obs.table();
            obs.loads(&t).values().all(|c| *c == 6) && t.shards.iter().all(|s| s.moving.is_none())
        },
    );
    cluster.stop_node(3).unwrap();
    wait_for(
        "all six groups led by nodes 1 and 4",
        &mut cluster,
        Duration::from_secs(60),
        || obs.leaders(&[1, 4], 6).is_some(),
    );
    cluster.start_node(3).unwrap();
    wait_for(
        "node 3 leads two of the six groups again",
        &mut cluster,
        Duration::from_secs(60),
        || obs.leaders(&[1, 3, 4], 6) == Some(BTreeMap::from([(1, 2), (3, 2), (4, 2)])),
    );
    read_all(&router, &data);
    read_all(&router, &acked2);
    eprintln!(
        "batch_tables_move_drain_and_balance_their_leaders: {:?}",
        started.elapsed()
    );
}

/// The rebalancer dies right after adding a learner, the next one right
/// after changing the membership; a third finishes every move, and no shard
/// is left without its replicas.
#[test]
fn killed_rebalancers_moves_are_finished_by_the_next() {
    moves_of_killed_rebalancers_finished("openraft");
}

/// The same on the batch engine: the second rebalancer dies with groups
/// in a joint configuration, which their leaders leave by themselves or
/// when the third asks again.
#[test]
fn batch_killed_rebalancers_moves_are_finished_by_the_next() {
    moves_of_killed_rebalancers_finished("batch");
}

fn moves_of_killed_rebalancers_finished(engine: &str) {
    let _serial = serial();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, obs, data) = half_made_move(&dir, engine, 300);
    let router = cluster.router_addr();
    let t = obs.table();
    assert!(
        t.shards.iter().any(|s| s.moving.is_some()),
        "a move was left half way"
    );

    let (second, _p2) = common::extra_router(
        &cluster,
        &dir.path().join("router-b"),
        "",
        &["--failpoint", "rebalance-after-promote"],
    );
    wait_for(
        "second rebalancer hits its failpoint",
        &mut cluster,
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(dir.path().join("router-b/router.log"))
                .is_ok_and(|l| l.contains("failpoint rebalance-after-promote"))
        },
    );
    // etcd still says the move is in progress; the group already changed.
    let t = obs.table();
    assert!(t.shards.iter().any(|s| s.moving.is_some()));
    for s in &t.shards {
        assert!(s.replicas.len() == 3);
    }

    let (third, _p3) = common::extra_router(&cluster, &dir.path().join("router-c"), "", &[]);
    wait_for(
        "moves finished by the third rebalancer",
        &mut cluster,
        Duration::from_secs(120),
        || {
            let t = obs.table();
            let loads = obs.loads(&t);
            loads.len() == 4 && loads.values().all(|c| *c == 3) && obs.memberships_match(&t).is_ok()
        },
    );
    read_all(&third, &data);
    let _ = second;
    let _ = router;
    eprintln!(
        "killed_rebalancers_moves_are_finished_by_the_next ({engine}): {:?}",
        started.elapsed()
    );
}

/// A 3-node cluster (4 shards on `engine`, `keys` keys written) whose
/// rebalancer stopped at its failpoint right after adding a learner on
/// node 4, which just joined: a move left half made.
fn half_made_move(
    dir: &tempfile::TempDir,
    engine: &str,
    keys: usize,
) -> (LocalCluster, Observer, Vec<(String, String)>) {
    let mut cluster = start(
        dir,
        3,
        4,
        &[
            "--failpoint",
            "rebalance-after-learner",
            "--default-engine",
            engine,
        ],
    );
    let obs = Observer::new(&cluster);
    assert_eq!(obs.table().engine.as_str(), engine);
    let data = write_keys(&cluster.router_addr(), "k", keys);
    cluster.add_node().unwrap();
    wait_for(
        "first rebalancer hits its failpoint",
        &mut cluster,
        Duration::from_secs(60),
        || first_router_aborted(dir),
    );
    (cluster, obs, data)
}

/// Whether the first router's log shows it aborted at its failpoint.
fn first_router_aborted(dir: &tempfile::TempDir) -> bool {
    std::fs::read_to_string(dir.path().join("router/router.log"))
        .is_ok_and(|l| l.contains("failpoint rebalance-after-learner"))
}

/// The rebalancer dies after adding a learner, and the learner's node dies
/// too: the next rebalancer undoes the move (learner out of the group, then
/// out of the descriptor) and the shards keep their three replicas.
#[test]
fn half_made_move_to_a_dead_node_is_undone() {
    half_made_move_undone("openraft");
}

/// The same on the batch engine: the learner removed from a raft-rs
/// configuration, its replica never given one.
#[test]
fn batch_half_made_move_to_a_dead_node_is_undone() {
    half_made_move_undone("batch");
}

fn half_made_move_undone(engine: &str) {
    let _serial = serial();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, obs, data) = half_made_move(&dir, engine, 200);
    let router = cluster.router_addr();
    cluster.kill_node(4).unwrap();
    wait_for(
        "node 4 not live",
        &mut cluster,
        Duration::from_secs(20),
        || {
            !obs.rt
                .block_on(obs.meta.live_nodes())
                .unwrap()
                .contains_key(&4)
        },
    );
    let (second, _p2) = common::extra_router(&cluster, &dir.path().join("router-b"), "", &[]);
    wait_for(
        "moves undone",
        &mut cluster,
        Duration::from_secs(60),
        || {
            let t = obs.table();
            t.shards.iter().all(|s| !s.replicas.contains(&4)) && obs.memberships_match(&t).is_ok()
        },
    );
    let log = std::fs::read_to_string(dir.path().join("router-b/router.log")).unwrap();
    assert!(log.contains("replica move undone"), "{log}");
    read_all(&second, &data);
    let _ = router;
    eprintln!(
        "half_made_move_to_a_dead_node_is_undone ({engine}): {:?}",
        started.elapsed()
    );
}
