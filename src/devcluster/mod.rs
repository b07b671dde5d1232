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
//! With [`ClusterOpts::tls`], every link is TLS: etcd requires client
//! certificates, nodes and routers use mutual TLS, and the router serves
//! RESP on TLS only ([`DevCerts`]).
//!
//! With [`ClusterOpts::links`], every node and router dials the nodes
//! through fault-injecting proxies ([`links`]), so tests can cut the network
//! between any two of them.
//!
//! Everything here is blocking (std::process, std::net); call it from
//! `spawn_blocking` in async code. It never talks to anything but 127.0.0.1.

//!
//! Files: `ports.rs` (free ports, TCP and RESP probes), `process.rs`
//! ([`Proc`] and the spawner thread), `etcd.rs` ([`Etcd`]), `cluster.rs`
//! ([`LocalCluster`]), [`links`] (cuttable proxies).

mod cluster;
mod etcd;
pub mod links;
mod ports;
mod process;
mod tls;

pub use cluster::*;
pub use etcd::*;
pub use ports::*;
pub use process::*;
pub use tls::*;

use std::time::Duration;

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

#[cfg(test)]
pub(crate) mod tests {
    use super::cluster::SavedPorts;
    use super::etcd::find_etcd;
    use super::*;
    use std::collections::BTreeSet;
    use std::fs;
    use std::net::TcpListener;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::thread;
    use std::time::Instant;

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
