//! TLS everywhere, against real processes: etcd requiring client
//! certificates, three nodes on mutual TLS and a router whose RESP port is
//! TLS only (`ClusterOpts::tls`, what `shoal dev --tls` runs).
//!
//! * clients: `redis-cli --tls`, the `redis` crate's `rediss://` and
//!   redis-py's `rediss://` write and read; after a node is killed writes
//!   still work; `shoal status` reads the cluster over TLS;
//! * the router's TLS port refuses a plaintext client and (with
//!   `--tls-auth-clients yes`) one without a certificate, and takes it with
//!   `optional` and `no`;
//! * a node's gRPC port refuses plaintext HTTP/2, a client without a
//!   certificate and one whose certificate another CA signed, each with one
//!   log line on the node saying what failed; the same call with the
//!   cluster's certificate succeeds; a router trusting another CA says in
//!   one line that the nodes' certificates are not signed by it, and one
//!   whose certificate another CA signed says, in its log and to its
//!   clients, that the nodes refused its certificate and how to fix it;
//! * etcd: a router without a client certificate, or dialling etcd over
//!   `http://`, fails with one sentence naming the endpoint and the fix.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use shoal::devcluster::{ClusterOpts, DevCerts, LocalCluster};
use shoal::proto::shard_service_client::ShardServiceClient;
use shoal::proto::StatusRequest;

fn tls_cluster(dir: &Path) -> LocalCluster {
    let mut opts = ClusterOpts::new(env!("CARGO_BIN_EXE_shoal"), dir);
    opts.nodes = 3;
    opts.default_shards = 3;
    opts.default_replicas = 3;
    opts.tls = true;
    LocalCluster::start(opts).expect("TLS cluster starts")
}

/// `redis-cli` with `args`: its output, trimmed (stderr included).
fn redis_cli(args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(args)
        .output()
        .expect("redis-cli (redis-tools) is installed");
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    text.trim().to_string()
}

/// `redis-cli --tls` against `addr` with the CA, plus `extra` (a client
/// certificate or nothing), running `cmd`.
fn redis_cli_tls(certs: &DevCerts, addr: &str, extra: &[&str], cmd: &[&str]) -> String {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let ca = certs.ca().display().to_string();
    let mut args = vec!["-h", host, "-p", port, "--tls", "--cacert", &ca];
    args.extend_from_slice(extra);
    args.extend_from_slice(cmd);
    redis_cli(&args)
}

fn client_cert_args(certs: &DevCerts) -> [String; 4] {
    [
        "--cert".into(),
        certs.client_cert().display().to_string(),
        "--key".into(),
        certs.client_key().display().to_string(),
    ]
}

fn redis_client(certs: &DevCerts, addr: &str) -> redis::Client {
    let read = |p: std::path::PathBuf| std::fs::read(p).unwrap();
    redis::Client::build_with_tls(
        format!("rediss://{addr}/"),
        redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: read(certs.client_cert()),
                client_key: read(certs.client_key()),
            }),
            root_cert: Some(read(certs.ca())),
        },
    )
    .unwrap()
}

/// Retry `f` for up to 30 s until it returns `Ok`.
fn eventually<T, E: std::fmt::Debug>(what: &str, mut f: impl FnMut() -> Result<T, E>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e:?}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// A `Status` call to the node at `addr` with this dialer configuration.
fn node_status(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<(), String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    rt.block_on(async {
        let mut endpoint = tonic::transport::Channel::from_shared(format!("{scheme}://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(5));
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
        }
        let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
        ShardServiceClient::new(channel)
            .status(StatusRequest { group_ids: vec![] })
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}"))
    })
}

/// Start a router of `cluster` named `name` that trusts the CA `ca` and
/// presents the router certificate of `ours` (etcd is reached with the
/// cluster's own), send it a SET until its log says why it cannot reach
/// the nodes; that log line and the last reply to the SET.
fn stranger_router(
    cluster: &LocalCluster,
    dir: &Path,
    name: &str,
    ca: &Path,
    ours: &DevCerts,
) -> (String, String) {
    let certs = cluster.tls().unwrap();
    let s = |p: &Path| p.display().to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.args([
        "router",
        "--listen",
        "127.0.0.1:0",
        "--etcd",
        &cluster.etcd_url(),
    ])
    .args(["--etcd-cacert", &s(&certs.ca())])
    .args(["--etcd-cert", &s(&certs.router_cert())])
    .args(["--etcd-key", &s(&certs.router_key())])
    .args(["--cluster-tls-ca-cert-file", &s(ca)])
    .args(["--cluster-tls-cert-file", &s(&ours.router_cert())])
    .args(["--cluster-tls-key-file", &s(&ours.router_key())])
    .env("NO_COLOR", "1");
    // Killed when dropped, even if an assertion below fails.
    let router = shoal::devcluster::Proc::spawn(name, cmd, &dir.join(name)).unwrap();
    let log_path = router.log_path().to_path_buf();
    let mut reply = String::new();
    let line = eventually("the router says why it cannot reach the nodes", || {
        let log = std::fs::read_to_string(&log_path).unwrap();
        // Requests make it dial the nodes.
        if let Some(at) = log.split("router up listen=").nth(1) {
            let at = at.split_whitespace().next().unwrap_or_default();
            let got =
                shoal::devcluster::resp_request(at, &["SET", "k", "v"], Duration::from_secs(10));
            reply = got.unwrap_or_else(|e| e.to_string());
        }
        match log
            .lines()
            .find(|l| l.contains("cannot open a TLS connection to node"))
        {
            Some(line) if reply.starts_with('-') => Ok(line.to_string()),
            _ => Err(log),
        }
    });
    (line, reply)
}

fn pem(p: std::path::PathBuf) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn a_tls_cluster_serves_tls_clients_and_refuses_the_rest() {
    shoal::tls::install_crypto_provider();
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster = tls_cluster(tmp.path());
    let certs = cluster.tls().unwrap().clone();
    let router = cluster.router_addr();
    let cert_args = client_cert_args(&certs);
    let cert_args: Vec<&str> = cert_args.iter().map(String::as_str).collect();

    // redis-cli --tls with a client certificate.
    assert_eq!(
        redis_cli_tls(&certs, &router, &cert_args, &["SET", "cli", "v1"]),
        "OK"
    );
    assert_eq!(
        redis_cli_tls(&certs, &router, &cert_args, &["GET", "cli"]),
        "v1"
    );
    // Without a certificate (tls-auth-clients yes): refused.
    let refused = redis_cli_tls(&certs, &router, &[], &["PING"]);
    assert!(!refused.contains("PONG"), "{refused}");
    // Plaintext to the TLS port: no reply.
    let plain = shoal::devcluster::resp_request(&router, &["PING"], Duration::from_secs(3));
    assert!(plain.as_ref().map_or(true, |r| r != "+PONG"), "{plain:?}");

    // The redis crate over rediss://.
    let client = redis_client(&certs, &router);
    let mut con = client.get_connection().unwrap();
    let _: () = redis::cmd("SET")
        .arg("crate")
        .arg("v2")
        .query(&mut con)
        .unwrap();
    let got: String = redis::cmd("GET").arg("cli").query(&mut con).unwrap();
    assert_eq!(got, "v1");
    // Big replies and long pipelines: every TLS record reaches the client
    // (the connection flushes what TLS buffers).
    let big = "x".repeat(1 << 20);
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&big)
        .query(&mut con)
        .unwrap();
    let mut pipe = redis::pipe();
    for i in 0..2000 {
        pipe.cmd("SET").arg(format!("p{i}")).arg(i).ignore();
    }
    for _ in 0..3 {
        pipe.cmd("GET").arg("big");
    }
    let bigs: Vec<String> = pipe.query(&mut con).unwrap();
    assert!(bigs.len() == 3 && bigs.iter().all(|b| *b == big));
    let last: i64 = redis::cmd("GET").arg("p1999").query(&mut con).unwrap();
    assert_eq!(last, 1999);

    // redis-py over rediss://.
    let py = format!(
        "import redis\n\
         r = redis.Redis.from_url('rediss://{router}/0', ssl_ca_certs='{}', ssl_certfile='{}', ssl_keyfile='{}')\n\
         r.set('py', 'v3')\n\
         assert r.get('crate') == b'v2', r.get('crate')\n\
         print('ok')\n",
        certs.ca().display(),
        certs.client_cert().display(),
        certs.client_key().display()
    );
    let out = Command::new("/usr/bin/python3")
        .args(["-c", &py])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "redis-py: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // shoal status over TLS to etcd and the nodes.
    let s = |p: std::path::PathBuf| p.display().to_string();
    let status = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["status", "--etcd", &cluster.etcd_url()])
        .args(["--etcd-cacert", &s(certs.ca())])
        .args(["--etcd-cert", &s(certs.router_cert())])
        .args(["--etcd-key", &s(certs.router_key())])
        .args(["--cluster-tls-ca-cert-file", &s(certs.ca())])
        .args(["--cluster-tls-cert-file", &s(certs.router_cert())])
        .args(["--cluster-tls-key-file", &s(certs.router_key())])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(text.contains("leader"), "{text}");
    assert!(!text.contains("unreachable"), "{text}");

    // The node's gRPC port.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let node = cluster.node_addr(1);
    let ours = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pem(certs.ca())))
        .identity(tonic::transport::Identity::from_pem(
            pem(certs.router_cert()),
            pem(certs.router_key()),
        ))
        .domain_name("127.0.0.1");
    node_status(&rt, &node, Some(ours)).expect("the cluster's certificate is accepted");
    let plain = node_status(&rt, &node, None);
    assert!(plain.is_err(), "plaintext HTTP/2 was served");
    let anonymous = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pem(certs.ca())))
        .domain_name("127.0.0.1");
    assert!(node_status(&rt, &node, Some(anonymous)).is_err());
    let other_dir = tmp.path().join("other-ca");
    let other = DevCerts::ensure(&other_dir).unwrap();
    let stranger = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pem(certs.ca())))
        .identity(tonic::transport::Identity::from_pem(
            pem(other.router_cert()),
            pem(other.router_key()),
        ))
        .domain_name("127.0.0.1");
    assert!(node_status(&rt, &node, Some(stranger)).is_err());
    // A client certificate (the clients' CA) is no key to a node either.
    let client_only = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pem(certs.ca())))
        .identity(tonic::transport::Identity::from_pem(
            pem(certs.client_cert()),
            pem(certs.client_key()),
        ))
        .domain_name("127.0.0.1");
    assert!(node_status(&rt, &node, Some(client_only)).is_err());

    // Framed links under TLS (ALPN shoal-link/1): the router and the nodes
    // used them (none fell back to the gRPC stream), and a link takes the
    // cluster's certificate and no other.
    let mut logs = cluster.router_log(0);
    for id in 1..=3 {
        let path = cluster.node_dir(id).join(format!("node-{id}.log"));
        logs.push_str(&std::fs::read_to_string(path).unwrap());
    }
    assert!(
        !logs.contains("does not serve framed links"),
        "a process fell back to the gRPC stream:\n{logs}"
    );
    let link = |cert: std::path::PathBuf, key: std::path::PathBuf| {
        let tls = shoal::tls::ClusterTls::load(&cert, &key, &certs.ca()).unwrap();
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let dial = shoal::shard::link::Dial {
            addr: node.clone(),
            tls: Some((tls.link_client.clone(), name)),
        };
        rt.block_on(shoal::shard::link::open(
            &dial,
            shoal::shard::stream::Service::Shard,
            1 << 20,
        ))
    };
    assert!(matches!(
        link(certs.router_cert(), certs.router_key()),
        Ok(shoal::shard::link::Opened::Link(..))
    ));
    let refused = link(other.router_cert(), other.router_key());
    assert!(
        matches!(refused, Err(shoal::shard::link::OpenError::Tls(_))),
        "{refused:?}"
    );
    let log = std::fs::read_to_string(cluster.node_dir(1).join("node-1.log")).unwrap();
    for want in [
        "does not speak TLS",
        "sent no certificate",
        "not signed by the CA this process trusts",
    ] {
        assert!(log.contains(want), "node log lacks {want:?}:\n{log}");
    }
    assert!(!log.contains("panicked"), "{log}");

    // A router that trusts another CA: it refuses the nodes' certificates
    // and says why in one line.
    let (refused, _) = stranger_router(&cluster, tmp.path(), "stranger", &other.ca(), &certs);
    assert!(
        refused.contains(
            "the node's certificate is not signed by the CA of --cluster-tls-ca-cert-file"
        ),
        "{refused}"
    );
    // A router whose own certificate another CA signed: the nodes refuse
    // it (under TLS 1.3 after the router's side of the handshake ended),
    // and the router's log line and its clients' error say so, naming the
    // node and the fix.
    let (refused, reply) = stranger_router(&cluster, tmp.path(), "foreign", &certs.ca(), &other);
    let fix = "the node refused this router's certificate (unknown CA); sign the router's certificate with the cluster CA, the node's --cluster-tls-ca-cert-file (shoal certs)";
    assert!(refused.contains(fix), "{refused}");
    assert!(
        refused.contains("cannot open a TLS connection to node 127.0.0.1:"),
        "{refused}"
    );
    assert!(reply.starts_with("-CLUSTERDOWN"), "{reply}");
    assert!(
        reply.contains("is unreachable: cannot open a TLS connection to node 127.0.0.1:"),
        "{reply}"
    );
    assert!(reply.contains(fix), "{reply}");

    // tls-auth-clients optional and no: a client without a certificate
    // gets in.
    for mode in ["optional", "no"] {
        let addr = cluster
            .add_router_with(&["--tls-auth-clients", mode])
            .unwrap();
        assert_eq!(
            redis_cli_tls(&certs, &addr, &[], &["GET", "cli"]),
            "v1",
            "{mode}"
        );
        assert_eq!(
            redis_cli_tls(&certs, &addr, &cert_args, &["GET", "cli"]),
            "v1",
            "{mode}"
        );
    }

    // A node dies: writes go on over TLS.
    cluster.kill_node(3).unwrap();
    eventually("a write after a node died", || {
        let mut con = client.get_connection()?;
        redis::cmd("SET")
            .arg("after-kill")
            .arg("v4")
            .query::<()>(&mut con)
    });
    assert_eq!(
        redis_cli_tls(&certs, &router, &cert_args, &["GET", "after-kill"]),
        "v4"
    );

    // etcd requires client certificates: without one, or over http://, one
    // sentence with the fix.
    let etcd = cluster.etcd_url();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let ca = s(certs.ca());
    let err = run(&["status", "--etcd", &etcd, "--etcd-cacert", &ca]);
    assert!(err.contains(&format!("cannot use etcd at {etcd}")), "{err}");
    assert!(err.contains("give --etcd-cert and --etcd-key"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let plain_etcd = etcd.replace("https://", "http://");
    let err = run(&["status", "--etcd", &plain_etcd]);
    assert!(
        err.contains(&format!("cannot use etcd at {plain_etcd}")),
        "{err}"
    );
    assert!(
        err.contains("if it serves TLS use an https:// endpoint"),
        "{err}"
    );
    let err = run(&["status", "--etcd", &etcd]);
    assert!(err.contains("need --etcd-cacert"), "{err}");
    cluster.shutdown();
}

/// etcd with users (`auth enable`): `--etcd-user` and
/// `--etcd-password-file` get in; a wrong password and no user get one
/// sentence with the fix.
#[test]
fn etcd_users_come_with_a_password_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (client, peer) = (
        shoal::devcluster::free_port(),
        shoal::devcluster::free_port(),
    );
    let etcd = shoal::devcluster::Etcd::start(&tmp.path().join("etcd"), client, peer).unwrap();
    let url = etcd.client_url().to_string();
    let etcdctl = |args: &[&str]| {
        let out = Command::new("etcdctl")
            .arg("--endpoints")
            .arg(&url)
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    etcdctl(&["user", "add", "root:rootpw"]);
    etcdctl(&["auth", "enable"]);
    let good = tmp.path().join("good");
    let bad = tmp.path().join("bad");
    std::fs::write(&good, "rootpw\n").unwrap();
    std::fs::write(&bad, "nope\n").unwrap();
    let status = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["status", "--etcd", &url])
            .args(extra)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text.into_owned())
    };
    let g = good.display().to_string();
    let (ok, text) = status(&["--etcd-user", "root", "--etcd-password-file", &g]);
    assert!(ok, "{text}");
    assert!(text.contains("nodes:"), "{text}");
    let b = bad.display().to_string();
    let (ok, text) = status(&["--etcd-user", "root", "--etcd-password-file", &b]);
    assert!(!ok);
    assert!(
        text.contains(&format!("cannot use etcd at {url}")),
        "{text}"
    );
    assert!(
        text.contains("check --etcd-user and the password"),
        "{text}"
    );
    let (ok, text) = status(&[]);
    assert!(!ok);
    assert!(
        text.contains(&format!("cannot use etcd at {url}")),
        "{text}"
    );
    let (ok, text) = status(&["--etcd-user", "root"]);
    assert!(!ok);
    assert!(
        text.contains("--etcd-user needs --etcd-password-file"),
        "{text}"
    );
}
