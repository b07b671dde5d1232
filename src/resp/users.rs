//! The router's users as data: what etcd's `users/<name>` records hold
//! ([`UserRecord`]), a user with the command bits its rules give
//! ([`User`]), every user of one etcd revision ([`Users`]) and the ACL LOG
//! ([`AclLog`]). The rules themselves (parsing `ACL SETUSER`, checking a
//! call, describing a user) are `super::acl`'s: they need the command
//! table, which the session, holding a connection's user, must not import.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::reply::Reply;

/// A key pattern with the access it grants (`~p` both, `%R~p`, `%W~p`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPattern {
    pub read: bool,
    pub write: bool,
    pub pattern: String,
}

impl KeyPattern {
    pub(super) fn describe(&self) -> String {
        match (self.read, self.write) {
            (true, true) => format!("~{}", self.pattern),
            (true, false) => format!("%R~{}", self.pattern),
            _ => format!("%W~{}", self.pattern),
        }
    }
}

/// A user's rules as stored in etcd (`users/<name>`). Command bits are not
/// stored: they are computed again from `command_rules` (the rules `ACL
/// LIST` shows), so a record written by one version means the same
/// commands in the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub enabled: bool,
    pub nopass: bool,
    /// Redis's `sanitize-payload` (true) / `skip-sanitize-payload` (false)
    /// flag: shown, with no effect (shoal has no RESTORE).
    #[serde(default)]
    pub sanitize_payload: Option<bool>,
    /// SHA-256 digests, lowercase hex, in the order added.
    pub passwords: Vec<String>,
    pub all_commands: bool,
    /// The command rules, as `ACL LIST` shows them (filled by
    /// [`User::record`]).
    pub command_rules: String,
    pub all_keys: bool,
    pub keys: Vec<KeyPattern>,
    pub all_channels: bool,
    pub channels: Vec<String>,
    pub all_tables: bool,
    pub tables: Vec<String>,
}

/// A user: its rules and the command bits they give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub rec: UserRecord,
    /// One bit per full name id (`acl::AclCommands`).
    pub(super) allowed: Vec<u64>,
    /// Allowed first arguments of commands otherwise denied (`+select|0`),
    /// by row id, lowercase.
    pub(super) first_args: BTreeMap<usize, Vec<String>>,
}

/// Every user a router knows, as of one etcd revision.
#[derive(Debug, Clone, Default)]
pub struct Users {
    pub users: BTreeMap<String, Arc<User>>,
    /// The etcd revision this state reflects.
    pub revision: i64,
}

impl Users {
    /// The users of etcd's `users/` records, plus `default` built from
    /// `requirepass` when no record names it. Undecodable records are
    /// skipped (logged): a user that cannot be read cannot log in.
    pub fn from_records(
        records: Vec<(String, UserRecord)>,
        requirepass: Option<&str>,
        revision: i64,
    ) -> Users {
        let mut users: BTreeMap<String, Arc<User>> = records
            .into_iter()
            .map(|(name, rec)| (name.clone(), Arc::new(User::from_record(&name, rec))))
            .collect();
        users
            .entry("default".to_string())
            .or_insert_with(|| Arc::new(User::default_user(requirepass)));
        Users { users, revision }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<User>> {
        self.users.get(name)
    }
}

/// One ACL LOG entry.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub count: u64,
    pub reason: &'static str,
    pub context: &'static str,
    pub object: String,
    pub username: String,
    pub created: Instant,
    pub client_info: String,
}

/// Redis's ACL LOG: the latest denials and failed logins, newest first; a
/// denial like one of the 10 newest entries (same reason, context, object
/// and user, within 60 s) counts there instead of making a new one.
#[derive(Debug, Default)]
pub struct AclLog {
    entries: Mutex<VecDeque<LogEntry>>,
}

/// Entries kept (Redis's `acllog-max-len` default).
pub const ACL_LOG_MAX: usize = 128;

impl AclLog {
    pub fn add(&self, mut e: LogEntry) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        // Like Redis, only the 10 newest are looked at.
        let similar = entries.iter().take(10).position(|x| {
            x.reason == e.reason
                && x.context == e.context
                && x.object == e.object
                && x.username == e.username
                && e.created.duration_since(x.created).as_secs() < 60
        });
        if let Some(i) = similar {
            let old = entries.remove(i).expect("an entry");
            e.count = old.count + 1;
        }
        entries.push_front(e);
        entries.truncate(ACL_LOG_MAX);
    }

    pub fn reset(&self) {
        if let Ok(mut e) = self.entries.lock() {
            e.clear();
        }
    }

    /// The newest `count` entries as ACL LOG answers them.
    pub fn reply(&self, count: usize) -> Reply {
        let Ok(entries) = self.entries.lock() else {
            return Reply::Array(vec![]);
        };
        Reply::Array(
            entries
                .iter()
                .take(count)
                .map(|e| {
                    Reply::Map(vec![
                        (Reply::bulk("count"), Reply::Int(e.count as i64)),
                        (Reply::bulk("reason"), Reply::bulk(e.reason)),
                        (Reply::bulk("context"), Reply::bulk(e.context)),
                        (Reply::bulk("object"), Reply::bulk(e.object.clone())),
                        (Reply::bulk("username"), Reply::bulk(e.username.clone())),
                        (
                            Reply::bulk("age-seconds"),
                            Reply::Double(e.created.elapsed().as_millis() as f64 / 1000.0),
                        ),
                        (
                            Reply::bulk("client-info"),
                            Reply::bulk(e.client_info.clone()),
                        ),
                    ])
                })
                .collect(),
        )
    }
}
