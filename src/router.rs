//! `shoal router`: connects to etcd, mirrors the routing metadata, bootstraps
//! table `default` when the cluster is new, and serves RESP.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cluster::admin;
use crate::cluster::client::{ClientConfig, ShardClient};
use crate::cluster::routes;
use crate::config::RouterConfig;
use crate::meta::etcd::Meta;
use crate::resp::server;
use crate::resp::session::{ClientRegistry, RuntimeLimits, Shared};

pub async fn run(c: RouterConfig) -> anyhow::Result<()> {
    anyhow::ensure!(
        [1, 3, 5].contains(&c.default_replicas),
        "default_replicas must be 1, 3 or 5"
    );
    anyhow::ensure!(
        (1..=16384).contains(&c.default_shards),
        "default_shards must be between 1 and 16384"
    );
    anyhow::ensure!(
        c.client_query_buffer_limit > 0 && c.max_multi_commands > 0 && c.max_watch_keys > 0,
        "client_query_buffer_limit, max_multi_commands and max_watch_keys must be positive"
    );
    if c.table_stale_after_ms < c.table_create_timeout_ms {
        tracing::warn!(
            "table_stale_after_ms < table_create_timeout_ms: a slow creation may be rolled back while its creator still waits"
        );
    }
    let listener = tokio::net::TcpListener::bind(&c.listen)
        .await
        .with_context(|| format!("cannot listen on {} (port in use?)", c.listen))?;
    if !crate::config::is_loopback(&c.listen) && c.requirepass.is_none() {
        // Redis's protected mode, as a warning.
        tracing::warn!(
            "the router listens on {} without a password: anyone who can reach it can read, write and drop every table; set requirepass (--requirepass-file) or listen on 127.0.0.1",
            c.listen
        );
    }
    let meta = Meta::connect(&c.etcd, &c.cluster).await?;
    let view = routes::follow(&meta).await?;
    let timeout = Duration::from_millis(c.request_timeout_ms);
    let client = ShardClient::new(
        view,
        ClientConfig {
            request_timeout: timeout,
            // Below the request's deadline, so a read whose node did not
            // answer still has time to try another replica.
            rpc_timeout: timeout.mul_f64(0.75),
            dial_via: c.dial_via.clone(),
            // Headroom for the framing around a page (cursor, headers).
            max_reply_len: c.max_output_len.saturating_sub(4096).max(1024),
        },
    );
    tokio::spawn(admin::ensure_default_table(
        meta.clone(),
        client.clone(),
        c.default_shards,
        c.default_replicas,
    ));
    tokio::spawn(admin::janitor(
        meta.clone(),
        client.clone(),
        Duration::from_millis(c.table_stale_after_ms),
    ));
    if c.rebalance {
        let me = format!(
            "{}/pid{}/{}",
            listener.local_addr()?,
            std::process::id(),
            crate::clock::now_ms()
        );
        tokio::spawn(crate::cluster::rebalance::run(
            meta.clone(),
            client.clone(),
            crate::cluster::rebalance::RebalanceConfig {
                interval: Duration::from_millis(c.rebalance_interval_ms),
                repair_after: Duration::from_millis(c.repair_after_ms),
                max_moves_per_node: c.max_moves_per_node,
            },
            me,
        ));
    }
    tracing::info!(listen = %listener.local_addr()?, "router up");
    let shared = Arc::new(Shared {
        client,
        meta,
        limits: RuntimeLimits::new(&c),
        config: c,
        clients: ClientRegistry::default(),
        started: Instant::now(),
        commands_processed: AtomicU64::new(0),
        txn_stats: Default::default(),
        scan_cursors: crate::resp::scan::ScanCursors::new(100_000),
    });
    tokio::select! {
        never = server::serve(listener, shared) => match never {},
        _ = crate::shutdown::signal() => tracing::info!("router shutting down"),
    }
    Ok(())
}
