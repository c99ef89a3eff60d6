//! The offsets above the ack floor that are done, as disjoint ranges.
//!
//! Acks come out of order; a set of single offsets would grow with every gap a slow record
//! leaves behind it (and with every record a filter skips), so done offsets are kept as
//! half-open ranges `start..end`, merged as they touch. Every start that changes is noted, so
//! the store rewrites only those rows.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

/// Disjoint, non-adjacent half-open ranges of offsets, keyed by start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RangeSet {
    ranges: BTreeMap<u64, u64>,
    /// Starts whose row changed (added, removed or with a new end) since the last `drain`.
    dirty: BTreeSet<u64>,
}

impl RangeSet {
    /// Whether `offset` is in a range.
    #[cfg_attr(not(test), allow(dead_code))] // the tests' view
    pub(crate) fn contains(&self, offset: u64) -> bool {
        self.ranges
            .range(..=offset)
            .next_back()
            .is_some_and(|(_, &end)| offset < end)
    }

    /// Adds `offset` (a no-op if it is in already), merging with its neighbours.
    #[cfg_attr(not(test), allow(dead_code))] // the tests' view
    pub(crate) fn insert(&mut self, offset: u64) {
        self.insert_range(offset..offset.saturating_add(1));
    }

    /// Adds every offset of `range`, merging with whatever it touches.
    pub(crate) fn insert_range(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        let (mut start, mut end) = (range.start, range.end);
        // A range starting at or before `start` that reaches it absorbs the new one's start.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back() {
            if e >= start {
                if e >= end {
                    return;
                }
                start = s;
            }
        }
        // Every range starting inside `start..=end` merges in.
        let absorbed: Vec<(u64, u64)> = self
            .ranges
            .range(start..=end)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in absorbed {
            self.ranges.remove(&s);
            self.dirty.insert(s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
        self.dirty.insert(start);
    }

    /// If a range starts at `floor`, removes it and returns its end (the new floor).
    pub(crate) fn take_at(&mut self, floor: u64) -> Option<u64> {
        let end = self.ranges.remove(&floor)?;
        self.dirty.insert(floor);
        Some(end)
    }

    /// Removes every offset below `bound`.
    pub(crate) fn remove_below(&mut self, bound: u64) {
        let below: Vec<(u64, u64)> = self.ranges.range(..bound).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in below {
            self.ranges.remove(&s);
            self.dirty.insert(s);
            if e > bound {
                self.ranges.insert(bound, e);
                self.dirty.insert(bound);
            }
        }
    }

    /// Removes everything, without noting rows (the caller clears the stored rows wholesale).
    pub(crate) fn clear(&mut self) {
        self.ranges.clear();
        self.dirty.clear();
    }

    /// The ranges, in order.
    #[cfg_attr(not(test), allow(dead_code))] // the tests' view
    pub(crate) fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.ranges.iter().map(|(&s, &e)| s..e)
    }

    /// Number of offsets in the set.
    #[cfg_attr(not(test), allow(dead_code))] // the tests' view
    pub(crate) fn count(&self) -> u64 {
        self.ranges.iter().map(|(&s, &e)| e - s).sum()
    }

    /// The rows that changed since the last call: `(start, Some(end))` to write, `(start,
    /// None)` to delete.
    pub(crate) fn drain_changes(&mut self) -> Vec<(u64, Option<u64>)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .map(|s| (s, self.ranges.get(&s).copied()))
            .collect()
    }

    /// Rebuilds a set from stored rows (no rows are dirty). `None` if the rows overlap, touch
    /// or are empty, which a set written by this type never holds.
    pub(crate) fn from_rows(rows: impl IntoIterator<Item = (u64, u64)>) -> Option<Self> {
        let mut ranges = BTreeMap::new();
        let mut last_end: Option<u64> = None;
        for (s, e) in rows {
            if e <= s || last_end.is_some_and(|le| s <= le) {
                return None;
            }
            last_end = Some(e);
            ranges.insert(s, e);
        }
        Some(Self {
            ranges,
            dirty: BTreeSet::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(set: &RangeSet) -> Vec<Range<u64>> {
        set.iter().collect()
    }

    #[test]
    fn inserts_merge_with_both_neighbours() {
        let mut set = RangeSet::default();
        set.insert(5);
        set.insert(7);
        assert_eq!(ranges(&set), vec![5..6, 7..8]);
        set.insert(6);
        assert_eq!(ranges(&set), vec![5..8]);
        set.insert(6);
        set.insert_range(2..4);
        set.insert_range(3..10);
        assert_eq!(ranges(&set), vec![2..10]);
        assert_eq!(set.count(), 8);
        assert!(set.contains(2) && set.contains(9) && !set.contains(10) && !set.contains(1));
    }

    #[test]
    fn changes_name_only_the_rows_touched() {
        let mut set = RangeSet::default();
        set.insert_range(10..12);
        set.insert(20);
        let _ = set.drain_changes();
        set.insert(12);
        assert_eq!(set.drain_changes(), vec![(10, Some(13))]);
        set.insert(13);
        set.insert(19);
        assert_eq!(
            set.drain_changes(),
            vec![(10, Some(14)), (19, Some(21)), (20, None)]
        );
        assert_eq!(set.take_at(10), Some(14));
        set.remove_below(20);
        assert_eq!(ranges(&set), vec![20..21]);
        assert_eq!(
            set.drain_changes(),
            vec![(10, None), (19, None), (20, Some(21))]
        );
        assert!(set.drain_changes().is_empty());
    }

    #[test]
    fn stored_rows_are_checked() {
        assert!(RangeSet::from_rows([(1, 3), (5, 6)]).is_some());
        assert!(RangeSet::from_rows([(1, 3), (3, 6)]).is_none());
        assert!(RangeSet::from_rows([(1, 3), (2, 6)]).is_none());
        assert!(RangeSet::from_rows([(4, 4)]).is_none());
    }
}
