//! What a replica served: the requests routers sent it that it answered
//! (not those it turned away as not the leader or not hosted here, and not
//! blocked clients' waits, whose time is waiting) and a histogram of their
//! time on this node, from arrival to reply (a write's Raft commit
//! included). Kept per replica ([`Served`] in `host::Replica`), reported in
//! the node's status ([`ServedCounts`] in `status::GroupStatus`), read by
//! the router's console, which makes rates and p99s from the differences
//! between two polls.
//!
//! Recording costs a clock read and two relaxed atomic adds per request.
//! The histogram has [`BUCKETS`] fixed buckets, four per power of two of
//! microseconds (at most 25 % wide) up to about 67 s; the status carries
//! only the buckets that counted something.
//!
//! A node also reports when it read its counters ([`CountedAt`]: its own
//! monotonic clock since it started), so that the console divides each
//! node's counts by that node's interval between two readings, not by the
//! interval between its own two asks: a node that answers one poll late
//! under load has counted over a longer time than the console waited.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Values under 4 µs exactly, then 4 sub-buckets per power of two up to
/// 2^26 µs (longer counts in the last).
const SUB: usize = 4;
const MAX_POW: usize = 26;
/// Number of buckets.
pub const BUCKETS: usize = SUB + (MAX_POW - 2) * SUB;

/// The bucket of `us` microseconds.
pub fn bucket(us: u64) -> usize {
    if us < SUB as u64 {
        return us as usize;
    }
    let us = us.min((1u64 << MAX_POW) - 1);
    let pow = 63 - us.leading_zeros() as usize; // >= 2
    let sub = ((us >> (pow - 2)) & (SUB as u64 - 1)) as usize;
    SUB + (pow - 2) * SUB + sub
}

/// The largest value (µs) bucket `i` holds.
pub fn bucket_high(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let pow = (i - SUB) / SUB + 2;
    let sub = ((i - SUB) % SUB) as u64;
    let step = 1u64 << (pow - 2);
    (1u64 << pow) + (sub + 1) * step - 1
}

/// One replica's counters.
#[derive(Debug)]
pub struct Served {
    requests: AtomicU64,
    hist: Box<[AtomicU64]>,
}

/// When a node read its replicas' counters: microseconds since the node
/// started, and its boot id (`hibernate::Hibernation`'s, which peers
/// already compare to tell a restart). A different `boot` between two
/// readings means the node restarted, and its counters with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountedAt {
    pub boot: u64,
    pub us: u64,
}

impl CountedAt {
    /// A reading `uptime` after the start of the node with boot id `boot`.
    pub fn new(boot: u64, uptime: Duration) -> CountedAt {
        CountedAt {
            boot,
            us: u64::try_from(uptime.as_micros()).unwrap_or(u64::MAX),
        }
    }

    /// Seconds the counters read at `self` cover beyond those read at
    /// `before`: the time between the two reads on the node's own clock,
    /// or, when the node restarted in between, the time since it started
    /// (its counters started over then). `None` when either reading carries
    /// no time (a node of an older version) or the time ran backwards.
    pub fn secs_since(&self, before: &CountedAt) -> Option<f64> {
        if self.boot == 0 || before.boot == 0 {
            return None;
        }
        let us = if self.boot == before.boot {
            self.us.checked_sub(before.us)?
        } else {
            self.us
        };
        Some(us as f64 / 1e6)
    }
}

impl Default for Served {
    fn default() -> Self {
        Served {
            requests: AtomicU64::new(0),
            hist: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Served {
    /// Count one request answered in `took`.
    pub fn record(&self, took: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.hist[bucket(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn counts(&self) -> ServedCounts {
        ServedCounts {
            requests: self.requests.load(Ordering::Relaxed),
            hist: self
                .hist
                .iter()
                .enumerate()
                .filter_map(|(i, n)| {
                    let n = n.load(Ordering::Relaxed);
                    (n > 0).then_some((i as u16, n))
                })
                .collect(),
        }
    }
}

/// A replica's counters since it started, as its node reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedCounts {
    /// Requests answered.
    pub requests: u64,
    /// `(bucket, count)` of the time histogram, only buckets counted in,
    /// ascending ([`bucket_high`] gives a bucket's top in µs).
    pub hist: Vec<(u16, u64)>,
}

/// Counts summed over replicas, or the difference of two readings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    pub requests: u64,
    pub hist: Vec<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            requests: 0,
            hist: vec![0; BUCKETS],
        }
    }
}

impl Tally {
    /// Add what `now` counted since `before` (a replica's two readings).
    /// A counter that went down was restarted (the node or the replica):
    /// what it counted since is all there is.
    pub fn add_delta(&mut self, now: &ServedCounts, before: &ServedCounts) {
        let restarted = now.requests < before.requests;
        self.requests += if restarted {
            now.requests
        } else {
            now.requests - before.requests
        };
        for (i, n) in &now.hist {
            let Some(slot) = self.hist.get_mut(*i as usize) else {
                continue;
            };
            let old = if restarted {
                0
            } else {
                before
                    .hist
                    .iter()
                    .find(|(j, _)| j == i)
                    .map_or(0, |(_, m)| *m)
            };
            *slot += n.saturating_sub(old);
        }
    }

    /// Add `other`'s counts to these.
    pub fn add(&mut self, other: &Tally) {
        self.requests += other.requests;
        for (mine, theirs) in self.hist.iter_mut().zip(&other.hist) {
            *mine += theirs;
        }
    }

    /// The value (µs) at percentile `p` (0-100]: the top of the bucket
    /// holding it; `None` when nothing was counted.
    pub fn percentile_us(&self, p: f64) -> Option<u64> {
        let total: u64 = self.hist.iter().sum();
        if total == 0 {
            return None;
        }
        let want = ((p / 100.0 * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, n) in self.hist.iter().enumerate() {
            seen += n;
            if seen >= want {
                return Some(bucket_high(i));
            }
        }
        Some(bucket_high(BUCKETS - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut last = 0;
        for us in [0u64, 1, 3, 4, 5, 7, 8, 9, 15, 16, 1000, 65_535, 1 << 25] {
            let b = bucket(us);
            assert!(b >= last, "{us}");
            assert!(bucket_high(b) >= us, "{us} above bucket {b}");
            if b > 0 {
                assert!(bucket_high(b - 1) < us, "{us} fits bucket {}", b - 1);
            }
            last = b;
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        // Buckets are at most 25 % wide.
        for i in SUB + 1..BUCKETS {
            let (lo, hi) = (bucket_high(i - 1) + 1, bucket_high(i));
            assert!((hi - lo) as f64 <= 0.25 * lo as f64 + 1.0, "bucket {i}");
        }
    }

    #[test]
    fn deltas_make_rates_and_percentiles() {
        let s = Served::default();
        for _ in 0..90 {
            s.record(Duration::from_micros(100));
        }
        let before = s.counts();
        for _ in 0..98 {
            s.record(Duration::from_micros(500));
        }
        for _ in 0..2 {
            s.record(Duration::from_millis(40));
        }
        let mut t = Tally::default();
        t.add_delta(&s.counts(), &before);
        assert_eq!(t.requests, 100);
        // p50 is about 500 µs, p99 about 40 ms (the top of their buckets).
        let p50 = t.percentile_us(50.0).unwrap();
        assert!((500..=625).contains(&p50), "{p50}");
        let p99 = t.percentile_us(99.0).unwrap();
        assert!((40_000..=50_000).contains(&p99), "{p99}");
        // A restarted replica: its counts since restart.
        let fresh = Served::default();
        fresh.record(Duration::from_micros(10));
        let mut t = Tally::default();
        t.add_delta(&fresh.counts(), &s.counts());
        assert_eq!(t.requests, 1);
        assert_eq!(t.hist.iter().sum::<u64>(), 1);
        assert_eq!(Tally::default().percentile_us(99.0), None);
    }

    #[test]
    fn a_reading_covers_the_nodes_own_interval_or_its_time_since_a_restart() {
        let at = |boot, us| CountedAt { boot, us };
        assert_eq!(at(7, 3_500_000).secs_since(&at(7, 1_000_000)), Some(2.5));
        // Restarted in between: its counters cover its time since then.
        assert_eq!(at(9, 400_000).secs_since(&at(7, 1_000_000)), Some(0.4));
        // Time that runs backwards, or a node that does not say: unknown.
        assert_eq!(at(7, 1).secs_since(&at(7, 2)), None);
        assert_eq!(at(7, 1).secs_since(&CountedAt::default()), None);
        assert_eq!(CountedAt::default().secs_since(&at(7, 1)), None);
        assert_eq!(
            CountedAt::new(7, Duration::from_millis(1500)),
            at(7, 1_500_000)
        );
    }
}
