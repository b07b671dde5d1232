//! Scripting commands on the router: EVAL, EVALSHA and their `_RO` forms,
//! SCRIPT, FCALL, FCALL_RO and FUNCTION. A script's keys pick its shard;
//! the router sends the body (or the library's code) with the call, so
//! the nodes keep no script state and any leader can run any script.
//! Where bodies and libraries are kept: [`super::scripts`].
//!
//! Keys on more than one shard are refused with `-CROSSSLOT`, as Redis
//! Cluster refuses keys in more than one slot (shoal accepts any keys of
//! one shard, a wider set than one slot). Running such a script as a
//! cross-shard transaction was not chosen: a script decides what it
//! writes from what it reads, so every read would need the 2PC locks of
//! every shard before it runs, and a script that reads a key it did not
//! declare could not be locked at all.

use bytes::Bytes;

use super::args::Args;
use super::compile::op_reply;
use super::errors::cluster_err;
use super::reply::{Protocol, Reply};
use super::scripts::{payload, sha1_hex, Library, MAX_STORED_CODE, MAX_STORED_SCRIPTS};
use super::session::Session;
use crate::shard::command::ScriptCall;
use crate::shard::command::{OpReply, ShardRequest};
use crate::slot::slot;

const ERR_NOSCRIPT: &str = "NOSCRIPT No matching script. Please use EVAL.";
const ERR_NOTBUSY: &str = "NOTBUSY No scripts in execution right now.";
const ERR_CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// `SCRIPT HELP`'s lines.
const SCRIPT_HELP: &[&str] = &[
    "SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "EXISTS <sha1> [<sha1> ...]",
    "    Return information about the existence of the scripts in the script cache.",
    "FLUSH [ASYNC|SYNC]",
    "    Flush the Lua scripts cache. Very dangerous on replicas.",
    "    When called without the optional mode argument, the behavior is determined by the",
    "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
    "    * ASYNC: Asynchronously flush the scripts cache.",
    "    * SYNC: Synchronously flush the scripts cache.",
    "KILL",
    "    Kill the currently executing Lua script.",
    "LOAD <script>",
    "    Load a script into the scripts cache without executing it.",
    "HELP",
    "    Prints this help.",
];

/// `FUNCTION HELP`'s lines.
const FUNCTION_HELP: &[&str] = &[
    "FUNCTION <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "LOAD [REPLACE] <FUNCTION CODE>",
    "    Create a new library with the given library name and code.",
    "DELETE <LIBRARY NAME>",
    "    Delete the given library.",
    "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
    "    Return general information on all the libraries:",
    "    * Library name",
    "    * The engine used to run the Library",
    "    * Library description",
    "    * Functions list",
    "    * Library code (if WITHCODE is given)",
    "    It also possible to get only function that matches a pattern using LIBRARYNAME argument.",
    "STATS",
    "    Return information about the current function running:",
    "    * Function name",
    "    * Command used to run the function",
    "    * Duration in MS that the function is running",
    "    If no function is running, return nil",
    "    In addition, returns a list of available engines.",
    "KILL",
    "    Kill the current running function.",
    "FLUSH [ASYNC|SYNC]",
    "    Delete all the libraries.",
    "    When called without the optional mode argument, the behavior is determined by the",
    "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
    "    * ASYNC: Asynchronously flush the libraries.",
    "    * SYNC: Synchronously flush the libraries.",
    "DUMP",
    "    Return a serialized payload representing the current libraries, can be restored using FUNCTION RESTORE command",
    "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE]",
    "    Restore the libraries represented by the given payload, it is possible to give a restore policy to",
    "    control how to handle existing libraries (default APPEND):",
    "    * FLUSH: delete all existing libraries.",
    "    * APPEND: appends the restored libraries to the existing libraries. On collision, abort.",
    "    * REPLACE: appends the restored libraries to the existing libraries, On collision, replace the old",
    "      libraries with the new libraries (notice that even on this option there is a chance of failure",
    "      in case of functions name collision with another library).",
    "HELP",
    "    Prints this help.",
];

/// `numkeys key [key ...] arg [arg ...]` of EVAL and FCALL.
fn keys_and_args(args: &mut Args) -> Result<(Vec<Bytes>, Vec<Bytes>), Reply> {
    let n = args
        .next_i64()
        .map_err(|_| Reply::error("ERR value is not an integer or out of range"))?;
    if n < 0 {
        return Err(Reply::error("ERR Number of keys can't be negative"));
    }
    let mut rest = args.rest();
    if n as u64 > rest.len() as u64 {
        return Err(Reply::error(
            "ERR Number of keys can't be greater than number of args",
        ));
    }
    let argv = rest.split_off(n as usize);
    Ok((rest, argv))
}

/// EVAL's keys: numkeys at argument 2, the keys after it.
pub(super) fn eval_keys(args: &[Bytes]) -> Vec<usize> {
    let n = args
        .get(2)
        .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok())
        .unwrap_or(0);
    (3..3usize.saturating_add(n))
        .take_while(|i| *i < args.len())
        .collect()
}

/// What runs: an EVAL body, or a library's function.
struct Code {
    sha: String,
    code: Bytes,
    function: String,
}

impl Session {
    /// `EVAL script numkeys [key ...] [arg ...]`
    pub(super) async fn eval(&mut self, args: &mut Args) -> Reply {
        self.eval_with(args, false, false).await
    }

    /// `EVAL_RO script numkeys [key ...] [arg ...]`
    pub(super) async fn eval_ro(&mut self, args: &mut Args) -> Reply {
        self.eval_with(args, false, true).await
    }

    /// `EVALSHA sha1 numkeys [key ...] [arg ...]`
    pub(super) async fn evalsha(&mut self, args: &mut Args) -> Reply {
        self.eval_with(args, true, false).await
    }

    /// `EVALSHA_RO sha1 numkeys [key ...] [arg ...]`
    pub(super) async fn evalsha_ro(&mut self, args: &mut Args) -> Reply {
        self.eval_with(args, true, true).await
    }

    async fn eval_with(&mut self, args: &mut Args, by_sha: bool, read_only: bool) -> Reply {
        let first = args.next_bytes().unwrap_or_default();
        let code = if by_sha {
            let sha = String::from_utf8_lossy(&first).to_ascii_lowercase();
            match self
                .shared
                .scripts
                .body_or_stored(&self.shared.meta, &sha)
                .await
            {
                Ok(Some(body)) => Code {
                    sha,
                    code: body,
                    function: String::new(),
                },
                Ok(None) => return Reply::error(ERR_NOSCRIPT),
                Err(e) => {
                    return Reply::error(format!(
                        "CLUSTERDOWN cannot read the script from etcd: {e}"
                    ))
                }
            }
        } else {
            let sha = sha1_hex(&first);
            self.shared.scripts.remember(&sha, &first);
            Code {
                sha,
                code: first,
                function: String::new(),
            }
        };
        let (keys, argv) = match keys_and_args(args) {
            Ok(ka) => ka,
            Err(e) => return e,
        };
        self.run_script(code, keys, argv, read_only).await
    }

    /// `FCALL function numkeys [key ...] [arg ...]`
    pub(super) async fn fcall(&mut self, args: &mut Args) -> Reply {
        self.fcall_with(args, false).await
    }

    /// `FCALL_RO function numkeys [key ...] [arg ...]`
    pub(super) async fn fcall_ro(&mut self, args: &mut Args) -> Reply {
        self.fcall_with(args, true).await
    }

    async fn fcall_with(&mut self, args: &mut Args, ro_command: bool) -> Reply {
        let name = args.next_string().unwrap_or_default();
        let (code, no_writes) = match self
            .shared
            .scripts
            .function_or_stored(&self.shared.meta, &name)
            .await
        {
            Ok(Some((lib, f))) => (
                Code {
                    sha: lib.sha,
                    code: lib.code,
                    function: name.clone(),
                },
                f.flags.iter().any(|f| f == "no-writes"),
            ),
            Ok(None) => return Reply::error("ERR Function not found"),
            Err(e) => {
                return Reply::error(format!(
                    "CLUSTERDOWN cannot read the function libraries from etcd: {e}"
                ))
            }
        };
        let (keys, argv) = match keys_and_args(args) {
            Ok(ka) => ka,
            Err(e) => return e,
        };
        if ro_command && !no_writes {
            return Reply::error(
                "ERR Can not execute a script with write flag using *_ro command.",
            );
        }
        self.run_script(code, keys, argv, ro_command || no_writes)
            .await
    }

    /// Send a script to the leader of the shard holding its keys.
    async fn run_script(
        &mut self,
        code: Code,
        keys: Vec<Bytes>,
        args: Vec<Bytes>,
        read_only: bool,
    ) -> Reply {
        let table = match self.table_named(&self.table) {
            Ok(t) => t,
            Err(e) => return cluster_err(e),
        };
        let mut shards = keys.iter().map(|k| table.desc.shard_for_slot(slot(k)));
        // A script without keys runs on the table's first shard.
        let shard = shards.next().unwrap_or(0);
        if shards.any(|s| s != shard) {
            return Reply::error(ERR_CROSSSLOT);
        }
        let descriptor = match self.shared.scripts.encoded_table(&table) {
            Ok(d) => d,
            Err(e) => return Reply::error(e),
        };
        let call = ScriptCall {
            sha: code.sha,
            code: code.code,
            function: code.function,
            keys,
            args,
            read_only,
            resp3: self.protocol == Protocol::Resp3,
            now_ms: crate::clock::now_ms(),
            table: descriptor,
            shard: shard as u32,
            // The caller's rules go with the script: the node checks each
            // command the script runs, as Redis does.
            user: if self.user.unrestricted() {
                Bytes::new()
            } else {
                let rec = (self.user.name.clone(), self.user.record());
                match serde_json::to_vec(&rec) {
                    Ok(v) => Bytes::from(v),
                    Err(e) => return Reply::error(format!("ERR cannot encode the user: {e}")),
                }
            },
            max_value: self.shared.config.max_value_len as u64,
        };
        match self
            .shared
            .client
            .execute(&table, shard, ShardRequest::Script(call))
            .await
        {
            Ok(r) => op_reply(r),
            Err(e) => cluster_err(e),
        }
    }

    /// `SCRIPT LOAD|EXISTS|FLUSH|KILL|HELP`
    pub(super) async fn script(&mut self, args: &mut Args) -> Reply {
        let given = args.next_string().unwrap_or_default();
        let sub = given.to_ascii_lowercase();
        let rest = args.rest();
        match (sub.as_str(), rest.len()) {
            ("load", 1) => {
                let body = &rest[0];
                let sha = sha1_hex(body);
                if self.shared.scripts.is_loaded(&sha) {
                    return Reply::bulk(sha);
                }
                if body.len() > MAX_STORED_CODE {
                    return Reply::error(format!(
                        "ERR a script SCRIPT LOAD stores may be at most {MAX_STORED_CODE} bytes"
                    ));
                }
                if self.shared.scripts.loaded_count() >= MAX_STORED_SCRIPTS {
                    return Reply::error(format!(
                        "ERR {MAX_STORED_SCRIPTS} scripts are loaded already; SCRIPT FLUSH first"
                    ));
                }
                match self
                    .shared
                    .meta
                    .put_record(&format!("scripts/{sha}"), body.to_vec())
                    .await
                {
                    Ok(rev) => {
                        self.shared.scripts.remember(&sha, body);
                        self.shared.scripts.await_loaded(rev).await;
                        Reply::bulk(sha)
                    }
                    Err(e) => {
                        Reply::error(format!("CLUSTERDOWN cannot store the script in etcd: {e}"))
                    }
                }
            }
            ("exists", n) if n > 0 => Reply::Array(
                rest.iter()
                    .map(|sha| {
                        let sha = String::from_utf8_lossy(sha).to_ascii_lowercase();
                        Reply::Int(self.shared.scripts.body(&sha).is_some() as i64)
                    })
                    .collect(),
            ),
            ("flush", 0 | 1) => {
                if let Some(mode) = rest.first() {
                    let m = String::from_utf8_lossy(mode).to_ascii_lowercase();
                    if m != "sync" && m != "async" {
                        return Reply::error("ERR SCRIPT FLUSH only support SYNC|ASYNC option");
                    }
                }
                match self.shared.meta.delete_prefix("scripts/").await {
                    Ok((_, rev)) => {
                        self.shared.scripts.forget_evaluated();
                        self.shared.scripts.await_loaded(rev).await;
                        Reply::ok()
                    }
                    Err(e) => {
                        Reply::error(format!("CLUSTERDOWN cannot flush the scripts in etcd: {e}"))
                    }
                }
            }
            ("kill", 0) => self.kill_scripts().await,
            ("help", 0) => Reply::Array(SCRIPT_HELP.iter().map(|l| Reply::status(*l)).collect()),
            _ => sub_error(
                "script",
                &given,
                &["load", "exists", "flush", "kill", "help"],
            ),
        }
    }

    /// SCRIPT KILL / FUNCTION KILL: stop the scripts running on every shard
    /// of every table.
    async fn kill_scripts(&mut self) -> Reply {
        let tables: Vec<_> = self
            .shared
            .client
            .routes()
            .tables
            .values()
            .cloned()
            .collect();
        let mut killed = 0;
        for table in tables {
            for shard in 0..table.desc.shards.len() {
                if let Ok(OpReply::Int(n)) = self
                    .shared
                    .client
                    .execute(&table, shard, ShardRequest::ScriptKill)
                    .await
                {
                    killed += n;
                }
            }
        }
        if killed > 0 {
            Reply::ok()
        } else {
            Reply::error(ERR_NOTBUSY)
        }
    }

    /// `FUNCTION LOAD|DELETE|LIST|FLUSH|DUMP|RESTORE|KILL|STATS|HELP`
    pub(super) async fn function(&mut self, args: &mut Args) -> Reply {
        let given = args.next_string().unwrap_or_default();
        let sub = given.to_ascii_lowercase();
        let rest = args.rest();
        match sub.as_str() {
            "load" => self.function_load(rest).await,
            "delete" if rest.len() == 1 => {
                let name = String::from_utf8_lossy(&rest[0]).into_owned();
                let rev = match self.shared.scripts.libraries.borrow().libs.get(&name) {
                    Some(l) => l.revision,
                    None => return Reply::error("ERR Library not found"),
                };
                match self
                    .shared
                    .meta
                    .swap_record(&format!("functions/{name}"), None, rev)
                    .await
                {
                    Ok(Some(_)) => {
                        self.shared
                            .scripts
                            .await_libraries(|l| !l.libs.contains_key(&name))
                            .await;
                        Reply::ok()
                    }
                    Ok(None) => Reply::error(
                        "ERR the library changed while it was being deleted; try again",
                    ),
                    Err(e) => Reply::error(format!(
                        "CLUSTERDOWN cannot delete the library in etcd: {e}"
                    )),
                }
            }
            "list" => self.function_list(rest),
            "flush" if rest.len() <= 1 => {
                if let Some(mode) = rest.first() {
                    let m = String::from_utf8_lossy(mode).to_ascii_lowercase();
                    if m != "sync" && m != "async" {
                        return Reply::error("ERR FUNCTION FLUSH only supports SYNC|ASYNC option");
                    }
                }
                match self.shared.meta.delete_prefix("functions/").await {
                    Ok(_) => {
                        self.shared
                            .scripts
                            .await_libraries(|l| l.libs.is_empty())
                            .await;
                        Reply::ok()
                    }
                    Err(e) => Reply::error(format!(
                        "CLUSTERDOWN cannot flush the libraries in etcd: {e}"
                    )),
                }
            }
            "kill" if rest.is_empty() => self.kill_scripts().await,
            "dump" if rest.is_empty() => {
                let libs = self.shared.scripts.libraries.borrow().clone();
                Reply::Bulk(Bytes::from(payload::dump(
                    libs.libs.values().map(|l| l.code.as_ref()),
                )))
            }
            "restore" if !rest.is_empty() && rest.len() <= 2 => self.function_restore(rest).await,
            "stats" if rest.is_empty() => {
                let libs = self.shared.scripts.libraries.borrow().clone();
                let functions: usize = libs.libs.values().map(|l| l.info.functions.len()).sum();
                Reply::Map(vec![
                    (Reply::bulk("running_script"), Reply::Nil),
                    (
                        Reply::bulk("engines"),
                        Reply::Map(vec![(
                            Reply::bulk("LUA"),
                            Reply::Map(vec![
                                (
                                    Reply::bulk("libraries_count"),
                                    Reply::Int(libs.libs.len() as i64),
                                ),
                                (Reply::bulk("functions_count"), Reply::Int(functions as i64)),
                            ]),
                        )]),
                    ),
                ])
            }
            "help" if rest.is_empty() => {
                Reply::Array(FUNCTION_HELP.iter().map(|l| Reply::status(*l)).collect())
            }
            _ => sub_error(
                "function",
                &given,
                &[
                    "load", "delete", "list", "flush", "dump", "restore", "kill", "stats", "help",
                ],
            ),
        }
    }

    /// `FUNCTION LOAD [REPLACE] code`: parsed here, stored in etcd under
    /// the library's name (created, or replaced at the revision seen).
    async fn function_load(&mut self, rest: Vec<Bytes>) -> Reply {
        let (replace, code) = match rest.as_slice() {
            [code] => (false, code.clone()),
            [opt, code] if opt.eq_ignore_ascii_case(b"replace") => (true, code.clone()),
            [opt, _] => {
                return Reply::error(format!(
                    "ERR Unknown option given: {}",
                    String::from_utf8_lossy(opt)
                ))
            }
            _ => return Reply::error("ERR wrong number of arguments for 'function|load' command"),
        };
        if code.len() > MAX_STORED_CODE {
            return Reply::error(format!(
                "ERR a library may be at most {MAX_STORED_CODE} bytes"
            ));
        }
        let info = match self.shared.scripts.parse(code.clone()).await {
            Ok(i) => i,
            Err(e) => return Reply::error(e),
        };
        let libs = self.shared.scripts.libraries.borrow().clone();
        let existing = libs.libs.get(&info.name);
        if existing.is_some() && !replace {
            return Reply::error(format!("ERR Library '{}' already exists", info.name));
        }
        if let Some(clash) = clashing_function(&libs.libs, &info) {
            return Reply::error(format!("ERR Function {clash} already exists"));
        }
        let rev = existing.map_or(0, |l| l.revision);
        let name = info.name.clone();
        let sha = sha1_hex(&code);
        match self
            .shared
            .meta
            .swap_record(&format!("functions/{name}"), Some(code.to_vec()), rev)
            .await
        {
            Ok(Some(_)) => {
                self.shared
                    .scripts
                    .await_libraries(|l| l.libs.get(&name).is_some_and(|l| l.sha == sha))
                    .await;
                Reply::bulk(name)
            }
            Ok(None) if rev == 0 => Reply::error(format!("ERR Library '{name}' already exists")),
            Ok(None) => {
                Reply::error("ERR the library changed while it was being replaced; try again")
            }
            Err(e) => Reply::error(format!("CLUSTERDOWN cannot store the library in etcd: {e}")),
        }
    }

    /// `FUNCTION RESTORE payload [FLUSH|APPEND|REPLACE]`: all the payload's
    /// libraries or none, in one etcd transaction.
    async fn function_restore(&mut self, rest: Vec<Bytes>) -> Reply {
        let policy = match rest.get(1) {
            None => "append".to_string(),
            Some(p) => String::from_utf8_lossy(p).to_ascii_lowercase(),
        };
        if !matches!(policy.as_str(), "append" | "replace" | "flush") {
            return Reply::error(
                "ERR Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE.",
            );
        }
        let codes = match payload::restore(&rest[0]) {
            Ok(c) => c,
            Err(e) => return Reply::error(e),
        };
        let libs = self.shared.scripts.libraries.borrow().clone();
        // What the libraries will be: the existing ones (none after FLUSH),
        // with the payload's added or replacing theirs.
        let mut after: std::collections::BTreeMap<String, Library> = if policy == "flush" {
            Default::default()
        } else {
            libs.libs.clone()
        };
        let mut puts = Vec::new();
        for code in codes {
            let code = Bytes::from(code);
            let info = match self.shared.scripts.parse(code.clone()).await {
                Ok(i) => i,
                Err(e) => return Reply::error(e),
            };
            if policy == "append" && after.contains_key(&info.name) {
                return Reply::error(format!("ERR Library {} already exists", info.name));
            }
            if let Some(clash) = clashing_function(&after, &info) {
                return Reply::error(format!("ERR Function {clash} already exists"));
            }
            puts.push((format!("functions/{}", info.name), code.to_vec()));
            after.insert(
                info.name.clone(),
                Library {
                    sha: sha1_hex(&code),
                    info,
                    code,
                    revision: 0,
                },
            );
        }
        let expect: Vec<(String, i64)> = libs
            .libs
            .values()
            .map(|l| (format!("functions/{}", l.info.name), l.revision))
            .collect();
        let clear = (policy == "flush").then_some("functions/");
        match self.shared.meta.swap_records(&expect, clear, puts).await {
            Ok(Some(_)) => {
                let want: Vec<(String, String)> = after
                    .values()
                    .map(|l| (l.info.name.clone(), l.sha.clone()))
                    .collect();
                self.shared
                    .scripts
                    .await_libraries(|l| {
                        l.libs.len() == want.len()
                            && want
                                .iter()
                                .all(|(n, sha)| l.libs.get(n).is_some_and(|x| &x.sha == sha))
                    })
                    .await;
                Reply::ok()
            }
            Ok(None) => Reply::error("ERR the libraries changed during the restore; try again"),
            Err(e) => Reply::error(format!(
                "CLUSTERDOWN cannot store the libraries in etcd: {e}"
            )),
        }
    }

    /// `FUNCTION LIST [LIBRARYNAME pattern] [WITHCODE]`
    fn function_list(&self, rest: Vec<Bytes>) -> Reply {
        let mut pattern: Option<Bytes> = None;
        let mut with_code = false;
        let mut i = 0;
        while i < rest.len() {
            let opt = String::from_utf8_lossy(&rest[i]).to_ascii_lowercase();
            match opt.as_str() {
                "withcode" => with_code = true,
                "libraryname" => {
                    let Some(p) = rest.get(i + 1) else {
                        return Reply::error("ERR library name argument was not given");
                    };
                    pattern = Some(p.clone());
                    i += 1;
                }
                _ => {
                    return Reply::error(format!(
                        "ERR Unknown argument {}",
                        String::from_utf8_lossy(&rest[i])
                    ))
                }
            }
            i += 1;
        }
        let libs = self.shared.scripts.libraries.borrow().clone();
        let list = libs
            .libs
            .values()
            .filter(|l| {
                pattern
                    .as_ref()
                    .is_none_or(|p| crate::glob::glob_match(p, l.info.name.as_bytes()))
            })
            .map(|l| library_reply(l, with_code))
            .collect();
        Reply::Array(list)
    }
}

/// Redis's error for a subcommand of `container` that is unknown, or known
/// and given the wrong number of arguments.
fn sub_error(container: &str, given: &str, known: &[&str]) -> Reply {
    let sub = given.to_ascii_lowercase();
    if known.contains(&sub.as_str()) {
        Reply::error(format!(
            "ERR wrong number of arguments for '{container}|{sub}' command"
        ))
    } else {
        Reply::error(format!(
            "ERR unknown subcommand '{given}'. Try {} HELP.",
            container.to_ascii_uppercase()
        ))
    }
}

/// A function of `new` that another library already has.
fn clashing_function(
    libs: &std::collections::BTreeMap<String, Library>,
    new: &super::scripts::LibraryInfo,
) -> Option<String> {
    new.functions.iter().find_map(|f| {
        libs.values()
            .filter(|l| l.info.name != new.name)
            .any(|l| l.info.functions.iter().any(|g| g.name == f.name))
            .then(|| f.name.clone())
    })
}

/// One library in FUNCTION LIST's shape.
fn library_reply(l: &Library, with_code: bool) -> Reply {
    let functions = l
        .info
        .functions
        .iter()
        .map(|f| {
            Reply::Map(vec![
                (Reply::bulk("name"), Reply::bulk(f.name.clone())),
                (
                    Reply::bulk("description"),
                    f.description.clone().map_or(Reply::Nil, Reply::bulk),
                ),
                (
                    Reply::bulk("flags"),
                    Reply::Set(f.flags.iter().map(|x| Reply::status(x.clone())).collect()),
                ),
            ])
        })
        .collect();
    let mut fields = vec![
        (
            Reply::bulk("library_name"),
            Reply::bulk(l.info.name.clone()),
        ),
        (Reply::bulk("engine"), Reply::bulk("LUA")),
        (Reply::bulk("functions"), Reply::Array(functions)),
    ];
    if with_code {
        fields.push((Reply::bulk("library_code"), Reply::Bulk(l.code.clone())));
    }
    Reply::Map(fields)
}
