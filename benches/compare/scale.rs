//! The scale probes.
//!
//! * [`run`]: one `shoal node` hosting many idle 1-replica shard replicas.
//!   For each step it tops the node up to that many replicas with
//!   `TABLE.CREATE <name> <shards> 1`, lets it settle (idle groups
//!   hibernate), measures CPU at rest and RSS, then restarts the node and
//!   times until every replica is leader again.
//! * [`run3`]: three nodes and many idle 3-replica groups (issue 15 item 6),
//!   so every node hosts one replica of every group and leads about a third.
//!   After every group has a leader and a settling time, it measures each
//!   node's CPU at rest (and, per thread name, where it goes) and RSS.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use shoal::cluster::client::{ClientConfig, ShardClient};
use shoal::cluster::routes;
use shoal::devcluster::{resp_request, ClusterOpts, LocalCluster};
use shoal::meta::etcd::Meta;

use crate::procs::{self, ProcSample};
use crate::report::{Scale3Row, ScaleRow};

pub struct Probe<'a> {
    pub bin: &'a Path,
    pub dir: &'a Path,
    pub steps: &'a [usize],
    /// How long the node rests after every replica has a leader, before
    /// its CPU is measured (idle groups hibernate after the node's
    /// `hibernate_after_ms`, 10 s by default).
    pub settle: Duration,
    pub idle: Duration,
}

pub fn run(p: &Probe) -> Result<Vec<ScaleRow>> {
    fs::create_dir_all(p.dir)?;
    // Creating hundreds of groups at once can take longer than the default
    // 30 s TABLE.CREATE deadline on a small machine.
    let router_conf = p.dir.join("router.toml");
    fs::write(&router_conf, "table_create_timeout_ms = 600000\n")?;
    let mut opts = ClusterOpts::new(p.bin, p.dir.join("cluster"));
    opts.nodes = 1;
    opts.default_shards = 1;
    opts.default_replicas = 1;
    opts.router_args = vec!["--config".into(), router_conf.display().to_string()];
    opts.node_args = vec!["--fsync".into(), "always".into()];
    let mut cluster = LocalCluster::start(opts).context("scale probe cluster")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let etcd = vec![cluster.etcd_url()];
    let client = rt.block_on(async {
        let meta = Meta::connect(&etcd, "default").await?;
        let view = routes::follow(&meta).await?;
        anyhow::Ok((
            meta,
            ShardClient::new(
                view,
                ClientConfig {
                    request_timeout: Duration::from_secs(2),
                    rpc_timeout: Duration::from_secs(2),
                    ..ClientConfig::default()
                },
            ),
        ))
    })?;
    let (_meta, client) = client;

    let mut hosted = 1; // table `default`: 1 shard
    let mut rows = Vec::new();
    for &target in p.steps {
        if target <= hosted {
            continue;
        }
        let shards = target - hosted;
        let name = format!("probe{target}");
        eprintln!("scale probe: TABLE.CREATE {name} {shards} 1 (node will host {target} replicas)");
        let t0 = Instant::now();
        let reply = resp_request(
            &cluster.router_addr(),
            &["TABLE.CREATE", &name, &shards.to_string(), "1"],
            Duration::from_secs(900),
        )?;
        if reply != "+OK" {
            bail!("TABLE.CREATE {name} {shards} 1 answered {reply}");
        }
        let create_s = t0.elapsed().as_secs_f64();
        hosted = target;
        wait_all_leaders(&rt, &client, hosted, Duration::from_secs(300))?;

        // At rest: let start-up work (elections, first entries, flushes)
        // end and idle groups hibernate.
        thread::sleep(p.settle);
        let pid = cluster.node_pid(1).context("node 1 is not running")?;
        let a = procs::sample(pid).context("cannot read /proc of node 1")?;
        let t = Instant::now();
        thread::sleep(p.idle);
        let b = procs::sample(pid).context("cannot read /proc of node 1")?;
        let idle_secs = t.elapsed().as_secs_f64();
        let idle_cpu_pct = 100.0 * (b.cpu_s - a.cpu_s) / idle_secs;

        eprintln!("scale probe: restarting the node with {hosted} replicas");
        cluster.stop_node(1)?;
        let t0 = Instant::now();
        cluster.start_node(1)?;
        wait_all_leaders(&rt, &client, hosted, Duration::from_secs(600))?;
        let startup_s = t0.elapsed().as_secs_f64();
        let row = ScaleRow {
            replicas: hosted,
            idle_cpu_pct,
            idle_secs,
            rss_mib: b.rss_kib as f64 / 1024.0,
            hwm_mib: b.hwm_kib as f64 / 1024.0,
            startup_s,
            create_s,
        };
        eprintln!("scale probe: {row:?}");
        rows.push(row);
    }
    cluster.shutdown();
    Ok(rows)
}

/// Wait until node 1 reports `count` replicas, every one of them leader.
fn wait_all_leaders(
    rt: &tokio::runtime::Runtime,
    client: &ShardClient,
    count: usize,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        match rt.block_on(client.node_status(1, vec![])) {
            Ok(s) => {
                let leaders = s.groups.iter().filter(|g| g.role == "leader").count();
                if s.groups.len() >= count && leaders >= count {
                    return Ok(());
                }
                last = format!("{} replicas, {leaders} leaders", s.groups.len());
            }
            Err(e) => last = e.to_string(),
        }
        if Instant::now() > deadline {
            bail!("not every replica had a leader within {timeout:?}: {last}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

pub struct Probe3<'a> {
    pub bin: &'a Path,
    pub dir: &'a Path,
    /// Groups in all, table `default` (1 shard) included.
    pub groups: usize,
    /// Wait after every group has a leader, before measuring.
    pub settle: Duration,
    pub idle: Duration,
    /// The nodes' `hibernate_after_ms`, when not their default (0: the
    /// groups never hibernate, for a before/after on one build).
    pub hibernate_after_ms: Option<u64>,
    /// The engine of the probe's tables (the router's `--default-engine`).
    pub engine: &'a str,
}

/// The 3-node, 3-replica idle probe: one row per node.
pub fn run3(p: &Probe3) -> Result<Vec<Scale3Row>> {
    if p.groups < 2 {
        bail!(
            "the 3-node scale probe needs at least 2 groups, not {}",
            p.groups
        );
    }
    fs::create_dir_all(p.dir)?;
    let router_conf = p.dir.join("router.toml");
    fs::write(&router_conf, "table_create_timeout_ms = 900000\n")?;
    let mut opts = ClusterOpts::new(p.bin, p.dir.join("cluster"));
    opts.nodes = 3;
    opts.default_shards = 1;
    opts.default_replicas = 3;
    opts.router_args = vec![
        "--config".into(),
        router_conf.display().to_string(),
        "--default-engine".into(),
        p.engine.into(),
    ];
    opts.node_args = vec!["--fsync".into(), "always".into()];
    if let Some(ms) = p.hibernate_after_ms {
        let node_conf = p.dir.join("node.toml");
        fs::write(&node_conf, format!("hibernate_after_ms = {ms}\n"))?;
        opts.node_args
            .extend(["--config".into(), node_conf.display().to_string()]);
    }
    let mut cluster = LocalCluster::start(opts).context("3-node scale probe cluster")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let etcd = vec![cluster.etcd_url()];
    let (_meta, client) = rt.block_on(async {
        let meta = Meta::connect(&etcd, "default").await?;
        let view = routes::follow(&meta).await?;
        anyhow::Ok((
            meta,
            ShardClient::new(
                view,
                ClientConfig {
                    request_timeout: Duration::from_secs(2),
                    rpc_timeout: Duration::from_secs(2),
                    ..ClientConfig::default()
                },
            ),
        ))
    })?;
    let shards = p.groups - 1;
    eprintln!(
        "scale probe (3 nodes, {} engine): TABLE.CREATE probe {shards} 3",
        p.engine
    );
    let t0 = Instant::now();
    let reply = resp_request(
        &cluster.router_addr(),
        &["TABLE.CREATE", "probe", &shards.to_string(), "3"],
        Duration::from_secs(1200),
    )?;
    if reply != "+OK" {
        bail!("TABLE.CREATE probe {shards} 3 answered {reply}");
    }
    let create_s = t0.elapsed().as_secs_f64();
    let leaders = wait_all_led(&rt, &client, p.groups, Duration::from_secs(600))?;
    eprintln!(
        "scale probe (3 nodes): every group has a leader ({leaders:?} per node); settling {:?}",
        p.settle
    );
    thread::sleep(p.settle);
    let pids: Vec<u32> = (1..=3)
        .map(|id| {
            cluster
                .node_pid(id)
                .with_context(|| format!("node {id} is not running"))
        })
        .collect::<Result<_>>()?;
    let before: Vec<(ProcSample, Vec<(String, f64)>)> = pids
        .iter()
        .map(|&pid| {
            Ok((
                procs::sample(pid).context("cannot read /proc")?,
                procs::threads(pid),
            ))
        })
        .collect::<Result<_>>()?;
    let t = Instant::now();
    thread::sleep(p.idle);
    let idle_secs = t.elapsed().as_secs_f64();
    // How many replicas sleep on each node (shard::hibernate) at the end.
    let asleep: Vec<usize> = (1..=3u64)
        .map(|id| {
            rt.block_on(client.node_status(id, vec![]))
                .map(|s| s.groups.iter().filter(|g| g.hibernating).count())
                .unwrap_or(0)
        })
        .collect();
    let mut rows = Vec::new();
    for (i, &pid) in pids.iter().enumerate() {
        let b = procs::sample(pid).context("cannot read /proc")?;
        let (a, threads_a) = &before[i];
        let threads_b = procs::threads(pid);
        // CPU per thread name over the window, biggest first.
        let mut by_name: Vec<(String, f64)> = Vec::new();
        for (name, cpu) in &threads_b {
            let was: f64 = threads_a
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, c)| c)
                .sum();
            match by_name.iter_mut().find(|(n, _)| n == name) {
                Some((_, c)) => *c += cpu,
                None => by_name.push((name.clone(), *cpu - was)),
            }
        }
        by_name.sort_by(|x, y| y.1.total_cmp(&x.1));
        let threads = by_name
            .iter()
            .filter(|(_, c)| *c > 0.0)
            .take(4)
            .map(|(n, c)| format!("{n} {:.1}", 100.0 * c / idle_secs))
            .collect::<Vec<_>>()
            .join(", ");
        rows.push(Scale3Row {
            node: i as u64 + 1,
            replicas: p.groups,
            leaders: leaders[i],
            asleep: asleep[i],
            idle_cpu_pct: 100.0 * (b.cpu_s - a.cpu_s) / idle_secs,
            idle_secs,
            rss_mib: b.rss_kib as f64 / 1024.0,
            hwm_mib: b.hwm_kib as f64 / 1024.0,
            threads,
            create_s,
        });
    }
    for r in &rows {
        eprintln!("scale probe (3 nodes): {r:?}");
    }
    cluster.shutdown();
    Ok(rows)
}

/// Wait until each of nodes 1..=3 reports `count` replicas and every group
/// has one leader among them; returns the leaders per node.
fn wait_all_led(
    rt: &tokio::runtime::Runtime,
    client: &ShardClient,
    count: usize,
    timeout: Duration,
) -> Result<Vec<usize>> {
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        let mut per_node = Vec::new();
        let mut led = std::collections::HashSet::new();
        last = String::new();
        for id in 1..=3u64 {
            match rt.block_on(client.node_status(id, vec![])) {
                Ok(s) => {
                    let mine: Vec<u64> = s
                        .groups
                        .iter()
                        .filter(|g| g.role == "leader")
                        .map(|g| g.group_id)
                        .collect();
                    per_node.push((s.groups.len(), mine.len()));
                    led.extend(mine);
                }
                Err(e) => last = format!("node {id}: {e}"),
            }
        }
        if last.is_empty() {
            if per_node.iter().all(|&(n, _)| n >= count) && led.len() >= count {
                return Ok(per_node.iter().map(|&(_, l)| l).collect());
            }
            last = format!(
                "(replicas, leaders) per node {per_node:?}, {} groups led",
                led.len()
            );
        }
        if Instant::now() > deadline {
            bail!("not every group had a leader within {timeout:?}: {last}");
        }
        thread::sleep(Duration::from_millis(200));
    }
}
