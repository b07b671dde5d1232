//! Data commands of the keyspace and string families beyond the basic ones
//! in [`super::compile`]: SETEX, PSETEX, EXPIRETIME, PEXPIRETIME, RENAME,
//! RENAMENX, COPY, OBJECT and LCS, compiled into [`Plan`]s with Redis's
//! error texts. Pure, like `compile`.
//!
//! RENAME, RENAMENX and COPY with both keys on one shard are one
//! [`WriteOp::Move`] (one Raft entry). With the keys on two shards the plan
//! is marked [`Atomicity::Move`]: outside MULTI the router runs it as a
//! snapshot read and a two-phase transaction (`Session::run_move`); inside
//! MULTI it is refused, since a queued operation cannot carry a value read
//! on another shard. LCS reads both strings and computes the answer on the
//! router ([`Merge::Lcs`]), so its keys may be anywhere.

use bytes::Bytes;

use super::args::{parse_i64, Args};
use super::compile::{deadline, key, read_key, Ctx, ERR_NOT_INTEGER, ERR_SYNTAX};
use super::errors::wrong_args;
use super::reply::Reply;
use crate::cluster::plan::{Atomicity, LcsReply, Merge, Part, Plan};
use crate::shard::command::{
    Expiry, MoveMode, ObjectField, ReadOp, SetCond, TxnOp, WriteOp, ERR_SAME_OBJECT,
};
use crate::slot::slot;

/// SETEX / PSETEX key time value: SET with EX / PX, Redis's checks.
fn set_expiring(args: &mut Args, cx: &Ctx, command: &str, opt: &str) -> Result<Plan, Reply> {
    let key = key(args);
    let time = args.next_bytes().unwrap_or_default();
    let value = args.next_bytes().unwrap_or_default();
    let n = parse_i64(&time).ok_or_else(|| Reply::error(ERR_NOT_INTEGER))?;
    let at = deadline(command, opt, n, crate::clock::now_ms() as i64)?;
    cx.check_value(&value)?;
    let op = WriteOp::Set {
        key: key.clone(),
        value,
        expiry: Expiry::At(at),
        cond: SetCond::Always,
        get: false,
    };
    Ok(cx.single(&key, TxnOp::Write(op)))
}

/// SETEX key seconds value
pub fn setex(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    set_expiring(args, cx, "setex", "EX")
}

/// PSETEX key milliseconds value
pub fn psetex(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    set_expiring(args, cx, "psetex", "PX")
}

/// EXPIRETIME key: Unix seconds, -1 without expiry, -2 when absent.
pub fn expiretime(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    Ok(read_key(args, cx, |key| ReadOp::ExpireTime {
        key,
        ms: false,
    }))
}

/// PEXPIRETIME key: Unix milliseconds, -1, -2.
pub fn pexpiretime(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    Ok(read_key(args, cx, |key| ReadOp::ExpireTime {
        key,
        ms: true,
    }))
}

/// The plan of a move of `src` to `dst`: one [`WriteOp::Move`] when both
/// keys are on one shard, else a read of each marked [`Atomicity::Move`].
fn move_plan(cx: &Ctx, src: Bytes, dst: Bytes, mode: MoveMode) -> Plan {
    let shard_of = |k: &Bytes| cx.table.desc.shard_for_slot(slot(k));
    let (from, to) = (shard_of(&src), shard_of(&dst));
    if from == to {
        return cx.single(&src.clone(), TxnOp::Write(WriteOp::Move { src, dst, mode }));
    }
    let parts = vec![
        Part {
            shard: from,
            op: TxnOp::Read(ReadOp::Get { key: src }),
        },
        Part {
            shard: to,
            op: TxnOp::Read(ReadOp::Get { key: dst }),
        },
    ];
    let mut plan = Plan::new(cx.table.clone(), parts, Merge::Single);
    plan.atomicity = Atomicity::Move(mode);
    plan
}

fn two_keys(args: &mut Args) -> (Bytes, Bytes) {
    let src = key(args);
    (src, key(args))
}

/// RENAME key newkey
pub fn rename(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let (src, dst) = two_keys(args);
    Ok(move_plan(cx, src, dst, MoveMode::Rename))
}

/// RENAMENX key newkey
pub fn renamenx(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let (src, dst) = two_keys(args);
    Ok(move_plan(cx, src, dst, MoveMode::RenameNx))
}

/// `COPY source destination [DB destination-db] [REPLACE]`. shoal's
/// databases are tables (SELECT picks the table with that index), and a
/// copy stays in the connection's table: DB must name the current one,
/// any other answers Redis Cluster's error for a copy to another database.
pub fn copy(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let (src, dst) = two_keys(args);
    let mut replace = false;
    while let Some(opt) = args.peek_upper() {
        let _ = args.next_bytes();
        match opt.as_str() {
            "REPLACE" => replace = true,
            "DB" if args.remaining() > 0 => {
                let n = args.next_bytes().unwrap_or_default();
                let db = parse_i64(&n).ok_or_else(|| Reply::error(ERR_NOT_INTEGER))?;
                if i32::try_from(db).is_err() {
                    return Err(Reply::error(
                        "ERR value is out of range, value must between -2147483648 and 2147483647",
                    ));
                }
                if db < 0 || db > u32::MAX as i64 {
                    return Err(Reply::error("ERR DB index is out of range"));
                }
                if db != cx.table.desc.db_index as i64 {
                    return Err(Reply::error(
                        "ERR Copying to another database is not allowed in cluster mode",
                    ));
                }
            }
            _ => return Err(Reply::error(ERR_SYNTAX)),
        }
    }
    if src == dst {
        return Err(Reply::error(ERR_SAME_OBJECT));
    }
    Ok(move_plan(cx, src, dst, MoveMode::Copy { replace }))
}

/// OBJECT HELP's lines (Redis 7's text).
const OBJECT_HELP: &[&str] = &[
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Return the access frequency index of the <key>. The returned integer is",
    "    proportional to the logarithm of the recent access frequency of the key.",
    "IDLETIME <key>",
    "    Return the idle time of the <key>, that is the approximated number of",
    "    seconds elapsed since the last access to the key.",
    "REFCOUNT <key>",
    "    Return the number of references of the value associated with the specified",
    "    <key>.",
    "HELP",
    "    Prints this help.",
];

/// The OBJECT subcommand that reads a key, if `sub` is one.
fn object_field(sub: &[u8]) -> Option<ObjectField> {
    Some(match sub.to_ascii_lowercase().as_slice() {
        b"encoding" => ObjectField::Encoding,
        b"freq" => ObjectField::Freq,
        b"idletime" => ObjectField::IdleTime,
        b"refcount" => ObjectField::RefCount,
        _ => return None,
    })
}

/// OBJECT's key position (the command table's [`crate::resp::spec::KeySpec::Find`]):
/// the third argument of a keyed subcommand given with exactly one key.
pub fn object_keys(args: &[Bytes]) -> Vec<usize> {
    match args {
        [_, sub, _] if object_field(sub).is_some() => vec![2],
        _ => Vec::new(),
    }
}

/// `OBJECT ENCODING|FREQ|IDLETIME|REFCOUNT key` and `OBJECT HELP`. HELP is
/// answered here, with no shard involved (inside MULTI too: it answers
/// the text at once instead of `QUEUED`).
pub fn object(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let sub = args.next_bytes().unwrap_or_default();
    let lower = String::from_utf8_lossy(&sub).to_ascii_lowercase();
    let argc = args.remaining() + 2;
    if lower == "help" {
        if argc != 2 {
            return Err(wrong_args("object|help"));
        }
        return Err(Reply::Array(
            OBJECT_HELP.iter().map(|l| Reply::status(*l)).collect(),
        ));
    }
    let Some(field) = object_field(&sub) else {
        return Err(Reply::error(format!(
            "ERR unknown subcommand '{}'. Try OBJECT HELP.",
            String::from_utf8_lossy(&sub)
        )));
    };
    if argc != 3 {
        return Err(wrong_args(&format!("object|{lower}")));
    }
    Ok(read_key(args, cx, |key| ReadOp::Object { key, field }))
}

/// `LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN]`: both
/// strings are read (a missing key is the empty string) and the answer is
/// computed on the router, within `crate::lcs::MAX_LCS_CELLS`.
pub fn lcs(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let (a, b) = two_keys(args);
    let mut how = LcsReply::default();
    while let Some(opt) = args.peek_upper() {
        let _ = args.next_bytes();
        match opt.as_str() {
            "IDX" => how.idx = true,
            "LEN" => how.len = true,
            "WITHMATCHLEN" => how.with_match_len = true,
            "MINMATCHLEN" if args.remaining() > 0 => {
                let n = args.next_bytes().unwrap_or_default();
                let n = parse_i64(&n).ok_or_else(|| Reply::error(ERR_NOT_INTEGER))?;
                how.min_match = n.max(0) as u64;
            }
            _ => return Err(Reply::error(ERR_SYNTAX)),
        }
    }
    if how.len && how.idx {
        return Err(Reply::error(
            "ERR If you want both the length and indexes, please just use IDX.",
        ));
    }
    let part = |k: Bytes| Part {
        shard: cx.table.desc.shard_for_slot(slot(&k)),
        op: TxnOp::Read(ReadOp::Get { key: k }),
    };
    Ok(Plan::new(
        cx.table.clone(),
        vec![part(a), part(b)],
        Merge::Lcs(how),
    ))
}
