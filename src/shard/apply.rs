//! The pure, deterministic logic that applies shard commands.
//!
//! **Determinism rule.** [`apply_write`] decides the outcome of a write from
//! the command (including the `now_ms` the *proposer* stamped into it) and the
//! current stored values only. It never reads the clock, a random source or
//! anything else local, so every replica that applies the same log reaches the
//! same data. Everything here is plain data in, plain data out: the storage
//! module feeds it values and writes back what it returns.
//!
//! **Nothing from the wire is trusted.** Before a leader proposes a write it
//! runs [`admit`] with its own [`Limits`]: values over the node's size limit
//! are refused, and the limit of the writes that grow a value in place
//! (APPEND, SETRANGE) is capped by the leader's own. Replies are bounded too:
//! SCAN pages and MGET stop at the node's reply limit instead of building an
//! answer nobody may send.
//!
//! **Corruption is an error, never an absent key.** [`Stored::decode`]
//! fails on a record it cannot read; every reader turns that into a
//! [`Corrupt`] naming the group and the key, which becomes the command's
//! error reply (`-ERR corrupt data at group <g> key <k>`) and an error log
//! line. A write that meets a corrupt value writes nothing.

use super::coll::{self, KeyView, ReadView};
use super::command::*;
use super::decimal::*;
use super::elements::{all_rows, Layer};
use super::value::*;
use crate::glob::glob_match;
use crate::num::{parse_f64, parse_i64};
use bytes::Bytes;
use std::collections::HashSet;

/// The length a BITFIELD's value grows to: the byte of the last bit its
/// SETs and INCRBYs write (0 with none).
fn bitfield_len(ops: &[super::bitmap::FieldOp]) -> u64 {
    ops.iter()
        .filter_map(|op| op.last_written_bit())
        .max()
        .map_or(0, |bit| bit / 8 + 1)
}

/// BITFIELD's array: a value per op, nil where FAIL refused an overflow.
fn bitfield_reply(values: Vec<Option<i64>>) -> OpReply {
    OpReply::Array(
        values
            .into_iter()
            .map(|v| v.map_or(OpReply::Nil, OpReply::Int))
            .collect(),
    )
}

/// Check a write before the leader proposes it, against the node's own
/// limits: a value over `max_value_len` is refused (the reply is the
/// error; nothing is proposed), and APPEND / SETRANGE get the node's limit
/// stamped into them, replacing whatever the sender chose. Apply enforces
/// the stamped limit, so replicas agree even if their configurations do not.
pub fn admit(op: &mut WriteOp, limits: &Limits) -> Result<(), OpReply> {
    let max = limits.max_value_len;
    let too_big = || Err(OpReply::Error(ERR_TOO_BIG.into()));
    match op {
        WriteOp::Set { value, .. } if value.len() as u64 > max => too_big(),
        WriteOp::MSet { pairs, .. } if pairs.iter().any(|(_, v)| v.len() as u64 > max) => too_big(),
        WriteOp::PutRecord { record, .. } if record.data.len() as u64 > max => too_big(),
        // The router may tighten the limit (its own max_value_len), never
        // loosen it: the node's limit is stamped when the router's is higher.
        WriteOp::Append { value, max_len, .. } => {
            *max_len = (*max_len).min(max);
            if value.len() as u64 > *max_len {
                return too_big();
            }
            Ok(())
        }
        WriteOp::SetBit {
            offset, max_len, ..
        } => {
            *max_len = (*max_len).min(max);
            if *offset / 8 + 1 > *max_len {
                return too_big();
            }
            Ok(())
        }
        WriteOp::BitField { ops, max_len, .. } => {
            *max_len = (*max_len).min(max);
            if bitfield_len(ops) > *max_len {
                return too_big();
            }
            Ok(())
        }
        WriteOp::SetRange {
            offset,
            value,
            max_len,
            ..
        } => {
            *max_len = (*max_len).min(max);
            if !value.is_empty() && offset.saturating_add(value.len() as u64) > *max_len {
                return too_big();
            }
            Ok(())
        }
        WriteOp::Coll(c) if c.elements().iter().any(|e| e.len() as u64 > max) => too_big(),
        WriteOp::IncrByFloat { by, .. } if parse_f64(by).is_none() => {
            Err(OpReply::Error(ERR_NOT_FLOAT.into()))
        }
        _ => Ok(()),
    }
}

/// The changes one write makes: each key to a new value or to nothing.
pub type Changes = Vec<(Bytes, Option<Stored>)>;

/// How apply reads a key: its stored value (expired or not), `None` when
/// absent, or the corruption found instead.
pub type ReadFn<'a> = dyn FnMut(&[u8]) -> Result<Option<Stored>, Corrupt> + 'a;

/// Apply one write to the current values, deterministically.
///
/// `read` returns the stored value of a key as of just before this write
/// (the caller layers earlier writes of the same batch over the database).
/// `index` is the Raft log index of the entry: it becomes the version of every
/// value written. Returns the reply and the changes to make. (For
/// [`WriteOp::FlushGroup`] the caller clears the group first; the changes
/// are then empty.) A corrupt value met on the way makes the reply that
/// error, with no changes at all.
///
/// Keys named several times (MSET, DEL, the purge) are de-duplicated with a
/// hash set: linear, whatever the number of keys.
pub fn apply_write(cmd: &WriteCmd, index: u64, read: &mut ReadFn<'_>) -> (OpReply, Changes) {
    match write_result(cmd, index, read) {
        Ok(r) => r,
        Err(stop) => (stop.reply(), Vec::new()),
    }
}

/// A string op's view of a key: its live value if a string, WRONGTYPE if
/// the key holds a collection.
fn string(v: Option<Stored>) -> Result<Option<Stored>, WrongType> {
    match v {
        Some(v) if !v.is_string() => Err(WrongType),
        v => Ok(v),
    }
}

fn write_result(
    cmd: &WriteCmd,
    index: u64,
    read: &mut ReadFn<'_>,
) -> Result<(OpReply, Changes), Stop> {
    let now = cmd.now_ms;
    let mut live = |key: &[u8]| Ok::<_, Corrupt>(read(key)?.filter(|v| v.live_at(now)));
    let put = |key: &Bytes, data: Bytes, expire_at_ms: u64| {
        (key.clone(), Some(Stored::string(index, expire_at_ms, data)))
    };
    // A new expiry on a value of any type.
    let expire = |key: &Bytes, v: Stored, expire_at_ms: u64| {
        (
            key.clone(),
            Some(Stored {
                version: index,
                expire_at_ms,
                ..v
            }),
        )
    };
    let bulk_or_nil = |v: &Option<Stored>| match v {
        Some(v) => OpReply::Bulk(v.data.clone()),
        None => OpReply::Nil,
    };
    let nothing = |reply: OpReply| Ok((reply, Vec::new()));
    match &cmd.op {
        WriteOp::Set {
            key,
            value,
            expiry,
            cond,
            get,
        } => {
            // A plain SET needs nothing of the old value (so it also
            // repairs a corrupt one).
            let blind = *cond == SetCond::Always && !*get && *expiry != Expiry::Keep;
            let old = if blind { None } else { live(key)? };
            if *get {
                string(old.clone())?;
            }
            let allowed = match cond {
                SetCond::Always => true,
                SetCond::IfAbsent => old.is_none(),
                SetCond::IfPresent => old.is_some(),
            };
            if !allowed {
                let reply = if *get {
                    bulk_or_nil(&old)
                } else {
                    OpReply::Nil
                };
                return nothing(reply);
            }
            let expire_at_ms = match expiry {
                Expiry::Clear => 0,
                Expiry::Keep => old.as_ref().map_or(0, |v| v.expire_at_ms),
                Expiry::At(t) => *t,
            };
            let reply = if *get { bulk_or_nil(&old) } else { OpReply::Ok };
            // An expiry already in the past deletes the key (Redis semantics).
            let new = if expire_at_ms != 0 && expire_at_ms <= now {
                (key.clone(), None)
            } else {
                put(key, value.clone(), expire_at_ms)
            };
            Ok((reply, vec![new]))
        }
        WriteOp::Del { keys } => {
            let mut removed = 0;
            let mut changes: Changes = Vec::new();
            let mut seen: HashSet<&[u8]> = HashSet::with_capacity(keys.len());
            for key in keys {
                if !seen.insert(key) {
                    continue;
                }
                // An expired value is purged too, but only a live one counts.
                if let Some(v) = read(key)? {
                    if v.live_at(now) {
                        removed += 1;
                    }
                    changes.push((key.clone(), None));
                }
            }
            Ok((OpReply::Int(removed), changes))
        }
        WriteOp::PurgeExpired { keys } => {
            let mut changes: Changes = Vec::new();
            let mut seen: HashSet<&[u8]> = HashSet::with_capacity(keys.len());
            for key in keys {
                if !seen.insert(key) {
                    continue;
                }
                if matches!(read(key)?, Some(v) if !v.live_at(now)) {
                    changes.push((key.clone(), None));
                }
            }
            Ok((OpReply::Int(changes.len() as i64), changes))
        }
        WriteOp::MSet { pairs, nx } => {
            if *nx {
                for (k, _) in pairs {
                    if live(k)?.is_some() {
                        return nothing(OpReply::Int(0));
                    }
                }
            }
            // A key named twice takes its last value: walk backwards and
            // keep each key's first sighting.
            let mut seen: HashSet<&[u8]> = HashSet::with_capacity(pairs.len());
            let mut changes: Changes = Vec::with_capacity(pairs.len());
            for (k, v) in pairs.iter().rev() {
                if seen.insert(k) {
                    changes.push(put(k, v.clone(), 0));
                }
            }
            changes.reverse();
            let reply = if *nx { OpReply::Int(1) } else { OpReply::Ok };
            Ok((reply, changes))
        }
        WriteOp::GetDel { key } => match string(live(key)?)? {
            Some(v) => Ok((OpReply::Bulk(v.data), vec![(key.clone(), None)])),
            None => nothing(OpReply::Nil),
        },
        WriteOp::GetEx { key, expiry } => {
            let Some(v) = string(live(key)?)? else {
                return nothing(OpReply::Nil);
            };
            let reply = OpReply::Bulk(v.data.clone());
            let change = match expiry {
                Expiry::Keep => return nothing(reply),
                Expiry::Clear if v.expire_at_ms == 0 => return nothing(reply),
                Expiry::Clear => put(key, v.data, 0),
                Expiry::At(t) if *t <= now => (key.clone(), None),
                Expiry::At(t) => put(key, v.data, *t),
            };
            Ok((reply, vec![change]))
        }
        WriteOp::IncrBy { key, by } => {
            let old = string(live(key)?)?;
            let current = match &old {
                None => 0,
                Some(v) => match parse_i64(&v.data) {
                    Some(n) => n,
                    None => return nothing(OpReply::Error(ERR_NOT_INTEGER.into())),
                },
            };
            let Some(new) = current.checked_add(*by) else {
                return nothing(OpReply::Error(ERR_OVERFLOW.into()));
            };
            let ttl = old.map_or(0, |v| v.expire_at_ms);
            Ok((
                OpReply::Int(new),
                vec![put(key, Bytes::from(new.to_string()), ttl)],
            ))
        }
        WriteOp::IncrByFloat { key, by } => {
            let old = string(live(key)?)?;
            let current: &[u8] = old.as_ref().map_or(b"0", |v| &v.data[..]);
            match incr_float(current, by) {
                Ok(text) => {
                    let ttl = old.as_ref().map_or(0, |v| v.expire_at_ms);
                    let text = Bytes::from(text);
                    Ok((OpReply::Bulk(text.clone()), vec![put(key, text, ttl)]))
                }
                Err(e) => nothing(OpReply::Error(e.into())),
            }
        }
        WriteOp::Append {
            key,
            value,
            max_len,
        } => {
            let old = string(live(key)?)?;
            let old_len = old.as_ref().map_or(0, |v| v.data.len());
            let total = old_len as u64 + value.len() as u64;
            if total > *max_len {
                return nothing(OpReply::Error(ERR_TOO_BIG.into()));
            }
            let mut data = Vec::with_capacity(total as usize);
            if let Some(v) = &old {
                data.extend_from_slice(&v.data);
            }
            data.extend_from_slice(value);
            let ttl = old.map_or(0, |v| v.expire_at_ms);
            Ok((
                OpReply::Int(total as i64),
                vec![put(key, Bytes::from(data), ttl)],
            ))
        }
        WriteOp::SetRange {
            key,
            offset,
            value,
            max_len,
        } => {
            let old = string(live(key)?)?;
            let old_len = old.as_ref().map_or(0, |v| v.data.len());
            if value.is_empty() {
                return nothing(OpReply::Int(old_len as i64));
            }
            let end = offset.saturating_add(value.len() as u64);
            if end > *max_len {
                return nothing(OpReply::Error(ERR_TOO_BIG.into()));
            }
            let end = end as usize;
            let mut data = old.as_ref().map_or_else(Vec::new, |v| v.data.to_vec());
            if data.len() < end {
                data.resize(end, 0);
            }
            data[*offset as usize..end].copy_from_slice(value);
            let len = data.len() as i64;
            let ttl = old.map_or(0, |v| v.expire_at_ms);
            Ok((OpReply::Int(len), vec![put(key, Bytes::from(data), ttl)]))
        }
        WriteOp::Expire { key, at_ms, cond } => {
            let Some(v) = live(key)? else {
                return nothing(OpReply::Int(0));
            };
            if !expire_allowed(v.expire_at_ms, *at_ms, *cond) {
                return nothing(OpReply::Int(0));
            }
            let change = if *at_ms <= now as i64 {
                (key.clone(), None)
            } else {
                expire(key, v, *at_ms as u64)
            };
            Ok((OpReply::Int(1), vec![change]))
        }
        WriteOp::Persist { key } => match live(key)? {
            Some(v) if v.expire_at_ms != 0 => Ok((OpReply::Int(1), vec![expire(key, v, 0)])),
            _ => nothing(OpReply::Int(0)),
        },
        WriteOp::FlushGroup => nothing(OpReply::Ok),
        WriteOp::Move { src, dst, mode } => {
            let Some(record) = live(src)? else {
                return nothing(match mode {
                    MoveMode::Copy { .. } => OpReply::Int(0),
                    _ => OpReply::Error(ERR_NO_SUCH_KEY.into()),
                });
            };
            if record.coll.is_some() {
                return nothing(OpReply::Error(ERR_MOVE_COLLECTION.into()));
            }
            let dst_live = if src == dst {
                true
            } else {
                live(dst)?.is_some()
            };
            let (reply, moved) = match move_outcome(*mode, src == dst, dst_live) {
                Ok(outcome) => outcome,
                Err(reply) => return nothing(reply),
            };
            let mut changes = vec![(
                dst.clone(),
                Some(Stored {
                    version: index,
                    ..record
                }),
            )];
            if moved {
                changes.push((src.clone(), None));
            }
            Ok((reply, changes))
        }
        WriteOp::PutRecord { record, .. } if record.coll.is_some() => {
            nothing(OpReply::Error(ERR_MOVE_COLLECTION.into()))
        }
        WriteOp::SetBit {
            key,
            offset,
            on,
            max_len,
        } => {
            let old = string(live(key)?)?;
            if offset / 8 + 1 > *max_len {
                return nothing(OpReply::Error(ERR_TOO_BIG.into()));
            }
            let mut data = old.as_ref().map_or_else(Vec::new, |v| v.data.to_vec());
            let was = super::bitmap::set_bit(&mut data, *offset, *on);
            let ttl = old.map_or(0, |v| v.expire_at_ms);
            Ok((
                OpReply::Int(was as i64),
                vec![put(key, Bytes::from(data), ttl)],
            ))
        }
        WriteOp::BitField { key, ops, max_len } => {
            let old = string(live(key)?)?;
            let len = bitfield_len(ops);
            if len > *max_len {
                return nothing(OpReply::Error(ERR_TOO_BIG.into()));
            }
            let mut data = old.as_ref().map_or_else(Vec::new, |v| v.data.to_vec());
            if (data.len() as u64) < len {
                data.resize(len as usize, 0);
            }
            let replies = super::bitmap::bit_field(&mut data, ops);
            let ttl = old.map_or(0, |v| v.expire_at_ms);
            Ok((
                bitfield_reply(replies),
                vec![put(key, Bytes::from(data), ttl)],
            ))
        }
        WriteOp::BitOp { op, dst, keys } => {
            let mut sources = Vec::with_capacity(keys.len());
            for k in keys {
                sources.push(string(live(k)?)?.map(|v| v.data).unwrap_or_default());
            }
            let out = super::bitmap::bit_op(*op, &sources);
            let n = out.len() as i64;
            let change = if out.is_empty() {
                (dst.clone(), None)
            } else {
                put(dst, Bytes::from(out), 0)
            };
            Ok((OpReply::Int(n), vec![change]))
        }
        WriteOp::PutRecord { key, record } => {
            let change = if record.live_at(now) {
                Some(Stored {
                    version: index,
                    ..record.clone()
                })
            } else {
                None
            };
            Ok((OpReply::Ok, vec![(key.clone(), change)]))
        }
        // Collection writes change element rows: only [`apply_op`] can.
        WriteOp::Coll(_) => nothing(OpReply::Error(
            "ERR internal: a collection write needs apply_op".into(),
        )),
    }
}

/// What RENAME / RENAMENX / COPY do once the source is known to exist:
/// `Ok((reply, source removed))` when the destination is written, or the
/// reply that changes nothing. `same`: source and destination are one key;
/// `dst_live`: the destination holds a live value. Shared by the one-shard
/// [`WriteOp::Move`] and the router's cross-shard path, so both answer
/// alike.
pub fn move_outcome(
    mode: MoveMode,
    same: bool,
    dst_live: bool,
) -> Result<(OpReply, bool), OpReply> {
    match mode {
        // Redis: renaming a key onto itself changes nothing.
        MoveMode::Rename if same => Err(OpReply::Ok),
        MoveMode::RenameNx if same || dst_live => Err(OpReply::Int(0)),
        MoveMode::Copy { .. } if same => Err(OpReply::Error(ERR_SAME_OBJECT.into())),
        MoveMode::Copy { replace: false } if dst_live => Err(OpReply::Int(0)),
        MoveMode::Rename => Ok((OpReply::Ok, true)),
        MoveMode::RenameNx => Ok((OpReply::Int(1), true)),
        MoveMode::Copy { .. } => Ok((OpReply::Int(1), false)),
    }
}

/// RENAME / RENAMENX / COPY of the live collection `rec` under `src` to
/// `dst` on this shard: its elements are copied under a new generation
/// (this entry's index), so the copy and the original never share rows;
/// a rename then drops the source's record (its rows die with it). O(n) in
/// the elements, as in kvrocks.
pub fn move_collection(
    src: &Bytes,
    dst: &Bytes,
    mode: MoveMode,
    rec: Stored,
    now: u64,
    index: u64,
    view: &mut dyn KeyView,
) -> Result<OpReply, Stop> {
    let Some(c) = rec.coll else {
        return Err(Stop::WrongType);
    };
    let same = src == dst;
    let dst_live = same || view.get(dst)?.is_some_and(|v| v.live_at(now));
    let (reply, remove) = match move_outcome(mode, same, dst_live) {
        Ok(outcome) => outcome,
        Err(reply) => return Ok(reply),
    };
    let ov = {
        let mut layer = Layer::new(view);
        let rows = all_rows(&mut layer, src, &c)?;
        layer.put(dst, None);
        for (e, v) in rows {
            layer.put_sub(dst, index, e, Some(v));
        }
        layer.put(
            dst,
            Some(Stored {
                version: index,
                expire_at_ms: rec.expire_at_ms,
                data: Bytes::new(),
                coll: Some(Coll { gen: index, ..c }),
            }),
        );
        if remove {
            layer.put(src, None);
        }
        layer.ov
    };
    ov.commit(view);
    Ok(reply)
}

/// Apply one write over `view` and make its changes there: collection
/// commands through [`coll::write`], the others through [`apply_write`].
/// Its reply.
pub fn apply_op(cmd: &WriteCmd, index: u64, view: &mut dyn KeyView) -> OpReply {
    if let WriteOp::Move { src, dst, mode } = &cmd.op {
        // A collection moves with its elements.
        match view.get(src) {
            Ok(Some(v)) if v.live_at(cmd.now_ms) && v.coll.is_some() => {
                return match move_collection(src, dst, *mode, v, cmd.now_ms, index, view) {
                    Ok(reply) => reply,
                    Err(stop) => stop.reply(),
                };
            }
            Err(c) => return c.reply(),
            _ => {}
        }
    }
    if let WriteOp::Coll(c) = &cmd.op {
        return match coll::write(c, cmd.now_ms, index, view) {
            Ok(reply) => reply,
            Err(stop) => stop.reply(),
        };
    }
    let (reply, changes) = apply_write(cmd, index, &mut |k| view.get(k));
    for (k, v) in changes {
        view.put(&k, v);
    }
    reply
}

/// Whether EXPIRE's condition lets a key whose expiry is `current` (0: none)
/// get the deadline `new`. A key without expiry counts as expiring never.
pub fn expire_allowed(current: u64, new: i64, cond: ExpireCond) -> bool {
    let infinite = current == 0;
    !(cond.nx && !infinite
        || cond.xx && infinite
        || cond.gt && (infinite || new <= current as i64)
        || cond.lt && !infinite && new >= current as i64)
}

/// Serve a read from the current values. Pure, like [`apply_write`].
/// ([`ReadOp::Scan`], [`ReadOp::DbSize`] and [`ReadOp::KeyCount`] need the
/// whole group; the host serves them, with [`scan_page`] and
/// [`count_live`].) An MGET whose reply would pass `max_reply` bytes stops
/// reading and answers the "reply too large" error. A corrupt value is the
/// error, never an absent key.
pub fn apply_read(
    op: &ReadOp,
    now_ms: u64,
    max_reply: usize,
    view: &mut dyn ReadView,
) -> Result<OpReply, Corrupt> {
    match read_result(op, now_ms, max_reply, view) {
        Ok(r) => Ok(r),
        Err(Stop::WrongType) => Ok(WrongType.reply()),
        Err(Stop::Corrupt(c)) => Err(c),
    }
}

fn read_result(
    op: &ReadOp,
    now_ms: u64,
    max_reply: usize,
    view: &mut dyn ReadView,
) -> Result<OpReply, Stop> {
    if let ReadOp::Coll(c) = op {
        return coll::read(c, now_ms, max_reply, view);
    }
    let mut live = |key: &[u8]| Ok::<_, Corrupt>(view.get(key)?.filter(|v| v.live_at(now_ms)));
    Ok(match op {
        ReadOp::Get { key } => match string(live(key)?)? {
            Some(v) => {
                // Bigger than the caller takes only when it asked for less
                // than a value may hold (a pipelined read's share of the
                // router's output budget).
                let reply = OpReply::Bulk(v.data);
                if reply.resp_size() > max_reply {
                    OpReply::Error(reply_too_large("GET", max_reply))
                } else {
                    reply
                }
            }
            None => OpReply::Nil,
        },
        ReadOp::Exists { keys } => {
            let mut n = 0;
            for k in keys {
                n += live(k)?.is_some() as i64;
            }
            OpReply::Int(n)
        }
        ReadOp::MGet { keys } => {
            let mut size = 0usize;
            let mut out = Vec::with_capacity(keys.len());
            for k in keys {
                // MGET answers nil for a key of another type.
                let item = match live(k)? {
                    Some(v) if v.is_string() => OpReply::Bulk(v.data),
                    _ => OpReply::Nil,
                };
                size = size.saturating_add(item.resp_size());
                if size > max_reply {
                    return Ok(OpReply::Error(reply_too_large("MGET", max_reply)));
                }
                out.push(item);
            }
            OpReply::Array(out)
        }
        ReadOp::StrLen { key } => {
            OpReply::Int(string(live(key)?)?.map_or(0, |v| v.data.len() as i64))
        }
        ReadOp::GetRange { key, start, end } => {
            let data = string(live(key)?)?.map(|v| v.data).unwrap_or_default();
            OpReply::Bulk(get_range(&data, *start, *end))
        }
        ReadOp::Ttl { key, ms } => match live(key)? {
            None => OpReply::Int(-2),
            Some(v) if v.expire_at_ms == 0 => OpReply::Int(-1),
            Some(v) => {
                let left = i64::try_from(v.expire_at_ms.saturating_sub(now_ms)).unwrap_or(i64::MAX);
                OpReply::Int(if *ms {
                    left
                } else {
                    left.saturating_add(500) / 1000
                })
            }
        },
        ReadOp::Type { key } => {
            OpReply::Status(live(key)?.map_or("none", |v| v.type_name()).to_string())
        }
        ReadOp::ExpireTime { key, ms } => match live(key)? {
            None => OpReply::Int(-2),
            Some(v) if v.expire_at_ms == 0 => OpReply::Int(-1),
            Some(v) => {
                let at = i64::try_from(v.expire_at_ms).unwrap_or(i64::MAX);
                OpReply::Int(if *ms { at } else { at / 1000 })
            }
        },
        ReadOp::GetBit { key, offset } => OpReply::Int(
            string(live(key)?)?.map_or(0, |v| super::bitmap::get_bit(&v.data, *offset)) as i64,
        ),
        ReadOp::BitCount { key, range } => OpReply::Int(
            string(live(key)?)?.map_or(0, |v| super::bitmap::bit_count(&v.data, *range)),
        ),
        ReadOp::BitPos {
            key,
            bit,
            range,
            end_given,
        } => OpReply::Int(match string(live(key)?)? {
            Some(v) => super::bitmap::bit_pos(&v.data, *bit, *range, *end_given),
            None if *bit => -1,
            None => 0,
        }),
        ReadOp::BitField { key, ops } => {
            let data = string(live(key)?)?.map(|v| v.data).unwrap_or_default();
            let values = ops.iter().map(|op| match *op {
                super::bitmap::FieldOp::Get { ty, offset } => Ok(ty.read(&data, offset)),
                _ => Err(()),
            });
            match values.collect::<Result<Vec<i64>, ()>>() {
                Ok(v) => OpReply::Array(v.into_iter().map(OpReply::Int).collect()),
                Err(()) => OpReply::Error(super::bitmap::ERR_BITFIELD_RO.into()),
            }
        }
        ReadOp::Object { key, field } => match live(key)? {
            None => OpReply::Nil,
            Some(v) => object_field(&v, *field),
        },
        ReadOp::Scan { .. } | ReadOp::ScanType { .. } | ReadOp::DbSize | ReadOp::KeyCount => {
            OpReply::Error("ERR scan needs the host's range iterator".into())
        }
        ReadOp::Coll(_) => unreachable!("served above"),
    })
}

/// Redis's error for OBJECT FREQ under its default maxmemory policy
/// (shoal keeps no access counts, as Redis does not outside an LFU policy).
pub const ERR_NO_LFU: &str = "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.";

/// RENAME and COPY of a collection between keys of different shards: its
/// element rows are not carried by the cross-shard transaction yet (on one
/// shard they move, see [`move_collection`]).
pub const ERR_MOVE_COLLECTION: &str =
    "ERR RENAME and COPY of hashes, sets, sorted sets and lists across shards are not supported yet; give the keys one hash tag";

/// Redis's reference count of a shared object (its small integers).
const SHARED_REFCOUNT: i64 = i32::MAX as i64;

/// Redis shares the integers 0..10000 between keys (`OBJ_SHARED_INTEGERS`).
const SHARED_INTEGERS: i64 = 10_000;

/// Longest string Redis stores inline with its object header
/// (`OBJ_ENCODING_EMBSTR_SIZE_LIMIT`).
const EMBSTR_MAX: usize = 44;

/// OBJECT's answer for a live string value, as Redis 7 gives it for a
/// value written by SET: ENCODING `int` for the text of an i64 (no sign
/// but `-`, no leading zero, at most 20 bytes), `embstr` up to 44 bytes,
/// `raw` beyond; REFCOUNT 2147483647 for the integers Redis shares
/// (0..9999), 1 otherwise; IDLETIME 0 (shoal keeps no access times);
/// FREQ Redis's error for a non-LFU policy.
pub fn object_field(v: &Stored, field: ObjectField) -> OpReply {
    // A collection's elements are rows: Redis's encoding for a big one.
    if let Some(c) = v.coll {
        let encoding: &'static [u8] = match c.kind {
            Kind::Hash | Kind::Set => b"hashtable",
            Kind::ZSet => b"skiplist",
            Kind::List => b"quicklist",
        };
        return match field {
            ObjectField::Encoding => OpReply::Bulk(Bytes::from_static(encoding)),
            ObjectField::RefCount => OpReply::Int(1),
            ObjectField::IdleTime => OpReply::Int(0),
            ObjectField::Freq => OpReply::Error(ERR_NO_LFU.into()),
        };
    }
    let int = (v.data.len() <= 20)
        .then(|| parse_i64(&v.data))
        .flatten()
        .filter(|n| n.to_string().as_bytes() == &v.data[..]);
    match field {
        ObjectField::Encoding => OpReply::Bulk(Bytes::from_static(match int {
            Some(_) => b"int",
            None if v.data.len() <= EMBSTR_MAX => b"embstr",
            None => b"raw",
        })),
        ObjectField::RefCount => OpReply::Int(match int {
            Some(n) if (0..SHARED_INTEGERS).contains(&n) => SHARED_REFCOUNT,
            _ => 1,
        }),
        ObjectField::IdleTime => OpReply::Int(0),
        ObjectField::Freq => OpReply::Error(ERR_NO_LFU.into()),
    }
}

/// GETRANGE's slice, with Redis's negative-index rules.
pub fn get_range(data: &Bytes, start: i64, end: i64) -> Bytes {
    let len = data.len() as i64;
    if (start < 0 && end < 0 && start > end) || len == 0 {
        return Bytes::new();
    }
    let mut start = if start < 0 { len + start } else { start };
    let mut end = if end < 0 { len + end } else { end };
    start = start.max(0);
    end = end.max(0);
    if end >= len {
        end = len - 1;
    }
    if start > end {
        return Bytes::new();
    }
    data.slice(start as usize..=end as usize)
}

/// One page of a SCAN over a group's stored pairs, given in key order
/// (strictly after the cursor). Examines at most `count` pairs (at least
/// one, at most [`MAX_SCAN_COUNT`]); skips expired ones and those not
/// matching `pattern`. The page also ends before its keys would pass
/// `max_reply` bytes (it holds at least one key), so no page is built
/// bigger than the caller takes.
/// Returns `[Bulk(last examined key) | Nil when the input ran out,
/// Array(keys)]`, or the first error of the input.
pub fn scan_page<I, E>(
    rows: I,
    now_ms: u64,
    count: u64,
    pattern: Option<&[u8]>,
    max_reply: usize,
) -> Result<OpReply, E>
where
    I: IntoIterator<Item = Result<(Bytes, Stored), E>>,
{
    scan_page_of(rows, now_ms, count, pattern, None, max_reply)
}

/// [`scan_page`] keeping only keys whose type TYPE names `type_name`
/// (the others are examined, and skipped).
pub fn scan_page_of<I, E>(
    rows: I,
    now_ms: u64,
    count: u64,
    pattern: Option<&[u8]>,
    type_name: Option<&str>,
    max_reply: usize,
) -> Result<OpReply, E>
where
    I: IntoIterator<Item = Result<(Bytes, Stored), E>>,
{
    // A lone `*` is "everything" (as in Redis), the empty key included.
    let pattern = pattern.filter(|p| *p != b"*");
    let count = count.clamp(1, MAX_SCAN_COUNT);
    let mut keys = Vec::new();
    let mut size = 0usize;
    let mut examined = 0u64;
    let mut last = None;
    let mut rows = rows.into_iter();
    while examined < count {
        let Some(row) = rows.next() else {
            return Ok(OpReply::Array(vec![OpReply::Nil, OpReply::Array(keys)]));
        };
        let (k, v) = row?;
        if v.live_at(now_ms)
            && pattern.is_none_or(|p| glob_match(p, &k))
            && type_name.is_none_or(|t| v.type_name() == t)
        {
            let key = OpReply::Bulk(k.clone());
            let grown = size.saturating_add(key.resp_size());
            if grown > max_reply && !keys.is_empty() {
                // Full: this key opens the next page (the cursor stays
                // on the one before it).
                break;
            }
            size = grown;
            keys.push(key);
        }
        examined += 1;
        last = Some(k);
    }
    let next = match last {
        Some(k) => OpReply::Bulk(k),
        None => OpReply::Nil,
    };
    Ok(OpReply::Array(vec![next, OpReply::Array(keys)]))
}

/// DBSIZE of one group: the live pairs among `rows`, or the first error.
pub fn count_live<I, E>(rows: I, now_ms: u64) -> Result<i64, E>
where
    I: IntoIterator<Item = Result<Stored, E>>,
{
    let mut n = 0;
    for v in rows {
        n += v?.live_at(now_ms) as i64;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::codec::CodecError;
    use crate::shard::coll::KeysOnly;
    use std::collections::HashMap;

    fn run(db: &mut HashMap<Bytes, Stored>, index: u64, cmd: WriteCmd) -> OpReply {
        let snapshot = db.clone();
        let (reply, changes) = apply_write(&cmd, index, &mut |k| Ok(snapshot.get(k).cloned()));
        for (k, v) in changes {
            match v {
                Some(v) => db.insert(k, v),
                None => db.remove(&k),
            };
        }
        reply
    }

    fn set(key: &str, value: &str, cond: SetCond, expiry: Expiry, now_ms: u64) -> WriteCmd {
        WriteCmd {
            now_ms,
            op: WriteOp::Set {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::copy_from_slice(value.as_bytes()),
                expiry,
                cond,
                get: false,
            },
        }
    }

    #[test]
    fn set_nx_xx_and_versions() {
        let mut db = HashMap::new();
        assert_eq!(
            run(
                &mut db,
                1,
                set("k", "a", SetCond::IfPresent, Expiry::Clear, 0)
            ),
            OpReply::Nil
        );
        assert!(db.is_empty());
        assert_eq!(
            run(
                &mut db,
                2,
                set("k", "a", SetCond::IfAbsent, Expiry::Clear, 0)
            ),
            OpReply::Ok
        );
        assert_eq!(
            run(
                &mut db,
                3,
                set("k", "b", SetCond::IfAbsent, Expiry::Clear, 0)
            ),
            OpReply::Nil
        );
        assert_eq!(db[&Bytes::from("k")].data, Bytes::from("a"));
        assert_eq!(db[&Bytes::from("k")].version, 2);
        assert_eq!(
            run(
                &mut db,
                4,
                set("k", "c", SetCond::IfPresent, Expiry::Clear, 0)
            ),
            OpReply::Ok
        );
        assert_eq!(db[&Bytes::from("k")].version, 4);
    }

    #[test]
    fn expiry_is_decided_by_the_stamped_time() {
        let mut db = HashMap::new();
        run(
            &mut db,
            1,
            set("k", "a", SetCond::Always, Expiry::At(100), 50),
        );
        let get = ReadOp::Get {
            key: Bytes::from("k"),
        };
        assert_eq!(r(&db, 99, get.clone()), OpReply::Bulk(Bytes::from("a")));
        assert_eq!(r(&db, 100, get), OpReply::Nil);
        // NX sees an expired key as absent.
        assert_eq!(
            run(
                &mut db,
                2,
                set("k", "b", SetCond::IfAbsent, Expiry::Keep, 150)
            ),
            OpReply::Ok
        );
        // KEEPTTL kept the (expired) deadline's absence: the old value was dead, so 0.
        assert_eq!(db[&Bytes::from("k")].expire_at_ms, 0);
        // An expiry in the past deletes.
        run(
            &mut db,
            3,
            set("k", "c", SetCond::Always, Expiry::At(10), 150),
        );
        assert!(db.is_empty());
    }

    #[test]
    fn del_counts_live_keys_once() {
        let mut db = HashMap::new();
        run(&mut db, 1, set("a", "1", SetCond::Always, Expiry::Clear, 0));
        run(&mut db, 2, set("b", "1", SetCond::Always, Expiry::At(5), 0));
        let del = WriteCmd {
            now_ms: 10,
            op: WriteOp::Del {
                keys: vec![
                    Bytes::from("a"),
                    Bytes::from("a"),
                    Bytes::from("b"),
                    Bytes::from("c"),
                ],
            },
        };
        assert_eq!(run(&mut db, 3, del), OpReply::Int(1));
        assert!(!db.contains_key(&Bytes::from("a")));
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn w(db: &mut HashMap<Bytes, Stored>, now_ms: u64, op: WriteOp) -> OpReply {
        let index = db.values().map(|v| v.version).max().unwrap_or(0) + 1;
        run(db, index, WriteCmd { now_ms, op })
    }

    fn r(db: &HashMap<Bytes, Stored>, now_ms: u64, op: ReadOp) -> OpReply {
        apply_read(
            &op,
            now_ms,
            usize::MAX,
            &mut KeysOnly(|k: &[u8]| Ok(db.get(k).cloned())),
        )
        .unwrap()
    }

    fn put(db: &mut HashMap<Bytes, Stored>, k: &str, v: &str, expire_at_ms: u64) {
        db.insert(b(k), Stored::string(1, expire_at_ms, b(v)));
    }

    fn err(s: &str) -> OpReply {
        OpReply::Error(s.to_string())
    }

    #[test]
    fn incr_rules() {
        let mut db = HashMap::new();
        let incr = |by| WriteOp::IncrBy { key: b("n"), by };
        assert_eq!(w(&mut db, 0, incr(1)), OpReply::Int(1));
        assert_eq!(w(&mut db, 0, incr(-5)), OpReply::Int(-4));
        assert_eq!(db[&b("n")].data, b("-4"));
        put(&mut db, "n", &i64::MAX.to_string(), 0);
        assert_eq!(w(&mut db, 0, incr(1)), err(ERR_OVERFLOW));
        put(&mut db, "n", &i64::MIN.to_string(), 0);
        assert_eq!(w(&mut db, 0, incr(-1)), err(ERR_OVERFLOW));
        assert_eq!(db[&b("n")].data, b(&i64::MIN.to_string()));
        for bad in [
            "abc",
            " 1",
            "1 ",
            "+1",
            "01",
            "1.0",
            "",
            "99999999999999999999",
        ] {
            put(&mut db, "n", bad, 0);
            assert_eq!(w(&mut db, 0, incr(1)), err(ERR_NOT_INTEGER), "{bad:?}");
        }
        // INCR keeps the expiry; an expired value counts as absent.
        put(&mut db, "n", "10", 500);
        assert_eq!(w(&mut db, 100, incr(1)), OpReply::Int(11));
        assert_eq!(db[&b("n")].expire_at_ms, 500);
        assert_eq!(w(&mut db, 600, incr(1)), OpReply::Int(1));
        assert_eq!(db[&b("n")].expire_at_ms, 0);
    }

    #[test]
    fn incr_float_formatting() {
        let cases = [
            ("10.50", "0.1", "10.6"),
            ("0.1", "0.2", "0.3"),
            ("5.0e3", "2.0e2", "5200"),
            ("3", "-3", "0"),
            ("1", "-1.5", "-0.5"),
            ("0", "1e-20", "0"),
            ("0", "0.000000000000000015", "0.00000000000000002"),
            ("1.0", "1", "2"),
            ("-0", "0", "0"),
            // Beyond long double's ~19 digits Redis loses the 1 too.
            ("1e20", "1", "100000000000000000000"),
        ];
        for (cur, by, want) in cases {
            assert_eq!(
                incr_float(cur.as_bytes(), by.as_bytes()),
                Ok(want.to_string()),
                "{cur} + {by}"
            );
        }
        assert_eq!(incr_float(b"abc", b"1"), Err(ERR_NOT_FLOAT));
        assert_eq!(incr_float(b"1", b"x"), Err(ERR_NOT_FLOAT));
        assert_eq!(incr_float(b"1.7e308", b"1.7e308"), Err(ERR_NAN_INF));
        let mut db = HashMap::new();
        let op = WriteOp::IncrByFloat {
            key: b("f"),
            by: b("1.5"),
        };
        assert_eq!(w(&mut db, 0, op.clone()), OpReply::Bulk(b("1.5")));
        assert_eq!(w(&mut db, 0, op), OpReply::Bulk(b("3")));
    }

    #[test]
    fn getrange_negative_indexes() {
        let v = b("Hello World");
        let g = |s, e| get_range(&v, s, e);
        assert_eq!(g(0, 4), b("Hello"));
        assert_eq!(g(-3, -1), b("rld"));
        assert_eq!(g(0, -1), b("Hello World"));
        assert_eq!(g(10, 100), b("d"));
        assert_eq!(g(-100, 2), b("Hel"));
        assert_eq!(g(5, 3), b(""));
        assert_eq!(g(-1, -5), b(""));
        assert_eq!(g(20, 30), b(""));
        assert_eq!(get_range(&b(""), 0, -1), b(""));
        let db = HashMap::new();
        let op = ReadOp::GetRange {
            key: b("missing"),
            start: 0,
            end: -1,
        };
        assert_eq!(r(&db, 0, op), OpReply::Bulk(b("")));
    }

    #[test]
    fn setrange_pads_and_append_caps() {
        let mut db = HashMap::new();
        let sr = |offset, v: &str| WriteOp::SetRange {
            key: b("k"),
            offset,
            value: b(v),
            max_len: 16,
        };
        assert_eq!(w(&mut db, 0, sr(0, "")), OpReply::Int(0));
        assert!(db.is_empty());
        assert_eq!(w(&mut db, 0, sr(3, "ab")), OpReply::Int(5));
        assert_eq!(db[&b("k")].data, Bytes::from_static(b"\0\0\0ab"));
        assert_eq!(w(&mut db, 0, sr(1, "X")), OpReply::Int(5));
        assert_eq!(db[&b("k")].data, Bytes::from_static(b"\0X\0ab"));
        assert_eq!(w(&mut db, 0, sr(15, "ab")), err(ERR_TOO_BIG));
        assert_eq!(w(&mut db, 0, sr(u64::MAX, "ab")), err(ERR_TOO_BIG));
        let ap = |v: &str| WriteOp::Append {
            key: b("a"),
            value: b(v),
            max_len: 4,
        };
        assert_eq!(w(&mut db, 0, ap("abc")), OpReply::Int(3));
        assert_eq!(w(&mut db, 0, ap("d")), OpReply::Int(4));
        assert_eq!(w(&mut db, 0, ap("e")), err(ERR_TOO_BIG));
        assert_eq!(db[&b("a")].data, b("abcd"));
    }

    #[test]
    fn expire_conditions() {
        let nx = ExpireCond {
            nx: true,
            ..Default::default()
        };
        let xx = ExpireCond {
            xx: true,
            ..Default::default()
        };
        let gt = ExpireCond {
            gt: true,
            ..Default::default()
        };
        let lt = ExpireCond {
            lt: true,
            ..Default::default()
        };
        let xx_lt = ExpireCond {
            xx: true,
            lt: true,
            ..Default::default()
        };
        // (current expiry, new, cond, allowed)
        let table = [
            (0, 100, nx, true),
            (50, 100, nx, false),
            (0, 100, xx, false),
            (50, 100, xx, true),
            (0, 100, gt, false),
            (50, 100, gt, true),
            (100, 100, gt, false),
            (0, 100, lt, true),
            (200, 100, lt, true),
            (50, 100, lt, false),
            (0, 100, xx_lt, false),
            (200, 100, xx_lt, true),
        ];
        for (cur, new, cond, want) in table {
            assert_eq!(expire_allowed(cur, new, cond), want, "{cur} {new} {cond:?}");
        }
        let mut db = HashMap::new();
        let ex = |at_ms, cond| WriteOp::Expire {
            key: b("k"),
            at_ms,
            cond,
        };
        assert_eq!(w(&mut db, 10, ex(100, nx)), OpReply::Int(0));
        put(&mut db, "k", "v", 0);
        assert_eq!(w(&mut db, 10, ex(100, nx)), OpReply::Int(1));
        assert_eq!(db[&b("k")].expire_at_ms, 100);
        assert_eq!(w(&mut db, 10, ex(50, gt)), OpReply::Int(0));
        assert_eq!(w(&mut db, 10, ex(500, gt)), OpReply::Int(1));
        assert_eq!(db[&b("k")].expire_at_ms, 500);
        assert_eq!(
            w(&mut db, 10, WriteOp::Persist { key: b("k") }),
            OpReply::Int(1)
        );
        assert_eq!(
            w(&mut db, 10, WriteOp::Persist { key: b("k") }),
            OpReply::Int(0)
        );
        // A deadline in the past (even negative) deletes the key.
        assert_eq!(
            w(&mut db, 10, ex(-5, ExpireCond::default())),
            OpReply::Int(1)
        );
        assert!(db.is_empty());
    }

    #[test]
    fn moves_keep_the_record_whole() {
        let mut db = HashMap::new();
        put(&mut db, "a", "v", 500);
        put(&mut db, "old", "x", 0);
        let mv = |src: &str, dst: &str, mode| WriteOp::Move {
            src: b(src),
            dst: b(dst),
            mode,
        };
        // The value and its deadline move; the version is the entry's.
        assert_eq!(w(&mut db, 10, mv("a", "b", MoveMode::Rename)), OpReply::Ok);
        assert!(!db.contains_key(&b("a")));
        assert_eq!(
            (db[&b("b")].expire_at_ms, db[&b("b")].data.clone()),
            (500, b("v"))
        );
        assert_eq!(db[&b("b")].version, 2);
        assert_eq!(
            w(&mut db, 10, mv("b", "old", MoveMode::RenameNx)),
            OpReply::Int(0)
        );
        assert_eq!(
            w(
                &mut db,
                10,
                mv("b", "old", MoveMode::Copy { replace: false })
            ),
            OpReply::Int(0)
        );
        assert_eq!(
            w(
                &mut db,
                10,
                mv("b", "old", MoveMode::Copy { replace: true })
            ),
            OpReply::Int(1)
        );
        assert_eq!(db[&b("old")].expire_at_ms, 500);
        assert!(db.contains_key(&b("b")), "COPY keeps its source");
        // An expired source is absent; an expired destination is free.
        assert_eq!(
            w(&mut db, 600, mv("b", "c", MoveMode::Rename)),
            OpReply::Error(ERR_NO_SUCH_KEY.into())
        );
        assert_eq!(
            w(
                &mut db,
                600,
                mv("b", "c", MoveMode::Copy { replace: false })
            ),
            OpReply::Int(0)
        );
        put(&mut db, "d", "new", 0);
        assert_eq!(
            w(&mut db, 600, mv("d", "old", MoveMode::RenameNx)),
            OpReply::Int(1)
        );
        assert_eq!(db[&b("old")].data, b("new"));
        // Onto itself: RENAME changes nothing, RENAMENX answers 0.
        assert_eq!(
            w(&mut db, 600, mv("old", "old", MoveMode::Rename)),
            OpReply::Ok
        );
        assert_eq!(
            w(&mut db, 600, mv("old", "old", MoveMode::RenameNx)),
            OpReply::Int(0)
        );
        assert_eq!(db[&b("old")].data, b("new"));
        // A whole record: stored as given, unless already expired.
        let record = |exp| Stored {
            version: 77,
            expire_at_ms: exp,
            data: b("r"),
            coll: None,
        };
        let rec = |exp| WriteOp::PutRecord {
            key: b("p"),
            record: record(exp),
        };
        assert_eq!(w(&mut db, 600, rec(700)), OpReply::Ok);
        assert_eq!(db[&b("p")].expire_at_ms, 700);
        assert_ne!(
            db[&b("p")].version,
            77,
            "the entry's index, not the sender's"
        );
        assert_eq!(w(&mut db, 600, rec(600)), OpReply::Ok);
        assert!(!db.contains_key(&b("p")));
    }

    #[test]
    fn object_answers_as_redis_does_for_set_values() {
        let v = |s: &str| Stored {
            version: 1,
            expire_at_ms: 0,
            data: b(s),
            coll: None,
        };
        let enc = |s: &str| match object_field(&v(s), ObjectField::Encoding) {
            OpReply::Bulk(e) => String::from_utf8(e.to_vec()).unwrap(),
            other => panic!("{other:?}"),
        };
        for (value, want) in [
            ("0", "int"),
            ("-9223372036854775808", "int"),
            ("9223372036854775808", "embstr"),
            ("007", "embstr"),
            ("-0", "embstr"),
            ("+1", "embstr"),
            (" 1", "embstr"),
            ("", "embstr"),
            (&"x".repeat(44), "embstr"),
            (&"x".repeat(45), "raw"),
            (&"1".repeat(45), "raw"),
        ] {
            assert_eq!(enc(value), want, "{value:?}");
        }
        let refs = |s: &str| object_field(&v(s), ObjectField::RefCount);
        assert_eq!(refs("9999"), OpReply::Int(2_147_483_647));
        assert_eq!(refs("10000"), OpReply::Int(1));
        assert_eq!(refs("-1"), OpReply::Int(1));
        assert_eq!(
            object_field(&v("x"), ObjectField::IdleTime),
            OpReply::Int(0)
        );
        assert_eq!(
            object_field(&v("x"), ObjectField::Freq),
            OpReply::Error(ERR_NO_LFU.into())
        );
    }

    #[test]
    fn ttl_and_type() {
        let mut db = HashMap::new();
        put(&mut db, "p", "v", 0);
        put(&mut db, "t", "v", 10_400);
        let ttl = |k: &str, ms| ReadOp::Ttl { key: b(k), ms };
        assert_eq!(r(&db, 0, ttl("missing", false)), OpReply::Int(-2));
        assert_eq!(r(&db, 0, ttl("p", false)), OpReply::Int(-1));
        assert_eq!(r(&db, 0, ttl("p", true)), OpReply::Int(-1));
        assert_eq!(r(&db, 0, ttl("t", true)), OpReply::Int(10_400));
        assert_eq!(r(&db, 0, ttl("t", false)), OpReply::Int(10));
        assert_eq!(r(&db, 300, ttl("t", false)), OpReply::Int(10));
        assert_eq!(r(&db, 10_400, ttl("t", false)), OpReply::Int(-2));
        let ty = |k: &str| ReadOp::Type { key: b(k) };
        assert_eq!(r(&db, 0, ty("p")), OpReply::Status("string".into()));
        assert_eq!(r(&db, 0, ty("nope")), OpReply::Status("none".into()));
        assert_eq!(r(&db, 10_400, ty("t")), OpReply::Status("none".into()));
    }

    #[test]
    fn getex_getdel_mset_purge() {
        let mut db = HashMap::new();
        put(&mut db, "k", "v", 0);
        let getex = |expiry| WriteOp::GetEx {
            key: b("k"),
            expiry,
        };
        assert_eq!(
            w(&mut db, 10, getex(Expiry::At(100))),
            OpReply::Bulk(b("v"))
        );
        assert_eq!(db[&b("k")].expire_at_ms, 100);
        assert_eq!(w(&mut db, 10, getex(Expiry::Clear)), OpReply::Bulk(b("v")));
        assert_eq!(db[&b("k")].expire_at_ms, 0);
        assert_eq!(w(&mut db, 10, getex(Expiry::At(5))), OpReply::Bulk(b("v")));
        assert!(db.is_empty());
        put(&mut db, "k", "v", 0);
        assert_eq!(
            w(&mut db, 0, WriteOp::GetDel { key: b("k") }),
            OpReply::Bulk(b("v"))
        );
        assert_eq!(w(&mut db, 0, WriteOp::GetDel { key: b("k") }), OpReply::Nil);
        let pairs = vec![(b("a"), b("1")), (b("b"), b("2")), (b("a"), b("3"))];
        assert_eq!(
            w(
                &mut db,
                0,
                WriteOp::MSet {
                    pairs: pairs.clone(),
                    nx: false
                }
            ),
            OpReply::Ok
        );
        assert_eq!(db[&b("a")].data, b("3"));
        assert_eq!(
            w(&mut db, 0, WriteOp::MSet { pairs, nx: true }),
            OpReply::Int(0)
        );
        let pairs = vec![(b("c"), b("1")), (b("d"), b("2"))];
        assert_eq!(
            w(&mut db, 0, WriteOp::MSet { pairs, nx: true }),
            OpReply::Int(1)
        );
        let mget = ReadOp::MGet {
            keys: vec![b("a"), b("x"), b("d")],
        };
        assert_eq!(
            r(&db, 0, mget),
            OpReply::Array(vec![
                OpReply::Bulk(b("3")),
                OpReply::Nil,
                OpReply::Bulk(b("2"))
            ])
        );
        // Purge removes only keys expired at the stamped time.
        put(&mut db, "e1", "v", 50);
        put(&mut db, "e2", "v", 500);
        let purge = WriteOp::PurgeExpired {
            keys: vec![b("e1"), b("e2"), b("a"), b("zz")],
        };
        assert_eq!(w(&mut db, 100, purge), OpReply::Int(1));
        assert!(!db.contains_key(&b("e1")) && db.contains_key(&b("e2")));
    }

    #[test]
    fn scan_pages_and_globs() {
        let row = |k: &str, exp| {
            (
                b(k),
                Stored {
                    version: 1,
                    expire_at_ms: exp,
                    data: b("v"),
                    coll: None,
                },
            )
        };
        let rows = vec![row("a1", 0), row("a2", 5), row("b1", 0), row("a3", 0)];
        let ok = |rows: &Vec<(Bytes, Stored)>| rows.clone().into_iter().map(Ok::<_, ()>);
        let page = scan_page(ok(&rows), 10, 2, None, usize::MAX).unwrap();
        assert_eq!(
            page,
            OpReply::Array(vec![
                OpReply::Bulk(b("a2")),
                OpReply::Array(vec![OpReply::Bulk(b("a1"))])
            ])
        );
        let page = scan_page(ok(&rows), 10, 10, Some(b"a*"), usize::MAX).unwrap();
        assert_eq!(
            page,
            OpReply::Array(vec![
                OpReply::Nil,
                OpReply::Array(vec![OpReply::Bulk(b("a1")), OpReply::Bulk(b("a3"))])
            ])
        );
        // Exactly `count` rows left: the page still reports a next key; the
        // following (empty) page ends the group.
        let page = scan_page(ok(&rows), 0, 4, None, usize::MAX).unwrap();
        assert!(matches!(page, OpReply::Array(ref p) if p[0] == OpReply::Bulk(b("a3"))));
        let live = rows.iter().map(|(_, v)| Ok::<_, ()>(v.clone()));
        assert_eq!(count_live(live, 10), Ok(3));
        // The page ends before its keys pass the byte budget (8 bytes each
        // here); the next page starts with the key that did not fit.
        let page = scan_page(ok(&rows), 0, 100, None, 20).unwrap();
        assert_eq!(
            page,
            OpReply::Array(vec![
                OpReply::Bulk(b("a2")),
                OpReply::Array(vec![OpReply::Bulk(b("a1")), OpReply::Bulk(b("a2"))])
            ])
        );
        let page = scan_page(ok(&rows), 0, 100, None, 1).unwrap();
        assert_eq!(
            page,
            OpReply::Array(vec![
                OpReply::Bulk(b("a1")),
                OpReply::Array(vec![OpReply::Bulk(b("a1"))])
            ])
        );
        // COUNT is clamped; an error in the input is the answer.
        let many = (0..MAX_SCAN_COUNT + 10).map(|i| Ok::<_, ()>(row(&format!("k{i:07}"), 0)));
        let page = scan_page(many, 0, u64::MAX, None, usize::MAX).unwrap();
        assert!(matches!(page, OpReply::Array(ref p)
            if matches!(&p[1], OpReply::Array(keys) if keys.len() as u64 == MAX_SCAN_COUNT)));
        let broken = vec![Ok(row("a", 0)), Err("corrupt"), Ok(row("c", 0))];
        assert_eq!(scan_page(broken, 0, 10, None, usize::MAX), Err("corrupt"));
        // A lone `*` takes the empty key too.
        let page = scan_page(vec![Ok::<_, ()>(row("", 0))], 0, 10, Some(b"*"), 99).unwrap();
        assert_eq!(
            page,
            OpReply::Array(vec![
                OpReply::Nil,
                OpReply::Array(vec![OpReply::Bulk(b(""))])
            ])
        );
    }

    /// 200k keys, each named twice: quadratic de-duplication (the old
    /// `Vec::retain` per pair) would take hours here; linear takes a blink.
    #[test]
    fn many_keys_dedup_in_linear_time() {
        let n = 200_000;
        let key = |i: usize| Bytes::from(format!("key:{i}"));
        let mut pairs: Vec<(Bytes, Bytes)> = (0..n).map(|i| (key(i), b("old"))).collect();
        pairs.extend((0..n).map(|i| (key(i), Bytes::from(i.to_string()))));
        let mut db = HashMap::new();
        let mset = WriteOp::MSet { pairs, nx: false };
        assert_eq!(w(&mut db, 0, mset), OpReply::Ok);
        assert_eq!(db.len(), n);
        assert_eq!(db[&key(12345)].data, b("12345"), "the last value wins");
        let mut keys: Vec<Bytes> = (0..n).map(key).collect();
        keys.extend((0..n).map(key));
        let exists = ReadOp::Exists { keys: keys.clone() };
        assert_eq!(r(&db, 0, exists), OpReply::Int(2 * n as i64));
        assert_eq!(
            w(&mut db, 0, WriteOp::Del { keys: keys.clone() }),
            OpReply::Int(n as i64)
        );
        assert!(db.is_empty());
        let purge = WriteOp::PurgeExpired { keys };
        assert_eq!(w(&mut db, 0, purge), OpReply::Int(0));
    }

    #[test]
    fn huge_exponents_neither_panic_nor_overflow() {
        // (current, increment, Redis 7.0's reply; checked with redis-cli).
        let ok = [
            ("1", "0e-2147483648", "1"),
            ("10.1", "0e-99999999999999999999", "10.1"),
            ("1", "0e2147483647", "1"),
            ("0", "1e-60", "0"),
            ("5", "-5e-50", "5"),
            ("0e-2147483648", "1", "1"),
        ];
        for (cur, by, want) in ok {
            assert_eq!(
                incr_float(cur.as_bytes(), by.as_bytes()),
                Ok(want.to_string()),
                "{cur} + {by}"
            );
        }
        for (cur, by, want) in [
            ("1", "1e999999999999", ERR_NOT_FLOAT),
            ("1", "1e-999999999999", ERR_NOT_FLOAT),
            ("1", "-1e2147483648", ERR_NOT_FLOAT),
            ("1e999999999999", "1", ERR_NOT_FLOAT),
        ] {
            assert_eq!(incr_float(cur.as_bytes(), by.as_bytes()), Err(want));
        }
        assert_eq!(parse_exponent("-2147483648"), Some(-1_000_000_000));
        assert_eq!(parse_exponent("-12"), Some(-12));
        assert_eq!(
            parse_exponent("99999999999999999999999"),
            Some(1_000_000_000)
        );
        assert_eq!(parse_exponent("+"), None);
        // TTL of the farthest deadline there is.
        let mut db = HashMap::new();
        put(&mut db, "k", "v", i64::MAX as u64);
        let ttl = ReadOp::Ttl {
            key: b("k"),
            ms: false,
        };
        assert_eq!(r(&db, 0, ttl), OpReply::Int(i64::MAX / 1000));
    }

    #[test]
    fn admission_uses_the_nodes_limits() {
        let limits = Limits {
            max_value_len: 10,
            max_reply_len: 100,
        };
        let too_big = Err(OpReply::Error(ERR_TOO_BIG.into()));
        let mut set = WriteOp::Set {
            key: b("k"),
            value: b("01234567890"),
            expiry: Expiry::Clear,
            cond: SetCond::Always,
            get: false,
        };
        assert_eq!(admit(&mut set, &limits), too_big);
        let mut sr = WriteOp::SetRange {
            key: b("k"),
            offset: 5,
            value: b("abc"),
            max_len: u64::MAX,
        };
        assert_eq!(admit(&mut sr, &limits), Ok(()));
        assert!(
            matches!(sr, WriteOp::SetRange { max_len: 10, .. }),
            "stamped"
        );
        let mut sr = WriteOp::SetRange {
            key: b("k"),
            offset: u64::MAX,
            value: b("abc"),
            max_len: u64::MAX,
        };
        assert_eq!(admit(&mut sr, &limits), too_big);
        // SETRANGE with nothing to write checks no offset (as Redis).
        let mut sr = WriteOp::SetRange {
            key: b("k"),
            offset: u64::MAX,
            value: b(""),
            max_len: 0,
        };
        assert_eq!(admit(&mut sr, &limits), Ok(()));
        let mut ap = WriteOp::Append {
            key: b("k"),
            value: b("x"),
            max_len: 1 << 40,
        };
        assert_eq!(admit(&mut ap, &limits), Ok(()));
        assert!(matches!(ap, WriteOp::Append { max_len: 10, .. }), "stamped");
        // A router with a tighter limit keeps it.
        let mut ap = WriteOp::Append {
            key: b("k"),
            value: b("x"),
            max_len: 4,
        };
        assert_eq!(admit(&mut ap, &limits), Ok(()));
        assert!(
            matches!(ap, WriteOp::Append { max_len: 4, .. }),
            "tightened"
        );
        // A whole record from the wire (the destination of a move across
        // shards) is held to the same limit.
        let record = |len: usize| Stored {
            version: 0,
            expire_at_ms: 0,
            data: Bytes::from(vec![b'x'; len]),
            coll: None,
        };
        let mut put = WriteOp::PutRecord {
            key: b("k"),
            record: record(11),
        };
        assert_eq!(admit(&mut put, &limits), too_big);
        let mut put = WriteOp::PutRecord {
            key: b("k"),
            record: record(10),
        };
        assert_eq!(admit(&mut put, &limits), Ok(()));
        let mut f = WriteOp::IncrByFloat {
            key: b("k"),
            by: b("1e400"),
        };
        assert_eq!(
            admit(&mut f, &limits),
            Err(OpReply::Error(ERR_NOT_FLOAT.into()))
        );
    }

    #[test]
    fn reply_sizes_are_exact() {
        let replies = [
            (OpReply::Ok, "+OK\r\n"),
            (OpReply::Nil, "$-1\r\n"),
            (OpReply::Int(-12), ":-12\r\n"),
            (OpReply::Int(7), ":7\r\n"),
            (OpReply::Bulk(b("hello world")), "$11\r\nhello world\r\n"),
            (OpReply::Bulk(b("")), "$0\r\n\r\n"),
            (OpReply::Error("ERR x".into()), "-ERR x\r\n"),
            (
                OpReply::Array(vec![OpReply::Bulk(b("a")), OpReply::Nil]),
                "*2\r\n$1\r\na\r\n$-1\r\n",
            ),
        ];
        for (reply, wire) in replies {
            // At least the wire size, and at most one byte over (the sign).
            let size = reply.resp_size();
            assert!(
                size >= wire.len() && size <= wire.len() + 1,
                "{reply:?}: {size}"
            );
        }
    }

    #[test]
    fn corrupt_errors_print_keys_safely() {
        let c = Corrupt {
            group: 3,
            place: Place::Key(Bytes::from_static(b"a\r\n\"\\\x00\xff")),
        };
        assert_eq!(
            c.to_string(),
            "ERR corrupt data at group 3 key \"a\\r\\n\\\"\\\\\\x00\\xff\""
        );
        let long = printable(&vec![b'k'; 1000]);
        assert!(long.len() < 200 && long.ends_with("(1000 bytes)"), "{long}");
        let mut db = HashMap::new();
        let mut read = |_: &[u8]| -> Result<Option<Stored>, Corrupt> { Err(c.clone()) };
        let cmd = WriteCmd {
            now_ms: 0,
            op: WriteOp::IncrBy { key: b("k"), by: 1 },
        };
        assert_eq!(apply_write(&cmd, 1, &mut read), (c.reply(), Vec::new()));
        assert!(apply_read(
            &ReadOp::Get { key: b("k") },
            0,
            100,
            &mut KeysOnly(&mut read)
        )
        .is_err());
        // The smallest stored value: header, version 0, no expiry, no bytes.
        db.insert(b("k"), Stored::decode(&[1, 11, 0, 0, 0]).unwrap());
        assert_eq!(r(&db, 0, ReadOp::Get { key: b("k") }), OpReply::Bulk(b("")));
    }

    #[test]
    fn stored_roundtrip() {
        let v = Stored {
            version: 7,
            expire_at_ms: 99,
            data: Bytes::from_static(b"\x00\r\nbin"),
            coll: None,
        };
        assert_eq!(Stored::decode(&v.encode().unwrap()), Ok(v));
        assert!(matches!(
            Stored::decode(b"s"),
            Err(CodecError::Truncated { len: 1, .. })
        ));
    }

    /// The layout of builds before formats were versioned (index 8 B BE ++
    /// expiry 8 B BE ++ bytes) is refused, whatever follows its first byte:
    /// never read as some other value.
    #[test]
    fn unversioned_stored_values_are_refused() {
        for (version, expiry, data) in [
            (1u64, 0u64, &b""[..]),
            (7, 99, b"v"),
            (0x0b01, 0, b"\x01\x0b"),
            ((1 << 56) - 1, u64::MAX, b"long value"),
        ] {
            let mut old = version.to_be_bytes().to_vec();
            old.extend_from_slice(&expiry.to_be_bytes());
            old.extend_from_slice(data);
            let e = Stored::decode(&old).unwrap_err();
            assert!(
                matches!(e, CodecError::UnknownVersion { version: 0, .. }),
                "{e}"
            );
            let c = Corrupt::check(3, b"k", &old).unwrap_err();
            assert_eq!(c.to_string(), "ERR corrupt data at group 3 key \"k\"");
        }
    }
}
