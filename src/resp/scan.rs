//! SCAN cursors. A Redis cursor is one unsigned 64-bit number, but a
//! position inside a shard is a key: the cursor is `shard << 48 | token`,
//! where token 0 means "from the start of the shard" and any other token
//! names the last key returned, remembered in a bounded per-router table
//! ([`ScanCursors`], held in the router's shared state). A cursor this
//! router does not know (another router's, or evicted) restarts its shard
//! from the beginning: keys may then repeat, which SCAN allows, but are never
//! missed.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;

use super::reply::Reply;
use crate::shard::command::OpReply;

pub(super) fn scan_result(cursor: u64, keys: Vec<Reply>) -> Reply {
    Reply::Array(vec![Reply::bulk(cursor.to_string()), Reply::Array(keys)])
}

/// A shard's SCAN page: (last examined key if more remain, keys).
pub(super) fn scan_reply(r: OpReply) -> (Option<Bytes>, Vec<Bytes>) {
    let OpReply::Array(mut parts) = r else {
        return (None, Vec::new());
    };
    let keys = match parts.pop() {
        Some(OpReply::Array(keys)) => keys
            .into_iter()
            .filter_map(|k| match k {
                OpReply::Bulk(b) => Some(b),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let next = match parts.pop() {
        Some(OpReply::Bulk(b)) => Some(b),
        _ => None,
    };
    (next, keys)
}

/// Bits of a SCAN cursor that hold the position token.
pub(super) const TOKEN_BITS: u32 = 48;

pub(super) const TOKEN_MASK: u64 = (1 << TOKEN_BITS) - 1;

/// `shard << 48 | token`.
pub fn encode_cursor(shard: usize, token: u64) -> u64 {
    ((shard as u64) << TOKEN_BITS) | (token & TOKEN_MASK)
}

/// (shard, token) of a cursor.
pub fn decode_cursor(cursor: u64) -> (usize, u64) {
    ((cursor >> TOKEN_BITS) as usize, cursor & TOKEN_MASK)
}

/// Redis's cursor parsing (`strtoull`, digits only).
pub(super) fn parse_cursor(b: &[u8]) -> Option<u64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// SCAN positions handed out by this router: token -> last key returned.
/// Bounded: the oldest are forgotten first (a forgotten cursor restarts its
/// shard).
pub struct ScanCursors {
    inner: Mutex<(HashMap<u64, Bytes>, VecDeque<u64>)>,
    capacity: usize,
}

impl ScanCursors {
    pub fn new(capacity: usize) -> ScanCursors {
        ScanCursors {
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
            capacity,
        }
    }

    /// A token for `key`: a non-zero 47-bit hash of it, so the same
    /// position always gets the same cursor.
    pub fn token(key: &[u8]) -> u64 {
        // FNV-1a: stable across processes.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in key {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        (h & (TOKEN_MASK >> 1)) + 1
    }

    pub fn put(&self, key: Bytes) -> u64 {
        let token = Self::token(&key);
        if let Ok(mut g) = self.inner.lock() {
            let (map, order) = &mut *g;
            if map.insert(token, key).is_none() {
                order.push_back(token);
            }
            while order.len() > self.capacity {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
        token
    }

    pub fn get(&self, token: u64) -> Option<Bytes> {
        self.inner.lock().ok()?.0.get(&token).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_cursor_encoding() {
        for (shard, token) in [(0, 0), (0, 1), (7, 12345), (16383, TOKEN_MASK)] {
            let c = encode_cursor(shard, token);
            assert_eq!(decode_cursor(c), (shard, token));
        }
        assert_eq!(encode_cursor(0, 0), 0, "shard 0 from the start is cursor 0");
        assert_eq!(encode_cursor(1, 0), 1 << 48);
        let t = ScanCursors::token(b"user:1");
        assert!(t != 0 && t <= TOKEN_MASK);
        assert_eq!(t, ScanCursors::token(b"user:1"));
        let reg = ScanCursors::new(2);
        let t1 = reg.put(Bytes::from("a"));
        let t2 = reg.put(Bytes::from("b"));
        assert_eq!(reg.get(t1), Some(Bytes::from("a")));
        reg.put(Bytes::from("c"));
        assert_eq!(reg.get(t1), None, "oldest forgotten");
        assert_eq!(reg.get(t2), Some(Bytes::from("b")));
        assert_eq!(parse_cursor(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_cursor(b"-1"), None);
        assert_eq!(parse_cursor(b"1x"), None);
    }
}
