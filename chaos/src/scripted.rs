//! The script workloads (issue 19): a Redlock-style lock and a
//! sliding-window rate limiter, the two uses of Lua scripts that break when
//! a script is not atomic. This module owns their scripts, their client
//! loops and the deliberately broken clients ([`Variant::Racy`],
//! [`Variant::ClientClock`]) that the mutation tests run to prove the
//! checkers can fail; the checkers are
//! [`crate::checks::locks`] and [`crate::checks::limiter`].
//!
//! **Locks.** Keys `lock:{<i>}` (a hash tag each, so a lock and any keys of
//! its own would share a shard), several clients per key. A client sends
//! `SET lock:{i} <token> NX PX <ttl>` with a token unique to the attempt;
//! on `+OK` it holds the lock for a short random critical section (now and
//! then longer than the TTL, so that locks also expire under their
//! holders), then releases it with the canonical release script
//! ([`RELEASE`]) by EVALSHA, falling back to EVAL on `-NOSCRIPT` as client
//! libraries do. An acquire whose `+OK` arrives more than TTL/2 after it
//! was sent is not counted as holding: the client skips its section and
//! releases at once (Redlock's "validity time"). An acquire of unknown
//! outcome is released too, in case it took.
//!
//! **Limiter.** Keys `limiter:{<i>}`, several clients hammering them with
//! [`LIMITER`]: drop the entries older than the window, admit if fewer than
//! the limit remain, and answer the verdict with the time the script used.
//! The time comes from `redis.call('TIME')`, the clock of the leader that
//! runs the script, not from the client. The checker's invariant (at most
//! `limit` admissions in any window of the script's clock) only follows
//! from the script when the times of one key's admissions are in the order
//! the script ran: a client's own timestamp is taken before the request
//! travels, so two clients' requests can reach the store in the opposite
//! order of their timestamps. Then a later-stamped request that runs first
//! drops entries that an earlier-stamped one still counts, and more than
//! `limit` admissions land in one window on a perfectly atomic store (the
//! test `a_limiter_on_the_clients_clock_breaks_on_an_atomic_store` shows it
//! on redis-server). With
//! the store's clock, the times follow the order of execution (one clock on
//! this machine, read where the script runs; effects replication makes the
//! replicas store the leader's times rather than read their own). It
//! assumes the wall clock is not stepped back during a run.

use std::io;
use std::thread;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::history::{Call, Outcome, Recorder, Ret};
use super::resp::{Conn, Value};
use super::workload::{Bounds, Routers, OP_TIMEOUT};

/// The canonical Redlock release script: delete the key only if it still
/// holds this client's token.
pub const RELEASE: &str = r#"if redis.call("get",KEYS[1]) == ARGV[1] then return redis.call("del",KEYS[1]) else return 0 end"#;

/// The limiter after it knows `now`.
macro_rules! limiter_body {
    () => {
        r#"local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now - window))
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], string.format('%d', now), ARGV[3])
  return {1, now}
else
  return {0, now}
end"#
    };
}

/// The sliding-window limiter. ARGV: window (µs), limit, a member unique to
/// the request. Numbers reach `redis.call` as `%d`-formatted strings, so
/// the µs times (16 digits) are never printed in exponent form. Answers
/// `{1, now}` when admitted, `{0, now}` when not, `now` in µs of `TIME`.
pub const LIMITER: &str = concat!(
    "local t = redis.call('TIME')\n",
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n",
    limiter_body!()
);

/// [`LIMITER`] on the client's clock (ARGV[4], µs): the
/// [`Variant::ClientClock`] limiter.
const LIMITER_CLIENT_CLOCK: &str = concat!("local now = tonumber(ARGV[4])\n", limiter_body!());

/// Which client the workloads run. Chaos runs always use [`Variant::Script`];
/// [`Variant::Racy`] and [`Variant::ClientClock`] exist for the mutation
/// tests only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The scripts above, atomic on a correct store.
    Script,
    /// Broken on purpose: release as `GET` then `DEL` with a sleep of
    /// TTL/2 between; limiter as `TIME`, `ZREMRANGEBYSCORE`, `ZCARD`, a
    /// 1 ms sleep, then `ZADD`. Each is a check-then-act race the checkers
    /// must catch.
    Racy,
    /// The limiter script with the client's clock instead of `TIME`, and a
    /// random delay of up to a window between the stamp and the request (as
    /// a network would add): atomic, yet it breaks the invariant (see the
    /// module docs).
    ClientClock,
}

/// Shape of the lock workload.
#[derive(Debug, Clone, Copy)]
pub struct LockSpec {
    /// Lock keys `lock:{0}..`.
    pub keys: u32,
    /// Clients contending for each key.
    pub clients_per_key: u32,
    /// The PX of every acquire.
    pub ttl_ms: u64,
    /// Pause after a refused acquire (random in this range, ms).
    pub retry_ms: (u64, u64),
    pub variant: Variant,
}

impl LockSpec {
    /// What a chaos run uses: long enough a TTL that a healthy acquire
    /// (a few ms) is far inside TTL/2, short enough that locks left by dead
    /// clients or lost releases free up quickly.
    pub fn chaos() -> LockSpec {
        LockSpec {
            keys: 3,
            clients_per_key: 3,
            ttl_ms: 1_000,
            retry_ms: (10, 40),
            variant: Variant::Script,
        }
    }

    pub fn key(i: u32) -> String {
        format!("lock:{{{i}}}")
    }
}

/// Shape of the limiter workload.
#[derive(Debug, Clone, Copy)]
pub struct LimiterSpec {
    /// Limiter keys `limiter:{0}..`.
    pub keys: u32,
    /// Clients, each on every key at random.
    pub clients: u32,
    /// Admissions allowed per window.
    pub limit: u32,
    pub window_ms: u64,
    /// Pause between two requests of a client (random in this range, ms).
    pub pause_ms: (u64, u64),
    pub variant: Variant,
}

impl LimiterSpec {
    /// What a chaos run uses: about 100 requests a second for 40
    /// admission slots, so both verdicts are common.
    pub fn chaos() -> LimiterSpec {
        LimiterSpec {
            keys: 2,
            clients: 3,
            limit: 10,
            window_ms: 500,
            pause_ms: (15, 45),
            variant: Variant::Script,
        }
    }

    pub fn key(i: u32) -> String {
        format!("limiter:{{{i}}}")
    }
}

/// Whether the routers run scripts (the lock and limiter workloads need
/// EVAL).
pub fn scripts_supported(addr: &str) -> bool {
    let Ok(mut c) = Conn::connect(addr, OP_TIMEOUT) else {
        return false;
    };
    matches!(c.call(&["EVAL", "return 1", "0"]), Ok(Value::Int(1)))
}

/// A connection to a random router that reconnects after errors, with the
/// SHA1 of one script loaded (`SCRIPT LOAD` on every new connection).
struct ScriptClient {
    routers: Routers,
    script: &'static str,
    sha: Option<String>,
    conn: Option<Conn>,
}

impl ScriptClient {
    fn new(routers: Routers, script: &'static str) -> ScriptClient {
        ScriptClient {
            routers,
            script,
            sha: None,
            conn: None,
        }
    }

    /// The connection, made if needed; `None` while no router accepts.
    fn get(&mut self, rng: &mut impl Rng) -> Option<&mut Conn> {
        if self.conn.is_none() {
            let addr = self.routers.pick(rng)?;
            let mut c = Conn::connect(&addr, OP_TIMEOUT).ok()?;
            // A failed load leaves the old SHA (or none): EVALSHA then meets
            // NOSCRIPT, or EVAL runs directly.
            if let Ok(Value::Bulk(Some(sha))) = c.call(&["SCRIPT", "LOAD", self.script]) {
                self.sha = Some(String::from_utf8_lossy(&sha).into_owned());
            }
            self.conn = Some(c);
        }
        self.conn.as_mut()
    }

    /// Run the script: EVALSHA, then EVAL if the router does not know the
    /// SHA. A `-NOSCRIPT` reply proves EVALSHA ran nothing.
    fn eval(&mut self, keys: &[&str], args: &[&str]) -> io::Result<Value> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "no connection"))?;
        let numkeys = keys.len().to_string();
        let tail: Vec<&str> = std::iter::once(numkeys.as_str())
            .chain(keys.iter().copied())
            .chain(args.iter().copied())
            .collect();
        if let Some(sha) = &self.sha {
            let mut cmd = vec!["EVALSHA", sha.as_str()];
            cmd.extend(&tail);
            match conn.call(&cmd)? {
                Value::Error(e) if e.starts_with("NOSCRIPT") => {}
                other => return Ok(other),
            }
        }
        let mut cmd = vec!["EVAL", self.script];
        cmd.extend(&tail);
        conn.call(&cmd)
    }
}

/// A write's reply when it is not a value: a lost connection (drop it) or
/// an error reply; either way the outcome is unknown.
fn unknown(r: io::Result<Value>) -> Result<Value, (Outcome, bool)> {
    match r {
        Err(e) => Err((Outcome::Unknown(e.to_string()), true)),
        Ok(Value::Error(e)) => Err((Outcome::Unknown(e), false)),
        Ok(v) => Ok(v),
    }
}

fn sleep_ms(ms: u64) {
    thread::sleep(Duration::from_millis(ms));
}

// ---------------------------------------------------------------------------
// Locks

/// One acquire: `SET key token NX PX ttl`. The bool asks the caller to drop
/// the connection.
pub fn exec_acquire(conn: &mut Conn, key: &str, token: &str, ttl_ms: u64) -> (Outcome, bool) {
    let ttl = ttl_ms.to_string();
    match unknown(conn.call(&["SET", key, token, "NX", "PX", ttl.as_str()])) {
        Err(e) => e,
        Ok(Value::Simple(s)) if s == "OK" => (Outcome::Ok(Ret::Acquired(true)), false),
        Ok(Value::Bulk(None)) => (Outcome::Ok(Ret::Acquired(false)), false),
        Ok(other) => (Outcome::Ok(Ret::Bad(format!("{other:?}"))), true),
    }
}

/// One release of `token`: the release script, or in the [`Variant::Racy`]
/// client `GET`, a sleep of `gap`, then `DEL` if the GET saw the token.
fn exec_release(
    c: &mut ScriptClient,
    key: &str,
    token: &str,
    variant: Variant,
    gap: Duration,
) -> (Outcome, bool) {
    let reply = match variant {
        Variant::Script | Variant::ClientClock => c.eval(&[key], &[token]),
        Variant::Racy => {
            let Some(conn) = c.conn.as_mut() else {
                return (Outcome::Unknown("no connection".into()), true);
            };
            match unknown(conn.call(&["GET", key])) {
                Err(e) => return e,
                Ok(Value::Bulk(Some(v))) if v == token.as_bytes() => {
                    thread::sleep(gap);
                    conn.call(&["DEL", key])
                }
                Ok(_) => Ok(Value::Int(0)),
            }
        }
    };
    match unknown(reply) {
        Err(e) => e,
        Ok(Value::Int(n @ (0 | 1))) => (Outcome::Ok(Ret::Released(n == 1)), false),
        Ok(other) => (Outcome::Ok(Ret::Bad(format!("{other:?}"))), true),
    }
}

/// How long a holder keeps the lock: mostly a short section, one time in
/// five between TTL/2 and 1.2 × TTL (so locks expire under their holders,
/// and the racy release's GET often comes just before the expiry).
fn section(rng: &mut impl Rng, ttl_ms: u64) -> u64 {
    if rng.gen_range(0..5) == 0 {
        rng.gen_range(ttl_ms / 2..=ttl_ms * 6 / 5)
    } else {
        rng.gen_range(0..=ttl_ms / 5)
    }
}

/// One lock client on `key`: acquire, hold, release, until its bounds.
/// Returns the number of acquires sent.
pub fn lock_client(
    id: u32,
    seed: u64,
    routers: Routers,
    rec: Recorder,
    key: String,
    spec: LockSpec,
    bounds: Bounds,
) -> u64 {
    let mut rng = StdRng::seed_from_u64(seed ^ (0x10C0_0000u64 + id as u64));
    let mut c = ScriptClient::new(routers, RELEASE);
    let gap = Duration::from_millis(spec.ttl_ms / 2);
    let mut n = 0;
    while !bounds.done(n) {
        n += 1;
        let Some(conn) = c.get(&mut rng) else {
            sleep_ms(100);
            continue;
        };
        let token = format!("c{id}:{n}");
        let mut lost = false;
        let op = rec.record(
            id,
            Call::Acquire {
                key: key.clone(),
                token: token.clone(),
                ttl_ms: spec.ttl_ms,
            },
            |_| {
                let (o, l) = exec_acquire(conn, &key, &token, spec.ttl_ms);
                lost = l;
                o
            },
        );
        if lost {
            c.conn = None;
        }
        match op.outcome {
            Outcome::Ok(Ret::Acquired(false)) => {
                sleep_ms(rng.gen_range(spec.retry_ms.0..=spec.retry_ms.1));
                continue;
            }
            // Held only if the OK came back within TTL/2 (see checks::locks).
            Outcome::Ok(Ret::Acquired(true))
                if (op.complete - op.invoke) <= spec.ttl_ms * 1000 / 2 =>
            {
                sleep_ms(section(&mut rng, spec.ttl_ms));
            }
            // Late, unknown or malformed: not held, released at once.
            _ => {}
        }
        if c.get(&mut rng).is_none() {
            continue;
        }
        let mut lost = false;
        rec.record(
            id,
            Call::Release {
                key: key.clone(),
                token: token.clone(),
            },
            |_| {
                let (o, l) = exec_release(&mut c, &key, &token, spec.variant, gap);
                lost = l;
                o
            },
        );
        if lost {
            c.conn = None;
        }
        sleep_ms(rng.gen_range(spec.retry_ms.0..=spec.retry_ms.1));
    }
    n
}

// ---------------------------------------------------------------------------
// Limiter

/// A limiter reply `[verdict, time]`.
fn verdict(v: Value) -> (Outcome, bool) {
    match v {
        Value::Array(Some(items)) => match items.as_slice() {
            [Value::Int(a @ (0 | 1)), Value::Int(at)] => (
                Outcome::Ok(Ret::Admitted {
                    admitted: *a == 1,
                    at_us: *at,
                }),
                false,
            ),
            _ => (Outcome::Ok(Ret::Bad(format!("{items:?}"))), true),
        },
        other => (Outcome::Ok(Ret::Bad(format!("{other:?}"))), true),
    }
}

/// The [`Variant::Racy`] limiter: the script's steps as separate commands,
/// with a 1 ms sleep between the count and the add.
fn racy_admit(
    conn: &mut Conn,
    key: &str,
    member: &str,
    limit: u32,
    window_us: u64,
) -> io::Result<Value> {
    let now = match conn.call(&["TIME"])? {
        Value::Array(Some(t)) if t.len() == 2 => {
            let part = |v: &Value| v.text().and_then(|s| s.parse::<i64>().ok());
            match (part(&t[0]), part(&t[1])) {
                (Some(s), Some(us)) => s * 1_000_000 + us,
                _ => return Ok(Value::Error(format!("TIME answered {t:?}"))),
            }
        }
        other => return Ok(other),
    };
    let cut = (now - window_us as i64).to_string();
    conn.call(&["ZREMRANGEBYSCORE", key, "-inf", cut.as_str()])?;
    let n = match conn.call(&["ZCARD", key])? {
        Value::Int(n) => n,
        other => return Ok(other),
    };
    if n >= limit as i64 {
        return Ok(Value::Array(Some(vec![Value::Int(0), Value::Int(now)])));
    }
    sleep_ms(1);
    let score = now.to_string();
    match conn.call(&["ZADD", key, score.as_str(), member])? {
        Value::Int(_) => Ok(Value::Array(Some(vec![Value::Int(1), Value::Int(now)]))),
        other => Ok(other),
    }
}

/// One limiter client: until its bounds, ask a random limiter key for
/// admission. Returns the number of requests sent.
pub fn limiter_client(
    id: u32,
    seed: u64,
    routers: Routers,
    rec: Recorder,
    spec: LimiterSpec,
    bounds: Bounds,
) -> u64 {
    let mut rng = StdRng::seed_from_u64(seed ^ (0x1170_0000u64 + id as u64));
    let script = match spec.variant {
        Variant::ClientClock => LIMITER_CLIENT_CLOCK,
        Variant::Script | Variant::Racy => LIMITER,
    };
    let mut c = ScriptClient::new(routers, script);
    let window_us = spec.window_ms * 1000;
    let (window, limit) = (window_us.to_string(), spec.limit.to_string());
    let mut n = 0;
    while !bounds.done(n) {
        n += 1;
        if c.get(&mut rng).is_none() {
            sleep_ms(100);
            continue;
        }
        let key = LimiterSpec::key(rng.gen_range(0..spec.keys.max(1)));
        let member = format!("c{id}:{n}");
        let mut lost = false;
        rec.record(
            id,
            Call::Admit {
                key: key.clone(),
                member: member.clone(),
                limit: spec.limit,
                window_us,
            },
            |_| {
                let reply = match (spec.variant, c.conn.as_mut()) {
                    (Variant::Script, _) => c.eval(&[&key], &[&window, &limit, &member]),
                    (Variant::ClientClock, _) => {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_micros())
                            .to_string();
                        // The request travels: up to a window's time.
                        sleep_ms(rng.gen_range(0..=spec.window_ms));
                        c.eval(&[&key], &[&window, &limit, &member, &now])
                    }
                    (Variant::Racy, Some(conn)) => {
                        racy_admit(conn, &key, &member, spec.limit, window_us)
                    }
                    (Variant::Racy, None) => {
                        Err(io::Error::new(io::ErrorKind::NotConnected, "no connection"))
                    }
                };
                let (o, l) = unknown(reply).map(verdict).unwrap_or_else(|e| e);
                lost = l;
                o
            },
        );
        if lost {
            c.conn = None;
        }
        sleep_ms(rng.gen_range(spec.pause_ms.0..=spec.pause_ms.1));
    }
    n
}

#[cfg(test)]
mod tests {
    //! The workloads and their checkers against a real `redis-server`
    //! (atomic scripts, one process): the scripted clients must pass, the
    //! [`Variant::Racy`] and [`Variant::ClientClock`] ones must be caught.
    //! This tests the checkers without shoal.

    use std::process::Command;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Instant;

    use shoal::devcluster::{free_port, wait_tcp, Proc};

    use super::*;
    use crate::checks::{self, LimiterSummary, LockSummary};

    /// A throwaway `redis-server` on a free port in `dir`, killed on drop.
    fn redis_server(dir: &std::path::Path) -> (Proc, String) {
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir);
        let proc = Proc::spawn("redis-server", cmd, dir).expect("redis-server starts");
        let addr = format!("127.0.0.1:{port}");
        wait_tcp(&addr, Duration::from_secs(10)).expect("redis-server listens");
        (proc, addr)
    }

    fn bounds(secs: u64) -> Bounds {
        Bounds {
            deadline: Instant::now() + Duration::from_secs(secs),
            max_ops: u64::MAX,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    fn run_locks(addr: &str, variant: Variant, secs: u64) -> (LockSummary, usize) {
        let spec = LockSpec {
            keys: 2,
            clients_per_key: 4,
            ttl_ms: 100,
            retry_ms: (1, 3),
            variant,
        };
        let (routers, rec, b) = (
            Routers::new(vec![addr.into()]),
            Recorder::new(),
            bounds(secs),
        );
        let mut handles = Vec::new();
        for k in 0..spec.keys {
            for i in 0..spec.clients_per_key {
                let (routers, rec, b) = (routers.clone(), rec.clone(), b.clone());
                let id = k * 100 + i;
                handles.push(thread::spawn(move || {
                    lock_client(id, 7, routers, rec, LockSpec::key(k), spec, b)
                }));
            }
        }
        for h in handles {
            h.join().unwrap();
        }
        let h = rec.snapshot();
        let released = h
            .ops
            .iter()
            .filter(|o| o.outcome == Outcome::Ok(Ret::Released(true)))
            .count();
        (checks::locks(&h), released)
    }

    fn run_limiter(addr: &str, variant: Variant, secs: u64) -> LimiterSummary {
        let spec = LimiterSpec {
            keys: 2,
            clients: 6,
            limit: 5,
            window_ms: 100,
            pause_ms: (0, 2),
            variant,
        };
        run_limiter_spec(addr, spec, secs)
    }

    fn run_limiter_spec(addr: &str, spec: LimiterSpec, secs: u64) -> LimiterSummary {
        let (routers, rec, b) = (
            Routers::new(vec![addr.into()]),
            Recorder::new(),
            bounds(secs),
        );
        let handles: Vec<_> = (0..spec.clients)
            .map(|i| {
                let (routers, rec, b) = (routers.clone(), rec.clone(), b.clone());
                thread::spawn(move || limiter_client(i, 7, routers, rec, spec, b))
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        checks::limiter(&rec.snapshot())
    }

    #[test]
    fn locks_hold_with_the_release_script_and_break_with_get_then_del() {
        let dir = tempfile::tempdir().unwrap();
        let (_redis, addr) = redis_server(dir.path());
        assert!(scripts_supported(&addr));

        let (good, released) = run_locks(&addr, Variant::Script, 3);
        assert!(good.violations.is_empty(), "{:#?}", good.violations);
        assert!(
            good.held > 50 && released > 20,
            "{good:?}, {released} released"
        );

        let (bad, _) = run_locks(&addr, Variant::Racy, 4);
        println!(
            "locks on redis-server: script {} held, {released} released, {} late, 0 violations; \
             GET then DEL {} held, {} violations",
            good.held,
            good.late,
            bad.held,
            bad.violations.len()
        );
        assert!(
            !bad.violations.is_empty(),
            "GET then DEL released other holders' locks unnoticed: {bad:?}"
        );
        assert!(bad.violations[0].message.contains("two holders"));
    }

    #[test]
    fn the_limiter_holds_with_the_script_and_breaks_with_zcard_then_zadd() {
        let dir = tempfile::tempdir().unwrap();
        let (_redis, addr) = redis_server(dir.path());

        let good = run_limiter(&addr, Variant::Script, 3);
        assert!(good.violations.is_empty(), "{:#?}", good.violations);
        assert!(good.admitted > 100 && good.rejected > 100, "{good:?}");

        let bad = run_limiter(&addr, Variant::Racy, 3);
        println!(
            "limiter on redis-server: script {} admitted, {} rejected, 0 violations; \
             ZCARD then ZADD {} admitted, {} violations",
            good.admitted,
            good.rejected,
            bad.admitted,
            bad.violations.len()
        );
        assert!(
            !bad.violations.is_empty(),
            "ZCARD then ZADD admitted too many unnoticed: {bad:?}"
        );
    }

    #[test]
    fn a_racy_release_only_deletes_a_key_that_held_its_token() {
        // The broken variant is broken only by its gap: alone on a key it
        // releases its own lock and leaves a stranger's.
        let dir = tempfile::tempdir().unwrap();
        let (_redis, addr) = redis_server(dir.path());
        let mut c = ScriptClient::new(Routers::new(vec![addr]), RELEASE);
        let mut rng = StdRng::seed_from_u64(1);
        let conn = c.get(&mut rng).unwrap();
        assert_eq!(
            exec_acquire(conn, "k", "t1", 10_000).0,
            Outcome::Ok(Ret::Acquired(true))
        );
        assert_eq!(
            exec_acquire(conn, "k", "t2", 10_000).0,
            Outcome::Ok(Ret::Acquired(false))
        );
        for variant in [Variant::Script, Variant::Racy] {
            let gap = Duration::from_millis(1);
            let (o, _) = exec_release(&mut c, "k", "t2", variant, gap);
            assert_eq!(o, Outcome::Ok(Ret::Released(false)), "{variant:?}");
            let (o, _) = exec_release(&mut c, "k", "t1", variant, gap);
            assert_eq!(o, Outcome::Ok(Ret::Released(true)), "{variant:?}");
            let conn = c.get(&mut rng).unwrap();
            assert_eq!(
                exec_acquire(conn, "k", "t1", 10_000).0,
                Outcome::Ok(Ret::Acquired(true))
            );
        }
        // EVALSHA of a flushed script falls back to EVAL.
        let conn = c.get(&mut rng).unwrap();
        assert_eq!(
            conn.call(&["SCRIPT", "FLUSH"]).unwrap(),
            Value::Simple("OK".into())
        );
        let (o, _) = exec_release(&mut c, "k", "t1", Variant::Script, Duration::ZERO);
        assert_eq!(o, Outcome::Ok(Ret::Released(true)));
    }

    #[test]
    fn a_limiter_on_the_clients_clock_breaks_on_an_atomic_store() {
        let dir = tempfile::tempdir().unwrap();
        let (_redis, addr) = redis_server(dir.path());
        let spec = LimiterSpec {
            keys: 1,
            clients: 8,
            limit: 3,
            window_ms: 20,
            pause_ms: (0, 2),
            variant: Variant::ClientClock,
        };
        let bad = run_limiter_spec(&addr, spec, 3);
        println!(
            "limiter on the client's clock: {} admitted, {} violations",
            bad.admitted,
            bad.violations.len()
        );
        assert!(!bad.violations.is_empty(), "{bad:?}");
    }
}
