//! Cluster metadata in etcd: layout, table descriptors, membership and
//! liveness, watches, the cluster identity. What nodes *do* with it (the
//! reconciler, transaction recovery) lives next to the node, in `node/`.
//!
//! etcd is the one source of truth for which tables exist and where their
//! shards live. Single-shard requests never read it: routers and nodes mirror
//! what they need through watches ([`etcd::Meta::follow`]).

pub mod descriptor;
pub mod etcd;
pub mod identity;
pub mod leaders;
pub mod placement;

/// How a process reaches etcd beyond its endpoints: TLS (`https://`
/// endpoints, `--etcd-cacert`, a client certificate with `--etcd-cert` and
/// `--etcd-key`) and an etcd user (`--etcd-user`, `--etcd-password-file`).
#[derive(Debug, Clone, Default)]
pub struct EtcdSecurity {
    pub cacert: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
    pub user: Option<String>,
    pub password_file: Option<std::path::PathBuf>,
}

macro_rules! etcd_security_of {
    ($c:expr) => {
        EtcdSecurity {
            cacert: $c.etcd_cacert.clone(),
            cert: $c.etcd_cert.clone(),
            key: $c.etcd_key.clone(),
            user: $c.etcd_user.clone(),
            password_file: $c.etcd_password_file.clone(),
        }
    };
}

impl EtcdSecurity {
    /// A router's, as configured.
    pub fn of_router(c: &crate::config::RouterConfig) -> EtcdSecurity {
        etcd_security_of!(c)
    }

    /// A node's, as configured.
    pub fn of_node(c: &crate::config::NodeConfig) -> EtcdSecurity {
        etcd_security_of!(c)
    }

    /// The etcd-client options for `endpoints`, files read; an error (one
    /// sentence) when the flags do not go together.
    pub fn options(&self, endpoints: &[String]) -> anyhow::Result<etcd_client::ConnectOptions> {
        let mut opts = etcd_client::ConnectOptions::new();
        let https = endpoints
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        anyhow::ensure!(
            https == 0 || https == endpoints.len(),
            "etcd endpoints are either all https:// or all http://, not a mix: {}",
            endpoints.join(",")
        );
        let tls_files = self.cacert.is_some() || self.cert.is_some() || self.key.is_some();
        if https == 0 && tls_files {
            anyhow::bail!(
                "--etcd-cacert, --etcd-cert and --etcd-key need https:// etcd endpoints (not {})",
                endpoints.join(",")
            );
        }
        if https > 0 {
            let Some(ca) = &self.cacert else {
                anyhow::bail!(
                    "https:// etcd endpoints need --etcd-cacert (the CA that signed etcd's certificate)"
                );
            };
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
            };
            // Parsed here so a bad file is named now, not as a handshake
            // failure later.
            crate::tls::read_certs(ca)?;
            let mut tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
            match (&self.cert, &self.key) {
                (None, None) => {}
                (Some(cert), Some(key)) => {
                    crate::tls::read_certs(cert)?;
                    crate::tls::read_key(key)?;
                    tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
                }
                _ => anyhow::bail!("give --etcd-cert and --etcd-key together"),
            }
            crate::tls::install_crypto_provider();
            opts = opts.with_tls(tls);
        }
        match (&self.user, &self.password_file) {
            (None, None) => {}
            (Some(user), Some(file)) => {
                let password = crate::config::read_secret_file(file)?;
                opts = opts.with_user(user.clone(), password);
            }
            (Some(_), None) => anyhow::bail!("--etcd-user needs --etcd-password-file"),
            (None, Some(_)) => anyhow::bail!("--etcd-password-file needs --etcd-user"),
        }
        Ok(opts)
    }
}

/// Errors of the metadata layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MetaError {
    #[error("etcd: {0}")]
    Etcd(String),
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
}

impl From<etcd_client::Error> for MetaError {
    fn from(e: etcd_client::Error) -> Self {
        MetaError::Etcd(etcd_reason(&e))
    }
}

/// What went wrong talking to etcd, in a few words (not tonic's debug
/// dump of the status): the kind of failure and its innermost cause (where
/// a TLS failure says what it is).
pub fn etcd_reason(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let what = match s.code() {
                tonic::Code::Unavailable => "unreachable",
                tonic::Code::DeadlineExceeded => "did not answer in time",
                tonic::Code::Unauthenticated => "refused the credentials",
                tonic::Code::PermissionDenied => "denied the request",
                tonic::Code::InvalidArgument => "refused the request",
                _ => "answered an error",
            };
            let cause = innermost(s);
            let message = match cause {
                Some(c) if !s.message().contains(&c) => format!("{}: {c}", s.message()),
                _ => s.message().to_string(),
            };
            if message.is_empty() {
                what.to_string()
            } else {
                format!("{what} ({message})")
            }
        }
        etcd_client::Error::TransportError(t) => match innermost(t) {
            Some(c) => format!("unreachable ({t}: {c})"),
            None => format!("unreachable ({t})"),
        },
        other => other.to_string(),
    }
}

/// The last error in `e`'s source chain, when it has one.
pub fn innermost(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = e.source()?;
    while let Some(next) = cur.source() {
        cur = next;
    }
    Some(cur.to_string())
}

/// The likely fix for an etcd failure whose reason is `reason`.
pub fn etcd_hint(reason: &str, security: &EtcdSecurity) -> &'static str {
    let r = reason.to_ascii_lowercase();
    if r.contains("unknownissuer") || r.contains("unknown issuer") {
        "etcd's certificate is not signed by the CA of --etcd-cacert; give the CA that signed it"
    } else if r.contains("notvalidforname") || r.contains("not valid for name") {
        "etcd's certificate does not name the host of the endpoint; dial a name or IP it holds"
    } else if r.contains("expired") {
        "a certificate has expired; issue a new one"
    } else if r.contains("certificaterequired")
        || r.contains("certificate required")
        || r.contains("bad certificate")
        || r.contains("badcertificate")
    {
        if security.cert.is_none() {
            "etcd requires a client certificate; give --etcd-cert and --etcd-key"
        } else {
            "etcd refused the client certificate; give one signed by a CA etcd trusts (its --trusted-ca-file)"
        }
    } else if r.contains("corrupt message")
        || r.contains("invalidcontenttype")
        || r.contains("wrong version number")
    {
        "the endpoint does not speak TLS; use http:// for a plaintext etcd"
    } else if r.contains("authentication failed")
        || r.contains("invalid auth")
        || r.contains("user name")
        || r.contains("refused the credentials")
    {
        "check --etcd-user and the password in --etcd-password-file"
    } else if r.contains("permission denied") || r.contains("denied the request") {
        "the etcd user lacks read/write permission on /shoal/; grant its role the prefix"
    } else if r.contains("connection reset")
        || r.contains("broken pipe")
        || r.contains("connection closed")
        || r.contains("h2 protocol error")
    {
        // TLS 1.3: a server refusing the client's certificate closes the
        // connection after the client thinks the handshake done.
        match (&security.cacert, &security.cert) {
            (None, _) => "etcd closed the connection; if it serves TLS use an https:// endpoint with --etcd-cacert",
            (Some(_), None) => "etcd closed the TLS connection: it likely requires a client certificate; give --etcd-cert and --etcd-key",
            (Some(_), Some(_)) => "etcd closed the TLS connection: it likely refused the client certificate; give one signed by a CA etcd trusts (its --trusted-ca-file)",
        }
    } else {
        "check that etcd runs there and that --etcd names its client URL"
    }
}

impl From<serde_json::Error> for MetaError {
    fn from(e: serde_json::Error) -> Self {
        MetaError::Corrupt(e.to_string())
    }
}
