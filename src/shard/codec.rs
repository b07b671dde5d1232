//! Every binary format shoal writes to disk or sends between its processes,
//! and the one encoding they share.
//!
//! A blob starts with a two-byte header, **format version** then **kind
//! tag**, followed by the value in [postcard](https://docs.rs/postcard)
//! (a stable, documented wire format: varint integers, length-prefixed
//! bytes and sequences, enum variants as varint indexes):
//!
//! ```text
//! version (1 byte) | kind tag (1 byte) | postcard(value)
//! ```
//!
//! * The **kind tag** says what the blob is ([`Format`]), so a log entry can
//!   never be decoded as a stored value or a vote as a membership row.
//! * The **version** is per kind and starts at 1. Version 0 is never
//!   written: blobs from builds before formats carried versions (bincode 1,
//!   and stored values whose first byte is the high byte of a log index) are
//!   refused as [`CodecError::UnknownVersion`], never misread.
//! * postcard is not self-describing, so a value decodes only as the exact
//!   type it was written as: field order, enum variant order and field types
//!   are the format. The rule: **change a type → bump its kind's version in
//!   [`Format::version`], and keep a decoder for the old one**. When the old
//!   bytes still decode as the new type (a variant appended at the end of an
//!   enum: old builds cannot read the new variant, hence the bump), that
//!   decoder is the new type: leave [`Format::same_type_since`] at the old
//!   version. Otherwise read the header with [`split`], decode the old
//!   version's payload with [`decode_payload`] into the old type and
//!   convert, and move `same_type_since` up to the new version. The
//!   golden-bytes tests (`src/shard/format_tests.rs`) pin the bytes of every
//!   kind so that a change that alters an encoding cannot go unnoticed.
//!   Types that go
//!   through here must not use `#[serde(skip_serializing_if)]`, `untagged`
//!   or `flatten`, nor anything that needs `deserialize_any`.
//! * A decode must consume the whole payload: trailing bytes are an error.
//!
//! This module is a leaf: it knows the formats by kind, not the types in
//! them, and maps nothing into other layers' errors (callers turn a
//! [`CodecError`] into their own corrupt-data or bad-request error). JSON
//! (etcd records, the node status, the replica record) is not handled here.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// What an encoded blob holds. The tag of each kind is fixed forever; a
/// retired kind's tag is never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// An openraft `Entry` of a shard group (its payload a `LogCmd`), in
    /// `raft_log`.
    LogEntry,
    /// The group's `Vote` (`raft_state`, tag VOTE).
    Vote,
    /// The last committed `Option<LogId>` (`raft_state`, tag COMMITTED).
    Committed,
    /// The last purged `LogId` (`raft_state`, tag PURGED).
    Purged,
    /// `(last applied Option<LogId>, StoredMembership)` (`raft_state`, tag
    /// APPLIED), written with the data it describes.
    Applied,
    /// The stored snapshot's `SnapshotMeta` (`raft_state`, tag SNAPSHOT_META).
    SnapshotMeta,
    /// The payload inside the snapshot envelope (`snapshot.rs`): the group's
    /// data and transaction state (`SnapshotData`).
    SnapshotData,
    /// A prepared transaction (`Prepared`, `raft_state`, tag PREPARED).
    Prepared,
    /// The transaction id (u64) holding a key's lock (`raft_state`, tag LOCK).
    Lock,
    /// `(applied index u64, key count i64)` (`raft_state`, tag KEY_COUNT).
    KeyCount,
    /// A value in the `data` column family (`Stored`); also what a
    /// `ReadVersions` reply carries to the router.
    Stored,
    /// Router → node: a `ShardRequest` (`ShardService.Execute`).
    ShardRequest,
    /// Node → router: `Result<OpReply, ShardError>` (`ShardService.Execute`
    /// and `ChangeMembership`).
    ShardReply,
    /// Router → node: a `MembershipChange` (`ShardService.ChangeMembership`).
    MembershipChange,
    /// Node → node: openraft `AppendEntriesRequest`.
    RaftAppend,
    /// Node → node: `Result<AppendEntriesResponse, RaftError>`.
    RaftAppendReply,
    /// Node → node: openraft `VoteRequest`.
    RaftVote,
    /// Node → node: `Result<VoteResponse, RaftError>`.
    RaftVoteReply,
    /// Node → node: openraft `InstallSnapshotRequest` (one chunk).
    RaftSnapshot,
    /// Node → node: `Result<InstallSnapshotResponse, RaftError<_, InstallSnapshotError>>`.
    RaftSnapshotReply,
    /// The marker row of a node's data directory (value `()`): its rows are
    /// written in these versioned formats.
    DataDir,
    /// Node → node: a leader asks a follower to hibernate
    /// (`hibernate::HibernateRequest`).
    Hibernate,
    /// Node → node: `Result<(), String>`, the follower's answer.
    HibernateReply,
    /// Node → node: the liveness ping (`hibernate::Ping`).
    Liveness,
    /// Node → node: openraft `TransferLeaderRequest` (a leader hands its
    /// group over; `MembershipChange::TransferLeader`).
    RaftTransfer,
    /// Node → node: `Result<TransferLeaderResponse, RaftError>`.
    RaftTransferReply,
    /// A batch-engine group's log entry (`batch::StoredEntry`), in
    /// `raft_log`.
    BatchEntry,
    /// A batch-engine group's hard state (`batch::StoredHardState`,
    /// `raft_state`, tag BATCH_HARD_STATE).
    BatchHardState,
    /// A batch-engine group's configuration (`batch::StoredConfState`,
    /// `raft_state`, tag BATCH_CONF_STATE).
    BatchConfState,
    /// The data of a batch-engine shard group's log entry: one `LogCmd`.
    BatchCommand,
    /// Node → node: one turn's batch-engine Raft messages for the
    /// receiving node (`batch::wire::WireBatch`, `KIND_BATCH`).
    BatchMessages,
    /// Where a batch-engine group's log starts (`batch::log::StoredLogStart`,
    /// `raft_state`, tag BATCH_LOG_START).
    BatchLogStart,
    /// Node → node: one chunk of a batch-engine snapshot
    /// (`batch::wire::SnapshotChunk`, `RaftService.BatchSnapshot`).
    BatchSnapshotChunk,
}

impl Format {
    /// Every kind, for tests and diagnostics.
    pub const ALL: [Format; 33] = [
        Format::LogEntry,
        Format::Vote,
        Format::Committed,
        Format::Purged,
        Format::Applied,
        Format::SnapshotMeta,
        Format::SnapshotData,
        Format::Prepared,
        Format::Lock,
        Format::KeyCount,
        Format::Stored,
        Format::ShardRequest,
        Format::ShardReply,
        Format::MembershipChange,
        Format::RaftAppend,
        Format::RaftAppendReply,
        Format::RaftVote,
        Format::RaftVoteReply,
        Format::RaftSnapshot,
        Format::RaftSnapshotReply,
        Format::DataDir,
        Format::Hibernate,
        Format::HibernateReply,
        Format::Liveness,
        Format::RaftTransfer,
        Format::RaftTransferReply,
        Format::BatchEntry,
        Format::BatchHardState,
        Format::BatchConfState,
        Format::BatchCommand,
        Format::BatchMessages,
        Format::BatchLogStart,
        Format::BatchSnapshotChunk,
    ];

    /// The kind's tag, the second byte of every blob of this kind.
    pub const fn tag(self) -> u8 {
        match self {
            Format::LogEntry => 1,
            Format::Vote => 2,
            Format::Committed => 3,
            Format::Purged => 4,
            Format::Applied => 5,
            Format::SnapshotMeta => 6,
            Format::SnapshotData => 7,
            Format::Prepared => 8,
            Format::Lock => 9,
            Format::KeyCount => 10,
            Format::Stored => 11,
            Format::ShardRequest => 12,
            Format::ShardReply => 13,
            Format::MembershipChange => 14,
            Format::RaftAppend => 15,
            Format::RaftAppendReply => 16,
            Format::RaftVote => 17,
            Format::RaftVoteReply => 18,
            Format::RaftSnapshot => 19,
            Format::RaftSnapshotReply => 20,
            Format::DataDir => 21,
            Format::Hibernate => 22,
            Format::HibernateReply => 23,
            Format::Liveness => 24,
            Format::RaftTransfer => 25,
            Format::RaftTransferReply => 26,
            Format::BatchEntry => 27,
            Format::BatchHardState => 28,
            Format::BatchConfState => 29,
            Format::BatchCommand => 30,
            Format::BatchMessages => 31,
            Format::BatchLogStart => 32,
            Format::BatchSnapshotChunk => 33,
        }
    }

    /// `(same_type_since, version)` of each kind: the one table to edit
    /// when a format changes.
    const fn versions(self) -> (u8, u8) {
        match self {
            // Collections: `Stored` gained its metadata (version 1 is
            // read by its own decoder), the snapshot its element rows;
            // requests, log entries and replies appended enum variants.
            Format::Stored | Format::SnapshotData => (2, 2),
            // Version 3 appended: cancellable waits (requests), whole
            // collections written at once and BITFIELD (operations, so log
            // entries, staged transactions and appends too).
            Format::Prepared => (1, 3),
            // Version 4 appended the mixed batch (`LogCmd::Mixed`: plain
            // writes and one-phase transactions proposed together).
            Format::LogEntry | Format::RaftAppend => (1, 4),
            // A batch-engine entry carries a `LogCmd` too, so it starts at
            // the log entry's version and moves with it.
            Format::BatchCommand => (4, 4),
            // Version 4 appended pub/sub and scripts.
            Format::ShardRequest => (1, 4),
            // Version 3 appended booleans and verbatim text (script replies).
            Format::ShardReply => (1, 3),
            // Version 2 (openraft 0.10) appended `leadership_transfer` to
            // the vote request; version 1 is read by its own decoder.
            Format::RaftVote => (2, 2),
            // Version 2 appended `TransferLeader`.
            Format::MembershipChange => (1, 2),
            Format::Vote
            | Format::Committed
            | Format::Purged
            | Format::Applied
            | Format::SnapshotMeta
            | Format::Lock
            | Format::KeyCount
            | Format::RaftAppendReply
            | Format::RaftVoteReply
            | Format::RaftSnapshot
            | Format::RaftSnapshotReply
            | Format::DataDir
            | Format::Hibernate
            | Format::HibernateReply
            | Format::Liveness
            | Format::RaftTransfer
            | Format::RaftTransferReply
            | Format::BatchEntry
            | Format::BatchHardState
            | Format::BatchConfState
            | Format::BatchMessages
            | Format::BatchLogStart
            | Format::BatchSnapshotChunk => (1, 1),
        }
    }

    /// The version this build writes (and the newest it reads). Bump it when
    /// the kind's type changes, and keep a decoder for the old version.
    pub const fn version(self) -> u8 {
        self.versions().1
    }

    /// The oldest version whose payload [`decode`] reads as the current
    /// type (the versions since then only appended enum variants). Older
    /// versions need their own decoder ([`split`], [`decode_payload`]).
    pub const fn same_type_since(self) -> u8 {
        self.versions().0
    }

    pub const fn name(self) -> &'static str {
        match self {
            Format::LogEntry => "log entry",
            Format::Vote => "vote",
            Format::Committed => "committed log id",
            Format::Purged => "purged log id",
            Format::Applied => "applied state",
            Format::SnapshotMeta => "snapshot meta",
            Format::SnapshotData => "snapshot data",
            Format::Prepared => "prepared transaction",
            Format::Lock => "key lock",
            Format::KeyCount => "key count",
            Format::Stored => "stored value",
            Format::ShardRequest => "shard request",
            Format::ShardReply => "shard reply",
            Format::MembershipChange => "membership change",
            Format::RaftAppend => "raft append-entries request",
            Format::RaftAppendReply => "raft append-entries reply",
            Format::RaftVote => "raft vote request",
            Format::RaftVoteReply => "raft vote reply",
            Format::RaftSnapshot => "raft install-snapshot request",
            Format::RaftSnapshotReply => "raft install-snapshot reply",
            Format::DataDir => "data directory marker",
            Format::Hibernate => "hibernate request",
            Format::HibernateReply => "hibernate reply",
            Format::Liveness => "liveness ping",
            Format::RaftTransfer => "raft transfer-leader request",
            Format::RaftTransferReply => "raft transfer-leader reply",
            Format::BatchEntry => "batch-engine log entry",
            Format::BatchHardState => "batch-engine hard state",
            Format::BatchConfState => "batch-engine configuration",
            Format::BatchCommand => "batch-engine command",
            Format::BatchMessages => "batch-engine messages",
            Format::BatchLogStart => "batch-engine log start",
            Format::BatchSnapshotChunk => "batch-engine snapshot chunk",
        }
    }

    /// The kind a tag stands for.
    pub fn from_tag(tag: u8) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.tag() == tag)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a blob could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Shorter than the two-byte header.
    #[error("{kind}: {len} bytes, shorter than the format header")]
    Truncated { kind: Format, len: usize },
    /// The blob is another kind of record.
    #[error("expected a {kind} record, found {}", tag_name(*found))]
    WrongKind { kind: Format, found: u8 },
    /// A version this build cannot read: newer than it knows, an old one
    /// whose decoder was dropped, or 0 (written before formats had versions).
    #[error("{kind} format version {version} is unknown to this build (it reads version {}){}", kind.version(), unversioned_hint(*version))]
    UnknownVersion { kind: Format, version: u8 },
    /// The header is fine but the value does not decode (or leaves bytes over).
    #[error("{kind} (format version {version}) does not decode: {reason}")]
    Malformed {
        kind: Format,
        version: u8,
        reason: String,
    },
    /// The value could not be encoded (a type that postcard cannot write:
    /// a bug, caught by the golden-bytes tests).
    #[error("cannot encode a {kind}: {reason}")]
    Encode { kind: Format, reason: String },
}

fn tag_name(tag: u8) -> String {
    match Format::from_tag(tag) {
        Some(f) => format!("a {f} (tag {tag})"),
        None => format!("unknown tag {tag}"),
    }
}

fn unversioned_hint(version: u8) -> &'static str {
    if version == 0 {
        ": written by an earlier build whose formats carried no version"
    } else {
        ""
    }
}

/// Bytes of the header (version, kind tag).
pub const HEADER_LEN: usize = 2;

/// Encode `v` as the current version of `kind`.
pub fn encode<T: Serialize + ?Sized>(kind: Format, v: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(64);
    out.push(kind.version());
    out.push(kind.tag());
    postcard::to_extend(v, out).map_err(|e| CodecError::Encode {
        kind,
        reason: e.to_string(),
    })
}

/// [`encode`] into a buffer sized once from the value's encoded length:
/// for values of megabytes, which would otherwise be copied at each of
/// the buffer's doublings.
pub fn encode_sized<T: Serialize + ?Sized>(kind: Format, v: &T) -> Result<Vec<u8>, CodecError> {
    let len = payload_len(v);
    let mut out = Vec::with_capacity(len.saturating_add(2).min(1 << 30));
    out.push(kind.version());
    out.push(kind.tag());
    postcard::to_extend(v, out).map_err(|e| CodecError::Encode {
        kind,
        reason: e.to_string(),
    })
}

/// Byte fields written as one run of bytes (`#[serde(serialize_with =
/// "codec::as_bytes", deserialize_with = "codec::byte_buf")]`) rather
/// than as a sequence of `u8`s, one call per byte. postcard writes both
/// the same way (a varint length, then the bytes), so a field may switch
/// without a new format version; the golden-bytes tests hold that.
pub fn as_bytes<B: AsRef<[u8]>, S: serde::Serializer>(v: &B, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(v.as_ref())
}

/// Reads what [`as_bytes`] wrote (or a sequence of `u8`s) into a `Vec<u8>`.
pub fn byte_buf<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct Buf;
    impl<'de> serde::de::Visitor<'de> for Buf {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("bytes")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            // A length from the input is not trusted for the allocation.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
    d.deserialize_byte_buf(Buf)
}

/// The length of `v`'s payload as [`encode`] writes it (header not
/// counted), without writing it. `usize::MAX` if it does not encode.
pub fn payload_len<T: Serialize + ?Sized>(v: &T) -> usize {
    postcard::experimental::serialized_size(v).unwrap_or(usize::MAX)
}

/// Decode a blob of `kind` written in its current version (or an older one
/// that the current type reads: [`Format::same_type_since`]).
pub fn decode<T: DeserializeOwned>(kind: Format, raw: &[u8]) -> Result<T, CodecError> {
    let (version, payload) = split(kind, raw)?;
    if version < kind.same_type_since() {
        return Err(CodecError::UnknownVersion { kind, version });
    }
    decode_payload(kind, version, payload)
}

/// Check the header of a blob of `kind`: its version (any from 1 to the
/// current one) and the payload to decode. For a kind whose older versions
/// are still read: match on the version, then [`decode_payload`] into the
/// type of that version.
pub fn split(kind: Format, raw: &[u8]) -> Result<(u8, &[u8]), CodecError> {
    let [version, tag, payload @ ..] = raw else {
        return Err(CodecError::Truncated {
            kind,
            len: raw.len(),
        });
    };
    // Version 0 first: an unversioned record is reported as such, whatever
    // its second byte.
    if *version == 0 {
        return Err(CodecError::UnknownVersion { kind, version: 0 });
    }
    if *tag != kind.tag() {
        return Err(CodecError::WrongKind { kind, found: *tag });
    }
    if *version > kind.version() {
        return Err(CodecError::UnknownVersion {
            kind,
            version: *version,
        });
    }
    Ok((*version, payload))
}

/// Decode the payload of a `kind` blob of `version` (from [`split`]); the
/// whole payload must be used.
pub fn decode_payload<T: DeserializeOwned>(
    kind: Format,
    version: u8,
    payload: &[u8],
) -> Result<T, CodecError> {
    let malformed = |reason: String| CodecError::Malformed {
        kind,
        version,
        reason,
    };
    let (v, rest) = postcard::take_from_bytes(payload).map_err(|e| malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(malformed(format!("{} bytes left over", rest.len())));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes written as one run encode exactly as a sequence of `u8`s, and
    /// read back from either: a field may switch without a new version.
    #[test]
    fn byte_runs_encode_as_sequences_of_bytes() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Seq {
            data: Vec<u8>,
        }
        #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
        struct Run {
            #[serde(serialize_with = "as_bytes", deserialize_with = "byte_buf")]
            data: Vec<u8>,
        }
        for len in [0usize, 1, 127, 128, 300, 70_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let seq = encode(Format::BatchEntry, &Seq { data: data.clone() }).unwrap();
            let run = encode_sized(Format::BatchEntry, &Run { data: data.clone() }).unwrap();
            assert_eq!(seq, run, "{len} bytes");
            let back: Run = decode(Format::BatchEntry, &seq).unwrap();
            assert_eq!(back.data, data);
        }
    }

    #[test]
    fn tags_are_distinct_and_nonzero_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for f in Format::ALL {
            assert_ne!(f.tag(), 0, "{f}");
            assert_ne!(f.version(), 0, "{f}");
            assert!((1..=f.version()).contains(&f.same_type_since()), "{f}");
            assert!(seen.insert(f.tag()), "tag {} used twice", f.tag());
            assert_eq!(Format::from_tag(f.tag()), Some(f));
        }
        assert_eq!(Format::from_tag(0), None);
    }

    #[test]
    fn header_then_postcard() {
        let raw = encode(Format::Lock, &300u64).unwrap();
        // Version 1, tag 9, then 300 as a varint.
        assert_eq!(raw, [1, 9, 0xac, 0x02]);
        assert_eq!(decode::<u64>(Format::Lock, &raw), Ok(300));
    }

    #[test]
    fn unknown_versions_are_refused_never_misread() {
        let mut raw = encode(Format::Lock, &7u64).unwrap();
        raw[0] = 2;
        let e = decode::<u64>(Format::Lock, &raw).unwrap_err();
        assert_eq!(
            e,
            CodecError::UnknownVersion {
                kind: Format::Lock,
                version: 2
            }
        );
        assert_eq!(
            e.to_string(),
            "key lock format version 2 is unknown to this build (it reads version 1)"
        );
        raw[0] = 0;
        let e = decode::<u64>(Format::Lock, &raw).unwrap_err();
        assert!(
            matches!(e, CodecError::UnknownVersion { version: 0, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("earlier build"), "{e}");
        raw[0] = 255;
        assert!(matches!(
            decode::<u64>(Format::Lock, &raw),
            Err(CodecError::UnknownVersion { version: 255, .. })
        ));
    }

    #[test]
    fn wrong_kinds_short_blobs_and_trailing_bytes_are_refused() {
        let raw = encode(Format::Lock, &7u64).unwrap();
        let e = decode::<u64>(Format::Vote, &raw).unwrap_err();
        assert_eq!(
            e,
            CodecError::WrongKind {
                kind: Format::Vote,
                found: 9
            }
        );
        assert_eq!(
            e.to_string(),
            "expected a vote record, found a key lock (tag 9)"
        );
        for short in [&[][..], &[1][..]] {
            assert!(matches!(
                decode::<u64>(Format::Lock, short),
                Err(CodecError::Truncated { .. })
            ));
        }
        let mut long = raw.clone();
        long.push(0);
        assert!(matches!(
            decode::<u64>(Format::Lock, &long),
            Err(CodecError::Malformed { .. })
        ));
        // Header only: the value is missing.
        assert!(matches!(
            decode::<u64>(Format::Lock, &raw[..2]),
            Err(CodecError::Malformed { .. })
        ));
    }
}
