//! Event credit on one connection: the runtime's half of [`crate::proto::credit`].
//!
//! As a publisher, a connection holds a [`Credit`] per event name the peer subscribes to: the
//! room the peer granted, which publishers take an event at a time and wait on when it is spent.
//! As a subscriber, it holds a [`Grant`] per event name we subscribe to: what we granted the
//! peer, checked on every event it sends, and raised (a `Credit` frame) as our subscriptions
//! take its events off their queues. Each event queued under a grant carries a [`Receipt`];
//! dropping the receipt is what counts the event as consumed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::proto::credit::{Overrun, ReceiveWindow, SendWindow};
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
        }
    }

    /// A grant arrived.
    fn raise(&self, limit: u64, wait: bool) {
        let more = self.window.raise(limit, wait);
        if more || !wait {
            self.room.notify_waiters();
        }
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
#[derive(Debug)]
struct GrantLink {
    control: mpsc::Sender<Bytes>,
    codec: FrameCodec,
    /// A grant could not be queued: the writer sends every grant's limit with its next batch.
    owed: AtomicBool,
}

impl GrantLink {
    fn send(&self, grants: Vec<GrantMsg>) {
        let frame = CreditMsg { grants }.to_frame();
        let queued = frame
            .ok()
            .and_then(|f| super::encode(&self.codec, &f).ok())
            .is_some_and(|bytes| self.control.try_send(bytes).is_ok());
        if !queued {
            self.owed.store(true, Ordering::Release);
        }
    }
}

/// What a subscriber's node granted one peer for one event name.
#[derive(Debug)]
pub(crate) struct Grant {
    name: Arc<str>,
    window: ReceiveWindow,
    wait: AtomicBool,
    link: Arc<GrantLink>,
}

impl Grant {
    fn message(&self) -> GrantMsg {
        GrantMsg {
            name: self.name.to_string(),
            limit: self.window.limit(),
            wait: self.wait.load(Ordering::Relaxed),
        }
    }

    /// `n` events left the subscriptions' queues: a new limit goes once there is enough room.
    fn consumed(&self, n: u64) {
        if self.window.on_consumed(n).is_some() {
            self.link.send(vec![self.message()]);
        }
    }

    /// One more event came under this grant: its receipt, or `Err` if it was beyond the limit.
    pub(crate) fn receive(self: &Arc<Self>) -> Result<Receipt, Overrun> {
        self.window.on_received()?;
        Ok(Receipt(Arc::clone(self)))
    }

    /// The event name granted.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

/// One event's share of a grant: the event counts as consumed when its receipt is dropped
/// (when the subscriptions have taken it off their queues, or did not queue it at all).
#[derive(Debug)]
pub(crate) struct Receipt(Arc<Grant>);

impl Drop for Receipt {
    fn drop(&mut self) {
        self.0.consumed(1);
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
}

impl PeerCredit {
    pub(crate) fn new(control: mpsc::Sender<Bytes>, codec: FrameCodec) -> Self {
        PeerCredit {
            sending: Mutex::new(FxHashMap::default()),
            receiving: Mutex::new(FxHashMap::default()),
            link: Arc::new(GrantLink {
                control,
                codec,
                owed: AtomicBool::new(false),
            }),
        }
    }

    /// The room for event `name` on this connection (made, empty, on first use).
    pub(crate) fn sending(&self, name: &str) -> Option<Arc<Credit>> {
        let mut table = self.sending.lock().ok()?;
        if let Some(credit) = table.get(name) {
            return Some(Arc::clone(credit));
        }
        // A peer cannot make us hold more names than an interest may.
        if table.len() >= MAX_NAMES {
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
                credit.raise(grant.limit, grant.wait);
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
                    let grant = Arc::new(Grant {
                        name: Arc::from(*name),
                        window: ReceiveWindow::new(flow.window),
                        wait: AtomicBool::new(flow.wait),
                        link: Arc::clone(&self.link),
                    });
                    changed.push(grant.message());
                    table.insert(Arc::clone(&grant.name), grant);
                }
            }
        }
        drop(table);
        if !changed.is_empty() {
            self.link.send(changed);
        }
    }

    /// Sends every grant's limit again (the peer asked for our interest anew).
    pub(crate) fn resend(&self) {
        let all = self.all_grants();
        if !all.is_empty() {
            self.link.send(all);
        }
    }

    fn all_grants(&self) -> Vec<GrantMsg> {
        self.receiving
            .lock()
            .map(|t| t.values().map(|g| g.message()).collect())
            .unwrap_or_default()
    }

    /// For the writer: a `Credit` frame with every grant, if one could not be queued since
    /// the last.
    pub(crate) fn take_owed(&self) -> Option<Bytes> {
        if !self.link.owed.swap(false, Ordering::AcqRel) {
            return None;
        }
        let frame = CreditMsg {
            grants: self.all_grants(),
        }
        .to_frame()
        .ok()?;
        super::encode(&self.link.codec, &frame).ok()
    }

    /// Whether a grant waits for the writer (one relaxed load: the writer checks per batch).
    pub(crate) fn is_owed(&self) -> bool {
        self.link.owed.load(Ordering::Relaxed)
    }
}
