//! Bitmaps: bit operations on string values, with Redis's semantics (bit 0
//! is the most significant bit of the first byte). Pure functions over the
//! bytes; [`super::apply`] reads and writes the values.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// BITOP's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BitOpKind {
    And,
    Or,
    Xor,
    Not,
}

/// A BITCOUNT / BITPOS range: start and end (negative from the end), in
/// bytes or in bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BitRange {
    pub start: i64,
    pub end: i64,
    pub bits: bool,
}

/// The bit at `offset` (0 past the end).
pub fn get_bit(data: &[u8], offset: u64) -> u8 {
    let byte = (offset / 8) as usize;
    data.get(byte).map_or(0, |b| (b >> (7 - (offset % 8))) & 1)
}

/// Set the bit at `offset` (growing `data` with zeros); the old bit.
pub fn set_bit(data: &mut Vec<u8>, offset: u64, on: bool) -> u8 {
    let byte = (offset / 8) as usize;
    if data.len() <= byte {
        data.resize(byte + 1, 0);
    }
    let mask = 1u8 << (7 - (offset % 8));
    let old = (data[byte] & mask != 0) as u8;
    if on {
        data[byte] |= mask;
    } else {
        data[byte] &= !mask;
    }
    old
}

/// Redis's window over `len` units: `None` when empty.
fn window(start: i64, end: i64, len: i64) -> Option<(i64, i64)> {
    let mut start = if start < 0 { start + len } else { start };
    let mut end = if end < 0 { end + len } else { end };
    if start < 0 {
        start = 0;
    }
    if end < 0 {
        end = 0;
    }
    if end >= len {
        end = len - 1;
    }
    (start <= end && len > 0).then_some((start, end))
}

/// The bytes a range covers and the masks of the bits outside it in its
/// first and last byte (bit ranges only).
fn byte_span(data: &[u8], r: &BitRange) -> Option<(usize, usize, u8, u8)> {
    let len = data.len() as i64;
    let total = if r.bits { len * 8 } else { len };
    let (s, e) = window(r.start, r.end, total)?;
    if r.bits {
        let first = !((1u16 << (8 - (s & 7))) - 1) as u8;
        let last = ((1u16 << (7 - (e & 7))) - 1) as u8;
        Some(((s >> 3) as usize, (e >> 3) as usize, first, last))
    } else {
        Some((s as usize, e as usize, 0, 0))
    }
}

/// BITCOUNT: set bits in the range (the whole string without one).
pub fn bit_count(data: &[u8], range: Option<BitRange>) -> i64 {
    let r = range.unwrap_or(BitRange {
        start: 0,
        end: -1,
        bits: false,
    });
    let Some((s, e, first, last)) = byte_span(data, &r) else {
        return 0;
    };
    let mut n: i64 = data[s..=e].iter().map(|b| b.count_ones() as i64).sum();
    n -= (data[s] & first).count_ones() as i64;
    n -= (data[e] & last).count_ones() as i64;
    n
}

/// BITPOS: the first bit equal to `bit` in the range, as Redis answers
/// it (`end_given`: an explicit end, which turns "no 0 found" into -1).
pub fn bit_pos(data: &[u8], bit: bool, range: Option<BitRange>, end_given: bool) -> i64 {
    let r = range.unwrap_or(BitRange {
        start: 0,
        end: -1,
        bits: false,
    });
    let Some((s, e, first, last)) = byte_span(data, &r) else {
        return -1;
    };
    let mut bytes: Vec<u8> = data[s..=e].to_vec();
    // Bits outside a bit range read as the opposite of what is searched.
    let n = bytes.len();
    if bit {
        bytes[0] &= !first;
        bytes[n - 1] &= !last;
    } else {
        bytes[0] |= first;
        bytes[n - 1] |= last;
    }
    let found = bytes.iter().enumerate().find_map(|(i, b)| {
        let b = if bit { *b } else { !*b };
        (b != 0).then(|| i as i64 * 8 + b.leading_zeros() as i64)
    });
    match found {
        Some(p) => p + s as i64 * 8,
        // No 1: -1. No 0: the bit after the range, unless an end was given.
        None if bit || end_given => -1,
        None => (n as i64 + s as i64) * 8,
    }
}

/// BITOP over the sources (missing ones are empty strings).
pub fn bit_op(op: BitOpKind, sources: &[Bytes]) -> Vec<u8> {
    let len = sources.iter().map(|s| s.len()).max().unwrap_or(0);
    let byte = |s: &Bytes, i: usize| s.get(i).copied().unwrap_or(0);
    (0..len)
        .map(|i| match op {
            BitOpKind::Not => !byte(&sources[0], i),
            BitOpKind::And => sources.iter().fold(0xff, |a, s| a & byte(s, i)),
            BitOpKind::Or => sources.iter().fold(0, |a, s| a | byte(s, i)),
            BitOpKind::Xor => sources.iter().fold(0, |a, s| a ^ byte(s, i)),
        })
        .collect()
}

/// The error of BITFIELD_RO with a SET or INCRBY.
pub const ERR_BITFIELD_RO: &str = "ERR BITFIELD_RO only supports the GET subcommand";

/// A BITFIELD integer type: signed `i1..i64` or unsigned `u1..u63`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldType {
    pub signed: bool,
    pub bits: u8,
}

/// What BITFIELD's SET and INCRBY do when the result does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overflow {
    /// Keep the low bits (two's complement for signed types).
    Wrap,
    /// Clamp to the type's minimum or maximum.
    Sat,
    /// Change nothing and answer nil.
    Fail,
}

/// One BITFIELD subcommand; OVERFLOW is folded into the SET / INCRBY
/// after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FieldOp {
    Get {
        ty: FieldType,
        offset: u64,
    },
    Set {
        ty: FieldType,
        offset: u64,
        value: i64,
        overflow: Overflow,
    },
    IncrBy {
        ty: FieldType,
        offset: u64,
        by: i64,
        overflow: Overflow,
    },
}

impl FieldOp {
    /// The last bit a SET or INCRBY writes (`None` for GET).
    pub fn last_written_bit(&self) -> Option<u64> {
        match *self {
            FieldOp::Get { .. } => None,
            FieldOp::Set { ty, offset, .. } | FieldOp::IncrBy { ty, offset, .. } => {
                Some(offset + ty.bits as u64 - 1)
            }
        }
    }
}

/// The `bits`-wide unsigned field at bit `offset` (0 past the end).
fn get_field(data: &[u8], offset: u64, bits: u8) -> u64 {
    (0..bits as u64).fold(0, |v, j| (v << 1) | get_bit(data, offset + j) as u64)
}

/// Write the low `bits` of `value` at bit `offset`; `data` already holds
/// them.
fn set_field(data: &mut [u8], offset: u64, bits: u8, value: u64) {
    for j in 0..bits as u64 {
        let on = (value >> (bits as u64 - 1 - j)) & 1 == 1;
        let pos = offset + j;
        let mask = 1u8 << (7 - (pos % 8));
        let byte = &mut data[(pos / 8) as usize];
        if on {
            *byte |= mask;
        } else {
            *byte &= !mask;
        }
    }
}

impl FieldType {
    /// The field at `offset` as this type's value (0 past the end).
    pub fn read(self, data: &[u8], offset: u64) -> i64 {
        let raw = get_field(data, offset, self.bits);
        if self.signed && self.bits < 64 && raw >> (self.bits - 1) & 1 == 1 {
            // Sign-extend.
            (raw | (u64::MAX << self.bits)) as i64
        } else {
            raw as i64
        }
    }

    fn min(self) -> i128 {
        if self.signed {
            -(1i128 << (self.bits - 1))
        } else {
            0
        }
    }

    fn max(self) -> i128 {
        if self.signed {
            (1i128 << (self.bits - 1)) - 1
        } else {
            (1i128 << self.bits) - 1
        }
    }

    /// `v` stored in this type under `overflow`: `None` when it does not
    /// fit and `overflow` is FAIL. Wrapping keeps the low bits, read back
    /// as this type.
    fn fit(self, v: i128, overflow: Overflow) -> Option<i64> {
        if v >= self.min() && v <= self.max() {
            return Some(v as i64);
        }
        match overflow {
            Overflow::Fail => None,
            Overflow::Sat if v > self.max() => Some(self.max() as i64),
            Overflow::Sat => Some(self.min() as i64),
            Overflow::Wrap => {
                let low = (v as u64) & (u64::MAX >> (64 - self.bits as u32));
                let sign = self.signed && self.bits < 64 && (low >> (self.bits - 1)) & 1 == 1;
                Some(if sign {
                    (low | (u64::MAX << self.bits)) as i64
                } else {
                    low as i64
                })
            }
        }
    }
}

/// BITFIELD's subcommands over `data`, in order, with Redis's replies (a
/// value, or `None` for a SET / INCRBY that overflowed under FAIL).
/// `data` must already reach the last bit any SET / INCRBY writes (Redis
/// grows the string before it runs them, even when they fail).
///
/// As in Redis (`bitops.c`), SET of an unsigned field takes its value as
/// the unsigned 64-bit integer with the same bits, so `SET u8 0 -1`
/// overflows upwards (SAT stores 255).
pub fn bit_field(data: &mut [u8], ops: &[FieldOp]) -> Vec<Option<i64>> {
    ops.iter()
        .map(|op| match *op {
            FieldOp::Get { ty, offset } => Some(ty.read(data, offset)),
            FieldOp::Set {
                ty,
                offset,
                value,
                overflow,
            } => {
                let old = ty.read(data, offset);
                let v = if ty.signed {
                    value as i128
                } else {
                    value as u64 as i128
                };
                let new = ty.fit(v, overflow)?;
                set_field(data, offset, ty.bits, new as u64);
                Some(old)
            }
            FieldOp::IncrBy {
                ty,
                offset,
                by,
                overflow,
            } => {
                let old = ty.read(data, offset);
                let new = ty.fit(old as i128 + by as i128, overflow)?;
                set_field(data, offset, ty.bits, new as u64);
                Some(new)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_msb_first() {
        let mut d = Vec::new();
        assert_eq!(set_bit(&mut d, 7, true), 0);
        assert_eq!(d, [1]);
        assert_eq!(set_bit(&mut d, 0, true), 0);
        assert_eq!(d, [0x81]);
        assert_eq!(get_bit(&d, 0), 1);
        assert_eq!(get_bit(&d, 1), 0);
        assert_eq!(get_bit(&d, 100), 0);
        assert_eq!(bit_count(&d, None), 2);
        assert_eq!(bit_pos(&[0xff, 0xf0, 0], false, None, false), 12);
        assert_eq!(bit_pos(&[0xff], false, None, false), 8);
        assert_eq!(bit_pos(&[0xff], false, None, true), -1);
        assert_eq!(bit_pos(&[0], true, None, false), -1);
    }

    fn ty(s: &str) -> FieldType {
        FieldType {
            signed: s.starts_with('i'),
            bits: s[1..].parse().unwrap(),
        }
    }

    fn set(t: &str, offset: u64, value: i64, overflow: Overflow) -> FieldOp {
        FieldOp::Set {
            ty: ty(t),
            offset,
            value,
            overflow,
        }
    }

    fn incr(t: &str, offset: u64, by: i64, overflow: Overflow) -> FieldOp {
        FieldOp::IncrBy {
            ty: ty(t),
            offset,
            by,
            overflow,
        }
    }

    fn get(t: &str, offset: u64) -> FieldOp {
        FieldOp::Get { ty: ty(t), offset }
    }

    /// One op on `data`: its reply.
    fn one(data: &mut [u8], op: FieldOp) -> Option<i64> {
        bit_field(data, &[op])[0]
    }

    #[test]
    fn fields_are_msb_first_and_unaligned() {
        let mut d = [0u8; 3];
        assert_eq!(one(&mut d, set("u8", 4, 0xab, Overflow::Wrap)), Some(0));
        assert_eq!(d, [0x0a, 0xb0, 0]);
        assert_eq!(one(&mut d, get("u4", 4)), Some(0xa));
        assert_eq!(one(&mut d, get("i4", 4)), Some(-6));
        assert_eq!(one(&mut d, get("u12", 0)), Some(0x0ab));
        // Past the end reads zeros.
        assert_eq!(one(&mut d, get("u8", 20)), Some(0));
        assert_eq!(one(&mut d, get("i64", 1000)), Some(0));
        let mut e = [0xffu8; 8];
        assert_eq!(one(&mut e, get("i64", 0)), Some(-1));
        assert_eq!(one(&mut e, get("u63", 0)), Some(i64::MAX));
        assert_eq!(one(&mut e, get("i1", 3)), Some(-1));
        assert_eq!(one(&mut e, get("u1", 3)), Some(1));
    }

    #[test]
    fn overflow_wrap_sat_fail() {
        let mut d = [0u8; 1];
        // u2: 0..=3.
        assert_eq!(one(&mut d, incr("u2", 0, 5, Overflow::Wrap)), Some(1));
        assert_eq!(one(&mut d, incr("u2", 0, -2, Overflow::Wrap)), Some(3));
        assert_eq!(one(&mut d, incr("u2", 0, 10, Overflow::Sat)), Some(3));
        assert_eq!(one(&mut d, incr("u2", 0, -10, Overflow::Sat)), Some(0));
        assert_eq!(one(&mut d, incr("u2", 0, 4, Overflow::Fail)), None);
        assert_eq!(d, [0]);
        assert_eq!(one(&mut d, incr("u2", 0, 3, Overflow::Fail)), Some(3));
        // i8: -128..=127.
        let mut d = [0u8; 1];
        assert_eq!(one(&mut d, set("i8", 0, 127, Overflow::Wrap)), Some(0));
        assert_eq!(one(&mut d, incr("i8", 0, 1, Overflow::Wrap)), Some(-128));
        assert_eq!(one(&mut d, incr("i8", 0, -1, Overflow::Sat)), Some(-128));
        assert_eq!(one(&mut d, incr("i8", 0, -1, Overflow::Fail)), None);
        assert_eq!(one(&mut d, incr("i8", 0, 1000, Overflow::Sat)), Some(127));
        // SET: the old value; out of range per the mode.
        assert_eq!(one(&mut d, set("i8", 0, 200, Overflow::Wrap)), Some(127));
        assert_eq!(one(&mut d, get("i8", 0)), Some(-56));
        assert_eq!(one(&mut d, set("i8", 0, 200, Overflow::Sat)), Some(-56));
        assert_eq!(one(&mut d, get("i8", 0)), Some(127));
        assert_eq!(one(&mut d, set("i8", 0, -200, Overflow::Fail)), None);
        assert_eq!(one(&mut d, get("i8", 0)), Some(127));
        // Unsigned SET of a negative value: the u64 with the same bits.
        assert_eq!(one(&mut d, set("u8", 0, -1, Overflow::Sat)), Some(127));
        assert_eq!(one(&mut d, get("u8", 0)), Some(255));
        assert_eq!(one(&mut d, set("u8", 0, -2, Overflow::Wrap)), Some(255));
        assert_eq!(one(&mut d, get("u8", 0)), Some(254));
        assert_eq!(one(&mut d, set("u8", 0, -1, Overflow::Fail)), None);
    }

    #[test]
    fn sixty_four_bit_edges() {
        let mut d = [0u8; 8];
        assert_eq!(
            one(&mut d, set("i64", 0, i64::MAX, Overflow::Wrap)),
            Some(0)
        );
        assert_eq!(
            one(&mut d, incr("i64", 0, 1, Overflow::Wrap)),
            Some(i64::MIN)
        );
        assert_eq!(
            one(&mut d, incr("i64", 0, -1, Overflow::Sat)),
            Some(i64::MIN)
        );
        assert_eq!(one(&mut d, incr("i64", 0, i64::MIN, Overflow::Fail)), None);
        assert_eq!(
            one(&mut d, incr("i64", 0, i64::MAX, Overflow::Wrap)),
            Some(-1)
        );
        let mut d = [0u8; 8];
        assert_eq!(
            one(&mut d, incr("u63", 0, i64::MAX, Overflow::Fail)),
            Some(i64::MAX)
        );
        assert_eq!(one(&mut d, incr("u63", 0, 1, Overflow::Fail)), None);
        assert_eq!(one(&mut d, incr("u63", 0, 1, Overflow::Wrap)), Some(0));
        assert_eq!(
            one(&mut d, incr("u63", 0, i64::MIN, Overflow::Sat)),
            Some(0)
        );
    }

    #[test]
    fn ops_run_in_order() {
        let mut d = [0u8; 2];
        let ops = [
            incr("u4", 0, 3, Overflow::Wrap),
            incr("u4", 0, 3, Overflow::Fail),
            incr("u4", 0, 10, Overflow::Fail),
            get("u8", 0),
        ];
        assert_eq!(
            bit_field(&mut d, &ops),
            [Some(3), Some(6), None, Some(0x60)]
        );
        assert_eq!(ops[0].last_written_bit(), Some(3));
        assert_eq!(get("u8", 0).last_written_bit(), None);
    }
}
