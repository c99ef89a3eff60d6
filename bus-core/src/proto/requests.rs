//! Requests across the mesh: ids, the table of replies we wait for, the table of handlers we run
//! for peers, cancellation and deadlines.
//!
//! Every request has an id unique per calling node (from one counter every sending task shares).
//! A reply is matched on (connection, id), so a reply from another peer that happens to carry
//! the same id matches nothing. A caller that stops
//! waiting removes its entry at once and sends `Cancel { id }`. When a peer dies, every request
//! waiting on it resolves at once (as `PeerLost`), and every handler running for it is cancelled.
//! The deadline travels as the time that remains, never as a wall-clock instant.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::id::NodeId;
use crate::wire::frame::{Frame, FrameKind};

/// The time that remains until `deadline`, as it travels on the wire (zero once passed).
pub fn remaining(deadline: Instant, now: Instant) -> Duration {
    deadline.saturating_duration_since(now)
}

/// The local deadline of a request that arrived with `remaining` time at `now`.
pub fn deadline_from_remaining(remaining: Duration, now: Instant) -> Instant {
    // A peer chooses the remaining time: cap it, so it can neither overflow `Instant` nor keep
    // a handler's deadline meaningfully in the future for longer than a day.
    let capped = remaining.min(MAX_REMAINING);
    now.checked_add(capped).unwrap_or(now)
}

/// The longest remaining time a request may carry; more is read as this.
pub const MAX_REMAINING: Duration = Duration::from_secs(24 * 3600);

/// The frame that tells a peer we no longer wait for request `id`.
pub fn cancel_frame(id: u64) -> Frame {
    let mut frame = Frame::new(FrameKind::Cancel, bytes::Bytes::new());
    frame.request_id = id;
    frame
}

/// A request id that is already waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DuplicateRequest {
    /// The id.
    pub id: u64,
}

/// The replies this node waits for on one connection, by request id. `W` is whatever wakes
/// the caller (a oneshot sender in the runtime).
///
/// One table per connection: a reply is matched on the connection it came from, so a reply
/// from another peer that happens to carry the same id matches nothing, and the connection's
/// end fails exactly its own requests ([`drain`](Self::drain)). The deadline is the caller's:
/// it travels to the peer as [`remaining`] time, and a caller that stops waiting (its deadline
/// passed, or it was dropped) [`cancel`](Self::cancel)s its entry.
#[derive(Debug)]
pub struct PendingRequests<W> {
    entries: HashMap<u64, W>,
}

impl<W> Default for PendingRequests<W> {
    fn default() -> Self {
        PendingRequests {
            entries: HashMap::new(),
        }
    }
}

impl<W> PendingRequests<W> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for the reply to request `id`.
    ///
    /// # Errors
    ///
    /// [`DuplicateRequest`] if `id` is already waiting; the table is unchanged.
    pub fn insert(&mut self, id: u64, waiter: W) -> Result<(), DuplicateRequest> {
        match self.entries.entry(id) {
            Entry::Occupied(_) => Err(DuplicateRequest { id }),
            Entry::Vacant(slot) => {
                slot.insert(waiter);
                Ok(())
            }
        }
    }

    /// A reply (or a reply error) for `id` arrived: the waiter to wake, if it still waits.
    pub fn complete(&mut self, id: u64) -> Option<W> {
        self.entries.remove(&id)
    }

    /// The caller gave up (dropped its future, or its deadline passed): forgets the entry and
    /// returns the `Cancel` frame to send, or `None` if the request was no longer waiting (so
    /// a request is cancelled at most once, and never after its reply).
    pub fn cancel(&mut self, id: u64) -> Option<Frame> {
        self.complete(id).map(|_| cancel_frame(id))
    }

    /// The connection is gone: every request still waiting, by id, to fail at once.
    pub fn drain(&mut self) -> Vec<(u64, W)> {
        let mut lost: Vec<(u64, W)> = self.entries.drain().collect();
        lost.sort_by_key(|(id, _)| *id);
        lost
    }

    /// How many replies are awaited.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no reply is awaited.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Too many handlers already run for this peer: answer `Overloaded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded {
    /// The cap that was reached.
    pub limit: usize,
}

/// The handlers this node runs for its peers, capped per peer. `C` is whatever cancels a
/// handler (a cancellation token in the runtime).
///
/// Handlers stop cooperatively, so a cancelled handler keeps counting against its peer's cap
/// until it has [`finish`](InboundRequests::finish)ed: a peer cannot start more handlers by
/// cancelling the ones it started.
#[derive(Debug)]
pub struct InboundRequests<C> {
    per_peer_limit: usize,
    /// Per peer, per request id: the handle to cancel with, taken once it has been used.
    running: HashMap<NodeId, HashMap<u64, Option<C>>>,
}

impl<C> InboundRequests<C> {
    /// At most `per_peer_limit` handlers at once for any one peer (at least 1).
    pub fn new(per_peer_limit: usize) -> Self {
        InboundRequests {
            per_peer_limit: per_peer_limit.max(1),
            running: HashMap::new(),
        }
    }

    /// A request `id` from `peer` wants a handler.
    ///
    /// # Errors
    ///
    /// [`Overloaded`] when `peer` already has its limit of handlers running, or when the same id
    /// is already running (a peer reusing a live id gets the same answer rather than a second
    /// handler).
    pub fn admit(&mut self, peer: NodeId, id: u64, cancel: C) -> Result<(), Overloaded> {
        let limit = self.per_peer_limit;
        let running = self.running.entry(peer).or_default();
        if running.len() >= limit || running.contains_key(&id) {
            return Err(Overloaded { limit });
        }
        running.insert(id, Some(cancel));
        Ok(())
    }

    /// The handler for (`peer`, `id`) finished (its reply, if any, is being sent): its slot is
    /// free. Returns whether it was running.
    pub fn finish(&mut self, peer: NodeId, id: u64) -> bool {
        let Some(running) = self.running.get_mut(&peer) else {
            return false;
        };
        let was = running.remove(&id).is_some();
        if running.is_empty() {
            self.running.remove(&peer);
        }
        was
    }

    /// `peer` sent `Cancel { id }`: the handle to signal the handler with, the first time. The
    /// handler keeps its slot until it finishes.
    pub fn cancel(&mut self, peer: NodeId, id: u64) -> Option<C> {
        self.running.get_mut(&peer)?.get_mut(&id)?.take()
    }

    /// `peer` died or left: the handles of every handler still running for it, to cancel. They
    /// keep their slots until they finish.
    pub fn on_peer_lost(&mut self, peer: NodeId) -> Vec<(u64, C)> {
        let mut cancelled: Vec<(u64, C)> = self
            .running
            .get_mut(&peer)
            .map(|m| {
                m.iter_mut()
                    .filter_map(|(id, c)| Some((*id, c.take()?)))
                    .collect()
            })
            .unwrap_or_default();
        cancelled.sort_by_key(|(id, _)| *id);
        cancelled
    }

    /// How many handlers run for `peer`.
    pub fn running_for(&self, peer: NodeId) -> usize {
        self.running.get(&peer).map_or(0, HashMap::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId::from_u128(0xa);
    const B: NodeId = NodeId::from_u128(0xb);

    #[test]
    fn replies_match_on_id_once() {
        let mut pending = PendingRequests::new();
        pending.insert(1, "a1").unwrap();
        pending.insert(2, "a2").unwrap();
        assert_eq!(pending.insert(1, "dup"), Err(DuplicateRequest { id: 1 }));
        assert_eq!(pending.len(), 2);
        assert_eq!(pending.complete(2), Some("a2"));
        assert_eq!(pending.complete(2), None, "a reply is matched once");
        assert_eq!(pending.complete(3), None);
        assert_eq!(
            pending.complete(1),
            Some("a1"),
            "the duplicate left the first alone"
        );
        assert!(pending.is_empty());
    }

    #[test]
    fn a_lost_connection_fails_every_request_still_waiting_on_it() {
        let mut link_a = PendingRequests::new();
        let mut link_b = PendingRequests::new();
        link_a.insert(2, "a2").unwrap();
        link_a.insert(1, "a1").unwrap();
        link_a.insert(3, "a3").unwrap();
        link_b.insert(1, "b1").unwrap();
        assert_eq!(link_a.complete(3), Some("a3"));
        assert_eq!(link_a.drain(), vec![(1, "a1"), (2, "a2")]);
        assert!(link_a.is_empty());
        assert_eq!(link_a.complete(1), None, "a late reply matches nothing");
        // The same id on another connection is another request.
        assert_eq!(link_b.complete(1), Some("b1"));
    }

    #[test]
    fn a_silent_peer_fails_its_pending_requests_at_peer_timeout() {
        use crate::proto::liveness::{DeadReason, Liveness, LivenessConfig, LivenessEvent};

        let t0 = Instant::now();
        let config = LivenessConfig::default();
        let timeout = config.peer_timeout();
        let mut link_to_a = Liveness::new(config, t0).unwrap();
        let mut pending = PendingRequests::new();
        pending.insert(1, "first").unwrap();
        pending.insert(2, "second").unwrap();

        // A peer that sends nothing is alive until exactly `peer_timeout`...
        let mut now = t0;
        while now < t0 + timeout - Duration::from_millis(1) {
            now += Duration::from_millis(250);
            let now = now.min(t0 + timeout - Duration::from_millis(1));
            if let Some(LivenessEvent::Dead { .. }) = link_to_a.poll(now) {
                panic!("declared dead early, at {:?}", now - t0);
            }
        }
        assert_eq!(pending.len(), 2);
        // ...and then every request waiting on it resolves at once.
        assert_eq!(
            link_to_a.poll(t0 + timeout),
            Some(LivenessEvent::Dead {
                reason: DeadReason::Silent
            })
        );
        assert_eq!(pending.drain(), vec![(1, "first"), (2, "second")]);
    }

    #[test]
    fn a_caller_that_gives_up_sends_cancel_once() {
        let mut pending = PendingRequests::new();
        pending.insert(9, ()).unwrap();
        let frame = pending.cancel(9).expect("a cancel frame");
        assert_eq!(frame.kind, FrameKind::Cancel);
        assert_eq!(frame.request_id, 9);
        assert!(pending.cancel(9).is_none(), "nothing to cancel twice");
        assert!(
            pending.complete(9).is_none(),
            "a late reply matches nothing"
        );
        // A request answered before its caller gave up is not cancelled.
        pending.insert(10, ()).unwrap();
        assert_eq!(pending.complete(10), Some(()));
        assert!(pending.cancel(10).is_none());
    }

    #[test]
    fn the_deadline_travels_as_remaining_time() {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_millis(1500);
        let sent_at = t0 + Duration::from_millis(500);
        let on_wire = remaining(deadline, sent_at);
        assert_eq!(on_wire, Duration::from_millis(1000));
        // The receiver's clock is unrelated to ours; only the remaining time matters.
        let there = Instant::now() + Duration::from_secs(3600);
        assert_eq!(
            deadline_from_remaining(on_wire, there),
            there + Duration::from_millis(1000)
        );
        assert_eq!(
            remaining(deadline, deadline + Duration::from_secs(1)),
            Duration::ZERO
        );
        // A peer's absurd remaining time is capped, and does not overflow.
        assert_eq!(
            deadline_from_remaining(Duration::MAX, there),
            there + MAX_REMAINING
        );
    }

    #[test]
    fn inbound_handlers_are_capped_per_peer() {
        let mut inbound = InboundRequests::new(2);
        inbound.admit(A, 1, "a1").unwrap();
        inbound.admit(A, 2, "a2").unwrap();
        assert_eq!(inbound.admit(A, 3, "a3"), Err(Overloaded { limit: 2 }));
        // Another peer has its own allowance.
        inbound.admit(B, 1, "b1").unwrap();
        // A reused live id is refused, not run twice.
        assert_eq!(inbound.admit(B, 1, "again"), Err(Overloaded { limit: 2 }));
        assert!(inbound.finish(A, 1));
        assert!(!inbound.finish(A, 1), "finished once");
        inbound.admit(A, 3, "a3").unwrap();
        assert_eq!(inbound.cancel(A, 3), Some("a3"));
        assert_eq!(inbound.cancel(A, 3), None, "signalled once");
        assert_eq!(inbound.on_peer_lost(A), vec![(2, "a2")]);
        // Cancelled handlers still hold their slots until they finish.
        assert_eq!(inbound.running_for(A), 2);
        assert_eq!(inbound.admit(A, 4, "a4"), Err(Overloaded { limit: 2 }));
        assert!(inbound.finish(A, 2) && inbound.finish(A, 3));
        assert_eq!(inbound.running_for(A), 0);
        assert_eq!(inbound.running_for(B), 1);
    }

    #[test]
    fn cancelling_does_not_free_a_slot_before_the_handler_finishes() {
        let mut inbound = InboundRequests::new(1);
        let mut started = 0;
        for id in 1..=100u64 {
            if inbound.admit(A, id, ()).is_ok() {
                started += 1;
            }
            // A peer that cancels at once, against a handler that ignores cancellation.
            let _ = inbound.cancel(A, id);
        }
        assert_eq!(started, 1);
    }
}
