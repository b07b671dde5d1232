//! Client workloads. The choice of the next operation is pure (a seeded RNG
//! and the key space in, a [`Call`] out); executing it against a router and
//! turning the reply into an [`Outcome`] is the I/O half.
//!
//! Key space: registers rotate by epoch so each key's history stays small
//! enough for the linearizability search. In each epoch, even-numbered keys
//! (`s:<epoch>:<i>`) are only SET (with unique values) and read, linearizably
//! and with READONLY; odd-numbered keys (`m:<epoch>:<i>`) also get INCR.
//!
//! Bank: accounts `acct:<i>` start at [`BANK_START`] each; transfers use
//! WATCH/MULTI/EXEC, snapshots a read-only MULTI.
//!
//! Moves: a fixed [`Population`] of set members and list elements spread
//! over set keys and list keys, one of each per shard (placed from
//! `TABLE.DESCRIBE`); clients move them with SMOVE, LMOVE (every LEFT/RIGHT
//! pair) and RPOPLPUSH between keys on different shards, and a reader takes
//! atomic reads of every key (MULTI of SMEMBERS and LRANGE).
//!
//! Every loop is bounded by a deadline, an operation count and a stop flag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::checks::Population;
use super::faults::{key_in, parse_describe};
use super::history::{Call, End, Outcome, Recorder, Ret};
use super::resp::{Conn, Value};

/// Balance of each account at the start.
pub const BANK_START: i64 = 100;

/// How client reads wait: longer than the router's request timeout (5 s).
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// The routers' addresses, updated by the fault injector as routers die and
/// new ones start.
#[derive(Clone, Default)]
pub struct Routers(Arc<RwLock<Vec<String>>>);

impl Routers {
    pub fn new(addrs: Vec<String>) -> Routers {
        Routers(Arc::new(RwLock::new(addrs)))
    }

    pub fn pick(&self, rng: &mut impl Rng) -> Option<String> {
        let v = self.0.read().unwrap_or_else(|e| e.into_inner());
        (!v.is_empty()).then(|| v[rng.gen_range(0..v.len())].clone())
    }

    pub fn set(&self, addrs: Vec<String>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = addrs;
    }

    pub fn all(&self) -> Vec<String> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Shape of the register key space.
#[derive(Debug, Clone, Copy)]
pub struct KeySpace {
    /// Keys rotate every this many milliseconds.
    pub epoch_ms: u64,
    /// Keys per epoch (half set-only, half with INCR).
    pub keys: u32,
}

impl KeySpace {
    pub fn key(epoch: u64, i: u32) -> String {
        if i.is_multiple_of(2) {
            format!("s:{epoch}:{i}")
        } else {
            format!("m:{epoch}:{i}")
        }
    }

    /// Every key of epochs `0..=last_epoch`.
    pub fn all_keys(&self, last_epoch: u64) -> Vec<String> {
        (0..=last_epoch)
            .flat_map(|e| (0..self.keys).map(move |i| KeySpace::key(e, i)))
            .collect()
    }
}

/// What the register workload may send.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub incr: bool,
    pub readonly: bool,
}

/// The next register operation of a client (pure). `seq` makes SET values
/// unique per client; INCR only on `m:` keys, READONLY GET only on `s:` keys.
pub fn next_call(
    rng: &mut impl Rng,
    ks: KeySpace,
    epoch: u64,
    mix: Mix,
    client: u32,
    seq: u64,
) -> Call {
    let i = rng.gen_range(0..ks.keys.max(1));
    let key = KeySpace::key(epoch, i);
    let value = (client as i64 + 1) * 1_000_000_000 + seq as i64;
    let roll = rng.gen_range(0..100);
    if i.is_multiple_of(2) {
        match roll {
            0..=39 => Call::Get { key },
            40..=79 if mix.readonly => Call::RoGet { key },
            40..=59 => Call::Get { key },
            _ => Call::Set { key, value },
        }
    } else {
        match roll {
            0..=39 => Call::Get { key },
            40..=69 if mix.incr => Call::Incr { key },
            _ => Call::Set { key, value },
        }
    }
}

/// A reply to a GET-like call.
fn value_of(v: &Value) -> Ret {
    match v {
        Value::Bulk(None) => Ret::Value(None),
        Value::Bulk(Some(b)) => match std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()) {
            Some(n) => Ret::Value(Some(n)),
            None => Ret::Bad(format!(
                "non-integer value {:?}",
                String::from_utf8_lossy(b)
            )),
        },
        other => Ret::Bad(format!("{other:?}")),
    }
}

/// Run one register call on `conn`. `Err(outcome)` means the connection must
/// be dropped (the outcome is then `Unknown`). A `piped` linearizable GET
/// is sent as a pipeline of two GETs of its key (the router queues a
/// pipeline's reads together, another path than a lone GET's): each
/// reply is a read within the call's time, so the first is recorded and
/// the second must also be a value.
pub fn exec_register(conn: &mut Conn, call: &Call, piped: bool) -> (Outcome, bool) {
    if let (true, Call::Get { key }) = (piped, call) {
        return match conn.call_piped(&["GET", key.as_str()], 2) {
            Err(e) => (Outcome::Unknown(format!("{e}")), true),
            Ok(replies) => match replies.as_slice() {
                [Value::Error(e), _] | [_, Value::Error(e)] => (Outcome::Fail(e.clone()), false),
                [first, second] => match (value_of(first), value_of(second)) {
                    (Ret::Bad(b), _) | (_, Ret::Bad(b)) => (Outcome::Ok(Ret::Bad(b)), false),
                    (first, _) => (Outcome::Ok(first), false),
                },
                other => (Outcome::Ok(Ret::Bad(format!("{other:?}"))), false),
            },
        };
    }
    let (args, is_read): (Vec<String>, bool) = match call {
        Call::Get { key } | Call::RoGet { key } | Call::FinalGet { key } => {
            (vec!["GET".into(), key.clone()], true)
        }
        Call::Set { key, value } => (vec!["SET".into(), key.clone(), value.to_string()], false),
        Call::Incr { key } => (vec!["INCR".into(), key.clone()], false),
        Call::Transfer { .. }
        | Call::Snapshot { .. }
        | Call::SMove { .. }
        | Call::LMove { .. }
        | Call::Contents { .. }
        | Call::Acquire { .. }
        | Call::Release { .. }
        | Call::Admit { .. } => unreachable!("not a register call"),
    };
    match conn.call(&args) {
        Err(e) => (Outcome::Unknown(format!("{e}")), true),
        Ok(Value::Error(e)) if is_read => (Outcome::Fail(e), false),
        // A write that errored may still have been committed (the router
        // reports a timeout at the leader as an error): unknown.
        Ok(Value::Error(e)) => (Outcome::Unknown(e), false),
        Ok(v) => {
            let ret = match call {
                Call::Set { .. } => match v {
                    Value::Simple(s) if s == "OK" => Ret::Done,
                    other => Ret::Bad(format!("{other:?}")),
                },
                Call::Incr { .. } => match v {
                    Value::Int(n) => Ret::Value(Some(n)),
                    other => Ret::Bad(format!("{other:?}")),
                },
                _ => value_of(&v),
            };
            (Outcome::Ok(ret), false)
        }
    }
}

/// Limits shared by every client loop.
#[derive(Clone)]
pub struct Bounds {
    pub deadline: Instant,
    pub max_ops: u64,
    pub stop: Arc<AtomicBool>,
}

impl Bounds {
    pub(crate) fn done(&self, ops: u64) -> bool {
        ops >= self.max_ops || Instant::now() >= self.deadline || self.stop.load(Ordering::Relaxed)
    }
}

/// A connection that reconnects (to a random router) after errors. `None`
/// while no router accepts; the caller then waits and tries again.
struct Client {
    routers: Routers,
    readonly: bool,
    conn: Option<Conn>,
}

impl Client {
    fn get(&mut self, rng: &mut impl Rng) -> Option<&mut Conn> {
        if self.conn.is_none() {
            let addr = self.routers.pick(rng)?;
            let mut c = Conn::connect(&addr, OP_TIMEOUT).ok()?;
            if self.readonly && c.call(&["READONLY"]).ok()? != Value::Simple("OK".into()) {
                return None;
            }
            self.conn = Some(c);
        }
        self.conn.as_mut()
    }
}

/// One register client: until its bounds, pick a call, run it, record it.
#[allow(clippy::too_many_arguments)]
pub fn register_client(
    id: u32,
    seed: u64,
    routers: Routers,
    rec: Recorder,
    ks: KeySpace,
    mix: Mix,
    bounds: Bounds,
) -> u64 {
    let mut rng =
        StdRng::seed_from_u64(seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(id as u64 + 1)));
    let mut rw = Client {
        routers: routers.clone(),
        readonly: false,
        conn: None,
    };
    let mut ro = Client {
        routers,
        readonly: true,
        conn: None,
    };
    let mut seq = 0u64;
    while !bounds.done(seq) {
        let epoch = rec.now() / 1000 / ks.epoch_ms.max(1);
        let call = next_call(&mut rng, ks, epoch, mix, id, seq);
        seq += 1;
        let client = if matches!(call, Call::RoGet { .. }) {
            &mut ro
        } else {
            &mut rw
        };
        let Some(conn) = client.get(&mut rng) else {
            thread::sleep(Duration::from_millis(100));
            continue;
        };
        let mut drop_conn = false;
        rec.record(id, call, |c| {
            // The linearizable GETs of every third call go as pipelines.
            let (outcome, lost) = exec_register(conn, c, seq.is_multiple_of(3));
            drop_conn = lost;
            outcome
        });
        if drop_conn {
            client.conn = None;
        }
    }
    seq
}

/// Final linearizable reads of `keys`, each retried (bounded) until it
/// succeeds. Returns the keys that could not be read.
pub fn final_reads(
    routers: &Routers,
    rec: &Recorder,
    keys: &[String],
    timeout: Duration,
) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(0);
    let mut c = Client {
        routers: routers.clone(),
        readonly: false,
        conn: None,
    };
    let deadline = Instant::now() + timeout;
    let mut unread = Vec::new();
    for key in keys {
        loop {
            let Some(conn) = c.get(&mut rng) else {
                if Instant::now() >= deadline {
                    break;
                }
                thread::sleep(Duration::from_millis(200));
                continue;
            };
            let mut lost = false;
            let op = rec.record(u32::MAX, Call::FinalGet { key: key.clone() }, |call| {
                let (o, l) = exec_register(conn, call, false);
                lost = l;
                o
            });
            if lost {
                c.conn = None;
            }
            if op.is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                unread.push(key.clone());
                break;
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
    unread
}

// ---------------------------------------------------------------------------
// Bank
// ---------------------------------------------------------------------------

pub fn accounts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("acct:{i}")).collect()
}

/// Whether the routers accept MULTI (the bank workload needs it).
pub fn multi_supported(addr: &str) -> bool {
    let Ok(mut c) = Conn::connect(addr, OP_TIMEOUT) else {
        return false;
    };
    matches!(c.call(&["MULTI"]), Ok(Value::Simple(s)) if s == "OK")
        && matches!(c.call(&["DISCARD"]), Ok(Value::Simple(_)))
}

/// Whether the routers accept INCR.
pub fn incr_supported(addr: &str) -> bool {
    let Ok(mut c) = Conn::connect(addr, OP_TIMEOUT) else {
        return false;
    };
    let ok = matches!(c.call(&["INCR", "chaos:probe"]), Ok(Value::Int(_)));
    let _ = c.call(&["DEL", "chaos:probe"]);
    ok
}

/// Set every account to [`BANK_START`] (before any fault).
pub fn bank_setup(addr: &str, accounts: &[String]) -> anyhow::Result<()> {
    let mut c = Conn::connect(addr, OP_TIMEOUT)?;
    for a in accounts {
        let start = BANK_START.to_string();
        match c.call(&["SET", a.as_str(), start.as_str()])? {
            Value::Simple(s) if s == "OK" => {}
            other => anyhow::bail!("bank setup: SET {a} answered {other:?}"),
        }
    }
    Ok(())
}

fn expect_ok(v: std::io::Result<Value>, what: &str) -> Result<(), (Outcome, bool)> {
    match v {
        Ok(Value::Simple(s)) if s == "OK" || s == "QUEUED" => Ok(()),
        Ok(Value::Error(e)) => Err((Outcome::Fail(format!("{what}: {e}")), true)),
        Ok(other) => Err((Outcome::Fail(format!("{what}: {other:?}")), true)),
        Err(e) => Err((Outcome::Fail(format!("{what}: {e}")), true)),
    }
}

fn balance(v: std::io::Result<Value>) -> Result<Option<i64>, (Outcome, bool)> {
    match v {
        Ok(ref val @ Value::Bulk(_)) => match value_of(val) {
            Ret::Value(b) => Ok(b),
            other => Err((Outcome::Ok(other), true)),
        },
        Ok(other) => Err((Outcome::Fail(format!("GET: {other:?}")), true)),
        Err(e) => Err((Outcome::Fail(format!("GET: {e}")), true)),
    }
}

/// One transfer attempt. Errors before EXEC leave nothing applied (`Fail`);
/// an error or lost connection at EXEC is `Unknown`. The bool asks the
/// caller to drop the connection (its WATCH/MULTI state is then unknown).
pub fn exec_transfer(conn: &mut Conn, from: &str, to: &str, amount: i64) -> (Outcome, bool) {
    let run = |conn: &mut Conn| -> Result<(Outcome, bool), (Outcome, bool)> {
        expect_ok(conn.call(&["WATCH", from, to]), "WATCH")?;
        let a = balance(conn.call(&["GET", from]))?.unwrap_or(0);
        let b = balance(conn.call(&["GET", to]))?.unwrap_or(0);
        if a < amount {
            expect_ok(conn.call(&["UNWATCH"]), "UNWATCH")?;
            return Ok((Outcome::Ok(Ret::Conflict), false));
        }
        expect_ok(conn.call(&["MULTI"]), "MULTI")?;
        let (na, nb) = ((a - amount).to_string(), (b + amount).to_string());
        expect_ok(conn.call(&["SET", from, na.as_str()]), "SET")?;
        expect_ok(conn.call(&["SET", to, nb.as_str()]), "SET")?;
        Ok(match conn.call(&["EXEC"]) {
            Ok(Value::Array(None)) | Ok(Value::Bulk(None)) => (Outcome::Ok(Ret::Conflict), false),
            Ok(Value::Array(Some(items)))
                if items.len() == 2 && items.iter().all(|i| *i == Value::Simple("OK".into())) =>
            {
                (Outcome::Ok(Ret::Committed), false)
            }
            Ok(Value::Error(e)) => (Outcome::Unknown(format!("EXEC: {e}")), false),
            Ok(other) => (Outcome::Ok(Ret::Bad(format!("EXEC: {other:?}"))), true),
            Err(e) => (Outcome::Unknown(format!("EXEC: {e}")), true),
        })
    };
    run(conn).unwrap_or_else(|e| e)
}

/// One read-only MULTI over `keys`.
pub fn exec_snapshot(conn: &mut Conn, keys: &[String]) -> (Outcome, bool) {
    let run = |conn: &mut Conn| -> Result<(Outcome, bool), (Outcome, bool)> {
        expect_ok(conn.call(&["MULTI"]), "MULTI")?;
        for k in keys {
            expect_ok(conn.call(&["GET", k.as_str()]), "GET")?;
        }
        Ok(match conn.call(&["EXEC"]) {
            Ok(Value::Array(None)) | Ok(Value::Bulk(None)) => (Outcome::Ok(Ret::Conflict), false),
            Ok(Value::Array(Some(items))) => {
                let mut vals = Vec::new();
                for i in &items {
                    match value_of(i) {
                        Ret::Value(v) => vals.push(v),
                        other => return Ok((Outcome::Ok(other), true)),
                    }
                }
                (Outcome::Ok(Ret::Values(vals)), false)
            }
            Ok(Value::Error(e)) => (Outcome::Fail(format!("EXEC: {e}")), false),
            Ok(other) => (Outcome::Ok(Ret::Bad(format!("EXEC: {other:?}"))), true),
            Err(e) => (Outcome::Fail(format!("EXEC: {e}")), true),
        })
    };
    run(conn).unwrap_or_else(|e| e)
}

/// A bank client: transfers (`snapshots == false`) or snapshots.
pub fn bank_client(
    id: u32,
    seed: u64,
    routers: Routers,
    rec: Recorder,
    accounts: Vec<String>,
    snapshots: bool,
    bounds: Bounds,
) -> u64 {
    let mut rng = StdRng::seed_from_u64(seed ^ (0xB4E5_0000u64 + id as u64));
    let mut c = Client {
        routers,
        readonly: false,
        conn: None,
    };
    let mut n = 0;
    while !bounds.done(n) {
        n += 1;
        let Some(conn) = c.get(&mut rng) else {
            thread::sleep(Duration::from_millis(100));
            continue;
        };
        let call = if snapshots {
            Call::Snapshot {
                keys: accounts.clone(),
            }
        } else {
            let from = rng.gen_range(0..accounts.len());
            let to = (from + rng.gen_range(1..accounts.len())) % accounts.len();
            Call::Transfer {
                from: accounts[from].clone(),
                to: accounts[to].clone(),
                amount: rng.gen_range(1..=20),
            }
        };
        let mut lost = false;
        rec.record(id, call, |call| {
            let (o, l) = match call {
                Call::Snapshot { keys } => exec_snapshot(conn, keys),
                Call::Transfer { from, to, amount } => exec_transfer(conn, from, to, *amount),
                _ => unreachable!(),
            };
            lost = l;
            o
        });
        if lost {
            c.conn = None;
        }
    }
    n
}

/// A final snapshot of the accounts after every fault healed, retried until
/// one succeeds or `timeout` passes.
pub fn final_snapshot(
    routers: &Routers,
    rec: &Recorder,
    accounts: &[String],
    timeout: Duration,
) -> bool {
    let mut rng = StdRng::seed_from_u64(1);
    let mut c = Client {
        routers: routers.clone(),
        readonly: false,
        conn: None,
    };
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(conn) = c.get(&mut rng) {
            let mut lost = false;
            let op = rec.record(
                u32::MAX,
                Call::Snapshot {
                    keys: accounts.to_vec(),
                },
                |call| {
                    let Call::Snapshot { keys } = call else {
                        unreachable!()
                    };
                    let (o, l) = exec_snapshot(conn, keys);
                    lost = l;
                    o
                },
            );
            if lost {
                c.conn = None;
            }
            if matches!(op.outcome, Outcome::Ok(Ret::Values(_))) {
                return true;
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
    false
}

// ---------------------------------------------------------------------------
// Moves: SMOVE / LMOVE / RPOPLPUSH between shards.

/// Set members (and list elements) of the move workload.
pub const MOVE_ITEMS: usize = 40;

/// Most keys per family (one per shard).
pub const MOVE_KEYS: usize = 4;

/// Whether the routers know SMOVE (the move workload needs it).
pub fn smove_supported(addr: &str) -> bool {
    let Ok(mut c) = Conn::connect(addr, OP_TIMEOUT) else {
        return false;
    };
    matches!(
        c.call(&["SMOVE", "chaos:probe:a", "chaos:probe:b", "x"]),
        Ok(Value::Int(0))
    )
}

/// The move workload's keys, from the live table: one set key and one list
/// key on each of the first [`MOVE_KEYS`] shards of `default`, so any two
/// keys of a family are on different shards.
pub fn move_population(addr: &str) -> anyhow::Result<Population> {
    let mut c = Conn::connect(addr, OP_TIMEOUT)?;
    let shards = parse_describe(&c.call(&["TABLE.DESCRIBE", "default"])?)?;
    if shards.len() < 2 {
        anyhow::bail!(
            "the move workload needs keys on different shards: table default has {} shard",
            shards.len()
        );
    }
    let on = |prefix: &str| -> Vec<String> {
        shards
            .iter()
            .take(MOVE_KEYS)
            .map(|s| key_in(s.slots, prefix))
            .collect()
    };
    Ok(Population {
        set_keys: on("xset"),
        list_keys: on("xlist"),
        members: (0..MOVE_ITEMS).map(|i| format!("m{i}")).collect(),
        elements: (0..MOVE_ITEMS).map(|i| format!("e{i}")).collect(),
    })
}

/// Deal the population round-robin over its keys (before any fault).
pub fn move_setup(addr: &str, pop: &Population) -> anyhow::Result<()> {
    let mut c = Conn::connect(addr, OP_TIMEOUT)?;
    for (cmd, keys, items) in [
        ("SADD", &pop.set_keys, &pop.members),
        ("RPUSH", &pop.list_keys, &pop.elements),
    ] {
        for (k, key) in keys.iter().enumerate() {
            let mut args = vec![cmd, key.as_str()];
            args.extend(items.iter().skip(k).step_by(keys.len()).map(String::as_str));
            match c.call(&args)? {
                Value::Int(n) if n as usize == args.len() - 2 => {}
                other => anyhow::bail!("move setup: {cmd} {key} answered {other:?}"),
            }
        }
    }
    Ok(())
}

/// Where a mover believes each member is: the set key it dealt it to or
/// last moved it to, forgotten when an SMOVE from there found nothing
/// (another client moved it). Keeps most SMOVEs moving something.
pub type Belief = std::collections::HashMap<String, String>;

/// Where [`move_setup`] deals each member.
pub fn dealt(pop: &Population) -> Belief {
    pop.members
        .iter()
        .enumerate()
        .map(|(i, m)| (m.clone(), pop.set_keys[i % pop.set_keys.len()].clone()))
        .collect()
}

/// Update `belief` with a move's outcome.
pub fn learn(belief: &mut Belief, call: &Call, outcome: &Outcome) {
    if let Call::SMove { dst, member, .. } = call {
        match outcome {
            Outcome::Ok(Ret::Moved(Some(_))) => {
                belief.insert(member.clone(), dst.clone());
            }
            _ => {
                belief.remove(member);
            }
        }
    }
}

/// The next move (pure): half SMOVE of a random member between two set
/// keys (from where `belief` has it, else a random key), half LMOVE
/// (random ends; one in five as RPOPLPUSH) between two list keys.
pub fn next_move(rng: &mut impl Rng, pop: &Population, belief: &Belief) -> Call {
    let pair = |rng: &mut dyn rand::RngCore, keys: &[String]| {
        let a = rng.gen_range(0..keys.len());
        let b = (a + rng.gen_range(1..keys.len())) % keys.len();
        (keys[a].clone(), keys[b].clone())
    };
    let end = |rng: &mut dyn rand::RngCore| {
        if rng.gen_bool(0.5) {
            End::Left
        } else {
            End::Right
        }
    };
    if rng.gen_bool(0.5) {
        let member = pop.members[rng.gen_range(0..pop.members.len())].clone();
        let (src, dst) = match belief.get(&member) {
            Some(src) => {
                let others: Vec<&String> = pop.set_keys.iter().filter(|k| *k != src).collect();
                (src.clone(), others[rng.gen_range(0..others.len())].clone())
            }
            None => pair(rng, &pop.set_keys),
        };
        Call::SMove { src, dst, member }
    } else {
        let (src, dst) = pair(rng, &pop.list_keys);
        if rng.gen_range(0..5) == 0 {
            Call::LMove {
                src,
                dst,
                from: End::Right,
                to: End::Left,
                rpoplpush: true,
            }
        } else {
            let (from, to) = (end(rng), end(rng));
            Call::LMove {
                src,
                dst,
                from,
                to,
                rpoplpush: false,
            }
        }
    }
}

/// Run one move. Any error reply or lost connection is `Unknown` (a move
/// is a write); the bool asks the caller to drop the connection.
pub fn exec_move(conn: &mut Conn, call: &Call) -> (Outcome, bool) {
    let args: Vec<&str> = match call {
        Call::SMove { src, dst, member } => vec!["SMOVE", src, dst, member],
        Call::LMove {
            src,
            dst,
            rpoplpush: true,
            ..
        } => vec!["RPOPLPUSH", src, dst],
        Call::LMove {
            src, dst, from, to, ..
        } => vec!["LMOVE", src, dst, from.arg(), to.arg()],
        _ => unreachable!("not a move"),
    };
    match (call, conn.call(&args)) {
        (_, Err(e)) => (Outcome::Unknown(format!("{e}")), true),
        (_, Ok(Value::Error(e))) => (Outcome::Unknown(e), false),
        (Call::SMove { member, .. }, Ok(Value::Int(1))) => {
            (Outcome::Ok(Ret::Moved(Some(member.clone()))), false)
        }
        (Call::SMove { .. }, Ok(Value::Int(0))) => (Outcome::Ok(Ret::Moved(None)), false),
        (Call::LMove { .. }, Ok(Value::Bulk(b))) => (
            Outcome::Ok(Ret::Moved(
                b.map(|b| String::from_utf8_lossy(&b).into_owned()),
            )),
            false,
        ),
        (_, Ok(other)) => (Outcome::Ok(Ret::Bad(format!("{other:?}"))), true),
    }
}

/// One atomic read of every key of `pop`: `MULTI; SMEMBERS ..; LRANGE ..
/// 0 -1; EXEC`. A read: any error is `Fail`.
pub fn exec_contents(conn: &mut Conn, pop: &Population) -> (Outcome, bool) {
    let run = |conn: &mut Conn| -> Result<(Outcome, bool), (Outcome, bool)> {
        expect_ok(conn.call(&["MULTI"]), "MULTI")?;
        for k in &pop.set_keys {
            expect_ok(conn.call(&["SMEMBERS", k.as_str()]), "SMEMBERS")?;
        }
        for k in &pop.list_keys {
            expect_ok(conn.call(&["LRANGE", k.as_str(), "0", "-1"]), "LRANGE")?;
        }
        Ok(match conn.call(&["EXEC"]) {
            Ok(Value::Array(Some(items))) => {
                let mut got = Vec::new();
                for i in &items {
                    match i {
                        Value::Array(Some(vals)) => {
                            match vals.iter().map(Value::text).collect::<Option<Vec<_>>>() {
                                Some(v) => got.push(v),
                                None => {
                                    let bad = Ret::Bad(format!("EXEC item {i:?}"));
                                    return Ok((Outcome::Ok(bad), true));
                                }
                            }
                        }
                        other => {
                            let bad = Ret::Bad(format!("EXEC item {other:?}"));
                            return Ok((Outcome::Ok(bad), true));
                        }
                    }
                }
                (Outcome::Ok(Ret::Elements(got)), false)
            }
            Ok(Value::Error(e)) => (Outcome::Fail(format!("EXEC: {e}")), false),
            Ok(other) => (Outcome::Ok(Ret::Bad(format!("EXEC: {other:?}"))), true),
            Err(e) => (Outcome::Fail(format!("EXEC: {e}")), true),
        })
    };
    run(conn).unwrap_or_else(|e| e)
}

/// A move client: moves (`reader == false`) or atomic reads of every key.
pub fn move_client(
    id: u32,
    seed: u64,
    routers: Routers,
    rec: Recorder,
    pop: Population,
    reader: bool,
    bounds: Bounds,
) -> u64 {
    let mut rng = StdRng::seed_from_u64(seed ^ (0x5307_0000u64 + id as u64));
    let mut c = Client {
        routers,
        readonly: false,
        conn: None,
    };
    let mut belief = dealt(&pop);
    let mut n = 0;
    while !bounds.done(n) {
        n += 1;
        let Some(conn) = c.get(&mut rng) else {
            thread::sleep(Duration::from_millis(100));
            continue;
        };
        let call = if reader {
            Call::Contents { keys: pop.keys() }
        } else {
            next_move(&mut rng, &pop, &belief)
        };
        let mut lost = false;
        let op = rec.record(id, call, |call| {
            let (o, l) = match call {
                Call::Contents { .. } => exec_contents(conn, &pop),
                _ => exec_move(conn, call),
            };
            lost = l;
            o
        });
        learn(&mut belief, &op.call, &op.outcome);
        if lost {
            c.conn = None;
        }
    }
    n
}

/// A final atomic read of the move workload's keys after every fault
/// healed, retried until one succeeds or `timeout` passes.
pub fn final_contents(
    routers: &Routers,
    rec: &Recorder,
    pop: &Population,
    timeout: Duration,
) -> bool {
    let mut rng = StdRng::seed_from_u64(2);
    let mut c = Client {
        routers: routers.clone(),
        readonly: false,
        conn: None,
    };
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(conn) = c.get(&mut rng) {
            let mut lost = false;
            let op = rec.record(u32::MAX, Call::Contents { keys: pop.keys() }, |_| {
                let (o, l) = exec_contents(conn, pop);
                lost = l;
                o
            });
            if lost {
                c.conn = None;
            }
            if matches!(op.outcome, Outcome::Ok(Ret::Elements(_))) {
                return true;
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_respect_the_key_families() {
        let mut rng = StdRng::seed_from_u64(7);
        let ks = KeySpace {
            epoch_ms: 1000,
            keys: 6,
        };
        let mix = Mix {
            incr: true,
            readonly: true,
        };
        let mut seen_incr = false;
        for seq in 0..2000 {
            match next_call(&mut rng, ks, 3, mix, 2, seq) {
                Call::Incr { key } => {
                    seen_incr = true;
                    assert!(key.starts_with("m:3:"));
                }
                Call::RoGet { key } => assert!(key.starts_with("s:3:")),
                Call::Set { value, .. } => assert_eq!(value, 3_000_000_000 + seq as i64),
                _ => {}
            }
        }
        assert!(seen_incr);
        let no_incr = Mix {
            incr: false,
            readonly: false,
        };
        for seq in 0..500 {
            let c = next_call(&mut rng, ks, 0, no_incr, 0, seq);
            assert!(!matches!(c, Call::Incr { .. } | Call::RoGet { .. }));
        }
    }

    #[test]
    fn moves_stay_within_their_family_and_cover_every_form() {
        let pop = Population {
            set_keys: vec!["s0".into(), "s1".into(), "s2".into()],
            list_keys: vec!["l0".into(), "l1".into()],
            members: vec!["m0".into(), "m1".into()],
            elements: vec!["e0".into()],
        };
        let mut rng = StdRng::seed_from_u64(3);
        let mut forms = std::collections::BTreeSet::new();
        let mut belief = dealt(&pop);
        assert_eq!(belief["m1"], "s1");
        for i in 0..2000 {
            let call = next_move(&mut rng, &pop, &belief);
            match &call {
                Call::SMove { src, dst, member } => {
                    if let Some(at) = belief.get(member) {
                        assert_eq!(src, at, "moves from where it believes the member is");
                    }
                    // Half the time it moved, half someone else had.
                    let moved = (i % 2 == 0).then(|| member.clone());
                    learn(&mut belief, &call, &Outcome::Ok(Ret::Moved(moved)));
                    assert_ne!(src, dst);
                    assert!(pop.set_keys.contains(src) && pop.set_keys.contains(dst));
                    assert!(pop.members.contains(member));
                    forms.insert("SMOVE".to_string());
                }
                Call::LMove {
                    src,
                    dst,
                    from,
                    to,
                    rpoplpush,
                } => {
                    assert_ne!(src, dst);
                    assert!(pop.list_keys.contains(src) && pop.list_keys.contains(dst));
                    if *rpoplpush {
                        assert_eq!((*from, *to), (End::Right, End::Left));
                        forms.insert("RPOPLPUSH".to_string());
                    } else {
                        forms.insert(format!("LMOVE {} {}", from.arg(), to.arg()));
                    }
                }
                other => panic!("not a move: {other:?}"),
            }
        }
        assert_eq!(forms.len(), 6, "{forms:?}");
    }
}
