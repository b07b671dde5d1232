//! Sorted sets: their element rows and the deterministic logic of their
//! commands (the storage model is [`super::coll`]'s).
//!
//! **Encoding.** Each member has two rows under the collection's
//! `(key, gen)` prefix:
//!
//! * `0x00 | member` -> the score, 8 bytes (`f64` bits, big endian): point
//!   lookups (ZSCORE, ZADD's old score);
//! * `0x01 | score key (8 B) | member` -> empty: the score index, in
//!   (score, member) order, which is Redis's order. The score key is the
//!   `f64` bits with the sign bit flipped for positive numbers and every bit
//!   flipped for negative ones, so bytes sort as numbers (-inf first);
//!   -0 is stored as 0.
//!
//! The record's `len` counts members. A rank is found by walking the score
//! index from the nearer end, so ZRANGE 0 9 and ZRANGE -10 -1 read ten
//! rows whatever the size; a rank in the middle of a huge set costs a walk
//! to it, as in kvrocks.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::command::*;
use super::elements::{existing, load, KeyView, Layer, Open, Range, ReadView, Rng, SetOp};
use super::engine::prefix_end;
use super::value::*;

const MEMBER: u8 = 0;
const SCORE: u8 = 1;

/// A score bound of ZRANGEBYSCORE and friends (`-inf`, `(1.5`, `+inf`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoreBound {
    pub value: f64,
    pub exclusive: bool,
}

/// A lex bound of ZRANGEBYLEX and friends (`-`, `+`, `[a`, `(a`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LexBound {
    Min,
    Max,
    Incl(Bytes),
    Excl(Bytes),
}

/// What a range selects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ZBy {
    /// Ranks, Redis's negative-from-the-end rules.
    Rank {
        start: i64,
        stop: i64,
    },
    Score {
        min: ScoreBound,
        max: ScoreBound,
    },
    Lex {
        min: LexBound,
        max: LexBound,
    },
}

/// A ZRANGE: what, which direction, and LIMIT (offset, count; a negative
/// count is "all").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZRange {
    pub by: ZBy,
    pub rev: bool,
    pub limit: Option<(i64, i64)>,
}

/// ZADD's options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZAddFlags {
    pub nx: bool,
    pub xx: bool,
    pub gt: bool,
    pub lt: bool,
    pub ch: bool,
    pub incr: bool,
}

/// How ZUNION and ZINTER combine the scores of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Aggregate {
    Sum,
    Min,
    Max,
}

/// ZUNION / ZINTER / ZDIFF over keys (sets count as scores of 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZCombine {
    pub op: SetOp,
    pub keys: Vec<Bytes>,
    /// One per key, or empty for all 1.
    pub weights: Vec<f64>,
    pub aggregate: Aggregate,
}

/// A sorted-set write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ZWrite {
    ZAdd {
        key: Bytes,
        flags: ZAddFlags,
        members: Vec<(f64, Bytes)>,
    },
    ZIncrBy {
        key: Bytes,
        by: f64,
        member: Bytes,
    },
    ZRem {
        key: Bytes,
        members: Vec<Bytes>,
    },
    /// ZREMRANGEBYRANK / BYSCORE / BYLEX.
    ZRemRange {
        key: Bytes,
        by: ZBy,
    },
    /// ZPOPMIN / ZPOPMAX (`count: None`, one member, answered flat).
    ZPop {
        key: Bytes,
        max: bool,
        count: Option<u64>,
    },
    /// ZMPOP: pop from the first non-empty key.
    ZMPop {
        keys: Vec<Bytes>,
        max: bool,
        count: u64,
    },
    /// ZRANGESTORE over keys of this shard.
    ZRangeStore {
        dst: Bytes,
        src: Bytes,
        range: ZRange,
    },
    /// ZUNIONSTORE / ZINTERSTORE / ZDIFFSTORE over keys of this shard.
    ZStore {
        dst: Bytes,
        combine: ZCombine,
    },
}

/// A sorted-set read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ZRead {
    ZScore {
        key: Bytes,
        member: Bytes,
    },
    ZMScore {
        key: Bytes,
        members: Vec<Bytes>,
    },
    ZCard {
        key: Bytes,
    },
    /// ZCOUNT / ZLEXCOUNT.
    ZCount {
        key: Bytes,
        by: ZBy,
    },
    ZRange {
        key: Bytes,
        range: ZRange,
        with_scores: bool,
    },
    ZRank {
        key: Bytes,
        member: Bytes,
        rev: bool,
    },
    /// ZUNION / ZINTER / ZDIFF over keys of this shard.
    ZCombine {
        combine: ZCombine,
        with_scores: bool,
    },
    ZInterCard {
        keys: Vec<Bytes>,
        limit: u64,
    },
    ZRandMember {
        key: Bytes,
        count: Option<i64>,
        with_scores: bool,
        seed: u64,
    },
}

impl ZWrite {
    pub fn keys(&self) -> Vec<&Bytes> {
        match self {
            ZWrite::ZAdd { key, .. }
            | ZWrite::ZIncrBy { key, .. }
            | ZWrite::ZRem { key, .. }
            | ZWrite::ZRemRange { key, .. }
            | ZWrite::ZPop { key, .. } => vec![key],
            ZWrite::ZMPop { keys, .. } => keys.iter().collect(),
            ZWrite::ZRangeStore { dst, src, .. } => vec![dst, src],
            ZWrite::ZStore { dst, combine } => std::iter::once(dst).chain(&combine.keys).collect(),
        }
    }

    pub fn elements(&self) -> Vec<&Bytes> {
        match self {
            ZWrite::ZAdd { members, .. } => members.iter().map(|(_, m)| m).collect(),
            ZWrite::ZIncrBy { member, .. } => vec![member],
            ZWrite::ZRem { members, .. } => members.iter().collect(),
            _ => Vec::new(),
        }
    }
}

impl ZRead {
    pub fn keys(&self) -> Vec<&Bytes> {
        match self {
            ZRead::ZScore { key, .. }
            | ZRead::ZMScore { key, .. }
            | ZRead::ZCard { key }
            | ZRead::ZCount { key, .. }
            | ZRead::ZRange { key, .. }
            | ZRead::ZRank { key, .. }
            | ZRead::ZRandMember { key, .. } => vec![key],
            ZRead::ZCombine { combine, .. } => combine.keys.iter().collect(),
            ZRead::ZInterCard { keys, .. } => keys.iter().collect(),
        }
    }
}

pub const ERR_NAN: &str = "ERR resulting score is not a number (NaN)";

/// The bytes of a score that sort as the number does.
pub fn score_key(score: f64) -> [u8; 8] {
    let score = if score == 0.0 { 0.0 } else { score };
    let bits = score.to_bits();
    let k = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    k.to_be_bytes()
}

fn score_of_key(k: &[u8]) -> f64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&k[..8]);
    let k = u64::from_be_bytes(a);
    let bits = if k >> 63 == 1 { k & !(1 << 63) } else { !k };
    f64::from_bits(bits)
}

fn member_elem(member: &[u8]) -> Bytes {
    let mut e = Vec::with_capacity(1 + member.len());
    e.push(MEMBER);
    e.extend_from_slice(member);
    Bytes::from(e)
}

fn score_elem(score: f64, member: &[u8]) -> Bytes {
    let mut e = Vec::with_capacity(9 + member.len());
    e.push(SCORE);
    e.extend_from_slice(&score_key(score));
    e.extend_from_slice(member);
    Bytes::from(e)
}

fn decode_score(v: &[u8]) -> f64 {
    let mut a = [0u8; 8];
    let n = v.len().min(8);
    a[..n].copy_from_slice(&v[..n]);
    f64::from_be_bytes(a)
}

/// A member's score.
fn score(
    view: &mut dyn ReadView,
    key: &[u8],
    gen: u64,
    member: &[u8],
) -> Result<Option<f64>, Corrupt> {
    Ok(view
        .sub_get(key, gen, &member_elem(member))?
        .map(|v| decode_score(&v)))
}

/// Set a member's score (`old`: its score now, if a member).
fn put(view: &mut dyn KeyView, z: &mut Open, member: &Bytes, new: f64, old: Option<f64>) {
    let new = if new == 0.0 { 0.0 } else { new };
    match old {
        Some(o) => view.put_sub(&z.key, z.coll.gen, score_elem(o, member), None),
        None => z.coll.len += 1,
    }
    view.put_sub(
        &z.key,
        z.coll.gen,
        member_elem(member),
        Some(Bytes::copy_from_slice(&new.to_be_bytes())),
    );
    view.put_sub(
        &z.key,
        z.coll.gen,
        score_elem(new, member),
        Some(Bytes::new()),
    );
}

/// Add `items` to the new sorted set `z` (a repeated member: its last score).
pub(super) fn fill(
    view: &mut dyn KeyView,
    z: &mut Open,
    items: &[(Bytes, f64)],
) -> Result<(), Corrupt> {
    for (m, s) in items {
        let old = score(view, &z.key, z.coll.gen, m)?;
        put(view, z, m, *s, old);
    }
    Ok(())
}

fn remove(view: &mut dyn KeyView, z: &mut Open, member: &Bytes, old: f64) {
    z.coll.len = z.coll.len.saturating_sub(1);
    view.put_sub(&z.key, z.coll.gen, member_elem(member), None);
    view.put_sub(&z.key, z.coll.gen, score_elem(old, member), None);
}

/// Walk the score index from `from` (inclusive) towards `to` (exclusive;
/// `None`: the end of the index), forward or in reverse, page by page,
/// until `f` breaks.
fn walk(
    view: &mut dyn ReadView,
    key: &[u8],
    gen: u64,
    from: &[u8],
    to: Option<&[u8]>,
    rev: bool,
    mut f: impl FnMut(f64, Bytes) -> ControlFlow<()>,
) -> Result<(), Corrupt> {
    const PAGE: usize = 512;
    let index_start = [SCORE];
    let index_end = [SCORE + 1];
    let mut lo: Vec<u8> = if from.is_empty() {
        index_start.to_vec()
    } else {
        from.to_vec()
    };
    let mut hi: Vec<u8> = to.map_or(index_end.to_vec(), |t| t.to_vec());
    loop {
        let page = view.sub_range(&Range {
            key,
            gen,
            from: &lo,
            to: Some(&hi),
            rev,
            limit: PAGE,
        })?;
        let full = page.len() == PAGE;
        let mut last = None;
        for (e, _) in page {
            if e.len() < 9 {
                continue;
            }
            let s = score_of_key(&e[1..9]);
            let m = e.slice(9..);
            last = Some(e);
            if f(s, m).is_break() {
                return Ok(());
            }
        }
        match (full, last) {
            (true, Some(e)) => {
                if rev {
                    hi = e.to_vec();
                } else {
                    lo = e.to_vec();
                    lo.push(0);
                }
            }
            _ => return Ok(()),
        }
    }
}

/// Redis's rank window: `[start, stop]` within `len`, or `None` when empty.
fn rank_window(start: i64, stop: i64, len: u64) -> Option<(u64, u64)> {
    let len = len as i64;
    let mut start = if start < 0 { start + len } else { start };
    let mut stop = if stop < 0 { stop + len } else { stop };
    if start < 0 {
        start = 0;
    }
    if start > stop || start >= len {
        return None;
    }
    if stop >= len {
        stop = len - 1;
    }
    Some((start as u64, stop as u64))
}

fn score_in(s: f64, min: &ScoreBound, max: &ScoreBound) -> (bool, bool) {
    let above_min = if min.exclusive {
        s > min.value
    } else {
        s >= min.value
    };
    let below_max = if max.exclusive {
        s < max.value
    } else {
        s <= max.value
    };
    (above_min, below_max)
}

fn lex_above_min(m: &[u8], min: &LexBound) -> bool {
    match min {
        LexBound::Min => true,
        LexBound::Max => false,
        LexBound::Incl(b) => m >= &b[..],
        LexBound::Excl(b) => m > &b[..],
    }
}

fn lex_below_max(m: &[u8], max: &LexBound) -> bool {
    match max {
        LexBound::Min => false,
        LexBound::Max => true,
        LexBound::Incl(b) => m <= &b[..],
        LexBound::Excl(b) => m < &b[..],
    }
}

/// The members a range selects, in its order, with their scores.
fn select(
    view: &mut dyn ReadView,
    key: &[u8],
    coll: &Coll,
    range: &ZRange,
) -> Result<Vec<(Bytes, f64)>, Corrupt> {
    let gen = coll.gen;
    let mut out = Vec::new();
    match &range.by {
        ZBy::Rank { start, stop } => {
            let Some((a, b)) = rank_window(*start, *stop, coll.len) else {
                return Ok(out);
            };
            // Positions [lo, hi] of the ascending index (REV ranks count
            // from the top), read from the nearer end.
            let (lo, hi) = if range.rev {
                (coll.len - 1 - b, coll.len - 1 - a)
            } else {
                (a, b)
            };
            let from_top = coll.len - 1 - hi < lo;
            let mut pos = 0u64;
            if from_top {
                walk(view, key, gen, &[], None, true, |s, m| {
                    let p = coll.len - 1 - pos;
                    pos += 1;
                    if p < lo {
                        return ControlFlow::Break(());
                    }
                    if p <= hi {
                        out.push((m, s));
                    }
                    ControlFlow::Continue(())
                })?;
                out.reverse();
            } else {
                walk(view, key, gen, &[], None, false, |s, m| {
                    let p = pos;
                    pos += 1;
                    if p > hi {
                        return ControlFlow::Break(());
                    }
                    if p >= lo {
                        out.push((m, s));
                    }
                    ControlFlow::Continue(())
                })?;
            }
            if range.rev {
                out.reverse();
            }
        }
        ZBy::Score { min, max } => {
            let (mut skip, mut take) = limit_of(range.limit);
            if take == Some(0) {
                return Ok(out);
            }
            let lo = [&[SCORE][..], &score_key(min.value)].concat();
            let hi = prefix_end(&[&[SCORE][..], &score_key(max.value)].concat());
            if min.value > max.value {
                return Ok(out);
            }
            walk(view, key, gen, &lo, hi.as_deref(), range.rev, |s, m| {
                let (above, below) = score_in(s, min, max);
                if range.rev && !above || !range.rev && !below {
                    return ControlFlow::Break(());
                }
                if !(above && below) {
                    return ControlFlow::Continue(());
                }
                if skip > 0 {
                    skip -= 1;
                    return ControlFlow::Continue(());
                }
                out.push((m, s));
                match &mut take {
                    Some(n) => {
                        *n -= 1;
                        if *n == 0 {
                            ControlFlow::Break(())
                        } else {
                            ControlFlow::Continue(())
                        }
                    }
                    None => ControlFlow::Continue(()),
                }
            })?;
        }
        ZBy::Lex { min, max } => {
            let (mut skip, mut take) = limit_of(range.limit);
            if take == Some(0) {
                return Ok(out);
            }
            walk(view, key, gen, &[], None, range.rev, |s, m| {
                let (above, below) = (lex_above_min(&m, min), lex_below_max(&m, max));
                if range.rev && !above || !range.rev && !below {
                    return ControlFlow::Break(());
                }
                if !(above && below) {
                    return ControlFlow::Continue(());
                }
                if skip > 0 {
                    skip -= 1;
                    return ControlFlow::Continue(());
                }
                out.push((m, s));
                match &mut take {
                    Some(n) => {
                        *n -= 1;
                        if *n == 0 {
                            ControlFlow::Break(())
                        } else {
                            ControlFlow::Continue(())
                        }
                    }
                    None => ControlFlow::Continue(()),
                }
            })?;
        }
    }
    Ok(out)
}

/// LIMIT as (members to skip, members to take; `None`: all).
fn limit_of(limit: Option<(i64, i64)>) -> (u64, Option<u64>) {
    match limit {
        None => (0, None),
        Some((offset, _)) if offset < 0 => (0, Some(0)),
        Some((offset, count)) if count < 0 => (offset as u64, None),
        Some((offset, count)) => (offset as u64, Some(count as u64)),
    }
}

/// The members of a sorted set (or a set, scored 1) under `key`; `None`
/// when absent; WRONGTYPE for other types.
fn members_of(
    view: &mut dyn ReadView,
    key: &[u8],
    now: u64,
) -> Result<Option<BTreeMap<Bytes, f64>>, Stop> {
    let Some(v) = view.get(key)?.filter(|v| v.live_at(now)) else {
        return Ok(None);
    };
    let Some(c) = v.coll else {
        return Err(Stop::WrongType);
    };
    let mut out = BTreeMap::new();
    match c.kind {
        Kind::ZSet => {
            let rows = view.sub_range(&Range {
                key,
                gen: c.gen,
                from: &[MEMBER],
                to: Some(&[MEMBER + 1]),
                rev: false,
                limit: usize::try_from(c.len).unwrap_or(usize::MAX),
            })?;
            for (e, v) in rows {
                out.insert(e.slice(1..), decode_score(&v));
            }
        }
        Kind::Set => {
            let rows = view.sub_range(&Range {
                key,
                gen: c.gen,
                from: &[],
                to: None,
                rev: false,
                limit: usize::try_from(c.len).unwrap_or(usize::MAX),
            })?;
            for (m, _) in rows {
                out.insert(m, 1.0);
            }
        }
        _ => return Err(Stop::WrongType),
    }
    Ok(Some(out))
}

fn weighted(score: f64, weight: f64) -> f64 {
    let w = score * weight;
    // Redis: 0 * inf is 0, not NaN.
    if w.is_nan() {
        0.0
    } else {
        w
    }
}

fn aggregate(a: f64, b: f64, how: Aggregate) -> f64 {
    match how {
        Aggregate::Sum => {
            let s = a + b;
            if s.is_nan() {
                0.0
            } else {
                s
            }
        }
        Aggregate::Min => a.min(b),
        Aggregate::Max => a.max(b),
    }
}

/// ZUNION / ZINTER / ZDIFF, in (score, member) order.
pub fn combine_members(sets: Vec<Option<BTreeMap<Bytes, f64>>>, c: &ZCombine) -> Vec<(Bytes, f64)> {
    let weight = |i: usize| c.weights.get(i).copied().unwrap_or(1.0);
    let mut sets = sets.into_iter().enumerate();
    let mut acc: BTreeMap<Bytes, f64> = match sets.next() {
        Some((i, Some(s))) => s
            .into_iter()
            .map(|(m, v)| (m, weighted(v, weight(i))))
            .collect(),
        _ => BTreeMap::new(),
    };
    for (i, s) in sets {
        match c.op {
            SetOp::Union => {
                for (m, v) in s.unwrap_or_default() {
                    let v = weighted(v, weight(i));
                    acc.entry(m)
                        .and_modify(|a| *a = aggregate(*a, v, c.aggregate))
                        .or_insert(v);
                }
            }
            SetOp::Inter => {
                let s = s.unwrap_or_default();
                acc = acc
                    .into_iter()
                    .filter_map(|(m, a)| {
                        s.get(&m)
                            .map(|v| (m, aggregate(a, weighted(*v, weight(i)), c.aggregate)))
                    })
                    .collect();
            }
            SetOp::Diff => {
                if let Some(s) = s {
                    acc.retain(|m, _| !s.contains_key(m));
                }
            }
        }
    }
    let mut out: Vec<(Bytes, f64)> = acc.into_iter().collect();
    out.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    out
}

fn load_all(
    view: &mut dyn ReadView,
    keys: &[Bytes],
    now: u64,
) -> Result<Vec<Option<BTreeMap<Bytes, f64>>>, Stop> {
    keys.iter().map(|k| members_of(view, k, now)).collect()
}

/// Members with scores as a reply: pairs, or members only.
pub fn scored_reply(items: Vec<(Bytes, f64)>, with_scores: bool) -> OpReply {
    if with_scores {
        OpReply::Pairs(
            items
                .into_iter()
                .map(|(m, s)| (OpReply::Bulk(m), OpReply::Double(s)))
                .collect(),
        )
    } else {
        OpReply::Array(items.into_iter().map(|(m, _)| OpReply::Bulk(m)).collect())
    }
}

/// Replace `dst` with a sorted set of `items` (none: delete it). Its new
/// generation is `index`.
fn store(view: &mut Layer, dst: &Bytes, items: &[(Bytes, f64)], index: u64) {
    view.put(dst, None);
    if items.is_empty() {
        return;
    }
    let mut z = Open::new(dst, Kind::ZSet, index, 0);
    for (m, s) in items {
        put(view, &mut z, m, *s, None);
    }
    z.save(view, index);
}

/// Pop `count` members from the low (or high) end; the key goes when empty.
fn pop(
    view: &mut Layer,
    z: &mut Open,
    max: bool,
    count: u64,
) -> Result<Vec<(Bytes, f64)>, Corrupt> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let range = ZRange {
        by: ZBy::Rank {
            start: 0,
            stop: count.min(i64::MAX as u64) as i64 - 1,
        },
        rev: max,
        limit: None,
    };
    let picked = select(view, &z.key.clone(), &z.coll, &range)?;
    for (m, s) in &picked {
        remove(view, z, m, *s);
    }
    Ok(picked)
}

pub fn write(c: &ZWrite, now: u64, index: u64, view: &mut Layer) -> Result<OpReply, Stop> {
    Ok(match c {
        ZWrite::ZAdd {
            key,
            flags,
            members,
        } => {
            let mut z = Open::get(view, key, Kind::ZSet, now, index)?;
            let (mut added, mut changed) = (0i64, 0i64);
            let mut last = None;
            for (s, m) in members {
                let old = score(view, key, z.coll.gen, m)?;
                let mut new = *s;
                match old {
                    Some(o) => {
                        if flags.nx {
                            continue;
                        }
                        if flags.incr {
                            new = o + s;
                            if new.is_nan() {
                                return Ok(OpReply::Error(ERR_NAN.into()));
                            }
                        }
                        if flags.gt && new <= o || flags.lt && new >= o {
                            continue;
                        }
                        last = Some(new);
                        if new != o {
                            put(view, &mut z, m, new, Some(o));
                            changed += 1;
                        }
                    }
                    None => {
                        if flags.xx {
                            continue;
                        }
                        put(view, &mut z, m, new, None);
                        added += 1;
                        last = Some(new);
                    }
                }
            }
            if z.coll.len > 0 {
                z.save(view, index);
            }
            if flags.incr {
                last.map_or(OpReply::Nil, OpReply::Double)
            } else if flags.ch {
                OpReply::Int(added + changed)
            } else {
                OpReply::Int(added)
            }
        }
        ZWrite::ZIncrBy { key, by, member } => {
            let mut z = Open::get(view, key, Kind::ZSet, now, index)?;
            let old = score(view, key, z.coll.gen, member)?;
            let new = old.unwrap_or(0.0) + by;
            if new.is_nan() {
                return Ok(OpReply::Error(ERR_NAN.into()));
            }
            put(view, &mut z, member, new, old);
            z.save(view, index);
            OpReply::Double(new)
        }
        ZWrite::ZRem { key, members } => {
            let Some(mut z) = existing(view, key, Kind::ZSet, now)? else {
                return Ok(OpReply::Int(0));
            };
            let mut n = 0;
            for m in members {
                if let Some(o) = score(view, key, z.coll.gen, m)? {
                    remove(view, &mut z, m, o);
                    n += 1;
                }
            }
            if n > 0 {
                z.save(view, index);
            }
            OpReply::Int(n)
        }
        ZWrite::ZRemRange { key, by } => {
            let Some(mut z) = existing(view, key, Kind::ZSet, now)? else {
                return Ok(OpReply::Int(0));
            };
            let range = ZRange {
                by: by.clone(),
                rev: false,
                limit: None,
            };
            let picked = select(view, key, &z.coll, &range)?;
            for (m, s) in &picked {
                remove(view, &mut z, m, *s);
            }
            if !picked.is_empty() {
                z.save(view, index);
            }
            OpReply::Int(picked.len() as i64)
        }
        ZWrite::ZPop { key, max, count } => {
            let Some(mut z) = existing(view, key, Kind::ZSet, now)? else {
                return Ok(OpReply::Array(Vec::new()));
            };
            let picked = pop(view, &mut z, *max, count.unwrap_or(1))?;
            z.save(view, index);
            match count {
                None => OpReply::Array(
                    picked
                        .into_iter()
                        .flat_map(|(m, s)| [OpReply::Bulk(m), OpReply::Double(s)])
                        .collect(),
                ),
                Some(_) => scored_reply(picked, true),
            }
        }
        ZWrite::ZMPop { keys, max, count } => {
            for key in keys {
                if let Some(mut z) = existing(view, key, Kind::ZSet, now)? {
                    let picked = pop(view, &mut z, *max, *count)?;
                    z.save(view, index);
                    return Ok(OpReply::Array(vec![
                        OpReply::Bulk(key.clone()),
                        OpReply::Array(
                            picked
                                .into_iter()
                                .map(|(m, s)| {
                                    OpReply::Array(vec![OpReply::Bulk(m), OpReply::Double(s)])
                                })
                                .collect(),
                        ),
                    ]));
                }
            }
            OpReply::NilArray
        }
        ZWrite::ZRangeStore { dst, src, range } => {
            let items = match load(view, src, Kind::ZSet, now)? {
                Some((_, c)) => select(view, src, &c, range)?,
                None => Vec::new(),
            };
            store(view, dst, &items, index);
            OpReply::Int(items.len() as i64)
        }
        ZWrite::ZStore { dst, combine } => {
            let sets = load_all(view, &combine.keys, now)?;
            let items = combine_members(sets, combine);
            store(view, dst, &items, index);
            OpReply::Int(items.len() as i64)
        }
    })
}

pub fn read(c: &ZRead, now: u64, view: &mut dyn ReadView) -> Result<OpReply, Stop> {
    Ok(match c {
        ZRead::ZScore { key, member } => match load(view, key, Kind::ZSet, now)? {
            Some((_, z)) => score(view, key, z.gen, member)?.map_or(OpReply::Nil, OpReply::Double),
            None => OpReply::Nil,
        },
        ZRead::ZMScore { key, members } => {
            let z = load(view, key, Kind::ZSet, now)?;
            let mut out = Vec::with_capacity(members.len());
            for m in members {
                out.push(match &z {
                    Some((_, z)) => {
                        score(view, key, z.gen, m)?.map_or(OpReply::Nil, OpReply::Double)
                    }
                    None => OpReply::Nil,
                });
            }
            OpReply::Array(out)
        }
        ZRead::ZCard { key } => {
            OpReply::Int(load(view, key, Kind::ZSet, now)?.map_or(0, |(_, c)| c.len as i64))
        }
        ZRead::ZCount { key, by } => match load(view, key, Kind::ZSet, now)? {
            Some((_, z)) => {
                let range = ZRange {
                    by: by.clone(),
                    rev: false,
                    limit: None,
                };
                OpReply::Int(select(view, key, &z, &range)?.len() as i64)
            }
            None => OpReply::Int(0),
        },
        ZRead::ZRange {
            key,
            range,
            with_scores,
        } => match load(view, key, Kind::ZSet, now)? {
            Some((_, z)) => scored_reply(select(view, key, &z, range)?, *with_scores),
            None => scored_reply(Vec::new(), *with_scores),
        },
        ZRead::ZRank { key, member, rev } => {
            let Some((_, z)) = load(view, key, Kind::ZSet, now)? else {
                return Ok(OpReply::Nil);
            };
            let Some(s) = score(view, key, z.gen, member)? else {
                return Ok(OpReply::Nil);
            };
            // Members before it in the index: a walk up to its own row.
            let target = score_elem(s, member);
            let mut below = 0i64;
            walk(view, key, z.gen, &[], Some(&target), false, |_, _| {
                below += 1;
                ControlFlow::Continue(())
            })?;
            OpReply::Int(if *rev {
                z.len as i64 - 1 - below
            } else {
                below
            })
        }
        ZRead::ZCombine {
            combine,
            with_scores,
        } => {
            let sets = load_all(view, &combine.keys, now)?;
            scored_reply(combine_members(sets, combine), *with_scores)
        }
        ZRead::ZInterCard { keys, limit } => {
            let sets = load_all(view, keys, now)?;
            let n = combine_members(
                sets,
                &ZCombine {
                    op: SetOp::Inter,
                    keys: keys.clone(),
                    weights: Vec::new(),
                    aggregate: Aggregate::Sum,
                },
            )
            .len() as u64;
            OpReply::Int(if *limit > 0 { n.min(*limit) } else { n } as i64)
        }
        ZRead::ZRandMember {
            key,
            count,
            with_scores,
            seed,
        } => {
            let Some(all) = members_of(view, key, now)? else {
                return Ok(match count {
                    None => OpReply::Nil,
                    Some(_) => OpReply::Array(Vec::new()),
                });
            };
            if load(view, key, Kind::ZSet, now)?.is_none() {
                return Err(Stop::WrongType);
            }
            let mut rows: Vec<(Bytes, f64)> = all.into_iter().collect();
            let mut rng = Rng(*seed);
            match count {
                None => {
                    let i = rng.below(rows.len() as u64) as usize;
                    OpReply::Bulk(rows.swap_remove(i).0)
                }
                Some(n) if *n < 0 => {
                    let picks = (0..n.unsigned_abs())
                        .map(|_| rows[rng.below(rows.len() as u64) as usize].clone())
                        .collect();
                    scored_reply(picks, *with_scores)
                }
                Some(n) => {
                    let n = (*n as u64).min(rows.len() as u64) as usize;
                    for i in 0..n {
                        let j = i + rng.below((rows.len() - i) as u64) as usize;
                        rows.swap(i, j);
                    }
                    rows.truncate(n);
                    scored_reply(rows, *with_scores)
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_keys_sort_as_numbers() {
        let mut xs = [
            f64::NEG_INFINITY,
            -1e300,
            -2.5,
            -1.0,
            -0.0,
            0.0,
            1e-300,
            1.0,
            2.5,
            1e300,
            f64::INFINITY,
        ];
        let keys: Vec<[u8; 8]> = xs.iter().map(|x| score_key(*x)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        xs[4] = 0.0;
        for x in xs {
            assert_eq!(score_of_key(&score_key(x)), x);
        }
    }

    #[test]
    fn rank_windows_follow_redis() {
        assert_eq!(rank_window(0, -1, 5), Some((0, 4)));
        assert_eq!(rank_window(-2, -1, 5), Some((3, 4)));
        assert_eq!(rank_window(3, 1, 5), None);
        assert_eq!(rank_window(5, 10, 5), None);
        assert_eq!(rank_window(-100, 2, 5), Some((0, 2)));
        assert_eq!(rank_window(0, 100, 5), Some((0, 4)));
        assert_eq!(rank_window(0, -1, 0), None);
    }
}
