//! [`compile`]: each command family turns into the right shard operations on
//! the right shards, with Redis's errors for bad arguments; plus a property
//! that, for every command the table routes to `compile` and any arguments,
//! `compile` never panics and agrees with the command table (the keys it
//! touches are the table's key positions, writes only for write commands).
//!
//! Arity is checked by the session from the command table before `compile`
//! runs; [`dispatch`] does the same here, so arity errors are tested as a
//! client sees them.

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::meta::descriptor::TableState;
use crate::meta::descriptor::{slot_ranges, ShardDescriptor, TableDescriptor};
use crate::resp::commands::{lookup, COMMANDS};
use crate::resp::spec::Handler;

/// Compile `name` through its row's handler, as the dispatcher does.
fn compile(
    name: &str,
    args: &mut Args,
    table: &Arc<TableRoute>,
    max_value: usize,
) -> Result<Plan, Reply> {
    match lookup(name).map(|c| c.handler) {
        Some(Handler::Data(f)) => f(args, &Ctx { table, max_value }),
        _ => Err(Reply::error(format!("ERR not a data command '{name}'"))),
    }
}

/// The router's value limit in these tests.
const MAX_VALUE: usize = 100;

/// An available table of `shards` shards (group ids 100, 101, ...).
fn table(shards: usize) -> Arc<TableRoute> {
    let shards = slot_ranges(shards)
        .into_iter()
        .enumerate()
        .map(|(i, slots)| ShardDescriptor {
            group_id: 100 + i as u64,
            slots,
            replicas: vec![1],
            learners: Vec::new(),
            moving: None,
        })
        .collect();
    Arc::new(TableRoute {
        desc: TableDescriptor {
            name: "t".into(),
            table_id: 1,
            db_index: 0,
            state: TableState::Available,
            replicas: 1,
            shards,
            created_at: 0,
            engine: Default::default(),
        },
        mod_revision: 0,
    })
}

/// A request as its arguments (binary-safe).
fn request(parts: &[&[u8]]) -> Vec<Bytes> {
    parts.iter().map(|p| Bytes::copy_from_slice(p)).collect()
}

/// What the session does with a data command: look it up in the command
/// table, check its arity, then compile it.
fn dispatch_parts(table: &Arc<TableRoute>, parts: Vec<Bytes>) -> Result<Plan, Reply> {
    let mut args = Args::new(parts);
    let name = args.name().to_string();
    let spec =
        lookup(&name).ok_or_else(|| Reply::error(format!("ERR unknown command '{name}'")))?;
    if !spec.arity_ok(args.len()) {
        return Err(wrong_args(&name));
    }
    compile(&name, &mut args, table, MAX_VALUE)
}

/// [`dispatch_parts`] of a space-separated command on a one-shard table.
fn dispatch(cmd: &str) -> Result<Plan, Reply> {
    let parts = cmd.split(' ').map(str::as_bytes).collect::<Vec<_>>();
    dispatch_parts(&table(1), request(&parts))
}

/// The error a command compiles to.
fn error(cmd: &str) -> String {
    match dispatch(cmd) {
        Err(Reply::Error(e)) => e,
        other => panic!("{cmd}: expected an error, got {other:?}"),
    }
}

/// The one operation a single-shard command compiles to.
fn single_op(cmd: &str) -> TxnOp {
    let plan = dispatch(cmd).unwrap_or_else(|e| panic!("{cmd}: {e:?}"));
    assert_eq!(plan.parts.len(), 1, "{cmd}");
    let part = &plan.parts[0];
    let keys = part.op.keys();
    assert_eq!(
        part.shard,
        plan.table.desc.shard_for_slot(slot(&keys[0])),
        "{cmd}"
    );
    part.op.clone()
}

fn write_op(cmd: &str) -> WriteOp {
    match single_op(cmd) {
        TxnOp::Write(w) => w,
        other => panic!("{cmd}: expected a write, got {other:?}"),
    }
}

fn read_op(cmd: &str) -> ReadOp {
    match single_op(cmd) {
        TxnOp::Read(r) => r,
        other => panic!("{cmd}: expected a read, got {other:?}"),
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";

/// The expiry a SET/GETEX compiled to, and the clock around the call.
fn expiry_of(cmd: &str) -> (Expiry, u64, u64) {
    let before = now_ms();
    let op = write_op(cmd);
    let after = now_ms();
    let expiry = match op {
        WriteOp::Set { expiry, .. } | WriteOp::GetEx { expiry, .. } => expiry,
        other => panic!("{cmd}: {other:?}"),
    };
    (expiry, before, after)
}

fn assert_relative(cmd: &str, ms: u64) {
    let (expiry, before, after) = expiry_of(cmd);
    let Expiry::At(at) = expiry else {
        panic!("{cmd}: {expiry:?}");
    };
    assert!(
        (before + ms..=after + ms).contains(&at),
        "{cmd}: {at} not {ms} ms after [{before}, {after}]"
    );
}

#[test]
fn set_plain_and_conditions() {
    assert_eq!(
        write_op("SET k v"),
        WriteOp::Set {
            key: b("k"),
            value: b("v"),
            expiry: Expiry::Clear,
            cond: SetCond::Always,
            get: false,
        }
    );
    assert!(matches!(
        write_op("set k v nx"),
        WriteOp::Set {
            cond: SetCond::IfAbsent,
            get: false,
            ..
        }
    ));
    assert!(matches!(
        write_op("SET k v XX GET"),
        WriteOp::Set {
            cond: SetCond::IfPresent,
            get: true,
            ..
        }
    ));
    assert!(matches!(
        write_op("SET k v KEEPTTL"),
        WriteOp::Set {
            expiry: Expiry::Keep,
            ..
        }
    ));
    // Redis accepts a flag given twice.
    assert!(matches!(
        write_op("SET k v NX NX"),
        WriteOp::Set {
            cond: SetCond::IfAbsent,
            ..
        }
    ));
    assert!(matches!(
        write_op("SET k v XX xx GET get"),
        WriteOp::Set {
            cond: SetCond::IfPresent,
            get: true,
            ..
        }
    ));
    assert!(matches!(
        write_op("SET k v KEEPTTL KEEPTTL"),
        WriteOp::Set {
            expiry: Expiry::Keep,
            ..
        }
    ));
    assert_eq!(dispatch("SET k v").unwrap().merge, Merge::Single);
}

#[test]
fn set_expiry_options() {
    assert_relative("SET k v EX 10", 10_000);
    assert_relative("SET k v px 5", 5);
    assert_eq!(expiry_of("SET k v EXAT 100").0, Expiry::At(100_000));
    assert_eq!(expiry_of("SET k v PXAT 5").0, Expiry::At(5));
    assert_eq!(
        expiry_of("SET k v PXAT 9223372036854775807").0,
        Expiry::At(i64::MAX as u64)
    );
    // The same option again: the last one counts (as in Redis).
    assert_relative("SET k v EX 10 EX 20", 20_000);
    assert_eq!(expiry_of("SET k v PXAT 5 PXAT 7").0, Expiry::At(7));
}

#[test]
fn set_errors_are_redis_errors() {
    let invalid = "ERR invalid expire time in 'set' command";
    for cmd in [
        "SET k v EX -1",
        "SET k v EX 0",
        "SET k v PX 0",
        "SET k v EXAT -5",
        "SET k v PXAT 0",
        "SET k v EX 9223372036854775807",
        "SET k v PX 9223372036854775807",
        "SET k v EXAT 9223372036854775807",
    ] {
        assert_eq!(error(cmd), invalid, "{cmd}");
    }
    for cmd in [
        "SET k v NX XX",
        "SET k v XX NX",
        "SET k v EX 10 PX 10",
        "SET k v PXAT 10 EXAT 10",
        "SET k v KEEPTTL EX 10",
        "SET k v EX 10 KEEPTTL",
        "SET k v PERSIST",
        "SET k v FOO",
        // An option that needs a number, without one.
        "SET k v EX",
        "SET k v NX PX",
        // Options are all read before the number is looked at.
        "SET k v EX abc NX XX",
        "SET k v EX -1 FOO",
    ] {
        assert_eq!(error(cmd), SYNTAX, "{cmd}");
    }
    for cmd in [
        "SET k v EX abc",
        "SET k v PX 1.5",
        "SET k v EX 99999999999999999999",
    ] {
        assert_eq!(error(cmd), NOT_INTEGER, "{cmd}");
    }
    assert_eq!(
        error("SET k"),
        "ERR wrong number of arguments for 'set' command"
    );
}

#[test]
fn setnx_getset_getdel() {
    let plan = dispatch("SETNX k v").unwrap();
    assert_eq!(plan.merge, Merge::SetNx);
    assert!(matches!(
        write_op("SETNX k v"),
        WriteOp::Set {
            cond: SetCond::IfAbsent,
            get: false,
            expiry: Expiry::Clear,
            ..
        }
    ));
    assert!(matches!(
        write_op("GETSET k v"),
        WriteOp::Set {
            cond: SetCond::Always,
            get: true,
            expiry: Expiry::Clear,
            ..
        }
    ));
    assert_eq!(write_op("GETDEL k"), WriteOp::GetDel { key: b("k") });
    for (cmd, name) in [
        ("SETNX k", "setnx"),
        ("SETNX k v x", "setnx"),
        ("GETSET k", "getset"),
        ("GETDEL", "getdel"),
        ("GETDEL a b", "getdel"),
    ] {
        assert_eq!(
            error(cmd),
            format!("ERR wrong number of arguments for '{name}' command")
        );
    }
}

#[test]
fn getex_options() {
    // Plain GETEX is a read.
    assert_eq!(read_op("GETEX k"), ReadOp::Get { key: b("k") });
    assert_eq!(
        write_op("GETEX k PERSIST"),
        WriteOp::GetEx {
            key: b("k"),
            expiry: Expiry::Clear
        }
    );
    assert_relative("GETEX k EX 10", 10_000);
    assert_relative("GETEX k PX 10", 10);
    assert_eq!(expiry_of("GETEX k EXAT 7").0, Expiry::At(7_000));
    assert_eq!(expiry_of("GETEX k pxat 7").0, Expiry::At(7));
    // Repeated options, as Redis takes them.
    assert_relative("GETEX k EX 10 EX 20", 20_000);
    assert_eq!(expiry_of("GETEX k PERSIST PERSIST").0, Expiry::Clear);
    let invalid = "ERR invalid expire time in 'getex' command";
    for cmd in [
        "GETEX k EX -1",
        "GETEX k PX 0",
        "GETEX k EX 9223372036854775807",
    ] {
        assert_eq!(error(cmd), invalid, "{cmd}");
    }
    for cmd in [
        "GETEX k EX",
        "GETEX k PERSIST EX 10",
        "GETEX k EX 10 PERSIST",
        "GETEX k EX 10 PX 10",
        "GETEX k KEEPTTL",
        "GETEX k NX",
        "GETEX k GET",
        "GETEX k FOO",
        "GETEX k EX abc FOO",
    ] {
        assert_eq!(error(cmd), SYNTAX, "{cmd}");
    }
    assert_eq!(error("GETEX k EX abc"), NOT_INTEGER);
    assert_eq!(
        error("GETEX"),
        "ERR wrong number of arguments for 'getex' command"
    );
}

#[test]
fn counters() {
    let by = |cmd: &str| match write_op(cmd) {
        WriteOp::IncrBy { key, by } => {
            assert_eq!(key, b("k"));
            by
        }
        other => panic!("{cmd}: {other:?}"),
    };
    assert_eq!(by("INCR k"), 1);
    assert_eq!(by("DECR k"), -1);
    assert_eq!(by("INCRBY k 5"), 5);
    assert_eq!(by("INCRBY k -9223372036854775808"), i64::MIN);
    assert_eq!(by("DECRBY k 5"), -5);
    assert_eq!(by("DECRBY k -9223372036854775807"), i64::MAX);
    assert_eq!(
        error("DECRBY k -9223372036854775808"),
        "ERR decrement would overflow"
    );
    for cmd in [
        "INCRBY k abc",
        "INCRBY k 1.5",
        "DECRBY k x1",
        "INCRBY k 9223372036854775808",
    ] {
        assert_eq!(error(cmd), NOT_INTEGER, "{cmd}");
    }
    assert_eq!(
        write_op("INCRBYFLOAT k 1.5e3"),
        WriteOp::IncrByFloat {
            key: b("k"),
            by: b("1.5e3")
        }
    );
    for cmd in [
        "INCRBYFLOAT k abc",
        "INCRBYFLOAT k 1.5.5",
        "INCRBYFLOAT k nan",
    ] {
        assert_eq!(error(cmd), "ERR value is not a valid float", "{cmd}");
    }
    for (cmd, name) in [
        ("INCR", "incr"),
        ("INCR k 1", "incr"),
        ("DECR k 1", "decr"),
        ("INCRBY k", "incrby"),
        ("DECRBY k 1 2", "decrby"),
        ("INCRBYFLOAT k", "incrbyfloat"),
    ] {
        assert_eq!(
            error(cmd),
            format!("ERR wrong number of arguments for '{name}' command")
        );
    }
}

#[test]
fn append_strlen_ranges() {
    // APPEND and SETRANGE carry the value limit for the node to enforce on
    // the grown value (the shard leader stamps its own over it).
    assert_eq!(
        write_op("APPEND k v"),
        WriteOp::Append {
            key: b("k"),
            value: b("v"),
            max_len: MAX_VALUE as u64
        }
    );
    assert_eq!(
        write_op("SETRANGE k 3 v"),
        WriteOp::SetRange {
            key: b("k"),
            offset: 3,
            value: b("v"),
            max_len: MAX_VALUE as u64
        }
    );
    assert_eq!(error("SETRANGE k -1 v"), "ERR offset is out of range");
    assert_eq!(error("SETRANGE k x v"), NOT_INTEGER);
    assert_eq!(read_op("STRLEN k"), ReadOp::StrLen { key: b("k") });
    assert_eq!(
        read_op("GETRANGE k 0 -1"),
        ReadOp::GetRange {
            key: b("k"),
            start: 0,
            end: -1
        }
    );
    assert_eq!(
        read_op("SUBSTR k -3 2"),
        ReadOp::GetRange {
            key: b("k"),
            start: -3,
            end: 2
        }
    );
    assert_eq!(error("GETRANGE k a 1"), NOT_INTEGER);
    assert_eq!(error("GETRANGE k 0 1.0"), NOT_INTEGER);
    for (cmd, name) in [
        ("APPEND k", "append"),
        ("STRLEN", "strlen"),
        ("GETRANGE k 0", "getrange"),
        ("SUBSTR k 0 1 2", "substr"),
        ("SETRANGE k 0", "setrange"),
    ] {
        assert_eq!(
            error(cmd),
            format!("ERR wrong number of arguments for '{name}' command")
        );
    }
}

#[test]
fn expiry_commands() {
    let before = now_ms() as i64;
    let WriteOp::Expire { key, at_ms, cond } = write_op("EXPIRE k 10") else {
        panic!()
    };
    assert_eq!(key, b("k"));
    assert!(at_ms >= before + 10_000 && at_ms <= now_ms() as i64 + 10_000);
    assert_eq!(cond, ExpireCond::default());
    assert!(matches!(
        write_op("PEXPIREAT k -5 XX GT"),
        WriteOp::Expire {
            at_ms: -5,
            cond: ExpireCond {
                xx: true,
                gt: true,
                nx: false,
                lt: false
            },
            ..
        }
    ));
    assert!(matches!(
        write_op("EXPIREAT k 7 nx"),
        WriteOp::Expire {
            at_ms: 7_000,
            cond: ExpireCond { nx: true, .. },
            ..
        }
    ));
    assert_eq!(
        error("PEXPIRE k 10 NX LT"),
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    assert_eq!(error("EXPIRE k 10 FOO"), "ERR Unsupported option FOO");
    assert_eq!(error("EXPIRE k ten"), NOT_INTEGER);
    assert_eq!(
        error("EXPIREAT k 9223372036854775807"),
        "ERR invalid expire time in 'expireat' command"
    );
    assert_eq!(write_op("PERSIST k"), WriteOp::Persist { key: b("k") });
    assert_eq!(
        read_op("TTL k"),
        ReadOp::Ttl {
            key: b("k"),
            ms: false
        }
    );
    assert_eq!(
        read_op("PTTL k"),
        ReadOp::Ttl {
            key: b("k"),
            ms: true
        }
    );
    assert_eq!(read_op("TYPE k"), ReadOp::Type { key: b("k") });
    for (cmd, name) in [
        ("EXPIRE k", "expire"),
        ("PEXPIREAT k", "pexpireat"),
        ("PERSIST", "persist"),
        ("TTL k x", "ttl"),
        ("PTTL", "pttl"),
        ("TYPE", "type"),
    ] {
        assert_eq!(
            error(cmd),
            format!("ERR wrong number of arguments for '{name}' command")
        );
    }
}

/// Keys spread over several shards, and two that share a hash tag.
const SPREAD: [&str; 6] = ["a", "b", "c", "{t}x", "d", "{t}y"];

/// The shards of `keys` in a 4-shard table; the test needs them spread.
fn shards_of(t: &TableRoute, keys: &[&str]) -> Vec<usize> {
    keys.iter()
        .map(|k| t.desc.shard_for_slot(slot(k.as_bytes())))
        .collect()
}

#[test]
fn multi_key_commands_split_by_shard() {
    let t = table(4);
    let shards = shards_of(&t, &SPREAD);
    assert!(
        shards
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 1,
        "keys in one shard: {shards:?}"
    );
    let mut parts: Vec<&[u8]> = vec![b"DEL"];
    parts.extend(SPREAD.iter().map(|k| k.as_bytes()));
    for name in ["DEL", "UNLINK", "EXISTS", "TOUCH"] {
        parts[0] = name.as_bytes();
        let plan = dispatch_parts(&t, request(&parts)).unwrap();
        assert_eq!(plan.merge, Merge::Sum, "{name}");
        assert_eq!(plan.atomicity, Atomicity::None, "{name}");
        // One part per shard, each holding exactly that shard's keys.
        let mut seen = Vec::new();
        for part in &plan.parts {
            let write = matches!(part.op, TxnOp::Write(WriteOp::Del { .. }));
            let read = matches!(part.op, TxnOp::Read(ReadOp::Exists { .. }));
            assert!(
                if name == "DEL" || name == "UNLINK" {
                    write
                } else {
                    read
                },
                "{name}"
            );
            for k in part.op.keys() {
                assert_eq!(t.desc.shard_for_slot(slot(&k)), part.shard);
                seen.push(k);
            }
        }
        seen.sort();
        let mut want: Vec<Bytes> = SPREAD.iter().map(|k| b(k)).collect();
        want.sort();
        assert_eq!(seen, want, "{name}");
        assert_eq!(
            plan.parts.len(),
            plan.shards(),
            "{name}: one part per shard"
        );
    }
    assert_eq!(dispatch("DEL").unwrap_err(), wrong_args("del"),);
}

#[test]
fn mget_gathers_in_request_order() {
    let t = table(4);
    let mut parts: Vec<&[u8]> = vec![b"MGET"];
    parts.extend(SPREAD.iter().map(|k| k.as_bytes()));
    parts.push(b"a"); // a key named twice
    let plan = dispatch_parts(&t, request(&parts)).unwrap();
    assert!(plan.is_read_only());
    let Merge::Gather { positions, len } = &plan.merge else {
        panic!("{:?}", plan.merge)
    };
    assert_eq!(*len, SPREAD.len() + 1);
    // Each part's j-th key is the request's key at positions[i][j].
    let mut covered = vec![false; *len];
    for (part, pos) in plan.parts.iter().zip(positions) {
        let TxnOp::Read(ReadOp::MGet { keys }) = &part.op else {
            panic!("{:?}", part.op)
        };
        assert_eq!(keys.len(), pos.len());
        for (k, &p) in keys.iter().zip(pos) {
            assert_eq!(&k[..], parts[p + 1]);
            assert_eq!(t.desc.shard_for_slot(slot(k)), part.shard);
            covered[p] = true;
        }
    }
    assert!(covered.iter().all(|c| *c));
    assert_eq!(
        error("MGET"),
        "ERR wrong number of arguments for 'mget' command"
    );
}

#[test]
fn mset_and_msetnx() {
    // One shard: a single part.
    let plan = dispatch("MSET a 1 b 2 a 3").unwrap();
    assert_eq!(plan.merge, Merge::Single);
    assert_eq!(plan.atomicity, Atomicity::AllOrNothing);
    assert_eq!(
        plan.parts[0].op,
        TxnOp::Write(WriteOp::MSet {
            pairs: vec![(b("a"), b("1")), (b("b"), b("2")), (b("a"), b("3"))],
            nx: false,
        })
    );
    let plan = dispatch("MSETNX a 1").unwrap();
    assert_eq!(plan.atomicity, Atomicity::AllIfAbsent);
    assert!(matches!(
        &plan.parts[0].op,
        TxnOp::Write(WriteOp::MSet { nx: true, .. })
    ));
    // Several shards: every part OK makes the reply OK.
    let t = table(4);
    let mut parts: Vec<&[u8]> = vec![b"MSET"];
    for k in SPREAD {
        parts.push(k.as_bytes());
        parts.push(b"v");
    }
    let plan = dispatch_parts(&t, request(&parts)).unwrap();
    assert_eq!(plan.merge, Merge::AllOk);
    assert!(plan.shards() > 1);
    for part in &plan.parts {
        for k in part.op.keys() {
            assert_eq!(t.desc.shard_for_slot(slot(&k)), part.shard);
        }
    }
    // A key without its value.
    for (cmd, name) in [
        ("MSET a 1 b", "mset"),
        ("MSETNX a 1 b", "msetnx"),
        ("MSET a", "mset"),
        ("MSETNX", "msetnx"),
    ] {
        assert_eq!(
            error(cmd),
            format!("ERR wrong number of arguments for '{name}' command")
        );
    }
}

#[test]
fn values_over_the_limit_are_refused() {
    let at = "v".repeat(MAX_VALUE);
    let over = "v".repeat(MAX_VALUE + 1);
    for cmd in [
        "SET k {}",
        "SET k {} NX",
        "SETNX k {}",
        "GETSET k {}",
        "MSET a 1 k {}",
        "MSETNX k {}",
    ] {
        assert!(
            dispatch(&cmd.replace("{}", &at)).is_ok(),
            "{cmd} at the limit"
        );
        assert_eq!(
            error(&cmd.replace("{}", &over)),
            "ERR value is too large",
            "{cmd} over the limit"
        );
    }
}

#[test]
fn unknown_and_non_data_commands() {
    assert!(lookup("nosuch").is_none());
    assert_eq!(
        dispatch_parts(&table(1), request(&[b"nosuch", b"k"])).unwrap_err(),
        Reply::error("ERR unknown command 'nosuch'")
    );
    // Connection and keyspace commands have no plan.
    for name in ["ping", "keys", "scan", "watch", "select", "dbsize"] {
        assert!(
            !matches!(lookup(name).unwrap().handler, Handler::Data(_)),
            "{name}"
        );
    }
}

// ---------------------------------------------------------------------------
// Every compiled command against the command table.

/// The commands whose row has a `compile` handler.
fn compiled_commands() -> Vec<&'static str> {
    COMMANDS
        .iter()
        .filter(|c| matches!(c.handler, Handler::Data(_)))
        .map(|c| c.name)
        .collect()
}

fn any_arg() -> impl Strategy<Value = Bytes> {
    let words = |w: Vec<&'static str>| {
        prop::sample::select(w).prop_map(|s| Bytes::from_static(s.as_bytes()))
    };
    prop_oneof![
        4 => words(vec!["a", "b", "{t}x", "{t}y", "k"]),
        3 => words(vec![
            "0", "1", "-1", "10", "1.5", "9223372036854775807", "-9223372036854775808", "abc", "",
        ]),
        3 => words(vec![
            "EX", "PX", "EXAT", "PXAT", "KEEPTTL", "PERSIST", "NX", "XX", "GT", "LT", "GET",
            "ex", "nx",
        ]),
        1 => vec(any::<u8>(), 0..8).prop_map(Bytes::from),
        1 => Just(Bytes::from(vec![b'v'; MAX_VALUE + 1])),
    ]
}

proptest! {
    #![proptest_config(crate::testing::proptest_config(2048))]

    /// For every command `compile` handles and any arguments: no panic; a
    /// plan touches exactly the keys the command table names (each on the
    /// shard owning it), writes only for write commands, and never carries
    /// a value over the limit.
    #[test]
    fn compile_agrees_with_the_command_table(
        name in prop::sample::select(compiled_commands()),
        args in vec(any_arg(), 0..7),
        shards in prop::sample::select(vec![1usize, 3, 16]),
    ) {
        let t = table(shards);
        let spec = lookup(name).expect("in the table");
        let mut parts = vec![Bytes::copy_from_slice(name.as_bytes())];
        parts.extend(args);
        // Whatever the argument count: no panic.
        let _ = compile(name, &mut Args::new(parts.clone()), &t, MAX_VALUE);
        // Then as many arguments as the arity wants (as the session checks).
        let want = spec.arity.unsigned_abs() as usize;
        // Exact arity: exactly that many; a minimum: at least that many.
        if spec.arity > 0 || parts.len() < want {
            parts.resize(want, Bytes::from_static(b"k"));
        }
        let argc = parts.len();
        prop_assert!(spec.arity_ok(argc));
        let Ok(plan) = compile(name, &mut Args::new(parts.clone()), &t, MAX_VALUE) else {
            return Ok(());
        };
        prop_assert!(!plan.parts.is_empty());
        let mut touched: Vec<Bytes> = Vec::new();
        for part in &plan.parts {
            for (i, k) in part.op.keys().into_iter().enumerate() {
                // A transfer across shards (SMOVE, LMOVE) or a pop from the
                // first filled key (LMPOP, ZMPOP) is run by the router from
                // its one part, placed on the first key's shard.
                let routed = matches!(
                    plan.atomicity,
                    crate::cluster::plan::Atomicity::Transfer
                        | crate::cluster::plan::Atomicity::FirstFilled
                );
                if i == 0 || !routed {
                    prop_assert_eq!(t.desc.shard_for_slot(slot(&k)), part.shard);
                }
                touched.push(k);
            }
            if let TxnOp::Write(w) = &part.op {
                prop_assert!(spec.is_write(), "{} compiled to a write", name);
                let too_big = match w {
                    WriteOp::Set { value, .. } => value.len() > MAX_VALUE,
                    WriteOp::MSet { pairs, .. } => pairs.iter().any(|(_, v)| v.len() > MAX_VALUE),
                    _ => false,
                };
                prop_assert!(!too_big);
            }
        }
        // A store across shards reads in its parts and writes its
        // destination when it runs.
        if let Some(store) = &plan.store {
            prop_assert!(spec.is_write(), "{} stores", name);
            touched.push(store.dst.clone());
        }
        let mut named: Vec<Bytes> = spec
            .key_positions(&parts)
            .into_iter()
            .map(|i| parts[i].clone())
            .collect();
        touched.sort();
        named.sort();
        prop_assert_eq!(touched, named, "{} keys", name);
    }
}

#[test]
fn keyspace_commands_compile() {
    use crate::cluster::plan::LcsReply;
    use crate::shard::command::{MoveMode, ObjectField};
    // SETEX / PSETEX: SET with an absolute deadline, Redis's errors.
    assert!(matches!(
        write_op("SETEX k 10 v"),
        WriteOp::Set {
            expiry: Expiry::At(_),
            cond: SetCond::Always,
            get: false,
            ..
        }
    ));
    assert_eq!(
        error("SETEX k 0 v"),
        "ERR invalid expire time in 'setex' command"
    );
    assert_eq!(
        error("PSETEX k -1 v"),
        "ERR invalid expire time in 'psetex' command"
    );
    assert_eq!(
        error("SETEX k 9223372036854775807 v"),
        "ERR invalid expire time in 'setex' command"
    );
    assert_eq!(error("PSETEX k x v"), NOT_INTEGER);
    assert_eq!(
        read_op("PEXPIRETIME k"),
        ReadOp::ExpireTime {
            key: b("k"),
            ms: true
        }
    );
    // One shard: one Move entry.
    assert_eq!(
        write_op("RENAMENX a b"),
        WriteOp::Move {
            src: b("a"),
            dst: b("b"),
            mode: MoveMode::RenameNx
        }
    );
    assert_eq!(
        write_op("COPY a b DB 0 REPLACE"),
        WriteOp::Move {
            src: b("a"),
            dst: b("b"),
            mode: MoveMode::Copy { replace: true }
        }
    );
    assert_eq!(
        error("COPY a a"),
        "ERR source and destination objects are the same"
    );
    assert_eq!(
        error("COPY a b DB 2"),
        "ERR Copying to another database is not allowed in cluster mode"
    );
    assert_eq!(error("COPY a b DB -1"), "ERR DB index is out of range");
    assert_eq!(error("COPY a b DB"), SYNTAX);
    // Two shards: the source's and the destination's reads, marked a move.
    let t = table(4);
    let (src, dst) = ("a", "b");
    assert_ne!(shards_of(&t, &[src]), shards_of(&t, &[dst]));
    let plan = dispatch_parts(&t, request(&[b"RENAME", b"a", b"b"])).unwrap();
    assert_eq!(plan.atomicity, Atomicity::Move(MoveMode::Rename));
    assert_eq!(plan.parts.len(), 2);
    assert_eq!(plan.parts[0].op.keys(), vec![b("a")]);
    assert_eq!(plan.parts[1].op.keys(), vec![b("b")]);
    assert_eq!(plan.parts[1].shard, shards_of(&t, &[dst])[0]);
    assert!(!plan.is_read_only(), "a move writes");
    // OBJECT: a read of its key; HELP and the errors answer at once.
    assert_eq!(
        read_op("OBJECT refcount k"),
        ReadOp::Object {
            key: b("k"),
            field: ObjectField::RefCount
        }
    );
    assert!(matches!(dispatch("OBJECT HELP"), Err(Reply::Array(lines)) if lines.len() == 15));
    assert_eq!(
        error("OBJECT ENCODING"),
        "ERR wrong number of arguments for 'object|encoding' command"
    );
    assert_eq!(
        error("OBJECT nope k"),
        "ERR unknown subcommand 'nope'. Try OBJECT HELP."
    );
    // LCS: two reads, answered on the router.
    let plan = dispatch("LCS a b IDX MINMATCHLEN -4 WITHMATCHLEN").unwrap();
    assert_eq!(
        plan.merge,
        Merge::Lcs(LcsReply {
            len: false,
            idx: true,
            min_match: 0,
            with_match_len: true
        })
    );
    assert_eq!(plan.parts.len(), 2);
    assert_eq!(
        error("LCS a b LEN IDX"),
        "ERR If you want both the length and indexes, please just use IDX."
    );
    assert_eq!(error("LCS a b MINMATCHLEN"), SYNTAX);
    assert_eq!(error("LCS a b MINMATCHLEN x"), NOT_INTEGER);
}

#[test]
fn bitfield_compiles() {
    use crate::shard::command::{FieldOp, FieldType, Overflow};
    let u = |bits| FieldType {
        signed: false,
        bits,
    };
    let i = |bits| FieldType { signed: true, bits };
    // GETs only: a read, for BITFIELD as for BITFIELD_RO.
    for cmd in [
        "BITFIELD k GET u8 #2 GET i64 7",
        "BITFIELD_RO k GET u8 #2 GET i64 7",
    ] {
        assert_eq!(
            read_op(cmd),
            ReadOp::BitField {
                key: b("k"),
                ops: vec![
                    FieldOp::Get {
                        ty: u(8),
                        offset: 16
                    },
                    FieldOp::Get {
                        ty: i(64),
                        offset: 7
                    },
                ],
            }
        );
    }
    assert_eq!(
        read_op("BITFIELD k"),
        ReadOp::BitField {
            key: b("k"),
            ops: vec![],
        }
    );
    // A SET or INCRBY makes it a write; each OVERFLOW applies to what
    // follows it, WRAP before any.
    assert_eq!(
        write_op(
            "BITFIELD k incrby i5 100 -1 overflow sat SET u63 #1 5 Overflow Fail INCRBY u1 0 1"
        ),
        WriteOp::BitField {
            key: b("k"),
            ops: vec![
                FieldOp::IncrBy {
                    ty: i(5),
                    offset: 100,
                    by: -1,
                    overflow: Overflow::Wrap
                },
                FieldOp::Set {
                    ty: u(63),
                    offset: 63,
                    value: 5,
                    overflow: Overflow::Sat
                },
                FieldOp::IncrBy {
                    ty: u(1),
                    offset: 0,
                    by: 1,
                    overflow: Overflow::Fail
                },
            ],
            max_len: MAX_VALUE as u64,
        }
    );
    let ty_err = "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.";
    let off_err = "ERR bit offset is not an integer or out of range";
    for (cmd, want) in [
        ("BITFIELD k GET u64 0", ty_err),
        ("BITFIELD k GET i0 0", ty_err),
        ("BITFIELD k GET I8 0", ty_err),
        ("BITFIELD k GET u8 4294967296", off_err),
        ("BITFIELD k GET u8 #536870912", off_err),
        ("BITFIELD k GET i64 #9223372036854775807", off_err),
        ("BITFIELD k GET u8 #-1", off_err),
        (
            "BITFIELD k SET u8 0 x",
            "ERR value is not an integer or out of range",
        ),
        (
            "BITFIELD k OVERFLOW UP",
            "ERR Invalid OVERFLOW type specified",
        ),
        ("BITFIELD k OVERFLOW", "ERR syntax error"),
        ("BITFIELD k GET u8", "ERR syntax error"),
        (
            "BITFIELD_RO k GET u8 0 INCRBY u8 0 1",
            "ERR BITFIELD_RO only supports the GET subcommand",
        ),
        // The first bad subcommand decides, before BITFIELD_RO's check.
        ("BITFIELD_RO k SET u8 0 1 GET u64 0", ty_err),
    ] {
        assert_eq!(error(cmd), want, "{cmd}");
    }
    // The largest offset Redis takes.
    assert!(matches!(
        read_op("BITFIELD k GET u8 4294967295"),
        ReadOp::BitField { .. }
    ));
}
