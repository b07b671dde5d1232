//! Byte-level tests of the string family and the connection commands against
//! a real one-node cluster: raw RESP over TCP, exact reply bytes, in RESP2
//! and RESP3; where the semantics are Redis's, the same script also runs
//! against a real `redis-server` and the replies must match byte for byte.

mod common;

use std::time::{Duration, Instant};

use common::{assert_same_as_redis, cluster, show, wait_until, Conn, RedisServer};

/// Commands whose replies must be identical in Redis 7 and shoal. Each line
/// is split on spaces (`""` is an empty argument).
const SCRIPT: &[&str] = &[
    "FLUSHALL",
    "PING",
    "PING hello",
    "ECHO hi",
    "SELECT 0",
    "SET k v",
    "GET k",
    "GET nope",
    "GET",
    "SET k v NX XX",
    // Options as Redis reads them: flags may repeat, an expiry option given
    // twice counts once (the last), every option is read before the number.
    "SET k v NX NX",
    "SET k v XX xx GET get",
    "SET k v EX",
    "SET k v EX abc NX XX",
    "SET k v EX -1 FOO",
    "SET k v EX 10 EX 20",
    "TTL k",
    "SET k v KEEPTTL KEEPTTL",
    "TTL k",
    "SET k v",
    "SET k v EX 0",
    "SET k v EX abc",
    "SETNX k x",
    "SETNX n1 x",
    "GETSET k v2",
    "GETSET nope2 a",
    "GETDEL k",
    "GETDEL k",
    "GET k",
    "INCR c",
    "INCRBY c 10",
    "DECR c",
    "DECRBY c 5",
    "INCRBY c abc",
    "INCRBY c 1.5",
    "DECRBY c -9223372036854775808",
    "SET big 9223372036854775807",
    "INCR big",
    "SET small -9223372036854775808",
    "DECR small",
    "SET s hello",
    "INCR s",
    "SET sp 1 ",
    "INCR sp",
    "INCRBYFLOAT f 10.50",
    "INCRBYFLOAT f 0.1",
    "INCRBYFLOAT f -10.6",
    "INCRBYFLOAT f abc",
    "INCRBYFLOAT s 1",
    "INCRBYFLOAT g 0.1",
    "INCRBYFLOAT g 0.2",
    "APPEND a hello",
    "APPEND a _world",
    "STRLEN a",
    "STRLEN nope",
    "GETRANGE a 0 4",
    "GETRANGE a -5 -1",
    "GETRANGE a 5 3",
    "GETRANGE a -1 -5",
    "GETRANGE a 0 100",
    "GETRANGE nope 0 -1",
    "GETRANGE a x 1",
    "SUBSTR a 0 2",
    "SETRANGE sr 5 hi",
    "GET sr",
    "SETRANGE sr 0 HELLO",
    "GET sr",
    "SETRANGE sr -1 x",
    "SETRANGE sr x x",
    "SETRANGE sr 0 \"\"",
    "SETRANGE nosr 0 \"\"",
    "EXISTS nosr",
    "MSET m1 a m2 b",
    "MGET m1 m2 nope m1",
    "MSET m1",
    "MSET m1 a m2",
    "MSETNX m1 z m3 c",
    "MSETNX m3 c m4 d",
    "MGET m3 m4",
    "EXISTS m1 m2 nope m1",
    "TOUCH m1 nope m1",
    "DEL m1 m2 nope",
    "UNLINK m3 m3",
    "EXPIRE nope 100",
    "SET e v",
    "TTL e",
    "PTTL e",
    "EXPIRE e 100",
    "TTL e",
    "EXPIRE e 50 GT",
    "EXPIRE e 200 GT",
    "TTL e",
    "EXPIRE e 10 NX",
    "EXPIRE e 300 LT",
    "EXPIRE e 100 LT",
    "TTL e",
    "EXPIRE e 10 NX XX",
    "EXPIRE e 10 GT LT",
    "EXPIRE e 10 foo",
    "EXPIRE e abc",
    "EXPIRE e 9223372036854775807",
    "PEXPIRE e 9223372036854775807",
    "PERSIST e",
    "TTL e",
    "PERSIST e",
    "PERSIST nope",
    "EXPIRE e 10 XX",
    "EXPIRE e 10 NX",
    // Not 10 again: an equal TTL is a later deadline only if a millisecond
    // has passed since the last EXPIRE, which is timing, not semantics.
    "EXPIRE e 9 GT",
    "EXPIRE e 11 GT",
    "TTL e",
    "PEXPIREAT e 1",
    "GET e",
    "TTL e",
    "SET e2 v",
    "EXPIREAT e2 1",
    "EXISTS e2",
    "SET e3 v",
    "EXPIRE e3 -1",
    "EXISTS e3",
    "TYPE a",
    "TYPE nope",
    "SET x v EX 100",
    "TTL x",
    "SET x v2 KEEPTTL",
    "TTL x",
    "SET x v3",
    "TTL x",
    "SET x v PX 0",
    "SET x v EX 100 GET",
    "SET x w GET",
    "SET nx2 w NX GET",
    "GETEX x PERSIST",
    "TTL x",
    "GETEX x EX 50",
    "TTL x",
    "GETEX x EX 0",
    "GETEX x EX abc",
    "GETEX x FOO",
    "GETEX x PERSIST EX 10",
    "GETEX x EX 10 EX 20",
    "TTL x",
    "GETEX x PERSIST PERSIST",
    "TTL x",
    "GETEX x EX abc FOO",
    "GETEX x EX",
    "GETEX nope",
    "GETEX x PXAT 1",
    "EXISTS x",
    "DEL nope",
    "SCAN abc",
    "SCAN 0 COUNT 0",
    "SCAN 0 COUNT abc",
    "SCAN 0 FOO",
    "FLUSHDB",
    "DBSIZE",
    "FLUSHDB BAD",
    "SET k1 v",
    "SET k2 v",
    "DBSIZE",
    "KEYS nomatch*",
    "FLUSHALL",
    "DBSIZE",
];

#[test]
fn strings() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let cl = cluster(&dir.path().join("cluster"), 1, 1, 1);
    let addr = cl.router_addr();
    eprintln!("cluster up after {:?}", started.elapsed());

    // 1. The same script in RESP2, then in RESP3, against both servers.
    let mut s = Conn::connect(&addr);
    let mut r = Conn::connect(&redis.addr);
    assert_same_as_redis(&mut s, &mut r, SCRIPT);
    eprintln!("redis comparison done after {:?}", started.elapsed());

    // 2. Exact bytes where the protocol version shows.
    let mut c = Conn::connect(&addr);
    assert_eq!(c.line("GET nothing"), b"$-1\r\n");
    assert_eq!(c.line("SET k v"), b"+OK\r\n");
    assert_eq!(c.line("TYPE k"), b"+string\r\n");
    assert_eq!(c.line("MGET k nothing"), b"*2\r\n$1\r\nv\r\n$-1\r\n");
    assert_eq!(c.line("INCRBYFLOAT fl 1.5"), b"$3\r\n1.5\r\n");
    assert_eq!(
        c.line("ECHO"),
        b"-ERR wrong number of arguments for 'echo' command\r\n"
    );
    let hello = c.line("HELLO 3");
    assert!(
        hello.starts_with(b"%7\r\n$6\r\nserver\r\n"),
        "{}",
        show(&hello)
    );
    assert_eq!(c.line("GET nothing"), b"_\r\n");
    assert_eq!(c.line("MGET k nothing"), b"*2\r\n$1\r\nv\r\n_\r\n");
    assert_eq!(c.line("TTL k"), b":-1\r\n");
    assert_eq!(c.line("HELLO 2").first(), Some(&b'*'));
    assert_eq!(
        c.line("HELLO 4"),
        b"-NOPROTO unsupported protocol version\r\n"
    );

    // Where Redis's `long double` shows through, shoal (f64 range, exact
    // decimal sums) legitimately differs: Redis prints 5000+10.6 as
    // 5010.60000000000000009 and lets 1e308+1e308 through.
    assert_eq!(c.line("INCRBYFLOAT fl2 5.0e3"), b"$4\r\n5000\r\n");
    assert_eq!(c.line("INCRBYFLOAT fl2 10.6"), b"$6\r\n5010.6\r\n");
    assert_eq!(c.line("SET fl3 1e308"), b"+OK\r\n");
    assert_eq!(
        c.line("INCRBYFLOAT fl3 1e308"),
        b"-ERR increment would produce NaN or Infinity\r\n"
    );

    // 3. The value-size cap (16 MiB by default), which Redis does not have.
    let big = vec![b'x'; 16 * 1024 * 1024 + 1];
    assert_eq!(
        c.cmd(&[b"SET", b"big", &big]),
        b"-ERR value is too large\r\n"
    );
    assert_eq!(
        c.cmd(&[b"SETRANGE", b"big", b"16777215", b"ab"]),
        b"-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n"
    );
    let almost = vec![b'x'; 16 * 1024 * 1024];
    assert_eq!(c.cmd(&[b"SET", b"big", &almost]), b"+OK\r\n");
    assert_eq!(
        c.cmd(&[b"APPEND", b"big", b"y"]),
        b"-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n"
    );
    assert_eq!(c.line("STRLEN big"), b":16777216\r\n");
    assert_eq!(c.line("DEL big"), b":1\r\n");

    // 4. Expiry: keys vanish on their own, and read as missing everywhere.
    assert_eq!(c.line("SET short v PX 300"), b"+OK\r\n");
    assert_eq!(c.line("SET long v"), b"+OK\r\n");
    assert!(wait_until(Duration::from_secs(5), || c
        .line("EXISTS short")
        == b":0\r\n"));
    assert_eq!(c.line("GET short"), b"$-1\r\n");
    assert_eq!(c.line("TTL short"), b":-2\r\n");
    assert_eq!(c.line("TYPE short"), b"+none\r\n");
    assert_eq!(c.line("KEYS short"), b"*0\r\n");

    // 5. Keyspace: KEYS, SCAN, DBSIZE and FLUSHDB.
    assert_eq!(c.line("FLUSHDB"), b"+OK\r\n");
    for i in 0..25 {
        c.line(&format!("SET key:{i:02} v"));
    }
    c.line("SET other v");
    assert_eq!(c.line("DBSIZE"), b":26\r\n");
    let keys = c.line("KEYS key:1*");
    assert!(keys.starts_with(b"*10\r\n"), "{}", show(&keys));
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor = "0".to_string();
    let mut rounds = 0;
    loop {
        let reply = c.line(&format!("SCAN {cursor} MATCH key:* COUNT 7"));
        let text = String::from_utf8_lossy(&reply).into_owned();
        let parts: Vec<&str> = text.split("\r\n").collect();
        // RESP3: *2, $n, cursor, *m, ($k, key)*
        cursor = parts[2].to_string();
        for k in parts[4..].iter().filter(|p| p.starts_with("key:")) {
            assert!(seen.insert(k.to_string()), "{k} returned twice");
        }
        rounds += 1;
        if cursor == "0" {
            break;
        }
        assert!(rounds < 100);
    }
    assert_eq!(seen.len(), 25);
    let only_hash = c.line("SCAN 0 TYPE hash COUNT 1000");
    assert_eq!(only_hash, b"*2\r\n$1\r\n0\r\n*0\r\n");

    // 6. Connection commands.
    let mut d = Conn::connect(&addr);
    assert_eq!(d.line("CLIENT SETNAME worker"), b"+OK\r\n");
    assert_eq!(d.line("CLIENT GETNAME"), b"$6\r\nworker\r\n");
    assert_eq!(d.line("CLIENT SETNAME a b").first(), Some(&b'-'));
    let id = String::from_utf8_lossy(&d.line("CLIENT ID"))
        .trim_start_matches(':')
        .trim()
        .to_string();
    let list = String::from_utf8_lossy(&c.line("CLIENT LIST")).into_owned();
    assert!(list.contains("name=worker"), "{list}");
    assert_eq!(c.line(&format!("CLIENT KILL ID {id}")), b":1\r\n");
    assert!(
        d.is_closed(Duration::from_secs(5)),
        "killed client still connected"
    );
    assert_eq!(c.line("CLIENT KILL ADDR 1.2.3.4:5"), b":0\r\n");
    assert_eq!(c.line("CLIENT KILL 1.2.3.4:5"), b"-ERR No such client\r\n");
    assert_eq!(
        c.line("CONFIG GET maxclients"),
        b"*2\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n"
    );
    assert_eq!(c.line("CONFIG SET maxclients 500"), b"+OK\r\n");
    assert_eq!(
        c.line("CONFIG GET maxclients"),
        b"*2\r\n$10\r\nmaxclients\r\n$3\r\n500\r\n"
    );
    assert_eq!(c.line("CONFIG SET maxclients abc").first(), Some(&b'-'));
    assert_eq!(
        c.line("CONFIG SET nosuch 1"),
        b"-ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'\r\n"
    );
    let info = String::from_utf8_lossy(&c.line("INFO")).into_owned();
    for section in [
        "# Server",
        "# Clients",
        "# Memory",
        "# Stats",
        "# Keyspace",
        "# Cluster",
    ] {
        assert!(info.contains(section), "INFO lacks {section}: {info}");
    }
    assert!(info.contains("db0:keys=26,"), "{info}");
    let count = c.line("COMMAND COUNT");
    assert!(count.starts_with(b":"));
    assert_eq!(
        c.line("COMMAND GETKEYS MSET a 1 b 2"),
        b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"
    );
    let time = c.line("TIME");
    assert!(time.starts_with(b"*2\r\n$10\r\n"), "{}", show(&time));
    assert_eq!(c.line("RESET"), b"+RESET\r\n");
    assert_eq!(
        c.line("GET nothing"),
        b"$-1\r\n",
        "RESET went back to RESP2"
    );
    assert_eq!(c.line("QUIT"), b"+OK\r\n");
    assert!(c.is_closed(Duration::from_secs(5)));
    eprintln!("strings done after {:?}", started.elapsed());
}
