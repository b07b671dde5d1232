//! Lists, sets and bitmaps through the `redis` crate's typed API (the
//! `Commands` trait, pipelines and scan iterators), as a Rust application
//! uses them, against a real cluster (one node, three shards, so keys without
//! a hash tag fall on different shards). The crate's hash and sorted-set use
//! is in tests/collections.rs (a session hash, a leaderboard), its BRPOP job
//! queue across two routers in tests/blocking.rs.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::num::NonZeroUsize;

use redis::{Commands, Direction, LposOptions, RedisResult};

use common::{cluster, connect};

#[test]
fn lists_sets_bitmaps_through_the_redis_crate() {
    let dir = tempfile::tempdir().unwrap();
    let cl = cluster(&dir.path().join("cluster"), 1, 3, 1);
    let mut con = connect(&cl.router_addr());
    lists(&mut con);
    sets(&mut con);
    bitmaps(&mut con);
}

/// A "recent activity" feed capped at five entries, and a work list moved
/// between keys.
fn lists(con: &mut redis::Connection) {
    let feed = "rs:feed";
    for i in 0..8 {
        let n: usize = con.lpush(feed, format!("event{i}")).unwrap();
        assert_eq!(n, if i < 5 { i + 1 } else { 6 });
        let () = con.ltrim(feed, 0, 4).unwrap();
    }
    let recent: Vec<String> = con.lrange(feed, 0, -1).unwrap();
    assert_eq!(recent, ["event7", "event6", "event5", "event4", "event3"]);
    assert_eq!(con.llen::<_, usize>(feed).unwrap(), 5);
    assert_eq!(
        con.lindex::<_, Option<String>>(feed, -1)
            .unwrap()
            .as_deref(),
        Some("event3")
    );
    let () = con.lset(feed, 0, "latest").unwrap();
    let n: i64 = con.linsert_before(feed, "event6", "between").unwrap();
    assert_eq!(n, 6);
    let n: i64 = con.linsert_after(feed, "nothing", "x").unwrap();
    assert_eq!(n, -1, "LINSERT with a missing pivot");
    let at: Option<usize> = con.lpos(feed, "event4", LposOptions::default()).unwrap();
    assert_eq!(at, Some(4));
    let n: usize = con.rpush(feed, &["dup", "dup", "dup"]).unwrap();
    assert_eq!(n, 9);
    let removed: usize = con.lrem(feed, -2, "dup").unwrap();
    assert_eq!(removed, 2);
    let popped: Vec<String> = con.lpop(feed, NonZeroUsize::new(2)).unwrap();
    assert_eq!(popped, ["latest", "between"]);
    let last: Option<String> = con.rpop(feed, None).unwrap();
    assert_eq!(last.as_deref(), Some("dup"));
    let rest: Vec<String> = con.lrange(feed, 0, -1).unwrap();
    assert_eq!(rest, ["event6", "event5", "event4", "event3"]);

    // Moving work between lists on the same shard (hash tag) and on
    // different shards; the element is in exactly one list after each move.
    let (todo, doing) = ("{rs:w}todo", "{rs:w}doing");
    let _: usize = con.rpush(todo, &["a", "b", "c"]).unwrap();
    let moved: String = con
        .lmove(todo, doing, Direction::Left, Direction::Right)
        .unwrap();
    assert_eq!(moved, "a");
    let moved: String = con.rpoplpush(todo, doing).unwrap();
    assert_eq!(moved, "c");
    let other_shard = "rs:elsewhere";
    // doing is [c, a] (RPOPLPUSH pushes on the left).
    let moved: String = con
        .lmove(doing, other_shard, Direction::Right, Direction::Left)
        .unwrap();
    assert_eq!(moved, "a");
    let lens: (usize, usize, usize) = redis::pipe()
        .llen(todo)
        .llen(doing)
        .llen(other_shard)
        .query(con)
        .unwrap();
    assert_eq!(lens, (1, 1, 1));
    let nothing: Option<String> = con
        .lmove("rs:none", doing, Direction::Left, Direction::Left)
        .unwrap();
    assert_eq!(nothing, None);
    let popped: Option<(String, String)> = con.blpop(todo, 1.0).unwrap();
    assert_eq!(popped, Some((todo.to_string(), "b".to_string())));
    let popped: Option<(String, String)> = con.brpop(todo, 0.2).unwrap();
    assert_eq!(popped, None, "BRPOP on an emptied list times out");
    let () = con.set("rs:str", "v").unwrap();
    let err: RedisResult<usize> = con.lpush("rs:str", "x");
    let err = err.unwrap_err();
    assert_eq!(err.code(), Some("WRONGTYPE"), "{err}");
    let n: usize = con.del(&[feed, doing, other_shard, "rs:str"]).unwrap();
    assert_eq!(n, 4);
}

/// Tags on articles: membership, set algebra on one shard, moves across
/// shards, random picks and a scan.
fn sets(con: &mut redis::Connection) {
    let (rust, db, web) = ("{rs:tag}rust", "{rs:tag}db", "{rs:tag}web");
    let n: usize = con.sadd(rust, &["a1", "a2", "a3", "a4"]).unwrap();
    assert_eq!(n, 4);
    let n: usize = con.sadd(rust, &["a1", "a5"]).unwrap();
    assert_eq!(n, 1, "only a5 is new");
    let _: usize = con.sadd(db, &["a2", "a4", "a6"]).unwrap();
    let _: usize = con.sadd(web, &["a4", "a7"]).unwrap();
    let all: HashSet<String> = con.smembers(rust).unwrap();
    assert_eq!(all, ["a1", "a2", "a3", "a4", "a5"].map(String::from).into());
    assert!(con.sismember::<_, _, bool>(rust, "a3").unwrap());
    assert!(!con.sismember::<_, _, bool>(rust, "a9").unwrap());
    let many: Vec<bool> = con.smismember(rust, &["a1", "a9", "a5"]).unwrap();
    assert_eq!(many, [true, false, true]);
    assert_eq!(con.scard::<_, usize>(rust).unwrap(), 5);
    let both: BTreeSet<String> = con.sinter(&[rust, db]).unwrap();
    assert_eq!(both, ["a2", "a4"].map(String::from).into());
    let any: BTreeSet<String> = con.sunion(&[rust, db, web]).unwrap();
    assert_eq!(any.len(), 7);
    let only: BTreeSet<String> = con.sdiff(&[rust, db, web]).unwrap();
    assert_eq!(only, ["a1", "a3", "a5"].map(String::from).into());
    let n: usize = con.sinterstore("{rs:tag}all3", &[rust, db, web]).unwrap();
    assert_eq!(n, 1);
    let n: usize = con.sunionstore("{rs:tag}union", &[db, web]).unwrap();
    assert_eq!(n, 4);
    let n: usize = con.srem(rust, &["a5", "a9"]).unwrap();
    assert_eq!(n, 1);

    // SMOVE to a key on another shard: atomic, the member in one place.
    let archive = "rs:archive";
    assert!(con.smove::<_, _, _, bool>(rust, archive, "a1").unwrap());
    assert!(!con.smove::<_, _, _, bool>(rust, archive, "a1").unwrap());
    let (here, there): (bool, bool) = redis::pipe()
        .sismember(rust, "a1")
        .sismember(archive, "a1")
        .query(con)
        .unwrap();
    assert_eq!((here, there), (false, true));

    // Random picks: distinct members of the set; SPOP removes its pick.
    let picks: Vec<String> = con.srandmember_multiple(rust, 2).unwrap();
    assert_eq!(picks.iter().collect::<HashSet<_>>().len(), 2, "{picks:?}");
    assert!(picks
        .iter()
        .all(|p| ["a2", "a3", "a4"].contains(&p.as_str())));
    let popped: String = con.spop(rust).unwrap();
    assert!(!con.sismember::<_, _, bool>(rust, &popped).unwrap());
    assert_eq!(con.scard::<_, usize>(rust).unwrap(), 2);

    // SSCAN through the crate's iterator: every member once.
    let big = "rs:big";
    let members: Vec<String> = (0..500).map(|i| format!("m{i:03}")).collect();
    let _: usize = con.sadd(big, &members).unwrap();
    let scanned: Vec<String> = con.sscan(big).unwrap().collect();
    assert_eq!(scanned.len(), 500);
    let unique: BTreeSet<String> = scanned.into_iter().collect();
    assert_eq!(unique, members.iter().cloned().collect::<BTreeSet<_>>());
    let matched: Vec<String> = con.sscan_match(big, "m49*").unwrap().collect();
    assert_eq!(matched.len(), 10);
    let n: usize = con
        .del(&[rust, db, web, "{rs:tag}all3", "{rs:tag}union", archive, big])
        .unwrap();
    assert_eq!(n, 7);
}

/// Daily active users as bitmaps, one bit per user id.
fn bitmaps(con: &mut redis::Connection) {
    let (mon, tue) = ("{rs:dau}mon", "{rs:dau}tue");
    for uid in [1usize, 5, 9, 100] {
        assert!(!con.setbit::<_, bool>(mon, uid, true).unwrap());
    }
    for uid in [5usize, 9, 2000] {
        let _: bool = con.setbit(tue, uid, true).unwrap();
    }
    assert!(con.setbit::<_, bool>(mon, 5, true).unwrap(), "old bit");
    assert!(con.getbit::<_, bool>(mon, 9).unwrap());
    assert!(!con.getbit::<_, bool>(mon, 10).unwrap());
    assert!(!con.getbit::<_, bool>(mon, 1 << 20).unwrap());
    assert_eq!(con.bitcount::<_, usize>(mon).unwrap(), 4);
    assert_eq!(con.bitcount_range::<_, usize>(mon, 0, 0).unwrap(), 2);
    let first: i64 = redis::cmd("BITPOS").arg(mon).arg(1).query(con).unwrap();
    assert_eq!(first, 1);
    let len: usize = con.bit_and("{rs:dau}both", &[mon, tue]).unwrap();
    assert_eq!(len, 251);
    assert_eq!(con.bitcount::<_, usize>("{rs:dau}both").unwrap(), 2);
    let _: usize = con.bit_or("{rs:dau}any", &[mon, tue]).unwrap();
    assert_eq!(con.bitcount::<_, usize>("{rs:dau}any").unwrap(), 5);
    let _: usize = con.bit_not("{rs:dau}not", mon).unwrap();
    assert_eq!(con.bitcount::<_, usize>("{rs:dau}not").unwrap(), 13 * 8 - 4);
    let bytes: Vec<u8> = con.get(mon).unwrap();
    assert_eq!(&bytes[..2], &[0b0100_0100, 0b0100_0000]);
    let err: RedisResult<bool> = redis::cmd("SETBIT").arg(mon).arg(-1).arg(1).query(con);
    assert!(err
        .unwrap_err()
        .to_string()
        .contains("bit offset is not an integer or out of range"),);
    let n: usize = con
        .del(&[mon, tue, "{rs:dau}both", "{rs:dau}any", "{rs:dau}not"])
        .unwrap();
    assert_eq!(n, 5);
}
