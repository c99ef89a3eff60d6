//! Counters a program can read to see what the bus dropped or what failed.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the bus's counters, from [`Bus::stats`](crate::Bus::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusStats {
    /// Events dropped because a subscription's queue was full and its policy is
    /// [`FullPolicy::DropNewest`](crate::FullPolicy::DropNewest).
    pub events_dropped: u64,
    /// Event handler invocations that returned `Err`.
    pub event_handler_errors: u64,
    /// Event handler invocations that panicked.
    pub event_handler_panics: u64,
    /// Command handler invocations that panicked (each became a `HandlerFailed` for its caller).
    pub command_handler_panics: u64,
    /// Events from peers dropped because a subscription's queue was full: a connection never
    /// waits for a subscriber, whatever its policy.
    pub remote_events_dropped: u64,
    /// Events not queued for a peer because its event lane was full and the publisher's policy
    /// drops.
    pub peer_events_dropped: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) events_dropped: AtomicU64,
    pub(crate) event_handler_errors: AtomicU64,
    pub(crate) event_handler_panics: AtomicU64,
    pub(crate) command_handler_panics: AtomicU64,
    pub(crate) remote_events_dropped: AtomicU64,
    pub(crate) peer_events_dropped: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> BusStats {
        BusStats {
            events_dropped: self.events_dropped.load(Ordering::Relaxed),
            event_handler_errors: self.event_handler_errors.load(Ordering::Relaxed),
            event_handler_panics: self.event_handler_panics.load(Ordering::Relaxed),
            command_handler_panics: self.command_handler_panics.load(Ordering::Relaxed),
            remote_events_dropped: self.remote_events_dropped.load(Ordering::Relaxed),
            peer_events_dropped: self.peer_events_dropped.load(Ordering::Relaxed),
        }
    }
}
