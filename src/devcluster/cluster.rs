//! [`LocalCluster`]: etcd + N nodes + routers from one `shoal` binary, laid
//! out under a base directory, with ports remembered in `ports.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::links::{node_endpoint, Links};
use super::*;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

// LocalCluster

/// A RESP request, over TLS with `tls`.
fn request(
    tls: Option<&Arc<tokio_rustls::rustls::ClientConfig>>,
    addr: &str,
    args: &[&str],
    timeout: Duration,
) -> std::io::Result<String> {
    match tls {
        Some(config) => resp_request_tls(addr, args, timeout, config),
        None => resp_request(addr, args, timeout),
    }
}

/// What [`LocalCluster::start`] starts.
#[derive(Debug, Clone)]
pub struct ClusterOpts {
    /// The `shoal` binary.
    pub bin: PathBuf,
    /// Everything lives under here: `etcd/`, `node-<id>/`, `router/`,
    /// `ports.json`, `lock`.
    pub base_dir: PathBuf,
    /// Number of nodes; their ids are 1..=nodes.
    pub nodes: usize,
    /// The first router's port; `None` picks a free one.
    pub router_port: Option<u16>,
    /// Passed to the router as `--default-shards`.
    pub default_shards: u32,
    /// Passed to the router as `--default-replicas` (at most `nodes`, or
    /// table `default` is never created).
    pub default_replicas: u32,
    /// Appended to every `shoal node` command line.
    pub node_args: Vec<String>,
    /// Appended to every `shoal router` command line.
    pub router_args: Vec<String>,
    /// Whether `start` waits until a SET through the router succeeds.
    pub wait_ready: bool,
    /// How long `start` waits for that.
    pub ready_timeout: Duration,
    /// Route every node→node and router→node connection through a proxy
    /// that [`LocalCluster::links`] can cut (network partitions). Ports of
    /// [`SPARE_LINKED_NODES`] nodes added later are planned at start, so
    /// those are behind the links too (unless their port was taken by then).
    pub links: bool,
    /// Everything over TLS ([`DevCerts`] in `<base_dir>/certs`): etcd with
    /// client certificates, mutual TLS between nodes and routers, the
    /// router's RESP on TLS only.
    pub tls: bool,
}

impl ClusterOpts {
    /// 3 nodes, 8 shards × 3 replicas, a free router port, wait up to 60 s
    /// for readiness.
    pub fn new(bin: impl Into<PathBuf>, base_dir: impl Into<PathBuf>) -> ClusterOpts {
        ClusterOpts {
            bin: bin.into(),
            base_dir: base_dir.into(),
            nodes: 3,
            router_port: None,
            default_shards: 8,
            default_replicas: 3,
            node_args: Vec::new(),
            router_args: Vec::new(),
            wait_ready: true,
            ready_timeout: Duration::from_secs(60),
            links: false,
            tls: false,
        }
    }
}

/// How far a starting cluster has come; see [`LocalCluster::readiness`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// These nodes do not accept TCP connections yet.
    Nodes(Vec<u64>),
    /// The router does not answer `PING` with `+PONG` yet.
    Router,
    /// The router answers, but `SET` does not return `+OK` yet (table
    /// `default` is still being created): the last reply or error.
    Table(String),
    /// A `SET` through the router returned `+OK`.
    Ready,
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Readiness::Nodes(ids) => {
                let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
                let noun = if ids.len() == 1 { "node" } else { "nodes" };
                write!(f, "waiting for {noun} {} to listen", ids.join(", "))
            }
            Readiness::Router => write!(f, "waiting for the router to answer PING"),
            Readiness::Table(last) => write!(
                f,
                "waiting for the router to accept writes (table `default` is being created; last reply: {last})"
            ),
            Readiness::Ready => write!(f, "ready"),
        }
    }
}

/// A child that exited while it was meant to be running.
#[derive(Debug, Clone)]
pub struct ExitReport {
    /// `etcd`, `node-<id>`, `router`, `router-<n>`.
    pub name: String,
    /// Its process id (already reaped).
    pub pid: u32,
    /// How it ended.
    pub status: ExitStatus,
    /// Its log file.
    pub log_path: PathBuf,
    /// The last lines of that log.
    pub log_tail: String,
}

impl fmt::Display for ExitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (pid {}) exited unexpectedly ({}); last lines of {}:\n{}",
            self.name,
            self.pid,
            self.status,
            self.log_path.display(),
            self.log_tail
        )
    }
}

/// One node or router process and where it listens.
struct Member {
    port: u16,
    proc: Proc,
    /// False after kill/stop on purpose: its exit is then not a failure.
    wanted: bool,
}

impl Member {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn exit_report(&mut self) -> Option<ExitReport> {
        exit_report(&mut self.proc, &mut self.wanted)
    }
}

/// If `proc` was `wanted` running but has exited: the report, once (it is
/// then no longer wanted).
pub(super) fn exit_report(proc: &mut Proc, wanted: &mut bool) -> Option<ExitReport> {
    if !*wanted {
        return None;
    }
    let status = proc.exit_status()?;
    *wanted = false;
    Some(ExitReport {
        name: proc.name().to_string(),
        pid: proc.pid(),
        status,
        log_path: proc.log_path().to_path_buf(),
        log_tail: proc.log_tail(LOG_TAIL_LINES),
    })
}

/// Ports chosen for a base directory, kept in `<base>/ports.json` so a restart
/// reuses them when they are still free.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct SavedPorts {
    etcd_client: Option<u16>,
    etcd_peer: Option<u16>,
    #[serde(default)]
    pub(super) nodes: BTreeMap<u64, u16>,
}

impl SavedPorts {
    fn path(base: &Path) -> PathBuf {
        base.join("ports.json")
    }

    pub(super) fn load(base: &Path) -> SavedPorts {
        let path = SavedPorts::path(base);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!("ignoring {}: {e}", path.display());
                SavedPorts::default()
            }),
            Err(_) => SavedPorts::default(),
        }
    }

    fn save(&self, base: &Path) -> Result<()> {
        let path = SavedPorts::path(base);
        let json = serde_json::to_string_pretty(self)?;
        fs::write(&path, json + "\n").with_context(|| format!("cannot write {}", path.display()))
    }
}

/// The saved port if it is still free and not taken by this cluster, else a
/// fresh free port.
pub(super) fn pick_port(saved: Option<u16>, taken: &mut BTreeSet<u16>) -> u16 {
    if let Some(port) = saved {
        if !taken.contains(&port) && port_is_free(port) {
            claim_port(port);
            taken.insert(port);
            return port;
        }
    }
    loop {
        let port = free_port();
        if taken.insert(port) {
            return port;
        }
    }
}

/// An exclusive `flock` on `<base>/lock`, so two clusters never share one
/// directory. Released when dropped or when the process dies.
///
/// A `flock` belongs to the open file, and a child forked from this process
/// (by any thread, for any cluster) shares that file until its `exec`
/// closes it: a lock dropped while another child is between fork and exec
/// stays held for that moment. So the directories this process holds are
/// also kept in [`HELD_DIRS`], which refuses a second cluster here at once,
/// and a lock found held whose file names this process, by a directory no
/// longer in that set, is such a leftover and is retried for
/// [`LEFTOVER_LOCK_WAIT`] instead of refused.
#[derive(Debug)]
struct DirLock {
    dir: PathBuf,
    _file: File,
}

/// The directories whose [`DirLock`] this process holds.
static HELD_DIRS: std::sync::Mutex<BTreeSet<PathBuf>> = std::sync::Mutex::new(BTreeSet::new());

/// How long [`DirLock::acquire`] waits for a lock that only a child of this
/// process, between its fork and its exec, still holds.
const LEFTOVER_LOCK_WAIT: Duration = Duration::from_secs(5);

fn held_dirs() -> std::sync::MutexGuard<'static, BTreeSet<PathBuf>> {
    HELD_DIRS.lock().unwrap_or_else(|e| e.into_inner())
}

impl DirLock {
    fn acquire(dir: &Path) -> Result<DirLock> {
        let me = std::process::id().to_string();
        if !held_dirs().insert(dir.to_path_buf()) {
            return Err(DirLock::in_use(dir, &me));
        }
        let locked = DirLock::lock_file(dir, &me);
        if locked.is_err() {
            held_dirs().remove(dir);
        }
        locked.map(|file| DirLock {
            dir: dir.to_path_buf(),
            _file: file,
        })
    }

    fn in_use(dir: &Path, holder: &str) -> anyhow::Error {
        anyhow!(
            "{} is in use by another shoal cluster (pid {holder}): stop that one first, or use another data dir",
            dir.display()
        )
    }

    fn lock_file(dir: &Path, me: &str) -> Result<File> {
        let path = dir.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let deadline = Instant::now() + LEFTOVER_LOCK_WAIT;
        // SAFETY: flock on a descriptor we own.
        while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(err).with_context(|| format!("cannot lock {}", path.display()));
            }
            let mut holder = String::new();
            file.seek(io::SeekFrom::Start(0))?;
            let _ = file.read_to_string(&mut holder);
            if holder.trim() != me || Instant::now() >= deadline {
                return Err(DirLock::in_use(dir, holder.trim()));
            }
            thread::sleep(Duration::from_millis(10));
        }
        file.set_len(0)?;
        file.seek(io::SeekFrom::Start(0))?;
        writeln!(file, "{me}")?;
        Ok(file)
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        held_dirs().remove(&self.dir);
    }
}

/// etcd + N `shoal node`s + one or more `shoal router`s, all children of this
/// process. Node ids are 1..=N; methods that take a node take its id.
/// Dropping it kills everything (routers, then nodes, then etcd); call
/// [`LocalCluster::shutdown`] for a graceful stop.
pub struct LocalCluster {
    // Field order is drop order: routers, nodes, etcd, then the lock.
    routers: Vec<Member>,
    nodes: Vec<Member>,
    etcd: Etcd,
    etcd_wanted: bool,
    bin: PathBuf,
    base_dir: PathBuf,
    node_args: Vec<String>,
    router_args: Vec<String>,
    /// `--worker-threads` of a router whose arguments do not set it.
    router_threads: usize,
    default_shards: u32,
    default_replicas: u32,
    links: Option<Links>,
    tls: Option<DevCerts>,
    /// With TLS: what the probes present to the router.
    resp_tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    _lock: DirLock,
}

/// The metrics address a process's log names last (`metrics on
/// http://ADDR/metrics`): a restart appends to the log.
pub fn logged_metrics_addr(log: &str) -> Option<String> {
    log.lines()
        .filter_map(|l| l.split("metrics on http://").nth(1))
        .filter_map(|rest| rest.split('/').next())
        .next_back()
        .map(str::to_string)
}

/// A process's share of this machine's cores in a local cluster: its
/// cores over the nodes, at least 1. The processes of a local cluster
/// share one machine, and a runtime with a thread per core in each of them
/// spends its time waking threads for the others' work
/// (docs/PERFORMANCE.md, "Worker threads", and for the router "A local
/// cluster's router gets its share of the cores"). A router started alone
/// keeps its default, one per core.
fn worker_share(nodes: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / nodes.max(1)).max(1)
}

/// `args` plus `--worker-threads threads` unless `args` set it.
fn with_worker_threads(mut args: Vec<String>, threads: usize) -> Vec<String> {
    if !args.iter().any(|a| a.starts_with("--worker-threads")) {
        args.push("--worker-threads".into());
        args.push(threads.to_string());
    }
    args
}

impl LocalCluster {
    /// Start etcd (waiting until healthy), then the nodes and the router.
    /// Everything that can be checked is checked before any process starts:
    /// the etcd binary, the `shoal` binary, the directory lock and the router
    /// port. With `wait_ready` it returns once a SET through the router works
    /// (see [`LocalCluster::wait_ready`]).
    pub fn start(opts: ClusterOpts) -> Result<LocalCluster> {
        if opts.nodes == 0 {
            bail!("a cluster needs at least one node");
        }
        if opts.wait_ready && opts.default_replicas as usize > opts.nodes {
            bail!(
                "{} replicas need at least {} nodes (the router never creates a table with fewer replicas than configured)",
                opts.default_replicas,
                opts.default_replicas
            );
        }
        etcd_binary()?;
        let bin = std::path::absolute(&opts.bin)?;
        if !bin.is_file() {
            bail!("the shoal binary {} does not exist", bin.display());
        }
        let base_dir = std::path::absolute(&opts.base_dir)?;
        fs::create_dir_all(&base_dir)
            .with_context(|| format!("cannot create {}", base_dir.display()))?;
        let lock = DirLock::acquire(&base_dir)?;

        let router_port = match opts.router_port {
            Some(port) if !port_is_free(port) => {
                bail!("port {port} is already in use; pass --port to pick another")
            }
            Some(port) => {
                claim_port(port);
                port
            }
            None => free_port(),
        };
        let mut taken = BTreeSet::from([router_port]);
        let mut saved = SavedPorts::load(&base_dir);
        saved.etcd_client = Some(pick_port(saved.etcd_client, &mut taken));
        saved.etcd_peer = Some(pick_port(saved.etcd_peer, &mut taken));
        // With links, ports for a few nodes added later are planned now, so
        // that every process dials those through its proxies too.
        let planned = opts.nodes + if opts.links { SPARE_LINKED_NODES } else { 0 };
        for id in 1..=planned as u64 {
            let port = pick_port(saved.nodes.get(&id).copied(), &mut taken);
            saved.nodes.insert(id, port);
        }
        saved.save(&base_dir)?;
        let links = opts.links.then(|| {
            let links = Links::new();
            for (&id, &port) in &saved.nodes {
                if id <= planned as u64 {
                    links.set_node_port(id, port);
                }
            }
            links
        });

        let tls = if opts.tls {
            Some(DevCerts::ensure(&base_dir.join("certs"))?)
        } else {
            None
        };
        let resp_tls = tls.as_ref().map(DevCerts::resp_client_config).transpose()?;
        let etcd = Etcd::start_with(
            &base_dir.join("etcd"),
            saved.etcd_client.unwrap_or_default(),
            saved.etcd_peer.unwrap_or_default(),
            tls.clone(),
        )?;
        let mut cluster = LocalCluster {
            routers: Vec::new(),
            nodes: Vec::new(),
            etcd,
            etcd_wanted: true,
            bin,
            base_dir,
            node_args: with_worker_threads(opts.node_args, worker_share(opts.nodes)),
            router_args: opts.router_args,
            router_threads: worker_share(opts.nodes),
            default_shards: opts.default_shards,
            default_replicas: opts.default_replicas,
            links,
            tls,
            resp_tls,
            _lock: lock,
        };
        for id in 1..=opts.nodes as u64 {
            let port = saved.nodes[&id];
            let proc = cluster.spawn_node(id, port)?;
            cluster.nodes.push(Member {
                port,
                proc,
                wanted: true,
            });
        }
        let proc = cluster.spawn_router("router", router_port, &[])?;
        cluster.routers.push(Member {
            port: router_port,
            proc,
            wanted: true,
        });
        if opts.wait_ready {
            cluster.wait_ready(opts.ready_timeout)?;
        }
        Ok(cluster)
    }

    fn command(&self, role: &str) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg(role);
        if std::env::var_os("RUST_BACKTRACE").is_none() {
            cmd.env("RUST_BACKTRACE", "1");
        }
        // Logs go to files: no colour escapes.
        cmd.env("NO_COLOR", "1");
        cmd
    }

    fn spawn_node(&self, id: u64, port: u16) -> Result<Proc> {
        let dir = self.node_dir(id);
        let mut cmd = self.command("node");
        cmd.arg("--id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--etcd")
            .arg(self.etcd.client_url())
            .args(self.tls.iter().flat_map(DevCerts::node_args))
            .args(&self.node_args);
        if let Some(links) = &self.links {
            cmd.args(links.dial_args(&node_endpoint(id))?);
        }
        Proc::spawn(&node_endpoint(id), cmd, &dir)
    }

    fn spawn_router(&self, name: &str, port: u16, extra_args: &[&str]) -> Result<Proc> {
        let mut cmd = self.command("router");
        let addr = format!("127.0.0.1:{port}");
        match &self.tls {
            Some(certs) => cmd.args(certs.router_args(&addr)),
            None => cmd.arg("--listen").arg(&addr),
        };
        cmd.arg("--etcd")
            .arg(self.etcd.client_url())
            .arg("--default-shards")
            .arg(self.default_shards.to_string())
            .arg("--default-replicas")
            .arg(self.default_replicas.to_string())
            .args(with_worker_threads(
                self.router_args
                    .iter()
                    .cloned()
                    .chain(extra_args.iter().map(|a| a.to_string()))
                    .collect(),
                self.router_threads,
            ));
        if let Some(links) = &self.links {
            cmd.args(links.dial_args(name)?);
        }
        Proc::spawn(name, cmd, &self.base_dir.join(name))
    }

    /// Exits of children that were meant to be running, each reported once
    /// (the child is then considered stopped). Killed or stopped on purpose
    /// through this API is not unexpected.
    pub fn unexpected_exits(&mut self) -> Vec<ExitReport> {
        let mut reports: Vec<ExitReport> = self
            .routers
            .iter_mut()
            .chain(self.nodes.iter_mut())
            .filter_map(Member::exit_report)
            .collect();
        reports.extend(exit_report(&mut self.etcd.proc, &mut self.etcd_wanted));
        reports
    }

    fn fail_on_exits(&mut self) -> Result<()> {
        let exits = self.unexpected_exits();
        if exits.is_empty() {
            return Ok(());
        }
        let text: Vec<String> = exits.iter().map(ExitReport::to_string).collect();
        bail!("{}", text.join("\n\n"))
    }

    /// One round of probes, in order: every running node accepts TCP, the
    /// first router answers PING, and `SET __shoal_ready 1` returns `+OK`
    /// (the key is deleted again, so the cluster is left empty). Errors if a
    /// child that should be running has exited.
    pub fn readiness(&mut self) -> Result<Readiness> {
        self.fail_on_exits()?;
        let waiting: Vec<u64> = (1..=self.nodes.len() as u64)
            .filter(|&id| {
                let node = &self.nodes[id as usize - 1];
                node.wanted && !tcp_accepts(&node.addr())
            })
            .collect();
        if !waiting.is_empty() {
            return Ok(Readiness::Nodes(waiting));
        }
        let router = self.router_addr();
        let probe = Duration::from_secs(5);
        match self.request(&router, &["PING"], probe) {
            Ok(reply) if reply == "+PONG" => {}
            _ => return Ok(Readiness::Router),
        }
        match self.request(&router, &["SET", READY_KEY, "1"], probe) {
            Ok(reply) if reply == "+OK" => {
                let _ = self.request(&router, &["DEL", READY_KEY], probe);
                Ok(Readiness::Ready)
            }
            Ok(reply) => Ok(Readiness::Table(reply)),
            Err(e) => Ok(Readiness::Table(e.to_string())),
        }
    }

    /// Probe [`LocalCluster::readiness`] until `Ready`; the error names the
    /// stage it was stuck at and carries every log tail.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let stage = self
                .readiness()
                .map_err(|e| anyhow!("a process exited while the cluster was starting: {e}"))?;
            if stage == Readiness::Ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "cluster not ready within {timeout:?}: still {stage}\n{}",
                    self.logs()
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The first router's `127.0.0.1:port`.
    pub fn router_addr(&self) -> String {
        self.routers[0].addr()
    }

    /// The whole log of router `index` (0 is the first).
    pub fn router_log(&self, index: usize) -> String {
        std::fs::read_to_string(self.routers[index].proc.log_path()).unwrap_or_default()
    }

    /// Every router's address, the first one first.
    pub fn router_addrs(&self) -> Vec<String> {
        self.routers.iter().map(Member::addr).collect()
    }

    /// `http://127.0.0.1:<port>` of etcd.
    pub fn etcd_url(&self) -> String {
        self.etcd.client_url().to_string()
    }

    /// For tests that restart, pause or kill etcd itself.
    pub fn etcd_mut(&mut self) -> &mut Etcd {
        &mut self.etcd
    }

    /// The base directory (absolute).
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// The Prometheus endpoints (`--metrics-listen`) of the running nodes
    /// and routers, by process name: the address each logged at its last
    /// start (`metrics on http://...`; a restart appends to the log).
    pub fn metrics_addrs(&self) -> std::collections::BTreeMap<String, String> {
        self.nodes
            .iter()
            .chain(&self.routers)
            .filter_map(|m| {
                let text = std::fs::read_to_string(m.proc.log_path()).ok()?;
                Some((m.proc.name().to_string(), logged_metrics_addr(&text)?))
            })
            .collect()
    }

    /// Number of nodes (ids 1..=n).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The node's directory, `<base>/node-<id>`: its log, and its
    /// `--data-dir` in `data/`.
    pub fn node_dir(&self, id: u64) -> PathBuf {
        self.base_dir.join(format!("node-{id}"))
    }

    fn node(&mut self, id: u64) -> &mut Member {
        let count = self.nodes.len();
        match (id as usize)
            .checked_sub(1)
            .and_then(|i| self.nodes.get_mut(i))
        {
            Some(node) => node,
            None => panic!("no node with id {id}: ids are 1..={count}"),
        }
    }

    /// The node's `127.0.0.1:port` (its --listen address).
    pub fn node_addr(&self, id: u64) -> String {
        let i = (id as usize)
            .checked_sub(1)
            .filter(|&i| i < self.nodes.len())
            .unwrap_or_else(|| panic!("no node with id {id}: ids are 1..={}", self.nodes.len()));
        self.nodes[i].addr()
    }

    /// The node's process id, while it runs.
    pub fn node_pid(&mut self, id: u64) -> Option<u32> {
        let node = self.node(id);
        node.proc.is_running().then(|| node.proc.pid())
    }

    /// kill -9 the node and reap it.
    pub fn kill_node(&mut self, id: u64) -> Result<()> {
        let node = self.node(id);
        node.wanted = false;
        node.proc.sigkill()?;
        Ok(())
    }

    /// Stop the node gracefully (SIGTERM, SIGKILL after [`TERM_GRACE`]).
    pub fn stop_node(&mut self, id: u64) -> Result<()> {
        let node = self.node(id);
        node.wanted = false;
        node.proc.terminate()?;
        Ok(())
    }

    /// SIGSTOP the node.
    pub fn pause_node(&mut self, id: u64) -> Result<()> {
        Ok(self.node(id).proc.pause()?)
    }

    /// SIGCONT the node.
    pub fn resume_node(&mut self, id: u64) -> Result<()> {
        Ok(self.node(id).proc.resume()?)
    }

    /// Start a killed or stopped node again: same id, same data dir, same port
    /// if it is still free (else a new one, saved in ports.json). Waits until
    /// it accepts connections.
    pub fn start_node(&mut self, id: u64) -> Result<()> {
        if self.node(id).proc.is_running() {
            bail!("node-{id} is already running");
        }
        let mut port = self.node(id).port;
        if !port_is_free(port) {
            port = free_port();
            let mut saved = SavedPorts::load(&self.base_dir);
            saved.nodes.insert(id, port);
            saved.save(&self.base_dir)?;
        }
        if let Some(links) = &self.links {
            links.set_node_port(id, port);
        }
        let proc = self.spawn_node(id, port)?;
        let node = self.node(id);
        *node = Member {
            port,
            proc,
            wanted: true,
        };
        wait_member(node, PROC_START_TIMEOUT, tcp_accepts)
    }

    /// Start one more node: the next id (`node_count() + 1`), a free port
    /// (saved in ports.json), the same arguments as the others. It registers
    /// in etcd and, once live, the rebalancer moves replicas to it. Returns
    /// its id once it accepts connections.
    pub fn add_node(&mut self) -> Result<u64> {
        let id = self.nodes.len() as u64 + 1;
        let mut saved = SavedPorts::load(&self.base_dir);
        let mut taken: BTreeSet<u16> = self
            .nodes
            .iter()
            .chain(self.routers.iter())
            .map(|m| m.port)
            .chain([self.etcd.client_port(), self.etcd.peer_port()])
            .collect();
        let port = pick_port(saved.nodes.get(&id).copied(), &mut taken);
        saved.nodes.insert(id, port);
        saved.save(&self.base_dir)?;
        if let Some(links) = &self.links {
            links.set_node_port(id, port);
        }
        let proc = self.spawn_node(id, port)?;
        self.nodes.push(Member {
            port,
            proc,
            wanted: true,
        });
        let node = self.nodes.last_mut().expect("just pushed");
        wait_member(node, PROC_START_TIMEOUT, tcp_accepts)?;
        Ok(id)
    }

    /// Start one more router on a free port; returns its address once it
    /// answers PING.
    pub fn add_router(&mut self) -> Result<String> {
        self.add_router_with(&[])
    }

    /// Start one more router with extra command-line arguments (for example
    /// a test failpoint); returns its address once it answers PING.
    pub fn add_router_with(&mut self, extra_args: &[&str]) -> Result<String> {
        let port = free_port();
        let name = format!("router-{}", self.routers.len() + 1);
        let proc = self.spawn_router(&name, port, extra_args)?;
        self.routers.push(Member {
            port,
            proc,
            wanted: true,
        });
        let resp_tls = self.resp_tls.clone();
        let router = self.routers.last_mut().expect("just pushed");
        wait_member(router, PROC_START_TIMEOUT, |addr| {
            request(resp_tls.as_ref(), addr, &["PING"], Duration::from_secs(2))
                .is_ok_and(|r| r == "+PONG")
        })?;
        Ok(router.addr())
    }

    /// One RESP request to a router of this cluster (over TLS when the
    /// cluster uses it): the first line of the reply.
    pub fn request(&self, addr: &str, args: &[&str], timeout: Duration) -> std::io::Result<String> {
        request(self.resp_tls.as_ref(), addr, args, timeout)
    }

    /// The certificates, when the cluster runs with TLS.
    pub fn tls(&self) -> Option<&DevCerts> {
        self.tls.as_ref()
    }

    /// Router `index`'s process id (an index into
    /// [`LocalCluster::router_addrs`]), while it runs.
    pub fn router_pid(&mut self, index: usize) -> Option<u32> {
        let router = self.routers.get_mut(index)?;
        router.proc.is_running().then(|| router.proc.pid())
    }

    /// Router `index`'s name (`router`, `router-2`, ...): its endpoint in
    /// [`LocalCluster::links`].
    pub fn router_name(&self, index: usize) -> Option<&str> {
        Some(self.routers.get(index)?.proc.name())
    }

    /// The cuttable links between processes, when started with
    /// [`ClusterOpts::links`].
    pub fn links(&self) -> Option<&Links> {
        self.links.as_ref()
    }

    /// kill -9 router `index` (an index into [`LocalCluster::router_addrs`]).
    pub fn kill_router(&mut self, index: usize) -> Result<()> {
        let router = &mut self.routers[index];
        router.wanted = false;
        router.proc.sigkill()?;
        Ok(())
    }

    /// The last lines of every process's log, each under a header with its
    /// name, state and log path: for failure messages.
    pub fn logs(&mut self) -> String {
        let mut out = String::new();
        let procs = std::iter::once(&mut self.etcd.proc)
            .chain(self.nodes.iter_mut().map(|m| &mut m.proc))
            .chain(self.routers.iter_mut().map(|m| &mut m.proc));
        for proc in procs {
            let state = proc.state();
            out.push_str(&format!(
                "==== {}: {state} — {} ====\n{}\n",
                proc.name(),
                proc.log_path().display(),
                proc.log_tail(LOG_TAIL_LINES)
            ));
        }
        out
    }

    /// Stop everything gracefully: all routers, then all nodes, then etcd,
    /// each group with SIGTERM and one shared grace period before SIGKILL.
    /// Every child is reaped. Safe to call twice.
    pub fn shutdown(&mut self) {
        for member in self.routers.iter_mut().chain(self.nodes.iter_mut()) {
            member.wanted = false;
        }
        self.etcd_wanted = false;
        terminate_all(self.routers.iter_mut().map(|m| &mut m.proc));
        terminate_all(self.nodes.iter_mut().map(|m| &mut m.proc));
        terminate_all([&mut self.etcd.proc]);
    }
}

/// Wait until `ready(addr)` holds for `member`, failing early with its log if
/// it exits.
fn wait_member(member: &mut Member, timeout: Duration, ready: impl Fn(&str) -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let addr = member.addr();
    loop {
        if ready(&addr) {
            return Ok(());
        }
        if let Some(report) = member.exit_report() {
            bail!("{report}");
        }
        if Instant::now() >= deadline {
            bail!(
                "{} was not ready on {addr} within {timeout:?}; last lines of {}:\n{}",
                member.proc.name(),
                member.proc.log_path().display(),
                member.proc.log_tail(LOG_TAIL_LINES)
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn a_process_gets_its_share_of_the_cores_unless_told_otherwise() {
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(worker_share(3), (cores / 3).max(1));
        assert_eq!(worker_share(1), cores);
        assert_eq!(worker_share(0), cores);
        assert_eq!(
            with_worker_threads(strings(&["--x", "1"]), 2),
            strings(&["--x", "1", "--worker-threads", "2"])
        );
        // Arguments that set it (a router added with a count of its own)
        // keep theirs.
        for set in [&["--worker-threads", "7"][..], &["--worker-threads=7"][..]] {
            let args = [&["--log-level", "info"][..], set].concat();
            assert_eq!(with_worker_threads(strings(&args), 2), strings(&args));
        }
    }

    #[test]
    fn a_directory_is_locked_once_and_free_again_when_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let lock = DirLock::acquire(tmp.path()).unwrap();
        let started = Instant::now();
        let err = DirLock::acquire(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "in use by another shoal cluster (pid {})",
                std::process::id()
            )),
            "{err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "refused at once"
        );
        drop(lock);
        drop(DirLock::acquire(tmp.path()).unwrap());
    }

    /// A child forked while the lock was held shares its file until it
    /// execs: the lock, dropped meanwhile, is taken again once it has.
    #[test]
    fn a_lock_a_forked_child_holds_until_its_exec_is_taken_again() {
        let tmp = tempfile::tempdir().unwrap();
        let lock = DirLock::acquire(tmp.path()).unwrap();
        let mut cmd = Command::new("true");
        // SAFETY: the hook only sleeps (nanosleep is async-signal-safe).
        unsafe {
            cmd.pre_exec(|| {
                libc::usleep(300_000);
                Ok(())
            });
        }
        let spawning = thread::spawn(move || cmd.status().unwrap());
        // Let the fork happen before the lock is dropped.
        thread::sleep(Duration::from_millis(100));
        drop(lock);
        let again = DirLock::acquire(tmp.path());
        assert!(spawning.join().unwrap().success());
        again.unwrap();
    }

    #[test]
    fn a_directory_another_process_locks_is_refused_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("lock");
        fs::write(&path, "424242\n").unwrap();
        let mut holder = Command::new("flock")
            .arg("-x")
            .arg(&path)
            .args(["sleep", "30"])
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let (err, took) = loop {
            let started = Instant::now();
            match DirLock::acquire(tmp.path()) {
                // `flock` has not taken it yet.
                Ok(lock) if Instant::now() < deadline => {
                    drop(lock);
                    fs::write(&path, "424242\n").unwrap();
                    thread::sleep(Duration::from_millis(20));
                }
                Ok(_) => panic!("flock never took the lock"),
                Err(e) => break (e.to_string(), started.elapsed()),
            }
        };
        let _ = holder.kill();
        let _ = holder.wait();
        assert!(
            err.contains("in use by another shoal cluster (pid 424242)"),
            "{err}"
        );
        // Not waited on as a leftover of this process's children.
        assert!(took < LEFTOVER_LOCK_WAIT / 2, "refused after {took:?}");
    }
}
