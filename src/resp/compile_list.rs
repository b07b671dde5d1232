//! The list commands: argument parsing with Redis's error texts, compiled
//! into [`LWrite`] and [`LRead`] operations. LMOVE and RPOPLPUSH between
//! lists of different shards run as transactions (`Session::run_transfer`);
//! LMPOP over lists of different shards finds the first list holding
//! elements and pops from it in one transaction
//! (`Session::run_first_filled`).

use bytes::Bytes;

use super::args::Args;
use super::compile::{key, mpop_args, Ctx, ERR_NOT_INTEGER, ERR_SYNTAX};
use super::reply::Reply;
use crate::cluster::plan::{Atomicity, Plan};
use crate::shard::coll::{CollRead, CollWrite};
use crate::shard::command::{ReadOp, TxnOp, WriteOp};
use crate::shard::list::{End, LRead, LWrite};

fn lwrite(cx: &Ctx, key: &Bytes, op: LWrite) -> Plan {
    cx.single(key, TxnOp::Write(WriteOp::Coll(CollWrite::L(op))))
}

fn lread(cx: &Ctx, key: &Bytes, op: LRead) -> Plan {
    cx.single(key, TxnOp::Read(ReadOp::Coll(CollRead::L(op))))
}

fn int(args: &mut Args) -> Result<i64, Reply> {
    args.next_i64().map_err(|_| Reply::error(ERR_NOT_INTEGER))
}

fn push(args: &mut Args, cx: &Ctx, end: End, only_if_exists: bool) -> Result<Plan, Reply> {
    let key = key(args);
    let values = args.rest();
    for v in &values {
        cx.check_value(v)?;
    }
    Ok(lwrite(
        cx,
        &key,
        LWrite::Push {
            key: key.clone(),
            end,
            values,
            only_if_exists,
        },
    ))
}

/// `LPUSH key element [element ...]`
pub fn lpush(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    push(args, cx, End::Left, false)
}

/// `RPUSH key element [element ...]`
pub fn rpush(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    push(args, cx, End::Right, false)
}

/// `LPUSHX key element [element ...]`
pub fn lpushx(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    push(args, cx, End::Left, true)
}

/// `RPUSHX key element [element ...]`
pub fn rpushx(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    push(args, cx, End::Right, true)
}

fn pop(args: &mut Args, cx: &Ctx, end: End) -> Result<Plan, Reply> {
    let key = key(args);
    let count = match args.remaining() {
        0 => None,
        1 => match args.next_i64() {
            Ok(n) if n >= 0 => Some(n as u64),
            _ => return Err(Reply::error("ERR value is out of range, must be positive")),
        },
        _ => return Err(super::errors::wrong_args(args.name())),
    };
    Ok(lwrite(
        cx,
        &key,
        LWrite::Pop {
            key: key.clone(),
            end,
            count,
        },
    ))
}

/// `LPOP key [count]`
pub fn lpop(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    pop(args, cx, End::Left)
}

/// `RPOP key [count]`
pub fn rpop(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    pop(args, cx, End::Right)
}

/// `LLEN key`
pub fn llen(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    Ok(lread(cx, &key, LRead::LLen { key: key.clone() }))
}

/// `LINDEX key index`
pub fn lindex(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let index = int(args)?;
    Ok(lread(
        cx,
        &key,
        LRead::LIndex {
            key: key.clone(),
            index,
        },
    ))
}

/// `LRANGE key start stop`
pub fn lrange(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let start = int(args)?;
    let stop = int(args)?;
    Ok(lread(
        cx,
        &key,
        LRead::LRange {
            key: key.clone(),
            start,
            stop,
        },
    ))
}

/// `LSET key index element`
pub fn lset(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let index = int(args)?;
    let value = args.next_bytes().unwrap_or_default();
    cx.check_value(&value)?;
    Ok(lwrite(
        cx,
        &key,
        LWrite::LSet {
            key: key.clone(),
            index,
            value,
        },
    ))
}

/// `LINSERT key BEFORE|AFTER pivot element`
pub fn linsert(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let before = match args.peek_upper().as_deref() {
        Some("BEFORE") => true,
        Some("AFTER") => false,
        _ => return Err(Reply::error(ERR_SYNTAX)),
    };
    let _ = args.next_bytes();
    let pivot = args.next_bytes().unwrap_or_default();
    let value = args.next_bytes().unwrap_or_default();
    cx.check_value(&value)?;
    Ok(lwrite(
        cx,
        &key,
        LWrite::LInsert {
            key: key.clone(),
            before,
            pivot,
            value,
        },
    ))
}

/// `LREM key count element`
pub fn lrem(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let count = int(args)?;
    let value = args.next_bytes().unwrap_or_default();
    Ok(lwrite(
        cx,
        &key,
        LWrite::LRem {
            key: key.clone(),
            count,
            value,
        },
    ))
}

/// `LTRIM key start stop`
pub fn ltrim(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let start = int(args)?;
    let stop = int(args)?;
    Ok(lwrite(
        cx,
        &key,
        LWrite::LTrim {
            key: key.clone(),
            start,
            stop,
        },
    ))
}

/// `LPOS key element [RANK rank] [COUNT num-matches] [MAXLEN len]`
pub fn lpos(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let value = args.next_bytes().unwrap_or_default();
    let mut rank = 1;
    let mut count = None;
    let mut max_len = 0;
    while let Some(opt) = args.peek_upper() {
        let _ = args.next_bytes();
        if args.remaining() == 0 {
            return Err(Reply::error(ERR_SYNTAX));
        }
        match opt.as_str() {
            "RANK" => {
                rank = int(args)?;
                if rank == 0 || rank == i64::MIN {
                    return Err(Reply::error(
                        "ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list",
                    ));
                }
            }
            // Redis answers a non-integer as it answers a negative.
            "COUNT" => match args.next_i64() {
                Ok(n) if n >= 0 => count = Some(n as u64),
                _ => return Err(Reply::error("ERR COUNT can't be negative")),
            },
            "MAXLEN" => match args.next_i64() {
                Ok(n) if n >= 0 => max_len = n as u64,
                _ => return Err(Reply::error("ERR MAXLEN can't be negative")),
            },
            _ => return Err(Reply::error(ERR_SYNTAX)),
        }
    }
    Ok(lread(
        cx,
        &key,
        LRead::LPos {
            key: key.clone(),
            value,
            rank,
            count,
            max_len,
        },
    ))
}

fn end_arg(b: Option<String>) -> Result<End, Reply> {
    match b.as_deref() {
        Some("LEFT") => Ok(End::Left),
        Some("RIGHT") => Ok(End::Right),
        _ => Err(Reply::error(ERR_SYNTAX)),
    }
}

/// `LMOVE source destination LEFT|RIGHT LEFT|RIGHT`
pub fn lmove(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let src = key(args);
    let dst = key(args);
    let from = end_arg(args.peek_upper())?;
    let _ = args.next_bytes();
    let to = end_arg(args.peek_upper())?;
    Ok(transfer(cx, src, dst, from, to))
}

/// `RPOPLPUSH source destination`
pub fn rpoplpush(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let src = key(args);
    let dst = key(args);
    Ok(transfer(cx, src, dst, End::Right, End::Left))
}

/// LMOVE's plan: one entry when both lists share a shard, else a
/// transaction run by the router (`Session::run_transfer`).
fn transfer(cx: &Ctx, src: Bytes, dst: Bytes, from: End, to: End) -> Plan {
    let across = cx.one_shard([&src, &dst]).is_none();
    let mut plan = lwrite(cx, &src.clone(), LWrite::Move { src, dst, from, to });
    if across {
        plan.atomicity = Atomicity::Transfer;
    }
    plan
}

/// `LMPOP numkeys key [key ...] LEFT|RIGHT [COUNT count]`
pub fn lmpop(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let (keys, dir, count) = mpop_args(args, ["LEFT", "RIGHT"])?;
    let end = if dir == 0 { End::Left } else { End::Right };
    let plan = lwrite(
        cx,
        &keys[0].clone(),
        LWrite::MPop {
            keys: keys.clone(),
            end,
            count,
        },
    );
    Ok(cx.pop_first(plan, &keys))
}
