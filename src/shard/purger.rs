//! Background expiry on the groups a node leads: expired keys already read
//! as missing everywhere; this reclaims their space, through the log (a
//! [`WriteOp::PurgeExpired`] entry stamped with the proposer's time, which
//! the state machine re-checks key by key). And the collector of dead
//! collection elements on every replica ([`spawn_element_collector`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::command::{LogCmd, WriteCmd, WriteOp};
use super::engine::{data_key, group_range, Cf};
use super::host::Host;
use super::value::Corrupt;

/// Expired keys looked at per group per pass of the purger.
const PURGE_SCAN: usize = 1000;

/// Background expiry: on every group this node leads, look through the next
/// `PURGE_SCAN` stored keys (resuming where the last pass stopped,
/// wrapping at the end) and propose a [`WriteOp::PurgeExpired`] for those
/// found expired. Expired keys already read as missing everywhere; this only
/// reclaims their space. The entry carries the proposer's time and the state
/// machine re-checks each key, so a key rewritten meanwhile survives.
pub fn spawn_expiry_purger(host: Arc<Host>, period: Duration) {
    tokio::spawn(async move {
        let mut states: HashMap<u64, PurgeState> = HashMap::new();
        loop {
            tokio::time::sleep(period).await;
            for replica in host.replicas() {
                if !replica.driver.leads() {
                    continue;
                }
                let applied = replica.driver.applied();
                let gid = replica.record.group_id;
                let now = crate::clock::now_ms();
                let st = states.entry(gid).or_default();
                if st.quiet(applied, now) {
                    continue;
                }
                if st.cursor.is_empty() {
                    st.cycle_start_applied = applied;
                    st.next_expiry = u64::MAX;
                }
                let after = st.cursor.clone();
                let found = host
                    .engine
                    .read(move |db| {
                        let (start, end) = group_range(gid);
                        let from = if after.is_empty() {
                            start
                        } else {
                            let mut k = data_key(gid, &after);
                            k.push(0);
                            k
                        };
                        let mut page = PurgePage {
                            next_expiry: u64::MAX,
                            ..Default::default()
                        };
                        for row in db.iter(Cf::Data, &from, &end)?.take(PURGE_SCAN) {
                            let (k, v) = row?;
                            page.examined += 1;
                            // A corrupt value is reported (logged) and left alone.
                            if let Ok(s) = Corrupt::check(gid, &k[8..], &v) {
                                if !s.live_at(now) {
                                    page.expired.push(bytes::Bytes::copy_from_slice(&k[8..]));
                                } else if s.expire_at_ms != 0 {
                                    page.next_expiry = page.next_expiry.min(s.expire_at_ms);
                                }
                            }
                            page.last = Some(k[8..].to_vec());
                        }
                        Ok(page)
                    })
                    .await;
                let Ok(page) = found else { continue };
                st.next_expiry = st.next_expiry.min(page.next_expiry);
                if page.examined < PURGE_SCAN {
                    // A whole pass over the group: nothing else can expire
                    // before `next_expiry` unless something is written.
                    st.cursor.clear();
                    st.quiet_since = Some((st.cycle_start_applied, st.next_expiry));
                } else {
                    st.cursor = page.last.unwrap_or_default();
                    st.quiet_since = None;
                }
                if page.expired.is_empty() {
                    continue;
                }
                st.quiet_since = None;
                let n = page.expired.len();
                let cmd = WriteCmd {
                    now_ms: now,
                    op: WriteOp::PurgeExpired { keys: page.expired },
                };
                // A sleeping group wakes for it, as for a client's write.
                if let Some(raft) = replica.openraft() {
                    host.hibernation.touch(gid, &replica.sleep, raft);
                }
                let target = replica.target();
                match super::proposer::propose(target, LogCmd::Write(cmd)).await {
                    Ok(_) => tracing::debug!(group = gid, keys = n, "purged expired keys"),
                    Err(e) => tracing::debug!(group = gid, "expiry purge failed: {e}"),
                }
            }
        }
    });
}

/// The purger's memory of one group, so idle groups cost nothing.
#[derive(Default)]
struct PurgeState {
    /// Last key examined by the pass in progress (empty: start over).
    cursor: Vec<u8>,
    cycle_start_applied: u64,
    /// Earliest expiry of a live key seen in the pass in progress.
    next_expiry: u64,
    /// After a complete pass: the applied index it started at, and the
    /// earliest expiry it saw.
    quiet_since: Option<(u64, u64)>,
}

impl PurgeState {
    /// Nothing was written since a complete pass and nothing it saw has
    /// expired yet: no need to look again.
    fn quiet(&self, applied: u64, now_ms: u64) -> bool {
        matches!(self.quiet_since, Some((a, next)) if a == applied && now_ms < next)
    }
}

#[derive(Default)]
struct PurgePage {
    expired: Vec<bytes::Bytes>,
    last: Option<Vec<u8>>,
    examined: usize,
    next_expiry: u64,
}

/// (key, generation) runs of element rows looked at per group per round.
const COLLECT_RUNS: usize = 256;

/// Background removal of dead collection elements (rows of a generation no
/// key record names: a DEL, overwrite, expiry or flush made them
/// invisible at once) on every replica of this node, `COLLECT_RUNS` runs
/// per group per round, through [`super::store::StateMachine::collect_garbage`].
/// A group is looked at again only once it has applied something since its
/// last complete pass.
pub fn spawn_element_collector(host: Arc<Host>, period: Duration) {
    tokio::spawn(async move {
        // gid -> (cursor of the pass in progress, applied index at its
        // start; or the index a complete pass saw).
        let mut states: HashMap<u64, (Option<Vec<u8>>, u64)> = HashMap::new();
        loop {
            tokio::time::sleep(period).await;
            let replicas = host.replicas();
            states.retain(|gid, _| replicas.iter().any(|r| r.record.group_id == *gid));
            for replica in replicas {
                let gid = replica.record.group_id;
                let applied = replica.driver.applied();
                let (cursor, seen) = states.entry(gid).or_insert((None, u64::MAX));
                if cursor.is_none() {
                    if *seen == applied {
                        continue;
                    }
                    *seen = applied;
                }
                match replica
                    .sm
                    .collect_garbage(cursor.take(), COLLECT_RUNS)
                    .await
                {
                    Ok((next, n)) => {
                        if n > 0 {
                            super::status::COLLECTIONS_COLLECTED
                                .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                            tracing::debug!(
                                group = gid,
                                runs = n,
                                "removed dead collection elements"
                            );
                        }
                        *cursor = next;
                    }
                    Err(e) => tracing::debug!(group = gid, "element collection failed: {e}"),
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purger_skips_groups_with_nothing_to_expire() {
        let mut st = PurgeState::default();
        assert!(!st.quiet(10, 1_000), "never scanned: scan");
        st.quiet_since = Some((10, 5_000));
        assert!(st.quiet(10, 1_000), "no write since the pass, nothing due");
        assert!(!st.quiet(11, 1_000), "something was written since");
        assert!(!st.quiet(10, 5_000), "a key seen in the pass is due now");
        st.quiet_since = Some((10, u64::MAX));
        assert!(st.quiet(10, u64::MAX - 1), "no key with an expiry at all");
    }
}
