//! Users and privileges (Redis ACLs, issue 18) against a real cluster:
//! the ACL commands' replies and errors byte for byte against a real
//! `redis-server` 7.0, in RESP2 and RESP3; `ACL CAT` of every category
//! against Redis's for the commands shoal has; and a restricted user's
//! refusals on a second router, which learns every change from etcd.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{cluster, extra_router, show, wait_until, Conn, RedisServer};

/// Lines whose replies must be identical in Redis 7.0 and shoal. Each line
/// is split on spaces.
const SCRIPT: &[&str] = &[
    "ACL WHOAMI",
    "ACL USERS",
    "ACL LIST",
    "ACL SETUSER alice",
    "ACL LIST",
    "ACL GETUSER alice",
    "ACL SETUSER alice on >pw ~user:* %R~r:* &chan -@all +@read -get +set +client|id",
    "ACL LIST",
    "ACL GETUSER alice",
    "ACL SETUSER bob on nopass +@all -@dangerous ~*",
    "ACL GETUSER bob",
    // Not compared: `-@all +@read +@write -flushdb`. The permissions are
    // the same, but ACL LIST describes them as `-@all +@read +@blocking
    // +@string +@list +@write -flushdb`: Redis's greedy choice of
    // categories counts the commands of each, and shoal has fewer (every
    // blocking command here writes; Redis has XREAD and WAIT).
    "ACL SETUSER bob -@all +@hash -hdel +@read",
    "ACL GETUSER bob",
    "ACL SETUSER carol on #5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8 %W~w:* %RW~rw:* allchannels +@hash -hdel +@string -@write",
    "ACL GETUSER carol",
    "ACL SETUSER carol resetpass resetkeys resetchannels nocommands off",
    "ACL GETUSER carol",
    "ACL SETUSER carol allkeys allcommands on nopass",
    "ACL GETUSER carol",
    "ACL SETUSER carol reset",
    "ACL GETUSER carol",
    "ACL SETUSER carol skip-sanitize-payload",
    "ACL GETUSER carol",
    "ACL GETUSER nosuch",
    "ACL SETUSER x +select|0 +get|x",
    "ACL GETUSER x",
    "ACL SETUSER y +client -client|kill +config|get",
    "ACL GETUSER y",
    "ACL SETUSER y +get +set -get",
    "ACL GETUSER y",
    "ACL SETUSER y allcommands -config|set",
    "ACL GETUSER y",
    // Errors, and nothing changes when one modifier is wrong.
    "ACL SETUSER x foo",
    "ACL SETUSER x on +nosuch",
    "ACL SETUSER x +@nosuch",
    "ACL SETUSER x #abc",
    "ACL SETUSER x #5E884898DA28047151D0E56F8DC6292773603D0D6AABBDD62A11EF721D1542D8",
    "ACL SETUSER x !abc",
    "ACL SETUSER x <nope",
    "ACL SETUSER x %X~b",
    "ACL SETUSER x %~b",
    "ACL SETUSER x +get|",
    "ACL SETUSER x +client|id|x",
    "ACL SETUSER x -select|0",
    "ACL SETUSER x +client|nosuch",
    "ACL SETUSER x allkeys ~b",
    "ACL SETUSER x allchannels &b",
    "ACL GETUSER x",
    "ACL SETUSER newbie foo",
    "ACL GETUSER newbie",
    "ACL SETUSER",
    "ACL GETUSER",
    "ACL GETUSER a b",
    "ACL DELUSER",
    "ACL DELUSER default",
    "ACL DELUSER x default",
    "ACL DELUSER x y nosuch",
    "ACL DELUSER x",
    "ACL USERS",
    "ACL LIST",
    "ACL CAT",
    "ACL CAT nosuch",
    "ACL CAT read write",
    "ACL NOSUCH",
    // Not compared: ACL HELP (shoal has no ACL LOAD and ACL SAVE: users
    // are in etcd, not in a file).
    "ACL GENPASS 0",
    "ACL GENPASS 4097",
    "ACL GENPASS x",
    "ACL GENPASS 1 2",
    "ACL WHOAMI x",
    "ACL DRYRUN alice set user:1 1",
    "ACL DRYRUN alice set x 1",
    "ACL DRYRUN alice get user:1",
    "ACL DRYRUN alice client id",
    "ACL DRYRUN alice client kill 1.2.3.4:5",
    "ACL DRYRUN bob flushall",
    "ACL DRYRUN nosuch get x",
    "ACL DRYRUN alice nosuchcmd",
    "ACL DRYRUN alice get",
    "ACL DRYRUN alice",
    "ACL LOG RESET",
    "ACL LOG x",
    "ACL LOG -1",
    "ACL LOG 1 2",
    // Logging in.
    "AUTH alice wrong",
    "AUTH nosuch x",
    "AUTH pw",
    "AUTH a b c",
    "AUTH default anything",
    "AUTH bob whatever",
    "ACL WHOAMI",
    "HELLO 2 AUTH alice wrong",
    "HELLO 2 AUTH nosuch pw",
    "AUTH alice pw",
    // As alice: -@all +@read -get +set on ~user:* and %R~r:*.
    "SET user:1 v",
    "SET x 1",
    "SET r:1 1",
    "GET user:1",
    "STRLEN user:1",
    "STRLEN x",
    "STRLEN r:1",
    "MGET user:1 user:2",
    "MGET user:1 x",
    "FLUSHALL",
    "FLUSHDB",
    "CONFIG SET timeout 0",
    "DEL user:1",
    "ACL WHOAMI",
    "ACL SETUSER alice nopass",
    "MULTI",
    "PING",
    "AUTH default x",
    "ACL WHOAMI",
    "DEL user:1",
    // Disabled users cannot log in, whatever the password.
    "ACL SETUSER alice off",
    "AUTH alice pw",
    "ACL SETUSER alice on",
    "AUTH alice pw",
    "AUTH default x",
    "ACL SETUSER alice <pw",
    "ACL SETUSER alice <pw",
    "AUTH alice pw",
    "ACL DELUSER alice bob carol y newbie",
    "ACL LIST",
];

/// Command rules with their single commands sorted: Redis lists the
/// commands that no category covers in its hash table's order, which
/// changes from one redis-server process to the next.
fn canonical(reply: &[u8]) -> String {
    show(reply)
        .split("\\r\\n")
        .map(|part| {
            if !part.contains("@all") {
                return part.to_string();
            }
            let words: Vec<&str> = part.split(' ').collect();
            let start = words.iter().position(|w| w.ends_with("@all")).unwrap();
            let cats = words[start..]
                .iter()
                .take_while(|w| w.contains('@'))
                .count();
            let (head, tail) = words.split_at(start + cats);
            let mut tail = tail.to_vec();
            tail.sort();
            [head, &tail[..]].concat().join(" ")
        })
        .collect::<Vec<_>>()
        .join("\\r\\n")
}

/// The script's lines whose replies differ (command rules compared in
/// [`canonical`] form).
fn differences(s: &mut Conn, r: &mut Conn) -> Vec<String> {
    let mut out = Vec::new();
    for line in SCRIPT {
        let (a, b) = (s.line(line), r.line(line));
        if canonical(&a) != canonical(&b) {
            out.push(format!(
                "{line}\n    shoal: {}\n    redis: {}",
                show(&a),
                show(&b)
            ));
        }
    }
    out
}

#[test]
fn acl_commands_match_redis() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let cl = cluster(&dir.path().join("cluster"), 1, 1, 1);
    let addr = cl.router_addr();

    let mut s = Conn::connect(&addr);
    let mut r = Conn::connect(&redis.addr);
    let mut diffs = differences(&mut s, &mut r);
    // Everything again in RESP3 (maps, sets, nulls).
    assert!(s.line("HELLO 3").starts_with(b"%"));
    assert!(r.line("HELLO 3").starts_with(b"%"));
    diffs.extend(differences(&mut s, &mut r));
    assert!(
        diffs.is_empty(),
        "replies differ from Redis:\n{}",
        diffs.join("\n")
    );

    // ACL LOG: the same entries; ages and client-info are the servers' own.
    let log_of = |addr: &str| {
        let mut con = common::connect(addr);
        let v = common::run(&mut con, &["ACL", "LOG"]).unwrap();
        let redis::Value::Array(entries) = v else {
            panic!("ACL LOG: {v:?}")
        };
        entries
            .iter()
            .map(|e| {
                let m = common::flat_map(e);
                let text = |k: &str| match &m[k] {
                    redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    redis::Value::Int(i) => i.to_string(),
                    other => panic!("{k}: {other:?}"),
                };
                let mut fields: Vec<String> = m.keys().cloned().collect();
                fields.sort();
                assert!(
                    text("client-info").contains("id="),
                    "{}",
                    text("client-info")
                );
                format!(
                    "count={} reason={} context={} object={} username={} fields={fields:?}",
                    text("count"),
                    text("reason"),
                    text("context"),
                    text("object"),
                    text("username")
                )
            })
            .collect::<Vec<_>>()
    };
    let (shoal_log, redis_log) = (log_of(&addr), log_of(&redis.addr));
    // GENPASS: random, so only its shape.
    let mut g = Conn::connect(&addr);
    let pass = show(&g.line("ACL GENPASS"));
    assert!(pass.starts_with("$64\\r\\n"), "{pass}");
    assert!(pass[7..71].bytes().all(|c| c.is_ascii_hexdigit()), "{pass}");
    assert_ne!(pass, show(&g.line("ACL GENPASS")));
    assert!(show(&g.line("ACL GENPASS 5")).starts_with("$2\\r\\n"));
    assert!(shoal_log.len() >= 5, "{shoal_log:#?}");
    assert_eq!(shoal_log, redis_log);

    // ACL CAT <category>: Redis's list, less the commands shoal does not
    // have, in any order (Redis's is its hash table's).
    let mut s = Conn::connect(&addr);
    let mut r = Conn::connect(&redis.addr);
    let names = |reply: Vec<u8>| -> BTreeSet<String> {
        let text = String::from_utf8_lossy(&reply).into_owned();
        text.split("\r\n")
            .filter(|l| !l.is_empty() && !l.starts_with('*') && !l.starts_with('$'))
            .map(str::to_string)
            .collect()
    };
    let ours: BTreeSet<String> = names(s.line("ACL CAT slow"))
        .union(&names(s.line("ACL CAT fast")))
        .cloned()
        .collect();
    assert!(ours.contains("get") && ours.contains("config|set") && ours.contains("acl|setuser"));
    let categories = names(r.line("ACL CAT"));
    assert_eq!(categories, names(s.line("ACL CAT")));
    // Every full name Redis has (shoal's TABLE.*, CLUSTER.* and CLIENT
    // SETINFO, from Redis 7.2, are not among them).
    let redis_all: BTreeSet<String> = categories
        .iter()
        .flat_map(|cat| names(r.line(&format!("ACL CAT {cat}"))))
        .collect();
    let mut wrong = Vec::new();
    for cat in &categories {
        let line = format!("ACL CAT {cat}");
        let theirs: BTreeSet<String> = names(r.line(&line))
            .into_iter()
            .filter(|c| ours.contains(c))
            .collect();
        let mine = names(s.line(&line));
        let mine_shared: BTreeSet<String> = mine.intersection(&redis_all).cloned().collect();
        if mine_shared != theirs {
            wrong.push(format!(
                "{cat}: shoal only {:?}, redis only {:?}",
                mine_shared.difference(&theirs).collect::<Vec<_>>(),
                theirs.difference(&mine_shared).collect::<Vec<_>>()
            ));
        }
        // shoal's own commands (TABLE.*, CLUSTER.*) only where they belong.
        for own in mine.iter().filter(|c| c.contains('.')) {
            let ok = match cat.as_str() {
                "admin" | "dangerous" | "slow" => own != "table.use",
                "connection" | "fast" => own == "table.use",
                _ => false,
            };
            if !ok {
                wrong.push(format!("{cat}: {own}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "ACL CAT differs from Redis:\n{}",
        wrong.join("\n")
    );
}

/// Send a line and return the reply as text.
fn line(c: &mut Conn, l: &str) -> String {
    show(&c.line(l))
}

#[test]
fn restricted_users_on_two_routers() {
    let dir = tempfile::tempdir().unwrap();
    let cl = cluster(&dir.path().join("cluster"), 1, 1, 1);
    let a = cl.router_addr();
    let (b, _router_b) = extra_router(&cl, &dir.path().join("router-b"), "", &[]);
    let mut admin_a = Conn::connect(&a);
    let mut admin_b = Conn::connect(&b);
    assert_eq!(line(&mut admin_a, "TABLE.CREATE shop 1 1"), "+OK\\r\\n");
    assert_eq!(line(&mut admin_a, "TABLE.USE shop"), "+OK\\r\\n");
    assert_eq!(line(&mut admin_a, "SET user:1 one"), "+OK\\r\\n");
    assert_eq!(line(&mut admin_a, "SET other x"), "+OK\\r\\n");

    // A user made through router A logs in on router B.
    let made = Instant::now();
    assert_eq!(
        line(
            &mut admin_a,
            "ACL SETUSER reader on >rpw +@read +@connection ~user:* resettables table:shop"
        ),
        "+OK\\r\\n"
    );
    let mut reader = Conn::connect(&b);
    assert!(
        wait_until(Duration::from_secs(5), || line(
            &mut reader,
            "AUTH reader rpw"
        ) == "+OK\\r\\n"),
        "router B never learned of user reader"
    );
    eprintln!(
        "user created on A, logged in on B after {:?}",
        made.elapsed()
    );
    assert!(line(&mut admin_b, "ACL GETUSER reader").contains("table:shop"));

    // What it may do, and every refusal.
    assert_eq!(
        line(&mut reader, "GET user:1"),
        "-NOPERM this user has no permissions to use the 'default' table\\r\\n"
    );
    assert_eq!(
        line(&mut reader, "TABLE.USE default"),
        "-NOPERM this user has no permissions to use the 'default' table\\r\\n"
    );
    assert_eq!(line(&mut reader, "TABLE.USE shop"), "+OK\\r\\n");
    assert_eq!(line(&mut reader, "GET user:1"), "$3\\r\\none\\r\\n");
    assert_eq!(
        line(&mut reader, "GET other"),
        "-NOPERM this user has no permissions to access one of the keys used as arguments\\r\\n"
    );
    assert_eq!(
        line(&mut reader, "SET user:1 two"),
        "-NOPERM this user has no permissions to run the 'set' command\\r\\n"
    );
    for (cmd, name) in [
        ("FLUSHALL", "flushall"),
        ("FLUSHDB", "flushdb"),
        ("TABLE.DROP shop", "table.drop"),
        ("TABLE.CREATE t2", "table.create"),
        ("CLUSTER.DRAIN 1", "cluster.drain"),
        ("CONFIG SET timeout 1", "config|set"),
    ] {
        assert_eq!(
            line(&mut reader, cmd),
            format!("-NOPERM this user has no permissions to run the '{name}' command\\r\\n"),
            "{cmd}"
        );
    }
    // A pipeline takes the same checks.
    reader.send_raw(b"GET user:1\r\nGET other\r\nGET user:1\r\n");
    assert_eq!(show(&reader.read_reply().unwrap()), "$3\\r\\none\\r\\n");
    assert!(show(&reader.read_reply().unwrap()).starts_with("-NOPERM"));
    assert_eq!(show(&reader.read_reply().unwrap()), "$3\\r\\none\\r\\n");

    // A writer limited to its keys and without @dangerous.
    assert_eq!(
        line(
            &mut admin_a,
            "ACL SETUSER writer on >wpw +@all -@dangerous ~user:*"
        ),
        "+OK\\r\\n"
    );
    let mut writer = Conn::connect(&b);
    assert!(wait_until(Duration::from_secs(5), || line(
        &mut writer,
        "AUTH writer wpw"
    ) == "+OK\\r\\n"));
    assert_eq!(line(&mut writer, "TABLE.USE shop"), "+OK\\r\\n");
    assert_eq!(line(&mut writer, "SET user:2 v"), "+OK\\r\\n");
    // HELLO 3 AUTH and a client library's redis://user:pass@ URL.
    let mut hello = Conn::connect(&b);
    assert!(line(&mut hello, "HELLO 3 AUTH writer wpw").starts_with('%'));
    assert_eq!(line(&mut hello, "ACL WHOAMI"), "$6\\r\\nwriter\\r\\n");
    let client = redis::Client::open(format!("redis://writer:wpw@{b}/")).unwrap();
    let mut con = client.get_connection().unwrap();
    let who: String = redis::cmd("ACL").arg("WHOAMI").query(&mut con).unwrap();
    assert_eq!(who, "writer");
    let refused: redis::RedisResult<()> = redis::cmd("FLUSHALL").query(&mut con);
    assert!(refused.unwrap_err().to_string().contains("NOPERM"));
    assert_eq!(
        line(&mut writer, "SET other v"),
        "-NOPERM this user has no permissions to access one of the keys used as arguments\\r\\n"
    );
    assert_eq!(
        line(&mut writer, "MSET user:3 a other b"),
        "-NOPERM this user has no permissions to access one of the keys used as arguments\\r\\n"
    );
    for cmd in ["FLUSHALL", "TABLE.DROP shop", "KEYS *"] {
        assert!(line(&mut writer, cmd).starts_with("-NOPERM"), "{cmd}");
    }
    // Refused inside MULTI when queued: EXEC aborts.
    assert_eq!(line(&mut writer, "MULTI"), "+OK\\r\\n");
    assert!(line(&mut writer, "SET other v").starts_with("-NOPERM"));
    assert!(line(&mut writer, "EXEC").starts_with("-EXECABORT"));
    assert_eq!(line(&mut admin_a, "GET other"), "$1\\r\\nx\\r\\n");

    // A change on A applies on B: queued before, refused at EXEC.
    assert_eq!(line(&mut writer, "MULTI"), "+OK\\r\\n");
    assert_eq!(line(&mut writer, "SET user:4 v"), "+QUEUED\\r\\n");
    assert_eq!(line(&mut writer, "GET user:4"), "+QUEUED\\r\\n");
    let changed = Instant::now();
    assert_eq!(line(&mut admin_a, "ACL SETUSER writer -set"), "+OK\\r\\n");
    assert!(wait_until(Duration::from_secs(5), || line(
        &mut admin_b,
        "ACL GETUSER writer"
    )
    .contains("-set")));
    eprintln!("change on A seen by B after {:?}", changed.elapsed());
    assert_eq!(
        line(&mut writer, "EXEC"),
        "*2\\r\\n-NOPERM ACLs rules changed between the moment the transaction was accumulated and the EXEC call. This command is no longer allowed for the following reason: no permission to execute the command or subcommand\\r\\n$-1\\r\\n"
    );
    assert_eq!(
        line(&mut writer, "SET user:4 v"),
        "-NOPERM this user has no permissions to run the 'set' command\\r\\n"
    );

    // Within a second or so, a reader on B loses GET after A removes it.
    let changed = Instant::now();
    assert_eq!(line(&mut admin_a, "ACL SETUSER reader -get"), "+OK\\r\\n");
    assert!(wait_until(Duration::from_secs(5), || line(
        &mut reader,
        "GET user:1"
    )
    .starts_with("-NOPERM")));
    let took = changed.elapsed();
    eprintln!("GET refused on B {took:?} after the change on A");

    // ACL LOG on B has the refusals, newest first.
    let log = line(&mut admin_b, "ACL LOG 100");
    for want in [
        "$6\\r\\nreader\\r\\n",
        "$6\\r\\nwriter\\r\\n",
        "$8\\r\\nflushall\\r\\n",
        "$10\\r\\ntable.drop\\r\\n",
        "$5\\r\\ntable\\r\\n",
        "$3\\r\\nkey\\r\\n",
        "$5\\r\\nmulti\\r\\n",
        "$5\\r\\nother\\r\\n",
    ] {
        assert!(log.contains(want), "ACL LOG lacks {want}: {log}");
    }

    // Deleting a user closes its connections; its password no longer works.
    assert_eq!(line(&mut admin_a, "ACL DELUSER reader"), ":1\\r\\n");
    assert!(wait_until(Duration::from_secs(5), || !line(
        &mut admin_b,
        "ACL USERS"
    )
    .contains("reader")));
    let _ = reader.line("PING");
    assert!(reader.is_closed(Duration::from_secs(5)));
    let mut again = Conn::connect(&b);
    assert_eq!(
        line(&mut again, "AUTH reader rpw"),
        "-WRONGPASS invalid username-password pair or user is disabled.\\r\\n"
    );
}

/// `requirepass` is the `default` user's password until `default` is
/// stored in etcd; from then on the stored user rules on every router.
#[test]
fn the_default_user_stored_in_etcd_rules_every_router() {
    let dir = tempfile::tempdir().unwrap();
    let cl = cluster(&dir.path().join("cluster"), 1, 1, 1);
    let a = cl.router_addr();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "from-config\n").unwrap();
    let (b, _router_b) = extra_router(
        &cl,
        &dir.path().join("router-b"),
        "",
        &["--requirepass-file", pw.to_str().unwrap()],
    );
    let noauth = "-NOAUTH Authentication required.\\r\\n";
    let mut on_b = Conn::connect(&b);
    assert_eq!(line(&mut on_b, "GET k"), noauth);
    assert_eq!(line(&mut on_b, "AUTH from-config"), "+OK\\r\\n");
    let mut on_a = Conn::connect(&a);
    assert_eq!(line(&mut on_a, "GET k"), "$-1\\r\\n");

    assert_eq!(
        line(&mut on_a, "ACL SETUSER default resetpass >stored"),
        "+OK\\r\\n"
    );
    for addr in [&a, &b] {
        assert!(
            wait_until(Duration::from_secs(5), || {
                let mut c = Conn::connect(addr);
                line(&mut c, "AUTH stored") == "+OK\\r\\n"
            }),
            "{addr} never took the stored default user"
        );
        let mut c = Conn::connect(addr);
        assert_eq!(line(&mut c, "GET k"), noauth);
        assert!(line(&mut c, "AUTH from-config").starts_with("-WRONGPASS"));
    }
    // Connections already logged in stay in.
    assert_eq!(line(&mut on_a, "GET k"), "$-1\\r\\n");
    assert_eq!(line(&mut on_b, "GET k"), "$-1\\r\\n");
}

/// A router whose requirepass a stored `default` user without password
/// overrides says so at start when it listens beyond loopback.
#[test]
fn an_open_stored_default_user_is_a_warning() {
    use shoal::devcluster::{free_port, Proc};
    let dir = tempfile::tempdir().unwrap();
    let cl = cluster(&dir.path().join("cluster"), 1, 1, 1);
    let mut a = Conn::connect(&cl.router_addr());
    assert_eq!(line(&mut a, "ACL SETUSER default on"), "+OK\\r\\n");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    let run = dir.path().join("router-c");
    std::fs::create_dir_all(&run).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.arg("router")
        .arg("--listen")
        .arg(format!("0.0.0.0:{}", free_port()))
        .arg("--etcd")
        .arg(cl.etcd_url())
        .arg("--requirepass-file")
        .arg(&pw);
    let _router = Proc::spawn("router", cmd, &run).expect("router starts");
    let log = run.join("router.log");
    assert!(
        wait_until(Duration::from_secs(20), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("the default user stored in etcd needs no password")),
        "no warning: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
