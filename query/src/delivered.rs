//! Which (probe, sequence) batches the store holds, so that a batch resent
//! after a reconnect or a restart is stored once.
//!
//! A probe numbers its batches 1, 2, 3… and may deliver them out of order
//! within its in-flight window, resend unacknowledged ones after a
//! reconnect, and skip numbers for good (batches its full buffer dropped,
//! or the collector rejected). Sequences are therefore kept as sorted
//! disjoint ranges: a healthy stream is one range whatever its length. The
//! number of ranges per probe is capped; past the cap the two oldest ranges
//! are joined, declaring the old gap between them delivered — a gap that
//! old is a batch the probe no longer holds.

use std::collections::{BTreeMap, HashMap};

/// Ranges remembered per probe before old gaps are closed.
const RANGES_PER_PROBE: usize = 4096;

/// Sorted, disjoint, non-adjacent inclusive ranges of sequences.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SeqSet {
    /// start → end (inclusive).
    ranges: BTreeMap<u64, u64>,
}

impl SeqSet {
    pub(crate) fn contains(&self, seq: u64) -> bool {
        self.ranges
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &end)| end >= seq)
    }

    /// Adds `seq`; false when it was already there.
    pub(crate) fn insert(&mut self, seq: u64) -> bool {
        if self.contains(seq) {
            return false;
        }
        let before = self
            .ranges
            .range(..seq)
            .next_back()
            .filter(|(_, end)| seq.checked_sub(1) == Some(**end))
            .map(|(&start, _)| start);
        let after = seq
            .checked_add(1)
            .and_then(|next| self.ranges.remove(&next).map(|end| (next, end)));
        let start = before.unwrap_or(seq);
        let end = after.map_or(seq, |(_, end)| end);
        self.ranges.insert(start, end);
        if self.ranges.len() > RANGES_PER_PROBE
            && let Some((first, _)) = self.ranges.pop_first()
            && let Some((_, second_end)) = self.ranges.pop_first()
        {
            self.ranges.insert(first, second_end);
        }
        true
    }

    pub(crate) fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e))
    }

    /// Rebuilds a set from ranges as [`ranges`](Self::ranges) listed them.
    pub(crate) fn from_ranges(ranges: impl IntoIterator<Item = (u64, u64)>) -> SeqSet {
        let mut set = SeqSet::default();
        for (start, end) in ranges {
            set.ranges.insert(start, end.max(start));
        }
        set
    }
}

/// Delivered sequences of every probe.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Delivered {
    probes: HashMap<String, SeqSet>,
}

impl Delivered {
    pub(crate) fn contains(&self, probe: &str, seq: u64) -> bool {
        self.probes.get(probe).is_some_and(|s| s.contains(seq))
    }

    pub(crate) fn insert(&mut self, probe: &str, seq: u64) -> bool {
        match self.probes.get_mut(probe) {
            Some(set) => set.insert(seq),
            None => {
                let mut set = SeqSet::default();
                set.insert(seq);
                self.probes.insert(probe.to_owned(), set);
                true
            }
        }
    }

    /// Probes sorted by name, for a deterministic manifest.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &SeqSet)> {
        let mut probes: Vec<_> = self.probes.iter().collect();
        probes.sort_by(|a, b| a.0.cmp(b.0));
        probes.into_iter().map(|(k, v)| (k.as_str(), v))
    }

    pub(crate) fn set(&mut self, probe: String, set: SeqSet) {
        self.probes.insert(probe, set);
    }

    pub(crate) fn probes(&self) -> usize {
        self.probes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_delivery_is_one_range_and_out_of_order_fills_gaps() {
        let mut s = SeqSet::default();
        for seq in 1..=1000 {
            assert!(s.insert(seq));
        }
        assert_eq!(s.ranges().collect::<Vec<_>>(), [(1, 1000)]);
        assert!(!s.insert(500), "a resend is seen");
        // Out of order within a window, with a gap that is never filled.
        for seq in [1003, 1002, 1005, 1001] {
            assert!(s.insert(seq));
        }
        assert_eq!(s.ranges().collect::<Vec<_>>(), [(1, 1003), (1005, 1005)]);
        assert!(!s.contains(1004) && s.contains(1005) && !s.contains(0));
        assert!(s.insert(1004));
        assert_eq!(s.ranges().collect::<Vec<_>>(), [(1, 1005)]);
        assert!(s.insert(u64::MAX) && s.insert(0) && s.contains(u64::MAX));
    }

    #[test]
    fn many_gaps_close_the_oldest_first() {
        let mut s = SeqSet::default();
        for i in 0..(RANGES_PER_PROBE as u64 + 2) {
            s.insert(i * 2);
        }
        assert_eq!(s.ranges().count(), RANGES_PER_PROBE);
        assert!(s.contains(1) && s.contains(3), "the oldest gaps closed");
        assert!(!s.contains(2 * RANGES_PER_PROBE as u64 + 1));
        let copy = SeqSet::from_ranges(s.ranges());
        assert_eq!(copy, s);
    }
}
