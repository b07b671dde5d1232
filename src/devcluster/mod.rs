//! Supervision of real local processes: an etcd server, `shoal node`s and
//! `shoal router`s run as children of this process, each in its own directory
//! with its own log file. `shoal dev` and the integration tests share it.
//!
//! What it owns:
//! * [`Proc`]: one child process whose stdout and stderr go to
//!   `<dir>/<name>.log`, with kill -9, graceful terminate, pause and resume.
//!   Dropping a `Proc` kills and reaps it, so a panicking test leaves nothing
//!   behind.
//! * [`Etcd`]: a single-member etcd on loopback ports, started and waited on
//!   until `/health` says so.
//! * [`LocalCluster`]: etcd + N nodes + routers from one `shoal` binary, laid
//!   out under a base directory (`etcd/`, `node-<id>/`, `router/`), with the
//!   chosen ports remembered in `ports.json` so a restart on the same
//!   directory finds etcd and the nodes at the same addresses.
//!
//! Process-lifetime rules, and why:
//! * Children stay in our process group. When a user hits Ctrl-C in
//!   `shoal dev`, the terminal sends SIGINT to every child as well as to us, and
//!   Ctrl-Z stops the whole cluster together; each child must therefore shut
//!   down cleanly on SIGINT on its own, and the parent still terminates and
//!   reaps every child (router, nodes, etcd, in that order).
//! * Every child gets `PR_SET_PDEATHSIG = SIGKILL`, so killing the parent with
//!   kill -9 takes the children with it. Linux sends that signal when the
//!   *thread* that forked the child exits, not the process, so all children are
//!   forked from one spawner thread that lives as long as the process (a child
//!   started from a `spawn_blocking` or test thread would otherwise be killed
//!   when that thread ends).
//! * stdin is /dev/null: a child in the foreground group must never read the
//!   terminal.
//!
//! With [`ClusterOpts::links`], every node and router dials the nodes
//! through fault-injecting proxies ([`links`]), so tests can cut the network
//! between any two of them.
//!
//! Everything here is blocking (std::process, std::net); call it from
//! `spawn_blocking` in async code. It never talks to anything but 127.0.0.1.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

pub mod links;
use links::{node_endpoint, Links};

/// How long [`Proc::terminate`] waits after SIGTERM before it sends SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(5);
/// How long etcd may take to report healthy.
const ETCD_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a restarted node or an added router may take to accept.
const PROC_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of each log shown by [`LocalCluster::logs`] and in error messages.
const LOG_TAIL_LINES: usize = 40;
/// With [`ClusterOpts::links`]: nodes [`LocalCluster::add_node`] may add
/// whose ports (and proxies) are planned when the cluster starts.
pub const SPARE_LINKED_NODES: usize = 4;
/// The key written (and deleted again) to prove the cluster accepts writes.
pub const READY_KEY: &str = "__shoal_ready";

// ---------------------------------------------------------------------------
// Ports and probes
// ---------------------------------------------------------------------------

/// Ports handed out by [`free_port`] (or claimed for reuse) in this process,
/// never handed out twice, so parallel tests do not race for one port.
static CLAIMED_PORTS: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

fn claim_port(port: u16) -> bool {
    CLAIMED_PORTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(port)
}

/// A loopback TCP port that was free a moment ago (the OS picks it by binding
/// 127.0.0.1:0) and that this process has not handed out before.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("cannot bind 127.0.0.1:0 to find a free port");
        if claim_port(port) {
            return port;
        }
    }
    panic!("no unclaimed free port after 1000 tries");
}

/// Whether 127.0.0.1:`port` can be bound right now (nothing listens on it,
/// on 127.0.0.1 or on 0.0.0.0).
pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn resolve(addr: &str) -> io::Result<SocketAddr> {
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no address: {addr}")))
}

fn tcp_accepts(addr: &str) -> bool {
    resolve(addr)
        .and_then(|sa| TcpStream::connect_timeout(&sa, Duration::from_millis(500)))
        .is_ok()
}

/// Wait until something accepts TCP connections on `addr` (`host:port`).
pub fn wait_tcp(addr: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if tcp_accepts(addr) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("nothing accepted TCP connections on {addr} within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Send one RESP command (an array of bulk strings) to `addr` on a fresh
/// connection and return the first line of the reply without its CRLF, e.g.
/// `+PONG`, `+OK`, `:1` or `-ERR ...`. Enough for status, integer and error
/// replies; for a bulk reply it is only the `$<len>` header.
pub fn resp_request(addr: &str, args: &[&str], timeout: Duration) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&resolve(addr)?, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut line = Vec::new();
    BufReader::new(stream.take(64 * 1024)).read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\r\n") {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a whole reply line",
        ));
    }
    line.truncate(line.len() - 2);
    Ok(String::from_utf8_lossy(&line).into_owned())
}

// ---------------------------------------------------------------------------
// Proc
// ---------------------------------------------------------------------------

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Fork `cmd` from the process-wide spawner thread (see the module doc: the
/// parent-death signal follows the forking thread).
fn spawn_from_spawner_thread(cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("devcluster-spawner".into())
            .spawn(move || {
                // The sender is in a static and never dropped: this thread
                // lives until the process exits.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("cannot start the devcluster spawner thread");
        tx
    });
    let gone = || io::Error::other("the devcluster spawner thread is gone");
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner.send((cmd, reply_tx)).map_err(|_| gone())?;
    reply_rx.recv().map_err(|_| gone())?
}

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One supervised child process. Its stdout and stderr are appended to
/// `<dir>/<name>.log` (a restart appends to the same file after a header
/// line). Dropping it sends SIGKILL and reaps it.
pub struct Proc {
    name: String,
    child: Child,
    log_path: PathBuf,
    /// Set once the child has been reaped; after that its pid may belong to
    /// someone else and is never signalled again.
    status: Option<ExitStatus>,
}

impl Proc {
    /// Start `cmd` as a child named `name` in directory `dir` (created if
    /// needed; also the child's working directory, so give `cmd` an absolute
    /// program path). stdin is /dev/null, stdout and stderr go to the log.
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Result<Proc> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let log_path = dir.join(format!("{name}.log"));
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        writeln!(
            log,
            "=== {name} starting at unix time {}: {cmd:?}",
            unix_time()
        )?;
        let stderr = log.try_clone()?;
        cmd.current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        #[cfg(target_os = "linux")]
        {
            let parent = std::process::id() as libc::pid_t;
            // SAFETY: the hook runs between fork and exec and only makes
            // async-signal-safe system calls (prctl, getppid); it allocates
            // nothing.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    // The parent may have died before prctl took effect.
                    if libc::getppid() != parent {
                        return Err(io::Error::from_raw_os_error(libc::ESRCH));
                    }
                    Ok(())
                });
            }
        }
        let program = cmd.get_program().to_owned();
        let child = spawn_from_spawner_thread(cmd)
            .with_context(|| format!("cannot start {name} ({})", Path::new(&program).display()))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log_path,
            status: None,
        })
    }

    /// The name given at spawn (`etcd`, `node-2`, `router`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's process id (stays valid for signals until it is reaped).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where its stdout and stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines of its log (of at most the last 256 KiB).
    pub fn log_tail(&self, lines: usize) -> String {
        tail_file(&self.log_path, lines)
    }

    /// The exit status if the child has exited (reaping it), else `None`.
    /// A paused (SIGSTOPped) child counts as running.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.status = Some(status);
            }
        }
        self.status
    }

    /// Whether the child has not exited yet.
    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// Send `sig` if the child is still ours to signal; `Ok(false)` if it has
    /// already exited.
    fn send(&mut self, sig: libc::c_int) -> io::Result<bool> {
        if self.exit_status().is_some() {
            return Ok(false);
        }
        // Not reaped yet, so the pid (alive or zombie) is still this child.
        if unsafe { libc::kill(self.pid() as libc::pid_t, sig) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(true)
    }

    fn send_to_running(&mut self, sig: libc::c_int) -> io::Result<()> {
        if self.send(sig)? {
            Ok(())
        } else {
            Err(io::Error::other(format!("{} is not running", self.name)))
        }
    }

    /// kill -9 and reap. A no-op returning the old status if it has exited.
    pub fn sigkill(&mut self) -> io::Result<ExitStatus> {
        self.send(libc::SIGKILL)?;
        self.wait()
    }

    fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = self.child.wait()?;
        self.status = Some(status);
        Ok(status)
    }

    /// SIGTERM, wait up to [`TERM_GRACE`] for it to exit, then SIGKILL; the
    /// child is reaped either way. Works on a paused child too.
    pub fn terminate(&mut self) -> io::Result<ExitStatus> {
        self.begin_terminate();
        self.finish_terminate(Instant::now() + TERM_GRACE)
    }

    fn begin_terminate(&mut self) {
        if let Ok(true) = self.send(libc::SIGTERM) {
            // A stopped process only acts on SIGTERM once continued.
            let _ = self.send(libc::SIGCONT);
        }
    }

    fn finish_terminate(&mut self, deadline: Instant) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.exit_status() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return self.sigkill();
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP: the process freezes (its sockets stay open; peers see
    /// timeouts, not connection resets).
    pub fn pause(&mut self) -> io::Result<()> {
        self.send_to_running(libc::SIGSTOP)
    }

    /// SIGCONT after [`Proc::pause`].
    pub fn resume(&mut self) -> io::Result<()> {
        self.send_to_running(libc::SIGCONT)
    }

    /// `running (pid N)` or how it ended, e.g. `exited (signal: 9 (SIGKILL))`.
    pub fn state(&mut self) -> String {
        match self.exit_status() {
            None => format!("running (pid {})", self.pid()),
            Some(status) => format!("exited ({status})"),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.sigkill();
    }
}

impl fmt::Debug for Proc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proc")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .field("status", &self.status)
            .finish()
    }
}

/// Terminate several processes at once: SIGTERM to all, then one shared
/// [`TERM_GRACE`] for all of them, then SIGKILL to whoever is left.
pub fn terminate_all<'a>(procs: impl IntoIterator<Item = &'a mut Proc>) {
    let mut procs: Vec<&mut Proc> = procs.into_iter().collect();
    for proc in procs.iter_mut() {
        proc.begin_terminate();
    }
    let deadline = Instant::now() + TERM_GRACE;
    for proc in procs {
        if let Err(e) = proc.finish_terminate(deadline) {
            tracing::warn!("cannot reap {}: {e}", proc.name);
        }
    }
}

fn tail_file(path: &Path, lines: usize) -> String {
    const WINDOW: u64 = 256 * 1024;
    let read = || -> io::Result<Vec<u8>> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        if len > WINDOW {
            file.seek(SeekFrom::Start(len - WINDOW))?;
        }
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        Ok(buf)
    };
    match read() {
        Ok(buf) => {
            let text = String::from_utf8_lossy(&buf);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

// ---------------------------------------------------------------------------
// etcd
// ---------------------------------------------------------------------------

const ETCD_MISSING: &str = "etcd was not found on PATH: install the Debian package `etcd-server` \
     (scripts/setup does it), or point SHOAL_ETCD at an etcd 3.4+ binary";

/// Where the etcd binary is: `$SHOAL_ETCD` if set, else `etcd` on `$PATH`.
pub fn etcd_binary() -> Result<PathBuf> {
    find_etcd(std::env::var_os("SHOAL_ETCD"), std::env::var_os("PATH"))
}

fn find_etcd(override_path: Option<OsString>, path: Option<OsString>) -> Result<PathBuf> {
    if let Some(bin) = override_path {
        let bin = PathBuf::from(bin);
        if bin.is_file() {
            return Ok(bin);
        }
        bail!("SHOAL_ETCD={} is not a file", bin.display());
    }
    path.iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("etcd"))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| anyhow!(ETCD_MISSING))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A single-member etcd server on loopback, a child of this process.
/// Its directory holds `etcd.log` and the data in `data/`. Restarted on the
/// same directory it keeps its data (with the same ports its stored peer URL
/// also stays right).
#[derive(Debug)]
pub struct Etcd {
    proc: Proc,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    client_url: String,
}

impl Etcd {
    /// Start etcd in `dir` listening for clients on 127.0.0.1:`client_port`
    /// and for peers on 127.0.0.1:`peer_port`, and wait until `GET /health`
    /// answers `"health":"true"`.
    pub fn start(dir: &Path, client_port: u16, peer_port: u16) -> Result<Etcd> {
        let bin = etcd_binary()?;
        let dir = std::path::absolute(dir)?;
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut cmd = Command::new(&bin);
        cmd.arg("--name")
            .arg("shoal-dev")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("shoal-dev={peer_url}"))
            // zap: 3.4's default logger prints a deprecation warning.
            .arg("--logger")
            .arg("zap")
            // Keep a long-running dev cluster's history bounded.
            .arg("--auto-compaction-mode")
            .arg("periodic")
            .arg("--auto-compaction-retention")
            .arg("1h");
        // etcd reads ETCD_* variables as flags; a stray one in the user's
        // environment must not change this server.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD") {
                cmd.env_remove(key);
            }
        }
        let proc = Proc::spawn("etcd", cmd, &dir)?;
        let mut etcd = Etcd {
            proc,
            dir,
            client_port,
            peer_port,
            client_url,
        };
        etcd.wait_healthy(ETCD_START_TIMEOUT)?;
        Ok(etcd)
    }

    fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_healthy() {
                return Ok(());
            }
            if let Some(status) = self.proc.exit_status() {
                bail!(
                    "etcd exited during start-up ({status}); last lines of {}:\n{}",
                    self.proc.log_path().display(),
                    self.proc.log_tail(LOG_TAIL_LINES)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "etcd at {} was not healthy within {timeout:?}; last lines of {}:\n{}",
                    self.client_url,
                    self.proc.log_path().display(),
                    self.proc.log_tail(LOG_TAIL_LINES)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether `GET /health` on the client URL answers `"health":"true"`.
    pub fn is_healthy(&self) -> bool {
        let probe = || -> io::Result<String> {
            let addr = SocketAddr::from(([127, 0, 0, 1], self.client_port));
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
            let mut response = String::new();
            stream.take(64 * 1024).read_to_string(&mut response)?;
            Ok(response)
        };
        probe().is_ok_and(|r| r.contains(r#""health":"true""#))
    }

    /// Stop it (SIGTERM, then SIGKILL after [`TERM_GRACE`]) and start it again
    /// on the same directory and ports.
    pub fn restart(&mut self) -> Result<()> {
        self.proc.terminate()?;
        *self = Etcd::start(&self.dir, self.client_port, self.peer_port)?;
        Ok(())
    }

    /// `http://127.0.0.1:<client port>`, what `--etcd` takes.
    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    /// The client port on 127.0.0.1.
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// The peer port on 127.0.0.1.
    pub fn peer_port(&self) -> u16 {
        self.peer_port
    }

    /// Its directory (log file and `data/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The etcd process.
    pub fn proc(&self) -> &Proc {
        &self.proc
    }

    /// For tests: kill, pause or terminate the etcd process itself.
    pub fn proc_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

// ---------------------------------------------------------------------------
// LocalCluster
// ---------------------------------------------------------------------------

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
fn exit_report(proc: &mut Proc, wanted: &mut bool) -> Option<ExitReport> {
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
struct SavedPorts {
    etcd_client: Option<u16>,
    etcd_peer: Option<u16>,
    #[serde(default)]
    nodes: BTreeMap<u64, u16>,
}

impl SavedPorts {
    fn path(base: &Path) -> PathBuf {
        base.join("ports.json")
    }

    fn load(base: &Path) -> SavedPorts {
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
fn pick_port(saved: Option<u16>, taken: &mut BTreeSet<u16>) -> u16 {
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
#[derive(Debug)]
struct DirLock {
    _file: File,
}

impl DirLock {
    fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                bail!(
                    "{} is in use by another shoal cluster (pid {}): stop that one first, or use another data dir",
                    dir.display(),
                    holder.trim()
                );
            }
            return Err(err).with_context(|| format!("cannot lock {}", path.display()));
        }
        file.set_len(0)?;
        writeln!(file, "{}", std::process::id())?;
        Ok(DirLock { _file: file })
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
    default_shards: u32,
    default_replicas: u32,
    links: Option<Links>,
    _lock: DirLock,
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

        let etcd = Etcd::start(
            &base_dir.join("etcd"),
            saved.etcd_client.unwrap_or_default(),
            saved.etcd_peer.unwrap_or_default(),
        )?;
        let mut cluster = LocalCluster {
            routers: Vec::new(),
            nodes: Vec::new(),
            etcd,
            etcd_wanted: true,
            bin,
            base_dir,
            node_args: opts.node_args,
            router_args: opts.router_args,
            default_shards: opts.default_shards,
            default_replicas: opts.default_replicas,
            links,
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
            .args(&self.node_args);
        if let Some(links) = &self.links {
            cmd.args(links.dial_args(&node_endpoint(id))?);
        }
        Proc::spawn(&node_endpoint(id), cmd, &dir)
    }

    fn spawn_router(&self, name: &str, port: u16, extra_args: &[&str]) -> Result<Proc> {
        let mut cmd = self.command("router");
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--etcd")
            .arg(self.etcd.client_url())
            .arg("--default-shards")
            .arg(self.default_shards.to_string())
            .arg("--default-replicas")
            .arg(self.default_replicas.to_string())
            .args(&self.router_args)
            .args(extra_args);
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
        match resp_request(&router, &["PING"], probe) {
            Ok(reply) if reply == "+PONG" => {}
            _ => return Ok(Readiness::Router),
        }
        match resp_request(&router, &["SET", READY_KEY, "1"], probe) {
            Ok(reply) if reply == "+OK" => {
                let _ = resp_request(&router, &["DEL", READY_KEY], probe);
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
        let router = self.routers.last_mut().expect("just pushed");
        wait_member(router, PROC_START_TIMEOUT, |addr| {
            resp_request(addr, &["PING"], Duration::from_secs(2)).is_ok_and(|r| r == "+PONG")
        })?;
        Ok(router.addr())
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
pub(crate) mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(script);
        cmd
    }

    /// The state letter of a live or zombie process from /proc, or None if it
    /// is gone.
    fn proc_state(pid: u32) -> Option<char> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) S ...": the state follows the last ')'.
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    }

    fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn dead(pid: u32) -> bool {
        matches!(proc_state(pid), None | Some('Z'))
    }

    #[test]
    fn sigkill_reaps_and_reports_the_signal() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Proc::spawn("sleeper", sh("exec sleep 30"), dir.path()).unwrap();
        assert!(p.is_running());
        let status = p.sigkill().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(!p.is_running());
        assert!(proc_state(p.pid()).is_none(), "reaped, so no zombie");
        // Idempotent.
        assert_eq!(p.sigkill().unwrap(), status);
        assert!(p.pause().is_err());
    }

    #[test]
    fn terminate_is_graceful_when_possible() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Proc::spawn("sleeper", sh("exec sleep 30"), dir.path()).unwrap();
        let started = Instant::now();
        let status = p.terminate().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(15)
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn terminate_falls_back_to_sigkill() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Proc::spawn("stubborn", sh("trap '' TERM; exec sleep 30"), dir.path()).unwrap();
        // Let the shell install the trap before it execs sleep.
        thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        let status = p.terminate().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(started.elapsed() >= TERM_GRACE);
    }

    #[test]
    fn terminate_works_on_a_paused_process() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Proc::spawn("sleeper", sh("exec sleep 30"), dir.path()).unwrap();
        p.pause().unwrap();
        wait_for("stopped", Duration::from_secs(5), || {
            proc_state(p.pid()) == Some('T')
        });
        let started = Instant::now();
        let status = p.terminate().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(15)
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn pause_and_resume() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Proc::spawn("sleeper", sh("exec sleep 30"), dir.path()).unwrap();
        let pid = p.pid();
        p.pause().unwrap();
        wait_for("stopped", Duration::from_secs(5), || {
            proc_state(pid) == Some('T')
        });
        assert!(p.is_running(), "a paused process is still running");
        p.resume().unwrap();
        wait_for("continued", Duration::from_secs(5), || {
            proc_state(pid) == Some('S')
        });
    }

    #[test]
    fn drop_kills_and_reaps() {
        let dir = tempfile::tempdir().unwrap();
        let p = Proc::spawn("sleeper", sh("exec sleep 30"), dir.path()).unwrap();
        let pid = p.pid();
        assert!(!dead(pid));
        drop(p);
        assert!(proc_state(pid).is_none(), "killed and reaped on drop");
    }

    #[test]
    fn log_tail_has_stdout_and_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Proc::spawn(
            "talker",
            sh("for i in 1 2 3 4 5; do echo line$i; done; echo oops >&2"),
            dir.path(),
        )
        .unwrap();
        wait_for("exit", Duration::from_secs(5), || !p.is_running());
        assert_eq!(p.log_path(), dir.path().join("talker.log"));
        assert_eq!(p.log_tail(2), "line5\noops");
        let all = p.log_tail(100);
        assert!(all.starts_with("=== talker starting"), "{all}");
        assert!(p.exit_status().unwrap().success());
    }

    #[test]
    fn a_restart_appends_to_the_log() {
        let dir = tempfile::tempdir().unwrap();
        for word in ["first", "second"] {
            let mut p = Proc::spawn("twice", sh(&format!("echo {word}")), dir.path()).unwrap();
            wait_for("exit", Duration::from_secs(5), || !p.is_running());
        }
        let p = Proc::spawn("twice", sh("true"), dir.path()).unwrap();
        let log = fs::read_to_string(p.log_path()).unwrap();
        assert!(log.contains("first\n") && log.contains("second\n"), "{log}");
    }

    #[test]
    fn children_outlive_the_thread_that_started_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let mut p =
            thread::spawn(move || Proc::spawn("sleeper", sh("exec sleep 30"), &path).unwrap())
                .join()
                .unwrap();
        thread::sleep(Duration::from_millis(300));
        assert!(
            p.is_running(),
            "the parent-death signal must not follow a short-lived thread"
        );
    }

    const HELPER_ENV: &str = "DEVCLUSTER_PDEATHSIG_HELPER_DIR";

    /// Run by `children_die_with_their_parent` in a separate process: start a
    /// child, say its pid, then wait to be killed.
    #[test]
    #[ignore = "helper process for children_die_with_their_parent"]
    fn pdeathsig_helper() {
        let Some(dir) = std::env::var_os(HELPER_ENV) else {
            return;
        };
        let dir = PathBuf::from(dir);
        let p = Proc::spawn("orphan", sh("exec sleep 60"), &dir).unwrap();
        fs::write(dir.join("pid.tmp"), p.pid().to_string()).unwrap();
        fs::rename(dir.join("pid.tmp"), dir.join("pid")).unwrap();
        thread::sleep(Duration::from_secs(60));
    }

    #[test]
    fn children_die_with_their_parent() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "devcluster::tests::pdeathsig_helper",
            "--ignored",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, dir.path());
        let mut parent = Proc::spawn("parent", cmd, dir.path()).unwrap();
        let pid_file = dir.path().join("pid");
        wait_for("the helper's child", Duration::from_secs(20), || {
            pid_file.exists()
        });
        let child: u32 = fs::read_to_string(&pid_file).unwrap().parse().unwrap();
        assert!(!dead(child));
        parent.sigkill().unwrap();
        wait_for("the orphan to die", Duration::from_secs(5), || dead(child));
    }

    #[test]
    fn free_ports_are_distinct_and_free() {
        let ports: BTreeSet<u16> = (0..20).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 20);
        assert!(ports.iter().all(|&p| port_is_free(p)));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(!port_is_free(listener.local_addr().unwrap().port()));
    }

    #[test]
    fn wait_tcp_sees_a_listener_and_times_out_without_one() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        wait_tcp(&addr, Duration::from_secs(1)).unwrap();
        drop(listener);
        let started = Instant::now();
        assert!(wait_tcp(&addr, Duration::from_millis(300)).is_err());
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn missing_etcd_names_the_package() {
        let empty = tempfile::tempdir().unwrap();
        let err = find_etcd(None, Some(empty.path().into()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("etcd-server") && err.contains("scripts/setup"),
            "{err}"
        );
        let found = find_etcd(
            None,
            Some(format!("{}:/usr/bin", empty.path().display()).into()),
        );
        assert_eq!(found.unwrap(), Path::new("/usr/bin/etcd"));
    }

    fn etcdctl(etcd: &Etcd, args: &[&str]) -> String {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(etcd.client_url())
            .args(args)
            .output()
            .expect("etcdctl (Debian package etcd-client) must be installed");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn etcd_starts_healthy_and_keeps_data_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let etcd_dir = dir.path().join("etcd");
        let mut etcd = Etcd::start(&etcd_dir, free_port(), free_port()).unwrap();
        assert!(etcd.is_healthy());
        assert_eq!(etcd.proc().log_path(), etcd_dir.join("etcd.log"));
        etcdctl(&etcd, &["put", "/shoal/test/k", "v1"]);

        // Graceful restart on the same directory and ports.
        etcd.restart().unwrap();
        assert!(etcd.is_healthy());
        assert_eq!(
            etcdctl(&etcd, &["get", "/shoal/test/k"]),
            "/shoal/test/k\nv1\n"
        );

        // kill -9, then a fresh start on the same directory: an acknowledged
        // write survives.
        etcdctl(&etcd, &["put", "/shoal/test/k", "v2"]);
        let (client, peer) = (etcd.client_port(), etcd.peer_port());
        etcd.proc_mut().sigkill().unwrap();
        assert!(!etcd.is_healthy());
        drop(etcd);
        let etcd = Etcd::start(&etcd_dir, client, peer).unwrap();
        assert_eq!(
            etcdctl(&etcd, &["get", "/shoal/test/k"]),
            "/shoal/test/k\nv2\n"
        );
    }

    #[test]
    fn etcd_start_fails_fast_when_its_port_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let started = Instant::now();
        let err = Etcd::start(dir.path(), port, free_port())
            .unwrap_err()
            .to_string();
        assert!(err.contains("etcd exited during start-up"), "{err}");
        assert!(started.elapsed() < ETCD_START_TIMEOUT);
    }

    /// A stand-in for the `shoal` binary: `node` and `router` both run a
    /// redis-server on their --listen port, which accepts TCP, answers PING
    /// and SET like a ready shoal process.
    pub(crate) fn fake_shoal(dir: &Path) -> PathBuf {
        let path = dir.join("fake-shoal");
        fs::write(
            &path,
            r#"#!/bin/bash
set -eu
role=$1; shift
listen=""; data="."
while [ $# -gt 0 ]; do
  case "$1" in
    --listen) listen=$2; shift 2 ;;
    --data-dir) data=$2; shift 2 ;;
    *) shift ;;
  esac
done
mkdir -p "$data"
echo "fake $role on $listen"
exec redis-server --bind 127.0.0.1 --port "${listen##*:}" --save '' --appendonly no --dir "$data"
"#,
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn local_cluster_with_a_fake_binary() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("cluster");
        let opts = ClusterOpts::new(fake_shoal(tmp.path()), &base);
        let mut cluster = LocalCluster::start(opts.clone()).unwrap();
        assert_eq!(cluster.readiness().unwrap(), Readiness::Ready);
        assert!(cluster.base_dir().join("node-2/node-2.log").exists());
        assert!(cluster.base_dir().join("node-2/data").is_dir());
        assert!(cluster.base_dir().join("router/router.log").exists());
        assert!(cluster.base_dir().join("etcd/etcd.log").exists());
        let log = fs::read_to_string(cluster.node_dir(1).join("node-1.log")).unwrap();
        assert!(log.contains("\"--id\" \"1\""), "{log}");
        assert!(
            log.contains(&format!("\"--etcd\" \"{}\"", cluster.etcd_url())),
            "{log}"
        );

        // A second cluster on the same directory is refused.
        let err = LocalCluster::start(opts.clone()).err().unwrap().to_string();
        assert!(err.contains("in use by another shoal cluster"), "{err}");

        // kill -9 and restart on the same port.
        let addr2 = cluster.node_addr(2);
        cluster.kill_node(2).unwrap();
        assert!(cluster.node_pid(2).is_none());
        assert!(cluster.unexpected_exits().is_empty(), "killed on purpose");
        assert_eq!(cluster.readiness().unwrap(), Readiness::Ready);
        cluster.start_node(2).unwrap();
        assert_eq!(cluster.node_addr(2), addr2);
        assert!(cluster.start_node(2).is_err(), "already running");

        cluster.pause_node(3).unwrap();
        let pid3 = cluster.node_pid(3).unwrap();
        wait_for("node-3 stopped", Duration::from_secs(5), || {
            proc_state(pid3) == Some('T')
        });
        cluster.resume_node(3).unwrap();
        cluster.stop_node(3).unwrap();
        cluster.start_node(3).unwrap();

        // A death nobody asked for is reported once.
        let pid1 = cluster.node_pid(1).unwrap();
        unsafe { libc::kill(pid1 as i32, libc::SIGKILL) };
        wait_for("node-1 reported", Duration::from_secs(5), || {
            let exits = cluster.unexpected_exits();
            exits
                .iter()
                .any(|e| e.name == "node-1" && e.log_tail.contains("fake node"))
        });
        assert!(cluster.unexpected_exits().is_empty());
        cluster.start_node(1).unwrap();

        let second = cluster.add_router().unwrap();
        assert_eq!(
            resp_request(&second, &["PING"], Duration::from_secs(2)).unwrap(),
            "+PONG"
        );
        assert_eq!(cluster.router_addrs().len(), 2);
        cluster.kill_router(1).unwrap();

        let logs = cluster.logs();
        for name in ["etcd", "node-1", "node-2", "node-3", "router", "router-2"] {
            assert!(
                logs.contains(&format!("==== {name}: ")),
                "{name} missing in\n{logs}"
            );
        }

        let etcd_url = cluster.etcd_url();
        let nodes: Vec<String> = (1..=3).map(|id| cluster.node_addr(id)).collect();
        let router = cluster.router_addr();
        cluster.shutdown();
        for addr in nodes.iter().chain([&router]) {
            assert!(!tcp_accepts(addr), "{addr} still accepts after shutdown");
        }
        drop(cluster);

        // A restart on the same directory reuses etcd's and the nodes' ports.
        let saved = SavedPorts::load(&base);
        assert_eq!(saved.nodes.len(), 3);
        let cluster = LocalCluster::start(opts).unwrap();
        assert_eq!(cluster.etcd_url(), etcd_url);
        let again: Vec<String> = (1..=3).map(|id| cluster.node_addr(id)).collect();
        assert_eq!(again, nodes);
    }

    #[test]
    fn a_taken_router_port_is_refused_before_anything_starts() {
        let tmp = tempfile::tempdir().unwrap();
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let mut opts = ClusterOpts::new(fake_shoal(tmp.path()), tmp.path().join("c"));
        opts.router_port = Some(port);
        let err = LocalCluster::start(opts).err().unwrap().to_string();
        assert_eq!(
            err,
            format!("port {port} is already in use; pass --port to pick another")
        );
        assert!(!tmp.path().join("c/etcd").exists(), "nothing was started");
    }

    #[test]
    fn too_few_nodes_for_the_replicas_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = ClusterOpts::new(fake_shoal(tmp.path()), tmp.path().join("c"));
        opts.nodes = 2;
        let err = LocalCluster::start(opts).err().unwrap().to_string();
        assert!(err.contains("3 replicas need at least 3 nodes"), "{err}");
    }
}
