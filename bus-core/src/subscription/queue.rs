//! A subscription's queue: bounded for this node's publishers, and credited for peers'.
//!
//! This node's publishers (and peers' events that came without credit) count against the
//! capacity: a full queue makes them wait or drops, as the subscription's policy says. A peer's
//! event that came under the room we granted that peer is queued whatever the queue's length:
//! the grant is what bounds it, and a connection's reader must never wait nor, for a `Wait`
//! subscription, drop. It carries its [`Receipt`]; taking it off the queue drops the receipt,
//! which is what lets the peer send more.
//!
//! The queue is a deque behind a lock held only to push or to take. A lone consumer (a
//! [`Subscription`](super::Subscription), or a handler run one event at a time) takes everything
//! queued at once, so a burst of events costs it one lock, not one per event; a publisher wakes
//! a consumer only if one is waiting.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Delivery, FullPolicy, GroupKind, SubscriptionOptions};
use crate::node::credit::Receipt;
use crate::stats::{SubCounters, SubscriptionStats};

/// A peer's event's share of the room granted to that peer, held by every queue the event is
/// in until the last one lets it go.
pub(crate) enum Held {
    // Held for what dropping them does, never read.
    One(#[allow(dead_code)] Receipt),
    Shared(#[allow(dead_code)] Arc<Receipt>),
}

/// What the two ends of a subscription share.
struct Shared<E> {
    queue: Mutex<Queue<E>>,
    event: &'static str,
    id: u64,
    capacity: usize,
    policy: FullPolicy,
    /// The group it is a member of, if any, and how the group shares its events.
    group: Option<(Arc<str>, GroupKind)>,
    /// When it was made (milliseconds since the Unix epoch): the oldest member of an exclusive
    /// group goes first.
    since: u64,
    /// Deliveries queued (or taken and not yet handed out) that count against the capacity.
    counted: AtomicUsize,
    /// Deliveries queued or taken and not yet handed out, counted or not.
    len: AtomicUsize,
    /// Woken when a counted delivery is handed out, or the receiving end goes.
    room: Notify,
    /// The receiving end went (a run-time subscription was dropped).
    closed: AtomicBool,
    counters: SubCounters,
}

struct Queue<E> {
    items: VecDeque<Delivery<E>>,
    /// Consumers waiting for a delivery.
    waiting: Vec<Waker>,
    /// The sending end is gone: once empty, the queue ends.
    ended: bool,
}

impl<E> Shared<E> {
    fn lock(&self) -> MutexGuard<'_, Queue<E>> {
        // Nothing panics while holding it; a poisoned lock still holds a consistent queue.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `delivery`, waking a waiting consumer; `Err` gives it back if the subscription is
    /// gone.
    fn push(&self, delivery: Delivery<E>) -> Result<(), Delivery<E>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(delivery);
        }
        self.push_all(std::iter::once(delivery));
        Ok(())
    }

    /// Queues `deliveries` under one lock, waking a waiting consumer (the caller checked that
    /// the subscription is there).
    fn push_all(&self, deliveries: impl ExactSizeIterator<Item = Delivery<E>>) {
        let n = deliveries.len();
        if n == 0 {
            return;
        }
        let len = self.len.fetch_add(n, Ordering::Relaxed) + n;
        let waker = {
            let mut queue = self.lock();
            queue.items.extend(deliveries);
            queue.waiting.pop()
        };
        self.counters
            .delivered
            .fetch_add(n as u64, Ordering::Relaxed);
        self.counters.metrics.delivered.increment(n as u64);
        self.counters.metrics.depth.set(len as f64);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Why a delivery was not queued.
pub(crate) enum NotQueued<E> {
    /// The queue is at its capacity; here is the delivery back.
    Full(Delivery<E>),
    /// The subscription is gone.
    Gone,
}

/// The sending side of one subscription, held in the bus's routing snapshot. Dropping it (the
/// last table that holds it is gone) ends the queue once it is empty.
pub(crate) struct SubSender<E> {
    shared: Arc<Shared<E>>,
}

/// The receiving side: a subscription's worker, or its [`Subscription`](super::Subscription).
pub(crate) struct SubReceiver<E> {
    shared: Arc<Shared<E>>,
    /// Taken off the queue at once and not yet handed out (a lone consumer only).
    taken: VecDeque<Delivery<E>>,
    /// Whether this consumer is the only one, and takes everything queued at once.
    alone: bool,
}

/// A new subscription's two ends. With `consumers` above 1, each worker takes one delivery
/// at a time (clone the receiver for each).
pub(crate) fn queue<E>(
    event: &'static str,
    id: u64,
    options: &SubscriptionOptions,
    metrics: crate::metrics::SubMetrics,
) -> (Arc<SubSender<E>>, SubReceiver<E>) {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            items: VecDeque::new(),
            waiting: Vec::new(),
            ended: false,
        }),
        event,
        id,
        capacity: options.capacity,
        policy: options.when_full,
        group: options
            .group
            .as_ref()
            .map(|name| (Arc::clone(name), options.group_kind)),
        since,
        counted: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
        room: Notify::new(),
        closed: AtomicBool::new(false),
        counters: SubCounters {
            metrics,
            ..SubCounters::default()
        },
    });
    let sender = SubSender {
        shared: Arc::clone(&shared),
    };
    let receiver = SubReceiver {
        shared,
        taken: VecDeque::new(),
        alone: options.concurrency <= 1,
    };
    (Arc::new(sender), receiver)
}

impl<E> SubSender<E> {
    /// The subscription's id, unique in its bus.
    pub(crate) fn id(&self) -> u64 {
        self.shared.id
    }

    /// What a publisher does when the queue is full.
    pub(crate) fn policy(&self) -> FullPolicy {
        self.shared.policy
    }

    /// The subscription's capacity.
    pub(crate) fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// The group it is a member of, and the group's kind.
    pub(crate) fn group(&self) -> Option<&(Arc<str>, GroupKind)> {
        self.shared.group.as_ref()
    }

    /// When it was made, in milliseconds since the Unix epoch.
    pub(crate) fn since(&self) -> u64 {
        self.shared.since
    }

    /// Whether its receiving end went: it takes nothing more.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Deliveries queued and not yet handed out.
    pub(crate) fn queued(&self) -> usize {
        self.shared.len.load(Ordering::Relaxed)
    }

    /// Queues `delivery` if the queue is under its capacity.
    pub(crate) fn try_send(&self, mut delivery: Delivery<E>) -> Result<(), NotQueued<E>> {
        let shared = &self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(NotQueued::Gone);
        }
        if shared.counted.fetch_add(1, Ordering::AcqRel) >= shared.capacity {
            // Room freed while this counted itself in may have woken a waiting publisher that
            // then found it taken: pass the wake-up on.
            if shared.counted.fetch_sub(1, Ordering::AcqRel) <= shared.capacity {
                shared.room.notify_one();
            }
            return Err(NotQueued::Full(delivery));
        }
        delivery.counted = true;
        shared.push(delivery).map_err(|_| {
            shared.counted.fetch_sub(1, Ordering::AcqRel);
            NotQueued::Gone
        })
    }

    /// Queues as many of `deliveries` as there is room for under the capacity, under one lock,
    /// and drops the rest; returns how many it dropped (and counts them as this
    /// subscription's). Nothing is queued, nor counted, if the subscription is gone.
    pub(crate) fn try_send_all(
        &self,
        deliveries: impl ExactSizeIterator<Item = Delivery<E>>,
    ) -> u64 {
        let shared = &self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return 0;
        }
        let n = deliveries.len();
        let mut counted = shared.counted.load(Ordering::Acquire);
        let room = loop {
            let room = shared.capacity.saturating_sub(counted).min(n);
            if room == 0 {
                break 0;
            }
            match shared.counted.compare_exchange_weak(
                counted,
                counted + room,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break room,
                Err(now) => counted = now,
            }
        };
        shared.push_all(deliveries.take(room).map(|mut d| {
            d.counted = true;
            d
        }));
        let dropped = (n - room) as u64;
        if dropped > 0 {
            shared
                .counters
                .dropped
                .fetch_add(dropped, Ordering::Relaxed);
            self.shared.counters.metrics.dropped.increment(dropped);
        }
        dropped
    }

    /// Queues a run of a peer's events that came under the room granted to it, whatever the
    /// queue's length, under one lock; the last holds `credit`, the run's share of the grant.
    /// `false` if the subscription is gone (the run is dropped, its credit with it).
    pub(crate) fn send_credited(
        &self,
        deliveries: impl ExactSizeIterator<Item = Delivery<E>>,
        credit: Held,
    ) -> bool {
        if self.shared.closed.load(Ordering::Acquire) {
            return false;
        }
        let last = deliveries.len().saturating_sub(1);
        let mut credit = Some(credit);
        self.shared
            .push_all(deliveries.enumerate().map(|(i, mut d)| {
                if i == last {
                    d.credit = credit.take();
                }
                d
            }));
        true
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
        self.shared.counters.metrics.waited.increment(1);
        loop {
            let freed = self.shared.room.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.try_send(delivery) {
                Ok(()) => return Ok(()),
                Err(NotQueued::Gone) => return Err(()),
                Err(NotQueued::Full(back)) => delivery = back,
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
        self.shared.counters.metrics.dropped.increment(1);
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
            group: s.group.as_ref().map(|(name, _)| name.to_string()),
        }
    }
}

impl<E> Drop for SubSender<E> {
    fn drop(&mut self) {
        let waiting = {
            let mut queue = self.shared.lock();
            queue.ended = true;
            std::mem::take(&mut queue.waiting)
        };
        for waker in waiting {
            waker.wake();
        }
    }
}

impl<E> Clone for SubReceiver<E> {
    fn clone(&self) -> Self {
        SubReceiver {
            shared: Arc::clone(&self.shared),
            taken: VecDeque::new(),
            alone: self.alone,
        }
    }
}

impl<E> SubReceiver<E> {
    /// The next delivery, or `None` once the sending end is gone and the queue is empty.
    pub(crate) async fn recv(&mut self) -> Option<Delivery<E>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next delivery.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Delivery<E>>> {
        if let Some(delivery) = self.taken.pop_front() {
            return Poll::Ready(Some(self.hand_out(delivery)));
        }
        let mut queue = self.shared.lock();
        let first = if self.alone {
            // Everything queued, in one go: a burst costs one lock.
            std::mem::swap(&mut queue.items, &mut self.taken);
            self.taken.pop_front()
        } else {
            queue.items.pop_front()
        };
        match first {
            Some(delivery) => {
                // Several consumers: the next one waiting takes what is left.
                let next = (!queue.items.is_empty())
                    .then(|| queue.waiting.pop())
                    .flatten();
                drop(queue);
                if let Some(waker) = next {
                    waker.wake();
                }
                Poll::Ready(Some(self.hand_out(delivery)))
            }
            None if queue.ended => Poll::Ready(None),
            None => {
                if !queue.waiting.iter().any(|w| w.will_wake(cx.waker())) {
                    queue.waiting.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    /// A delivery leaves the queue for its handler: its room is free again (for this node's
    /// publishers, or, by dropping its receipt, for the peer that sent it).
    fn hand_out(&self, mut delivery: Delivery<E>) -> Delivery<E> {
        let shared = &self.shared;
        shared.len.fetch_sub(1, Ordering::Relaxed);
        if delivery.counted {
            shared.counted.fetch_sub(1, Ordering::AcqRel);
            shared.room.notify_one();
        }
        drop(delivery.credit.take());
        delivery
    }

    /// The receiving end is going: publishers waiting for room look again (and find it gone),
    /// and what is queued is let go (its room given back to the peers that sent it).
    pub(crate) fn close(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.room.notify_waiters();
        let left = std::mem::take(&mut self.shared.lock().items);
        drop(left);
        self.taken.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;
    use crate::id::NodeId;
    use crate::scope::Scope;
    use crate::subscription::EventMeta;

    fn delivery(n: u32) -> Delivery<u32> {
        let meta = Arc::new(EventMeta {
            correlation_id: None,
            sender: NodeId::from_u128(1),
            scope: Scope::Local,
            headers: crate::context::Headers::new(),
        });
        Delivery::new(Arc::new(n), u64::from(n), meta)
    }

    fn opts(capacity: usize, concurrency: usize) -> SubscriptionOptions {
        SubscriptionOptions::new()
            .capacity(capacity)
            .concurrency(concurrency)
    }

    #[tokio::test]
    async fn local_events_count_against_the_capacity_and_credited_ones_do_not() {
        let (tx, mut rx) = queue::<u32>("t", 1, &opts(2, 1), Default::default());
        assert!(tx.try_send(delivery(0)).is_ok());
        assert!(tx.try_send(delivery(1)).is_ok());
        assert!(matches!(tx.try_send(delivery(2)), Err(NotQueued::Full(_))));
        // A peer's event under its grant goes in all the same.
        let grant = crate::node::credit::grant_for_tests(8);
        grant.receive().unwrap();
        tx.send_credited(std::iter::once(delivery(3)), Held::One(grant.receipt(1)));
        let stats = tx.stats();
        assert_eq!((stats.queued, stats.delivered), (3, 3));
        assert_eq!(*rx.recv().await.unwrap().event, 0);
        // One local event handed out: room for one more.
        assert!(tx.try_send(delivery(4)).is_ok());
        let rest: Vec<u32> = [
            rx.recv().await.unwrap(),
            rx.recv().await.unwrap(),
            rx.recv().await.unwrap(),
        ]
        .iter()
        .map(|d| *d.event)
        .collect();
        assert_eq!(rest, [1, 3, 4]);
        assert_eq!(tx.stats().queued, 0);
    }

    /// A run of a peer's events goes in with one receipt, held by its last event: the grant's
    /// room comes back when that one is taken, for the whole run.
    #[tokio::test]
    async fn a_credited_run_gives_its_room_back_when_its_last_event_is_taken() {
        let (tx, mut rx) = queue::<u32>("t", 1, &opts(2, 1), Default::default());
        let grant = crate::node::credit::grant_for_tests(8);
        for _ in 0..3 {
            grant.receive().unwrap();
        }
        // Over the capacity of 2: credited events are bounded by the grant, not by it.
        tx.send_credited((0..3).map(delivery), Held::One(grant.receipt(3)));
        assert_eq!(tx.stats().queued, 3);
        assert_eq!(grant.outstanding(), 3);
        assert_eq!(*rx.recv().await.unwrap().event, 0);
        assert_eq!(*rx.recv().await.unwrap().event, 1);
        assert_eq!(
            grant.outstanding(),
            3,
            "room came back before the run was taken"
        );
        assert_eq!(*rx.recv().await.unwrap().event, 2);
        assert_eq!(grant.outstanding(), 0);
    }

    /// A run without credit takes what room there is, in order, and drops (and counts) the rest.
    #[tokio::test]
    async fn a_run_without_credit_fills_the_room_and_drops_the_rest() {
        let (tx, mut rx) = queue::<u32>("t", 1, &opts(3, 1), Default::default());
        assert!(tx.try_send(delivery(0)).is_ok());
        assert_eq!(tx.try_send_all((1..5).map(delivery)), 2);
        let stats = tx.stats();
        assert_eq!((stats.queued, stats.delivered, stats.dropped), (3, 3, 2));
        let got: Vec<u32> = [rx.recv().await, rx.recv().await, rx.recv().await]
            .into_iter()
            .map(|d| *d.unwrap().event)
            .collect();
        assert_eq!(got, [0, 1, 2]);
        // The room is back: the next run fits.
        assert_eq!(tx.try_send_all((5..8).map(delivery)), 0);
    }

    #[tokio::test]
    async fn a_lone_consumer_takes_a_burst_in_one_go_and_the_queue_ends_after_it() {
        let (tx, mut rx) = queue::<u32>("t", 1, &opts(16, 1), Default::default());
        for i in 0..5 {
            assert!(tx.try_send(delivery(i)).is_ok());
        }
        assert_eq!(*rx.recv().await.unwrap().event, 0);
        // The other four left the shared queue with the first.
        assert!(rx.shared.lock().items.is_empty());
        assert_eq!(rx.taken.len(), 4);
        drop(tx);
        let mut got = Vec::new();
        while let Some(d) = rx.recv().await {
            got.push(*d.event);
        }
        assert_eq!(got, [1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn several_consumers_share_the_queue_one_delivery_at_a_time() {
        let (tx, rx) = queue::<u32>("t", 1, &opts(16, 2), Default::default());
        let (mut a, mut b) = (rx.clone(), rx);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(a.poll_recv(&mut cx).is_pending());
        for i in 0..2 {
            assert!(tx.try_send(delivery(i)).is_ok());
        }
        let first = a.recv().await.unwrap();
        // `a` took one only: the other is there for `b`.
        assert!(a.taken.is_empty());
        let second = b.recv().await.unwrap();
        assert_eq!((*first.event, *second.event), (0, 1));
    }

    /// Polls `fut` once, asserting that it waits.
    fn pending<F: Future + Unpin>(fut: &mut F) {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(std::pin::Pin::new(fut).poll(&mut cx).is_pending());
    }

    #[tokio::test]
    async fn a_publisher_waiting_for_room_gives_up_when_the_subscription_goes() {
        let (tx, mut rx) = queue::<u32>("t", 1, &opts(1, 1), Default::default());
        assert!(tx.try_send(delivery(0)).is_ok());
        let sealed = CancellationToken::new();
        let mut waiting = Box::pin(tx.send(delivery(1), &sealed));
        pending(&mut waiting);
        rx.close();
        assert_eq!(waiting.await, Err(()));
        assert_eq!(tx.stats().waited, 1);
    }

    #[tokio::test]
    async fn a_publisher_waiting_for_room_gets_it_when_an_event_is_handed_out() {
        let (tx, mut rx) = queue::<u32>("t", 1, &opts(1, 1), Default::default());
        assert!(tx.try_send(delivery(0)).is_ok());
        let sealed = CancellationToken::new();
        let mut waiting = Box::pin(tx.send(delivery(1), &sealed));
        pending(&mut waiting);
        assert_eq!(*rx.recv().await.unwrap().event, 0);
        assert_eq!(waiting.await, Ok(()));
        assert_eq!(*rx.recv().await.unwrap().event, 1);
    }
}
