//! Requests across the mesh: ids, the table of replies we wait for, the table of handlers we run
//! for peers, cancellation and deadlines.
//!
//! Every request has an id unique per calling node. A reply is matched on (peer, id), so a reply
//! from another peer that happens to carry the same id matches nothing. A caller that stops
//! waiting removes its entry at once and sends `Cancel { id }`. When a peer dies, every request
//! waiting on it resolves at once (as `PeerLost`), and every handler running for it is cancelled.
//! The deadline travels as the time that remains, never as a wall-clock instant.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::id::NodeId;
use crate::wire::frame::{Frame, FrameKind};

/// Hands out request ids, unique per node: 1, 2, 3, ...
#[derive(Debug, Default, Clone)]
pub struct RequestIds {
    last: u64,
}

impl RequestIds {
    /// Ids from 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next id.
    pub fn next_id(&mut self) -> u64 {
        self.last = self.last.wrapping_add(1).max(1);
        self.last
    }
}

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
    /// The peer.
    pub peer: NodeId,
    /// The id.
    pub id: u64,
}

/// The replies this node waits for, keyed by (peer, request id). `W` is whatever wakes the
/// caller (a oneshot sender in the runtime).
#[derive(Debug)]
pub struct PendingRequests<W> {
    entries: HashMap<(NodeId, u64), Pending<W>>,
    deadlines: BTreeSet<(Instant, NodeId, u64)>,
}

#[derive(Debug)]
struct Pending<W> {
    waiter: W,
    deadline: Option<Instant>,
}

impl<W> Default for PendingRequests<W> {
    fn default() -> Self {
        PendingRequests {
            entries: HashMap::new(),
            deadlines: BTreeSet::new(),
        }
    }
}

impl<W> PendingRequests<W> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for the reply to request `id` sent to `peer`.
    ///
    /// # Errors
    ///
    /// [`DuplicateRequest`] if that (peer, id) is already waiting; the table is unchanged.
    pub fn insert(
        &mut self,
        peer: NodeId,
        id: u64,
        deadline: Option<Instant>,
        waiter: W,
    ) -> Result<(), DuplicateRequest> {
        match self.entries.entry((peer, id)) {
            Entry::Occupied(_) => Err(DuplicateRequest { peer, id }),
            Entry::Vacant(slot) => {
                slot.insert(Pending { waiter, deadline });
                if let Some(at) = deadline {
                    self.deadlines.insert((at, peer, id));
                }
                Ok(())
            }
        }
    }

    /// A reply (or a reply error) for `id` came from `peer`: the waiter to wake, if any.
    pub fn complete(&mut self, peer: NodeId, id: u64) -> Option<W> {
        let pending = self.entries.remove(&(peer, id))?;
        if let Some(at) = pending.deadline {
            self.deadlines.remove(&(at, peer, id));
        }
        Some(pending.waiter)
    }

    /// The caller gave up (dropped its future or timed out): forgets the entry and returns the
    /// `Cancel` frame to send to `peer`, or `None` if the request was no longer waiting.
    pub fn cancel(&mut self, peer: NodeId, id: u64) -> Option<Frame> {
        self.complete(peer, id).map(|_| cancel_frame(id))
    }

    /// `peer` died or left: every request waiting on it, to fail at once with `PeerLost`.
    pub fn on_peer_lost(&mut self, peer: NodeId) -> Vec<(u64, W)> {
        let ids: Vec<u64> = self
            .entries
            .keys()
            .filter(|(p, _)| *p == peer)
            .map(|(_, id)| *id)
            .collect();
        let mut lost: Vec<(u64, W)> = ids
            .into_iter()
            .filter_map(|id| self.complete(peer, id).map(|w| (id, w)))
            .collect();
        lost.sort_by_key(|(id, _)| *id);
        lost
    }

    /// Requests whose deadline has passed at `now`, to fail with `Timeout` (send each peer a
    /// [`cancel_frame`]).
    pub fn expire(&mut self, now: Instant) -> Vec<(NodeId, u64, W)> {
        let mut expired = Vec::new();
        while let Some(&(at, peer, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(pending) = self.entries.remove(&(peer, id)) {
                expired.push((peer, id, pending.waiter));
            }
        }
        expired
    }

    /// The earliest deadline, for the runtime's timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _, _)| *at)
    }

    /// How many replies are awaited.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no reply is awaited.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many replies are awaited from `peer` (for least-in-flight routing).
    pub fn in_flight_to(&self, peer: NodeId) -> usize {
        self.entries.keys().filter(|(p, _)| *p == peer).count()
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
    fn ids_are_unique_and_never_zero() {
        let mut ids = RequestIds::new();
        let got: Vec<u64> = (0..5).map(|_| ids.next_id()).collect();
        assert_eq!(got, vec![1, 2, 3, 4, 5]);
        let mut wrapped = RequestIds { last: u64::MAX };
        assert_eq!(wrapped.next_id(), 1);
    }

    #[test]
    fn replies_match_on_peer_and_id() {
        let mut pending = PendingRequests::new();
        pending.insert(A, 1, None, "a1").unwrap();
        pending.insert(B, 1, None, "b1").unwrap();
        assert_eq!(
            pending.insert(A, 1, None, "dup"),
            Err(DuplicateRequest { peer: A, id: 1 })
        );
        assert_eq!(pending.complete(B, 1), Some("b1"));
        assert_eq!(pending.complete(B, 1), None, "a reply is matched once");
        assert_eq!(pending.complete(A, 2), None);
        assert_eq!(pending.complete(A, 1), Some("a1"));
        assert!(pending.is_empty());
    }

    #[test]
    fn pending_requests_resolve_as_peer_lost_on_death() {
        let t0 = Instant::now();
        let mut pending = PendingRequests::new();
        pending
            .insert(A, 1, Some(t0 + Duration::from_secs(5)), "a1")
            .unwrap();
        pending.insert(A, 2, None, "a2").unwrap();
        pending.insert(B, 3, None, "b3").unwrap();
        assert_eq!(pending.in_flight_to(A), 2);
        assert_eq!(pending.on_peer_lost(A), vec![(1, "a1"), (2, "a2")]);
        assert_eq!(pending.len(), 1);
        assert_eq!(pending.in_flight_to(A), 0);
        // The dead request's deadline is gone too: nothing expires later.
        assert!(pending.expire(t0 + Duration::from_secs(60)).is_empty());
        assert_eq!(pending.complete(B, 3), Some("b3"));
    }

    #[test]
    fn a_silent_peer_fails_its_pending_requests_at_peer_timeout() {
        use crate::proto::liveness::{DeadReason, Liveness, LivenessConfig, LivenessEvent};

        let t0 = Instant::now();
        let config = LivenessConfig::default();
        let timeout = config.peer_timeout();
        let mut link_to_a = Liveness::new(config, t0).unwrap();
        let mut pending = PendingRequests::new();
        pending.insert(A, 1, None, "first").unwrap();
        pending.insert(A, 2, None, "second").unwrap();
        pending.insert(B, 3, None, "elsewhere").unwrap();

        // A peer that sends nothing is alive until exactly `peer_timeout`...
        let mut now = t0;
        while now < t0 + timeout - Duration::from_millis(1) {
            now += Duration::from_millis(250);
            let now = now.min(t0 + timeout - Duration::from_millis(1));
            if let Some(LivenessEvent::Dead { .. }) = link_to_a.poll(now) {
                panic!("declared dead early, at {:?}", now - t0);
            }
        }
        assert_eq!(pending.len(), 3);
        // ...and then every request waiting on it resolves at once, the others untouched.
        assert_eq!(
            link_to_a.poll(t0 + timeout),
            Some(LivenessEvent::Dead {
                reason: DeadReason::Silent
            })
        );
        assert_eq!(pending.on_peer_lost(A), vec![(1, "first"), (2, "second")]);
        assert_eq!(pending.len(), 1);
    }

    #[test]
    fn deadlines_expire_in_order_and_not_before() {
        let t0 = Instant::now();
        let mut pending = PendingRequests::new();
        pending
            .insert(A, 1, Some(t0 + Duration::from_millis(300)), 1)
            .unwrap();
        pending
            .insert(B, 2, Some(t0 + Duration::from_millis(100)), 2)
            .unwrap();
        pending.insert(A, 3, None, 3).unwrap();
        assert_eq!(
            pending.next_deadline(),
            Some(t0 + Duration::from_millis(100))
        );
        assert!(pending.expire(t0 + Duration::from_millis(99)).is_empty());
        assert_eq!(
            pending.expire(t0 + Duration::from_millis(100)),
            vec![(B, 2, 2)]
        );
        assert_eq!(pending.expire(t0 + Duration::from_secs(1)), vec![(A, 1, 1)]);
        assert_eq!(pending.next_deadline(), None);
        assert_eq!(pending.len(), 1);
    }

    #[test]
    fn a_caller_that_gives_up_sends_cancel_once() {
        let mut pending = PendingRequests::new();
        pending.insert(A, 9, None, ()).unwrap();
        let frame = pending.cancel(A, 9).expect("a cancel frame");
        assert_eq!(frame.kind, FrameKind::Cancel);
        assert_eq!(frame.request_id, 9);
        assert!(pending.cancel(A, 9).is_none(), "nothing to cancel twice");
        assert!(
            pending.complete(A, 9).is_none(),
            "a late reply matches nothing"
        );
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
