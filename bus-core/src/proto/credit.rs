//! Event credit: how a subscriber's node lets each publishing peer send no more events than it
//! has room for, so that backpressure crosses the network without ever stalling a connection's
//! reader (DESIGN §7).
//!
//! Per connection and event name, the subscriber's side keeps a [`ReceiveWindow`] and the
//! publisher's side a [`SendWindow`]. The receiver grants a cumulative *limit*: the publisher may
//! have sent at most that many events of the name on the connection. It starts at the window
//! (the room the name's subscriptions have) and moves on as the subscriptions take events off
//! their queues: limit = events consumed + window. So the events one peer has sent and the
//! subscriptions have not yet taken are never more than the window, and the receiver can queue
//! every one of them without dropping it or making its reader wait.
//!
//! A limit travels in a [`Credit`](crate::wire::control::Credit) message. Limits only grow, so
//! the latest one received is the one that counts, and a message that is late or repeated
//! changes nothing. Both halves here are counters that any thread may touch; sending the
//! messages and waking the publishers that wait is the runtime's part.
//!
//! # Examples
//!
//! ```
//! use meshbus_core::proto::credit::{ReceiveWindow, SendWindow};
//!
//! // The subscriber's node has room for 8 events of a name; it grants 8.
//! let rx = ReceiveWindow::new(8);
//! let tx = SendWindow::new();
//! tx.raise(rx.limit(), true);
//! for _ in 0..8 {
//!     assert!(tx.try_take());
//!     assert!(rx.on_received().is_ok());
//! }
//! // Spent: the publisher waits (the subscriptions use `Wait`).
//! assert!(!tx.try_take() && tx.waits());
//! // The subscription takes two off its queue: a quarter of the window is free, a new limit goes.
//! assert_eq!(rx.on_consumed(1), None);
//! assert_eq!(rx.on_consumed(1), Some(10));
//! tx.raise(10, true);
//! assert!(tx.try_take());
//! ```

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// The publisher's side of one connection and event name: how many events it has sent and how
/// many it may.
#[derive(Debug, Default)]
pub struct SendWindow {
    sent: AtomicU64,
    limit: AtomicU64,
    /// What to do without credit: wait (`true`) or drop. Until the first grant, wait: the grant
    /// follows the peer's interest on the same ordered link.
    drop: AtomicBool,
    /// The sequence number of the newest grant applied: an older one, overtaken on the way,
    /// changes nothing.
    seq: AtomicU64,
}

impl SendWindow {
    /// Nothing sent, nothing granted yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes room for one event; `false` when every event granted has been sent.
    pub fn try_take(&self) -> bool {
        let mut sent = self.sent.load(Ordering::Relaxed);
        loop {
            if sent >= self.limit.load(Ordering::Acquire) {
                return false;
            }
            match self.sent.compare_exchange_weak(
                sent,
                sent + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => sent = now,
            }
        }
    }

    /// Gives back the room of an event taken with [`try_take`](Self::try_take) and then not
    /// sent after all.
    pub fn give_back(&self) {
        // Never below zero: a give-back always follows a take.
        let _ = self
            .sent
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |s| s.checked_sub(1));
    }

    /// A grant arrived: the limit moves up to `limit` (never down), and `wait` says what to do
    /// once it is spent. Returns whether there is more room than before.
    pub fn raise(&self, limit: u64, wait: bool) -> bool {
        self.raise_seq(limit, wait, 0)
    }

    /// As [`raise`](Self::raise), for the grant numbered `seq` (the receiver's numbering,
    /// rising with every grant it makes): `wait` is taken only from a grant newer than any
    /// seen, so an older grant overtaken on the way cannot turn the policy back. (`seq` 0, a
    /// grant without a number, always counts as newer.)
    pub fn raise_seq(&self, limit: u64, wait: bool, seq: u64) -> bool {
        let newer = seq == 0 || self.seq.fetch_max(seq, Ordering::AcqRel) < seq;
        if newer {
            self.drop.store(!wait, Ordering::Relaxed);
        }
        self.limit.fetch_max(limit, Ordering::AcqRel) < limit
    }

    /// Whether a publisher without room waits (the subscriptions use `Wait`, or no grant has
    /// come yet) rather than drops.
    pub fn waits(&self) -> bool {
        !self.drop.load(Ordering::Relaxed)
    }

    /// Events sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// How many events may be sent in all, as granted so far.
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Events that may still be sent now.
    pub fn available(&self) -> u64 {
        self.limit
            .load(Ordering::Relaxed)
            .saturating_sub(self.sent.load(Ordering::Relaxed))
    }
}

/// The subscriber's side of one connection and event name: what it granted, what came and what
/// its subscriptions took.
#[derive(Debug)]
pub struct ReceiveWindow {
    window: AtomicU32,
    limit: AtomicU64,
    received: AtomicU64,
    consumed: AtomicU64,
    /// Events of the same peer from an earlier connection that were unconsumed when this
    /// window began: counted as consumed here as they are, so they come off every limit.
    debt: AtomicU64,
}

/// A peer sent more events of a name than it was granted: it breaks the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overrun {
    /// The limit granted.
    pub limit: u64,
}

impl ReceiveWindow {
    /// Grants `window` events (at least one).
    pub fn new(window: u32) -> Self {
        let window = window.max(1);
        ReceiveWindow {
            window: AtomicU32::new(window),
            limit: AtomicU64::new(u64::from(window)),
            received: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            debt: AtomicU64::new(0),
        }
    }

    /// Lowers the first limit by `by` (events of the same peer from an earlier connection still
    /// unconsumed), before anything was received or sent under it. As those are consumed, they
    /// count as consumed here: see [`on_consumed`](Self::on_consumed).
    pub fn lower_first_limit(&self, by: u64) {
        self.debt.fetch_add(by, Ordering::AcqRel);
        let _ = self
            .limit
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| {
                Some(l.saturating_sub(by))
            });
    }

    /// The limit granted so far.
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Acquire)
    }

    /// The window: how many events may be sent and not yet consumed.
    pub fn window(&self) -> u32 {
        self.window.load(Ordering::Relaxed)
    }

    /// Sets the window for the grants from now on (the subscriptions changed). A larger window
    /// raises the limit at once: the new limit is returned, to be sent. A smaller one takes
    /// effect as events are consumed (what was granted stays granted).
    pub fn set_window(&self, window: u32) -> Option<u64> {
        let window = window.max(1);
        self.window.store(window, Ordering::Relaxed);
        self.grant()
    }

    /// An event arrived; `Err` if it is beyond the limit granted.
    pub fn on_received(&self) -> Result<(), Overrun> {
        let received = self.received.fetch_add(1, Ordering::AcqRel) + 1;
        let limit = self.limit();
        if received > limit {
            return Err(Overrun { limit });
        }
        Ok(())
    }

    /// `n` events left the subscriptions' queues (or were never queued). Returns a new limit
    /// to send once a quarter of the window is free again: not a message per event, and never
    /// so late that the publisher waits while there is room.
    pub fn on_consumed(&self, n: u64) -> Option<u64> {
        self.consumed.fetch_add(n, Ordering::AcqRel);
        self.grant()
    }

    /// Events received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Events consumed so far (those of the same peer's earlier connections included).
    pub fn consumed(&self) -> u64 {
        self.consumed.load(Ordering::Acquire)
    }

    /// Events received and not yet consumed.
    pub fn outstanding(&self) -> u64 {
        let consumed = self.consumed.load(Ordering::Acquire);
        self.received
            .load(Ordering::Acquire)
            .saturating_sub(consumed)
    }

    /// Counts `n` events consumed without raising the limit: their room goes to another
    /// window (a newer connection of the same peer).
    pub fn count_consumed(&self, n: u64) {
        self.consumed.fetch_add(n, Ordering::AcqRel);
    }

    /// Raises the limit to consumed + window (less the debt) if that frees at least a quarter
    /// of the window.
    fn grant(&self) -> Option<u64> {
        let window = u64::from(self.window());
        let step = (window / 4).max(1);
        let target = (self.consumed.load(Ordering::Acquire) + window)
            .saturating_sub(self.debt.load(Ordering::Acquire));
        let mut limit = self.limit.load(Ordering::Acquire);
        loop {
            if target < limit + step {
                return None;
            }
            match self.limit.compare_exchange_weak(
                limit,
                target,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(target),
                Err(now) => limit = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publisher_never_sends_more_than_the_subscriber_has_not_consumed_plus_the_window() {
        let rx = ReceiveWindow::new(8);
        let tx = SendWindow::new();
        // Before any grant: no room, and a publisher waits.
        assert!(!tx.try_take() && tx.waits());
        tx.raise(rx.limit(), true);
        let (mut sent, mut consumed) = (0u64, 0u64);
        // Consume one event in three: the backlog stays within the window.
        for i in 0..1_000u64 {
            if tx.try_take() {
                rx.on_received().unwrap();
                sent += 1;
            }
            if i % 3 == 0 && consumed < sent {
                consumed += 1;
                if let Some(limit) = rx.on_consumed(1) {
                    assert!(tx.raise(limit, true));
                }
            }
            assert!(sent - consumed <= 8, "{sent} sent, {consumed} consumed");
        }
        assert!(sent > 300, "{sent}");
    }

    #[test]
    fn a_grant_goes_only_once_a_quarter_of_the_window_is_free() {
        let rx = ReceiveWindow::new(100);
        assert_eq!(rx.limit(), 100);
        let grants: Vec<u64> = (0..100).filter_map(|_| rx.on_consumed(1)).collect();
        assert_eq!(grants, vec![125, 150, 175, 200]);
        // A window of 1 grants every event.
        let rx = ReceiveWindow::new(1);
        assert_eq!(rx.on_consumed(1), Some(2));
        assert_eq!(rx.on_consumed(1), Some(3));
    }

    #[test]
    fn events_beyond_the_limit_are_an_overrun() {
        let rx = ReceiveWindow::new(2);
        assert!(rx.on_received().is_ok() && rx.on_received().is_ok());
        assert_eq!(rx.on_received(), Err(Overrun { limit: 2 }));
    }

    #[test]
    fn limits_only_grow_and_a_given_back_take_is_room_again() {
        let tx = SendWindow::new();
        assert!(tx.raise(2, false));
        assert!(!tx.raise(1, false), "a lower limit changes nothing");
        assert!(!tx.waits());
        assert!(tx.try_take() && tx.try_take() && !tx.try_take());
        tx.give_back();
        assert_eq!(tx.available(), 1);
        assert!(tx.try_take());
        assert_eq!(tx.sent(), 2);
    }

    #[test]
    fn a_wider_window_grants_at_once_and_a_narrower_one_as_events_go() {
        let rx = ReceiveWindow::new(4);
        assert_eq!(rx.set_window(16), Some(16));
        assert_eq!(rx.set_window(2), None);
        // Consumed 0 + window 2 < limit 16: nothing until 15 are consumed.
        assert_eq!(rx.on_consumed(14), None);
        assert_eq!(rx.on_consumed(1), Some(17));
    }

    #[test]
    fn an_older_grant_overtaken_on_the_way_does_not_turn_the_policy_back() {
        let tx = SendWindow::new();
        assert!(tx.raise_seq(4, true, 2));
        assert!(!tx.raise_seq(4, false, 1), "the older one changes nothing");
        assert!(tx.waits());
        assert!(!tx.raise_seq(4, false, 3));
        assert!(!tx.waits());
    }

    #[test]
    fn a_first_limit_below_the_window_grows_as_earlier_events_are_consumed() {
        // 3 of 4 still unconsumed from an earlier connection: room for 1 at first, and for
        // the whole window once those 3 are consumed, never more.
        let rx = ReceiveWindow::new(4);
        rx.lower_first_limit(3);
        assert_eq!(rx.limit(), 1);
        assert_eq!(rx.on_consumed(3), Some(4));
        // Then as its own events are consumed, as any window.
        assert_eq!(rx.on_consumed(1), Some(5));
    }

    #[test]
    fn concurrent_takes_never_exceed_the_limit() {
        let tx = std::sync::Arc::new(SendWindow::new());
        tx.raise(10_000, true);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let tx = std::sync::Arc::clone(&tx);
                std::thread::spawn(move || (0..5_000).filter(|_| tx.try_take()).count())
            })
            .collect();
        let taken: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(taken, 10_000);
        assert_eq!(tx.sent(), 10_000);
    }
}
