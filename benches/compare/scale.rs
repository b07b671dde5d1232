//! The scale probe: one `shoal node` hosting many idle 1-replica shard
//! replicas. For each step it tops the node up to that many replicas with
//! `TABLE.CREATE <name> <shards> 1`, lets it settle, measures CPU at rest and
//! RSS, then restarts the node and times until every replica is leader again.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use shoal::cluster::client::{ClientConfig, ShardClient};
use shoal::cluster::routes;
use shoal::devcluster::{resp_request, ClusterOpts, LocalCluster};
use shoal::meta::etcd::Meta;

use crate::procs;
use crate::report::ScaleRow;

pub struct Probe<'a> {
    pub bin: &'a Path,
    pub dir: &'a Path,
    pub steps: &'a [usize],
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

        // At rest: let start-up work (elections, first entries, flushes) end.
        thread::sleep(Duration::from_secs(3));
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
