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
        (1..=crate::slot::MAX_SHARDS as usize).contains(&c.default_shards),
        "default_shards must be between 1 and {}",
        crate::slot::MAX_SHARDS
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
    let cluster_tls = crate::tls::ClusterTlsFiles {
        cert: c.cluster_tls_cert_file.clone(),
        key: c.cluster_tls_key_file.clone(),
        ca: c.cluster_tls_ca_cert_file.clone(),
    }
    .load()?;
    let plain = c.listen != "none";
    anyhow::ensure!(
        plain || c.tls_listen.is_some(),
        "listen = none needs --tls-listen: the router would serve no client"
    );
    let auth_clients: crate::tls::AuthClients = c.tls_auth_clients.parse()?;
    let tls_server = match &c.tls_listen {
        None => {
            anyhow::ensure!(
                c.tls_cert_file.is_none()
                    && c.tls_key_file.is_none()
                    && c.tls_ca_cert_file.is_none(),
                "--tls-cert-file, --tls-key-file and --tls-ca-cert-file need --tls-listen"
            );
            None
        }
        Some(at) => {
            let (Some(cert), Some(key)) = (&c.tls_cert_file, &c.tls_key_file) else {
                anyhow::bail!("--tls-listen needs --tls-cert-file and --tls-key-file");
            };
            let config = crate::tls::client_tls_config(
                cert,
                key,
                c.tls_ca_cert_file.as_deref(),
                auth_clients,
            )?;
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on {at} (port in use?)"))?;
            if !crate::config::is_loopback(at)
                && auth_clients != crate::tls::AuthClients::Yes
                && c.requirepass.is_none()
            {
                tracing::warn!(
                    "the router's TLS port {at} takes clients without a certificate (tls-auth-clients {}) and without a password: anyone who can reach it can read, write and drop every table; set requirepass (--requirepass-file) or --tls-auth-clients yes",
                    c.tls_auth_clients
                );
            }
            Some((listener, tokio_rustls::TlsAcceptor::from(config)))
        }
    };
    let listener = if plain {
        let l = tokio::net::TcpListener::bind(&c.listen)
            .await
            .with_context(|| format!("cannot listen on {} (port in use?)", c.listen))?;
        if !crate::config::is_loopback(&c.listen) && c.requirepass.is_none() {
            // Redis's protected mode, as a warning.
            tracing::warn!(
                "the router listens on {} without a password: anyone who can reach it can read, write and drop every table; set requirepass (--requirepass-file) or listen on 127.0.0.1",
                c.listen
            );
        }
        Some(l)
    } else {
        None
    };
    let meta = Meta::connect_with(
        &c.etcd,
        &c.cluster,
        &crate::meta::EtcdSecurity::of_router(&c),
    )
    .await?;
    let view = routes::follow(&meta).await?;
    let users = crate::resp::cmd_acl::follow_users(&meta, c.requirepass.clone()).await?;
    let settings = meta.follow("settings/").await?;
    let default_open = users
        .borrow()
        .get("default")
        .is_some_and(|u| u.is_enabled() && u.rec.nopass);
    if default_open && c.requirepass.is_some() && !crate::config::is_loopback(&c.listen) {
        // A stored `default` user rules over requirepass (docs/SECURITY.md).
        tracing::warn!(
            "the default user stored in etcd needs no password (ACL SETUSER default nopass): this router's requirepass is not used, and anyone who can reach {} can run what that user may",
            c.listen
        );
    }
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
            tls: cluster_tls,
        },
    );
    tokio::spawn(admin::ensure_default_table(
        meta.clone(),
        client.clone(),
        c.default_shards,
        c.default_replicas,
        c.default_engine,
    ));
    tokio::spawn(admin::janitor(
        meta.clone(),
        client.clone(),
        Duration::from_millis(c.table_stale_after_ms),
    ));
    // The router's address: its plaintext listener's, else its TLS one's.
    let router_addr = match (&listener, &tls_server) {
        (Some(l), _) | (None, Some((l, _))) => l.local_addr()?,
        (None, None) => anyhow::bail!("the router has no listener"),
    };
    if c.rebalance {
        let me = format!(
            "{}/pid{}/{}",
            router_addr,
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
                leader_balance_interval: Duration::from_millis(c.leader_balance_interval_ms),
            },
            me,
        ));
    }
    if let Some(l) = &listener {
        tracing::info!(listen = %l.local_addr()?, "router up");
    }
    if let Some((l, _)) = &tls_server {
        tracing::info!(tls_listen = %l.local_addr()?, "router up (TLS)");
    }
    let pubsub = crate::resp::pubsub::Hub::new(client.clone());
    let scripts =
        crate::resp::scripts::Scripts::follow(&meta, Arc::new(crate::script::node::Parser::new()))
            .await?;
    let shared = Arc::new(Shared {
        pubsub,
        scripts,
        client,
        meta,
        limits: RuntimeLimits::new(&c),
        config: c,
        clients: ClientRegistry::default(),
        started: Instant::now(),
        commands_processed: AtomicU64::new(0),
        txn_stats: Default::default(),
        scan_cursors: crate::resp::scan::ScanCursors::new(100_000),
        views: crate::resp::views::Views::new(crate::resp::cmd_views::command_names()),
        users,
        acl_log: Default::default(),
        settings,
    });
    if let Some(at) = shared.config.metrics_listen.clone() {
        let s = shared.clone();
        let console = crate::console::Console::new(shared.clone(), router_addr.to_string());
        let bound = crate::metrics::serve_with(
            &at,
            Arc::new(move || render_metrics(&s)),
            Some(console.pages()),
        )
        .await?;
        tracing::info!("metrics on http://{bound}/metrics");
        tracing::info!("console on http://{bound}/");
    }
    if let Some((l, acceptor)) = tls_server {
        tokio::spawn(server::serve_tls(l, acceptor, shared.clone()));
    }
    let plain_server = async {
        match listener {
            Some(l) => server::serve(l, shared).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        never = plain_server => match never {},
        _ = crate::shutdown::signal() => tracing::info!("router shutting down"),
    }
    Ok(())
}

/// What a router's `/metrics` shows: its connections and blocked clients,
/// commands processed (by name; by table, name and outcome) and their
/// latency, error replies by kind, retries, writes of unknown outcome,
/// transactions by path and outcome, the routing view's revision, the live
/// nodes and tables it routes to, and the process metrics. Read at each
/// scrape.
fn render_metrics(shared: &Shared) -> String {
    use crate::metrics::{counter, counter_vec, gauge};
    use std::sync::atomic::Ordering::Relaxed;
    let commands = counter(
        "shoal_router_commands_total",
        "Commands this router processed",
        shared.commands_processed.load(Relaxed),
    );
    let txns = counter_vec(
        "shoal_txn_total",
        "Transactions this router coordinated (MULTI/EXEC, multi-key writes), by path (one_phase: one shard, one Raft entry; two_phase: 2PC) and outcome",
        &["path", "outcome"],
    );
    let t = &shared.txn_stats;
    use crate::cluster::txn::{TXN_OUTCOMES, TXN_PATHS};
    for (p, path) in TXN_PATHS.iter().enumerate() {
        for (o, outcome) in TXN_OUTCOMES.iter().enumerate() {
            txns.with_label_values(&[path, outcome])
                .inc_by(t.by_path(p, o));
        }
    }
    let errors = counter_vec(
        "shoal_router_errors_total",
        "Error replies sent to clients, by kind (the reply's first word: CLUSTERDOWN, TRYAGAIN, ERR, WRONGTYPE...)",
        &["kind"],
    );
    for (kind, n) in shared.views.stats.errors() {
        errors.with_label_values(&[&kind]).inc_by(n);
    }
    let retries = counter_vec(
        "shoal_router_retries_total",
        "Requests sent again: redirect (to the leader a node named, Redis's MOVED), backoff (after a pause: no leader known, node down, no quorum)",
        &["reason"],
    );
    let cs = &shared.client.stats;
    retries
        .with_label_values(&["redirect"])
        .inc_by(cs.redirects.load(Relaxed));
    retries
        .with_label_values(&["backoff"])
        .inc_by(cs.backoffs.load(Relaxed));
    let by_table = counter_vec(
        "shoal_router_table_commands_total",
        "Commands run, by table, name and outcome (ok, failed: answered an error)",
        &["table", "command", "outcome"],
    );
    let view = shared.client.routes();
    for (db, row, ok, failed) in shared.views.tables.totals() {
        let table = view.by_index.get(&db).map_or("(dropped)", |t| t.as_str());
        let name = shared.views.stats.names.get(row).copied().unwrap_or("?");
        by_table.with_label_values(&[table, name, "ok"]).inc_by(ok);
        if failed > 0 {
            by_table
                .with_label_values(&[table, name, "failed"])
                .inc_by(failed);
        }
    }
    // Per command, from the counters INFO commandstats reads.
    let by_name = |name: &str, help: &str| counter_vec(name, help, &["command"]);
    let calls = by_name("shoal_router_command_calls_total", "Commands run, by name");
    let failed = by_name(
        "shoal_router_command_failed_total",
        "Commands that ran and answered an error, by name",
    );
    let rejected = by_name(
        "shoal_router_command_rejected_total",
        "Commands refused before running (arity, auth...), by name",
    );
    let mut latency = Vec::new();
    for (name, t) in shared.views.stats.totals() {
        calls.with_label_values(&[name]).inc_by(t.calls);
        failed.with_label_values(&[name]).inc_by(t.failed);
        rejected.with_label_values(&[name]).inc_by(t.rejected);
        latency.push(crate::metrics::HistogramSeries {
            label: name.to_string(),
            buckets: duration_buckets(&t.cumulative_usec()),
            count: t.calls,
            sum: t.nanos as f64 / 1e9,
        });
    }
    let latency = crate::metrics::histogram_family(
        "shoal_router_command_duration_seconds",
        "Time from a command's arrival to its reply, by name",
        "command",
        latency,
    );
    let registry = crate::metrics::registry(vec![
        Box::new(calls),
        Box::new(by_table),
        Box::new(errors),
        Box::new(retries),
        counter(
            "shoal_router_outcome_unknown_total",
            "Writes answered TRYAGAIN because they may or may not have been applied (no answer in time, leader lost mid-write)",
            cs.outcome_unknown.load(Relaxed),
        ),
        gauge(
            "shoal_router_routes_revision",
            "The etcd revision of the routing view (tables, members, live nodes) this router uses",
            view.revision.max(0) as u64,
        ),
        Box::new(failed),
        Box::new(rejected),
        gauge(
            "shoal_router_connections",
            "Client connections open",
            shared.clients.count() as u64,
        ),
        gauge(
            "shoal_router_blocked_clients",
            "Clients blocked in BLPOP and the like",
            shared.clients.blocked() as u64,
        ),
        commands,
        Box::new(txns),
        gauge(
            "shoal_router_live_nodes",
            "Nodes the router sees alive",
            view.live.len() as u64,
        ),
        gauge(
            "shoal_router_tables",
            "Tables the router routes to",
            view.tables.len() as u64,
        ),
    ]);
    crate::metrics::text_with(&registry, vec![latency])
}

/// Fixed histogram buckets (upper bounds from 1 µs doubling to about 67 s;
/// the encoder adds +Inf) from the counters' cumulative `(µs, count)` points: a
/// bucket holds what the last point at or below it holds.
fn duration_buckets(points: &[(u64, u64)]) -> Vec<(f64, u64)> {
    let mut out = Vec::new();
    let mut us = 1u64;
    while us <= 1 << 26 {
        let n = points
            .iter()
            .take_while(|(at, _)| *at <= us)
            .last()
            .map_or(0, |(_, n)| *n);
        out.push((us as f64 / 1e6, n));
        us *= 2;
    }
    out
}
