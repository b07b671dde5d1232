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
}
