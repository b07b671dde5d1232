//! The hash and set commands: argument parsing with Redis's error texts,
//! compiled into shard operations ([`CollWrite`], [`CollRead`]); HSCAN and
//! SSCAN, whose cursors live in the router's cursor table.
//!
//! Multi-key set commands whose keys share a shard are one operation there
//! (one Raft entry for the `*STORE` forms and SMOVE). Reads across shards
//! (SINTER, SUNION, SDIFF, SINTERCARD) read every set in one atomic
//! transaction and combine them here; SMOVE across shards is a transaction
//! too (`Session::run_transfer`), and so are the `*STORE` forms: the sets
//! read as SUNION reads them, the result stored (`Session::run_store`).

use bytes::Bytes;

use super::args::{ArgError, Args};
use super::compile::{key, Ctx, ERR_NOT_INTEGER, ERR_SYNTAX};
use super::errors::wrong_args;
use super::reply::Reply;
use super::scan::{decode_cursor, encode_cursor, parse_cursor};
use super::session::Session;
use crate::cluster::plan::{Atomicity, Merge, Part, Plan, StoreKind};
use crate::shard::command::{
    CollRead, CollWrite, HSetReply, HashPart, Kind, OpReply, ReadOp, SetOp, TxnOp, WriteOp,
    MAX_SCAN_COUNT,
};
use crate::slot::slot;

/// HRANDFIELD / SRANDMEMBER / ZRANDMEMBER with a count of -2^63.
pub(super) const ERR_COUNT_RANGE: &str =
    "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807";

fn coll_write(cx: &Ctx, key: &Bytes, op: CollWrite) -> Plan {
    cx.single(key, TxnOp::Write(WriteOp::Coll(op)))
}

fn coll_read(cx: &Ctx, key: &Bytes, op: CollRead) -> Plan {
    cx.single(key, TxnOp::Read(ReadOp::Coll(op)))
}

fn check_values<'a>(cx: &Ctx, values: impl IntoIterator<Item = &'a Bytes>) -> Result<(), Reply> {
    for v in values {
        cx.check_value(v)?;
    }
    Ok(())
}

fn int_arg(args: &mut Args) -> Result<i64, Reply> {
    args.next_i64().map_err(|_| Reply::error(ERR_NOT_INTEGER))
}

fn hset_like(args: &mut Args, cx: &Ctx, reply: HSetReply) -> Result<Plan, Reply> {
    let key = key(args);
    let rest = args.rest();
    if rest.is_empty() || !rest.len().is_multiple_of(2) {
        return Err(wrong_args(args.name()));
    }
    check_values(cx, &rest)?;
    let pairs = rest
        .chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect();
    Ok(coll_write(
        cx,
        &key,
        CollWrite::HSet {
            key: key.clone(),
            pairs,
            reply,
        },
    ))
}

/// `HSET key field value [field value ...]`
pub fn hset(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    hset_like(args, cx, HSetReply::Added)
}

/// `HMSET key field value [field value ...]`
pub fn hmset(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    hset_like(args, cx, HSetReply::Ok)
}

/// `HSETNX key field value`
pub fn hsetnx(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    hset_like(args, cx, HSetReply::IfAbsent)
}

/// `HDEL key field [field ...]`
pub fn hdel(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let fields = args.rest();
    Ok(coll_write(
        cx,
        &key,
        CollWrite::HDel {
            key: key.clone(),
            fields,
        },
    ))
}

/// `HINCRBY key field increment`
pub fn hincrby(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let field = args.next_bytes().unwrap_or_default();
    let by = int_arg(args)?;
    cx.check_value(&field)?;
    Ok(coll_write(
        cx,
        &key,
        CollWrite::HIncrBy {
            key: key.clone(),
            field,
            by,
        },
    ))
}

/// `HINCRBYFLOAT key field increment`
pub fn hincrbyfloat(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let field = args.next_bytes().unwrap_or_default();
    let by = args.next_bytes().unwrap_or_default();
    match crate::num::parse_f64(&by) {
        Some(f) if f.is_finite() => {}
        Some(_) => return Err(Reply::error("ERR value is NaN or Infinity")),
        None => return Err(Reply::error("ERR value is not a valid float")),
    }
    cx.check_value(&field)?;
    Ok(coll_write(
        cx,
        &key,
        CollWrite::HIncrByFloat {
            key: key.clone(),
            field,
            by,
        },
    ))
}

/// `HGET key field`
pub fn hget(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let field = args.next_bytes().unwrap_or_default();
    Ok(coll_read(
        cx,
        &key,
        CollRead::HGet {
            key: key.clone(),
            field,
        },
    ))
}

/// `HMGET key field [field ...]`
pub fn hmget(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let fields = args.rest();
    Ok(coll_read(
        cx,
        &key,
        CollRead::HMGet {
            key: key.clone(),
            fields,
        },
    ))
}

/// `HLEN key`
pub fn hlen(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    Ok(coll_read(cx, &key, CollRead::HLen { key: key.clone() }))
}

/// `HSTRLEN key field`
pub fn hstrlen(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let field = args.next_bytes().unwrap_or_default();
    Ok(coll_read(
        cx,
        &key,
        CollRead::HStrLen {
            key: key.clone(),
            field,
        },
    ))
}

/// `HEXISTS key field`
pub fn hexists(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let field = args.next_bytes().unwrap_or_default();
    Ok(coll_read(
        cx,
        &key,
        CollRead::HExists {
            key: key.clone(),
            field,
        },
    ))
}

fn hash_part(args: &mut Args, cx: &Ctx, part: HashPart) -> Result<Plan, Reply> {
    let key = key(args);
    Ok(coll_read(
        cx,
        &key,
        CollRead::HGetAll {
            key: key.clone(),
            part,
        },
    ))
}

/// `HGETALL key`
pub fn hgetall(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    hash_part(args, cx, HashPart::All)
}

/// `HKEYS key`
pub fn hkeys(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    hash_part(args, cx, HashPart::Keys)
}

/// `HVALS key`
pub fn hvals(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    hash_part(args, cx, HashPart::Values)
}

/// `HRANDFIELD key [count [WITHVALUES]]`
pub fn hrandfield(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let count = match args.remaining() {
        0 => None,
        _ => Some(int_arg(args)?),
    };
    let with_values = match args.next_bytes() {
        Err(_) => false,
        Ok(w) if w.eq_ignore_ascii_case(b"withvalues") && args.remaining() == 0 => true,
        Ok(_) => return Err(Reply::error(ERR_SYNTAX)),
    };
    // Redis refuses a count whose reply could not be built.
    match count {
        Some(i64::MIN) => return Err(Reply::error(ERR_COUNT_RANGE)),
        Some(n) if with_values && n.unsigned_abs() > (i64::MAX / 2) as u64 => {
            return Err(Reply::error("ERR value is out of range"));
        }
        _ => {}
    }
    Ok(coll_read(
        cx,
        &key,
        CollRead::HRandField {
            key: key.clone(),
            count,
            with_values,
            seed: rand::random(),
        },
    ))
}

/// `SADD key member [member ...]`
pub fn sadd(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let members = args.rest();
    check_values(cx, &members)?;
    Ok(coll_write(
        cx,
        &key,
        CollWrite::SAdd {
            key: key.clone(),
            members,
        },
    ))
}

/// `SREM key member [member ...]`
pub fn srem(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let members = args.rest();
    Ok(coll_write(
        cx,
        &key,
        CollWrite::SRem {
            key: key.clone(),
            members,
        },
    ))
}

/// `SMEMBERS key`
pub fn smembers(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    Ok(coll_read(cx, &key, CollRead::SMembers { key: key.clone() }))
}

/// `SISMEMBER key member`
pub fn sismember(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let member = args.next_bytes().unwrap_or_default();
    Ok(coll_read(
        cx,
        &key,
        CollRead::SIsMember {
            key: key.clone(),
            member,
        },
    ))
}

/// `SMISMEMBER key member [member ...]`
pub fn smismember(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let members = args.rest();
    Ok(coll_read(
        cx,
        &key,
        CollRead::SMIsMember {
            key: key.clone(),
            members,
        },
    ))
}

/// `SCARD key`
pub fn scard(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    Ok(coll_read(cx, &key, CollRead::SCard { key: key.clone() }))
}

/// `SPOP key [count]`
pub fn spop(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let count = match args.remaining() {
        0 => None,
        1 => match args.next_i64() {
            Ok(n) if n >= 0 => Some(n as u64),
            _ => return Err(Reply::error("ERR value is out of range, must be positive")),
        },
        _ => return Err(Reply::error(ERR_SYNTAX)),
    };
    Ok(coll_write(
        cx,
        &key,
        CollWrite::SPop {
            key: key.clone(),
            count,
            seed: rand::random(),
        },
    ))
}

/// `SRANDMEMBER key [count]`
pub fn srandmember(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let count = match args.remaining() {
        0 => None,
        1 => match int_arg(args)? {
            i64::MIN => return Err(Reply::error(ERR_COUNT_RANGE)),
            n => Some(n),
        },
        _ => return Err(Reply::error(ERR_SYNTAX)),
    };
    Ok(coll_read(
        cx,
        &key,
        CollRead::SRandMember {
            key: key.clone(),
            count,
            seed: rand::random(),
        },
    ))
}

/// `SMOVE source destination member`
pub fn smove(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let src = key(args);
    let dst = key(args);
    let member = args.next_bytes().unwrap_or_default();
    cx.check_value(&member)?;
    let across = cx.one_shard([&src, &dst]).is_none();
    let mut plan = coll_write(cx, &src.clone(), CollWrite::SMove { src, dst, member });
    if across {
        // A transaction run by the router (`Session::run_transfer`).
        plan.atomicity = crate::cluster::plan::Atomicity::Transfer;
    }
    Ok(plan)
}

/// SINTER / SUNION / SDIFF (`card`: SINTERCARD with its limit).
fn combine(cx: &Ctx, op: SetOp, keys: Vec<Bytes>, card: Option<u64>) -> Plan {
    let refs: Vec<&Bytes> = keys.iter().collect();
    if let Some(shard) = cx.one_shard(refs) {
        let read = match card {
            Some(limit) => CollRead::SInterCard { keys, limit },
            None => CollRead::SCombine { op, keys },
        };
        let mut plan = cx.single(&Bytes::new(), TxnOp::Read(ReadOp::Coll(read)));
        plan.parts[0].shard = shard;
        return plan;
    }
    // Every set read in one transaction, combined here.
    let parts = keys
        .into_iter()
        .map(|key| Part {
            shard: cx.table.desc.shard_for_slot(slot(&key)),
            op: TxnOp::Read(ReadOp::Coll(CollRead::SMembers { key })),
        })
        .collect();
    let mut plan = Plan::new(cx.table.clone(), parts, Merge::Sets { op, card });
    plan.atomicity = Atomicity::AllOrNothing;
    plan
}

/// `SINTER key [key ...]`
pub fn sinter(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    Ok(combine(cx, SetOp::Inter, args.rest(), None))
}

/// `SUNION key [key ...]`
pub fn sunion(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    Ok(combine(cx, SetOp::Union, args.rest(), None))
}

/// `SDIFF key [key ...]`
pub fn sdiff(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    Ok(combine(cx, SetOp::Diff, args.rest(), None))
}

/// `SINTERCARD numkeys key [key ...] [LIMIT limit]`
pub fn sintercard(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let keys = numkeys(args)?;
    let mut limit = 0;
    while args.remaining() > 0 {
        let opt = args.next_bytes().unwrap_or_default();
        if opt.eq_ignore_ascii_case(b"limit") && args.remaining() > 0 {
            limit = match args.next_i64() {
                Ok(n) if n < 0 => return Err(Reply::error("ERR LIMIT can't be negative")),
                Ok(n) => n as u64,
                Err(_) => return Err(Reply::error("ERR LIMIT can't be negative")),
            };
        } else {
            return Err(Reply::error(ERR_SYNTAX));
        }
    }
    Ok(combine(cx, SetOp::Inter, keys, Some(limit)))
}

/// The keys of a `numkeys key [key ...]` argument list.
fn numkeys(args: &mut Args) -> Result<Vec<Bytes>, Reply> {
    let n = match args.next_i64() {
        Ok(n) if n <= 0 => return Err(Reply::error("ERR numkeys should be greater than 0")),
        Ok(n) => n as usize,
        Err(ArgError::NotInteger) | Err(_) => {
            return Err(Reply::error("ERR numkeys should be greater than 0"))
        }
    };
    if n > args.remaining() {
        return Err(Reply::error(
            "ERR Number of keys can't be greater than number of args",
        ));
    }
    Ok((0..n)
        .map(|_| args.next_bytes().unwrap_or_default())
        .collect())
}

/// The key positions of `SINTERCARD numkeys key...` (for COMMAND GETKEYS).
pub fn numkeys_at_1(argv: &[Bytes]) -> Vec<usize> {
    let n = argv
        .get(1)
        .and_then(|b| crate::num::parse_i64(b))
        .filter(|n| *n > 0)
        .unwrap_or(0) as usize;
    (2..(2 + n).min(argv.len())).collect()
}

fn store(args: &mut Args, cx: &Ctx, op: SetOp) -> Result<Plan, Reply> {
    let dst = key(args);
    let keys = args.rest();
    let mut all: Vec<&Bytes> = keys.iter().collect();
    all.push(&dst);
    if cx.one_shard(all).is_none() {
        // The inputs read as SINTER / SUNION / SDIFF, the result stored.
        let read = combine(cx, op, keys, None);
        return Ok(cx.store(read.parts, read.merge, dst, StoreKind::Set));
    }
    Ok(coll_write(
        cx,
        &dst.clone(),
        CollWrite::SStore { op, dst, keys },
    ))
}

/// `SINTERSTORE destination key [key ...]`
pub fn sinterstore(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    store(args, cx, SetOp::Inter)
}

/// `SUNIONSTORE destination key [key ...]`
pub fn sunionstore(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    store(args, cx, SetOp::Union)
}

/// `SDIFFSTORE destination key [key ...]`
pub fn sdiffstore(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    store(args, cx, SetOp::Diff)
}

impl Session {
    /// `HSCAN key cursor [MATCH pattern] [COUNT count] [NOVALUES]`
    pub(super) async fn hscan(&mut self, args: &mut Args) -> Reply {
        self.scan_coll(args, Kind::Hash).await
    }

    /// `SSCAN key cursor [MATCH pattern] [COUNT count]`
    pub(super) async fn sscan(&mut self, args: &mut Args) -> Reply {
        self.scan_coll(args, Kind::Set).await
    }

    /// `ZSCAN key cursor [MATCH pattern] [COUNT count]`
    pub(super) async fn zscan(&mut self, args: &mut Args) -> Reply {
        self.scan_coll(args, Kind::ZSet).await
    }

    /// One page of a hash's or set's elements. The cursor is a token of the
    /// router's cursor table naming the last element returned (0: from the
    /// start); a token it does not know restarts the scan (elements may
    /// repeat, never go missing).
    async fn scan_coll(&mut self, args: &mut Args, kind: Kind) -> Reply {
        let table = match self.current_table() {
            Ok(t) => t,
            Err(e) => return super::errors::cluster_err(e),
        };
        let plan = match self.scan_coll_plan(args, kind, &table) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let Some(Part {
            shard,
            op: TxnOp::Read(op),
        }) = plan.parts.into_iter().next()
        else {
            return Reply::error("ERR internal: a scan reads");
        };
        let reply = match self
            .shared
            .client
            .execute(&table, shard, self.read(op))
            .await
        {
            Ok(r) => r,
            Err(e) => return super::errors::cluster_err(e),
        };
        self.scan_coll_reply(reply)
    }

    /// HSCAN / SSCAN / ZSCAN compiled against `table`: one read of the key's
    /// shard, from where the cursor's token says (`Merge::CollScan`; inside
    /// MULTI it is queued like any plan).
    pub(super) fn scan_coll_plan(
        &self,
        args: &mut Args,
        kind: Kind,
        table: &std::sync::Arc<crate::cluster::routes::TableRoute>,
    ) -> Result<Plan, Reply> {
        let key = key(args);
        let Some(cursor) = args.next_bytes().ok().and_then(|c| parse_cursor(&c)) else {
            return Err(Reply::error("ERR invalid cursor"));
        };
        let mut count = 10u64;
        let mut pattern = None;
        let mut no_values = false;
        while let Some(opt) = args.peek_upper() {
            let _ = args.next_bytes();
            match opt.as_str() {
                "COUNT" => match args.next_i64() {
                    Ok(n) if n < 1 => return Err(Reply::error(ERR_SYNTAX)),
                    Ok(n) => count = (n as u64).min(MAX_SCAN_COUNT),
                    Err(ArgError::NotInteger) => return Err(Reply::error(ERR_NOT_INTEGER)),
                    Err(_) => return Err(Reply::error(ERR_SYNTAX)),
                },
                "MATCH" => match args.next_bytes() {
                    Ok(p) => pattern = Some(p),
                    Err(_) => return Err(Reply::error(ERR_SYNTAX)),
                },
                "NOVALUES" if kind == Kind::Hash => no_values = true,
                _ => return Err(Reply::error(ERR_SYNTAX)),
            }
        }
        let (_, token) = decode_cursor(cursor);
        let after = if token == 0 {
            Bytes::new()
        } else {
            self.shared.scan_cursors.get(token).unwrap_or_default()
        };
        let cx = Ctx {
            table,
            max_value: self.shared.config.max_value_len,
        };
        let read = CollRead::Scan {
            key: key.clone(),
            kind,
            after,
            count,
            pattern,
            no_values,
        };
        let mut plan = cx.single(&key, TxnOp::Read(ReadOp::Coll(read)));
        plan.merge = Merge::CollScan;
        Ok(plan)
    }

    /// A scan page as the client sees it: the cursor (a new token naming
    /// the page's last element, or 0 at the end) and the elements.
    pub(super) fn scan_coll_reply(&self, reply: OpReply) -> Reply {
        let OpReply::Array(mut parts) = reply else {
            return super::compile::op_reply(reply);
        };
        let items = match parts.pop() {
            Some(OpReply::Array(items)) => items,
            _ => Vec::new(),
        };
        let cursor = match parts.pop() {
            Some(OpReply::Bulk(last)) => encode_cursor(0, self.shared.scan_cursors.put(last)),
            _ => 0,
        };
        Reply::Array(vec![
            Reply::bulk(cursor.to_string()),
            // Scores go as bulk strings, in RESP3 too (as Redis's ZSCAN).
            Reply::Array(
                items
                    .into_iter()
                    .map(|i| match i {
                        OpReply::Double(d) => Reply::bulk(super::reply::format_double(d)),
                        i => super::compile::op_reply(i),
                    })
                    .collect(),
            ),
        ])
    }
}
