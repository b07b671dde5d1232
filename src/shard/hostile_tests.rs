//! A node facing hostile or damaged input, one single-replica group on a
//! real RocksDB: garbage written straight into the database must come back
//! as `ERR corrupt data ...` from every path (never as an absent key, a
//! short count or a silent no-op), requests over the node's own limits are
//! refused before they are proposed, and the key counter follows every
//! write.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, ServerState};

use super::codec;
use super::command::{
    Expiry, Limits, OpReply, ReadOp, SetCond, ShardRequest, WriteCmd, WriteOp, ERR_NOT_FLOAT,
    ERR_TOO_BIG,
};
use super::command::{TxnCmd, TxnEntry, TxnOp};
use super::engine::{data_key, state_key, state_key_with, tag, Cf, Engine, Op};
use super::host::{Host, HostConfig, ReplicaRecord};
use super::network::Transport;
use super::store::StateMachine;
use super::ShardError;

pub(super) const GID: u64 = 7;

/// A node with one single-replica group `GID`, leading it.
pub(super) async fn host_with(dir: &std::path::Path, limits: Limits) -> Arc<Host> {
    let engine = Arc::new(Engine::open(dir, false).unwrap());
    let raft = crate::shard::raft_config(&crate::config::NodeConfig::default()).unwrap();
    let host = Host::new(
        1,
        engine,
        Transport::new(),
        HostConfig {
            raft: Arc::new(raft),
            write_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(10),
            limits,
            hibernate: crate::shard::hibernate::HibernateConfig::from_node(
                &crate::config::NodeConfig::default(),
            ),
            batch_clock: (2, 10),
        },
    );
    let record = ReplicaRecord {
        group_id: GID,
        table: "t".into(),
        shard: 0,
        engine: Default::default(),
        voters: Vec::new(),
    };
    let members = BTreeMap::from([(1, BasicNode::new("127.0.0.1:1"))]);
    host.ensure(record, members, true).await.unwrap();
    let raft = host.get(GID).unwrap().openraft().unwrap().clone();
    raft.wait(Some(Duration::from_secs(20)))
        .state(ServerState::Leader, "leads")
        .await
        .unwrap();
    host
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn write(op: WriteOp) -> ShardRequest {
    ShardRequest::Write(WriteCmd { now_ms: 1, op })
}

fn set(k: &str, v: &str) -> WriteOp {
    WriteOp::Set {
        key: b(k),
        value: b(v),
        expiry: Expiry::Clear,
        cond: SetCond::Always,
        get: false,
    }
}

fn read(op: ReadOp) -> ShardRequest {
    ShardRequest::Read {
        op,
        linearizable: true,
        now_ms: 1,
    }
}

fn txn(cmd: TxnCmd) -> ShardRequest {
    ShardRequest::Txn(TxnEntry { now_ms: 1, cmd })
}

async fn put_raw(host: &Host, cf: Cf, key: Vec<u8>, value: &[u8]) {
    host.engine
        .write(vec![Op::Put(cf, key, value.to_vec())], true)
        .await
        .unwrap();
}

async fn raw(host: &Host, key: &[u8]) -> Option<Vec<u8>> {
    let k = data_key(GID, key);
    host.engine
        .read(move |db| db.get(Cf::Data, &k))
        .await
        .unwrap()
}

async fn key_count(host: &Host) -> i64 {
    match host.execute(GID, read(ReadOp::KeyCount)).await.unwrap() {
        OpReply::Int(n) => n,
        other => panic!("{other:?}"),
    }
}

const CORRUPT_BAD: &str = "ERR corrupt data at group 7 key \"bad\\r\\n\"";

fn is_corrupt(got: &Result<OpReply, ShardError>) -> bool {
    matches!(got, Err(ShardError::Corrupt(c)) if c.to_string() == CORRUPT_BAD)
}

#[tokio::test]
async fn corrupt_values_are_reported_by_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with(dir.path(), Limits::default()).await;
    host.execute(GID, write(set("good", "1"))).await.unwrap();
    // Shorter than the 16-byte header: undecodable. The key has CR LF in
    // it, which the error must not pass through as is.
    put_raw(&host, Cf::Data, data_key(GID, b"bad\r\n"), b"xx").await;
    let bad = || b("bad\r\n");

    // Reads: an error naming group and key, never nil or a short answer.
    for op in [
        ReadOp::Get { key: bad() },
        ReadOp::StrLen { key: bad() },
        ReadOp::Exists {
            keys: vec![b("good"), bad()],
        },
        ReadOp::MGet {
            keys: vec![b("good"), bad()],
        },
        ReadOp::Scan {
            after: Bytes::new(),
            count: 10,
            pattern: None,
        },
        ReadOp::DbSize,
    ] {
        let got = host.execute(GID, read(op.clone())).await;
        assert!(is_corrupt(&got), "{op:?}: {got:?}");
    }
    let watch = ShardRequest::ReadVersions {
        keys: vec![bad()],
        now_ms: 1,
    };
    assert!(is_corrupt(&host.execute(GID, watch).await));

    // Writes that read the value: the reply is the error, nothing is written.
    let corrupt = OpReply::Error(CORRUPT_BAD.into());
    for op in [
        WriteOp::IncrBy { key: bad(), by: 1 },
        WriteOp::Append {
            key: bad(),
            value: b("x"),
            max_len: 100,
        },
        WriteOp::Del {
            keys: vec![b("good"), bad()],
        },
        WriteOp::GetDel { key: bad() },
    ] {
        let got = host.execute(GID, write(op.clone())).await.unwrap();
        assert_eq!(got, corrupt, "{op:?}");
    }
    assert_eq!(raw(&host, b"bad\r\n").await.as_deref(), Some(&b"xx"[..]));
    assert!(raw(&host, b"good").await.is_some(), "DEL wrote half");

    // In a transaction, the operation that met it answers the error.
    let one_phase = txn(TxnCmd::OnePhase {
        ops: vec![
            TxnOp::Write(set("t1", "v")),
            TxnOp::Write(WriteOp::IncrBy { key: bad(), by: 1 }),
            TxnOp::Read(ReadOp::Get { key: bad() }),
        ],
        watches: vec![],
    });
    assert_eq!(
        host.execute(GID, one_phase).await.unwrap(),
        OpReply::Array(vec![OpReply::Ok, corrupt.clone(), corrupt.clone()])
    );
    // A WATCH on it cannot be decided: the transaction is the error.
    let watched = txn(TxnCmd::OnePhase {
        ops: vec![TxnOp::Write(set("t2", "v"))],
        watches: vec![(bad(), 0)],
    });
    assert_eq!(host.execute(GID, watched).await.unwrap(), corrupt);
    assert!(raw(&host, b"t2").await.is_none());
}

#[tokio::test]
async fn corrupt_transaction_records_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with(dir.path(), Limits::default()).await;
    let prepare = |id| {
        txn(TxnCmd::Prepare {
            txn_id: id,
            ops: vec![TxnOp::Write(set("a", "1"))],
            watches: vec![],
        })
    };
    assert_eq!(
        host.execute(GID, prepare(5)).await.unwrap(),
        OpReply::Int(1)
    );
    // The prepared record becomes unreadable: COMMIT must not be a no-op
    // that looks like "already committed".
    let rec = state_key_with(GID, tag::PREPARED, &5u64.to_be_bytes());
    put_raw(&host, Cf::State, rec, b"\xff\xff garbage").await;
    let commit = txn(TxnCmd::Commit { txn_id: 5 });
    assert_eq!(
        host.execute(GID, commit).await.unwrap(),
        OpReply::Error("ERR corrupt data at group 7 prepared transaction 5".into())
    );
    assert!(raw(&host, b"a").await.is_none());
    // Its lock stays: plain writes to the key are still refused.
    let got = host.execute(GID, write(set("a", "2"))).await.unwrap();
    assert!(
        matches!(&got, OpReply::Error(e) if e.starts_with("TRYAGAIN")),
        "{got:?}"
    );

    // A lock row that does not decode refuses the write with the error.
    put_raw(&host, Cf::State, state_key_with(GID, tag::LOCK, b"l"), b"1").await;
    assert_eq!(
        host.execute(GID, write(set("l", "v"))).await.unwrap(),
        OpReply::Error("ERR corrupt data at group 7 lock of key \"l\"".into())
    );
    assert!(raw(&host, b"l").await.is_none());
}

/// Records in the unversioned layouts of earlier builds, or in a format
/// version newer than this build knows, are corrupt data: never read as
/// some other value.
#[tokio::test]
async fn old_and_newer_formats_are_corrupt_data() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with(dir.path(), Limits::default()).await;
    let old_value = [&7u64.to_be_bytes()[..], &0u64.to_be_bytes(), b"v"].concat();
    let mut newer_value = super::value::Stored {
        version: 7,
        expire_at_ms: 0,
        data: b("v"),
        coll: None,
    }
    .encode()
    .unwrap();
    newer_value[0] += 1;
    for (key, raw) in [("old", old_value), ("newer", newer_value)] {
        put_raw(&host, Cf::Data, data_key(GID, key.as_bytes()), &raw).await;
        let want = format!("ERR corrupt data at group 7 key \"{key}\"");
        let got = host.execute(GID, read(ReadOp::Get { key: b(key) })).await;
        assert!(
            matches!(&got, Err(ShardError::Corrupt(c)) if c.to_string() == want),
            "{key}: {got:?}"
        );
        let got = host
            .execute(GID, write(WriteOp::IncrBy { key: b(key), by: 1 }))
            .await
            .unwrap();
        assert_eq!(got, OpReply::Error(want), "{key}");
    }
    // A lock in the old layout (the transaction id, 8 bytes big-endian),
    // met by a transaction while another is prepared (lock rows exist, and
    // are read, only while a transaction is prepared).
    let prepare = txn(TxnCmd::Prepare {
        txn_id: 77,
        ops: vec![TxnOp::Write(set("p", "v"))],
        watches: vec![],
    });
    assert_eq!(host.execute(GID, prepare).await.unwrap(), OpReply::Int(1));
    let lock = state_key_with(GID, tag::LOCK, b"l");
    put_raw(&host, Cf::State, lock, &0x0109u64.to_be_bytes()).await;
    let one_phase = txn(TxnCmd::OnePhase {
        ops: vec![TxnOp::Write(set("l", "v"))],
        watches: vec![],
    });
    assert_eq!(
        host.execute(GID, one_phase).await.unwrap(),
        OpReply::Error("ERR corrupt data at group 7 lock of key \"l\"".into())
    );
}

#[tokio::test]
async fn the_node_enforces_its_own_value_limit() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_value_len: 1024,
        max_reply_len: 4096,
    };
    let host = host_with(dir.path(), limits).await;
    let too_big = OpReply::Error(ERR_TOO_BIG.into());
    let big = Bytes::from(vec![b'x'; 1025]);
    let refused = [
        WriteOp::Set {
            key: b("k"),
            value: big.clone(),
            expiry: Expiry::Clear,
            cond: SetCond::Always,
            get: false,
        },
        WriteOp::MSet {
            pairs: vec![(b("k"), b("v")), (b("k2"), big.clone())],
            nx: false,
        },
        // The router's word on the limit counts for nothing.
        WriteOp::SetRange {
            key: b("k"),
            offset: 1000,
            value: b("0123456789012345678901234567890"),
            max_len: u64::MAX,
        },
        WriteOp::Append {
            key: b("k"),
            value: big.clone(),
            max_len: u64::MAX,
        },
    ];
    for op in refused {
        assert_eq!(host.execute(GID, write(op.clone())).await.unwrap(), too_big);
    }
    assert!(raw(&host, b"k").await.is_none() && raw(&host, b"k2").await.is_none());
    // APPEND grows a value within the limit, then stops at it: the limit
    // stamped by the leader decides, not the request's.
    let append = |v: Bytes| WriteOp::Append {
        key: b("a"),
        value: v,
        max_len: u64::MAX,
    };
    let half = Bytes::from(vec![b'y'; 600]);
    assert_eq!(
        host.execute(GID, write(append(half.clone())))
            .await
            .unwrap(),
        OpReply::Int(600)
    );
    assert_eq!(
        host.execute(GID, write(append(half))).await.unwrap(),
        too_big
    );
    // In a transaction: refused whole, before anything is proposed.
    let one_phase = txn(TxnCmd::OnePhase {
        ops: vec![
            TxnOp::Write(set("t", "small")),
            TxnOp::Write(WriteOp::Set {
                key: b("t2"),
                value: big,
                expiry: Expiry::Clear,
                cond: SetCond::Always,
                get: false,
            }),
        ],
        watches: vec![],
    });
    assert_eq!(host.execute(GID, one_phase).await.unwrap(), too_big);
    assert!(raw(&host, b"t").await.is_none());

    // INCRBYFLOAT: the increment is checked before proposing, and huge
    // exponents neither panic nor overflow.
    let incr = |by: &str| WriteOp::IncrByFloat {
        key: b("f"),
        by: b(by),
    };
    assert_eq!(
        host.execute(GID, write(incr("1e999999999999")))
            .await
            .unwrap(),
        OpReply::Error(ERR_NOT_FLOAT.into())
    );
    assert_eq!(
        host.execute(GID, write(incr("10.5"))).await.unwrap(),
        OpReply::Bulk(b("10.5"))
    );
    assert_eq!(
        host.execute(GID, write(incr("0e-2147483648")))
            .await
            .unwrap(),
        OpReply::Bulk(b("10.5"))
    );

    // Replies: an MGET over the node's reply limit is refused; a SCAN page
    // stops there.
    let mut pairs = Vec::new();
    for i in 0..20 {
        pairs.push((b(&format!("m{i:02}")), Bytes::from(vec![b'z'; 500])));
    }
    let keys: Vec<Bytes> = pairs.iter().map(|(k, _)| k.clone()).collect();
    let mset = WriteOp::MSet { pairs, nx: false };
    assert_eq!(host.execute(GID, write(mset)).await.unwrap(), OpReply::Ok);
    let got = host
        .execute(GID, read(ReadOp::MGet { keys: keys.clone() }))
        .await
        .unwrap();
    assert!(
        matches!(&got, OpReply::Error(e) if e.starts_with("ERR reply too large")),
        "{got:?}"
    );
    let got = host
        .execute_bounded(
            GID,
            read(ReadOp::MGet {
                keys: keys[..2].to_vec(),
            }),
            100,
        )
        .await
        .unwrap();
    assert!(matches!(&got, OpReply::Error(e) if e.starts_with("ERR reply too large")));
    let scan = read(ReadOp::Scan {
        after: Bytes::new(),
        count: u64::MAX,
        pattern: Some(b("m*")),
    });
    let OpReply::Array(page) = host.execute_bounded(GID, scan, 40).await.unwrap() else {
        panic!("not a page");
    };
    assert!(matches!(&page[0], OpReply::Bulk(_)), "the page ends early");
    assert!(
        matches!(&page[1], OpReply::Array(k) if k.len() < 10),
        "{page:?}"
    );
}

#[tokio::test]
async fn the_key_counter_follows_writes_and_is_kept_with_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with(dir.path(), Limits::default()).await;
    assert_eq!(key_count(&host).await, 0);
    host.execute(GID, write(set("a", "1"))).await.unwrap();
    host.execute(GID, write(set("a", "2"))).await.unwrap();
    host.execute(GID, write(set("b", "1"))).await.unwrap();
    assert_eq!(key_count(&host).await, 2);
    let mset = WriteOp::MSet {
        pairs: vec![(b("c"), b("1")), (b("a"), b("3")), (b("c"), b("2"))],
        nx: false,
    };
    host.execute(GID, write(mset)).await.unwrap();
    assert_eq!(key_count(&host).await, 3);
    let del = WriteOp::Del {
        keys: vec![b("a"), b("a"), b("zz")],
    };
    host.execute(GID, write(del)).await.unwrap();
    assert_eq!(key_count(&host).await, 2);
    // A transaction's writes count at COMMIT, not at PREPARE.
    let prepare = txn(TxnCmd::Prepare {
        txn_id: 9,
        ops: vec![TxnOp::Write(set("t", "1")), TxnOp::Write(set("b", "2"))],
        watches: vec![],
    });
    host.execute(GID, prepare).await.unwrap();
    assert_eq!(key_count(&host).await, 2);
    host.execute(GID, txn(TxnCmd::Commit { txn_id: 9 }))
        .await
        .unwrap();
    assert_eq!(key_count(&host).await, 3);
    // Same answer as the exact DBSIZE.
    assert_eq!(
        host.execute(GID, read(ReadOp::DbSize)).await.unwrap(),
        OpReply::Int(3)
    );
    host.execute(GID, write(WriteOp::FlushGroup)).await.unwrap();
    assert_eq!(key_count(&host).await, 0);
    host.execute(GID, write(set("x", "1"))).await.unwrap();
    host.execute(GID, write(set("y", "1"))).await.unwrap();
    assert_eq!(key_count(&host).await, 2);

    // A state machine opened again (a restart) trusts the count written
    // with the data while it names the applied index...
    let applied = host
        .get(GID)
        .unwrap()
        .openraft()
        .unwrap()
        .metrics()
        .borrow_watched()
        .last_applied
        .map_or(0, |l| l.index);
    let record = |index: u64, n: i64| codec::encode(codec::Format::KeyCount, &(index, n)).unwrap();
    let reopen = || StateMachine::open(host.engine.clone(), GID);
    assert_eq!(reopen().await.unwrap().key_count().await.unwrap(), 2);
    let at = state_key(GID, tag::KEY_COUNT);
    put_raw(&host, Cf::State, at.clone(), &record(applied, 1000)).await;
    assert_eq!(reopen().await.unwrap().key_count().await.unwrap(), 1000);
    // ...and counts the keys once when it does not (after a snapshot
    // install, or data written before the counter existed).
    put_raw(&host, Cf::State, at.clone(), &record(applied - 1, 1000)).await;
    assert_eq!(reopen().await.unwrap().key_count().await.unwrap(), 2);
    // A row in the unversioned layout of earlier builds is an unknown
    // count too, never a misread one.
    let old = [applied.to_be_bytes(), 1000i64.to_be_bytes()].concat();
    put_raw(&host, Cf::State, at.clone(), &old).await;
    assert_eq!(reopen().await.unwrap().key_count().await.unwrap(), 2);
    host.engine
        .write(vec![Op::Delete(Cf::State, at)], true)
        .await
        .unwrap();
    assert_eq!(reopen().await.unwrap().key_count().await.unwrap(), 2);
}

/// An AddLearner naming another address for a node whose member record
/// the node knows is refused, and the peer map keeps etcd's address.
#[tokio::test]
async fn add_learner_never_redirects_a_known_peer() {
    use super::host::MembershipChange;
    let dir = tempfile::tempdir().unwrap();
    let host = host_with(dir.path(), Limits::default()).await;
    host.transport.set_peer(2, "127.0.0.1:7002".into());
    let hostile = MembershipChange::AddLearner {
        id: 2,
        addr: "203.0.113.9:7002".into(),
    };
    let err = host.change_membership(GID, hostile).await.unwrap_err();
    assert!(
        matches!(&err, ShardError::BadRequest(m) if m.contains("etcd's member record has node 2 at 127.0.0.1:7002")),
        "{err:?}"
    );
    assert_eq!(
        host.transport.peer_addr(2).as_deref(),
        Some("127.0.0.1:7002")
    );
    let voters = host
        .get(GID)
        .unwrap()
        .openraft()
        .unwrap()
        .metrics()
        .borrow_watched()
        .membership_config
        .membership()
        .clone();
    assert!(voters.get_node(&2).is_none(), "node 2 was added");
}

/// Serve `host`'s gRPC services on a free loopback port, as `shoal node`
/// does (`service::raft_server`, `service::shard_server`); the address.
async fn serve_grpc(host: Arc<Host>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let incoming = futures::stream::unfold(listener, |l| async move {
        Some((l.accept().await.map(|(s, _)| s), l))
    });
    let service = super::service::NodeService::new(host, u64::MAX);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(super::service::raft_server(service.clone()))
            .add_service(super::service::shard_server(service))
            .serve_with_incoming(incoming),
    );
    addr
}

async fn channel(addr: &str) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn stream_request(kind: u32, request: Vec<u8>, max_reply_len: u64) -> crate::proto::StreamRequest {
    crate::proto::StreamRequest {
        id: 1,
        group_id: GID,
        request,
        max_reply_len,
        timeout_ms: 10_000,
        kind,
    }
}

/// What a one-frame stream of `requests` to the node's `ShardService`
/// (`raft`: its `RaftService`) gets back: the replies, or the status
/// that ended it.
async fn one_frame(
    addr: &str,
    raft: bool,
    requests: Vec<crate::proto::StreamRequest>,
) -> Result<Vec<crate::proto::StreamReply>, tonic::Status> {
    use crate::proto::raft_service_client::RaftServiceClient;
    use crate::proto::shard_service_client::ShardServiceClient;
    let n = requests.len();
    let frame = crate::proto::ExecuteBatch { requests };
    // The stream stays open until every reply came (a closed request
    // side lets the node end the stream).
    let (tx, rx) = futures::channel::mpsc::channel(1);
    let mut tx = tx;
    futures::SinkExt::send(&mut tx, frame).await.unwrap();
    let ch = channel(addr).await;
    let mut replies = if raft {
        RaftServiceClient::new(ch).stream(rx).await?.into_inner()
    } else {
        ShardServiceClient::new(ch)
            .execute_stream(rx)
            .await?
            .into_inner()
    };
    let mut got = Vec::new();
    while got.len() < n {
        match replies.message().await? {
            Some(batch) => got.extend(batch.replies),
            None => break,
        }
    }
    drop(tx);
    Ok(got)
}

fn decoded(reply: &crate::proto::StreamReply) -> Result<OpReply, ShardError> {
    codec::decode(codec::Format::ShardReply, &reply.reply).unwrap()
}

/// Messages over the gRPC size limits (`shard::wire`) are refused by the
/// node before they are decoded, with `OutOfRange`, and nothing of them is
/// applied, even though this node's own limits would take the value; the
/// node goes on serving. A message just under a limit is served.
#[tokio::test]
async fn messages_over_the_grpc_limits_are_refused_before_decoding() {
    use super::wire;
    use crate::proto::raft_service_client::RaftServiceClient;
    use crate::proto::shard_service_client::ShardServiceClient;
    use crate::proto::{ExecuteRequest, RaftMessage};
    let dir = tempfile::tempdir().unwrap();
    // Values of any size are admitted here: only the message limit stands
    // between a huge SET and the log.
    let limits = Limits {
        max_value_len: u64::MAX,
        ..Limits::default()
    };
    let host = host_with(dir.path(), limits).await;
    let addr = serve_grpc(host.clone()).await;
    let set_of = |key: &str, len: usize| {
        let op = WriteOp::Set {
            key: b(key),
            value: Bytes::from(vec![b'v'; len]),
            expiry: Expiry::Clear,
            cond: SetCond::Always,
            get: false,
        };
        codec::encode(codec::Format::ShardRequest, &write(op)).unwrap()
    };
    let too_large = |status: &tonic::Status| {
        matches!(
            status.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        )
    };

    // The router's stream: one frame over SHARD_FRAME_MAX.
    let huge = set_of("huge", wire::SHARD_FRAME_MAX + 1);
    let err = one_frame(&addr, false, vec![stream_request(0, huge.clone(), 0)])
        .await
        .unwrap_err();
    assert!(too_large(&err), "{err:?}");
    // Unary Execute: the same.
    let err = ShardServiceClient::new(channel(&addr).await)
        .execute(ExecuteRequest {
            group_id: GID,
            request: huge,
            max_reply_len: 0,
        })
        .await
        .unwrap_err();
    assert!(too_large(&err), "{err:?}");
    assert_eq!(
        host.execute(GID, read(ReadOp::StrLen { key: b("huge") }))
            .await
            .unwrap(),
        OpReply::Int(0),
        "a refused message was applied"
    );

    // RaftService: an AppendEntries over RAFT_FRAME_MAX, on the stream and
    // unary; a snapshot chunk over its size, under the service's limit.
    let junk = vec![0u8; wire::RAFT_FRAME_MAX + 1];
    let err = one_frame(&addr, true, vec![stream_request(1, junk.clone(), 0)])
        .await
        .unwrap_err();
    assert!(too_large(&err), "{err:?}");
    let mut raft = RaftServiceClient::new(channel(&addr).await);
    let err = raft
        .append_entries(RaftMessage {
            group_id: GID,
            payload: junk,
        })
        .await
        .unwrap_err();
    assert!(too_large(&err), "{err:?}");
    let err = raft
        .install_snapshot(RaftMessage {
            group_id: GID,
            payload: vec![0u8; wire::MAX_SNAPSHOT_MESSAGE + 1],
        })
        .await
        .unwrap_err();
    assert!(too_large(&err), "{err:?}");
    assert!(err.message().contains("snapshot chunk"), "{err:?}");
    // Under the limit, the same junk is read and refused as junk.
    let err = raft
        .append_entries(RaftMessage {
            group_id: GID,
            payload: vec![0u8; 1024],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // The node goes on serving, a value of several MiB included.
    let big = 8 << 20;
    let replies = one_frame(&addr, false, vec![stream_request(0, set_of("big", big), 0)])
        .await
        .unwrap();
    assert_eq!(decoded(&replies[0]), Ok(OpReply::Ok));
    assert_eq!(
        host.execute(GID, read(ReadOp::StrLen { key: b("big") }))
            .await
            .unwrap(),
        OpReply::Int(big as i64)
    );
}

/// A reply longer than the router takes (its `max_reply_len`) is replaced
/// by an error saying so, and a write it answers is applied: the router
/// would otherwise refuse the whole reply frame.
#[tokio::test]
async fn a_reply_over_the_callers_limit_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with(dir.path(), Limits::default()).await;
    let addr = serve_grpc(host.clone()).await;
    let old = 2 << 20;
    host.execute(
        GID,
        write(WriteOp::Set {
            key: b("k"),
            value: Bytes::from(vec![b'o'; old]),
            expiry: Expiry::Clear,
            cond: SetCond::Always,
            get: false,
        }),
    )
    .await
    .unwrap();
    // SET k new GET: the reply is the 2 MiB old value.
    let set_get = codec::encode(
        codec::Format::ShardRequest,
        &write(WriteOp::Set {
            key: b("k"),
            value: b("new"),
            expiry: Expiry::Clear,
            cond: SetCond::Always,
            get: true,
        }),
    )
    .unwrap();
    let replies = one_frame(&addr, false, vec![stream_request(0, set_get, 1 << 20)])
        .await
        .unwrap();
    match decoded(&replies[0]) {
        Ok(OpReply::Error(e)) => {
            assert!(e.starts_with("ERR reply too large"), "{e}");
            assert!(e.contains("a write it answers was applied"), "{e}");
        }
        other => panic!("not refused: {:.200}", format!("{other:?}")),
    }
    assert_eq!(
        host.execute(GID, read(ReadOp::Get { key: b("k") }))
            .await
            .unwrap(),
        OpReply::Bulk(b("new"))
    );
}
