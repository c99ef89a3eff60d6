//! Subscriptions: the bounded queue in front of every event handler, its options, and the
//! run-time [`Subscription`] stream.

use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context as TaskContext, Poll};

use futures_core::Stream;

use crate::bus::{Bus, BusInner};
use crate::context::Context;
use crate::context::Headers;
use crate::id::NodeId;
use crate::message::Event;
use crate::scope::Scope;
pub use crate::wire::control::GroupKind;

mod queue;

pub(crate) use queue::{queue, Held, NotQueued, SubReceiver, SubSender};

/// What a publisher does when a subscription's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FullPolicy {
    /// The publisher waits until the subscription has room (backpressure). The default.
    #[default]
    Wait,
    /// The event is dropped for this subscription and counted in
    /// [`BusStats::events_dropped`](crate::BusStats::events_dropped).
    DropNewest,
}

/// How a subscription queues and runs its events: a value given to a subscriber with
/// [`with_options`](crate::EventHandlerExt::with_options) when it is registered.
///
/// # Examples
///
/// ```
/// use meshbus_core::{FullPolicy, SubscriptionOptions};
///
/// let opts = SubscriptionOptions::new()
///     .capacity(64)
///     .concurrency(4)
///     .when_full(FullPolicy::DropNewest);
/// assert_ne!(opts, SubscriptionOptions::default());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionOptions {
    // Read by the builder only: options are a value given at registration, not inspected
    // later, so there are no public getters.
    pub(crate) capacity: usize,
    pub(crate) concurrency: usize,
    pub(crate) when_full: FullPolicy,
    pub(crate) group: Option<Arc<str>>,
    pub(crate) group_kind: GroupKind,
}

impl SubscriptionOptions {
    /// The default queue capacity, in events.
    pub const DEFAULT_CAPACITY: usize = 1024;

    /// Capacity 1024, one event at a time (in publish order), publishers wait when full.
    pub const fn new() -> Self {
        SubscriptionOptions {
            capacity: Self::DEFAULT_CAPACITY,
            concurrency: 1,
            when_full: FullPolicy::Wait,
            group: None,
            group_kind: GroupKind::Shared,
        }
    }

    /// How many events may wait in the queue (at least 1).
    pub const fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = if capacity == 0 { 1 } else { capacity };
        self
    }

    /// How many events the handler may run at once (at least 1). Above 1, events of one
    /// publisher may be handled out of order.
    pub const fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = if concurrency == 0 { 1 } else { concurrency };
        self
    }

    /// What a publisher does when the queue is full. In a [group](Self::group), when every
    /// member in scope is full.
    pub const fn when_full(mut self, policy: FullPolicy) -> Self {
        self.when_full = policy;
        self
    }

    /// Makes the subscription a member of the group `name` of its event: each event goes to
    /// one member of the group, wherever the members are (this process, another node), and to
    /// every subscription outside it. The instances of one service join the same group to
    /// share its work. A group lives while it has members. A group's name is not empty, holds
    /// no control character, and with the event's name fits in 1,023 bytes; subscribing with
    /// another is an [`ErrorKind::Config`](crate::ErrorKind::Config) error.
    ///
    /// ```
    /// use meshbus_core::{GroupKind, SubscriptionOptions};
    ///
    /// let workers = SubscriptionOptions::new().group("billing");
    /// let ledger = SubscriptionOptions::new().group("ledger").group_kind(GroupKind::Exclusive);
    /// # let _ = (workers, ledger);
    /// ```
    pub fn group(mut self, name: impl Into<Arc<str>>) -> Self {
        self.group = Some(name.into());
        self
    }

    /// How the [group](Self::group) shares its events: [`GroupKind::Shared`] (each event to
    /// one member, the default) or [`GroupKind::Exclusive`] (every event to one active member,
    /// in publish order; the next takes over when it goes). Members of one group say the same.
    pub const fn group_kind(mut self, kind: GroupKind) -> Self {
        self.group_kind = kind;
        self
    }
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// What travels through a subscription's queue: the shared event, its id and who sent it.
pub(crate) struct Delivery<E> {
    pub(crate) event: Arc<E>,
    pub(crate) message_id: u64,
    pub(crate) meta: Arc<EventMeta>,
    /// It counts against the queue's capacity (set when queued).
    pub(crate) counted: bool,
    /// A peer's event queued under the room granted to the peer: its share, let go when it
    /// leaves the queue.
    pub(crate) credit: Option<Held>,
}

impl<E> Delivery<E> {
    /// A delivery of `event`, not yet queued.
    pub(crate) fn new(event: Arc<E>, message_id: u64, meta: Arc<EventMeta>) -> Self {
        Delivery {
            event,
            message_id,
            meta,
            counted: false,
            credit: None,
        }
    }

    /// Another delivery of the same event, for another subscription.
    pub(crate) fn share(&self) -> Self {
        Delivery::new(
            Arc::clone(&self.event),
            self.message_id,
            Arc::clone(&self.meta),
        )
    }
}

/// The context of a published event, shared by all its deliveries; the events without
/// headers of one read burst from a peer share one.
#[derive(Debug)]
pub(crate) struct EventMeta {
    pub(crate) correlation_id: Option<Arc<str>>,
    pub(crate) sender: NodeId,
    pub(crate) scope: Scope,
    pub(crate) headers: Headers,
}

impl EventMeta {
    /// The context a subscriber of event `message_id` sees.
    pub(crate) fn context(&self, message_id: u64, bus: Bus) -> Context {
        let mut ctx = Context::new(message_id, self.sender, self.scope, bus);
        ctx.correlation_id = self.correlation_id.clone();
        ctx.headers = self.headers.clone();
        ctx
    }
}

/// A run-time subscription to events of type `E`: a [`Stream`] of shared events.
///
/// Made by [`Bus::subscribe`](crate::Bus::subscribe). Dropping it unsubscribes. It ends when the
/// bus shuts down, after every event already queued for it has been yielded.
///
/// Its queue is bounded like every other: with the default [`FullPolicy::Wait`], a subscription
/// that is held but not read makes publishers of `E` wait once its queue is full. Read it, drop
/// it, or subscribe with [`FullPolicy::DropNewest`].
#[must_use = "a subscription receives nothing unless it is polled"]
pub struct Subscription<E: Event> {
    pub(crate) id: u64,
    pub(crate) rx: SubReceiver<E>,
    pub(crate) bus: Weak<BusInner>,
    pub(crate) _event: PhantomData<fn() -> E>,
}

impl<E: Event> Subscription<E> {
    /// The next event, or `None` once the bus has shut down and the queue is empty.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is taken from the queue only when this resolves.
    pub async fn recv(&mut self) -> Option<Arc<E>> {
        futures_util::StreamExt::next(self).await
    }

    /// The next event with its [`Context`] (sender, headers, correlation id), or `None` once the
    /// bus has shut down (or is gone) and the queue is empty.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`recv`](Subscription::recv).
    pub async fn recv_with_context(&mut self) -> Option<(Arc<E>, Context)> {
        let delivery = self.rx.recv().await?;
        let bus = Bus::for_handler(self.bus.upgrade()?);
        let ctx = delivery.meta.context(delivery.message_id, bus);
        Some((delivery.event, ctx))
    }
}

impl<E: Event> Stream for Subscription<E> {
    type Item = Arc<E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Arc<E>>> {
        self.rx.poll_recv(cx).map(|d| d.map(|d| d.event))
    }
}

impl<E: Event> Drop for Subscription<E> {
    fn drop(&mut self) {
        self.rx.close();
        if let Some(bus) = self.bus.upgrade() {
            bus.unsubscribe::<E>(self.id);
        }
    }
}

impl<E: Event> fmt::Debug for Subscription<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("event", &E::NAME)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
