//! The real Prometheus server (Debian's `prometheus`, installed by
//! scripts/setup) scrapes a 3-node cluster and its router every second
//! while a client writes; its query API must then show the command rate the
//! client sent (within 20 %), one leader per group, and the nodes' fsyncs;
//! and every query of the Grafana dashboard (`conf/grafana/shoal.json`)
//! must run and show a series.

use std::process::Command;
use std::time::{Duration, Instant};

use shoal::devcluster::{free_port, Proc};

mod common;

use common::http_get;

/// `s` for a URL query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The single value of an instant query, if there is one.
fn query(prom: &str, q: &str) -> Option<f64> {
    let (status, body) = http_get(prom, &format!("/api/v1/query?query={}", encode(q)));
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let result = v["data"]["result"].as_array()?;
    let value = result.first()?["value"][1].as_str()?;
    value.parse().ok()
}

#[test]
fn prometheus_sees_the_load_and_the_leaders() {
    let prometheus = common::which("prometheus").unwrap_or_else(|| {
        panic!(
            "the prometheus server is not installed: run scripts/setup (Debian package prometheus)"
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let (mut cl, router, addrs) = common::metrics_cluster(&dir.path().join("cluster"));
    let targets: Vec<String> = addrs.values().map(|a| format!("'{a}'")).collect();

    // Prometheus, scraping every second.
    let pdir = dir.path().join("prometheus");
    std::fs::create_dir_all(&pdir).unwrap();
    let config = pdir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: shoal\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let port = free_port();
    let prom = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(prometheus);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            pdir.join("data").display()
        ))
        .arg(format!("--web.listen-address={prom}"));
    let _server = Proc::spawn("prometheus", cmd, &pdir).expect("prometheus starts");
    assert!(
        common::wait_until(Duration::from_secs(30), || {
            query(&prom, "count(up == 1)") == Some(4.0)
        }),
        "prometheus did not scrape all 4 targets"
    );

    // Load: SETs for 10 seconds, counted here.
    let mut c = common::Conn::connect(&router);
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_secs(10) {
        assert_eq!(c.line(&format!("SET k{sent} v")), b"+OK\r\n");
        sent += 1;
    }
    let rate_sent = sent as f64 / started.elapsed().as_secs_f64();
    // Two more scrapes after the load.
    std::thread::sleep(Duration::from_millis(2500));
    let counted = query(&prom, "max(shoal_router_commands_total)").unwrap_or(0.0);
    assert!(counted >= sent as f64, "{counted} < {sent} sent");
    // The rate over the last 8 s of the load, as Prometheus computes it.
    let seen = query(
        &prom,
        "max(max_over_time(rate(shoal_router_commands_total[3s])[9s:1s] offset 3s))",
    )
    .unwrap_or(0.0);
    let avg = query(
        &prom,
        "max(avg_over_time(rate(shoal_router_commands_total[2s])[8s:1s] offset 3s))",
    )
    .unwrap_or(0.0);
    eprintln!(
        "sent {sent} SETs, {rate_sent:.0}/s; Prometheus: average {avg:.0}/s, peak {seen:.0}/s"
    );
    assert!(
        (avg - rate_sent).abs() <= 0.2 * rate_sent,
        "Prometheus's rate {avg:.0}/s against {rate_sent:.0}/s sent"
    );
    // A latency quantile by command, from the router's histogram.
    let set_p99 = query(
        &prom,
        "histogram_quantile(0.99, sum(rate(shoal_router_command_duration_seconds_bucket{command=\"set\"}[10s])) by (le))",
    );
    eprintln!("SET p99 {set_p99:?} s");
    assert!(
        set_p99.is_some_and(|s| s > 0.0 && s < 10.0),
        "SET p99: {set_p99:?}"
    );
    assert_eq!(query(&prom, "sum(shoal_group_leader)"), Some(2.0));
    assert_eq!(query(&prom, "sum(shoal_node_replicas)"), Some(6.0));
    assert!(query(&prom, "sum(shoal_fsync_duration_seconds_count)").unwrap_or(0.0) > 0.0);
    let p99 = query(
        &prom,
        "histogram_quantile(0.99, sum(rate(shoal_fsync_duration_seconds_bucket[10s])) by (le))",
    );
    assert!(
        p99.is_some_and(|s| s > 0.0 && s < 10.0),
        "fsync p99: {p99:?}"
    );

    // The alerting rules and the configuration that loads them are valid.
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    for (what, file) in [
        ("rules", "prometheus-alerts.yml"),
        ("config", "prometheus.yml"),
    ] {
        let out = Command::new("promtool")
            .args(["check", what])
            .arg(conf.join(file))
            .output()
            .expect("promtool runs (scripts/setup installs prometheus)");
        assert!(
            out.status.success(),
            "promtool check {what} {file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Every query of the Grafana dashboard runs; each panel shows a series.
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/grafana/shoal.json"),
    )
    .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap_or("?");
        let mut series = 0;
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let (status, body) = http_get(&prom, &format!("/api/v1/query?query={}", encode(expr)));
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            assert!(
                status == 200 && v["status"] == "success",
                "panel {title:?}: {expr}: {body}"
            );
            series += v["data"]["result"].as_array().map_or(0, Vec::len);
        }
        assert!(series > 0, "panel {title:?} shows nothing");
    }
    cl.shutdown();
}
