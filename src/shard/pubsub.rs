//! Pub/Sub on a node: which routers listen to which channels of a shard,
//! and the messages queued for each of them.
//!
//! This module owns the node's side of Pub/Sub. Nothing here is a Raft
//! entry or reaches etcd: it is the memory of the shard's leader only.
//! * A router registers its interest in a shard
//!   ([`super::command::ShardRequest::PubSubInterest`]): the channels its
//!   clients subscribed to that hash to the shard and all its patterns, each
//!   with how many of its clients subscribed. Each registration replaces the
//!   router's previous one; an empty one forgets the router.
//! * PUBLISH ([`Registry::publish`]) looks the channel up in an index and
//!   matches the patterns of the routers that registered any; a channel no
//!   router registered costs one hash lookup (plus one glob per registered
//!   pattern). The message is queued once per interested router, and the
//!   reply counts the receiving clients, from what the routers reported.
//! * Each router long-polls its queue
//!   ([`super::command::ShardRequest::PubSubPoll`]), acknowledging what it
//!   received; the queue is in publish order.
//! * A queue is bounded ([`MAX_QUEUED_BYTES`]): past it its messages are
//!   dropped and the next poll says so, and the router disconnects the
//!   clients that may have missed them. A registration is known by a number
//!   (`reg`) that changes whenever the node forgets the router (restart,
//!   expiry, leadership lost): a poll with an unknown `reg` is answered
//!   [`ERR_LOST`], and the router registers again.
//! * A router that stops polling for [`EXPIRE_AFTER`] is forgotten.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use super::command::OpReply;

/// A message for plain subscribers (PUBLISH / SUBSCRIBE / PSUBSCRIBE).
pub const KIND_CHANNEL: u8 = 0;
/// A message for shard channel subscribers (SPUBLISH / SSUBSCRIBE).
pub const KIND_SHARD: u8 = 1;

/// Bytes of messages a router may have waiting on one shard.
pub const MAX_QUEUED_BYTES: usize = 32 * 1024 * 1024;
/// A router that has not polled or registered for this long is forgotten.
pub const EXPIRE_AFTER: Duration = Duration::from_secs(10);
/// Longest a poll waits for a message.
pub const MAX_POLL_MS: u64 = 2_000;
/// The error a poll gets when its registration is not known here.
pub const ERR_LOST: &str = "PUBSUBLOST registration not known on this node";

/// One router's registration on one group.
struct Listener {
    reg: u64,
    channels: Vec<(u8, Bytes, u64)>,
    patterns: Vec<(Bytes, u64)>,
    /// Messages not yet acknowledged, with their sequence numbers.
    queue: VecDeque<(u64, Bytes, Bytes, u8)>,
    queued_bytes: usize,
    next_seq: u64,
    /// Messages were dropped since the last poll.
    overflowed: bool,
    wake: Arc<Notify>,
    seen: Instant,
}

#[derive(Default)]
struct Group {
    listeners: HashMap<u64, Listener>,
    /// (kind, channel) -> (router, subscribed clients).
    index: HashMap<(u8, Bytes), Vec<(u64, u64)>>,
    /// Routers with at least one pattern.
    with_patterns: Vec<u64>,
}

impl Group {
    fn unindex(&mut self, router: u64) {
        let Some(l) = self.listeners.get(&router) else {
            return;
        };
        for (kind, ch, _) in &l.channels {
            let key = (*kind, ch.clone());
            if let Some(v) = self.index.get_mut(&key) {
                v.retain(|(r, _)| *r != router);
                if v.is_empty() {
                    self.index.remove(&key);
                }
            }
        }
        self.with_patterns.retain(|r| *r != router);
    }

    fn expire(&mut self, now: Instant) {
        let old: Vec<u64> = self
            .listeners
            .iter()
            .filter(|(_, l)| now.duration_since(l.seen) > EXPIRE_AFTER)
            .map(|(r, _)| *r)
            .collect();
        for r in old {
            self.unindex(r);
            self.listeners.remove(&r);
        }
    }
}

/// The Pub/Sub state of every group on this node.
#[derive(Default)]
pub struct Registry {
    groups: Mutex<HashMap<u64, Group>>,
    next_reg: std::sync::atomic::AtomicU64,
}

/// What a poll found.
pub enum Polled {
    /// Messages (maybe none) and whether some were dropped before them.
    Messages(OpReply),
    /// Nothing yet: wait on this and poll again.
    Wait(Arc<Notify>),
}

impl Registry {
    pub fn new() -> Registry {
        // Registration numbers differ across restarts of the node.
        let start = rand::random::<u64>() >> 16;
        Registry {
            groups: Mutex::default(),
            next_reg: std::sync::atomic::AtomicU64::new(start.max(1)),
        }
    }

    /// Replace `router`'s interest in group `gid`; returns its
    /// registration number (kept while the router stays registered).
    pub fn register(
        &self,
        gid: u64,
        router: u64,
        channels: Vec<(u8, Bytes, u64)>,
        patterns: Vec<(Bytes, u64)>,
    ) -> u64 {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let g = groups.entry(gid).or_default();
        let now = Instant::now();
        g.expire(now);
        g.unindex(router);
        if channels.is_empty() && patterns.is_empty() {
            g.listeners.remove(&router);
            if g.listeners.is_empty() {
                groups.remove(&gid);
            }
            return 0;
        }
        for (kind, ch, n) in &channels {
            g.index
                .entry((*kind, ch.clone()))
                .or_default()
                .push((router, *n));
        }
        if !patterns.is_empty() {
            g.with_patterns.push(router);
        }
        let l = g.listeners.entry(router).or_insert_with(|| Listener {
            reg: self
                .next_reg
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            channels: Vec::new(),
            patterns: Vec::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            next_seq: 1,
            overflowed: false,
            wake: Arc::new(Notify::new()),
            seen: now,
        });
        l.channels = channels;
        l.patterns = patterns;
        l.seen = now;
        l.reg
    }

    /// Queue a message for every router listening to `channel` in `gid`;
    /// returns how many clients receive it.
    pub fn publish(&self, gid: u64, kind: u8, channel: &Bytes, message: &Bytes) -> i64 {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let Some(g) = groups.get_mut(&gid) else {
            return 0;
        };
        let mut to: Vec<(u64, u64)> = g
            .index
            .get(&(kind, channel.clone()))
            .cloned()
            .unwrap_or_default();
        if kind == KIND_CHANNEL {
            for r in &g.with_patterns {
                let Some(l) = g.listeners.get(r) else {
                    continue;
                };
                let n: u64 = l
                    .patterns
                    .iter()
                    .filter(|(p, _)| crate::glob::glob_match(p, channel))
                    .map(|(_, n)| *n)
                    .sum();
                if n > 0 {
                    to.push((*r, n));
                }
            }
        }
        if to.is_empty() {
            return 0;
        }
        let mut receivers = 0u64;
        let mut done: Vec<u64> = Vec::with_capacity(to.len());
        for (router, n) in to {
            receivers = receivers.saturating_add(n);
            if done.contains(&router) {
                continue;
            }
            done.push(router);
            let Some(l) = g.listeners.get_mut(&router) else {
                continue;
            };
            let seq = l.next_seq;
            l.next_seq += 1;
            let size = channel.len() + message.len() + 32;
            if l.queued_bytes + size > MAX_QUEUED_BYTES {
                l.queue.clear();
                l.queued_bytes = 0;
                l.overflowed = true;
            } else {
                l.queue
                    .push_back((seq, channel.clone(), message.clone(), kind));
                l.queued_bytes += size;
            }
            l.wake.notify_one();
        }
        receivers as i64
    }

    /// `router`'s messages after `after` on `gid` (those up to `after` are
    /// acknowledged and dropped): `[reg, lost (0/1), [kind, seq, channel,
    /// message]...]`, or [`Polled::Wait`] when there are none yet.
    pub fn poll(&self, gid: u64, router: u64, reg: u64, after: u64) -> Result<Polled, String> {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let l = groups
            .get_mut(&gid)
            .and_then(|g| g.listeners.get_mut(&router))
            .filter(|l| l.reg == reg)
            .ok_or_else(|| ERR_LOST.to_string())?;
        l.seen = Instant::now();
        while l.queue.front().is_some_and(|(seq, ..)| *seq <= after) {
            if let Some((_, ch, m, _)) = l.queue.pop_front() {
                l.queued_bytes -= ch.len() + m.len() + 32;
            }
        }
        if l.queue.is_empty() && !l.overflowed {
            return Ok(Polled::Wait(l.wake.clone()));
        }
        let lost = std::mem::take(&mut l.overflowed);
        let mut out = vec![OpReply::Int(reg as i64), OpReply::Int(i64::from(lost))];
        for (seq, ch, m, kind) in &l.queue {
            out.push(OpReply::Array(vec![
                OpReply::Int(i64::from(*kind)),
                OpReply::Int(*seq as i64),
                OpReply::Bulk(ch.clone()),
                OpReply::Bulk(m.clone()),
            ]));
        }
        Ok(Polled::Messages(OpReply::Array(out)))
    }

    /// Whether some router listens to `gid` here (only ever on its leader).
    pub fn has_group(&self, gid: u64) -> bool {
        let groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        groups.contains_key(&gid)
    }

    /// Forget every router of `gid` (this replica stopped leading it).
    pub fn drop_group(&self, gid: u64) {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = groups.remove(&gid) {
            for l in g.listeners.values() {
                l.wake.notify_one();
            }
        }
    }

    /// PUBSUB's views of `gid`: the channels of `kind` with subscribers
    /// (matching `pattern` when given), each with its subscriber count.
    pub fn channels(&self, gid: u64, kind: u8, pattern: Option<&[u8]>) -> Vec<(Bytes, u64)> {
        let groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let Some(g) = groups.get(&gid) else {
            return Vec::new();
        };
        g.index
            .iter()
            .filter(|((k, ch), _)| {
                *k == kind && pattern.is_none_or(|p| crate::glob::glob_match(p, ch))
            })
            .map(|((_, ch), v)| (ch.clone(), v.iter().map(|(_, n)| *n).sum()))
            .collect()
    }

    /// The distinct patterns registered on `gid`.
    pub fn patterns(&self, gid: u64) -> Vec<Bytes> {
        let groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let Some(g) = groups.get(&gid) else {
            return Vec::new();
        };
        let mut out: Vec<Bytes> = g
            .listeners
            .values()
            .flat_map(|l| l.patterns.iter().map(|(p, _)| p.clone()))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn messages(r: &Registry, router: u64, reg: u64, after: u64) -> Vec<OpReply> {
        match r.poll(1, router, reg, after).unwrap() {
            Polled::Messages(OpReply::Array(v)) => v,
            Polled::Messages(_) => panic!("not an array"),
            Polled::Wait(_) => Vec::new(),
        }
    }

    #[test]
    fn publish_reaches_registered_routers_only_and_counts_clients() {
        let r = Registry::new();
        assert_eq!(r.publish(1, KIND_CHANNEL, &b("news"), &b("x")), 0);
        let reg = r.register(1, 7, vec![(KIND_CHANNEL, b("news"), 2)], vec![(b("n*"), 1)]);
        let other = r.register(1, 8, vec![(KIND_SHARD, b("news"), 5)], vec![]);
        assert_eq!(r.publish(1, KIND_CHANNEL, &b("news"), &b("a")), 3);
        assert_eq!(r.publish(1, KIND_CHANNEL, &b("nope"), &b("b")), 1);
        assert_eq!(r.publish(1, KIND_CHANNEL, &b("other"), &b("c")), 0);
        assert_eq!(r.publish(1, KIND_SHARD, &b("news"), &b("d")), 5);
        let got = messages(&r, 7, reg, 0);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[1], OpReply::Int(0));
        assert_eq!(messages(&r, 8, other, 0).len(), 3);
        // Acknowledged messages are not sent again.
        assert!(messages(&r, 7, reg, 2).is_empty());
        // Forgotten: an empty registration.
        r.register(1, 7, vec![], vec![]);
        assert!(r.poll(1, 7, reg, 0).is_err());
        assert_eq!(r.publish(1, KIND_CHANNEL, &b("news"), &b("a")), 0);
    }

    #[test]
    fn an_overflowing_queue_is_reported_lost() {
        let r = Registry::new();
        let reg = r.register(1, 7, vec![(KIND_CHANNEL, b("c"), 1)], vec![]);
        let big = Bytes::from(vec![0u8; 1024 * 1024]);
        for _ in 0..40 {
            r.publish(1, KIND_CHANNEL, &b("c"), &big);
        }
        let got = messages(&r, 7, reg, 0);
        assert_eq!(got[1], OpReply::Int(1));
        assert!(got.len() < 2 + 32);
    }
}
