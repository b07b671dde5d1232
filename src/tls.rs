//! Transport security: loading certificates and keys, the rustls
//! configurations of every TLS listener and dialer, and the handshake on
//! accepted connections.
//!
//! This module owns:
//!
//! * [`ClusterTls`]: mutual TLS between nodes, routers and `shoal status`
//!   (`--cluster-tls-cert-file`, `--cluster-tls-key-file`,
//!   `--cluster-tls-ca-cert-file`). A node's gRPC listener takes TLS 1.3 only
//!   and only from peers whose certificate the CA signed; dialers present
//!   their certificate and check the node's against the CA and the address
//!   they dial (DNS or IP SAN).
//! * [`client_tls_config`]: the router's RESP TLS listener (`--tls-listen`,
//!   Redis's `tls-*` names), with `--tls-auth-clients yes|no|optional`.
//! * [`accept`]: the handshake of one accepted connection, bounded in time,
//!   whose failure is one log line naming the peer, what failed and the
//!   likely fix, never a panic.
//!
//! One crypto provider, *ring*, for everything: it is the one tonic's
//! `tls-ring` feature and etcd-client's `tls` feature build, so the binary
//! carries a single TLS stack ([`install_crypto_provider`]).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The ALPN protocol of a framed link (`shard::link`): a node's listener
/// offers it beside `h2`, a link's dialer asks for it alone.
pub const LINK_ALPN: &[u8] = b"shoal-link/1";

/// A handshake that takes longer than this is abandoned.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Make *ring* the process's rustls provider (tonic's dialers and
/// etcd-client use the process default when there is one). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file (a chain: leaf first), at least one.
pub fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| anyhow::anyhow!("cannot read certificate file {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("bad certificate file {}: {e}", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "the certificate file {} holds no PEM certificate",
        path.display()
    );
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1). A key readable by
/// group or others is used, with a warning.
pub fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "the key file {} is readable by other users; chmod 600 it",
                path.display()
            );
        }
    }
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| anyhow::anyhow!("cannot read a PEM private key from {}: {e}", path.display()))
}

/// Roots made of every certificate in a CA file.
fn read_roots(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| anyhow::anyhow!("bad CA certificate in {}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The three files of cluster TLS, as given (flags or config).
#[derive(Debug, Clone, Default)]
pub struct ClusterTlsFiles {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
}

impl ClusterTlsFiles {
    /// The loaded configuration; `None` when no file is given, an error when
    /// only some are, or when one does not load.
    pub fn load(&self) -> anyhow::Result<Option<ClusterTls>> {
        match (&self.cert, &self.key, &self.ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => ClusterTls::load(cert, key, ca).map(Some),
            _ => anyhow::bail!(
                "cluster TLS needs all three of --cluster-tls-cert-file, --cluster-tls-key-file and --cluster-tls-ca-cert-file"
            ),
        }
    }
}

/// Mutual TLS between the processes of a cluster: what a node's gRPC
/// listener accepts and what every dialer presents and trusts.
#[derive(Clone)]
pub struct ClusterTls {
    /// A node's gRPC listener: TLS 1.3, a client certificate of the CA
    /// required, HTTP/2 by ALPN.
    pub server: Arc<ServerConfig>,
    /// Dialers: this certificate, and the CA for the node's.
    pub client: tonic::transport::ClientTlsConfig,
    /// Dialers of framed links (`shard::link`): the same, TLS 1.3, ALPN
    /// `shoal-link/1`.
    pub link_client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterTls")
    }
}

impl ClusterTls {
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> anyhow::Result<ClusterTls> {
        install_crypto_provider();
        let chain = read_certs(cert)?;
        let private = read_key(key)?;
        let misfit = || {
            format!(
                "the key {} does not fit the certificate {}",
                key.display(),
                cert.display()
            )
        };
        let roots = Arc::new(read_roots(ca)?);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .with_context(|| format!("cannot use the CA in {}", ca.display()))?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("TLS 1.3 unavailable")?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, private)
            .with_context(misfit)?;
        server.alpn_protocols = vec![b"h2".to_vec(), LINK_ALPN.to_vec()];
        let mut link_client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("TLS 1.3 unavailable")?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .with_context(misfit)?;
        link_client.alpn_protocols = vec![LINK_ALPN.to_vec()];
        let read =
            |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        let client = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?))
            .identity(tonic::transport::Identity::from_pem(
                read(cert)?,
                read(key)?,
            ));
        Ok(ClusterTls {
            server: Arc::new(server),
            client,
            link_client: Arc::new(link_client),
        })
    }

    /// The dialer's configuration for a node advertised at `addr`
    /// (`host:port`): the node's certificate must name `host`.
    pub fn client_for(&self, addr: &str) -> tonic::transport::ClientTlsConfig {
        self.client.clone().domain_name(host_of(addr))
    }
}

/// The host part of `host:port` (`[v6]:port` too), without brackets.
pub fn host_of(addr: &str) -> String {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// Redis's `tls-auth-clients`: whether RESP clients must present a
/// certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthClients {
    /// A certificate signed by `--tls-ca-cert-file` is required (Redis's
    /// default).
    Yes,
    /// No certificate is asked for.
    No,
    /// One is asked for and checked when sent, but not required.
    Optional,
}

impl std::str::FromStr for AuthClients {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<AuthClients> {
        match s.to_ascii_lowercase().as_str() {
            "yes" => Ok(AuthClients::Yes),
            "no" => Ok(AuthClients::No),
            "optional" => Ok(AuthClients::Optional),
            _ => anyhow::bail!("--tls-auth-clients wants yes, no or optional, not {s:?}"),
        }
    }
}

/// The router's RESP TLS listener: its certificate and key, the CA of
/// client certificates (needed unless `auth` is [`AuthClients::No`]). TLS
/// 1.2 and 1.3, as Redis's default `tls-protocols`.
pub fn client_tls_config(
    cert: &Path,
    key: &Path,
    ca: Option<&Path>,
    auth: AuthClients,
) -> anyhow::Result<Arc<ServerConfig>> {
    install_crypto_provider();
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("no TLS version available")?;
    let builder = match (auth, ca) {
        (AuthClients::No, _) => builder.with_no_client_auth(),
        (_, None) => anyhow::bail!(
            "--tls-auth-clients yes or optional needs --tls-ca-cert-file (the CA of client certificates)"
        ),
        (auth, Some(ca)) => {
            let roots = Arc::new(read_roots(ca)?);
            let mut verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
            if auth == AuthClients::Optional {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .with_context(|| format!("cannot use the CA in {}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(read_certs(cert)?, read_key(key)?)
        .with_context(|| {
            format!(
                "the key {} does not fit the certificate {}",
                key.display(),
                cert.display()
            )
        })?;
    Ok(Arc::new(config))
}

/// Run the server side of the handshake on `socket` (from `peer`, accepted
/// on `listener`, a name for logs), within [`HANDSHAKE_TIMEOUT`]. A failure
/// is logged once, as one sentence, and returns `None`.
pub async fn accept(
    acceptor: &TlsAcceptor,
    socket: TcpStream,
    peer: &str,
    listener: &str,
) -> Option<TlsStream<TcpStream>> {
    let reason = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => return Some(stream),
        // Connected and closed without a word: a port probe or a health
        // check, not a TLS failure.
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            tracing::debug!("{peer} closed before a TLS handshake on {listener}");
            return None;
        }
        Ok(Err(e)) => handshake_reason(&e),
        Err(_) => format!("no handshake within {} s", HANDSHAKE_TIMEOUT.as_secs()),
    };
    let host = host_of(peer);
    if let Some(suppressed) = should_log(&host, &reason, std::time::Instant::now()) {
        let more = if suppressed > 0 {
            format!(" ({suppressed} more from {host} since the last line)")
        } else {
            String::new()
        };
        tracing::warn!("TLS handshake from {peer} on {listener} failed: {reason}{more}");
    }
    None
}

/// At most one log line per peer host and reason in this interval: a
/// misconfigured peer redials in a loop.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Whether to log this failure now: `Some(failures not logged since the
/// last line)`, or `None` to stay quiet.
fn should_log(host: &str, reason: &str, now: std::time::Instant) -> Option<u64> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    type Seen = HashMap<(String, String), (std::time::Instant, u64)>;
    static SEEN: Mutex<Option<Seen>> = Mutex::new(None);
    let mut guard = SEEN.lock().ok()?;
    let seen = guard.get_or_insert_with(HashMap::new);
    if seen.len() > 10_000 {
        seen.clear();
    }
    let entry = seen
        .entry((host.to_string(), reason.to_string()))
        .or_insert((now - LOG_EVERY, 0));
    if now.duration_since(entry.0) >= LOG_EVERY {
        let suppressed = entry.1;
        *entry = (now, 0);
        Some(suppressed)
    } else {
        entry.1 += 1;
        None
    }
}

/// What a failed server-side handshake means, and the likely fix.
pub fn handshake_reason(e: &io::Error) -> String {
    use rustls::{CertificateError, Error};
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<Error>()) else {
        return format!("the connection broke ({e})");
    };
    match tls {
        Error::NoCertificatesPresented => {
            "the peer sent no certificate; give it a certificate signed by this CA".into()
        }
        Error::InvalidCertificate(CertificateError::UnknownIssuer)
        | Error::InvalidCertificate(CertificateError::BadSignature) => {
            "the peer's certificate is not signed by the CA this process trusts; issue it with that CA (shoal certs)".into()
        }
        Error::InvalidCertificate(CertificateError::Expired)
        | Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
            "the peer's certificate has expired; issue a new one (shoal certs)".into()
        }
        Error::InvalidCertificate(other) => {
            format!("the peer's certificate is refused ({other:?}); issue a new one (shoal certs)")
        }
        Error::InvalidMessage(_) => {
            "the peer does not speak TLS (a plaintext client on a TLS port?)".into()
        }
        Error::PeerIncompatible(why) => {
            format!("the peer's TLS is incompatible ({why:?}); TLS 1.3 is required between cluster processes")
        }
        Error::NoApplicationProtocol => {
            "the peer does not offer HTTP/2 (ALPN h2); is it a shoal process?".into()
        }
        Error::AlertReceived(alert) => format!(
            "the peer refused the handshake ({alert:?}); does it trust the CA that signed this process's certificate?"
        ),
        other => format!("{other}"),
    }
}

/// What a failed dial means when TLS is the cause, and the likely fix: the
/// rustls error found in `e`'s source chain, read from the dialer's side
/// (`dialer` names it in the sentence: "router", "node"). `None` when the
/// failure is not TLS's (a refused connection, a timeout).
pub fn dial_failure(e: &(dyn std::error::Error + 'static), dialer: &str) -> Option<String> {
    use rustls::{CertificateError as C, Error};
    let mut cur = Some(e);
    let mut tls = None;
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<Error>() {
            tls = Some(t.clone());
            break;
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if let Some(t) = io.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
                tls = Some(t.clone());
                break;
            }
            // Under TLS 1.3 a node refuses the dialer's certificate after
            // the dialer's side of the handshake ended: the alert arrives
            // with the first read, as text.
            if let Some(alert) = io
                .to_string()
                .strip_prefix("received fatal alert: ")
                .and_then(alert_named)
            {
                tls = Some(Error::AlertReceived(alert));
                break;
            }
        }
        cur = err.source();
    }
    Some(match tls? {
        Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            "the node's certificate is not signed by the CA of --cluster-tls-ca-cert-file".into()
        }
        Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "the node's certificate does not name the host it is dialled at; reissue it with that host (shoal certs create-node HOST)".into()
        }
        Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "the node's certificate has expired; issue a new one (shoal certs)".into()
        }
        Error::InvalidCertificate(other) => format!("the node's certificate is refused ({other:?})"),
        Error::AlertReceived(alert) => refused_by_node(alert, dialer),
        Error::InvalidMessage(_) => {
            "the node does not speak TLS (does it run without --cluster-tls-*?)".into()
        }
        other => other.to_string(),
    })
}

/// The alert a rustls error text names ("UnknownCA"), among those a node
/// sends when it refuses a certificate or a handshake.
fn alert_named(name: &str) -> Option<rustls::AlertDescription> {
    use rustls::AlertDescription as A;
    [
        A::UnknownCA,
        A::BadCertificate,
        A::CertificateExpired,
        A::CertificateRequired,
        A::CertificateRevoked,
        A::CertificateUnknown,
        A::UnsupportedCertificate,
        A::DecryptError,
        A::AccessDenied,
        A::HandshakeFailure,
        A::ProtocolVersion,
        A::NoApplicationProtocol,
    ]
    .into_iter()
    .find(|a| format!("{a:?}") == name.trim())
}

/// The dialer's sentence for a node that ended the handshake with `alert`.
fn refused_by_node(alert: rustls::AlertDescription, dialer: &str) -> String {
    use rustls::AlertDescription as A;
    let refused = |why: &str, fix: &str| {
        format!("the node refused this {dialer}'s certificate ({why}); {fix}")
    };
    let sign = format!("sign the {dialer}'s certificate with the cluster CA, the node's --cluster-tls-ca-cert-file (shoal certs)");
    match alert {
        A::UnknownCA => refused("unknown CA", &sign),
        A::BadCertificate | A::CertificateUnknown | A::DecryptError => {
            refused("bad certificate", &sign)
        }
        A::UnsupportedCertificate => refused("unsupported certificate", &sign),
        A::CertificateExpired => refused(
            "expired",
            &format!("issue the {dialer} a new certificate with the cluster CA (shoal certs)"),
        ),
        A::CertificateRevoked => refused(
            "revoked",
            &format!("issue the {dialer} a new certificate with the cluster CA (shoal certs)"),
        ),
        A::CertificateRequired => format!(
            "the node requires a client certificate; give this {dialer} --cluster-tls-cert-file and --cluster-tls-key-file"
        ),
        other => format!("the node ended the handshake ({other:?})"),
    }
}

/// Whether `e` is a TLS failure (rustls's error, or a peer's alert).
pub fn is_tls_error(e: &io::Error) -> bool {
    dial_failure(e, "dialer").is_some()
}

/// Log a failed TLS dial to `addr` by this `dialer` ("router", "node") as
/// one warning, at most once per address and reason every few seconds, and
/// return that sentence; anything else stays at debug and is `None`.
pub fn log_dial_failure(
    addr: &str,
    e: &(dyn std::error::Error + 'static),
    dialer: &str,
) -> Option<String> {
    let Some(reason) = dial_failure(e, dialer) else {
        tracing::debug!(node = %addr, "stream not opened: {e}");
        return None;
    };
    let sentence = format!("cannot open a TLS connection to node {addr}: {reason}");
    if let Some(suppressed) = should_log(addr, &reason, std::time::Instant::now()) {
        let more = if suppressed > 0 {
            format!(" ({suppressed} more since the last line)")
        } else {
            String::new()
        };
        tracing::warn!("{sentence}{more}");
    }
    Some(sentence)
}

/// What [`incoming`] does with a connection after its handshake: keep it
/// (`None`: a framed link, served elsewhere) or give it back to be served
/// as HTTP/2.
pub type Divert =
    Arc<dyn Fn(TlsStream<TcpStream>, String) -> Option<TlsStream<TcpStream>> + Send + Sync>;

/// The accepted connections of `listener`, each after its TLS handshake
/// (run concurrently, so a slow peer holds up no other), as the stream tonic
/// serves. `name` is what logs call the listener.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    name: String,
    divert: Divert,
) -> impl futures::Stream<Item = io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<TlsStream<TcpStream>>(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (socket, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, most likely: say so now and then,
                    // and let a moment pass.
                    if should_log(&name, &e.to_string(), std::time::Instant::now()).is_some() {
                        tracing::warn!("accept on {name} failed: {e}; retrying (out of file descriptors? raise the open-file limit)");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = socket.set_nodelay(true);
            if tx.is_closed() {
                return;
            }
            let (tx, acceptor, name) = (tx.clone(), acceptor.clone(), name.clone());
            let divert = divert.clone();
            tokio::spawn(async move {
                if let Some(stream) = accept(&acceptor, socket, &peer.to_string(), &name).await {
                    if let Some(stream) = divert(stream, peer.to_string()) {
                        let _ = tx.send(stream).await;
                    }
                }
            });
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        let conn = rx.recv().await?;
        Some((Ok(conn), rx))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_failures_are_logged_once_per_interval_per_peer_and_reason() {
        let t0 = std::time::Instant::now();
        let host = format!("test-{}", rand::random::<u64>());
        assert_eq!(should_log(&host, "r", t0), Some(0));
        assert_eq!(should_log(&host, "r", t0 + Duration::from_secs(1)), None);
        assert_eq!(should_log(&host, "r", t0 + Duration::from_secs(2)), None);
        assert_eq!(should_log(&host, "other", t0), Some(0));
        assert_eq!(should_log(&host, "r", t0 + LOG_EVERY), Some(2));
    }

    #[test]
    fn a_nodes_refusal_after_the_handshake_is_one_sentence() {
        // As tonic hands it over: a hyper I/O error holding rustls's text.
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            "received fatal alert: UnknownCA",
        );
        assert_eq!(
            dial_failure(&e, "router").as_deref(),
            Some("the node refused this router's certificate (unknown CA); sign the router's certificate with the cluster CA, the node's --cluster-tls-ca-cert-file (shoal certs)")
        );
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            "received fatal alert: CertificateExpired",
        );
        let got = dial_failure(&e, "node").unwrap();
        assert!(got.contains("this node's certificate (expired)"), "{got}");
        // Not TLS's: no sentence.
        let e = io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused");
        assert_eq!(dial_failure(&e, "router"), None);
    }

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("10.0.0.1:7001"), "10.0.0.1");
        assert_eq!(host_of("[::1]:7001"), "::1");
        assert_eq!(host_of("node-1.example:7001"), "node-1.example");
    }

    #[test]
    fn cluster_tls_needs_all_three_files() {
        let files = ClusterTlsFiles {
            cert: Some("a".into()),
            ..Default::default()
        };
        let e = files.load().unwrap_err().to_string();
        assert!(e.contains("needs all three"), "{e}");
        assert!(ClusterTlsFiles::default().load().unwrap().is_none());
        let e = "maybe".parse::<AuthClients>().unwrap_err().to_string();
        assert!(e.contains("yes, no or optional"), "{e}");
    }
}
