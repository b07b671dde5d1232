//! Large values against the bounded gRPC message sizes (`shard::wire`),
//! with real etcd, three `shoal node` processes and a router:
//!
//! * a 16 MiB SET (the default largest value) and a MULTI of three such
//!   values in one shard (one Raft entry of about 48 MiB) reach every
//!   replica;
//! * a follower stopped while about 144 MiB of such writes commit catches
//!   up when it comes back: no AppendEntries may pass the RaftService limit
//!   (about 67 MiB), so the leader must split what it sends (mutation check:
//!   without the split the follower never catches up);
//! * a MULTI whose one shard request would pass the request limit is
//!   refused by the router with an error, and applies nothing.

use std::time::{Duration, Instant};

use shoal::devcluster::{ClusterOpts, LocalCluster};
use shoal::meta::etcd::Meta;
use shoal::proto::shard_service_client::ShardServiceClient;
use shoal::proto::ExecuteRequest;
use shoal::shard::codec::{self, Format};
use shoal::shard::command::{OpReply, ReadOp, ShardRequest};
use shoal::shard::ShardError;

const MIB: usize = 1 << 20;

/// STRLEN of `key` read on `node`'s own replica of `gid` (a READONLY read,
/// which any replica answers from what it has applied).
fn strlen_on(rt: &tokio::runtime::Runtime, addr: &str, gid: u64, key: &str) -> Result<i64, String> {
    let req = ShardRequest::Read {
        op: ReadOp::StrLen {
            key: bytes::Bytes::copy_from_slice(key.as_bytes()),
        },
        linearizable: false,
        now_ms: 0,
    };
    let addr = format!("http://{addr}");
    rt.block_on(async move {
        let mut client = ShardServiceClient::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let reply = client
            .execute(ExecuteRequest {
                group_id: gid,
                request: codec::encode(Format::ShardRequest, &req).unwrap(),
                max_reply_len: 0,
            })
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        match codec::decode::<Result<OpReply, ShardError>>(Format::ShardReply, &reply.reply) {
            Ok(Ok(OpReply::Int(n))) => Ok(n),
            other => Err(format!("{other:?}")),
        }
    })
}

fn value(len: usize, fill: u8) -> Vec<u8> {
    vec![fill; len]
}

#[test]
fn big_values_replicate_and_a_follower_catches_up_through_split_appends() {
    big_values_replicate("openraft");
}

/// The same on the batch engine, whose loop sends a 16 MiB entry as one
/// message of its own and catches the follower up entry by entry.
#[test]
fn batch_big_values_replicate_and_a_follower_catches_up() {
    big_values_replicate("batch");
}

fn big_values_replicate(engine: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = ClusterOpts::new(env!("CARGO_BIN_EXE_shoal"), tmp.path());
    opts.nodes = 3;
    opts.default_shards = 1;
    opts.default_replicas = 3;
    // openraft gives one AppendEntries a heartbeat interval to be
    // sent, written and answered; a debug build on a shared machine needs
    // more than the default 250 ms for a 48 MiB entry, and more than the
    // default 3 s to commit it. The batch loop heartbeats nothing while it
    // encodes, writes and applies such an entry (a debug build takes
    // seconds): with its default 500 ms election timeout the followers
    // stand again and again, and each new leader replaces the entry.
    let node_conf = tmp.path().join("node-test.toml");
    std::fs::write(
        &node_conf,
        "heartbeat_ms = 2000\nelection_timeout_min_ms = 6000\nelection_timeout_max_ms = 9000\n\
         batch_heartbeat_ms = 2000\nbatch_election_timeout_ms = 6000\n\
         write_timeout_ms = 30000\n",
    )
    .unwrap();
    opts.node_args = vec!["--config".into(), node_conf.display().to_string()];
    let router_conf = tmp.path().join("router-test.toml");
    std::fs::write(
        &router_conf,
        format!("request_timeout_ms = 60000\ndefault_engine = \"{engine}\"\n"),
    )
    .unwrap();
    opts.router_args = vec!["--config".into(), router_conf.display().to_string()];
    let mut cluster = LocalCluster::start(opts).expect("cluster starts");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let gid = rt.block_on(async {
        let meta = Meta::connect(&[cluster.etcd_url()], "default")
            .await
            .unwrap();
        let (table, _) = meta.get_table("default").await.unwrap().unwrap();
        table.shards[0].group_id
    });
    let client = redis::Client::open(format!("redis://{}/", cluster.router_addr())).unwrap();
    let connect = || {
        let con = client.get_connection().unwrap();
        con.set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        con
    };
    let mut con = connect();

    // MULTI, n SETs of 16 MiB in one shard (a hash tag), EXEC.
    let multi = |con: &mut redis::Connection, prefix: &str, n: usize| -> Result<(), String> {
        let q = |con: &mut redis::Connection, cmd: &redis::Cmd| {
            cmd.query::<redis::Value>(con).map_err(|e| e.to_string())
        };
        q(con, &redis::cmd("MULTI"))?;
        for i in 0..n {
            let mut set = redis::cmd("SET");
            set.arg(format!("{{{prefix}}}{i}"))
                .arg(value(16 * MIB, b'b'));
            q(con, &set)?;
        }
        match q(con, &redis::cmd("EXEC"))? {
            redis::Value::Array(replies) if replies.iter().all(|r| *r == redis::Value::Okay) => {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    };
    let set = |con: &mut redis::Connection, key: &str| {
        redis::cmd("SET")
            .arg(key)
            .arg(value(16 * MIB, b'a'))
            .query::<()>(con)
            .map_err(|e| e.to_string())
    };
    // Every write here is idempotent: sent again while its outcome is
    // unknown (a busy machine, a new leader after a node stopped).
    let mut until_ok =
        |what: &str, f: &mut dyn FnMut(&mut redis::Connection) -> Result<(), String>| {
            let deadline = Instant::now() + Duration::from_secs(120);
            while let Err(e) = f(&mut con) {
                assert!(Instant::now() < deadline, "{what}: {e}");
                eprintln!("{what}: {e}; again");
                std::thread::sleep(Duration::from_millis(500));
                con = connect();
            }
        };

    // The largest value, and a MULTI whose one entry holds three of them.
    until_ok("SET v16", &mut |c| set(c, "v16"));
    until_ok("MULTI m", &mut |c| multi(c, "m", 3));

    // A follower misses about 144 MiB: six values and another MULTI.
    let down = 3;
    cluster.stop_node(down).unwrap();
    let mut written = Vec::new();
    for i in 0..6 {
        let key = format!("late{i}");
        until_ok(&key, &mut |c| set(c, &key));
        written.push(key);
    }
    until_ok("MULTI late-m", &mut |c| multi(c, "late-m", 3));
    written.extend((0..3).map(|i| format!("{{late-m}}{i}")));

    // Over the request limit: refused by the router, nothing applied.
    let err = multi(&mut con, "over", 5).unwrap_err();
    assert!(err.contains("request too large"), "{err}");

    cluster.start_node(down).unwrap();
    let started = Instant::now();
    let addr = cluster.node_addr(down);
    let mut all = vec!["v16".to_string()];
    all.extend((0..3).map(|i| format!("{{m}}{i}")));
    all.extend(written);
    for key in &all {
        loop {
            match strlen_on(&rt, &addr, gid, key) {
                Ok(n) if n == (16 * MIB) as i64 => break,
                other if started.elapsed() > Duration::from_secs(120) => {
                    panic!(
                        "node {down} never caught up on {key}: {other:?}\n{}",
                        cluster.logs()
                    )
                }
                _ => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }
    eprintln!("node {down} caught up in {:?}", started.elapsed());
    // Every replica has every value; the refused transaction is nowhere.
    for node in 1..=3u64 {
        let addr = cluster.node_addr(node);
        for key in &all {
            assert_eq!(
                strlen_on(&rt, &addr, gid, key),
                Ok((16 * MIB) as i64),
                "{key} on node {node}"
            );
        }
        assert_eq!(strlen_on(&rt, &addr, gid, "{over}0"), Ok(0));
    }
    // The leader did split: the transport logs each AppendEntries it sends
    // in parts.
    let logs = cluster.logs();
    let splits = logs
        .lines()
        .filter(|l| l.contains("AppendEntries over the wire budget: sent in parts"))
        .count();
    eprintln!("{splits} log lines of split appends");
    // (openraft's transport splits; raft-rs sends each entry over the
    // budget alone, `batch::wire`.)
    if engine == "openraft" {
        assert!(splits > 0, "no append was split:\n{logs}");
    }
    cluster.shutdown();
}
