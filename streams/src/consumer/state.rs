//! What of a consumer is stored, and the changes a commit writes.

use serde::{Deserialize, Serialize};

use super::config::ConsumerConfig;

/// The consumer's one row of cursor and counters. Written whole by every commit that
/// changes the consumer (it is a few dozen bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct StateRow {
    /// Every offset below it is done.
    pub(crate) floor: u64,
    /// The next offset to look at for a first delivery.
    pub(crate) position: u64,
    /// Acks taken.
    pub(crate) acked: u64,
    /// Deliveries made.
    pub(crate) delivered: u64,
    /// Deliveries that were not a record's first.
    pub(crate) redelivered: u64,
    /// Records dead-lettered.
    pub(crate) dead_lettered: u64,
    /// Records lost to retention or a purge.
    pub(crate) gone: u64,
}

/// A consumer's state as the store holds it: what [`Consumer::restore`](super::Consumer::restore)
/// rebuilds a consumer from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PersistedState {
    /// Cursor and counters.
    pub(crate) row: StateRow,
    /// Done offsets above the floor, as `(start, end)` half-open ranges in order.
    pub(crate) acked: Vec<(u64, u64)>,
    /// Delivered and not yet acked offsets, in order, with their delivery counts.
    pub(crate) pending: Vec<(u64, u32)>,
}

impl PersistedState {
    /// Checks what a well-behaved consumer always keeps true, so a damaged store is reported
    /// rather than turned into a consumer that skips or repeats records: the floor is at most
    /// the position, the done ranges and pending offsets lie between them without overlap, and
    /// together they cover every offset from the floor to the position.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let StateRow {
            floor, position, ..
        } = self.row;
        if floor > position {
            return Err(format!("ack floor {floor} is above position {position}"));
        }
        let mut covered: u64 = 0;
        let mut last_end = floor;
        for &(s, e) in &self.acked {
            // A range touching the floor or its predecessor would have been merged.
            if s <= last_end || e <= s || e > position {
                return Err(format!("done range {s}..{e} is out of place"));
            }
            covered += e - s;
            last_end = e;
        }
        let mut last: Option<u64> = None;
        for &(off, deliveries) in &self.pending {
            if off < floor || off >= position || last.is_some_and(|l| off <= l) {
                return Err(format!("pending offset {off} is out of place"));
            }
            if deliveries == 0 {
                return Err(format!("pending offset {off} was never delivered"));
            }
            if self.acked.iter().any(|&(s, e)| (s..e).contains(&off)) {
                return Err(format!("offset {off} is both pending and done"));
            }
            last = Some(off);
            covered += 1;
        }
        if covered != position - floor {
            return Err(format!(
                "{} offsets between floor {floor} and position {position} are neither done nor pending",
                (position - floor).saturating_sub(covered)
            ));
        }
        Ok(())
    }
}

/// What changed in one consumer since its last commit: only these rows are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConsumerChanges {
    /// The consumer.
    pub(crate) name: String,
    /// Its configuration, when new or changed.
    pub(crate) config: Option<ConsumerConfig>,
    /// Delete every stored done range and pending row first (after a reset).
    pub(crate) clear: bool,
    /// Cursor and counters (always written: one small row).
    pub(crate) row: StateRow,
    /// Pending rows: `Some(deliveries)` to write, `None` to delete.
    pub(crate) pending: Vec<(u64, Option<u32>)>,
    /// Done-range rows by start: `Some(end)` to write, `None` to delete.
    pub(crate) acked: Vec<(u64, Option<u64>)>,
}

/// One change of a [`ConsumerStore::commit`](super::ConsumerStore::commit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// A consumer was created or changed.
    Update(ConsumerChanges),
    /// A consumer was deleted, with everything stored for it.
    Delete(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(
        floor: u64,
        position: u64,
        acked: &[(u64, u64)],
        pending: &[(u64, u32)],
    ) -> PersistedState {
        PersistedState {
            row: StateRow {
                floor,
                position,
                ..StateRow::default()
            },
            acked: acked.to_vec(),
            pending: pending.to_vec(),
        }
    }

    #[test]
    fn validation_accepts_a_consistent_state_only() {
        assert!(state(5, 5, &[], &[]).validate().is_ok());
        assert!(state(5, 10, &[(6, 8), (9, 10)], &[(5, 1), (8, 3)])
            .validate()
            .is_ok());
        // Floor above position.
        assert!(state(6, 5, &[], &[]).validate().is_err());
        // A hole: offset 9 is neither done nor pending.
        assert!(state(5, 10, &[(6, 8)], &[(5, 1), (8, 3)])
            .validate()
            .is_err());
        // A range starting at the floor would have moved the floor.
        assert!(state(5, 7, &[(5, 7)], &[]).validate().is_err());
        // Pending and done at once.
        assert!(state(5, 8, &[(6, 8)], &[(5, 1), (6, 1)])
            .validate()
            .is_err());
        // Pending beyond the position, or never delivered.
        assert!(state(5, 6, &[], &[(5, 1), (6, 1)]).validate().is_err());
        assert!(state(5, 6, &[], &[(5, 0)]).validate().is_err());
    }
}
