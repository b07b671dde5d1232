//! Collections: how they are stored, the collection commands as values
//! ([`CollWrite`], [`CollRead`]), and the deterministic logic of the hash
//! and set commands (sorted sets: [`super::zset`]; the views and shared
//! pieces: [`super::elements`]).
//!
//! **Encoding** (kvrocks's model). A collection is one metadata record in
//! the `data` column family, under the key itself: a [`Stored`] whose
//! `coll` says the type, the generation and the number of elements. Each
//! element is one row of the `sub` column family under
//! [`sub_prefix`](super::engine::sub_prefix)`(group, key, gen)` followed by
//! the element: a hash field (value: the field's value) or a set member
//! (value: empty). A point operation touches the record and a few rows;
//! nothing loads the whole collection but the commands that answer with all
//! of it.
//!
//! **Generations make deletion O(1).** `gen` is the log index of the write
//! that created the collection. DEL, an overwrite by another type, an
//! expiry or FLUSHDB removes or replaces the record only; rows of a
//! generation no record names are invisible to every reader and removed in
//! the background, a bounded number per round ([`super::store::StateMachine::collect_garbage`]).
//! A collection emptied by its last removal loses its record the same way.
//! Two writes of one log entry (a proposer batch, a transaction) share an
//! index: the [`Overlay`] drops the rows of a generation it replaces before
//! they are written, so a collection re-created by the same entry never
//! sees its predecessor's elements.
//!
//! **Determinism.** Everything here reads the group's state through a
//! view, the time and random seed from the command: every replica that
//! applies the same log computes the same rows (SPOP's random choice
//! included, from the seed the router stamped).

use std::collections::HashSet;

use bytes::Bytes;

use super::command::*;
use super::decimal::incr_float;
use super::list::{LRead, LWrite};
use super::value::*;
use super::zset::{ZRead, ZWrite};

use super::elements::{all_rows, existing, load, Open};
pub use super::elements::{KeyView, KeysOnly, Layer, Overlay, Range, ReadView, Rng, SetOp};
use crate::glob::glob_match;
use crate::num::parse_i64;

/// A collection write as stored in the log.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum CollWrite {
    /// HSET (reply: fields added), HMSET (`OK`), HSETNX (`nx`: 1 if set).
    HSet {
        key: Bytes,
        pairs: Vec<(Bytes, Bytes)>,
        reply: HSetReply,
    },
    HDel {
        key: Bytes,
        fields: Vec<Bytes>,
    },
    HIncrBy {
        key: Bytes,
        field: Bytes,
        by: i64,
    },
    /// The increment as the client sent it (validated text).
    HIncrByFloat {
        key: Bytes,
        field: Bytes,
        by: Bytes,
    },
    SAdd {
        key: Bytes,
        members: Vec<Bytes>,
    },
    SRem {
        key: Bytes,
        members: Vec<Bytes>,
    },
    /// SPOP, with the random seed the router chose.
    SPop {
        key: Bytes,
        count: Option<u64>,
        seed: u64,
    },
    /// SMOVE between two keys of this shard.
    SMove {
        src: Bytes,
        dst: Bytes,
        member: Bytes,
    },
    /// SINTERSTORE / SUNIONSTORE / SDIFFSTORE over keys of this shard.
    SStore {
        op: SetOp,
        dst: Bytes,
        keys: Vec<Bytes>,
    },
    /// A sorted-set write ([`super::zset`]).
    Z(ZWrite),
    /// A list write ([`super::list`]).
    L(LWrite),
    /// Replace `key` with a collection of `content` (none: delete it),
    /// expiring at `expire_at_ms` (0: never). The write half of a multi-key
    /// command whose keys span shards: the router read and combined the
    /// inputs (SUNIONSTORE, ZUNIONSTORE, ZRANGESTORE...) or read a whole
    /// collection (RENAME, COPY) and writes the result here, in a
    /// transaction that WATCHes the inputs. Reply: the number of elements.
    Replace {
        key: Bytes,
        content: Content,
        expire_at_ms: u64,
    },
}

/// The elements of a whole collection, as a [`CollWrite::Replace`] carries
/// them. Repeated fields or members: the last one counts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Content {
    Hash(Vec<(Bytes, Bytes)>),
    Set(Vec<Bytes>),
    ZSet(Vec<(Bytes, f64)>),
    /// Elements from the head.
    List(Vec<Bytes>),
}

impl Content {
    pub fn len(&self) -> usize {
        match self {
            Content::Hash(pairs) => pairs.len(),
            Content::Set(items) | Content::List(items) => items.len(),
            Content::ZSet(items) => items.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn elements(&self) -> Vec<&Bytes> {
        match self {
            Content::Hash(pairs) => pairs.iter().flat_map(|(f, v)| [f, v]).collect(),
            Content::Set(items) | Content::List(items) => items.iter().collect(),
            Content::ZSet(items) => items.iter().map(|(m, _)| m).collect(),
        }
    }
}

/// What HSET-like commands answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HSetReply {
    /// HSET: the number of fields added.
    Added,
    /// HMSET: `OK`.
    Ok,
    /// HSETNX: set only when the field is absent; 1 if set.
    IfAbsent,
}

/// What a whole-hash read answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HashPart {
    /// HGETALL: a map of fields to values.
    All,
    Keys,
    Values,
}

/// A collection read.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum CollRead {
    HGet {
        key: Bytes,
        field: Bytes,
    },
    HMGet {
        key: Bytes,
        fields: Vec<Bytes>,
    },
    HLen {
        key: Bytes,
    },
    HStrLen {
        key: Bytes,
        field: Bytes,
    },
    HExists {
        key: Bytes,
        field: Bytes,
    },
    HGetAll {
        key: Bytes,
        part: HashPart,
    },
    /// HRANDFIELD: no count (one field or nil), or a count (negative:
    /// repeats allowed), with or without values.
    HRandField {
        key: Bytes,
        count: Option<i64>,
        with_values: bool,
        seed: u64,
    },
    /// HSCAN / SSCAN: one page of elements strictly after `after`; reply
    /// `[Bulk(last examined) | Nil when done, Array(items)]`.
    Scan {
        key: Bytes,
        kind: Kind,
        after: Bytes,
        count: u64,
        pattern: Option<Bytes>,
        no_values: bool,
    },
    SIsMember {
        key: Bytes,
        member: Bytes,
    },
    SMIsMember {
        key: Bytes,
        members: Vec<Bytes>,
    },
    SCard {
        key: Bytes,
    },
    SMembers {
        key: Bytes,
    },
    SRandMember {
        key: Bytes,
        count: Option<i64>,
        seed: u64,
    },
    /// SINTER / SUNION / SDIFF over keys of this shard.
    SCombine {
        op: SetOp,
        keys: Vec<Bytes>,
    },
    /// SINTERCARD (limit 0: none).
    SInterCard {
        keys: Vec<Bytes>,
        limit: u64,
    },
    /// A sorted-set read ([`super::zset`]).
    Z(ZRead),
    /// A list read ([`super::list`]).
    L(LRead),
}

impl CollWrite {
    pub fn keys(&self) -> Vec<&Bytes> {
        match self {
            CollWrite::HSet { key, .. }
            | CollWrite::HDel { key, .. }
            | CollWrite::HIncrBy { key, .. }
            | CollWrite::HIncrByFloat { key, .. }
            | CollWrite::SAdd { key, .. }
            | CollWrite::SRem { key, .. }
            | CollWrite::SPop { key, .. }
            | CollWrite::Replace { key, .. } => vec![key],
            CollWrite::SMove { src, dst, .. } => vec![src, dst],
            CollWrite::SStore { dst, keys, .. } => std::iter::once(dst).chain(keys).collect(),
            CollWrite::Z(z) => z.keys(),
            CollWrite::L(l) => l.keys(),
        }
    }

    /// The element bytes it writes (fields, values, members), for limits
    /// and batch sizing.
    pub fn elements(&self) -> Vec<&Bytes> {
        match self {
            CollWrite::HSet { pairs, .. } => pairs.iter().flat_map(|(f, v)| [f, v]).collect(),
            CollWrite::HDel { fields, .. } => fields.iter().collect(),
            CollWrite::HIncrBy { field, .. } => vec![field],
            CollWrite::HIncrByFloat { field, by, .. } => vec![field, by],
            CollWrite::SAdd { members, .. } | CollWrite::SRem { members, .. } => {
                members.iter().collect()
            }
            CollWrite::SMove { member, .. } => vec![member],
            CollWrite::SPop { .. } | CollWrite::SStore { .. } => Vec::new(),
            CollWrite::Replace { content, .. } => content.elements(),
            CollWrite::Z(z) => z.elements(),
            CollWrite::L(l) => l.elements(),
        }
    }
}

impl CollRead {
    pub fn keys(&self) -> Vec<&Bytes> {
        match self {
            CollRead::HGet { key, .. }
            | CollRead::HMGet { key, .. }
            | CollRead::HLen { key }
            | CollRead::HStrLen { key, .. }
            | CollRead::HExists { key, .. }
            | CollRead::HGetAll { key, .. }
            | CollRead::HRandField { key, .. }
            | CollRead::Scan { key, .. }
            | CollRead::SIsMember { key, .. }
            | CollRead::SMIsMember { key, .. }
            | CollRead::SCard { key }
            | CollRead::SMembers { key }
            | CollRead::SRandMember { key, .. } => vec![key],
            CollRead::SCombine { keys, .. } | CollRead::SInterCard { keys, .. } => {
                keys.iter().collect()
            }
            CollRead::Z(z) => z.keys(),
            CollRead::L(l) => l.keys(),
        }
    }
}

pub const ERR_HASH_NOT_INTEGER: &str = "ERR hash value is not an integer";
pub const ERR_HASH_NOT_FLOAT: &str = "ERR hash value is not a float";

/// Apply a collection write over `view`, deterministically. Nothing is
/// changed when it stops (corrupt data, a key of another type).
pub fn write(c: &CollWrite, now: u64, index: u64, view: &mut dyn KeyView) -> Result<OpReply, Stop> {
    let (reply, ov) = {
        let mut layer = Layer::new(view);
        let reply = write_in(c, now, index, &mut layer)?;
        (reply, layer.ov)
    };
    ov.commit(view);
    Ok(reply)
}

fn write_in(c: &CollWrite, now: u64, index: u64, view: &mut Layer) -> Result<OpReply, Stop> {
    Ok(match c {
        CollWrite::Z(z) => return super::zset::write(z, now, index, view),
        CollWrite::L(l) => return super::list::write(l, now, index, view),
        CollWrite::Replace {
            key,
            content,
            expire_at_ms,
        } => {
            // Drop the old record first so its rows of this same
            // generation (if it was made by this entry) go too.
            view.put(key, None);
            let kind = match content {
                Content::Hash(_) => Kind::Hash,
                Content::Set(_) => Kind::Set,
                Content::ZSet(_) => Kind::ZSet,
                Content::List(_) => Kind::List,
            };
            let mut out = Open::new(key, kind, index, *expire_at_ms);
            match content {
                Content::Hash(pairs) => {
                    for (f, v) in pairs {
                        let existed = out.elem(view, f)?.is_some();
                        out.set(view, f, v.clone(), existed);
                    }
                }
                Content::Set(members) => {
                    for m in members {
                        let existed = out.elem(view, m)?.is_some();
                        out.set(view, m, Bytes::new(), existed);
                    }
                }
                Content::ZSet(items) => super::zset::fill(view, &mut out, items)?,
                Content::List(values) => super::list::fill(view, &mut out, values),
            }
            let n = out.coll.len as i64;
            out.save(view, index);
            OpReply::Int(n)
        }
        CollWrite::HSet { key, pairs, reply } => {
            let mut h = Open::get(view, key, Kind::Hash, now, index)?;
            let mut added = 0;
            for (f, v) in pairs {
                let existed = h.elem(view, f)?.is_some();
                if existed && *reply == HSetReply::IfAbsent {
                    return Ok(OpReply::Int(0));
                }
                added += !existed as i64;
                h.set(view, f, v.clone(), existed);
            }
            h.save(view, index);
            match reply {
                HSetReply::Added => OpReply::Int(added),
                HSetReply::Ok => OpReply::Ok,
                HSetReply::IfAbsent => OpReply::Int(1),
            }
        }
        CollWrite::HDel { key, fields } => {
            let Some(mut h) = existing(view, key, Kind::Hash, now)? else {
                return Ok(OpReply::Int(0));
            };
            let mut removed = 0;
            for f in fields {
                if h.elem(view, f)?.is_some() {
                    h.remove(view, f);
                    removed += 1;
                }
            }
            if removed > 0 {
                h.save(view, index);
            }
            OpReply::Int(removed)
        }
        CollWrite::HIncrBy { key, field, by } => {
            let mut h = Open::get(view, key, Kind::Hash, now, index)?;
            let old = h.elem(view, field)?;
            let current = match &old {
                None => 0,
                Some(v) => match parse_i64(v) {
                    Some(n) => n,
                    None => return Ok(OpReply::Error(ERR_HASH_NOT_INTEGER.into())),
                },
            };
            let Some(new) = current.checked_add(*by) else {
                return Ok(OpReply::Error(ERR_OVERFLOW.into()));
            };
            h.set(view, field, Bytes::from(new.to_string()), old.is_some());
            h.save(view, index);
            OpReply::Int(new)
        }
        CollWrite::HIncrByFloat { key, field, by } => {
            let mut h = Open::get(view, key, Kind::Hash, now, index)?;
            let old = h.elem(view, field)?;
            let current: &[u8] = old.as_deref().unwrap_or(b"0");
            if crate::num::parse_f64(current).is_none() {
                return Ok(OpReply::Error(ERR_HASH_NOT_FLOAT.into()));
            }
            match incr_float(current, by) {
                Ok(text) => {
                    let text = Bytes::from(text);
                    h.set(view, field, text.clone(), old.is_some());
                    h.save(view, index);
                    OpReply::Bulk(text)
                }
                Err(e) => OpReply::Error(e.into()),
            }
        }
        CollWrite::SAdd { key, members } => {
            let mut s = Open::get(view, key, Kind::Set, now, index)?;
            let mut added = 0;
            for m in members {
                if s.elem(view, m)?.is_none() {
                    s.set(view, m, Bytes::new(), false);
                    added += 1;
                }
            }
            if added > 0 {
                s.save(view, index);
            }
            OpReply::Int(added)
        }
        CollWrite::SRem { key, members } => {
            let Some(mut s) = existing(view, key, Kind::Set, now)? else {
                return Ok(OpReply::Int(0));
            };
            let mut removed = 0;
            for m in members {
                if s.elem(view, m)?.is_some() {
                    s.remove(view, m);
                    removed += 1;
                }
            }
            if removed > 0 {
                s.save(view, index);
            }
            OpReply::Int(removed)
        }
        CollWrite::SPop { key, count, seed } => {
            let Some(mut s) = existing(view, key, Kind::Set, now)? else {
                return Ok(match count {
                    None => OpReply::Nil,
                    Some(_) => OpReply::Set(Vec::new()),
                });
            };
            let want = count.unwrap_or(1);
            if want == 0 {
                return Ok(OpReply::Set(Vec::new()));
            }
            let picked = sample(view, key, &s.coll, want, false, &mut Rng(*seed))?;
            for (m, _) in &picked {
                s.remove(view, m);
            }
            s.save(view, index);
            let mut members: Vec<OpReply> =
                picked.into_iter().map(|(m, _)| OpReply::Bulk(m)).collect();
            match count {
                None => members.pop().unwrap_or(OpReply::Nil),
                Some(_) => OpReply::Set(members),
            }
        }
        CollWrite::SMove { src, dst, member } => {
            let from = load(view, src, Kind::Set, now)?;
            // Redis checks the destination's type before anything else.
            load(view, dst, Kind::Set, now)?;
            let Some((v, coll)) = from else {
                return Ok(OpReply::Int(0));
            };
            let mut from = Open {
                key: src.clone(),
                coll,
                expire_at_ms: v.expire_at_ms,
            };
            if from.elem(view, member)?.is_none() {
                return Ok(OpReply::Int(0));
            }
            if src == dst {
                return Ok(OpReply::Int(1));
            }
            from.remove(view, member);
            from.save(view, index);
            let mut to = Open::get(view, dst, Kind::Set, now, index)?;
            if to.elem(view, member)?.is_none() {
                to.set(view, member, Bytes::new(), false);
                to.save(view, index);
            }
            OpReply::Int(1)
        }
        CollWrite::SStore { op, dst, keys } => {
            let members = combine(view, *op, keys, now)?;
            // The destination is replaced whatever it held.
            let n = members.len() as i64;
            if members.is_empty() {
                view.put(dst, None);
            } else {
                let mut out = Open::new(dst, Kind::Set, index, 0);
                // Drop the old record first so its rows of this same
                // generation (if it was made by this entry) go too.
                view.put(dst, None);
                for m in &members {
                    out.set(view, m, Bytes::new(), false);
                }
                out.save(view, index);
            }
            OpReply::Int(n)
        }
    })
}

/// Members of the sets `keys` combined by `op`, in member order. A missing
/// key is an empty set; a key of another type is WRONGTYPE.
fn combine(
    view: &mut dyn ReadView,
    op: SetOp,
    keys: &[Bytes],
    now: u64,
) -> Result<Vec<Bytes>, Stop> {
    let mut sets = Vec::with_capacity(keys.len());
    for k in keys {
        sets.push(load(view, k, Kind::Set, now)?.map(|(_, c)| c));
    }
    let members = |view: &mut dyn ReadView, i: usize| -> Result<Vec<Bytes>, Corrupt> {
        match &sets[i] {
            Some(c) => Ok(all_rows(view, &keys[i], c)?
                .into_iter()
                .map(|(m, _)| m)
                .collect()),
            None => Ok(Vec::new()),
        }
    };
    let mut acc: Vec<Bytes> = members(view, 0)?;
    for i in 1..keys.len() {
        match op {
            SetOp::Inter => {
                if acc.is_empty() {
                    break;
                }
                let Some(c) = sets[i] else {
                    acc.clear();
                    break;
                };
                let mut kept = Vec::with_capacity(acc.len());
                for m in acc {
                    if view.sub_get(&keys[i], c.gen, &m)?.is_some() {
                        kept.push(m);
                    }
                }
                acc = kept;
            }
            SetOp::Union => {
                let mut all: std::collections::BTreeSet<Bytes> = acc.into_iter().collect();
                all.extend(members(view, i)?);
                acc = all.into_iter().collect();
            }
            SetOp::Diff => {
                let Some(c) = sets[i] else { continue };
                let mut kept = Vec::with_capacity(acc.len());
                for m in acc {
                    if view.sub_get(&keys[i], c.gen, &m)?.is_none() {
                        kept.push(m);
                    }
                }
                acc = kept;
            }
        }
    }
    Ok(acc)
}

/// Serve a collection read. Replies that would pass `max_reply` bytes are
/// refused with the "reply too large" error.
pub fn read(
    c: &CollRead,
    now: u64,
    max_reply: usize,
    view: &mut dyn ReadView,
) -> Result<OpReply, Stop> {
    let reply = read_in(c, now, max_reply, view)?;
    if reply.resp_size() > max_reply {
        return Ok(too_large(c, max_reply));
    }
    Ok(reply)
}

fn too_large(c: &CollRead, max_reply: usize) -> OpReply {
    let name = match c {
        CollRead::HGetAll { part, .. } => match part {
            HashPart::All => "HGETALL",
            HashPart::Keys => "HKEYS",
            HashPart::Values => "HVALS",
        },
        CollRead::HMGet { .. } => "HMGET",
        CollRead::SMembers { .. } => "SMEMBERS",
        CollRead::SCombine { .. } => "SINTER/SUNION/SDIFF",
        CollRead::HRandField { .. } => "HRANDFIELD",
        CollRead::SRandMember { .. } => "SRANDMEMBER",
        CollRead::L(LRead::LRange { .. }) => "LRANGE",
        CollRead::Z(ZRead::ZRange { .. }) => "ZRANGE",
        _ => "the reply",
    };
    OpReply::Error(reply_too_large(name, max_reply))
}

fn read_in(
    c: &CollRead,
    now: u64,
    max_reply: usize,
    view: &mut dyn ReadView,
) -> Result<OpReply, Stop> {
    let bulk_or_nil = |v: Option<Bytes>| v.map_or(OpReply::Nil, OpReply::Bulk);
    Ok(match c {
        CollRead::Z(z) => return super::zset::read(z, now, view),
        CollRead::L(l) => return super::list::read(l, now, view),
        CollRead::HGet { key, field } => match load(view, key, Kind::Hash, now)? {
            Some((_, h)) => bulk_or_nil(view.sub_get(key, h.gen, field)?),
            None => OpReply::Nil,
        },
        CollRead::HMGet { key, fields } => {
            let h = load(view, key, Kind::Hash, now)?;
            let mut out = Vec::with_capacity(fields.len());
            for f in fields {
                out.push(match &h {
                    Some((_, h)) => bulk_or_nil(view.sub_get(key, h.gen, f)?),
                    None => OpReply::Nil,
                });
            }
            OpReply::Array(out)
        }
        CollRead::HLen { key } | CollRead::SCard { key } => {
            let kind = if matches!(c, CollRead::HLen { .. }) {
                Kind::Hash
            } else {
                Kind::Set
            };
            OpReply::Int(load(view, key, kind, now)?.map_or(0, |(_, c)| c.len as i64))
        }
        CollRead::HStrLen { key, field } => match load(view, key, Kind::Hash, now)? {
            Some((_, h)) => OpReply::Int(
                view.sub_get(key, h.gen, field)?
                    .map_or(0, |v| v.len() as i64),
            ),
            None => OpReply::Int(0),
        },
        CollRead::HExists { key, field } | CollRead::SIsMember { key, member: field } => {
            let kind = if matches!(c, CollRead::HExists { .. }) {
                Kind::Hash
            } else {
                Kind::Set
            };
            match load(view, key, kind, now)? {
                Some((_, h)) => OpReply::Int(view.sub_get(key, h.gen, field)?.is_some() as i64),
                None => OpReply::Int(0),
            }
        }
        CollRead::SMIsMember { key, members } => {
            let s = load(view, key, Kind::Set, now)?;
            let mut out = Vec::with_capacity(members.len());
            for m in members {
                out.push(OpReply::Int(match &s {
                    Some((_, s)) => view.sub_get(key, s.gen, m)?.is_some() as i64,
                    None => 0,
                }));
            }
            OpReply::Array(out)
        }
        CollRead::HGetAll { key, part } => {
            let Some((_, h)) = load(view, key, Kind::Hash, now)? else {
                return Ok(match part {
                    HashPart::All => OpReply::Map(Vec::new()),
                    _ => OpReply::Array(Vec::new()),
                });
            };
            let Some(rows) = bounded_rows(view, key, &h, max_reply)? else {
                return Ok(too_large(c, max_reply));
            };
            match part {
                HashPart::All => OpReply::Map(
                    rows.into_iter()
                        .map(|(f, v)| (OpReply::Bulk(f), OpReply::Bulk(v)))
                        .collect(),
                ),
                HashPart::Keys => {
                    OpReply::Array(rows.into_iter().map(|(f, _)| OpReply::Bulk(f)).collect())
                }
                HashPart::Values => {
                    OpReply::Array(rows.into_iter().map(|(_, v)| OpReply::Bulk(v)).collect())
                }
            }
        }
        CollRead::SMembers { key } => match load(view, key, Kind::Set, now)? {
            Some((_, s)) => {
                let Some(rows) = bounded_rows(view, key, &s, max_reply)? else {
                    return Ok(too_large(c, max_reply));
                };
                OpReply::Set(rows.into_iter().map(|(m, _)| OpReply::Bulk(m)).collect())
            }
            None => OpReply::Set(Vec::new()),
        },
        CollRead::HRandField {
            key,
            count,
            with_values,
            seed,
        } => {
            let Some((_, h)) = load(view, key, Kind::Hash, now)? else {
                return Ok(match count {
                    None => OpReply::Nil,
                    Some(_) => OpReply::Array(Vec::new()),
                });
            };
            let mut rng = Rng(*seed);
            match count {
                None => {
                    let picked = sample(view, key, &h, 1, false, &mut rng)?;
                    bulk_or_nil(picked.into_iter().next().map(|(f, _)| f))
                }
                Some(n) => {
                    let picked = sample(view, key, &h, n.unsigned_abs(), *n < 0, &mut rng)?;
                    if *with_values {
                        OpReply::Pairs(
                            picked
                                .into_iter()
                                .map(|(f, v)| (OpReply::Bulk(f), OpReply::Bulk(v)))
                                .collect(),
                        )
                    } else {
                        OpReply::Array(picked.into_iter().map(|(f, _)| OpReply::Bulk(f)).collect())
                    }
                }
            }
        }
        CollRead::SRandMember { key, count, seed } => {
            let Some((_, s)) = load(view, key, Kind::Set, now)? else {
                return Ok(match count {
                    None => OpReply::Nil,
                    Some(_) => OpReply::Array(Vec::new()),
                });
            };
            let mut rng = Rng(*seed);
            match count {
                None => {
                    let picked = sample(view, key, &s, 1, false, &mut rng)?;
                    bulk_or_nil(picked.into_iter().next().map(|(m, _)| m))
                }
                Some(n) => OpReply::Array(
                    sample(view, key, &s, n.unsigned_abs(), *n < 0, &mut rng)?
                        .into_iter()
                        .map(|(m, _)| OpReply::Bulk(m))
                        .collect(),
                ),
            }
        }
        CollRead::SCombine { op, keys } => OpReply::Set(
            combine(view, *op, keys, now)?
                .into_iter()
                .map(OpReply::Bulk)
                .collect(),
        ),
        CollRead::SInterCard { keys, limit } => {
            let n = combine(view, SetOp::Inter, keys, now)?.len() as u64;
            OpReply::Int(if *limit > 0 { n.min(*limit) } else { n } as i64)
        }
        CollRead::Scan {
            key,
            kind,
            after,
            count,
            pattern,
            no_values,
        } => {
            let Some((_, coll)) = load(view, key, *kind, now)? else {
                return Ok(OpReply::Array(vec![
                    OpReply::Nil,
                    OpReply::Array(Vec::new()),
                ]));
            };
            let count = (*count).clamp(1, MAX_SCAN_COUNT) as usize;
            // A sorted set is scanned over its member rows (tag 0).
            let tag: &[u8] = if *kind == Kind::ZSet { &[0] } else { &[] };
            // Strictly after `after`: the smallest element above it.
            let mut from = [tag, &after[..]].concat();
            if !after.is_empty() {
                from.push(0);
            }
            let end = [1u8];
            let rows = view.sub_range(&Range {
                key,
                gen: coll.gen,
                from: &from,
                to: (*kind == Kind::ZSet).then_some(&end[..]),
                rev: false,
                limit: count,
            })?;
            let done = rows.len() < count;
            let pattern = pattern.as_deref().filter(|p| *p != b"*");
            let mut items = Vec::new();
            let mut size = 0usize;
            let mut last = None;
            let mut cut = false;
            for (e, v) in rows {
                let e = e.slice(tag.len()..);
                if pattern.is_none_or(|p| glob_match(p, &e)) {
                    size = size.saturating_add(e.len() + v.len() + 32);
                    if size > max_reply && !items.is_empty() {
                        // Full: this element opens the next page.
                        cut = true;
                        break;
                    }
                    items.push(OpReply::Bulk(e.clone()));
                    match kind {
                        Kind::Hash if !*no_values => items.push(OpReply::Bulk(v)),
                        Kind::ZSet => {
                            let mut a = [0u8; 8];
                            let n = v.len().min(8);
                            a[..n].copy_from_slice(&v[..n]);
                            items.push(OpReply::Double(f64::from_be_bytes(a)));
                        }
                        _ => {}
                    }
                }
                last = Some(e);
            }
            let next = match (done && !cut, last) {
                (false, Some(e)) => OpReply::Bulk(e),
                _ => OpReply::Nil,
            };
            OpReply::Array(vec![next, OpReply::Array(items)])
        }
    })
}

/// Every row of a collection; `None` once their reply would pass
/// `max_reply` bytes (checked page by page: the rows of a huge collection
/// are not all read first).
fn bounded_rows(
    view: &mut dyn ReadView,
    key: &[u8],
    coll: &Coll,
    max_reply: usize,
) -> Result<Option<Vec<(Bytes, Bytes)>>, Stop> {
    const PAGE: usize = 1024;
    let mut out: Vec<(Bytes, Bytes)> = Vec::new();
    let mut size = 0usize;
    let mut from: Vec<u8> = Vec::new();
    loop {
        let page = view.sub_range(&Range {
            key,
            gen: coll.gen,
            from: &from,
            to: None,
            rev: false,
            limit: PAGE,
        })?;
        let full = page.len() == PAGE;
        for (e, v) in page {
            size = size.saturating_add(e.len() + v.len() + 16);
            if size > max_reply {
                return Ok(None);
            }
            from = e.to_vec();
            from.push(0);
            out.push((e, v));
        }
        if !full {
            return Ok(Some(out));
        }
    }
}

/// Collections up to this size are sampled from all their rows; bigger ones
/// by random seeks.
const SAMPLE_ALL: u64 = 4096;

/// Random elements of a collection: `n` picks with repeats (`repeat`), or
/// up to `n` distinct ones (all of them when `n >= len`).
fn sample(
    view: &mut dyn ReadView,
    key: &[u8],
    coll: &Coll,
    n: u64,
    repeat: bool,
    rng: &mut Rng,
) -> Result<Vec<(Bytes, Bytes)>, Corrupt> {
    if !repeat && n >= coll.len {
        return all_rows(view, key, coll);
    }
    if coll.len <= SAMPLE_ALL {
        let mut rows = all_rows(view, key, coll)?;
        if rows.is_empty() {
            return Ok(rows);
        }
        if repeat {
            return Ok((0..n)
                .map(|_| rows[rng.below(rows.len() as u64) as usize].clone())
                .collect());
        }
        // A partial Fisher-Yates shuffle: the first n are the sample.
        for i in 0..n as usize {
            let j = i + rng.below((rows.len() - i) as u64) as usize;
            rows.swap(i, j);
        }
        rows.truncate(n as usize);
        return Ok(rows);
    }
    // Random seeks: the first row at or after a random element (wrapping).
    let mut out = Vec::new();
    let mut seen: HashSet<Bytes> = HashSet::new();
    let mut tries = 0u64;
    while (out.len() as u64) < n && tries < n.saturating_mul(8).max(64) {
        tries += 1;
        let start = rng.next_u64().to_be_bytes();
        let mut row = view.sub_range(&Range {
            key,
            gen: coll.gen,
            from: &start,
            to: None,
            rev: false,
            limit: 1,
        })?;
        if row.is_empty() {
            row = view.sub_range(&Range {
                key,
                gen: coll.gen,
                from: &[],
                to: None,
                rev: false,
                limit: 1,
            })?;
        }
        if let Some(r) = row.pop() {
            if repeat || seen.insert(r.0.clone()) {
                out.push(r);
            }
        }
    }
    Ok(out)
}
