//! Blocking commands against a real cluster (three nodes, three replicas)
//! with two routers: waiters are served in the order they blocked, across
//! routers; timeouts, CLIENT UNBLOCK and MULTI behave as in Redis; a client
//! that disconnects while blocked pops nothing; and a job queue with BRPOP
//! consumers on both routers hands out every job exactly once.

mod common;

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::{cluster, connect, extra_router, show, wait_until, Conn};

/// A raw connection that sends a blocking command and reads its reply on
/// a thread.
fn block(addr: &str, line: &str) -> thread::JoinHandle<(Vec<u8>, Duration)> {
    let addr = addr.to_string();
    let line = line.to_string();
    thread::spawn(move || {
        let mut c = Conn::connect(&addr);
        let t = Instant::now();
        let r = c.line(&line);
        (r, t.elapsed())
    })
}

/// Give a blocked connection time to reach the node and wait there (the
/// order in which clients block is what the FIFO assertions test).
fn settle() {
    thread::sleep(Duration::from_millis(400));
}

#[test]
fn blocking_pops() {
    let dir = tempfile::tempdir().unwrap();
    let cl = cluster(&dir.path().join("cluster"), 3, 1, 3);
    let a = cl.router_addr();
    let (b, _router_b) = extra_router(&cl, &dir.path().join("router-b"), "", &[]);
    let mut c = Conn::connect(&a);

    // 1. Timeouts: nil after the timeout, never before.
    let t = Instant::now();
    assert_eq!(c.line("BLPOP empty 0.3"), b"*-1\r\n");
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(c.line("BLMOVE empty other LEFT RIGHT 0.2"), b"*-1\r\n");
    assert_eq!(c.line("BZPOPMIN emptyz 0.2"), b"*-1\r\n");
    assert_eq!(c.line("BLPOP empty -1"), b"-ERR timeout is negative\r\n");
    assert_eq!(
        c.line("BLPOP empty abc"),
        b"-ERR timeout is not a float or out of range\r\n"
    );
    // Data already there: no wait at all.
    c.line("RPUSH ready x");
    assert_eq!(c.line("BLPOP ready 0"), b"*2\r\n$5\r\nready\r\n$1\r\nx\r\n");

    // 2. FIFO across routers: the client that blocked first is served first,
    // whichever router it is on; each push serves one waiter.
    let first = block(&b, "BLPOP q 0");
    settle();
    let second = block(&a, "BRPOP q 0");
    settle();
    let third = block(&b, "BLPOP q 0");
    settle();
    assert_eq!(c.line("RPUSH q one"), b":1\r\n");
    let (r1, _) = first.join().unwrap();
    assert_eq!(r1, b"*2\r\n$1\r\nq\r\n$3\r\none\r\n", "{}", show(&r1));
    assert_eq!(c.line("RPUSH q two"), b":1\r\n");
    let (r2, _) = second.join().unwrap();
    assert_eq!(r2, b"*2\r\n$1\r\nq\r\n$3\r\ntwo\r\n", "{}", show(&r2));
    assert_eq!(c.line("RPUSH q three"), b":1\r\n");
    let (r3, _) = third.join().unwrap();
    assert_eq!(r3, b"*2\r\n$1\r\nq\r\n$5\r\nthree\r\n", "{}", show(&r3));
    assert_eq!(c.line("EXISTS q"), b":0\r\n");

    // 3. A client that disconnects while blocked pops nothing.
    {
        let mut gone = TcpStream::connect(&a).unwrap();
        use std::io::Write;
        gone.write_all(b"*3\r\n$5\r\nBLPOP\r\n$4\r\nlost\r\n$1\r\n0\r\n")
            .unwrap();
        settle();
    }
    settle();
    assert_eq!(c.line("RPUSH lost kept"), b":1\r\n");
    thread::sleep(Duration::from_millis(500));
    assert_eq!(c.line("LRANGE lost 0 -1"), b"*1\r\n$4\r\nkept\r\n");

    // 4. CLIENT UNBLOCK, as a timeout or as an error.
    let mut blocked = Conn::connect(&b);
    let id = String::from_utf8(blocked.line("CLIENT ID")).unwrap();
    let id = id.trim_start_matches(':').trim().to_string();
    let waiter = thread::spawn(move || blocked.line("BLPOP never 0"));
    settle();
    let mut admin = Conn::connect(&b);
    assert_eq!(admin.line(&format!("CLIENT UNBLOCK {id}")), b":1\r\n");
    assert_eq!(waiter.join().unwrap(), b"*-1\r\n");
    assert_eq!(admin.line(&format!("CLIENT UNBLOCK {id}")), b":0\r\n");
    let mut blocked = Conn::connect(&b);
    let id = String::from_utf8(blocked.line("CLIENT ID")).unwrap();
    let id = id.trim_start_matches(':').trim().to_string();
    let waiter = thread::spawn(move || blocked.line("BZPOPMAX never 0"));
    settle();
    assert_eq!(admin.line(&format!("CLIENT UNBLOCK {id} ERROR")), b":1\r\n");
    assert_eq!(
        waiter.join().unwrap(),
        b"-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n"
    );
    assert_eq!(
        admin.line("CLIENT UNBLOCK 1 MAYBE"),
        b"-ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR\r\n"
    );

    // 4b. CLIENT KILL ends a client while it is blocked, after it has
    // served other requests, and what it waited for stays in the list.
    let mut blocked = Conn::connect(&b);
    let id = String::from_utf8(blocked.line("CLIENT ID")).unwrap();
    let id = id.trim_start_matches(':').trim().to_string();
    assert_eq!(blocked.line("PING"), b"+PONG\r\n");
    blocked.send(&[b"BLPOP", b"killed", b"0"]);
    settle();
    assert_eq!(admin.line(&format!("CLIENT KILL ID {id}")), b":1\r\n");
    assert!(
        blocked.is_closed(Duration::from_secs(5)),
        "a client killed while blocked is still connected"
    );
    assert_eq!(c.line("RPUSH killed kept"), b":1\r\n");
    thread::sleep(Duration::from_millis(300));
    assert_eq!(c.line("LRANGE killed 0 -1"), b"*1\r\n$4\r\nkept\r\n");

    // 5. Inside MULTI a blocking command does not block.
    assert_eq!(c.line("MULTI"), b"+OK\r\n");
    assert_eq!(c.line("BLPOP nothing 0"), b"+QUEUED\r\n");
    assert_eq!(c.line("BZPOPMIN nothing 0"), b"+QUEUED\r\n");
    assert_eq!(c.line("EXEC"), b"*2\r\n*-1\r\n*-1\r\n");

    // 6. BLMOVE and BZPOPMIN wake on a push; BZPOPMIN's score is a double.
    let mover = block(&b, "BLMOVE {m}src {m}dst RIGHT LEFT 0");
    settle();
    c.line("RPUSH {m}src v");
    assert_eq!(mover.join().unwrap().0, b"$1\r\nv\r\n");
    assert_eq!(c.line("LRANGE {m}dst 0 -1"), b"*1\r\n$1\r\nv\r\n");
    let zpop = block(&a, "BZPOPMIN z1 0");
    settle();
    c.line("ZADD z1 2.5 m");
    assert_eq!(
        zpop.join().unwrap().0,
        b"*3\r\n$2\r\nz1\r\n$1\r\nm\r\n$3\r\n2.5\r\n"
    );
    let mpop = block(&a, "BLMPOP 0 2 {k}a {k}b RIGHT COUNT 5");
    settle();
    c.line("RPUSH {k}b 1 2");
    assert_eq!(
        mpop.join().unwrap().0,
        b"*2\r\n$4\r\n{k}b\r\n*2\r\n$1\r\n2\r\n$1\r\n1\r\n"
    );
    // 7. A job queue: 200 jobs pushed through router A, two consumers
    // with BRPOP on each router; every job is taken exactly once.
    let mut producer = connect(&a);
    let consumers: Vec<_> = [a.clone(), a.clone(), b.clone(), b.clone()]
        .into_iter()
        .map(|addr| {
            thread::spawn(move || {
                let mut con = connect(&addr);
                let mut got = Vec::new();
                loop {
                    let r: Option<(String, String)> = redis::cmd("BRPOP")
                        .arg("jobs")
                        .arg(1.0)
                        .query(&mut con)
                        .unwrap();
                    match r {
                        Some((_, job)) if job == "stop" => return got,
                        Some((_, job)) => got.push(job),
                        None => {}
                    }
                }
            })
        })
        .collect();
    for i in 0..200 {
        let _: i64 = redis::cmd("LPUSH")
            .arg("jobs")
            .arg(format!("job{i}"))
            .query(&mut producer)
            .unwrap();
    }
    assert!(wait_until(Duration::from_secs(30), || {
        let n: i64 = redis::cmd("LLEN").arg("jobs").query(&mut producer).unwrap();
        n == 0
    }));
    for _ in 0..4 {
        let _: i64 = redis::cmd("LPUSH")
            .arg("jobs")
            .arg("stop")
            .query(&mut producer)
            .unwrap();
    }
    let mut all = Vec::new();
    let mut busy = 0;
    for t in consumers {
        let got = t.join().unwrap();
        busy += !got.is_empty() as usize;
        all.extend(got);
    }
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 200, "a job was lost or taken twice");
    assert_eq!(unique.len(), 200);
    assert!(busy >= 2, "the jobs went to one consumer only");
}
