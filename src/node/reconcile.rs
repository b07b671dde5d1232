//! Reconcile, don't trust events: a node compares the replicas it hosts with
//! what etcd assigns to it and closes the gap, on start, after every change
//! it sees, and every few seconds. [`plan`] is the pure decision; [`run`]
//! drives it.
//!
//! Creating is cheap to get wrong; deleting is not. **Data is deleted only
//! on positive evidence**, and there are exactly two kinds
//! (docs/RELIABILITY.md, "What deletes data"):
//!
//! 1. the drop of the replica's table is recorded: its descriptor is in
//!    state `deleting`, or a `tombstones/<group_id>` record exists (written
//!    by TABLE.DROP together with `deleting`, and outliving the descriptor);
//! 2. the group's own Raft membership no longer holds this node (a finished
//!    move or drain): the descriptor no longer lists the node *and* either
//!    the replica's applied membership or the group's leader says so. A
//!    replica that was never initialized holds nothing and may go too.
//!
//! Nothing else deletes: a missing descriptor, an undecodable one, an empty
//! prefix, or a watch that reloaded an empty view leave the replica in place,
//! still serving where it can. Such a replica is *kept*: logged once as an
//! error and shown as `orphaned (kept)` by `shoal status` and `INFO cluster`;
//! when its descriptor returns it is simply in use again.
//!
//! A node listed in a shard's `learners` (the target of a replica move) gets
//! an *uninitialized* replica that the group's leader then fills.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;

use crate::meta::descriptor::{TableDescriptor, TableState};
use crate::meta::etcd::{ClusterRecord, MemberInfo, Meta, PrefixState, Tombstone};
use crate::meta::MetaError;
use crate::proto::shard_service_client::ShardServiceClient;
use crate::proto::StatusRequest;
use crate::shard::host::{Host, ReplicaRecord};
use crate::shard::status::NodeStatus;

/// How often the reconciler looks again without a change in etcd (replicas
/// waiting for membership evidence, tombstones to confirm).
const RECHECK: Duration = Duration::from_secs(3);

/// A replica this node should host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub record: ReplicaRecord,
    /// Every replica of the group (its initial membership).
    pub members: Vec<u64>,
    /// This node initializes the group (first replica in the descriptor).
    pub initializer: bool,
}

/// What etcd says, as the reconciler sees it.
#[derive(Debug, Clone, Default)]
pub struct MetaView {
    pub tables: Vec<TableDescriptor>,
    /// Table records that do not decode: name -> error. Changes to these
    /// tables stop until they are readable again.
    pub unreadable_tables: BTreeMap<String, String>,
    pub tombstones: BTreeMap<u64, Tombstone>,
    /// Tombstone keys that do not decode: group id (if the key names one)
    /// -> error.
    pub unreadable_tombstones: BTreeMap<String, String>,
}

/// What node `me` should do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Replicas to create (or make sure of).
    pub create: Vec<Wanted>,
    /// Delete now: the drop of the table is recorded (evidence 1).
    pub drop: Vec<(u64, String)>,
    /// The descriptor lists other nodes for the group: delete once the
    /// group's membership confirms this node left (evidence 2). With the
    /// nodes to ask.
    pub moved: Vec<(u64, Vec<u64>)>,
    /// Hosted but named by no record, or by an unreadable one: kept, with
    /// why.
    pub kept: Vec<(u64, String)>,
    /// Tombstones that list this node for a group it does not host:
    /// confirm them.
    pub confirm: Vec<u64>,
}

/// The pure decision for node `me`, given what etcd says and the replicas
/// it hosts.
pub fn plan(me: u64, view: &MetaView, hosted: &[ReplicaRecord]) -> Plan {
    let mut p = Plan::default();
    // Where each group is named, by a table that is not being dropped.
    let mut named: BTreeMap<u64, (&TableDescriptor, usize)> = BTreeMap::new();
    let mut dropping: BTreeSet<u64> = view.tombstones.keys().copied().collect();
    for t in &view.tables {
        for (i, s) in t.shards.iter().enumerate() {
            if t.state == TableState::Deleting {
                dropping.insert(s.group_id);
            } else {
                named.insert(s.group_id, (t, i));
            }
        }
    }
    let frozen_gids: BTreeSet<u64> = view
        .unreadable_tombstones
        .keys()
        .filter_map(|k| k.parse().ok())
        .collect();
    for (&gid, &(t, i)) in &named {
        let s = &t.shards[i];
        if dropping.contains(&gid) || frozen_gids.contains(&gid) {
            continue;
        }
        if s.replicas.contains(&me) || s.learners.contains(&me) {
            let joining = s.learners.contains(&me) || s.moving.as_ref().is_some_and(|m| m.to == me);
            p.create.push(Wanted {
                record: ReplicaRecord {
                    group_id: gid,
                    table: t.name.clone(),
                    shard: i as u32,
                    engine: t.engine,
                    // A batch replica starts with the group's first voters,
                    // unless a move adds it: then it starts with none and
                    // gets the group's configuration with its data by
                    // snapshot (`batch::node`, `Group::drop_first`).
                    voters: if t.engine.is_openraft() || joining {
                        Vec::new()
                    } else {
                        s.replicas.clone()
                    },
                },
                members: s.replicas.clone(),
                // Only a group that was never initialized may be: once a
                // table is available every group has its membership, and a
                // replica added by a move must wait for the leader to reach
                // it (initializing it would start a second group).
                initializer: t.state == TableState::Creating && s.replicas.first() == Some(&me),
            });
        }
    }
    let hosted_ids: BTreeSet<u64> = hosted.iter().map(|r| r.group_id).collect();
    for r in hosted {
        let gid = r.group_id;
        if frozen_gids.contains(&gid) {
            p.kept.push((
                gid,
                format!(
                    "its tombstone record is unreadable ({})",
                    view.unreadable_tombstones[&gid.to_string()]
                ),
            ));
        } else if dropping.contains(&gid) {
            p.drop
                .push((gid, format!("table '{}' was dropped", r.table)));
        } else if let Some(&(t, i)) = named.get(&gid) {
            let s = &t.shards[i];
            if !s.replicas.contains(&me) && !s.learners.contains(&me) {
                p.moved.push((gid, s.all_nodes()));
            }
        } else if let Some(e) = view.unreadable_tables.get(&r.table) {
            p.kept.push((
                gid,
                format!(
                    "the record of table '{}' is unreadable ({e}); changes to it are stopped",
                    r.table
                ),
            ));
        } else if view.tables.iter().any(|t| t.name == r.table) {
            p.kept.push((
                gid,
                format!(
                    "table '{}' exists but no shard of it names group {gid}, and no tombstone does",
                    r.table
                ),
            ));
        } else {
            p.kept.push((
                gid,
                format!(
                    "no table record named '{}' and no tombstone for group {gid}",
                    r.table
                ),
            ));
        }
    }
    for (gid, t) in &view.tombstones {
        if t.nodes.contains(&me) && !hosted_ids.contains(gid) {
            p.confirm.push(*gid);
        }
    }
    p
}

/// The reconciler's view of etcd from its watches.
fn meta_view(tables: &PrefixState, tombstones: &PrefixState) -> MetaView {
    let (ok, unreadable_tables) = tables.decode_all::<TableDescriptor>();
    let (ts, unreadable_tombstones) = tombstones.decode_all::<Tombstone>();
    MetaView {
        tables: ok.into_iter().map(|(_, t, _)| t).collect(),
        unreadable_tables,
        tombstones: ts.into_iter().map(|(_, t, _)| (t.group_id, t)).collect(),
        unreadable_tombstones,
    }
}

/// Follow tables, tombstones, members and the cluster record in etcd and
/// keep `host` in line with them. `cluster` is the record this node started
/// with: while etcd's record differs (deleted, or replaced by a wiped and
/// recreated prefix), nothing is created or deleted.
pub async fn run(meta: Meta, host: Arc<Host>, cluster: ClusterRecord) -> Result<(), MetaError> {
    let mut tables = meta.follow("tables/").await?;
    let mut tombstones = meta.follow("tombstones/").await?;
    let mut members = meta.follow("members/").await?;
    let mut record = meta.follow("cluster").await?;
    let mut reported = Reported::default();
    let mut frozen_logged = false;
    loop {
        let member_map = member_addrs(&members.borrow_and_update());
        for (id, addr) in &member_map {
            host.transport.set_peer(*id, addr.clone());
        }
        let current = record
            .borrow_and_update()
            .entries
            // `follow` strips the watched key itself: the record is at "".
            .get("")
            .map(|(v, _)| serde_json::from_slice::<ClusterRecord>(v));
        match current {
            Some(Ok(r)) if r.id == cluster.id => {
                if frozen_logged {
                    tracing::info!("the cluster record is back: reconciling again");
                }
                frozen_logged = false;
                let view = meta_view(&tables.borrow_and_update(), &tombstones.borrow_and_update());
                reconcile_once(&meta, &host, &view, &member_map, &mut reported).await;
            }
            other => {
                if !frozen_logged {
                    let what = match other {
                        None => "is missing".to_string(),
                        Some(Err(e)) => format!("is unreadable ({e})"),
                        Some(Ok(r)) => format!("now names another cluster (id {})", r.id),
                    };
                    tracing::error!(
                        cluster = %cluster.name,
                        id = %cluster.id,
                        "the cluster record {}{what}: this node creates and deletes no replica until it is restored",
                        meta.key("cluster"),
                    );
                    frozen_logged = true;
                }
                host.set_kept(
                    host.group_ids()
                        .into_iter()
                        .map(|g| {
                            (
                                g,
                                "the cluster record in etcd is missing or changed".to_string(),
                            )
                        })
                        .collect(),
                );
            }
        }
        tokio::select! {
            r = tables.changed() => if r.is_err() { return Ok(()) },
            r = tombstones.changed() => if r.is_err() { return Ok(()) },
            r = members.changed() => if r.is_err() { return Ok(()) },
            r = record.changed() => if r.is_err() { return Ok(()) },
            _ = tokio::time::sleep(RECHECK) => {}
        }
    }
}

/// Ask the group's other replicas (`peers`) for its status: evidence that
/// this node left the group is its leader's settled membership without it.
async fn leader_says_left(host: &Host, gid: u64, peers: &[u64]) -> Option<String> {
    let me = host.node_id;
    for &peer in peers.iter().filter(|p| **p != me) {
        let Some(addr) = host.transport.peer_addr(peer) else {
            continue;
        };
        let Ok(channel) = host.transport.channel(&addr) else {
            continue;
        };
        let mut client = ShardServiceClient::new(channel);
        let ask = client.status(StatusRequest {
            group_ids: vec![gid],
        });
        let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(2), ask).await else {
            continue;
        };
        let Ok(status) = serde_json::from_slice::<NodeStatus>(&reply.into_inner().json) else {
            continue;
        };
        for g in status.groups.iter().filter(|g| g.group_id == gid) {
            if g.role == "leader"
                && !g.joint
                && !g.voters.is_empty()
                && !g.voters.contains(&me)
                && !g.learners.contains(&me)
            {
                return Some(format!(
                    "the group's leader, node {peer}, has voters {:?} without this node",
                    g.voters
                ));
            }
        }
    }
    None
}

/// What was logged already, so each problem is logged once (again only when
/// it changes).
#[derive(Default)]
struct Reported {
    groups: BTreeMap<u64, String>,
    tables: BTreeMap<String, String>,
}

fn member_addrs(state: &PrefixState) -> BTreeMap<u64, String> {
    state
        .decoded::<MemberInfo>()
        .into_iter()
        .map(|(_, m, _)| (m.id, m.rpc_addr))
        .collect()
}

async fn reconcile_once(
    meta: &Meta,
    host: &Host,
    view: &MetaView,
    addrs: &BTreeMap<u64, String>,
    reported: &mut Reported,
) {
    let hosted: Vec<ReplicaRecord> = host.replicas().iter().map(|r| r.record.clone()).collect();
    let p = plan(host.node_id, view, &hosted);
    for (table, e) in &view.unreadable_tables {
        if reported.tables.get(table) != Some(e) {
            tracing::error!(table = %table, "table record is unreadable: {e}; no replica of it is created or deleted until it is fixed");
        }
    }
    reported.tables = view.unreadable_tables.clone();
    for w in p.create {
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
    for (gid, why) in &p.drop {
        tracing::info!(group = gid, "deleting replica: {why}");
        match host.remove(*gid).await {
            Ok(()) => {
                if view
                    .tombstones
                    .get(gid)
                    .is_some_and(|t| t.nodes.contains(&host.node_id))
                {
                    if let Err(e) = meta.ack_tombstone(*gid, host.node_id).await {
                        tracing::warn!(group = gid, "cannot confirm tombstone: {e}");
                    }
                }
            }
            Err(e) => tracing::error!(group = gid, "cannot remove replica: {e}"),
        }
    }
    for gid in &p.confirm {
        if let Err(e) = meta.ack_tombstone(*gid, host.node_id).await {
            tracing::warn!(group = gid, "cannot confirm tombstone: {e}");
        }
    }
    for (gid, peers) in &p.moved {
        let evidence = match host.left_group_locally(*gid).await {
            Some(e) => Some(e),
            None => leader_says_left(host, *gid, peers).await,
        };
        match evidence {
            Some(evidence) => {
                tracing::info!(group = gid, "deleting replica: this node left the group ({evidence})");
                if let Err(e) = host.remove(*gid).await {
                    tracing::error!(group = gid, "cannot remove replica: {e}");
                }
            }
            None => tracing::debug!(
                group = gid,
                "the descriptor no longer lists this node, but the group's membership does not confirm it yet: kept"
            ),
        }
    }
    let kept: BTreeMap<u64, String> = p.kept.into_iter().collect();
    for (gid, why) in &kept {
        if reported.groups.get(gid) != Some(why) {
            let table = hosted
                .iter()
                .find(|r| r.group_id == *gid)
                .map_or(String::new(), |r| r.table.clone());
            tracing::error!(group = gid, table = %table, "replica orphaned (kept, not deleted): {why}");
        }
    }
    reported.groups = kept.clone();
    host.set_kept(kept);
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
            engine: Default::default(),
        }
    }

    fn rec(gid: u64, table: &str) -> ReplicaRecord {
        ReplicaRecord {
            group_id: gid,
            table: table.into(),
            shard: 0,
            engine: Default::default(),
            voters: Vec::new(),
        }
    }

    fn view(tables: Vec<TableDescriptor>) -> MetaView {
        MetaView {
            tables,
            ..MetaView::default()
        }
    }

    fn ids(v: &[(u64, String)]) -> Vec<u64> {
        v.iter().map(|(g, _)| *g).collect()
    }

    #[test]
    fn creates_assigned_drops_dropped_and_keeps_the_unnamed() {
        let tables = vec![
            table(
                "a",
                TableState::Creating,
                vec![(1, vec![1, 2, 3]), (2, vec![2, 3, 4])],
            ),
            table("b", TableState::Creating, vec![(5, vec![3, 1, 2])]),
            table("gone", TableState::Deleting, vec![(9, vec![1, 2, 3])]),
        ];
        let hosted = [rec(1, "a"), rec(7, "x"), rec(9, "gone")];
        let p = plan(1, &view(tables), &hosted);
        let created: Vec<u64> = p.create.iter().map(|w| w.record.group_id).collect();
        assert_eq!(created, vec![1, 5]);
        assert!(p.create[0].initializer);
        assert!(!p.create[1].initializer);
        assert_eq!(p.create[1].record.table, "b");
        assert_eq!(
            ids(&p.drop),
            vec![9],
            "a table in state deleting is evidence"
        );
        assert_eq!(ids(&p.kept), vec![7], "a group no record names is kept");
        assert!(
            p.kept[0].1.contains("no table record named 'x'"),
            "{:?}",
            p.kept
        );
        assert!(p.moved.is_empty());
    }

    #[test]
    fn an_empty_view_deletes_nothing() {
        // An etcd restored empty, a mistyped prefix, a watch that reloaded
        // nothing: every replica is kept.
        let p = plan(
            4,
            &MetaView::default(),
            &[rec(3, "default"), rec(4, "default")],
        );
        assert!(p.drop.is_empty() && p.moved.is_empty() && p.create.is_empty());
        assert_eq!(ids(&p.kept), vec![3, 4]);
    }

    #[test]
    fn an_unreadable_descriptor_freezes_its_table() {
        let mut v = MetaView::default();
        v.unreadable_tables
            .insert("default".into(), "expected value at line 1".into());
        let p = plan(1, &v, &[rec(3, "default")]);
        assert!(p.drop.is_empty());
        assert_eq!(ids(&p.kept), vec![3]);
        assert!(p.kept[0].1.contains("unreadable"), "{:?}", p.kept);
        // An unreadable tombstone freezes its group even if a table names it.
        let mut v = view(vec![table("t", TableState::Available, vec![(3, vec![1])])]);
        v.unreadable_tombstones.insert("3".into(), "bad".into());
        let p = plan(1, &v, &[rec(3, "t")]);
        assert!(p.create.is_empty() && p.drop.is_empty());
        assert_eq!(ids(&p.kept), vec![3]);
    }

    #[test]
    fn a_tombstone_outlives_the_descriptor_and_is_confirmed() {
        let mut v = MetaView::default();
        v.tombstones.insert(
            6,
            Tombstone {
                group_id: 6,
                table: "t".into(),
                table_id: 2,
                nodes: vec![1, 2, 3],
                dropped_at: 0,
            },
        );
        let p = plan(1, &v, &[rec(6, "t")]);
        assert_eq!(ids(&p.drop), vec![6]);
        assert!(p.confirm.is_empty(), "confirmed after the removal");
        let p = plan(2, &v, &[]);
        assert_eq!(p.confirm, vec![6], "holds nothing: confirm at once");
        let p = plan(5, &v, &[]);
        assert!(p.confirm.is_empty(), "not on the tombstone");
    }

    #[test]
    fn learners_get_uninitialized_replicas_and_a_finished_move_needs_membership_evidence() {
        let mut t = table("a", TableState::Available, vec![(1, vec![1, 2, 3])]);
        t.shards[0].learners = vec![4];
        let p = plan(4, &view(vec![t.clone()]), &[]);
        assert_eq!(p.create.len(), 1);
        assert!(!p.create[0].initializer);
        let p = plan(1, &view(vec![t.clone()]), &[rec(1, "a")]);
        assert!(
            !p.create[0].initializer,
            "an available table's group exists"
        );
        // The move finished: 1 is no longer listed. It is not dropped on the
        // descriptor's word: the group's membership must confirm.
        t.shards[0].replicas = vec![4, 2, 3];
        t.shards[0].learners.clear();
        let p = plan(1, &view(vec![t]), &[rec(1, "a")]);
        assert!(p.create.is_empty() && p.drop.is_empty() && p.kept.is_empty());
        assert_eq!(p.moved, vec![(1, vec![4, 2, 3])]);
    }

    /// A batch replica starts with the shard's voters as its group's first
    /// configuration, unless a move adds it: then with none, to be given
    /// the group by snapshot.
    #[test]
    fn a_batch_replica_a_move_adds_starts_with_no_voters() {
        let mut t = table("a", TableState::Available, vec![(1, vec![1, 2, 3])]);
        t.engine = crate::config::RaftEngine::Batch;
        let p = plan(2, &view(vec![t.clone()]), &[]);
        assert_eq!(p.create[0].record.voters, vec![1, 2, 3]);
        t.shards[0].learners = vec![4];
        t.shards[0].moving = Some(crate::meta::descriptor::ShardMove {
            to: 4,
            from: Some(1),
            reason: "balance".into(),
            started_at: 0,
        });
        let p = plan(4, &view(vec![t.clone()]), &[]);
        assert_eq!(p.create.len(), 1);
        assert!(p.create[0].record.voters.is_empty());
        // Named among the replicas while the move is still recorded (a
        // descriptor written half way): still joining.
        t.shards[0].replicas = vec![2, 3, 4];
        t.shards[0].learners.clear();
        let p = plan(4, &view(vec![t]), &[]);
        assert!(p.create[0].record.voters.is_empty());
    }
}
