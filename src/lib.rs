//! shoal: a distributed key-value store that speaks the Redis protocol.
//!
//! Routers ([`router`]) speak RESP ([`resp`]) and route each key to its shard
//! ([`cluster`]); nodes ([`node`]) host shard replicas, each an openraft group
//! over one RocksDB per node ([`shard`]); table and shard metadata lives in
//! etcd ([`meta`]). `docs/ARCHITECTURE.md` walks requests through these files.

// openraft's StorageError and tonic's Status are large by design; boxing them
// at every call site would only add noise.
#![allow(clippy::result_large_err)]

pub mod certs;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod console;
pub mod dev;
pub mod devcluster;
pub mod failpoint;
pub mod glob;
pub mod lcs;
pub mod meta;
pub mod metrics;
pub mod node;
pub mod num;
pub mod resp;
pub mod rlimit;
pub mod router;
pub mod sched;
pub mod script;
pub mod shard;
pub mod shutdown;
pub mod slot;
pub mod status;
#[cfg(test)]
mod testing;
pub mod tls;

/// Generated gRPC code (proto/shoal.proto).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("shoal");
}

/// Install the tracing subscriber: `RUST_LOG` wins over the configured level.
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(quiet_deps(level)));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Colours only on a terminal: log files stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// openraft logs every election step at info; keep it at warn unless asked.
fn quiet_deps(level: &str) -> String {
    format!("{level},openraft=warn,h2=warn,tower=warn,hyper=warn")
}
