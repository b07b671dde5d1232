//! `shoal certs`: a cluster CA and the certificates signed by it, so a
//! secure cluster needs no openssl recipe (as `cockroach cert` does).
//!
//! This module owns the certificate profiles and their files:
//!
//! * `create-ca`: `ca.crt` and the CA key (`ca.key`, or `--ca-key`), a
//!   self-signed ECDSA P-256 CA;
//! * `create-node HOST...`: `node.crt`/`node.key`, server and client
//!   authentication (nodes accept peers and dial peers), the hosts as DNS or
//!   IP SANs;
//! * `create-router HOST...`: `router.crt`/`router.key`, the same profile:
//!   the router dials nodes with it and may serve RESP TLS with it;
//! * `create-client USER`: `client.USER.crt`/`.key`, client authentication
//!   only, common name `USER`.
//!
//! Keys are written with mode 0600, certificates 0644; an existing file is
//! kept unless `--overwrite`. Signing reads the CA back from `ca.crt` and its
//! key, so a CA made once signs any later certificate.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// What a certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    /// A node: server and client authentication, SANs from the hosts.
    Node,
    /// A router: the same as a node.
    Router,
    /// A RESP client (or an operator tool): client authentication, the
    /// user as common name.
    Client(String),
}

impl Profile {
    /// The file name without extension: `node`, `router`, `client.USER`.
    pub fn stem(&self) -> String {
        match self {
            Profile::Node => "node".into(),
            Profile::Router => "router".into(),
            Profile::Client(user) => format!("client.{user}"),
        }
    }
}

/// Where the CA lives: `<certs_dir>/ca.crt` and `ca_key` (default
/// `<certs_dir>/ca.key`).
#[derive(Debug, Clone)]
pub struct CaFiles {
    pub certs_dir: PathBuf,
    pub ca_key: Option<PathBuf>,
}

impl CaFiles {
    pub fn cert(&self) -> PathBuf {
        self.certs_dir.join("ca.crt")
    }
    pub fn key(&self) -> PathBuf {
        self.ca_key
            .clone()
            .unwrap_or_else(|| self.certs_dir.join("ca.key"))
    }
}

fn validity(days: u32) -> anyhow::Result<(OffsetDateTime, OffsetDateTime)> {
    anyhow::ensure!(days > 0, "--lifetime-days must be at least 1");
    let now = OffsetDateTime::now_utc();
    // An hour back: clocks of the cluster's machines differ a little.
    Ok((
        now - Duration::hours(1),
        now + Duration::days(i64::from(days)),
    ))
}

fn random_serial() -> rcgen::SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    rcgen::SerialNumber::from_slice(&bytes)
}

/// Create the CA: `ca.crt` and its key. Returns the files written.
pub fn create_ca(ca: &CaFiles, days: u32, overwrite: bool) -> anyhow::Result<Vec<PathBuf>> {
    let key = KeyPair::generate().context("cannot generate a key")?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "shoal");
    // A name of its own: certificates of another CA then fail as "unknown
    // issuer", not as a bad signature.
    let id: u32 = rand::random();
    dn.push(DnType::CommonName, format!("shoal CA {id:08x}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    (params.not_before, params.not_after) = validity(days)?;
    let cert = params.self_signed(&key).context("cannot sign the CA")?;
    std::fs::create_dir_all(&ca.certs_dir)
        .with_context(|| format!("cannot create {}", ca.certs_dir.display()))?;
    if let Some(dir) = ca.key().parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // The key first: a CA certificate without its key is useless.
    write_file(&ca.key(), key.serialize_pem().as_bytes(), 0o600, overwrite)?;
    write_file(&ca.cert(), cert.pem().as_bytes(), 0o644, overwrite)?;
    Ok(vec![ca.cert(), ca.key()])
}

/// Create a certificate of `profile` for `hosts` (DNS names or IP
/// addresses), signed by the CA, into `<certs_dir>/<stem>.crt` and `.key`.
pub fn create(
    ca: &CaFiles,
    profile: &Profile,
    hosts: &[String],
    days: u32,
    overwrite: bool,
) -> anyhow::Result<Vec<PathBuf>> {
    let ca_pem = std::fs::read_to_string(ca.cert()).with_context(|| {
        format!(
            "cannot read the CA certificate {} (create it with `shoal certs create-ca`)",
            ca.cert().display()
        )
    })?;
    let ca_key_pem = std::fs::read_to_string(ca.key()).with_context(|| {
        format!(
            "cannot read the CA key {} (give it with --ca-key)",
            ca.key().display()
        )
    })?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)
        .map_err(|e| anyhow::anyhow!("bad CA key {}: {e}", ca.key().display()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
        .map_err(|e| anyhow::anyhow!("bad CA certificate {}: {e}", ca.cert().display()))?;

    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "shoal");
    let mut params = match profile {
        Profile::Node | Profile::Router => {
            anyhow::ensure!(
                !hosts.is_empty(),
                "name at least one host (DNS name or IP address) that peers and clients dial"
            );
            let mut params = CertificateParams::new(hosts.to_vec())
                .map_err(|e| anyhow::anyhow!("bad host in {hosts:?}: {e}"))?;
            dn.push(
                DnType::CommonName,
                if *profile == Profile::Node {
                    "node"
                } else {
                    "router"
                },
            );
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            params
        }
        Profile::Client(user) => {
            anyhow::ensure!(
                !user.is_empty()
                    && user
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                "a client name is letters, digits, '-', '_' or '.', not {user:?}"
            );
            dn.push(DnType::CommonName, user.as_str());
            let mut params = CertificateParams::default();
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            params
        }
    };
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    (params.not_before, params.not_after) = validity(days)?;
    let key = KeyPair::generate().context("cannot generate a key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("cannot sign the certificate")?;
    let stem = profile.stem();
    let crt = ca.certs_dir.join(format!("{stem}.crt"));
    let key_file = ca.certs_dir.join(format!("{stem}.key"));
    std::fs::create_dir_all(&ca.certs_dir)
        .with_context(|| format!("cannot create {}", ca.certs_dir.display()))?;
    write_file(&key_file, key.serialize_pem().as_bytes(), 0o600, overwrite)?;
    write_file(&crt, cert.pem().as_bytes(), 0o644, overwrite)?;
    Ok(vec![crt, key_file])
}

/// Write `data` to `path` with `mode`; an existing file is an error unless
/// `overwrite`.
fn write_file(path: &Path, data: &[u8], mode: u32, overwrite: bool) -> anyhow::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if overwrite {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!("{} exists; keep it or pass --overwrite", path.display())
        } else {
            anyhow::anyhow!("cannot write {}: {e}", path.display())
        }
    })?;
    // An overwritten file keeps its old mode: set it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot chmod {}", path.display()))?;
    }
    f.write_all(data)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_rustls::rustls;

    fn ca(dir: &Path) -> CaFiles {
        CaFiles {
            certs_dir: dir.to_path_buf(),
            ca_key: None,
        }
    }

    #[test]
    fn keys_are_private_and_files_are_not_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ca = ca(dir.path());
        create_ca(&ca, 10, false).unwrap();
        let files = create(&ca, &Profile::Node, &["127.0.0.1".into()], 10, false).unwrap();
        for (f, mode) in [
            (ca.key(), 0o600),
            (files[1].clone(), 0o600),
            (ca.cert(), 0o644),
        ] {
            let m = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, mode, "{}", f.display());
        }
        let e = create_ca(&ca, 10, false).unwrap_err().to_string();
        assert!(e.contains("exists"), "{e}");
        let e = create(&ca, &Profile::Node, &["x".into()], 10, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("node.key exists"), "{e}");
        create(&ca, &Profile::Node, &["x".into()], 10, true).unwrap();
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca(dir.path());
        let e = create(&ca, &Profile::Node, &["h".into()], 10, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("create-ca"), "{e}");
        create_ca(&ca, 10, false).unwrap();
        let e = create(&ca, &Profile::Router, &[], 10, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least one host"), "{e}");
        let e = create(&ca, &Profile::Client("a b".into()), &[], 10, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("client name"), "{e}");
        let e = create_ca(&ca, 0, true).unwrap_err().to_string();
        assert!(e.contains("lifetime"), "{e}");
    }

    /// The certificates verify against the CA for their DNS and IP names,
    /// and not for others, nor against another CA.
    #[test]
    fn node_certificates_verify_for_their_names_only() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{ServerName, UnixTime};
        crate::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let (ca, other_ca) = (super::tests::ca(dir.path()), super::tests::ca(other.path()));
        create_ca(&ca, 10, false).unwrap();
        create_ca(&other_ca, 10, false).unwrap();
        create(
            &ca,
            &Profile::Node,
            &["localhost".into(), "10.1.2.3".into(), "::1".into()],
            10,
            false,
        )
        .unwrap();
        let leaf = crate::tls::read_certs(&dir.path().join("node.crt")).unwrap();
        let verifier = |ca_dir: &Path| {
            let mut roots = rustls::RootCertStore::empty();
            for c in crate::tls::read_certs(&ca_dir.join("ca.crt")).unwrap() {
                roots.add(c).unwrap();
            }
            rustls::client::WebPkiServerVerifier::builder(roots.into())
                .build()
                .unwrap()
        };
        let check = |ca_dir: &Path, name: &str| {
            verifier(ca_dir)
                .verify_server_cert(
                    &leaf[0],
                    &[],
                    &ServerName::try_from(name.to_string()).unwrap(),
                    &[],
                    UnixTime::now(),
                )
                .map(|_| ())
        };
        for name in ["localhost", "10.1.2.3", "::1"] {
            check(dir.path(), name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(check(dir.path(), "10.1.2.4").is_err());
        assert!(check(dir.path(), "example.com").is_err());
        assert!(check(other.path(), "localhost").is_err());
    }
}
