//! Tables end to end against real etcd and real node/router processes:
//! create, describe, use, drop (no orphans in etcd or RocksDB), a node that
//! missed a drop, a creator killed half way, two routers, and every error
//! case leaving etcd unchanged.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::{connect, ok, rows_for_groups, run, wait_for_cluster};
use redis::{Connection, Value};
use shoal::cluster::client::{ClientConfig, ShardClient};
use shoal::cluster::routes;
use shoal::devcluster::{ClusterOpts, LocalCluster};
use shoal::meta::descriptor::TableDescriptor;
use shoal::meta::etcd::Meta;

fn start(dir: &tempfile::TempDir, router_config: Option<&str>) -> LocalCluster {
    let mut opts = ClusterOpts::new(env!("CARGO_BIN_EXE_shoal"), dir.path());
    opts.default_shards = 2;
    if let Some(text) = router_config {
        let path = dir.path().join("router-test.toml");
        std::fs::write(&path, text).unwrap();
        opts.router_args = vec!["--config".into(), path.display().to_string()];
    }
    LocalCluster::start(opts).expect("cluster starts")
}

/// The error reply as the server sent it: `CODE detail`.
fn err(con: &mut Connection, args: &[&str]) -> String {
    match run(con, args) {
        Err(e) => format!("{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or("")),
        Ok(v) => panic!("{args:?}: expected an error, got {v:?}"),
    }
}

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Runtime::new().unwrap().block_on(f)
}

async fn meta(cluster_etcd: &str) -> Meta {
    Meta::connect(&[cluster_etcd.to_string()], "default")
        .await
        .unwrap()
}

fn table(cluster: &LocalCluster, name: &str) -> Option<TableDescriptor> {
    let etcd = cluster.etcd_url();
    block(async move {
        meta(&etcd)
            .await
            .get_table(name)
            .await
            .unwrap()
            .map(|(t, _)| t)
    })
}

/// Every key under the cluster's `tables/` and `ids/` prefixes.
fn metadata(cluster: &LocalCluster) -> BTreeMap<String, Vec<u8>> {
    let etcd = cluster.etcd_url();
    block(async move {
        let m = meta(&etcd).await;
        let mut out = BTreeMap::new();
        for prefix in ["tables/", "ids/"] {
            for (k, (v, _)) in m.load_prefix(prefix).await.unwrap().entries {
                out.insert(format!("{prefix}{k}"), v);
            }
        }
        out
    })
}

/// Group ids hosted by each live node.
fn hosted(cluster: &LocalCluster) -> HashMap<u64, BTreeSet<u64>> {
    let etcd = cluster.etcd_url();
    block(async move {
        let m = meta(&etcd).await;
        let client = ShardClient::new(routes::follow(&m).await.unwrap(), ClientConfig::default());
        let mut out = HashMap::new();
        for node in m.live_nodes().await.unwrap().keys() {
            if let Ok(s) = client.node_status(*node, vec![]).await {
                out.insert(*node, s.groups.iter().map(|g| g.group_id).collect());
            }
        }
        out
    })
}

#[test]
fn create_describe_write_drop_and_recreate() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(&dir, None);
    let mut con = connect(&cluster.router_addr());

    ok(&mut con, &["TABLE.CREATE", "orders", "16", "3"]);
    let d = common::describe_table(&mut con, "orders");
    assert_eq!(
        redis::from_redis_value::<String>(&d["state"]).unwrap(),
        "available"
    );
    let Value::Array(shards) = d["shards"].clone() else {
        panic!()
    };
    assert_eq!(shards.len(), 16);
    let mut next_slot = 0;
    for s in shards {
        let s = common::flat_map(&s);
        let slots: Vec<i64> = redis::from_redis_value(&s["slots"]).unwrap();
        assert_eq!(
            slots[0], next_slot,
            "slot ranges are contiguous and disjoint"
        );
        next_slot = slots[1] + 1;
        let replicas: BTreeSet<i64> = redis::from_redis_value(&s["replicas"]).unwrap();
        assert_eq!(replicas.len(), 3, "3 distinct nodes");
        let leader: i64 = redis::from_redis_value(&s["leader"]).unwrap();
        assert!(replicas.contains(&leader));
    }
    assert_eq!(next_slot, 16384, "ranges cover every slot");
    let list: Vec<String> =
        redis::from_redis_value(&run(&mut con, &["TABLE.LIST"]).unwrap()).unwrap();
    assert_eq!(list, vec!["default", "orders"]);

    // 2,000 keys land on every shard.
    ok(&mut con, &["TABLE.USE", "orders"]);
    for i in 0..2000 {
        ok(&mut con, &["SET", &format!("order:{i}"), &format!("{i}")]);
    }
    let desc = table(&cluster, "orders").unwrap();
    let gids: Vec<u64> = desc.shards.iter().map(|s| s.group_id).collect();
    // DESCRIBE counts keys per shard (eventually: replicas may lag a little).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let Value::Array(shards) = common::describe_table(&mut con, "orders")["shards"].clone()
        else {
            panic!()
        };
        let counts: Vec<i64> = shards
            .into_iter()
            .map(|s| redis::from_redis_value(&common::flat_map(&s)["keys"]).unwrap_or(0))
            .collect();
        if counts.iter().sum::<i64>() == 2000 {
            assert!(
                counts.iter().all(|c| *c > 50),
                "keys spread over every shard: {counts:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "key counts never reached 2000: {counts:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The same key in another table is independent.
    ok(&mut con, &["TABLE.USE", "default"]);
    ok(&mut con, &["SET", "order:1", "in-default"]);
    ok(&mut con, &["TABLE.USE", "orders"]);
    assert_eq!(
        redis::from_redis_value::<String>(&run(&mut con, &["GET", "order:1"]).unwrap()).unwrap(),
        "1"
    );

    // Drop: the record goes, every replica and its data go.
    ok(&mut con, &["TABLE.DROP", "orders"]);
    assert!(table(&cluster, "orders").is_none());
    assert!(!metadata(&cluster).keys().any(|k| k.contains("orders")));
    assert_eq!(
        err(&mut con, &["GET", "order:1"]),
        "ERR unknown table 'orders'"
    );
    wait_for_cluster("no node hosts a dropped group", &mut cluster, |c| {
        hosted(c)
            .values()
            .all(|g| gids.iter().all(|id| !g.contains(id)))
    });
    cluster.stop_node(1).unwrap();
    assert_eq!(rows_for_groups(&cluster.node_dir(1), &gids), 0);
    cluster.start_node(1).unwrap();

    // The name is free again and the new table is empty.
    ok(&mut con, &["TABLE.CREATE", "orders", "4", "3"]);
    let again = table(&cluster, "orders").unwrap();
    assert!(
        again.shards.iter().all(|s| !gids.contains(&s.group_id)),
        "group ids are never reused"
    );
    ok(&mut con, &["TABLE.USE", "orders"]);
    assert_eq!(run(&mut con, &["GET", "order:1"]).unwrap(), Value::Nil);
}

#[test]
fn node_down_during_drop_cleans_up_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(&dir, None);
    let mut con = connect(&cluster.router_addr());
    ok(&mut con, &["TABLE.CREATE", "tmp", "4", "3"]);
    ok(&mut con, &["TABLE.USE", "tmp"]);
    for i in 0..100 {
        ok(&mut con, &["SET", &format!("k{i}"), "v"]);
    }
    let gids: Vec<u64> = table(&cluster, "tmp")
        .unwrap()
        .shards
        .iter()
        .map(|s| s.group_id)
        .collect();
    cluster.stop_node(3).unwrap();
    assert!(
        rows_for_groups(&cluster.node_dir(3), &gids) > 0,
        "node 3 held the table"
    );
    ok(&mut con, &["TABLE.DROP", "tmp"]);
    assert!(table(&cluster, "tmp").is_none());

    cluster.start_node(3).unwrap();
    wait_for_cluster(
        "node 3 no longer hosts the dropped groups",
        &mut cluster,
        |c| {
            hosted(c)
                .get(&3)
                .is_some_and(|g| gids.iter().all(|id| !g.contains(id)))
        },
    );
    cluster.stop_node(3).unwrap();
    assert_eq!(rows_for_groups(&cluster.node_dir(3), &gids), 0);
}

#[test]
fn creator_killed_half_way_leaves_no_routable_table() {
    let dir = tempfile::tempdir().unwrap();
    // Creations abandoned for 3 s are rolled back by any router.
    let mut cluster = start(&dir, Some("table_stale_after_ms = 3000\n"));
    let doomed = cluster
        .add_router_with(&["--failpoint", "table-create-after-record"])
        .unwrap();
    let mut killer = connect(&doomed);
    let r = run(&mut killer, &["TABLE.CREATE", "half", "4", "3"]);
    assert!(r.is_err(), "the creating router died: {r:?}");

    // The record exists, half made: never routable.
    let mut con = connect(&cluster.router_addr());
    if let Some(t) = table(&cluster, "half") {
        assert_ne!(t.state, shoal::meta::descriptor::TableState::Available);
        if run(&mut con, &["TABLE.USE", "half"]).is_ok() {
            let e = err(&mut con, &["SET", "k", "v"]);
            assert!(
                e.starts_with("TRYAGAIN table 'half' is being created"),
                "{e}"
            );
        }
    }
    // Rolled back by the surviving router; the name is usable again.
    wait_for_cluster("the half-made table is rolled back", &mut cluster, |c| {
        table(c, "half").is_none()
    });
    let mut con = connect(&cluster.router_addr());
    // (A creation slower than the 3 s stale limit of this test is rolled back
    // by the janitor itself; on a loaded machine, try again.)
    let mut attempts = 0;
    while let Err(e) = run(&mut con, &["TABLE.CREATE", "half", "4", "3"]) {
        attempts += 1;
        assert!(attempts < 3, "TABLE.CREATE half keeps failing: {e}");
    }
    ok(&mut con, &["TABLE.USE", "half"]);
    ok(&mut con, &["SET", "k", "v"]);
}

#[test]
fn two_routers_select_and_use() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(&dir, None);
    let second = cluster.add_router().unwrap();
    let mut a = connect(&cluster.router_addr());
    let mut b = connect(&second);
    ok(&mut a, &["TABLE.CREATE", "users", "2", "3"]);
    // Usable through the other router within a few seconds: its etcd watch
    // may still show the table as being created (SET answers -TRYAGAIN
    // until the watch delivers the finished record).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let used = run(&mut b, &["TABLE.USE", "users"]);
        let set = used.is_ok().then(|| run(&mut b, &["SET", "u1", "alice"]));
        match set {
            Some(Ok(Value::Okay)) => break,
            Some(Err(e)) if e.code() == Some("TRYAGAIN") => {}
            Some(other) => panic!("SET through router 2: {other:?}"),
            None => {}
        }
        assert!(
            Instant::now() < deadline,
            "router 2 never accepted a write to table 'users': {used:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // SELECT <db index> and TABLE.USE reach the same table.
    let index: i64 =
        redis::from_redis_value(&common::describe_table(&mut a, "users")["db_index"]).unwrap();
    assert!(index > 0);
    let client = redis::Client::open(format!("redis://{}/{index}", cluster.router_addr())).unwrap();
    let mut by_url = client.get_connection().unwrap();
    assert_eq!(
        redis::from_redis_value::<String>(&run(&mut by_url, &["GET", "u1"]).unwrap()).unwrap(),
        "alice"
    );
    ok(&mut a, &["SELECT", "0"]);
    assert_eq!(run(&mut a, &["GET", "u1"]).unwrap(), Value::Nil);
}

#[test]
fn bad_requests_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(&dir, None);
    let mut con = connect(&cluster.router_addr());
    ok(&mut con, &["TABLE.CREATE", "taken", "2", "3"]);
    let before = metadata(&cluster);
    let cases: &[(&[&str], &str)] = &[
        (
            &["TABLE.CREATE", "taken"],
            "ERR table 'taken' already exists",
        ),
        (&["TABLE.CREATE", "bad name"], "ERR invalid table name"),
        (&["TABLE.CREATE", ""], "ERR invalid table name"),
        (&["TABLE.CREATE", &"x".repeat(65)], "ERR invalid table name"),
        (
            &["TABLE.CREATE", "t", "0"],
            "ERR shards must be between 1 and 16384",
        ),
        (
            &["TABLE.CREATE", "t", "16385"],
            "ERR shards must be between 1 and 16384",
        ),
        (
            &["TABLE.CREATE", "t", "2", "2"],
            "ERR replicas must be 1, 3 or 5",
        ),
        (
            &["TABLE.CREATE", "t", "2", "5"],
            "ERR cannot place 5 replicas: only 3 live node(s)",
        ),
        (&["TABLE.USE", "nosuch"], "ERR unknown table 'nosuch'"),
        (&["TABLE.DROP", "nosuch"], "ERR unknown table 'nosuch'"),
        (&["TABLE.DESCRIBE", "nosuch"], "ERR unknown table 'nosuch'"),
        (&["SELECT", "42"], "ERR no table has database index 42"),
        (
            &["TABLE.DROP", "default"],
            "ERR table 'default' cannot be dropped",
        ),
    ];
    for (args, want) in cases {
        let e = err(&mut con, args);
        assert!(e.starts_with(want), "{args:?}: got {e:?}, want {want:?}");
    }
    assert_eq!(metadata(&cluster), before, "a failed request changed etcd");
}
