//! The Prometheus endpoints (`--metrics-listen`) of a 3-node cluster and a
//! router: what a scrape shows after load, read over plain HTTP the way
//! Prometheus reads it.

use std::collections::BTreeMap;
use std::time::Duration;

mod common;

use common::{http_get, samples, total};

#[test]
fn nodes_and_routers_serve_prometheus_metrics() {
    serve_prometheus_metrics("batch");
}

/// The same with table `default` on openraft groups, whose network
/// counts each group's messages by peer and kind.
#[test]
fn nodes_and_routers_serve_prometheus_metrics_of_openraft_groups() {
    serve_prometheus_metrics("openraft");
}

fn serve_prometheus_metrics(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (mut cl, router, addrs) =
        common::metrics_cluster_on(&dir.path().join("cluster"), &["--default-engine", engine]);
    let router_metrics = addrs
        .iter()
        .find(|(n, _)| n.starts_with("router"))
        .map(|(_, a)| a.clone())
        .unwrap();
    let nodes: Vec<String> = addrs
        .iter()
        .filter(|(n, _)| n.starts_with("node"))
        .map(|(_, a)| a.clone())
        .collect();
    assert_eq!(nodes.len(), 3, "{addrs:?}");

    // Load through the router with metrics.
    let before = samples(&http_get(&router_metrics, "/metrics").1);
    let mut c = common::Conn::connect(&router);
    for i in 0..200 {
        assert_eq!(c.line(&format!("SET k{i} v")), b"+OK\r\n");
    }
    let (status, body) = http_get(&router_metrics, "/metrics");
    assert_eq!(status, 200);
    let after = samples(&body);
    let ran = total(&after, "shoal_router_commands_total")
        - total(&before, "shoal_router_commands_total");
    // The 200 SETs, and nothing else but this test's own commands.
    assert!((200.0..=210.0).contains(&ran), "{ran} commands counted");
    // By command: the SETs, and their latency histogram.
    let set = |s: &BTreeMap<String, f64>, name: &str| {
        s.get(&format!("{name}{{command=\"set\"}}"))
            .copied()
            .unwrap_or(0.0)
    };
    assert_eq!(
        set(&after, "shoal_router_command_calls_total")
            - set(&before, "shoal_router_command_calls_total"),
        200.0
    );
    let count = set(&after, "shoal_router_command_duration_seconds_count");
    assert!(count >= 200.0, "{count}");
    let inf = after
        .get("shoal_router_command_duration_seconds_bucket{command=\"set\",le=\"+Inf\"}")
        .copied();
    assert_eq!(inf, Some(count));
    assert!(set(&after, "shoal_router_command_duration_seconds_sum") > 0.0);
    assert!(total(&after, "shoal_router_connections") >= 1.0);
    assert_eq!(total(&after, "shoal_router_live_nodes"), 3.0);
    assert!(total(&after, "process_resident_memory_bytes") > 1e6);
    // By table, name and outcome.
    let by_table = |s: &BTreeMap<String, f64>, cmd: &str, outcome: &str| {
        s.get(&format!(
            "shoal_router_table_commands_total{{command=\"{cmd}\",outcome=\"{outcome}\",table=\"default\"}}"
        ))
        .copied()
        .unwrap_or(0.0)
    };
    assert_eq!(
        by_table(&after, "set", "ok") - by_table(&before, "set", "ok"),
        200.0
    );
    assert!(total(&after, "shoal_router_routes_revision") > 0.0);

    // An error reply counts by kind and as a failed call of its table.
    assert!(c.line("SET text abc").starts_with(b"+OK"));
    assert!(c.line("INCR text").starts_with(b"-ERR"));
    // Transactions by path: one key is one shard (one phase); ten keys
    // span both shards of `default` (2PC).
    let mut exec = |keys: &[String]| {
        assert_eq!(c.line("MULTI"), b"+OK\r\n");
        for k in keys {
            assert_eq!(c.line(&format!("SET {k} x")), b"+QUEUED\r\n");
        }
        assert!(c.line("EXEC").starts_with(b"*"));
    };
    exec(&["one".to_string()]);
    exec(&(0..10).map(|i| format!("t{i}")).collect::<Vec<_>>());
    let later = samples(&http_get(&router_metrics, "/metrics").1);
    let delta = |name: &str| {
        later.get(name).copied().unwrap_or(0.0) - after.get(name).copied().unwrap_or(0.0)
    };
    assert_eq!(delta("shoal_router_errors_total{kind=\"ERR\"}"), 1.0);
    assert_eq!(by_table(&later, "incr", "failed"), 1.0);
    assert_eq!(
        delta("shoal_txn_total{outcome=\"committed\",path=\"one_phase\"}"),
        1.0
    );
    assert_eq!(
        delta("shoal_txn_total{outcome=\"committed\",path=\"two_phase\"}"),
        1.0
    );

    // Reads of keys just written are answered by the leaders' row caches.
    for i in 0..20 {
        assert_eq!(c.line(&format!("GET k{i}")), b"$1\r\nv\r\n");
    }
    // Every group has exactly one leader among the nodes, and the nodes
    // synced their logs to disk.
    let mut scrapes = Vec::new();
    assert!(
        common::wait_until(Duration::from_secs(10), || {
            scrapes = nodes
                .iter()
                .map(|n| samples(&http_get(n, "/metrics").1))
                .collect();
            let leaders: f64 = scrapes.iter().map(|s| total(s, "shoal_group_leader")).sum();
            let replicas: f64 = scrapes
                .iter()
                .map(|s| total(s, "shoal_node_replicas"))
                .sum();
            // 2 shards x 3 replicas of `default`.
            leaders == 2.0 && replicas == 6.0
        }),
        "leaders and replicas: {scrapes:?}"
    );
    let synced: f64 = scrapes
        .iter()
        .map(|s| total(s, "shoal_fsync_duration_seconds_count"))
        .sum();
    assert!(synced >= 1.0, "no fsync observed");
    for s in &scrapes {
        assert!(total(s, "shoal_group_applied_index") > 0.0, "{s:?}");
        for name in ["shoal_group_snapshot_index", "shoal_group_purged_index"] {
            let series = s.keys().filter(|k| k.starts_with(&format!("{name}{{")));
            // 2 shards x 3 replicas over 3 nodes: 2 each.
            assert_eq!(series.count(), 2, "{name}: {s:?}");
        }
        assert!(total(s, "process_open_fds") > 0.0);
        // Every replica saw its group elect a leader.
        assert!(total(s, "shoal_group_leader_changes_total") >= 2.0, "{s:?}");
        for name in [
            "shoal_rocksdb_block_cache_hit_total",
            "shoal_rocksdb_block_cache_miss_total",
            "shoal_rocksdb_stall_micros_total",
            "shoal_node_moves_in_progress",
        ] {
            assert!(s.keys().any(|k| k.starts_with(name)), "{name} missing");
        }
        assert_eq!(total(s, "shoal_node_moves_in_progress"), 0.0);
        // Every replica applied SETs: its row cache holds rows.
        assert!(total(s, "shoal_row_cache_bytes") > 0.0, "{s:?}");
        let (free, size) = (
            total(s, "shoal_node_disk_free_bytes"),
            total(s, "shoal_node_disk_size_bytes"),
        );
        assert!(free > 0.0 && free <= size, "disk {free} of {size}");
    }
    let sum = |name: &str| scrapes.iter().map(|s| total(s, name)).sum::<f64>();
    assert!(
        sum("shoal_row_cache_hits_total") >= 20.0,
        "GETs not from the row cache"
    );
    // The leaders proposed the SETs (one client: one entry each) and timed
    // their commits; the replicas applied them.
    assert!(sum("shoal_group_proposals_total") >= 200.0);
    assert!(sum("shoal_group_served_requests_total") >= 200.0);
    assert!(sum("shoal_raft_commit_duration_seconds_count") >= 200.0);
    assert!(sum("shoal_apply_duration_seconds_count") >= 200.0);
    // Leaders sent appends to both peers, with their bytes; followers
    // are caught up.
    let appends = |s: &BTreeMap<String, f64>, field: &str| {
        s.iter()
            .filter(|(k, _)| k.starts_with(field) && k.contains("kind=\"append\""))
            .count()
    };
    let leader_scrape = scrapes
        .iter()
        .find(|s| total(s, "shoal_group_leader") > 0.0)
        .unwrap();
    if engine == "openraft" {
        assert_eq!(appends(leader_scrape, "shoal_raft_sent_messages_total"), 2);
        assert_eq!(appends(leader_scrape, "shoal_raft_sent_bytes_total"), 2);
        assert!(sum("shoal_raft_sent_bytes_total") > 200.0 * 20.0);
    } else {
        // A batch loop counts its messages and sends for all its groups
        // (one send per peer and turn, not per group): the leaders'
        // appends, and each node's replies.
        let peers = |s: &BTreeMap<String, f64>| {
            s.iter()
                .filter(|(k, v)| k.starts_with("shoal_batch_sent_bytes_total{") && **v > 0.0)
                .count()
        };
        for s in &scrapes {
            assert!(total(s, "shoal_batch_sends_total") > 0.0, "{s:?}");
            // Bytes to at least one peer: a node that only follows
            // answers only its leaders, which may all be on one node.
            assert!(peers(s) >= 1, "{s:?}");
        }
        // A leader's appends went to both other nodes.
        assert_eq!(peers(leader_scrape), 2, "{leader_scrape:?}");
        assert!(
            total(leader_scrape, "shoal_batch_messages_total") >= 2.0 * 200.0,
            "{leader_scrape:?}"
        );
        assert!(sum("shoal_batch_entries_total") >= 3.0 * 200.0);
    }
    assert!(
        common::wait_until(Duration::from_secs(5), || {
            let s = samples(&http_get(&nodes[0], "/metrics").1);
            s.iter()
                .filter(|(k, _)| k.starts_with("shoal_group_replication_lag_entries"))
                .all(|(_, v)| *v == 0.0)
        }),
        "followers lag"
    );

    // Anything but /metrics is 404.
    assert_eq!(http_get(&nodes[0], "/").0, 404);
    cl.shutdown();
}

/// LATENCY shows the nodes' `fsync` and `raft-commit` events beside the
/// router's own: with every WAL sync made 20 ms slower (the `slow-fsync`
/// failpoint) and a threshold of 10 ms, both appear after a few writes,
/// and LATENCY RESET hides them.
#[test]
fn latency_shows_node_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = shoal::devcluster::ClusterOpts::new(env!("CARGO_BIN_EXE_shoal"), dir.path());
    opts.nodes = 1;
    opts.default_shards = 1;
    opts.default_replicas = 1;
    opts.node_args = ["--failpoint", "slow-fsync"].map(String::from).to_vec();
    let mut cl = shoal::devcluster::LocalCluster::start(opts).expect("cluster starts");
    let mut c = common::Conn::connect(&cl.router_addr());
    assert_eq!(
        c.line("CONFIG SET latency-monitor-threshold 10"),
        b"+OK\r\n"
    );
    for i in 0..5 {
        assert_eq!(c.line(&format!("SET k{i} v")), b"+OK\r\n");
    }
    let latest = String::from_utf8_lossy(&c.line("LATENCY LATEST")).into_owned();
    for event in ["fsync", "raft-commit", "command"] {
        assert!(
            latest.contains(&format!("${}\r\n{event}\r\n", event.len())),
            "{event}: {latest}"
        );
    }
    let history = c.line("LATENCY HISTORY fsync");
    assert!(
        history.starts_with(b"*") && !history.starts_with(b"*0"),
        "{history:?}"
    );
    let doctor = String::from_utf8_lossy(&c.line("LATENCY DOCTOR")).into_owned();
    assert!(doctor.contains("fsync:"), "{doctor}");
    // RESET counts the events shown and hides the nodes' older samples.
    let shown = latest
        .lines()
        .next()
        .unwrap()
        .trim_start_matches('*')
        .to_string();
    let reset = String::from_utf8_lossy(&c.line("LATENCY RESET")).into_owned();
    assert_eq!(reset, format!(":{shown}\r\n"));
    assert_eq!(c.line("LATENCY LATEST"), b"*0\r\n");
    // Off: nothing from the nodes either.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(c.line("CONFIG SET latency-monitor-threshold 0"), b"+OK\r\n");
    assert_eq!(c.line("SET again v"), b"+OK\r\n");
    assert_eq!(c.line("LATENCY LATEST"), b"*0\r\n");
    cl.shutdown();
}
