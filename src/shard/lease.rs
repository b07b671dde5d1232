//! The leader lease of one group: whether its leader may answer a
//! linearizable read from its own state machine, with no network round.
//!
//! [`Lease`] owns the evidence. The group's network client ([`super::network`])
//! records, for each AppendEntries (heartbeats included) that a peer accepted
//! under this node's leader vote, the time the request was **sent**; the
//! services ([`super::service`]) record every vote request before openraft
//! sees it. [`Lease::holds`] turns that evidence into a yes or no; the
//! caller (`Host::linearize`) adds the conditions that come from openraft's
//! state (leader, an applied entry of its term, a uniform membership).
//!
//! Why it is safe (docs/ARCHITECTURE.md, "Leader lease", has the whole
//! argument): a peer that accepts an AppendEntries of leader vote `v`
//! refuses every vote request for `election_timeout_max` after it received
//! it (openraft's `leader_lease`), and it received it after it was sent. So
//! while `now < sent + lease` for a majority of the voters (this node
//! counting itself), with `lease` shorter than `election_timeout_max` by a
//! margin for clock-rate drift, no other node can collect a majority of
//! votes, unless this node votes itself: a vote request of a term at least
//! the lease's ends the lease for that term at once, before openraft can
//! grant it. Times are [`Instant`]s (monotonic): a process paused with
//! SIGSTOP finds its evidence old when it resumes, whatever its metrics say.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::types::{NodeId, Vote};

/// The lease as a fraction of `election_timeout_max`: 10 % is left for the
/// followers' clocks running at a different rate from the leader's (NTP
/// slews CLOCK_MONOTONIC by at most 0.05 %) and for scheduling.
const LEASE_PER_MILLE: u32 = 900;

/// One group's lease evidence.
pub struct Lease {
    me: NodeId,
    length: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The leader term the acks below are for (this node's committed vote).
    term: u64,
    /// Per peer, the newest send time of an AppendEntries it accepted under
    /// `term`.
    acked: HashMap<NodeId, Instant>,
    /// The highest term of a vote request this node has received from
    /// another node, or of a leadership transfer it started: no lease for a
    /// term at or below it.
    vote_requested: u64,
    /// Transfers being handed to openraft right now: no lease for any term
    /// until each has said at which term openraft took it.
    transfers_pending: u32,
}

impl Lease {
    /// The lease of a group on node `me`, whose peers refuse votes for
    /// `election_timeout_max` after hearing from their leader.
    pub fn new(me: NodeId, election_timeout_max: Duration) -> Lease {
        Lease {
            me,
            length: election_timeout_max * LEASE_PER_MILLE / 1000,
            state: Mutex::default(),
        }
    }

    /// How long after a send the lease lasts.
    pub fn length(&self) -> Duration {
        self.length
    }

    /// `peer` accepted an AppendEntries carrying `vote`, sent at `sent`.
    /// Only this node's own committed (leader) votes count.
    pub fn acked(&self, vote: &Vote, peer: NodeId, sent: Instant) {
        if !vote.committed || vote.leader_id.node_id != self.me || peer == self.me {
            return;
        }
        let term = vote.leader_id.term;
        let Ok(mut s) = self.state.lock() else { return };
        if term < s.term {
            return;
        }
        if term > s.term {
            s.term = term;
            s.acked.clear();
        }
        let t = s.acked.entry(peer).or_insert(sent);
        *t = (*t).max(sent);
    }

    /// A vote request carrying `vote` arrived. Called before openraft sees
    /// it: once openraft could grant it, this node no longer counts itself.
    pub fn vote_requested(&self, vote: &Vote) {
        if vote.leader_id.node_id == self.me {
            return;
        }
        if let Ok(mut s) = self.state.lock() {
            s.vote_requested = s.vote_requested.max(vote.leader_id.term);
        }
    }

    /// This node is about to hand its leadership over (openraft's
    /// TransferLeader). The target's election is granted by peers whose
    /// promise would otherwise refuse it, so no lease holds from here, for
    /// any term, until [`Lease::transferred`] says at which term openraft
    /// took the transfer; that term's lease then stays ended for good,
    /// even if the transfer fails.
    pub fn transferring(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.transfers_pending += 1;
        }
    }

    /// openraft took the transfer begun with [`Lease::transferring`] at
    /// `term` or before (terms only grow).
    pub fn transferred(&self, term: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.transfers_pending = s.transfers_pending.saturating_sub(1);
            s.vote_requested = s.vote_requested.max(term);
        }
    }

    /// Whether this node, leading with term `term` over exactly `voters`
    /// (a uniform membership), holds the lease at `now`: the majority-th
    /// newest of {`now` for itself, each other voter's newest acked send
    /// time} is less than the lease length ago, and no vote request of term
    /// `term` or above has arrived.
    ///
    /// Takes the voters as they are kept (openraft's set), so that no read
    /// builds a list of them; a membership of more than [`MAX_VOTERS`]
    /// voters (shoal makes 3 or 5) never holds the lease, and its reads
    /// take the ReadIndex round.
    pub fn holds<'a>(
        &self,
        term: u64,
        voters: impl IntoIterator<Item = &'a NodeId>,
        now: Instant,
    ) -> bool {
        let Ok(s) = self.state.lock() else {
            return false;
        };
        if s.vote_requested >= term || s.transfers_pending > 0 {
            return false;
        }
        // Acks recorded under another term say nothing about this one.
        let acked = (s.term == term).then_some(&s.acked);
        let mut times = [None::<Instant>; MAX_VOTERS];
        let mut n = 0;
        for v in voters {
            let Some(slot) = times.get_mut(n) else {
                return false;
            };
            *slot = if *v == self.me {
                Some(now)
            } else {
                acked.and_then(|a| a.get(v).copied())
            };
            n += 1;
        }
        if n == 0 {
            return false;
        }
        let times = &mut times[..n];
        // Newest first; a voter never heard from (None) sorts last.
        times.sort_unstable_by(|a, b| b.cmp(a));
        let majority = n / 2 + 1;
        match times[majority - 1] {
            Some(t) => now < t + self.length,
            None => false,
        }
    }
}

/// The most voters a lease is computed for.
pub const MAX_VOTERS: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(term: u64, node: NodeId) -> Vote {
        Vote::new_committed(term, node)
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_majority_of_recent_acks_holds_the_lease_until_it_ages() {
        let lease = Lease::new(1, 1000 * MS);
        assert_eq!(lease.length(), 900 * MS);
        let t0 = Instant::now();
        let voters = [1, 2, 3];
        assert!(!lease.holds(5, &voters, t0), "no ack yet");
        lease.acked(&vote(5, 1), 2, t0);
        assert!(lease.holds(5, &voters, t0 + 10 * MS));
        assert!(lease.holds(5, &voters, t0 + 899 * MS));
        assert!(!lease.holds(5, &voters, t0 + 900 * MS), "expired");
        // A later send renews it; an older one does not move it back.
        lease.acked(&vote(5, 1), 2, t0 + 500 * MS);
        lease.acked(&vote(5, 1), 2, t0 + 100 * MS);
        assert!(lease.holds(5, &voters, t0 + 1300 * MS));
        assert!(!lease.holds(5, &voters, t0 + 1400 * MS));
    }

    #[test]
    fn five_voters_need_two_peers() {
        let lease = Lease::new(1, 1000 * MS);
        let t0 = Instant::now();
        let voters = [1, 2, 3, 4, 5];
        lease.acked(&vote(3, 1), 2, t0);
        assert!(!lease.holds(3, &voters, t0 + MS));
        lease.acked(&vote(3, 1), 4, t0 - 800 * MS);
        // The majority-th newest is the older ack.
        assert!(lease.holds(3, &voters, t0 + 50 * MS));
        assert!(!lease.holds(3, &voters, t0 + 100 * MS));
    }

    #[test]
    fn no_voters_or_more_than_the_most_counted_never_hold() {
        let lease = Lease::new(1, 1000 * MS);
        let t0 = Instant::now();
        let none: [NodeId; 0] = [];
        assert!(!lease.holds(3, &none, t0));
        // Every voter acked just now; one too many, and the lease is not
        // taken (its reads take a ReadIndex round instead).
        let all: Vec<NodeId> = (1..=MAX_VOTERS as NodeId).collect();
        for v in &all[1..] {
            lease.acked(&vote(3, 1), *v, t0);
        }
        assert!(lease.holds(3, &all, t0 + MS));
        let too_many: Vec<NodeId> = (1..=MAX_VOTERS as NodeId + 1).collect();
        lease.acked(&vote(3, 1), MAX_VOTERS as NodeId + 1, t0);
        assert!(!lease.holds(3, &too_many, t0 + MS));
    }

    #[test]
    fn acks_of_another_term_or_vote_do_not_count() {
        let lease = Lease::new(1, 1000 * MS);
        let t0 = Instant::now();
        let voters = [1, 2, 3];
        lease.acked(&vote(4, 1), 2, t0);
        assert!(!lease.holds(5, &voters, t0), "an ack of term 4");
        lease.acked(&Vote::new(5, 1), 2, t0);
        assert!(!lease.holds(5, &voters, t0), "an uncommitted vote");
        lease.acked(&vote(5, 3), 2, t0);
        assert!(!lease.holds(5, &voters, t0), "another node's vote");
        lease.acked(&vote(5, 1), 2, t0);
        assert!(lease.holds(5, &voters, t0));
        // A newer term forgets the older acks.
        lease.acked(&vote(6, 1), 3, t0);
        assert!(!lease.holds(5, &voters, t0));
        assert!(lease.holds(6, &voters, t0));
    }

    #[test]
    fn a_vote_request_of_the_term_or_above_ends_the_lease_of_that_term() {
        let lease = Lease::new(1, 1000 * MS);
        let t0 = Instant::now();
        let voters = [1, 2, 3];
        lease.acked(&vote(5, 1), 2, t0);
        lease.vote_requested(&Vote::new(4, 3));
        assert!(lease.holds(5, &voters, t0), "an older term changes nothing");
        lease.vote_requested(&Vote::new(6, 3));
        assert!(!lease.holds(5, &voters, t0));
        // Even with fresh acks afterwards, for the rest of the term.
        lease.acked(&vote(5, 1), 2, t0 + 10 * MS);
        assert!(!lease.holds(5, &voters, t0 + 20 * MS));
        // A later term of this node's own starts clean.
        lease.acked(&vote(7, 1), 2, t0 + 30 * MS);
        assert!(lease.holds(7, &voters, t0 + 40 * MS));
    }

    #[test]
    fn a_transfer_ends_the_lease_of_its_term_for_good() {
        let lease = Lease::new(1, 1000 * MS);
        let t0 = Instant::now();
        let voters = [1, 2, 3];
        lease.acked(&vote(5, 1), 2, t0);
        assert!(lease.holds(5, &voters, t0));
        lease.transferring();
        assert!(!lease.holds(5, &voters, t0), "while it is handed over");
        assert!(!lease.holds(6, &voters, t0), "whatever the term");
        lease.transferred(5);
        assert!(!lease.holds(5, &voters, t0));
        // Acks after the transfer started do not bring it back: a peer may
        // already grant the target's election.
        lease.acked(&vote(5, 1), 2, t0 + 10 * MS);
        lease.acked(&vote(5, 1), 3, t0 + 10 * MS);
        assert!(!lease.holds(5, &voters, t0 + 20 * MS));
        // Leading again in a later term starts clean.
        lease.acked(&vote(8, 1), 2, t0 + 30 * MS);
        assert!(lease.holds(8, &voters, t0 + 40 * MS));
    }

    #[test]
    fn a_leader_outside_the_voters_counts_only_peers() {
        let lease = Lease::new(1, 1000 * MS);
        let t0 = Instant::now();
        lease.acked(&vote(2, 1), 2, t0);
        assert!(!lease.holds(2, &[2, 3, 4], t0));
        lease.acked(&vote(2, 1), 3, t0);
        assert!(lease.holds(2, &[2, 3, 4], t0));
    }

    #[test]
    fn a_lone_voter_holds_it_alone() {
        let lease = Lease::new(1, 1000 * MS);
        assert!(lease.holds(1, &[1], Instant::now()));
        assert!(!lease.holds(1, &[], Instant::now()));
    }
}
