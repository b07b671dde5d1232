//! Where shard leaders should be: the pure planner behind leader balance.
//! Given which node leads each group and who its voters are, it returns the
//! leadership transfers to ask for; it does no I/O, so it is tested alone
//! and the rebalancer (`cluster::rebalance`) only carries its answers out.
//!
//! Why it matters: a group's leader does most of its work (it proposes,
//! replicates, answers every linearizable read), so a node leading more
//! groups than its share is the cluster's bottleneck and its groups' tail.
//! Elections decide leaders by timing, not by load: a fresh table's
//! leaders land where the first elections were won, and a node that
//! restarts leads nothing until something moves leadership back to it.
//!
//! Rules (the replica planner's, `placement`, applied to leaders):
//! 1. **Per table**: move leadership from the node leading most of the
//!    table's groups to the eligible voter leading fewest, while they
//!    differ by two or more. A table's load follows its groups.
//! 2. **Overall**: the same over all groups, moving only a group whose
//!    table the move does not unbalance (its table count on the source is
//!    above the target's).
//!
//! Only eligible nodes (active and live) receive leadership, and only in
//! groups they are voters of and have nearly all the log of. At most one transfer per group, and at most
//! `max` in all, per plan.

use std::collections::{BTreeMap, BTreeSet};

/// One group's leadership, as its leader reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLead {
    pub table: String,
    pub group_id: u64,
    pub leader: u64,
    pub voters: Vec<u64>,
    /// The voters whose log is close enough to the leader's to take over
    /// now. openraft's transfer waits only an election timeout for the
    /// target's log, and a leader whose transfer failed stops proposing
    /// until its group elects again: only these are asked.
    pub ready: Vec<u64>,
}

/// Ask `from`, the leader of `group_id`, to hand it to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderTransfer {
    pub table: String,
    pub group_id: u64,
    pub from: u64,
    pub to: u64,
}

/// The transfers that bring leaders to within one of each other, per table
/// and overall, among `eligible` nodes; at most `max`. Groups in `frozen`
/// (just moved) count where they are and are not moved.
pub fn plan(
    groups: &[GroupLead],
    eligible: &BTreeSet<u64>,
    frozen: &BTreeSet<u64>,
    max: usize,
) -> Vec<LeaderTransfer> {
    // Where leadership will be once the planned transfers are done.
    let mut lead: BTreeMap<u64, u64> = groups.iter().map(|g| (g.group_id, g.leader)).collect();
    let mut moved: BTreeSet<u64> = frozen.clone();
    let mut out = Vec::new();
    let tables: BTreeSet<&str> = groups.iter().map(|g| g.table.as_str()).collect();
    for table in tables {
        let mine: Vec<&GroupLead> = groups.iter().filter(|g| g.table == table).collect();
        while out.len() < max {
            match next(&mine, &lead, &moved, eligible, groups, false) {
                Some(t) => apply(t, &mut lead, &mut moved, &mut out),
                None => break,
            }
        }
    }
    let all: Vec<&GroupLead> = groups.iter().collect();
    while out.len() < max {
        match next(&all, &lead, &moved, eligible, groups, true) {
            Some(t) => apply(t, &mut lead, &mut moved, &mut out),
            None => break,
        }
    }
    out
}

fn apply(
    t: LeaderTransfer,
    lead: &mut BTreeMap<u64, u64>,
    moved: &mut BTreeSet<u64>,
    out: &mut Vec<LeaderTransfer>,
) {
    lead.insert(t.group_id, t.to);
    moved.insert(t.group_id);
    out.push(t);
}

/// Leaders per eligible node among `set`, counting every eligible node that
/// is a voter of some group of `set` (so a node leading nothing shows as 0).
fn counts(
    set: &[&GroupLead],
    lead: &BTreeMap<u64, u64>,
    eligible: &BTreeSet<u64>,
) -> BTreeMap<u64, usize> {
    let mut c: BTreeMap<u64, usize> = BTreeMap::new();
    for g in set {
        for v in &g.voters {
            if eligible.contains(v) {
                c.entry(*v).or_insert(0);
            }
        }
        if let Some(l) = lead.get(&g.group_id) {
            if eligible.contains(l) {
                *c.entry(*l).or_insert(0) += 1;
            }
        }
    }
    c
}

/// The next transfer within `set`: from the most-loaded node that has a
/// group to give, to that group's least-loaded eligible voter, when they
/// differ by two or more. With `keep_tables` (the overall pass), a group
/// moves only if its own table has more leaders on the source than on the
/// target.
fn next(
    set: &[&GroupLead],
    lead: &BTreeMap<u64, u64>,
    moved: &BTreeSet<u64>,
    eligible: &BTreeSet<u64>,
    groups: &[GroupLead],
    keep_tables: bool,
) -> Option<LeaderTransfer> {
    let c = counts(set, lead, eligible);
    let all: Vec<&GroupLead> = groups.iter().collect();
    let overall = counts(&all, lead, eligible);
    let mut per_table: BTreeMap<&str, BTreeMap<u64, usize>> = BTreeMap::new();
    if keep_tables {
        let mut by_table: BTreeMap<&str, Vec<&GroupLead>> = BTreeMap::new();
        for g in groups {
            by_table.entry(g.table.as_str()).or_default().push(g);
        }
        for (t, gs) in by_table {
            per_table.insert(t, counts(&gs, lead, eligible));
        }
    }
    let mut sources: Vec<(u64, usize)> = c.iter().map(|(n, k)| (*n, *k)).collect();
    // Most leaders first; ties by node id, so a plan is deterministic.
    sources.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (from, have) in sources {
        let mut best: Option<((usize, usize, u64), &GroupLead)> = None;
        for g in set {
            if lead.get(&g.group_id) != Some(&from) || moved.contains(&g.group_id) {
                continue;
            }
            for to in &g.ready {
                let Some(&k) = c.get(to) else { continue };
                if *to == from || k + 2 > have {
                    continue;
                }
                if let Some(t) = per_table.get(g.table.as_str()) {
                    if t.get(&from).copied().unwrap_or(0) <= t.get(to).copied().unwrap_or(0) {
                        continue;
                    }
                }
                // The least-loaded target here, then overall, then by id.
                let key = (k, overall.get(to).copied().unwrap_or(0), *to);
                if best.is_none_or(|(b, _)| key < b) {
                    best = Some((key, g));
                }
            }
        }
        if let Some(((_, _, to), g)) = best {
            return Some(LeaderTransfer {
                table: g.table.clone(),
                group_id: g.group_id,
                from,
                to,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(table: &str, group_id: u64, leader: u64, voters: &[u64]) -> GroupLead {
        GroupLead {
            table: table.into(),
            group_id,
            leader,
            voters: voters.to_vec(),
            ready: voters.to_vec(),
        }
    }

    fn nodes(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    /// Leaders per node once `plan`'s transfers are done.
    fn after(groups: &[GroupLead], plan: &[LeaderTransfer]) -> BTreeMap<u64, usize> {
        let mut lead: BTreeMap<u64, u64> = groups.iter().map(|g| (g.group_id, g.leader)).collect();
        for t in plan {
            assert_eq!(lead[&t.group_id], t.from, "{t:?} moves from its leader");
            let grp = groups.iter().find(|x| x.group_id == t.group_id).unwrap();
            assert!(grp.voters.contains(&t.to), "{t:?} goes to a voter");
            lead.insert(t.group_id, t.to);
        }
        let mut c = BTreeMap::new();
        for l in lead.values() {
            *c.entry(*l).or_insert(0) += 1;
        }
        c
    }

    #[test]
    fn eight_groups_led_five_two_one_end_three_three_two() {
        // What a fresh `shoal dev` cluster showed: node 1 won 5 of 8.
        let v = [1, 2, 3];
        let leaders = [1, 2, 2, 3, 1, 1, 1, 1];
        let groups: Vec<GroupLead> = leaders
            .iter()
            .enumerate()
            .map(|(i, l)| g("default", i as u64 + 1, *l, &v))
            .collect();
        let p = plan(&groups, &nodes(&[1, 2, 3]), &BTreeSet::new(), 16);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p.iter().all(|t| t.from == 1));
        let c = after(&groups, &p);
        assert_eq!(
            c.values().max().unwrap() - c.values().min().unwrap(),
            1,
            "{c:?}"
        );
        // Balanced is left alone.
        let moved: Vec<GroupLead> = groups
            .iter()
            .map(|x| {
                let to = p
                    .iter()
                    .find(|t| t.group_id == x.group_id)
                    .map_or(x.leader, |t| t.to);
                g("default", x.group_id, to, &v)
            })
            .collect();
        assert!(plan(&moved, &nodes(&[1, 2, 3]), &BTreeSet::new(), 16).is_empty());
    }

    #[test]
    fn a_node_back_from_a_restart_gets_its_share() {
        // Node 2 restarted: nodes 1 and 3 lead all six groups.
        let v = [1, 2, 3];
        let groups: Vec<GroupLead> = (1..=6)
            .map(|i| g("t", i, if i % 2 == 0 { 1 } else { 3 }, &v))
            .collect();
        let p = plan(&groups, &nodes(&[1, 2, 3]), &BTreeSet::new(), 16);
        assert!(p.iter().all(|t| t.to == 2), "{p:?}");
        assert_eq!(after(&groups, &p), BTreeMap::from([(1, 2), (2, 2), (3, 2)]));
        // Not while node 2 is not eligible (down, draining).
        assert!(plan(&groups, &nodes(&[1, 3]), &BTreeSet::new(), 16).is_empty());
    }

    #[test]
    fn only_voters_receive_and_at_most_max_transfers() {
        // Five nodes, groups of three: node 5 is a voter of group 1 only.
        let groups = vec![
            g("t", 1, 1, &[1, 2, 5]),
            g("t", 2, 1, &[1, 2, 3]),
            g("t", 3, 1, &[1, 3, 4]),
            g("t", 4, 1, &[1, 2, 4]),
        ];
        let p = plan(&groups, &nodes(&[1, 2, 3, 4, 5]), &BTreeSet::new(), 16);
        let c = after(&groups, &p);
        assert!(c.values().all(|k| *k <= 1), "{c:?} {p:?}");
        assert_eq!(
            plan(&groups, &nodes(&[1, 2, 3, 4, 5]), &BTreeSet::new(), 1).len(),
            1
        );
        assert!(plan(&groups, &nodes(&[1, 2, 3, 4, 5]), &BTreeSet::new(), 0).is_empty());
    }

    #[test]
    fn each_table_is_balanced_not_only_the_sum() {
        // Overall 4/4/4, but table a's groups all on node 1 and table b's
        // on nodes 2 and 3: per table first.
        let v = [1, 2, 3];
        let mut groups = Vec::new();
        for i in 0..4 {
            groups.push(g("a", 10 + i, 1, &v));
            groups.push(g("b", 20 + i, if i < 2 { 2 } else { 3 }, &v));
        }
        for i in 0..4 {
            groups.push(g("c", 30 + i, [2, 3, 1, 1][i as usize], &v));
        }
        let p = plan(&groups, &nodes(&[1, 2, 3]), &BTreeSet::new(), 16);
        let mut lead: BTreeMap<u64, u64> = groups.iter().map(|x| (x.group_id, x.leader)).collect();
        for t in &p {
            lead.insert(t.group_id, t.to);
        }
        for table in ["a", "b", "c"] {
            let mut c: BTreeMap<u64, usize> = BTreeMap::new();
            for x in groups.iter().filter(|x| x.table == table) {
                *c.entry(lead[&x.group_id]).or_insert(0) += 1;
            }
            let (lo, hi) = (
                [1, 2, 3]
                    .iter()
                    .map(|n| c.get(n).copied().unwrap_or(0))
                    .min()
                    .unwrap(),
                [1, 2, 3]
                    .iter()
                    .map(|n| c.get(n).copied().unwrap_or(0))
                    .max()
                    .unwrap(),
            );
            assert!(hi - lo <= 1, "table {table}: {c:?} after {p:?}");
        }
        let c = after(&groups, &p);
        assert!(
            c.values().max().unwrap() - c.values().min().unwrap() <= 1,
            "{c:?}"
        );
    }

    #[test]
    fn frozen_groups_count_but_others_move_instead() {
        let v = [1, 2, 3];
        let groups: Vec<GroupLead> = (1..=6).map(|i| g("t", i, 1, &v)).collect();
        let frozen: BTreeSet<u64> = [1, 2].into();
        let p = plan(&groups, &nodes(&[1, 2, 3]), &frozen, 16);
        assert!(p.iter().all(|t| !frozen.contains(&t.group_id)), "{p:?}");
        assert_eq!(after(&groups, &p), BTreeMap::from([(1, 2), (2, 2), (3, 2)]));
        let all: BTreeSet<u64> = (1..=6).collect();
        assert!(plan(&groups, &nodes(&[1, 2, 3]), &all, 16).is_empty());
    }

    #[test]
    fn a_voter_behind_the_leader_is_not_asked() {
        // Node 2 is back but still catching up in group 1; group 2 it has.
        let v = [1, 2, 3];
        let mut groups: Vec<GroupLead> = (1..=3).map(|i| g("t", i, 1, &v)).collect();
        groups[0].ready = vec![1, 3];
        let p = plan(&groups, &nodes(&[1, 2, 3]), &BTreeSet::new(), 16);
        assert!(p.iter().all(|t| t.group_id != 1 || t.to != 2), "{p:?}");
        assert!(p.iter().any(|t| t.to == 2), "{p:?}");
        // Nobody ready: nothing asked.
        for x in &mut groups {
            x.ready = vec![x.leader];
        }
        assert!(plan(&groups, &nodes(&[1, 2, 3]), &BTreeSet::new(), 16).is_empty());
    }

    #[test]
    fn a_leader_outside_the_eligible_nodes_is_left_where_it_is() {
        // Node 4 is draining: its replicas move off; its leaderships are
        // not counted and not moved by balance.
        let groups = vec![
            g("t", 1, 4, &[1, 2, 4]),
            g("t", 2, 4, &[1, 3, 4]),
            g("t", 3, 1, &[1, 2, 3]),
        ];
        assert!(plan(&groups, &nodes(&[1, 2, 3]), &BTreeSet::new(), 16).is_empty());
    }
}
