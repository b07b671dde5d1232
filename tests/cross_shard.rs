//! Multi-key commands whose keys live on different shards (one node, three
//! shards): the `*STORE` forms, BITOP, LMPOP / ZMPOP, the blocking pops,
//! BLMOVE, RENAME and COPY of every collection type. A standalone
//! redis-server has no shards, so the same script must get the same bytes
//! from both, in RESP2 and RESP3. Then what a comparison cannot show:
//! atomicity while members move between shards, a blocked client woken by
//! a push on another shard, and MULTI's refusal.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{cluster, mismatches, show, Conn, RedisServer};

const SHARDS: usize = 3;

/// The script's key names and the shard each must live on: every
/// multi-key line below names keys of at least two shards.
const PLACES: &[(&str, usize)] = &[
    ("$A", 0),
    ("$B", 1),
    ("$C", 2),
    ("$D", 2),
    ("$E", 1),
    ("$S", 1),
    ("$N1", 1),
    ("$N2", 2),
    ("$ZA", 0),
    ("$ZB", 1),
    ("$ZD", 2),
    ("$L1", 0),
    ("$L2", 1),
    ("$L3", 2),
    ("$B1", 0),
    ("$B2", 1),
    ("$BD", 2),
    ("$H", 0),
    ("$H2", 1),
    ("$H3", 2),
];

const SCRIPT: &[&str] = &[
    "FLUSHALL",
    // Sets (single-digit members: Redis keeps them sorted).
    "SADD $A 1 2 3",
    "SADD $B 2 3 4",
    "SADD $C 3 5",
    "SET $S text",
    "SINTERSTORE $D $A $B",
    "SMEMBERS $D",
    "SUNIONSTORE $D $A $B $C",
    "SMEMBERS $D",
    "SCARD $D",
    "SDIFFSTORE $D $A $B",
    "SMEMBERS $D",
    "SDIFFSTORE $D $A $N1",
    "SMEMBERS $D",
    "SINTERSTORE $D $A $N1",
    "EXISTS $D",
    "SUNIONSTORE $D $N1 $N2",
    "EXISTS $D",
    "SUNIONSTORE $D $A $S",
    "SINTERSTORE $D $N1 $S",
    "SDIFFSTORE $D $A $S",
    "SUNIONSTORE $E $A $C",
    "SUNIONSTORE $S $A $C",
    "TYPE $S",
    "SMEMBERS $S",
    "SUNIONSTORE $A $A $B",
    "SMEMBERS $A",
    "SET $S text",
    // Sorted sets (exactly representable scores).
    "ZADD $ZA 1 a 2 b",
    "ZADD $ZB 3 b 4 c",
    "ZUNIONSTORE $ZD 2 $ZA $ZB",
    "ZRANGE $ZD 0 -1 WITHSCORES",
    "ZUNIONSTORE $ZD 2 $ZA $ZB WEIGHTS 2 3 AGGREGATE MAX",
    "ZRANGE $ZD 0 -1 WITHSCORES",
    "ZINTERSTORE $ZD 2 $ZA $ZB AGGREGATE MIN",
    "ZRANGE $ZD 0 -1 WITHSCORES",
    "ZDIFFSTORE $ZD 2 $ZA $ZB",
    "ZRANGE $ZD 0 -1 WITHSCORES",
    "ZINTERSTORE $ZD 2 $ZA $N1",
    "EXISTS $ZD",
    "ZUNIONSTORE $ZD 2 $ZA $B",
    "ZRANGE $ZD 0 -1 WITHSCORES",
    "ZUNIONSTORE $ZD 2 $ZA $S",
    "ZUNIONSTORE $ZD 2 $ZA $ZB WEIGHTS 1",
    "ZUNIONSTORE $ZD 3 $ZA $ZB",
    "ZRANGESTORE $ZD $ZA 0 -1",
    "ZRANGE $ZD 0 -1 WITHSCORES",
    "ZRANGESTORE $ZD $ZB (3 +inf BYSCORE",
    "ZRANGE $ZD 0 -1 WITHSCORES",
    "ZRANGESTORE $ZD $ZB +inf -inf BYSCORE REV LIMIT 0 1",
    "ZRANGE $ZD 0 -1 WITHSCORES",
    "ZRANGESTORE $ZD $ZA [a [b BYLEX",
    "ZRANGE $ZD 0 -1 WITHSCORES",
    "ZRANGESTORE $ZD $ZA 5 10",
    "EXISTS $ZD",
    "ZRANGESTORE $ZD $S 0 -1",
    "ZRANGESTORE $ZD $N1 0 -1",
    // LMPOP / ZMPOP: the first key holding elements.
    "RPUSH $L1 a b c",
    "RPUSH $L2 d",
    "LMPOP 2 $N1 $L1 LEFT",
    "LMPOP 3 $N1 $L2 $L1 RIGHT COUNT 5",
    "LMPOP 2 $N1 $L1 RIGHT COUNT 5",
    "LMPOP 2 $N1 $N2 LEFT",
    "LMPOP 2 $S $L1 LEFT",
    "LMPOP 2 $L1 $S LEFT",
    "LRANGE $L1 0 -1",
    "ZMPOP 2 $N1 $ZA MIN",
    "ZMPOP 2 $N2 $ZB MAX COUNT 9",
    "ZMPOP 2 $N1 $N2 MIN",
    "ZMPOP 2 $S $ZA MIN",
    "EXISTS $ZB",
    // The blocking forms find something, or time out at once.
    "RPUSH $L2 x y",
    "BLPOP $N1 $L2 0.05",
    "BRPOP $N1 $L2 0.05",
    "BLPOP $N1 $L2 0.05",
    "BLPOP $N1 $S 0.05",
    "RPUSH $L1 p q",
    "BLMPOP 0.05 2 $N2 $L1 RIGHT COUNT 1",
    "BLMOVE $L1 $L3 LEFT RIGHT 0.05",
    "LRANGE $L3 0 -1",
    "BRPOPLPUSH $L1 $L3 0.05",
    "LRANGE $L3 0 -1",
    "BLMOVE $L1 $L3 LEFT RIGHT 0.05",
    "BLMOVE $L3 $S LEFT RIGHT 0.05",
    "ZADD $ZB 5 m 6 n",
    "BZPOPMIN $N1 $ZB 0.05",
    "BZPOPMAX $N1 $ZB 0.05",
    "BZPOPMIN $N1 $ZB 0.05",
    "ZADD $ZB 7 o",
    "BZMPOP 0.05 2 $N2 $ZB MIN COUNT 3",
    "BZMPOP 0.05 2 $N2 $S MIN",
    // BITOP.
    "SET $B1 foobar",
    "SET $B2 abcdef",
    "BITOP AND $BD $B1 $B2",
    "GET $BD",
    "BITOP OR $BD $B1 $B2",
    "GET $BD",
    "BITOP XOR $BD $B1 $B2 $N1",
    "GET $BD",
    "BITOP NOT $BD $B1",
    "STRLEN $BD",
    "BITOP AND $BD $B1 $N1",
    "GET $BD",
    "BITOP OR $BD $N1 $N2",
    "EXISTS $BD",
    "BITOP AND $BD $B1 $A",
    "SADD $BD 1",
    "BITOP OR $BD $B1",
    "TYPE $BD",
    // RENAME / COPY of every type, with its expiry.
    "HSET $H f 1 g 2",
    "RENAME $H $H2",
    "EXISTS $H",
    "HGETALL $H2",
    "COPY $H2 $H3",
    "HGETALL $H3",
    "COPY $H2 $H3",
    "COPY $H2 $H3 REPLACE",
    "RENAMENX $H2 $H3",
    "RENAME $A $H",
    "SMEMBERS $H",
    "TYPE $A",
    "COPY $ZA $H2",
    "COPY $ZA $ZD",
    "ZRANGE $ZD 0 -1 WITHSCORES",
    "RPUSH $L1 1 2 3",
    "RENAME $L1 $L2",
    "LRANGE $L2 0 -1",
    "EXPIRE $L2 100",
    "COPY $L2 $L3 REPLACE",
    "TTL $L3",
    "LRANGE $L3 0 -1",
    "RENAME $L3 $H",
    "TTL $H",
    "TYPE $H",
    "RENAME $N1 $N2",
    "COPY $N1 $N2",
    // HSCAN / SSCAN / ZSCAN queue inside MULTI, with the rest (one page of
    // a small collection: the whole of it and cursor 0, as in Redis).
    "HSET $N1 a 1 b 2",
    "SADD $A 1 2",
    "MULTI",
    "HSCAN $N1 0",
    "SSCAN $A 0 COUNT 100",
    "ZSCAN $ZD 0 MATCH a*",
    "SSCAN $A x",
    "EXEC",
    "MULTI",
    "HSCAN $N1 0 COUNT 0",
    "EXEC",
    // An argument error inside MULTI is its command's reply in EXEC; the
    // others run.
    "MULTI",
    "SET $S v NX XX",
    "SADD $A 9",
    "ZADD $ZD x a",
    "LPOP $L1 -1",
    "EXEC",
    "SISMEMBER $A 9",
];

/// The script with each placeholder replaced by a key on its shard.
fn placed(names: &BTreeMap<&str, String>) -> Vec<String> {
    SCRIPT
        .iter()
        .map(|line| {
            line.split(' ')
                .map(|w| names.get(w).cloned().unwrap_or_else(|| w.to_string()))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// A key name for each placeholder, on the shard [`PLACES`] names.
fn key_names() -> BTreeMap<&'static str, String> {
    let mut n = 0;
    let mut out = BTreeMap::new();
    for (place, shard) in PLACES {
        let name = loop {
            n += 1;
            let k = format!("{}-{n}", place.trim_start_matches('$').to_lowercase());
            if common::shard_of(&k, SHARDS) == *shard {
                break k;
            }
        };
        out.insert(*place, name);
    }
    out
}

#[test]
fn multi_key_commands_across_shards_answer_as_redis() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let cl = cluster(&dir.path().join("cluster"), 1, SHARDS as u32, 1);
    let names = key_names();
    let lines = placed(&names);
    let script: Vec<&str> = lines.iter().map(String::as_str).collect();

    let mut s = Conn::connect(&cl.router_addr());
    let mut r = Conn::connect(&redis.addr);
    let mut diffs = mismatches(&mut s, &mut r, &script);
    assert!(s.line("HELLO 3").starts_with(b"%"));
    assert!(r.line("HELLO 3").starts_with(b"%"));
    diffs.extend(mismatches(&mut s, &mut r, &script));
    assert!(
        diffs.is_empty(),
        "replies differ from Redis (keys: {names:?}):\n{}",
        diffs.join("\n")
    );

    // Inside MULTI a write across shards is refused at once, with the
    // hash-tag workaround, and the transaction is discarded.
    let (a, b) = (&names["$A"], &names["$B"]);
    let mut c = Conn::connect(&cl.router_addr());
    c.line("FLUSHALL");
    c.line(&format!("SADD {a} 1"));
    assert_eq!(c.line("MULTI"), b"+OK\r\n");
    let queued = c.line(&format!("SUNIONSTORE {b} {a}"));
    assert!(
        queued.starts_with(b"-ERR SUNIONSTORE inside MULTI needs its keys in one shard"),
        "{}",
        show(&queued)
    );
    assert!(c.line("EXEC").starts_with(b"-EXECABORT"));
    assert_eq!(c.line(&format!("EXISTS {b}")), b":0\r\n");
}

/// Members move between two sets on different shards (SMOVE, one
/// transaction each) while another client stores their union and their
/// intersection: every union holds every member and every intersection is
/// empty, so a store never reads one set before a move and the other after.
#[test]
fn stores_across_shards_see_moves_whole() {
    let dir = tempfile::tempdir().unwrap();
    let cl = cluster(&dir.path().join("cluster"), 1, SHARDS as u32, 1);
    let names = key_names();
    let (a, b, d) = (
        names["$A"].clone(),
        names["$B"].clone(),
        names["$D"].clone(),
    );
    let addr = cl.router_addr();
    let mut c = Conn::connect(&addr);
    const N: usize = 8;
    let members: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    c.line(&format!("SADD {a} {}", members.join(" ")));

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let movers: Vec<_> = (0..2)
        .map(|t| {
            let (addr, a, b, stop) = (addr.clone(), a.clone(), b.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut c = Conn::connect(&addr);
                let mut moved = 0;
                let mut i = t;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Wherever the member is, it moves to the other set.
                    let m = format!("m{}", i % N);
                    for (from, to) in [(&a, &b), (&b, &a)] {
                        let reply = c.line(&format!("SMOVE {from} {to} {m}"));
                        assert!(reply == b":1\r\n" || reply == b":0\r\n", "{}", show(&reply));
                        if reply == b":1\r\n" {
                            moved += 1;
                            break;
                        }
                    }
                    i += 3;
                }
                moved
            })
        })
        .collect();
    let started = Instant::now();
    let mut stores = 0;
    let mut store_time = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(8) || stores < 40 {
        let t = Instant::now();
        let union = c.line(&format!("SUNIONSTORE {d} {a} {b}"));
        store_time += t.elapsed();
        assert_eq!(union, format!(":{N}\r\n").as_bytes(), "{}", show(&union));
        let card = c.line(&format!("SCARD {d}"));
        assert_eq!(card, format!(":{N}\r\n").as_bytes());
        let inter = c.line(&format!("SINTERSTORE {d} {a} {b}"));
        assert_eq!(inter, b":0\r\n", "a member in both sets at once");
        stores += 1;
        // Room for the movers, whose transactions conflict with a store's.
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let moved: usize = movers.into_iter().map(|m| m.join().unwrap()).sum();
    eprintln!("{stores} stores while {moved} members moved");
    assert!(moved > 20, "too few moves to test anything: {moved}");
    eprintln!(
        "{stores} stores (SUNIONSTORE took {:?} on average) while {moved} members moved",
        store_time / stores
    );
}

/// BLPOP over keys of two shards blocks, and a push to the second shard's
/// key wakes it; BLMOVE across shards waits for its source.
#[test]
fn blocking_pops_wait_on_every_shard() {
    let dir = tempfile::tempdir().unwrap();
    let cl = cluster(&dir.path().join("cluster"), 1, SHARDS as u32, 1);
    let names = key_names();
    let (l1, l2, l3) = (
        names["$L1"].clone(),
        names["$L2"].clone(),
        names["$L3"].clone(),
    );
    let addr = cl.router_addr();

    let waiter = {
        let (addr, l1, l2) = (addr.clone(), l1.clone(), l2.clone());
        std::thread::spawn(move || {
            let mut c = Conn::connect(&addr);
            c.line(&format!("BLPOP {l1} {l2} 20"))
        })
    };
    let mover = {
        let (addr, l3, l1) = (addr.clone(), l3.clone(), l1.clone());
        std::thread::spawn(move || {
            let mut c = Conn::connect(&addr);
            c.line(&format!("BLMOVE {l3} {l1} LEFT LEFT 20"))
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    let mut c = Conn::connect(&addr);
    assert_eq!(c.line(&format!("RPUSH {l2} job")), b":1\r\n");
    let got = waiter.join().unwrap();
    let want = format!("*2\r\n${}\r\n{l2}\r\n$3\r\njob\r\n", l2.len());
    assert_eq!(show(&got), show(want.as_bytes()));
    assert_eq!(c.line(&format!("RPUSH {l3} moved")), b":1\r\n");
    assert_eq!(show(&mover.join().unwrap()), "$5\\r\\nmoved\\r\\n");
    assert_eq!(
        c.line(&format!("LRANGE {l1} 0 -1")),
        b"*1\r\n$5\r\nmoved\r\n"
    );
    assert_eq!(c.line(&format!("EXISTS {l2} {l3}")), b":0\r\n");
}

/// Three clients each add their own members to a set on another shard and
/// fold it into one shared set with `SUNIONSTORE shared shared mine`: the
/// shared set ends with every member. A store that wrote a union read
/// before another client's store committed would drop that client's
/// members (a lost update); the WATCH on every input prevents it.
#[test]
fn concurrent_stores_into_one_key_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cl = cluster(&dir.path().join("cluster"), 1, SHARDS as u32, 1);
    let names = key_names();
    let shared = names["$A"].clone();
    let mine = [
        names["$B"].clone(),
        names["$C"].clone(),
        names["$E"].clone(),
    ];
    let addr = cl.router_addr();
    const ROUNDS: usize = 60;
    let clients: Vec<_> = mine
        .iter()
        .enumerate()
        .map(|(t, own)| {
            let (addr, shared, own) = (addr.clone(), shared.clone(), own.clone());
            std::thread::spawn(move || {
                let mut c = Conn::connect(&addr);
                for j in 0..ROUNDS {
                    assert_eq!(c.line(&format!("SADD {own} c{t}-{j}")), b":1\r\n");
                    let r = c.line(&format!("SUNIONSTORE {shared} {shared} {own}"));
                    assert!(r.starts_with(b":"), "{}", show(&r));
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let mut c = Conn::connect(&addr);
    let want = format!(":{}\r\n", ROUNDS * mine.len());
    assert_eq!(
        show(&c.line(&format!("SCARD {shared}"))),
        show(want.as_bytes())
    );
}

/// The nodes' waits for blocked clients, from INFO clients.
fn node_waits(c: &mut Conn) -> u64 {
    let info = String::from_utf8(c.line("INFO clients")).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("blocked_waits_on_nodes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no blocked_waits_on_nodes in {info}"))
}

/// A client blocked on keys of two shards and served through one leaves
/// no wait on the other: the router cancels it, so the next push there
/// wakes a client that still waits. Without the cancel the wait would stay
/// until its 2-second chunk ends and take the next wake-up on that shard.
#[test]
fn a_client_served_through_one_shard_leaves_no_wait_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let cl = cluster(&dir.path().join("cluster"), 1, SHARDS as u32, 1);
    let names = key_names();
    let (l1, l2) = (names["$L1"].clone(), names["$L2"].clone());
    let addr = cl.router_addr();
    let mut c = Conn::connect(&addr);
    assert_eq!(node_waits(&mut c), 0);
    let waiter = {
        let (addr, l1, l2) = (addr.clone(), l1.clone(), l2.clone());
        std::thread::spawn(move || Conn::connect(&addr).line(&format!("BLPOP {l1} {l2} 20")))
    };
    assert!(
        common::wait_until(Duration::from_secs(10), || node_waits(&mut c) == 2),
        "the blocked client should wait on both shards"
    );
    let info = String::from_utf8(c.line("INFO clients")).unwrap();
    assert!(info.contains("blocked_clients:1\r\n"), "{info}");
    assert_eq!(c.line(&format!("RPUSH {l1} job")), b":1\r\n");
    let served = waiter.join().unwrap();
    assert!(
        show(&served).ends_with("$3\\r\\njob\\r\\n"),
        "{}",
        show(&served)
    );
    let t = Instant::now();
    assert!(
        common::wait_until(Duration::from_millis(1000), || node_waits(&mut c) == 0),
        "a wait outlived its client by {:?}",
        t.elapsed()
    );
    let info = String::from_utf8(c.line("INFO clients")).unwrap();
    assert!(info.contains("blocked_clients:0\r\n"), "{info}");
}
