//! A connected peer as senders see it: who it is, its lanes and the replies we wait for.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::conn::through::Gate;
use super::credit::{Inflows, PeerCredit};
use crate::id::NodeId;
use crate::metrics::PeerMetrics;
use crate::proto::handshake::ConnectionKey;
use crate::proto::requests::PendingRequests;
use crate::proto::routing::Candidate;
use crate::stats::{PeerEventStats, PeerStats};
use crate::subscription::FullPolicy;
use crate::wire::control::{PeerIdentity, ReplyError};
use crate::wire::FrameCodec;

/// What a pending request is answered with: the reply's body or the peer's error.
pub(crate) type ReplyOutcome = Result<Bytes, ReplyError>;

/// How a pending request ends, short of the peer being lost with it (its sender dropped).
#[derive(Debug)]
pub(crate) enum Answer {
    /// The peer answered.
    Reply(ReplyOutcome),
    /// The connection ended before any byte of the command was written: the peer never saw
    /// it, so it may go to another handler without breaking at-most-once. Its frame, back.
    NotSent(Bytes),
    /// The caller's deadline came first (the peer is sent a `Cancel`).
    TimedOut,
}

/// The most of the byte budget the events lane pays for at once: see
/// [`EventLane::try_send_paying`].
const PREPAY: u32 = 32 * 1024;

/// A command or event frame on its lane, holding its share of the peer's byte budget until it
/// is written: `permits` taken off the budget, which the writer gives back once it has written
/// the frame. (A frame dropped unwritten keeps its share: that happens only when the
/// connection, and the budget with it, is gone.)
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) bytes: Bytes,
    pub(crate) permits: u32,
}

/// The sending ends of a peer's lanes, in priority order.
#[derive(Debug, Clone)]
pub(crate) struct Lanes {
    /// Ping, Pong, Cancel, Interest, Goodbye.
    pub(crate) control: mpsc::Sender<Bytes>,
    pub(crate) replies: mpsc::Sender<Bytes>,
    /// Bounded in frames and, with `events`, by the peer's byte budget.
    pub(crate) commands: mpsc::Sender<Queued>,
    pub(crate) events: Arc<EventLane>,
}

/// The receiving ends, owned by the connection's writer.
#[derive(Debug)]
pub(crate) struct LaneReceivers {
    pub(crate) control: mpsc::Receiver<Bytes>,
    pub(crate) replies: mpsc::Receiver<Bytes>,
    pub(crate) commands: mpsc::Receiver<Queued>,
    pub(crate) events: EventLaneRx,
}

mod deadlines;
mod lane;
mod through;

pub(crate) use lane::{EventLane, EventLaneRx};

pub(crate) fn lanes(capacity: usize) -> (Lanes, LaneReceivers) {
    let capacity = capacity.max(1);
    let (c_tx, c_rx) = mpsc::channel(capacity);
    let (r_tx, r_rx) = mpsc::channel(capacity);
    let (k_tx, k_rx) = mpsc::channel(capacity);
    let (e_tx, e_rx) = EventLane::new(capacity);
    (
        Lanes {
            control: c_tx,
            replies: r_tx,
            commands: k_tx,
            events: e_tx,
        },
        LaneReceivers {
            control: c_rx,
            replies: r_rx,
            commands: k_rx,
            events: e_rx,
        },
    )
}

/// One established connection to a peer, shared by the routing snapshot and the senders.
pub(crate) struct PeerHandle {
    pub(crate) node_id: NodeId,
    pub(crate) identity: PeerIdentity,
    /// What arbitration compares about this connection: an acceptor checks a new `Hello`
    /// from the same node against it.
    pub(crate) key: ConnectionKey,
    /// Which connection this is, so the actor ignores news of a replaced one.
    pub(crate) conn_id: u64,
    pub(crate) lanes: Lanes,
    /// The codec for frames we send: limited by the smaller of the two `max_frame_size`s.
    pub(crate) send_codec: FrameCodec,
    /// Replies we wait for, by request id. Short critical sections only, never across `.await`.
    pending: Mutex<PendingRequests<oneshot::Sender<Answer>>>,
    /// Wakes the connection's deadline watcher when a request is due before its next check.
    deadlines: Notify,
    in_flight: AtomicUsize,
    /// Set the moment the connection is known to be failing, closing or replaced: routing
    /// skips it from then on, before the actor publishes routes without it. (An atomic, not a
    /// token: routing reads it per candidate on every send.)
    unavailable: AtomicBool,
    /// Cancelled when the connection is gone: senders stop waiting for room on its lanes.
    pub(crate) gone: CancellationToken,
    /// Set before `gone` is cancelled: what [`register`](Self::register) checks on every
    /// request (an atomic, where the token's own check takes a lock).
    is_gone: AtomicBool,
    /// Cancelled to close the connection on purpose (shutdown): the writer sends what is
    /// queued, then closes.
    pub(crate) stop: CancellationToken,
    /// Cancelled when the link failed: the writer stops at once, leaving what it has not
    /// taken on the lanes (commands there were never written, and may go elsewhere). Set
    /// with [`abort`](Self::abort), which also sets `aborted`.
    pub(crate) abort: CancellationToken,
    /// `abort` was cancelled: what the writer checks before each batch (an atomic, where the
    /// token's own check takes a lock).
    aborted: AtomicBool,
    /// Cancelled when another connection to the same node replaced this one: nothing new is
    /// sent here, and the connection closes once the replies it waits for have come and the
    /// handlers it runs have answered (within a bound).
    pub(crate) retire: CancellationToken,
    /// Bytes of commands and events queued and not yet written.
    budget: Arc<Semaphore>,
    budget_total: u32,
    /// What [`PeerStats`] reports beyond the budget, and the peer's series (frames, bytes).
    pub(crate) counters: PeerMetrics,
    /// Event credit both ways: the room the peer granted us per event name, and the room we
    /// granted it.
    pub(crate) credit: PeerCredit,
    /// When a frame from the peer last arrived, in microseconds after `heard_base`.
    heard_micros: AtomicU64,
    heard_base: std::time::Instant,
    /// Who writes to the transport now: the writer task, or a sender writing through.
    pub(crate) gate: Arc<Gate>,
}

impl PeerHandle {
    // Each argument is a part of the connection made before it; one struct for them would only
    // move the list to its one caller.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        identity: PeerIdentity,
        key: ConnectionKey,
        conn_id: u64,
        lanes: Lanes,
        send_codec: FrameCodec,
        budget_bytes: usize,
        gate: Gate,
        inflows: Arc<Inflows>,
        metrics: PeerMetrics,
    ) -> Self {
        let budget_total = u32::try_from(budget_bytes).unwrap_or(u32::MAX).max(1);
        let gate = Arc::new(gate);
        let peer_id = identity.node_id;
        PeerHandle {
            node_id: NodeId::from_u128(identity.node_id),
            identity,
            key,
            conn_id,
            send_codec,
            pending: Mutex::new(PendingRequests::new()),
            deadlines: Notify::new(),
            in_flight: AtomicUsize::new(0),
            unavailable: AtomicBool::new(false),
            gone: CancellationToken::new(),
            is_gone: AtomicBool::new(false),
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            aborted: AtomicBool::new(false),
            retire: CancellationToken::new(),
            budget: Arc::new(Semaphore::new(budget_total as usize)),
            budget_total,
            counters: metrics,
            credit: PeerCredit::new(
                lanes.control.clone(),
                send_codec,
                Arc::clone(&gate),
                inflows,
                peer_id,
            ),
            heard_micros: AtomicU64::new(0),
            heard_base: std::time::Instant::now(),
            lanes,
            gate,
        }
    }

    /// Bytes of commands and events queued for this peer and not yet written.
    pub(crate) fn queued_bytes(&self) -> u64 {
        let limit = u64::from(self.budget_total);
        // Paid for by the events lane and not yet spent is not queued.
        let available = u64::try_from(self.budget.available_permits())
            .unwrap_or(u64::MAX)
            .saturating_add(u64::from(self.lanes.events.prepaid()));
        limit.saturating_sub(available)
    }

    /// What is queued for this peer, and what its slowness cost.
    pub(crate) fn stats(&self) -> PeerStats {
        let limit = u64::from(self.budget_total);
        let commands = self.lanes.commands.max_capacity() - self.lanes.commands.capacity();
        let mut events: Vec<PeerEventStats> = self
            .credit
            .all_sending()
            .iter()
            .map(|c| PeerEventStats {
                event: c.name.to_string(),
                sent: c.window.sent(),
                waited: c.waited.load(Ordering::Relaxed),
                dropped: c.dropped.load(Ordering::Relaxed),
                credit: c.window.available(),
                when_full: if c.window.waits() {
                    FullPolicy::Wait
                } else {
                    FullPolicy::DropNewest
                },
            })
            .collect();
        events.sort_by(|a, b| a.event.cmp(&b.event));
        PeerStats {
            node_id: self.node_id,
            name: self.identity.name.clone(),
            queued_bytes: self.queued_bytes(),
            queue_bytes_limit: limit,
            queued_frames: commands.max(self.lanes.events.len()) as u64,
            queue_frames_limit: self.lanes.events.capacity() as u64,
            last_heard: self.last_heard(),
            events_queue_full: self.counters.events_queue_full.get(),
            events_dropped: self.counters.events_dropped.get(),
            events,
        }
    }

    /// A frame from the peer arrived at `at`.
    pub(crate) fn heard(&self, at: std::time::Instant) {
        let micros = at.saturating_duration_since(self.heard_base).as_micros();
        self.heard_micros
            .fetch_max(u64::try_from(micros).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// When a frame from the peer last arrived (the connection's start before any did).
    pub(crate) fn last_heard(&self) -> std::time::Instant {
        let micros = std::time::Duration::from_micros(self.heard_micros.load(Ordering::Relaxed));
        self.heard_base
            .checked_add(micros)
            .unwrap_or(self.heard_base)
    }

    /// A frame larger than the whole budget takes all of it, so it waits for an empty queue
    /// rather than forever.
    fn permits_for(&self, len: usize) -> u32 {
        u32::try_from(len)
            .unwrap_or(u32::MAX)
            .min(self.budget_total)
    }

    /// The byte budget, for the writer that gives it back as frames are written.
    pub(crate) fn budget(&self) -> Arc<Semaphore> {
        Arc::clone(&self.budget)
    }

    /// Queues the event frame `bytes` if the byte budget and the events lane both have room
    /// now; otherwise hands the frame back, or says the connection is gone.
    pub(crate) fn try_queue_event(
        &self,
        bytes: Bytes,
    ) -> Result<(), mpsc::error::TrySendError<Bytes>> {
        let permits = self.permits_for(bytes.len());
        self.lanes
            .events
            .try_send_paying(bytes, permits, &self.budget, self.prepay())
    }

    /// How much of the byte budget the events lane pays for at once: a sixteenth of it, at
    /// most [`PREPAY`], so that commands are never kept out of more than that.
    fn prepay(&self) -> u32 {
        (self.budget_total / 16).min(PREPAY)
    }

    /// Waits for room in the byte budget and on the events lane, then queues the event frame
    /// `bytes`; hands it back if the connection is gone (or goes while this waits).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the budget's share is held as a permit until the frame is queued in the
    /// same step, and given back if the lane has no room, so giving up never loses any.
    pub(crate) async fn queue_event(&self, mut bytes: Bytes) -> Result<(), Bytes> {
        let permits = self.permits_for(bytes.len());
        loop {
            let share = tokio::select! {
                share = self.budget.acquire_many(permits) => share,
                () = self.gone.cancelled() => return Err(bytes),
            };
            let Ok(share) = share else {
                return Err(bytes);
            };
            let room = self.lanes.events.room();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.lanes.events.try_send(Queued { bytes, permits }) {
                Ok(()) => {
                    share.forget();
                    return Ok(());
                }
                Err(mpsc::error::TrySendError::Closed(q)) => return Err(q.bytes),
                Err(mpsc::error::TrySendError::Full(q)) => bytes = q.bytes,
            }
            drop(share);
            tokio::select! {
                () = room => {}
                () = self.gone.cancelled() => return Err(bytes),
            }
        }
    }

    /// Queues `bytes` on `lane` (the commands lane) if the byte budget and the lane both have
    /// room now; otherwise hands the frame back, or says the connection is gone.
    pub(crate) fn try_queue(
        &self,
        lane: &mpsc::Sender<Queued>,
        bytes: Bytes,
    ) -> Result<(), mpsc::error::TrySendError<Bytes>> {
        let Some(permits) = self.try_share(bytes.len()) else {
            return Err(mpsc::error::TrySendError::Full(bytes));
        };
        lane.try_send(Queued { bytes, permits })
            .map_err(|e| self.refused(e))
    }

    /// Takes the byte budget's share of a frame of `len` bytes, if there is room now. It is
    /// taken off for good here, and given back by the writer once the frame is written (no
    /// reference to the budget travels with each frame).
    fn try_share(&self, len: usize) -> Option<u32> {
        let permits = self.permits_for(len);
        self.budget.try_acquire_many(permits).ok()?.forget();
        Some(permits)
    }

    /// A lane refused a frame: its share of the budget comes back, and the frame with the
    /// reason.
    fn refused(&self, e: mpsc::error::TrySendError<Queued>) -> mpsc::error::TrySendError<Bytes> {
        use mpsc::error::TrySendError::{Closed, Full};
        let (q, full) = match e {
            Full(q) => (q, true),
            Closed(q) => (q, false),
        };
        self.budget.add_permits(q.permits as usize);
        if full {
            Full(q.bytes)
        } else {
            Closed(q.bytes)
        }
    }

    /// Waits for room on `lane` (the commands lane) and in the byte budget, then queues `bytes`; hands `bytes` back
    /// if the connection is gone (or goes while this waits).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the lane's slot is taken first and the budget's share last, and the frame
    /// is queued in the same step as the share is taken, so giving up never loses either.
    pub(crate) async fn queue(
        &self,
        lane: &mpsc::Sender<Queued>,
        bytes: Bytes,
    ) -> Result<(), Bytes> {
        let permits = self.permits_for(bytes.len());
        let room = async {
            let slot = lane.reserve().await.ok()?;
            self.budget.acquire_many(permits).await.ok()?.forget();
            Some(slot)
        };
        let slot = tokio::select! {
            slot = room => slot,
            () = self.gone.cancelled() => None,
        };
        match slot {
            Some(slot) => {
                slot.send(Queued { bytes, permits });
                Ok(())
            }
            None => Err(bytes),
        }
    }

    /// Whether new requests may be sent here: the connection is neither failing, closing nor
    /// replaced.
    pub(crate) fn is_available(&self) -> bool {
        !self.unavailable.load(Ordering::Relaxed)
    }

    /// The link failed: the writer stops at once, and nothing more is written through.
    pub(crate) fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
        self.gate.shut();
        self.abort.cancel();
    }

    /// Whether [`abort`](Self::abort) was called.
    pub(crate) fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }

    /// Takes the connection out of every route at once: nothing new is sent here.
    pub(crate) fn set_unavailable(&self) {
        self.unavailable.store(true, Ordering::Relaxed);
    }

    /// The connection is ending: routing skips it, nothing new is registered, and senders
    /// waiting for room give up. (A sender that registered just before may still queue its
    /// frame; the connection's end finds it on the lane, unwritten.) Requests already waiting
    /// stay until [`fail_all`](Self::fail_all).
    pub(crate) fn mark_gone(&self) {
        self.set_unavailable();
        self.is_gone.store(true, Ordering::Release);
        self.gone.cancel();
    }

    /// Waits for the reply to request `id`, until `deadline` at most (the connection's
    /// deadline watcher answers [`Answer::TimedOut`] then). `false` when the peer is already
    /// gone.
    pub(crate) fn register(
        &self,
        id: u64,
        tx: oneshot::Sender<Answer>,
        deadline: Option<std::time::Instant>,
    ) -> bool {
        let Ok(mut pending) = self.pending.lock() else {
            return false;
        };
        if self.is_gone.load(Ordering::Acquire) {
            return false;
        }
        // Ids come from one node-wide counter: a duplicate is never made, and is refused.
        let Ok(wake) = pending.insert(id, tx, deadline) else {
            return false;
        };
        drop(pending);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if wake.0 {
            self.deadlines.notify_one();
        }
        true
    }

    /// Whether any request waits for a reply on this connection.
    pub(crate) fn has_pending(&self) -> bool {
        self.pending.lock().is_ok_and(|p| !p.is_empty())
    }

    /// Stops waiting for request `id`; whether it was still waiting.
    pub(crate) fn forget(&self, id: u64) -> bool {
        let removed = self
            .pending
            .lock()
            .ok()
            .and_then(|mut pending| pending.complete(id));
        if removed.is_some() {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        removed.is_some()
    }

    /// The caller of request `id` gave up (dropped its future): if it was still waiting, its
    /// entry goes and the peer is told with a `Cancel`, queued behind the command on its lane
    /// so that a command still queued is not overtaken by its own cancel (which the peer would
    /// ignore, then run the command). A full lane falls back to the control lane.
    pub(crate) fn give_up(&self, id: u64) {
        let cancel = self
            .pending
            .lock()
            .ok()
            .and_then(|mut pending| pending.cancel(id));
        let Some(frame) = cancel else {
            return;
        };
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.send_cancel(&frame);
    }

    /// Queues `Cancel` `frame` behind the commands already queued (a full lane falls back to
    /// the control lane).
    fn send_cancel(&self, frame: &crate::wire::Frame) {
        if let Ok(bytes) = super::encode(&self.send_codec, frame) {
            if let Err(mpsc::error::TrySendError::Full(bytes)) =
                self.try_queue(&self.lanes.commands, bytes)
            {
                let _ = self.lanes.control.try_send(bytes);
            }
        }
    }

    /// A reply or error for request `id` arrived.
    pub(crate) fn complete(&self, id: u64, outcome: ReplyOutcome) {
        let waiter = self
            .pending
            .lock()
            .ok()
            .and_then(|mut pending| pending.complete(id));
        if let Some(tx) = waiter {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            // The caller may have given up a moment ago; nothing to do then.
            let _ = tx.send(Answer::Reply(outcome));
        }
    }

    /// The connection is gone: every request waiting on it ends at once. Those in `unsent`
    /// (commands still on their lane when the writer stopped, with their frames) are told
    /// [`Answer::NotSent`]; the others' senders are dropped, which their callers read as
    /// `PeerLost`.
    pub(crate) fn fail_all(&self, unsent: Vec<(u64, Bytes)>) {
        self.mark_gone();
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        for (id, bytes) in unsent {
            if let Some(tx) = pending.complete(id) {
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
                let _ = tx.send(Answer::NotSent(bytes));
            }
        }
        let drained = pending.drain();
        drop(pending);
        self.in_flight.fetch_sub(drained.len(), Ordering::Relaxed);
        drop(drained);
    }
}

impl Candidate for Arc<PeerHandle> {
    fn host_id(&self) -> &str {
        &self.identity.host_id
    }

    fn cluster(&self) -> &str {
        &self.identity.cluster
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn is_available(&self) -> bool {
        PeerHandle::is_available(self)
    }
}

impl fmt::Debug for PeerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerHandle")
            .field("node_id", &self.node_id)
            .field("name", &self.identity.name)
            .field("conn_id", &self.conn_id)
            .finish_non_exhaustive()
    }
}

/// Review: a connection's handle for tests elsewhere in the crate, with lanes of `capacity`
/// (their receivers returned, to keep them open and unread).
#[cfg(test)]
pub(crate) fn handle_for_tests(capacity: usize) -> (Arc<PeerHandle>, LaneReceivers) {
    let (lanes, rxs) = lanes(capacity);
    let gate = super::conn::gate_for_tests(&lanes);
    let identity = PeerIdentity {
        node_id: 9,
        incarnation: 1,
        name: "peer".into(),
        network: "default".into(),
        cluster: "c".into(),
        host_id: "h".into(),
        addresses: Vec::new(),
        public_key: None,
    };
    let key = ConnectionKey {
        direction: crate::proto::handshake::Direction::Outbound,
        peer_incarnation: 1,
    };
    let handle = PeerHandle::new(
        identity,
        key,
        1,
        lanes,
        FrameCodec::default(),
        1 << 20,
        gate,
        Arc::default(),
        crate::metrics::PeerMetrics::default(),
    );
    (Arc::new(handle), rxs)
}
