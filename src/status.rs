//! `shoal status`: nodes (live or not), tables, and per shard its replicas,
//! leader and how far each replica lags behind the leader's log.
//!
//! [`gather`] reads it all once (etcd's records, then every live node's
//! status over gRPC, concurrently) into a [`ClusterStatus`]; [`report`]
//! writes it as text for `shoal status`, and the router's console
//! (`crate::console`) draws it as a map.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::time::Duration;

use crate::cluster::client::{ClientConfig, ShardClient};
use crate::cluster::routes;
use crate::meta::descriptor::{ShardDescriptor, TableDescriptor};
use crate::meta::etcd::{ClusterRecord, MemberInfo, MemberState, Meta, Tombstone};
use crate::meta::EtcdSecurity;
use crate::shard::status::{GroupStatus, NodeStatus};
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

/// What `shoal status` shows, read once.
pub struct ClusterStatus {
    pub members: BTreeMap<u64, MemberInfo>,
    /// Members with a live lease in etcd.
    pub live: std::collections::BTreeSet<u64>,
    /// The status of each live node that answered.
    pub statuses: HashMap<u64, NodeStatus>,
    /// When the statuses were asked for (all at once), for rates over
    /// the counters they carry; and that time in Unix milliseconds.
    pub asked_at: std::time::Instant,
    pub asked_ms: u64,
    /// The cluster record (`None`: absent), or why it cannot be read.
    pub record: Result<Option<ClusterRecord>, String>,
    /// Readable tables, by db index.
    pub tables: Vec<TableDescriptor>,
    /// Table records that do not decode: name -> error.
    pub unreadable: BTreeMap<String, String>,
    /// Dropped groups awaiting cleanup, or why they cannot be read.
    pub tombstones: Result<BTreeMap<u64, Tombstone>, String>,
    /// One line per move in progress (`rebalance::describe_moves`).
    pub moves: Vec<String>,
}

impl ClusterStatus {
    /// Each node of `shard` (voters, then learners) with its replica's
    /// status, `None` when the node did not answer or does not host it.
    pub fn replicas(&self, shard: &ShardDescriptor) -> Vec<(u64, Option<&GroupStatus>)> {
        shard
            .all_nodes()
            .into_iter()
            .map(|n| {
                let g = self
                    .statuses
                    .get(&n)
                    .and_then(|st| st.groups.iter().find(|g| g.group_id == shard.group_id));
                (n, g)
            })
            .collect()
    }

    /// The node whose replica of `shard` says it leads.
    pub fn leader(&self, shard: &ShardDescriptor) -> Option<u64> {
        self.replicas(shard)
            .into_iter()
            .find(|(_, g)| g.is_some_and(|g| g.role == "leader"))
            .map(|(n, _)| n)
    }

    /// Replicas no readable etcd record names (kept, never deleted), by
    /// node and group.
    pub fn orphans(&self) -> Vec<(u64, &GroupStatus)> {
        let mut out: Vec<(u64, &GroupStatus)> = self
            .statuses
            .iter()
            .flat_map(|(n, st)| {
                st.groups
                    .iter()
                    .filter(|g| g.orphaned.is_some())
                    .map(move |g| (*n, g))
            })
            .collect();
        out.sort_by_key(|(n, g)| (*n, g.group_id));
        out
    }
}

/// Read the cluster's records from etcd and ask every live node for its
/// status through `client` (all at once, each within the client's status
/// timeout).
pub async fn gather(meta: &Meta, client: &ShardClient) -> anyhow::Result<ClusterStatus> {
    let members = meta.members().await?;
    let live: std::collections::BTreeSet<u64> = meta.live_nodes().await?.into_keys().collect();
    let (asked_at, asked_ms) = (std::time::Instant::now(), crate::clock::now_ms());
    let asks = members
        .keys()
        .filter(|id| live.contains(id))
        .map(|id| async move { (*id, client.node_status(*id, vec![]).await) });
    let statuses = futures::future::join_all(asks)
        .await
        .into_iter()
        .filter_map(|(id, s)| Some((id, s.ok()?)))
        .collect();
    let record = meta.cluster_record().await.map_err(|e| e.to_string());
    let (mut tables, unreadable) = meta.tables_checked().await?;
    tables.sort_by_key(|(t, _)| t.db_index);
    let tables: Vec<TableDescriptor> = tables.into_iter().map(|(t, _)| t).collect();
    let tombstones = meta.tombstones().await.map_err(|e| e.to_string());
    let moves = crate::cluster::rebalance::describe_moves(client, &tables).await;
    Ok(ClusterStatus {
        members,
        live,
        statuses,
        asked_at,
        asked_ms,
        record,
        tables,
        unreadable,
        tombstones,
        moves,
    })
}

pub async fn report(meta: &Meta) -> anyhow::Result<String> {
    report_with(meta, None).await
}

/// [`report`], dialling the nodes over cluster TLS when `tls` is given.
pub async fn report_with(meta: &Meta, tls: Option<ClusterTls>) -> anyhow::Result<String> {
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
    let st = gather(meta, &client).await?;
    let mut out = String::new();
    writeln!(out, "nodes:")?;
    for (id, m) in &st.members {
        writeln!(
            out,
            "  node {id}  {}  {}  {}",
            m.rpc_addr,
            if st.live.contains(id) { "live" } else { "down" },
            m.state.as_str()
        )?;
    }
    match &st.record {
        Ok(Some(r)) => writeln!(out, "cluster: {} (id {})", r.name, r.id)?,
        Ok(None) => writeln!(
            out,
            "cluster: NO RECORD at {} (nodes holding data refuse to start, running ones change nothing)",
            meta.key("cluster")
        )?,
        Err(e) => writeln!(out, "cluster: RECORD UNREADABLE at {}: {e}", meta.key("cluster"))?,
    }
    if !st.unreadable.is_empty() {
        writeln!(
            out,
            "unreadable table records (no replica of these is created or deleted until fixed):"
        )?;
        for (name, e) in &st.unreadable {
            writeln!(out, "  {}: ERROR {e}", meta.key(&format!("tables/{name}")))?;
        }
    }
    let mut orphans: Vec<String> = st
        .orphans()
        .into_iter()
        .map(|(node, g)| {
            format!(
                "  node {node} group {} (table '{}', shard {}) {}: orphaned (kept): {}",
                g.group_id,
                g.table,
                g.shard,
                g.role,
                g.orphaned.as_deref().unwrap_or_default()
            )
        })
        .collect();
    orphans.sort();
    writeln!(out, "orphaned replicas: {}", orphans.len())?;
    for o in orphans {
        writeln!(out, "{o}")?;
    }
    match &st.tombstones {
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
    writeln!(out, "moves in progress: {}", st.moves.len())?;
    for m in &st.moves {
        writeln!(out, "  {m}")?;
    }
    writeln!(out, "tables:")?;
    for t in &st.tables {
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
            let groups = st.replicas(s);
            let head = groups
                .iter()
                .find_map(|(_, g)| g.filter(|g| g.role == "leader"))
                .map_or(0, |g| g.last_log_index);
            let replicas: Vec<String> = groups
                .iter()
                .map(|(n, g)| match g {
                    Some(g) => format!(
                        "{n}:{}{}{}",
                        g.role,
                        if head > 0 {
                            format!(" lag={}", head.saturating_sub(g.last_log_index))
                        } else {
                            String::new()
                        },
                        g.stopped
                            .as_ref()
                            .map_or(String::new(), |why| format!(" STOPPED: {why}"))
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
                st.leader(s).map_or("none".to_string(), |n| n.to_string()),
                replicas.join(", ")
            )?;
        }
    }
    Ok(out)
}
