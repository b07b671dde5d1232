//! Byte-level tests of the router: raw RESP in, exact reply bytes out, for
//! the connection commands and GET/SET/DEL/EXISTS, pipelining, malformed
//! input and oversized lengths. One single-node cluster serves every case.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use shoal::devcluster::{ClusterOpts, LocalCluster};

/// One cluster for every case: starting one takes seconds, and the cases
/// use disjoint keys. The cluster (and its temp dir) is dropped at the end,
/// also when a case panics.
#[test]
fn router_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ClusterOpts::new(env!("CARGO_BIN_EXE_shoal"), dir.path());
    opts.nodes = 1;
    opts.default_replicas = 1;
    opts.default_shards = 4;
    // Small limits make the oversized cases cheap to send.
    opts.router_args = vec!["--config".into(), write_router_config(dir.path())];
    let cluster = LocalCluster::start(opts).expect("cluster starts");
    let addr = cluster.router_addr();
    connection_commands(&addr);
    get_set_del_exists(&addr);
    pipelined_replies_come_back_in_order(&addr);
    resp3_after_hello(&addr);
    malformed_input_gets_protocol_error_and_close(&addr);
    command_table_answers(&addr);
    multi_follows_the_table(&addr);
}

fn write_router_config(dir: &std::path::Path) -> String {
    let path = dir.join("router-limits.toml");
    std::fs::write(
        &path,
        "max_bulk_len = 1048576\nmax_args = 1000\nmax_inline_len = 4096\nmax_value_len = 65536\n",
    )
    .unwrap();
    path.display().to_string()
}

fn conn(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

fn cmd(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Send `request`, expect exactly `reply` back.
fn roundtrip(s: &mut TcpStream, request: &[u8], reply: &[u8]) {
    s.write_all(request).unwrap();
    let mut got = vec![0u8; reply.len()];
    s.read_exact(&mut got).unwrap_or_else(|e| {
        panic!(
            "reading reply to {:?}: {e}",
            String::from_utf8_lossy(request)
        )
    });
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(reply),
        "request {:?}",
        String::from_utf8_lossy(request)
    );
}

/// The server closed the connection (after what was already read).
fn assert_closed(s: &mut TcpStream) {
    let mut rest = Vec::new();
    let n = s.read_to_end(&mut rest).expect("connection closes");
    assert_eq!(
        n,
        0,
        "unexpected bytes: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

fn connection_commands(addr: &str) {
    let mut s = conn(addr);
    roundtrip(&mut s, &cmd(&[b"PING"]), b"+PONG\r\n");
    roundtrip(&mut s, &cmd(&[b"ping", b"hello"]), b"$5\r\nhello\r\n");
    roundtrip(&mut s, &cmd(&[b"ECHO", b"a\r\nb"]), b"$4\r\na\r\nb\r\n");
    roundtrip(
        &mut s,
        &cmd(&[b"ECHO"]),
        b"-ERR wrong number of arguments for 'echo' command\r\n",
    );
    roundtrip(
        &mut s,
        &cmd(&[b"NOSUCH", b"x"]),
        b"-ERR unknown command 'nosuch', with args beginning with: 'x' \r\n",
    );
    roundtrip(&mut s, &cmd(&[b"SELECT", b"0"]), b"+OK\r\n");
    roundtrip(
        &mut s,
        &cmd(&[b"SELECT", b"x"]),
        b"-ERR value is not an integer or out of range\r\n",
    );
    // Inline commands, as typed into telnet.
    roundtrip(&mut s, b"PING\r\n", b"+PONG\r\n");
    roundtrip(&mut s, b"ECHO \"two words\"\n", b"$9\r\ntwo words\r\n");
    roundtrip(&mut s, &cmd(&[b"QUIT"]), b"+OK\r\n");
    assert_closed(&mut s);
}

fn get_set_del_exists(addr: &str) {
    let mut s = conn(addr);
    roundtrip(&mut s, &cmd(&[b"DEL", b"p:a", b"p:b", b"p:c"]), b":0\r\n");
    roundtrip(&mut s, &cmd(&[b"GET", b"p:a"]), b"$-1\r\n");
    roundtrip(&mut s, &cmd(&[b"SET", b"p:a", b"1"]), b"+OK\r\n");
    roundtrip(&mut s, &cmd(&[b"SET", b"p:b", b"\x00bin\r\n"]), b"+OK\r\n");
    roundtrip(&mut s, &cmd(&[b"GET", b"p:b"]), b"$6\r\n\x00bin\r\n\r\n");
    roundtrip(
        &mut s,
        &cmd(&[b"EXISTS", b"p:a", b"p:b", b"p:c", b"p:a"]),
        b":3\r\n",
    );
    roundtrip(&mut s, &cmd(&[b"SET", b"p:a", b"2", b"NX"]), b"$-1\r\n");
    roundtrip(
        &mut s,
        &cmd(&[b"SET", b"p:a", b"3", b"XX", b"GET"]),
        b"$1\r\n1\r\n",
    );
    roundtrip(&mut s, &cmd(&[b"GET", b"p:a"]), b"$1\r\n3\r\n");
    roundtrip(
        &mut s,
        &cmd(&[b"SET", b"p:a", b"v", b"NX", b"XX"]),
        b"-ERR syntax error\r\n",
    );
    roundtrip(
        &mut s,
        &cmd(&[b"GET"]),
        b"-ERR wrong number of arguments for 'get' command\r\n",
    );
    roundtrip(&mut s, &cmd(&[b"DEL", b"p:a", b"p:b", b"p:c"]), b":2\r\n");
    roundtrip(&mut s, &cmd(&[b"EXISTS", b"p:a"]), b":0\r\n");
    // Values over max_value_len (64 KiB here) are refused, nothing stored.
    let big = vec![b'x'; 65 * 1024];
    roundtrip(
        &mut s,
        &cmd(&[b"SET", b"p:big", &big]),
        b"-ERR value is too large\r\n",
    );
    roundtrip(&mut s, &cmd(&[b"EXISTS", b"p:big"]), b":0\r\n");
}

fn pipelined_replies_come_back_in_order(addr: &str) {
    let mut s = conn(addr);
    let mut batch = Vec::new();
    let mut expected = Vec::new();
    for i in 0..200 {
        let k = format!("pipe:{i}");
        let v = format!("v{i}");
        batch.extend(cmd(&[b"SET", k.as_bytes(), v.as_bytes()]));
        expected.extend_from_slice(b"+OK\r\n");
        batch.extend(cmd(&[b"GET", k.as_bytes()]));
        expected.extend(format!("${}\r\n{v}\r\n", v.len()).into_bytes());
    }
    batch.extend(cmd(&[b"PING"]));
    expected.extend_from_slice(b"+PONG\r\n");
    roundtrip(&mut s, &batch, &expected);

    // Same key, reads and writes interleaved in one pipeline: applied in
    // order (they share a shard, so they share one Raft entry).
    let mut batch = Vec::new();
    for c in [
        &[&b"SET"[..], b"pipe:n", b"1"][..],
        &[b"INCR", b"pipe:n"],
        &[b"GET", b"pipe:n"],
        &[b"INCRBY", b"pipe:n", b"10"],
        &[b"SET", b"pipe:n", b"x", b"GET"],
        &[b"GET", b"pipe:n"],
        &[b"INCR", b"pipe:n"],
        &[b"DEL", b"pipe:n"],
        &[b"GET", b"pipe:n"],
    ] {
        batch.extend(cmd(c));
    }
    roundtrip(
        &mut s,
        &batch,
        b"+OK\r\n:2\r\n$1\r\n2\r\n:12\r\n$2\r\n12\r\n$1\r\nx\r\n-ERR value is not an integer or out of range\r\n:1\r\n$-1\r\n",
    );
}

fn resp3_after_hello(addr: &str) {
    let mut s = conn(addr);
    s.write_all(&cmd(&[b"HELLO", b"3"])).unwrap();
    let mut head = [0u8; 3];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"%7\r");
    // Drain the rest of the map, then check RESP3 null.
    let mut buf = vec![0u8; 4096];
    std::thread::sleep(Duration::from_millis(200));
    let _ = s.read(&mut buf).unwrap();
    roundtrip(&mut s, &cmd(&[b"GET", b"resp3:missing"]), b"_\r\n");
    roundtrip(
        &mut s,
        &cmd(&[b"HELLO", b"4"]),
        b"-NOPROTO unsupported protocol version\r\n",
    );
}

fn malformed_input_gets_protocol_error_and_close(addr: &str) {
    let cases: &[(&[u8], &[u8])] = &[
        (
            b"*1\r\n$abc\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*x\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n+PING\r\n",
            b"-ERR Protocol error: expected '$', got '+'\r\n",
        ),
        (
            b"ECHO \"unbalanced\n",
            b"-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
        // Oversized lengths are refused on the header, before any data.
        (
            b"*1\r\n$999999999999\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*2000\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
    ];
    for (request, reply) in cases {
        let mut s = conn(addr);
        roundtrip(&mut s, request, reply);
        assert_closed(&mut s);
    }
    // An inline command longer than max_inline_len (4 KiB here).
    let mut s = conn(addr);
    let long = vec![b'a'; 5000];
    roundtrip(
        &mut s,
        &long,
        b"-ERR Protocol error: too big inline request\r\n",
    );
    assert_closed(&mut s);
    // The router still serves everyone else.
    let mut s = conn(addr);
    roundtrip(&mut s, &cmd(&[b"PING"]), b"+PONG\r\n");
}

/// A command's value from the redis crate's parser.
fn query(con: &mut redis::Connection, args: &[&str]) -> redis::Value {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn strings(v: &redis::Value) -> Vec<String> {
    match v {
        redis::Value::Array(items) | redis::Value::Set(items) => items
            .iter()
            .map(|i| redis::from_redis_value::<String>(i).unwrap())
            .collect(),
        other => panic!("not a list: {other:?}"),
    }
}

/// COMMAND answers from the command table, in Redis 7's shapes.
fn command_table_answers(addr: &str) {
    let client = redis::Client::open(format!("redis://{addr}")).unwrap();
    let mut con = client.get_connection().unwrap();
    let count: i64 = redis::from_redis_value(&query(&mut con, &["COMMAND", "COUNT"])).unwrap();
    let list = strings(&query(&mut con, &["COMMAND", "LIST"]));
    assert_eq!(list.len() as i64, count);
    for name in ["get", "set", "multi", "table.create", "cluster.drain"] {
        assert!(list.iter().any(|n| n == name), "{name} in {list:?}");
    }
    // INFO: name, arity, flags, first/last/step, ACL categories, tips,
    // key specs, subcommands.
    let redis::Value::Array(infos) = query(&mut con, &["COMMAND", "INFO", "GET", "nosuch"]) else {
        panic!("COMMAND INFO is an array")
    };
    assert_eq!(infos.len(), 2);
    assert_eq!(infos[1], redis::Value::Nil);
    let redis::Value::Array(get) = &infos[0] else {
        panic!("{:?}", infos[0])
    };
    assert_eq!(get.len(), 10, "{get:?}");
    assert_eq!(redis::from_redis_value::<String>(&get[0]).unwrap(), "get");
    assert_eq!(get[1], redis::Value::Int(2));
    assert_eq!(strings(&get[2]), vec!["readonly", "fast"]);
    assert_eq!(
        (&get[3], &get[4], &get[5]),
        (
            &redis::Value::Int(1),
            &redis::Value::Int(1),
            &redis::Value::Int(1)
        )
    );
    assert_eq!(strings(&get[6]), vec!["@read", "@string", "@fast"]);
    let redis::Value::Array(specs) = &get[8] else {
        panic!("{:?}", get[8])
    };
    assert_eq!(specs.len(), 1, "one key spec for GET");
    // DOCS: a map from name to its documentation.
    let docs = format!("{:?}", query(&mut con, &["COMMAND", "DOCS", "set"]));
    assert!(docs.contains("Sets the string value of a key"), "{docs}");
    // LIST FILTERBY reads the rows' ACL categories and names.
    let txn = strings(&query(
        &mut con,
        &["COMMAND", "LIST", "FILTERBY", "ACLCAT", "transaction"],
    ));
    let mut txn_sorted = txn.clone();
    txn_sorted.sort();
    assert_eq!(
        txn_sorted,
        vec!["discard", "exec", "multi", "unwatch", "watch"]
    );
    let tables = strings(&query(
        &mut con,
        &["COMMAND", "LIST", "FILTERBY", "PATTERN", "table.*"],
    ));
    assert_eq!(tables.len(), 5, "{tables:?}");
    // GETKEYS follows the key specification.
    assert_eq!(
        strings(&query(
            &mut con,
            &["COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2"]
        )),
        vec!["a", "b"]
    );
    let mut s = conn(addr);
    roundtrip(
        &mut s,
        &cmd(&[b"COMMAND", b"GETKEYS", b"PING"]),
        b"-ERR The command has no key arguments\r\n",
    );
    roundtrip(
        &mut s,
        &cmd(&[b"COMMAND", b"GETKEYS", b"GET"]),
        b"-ERR Invalid number of arguments specified for command\r\n",
    );
}

/// What MULTI does with a command is what its row says: connection
/// commands are queued and answered at EXEC, a `no_multi` row is refused
/// (and the transaction aborts), control commands run at once.
fn multi_follows_the_table(addr: &str) {
    let mut s = conn(addr);
    roundtrip(&mut s, &cmd(&[b"MULTI"]), b"+OK\r\n");
    roundtrip(&mut s, &cmd(&[b"PING"]), b"+QUEUED\r\n");
    roundtrip(&mut s, &cmd(&[b"ECHO", b"hi"]), b"+QUEUED\r\n");
    roundtrip(&mut s, &cmd(&[b"SET", b"m:k", b"v"]), b"+QUEUED\r\n");
    roundtrip(&mut s, &cmd(&[b"GET", b"m:k"]), b"+QUEUED\r\n");
    roundtrip(&mut s, &cmd(&[b"UNWATCH"]), b"+QUEUED\r\n");
    roundtrip(
        &mut s,
        &cmd(&[b"EXEC"]),
        b"*5\r\n+PONG\r\n$2\r\nhi\r\n+OK\r\n$1\r\nv\r\n+OK\r\n",
    );
    // TIME is queued too (Redis allows it), and answers at EXEC.
    roundtrip(&mut s, &cmd(&[b"MULTI"]), b"+OK\r\n");
    roundtrip(&mut s, &cmd(&[b"TIME"]), b"+QUEUED\r\n");
    s.write_all(&cmd(&[b"EXEC"])).unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"*1\r\n*2\r\n$10\r\n"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Refused inside MULTI: the admin command is not run, EXEC aborts.
    roundtrip(&mut s, &cmd(&[b"MULTI"]), b"+OK\r\n");
    roundtrip(
        &mut s,
        &cmd(&[b"CLUSTER.DRAIN", b"1"]),
        b"-ERR CLUSTER.DRAIN is not supported inside MULTI\r\n",
    );
    roundtrip(
        &mut s,
        &cmd(&[b"KEYS", b"*"]),
        b"-ERR KEYS is not supported inside MULTI\r\n",
    );
    roundtrip(
        &mut s,
        &cmd(&[b"EXEC"]),
        b"-EXECABORT Transaction discarded because of previous errors.\r\n",
    );
    // QUIT inside MULTI runs at once.
    roundtrip(&mut s, &cmd(&[b"MULTI"]), b"+OK\r\n");
    roundtrip(&mut s, &cmd(&[b"QUIT"]), b"+OK\r\n");
    assert_closed(&mut s);
}
