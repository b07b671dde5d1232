//! Helpers shared by the integration tests: a raw RESP connection that reads
//! whole replies as bytes, a throwaway `redis-server` to compare against, and
//! extra routers with their own configuration.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use shoal::devcluster::{free_port, resp_request, wait_tcp, ClusterOpts, LocalCluster, Proc};
use shoal::shard::engine::{group_range, Cf, Engine};

/// Start a cluster under `dir` and wait until it accepts writes.
pub fn cluster(dir: &Path, nodes: usize, shards: u32, replicas: u32) -> LocalCluster {
    cluster_with_routers(dir, nodes, shards, replicas, &[])
}

/// [`cluster`] with these flags for its router.
pub fn cluster_with_routers(
    dir: &Path,
    nodes: usize,
    shards: u32,
    replicas: u32,
    router_args: &[&str],
) -> LocalCluster {
    let node_args = ["--log-level", "warn"];
    cluster_with(dir, (nodes, shards, replicas), &node_args, router_args)
}

/// A cluster of `nodes` whose table `default` has `shards` x `replicas`,
/// with these flags for its nodes and its router.
pub fn cluster_with(
    dir: &Path,
    (nodes, shards, replicas): (usize, u32, u32),
    node_args: &[&str],
    router_args: &[&str],
) -> LocalCluster {
    let mut opts = ClusterOpts::new(env!("CARGO_BIN_EXE_shoal"), dir);
    opts.nodes = nodes;
    opts.default_shards = shards;
    opts.default_replicas = replicas;
    opts.node_args = node_args.iter().map(|a| a.to_string()).collect();
    opts.router_args = router_args.iter().map(|a| a.to_string()).collect();
    LocalCluster::start(opts).expect("cluster starts")
}

/// Encode a command as a RESP multibulk request.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Length of the first complete RESP2/RESP3 reply in `buf`, if complete.
pub fn reply_len(buf: &[u8]) -> Option<usize> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let head = buf.first()?;
    let after_line = line_end + 2;
    let num = || -> Option<i64> { std::str::from_utf8(&buf[1..line_end]).ok()?.parse().ok() };
    match head {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Some(after_line),
        b'$' | b'!' | b'=' => {
            let n = num()?;
            if n < 0 {
                return Some(after_line);
            }
            let end = after_line + n as usize + 2;
            (buf.len() >= end).then_some(end)
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = num()?;
            if n < 0 {
                return Some(after_line);
            }
            let items = if matches!(head, b'%' | b'|') {
                2 * n
            } else {
                n
            };
            let mut pos = after_line;
            for _ in 0..items {
                pos += reply_len(&buf[pos..])?;
            }
            if *head == b'|' {
                // An attribute precedes the actual reply.
                pos += reply_len(&buf[pos..])?;
            }
            Some(pos)
        }
        _ => None,
    }
}

/// A raw RESP connection.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn connect(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, args: &[&[u8]]) {
        self.stream.write_all(&encode(args)).expect("write");
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Read one whole reply (raw bytes); `None` when the server closed.
    pub fn read_reply(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(n) = reply_len(&self.buf) {
                return Some(self.buf.drain(..n).collect());
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Send a command and read its reply.
    pub fn cmd(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send(args);
        self.read_reply().expect("a reply")
    }

    /// `cmd` with space-separated textual arguments.
    pub fn line(&mut self, line: &str) -> Vec<u8> {
        let parts = split(line);
        let refs: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
        self.cmd(&refs)
    }

    /// Whether the server closed the connection (reads EOF or reset).
    pub fn is_closed(&mut self, within: Duration) -> bool {
        self.stream.set_read_timeout(Some(within)).unwrap();
        let mut chunk = vec![0u8; 1 << 20];
        let deadline = Instant::now() + within;
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return false
                }
                Err(_) => return true,
            }
            if Instant::now() > deadline {
                return false;
            }
        }
    }
}

/// Split a command line on spaces; `""` is an empty argument.
pub fn split(line: &str) -> Vec<Vec<u8>> {
    line.split(' ')
        .map(|p| {
            if p == "\"\"" {
                Vec::new()
            } else {
                p.as_bytes().to_vec()
            }
        })
        .collect()
}

/// Printable form of reply bytes, for assertion messages.
pub fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).replace("\r\n", "\\r\\n")
}

/// A throwaway `redis-server` on a free port, killed on drop.
pub struct RedisServer {
    pub addr: String,
    _proc: Proc,
}

impl RedisServer {
    pub fn start(dir: &Path) -> RedisServer {
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
        ])
        .arg(dir);
        let proc = Proc::spawn("redis-server", cmd, dir).expect("redis-server starts");
        let addr = format!("127.0.0.1:{port}");
        wait_tcp(&addr, Duration::from_secs(10)).expect("redis-server listens");
        RedisServer { addr, _proc: proc }
    }
}

/// An extra router for `cluster` with its own TOML configuration and flags.
pub fn extra_router(
    cluster: &LocalCluster,
    dir: &Path,
    toml: &str,
    flags: &[&str],
) -> (String, Proc) {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("router.toml");
    std::fs::write(&config, toml).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.arg("router")
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg(&addr)
        .arg("--etcd")
        .arg(cluster.etcd_url())
        .args(flags);
    let proc = Proc::spawn("router", cmd, dir).expect("router starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match resp_request(&addr, &["PING"], Duration::from_secs(2)) {
            Ok(r) if r == "+PONG" || r.starts_with("-NOAUTH") => break,
            _ if Instant::now() > deadline => panic!("router {addr} did not answer"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    (addr, proc)
}

/// Poll `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `redis` crate connection to a router, with a generous read timeout
/// (commands may wait out a leader election).
pub fn connect(addr: &str) -> redis::Connection {
    let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
    let con = client.get_connection().unwrap();
    con.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    con
}

/// Run a command given as words.
pub fn run(con: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con)
}

/// Run a command that must answer `+OK`.
pub fn ok(con: &mut redis::Connection, args: &[&str]) {
    match run(con, args) {
        Ok(redis::Value::Okay) => {}
        other => panic!("{args:?}: expected OK, got {other:?}"),
    }
}

/// A RESP2-flattened map (`[k1, v1, k2, v2, ...]`) as field -> value.
pub fn flat_map(v: &redis::Value) -> std::collections::HashMap<String, redis::Value> {
    let redis::Value::Array(items) = v else {
        panic!("not a map: {v:?}")
    };
    items
        .chunks(2)
        .map(|kv| {
            let k: String = redis::from_redis_value(&kv[0]).unwrap();
            (k, kv[1].clone())
        })
        .collect()
}

/// TABLE.DESCRIBE as field -> value.
pub fn describe_table(
    con: &mut redis::Connection,
    name: &str,
) -> std::collections::HashMap<String, redis::Value> {
    flat_map(&run(con, &["TABLE.DESCRIBE", name]).unwrap())
}

/// A request as a test script writes it: a line split on spaces (`""` is
/// an empty argument), or the arguments themselves.
pub trait Request: std::fmt::Debug {
    fn args(&self) -> Vec<Vec<u8>>;
}

impl Request for &str {
    fn args(&self) -> Vec<Vec<u8>> {
        split(self)
    }
}

impl Request for &[&str] {
    fn args(&self) -> Vec<Vec<u8>> {
        self.iter().map(|a| a.as_bytes().to_vec()).collect()
    }
}

/// Run every request on both servers and collect those whose replies differ.
pub fn mismatches<R: Request>(shoal: &mut Conn, redis: &mut Conn, script: &[R]) -> Vec<String> {
    let mut out = Vec::new();
    for req in script {
        let args = req.args();
        let refs: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
        let a = shoal.cmd(&refs);
        let b = redis.cmd(&refs);
        if a != b {
            out.push(format!(
                "{req:?}\n    shoal: {}\n    redis: {}",
                show(&a),
                show(&b)
            ));
        }
    }
    out
}

/// Run `script` on both servers in RESP2, then again after `HELLO 3`; every
/// reply must be the same bytes.
pub fn assert_same_as_redis<R: Request>(shoal: &mut Conn, redis: &mut Conn, script: &[R]) {
    let mut diffs = mismatches(shoal, redis, script);
    assert!(shoal.line("HELLO 3").starts_with(b"%"));
    assert!(redis.line("HELLO 3").starts_with(b"%"));
    diffs.extend(mismatches(shoal, redis, script));
    assert!(
        diffs.is_empty(),
        "replies differ from Redis:\n{}",
        diffs.join("\n")
    );
}

/// The shard of `key` in a table of `shards` shards (fixed slot ranges).
pub fn shard_of(key: &str, shards: usize) -> usize {
    let s = shoal::slot::slot(key.as_bytes());
    shoal::meta::descriptor::slot_ranges(shards)
        .iter()
        .position(|r| r[0] <= s && s <= r[1])
        .unwrap()
}

/// `GET path` on `addr`: status code and body (0 when nothing listens).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    // Nothing listening (yet): status 0.
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// Samples of a scrape: `name{labels}` -> value.
pub fn samples(body: &str) -> std::collections::BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Sum of every sample of metric `name` (any labels).
pub fn total(s: &std::collections::BTreeMap<String, f64>, name: &str) -> f64 {
    s.iter()
        .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

/// Node flags of a [`cluster_with`] whose nodes serve metrics on a port of
/// their own each (`LocalCluster::metrics_addrs`).
pub const METRICS_NODE_ARGS: [&str; 4] = ["--log-level", "info", "--metrics-listen", "127.0.0.1:0"];

/// 3 nodes (table `default`: 2 shards x 3 replicas) and an extra router,
/// every process serving metrics on a port of its own: the cluster, the
/// router's address, and the metrics addresses by process name (`node-1`
/// ... `node-3`, `router-2`).
pub fn metrics_cluster(
    dir: &Path,
) -> (
    LocalCluster,
    String,
    std::collections::BTreeMap<String, String>,
) {
    metrics_cluster_on(dir, &[])
}

/// [`metrics_cluster`] with more router arguments (`--default-engine`).
pub fn metrics_cluster_on(
    dir: &Path,
    router_args: &[&str],
) -> (
    LocalCluster,
    String,
    std::collections::BTreeMap<String, String>,
) {
    let mut cl = cluster_with(dir, (3, 2, 3), &METRICS_NODE_ARGS, router_args);
    let router = cl
        .add_router_with(&["--log-level", "info", "--metrics-listen", "127.0.0.1:0"])
        .unwrap();
    let mut addrs = Default::default();
    assert!(
        wait_until(Duration::from_secs(10), || {
            addrs = cl.metrics_addrs();
            addrs.len() == 4
        }),
        "metrics addresses logged: {addrs:?}"
    );
    (cl, router, addrs)
}

/// The path of `program` on PATH.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// Table `default` and each shard's current leader, asked of the nodes.
pub fn leaders(
    cluster: &LocalCluster,
) -> (
    shoal::meta::descriptor::TableDescriptor,
    std::collections::HashMap<u64, u64>,
) {
    let etcd = cluster.etcd_url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let meta = shoal::meta::etcd::Meta::connect(&[etcd], "default")
            .await
            .unwrap();
        let (table, _) = meta.get_table("default").await.unwrap().unwrap();
        let client = shoal::cluster::client::ShardClient::new(
            shoal::cluster::routes::follow(&meta).await.unwrap(),
            shoal::cluster::client::ClientConfig::default(),
        );
        let mut out = std::collections::HashMap::new();
        for node in meta.live_nodes().await.unwrap().keys() {
            if let Ok(status) = client.node_status(*node, vec![]).await {
                for g in status.groups {
                    if g.role == "leader" {
                        out.insert(g.group_id, *node);
                    }
                }
            }
        }
        (table, out)
    })
}

/// Wait (30 s at most) until `cond` holds; on timeout, panic with the
/// cluster's logs.
pub fn wait_for_cluster(
    what: &str,
    cluster: &mut LocalCluster,
    mut cond: impl FnMut(&LocalCluster) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond(cluster) {
        if Instant::now() > deadline {
            panic!("timed out waiting until {what}\n{}", cluster.logs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Rows of a stopped node's RocksDB that belong to any of `gids`.
pub fn rows_for_groups(node_dir: &Path, gids: &[u64]) -> usize {
    let engine = Engine::open(&node_dir.join("data").join("db"), false).unwrap();
    let view = engine.view();
    let mut n = 0;
    for gid in gids {
        let (start, end) = group_range(*gid);
        for cf in [Cf::Log, Cf::State, Cf::Data] {
            n += view.scan(cf, &start, &end, usize::MAX).unwrap().len();
        }
    }
    n
}
