//! MULTI/EXEC/WATCH against a real multi-node cluster: exact replies of the
//! Redis error cases, the bank invariant under concurrent transfers and
//! snapshots over two tables, a coordinator killed at each step of two-phase
//! commit, and a participant's leader killed mid-transaction.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{connect, ok, run};
use redis::{Connection, RedisResult, Value};
use shoal::devcluster::{ClusterOpts, LocalCluster};
use shoal::slot::slot;

const ACCOUNTS: usize = 50;
const START: i64 = 100;

fn start(dir: &tempfile::TempDir) -> LocalCluster {
    let mut opts = ClusterOpts::new(env!("CARGO_BIN_EXE_shoal"), dir.path());
    opts.default_shards = 4;
    // Stale prepared transactions are resolved after 2 s.
    let node_conf = dir.path().join("node-test.toml");
    std::fs::write(&node_conf, "txn_recovery_timeout_ms = 2000\n").unwrap();
    opts.node_args = vec!["--config".into(), node_conf.display().to_string()];
    LocalCluster::start(opts).expect("cluster starts")
}

/// Raw RESP exchange: send `request`, expect exactly `reply`.
fn raw(s: &mut TcpStream, args: &[&str], reply: &str) {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut got = vec![0u8; reply.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), reply, "{args:?}");
}

/// Account `i` lives in table `bank_a` (i < 25) or `bank_b`.
fn table_of(i: usize) -> &'static str {
    if i < ACCOUNTS / 2 {
        "bank_a"
    } else {
        "bank_b"
    }
}

fn acct(i: usize) -> String {
    format!("acct:{i}")
}

fn setup_bank(con: &mut Connection) {
    ok(con, &["TABLE.CREATE", "bank_a", "8", "3"]);
    ok(con, &["TABLE.CREATE", "bank_b", "8", "3"]);
    for i in 0..ACCOUNTS {
        ok(con, &["TABLE.USE", table_of(i)]);
        ok(con, &["SET", &acct(i), &START.to_string()]);
    }
}

fn balance(con: &mut Connection, i: usize) -> i64 {
    ok(con, &["TABLE.USE", table_of(i)]);
    let v: Option<String> =
        redis::from_redis_value(&run(con, &["GET", &acct(i)]).unwrap()).unwrap();
    v.unwrap().parse().unwrap()
}

/// One WATCH/MULTI transfer; `Ok(true)` committed, `Ok(false)` conflict.
fn transfer(con: &mut Connection, from: usize, to: usize, amount: i64) -> RedisResult<bool> {
    run(con, &["TABLE.USE", table_of(from)])?;
    run(con, &["WATCH", &acct(from)])?;
    run(con, &["TABLE.USE", table_of(to)])?;
    run(con, &["WATCH", &acct(to)])?;
    let a = balance(con, from);
    let b = balance(con, to);
    run(con, &["MULTI"])?;
    run(con, &["TABLE.USE", table_of(from)])?;
    run(con, &["SET", &acct(from), &(a - amount).to_string()])?;
    run(con, &["TABLE.USE", table_of(to)])?;
    run(con, &["SET", &acct(to), &(b + amount).to_string()])?;
    match run(con, &["EXEC"])? {
        Value::Nil => Ok(false),
        Value::Array(r) => {
            assert_eq!(r.len(), 4, "{r:?}");
            Ok(true)
        }
        other => panic!("EXEC: {other:?}"),
    }
}

/// A read-only MULTI over every account: their sum, or None on conflict.
fn snapshot_sum(con: &mut Connection) -> RedisResult<Option<i64>> {
    run(con, &["MULTI"])?;
    for i in 0..ACCOUNTS {
        run(con, &["TABLE.USE", table_of(i)])?;
        run(con, &["GET", &acct(i)])?;
    }
    match run(con, &["EXEC"])? {
        Value::Nil => Ok(None),
        Value::Array(items) => {
            let mut sum = 0;
            for v in items {
                if let Value::BulkString(b) = v {
                    sum += String::from_utf8_lossy(&b).parse::<i64>().unwrap();
                }
            }
            Ok(Some(sum))
        }
        other => panic!("EXEC: {other:?}"),
    }
}

fn total(con: &mut Connection) -> i64 {
    (0..ACCOUNTS).map(|i| balance(con, i)).sum()
}

/// Retry until the cluster answers (after kills, locks held until recovery).
fn eventually<T>(what: &str, mut f: impl FnMut() -> RedisResult<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                eprintln!("{what}: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

#[test]
fn redis_semantics_and_error_replies() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(&dir);
    let mut s = TcpStream::connect(cluster.router_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();

    raw(&mut s, &["EXEC"], "-ERR EXEC without MULTI\r\n");
    raw(&mut s, &["DISCARD"], "-ERR DISCARD without MULTI\r\n");
    // Queue, then EXEC: replies in order; keys on different shards.
    raw(&mut s, &["MULTI"], "+OK\r\n");
    raw(&mut s, &["MULTI"], "-ERR MULTI calls can not be nested\r\n");
    raw(&mut s, &["SET", "x:1", "a"], "+QUEUED\r\n");
    raw(&mut s, &["SET", "y:2", "b"], "+QUEUED\r\n");
    raw(&mut s, &["GET", "x:1"], "+QUEUED\r\n");
    raw(
        &mut s,
        &["WATCH", "x:1"],
        "-ERR WATCH inside MULTI is not allowed\r\n",
    );
    raw(&mut s, &["EXEC"], "*3\r\n+OK\r\n+OK\r\n$1\r\na\r\n");
    // DISCARD drops the queue.
    raw(&mut s, &["MULTI"], "+OK\r\n");
    raw(&mut s, &["SET", "x:1", "never"], "+QUEUED\r\n");
    raw(&mut s, &["DISCARD"], "+OK\r\n");
    raw(&mut s, &["GET", "x:1"], "$1\r\na\r\n");
    // A bad command while queueing aborts the transaction at EXEC.
    raw(&mut s, &["MULTI"], "+OK\r\n");
    raw(&mut s, &["SET", "x:1", "never"], "+QUEUED\r\n");
    raw(
        &mut s,
        &["GET"],
        "-ERR wrong number of arguments for 'get' command\r\n",
    );
    raw(
        &mut s,
        &["NOSUCH"],
        "-ERR unknown command 'nosuch', with args beginning with: \r\n",
    );
    raw(
        &mut s,
        &["EXEC"],
        "-EXECABORT Transaction discarded because of previous errors.\r\n",
    );
    raw(&mut s, &["GET", "x:1"], "$1\r\na\r\n");
    // WATCH: a change by another client makes EXEC return a null array.
    raw(&mut s, &["WATCH", "x:1", "y:2"], "+OK\r\n");
    let mut other = connect(&cluster.router_addr());
    ok(&mut other, &["SET", "y:2", "changed"]);
    raw(&mut s, &["MULTI"], "+OK\r\n");
    raw(&mut s, &["SET", "x:1", "lost"], "+QUEUED\r\n");
    raw(&mut s, &["EXEC"], "*-1\r\n");
    raw(&mut s, &["GET", "x:1"], "$1\r\na\r\n");
    // EXEC clears the watches: the next transaction commits.
    raw(&mut s, &["MULTI"], "+OK\r\n");
    raw(&mut s, &["SET", "x:1", "won"], "+QUEUED\r\n");
    raw(&mut s, &["EXEC"], "*1\r\n+OK\r\n");
    // UNWATCH forgets a watch.
    raw(&mut s, &["WATCH", "x:1"], "+OK\r\n");
    ok(&mut other, &["SET", "x:1", "again"]);
    raw(&mut s, &["UNWATCH"], "+OK\r\n");
    raw(&mut s, &["MULTI"], "+OK\r\n");
    raw(&mut s, &["INCR", "n:1"], "+QUEUED\r\n");
    raw(&mut s, &["INCR", "n:1"], "+QUEUED\r\n");
    raw(&mut s, &["EXEC"], "*2\r\n:1\r\n:2\r\n");
    // A command failing at EXEC does not stop the others (Redis semantics).
    raw(&mut s, &["MULTI"], "+OK\r\n");
    raw(&mut s, &["SET", "s:1", "text"], "+QUEUED\r\n");
    raw(&mut s, &["INCR", "s:1"], "+QUEUED\r\n");
    raw(&mut s, &["SET", "s:2", "after"], "+QUEUED\r\n");
    raw(
        &mut s,
        &["EXEC"],
        "*3\r\n+OK\r\n-ERR value is not an integer or out of range\r\n+OK\r\n",
    );
    // Cross-shard MSET is all-or-nothing through the same path.
    let keys: Vec<String> = (0..20).map(|i| format!("m:{i}")).collect();
    assert!(
        keys.iter().any(|k| slot(k.as_bytes()) < 8192)
            && keys.iter().any(|k| slot(k.as_bytes()) >= 8192)
    );
    let mut args = vec!["MSET"];
    for k in &keys {
        args.push(k);
        args.push("v");
    }
    ok(&mut other, &args);
    let n: i64 = redis::from_redis_value(
        &run(&mut other, &{
            let mut a = vec!["EXISTS"];
            a.extend(keys.iter().map(|k| k.as_str()));
            a
        })
        .unwrap(),
    )
    .unwrap();
    assert_eq!(n, 20);
    let info: String =
        redis::from_redis_value(&run(&mut other, &["INFO", "transactions"]).unwrap()).unwrap();
    assert!(info.contains("# Transactions"), "{info}");
    let committed: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("txn_committed:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(committed >= 5, "{info}");
    assert!(info.contains("txn_conflicts:1"), "{info}");
}

#[test]
fn bank_invariant_under_concurrent_transfers_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(&dir);
    let addr = cluster.router_addr();
    setup_bank(&mut connect(&addr));
    let expected = START * ACCOUNTS as i64;

    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let snapshots = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for t in 0..3u64 {
        let (addr, stop, committed) = (addr.clone(), stop.clone(), committed.clone());
        handles.push(std::thread::spawn(move || {
            let mut con = connect(&addr);
            let mut seed = t * 7919 + 1;
            while !stop.load(Ordering::Relaxed) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let from = (seed >> 33) as usize % ACCOUNTS;
                let to = (from + 1 + (seed >> 17) as usize % (ACCOUNTS - 1)) % ACCOUNTS;
                match transfer(&mut con, from, to, (seed % 10) as i64 + 1) {
                    Ok(true) => {
                        committed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        // TRYAGAIN while a key is locked: retry later.
                        assert!(e.code() == Some("TRYAGAIN"), "transfer failed: {e}");
                        let _ = run(&mut con, &["DISCARD"]);
                        let _ = run(&mut con, &["UNWATCH"]);
                    }
                }
            }
        }));
    }
    for _ in 0..2 {
        let (addr, stop, snapshots) = (addr.clone(), stop.clone(), snapshots.clone());
        handles.push(std::thread::spawn(move || {
            let mut con = connect(&addr);
            while !stop.load(Ordering::Relaxed) {
                match snapshot_sum(&mut con) {
                    Ok(Some(sum)) => {
                        assert_eq!(sum, expected, "a snapshot saw a partial transfer");
                        snapshots.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(None) => {}
                    // The keys stayed locked by transfers for every
                    // attempt (a loaded machine): no snapshot, no claim.
                    Err(e) if e.code() == Some("TRYAGAIN") => {}
                    Err(e) => panic!("snapshot read failed: {e}"),
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(15));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let (c, s) = (
        committed.load(Ordering::Relaxed),
        snapshots.load(Ordering::Relaxed),
    );
    eprintln!("{c} transfers committed, {s} consistent snapshots");
    assert!(c > 20, "too few transfers committed: {c}");
    assert!(s > 5, "too few snapshots: {s}");
    assert_eq!(total(&mut connect(&addr)), expected);
}

/// A router that dies at `failpoint` during a cross-table transfer; the
/// transfer must end fully applied (`applied`) or not at all, locks freed.
fn coordinator_dies_at(failpoint: &str, applied: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(&dir);
    let mut con = connect(&cluster.router_addr());
    setup_bank(&mut con);
    let doomed = cluster
        .add_router_with(&["--failpoint", failpoint])
        .unwrap();
    let mut dying = connect(&doomed);
    let (from, to) = (0, ACCOUNTS - 1);
    let r = transfer(&mut dying, from, to, 30);
    assert!(
        r.is_err(),
        "{failpoint}: the coordinator should have died: {r:?}"
    );

    // Within the recovery timeout every lock is released: plain reads and a
    // snapshot work, and the transfer is all or nothing.
    let start = Instant::now();
    let sum = eventually("snapshot after recovery", || {
        snapshot_sum(&mut con)
            .and_then(|s| s.ok_or_else(|| (redis::ErrorKind::TryAgain, "conflict").into()))
    });
    assert_eq!(sum, START * ACCOUNTS as i64);
    let (a, b) = (balance(&mut con, from), balance(&mut con, to));
    if applied {
        assert_eq!((a, b), (START - 30, START + 30), "{failpoint}: must commit");
    } else {
        assert_eq!((a, b), (START, START), "{failpoint}: must abort");
    }
    // The keys are writable again: no lock outlived the recovery timeout.
    eventually("write after recovery", || {
        run(&mut con, &["TABLE.USE", table_of(from)])?;
        run(&mut con, &["SET", &acct(from), &a.to_string()])
    });
    assert!(start.elapsed() < Duration::from_secs(30));
    // INFO reports what the nodes recovered.
    let info: String =
        redis::from_redis_value(&run(&mut con, &["INFO", "transactions"]).unwrap()).unwrap();
    let recovered: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("txn_recovered_by_nodes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no recovery counter in {info}"));
    assert!(recovered >= 1, "{failpoint}: {info}");
}

#[test]
fn coordinator_killed_after_prepare_aborts() {
    coordinator_dies_at("txn-after-prepare", false);
}

#[test]
fn coordinator_killed_after_commit_point_commits() {
    coordinator_dies_at("txn-after-commit-point", true);
}

#[test]
fn coordinator_killed_mid_commit_commits() {
    coordinator_dies_at("txn-mid-commit", true);
}

#[test]
fn participant_leader_killed_during_transfers() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(&dir);
    let addr = cluster.router_addr();
    setup_bank(&mut connect(&addr));
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (addr, stop) = (addr.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut con = connect(&addr);
            let mut n = 0u64;
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                i = (i + 7) % ACCOUNTS;
                let to = (i + ACCOUNTS / 2) % ACCOUNTS;
                match transfer(&mut con, i, to, 1) {
                    Ok(true) => n += 1,
                    Ok(false) => {}
                    Err(_) => {
                        // CLUSTERDOWN / TRYAGAIN during the election: start over.
                        con = connect(&addr);
                    }
                }
            }
            n
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    cluster.kill_node(1).unwrap();
    std::thread::sleep(Duration::from_secs(6));
    cluster.start_node(1).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let n = worker.join().unwrap();
    eprintln!("{n} transfers committed around the kill");
    let mut con = connect(&addr);
    let sum = eventually("final snapshot", || {
        snapshot_sum(&mut con)
            .and_then(|s| s.ok_or_else(|| (redis::ErrorKind::TryAgain, "conflict").into()))
    });
    assert_eq!(sum, START * ACCOUNTS as i64);
    assert_eq!(total(&mut con), START * ACCOUNTS as i64);
}
