//! Scripts (issue 19), against real etcd, nodes and routers.
//!
//! 1. The same EVAL / EVALSHA / SCRIPT / FUNCTION / FCALL commands against
//!    a real `redis-server` and a one-shard cluster: replies equal byte for
//!    byte, in RESP2 and RESP3 (conversions between Lua and RESP, errors,
//!    the sandbox, cjson, libraries). FUNCTION DUMP payloads restore across.
//! 2. On three nodes and two routers: keys of several shards are refused
//!    (`-CROSSSLOT`), undeclared keys elsewhere too; a read-modify-write
//!    script racing plain INCRs loses no update; a script's random and
//!    clock-made writes read the same after its leader is killed (effects,
//!    not the script, were replicated); SCRIPT LOAD and FUNCTION LOAD on one
//!    router serve on another and on a router started later; SCRIPT KILL
//!    and `-BUSY`; a killed script's writes are not applied.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{
    assert_same_as_redis, cluster, cluster_with_routers, extra_router, leaders, show, wait_until,
    Conn, RedisServer,
};
use shoal::slot::slot;

/// One command: its arguments.
type Line = &'static [&'static str];

const LIB: &str = "#!lua name=mylib\n\
redis.register_function('echo_arg', function(keys, args) return args[1] end)\n\
redis.register_function{function_name='get_ro', callback=function(keys, args) return redis.call('GET', keys[1]) end, flags={'no-writes'}, description='reads'}\n\
redis.register_function('incr_it', function(keys, args) return redis.call('INCRBY', keys[1], args[1]) end)";

const SOLO: &str = "#!lua name=solo\n\
redis.register_function{function_name='solo_f', callback=function() return 1 end, flags={'no-writes', 'allow-stale'}, description='one'}";

/// Commands whose replies must be equal in redis-server 7.0 and shoal.
const SCRIPT: &[Line] = &[
    &["FLUSHALL"],
    &["SCRIPT", "FLUSH"],
    &["FUNCTION", "FLUSH"],
    // Lua -> RESP.
    &["EVAL", "return 1", "0"],
    &["EVAL", "return 3.99", "0"],
    &["EVAL", "return -3.5", "0"],
    &["EVAL", "return 'hello'", "0"],
    &["EVAL", "return {1, 2, {3, 'x'}, nil, 4}", "0"],
    &["EVAL", "return {}", "0"],
    &["EVAL", "return {ok='fine'}", "0"],
    &["EVAL", "return {err='My Error'}", "0"],
    &["EVAL", "return redis.error_reply('MY bad')", "0"],
    &["EVAL", "return redis.status_reply('GOOD')", "0"],
    &["EVAL", "return true", "0"],
    &["EVAL", "return false", "0"],
    &["EVAL", "return nil", "0"],
    &["EVAL", "return {double=3.5}", "0"],
    &["EVAL", "return {map={a=1}}", "0"],
    &["EVAL", "return KEYS[1] .. ARGV[1] .. #KEYS .. #ARGV", "1", "k", "a", "b"],
    // RESP -> Lua, through the shard.
    &["EVAL", "return redis.call('SET', KEYS[1], ARGV[1])", "1", "k", "v"],
    &["EVAL", "return redis.call('GET', KEYS[1])", "1", "k"],
    &["EVAL", "return redis.call('GET', KEYS[1])", "1", "nokey"],
    &["EVAL", "return type(redis.call('GET', KEYS[1]))", "1", "nokey"],
    &["EVAL", "return redis.call('INCR', KEYS[1])", "1", "n"],
    &["EVAL", "return redis.call('INCRBYFLOAT', KEYS[1], '1.5')", "1", "n"],
    &["EVAL", "return redis.call('SET', KEYS[1], 'x', 'GET')", "1", "k"],
    &["EVAL", "return redis.call('TYPE', KEYS[1])", "1", "k"],
    &["EVAL", "return redis.call('TYPE', KEYS[1])['ok']", "1", "k"],
    &["EVAL", "redis.call('HSET', KEYS[1], 'f1', 'a', 'f2', 'b'); return redis.call('HGETALL', KEYS[1])", "1", "h"],
    &["EVAL", "redis.setresp(3); return redis.call('HGETALL', KEYS[1])", "1", "h"],
    &["EVAL", "redis.call('ZADD', KEYS[1], 1.5, 'a', 2, 'b'); return redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')", "1", "z"],
    &["EVAL", "redis.setresp(3); return redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')", "1", "z"],
    &["EVAL", "redis.setresp(3); return redis.call('ZSCORE', KEYS[1], 'a')", "1", "z"],
    &["EVAL", "return redis.call('ZSCORE', KEYS[1], 'a')", "1", "z"],
    &["EVAL", "redis.setresp(3); return redis.call('GET', KEYS[1])", "1", "nokey"],
    &["EVAL", "redis.call('RPUSH', KEYS[1], 'a', 'b', 'c'); return redis.call('LRANGE', KEYS[1], 0, -1)", "1", "l"],
    &["EVAL", "return redis.call('SADD', KEYS[1], 'm')", "1", "s"],
    &["EVAL", "return redis.call('SISMEMBER', KEYS[1], 'm')", "1", "s"],
    &["EVAL", "return redis.call('EXISTS', KEYS[1], KEYS[2])", "2", "k", "nokey"],
    &["EVAL", "return redis.call('MGET', KEYS[1], KEYS[2])", "2", "k", "nokey"],
    &["EVAL", "return redis.call('PING')", "0"],
    // Errors.
    &["EVAL", "return redis.call('INCR', KEYS[1])", "1", "k"],
    &["EVAL", "return redis.pcall('INCR', KEYS[1])", "1", "k"],
    &["EVAL", "local r = redis.pcall('INCR', KEYS[1]); return r['err']", "1", "k"],
    &["EVAL", "return redis.call('LPUSH', KEYS[1], 'x')", "1", "k"],
    &["EVAL", "return redis.call('nosuch')", "0"],
    &["EVAL", "return redis.pcall('nosuch')", "0"],
    &["EVAL", "return redis.call('GET')", "0"],
    &["EVAL", "return redis.call('MULTI')", "0"],
    &["EVAL", "return redis.call('BLPOP', 'l', 0)", "0"],
    &["EVAL", "return redis.call()", "0"],
    &["EVAL", "error('boom')", "0"],
    &["EVAL", "error({err='TABLE err'})", "0"],
    &["EVAL", "return +", "0"],
    &["EVAL", "x = 1", "0"],
    &["EVAL", "return undefined_variable", "0"],
    &["EVAL", "return os", "0"],
    &["EVAL", "return loadfile", "0"],
    &["EVAL", "return 1", "-1"],
    &["EVAL", "return 1", "2", "a"],
    &["EVAL", "return 1", "x"],
    &["EVAL_RO", "return redis.call('SET', KEYS[1], 'v')", "1", "k"],
    &["EVAL_RO", "return redis.call('GET', KEYS[1])", "1", "k"],
    // Libraries the sandbox keeps.
    &["EVAL", "return cjson.encode({1, 2, 3})", "0"],
    &["EVAL", "return cjson.encode({a={b=true}})", "0"],
    &["EVAL", "return cjson.decode('{\"a\":[1,2,{\"b\":null}]}')['a'][2]", "0"],
    &["EVAL", "return redis.sha1hex('abc')", "0"],
    &["EVAL", "return bit.band(5, 3) .. bit.bor(5, 3) .. bit.tohex(255)", "0"],
    &["EVAL", "return string.format('%d-%s', 7, 'x') .. math.floor(2.5) .. table.concat({'a','b'}, ',')", "0"],
    // The script cache.
    &["EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "0"],
    &["EVAL", "return 1", "0"],
    &["EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "0"],
    &["EVALSHA", "E0E1F9FABFC9D4800C877A703B823AC0578FF8DB", "0"],
    &["SCRIPT", "LOAD", "return redis.call('GET', KEYS[1])"],
    &["EVALSHA", "4e6d8fc8bb01276962cce5371fa795a7763657ae", "1", "k"],
    &["EVALSHA_RO", "4e6d8fc8bb01276962cce5371fa795a7763657ae", "1", "k"],
    &["SCRIPT", "EXISTS", "4e6d8fc8bb01276962cce5371fa795a7763657ae", "ffffffffffffffffffffffffffffffffffffffff"],
    &["SCRIPT", "FLUSH", "ASYNC"],
    &["SCRIPT", "FLUSH", "bogus"],
    &["SCRIPT", "EXISTS", "4e6d8fc8bb01276962cce5371fa795a7763657ae"],
    &["EVALSHA", "4e6d8fc8bb01276962cce5371fa795a7763657ae", "1", "k"],
    &["SCRIPT", "KILL"],
    &["SCRIPT", "bogus"],
    // Functions.
    &["FUNCTION", "LOAD", LIB],
    &["FUNCTION", "LOAD", LIB],
    &["FUNCTION", "LOAD", "REPLACE", LIB],
    &["FUNCTION", "LOAD", "#!lua name=other\nredis.register_function('echo_arg', function() return 1 end)"],
    &["FUNCTION", "LOAD", "return 1"],
    &["FUNCTION", "LOAD", "#!lua name=bad\nreturn +"],
    &["FUNCTION", "LOAD", "#!lua name=nofuncs\nlocal a = 1"],
    &["FUNCTION", "LOAD", "#!lua name=callsredis\nredis.call('GET', 'x')"],
    &["FUNCTION", "LOAD", "bogus", "x"],
    &["FCALL", "echo_arg", "0", "hi"],
    &["FCALL", "incr_it", "1", "cnt", "5"],
    &["FCALL", "get_ro", "1", "cnt"],
    &["FCALL_RO", "get_ro", "1", "cnt"],
    &["FCALL_RO", "incr_it", "1", "cnt", "5"],
    &["FCALL", "nosuch", "0"],
    // Redis lists a library's functions in its hash table's order, which
    // changes: the listings name a one-function library.
    &["FUNCTION", "LOAD", SOLO],
    &["FUNCTION", "LIST", "LIBRARYNAME", "so*"],
    &["FUNCTION", "LIST", "LIBRARYNAME", "solo", "WITHCODE"],
    &["FUNCTION", "LIST", "LIBRARYNAME", "zz*"],
    &["FUNCTION", "LIST", "bogus"],
    &["FUNCTION", "STATS"],
    &["FUNCTION", "KILL"],
    &["FUNCTION", "RESTORE", "bogus"],
    &["FUNCTION", "DELETE", "nosuch"],
    &["FUNCTION", "DELETE", "mylib"],
    &["FCALL", "echo_arg", "0", "hi"],
    &["FUNCTION", "LIST"],
    &["FUNCTION", "LIST", "WITHCODE"],
    &["FUNCTION", "DELETE", "solo"],
];

/// A bulk reply's payload.
fn bulk(reply: &[u8]) -> Vec<u8> {
    let nl = reply.iter().position(|b| *b == b'\n').expect("a header");
    assert_eq!(reply[0], b'$', "a bulk reply: {}", show(reply));
    reply[nl + 1..reply.len() - 2].to_vec()
}

#[test]
fn scripts_match_redis_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let cl = cluster(&dir.path().join("cluster"), 1, 1, 1);
    let mut s = Conn::connect(&cl.router_addr());
    let mut r = Conn::connect(&redis.addr);
    assert_same_as_redis(&mut s, &mut r, SCRIPT);

    // FUNCTION DUMP payloads move both ways.
    for c in [&mut s, &mut r] {
        c.line("HELLO 2");
        assert_eq!(
            c.cmd(&[b"FUNCTION", b"LOAD", LIB.as_bytes()]),
            b"$5\r\nmylib\r\n"
        );
    }
    let from_redis = bulk(&r.line("FUNCTION DUMP"));
    let from_shoal = bulk(&s.line("FUNCTION DUMP"));
    assert_eq!(s.line("FUNCTION FLUSH"), b"+OK\r\n");
    assert_eq!(r.line("FUNCTION FLUSH"), b"+OK\r\n");
    assert_eq!(s.cmd(&[b"FUNCTION", b"RESTORE", &from_redis]), b"+OK\r\n");
    assert_eq!(r.cmd(&[b"FUNCTION", b"RESTORE", &from_shoal]), b"+OK\r\n");
    for c in [&mut s, &mut r] {
        assert_eq!(c.line("FCALL echo_arg 0 back"), b"$4\r\nback\r\n");
    }
    let again = [&b"FUNCTION"[..], b"RESTORE", &from_shoal];
    assert_eq!(s.cmd(&again), r.cmd(&again));
    let replace = [&b"FUNCTION"[..], b"RESTORE", &from_shoal, b"REPLACE"];
    assert_eq!(s.cmd(&replace), b"+OK\r\n");
}

/// Keys of the form `<prefix><n>` on shard `shard` of table `default`.
fn keys_on(
    table: &shoal::meta::descriptor::TableDescriptor,
    shard: usize,
    prefix: &str,
    n: usize,
) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| table.shard_for_slot(slot(k.as_bytes())) == shard)
        .take(n)
        .collect()
}

fn con(addr: &str) -> redis::Connection {
    let c = redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c
}

const RMW: &str = "local v = tonumber(redis.call('GET', KEYS[1]) or '0') \
    redis.call('SET', KEYS[1], v + 1) return v + 1";

#[test]
fn scripts_on_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    // Leader balance off: the test kills a leader's node and starts it
    // again, and later checks that a looping script holds its shard's
    // leader (-BUSY), which a transfer back to the restarted node would
    // move away mid-check.
    let no_balance = ["--leader-balance-interval-ms", "0"];
    let mut cl = cluster_with_routers(&dir.path().join("cluster"), 3, 3, 3, &no_balance);
    let addr = cl.router_addr();
    let (other_router, _router_proc) =
        extra_router(&cl, &dir.path().join("router2"), "", &no_balance);
    let (table, _) = leaders(&cl);
    let a = keys_on(&table, 0, "a", 2);
    let b = keys_on(&table, 1, "b", 1);
    let mut c = con(&addr);

    // Keys on two shards are refused; an undeclared key elsewhere too.
    let crossed: redis::RedisResult<i64> = redis::cmd("EVAL")
        .arg("return 1")
        .arg(2)
        .arg(&a[0])
        .arg(&b[0])
        .query(&mut c);
    let e = crossed.unwrap_err();
    assert_eq!(e.code(), Some("CROSSSLOT"), "{e}");
    let same: i64 = redis::cmd("EVAL")
        .arg("redis.call('SET', KEYS[1], 1) redis.call('SET', KEYS[2], 2) return 2")
        .arg(2)
        .arg(&a[0])
        .arg(&a[1])
        .query(&mut c)
        .unwrap();
    assert_eq!(same, 2);
    let undeclared: redis::RedisResult<String> = redis::cmd("EVAL")
        .arg("return redis.call('GET', ARGV[1])")
        .arg(1)
        .arg(&a[0])
        .arg(&b[0])
        .query(&mut c);
    let e = undeclared.unwrap_err().to_string();
    assert!(
        e.contains("Script attempted to access a non local key in a cluster node"),
        "{e}"
    );

    // A read-modify-write script racing plain INCRs loses nothing: four
    // script clients and two INCR clients, 150 each.
    let key = a[0].clone();
    redis::cmd("DEL").arg(&key).query::<i64>(&mut c).unwrap();
    let per = 150;
    let mut threads = Vec::new();
    for i in 0..6 {
        let (addr, key) = (
            if i % 2 == 0 {
                addr.clone()
            } else {
                other_router.clone()
            },
            key.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut c = con(&addr);
            let mut seen = Vec::new();
            for _ in 0..per {
                if i < 4 {
                    let v: i64 = redis::cmd("EVAL")
                        .arg(RMW)
                        .arg(1)
                        .arg(&key)
                        .query(&mut c)
                        .unwrap();
                    seen.push(v);
                } else {
                    let _: i64 = redis::cmd("INCR").arg(&key).query(&mut c).unwrap();
                }
            }
            seen
        }));
    }
    let mut seen: Vec<i64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let total: i64 = redis::cmd("GET").arg(&key).query(&mut c).unwrap();
    assert_eq!(total, 6 * per as i64, "an update was lost");
    let n = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), n, "two scripts saw the same value");

    // A hot key does not starve a script: while six clients INCR it one
    // at a time and two in pipelines of 16, every one of 30 scripts on it
    // commits (a script that lost twice holds the group's other writes
    // back for its next run), and nothing is lost.
    let hot = format!("{key}:hot");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammers: Vec<_> = (0..8)
        .map(|i| {
            let (addr, key, stop) = (addr.clone(), hot.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut c = con(&addr);
                let mut done = 0i64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if i < 6 {
                        let _: i64 = redis::cmd("INCR").arg(&key).query(&mut c).unwrap();
                        done += 1;
                    } else {
                        let mut p = redis::pipe();
                        for _ in 0..16 {
                            p.cmd("INCR").arg(&key);
                        }
                        let _: Vec<i64> = p.query(&mut c).unwrap();
                        done += 16;
                    }
                }
                done
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..30 {
        let r: redis::RedisResult<i64> = redis::cmd("EVAL").arg(RMW).arg(1).arg(&hot).query(&mut c);
        if let Err(e) = r {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            panic!("a script on a hot key failed: {e}");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let incrs: i64 = hammers.into_iter().map(|t| t.join().unwrap()).sum();
    let total: i64 = redis::cmd("GET").arg(&hot).query(&mut c).unwrap();
    assert_eq!(total, incrs + 30, "an update was lost on the hot key");

    // SCRIPT LOAD and FUNCTION LOAD through one router serve on the other
    // within a second; FUNCTION DELETE too.
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(RMW)
        .query(&mut c)
        .unwrap();
    let mut c2 = con(&other_router);
    let v: i64 = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(1)
        .arg(&b[0])
        .query(&mut c2)
        .unwrap();
    assert_eq!(v, 1);
    let lib: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(LIB)
        .query(&mut c)
        .unwrap();
    assert_eq!(lib, "mylib");
    // At once: a router that has not seen the library through its watch
    // yet reads etcd on the miss (and EVALSHA likewise above).
    let v: String = redis::cmd("FCALL")
        .arg("echo_arg")
        .arg(0)
        .arg("x")
        .query(&mut c2)
        .unwrap();
    assert_eq!(v, "x");

    // Effects, not scripts, are replicated: a value made of the leader's
    // clock and Lua's random numbers reads the same after that leader dies.
    let made: String = redis::cmd("EVAL")
        .arg("local t = redis.call('TIME') local v = t[1] .. '.' .. t[2] .. ':' .. math.random() .. ':' .. tostring({}) redis.call('SET', KEYS[1], v) return v")
        .arg(1)
        .arg(&b[0])
        .query(&mut c)
        .unwrap();
    let (_, leader_of) = leaders(&cl);
    let victim = leader_of[&table.shards[1].group_id];
    cl.kill_node(victim).unwrap();
    let mut after = None;
    assert!(wait_until(Duration::from_secs(30), || {
        after = redis::cmd("GET")
            .arg(&b[0])
            .query::<Option<String>>(&mut c)
            .ok()
            .flatten();
        after.is_some()
    }));
    assert_eq!(after.as_deref(), Some(made.as_str()));
    // Scripts run on the new leader; the loaded script and function too.
    let v: i64 = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(1)
        .arg(&key)
        .query(&mut c)
        .unwrap();
    assert_eq!(v, 6 * per as i64 + 1);
    cl.start_node(victim).unwrap();

    // A router started later knows the loaded script and the library.
    let (late_router, _late) = extra_router(&cl, &dir.path().join("router3"), "", &[]);
    let mut c3 = con(&late_router);
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .query(&mut c3)
        .unwrap();
    assert_eq!(exists, vec![1]);
    let v: String = redis::cmd("FCALL")
        .arg("echo_arg")
        .arg(0)
        .arg("late")
        .query(&mut c3)
        .unwrap();
    assert_eq!(v, "late");
    let _: () = redis::cmd("FUNCTION")
        .arg("DELETE")
        .arg("mylib")
        .query(&mut c)
        .unwrap();
    assert!(wait_until(Duration::from_secs(1), || {
        redis::cmd("FCALL")
            .arg("echo_arg")
            .arg(0)
            .arg("x")
            .query::<String>(&mut c3)
            .is_err()
    }));

    // A script that loops is killed by SCRIPT KILL; past 5 s other scripts
    // on its shard are answered -BUSY; its write is not applied.
    let loop_key = a[1].clone();
    let done = Arc::new(AtomicBool::new(false));
    let looping = {
        let (addr, key, done) = (addr.clone(), loop_key.clone(), done.clone());
        std::thread::spawn(move || {
            let mut c = con(&addr);
            let r: redis::RedisResult<i64> = redis::cmd("EVAL")
                .arg("redis.call('SET', KEYS[1], 'half') while true do end")
                .arg(1)
                .arg(&key)
                .query(&mut c);
            done.store(true, Ordering::SeqCst);
            r
        })
    };
    std::thread::sleep(Duration::from_millis(5500));
    assert!(!done.load(Ordering::SeqCst), "the loop ended by itself");
    let busy: redis::RedisResult<i64> = redis::cmd("EVAL")
        .arg("return 1")
        .arg(1)
        .arg(&loop_key)
        .query(&mut c);
    assert_eq!(busy.unwrap_err().code(), Some("BUSY"));
    // Plain commands are not held up by the script.
    let _: () = redis::cmd("SET")
        .arg(&a[0])
        .arg("free")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SCRIPT").arg("KILL").query(&mut c2).unwrap();
    let killed = looping.join().unwrap().unwrap_err().to_string();
    assert!(
        killed.contains("Script killed by user with SCRIPT KILL"),
        "{killed}"
    );
    let half: Option<String> = redis::cmd("GET").arg(&loop_key).query(&mut c).unwrap();
    assert_eq!(
        half,
        Some("2".to_string()),
        "the killed script's write was applied"
    );
    let not_busy: redis::RedisResult<()> = redis::cmd("SCRIPT").arg("KILL").query(&mut c);
    assert_eq!(not_busy.unwrap_err().code(), Some("NOTBUSY"));
    let v: i64 = redis::cmd("EVAL")
        .arg("return 7")
        .arg(1)
        .arg(&loop_key)
        .query(&mut c)
        .unwrap();
    assert_eq!(v, 7);
}
