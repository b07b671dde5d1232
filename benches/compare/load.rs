//! Our own load client, the same for all three systems: N connections, each
//! with one request in flight (like redis-benchmark without -P), random keys
//! `key:<12 digits>` from a fixed key space (redis-benchmark's `-r` format),
//! 64-byte values, a warm-up that is not measured, then a fixed measuring
//! window. Every latency is kept (nanoseconds), so percentiles are exact.
//!
//! RESP is spoken directly over tokio (no client library): the client must
//! cost as little CPU as possible, because on a small machine it shares the
//! cores with the servers it measures. etcd is driven through `etcd-client`,
//! one client (one HTTP/2 connection) per worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What each request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Set,
    Get,
    /// RESP: send READONLY once per connection, then GET (on redis-server,
    /// which has no READONLY outside cluster mode, plain GET). etcd: a
    /// serializable range read (any member answers from its local state).
    ReadOnlyGet,
    /// MULTI, SET, SET, EXEC with both keys in one shard (a hash tag); etcd:
    /// a Txn of the two puts.
    MultiOneShard,
    /// The same with the keys in two different shards (two-phase commit in
    /// shoal, assuming the default 8 equal shards).
    MultiCrossShard,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Set => "SET",
            Op::Get => "GET",
            Op::ReadOnlyGet => "READONLY GET",
            Op::MultiOneShard => "MULTI 2 SET 1 shard",
            Op::MultiCrossShard => "MULTI 2 SET 2 shards",
        }
    }

    /// The two keys of a transaction starting from key number `i`.
    pub fn txn_keys(self, i: u64) -> (String, String) {
        match self {
            Op::MultiOneShard => (format!("{{key:{i}}}a"), format!("{{key:{i}}}b")),
            _ => {
                let a = key(i);
                let shard = |k: &str| shoal::slot::slot(k.as_bytes()) / 2048;
                let b = (1..)
                    .map(|d| key(i.wrapping_add(d)))
                    .find(|b| shard(b) != shard(&a))
                    .unwrap_or_default();
                (a, b)
            }
        }
    }
}

/// Where the load goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// A RESP server (`host:port`); `readonly_cmd` says whether it
    /// understands READONLY on a plain connection.
    Resp { addr: String, readonly_cmd: bool },
    /// etcd client URLs; worker i connects to endpoint i mod len.
    Etcd { endpoints: Vec<String> },
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub op: Op,
    pub clients: usize,
    pub value_size: usize,
    pub keyspace: u64,
    pub warmup: Duration,
    pub duration: Duration,
    /// Tokio worker threads of the client (1 = a current-thread runtime,
    /// like single-threaded redis-benchmark).
    pub threads: usize,
}

/// The merged outcome of one run.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub secs: f64,
    /// Sorted latencies of the measured requests, in nanoseconds.
    pub lat_ns: Vec<u64>,
    /// CPU seconds this (client) process used during the run.
    pub client_cpu_s: f64,
}

impl LoadResult {
    pub fn ops_per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.ops as f64 / self.secs
        } else {
            0.0
        }
    }

    /// Latency at quantile `q` (0..=1) in milliseconds.
    pub fn percentile_ms(&self, q: f64) -> f64 {
        percentile(&self.lat_ns, q) as f64 / 1e6
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One worker's share of the outcome.
#[derive(Default)]
struct WorkerResult {
    ops: u64,
    errors: u64,
    first_error: Option<String>,
    lat_ns: Vec<u64>,
}

impl WorkerResult {
    fn record(&mut self, started: Instant, measure_from: Instant, outcome: Result<()>) {
        if started < measure_from {
            return;
        }
        match outcome {
            Ok(()) => {
                self.ops += 1;
                self.lat_ns.push(started.elapsed().as_nanos() as u64);
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// xorshift64*: enough randomness for key choice, no shared state.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

pub fn key(i: u64) -> String {
    format!("key:{i:012}")
}

pub fn value(size: usize) -> Vec<u8> {
    vec![b'x'; size]
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    Ok(rt)
}

/// Run `spec` against `target` and merge what the workers saw.
pub fn run(target: &Target, spec: &Spec) -> Result<LoadResult> {
    let rt = runtime(spec.threads)?;
    let cpu0 = crate::procs::self_cpu_secs();
    let spec = Arc::new(spec.clone());
    let mut result = rt.block_on(async {
        // Connect everything first, so connection set-up is not measured.
        let mut conns = Vec::with_capacity(spec.clients);
        for i in 0..spec.clients {
            conns.push(Conn::open(target, i, spec.op).await?);
        }
        let start = Instant::now();
        let measure_from = start + spec.warmup;
        let deadline = measure_from + spec.duration;
        let mut tasks = Vec::new();
        for (i, conn) in conns.into_iter().enumerate() {
            let spec = spec.clone();
            tasks.push(tokio::spawn(async move {
                conn.drive(&spec, i as u64 + 1, measure_from, deadline)
                    .await
            }));
        }
        let mut merged = LoadResult::default();
        for t in tasks {
            let w = t.await.context("load worker panicked")?;
            merged.ops += w.ops;
            merged.errors += w.errors;
            if merged.first_error.is_none() {
                merged.first_error = w.first_error;
            }
            merged.lat_ns.extend(w.lat_ns);
        }
        merged.secs = spec.duration.as_secs_f64();
        anyhow::Ok(merged)
    })?;
    result.client_cpu_s = crate::procs::self_cpu_secs() - cpu0;
    result.lat_ns.sort_unstable();
    Ok(result)
}

/// Write keys 0..keyspace with `value_size`-byte values, as fast as the
/// target takes them (pipelined RESP, etcd transactions of 100 puts), so
/// every measured GET finds its key.
pub fn fill(target: &Target, keyspace: u64, value_size: usize, clients: usize) -> Result<f64> {
    let rt = runtime(1)?;
    let started = Instant::now();
    rt.block_on(async {
        let per = keyspace.div_ceil(clients as u64);
        let mut tasks = Vec::new();
        for i in 0..clients {
            let lo = i as u64 * per;
            let hi = ((i as u64 + 1) * per).min(keyspace);
            if lo >= hi {
                continue;
            }
            let target = target.clone();
            tasks.push(tokio::spawn(async move {
                fill_range(&target, i, lo, hi, value_size).await
            }));
        }
        for t in tasks {
            t.await.context("fill worker panicked")??;
        }
        anyhow::Ok(())
    })?;
    Ok(started.elapsed().as_secs_f64())
}

async fn fill_range(target: &Target, i: usize, lo: u64, hi: u64, value_size: usize) -> Result<()> {
    let val = value(value_size);
    match target {
        Target::Resp { addr, .. } => {
            let mut conn = RespConn::connect(addr).await?;
            let mut k = lo;
            while k < hi {
                let batch_end = (k + 16).min(hi);
                conn.out.clear();
                for j in k..batch_end {
                    encode(&mut conn.out, &[b"SET", key(j).as_bytes(), &val]);
                }
                conn.stream.write_all(&conn.out).await?;
                for _ in k..batch_end {
                    conn.read_reply().await?;
                }
                k = batch_end;
            }
        }
        Target::Etcd { endpoints } => {
            let ep = &endpoints[i % endpoints.len()];
            let mut client = etcd_client::Client::connect([ep.as_str()], None).await?;
            let mut k = lo;
            while k < hi {
                let batch_end = (k + 100).min(hi);
                let ops: Vec<etcd_client::TxnOp> = (k..batch_end)
                    .map(|j| etcd_client::TxnOp::put(key(j), val.clone(), None))
                    .collect();
                client.txn(etcd_client::Txn::new().and_then(ops)).await?;
                k = batch_end;
            }
        }
    }
    Ok(())
}

/// Append a RESP array of bulk strings.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// One RESP connection with its buffers.
struct RespConn {
    stream: TcpStream,
    buf: BytesMut,
    out: Vec<u8>,
}

impl RespConn {
    async fn connect(addr: &str) -> Result<RespConn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(RespConn {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            out: Vec::with_capacity(256),
        })
    }

    /// Read one reply; `Err` for an error reply (or a broken connection).
    async fn read_reply(&mut self) -> Result<()> {
        loop {
            if let Some((len, err)) = reply_len(&self.buf)? {
                let reply = self.buf.split_to(len);
                if err {
                    bail!("{}", String::from_utf8_lossy(&reply).trim_end());
                }
                return Ok(());
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                bail!("connection closed by the server");
            }
        }
    }
}

/// The length of the first complete reply in `buf` and whether it is an
/// error, or `None` while incomplete. Handles what SET/GET/READONLY return
/// (simple strings, errors, integers, bulk strings, flat arrays of those).
fn reply_len(buf: &[u8]) -> Result<Option<(usize, bool)>> {
    fn line_end(buf: &[u8], from: usize) -> Option<usize> {
        buf[from..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| from + p)
    }
    fn one(buf: &[u8], at: usize) -> Result<Option<(usize, bool)>> {
        let Some(&kind) = buf.get(at) else {
            return Ok(None);
        };
        let Some(eol) = line_end(buf, at) else {
            return Ok(None);
        };
        let header = std::str::from_utf8(&buf[at + 1..eol])?;
        let after = eol + 2;
        match kind {
            b'+' | b':' => Ok(Some((after, false))),
            b'-' => Ok(Some((after, true))),
            b'$' => {
                let n: i64 = header.parse()?;
                if n < 0 {
                    return Ok(Some((after, false)));
                }
                let end = after + n as usize + 2;
                Ok((buf.len() >= end).then_some((end, false)))
            }
            b'*' => {
                let n: i64 = header.parse()?;
                let mut pos = after;
                let mut err = false;
                for _ in 0..n.max(0) {
                    match one(buf, pos)? {
                        Some((end, e)) => {
                            pos = end;
                            err |= e;
                        }
                        None => return Ok(None),
                    }
                }
                Ok(Some((pos, err)))
            }
            other => bail!("unexpected reply type byte {other:#x}"),
        }
    }
    one(buf, 0)
}

/// One load connection to either kind of target.
enum Conn {
    Resp(RespConn),
    Etcd(etcd_client::KvClient),
}

impl Conn {
    async fn open(target: &Target, i: usize, op: Op) -> Result<Conn> {
        match target {
            Target::Resp { addr, readonly_cmd } => {
                let mut c = RespConn::connect(addr).await?;
                if op == Op::ReadOnlyGet && *readonly_cmd {
                    encode(&mut c.out, &[b"READONLY"]);
                    c.stream.write_all(&c.out).await?;
                    c.read_reply().await.context("READONLY was refused")?;
                }
                Ok(Conn::Resp(c))
            }
            Target::Etcd { endpoints } => {
                let ep = &endpoints[i % endpoints.len()];
                let client = etcd_client::Client::connect([ep.as_str()], None)
                    .await
                    .with_context(|| format!("cannot connect to etcd at {ep}"))?;
                Ok(Conn::Etcd(client.kv_client()))
            }
        }
    }

    async fn drive(
        self,
        spec: &Spec,
        seed: u64,
        measure_from: Instant,
        deadline: Instant,
    ) -> WorkerResult {
        let mut rng = Rng::new(seed);
        let val = value(spec.value_size);
        let mut w = WorkerResult {
            lat_ns: Vec::with_capacity(64 * 1024),
            ..Default::default()
        };
        match self {
            Conn::Resp(mut c) => loop {
                let n = rng.below(spec.keyspace);
                let k = key(n);
                c.out.clear();
                let mut replies = 1;
                match spec.op {
                    Op::Set => encode(&mut c.out, &[b"SET", k.as_bytes(), &val]),
                    Op::Get | Op::ReadOnlyGet => encode(&mut c.out, &[b"GET", k.as_bytes()]),
                    Op::MultiOneShard | Op::MultiCrossShard => {
                        let (a, b) = spec.op.txn_keys(n);
                        encode(&mut c.out, &[b"MULTI"]);
                        encode(&mut c.out, &[b"SET", a.as_bytes(), &val]);
                        encode(&mut c.out, &[b"SET", b.as_bytes(), &val]);
                        encode(&mut c.out, &[b"EXEC"]);
                        replies = 4;
                    }
                }
                let started = Instant::now();
                if started >= deadline {
                    break w;
                }
                let outcome = match c.stream.write_all(&c.out).await {
                    Ok(()) => {
                        let mut r = Ok(());
                        for _ in 0..replies {
                            r = c.read_reply().await;
                            if r.is_err() {
                                break;
                            }
                        }
                        r
                    }
                    Err(e) => Err(e.into()),
                };
                let broken = outcome
                    .as_ref()
                    .is_err_and(|e| e.downcast_ref::<std::io::Error>().is_some());
                w.record(started, measure_from, outcome);
                if broken {
                    break w;
                }
            },
            Conn::Etcd(mut kv) => loop {
                let n = rng.below(spec.keyspace);
                let k = key(n);
                let started = Instant::now();
                if started >= deadline {
                    break w;
                }
                let outcome = match spec.op {
                    Op::MultiOneShard | Op::MultiCrossShard => {
                        let (a, b) = spec.op.txn_keys(n);
                        let txn = etcd_client::Txn::new().and_then(vec![
                            etcd_client::TxnOp::put(a, val.clone(), None),
                            etcd_client::TxnOp::put(b, val.clone(), None),
                        ]);
                        kv.txn(txn).await.map(drop)
                    }
                    Op::Set => kv.put(k, val.clone(), None).await.map(drop),
                    Op::Get => kv.get(k, None).await.map(drop),
                    Op::ReadOnlyGet => kv
                        .get(k, Some(etcd_client::GetOptions::new().with_serializable()))
                        .await
                        .map(drop),
                };
                w.record(started, measure_from, outcome.map_err(Into::into));
            },
        }
    }
}
