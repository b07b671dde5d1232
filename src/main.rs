//! The `shoal` binary: `dev`, `node`, `router` and `status`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use shoal::config::{self, NodeConfig, RouterConfig};

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
        /// TOML file with `port`, `nodes`, `data_dir` (flags win).
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
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// etcd endpoints, comma separated.
        #[arg(long)]
        etcd: Option<String>,
        #[arg(long)]
        cluster: Option<String>,
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
    },
    /// Run a RESP router.
    Router {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        listen: Option<String>,
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
        /// A node down this long (ms) has its replicas re-created elsewhere.
        #[arg(long)]
        repair_after_ms: Option<u64>,
        /// Replica moves touching one node at once.
        #[arg(long)]
        max_moves_per_node: Option<usize>,
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
    },
    /// Print nodes, tables, shards, leaders and replica lag.
    Status {
        #[arg(long, default_value = "http://127.0.0.1:2379")]
        etcd: String,
        #[arg(long, default_value = "default")]
        cluster: String,
    },
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
    },
}

#[tokio::main]
async fn main() {
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("shoal: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev {
            config,
            port,
            nodes,
            data_dir,
        } => {
            let c: config::DevConfig = config::load(config.as_deref())?;
            shoal::init_logging("info");
            shoal::dev::run(shoal::dev::DevOpts {
                port: port.unwrap_or(c.port),
                nodes: nodes.unwrap_or(c.nodes),
                data_dir: data_dir.unwrap_or(c.data_dir),
                bin: std::env::current_exe()?,
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
                }),
            ..
        } => shoal::status::drain(config::parse_endpoints(&etcd), cluster, id, !no_wait).await,
        Command::Node {
            action: None,
            config,
            id,
            listen,
            data_dir,
            etcd,
            cluster,
            fsync,
            snapshot_threshold,
            max_value_len,
            max_reply_len,
            dial_via,
            log_level,
            failpoint,
        } => {
            if let Some(fp) = failpoint {
                shoal::failpoint::arm(fp);
            }
            let mut c: NodeConfig = config::load(config.as_deref())?;
            if let Some(v) = max_value_len {
                c.max_value_len = v;
            }
            if let Some(v) = max_reply_len {
                c.max_reply_len = v;
            }
            if let Some(v) = id {
                c.id = v;
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
            shoal::node::run(c).await
        }
        Command::Router {
            config,
            listen,
            etcd,
            cluster,
            requirepass,
            requirepass_file,
            default_shards,
            default_replicas,
            repair_after_ms,
            max_moves_per_node,
            timeout,
            tcp_keepalive,
            dial_via,
            log_level,
            failpoint,
        } => {
            if let Some(fp) = failpoint {
                shoal::failpoint::arm(fp);
            }
            let mut c: RouterConfig = config::load(config.as_deref())?;
            if let Some(v) = listen {
                c.listen = v;
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
            if let Some(v) = repair_after_ms {
                c.repair_after_ms = v;
            }
            if let Some(v) = max_moves_per_node {
                c.max_moves_per_node = v;
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
            shoal::router::run(c).await
        }
        Command::Status { etcd, cluster } => {
            shoal::status::run(config::parse_endpoints(&etcd), cluster).await
        }
    }
}
