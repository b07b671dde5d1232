//! Golden bytes of every [`codec`](super::codec) format: each test encodes a
//! fixed, representative value and compares it with bytes pinned here, then
//! decodes the pinned bytes back to the value.
//!
//! **If one of these fails, an encoding changed**: a log, a database or a
//! peer written by the previous build would be read differently. If the
//! change is intended, bump that kind's version in `Format::version`, keep a
//! decoder for the old bytes (they stay pinned here, under the old version),
//! and pin the new ones; never just update the hex.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use bytes::Bytes;
use openraft::error::{ErrorSource, Fatal, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::{EntryPayload, Membership};
use openraft_legacy::network_v1::{
    InstallSnapshotError, InstallSnapshotRequest, InstallSnapshotResponse, SnapshotMismatch,
    SnapshotSegmentId,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::codec::{self, CodecError, Format};
use super::command::{BitOpKind, BitRange, FieldOp, FieldType, Overflow};
use super::command::{
    ExpireCond, Expiry, LogCmd, MoveMode, ObjectField, OpReply, ReadOp, SetCond, ShardRequest,
    WriteCmd, WriteOp,
};
use super::command::{Proposal, TxnCmd, TxnEntry, TxnOp};
use super::engine::tag;
use super::host::MembershipChange;
use super::store::SnapshotData;
use super::txn::Prepared;
use super::types::{
    log_id, Entry, LogId, Node, NodeId, Payload, SnapshotMeta, StoredMembership, TypeConfig, Vote,
};
use super::value::{Coll, Corrupt, Kind, Place, Stored};
use super::ShardError;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Pinned hex, which may be split over lines and spaced for reading.
fn unhex(pinned: &str) -> Vec<u8> {
    let digits: Vec<u8> = pinned
        .bytes()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// `value` encodes as `kind` to exactly `pinned`, and `pinned` decodes back
/// to `value` (compared through `Debug`: not every type here is
/// `PartialEq`).
fn golden<T: Serialize + DeserializeOwned + Debug>(kind: Format, value: &T, pinned: &str) {
    let bytes = codec::encode(kind, value).unwrap();
    let want = unhex(pinned);
    assert_eq!(
        hex(&bytes),
        hex(&want),
        "the {kind} encoding changed (see this module's doc before touching the pinned bytes)"
    );
    let back: T = codec::decode(kind, &want).unwrap();
    assert_eq!(format!("{back:?}"), format!("{value:?}"), "{kind}");
}

/// `value` survives an encode and a decode (for values with parts, like a
/// backtrace, that are not worth pinning).
fn round_trip<T: Serialize + DeserializeOwned + Debug>(kind: Format, value: &T) {
    let bytes = codec::encode(kind, value).unwrap();
    let back: T = codec::decode(kind, &bytes).unwrap();
    assert_eq!(format!("{back:?}"), format!("{value:?}"), "{kind}");
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn entry(index: u64, payload: Payload) -> Entry {
    Entry {
        log_id: log_id(3, 1, index),
        payload,
    }
}

fn membership() -> Membership<NodeId, Node> {
    let nodes: BTreeMap<NodeId, Node> = [(1, "n1:7001"), (2, "n2:7001"), (3, "n3:7001")]
        .into_iter()
        .map(|(id, addr)| (id, Node::new(addr)))
        .collect();
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes).unwrap()
}

fn set_with_expiry() -> WriteCmd {
    WriteCmd {
        now_ms: 1_700_000_000_000,
        op: WriteOp::Set {
            key: b("k"),
            value: b("v"),
            expiry: Expiry::At(1_700_000_060_000),
            cond: SetCond::IfAbsent,
            get: false,
        },
    }
}

fn prepare() -> TxnEntry {
    TxnEntry {
        now_ms: 1_700_000_000_000,
        cmd: TxnCmd::Prepare {
            txn_id: 9,
            ops: vec![
                TxnOp::Write(WriteOp::IncrBy {
                    key: b("x"),
                    by: -2,
                }),
                TxnOp::Read(ReadOp::Get { key: b("y") }),
            ],
            watches: vec![(b("y"), 5)],
        },
    }
}

fn stored() -> Stored {
    Stored {
        version: 42,
        expire_at_ms: 1_700_000_060_000,
        data: b("v"),
        coll: None,
    }
}

#[test]
fn log_entry_set_with_expiry() {
    let e = entry(42, EntryPayload::Normal(LogCmd::Write(set_with_expiry())));
    let pinned = concat!(
        "0401",            // version 4, kind 1 (log entry)
        "03 01 2a",        // log id: term 3, node 1, index 42 (varints)
        "01",              // EntryPayload::Normal
        "00",              // LogCmd::Write
        "80d095ffbc31",    // now_ms 1_700_000_000_000
        "00",              // WriteOp::Set
        "01 6b",           // key "k" (length, bytes)
        "01 76",           // value "v"
        "02 e0a499ffbc31", // Expiry::At(1_700_000_060_000)
        "01",              // SetCond::IfAbsent
        "00",              // get: false
    );
    golden(Format::LogEntry, &e, pinned);
}

#[test]
fn log_entry_move_and_put_record() {
    let cmd = |op| WriteCmd { now_ms: 5, op };
    let rename = cmd(WriteOp::Move {
        src: b("a"),
        dst: b("b"),
        mode: MoveMode::RenameNx,
    });
    golden(
        Format::LogEntry,
        &entry(44, EntryPayload::Normal(LogCmd::Write(rename))),
        concat!(
            "0401 03012c 01 00 05", // header, log id, Normal, Write, now_ms
            "0e",                   // WriteOp::Move (14)
            "0161 0162",            // src "a", dst "b"
            "01",                   // MoveMode::RenameNx
        ),
    );
    let put = cmd(WriteOp::PutRecord {
        key: b("k"),
        record: stored(),
    });
    golden(
        Format::LogEntry,
        &entry(45, EntryPayload::Normal(LogCmd::Write(put))),
        concat!(
            "0401 03012d 01 00 05",
            "0f",           // WriteOp::PutRecord (15)
            "016b",         // key "k"
            "2a",           // version 42
            "e0a499ffbc31", // expiry 1_700_000_060_000
            "0176",         // data "v"
            "00",           // coll: None (a string)
        ),
    );
}

#[test]
fn log_entry_mset() {
    let cmd = WriteCmd {
        now_ms: 5,
        op: WriteOp::MSet {
            pairs: vec![(b("a"), b("1")), (b("b"), b("2"))],
            nx: true,
        },
    };
    golden(
        Format::LogEntry,
        &entry(43, EntryPayload::Normal(LogCmd::Write(cmd))),
        "0401 03012b0100050202 0161013101620132 01",
    );
}

#[test]
fn log_entry_batch_of_writes() {
    let set = |k: &str| WriteCmd {
        now_ms: 5,
        op: WriteOp::Set {
            key: b(k),
            value: b("v"),
            expiry: Expiry::Clear,
            cond: SetCond::Always,
            get: false,
        },
    };
    golden(
        Format::LogEntry,
        &entry(
            46,
            EntryPayload::Normal(LogCmd::Batch(vec![set("a"), set("b")])),
        ),
        concat!(
            "0401",     // version 4, kind 1 (log entry)
            "03 01 2e", // log id: term 3, node 1, index 46
            "01",       // EntryPayload::Normal
            "02",       // LogCmd::Batch
            "02",       // two writes
            "05 00 0161 0176 00 00 00",
            "05 00 0162 0176 00 00 00",
        ),
    );
    // Version 4 appended the mixed batch; a version 3 entry (a log written
    // by the previous build) reads the same.
    let old = codec::decode::<Entry>(
        Format::LogEntry,
        &unhex("0301 03012e 01 02 02 0500016101760000 00 0500016201760000 00"),
    );
    assert!(
        matches!(&old, Ok(e) if e.log_id.index == 46
            && matches!(&e.payload, EntryPayload::Normal(LogCmd::Batch(w)) if w.len() == 2)),
        "{old:?}"
    );
}

/// A pipeline's one-phase transaction proposed with another client's
/// plain write (`LogCmd::Mixed`, after the kinds older nodes know).
#[test]
fn log_entry_mixed_batch() {
    let set = WriteCmd {
        now_ms: 5,
        op: WriteOp::Set {
            key: b("a"),
            value: b("v"),
            expiry: Expiry::Clear,
            cond: SetCond::Always,
            get: false,
        },
    };
    let txn = TxnEntry {
        now_ms: 6,
        cmd: TxnCmd::OnePhase {
            ops: vec![
                TxnOp::Write(WriteOp::IncrBy { key: b("x"), by: 2 }),
                TxnOp::Read(ReadOp::Get { key: b("x") }),
            ],
            watches: vec![],
        },
    };
    golden(
        Format::LogEntry,
        &entry(
            47,
            EntryPayload::Normal(LogCmd::Mixed(vec![
                Proposal::Write(set),
                Proposal::Txn(txn),
            ])),
        ),
        concat!(
            "0401",     // version 4, kind 1 (log entry)
            "03 01 2f", // log id: term 3, node 1, index 47
            "01",       // EntryPayload::Normal
            "03",       // LogCmd::Mixed
            "02",       // two parts
            "00",       // Proposal::Write
            "05 00 0161 0176 00 00 00",
            "01",            // Proposal::Txn
            "06 00",         // now 6, one-phase
            "02",            // two ops
            "00 05 0178 04", // write: INCRBY x 2
            "01 00 0178",    // read: GET x
            "00",            // no watches
        ),
    );
}

#[test]
fn log_entry_transaction_prepare_and_commit() {
    golden(
        Format::LogEntry,
        &entry(44, EntryPayload::Normal(LogCmd::Txn(prepare()))),
        "0401 \
         03012c010180d095 ffbc310109020005 0178030100017901 017905",
    );
    let commit = TxnEntry {
        now_ms: 1_700_000_000_100,
        cmd: TxnCmd::Commit { txn_id: 9 },
    };
    golden(
        Format::LogEntry,
        &entry(45, EntryPayload::Normal(LogCmd::Txn(commit))),
        "0401 03012d0101e4d095 ffbc310209",
    );
}

#[test]
fn log_entry_blank_and_membership() {
    golden(
        Format::LogEntry,
        &entry(1, EntryPayload::Blank),
        "0401 03010100",
    );
    golden(
        Format::LogEntry,
        &entry(2, EntryPayload::Membership(membership())),
        "0401 \
         0301020201030102 030301076e313a37 30303102076e323a \
         3730303103076e33 3a37303031",
    );
}

/// Every write and read op and every transaction step round-trips (the
/// golden tests above pin a few; this catches a variant postcard cannot
/// carry).
#[test]
fn every_command_round_trips() {
    let writes = vec![
        set_with_expiry().op,
        WriteOp::Set {
            key: b("k"),
            value: b("v"),
            expiry: Expiry::Keep,
            cond: SetCond::IfPresent,
            get: true,
        },
        WriteOp::Del {
            keys: vec![b("a"), b("b")],
        },
        WriteOp::GetDel { key: b("k") },
        WriteOp::GetEx {
            key: b("k"),
            expiry: Expiry::Clear,
        },
        WriteOp::IncrBy {
            key: b("k"),
            by: i64::MIN,
        },
        WriteOp::IncrByFloat {
            key: b("k"),
            by: b("1.5e3"),
        },
        WriteOp::Append {
            key: b("k"),
            value: b("v"),
            max_len: u64::MAX,
        },
        WriteOp::SetRange {
            key: b("k"),
            offset: 3,
            value: b("v"),
            max_len: 10,
        },
        WriteOp::Expire {
            key: b("k"),
            at_ms: -1,
            cond: ExpireCond {
                nx: false,
                xx: true,
                gt: true,
                lt: false,
            },
        },
        WriteOp::Persist { key: b("k") },
        WriteOp::PurgeExpired { keys: vec![b("k")] },
        WriteOp::FlushGroup,
        WriteOp::Move {
            src: b("a"),
            dst: b("b"),
            mode: MoveMode::Copy { replace: true },
        },
        WriteOp::PutRecord {
            key: b("k"),
            record: stored(),
        },
        WriteOp::SetBit {
            key: b("k"),
            offset: 7,
            on: true,
            max_len: 10,
        },
        WriteOp::BitOp {
            op: BitOpKind::Xor,
            dst: b("d"),
            keys: vec![b("a"), b("b")],
        },
        WriteOp::BitField {
            key: b("k"),
            ops: vec![
                FieldOp::Set {
                    ty: FieldType {
                        signed: false,
                        bits: 63,
                    },
                    offset: 3,
                    value: -1,
                    overflow: Overflow::Sat,
                },
                FieldOp::IncrBy {
                    ty: FieldType {
                        signed: true,
                        bits: 64,
                    },
                    offset: 1 << 32,
                    by: i64::MIN,
                    overflow: Overflow::Fail,
                },
            ],
            max_len: 1 << 29,
        },
    ];
    let reads = vec![
        ReadOp::Get { key: b("k") },
        ReadOp::Exists { keys: vec![b("a")] },
        ReadOp::MGet {
            keys: vec![b("a"), b("")],
        },
        ReadOp::StrLen { key: b("k") },
        ReadOp::GetRange {
            key: b("k"),
            start: -3,
            end: i64::MAX,
        },
        ReadOp::Ttl {
            key: b("k"),
            ms: true,
        },
        ReadOp::Type { key: b("k") },
        ReadOp::Scan {
            after: b("a"),
            count: 10,
            pattern: Some(b("a*")),
        },
        ReadOp::Scan {
            after: Bytes::new(),
            count: 0,
            pattern: None,
        },
        ReadOp::DbSize,
        ReadOp::KeyCount,
        ReadOp::ExpireTime {
            key: b("k"),
            ms: true,
        },
        ReadOp::Object {
            key: b("k"),
            field: ObjectField::RefCount,
        },
        ReadOp::GetBit {
            key: b("k"),
            offset: 9,
        },
        ReadOp::BitCount {
            key: b("k"),
            range: Some(BitRange {
                start: -1,
                end: 5,
                bits: true,
            }),
        },
        ReadOp::BitPos {
            key: b("k"),
            bit: false,
            range: None,
            end_given: false,
        },
        ReadOp::BitField {
            key: b("k"),
            ops: vec![FieldOp::Get {
                ty: FieldType {
                    signed: true,
                    bits: 1,
                },
                offset: 0,
            }],
        },
    ];
    for op in &writes {
        let cmd = WriteCmd {
            now_ms: 1,
            op: op.clone(),
        };
        round_trip(
            Format::LogEntry,
            &entry(1, EntryPayload::Normal(LogCmd::Write(cmd.clone()))),
        );
        round_trip(Format::ShardRequest, &ShardRequest::Write(cmd));
    }
    for op in &reads {
        let req = ShardRequest::Read {
            op: op.clone(),
            linearizable: false,
            now_ms: 1,
        };
        round_trip(Format::ShardRequest, &req);
    }
    let ops: Vec<TxnOp> = writes
        .into_iter()
        .map(TxnOp::Write)
        .chain(reads.into_iter().map(TxnOp::Read))
        .collect();
    for cmd in [
        TxnCmd::OnePhase {
            ops: ops.clone(),
            watches: vec![(b("w"), 0)],
        },
        TxnCmd::Prepare {
            txn_id: u64::MAX,
            ops,
            watches: vec![],
        },
        TxnCmd::Commit { txn_id: 1 },
        TxnCmd::Abort { txn_id: 1 },
    ] {
        let t = TxnEntry { now_ms: 1, cmd };
        round_trip(
            Format::LogEntry,
            &entry(1, EntryPayload::Normal(LogCmd::Txn(t.clone()))),
        );
        round_trip(Format::ShardRequest, &ShardRequest::Txn(t));
    }
}

#[test]
fn stored_value() {
    let pinned = concat!(
        "020b",         // version 2, kind 11 (stored value)
        "2a",           // version: log index 42
        "e0a499ffbc31", // expire_at_ms 1_700_000_060_000
        "01 76",        // data "v"
        "00",           // coll: None (a string)
    );
    golden(Format::Stored, &stored(), pinned);
    // `Stored`'s own methods are that format.
    assert_eq!(stored().encode().unwrap(), unhex(pinned));
    assert_eq!(Stored::decode(&unhex(pinned)), Ok(stored()));
    // Version 1 (strings only, before collections) is still read.
    let v1 = "010b 2ae0a499ffbc31 0176";
    assert_eq!(Stored::decode(&unhex(v1)), Ok(stored()));
    // A collection's record.
    let hash = Stored {
        version: 42,
        expire_at_ms: 0,
        data: Bytes::new(),
        coll: Some(Coll {
            kind: Kind::Hash,
            gen: 40,
            len: 3,
            left: 0,
        }),
    };
    let pinned = concat!(
        "020b 2a 00 00",  // version 42, no expiry, no bytes
        "01 00 28 03 00", // Some(Coll { Hash, gen 40, len 3, left 0 })
    );
    golden(Format::Stored, &hash, pinned);
    assert_eq!(Stored::decode(&unhex(pinned)), Ok(hash));
}

#[test]
fn shard_request() {
    let read = ShardRequest::Read {
        op: ReadOp::MGet {
            keys: vec![b("a"), b("b")],
        },
        linearizable: true,
        now_ms: 1_700_000_000_000,
    };
    golden(
        Format::ShardRequest,
        &read,
        "040c 0302020161016201 80d095ffbc31",
    );
    let versions = ShardRequest::ReadVersions {
        keys: vec![b("w")],
        now_ms: 7,
    };
    golden(Format::ShardRequest, &versions, "040c 0201017707");
    golden(
        Format::ShardRequest,
        &ShardRequest::Write(set_with_expiry()),
        "040c 0080d095ffbc3100 016b017602e0a499 ffbc310100",
    );
    // Version 3 appended the cancellable waits; a version 2 request reads
    // the same.
    let old = codec::decode::<ShardRequest>(Format::ShardRequest, &unhex("020c 0201017707"));
    assert_eq!(
        format!("{old:?}"),
        format!("{:?}", Ok::<_, CodecError>(versions))
    );
    golden(
        Format::ShardRequest,
        &ShardRequest::CancelWaits { client: 5 },
        "040c 0605",
    );
    // Version 4 appended pub/sub and scripts; a version 3 request reads
    // the same.
    let old = codec::decode::<ShardRequest>(Format::ShardRequest, &unhex("030c 0605"));
    assert!(matches!(old, Ok(ShardRequest::CancelWaits { client: 5 })));
    golden(Format::ShardRequest, &ShardRequest::ScriptKill, "040c 0c");
}

#[test]
fn shard_reply() {
    let ok: Result<OpReply, ShardError> = Ok(OpReply::Array(vec![
        OpReply::Ok,
        OpReply::Nil,
        OpReply::Int(-3),
        OpReply::Bulk(b("v")),
        OpReply::Status("string".into()),
        OpReply::Error("ERR x".into()),
    ]));
    golden(
        Format::ShardReply,
        &ok,
        "030d 0005060001020503 0176040673747269 6e67060545525220 78",
    );
    let not_leader: Result<OpReply, ShardError> = Err(ShardError::NotLeader {
        leader: Some(2),
        addr: Some("n2:7001".into()),
    });
    golden(
        Format::ShardReply,
        &not_leader,
        "030d 0100010201076e32 3a37303031",
    );
    let corrupt: Result<OpReply, ShardError> = Err(ShardError::Corrupt(Corrupt {
        group: 7,
        place: Place::Key(b("k")),
    }));
    golden(Format::ShardReply, &corrupt, "030d 01080700016b");
    for e in [
        ShardError::NotLeader {
            leader: None,
            addr: None,
        },
        ShardError::NoQuorum("q".into()),
        ShardError::Timeout,
        ShardError::UnknownGroup(3),
        ShardError::Unavailable("u".into()),
        ShardError::OutcomeUnknown("o".into()),
        ShardError::Storage("s".into()),
        ShardError::BadRequest("b".into()),
        ShardError::Corrupt(Corrupt {
            group: 1,
            place: Place::Lock(b("l")),
        }),
        ShardError::Corrupt(Corrupt {
            group: 1,
            place: Place::Prepared(4),
        }),
        ShardError::Corrupt(Corrupt {
            group: 1,
            place: Place::LogEntry(5),
        }),
    ] {
        round_trip(Format::ShardReply, &Err::<OpReply, _>(e));
    }
    // Version 3 appended booleans and verbatim text; version 2 replies
    // read the same.
    golden(
        Format::ShardReply,
        &Ok::<_, ShardError>(OpReply::Bool(true)),
        "030d 000c01",
    );
    let old = codec::decode::<Result<OpReply, ShardError>>(
        Format::ShardReply,
        &unhex("020d 01080700016b"),
    );
    assert!(old.is_ok());
}

#[test]
fn membership_change() {
    golden(
        Format::MembershipChange,
        &MembershipChange::AddLearner {
            id: 4,
            addr: "n4:7001".into(),
        },
        "020e 0004076e343a3730 3031",
    );
    golden(
        Format::MembershipChange,
        &MembershipChange::SetVoters(vec![1, 2, 4]),
        "020e 0103010204",
    );
    golden(
        Format::MembershipChange,
        &MembershipChange::RemoveLearner(4),
        "020e 0204",
    );
    // Version 2 appended `TransferLeader`; version 1 blobs still read.
    golden(
        Format::MembershipChange,
        &MembershipChange::TransferLeader(3),
        "020e 0303",
    );
    let v1: MembershipChange =
        codec::decode(Format::MembershipChange, &unhex("010e 0204")).unwrap();
    assert_eq!(v1, MembershipChange::RemoveLearner(4));
}

#[test]
fn raft_state_rows() {
    golden(Format::Vote, &Vote::new_committed(3, 1), "0102 030101");
    golden(Format::Vote, &Vote::new(4, 2), "0102 040200");
    golden(Format::Committed, &Some(log_id(3, 1, 42)), "0103 0103012a");
    golden(Format::Committed, &None::<LogId>, "0103 00");
    golden(Format::Purged, &log_id(3, 1, 40), "0104 030128");
    let applied = (
        Some(log_id(3, 1, 42)),
        StoredMembership::new(Some(log_id(3, 1, 2)), membership()),
    );
    golden(
        Format::Applied,
        &applied,
        "0105 \
         0103012a01030102 0103010203030107 6e313a3730303102 \
         076e323a37303031 03076e333a373030 31",
    );
    golden(
        Format::Applied,
        &(None::<LogId>, StoredMembership::default()),
        "0105 00000000",
    );
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(3, 1, 42)),
        last_membership: StoredMembership::new(Some(log_id(3, 1, 2)), membership()),
    };
    // openraft 0.10 keeps the layout and writes the snapshot id (gone from
    // its metadata) as an empty string: the same version.
    golden(
        Format::SnapshotMeta,
        &meta,
        "0106 \
         0103012a01030102 0103010203030107 6e313a3730303102 \
         076e323a37303031 03076e333a373030 3100",
    );
    // A row openraft 0.9 wrote, with its id, still reads (the id is
    // ignored).
    let old: SnapshotMeta = codec::decode(
        Format::SnapshotMeta,
        &unhex(
            "0106 \
             0103012a01030102 0103010203030107 6e313a3730303102 \
             076e323a37303031 03076e333a373030 3106372d34322d31",
        ),
    )
    .unwrap();
    assert_eq!(old, meta);
    golden(Format::Lock, &9u64, "0109 09");
    golden(Format::KeyCount, &(42u64, 1000i64), "010a 2ad00f");
    golden(Format::DataDir, &(), "0115");
}

#[test]
fn prepared_transaction() {
    let TxnCmd::Prepare { txn_id, ops, .. } = prepare().cmd else {
        unreachable!()
    };
    let p = Prepared {
        txn_id,
        ops,
        keys: vec![b("x"), b("y")],
        prepared_at_ms: 1_700_000_000_000,
    };
    golden(
        Format::Prepared,
        &p,
        "0308 0902000501780301 0001790201780179 80d095ffbc31",
    );
}

#[test]
fn snapshot_data() {
    let lock_key = [&[tag::LOCK][..], b"x"].concat();
    let prepared_key = [&[tag::PREPARED][..], &9u64.to_be_bytes()].concat();
    let data = SnapshotData {
        sub: vec![],
        pairs: vec![(b"k".to_vec(), stored().encode().unwrap())],
        txn_state: vec![
            (lock_key, codec::encode(Format::Lock, &9u64).unwrap()),
            (
                prepared_key,
                codec::encode(
                    Format::Prepared,
                    &Prepared {
                        txn_id: 9,
                        ops: vec![],
                        keys: vec![b("x")],
                        prepared_at_ms: 1,
                    },
                )
                .unwrap(),
            ),
        ],
    };
    golden(
        Format::SnapshotData,
        &data,
        "0207 \
         01016b0c020b2ae0 a499ffbc31017600 02 0207780301090909 \
         0800000000000000 0908030809000101 7801 \
         00",
    );
}

#[test]
fn raft_messages() {
    let vote = VoteRequest::<TypeConfig>::new(Vote::new(4, 2), Some(log_id(3, 1, 42)));
    // Version 2 (openraft 0.10): `leadership_transfer` appended.
    golden(Format::RaftVote, &vote, "0211 0402000103012a00");
    let transfer = VoteRequest {
        leadership_transfer: true,
        ..vote.clone()
    };
    golden(Format::RaftVote, &transfer, "0211 0402000103012a01");
    // Version 1 (openraft 0.9) is still read, as no transfer; the generic
    // decoder refuses it rather than misread it.
    let v1 = unhex("0111 0402000103012a");
    assert_eq!(
        format!("{:?}", super::network::decode_vote(&v1).unwrap()),
        format!("{vote:?}")
    );
    assert!(codec::decode::<VoteRequest<TypeConfig>>(Format::RaftVote, &v1).is_err());
    let granted: Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>> = Ok(VoteResponse {
        vote: Vote::new(4, 2),
        vote_granted: true,
        last_log_id: Some(log_id(3, 1, 42)),
    });
    golden(Format::RaftVoteReply, &granted, "0112 0004020001010301 2a");
    let transfer = TransferLeaderRequest::<TypeConfig>::new(
        Vote::new_committed(4, 2),
        3,
        Some(log_id(4, 2, 50)),
    );
    golden(Format::RaftTransfer, &transfer, "0119 04020103 01040232");
    let taken: Result<TransferLeaderResponse<TypeConfig>, RaftError<TypeConfig>> = Ok(Ok(()));
    golden(Format::RaftTransferReply, &taken, "011a 0000");

    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 1),
        prev_log_id: Some(log_id(3, 1, 41)),
        entries: vec![entry(
            42,
            EntryPayload::Normal(LogCmd::Write(set_with_expiry())),
        )],
        leader_commit: Some(log_id(3, 1, 41)),
    };
    golden(
        Format::RaftAppend,
        &append,
        "040f \
         0301010103012901 03012a010080d095 ffbc3100016b0176 \
         02e0a499ffbc3101 0001030129",
    );
    // Version 3 (the previous build's appends) reads the same.
    let old = codec::decode::<AppendEntriesRequest<TypeConfig>>(
        Format::RaftAppend,
        &unhex(
            "030f 0301010103012901 03012a010080d095 ffbc3100016b0176 \
             02e0a499ffbc3101 0001030129",
        ),
    );
    assert_eq!(
        format!("{old:?}"),
        format!("{:?}", Ok::<_, CodecError>(append.clone()))
    );
    for reply in [
        AppendEntriesResponse::<TypeConfig>::Success,
        AppendEntriesResponse::PartialSuccess(Some(log_id(3, 1, 42))),
        AppendEntriesResponse::Conflict,
        AppendEntriesResponse::HigherVote(Vote::new(5, 3)),
    ] {
        round_trip(
            Format::RaftAppendReply,
            &Ok::<_, RaftError<TypeConfig>>(reply),
        );
    }
    let ok: Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>> =
        Ok(AppendEntriesResponse::Success);
    golden(Format::RaftAppendReply, &ok, "0110 0000");
    let storage = openraft::StorageError::<TypeConfig>::read(
        openraft::impls::BoxedErrorSource::from_string("disk on fire"),
    );
    for fatal in [
        Fatal::StorageError(storage),
        Fatal::Panicked,
        Fatal::Stopped,
    ] {
        let e: Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>> =
            Err(RaftError::Fatal(fatal));
        round_trip(Format::RaftAppendReply, &e);
    }

    // The chunked InstallSnapshot of openraft-legacy keeps 0.9's layout,
    // snapshot id included.
    let meta = openraft_legacy::network_v1::SnapshotMeta {
        last_log_id: Some(log_id(3, 1, 42)),
        last_membership: StoredMembership::new(Some(log_id(3, 1, 2)), membership()),
        snapshot_id: "7-42-1".into(),
    };
    let chunk = InstallSnapshotRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 1),
        meta,
        offset: 0,
        data: b"SHSN".to_vec(),
        done: false,
    };
    golden(
        Format::RaftSnapshot,
        &chunk,
        "0113 \
         0301010103012a01 0301020103010203 0301076e313a3730 \
         303102076e323a37 30303103076e333a 3730303106372d34 \
         322d310004534853 4e00",
    );
    let done: Result<
        InstallSnapshotResponse<TypeConfig>,
        RaftError<TypeConfig, InstallSnapshotError>,
    > = Ok(InstallSnapshotResponse {
        vote: Vote::new_committed(3, 1),
    });
    golden(Format::RaftSnapshotReply, &done, "0114 00030101");
    let at = |offset| SnapshotSegmentId {
        id: "7-42-1".into(),
        offset,
    };
    let mismatch: Result<
        InstallSnapshotResponse<TypeConfig>,
        RaftError<TypeConfig, InstallSnapshotError>,
    > = Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(
        SnapshotMismatch {
            expect: at(0),
            got: at(4),
        },
    )));
    golden(
        Format::RaftSnapshotReply,
        &mismatch,
        "0114 01000006372d3432 2d310006372d3432 2d3104",
    );
}

#[test]
fn hibernation_messages() {
    use crate::shard::hibernate::{HibernateRequest, Ping};
    let req = HibernateRequest {
        leader: 1,
        term: 3,
        last_index: Some(7),
        boot: 42,
    };
    golden(Format::Hibernate, &req, "0116 01 03 0107 2a");
    let accepted: Result<(), String> = Ok(());
    golden(Format::HibernateReply, &accepted, "0117 00");
    let refused: Result<(), String> = Err("no".into());
    golden(Format::HibernateReply, &refused, "0117 01026e6f");
    let ping = Ping {
        from: 2,
        boot: 300,
        asleep: vec![5, 9],
    };
    golden(Format::Liveness, &ping, "0118 02ac02 020509");
}

/// Each kind refuses a blob of a version it does not know, with the error
/// that names the kind and the version, and refuses another kind's blob.
#[test]
fn unknown_versions_and_other_kinds_are_refused() {
    let vote = codec::encode(Format::Vote, &Vote::new_committed(3, 1)).unwrap();
    for kind in Format::ALL {
        let mut raw = vote.clone();
        raw[1] = kind.tag();
        for version in [0, kind.version() + 1, u8::MAX] {
            raw[0] = version;
            assert_eq!(
                codec::decode::<Vote>(kind, &raw).unwrap_err(),
                CodecError::UnknownVersion { kind, version },
            );
        }
        if kind != Format::Vote {
            assert_eq!(
                codec::decode::<Vote>(kind, &vote).unwrap_err(),
                CodecError::WrongKind {
                    kind,
                    found: Format::Vote.tag()
                },
            );
        }
    }
    // What callers make of it: a stored value in a newer format is corrupt
    // data to this build, reported with its key.
    let mut newer = stored().encode().unwrap();
    newer[0] = Format::Stored.version() + 1;
    assert_eq!(
        Corrupt::check(7, b"k", &newer).unwrap_err().to_string(),
        "ERR corrupt data at group 7 key \"k\""
    );
}

#[test]
fn batch_engine_rows() {
    use super::batch::log::{StoredConfState, StoredEntry, StoredHardState};
    let e = StoredEntry {
        term: 3,
        kind: 0,
        data: b"set".to_vec(),
        context: vec![],
    };
    let pinned = concat!(
        "011b",      // version 1, kind 27 (batch-engine log entry)
        "03",        // term 3
        "00",        // kind: normal entry
        "03 736574", // data "set"
        "00",        // context: empty
    );
    golden(Format::BatchEntry, &e, pinned);
    let hs = StoredHardState {
        term: 5,
        vote: 2,
        commit: 300,
    };
    golden(Format::BatchHardState, &hs, "011c 05 02 ac02");
    let conf = StoredConfState {
        voters: vec![1, 2, 3],
        learners: vec![],
        voters_outgoing: vec![],
        learners_next: vec![],
        auto_leave: false,
    };
    golden(Format::BatchConfState, &conf, "011d 03010203 00 00 00 00");
    // A command is a log entry's payload on its own: the same bytes after
    // the header as in `log_entry_set_with_expiry`.
    let cmd = LogCmd::Write(set_with_expiry());
    let pinned = concat!(
        "041e",            // version 4 (the log entry's), kind 30 (batch-engine command)
        "00",              // LogCmd::Write
        "80d095ffbc31",    // now_ms 1_700_000_000_000
        "00",              // WriteOp::Set
        "01 6b",           // key "k"
        "01 76",           // value "v"
        "02 e0a499ffbc31", // Expiry::At(1_700_000_060_000)
        "01",              // SetCond::IfAbsent
        "00",              // get: false
    );
    golden(Format::BatchCommand, &cmd, pinned);
    // A batch of messages between nodes: each raft-rs message stays in its
    // own protobuf encoding, so only the list around them is pinned here.
    let batch = super::batch::wire::WireBatch {
        messages: vec![super::batch::wire::WireMessage {
            group: 300,
            raft: Bytes::from_static(&[0x08, 0x03]),
        }],
    };
    let pinned = concat!(
        "011f",    // version 1, kind 31 (batch-engine messages)
        "01",      // one message
        "ac02",    // group 300
        "02 0803", // its protobuf bytes
    );
    golden(Format::BatchMessages, &batch, pinned);
    let start = super::batch::log::StoredLogStart {
        index: 300,
        term: 5,
    };
    golden(Format::BatchLogStart, &start, "0120 ac02 05");
    let chunk = super::batch::wire::SnapshotChunk {
        id: "s".into(),
        offset: 300,
        done: true,
        message: Bytes::from_static(&[0x08]),
        data: Bytes::from_static(b"ab"),
    };
    let pinned = concat!(
        "0121",    // version 1, kind 33 (batch-engine snapshot chunk)
        "01 73",   // id "s"
        "ac02",    // offset 300
        "01",      // done
        "01 08",   // the message without its data (protobuf)
        "02 6162", // data "ab"
    );
    golden(Format::BatchSnapshotChunk, &chunk, pinned);
}
