//! Pub/Sub on a router: its subscribed connections, its interest on the
//! shards, and the polls that bring messages back.
//!
//! This module owns the router's side of Pub/Sub (the node's side is
//! [`crate::shard::pubsub`]). A channel lives in a table and hashes to a
//! shard of it as a key would; PUBLISH to channel X in table T goes to the
//! leader of X's shard of T, which queues it for every router that said it
//! has subscribers to X (or to a pattern matching X) in T.
//! * A SUBSCRIBE first records the connection here, then sends the router's
//!   whole interest in that shard to its leader
//!   ([`ShardRequest::PubSubInterest`]) before answering, so a message
//!   published after the reply reaches it. A pattern registers with every
//!   shard of the table.
//! * One poller task per (table, shard) the router has interest in
//!   long-polls the leader ([`ShardRequest::PubSubPoll`], 2 s at most) and
//!   hands the messages, in order, to the connections subscribed.
//! * A poll that fails (the leader moved, a node is down) or finds its
//!   registration unknown (the node restarted or expired it) registers
//!   again with whoever leads now: messages published in between are lost
//!   (at most once), the subscribers keep listening. A poll that reports
//!   dropped messages (the node's queue for this router overflowed)
//!   disconnects every connection subscribed through that shard, so none
//!   stays silently deaf.
//! * Each subscribed connection's queue of messages is bounded by
//!   `client-output-buffer-limit pubsub` (hard limit, 0 for none; the soft
//!   limit is read back but not enforced): past it the connection is
//!   closed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::reply::Reply;
use crate::cluster::client::ShardClient;
use crate::cluster::routes::TableRoute;
use crate::meta::descriptor::TableDescriptor;
use crate::shard::command::{OpReply, ShardRequest};
use crate::shard::notify::{is_keyevent_channel, keyspace_channel_key};
use crate::shard::pubsub::{ERR_LOST, KIND_CHANNEL, KIND_SHARD};

/// The shard of `desc` whose leader carries `channel` of `kind`, or `None`
/// when every shard does: a channel hashes as a key would, except the
/// keyspace notification channels, whose messages come from where their
/// keys are. `__keyspace@<db>__:<key>` lives on `<key>`'s shard, and
/// `__keyevent@<db>__:<event>` on every shard (any key may make it).
pub fn channel_shard(desc: &TableDescriptor, kind: u8, channel: &[u8]) -> Option<usize> {
    if kind == KIND_CHANNEL {
        if let Some(key) = keyspace_channel_key(channel) {
            return Some(desc.shard_for_slot(crate::slot::slot(key)));
        }
        if is_keyevent_channel(channel) {
            return None;
        }
    }
    Some(desc.shard_for_slot(crate::slot::slot(channel)))
}

/// The shard PUBLISH sends `channel` to (one of them when every shard
/// carries it).
pub fn publish_shard(desc: &TableDescriptor, kind: u8, channel: &[u8]) -> usize {
    channel_shard(desc, kind, channel)
        .unwrap_or_else(|| desc.shard_for_slot(crate::slot::slot(channel)))
}

/// Redis's default `client-output-buffer-limit pubsub 32mb 8mb 60`.
pub const DEFAULT_LIMIT: (u64, u64, u64) = (32 * 1024 * 1024, 8 * 1024 * 1024, 60);

/// A subscribed connection's end of its messages.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Reply>,
    pending: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

/// The connection's side of its messages.
pub struct Inbox {
    pub rx: mpsc::UnboundedReceiver<Reply>,
    pending: Arc<AtomicUsize>,
    /// Set when the router closes the connection (its queue passed the
    /// limit, or it may have missed messages).
    pub dropped: Arc<AtomicBool>,
}

impl Inbox {
    /// A message was taken off the queue.
    pub fn taken(&self, r: &Reply) {
        self.pending.fetch_sub(r.size_hint(), Ordering::Relaxed);
    }
}

/// A new connection's message queue.
pub fn outbox() -> (Outbox, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    let pending = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    (
        Outbox {
            tx,
            pending: pending.clone(),
            dropped: dropped.clone(),
        },
        Inbox {
            rx,
            pending,
            dropped,
        },
    )
}

impl Outbox {
    fn send(&self, r: Reply, limit: usize) {
        if self.dropped.load(Ordering::Relaxed) {
            return;
        }
        let size = r.size_hint();
        if self.pending.fetch_add(size, Ordering::Relaxed) + size > limit {
            tracing::warn!("closing pub/sub client: over client-output-buffer-limit pubsub");
            self.close();
            return;
        }
        let _ = self.tx.send(r);
    }

    /// Close the connection (an empty message wakes it).
    fn close(&self) {
        self.dropped.store(true, Ordering::Relaxed);
        let _ = self.tx.send(Reply::Many(Vec::new()));
    }
}

/// A connection's subscriptions, each with the table it was made in.
#[derive(Default)]
pub struct SubState {
    pub(super) out: Option<Outbox>,
    /// Taken by the connection loop once.
    pub(super) inbox: Option<Inbox>,
    pub(super) channels: Vec<(String, Bytes)>,
    pub(super) patterns: Vec<(String, Bytes)>,
    pub(super) shard_channels: Vec<(String, Bytes)>,
}

impl SubState {
    /// Channels and patterns (what SUBSCRIBE's count says).
    pub(super) fn count(&self) -> i64 {
        (self.channels.len() + self.patterns.len()) as i64
    }

    /// Whether the connection is in subscribed mode.
    pub fn active(&self) -> bool {
        !self.channels.is_empty() || !self.patterns.is_empty() || !self.shard_channels.is_empty()
    }
}

type Subs = HashMap<u64, Outbox>;

/// A router's interest in one shard: `(kind, channel, clients)` and
/// `(pattern, clients)`.
type Interest = (Vec<(u8, Bytes, u64)>, Vec<(Bytes, u64)>);

/// (table, shard) -> the registration number and its lock.
type Regs = HashMap<(String, usize), Arc<tokio::sync::Mutex<u64>>>;

#[derive(Default)]
struct Inner {
    /// (table, kind, channel) -> subscribed connections.
    channels: HashMap<(String, u8, Bytes), Subs>,
    /// (table, pattern) -> subscribed connections.
    patterns: HashMap<(String, Bytes), Subs>,
    /// (table, shard) with a poller running.
    pollers: HashSet<(String, usize)>,
}

/// The router's Pub/Sub state.
pub struct Hub {
    /// This router's number on the nodes.
    pub router: u64,
    client: Arc<ShardClient>,
    inner: Mutex<Inner>,
    /// (table, shard) -> the registration number, locked while the
    /// interest is sent so updates reach the node in order.
    regs: Mutex<Regs>,
    /// The hard limit of `client-output-buffer-limit pubsub` (bytes).
    pub hard_limit: AtomicUsize,
    /// The soft limit and its seconds, read back by CONFIG GET.
    pub soft_limit: AtomicUsize,
    pub soft_secs: AtomicUsize,
}

impl Hub {
    pub fn new(client: Arc<ShardClient>) -> Arc<Hub> {
        Arc::new(Hub {
            router: rand::random::<u64>() | 1,
            client,
            inner: Mutex::default(),
            regs: Mutex::default(),
            hard_limit: AtomicUsize::new(DEFAULT_LIMIT.0 as usize),
            soft_limit: AtomicUsize::new(DEFAULT_LIMIT.1 as usize),
            soft_secs: AtomicUsize::new(DEFAULT_LIMIT.2 as usize),
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connection `id` subscribes to `channel` of `kind` in `table`.
    pub fn add_channel(&self, table: &str, kind: u8, channel: &Bytes, id: u64, out: &Outbox) {
        self.inner()
            .channels
            .entry((table.to_string(), kind, channel.clone()))
            .or_default()
            .insert(id, out.clone());
    }

    pub fn remove_channel(&self, table: &str, kind: u8, channel: &Bytes, id: u64) {
        let mut inner = self.inner();
        let key = (table.to_string(), kind, channel.clone());
        if let Some(s) = inner.channels.get_mut(&key) {
            s.remove(&id);
            if s.is_empty() {
                inner.channels.remove(&key);
            }
        }
    }

    pub fn add_pattern(&self, table: &str, pattern: &Bytes, id: u64, out: &Outbox) {
        self.inner()
            .patterns
            .entry((table.to_string(), pattern.clone()))
            .or_default()
            .insert(id, out.clone());
    }

    pub fn remove_pattern(&self, table: &str, pattern: &Bytes, id: u64) {
        let mut inner = self.inner();
        let key = (table.to_string(), pattern.clone());
        if let Some(s) = inner.patterns.get_mut(&key) {
            s.remove(&id);
            if s.is_empty() {
                inner.patterns.remove(&key);
            }
        }
    }

    /// The router's interest in `shard` of `table`.
    fn interest(&self, table: &TableRoute, shard: usize) -> Interest {
        let name = &table.desc.name;
        let inner = self.inner();
        let channels = inner
            .channels
            .iter()
            .filter(|((t, k, ch), _)| {
                t == name && channel_shard(&table.desc, *k, ch).is_none_or(|s| s == shard)
            })
            .map(|((_, k, ch), s)| (*k, ch.clone(), s.len() as u64))
            .collect();
        let patterns = inner
            .patterns
            .iter()
            .filter(|((t, _), _)| t == name)
            .map(|((_, p), s)| (p.clone(), s.len() as u64))
            .collect();
        (channels, patterns)
    }

    fn reg_lock(&self, table: &str, shard: usize) -> Arc<tokio::sync::Mutex<u64>> {
        self.regs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((table.to_string(), shard))
            .or_default()
            .clone()
    }

    /// Send the router's interest in `shard` of `table` to its leader, and
    /// start its poller if there is interest and none runs.
    pub async fn sync(
        self: &Arc<Self>,
        table: &Arc<TableRoute>,
        shard: usize,
    ) -> Result<(), String> {
        let lock = self.reg_lock(&table.desc.name, shard);
        let mut reg = lock.lock().await;
        let (channels, patterns) = self.interest(table, shard);
        let empty = channels.is_empty() && patterns.is_empty();
        let req = ShardRequest::PubSubInterest {
            router: self.router,
            channels,
            patterns,
        };
        let r = self.client.execute(table, shard, req).await;
        match r {
            Ok(OpReply::Int(n)) => *reg = n as u64,
            Ok(OpReply::Error(e)) => return Err(e),
            Ok(other) => return Err(format!("unexpected reply {other:?}")),
            Err(e) => return Err(e.to_string()),
        }
        drop(reg);
        if !empty {
            let key = (table.desc.name.clone(), shard);
            if self.inner().pollers.insert(key) {
                let hub = self.clone();
                let name = table.desc.name.clone();
                tokio::spawn(async move { hub.poller(name, shard).await });
            }
        }
        Ok(())
    }

    /// [`Hub::sync`] of every shard of `table` in `shards`, errors logged
    /// (the poller registers again until it succeeds).
    pub async fn sync_all(self: &Arc<Self>, table: &Arc<TableRoute>, shards: &[usize]) {
        for s in shards {
            if let Err(e) = self.sync(table, *s).await {
                tracing::debug!(table = %table.desc.name, shard = s, "pub/sub interest not sent: {e}");
                self.ensure_poller(&table.desc.name, *s);
            }
        }
    }

    fn ensure_poller(self: &Arc<Self>, table: &str, shard: usize) {
        if self.inner().pollers.insert((table.to_string(), shard)) {
            let hub = self.clone();
            let name = table.to_string();
            tokio::spawn(async move { hub.poller(name, shard).await });
        }
    }

    /// Whether the router still has interest in `shard` of `table`.
    fn interested(&self, table: &TableRoute, shard: usize) -> bool {
        let (c, p) = self.interest(table, shard);
        !c.is_empty() || !p.is_empty()
    }

    /// Poll `shard` of `table` while the router has interest in it.
    async fn poller(self: Arc<Self>, table: String, shard: usize) {
        let mut after = 0u64;
        let mut mine = 0u64;
        let mut failing = false;
        loop {
            let route = self.client.routes().table(&table).cloned();
            let Some(route) = route else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            if !self.interested(&route, shard) {
                let lock = self.reg_lock(&table, shard);
                let _held = lock.lock().await;
                // Checked again under the lock: a SUBSCRIBE that comes now
                // finds no poller and starts one.
                if !self.interested(&route, shard) {
                    self.inner().pollers.remove(&(table.clone(), shard));
                    return;
                }
            }
            let reg = *self.reg_lock(&table, shard).lock().await;
            if reg == 0 || failing {
                if let Err(e) = self.sync_only(&route, shard).await {
                    tracing::debug!(%table, shard, "pub/sub registration failed: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                failing = false;
                continue;
            }
            if reg != mine {
                mine = reg;
                after = 0;
            }
            let req = ShardRequest::PubSubPoll {
                router: self.router,
                reg,
                after,
                wait_ms: crate::shard::pubsub::MAX_POLL_MS,
            };
            let got = self.client.execute(&route, shard, req).await;
            match got {
                Ok(OpReply::Array(items)) => {
                    let mut it = items.into_iter();
                    let (Some(OpReply::Int(r)), Some(OpReply::Int(lost))) = (it.next(), it.next())
                    else {
                        failing = true;
                        continue;
                    };
                    if r as u64 != mine {
                        continue;
                    }
                    if lost != 0 {
                        self.disconnect_shard(&route, shard);
                    }
                    for m in it {
                        let OpReply::Array(f) = m else { continue };
                        if let [OpReply::Int(kind), OpReply::Int(seq), OpReply::Bulk(ch), OpReply::Bulk(msg)] =
                            &f[..]
                        {
                            after = after.max(*seq as u64);
                            self.deliver(&table, *kind as u8, ch, msg);
                        }
                    }
                }
                Ok(OpReply::Error(e)) if e == ERR_LOST => {
                    // The node forgot us: register again (messages published
                    // meanwhile are lost, at most once).
                    failing = true;
                }
                Ok(_) | Err(_) => {
                    failing = true;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Register without starting a poller (the poller's own use).
    async fn sync_only(&self, table: &Arc<TableRoute>, shard: usize) -> Result<(), String> {
        let lock = self.reg_lock(&table.desc.name, shard);
        let mut reg = lock.lock().await;
        let (channels, patterns) = self.interest(table, shard);
        let req = ShardRequest::PubSubInterest {
            router: self.router,
            channels,
            patterns,
        };
        match self.client.execute(table, shard, req).await {
            Ok(OpReply::Int(n)) => {
                *reg = n as u64;
                Ok(())
            }
            Ok(OpReply::Error(e)) => Err(e),
            Ok(other) => Err(format!("unexpected reply {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Hand a message from a shard to the connections subscribed here.
    fn deliver(&self, table: &str, kind: u8, channel: &Bytes, msg: &Bytes) {
        let limit = self.hard_limit.load(Ordering::Relaxed);
        let limit = if limit == 0 { usize::MAX } else { limit };
        let inner = self.inner();
        let key = (table.to_string(), kind, channel.clone());
        let name = if kind == KIND_SHARD {
            "smessage"
        } else {
            "message"
        };
        if let Some(subs) = inner.channels.get(&key) {
            for out in subs.values() {
                out.send(
                    Reply::Push(vec![
                        Reply::bulk(name),
                        Reply::Bulk(channel.clone()),
                        Reply::Bulk(msg.clone()),
                    ]),
                    limit,
                );
            }
        }
        if kind == KIND_CHANNEL {
            for ((t, p), subs) in &inner.patterns {
                if t != table || !crate::glob::glob_match(p, channel) {
                    continue;
                }
                for out in subs.values() {
                    out.send(
                        Reply::Push(vec![
                            Reply::bulk("pmessage"),
                            Reply::Bulk(p.clone()),
                            Reply::Bulk(channel.clone()),
                            Reply::Bulk(msg.clone()),
                        ]),
                        limit,
                    );
                }
            }
        }
    }

    /// Messages of `shard` were lost: close every connection that listens
    /// through it.
    fn disconnect_shard(&self, table: &TableRoute, shard: usize) {
        let name = &table.desc.name;
        let inner = self.inner();
        let mut n = 0;
        for ((t, k, ch), subs) in &inner.channels {
            if t == name && channel_shard(&table.desc, *k, ch).is_none_or(|s| s == shard) {
                subs.values().for_each(Outbox::close);
                n += subs.len();
            }
        }
        for ((t, _), subs) in &inner.patterns {
            if t == name {
                subs.values().for_each(Outbox::close);
                n += subs.len();
            }
        }
        tracing::warn!(table = %name, shard, subscriptions = n,
            "pub/sub messages were dropped for this router: closing the subscribed connections");
    }
}
