//! Data commands compiled from their arguments into a [`Plan`] of shard
//! operations: one handler per command (the command table names it),
//! argument parsing with Redis's error texts (SET options, EXPIRE
//! conditions, ...), key routing by slot, and the shard reply turned back
//! into a RESP reply. Pure: no I/O, nothing from the session but the table
//! and the value limit ([`Ctx`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::args::{parse_f64, Args};
use super::errors::{arg_err, wrong_args};
use super::reply::Reply;
use crate::clock::now_ms;
use crate::cluster::plan::{Atomicity, Merge, Part, Plan};
use crate::cluster::routes::TableRoute;
use crate::cluster::txn::{ShardKeys, ShardWork};
use crate::shard::command::TxnOp;
use crate::shard::command::{
    ExpireCond, Expiry, OpReply, ReadOp, SetCond, ShardRequest, WriteCmd, WriteOp,
};
use crate::slot::slot;

/// The error for an argument that must be an integer.
pub(super) const ERR_NOT_INTEGER: &str = "ERR value is not an integer or out of range";

pub(super) const ERR_SYNTAX: &str = "ERR syntax error";

pub(super) fn write(op: WriteOp) -> ShardRequest {
    ShardRequest::Write(WriteCmd {
        now_ms: now_ms(),
        op,
    })
}

/// A WATCHed key: its table, and its version when WATCH ran (0: absent).
#[derive(Debug, Clone)]
pub struct WatchedKey {
    pub table: Arc<TableRoute>,
    pub key: Bytes,
    pub version: u64,
}

/// The per-shard work of a transaction made of `plans` (in order), with the
/// WATCHed keys. Operation indexes count parts across all plans.
pub fn shard_work(plans: &[Plan], watches: &[WatchedKey]) -> Vec<ShardWork> {
    let mut work: Vec<ShardWork> = Vec::new();
    let slot_of = |table: &Arc<TableRoute>, shard: usize, work: &mut Vec<ShardWork>| match work
        .iter()
        .position(|w| w.table.desc.table_id == table.desc.table_id && w.shard == shard)
    {
        Some(i) => i,
        None => {
            work.push(ShardWork {
                table: table.clone(),
                shard,
                ops: Vec::new(),
                watches: Vec::new(),
            });
            work.len() - 1
        }
    };
    let mut index = 0;
    for plan in plans {
        for part in &plan.parts {
            let i = slot_of(&plan.table, part.shard, &mut work);
            work[i].ops.push((index, part.op.clone()));
            index += 1;
        }
    }
    for w in watches {
        let shard = w.table.desc.shard_for_slot(slot(&w.key));
        let i = slot_of(&w.table, shard, &mut work);
        work[i].watches.push((w.key.clone(), w.version));
    }
    work
}

/// Keys grouped by the shard of `table` that owns them.
pub fn shard_keys(table: &Arc<TableRoute>, keys: &[Bytes]) -> Vec<ShardKeys> {
    let mut out: Vec<ShardKeys> = Vec::new();
    for k in keys {
        let shard = table.desc.shard_for_slot(slot(k));
        match out.iter_mut().find(|s| s.shard == shard) {
            Some(s) => s.keys.push(k.clone()),
            None => out.push(ShardKeys {
                table: table.clone(),
                shard,
                keys: vec![k.clone()],
            }),
        }
    }
    out
}

/// What a data command is compiled against: the connection's table and the
/// router's value limit.
pub struct Ctx<'a> {
    pub table: &'a Arc<TableRoute>,
    pub max_value: usize,
}

impl Ctx<'_> {
    /// A plan of one operation on the shard owning `key`.
    pub(super) fn single(&self, key: &Bytes, op: TxnOp) -> Plan {
        Plan::new(
            self.table.clone(),
            vec![Part {
                shard: self.table.desc.shard_for_slot(slot(key)),
                op,
            }],
            Merge::Single,
        )
    }

    /// The one shard holding every key; `None` when they span shards.
    pub(super) fn one_shard<'k>(&self, keys: impl IntoIterator<Item = &'k Bytes>) -> Option<usize> {
        let mut shards = keys
            .into_iter()
            .map(|k| self.table.desc.shard_for_slot(slot(k)));
        let first = shards.next()?;
        shards.all(|s| s == first).then_some(first)
    }

    /// LMPOP / ZMPOP / the blocking pops: `plan` pops from the first of
    /// `keys` holding elements; across shards the router finds it first
    /// ([`Atomicity::FirstFilled`]).
    pub(super) fn pop_first(&self, mut plan: Plan, keys: &[Bytes]) -> Plan {
        if self.one_shard(keys).is_none() {
            plan.atomicity = Atomicity::FirstFilled;
        }
        plan
    }

    /// A write across shards whose `parts` read the inputs, combined by
    /// `merge`, the result replacing `dst` (`Session::run_store`).
    pub(super) fn store(
        &self,
        parts: Vec<Part>,
        merge: Merge,
        dst: Bytes,
        kind: crate::cluster::plan::StoreKind,
    ) -> Plan {
        let mut plan = Plan::new(self.table.clone(), parts, merge);
        plan.store = Some(crate::cluster::plan::StoreTo { dst, kind });
        plan
    }

    pub(super) fn check_value(&self, value: &Bytes) -> Result<(), Reply> {
        if value.len() > self.max_value {
            return Err(Reply::error("ERR value is too large"));
        }
        Ok(())
    }
}

/// `numkeys key [key ...] <direction> [COUNT count]` of LMPOP, ZMPOP and
/// (after their timeout) BLMPOP, BZMPOP, with Redis's errors: the keys, the
/// index in `directions` of the direction given, and the count (1 unless
/// given).
pub(super) fn mpop_args(
    args: &mut Args,
    directions: [&str; 2],
) -> Result<(Vec<Bytes>, usize, u64), Reply> {
    let n = match args.next_i64() {
        Ok(n) if n > 0 => n as usize,
        _ => return Err(Reply::error("ERR numkeys should be greater than 0")),
    };
    // Redis: the direction must follow the keys, or it is a syntax error.
    if n >= args.remaining() {
        return Err(Reply::error(ERR_SYNTAX));
    }
    let keys: Vec<Bytes> = (0..n).map(|_| key(args)).collect();
    let dir = args
        .peek_upper()
        .and_then(|d| directions.iter().position(|w| *w == d))
        .ok_or_else(|| Reply::error(ERR_SYNTAX))?;
    let _ = args.next_bytes();
    let mut count = None;
    while let Some(opt) = args.peek_upper() {
        let _ = args.next_bytes();
        match opt.as_str() {
            "COUNT" if count.is_none() && args.remaining() > 0 => {
                count = match args.next_i64() {
                    Ok(c) if c > 0 => Some(c as u64),
                    _ => return Err(Reply::error("ERR count should be greater than 0")),
                };
            }
            _ => return Err(Reply::error(ERR_SYNTAX)),
        }
    }
    Ok((keys, dir, count.unwrap_or(1)))
}

// The handlers of the data commands, one per command (the command table in
// `commands.rs` names them). Arity was checked before they run, so a
// missing argument reads as empty.

pub(super) fn key(args: &mut Args) -> Bytes {
    args.next_bytes().unwrap_or_default()
}

pub(super) fn read_key(args: &mut Args, cx: &Ctx, op: impl FnOnce(Bytes) -> ReadOp) -> Plan {
    let key = key(args);
    cx.single(&key, TxnOp::Read(op(key.clone())))
}

fn write_key(args: &mut Args, cx: &Ctx, op: impl FnOnce(Bytes) -> WriteOp) -> Plan {
    let key = key(args);
    cx.single(&key, TxnOp::Write(op(key.clone())))
}

/// GET key
pub fn get(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    Ok(read_key(args, cx, |key| ReadOp::Get { key }))
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]`
pub fn set(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let op = parse_set(args, cx.max_value)?;
    let key = op.keys()[0].clone();
    Ok(cx.single(&key, TxnOp::Write(op)))
}

/// SET without options, with or without GET (SETNX, GETSET).
fn plain_set(args: &mut Args, cx: &Ctx, cond: SetCond, get: bool) -> Result<Plan, Reply> {
    let key = key(args);
    let value = args.next_bytes().unwrap_or_default();
    cx.check_value(&value)?;
    let op = WriteOp::Set {
        key: key.clone(),
        value,
        expiry: Expiry::Clear,
        cond,
        get,
    };
    Ok(cx.single(&key, TxnOp::Write(op)))
}

/// SETNX key value: 1 if set, 0 if the key existed.
pub fn setnx(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let mut plan = plain_set(args, cx, SetCond::IfAbsent, false)?;
    plan.merge = Merge::SetNx;
    Ok(plan)
}

/// GETSET key value
pub fn getset(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    plain_set(args, cx, SetCond::Always, true)
}

/// GETDEL key
pub fn getdel(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    Ok(write_key(args, cx, |key| WriteOp::GetDel { key }))
}

/// `GETEX key [EX s|PX ms|EXAT s|PXAT ms|PERSIST]`
pub fn getex(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let op = match parse_getex(args)? {
        // Plain GETEX changes nothing: a read.
        Expiry::Keep => TxnOp::Read(ReadOp::Get { key: key.clone() }),
        expiry => TxnOp::Write(WriteOp::GetEx {
            key: key.clone(),
            expiry,
        }),
    };
    Ok(cx.single(&key, op))
}

fn incr_by(args: &mut Args, cx: &Ctx, by: i64) -> Result<Plan, Reply> {
    Ok(write_key(args, cx, |key| WriteOp::IncrBy { key, by }))
}

/// INCR key
pub fn incr(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    incr_by(args, cx, 1)
}

/// DECR key
pub fn decr(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    incr_by(args, cx, -1)
}

/// The increment argument of INCRBY/DECRBY (second argument).
fn increment(args: &Args) -> Result<i64, Reply> {
    let mut a = args.clone();
    let _ = a.next_bytes();
    a.next_i64().map_err(|_| Reply::error(ERR_NOT_INTEGER))
}

/// INCRBY key increment
pub fn incrby(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let by = increment(args)?;
    incr_by(args, cx, by)
}

/// DECRBY key decrement
pub fn decrby(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let by = increment(args)?
        .checked_neg()
        .ok_or_else(|| Reply::error("ERR decrement would overflow"))?;
    incr_by(args, cx, by)
}

/// INCRBYFLOAT key increment
pub fn incrbyfloat(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let by = args.next_bytes().unwrap_or_default();
    if parse_f64(&by).is_none() {
        return Err(Reply::error("ERR value is not a valid float"));
    }
    Ok(cx.single(
        &key,
        TxnOp::Write(WriteOp::IncrByFloat {
            key: key.clone(),
            by,
        }),
    ))
}

/// APPEND key value
pub fn append(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let value = args.next_bytes().unwrap_or_default();
    let op = WriteOp::Append {
        key: key.clone(),
        value,
        max_len: cx.max_value as u64,
    };
    Ok(cx.single(&key, TxnOp::Write(op)))
}

/// STRLEN key
pub fn strlen(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    Ok(read_key(args, cx, |key| ReadOp::StrLen { key }))
}

/// GETRANGE key start end (and its old name SUBSTR)
pub fn getrange(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let (Ok(start), Ok(end)) = (args.next_i64(), args.next_i64()) else {
        return Err(Reply::error(ERR_NOT_INTEGER));
    };
    Ok(cx.single(
        &key,
        TxnOp::Read(ReadOp::GetRange {
            key: key.clone(),
            start,
            end,
        }),
    ))
}

/// SETRANGE key offset value
pub fn setrange(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let offset = match args.next_i64() {
        Ok(n) if n < 0 => return Err(Reply::error("ERR offset is out of range")),
        Ok(n) => n as u64,
        Err(_) => return Err(Reply::error(ERR_NOT_INTEGER)),
    };
    let value = args.next_bytes().unwrap_or_default();
    let op = WriteOp::SetRange {
        key: key.clone(),
        offset,
        value,
        max_len: cx.max_value as u64,
    };
    Ok(cx.single(&key, TxnOp::Write(op)))
}

fn expire_with(args: &mut Args, cx: &Ctx, unit: ExpireUnit) -> Result<Plan, Reply> {
    let key = key(args);
    let (at_ms, cond) = parse_expire(unit, args, now_ms() as i64)?;
    let op = WriteOp::Expire {
        key: key.clone(),
        at_ms,
        cond,
    };
    Ok(cx.single(&key, TxnOp::Write(op)))
}

/// `EXPIRE key seconds [NX|XX|GT|LT]`
pub fn expire(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    expire_with(args, cx, ExpireUnit::EXPIRE)
}

/// `PEXPIRE key milliseconds [NX|XX|GT|LT]`
pub fn pexpire(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    expire_with(args, cx, ExpireUnit::PEXPIRE)
}

/// `EXPIREAT key unix-time-seconds [NX|XX|GT|LT]`
pub fn expireat(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    expire_with(args, cx, ExpireUnit::EXPIREAT)
}

/// `PEXPIREAT key unix-time-milliseconds [NX|XX|GT|LT]`
pub fn pexpireat(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    expire_with(args, cx, ExpireUnit::PEXPIREAT)
}

/// TTL key
pub fn ttl(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    Ok(read_key(args, cx, |key| ReadOp::Ttl { key, ms: false }))
}

/// PTTL key
pub fn pttl(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    Ok(read_key(args, cx, |key| ReadOp::Ttl { key, ms: true }))
}

/// PERSIST key
pub fn persist(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    Ok(write_key(args, cx, |key| WriteOp::Persist { key }))
}

/// TYPE key
pub fn type_of(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    Ok(read_key(args, cx, |key| ReadOp::Type { key }))
}

/// `DEL key [key ...]` (and UNLINK): a count summed over shards.
pub fn del(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    Ok(per_shard(cx.table, args.rest(), Merge::Sum, |keys| {
        TxnOp::Write(WriteOp::Del { keys })
    }))
}

/// `EXISTS key [key ...]` (and TOUCH): a count summed over shards.
pub fn exists(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    Ok(per_shard(cx.table, args.rest(), Merge::Sum, |keys| {
        TxnOp::Read(ReadOp::Exists { keys })
    }))
}

/// `MGET key [key ...]`: one read per shard, answers put back in key order.
pub fn mget(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let keys = args.rest();
    let n = keys.len();
    let groups = by_shard(cx.table, keys);
    let positions = groups
        .values()
        .map(|ks| ks.iter().map(|(i, _)| *i).collect())
        .collect();
    let parts = groups
        .into_iter()
        .map(|(shard, ks)| Part {
            shard,
            op: TxnOp::Read(ReadOp::MGet {
                keys: ks.into_iter().map(|(_, k)| k).collect(),
            }),
        })
        .collect();
    Ok(Plan::new(
        cx.table.clone(),
        parts,
        Merge::Gather { positions, len: n },
    ))
}

/// MSET/MSETNX's pairs, one part per shard.
fn mset_pairs(args: &mut Args, cx: &Ctx, nx: bool, name: &str) -> Result<Plan, Reply> {
    let rest = args.rest();
    if !rest.len().is_multiple_of(2) {
        return Err(wrong_args(name));
    }
    let mut by: BTreeMap<usize, Vec<(Bytes, Bytes)>> = BTreeMap::new();
    let mut it = rest.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        cx.check_value(&v)?;
        by.entry(cx.table.desc.shard_for_slot(slot(&k)))
            .or_default()
            .push((k, v));
    }
    let multi = by.len() > 1;
    let parts = by
        .into_iter()
        .map(|(shard, pairs)| Part {
            shard,
            op: TxnOp::Write(WriteOp::MSet { pairs, nx }),
        })
        .collect();
    let merge = if multi { Merge::AllOk } else { Merge::Single };
    let mut plan = Plan::new(cx.table.clone(), parts, merge);
    plan.atomicity = if nx {
        Atomicity::AllIfAbsent
    } else {
        Atomicity::AllOrNothing
    };
    Ok(plan)
}

/// `MSET key value [key value ...]`: all keys or none (2PC across shards).
pub fn mset(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    mset_pairs(args, cx, false, "mset")
}

/// `MSETNX key value [key value ...]`: all keys, only if none exists.
pub fn msetnx(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    mset_pairs(args, cx, true, "msetnx")
}

/// Group key positions by shard: shard -> (index in the request, key).
pub(super) fn by_shard(
    table: &TableRoute,
    keys: Vec<Bytes>,
) -> BTreeMap<usize, Vec<(usize, Bytes)>> {
    let mut by_shard: BTreeMap<usize, Vec<(usize, Bytes)>> = BTreeMap::new();
    for (i, k) in keys.into_iter().enumerate() {
        by_shard
            .entry(table.desc.shard_for_slot(slot(&k)))
            .or_default()
            .push((i, k));
    }
    by_shard
}

/// One part per shard holding some of `keys`.
pub(super) fn per_shard(
    table: &Arc<TableRoute>,
    keys: Vec<Bytes>,
    merge: Merge,
    op: impl Fn(Vec<Bytes>) -> TxnOp,
) -> Plan {
    let parts = by_shard(table, keys)
        .into_iter()
        .map(|(shard, ks)| Part {
            shard,
            op: op(ks.into_iter().map(|(_, k)| k).collect()),
        })
        .collect();
    Plan::new(table.clone(), parts, merge)
}

/// Bytes of a RESP bulk string of `len` bytes.
pub(super) fn bulk_size(len: usize) -> usize {
    OpReply::Bulk(Bytes::new()).resp_size() + len + len.checked_ilog10().unwrap_or(0) as usize
}

/// The command a plan runs, for an error message.
pub(super) fn plan_name(plan: &Plan) -> String {
    match plan.parts.first().map(|p| &p.op) {
        Some(TxnOp::Read(ReadOp::MGet { .. })) => "MGET".into(),
        _ => "the reply".into(),
    }
}

/// FLUSHDB / FLUSHALL [ASYNC|SYNC]
pub(super) fn parse_flush(args: &mut Args) -> Result<(), Reply> {
    match args.remaining() {
        0 => Ok(()),
        1 => match args.peek_upper().as_deref() {
            Some("ASYNC") | Some("SYNC") => Ok(()),
            _ => Err(Reply::error(ERR_SYNTAX)),
        },
        _ => Err(Reply::error(ERR_SYNTAX)),
    }
}

/// GETEX key [EX s|PX ms|EXAT s|PXAT ms|PERSIST]: `Keep` for none.
pub(super) fn parse_getex(args: &mut Args) -> Result<Expiry, Reply> {
    let options = parse_string_options(args, false)?;
    Ok(match option_deadline("getex", options.expire)? {
        Some(at) => Expiry::At(at),
        None if options.persist => Expiry::Clear,
        None => Expiry::Keep,
    })
}

/// The options of SET or GETEX (`set: false`).
#[derive(Default)]
struct StringOptions {
    nx: bool,
    xx: bool,
    get: bool,
    keepttl: bool,
    persist: bool,
    /// EX/PX/EXAT/PXAT and its argument, not yet checked.
    expire: Option<(String, Bytes)>,
}

/// Read SET's or GETEX's options like Redis's
/// `parseExtendedStringArgumentsOrReply`: a flag may be repeated, options
/// that conflict (NX and XX, two different expiries, KEEPTTL or PERSIST
/// with an expiry) or an expiry without its argument are a syntax error,
/// and the same expiry option given twice counts once, the last. The
/// expiry's number is checked only after every option was read
/// ([`option_deadline`]), so a syntax error wins over a bad number.
fn parse_string_options(args: &mut Args, set: bool) -> Result<StringOptions, Reply> {
    let mut o = StringOptions::default();
    while let Some(opt) = args.peek_upper() {
        let _ = args.next_bytes();
        let other_expiry = o.expire.as_ref().is_some_and(|(given, _)| *given != opt);
        match opt.as_str() {
            "NX" if set && !o.xx => o.nx = true,
            "XX" if set && !o.nx => o.xx = true,
            "GET" if set => o.get = true,
            "KEEPTTL" if set && o.expire.is_none() => o.keepttl = true,
            "PERSIST" if !set && o.expire.is_none() => o.persist = true,
            "EX" | "PX" | "EXAT" | "PXAT"
                if !o.keepttl && !o.persist && !other_expiry && args.remaining() > 0 =>
            {
                let n = args.next_bytes().map_err(arg_err)?;
                o.expire = Some((opt, n));
            }
            _ => return Err(Reply::error(ERR_SYNTAX)),
        }
    }
    Ok(o)
}

/// The absolute deadline of the expiry option read by
/// [`parse_string_options`], if one was given, with Redis's checks.
fn option_deadline(command: &str, expire: Option<(String, Bytes)>) -> Result<Option<u64>, Reply> {
    let Some((opt, n)) = expire else {
        return Ok(None);
    };
    let n = super::args::parse_i64(&n).ok_or_else(|| Reply::error(ERR_NOT_INTEGER))?;
    deadline(command, &opt, n, now_ms() as i64).map(Some)
}

/// The absolute deadline of SET/GETEX's EX/PX/EXAT/PXAT `n` (which must be
/// positive), or Redis's "invalid expire time" error.
pub(super) fn deadline(command: &str, opt: &str, n: i64, now: i64) -> Result<u64, Reply> {
    let invalid = || Reply::error(format!("ERR invalid expire time in '{command}' command"));
    if n <= 0 {
        return Err(invalid());
    }
    let at = match opt {
        "EX" => n.checked_mul(1000).and_then(|ms| ms.checked_add(now)),
        "PX" => n.checked_add(now),
        "EXAT" => n.checked_mul(1000),
        _ => Some(n),
    };
    at.map(|t| t as u64).ok_or_else(invalid)
}

/// How EXPIRE, PEXPIRE, EXPIREAT and PEXPIREAT read their time argument.
#[derive(Debug, Clone, Copy)]
pub struct ExpireUnit {
    /// The command, for the error message.
    pub command: &'static str,
    /// Seconds rather than milliseconds.
    pub seconds: bool,
    /// From now rather than a Unix time.
    pub relative: bool,
}

impl ExpireUnit {
    pub const EXPIRE: ExpireUnit = ExpireUnit {
        command: "expire",
        seconds: true,
        relative: true,
    };
    pub const PEXPIRE: ExpireUnit = ExpireUnit {
        command: "pexpire",
        seconds: false,
        relative: true,
    };
    pub const EXPIREAT: ExpireUnit = ExpireUnit {
        command: "expireat",
        seconds: true,
        relative: false,
    };
    pub const PEXPIREAT: ExpireUnit = ExpireUnit {
        command: "pexpireat",
        seconds: false,
        relative: false,
    };
}

/// EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT key time [NX|XX|GT|LT]: the absolute
/// deadline in ms (possibly in the past: the key is then deleted) and the
/// condition, with Redis's checks in Redis's order.
pub fn parse_expire(
    unit: ExpireUnit,
    args: &mut Args,
    now: i64,
) -> Result<(i64, ExpireCond), Reply> {
    let time = args.next_bytes().unwrap_or_default();
    let mut cond = ExpireCond::default();
    while args.remaining() > 0 {
        let opt = args.next_bytes().unwrap_or_default();
        match opt.to_ascii_uppercase().as_slice() {
            b"NX" => cond.nx = true,
            b"XX" => cond.xx = true,
            b"GT" => cond.gt = true,
            b"LT" => cond.lt = true,
            _ => {
                return Err(Reply::error(format!(
                    "ERR Unsupported option {}",
                    String::from_utf8_lossy(&opt)
                )))
            }
        }
    }
    if cond.nx && (cond.xx || cond.gt || cond.lt) {
        return Err(Reply::error(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if cond.gt && cond.lt {
        return Err(Reply::error(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    let mut when = super::args::parse_i64(&time).ok_or_else(|| Reply::error(ERR_NOT_INTEGER))?;
    let invalid = || {
        Reply::error(format!(
            "ERR invalid expire time in '{}' command",
            unit.command
        ))
    };
    if unit.seconds {
        when = when.checked_mul(1000).ok_or_else(invalid)?;
    }
    if unit.relative {
        when = when.checked_add(now).ok_or_else(invalid)?;
    }
    Ok((when, cond))
}

/// SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]
pub(super) fn parse_set(args: &mut Args, max_value: usize) -> Result<WriteOp, Reply> {
    let key = args.next_bytes().map_err(arg_err)?;
    let value = args.next_bytes().map_err(arg_err)?;
    if value.len() > max_value {
        return Err(Reply::error("ERR value is too large"));
    }
    let options = parse_string_options(args, true)?;
    let expiry = match option_deadline("set", options.expire)? {
        Some(at) => Expiry::At(at),
        None if options.keepttl => Expiry::Keep,
        None => Expiry::Clear,
    };
    let cond = if options.nx {
        SetCond::IfAbsent
    } else if options.xx {
        SetCond::IfPresent
    } else {
        SetCond::Always
    };
    Ok(WriteOp::Set {
        key,
        value,
        expiry,
        cond,
        get: options.get,
    })
}

pub fn op_reply(r: OpReply) -> Reply {
    match r {
        OpReply::Ok => Reply::ok(),
        OpReply::Nil => Reply::Nil,
        OpReply::Int(n) => Reply::Int(n),
        OpReply::Bulk(b) => Reply::Bulk(b),
        OpReply::Status(s) => Reply::Status(s),
        OpReply::Array(items) => Reply::Array(items.into_iter().map(op_reply).collect()),
        OpReply::Error(e) => Reply::Error(e),
        OpReply::Map(pairs) => Reply::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (op_reply(k), op_reply(v)))
                .collect(),
        ),
        OpReply::Set(items) => Reply::Set(items.into_iter().map(op_reply).collect()),
        OpReply::Double(d) => Reply::Double(d),
        OpReply::NilArray => Reply::NilArray,
        OpReply::Bool(b) => Reply::Bool(b),
        OpReply::Verbatim(s) => Reply::Verbatim(s),
        OpReply::Pairs(pairs) => Reply::Pairs(
            pairs
                .into_iter()
                .map(|(k, v)| (op_reply(k), op_reply(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_options() {
        let parse = |s: &str| {
            let parts: Vec<Bytes> = s
                .split(' ')
                .map(|p| Bytes::copy_from_slice(p.as_bytes()))
                .collect();
            parse_set(
                &mut {
                    let mut a = Args::new(parts);
                    let _ = &mut a;
                    a
                },
                100,
            )
        };
        assert!(matches!(
            parse("set k v NX"),
            Ok(WriteOp::Set {
                cond: SetCond::IfAbsent,
                ..
            })
        ));
        assert!(parse("set k v NX XX").is_err());
        assert!(parse("set k v EX 10 PX 5").is_err());
        assert!(parse("set k v EX 0").is_err());
        assert!(parse("set k v EX notanumber").is_err());
        assert!(matches!(
            parse("set k v KEEPTTL GET"),
            Ok(WriteOp::Set {
                expiry: Expiry::Keep,
                get: true,
                ..
            })
        ));
        assert!(parse(&format!("set k {}", "x".repeat(101))).is_err());
    }

    fn args(s: &str) -> Args {
        Args::new(
            s.split(' ')
                .map(|p| Bytes::copy_from_slice(p.as_bytes()))
                .collect(),
        )
    }

    #[test]
    fn expire_options() {
        let p = |s: &str| {
            let mut a = args(s);
            a.next_bytes().unwrap();
            let unit = match a.name() {
                "expire" => ExpireUnit::EXPIRE,
                "pexpire" => ExpireUnit::PEXPIRE,
                "expireat" => ExpireUnit::EXPIREAT,
                _ => ExpireUnit::PEXPIREAT,
            };
            parse_expire(unit, &mut a, 1_000)
        };
        assert_eq!(p("expire k 10").unwrap(), (11_000, ExpireCond::default()));
        assert_eq!(p("pexpire k 10").unwrap().0, 1_010);
        assert_eq!(p("expireat k 10").unwrap().0, 10_000);
        assert_eq!(p("pexpireat k -10").unwrap().0, -10);
        let e = |s: &str| match p(s) {
            Err(Reply::Error(e)) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            e("expire k 10 NX XX"),
            "ERR NX and XX, GT or LT options at the same time are not compatible"
        );
        assert_eq!(
            e("expire k 10 gt lt"),
            "ERR GT and LT options at the same time are not compatible"
        );
        assert_eq!(e("expire k 10 foo"), "ERR Unsupported option foo");
        assert_eq!(
            e("expire k x"),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            e("expire k 9223372036854775807"),
            "ERR invalid expire time in 'expire' command"
        );
        assert_eq!(
            e("pexpire k 9223372036854775807"),
            "ERR invalid expire time in 'pexpire' command"
        );
        assert!(p("expire k 10 xx gt").is_ok());
    }
}

#[cfg(test)]
mod compile_tests;
