//! `shoal status`: nodes (live or not), tables, and per shard its replicas,
//! leader and how far each replica lags behind the leader's log.

use std::fmt::Write;
use std::time::Duration;

use crate::cluster::client::{ClientConfig, ShardClient};
use crate::cluster::routes;
use crate::meta::etcd::{MemberState, Meta};
use crate::meta::EtcdSecurity;
use crate::tls::ClusterTls;

pub async fn run(
    etcd: Vec<String>,
    cluster: String,
    security: &EtcdSecurity,
    tls: Option<ClusterTls>,
) -> anyhow::Result<()> {
    let meta = Meta::connect_with(&etcd, &cluster, security).await?;
    print!("{}", report_with(&meta, tls).await?);
    Ok(())
}

/// `shoal node drain <id>`: start the drain (or say why it cannot), then,
/// with `wait`, report progress until the node holds nothing and is removed.
pub async fn drain(
    etcd: Vec<String>,
    cluster: String,
    security: &EtcdSecurity,
    id: u64,
    wait: bool,
) -> anyhow::Result<()> {
    let meta = Meta::connect_with(&etcd, &cluster, security).await?;
    crate::cluster::rebalance::drain(&meta, id)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_start_matches("ERR ")))?;
    println!("node {id}: draining (a router's rebalancer moves its replicas off)");
    if !wait {
        return Ok(());
    }
    let mut last = usize::MAX;
    loop {
        let members = meta.members().await?;
        if members.get(&id).map(|m| m.state) == Some(MemberState::Removed) {
            println!("node {id}: removed; it holds no replica and can be stopped");
            return Ok(());
        }
        let tables: Vec<_> = meta.tables().await?.into_iter().map(|(t, _)| t).collect();
        let left = crate::cluster::rebalance::replicas_per_node(&tables)
            .get(&id)
            .copied()
            .unwrap_or(0);
        if left != last {
            println!("node {id}: {left} replica(s) left");
            last = left;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn report(meta: &Meta) -> anyhow::Result<String> {
    report_with(meta, None).await
}

/// [`report`], dialling the nodes over cluster TLS when `tls` is given.
pub async fn report_with(meta: &Meta, tls: Option<ClusterTls>) -> anyhow::Result<String> {
    let members = meta.members().await?;
    let live = meta.live_nodes().await?;
    let view = routes::follow(meta).await?;
    let client = ShardClient::new(
        view,
        ClientConfig {
            request_timeout: Duration::from_secs(2),
            rpc_timeout: Duration::from_secs(2),
            tls,
            ..ClientConfig::default()
        },
    );
    let mut out = String::new();
    writeln!(out, "nodes:")?;
    let mut statuses = std::collections::HashMap::new();
    for (id, m) in &members {
        let is_live = live.contains_key(id);
        writeln!(
            out,
            "  node {id}  {}  {}  {}",
            m.rpc_addr,
            if is_live { "live" } else { "down" },
            m.state.as_str()
        )?;
        if is_live {
            if let Ok(s) = client.node_status(*id, vec![]).await {
                statuses.insert(*id, s);
            }
        }
    }
    match meta.cluster_record().await {
        Ok(Some(r)) => writeln!(out, "cluster: {} (id {})", r.name, r.id)?,
        Ok(None) => writeln!(
            out,
            "cluster: NO RECORD at {} (nodes holding data refuse to start, running ones change nothing)",
            meta.key("cluster")
        )?,
        Err(e) => writeln!(out, "cluster: RECORD UNREADABLE at {}: {e}", meta.key("cluster"))?,
    }
    let (mut tables, unreadable) = meta.tables_checked().await?;
    tables.sort_by_key(|(t, _)| t.db_index);
    if !unreadable.is_empty() {
        writeln!(
            out,
            "unreadable table records (no replica of these is created or deleted until fixed):"
        )?;
        for (name, e) in &unreadable {
            writeln!(out, "  {}: ERROR {e}", meta.key(&format!("tables/{name}")))?;
        }
    }
    let mut orphans = Vec::new();
    for (node, st) in &statuses {
        for g in &st.groups {
            if let Some(why) = &g.orphaned {
                orphans.push(format!(
                    "  node {node} group {} (table '{}', shard {}) {}: orphaned (kept): {why}",
                    g.group_id, g.table, g.shard, g.role
                ));
            }
        }
    }
    orphans.sort();
    writeln!(out, "orphaned replicas: {}", orphans.len())?;
    for o in orphans {
        writeln!(out, "{o}")?;
    }
    match meta.tombstones().await {
        Ok(ts) if !ts.is_empty() => {
            writeln!(out, "dropped groups awaiting cleanup: {}", ts.len())?;
            for t in ts.values() {
                writeln!(
                    out,
                    "  group {} (table '{}') on nodes {:?}",
                    t.group_id, t.table, t.nodes
                )?;
            }
        }
        Ok(_) => {}
        Err(e) => writeln!(out, "tombstones: ERROR {e}")?,
    }
    let descs: Vec<_> = tables.iter().map(|(t, _)| t.clone()).collect();
    let moves = crate::cluster::rebalance::describe_moves(&client, &descs).await;
    writeln!(out, "moves in progress: {}", moves.len())?;
    for m in moves {
        writeln!(out, "  {m}")?;
    }
    writeln!(out, "tables:")?;
    for (t, _) in tables {
        writeln!(
            out,
            "  {} (db {}, {}, {} shards x {} replicas)",
            t.name,
            t.db_index,
            t.state.as_str(),
            t.shards.len(),
            t.replicas
        )?;
        for (i, s) in t.shards.iter().enumerate() {
            let groups: Vec<_> = s
                .all_nodes()
                .iter()
                .filter_map(|n| {
                    statuses
                        .get(n)
                        .and_then(|st| st.groups.iter().find(|g| g.group_id == s.group_id))
                        .map(|g| (*n, g.clone()))
                })
                .collect();
            let leader = groups.iter().find(|(_, g)| g.role == "leader");
            let head = leader.map_or(0, |(_, g)| g.last_log_index);
            let replicas: Vec<String> = s
                .all_nodes()
                .iter()
                .map(|n| match groups.iter().find(|(id, _)| id == n) {
                    Some((_, g)) => format!(
                        "{n}:{}{}",
                        g.role,
                        if head > 0 {
                            format!(" lag={}", head.saturating_sub(g.last_log_index))
                        } else {
                            String::new()
                        }
                    ),
                    None => format!("{n}:unreachable"),
                })
                .collect();
            writeln!(
                out,
                "    shard {i:<3} group {:<5} slots {:>5}-{:<5} leader {}  [{}]",
                s.group_id,
                s.slots[0],
                s.slots[1],
                leader.map_or("none".to_string(), |(n, _)| n.to_string()),
                replicas.join(", ")
            )?;
        }
    }
    Ok(out)
}
