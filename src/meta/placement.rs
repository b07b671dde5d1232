//! Where replicas should live: the pure planner behind node join, drain and
//! repair. Given every table's placement and each node's health it returns
//! the next replica moves to start; it does no I/O, so it is tested alone and
//! the rebalancer (`cluster::rebalance`) only carries its answers out.
//!
//! Rules, in order of priority:
//! 1. **Evacuate**: a replica on a dead, draining or removed node moves to an
//!    active node that does not hold the shard yet (dead ones first: a shard
//!    that lost a replica is one failure away from losing its majority).
//! 2. **Balance** (only when nothing needs evacuating and no node is merely
//!    down): per table, move a replica from the node holding most to the one
//!    holding fewest while they differ by two or more; then overall, swap
//!    whole-cluster load the same way without unbalancing any table. Every
//!    move goes from an over-loaded node to an under-loaded one, so a new
//!    node receives about `replicas / nodes` replicas and nothing else moves:
//!    the minimal movement consistent hashing promises.
//!
//! At most one move per shard is in flight, and at most `max_per_node` moves
//! touch a node at once (as receiver, or as a live sender). Moves already in
//! flight (`ShardDescriptor::moving`) count as done for the arithmetic.

use std::collections::{BTreeMap, BTreeSet};

use super::descriptor::{TableDescriptor, TableState};

/// What the planner knows about a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Live and accepting replicas.
    Active,
    /// Live, but its replicas must move off (operator drain).
    Draining,
    /// Not live, for less than the repair delay: left alone.
    Down,
    /// Not live for longer than the repair delay: its replicas are re-created.
    Dead,
    /// Drained; anything it still holds moves off.
    Removed,
}

impl Health {
    fn evacuate(self) -> bool {
        matches!(self, Health::Dead | Health::Draining | Health::Removed)
    }
}

/// Why a replica moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Repair,
    Drain,
    Balance,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Repair => "repair",
            Reason::Drain => "drain",
            Reason::Balance => "balance",
        }
    }
}

/// One replica move: create a replica of `group_id` on `to`, then remove
/// the one on `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMove {
    pub table: String,
    pub shard: usize,
    pub group_id: u64,
    pub to: u64,
    pub from: Option<u64>,
    pub reason: Reason,
}

/// Where a shard's replicas are once the moves in flight complete.
struct Slot {
    table: usize,
    shard: usize,
    group_id: u64,
    nodes: Vec<u64>,
    busy: bool,
}

struct State<'a> {
    tables: &'a [TableDescriptor],
    health: &'a BTreeMap<u64, Health>,
    slots: Vec<Slot>,
    /// Moves in flight touching each node.
    inflight: BTreeMap<u64, usize>,
    max_per_node: usize,
    moves: Vec<PlannedMove>,
}

impl<'a> State<'a> {
    fn new(
        tables: &'a [TableDescriptor],
        health: &'a BTreeMap<u64, Health>,
        max_per_node: usize,
    ) -> State<'a> {
        let mut slots = Vec::new();
        let mut inflight = BTreeMap::new();
        for (ti, t) in tables.iter().enumerate() {
            if t.state != TableState::Available {
                continue;
            }
            for (si, s) in t.shards.iter().enumerate() {
                if let Some(m) = &s.moving {
                    *inflight.entry(m.to).or_insert(0) += 1;
                    if let Some(f) = m.from {
                        if matches!(health.get(&f), Some(Health::Active | Health::Draining)) {
                            *inflight.entry(f).or_insert(0) += 1;
                        }
                    }
                }
                slots.push(Slot {
                    table: ti,
                    shard: si,
                    group_id: s.group_id,
                    nodes: s.target_voters(),
                    busy: s.moving.is_some(),
                });
            }
        }
        State {
            tables,
            health,
            slots,
            inflight,
            max_per_node,
            moves: Vec::new(),
        }
    }

    fn health(&self, node: u64) -> Health {
        // A node etcd does not know is left alone rather than evacuated: a
        // partial read of the members must not trigger moves.
        self.health.get(&node).copied().unwrap_or(Health::Down)
    }

    fn active(&self) -> Vec<u64> {
        self.health
            .iter()
            .filter(|(_, h)| **h == Health::Active)
            .map(|(id, _)| *id)
            .collect()
    }

    fn free(&self, node: u64) -> bool {
        self.inflight.get(&node).copied().unwrap_or(0) < self.max_per_node
    }

    fn table_load(&self, table: usize, node: u64) -> usize {
        self.slots
            .iter()
            .filter(|s| s.table == table && s.nodes.contains(&node))
            .count()
    }

    fn total_load(&self, node: u64) -> usize {
        self.slots
            .iter()
            .filter(|s| s.nodes.contains(&node))
            .count()
    }

    fn apply(&mut self, slot: usize, to: u64, from: Option<u64>, reason: Reason) {
        let from_live =
            from.is_some_and(|f| matches!(self.health(f), Health::Active | Health::Draining));
        let s = &mut self.slots[slot];
        match from.and_then(|f| s.nodes.iter().position(|n| *n == f)) {
            Some(i) => s.nodes[i] = to,
            None => s.nodes.push(to),
        }
        s.busy = true;
        let s = &self.slots[slot];
        *self.inflight.entry(to).or_insert(0) += 1;
        if let (Some(f), true) = (from, from_live) {
            *self.inflight.entry(f).or_insert(0) += 1;
        }
        self.moves.push(PlannedMove {
            table: self.tables[s.table].name.clone(),
            shard: s.shard,
            group_id: s.group_id,
            to,
            from,
            reason,
        });
    }

    /// Rule 1. Returns how many replicas still wait to be evacuated.
    fn evacuate(&mut self) -> usize {
        let mut waiting = 0;
        for dead_first in [true, false] {
            for i in 0..self.slots.len() {
                let leaving: Vec<u64> = self.slots[i]
                    .nodes
                    .iter()
                    .copied()
                    .filter(|n| {
                        let h = self.health(*n);
                        h.evacuate() && ((h == Health::Dead) == dead_first)
                    })
                    .collect();
                for from in leaving {
                    if self.slots[i].busy {
                        waiting += 1;
                        continue;
                    }
                    let table = self.slots[i].table;
                    let from_live = self.health(from) != Health::Dead;
                    let target = self
                        .active()
                        .into_iter()
                        .filter(|n| !self.slots[i].nodes.contains(n) && self.free(*n))
                        .min_by_key(|n| (self.table_load(table, *n), self.total_load(*n), *n));
                    match target {
                        Some(to) if !from_live || self.free(from) => {
                            let reason = if dead_first {
                                Reason::Repair
                            } else {
                                Reason::Drain
                            };
                            self.apply(i, to, Some(from), reason);
                        }
                        _ => waiting += 1,
                    }
                }
            }
        }
        waiting
    }

    /// A shard of `table` (any table when `None`) on `from`, not on `to`,
    /// with no move in flight.
    fn movable(&self, table: Option<usize>, from: u64, to: u64) -> Option<usize> {
        self.slots.iter().position(|s| {
            table.is_none_or(|t| s.table == t)
                && !s.busy
                && s.nodes.contains(&from)
                && !s.nodes.contains(&to)
        })
    }

    /// Rule 2, per table.
    fn balance_table(&mut self, table: usize) {
        loop {
            let nodes = self.active();
            let mut pairs = Vec::new();
            for &h in &nodes {
                for &l in &nodes {
                    let (lh, ll) = (self.table_load(table, h), self.table_load(table, l));
                    if lh >= ll + 2 && self.free(h) && self.free(l) {
                        let key = (
                            std::cmp::Reverse(lh - ll),
                            std::cmp::Reverse(self.total_load(h)),
                            self.total_load(l),
                            h,
                            l,
                        );
                        pairs.push((key, h, l));
                    }
                }
            }
            pairs.sort();
            let found = pairs
                .into_iter()
                .find_map(|(_, h, l)| self.movable(Some(table), h, l).map(|s| (s, h, l)));
            match found {
                Some((slot, h, l)) => self.apply(slot, l, Some(h), Reason::Balance),
                None => return,
            }
        }
    }

    /// Rule 2, overall: move from the most to the least loaded node a
    /// replica of a table where the first holds more than the second, so
    /// that table stays within one everywhere.
    fn balance_total(&mut self) {
        loop {
            let nodes = self.active();
            let mut pairs = Vec::new();
            for &h in &nodes {
                for &l in &nodes {
                    let (th, tl) = (self.total_load(h), self.total_load(l));
                    if th >= tl + 2 && self.free(h) && self.free(l) {
                        pairs.push(((std::cmp::Reverse(th - tl), h, l), h, l));
                    }
                }
            }
            pairs.sort();
            let tables: BTreeSet<usize> = self.slots.iter().map(|s| s.table).collect();
            let found = pairs.into_iter().find_map(|(_, h, l)| {
                tables
                    .iter()
                    .filter(|t| self.table_load(**t, h) > self.table_load(**t, l))
                    .find_map(|t| self.movable(Some(*t), h, l))
                    .map(|s| (s, h, l))
            });
            match found {
                Some((slot, h, l)) => self.apply(slot, l, Some(h), Reason::Balance),
                None => return,
            }
        }
    }
}

/// The next moves to start. Tables that are not `available` are left alone.
pub fn plan(
    tables: &[TableDescriptor],
    health: &BTreeMap<u64, Health>,
    max_per_node: usize,
) -> Vec<PlannedMove> {
    let mut st = State::new(tables, health, max_per_node.max(1));
    let waiting = st.evacuate();
    let unsettled = waiting > 0
        || st.moves.iter().any(|m| m.reason != Reason::Balance)
        || health.values().any(|h| *h == Health::Down)
        || tables
            .iter()
            .flat_map(|t| &t.shards)
            .filter_map(|s| s.moving.as_ref())
            .any(|m| m.reason != Reason::Balance.as_str());
    if !unsettled {
        let tables: BTreeSet<usize> = st.slots.iter().map(|s| s.table).collect();
        for t in tables {
            st.balance_table(t);
        }
        st.balance_total();
    }
    st.moves
}

/// Whether node `id` can be drained: every table must still find
/// `replicas` distinct active nodes without it. The error says why not.
pub fn check_drain(
    tables: &[TableDescriptor],
    health: &BTreeMap<u64, Health>,
    id: u64,
) -> Result<(), String> {
    match health.get(&id) {
        None => return Err(format!("node {id} is not a member of the cluster")),
        Some(Health::Removed) => return Err(format!("node {id} is already removed")),
        _ => {}
    }
    let remaining: Vec<u64> = health
        .iter()
        .filter(|(n, h)| **n != id && **h == Health::Active)
        .map(|(n, _)| *n)
        .collect();
    for t in tables.iter().filter(|t| t.state != TableState::Deleting) {
        if t.replicas > remaining.len() {
            return Err(format!(
                "cannot drain node {id}: table '{}' needs {} replicas per shard on distinct nodes, \
                 but only {} other live active node(s) would remain ({:?})",
                t.name,
                t.replicas,
                remaining.len(),
                remaining
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::descriptor::{ShardDescriptor, ShardMove};

    fn table(name: &str, shards: Vec<Vec<u64>>) -> TableDescriptor {
        TableDescriptor {
            name: name.into(),
            table_id: 1,
            db_index: 0,
            state: TableState::Available,
            replicas: shards.first().map_or(3, Vec::len),
            shards: shards
                .into_iter()
                .enumerate()
                .map(|(i, replicas)| ShardDescriptor {
                    group_id: 100 + i as u64,
                    slots: [0, 0],
                    replicas,
                    learners: vec![],
                    moving: None,
                })
                .collect(),
            created_at: 0,
            engine: Default::default(),
        }
    }

    /// `shards` shards of 3 replicas spread round-robin over `nodes`.
    fn spread(name: &str, shards: usize, nodes: &[u64]) -> TableDescriptor {
        let n = nodes.len();
        table(
            name,
            (0..shards)
                .map(|i| (0..3).map(|r| nodes[(i + r) % n]).collect())
                .collect(),
        )
    }

    fn health(pairs: &[(u64, Health)]) -> BTreeMap<u64, Health> {
        pairs.iter().copied().collect()
    }

    fn active(ids: &[u64]) -> BTreeMap<u64, Health> {
        ids.iter().map(|id| (*id, Health::Active)).collect()
    }

    /// Run the planner to a fixed point, completing each round's moves the
    /// way the rebalancer does; returns every move made.
    fn settle(
        tables: &mut [TableDescriptor],
        h: &BTreeMap<u64, Health>,
        limit: usize,
    ) -> Vec<PlannedMove> {
        let mut all = Vec::new();
        for _ in 0..1000 {
            let moves = plan(tables, h, limit);
            if moves.is_empty() {
                return all;
            }
            for m in &moves {
                let t = tables.iter_mut().find(|t| t.name == m.table).unwrap();
                let s = &mut t.shards[m.shard];
                assert!(s.moving.is_none(), "two moves on one shard");
                assert!(
                    !s.replicas.contains(&m.to),
                    "target already holds the shard"
                );
                s.moving = Some(ShardMove {
                    to: m.to,
                    from: m.from,
                    reason: m.reason.as_str().into(),
                    started_at: 0,
                });
                s.replicas = s.target_voters();
                s.moving = None;
            }
            all.extend(moves);
        }
        panic!("the planner does not converge");
    }

    fn loads(t: &TableDescriptor) -> BTreeMap<u64, usize> {
        let mut out = BTreeMap::new();
        for s in &t.shards {
            for n in &s.replicas {
                *out.entry(*n).or_insert(0) += 1;
            }
        }
        out
    }

    fn assert_distinct(t: &TableDescriptor) {
        for s in &t.shards {
            let set: BTreeSet<u64> = s.replicas.iter().copied().collect();
            assert_eq!(set.len(), s.replicas.len(), "{:?}", s.replicas);
            assert_eq!(s.replicas.len(), t.replicas);
        }
    }

    #[test]
    fn balanced_placement_makes_no_moves() {
        let t = spread("t", 16, &[1, 2, 3]);
        assert!(plan(&[t], &active(&[1, 2, 3]), 2).is_empty());
    }

    #[test]
    fn new_nodes_receive_their_share_and_nothing_else_moves() {
        let mut tables = vec![spread("t", 16, &[1, 2, 3])];
        let moves = settle(&mut tables, &active(&[1, 2, 3, 4, 5]), 2);
        let l = loads(&tables[0]);
        assert!(l.values().all(|c| *c == 9 || *c == 10), "{l:?}");
        assert_distinct(&tables[0]);
        // Minimal movement: 48 replicas over 5 nodes: the two new nodes get
        // 18 between them (old nodes keep 10, 10, 10) and every move goes to
        // a new node.
        assert_eq!(moves.len(), 18, "{moves:?}");
        assert!(moves.iter().all(|m| m.to >= 4 && m.from.unwrap() <= 3));
        assert!(moves.iter().all(|m| m.reason == Reason::Balance));
    }

    #[test]
    fn one_new_node_takes_a_quarter() {
        let mut tables = vec![spread("t", 16, &[1, 2, 3])];
        let moves = settle(&mut tables, &active(&[1, 2, 3, 4]), 3);
        assert_eq!(moves.len(), 12);
        assert!(moves.iter().all(|m| m.to == 4));
        assert!(loads(&tables[0]).values().all(|c| *c == 12));
    }

    #[test]
    fn overall_balance_across_tables() {
        // Each table alone is balanced on 1..=3 with one extra replica; on
        // five nodes the remainders must not pile up on the same nodes.
        let mut tables = vec![
            spread("a", 8, &[1, 2, 3]),
            spread("b", 8, &[1, 2, 3]),
            spread("c", 5, &[1, 2, 3]),
        ];
        settle(&mut tables, &active(&[1, 2, 3, 4, 5]), 4);
        let mut total: BTreeMap<u64, usize> = BTreeMap::new();
        for t in &tables {
            assert_distinct(t);
            let l = loads(t);
            let (min, max) = (l.values().min().unwrap(), l.values().max().unwrap());
            assert!(max - min <= 1, "table {} {l:?}", t.name);
            for (n, c) in l {
                *total.entry(n).or_insert(0) += c;
            }
        }
        let (min, max) = (total.values().min().unwrap(), total.values().max().unwrap());
        assert!(max - min <= 1, "{total:?}");
    }

    #[test]
    fn per_node_limit_and_one_move_per_shard() {
        let tables = vec![spread("t", 16, &[1, 2, 3])];
        let moves = plan(&tables, &active(&[1, 2, 3, 4]), 2);
        assert_eq!(moves.len(), 2, "node 4 receives two at a time: {moves:?}");
        let shards: BTreeSet<usize> = moves.iter().map(|m| m.shard).collect();
        assert_eq!(shards.len(), moves.len());
    }

    #[test]
    fn moves_in_flight_count() {
        let mut tables = vec![spread("t", 16, &[1, 2, 3])];
        let first = plan(&tables, &active(&[1, 2, 3, 4]), 2);
        for m in &first {
            tables[0].shards[m.shard].moving = Some(ShardMove {
                to: m.to,
                from: m.from,
                reason: "balance".into(),
                started_at: 0,
            });
            tables[0].shards[m.shard].learners = vec![m.to];
        }
        // Node 4 is at its limit: nothing more starts until those finish.
        assert!(plan(&tables, &active(&[1, 2, 3, 4]), 2).is_empty());
    }

    #[test]
    fn drain_moves_everything_off_and_keeps_the_count() {
        let mut tables = vec![spread("t", 16, &[1, 2, 3, 4])];
        let h = health(&[
            (1, Health::Active),
            (2, Health::Draining),
            (3, Health::Active),
            (4, Health::Active),
        ]);
        let moves = settle(&mut tables, &h, 2);
        assert!(moves.iter().all(|m| m.from == Some(2)));
        assert!(moves
            .iter()
            .all(|m| m.reason == Reason::Drain || m.reason == Reason::Balance));
        let l = loads(&tables[0]);
        assert!(!l.contains_key(&2), "{l:?}");
        assert!(l.values().all(|c| *c == 16), "{l:?}");
        assert_distinct(&tables[0]);
    }

    #[test]
    fn dead_nodes_are_repaired_first_and_down_nodes_left_alone() {
        let tables = vec![spread("t", 6, &[1, 2, 3, 4, 5])];
        let down = health(&[
            (1, Health::Active),
            (2, Health::Down),
            (3, Health::Active),
            (4, Health::Active),
            (5, Health::Active),
        ]);
        assert!(plan(&tables, &down, 4).is_empty(), "down is not dead yet");
        let mut dead = down.clone();
        dead.insert(2, Health::Dead);
        dead.insert(5, Health::Draining);
        let moves = plan(&tables, &dead, 10);
        let first_drain = moves.iter().position(|m| m.reason == Reason::Drain);
        let last_repair = moves.iter().rposition(|m| m.reason == Reason::Repair);
        assert!(last_repair.unwrap() < first_drain.unwrap(), "{moves:?}");
        let mut tables = tables;
        settle(&mut tables, &dead, 10);
        let l = loads(&tables[0]);
        assert!(!l.contains_key(&2) && !l.contains_key(&5), "{l:?}");
        assert_distinct(&tables[0]);
    }

    #[test]
    fn no_move_without_a_distinct_target() {
        // Three nodes, three replicas: a dead node's replicas have nowhere to go.
        let tables = vec![spread("t", 4, &[1, 2, 3])];
        let h = health(&[(1, Health::Active), (2, Health::Dead), (3, Health::Active)]);
        assert!(plan(&tables, &h, 4).is_empty());
    }

    #[test]
    fn drain_refusals() {
        let tables = vec![spread("t", 4, &[1, 2, 3])];
        let err = check_drain(&tables, &active(&[1, 2, 3]), 2).unwrap_err();
        assert!(err.contains("needs 3 replicas"), "{err}");
        assert!(check_drain(&tables, &active(&[1, 2, 3, 4]), 2).is_ok());
        // A down node cannot receive replicas, so it does not count.
        let h = health(&[
            (1, Health::Active),
            (2, Health::Active),
            (3, Health::Active),
            (4, Health::Down),
        ]);
        assert!(check_drain(&tables, &h, 2).is_err());
        assert!(check_drain(&tables, &active(&[1, 2, 3]), 9)
            .unwrap_err()
            .contains("not a member"));
    }

    #[test]
    fn tables_being_created_or_dropped_are_left_alone() {
        let mut t = spread("t", 16, &[1, 2, 3]);
        t.state = TableState::Creating;
        assert!(plan(&[t], &active(&[1, 2, 3, 4]), 2).is_empty());
    }
}
