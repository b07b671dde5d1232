//! The bitmap commands (SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP, BITFIELD,
//! BITFIELD_RO): argument parsing with Redis's error texts, compiled into
//! string operations ([`crate::shard::bitmap`]). BITOP over keys of
//! different shards reads the sources and stores the result in one
//! transaction (`Session::run_store`).

use bytes::Bytes;

use super::args::Args;
use super::compile::{key, Ctx, ERR_NOT_INTEGER, ERR_SYNTAX};
use super::reply::Reply;
use crate::cluster::plan::{Plan, StoreKind};
use crate::shard::bitmap::ERR_BITFIELD_RO;
use crate::shard::command::{
    BitOpKind, BitRange, FieldOp, FieldType, Overflow, ReadOp, TxnOp, WriteOp,
};

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
    let bit = match args.next_i64() {
        Ok(0) => false,
        Ok(1) => true,
        Ok(_) => return Err(Reply::error("ERR The bit argument must be 1 or 0.")),
        Err(_) => return Err(Reply::error(ERR_NOT_INTEGER)),
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

const ERR_FIELD_TYPE: &str =
    "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.";

/// A BITFIELD type: `i1`..`i64` or `u1`..`u63` (lowercase, as in Redis).
fn field_type(arg: &[u8]) -> Result<FieldType, Reply> {
    let err = || Reply::error(ERR_FIELD_TYPE);
    let (signed, width) = match arg.split_first() {
        Some((b'i', w)) => (true, w),
        Some((b'u', w)) => (false, w),
        _ => return Err(err()),
    };
    let max = if signed { 64 } else { 63 };
    match crate::num::parse_i64(width) {
        Some(bits) if (1..=max).contains(&bits) => Ok(FieldType {
            signed,
            bits: bits as u8,
        }),
        _ => Err(err()),
    }
}

/// A BITFIELD offset in bits: `N`, or `#N` for the N-th field of the
/// type's width.
fn field_offset(arg: &[u8], ty: FieldType) -> Result<u64, Reply> {
    let (digits, scale) = match arg.split_first() {
        Some((b'#', rest)) => (rest, ty.bits as i64),
        _ => (arg, 1),
    };
    crate::num::parse_i64(digits)
        .and_then(|n| n.checked_mul(scale))
        .and_then(|n| u64::try_from(n).ok())
        .filter(|o| *o <= MAX_BIT_OFFSET)
        .ok_or_else(|| Reply::error(ERR_OFFSET))
}

/// BITFIELD's subcommands, checked in order as Redis does (the first bad
/// one answers its error), each OVERFLOW applying to the SETs and INCRBYs
/// after it.
fn field_ops(args: &mut Args) -> Result<Vec<FieldOp>, Reply> {
    let mut ops = Vec::new();
    let mut overflow = Overflow::Wrap;
    let next = |args: &mut Args| args.next_bytes().unwrap_or_default();
    while args.remaining() > 0 {
        let sub = next(args).to_ascii_uppercase();
        let rem = args.remaining();
        match &sub[..] {
            b"OVERFLOW" if rem >= 1 => {
                overflow = match &next(args).to_ascii_uppercase()[..] {
                    b"WRAP" => Overflow::Wrap,
                    b"SAT" => Overflow::Sat,
                    b"FAIL" => Overflow::Fail,
                    _ => return Err(Reply::error("ERR Invalid OVERFLOW type specified")),
                };
                continue;
            }
            b"GET" if rem >= 2 => {}
            b"SET" | b"INCRBY" if rem >= 3 => {}
            _ => return Err(Reply::error(ERR_SYNTAX)),
        }
        let ty = field_type(&next(args))?;
        let offset = field_offset(&next(args), ty)?;
        let op = match &sub[..] {
            b"GET" => FieldOp::Get { ty, offset },
            _ => {
                let n = crate::num::parse_i64(&next(args))
                    .ok_or_else(|| Reply::error(ERR_NOT_INTEGER))?;
                if &sub[..] == b"SET" {
                    FieldOp::Set {
                        ty,
                        offset,
                        value: n,
                        overflow,
                    }
                } else {
                    FieldOp::IncrBy {
                        ty,
                        offset,
                        by: n,
                        overflow,
                    }
                }
            }
        };
        ops.push(op);
    }
    Ok(ops)
}

/// BITFIELD and BITFIELD_RO: only GETs read (from any replica on a
/// READONLY connection); a SET or INCRBY makes the whole call one write.
fn bitfield_plan(args: &mut Args, cx: &Ctx, read_only: bool) -> Result<Plan, Reply> {
    let key = key(args);
    let ops = field_ops(args)?;
    let op = if ops.iter().all(|op| matches!(op, FieldOp::Get { .. })) {
        TxnOp::Read(ReadOp::BitField {
            key: key.clone(),
            ops,
        })
    } else if read_only {
        return Err(Reply::error(ERR_BITFIELD_RO));
    } else {
        TxnOp::Write(WriteOp::BitField {
            key: key.clone(),
            ops,
            max_len: cx.max_value as u64,
        })
    };
    Ok(cx.single(&key, op))
}

/// `BITFIELD key [GET type offset | [OVERFLOW WRAP|SAT|FAIL] SET type
/// offset value | [OVERFLOW WRAP|SAT|FAIL] INCRBY type offset increment]...`
pub fn bitfield(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    bitfield_plan(args, cx, false)
}

/// `BITFIELD_RO key [GET type offset ...]`
pub fn bitfield_ro(args: &mut Args, cx: &Ctx) -> Result<Plan, Reply> {
    bitfield_plan(args, cx, true)
}
