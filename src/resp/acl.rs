//! Users and their privileges: Redis 7.0's ACL model, the part shoal serves,
//! plus shoal's table rule. Pure: no I/O, no sessions. This module owns a
//! user's rules (parsed from `ACL SETUSER` modifiers, with Redis's error
//! texts), how they are described (`ACL LIST`, `ACL GETUSER`), how they are
//! stored (the JSON record under `users/<name>` in etcd), the permission
//! check of one command call, and the ACL LOG. It must never decide who a
//! connection is (the session does) or reach etcd (`cmd_acl` does).
//!
//! Commands are identified by their *full name*: every row of the command
//! table, and for container rows (CLIENT, CONFIG, ACL...) every subcommand
//! the row declares (`client|kill`), as Redis does. A user holds one bit per
//! full name; categories (`+@read`) set the bits of every full name in
//! them, computed from the command table's categories ([`AclCommands`]).
//!
//! Tables (shoal's own): `table:<glob>` lets a user use the tables whose
//! names match, `alltables` every table (the default), `resettables` none.
//! Redis's pub/sub channel rules (`&pattern`, `allchannels`,
//! `resetchannels`) are shown as Redis shows them and checked as Redis
//! checks them ([`User::channel_ok`]): a channel must match one of the
//! patterns, a PSUBSCRIBE pattern must equal one.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use bytes::Bytes;

use sha2::{Digest, Sha256};

use super::commands::COMMANDS;
use super::reply::Reply;
use super::spec::{acl, flag, CommandSpec, Handler};
pub use super::users::{AclLog, KeyPattern, LogEntry, User, UserRecord, Users, ACL_LOG_MAX};

/// Redis's order of the categories (`ACL CAT`).
pub const CATEGORY_ORDER: &[&str] = &[
    "keyspace",
    "read",
    "write",
    "set",
    "sortedset",
    "list",
    "hash",
    "string",
    "bitmap",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
];

/// The bit of a category name (any case).
pub fn category_bit(name: &str) -> Option<u32> {
    acl::NAMES
        .iter()
        .find(|(_, n)| n.eq_ignore_ascii_case(name))
        .map(|(b, _)| *b)
}

/// One full name a permission can be given to: a row of the command table
/// or a subcommand of a container row.
#[derive(Debug)]
pub struct AclCommand {
    /// `get`, `client|kill`.
    pub fullname: String,
    /// ACL category bits.
    pub cats: u32,
    /// Ids of its subcommands (a container row).
    pub subs: std::ops::Range<usize>,
    /// Whether it is a subcommand.
    pub is_sub: bool,
}

/// Every full name, with an id: the rows of the command table first (the
/// id of a row is its index), then the subcommands.
pub struct AclCommands {
    pub list: Vec<AclCommand>,
    by_name: HashMap<String, usize>,
}

impl AclCommands {
    /// The table, built once from the command table.
    pub fn get() -> &'static AclCommands {
        static TABLE: OnceLock<AclCommands> = OnceLock::new();
        TABLE.get_or_init(|| AclCommands::build(COMMANDS))
    }

    fn build(rows: &[CommandSpec]) -> AclCommands {
        let mut list: Vec<AclCommand> = rows
            .iter()
            .map(|c| AclCommand {
                fullname: c.name.to_string(),
                cats: c.subs.map_or_else(|| c.acl_categories(), |s| s.parent),
                subs: 0..0,
                is_sub: false,
            })
            .collect();
        for (i, c) in rows.iter().enumerate() {
            let Some(subs) = c.subs else { continue };
            let start = list.len();
            for (name, cats) in subs.list {
                list.push(AclCommand {
                    fullname: format!("{}|{name}", c.name),
                    cats: *cats,
                    subs: 0..0,
                    is_sub: true,
                });
            }
            list[i].subs = start..list.len();
        }
        let by_name = list
            .iter()
            .enumerate()
            .map(|(i, c)| (c.fullname.clone(), i))
            .collect();
        AclCommands { list, by_name }
    }

    /// The id of a full name (lowercase).
    pub fn id(&self, fullname: &str) -> Option<usize> {
        self.by_name.get(fullname).copied()
    }

    /// The id a call runs under: its subcommand's when the row is a
    /// container and the first argument names one, else its row's.
    pub fn id_of_call(&self, row: usize, args: &[Bytes]) -> usize {
        let c = &self.list[row];
        if !c.subs.is_empty() {
            if let Some(sub) = args.get(1) {
                let sub = String::from_utf8_lossy(sub).to_ascii_lowercase();
                if let Some(id) = self.id(&format!("{}|{sub}", c.fullname)) {
                    return id;
                }
            }
        }
        row
    }

    /// The full names in a category, in table order.
    pub fn in_category(&self, bit: u32) -> Vec<&str> {
        self.list
            .iter()
            .filter(|c| c.cats & bit != 0)
            .map(|c| c.fullname.as_str())
            .collect()
    }
}

/// Why a call is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The command (its full name).
    Command(String),
    /// A key (the first key refused).
    Key(Bytes),
    /// The connection's table.
    Table(String),
    /// A pub/sub channel or pattern (the first refused).
    Channel(String),
}

impl User {
    /// Whether the user may use `name`: a channel matching one of its
    /// channel patterns, or (`pattern`, for PSUBSCRIBE) a pattern equal to
    /// one, as Redis 7 checks.
    pub fn channel_ok(&self, name: &[u8], pattern: bool) -> bool {
        self.rec.all_channels
            || self.rec.channels.iter().any(|p| {
                if pattern {
                    p.as_bytes() == name
                } else {
                    crate::glob::glob_match(p.as_bytes(), name)
                }
            })
    }
}

impl Denied {
    /// The NOPERM reply when the command is refused (Redis 7.0's texts;
    /// the table's is shoal's).
    pub fn reply(&self) -> Reply {
        Reply::error(match self {
            Denied::Command(c) => {
                format!("NOPERM this user has no permissions to run the '{c}' command")
            }
            Denied::Key(_) => {
                "NOPERM this user has no permissions to access one of the keys used as arguments"
                    .to_string()
            }
            Denied::Table(t) => {
                format!("NOPERM this user has no permissions to use the '{t}' table")
            }
            Denied::Channel(_) => {
                "NOPERM this user has no permissions to access one of the channels used as arguments"
                    .to_string()
            }
        })
    }

    /// The reply in EXEC when the rules changed after queueing.
    pub fn exec_reply(&self) -> Reply {
        let reason = match self {
            Denied::Command(_) => "no permission to execute the command or subcommand",
            Denied::Key(_) => "no permission to touch the specified keys",
            Denied::Table(_) => "no permission to use the table",
            Denied::Channel(_) => "no permission to access one of the channels used as arguments",
        };
        Reply::error(format!("NOPERM ACLs rules changed between the moment the transaction was accumulated and the EXEC call. This command is no longer allowed for the following reason: {reason}"))
    }

    /// ACL DRYRUN's text.
    pub fn dryrun_text(&self) -> String {
        match self {
            Denied::Command(c) => format!("This user has no permissions to run the '{c}' command"),
            Denied::Key(k) => format!(
                "This user has no permissions to access the '{}' key",
                String::from_utf8_lossy(k)
            ),
            Denied::Table(t) => format!("This user has no permissions to use the '{t}' table"),
            Denied::Channel(c) => {
                format!("This user has no permissions to access the '{c}' channel")
            }
        }
    }

    /// ACL LOG's reason and object.
    pub fn log_fields(&self) -> (&'static str, String) {
        match self {
            Denied::Command(c) => ("command", c.clone()),
            Denied::Key(k) => ("key", String::from_utf8_lossy(k).into_owned()),
            Denied::Table(t) => ("table", t.clone()),
            Denied::Channel(c) => ("channel", c.clone()),
        }
    }
}

/// The error of one ACL SETUSER modifier, as Redis words it.
fn modifier_err(op: &str, why: &str) -> String {
    format!("ERR Error in ACL SETUSER modifier '{op}': {why}")
}

const SYNTAX: &str = "Syntax error";
const UNKNOWN: &str = "Unknown command or category name in ACL";
const NO_SUCH_PASS: &str = "The password you are trying to remove from the user does not exist";
const BAD_HASH: &str =
    "The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters";
const AFTER_ALLKEYS: &str = "Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns";
const AFTER_ALLCHANNELS: &str = "Adding a pattern after the * pattern (or the 'allchannels' flag) is not valid and does not have any effect. Try 'resetchannels' to start with an empty list of channels";
const SUB_OF_SUB: &str = "Allowing first-arg of a subcommand is not supported";

/// SHA-256 of a password, lowercase hex (as Redis stores it).
pub fn hash_password(pass: &[u8]) -> String {
    let digest = Sha256::digest(pass);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Whether two digests are equal, in a time that does not depend on where
/// they differ.
fn same_digest(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

fn valid_hash(h: &str) -> bool {
    h.len() == 64 && h.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

impl User {
    /// A new user as `ACL SETUSER name` makes it: off, no password, no
    /// commands, no keys, no channels, every table.
    pub fn new(name: &str) -> User {
        let ids = AclCommands::get().list.len();
        User {
            name: name.to_string(),
            rec: UserRecord {
                enabled: false,
                nopass: false,
                sanitize_payload: None,
                passwords: Vec::new(),
                all_commands: false,
                command_rules: String::new(),
                all_keys: false,
                keys: Vec::new(),
                all_channels: false,
                channels: Vec::new(),
                all_tables: true,
                tables: Vec::new(),
            },
            allowed: vec![0; ids.div_ceil(64)],
            first_args: BTreeMap::new(),
        }
    }

    /// The `default` user a router has before anyone changed it: `on
    /// nopass ~* &* +@all` without `requirepass`, with `>requirepass`
    /// otherwise.
    pub fn default_user(requirepass: Option<&str>) -> User {
        let mut u = User::new("default");
        let pass = requirepass.map(|p| format!(">{p}"));
        let rules = [
            "on",
            pass.as_deref().unwrap_or("nopass"),
            "~*",
            "&*",
            "+@all",
        ];
        for r in rules {
            u.apply(r.as_bytes()).expect("the default user's rules");
        }
        u
    }

    /// A user from its stored record. Rules that no longer name a command
    /// (one removed since) are skipped with a warning.
    pub fn from_record(name: &str, rec: UserRecord) -> User {
        let mut u = User::new(name);
        u.set_all_commands(rec.all_commands);
        let rules = rec.command_rules.clone();
        u.rec = rec;
        for r in rules.split(' ').filter(|r| !r.is_empty()) {
            if let Err(e) = u.apply_str(r) {
                tracing::warn!(user = %name, rule = %r, "stored ACL rule skipped: {e}");
            }
        }
        u.rec.command_rules.clear();
        u
    }

    /// The record to store: the rules with the command rules described.
    pub fn record(&self) -> UserRecord {
        let mut rec = self.rec.clone();
        rec.command_rules = self.describe_commands();
        rec
    }

    pub fn is_enabled(&self) -> bool {
        self.rec.enabled
    }

    /// Apply one `ACL SETUSER` modifier. The error is the whole reply
    /// text.
    pub fn apply(&mut self, op: &[u8]) -> Result<(), String> {
        let text = String::from_utf8_lossy(op).into_owned();
        self.apply_str(&text)
            .map_err(|why| modifier_err(&text, &why))
    }

    fn apply_str(&mut self, op: &str) -> Result<(), String> {
        let lower = op.to_ascii_lowercase();
        let r = &mut self.rec;
        match lower.as_str() {
            "on" => r.enabled = true,
            "off" => r.enabled = false,
            "nopass" => {
                r.nopass = true;
                r.passwords.clear();
            }
            "resetpass" => {
                r.nopass = false;
                r.passwords.clear();
            }
            "allkeys" | "~*" => {
                r.all_keys = true;
                r.keys.clear();
            }
            "resetkeys" => {
                r.all_keys = false;
                r.keys.clear();
            }
            "allchannels" | "&*" => {
                r.all_channels = true;
                r.channels.clear();
            }
            "resetchannels" => {
                r.all_channels = false;
                r.channels.clear();
            }
            "alltables" | "table:*" => {
                r.all_tables = true;
                r.tables.clear();
            }
            "resettables" => {
                r.all_tables = false;
                r.tables.clear();
            }
            "allcommands" | "+@all" => self.set_all_commands(true),
            "nocommands" | "-@all" => self.set_all_commands(false),
            "reset" => {
                for rule in [
                    "resetpass",
                    "resetkeys",
                    "resetchannels",
                    "alltables",
                    "off",
                    "sanitize-payload",
                    "-@all",
                ] {
                    self.apply_str(rule)?;
                }
            }
            "clearselectors" => {}
            "sanitize-payload" => r.sanitize_payload = Some(true),
            "skip-sanitize-payload" => r.sanitize_payload = Some(false),
            _ => return self.apply_prefixed(op),
        }
        Ok(())
    }

    fn apply_prefixed(&mut self, op: &str) -> Result<(), String> {
        let r = &mut self.rec;
        let first = op.as_bytes().first().copied().unwrap_or(0);
        match first {
            b'>' => {
                let h = hash_password(&op.as_bytes()[1..]);
                if !r.passwords.contains(&h) {
                    r.passwords.push(h);
                }
                r.nopass = false;
            }
            b'#' => {
                let h = &op[1..];
                if !valid_hash(h) {
                    return Err(BAD_HASH.into());
                }
                if !r.passwords.iter().any(|p| p == h) {
                    r.passwords.push(h.to_string());
                }
                r.nopass = false;
            }
            b'<' | b'!' => {
                let h = if first == b'<' {
                    hash_password(&op.as_bytes()[1..])
                } else {
                    let h = &op[1..];
                    if !valid_hash(h) {
                        return Err(BAD_HASH.into());
                    }
                    h.to_string()
                };
                let before = r.passwords.len();
                r.passwords.retain(|p| *p != h);
                if r.passwords.len() == before {
                    return Err(NO_SUCH_PASS.into());
                }
            }
            b'~' | b'%' => {
                if r.all_keys {
                    return Err(AFTER_ALLKEYS.into());
                }
                let (read, write, pattern) = if first == b'%' {
                    let Some(tilde) = op.find('~') else {
                        return Err(SYNTAX.into());
                    };
                    let (mut read, mut write) = (false, false);
                    for c in op[1..tilde].chars() {
                        match c.to_ascii_uppercase() {
                            'R' if !read => read = true,
                            'W' if !write => write = true,
                            _ => return Err(SYNTAX.into()),
                        }
                    }
                    if !read && !write {
                        return Err(SYNTAX.into());
                    }
                    (read, write, &op[tilde + 1..])
                } else {
                    (true, true, &op[1..])
                };
                if pattern.contains(' ') {
                    return Err(SYNTAX.into());
                }
                if read && write && pattern == "*" {
                    r.all_keys = true;
                    r.keys.clear();
                    return Ok(());
                }
                match r.keys.iter_mut().find(|k| k.pattern == pattern) {
                    Some(k) => {
                        k.read |= read;
                        k.write |= write;
                    }
                    None => r.keys.push(KeyPattern {
                        read,
                        write,
                        pattern: pattern.to_string(),
                    }),
                }
            }
            b'&' => {
                if r.all_channels {
                    return Err(AFTER_ALLCHANNELS.into());
                }
                let p = op[1..].to_string();
                if p.contains(' ') {
                    return Err(SYNTAX.into());
                }
                if !r.channels.contains(&p) {
                    r.channels.push(p);
                }
            }
            b'+' | b'-' => {
                self.apply_command_rule(op)?;
            }
            b'(' => {
                return Err("Syntax error (shoal does not support ACL selectors yet)".to_string())
            }
            _ if op.len() > 6 && op[..6].eq_ignore_ascii_case("table:") => {
                // The default is every table: a first table rule limits
                // the user to what it names.
                if r.all_tables {
                    r.all_tables = false;
                    r.tables.clear();
                }
                let p = op[6..].to_string();
                if p.contains(' ') {
                    return Err(SYNTAX.into());
                }
                if !r.tables.contains(&p) {
                    r.tables.push(p);
                }
            }
            _ => return Err(SYNTAX.into()),
        }
        Ok(())
    }

    fn set_bit(&mut self, id: usize, on: bool) {
        let (w, b) = (id / 64, 1u64 << (id % 64));
        if on {
            self.allowed[w] |= b;
        } else {
            self.allowed[w] &= !b;
        }
    }

    fn bit(&self, id: usize) -> bool {
        self.allowed[id / 64] & (1u64 << (id % 64)) != 0
    }

    fn set_all_commands(&mut self, on: bool) {
        for w in self.allowed.iter_mut() {
            *w = if on { u64::MAX } else { 0 };
        }
        self.rec.all_commands = on;
        self.first_args.clear();
    }

    /// Allow or deny a full name and, for a container, its subcommands
    /// (Redis's `ACLChangeSelectorPerm`).
    fn change_perm(&mut self, id: usize, on: bool) {
        let table = AclCommands::get();
        self.set_bit(id, on);
        self.first_args.remove(&id);
        for sub in table.list[id].subs.clone() {
            self.set_bit(sub, on);
        }
    }

    /// `+cmd`, `-cmd`, `+cmd|sub`, `-cmd|sub`, `+@cat`, `-@cat`.
    fn apply_command_rule(&mut self, op: &str) -> Result<(), String> {
        let allow = op.starts_with('+');
        let body = op[1..].to_ascii_lowercase();
        let table = AclCommands::get();
        if let Some(cat) = body.strip_prefix('@') {
            if cat == "all" {
                self.set_all_commands(allow);
                return Ok(());
            }
            let bit = category_bit(cat).ok_or(UNKNOWN)?;
            self.set_category(bit, allow);
            return Ok(());
        }
        if !allow || !body.contains('|') {
            let id = table.id(&body).ok_or(UNKNOWN)?;
            self.change_perm(id, allow);
            return Ok(());
        }
        // +cmd|sub: a declared subcommand, or a first argument of a
        // command that has none.
        let (cmd, sub) = body.rsplit_once('|').expect("a '|'");
        let id = table.id(cmd).ok_or(UNKNOWN)?;
        if table.list[id].is_sub {
            return Err(SUB_OF_SUB.into());
        }
        if sub.is_empty() {
            return Err(SYNTAX.into());
        }
        if !table.list[id].subs.is_empty() {
            let sid = table.id(&body).ok_or(UNKNOWN)?;
            self.change_perm(sid, true);
        } else {
            let args = self.first_args.entry(id).or_default();
            if !args.iter().any(|a| a == sub) {
                args.push(sub.to_string());
            }
        }
        Ok(())
    }

    /// Allow or deny every full name in a category.
    fn set_category(&mut self, bit: u32, on: bool) {
        for (id, c) in AclCommands::get().list.iter().enumerate() {
            if c.cats & bit != 0 {
                self.change_perm(id, on);
            }
        }
    }

    /// The rules after the user's name, as `ACL LIST` shows them.
    pub fn describe(&self) -> String {
        let r = &self.rec;
        let mut out = Vec::<String>::new();
        out.extend(self.flags().into_iter().map(String::from));
        for p in &r.passwords {
            out.push(format!("#{p}"));
        }
        out.push(self.describe_keys());
        out.push(self.describe_channels());
        if !r.all_tables {
            out.push(self.describe_tables());
        }
        out.push(self.describe_commands());
        out.retain(|s| !s.is_empty());
        out.join(" ")
    }

    /// `on`/`off`, `nopass`, the payload flag, in Redis's order.
    fn flags(&self) -> Vec<&'static str> {
        let r = &self.rec;
        let mut f = vec![if r.enabled { "on" } else { "off" }];
        if r.nopass {
            f.push("nopass");
        }
        match r.sanitize_payload {
            Some(false) => f.push("skip-sanitize-payload"),
            Some(true) => f.push("sanitize-payload"),
            None => {}
        }
        f
    }

    /// The command rules that give exactly the user's command bits,
    /// computed as Redis 7.0's `ACLDescribeSelectorCommandRules` does:
    /// `+@all` or `-@all`, then greedily the categories that fit best
    /// (most commands right, fewest wrong), then each command (in table
    /// order; Redis's is its hash table's) whose bit still differs, and the
    /// first arguments allowed of denied commands.
    pub fn describe_commands(&self) -> String {
        let table = AclCommands::get();
        let additive = !self.rec.all_commands;
        let mut rules = vec![if additive { "-@all" } else { "+@all" }.to_string()];
        let mut fake = User::new("");
        fake.set_all_commands(!additive);
        // What the categories chosen so far leave to explain.
        let mut left = self.clone();
        let mut applied = [false; CATEGORY_ORDER.len()];
        loop {
            let mut best = None;
            let (mut min_diff, mut max_same) = (usize::MAX, 0);
            for (j, name) in CATEGORY_ORDER.iter().enumerate() {
                if applied[j] {
                    continue;
                }
                let bit = category_bit(name).expect("a category");
                let (mut on, mut off) = (0, 0);
                for (id, c) in table.list.iter().enumerate() {
                    if c.cats & bit != 0 {
                        if left.bit(id) {
                            on += 1;
                        } else {
                            off += 1;
                        }
                    }
                }
                let (diff, same) = if additive { (off, on) } else { (on, off) };
                if same > diff && (diff < min_diff || (diff == min_diff && same > max_same)) {
                    best = Some((j, bit));
                    min_diff = diff;
                    max_same = same;
                }
            }
            let Some((j, bit)) = best else { break };
            fake.set_category(bit, additive);
            left.set_category(bit, !additive);
            rules.push(format!(
                "{}@{}",
                if additive { '+' } else { '-' },
                CATEGORY_ORDER[j]
            ));
            applied[j] = true;
        }
        for row in 0..COMMANDS.len() {
            let ids = std::iter::once(row).chain(table.list[row].subs.clone());
            for id in ids {
                let want = self.bit(id);
                if want != fake.bit(id) {
                    rules.push(format!(
                        "{}{}",
                        if want { '+' } else { '-' },
                        table.list[id].fullname
                    ));
                    fake.change_perm(id, want);
                }
            }
            if !self.bit(row) {
                for arg in self.first_args.get(&row).into_iter().flatten() {
                    rules.push(format!("+{}|{arg}", table.list[row].fullname));
                }
            }
        }
        rules.join(" ")
    }

    fn describe_keys(&self) -> String {
        if self.rec.all_keys {
            return "~*".into();
        }
        let keys: Vec<String> = self.rec.keys.iter().map(KeyPattern::describe).collect();
        keys.join(" ")
    }

    fn describe_channels(&self) -> String {
        if self.rec.all_channels {
            return "&*".into();
        }
        let mut s = String::from("resetchannels");
        for c in &self.rec.channels {
            s.push_str(&format!(" &{c}"));
        }
        s
    }

    fn describe_tables(&self) -> String {
        if self.rec.all_tables {
            return "alltables".into();
        }
        let mut s = String::from("resettables");
        for t in &self.rec.tables {
            s.push_str(&format!(" table:{t}"));
        }
        s
    }

    /// `ACL GETUSER`'s reply (Redis 7.0's fields; `tables` only when the
    /// user is limited to some tables).
    pub fn getuser(&self) -> Reply {
        let r = &self.rec;
        let flags = Reply::Set(self.flags().into_iter().map(Reply::bulk).collect());
        let mut fields = vec![
            (Reply::bulk("flags"), flags),
            (
                Reply::bulk("passwords"),
                Reply::Array(r.passwords.iter().map(|p| Reply::bulk(p.clone())).collect()),
            ),
            (
                Reply::bulk("commands"),
                Reply::bulk(self.describe_commands()),
            ),
            (Reply::bulk("keys"), Reply::bulk(self.describe_keys())),
            (
                Reply::bulk("channels"),
                Reply::bulk(if r.all_channels {
                    "&*".to_string()
                } else {
                    r.channels
                        .iter()
                        .map(|c| format!("&{c}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                }),
            ),
        ];
        if !r.all_tables {
            fields.push((Reply::bulk("tables"), Reply::bulk(self.describe_tables())));
        }
        fields.push((Reply::bulk("selectors"), Reply::Array(vec![])));
        Reply::Map(fields)
    }

    /// Whether `pass` is one of the user's passwords (any password, for a
    /// `nopass` user). Compares SHA-256 digests in constant time.
    pub fn password_ok(&self, pass: &[u8]) -> bool {
        if self.rec.nopass {
            return true;
        }
        let h = hash_password(pass);
        // Every stored digest is compared: the time says nothing about
        // which one matched.
        let mut ok = false;
        for p in &self.rec.passwords {
            ok |= same_digest(p, &h);
        }
        ok
    }

    /// Whether the user may run this call of `spec` (a row of the command
    /// table) against `table`. `args` is the whole request, the command
    /// name at 0. A user with every command, key and table pays three
    /// tests of its own flags and bits.
    pub fn check(&self, spec: &CommandSpec, args: &[Bytes], table: &str) -> Result<(), Denied> {
        let r = &self.rec;
        // What runs before AUTH is always allowed (Redis: CMD_NO_AUTH).
        if spec.has(flag::NO_AUTH) {
            return Ok(());
        }
        let table_ids = AclCommands::get();
        if !r.all_commands || !self.allowed.iter().all(|w| *w == u64::MAX) {
            let row = super::commands::row_index(spec);
            let id = table_ids.id_of_call(row, args);
            let first_arg_ok = || {
                args.get(1).is_some_and(|a| {
                    let a = String::from_utf8_lossy(a).to_ascii_lowercase();
                    self.first_args.get(&row).is_some_and(|l| l.contains(&a))
                })
            };
            if !self.bit(id) && !first_arg_ok() {
                return Err(Denied::Command(table_ids.list[id].fullname.clone()));
            }
        }
        if !r.all_keys {
            let write = spec.is_write();
            let read = spec.has(flag::READONLY) || !write;
            for i in spec.key_positions(args) {
                let key = &args[i];
                let ok = r.keys.iter().any(|k| {
                    (!read || k.read)
                        && (!write || k.write)
                        && crate::glob::glob_match(k.pattern.as_bytes(), key)
                });
                if !ok {
                    return Err(Denied::Key(key.clone()));
                }
            }
        }
        if !r.all_tables {
            match table_used(spec, args, table) {
                Some(TableUse::One(t)) if !self.table_ok(&t) => return Err(Denied::Table(t)),
                // FLUSHALL: `*` names every table in the refusal.
                Some(TableUse::Every) => return Err(Denied::Table("*".into())),
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether every command, key and table is allowed (`check` always
    /// passes): a script run for such a user needs no check per call.
    pub fn unrestricted(&self) -> bool {
        let r = &self.rec;
        r.all_commands && self.allowed.iter().all(|w| *w == u64::MAX) && r.all_keys && r.all_tables
    }

    /// Whether the user may use table `name`.
    pub fn table_ok(&self, name: &str) -> bool {
        self.rec.all_tables
            || self
                .rec
                .tables
                .iter()
                .any(|p| crate::glob::glob_match(p.as_bytes(), name.as_bytes()))
    }
}

/// The tables a call uses.
enum TableUse {
    One(String),
    Every,
}

/// The table a call uses, when it uses one: data and fan-out commands the
/// connection's table; TABLE.USE, TABLE.DROP, TABLE.CREATE and
/// TABLE.DESCRIBE the table they name; FLUSHALL every table.
fn table_used(spec: &CommandSpec, args: &[Bytes], table: &str) -> Option<TableUse> {
    let named = || {
        args.get(1)
            .map(|a| TableUse::One(String::from_utf8_lossy(a).into_owned()))
    };
    match spec.name {
        "flushall" => Some(TableUse::Every),
        "table.use" | "table.drop" | "table.create" | "table.describe" => named(),
        // SELECT names a database index: its table is checked when the
        // switch resolves (the session knows the index's table).
        "select" => None,
        _ if spec.has(flag::FAN_OUT)
            || !matches!(spec.keys, super::spec::KeySpec::None)
            || matches!(spec.handler, Handler::Data(_)) =>
        {
            Some(TableUse::One(table.to_string()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::commands::lookup;

    fn user(rules: &str) -> User {
        let mut u = User::new("u");
        for r in rules.split(' ').filter(|r| !r.is_empty()) {
            u.apply(r.as_bytes()).unwrap();
        }
        u
    }

    fn req(s: &str) -> Vec<Bytes> {
        s.split(' ')
            .map(|p| Bytes::copy_from_slice(p.as_bytes()))
            .collect()
    }

    fn check(u: &User, cmd: &str, table: &str) -> Result<(), Denied> {
        let args = req(cmd);
        let name = cmd.split(' ').next().unwrap();
        u.check(lookup(name).unwrap(), &args, table)
    }

    #[test]
    fn describes_as_redis() {
        assert_eq!(User::new("u").describe(), "off resetchannels -@all");
        let u = user("on >pw ~user:* %R~r:* &chan -@all +@read -get +set +client|id");
        assert_eq!(
            u.describe(),
            format!(
                "on #{} ~user:* %R~r:* resetchannels &chan -@all +@read +client|id -get +set",
                hash_password(b"pw")
            )
        );
        assert_eq!(User::default_user(None).describe(), "on nopass ~* &* +@all");
        // Only what the bits need (Redis's rewrite).
        assert_eq!(user("+get +set -get").describe_commands(), "-@all +set");
        assert_eq!(
            user("+client|id +client").describe_commands(),
            "-@all +client"
        );
        assert_eq!(
            user("+client -client|kill").describe_commands(),
            "-@all +client -client|kill"
        );
        assert_eq!(user("+get allcommands").describe_commands(), "+@all");
        assert_eq!(
            user("+@all -@dangerous").describe_commands(),
            "+@all -@dangerous"
        );
        assert_eq!(user("+get -@string").describe_commands(), "-@all");
        assert_eq!(
            user("resettables table:orders").describe(),
            "off resetchannels resettables table:orders -@all"
        );
        // The first table rule limits a user that had every table.
        assert_eq!(
            user("table:a table:b").describe(),
            "off resetchannels resettables table:a table:b -@all"
        );
    }

    #[test]
    fn a_record_reads_back_the_same_user() {
        let u = user("on >pw ~a:* %W~w:* &c resettables table:t* +@all -@dangerous +flushdb -select +select|0 -client|kill");
        let back = User::from_record("u", u.record());
        assert_eq!(back, u);
        assert_eq!(back.describe(), u.describe());
    }

    #[test]
    fn modifier_errors_are_redis_texts() {
        let mut u = User::new("u");
        let e = |u: &mut User, op: &str| u.apply(op.as_bytes()).unwrap_err();
        assert_eq!(
            e(&mut u, "foo"),
            "ERR Error in ACL SETUSER modifier 'foo': Syntax error"
        );
        assert!(e(&mut u, "+nosuch").ends_with("Unknown command or category name in ACL"));
        assert!(e(&mut u, "+@nosuch").ends_with("Unknown command or category name in ACL"));
        assert!(e(&mut u, "#abc").ends_with(BAD_HASH));
        assert!(e(&mut u, "<nope").ends_with(NO_SUCH_PASS));
        assert!(e(&mut u, "%X~b").ends_with(SYNTAX));
        assert!(e(&mut u, "+get|").ends_with(SYNTAX));
        assert!(e(&mut u, "+client|id|x").ends_with(SUB_OF_SUB));
        u.apply(b"allkeys").unwrap();
        assert!(e(&mut u, "~b").ends_with(AFTER_ALLKEYS));
    }

    #[test]
    fn passwords_are_digests() {
        let u = user("on >secret >other");
        assert!(u.password_ok(b"secret") && u.password_ok(b"other"));
        assert!(!u.password_ok(b"secre") && !u.password_ok(b""));
        assert!(u.rec.passwords.iter().all(|p| valid_hash(p)));
        assert!(!u.rec.passwords.iter().any(|p| p.contains("secret")));
        let u = user("on >secret <secret");
        assert!(!u.password_ok(b"secret"));
        assert!(user("on nopass").password_ok(b"anything"));
    }

    #[test]
    fn commands_keys_and_tables() {
        let u = user("on +@read ~user:* resettables table:shop");
        assert_eq!(check(&u, "get user:1", "shop"), Ok(()));
        assert_eq!(
            check(&u, "set user:1 v", "shop"),
            Err(Denied::Command("set".into()))
        );
        assert_eq!(
            check(&u, "get other", "shop"),
            Err(Denied::Key(Bytes::from_static(b"other")))
        );
        assert_eq!(
            check(&u, "mget user:1 other", "shop"),
            Err(Denied::Key(Bytes::from_static(b"other")))
        );
        assert_eq!(
            check(&u, "get user:1", "default"),
            Err(Denied::Table("default".into()))
        );
        // AUTH and friends always run.
        assert_eq!(check(&u, "auth x y", "shop"), Ok(()));
        let admin = user("on +@all ~*");
        for cmd in ["flushall", "table.drop shop", "config set timeout 1"] {
            assert_eq!(check(&admin, cmd, "default"), Ok(()), "{cmd}");
        }
        let safe = user("on +@all -@dangerous ~*");
        for (cmd, full) in [
            ("flushall", "flushall"),
            ("flushdb", "flushdb"),
            ("table.drop shop", "table.drop"),
            ("table.create t", "table.create"),
            ("cluster.drain 1", "cluster.drain"),
            ("config set timeout 1", "config|set"),
        ] {
            assert_eq!(
                check(&safe, cmd, "default"),
                Err(Denied::Command(full.into())),
                "{cmd}"
            );
        }
        // Subcommands and first arguments.
        let u = user("on ~* -@all +client|id +select|0");
        assert_eq!(check(&u, "client id", "t"), Ok(()));
        assert_eq!(
            check(&u, "client kill 1", "t"),
            Err(Denied::Command("client|kill".into()))
        );
        assert_eq!(check(&u, "select 0", "t"), Ok(()));
        assert_eq!(
            check(&u, "select 1", "t"),
            Err(Denied::Command("select".into()))
        );
        // Read-only and write-only patterns.
        let u = user("on +@all %R~r:* %W~w:*");
        assert_eq!(check(&u, "get r:1", "t"), Ok(()));
        assert!(check(&u, "set r:1 v", "t").is_err());
        assert_eq!(check(&u, "set w:1 v", "t"), Ok(()));
        assert!(check(&u, "get w:1", "t").is_err());
        // FLUSHALL reaches every table: no glob is enough.
        for t in ["a", "?", "*a*"] {
            let u = user(&format!("on +@all ~* resettables table:{t}"));
            assert_eq!(check(&u, "flushall", "a"), Err(Denied::Table("*".into())));
        }
        assert_eq!(check(&user("on +@all ~* table:*"), "flushall", "a"), Ok(()));
    }

    #[test]
    fn log_groups_similar_entries() {
        let log = AclLog::default();
        let e = |object: &str| LogEntry {
            count: 1,
            reason: "command",
            context: "toplevel",
            object: object.into(),
            username: "u".into(),
            created: std::time::Instant::now(),
            client_info: String::new(),
        };
        log.add(e("set"));
        log.add(e("get"));
        log.add(e("set"));
        let Reply::Array(entries) = log.reply(10) else {
            panic!()
        };
        assert_eq!(entries.len(), 2);
        let Reply::Map(first) = &entries[0] else {
            panic!()
        };
        assert_eq!(first[0].1, Reply::Int(2));
        assert_eq!(first[3].1, Reply::bulk("set"));
    }
}
