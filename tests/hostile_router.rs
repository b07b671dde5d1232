//! Hostile input through real sockets to real router processes: the router
//! neither crashes nor grows without bound, and other clients keep being
//! served. One single-node cluster (1 shard, 1 replica) serves every case;
//! cases that need their own limits get their own router process.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{encode, extra_router, wait_until, Conn};
use shoal::devcluster::{free_port, resp_request, LocalCluster, Proc};

/// Router A's limits: small, so the hostile inputs are cheap to send.
const LIMITED: &str = "rebalance = false
max_value_len = 131072
max_output_len = 1048576
client_query_buffer_limit = 1048576
max_multi_commands = 5
max_watch_keys = 5
";

#[test]
fn hostile_router() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = common::cluster(dir.path(), 1, 1, 1);
    let main = cluster.router_addr();
    assert_served(&main);

    let (a, mut router_a) = extra_router(&cluster, &dir.path().join("router-a"), LIMITED, &[]);
    // First on router A, so its memory peak is not masked by other cases.
    output_limit_checked_per_reply(&a, &mut router_a);
    assert_alive(&a, &mut router_a, &main);
    query_buffer_limit(&a, &mut router_a);
    assert_alive(&a, &mut router_a, &main);
    multi_and_watch_caps(&a);
    assert_alive(&a, &mut router_a, &main);
    idle_timeout_and_keepalive(&a);
    assert_alive(&a, &mut router_a, &main);

    let (b, mut router_b) = extra_router(
        &cluster,
        &dir.path().join("router-b"),
        "rebalance = false\n",
        &["--requirepass", "pw"],
    );
    unauthenticated_limits(&b);
    assert!(router_b.is_running(), "router B died");
    assert_served(&main);

    slow_huge_multibulk(&main);
    assert_served(&main);

    accept_survives_fd_exhaustion(&cluster, &dir.path().join("router-c"));
    assert_served(&main);
    assert!(cluster.router_pid(0).is_some(), "main router died");
    assert!(router_a.is_running() && router_b.is_running());
}

/// A fresh connection gets PONG and a write/read round trip.
fn assert_served(addr: &str) {
    let mut c = Conn::connect(addr);
    assert_eq!(c.line("PING"), b"+PONG\r\n", "{addr}");
    assert_eq!(c.line("SET served:k here"), b"+OK\r\n", "{addr}");
    assert_eq!(c.line("GET served:k"), b"$4\r\nhere\r\n", "{addr}");
}

fn assert_alive(addr: &str, router: &mut Proc, main: &str) {
    assert!(
        router.is_running(),
        "router {addr} died: {}",
        router.log_tail(20)
    );
    assert_served(addr);
    assert_served(main);
}

/// A field of /proc/<pid>/status in KiB (VmRSS, VmHWM).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn log_has(router: &Proc, text: &str) -> bool {
    std::fs::read_to_string(router.log_path()).is_ok_and(|log| log.contains(text))
}

/// Write as much of `bytes` as the peer takes; false once it closed.
fn write_until_closed(s: &mut TcpStream, bytes: &[u8]) -> bool {
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(bytes).is_ok()
}

/// Item: the output limit is checked as replies are produced. A client
/// pipelining 2,000 GETs of a 100 KiB value (200 MB of replies) without
/// reading is closed once 1 MiB is unread, and the router never holds more
/// than a few MiB for it (before, a group of 512 replies, 50 MB, was built
/// before the first check).
fn output_limit_checked_per_reply(addr: &str, router: &mut Proc) {
    let mut c = Conn::connect(addr);
    let value = vec![b'v'; 100 * 1024];
    assert_eq!(c.cmd(&[b"SET", b"out:big", &value]), b"+OK\r\n");
    let get = encode(&[b"GET", b"out:big"]);
    // A pipeline within the limit is answered in full.
    let mut expected = format!("${}\r\n", value.len()).into_bytes();
    expected.extend_from_slice(&value);
    expected.extend_from_slice(b"\r\n");
    c.send_raw(&get.repeat(8));
    for _ in 0..8 {
        assert!(c.read_reply().expect("a reply") == expected);
    }
    // Small and big values mixed: reads share the budget (64 KiB each at
    // least), a value bigger than its share is read again, and every reply
    // comes back whole and in order.
    assert_eq!(c.cmd(&[b"SET", b"out:small", b"s"]), b"+OK\r\n");
    let small = encode(&[b"GET", b"out:small"]);
    let mut mixed = Vec::new();
    for i in 0..48 {
        mixed.extend_from_slice(if i % 3 == 1 { &get } else { &small });
    }
    c.send_raw(&mixed);
    for i in 0..48 {
        let reply = c.read_reply().expect("a reply");
        if i % 3 == 1 {
            assert!(reply == expected, "reply {i} is not the big value");
        } else {
            assert_eq!(reply, b"$1\r\ns\r\n", "reply {i}");
        }
    }

    let pid = router.pid();
    let (rss_before, peak_before) = (status_kib(pid, "VmRSS"), status_kib(pid, "VmHWM"));
    let mut slow = Conn::connect(addr);
    let wrote_all = write_until_closed(&mut slow.stream, &get.repeat(2_000));
    // Not reading (reading would drain the replies): the router gives up.
    assert!(
        wait_until(Duration::from_secs(30), || log_has(
            router,
            "output buffer over max_output_len"
        )),
        "slow client not disconnected (wrote all: {wrote_all})"
    );
    assert!(slow.is_closed(Duration::from_secs(30)));
    let (rss_after, peak_after) = (status_kib(pid, "VmRSS"), status_kib(pid, "VmHWM"));
    eprintln!("output limit: router RSS {rss_before} -> {rss_after} KiB, peak {peak_before} -> {peak_after} KiB");
    assert!(
        peak_after < peak_before + 32 * 1024,
        "router peak memory grew from {peak_before} to {peak_after} KiB"
    );
    assert_eq!(c.line("STRLEN out:big"), b":102400\r\n");
}

/// Item: unparsed input over client-query-buffer-limit (1 MiB here)
/// disconnects; complete requests, however many, do not count.
fn query_buffer_limit(addr: &str, router: &mut Proc) {
    let mut c = Conn::connect(addr);
    assert_eq!(
        c.line("CONFIG GET client-query-buffer-limit"),
        b"*2\r\n$25\r\nclient-query-buffer-limit\r\n$7\r\n1048576\r\n"
    );
    assert_eq!(
        c.line("CONFIG SET client-query-buffer-limit 1mb"),
        b"+OK\r\n"
    );

    // One 2 MB argument (within proto-max-bulk-len) never completes under
    // a 1 MiB query buffer.
    let mut big = Conn::connect(addr);
    let mut request = b"*2\r\n$4\r\nECHO\r\n$2000000\r\n".to_vec();
    request.extend(vec![b'x'; 1_500_000]);
    write_until_closed(&mut big.stream, &request);
    assert!(
        big.is_closed(Duration::from_secs(30)),
        "big request still connected"
    );
    assert!(wait_until(Duration::from_secs(10), || log_has(
        router,
        "client-query-buffer-limit"
    )));

    // 1.5 MB of small pipelined requests are parsed as they arrive.
    let mut many = Conn::connect(addr);
    let n = 40_000;
    let mut pipeline = Vec::new();
    for i in 0..n {
        pipeline.extend(encode(&[
            b"SET",
            format!("qb:{}", i % 100).as_bytes(),
            b"v",
        ]));
    }
    assert!(pipeline.len() > 1_100_000);
    let mut writer = many.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(&pipeline).is_ok());
    for i in 0..n {
        assert_eq!(
            many.read_reply().as_deref(),
            Some(&b"+OK\r\n"[..]),
            "reply {i}"
        );
    }
    assert!(sender.join().unwrap());
    // An argument just under the limit is fine.
    let value = vec![b'e'; 900_000];
    let reply = many.cmd(&[b"ECHO", &value]);
    assert_eq!(reply.len(), value.len() + 11);
}

/// Item: MULTI queues and WATCH lists are capped (5 each on router A).
fn multi_and_watch_caps(addr: &str) {
    let mut c = Conn::connect(addr);
    assert_eq!(
        c.line("CONFIG GET shoal-max-multi-commands shoal-max-watch-keys"),
        b"*4\r\n$24\r\nshoal-max-multi-commands\r\n$1\r\n5\r\n$20\r\nshoal-max-watch-keys\r\n$1\r\n5\r\n"
    );
    assert_eq!(c.line("DEL mw:k"), b":0\r\n");
    assert_eq!(c.line("MULTI"), b"+OK\r\n");
    for i in 0..5 {
        assert_eq!(c.line(&format!("SET mw:k {i}")), b"+QUEUED\r\n");
    }
    let over = c.line("SET mw:k 5");
    assert!(
        over.starts_with(b"-ERR MULTI queue is full: at most 5 commands"),
        "{}",
        common::show(&over)
    );
    assert_eq!(
        c.line("EXEC"),
        b"-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    assert_eq!(c.line("GET mw:k"), b"$-1\r\n");

    // A hostile MULTI of 3,000 pipelined commands: 5 queued, the rest
    // refused, nothing runs.
    let mut pipeline = encode(&[b"MULTI"]);
    for i in 0..3_000 {
        pipeline.extend(encode(&[b"SET", b"mw:k", format!("{i}").as_bytes()]));
    }
    pipeline.extend(encode(&[b"EXEC"]));
    c.send_raw(&pipeline);
    assert_eq!(c.read_reply().unwrap(), b"+OK\r\n");
    for i in 0..3_000 {
        let reply = c.read_reply().unwrap();
        assert_eq!(
            reply.starts_with(b"+QUEUED"),
            i < 5,
            "{i}: {}",
            common::show(&reply)
        );
    }
    assert!(c.read_reply().unwrap().starts_with(b"-EXECABORT"));
    assert_eq!(c.line("GET mw:k"), b"$-1\r\n");

    // WATCH: refused whole past 5 keys, and the next EXEC aborts.
    let refused = c.line("WATCH a b c d e f");
    assert!(
        refused.starts_with(b"-ERR too many WATCHed keys: at most 5"),
        "{}",
        common::show(&refused)
    );
    assert_eq!(c.line("MULTI"), b"+OK\r\n");
    assert_eq!(c.line("SET mw:k x"), b"+QUEUED\r\n");
    assert!(c.line("EXEC").starts_with(b"-EXECABORT"));
    assert_eq!(c.line("GET mw:k"), b"$-1\r\n");
    // The cap counts every key watched by the connection.
    assert_eq!(c.line("WATCH a b c"), b"+OK\r\n");
    assert_eq!(c.line("WATCH d e"), b"+OK\r\n");
    assert!(c.line("WATCH f").starts_with(b"-ERR too many WATCHed keys"));
    assert_eq!(c.line("UNWATCH"), b"+OK\r\n");
    assert_eq!(c.line("WATCH a b c d e"), b"+OK\r\n");
    assert_eq!(c.line("MULTI"), b"+OK\r\n");
    assert_eq!(c.line("SET mw:k y"), b"+QUEUED\r\n");
    assert_eq!(c.line("EXEC"), b"*1\r\n+OK\r\n");

    // The caps change at run time.
    assert_eq!(c.line("CONFIG SET shoal-max-multi-commands 6"), b"+OK\r\n");
    assert_eq!(c.line("MULTI"), b"+OK\r\n");
    for i in 0..6 {
        assert_eq!(c.line(&format!("SET mw:k {i}")), b"+QUEUED\r\n");
    }
    assert_eq!(c.line("EXEC").len(), 4 + 6 * 5);
    assert_eq!(c.line("GET mw:k"), b"$1\r\n5\r\n");
    assert_eq!(c.line("CONFIG SET shoal-max-multi-commands 5"), b"+OK\r\n");
    assert!(c
        .line("CONFIG SET shoal-max-watch-keys 0")
        .starts_with(b"-ERR CONFIG SET failed"));
}

/// Item: `timeout` closes idle clients, active ones stay; accepted sockets
/// have TCP keepalive (`tcp-keepalive`, seen with `ss`).
fn idle_timeout_and_keepalive(addr: &str) {
    let mut active = Conn::connect(addr);
    assert_eq!(
        active.line("CONFIG GET timeout"),
        b"*2\r\n$7\r\ntimeout\r\n$1\r\n0\r\n"
    );
    // Connected before the change: the change must reach it too.
    let mut early = Conn::connect(addr);
    assert_eq!(early.line("PING"), b"+PONG\r\n");
    assert_eq!(active.line("CONFIG SET timeout 2"), b"+OK\r\n");
    assert_eq!(
        active.line("CONFIG GET timeout"),
        b"*2\r\n$7\r\ntimeout\r\n$1\r\n2\r\n"
    );
    let mut idle = Conn::connect(addr);
    assert_eq!(idle.line("PING"), b"+PONG\r\n");
    // Active for well past the timeout.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        assert_eq!(active.line("PING"), b"+PONG\r\n");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        idle.is_closed(Duration::from_secs(20)),
        "idle client not closed"
    );
    assert!(
        early.is_closed(Duration::from_secs(20)),
        "early idle client not closed"
    );
    assert_eq!(active.line("PING"), b"+PONG\r\n");
    assert_eq!(active.line("CONFIG SET timeout 0"), b"+OK\r\n");

    assert_eq!(
        active.line("CONFIG GET tcp-keepalive"),
        b"*2\r\n$13\r\ntcp-keepalive\r\n$3\r\n300\r\n"
    );
    let Some(on) = server_socket_timers(addr) else {
        eprintln!("ss is not available: keepalive not checked");
        return;
    };
    assert!(on.contains("keepalive"), "no keepalive timer: {on}");
    assert_eq!(active.line("CONFIG SET tcp-keepalive 0"), b"+OK\r\n");
    let off = server_socket_timers(addr).unwrap();
    assert!(
        !off.trim().is_empty() && !off.contains("keepalive"),
        "{off}"
    );
    assert_eq!(active.line("CONFIG SET tcp-keepalive 300"), b"+OK\r\n");
}

/// `ss`'s line (with timers) for the router's end of a new connection,
/// once the router has accepted and served it.
fn server_socket_timers(addr: &str) -> Option<String> {
    let mut conn = Conn::connect(addr);
    assert_eq!(conn.line("PING"), b"+PONG\r\n");
    let router_port = addr.rsplit(':').next().unwrap();
    let client_port = conn.stream.local_addr().unwrap().port();
    let filter = format!("( sport = :{router_port} and dport = :{client_port} )");
    let mut line = String::new();
    wait_until(Duration::from_secs(10), || {
        let out = Command::new("ss")
            .args(["-tnoH", "state", "established", &filter])
            .output();
        line = out.map_or(String::new(), |o| {
            String::from_utf8_lossy(&o.stdout).into_owned()
        });
        !line.trim().is_empty()
    })
    .then_some(line)
}

/// Item: before AUTH, Redis's unauthenticated caps (10 arguments, 16 KiB
/// bulks) apply, checked on the headers; after AUTH, even in the same
/// pipeline, the normal limits do.
fn unauthenticated_limits(addr: &str) {
    let mut c = Conn::connect(addr);
    c.send_raw(b"*11\r\n");
    assert_eq!(
        c.read_reply().unwrap(),
        b"-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
    assert!(c.is_closed(Duration::from_secs(10)));

    let mut c = Conn::connect(addr);
    c.send_raw(b"*2\r\n$4\r\nAUTH\r\n$16385\r\n");
    assert_eq!(
        c.read_reply().unwrap(),
        b"-ERR Protocol error: unauthenticated bulk length\r\n"
    );
    assert!(c.is_closed(Duration::from_secs(10)));

    // At the caps: a normal NOAUTH.
    let mut c = Conn::connect(addr);
    assert!(c.line("MSET a 1 b 2 c 3 d 4 e").starts_with(b"-NOAUTH"));
    assert!(c.cmd(&[b"ECHO", &[b'x'; 16384]]).starts_with(b"-NOAUTH"));

    // AUTH and big requests in one write.
    let big = vec![b'v'; 20_000];
    let mut pipeline = encode(&[b"AUTH", b"pw"]);
    let pairs: Vec<Vec<u8>> = (0..12).map(|i| format!("ua:{i}").into_bytes()).collect();
    let mut mset: Vec<&[u8]> = vec![b"MSET"];
    for p in &pairs {
        mset.push(p);
        mset.push(b"1");
    }
    pipeline.extend(encode(&mset));
    pipeline.extend(encode(&[b"SET", b"ua:big", &big]));
    pipeline.extend(encode(&[b"STRLEN", b"ua:big"]));
    c.send_raw(&pipeline);
    assert_eq!(c.read_reply().unwrap(), b"+OK\r\n");
    assert_eq!(c.read_reply().unwrap(), b"+OK\r\n");
    assert_eq!(c.read_reply().unwrap(), b"+OK\r\n");
    assert_eq!(c.read_reply().unwrap(), b":20000\r\n");
    // RESET makes the caps apply again.
    assert_eq!(c.line("RESET"), b"+RESET\r\n");
    c.send_raw(b"*11\r\n");
    assert_eq!(
        c.read_reply().unwrap(),
        b"-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
    assert!(c.is_closed(Duration::from_secs(10)));

    let mut ok = Conn::connect(addr);
    assert_eq!(ok.line("AUTH pw"), b"+OK\r\n");
    assert_eq!(ok.line("GET ua:11"), b"$1\r\n1\r\n");
}

/// Item: a 100,001-argument command trickling in 512-byte pieces is
/// answered (the framing resumes where it stopped instead of re-walking up
/// to 100k headers on every read). EXISTS, so the shard's work stays small.
fn slow_huge_multibulk(addr: &str) {
    let mut c = Conn::connect(addr);
    assert_eq!(c.line("SET slow:77777 x"), b"+OK\r\n");
    let keys: Vec<Vec<u8>> = (0..100_000)
        .map(|i| format!("slow:{i}").into_bytes())
        .collect();
    let mut args: Vec<&[u8]> = vec![b"EXISTS"];
    args.extend(keys.iter().map(|k| &k[..]));
    let request = encode(&args);
    c.stream.set_nodelay(true).unwrap();
    let start = Instant::now();
    for piece in request.chunks(512) {
        c.stream.write_all(piece).unwrap();
    }
    assert_eq!(c.read_reply().unwrap(), b":1\r\n");
    eprintln!(
        "{}-byte EXISTS in 512-byte pieces answered in {:?}",
        request.len(),
        start.elapsed()
    );
}

/// Item: out of file descriptors, the accept loop backs off and goes on.
/// The router runs with 100 descriptors (hard limit too, so raising the soft
/// limit to the hard one does not help); 200 connections exhaust them.
fn accept_survives_fd_exhaustion(cluster: &LocalCluster, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("router.toml");
    std::fs::write(&config, "rebalance = false\n").unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=100:100")
        .arg(env!("CARGO_BIN_EXE_shoal"))
        .arg("router")
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg(&addr)
        .arg("--etcd")
        .arg(cluster.etcd_url());
    let mut router = Proc::spawn("router", cmd, dir).expect("prlimit starts");
    assert!(
        wait_until(Duration::from_secs(30), || resp_request(
            &addr,
            &["PING"],
            Duration::from_secs(2)
        )
        .is_ok_and(|r| r == "+PONG")),
        "router under prlimit did not start: {}",
        router.log_tail(20)
    );
    let mut probe = Conn::connect(&addr);
    assert_eq!(probe.line("SET fd:k before"), b"+OK\r\n");

    // About 85 are accepted, the rest wait in the listen backlog; once that
    // is full too, a connect would hang, so each gets a short deadline.
    let target: std::net::SocketAddr = addr.parse().unwrap();
    let flood: Vec<TcpStream> = (0..200)
        .map_while(|_| TcpStream::connect_timeout(&target, Duration::from_secs(2)).ok())
        .collect();
    assert!(flood.len() > 120, "only {} connections made", flood.len());
    assert!(
        wait_until(Duration::from_secs(30), || log_has(
            &router,
            "Too many open files"
        )),
        "the router never ran out of descriptors: {}",
        router.log_tail(20)
    );
    assert!(router.is_running(), "router died: {}", router.log_tail(20));
    // Clients already connected are served meanwhile.
    assert_eq!(probe.line("PING"), b"+PONG\r\n");

    drop(flood);
    assert!(
        wait_until(Duration::from_secs(60), || {
            let Ok(mut s) = TcpStream::connect(&addr) else {
                return false;
            };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut reply = [0u8; 7];
            s.write_all(b"PING\r\n").is_ok()
                && s.read_exact(&mut reply).is_ok()
                && &reply == b"+PONG\r\n"
        }),
        "no new client served after the descriptors came back: {}",
        router.log_tail(20)
    );
    assert_eq!(probe.line("SET fd:k after"), b"+OK\r\n");
    assert_eq!(probe.line("GET fd:k"), b"$5\r\nafter\r\n");
    assert!(router.is_running(), "router died: {}", router.log_tail(20));
}
