//! The batch engine over real sockets: three nodes in one process, each
//! with its own RocksDB (fsync on), its own loop, and a listener serving
//! framed links with the node's own Raft service; their loops talk only
//! through [`StreamTransport`] and `KIND_BATCH` on the node pairs' links.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::prelude::{Entry, Message, MessageType};

use super::wire::{self, StreamTransport, WireBatch, WireError, WireMessage};
use super::{encode_command, start, BatchConfig, Handle, ShardApplier};
use crate::shard::codec::{self, Format};
use crate::shard::command::{LogCmd, OpReply, WriteCmd, WriteOp};
use crate::shard::engine::{data_key, Cf, Engine};
use crate::shard::host::{Host, HostConfig};
use crate::shard::network::Transport as Network;
use crate::shard::value::Stored;

const VOTERS: [u64; 3] = [1, 2, 3];

struct WireNode {
    host: Arc<Host>,
    handle: Handle<OpReply>,
    thread: Option<JoinHandle<()>>,
    accept: tokio::task::JoinHandle<()>,
}

impl WireNode {
    fn stop_loop(&mut self) {
        self.handle.stop();
        if let Some(t) = self.thread.take() {
            tokio::task::block_in_place(|| t.join().unwrap());
        }
    }
}

impl Drop for WireNode {
    fn drop(&mut self) {
        self.stop_loop();
        self.accept.abort();
    }
}

fn host(id: u64, dir: &std::path::Path) -> Arc<Host> {
    let engine = Arc::new(Engine::open(dir, true).unwrap());
    let config = HostConfig::from_node(&crate::config::NodeConfig::default()).unwrap();
    Host::new(id, engine, Network::new(), config)
}

/// Start `host`'s loop over the wire and open `groups` in it; logs are
/// compacted past `compact` entries, snapshots sent 256 bytes a chunk.
fn start_loop(host: &Arc<Host>, groups: &[u64], compact: u64) -> (Handle<OpReply>, JoinHandle<()>) {
    let runtime = tokio::runtime::Handle::current();
    let applier = ShardApplier::new(host.engine.clone(), runtime.clone());
    let transport = StreamTransport::new(host.transport.clone(), runtime).with_snapshot_chunk(256);
    let mut config = BatchConfig::new(host.node_id);
    config.tick = Duration::from_millis(20);
    config.compact_entries = compact;
    let (handle, thread) = start(config, host.engine.clone(), applier, transport).unwrap();
    host.set_batch(handle.clone());
    for &gid in groups {
        let rx = handle.open_group(gid, VOTERS.to_vec());
        tokio::task::block_in_place(|| rx.blocking_recv())
            .unwrap()
            .unwrap();
    }
    (handle, thread)
}

async fn cluster(dir: &std::path::Path, groups: &[u64], compact: u64) -> BTreeMap<u64, WireNode> {
    let mut listeners = BTreeMap::new();
    for id in VOTERS {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listeners.insert(id, l);
    }
    let addrs: BTreeMap<u64, String> = listeners
        .iter()
        .map(|(&id, l)| (id, l.local_addr().unwrap().to_string()))
        .collect();
    let mut nodes = BTreeMap::new();
    for (id, listener) in listeners {
        let host = host(id, &dir.join(format!("n{id}")));
        for (&peer, addr) in &addrs {
            host.transport.set_peer(peer, addr.clone());
        }
        let accept = crate::shard::service::serve_plaintext(listener, host.clone(), 1 << 30);
        let (handle, thread) = start_loop(&host, groups, compact);
        nodes.insert(
            id,
            WireNode {
                host,
                handle,
                thread: Some(thread),
                accept,
            },
        );
    }
    nodes
}

fn incr(key: &str) -> Vec<u8> {
    encode_command(&LogCmd::Write(WriteCmd {
        now_ms: 1_700_000_000_000,
        op: WriteOp::IncrBy {
            key: Bytes::copy_from_slice(key.as_bytes()),
            by: 1,
        },
    }))
    .unwrap()
}

async fn leader(nodes: &BTreeMap<u64, WireNode>, gid: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for (&id, n) in nodes {
            if n.thread.is_none() {
                continue;
            }
            if let Ok(Some(s)) = n.handle.status(gid).await {
                if s.is_leader {
                    return id;
                }
            }
        }
        assert!(Instant::now() < deadline, "group {gid} elected no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `k` of every group as stored on node `id`.
fn counters(nodes: &BTreeMap<u64, WireNode>, id: u64, groups: &[u64]) -> Vec<Option<Vec<u8>>> {
    let view = nodes[&id].host.engine.view();
    groups
        .iter()
        .map(|&gid| {
            let raw = view.get(Cf::Data, &data_key(gid, b"k")).unwrap()?;
            Some(Stored::decode(&raw).unwrap().data.to_vec())
        })
        .collect()
}

/// `n` INCRs of `k` in every group through its leader, all at once.
async fn incr_all(nodes: &BTreeMap<u64, WireNode>, groups: &[u64], n: i64, from: i64) {
    let mut pending = Vec::new();
    for &gid in groups {
        let l = leader(nodes, gid).await;
        for i in 0..n {
            pending.push((gid, from + i, nodes[&l].handle.propose(gid, incr("k"))));
        }
    }
    for (gid, want, rx) in pending {
        assert_eq!(rx.await, Ok(OpReply::Int(want)), "group {gid}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_replicate_over_the_node_pairs_links_and_a_restarted_loop_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let groups: Vec<u64> = (1..=8).collect();
    let mut nodes = cluster(dir.path(), &groups, 10_000).await;
    for &gid in &groups {
        nodes[&(gid % 3 + 1)].handle.campaign(gid);
    }
    incr_all(&nodes, &groups, 20, 1).await;
    // Every turn's messages for a peer went out together: fewer sends than
    // messages, across 8 groups.
    let stats = nodes[&1].handle.stats();
    let (sends, messages) = (
        stats.sends.load(Ordering::Relaxed),
        stats.messages.load(Ordering::Relaxed),
    );
    assert!(
        sends < messages,
        "node 1: {sends} sends for {messages} messages"
    );

    // Node 3's loop stops (its batches are then dropped on arrival): the
    // groups go on with two of three.
    nodes.get_mut(&3).unwrap().stop_loop();
    let two: BTreeMap<u64, WireNode> = nodes.split_off(&3);
    incr_all(&nodes, &groups, 5, 21).await;
    nodes.extend(two);

    // A new loop over node 3's RocksDB reads its logs back and catches up
    // through the links.
    let (handle, thread) = start_loop(&nodes[&3].host, &groups, 10_000);
    let n3 = nodes.get_mut(&3).unwrap();
    n3.handle = handle;
    n3.thread = Some(thread);
    let want: Vec<Option<Vec<u8>>> = groups.iter().map(|_| Some(b"25".to_vec())).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    for id in VOTERS {
        while counters(&nodes, id, &groups) != want {
            assert!(
                Instant::now() < deadline,
                "node {id}: {:?}",
                counters(&nodes, id, &groups)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn heartbeat(to: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgAppend);
    m.to = to;
    m.from = 1;
    m.term = 3;
    m.entries = vec![Entry {
        term: 3,
        index: 7,
        data: b"payload".to_vec(),
        ..Default::default()
    }];
    m
}

#[test]
fn a_batch_decodes_only_for_the_node_it_names() {
    let msgs = vec![(4, heartbeat(2)), (5, heartbeat(2))];
    let payloads = wire::encode(&msgs);
    assert_eq!(payloads.len(), 1);
    assert_eq!(wire::decode(&payloads[0], 2).unwrap(), msgs);
    assert_eq!(
        wire::decode(&payloads[0], 3).unwrap_err(),
        WireError::WrongNode { to: 2, me: 3 }
    );
    // A message that is not a Raft message refuses the whole batch.
    let bad = codec::encode(
        Format::BatchMessages,
        &WireBatch {
            messages: vec![
                WireMessage {
                    group: 4,
                    raft: Bytes::from(heartbeat(2).entries[0].data.clone()),
                },
                WireMessage {
                    group: 5,
                    raft: Bytes::from_static(&[0xff; 9]),
                },
            ],
        },
    )
    .unwrap();
    assert!(wire::decode(&bad, 2).is_err());
    // Bytes that are not a batch at all, and a length past the end.
    assert!(matches!(
        wire::decode(b"\x01\x1f\xff", 2),
        Err(WireError::Codec(_))
    ));
    assert!(matches!(
        wire::decode(b"\x01\x1f\xff\xff\xff\xff\x0f", 2),
        Err(WireError::Codec(_))
    ));
}

#[test]
fn a_large_turn_is_split_into_batches_in_order() {
    let big = |to| {
        let mut m = heartbeat(to);
        m.entries[0].data = vec![7; wire::BATCH_BYTES / 3 - 200];
        m
    };
    let msgs: Vec<(u64, Message)> = (1..=7).map(|gid| (gid, big(2))).collect();
    let payloads = wire::encode(&msgs);
    // Three fit under the bound, a fourth does not: 3 + 3 + 1.
    assert_eq!(payloads.len(), 3);
    let back: Vec<(u64, Message)> = payloads
        .iter()
        .flat_map(|p| wire::decode(p, 2).unwrap())
        .collect();
    assert_eq!(back, msgs);
    for p in &payloads {
        assert!(p.len() <= wire::BATCH_BYTES + 1024, "{} bytes", p.len());
    }
}

fn set(key: &str, value: &[u8]) -> Vec<u8> {
    use crate::shard::command::{Expiry, SetCond};
    encode_command(&LogCmd::Write(WriteCmd {
        now_ms: 1_700_000_000_000,
        op: WriteOp::Set {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value),
            expiry: Expiry::Clear,
            cond: SetCond::Always,
            get: false,
        },
    }))
    .unwrap()
}

/// A node whose loop was down while its leader compacted the log past it
/// gets the group's data back as a snapshot sent in many chunks over the
/// gRPC channel (not the stream), and follows the log again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_compacted_log_gets_a_chunked_snapshot_over_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let groups = [7u64];
    let mut nodes = cluster(dir.path(), &groups, 20).await;
    nodes[&1].handle.campaign(7);
    let l = leader(&nodes, 7).await;
    // About 6 KB of data: two dozen chunks of 256 bytes.
    for i in 0..30 {
        let r = nodes[&l]
            .handle
            .propose(7, set(&format!("key{i}"), &[b'v'; 200]))
            .await;
        assert_eq!(r, Ok(OpReply::Ok));
    }
    nodes.get_mut(&3).unwrap().stop_loop();
    let three = nodes.split_off(&3);
    incr_all(&nodes, &groups, 200, 1).await;
    let l = leader(&nodes, 7).await;
    let status = nodes[&l].handle.status(7).await.unwrap().unwrap();
    assert!(
        status.first_index > 31,
        "the leader kept its log from {}",
        status.first_index
    );
    nodes.extend(three);

    let (handle, thread) = start_loop(&nodes[&3].host, &groups, 20);
    let n3 = nodes.get_mut(&3).unwrap();
    n3.handle = handle;
    n3.thread = Some(thread);
    // Caught up as its loop sees it (the data is in RocksDB a moment
    // before the loop counts the install).
    let l = leader(&nodes, 7).await;
    let commit = nodes[&l].handle.status(7).await.unwrap().unwrap().commit;
    let deadline = Instant::now() + Duration::from_secs(20);
    while nodes[&3].handle.status(7).await.unwrap().unwrap().applied < commit {
        assert!(Instant::now() < deadline, "node 3 did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counters(&nodes, 3, &groups), vec![Some(b"200".to_vec())]);
    let view = nodes[&3].host.engine.view();
    for i in 0..30 {
        let raw = view
            .get(Cf::Data, &data_key(7, format!("key{i}").as_bytes()))
            .unwrap();
        let value = Stored::decode(&raw.expect("in the snapshot")).unwrap().data;
        assert_eq!(&value[..], &[b'v'; 200][..]);
    }
    let installed = nodes[&3]
        .handle
        .stats()
        .snapshots_installed
        .load(Ordering::Relaxed);
    assert!(installed >= 1);
    // And it follows the log again.
    incr_all(&nodes, &groups, 1, 201).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while counters(&nodes, 3, &groups) != vec![Some(b"201".to_vec())] {
        assert!(Instant::now() < deadline, "node 3 stopped following");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn snapshot_chunks_are_checked_and_assembled() {
    use super::wire::{Incoming, SnapshotChunk};
    use raft::prelude::{Snapshot, SnapshotMetadata};
    let data = crate::shard::snapshot::seal(b"the group's rows");
    let mut msg = Message::default();
    msg.set_msg_type(MessageType::MsgSnapshot);
    msg.to = 2;
    msg.snapshot = Some(Snapshot {
        data: Vec::new(),
        metadata: Some(SnapshotMetadata {
            index: 40,
            term: 3,
            ..Default::default()
        }),
    });
    let head = Bytes::from(protobuf::Message::write_to_bytes(&msg).unwrap());
    let chunk = |offset: usize, end: usize, data: &[u8]| {
        codec::encode(
            Format::BatchSnapshotChunk,
            &SnapshotChunk {
                id: "s1".into(),
                offset: offset as u64,
                done: end == data.len(),
                message: if offset == 0 {
                    head.clone()
                } else {
                    Bytes::new()
                },
                data: Bytes::copy_from_slice(&data[offset..end]),
            },
        )
        .unwrap()
    };
    let incoming = Incoming::default();
    // Whole, in three chunks.
    assert_eq!(
        incoming.chunk(9, 2, &chunk(0, 10, &data), 1 << 20),
        Ok(None)
    );
    assert_eq!(
        incoming.chunk(9, 2, &chunk(10, 20, &data), 1 << 20),
        Ok(None)
    );
    let whole = incoming
        .chunk(9, 2, &chunk(20, data.len(), &data), 1 << 20)
        .unwrap()
        .expect("the last chunk completes it");
    let mut want = msg.clone();
    want.snapshot.as_mut().unwrap().data = data.clone();
    assert_eq!(whole, want);
    // A chunk out of place, a damaged byte, a snapshot over the limit, one
    // for another node: refused, and the group's snapshot dropped.
    assert!(incoming
        .chunk(9, 2, &chunk(10, 20, &data), 1 << 20)
        .is_err());
    let mut damaged = data.clone();
    *damaged.last_mut().unwrap() ^= 1;
    assert_eq!(
        incoming.chunk(9, 2, &chunk(0, 10, &damaged), 1 << 20),
        Ok(None)
    );
    assert!(incoming
        .chunk(9, 2, &chunk(10, damaged.len(), &damaged), 1 << 20)
        .is_err());
    assert!(incoming
        .chunk(9, 2, &chunk(0, data.len(), &data), 8)
        .is_err());
    assert_eq!(
        incoming.chunk(9, 3, &chunk(0, data.len(), &data), 1 << 20),
        Err(WireError::WrongNode { to: 2, me: 3 })
    );
    // After all that, a clean send still goes through.
    assert!(incoming
        .chunk(9, 2, &chunk(0, data.len(), &data), 1 << 20)
        .unwrap()
        .is_some());
    // Snapshots started for more groups than the bound: the one past it is
    // refused (memory stays bounded); one that ends makes room.
    for gid in 0..super::wire::MAX_INCOMING as u64 {
        assert_eq!(
            incoming.chunk(100 + gid, 2, &chunk(0, 10, &data), 1 << 20),
            Ok(None)
        );
    }
    assert!(incoming
        .chunk(99, 2, &chunk(0, 10, &data), 1 << 20)
        .is_err());
    assert!(incoming
        .chunk(100, 2, &chunk(10, data.len(), &data), 1 << 20)
        .unwrap()
        .is_some());
    assert_eq!(
        incoming.chunk(99, 2, &chunk(0, 10, &data), 1 << 20),
        Ok(None)
    );
}
