//! The sorted-set commands: argument parsing with Redis's error texts,
//! compiled into [`ZWrite`] and [`ZRead`] operations; ZSCAN.
//!
//! As for sets, a command whose keys share a shard is one operation there;
//! ZUNION / ZINTER / ZDIFF / ZINTERCARD across shards read each input in one
//! atomic transaction and combine on the router ([`Merge::ZSets`]); the
//! writing forms across shards (ZUNIONSTORE..., ZRANGESTORE) read the same
//! way and store the result in one transaction (`Session::run_store`), and
//! ZMPOP pops from the first filled key (`Session::run_first_filled`).

use bytes::Bytes;

use super::args::Args;
use super::compile::{key, mpop_args, Ctx, ERR_NOT_INTEGER, ERR_SYNTAX};
use super::compile_coll::ERR_COUNT_RANGE;
use super::errors::wrong_args;
use super::reply::Reply;
use crate::cluster::plan::{Atomicity, Merge, Part, Plan, StoreKind};
use crate::num::parse_f64;
use crate::shard::coll::{CollRead, CollWrite, SetOp};
use crate::shard::command::{ReadOp, TxnOp, WriteOp};
use crate::shard::zset::{
    Aggregate, LexBound, ScoreBound, ZAddFlags, ZBy, ZCombine, ZRange, ZRead, ZWrite,
};
use crate::slot::slot;

const ERR_FLOAT: &str = "ERR value is not a valid float";
const ERR_MINMAX_FLOAT: &str = "ERR min or max is not a float";
const ERR_LEX: &str = "ERR min or max not valid string range item";

fn zwrite(cx: &Ctx, key: &Bytes, op: ZWrite) -> Plan {
    cx.single(key, TxnOp::Write(WriteOp::Coll(CollWrite::Z(op))))
}

fn zread(cx: &Ctx, key: &Bytes, op: ZRead) -> Plan {
    cx.single(key, TxnOp::Read(ReadOp::Coll(CollRead::Z(op))))
}

/// A score argument (`inf`, `-inf`, `+inf` accepted; NaN refused).
fn score_arg(b: &[u8]) -> Option<f64> {
    parse_f64(b).filter(|f| !f.is_nan())
}

fn score_bound(b: &[u8]) -> Result<ScoreBound, Reply> {
    let (exclusive, text) = match b.first() {
        Some(b'(') => (true, &b[1..]),
        _ => (false, b),
    };
    match score_arg(text) {
        Some(value) => Ok(ScoreBound { value, exclusive }),
        None => Err(Reply::error(ERR_MINMAX_FLOAT)),
    }
}

fn lex_bound(b: &[u8]) -> Result<LexBound, Reply> {
    match b {
        b"-" => Ok(LexBound::Min),
        b"+" => Ok(LexBound::Max),
        [b'[', rest @ ..] => Ok(LexBound::Incl(Bytes::copy_from_slice(rest))),
        [b'(', rest @ ..] => Ok(LexBound::Excl(Bytes::copy_from_slice(rest))),
        _ => Err(Reply::error(ERR_LEX)),
    }
}

fn rank(b: &[u8]) -> Result<i64, Reply> {
    crate::num::parse_i64(b).ok_or_else(|| Reply::error(ERR_NOT_INTEGER))
}

/// `ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...]`
pub fn zadd(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let mut flags = ZAddFlags::default();
    while let Some(opt) = args.peek_upper() {
        match opt.as_str() {
            "NX" => flags.nx = true,
            "XX" => flags.xx = true,
            "GT" => flags.gt = true,
            "LT" => flags.lt = true,
            "CH" => flags.ch = true,
            "INCR" => flags.incr = true,
            _ => break,
        }
        let _ = args.next_bytes();
    }
    let rest = args.rest();
    if rest.is_empty() || !rest.len().is_multiple_of(2) {
        return Err(Reply::error(ERR_SYNTAX));
    }
    if flags.nx && flags.xx {
        return Err(Reply::error(
            "ERR XX and NX options at the same time are not compatible",
        ));
    }
    if [flags.gt, flags.lt, flags.nx]
        .iter()
        .filter(|f| **f)
        .count()
        > 1
    {
        return Err(Reply::error(
            "ERR GT, LT, and/or NX options at the same time are not compatible",
        ));
    }
    let mut members = Vec::with_capacity(rest.len() / 2);
    for pair in rest.chunks(2) {
        let Some(s) = score_arg(&pair[0]) else {
            return Err(Reply::error(ERR_FLOAT));
        };
        cx.check_value(&pair[1])?;
        members.push((s, pair[1].clone()));
    }
    if flags.incr && members.len() > 1 {
        return Err(Reply::error(
            "ERR INCR option supports a single increment-element pair",
        ));
    }
    Ok(zwrite(
        cx,
        &key,
        ZWrite::ZAdd {
            key: key.clone(),
            flags,
            members,
        },
    ))
}

/// `ZINCRBY key increment member`
pub fn zincrby(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let by = args.next_bytes().unwrap_or_default();
    let Some(by) = score_arg(&by) else {
        return Err(Reply::error(ERR_FLOAT));
    };
    let member = args.next_bytes().unwrap_or_default();
    cx.check_value(&member)?;
    Ok(zwrite(
        cx,
        &key,
        ZWrite::ZIncrBy {
            key: key.clone(),
            by,
            member,
        },
    ))
}

/// `ZREM key member [member ...]`
pub fn zrem(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let members = args.rest();
    Ok(zwrite(
        cx,
        &key,
        ZWrite::ZRem {
            key: key.clone(),
            members,
        },
    ))
}

/// `ZSCORE key member`
pub fn zscore(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let member = args.next_bytes().unwrap_or_default();
    Ok(zread(
        cx,
        &key,
        ZRead::ZScore {
            key: key.clone(),
            member,
        },
    ))
}

/// `ZMSCORE key member [member ...]`
pub fn zmscore(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let members = args.rest();
    Ok(zread(
        cx,
        &key,
        ZRead::ZMScore {
            key: key.clone(),
            members,
        },
    ))
}

/// `ZCARD key`
pub fn zcard(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    Ok(zread(cx, &key, ZRead::ZCard { key: key.clone() }))
}

/// `ZCOUNT key min max`
pub fn zcount(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let min = score_bound(&args.next_bytes().unwrap_or_default())?;
    let max = score_bound(&args.next_bytes().unwrap_or_default())?;
    Ok(zread(
        cx,
        &key,
        ZRead::ZCount {
            key: key.clone(),
            by: ZBy::Score { min, max },
        },
    ))
}

/// `ZLEXCOUNT key min max`
pub fn zlexcount(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let min = lex_bound(&args.next_bytes().unwrap_or_default())?;
    let max = lex_bound(&args.next_bytes().unwrap_or_default())?;
    Ok(zread(
        cx,
        &key,
        ZRead::ZCount {
            key: key.clone(),
            by: ZBy::Lex { min, max },
        },
    ))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum By {
    Rank,
    Score,
    Lex,
}

/// The shared parser of ZRANGE and its older forms: `min max` (already
/// read, in the order the client gave them), then options. `by` and `rev`
/// are preset by the older forms, which take only their own options.
fn parse_range(
    args: &mut Args,
    a: Bytes,
    b: Bytes,
    mut by: By,
    mut rev: bool,
    full: bool,
    store: bool,
) -> Result<(ZRange, bool), Reply> {
    let mut with_scores = false;
    let mut limit = None;
    // As in Redis's `zrangeGenericCommand`: REV and BYSCORE/BYLEX once
    // each, and only where the command has not fixed them already.
    let (mut rev_given, mut by_given) = (!full, !full);
    while let Some(opt) = args.peek_upper() {
        let _ = args.next_bytes();
        match opt.as_str() {
            "WITHSCORES" if !store => with_scores = true,
            "LIMIT" if args.remaining() >= 2 => {
                let offset = args.next_i64().map_err(|_| Reply::error(ERR_NOT_INTEGER))?;
                let count = args.next_i64().map_err(|_| Reply::error(ERR_NOT_INTEGER))?;
                limit = Some((offset, count));
            }
            "REV" if !rev_given => (rev, rev_given) = (true, true),
            "BYSCORE" if !by_given => (by, by_given) = (By::Score, true),
            "BYLEX" if !by_given => (by, by_given) = (By::Lex, true),
            _ => return Err(Reply::error(ERR_SYNTAX)),
        }
    }
    // Redis takes a LIMIT whose count is -1 (its "no limit") as no LIMIT.
    if by == By::Rank && limit.is_some_and(|(_, count)| count != -1) {
        return Err(Reply::error(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ));
    }
    if by == By::Rank {
        limit = None;
    }
    if with_scores && by == By::Lex {
        return Err(Reply::error(
            "ERR syntax error, WITHSCORES not supported in combination with BYLEX",
        ));
    }
    // Reverse ranges by score or lex name the upper bound first.
    let (lo, hi) = if rev && by != By::Rank {
        (b, a)
    } else {
        (a, b)
    };
    let by = match by {
        By::Rank => ZBy::Rank {
            start: rank(&lo)?,
            stop: rank(&hi)?,
        },
        By::Score => ZBy::Score {
            min: score_bound(&lo)?,
            max: score_bound(&hi)?,
        },
        By::Lex => ZBy::Lex {
            min: lex_bound(&lo)?,
            max: lex_bound(&hi)?,
        },
    };
    Ok((ZRange { by, rev, limit }, with_scores))
}

fn range_cmd(args: &mut Args, cx: &Ctx, by: By, rev: bool, full: bool) -> Result<Plan, Reply> {
    let key = key(args);
    let a = args.next_bytes().unwrap_or_default();
    let b = args.next_bytes().unwrap_or_default();
    let (range, with_scores) = parse_range(args, a, b, by, rev, full, false)?;
    Ok(zread(
        cx,
        &key,
        ZRead::ZRange {
            key: key.clone(),
            range,
            with_scores,
        },
    ))
}

/// `ZRANGE key start stop [BYSCORE|BYLEX] [REV] [LIMIT offset count] [WITHSCORES]`
pub fn zrange(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    range_cmd(args, cx, By::Rank, false, true)
}

/// `ZREVRANGE key start stop [WITHSCORES]`
pub fn zrevrange(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    range_cmd(args, cx, By::Rank, true, false)
}

/// `ZRANGEBYSCORE key min max [WITHSCORES] [LIMIT offset count]`
pub fn zrangebyscore(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    range_cmd(args, cx, By::Score, false, false)
}

/// `ZREVRANGEBYSCORE key max min [WITHSCORES] [LIMIT offset count]`
pub fn zrevrangebyscore(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    range_cmd(args, cx, By::Score, true, false)
}

/// `ZRANGEBYLEX key min max [LIMIT offset count]`
pub fn zrangebylex(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    range_cmd(args, cx, By::Lex, false, false)
}

/// `ZREVRANGEBYLEX key max min [LIMIT offset count]`
pub fn zrevrangebylex(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    range_cmd(args, cx, By::Lex, true, false)
}

/// `ZRANGESTORE dst src min max [BYSCORE|BYLEX] [REV] [LIMIT offset count]`
pub fn zrangestore(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let dst = key(args);
    let src = key(args);
    let a = args.next_bytes().unwrap_or_default();
    let b = args.next_bytes().unwrap_or_default();
    let (range, _) = parse_range(args, a, b, By::Rank, false, true, true)?;
    if cx.one_shard([&dst, &src]).is_none() {
        // The range read with its scores, stored.
        let read = zread(
            cx,
            &src.clone(),
            ZRead::ZRange {
                key: src,
                range,
                with_scores: true,
            },
        );
        return Ok(cx.store(read.parts, read.merge, dst, StoreKind::ZSet));
    }
    Ok(zwrite(
        cx,
        &dst.clone(),
        ZWrite::ZRangeStore { dst, src, range },
    ))
}

/// `ZRANK key member` / `ZREVRANK key member`
pub fn zrank(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    rank_cmd(args, cx, false)
}

pub fn zrevrank(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    rank_cmd(args, cx, true)
}

fn rank_cmd(args: &mut Args, cx: &Ctx, rev: bool) -> Result<Plan, Reply> {
    let key = key(args);
    let member = args.next_bytes().unwrap_or_default();
    if args.remaining() > 0 {
        return Err(wrong_args(args.name()));
    }
    Ok(zread(
        cx,
        &key,
        ZRead::ZRank {
            key: key.clone(),
            member,
            rev,
        },
    ))
}

fn remrange(args: &mut Args, cx: &Ctx, by: By) -> Result<Plan, Reply> {
    let key = key(args);
    let a = args.next_bytes().unwrap_or_default();
    let b = args.next_bytes().unwrap_or_default();
    let by = match by {
        By::Rank => ZBy::Rank {
            start: rank(&a)?,
            stop: rank(&b)?,
        },
        By::Score => ZBy::Score {
            min: score_bound(&a)?,
            max: score_bound(&b)?,
        },
        By::Lex => ZBy::Lex {
            min: lex_bound(&a)?,
            max: lex_bound(&b)?,
        },
    };
    Ok(zwrite(
        cx,
        &key,
        ZWrite::ZRemRange {
            key: key.clone(),
            by,
        },
    ))
}

/// `ZREMRANGEBYRANK key start stop`
pub fn zremrangebyrank(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    remrange(args, cx, By::Rank)
}

/// `ZREMRANGEBYSCORE key min max`
pub fn zremrangebyscore(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    remrange(args, cx, By::Score)
}

/// `ZREMRANGEBYLEX key min max`
pub fn zremrangebylex(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    remrange(args, cx, By::Lex)
}

fn pop_cmd(args: &mut Args, cx: &Ctx, max: bool) -> Result<Plan, Reply> {
    let key = key(args);
    let count = match args.remaining() {
        0 => None,
        1 => match args.next_i64() {
            Ok(n) if n >= 0 => Some(n as u64),
            _ => return Err(Reply::error("ERR value is out of range, must be positive")),
        },
        _ => return Err(Reply::error(ERR_SYNTAX)),
    };
    Ok(zwrite(
        cx,
        &key,
        ZWrite::ZPop {
            key: key.clone(),
            max,
            count,
        },
    ))
}

/// `ZPOPMIN key [count]`
pub fn zpopmin(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    pop_cmd(args, cx, false)
}

/// `ZPOPMAX key [count]`
pub fn zpopmax(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    pop_cmd(args, cx, true)
}

/// `numkeys key [key ...]` as Redis's set-algebra commands read it.
fn numkeys(args: &mut Args, name: &str) -> Result<Vec<Bytes>, Reply> {
    let n = match args.next_i64() {
        Ok(n) if n > 0 => n as usize,
        Ok(_) => {
            return Err(Reply::error(format!(
                "ERR at least 1 input key is needed for '{}' command",
                name.to_ascii_lowercase()
            )))
        }
        Err(_) => return Err(Reply::error(ERR_NOT_INTEGER)),
    };
    if n > args.remaining() {
        return Err(Reply::error(ERR_SYNTAX));
    }
    Ok((0..n)
        .map(|_| args.next_bytes().unwrap_or_default())
        .collect())
}

/// `ZMPOP numkeys key [key ...] MIN|MAX [COUNT count]`
pub fn zmpop(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let (keys, dir, count) = mpop_args(args, ["MIN", "MAX"])?;
    let max = dir == 1;
    let plan = zwrite(
        cx,
        &keys[0].clone(),
        ZWrite::ZMPop {
            keys: keys.clone(),
            max,
            count,
        },
    );
    Ok(cx.pop_first(plan, &keys))
}

/// The WEIGHTS / AGGREGATE / WITHSCORES options after the keys.
fn combine_opts(
    args: &mut Args,
    op: SetOp,
    keys: Vec<Bytes>,
    store: bool,
) -> Result<(ZCombine, bool), Reply> {
    let mut weights = Vec::new();
    let mut aggregate = Aggregate::Sum;
    let mut with_scores = false;
    while let Some(opt) = args.peek_upper() {
        let _ = args.next_bytes();
        match opt.as_str() {
            "WEIGHTS" if op != SetOp::Diff && args.remaining() >= keys.len() => {
                weights.clear();
                for _ in 0..keys.len() {
                    let w = args.next_bytes().unwrap_or_default();
                    match score_arg(&w) {
                        Some(w) => weights.push(w),
                        None => return Err(Reply::error("ERR weight value is not a float")),
                    }
                }
            }
            "AGGREGATE" if op != SetOp::Diff => {
                aggregate = match args.peek_upper().as_deref() {
                    Some("SUM") => Aggregate::Sum,
                    Some("MIN") => Aggregate::Min,
                    Some("MAX") => Aggregate::Max,
                    _ => return Err(Reply::error(ERR_SYNTAX)),
                };
                let _ = args.next_bytes();
            }
            "WITHSCORES" if !store => with_scores = true,
            _ => return Err(Reply::error(ERR_SYNTAX)),
        }
    }
    Ok((
        ZCombine {
            op,
            keys,
            weights,
            aggregate,
        },
        with_scores,
    ))
}

fn combine_read(args: &mut Args, cx: &Ctx, op: SetOp) -> Result<Plan, Reply> {
    let name = args.name().to_string();
    let keys = numkeys(args, &name)?;
    let (combine, with_scores) = combine_opts(args, op, keys, false)?;
    let refs: Vec<&Bytes> = combine.keys.iter().collect();
    if let Some(shard) = cx.one_shard(refs) {
        let mut plan = zread(
            cx,
            &Bytes::new(),
            ZRead::ZCombine {
                combine,
                with_scores,
            },
        );
        plan.parts[0].shard = shard;
        return Ok(plan);
    }
    let merge = Merge::ZSets {
        combine: combine.clone(),
        with_scores,
    };
    Ok(cross_shard_read(cx, &combine, merge))
}

/// Read every input (all its members with scores) in one transaction and
/// combine them on the router.
fn cross_shard_read(cx: &Ctx, combine: &ZCombine, merge: Merge) -> Plan {
    let parts = combine
        .keys
        .iter()
        .map(|key| Part {
            shard: cx.table.desc.shard_for_slot(slot(key)),
            op: TxnOp::Read(ReadOp::Coll(CollRead::Z(ZRead::ZCombine {
                combine: ZCombine {
                    op: SetOp::Union,
                    keys: vec![key.clone()],
                    weights: Vec::new(),
                    aggregate: Aggregate::Sum,
                },
                with_scores: true,
            }))),
        })
        .collect();
    let mut plan = Plan::new(cx.table.clone(), parts, merge);
    plan.atomicity = Atomicity::AllOrNothing;
    plan
}

/// `ZUNION numkeys key [key ...] [WEIGHTS w ...] [AGGREGATE SUM|MIN|MAX] [WITHSCORES]`
pub fn zunion(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    combine_read(args, cx, SetOp::Union)
}

/// `ZINTER ...` as ZUNION.
pub fn zinter(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    combine_read(args, cx, SetOp::Inter)
}

/// `ZDIFF numkeys key [key ...] [WITHSCORES]`
pub fn zdiff(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    combine_read(args, cx, SetOp::Diff)
}

fn combine_store(args: &mut Args, cx: &Ctx, op: SetOp) -> Result<Plan, Reply> {
    let dst = key(args);
    let name = args.name().to_string();
    let keys = numkeys(args, &name)?;
    let (combine, _) = combine_opts(args, op, keys, true)?;
    let mut refs: Vec<&Bytes> = combine.keys.iter().collect();
    refs.push(&dst);
    if cx.one_shard(refs).is_none() {
        // The inputs read as ZUNION ... WITHSCORES, the result stored.
        let read = match cx.one_shard(&combine.keys) {
            Some(shard) => {
                let mut plan = zread(
                    cx,
                    &Bytes::new(),
                    ZRead::ZCombine {
                        combine,
                        with_scores: true,
                    },
                );
                plan.parts[0].shard = shard;
                plan
            }
            None => {
                let merge = Merge::ZSets {
                    combine: combine.clone(),
                    with_scores: true,
                };
                cross_shard_read(cx, &combine, merge)
            }
        };
        return Ok(cx.store(read.parts, read.merge, dst, StoreKind::ZSet));
    }
    Ok(zwrite(cx, &dst.clone(), ZWrite::ZStore { dst, combine }))
}

/// `ZUNIONSTORE destination numkeys key [key ...] [WEIGHTS ...] [AGGREGATE ...]`
pub fn zunionstore(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    combine_store(args, cx, SetOp::Union)
}

pub fn zinterstore(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    combine_store(args, cx, SetOp::Inter)
}

pub fn zdiffstore(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    combine_store(args, cx, SetOp::Diff)
}

/// `ZINTERCARD numkeys key [key ...] [LIMIT limit]`
pub fn zintercard(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let keys = numkeys(args, "zintercard")?;
    let mut limit = 0;
    while args.remaining() > 0 {
        let opt = args.next_bytes().unwrap_or_default();
        if opt.eq_ignore_ascii_case(b"limit") && args.remaining() > 0 {
            limit = match args.next_i64() {
                Ok(n) if n >= 0 => n as u64,
                _ => return Err(Reply::error("ERR LIMIT can't be negative")),
            };
        } else {
            return Err(Reply::error(ERR_SYNTAX));
        }
    }
    let refs: Vec<&Bytes> = keys.iter().collect();
    if let Some(shard) = cx.one_shard(refs) {
        let mut plan = zread(cx, &Bytes::new(), ZRead::ZInterCard { keys, limit });
        plan.parts[0].shard = shard;
        return Ok(plan);
    }
    let combine = ZCombine {
        op: SetOp::Inter,
        keys,
        weights: Vec::new(),
        aggregate: Aggregate::Sum,
    };
    Ok(cross_shard_read(cx, &combine, Merge::ZInterCard { limit }))
}

/// `ZRANDMEMBER key [count [WITHSCORES]]`
pub fn zrandmember(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let count = match args.remaining() {
        0 => None,
        _ => Some(args.next_i64().map_err(|_| Reply::error(ERR_NOT_INTEGER))?),
    };
    let with_scores = match args.next_bytes() {
        Err(_) => false,
        Ok(w) if w.eq_ignore_ascii_case(b"withscores") && args.remaining() == 0 => true,
        Ok(_) => return Err(Reply::error(ERR_SYNTAX)),
    };
    match count {
        Some(i64::MIN) => return Err(Reply::error(ERR_COUNT_RANGE)),
        Some(n) if with_scores && n.unsigned_abs() > (i64::MAX / 2) as u64 => {
            return Err(Reply::error("ERR value is out of range"));
        }
        _ => {}
    }
    Ok(zread(
        cx,
        &key,
        ZRead::ZRandMember {
            key: key.clone(),
            count,
            with_scores,
            seed: rand::random(),
        },
    ))
}

/// The key positions of `ZUNIONSTORE dst numkeys key...` (and ZINTERSTORE,
/// ZDIFFSTORE): the destination and the inputs.
pub fn keys_of_store(argv: &[Bytes]) -> Vec<usize> {
    let n = argv
        .get(2)
        .and_then(|b| crate::num::parse_i64(b))
        .filter(|n| *n > 0)
        .unwrap_or(0) as usize;
    std::iter::once(1)
        .chain(3..(3 + n).min(argv.len()))
        .collect()
}
