//! Counters a program can read to see what the bus dropped or what failed, and which peers
//! read slower than we send.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::id::NodeId;

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
    /// Events that found a peer's queue full (its byte budget or its event lane), whatever
    /// the policy: with [`FullPolicy::Wait`](crate::FullPolicy::Wait) the publisher waited
    /// for that peer, with `DropNewest` the event was dropped for it. A growing count means a
    /// peer reads slower than we publish; [`Bus::peer_stats`](crate::Bus::peer_stats) says
    /// which.
    pub peer_events_queue_full: u64,
    /// Events from peers dropped unread because their compressed body declared more than
    /// [`BusBuilder::max_decompressed_size`](crate::BusBuilder::max_decompressed_size).
    pub remote_events_too_large: u64,
    /// Live members of the mesh this node knows of, itself not counted (a gauge): at most
    /// the membership's table size.
    pub members: u64,
    /// Dials under way (a gauge): at most the membership's `max_dials_in_flight`.
    pub dials_in_flight: u64,
    /// The most dials that were ever under way at once.
    pub dials_in_flight_peak: u64,
}

/// What this node has queued for one peer, from [`Bus::peer_stats`](crate::Bus::peer_stats):
/// how an application sees that a peer is slow (its queue stays near its bound, events find
/// it full) and what that cost (events dropped for it).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerStats {
    /// The peer's node id.
    pub node_id: NodeId,
    /// Its name.
    pub name: String,
    /// Bytes of commands and events queued for the peer and not yet written to its link.
    pub queued_bytes: u64,
    /// The bound on `queued_bytes`, from
    /// [`BusBuilder::peer_queue_bytes`](crate::BusBuilder::peer_queue_bytes).
    pub queue_bytes_limit: u64,
    /// Events that found this peer's queue full: the publisher waited for it
    /// ([`FullPolicy::Wait`](crate::FullPolicy::Wait)) or dropped the event for it
    /// (`DropNewest`).
    pub events_queue_full: u64,
    /// Events dropped for this peer: its queue was full and the policy drops, or the event
    /// was over its frame size limit.
    pub events_dropped: u64,
}

/// The counters of one peer connection.
#[derive(Debug, Default)]
pub(crate) struct PeerCounters {
    pub(crate) events_queue_full: AtomicU64,
    pub(crate) events_dropped: AtomicU64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) events_dropped: AtomicU64,
    pub(crate) event_handler_errors: AtomicU64,
    pub(crate) event_handler_panics: AtomicU64,
    pub(crate) command_handler_panics: AtomicU64,
    pub(crate) remote_events_dropped: AtomicU64,
    pub(crate) peer_events_dropped: AtomicU64,
    pub(crate) peer_events_queue_full: AtomicU64,
    pub(crate) remote_events_too_large: AtomicU64,
    pub(crate) members: AtomicU64,
    pub(crate) dials_in_flight: AtomicU64,
    pub(crate) dials_in_flight_peak: AtomicU64,
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
            peer_events_queue_full: self.peer_events_queue_full.load(Ordering::Relaxed),
            remote_events_too_large: self.remote_events_too_large.load(Ordering::Relaxed),
            members: self.members.load(Ordering::Relaxed),
            dials_in_flight: self.dials_in_flight.load(Ordering::Relaxed),
            dials_in_flight_peak: self.dials_in_flight_peak.load(Ordering::Relaxed),
        }
    }
}
