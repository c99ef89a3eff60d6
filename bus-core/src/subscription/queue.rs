//! A subscription's queue: bounded for this node's publishers, and credited for peers'.
//!
//! This node's publishers (and peers' events that came without credit) count against the
//! capacity: a full queue makes them wait or drops, as the subscription's policy says. A peer's
//! event that came under the room we granted that peer is queued whatever the queue's length:
//! the grant is what bounds it, and a connection's reader must never wait nor, for a `Wait`
//! subscription, drop. It carries its [`Receipt`]; taking it off the queue drops the receipt,
//! which is what lets the peer send more.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Delivery, FullPolicy, SubscriptionOptions};
use crate::node::credit::Receipt;
use crate::stats::{SubCounters, SubscriptionStats};

/// A peer's event's share of the room granted to that peer, held by every queue the event is
/// in until the last one lets it go.
pub(crate) enum Held {
    One(Receipt),
    Shared(Arc<Receipt>),
}

/// What the two ends of a subscription share.
pub(crate) struct Shared {
    event: &'static str,
    id: u64,
    capacity: usize,
    policy: FullPolicy,
    /// Deliveries in the queue that count against the capacity.
    counted: AtomicUsize,
    /// Deliveries in the queue, counted or not.
    len: AtomicUsize,
    /// Woken when a counted delivery leaves the queue, or the receiving end goes.
    room: Notify,
    /// The receiving end went (a run-time subscription was dropped).
    closed: AtomicBool,
    pub(crate) counters: SubCounters,
}

/// Why a delivery was not queued.
pub(crate) enum NotQueued<E> {
    /// The queue is at its capacity; here is the delivery back.
    Full(Delivery<E>),
    /// The subscription is gone.
    Gone,
}

/// The sending side of one subscription, held in the bus's routing snapshot.
pub(crate) struct SubSender<E> {
    pub(crate) id: u64,
    tx: flume::Sender<Delivery<E>>,
    pub(crate) policy: FullPolicy,
    shared: Arc<Shared>,
}

/// The receiving side: the subscription's workers, or its [`Subscription`](super::Subscription).
pub(crate) struct SubReceiver<E> {
    pub(crate) rx: flume::Receiver<Delivery<E>>,
    pub(crate) end: QueueEnd,
}

impl<E> Clone for SubReceiver<E> {
    fn clone(&self) -> Self {
        SubReceiver {
            rx: self.rx.clone(),
            end: QueueEnd {
                shared: Arc::clone(&self.end.shared),
            },
        }
    }
}

/// What the receiving side does as deliveries leave the queue.
pub(crate) struct QueueEnd {
    shared: Arc<Shared>,
}

/// A new subscription's two ends.
pub(crate) fn queue<E>(
    event: &'static str,
    id: u64,
    options: SubscriptionOptions,
) -> (Arc<SubSender<E>>, SubReceiver<E>) {
    let (tx, rx) = flume::unbounded();
    let shared = Arc::new(Shared {
        event,
        id,
        capacity: options.capacity,
        policy: options.when_full,
        counted: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
        room: Notify::new(),
        closed: AtomicBool::new(false),
        counters: SubCounters::default(),
    });
    let sender = SubSender {
        id,
        tx,
        policy: options.when_full,
        shared: Arc::clone(&shared),
    };
    (
        Arc::new(sender),
        SubReceiver {
            rx,
            end: QueueEnd { shared },
        },
    )
}

impl<E> SubSender<E> {
    /// The subscription's capacity.
    pub(crate) fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Queues `delivery` if the queue is under its capacity.
    pub(crate) fn try_send(&self, mut delivery: Delivery<E>) -> Result<(), NotQueued<E>> {
        let shared = &self.shared;
        if shared.counted.fetch_add(1, Ordering::AcqRel) >= shared.capacity {
            shared.counted.fetch_sub(1, Ordering::AcqRel);
            return Err(NotQueued::Full(delivery));
        }
        delivery.counted = true;
        self.push(delivery).map_err(|_| {
            shared.counted.fetch_sub(1, Ordering::AcqRel);
            NotQueued::Gone
        })
    }

    /// Queues a peer's event that came under the room granted to it, whatever the queue's
    /// length.
    pub(crate) fn send_credited(&self, delivery: Delivery<E>) {
        let _ = self.push(delivery);
    }

    fn push(&self, delivery: Delivery<E>) -> Result<(), ()> {
        self.shared.len.fetch_add(1, Ordering::Relaxed);
        match self.tx.send(delivery) {
            Ok(()) => {
                self.shared
                    .counters
                    .delivered
                    .fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(_) => {
                self.shared.len.fetch_sub(1, Ordering::Relaxed);
                Err(())
            }
        }
    }

    /// Waits for room, then queues `delivery`; gives up when the subscription goes or `sealed`
    /// (the bus shut down): `Err` then.
    ///
    /// # Cancel safety
    ///
    /// Dropping it leaves the delivery unqueued and takes no room with it.
    pub(crate) async fn send(
        &self,
        mut delivery: Delivery<E>,
        sealed: &CancellationToken,
    ) -> Result<(), ()> {
        self.shared.counters.waited.fetch_add(1, Ordering::Relaxed);
        loop {
            let freed = self.shared.room.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.try_send(delivery) {
                Ok(()) => return Ok(()),
                Err(NotQueued::Gone) => return Err(()),
                Err(NotQueued::Full(back)) => delivery = back,
            }
            if self.tx.is_disconnected() || self.shared.closed.load(Ordering::Acquire) {
                return Err(());
            }
            tokio::select! {
                () = freed => {}
                () = sealed.cancelled() => return Err(()),
            }
        }
    }

    /// Counts an event dropped for this subscription (full, and it drops).
    pub(crate) fn dropped(&self) {
        self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// The subscription's counters now.
    pub(crate) fn stats(&self) -> SubscriptionStats {
        let s = &self.shared;
        SubscriptionStats {
            event: s.event,
            id: s.id,
            delivered: s.counters.delivered.load(Ordering::Relaxed),
            waited: s.counters.waited.load(Ordering::Relaxed),
            dropped: s.counters.dropped.load(Ordering::Relaxed),
            queued: s.len.load(Ordering::Relaxed) as u64,
            capacity: s.capacity as u64,
            when_full: s.policy,
        }
    }
}

impl<E> SubReceiver<E> {
    /// The next delivery, or `None` once every sender is gone and the queue is empty.
    pub(crate) async fn recv(&self) -> Option<Delivery<E>> {
        let delivery = self.rx.recv_async().await.ok()?;
        Some(self.end.taken(delivery))
    }
}

impl QueueEnd {
    /// A delivery just taken off the queue: its room is free again (for this node's publishers,
    /// or, by dropping its receipt, for the peer that sent it).
    pub(crate) fn taken<E>(&self, mut delivery: Delivery<E>) -> Delivery<E> {
        let shared = &self.shared;
        shared.len.fetch_sub(1, Ordering::Relaxed);
        if delivery.counted {
            shared.counted.fetch_sub(1, Ordering::AcqRel);
            shared.room.notify_one();
        }
        drop(delivery.credit.take());
        delivery
    }

    /// The receiving end is going: publishers waiting for room look again (and find it gone).
    pub(crate) fn closing(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.room.notify_waiters();
    }
}
