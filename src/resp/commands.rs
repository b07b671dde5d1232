//! The command table: every command the router knows, declared once with its
//! arity, flags and key positions (Redis's `COMMAND INFO` conventions).
//!
//! Arity checks, `COMMAND COUNT/INFO/LIST` answers and key extraction are
//! derived from this table rather than written per command. Arity follows
//! Redis: a positive number is the exact argument count (command name
//! included), a negative one is a minimum.

/// Declaration of one command.
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec {
    pub name: &'static str,
    pub arity: i32,
    pub flags: &'static [&'static str],
    /// Position of the first key (0: no keys).
    pub first_key: i32,
    /// Position of the last key; -1 means the last argument.
    pub last_key: i32,
    pub step: i32,
}

impl CommandSpec {
    pub fn is_write(&self) -> bool {
        self.flags.contains(&"write")
    }

    /// Whether `argc` (command name included) satisfies the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i32;
        if self.arity >= 0 {
            argc == self.arity
        } else {
            argc >= -self.arity
        }
    }

    /// Indexes of the key arguments for a request of `argc` arguments.
    pub fn key_positions(&self, argc: usize) -> Vec<usize> {
        if self.first_key <= 0 || self.step <= 0 {
            return Vec::new();
        }
        let last = if self.last_key < 0 {
            argc as i32 + self.last_key
        } else {
            self.last_key
        };
        (self.first_key..=last.min(argc as i32 - 1))
            .step_by(self.step as usize)
            .map(|i| i as usize)
            .collect()
    }
}

const fn cmd(
    name: &'static str,
    arity: i32,
    flags: &'static [&'static str],
    first_key: i32,
    last_key: i32,
    step: i32,
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags,
        first_key,
        last_key,
        step,
    }
}

const READ: &[&str] = &["readonly", "fast"];
const WRITE: &[&str] = &["write", "denyoom"];
const WRITE_FAST: &[&str] = &["write", "denyoom", "fast"];
const CONN: &[&str] = &["fast", "loading", "stale", "no-auth"];
const ADMIN: &[&str] = &["admin", "loading", "stale"];

/// Every command, sorted by name.
pub static COMMANDS: &[CommandSpec] = &[
    cmd("append", 3, WRITE, 1, 1, 1),
    cmd(
        "auth",
        -2,
        &["noscript", "loading", "stale", "fast", "no-auth"],
        0,
        0,
        0,
    ),
    cmd(
        "client",
        -2,
        &["admin", "noscript", "loading", "stale"],
        0,
        0,
        0,
    ),
    cmd("cluster.drain", 2, ADMIN, 0, 0, 0),
    cmd("command", -1, &["loading", "stale"], 0, 0, 0),
    cmd("config", -2, ADMIN, 0, 0, 0),
    cmd("dbsize", 1, READ, 0, 0, 0),
    cmd("decr", 2, WRITE_FAST, 1, 1, 1),
    cmd("decrby", 3, WRITE_FAST, 1, 1, 1),
    cmd("del", -2, &["write"], 1, -1, 1),
    cmd(
        "discard",
        1,
        &["noscript", "loading", "stale", "fast"],
        0,
        0,
        0,
    ),
    cmd("echo", 2, &["fast"], 0, 0, 0),
    cmd(
        "exec",
        1,
        &["noscript", "loading", "stale", "skip_slowlog"],
        0,
        0,
        0,
    ),
    cmd("exists", -2, READ, 1, -1, 1),
    cmd("expire", -3, WRITE_FAST, 1, 1, 1),
    cmd("expireat", -3, WRITE_FAST, 1, 1, 1),
    cmd("flushall", -1, &["write"], 0, 0, 0),
    cmd("flushdb", -1, &["write"], 0, 0, 0),
    cmd("get", 2, READ, 1, 1, 1),
    cmd("getdel", 2, WRITE_FAST, 1, 1, 1),
    cmd("getex", -2, WRITE_FAST, 1, 1, 1),
    cmd("getrange", 4, &["readonly"], 1, 1, 1),
    cmd("getset", 3, WRITE_FAST, 1, 1, 1),
    cmd("hello", -1, CONN, 0, 0, 0),
    cmd("incr", 2, WRITE_FAST, 1, 1, 1),
    cmd("incrby", 3, WRITE_FAST, 1, 1, 1),
    cmd("incrbyfloat", 3, WRITE_FAST, 1, 1, 1),
    cmd("info", -1, &["loading", "stale"], 0, 0, 0),
    cmd("keys", 2, &["readonly"], 0, 0, 0),
    cmd("mget", -2, READ, 1, -1, 1),
    cmd("mset", -3, WRITE, 1, -1, 2),
    cmd("msetnx", -3, WRITE, 1, -1, 2),
    cmd(
        "multi",
        1,
        &["noscript", "loading", "stale", "fast"],
        0,
        0,
        0,
    ),
    cmd("persist", 2, &["write", "fast"], 1, 1, 1),
    cmd("pexpire", -3, WRITE_FAST, 1, 1, 1),
    cmd("pexpireat", -3, WRITE_FAST, 1, 1, 1),
    cmd("ping", -1, &["fast"], 0, 0, 0),
    cmd("pttl", 2, READ, 1, 1, 1),
    cmd("quit", -1, CONN, 0, 0, 0),
    cmd("readonly", 1, &["fast", "loading", "stale"], 0, 0, 0),
    cmd("readwrite", 1, &["fast", "loading", "stale"], 0, 0, 0),
    cmd(
        "reset",
        1,
        &["noscript", "loading", "stale", "fast", "no-auth"],
        0,
        0,
        0,
    ),
    cmd("scan", -2, &["readonly"], 0, 0, 0),
    cmd("select", 2, &["loading", "stale", "fast"], 0, 0, 0),
    cmd("set", -3, WRITE, 1, 1, 1),
    cmd("setnx", 3, WRITE_FAST, 1, 1, 1),
    cmd("setrange", 4, WRITE, 1, 1, 1),
    cmd("strlen", 2, READ, 1, 1, 1),
    cmd("substr", 4, &["readonly"], 1, 1, 1),
    cmd("table.create", -2, ADMIN, 0, 0, 0),
    cmd("table.describe", 2, ADMIN, 0, 0, 0),
    cmd("table.drop", 2, ADMIN, 0, 0, 0),
    cmd("table.list", 1, ADMIN, 0, 0, 0),
    cmd("table.use", 2, &["fast", "loading", "stale"], 0, 0, 0),
    cmd("time", 1, &["loading", "stale", "fast"], 0, 0, 0),
    cmd("touch", -2, READ, 1, -1, 1),
    cmd("ttl", 2, READ, 1, 1, 1),
    cmd("type", 2, READ, 1, 1, 1),
    cmd("unlink", -2, &["write", "fast"], 1, -1, 1),
    cmd(
        "unwatch",
        1,
        &["noscript", "loading", "stale", "fast"],
        0,
        0,
        0,
    ),
    cmd(
        "watch",
        -2,
        &["noscript", "loading", "stale", "fast"],
        1,
        -1,
        1,
    ),
];

/// Look a command up by its lowercase name.
pub fn lookup(name: &str) -> Option<&'static CommandSpec> {
    COMMANDS
        .binary_search_by(|c| c.name.cmp(name))
        .ok()
        .map(|i| &COMMANDS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        for w in COMMANDS.windows(2) {
            assert!(w[0].name < w[1].name, "{} before {}", w[0].name, w[1].name);
        }
        assert!(lookup("get").is_some());
        assert!(lookup("nosuch").is_none());
    }

    #[test]
    fn arity_and_keys() {
        let set = lookup("set").unwrap();
        assert!(!set.arity_ok(2));
        assert!(set.arity_ok(3));
        assert!(set.arity_ok(6));
        assert_eq!(set.key_positions(5), vec![1]);
        let del = lookup("del").unwrap();
        assert_eq!(del.key_positions(4), vec![1, 2, 3]);
        let get = lookup("get").unwrap();
        assert!(get.arity_ok(2) && !get.arity_ok(3));
        assert!(lookup("ping").unwrap().key_positions(2).is_empty());
    }
}
