//! The bitmap commands (SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP): argument
//! parsing with Redis's error texts, compiled into string operations
//! ([`crate::shard::bitmap`]). BITOP over keys of different shards reads the
//! sources and stores the result in one transaction (`Session::run_store`).

use bytes::Bytes;

use super::args::Args;
use super::compile::{key, Ctx, ERR_NOT_INTEGER, ERR_SYNTAX};
use super::reply::Reply;
use crate::cluster::plan::{Plan, StoreKind};
use crate::shard::command::{BitOpKind, BitRange, ReadOp, TxnOp, WriteOp};

const ERR_OFFSET: &str = "ERR bit offset is not an integer or out of range";

/// Redis's largest bit offset: 2^32 - 1 (a 512 MiB string).
const MAX_BIT_OFFSET: u64 = (1 << 32) - 1;

fn offset(args: &mut Args) -> Result<u64, Reply> {
    let b = args.next_bytes().unwrap_or_default();
    crate::num::parse_u64(&b)
        .filter(|o| *o <= MAX_BIT_OFFSET)
        .ok_or_else(|| Reply::error(ERR_OFFSET))
}

/// `SETBIT key offset value`
pub fn setbit(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let offset = offset(args)?;
    let on = match &args.next_bytes().unwrap_or_default()[..] {
        b"0" => false,
        b"1" => true,
        _ => return Err(Reply::error("ERR bit is not an integer or out of range")),
    };
    let op = WriteOp::SetBit {
        key: key.clone(),
        offset,
        on,
        max_len: cx.max_value as u64,
    };
    Ok(cx.single(&key, TxnOp::Write(op)))
}

/// `GETBIT key offset`
pub fn getbit(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let offset = offset(args)?;
    Ok(cx.single(
        &key,
        TxnOp::Read(ReadOp::GetBit {
            key: key.clone(),
            offset,
        }),
    ))
}

/// `[start end [BYTE|BIT]]` of BITCOUNT; BITPOS's `[start [end [BYTE|BIT]]]`
/// when `end_optional`. Returns the range and whether an end was given.
fn range(args: &mut Args, end_optional: bool) -> Result<(Option<BitRange>, bool), Reply> {
    if args.remaining() == 0 {
        return Ok((None, false));
    }
    if !end_optional && args.remaining() == 1 {
        return Err(Reply::error(ERR_SYNTAX));
    }
    let start = args.next_i64().map_err(|_| Reply::error(ERR_NOT_INTEGER))?;
    let (end, end_given) = match args.remaining() {
        0 => (-1, false),
        _ => (
            args.next_i64().map_err(|_| Reply::error(ERR_NOT_INTEGER))?,
            true,
        ),
    };
    let bits = match args.peek_upper().as_deref() {
        None => false,
        Some("BYTE") => false,
        Some("BIT") => true,
        Some(_) => return Err(Reply::error(ERR_SYNTAX)),
    };
    let _ = args.next_bytes();
    if args.remaining() > 0 {
        return Err(Reply::error(ERR_SYNTAX));
    }
    Ok((Some(BitRange { start, end, bits }), end_given))
}

/// `BITCOUNT key [start end [BYTE|BIT]]`
pub fn bitcount(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let (range, _) = range(args, false)?;
    Ok(cx.single(
        &key,
        TxnOp::Read(ReadOp::BitCount {
            key: key.clone(),
            range,
        }),
    ))
}

/// `BITPOS key bit [start [end [BYTE|BIT]]]`
pub fn bitpos(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let key = key(args);
    let bit = match &args.next_bytes().unwrap_or_default()[..] {
        b"0" => false,
        b"1" => true,
        _ => return Err(Reply::error("ERR The bit argument must be 1 or 0.")),
    };
    let (range, end_given) = range(args, true)?;
    Ok(cx.single(
        &key,
        TxnOp::Read(ReadOp::BitPos {
            key: key.clone(),
            bit,
            range,
            end_given,
        }),
    ))
}

/// `BITOP AND|OR|XOR|NOT destkey key [key ...]`
pub fn bitop(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    let op = match args.peek_upper().as_deref() {
        Some("AND") => BitOpKind::And,
        Some("OR") => BitOpKind::Or,
        Some("XOR") => BitOpKind::Xor,
        Some("NOT") => BitOpKind::Not,
        _ => return Err(Reply::error(ERR_SYNTAX)),
    };
    let _ = args.next_bytes();
    let dst = key(args);
    let keys = args.rest();
    if op == BitOpKind::Not && keys.len() != 1 {
        return Err(Reply::error(
            "ERR BITOP NOT must be called with a single source key.",
        ));
    }
    if cx.one_shard(std::iter::once(&dst).chain(&keys)).is_none() {
        // Each source read, combined on the router, stored at `dst`.
        let parts = keys
            .into_iter()
            .map(|key| crate::cluster::plan::Part {
                shard: cx.table.desc.shard_for_slot(crate::slot::slot(&key)),
                op: TxnOp::Read(ReadOp::Get { key }),
            })
            .collect();
        let merge = crate::cluster::plan::Merge::BitOp(op);
        return Ok(cx.store(parts, merge, dst, StoreKind::String));
    }
    Ok(cx.single(&dst.clone(), TxnOp::Write(WriteOp::BitOp { op, dst, keys })))
}

/// Key positions of `BITOP op destkey key...`.
pub fn bitop_keys(argv: &[Bytes]) -> Vec<usize> {
    (2..argv.len()).collect()
}
