//! Tables on the batch engine (`TABLE.CREATE ... ENGINE batch`, or the
//! router's `--default-engine batch`), end to end against real etcd, real
//! node and router processes, real RocksDB with fsync and a real Redis
//! client: writes and reads on every shard, a cross-shard MULTI, a node
//! killed and restarted (its replicas reopen from their own logs and
//! serve), a batch table beside an openraft one, and a drop that removes
//! every replica and its rows.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::{connect, ok, rows_for_groups, run, wait_for_cluster};
use redis::Connection;
use shoal::cluster::client::{ClientConfig, ShardClient};
use shoal::cluster::routes;
use shoal::devcluster::LocalCluster;
use shoal::meta::etcd::Meta;

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Runtime::new().unwrap().block_on(f)
}

/// The group ids of `table`'s shards, from etcd.
fn group_ids(cluster: &LocalCluster, table: &str) -> Vec<u64> {
    let etcd = cluster.etcd_url();
    let table = table.to_string();
    block(async move {
        let m = Meta::connect(&[etcd], "default").await.unwrap();
        let (t, _) = m.get_table(&table).await.unwrap().expect("table exists");
        t.shards.iter().map(|s| s.group_id).collect()
    })
}

/// Run `f` with a client of the cluster's etcd.
fn etcd<F: std::future::Future<Output = Result<(), etcd_client::Error>>>(
    cluster: &LocalCluster,
    f: impl FnOnce(etcd_client::Client) -> F,
) {
    let url = cluster.etcd_url();
    block(async move {
        let c = etcd_client::Client::connect([url], None).await.unwrap();
        f(c).await.unwrap()
    })
}

/// Group ids each live node hosts, with the role it reports for each.
fn hosted(cluster: &LocalCluster) -> HashMap<u64, HashMap<u64, String>> {
    let etcd = cluster.etcd_url();
    block(async move {
        let m = Meta::connect(&[etcd], "default").await.unwrap();
        let client = ShardClient::new(routes::follow(&m).await.unwrap(), ClientConfig::default());
        let mut out = HashMap::new();
        for node in m.live_nodes().await.unwrap().keys() {
            if let Ok(s) = client.node_status(*node, vec![]).await {
                out.insert(
                    *node,
                    s.groups.into_iter().map(|g| (g.group_id, g.role)).collect(),
                );
            }
        }
        out
    })
}

fn get(con: &mut Connection, key: &str) -> Option<String> {
    redis::from_redis_value(&run(con, &["GET", key]).unwrap()).unwrap()
}

fn engine_of(con: &mut Connection, table: &str) -> String {
    let d = common::describe_table(con, table);
    redis::from_redis_value(&d["engine"]).unwrap()
}

/// Every key `k:0..n` holds `v<i>`.
fn assert_all(con: &mut Connection, n: usize, what: &str) {
    for i in 0..n {
        assert_eq!(
            get(con, &format!("k:{i}")).as_deref(),
            Some(format!("v{i}").as_str()),
            "k:{i} {what}"
        );
    }
}

#[test]
fn a_batch_table_serves_survives_a_node_and_drops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster =
        common::cluster_with_routers(dir.path(), 3, 4, 3, &["--default-engine", "batch"]);
    let mut con = connect(&cluster.router_addr());

    // `default` was made on the router's default engine; a table may
    // name its own.
    assert_eq!(engine_of(&mut con, "default"), "batch");
    ok(
        &mut con,
        &["TABLE.CREATE", "old", "2", "3", "ENGINE", "openraft"],
    );
    assert_eq!(engine_of(&mut con, "old"), "openraft");
    let e = run(
        &mut con,
        &["TABLE.CREATE", "x", "2", "3", "ENGINE", "paxos"],
    )
    .unwrap_err();
    assert_eq!(
        (e.code(), e.detail()),
        (Some("ERR"), Some("ENGINE must be openraft or batch"))
    );
    // A live node too old to know the batch engine (its record names no
    // engines) would host a batch table's replicas as openraft groups: no
    // batch table is made while it runs.
    let live_99 = "/shoal/default/live/99";
    etcd(&cluster, |mut c| async move {
        let old = r#"{"rpc_addr":"127.0.0.1:1","started_at":0,"version":"0.1.0"}"#;
        c.put(live_99, old, None).await.map(|_| ())
    });
    let e = run(
        &mut con,
        &["TABLE.CREATE", "y", "2", "3", "ENGINE", "batch"],
    )
    .unwrap_err();
    assert!(
        e.detail()
            .unwrap_or_default()
            .starts_with("node 99 runs a version without the batch engine"),
        "{e:?}"
    );
    etcd(&cluster, |mut c| async move {
        c.delete(live_99, None).await.map(|_| ())
    });

    // Writes and reads land on every shard; INCR is applied once each.
    for i in 0..200 {
        ok(&mut con, &["SET", &format!("k:{i}"), &format!("v{i}")]);
    }
    for _ in 0..50 {
        run(&mut con, &["INCR", "counter"]).unwrap();
    }
    assert_all(&mut con, 200, "after the writes");
    assert_eq!(get(&mut con, "counter").as_deref(), Some("50"));
    // A MULTI across shards commits on all of them (two-phase commit).
    let keys: Vec<String> = (0..8).map(|i| format!("tx:{i}")).collect();
    let mut pipe = redis::pipe();
    pipe.atomic();
    for k in &keys {
        pipe.set(k, "committed");
    }
    let _: () = pipe.query(&mut con).unwrap();
    for k in &keys {
        assert_eq!(get(&mut con, k).as_deref(), Some("committed"), "{k}");
    }
    // The openraft table beside it.
    ok(&mut con, &["TABLE.USE", "old"]);
    ok(&mut con, &["SET", "k:1", "in-old"]);
    ok(&mut con, &["TABLE.USE", "default"]);
    assert_eq!(get(&mut con, "k:1").as_deref(), Some("v1"));

    // Each of `default`'s groups has a leader that its peers name.
    let gids = group_ids(&cluster, "default");
    wait_for_cluster("every batch group has one leader", &mut cluster, |c| {
        let h = hosted(c);
        gids.iter().all(|g| {
            h.values()
                .filter(|groups| groups.get(g).map(String::as_str) == Some("leader"))
                .count()
                == 1
        })
    });

    // A node killed: the other two elect leaders where it led, and
    // nothing acknowledged is lost.
    cluster.kill_node(1).unwrap();
    for i in 200..300 {
        ok(&mut con, &["SET", &format!("k:{i}"), &format!("v{i}")]);
    }
    for _ in 0..10 {
        run(&mut con, &["INCR", "counter"]).unwrap();
    }
    assert_all(&mut con, 300, "with node 1 down");
    // Back, it reopens its replicas from its own log and catches up;
    // with node 2 stopped it is needed for every quorum.
    cluster.start_node(1).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    cluster.stop_node(2).unwrap();
    for i in 300..320 {
        ok(&mut con, &["SET", &format!("k:{i}"), &format!("v{i}")]);
    }
    assert_all(&mut con, 320, "with node 1 back and node 2 down");
    assert_eq!(get(&mut con, "counter").as_deref(), Some("60"));
    cluster.start_node(2).unwrap();

    // Drop: every replica leaves its node, and its rows with it.
    ok(
        &mut con,
        &["TABLE.CREATE", "gone", "2", "3", "ENGINE", "batch"],
    );
    ok(&mut con, &["TABLE.USE", "gone"]);
    for i in 0..50 {
        ok(&mut con, &["SET", &format!("g:{i}"), "x"]);
    }
    let dropped = group_ids(&cluster, "gone");
    ok(&mut con, &["TABLE.DROP", "gone"]);
    wait_for_cluster("no node hosts a dropped group", &mut cluster, |c| {
        let h = hosted(c);
        h.len() == 3
            && h.values()
                .all(|g| dropped.iter().all(|id| !g.contains_key(id)))
    });
    cluster.stop_node(3).unwrap();
    assert_eq!(rows_for_groups(&cluster.node_dir(3), &dropped), 0);
    let kept: BTreeSet<u64> = gids.iter().copied().collect();
    assert!(
        rows_for_groups(&cluster.node_dir(3), &kept.into_iter().collect::<Vec<_>>()) > 0,
        "the other table's rows stay"
    );
    cluster.start_node(3).unwrap();
    ok(&mut con, &["TABLE.USE", "default"]);
    assert_all(&mut con, 320, "at the end");
}

/// One node, one replica per group (`shoal dev` on one node): each group
/// elects itself, serves, and after a restart reopens from its own log.
#[test]
fn a_one_replica_batch_table_serves_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = common::cluster_with(
        dir.path(),
        (1, 2, 1),
        &common::METRICS_NODE_ARGS,
        &["--default-engine", "batch"],
    );
    let mut con = connect(&cluster.router_addr());
    assert_eq!(engine_of(&mut con, "default"), "batch");
    for i in 0..50 {
        ok(&mut con, &["SET", &format!("k:{i}"), &format!("v{i}")]);
    }
    run(&mut con, &["INCR", "n"]).unwrap();
    // The node's /metrics: each batch group's leader, term, log end,
    // applied index, sleep and proposals, and its loop's counters.
    let addr = cluster.metrics_addrs()["node-1"].clone();
    let m = common::samples(&common::http_get(&addr, "/metrics").1);
    for gid in group_ids(&cluster, "default") {
        let of = |name: &str| {
            m.iter()
                .find(|(k, _)| k.starts_with(&format!("{name}{{group=\"{gid}\",")))
                .map(|(_, v)| *v)
                .unwrap_or_else(|| panic!("no {name} for group {gid}"))
        };
        assert_eq!(of("shoal_group_leader"), 1.0, "group {gid}");
        assert!(of("shoal_group_term") >= 1.0, "group {gid}");
        assert!(of("shoal_group_applied_index") >= 2.0, "group {gid}");
        // The log's end as of the loop's last tick (50 ms).
        assert!(of("shoal_group_last_log_index") >= 2.0, "group {gid}");
        assert_eq!(of("shoal_group_hibernating"), 0.0, "group {gid}");
    }
    assert!(m
        .iter()
        .any(|(k, _)| k.starts_with("shoal_batch_hibernated_total")));
    // 51 writes, one after the other: one proposal each, and the few the
    // node makes itself.
    let proposals = common::total(&m, "shoal_group_proposals_total");
    assert!((51.0..=60.0).contains(&proposals), "{proposals} proposals");
    let syncs = common::total(&m, "shoal_batch_syncs_total");
    assert!(syncs >= 1.0, "{syncs} syncs");
    assert!(common::total(&m, "shoal_batch_entries_total") >= proposals);
    assert!(common::total(&m, "shoal_batch_applies_total") >= 1.0);
    cluster.stop_node(1).unwrap();
    cluster.start_node(1).unwrap();
    let mut con = connect(&cluster.router_addr());
    // The first requests after the restart may find no leader yet.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while run(&mut con, &["GET", "n"]).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "no leader after the restart"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    run(&mut con, &["INCR", "n"]).unwrap();
    assert_eq!(get(&mut con, "n").as_deref(), Some("2"));
    assert_all(&mut con, 50, "after the restart");
    // A blocked client is woken by a push: the loop applies to the state
    // machine whose waits the node registered.
    let addr = cluster.router_addr();
    let blocked = std::thread::spawn(move || {
        let mut c = connect(&addr);
        run(&mut c, &["BLPOP", "queue", "20"]).unwrap()
    });
    std::thread::sleep(Duration::from_millis(500));
    let pushed = std::time::Instant::now();
    run(&mut con, &["LPUSH", "queue", "job"]).unwrap();
    let got: Vec<String> = redis::from_redis_value(&blocked.join().unwrap()).unwrap();
    assert_eq!(got, vec!["queue".to_string(), "job".to_string()]);
    // Not found by the router's renewal of the wait (every 10 s): woken.
    assert!(
        pushed.elapsed() < Duration::from_secs(5),
        "the blocked client waited {:?} after the push",
        pushed.elapsed()
    );
}
