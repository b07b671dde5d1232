//! Transactions the router runs on a client's behalf that read first and
//! then commit watching what they read (RENAME/COPY across shards, SMOVE and
//! LMOVE across shards, the cross-shard stores and pops): the commit, the
//! watches, what an attempt came to, and the retry pacing after a conflict.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;

use super::compile::{shard_work, WatchedKey};
use super::errors::cluster_err;
use super::reply::Reply;
use super::session::Session;
use crate::cluster::plan::{Merge, Part, Plan};
use crate::cluster::routes::TableRoute;
use crate::cluster::txn::{self, Outcome};
use crate::shard::command::OpReply;

/// Longest pause between two attempts of a move that conflicted.
const MAX_PAUSE: Duration = Duration::from_millis(200);

/// The attempts of a transaction that may conflict (a cross-shard move or
/// transfer): movers of the same keys would collide again in step, so each
/// retry waits a random share of a pause that starts at what an attempt
/// took and doubles, up to [`MAX_PAUSE`], until the request timeout.
pub(super) struct Retry {
    deadline: Instant,
    pause: Duration,
    attempt: Instant,
}

impl Retry {
    pub(super) fn new(timeout: Duration) -> Retry {
        let now = Instant::now();
        Retry {
            deadline: now + timeout,
            pause: Duration::ZERO,
            attempt: now,
        }
    }

    /// An attempt starts.
    pub(super) fn start(&mut self) {
        self.attempt = Instant::now();
    }

    /// Wait before the next attempt; `false` once the timeout has passed.
    pub(super) async fn again(&mut self) -> bool {
        if Instant::now() >= self.deadline {
            return false;
        }
        if self.pause.is_zero() {
            self.pause = self.attempt.elapsed().max(Duration::from_millis(1));
        }
        let wait = rand::thread_rng().gen_range(Duration::ZERO..=self.pause);
        tokio::time::sleep(wait).await;
        self.pause = (self.pause * 2).min(MAX_PAUSE);
        true
    }
}

/// A move or transfer that kept conflicting until the request timeout.
pub(super) const ERR_KEPT_CHANGING: &str =
    "TRYAGAIN the keys kept changing or stayed locked; nothing was moved";

/// What one attempt came to.
pub(super) enum Attempt {
    Done(Reply),
    /// The keys changed or were locked: read again.
    Again,
}

impl Session {
    /// Commit `parts` in one transaction watching `watches`: the reply
    /// `done` makes of the parts' replies, or [`Attempt::Again`] on a
    /// conflict.
    pub(super) async fn commit(
        &self,
        table: &Arc<TableRoute>,
        parts: Vec<Part>,
        watches: &[WatchedKey],
        done: impl FnOnce(Vec<OpReply>) -> Reply,
    ) -> Attempt {
        let writes = Plan::new(table.clone(), parts, Merge::Single);
        let n = writes.parts.len();
        let work = shard_work(std::slice::from_ref(&writes), watches);
        let stats = &self.shared.txn_stats;
        match txn::execute(&self.shared.client, &self.shared.meta, work, n, stats).await {
            Ok(Outcome::Committed(replies)) => Attempt::Done(done(replies)),
            Ok(Outcome::Conflict) => Attempt::Again,
            Err(e) => Attempt::Done(cluster_err(e)),
        }
    }
}

/// Watches on `keys` at the versions `version` gives.
pub(super) fn watches_at(
    table: &Arc<TableRoute>,
    keys: &[Bytes],
    version: impl Fn(&Bytes) -> u64,
) -> Vec<WatchedKey> {
    keys.iter()
        .map(|k| WatchedKey {
            table: table.clone(),
            key: k.clone(),
            version: version(k),
        })
        .collect()
}
