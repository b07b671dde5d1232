//! Table descriptors (the routing truth stored in etcd) and the pure
//! decisions made about them: slot ranges, replica placement, validation.

use std::collections::{HashMap, VecDeque};

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::config::RaftEngine;
use crate::slot::SLOTS;

/// Lifecycle of a table; only `Available` tables are routable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableState {
    Creating,
    Available,
    Deleting,
}

impl TableState {
    pub fn as_str(self) -> &'static str {
        match self {
            TableState::Creating => "creating",
            TableState::Available => "available",
            TableState::Deleting => "deleting",
        }
    }
}

/// One shard: a Raft group owning an inclusive slot range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardDescriptor {
    pub group_id: u64,
    /// `[first, last]`, inclusive at both ends.
    pub slots: [u16; 2],
    /// Node ids hosting a voting replica. While the table is `creating`, the
    /// first one initializes the group; afterwards order carries no meaning.
    pub replicas: Vec<u64>,
    /// Nodes hosting a replica that is not (yet) a voter: the target of a
    /// move in progress. Their replica starts uninitialized and catches up
    /// from the leader (snapshot + log).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub learners: Vec<u64>,
    /// The move in progress on this shard, if any (at most one per shard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving: Option<ShardMove>,
}

/// A replica move recorded in the descriptor before any membership step, so
/// whoever finds it (the next rebalancer) can finish or undo it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMove {
    /// The node receiving the new replica (listed in `learners` until promoted).
    pub to: u64,
    /// The replica leaving (`None`: only add).
    pub from: Option<u64>,
    /// Why: `balance`, `drain`, `repair`.
    pub reason: String,
    /// Unix milliseconds when the move was recorded.
    pub started_at: u64,
}

impl ShardDescriptor {
    /// The voters once the move in progress completes.
    pub fn target_voters(&self) -> Vec<u64> {
        let mut v = self.replicas.clone();
        if let Some(m) = &self.moving {
            match m.from.and_then(|f| v.iter().position(|x| *x == f)) {
                // The new replica takes the leaving one's place.
                Some(i) => v[i] = m.to,
                None if !v.contains(&m.to) => v.push(m.to),
                None => {}
            }
        }
        v
    }

    /// Every node that hosts (or is about to host) a replica of the shard.
    pub fn all_nodes(&self) -> Vec<u64> {
        let mut v = self.replicas.clone();
        for l in &self.learners {
            if !v.contains(l) {
                v.push(*l);
            }
        }
        v
    }
}

/// The value of `tables/<name>` in etcd. Field names are a stable interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDescriptor {
    pub name: String,
    pub table_id: u64,
    pub db_index: u32,
    pub state: TableState,
    pub replicas: usize,
    pub shards: Vec<ShardDescriptor>,
    /// Unix milliseconds.
    pub created_at: u64,
    /// What drives the table's groups (absent: openraft, as every table
    /// made before the field existed).
    #[serde(default, skip_serializing_if = "RaftEngine::is_openraft")]
    pub engine: RaftEngine,
}

impl TableDescriptor {
    /// Index of the shard owning `slot`. Slot ranges are sorted and cover
    /// 0..=16383, so this is a binary search.
    pub fn shard_for_slot(&self, slot: u16) -> usize {
        self.shards
            .partition_point(|s| s.slots[1] < slot)
            .min(self.shards.len().saturating_sub(1))
    }
}

/// Split the slot space into `n` contiguous, nearly equal ranges.
pub fn slot_ranges(n: usize) -> Vec<[u16; 2]> {
    let n = n.clamp(1, SLOTS as usize);
    let total = SLOTS as usize;
    (0..n)
        .map(|i| {
            let first = i * total / n;
            let last = (i + 1) * total / n - 1;
            [first as u16, last as u16]
        })
        .collect()
}

/// Choose `replicas` distinct nodes for each of `shards` shards, spreading
/// load: each shard takes the least-loaded live nodes, ties broken at random.
///
/// The first replica of a shard initializes its group and usually wins its
/// first election, so it is spread too (`spread_first_replicas`): a new
/// table's leaders start balanced (8 shards on 3 nodes: 3, 3 and 2) instead
/// of waiting for leader balance to move them.
pub fn place_replicas(live: &[u64], shards: usize, replicas: usize) -> Option<Vec<Vec<u64>>> {
    if replicas == 0 || live.len() < replicas {
        return None;
    }
    let mut rng = rand::thread_rng();
    let mut load: Vec<(u64, usize)> = live.iter().map(|id| (*id, 0)).collect();
    let mut out: Vec<Vec<u64>> = Vec::with_capacity(shards);
    for _ in 0..shards {
        load.shuffle(&mut rng);
        load.sort_by_key(|(_, n)| *n);
        let mut chosen: Vec<u64> = load[..replicas].iter().map(|(id, _)| *id).collect();
        for entry in load[..replicas].iter_mut() {
            entry.1 += 1;
        }
        chosen.shuffle(&mut rng);
        out.push(chosen);
    }
    spread_first_replicas(&mut out);
    Some(out)
}

/// Reorder each shard's replicas so that the nodes listed first differ in
/// count as little as the replica sets allow. While some node is first in
/// at least two more shards than another node it can hand one to (directly,
/// or along a chain of shards: u is first in a shard that also holds v, v is
/// first in one that holds w, ...), the chain is rotated: the first node
/// loses one, the last gains one, those between keep their counts. Each
/// rotation lowers the sum of squared counts, so it ends.
///
/// Not `meta::leaders::plan`: that planner moves a leader only straight to
/// another voter of the same group, since each move is an election. Here
/// a reorder is free, and the chains reach within one where direct moves
/// stop short (5 nodes, 3 replicas: a node first in 3 shards none of which
/// holds the node first in 1).
fn spread_first_replicas(shards: &mut [Vec<u64>]) {
    let mut first: HashMap<u64, usize> = HashMap::new();
    for id in shards.iter().flat_map(|s| s.iter()) {
        first.entry(*id).or_insert(0);
    }
    for shard in shards.iter() {
        if let Some(id) = shard.first() {
            *first.entry(*id).or_insert(0) += 1;
        }
    }
    while let Some(path) = spread_path(shards, &first) {
        // path: (shard, index of the replica that goes first), in order.
        for &(s, i) in &path {
            let head = shards[s][0];
            *first.entry(head).or_insert(0) -= 1;
            *first.entry(shards[s][i]).or_insert(0) += 1;
            shards[s].swap(0, i);
        }
    }
}

/// A chain from a node first in the most shards to one first in at least two
/// fewer (breadth first, so the shortest), or None when there is none.
fn spread_path(shards: &[Vec<u64>], first: &HashMap<u64, usize>) -> Option<Vec<(usize, usize)>> {
    let max = *first.values().max()?;
    let mut parent: HashMap<u64, Option<(u64, usize, usize)>> = HashMap::new();
    let mut queue: VecDeque<u64> = VecDeque::new();
    let mut starts: Vec<u64> = first
        .iter()
        .filter(|(_, n)| **n == max)
        .map(|(id, _)| *id)
        .collect();
    starts.sort_unstable();
    for id in starts {
        parent.insert(id, None);
        queue.push_back(id);
    }
    let mut led: HashMap<u64, Vec<usize>> = HashMap::new();
    for (s, shard) in shards.iter().enumerate() {
        if let Some(head) = shard.first() {
            led.entry(*head).or_default().push(s);
        }
    }
    while let Some(u) = queue.pop_front() {
        for &s in led.get(&u).map(Vec::as_slice).unwrap_or(&[]) {
            let shard = &shards[s];
            for (i, v) in shard.iter().enumerate().skip(1) {
                if parent.contains_key(v) {
                    continue;
                }
                parent.insert(*v, Some((u, s, i)));
                if first[v] + 2 <= max {
                    let mut path = Vec::new();
                    let mut at = *v;
                    while let Some(Some((from, s, i))) = parent.get(&at) {
                        path.push((*s, *i));
                        at = *from;
                    }
                    // Each shard is on the path once: its head left the
                    // queue once.
                    return Some(path);
                }
                queue.push_back(*v);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_ranges_cover_everything_disjointly() {
        for n in [1usize, 2, 3, 7, 8, 16, 1000, 16384] {
            let r = slot_ranges(n);
            assert_eq!(r.len(), n);
            assert_eq!(r[0][0], 0);
            assert_eq!(r[n - 1][1], 16383);
            for w in r.windows(2) {
                assert_eq!(w[0][1] + 1, w[1][0]);
            }
            for s in &r {
                assert!(s[0] <= s[1]);
            }
        }
    }

    #[test]
    fn shard_lookup_matches_ranges() {
        let shards = slot_ranges(8)
            .into_iter()
            .enumerate()
            .map(|(i, slots)| ShardDescriptor {
                group_id: i as u64,
                slots,
                replicas: vec![],
                learners: vec![],
                moving: None,
            })
            .collect();
        let t = TableDescriptor {
            name: "t".into(),
            table_id: 1,
            db_index: 0,
            state: TableState::Available,
            replicas: 3,
            shards,
            created_at: 0,
            engine: Default::default(),
        };
        for slot in [0u16, 2047, 2048, 8191, 16383] {
            let i = t.shard_for_slot(slot);
            let s = &t.shards[i];
            assert!(s.slots[0] <= slot && slot <= s.slots[1], "slot {slot}");
        }
    }

    #[test]
    fn placement_is_distinct_and_balanced() {
        let live = [1, 2, 3, 4, 5];
        let p = place_replicas(&live, 10, 3).unwrap();
        let mut count = std::collections::HashMap::new();
        for shard in &p {
            let mut s = shard.clone();
            s.sort();
            s.dedup();
            assert_eq!(s.len(), 3);
            for id in shard {
                *count.entry(*id).or_insert(0) += 1;
            }
        }
        // 30 replicas over 5 nodes: exactly 6 each.
        assert!(count.values().all(|c| *c == 6), "{count:?}");
        assert!(place_replicas(&[1, 2], 1, 3).is_none());
    }

    #[test]
    fn first_replicas_are_spread() {
        // The first replica initializes its group and usually leads it.
        for (live, shards, replicas) in [
            (vec![1, 2, 3], 8, 3),
            (vec![1, 2, 3], 3, 3),
            (vec![1, 2, 3, 4, 5], 10, 3),
            (vec![1, 2, 3, 4, 5], 7, 5),
            ((1..=10).collect(), 16384, 3),
        ] {
            for _ in 0..if shards > 100 { 2 } else { 500 } {
                let p = place_replicas(&live, shards, replicas).unwrap();
                let mut firsts: HashMap<u64, usize> = live.iter().map(|id| (*id, 0)).collect();
                for shard in &p {
                    *firsts.get_mut(&shard[0]).unwrap() += 1;
                }
                let (lo, hi) = (firsts.values().min(), firsts.values().max());
                assert!(hi.unwrap() - lo.unwrap() <= 1, "{live:?} {shards}: {p:?}");
            }
        }
    }
}
