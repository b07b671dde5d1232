//! A data command compiled for the cluster: the operations it runs on each
//! shard of one table, and how their replies combine into the command's
//! reply.
//!
//! The same [`Plan`] runs alone (each part as its own shard request, in
//! parallel) or inside a transaction (every part of every queued command
//! becomes part of one per-shard transaction); merging is pure and shared.

use std::sync::Arc;

use super::routes::TableRoute;
use crate::shard::command::{MoveMode, OpReply, ReadOp, SetOp, TxnOp};
use crate::shard::zset::{combine_members, scored_reply, Aggregate, ZCombine};

/// One shard's share of a command.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub shard: usize,
    pub op: TxnOp,
}

/// How the parts' replies make the command's reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Merge {
    /// The single part's reply.
    Single,
    /// SETNX: `OK` becomes 1, nil becomes 0.
    SetNx,
    /// Integers added up (DEL, EXISTS, TOUCH, UNLINK).
    Sum,
    /// MGET: part `i` answers an array whose element `j` goes to position
    /// `positions[i][j]` of a reply of `len` elements.
    Gather {
        positions: Vec<Vec<usize>>,
        len: usize,
    },
    /// Every part answers OK: the command answers OK (MSET over shards).
    AllOk,
    /// Each part answers one set (SMEMBERS, in key order): SINTER / SUNION
    /// / SDIFF of them, or with `card` SINTERCARD's count (limit 0: none).
    Sets { op: SetOp, card: Option<u64> },
    /// Each part answers one sorted set's members with scores, in key
    /// order: ZUNION / ZINTER / ZDIFF of them.
    ZSets {
        combine: ZCombine,
        with_scores: bool,
    },
    /// As `ZSets`, answering ZINTERCARD's count (limit 0: none).
    ZInterCard { limit: u64 },
    /// BLPOP / BRPOP: LMPOP's `[key, [element]]` answered `[key, element]`.
    BlockPop,
    /// BZPOPMIN / BZPOPMAX: ZMPOP's `[key, [[member, score]]]` answered
    /// `[key, member, score]`.
    BlockZPop,
    /// HSCAN / SSCAN / ZSCAN: the single part's page, whose cursor the
    /// session turns into a token of its cursor table.
    CollScan,
    /// BITOP across shards: each part reads one source string (nil reads
    /// as empty); the reply is the result string.
    BitOp(crate::shard::bitmap::BitOpKind),
    /// LCS: two parts read the two strings (nil reads as empty); the reply
    /// is computed here, on the router, with Redis's shapes.
    Lcs(LcsReply),
}

/// How a blocking command waits when its plan finds nothing: on `keys`
/// (all on the plan's one shard) until one holds a collection of `kind`,
/// for at most `timeout_ms` (0: forever). Inside MULTI it does not wait.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub keys: Vec<bytes::Bytes>,
    pub kind: crate::shard::command::Kind,
    pub timeout_ms: u64,
}

/// Where a command whose keys span shards writes what its parts read
/// (SINTERSTORE, ZUNIONSTORE, ZRANGESTORE, BITOP...): the router reads the
/// inputs, combines them with the plan's [`Merge`] and replaces `dst` with
/// the result, in one transaction that WATCHes every input at the version
/// it had before the reads (`Session::run_store`).
#[derive(Debug, Clone, PartialEq)]
pub struct StoreTo {
    pub dst: bytes::Bytes,
    pub kind: StoreKind,
}

/// What the merged result becomes at the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// A set (the merge answers a set); the reply is its size.
    Set,
    /// A sorted set (the merge answers members with scores); the reply is
    /// its size.
    ZSet,
    /// A string (the merge answers it); the reply is its length.
    String,
}

/// What LCS answers: the string (neither flag), its length (`len`), or the
/// matched ranges (`idx`, with `min_match` and `with_match_len`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LcsReply {
    pub len: bool,
    pub idx: bool,
    pub min_match: u64,
    pub with_match_len: bool,
}

/// What kind of atomicity a multi-part command needs outside MULTI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Atomicity {
    /// Parts are independent (DEL or MGET over shards, as in Redis Cluster
    /// clients that split them).
    None,
    /// All parts or none (MSET): run as a transaction when parts span shards.
    AllOrNothing,
    /// MSETNX: all or none, and only if no key exists.
    AllIfAbsent,
    /// RENAME / RENAMENX / COPY whose two keys are on different shards: the
    /// two parts read the source and the destination; the router reads
    /// both in one snapshot, then writes the destination (and deletes the
    /// source) in one transaction that WATCHes both, retried if they moved.
    Move(MoveMode),
    /// LMPOP / ZMPOP (and the blocking pops) whose keys span shards: the
    /// one part is the one-shard operation over every key; the router finds
    /// the first key holding elements in one snapshot, then pops from it
    /// alone in one transaction that WATCHes it and every key before it.
    FirstFilled,
    /// SMOVE / LMOVE / RPOPLPUSH whose two keys are on different shards:
    /// the one part is the one-shard operation (its shard the source's);
    /// the router reads what moves, then removes it from the source and
    /// adds it to the destination in one transaction that WATCHes both.
    Transfer,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub table: Arc<TableRoute>,
    pub parts: Vec<Part>,
    pub merge: Merge,
    pub atomicity: Atomicity,
    /// Its reads may be answered by any replica, possibly stale (a READONLY
    /// connection running a read-only command); otherwise linearizable.
    pub stale_ok: bool,
    /// A blocking command's wait, when its plan finds nothing.
    pub block: Option<Block>,
    /// A multi-key write across shards: where its reads' result goes.
    pub store: Option<StoreTo>,
}

impl Plan {
    /// Whether a part reads a collection's elements (not just key records).
    pub fn reads_elements(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p.op, TxnOp::Read(ReadOp::Coll(_))))
    }

    /// A plan with independent parts and linearizable reads.
    pub fn new(table: Arc<TableRoute>, parts: Vec<Part>, merge: Merge) -> Plan {
        Plan {
            table,
            parts,
            merge,
            atomicity: Atomicity::None,
            stale_ok: false,
            block: None,
            store: None,
        }
    }

    /// Whether the plan changes nothing. A move or a store across shards
    /// is made of reads but writes when it runs (`Atomicity::Move`,
    /// [`Plan::store`]).
    pub fn is_read_only(&self) -> bool {
        !matches!(self.atomicity, Atomicity::Move(_))
            && self.store.is_none()
            && self.parts.iter().all(|p| matches!(p.op, TxnOp::Read(_)))
    }

    pub fn shards(&self) -> usize {
        let mut s: Vec<usize> = self.parts.iter().map(|p| p.shard).collect();
        s.sort_unstable();
        s.dedup();
        s.len()
    }
}

/// Combine the parts' replies (one per part, in part order).
pub fn merge(merge: &Merge, replies: Vec<OpReply>) -> OpReply {
    // LCS names Redis's own error for a key of another type.
    if matches!(merge, Merge::Lcs(_))
        && replies
            .iter()
            .any(|r| matches!(r, OpReply::Error(e) if e.starts_with("WRONGTYPE")))
    {
        return OpReply::Error("ERR The specified keys must contain string values".into());
    }
    // An error from any part is the command's reply.
    if let Some(e) = replies.iter().find(|r| matches!(r, OpReply::Error(_))) {
        return e.clone();
    }
    match merge {
        Merge::Single | Merge::CollScan => replies.into_iter().next().unwrap_or(OpReply::Nil),
        Merge::SetNx => match replies.into_iter().next() {
            Some(OpReply::Ok) => OpReply::Int(1),
            Some(OpReply::Nil) => OpReply::Int(0),
            Some(other) => other,
            None => OpReply::Nil,
        },
        Merge::Sum => OpReply::Int(
            replies
                .iter()
                .map(|r| match r {
                    OpReply::Int(n) => *n,
                    _ => 0,
                })
                .sum(),
        ),
        Merge::Gather { positions, len } => {
            let mut out = vec![OpReply::Nil; *len];
            for (part, reply) in positions.iter().zip(replies) {
                if let OpReply::Array(items) = reply {
                    for (pos, item) in part.iter().zip(items) {
                        if let Some(slot) = out.get_mut(*pos) {
                            *slot = item;
                        }
                    }
                }
            }
            OpReply::Array(out)
        }
        Merge::BitOp(op) => {
            let sources: Vec<bytes::Bytes> = replies
                .into_iter()
                .map(|r| match r {
                    OpReply::Bulk(b) => b,
                    _ => bytes::Bytes::new(),
                })
                .collect();
            OpReply::Bulk(crate::shard::bitmap::bit_op(*op, &sources).into())
        }
        Merge::Lcs(how) => {
            let text = |r: Option<&OpReply>| match r {
                Some(OpReply::Bulk(b)) => b.clone(),
                _ => bytes::Bytes::new(),
            };
            lcs_reply(&text(replies.first()), &text(replies.get(1)), *how)
        }
        Merge::Sets { op, card } => merge_sets(*op, *card, replies),
        Merge::ZSets {
            combine,
            with_scores,
        } => scored_reply(
            combine_members(replies.into_iter().map(scored_members).collect(), combine),
            *with_scores,
        ),
        Merge::BlockPop => match replies.into_iter().next() {
            Some(OpReply::Array(mut kv)) if kv.len() == 2 => {
                let first = match kv.pop() {
                    Some(OpReply::Array(mut items)) if !items.is_empty() => items.swap_remove(0),
                    _ => OpReply::Nil,
                };
                kv.push(first);
                OpReply::Array(kv)
            }
            Some(other) => other,
            None => OpReply::NilArray,
        },
        Merge::BlockZPop => match replies.into_iter().next() {
            Some(OpReply::Array(mut kv)) if kv.len() == 2 => match kv.pop() {
                Some(OpReply::Array(mut items)) if !items.is_empty() => {
                    match items.swap_remove(0) {
                        OpReply::Array(ms) => OpReply::Array(kv.into_iter().chain(ms).collect()),
                        other => other,
                    }
                }
                _ => OpReply::NilArray,
            },
            Some(other) => other,
            None => OpReply::NilArray,
        },
        Merge::ZInterCard { limit } => {
            let inter = ZCombine {
                op: SetOp::Inter,
                keys: Vec::new(),
                weights: Vec::new(),
                aggregate: Aggregate::Sum,
            };
            let n =
                combine_members(replies.into_iter().map(scored_members).collect(), &inter).len();
            OpReply::Int(if *limit > 0 {
                n.min(*limit as usize)
            } else {
                n
            } as i64)
        }
        Merge::AllOk => {
            if replies.iter().all(|r| *r == OpReply::Ok) {
                OpReply::Ok
            } else {
                replies
                    .into_iter()
                    .find(|r| *r != OpReply::Ok)
                    .unwrap_or(OpReply::Ok)
            }
        }
    }
}

/// LCS's reply for strings `a` and `b`, in Redis's shapes: the string, its
/// length, or `{matches: [[[a0, a1], [b0, b1](, len)]...], len: n}`.
pub fn lcs_reply(a: &[u8], b: &[u8], how: LcsReply) -> OpReply {
    let walk = how.idx || !how.len;
    let found = match crate::lcs::lcs(a, b, walk, how.min_match) {
        Ok(found) => found,
        Err(e) => return OpReply::Error(e),
    };
    if how.idx {
        let pair =
            |x: u32, y: u32| OpReply::Array(vec![OpReply::Int(x as i64), OpReply::Int(y as i64)]);
        let matches = found
            .matches
            .iter()
            .map(|m| {
                let mut item = vec![pair(m.a_start, m.a_end), pair(m.b_start, m.b_end)];
                if how.with_match_len {
                    item.push(OpReply::Int(m.len() as i64));
                }
                OpReply::Array(item)
            })
            .collect();
        let key = |k: &'static str| OpReply::Bulk(bytes::Bytes::from_static(k.as_bytes()));
        OpReply::Map(vec![
            (key("matches"), OpReply::Array(matches)),
            (key("len"), OpReply::Int(found.len as i64)),
        ])
    } else if how.len {
        OpReply::Int(found.len as i64)
    } else {
        OpReply::Bulk(found.string.into())
    }
}

/// The sets' members combined by `op` (each part answered one set, in key
/// order); SINTERCARD's count when `card` is its limit.
fn merge_sets(op: SetOp, card: Option<u64>, replies: Vec<OpReply>) -> OpReply {
    let mut sets = replies.into_iter().map(|r| match r {
        OpReply::Set(items) => items
            .into_iter()
            .filter_map(|i| match i {
                OpReply::Bulk(b) => Some(b),
                _ => None,
            })
            .collect::<std::collections::BTreeSet<bytes::Bytes>>(),
        _ => Default::default(),
    });
    let mut acc = sets.next().unwrap_or_default();
    for s in sets {
        match op {
            SetOp::Inter => acc.retain(|m| s.contains(m)),
            SetOp::Union => acc.extend(s),
            SetOp::Diff => acc.retain(|m| !s.contains(m)),
        }
    }
    match card {
        Some(0) => OpReply::Int(acc.len() as i64),
        Some(limit) => OpReply::Int(acc.len().min(limit as usize) as i64),
        None => OpReply::Set(acc.into_iter().map(OpReply::Bulk).collect()),
    }
}

/// A part's members with scores (a `Pairs` reply of bulk and double).
fn scored_members(r: OpReply) -> Option<std::collections::BTreeMap<bytes::Bytes, f64>> {
    match r {
        OpReply::Pairs(pairs) => Some(
            pairs
                .into_iter()
                .filter_map(|(m, s)| match (m, s) {
                    (OpReply::Bulk(m), OpReply::Double(s)) => Some((m, s)),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn merges() {
        assert_eq!(
            merge(&Merge::Sum, vec![OpReply::Int(2), OpReply::Int(3)]),
            OpReply::Int(5)
        );
        assert_eq!(merge(&Merge::SetNx, vec![OpReply::Ok]), OpReply::Int(1));
        assert_eq!(merge(&Merge::SetNx, vec![OpReply::Nil]), OpReply::Int(0));
        let b = |s: &str| OpReply::Bulk(Bytes::copy_from_slice(s.as_bytes()));
        let gathered = merge(
            &Merge::Gather {
                positions: vec![vec![0, 2], vec![1]],
                len: 3,
            },
            vec![
                OpReply::Array(vec![b("a"), b("c")]),
                OpReply::Array(vec![b("b")]),
            ],
        );
        assert_eq!(gathered, OpReply::Array(vec![b("a"), b("b"), b("c")]));
        assert_eq!(
            merge(&Merge::AllOk, vec![OpReply::Ok, OpReply::Ok]),
            OpReply::Ok
        );
        let err = OpReply::Error("WRONGTYPE x".into());
        assert_eq!(merge(&Merge::Sum, vec![OpReply::Int(1), err.clone()]), err);
    }
}
