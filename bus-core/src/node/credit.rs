//! Event credit on one connection: the runtime's half of [`crate::proto::credit`].
//!
//! As a publisher, a connection holds a [`Credit`] per event name the peer subscribes to: the
//! room the peer granted, which publishers take an event at a time and wait on when it is spent.
//! As a subscriber, it holds a [`Grant`] per event name we subscribe to: what we granted the
//! peer, checked on every event it sends, and raised (a `Credit` frame) as our subscriptions
//! take its events off their queues. Each event queued under a grant carries a [`Receipt`];
//! dropping the receipt is what counts the event as consumed.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use bytes::Bytes;
use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::conn::through::Gate;
use crate::proto::credit::{Overrun, ReceiveWindow, SendWindow};
use crate::proto::interest::MAX_NAME_LEN;
use crate::wire::control::{ControlMessage, Credit as CreditMsg, Grant as GrantMsg, MAX_NAMES};
use crate::wire::FrameCodec;

/// A publisher's room for one event name on one connection.
#[derive(Debug)]
pub(crate) struct Credit {
    pub(crate) name: Arc<str>,
    pub(crate) window: SendWindow,
    /// Woken when the limit rises (or the policy turns to drop).
    room: Notify,
    /// Publishes that found no room and waited.
    pub(crate) waited: AtomicU64,
    /// Events dropped for this peer's subscriptions: no room and they drop, or the link's
    /// queue was full.
    pub(crate) dropped: AtomicU64,
    /// The window of the newest grant (0 until one says it).
    granted_window: AtomicU32,
}

/// How waiting for room ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Room {
    /// Room for one event was taken.
    Taken,
    /// The peer's subscriptions drop when full: the event is dropped here.
    Drop,
    /// The connection is gone.
    Gone,
}

impl Credit {
    fn new(name: &str) -> Self {
        Credit {
            name: Arc::from(name),
            window: SendWindow::new(),
            room: Notify::new(),
            waited: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            granted_window: AtomicU32::new(0),
        }
    }

    /// A grant arrived.
    fn raise(&self, grant: &GrantMsg) {
        if grant.window > 0 {
            self.granted_window.store(grant.window, Ordering::Relaxed);
        }
        let more = self.window.raise_seq(grant.limit, grant.wait, grant.seq);
        if more || !self.window.waits() {
            self.room.notify_waiters();
        }
    }

    /// Events sent that the peer had not said it consumed, as of its newest grant: all of them
    /// if its grants never said their window.
    pub(crate) fn unconfirmed(&self) -> u64 {
        let window = u64::from(self.granted_window.load(Ordering::Relaxed));
        let consumed = self.window.limit().saturating_sub(window);
        let consumed = if window == 0 { 0 } else { consumed };
        self.window.sent().saturating_sub(consumed)
    }

    /// Gives back room taken for an event that was not sent after all, and lets a publisher
    /// waiting for room have it.
    pub(crate) fn give_back(&self) {
        self.window.give_back();
        self.room.notify_waiters();
    }

    /// Waits for room for one event, unless the peer's subscriptions drop or the connection
    /// (`gone`) ends first.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: room is taken only when this returns [`Room::Taken`].
    pub(crate) async fn take(&self, gone: &CancellationToken) -> Room {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.window.try_take() {
                return Room::Taken;
            }
            if !self.window.waits() {
                return Room::Drop;
            }
            tokio::select! {
                () = notified => {}
                () = gone.cancelled() => return Room::Gone,
            }
        }
    }
}

/// How a subscriber's node sends its grants: the connection's control lane, and a flag for the
/// writer when that lane was full.
struct GrantLink {
    control: mpsc::Sender<Bytes>,
    codec: FrameCodec,
    /// A grant could not be queued: the writer sends every grant's limit with its next batch.
    owed: AtomicBool,
    /// Woken when a grant is owed.
    gate: Arc<Gate>,
}

impl std::fmt::Debug for GrantLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantLink")
            .field("owed", &self.owed)
            .finish_non_exhaustive()
    }
}

/// Grants per `Credit` frame at most: with names of up to `MAX_NAME_LEN` bytes, a frame stays
/// well under the control body limit however many names a node subscribes to.
const GRANTS_PER_FRAME: usize = 256;

impl GrantLink {
    /// Queues `grants` on the control lane; what does not fit is owed, for the writer.
    fn send(&self, grants: &[GrantMsg]) {
        let mut frames = self.frames(grants).into_iter();
        let queued = frames.all(|bytes| self.control.try_send(bytes).is_ok());
        if !queued {
            self.owe();
        }
    }

    /// Every grant of `grants`, in as many frames as it takes.
    fn frames(&self, grants: &[GrantMsg]) -> Vec<Bytes> {
        grants
            .chunks(GRANTS_PER_FRAME)
            .filter_map(|chunk| {
                let frame = CreditMsg {
                    grants: chunk.to_vec(),
                }
                .to_frame();
                match frame.map(|f| super::encode(&self.codec, &f)) {
                    Ok(Ok(bytes)) => Some(bytes),
                    _ => {
                        tracing::warn!("a credit message did not encode: its grants are not sent");
                        None
                    }
                }
            })
            .collect()
    }

    fn owe(&self) {
        // Set before the writer is woken, which looks at it under the gate's lock.
        self.owed.store(true, Ordering::Release);
        self.gate.wake_writer();
    }
}

/// What a subscriber's node granted one peer for one event name.
#[derive(Debug)]
pub(crate) struct Grant {
    name: Arc<str>,
    window: ReceiveWindow,
    wait: AtomicBool,
    link: Arc<GrantLink>,
    /// The number of the last grant message made; taken with the state it reports.
    seq: Mutex<u64>,
    /// The peer's events of this name still unconsumed, over all its connections.
    inflow: Arc<Inflow>,
    /// A newer connection of the same peer has a grant of its own for this name: events
    /// consumed here make room there.
    superseded: AtomicBool,
}

impl Grant {
    fn message(&self) -> GrantMsg {
        let mut seq = self.seq.lock().unwrap_or_else(PoisonError::into_inner);
        *seq += 1;
        let limit = self.window.limit();
        GrantMsg {
            name: self.name.to_string(),
            limit,
            wait: self.wait.load(Ordering::Relaxed),
            seq: *seq,
            // What the limit stands beyond the events consumed (not the window as it is now:
            // a window just made smaller is reached by the limit only as events are consumed),
            // so that the peer reads what we consumed as limit - window.
            window: u32::try_from(limit.saturating_sub(self.window.consumed())).unwrap_or(u32::MAX),
        }
    }

    /// `n` events left the subscriptions' queues: a new limit goes once there is enough room
    /// (on the peer's newest connection, if this one was replaced).
    fn consumed(&self, n: u64) {
        if self.superseded.load(Ordering::Acquire) {
            if let Some(newer) = self.inflow.current() {
                if !std::ptr::eq(Arc::as_ptr(&newer), self) {
                    self.window.count_consumed(n);
                    newer.make_room(n);
                    return;
                }
            }
        }
        self.make_room(n);
    }

    fn make_room(&self, n: u64) {
        if self.window.on_consumed(n).is_some() {
            self.link.send(&[self.message()]);
        }
    }

    /// Counts one more event that came under this grant; `Err` if it was beyond the limit.
    /// The event is the grant's to account for until the [`Receipt`] that covers it is dropped.
    pub(crate) fn receive(&self) -> Result<(), Overrun> {
        self.window.on_received()
    }

    /// The receipt of `n` events [received](Self::receive) under this grant: dropping it counts
    /// them as consumed.
    pub(crate) fn receipt(self: &Arc<Self>, n: u64) -> Receipt {
        Receipt {
            grant: Arc::clone(self),
            n,
        }
    }

    /// How many events' receipts are worth holding together: the room that makes a new grant
    /// (a quarter of the window), so that the peer never waits on a receipt held back.
    pub(crate) fn batch(&self) -> u64 {
        (u64::from(self.window.window()) / 4).max(1)
    }

    /// The event name granted.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Events received under this grant and not consumed yet.
    #[cfg(test)]
    pub(crate) fn outstanding(&self) -> u64 {
        self.window.outstanding()
    }
}

/// Some events' share of a grant: they count as consumed when their receipt is dropped (when
/// the subscriptions have taken the last of them off their queues, or did not queue them).
#[derive(Debug)]
pub(crate) struct Receipt {
    grant: Arc<Grant>,
    n: u64,
}

impl Drop for Receipt {
    fn drop(&mut self) {
        if self.n > 0 {
            self.grant.consumed(self.n);
        }
    }
}

/// One peer's events of one name that our subscriptions have not consumed yet, over all the
/// connections the peer had: a peer that reconnects gets room for what is left of the window,
/// not a whole new one, so it cannot pile up events in a stalled queue by reconnecting.
#[derive(Debug, Default)]
pub(crate) struct Inflow {
    state: Mutex<InflowState>,
}

#[derive(Debug, Default)]
struct InflowState {
    /// Every grant made to the peer for this name that is still held (by its connection, or by
    /// a receipt of an event still queued).
    grants: Vec<Weak<Grant>>,
    /// The grant of the peer's newest connection.
    current: Weak<Grant>,
}

impl Inflow {
    fn lock(&self) -> MutexGuard<'_, InflowState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn current(&self) -> Option<Arc<Grant>> {
        self.lock().current.upgrade()
    }

    /// Makes `grant` the current one: the grant it replaces (if any) hands it the room its
    /// events free from now on. Returns what the peer's earlier grants have outstanding.
    fn replace(&self, grant: &Arc<Grant>) -> u64 {
        let mut state = self.lock();
        state.grants.retain(|g| g.strong_count() > 0);
        let outstanding = state
            .grants
            .iter()
            .filter_map(Weak::upgrade)
            .map(|g| g.window.outstanding())
            .sum();
        if let Some(older) = state.current.upgrade() {
            older.superseded.store(true, Ordering::Release);
        }
        state.grants.push(Arc::downgrade(grant));
        state.current = Arc::downgrade(grant);
        outstanding
    }
}

/// Every peer's [`Inflow`] per event name, for the node: entries go with the last grant (and
/// receipt) that holds them.
#[derive(Debug, Default)]
pub(crate) struct Inflows {
    map: Mutex<FxHashMap<InflowKey, Weak<Inflow>>>,
}

/// A peer's node id and an event name.
type InflowKey = (u128, Arc<str>);

impl Inflows {
    fn of(&self, peer: u128, name: &str) -> Arc<Inflow> {
        let key = (peer, Arc::from(name));
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(inflow) = map.get(&key).and_then(Weak::upgrade) {
            return inflow;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let inflow = Arc::new(Inflow::default());
        map.insert(key, Arc::downgrade(&inflow));
        inflow
    }
}

/// How the subscriptions of one event name take a peer's events: the room per peer, and
/// whether a publisher without room waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventFlow {
    /// How many events one peer may have sent that the subscriptions have not yet taken.
    pub(crate) window: u32,
    /// Publishers wait when it is spent (some subscription uses `Wait`); otherwise they drop.
    pub(crate) wait: bool,
}

/// The credit tables of one connection.
#[derive(Debug)]
pub(crate) struct PeerCredit {
    /// Ours to spend, by event name: what the peer granted.
    sending: Mutex<FxHashMap<Arc<str>, Arc<Credit>>>,
    /// Ours to give, by event name: what we granted the peer.
    receiving: Mutex<FxHashMap<Arc<str>, Arc<Grant>>>,
    link: Arc<GrantLink>,
    /// The node's inflows, and the peer's node id to find its own.
    inflows: Arc<Inflows>,
    peer: u128,
}

impl PeerCredit {
    pub(crate) fn new(
        control: mpsc::Sender<Bytes>,
        codec: FrameCodec,
        gate: Arc<Gate>,
        inflows: Arc<Inflows>,
        peer: u128,
    ) -> Self {
        PeerCredit {
            inflows,
            peer,
            sending: Mutex::new(FxHashMap::default()),
            receiving: Mutex::new(FxHashMap::default()),
            link: Arc::new(GrantLink {
                control,
                codec,
                owed: AtomicBool::new(false),
                gate,
            }),
        }
    }

    /// The room for event `name` on this connection (made, empty, on first use).
    pub(crate) fn sending(&self, name: &str) -> Option<Arc<Credit>> {
        let mut table = self.sending.lock().ok()?;
        if let Some(credit) = table.get(name) {
            return Some(Arc::clone(credit));
        }
        // A peer cannot make us hold more names, or longer ones, than an interest may.
        if table.len() >= MAX_NAMES || name.len() > MAX_NAME_LEN {
            return None;
        }
        let credit = Arc::new(Credit::new(name));
        table.insert(Arc::clone(&credit.name), Arc::clone(&credit));
        Some(credit)
    }

    /// Every room of ours on this connection, for its stats.
    pub(crate) fn all_sending(&self) -> Vec<Arc<Credit>> {
        self.sending
            .lock()
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The peer's `Credit` message arrived.
    pub(crate) fn on_credit(&self, msg: &CreditMsg) {
        for grant in &msg.grants {
            if let Some(credit) = self.sending(&grant.name) {
                credit.raise(grant);
            }
        }
    }

    /// What we granted the peer for event `name`, if anything.
    pub(crate) fn grant(&self, name: &str) -> Option<Arc<Grant>> {
        self.receiving.lock().ok()?.get(name).cloned()
    }

    /// Grants the peer room for the events of these names, or changes what was granted, and
    /// sends what changed (a grant once made stays for the connection's life: its limit counts
    /// from the start).
    pub(crate) fn offer(&self, flows: &[(&str, EventFlow)]) {
        let Ok(mut table) = self.receiving.lock() else {
            return;
        };
        let mut changed = Vec::new();
        for (name, flow) in flows {
            match table.get(*name) {
                Some(grant) => {
                    let raised = grant.window.set_window(flow.window).is_some();
                    let turned = grant.wait.swap(flow.wait, Ordering::Relaxed) != flow.wait;
                    if raised || turned {
                        changed.push(grant.message());
                    }
                }
                None => {
                    let inflow = self.inflows.of(self.peer, name);
                    let grant = Arc::new(Grant {
                        name: Arc::from(*name),
                        window: ReceiveWindow::new(flow.window),
                        wait: AtomicBool::new(flow.wait),
                        link: Arc::clone(&self.link),
                        seq: Mutex::new(0),
                        inflow: Arc::clone(&inflow),
                        superseded: AtomicBool::new(false),
                    });
                    // What the peer's earlier connections left unconsumed comes off the first
                    // limit; as it is consumed, it makes room here.
                    let left = inflow.replace(&grant);
                    grant.window.lower_first_limit(left);
                    changed.push(grant.message());
                    table.insert(Arc::clone(&grant.name), grant);
                }
            }
        }
        drop(table);
        if !changed.is_empty() {
            self.link.send(&changed);
        }
    }

    /// Sends every grant's limit again (the peer asked for our interest anew).
    pub(crate) fn resend(&self) {
        let all = self.all_grants();
        if !all.is_empty() {
            self.link.send(&all);
        }
    }

    fn all_grants(&self) -> Vec<GrantMsg> {
        self.receiving
            .lock()
            .map(|t| t.values().map(|g| g.message()).collect())
            .unwrap_or_default()
    }

    /// For the writer: a `Credit` frame with every grant, if one could not be queued since
    /// the last. (One relaxed load when none is owed: the writer asks before every batch.)
    pub(crate) fn take_owed(&self) -> Option<Bytes> {
        if !self.link.owed.load(Ordering::Relaxed) || !self.link.owed.swap(false, Ordering::AcqRel)
        {
            return None;
        }
        // The first frame to the writer; any others to the control lane, owed again if it is
        // still full (grants are limits, so sending one twice changes nothing).
        let mut frames = self.link.frames(&self.all_grants()).into_iter();
        let first = frames.next();
        if !frames.all(|bytes| self.link.control.try_send(bytes).is_ok()) {
            self.link.owed.store(true, Ordering::Release);
        }
        first
    }
}

/// A grant of `window` events for event `n`, made as a connection makes one, for tests
/// elsewhere in the crate; the grants it sends go nowhere.
#[cfg(test)]
pub(crate) fn grant_for_tests(window: u32) -> Arc<Grant> {
    let (control, _rx) = mpsc::channel(4);
    let (lanes, _rxs) = super::peer::lanes(4);
    let gate = Arc::new(super::conn::gate_for_tests(&lanes));
    let credit = PeerCredit::new(control, FrameCodec::default(), gate, Arc::default(), 1);
    credit.offer(&[("n", EventFlow { window, wait: true })]);
    credit
        .grant("n")
        .expect("a grant was just offered for the name")
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::atomic::AtomicBool;
    use std::task::{Context, Poll, Wake, Waker};

    use super::*;

    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn grant(limit: u64, wait: bool, seq: u64) -> GrantMsg {
        GrantMsg {
            name: "n".into(),
            limit,
            wait,
            seq,
            window: 0,
        }
    }

    /// Room given back by a publish that gave up wakes a publisher waiting for room: with a
    /// window of 1, nothing else would.
    #[test]
    fn room_given_back_wakes_a_waiting_publisher() {
        let credit = Credit::new("n");
        credit.raise(&grant(1, true, 1));
        assert!(credit.window.try_take());
        let gone = CancellationToken::new();
        let waiting = credit.take(&gone);
        tokio::pin!(waiting);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        credit.give_back();
        assert!(
            flag.0.load(Ordering::SeqCst),
            "not woken, though there is room"
        );
        assert_eq!(waiting.as_mut().poll(&mut cx), Poll::Ready(Room::Taken));
    }

    #[test]
    fn a_peer_cannot_make_us_keep_names_longer_than_an_interest_may_hold() {
        let (control, _rx) = mpsc::channel(4);
        let (lanes, _rxs) = super::super::peer::lanes(4);
        let gate = Arc::new(super::super::conn::gate_for_tests(&lanes));
        let credit = PeerCredit::new(control, FrameCodec::default(), gate, Arc::default(), 1);
        credit.on_credit(&CreditMsg {
            grants: vec![
                GrantMsg {
                    name: "n".repeat(MAX_NAME_LEN + 1),
                    ..grant(1, true, 1)
                },
                grant(1, true, 1),
            ],
        });
        let kept: Vec<String> = credit
            .all_sending()
            .iter()
            .map(|c| c.name.to_string())
            .collect();
        assert_eq!(kept, ["n"]);
    }

    /// After a member of a group leaves (the channel's window shrinks), a grant message made
    /// before the limit catches up (the wait flag turned, an interest request's `resend`, a
    /// `take_owed` after a full control lane) says how far the limit stands beyond what was
    /// consumed, not the new window: the publisher counts every event not consumed.
    #[test]
    fn unconfirmed_counts_every_event_sent_and_not_consumed_after_the_window_shrinks() {
        let g = grant_for_tests(8);
        let credit = Credit::new("n");
        credit.raise(&g.message());
        for _ in 0..8 {
            assert!(credit.window.try_take());
            g.receive().unwrap();
        }
        assert_eq!(credit.unconfirmed(), 8);
        // One of two members leaves: the window halves; the grant is said again (resend).
        assert!(g.window.set_window(4).is_none());
        credit.raise(&g.message());
        assert_eq!(
            credit.unconfirmed(),
            8,
            "nothing was consumed: none is confirmed"
        );
    }
}
