//! A set of 1,000,000 members, built through the router, then deleted: DEL
//! answers at once (a version bump, not a walk of the rows), the key is
//! gone at once, and the node's memory stays bounded while its collector
//! removes the dead rows in the background (seen through INFO's
//! `lazyfreed_objects`, which sums the nodes' collector counts).
//!
//! One node, one shard, one replica: the one node process is the one whose
//! memory is read (VmRSS and VmHWM from `/proc/PID/status`).

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{cluster, show, wait_until, Conn};

/// Members of the set.
const MEMBERS: usize = 1_000_000;
/// Members per SADD.
const PER_COMMAND: usize = 1_000;
/// Connections building the set at once (each pipelines its SADDs).
const BUILDERS: usize = 4;
/// How much the node's peak memory may grow from the end of the build to
/// the end of the test (DEL, the collector's removal, a new set under the
/// same name). A DEL that reads the collection's rows into memory (1,000,000
/// row keys of ~30 bytes, in a batch of deletes) takes well over this; the
/// rows themselves, in RocksDB's memtables and SST files, are not in it.
const GROWTH_LIMIT: u64 = 48 << 20;

/// A field of `/proc/PID/status` in bytes ("VmRSS", "VmHWM").
fn proc_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        * 1024
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// INFO stats' `lazyfreed_objects`.
fn lazyfreed(c: &mut Conn) -> u64 {
    let info = String::from_utf8(c.line("INFO stats")).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("lazyfreed_objects:"))
        .unwrap_or_else(|| panic!("INFO stats lacks lazyfreed_objects: {info}"))
        .trim()
        .parse()
        .unwrap()
}

/// Add members `from..to` of the set `key` in SADDs of [`PER_COMMAND`],
/// all sent before the replies are read.
fn build(addr: &str, key: &str, from: usize, to: usize) {
    let mut c = Conn::connect(addr);
    let mut sent = 0;
    for start in (from..to).step_by(PER_COMMAND) {
        let members: Vec<String> = (start..(start + PER_COMMAND).min(to))
            .map(|i| format!("m{i:07}"))
            .collect();
        let mut args: Vec<&[u8]> = vec![b"SADD", key.as_bytes()];
        args.extend(members.iter().map(|m| m.as_bytes()));
        c.send(&args);
        sent += 1;
    }
    for _ in 0..sent {
        let r = c.read_reply().expect("a SADD reply");
        assert_eq!(r, format!(":{PER_COMMAND}\r\n").as_bytes(), "{}", show(&r));
    }
}

#[test]
fn million_member_set_deletes_at_once() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut cl = cluster(&dir.path().join("cluster"), 1, 1, 1);
    let addr = cl.router_addr();
    let pid = cl.node_pid(1).expect("node 1 runs");
    let mut c = Conn::connect(&addr);
    let collected_before = lazyfreed(&mut c);
    let base = proc_kb(pid, "VmHWM");
    eprintln!(
        "cluster up after {:?}; node peak {}",
        started.elapsed(),
        mib(base)
    );

    // 1. Build the set: BUILDERS connections, each its share of the SADDs.
    let t = Instant::now();
    let share = MEMBERS / BUILDERS;
    let builders: Vec<_> = (0..BUILDERS)
        .map(|b| {
            let addr = addr.clone();
            thread::spawn(move || build(&addr, "big", b * share, (b + 1) * share))
        })
        .collect();
    for b in builders {
        b.join().expect("a builder failed");
    }
    let build_time = t.elapsed();
    assert_eq!(c.line("SCARD big"), format!(":{MEMBERS}\r\n").as_bytes());
    assert_eq!(c.line("SISMEMBER big m0999999"), b":1\r\n");
    let built_peak = proc_kb(pid, "VmHWM");
    let built_rss = proc_kb(pid, "VmRSS");
    eprintln!(
        "built {MEMBERS} members in {build_time:?}; node rss {}, peak {}",
        mib(built_rss),
        mib(built_peak)
    );

    // 2. DEL answers at once: a small fraction of the build's time (a walk
    // of the rows costs about what writing them did).
    let t = Instant::now();
    assert_eq!(c.line("DEL big"), b":1\r\n");
    let del_time = t.elapsed();
    eprintln!("DEL took {del_time:?}");
    assert!(
        del_time < build_time / 20,
        "DEL of {MEMBERS} members took {del_time:?}, the build {build_time:?}"
    );

    // 3. Gone at once, for every reader; a new set under the name starts empty.
    assert_eq!(c.line("EXISTS big"), b":0\r\n");
    assert_eq!(c.line("SCARD big"), b":0\r\n");
    assert_eq!(c.line("SISMEMBER big m0000000"), b":0\r\n");
    assert_eq!(c.line("SSCAN big 0 COUNT 100"), b"*2\r\n$1\r\n0\r\n*0\r\n");
    assert_eq!(c.line("DBSIZE"), b":0\r\n");
    assert_eq!(c.line("SADD big fresh"), b":1\r\n");
    assert_eq!(c.line("SMEMBERS big"), b"*1\r\n$5\r\nfresh\r\n");

    // Memory after DEL, before the collector ran.
    let del_peak = proc_kb(pid, "VmHWM");
    eprintln!(
        "after DEL: node rss {}, peak {} (growth since the build {})",
        mib(proc_kb(pid, "VmRSS")),
        mib(del_peak),
        mib(del_peak - built_peak)
    );
    assert!(
        del_peak <= built_peak + GROWTH_LIMIT,
        "the node's peak memory grew from {} to {} at DEL",
        mib(built_peak),
        mib(del_peak)
    );

    // 4. The collector removes the old generation's rows in the background.
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_secs(60), || lazyfreed(&mut c)
            > collected_before),
        "the collector removed nothing in 60 s (lazyfreed_objects stayed at {collected_before})"
    );
    eprintln!("collected after {:?}", t.elapsed());
    assert_eq!(c.line("SMEMBERS big"), b"*1\r\n$5\r\nfresh\r\n");
    assert_eq!(c.line("SCARD big"), b":1\r\n");

    // 5. Memory stayed bounded through DEL and collection.
    let end_peak = proc_kb(pid, "VmHWM");
    let end_rss = proc_kb(pid, "VmRSS");
    eprintln!(
        "node rss {}, peak {} (growth since the build {})",
        mib(end_rss),
        mib(end_peak),
        mib(end_peak - built_peak)
    );
    assert!(
        end_peak <= built_peak + GROWTH_LIMIT,
        "the node's peak memory grew from {} to {} during DEL and collection",
        mib(built_peak),
        mib(end_peak)
    );
    assert!(cl.unexpected_exits().is_empty());
    eprintln!("done after {:?}", started.elapsed());
}
