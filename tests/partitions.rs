//! Network partitions (issue #6) through the local cluster's cuttable links
//! (`ClusterOpts::links`): every node→node and router→node connection runs
//! through a proxy the test cuts and heals. A shard leader cut off from the
//! other nodes loses its shard to the majority; a router that can only reach
//! the old leader gets errors, never the value from before the partition
//! (no split brain, no stale linearizable read); after the heal the old
//! leader has the majority's write. A leader cut off from its peers but not
//! from the routers does not hold its shard hostage: it refuses requests
//! once it has not heard from a majority for a lease, so routers move on;
//! the write it took before that answers that its outcome is unknown.
//! A leader paused (SIGSTOP) past the election timeout and resumed still
//! cut off from its peers believes it leads, and its published metrics look
//! fresh: its leader lease has run out all the same, so it answers no read
//! with the value from before the pause.

mod common;

use std::time::{Duration, Instant};

use common::{connect, run};
use redis::Value as RedisValue;
use shoal::devcluster::links::node_endpoint;
use shoal::devcluster::{ClusterOpts, LocalCluster};
use shoal_chaos::faults::{key_in, parse_describe, ShardInfo};
use shoal_chaos::resp::Conn;

fn shards(router: &str) -> Vec<ShardInfo> {
    let mut c = Conn::connect(router, Duration::from_secs(10)).unwrap();
    parse_describe(&c.call(&["TABLE.DESCRIBE", "default"]).unwrap()).unwrap()
}

fn text(v: &redis::RedisResult<RedisValue>) -> Option<String> {
    match v {
        Ok(RedisValue::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        Ok(RedisValue::SimpleString(s)) => Some(s.clone()),
        Ok(RedisValue::Okay) => Some("OK".into()),
        _ => None,
    }
}

fn linked_cluster(dir: &tempfile::TempDir) -> LocalCluster {
    let mut opts = ClusterOpts::new(env!("CARGO_BIN_EXE_shoal"), dir.path());
    opts.default_shards = 2;
    opts.links = true;
    opts.node_args = vec!["--log-level".into(), "warn".into()];
    LocalCluster::start(opts).expect("cluster starts")
}

fn led_shard(router: &str) -> ShardInfo {
    let mut shard = None;
    assert!(common::wait_until(Duration::from_secs(30), || {
        shard = shards(router).into_iter().find(|s| s.leader.is_some());
        shard.is_some()
    }));
    shard.unwrap()
}

#[test]
fn an_isolated_leader_loses_its_shard_and_serves_no_stale_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = linked_cluster(&dir);
    let majority_router = cluster.router_addr();
    let minority_router = cluster.add_router().expect("second router");
    assert_eq!(cluster.router_name(1), Some("router-2"));

    let shard = led_shard(&majority_router);
    let old = shard.leader.unwrap();
    let others: Vec<u64> = shard
        .replicas
        .iter()
        .copied()
        .filter(|&n| n != old)
        .collect();
    let key = key_in(shard.slots, "partition");
    let mut m = connect(&majority_router);
    assert_eq!(
        text(&run(&mut m, &["SET", &key, "before"])).as_deref(),
        Some("OK")
    );

    // Old leader | other nodes; router-2 on the old leader's side, router
    // on the majority's.
    let links = cluster.links().expect("started with links");
    links.cut(&node_endpoint(old), "router");
    for &n in &others {
        links.cut(&node_endpoint(old), &node_endpoint(n));
        links.cut("router-2", &node_endpoint(n));
    }
    let cut_at = Instant::now();
    let mut writes = 0;
    assert!(
        common::wait_until(Duration::from_secs(40), || {
            writes += 1;
            text(&run(&mut m, &["SET", &key, "after"])).as_deref() == Some("OK")
        }),
        "the majority never took a write for group {} after its leader {old} was cut off:\n{}",
        shard.group,
        cluster.logs()
    );
    println!(
        "majority took a write {} ms after the cut ({writes} tries)",
        cut_at.elapsed().as_millis()
    );
    assert_eq!(text(&run(&mut m, &["GET", &key])).as_deref(), Some("after"));

    // Through router-2 only the old leader is reachable: it must not answer
    // a linearizable read (it would be "before": stale) nor take a write.
    let mut s = connect(&minority_router);
    let t = Instant::now();
    let read = run(&mut s, &["GET", &key]);
    assert!(
        read.is_err(),
        "old leader {old} answered a linearizable GET across the partition: {read:?}"
    );
    println!(
        "minority GET failed after {} ms: {read:?}",
        t.elapsed().as_millis()
    );
    // A pipeline of reads goes another way (all its reads queued at once,
    // each first to the cached leader): the same rule holds for it.
    let piped: redis::RedisResult<Vec<RedisValue>> = redis::pipe()
        .cmd("GET")
        .arg(&key)
        .cmd("GET")
        .arg(&key)
        .query(&mut s);
    assert!(
        piped.is_err(),
        "old leader {old} answered pipelined GETs across the partition: {piped:?}"
    );
    let piped: Vec<Option<String>> = redis::pipe()
        .cmd("GET")
        .arg(&key)
        .cmd("GET")
        .arg(&key)
        .query(&mut m)
        .expect("the majority answers pipelined GETs");
    assert_eq!(
        piped,
        [Some("after".to_string()), Some("after".to_string())]
    );
    let write = run(&mut s, &["SET", &key, "minority"]);
    assert!(write.is_err(), "the minority took a write: {write:?}");

    links.heal();
    let mut seen = None;
    assert!(
        common::wait_until(Duration::from_secs(30), || {
            seen = text(&run(&mut s, &["GET", &key]));
            seen.is_some()
        }),
        "router-2 cannot read after the heal"
    );
    // The minority's SET answered an error, which means "outcome unknown",
    // not "not applied": router-2 may have sent it towards the majority
    // through a cut link, and the cut holds those bytes and delivers them
    // after the heal, as TCP retransmission would. So it may still apply
    // then. The value from before the partition must never come back.
    let healed = seen.unwrap();
    assert!(
        healed == "after" || healed == "minority",
        "a stale value survived the partition: {healed:?}"
    );

    // The old leader caught up: with router-2 reaching only it again, an
    // eventual (READONLY) read returns the healed value.
    for &n in &others {
        links.cut("router-2", &node_endpoint(n));
    }
    let mut r = connect(&minority_router);
    assert_eq!(text(&run(&mut r, &["READONLY"])).as_deref(), Some("OK"));
    let (mut last, mut now) = (None, None);
    assert!(
        common::wait_until(Duration::from_secs(30), || {
            last = text(&run(&mut r, &["GET", &key]));
            now = text(&run(&mut m, &["GET", &key]));
            last.is_some() && last == now
        }),
        "old leader {old} did not catch up after the heal: READONLY GET says {last:?}, \
         a linearizable GET {now:?}"
    );
    links.heal();
    cluster.shutdown();
}

#[test]
fn a_leader_cut_from_its_peers_but_not_from_routers_gives_way() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = linked_cluster(&dir);
    let router = cluster.router_addr();
    let shard = led_shard(&router);
    let old = shard.leader.unwrap();
    let key = key_in(shard.slots, "peers-cut");
    let mut c = connect(&router);
    // The router now caches `old` as the group's leader.
    assert_eq!(
        text(&run(&mut c, &["SET", &key, "before"])).as_deref(),
        Some("OK")
    );

    let links = cluster.links().expect("started with links");
    for &n in shard.replicas.iter().filter(|&&n| n != old) {
        links.cut(&node_endpoint(old), &node_endpoint(n));
    }
    let cut_at = Instant::now();
    // The leader still holds its lease, so it takes the first write and
    // cannot commit it: the client is told the outcome is unknown (the
    // write sits in the old leader's log and could commit after a heal).
    let first = run(&mut c, &["SET", &key, "after"]);
    let err = first
        .as_ref()
        .expect_err("a cut-off leader committed a write");
    assert_eq!(err.code(), Some("CLUSTERDOWN"), "{err}");
    assert!(
        err.to_string().contains("may or may not have been applied"),
        "a timed-out write must say its outcome is unknown: {err}"
    );
    let mut replies = vec![format!("{:>6} ms {first:?}", cut_at.elapsed().as_millis())];
    let took = common::wait_until(Duration::from_secs(30), || {
        let r = run(&mut c, &["SET", &key, "after"]);
        let ok = text(&r).as_deref() == Some("OK");
        replies.push(format!("{:>6} ms {r:?}", cut_at.elapsed().as_millis()));
        ok
    });
    println!("replies after the cut:\n{}", replies.join("\n"));
    assert!(
        took,
        "the router kept sending group {}'s writes to its cut-off leader {old}:\n{}",
        shard.group,
        replies.join("\n")
    );
    assert_eq!(text(&run(&mut c, &["GET", &key])).as_deref(), Some("after"));
    links.heal();
    assert_eq!(text(&run(&mut c, &["GET", &key])).as_deref(), Some("after"));
}

#[test]
fn a_leader_paused_past_the_election_timeout_serves_no_stale_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = linked_cluster(&dir);
    let router = cluster.router_addr();
    let stale_router = cluster.add_router().expect("second router");
    let shard = led_shard(&router);
    let old = shard.leader.unwrap();
    let others: Vec<u64> = shard
        .replicas
        .iter()
        .copied()
        .filter(|&n| n != old)
        .collect();
    let key = key_in(shard.slots, "paused");
    let mut m = connect(&router);
    assert_eq!(
        text(&run(&mut m, &["SET", &key, "before"])).as_deref(),
        Some("OK")
    );
    // router-2 learns `old` as the leader (and, reaching only it below,
    // keeps sending it the group's reads).
    let mut s = connect(&stale_router);
    assert_eq!(
        text(&run(&mut s, &["GET", &key])).as_deref(),
        Some("before")
    );
    let links = cluster.links().expect("started with links");
    links.cut(&node_endpoint(old), "router");
    for &n in &others {
        links.cut("router-2", &node_endpoint(n));
    }

    cluster.pause_node(old).unwrap();
    let paused_at = Instant::now();
    // Cut right after the SIGSTOP, long before any follower times out: no
    // vote request or message of a new leader waits in its sockets, so when
    // it resumes nothing tells it that it was replaced.
    let links = cluster.links().expect("started with links");
    for &n in &others {
        links.cut(&node_endpoint(old), &node_endpoint(n));
    }
    let took = common::wait_until(Duration::from_secs(40), || {
        text(&run(&mut m, &["SET", &key, "after"])).as_deref() == Some("OK")
    });
    let paused_for = paused_at.elapsed();
    if !took {
        cluster.resume_node(old).unwrap();
        panic!(
            "the others never took a write while leader {old} was paused:\n{}",
            cluster.logs()
        );
    }
    println!(
        "a new leader took the write {} ms after the SIGSTOP",
        paused_for.as_millis()
    );
    assert_eq!(text(&run(&mut m, &["GET", &key])).as_deref(), Some("after"));

    // Reads already sent to the paused leader wait in its socket, and more
    // follow right after the SIGCONT: none may answer "before". Half the
    // readers send pipelines of GETs (the router queues a pipeline's reads
    // at once, another way than a lone GET's).
    let readers: Vec<_> = (0..4)
        .map(|i| {
            let addr = stale_router.clone();
            let key = key.clone();
            std::thread::spawn(move || {
                let mut c = connect(&addr);
                let start = Instant::now();
                let mut got = Vec::new();
                while start.elapsed() < Duration::from_secs(3) {
                    if i % 2 == 0 {
                        got.push(text(&run(&mut c, &["GET", &key])));
                        continue;
                    }
                    let piped: redis::RedisResult<Vec<Option<String>>> = redis::pipe()
                        .cmd("GET")
                        .arg(&key)
                        .cmd("GET")
                        .arg(&key)
                        .cmd("GET")
                        .arg(&key)
                        .query(&mut c);
                    match piped {
                        Ok(values) => got.extend(values),
                        Err(_) => got.push(None),
                    }
                }
                got
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    cluster.resume_node(old).unwrap();
    let mut answers = Vec::new();
    for r in readers {
        answers.extend(r.join().unwrap());
    }
    let stale = answers
        .iter()
        .filter(|a| a.as_deref() == Some("before"))
        .count();
    println!(
        "{} reads through router-2 after the pause: {stale} stale, {} answered",
        answers.len(),
        answers.iter().filter(|a| a.is_some()).count()
    );
    assert_eq!(
        stale,
        0,
        "leader {old}, resumed after {} ms, answered reads with the value from before its pause",
        paused_for.as_millis()
    );

    cluster.links().expect("started with links").heal();
    assert!(
        common::wait_until(Duration::from_secs(30), || {
            text(&run(&mut s, &["GET", &key])).as_deref() == Some("after")
        }),
        "router-2 does not read the new value after the heal"
    );
    cluster.shutdown();
}
