//! The servers under test that are not shoal (a redis-server and a 3-member
//! etcd cluster, each a `devcluster::Proc` on loopback ports), and what
//! /proc says about any process: CPU seconds (utime + stime of
//! /proc/<pid>/stat) and resident memory (VmRSS, and the peak VmHWM, of
//! /proc/<pid>/status).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use shoal::devcluster::{free_port, resp_request, wait_tcp, Proc};

/// CPU and memory of one process at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    pub cpu_s: f64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of `pid` (or "self") in seconds.
fn cpu_secs_of(pid: &str) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'. Field 3 (state) is index 0 there; utime is field 14.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// CPU seconds this process has used so far (all threads).
pub fn self_cpu_secs() -> f64 {
    cpu_secs_of("self").unwrap_or(0.0)
}

fn status_kib(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU seconds of each thread of `pid`, by thread name (`comm`), from
/// /proc/<pid>/task/*/stat.
pub fn threads(pid: u32) -> Vec<(String, f64)> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in dir.flatten() {
        let tid = task.file_name().to_string_lossy().to_string();
        let name = fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
            .map(|n| n.trim().to_string())
            .unwrap_or_default();
        if let Some(cpu) = cpu_secs_of(&format!("{pid}/task/{tid}")) {
            out.push((name, cpu));
        }
    }
    out
}

pub fn sample(pid: u32) -> Option<ProcSample> {
    let cpu_s = cpu_secs_of(&pid.to_string())?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(ProcSample {
        cpu_s,
        rss_kib: status_kib(&status, "VmRSS:"),
        hwm_kib: status_kib(&status, "VmHWM:"),
    })
}

/// `$ETCD*` variables are read by etcd as flags: none may leak in.
fn clean_etcd_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ETCD") {
            cmd.env_remove(key);
        }
    }
}

/// redis-server without persistence.
pub struct Redis {
    pub proc: Proc,
    pub addr: String,
}

impl Redis {
    pub fn start(dir: &Path) -> Result<Redis> {
        fs::create_dir_all(dir)?;
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--dir")
            .arg(dir);
        let proc = Proc::spawn("redis-server", cmd, dir).context("cannot start redis-server")?;
        let addr = format!("127.0.0.1:{port}");
        wait_tcp(&addr, Duration::from_secs(10))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while resp_request(&addr, &["PING"], Duration::from_secs(1))
            .ok()
            .as_deref()
            != Some("+PONG")
        {
            if Instant::now() > deadline {
                bail!("redis-server at {addr} does not answer PING");
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(Redis { proc, addr })
    }
}

/// A 3-member etcd cluster on loopback (default settings: the WAL is fsynced
/// on every commit, as in production).
pub struct EtcdCluster {
    pub members: Vec<Proc>,
    pub endpoints: Vec<String>,
}

impl EtcdCluster {
    pub fn start(dir: &Path, size: usize) -> Result<EtcdCluster> {
        let bin = shoal::devcluster::etcd_binary()?;
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("e{}=http://127.0.0.1:{peer}", i + 1))
            .collect();
        let mut members = Vec::new();
        let mut endpoints = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("e{}", i + 1);
            let mdir = dir.join(&name);
            fs::create_dir_all(&mdir)?;
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let mut cmd = Command::new(&bin);
            cmd.arg("--name")
                .arg(&name)
                .arg("--data-dir")
                .arg(mdir.join("data"))
                .arg("--listen-client-urls")
                .arg(&client_url)
                .arg("--advertise-client-urls")
                .arg(&client_url)
                .arg("--listen-peer-urls")
                .arg(&peer_url)
                .arg("--initial-advertise-peer-urls")
                .arg(&peer_url)
                .arg("--initial-cluster")
                .arg(initial.join(","))
                .arg("--initial-cluster-state")
                .arg("new")
                .arg("--initial-cluster-token")
                .arg("shoal-bench")
                .arg("--logger")
                .arg("zap")
                .arg("--log-level")
                .arg("warn");
            clean_etcd_env(&mut cmd);
            members.push(Proc::spawn(&format!("etcd-{name}"), cmd, &mdir)?);
            endpoints.push(client_url);
        }
        let cluster = EtcdCluster { members, endpoints };
        cluster.wait_healthy(Duration::from_secs(30))?;
        Ok(cluster)
    }

    fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for ep in &self.endpoints {
            let port: u16 = ep.rsplit(':').next().unwrap_or_default().parse()?;
            loop {
                if etcd_healthy(port) {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("etcd member {ep} was not healthy within {timeout:?}");
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }
}

/// Whether `GET /health` on 127.0.0.1:`port` answers `"health":"true"`.
fn etcd_healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let probe = || -> std::io::Result<String> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut response = String::new();
        s.take(64 * 1024).read_to_string(&mut response)?;
        Ok(response)
    };
    probe().is_ok_and(|r| r.contains(r#""health":"true""#))
}
