//! Configuration of each process, from a TOML file (`--config`) with command
//! line flags on top. Every field has a default, so a file may set any subset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What drives a table's Raft groups (docs/ARCHITECTURE.md, "The batch
/// engine"). Chosen when the table is created, recorded in its
/// descriptor, and never changed for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RaftEngine {
    /// Each replica an openraft group of its own. What a descriptor or
    /// replica record without an engine names (they predate the batch
    /// engine); no longer what new tables get by default.
    #[default]
    Openraft,
    /// Every group of a node driven by the node's one raft-rs loop
    /// (`shard::batch`). What tables are created on unless they name an
    /// engine (the router's `default_engine`).
    Batch,
}

impl RaftEngine {
    /// Every engine this build can host replicas on.
    pub const ALL: [RaftEngine; 2] = [RaftEngine::Openraft, RaftEngine::Batch];

    pub fn is_openraft(&self) -> bool {
        *self == RaftEngine::Openraft
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RaftEngine::Openraft => "openraft",
            RaftEngine::Batch => "batch",
        }
    }

    /// `openraft` or `batch`, in any case.
    pub fn parse(s: &str) -> Option<RaftEngine> {
        RaftEngine::ALL
            .into_iter()
            .find(|e| e.as_str().eq_ignore_ascii_case(s))
    }
}

/// Options shared by nodes and routers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// RESP listen address.
    pub listen: String,
    /// etcd endpoints, e.g. `["http://127.0.0.1:2379"]`.
    pub etcd: Vec<String>,
    /// Cluster name: the etcd prefix is `/shoal/<cluster>/`.
    pub cluster: String,
    /// Password clients must send with AUTH (none when empty).
    pub requirepass: Option<String>,
    /// A file holding that password (its first line), so it appears in
    /// neither `ps` nor the config file. Read at start.
    pub requirepass_file: Option<PathBuf>,
    /// Where `GET /metrics` (Prometheus) is served; none when unset.
    pub metrics_listen: Option<String>,
    /// Threads of the async runtime (none: one per core).
    pub worker_threads: Option<usize>,
    /// CPU scheduling policy of the process's threads ([`crate::sched`]).
    pub cpu_policy: CpuPolicy,
    /// Shards and replicas of `TABLE.CREATE` without them, and of `default`.
    pub default_shards: usize,
    pub default_replicas: usize,
    /// The Raft engine of `TABLE.CREATE` without `ENGINE`, and of
    /// `default` when this router creates it.
    pub default_engine: RaftEngine,
    /// Connected clients at most; more are refused with an error.
    pub max_clients: usize,
    /// Largest bulk string a client may send (bytes).
    pub max_bulk_len: usize,
    /// Most arguments in one command.
    pub max_args: usize,
    /// Longest inline command (bytes).
    pub max_inline_len: usize,
    /// Largest value a key may hold (bytes).
    pub max_value_len: usize,
    /// Replies a client may leave unread (bytes) before it is disconnected.
    /// Also what a pipeline may have in flight (`resp::pipeline`: reads
    /// take a share of it each, writes count their worst case).
    pub max_output_len: usize,
    /// Unparsed input a client may have buffered (bytes) before it is
    /// disconnected (Redis `client-query-buffer-limit`).
    pub client_query_buffer_limit: usize,
    /// Close a client idle this many seconds; 0: never (Redis `timeout`).
    pub timeout: u64,
    /// TCP keepalive probes on client sockets after this many idle seconds;
    /// 0: off (Redis `tcp-keepalive`).
    pub tcp_keepalive: u64,
    /// Commands one MULTI may queue; one more aborts the transaction.
    pub max_multi_commands: usize,
    /// Keys one connection may WATCH at once.
    pub max_watch_keys: usize,
    /// Time a request may spend finding a leader and being served (ms).
    pub request_timeout_ms: u64,
    /// How long TABLE.CREATE waits for every shard to elect a leader before
    /// rolling the creation back (ms).
    pub table_create_timeout_ms: u64,
    /// A creation still unfinished this long after it began (its creator
    /// died) is rolled back by any router's janitor (ms).
    pub table_stale_after_ms: u64,
    /// Take part in the rebalancer election (one router at a time moves
    /// replicas for node join, drain and repair).
    pub rebalance: bool,
    /// How often the elected rebalancer looks at the cluster (ms).
    pub rebalance_interval_ms: u64,
    /// A node not live for this long (ms) is considered dead: its replicas
    /// are re-created on other nodes from the surviving majority.
    pub repair_after_ms: u64,
    /// Replica moves touching one node at once.
    pub max_moves_per_node: usize,
    /// How often (ms) the elected rebalancer moves shard leadership from
    /// nodes leading more than their share to nodes leading fewer
    /// (`meta::leaders`); 0 turns leader balance off.
    pub leader_balance_interval_ms: u64,
    /// Dial a node's advertised address through another one, e.g.
    /// `"10.0.0.5:7001" = "127.0.0.1:17001"` (NAT, a local tunnel, or the
    /// chaos harness's fault-injecting links). Flag: `--dial-via FROM=TO`.
    pub dial_via: BTreeMap<String, String>,
    /// The RESP TLS listener (Redis's `tls-port`), beside `listen` or
    /// instead of it (`listen = "none"`).
    pub tls_listen: Option<String>,
    /// Its certificate and key (Redis's `tls-cert-file`, `tls-key-file`).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// The CA of client certificates (Redis's `tls-ca-cert-file`).
    pub tls_ca_cert_file: Option<PathBuf>,
    /// `yes` (a client certificate is required, Redis's default), `no` or
    /// `optional`.
    pub tls_auth_clients: String,
    /// Mutual TLS between the cluster's processes (see docs/SECURITY.md):
    /// this process's certificate, its key, and the CA every peer's
    /// certificate must be signed by. All three or none.
    pub cluster_tls_cert_file: Option<PathBuf>,
    pub cluster_tls_key_file: Option<PathBuf>,
    pub cluster_tls_ca_cert_file: Option<PathBuf>,
    /// etcd over TLS (`https://` endpoints): the CA of etcd's certificate,
    /// and this process's client certificate and key when etcd asks for one.
    pub etcd_cacert: Option<PathBuf>,
    pub etcd_cert: Option<PathBuf>,
    pub etcd_key: Option<PathBuf>,
    /// An etcd user, and the file whose first line is its password.
    pub etcd_user: Option<String>,
    pub etcd_password_file: Option<PathBuf>,
    /// Log filter (`RUST_LOG` syntax); `RUST_LOG` wins when set.
    pub log_level: String,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            listen: "127.0.0.1:6379".into(),
            etcd: vec!["http://127.0.0.1:2379".into()],
            cluster: "default".into(),
            requirepass: None,
            requirepass_file: None,
            metrics_listen: None,
            worker_threads: None,
            cpu_policy: CpuPolicy::default(),
            default_shards: 8,
            default_replicas: 3,
            default_engine: RaftEngine::Batch,
            max_clients: 10_000,
            max_bulk_len: 64 * 1024 * 1024,
            max_args: 1024 * 1024,
            max_inline_len: 64 * 1024,
            max_value_len: 16 * 1024 * 1024,
            max_output_len: 64 * 1024 * 1024,
            client_query_buffer_limit: 1024 * 1024 * 1024,
            timeout: 0,
            tcp_keepalive: 300,
            max_multi_commands: 10_000,
            max_watch_keys: 10_000,
            request_timeout_ms: 5_000,
            table_create_timeout_ms: 30_000,
            table_stale_after_ms: 60_000,
            rebalance: true,
            rebalance_interval_ms: 1_000,
            repair_after_ms: 300_000,
            max_moves_per_node: 2,
            leader_balance_interval_ms: 5_000,
            dial_via: BTreeMap::new(),
            tls_listen: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_cert_file: None,
            tls_auth_clients: "yes".into(),
            cluster_tls_cert_file: None,
            cluster_tls_key_file: None,
            cluster_tls_ca_cert_file: None,
            etcd_cacert: None,
            etcd_cert: None,
            etcd_key: None,
            etcd_user: None,
            etcd_password_file: None,
            log_level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    pub id: u64,
    /// gRPC listen address (also what other nodes and routers dial).
    pub listen: String,
    /// Where `GET /metrics` (Prometheus) is served; none when unset.
    pub metrics_listen: Option<String>,
    pub data_dir: PathBuf,
    pub etcd: Vec<String>,
    pub cluster: String,
    /// `always` (default) or `never` (benchmarks only: acknowledged writes
    /// may be lost on power failure).
    pub fsync: String,
    /// Threads of the async runtime (none: one per core). A machine that
    /// hosts several nodes gives each its share of the cores: `shoal dev`
    /// and the test clusters do (docs/PERFORMANCE.md, "Worker threads").
    pub worker_threads: Option<usize>,
    /// CPU scheduling policy of the process's threads ([`crate::sched`]).
    pub cpu_policy: CpuPolicy,
    /// Raft heartbeat interval (ms). Heartbeats are per group.
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// A group with no request for this long (ms) hibernates: no
    /// heartbeats, no election timer, one liveness ping per node pair
    /// instead (`shard::hibernate`); 0: never.
    pub hibernate_after_ms: u64,
    /// The batch engine's heartbeat interval and election timeout (ms; a
    /// follower stands after one to two of them), rounded up to its loop's
    /// 50 ms ticks (`shard::batch_clock`). Shorter than openraft's: all of a
    /// node's heartbeats to a peer go in one send.
    pub batch_heartbeat_ms: u64,
    pub batch_election_timeout_ms: u64,
    /// Log entries since the last snapshot after which a new one is asked
    /// for; one over 1 MiB is built only once the log since is as large
    /// (`shard::snapshot::worth_building`).
    pub snapshot_threshold: u64,
    /// Log entries kept behind a snapshot (so slightly lagging followers
    /// catch up from the log rather than a snapshot).
    pub snapshot_keep_logs: u64,
    /// Time a write may wait for its commit (ms).
    pub write_timeout_ms: u64,
    /// Time a linearizable read may wait for the leadership check (ms).
    pub read_timeout_ms: u64,
    /// TTL of the liveness lease in etcd (s).
    pub lease_ttl_s: i64,
    /// A prepared transaction older than this (ms) is resolved from its etcd
    /// record by the shard leader: no lock outlives its coordinator longer.
    pub txn_recovery_timeout_ms: u64,
    /// Largest snapshot a replica accepts from its leader (bytes); a larger
    /// one is refused chunk by chunk, before it is buffered.
    pub max_snapshot_len: u64,
    /// Dial a node's advertised address through another one, e.g.
    /// `"10.0.0.5:7001" = "127.0.0.1:17001"` (NAT, a local tunnel, or the
    /// chaos harness's fault-injecting links). Flag: `--dial-via FROM=TO`.
    pub dial_via: BTreeMap<String, String>,
    /// Mutual TLS between the cluster's processes (see docs/SECURITY.md):
    /// this process's certificate, its key, and the CA every peer's
    /// certificate must be signed by. All three or none.
    pub cluster_tls_cert_file: Option<PathBuf>,
    pub cluster_tls_key_file: Option<PathBuf>,
    pub cluster_tls_ca_cert_file: Option<PathBuf>,
    /// etcd over TLS (`https://` endpoints): the CA of etcd's certificate,
    /// and this process's client certificate and key when etcd asks for one.
    pub etcd_cacert: Option<PathBuf>,
    pub etcd_cert: Option<PathBuf>,
    pub etcd_key: Option<PathBuf>,
    /// An etcd user, and the file whose first line is its password.
    pub etcd_user: Option<String>,
    pub etcd_password_file: Option<PathBuf>,
    pub log_level: String,
    /// Largest value a key may hold (bytes), enforced by the shard leader
    /// on every write whatever the router allowed (at least 1024).
    pub max_value_len: u64,
    /// Largest reply the node builds for one request (bytes): a SCAN page
    /// ends there, a bigger MGET is refused.
    pub max_reply_len: usize,
    /// Memory for the row cache (MiB): the latest bytes of recently read
    /// or written keys, answered without a RocksDB lookup
    /// (`shard::row_cache`); 0: none.
    pub row_cache_mb: u64,
    /// CPU priority of RocksDB's flush and compaction threads.
    pub background_priority: BackgroundPriority,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: 0,
            listen: "127.0.0.1:7001".into(),
            metrics_listen: None,
            data_dir: PathBuf::from("./data"),
            etcd: vec!["http://127.0.0.1:2379".into()],
            cluster: "default".into(),
            fsync: "always".into(),
            worker_threads: None,
            cpu_policy: CpuPolicy::default(),
            heartbeat_ms: 250,
            election_timeout_min_ms: 1_000,
            election_timeout_max_ms: 2_000,
            hibernate_after_ms: 10_000,
            batch_heartbeat_ms: 100,
            batch_election_timeout_ms: 500,
            snapshot_threshold: 10_000,
            snapshot_keep_logs: 1_000,
            write_timeout_ms: 3_000,
            read_timeout_ms: 3_000,
            lease_ttl_s: 4,
            txn_recovery_timeout_ms: 5_000,
            max_snapshot_len: 8 * 1024 * 1024 * 1024,
            dial_via: BTreeMap::new(),
            cluster_tls_cert_file: None,
            cluster_tls_key_file: None,
            cluster_tls_ca_cert_file: None,
            etcd_cacert: None,
            etcd_cert: None,
            etcd_key: None,
            etcd_user: None,
            etcd_password_file: None,
            log_level: "info".into(),
            max_value_len: 16 * 1024 * 1024,
            max_reply_len: 64 * 1024 * 1024,
            row_cache_mb: 64,
            background_priority: BackgroundPriority::default(),
        }
    }
}

/// `shoal dev`: a whole local cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DevConfig {
    /// Router (RESP) port on 127.0.0.1.
    pub port: u16,
    /// Node processes, ids 1..=nodes.
    pub nodes: usize,
    /// etcd's data, every node's RocksDB and every log live under here.
    pub data_dir: PathBuf,
    /// Shards of the `default` table when it is created (a table that
    /// exists keeps its own).
    pub shards: u32,
    /// The Raft engine of tables made without ENGINE, `default` among them.
    pub engine: RaftEngine,
}

impl Default for DevConfig {
    fn default() -> Self {
        DevConfig {
            port: 6379,
            nodes: 3,
            data_dir: PathBuf::from("./.shoal-dev"),
            shards: 8,
            engine: RaftEngine::Batch,
        }
    }
}

/// The async runtime's threads: `wanted` (a flag or a config file's
/// `worker_threads`), or one per core when unset.
pub fn worker_threads(wanted: Option<usize>) -> anyhow::Result<usize> {
    match wanted {
        Some(0) => anyhow::bail!("worker_threads must be at least 1"),
        Some(n) => Ok(n),
        None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

/// `cpu_policy` in a node's or router's config: the CPU scheduling policy
/// of the process's threads ([`crate::sched`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CpuPolicy {
    /// `SCHED_BATCH`: a waking thread does not preempt a running one.
    #[default]
    Batch,
    /// Linux's default, `SCHED_OTHER`.
    Normal,
}

/// `background_priority` in a node's config: the CPU priority of RocksDB's
/// flush and compaction threads ([`crate::shard::engine::lower_background_priority`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackgroundPriority {
    /// Nice 19: when the cores are busy, request threads run first.
    #[default]
    Low,
    /// The process's own priority.
    Normal,
}

/// Read a TOML config file, or the defaults when `path` is `None`.
pub fn load<T: for<'a> Deserialize<'a> + Default>(path: Option<&Path>) -> anyhow::Result<T> {
    match path {
        None => Ok(T::default()),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", p.display()))?;
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("bad config {}: {e}", p.display()))
        }
    }
}

/// Parse `--dial-via FROM=TO` flags into `dial_via` entries.
pub fn parse_dial_via(flags: &[String], into: &mut BTreeMap<String, String>) -> anyhow::Result<()> {
    for f in flags {
        match f.split_once('=') {
            Some((from, to)) if !from.is_empty() && !to.is_empty() => {
                into.insert(from.to_string(), to.to_string());
            }
            _ => anyhow::bail!("--dial-via wants FROM=TO (host:port=host:port), not {f:?}"),
        }
    }
    Ok(())
}

/// Split `--etcd a,b` into endpoints, adding `http://` where missing.
pub fn parse_endpoints(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            if e.contains("://") {
                e.to_string()
            } else {
                format!("http://{e}")
            }
        })
        .collect()
}

/// The password in `path`: its first line, without the line end. Empty or
/// unreadable is an error naming the file.
pub fn read_secret_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the password file {}: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        anyhow::bail!("the password file {} is empty", path.display());
    }
    Ok(line.to_string())
}

/// Whether `addr` (`host:port`) listens only on this machine.
pub fn is_loopback(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commented security keys of conf/*.toml, uncommented, parse.
    #[test]
    fn the_security_keys_of_the_examples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
        let uncomment = |file: &str| -> String {
            std::fs::read_to_string(dir.join(file))
                .unwrap()
                .lines()
                .filter_map(|l| l.strip_prefix("# "))
                .filter(|l| {
                    l.starts_with("tls_") || l.starts_with("cluster_tls_") || l.starts_with("etcd_")
                })
                .map(|l| format!("{l}\n"))
                .collect()
        };
        let r: RouterConfig = toml::from_str(&uncomment("router.toml")).unwrap();
        assert_eq!(r.tls_listen.as_deref(), Some("0.0.0.0:6380"));
        assert!(r.cluster_tls_ca_cert_file.is_some() && r.etcd_password_file.is_some());
        let n: NodeConfig = toml::from_str(&uncomment("node.toml")).unwrap();
        assert!(n.cluster_tls_cert_file.is_some() && n.etcd_user.is_some());
    }

    #[test]
    fn example_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
        let r: RouterConfig = load(Some(&dir.join("router.toml"))).unwrap();
        assert_eq!(r.default_shards, 8);
        assert_eq!((r.timeout, r.tcp_keepalive), (0, 300));
        assert_eq!(r.client_query_buffer_limit, 1 << 30);
        assert_eq!((r.max_multi_commands, r.max_watch_keys), (10_000, 10_000));
        assert_eq!(r.default_engine, RaftEngine::Batch);
        assert_eq!(RouterConfig::default().default_engine, RaftEngine::Batch);
        let n: NodeConfig = load(Some(&dir.join("node.toml"))).unwrap();
        assert_eq!(n.fsync, "always");
        assert_eq!(n.max_value_len, NodeConfig::default().max_value_len);
        assert_eq!(n.background_priority, BackgroundPriority::Low);
        let normal: NodeConfig = toml::from_str("background_priority = \"normal\"").unwrap();
        assert_eq!(normal.background_priority, BackgroundPriority::Normal);
        assert!(toml::from_str::<NodeConfig>("background_priority = \"idle\"").is_err());
        let d: DevConfig = load(Some(&dir.join("dev.toml"))).unwrap();
        assert_eq!((d.port, d.nodes, d.shards), (6379, 3, 8));
        assert_eq!(d.engine, RaftEngine::Batch);
        assert_eq!(DevConfig::default().engine, RaftEngine::Batch);
        let three: DevConfig = toml::from_str("shards = 3\nengine = \"openraft\"").unwrap();
        assert_eq!((three.shards, three.engine), (3, RaftEngine::Openraft));
        assert!(toml::from_str::<DevConfig>("engine = \"paxos\"").is_err());
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_endpoints("127.0.0.1:2379, http://h:1"),
            vec!["http://127.0.0.1:2379", "http://h:1"]
        );
    }

    #[test]
    fn dial_via_from_flags_and_toml() {
        let mut m = BTreeMap::new();
        parse_dial_via(&["a:1=b:2".into(), "c:3=d:4".into()], &mut m).unwrap();
        assert_eq!(m.get("a:1").map(String::as_str), Some("b:2"));
        assert_eq!(m.len(), 2);
        for bad in ["a:1", "=b:2", "a:1="] {
            let err = parse_dial_via(&[bad.into()], &mut m).unwrap_err();
            assert!(err.to_string().contains("FROM=TO"), "{err}");
        }
        let n: NodeConfig =
            toml::from_str("[dial_via]\n\"10.0.0.5:7001\" = \"127.0.0.1:17001\"\n").unwrap();
        assert_eq!(n.dial_via["10.0.0.5:7001"], "127.0.0.1:17001");
    }
}
