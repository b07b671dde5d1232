//! The in-memory tail of one group's Raft log.
//!
//! A leader replicates, and every replica applies, the entries it has just
//! appended: reading them back from RocksDB (a blocking-pool hop, a scan and
//! a decode per read) only to get what was in memory a moment before is
//! waste. [`LogTail`] keeps the newest entries of the group, contiguous by
//! index, within a budget of entries and bytes; the log store serves reads
//! at or above its first index from it and reads below from the database.
//!
//! It is only a cache of what the log store has been asked to write: every
//! entry in it was handed to the engine's writer in the same order, and an
//! entry is evicted only once the write that carries it is done
//! ([`LogTail::trim`]), so an entry below the tail's first index can always
//! be read from the database. Truncation and purge apply to it exactly as
//! to the stored log. Plain data, no I/O: the tests below pin the rules.

use std::collections::VecDeque;

use super::types::Entry;

/// Newest entries of one group's log, contiguous by index.
#[derive(Debug)]
pub struct LogTail {
    /// (entry, its encoded size in bytes), indices ascending by one.
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl LogTail {
    /// A tail that keeps, once the entries are written, at most
    /// `max_entries` entries and about `max_bytes` of encoded entries (it
    /// always keeps at least the newest written entry's successors).
    pub fn new(max_entries: usize, max_bytes: usize) -> LogTail {
        LogTail {
            entries: VecDeque::new(),
            bytes: 0,
            max_entries,
            max_bytes,
        }
    }

    /// Index of the oldest entry held.
    pub fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.log_id.index)
    }

    /// Entries appended to the log (in index order, each with its encoded
    /// size). An entry at an index already held replaces it and everything
    /// after it, as an append after a conflict does; one that leaves a gap
    /// (the log restarted after a snapshot) empties the tail first.
    pub fn append(&mut self, entries: impl IntoIterator<Item = (Entry, usize)>) {
        for (entry, size) in entries {
            let index = entry.log_id.index;
            match self.last_index() {
                Some(last) if index <= last => self.truncate(index),
                Some(last) if index != last + 1 => self.clear(),
                _ => {}
            }
            if self.entries.is_empty() || self.last_index() == index.checked_sub(1) {
                self.bytes += size;
                self.entries.push_back((entry, size));
            }
        }
    }

    /// Forget the entries at or after `since` (the log was truncated there).
    pub fn truncate(&mut self, since: u64) {
        while matches!(self.last_index(), Some(last) if last >= since) {
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    /// Forget the entries up to and including `upto` (the log was purged).
    pub fn purge(&mut self, upto: u64) {
        while matches!(self.first_index(), Some(first) if first <= upto) {
            self.pop_front();
        }
    }

    /// Evict the oldest entries while over budget, but none above
    /// `written`: the entries up to there are in the database, so a read
    /// of them can go there instead.
    pub fn trim(&mut self, written: u64) {
        while (self.entries.len() > self.max_entries || self.bytes > self.max_bytes)
            && matches!(self.first_index(), Some(first) if first <= written)
        {
            self.pop_front();
        }
    }

    /// The entries held with `start <= index < end`, or `None` when `start`
    /// is below the first index held (the caller reads those from the
    /// database; see [`LogTail::split`]).
    pub fn get(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        if start < first {
            return None;
        }
        let skip = (start - first) as usize;
        let take = end.saturating_sub(start) as usize;
        Some(
            self.entries
                .iter()
                .skip(skip)
                .take(take)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }

    /// For a read of `[start, end)`: the end of the part the database must
    /// serve (`start..split`, where the tail does not reach) and the
    /// entries the tail holds from there on.
    pub fn split(&self, start: u64, end: u64) -> (u64, Vec<Entry>) {
        match self.first_index() {
            Some(first) if first < end => {
                let from = first.max(start);
                (from, self.get(from, end).unwrap_or_default())
            }
            _ => (end, Vec::new()),
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    #[cfg(test)]
    fn indices(&self) -> Vec<u64> {
        self.entries.iter().map(|(e, _)| e.log_id.index).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::EntryPayload;

    fn entry(term: u64, index: u64) -> (Entry, usize) {
        (
            Entry {
                log_id: crate::shard::types::log_id(term, 1, index),
                payload: EntryPayload::Blank,
            },
            10,
        )
    }

    fn tail_with(range: std::ops::Range<u64>) -> LogTail {
        let mut t = LogTail::new(4, 1000);
        t.append(range.map(|i| entry(1, i)));
        t
    }

    #[test]
    fn reads_inside_the_tail_come_from_it_and_below_it_do_not() {
        let t = tail_with(5..9);
        let got: Vec<u64> = t
            .get(6, 8)
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(got, vec![6, 7]);
        // Past the end: what exists.
        assert_eq!(t.get(7, 100).unwrap().len(), 2);
        assert!(t.get(4, 8).is_none());
        let (split, rest) = t.split(2, 7);
        assert_eq!(split, 5);
        assert_eq!(rest.len(), 2);
        // Entirely below the tail.
        let (split, rest) = t.split(1, 4);
        assert_eq!((split, rest.len()), (4, 0));
    }

    #[test]
    fn an_append_over_held_indices_replaces_them_and_a_gap_starts_over() {
        let mut t = tail_with(1..6);
        t.append([entry(2, 3), entry(2, 4)]);
        assert_eq!(t.indices(), vec![1, 2, 3, 4]);
        assert_eq!(t.get(3, 4).unwrap()[0].log_id.leader_id.term, 2);
        t.append([entry(3, 10)]);
        assert_eq!(t.indices(), vec![10]);
    }

    #[test]
    fn truncate_and_purge_cut_the_tail_like_the_log() {
        let mut t = tail_with(1..8);
        t.truncate(5);
        assert_eq!(t.indices(), vec![1, 2, 3, 4]);
        t.purge(2);
        assert_eq!(t.indices(), vec![3, 4]);
        t.purge(10);
        assert_eq!(t.first_index(), None);
        assert_eq!(t.bytes, 0);
    }

    #[test]
    fn trimming_evicts_only_written_entries_beyond_the_budget() {
        let mut t = tail_with(1..11);
        // Nothing written yet: everything stays, whatever the budget.
        t.trim(0);
        assert_eq!(t.indices().len(), 10);
        // Written up to 3: only those may go.
        t.trim(3);
        assert_eq!(t.indices(), (4..11).collect::<Vec<_>>());
        t.trim(10);
        assert_eq!(t.indices(), vec![7, 8, 9, 10]);
        // The byte budget counts too.
        let mut t = LogTail::new(100, 25);
        t.append((1..6).map(|i| entry(1, i)));
        t.trim(5);
        assert_eq!(t.indices(), vec![4, 5]);
    }
}
