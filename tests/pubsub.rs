//! Pub/Sub across the cluster: the replies and pushes of SUBSCRIBE,
//! PSUBSCRIBE, SSUBSCRIBE, their UNSUBSCRIBEs, PUBLISH, SPUBLISH and PUBSUB,
//! byte for byte against a real `redis-server` in RESP2 and RESP3, with the
//! subscriber on one router and the publisher on another.

mod common;

use std::time::Duration;

use common::{cluster, extra_router, show, split, Conn, RedisServer};

/// `(connection, command, replies to read)`: connection `A` subscribes,
/// `B` publishes; an empty command only reads.
const SCRIPT: &[(char, &str, usize)] = &[
    ('A', "UNSUBSCRIBE", 1),
    ('A', "PUNSUBSCRIBE", 1),
    ('A', "SUNSUBSCRIBE", 1),
    ('A', "SUBSCRIBE", 1),
    ('B', "PUBLISH c1", 1),
    ('B', "PUBLISH c1 nobody", 1),
    ('A', "SUBSCRIBE c1 c2 c1", 3),
    ('A', "GET k", 1),
    ('A', "PING", 1),
    ('A', "PING hi", 1),
    ('B', "PUBLISH c1 hello", 1),
    ('A', "", 1),
    // PUBLISH and SPUBLISH queued inside MULTI.
    ('B', "MULTI", 1),
    ('B', "PUBLISH c1 queued", 1),
    ('B', "SPUBLISH c1 nobody", 1),
    ('B', "SET k v", 1),
    ('B', "EXEC", 1),
    ('A', "", 1),
    ('B', "DEL k", 1),
    ('A', "PSUBSCRIBE c* x?", 2),
    ('B', "PUBLISH c2 both", 1),
    ('A', "", 2),
    ('B', "PUBLISH cz pattern", 1),
    ('A', "", 1),
    ('B', "PUBLISH nochannel x", 1),
    ('B', "PUBSUB NUMSUB c1 c2 c3", 1),
    ('B', "PUBSUB NUMPAT", 1),
    ('B', "PUBSUB CHANNELS c1", 1),
    ('B', "PUBSUB CHANNELS nomatch*", 1),
    ('B', "PUBSUB NOSUCH", 1),
    ('B', "PUBSUB NUMPAT x", 1),
    ('B', "PUBSUB CHANNELS a b", 1),
    ('A', "UNSUBSCRIBE c1", 1),
    ('A', "UNSUBSCRIBE c1", 1),
    ('B', "PUBLISH c1 gone", 1),
    ('A', "", 1),
    ('A', "PUNSUBSCRIBE x?", 1),
    ('A', "PUNSUBSCRIBE", 1),
    ('A', "UNSUBSCRIBE", 1),
    ('A', "UNSUBSCRIBE", 1),
    ('A', "GET k", 1),
    ('A', "SSUBSCRIBE s1", 1),
    ('B', "SPUBLISH s1 sharded", 1),
    ('A', "", 1),
    ('B', "PUBLISH s1 plain", 1),
    ('B', "PUBSUB SHARDNUMSUB s1 s2", 1),
    ('B', "PUBSUB SHARDCHANNELS", 1),
    ('A', "SUNSUBSCRIBE s1", 1),
    ('A', "SUBSCRIBE c9", 1),
    ('A', "RESET", 1),
    ('A', "GET k", 1),
    ('B', "CONFIG GET client-output-buffer-limit", 1),
    // Channel rules (ACL): a channel must match a pattern of the user's, a
    // PSUBSCRIBE pattern must equal one.
    (
        'B',
        "ACL SETUSER ps on nopass +@all ~* resetchannels &allowed*",
        1,
    ),
    ('B', "AUTH ps x", 1),
    ('B', "PUBLISH other x", 1),
    ('B', "PUBLISH allowed1 x", 1),
    ('B', "SPUBLISH other x", 1),
    ('B', "SUBSCRIBE allowed1 other", 1),
    ('B', "PSUBSCRIBE allow*", 1),
    ('B', "AUTH default x", 1),
    ('B', "ACL DELUSER ps", 1),
];

fn step(c: &mut Conn, line: &str, n: usize) -> Vec<u8> {
    if !line.is_empty() {
        let parts = split(line);
        let refs: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
        c.send(&refs);
    }
    let mut out = Vec::new();
    for _ in 0..n {
        match c.read_reply() {
            Some(r) => out.extend(r),
            None => panic!(
                "no reply from {} to {line:?} after {}",
                c.stream.peer_addr().unwrap(),
                show(&out)
            ),
        }
    }
    out
}

fn run(s: &mut [Conn; 2], r: &mut [Conn; 2]) -> Vec<String> {
    let mut diffs = Vec::new();
    for (who, line, n) in SCRIPT {
        let i = usize::from(*who == 'B');
        let a = step(&mut s[i], line, *n);
        let b = step(&mut r[i], line, *n);
        if a != b {
            diffs.push(format!(
                "{who}: {line}\n    shoal: {}\n    redis: {}",
                show(&a),
                show(&b)
            ));
        }
    }
    diffs
}

#[test]
fn replies_match_redis_across_two_routers() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let cl = cluster(&dir.path().join("cluster"), 1, 2, 1);
    let (b, _router_b) = extra_router(&cl, &dir.path().join("router-b"), "", &[]);
    let mut s = [Conn::connect(&cl.router_addr()), Conn::connect(&b)];
    let mut r = [Conn::connect(&redis.addr), Conn::connect(&redis.addr)];
    let mut diffs = run(&mut s, &mut r);
    for (i, c) in s.iter_mut().chain(r.iter_mut()).enumerate() {
        let hello = c.line("HELLO 3");
        assert!(hello.starts_with(b"%"), "conn {i}: {}", show(&hello));
    }
    diffs.extend(run(&mut s, &mut r));
    assert!(
        diffs.is_empty(),
        "replies differ from Redis:\n{}",
        diffs.join("\n")
    );
    // Redis Cluster's rule: SSUBSCRIBE's channels share a slot.
    let mut c = Conn::connect(&b);
    assert_eq!(
        c.line("SSUBSCRIBE a b"),
        b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    assert_eq!(
        c.line("SSUBSCRIBE {x}a {x}b"),
        b"*3\r\n$10\r\nssubscribe\r\n$4\r\n{x}a\r\n:1\r\n"
    );
    // QUIT is allowed in RESP2 subscribed mode, and closes.
    let mut q = Conn::connect(&b);
    q.line("SUBSCRIBE c");
    assert_eq!(q.line("QUIT"), b"+OK\r\n");
    assert!(q.is_closed(Duration::from_secs(5)));
}

/// redis-py (`tests/redis_compat/py/pubsub.py`): subscribers on two
/// routers, a publisher on a third; 10,000 messages; the first subscriber's
/// router is killed half way.
#[test]
fn redis_py_subscribers_across_routers_and_a_killed_router() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let cl = cluster(&dir.path().join("cluster"), 1, 2, 1);
    let (a1, mut router_a1) = extra_router(&cl, &dir.path().join("router-a1"), "", &[]);
    let (a2, _router_a2) = extra_router(&cl, &dir.path().join("router-a2"), "", &[]);
    let p = cl.router_addr();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/redis_compat/py/pubsub.py");
    let mut child = Command::new("/usr/bin/python3")
        .arg(script)
        .args([&a1, &a2, &p, "10000"])
        .env_remove("LD_LIBRARY_PATH")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    if line.trim() == "HALF" {
        router_a1.sigkill().unwrap();
        writeln!(child.stdin.as_mut().unwrap()).unwrap();
        line.clear();
        out.read_line(&mut line).unwrap();
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(
        status.success() && line.trim() == "ok",
        "pubsub.py: {status}, stdout {line:?}\n{err}"
    );
    eprintln!("pubsub.py: {}", err.trim());
}

/// The redis crate's PubSub: SUBSCRIBE and PSUBSCRIBE on one router, PUBLISH
/// from another.
#[test]
fn redis_crate_pubsub() {
    let dir = tempfile::tempdir().unwrap();
    let cl = cluster(&dir.path().join("cluster"), 1, 2, 1);
    let (b, _router_b) = extra_router(&cl, &dir.path().join("router-b"), "", &[]);
    let client = redis::Client::open(format!("redis://{}", cl.router_addr())).unwrap();
    let mut con = client.get_connection().unwrap();
    let mut ps = con.as_pubsub();
    ps.subscribe("news").unwrap();
    ps.psubscribe("n*").unwrap();
    ps.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut publisher = common::connect(&b);
    let n: i64 = redis::cmd("PUBLISH")
        .arg("news")
        .arg("hello")
        .query(&mut publisher)
        .unwrap();
    assert_eq!(n, 2);
    let m = ps.get_message().unwrap();
    assert_eq!(m.get_channel_name(), "news");
    assert_eq!(m.get_payload::<String>().unwrap(), "hello");
    let m = ps.get_message().unwrap();
    assert_eq!(m.get_pattern::<String>().unwrap(), "n*");
    assert_eq!(m.get_payload::<String>().unwrap(), "hello");
}

/// A subscriber that does not read is disconnected once its messages pass
/// `client-output-buffer-limit pubsub`; the others keep receiving.
#[test]
fn a_slow_subscriber_is_disconnected_at_the_output_limit() {
    let dir = tempfile::tempdir().unwrap();
    let cl = cluster(&dir.path().join("cluster"), 1, 1, 1);
    let a = cl.router_addr();
    let mut admin = Conn::connect(&a);
    assert_eq!(
        admin.line("CONFIG SET client-output-buffer-limit nosuch"),
        b"-ERR CONFIG SET failed (possibly related to argument 'client-output-buffer-limit') - Wrong number of arguments in buffer limit configuration.\r\n"
    );
    let set = common::encode(&[
        b"CONFIG",
        b"SET",
        b"client-output-buffer-limit",
        b"pubsub 1mb 0 0",
    ]);
    admin.send_raw(&set);
    assert_eq!(admin.read_reply().unwrap(), b"+OK\r\n");
    let got = admin.line("CONFIG GET client-output-buffer-limit");
    assert!(show(&got).contains("pubsub 1048576 0 0"), "{}", show(&got));
    let mut slow = Conn::connect(&a);
    slow.line("SUBSCRIBE big");
    let mut fast = Conn::connect(&a);
    fast.line("SUBSCRIBE big");
    let payload = vec![b'x'; 10_000];
    let mut publisher = Conn::connect(&a);
    for _ in 0..2_000 {
        publisher.send(&[b"PUBLISH", b"big", &payload]);
        assert!(publisher.read_reply().unwrap().starts_with(b":"));
        fast.read_reply()
            .expect("the reading subscriber keeps receiving");
    }
    assert!(
        slow.is_closed(Duration::from_secs(10)),
        "a subscriber 20 MB behind is still connected"
    );
}

/// Subscribers outlive failovers: with each node of a three-node shard
/// killed in turn (so its leader is killed at least once), the router
/// registers again with the new leader and the same connection receives
/// what is published afterwards.
#[test]
fn subscribers_keep_receiving_across_leader_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cl = cluster(&dir.path().join("cluster"), 3, 1, 3);
    let (b, _router_b) = extra_router(&cl, &dir.path().join("router-b"), "", &[]);
    let mut sub = Conn::connect(&cl.router_addr());
    sub.line("SUBSCRIBE feed");
    sub.stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    for id in 1..=3u64 {
        cl.kill_node(id).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let want = format!("after-kill-{id}");
        let mut received = false;
        while std::time::Instant::now() < deadline && !received {
            // A fresh connection each time: a publish during the failover
            // may wait for its own timeout.
            let mut publisher = Conn::connect(&b);
            publisher.send(&[b"PUBLISH", b"feed", want.as_bytes()]);
            let _ = publisher.read_reply();
            while let Some(m) = sub.read_reply() {
                if show(&m).contains(&want) {
                    received = true;
                    break;
                }
            }
        }
        assert!(received, "no message after node {id} was killed");
        cl.start_node(id).unwrap();
    }
}
