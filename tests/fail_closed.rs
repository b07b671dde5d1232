//! Fail closed: no metadata mistake deletes data, and corruption is
//! refused, not installed. Each test runs a real etcd, real `shoal node`
//! processes and a real router, and changes etcd by hand the way an
//! operator's mistake, a restore or a migration script would.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{wait_until, Conn};
use shoal::config::RaftEngine;
use shoal::devcluster::{free_port, ClusterOpts, LocalCluster};

/// Run one etcd call on a throwaway runtime.
fn etcd<T>(
    url: &str,
    f: impl for<'a> FnOnce(
        &'a mut etcd_client::KvClient,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>,
) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = etcd_client::Client::connect([url], None).await.unwrap();
        let mut kv = client.kv_client();
        f(&mut kv).await
    })
}

fn etcd_get(url: &str, key: &str) -> Option<Vec<u8>> {
    let key = key.to_string();
    etcd(url, |kv| {
        Box::pin(async move {
            let r = kv.get(key, None).await.unwrap();
            r.kvs().first().map(|kv| kv.value().to_vec())
        })
    })
}

fn etcd_keys(url: &str, prefix: &str) -> Vec<String> {
    let prefix = prefix.to_string();
    etcd(url, |kv| {
        Box::pin(async move {
            let r = kv
                .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
                .await
                .unwrap();
            r.kvs()
                .iter()
                .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
                .collect()
        })
    })
}

fn etcd_put(url: &str, key: &str, value: Vec<u8>) {
    let key = key.to_string();
    etcd(url, |kv| {
        Box::pin(async move {
            kv.put(key, value, None).await.unwrap();
        })
    })
}

fn etcd_del(url: &str, key: &str) {
    let key = key.to_string();
    etcd(url, |kv| {
        Box::pin(async move {
            kv.delete(key, None).await.unwrap();
        })
    })
}

fn start(dir: &std::path::Path, shards: u32, node_args: &[&str]) -> LocalCluster {
    start_on(dir, shards, node_args, None)
}

/// [`start`] with table `default` on `engine` (none: the router's default).
fn start_on(
    dir: &std::path::Path,
    shards: u32,
    node_args: &[&str],
    engine: Option<RaftEngine>,
) -> LocalCluster {
    let mut opts = ClusterOpts::new(env!("CARGO_BIN_EXE_shoal"), dir);
    opts.nodes = 3;
    opts.default_shards = shards;
    opts.default_replicas = 3;
    opts.node_args = vec!["--log-level".into(), "info".into()];
    opts.node_args
        .extend(node_args.iter().map(|s| s.to_string()));
    opts.router_args = vec!["--log-level".into(), "warn".into()];
    if let Some(engine) = engine {
        opts.router_args
            .extend(["--default-engine".into(), engine.as_str().into()]);
    }
    LocalCluster::start(opts).expect("cluster starts")
}

fn write_keys(c: &mut Conn, prefix: &str, n: usize) {
    for i in 0..n {
        let k = format!("{prefix}{i}");
        let v = format!("value-{i}");
        assert_eq!(c.cmd(&[b"SET", k.as_bytes(), v.as_bytes()]), b"+OK\r\n");
    }
}

/// Every key reads back with its value (retrying while the cluster
/// settles).
fn all_keys_read_back(addr: &str, prefix: &str, n: usize, within: Duration) {
    let mut missing = Vec::new();
    let ok = wait_until(within, || {
        let mut c = Conn::connect(addr);
        missing = (0..n)
            .filter(|i| {
                let k = format!("{prefix}{i}");
                let v = format!("value-{i}");
                let want = format!("${}\r\n{v}\r\n", v.len());
                c.cmd(&[b"GET", k.as_bytes()]) != want.as_bytes()
            })
            .collect();
        missing.is_empty()
    });
    assert!(
        ok,
        "{} of {n} keys do not read back, e.g. {prefix}{:?}",
        missing.len(),
        missing.first()
    );
}

fn status(cluster: &LocalCluster) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["status", "--etcd", &cluster.etcd_url()])
        .output()
        .expect("shoal status runs");
    assert!(
        out.status.success(),
        "shoal status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Everything node `id` logged, across restarts.
fn node_log(cluster: &LocalCluster, id: u64) -> String {
    let dir = cluster.node_dir(id);
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect()
}

fn deletions(cluster: &LocalCluster) -> Vec<(u64, usize)> {
    (1..=3)
        .map(|id| {
            (
                id,
                node_log(cluster, id)
                    .matches("replica removed and its data deleted")
                    .count(),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Once all `replicas` are caught up, stop every node but `survivor` and
/// read `<prefix>0..n` back with READONLY: only the survivor's replicas can
/// answer, so this checks its own data.
fn only_survivor_serves_every_key(
    cluster: &mut LocalCluster,
    survivor: u64,
    replicas: usize,
    prefix: &str,
    n: usize,
) {
    let ok = wait_until(Duration::from_secs(30), || {
        status(cluster).matches("lag=0").count() == replicas
    });
    assert!(ok, "{}", status(cluster));
    for id in (1..=3).filter(|id| *id != survivor) {
        cluster.stop_node(id).unwrap();
    }
    let mut c = Conn::connect(&cluster.router_addr());
    assert_eq!(c.cmd(&[b"READONLY"]), b"+OK\r\n");
    for i in 0..n {
        let k = format!("{prefix}{i}");
        let v = format!("value-{i}");
        let want = format!("${}\r\n{v}\r\n", v.len());
        let mut got = Vec::new();
        let ok = wait_until(Duration::from_secs(20), || {
            got = c.cmd(&[b"GET", k.as_bytes()]);
            got == want.as_bytes()
        });
        assert!(
            ok,
            "node {survivor} lacks {k}: {}",
            String::from_utf8_lossy(&got)
        );
    }
    // A write command that only reads (BITFIELD with GETs) reads there
    // too, like BITFIELD_RO: `v` of "value-0" is 118. Checked once a
    // linearizable read fails (the survivor's lease over), so only a read
    // from any replica can answer.
    let k = format!("{prefix}0");
    let mut strict = Conn::connect(&cluster.router_addr());
    let refused = wait_until(Duration::from_secs(60), || {
        strict.cmd(&[b"GET", k.as_bytes()]).starts_with(b"-")
    });
    assert!(refused, "a linearizable read still answers");
    for cmd in [&b"BITFIELD"[..], b"BITFIELD_RO"] {
        let got = c.cmd(&[cmd, k.as_bytes(), b"GET", b"u8", b"0"]);
        assert_eq!(got, b"*1\r\n:118\r\n", "{}", String::from_utf8_lossy(&got));
    }
}

#[test]
fn a_deleted_and_restored_descriptor_loses_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path(), 4, &[]);
    let addr = cluster.router_addr();
    let mut c = Conn::connect(&addr);
    write_keys(&mut c, "k", 300);
    let url = cluster.etcd_url();
    let key = "/shoal/default/tables/default";
    let saved = etcd_get(&url, key).expect("descriptor exists");

    // An operator's wrong `etcdctl del`.
    etcd_del(&url, key);
    let mut last = String::new();
    let shown = wait_until(Duration::from_secs(30), || {
        last = status(&cluster);
        last.contains("orphaned replicas: 12")
    });
    assert!(
        shown,
        "shoal status does not list the 12 replicas as orphaned:\n{last}"
    );
    assert!(last.contains("orphaned (kept)"), "{last}");
    let info = Conn::connect(&addr).cmd(&[b"INFO", b"cluster"]);
    let info = String::from_utf8_lossy(&info);
    assert!(info.contains("orphaned_replicas:12"), "{info}");
    assert!(info.contains("orphaned (kept)"), "{info}");
    // The error is logged once per group, not on every pass.
    std::thread::sleep(Duration::from_secs(7));
    for id in 1..=3 {
        let log = node_log(&cluster, id);
        let n = log.matches("replica orphaned (kept, not deleted)").count();
        assert_eq!(n, 4, "node {id} logged {n} orphan errors for 4 groups");
    }
    assert_eq!(deletions(&cluster), vec![], "a replica was deleted");

    // Put back: the same groups are simply in use again.
    etcd_put(&url, key, saved);
    all_keys_read_back(&addr, "k", 300, Duration::from_secs(60));
    let ok = wait_until(Duration::from_secs(30), || {
        status(&cluster).contains("orphaned replicas: 0")
    });
    assert!(ok, "{}", status(&cluster));
    assert_eq!(deletions(&cluster), vec![]);
    // And the cluster takes writes again.
    write_keys(&mut Conn::connect(&addr), "after", 20);
    assert!(cluster.unexpected_exits().is_empty());
}

#[test]
fn an_undecodable_descriptor_deletes_nothing_and_shows_in_status() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path(), 2, &[]);
    let addr = cluster.router_addr();
    write_keys(&mut Conn::connect(&addr), "u", 100);
    let url = cluster.etcd_url();
    let key = "/shoal/default/tables/default";
    let saved = etcd_get(&url, key).unwrap();

    // A migration script writes a record this version cannot read.
    etcd_put(&url, key, b"{\"name\": \"default\", \"shards\": 7".to_vec());
    let mut last = String::new();
    let shown = wait_until(Duration::from_secs(30), || {
        last = status(&cluster);
        last.contains("unreadable table records") && last.contains("orphaned replicas: 6")
    });
    assert!(shown, "{last}");
    assert!(last.contains("tables/default: ERROR"), "{last}");
    assert!(last.contains("unreadable"), "{last}");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(deletions(&cluster), vec![]);
    assert!(node_log(&cluster, 1).contains("table record is unreadable"));
    // Clients are told, not answered as if the table were empty or gone.
    let got = Conn::connect(&addr).cmd(&[b"GET", b"u1"]);
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.starts_with("-CLUSTERDOWN the metadata record of table 'default' is unreadable"),
        "{got}"
    );

    etcd_put(&url, key, saved);
    all_keys_read_back(&addr, "u", 100, Duration::from_secs(60));
    assert_eq!(deletions(&cluster), vec![]);
    assert!(cluster.unexpected_exits().is_empty());
}

#[test]
fn a_node_started_with_a_wrong_cluster_refuses_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path(), 2, &[]);
    let addr = cluster.router_addr();
    write_keys(&mut Conn::connect(&addr), "w", 100);
    let url = cluster.etcd_url();
    let stamp = std::fs::read_to_string(cluster.node_dir(1).join("data").join("CLUSTER"))
        .expect("the data dir is stamped");
    assert!(stamp.contains("\"name\": \"default\""), "{stamp}");
    // Let every replica catch up before node 1 stops.
    let caught_up = wait_until(Duration::from_secs(30), || {
        let s = status(&cluster);
        s.matches("lag=0").count() == 6
    });
    assert!(caught_up, "{}", status(&cluster));
    cluster.stop_node(1).unwrap();

    // The operator mistypes --cluster: an empty prefix.
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["node", "--id", "1", "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(cluster.node_dir(1).join("data"))
        .args(["--etcd", &url, "--cluster", "defualt"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the node started against an empty prefix: {stderr}"
    );
    assert!(stderr.contains("refusing to start"), "{stderr}");
    assert!(stderr.contains("has no record of a cluster"), "{stderr}");
    assert!(stderr.contains("holds 2 replica(s)"), "{stderr}");
    assert!(
        etcd_keys(&url, "/shoal/defualt/").is_empty(),
        "the refused node wrote to the wrong prefix"
    );

    // Started right, it reopens both replicas with their data.
    cluster.start_node(1).unwrap();
    let reopened = wait_until(Duration::from_secs(20), || {
        node_log(&cluster, 1).contains("replicas=2")
    });
    assert!(
        reopened,
        "node 1 did not reopen its replicas:\n{}",
        node_log(&cluster, 1)
    );
    // Only node 1 left: its replicas answer READONLY reads with every key.
    only_survivor_serves_every_key(&mut cluster, 1, 6, "w", 100);
    assert_eq!(deletions(&cluster), vec![]);
}

#[test]
fn table_drop_deletes_every_replica_even_on_a_node_that_was_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path(), 1, &[]);
    let addr = cluster.router_addr();
    let mut c = Conn::connect(&addr);
    assert_eq!(c.cmd(&[b"TABLE.CREATE", b"gone", b"2", b"3"]), b"+OK\r\n");
    assert_eq!(c.cmd(&[b"TABLE.USE", b"gone"]), b"+OK\r\n");
    write_keys(&mut c, "g", 50);
    let url = cluster.etcd_url();
    cluster.stop_node(3).unwrap();

    assert_eq!(c.cmd(&[b"TABLE.DROP", b"gone"]), b"+OK\r\n");
    assert!(etcd_get(&url, "/shoal/default/tables/gone").is_none());
    // The tombstones outlive the descriptor while node 3 has not confirmed.
    let tombs = etcd_keys(&url, "/shoal/default/tombstones/");
    assert_eq!(tombs.len(), 2, "{tombs:?}");
    let ok = wait_until(Duration::from_secs(20), || {
        etcd_keys(&url, "/shoal/default/tombstones/")
            .iter()
            .all(|k| {
                let t = String::from_utf8(etcd_get(&url, k).unwrap_or_default()).unwrap();
                t.contains("\"nodes\":[3]")
            })
    });
    assert!(ok, "nodes 1 and 2 did not confirm");
    for id in [1, 2] {
        let n = node_log(&cluster, id)
            .matches("table 'gone' was dropped")
            .count();
        assert_eq!(n, 2, "node {id} deleted {n} of its 2 replicas of 'gone'");
    }

    cluster.start_node(3).unwrap();
    let ok = wait_until(Duration::from_secs(30), || {
        etcd_keys(&url, "/shoal/default/tombstones/").is_empty()
    });
    assert!(ok, "node 3 did not clean up: {}", node_log(&cluster, 3));
    let log = node_log(&cluster, 3);
    assert_eq!(log.matches("table 'gone' was dropped").count(), 2, "{log}");
    let s = status(&cluster);
    assert!(!s.contains("gone"), "something of 'gone' survives:\n{s}");
    assert!(s.contains("orphaned replicas: 0"), "{s}");
    // A table of the same name starts empty.
    assert_eq!(c.cmd(&[b"TABLE.CREATE", b"gone", b"2", b"3"]), b"+OK\r\n");
    assert_eq!(c.cmd(&[b"TABLE.USE", b"gone"]), b"+OK\r\n");
    assert_eq!(c.cmd(&[b"DBSIZE"]), b":0\r\n");
    assert!(cluster.unexpected_exits().is_empty());
}

/// A replica whose Raft stops on a fatal error (here a storage error of an
/// apply, by failpoint, on each replica of one group that applies the
/// write) says so: `shoal status` marks it STOPPED with why, `/metrics` has
/// `shoal_group_stopped` 1 for it and 0 for the others, and the other
/// group goes on. (The replica that never learns the write committed is
/// left a candidate without a quorum.)
#[test]
fn a_replica_stopped_by_a_storage_error_shows_in_status_and_metrics() {
    a_replica_stopped_by_a_storage_error_shows(RaftEngine::Openraft);
}

/// The same on the batch engine: the replica that cannot apply leaves its
/// node's loop alone; the loop and its other groups go on.
#[test]
fn a_batch_replica_stopped_by_a_storage_error_shows_in_status_and_metrics() {
    a_replica_stopped_by_a_storage_error_shows(RaftEngine::Batch);
}

fn a_replica_stopped_by_a_storage_error_shows(engine: RaftEngine) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_on(
        dir.path(),
        2,
        &[
            "--failpoint",
            "apply-fails-on-key",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        Some(engine),
    );
    let mut c = Conn::connect(&cluster.router_addr());
    let dead = b"failpoint:apply-fails";
    let ranges = shoal::meta::descriptor::slot_ranges(2);
    let shard_of = |key: &[u8]| {
        let slot = shoal::slot::slot(key);
        ranges
            .iter()
            .position(|[a, b]| (*a..=*b).contains(&slot))
            .unwrap()
    };
    let live = (0..)
        .map(|i| format!("other-{i}"))
        .find(|k| shard_of(k.as_bytes()) != shard_of(dead))
        .unwrap();
    assert_eq!(c.cmd(&[b"SET", live.as_bytes(), b"1"]), b"+OK\r\n");
    let reply = c.cmd(&[b"SET", dead, b"1"]);
    assert!(
        reply.starts_with(b"-"),
        "{}",
        String::from_utf8_lossy(&reply)
    );

    let mut st = String::new();
    let shown = wait_until(Duration::from_secs(30), || {
        st = status(&cluster);
        st.matches("STOPPED: ").count() >= 2
    });
    assert!(shown, "no majority of stopped replicas shown:\n{st}");
    assert!(st.contains("failpoint apply-fails-on-key"), "{st}");
    let stopped_lines: Vec<&str> = st.lines().filter(|l| l.contains("STOPPED")).collect();
    assert_eq!(stopped_lines.len(), 1, "one group's line: {st}");

    // Each node's metrics: a series per replica, 1 where `shoal status`
    // says STOPPED.
    let line = stopped_lines[0];
    let mut stopped_nodes = 0;
    for (name, addr) in cluster.metrics_addrs() {
        if !name.starts_with("node") {
            continue;
        }
        let (code, body) = common::http_get(&addr, "/metrics");
        assert_eq!(code, 200, "{name}");
        let values: Vec<&str> = body
            .lines()
            .filter(|l| l.starts_with("shoal_group_stopped{"))
            .map(|l| l.rsplit(' ').next().unwrap())
            .collect();
        let id = name.trim_start_matches("node-");
        let stopped = line.contains(&format!("{id}:shutdown STOPPED"));
        stopped_nodes += stopped as usize;
        let mut sorted = values.clone();
        sorted.sort();
        let want = if stopped { ["0", "1"] } else { ["0", "0"] };
        assert_eq!(sorted, want, "{name}: {body}");
    }
    assert!(stopped_nodes >= 2, "{st}");
    // The other group still takes writes.
    assert_eq!(c.cmd(&[b"SET", live.as_bytes(), b"2"]), b"+OK\r\n");
    assert_eq!(c.cmd(&[b"GET", live.as_bytes()]), b"$1\r\n2\r\n");
}

/// A one-shard cluster with small snapshots and `failpoint` armed on
/// every node, where node 3 was stopped after 10 writes and started again
/// after 300 (`{prefix}0`..`{prefix}299`), far past the snapshot threshold:
/// it can only catch up by a snapshot.
fn node_3_behind_a_snapshot(
    dir: &tempfile::TempDir,
    failpoint: &str,
    prefix: &str,
) -> (LocalCluster, Conn) {
    // openraft's stored snapshots; the batch engine keeps none (it copies
    // a group's data when a follower needs it), and checks every chunk it
    // receives (`shard::batch`).
    let mut cluster = start_on(
        dir.path(),
        1,
        &["--snapshot-threshold", "40", "--failpoint", failpoint],
        Some(RaftEngine::Openraft),
    );
    let mut c = Conn::connect(&cluster.router_addr());
    write_keys(&mut c, prefix, 10);
    cluster.stop_node(3).unwrap();
    write_keys(&mut c, prefix, 300);
    cluster.start_node(3).unwrap();
    (cluster, c)
}

/// A leader whose stored snapshot is found damaged when a follower needs
/// it builds a sound one there and then and sends that: the follower
/// catches up, and the group's replicas keep running (openraft takes "no
/// snapshot" at that point for a storage error and stops the group's Raft
/// on that node).
#[test]
fn a_damaged_stored_snapshot_is_rebuilt_for_the_follower_that_needs_it() {
    let dir = tempfile::tempdir().unwrap();
    // Each snapshot stored damaged on every node (as a disk that damaged
    // the stored value would leave it).
    let (mut cluster, mut c) = node_3_behind_a_snapshot(&dir, "snapshot-stored-damaged", "d");

    let ok = wait_until(Duration::from_secs(60), || {
        node_log(&cluster, 3).contains("snapshot installed")
    });
    let logs = || (1..=3).map(|id| node_log(&cluster, id)).collect::<String>();
    assert!(ok, "node 3 never installed a snapshot:\n{}", logs());
    assert!(
        logs().contains("stored snapshot is unusable"),
        "no leader found its stored snapshot damaged:\n{}",
        logs()
    );
    // The group still takes writes, and node 3 has every key.
    write_keys(&mut c, "e", 5);
    only_survivor_serves_every_key(&mut cluster, 3, 3, "d", 300);
}

#[test]
fn a_corrupted_snapshot_is_refused_and_the_replica_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    // Every node corrupts the first snapshot it sends.
    let (mut cluster, _) = node_3_behind_a_snapshot(&dir, "snapshot-send-corrupt", "s");

    // The first snapshot any leader sends is corrupted: whichever follower
    // got it (node 3, or one that lagged during the writes) refused it and
    // then installed a good one.
    let ok = wait_until(Duration::from_secs(60), || {
        (1..=3).any(|id| {
            let log = node_log(&cluster, id);
            match log.find("snapshot refused: snapshot checksum mismatch") {
                Some(at) => log[at..].contains("snapshot installed"),
                None => false,
            }
        })
    });
    assert!(
        ok,
        "no node refused the corrupt snapshot and then installed a good one:\n{}",
        (1..=3).map(|id| node_log(&cluster, id)).collect::<String>()
    );
    assert!(
        (1..=3).all(|id| !node_log(&cluster, id).contains("snapshot refused at install")),
        "a corrupt snapshot reached the state machine"
    );
    // Only node 3 left: READONLY reads come from its replica.
    only_survivor_serves_every_key(&mut cluster, 3, 3, "s", 300);
}
