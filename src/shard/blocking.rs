//! Clients blocked on keys (BLPOP, BZPOPMIN, ...), one registry per group
//! replica. A blocked router asks a replica to wait until one of its keys
//! holds elements ([`super::command::ShardRequest::WaitFilled`]); the state
//! machine calls [`Waiters::filled`] with the keys an apply left holding a
//! list or sorted set, and each such key wakes **one** waiter: the one
//! blocked longest (by the time the client started blocking, which the
//! router sends with every wait, so a wait renewed after a timeout keeps its
//! place). Redis serves blocked clients in that FIFO order too.
//!
//! The waiter only learns that it may try: it pops with an ordinary write
//! (a Raft entry), so an element is popped only by the log, never lost by a
//! wake-up that nobody used. When the woken router pops the last element the
//! key is no longer filled and nobody else is woken; when elements remain,
//! that pop's own apply wakes the next waiter. A waiter that went away
//! (its request dropped) is skipped.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::oneshot;

/// Most waits a replica holds at once; more are refused (each costs a
/// little memory until it times out).
pub const MAX_WAITERS: usize = 100_000;

struct Waiter {
    id: u64,
    /// The blocked command's number, as the router named it (0: none).
    client: u64,
    since_ms: u64,
    keys: Vec<Bytes>,
    wake: oneshot::Sender<()>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    waiters: HashMap<u64, Waiter>,
    /// key -> ids of the waiters on it.
    by_key: HashMap<Bytes, Vec<u64>>,
    /// client -> ids of its waiters (clients that named themselves).
    by_client: HashMap<u64, Vec<u64>>,
}

/// The waiters of one group replica.
#[derive(Default)]
pub struct Waiters {
    inner: Mutex<Inner>,
}

/// A registered wait: dropping it (the request ended, or went away)
/// forgets it.
pub struct Wait<'a> {
    waiters: &'a Waiters,
    id: u64,
    pub woken: oneshot::Receiver<()>,
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        self.waiters.forget(self.id);
    }
}

impl Waiters {
    /// Wait on `keys` for a client blocked since `since_ms` (the blocked
    /// command `client`, or 0); `None` when the replica holds too many
    /// waits already.
    pub fn register(&self, keys: &[Bytes], since_ms: u64, client: u64) -> Option<Wait<'_>> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.waiters.len() >= MAX_WAITERS {
            return None;
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let (tx, rx) = oneshot::channel();
        for k in keys {
            inner.by_key.entry(k.clone()).or_default().push(id);
        }
        if client != 0 {
            inner.by_client.entry(client).or_default().push(id);
        }
        inner.waiters.insert(
            id,
            Waiter {
                id,
                client,
                since_ms,
                keys: keys.to_vec(),
                wake: tx,
            },
        );
        Some(Wait {
            waiters: self,
            id,
            woken: rx,
        })
    }

    /// The blocked command `client` stopped waiting: its waits end (their
    /// requests answer nil) and no wake-up goes to them.
    pub fn cancel(&self, client: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let ids = inner.by_client.remove(&client).unwrap_or_default();
        for id in ids {
            remove(&mut inner, id);
        }
    }

    fn forget(&self, id: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        remove(&mut inner, id);
    }

    /// Keys that now hold elements: wake the longest-blocked live waiter of
    /// each.
    pub fn filled(&self, keys: &[Bytes]) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.waiters.is_empty() {
            return;
        }
        for k in keys {
            loop {
                let first = inner.by_key.get(k).and_then(|ids| {
                    ids.iter()
                        .filter_map(|id| inner.waiters.get(id))
                        .min_by_key(|w| (w.since_ms, w.id))
                        .map(|w| w.id)
                });
                let Some(id) = first else { break };
                let Some(w) = remove(&mut inner, id) else {
                    break;
                };
                if w.wake.send(()).is_ok() {
                    break;
                }
            }
        }
    }

    /// Waits held (for tests and INFO).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiters
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn remove(inner: &mut Inner, id: u64) -> Option<Waiter> {
    let w = inner.waiters.remove(&id)?;
    for k in &w.keys {
        if let Some(ids) = inner.by_key.get_mut(k) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                inner.by_key.remove(k);
            }
        }
    }
    if let Some(ids) = inner.by_client.get_mut(&w.client) {
        ids.retain(|i| *i != id);
        if ids.is_empty() {
            inner.by_client.remove(&w.client);
        }
    }
    Some(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn one_waiter_per_fill_longest_blocked_first() {
        let w = Waiters::default();
        let mut late = w.register(&[b("k")], 300, 0).unwrap();
        let mut early = w.register(&[b("k"), b("j")], 100, 0).unwrap();
        let mut middle = w.register(&[b("k")], 200, 0).unwrap();
        w.filled(&[b("k")]);
        assert!(early.woken.try_recv().is_ok());
        assert!(middle.woken.try_recv().is_err());
        assert!(late.woken.try_recv().is_err());
        // The woken waiter left every key it waited on.
        assert_eq!(w.len(), 2);
        w.filled(&[b("j")]);
        assert_eq!(w.len(), 2);
        w.filled(&[b("k")]);
        assert!(middle.woken.try_recv().is_ok());
        assert!(late.woken.try_recv().is_err());
    }

    #[test]
    fn a_waiter_that_went_away_is_skipped_and_forgotten() {
        let w = Waiters::default();
        let gone = w.register(&[b("k")], 1, 0).unwrap();
        let mut next = w.register(&[b("k")], 2, 0).unwrap();
        drop(gone);
        assert_eq!(w.len(), 1);
        w.filled(&[b("k")]);
        assert!(next.woken.try_recv().is_ok());
        drop(next);
        assert!(w.is_empty());
        assert!(w.inner.lock().unwrap().by_key.is_empty());
    }

    #[test]
    fn a_cancelled_client_gets_no_wake_up() {
        let w = Waiters::default();
        // Client 7 blocked first, on two keys of this group.
        let mut cancelled = w.register(&[b("k"), b("j")], 1, 7).unwrap();
        let mut other = w.register(&[b("k")], 2, 9).unwrap();
        w.cancel(7);
        assert!(matches!(
            cancelled.woken.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        w.filled(&[b("k")]);
        assert!(other.woken.try_recv().is_ok());
        drop((cancelled, other));
        w.cancel(9);
        let inner = w.inner.lock().unwrap();
        assert!(inner.waiters.is_empty() && inner.by_key.is_empty() && inner.by_client.is_empty());
    }
}
