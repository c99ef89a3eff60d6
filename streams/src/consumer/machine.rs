//! One durable consumer's state, in memory, with no I/O and no clock: the host passes `now`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use super::config::{ConsumerConfig, ConsumerInfo};
use super::ranges::RangeSet;
use super::state::{ConsumerChanges, PersistedState, StateRow};

/// A record to hand to a member now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// The record's offset.
    pub(crate) offset: u64,
    /// Which delivery of the record this is: 1 for the first.
    pub(crate) deliveries: u32,
}

/// Why a record went to the dead-letter stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeadReason {
    /// Its last allowed delivery was not acked within `ack_wait`.
    AckWait,
    /// Its last allowed delivery was negatively acked.
    Nacked,
}

/// A record the consumer gave up on: the host writes it to the dead-letter stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeadLetter {
    /// The record's offset.
    pub(crate) offset: u64,
    /// How often it was delivered.
    pub(crate) deliveries: u32,
    /// Why its last delivery failed.
    pub(crate) reason: DeadReason,
}

impl fmt::Display for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = match self.reason {
            DeadReason::AckWait => "was not acked within ack_wait",
            DeadReason::Nacked => "was negatively acked",
        };
        write!(
            f,
            "offset {} delivered {} times (max_deliveries), the last delivery {last}",
            self.offset, self.deliveries
        )
    }
}

/// An ack or nak the consumer cannot take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AckError {
    /// The offset is at or beyond the consumer's position: it was never delivered.
    #[error("offset {offset} was never delivered")]
    NeverDelivered {
        /// The offset.
        offset: u64,
    },
    /// The offset is not waiting for an ack: acked already, dead-lettered, filtered out, or
    /// removed by a reset or by retention.
    #[error("offset {offset} is not pending")]
    NotPending {
        /// The offset.
        offset: u64,
    },
}

/// Where a pending record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// With a member, until this deadline (`ack_wait` after the delivery).
    Ack(Instant),
    /// Negatively acked with a delay: redeliverable from this instant.
    Delay(Instant),
    /// Redeliverable now (it is in `ready`).
    Ready,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    deliveries: u32,
    wait: Wait,
}

/// One durable consumer: cursor, ack floor, done offsets above it, pending deliveries with
/// their counts and deadlines, counters, and the rows changed since the last commit.
///
/// Invariants (checked by the tests after every step): `floor <= position`; every offset
/// below `position` is done (acked, dead-lettered, filtered out, gone) or pending; no range of
/// done offsets starts at the floor (it would have moved the floor); `pending.len()` never
/// grows beyond `max_ack_pending` through a delivery.
#[derive(Debug)]
pub(crate) struct Consumer {
    name: String,
    config: ConsumerConfig,
    floor: u64,
    position: u64,
    done: RangeSet,
    pending: BTreeMap<u64, Pending>,
    /// Pending offsets redeliverable now, lowest first.
    ready: BTreeSet<u64>,
    /// Deadlines of pending offsets in `Wait::Ack` or `Wait::Delay`.
    timers: BTreeSet<(Instant, u64)>,
    /// Dead letters not yet handed to the host.
    dead: Vec<DeadLetter>,
    counters: StateRow,
    // What the next `changes` reports.
    config_dirty: bool,
    row_dirty: bool,
    cleared: bool,
    pending_dirty: BTreeSet<u64>,
}

/// `now + d`, saturating far in the future instead of overflowing `Instant`.
fn later(now: Instant, d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(d.min(CENTURY))
        .or_else(|| now.checked_add(Duration::from_secs(24 * 3600)))
        .unwrap_or(now)
}

impl Consumer {
    /// A new consumer whose first delivery will be offset `start` (the host resolves
    /// [`From`](crate::From) against the log). Its first [`changes`](Self::changes)
    /// carry the configuration.
    pub(crate) fn new(name: impl Into<String>, config: ConsumerConfig, start: u64) -> Self {
        Self {
            name: name.into(),
            config,
            floor: start,
            position: start,
            done: RangeSet::default(),
            pending: BTreeMap::new(),
            ready: BTreeSet::new(),
            timers: BTreeSet::new(),
            dead: Vec::new(),
            counters: StateRow::default(),
            config_dirty: true,
            row_dirty: true,
            cleared: false,
            pending_dirty: BTreeSet::new(),
        }
    }

    /// A consumer rebuilt from the store (the store validated `state`). Deadlines are not
    /// stored: every pending record waits `ack_wait` from `now`, keeping its delivery count.
    pub(crate) fn restore(
        name: impl Into<String>,
        config: ConsumerConfig,
        state: PersistedState,
        now: Instant,
    ) -> Self {
        let deadline = later(now, config.ack_wait);
        let mut c = Self::new(name, config, state.row.floor);
        c.config_dirty = false;
        c.row_dirty = false;
        c.counters = state.row;
        c.position = state.row.position;
        c.done = RangeSet::from_rows(state.acked).unwrap_or_default();
        for (offset, deliveries) in state.pending {
            c.pending.insert(
                offset,
                Pending {
                    deliveries,
                    wait: Wait::Ack(deadline),
                },
            );
            c.timers.insert((deadline, offset));
        }
        c
    }

    /// The consumer's name.
    #[cfg_attr(not(test), allow(dead_code))] // the tests' view
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Its configuration.
    pub(crate) fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// Replaces the configuration (the cursor stays; `start` no longer matters). New limits
    /// apply from the next call on; deadlines already set keep their old `ack_wait`.
    pub(crate) fn set_config(&mut self, config: ConsumerConfig) {
        self.config = config;
        self.config_dirty = true;
    }

    /// The next offset to look at for a first delivery: the host reads records from here.
    pub(crate) fn position(&self) -> u64 {
        self.position
    }

    /// Every offset below it is done.
    #[cfg_attr(not(test), allow(dead_code))] // the tests' view
    pub(crate) fn ack_floor(&self) -> u64 {
        self.floor
    }

    /// How many first deliveries `max_ack_pending` allows now.
    pub(crate) fn room(&self) -> usize {
        self.config.pending_cap().saturating_sub(self.pending.len())
    }

    /// Records to deliver now, at most `max`: first the redeliverable pending ones (lowest
    /// offset first, each with its new delivery count), then first deliveries from `new`.
    ///
    /// `new` is the host's read of the stream from [`position`](Self::position): `(offset,
    /// event name)` in increasing offset order. The consumer takes from it only what it uses
    /// (a record whose name the filter refuses is passed over and counts as done); offsets
    /// below the position are ignored, and offsets the host skips over count as gone. First
    /// deliveries stop while `max_ack_pending` records are pending.
    ///
    /// Runs [`expired`](Self::expired) first; call [`dead_letters`](Self::dead_letters) after.
    pub(crate) fn take<'a, I>(&mut self, now: Instant, max: usize, new: I) -> Vec<Delivery>
    where
        I: IntoIterator<Item = (u64, Option<&'a str>)>,
    {
        self.expired(now);
        let deadline = later(now, self.config.ack_wait);
        let mut out = Vec::new();
        while out.len() < max {
            let Some(offset) = self.ready.pop_first() else {
                break;
            };
            let Some(p) = self.pending.get_mut(&offset) else {
                continue;
            };
            p.deliveries = p.deliveries.saturating_add(1);
            p.wait = Wait::Ack(deadline);
            self.timers.insert((deadline, offset));
            self.pending_dirty.insert(offset);
            self.counters.delivered += 1;
            self.counters.redelivered += 1;
            self.row_dirty = true;
            out.push(Delivery {
                offset,
                deliveries: p.deliveries,
            });
        }
        let mut new = new.into_iter().peekable();
        while out.len() < max {
            let Some(&(offset, name)) = new.peek() else {
                break;
            };
            if offset < self.position {
                new.next();
                continue;
            }
            let wanted = self.config.accepts(name);
            if wanted && self.room() == 0 {
                break;
            }
            new.next();
            if offset > self.position {
                let skipped = offset - self.position;
                self.counters.gone += skipped;
                self.mark_done(self.position..offset);
            }
            self.position = offset.saturating_add(1);
            self.row_dirty = true;
            if wanted {
                self.pending.insert(
                    offset,
                    Pending {
                        deliveries: 1,
                        wait: Wait::Ack(deadline),
                    },
                );
                self.timers.insert((deadline, offset));
                self.pending_dirty.insert(offset);
                self.counters.delivered += 1;
                out.push(Delivery {
                    offset,
                    deliveries: 1,
                });
            } else {
                self.mark_done(offset..offset.saturating_add(1));
            }
        }
        out
    }

    /// Acknowledges `offset`: it is done and will not be delivered again (unless a
    /// [`reset`](Self::reset) moves the cursor back over it). An ack of a record waiting for
    /// redelivery counts too: the member finished late.
    ///
    /// # Errors
    ///
    /// [`AckError::NeverDelivered`] at or beyond the position, [`AckError::NotPending`] for
    /// an offset below it that is not waiting for an ack (a repeated ack, for instance).
    pub(crate) fn ack(&mut self, offset: u64) -> Result<(), AckError> {
        self.check(offset)?;
        let Some(p) = self.pending.remove(&offset) else {
            return Err(AckError::NotPending { offset });
        };
        self.forget_wait(offset, p.wait);
        self.pending_dirty.insert(offset);
        self.counters.acked += 1;
        self.mark_done(offset..offset.saturating_add(1));
        Ok(())
    }

    /// Negatively acknowledges `offset`: it is redelivered after `delay` (at once if `None`
    /// or zero), or dead-lettered now if it has had its `max_deliveries`.
    ///
    /// # Errors
    ///
    /// As [`ack`](Self::ack).
    pub(crate) fn nak(
        &mut self,
        offset: u64,
        delay: Option<Duration>,
        now: Instant,
    ) -> Result<(), AckError> {
        self.check(offset)?;
        let Some(&p) = self.pending.get(&offset) else {
            return Err(AckError::NotPending { offset });
        };
        self.forget_wait(offset, p.wait);
        if p.deliveries >= self.config.deliveries_cap() {
            self.dead_letter(offset, DeadReason::Nacked);
            return Ok(());
        }
        let wait = match delay {
            Some(d) if !d.is_zero() => {
                let at = later(now, d);
                self.timers.insert((at, offset));
                Wait::Delay(at)
            }
            _ => {
                self.ready.insert(offset);
                Wait::Ready
            }
        };
        if let Some(p) = self.pending.get_mut(&offset) {
            p.wait = wait;
        }
        Ok(())
    }

    /// Moves every pending record whose deadline is at or before `now` on: to redelivery, or
    /// to the dead letters if it has had its `max_deliveries`. Returns how many moved.
    pub(crate) fn expired(&mut self, now: Instant) -> usize {
        let due: Vec<(Instant, u64)> = self.timers.range(..=(now, u64::MAX)).copied().collect();
        for &(at, offset) in &due {
            self.timers.remove(&(at, offset));
            let Some(p) = self.pending.get_mut(&offset) else {
                continue;
            };
            let reason = match p.wait {
                Wait::Ack(_) => DeadReason::AckWait,
                Wait::Delay(_) => DeadReason::Nacked,
                Wait::Ready => continue,
            };
            if p.deliveries >= self.config.deliveries_cap() {
                self.dead_letter(offset, reason);
            } else {
                p.wait = Wait::Ready;
                self.ready.insert(offset);
            }
        }
        due.len()
    }

    /// The records given up on since the last call, each returned once. They count as done
    /// already (the floor moved over them); the host must append them to the dead-letter
    /// stream *before* it commits the changes that mark them done.
    pub(crate) fn dead_letters(&mut self) -> Vec<DeadLetter> {
        std::mem::take(&mut self.dead)
    }

    /// Moves the cursor to `to`, backwards or forwards: every pending record is dropped and
    /// the next first delivery is `to`. Offsets at or above `to` that were acked before are
    /// delivered again: that is what a reset is for. Counters are kept.
    pub(crate) fn reset(&mut self, to: u64) {
        self.floor = to;
        self.position = to;
        self.done.clear();
        self.pending.clear();
        self.ready.clear();
        self.timers.clear();
        self.pending_dirty.clear();
        self.cleared = true;
        self.row_dirty = true;
    }

    /// Retention or a purge removed every offset below `earliest`: pending records below it
    /// are dropped and counted as gone, as are records below it not yet delivered; the
    /// floor and position move up to it.
    pub(crate) fn skip_gone(&mut self, earliest: u64) {
        if earliest <= self.floor {
            return;
        }
        let lost: Vec<u64> = self.pending.range(..earliest).map(|(&o, _)| o).collect();
        for offset in lost {
            if let Some(p) = self.pending.remove(&offset) {
                self.forget_wait(offset, p.wait);
                self.pending_dirty.insert(offset);
                self.counters.gone += 1;
            }
        }
        if earliest > self.position {
            self.counters.gone += earliest - self.position;
            self.position = earliest;
        }
        self.done.remove_below(earliest);
        self.floor = earliest;
        self.advance_floor();
        self.row_dirty = true;
    }

    /// The earliest instant at which [`expired`](Self::expired) has work. Records already
    /// redeliverable wait for the next [`take`](Self::take), not for a deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// Whether records wait for redelivery now.
    #[cfg_attr(not(test), allow(dead_code))] // the tests' view
    pub(crate) fn has_redeliveries(&self) -> bool {
        !self.ready.is_empty()
    }

    /// What the consumer has done; `stream_next` is the stream's next offset (for the lag).
    pub(crate) fn info(&self, stream_next: u64) -> ConsumerInfo {
        let pending = self.pending.len() as u64;
        ConsumerInfo {
            name: self.name.clone(),
            position: self.position,
            ack_floor: self.floor,
            acked: self.counters.acked,
            pending,
            redelivered: self.counters.redelivered,
            dead_lettered: self.counters.dead_lettered,
            delivered: self.counters.delivered,
            gone: self.counters.gone,
            lag: stream_next.saturating_sub(self.position) + pending,
        }
    }

    /// The stored form of the whole state (what a reload gives back).
    #[cfg_attr(not(test), allow(dead_code))] // the tests' view
    pub(crate) fn snapshot(&self) -> PersistedState {
        PersistedState {
            row: self.row(),
            acked: self.done.iter().map(|r| (r.start, r.end)).collect(),
            pending: self
                .pending
                .iter()
                .map(|(&o, p)| (o, p.deliveries))
                .collect(),
        }
    }

    /// The rows changed since the last call (`None` if nothing changed), for
    /// [`ConsumerStore::commit`](super::ConsumerStore::commit). Their size follows what
    /// changed, not the size of the state. If the commit fails the host must not reuse this
    /// consumer's later changes as if it had succeeded: reload from the store instead.
    pub(crate) fn changes(&mut self) -> Option<ConsumerChanges> {
        let acked = self.done.drain_changes();
        if !self.config_dirty
            && !self.row_dirty
            && !self.cleared
            && self.pending_dirty.is_empty()
            && acked.is_empty()
        {
            return None;
        }
        let pending = std::mem::take(&mut self.pending_dirty)
            .into_iter()
            .map(|o| (o, self.pending.get(&o).map(|p| p.deliveries)))
            .collect();
        let changes = ConsumerChanges {
            name: self.name.clone(),
            config: self.config_dirty.then(|| self.config.clone()),
            clear: self.cleared,
            row: self.row(),
            pending,
            acked,
        };
        self.config_dirty = false;
        self.row_dirty = false;
        self.cleared = false;
        Some(changes)
    }

    fn row(&self) -> StateRow {
        StateRow {
            floor: self.floor,
            position: self.position,
            ..self.counters
        }
    }

    fn check(&self, offset: u64) -> Result<(), AckError> {
        if offset >= self.position {
            Err(AckError::NeverDelivered { offset })
        } else {
            Ok(())
        }
    }

    fn forget_wait(&mut self, offset: u64, wait: Wait) {
        match wait {
            Wait::Ack(at) | Wait::Delay(at) => {
                self.timers.remove(&(at, offset));
            }
            Wait::Ready => {
                self.ready.remove(&offset);
            }
        }
    }

    fn dead_letter(&mut self, offset: u64, reason: DeadReason) {
        let Some(p) = self.pending.remove(&offset) else {
            return;
        };
        self.forget_wait(offset, p.wait);
        self.pending_dirty.insert(offset);
        self.counters.dead_lettered += 1;
        self.dead.push(DeadLetter {
            offset,
            deliveries: p.deliveries,
            reason,
        });
        self.mark_done(offset..offset.saturating_add(1));
    }

    /// Marks `range` done (it is below the position) and moves the floor over what is done.
    fn mark_done(&mut self, range: std::ops::Range<u64>) {
        let range = range.start.max(self.floor)..range.end;
        if range.is_empty() {
            return;
        }
        if range.start == self.floor {
            // In-order acks, the common case, never write a range row.
            self.floor = range.end;
        } else {
            self.done.insert_range(range);
        }
        self.advance_floor();
        self.row_dirty = true;
    }

    fn advance_floor(&mut self) {
        while let Some(end) = self.done.take_at(self.floor) {
            self.floor = end;
        }
    }
}
