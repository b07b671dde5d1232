//! The rebalancer: carries out the moves the pure planner
//! (`meta::placement`) asks for, one membership step at a time, with every
//! step recorded in the table descriptor so that any router can finish or
//! undo a move another one started.
//!
//! **One at a time.** Every router runs [`run`], but only the holder of the
//! etcd lease `elect/rebalancer` acts; each of its descriptor writes is a
//! compare-and-swap on the record's revision *and* on the election key's
//! value, so a rebalancer that lost its lease (paused, partitioned) cannot
//! write anything. Routers are the natural home: they are stateless, there
//! is always one when clients are served, and they already do table admin.
//!
//! **A move** of shard `s` from node `O` to node `N` (`O` absent when only
//! adding), each step idempotent and recognisable from etcd plus the
//! group's actual membership (asked of its leader with `Status`):
//!
//! 1. *record*: `moving = {to: N, from: O}`, `learners += N` (CAS). N's
//!    reconciler creates an uninitialized replica; routers keep routing to
//!    `replicas`.
//! 2. *add learner*: the leader runs `add_learner(N)`; N catches up by
//!    snapshot and log. Skipped when N already is a member.
//! 3. *promote*: once N's matched index is within [`CAUGHT_UP_LAG`] of the
//!    leader's log, `change_membership(voters = replicas - O + N)`; openraft
//!    goes through a joint configuration, so a majority of the old *and* of
//!    the new voters acknowledges every entry meanwhile: the shard never has
//!    fewer voters than its replica count, never loses its majority.
//! 4. *finish*: once the leader reports exactly the target voters (not
//!    joint), `replicas = target`, `learners -= N`, `moving = None` (CAS).
//!    O's reconciler then deletes its replica and its data.
//!
//! A rebalancer that dies anywhere leaves `moving` set; the next one reads
//! the group's membership and continues from the step it finds. If N is no
//! longer active before it became a voter (it died, is draining), the move
//! is undone instead: the learner is removed from the group, then from the
//! descriptor.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::client::ShardClient;
use super::ClusterError;
use crate::clock::now_ms;
use crate::meta::descriptor::{ShardDescriptor, ShardMove, TableDescriptor, TableState};
use crate::meta::etcd::{Leadership, MemberState, Meta};
use crate::meta::leaders;
use crate::meta::placement::{self, Health};
use crate::shard::host::MembershipChange;
use crate::shard::status::GroupStatus;

/// A learner this close (in log entries) to the leader's last entry is
/// promoted: the joint configuration then commits without waiting for it to
/// fetch much.
pub const CAUGHT_UP_LAG: u64 = 64;

/// Lease of the rebalancer election (seconds): a dead rebalancer is replaced
/// after about this long.
const ELECTION_TTL_S: i64 = 3;

#[derive(Debug, Clone)]
pub struct RebalanceConfig {
    /// How often the elected rebalancer looks at the cluster.
    pub interval: Duration,
    /// A node not live for this long is dead: its replicas are re-created.
    pub repair_after: Duration,
    /// Moves touching one node at once.
    pub max_moves_per_node: usize,
    /// How often the elected rebalancer balances shard leaders across
    /// nodes (`meta::leaders`); zero: never.
    pub leader_balance_interval: Duration,
}

/// Leadership transfers asked for in one round of leader balance.
const TRANSFERS_PER_ROUND: usize = 16;

/// A group whose leadership was just moved is not moved again for this
/// long: the statuses that led to it may still be catching up.
const TRANSFER_COOLDOWN: Duration = Duration::from_secs(10);

/// What leader balance remembers between rounds.
#[derive(Default)]
struct LeaderBalance {
    last: Option<Instant>,
    moved: HashMap<u64, Instant>,
}

/// Health of every member as of now. `down_since` remembers when each
/// non-live member was first seen down by this process (a new rebalancer
/// starts counting afresh: it may repair later, never earlier).
fn health_of(
    members: &BTreeMap<u64, crate::meta::etcd::MemberInfo>,
    live: &BTreeSet<u64>,
    down_since: &mut HashMap<u64, Instant>,
    repair_after: Duration,
) -> BTreeMap<u64, Health> {
    let mut out = BTreeMap::new();
    for (id, m) in members {
        let h = if m.state == MemberState::Removed {
            Health::Removed
        } else if live.contains(id) {
            down_since.remove(id);
            if m.state == MemberState::Draining {
                Health::Draining
            } else {
                Health::Active
            }
        } else {
            let since = *down_since.entry(*id).or_insert_with(Instant::now);
            if since.elapsed() >= repair_after {
                Health::Dead
            } else {
                Health::Down
            }
        };
        out.insert(*id, h);
    }
    out
}

/// Health without memory of how long nodes have been down (for drain checks).
pub async fn current_health(meta: &Meta) -> Result<BTreeMap<u64, Health>, ClusterError> {
    let members = meta.members().await?;
    let live: BTreeSet<u64> = meta.live_nodes().await?.keys().copied().collect();
    Ok(health_of(
        &members,
        &live,
        &mut HashMap::new(),
        Duration::from_secs(u64::MAX / 4),
    ))
}

/// Start draining node `id` (refusing when the other active nodes cannot
/// hold every table's replica count). The rebalancer moves its replicas off
/// and then marks it `removed`.
pub async fn drain(meta: &Meta, id: u64) -> Result<(), ClusterError> {
    let health = current_health(meta).await?;
    if health.get(&id) == Some(&Health::Draining) {
        return Ok(());
    }
    let tables: Vec<TableDescriptor> = meta.tables().await?.into_iter().map(|(t, _)| t).collect();
    placement::check_drain(&tables, &health, id).map_err(ClusterError::Invalid)?;
    meta.set_member_state(id, MemberState::Draining).await?;
    tracing::info!(
        node = id,
        "drain started: its replicas will move to other nodes"
    );
    Ok(())
}

/// Replicas (voting or being added) each node holds according to etcd.
pub fn replicas_per_node(tables: &[TableDescriptor]) -> BTreeMap<u64, usize> {
    let mut out = BTreeMap::new();
    for t in tables {
        for s in &t.shards {
            for n in s.all_nodes() {
                *out.entry(n).or_insert(0) += 1;
            }
        }
    }
    out
}

/// Every router runs this: campaign for the rebalancer duty, and while it is
/// held, plan and drive moves.
pub async fn run(meta: Meta, client: Arc<ShardClient>, config: RebalanceConfig, me: String) {
    loop {
        match meta.campaign("rebalancer", &me, ELECTION_TTL_S).await {
            Ok(Some(leadership)) => {
                tracing::info!(rebalancer = %me, "elected rebalancer");
                let leadership = Arc::new(leadership);
                lead(&meta, &client, &config, &leadership).await;
                tracing::warn!(rebalancer = %me, "rebalancer duty lost");
            }
            Ok(None) => {}
            Err(e) => tracing::debug!("rebalancer election: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

type SharedHealth = Arc<Mutex<BTreeMap<u64, Health>>>;

async fn lead(
    meta: &Meta,
    client: &Arc<ShardClient>,
    config: &RebalanceConfig,
    leadership: &Arc<Leadership>,
) {
    let mut down_since = HashMap::new();
    let health: SharedHealth = Arc::default();
    let mut drivers: HashMap<u64, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut leaders = LeaderBalance::default();
    while !leadership.is_lost() {
        if let Err(e) = tick(
            meta,
            client,
            config,
            leadership,
            &mut down_since,
            &health,
            &mut drivers,
            &mut leaders,
        )
        .await
        {
            tracing::warn!("rebalancer: {e}");
        }
        tokio::time::sleep(config.interval).await;
    }
    for (_, d) in drivers {
        d.abort();
    }
}

#[allow(clippy::too_many_arguments)]
async fn tick(
    meta: &Meta,
    client: &Arc<ShardClient>,
    config: &RebalanceConfig,
    leadership: &Arc<Leadership>,
    down_since: &mut HashMap<u64, Instant>,
    health: &SharedHealth,
    drivers: &mut HashMap<u64, tokio::task::JoinHandle<()>>,
    leaders: &mut LeaderBalance,
) -> Result<(), ClusterError> {
    let members = meta.members().await?;
    let live: BTreeSet<u64> = meta.live_nodes().await?.keys().copied().collect();
    let h = health_of(&members, &live, down_since, config.repair_after);
    *health.lock().unwrap_or_else(|e| e.into_inner()) = h.clone();
    let tables: Vec<(TableDescriptor, i64)> = meta.tables().await?;
    let descs: Vec<TableDescriptor> = tables.iter().map(|(t, _)| t.clone()).collect();

    // Drive every move in flight (started by us or by a predecessor).
    drivers.retain(|_, d| !d.is_finished());
    for t in &descs {
        for s in &t.shards {
            if s.moving.is_some() && !drivers.contains_key(&s.group_id) {
                let task = drive(
                    meta.clone(),
                    client.clone(),
                    leadership.clone(),
                    health.clone(),
                    t.name.clone(),
                    s.group_id,
                );
                drivers.insert(s.group_id, tokio::spawn(task));
            }
        }
    }

    // A draining node that holds nothing any more is removed.
    let held = replicas_per_node(&descs);
    let moving_from: BTreeSet<u64> = descs
        .iter()
        .flat_map(|t| &t.shards)
        .filter_map(|s| s.moving.as_ref().and_then(|m| m.from))
        .collect();
    for (id, m) in &members {
        if m.state == MemberState::Draining
            && held.get(id).copied().unwrap_or(0) == 0
            && !moving_from.contains(id)
        {
            meta.set_member_state(*id, MemberState::Removed).await?;
            tracing::info!(
                node = id,
                "drain finished: node holds no replica and is removed"
            );
        }
    }

    // Start new moves.
    let moves = placement::plan(&descs, &h, config.max_moves_per_node);
    // Leaders are balanced only on a settled cluster: no move planned or in
    // flight, no node down, draining or dead.
    let settled = moves.is_empty()
        && descs
            .iter()
            .flat_map(|t| &t.shards)
            .all(|s| s.moving.is_none())
        && h.values()
            .all(|x| matches!(x, Health::Active | Health::Removed));
    let due = !config.leader_balance_interval.is_zero()
        && leaders
            .last
            .is_none_or(|t| t.elapsed() >= config.leader_balance_interval);
    if settled && due {
        leaders.last = Some(Instant::now());
        balance_leaders(client, &descs, &h, leaders).await;
    }
    let mut by_table: BTreeMap<String, Vec<placement::PlannedMove>> = BTreeMap::new();
    for m in moves {
        by_table.entry(m.table.clone()).or_default().push(m);
    }
    for (name, moves) in by_table {
        let Some((mut desc, rev)) = tables.iter().find(|(t, _)| t.name == name).cloned() else {
            continue;
        };
        for m in &moves {
            let s = &mut desc.shards[m.shard];
            s.moving = Some(ShardMove {
                to: m.to,
                from: m.from,
                reason: m.reason.as_str().to_string(),
                started_at: now_ms(),
            });
            if !s.learners.contains(&m.to) {
                s.learners.push(m.to);
            }
        }
        if meta.cas_table_as(&desc, rev, leadership).await? {
            for m in &moves {
                tracing::info!(
                    table = %name,
                    shard = m.shard,
                    group = m.group_id,
                    from = ?m.from,
                    to = m.to,
                    reason = m.reason.as_str(),
                    "replica move started"
                );
            }
        }
    }
    Ok(())
}

/// One round of leader balance: ask every active node which groups it
/// leads, plan (`meta::leaders`), and ask each chosen leader to hand its
/// group over. A transfer that fails leaves the group where it is; the next
/// round looks again.
async fn balance_leaders(
    client: &ShardClient,
    descs: &[TableDescriptor],
    health: &BTreeMap<u64, Health>,
    state: &mut LeaderBalance,
) {
    let eligible: BTreeSet<u64> = health
        .iter()
        .filter(|(_, h)| **h == Health::Active)
        .map(|(n, _)| *n)
        .collect();
    let asks = eligible
        .iter()
        .map(|n| async move { client.node_status(*n, Vec::new()).await });
    let statuses = futures::future::join_all(asks).await;
    // A node that did not answer would count as leading nothing: no plan
    // on a partial view.
    if statuses.iter().any(Result::is_err) {
        return;
    }
    let available: BTreeSet<&str> = descs
        .iter()
        .filter(|t| t.state == TableState::Available)
        .map(|t| t.name.as_str())
        .collect();
    // Each group's newest leader, as it reports itself.
    let mut led: BTreeMap<u64, (u64, leaders::GroupLead)> = BTreeMap::new();
    for st in statuses.into_iter().flatten() {
        for g in st.groups {
            let settled = !g.joint && g.learners.is_empty() && g.stopped.is_none();
            if g.role != "leader" || !settled || !available.contains(g.table.as_str()) {
                continue;
            }
            if led
                .get(&g.group_id)
                .is_some_and(|(term, _)| *term >= g.term)
            {
                continue;
            }
            let ready = g
                .replication
                .iter()
                .filter(|(n, matched)| {
                    g.voters.contains(n) && matched + CAUGHT_UP_LAG >= g.last_log_index
                })
                .map(|(n, _)| *n)
                .collect();
            let lead = leaders::GroupLead {
                table: g.table,
                group_id: g.group_id,
                leader: st.node_id,
                voters: g.voters,
                ready,
            };
            led.insert(g.group_id, (g.term, lead));
        }
    }
    let groups: Vec<leaders::GroupLead> = led.into_values().map(|(_, g)| g).collect();
    state.moved.retain(|_, at| at.elapsed() < TRANSFER_COOLDOWN);
    let frozen: BTreeSet<u64> = state.moved.keys().copied().collect();
    let plan = leaders::plan(&groups, &eligible, &frozen, TRANSFERS_PER_ROUND);
    let asks = plan.iter().map(|t| async move {
        let r = client
            .change_membership(t.from, t.group_id, &MembershipChange::TransferLeader(t.to))
            .await;
        (t, r)
    });
    for (t, r) in futures::future::join_all(asks).await {
        state.moved.insert(t.group_id, Instant::now());
        let outcome = match r {
            Ok(_) => "started".to_string(),
            Err(e) => format!("not started: {e}"),
        };
        tracing::info!(
            table = %t.table,
            group = t.group_id,
            from = t.from,
            to = t.to,
            "leader balance: leadership transfer {outcome}"
        );
    }
}

/// The group's leader and its status, asked of `nodes`.
pub async fn leader_status(
    client: &ShardClient,
    nodes: &[u64],
    gid: u64,
) -> Option<(u64, GroupStatus)> {
    let asks = nodes
        .iter()
        .map(|n| async move { (*n, client.node_status(*n, vec![gid]).await) });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .filter_map(|(n, st)| {
            let g = st.ok()?.groups.into_iter().find(|g| g.group_id == gid)?;
            (g.role == "leader").then_some((n, g))
        })
        .max_by_key(|(_, g)| g.term)
}

fn shard_of(desc: &TableDescriptor, gid: u64) -> Option<(usize, &ShardDescriptor)> {
    desc.shards
        .iter()
        .enumerate()
        .find(|(_, s)| s.group_id == gid)
}

/// Carry one shard's move to its end (finished or undone).
async fn drive(
    meta: Meta,
    client: Arc<ShardClient>,
    leadership: Arc<Leadership>,
    health: SharedHealth,
    table: String,
    gid: u64,
) {
    let started = Instant::now();
    let mut last_error = String::new();
    loop {
        if leadership.is_lost() {
            return;
        }
        match step(&meta, &client, &leadership, &health, &table, gid).await {
            Ok(Step::Done(outcome)) => {
                tracing::info!(
                    table = %table,
                    group = gid,
                    took_ms = started.elapsed().as_millis() as u64,
                    "replica move {outcome}"
                );
                return;
            }
            Ok(Step::Again) => {}
            Err(e) => {
                let e = e.to_string();
                if e != last_error {
                    tracing::info!(table = %table, group = gid, "replica move waits: {e}");
                    last_error = e;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

enum Step {
    Again,
    Done(&'static str),
}

/// One look at where the move stands, and the next step.
async fn step(
    meta: &Meta,
    client: &ShardClient,
    leadership: &Leadership,
    health: &SharedHealth,
    table: &str,
    gid: u64,
) -> Result<Step, ClusterError> {
    let Some((desc, rev)) = meta.get_table(table).await? else {
        return Ok(Step::Done("abandoned (table dropped)"));
    };
    if desc.state != TableState::Available {
        return Ok(Step::Done("abandoned (table not available)"));
    }
    let Some((_, shard)) = shard_of(&desc, gid) else {
        return Ok(Step::Done("abandoned (shard gone)"));
    };
    let Some(mv) = shard.moving.clone() else {
        return Ok(Step::Done("finished"));
    };
    let target = shard.target_voters();
    let mut ask = shard.all_nodes();
    if let Some(f) = mv.from {
        if !ask.contains(&f) {
            ask.push(f);
        }
    }
    let (leader, st) = leader_status(client, &ask, gid)
        .await
        .ok_or_else(|| ClusterError::TryAgain(format!("group {gid} has no leader")))?;
    let voters: BTreeSet<u64> = st.voters.iter().copied().collect();
    let wanted: BTreeSet<u64> = target.iter().copied().collect();

    // 4. finish: the group already has exactly the target voters.
    if !st.joint && voters == wanted {
        let mut next = desc.clone();
        let s = &mut next.shards[shard_of(&desc, gid).map_or(0, |(i, _)| i)];
        s.replicas = target.clone();
        s.learners.retain(|l| *l != mv.to);
        s.moving = None;
        crate::failpoint::hit("rebalance-before-finish");
        if !meta.cas_table_as(&next, rev, leadership).await? {
            return Ok(Step::Again);
        }
        tracing::info!(
            table = %table,
            group = gid,
            from = ?mv.from,
            to = mv.to,
            reason = %mv.reason,
            "replica moved: voters now {target:?}"
        );
        return Ok(Step::Done("finished"));
    }

    // Undo: the new replica's node is no longer fit and not yet a voter.
    let to_health = health
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&mv.to)
        .copied();
    if to_health != Some(Health::Active) && !voters.contains(&mv.to) && !st.joint {
        if st.learners.contains(&mv.to) {
            client
                .change_membership(leader, gid, &MembershipChange::RemoveLearner(mv.to))
                .await?;
        }
        let mut next = desc.clone();
        let s = &mut next.shards[shard_of(&desc, gid).map_or(0, |(i, _)| i)];
        s.learners.retain(|l| *l != mv.to);
        s.moving = None;
        if !meta.cas_table_as(&next, rev, leadership).await? {
            return Ok(Step::Again);
        }
        tracing::warn!(
            table = %table,
            group = gid,
            to = mv.to,
            "replica move undone: node {} is {:?}",
            mv.to,
            to_health
        );
        return Ok(Step::Done("undone"));
    }

    // 2. add the learner.
    if !voters.contains(&mv.to) && !st.learners.contains(&mv.to) {
        let addr = client
            .routes()
            .addrs
            .get(&mv.to)
            .cloned()
            .ok_or_else(|| ClusterError::TryAgain(format!("node {} has no address", mv.to)))?;
        client
            .change_membership(
                leader,
                gid,
                &MembershipChange::AddLearner { id: mv.to, addr },
            )
            .await?;
        tracing::info!(table = %table, group = gid, to = mv.to, "learner added; catching up");
        crate::failpoint::hit("rebalance-after-learner");
        return Ok(Step::Again);
    }

    // 3. promote once caught up (also finishes a joint configuration).
    let matched = st
        .replication
        .iter()
        .find(|(n, _)| *n == mv.to)
        .map_or(0, |(_, m)| *m);
    if !st.joint && !voters.contains(&mv.to) && matched + CAUGHT_UP_LAG < st.last_log_index {
        return Ok(Step::Again);
    }
    // The leader's matched index may be stale: make sure the new replica
    // answers right now before making it a voter.
    if !voters.contains(&mv.to) {
        let reachable = client
            .node_status(mv.to, vec![gid])
            .await
            .is_ok_and(|s| s.groups.iter().any(|g| g.group_id == gid));
        if !reachable {
            return Err(ClusterError::TryAgain(format!(
                "new replica on node {} does not answer",
                mv.to
            )));
        }
    }
    client
        .change_membership(leader, gid, &MembershipChange::SetVoters(target.clone()))
        .await?;
    tracing::info!(table = %table, group = gid, voters = ?target, "membership changed");
    crate::failpoint::hit("rebalance-after-promote");
    Ok(Step::Again)
}

/// One line per move in progress, with how far the new replica has caught
/// up (`matched/last` log index on the leader): for INFO and `shoal status`.
pub async fn describe_moves(client: &ShardClient, tables: &[TableDescriptor]) -> Vec<String> {
    let mut out = Vec::new();
    for t in tables {
        for (i, s) in t.shards.iter().enumerate() {
            let Some(m) = &s.moving else { continue };
            let (phase, progress) = match leader_status(client, &s.all_nodes(), s.group_id).await {
                Some((_, st)) => {
                    let matched = st
                        .replication
                        .iter()
                        .find(|(n, _)| *n == m.to)
                        .map_or(0, |(_, x)| *x);
                    let phase = if st.joint {
                        "joint"
                    } else if st.voters.contains(&m.to) {
                        "promoted"
                    } else if st.learners.contains(&m.to) {
                        "catching_up"
                    } else {
                        "recorded"
                    };
                    (phase, format!("{matched}/{}", st.last_log_index))
                }
                None => ("no_leader", "?".to_string()),
            };
            out.push(format!(
                "table={},shard={i},group={},from={},to={},reason={},phase={phase},caught_up={progress},age_ms={}",
                t.name,
                s.group_id,
                m.from.map_or("-".to_string(), |f| f.to_string()),
                m.to,
                m.reason,
                now_ms().saturating_sub(m.started_at)
            ));
        }
    }
    out
}
