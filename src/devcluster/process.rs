//! [`Proc`]: one supervised child process with its log file, forked from
//! the process-wide spawner thread (see the module doc of `devcluster`).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::*;
use anyhow::{Context, Result};

// Proc

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Fork `cmd` from the process-wide spawner thread (see the module doc: the
/// parent-death signal follows the forking thread).
pub(super) fn spawn_from_spawner_thread(cmd: Command) -> io::Result<Child> {
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

pub(super) fn unix_time() -> u64 {
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

pub(super) fn tail_file(path: &Path, lines: usize) -> String {
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
