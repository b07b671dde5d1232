//! Table administration on behalf of routers: creating tables (and the
//! `default` table at bootstrap), waiting for every shard to elect a leader,
//! then making the table available with a compare-and-swap.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::ShardClient;
use super::ClusterError;
use crate::meta::descriptor::{
    place_replicas, slot_ranges, ShardDescriptor, TableDescriptor, TableState,
};
use crate::meta::etcd::{now_ms, Meta};

/// Shape of a new table.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub name: String,
    pub shards: usize,
    pub replicas: usize,
    /// Database index; `None` picks the lowest free one.
    pub db_index: Option<u32>,
}

/// Write the descriptor of a new table in state `creating`.
pub async fn create_record(meta: &Meta, spec: &TableSpec) -> Result<TableDescriptor, ClusterError> {
    let live: Vec<u64> = meta.live_nodes().await?.keys().copied().collect();
    let placement = place_replicas(&live, spec.shards, spec.replicas).ok_or_else(|| {
        ClusterError::Invalid(format!(
            "cannot place {} replicas: only {} live node(s)",
            spec.replicas,
            live.len()
        ))
    })?;
    let existing = meta.tables().await?;
    if existing.iter().any(|(t, _)| t.name == spec.name) {
        return Err(ClusterError::Invalid(format!(
            "table '{}' already exists",
            spec.name
        )));
    }
    let db_index = match spec.db_index {
        Some(i) => i,
        None => (1..)
            .find(|i| !existing.iter().any(|(t, _)| t.db_index == *i))
            .unwrap_or(u32::MAX),
    };
    let table_id = meta.alloc_ids("table", 1).await?;
    let first_group = meta.alloc_ids("group", spec.shards as u64).await?;
    let desc = TableDescriptor {
        name: spec.name.clone(),
        table_id,
        db_index,
        state: TableState::Creating,
        replicas: spec.replicas,
        shards: slot_ranges(spec.shards)
            .into_iter()
            .zip(placement)
            .enumerate()
            .map(|(i, (slots, replicas))| ShardDescriptor {
                group_id: first_group + i as u64,
                slots,
                replicas,
            })
            .collect(),
        created_at: now_ms(),
    };
    if !meta.create_table_record(&desc).await? {
        return Err(ClusterError::Invalid(format!(
            "table '{}' already exists",
            spec.name
        )));
    }
    tracing::info!(table = %desc.name, shards = spec.shards, replicas = spec.replicas, "table record created");
    Ok(desc)
}

/// Wait until every shard of a `creating` table has a leader, then switch it
/// to `available` (compare-and-swap on its revision).
pub async fn finish_creation(
    meta: &Meta,
    client: &ShardClient,
    name: &str,
    timeout: Duration,
) -> Result<TableDescriptor, ClusterError> {
    let deadline = Instant::now() + timeout;
    loop {
        let (desc, rev) = meta
            .get_table(name)
            .await?
            .ok_or_else(|| ClusterError::UnknownTable(name.to_string()))?;
        match desc.state {
            TableState::Available => return Ok(desc),
            TableState::Deleting => {
                return Err(ClusterError::TableNotAvailable {
                    name: name.to_string(),
                    state: "deleting",
                })
            }
            TableState::Creating => {}
        }
        if all_shards_have_leaders(client, &desc).await {
            let mut ready = desc.clone();
            ready.state = TableState::Available;
            if meta.cas_table(&ready, rev).await? {
                tracing::info!(table = %name, "table available");
                return Ok(ready);
            }
            continue;
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::TryAgain(format!(
                "table '{name}' is still being created (waiting for shard leaders)"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn all_shards_have_leaders(client: &ShardClient, desc: &TableDescriptor) -> bool {
    let mut nodes: Vec<u64> = desc
        .shards
        .iter()
        .flat_map(|s| s.replicas.clone())
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    let gids: Vec<u64> = desc.shards.iter().map(|s| s.group_id).collect();
    let mut led = std::collections::HashSet::new();
    for node in nodes {
        if let Ok(status) = client.node_status(node, gids.clone()).await {
            for g in status.groups {
                if g.role == "leader" && g.applied_index > 0 {
                    led.insert(g.group_id);
                }
            }
        }
    }
    gids.iter().all(|g| led.contains(g))
}

/// Bootstrap: create table `default` (db index 0) once enough nodes are
/// live, never with fewer replicas than configured, and finish a creation
/// that another router left half way.
pub async fn ensure_default_table(
    meta: Meta,
    client: Arc<ShardClient>,
    shards: usize,
    replicas: usize,
) {
    let spec = TableSpec {
        name: "default".into(),
        shards,
        replicas,
        db_index: Some(0),
    };
    let mut waiting_logged = false;
    loop {
        let step = async {
            match meta.get_table("default").await? {
                Some((t, _)) if t.state == TableState::Available => return Ok(true),
                Some(_) => {}
                None => {
                    let live = meta.live_nodes().await?.len();
                    if live < replicas {
                        if !waiting_logged {
                            tracing::info!(
                                live,
                                needed = replicas,
                                "waiting for nodes before creating table 'default'"
                            );
                        }
                        return Ok(false);
                    }
                    match create_record(&meta, &spec).await {
                        Ok(_) | Err(ClusterError::Invalid(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            finish_creation(&meta, &client, "default", Duration::from_secs(30)).await?;
            Ok::<bool, ClusterError>(true)
        };
        match step.await {
            Ok(true) => return,
            Ok(false) => waiting_logged = true,
            Err(e) => tracing::warn!("bootstrap of table 'default': {e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
