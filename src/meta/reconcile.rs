//! Reconcile, don't trust events: a node compares the replicas it hosts with
//! what etcd assigns to it and closes the gap, on start and after every change
//! it sees. [`plan`] is the pure decision; [`run`] drives it.
//!
//! A node listed in a shard's `learners` (the target of a replica move) gets
//! an *uninitialized* replica that the group's leader then fills; a replica
//! whose node is no longer listed (a finished move away, a dropped table) is
//! stopped and its data deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use openraft::BasicNode;

use super::descriptor::{TableDescriptor, TableState};
use super::etcd::{MemberInfo, Meta, PrefixState};
use super::MetaError;
use crate::shard::host::{Host, ReplicaRecord};

/// A replica this node should host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub record: ReplicaRecord,
    /// Every replica of the group (its initial membership).
    pub members: Vec<u64>,
    /// This node initializes the group (first replica in the descriptor).
    pub initializer: bool,
}

/// What node `me` should create and delete, given every table and what it
/// hosts now. Tables being deleted are not wanted; anything hosted that no
/// table assigns to `me` is deleted.
pub fn plan(me: u64, tables: &[TableDescriptor], hosted: &[u64]) -> (Vec<Wanted>, Vec<u64>) {
    let mut wanted = Vec::new();
    for t in tables {
        if t.state == TableState::Deleting {
            continue;
        }
        for (i, s) in t.shards.iter().enumerate() {
            if s.replicas.contains(&me) || s.learners.contains(&me) {
                wanted.push(Wanted {
                    record: ReplicaRecord {
                        group_id: s.group_id,
                        table: t.name.clone(),
                        shard: i as u32,
                    },
                    members: s.replicas.clone(),
                    // Only a group that was never initialized may be: once a
                    // table is available every group has its membership, and a
                    // replica added by a move must wait for the leader to
                    // reach it (initializing it would start a second group).
                    initializer: t.state == TableState::Creating && s.replicas.first() == Some(&me),
                });
            }
        }
    }
    let keep: BTreeSet<u64> = wanted.iter().map(|w| w.record.group_id).collect();
    let remove = hosted
        .iter()
        .copied()
        .filter(|g| !keep.contains(g))
        .collect();
    (wanted, remove)
}

/// Follow tables and members in etcd and keep `host` in line with them.
pub async fn run(meta: Meta, host: Arc<Host>) -> Result<(), MetaError> {
    let mut tables = meta.follow("tables/").await?;
    let mut members = meta.follow("members/").await?;
    loop {
        let member_map = member_addrs(&members.borrow_and_update());
        for (id, addr) in &member_map {
            host.transport.set_peer(*id, addr.clone());
        }
        let state = tables.borrow_and_update().clone();
        reconcile_once(&host, &state, &member_map).await;
        tokio::select! {
            r = tables.changed() => if r.is_err() { return Ok(()) },
            r = members.changed() => if r.is_err() { return Ok(()) },
        }
    }
}

fn member_addrs(state: &PrefixState) -> BTreeMap<u64, String> {
    state
        .decoded::<MemberInfo>()
        .into_iter()
        .map(|(_, m, _)| (m.id, m.rpc_addr))
        .collect()
}

async fn reconcile_once(host: &Host, state: &PrefixState, addrs: &BTreeMap<u64, String>) {
    let tables: Vec<TableDescriptor> = state
        .decoded::<TableDescriptor>()
        .into_iter()
        .map(|(_, t, _)| t)
        .collect();
    let (wanted, remove) = plan(host.node_id, &tables, &host.group_ids());
    for w in wanted {
        let members = w
            .members
            .iter()
            .map(|id| {
                let addr = addrs.get(id).cloned().unwrap_or_default();
                (*id, BasicNode { addr })
            })
            .collect();
        let gid = w.record.group_id;
        if let Err(e) = host.ensure(w.record, members, w.initializer).await {
            tracing::error!(group = gid, "cannot create replica: {e}");
        }
    }
    for gid in remove {
        if let Err(e) = host.remove(gid).await {
            tracing::error!(group = gid, "cannot remove replica: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::descriptor::ShardDescriptor;

    fn table(name: &str, state: TableState, shards: Vec<(u64, Vec<u64>)>) -> TableDescriptor {
        TableDescriptor {
            name: name.into(),
            table_id: 1,
            db_index: 0,
            state,
            replicas: 3,
            shards: shards
                .into_iter()
                .map(|(group_id, replicas)| ShardDescriptor {
                    group_id,
                    slots: [0, 16383],
                    replicas,
                    learners: vec![],
                    moving: None,
                })
                .collect(),
            created_at: 0,
        }
    }

    #[test]
    fn creates_assigned_and_removes_the_rest() {
        let tables = vec![
            table(
                "a",
                TableState::Creating,
                vec![(1, vec![1, 2, 3]), (2, vec![2, 3, 4])],
            ),
            table("b", TableState::Creating, vec![(5, vec![3, 1, 2])]),
            table("gone", TableState::Deleting, vec![(9, vec![1, 2, 3])]),
        ];
        let (wanted, remove) = plan(1, &tables, &[1, 7, 9]);
        let ids: Vec<u64> = wanted.iter().map(|w| w.record.group_id).collect();
        assert_eq!(ids, vec![1, 5]);
        assert!(wanted[0].initializer);
        assert!(!wanted[1].initializer);
        assert_eq!(wanted[1].record.table, "b");
        assert_eq!(remove, vec![7, 9]);
    }

    #[test]
    fn learners_get_uninitialized_replicas_and_available_groups_are_never_initialized() {
        let mut t = table("a", TableState::Available, vec![(1, vec![1, 2, 3])]);
        t.shards[0].learners = vec![4];
        let (wanted, remove) = plan(4, std::slice::from_ref(&t), &[]);
        assert_eq!(wanted.len(), 1);
        assert!(!wanted[0].initializer);
        assert!(remove.is_empty());
        let (wanted, _) = plan(1, std::slice::from_ref(&t), &[1]);
        assert!(!wanted[0].initializer, "an available table's group exists");
        // The move finished: 1 is no longer listed and deletes its replica.
        t.shards[0].replicas = vec![4, 2, 3];
        t.shards[0].learners.clear();
        let (wanted, remove) = plan(1, &[t], &[1]);
        assert!(wanted.is_empty());
        assert_eq!(remove, vec![1]);
    }

    #[test]
    fn empty_metadata_removes_everything() {
        let (wanted, remove) = plan(4, &[], &[3, 4]);
        assert!(wanted.is_empty());
        assert_eq!(remove, vec![3, 4]);
    }
}
