//! Hostile input against a real cluster (etcd, three nodes, routers), through
//! real sockets: pathological glob patterns, fan-out replies over the output
//! limit, commands with hundreds of thousands of keys, numbers with absurd
//! exponents, values a router let through but the nodes refuse, and a value
//! corrupted on disk. After each, other clients must still be served and no
//! process may have died.
//!
//! One cluster serves every case (starting one takes a while); each case
//! works in its own table. No timing is asserted: a case that regressed
//! (exponential matching, quadratic de-duplication) hangs past the generous
//! read timeouts and fails there.

mod common;

use std::time::{Duration, Instant};

use common::{extra_router, show, Conn, RedisServer};
use redis::Value;
use shoal::devcluster::{ClusterOpts, LocalCluster};

/// Nodes refuse values over this (the routers allow far more).
const NODE_MAX_VALUE: usize = 65_536;

fn start(dir: &std::path::Path) -> LocalCluster {
    std::fs::create_dir_all(dir).unwrap();
    let node_conf = dir.join("node.toml");
    std::fs::write(
        &node_conf,
        format!(
            "max_value_len = {NODE_MAX_VALUE}\n\
             # Debug builds on a busy machine: the 200k-key entry (5 MB) takes\n\
             # a while to apply, and openraft gives one AppendEntries no\n\
             # longer than a heartbeat interval to reach a follower.\n\
             write_timeout_ms = 30000\nread_timeout_ms = 30000\n\
             heartbeat_ms = 1500\nelection_timeout_min_ms = 4000\n\
             election_timeout_max_ms = 8000\n"
        ),
    )
    .unwrap();
    let router_conf = dir.join("router.toml");
    // No rebalancing: a replica moving away mid-write makes its outcome
    // unknown (-TRYAGAIN), which is right but not what these cases test.
    std::fs::write(
        &router_conf,
        "request_timeout_ms = 60000\nrebalance = false\n",
    )
    .unwrap();
    let mut opts = ClusterOpts::new(env!("CARGO_BIN_EXE_shoal"), dir.join("cluster"));
    opts.nodes = 3;
    opts.default_shards = 2;
    opts.default_replicas = 3;
    opts.node_args = vec![
        "--config".into(),
        node_conf.display().to_string(),
        "--log-level".into(),
        "warn".into(),
    ];
    opts.router_args = vec!["--config".into(), router_conf.display().to_string()];
    opts.ready_timeout = Duration::from_secs(120);
    LocalCluster::start(opts).expect("cluster starts")
}

/// A connection with a read timeout long enough for debug builds on a
/// loaded machine, working in `table`.
fn conn_in(addr: &str, table: &str) -> Conn {
    let mut c = Conn::connect(addr);
    c.stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    if table != "default" {
        let r = c.line(&format!("TABLE.USE {table}"));
        assert_eq!(r, b"+OK\r\n", "{}", show(&r));
    }
    c
}

fn create_table(addr: &str, name: &str, shards: u32, replicas: u32) {
    let mut c = conn_in(addr, "default");
    let r = c.line(&format!("TABLE.CREATE {name} {shards} {replicas}"));
    assert_eq!(r, b"+OK\r\n", "{}", show(&r));
}

/// Other clients are served and every process is alive.
fn healthy(cluster: &mut LocalCluster, routers: &[&str], after: &str) {
    let exits = cluster.unexpected_exits();
    assert!(
        exits.is_empty(),
        "after {after}: processes died: {exits:?}\n{}",
        cluster.logs()
    );
    for addr in routers {
        let mut c = conn_in(addr, "default");
        let key = format!("health:{after}");
        assert_eq!(c.cmd(&[b"SET", key.as_bytes(), b"ok"]), b"+OK\r\n");
        assert_eq!(c.cmd(&[b"GET", key.as_bytes()]), b"$2\r\nok\r\n");
    }
}

fn int(reply: &[u8]) -> i64 {
    let text = std::str::from_utf8(reply).unwrap();
    match text.strip_prefix(':') {
        Some(n) => n.trim_end().parse().unwrap(),
        None => panic!("not an integer: {}", show(reply)),
    }
}

fn is_error(reply: &[u8], prefix: &str) -> bool {
    reply.starts_with(format!("-{prefix}").as_bytes())
}

#[test]
fn hostile_node() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path());
    let main = cluster.router_addr();
    // A router that lets any value through (1 GiB) but takes only 1 MB of
    // output per reply.
    let (limited, _limited_proc) = extra_router(
        &cluster,
        &dir.path().join("limited"),
        "max_value_len = 1073741824\nmax_output_len = 1000000\nrequest_timeout_ms = 60000\n\
         rebalance = false\n",
        &[],
    );
    let routers = [main.as_str(), limited.as_str()];
    eprintln!("cluster up after {:?}", started.elapsed());

    numbers_with_absurd_exponents(&main, &dir.path().join("redis"));
    healthy(&mut cluster, &routers, "numbers");

    nodes_refuse_values_the_router_let_through(&limited);
    healthy(&mut cluster, &routers, "values");

    pathological_patterns(&main);
    healthy(&mut cluster, &routers, "globs");

    fan_out_replies_are_bounded(&main, &limited);
    healthy(&mut cluster, &routers, "fan-out");

    very_many_keys(&main);
    healthy(&mut cluster, &routers, "many keys");
    eprintln!("hostile input done after {:?}", started.elapsed());

    corruption_is_reported(&mut cluster, &main, dir.path());
    healthy(&mut cluster, &routers, "corruption");
    eprintln!("all done after {:?}", started.elapsed());
}

/// INCRBYFLOAT and friends with exponents that overflow any integer type
/// answer exactly what Redis answers (a debug build used to panic in the
/// state machine on `0e-2147483648`, on every replica, and again on replay).
fn numbers_with_absurd_exponents(main: &str, redis_dir: &std::path::Path) {
    let redis = RedisServer::start(redis_dir);
    let script = [
        "SET f 1",
        "INCRBYFLOAT f 0e-2147483648",
        "INCRBYFLOAT f 1e999999999999",
        "INCRBYFLOAT f -1e2147483648",
        "INCRBYFLOAT f 1e-999999999999",
        "INCRBYFLOAT f 0e99999999999999999999",
        "INCRBYFLOAT f 0.000000000000000000000000000000000000000000000000000000000001",
        "INCRBYFLOAT f 1e-60",
        "GET f",
        "SET g 0e-2147483648",
        "INCRBYFLOAT g 1.5",
        "SET h 1e999999999999",
        "INCRBYFLOAT h 1",
        "INCR h",
        "INCRBY f 99999999999999999999",
        "SET i 9223372036854775807",
        "INCR i",
        "DECRBY i -9223372036854775808",
        "SETRANGE s 9223372036854775807 x",
        "SETRANGE s -1 x",
        "GETRANGE i -9223372036854775808 9223372036854775807",
        "EXPIRE i 9223372036854775807",
        "PEXPIREAT i 9223372036854775807",
        "SET j v EX 9223372036854775807",
    ];
    let mut s = conn_in(main, "default");
    let mut r = Conn::connect(&redis.addr);
    let mut diffs = Vec::new();
    for line in script {
        let (a, b) = (s.line(line), r.line(line));
        if a != b {
            diffs.push(format!(
                "{line}\n  shoal: {}\n  redis: {}",
                show(&a),
                show(&b)
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "differs from Redis:\n{}",
        diffs.join("\n")
    );
    // The group that applied all that still serves.
    assert_eq!(s.line("INCRBYFLOAT f 1"), b"$1\r\n2\r\n");
}

/// A router configured to let 1 GiB values through; the nodes (64 KiB)
/// refuse, Redis's way, and nothing is written.
fn nodes_refuse_values_the_router_let_through(limited: &str) {
    create_table(limited, "values", 2, 1);
    let mut c = conn_in(limited, "values");
    let too_big = b"-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n".to_vec();
    let big = vec![b'x'; NODE_MAX_VALUE + 1];
    assert_eq!(c.cmd(&[b"SET", b"k", &big]), too_big);
    assert_eq!(c.cmd(&[b"GET", b"k"]), b"$-1\r\n");
    assert_eq!(c.cmd(&[b"MSET", b"a", b"1", b"b", &big]), too_big);
    assert_eq!(c.line("EXISTS a b"), b":0\r\n");
    assert_eq!(c.line("SETRANGE k 65536 x"), too_big);
    assert_eq!(c.line("SETRANGE k 65535 x"), b":65536\r\n");
    assert_eq!(c.line("APPEND k y"), too_big);
    assert_eq!(c.line("STRLEN k"), b":65536\r\n");
    assert_eq!(c.cmd(&[b"APPEND", b"k2", &big]), too_big);
    assert_eq!(c.line("EXISTS k2"), b":0\r\n");
    // Bit writes past the limit (the last bit written decides).
    assert_eq!(c.line("SETBIT b 524288 1"), too_big);
    assert_eq!(c.line("BITFIELD b GET u8 0 SET u8 524281 1"), too_big);
    assert_eq!(c.line("EXISTS b"), b":0\r\n");
    assert_eq!(c.line("BITFIELD b SET u8 524280 1"), b"*1\r\n:0\r\n");
    assert_eq!(c.line("STRLEN b"), b":65536\r\n");
    // Inside MULTI the whole EXEC is refused; nothing of it is applied.
    assert_eq!(c.line("MULTI"), b"+OK\r\n");
    assert_eq!(c.line("SET t small"), b"+QUEUED\r\n");
    assert_eq!(c.cmd(&[b"SET", b"t2", &big]), b"+QUEUED\r\n");
    assert_eq!(c.line("EXEC"), too_big);
    assert_eq!(c.line("EXISTS t t2"), b":0\r\n");
    // At the limit is fine.
    let max = vec![b'y'; NODE_MAX_VALUE];
    assert_eq!(c.cmd(&[b"SET", b"k3", &max]), b"+OK\r\n");
    assert_eq!(c.line("STRLEN k3"), b":65536\r\n");
}

/// Patterns that made the old recursive matcher exponential, over keys of a
/// few KB: answered (empty) while another client is served meanwhile.
fn pathological_patterns(main: &str) {
    create_table(main, "globs", 2, 1);
    let mut c = conn_in(main, "globs");
    for i in 0..100 {
        let key = format!("{}{i}", "a".repeat(3000));
        assert_eq!(c.cmd(&[b"SET", key.as_bytes(), b"v"]), b"+OK\r\n");
    }
    let evil = format!("{}*b", "*a".repeat(40));
    let matcher = {
        let (main, evil) = (main.to_string(), evil.clone());
        std::thread::spawn(move || {
            let mut c = conn_in(&main, "globs");
            let keys = c.cmd(&[b"KEYS", evil.as_bytes()]);
            let scan = c.cmd(&[b"SCAN", b"0", b"MATCH", evil.as_bytes(), b"COUNT", b"1000"]);
            let config = c.cmd(&[b"CONFIG", b"GET", evil.as_bytes()]);
            (keys, scan, config)
        })
    };
    // Meanwhile, someone else is served.
    let mut other = conn_in(main, "globs");
    for i in 0..20 {
        let k = format!("other{i}");
        assert_eq!(other.cmd(&[b"SET", k.as_bytes(), b"1"]), b"+OK\r\n");
        assert_eq!(other.cmd(&[b"GET", k.as_bytes()]), b"$1\r\n1\r\n");
    }
    let (keys, scan, config) = matcher.join().expect("the matcher thread");
    assert_eq!(keys, b"*0\r\n", "{}", show(&keys));
    assert!(scan.ends_with(b"*0\r\n"), "{}", show(&scan));
    assert_eq!(config, b"*0\r\n", "{}", show(&config));
    // The same matcher still matches.
    let good = format!("{}*99", "*a".repeat(40));
    let r = c.cmd(&[b"KEYS", good.as_bytes()]);
    assert!(r.starts_with(b"*1\r\n$3002\r\naaa"), "{}", show(&r[..20]));
    assert_eq!(
        c.line("CONFIG GET MAXCLIENT[R-T]"),
        b"*2\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n"
    );
}

/// KEYS, SCAN and MGET whose replies would pass the 1 MB output limit of the
/// limited router answer an error (built nowhere in full); the main router
/// (64 MiB) still answers them.
fn fan_out_replies_are_bounded(main: &str, limited: &str) {
    create_table(main, "fan", 4, 1);
    let mut c = conn_in(main, "fan");
    // About 4 MB of key names, 2 MB of values.
    let n = 2000;
    let key = |i: usize| format!("{i:05}{}", "k".repeat(1995));
    let value = vec![b'v'; 1000];
    let mut pipeline = Vec::new();
    for i in 0..n {
        pipeline.extend(common::encode(&[b"SET", key(i).as_bytes(), &value]));
    }
    c.send_raw(&pipeline);
    for i in 0..n {
        assert_eq!(c.read_reply().unwrap(), b"+OK\r\n", "SET {i}");
    }
    let mut l = conn_in(limited, "fan");
    let too_large = "ERR reply too large";
    let r = l.line("KEYS *");
    assert!(is_error(&r, too_large), "{}", show(&r));
    let r = l.line("KEYS 0*");
    assert!(is_error(&r, too_large), "{}", show(&r));
    let all: Vec<Vec<u8>> = (0..n).map(|i| key(i).into_bytes()).collect();
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(all.iter().map(|k| &k[..]));
    let r = l.cmd(&mget);
    assert!(is_error(&r, too_large), "{}", show(&r[..r.len().min(200)]));
    // So many keys that even nils would not fit: refused before it is sent.
    let nils: Vec<Vec<u8>> = (0..300_000).map(|i| format!("n{i}").into_bytes()).collect();
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(nils.iter().map(|k| &k[..]));
    let r = l.cmd(&mget);
    assert!(is_error(&r, too_large), "{}", show(&r[..r.len().min(200)]));
    // A huge SCAN COUNT gives a bounded page and a cursor to go on with.
    let r = l.line("SCAN 0 COUNT 4000000000");
    assert!(r.len() < 1_100_000, "page of {} bytes", r.len());
    assert!(
        !r.starts_with(b"*2\r\n$1\r\n0\r\n"),
        "cursor 0 after one page"
    );
    // Small replies still pass through the limited router.
    assert_eq!(l.line("KEYS nothing*"), b"*0\r\n");
    assert_eq!(l.line("DBSIZE"), format!(":{n}\r\n").into_bytes());
    // The main router's limit is larger: the full answers.
    let r = c.line("KEYS *");
    assert!(
        r.starts_with(format!("*{n}\r\n").as_bytes()),
        "{}",
        show(&r[..40])
    );
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(all.iter().map(|k| &k[..]));
    assert!(c
        .cmd(&mget)
        .starts_with(format!("*{n}\r\n$1000\r\n").as_bytes()));
    let mut walked = 0;
    let mut cursor = "0".to_string();
    loop {
        let r = c.cmd(&[b"SCAN", cursor.as_bytes(), b"COUNT", b"999999999999"]);
        let text = String::from_utf8_lossy(&r);
        let mut lines = text.split("\r\n");
        lines.next();
        lines.next();
        cursor = lines.next().unwrap().to_string();
        walked += lines.filter(|l| l.starts_with('$')).count();
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(walked, n);
}

/// 200k keys in one command: MSET, EXISTS and DEL de-duplicate in linear
/// time inside the state machine (quadratic would stall every replica for
/// hours); DBSIZE is exact and INFO keyspace shows the node's counter.
fn very_many_keys(main: &str) {
    create_table(main, "big", 1, 3);
    let mut c = conn_in(main, "big");
    let n = 200_000;
    let keys: Vec<Vec<u8>> = (0..n).map(|i| format!("key:{i}").into_bytes()).collect();
    let values: Vec<Vec<u8>> = (0..n).map(|i| format!("v{i}").into_bytes()).collect();
    let mut mset: Vec<&[u8]> = vec![b"MSET"];
    for (k, v) in keys.iter().zip(&values) {
        mset.push(k);
        mset.push(v);
    }
    // Every key named a second time: the later value wins.
    mset.push(b"key:7");
    mset.push(b"again");
    assert_eq!(c.cmd(&mset), b"+OK\r\n");
    assert_eq!(c.line("GET key:0"), b"$2\r\nv0\r\n");
    assert_eq!(c.line("GET key:199999"), b"$7\r\nv199999\r\n");
    assert_eq!(c.line("GET key:7"), b"$5\r\nagain\r\n");
    assert_eq!(int(&c.line("DBSIZE")), n as i64);
    let mut exists: Vec<&[u8]> = vec![b"EXISTS"];
    exists.extend(keys.iter().map(|k| &k[..]));
    exists.extend(keys.iter().map(|k| &k[..]));
    assert_eq!(int(&c.cmd(&exists)), 2 * n as i64);

    // INFO keyspace: the table's line, from counters (eventually exact).
    let index = table_index(main, "big");
    let want = format!("db{index}:keys={n},");
    let mut info = conn_in(main, "default");
    let seen = common::wait_until(Duration::from_secs(60), || {
        String::from_utf8_lossy(&info.line("INFO keyspace")).contains(&want)
    });
    assert!(
        seen,
        "{want} not in {}",
        String::from_utf8_lossy(&info.line("INFO keyspace"))
    );

    let mut del: Vec<&[u8]> = vec![b"DEL"];
    del.extend(keys.iter().map(|k| &k[..]));
    del.extend(keys.iter().map(|k| &k[..]));
    assert_eq!(int(&c.cmd(&del)), n as i64);
    assert_eq!(c.line("DBSIZE"), b":0\r\n");
}

fn table_index(addr: &str, table: &str) -> i64 {
    let d = common::describe_table(&mut common::connect(addr), table);
    let key = ["db_index", "db", "index"]
        .into_iter()
        .find(|k| d.contains_key(*k))
        .unwrap_or_else(|| panic!("no db index in {:?}", d.keys()));
    redis::from_redis_value(&d[key]).unwrap()
}

/// (group id, node) of the only replica of a one-shard, one-replica table.
fn only_replica(addr: &str, table: &str) -> (u64, u64) {
    let d = common::describe_table(&mut common::connect(addr), table);
    let Value::Array(shards) = &d["shards"] else {
        panic!("no shards");
    };
    let shard = common::flat_map(&shards[0]);
    let gid: u64 = redis::from_redis_value(&shard["group_id"]).unwrap();
    let replicas: Vec<u64> = redis::from_redis_value(&shard["replicas"]).unwrap();
    (gid, replicas[0])
}

/// A value made unreadable on disk is an error naming group and key, from
/// every command that meets it; the other keys, and the cluster, carry on.
fn corruption_is_reported(cluster: &mut LocalCluster, main: &str, dir: &std::path::Path) {
    create_table(main, "fragile", 1, 1);
    let mut c = conn_in(main, "fragile");
    assert_eq!(c.line("SET victim 1"), b"+OK\r\n");
    assert_eq!(c.line("SET bystander 2"), b"+OK\r\n");
    let (gid, node) = only_replica(main, "fragile");
    cluster.stop_node(node).unwrap();
    {
        use shoal::shard::engine::{data_key, Cf, Engine, Op};
        let db = cluster.node_dir(node).join("data").join("db");
        assert!(
            db.join("CURRENT").exists(),
            "no RocksDB at {}",
            db.display()
        );
        let engine = Engine::open(&db, true).expect("open the stopped node's RocksDB");
        let junk = Op::Put(Cf::Data, data_key(gid, b"victim"), b"\x01junk".to_vec());
        engine.write_direct(&[junk]).unwrap();
    }
    let _ = std::fs::write(dir.join("corrupted"), format!("group {gid} on node {node}"));
    cluster.start_node(node).unwrap();
    cluster.wait_ready(Duration::from_secs(120)).unwrap();
    let mut c = conn_in(main, "fragile");
    let want = format!("-ERR corrupt data at group {gid} key \"victim\"\r\n").into_bytes();
    let mut got = Vec::new();
    let back = common::wait_until(Duration::from_secs(60), || {
        got = c.line("GET victim");
        got == want
    });
    assert!(back, "GET victim: {}", show(&got));
    for line in [
        "MGET bystander victim",
        "EXISTS victim",
        "STRLEN victim",
        "INCR victim",
        "APPEND victim x",
        "DEL bystander victim",
        "DBSIZE",
        "SCAN 0",
        "KEYS *",
    ] {
        let r = c.line(line);
        assert_eq!(r, want, "{line}: {}", show(&r));
    }
    assert_eq!(c.line("GET bystander"), b"$1\r\n2\r\n");
    // Overwriting the key is how an operator repairs it.
    assert_eq!(c.line("SET victim 3"), b"+OK\r\n");
    assert_eq!(c.line("GET victim"), b"$1\r\n3\r\n");
    assert_eq!(c.line("DBSIZE"), b":2\r\n");
}
