//! `bench/compare`: shoal side by side with redis-server and etcd, on
//! loopback, in one run (issue #7). See bench/README.md.
//!
//! It starts a redis-server (no persistence), a 3-member etcd cluster and a
//! shoal cluster (3 nodes, 3 replicas, fsync on, from the release binary via
//! `devcluster::LocalCluster`), fills the same key space in each, then runs
//! one workload after another, one system after another:
//! * redis-benchmark SET / GET, plain, `-P 16` and with one client (`-c 1`),
//!   on redis and shoal;
//! * our own client (`load.rs`) for SET / GET / READONLY GET on all three,
//!   so that shoal and etcd are compared by the same client;
//! * then the scale probes (`scale.rs`): idle 1-replica groups on a
//!   separate single-node cluster, and idle 3-replica groups on a separate
//!   3-node cluster. Run the second alone with
//!   `bench/compare --no-load --no-scale` (add `--scale3-groups N`).
//!
//! A benchmark, not a test: `harness = false`, never run by `cargo test`.
//! Nothing here bends a measurement: fsync stays on, replicas stay 3.

mod fanout;
mod load;
mod metrics_cost;
mod procs;
mod redis_bench;
mod report;
mod scale;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use shoal::devcluster::{ClusterOpts, LocalCluster};

use report::{Group, ProcRow, Report, Row, System, Target};

#[derive(Parser, Debug)]
#[command(about = "shoal vs redis-server vs etcd, side by side (issue #7)")]
struct Args {
    /// A ~1 minute smoke run: short workloads, small key space, 100-replica
    /// scale step only.
    #[arg(long)]
    quick: bool,
    /// Measured seconds per workload and system (default 5; quick 1.5).
    #[arg(long)]
    secs: Option<f64>,
    /// Concurrent connections of every client.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// Distinct keys (default 100000; quick 10000). All are written before
    /// the measured workloads, so every GET finds its key.
    #[arg(long)]
    keyspace: Option<u64>,
    /// Worker threads of our load client (1: single-threaded, like
    /// redis-benchmark).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// The shoal binary (build it with `cargo build --release --bin shoal`).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Working directory for the servers' data and logs (wiped at start).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Where latest.md and latest.svg go.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replica counts of the scale probe (default 100,1000; quick 100).
    #[arg(long, value_delimiter = ',')]
    scale_steps: Option<Vec<usize>>,
    /// Seconds of CPU measurement at rest in the scale probe (default 10).
    #[arg(long)]
    idle_secs: Option<f64>,
    /// Seconds the scale probe waits after every replica has a leader,
    /// before it measures (default 30, as the 3-node probe; quick 12: idle
    /// groups hibernate after 10 s; 3 measures groups not yet asleep).
    #[arg(long)]
    scale_settle_secs: Option<f64>,
    /// Skip the scale probe.
    #[arg(long)]
    no_scale: bool,
    /// Groups of the 3-node, 3-replica idle probe (default 1000; quick 100).
    #[arg(long)]
    scale3_groups: Option<usize>,
    /// Seconds the 3-node probe waits after every group has a leader,
    /// before it measures (default 30).
    #[arg(long, default_value_t = 30.0)]
    scale3_settle_secs: f64,
    /// Seconds of CPU measurement of the 3-node probe (default 30).
    #[arg(long, default_value_t = 30.0)]
    scale3_idle_secs: f64,
    /// `hibernate_after_ms` of the 3-node probe's nodes (default: the
    /// node's own default; 0: groups never hibernate).
    #[arg(long)]
    scale3_hibernate_after_ms: Option<u64>,
    /// Skip the 3-node, 3-replica idle probe.
    #[arg(long)]
    no_scale3: bool,
    /// Skip the throughput/latency workloads (run only the scale probes).
    #[arg(long)]
    no_load: bool,
    /// Skip the metrics endpoint cost probe (issue 20).
    #[arg(long)]
    no_metrics_cost: bool,
    /// Rounds of the metrics cost probe, each one run not scraped and one
    /// scraped per workload (default 3; quick 1).
    #[arg(long)]
    metrics_cost_rounds: Option<usize>,
    /// Skip the PUBLISH fan-out rows (issue 19).
    #[arg(long)]
    no_fanout: bool,
    /// Run only the PUBLISH fan-out rows of the workloads.
    #[arg(long)]
    fanout_only: bool,
    /// Subscribers of the PUBLISH fan-out rows.
    #[arg(long, default_value_t = 50)]
    fanout_subscribers: usize,
    /// Messages the one publisher sends in the fan-out rows (default
    /// 10000; quick 2000).
    #[arg(long)]
    fanout_messages: Option<u64>,
    /// The Raft engine of shoal's tables in the workloads: batch or
    /// openraft (`--default-engine` of the router).
    #[arg(long, default_value = "batch")]
    engine: String,
    /// Accepted for `cargo bench` compatibility.
    #[arg(long, hide = true)]
    bench: bool,
}

/// SCRIPT LOAD `body` on the server at `addr` (with redis-cli): its SHA1.
fn script_load(addr: &str, body: &str) -> Result<String> {
    let (host, port) = addr.rsplit_once(':').context("address must be host:port")?;
    let out = std::process::Command::new("redis-cli")
        .args(["-h", host, "-p", port, "SCRIPT", "LOAD", body])
        .output()
        .context("cannot run redis-cli")?;
    let sha = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || sha.len() != 40 {
        bail!("SCRIPT LOAD on {addr} answered {sha:?}");
    }
    Ok(sha)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !args.bench {
        // `cargo test --all-targets` runs bench targets too, without
        // `--bench`: this is a benchmark, not a test.
        println!(
            "compare: a benchmark; run it with bench/compare (or cargo bench --bench compare)"
        );
        return Ok(());
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = args.bin.clone().unwrap_or_else(|| {
        // Where cargo put it: CARGO_TARGET_DIR (relative to the root) or
        // target/.
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map_or_else(|| root.join("target"), |t| root.join(t));
        target.join("release/shoal")
    });
    if !bin.is_file() {
        bail!(
            "{} does not exist: run `cargo build --release --bin shoal` first (bench/compare does)",
            bin.display()
        );
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| root.join("target/bench-run"));
    prepare_dir(&dir)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| root.join("bench/results"));
    fs::create_dir_all(&out)?;

    let secs = args.secs.unwrap_or(if args.quick { 1.5 } else { 5.0 });
    let keyspace = args
        .keyspace
        .unwrap_or(if args.quick { 10_000 } else { 100_000 });
    let steps = args.scale_steps.clone().unwrap_or(if args.quick {
        vec![100]
    } else {
        vec![100, 1000]
    });
    let idle =
        Duration::from_secs_f64(
            args.idle_secs
                .unwrap_or(if args.quick { 5.0 } else { 10.0 }),
        );

    let mut rep = Report {
        started: sh("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]),
        mode: if args.quick { "quick" } else { "default" }.into(),
        ..Default::default()
    };
    rep.machine = machine(&dir);
    rep.settings = vec![
        ("clients (connections)".into(), args.clients.to_string()),
        ("value size".into(), format!("{} B", args.value_size)),
        (
            "key space".into(),
            format!("{keyspace} keys `key:<12 digits>`, all written before the workloads"),
        ),
        (
            "measured seconds per row".into(),
            format!("{secs} (redis-benchmark: sized by a calibration run to about that)"),
        ),
        (
            "redis-benchmark".into(),
            format!(
                "`redis-benchmark -h 127.0.0.1 -p <port> -c {} -d {} -r {keyspace} -P <1|16> -n <calibrated> -t <set|get|hset|lpush|lpop|sadd|zadd|lrange_100> -e`",
                args.clients, args.value_size
            ),
        ),
        (
            "our client".into(),
            format!(
                "`benches/compare/load.rs`, {} tokio thread(s), one request in flight per connection",
                args.client_threads
            ),
        ),
        (
            "redis-server".into(),
            format!("{} — `--save '' --appendonly no`", first_line("redis-server", &["--version"])),
        ),
        (
            "etcd".into(),
            format!(
                "{} — 3 members on loopback, default settings (WAL fsync on every commit); our client connects worker i to member i mod 3",
                first_line("etcd", &["--version"])
            ),
        ),
        (
            "shoal".into(),
            format!(
                "{} (commit {}) — 3 nodes, table `default` 8 shards x 3 replicas, `--fsync always`, 1 router, default settings",
                bin.display(),
                sh("git", &["-C", &root.display().to_string(), "rev-parse", "--short", "HEAD"])
            ),
        ),
    ];

    if !args.no_load {
        run_load(&args, &bin, &dir, secs, keyspace, &mut rep)?;
    }
    if !args.no_metrics_cost {
        eprintln!("\n== metrics endpoint cost ==");
        rep.metrics_cost = Some(metrics_cost::run(&metrics_cost::Probe {
            bin: &bin,
            dir: &dir.join("metrics"),
            rounds: args
                .metrics_cost_rounds
                .unwrap_or(if args.quick { 1 } else { 3 }),
            secs,
            clients: args.clients,
            value_size: args.value_size,
            keyspace,
        })?);
    }
    if !args.no_scale {
        eprintln!("\n== scale probe ==");
        rep.notes.push(
            "scale probe: 1-replica groups have no followers, so they send no heartbeats; the 3-node probe measures idle 3-replica groups".into(),
        );
        rep.scale = scale::run(&scale::Probe {
            bin: &bin,
            dir: &dir.join("scale"),
            steps: &steps,
            idle,
            settle: Duration::from_secs_f64(args.scale_settle_secs.unwrap_or(if args.quick {
                12.0
            } else {
                30.0
            })),
        })?;
    }
    if !args.no_scale3 {
        eprintln!("\n== scale probe: three nodes, 3-replica groups ==");
        rep.scale3 = scale::run3(&scale::Probe3 {
            bin: &bin,
            dir: &dir.join("scale3"),
            groups: args
                .scale3_groups
                .unwrap_or(if args.quick { 100 } else { 1000 }),
            settle: Duration::from_secs_f64(args.scale3_settle_secs),
            idle: Duration::from_secs_f64(args.scale3_idle_secs),
            hibernate_after_ms: args.scale3_hibernate_after_ms,
            engine: &args.engine,
        })?;
    }
    rep.machine
        .push(("load average at the end".into(), loadavg()));
    rep.targets = targets(&rep);

    let text = rep.text();
    println!("{text}");
    fs::write(out.join("latest.md"), rep.markdown())?;
    fs::write(out.join("latest.svg"), rep.svg())?;
    println!(
        "wrote {} and {}",
        out.join("latest.md").display(),
        out.join("latest.svg").display()
    );
    Ok(())
}

/// The servers of the three systems, each with its processes by name.
struct Systems {
    redis: procs::Redis,
    etcd: procs::EtcdCluster,
    shoal: LocalCluster,
}

impl Systems {
    /// (name, pid) of every server process of `s`.
    fn pids(&mut self, s: System) -> Vec<(String, u32)> {
        match s {
            System::Redis => vec![("redis-server".into(), self.redis.proc.pid())],
            System::Etcd => self
                .etcd
                .members
                .iter()
                .map(|p| (p.name().to_string(), p.pid()))
                .collect(),
            System::Shoal => {
                let mut v: Vec<(String, u32)> = (1..=self.shoal.node_count() as u64)
                    .filter_map(|id| self.shoal.node_pid(id).map(|p| (format!("node-{id}"), p)))
                    .collect();
                if let Some(p) = self.shoal.router_pid(0) {
                    v.push(("router".into(), p));
                }
                v.push((
                    "etcd (metadata, 1 member)".into(),
                    self.shoal.etcd_mut().proc().pid(),
                ));
                v
            }
        }
    }

    fn cpu(&mut self, s: System) -> f64 {
        self.pids(s)
            .iter()
            .filter_map(|(_, pid)| procs::sample(*pid))
            .map(|x| x.cpu_s)
            .sum()
    }

    fn resp_addr(&self, s: System) -> Option<String> {
        match s {
            System::Redis => Some(self.redis.addr.clone()),
            System::Shoal => Some(self.shoal.router_addr()),
            System::Etcd => None,
        }
    }

    fn load_target(&self, s: System) -> load::Target {
        match s {
            System::Etcd => load::Target::Etcd {
                endpoints: self.etcd.endpoints.clone(),
            },
            _ => load::Target::Resp {
                addr: self.resp_addr(s).unwrap_or_default(),
                readonly_cmd: s == System::Shoal,
            },
        }
    }
}

fn run_load(
    args: &Args,
    bin: &Path,
    dir: &Path,
    secs: f64,
    keyspace: u64,
    rep: &mut Report,
) -> Result<()> {
    eprintln!("== starting redis-server, a 3-member etcd cluster, shoal (3 nodes) ==");
    let redis = procs::Redis::start(&dir.join("redis"))?;
    let etcd = procs::EtcdCluster::start(&dir.join("etcd"), 3)?;
    let mut opts = ClusterOpts::new(bin, dir.join("shoal"));
    opts.nodes = 3;
    opts.default_shards = 8;
    opts.default_replicas = 3;
    opts.node_args = vec!["--fsync".into(), "always".into()];
    opts.router_args = vec!["--default-engine".into(), args.engine.clone()];
    opts.ready_timeout = Duration::from_secs(120);
    let shoal = LocalCluster::start(opts).context("shoal cluster")?;
    let mut sys = Systems { redis, etcd, shoal };
    eprintln!(
        "redis {}  etcd {}  shoal router {}",
        sys.redis.addr,
        sys.etcd.endpoints.join(","),
        sys.shoal.router_addr()
    );

    for s in System::ALL {
        if args.fanout_only {
            break;
        }
        // Filling goes through the same protocol as the load.
        let t = sys.load_target(s);
        let took = load::fill(&t, keyspace, args.value_size, args.clients)
            .with_context(|| format!("filling {}", s.name()))?;
        eprintln!("filled {keyspace} keys into {} in {took:.1} s", s.name());
        rep.notes.push(format!(
            "fill: {keyspace} keys written into {} in {took:.1} s (pipelined RESP, 16 deep / etcd txns of 100 puts)",
            s.name()
        ));
    }

    // redis-benchmark rows: redis and shoal.
    // The collection rows (issue 17): redis-benchmark's own tests, on its
    // own keys (`mylist`, `myset:*`, `myhash`, `myzset`); LRANGE_100's run
    // includes its LPUSH preparation in the server CPU.
    let benchmarks: &[(&str, usize)] = if args.fanout_only {
        &[]
    } else {
        &[
            ("set", 1),
            ("get", 1),
            ("set", 16),
            ("get", 16),
            ("hset", 1),
            ("lpush", 1),
            ("lpop", 1),
            ("sadd", 1),
            ("zadd", 1),
            ("lrange_100", 1),
        ]
    };
    // Then one client waiting for each reply (issue 15's `-c 1` targets:
    // most application code is such a client).
    let lone: &[(&str, usize)] = if args.fanout_only {
        &[]
    } else {
        &[("set", 1), ("get", 1)]
    };
    let runs = benchmarks
        .iter()
        .map(|&(test, pipeline)| (test, pipeline, args.clients))
        .chain(lone.iter().map(|&(test, pipeline)| (test, pipeline, 1)));
    for (test, pipeline, clients) in runs {
        let workload = match (pipeline, clients) {
            (1, 1) => format!("{} -c 1", test.to_uppercase()),
            (1, _) => test.to_uppercase(),
            _ => format!("{} -P {pipeline}", test.to_uppercase()),
        };
        for s in [System::Redis, System::Shoal] {
            let addr = sys.resp_addr(s).unwrap_or_default();
            let params = redis_bench::Params {
                addr: &addr,
                test,
                clients,
                value_size: args.value_size,
                keyspace,
                pipeline,
                command: None,
            };
            rep.rows
                .push(redis_bench_row(&mut sys, s, &params, &workload, secs)?);
        }
    }

    // Scripts (issue 19): EVALSHA of a loaded script that reads one key,
    // and of one that increments it (one Raft entry per call on shoal).
    let scripts: &[(&str, &str)] = if args.fanout_only {
        &[]
    } else {
        &[
            ("EVALSHA GET", "return redis.call('GET', KEYS[1])"),
            ("EVALSHA INCR", "return redis.call('INCR', KEYS[1])"),
        ]
    };
    for &(workload, body) in scripts {
        for s in [System::Redis, System::Shoal] {
            let addr = sys.resp_addr(s).unwrap_or_default();
            let sha = script_load(&addr, body)?;
            let command = ["EVALSHA", &sha, "1", "script:__rand_int__"]
                .iter()
                .map(|a| a.to_string())
                .collect();
            let params = redis_bench::Params {
                addr: &addr,
                test: "evalsha",
                clients: args.clients,
                value_size: args.value_size,
                keyspace,
                pipeline: 1,
                command: Some(command),
            };
            rep.rows
                .push(redis_bench_row(&mut sys, s, &params, workload, secs)?);
        }
    }

    // PUBLISH fan-out (issue 19): one publisher, N subscribers of one
    // channel, all on the one router (redis: the one server).
    if !args.no_fanout {
        let spec = fanout::Spec {
            subscribers: args.fanout_subscribers,
            messages: args
                .fanout_messages
                .unwrap_or(if args.quick { 2_000 } else { 10_000 }),
            size: args.value_size,
        };
        let workload = format!("PUBLISH 1→{}", spec.subscribers);
        for s in [System::Redis, System::Shoal] {
            let addr = sys.resp_addr(s).unwrap_or_default();
            eprintln!("{workload:<14} fanout           {}", s.name());
            let cpu0 = sys.cpu(s);
            let r = fanout::run(&addr, &spec)?;
            let server_cpu_s = sys.cpu(s) - cpu0;
            eprintln!(
                "  {:.0} messages delivered/s  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  lost {}",
                r.delivered_per_sec, r.p50_ms, r.p99_ms, r.p999_ms, r.lost
            );
            rep.rows.push(Row {
                workload: workload.clone(),
                client: "fanout",
                system: s,
                variant: "messages delivered/s, latency publish to delivery, errors = lost".into(),
                ops_per_sec: r.delivered_per_sec,
                p50_ms: r.p50_ms,
                p99_ms: r.p99_ms,
                p999_ms: r.p999_ms,
                server_cpu_s,
                wall_s: r.wall_s,
                client_cpu_pct: None,
                errors: r.lost,
            });
            check_alive(&mut sys)?;
        }
    }

    // Our client: all three systems.
    let ops: &[load::Op] = if args.fanout_only {
        &[]
    } else {
        &[
            load::Op::Set,
            load::Op::Get,
            load::Op::ReadOnlyGet,
            load::Op::MultiOneShard,
            load::Op::MultiCrossShard,
        ]
    };
    for &op in ops {
        for s in System::ALL {
            let spec = load::Spec {
                op,
                clients: args.clients,
                value_size: args.value_size,
                keyspace,
                warmup: Duration::from_secs_f64((secs / 5.0).clamp(0.5, 1.0)),
                duration: Duration::from_secs_f64(secs),
                threads: args.client_threads,
            };
            let variant = match (op, s) {
                (load::Op::ReadOnlyGet, System::Redis) => {
                    "plain GET: no READONLY outside cluster mode"
                }
                (load::Op::ReadOnlyGet, System::Etcd) => "serializable range",
                (load::Op::ReadOnlyGet, System::Shoal) => "READONLY connection",
                (load::Op::Get, System::Etcd) => "linearizable range",
                (load::Op::Set, System::Etcd) => "put",
                (load::Op::MultiOneShard | load::Op::MultiCrossShard, System::Etcd) => {
                    "Txn of 2 puts"
                }
                (load::Op::MultiCrossShard, System::Shoal) => "two-phase commit",
                (load::Op::MultiOneShard, System::Shoal) => "one Raft entry",
                _ => "",
            };
            eprintln!("{:<14} shoal-load       {}", op.name(), s.name());
            let target = sys.load_target(s);
            let cpu0 = sys.cpu(s);
            let r = load::run(&target, &spec)?;
            let server_cpu_s = sys.cpu(s) - cpu0;
            if let Some(e) = &r.first_error {
                eprintln!("  {} errors, the first: {e}", r.errors);
            }
            let window = (spec.warmup + spec.duration).as_secs_f64();
            eprintln!(
                "  {:.0} ops/s  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  client CPU {:.0} %",
                r.ops_per_sec(),
                r.percentile_ms(0.5),
                r.percentile_ms(0.99),
                r.percentile_ms(0.999),
                100.0 * r.client_cpu_s / window
            );
            rep.rows.push(Row {
                workload: op.name().into(),
                client: "shoal-load",
                system: s,
                variant: variant.into(),
                ops_per_sec: r.ops_per_sec(),
                p50_ms: r.percentile_ms(0.5),
                p99_ms: r.percentile_ms(0.99),
                p999_ms: r.percentile_ms(0.999),
                server_cpu_s,
                wall_s: window,
                client_cpu_pct: Some(100.0 * r.client_cpu_s / window),
                errors: r.errors,
            });
            check_alive(&mut sys)?;
        }
    }

    for s in System::ALL {
        for (name, pid) in sys.pids(s) {
            if let Some(x) = procs::sample(pid) {
                rep.procs.push(ProcRow {
                    system: s,
                    name,
                    pid,
                    cpu_s: x.cpu_s,
                    hwm_mib: x.hwm_kib as f64 / 1024.0,
                });
            }
        }
    }
    eprintln!("stopping the servers");
    sys.shoal.shutdown();
    Ok(())
}

/// One measured redis-benchmark run of `params` against `s`: calibrated
/// to about `secs`, with the server's CPU, as a report row.
fn redis_bench_row(
    sys: &mut Systems,
    s: System,
    params: &redis_bench::Params,
    workload: &str,
    secs: f64,
) -> Result<Row> {
    eprintln!("{workload:<14} redis-benchmark  {}", s.name());
    let requests = redis_bench::calibrate(params, secs)?;
    let cpu0 = sys.cpu(s);
    let t0 = Instant::now();
    let r = redis_bench::run_once(params, requests)?;
    let wall_s = t0.elapsed().as_secs_f64();
    let server_cpu_s = sys.cpu(s) - cpu0;
    eprintln!(
        "  {:.0} ops/s  p50 {} ms  p99 {} ms  p99.9 {} ms",
        r.ops_per_sec, r.p50_ms, r.p99_ms, r.p999_ms
    );
    check_alive(sys)?;
    Ok(Row {
        workload: workload.to_string(),
        client: "redis-benchmark",
        system: s,
        variant: String::new(),
        ops_per_sec: r.ops_per_sec,
        p50_ms: r.p50_ms,
        p99_ms: r.p99_ms,
        p999_ms: r.p999_ms,
        server_cpu_s,
        wall_s,
        client_cpu_pct: None,
        errors: r.errors_seen,
    })
}

fn check_alive(sys: &mut Systems) -> Result<()> {
    let exits = sys.shoal.unexpected_exits();
    if !exits.is_empty() {
        let text: Vec<String> = exits.iter().map(|e| e.to_string()).collect();
        bail!(
            "a shoal process exited during the benchmark:\n{}",
            text.join("\n")
        );
    }
    for p in std::iter::once(&mut sys.redis.proc).chain(sys.etcd.members.iter_mut()) {
        if !p.is_running() {
            bail!(
                "{} exited during the benchmark; log: {}",
                p.name(),
                p.log_path().display()
            );
        }
    }
    Ok(())
}

/// The run directory is ours alone: wiped at start, but only if it is
/// empty or was made by an earlier run (it holds our marker file).
fn prepare_dir(dir: &Path) -> Result<()> {
    let marker = dir.join(".shoal-bench-run");
    if dir.exists() {
        let empty = fs::read_dir(dir)?.next().is_none();
        if !empty && !marker.exists() {
            bail!(
                "{} exists and was not made by bench/compare; pick another --dir",
                dir.display()
            );
        }
        fs::remove_dir_all(dir)?;
    }
    fs::create_dir_all(dir)?;
    fs::write(
        &marker,
        "made by bench/compare; wiped at the start of every run\n",
    )?;
    Ok(())
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    sh(cmd, args).lines().next().unwrap_or_default().to_string()
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn machine(dir: &Path) -> Vec<(String, String)> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let (fs_type, fsync) = fsync_probe(dir);
    vec![
        ("nproc".into(), nproc.to_string()),
        ("CPU".into(), model),
        (
            "memory".into(),
            format!("{:.1} GiB", mem_kib as f64 / 1048576.0),
        ),
        (
            "kernel".into(),
            fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
        ),
        (
            "data directory".into(),
            format!("{} ({fs_type})", dir.display()),
        ),
        ("fsync latency of the data directory".into(), fsync),
        (
            "load average at the start".into(),
            format!(
                "{} (the machine is shared: other work skews every figure)",
                loadavg()
            ),
        ),
    ]
}

/// p50/p99 of 200 × (write 4 KiB + fdatasync) in `dir`: what a durable
/// commit costs on this disk, the floor under every replicated write.
fn fsync_probe(dir: &Path) -> (String, String) {
    let fs_type = sh("stat", &["-f", "-c", "%T", &dir.display().to_string()]);
    let path = dir.join("fsync-probe");
    let measure = || -> Result<Vec<u64>> {
        let mut f = fs::File::create(&path)?;
        let block = vec![0u8; 4096];
        let mut lat = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            f.write_all(&block)?;
            f.sync_data()?;
            lat.push(t.elapsed().as_micros() as u64);
        }
        lat.sort_unstable();
        Ok(lat)
    };
    let text = match measure() {
        Ok(lat) => format!(
            "p50 {:.2} ms, p99 {:.2} ms (4 KiB append + fdatasync, 200 times)",
            load::percentile(&lat, 0.5) as f64 / 1000.0,
            load::percentile(&lat, 0.99) as f64 / 1000.0
        ),
        Err(e) => format!("not measured: {e}"),
    };
    let _ = fs::remove_file(&path);
    (fs_type, text)
}

/// Each target of issue 15 (the fast path's milestones), then of issue #7
/// (the goal beyond them), against the figures of this run.
fn targets(rep: &Report) -> Vec<Target> {
    let mut out = milestones(rep);
    out.extend(goals(rep));
    out
}

/// The rows of `workload` measured by `client`.
fn group(workload: &str, client: &'static str) -> Group {
    Group {
        workload: workload.into(),
        client,
    }
}

/// A ratio of shoal to another system that must be at least `want`.
fn at_least(name: String, want: f64, v: Option<f64>) -> Target {
    Target {
        name,
        wanted: format!("≥ {want}x"),
        measured: v.map_or("—".into(), |v| format!("{v:.2}x")),
        met: v.map(|v| v >= want),
    }
}

/// Issue 15's targets: ratios to redis-server and etcd, server CPU per
/// operation, SET's p99.9, and one client's p50.
fn milestones(rep: &Report) -> Vec<Target> {
    let g = group;
    let ops = |r: &Row| r.ops_per_sec;
    let at_least = |name: &str, want, v| at_least(format!("issue 15: {name}"), want, v);
    let at_most = |name: &str, want: f64, unit: &str, v: Option<f64>| Target {
        name: format!("issue 15: {name}"),
        wanted: format!("≤ {want} {unit}"),
        measured: v.map_or("—".into(), |v| match unit {
            "µs" => format!("{v:.0} {unit}"),
            _ => format!("{v:.2} {unit}"),
        }),
        met: v.map(|v| v <= want),
    };
    let shoal = |w: &str| rep.row(&g(w, "redis-benchmark"), System::Shoal);
    // Server CPU (router and every node) per operation, µs.
    let cpu_us = |w: &str| {
        shoal(w)
            .filter(|r| r.ops_per_sec > 0.0 && r.wall_s > 0.0)
            .map(|r| r.server_cpu_s * 1e6 / (r.ops_per_sec * r.wall_s))
    };
    let p50 = |w: &str| shoal(w).map(|r| r.p50_ms);
    let rb = "redis-benchmark";
    let set_p999 = rep.ratio(&g("SET", rb), System::Redis, |r| r.p999_ms);
    vec![
        at_least(
            "SET -c 50 vs redis-server, redis-benchmark",
            0.3,
            rep.ratio(&g("SET", rb), System::Redis, ops),
        ),
        at_least(
            "SET vs etcd put, our client",
            2.0,
            rep.ratio(&g("SET", "shoal-load"), System::Etcd, ops),
        ),
        at_least(
            "linearizable GET -c 50 vs redis-server, redis-benchmark",
            0.4,
            rep.ratio(&g("GET", rb), System::Redis, ops),
        ),
        at_least(
            "READONLY GET vs redis-server GET, our client",
            0.5,
            rep.ratio(&g("READONLY GET", "shoal-load"), System::Redis, ops),
        ),
        at_least(
            "SET -P 16 vs redis-server, redis-benchmark",
            0.1,
            rep.ratio(&g("SET -P 16", rb), System::Redis, ops),
        ),
        at_least(
            "GET -P 16 vs redis-server, redis-benchmark",
            0.2,
            rep.ratio(&g("GET -P 16", rb), System::Redis, ops),
        ),
        at_most(
            "server CPU per SET at -c 50 (router + nodes)",
            100.0,
            "µs",
            cpu_us("SET"),
        ),
        at_most(
            "server CPU per GET at -c 50 (router + nodes)",
            40.0,
            "µs",
            cpu_us("GET"),
        ),
        Target {
            name: "issue 15: SET p99.9 at -c 50 vs redis-server's".into(),
            wanted: "≤ 10x".into(),
            measured: set_p999.map_or("—".into(), |v| format!("{v:.1}x")),
            met: set_p999.map(|v| v <= 10.0),
        },
        at_most("SET -c 1 p50", 0.5, "ms", p50("SET -c 1")),
        at_most("GET -c 1 p50", 0.25, "ms", p50("GET -c 1")),
    ]
}

/// Issue #7's targets: the goal beyond issue 15's milestones.
fn goals(rep: &Report) -> Vec<Target> {
    let g = group;
    let ops = |r: &Row| r.ops_per_sec;
    let p999 = |r: &Row| r.p999_ms;
    let at_least = |name: &str, want, v| at_least(format!("goal: {name}"), want, v);
    let mut out = vec![
        at_least(
            "SET (3 replicas, fsync) vs redis-server, redis-benchmark",
            0.5,
            rep.ratio(&g("SET", "redis-benchmark"), System::Redis, ops),
        ),
        at_least(
            "SET (3 replicas, fsync) vs etcd put, our client",
            5.0,
            rep.ratio(&g("SET", "shoal-load"), System::Etcd, ops),
        ),
        at_least(
            "linearizable GET vs redis-server, redis-benchmark",
            0.6,
            rep.ratio(&g("GET", "redis-benchmark"), System::Redis, ops),
        ),
        at_least(
            "READONLY GET vs redis-server GET, our client",
            0.8,
            rep.ratio(&g("READONLY GET", "shoal-load"), System::Redis, ops),
        ),
        at_least(
            "pipelined SET (-P 16) vs redis-server, redis-benchmark",
            0.5,
            rep.ratio(&g("SET -P 16", "redis-benchmark"), System::Redis, ops),
        ),
    ];
    let set = rep.ratio(&g("SET", "redis-benchmark"), System::Redis, p999);
    let get = rep.ratio(&g("GET", "redis-benchmark"), System::Redis, p999);
    out.push(Target {
        name: "goal: p99.9 latency vs redis-server at 50 clients (SET, GET; redis-benchmark)"
            .into(),
        wanted: "≤ 3x".into(),
        measured: format!(
            "SET {}, GET {}",
            set.map_or("—".into(), |v| format!("{v:.1}x")),
            get.map_or("—".into(), |v| format!("{v:.1}x"))
        ),
        met: match (set, get) {
            (Some(a), Some(b)) => Some(a <= 3.0 && b <= 3.0),
            _ => None,
        },
    });
    if let Some(m) = &rep.metrics_cost {
        let worst = m.rows.iter().map(|r| r.cost_pct()).reduce(f64::max);
        out.push(Target {
            name: "metrics endpoints scraped every second: throughput lost (SET, GET)".into(),
            wanted: "< 2 %".into(),
            measured: m
                .rows
                .iter()
                .map(|r| format!("{} {:.1} %", r.workload, r.cost_pct()))
                .collect::<Vec<_>>()
                .join(", "),
            met: worst.map(|w| w < 2.0),
        });
    }
    let big = rep.scale.iter().find(|s| s.replicas >= 1000);
    out.push(Target {
        name: "1,000 idle shard replicas on one node".into(),
        wanted: "< 5% of a core, < 512 MiB RSS".into(),
        measured: big.map_or("— (run without --quick)".into(), |s| {
            format!("{:.1}% of a core, {:.0} MiB", s.idle_cpu_pct, s.rss_mib)
        }),
        met: big.map(|s| s.idle_cpu_pct < 5.0 && s.rss_mib < 512.0),
    });
    let three = rep.scale3.iter().filter(|s| s.replicas >= 1000);
    let worst_cpu = three.clone().map(|s| s.idle_cpu_pct).reduce(f64::max);
    let worst_rss = three.map(|s| s.rss_mib).reduce(f64::max);
    out.push(Target {
        name: "issue 15: 1,000 idle 3-replica groups on each of 3 nodes (worst node)".into(),
        wanted: "< 5% of a core, < 512 MiB RSS".into(),
        measured: match (worst_cpu, worst_rss) {
            (Some(c), Some(r)) => format!("{c:.1}% of a core, {r:.0} MiB"),
            _ => "— (run without --quick or --no-scale3)".into(),
        },
        met: worst_cpu.zip(worst_rss).map(|(c, r)| c < 5.0 && r < 512.0),
    });
    out
}
