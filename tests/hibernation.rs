//! Hibernation of idle groups (`shard::hibernate`), end to end against real
//! etcd and real `shoal node` / `shoal router` processes: idle 3-replica
//! groups fall asleep on every replica and stay asleep (no election while
//! the nodes live), a write to a sleeping group is answered, and when the
//! node leading a sleeping group is killed the survivors elect a new leader
//! and take writes again within a bound.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use shoal::cluster::client::{ClientConfig, ShardClient};
use shoal::cluster::routes;
use shoal::devcluster::{ClusterOpts, LocalCluster};
use shoal::meta::descriptor::TableDescriptor;
use shoal::meta::etcd::Meta;
use shoal::proto::shard_service_client::ShardServiceClient;
use shoal::proto::ExecuteRequest;
use shoal::shard::codec::{self, Format};
use shoal::shard::command::{OpReply, ReadOp, ShardRequest};
use shoal::shard::status::GroupStatus;
use shoal::shard::ShardError;
use shoal::slot::slot;

const SHARDS: u32 = 4;

/// A cluster whose tables run on `engine` (openraft or batch).
fn start(dir: &tempfile::TempDir, engine: &str) -> LocalCluster {
    let mut opts = ClusterOpts::new(env!("CARGO_BIN_EXE_shoal"), dir.path());
    opts.default_shards = SHARDS;
    opts.default_replicas = 3;
    let node_conf = dir.path().join("node-test.toml");
    std::fs::write(
        &node_conf,
        "hibernate_after_ms = 1500\nlog_level = \"info\"\n",
    )
    .unwrap();
    opts.node_args = vec!["--config".into(), node_conf.display().to_string()];
    // Leader balance off: a transfer is an election, and these tests check
    // that idle groups hold none (leader balance has its own test, in
    // tests/elastic.rs).
    opts.router_args = [
        "--leader-balance-interval-ms",
        "0",
        "--default-engine",
        engine,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    LocalCluster::start(opts).expect("cluster starts")
}

/// Every group's replicas, as each live node reports them.
struct View {
    table: TableDescriptor,
    /// node → its replicas.
    nodes: HashMap<u64, Vec<GroupStatus>>,
}

impl View {
    fn leader_of(&self, gid: u64) -> Option<u64> {
        self.nodes.iter().find_map(|(node, groups)| {
            groups
                .iter()
                .any(|g| g.group_id == gid && g.role == "leader")
                .then_some(*node)
        })
    }

    /// Every replica of every group of `default` sleeps.
    fn all_asleep(&self, nodes: usize) -> bool {
        self.nodes.len() == nodes
            && self.table.shards.iter().all(|s| {
                self.nodes.values().all(|groups| {
                    groups
                        .iter()
                        .any(|g| g.group_id == s.group_id && g.hibernating)
                })
            })
    }

    /// Each group's term on each node.
    fn terms(&self) -> Vec<(u64, u64, u64)> {
        let mut v: Vec<(u64, u64, u64)> = self
            .nodes
            .iter()
            .flat_map(|(n, gs)| gs.iter().map(move |g| (*n, g.group_id, g.term)))
            .collect();
        v.sort_unstable();
        v
    }
}

fn view(cluster: &LocalCluster, rt: &tokio::runtime::Runtime) -> View {
    let etcd = cluster.etcd_url();
    rt.block_on(async move {
        let meta = Meta::connect(&[etcd], "default").await.unwrap();
        let (table, _) = meta.get_table("default").await.unwrap().unwrap();
        let client = ShardClient::new(
            routes::follow(&meta).await.unwrap(),
            ClientConfig {
                request_timeout: Duration::from_secs(2),
                rpc_timeout: Duration::from_secs(2),
                ..ClientConfig::default()
            },
        );
        let mut nodes = HashMap::new();
        for node in meta.live_nodes().await.unwrap().keys() {
            if let Ok(status) = client.node_status(*node, vec![]).await {
                nodes.insert(*node, status.groups);
            }
        }
        View { table, nodes }
    })
}

fn key_in_shard(table: &TableDescriptor, shard: usize, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|k| table.shard_for_slot(slot(k.as_bytes())) == shard)
        .unwrap()
}

/// A GET of `key` sent straight to `node`'s replica of `gid`
/// (ShardService.Execute), as a router sends it: non-linearizable is a
/// READONLY read, which any replica may answer.
fn direct_read(
    cluster: &LocalCluster,
    rt: &tokio::runtime::Runtime,
    node: u64,
    gid: u64,
    key: &str,
    linearizable: bool,
) -> Result<OpReply, ShardError> {
    let addr = format!("http://{}", cluster.node_addr(node));
    let req = ShardRequest::Read {
        op: ReadOp::Get {
            key: bytes::Bytes::copy_from_slice(key.as_bytes()),
        },
        linearizable,
        now_ms: 0,
    };
    rt.block_on(async move {
        let mut client = ShardServiceClient::connect(addr).await.unwrap();
        let reply = client
            .execute(ExecuteRequest {
                group_id: gid,
                request: codec::encode(Format::ShardRequest, &req).unwrap(),
                max_reply_len: 0,
            })
            .await
            .unwrap()
            .into_inner();
        codec::decode(Format::ShardReply, &reply.reply).unwrap()
    })
}

fn bulk(v: &'static str) -> OpReply {
    OpReply::Bulk(bytes::Bytes::from_static(v.as_bytes()))
}

fn connect(cluster: &LocalCluster) -> redis::Connection {
    let client = redis::Client::open(format!("redis://{}/", cluster.router_addr())).unwrap();
    let con = client.get_connection().unwrap();
    con.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    con
}

fn wait_all_asleep(cluster: &LocalCluster, rt: &tokio::runtime::Runtime, nodes: usize) -> View {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = view(cluster, rt);
        if v.all_asleep(nodes) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "the idle groups did not all hibernate within 60 s: {:?}",
            v.nodes
                .iter()
                .map(|(n, gs)| (
                    *n,
                    gs.iter()
                        .map(|g| (g.group_id, g.role.clone(), g.hibernating))
                        .collect::<Vec<_>>()
                ))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn idle_groups_sleep_wake_on_writes_and_fail_over_when_their_leader_dies() {
    sleep_wake_and_fail_over("openraft");
}

/// The same on the batch engine (its loop's own hibernation,
/// `shard::batch::node`).
#[test]
fn batch_idle_groups_sleep_wake_on_writes_and_fail_over_when_their_leader_dies() {
    sleep_wake_and_fail_over("batch");
}

fn sleep_wake_and_fail_over(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(&dir, engine);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut con = connect(&cluster);
    let table = view(&cluster, &rt).table;
    let keys: Vec<String> = (0..SHARDS as usize)
        .map(|s| key_in_shard(&table, s, "k"))
        .collect();
    for k in &keys {
        let _: () = redis::cmd("SET").arg(k).arg("v1").query(&mut con).unwrap();
    }

    // Idle: every replica falls asleep, and the pings keep it so: no
    // election, no term change while the nodes live.
    // A stale-allowed read (READONLY) answered by a sleeping follower
    // leaves it asleep: its election clock ran out long ago, and woken it
    // would depose its healthy leader. Asked of the followers directly, so
    // no read reaches (and wakes) a leader.
    let asleep = wait_all_asleep(&cluster, &rt, 3);
    let terms = asleep.terms();
    std::thread::sleep(Duration::from_secs(5));
    for (s, shard) in asleep.table.shards.iter().enumerate() {
        let leader = asleep.leader_of(shard.group_id).unwrap();
        for node in (1..=3u64).filter(|n| *n != leader) {
            let got = direct_read(&cluster, &rt, node, shard.group_id, &keys[s], false);
            assert_eq!(got, Ok(bulk("v1")));
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    let still = view(&cluster, &rt);
    assert!(still.all_asleep(3), "a read woke a sleeping follower");
    assert_eq!(still.terms(), terms, "a sleeping group held an election");

    // A write to a sleeping group is answered, and read back.
    let t = Instant::now();
    let _: () = redis::cmd("SET")
        .arg(&keys[0])
        .arg("v2")
        .query(&mut con)
        .unwrap();
    let write = t.elapsed();
    let got: Option<String> = redis::cmd("GET").arg(&keys[0]).query(&mut con).unwrap();
    assert_eq!(got.as_deref(), Some("v2"));
    eprintln!("a write to a sleeping group took {write:?}");
    assert!(write < Duration::from_secs(3), "write took {write:?}");

    // Asleep again; then kill the node leading shard 1.
    let asleep = wait_all_asleep(&cluster, &rt, 3);
    let gid = asleep.table.shards[1].group_id;
    let victim = asleep.leader_of(gid).expect("shard 1 has a leader");
    eprintln!("killing node {victim}, leader of sleeping group {gid}");
    cluster.kill_node(victim).unwrap();
    let t = Instant::now();
    let bound = Duration::from_secs(20);
    let mut last: String;
    loop {
        let mut con = connect(&cluster);
        let r: redis::RedisResult<()> = redis::cmd("SET").arg(&keys[1]).arg("v3").query(&mut con);
        match r {
            Ok(()) => break,
            Err(e) => last = e.to_string(),
        }
        assert!(
            t.elapsed() < bound,
            "no write to group {gid} within {bound:?} of killing its sleeping leader: {last}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let failover = t.elapsed();
    eprintln!("group {gid} took writes again {failover:?} after its sleeping leader died");
    let v = view(&cluster, &rt);
    let new_leader = v.leader_of(gid).expect("a new leader");
    assert_ne!(new_leader, victim);
    let got: Option<String> = redis::cmd("GET")
        .arg(&keys[1])
        .query(&mut connect(&cluster))
        .unwrap();
    assert_eq!(got.as_deref(), Some("v3"));
    cluster.shutdown();
}

/// A sleeping leader paused (SIGSTOP) past the election timeout: its
/// followers, no longer pinged, elect a new leader that takes a write; the
/// old one, resumed, must not answer a linearizable read with the old value
/// (it has no lease: hibernation fakes no ack).
#[test]
fn a_sleeping_leader_paused_and_resumed_serves_no_stale_read() {
    paused_sleeping_leader("openraft");
}

#[test]
fn batch_a_sleeping_leader_paused_and_resumed_serves_no_stale_read() {
    paused_sleeping_leader("batch");
}

fn paused_sleeping_leader(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(&dir, engine);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut con = connect(&cluster);
    let table = view(&cluster, &rt).table;
    let key = key_in_shard(&table, 0, "p");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("v1")
        .query(&mut con)
        .unwrap();
    let asleep = wait_all_asleep(&cluster, &rt, 3);
    let gid = asleep.table.shards[0].group_id;
    let old = asleep.leader_of(gid).expect("shard 0 has a leader");
    cluster.pause_node(old).unwrap();
    let t = Instant::now();
    loop {
        let r: redis::RedisResult<()> = redis::cmd("SET")
            .arg(&key)
            .arg("v2")
            .query(&mut connect(&cluster));
        if r.is_ok() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no write to group {gid} within 20 s of pausing its sleeping leader: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "group {gid} took a write {:?} after its sleeping leader was paused",
        t.elapsed()
    );
    cluster.resume_node(old).unwrap();
    for _ in 0..20 {
        match direct_read(&cluster, &rt, old, gid, &key, true) {
            Ok(v) => assert_eq!(
                v,
                bulk("v2"),
                "the resumed old leader answered a stale read"
            ),
            Err(e) => eprintln!("the resumed old leader refused: {e}"),
        }
    }
    let got: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query(&mut connect(&cluster))
        .unwrap();
    assert_eq!(got.as_deref(), Some("v2"));
    cluster.shutdown();
}
