//! The Prometheus endpoints (`--metrics-listen`) of a 3-node cluster and a
//! router: what a scrape shows after load, read over plain HTTP the way
//! Prometheus reads it.

use std::collections::BTreeMap;
use std::time::Duration;

mod common;

use common::{http_get, samples, total};

#[test]
fn nodes_and_routers_serve_prometheus_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cl, router, addrs) = common::metrics_cluster(&dir.path().join("cluster"));
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
        assert!(total(s, "process_open_fds") > 0.0);
    }

    // Anything but /metrics is 404.
    assert_eq!(http_get(&nodes[0], "/").0, 404);
    cl.shutdown();
}
