//! Real Redis clients against a real 3-node cluster (8 shards × 3 replicas):
//! `redis-cli` (scripted and `--pipe`), `redis-benchmark`, the Rust `redis`
//! crate (sync, async, pipelines, `ConnectionManager`, a `redis://…/0` URL)
//! and Python's `redis` package (installed from PyPI into a throwaway venv).
//! Also: full SCAN over 10,000 keys, AUTH, every client limit, and READONLY
//! reads while a shard has lost its majority. The sub-cases share one
//! cluster and run in order (the READONLY one, which stops nodes, last).

#[path = "../common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{cluster, extra_router, show, wait_until, Conn};
use shoal::devcluster::LocalCluster;

fn host_port(addr: &str) -> (String, String) {
    let (h, p) = addr.rsplit_once(':').unwrap();
    (h.to_string(), p.to_string())
}

fn redis_cli(addr: &str, args: &[&str]) -> String {
    let (h, p) = host_port(addr);
    let out = Command::new("redis-cli")
        .args(["-h", &h, "-p", &p])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// Make a venv with the `redis` package; fails loudly without PyPI.
fn python_with_redis(dir: &Path) -> PathBuf {
    let venv = dir.join("venv");
    let mut errors = String::new();
    // The first python3 on PATH, else the system one (some builds lack a
    // working ensurepip). cargo's LD_LIBRARY_PATH must not leak into them.
    for python in ["python3", "/usr/bin/python3"] {
        let _ = std::fs::remove_dir_all(&venv);
        let out = Command::new(python)
            .args(["-m", "venv"])
            .arg(&venv)
            .env_remove("LD_LIBRARY_PATH")
            .output();
        match out {
            Ok(o) if o.status.success() => break,
            Ok(o) => errors.push_str(&format!(
                "{python} -m venv: {}\n",
                String::from_utf8_lossy(&o.stderr)
            )),
            Err(e) => errors.push_str(&format!("{python}: {e}\n")),
        }
    }
    assert!(
        venv.join("bin/pip").exists(),
        "cannot make a venv:\n{errors}"
    );
    let out = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check", "redis"])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("pip runs");
    assert!(
        out.status.success(),
        "pip install redis failed (is PyPI reachable?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    venv.join("bin/python")
}

fn step(started: Instant, name: &str) {
    eprintln!("[{:>6.1?}] {name}", started.elapsed());
}

#[test]
fn real_clients() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let py_dir = dir.path().join("py");
    std::fs::create_dir_all(&py_dir).unwrap();
    let py = std::thread::spawn(move || python_with_redis(&py_dir));
    let mut cl = cluster(&dir.path().join("cluster"), 3, 8, 3);
    let addr = cl.router_addr();
    step(started, "cluster ready");

    redis_cli_scripted(&addr);
    step(started, "redis-cli scripted");
    redis_cli_pipe(&addr);
    step(started, "redis-cli --pipe 10,000 keys, read back");
    scan_each_key_once(&addr);
    step(started, "SCAN 10,000 keys exactly once");
    redis_benchmark(&addr);
    step(started, "redis-benchmark");
    rust_redis_sync(&addr);
    rust_redis_async(&addr);
    step(started, "redis crate");
    let python = py.join().expect("venv thread");
    python_redis(&python, &addr);
    step(started, "python redis");
    auth(&cl, &dir.path().join("auth"), &addr);
    step(started, "AUTH");
    limits(&cl, &dir.path().join("limits"), &addr);
    step(started, "limits");
    readonly_without_majority(&mut cl);
    step(started, "READONLY without a majority");
}

fn redis_cli_scripted(addr: &str) {
    assert_eq!(redis_cli(addr, &["PING"]), "PONG");
    assert_eq!(redis_cli(addr, &["SET", "cli:a", "hello"]), "OK");
    assert_eq!(redis_cli(addr, &["GET", "cli:a"]), "hello");
    assert_eq!(redis_cli(addr, &["APPEND", "cli:a", " world"]), "11");
    assert_eq!(redis_cli(addr, &["INCRBY", "cli:n", "41"]), "41");
    assert_eq!(redis_cli(addr, &["INCR", "cli:n"]), "42");
    assert_eq!(
        redis_cli(addr, &["MGET", "cli:a", "cli:n", "cli:none"]),
        "hello world\n42"
    );
    assert_eq!(
        redis_cli(addr, &["MSET", "{u1}a", "1", "{u1}b", "2"]),
        "OK",
        "hash-tagged MSET is one shard"
    );
    let cross = redis_cli(
        addr,
        &[
            "MSET", "cli:x", "1", "cli:y", "2", "cli:z", "3", "cli:w", "4",
        ],
    );
    assert_eq!(cross, "OK", "cross-shard MSET is one transaction");
    assert_eq!(
        redis_cli(addr, &["EXISTS", "cli:x", "cli:y", "cli:z", "cli:w"]),
        "4",
        "every key of the MSET applied"
    );
    assert_eq!(
        redis_cli(addr, &["MSETNX", "cli:x", "9", "cli:new", "9"]),
        "0",
        "MSETNX with an existing key sets nothing"
    );
    assert_eq!(redis_cli(addr, &["EXISTS", "cli:new"]), "0");
    assert_eq!(
        redis_cli(addr, &["DEL", "cli:x", "cli:y", "cli:z", "cli:w"]),
        "4"
    );
    assert_eq!(redis_cli(addr, &["EXPIRE", "cli:a", "100"]), "1");
    // Seconds, rounded as Redis does; a loaded machine may take over half a
    // second between the two redis-cli runs (CI saw 99).
    let ttl = redis_cli(addr, &["TTL", "cli:a"]);
    assert!(
        ttl.parse::<i64>().is_ok_and(|t| (90..=100).contains(&t)),
        "TTL after EXPIRE 100: {ttl}"
    );
    assert_eq!(redis_cli(addr, &["TYPE", "cli:a"]), "string");
    assert_eq!(
        redis_cli(addr, &["DEL", "cli:a", "cli:n", "{u1}a", "{u1}b"]),
        "4"
    );
    // Interactive-style script on stdin, as redis-cli users do.
    let (h, p) = host_port(addr);
    let mut child = Command::new("redis-cli")
        .args(["-h", &h, "-p", &p])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"SET cli:s 5\nINCRBYFLOAT cli:s 0.5\nGETRANGE cli:s 0 0\nGETDEL cli:s\nGET cli:s\n",
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "OK\n5.5\n5\n5.5\n\n");
}

/// Mass insertion of 10,000 keys. A connection's commands run one after
/// another (each write is a Raft round), so the bulk goes in as MSETs of 100
/// hash-tagged keys (100 tags, spread over all 8 shards), plus 500 plain SETs.
fn redis_cli_pipe(addr: &str) {
    let mut input = Vec::new();
    let mut commands = 0;
    for group in 0..95 {
        let mut args: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
        for j in 0..100 {
            let i = group * 100 + j;
            args.push(format!("pipe:{{g{group}}}{i:05}").into_bytes());
            args.push(format!("value-{i}").into_bytes());
        }
        let refs: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
        input.extend(common::encode(&refs));
        commands += 1;
    }
    for i in 9_500..10_000 {
        input.extend(common::encode(&[
            b"SET",
            key(i).as_bytes(),
            format!("value-{i}").as_bytes(),
        ]));
        commands += 1;
    }
    let (h, p) = host_port(addr);
    let mut child = Command::new("redis-cli")
        .args(["-h", &h, "-p", &p, "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("errors: 0, replies: {commands}")),
        "{text}"
    );
    // Read everything back through MGET fan-out, in batches.
    let client = redis::Client::open(format!("redis://{addr}/0")).unwrap();
    let mut con = client.get_connection().unwrap();
    for batch in (0..10_000).collect::<Vec<_>>().chunks(500) {
        let keys: Vec<String> = batch.iter().map(|i| key(*i)).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut con).unwrap();
        for (i, v) in batch.iter().zip(values) {
            assert_eq!(v.as_deref(), Some(format!("value-{i}").as_str()));
        }
    }
    let n: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert!(n >= 10_000, "DBSIZE {n}");
}

/// The name of mass-inserted key `i`.
fn key(i: usize) -> String {
    if i < 9_500 {
        format!("pipe:{{g{}}}{i:05}", i / 100)
    } else {
        format!("pipe:{i:05}")
    }
}

fn scan_each_key_once(addr: &str) {
    let client = redis::Client::open(format!("redis://{addr}")).unwrap();
    let mut con = client.get_connection().unwrap();
    let mut seen = HashSet::new();
    let mut cursor: u64 = 0;
    let mut calls = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("pipe:*")
            .arg("COUNT")
            .arg(100)
            .query(&mut con)
            .unwrap();
        for k in keys {
            assert!(seen.insert(k.clone()), "{k} returned twice");
        }
        calls += 1;
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(seen.len(), 10_000, "after {calls} SCAN calls");
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("pipe:*0000?")
        .query(&mut con)
        .unwrap();
    keys.sort();
    let mut want: Vec<String> = (0..10).map(key).collect();
    want.sort();
    assert_eq!(keys, want);
}

fn redis_benchmark(addr: &str) {
    let (h, p) = host_port(addr);
    let out = Command::new("redis-benchmark")
        .args([
            "-h",
            &h,
            "-p",
            &p,
            "-t",
            "set,get,incr,mset,ping",
            "-n",
            "2000",
            "-c",
            "50",
            "-q",
        ])
        .output()
        .expect("redis-benchmark runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.to_lowercase().contains("error"), "{text}");
    for t in ["SET:", "GET:", "INCR:", "MSET (10 keys):"] {
        assert!(text.contains(&format!("{t} ")), "no {t} result: {text}");
    }
    eprintln!(
        "{}",
        text.replace('\r', "\n")
            .lines()
            .filter(|l| l.contains("requests per second"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn rust_redis_sync(addr: &str) {
    let client = redis::Client::open(format!("redis://{addr}/0")).unwrap();
    let mut con = client.get_connection().unwrap();
    let _: () = redis::cmd("SET")
        .arg("rs:k")
        .arg("v")
        .query(&mut con)
        .unwrap();
    let v: String = redis::cmd("GET").arg("rs:k").query(&mut con).unwrap();
    assert_eq!(v, "v");
    let (a, b, c): (i64, i64, Option<String>) = redis::pipe()
        .cmd("INCR")
        .arg("rs:n")
        .cmd("INCRBY")
        .arg("rs:n")
        .arg(9)
        .cmd("GET")
        .arg("rs:none")
        .query(&mut con)
        .unwrap();
    assert_eq!((a, b, c), (1, 10, None));
    let _: () = redis::cmd("PEXPIRE")
        .arg("rs:k")
        .arg(200)
        .query(&mut con)
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || {
        redis::cmd("EXISTS")
            .arg("rs:k")
            .query::<i64>(&mut con)
            .unwrap()
            == 0
    }));
    // An atomic pipeline is MULTI/EXEC; keys on several shards.
    let (x, y, n): (String, String, i64) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("rs:tx:a")
        .arg("1")
        .ignore()
        .cmd("SET")
        .arg("rs:tx:b")
        .arg("2")
        .ignore()
        .cmd("GET")
        .arg("rs:tx:a")
        .cmd("GET")
        .arg("rs:tx:b")
        .cmd("INCR")
        .arg("rs:n")
        .query(&mut con)
        .unwrap();
    assert_eq!((x.as_str(), y.as_str(), n), ("1", "2", 11));
    // redis::transaction retries on WATCH conflicts.
    let total: i64 = redis::transaction(&mut con, &["rs:tx:a", "rs:tx:b"], |con, pipe| {
        let (a, b): (i64, i64) = redis::cmd("MGET")
            .arg("rs:tx:a")
            .arg("rs:tx:b")
            .query(con)?;
        pipe.set("rs:tx:a", a - 1)
            .ignore()
            .set("rs:tx:b", b + 1)
            .ignore()
            .get("rs:tx:a")
            .query(con)
            .map(|r: Option<(i64,)>| r.map(|(a,)| a + b + 1))
    })
    .unwrap();
    assert_eq!(total, 3);
    let err = redis::cmd("INCR")
        .arg("rs:n2")
        .arg("x")
        .query::<i64>(&mut con)
        .unwrap_err();
    assert!(
        err.to_string().contains("wrong number of arguments"),
        "{err}"
    );
}

fn rust_redis_async(addr: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = redis::Client::open(format!("redis://{addr}/0")).unwrap();
        let mut mgr = redis::aio::ConnectionManager::new(client.clone())
            .await
            .unwrap();
        let mut pipe = redis::pipe();
        for i in 0..100 {
            pipe.cmd("SET").arg(format!("as:{i}")).arg(i).ignore();
        }
        let _: () = pipe.query_async(&mut mgr).await.unwrap();
        let keys: Vec<String> = (0..100).map(|i| format!("as:{i}")).collect();
        let vals: Vec<i64> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut mgr)
            .await
            .unwrap();
        assert_eq!(vals, (0..100).collect::<Vec<_>>());
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let deleted: i64 = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(deleted, 100);
        let f: f64 = redis::cmd("INCRBYFLOAT")
            .arg("as:f")
            .arg(2.5)
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(f, 2.5);
    });
}

fn python_redis(python: &Path, addr: &str) {
    let (h, p) = host_port(addr);
    let script = format!(
        r#"
import redis, time
pool = redis.ConnectionPool(host="{h}", port={p}, db=0)
r = redis.Redis(connection_pool=pool, decode_responses=True)
assert r.ping()
r.set("py:a", "1")
assert r.get("py:a") == b"1"
assert r.incr("py:a") == 2
pipe = r.pipeline(transaction=False)
for i in range(200):
    pipe.set(f"py:k{{i}}", i)
pipe.execute()
assert sorted(k.decode() for k in r.scan_iter("py:k*", count=50)) == sorted(f"py:k{{i}}" for i in range(200))
assert r.mget(["py:k1", "py:k2", "py:none"]) == [b"1", b"2", None]
r.set("py:t", "v", px=200)
assert 0 < r.pttl("py:t") <= 200
deadline = time.time() + 5
while r.exists("py:t") and time.time() < deadline:
    time.sleep(0.05)
assert not r.exists("py:t")
assert r.expire("py:a", 100) and r.ttl("py:a") == 100
assert r.type("py:a") == b"string"
assert r.getrange("py:k12", 0, 0) == b"1"
assert r.setnx("py:a", "x") is False
r3 = redis.Redis(host="{h}", port={p}, protocol=3)
assert r3.get("py:none") is None and r3.incrbyfloat("py:f", 1.5) == 1.5
assert r.delete(*[f"py:k{{i}}" for i in range(200)]) == 200
r.mset({{"py:acct:1": 10, "py:acct:2": 10}})
def transfer(pipe):
    a = int(pipe.get("py:acct:1"))
    b = int(pipe.get("py:acct:2"))
    pipe.multi()
    pipe.set("py:acct:1", a - 3)
    pipe.set("py:acct:2", b + 3)
r.transaction(transfer, "py:acct:1", "py:acct:2")
assert r.mget(["py:acct:1", "py:acct:2"]) == [b"7", b"13"]
with r.pipeline(transaction=True) as pipe:
    pipe.watch("py:acct:1")
    pipe.multi()
    pipe.incr("py:acct:1")
    r.set("py:acct:1", 100)
    try:
        pipe.execute()
        raise SystemExit("WATCH conflict not reported")
    except redis.WatchError:
        pass
assert r.get("py:acct:1") == b"100"
with r.pipeline(transaction=True) as pipe:
    pipe.set("py:acct:1", 1).incr("py:acct:2").get("py:acct:1")
    assert pipe.execute() == [True, 14, b"1"]
print("ok")
"#
    );
    let out = Command::new(python).arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "python failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_serves(addr: &str) {
    let mut c = Conn::connect(addr);
    assert_eq!(c.line("PING"), b"+PONG\r\n");
    assert_eq!(c.line("SET serves:k v"), b"+OK\r\n");
    assert_eq!(c.line("GET serves:k"), b"$1\r\nv\r\n");
}

fn auth(cl: &LocalCluster, dir: &Path, main: &str) {
    let (addr, _router) = extra_router(cl, dir, "", &["--requirepass", "s3cret"]);
    let mut c = Conn::connect(&addr);
    assert_eq!(c.line("GET k"), b"-NOAUTH Authentication required.\r\n");
    assert_eq!(c.line("PING"), b"-NOAUTH Authentication required.\r\n");
    assert_eq!(
        c.line("AUTH wrong"),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(
        c.line("AUTH bob s3cret"),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(c.line("GET k"), b"-NOAUTH Authentication required.\r\n");
    assert_eq!(c.line("AUTH default s3cret"), b"+OK\r\n");
    assert_eq!(c.line("PING"), b"+PONG\r\n");
    let mut d = Conn::connect(&addr);
    assert_eq!(c.line("AUTH s3cret"), b"+OK\r\n");
    assert!(d
        .line("HELLO 3 AUTH default nope")
        .starts_with(b"-WRONGPASS"));
    assert!(d.line("HELLO 3 AUTH default s3cret").starts_with(b"%"));
    assert_eq!(d.line("GET auth:none"), b"_\r\n");
    assert_eq!(d.line("RESET"), b"+RESET\r\n");
    assert_eq!(d.line("GET k"), b"-NOAUTH Authentication required.\r\n");
    let mut q = Conn::connect(&addr);
    assert_eq!(q.line("QUIT"), b"+OK\r\n");
    // A client library with the password in its URL.
    let client = redis::Client::open(format!("redis://:s3cret@{addr}/0")).unwrap();
    let mut con = client.get_connection().unwrap();
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    // The main router (no password) is unaffected.
    assert_serves(main);
}

fn limits(cl: &LocalCluster, dir: &Path, main: &str) {
    let toml = "max_clients = 4\nmax_bulk_len = 1048576\nmax_args = 100\nmax_inline_len = 1024\nmax_value_len = 262144\nmax_output_len = 4194304\n";
    let (addr, _router) = extra_router(cl, dir, toml, &[]);
    let mut probe = Conn::connect(&addr);

    // Bulk length over the cap: protocol error and close, before any data.
    let mut c = Conn::connect(&addr);
    c.send_raw(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000000\r\n");
    assert_eq!(
        c.read_reply().unwrap(),
        b"-ERR Protocol error: invalid bulk length\r\n"
    );
    assert!(c.is_closed(Duration::from_secs(5)));
    assert_eq!(probe.line("PING"), b"+PONG\r\n");

    // Argument count.
    let mut c = Conn::connect(&addr);
    c.send_raw(b"*101\r\n");
    assert_eq!(
        c.read_reply().unwrap(),
        b"-ERR Protocol error: invalid multibulk length\r\n"
    );
    assert!(c.is_closed(Duration::from_secs(5)));
    let mut c = Conn::connect(&addr);
    c.send_raw(b"*1000000000\r\n");
    assert_eq!(
        c.read_reply().unwrap(),
        b"-ERR Protocol error: invalid multibulk length\r\n"
    );

    // Inline length.
    let mut c = Conn::connect(&addr);
    c.send_raw(&vec![b'a'; 2000]);
    assert_eq!(
        c.read_reply().unwrap(),
        b"-ERR Protocol error: too big inline request\r\n"
    );
    assert!(c.is_closed(Duration::from_secs(5)));
    assert_eq!(probe.line("PING"), b"+PONG\r\n");

    // Value size.
    let mut c = Conn::connect(&addr);
    let big = vec![b'v'; 262_145];
    assert_eq!(
        c.cmd(&[b"SET", b"lim:big", &big]),
        b"-ERR value is too large\r\n"
    );
    assert_eq!(
        c.cmd(&[b"MSET", b"lim:big", &big]),
        b"-ERR value is too large\r\n"
    );
    let value = vec![b'v'; 262_144];
    assert_eq!(c.cmd(&[b"SET", b"lim:big", &value]), b"+OK\r\n");
    assert_eq!(
        c.line("APPEND lim:big x"),
        b"-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n"
    );
    drop(c);

    // A client that pipelines big GETs and never reads: its unread replies
    // pass max_output_len (4 MiB) and it is disconnected; memory stays bounded.
    let rss = |c: &mut Conn| -> u64 {
        let info = String::from_utf8_lossy(&c.line("INFO memory")).into_owned();
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    };
    let before = rss(&mut probe);
    let mut slow = Conn::connect(&addr);
    slow.stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let get = common::encode(&[b"GET", b"lim:big"]);
    let mut sent = 0;
    let mut closed = false;
    // 2,000 GETs would be 500 MiB of replies.
    for _ in 0..2_000 {
        if slow.stream.write_all(&get).is_err() {
            closed = true;
            break;
        }
        sent += 1;
    }
    let after = rss(&mut probe);
    assert!(
        closed || slow.is_closed(Duration::from_secs(10)),
        "slow client still connected after {sent} GETs"
    );
    eprintln!(
        "slow client: {sent} GETs sent before the close; router RSS {before} -> {after} bytes"
    );
    assert!(
        after < before + 64 * 1024 * 1024,
        "router grew from {before} to {after} bytes"
    );
    assert_eq!(probe.line("PING"), b"+PONG\r\n");

    // Client count: probe + 3 more reach max_clients = 4; the next is refused.
    let mut held: Vec<Conn> = (0..3).map(|_| Conn::connect(&addr)).collect();
    for h in &mut held {
        assert_eq!(h.line("PING"), b"+PONG\r\n");
    }
    let mut extra = Conn::connect(&addr);
    assert_eq!(
        extra.read_reply().unwrap(),
        b"-ERR max number of clients reached\r\n"
    );
    assert!(extra.is_closed(Duration::from_secs(5)));
    drop(held.pop());
    assert!(wait_until(Duration::from_secs(5), || {
        let mut c = Conn::connect(&addr);
        c.send(&[b"PING"]);
        c.read_reply().as_deref() == Some(b"+PONG\r\n")
    }));
    drop(held);
    assert_eq!(probe.line("PING"), b"+PONG\r\n");
    assert_serves(main);
    let _ = show(b"");
}

fn readonly_without_majority(cl: &mut LocalCluster) {
    let addr = cl.router_addr();
    let mut c = Conn::connect(&addr);
    assert_eq!(c.line("SET ro:k hello"), b"+OK\r\n");
    let mut r = Conn::connect(&addr);
    assert_eq!(r.line("READONLY"), b"+OK\r\n");
    // Every replica has it before the majority goes.
    assert!(wait_until(Duration::from_secs(10), || {
        (0..6).all(|_| r.line("GET ro:k") == b"$5\r\nhello\r\n")
    }));
    cl.stop_node(2).unwrap();
    cl.stop_node(3).unwrap();
    for _ in 0..3 {
        assert_eq!(r.line("GET ro:k"), b"$5\r\nhello\r\n");
    }
    assert_eq!(r.line("MGET ro:k ro:none"), b"*2\r\n$5\r\nhello\r\n$-1\r\n");
    let set = c.line("SET ro:k other");
    assert!(set.starts_with(b"-CLUSTERDOWN"), "{}", show(&set));
    // READONLY connections still write through the leader (and fail here).
    let set = r.line("SET ro:k other");
    assert!(set.starts_with(b"-CLUSTERDOWN"), "{}", show(&set));
    assert_eq!(r.line("READWRITE"), b"+OK\r\n");
    let get = r.line("GET ro:k");
    assert!(get.starts_with(b"-CLUSTERDOWN"), "{}", show(&get));
}
