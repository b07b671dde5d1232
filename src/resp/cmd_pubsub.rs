//! The Pub/Sub commands: SUBSCRIBE UNSUBSCRIBE PSUBSCRIBE PUNSUBSCRIBE
//! SSUBSCRIBE SUNSUBSCRIBE PUBLISH SPUBLISH and PUBSUB, with Redis 7's
//! replies (push frames in RESP3). The subscriptions of a connection are
//! kept here; the router-wide state and the shards' side are in
//! [`super::pubsub`].

use std::sync::Arc;

use bytes::Bytes;

use super::args::Args;
use super::errors::cluster_err;
use super::pubsub::outbox;
use super::reply::Reply;
use super::session::Session;
use crate::cluster::routes::TableRoute;
use crate::shard::command::{OpReply, ShardRequest};
use crate::shard::pubsub::{KIND_CHANNEL, KIND_SHARD};

/// Redis Cluster's answer to shard channels in different slots
/// (`clusterRedirectClient`).
const ERR_CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

#[derive(Clone, Copy, PartialEq)]
enum What {
    Channel,
    Pattern,
    Shard,
}

impl What {
    fn names(self) -> (&'static str, &'static str) {
        match self {
            What::Channel => ("subscribe", "unsubscribe"),
            What::Pattern => ("psubscribe", "punsubscribe"),
            What::Shard => ("ssubscribe", "sunsubscribe"),
        }
    }
}

/// The shards that carry `channel` of `kind` (see
/// [`super::pubsub::channel_shard`]).
fn shards_of(table: &TableRoute, kind: u8, channel: &[u8]) -> Vec<usize> {
    match super::pubsub::channel_shard(&table.desc, kind, channel) {
        Some(s) => vec![s],
        None => (0..table.desc.shards.len()).collect(),
    }
}

impl Session {
    /// The commands RESP2 allows a subscribed connection; `None` when
    /// `name` may run now.
    pub(super) fn subscribed_refusal(&self, name: &str) -> Option<Reply> {
        if self.protocol != super::reply::Protocol::Resp2 || !self.subs.active() {
            return None;
        }
        match name {
            "subscribe" | "unsubscribe" | "psubscribe" | "punsubscribe" | "ssubscribe"
            | "sunsubscribe" | "ping" | "quit" | "reset" => None,
            _ => Some(Reply::error(format!(
                "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
            ))),
        }
    }

    /// PING in RESP2 subscribed mode: `["pong", message or ""]`.
    pub(super) fn subscribed_ping(&self, arg: Option<Bytes>) -> Option<Reply> {
        if self.protocol != super::reply::Protocol::Resp2 || !self.subs.active() {
            return None;
        }
        Some(Reply::Array(vec![
            Reply::bulk("pong"),
            Reply::Bulk(arg.unwrap_or_default()),
        ]))
    }

    fn list(&mut self, what: What) -> &mut Vec<(String, Bytes)> {
        match what {
            What::Channel => &mut self.subs.channels,
            What::Pattern => &mut self.subs.patterns,
            What::Shard => &mut self.subs.shard_channels,
        }
    }

    fn what_count(&self, what: What) -> i64 {
        match what {
            What::Shard => self.subs.shard_channels.len() as i64,
            _ => self.subs.count(),
        }
    }

    /// The ACL check of the channels (or patterns) a command names: the
    /// NOPERM reply, logged, for the first one the user may not use.
    fn channels_denied(&self, names: &[Bytes], pattern: bool) -> Option<Reply> {
        let refused = names.iter().find(|n| !self.user.channel_ok(n, pattern))?;
        let d = super::acl::Denied::Channel(String::from_utf8_lossy(refused).into_owned());
        self.log_denied(&d, false);
        Some(d.reply())
    }

    async fn subscribe_to(&mut self, args: &mut Args, what: What) -> Reply {
        let table = match self.table_named(&self.table) {
            Ok(t) => t,
            Err(e) => return cluster_err(e),
        };
        let names: Vec<Bytes> = std::iter::from_fn(|| args.next_bytes().ok()).collect();
        if let Some(denied) = self.channels_denied(&names, what == What::Pattern) {
            return denied;
        }
        // Redis Cluster's rule: a command's shard channels share a slot.
        if what == What::Shard {
            let first = names.first().map(|n| crate::slot::slot(n));
            if names.iter().any(|n| Some(crate::slot::slot(n)) != first) {
                return Reply::error(ERR_CROSSSLOT);
            }
        }
        let out = self
            .subs
            .out
            .get_or_insert_with(|| {
                let (o, i) = outbox();
                self.subs.inbox = Some(i);
                o
            })
            .clone();
        let hub = self.shared.pubsub.clone();
        let mut shards: Vec<usize> = Vec::new();
        let mut replies = Vec::new();
        for name in names {
            let entry = (table.desc.name.clone(), name.clone());
            if !self.list(what).contains(&entry) {
                self.list(what).push(entry);
                match what {
                    What::Channel => {
                        hub.add_channel(&table.desc.name, KIND_CHANNEL, &name, self.id, &out)
                    }
                    What::Shard => {
                        hub.add_channel(&table.desc.name, KIND_SHARD, &name, self.id, &out)
                    }
                    What::Pattern => hub.add_pattern(&table.desc.name, &name, self.id, &out),
                }
                let kind = if what == What::Shard {
                    KIND_SHARD
                } else {
                    KIND_CHANNEL
                };
                if what == What::Pattern {
                    shards = (0..table.desc.shards.len()).collect();
                } else {
                    for s in shards_of(&table, kind, &name) {
                        if !shards.contains(&s) {
                            shards.push(s);
                        }
                    }
                }
            }
            replies.push(Reply::Push(vec![
                Reply::bulk(what.names().0),
                Reply::Bulk(name),
                Reply::Int(self.what_count(what)),
            ]));
        }
        hub.sync_all(&table, &shards).await;
        Reply::Many(replies)
    }

    async fn unsubscribe_from(&mut self, args: &mut Args, what: What) -> Reply {
        let mut names: Vec<Bytes> = std::iter::from_fn(|| args.next_bytes().ok()).collect();
        if names.is_empty() {
            names = self.list(what).iter().map(|(_, n)| n.clone()).collect();
        }
        if names.is_empty() {
            return Reply::Push(vec![
                Reply::bulk(what.names().1),
                Reply::Nil,
                Reply::Int(self.what_count(what)),
            ]);
        }
        let hub = self.shared.pubsub.clone();
        let mut touched: Vec<(String, Bytes)> = Vec::new();
        let mut replies = Vec::new();
        for name in names {
            let gone: Vec<(String, Bytes)> = {
                let list = self.list(what);
                let gone = list.iter().filter(|(_, n)| *n == name).cloned().collect();
                list.retain(|(_, n)| *n != name);
                gone
            };
            for (t, n) in gone {
                match what {
                    What::Channel => hub.remove_channel(&t, KIND_CHANNEL, &n, self.id),
                    What::Shard => hub.remove_channel(&t, KIND_SHARD, &n, self.id),
                    What::Pattern => hub.remove_pattern(&t, &n, self.id),
                }
                touched.push((t, n));
            }
            replies.push(Reply::Push(vec![
                Reply::bulk(what.names().1),
                Reply::Bulk(name),
                Reply::Int(self.what_count(what)),
            ]));
        }
        let kind = match what {
            What::Channel => Some(KIND_CHANNEL),
            What::Shard => Some(KIND_SHARD),
            What::Pattern => None,
        };
        sync_touched(&hub, &self.shared.client, touched, kind).await;
        Reply::Many(replies)
    }

    pub(super) async fn subscribe(&mut self, args: &mut Args) -> Reply {
        self.subscribe_to(args, What::Channel).await
    }
    pub(super) async fn psubscribe(&mut self, args: &mut Args) -> Reply {
        self.subscribe_to(args, What::Pattern).await
    }
    pub(super) async fn ssubscribe(&mut self, args: &mut Args) -> Reply {
        self.subscribe_to(args, What::Shard).await
    }
    pub(super) async fn unsubscribe(&mut self, args: &mut Args) -> Reply {
        self.unsubscribe_from(args, What::Channel).await
    }
    pub(super) async fn punsubscribe(&mut self, args: &mut Args) -> Reply {
        self.unsubscribe_from(args, What::Pattern).await
    }
    pub(super) async fn sunsubscribe(&mut self, args: &mut Args) -> Reply {
        self.unsubscribe_from(args, What::Shard).await
    }

    /// PUBLISH (`kind` [`KIND_CHANNEL`]) or SPUBLISH ([`KIND_SHARD`]); also
    /// run by EXEC in its place for one queued inside MULTI.
    pub(super) async fn publish_kind(&mut self, args: &mut Args, kind: u8) -> Reply {
        let table = match self.table_named(&self.table) {
            Ok(t) => t,
            Err(e) => return cluster_err(e),
        };
        let channel = args.next_bytes().unwrap_or_default();
        let message = args.next_bytes().unwrap_or_default();
        if let Some(denied) = self.channels_denied(std::slice::from_ref(&channel), false) {
            return denied;
        }
        let shard = super::pubsub::publish_shard(&table.desc, kind, &channel);
        let req = ShardRequest::Publish {
            kind,
            channel,
            message,
        };
        match self.shared.client.execute(&table, shard, req).await {
            Ok(OpReply::Int(n)) => Reply::Int(n),
            Ok(OpReply::Error(e)) => Reply::Error(e),
            Ok(other) => Reply::error(format!("ERR unexpected reply from the shard: {other:?}")),
            Err(e) => cluster_err(e),
        }
    }

    /// `PUBLISH channel message`
    pub(super) async fn publish(&mut self, args: &mut Args) -> Reply {
        self.publish_kind(args, KIND_CHANNEL).await
    }

    /// `SPUBLISH shardchannel message`
    pub(super) async fn spublish(&mut self, args: &mut Args) -> Reply {
        self.publish_kind(args, KIND_SHARD).await
    }

    /// `PUBSUB CHANNELS|NUMSUB|NUMPAT|SHARDCHANNELS|SHARDNUMSUB|HELP`, over
    /// the shards of the connection's table.
    pub(super) async fn pubsub(&mut self, args: &mut Args) -> Reply {
        let given = args.next_bytes().unwrap_or_default();
        let given = String::from_utf8_lossy(&given).into_owned();
        let sub = given.to_ascii_lowercase();
        let rest: Vec<Bytes> = std::iter::from_fn(|| args.next_bytes().ok()).collect();
        let table = match self.table_named(&self.table) {
            Ok(t) => t,
            Err(e) => return cluster_err(e),
        };
        let kind = |s: &str| {
            if s.starts_with("shard") {
                KIND_SHARD
            } else {
                KIND_CHANNEL
            }
        };
        match (sub.as_str(), rest.len()) {
            ("channels" | "shardchannels", 0 | 1) => {
                let mut all = Vec::new();
                for shard in 0..table.desc.shards.len() {
                    let req = ShardRequest::PubSubChannels {
                        kind: kind(&sub),
                        pattern: rest.first().cloned(),
                    };
                    match self.shared.client.execute(&table, shard, req).await {
                        Ok(OpReply::Array(items)) => {
                            for i in items {
                                if let OpReply::Array(pair) = i {
                                    // A key-event channel is on every shard.
                                    if let Some(OpReply::Bulk(c)) = pair.into_iter().next() {
                                        if !all.contains(&Reply::Bulk(c.clone())) {
                                            all.push(Reply::Bulk(c));
                                        }
                                    }
                                }
                            }
                        }
                        Ok(OpReply::Error(e)) => return Reply::Error(e),
                        Ok(_) => {}
                        Err(e) => return cluster_err(e),
                    }
                }
                Reply::Array(all)
            }
            ("numsub" | "shardnumsub", _) => {
                let mut out = Vec::new();
                for ch in rest {
                    let shard = super::pubsub::publish_shard(&table.desc, kind(&sub), &ch);
                    let req = ShardRequest::PubSubChannels {
                        kind: kind(&sub),
                        pattern: Some(escape_glob(&ch)),
                    };
                    let n = match self.shared.client.execute(&table, shard, req).await {
                        Ok(OpReply::Array(items)) => items
                            .into_iter()
                            .filter_map(|i| match i {
                                OpReply::Array(p) => match &p[..] {
                                    [OpReply::Bulk(c), OpReply::Int(n)] if *c == ch => Some(*n),
                                    _ => None,
                                },
                                _ => None,
                            })
                            .sum(),
                        Ok(OpReply::Error(e)) => return Reply::Error(e),
                        Ok(_) => 0,
                        Err(e) => return cluster_err(e),
                    };
                    out.push(Reply::Bulk(ch));
                    out.push(Reply::Int(n));
                }
                // Redis answers a flat array in RESP3 too.
                Reply::Array(out)
            }
            ("numpat", 0) => {
                let req = ShardRequest::PubSubChannels {
                    kind: 2,
                    pattern: None,
                };
                match self.shared.client.execute(&table, 0, req).await {
                    Ok(OpReply::Array(items)) => Reply::Int(items.len() as i64),
                    Ok(OpReply::Error(e)) => Reply::Error(e),
                    Ok(_) => Reply::Int(0),
                    Err(e) => cluster_err(e),
                }
            }
            ("help", 0) => Reply::Array(
                [
                    "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                    "CHANNELS [<pattern>]",
                    "    Return the currently active channels matching a <pattern> (default: '*').",
                    "NUMPAT",
                    "    Return number of subscriptions to patterns.",
                    "NUMSUB [<channel> ...]",
                    "    Return the number of subscribers for the specified channels, excluding",
                    "    pattern subscriptions(default: no channels).",
                    "SHARDCHANNELS [<pattern>]",
                    "    Return the currently active shard level channels matching a <pattern> (default: '*').",
                    "SHARDNUMSUB [<shardchannel> ...]",
                    "    Return the number of subscribers for the specified shard level channel(s)",
                    "HELP",
                    "    Print this help.",
                ]
                .iter()
                .map(|l| Reply::Status(l.to_string()))
                .collect(),
            ),
            // Fixed arity: Redis's arity error; variable arity: its
            // subcommand error.
            ("numpat" | "help", _) => Reply::error(format!(
                "ERR wrong number of arguments for 'pubsub|{sub}' command"
            )),
            ("channels" | "shardchannels", _) => Reply::error(format!(
                "ERR unknown subcommand or wrong number of arguments for '{given}'. Try PUBSUB HELP."
            )),
            _ => Reply::error(format!(
                "ERR unknown subcommand '{given}'. Try PUBSUB HELP."
            )),
        }
    }

    /// Leave every subscription (RESET, or the connection closed).
    pub(super) fn leave_pubsub(&mut self) {
        let state = std::mem::take(&mut self.subs);
        let hub = self.shared.pubsub.clone();
        let id = self.id;
        let mut touched = Vec::new();
        for (t, c) in &state.channels {
            hub.remove_channel(t, KIND_CHANNEL, c, id);
            touched.push((t.clone(), c.clone(), Some(KIND_CHANNEL)));
        }
        for (t, c) in &state.shard_channels {
            hub.remove_channel(t, KIND_SHARD, c, id);
            touched.push((t.clone(), c.clone(), Some(KIND_SHARD)));
        }
        for (t, p) in &state.patterns {
            hub.remove_pattern(t, p, id);
            touched.push((t.clone(), p.clone(), None));
        }
        if touched.is_empty() {
            return;
        }
        let client = self.shared.client.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                for (t, c, kind) in touched {
                    sync_touched(&hub, &client, vec![(t, c)], kind).await;
                }
            });
        }
    }
}

/// A channel name as a glob that matches only itself.
fn escape_glob(ch: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(ch.len());
    for &c in ch {
        if matches!(c, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(c);
    }
    Bytes::from(out)
}

/// Send the interest of the shards that carry the `touched` channels of
/// `kind` (`None`: patterns, on every shard of their tables).
async fn sync_touched(
    hub: &Arc<super::pubsub::Hub>,
    client: &crate::cluster::client::ShardClient,
    touched: Vec<(String, Bytes)>,
    kind: Option<u8>,
) {
    let view = client.routes();
    let mut by_table: Vec<(Arc<TableRoute>, Vec<usize>)> = Vec::new();
    for (t, name) in touched {
        let Some(route) = view.table(&t).cloned() else {
            continue;
        };
        let shards: Vec<usize> = match kind {
            None => (0..route.desc.shards.len()).collect(),
            Some(kind) => shards_of(&route, kind, &name),
        };
        match by_table.iter_mut().find(|(r, _)| r.desc.name == t) {
            Some((_, v)) => {
                for s in shards {
                    if !v.contains(&s) {
                        v.push(s);
                    }
                }
            }
            None => by_table.push((route, shards)),
        }
    }
    for (route, shards) in by_table {
        hub.sync_all(&route, &shards).await;
    }
}
