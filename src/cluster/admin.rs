//! Table administration on behalf of routers: creating tables (and the
//! `default` table at bootstrap), waiting for every shard to elect a leader,
//! then making the table available with a compare-and-swap.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::ShardClient;
use super::ClusterError;
use crate::clock::now_ms;
use crate::meta::descriptor::{
    place_replicas, slot_ranges, ShardDescriptor, TableDescriptor, TableState,
};
use crate::meta::etcd::Meta;

/// Shape of a new table.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub name: String,
    pub shards: usize,
    pub replicas: usize,
    /// Database index; `None` picks the lowest free one.
    pub db_index: Option<u32>,
    pub engine: crate::config::RaftEngine,
}

/// Write the descriptor of a new table in state `creating`.
pub async fn create_record(meta: &Meta, spec: &TableSpec) -> Result<TableDescriptor, ClusterError> {
    // Draining and removed nodes take no new replicas.
    let members = meta.members().await?;
    let live_nodes = meta.live_nodes().await?;
    let live: Vec<u64> = live_nodes
        .keys()
        .copied()
        .filter(|id| {
            members
                .get(id)
                .is_none_or(|m| m.state == crate::meta::etcd::MemberState::Active)
        })
        .collect();
    // A node too old to know the engine would host its replicas as
    // openraft groups: the table waits until every node is upgraded.
    if let Some(old) = live.iter().find(|id| !live_nodes[id].hosts(spec.engine)) {
        return Err(ClusterError::Invalid(format!(
            "node {old} runs a version without the {} engine: upgrade every node before creating a table on it",
            spec.engine.as_str()
        )));
    }
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
                learners: vec![],
                moving: None,
            })
            .collect(),
        created_at: now_ms(),
        engine: spec.engine,
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
    let leaders = shard_leaders(client, desc, true).await;
    desc.shards
        .iter()
        .all(|s| leaders.contains_key(&s.group_id))
}

/// Each shard's current leader, asked of the nodes hosting the table (in
/// parallel). With `applied`, only leaders that have applied an entry count
/// (a new group's leader has then committed its membership).
pub async fn shard_leaders(
    client: &ShardClient,
    desc: &TableDescriptor,
    applied: bool,
) -> std::collections::HashMap<u64, u64> {
    let mut nodes: Vec<u64> = desc
        .shards
        .iter()
        .flat_map(|s| s.replicas.clone())
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    let gids: Vec<u64> = desc.shards.iter().map(|s| s.group_id).collect();
    let asks = nodes.into_iter().map(|node| {
        let gids = gids.clone();
        async move { (node, client.node_status(node, gids).await) }
    });
    let mut leaders = std::collections::HashMap::new();
    for (node, status) in futures::future::join_all(asks).await {
        let Ok(status) = status else { continue };
        for g in status.groups {
            if g.role == "leader" && (!applied || g.applied_index > 0) {
                leaders.insert(g.group_id, node);
            }
        }
    }
    leaders
}

/// Bootstrap: create table `default` (db index 0) once enough nodes are
/// live, never with fewer replicas than configured, and finish a creation
/// that another router left half way.
pub async fn ensure_default_table(
    meta: Meta,
    client: Arc<ShardClient>,
    shards: usize,
    replicas: usize,
    engine: crate::config::RaftEngine,
) {
    let spec = TableSpec {
        name: "default".into(),
        shards,
        replicas,
        db_index: Some(0),
        engine,
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

/// Drop a table: move it to `deleting` (routers stop serving it at once),
/// then finish the drop (see [`finish_drop`]).
pub async fn drop_table(
    meta: &Meta,
    client: &ShardClient,
    name: &str,
    wait: Duration,
) -> Result<(), ClusterError> {
    loop {
        let (desc, rev) = meta
            .get_table(name)
            .await?
            .ok_or_else(|| ClusterError::UnknownTable(name.to_string()))?;
        if desc.state == TableState::Deleting {
            break;
        }
        if meta.mark_table_deleting(&desc, rev).await? {
            tracing::info!(table = %name, "table dropping");
            break;
        }
    }
    finish_drop(meta, client, name, wait).await
}

/// Wait (up to `wait`) until no live node hosts a replica of the `deleting`
/// table, then delete its record. A node that is down keeps its replicas
/// until it returns; its reconciler then finds the group's tombstone (written
/// with `deleting`, and outliving the record) and deletes them, so the record
/// need not wait for it.
pub async fn finish_drop(
    meta: &Meta,
    client: &ShardClient,
    name: &str,
    wait: Duration,
) -> Result<(), ClusterError> {
    let deadline = Instant::now() + wait;
    loop {
        let Some((desc, rev)) = meta.get_table(name).await? else {
            return Ok(());
        };
        if desc.state != TableState::Deleting {
            return Err(ClusterError::Invalid(format!(
                "table '{name}' is {}, not being dropped",
                desc.state.as_str()
            )));
        }
        let gids: Vec<u64> = desc.shards.iter().map(|s| s.group_id).collect();
        let live = meta.live_nodes().await?;
        let mut remaining = 0;
        for node in live.keys() {
            if let Ok(status) = client.node_status(*node, gids.clone()).await {
                remaining += status.groups.len();
            }
        }
        if remaining == 0 || Instant::now() >= deadline {
            if meta.delete_table_record(name, rev).await? {
                tracing::info!(table = %name, replicas_left = remaining, "table dropped");
                return Ok(());
            }
            continue;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Abandon a creation that did not finish: drop what was made of it.
pub async fn rollback_creation(
    meta: &Meta,
    client: &ShardClient,
    name: &str,
    rev: i64,
) -> Result<(), ClusterError> {
    let Some((desc, current)) = meta.get_table(name).await? else {
        return Ok(());
    };
    if desc.state != TableState::Creating || current != rev {
        return Ok(());
    }
    if meta.mark_table_deleting(&desc, rev).await? {
        tracing::warn!(table = %name, "rolling back a table creation that did not finish");
        finish_drop(meta, client, name, Duration::from_secs(10)).await?;
    }
    Ok(())
}

/// Background duty of every router: roll back creations abandoned for longer
/// than `stale_after` (their creator died: the client never saw `+OK`), and
/// finish drops whose dropper died. Compare-and-swap makes concurrent
/// janitors on several routers safe. Table `default` is completed by
/// [`ensure_default_table`] instead.
pub async fn janitor(meta: Meta, client: Arc<ShardClient>, stale_after: Duration) {
    let mut round = 0u64;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        round += 1;
        if round.is_multiple_of(10) {
            if let Err(e) = release_tombstones_of_gone_nodes(&meta).await {
                tracing::warn!("janitor: tombstones: {e}");
            }
        }
        let view = client.routes();
        for t in view.tables.values() {
            let d = &t.desc;
            let result = match d.state {
                TableState::Creating
                    if d.name != "default"
                        && now_ms().saturating_sub(d.created_at)
                            > stale_after.as_millis() as u64 =>
                {
                    rollback_creation(&meta, &client, &d.name, t.mod_revision).await
                }
                TableState::Deleting => {
                    finish_drop(&meta, &client, &d.name, Duration::from_secs(10)).await
                }
                _ => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(table = %d.name, "janitor: {e}");
            }
        }
    }
}

/// A tombstone waits for every node on it to confirm; a node that was
/// drained and removed (or whose member record is gone) never will, and
/// holds no replica: confirm for it.
async fn release_tombstones_of_gone_nodes(meta: &Meta) -> Result<(), ClusterError> {
    let records = meta.load_prefix("members/").await?;
    let (members, unreadable) = records.decode_all::<crate::meta::etcd::MemberInfo>();
    for (gid, t) in meta.tombstones().await? {
        for node in t.nodes {
            // A member whose record does not decode is not known to be gone.
            let key = node.to_string();
            let gone = !unreadable.contains_key(&key)
                && members
                    .iter()
                    .find(|(k, _, _)| *k == key)
                    .is_none_or(|(_, m, _)| m.state == crate::meta::etcd::MemberState::Removed);
            if gone {
                meta.ack_tombstone(gid, node).await?;
            }
        }
    }
    Ok(())
}
