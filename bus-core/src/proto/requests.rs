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
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use crate::id::NodeId;
use crate::wire::frame::{Frame, FrameKind};

/// A hasher for request ids and node ids: one multiplication per word, where the default
/// SipHash costs tens of nanoseconds per lookup on every command and reply. The tables it
/// serves are small and bounded (ids we chose, or a peer's handlers under its cap), so a key a
/// peer picks to collide costs at most a walk over that bound.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: the multiplication spreads the low bits of a counter into the
        // high ones the table's probe uses.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by ids, hashed with [`IdHasher`].
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

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

/// The replies this node waits for on one connection, by request id, with their callers'
/// deadlines. `W` is whatever wakes the caller (a oneshot sender in the runtime).
///
/// One table per connection: a reply is matched on the connection it came from, so a reply
/// from another peer that happens to carry the same id matches nothing, and the connection's
/// end fails exactly its own requests ([`drain`](Self::drain)). The deadline is the caller's:
/// it travels to the peer as [`remaining`] time, and a caller that stops waiting (it was
/// dropped) [`cancel`](Self::cancel)s its entry.
///
/// Deadlines are kept without a timer per request: one watcher per table sleeps until
/// [`next_check`](Self::next_check) and then [`expire`](Self::expire)s what is due. A request
/// whose deadline is later than the watcher's next check (the usual case: requests that get
/// the same timeout come in deadline order) changes nothing; only one due earlier asks for the
/// watcher to be woken sooner. An entry answered in time is removed with no timer to clear.
#[derive(Debug)]
pub struct PendingRequests<W> {
    entries: IdMap<u64, Waiting<W>>,
    /// When the watcher looks next, if any deadline is known to it: never later than the
    /// earliest deadline waiting (it may be earlier, for an entry answered since).
    next_check: Option<Instant>,
}

#[derive(Debug)]
struct Waiting<W> {
    waiter: W,
    deadline: Option<Instant>,
}

impl<W> Default for PendingRequests<W> {
    fn default() -> Self {
        PendingRequests {
            entries: IdMap::default(),
            next_check: None,
        }
    }
}

/// Whether a new entry's deadline is earlier than the watcher's next check: the watcher must
/// be woken to sleep less.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeWatcher(pub bool);

impl<W> PendingRequests<W> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for the reply to request `id` until `deadline` (forever if `None`).
    ///
    /// # Errors
    ///
    /// [`DuplicateRequest`] if `id` is already waiting; the table is unchanged.
    pub fn insert(
        &mut self,
        id: u64,
        waiter: W,
        deadline: Option<Instant>,
    ) -> Result<WakeWatcher, DuplicateRequest> {
        match self.entries.entry(id) {
            Entry::Occupied(_) => return Err(DuplicateRequest { id }),
            Entry::Vacant(slot) => {
                slot.insert(Waiting { waiter, deadline });
            }
        }
        let Some(deadline) = deadline else {
            return Ok(WakeWatcher(false));
        };
        if self.next_check.is_some_and(|next| next <= deadline) {
            return Ok(WakeWatcher(false));
        }
        self.next_check = Some(deadline);
        Ok(WakeWatcher(true))
    }

    /// A reply (or a reply error) for `id` arrived: the waiter to wake, if it still waits.
    pub fn complete(&mut self, id: u64) -> Option<W> {
        self.entries.remove(&id).map(|w| w.waiter)
    }

    /// The caller gave up (dropped its future): forgets the entry and returns the `Cancel`
    /// frame to send, or `None` if the request was no longer waiting (so a request is
    /// cancelled at most once, and never after its reply).
    pub fn cancel(&mut self, id: u64) -> Option<Frame> {
        self.complete(id).map(|_| cancel_frame(id))
    }

    /// When the watcher should look next; `None` while no deadline waits.
    pub fn next_check(&self) -> Option<Instant> {
        self.next_check
    }

    /// The watcher's look at `now`: every request whose deadline has come, by id, removed (to
    /// be told so, and their peer sent a `Cancel`). The next check is then the earliest
    /// deadline still waiting.
    pub fn expire(&mut self, now: Instant) -> Vec<(u64, W)> {
        if self.next_check.is_none_or(|next| next > now) {
            return Vec::new();
        }
        let due: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, w)| w.deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        let mut expired: Vec<(u64, W)> = due
            .into_iter()
            .filter_map(|id| Some((id, self.entries.remove(&id)?.waiter)))
            .collect();
        expired.sort_by_key(|(id, _)| *id);
        self.next_check = self.entries.values().filter_map(|w| w.deadline).min();
        expired
    }

    /// The connection is gone: every request still waiting, by id, to fail at once.
    pub fn drain(&mut self) -> Vec<(u64, W)> {
        let mut lost: Vec<(u64, W)> = self.entries.drain().map(|(id, w)| (id, w.waiter)).collect();
        lost.sort_by_key(|(id, _)| *id);
        self.next_check = None;
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
    running: IdMap<NodeId, IdMap<u64, Option<C>>>,
}

impl<C> InboundRequests<C> {
    /// At most `per_peer_limit` handlers at once for any one peer (at least 1).
    pub fn new(per_peer_limit: usize) -> Self {
        InboundRequests {
            per_peer_limit: per_peer_limit.max(1),
            running: IdMap::default(),
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
        self.check(peer, id)?;
        self.running
            .entry(peer)
            .or_default()
            .insert(id, Some(cancel));
        Ok(())
    }

    /// Whether a request `id` from `peer` would be [`admit`](Self::admit)ted now, without
    /// taking a slot: a handler that finishes within the call that starts it never needs one.
    ///
    /// # Errors
    ///
    /// [`Overloaded`], as [`admit`](Self::admit) would answer.
    pub fn check(&self, peer: NodeId, id: u64) -> Result<(), Overloaded> {
        let limit = self.per_peer_limit;
        match self.running.get(&peer) {
            Some(running) if running.len() >= limit || running.contains_key(&id) => {
                Err(Overloaded { limit })
            }
            _ => Ok(()),
        }
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
        self.running.get(&peer).map_or(0, |r| r.len())
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
        pending.insert(1, "a1", None).unwrap();
        pending.insert(2, "a2", None).unwrap();
        assert_eq!(
            pending.insert(1, "dup", None),
            Err(DuplicateRequest { id: 1 })
        );
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
        link_a.insert(2, "a2", None).unwrap();
        link_a.insert(1, "a1", None).unwrap();
        link_a.insert(3, "a3", None).unwrap();
        link_b.insert(1, "b1", None).unwrap();
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
        pending.insert(1, "first", None).unwrap();
        pending.insert(2, "second", None).unwrap();

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
        pending.insert(9, (), None).unwrap();
        let frame = pending.cancel(9).expect("a cancel frame");
        assert_eq!(frame.kind, FrameKind::Cancel);
        assert_eq!(frame.request_id, 9);
        assert!(pending.cancel(9).is_none(), "nothing to cancel twice");
        assert!(
            pending.complete(9).is_none(),
            "a late reply matches nothing"
        );
        // A request answered before its caller gave up is not cancelled.
        pending.insert(10, (), None).unwrap();
        assert_eq!(pending.complete(10), Some(()));
        assert!(pending.cancel(10).is_none());
    }

    #[test]
    fn deadlines_expire_at_the_watchers_check_without_a_timer_each() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut pending = PendingRequests::new();
        // The first deadline sets the watcher's next check; later ones leave it alone.
        assert_eq!(
            pending.insert(1, "a", Some(t0 + ms(100))),
            Ok(WakeWatcher(true))
        );
        assert_eq!(
            pending.insert(2, "b", Some(t0 + ms(150))),
            Ok(WakeWatcher(false))
        );
        assert_eq!(pending.insert(3, "c", None), Ok(WakeWatcher(false)));
        assert_eq!(pending.next_check(), Some(t0 + ms(100)));
        // An earlier one wakes the watcher to sleep less.
        assert_eq!(
            pending.insert(4, "d", Some(t0 + ms(50))),
            Ok(WakeWatcher(true))
        );
        assert_eq!(pending.next_check(), Some(t0 + ms(50)));
        // Nothing is due before its deadline.
        assert!(pending.expire(t0 + ms(49)).is_empty());
        assert_eq!(pending.len(), 4);
        // Answered in time: gone, with nothing to clear.
        assert_eq!(pending.complete(4), Some("d"));
        // The check at 50 finds nothing due and moves on to the earliest still waiting.
        assert!(pending.expire(t0 + ms(50)).is_empty());
        assert_eq!(pending.next_check(), Some(t0 + ms(100)));
        assert_eq!(pending.expire(t0 + ms(150)), vec![(1, "a"), (2, "b")]);
        // Only the one without a deadline is left, and nothing to check for.
        assert_eq!(pending.next_check(), None);
        assert_eq!(pending.len(), 1);
        assert!(
            pending.complete(1).is_none(),
            "a late reply matches nothing"
        );
        assert!(
            pending.cancel(2).is_none(),
            "an expired request is not cancelled twice"
        );
        // A deadline already past asks for the watcher at once.
        assert_eq!(pending.insert(5, "e", Some(t0)), Ok(WakeWatcher(true)));
        assert_eq!(pending.expire(t0), vec![(5, "e")]);
        assert_eq!(pending.drain(), vec![(3, "c")]);
        assert_eq!(pending.next_check(), None);
    }

    #[test]
    fn checking_for_room_takes_no_slot() {
        let mut inbound = InboundRequests::new(1);
        assert_eq!(inbound.check(A, 1), Ok(()));
        assert_eq!(inbound.check(A, 1), Ok(()), "a check takes nothing");
        assert_eq!(inbound.running_for(A), 0);
        inbound.admit(A, 1, ()).unwrap();
        assert_eq!(inbound.check(A, 2), Err(Overloaded { limit: 1 }));
        assert_eq!(inbound.check(A, 1), Err(Overloaded { limit: 1 }));
        assert_eq!(inbound.check(B, 1), Ok(()));
        assert!(inbound.finish(A, 1));
        assert_eq!(inbound.check(A, 2), Ok(()));
    }

    #[test]
    fn the_id_hasher_spreads_counters_and_hashes_node_ids() {
        use std::hash::BuildHasher;
        let build = BuildHasherDefault::<IdHasher>::default();
        let hashes: std::collections::HashSet<u64> =
            (1..=1000u64).map(|id| build.hash_one(id) >> 57).collect();
        // The table's probe reads the top 7 bits: a counter must not leave them all alike.
        assert!(hashes.len() > 64, "{} distinct top bits", hashes.len());
        assert_ne!(build.hash_one(A), build.hash_one(B));
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
