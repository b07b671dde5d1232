//! Lists: their element rows and the deterministic logic of their commands
//! (the storage model is [`super::coll`]'s).
//!
//! **Encoding.** The record's `left` is the index of the first element and
//! `len` the number of elements; element `i` (0-based from the head) is the
//! row `left + i` (8 bytes, big endian) -> its value. A new list starts at
//! `left = 2^63`, so it can grow 2^63 elements either way. Pushes and pops
//! at both ends, LINDEX, LSET and LRANGE touch only the rows they name;
//! LINSERT and LREM renumber the shorter side of the list around the
//! change (O(n), as in kvrocks); LTRIM deletes the rows it drops.

use std::ops::ControlFlow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::command::*;
use super::elements::{existing, load, KeyView, Layer, Open, Range, ReadView};
use super::value::*;

/// Which end of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum End {
    Left,
    Right,
}

/// A list write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LWrite {
    /// LPUSH / RPUSH, and with `only_if_exists` LPUSHX / RPUSHX.
    Push {
        key: Bytes,
        end: End,
        values: Vec<Bytes>,
        only_if_exists: bool,
    },
    /// LPOP / RPOP (`count: None`: one element, answered as a bulk).
    Pop {
        key: Bytes,
        end: End,
        count: Option<u64>,
    },
    /// LMPOP: from the first non-empty list.
    MPop {
        keys: Vec<Bytes>,
        end: End,
        count: u64,
    },
    /// LMOVE / RPOPLPUSH between lists of this shard.
    Move {
        src: Bytes,
        dst: Bytes,
        from: End,
        to: End,
    },
    LSet {
        key: Bytes,
        index: i64,
        value: Bytes,
    },
    LInsert {
        key: Bytes,
        before: bool,
        pivot: Bytes,
        value: Bytes,
    },
    LRem {
        key: Bytes,
        count: i64,
        value: Bytes,
    },
    LTrim {
        key: Bytes,
        start: i64,
        stop: i64,
    },
}

/// A list read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LRead {
    LLen {
        key: Bytes,
    },
    LIndex {
        key: Bytes,
        index: i64,
    },
    LRange {
        key: Bytes,
        start: i64,
        stop: i64,
    },
    /// LPOS: `rank` (never 0; negative from the tail), `count` (None: one
    /// answer as an integer or nil; 0: all), `max_len` (0: no limit).
    LPos {
        key: Bytes,
        value: Bytes,
        rank: i64,
        count: Option<u64>,
        max_len: u64,
    },
}

impl LWrite {
    pub fn keys(&self) -> Vec<&Bytes> {
        match self {
            LWrite::Push { key, .. }
            | LWrite::Pop { key, .. }
            | LWrite::LSet { key, .. }
            | LWrite::LInsert { key, .. }
            | LWrite::LRem { key, .. }
            | LWrite::LTrim { key, .. } => vec![key],
            LWrite::MPop { keys, .. } => keys.iter().collect(),
            LWrite::Move { src, dst, .. } => vec![src, dst],
        }
    }

    pub fn elements(&self) -> Vec<&Bytes> {
        match self {
            LWrite::Push { values, .. } => values.iter().collect(),
            LWrite::LSet { value, .. } => vec![value],
            LWrite::LInsert { pivot, value, .. } => vec![pivot, value],
            LWrite::LRem { value, .. } => vec![value],
            _ => Vec::new(),
        }
    }
}

impl LRead {
    pub fn keys(&self) -> Vec<&Bytes> {
        match self {
            LRead::LLen { key }
            | LRead::LIndex { key, .. }
            | LRead::LRange { key, .. }
            | LRead::LPos { key, .. } => vec![key],
        }
    }
}

/// The first index of a new list.
const MIDDLE: u64 = 1 << 63;

fn row(i: u64) -> Bytes {
    Bytes::copy_from_slice(&i.to_be_bytes())
}

fn new_list(key: &Bytes, index: u64) -> Open {
    let mut l = Open::new(key, Kind::List, index, 0);
    l.coll.left = MIDDLE;
    l
}

/// The live list, or a new empty one (generation `index`).
fn open_or_new(view: &mut dyn ReadView, key: &Bytes, now: u64, index: u64) -> Result<Open, Stop> {
    Ok(match existing(view, key, Kind::List, now)? {
        Some(l) => l,
        None => new_list(key, index),
    })
}

fn push(view: &mut dyn KeyView, l: &mut Open, end: End, value: Bytes) {
    let at = match end {
        End::Left => {
            l.coll.left = l.coll.left.wrapping_sub(1);
            l.coll.left
        }
        End::Right => l.coll.left.wrapping_add(l.coll.len),
    };
    l.coll.len += 1;
    view.put_sub(&l.key, l.coll.gen, row(at), Some(value));
}

/// Fill the new, empty list `l` with `values`, head first.
pub(super) fn fill(view: &mut dyn KeyView, l: &mut Open, values: &[Bytes]) {
    l.coll.left = MIDDLE;
    for v in values {
        push(view, l, End::Right, v.clone());
    }
}

/// Elements `[a, b]` (0-based from the head) as (row index, value).
fn rows(
    view: &mut dyn ReadView,
    l: &Coll,
    key: &[u8],
    a: u64,
    b: u64,
    rev: bool,
) -> Result<Vec<(u64, Bytes)>, Corrupt> {
    let from = row(l.left.wrapping_add(a));
    let to = row(l.left.wrapping_add(b).wrapping_add(1));
    let to = (l.left.wrapping_add(b) != u64::MAX).then_some(&to[..]);
    let found = view.sub_range(&Range {
        key,
        gen: l.gen,
        from: &from,
        to,
        rev,
        limit: (b - a + 1) as usize,
    })?;
    Ok(found
        .into_iter()
        .map(|(e, v)| {
            let mut i = [0u8; 8];
            let n = e.len().min(8);
            i[..n].copy_from_slice(&e[..n]);
            (u64::from_be_bytes(i), v)
        })
        .collect())
}

/// Pop up to `count` elements from one end.
fn pop(view: &mut dyn KeyView, l: &mut Open, end: End, count: u64) -> Result<Vec<Bytes>, Corrupt> {
    let n = count.min(l.coll.len);
    if n == 0 {
        return Ok(Vec::new());
    }
    let (a, b, rev) = match end {
        End::Left => (0, n - 1, false),
        End::Right => (l.coll.len - n, l.coll.len - 1, true),
    };
    let got = rows(view, &l.coll, &l.key.clone(), a, b, rev)?;
    let mut out = Vec::with_capacity(got.len());
    for (i, v) in got {
        view.put_sub(&l.key, l.coll.gen, row(i), None);
        out.push(v);
    }
    if end == End::Left {
        l.coll.left = l.coll.left.wrapping_add(n);
    }
    l.coll.len -= n;
    Ok(out)
}

/// Redis's index: negative from the tail; `None` out of range.
fn position(index: i64, len: u64) -> Option<u64> {
    let i = if index < 0 { index + len as i64 } else { index };
    (0..len as i64).contains(&i).then_some(i as u64)
}

/// Redis's LRANGE / LTRIM window.
fn window(start: i64, stop: i64, len: u64) -> Option<(u64, u64)> {
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

/// Every element, head first, as (row index, value).
fn all(view: &mut dyn ReadView, l: &Coll, key: &[u8]) -> Result<Vec<(u64, Bytes)>, Corrupt> {
    if l.len == 0 {
        return Ok(Vec::new());
    }
    rows(view, l, key, 0, l.len - 1, false)
}

/// Rewrite the list as `values`, keeping its generation and first index:
/// rows that change are written, rows past the new end deleted.
fn rewrite(view: &mut dyn KeyView, l: &mut Open, old: &[(u64, Bytes)], values: Vec<Bytes>) {
    for (i, v) in values.iter().enumerate() {
        let at = l.coll.left.wrapping_add(i as u64);
        if old.get(i).is_none_or(|(_, o)| o != v) {
            view.put_sub(&l.key, l.coll.gen, row(at), Some(v.clone()));
        }
    }
    for i in values.len()..old.len() {
        view.put_sub(
            &l.key,
            l.coll.gen,
            row(l.coll.left.wrapping_add(i as u64)),
            None,
        );
    }
    l.coll.len = values.len() as u64;
}

pub fn write(c: &LWrite, now: u64, index: u64, view: &mut Layer) -> Result<OpReply, Stop> {
    Ok(match c {
        LWrite::Push {
            key,
            end,
            values,
            only_if_exists,
        } => {
            let mut l = if *only_if_exists {
                match existing(view, key, Kind::List, now)? {
                    Some(l) => l,
                    None => return Ok(OpReply::Int(0)),
                }
            } else {
                open_or_new(view, key, now, index)?
            };
            for v in values {
                push(view, &mut l, *end, v.clone());
            }
            let n = l.coll.len as i64;
            l.save(view, index);
            OpReply::Int(n)
        }
        LWrite::Pop { key, end, count } => {
            let Some(mut l) = existing(view, key, Kind::List, now)? else {
                return Ok(match count {
                    None => OpReply::Nil,
                    Some(_) => OpReply::NilArray,
                });
            };
            let got = pop(view, &mut l, *end, count.unwrap_or(1))?;
            l.save(view, index);
            match count {
                None => got.into_iter().next().map_or(OpReply::Nil, OpReply::Bulk),
                Some(_) => OpReply::Array(got.into_iter().map(OpReply::Bulk).collect()),
            }
        }
        LWrite::MPop { keys, end, count } => {
            for key in keys {
                if let Some(mut l) = existing(view, key, Kind::List, now)? {
                    let got = pop(view, &mut l, *end, *count)?;
                    l.save(view, index);
                    return Ok(OpReply::Array(vec![
                        OpReply::Bulk(key.clone()),
                        OpReply::Array(got.into_iter().map(OpReply::Bulk).collect()),
                    ]));
                }
            }
            OpReply::NilArray
        }
        LWrite::Move { src, dst, from, to } => {
            let Some(mut s) = existing(view, src, Kind::List, now)? else {
                return Ok(OpReply::Nil);
            };
            // The destination's type is checked before anything moves.
            load(view, dst, Kind::List, now)?;
            let v = pop(view, &mut s, *from, 1)?.pop().unwrap_or_default();
            s.save(view, index);
            let mut d = open_or_new(view, dst, now, index)?;
            push(view, &mut d, *to, v.clone());
            d.save(view, index);
            OpReply::Bulk(v)
        }
        LWrite::LSet {
            key,
            index: at,
            value,
        } => {
            let Some(l) = existing(view, key, Kind::List, now)? else {
                return Ok(OpReply::Error("ERR no such key".into()));
            };
            let Some(i) = position(*at, l.coll.len) else {
                return Ok(OpReply::Error("ERR index out of range".into()));
            };
            view.put_sub(
                key,
                l.coll.gen,
                row(l.coll.left.wrapping_add(i)),
                Some(value.clone()),
            );
            l.save(view, index);
            OpReply::Ok
        }
        LWrite::LInsert {
            key,
            before,
            pivot,
            value,
        } => {
            let Some(mut l) = existing(view, key, Kind::List, now)? else {
                return Ok(OpReply::Int(0));
            };
            let old = all(view, &l.coll, key)?;
            let Some(p) = old.iter().position(|(_, v)| v == pivot) else {
                return Ok(OpReply::Int(-1));
            };
            let at = if *before { p } else { p + 1 };
            if at <= old.len() / 2 {
                // Shift the head one to the left: elements [0, at) move down.
                let left = l.coll.left.wrapping_sub(1);
                for (k, (_, v)) in old[..at].iter().enumerate() {
                    view.put_sub(
                        key,
                        l.coll.gen,
                        row(left.wrapping_add(k as u64)),
                        Some(v.clone()),
                    );
                }
                view.put_sub(
                    key,
                    l.coll.gen,
                    row(left.wrapping_add(at as u64)),
                    Some(value.clone()),
                );
                l.coll.left = left;
            } else {
                // Shift the tail one to the right.
                for (k, (_, v)) in old[at..].iter().enumerate().rev() {
                    let to = l.coll.left.wrapping_add((at + k + 1) as u64);
                    view.put_sub(key, l.coll.gen, row(to), Some(v.clone()));
                }
                view.put_sub(
                    key,
                    l.coll.gen,
                    row(l.coll.left.wrapping_add(at as u64)),
                    Some(value.clone()),
                );
            }
            l.coll.len += 1;
            let n = l.coll.len as i64;
            l.save(view, index);
            OpReply::Int(n)
        }
        LWrite::LRem { key, count, value } => {
            let Some(mut l) = existing(view, key, Kind::List, now)? else {
                return Ok(OpReply::Int(0));
            };
            let old = all(view, &l.coll, key)?;
            let mut remove = vec![false; old.len()];
            let limit = if *count == 0 {
                usize::MAX
            } else {
                count.unsigned_abs() as usize
            };
            let mut removed = 0;
            let mut mark = |i: usize| {
                if removed < limit && old[i].1 == *value {
                    remove[i] = true;
                    removed += 1;
                }
            };
            if *count < 0 {
                (0..old.len()).rev().for_each(&mut mark);
            } else {
                (0..old.len()).for_each(&mut mark);
            }
            if removed == 0 {
                return Ok(OpReply::Int(0));
            }
            let kept: Vec<Bytes> = old
                .iter()
                .zip(&remove)
                .filter(|(_, r)| !**r)
                .map(|((_, v), _)| v.clone())
                .collect();
            rewrite(view, &mut l, &old, kept);
            l.save(view, index);
            OpReply::Int(removed as i64)
        }
        LWrite::LTrim { key, start, stop } => {
            let Some(mut l) = existing(view, key, Kind::List, now)? else {
                return Ok(OpReply::Ok);
            };
            let (a, b) = match window(*start, *stop, l.coll.len) {
                Some(w) => w,
                None => {
                    // Everything goes: the record only (its rows are dead).
                    view.put(key, None);
                    return Ok(OpReply::Ok);
                }
            };
            let len = l.coll.len;
            for i in (0..a).chain(b + 1..len) {
                view.put_sub(key, l.coll.gen, row(l.coll.left.wrapping_add(i)), None);
            }
            l.coll.left = l.coll.left.wrapping_add(a);
            l.coll.len = b - a + 1;
            l.save(view, index);
            OpReply::Ok
        }
    })
}

pub fn read(c: &LRead, now: u64, view: &mut dyn ReadView) -> Result<OpReply, Stop> {
    Ok(match c {
        LRead::LLen { key } => {
            OpReply::Int(load(view, key, Kind::List, now)?.map_or(0, |(_, l)| l.len as i64))
        }
        LRead::LIndex { key, index } => {
            let Some((_, l)) = load(view, key, Kind::List, now)? else {
                return Ok(OpReply::Nil);
            };
            match position(*index, l.len) {
                Some(i) => view
                    .sub_get(key, l.gen, &row(l.left.wrapping_add(i)))?
                    .map_or(OpReply::Nil, OpReply::Bulk),
                None => OpReply::Nil,
            }
        }
        LRead::LRange { key, start, stop } => {
            let Some((_, l)) = load(view, key, Kind::List, now)? else {
                return Ok(OpReply::Array(Vec::new()));
            };
            match window(*start, *stop, l.len) {
                Some((a, b)) => OpReply::Array(
                    rows(view, &l, key, a, b, false)?
                        .into_iter()
                        .map(|(_, v)| OpReply::Bulk(v))
                        .collect(),
                ),
                None => OpReply::Array(Vec::new()),
            }
        }
        LRead::LPos {
            key,
            value,
            rank,
            count,
            max_len,
        } => {
            let none = || match count {
                None => OpReply::Nil,
                Some(_) => OpReply::Array(Vec::new()),
            };
            let Some((_, l)) = load(view, key, Kind::List, now)? else {
                return Ok(none());
            };
            let rev = *rank < 0;
            let mut skip = rank.unsigned_abs() - 1;
            let want = match count {
                None => 1,
                Some(0) => u64::MAX,
                Some(n) => *n,
            };
            let scan_max = if *max_len == 0 {
                l.len
            } else {
                (*max_len).min(l.len)
            };
            let mut found = Vec::new();
            let mut seen = 0u64;
            walk(view, &l, key, rev, |pos, v| {
                if seen >= scan_max {
                    return ControlFlow::Break(());
                }
                seen += 1;
                if v == *value {
                    if skip > 0 {
                        skip -= 1;
                    } else {
                        found.push(pos as i64);
                        if found.len() as u64 >= want {
                            return ControlFlow::Break(());
                        }
                    }
                }
                ControlFlow::Continue(())
            })?;
            match count {
                None => found.first().map_or(OpReply::Nil, |p| OpReply::Int(*p)),
                Some(_) => OpReply::Array(found.into_iter().map(OpReply::Int).collect()),
            }
        }
    })
}

/// Walk the list from the head (or the tail) page by page, with each
/// element's 0-based position, until `f` breaks.
fn walk(
    view: &mut dyn ReadView,
    l: &Coll,
    key: &[u8],
    rev: bool,
    mut f: impl FnMut(u64, Bytes) -> ControlFlow<()>,
) -> Result<(), Corrupt> {
    const PAGE: u64 = 512;
    if l.len == 0 {
        return Ok(());
    }
    let mut done = 0u64;
    while done < l.len {
        let n = PAGE.min(l.len - done);
        let (a, b) = if rev {
            (l.len - done - n, l.len - done - 1)
        } else {
            (done, done + n - 1)
        };
        for (i, v) in rows(view, l, key, a, b, rev)? {
            let pos = i.wrapping_sub(l.left);
            if f(pos, v).is_break() {
                return Ok(());
            }
        }
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_positions_follow_redis() {
        assert_eq!(window(0, -1, 3), Some((0, 2)));
        assert_eq!(window(-100, 100, 3), Some((0, 2)));
        assert_eq!(window(2, 1, 3), None);
        assert_eq!(window(3, 5, 3), None);
        assert_eq!(position(-1, 3), Some(2));
        assert_eq!(position(3, 3), None);
        assert_eq!(position(-4, 3), None);
    }
}
