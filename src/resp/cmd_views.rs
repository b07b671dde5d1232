//! The router's introspection commands over [`super::views`]: SLOWLOG,
//! LATENCY, MONITOR, and the accounting of every command (`account`,
//! `refused`), which needs the command table (`views` itself does not, so
//! the session can hold it).

use bytes::Bytes;

use super::acl::AclCommands;
use super::args::Args;
use super::commands::COMMANDS;
use super::monitor::repr;
use super::reply::Reply;
use super::session::Session;
use super::spec::{flag, CommandSpec};
use super::views::{help, latency_doctor, latency_history, latency_latest, Outcome};

/// The row of `spec` in the command table.
pub fn row_of(spec: &'static CommandSpec) -> usize {
    let base = COMMANDS.as_ptr() as usize;
    (spec as *const CommandSpec as usize - base) / std::mem::size_of::<CommandSpec>()
}

/// Every full name the stats count under, by id (for `Views::new`): the
/// command table's rows, then the subcommands of container rows
/// (`config|get`), as Redis 7's `cmdstat_config|get`.
pub fn command_names() -> Vec<&'static str> {
    AclCommands::get()
        .list
        .iter()
        .map(|c| c.fullname.as_str())
        .collect()
}

/// The id a call counts under: its subcommand's for a container row.
fn stat_id(spec: &'static CommandSpec, parts: &[Bytes]) -> usize {
    AclCommands::get().id_of_call(row_of(spec), parts)
}

impl Session {
    /// Count a command that ran for `nanos` with `reply`: its stats, the
    /// error stats, the slow log and the latency monitor. Blocking commands
    /// stay out of the last two (their time is mostly waiting).
    pub(super) fn account(
        &self,
        spec: &'static CommandSpec,
        parts: &[Bytes],
        nanos: u64,
        reply: &Reply,
    ) {
        let views = &self.shared.views;
        let outcome = match reply {
            Reply::Error(e) => {
                views.stats.error(self.id, e);
                Outcome::Failed
            }
            _ => Outcome::Ok,
        };
        let id = stat_id(spec, parts);
        views.stats.record(self.id, id, nanos, outcome);
        views.tables.record(self.db, id, outcome);
        if spec.has(flag::BLOCKING) {
            return;
        }
        let micros = nanos / 1000;
        if !spec.has(flag::SKIP_SLOWLOG) && views.slowlog.wants(micros) {
            let peer = self.shared.clients.addr(self.id);
            views
                .slowlog
                .push(&redacted(spec, parts), micros, peer, self.name.clone());
        }
        let event = if spec.has(flag::FAST) {
            "fast-command"
        } else {
            "command"
        };
        views.latency.sample(event, micros / 1000);
    }

    /// Count a request refused before it ran (unknown command, arity,
    /// authentication).
    pub(super) fn refused(&self, args: &Args, reply: &Reply) {
        let stats = &self.shared.views.stats;
        if let Reply::Error(e) = reply {
            stats.error(self.id, e);
        }
        if let Some(spec) = super::commands::lookup(args.name()) {
            stats.reject(self.id, stat_id(spec, args.all()));
        }
    }

    /// `SLOWLOG GET [count] | LEN | RESET | HELP`.
    pub(super) fn slowlog(&mut self, args: &mut Args) -> Reply {
        let given = args.next_string().unwrap_or_default();
        let sub = given.to_ascii_lowercase();
        let log = &self.shared.views.slowlog;
        match (sub.as_str(), args.remaining()) {
            ("get", 0) => log.get(Some(10)),
            ("get", 1) => match args.next_i64() {
                Ok(-1) => log.get(None),
                Ok(n) if n >= 0 => log.get(Some(n as usize)),
                _ => Reply::error("ERR count should be greater than or equal to -1"),
            },
            ("len", 0) => Reply::Int(log.len() as i64),
            ("reset", 0) => {
                log.reset();
                Reply::ok()
            }
            ("help", 0) => help(
                "SLOWLOG",
                &[
                    "GET [<count>]",
                    "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
                    "    Entries are made of:",
                    "    id, timestamp, time in microseconds, arguments array, client IP and port,",
                    "    client name",
                    "LEN",
                    "    Return the length of the slowlog.",
                    "RESET",
                    "    Reset the slowlog.",
                ],
            ),
            ("get" | "len" | "reset" | "help", _) => Reply::error(format!(
                "ERR wrong number of arguments for 'slowlog|{sub}' command"
            )),
            _ => Reply::error(format!(
                "ERR unknown subcommand '{given}'. Try SLOWLOG HELP."
            )),
        }
    }

    /// `LATENCY LATEST | HISTORY event | RESET [event ...] | HISTOGRAM
    /// [command ...] | DOCTOR | HELP`.
    pub(super) async fn latency(&mut self, args: &mut Args) -> Reply {
        let given = args.next_string().unwrap_or_default();
        let sub = given.to_ascii_lowercase();
        let views = &self.shared.views;
        let rest: Vec<String> = args
            .rest()
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        // The nodes' events, asked of every live node, for the
        // subcommands that show or reset events.
        let events = if matches!(sub.as_str(), "latest" | "history" | "reset" | "doctor") {
            let shared = &self.shared;
            let view = shared.client.routes();
            let asks = view
                .live
                .iter()
                .map(|n| shared.client.node_status(*n, vec![u64::MAX]));
            let nodes: Vec<_> = futures::future::join_all(asks)
                .await
                .into_iter()
                .filter_map(Result::ok)
                .map(|s| s.latency)
                .collect();
            views.latency.events(&nodes)
        } else {
            Default::default()
        };
        match (sub.as_str(), rest.len()) {
            ("latest", 0) => latency_latest(&events),
            ("history", 1) => latency_history(&events, &rest[0]),
            ("reset", _) => Reply::Int(views.latency.reset(&rest, &events)),
            ("histogram", _) => {
                let wanted: Vec<String> = rest.iter().map(|r| r.to_ascii_lowercase()).collect();
                views.stats.histogram_reply(&wanted)
            }
            ("doctor", 0) => Reply::Verbatim(latency_doctor(
                &events,
                views.latency.threshold_ms.load(std::sync::atomic::Ordering::Relaxed),
            )),
            ("help", 0) => help(
                "LATENCY",
                &[
                    "DOCTOR",
                    "    Return a human readable latency analysis report.",
                    "HISTORY <event>",
                    "    Return time-latency samples for the <event> class.",
                    "LATEST",
                    "    Return the latest latency samples for all events.",
                    "RESET [<event> ...]",
                    "    Reset latency data of one or more <event> classes.",
                    "    (default: reset all data for all event classes)",
                    "HISTOGRAM [COMMAND ...]",
                    "    Return a cumulative distribution of latencies in the format of a histogram for the specified command names.",
                    "    If no commands are specified then all histograms are replied.",
                ],
            ),
            ("latest" | "history" | "doctor" | "help", _) => Reply::error(format!(
                "ERR wrong number of arguments for 'latency|{sub}' command"
            )),
            _ => Reply::error(format!(
                "ERR unknown subcommand '{given}'. Try LATENCY HELP."
            )),
        }
    }

    /// MONITOR: from the end of this pipeline step on, the connection
    /// streams the commands the router receives (see [`super::monitor`]).
    pub(super) fn monitor(&mut self, _args: &mut Args) -> Reply {
        self.monitor = true;
        Reply::ok()
    }
}

/// ACL SETUSER's arguments as SLOWLOG keeps them: all but the first two
/// `(redacted)` (they may hold passwords), as Redis 7 does.
fn redacted(spec: &CommandSpec, parts: &[Bytes]) -> Vec<Bytes> {
    let setuser = spec.name == "acl"
        && parts
            .get(1)
            .is_some_and(|s| s.eq_ignore_ascii_case(b"setuser"));
    parts
        .iter()
        .enumerate()
        .map(|(j, a)| {
            if setuser && j >= 2 {
                Bytes::from_static(b"(redacted)")
            } else {
                a.clone()
            }
        })
        .collect()
}

/// The line of a request, or `None` for one monitors do not show.
pub fn monitor_line(db: u32, peer: &str, parts: &[Bytes]) -> Option<Bytes> {
    let name = String::from_utf8_lossy(parts.first()?).to_ascii_lowercase();
    let spec = super::commands::lookup(&name)?;
    if spec.has(flag::ADMIN) {
        return None;
    }
    // Nor an admin subcommand (ACL SETUSER, which may carry passwords).
    if spec.subs.is_some() {
        let table = super::acl::AclCommands::get();
        let id = table.id_of_call(super::commands::row_index(spec), parts);
        if table.list[id].cats & super::spec::acl::ADMIN != 0 {
            return None;
        }
    }
    // AUTH: every argument; HELLO: the two after AUTH (as Redis 7 redacts).
    let hello_auth = (spec.name == "hello")
        .then(|| parts.iter().position(|a| a.eq_ignore_ascii_case(b"auth")))
        .flatten();
    let redact = |j: usize| {
        j > 0 && (spec.name == "auth" || hello_auth.is_some_and(|at| j == at + 1 || j == at + 2))
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut out = format!(
        "+{}.{:06} [{db} {peer}] ",
        now.as_secs(),
        now.subsec_micros()
    )
    .into_bytes();
    for (j, a) in parts.iter().enumerate() {
        if j > 0 {
            out.push(b' ');
        }
        if redact(j) {
            out.extend_from_slice(b"\"(redacted)\"");
        } else {
            repr(a, &mut out);
        }
    }
    out.extend_from_slice(b"\r\n");
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_redis_lines() {
        let parts = [
            Bytes::from("SET"),
            Bytes::from("k"),
            Bytes::from("a\"b\\\n\x01"),
        ];
        let line = monitor_line(3, "127.0.0.1:5000", &parts).unwrap();
        let s = String::from_utf8(line.to_vec()).unwrap();
        let (stamp, rest) = s.split_once(' ').unwrap();
        assert!(stamp.starts_with('+'));
        let (secs, micros) = stamp[1..].split_once('.').unwrap();
        assert!(secs.parse::<u64>().unwrap() > 1_600_000_000);
        assert_eq!(micros.len(), 6);
        assert_eq!(
            rest,
            "[3 127.0.0.1:5000] \"SET\" \"k\" \"a\\\"b\\\\\\n\\x01\"\r\n"
        );
        let auth = monitor_line(0, "p", &[Bytes::from("auth"), Bytes::from("secret")]).unwrap();
        assert!(auth.ends_with(b"\"auth\" \"(redacted)\"\r\n"));
        let hello = [
            &b"HELLO"[..],
            b"3",
            b"AUTH",
            b"default",
            b"pw",
            b"SETNAME",
            b"n",
        ]
        .map(Bytes::from_static);
        let hello = monitor_line(0, "p", &hello).unwrap();
        assert!(
            hello.ends_with(
                b"\"HELLO\" \"3\" \"AUTH\" \"(redacted)\" \"(redacted)\" \"SETNAME\" \"n\"\r\n"
            ),
            "{hello:?}"
        );
        assert!(monitor_line(0, "p", &[Bytes::from("config"), Bytes::from("get")]).is_none());
        // ACL SETUSER may carry passwords: never shown, redacted in SLOWLOG.
        let setuser = [&b"ACL"[..], b"SETUSER", b"u", b">secret"].map(Bytes::from_static);
        assert!(monitor_line(0, "p", &setuser).is_none());
        let acl = super::super::commands::lookup("acl").unwrap();
        let kept = redacted(acl, &setuser);
        assert_eq!(&kept[..2], &setuser[..2]);
        assert!(kept[2..].iter().all(|a| a == "(redacted)"));
        let whoami = [&b"ACL"[..], b"WHOAMI"].map(Bytes::from_static);
        assert!(monitor_line(0, "p", &whoami).is_some());
        assert!(monitor_line(0, "p", &[Bytes::from("nosuchcommand")]).is_none());
    }
}
