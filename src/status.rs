//! `shoal status`: nodes (live or not), tables, and per shard its replicas,
//! leader and how far each replica lags behind the leader's log.

use std::fmt::Write;
use std::time::Duration;

use crate::cluster::client::{ClientConfig, ShardClient};
use crate::cluster::routes;
use crate::meta::etcd::Meta;

pub async fn run(etcd: Vec<String>, cluster: String) -> anyhow::Result<()> {
    let meta = Meta::connect(&etcd, &cluster).await?;
    print!("{}", report(&meta).await?);
    Ok(())
}

pub async fn report(meta: &Meta) -> anyhow::Result<String> {
    let members = meta.members().await?;
    let live = meta.live_nodes().await?;
    let view = routes::follow(meta).await?;
    let client = ShardClient::new(
        view,
        ClientConfig {
            request_timeout: Duration::from_secs(2),
            rpc_timeout: Duration::from_secs(2),
        },
    );
    let mut out = String::new();
    writeln!(out, "nodes:")?;
    let mut statuses = std::collections::HashMap::new();
    for (id, m) in &members {
        let is_live = live.contains_key(id);
        writeln!(
            out,
            "  node {id}  {}  {}",
            m.rpc_addr,
            if is_live { "live" } else { "down" }
        )?;
        if is_live {
            if let Ok(s) = client.node_status(*id, vec![]).await {
                statuses.insert(*id, s);
            }
        }
    }
    let mut tables = meta.tables().await?;
    tables.sort_by_key(|(t, _)| t.db_index);
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
                .replicas
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
                .replicas
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
