//! `shoal dev`: one command that runs a whole local cluster for a newcomer —
//! etcd, N nodes and a router on `127.0.0.1:<port>`, all children of this
//! process, with data under one directory that survives restarts.
//!
//! This file owns the user's side of it: checks before anything starts, the
//! progress lines while the cluster comes up, the banner, the warning when a
//! child dies, and the orderly stop on Ctrl-C / SIGTERM / SIGHUP. The
//! processes themselves are supervised by [`crate::devcluster`] (blocking
//! code, so it always runs on `spawn_blocking` here).
//!
//! Ctrl-C in a terminal reaches every child too (they share our process
//! group, see `devcluster`), so the children start their own shutdown while
//! we terminate and reap them in order: router, nodes, etcd. A second signal
//! while stopping exits at once; the children then die with us (parent-death
//! signal).

use std::mem::discriminant;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::devcluster::{self, ClusterOpts, LocalCluster, Readiness};

/// How long the cluster may take until a SET through the router works.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a still-waiting stage is repeated while starting.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// `shoal dev` options.
#[derive(Debug, Clone)]
pub struct DevOpts {
    /// The router's port on 127.0.0.1.
    pub port: u16,
    /// Number of nodes (ids 1..=nodes).
    pub nodes: usize,
    /// Where etcd's and the nodes' data and every log live.
    pub data_dir: PathBuf,
    /// Shards of the `default` table when it is created.
    pub shards: u32,
    /// The `shoal` binary to run the nodes and the router with
    /// (`std::env::current_exe()`).
    pub bin: PathBuf,
    /// Everything over TLS, certificates in `<data_dir>/certs`
    /// (`devcluster::DevCerts`).
    pub tls: bool,
    /// The engine of tables made without ENGINE (the router's
    /// `--default-engine`), `default` among them.
    pub engine: crate::config::RaftEngine,
}

/// Stop requests: the name of what asked (a signal name, or anything a test
/// sends). A closed channel also means stop.
type StopRx = mpsc::UnboundedReceiver<&'static str>;
type Shared = Arc<Mutex<LocalCluster>>;

/// Run the dev cluster until Ctrl-C, SIGTERM or SIGHUP, then stop it and
/// return `Ok(())`.
pub async fn run(opts: DevOpts) -> Result<()> {
    // Install the handlers first: a signal during start-up must not kill us
    // before we can reap the children.
    let stop = forward_signals()?;
    run_until(opts, stop).await
}

fn forward_signals() -> Result<StopRx> {
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = interrupt.recv() => "Ctrl-C",
                _ = terminate.recv() => "SIGTERM",
                _ = hangup.recv() => "SIGHUP",
            };
            if tx.send(name).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// [`run`] with the stop requests coming from `stop` instead of signals.
pub async fn run_until(opts: DevOpts, mut stop: StopRx) -> Result<()> {
    if opts.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if !(1..=crate::slot::MAX_SHARDS).contains(&opts.shards) {
        bail!("--shards must be between 1 and {}", crate::slot::MAX_SHARDS);
    }
    devcluster::etcd_binary()?;
    let data_dir = std::path::absolute(&opts.data_dir)?;
    // A restart finds table `default` as it was first created, whatever
    // `--shards` says now.
    let restart = data_dir.join("etcd").exists();
    // Three replicas when there are enough nodes; a smaller cluster is a
    // single-replica development setup.
    let replicas = if opts.nodes >= 3 { 3 } else { 1 };
    let cluster_opts = ClusterOpts {
        nodes: opts.nodes,
        router_port: Some(opts.port),
        default_replicas: replicas,
        default_shards: opts.shards,
        wait_ready: false,
        // Every process serves Prometheus metrics on a port of its own; the
        // banner names them and `prometheus-targets.json` lists them.
        node_args: vec!["--metrics-listen".into(), "127.0.0.1:0".into()],
        router_args: vec![
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
            "--default-engine".into(),
            opts.engine.as_str().into(),
        ],
        tls: opts.tls,
        ..ClusterOpts::new(&opts.bin, &data_dir)
    };
    let shards = cluster_opts.default_shards;
    println!(
        "shoal dev: starting etcd, {} {} and a router in {}{}",
        opts.nodes,
        if opts.nodes == 1 { "node" } else { "nodes" },
        data_dir.display(),
        if opts.tls {
            ", everything over TLS"
        } else {
            ""
        }
    );

    let mut starting = tokio::task::spawn_blocking(move || LocalCluster::start(cluster_opts));
    let cluster = tokio::select! {
        started = &mut starting => started.context("start-up panicked")??,
        why = stop.recv() => {
            println!("shoal dev: {} during start-up: stopping", why.unwrap_or("stop"));
            if let Ok(Ok(mut cluster)) = starting.await {
                tokio::task::spawn_blocking(move || cluster.shutdown()).await?;
            }
            return Ok(());
        }
    };
    let cluster: Shared = Arc::new(Mutex::new(cluster));

    match wait_ready(&cluster, &mut stop).await {
        Ok(Some(why)) => {
            println!("shoal dev: {why} during start-up: stopping");
            return stop_cluster(&cluster, &mut stop).await;
        }
        Ok(None) => {}
        Err(e) => {
            stop_cluster(&cluster, &mut stop).await?;
            return Err(e);
        }
    }

    let table = if restart {
        "table `default` as first created: TABLE.DESCRIBE default".to_string()
    } else {
        format!("table `default`: {shards} shards x {replicas} replicas")
    };
    let banner = with_cluster(&cluster, move |c| banner(c, &data_dir, &table)).await?;
    println!("{banner}");

    let why = supervise(&cluster, &mut stop).await?;
    println!("\nshoal dev: {why}: stopping router, nodes and etcd...");
    stop_cluster(&cluster, &mut stop).await?;
    println!(
        "shoal dev: stopped. The data stays in {}; run the same command to start again.",
        opts.data_dir.display()
    );
    Ok(())
}

/// Run `f` on the cluster on a blocking thread.
async fn with_cluster<T: Send + 'static>(
    cluster: &Shared,
    f: impl FnOnce(&mut LocalCluster) -> T + Send + 'static,
) -> Result<T> {
    let cluster = cluster.clone();
    tokio::task::spawn_blocking(move || f(&mut cluster.lock().unwrap_or_else(|e| e.into_inner())))
        .await
        .context("cluster supervision panicked")
}

/// Probe until a SET through the router works, printing each new stage and a
/// reminder every [`PROGRESS_EVERY`]. `Some(why)` if asked to stop first.
async fn wait_ready(cluster: &Shared, stop: &mut StopRx) -> Result<Option<&'static str>> {
    let started = Instant::now();
    let mut shown: Option<(std::mem::Discriminant<Readiness>, Instant)> = None;
    loop {
        let stage = tokio::select! {
            stage = with_cluster(cluster, LocalCluster::readiness) => {
                stage?.context("a process exited while the cluster was starting")?
            }
            why = stop.recv() => return Ok(Some(why.unwrap_or("stop"))),
        };
        if stage == Readiness::Ready {
            println!(
                "shoal dev: ready after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            return Ok(None);
        }
        let now = Instant::now();
        match shown {
            Some((kind, _)) if kind != discriminant(&stage) => {
                println!("  {stage}");
                shown = Some((discriminant(&stage), now));
            }
            None => {
                println!("  {stage}");
                shown = Some((discriminant(&stage), now));
            }
            Some((kind, at)) if now.duration_since(at) >= PROGRESS_EVERY => {
                println!("  still {stage} ({} s)", started.elapsed().as_secs());
                shown = Some((kind, now));
            }
            Some(_) => {}
        }
        if started.elapsed() >= READY_TIMEOUT {
            let logs = with_cluster(cluster, |c| c.logs()).await?;
            bail!(
                "the cluster was not ready after {} s: still {stage}.\n{logs}",
                READY_TIMEOUT.as_secs()
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            why = stop.recv() => return Ok(Some(why.unwrap_or("stop"))),
        }
    }
}

fn banner(cluster: &LocalCluster, data_dir: &Path, table: &str) -> String {
    let router = cluster.router_addr();
    let port = router.rsplit(':').next().unwrap_or_default();
    let nodes: Vec<String> = (1..=cluster.node_count() as u64)
        .map(|id| format!("{id}={}", cluster.node_addr(id)))
        .collect();
    let etcd = cluster.etcd_url();
    let (connect, inspect) = match cluster.tls() {
        Some(certs) => (
            format!("redis-cli -p {port} {}", certs.redis_cli_args()),
            format!(
                "shoal status --etcd {etcd} --etcd-cacert {ca} --etcd-cert {cert} --etcd-key {key} --cluster-tls-ca-cert-file {ca} --cluster-tls-cert-file {cert} --cluster-tls-key-file {key}",
                ca = certs.ca().display(),
                cert = certs.router_cert().display(),
                key = certs.router_key().display(),
            ),
        ),
        None => (
            format!("redis-cli -p {port}"),
            format!("shoal status --etcd {etcd}"),
        ),
    };
    let metrics = cluster.metrics_addrs();
    let targets = data_dir.join("prometheus-targets.json");
    let listed = match std::fs::write(&targets, prometheus_targets(&metrics)) {
        Ok(()) => format!(
            "scrape: prometheus --config.file=conf/prometheus.yml (reads {})",
            targets.display()
        ),
        Err(e) => format!("(cannot write {}: {e})", targets.display()),
    };
    let console = metrics
        .iter()
        .find(|(n, _)| n.starts_with("router"))
        .map_or("(the router serves no metrics)".to_string(), |(_, a)| {
            format!("http://{a}/   (live map, throughput, slow commands)")
        });
    let metrics: Vec<String> = metrics.iter().map(|(n, a)| format!("{n}={a}")).collect();
    format!(
        "\n\
         shoal dev cluster is up.\n\
         \x20 router  {router}   connect: {connect}\n\
         \x20 nodes   {}   ({table})\n\
         \x20 etcd    {etcd}   inspect: {inspect}\n\
         \x20 metrics {}   {listed}\n\
         \x20 console {console}\n\
         \x20 data    {}   (kept across restarts; delete it to start empty)\n\
         \x20 logs    {}/<process>/<process>.log\n\
         Press Ctrl-C to stop everything.",
        nodes.join(" "),
        metrics.join(" "),
        data_dir.display(),
        data_dir.display(),
    )
}

/// Prometheus file-based service discovery (`file_sd_configs`) for
/// `targets` (process name -> address): one group per process, labelled
/// with its name and role.
fn prometheus_targets(targets: &std::collections::BTreeMap<String, String>) -> String {
    let groups: Vec<serde_json::Value> = targets
        .iter()
        .map(|(name, addr)| {
            let role = if name.starts_with("router") {
                "router"
            } else {
                "node"
            };
            serde_json::json!({
                "targets": [addr],
                "labels": {"process": name, "role": role, "cluster": "shoal-dev"},
            })
        })
        .collect();
    serde_json::to_string_pretty(&groups).unwrap_or_else(|_| "[]".into())
}

/// Watch the children until asked to stop; a child that dies is reported
/// with its log tail and the others keep running. Returns what asked to stop.
async fn supervise(cluster: &Shared, stop: &mut StopRx) -> Result<&'static str> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            why = stop.recv() => return Ok(why.unwrap_or("stop")),
            _ = tick.tick() => {
                let exits = with_cluster(cluster, LocalCluster::unexpected_exits).await?;
                if exits.is_empty() {
                    continue;
                }
                // A Ctrl-C in the terminal reaches the children as well as
                // us: if that is why they exited, our own signal is due.
                tokio::select! {
                    why = stop.recv() => return Ok(why.unwrap_or("stop")),
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                for exit in exits {
                    eprintln!(
                        "\nshoal dev: warning: {exit}\n\
                         shoal dev: the rest of the cluster keeps running; \
                         restart `shoal dev` to bring {} back.",
                        exit.name
                    );
                }
            }
        }
    }
}

/// Terminate router(s), nodes and etcd, in that order, and reap them. A
/// further stop request meanwhile exits the process at once (the children
/// die with it through their parent-death signal).
async fn stop_cluster(cluster: &Shared, stop: &mut StopRx) -> Result<()> {
    tokio::select! {
        done = with_cluster(cluster, LocalCluster::shutdown) => done,
        Some(why) = stop.recv() => {
            eprintln!("shoal dev: {why} again: killing everything now");
            std::process::exit(130);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devcluster::tests::fake_shoal;
    use crate::devcluster::{free_port, port_is_free, resp_request};

    fn opts(tmp: &Path, port: u16) -> DevOpts {
        DevOpts {
            port,
            nodes: 3,
            data_dir: tmp.join("dev"),
            engine: crate::config::RaftEngine::Openraft,
            shards: 8,
            bin: fake_shoal(tmp),
            tls: false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_until_stopped_and_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let port = free_port();
        let (stop, stop_rx) = mpsc::unbounded_channel();
        let running = tokio::spawn(run_until(opts(tmp.path(), port), stop_rx));

        let router = format!("127.0.0.1:{port}");
        let probe = router.clone();
        tokio::task::spawn_blocking(move || devcluster::wait_tcp(&probe, Duration::from_secs(30)))
            .await
            .unwrap()
            .unwrap();
        // Past the readiness wait and into supervision.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!running.is_finished());
        let reply = resp_request(&router, &["PING"], Duration::from_secs(2)).unwrap();
        assert_eq!(reply, "+PONG");

        // A second dev cluster on the same data dir is refused.
        let (_keep, rx) = mpsc::unbounded_channel();
        let err = run_until(opts(tmp.path(), free_port()), rx)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("in use by another shoal cluster"),
            "{err}"
        );

        stop.send("test").unwrap();
        tokio::time::timeout(Duration::from_secs(30), running)
            .await
            .expect("dev stops within 30 s")
            .unwrap()
            .unwrap();
        let ports = std::fs::read_to_string(tmp.path().join("dev/ports.json")).unwrap();
        let ports: serde_json::Value = serde_json::from_str(&ports).unwrap();
        let mut all = vec![port];
        for id in ["1", "2", "3"] {
            all.push(ports["nodes"][id].as_u64().unwrap() as u16);
        }
        all.push(ports["etcd_client"].as_u64().unwrap() as u16);
        for p in all {
            assert!(port_is_free(p), "port {p} still in use after stop");
        }
    }

    #[tokio::test]
    async fn a_taken_port_is_reported_before_anything_starts() {
        let tmp = tempfile::tempdir().unwrap();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let (_keep, rx) = mpsc::unbounded_channel();
        let err = run_until(opts(tmp.path(), port), rx).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("port {port} is already in use; pass --port to pick another")
        );
        assert!(!tmp.path().join("dev/etcd").exists());
    }
}

#[cfg(test)]
mod metrics_tests {
    use super::*;

    #[test]
    fn targets_are_prometheus_file_sd_groups() {
        let t = std::collections::BTreeMap::from([
            ("node-1".to_string(), "127.0.0.1:9101".to_string()),
            ("router".to_string(), "127.0.0.1:9200".to_string()),
        ]);
        let v: serde_json::Value = serde_json::from_str(&prometheus_targets(&t)).unwrap();
        assert_eq!(v[0]["targets"][0], "127.0.0.1:9101");
        assert_eq!(v[0]["labels"]["role"], "node");
        assert_eq!(v[1]["labels"]["role"], "router");
        assert_eq!(v[1]["labels"]["process"], "router");
    }

    #[test]
    fn addresses_come_from_the_last_start_in_each_log() {
        let log = "x INFO metrics on http://127.0.0.1:1/metrics\n--- restart ---\nx INFO metrics on http://127.0.0.1:2/metrics\n";
        let found = crate::devcluster::logged_metrics_addr(log);
        assert_eq!(found.as_deref(), Some("127.0.0.1:2"));
        assert_eq!(crate::devcluster::logged_metrics_addr("no metrics\n"), None);
    }
}
