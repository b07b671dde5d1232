//! The `shoal` binary: `dev`, `node`, `router`, `status` and `certs`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use shoal::config::{self, NodeConfig, RouterConfig};

/// Every `shoal` process (router, node, `dev`; not the etcd `dev` starts)
/// allocates through mimalloc: on a warm cluster it took 10-15 % off the
/// server CPU of a replicated SET against glibc's malloc, whose free-list
/// consolidation grows with the fragmentation of long-running heaps
/// (docs/PERFORMANCE.md, "Fast path, step: mimalloc"). Built without
/// transparent huge pages (`no_thp`), which cost idle nodes about 2.3 MiB
/// of RSS per group. RocksDB's own C++ allocations stay on glibc. The
/// library (and its tests) keep the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "A distributed key-value store that speaks the Redis protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a whole local cluster: etcd, nodes and a router.
    Dev {
        /// TOML file with `port`, `nodes`, `data_dir`, `shards` (flags win).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Router port on 127.0.0.1 (default 6379).
        #[arg(long)]
        port: Option<u16>,
        /// Number of nodes (default 3).
        #[arg(long)]
        nodes: Option<usize>,
        /// Where etcd, the nodes and the logs keep their data (default ./.shoal-dev).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Shards of the `default` table when it is created (default 8; a
        /// table that exists keeps its own).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(shoal::slot::MAX_SHARDS)))]
        shards: Option<u32>,
        /// Everything over TLS: etcd, node links and the router's port
        /// (certificates made in <data-dir>/certs).
        #[arg(long)]
        tls: bool,
        /// The Raft engine of tables made without ENGINE, `default` among
        /// them: `batch` (default) or `openraft` (the router's
        /// `--default-engine`).
        #[arg(long)]
        engine: Option<String>,
    },
    /// Run a node hosting shard replicas (or `node drain <id>`).
    Node {
        #[command(subcommand)]
        action: Option<NodeAction>,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        id: Option<u64>,
        #[arg(long)]
        listen: Option<String>,
        /// Serve Prometheus metrics (GET /metrics) on this address.
        #[arg(long)]
        metrics_listen: Option<String>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// etcd endpoints, comma separated.
        #[arg(long)]
        etcd: Option<String>,
        #[arg(long)]
        cluster: Option<String>,
        /// Threads of the async runtime (default: one per core).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
        worker_threads: Option<u64>,
        /// CPU scheduling policy of this process's threads (default: batch).
        #[arg(long, value_enum)]
        cpu_policy: Option<shoal::sched::CpuPolicy>,
        /// always | never (never: benchmarks only).
        #[arg(long)]
        fsync: Option<String>,
        /// Log entries between snapshots.
        #[arg(long)]
        snapshot_threshold: Option<u64>,
        /// Largest value a key may hold (bytes), enforced by this node.
        #[arg(long)]
        max_value_len: Option<u64>,
        /// Largest reply this node builds for one request (bytes).
        #[arg(long)]
        max_reply_len: Option<usize>,
        /// Dial node address FROM through TO (repeatable): `--dial-via FROM=TO`.
        #[arg(long, value_name = "FROM=TO")]
        dial_via: Vec<String>,
        #[arg(long)]
        log_level: Option<String>,
        /// Test only: arm this failpoint (see src/failpoint.rs).
        #[arg(long, hide = true)]
        failpoint: Option<String>,
        #[command(flatten)]
        tls: ClusterTlsFlags,
        #[command(flatten)]
        etcd_flags: EtcdFlags,
    },
    /// Run a RESP router.
    Router {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        listen: Option<String>,
        /// Serve Prometheus metrics (GET /metrics) on this address.
        #[arg(long)]
        metrics_listen: Option<String>,
        /// Threads of the async runtime (default: one per core).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
        worker_threads: Option<u64>,
        /// CPU scheduling policy of this process's threads (default: batch).
        #[arg(long, value_enum)]
        cpu_policy: Option<shoal::sched::CpuPolicy>,
        #[arg(long)]
        etcd: Option<String>,
        #[arg(long)]
        cluster: Option<String>,
        /// The clients' password. Visible in `ps`: prefer --requirepass-file.
        #[arg(long)]
        requirepass: Option<String>,
        /// A file whose first line is the clients' password.
        #[arg(long)]
        requirepass_file: Option<PathBuf>,
        #[arg(long)]
        default_shards: Option<usize>,
        #[arg(long)]
        default_replicas: Option<usize>,
        /// The Raft engine of new tables: openraft or batch.
        #[arg(long)]
        default_engine: Option<String>,
        /// A node down this long (ms) has its replicas re-created elsewhere.
        #[arg(long)]
        repair_after_ms: Option<u64>,
        /// Replica moves touching one node at once.
        #[arg(long)]
        max_moves_per_node: Option<usize>,
        /// How often (ms) shard leaders are balanced across nodes (0: never).
        #[arg(long)]
        leader_balance_interval_ms: Option<u64>,
        /// Close clients idle this many seconds (0: never).
        #[arg(long)]
        timeout: Option<u64>,
        /// TCP keepalive on client sockets after this many idle seconds (0: off).
        #[arg(long)]
        tcp_keepalive: Option<u64>,
        /// Dial node address FROM through TO (repeatable): `--dial-via FROM=TO`.
        #[arg(long, value_name = "FROM=TO")]
        dial_via: Vec<String>,
        #[arg(long)]
        log_level: Option<String>,
        /// Test only: abort at this failpoint (see src/failpoint.rs).
        #[arg(long, hide = true)]
        failpoint: Option<String>,
        /// A RESP TLS listener, beside --listen or instead of it (--listen none).
        #[arg(long)]
        tls_listen: Option<String>,
        /// The TLS listener's certificate (PEM).
        #[arg(long)]
        tls_cert_file: Option<PathBuf>,
        /// Its private key (PEM).
        #[arg(long)]
        tls_key_file: Option<PathBuf>,
        /// The CA of client certificates.
        #[arg(long)]
        tls_ca_cert_file: Option<PathBuf>,
        /// yes (default): clients need a certificate; no; optional.
        #[arg(long)]
        tls_auth_clients: Option<String>,
        #[command(flatten)]
        tls: ClusterTlsFlags,
        #[command(flatten)]
        etcd_flags: EtcdFlags,
    },
    /// Print nodes, tables, shards, leaders and replica lag.
    Status {
        #[arg(long, default_value = "http://127.0.0.1:2379")]
        etcd: String,
        #[arg(long, default_value = "default")]
        cluster: String,
        #[command(flatten)]
        tls: ClusterTlsFlags,
        #[command(flatten)]
        etcd_flags: EtcdFlags,
    },
    /// Create a cluster CA and certificates (docs/SECURITY.md).
    Certs {
        #[command(subcommand)]
        action: CertsAction,
    },
}

/// Mutual TLS between nodes, routers and tools (docs/SECURITY.md).
#[derive(clap::Args, Default)]
struct ClusterTlsFlags {
    /// This process's certificate (PEM), signed by the cluster CA.
    #[arg(long)]
    cluster_tls_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long)]
    cluster_tls_key_file: Option<PathBuf>,
    /// The cluster CA: peers must present a certificate it signed.
    #[arg(long)]
    cluster_tls_ca_cert_file: Option<PathBuf>,
}

/// How to reach etcd securely (docs/SECURITY.md).
#[derive(clap::Args, Default)]
struct EtcdFlags {
    /// The CA of etcd's certificate (https:// endpoints).
    #[arg(long)]
    etcd_cacert: Option<PathBuf>,
    /// A client certificate for etcd (with --etcd-key).
    #[arg(long)]
    etcd_cert: Option<PathBuf>,
    #[arg(long)]
    etcd_key: Option<PathBuf>,
    /// An etcd user (with --etcd-password-file).
    #[arg(long)]
    etcd_user: Option<String>,
    /// A file whose first line is the etcd user's password.
    #[arg(long)]
    etcd_password_file: Option<PathBuf>,
}

/// Put the flags given over the config's values.
macro_rules! apply_security_flags {
    ($c:expr, $tls:expr, $etcd:expr) => {{
        let (tls, etcd) = ($tls, $etcd);
        if tls.cluster_tls_cert_file.is_some() {
            $c.cluster_tls_cert_file = tls.cluster_tls_cert_file;
        }
        if tls.cluster_tls_key_file.is_some() {
            $c.cluster_tls_key_file = tls.cluster_tls_key_file;
        }
        if tls.cluster_tls_ca_cert_file.is_some() {
            $c.cluster_tls_ca_cert_file = tls.cluster_tls_ca_cert_file;
        }
        if etcd.etcd_cacert.is_some() {
            $c.etcd_cacert = etcd.etcd_cacert;
        }
        if etcd.etcd_cert.is_some() {
            $c.etcd_cert = etcd.etcd_cert;
        }
        if etcd.etcd_key.is_some() {
            $c.etcd_key = etcd.etcd_key;
        }
        if etcd.etcd_user.is_some() {
            $c.etcd_user = etcd.etcd_user;
        }
        if etcd.etcd_password_file.is_some() {
            $c.etcd_password_file = etcd.etcd_password_file;
        }
    }};
}

#[derive(Subcommand)]
enum CertsAction {
    /// Create the cluster CA: <certs-dir>/ca.crt and its key.
    #[command(name = "create-ca")]
    Ca {
        #[command(flatten)]
        ca: CaArgs,
        /// Days the CA is valid.
        #[arg(long, default_value_t = 3650)]
        lifetime_days: u32,
    },
    /// Create node.crt/node.key for the hosts (DNS names or IPs) peers dial.
    #[command(name = "create-node")]
    Node {
        #[arg(required = true)]
        hosts: Vec<String>,
        #[command(flatten)]
        ca: CaArgs,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 1825)]
        lifetime_days: u32,
    },
    /// Create router.crt/router.key for the hosts clients dial.
    #[command(name = "create-router")]
    Router {
        #[arg(required = true)]
        hosts: Vec<String>,
        #[command(flatten)]
        ca: CaArgs,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 1825)]
        lifetime_days: u32,
    },
    /// Create client.<user>.crt/.key, a client certificate.
    #[command(name = "create-client")]
    Client {
        user: String,
        #[command(flatten)]
        ca: CaArgs,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 1825)]
        lifetime_days: u32,
    },
}

#[derive(clap::Args)]
struct CaArgs {
    /// Where certificates go and where ca.crt is.
    #[arg(long)]
    certs_dir: PathBuf,
    /// The CA's key (default <certs-dir>/ca.key; keep it elsewhere).
    #[arg(long)]
    ca_key: Option<PathBuf>,
    /// Replace existing files.
    #[arg(long)]
    overwrite: bool,
}

impl CaArgs {
    fn files(&self) -> shoal::certs::CaFiles {
        shoal::certs::CaFiles {
            certs_dir: self.certs_dir.clone(),
            ca_key: self.ca_key.clone(),
        }
    }
}

fn certs(action: CertsAction) -> anyhow::Result<()> {
    use shoal::certs::{create, create_ca, Profile};
    let written = match action {
        CertsAction::Ca { ca, lifetime_days } => {
            create_ca(&ca.files(), lifetime_days, ca.overwrite)?
        }
        CertsAction::Node {
            hosts,
            ca,
            lifetime_days,
        } => create(
            &ca.files(),
            &Profile::Node,
            &hosts,
            lifetime_days,
            ca.overwrite,
        )?,
        CertsAction::Router {
            hosts,
            ca,
            lifetime_days,
        } => create(
            &ca.files(),
            &Profile::Router,
            &hosts,
            lifetime_days,
            ca.overwrite,
        )?,
        CertsAction::Client {
            user,
            ca,
            lifetime_days,
        } => create(
            &ca.files(),
            &Profile::Client(user),
            &[],
            lifetime_days,
            ca.overwrite,
        )?,
    };
    for f in written {
        println!("wrote {}", f.display());
    }
    Ok(())
}

#[derive(Subcommand)]
enum NodeAction {
    /// Move every replica off node <id>, then mark it removed (it can then be
    /// stopped). Refuses when the other live nodes cannot hold the replicas.
    Drain {
        id: u64,
        #[arg(long, default_value = "http://127.0.0.1:2379")]
        etcd: String,
        #[arg(long, default_value = "default")]
        cluster: String,
        /// Return once the drain has started instead of waiting for its end.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        etcd_flags: EtcdFlags,
    },
}

fn etcd_security(f: EtcdFlags) -> shoal::meta::EtcdSecurity {
    shoal::meta::EtcdSecurity {
        cacert: f.etcd_cacert,
        cert: f.etcd_cert,
        key: f.etcd_key,
        user: f.etcd_user,
        password_file: f.etcd_password_file,
    }
}

fn main() {
    let cli = Cli::parse();
    let runtime = process_settings(&cli).and_then(|(threads, policy)| {
        // Before the runtime starts its threads: they inherit the policy.
        if let Some(policy) = policy {
            shoal::sched::set_for_process(policy);
        }
        Ok(tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?)
    });
    let result = match runtime {
        Ok(runtime) => runtime.block_on(async {
            shoal::tls::install_crypto_provider();
            run(cli).await
        }),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        eprintln!("shoal: {e:#}");
        std::process::exit(1);
    }
}

/// The runtime's threads and the CPU policy for this command: a node's or
/// router's flags (`--worker-threads`, `--cpu-policy`), else its config
/// file's, else one thread per core and `batch`. Other commands keep the
/// default policy (`None`).
fn process_settings(cli: &Cli) -> anyhow::Result<(usize, Option<shoal::sched::CpuPolicy>)> {
    let (threads, policy) = match &cli.command {
        Command::Node {
            action: None,
            config,
            worker_threads,
            cpu_policy,
            ..
        } => {
            let file = config::load::<NodeConfig>(config.as_deref())?;
            (
                worker_threads.map(|n| n as usize).or(file.worker_threads),
                Some(cpu_policy.unwrap_or(file.cpu_policy)),
            )
        }
        Command::Router {
            config,
            worker_threads,
            cpu_policy,
            ..
        } => {
            let file = config::load::<RouterConfig>(config.as_deref())?;
            (
                worker_threads.map(|n| n as usize).or(file.worker_threads),
                Some(cpu_policy.unwrap_or(file.cpu_policy)),
            )
        }
        _ => (None, None),
    };
    Ok((config::worker_threads(threads)?, policy))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev {
            config,
            port,
            nodes,
            data_dir,
            shards,
            tls,
            engine,
        } => {
            let c: config::DevConfig = config::load(config.as_deref())?;
            let engine = match engine {
                Some(v) => config::RaftEngine::parse(&v).ok_or_else(|| {
                    anyhow::anyhow!("--engine must be openraft or batch, not '{v}'")
                })?,
                None => c.engine,
            };
            shoal::init_logging("info");
            shoal::dev::run(shoal::dev::DevOpts {
                port: port.unwrap_or(c.port),
                nodes: nodes.unwrap_or(c.nodes),
                data_dir: data_dir.unwrap_or(c.data_dir),
                shards: shards.unwrap_or(c.shards),
                bin: std::env::current_exe()?,
                tls,
                engine,
            })
            .await
        }
        Command::Node {
            action:
                Some(NodeAction::Drain {
                    id,
                    etcd,
                    cluster,
                    no_wait,
                    etcd_flags,
                }),
            ..
        } => {
            shoal::status::drain(
                config::parse_endpoints(&etcd),
                cluster,
                &etcd_security(etcd_flags),
                id,
                !no_wait,
            )
            .await
        }
        Command::Node {
            action: None,
            config,
            id,
            listen,
            metrics_listen,
            data_dir,
            etcd,
            cluster,
            fsync,
            worker_threads: _,
            cpu_policy: _,
            snapshot_threshold,
            max_value_len,
            max_reply_len,
            dial_via,
            log_level,
            failpoint,
            tls,
            etcd_flags,
        } => {
            if let Some(fp) = failpoint {
                shoal::failpoint::arm(fp);
            }
            let mut c: NodeConfig = config::load(config.as_deref())?;
            apply_security_flags!(c, tls, etcd_flags);
            if let Some(v) = max_value_len {
                c.max_value_len = v;
            }
            if let Some(v) = max_reply_len {
                c.max_reply_len = v;
            }
            if let Some(v) = id {
                c.id = v;
            }
            if metrics_listen.is_some() {
                c.metrics_listen = metrics_listen;
            }
            if let Some(v) = listen {
                c.listen = v;
            }
            if let Some(v) = data_dir {
                c.data_dir = v;
            }
            if let Some(v) = etcd {
                c.etcd = config::parse_endpoints(&v);
            }
            if let Some(v) = cluster {
                c.cluster = v;
            }
            if let Some(v) = fsync {
                c.fsync = v;
            }
            if let Some(v) = snapshot_threshold {
                c.snapshot_threshold = v;
                c.snapshot_keep_logs = c.snapshot_keep_logs.min(v / 2);
            }
            config::parse_dial_via(&dial_via, &mut c.dial_via)?;
            if let Some(v) = log_level {
                c.log_level = v;
            }
            shoal::init_logging(&c.log_level);
            shoal::rlimit::raise_nofile_limit_logged();
            shoal::sched::log_outcome();
            shoal::node::run(
                c,
                std::sync::Arc::new(shoal::script::node::NodeScripts::new()),
            )
            .await
        }
        Command::Router {
            config,
            listen,
            metrics_listen,
            worker_threads: _,
            cpu_policy: _,
            etcd,
            cluster,
            requirepass,
            requirepass_file,
            default_shards,
            default_replicas,
            default_engine,
            repair_after_ms,
            max_moves_per_node,
            leader_balance_interval_ms,
            timeout,
            tcp_keepalive,
            dial_via,
            log_level,
            failpoint,
            tls_listen,
            tls_cert_file,
            tls_key_file,
            tls_ca_cert_file,
            tls_auth_clients,
            tls,
            etcd_flags,
        } => {
            if let Some(fp) = failpoint {
                shoal::failpoint::arm(fp);
            }
            let mut c: RouterConfig = config::load(config.as_deref())?;
            apply_security_flags!(c, tls, etcd_flags);
            if tls_listen.is_some() {
                c.tls_listen = tls_listen;
            }
            if tls_cert_file.is_some() {
                c.tls_cert_file = tls_cert_file;
            }
            if tls_key_file.is_some() {
                c.tls_key_file = tls_key_file;
            }
            if tls_ca_cert_file.is_some() {
                c.tls_ca_cert_file = tls_ca_cert_file;
            }
            if let Some(v) = tls_auth_clients {
                c.tls_auth_clients = v;
            }
            if let Some(v) = listen {
                c.listen = v;
            }
            if metrics_listen.is_some() {
                c.metrics_listen = metrics_listen;
            }
            if let Some(v) = etcd {
                c.etcd = config::parse_endpoints(&v);
            }
            if let Some(v) = cluster {
                c.cluster = v;
            }
            let password_on_argv = requirepass.is_some();
            if requirepass.is_some() {
                c.requirepass = requirepass;
            }
            if requirepass_file.is_some() {
                c.requirepass_file = requirepass_file;
            }
            if let Some(file) = &c.requirepass_file {
                if c.requirepass.is_some() {
                    anyhow::bail!(
                        "give the password once: --requirepass or --requirepass-file, not both"
                    );
                }
                c.requirepass = Some(config::read_secret_file(file)?);
            }
            if let Some(v) = default_shards {
                c.default_shards = v;
            }
            if let Some(v) = default_replicas {
                c.default_replicas = v;
            }
            if let Some(v) = default_engine {
                c.default_engine = config::RaftEngine::parse(&v).ok_or_else(|| {
                    anyhow::anyhow!("--default-engine must be openraft or batch, not '{v}'")
                })?;
            }
            if let Some(v) = repair_after_ms {
                c.repair_after_ms = v;
            }
            if let Some(v) = max_moves_per_node {
                c.max_moves_per_node = v;
            }
            if let Some(v) = leader_balance_interval_ms {
                c.leader_balance_interval_ms = v;
            }
            if let Some(v) = timeout {
                c.timeout = v;
            }
            if let Some(v) = tcp_keepalive {
                c.tcp_keepalive = v;
            }
            config::parse_dial_via(&dial_via, &mut c.dial_via)?;
            if let Some(v) = log_level {
                c.log_level = v;
            }
            shoal::init_logging(&c.log_level);
            if password_on_argv {
                tracing::warn!(
                    "--requirepass shows the password to anyone who can list processes (ps); use --requirepass-file"
                );
            }
            shoal::rlimit::raise_nofile_limit_logged();
            shoal::sched::log_outcome();
            shoal::router::run(c).await
        }
        Command::Status {
            etcd,
            cluster,
            tls,
            etcd_flags,
        } => {
            let files = shoal::tls::ClusterTlsFiles {
                cert: tls.cluster_tls_cert_file,
                key: tls.cluster_tls_key_file,
                ca: tls.cluster_tls_ca_cert_file,
            };
            shoal::status::run(
                config::parse_endpoints(&etcd),
                cluster,
                &etcd_security(etcd_flags),
                files.load()?,
            )
            .await
        }
        Command::Certs { action } => certs(action),
    }
}
