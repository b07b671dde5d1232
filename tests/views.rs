//! Redis's own views on a router, against a real one-node cluster and a
//! real `redis-server`: INFO commandstats / latencystats / errorstats,
//! CONFIG RESETSTAT, SLOWLOG, LATENCY, MONITOR, and redis-cli's `--stat`,
//! `--latency` and `monitor`.
//!
//! The same script runs on both servers. Where values differ by nature
//! (timestamps, durations, client ports) the replies are compared by shape:
//! integers become `i`, client addresses `addr`, and a collection whose
//! items all have the same shape is written once.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{cluster, extra_router, show, wait_until, Conn, RedisServer};

/// A parsed RESP2/RESP3 reply.
#[derive(Debug, Clone, PartialEq)]
enum V {
    Int,
    Text(String),
    Nil,
    Err(String),
    List(char, Vec<V>),
}

fn parse(b: &[u8]) -> (V, &[u8]) {
    let end = b.windows(2).position(|w| w == b"\r\n").expect("a line");
    let line = std::str::from_utf8(&b[1..end]).unwrap();
    let rest = &b[end + 2..];
    match b[0] {
        b':' => (V::Int, rest),
        b'+' => (V::Text(line.to_string()), rest),
        b'-' => (V::Err(line.to_string()), rest),
        b'_' => (V::Nil, rest),
        b'$' | b'=' if line == "-1" => (V::Nil, rest),
        b'$' | b'=' => {
            let n: usize = line.parse().unwrap();
            let mut text = String::from_utf8_lossy(&rest[..n]).into_owned();
            if b[0] == b'=' {
                text = text[4..].to_string();
            }
            (V::Text(text), &rest[n + 2..])
        }
        b'*' | b'%' | b'~' if line == "-1" => (V::Nil, rest),
        c @ (b'*' | b'%' | b'~') => {
            let n: usize = line.parse().unwrap();
            let n = if c == b'%' { n * 2 } else { n };
            let mut items = Vec::new();
            let mut rest = rest;
            for _ in 0..n {
                let (v, r) = parse(rest);
                items.push(v);
                rest = r;
            }
            (V::List(c as char, items), rest)
        }
        c => panic!("unexpected reply type {}", c as char),
    }
}

/// The shape of a reply (see the module docs).
fn shape(v: &V) -> String {
    match v {
        V::Int => "i".into(),
        V::Nil => "nil".into(),
        V::Err(e) => format!("-{e}"),
        V::Text(t) if is_addr(t) => "addr".into(),
        V::Text(t) => format!("{t:?}"),
        V::List(kind, items) => {
            let shapes: Vec<String> = items.iter().map(shape).collect();
            if !shapes.is_empty() && shapes.iter().all(|s| *s == shapes[0]) {
                // Homogeneous: how many does not matter.
                format!("{kind}[{}..]", shapes[0])
            } else {
                format!("{kind}[{}]", shapes.join(","))
            }
        }
    }
}

fn is_addr(t: &str) -> bool {
    t.strip_prefix("127.0.0.1:")
        .is_some_and(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
}

fn shape_of(bytes: &[u8]) -> String {
    let (v, rest) = parse(bytes);
    assert!(rest.is_empty(), "one reply: {}", show(bytes));
    shape(&v)
}

/// How a line's replies must agree.
#[derive(Clone, Copy, PartialEq)]
enum Cmp {
    Bytes,
    Shape,
}

/// The script run on both servers, in RESP2 then RESP3.
const SCRIPT: &[(Cmp, &str)] = &[
    (Cmp::Bytes, "CONFIG SET slowlog-log-slower-than 0"),
    (Cmp::Bytes, "CONFIG SET slowlog-max-len 3"),
    (Cmp::Bytes, "CONFIG GET slowlog-max-len"),
    (Cmp::Bytes, "CONFIG GET slowlog-log-slower-than"),
    (Cmp::Bytes, "SLOWLOG RESET"),
    (Cmp::Bytes, "SET k v"),
    (Cmp::Bytes, "GET k"),
    (Cmp::Bytes, "DEL a1 a2 a3 a4 a5 a6 a7 a8 a9 a10 a11 a12 a13 a14 a15 a16 a17 a18 a19 a20 a21 a22 a23 a24 a25 a26 a27 a28 a29 a30 a31 a32 a33 a34 a35 a36 a37 a38 a39 a40"),
    (Cmp::Bytes, "SLOWLOG LEN"),
    // Newest first: SLOWLOG LEN, the cut DEL, GET.
    (Cmp::Shape, "SLOWLOG GET"),
    (Cmp::Shape, "SLOWLOG GET 1"),
    (Cmp::Bytes, "SLOWLOG GET 0"),
    (Cmp::Shape, "SLOWLOG GET -1"),
    (Cmp::Bytes, "SLOWLOG GET -2"),
    (Cmp::Bytes, "SLOWLOG GET abc"),
    (Cmp::Bytes, "SLOWLOG FOO"),
    (Cmp::Bytes, "SLOWLOG HELP"),
    (Cmp::Bytes, "SLOWLOG LEN 1"),
    (Cmp::Bytes, "SLOWLOG RESET"),
    (Cmp::Bytes, "CONFIG SET slowlog-log-slower-than -1"),
    (Cmp::Bytes, "SET k2 v"),
    (Cmp::Bytes, "SLOWLOG LEN"),
    (Cmp::Bytes, "CONFIG SET slowlog-log-slower-than -5"),
    (Cmp::Bytes, "CONFIG SET slowlog-log-slower-than abc"),
    (Cmp::Bytes, "CONFIG SET slowlog-max-len -1"),
    (Cmp::Bytes, "CONFIG SET latency-monitor-threshold -1"),
    (Cmp::Bytes, "CONFIG GET latency-monitor-threshold"),
    (Cmp::Bytes, "CONFIG SET slowlog-log-slower-than 10000"),
    (Cmp::Bytes, "CONFIG SET slowlog-max-len 128"),
    (Cmp::Bytes, "LATENCY LATEST"),
    (Cmp::Bytes, "LATENCY HISTORY command"),
    (Cmp::Bytes, "LATENCY HISTORY"),
    (Cmp::Bytes, "LATENCY DOCTOR"),
    (Cmp::Bytes, "LATENCY RESET"),
    (Cmp::Bytes, "LATENCY FOO"),
    (Cmp::Shape, "LATENCY HISTOGRAM set"),
    (Cmp::Shape, "LATENCY HISTOGRAM get nosuchcommand"),
    (Cmp::Bytes, "CONFIG SET latency-monitor-threshold 0"),
];

fn run_script(shoal: &mut Conn, redis: &mut Conn, script: &[(Cmp, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    for (cmp, line) in script {
        let a = shoal.line(line);
        let b = redis.line(line);
        let same = match cmp {
            Cmp::Bytes => a == b,
            Cmp::Shape => shape_of(&a) == shape_of(&b),
        };
        if !same {
            out.push(format!(
                "{line}\n    shoal: {} ({})\n    redis: {} ({})",
                show(&a),
                shape_of(&a),
                show(&b),
                shape_of(&b)
            ));
        }
    }
    out
}

/// INFO's text without the reply framing.
fn info(c: &mut Conn, section: &str) -> String {
    let line = if section.is_empty() {
        "INFO".to_string()
    } else {
        format!("INFO {section}")
    };
    match parse(&c.line(&line)).0 {
        V::Text(t) => t,
        v => panic!("INFO {section}: {v:?}"),
    }
}

/// `name:value` lines of INFO text.
fn fields(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim_end().to_string()))
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `a=1,b=2` as pairs.
fn kv(v: &str) -> Vec<(String, String)> {
    v.split(',')
        .filter_map(|p| p.split_once('='))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn is_decimal(s: &str, places: usize) -> bool {
    s.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.len() == places
            && b.bytes().all(|c| c.is_ascii_digit())
    })
}

/// Every line of the stats sections in Redis 7's format.
fn check_formats(who: &str, c: &mut Conn) {
    for (k, v) in fields(&info(c, "commandstats")) {
        assert!(k.starts_with("cmdstat_"), "{who}: {k}");
        let p = kv(&v);
        let names: Vec<&str> = p.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(
            names,
            [
                "calls",
                "usec",
                "usec_per_call",
                "rejected_calls",
                "failed_calls"
            ],
            "{who}: {k}:{v}"
        );
        assert!(is_decimal(&p[2].1, 2), "{who}: {k}:{v}");
        for i in [0, 1, 3, 4] {
            assert!(p[i].1.parse::<u64>().is_ok(), "{who}: {k}:{v}");
        }
    }
    let lat = fields(&info(c, "latencystats"));
    assert!(!lat.is_empty(), "{who}: no latencystats");
    for (k, v) in lat {
        assert!(k.starts_with("latency_percentiles_usec_"), "{who}: {k}");
        let p = kv(&v);
        let names: Vec<&str> = p.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(names, ["p50", "p99", "p99.9"], "{who}: {k}:{v}");
        assert!(p.iter().all(|(_, x)| is_decimal(x, 3)), "{who}: {k}:{v}");
    }
    for (k, v) in fields(&info(c, "errorstats")) {
        assert!(k.starts_with("errorstat_"), "{who}: {k}");
        let n = v.strip_prefix("count=").expect("count=");
        assert!(n.parse::<u64>().is_ok(), "{who}: {k}:{v}");
    }
}

/// The calls, rejected and failed counts of a command.
fn counts(text: &str, cmd: &str) -> Option<(String, String, String)> {
    let f = fields(text);
    let p = kv(field(&f, &format!("cmdstat_{cmd}"))?);
    Some((p[0].1.clone(), p[3].1.clone(), p[4].1.clone()))
}

#[test]
fn views() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let cl = cluster(&dir.path().join("cluster"), 1, 1, 1);
    let addr = cl.router_addr();
    eprintln!("cluster up after {:?}", started.elapsed());

    // 1. The script, RESP2 then RESP3.
    let mut s = Conn::connect(&addr);
    let mut r = Conn::connect(&redis.addr);
    let mut diffs = run_script(&mut s, &mut r, SCRIPT);
    assert!(s.line("HELLO 3").starts_with(b"%"));
    assert!(r.line("HELLO 3").starts_with(b"%"));
    diffs.extend(run_script(&mut s, &mut r, SCRIPT));
    assert!(
        diffs.is_empty(),
        "replies differ from Redis:\n{}",
        diffs.join("\n")
    );
    s.line("HELLO 2");
    r.line("HELLO 2");

    // The cut DEL as Redis cuts it: 31 arguments, then how many more.
    s.line("CONFIG SET slowlog-log-slower-than 0");
    let long = "x".repeat(200);
    s.line(&format!("SET {long} v"));
    s.line("CLIENT SETNAME probe");
    s.line("GET k");
    s.line("CONFIG SET slowlog-log-slower-than 10000");
    let (entries, _) = parse(&s.line("SLOWLOG GET 3"));
    let V::List(_, entries) = entries else {
        panic!()
    };
    // Newest first: GET, CLIENT SETNAME, SET (the CONFIG SET that raised
    // the threshold is measured against the new one, as in Redis).
    let get = format!("{:?}", entries[0]);
    assert!(get.contains("\"GET\"") && get.contains("probe"), "{get}");
    let set = format!("{:?}", entries[2]);
    assert!(
        set.contains(&format!("{}... (72 more bytes)", "x".repeat(128))),
        "{set}"
    );

    // 2. The counters agree with Redis's for the same commands.
    for c in [&mut s, &mut r] {
        assert_eq!(c.line("CONFIG RESETSTAT"), b"+OK\r\n");
        c.line("SET a 1");
        c.line("GET a");
        c.line("GET a");
        c.line("INCR a");
        c.line("SET str x");
        c.line("INCR str");
        c.line("GET");
        c.line("NOSUCHCOMMAND");
        c.line("SET a");
        c.line("CONFIG GET maxclients");
        c.line("CONFIG GET slowlog-max-len");
        c.line("CLIENT ID");
    }
    let (si, ri) = (info(&mut s, "commandstats"), info(&mut r, "commandstats"));
    // Container commands count per subcommand (`cmdstat_config|get`),
    // never under their own name.
    for c in [&si, &ri] {
        assert!(
            !c.contains("cmdstat_config:") && !c.contains("cmdstat_client:"),
            "{c}"
        );
    }
    assert_eq!(
        counts(&si, "config|get"),
        Some(("2".into(), "0".into(), "0".into()))
    );
    for cmd in ["set", "get", "incr", "config|get", "client|id"] {
        assert_eq!(
            counts(&si, cmd),
            counts(&ri, cmd),
            "{cmd}:\nshoal {si}\nredis {ri}"
        );
    }
    assert_eq!(
        counts(&si, "get"),
        Some(("2".into(), "1".into(), "0".into()))
    );
    assert_eq!(
        counts(&si, "incr"),
        Some(("2".into(), "0".into(), "1".into()))
    );
    assert_eq!(
        fields(&info(&mut s, "errorstats")),
        fields(&info(&mut r, "errorstats"))
    );
    check_formats("shoal", &mut s);
    check_formats("redis", &mut r);
    // Which sections INFO shows by default and with all / everything.
    for c in [&mut s, &mut r] {
        let default = info(c, "");
        assert!(default.contains("# Errorstats"), "{default}");
        assert!(!default.contains("# Commandstats") && !default.contains("# Latencystats"));
        for all in ["all", "everything"] {
            let t = info(c, all);
            for section in ["# Commandstats", "# Errorstats", "# Latencystats"] {
                assert!(t.contains(section), "INFO {all}: {section}");
            }
        }
        let stats = fields(&info(c, "stats"));
        let errors: u64 = field(&stats, "total_error_replies")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(errors, 4);
    }
    // RESETSTAT empties them.
    s.line("CONFIG RESETSTAT");
    assert!(counts(&info(&mut s, "commandstats"), "set").is_none());
    assert!(fields(&info(&mut s, "errorstats")).is_empty());
    assert!(!info(&mut s, "latencystats").contains("_set:"));

    // 3. Latency events: a command at least the threshold. On Redis a busy
    // script, on the router writes through Raft (a few ms each).
    r.line("CONFIG SET latency-monitor-threshold 1");
    r.cmd(&[b"EVAL", b"local i=0 while i<3000000 do i=i+1 end", b"0"]);
    s.line("CONFIG SET latency-monitor-threshold 1");
    assert!(
        wait_until(Duration::from_secs(20), || {
            s.line("SET slow v");
            s.line("LATENCY LATEST") != b"*0\r\n"
        }),
        "no latency event on the router"
    );
    assert_eq!(
        shape_of(&s.line("LATENCY HISTORY command")),
        shape_of(&r.line("LATENCY HISTORY command"))
    );
    // LATEST: the `command` rows agree. The router may show the nodes'
    // `fsync` and `raft-commit` events beside it, in the same row shape.
    let latest = |c: &mut Conn| match parse(&c.line("LATENCY LATEST")).0 {
        V::List(_, rows) => rows,
        v => panic!("{v:?}"),
    };
    let named = |row: &V| match row {
        V::List(_, fields) => match &fields[0] {
            V::Text(t) => t.clone(),
            v => panic!("{v:?}"),
        },
        v => panic!("{v:?}"),
    };
    let (ours, theirs) = (latest(&mut s), latest(&mut r));
    let command = |rows: &[V]| {
        shape(
            rows.iter()
                .find(|r| named(r) == "command")
                .expect("a command row"),
        )
    };
    assert_eq!(command(&ours), command(&theirs));
    for row in &ours {
        let name = named(row);
        assert!(
            ["command", "fsync", "raft-commit"].contains(&name.as_str()),
            "{name}"
        );
        assert_eq!(
            shape(row).replace(&format!("{name:?}"), "\"command\""),
            command(&ours)
        );
    }
    let doctor = |c: &mut Conn| match parse(&c.line("LATENCY DOCTOR")).0 {
        V::Text(t) => t,
        v => panic!("{v:?}"),
    };
    for c in [&mut s, &mut r] {
        let d = doctor(c);
        assert!(d.contains("1. command: "), "{d}");
        assert!(d.contains("latency spikes"), "{d}");
        c.line("CONFIG SET latency-monitor-threshold 0");
        assert_eq!(c.line("LATENCY RESET command nosuch"), b":1\r\n");
        assert_eq!(c.line("LATENCY LATEST"), b"*0\r\n");
    }

    // 4. MONITOR over raw RESP: +OK, then one status line per command.
    let mut m = Conn::connect(&addr);
    assert_eq!(m.line("MONITOR"), b"+OK\r\n");
    s.line("SELECT 0");
    s.cmd(&[b"SET", b"mk", b"a \"b\"\n"]);
    s.line("CONFIG GET maxclients");
    s.line("AUTH nopass");
    s.line("GET mk");
    let mut lines = Vec::new();
    for _ in 0..4 {
        let l = String::from_utf8(m.read_reply().expect("a monitor line")).unwrap();
        lines.push(l);
    }
    let tail = |l: &str| {
        let (stamp, rest) = l.split_once(' ').unwrap();
        assert!(stamp.starts_with('+') && is_decimal(&stamp[1..], 6), "{l}");
        let rest = rest.strip_prefix("[0 127.0.0.1:").unwrap();
        rest.split_once("] ").unwrap().1.to_string()
    };
    let tails: Vec<String> = lines.iter().map(|l| tail(l)).collect();
    assert_eq!(
        tails,
        [
            "\"SELECT\" \"0\"\r\n",
            "\"SET\" \"mk\" \"a \\\"b\\\"\\n\"\r\n",
            // CONFIG (admin) is not shown; AUTH's arguments are hidden.
            "\"AUTH\" \"(redacted)\"\r\n",
            "\"GET\" \"mk\"\r\n",
        ]
    );
    // RESET leaves monitor mode: the connection answers commands again.
    assert_eq!(m.line("RESET"), b"+RESET\r\n");
    s.line("GET mk");
    assert_eq!(m.line("PING"), b"+PONG\r\n");

    // 5. redis-cli monitor, --stat and --latency.
    let mut mon = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", port(&addr), "monitor"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-cli runs");
    let mut out = BufReader::new(mon.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert_eq!(first.trim_end(), "OK");
    s.line("SET viacli 1");
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let _ = mon.kill();
    let _ = mon.wait();
    assert!(
        line.contains("[0 127.0.0.1:") && line.trim_end().ends_with("] \"SET\" \"viacli\" \"1\""),
        "{line}"
    );

    let stat = Command::new("timeout")
        .args(["4", "stdbuf", "-oL", "redis-cli", "-h", "127.0.0.1", "-p"])
        .arg(port(&addr))
        .args(["--stat", "-i", "1"])
        .output()
        .expect("redis-cli --stat runs");
    let text = String::from_utf8_lossy(&stat.stdout).into_owned();
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert!(rows.len() >= 2, "redis-cli --stat: {text}");
    for row in rows {
        // keys, mem, clients, blocked, requests (+n), connections: all
        // numbers (a missing INFO field shows as -9223372036854775808).
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols.len(), 7, "{row}");
        assert!(!row.contains('-'), "{row}");
        assert!(cols[0].parse::<u64>().unwrap() >= 1, "{row}");
        for i in [2, 3, 6] {
            assert!(cols[i].parse::<u64>().is_ok(), "{row}");
        }
        assert!(cols[4].parse::<u64>().unwrap() > 0, "{row}");
    }

    let lat = Command::new("timeout")
        .args(["3", "redis-cli", "-h", "127.0.0.1", "-p"])
        .arg(port(&addr))
        .args(["--latency", "--raw"])
        .output()
        .expect("redis-cli --latency runs");
    let text = String::from_utf8_lossy(&lat.stdout).into_owned();
    // min max avg samples.
    let cols: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(cols.len(), 4, "redis-cli --latency: {text}");
    assert!(cols[3].parse::<u64>().unwrap() > 10, "{text}");
    eprintln!("done after {:?}", started.elapsed());
}

fn port(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap()
}

/// A monitor that does not read is disconnected once it falls
/// `shoal-max-output-len` behind; the router keeps serving.
#[test]
fn slow_monitor_is_disconnected() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let cl = cluster(&dir.path().join("cluster"), 1, 1, 1);
    let (addr, _router) = extra_router(
        &cl,
        &dir.path().join("router"),
        "max_output_len = 1048576\n",
        &[],
    );
    eprintln!("router up after {:?}", t0.elapsed());
    let mut m = Conn::connect(&addr);
    assert_eq!(m.line("MONITOR"), b"+OK\r\n");
    let mut c = Conn::connect(&addr);
    let value = vec![b'v'; 100 * 1024];
    // 30 MiB of lines, far past what the socket buffers and the limit hold
    // (ECHO: shown by MONITOR, answered by the router alone).
    for _ in 0..300 {
        assert_eq!(c.cmd(&[b"ECHO", &value]).len(), value.len() + 11);
    }
    eprintln!("commands sent after {:?}", t0.elapsed());
    // Reading now: what was queued, then the end of the connection.
    m.stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match m.stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => panic!("monitor still open after {got} bytes: {e}"),
        }
    }
    eprintln!("monitor closed after {:?}, {got} bytes", t0.elapsed());
    assert!(got < 20 * 1024 * 1024, "{got} bytes reached the monitor");
    assert_eq!(c.line("PING"), b"+PONG\r\n");
}
