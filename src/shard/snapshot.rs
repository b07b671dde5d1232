//! The snapshot envelope and its check: every snapshot a replica builds is
//! sealed with a format version and a CRC-32 of its content, checked when a
//! follower receives it (chunk by chunk, before the last chunk reaches
//! openraft), when it is installed, and when the leader reads back the one
//! it stored. A snapshot that fails the check is refused, never installed.
//!
//! Envelope: `b"SHSN"` | version (1 byte) | CRC-32 (IEEE, little endian) of
//! the payload | payload (the state machine's encoding of the group's data).
//!
//! Also when a snapshot is worth building ([`worth_building`]).

use std::collections::HashMap;
use std::sync::Mutex;

/// First bytes of every snapshot shoal writes.
const MAGIC: &[u8; 4] = b"SHSN";
/// The only envelope version so far.
const VERSION: u8 = 1;
/// Magic, version, checksum.
pub const HEADER_LEN: usize = 9;

/// Why a snapshot was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a shoal snapshot (no envelope): written by an older version or corrupted")]
    NoEnvelope,
    #[error("snapshot format version {0} is unknown to this node")]
    UnknownVersion(u8),
    #[error("snapshot checksum mismatch: expected {expected:08x}, content has {actual:08x}")]
    Checksum { expected: u32, actual: u32 },
    #[error("snapshot chunk at offset {got}, but {expected} bytes of snapshot {id} were received")]
    Offset { id: String, expected: u64, got: u64 },
    #[error("snapshot {id} is larger than the limit of {limit} bytes")]
    TooLarge { id: String, limit: u64 },
}

/// Snapshots up to this size are built whenever openraft's policy asks
/// (every `snapshot_threshold` log entries): copying them is cheap.
pub const SMALL_SNAPSHOT: u64 = 1 << 20;

/// Whether a snapshot openraft's policy asks for is worth building now.
/// `since`: the size of the group's last snapshot and the log bytes
/// appended since it was taken, if this replica knows them (it does not
/// before its first build or install since it opened).
///
/// A build copies the whole group, so asked every N entries a group of G
/// bytes would copy G per N entries, without bound as the group grows
/// (16 MB per 10,000 entries at 2,000,000 keys over 8 groups). A snapshot
/// larger than [`SMALL_SNAPSHOT`] is therefore built only once the log
/// since it is at least as large: copying then costs at most a byte per
/// byte logged, and the log a group keeps before it can be purged stays
/// within about its snapshot's size (or the threshold's entries). The rule
/// Redis uses for rewriting its AOF (`auto-aof-rewrite-percentage 100`)
/// and CockroachDB for truncating a range's Raft log.
pub fn worth_building(since: Option<(u64, u64)>) -> bool {
    match since {
        None => true,
        Some((snapshot, logged)) => snapshot <= SMALL_SNAPSHOT || logged >= snapshot,
    }
}

/// Wrap a payload in the envelope.
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Check the envelope and return the payload.
pub fn open(bytes: &[u8]) -> Result<&[u8], SnapshotError> {
    let expected = header(bytes)?;
    let payload = &bytes[HEADER_LEN..];
    let actual = crc32fast::hash(payload);
    if actual != expected {
        return Err(SnapshotError::Checksum { expected, actual });
    }
    Ok(payload)
}

/// The checksum a header announces.
fn header(bytes: &[u8]) -> Result<u32, SnapshotError> {
    if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
        return Err(SnapshotError::NoEnvelope);
    }
    if bytes[4] != VERSION {
        return Err(SnapshotError::UnknownVersion(bytes[4]));
    }
    Ok(u32::from_le_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]))
}

/// A snapshot arriving in chunks: offsets must follow each other, and the
/// checksum is computed as the bytes arrive.
struct Incoming {
    id: String,
    received: u64,
    head: Vec<u8>,
    crc: crc32fast::Hasher,
}

/// What a chunk means for the receiver.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// More to come.
    Partial,
    /// The last chunk, and the whole snapshot checks out.
    Complete,
}

/// Per-group state of snapshots being received by a node.
#[derive(Default)]
pub struct Receiver {
    incoming: Mutex<HashMap<u64, Incoming>>,
}

impl Receiver {
    /// Check one chunk of snapshot `id` for group `gid`. A chunk at offset 0
    /// starts (or restarts) a snapshot; any other must continue exactly where
    /// the last one ended. On an error the group's state is dropped, so the
    /// sender must start again from offset 0.
    pub fn chunk(
        &self,
        gid: u64,
        id: &str,
        offset: u64,
        data: &[u8],
        done: bool,
        limit: u64,
    ) -> Result<Chunk, SnapshotError> {
        let mut map = self.incoming.lock().unwrap_or_else(|e| e.into_inner());
        if offset == 0 {
            map.insert(
                gid,
                Incoming {
                    id: id.to_string(),
                    received: 0,
                    head: Vec::with_capacity(HEADER_LEN),
                    crc: crc32fast::Hasher::new(),
                },
            );
        }
        let result = match map.get_mut(&gid) {
            Some(inc) if inc.id == id && inc.received == offset => {
                feed(inc, data, limit).and_then(|()| {
                    if done {
                        let expected = header(&inc.head)?;
                        let actual = inc.crc.clone().finalize();
                        if expected != actual {
                            return Err(SnapshotError::Checksum { expected, actual });
                        }
                        Ok(Chunk::Complete)
                    } else {
                        Ok(Chunk::Partial)
                    }
                })
            }
            Some(inc) => Err(SnapshotError::Offset {
                id: id.to_string(),
                expected: if inc.id == id { inc.received } else { 0 },
                got: offset,
            }),
            None => Err(SnapshotError::Offset {
                id: id.to_string(),
                expected: 0,
                got: offset,
            }),
        };
        if result.is_err() || done {
            map.remove(&gid);
        }
        result
    }
}

fn feed(inc: &mut Incoming, data: &[u8], limit: u64) -> Result<(), SnapshotError> {
    let total = inc.received + data.len() as u64;
    if total > limit {
        return Err(SnapshotError::TooLarge {
            id: inc.id.clone(),
            limit,
        });
    }
    let mut rest = data;
    if inc.head.len() < HEADER_LEN {
        let take = (HEADER_LEN - inc.head.len()).min(rest.len());
        inc.head.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        if inc.head.len() >= 5 {
            // Fail early on a foreign or newer envelope.
            let mut padded = inc.head.clone();
            padded.resize(HEADER_LEN, 0);
            header(&padded)?;
        }
    }
    inc.crc.update(rest);
    inc.received = total;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_snapshot_is_worth_building_once_as_much_was_logged() {
        let big = SMALL_SNAPSHOT + 1;
        assert!(worth_building(None), "unknown: built");
        assert!(worth_building(Some((SMALL_SNAPSHOT, 0))), "small: built");
        assert!(!worth_building(Some((big, 0))));
        assert!(!worth_building(Some((big, big - 1))));
        assert!(worth_building(Some((big, big))));
    }

    #[test]
    fn sealed_snapshots_open_and_any_flipped_byte_is_caught() {
        let payload = b"the group's data".repeat(100);
        let sealed = seal(&payload);
        assert_eq!(open(&sealed).unwrap(), &payload[..]);
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x40;
            assert!(open(&bad).is_err(), "flipped byte {i} went unnoticed");
        }
        assert_eq!(open(&payload), Err(SnapshotError::NoEnvelope));
        let mut v2 = sealed.clone();
        v2[4] = 2;
        assert_eq!(open(&v2), Err(SnapshotError::UnknownVersion(2)));
    }

    #[test]
    fn chunks_are_checked_as_they_arrive() {
        let sealed = seal(&b"x".repeat(1000));
        for size in [1, 4, 9, 10, 333, 2000] {
            let r = Receiver::default();
            let chunks: Vec<&[u8]> = sealed.chunks(size).collect();
            let mut offset = 0u64;
            for (i, c) in chunks.iter().enumerate() {
                let done = i + 1 == chunks.len();
                let got = r.chunk(7, "s1", offset, c, done, u64::MAX).unwrap();
                assert_eq!(
                    got,
                    if done {
                        Chunk::Complete
                    } else {
                        Chunk::Partial
                    }
                );
                offset += c.len() as u64;
            }
        }
        // A corrupted byte fails on the last chunk, and the sender must
        // start over: a chunk at a later offset is refused.
        let r = Receiver::default();
        let mut bad = sealed.clone();
        bad[500] ^= 1;
        assert_eq!(
            r.chunk(7, "s1", 0, &bad[..600], false, u64::MAX),
            Ok(Chunk::Partial)
        );
        let e = r.chunk(7, "s1", 600, &bad[600..], true, u64::MAX);
        assert!(matches!(e, Err(SnapshotError::Checksum { .. })), "{e:?}");
        let e = r.chunk(7, "s1", 600, &sealed[600..], true, u64::MAX);
        assert!(matches!(e, Err(SnapshotError::Offset { .. })), "{e:?}");
        assert_eq!(
            r.chunk(7, "s1", 0, &sealed, true, u64::MAX),
            Ok(Chunk::Complete)
        );
    }

    #[test]
    fn gaps_huge_offsets_and_oversized_snapshots_are_refused() {
        let sealed = seal(&b"y".repeat(100));
        let r = Receiver::default();
        r.chunk(1, "a", 0, &sealed[..50], false, u64::MAX).unwrap();
        let e = r.chunk(1, "a", 1 << 40, b"z", false, u64::MAX);
        assert!(matches!(e, Err(SnapshotError::Offset { got, .. }) if got == 1 << 40));
        let e = r.chunk(1, "a", 0, &sealed, true, 50);
        assert!(matches!(e, Err(SnapshotError::TooLarge { .. })), "{e:?}");
        // Another snapshot id half way is not a continuation.
        r.chunk(1, "a", 0, &sealed[..50], false, u64::MAX).unwrap();
        let e = r.chunk(1, "b", 50, &sealed[50..], true, u64::MAX);
        assert!(matches!(e, Err(SnapshotError::Offset { .. })), "{e:?}");
    }
}
