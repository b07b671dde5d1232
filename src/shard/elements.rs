//! The views collection commands read and write the group's state through,
//! and the pieces every collection type shares: the [`Overlay`] that layers
//! a batch's (or one write's) changes over the database, a collection's
//! record opened for a write (`Open`), set algebra's operator, and the
//! seeded generator of the random commands. The encoding they serve is
//! described in [`super::coll`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;

use bytes::Bytes;

use super::value::*;

/// Element rows of one generation of a collection: the elements in
/// `[from, to)` (`to: None`, to the end), in order or reversed, at most
/// `limit` of them.
#[derive(Debug, Clone, Copy)]
pub struct Range<'a> {
    pub key: &'a [u8],
    pub gen: u64,
    pub from: &'a [u8],
    pub to: Option<&'a [u8]>,
    pub rev: bool,
    pub limit: usize,
}

/// What a command reads of its group: key records and element rows, as of
/// just before it (earlier writes of the same batch included).
pub trait ReadView {
    /// A key's record, expired or not.
    fn get(&mut self, key: &[u8]) -> Result<Option<Stored>, Corrupt>;
    /// One element row's value.
    fn sub_get(&mut self, key: &[u8], gen: u64, elem: &[u8]) -> Result<Option<Bytes>, Corrupt>;
    /// Element rows `(element, value)` in a range.
    fn sub_range(&mut self, q: &Range<'_>) -> Result<Vec<(Bytes, Bytes)>, Corrupt>;
}

/// A view of key records only, from a function: for readers that hold
/// values without their element rows (the router's read-only transaction
/// snapshot, tests of string commands). Collections read through it look
/// empty, so such readers must not serve collection reads.
pub struct KeysOnly<F>(pub F);

impl<F> ReadView for KeysOnly<F>
where
    F: FnMut(&[u8]) -> Result<Option<Stored>, Corrupt>,
{
    fn get(&mut self, key: &[u8]) -> Result<Option<Stored>, Corrupt> {
        (self.0)(key)
    }

    fn sub_get(&mut self, _: &[u8], _: u64, _: &[u8]) -> Result<Option<Bytes>, Corrupt> {
        Ok(None)
    }

    fn sub_range(&mut self, _: &Range<'_>) -> Result<Vec<(Bytes, Bytes)>, Corrupt> {
        Ok(Vec::new())
    }
}

/// A [`ReadView`] a write can change.
pub trait KeyView: ReadView {
    fn put(&mut self, key: &Bytes, v: Option<Stored>);
    fn put_sub(&mut self, key: &Bytes, gen: u64, elem: Bytes, v: Option<Bytes>);
}

/// Changes layered over a view: key records and element rows, each set or
/// deleted. A batch of entries keeps one ([`super::store`]), a transaction
/// and each collection write another ([`Layer`]).
#[derive(Debug, Default, Clone)]
pub struct Overlay {
    pub keys: HashMap<Bytes, Option<Stored>>,
    /// (key, gen, element) -> value, or `None` for a deleted row.
    pub subs: BTreeMap<(Bytes, u64, Bytes), Option<Bytes>>,
    /// Keys deleted at some point (even if written again since): what this
    /// overlay is committed into deletes them first, so rows it holds of a
    /// generation reused by the same entry are dropped there too.
    pub resets: HashSet<Bytes>,
}

type SubKey = (Bytes, u64, Bytes);

impl Overlay {
    pub fn key(&self, key: &[u8]) -> Option<&Option<Stored>> {
        self.keys.get(key)
    }

    pub fn sub(&self, key: &[u8], gen: u64, elem: &[u8]) -> Option<&Option<Bytes>> {
        self.subs.get(&(
            Bytes::copy_from_slice(key),
            gen,
            Bytes::copy_from_slice(elem),
        ))
    }

    /// Set a key's record. Rows of a generation it replaces that only this
    /// overlay holds are dropped (see the module doc).
    pub fn put(&mut self, key: &Bytes, v: Option<Stored>) {
        let new_gen = v.as_ref().and_then(|s| s.coll).map(|c| c.gen);
        if let Some(Some(Stored {
            coll: Some(old), ..
        })) = self.keys.get(key)
        {
            if Some(old.gen) != new_gen {
                let gone: Vec<SubKey> = self
                    .subs
                    .range(gen_bounds(key, old.gen))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in gone {
                    self.subs.remove(&k);
                }
            }
        }
        if v.is_none() {
            self.resets.insert(key.clone());
        }
        self.keys.insert(key.clone(), v);
    }

    pub fn put_sub(&mut self, key: &Bytes, gen: u64, elem: Bytes, v: Option<Bytes>) {
        self.subs.insert((key.clone(), gen, elem), v);
    }

    /// Forget everything (FLUSHDB: the caller clears what lies below).
    pub fn clear(&mut self) {
        self.keys.clear();
        self.subs.clear();
        self.resets.clear();
    }

    /// The rows of `q`: this overlay's over `base`'s (which is asked for
    /// enough rows to fill `limit` whatever this overlay deletes).
    pub fn range_over(
        &self,
        q: &Range<'_>,
        base: impl FnOnce(usize) -> Result<Vec<(Bytes, Bytes)>, Corrupt>,
    ) -> Result<Vec<(Bytes, Bytes)>, Corrupt> {
        if q.to.is_some_and(|to| to <= q.from) || q.limit == 0 {
            return Ok(Vec::new());
        }
        let key = Bytes::copy_from_slice(q.key);
        let lo = (key.clone(), q.gen, Bytes::copy_from_slice(q.from));
        let hi = match q.to {
            Some(to) => Bound::Excluded((key, q.gen, Bytes::copy_from_slice(to))),
            None => gen_bounds(q.key, q.gen).1,
        };
        let mut mine: Vec<(&Bytes, &Option<Bytes>)> = self
            .subs
            .range((Bound::Included(lo), hi))
            .map(|((_, _, e), v)| (e, v))
            .collect();
        if q.rev {
            mine.reverse();
        }
        let below = base(q.limit.saturating_add(mine.len()))?;
        let mut out = Vec::new();
        let (mut a, mut b) = (mine.into_iter().peekable(), below.into_iter().peekable());
        while out.len() < q.limit {
            // Which comes first in the walk's direction; on a tie the
            // overlay's row hides the base's.
            let take_mine = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((e, _)), Some((f, _))) => {
                    let ord = (*e).cmp(f);
                    if ord == std::cmp::Ordering::Equal {
                        b.next();
                        true
                    } else {
                        (ord == std::cmp::Ordering::Less) != q.rev
                    }
                }
            };
            if take_mine {
                let (e, v) = a.next().expect("peeked");
                if let Some(v) = v {
                    out.push((e.clone(), v.clone()));
                }
            } else {
                out.push(b.next().expect("peeked"));
            }
        }
        Ok(out)
    }

    /// Make these changes in `into`: records first (so a replaced
    /// generation's rows below are dropped before new ones are added), then
    /// rows.
    pub fn commit(self, into: &mut dyn KeyView) {
        for (k, v) in self.keys {
            if v.is_some() && self.resets.contains(&k) {
                into.put(&k, None);
            }
            into.put(&k, v);
        }
        for ((k, gen, e), v) in self.subs {
            into.put_sub(&k, gen, e, v);
        }
    }
}

/// The bounds of every row of (key, gen) in an overlay.
fn gen_bounds(key: &[u8], gen: u64) -> (Bound<SubKey>, Bound<SubKey>) {
    let key = Bytes::copy_from_slice(key);
    let hi = match gen.checked_add(1) {
        Some(next) => Bound::Excluded((key.clone(), next, Bytes::new())),
        None => Bound::Included((key.clone(), u64::MAX, Bytes::from(vec![0xff; 64]))),
    };
    (Bound::Included((key, gen, Bytes::new())), hi)
}

/// An [`Overlay`] over a view: what one collection write (or one
/// transaction) changes, kept apart until it has read everything it needs,
/// so that a write that stops (corrupt data, wrong type) changes nothing.
pub struct Layer<'a> {
    pub base: &'a mut dyn ReadView,
    pub ov: Overlay,
}

impl<'a> Layer<'a> {
    pub fn new(base: &'a mut dyn ReadView) -> Layer<'a> {
        Layer {
            base,
            ov: Overlay::default(),
        }
    }
}

impl ReadView for Layer<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Stored>, Corrupt> {
        match self.ov.key(key) {
            Some(v) => Ok(v.clone()),
            None => self.base.get(key),
        }
    }

    fn sub_get(&mut self, key: &[u8], gen: u64, elem: &[u8]) -> Result<Option<Bytes>, Corrupt> {
        match self.ov.sub(key, gen, elem) {
            Some(v) => Ok(v.clone()),
            None => self.base.sub_get(key, gen, elem),
        }
    }

    fn sub_range(&mut self, q: &Range<'_>) -> Result<Vec<(Bytes, Bytes)>, Corrupt> {
        let base = &mut self.base;
        self.ov
            .range_over(q, |limit| base.sub_range(&Range { limit, ..*q }))
    }
}

impl KeyView for Layer<'_> {
    fn put(&mut self, key: &Bytes, v: Option<Stored>) {
        self.ov.put(key, v);
    }

    fn put_sub(&mut self, key: &Bytes, gen: u64, elem: Bytes, v: Option<Bytes>) {
        self.ov.put_sub(key, gen, elem, v);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SetOp {
    Inter,
    Union,
    Diff,
}

/// A live collection of `kind` under `key`: its record and metadata;
/// `None` when absent or expired; WRONGTYPE when another type.
pub(super) fn load(
    view: &mut dyn ReadView,
    key: &[u8],
    kind: Kind,
    now: u64,
) -> Result<Option<(Stored, Coll)>, Stop> {
    match view.get(key)?.filter(|v| v.live_at(now)) {
        None => Ok(None),
        Some(v) => {
            let c = v.coll_of(kind)?;
            Ok(Some((v, c)))
        }
    }
}

/// A collection being changed by one write: its metadata, the expiry it
/// keeps, and whether it already existed.
pub(super) struct Open {
    pub(super) key: Bytes,
    pub(super) coll: Coll,
    pub(super) expire_at_ms: u64,
}

impl Open {
    /// The live collection, or a new empty one of generation `index`.
    pub(super) fn get(
        view: &mut dyn ReadView,
        key: &Bytes,
        kind: Kind,
        now: u64,
        index: u64,
    ) -> Result<Open, Stop> {
        Ok(match load(view, key, kind, now)? {
            Some((v, coll)) => Open {
                key: key.clone(),
                coll,
                expire_at_ms: v.expire_at_ms,
            },
            None => Open::new(key, kind, index, 0),
        })
    }

    /// A new, empty collection of `kind` under `key`, of generation `index`.
    pub(super) fn new(key: &Bytes, kind: Kind, index: u64, expire_at_ms: u64) -> Open {
        Open {
            key: key.clone(),
            coll: Coll {
                kind,
                gen: index,
                len: 0,
                left: 0,
            },
            expire_at_ms,
        }
    }

    pub(super) fn elem(&self, view: &mut dyn ReadView, e: &[u8]) -> Result<Option<Bytes>, Corrupt> {
        view.sub_get(&self.key, self.coll.gen, e)
    }

    pub(super) fn set(&mut self, view: &mut dyn KeyView, e: &Bytes, v: Bytes, existed: bool) {
        if !existed {
            self.coll.len += 1;
        }
        view.put_sub(&self.key, self.coll.gen, e.clone(), Some(v));
    }

    pub(super) fn remove(&mut self, view: &mut dyn KeyView, e: &Bytes) {
        self.coll.len = self.coll.len.saturating_sub(1);
        view.put_sub(&self.key, self.coll.gen, e.clone(), None);
    }

    /// Write the record back (the key goes when the last element did).
    pub(super) fn save(self, view: &mut dyn KeyView, index: u64) {
        let v = (self.coll.len > 0).then(|| Stored {
            version: index,
            expire_at_ms: self.expire_at_ms,
            data: Bytes::new(),
            coll: Some(self.coll),
        });
        view.put(&self.key, v);
    }
}

/// Every element row of a collection (a sorted set has two per member).
pub(super) fn all_rows(
    view: &mut dyn ReadView,
    key: &[u8],
    coll: &Coll,
) -> Result<Vec<(Bytes, Bytes)>, Corrupt> {
    let per_element = if coll.kind == Kind::ZSet { 2 } else { 1 };
    view.sub_range(&Range {
        key,
        gen: coll.gen,
        from: &[],
        to: None,
        rev: false,
        limit: usize::try_from(coll.len.saturating_mul(per_element)).unwrap_or(usize::MAX),
    })
}

/// The live collection, if any (WRONGTYPE for another type).
pub(super) fn existing(
    view: &mut dyn ReadView,
    key: &Bytes,
    kind: Kind,
    now: u64,
) -> Result<Option<Open>, Stop> {
    Ok(load(view, key, kind, now)?.map(|(v, coll)| Open {
        key: key.clone(),
        coll,
        expire_at_ms: v.expire_at_ms,
    }))
}

/// A small deterministic generator (splitmix64): the same seed picks the
/// same elements on every replica.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    proptest! {
        /// A range read through an overlay is the range of the model
        /// (base rows with the overlay's sets and deletions applied), in
        /// either direction, cut at the limit.
        #[test]
        fn overlay_ranges_match_the_model(
            base in proptest::collection::btree_map(proptest::collection::vec(0u8..4, 0..3), any::<u8>(), 0..12),
            changes in proptest::collection::vec((proptest::collection::vec(0u8..4, 0..3), proptest::option::of(any::<u8>())), 0..12),
            from in proptest::collection::vec(0u8..4, 0..2),
            to in proptest::option::of(proptest::collection::vec(0u8..4, 0..3)),
            rev in any::<bool>(),
            limit in 0usize..10,
        ) {
            let key = b(b"k");
            let mut ov = Overlay::default();
            let mut model: BTreeMap<Vec<u8>, u8> = base.clone();
            for (e, v) in &changes {
                ov.put_sub(&key, 3, b(e), v.map(|v| b(&[v])));
                match v {
                    Some(v) => model.insert(e.clone(), *v),
                    None => model.remove(e),
                };
            }
            let in_range = |e: &Vec<u8>| *e >= from && to.as_ref().is_none_or(|t| e < t);
            let mut want: Vec<(Bytes, Bytes)> = model
                .iter()
                .filter(|(e, _)| in_range(e))
                .map(|(e, v)| (b(e), b(&[*v])))
                .collect();
            if rev {
                want.reverse();
            }
            want.truncate(limit);
            let q = Range { key: &key, gen: 3, from: &from, to: to.as_deref(), rev, limit };
            let got = ov
                .range_over(&q, |n| {
                    let mut rows: Vec<(Bytes, Bytes)> = base
                        .iter()
                        .filter(|(e, _)| in_range(e))
                        .map(|(e, v)| (b(e), b(&[*v])))
                        .collect();
                    if rev {
                        rows.reverse();
                    }
                    rows.truncate(n);
                    Ok(rows)
                })
                .unwrap();
            prop_assert_eq!(got, want);
        }
    }

    /// Replacing a collection's record drops the overlay's rows of the
    /// generation it replaced; rows of other keys and generations stay.
    #[test]
    fn a_replaced_generation_loses_its_overlay_rows() {
        let mut ov = Overlay::default();
        let coll = |gen| Stored {
            version: gen,
            expire_at_ms: 0,
            data: Bytes::new(),
            coll: Some(Coll {
                kind: Kind::Set,
                gen,
                len: 1,
                left: 0,
            }),
        };
        ov.put(&b(b"k"), Some(coll(5)));
        ov.put_sub(&b(b"k"), 5, b(b"a"), Some(Bytes::new()));
        ov.put_sub(&b(b"k2"), 5, b(b"a"), Some(Bytes::new()));
        ov.put_sub(&b(b"k"), 4, b(b"old"), None);
        // Same generation: rows kept.
        ov.put(&b(b"k"), Some(coll(5)));
        assert_eq!(ov.subs.len(), 3);
        ov.put(&b(b"k"), None);
        let left: Vec<_> = ov.subs.keys().cloned().collect();
        assert_eq!(left, [(b(b"k"), 4, b(b"old")), (b(b"k2"), 5, b(b"a"))]);
    }
}
