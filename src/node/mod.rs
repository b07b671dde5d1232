//! `shoal node`: opens the node's RocksDB, reopens the replicas it hosts,
//! serves the gRPC services, registers in etcd under a lease and runs the
//! reconciler that creates and deletes replicas as etcd says. With cluster
//! TLS the gRPC listener takes only peers with a certificate of the CA
//! (`crate::tls`).

pub mod metrics;
pub mod reconcile;
pub mod settings;
pub mod txn_recovery;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::NodeConfig;
use crate::meta::etcd::{ClusterRecord, Meta};
use crate::meta::identity;
use crate::shard::engine::Engine;
use crate::shard::host::{Host, HostConfig};
use crate::shard::network::Transport;
use crate::shard::service::NodeService;

pub async fn run(
    c: NodeConfig,
    scripts: Arc<dyn crate::shard::script::ScriptRunner>,
) -> anyhow::Result<()> {
    anyhow::ensure!(c.id > 0, "--id must be a positive integer");
    let tls = crate::tls::ClusterTlsFiles {
        cert: c.cluster_tls_cert_file.clone(),
        key: c.cluster_tls_key_file.clone(),
        ca: c.cluster_tls_ca_cert_file.clone(),
    }
    .load()?;
    let fsync = match c.fsync.as_str() {
        "always" => true,
        "never" => {
            tracing::warn!(
                "fsync = never: acknowledged writes can be lost on power failure (benchmarks only)"
            );
            false
        }
        other => anyhow::bail!("fsync must be 'always' or 'never', not '{other}'"),
    };
    std::fs::create_dir_all(&c.data_dir)
        .with_context(|| format!("cannot create data dir {}", c.data_dir.display()))?;
    let db_path = c.data_dir.join("db");
    if c.background_priority == crate::config::BackgroundPriority::Low {
        crate::shard::engine::lower_background_priority()
            .context("cannot lower the priority of RocksDB's background threads")?;
    }
    let engine = {
        let path = db_path.clone();
        let cache_bytes =
            usize::try_from(c.row_cache_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        tokio::task::spawn_blocking(move || Engine::open_with_cache(&path, fsync, cache_bytes))
            .await?
    }
    .with_context(|| format!("cannot open RocksDB at {}", db_path.display()))?;
    let engine = Arc::new(engine);
    let host = Host::new(
        c.id,
        engine,
        Transport::with(c.dial_via.clone(), tls.clone()),
        HostConfig::from_node(&c)?,
    );
    host.scripts.set_runner(scripts);
    if let Some(at) = &c.metrics_listen {
        let h = host.clone();
        let data_dir = c.data_dir.clone();
        let bound =
            crate::metrics::serve(at, Arc::new(move || metrics::render(&h, &data_dir))).await?;
        tracing::info!("metrics on http://{bound}/metrics");
    }
    crate::shard::purger::spawn_expiry_purger(host.clone(), Duration::from_secs(1));
    crate::shard::purger::spawn_element_collector(host.clone(), Duration::from_millis(500));

    let listener = tokio::net::TcpListener::bind(&c.listen)
        .await
        .with_context(|| format!("cannot listen on {}", c.listen))?;
    let addr = listener.local_addr()?;
    if tls.is_none() && !crate::config::is_loopback(&c.listen) {
        tracing::warn!(
            "the node's gRPC on {} is plaintext and unauthenticated: anyone who can reach it can read and change every shard it holds; set --cluster-tls-cert-file, --cluster-tls-key-file and --cluster-tls-ca-cert-file (docs/SECURITY.md)",
            c.listen
        );
    }
    let meta =
        Meta::connect_with(&c.etcd, &c.cluster, &crate::meta::EtcdSecurity::of_node(&c)).await?;
    // Peers must be known before replicas start talking.
    for (id, m) in meta.members().await? {
        host.transport.set_peer(id, m.rpc_addr);
    }
    let cluster = check_identity(&meta, &c, &host).await?;
    // The batch engine's loop first: its tables' replicas open on it.
    host.start_batch(tokio::runtime::Handle::current())
        .context("cannot start the batch engine's loop")?;
    let reopened = host.open_recorded().await?;
    tracing::info!(node = c.id, %addr, replicas = reopened, "node up");

    let service = NodeService::new(host.clone(), c.max_snapshot_len);
    // Message sizes bounded as `shard::wire` says.
    let server = tonic::transport::Server::builder()
        .add_service(crate::shard::service::raft_server(service.clone()))
        .add_service(crate::shard::service::shard_server(service));
    // Framed links (`shard::link`) share the port: told apart by ALPN
    // under TLS, by their first bytes in plaintext.
    let server = match tls {
        Some(tls) => {
            let links = host.clone();
            let divert: crate::tls::Divert = Arc::new(move |stream, peer| {
                if stream.get_ref().1.alpn_protocol() == Some(crate::tls::LINK_ALPN) {
                    crate::shard::link::keepalive(stream.get_ref().0);
                    crate::shard::service::serve_link(stream, links.clone(), peer);
                    None
                } else {
                    Some(stream)
                }
            });
            tokio::spawn(server.serve_with_incoming(crate::tls::incoming(
                listener,
                tls.server,
                format!("node {} gRPC {addr}", c.id),
                divert,
            )))
        }
        None => tokio::spawn(server.serve_with_incoming(
            crate::shard::service::plaintext_incoming(listener, host.clone()),
        )),
    };

    meta.register_member(c.id, &c.listen).await?;
    let _liveness = meta.spawn_liveness(c.id, c.listen.clone(), c.lease_ttl_s);
    tokio::spawn(crate::shard::hibernate_loop::run(host.clone()));
    let reconciler = tokio::spawn(reconcile::run(meta.clone(), host.clone(), cluster));
    let settings = tokio::spawn(settings::run(meta.clone(), host.clone()));
    tokio::spawn(txn_recovery::run(
        meta.clone(),
        host.clone(),
        Duration::from_millis(c.txn_recovery_timeout_ms),
    ));

    tokio::select! {
        r = server => { r??; }
        r = reconciler => { r??; anyhow::bail!("reconciler stopped"); }
        r = settings => { r??; anyhow::bail!("the settings watch stopped"); }
        _ = crate::shutdown::signal() => { tracing::info!(node = c.id, "shutting down"); }
    }
    for r in host.replicas() {
        r.driver.shutdown().await;
    }
    host.stop_batch();
    Ok(())
}

/// Make sure the data dir belongs to the cluster of the etcd prefix (see
/// `meta::identity`): stamp a fresh one, refuse a foreign one. Returns the
/// cluster record the node runs under.
async fn check_identity(meta: &Meta, c: &NodeConfig, host: &Host) -> anyhow::Result<ClusterRecord> {
    let stamp = identity::read_stamp(&c.data_dir)?;
    let record = meta.cluster_record().await.with_context(|| {
        format!(
            "the cluster record {} in etcd is unreadable; fix or restore it",
            meta.key("cluster")
        )
    })?;
    let hosted: Vec<u64> = host.recorded().await?.iter().map(|r| r.group_id).collect();
    let mut known = std::collections::BTreeSet::new();
    if stamp.is_none() && !hosted.is_empty() {
        for (t, _) in meta.tables().await? {
            known.extend(t.shards.iter().map(|s| s.group_id));
        }
        known.extend(meta.tombstones().await?.into_keys());
    }
    let decision = identity::check(&identity::Found {
        cluster: &c.cluster,
        prefix: &meta.key(""),
        data_dir: &c.data_dir,
        stamp: stamp.as_ref(),
        record: record.as_ref(),
        hosted: &hosted,
        known: &known,
    });
    let record = match decision {
        identity::Decision::Proceed => record.expect("proceed implies a record"),
        identity::Decision::Stamp => record.expect("stamp implies a record"),
        identity::Decision::CreateAndStamp => meta.create_cluster_record(&c.cluster).await?,
        identity::Decision::Refuse(why) => anyhow::bail!("refusing to start: {why}"),
    };
    if stamp.as_ref().map(|s| &s.id) != Some(&record.id) {
        identity::write_stamp(&c.data_dir, &identity::Stamp::from(&record))
            .with_context(|| format!("cannot stamp data dir {}", c.data_dir.display()))?;
        tracing::info!(cluster = %record.name, id = %record.id, "data dir stamped with its cluster");
    }
    Ok(record)
}
