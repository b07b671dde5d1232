//! Users on the router: the `ACL` command, AUTH's check, the permission
//! check of each call (with the ACL LOG), and the router's copy of the
//! users. The users live in etcd (`users/<name>`, one JSON
//! [`UserRecord`] each); every router follows that prefix with a watch
//! ([`follow_users`]), so a change made through one router is enforced by
//! all of them as soon as their watch delivers it. A connection keeps the
//! [`User`] it authenticated as and takes the new version of it when the
//! watch moved (one atomic load per command when nothing changed).
//! The rules themselves (parsing, describing, checking) are in
//! [`super::acl`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use super::acl::{category_bit, AclCommands, Denied, LogEntry, User, UserRecord, Users};
use super::args::Args;
use super::commands::lookup;
use super::errors::arg_err;
use super::reply::Reply;
use super::session::Session;
use super::spec::CommandSpec;
use crate::meta::etcd::Meta;
use crate::meta::MetaError;

/// Mirror `users/` from etcd as [`Users`]; `default` comes from
/// `requirepass` until someone stores it.
pub async fn follow_users(
    meta: &Meta,
    requirepass: Option<String>,
) -> Result<watch::Receiver<Arc<Users>>, MetaError> {
    let mut records = meta.follow("users/").await?;
    let build = move |st: &crate::meta::etcd::PrefixState| {
        let recs = st
            .decoded::<UserRecord>()
            .into_iter()
            .map(|(name, rec, _)| (name, rec))
            .collect();
        Arc::new(Users::from_records(
            recs,
            requirepass.as_deref(),
            st.revision,
        ))
    };
    let first = build(&records.borrow_and_update().clone());
    let (tx, rx) = watch::channel(first);
    tokio::spawn(async move {
        while records.changed().await.is_ok() {
            let state = records.borrow_and_update().clone();
            if tx.send(build(&state)).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// How long ACL SETUSER/DELUSER wait for this router's own watch to show
/// the change (so the next command here sees it).
const SEEN_WITHIN: Duration = Duration::from_secs(2);

/// `ACL HELP`'s lines.
const HELP: &[&str] = &[
    "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CAT [<category>]",
    "    List all commands that belong to <category>, or all command categories",
    "    when no category is specified.",
    "DELUSER <username> [<username> ...]",
    "    Delete a list of users.",
    "DRYRUN <username> <command> [<arg> ...]",
    "    Returns whether the user can execute the given command without executing the command.",
    "GETUSER <username>",
    "    Get the user's details.",
    "GENPASS [<bits>]",
    "    Generate a secure 256-bit user password. The optional `bits` argument can",
    "    be used to specify a different size.",
    "LIST",
    "    Show users details in config file format.",
    "LOG [<count> | RESET]",
    "    Show the ACL log entries.",
    "SETUSER <username> <attribute> [<attribute> ...]",
    "    Create or modify a user with the specified attributes.",
    "USERS",
    "    List all the registered usernames.",
    "WHOAMI",
    "    Return the current connection username.",
    "HELP",
    "    Prints this help.",
];

impl Session {
    /// Take the newest version of this connection's user if the users
    /// changed. `false` when the user was deleted (the connection must
    /// close, as Redis closes it).
    pub(super) fn refresh_user(&mut self) -> bool {
        if !self.users.has_changed().unwrap_or(false) {
            return true;
        }
        let users = self.users.borrow_and_update().clone();
        match users.get(&self.user.name) {
            Some(u) => {
                self.user = u.clone();
                true
            }
            None => false,
        }
    }

    /// Whether the connection's user may run this call; `table` is the
    /// table it runs against.
    pub(super) fn acl_denied(
        &self,
        spec: &CommandSpec,
        args: &[Bytes],
        table: &str,
    ) -> Option<Denied> {
        self.user.check(spec, args, table).err()
    }

    /// Note a refusal in the ACL LOG.
    pub(super) fn log_denied(&self, d: &Denied, in_multi: bool) {
        let (reason, object) = d.log_fields();
        self.log_acl(reason, object, self.user.name.clone(), in_multi);
    }

    fn log_acl(&self, reason: &'static str, object: String, username: String, in_multi: bool) {
        self.shared.acl_log.add(LogEntry {
            count: 1,
            reason,
            context: if in_multi { "multi" } else { "toplevel" },
            object,
            username,
            created: std::time::Instant::now(),
            client_info: self.shared.clients.info_line(self.id),
        });
    }

    /// A table switch (SELECT, TABLE.USE) to `table`: refused when the
    /// user may not use it.
    pub(super) fn table_switch_allowed(&self, table: &str) -> Result<(), Reply> {
        if self.user.table_ok(table) {
            return Ok(());
        }
        let d = Denied::Table(table.to_string());
        self.log_denied(&d, self.multi.is_some());
        Err(d.reply())
    }

    /// AUTH's check: the user exists, is on, and the password is one of
    /// its own (any, for `nopass`). A failure goes to the ACL LOG, under
    /// the command's name as the client sent it (`command`: AUTH, HELLO).
    pub(super) fn authenticate(&mut self, command: &Bytes, user: &str, pass: &[u8]) -> bool {
        self.refresh_user();
        let found = self.users.borrow().get(user).cloned();
        match found {
            Some(u) if u.is_enabled() && u.password_ok(pass) => {
                self.set_user(u);
                self.authenticated = true;
                true
            }
            _ => {
                let object = String::from_utf8_lossy(command).into_owned();
                self.log_acl("auth", object, user.to_string(), self.multi.is_some());
                false
            }
        }
    }

    pub(super) fn set_user(&mut self, u: Arc<User>) {
        let name = u.name.clone();
        self.user = u;
        self.shared.clients.set_user(self.id, name);
    }

    /// `ACL <subcommand> ...`.
    pub(super) async fn acl(&mut self, args: &mut Args) -> Reply {
        let given = match args.next_string() {
            Ok(s) => s,
            Err(e) => return arg_err(e),
        };
        let sub = given.to_ascii_lowercase();
        let rest = args.rest();
        // Redis's arity of each subcommand (ACL and the subcommand
        // counted).
        let arity = match sub.as_str() {
            "whoami" | "users" | "list" | "help" => 2,
            "getuser" => 3,
            "cat" | "log" | "genpass" => -2,
            "setuser" | "deluser" => -3,
            "dryrun" => -4,
            _ => return Reply::error(format!("ERR unknown subcommand '{given}'. Try ACL HELP.")),
        };
        let argc = rest.len() as i32 + 2;
        if (arity > 0 && argc != arity) || (arity < 0 && argc < -arity) {
            return Reply::error(format!(
                "ERR wrong number of arguments for 'acl|{sub}' command"
            ));
        }
        let users = self.users.borrow().clone();
        match sub.as_str() {
            "whoami" => Reply::bulk(self.user.name.clone()),
            "users" => Reply::Array(users.users.keys().map(|n| Reply::bulk(n.clone())).collect()),
            "list" => Reply::Array(
                users
                    .users
                    .values()
                    .map(|u| Reply::bulk(format!("user {} {}", u.name, u.describe())))
                    .collect(),
            ),
            "getuser" => {
                let name = String::from_utf8_lossy(&rest[0]).into_owned();
                users.get(&name).map_or(Reply::Nil, |u| u.getuser())
            }
            "cat" => acl_cat(&given, &rest),
            "genpass" => acl_genpass(&given, &rest),
            "log" => self.acl_log(&given, &rest),
            "dryrun" => self.acl_dryrun(&users, &rest),
            "setuser" => self.acl_setuser(&rest).await,
            "deluser" => self.acl_deluser(&rest).await,
            _ => Reply::Array(HELP.iter().map(|l| Reply::Status(l.to_string())).collect()),
        }
    }

    fn acl_log(&self, given: &str, rest: &[Bytes]) -> Reply {
        let count = match rest {
            [] => 10,
            [a] if a.eq_ignore_ascii_case(b"reset") => {
                self.shared.acl_log.reset();
                return Reply::ok();
            }
            // Redis: a negative count shows nothing.
            [a] => match super::args::parse_i64(a) {
                Some(n) => n.max(0) as usize,
                None => return Reply::error("ERR value is not an integer or out of range"),
            },
            _ => return subcommand_syntax(given),
        };
        self.shared.acl_log.reply(count)
    }

    fn acl_dryrun(&self, users: &Users, rest: &[Bytes]) -> Reply {
        let name = String::from_utf8_lossy(&rest[0]).into_owned();
        let Some(u) = users.get(&name) else {
            return Reply::error(format!("ERR User '{name}' not found"));
        };
        let cmd = String::from_utf8_lossy(&rest[1]).to_ascii_lowercase();
        let Some(spec) = lookup(&cmd) else {
            return Reply::error(format!(
                "ERR Command '{}' not found",
                String::from_utf8_lossy(&rest[1])
            ));
        };
        let call = &rest[1..];
        if !spec.arity_ok(call.len()) {
            return Reply::error(format!(
                "ERR wrong number of arguments for '{}' command",
                spec.name
            ));
        }
        match u.check(spec, call, &self.table) {
            Ok(()) => Reply::ok(),
            Err(d) => Reply::bulk(d.dryrun_text()),
        }
    }

    /// ACL SETUSER name rule...: read the record from etcd, apply every
    /// rule (all or nothing), write it back if nobody changed it meanwhile.
    async fn acl_setuser(&mut self, rest: &[Bytes]) -> Reply {
        let name = String::from_utf8_lossy(&rest[0]).into_owned();
        if name.is_empty() || name.contains(' ') || name.contains('\0') {
            return Reply::error("ERR Usernames can't contain spaces or null characters");
        }
        let meta = self.shared.meta.clone();
        for _ in 0..20 {
            let (mut user, revision) = match meta.get_user(&name).await {
                Ok(Some((value, rev))) => match serde_json::from_slice::<UserRecord>(&value) {
                    Ok(rec) => (User::from_record(&name, rec), rev),
                    Err(e) => {
                        return Reply::error(format!(
                            "ERR the stored record of user '{name}' does not decode ({e}); ACL DELUSER it and create it again"
                        ))
                    }
                },
                Ok(None) if name == "default" => (
                    User::default_user(self.shared.config.requirepass.as_deref()),
                    0,
                ),
                Ok(None) => (User::new(&name), 0),
                Err(e) => return etcd_err("read", &name, e),
            };
            for rule in &rest[1..] {
                if let Err(e) = user.apply(rule) {
                    return Reply::error(e);
                }
            }
            let value = match serde_json::to_vec(&user.record()) {
                Ok(v) => v,
                Err(e) => return Reply::error(format!("ERR cannot encode the user: {e}")),
            };
            match meta.swap_user(&name, Some(value), revision).await {
                Ok(Some(written)) => {
                    self.seen(written).await;
                    return Reply::ok();
                }
                // Someone changed the user meanwhile: apply the rules to
                // the new version.
                Ok(None) => continue,
                Err(e) => return etcd_err("write", &name, e),
            }
        }
        Reply::error(format!(
            "TRYAGAIN user '{name}' kept changing while this ACL SETUSER ran; nothing was changed"
        ))
    }

    async fn acl_deluser(&mut self, rest: &[Bytes]) -> Reply {
        let names: Vec<String> = rest
            .iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect();
        if names.iter().any(|n| n == "default") {
            return Reply::error("ERR The 'default' user cannot be removed");
        }
        let meta = self.shared.meta.clone();
        let mut deleted = 0;
        let mut last = 0;
        for name in &names {
            loop {
                match meta.get_user(name).await {
                    Ok(Some((_, rev))) => match meta.swap_user(name, None, rev).await {
                        Ok(Some(at)) => {
                            deleted += 1;
                            last = at;
                            break;
                        }
                        Ok(None) => continue,
                        Err(e) => return etcd_err("delete", name, e),
                    },
                    Ok(None) => break,
                    Err(e) => return etcd_err("read", name, e),
                }
            }
        }
        if last > 0 {
            self.seen(last).await;
        }
        Reply::Int(deleted)
    }

    /// Wait until this router's copy of the users reflects etcd revision
    /// `revision`.
    async fn seen(&mut self, revision: i64) {
        let mut rx = self.shared.users.clone();
        if tokio::time::timeout(SEEN_WITHIN, rx.wait_for(|u| u.revision >= revision))
            .await
            .is_err()
        {
            tracing::warn!(
                revision,
                "ACL change written but not yet seen by this router's watch"
            );
        }
    }
}

fn etcd_err(what: &str, name: &str, e: MetaError) -> Reply {
    Reply::error(format!(
        "CLUSTERDOWN cannot {what} user '{name}' in etcd: {e}"
    ))
}

/// Redis's error for a subcommand given the wrong arguments.
fn subcommand_syntax(given: &str) -> Reply {
    Reply::error(format!(
        "ERR unknown subcommand or wrong number of arguments for '{given}'. Try ACL HELP."
    ))
}

/// `ACL GENPASS [bits]`: a random password of `bits` bits (256 by
/// default), in hex, from the thread's CSPRNG.
fn acl_genpass(given: &str, rest: &[Bytes]) -> Reply {
    let bits = match rest {
        [] => 256,
        [b] => match super::args::parse_i64(b) {
            Some(n) if (1..=4096).contains(&n) => n as usize,
            None => return Reply::error("ERR value is not an integer or out of range"),
            Some(_) => {
                return Reply::error(
                    "ERR ACL GENPASS argument must be the number of bits for the output password, a positive number up to 4096",
                )
            }
        },
        _ => return subcommand_syntax(given),
    };
    let chars = bits.div_ceil(4);
    let mut bytes = vec![0u8; chars.div_ceil(2)];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
    let mut hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    hex.truncate(chars);
    Reply::bulk(hex)
}

/// `ACL CAT [category]`.
fn acl_cat(given: &str, rest: &[Bytes]) -> Reply {
    match rest {
        [] => Reply::Array(
            super::acl::CATEGORY_ORDER
                .iter()
                .map(|c| Reply::bulk(*c))
                .collect(),
        ),
        [cat] => {
            let name = String::from_utf8_lossy(cat).into_owned();
            let Some(bit) = category_bit(&name) else {
                return Reply::error(format!("ERR Unknown category '{name}'"));
            };
            Reply::Array(
                AclCommands::get()
                    .in_category(bit)
                    .into_iter()
                    .map(Reply::bulk)
                    .collect(),
            )
        }
        _ => subcommand_syntax(given),
    }
}
