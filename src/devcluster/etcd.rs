//! [`Etcd`]: a single-member etcd on loopback ports for `shoal dev` and the
//! tests, started and waited on until `/health` says so.

use std::ffi::OsString;
use std::fs::{self};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::*;
use anyhow::{anyhow, bail, Result};

// etcd

const ETCD_MISSING: &str = "etcd was not found on PATH: install the Debian package `etcd-server` \
     (scripts/setup does it), or point SHOAL_ETCD at an etcd 3.4+ binary";

/// Where the etcd binary is: `$SHOAL_ETCD` if set, else `etcd` on `$PATH`.
pub fn etcd_binary() -> Result<PathBuf> {
    find_etcd(std::env::var_os("SHOAL_ETCD"), std::env::var_os("PATH"))
}

pub(super) fn find_etcd(
    override_path: Option<OsString>,
    path: Option<OsString>,
) -> Result<PathBuf> {
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

pub(super) fn is_executable(path: &Path) -> bool {
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
    pub(super) proc: Proc,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    client_url: String,
    /// With TLS: clients need a certificate of the cluster CA.
    tls: Option<DevCerts>,
}

impl Etcd {
    /// Start etcd in `dir` listening for clients on 127.0.0.1:`client_port`
    /// and for peers on 127.0.0.1:`peer_port`, and wait until `GET /health`
    /// answers `"health":"true"`.
    pub fn start(dir: &Path, client_port: u16, peer_port: u16) -> Result<Etcd> {
        Etcd::start_with(dir, client_port, peer_port, None)
    }

    /// [`Etcd::start`], with `tls`: clients on `https://`, with a
    /// certificate of the cluster CA (`--client-cert-auth`); etcd's own
    /// certificate is the nodes'.
    pub fn start_with(
        dir: &Path,
        client_port: u16,
        peer_port: u16,
        tls: Option<DevCerts>,
    ) -> Result<Etcd> {
        let bin = etcd_binary()?;
        let dir = std::path::absolute(dir)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{client_port}");
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
        if let Some(certs) = &tls {
            cmd.arg("--cert-file")
                .arg(certs.node_cert())
                .arg("--key-file")
                .arg(certs.node_key())
                .arg("--trusted-ca-file")
                .arg(certs.ca())
                .arg("--client-cert-auth");
        }
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
            tls,
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
        if let Some(certs) = &self.tls {
            let Ok(config) = certs.client_config(&certs.node_cert(), &certs.node_key()) else {
                return false;
            };
            let addr = format!("127.0.0.1:{}", self.client_port);
            return https_get(&addr, "/health", Duration::from_secs(2), &config)
                .is_ok_and(|r| r.contains(r#""health":"true""#));
        }
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
        *self = Etcd::start_with(
            &self.dir,
            self.client_port,
            self.peer_port,
            self.tls.clone(),
        )?;
        Ok(())
    }

    /// `http://127.0.0.1:<client port>` (`https://` with TLS), what
    /// `--etcd` takes.
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
