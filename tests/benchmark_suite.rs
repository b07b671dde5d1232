//! redis-benchmark's default test list (PING, SET, GET, INCR, LPUSH, RPUSH,
//! LPOP, RPOP, SADD, HSET, SPOP, ZADD, ZPOPMIN, LRANGE_100..600, MSET) runs
//! against a replicated cluster with random keys over two shards, and every
//! request succeeds: no "Error from server", every test reports.

mod common;

use std::process::Command;

use common::{cluster, Conn};

const DEFAULT_TESTS: &[&str] = &[
    "PING_INLINE",
    "PING_MBULK",
    "SET",
    "GET",
    "INCR",
    "LPUSH",
    "RPUSH",
    "LPOP",
    "RPOP",
    "SADD",
    "HSET",
    "SPOP",
    "ZADD",
    "ZPOPMIN",
    "LPUSH (needed to benchmark LRANGE)",
    "LRANGE_100 (first 100 elements)",
    "LRANGE_300 (first 300 elements)",
    "LRANGE_500 (first 500 elements)",
    "LRANGE_600 (first 600 elements)",
    "MSET (10 keys)",
];

#[test]
fn redis_benchmark_default_suite_runs_without_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cl = cluster(&dir.path().join("cluster"), 3, 2, 3);
    let addr = cl.router_addr();
    let (host, port) = addr.rsplit_once(':').unwrap();
    let out = Command::new("redis-benchmark")
        .args([
            "-h", host, "-p", port, "-n", "300", "-c", "10", "-r", "1000", "--csv",
        ])
        .output()
        .expect("redis-benchmark runs (redis-tools is installed by scripts/setup)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        !stdout.contains("Error") && !stderr.contains("Error"),
        "errors from shoal:\n{stdout}\n{stderr}"
    );
    for test in DEFAULT_TESTS {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("\"{test}\",")))
            .unwrap_or_else(|| panic!("{test} did not report:\n{stdout}"));
        let rps: f64 = line
            .split(',')
            .nth(1)
            .unwrap()
            .trim_matches('"')
            .parse()
            .unwrap();
        assert!(rps > 0.0, "{line}");
    }
    // What the suite left behind has the types it wrote.
    let mut c = Conn::connect(&addr);
    assert_eq!(c.line("TYPE mylist"), b"+list\r\n");
    let llen = String::from_utf8(c.line("LLEN mylist")).unwrap();
    let n: i64 = llen.trim_start_matches(':').trim().parse().unwrap();
    // 300 LPUSH + 300 RPUSH - 300 LPOP - 300 RPOP + 300 LPUSH: what
    // redis-server holds after the same run.
    assert_eq!(n, 300);
    assert_eq!(c.line("TYPE myhash"), b"+hash\r\n");
}
