//! Keyspace notifications (`notify-keyspace-events`), byte for byte against
//! a real `redis-server`: the same writes (every type, an expiry, a MULTI)
//! run on both, and a subscriber to `__key*__:*` on another router must
//! receive the same messages in the same order, in RESP2 and RESP3.

mod common;

use std::time::{Duration, Instant};

use common::{cluster, extra_router, show, split, Conn, RedisServer};

/// `(command, key whose shard carries the marker)`. After each command the
/// writer publishes a marker on `__keyspace@0__:<key>`: it is queued on the
/// same shard as the command's events, so every event of the command
/// arrives before it. `None` as key: wait for an "expired" event first.
const SCRIPT: &[(&str, &str)] = &[
    ("DEL {t}s {t}s2 {t}s3 {t}s4 {t}n {t}f {t}m1 {t}m2 {t}b {t}l {t}l2 {t}h {t}st {t}st2 {t}st3 {t}z {t}z2 {t}z3 {t}x {t}xl bar", "{t}"),
    // Strings.
    ("SET {t}s v", "{t}"),
    ("SET {t}s v2 EX 100", "{t}"),
    ("SETNX {t}s x", "{t}"),
    ("SET {t}s2 v NX", "{t}"),
    ("SET {t}s2 w XX GET", "{t}"),
    ("SET {t}nosuch w XX", "{t}"),
    ("SETEX {t}s3 100 v", "{t}"),
    ("INCR {t}n", "{t}"),
    ("INCRBY {t}n 5", "{t}"),
    ("DECR {t}n", "{t}"),
    ("INCRBYFLOAT {t}f 1.5", "{t}"),
    ("APPEND {t}s2 x", "{t}"),
    ("SETRANGE {t}s2 1 yy", "{t}"),
    ("SETRANGE {t}s2 1 \"\"", "{t}"),
    ("MSET {t}m1 a {t}m2 b {t}m1 c", "{t}"),
    ("MSETNX {t}m1 a {t}new b", "{t}"),
    ("GETDEL {t}m1", "{t}"),
    ("GETDEL {t}m1", "{t}"),
    ("GETEX {t}m2 PX 100000", "{t}"),
    ("GETEX {t}m2 PERSIST", "{t}"),
    ("GETEX {t}m2", "{t}"),
    ("EXPIRE {t}s 100", "{t}"),
    ("EXPIRE {t}s 100 NX", "{t}"),
    ("PERSIST {t}s", "{t}"),
    ("PERSIST {t}s", "{t}"),
    ("SETBIT {t}b 3 1", "{t}"),
    ("RENAME {t}s2 {t}s3", "{t}"),
    ("COPY {t}s3 {t}s4", "{t}"),
    ("PEXPIRE {t}s4 0", "{t}"),
    ("DEL {t}s3 {t}s4 {t}nosuch {t}s3", "{t}"),
    ("SET bar v", "bar"),
    ("DEL bar", "bar"),
    // Lists.
    ("RPUSH {t}l a b c", "{t}"),
    ("LPUSH {t}l z", "{t}"),
    ("LPUSHX {t}nosuch z", "{t}"),
    ("LPOP {t}l", "{t}"),
    ("RPOP {t}l", "{t}"),
    ("LSET {t}l 0 q", "{t}"),
    ("LINSERT {t}l BEFORE q w", "{t}"),
    ("LINSERT {t}l BEFORE nope w", "{t}"),
    ("LREM {t}l 0 w", "{t}"),
    ("LTRIM {t}l 0 0", "{t}"),
    ("LMOVE {t}l {t}l2 LEFT RIGHT", "{t}"),
    ("RPOPLPUSH {t}l2 {t}l2", "{t}"),
    ("LPOP {t}l2 5", "{t}"),
    // Hashes.
    ("HSET {t}h a 1 b 2", "{t}"),
    ("HSETNX {t}h a 1", "{t}"),
    ("HSETNX {t}h c 1", "{t}"),
    ("HINCRBY {t}h a 2", "{t}"),
    ("HINCRBYFLOAT {t}h a 0.5", "{t}"),
    ("HDEL {t}h a nope", "{t}"),
    ("HDEL {t}h b c", "{t}"),
    // Sets.
    ("SADD {t}st a b c", "{t}"),
    ("SADD {t}st a", "{t}"),
    ("SREM {t}st a", "{t}"),
    ("SMOVE {t}st {t}st2 b", "{t}"),
    ("SADD {t}st x", "{t}"),
    ("SINTERSTORE {t}st3 {t}st {t}st2", "{t}"),
    ("SUNIONSTORE {t}st3 {t}st {t}st2", "{t}"),
    ("SDIFFSTORE {t}st3 {t}nosuch {t}st2", "{t}"),
    ("SREM {t}st x", "{t}"),
    ("SPOP {t}st", "{t}"),
    ("SPOP {t}st2 3", "{t}"),
    // Sorted sets.
    ("ZADD {t}z 1 a 2 b 3 c", "{t}"),
    ("ZADD {t}z NX 1 a", "{t}"),
    ("ZADD {t}z INCR 1 a", "{t}"),
    ("ZINCRBY {t}z 1 a", "{t}"),
    ("ZREM {t}z a nope", "{t}"),
    ("ZREMRANGEBYSCORE {t}z 0 2", "{t}"),
    ("ZADD {t}z 1 a 2 b", "{t}"),
    ("ZPOPMIN {t}z", "{t}"),
    ("ZPOPMAX {t}z 5", "{t}"),
    ("ZADD {t}z 1 a 2 b", "{t}"),
    ("ZREMRANGEBYRANK {t}z 0 0", "{t}"),
    ("ZREMRANGEBYLEX {t}z - +", "{t}"),
    ("ZADD {t}z 1 a", "{t}"),
    ("ZUNIONSTORE {t}z2 1 {t}z", "{t}"),
    ("ZRANGESTORE {t}z3 {t}z 0 -1", "{t}"),
    ("ZINTERSTORE {t}z3 2 {t}z {t}nosuch", "{t}"),
    // A transaction.
    ("MULTI", ""),
    ("SET {t}x 1", ""),
    ("INCR {t}x", ""),
    ("LPUSH {t}xl a", ""),
    ("DEL {t}x", ""),
    ("EXEC", "{t}"),
    // An expiry: the node purges the key (Redis's active expiry).
    ("SET {t}e v PX 50", "{t}"),
    ("", "expired"),
];

/// Read pushes until the marker `n` arrives; the raw messages before it.
fn until_marker(sub: &mut Conn, n: usize) -> Vec<u8> {
    let marker = format!("m{n}");
    let mut out = Vec::new();
    loop {
        let m = sub
            .read_reply()
            .unwrap_or_else(|| panic!("no marker {n}; got {}", show(&out)));
        if m.windows(marker.len() + 2)
            .any(|w| w == format!("\r\n{marker}").as_bytes())
            && m.ends_with(format!("{marker}\r\n").as_bytes())
        {
            return out;
        }
        out.extend(m);
    }
}

fn publish_marker(w: &mut Conn, key: &str, n: usize) {
    let ch = format!("__keyspace@0__:{key}");
    let m = format!("m{n}");
    w.cmd(&[b"PUBLISH", ch.as_bytes(), m.as_bytes()]);
}

/// Run the script: the writer's replies and the subscriber's messages of
/// each step.
fn run(w: &mut Conn, sub: &mut Conn, marker: &mut usize) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for (line, key) in SCRIPT {
        let reply = if line.is_empty() {
            Vec::new()
        } else {
            let parts = split(line);
            let refs: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
            w.cmd(&refs)
        };
        let mut got = Vec::new();
        if *key == "expired" {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                assert!(Instant::now() < deadline, "no expired event");
                let m = sub.read_reply().expect("a message");
                let done = m.windows(7).any(|x| x == b"expired");
                got.extend(m);
                if done {
                    break;
                }
            }
            // The keyspace and the keyevent message.
            got.extend(sub.read_reply().expect("a message"));
        } else if !key.is_empty() {
            *marker += 1;
            publish_marker(w, key, *marker);
            got = until_marker(sub, *marker);
        }
        out.push((line.to_string(), reply, got));
    }
    out
}

/// Turn notifications on (`KEA`), and wait until the shoal nodes publish.
fn enable(w: &mut Conn, sub: &mut Conn, marker: &mut usize, flags: &str) {
    assert_eq!(
        w.cmd(&[
            b"CONFIG",
            b"SET",
            b"notify-keyspace-events",
            flags.as_bytes()
        ]),
        b"+OK\r\n"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "notifications never started");
        w.line("SET {t}probe 1");
        *marker += 1;
        publish_marker(w, "{t}", *marker);
        if !until_marker(sub, *marker).is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn subscriber(addr: &str, resp3: bool) -> Conn {
    let mut c = Conn::connect(addr);
    if resp3 {
        assert!(c.line("HELLO 3").starts_with(b"%"));
    }
    c.line("PSUBSCRIBE __key*__:*");
    c
}

#[test]
fn notifications_match_redis() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let cl = cluster(&dir.path().join("cluster"), 1, 3, 1);
    let (b, _router_b) = extra_router(&cl, &dir.path().join("router-b"), "", &[]);
    let mut diffs = Vec::new();
    for (round, resp3) in [false, true].into_iter().enumerate() {
        let mut marker = round * 10_000;
        let mut ws = Conn::connect(&b);
        let mut wr = Conn::connect(&redis.addr);
        let mut ss = subscriber(&cl.router_addr(), resp3);
        let mut sr = subscriber(&redis.addr, resp3);
        // Off by default: nothing is published.
        for w in [&mut ws, &mut wr] {
            assert_eq!(
                w.line("CONFIG GET notify-keyspace-events"),
                b"*2\r\n$22\r\nnotify-keyspace-events\r\n$0\r\n\r\n"
            );
        }
        // The second round adds `n` (new keys), which `A` leaves out.
        let flags = if resp3 { "KEAn" } else { "KEA" };
        enable(&mut ws, &mut ss, &mut marker, flags);
        enable(&mut wr, &mut sr, &mut marker, flags);
        for w in [&mut ws, &mut wr] {
            assert_eq!(
                w.line("CONFIG GET notify-keyspace-events"),
                b"*2\r\n$22\r\nnotify-keyspace-events\r\n$3\r\nAKE\r\n"
            );
        }
        let s = run(&mut ws, &mut ss, &mut marker);
        let r = run(&mut wr, &mut sr, &mut marker);
        for ((line, s_reply, s_msgs), (_, r_reply, r_msgs)) in s.iter().zip(&r) {
            if s_reply != r_reply || s_msgs != r_msgs {
                diffs.push(format!(
                    "resp3={resp3} {line}\n    shoal: {} {}\n    redis: {} {}",
                    show(s_reply),
                    show(s_msgs),
                    show(r_reply),
                    show(r_msgs)
                ));
            }
        }
        // Exact channels: a key's channel lives on its shard, an event's on
        // every shard; PUBLISH to them reaches the subscribers too.
        let mut got = Vec::new();
        // (On router B, where no pattern subscription brings them anyway.)
        for (w, addr) in [(&mut ws, b.clone()), (&mut wr, redis.addr.clone())] {
            let mut c = Conn::connect(&addr);
            if resp3 {
                c.line("HELLO 3");
            }
            let mut seen = c.line("SUBSCRIBE __keyspace@0__:bar __keyevent@0__:del");
            seen.extend(c.read_reply().unwrap());
            w.line("SET bar v");
            w.line("DEL bar");
            seen.extend(w.line("PUBLISH __keyevent@0__:del hello"));
            seen.extend(w.line("PUBLISH __keyspace@0__:bar hi"));
            // From two shards: compared in any order.
            let mut msgs: Vec<Vec<u8>> = (0..5).map(|_| c.read_reply().unwrap()).collect();
            msgs.sort();
            seen.extend(msgs.concat());
            got.push(seen);
        }
        if got[0] != got[1] {
            diffs.push(format!(
                "resp3={resp3} SUBSCRIBE\n    shoal: {}\n    redis: {}",
                show(&got[0]),
                show(&got[1])
            ));
        }
        for w in [&mut ws, &mut wr] {
            assert_eq!(w.line("CONFIG SET notify-keyspace-events \"\""), b"+OK\r\n");
        }
    }
    assert!(
        diffs.is_empty(),
        "notifications differ from Redis:\n{}",
        diffs.join("\n")
    );
}
