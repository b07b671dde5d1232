//! [`DevCerts`]: the certificates of a local cluster with everything
//! encrypted (`shoal dev --tls`, the TLS tests), made with `crate::certs`
//! under one directory, and the blocking TLS probes that check etcd and the
//! router's TLS port.
//!
//! Layout: `ca.crt`/`ca.key` (the cluster CA: nodes, routers, etcd),
//! `node.crt`/`.key` and `router.crt`/`.key` (for localhost, 127.0.0.1 and
//! ::1), and `clients/` with its own CA and `client.dev.crt`/`.key` for RESP
//! clients, so a client certificate is no key to the nodes' port.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio_rustls::rustls;

use crate::certs::{create, create_ca, CaFiles, Profile};

/// The certificates of a local TLS cluster.
#[derive(Debug, Clone)]
pub struct DevCerts {
    dir: PathBuf,
}

const HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

impl DevCerts {
    /// The certificates in `dir`, created when `dir/ca.crt` is missing
    /// (kept otherwise, so a restarted dev cluster keeps its CA).
    pub fn ensure(dir: &Path) -> Result<DevCerts> {
        let dir = std::path::absolute(dir)?;
        let certs = DevCerts { dir };
        if !certs.ca().is_file() {
            let hosts: Vec<String> = HOSTS.iter().map(|h| h.to_string()).collect();
            let cluster = CaFiles {
                certs_dir: certs.dir.clone(),
                ca_key: None,
            };
            create_ca(&cluster, 3650, true)?;
            create(&cluster, &Profile::Node, &hosts, 1825, true)?;
            create(&cluster, &Profile::Router, &hosts, 1825, true)?;
            let clients = CaFiles {
                certs_dir: certs.dir.join("clients"),
                ca_key: None,
            };
            create_ca(&clients, 3650, true)?;
            create(&clients, &Profile::Client("dev".into()), &[], 1825, true)?;
        }
        Ok(certs)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The cluster CA (nodes, routers, etcd).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn node_cert(&self) -> PathBuf {
        self.dir.join("node.crt")
    }
    pub fn node_key(&self) -> PathBuf {
        self.dir.join("node.key")
    }
    pub fn router_cert(&self) -> PathBuf {
        self.dir.join("router.crt")
    }
    pub fn router_key(&self) -> PathBuf {
        self.dir.join("router.key")
    }
    /// The CA of RESP client certificates.
    pub fn client_ca(&self) -> PathBuf {
        self.dir.join("clients/ca.crt")
    }
    /// A RESP client's certificate (user `dev`).
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("clients/client.dev.crt")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("clients/client.dev.key")
    }

    /// The flags of a process using `cert`/`key` for cluster TLS and etcd.
    fn cluster_args(&self, cert: &Path, key: &Path) -> Vec<String> {
        let s = |p: &Path| p.display().to_string();
        vec![
            "--cluster-tls-cert-file".into(),
            s(cert),
            "--cluster-tls-key-file".into(),
            s(key),
            "--cluster-tls-ca-cert-file".into(),
            s(&self.ca()),
            "--etcd-cacert".into(),
            s(&self.ca()),
            "--etcd-cert".into(),
            s(cert),
            "--etcd-key".into(),
            s(key),
        ]
    }

    /// A node's security flags.
    pub fn node_args(&self) -> Vec<String> {
        self.cluster_args(&self.node_cert(), &self.node_key())
    }

    /// A router's security flags, with its RESP on TLS only, at `addr`.
    pub fn router_args(&self, addr: &str) -> Vec<String> {
        let mut args = self.cluster_args(&self.router_cert(), &self.router_key());
        let s = |p: PathBuf| p.display().to_string();
        args.extend([
            "--listen".into(),
            "none".into(),
            "--tls-listen".into(),
            addr.to_string(),
            "--tls-cert-file".into(),
            s(self.router_cert()),
            "--tls-key-file".into(),
            s(self.router_key()),
            "--tls-ca-cert-file".into(),
            s(self.client_ca()),
        ]);
        args
    }

    /// The `redis-cli` flags that connect to the router's TLS port.
    pub fn redis_cli_args(&self) -> String {
        format!(
            "--tls --cacert {} --cert {} --key {}",
            self.ca().display(),
            self.client_cert().display(),
            self.client_key().display()
        )
    }

    /// A rustls client trusting the cluster CA and presenting `cert`.
    pub fn client_config(&self, cert: &Path, key: &Path) -> Result<Arc<rustls::ClientConfig>> {
        crate::tls::install_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        for c in crate::tls::read_certs(&self.ca())? {
            roots.add(c)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(crate::tls::read_certs(cert)?, crate::tls::read_key(key)?)?;
        Ok(Arc::new(config))
    }

    /// What a RESP client presents (the `dev` client certificate).
    pub fn resp_client_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        self.client_config(&self.client_cert(), &self.client_key())
    }
}

/// A TLS connection to `addr` on 127.0.0.1 (the certificate must name
/// 127.0.0.1).
fn connect(
    addr: &str,
    timeout: Duration,
    config: &Arc<rustls::ClientConfig>,
) -> io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let tcp = TcpStream::connect_timeout(&super::resolve(addr)?, timeout)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let name = rustls::pki_types::ServerName::try_from(crate::tls::host_of(addr))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let conn = rustls::ClientConnection::new(config.clone(), name)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// [`super::resp_request`] over TLS.
pub fn resp_request_tls(
    addr: &str,
    args: &[&str],
    timeout: Duration,
    config: &Arc<rustls::ClientConfig>,
) -> io::Result<String> {
    super::resp_exchange(connect(addr, timeout, config)?, args)
}

/// `GET /health` over TLS: the whole response.
pub fn https_get(
    addr: &str,
    path: &str,
    timeout: Duration,
    config: &Arc<rustls::ClientConfig>,
) -> io::Result<String> {
    let mut stream = connect(addr, timeout, config)?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())?;
    stream.flush()?;
    let mut response = String::new();
    // etcd closes without close_notify: what was read counts.
    match stream.take(64 * 1024).read_to_string(&mut response) {
        Ok(_) => Ok(response),
        Err(_) if !response.is_empty() => Ok(response),
        Err(e) => Err(e),
    }
}
