//! Replication end to end, against real etcd and real `shoal node` /
//! `shoal router` processes: writes survive a leader's SIGKILL, a shard
//! without a majority answers `-CLUSTERDOWN` in bounded time, a restarted
//! node catches up (from the log, or by snapshot when it fell far behind),
//! a running replica caught up by snapshot answers from it, not from the
//! rows its row cache held before, and a large group's snapshots wait for
//! as much log as they hold.

mod common;

use std::time::{Duration, Instant};

use redis::{Connection, RedisResult};
use shoal::config::RaftEngine;
use shoal::devcluster::{ClusterOpts, LocalCluster};
use shoal::meta::descriptor::TableDescriptor;
use shoal::slot::slot;

use common::leaders;

fn start(dir: &tempfile::TempDir, shards: u32, node_args: &[&str]) -> LocalCluster {
    start_on(dir, shards, node_args, None)
}

/// [`start`] with table `default` on `engine` (none: the router's default).
fn start_on(
    dir: &tempfile::TempDir,
    shards: u32,
    node_args: &[&str],
    engine: Option<RaftEngine>,
) -> LocalCluster {
    let mut opts = ClusterOpts::new(env!("CARGO_BIN_EXE_shoal"), dir.path());
    opts.default_shards = shards;
    opts.node_args = node_args.iter().map(|s| s.to_string()).collect();
    if let Some(engine) = engine {
        opts.router_args = vec!["--default-engine".into(), engine.as_str().into()];
    }
    LocalCluster::start(opts).expect("cluster starts")
}

fn connect(cluster: &LocalCluster) -> Connection {
    let client = redis::Client::open(format!("redis://{}/", cluster.router_addr())).unwrap();
    let con = client.get_connection().unwrap();
    con.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    con
}

fn set(con: &mut Connection, k: &str, v: &str) -> RedisResult<()> {
    redis::cmd("SET").arg(k).arg(v).query(con)
}

fn get(con: &mut Connection, k: &str) -> RedisResult<Option<String>> {
    redis::cmd("GET").arg(k).query(con)
}

/// Keys of the form `<prefix><n>` that fall in shard `shard` of `table`.
fn keys_in_shard(table: &TableDescriptor, shard: usize, prefix: &str, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| table.shard_for_slot(slot(k.as_bytes())) == shard)
        .take(n)
        .collect()
}

fn read_all(con: &mut Connection, keys: &[(String, String)]) {
    for (k, v) in keys {
        assert_eq!(get(con, k).unwrap().as_deref(), Some(v.as_str()), "key {k}");
    }
}

/// Every key reads back its value through a new connection, retrying while
/// the remaining nodes elect leaders (up to 30 s in all).
fn read_all_eventually(cluster: &mut LocalCluster, keys: &[(String, String)]) {
    let mut con = connect(cluster);
    let deadline = Instant::now() + Duration::from_secs(30);
    for (k, v) in keys {
        loop {
            match get(&mut con, k) {
                Ok(got) => {
                    assert_eq!(got.as_deref(), Some(v.as_str()), "key {k}");
                    break;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("retrying {k}: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("{k}: {e}\n{}", cluster.logs()),
            }
        }
    }
}

#[test]
fn writes_survive_leader_kill_and_restarted_node_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(&dir, 8, &[]);
    let mut con = connect(&cluster);

    let mut written = Vec::new();
    for i in 0..1000 {
        let (k, v) = (format!("key:{i}"), format!("value-{i}"));
        set(&mut con, &k, &v).unwrap();
        written.push((k, v));
    }
    read_all(&mut con, &written);

    // SIGKILL the leader of shard 0.
    let (table, leaders) = leaders(&cluster);
    let victim = leaders[&table.shards[0].group_id];
    cluster.kill_node(victim).unwrap();
    let killed_at = Instant::now();

    // Writes to that shard succeed again within a few seconds.
    let probe = keys_in_shard(&table, 0, "after-kill:", 1).remove(0);
    loop {
        match set(&mut con, &probe, "x") {
            Ok(()) => break,
            Err(e) => {
                assert!(
                    killed_at.elapsed() < Duration::from_secs(20),
                    "no write to shard 0 for 20 s after killing its leader: {e}\n{}",
                    cluster.logs()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    let failover = killed_at.elapsed();
    eprintln!("failover of shard 0 took {failover:?}");

    // Every acknowledged key still reads back, and more writes go everywhere.
    read_all(&mut con, &written);
    for i in 0..200 {
        let (k, v) = (format!("while-down:{i}"), format!("v{i}"));
        set(&mut con, &k, &v).unwrap();
        written.push((k, v));
    }

    // Restart the killed node, then stop one of the others: the majority now
    // includes the restarted node, which must have caught up.
    cluster.start_node(victim).unwrap();
    let other = (1..=3).find(|n| *n != victim).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    cluster.stop_node(other).unwrap();
    read_all_eventually(&mut cluster, &written);
}

#[test]
fn shard_without_majority_answers_clusterdown_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(&dir, 2, &[]);
    let mut con = connect(&cluster);
    set(&mut con, "k", "before").unwrap();

    cluster.stop_node(1).unwrap();
    cluster.stop_node(2).unwrap();

    for attempt in ["SET", "GET"] {
        let started = Instant::now();
        let result: RedisResult<Option<String>> = if attempt == "SET" {
            redis::cmd("SET").arg("k").arg("during").query(&mut con)
        } else {
            redis::cmd("GET").arg("k").query(&mut con)
        };
        let err = result.expect_err("no majority: the command must fail");
        assert_eq!(err.code(), Some("CLUSTERDOWN"), "{attempt}: {err}");
        assert!(
            err.to_string().contains("has no quorum"),
            "{attempt}: {err}"
        );
        // The router's request timeout is 5 s; allow for a slow machine.
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{attempt} took {:?}",
            started.elapsed()
        );
    }

    // A majority again: writes and reads succeed.
    cluster.start_node(2).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match set(&mut con, "k", "after") {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for quorum: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("no recovery: {e}\n{}", cluster.logs()),
        }
    }
    assert_eq!(get(&mut con, "k").unwrap().as_deref(), Some("after"));
}

/// One shard, a tiny snapshot threshold: the log behind a snapshot is
/// purged quickly, so a replica that missed it can only catch up by
/// snapshot. Returns the cluster, a connection, the leader and a follower.
fn snapshot_cluster(dir: &tempfile::TempDir) -> (LocalCluster, Connection, u64, u64) {
    snapshot_cluster_with(dir, &[])
}

/// [`snapshot_cluster`] with more node arguments.
fn snapshot_cluster_with(
    dir: &tempfile::TempDir,
    args: &[&str],
) -> (LocalCluster, Connection, u64, u64) {
    // openraft's snapshot policy (`--snapshot-threshold`, the deferred
    // large snapshots and their gauges); the batch engine's compaction and
    // snapshots are tested in `shard::batch`.
    let mut node_args = vec!["--snapshot-threshold", "20"];
    node_args.extend_from_slice(args);
    let cluster = start_on(dir, 1, &node_args, Some(RaftEngine::Openraft));
    let con = connect(&cluster);
    let (table, leaders) = leaders(&cluster);
    let leader = leaders[&table.shards[0].group_id];
    let lagging = (1..=3).find(|n| *n != leader).unwrap();
    (cluster, con, leader, lagging)
}

/// Snapshots node `id` has installed, from its log (every start of it).
fn snapshot_installs(cluster: &LocalCluster, id: u64) -> usize {
    let log = cluster.node_dir(id).join(format!("node-{id}.log"));
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("snapshot installed")
        .count()
}

/// Wait (up to 30 s) until node `id` has installed more than `before`
/// snapshots.
fn wait_for_install(cluster: &mut LocalCluster, id: u64, before: usize) {
    let installed = common::wait_until(Duration::from_secs(30), || {
        snapshot_installs(cluster, id) > before
    });
    assert!(
        installed,
        "node {id} never installed a snapshot\n{}",
        cluster.logs()
    );
}

#[test]
fn lagging_replica_catches_up_by_snapshot_install() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, mut con, leader, lagging) = snapshot_cluster(&dir);
    cluster.stop_node(lagging).unwrap();

    let mut written = Vec::new();
    for i in 0..300 {
        let (k, v) = (format!("snap:{i}"), format!("v{i}"));
        set(&mut con, &k, &v).unwrap();
        written.push((k, v));
    }

    cluster.start_node(lagging).unwrap();
    wait_for_install(&mut cluster, lagging, 0);

    // Leave the caught-up replica in the majority, and read everything.
    cluster.stop_node(leader).unwrap();
    read_all_eventually(&mut cluster, &written);
}

/// A replica that kept running (paused, not restarted) with rows in its
/// row cache, then caught up by a snapshot that deleted and rewrote them,
/// answers from the snapshot, never from what it had cached before.
#[test]
fn a_snapshot_install_replaces_what_a_running_replica_cached() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, mut con, leader, lagging) = snapshot_cluster(&dir);
    let other = (1..=3).find(|n| *n != leader && *n != lagging).unwrap();

    // Every replica applies these and caches them.
    for i in 0..40 {
        set(&mut con, &format!("c:{i}"), &format!("old{i}")).unwrap();
    }
    // Let the lagging replica apply the old values before it stops.
    std::thread::sleep(Duration::from_secs(1));
    let before = snapshot_installs(&cluster, lagging);
    cluster.pause_node(lagging).unwrap();
    for i in 0..40 {
        if i < 10 {
            let n: i64 = redis::cmd("DEL")
                .arg(format!("c:{i}"))
                .query(&mut con)
                .unwrap();
            assert_eq!(n, 1);
        } else {
            set(&mut con, &format!("c:{i}"), &format!("new{i}")).unwrap();
        }
    }
    // Enough entries past the snapshot threshold that the log the paused
    // replica needs is purged.
    for i in 0..300 {
        set(&mut con, &format!("fill:{i}"), "x").unwrap();
    }
    cluster.resume_node(lagging).unwrap();
    wait_for_install(&mut cluster, lagging, before);

    // Only the caught-up replica is left: READONLY reads are its answers.
    cluster.stop_node(leader).unwrap();
    cluster.stop_node(other).unwrap();
    let mut ro = connect(&cluster);
    let _: () = redis::cmd("READONLY").query(&mut ro).unwrap();
    for i in 0..40 {
        let key = format!("c:{i}");
        let want = (i >= 10).then(|| format!("new{i}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match get(&mut ro, &key) {
                Ok(got) => {
                    assert_eq!(got, want, "{key} on node {lagging}");
                    break;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("retrying {key}: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("{key}: {e}\n{}", cluster.logs()),
            }
        }
    }
}

/// The one group's snapshot index, purged index and deferred builds, as
/// node `id`'s /metrics shows them.
fn snapshot_gauges(cluster: &LocalCluster, id: u64) -> (f64, f64, f64) {
    let addr = &cluster.metrics_addrs()[&format!("node-{id}")];
    let s = common::samples(&common::http_get(addr, "/metrics").1);
    (
        common::total(&s, "shoal_group_snapshot_index"),
        common::total(&s, "shoal_group_purged_index"),
        common::total(&s, "shoal_snapshots_total{event=\"deferred\"}"),
    )
}

/// A group whose snapshot is over 1 MiB: the builds openraft asks for
/// every 20 entries wait until the log since is as large as that snapshot
/// (counted as deferred on /metrics, the snapshot and purged index standing
/// still), then one is built and the log behind it purged, and a replica
/// that missed that log catches up by the snapshot, with every key.
#[test]
fn a_large_groups_snapshots_wait_for_as_much_log_and_still_catch_a_replica_up() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, mut con, leader, lagging) =
        snapshot_cluster_with(&dir, &["--metrics-listen", "127.0.0.1:0"]);
    let big = |round: usize| format!("{round}").repeat(40 << 10);
    let mut written = Vec::new();
    // 60 values of 40 KiB: snapshots are built at the asks near entries
    // 20 and 40 (at the first the group is under 1 MiB), the one near 60
    // is deferred.
    for i in 0..60 {
        set(&mut con, &format!("big:{i}"), &big(1)).unwrap();
    }
    let mut at = (0.0, 0.0, 0.0);
    assert!(
        common::wait_until(Duration::from_secs(30), || {
            at = snapshot_gauges(&cluster, leader);
            at.0 >= 30.0 && at.2 >= 1.0
        }),
        "no second snapshot and deferred build: {at:?}\n{}",
        cluster.logs()
    );
    let (snapshot, purged, deferred) = at;

    // 100 small writes, five more asks: about 10 KB of log, nothing built.
    cluster.stop_node(lagging).unwrap();
    for i in 0..100 {
        set(&mut con, &format!("small:{i}"), "v").unwrap();
        written.push((format!("small:{i}"), "v".to_string()));
    }
    std::thread::sleep(Duration::from_secs(1));
    let now = snapshot_gauges(&cluster, leader);
    assert_eq!((now.0, now.1), (snapshot, purged), "rebuilt too early");
    assert!(now.2 >= deferred + 4.0, "asks not deferred: {now:?}");

    // As much log again as the group holds: built, and the log purged past
    // what the stopped replica has.
    for i in 0..60 {
        set(&mut con, &format!("big:{i}"), &big(2)).unwrap();
        written.push((format!("big:{i}"), big(2)));
    }
    assert!(
        common::wait_until(Duration::from_secs(30), || {
            at = snapshot_gauges(&cluster, leader);
            at.0 > snapshot + 100.0 && at.1 > snapshot + 100.0
        }),
        "no snapshot after as much log: {at:?}\n{}",
        cluster.logs()
    );
    let before = snapshot_installs(&cluster, lagging);
    cluster.start_node(lagging).unwrap();
    wait_for_install(&mut cluster, lagging, before);
    cluster.stop_node(leader).unwrap();
    read_all_eventually(&mut cluster, &written);
}
