//! The keyspace and string commands of issue 17 (SETEX, PSETEX,
//! EXPIRETIME, PEXPIRETIME, the EXPIRE options, RENAME, RENAMENX, COPY,
//! RANDOMKEY, OBJECT, LCS, CONFIG's encoding parameters) against a real
//! cluster of four shards, so that most pairs of keys below live on
//! different shards:
//!
//! 1. the same script against shoal and a real `redis-server`, in RESP2 and
//!    RESP3, replies compared byte for byte (errors included);
//! 2. what only shoal has or answers differently (COPY to another
//!    database, cross-shard moves inside MULTI, LCS's size limit,
//!    RANDOMKEY's spread, READONLY reads);
//! 3. RENAME across shards moves the value with its TTL, invalidates a
//!    WATCH of its destination (on one shard and across shards), and is
//!    atomic: two clients rename a key back and forth between two shards
//!    while a third checks, in snapshot reads, that exactly one of the two
//!    names exists at every moment.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{assert_same_as_redis, cluster, show, Conn, RedisServer};

/// Shards of the table the tests use.
const SHARDS: usize = 4;

/// The shard of `key` in a table of [`SHARDS`] shards.
fn shard_of(key: &str) -> usize {
    common::shard_of(key, SHARDS)
}

/// Commands whose replies must be identical in Redis 7 and shoal.
const SCRIPT: &[&str] = &[
    "FLUSHALL",
    "RANDOMKEY",
    // SETEX / PSETEX.
    "SETEX sx 100 v",
    "TTL sx",
    "GET sx",
    "SETEX sx 0 v",
    "SETEX sx -5 v",
    "SETEX sx abc v",
    "SETEX sx 9223372036854775807 v",
    "SETEX sx 10",
    "SETEX",
    "PSETEX px 100000 v",
    "TTL px",
    "PSETEX px 0 v",
    "PSETEX px -1 v",
    "PSETEX px 9223372036854775807 v",
    "PSETEX px x v",
    // EXPIRETIME / PEXPIRETIME.
    "EXPIREAT sx 4102444800",
    "EXPIRETIME sx",
    "PEXPIRETIME sx",
    "PEXPIREAT sx 4102444800123",
    "EXPIRETIME sx",
    "PEXPIRETIME sx",
    "EXPIRETIME nope",
    "PEXPIRETIME nope",
    "SET np v",
    "EXPIRETIME np",
    "PEXPIRETIME np",
    "EXPIRETIME",
    "EXPIRETIME a b",
    // EXPIRE's options.
    "SET e v",
    "EXPIRE e 100 XX",
    "EXPIRE e 100 GT",
    "EXPIRE e 100 NX",
    "EXPIRE e 100 NX",
    "EXPIRE e 50 GT",
    "EXPIRE e 200 GT",
    "TTL e",
    "EXPIRE e 300 LT",
    "EXPIRE e 100 LT",
    // A TTL equal to the one just set is a later deadline only if a
    // millisecond has passed between the two commands: timing, not
    // semantics. 99 and 101 are decided whatever the timing.
    "EXPIRE e 99 XX GT",
    "EXPIRE e 101 XX GT",
    "EXPIRE e 150 XX GT",
    "EXPIRE e 100 XX LT",
    "TTL e",
    "EXPIRE e 10 NX GT",
    "EXPIRE e 10 NX LT",
    "EXPIRE e 10 XX NX",
    "EXPIRE e 10 GT LT",
    "EXPIRE e 10 NX NX",
    "EXPIRE e 10 LT LT",
    "EXPIRE e 10 nx bar",
    "PEXPIRE e 10 XX NX",
    "EXPIREAT e 10 GT LT",
    "PEXPIREAT e 10 xx nx",
    "EXPIRE e abc NX XX",
    "PERSIST e",
    "EXPIRE e 100 GT",
    "EXPIRE e 100 LT",
    "TTL e",
    "PERSIST e",
    "PEXPIREAT e 4102444800000 GT",
    "EXPIREAT e 4102444800 GT",
    "PEXPIRETIME e",
    "EXPIREAT e 4102444801 GT",
    "EXPIRETIME e",
    "EXPIRE nope 10 NX",
    "EXPIRE e 0 LT",
    "EXISTS e",
    // RENAME / RENAMENX.
    "SET r1 hello",
    "RENAME r1 r2",
    "GET r1",
    "GET r2",
    "RENAME nope x",
    "RENAMENX nope x",
    "RENAME r2 r2",
    "RENAMENX r2 r2",
    "RENAME nope nope",
    "SET r3 other",
    "RENAMENX r2 r3",
    "RENAMENX r2 r4",
    "EXISTS r2",
    "RENAME r4 r3",
    "GET r3",
    "GET r4",
    "SETEX t1 100 v",
    "RENAME t1 t2",
    "TTL t2",
    "TTL t1",
    "SET t3 plain",
    "SETEX t4 100 v",
    "RENAME t3 t4",
    "TTL t4",
    "RENAME",
    "RENAME a",
    "RENAME a b c",
    "RENAMENX a",
    // COPY.
    "COPY r3 c1",
    "COPY r3 c1",
    "SET r3 newer",
    "COPY r3 c1 REPLACE",
    "GET c1",
    "GET r3",
    "COPY nope c2",
    "EXISTS c2",
    "COPY r3 r3",
    "COPY nope nope",
    "COPY r3 c1 DB 0 REPLACE",
    "COPY r3 c1 REPLACE REPLACE",
    "COPY r3 c1 DB x",
    "COPY r3 c1 DB -1",
    "COPY r3 c1 DB 99999999999",
    "COPY r3 c1 DB",
    "COPY r3 c1 FOO",
    "COPY r3",
    "SETEX t5 100 v",
    "COPY t5 t6",
    "TTL t6",
    "TTL t5",
    // OBJECT.
    "SET o1 12345",
    "OBJECT ENCODING o1",
    "OBJECT REFCOUNT o1",
    "SET o2 5",
    "OBJECT ENCODING o2",
    "OBJECT REFCOUNT o2",
    "SET o3 hello",
    "OBJECT ENCODING o3",
    "OBJECT REFCOUNT o3",
    "SET o4 123456789012345678901234567890123456789012345",
    "OBJECT ENCODING o4",
    "SET o5 12345678901234567890123456789012345678901234",
    "OBJECT ENCODING o5",
    "SET o6 007",
    "OBJECT ENCODING o6",
    "SET o7 -0",
    "OBJECT ENCODING o7",
    "SET o8 -5",
    "OBJECT ENCODING o8",
    "OBJECT REFCOUNT o8",
    "SET o9 9223372036854775807",
    "OBJECT ENCODING o9",
    "SET o10 9223372036854775808",
    "OBJECT ENCODING o10",
    "SET o11 \"\"",
    "OBJECT ENCODING o11",
    "SET o12 +1",
    "OBJECT ENCODING o12",
    "OBJECT encoding nope",
    "OBJECT REFCOUNT nope",
    "OBJECT IDLETIME nope",
    "OBJECT FREQ nope",
    "OBJECT FREQ o1",
    "OBJECT HELP",
    "OBJECT help x",
    "OBJECT foo",
    "OBJECT foo bar",
    "OBJECT ENCODING",
    "OBJECT ENCODING a b",
    "OBJECT",
    // LCS.
    "SET l1 ohmytext",
    "SET l2 mynewtext",
    "LCS l1 l2",
    "LCS l1 l2 LEN",
    "LCS l1 l2 IDX",
    "LCS l1 l2 IDX MINMATCHLEN 4",
    "LCS l1 l2 IDX MINMATCHLEN 4 WITHMATCHLEN",
    "LCS l1 l2 idx withmatchlen",
    "LCS l1 l2 WITHMATCHLEN",
    "LCS l1 l2 MINMATCHLEN -3 IDX",
    "LCS l1 nope",
    "LCS nope nope2 IDX",
    "LCS nope l2 LEN",
    "LCS l1 l2 LEN IDX",
    "LCS l1 l2 FOO",
    "LCS l1 l2 MINMATCHLEN",
    "LCS l1 l2 MINMATCHLEN x",
    "LCS l1",
    "HSET lh f v",
    "LCS lh l1",
    "LCS l1 lh LEN",
    "SET l3 ABCBDAB",
    "SET l4 BDCABA",
    "LCS l3 l4",
    "LCS l3 l4 IDX WITHMATCHLEN",
    "LCS l4 l3 IDX",
    // Inside MULTI, keys sharing a hash tag (one shard).
    "SET {m}a 1",
    "MULTI",
    "RENAME {m}a {m}b",
    "COPY {m}b {m}c",
    "RENAMENX {m}c {m}b",
    "SETEX {m}d 100 x",
    "EXPIRETIME {m}nope",
    "OBJECT ENCODING {m}b",
    "LCS {m}b {m}c LEN",
    "EXEC",
    "MGET {m}a {m}b {m}c",
    // CONFIG's encoding parameters.
    "CONFIG GET hash-max-listpack-entries",
    "CONFIG GET hash-max-ziplist-value",
    "CONFIG GET zset-max-listpack-entries",
    "CONFIG GET list-max-ziplist-size",
    "CONFIG GET list-compress-depth",
    "CONFIG GET stream-node-max-bytes",
    "CONFIG GET stream-node-max-entries",
    "CONFIG GET set-max-intset-entries",
    "CONFIG SET hash-max-ziplist-entries 7",
    "CONFIG GET hash-max-listpack-entries",
    "CONFIG GET hash-max-ziplist-entries",
    "CONFIG SET set-max-intset-entries 1 zset-max-ziplist-value 1kb",
    "CONFIG GET set-max-intset-entries",
    "CONFIG GET zset-max-listpack-value",
    "CONFIG SET set-max-intset-entries abc",
    "CONFIG SET set-max-intset-entries -1",
    "CONFIG SET set-max-intset-entries 012",
    "CONFIG SET list-max-ziplist-size 99999999999",
    "CONFIG SET list-max-listpack-size -5",
    "CONFIG GET list-max-ziplist-size",
    "CONFIG SET list-compress-depth -1",
    "CONFIG SET hash-max-listpack-value 0x10",
    "CONFIG SET hash-max-listpack-value -1",
    "CONFIG SET stream-node-max-entries 500",
    "CONFIG GET stream-node-max-entries",
    "CONFIG SET set-max-intset-entries 512 zset-max-ziplist-value 64 hash-max-ziplist-entries 512",
    "CONFIG SET list-max-listpack-size -2 stream-node-max-entries 100",
    // RANDOMKEY with one key.
    "FLUSHALL",
    "SET only v",
    "RANDOMKEY",
    "RANDOMKEY x",
    // Arity, bad numbers and every type for the rest.
    "FLUSHALL",
    "HSET kh f v",
    "RPUSH kl a",
    "SADD ks 1",
    "ZADD kz 1 a",
    "SET kstr v",
    "PSETEX",
    "PSETEX px 100",
    "PSETEX kh 100000 v",
    "TYPE kh",
    "TTL kh",
    "SETEX kl 100 v",
    "TYPE kl",
    "PEXPIRETIME",
    "PEXPIRETIME a b",
    "EXPIRE",
    "EXPIRE ks",
    "EXPIRE ks x",
    "EXPIRE ks 100 FOO",
    "EXPIRE ks 100",
    "TTL ks",
    "PEXPIRE",
    "PEXPIRE ks",
    "PEXPIRE ks x",
    "PEXPIRE ks 1.5",
    "PEXPIRE ks 200000 LT",
    "PEXPIRE ks 50000 GT",
    "PEXPIRE ks 50000 LT",
    "PEXPIRE ks 100000 NX",
    "PEXPIRE ks 50000 XX",
    "PEXPIRE nope 100 XX",
    "EXPIREAT",
    "EXPIREAT kz",
    "EXPIREAT kz x",
    "EXPIREAT kz 4102444800 FOO",
    "EXPIREAT kz 4102444800 NX",
    "EXPIRETIME kz",
    "PEXPIREAT",
    "PEXPIREAT kz x",
    "PEXPIREAT kz 4102444800000 XX GT",
    "PEXPIRETIME kz",
    "PEXPIREAT kz 1",
    "EXISTS kz",
    "TYPE",
    "TYPE a b",
    "TYPE kh",
    "TYPE kl",
    "TYPE ks",
    "TYPE kstr",
    "TTL",
    "PTTL",
    "PERSIST",
    "PERSIST ks",
    "TTL ks",
    "RENAME kh",
    "RENAMENX",
    "COPY",
    "OBJECT ENCODING kstr",
    "OBJECT FREQ",
    "OBJECT REFCOUNT kh kl",
    "LCS",
    "LCS kstr kh",
    "SCAN",
    "CONFIG",
    "CONFIG GET",
    "CONFIG SET set-max-intset-entries",
    "CONFIG FOO",
    "CONFIG RESETSTAT x",
    "CONFIG RESETSTAT",
    "FLUSHALL",
];

#[test]
fn keyspace_commands() {
    // The script's pairs cross shards (the shards' slot ranges are fixed).
    for (a, b) in [
        ("r1", "r2"),
        ("t1", "t2"),
        ("r3", "c1"),
        ("t5", "t6"),
        ("l1", "l2"),
    ] {
        assert_ne!(shard_of(a), shard_of(b), "{a} and {b} share a shard");
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let cl = cluster(&dir.path().join("cluster"), 1, SHARDS as u32, 1);
    let addr = cl.router_addr();
    eprintln!("cluster up after {:?}", started.elapsed());

    // 1. The same script in RESP2, then in RESP3, against both servers.
    let mut s = Conn::connect(&addr);
    let mut r = Conn::connect(&redis.addr);
    assert_same_as_redis(&mut s, &mut r, SCRIPT);
    eprintln!("redis comparison done after {:?}", started.elapsed());

    // 2. What only shoal answers.
    let mut c = Conn::connect(&addr);
    // One database per table: a copy stays in the connection's table.
    assert_eq!(c.line("SET src v"), b"+OK\r\n");
    assert_eq!(
        c.line("COPY src dst DB 1"),
        b"-ERR Copying to another database is not allowed in cluster mode\r\n"
    );
    // A move across shards cannot be queued; one on one shard can.
    assert_ne!(shard_of("src"), shard_of("dst"));
    assert_eq!(c.line("MULTI"), b"+OK\r\n");
    assert_eq!(
        c.line("RENAME src dst"),
        b"-ERR RENAME inside MULTI needs both keys in one shard; use a hash tag such as {user1}\r\n"
    );
    assert_eq!(c.line("EXEC").first(), Some(&b'-'), "EXECABORT");
    // A collection moves with its elements, on one shard and across shards
    // (tests/cross_shard.rs compares every type with Redis).
    assert_ne!(shard_of("ping"), shard_of("pong"));
    assert_eq!(c.line("HSET ping f v"), b":1\r\n");
    assert_eq!(c.line("SADD {c}s m"), b":1\r\n");
    assert_eq!(c.line("RPUSH {c}l x"), b":1\r\n");
    assert_eq!(c.line("COPY ping pong"), b":1\r\n");
    assert_eq!(c.line("HGET pong f"), b"$1\r\nv\r\n");
    assert_eq!(c.line("DEL pong"), b":1\r\n");
    assert_eq!(c.line("HGET ping f"), b"$1\r\nv\r\n");
    assert_eq!(c.line("EXISTS pong"), b":0\r\n");
    assert_eq!(c.line("COPY {c}s {c}t"), b":1\r\n");
    assert_eq!(c.line("SADD {c}t n"), b":1\r\n");
    assert_eq!(c.line("SMEMBERS {c}s"), b"*1\r\n$1\r\nm\r\n");
    assert_eq!(c.line("RENAMENX {c}s {c}t"), b":0\r\n");
    assert_eq!(c.line("RENAME {c}l {c}t"), b"+OK\r\n");
    assert_eq!(c.line("LRANGE {c}t 0 -1"), b"*1\r\n$1\r\nx\r\n");
    assert_eq!(c.line("EXISTS {c}l"), b":0\r\n");
    assert_eq!(c.line("OBJECT ENCODING ping"), b"$9\r\nhashtable\r\n");
    assert_eq!(c.line("OBJECT ENCODING {c}s"), b"$9\r\nhashtable\r\n");
    // IDLETIME: shoal keeps no access times.
    assert_eq!(c.line("OBJECT IDLETIME src"), b":0\r\n");
    // LCS refuses a table over its limit (16,777,216 cells) before building it.
    let big = vec![b'a'; 4096];
    assert_eq!(c.cmd(&[b"SET", b"l1", &big]), b"+OK\r\n");
    assert_eq!(c.cmd(&[b"SET", b"l2", &big[..4095]]), b"+OK\r\n");
    let refused = c.line("LCS l1 l2 LEN");
    assert!(
        refused.starts_with(
            b"-ERR LCS of strings of 4096 and 4095 bytes needs a table of 16781312 cells"
        ),
        "{}",
        show(&refused)
    );
    assert_eq!(c.cmd(&[b"SET", b"l1", &big[..4095]]), b"+OK\r\n");
    assert_eq!(c.line("LCS l1 l2 LEN"), b":4095\r\n");
    // The parameters Redis 7.2 added read back too.
    assert_eq!(c.line("CONFIG SET set-max-listpack-entries 3"), b"+OK\r\n");
    assert_eq!(
        c.line("CONFIG GET set-max-listpack-entries"),
        b"*2\r\n$24\r\nset-max-listpack-entries\r\n$1\r\n3\r\n"
    );
    // Reads on a READONLY connection (any replica).
    let mut ro = Conn::connect(&addr);
    assert_eq!(ro.line("READONLY"), b"+OK\r\n");
    assert_eq!(c.line("SETEX ttl 100 v"), b"+OK\r\n");
    let want_deadline = |reply: &[u8]| {
        let n: i64 = String::from_utf8_lossy(&reply[1..]).trim().parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        (now + 95..=now + 101).contains(&n)
    };
    assert!(want_deadline(&c.line("EXPIRETIME ttl")));
    let seen = |ro: &mut Conn, line: &str, want: &[u8]| {
        common::wait_until(Duration::from_secs(5), || ro.line(line) == want)
    };
    assert!(seen(&mut ro, "OBJECT ENCODING ttl", b"$6\r\nembstr\r\n"));
    assert!(want_deadline(&ro.line("EXPIRETIME ttl")));
    assert!(seen(&mut ro, "LCS l1 l2 LEN", b":4095\r\n"));
    // RANDOMKEY returns every key sooner or later, and only live ones.
    assert_eq!(c.line("FLUSHDB"), b"+OK\r\n");
    assert_eq!(c.line("RANDOMKEY"), b"$-1\r\n");
    let keys: Vec<String> = (0..20).map(|i| format!("key:{i}")).collect();
    for k in &keys {
        c.line(&format!("SET {k} v"));
    }
    c.line("SET gone v PX 1");
    std::thread::sleep(Duration::from_millis(10));
    let mut found = std::collections::BTreeSet::new();
    for _ in 0..2000 {
        let reply = c.line("RANDOMKEY");
        let text = String::from_utf8_lossy(&reply).into_owned();
        let key = text.split("\r\n").nth(1).unwrap_or_default().to_string();
        assert!(keys.contains(&key), "{text}");
        found.insert(key);
        if found.len() == keys.len() {
            break;
        }
    }
    assert_eq!(found.len(), keys.len(), "keys never returned");
}

/// RENAME between two shards is one atomic transaction: the value is under
/// exactly one of its two names at every moment a snapshot read can see.
#[test]
fn rename_across_shards_is_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let cl = cluster(dir.path(), 1, SHARDS as u32, 1);
    let addr = cl.router_addr();
    let (a, b) = ("ping", "pong");
    assert_ne!(shard_of(a), shard_of(b));
    let mut c = Conn::connect(&addr);
    assert_eq!(c.line("SET ping ball PX 600000"), b"+OK\r\n");
    // The value and its TTL move; a RENAME back restores the name.
    assert_eq!(c.line("RENAME ping pong"), b"+OK\r\n");
    assert_eq!(c.line("GET pong"), b"$4\r\nball\r\n");
    assert_eq!(c.line("EXISTS ping"), b":0\r\n");
    let ttl = String::from_utf8_lossy(&c.line("PTTL pong")).into_owned();
    let ttl: i64 = ttl.trim_start_matches(':').trim().parse().unwrap();
    assert!((590_000..=600_000).contains(&ttl), "{ttl}");
    assert_eq!(c.line("COPY pong ping"), b":1\r\n");
    assert_eq!(c.line("COPY pong ping"), b":0\r\n");
    assert_eq!(c.line("RENAMENX pong ping"), b":0\r\n");
    assert_eq!(c.line("DEL ping"), b":1\r\n");
    assert_eq!(c.line("RENAMENX pong ping"), b":1\r\n");
    assert_eq!(c.line("GET ping"), b"$4\r\nball\r\n");

    // A move changes what WATCH saw, on one shard and across shards.
    let mut other = Conn::connect(&addr);
    for (from, to) in [("ping", "pong"), ("{w}a", "{w}b")] {
        assert_eq!(c.line(&format!("SET {from} ball")), b"+OK\r\n");
        assert_eq!(c.line(&format!("WATCH {to}")), b"+OK\r\n");
        assert_eq!(other.line(&format!("RENAME {from} {to}")), b"+OK\r\n");
        assert_eq!(c.line("MULTI"), b"+OK\r\n");
        assert_eq!(c.line(&format!("GET {to}")), b"+QUEUED\r\n");
        assert_eq!(c.line("EXEC"), b"*-1\r\n", "{from} -> {to}");
        assert_eq!(c.line(&format!("RENAME {to} {from}")), b"+OK\r\n");
    }
    assert_eq!(c.line("DEL {w}a"), b":1\r\n");

    let stop = Arc::new(AtomicBool::new(false));
    let movers: Vec<_> = (0..2)
        .map(|_| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut m = Conn::connect(&addr);
                let mut moved = 0;
                while !stop.load(Ordering::Relaxed) {
                    for (from, to) in [(a, b), (b, a)] {
                        let reply = m.line(&format!("RENAME {from} {to}"));
                        match &reply[..] {
                            b"+OK\r\n" => moved += 1,
                            b"-ERR no such key\r\n" => {}
                            other => panic!("RENAME {from} {to}: {}", show(other)),
                        }
                    }
                }
                moved
            })
        })
        .collect();
    let mut checks = 0;
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        assert_eq!(c.line("MULTI"), b"+OK\r\n");
        for line in ["EXISTS ping", "EXISTS pong", "GET ping", "GET pong"] {
            assert_eq!(c.line(line), b"+QUEUED\r\n");
        }
        let reply = c.line("EXEC");
        let text = String::from_utf8_lossy(&reply).into_owned();
        // Four replies: two counts adding up to one, and the value once.
        assert!(text.starts_with("*4\r\n"), "{text:?}");
        let ones = text.matches(":1\r\n").count();
        let zeros = text.matches(":0\r\n").count();
        assert!(ones == 1 && zeros == 1, "not exactly one name: {text:?}");
        assert_eq!(text.matches("$4\r\nball\r\n").count(), 1, "{text:?}");
        checks += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let moved: i32 = movers.into_iter().map(|t| t.join().unwrap()).sum();
    eprintln!("{moved} renames across shards, {checks} snapshot checks");
    assert!(moved > 20, "too few renames ran: {moved}");
    assert!(checks > 20, "too few checks ran: {checks}");
}
