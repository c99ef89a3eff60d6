//! Publishing events: [`Events`], the [`Publish`] builder and its [`PublishFuture`].

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use super::Bus;
use crate::context::Headers;
use crate::error::Error;
use crate::handler::BoxFuture;
use crate::message::Event;
use crate::scope::Scope;
use crate::stats::Counters;
use crate::subscription::{Delivery, EventMeta, FullPolicy};

/// Publishes events in a scope. Made by [`Bus::events`]; the default scope is
/// [`Scope::Cluster`].
#[derive(Debug, Clone, Copy)]
pub struct Events<'a> {
    bus: &'a Bus,
    scope: Scope,
}

impl<'a> Events<'a> {
    pub(crate) fn new(bus: &'a Bus) -> Self {
        Events {
            bus,
            scope: Scope::Cluster,
        }
    }

    /// Only subscribers in this bus instance; nothing is serialized.
    pub fn local(self) -> Self {
        self.scope(Scope::Local)
    }

    /// Subscribers on nodes with our host id.
    pub fn machine(self) -> Self {
        self.scope(Scope::Machine)
    }

    /// Subscribers on nodes of our cluster (the default).
    pub fn cluster(self) -> Self {
        self.scope(Scope::Cluster)
    }

    /// Subscribers on every node of our network.
    pub fn network(self) -> Self {
        self.scope(Scope::Network)
    }

    /// Subscribers in `scope`.
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// Publishes `event` to every subscriber in scope. Returns a builder; `.await` it.
    pub fn publish<E: Event>(self, event: E) -> Publish<'a, E> {
        Publish {
            bus: self.bus,
            scope: self.scope,
            event,
            headers: Headers::new(),
            correlation_id: None,
        }
    }
}

/// An event being published: set options, then `.await` it.
///
/// It resolves once the event has been admitted to the queue of every subscription in scope
/// (or dropped and counted there, when that subscription's policy is
/// [`FullPolicy::DropNewest`]); it does not wait for the handlers. Subscribers with room are
/// served at once; the future waits only for subscriptions that are full and use
/// [`FullPolicy::Wait`].
///
/// # Cancel safety
///
/// Dropping the future while it waits for a full subscription leaves the event undelivered to
/// that subscription and the ones after it; the ones before it have it.
#[must_use = "an event is not published unless awaited"]
pub struct Publish<'a, E: Event> {
    bus: &'a Bus,
    scope: Scope,
    event: E,
    headers: Headers,
    correlation_id: Option<Arc<str>>,
}

impl<E: Event> Publish<'_, E> {
    /// Attaches a header, readable by subscribers in [`Context::headers`](crate::Context::headers).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Attaches a correlation id.
    pub fn correlation_id(mut self, id: impl Into<Arc<str>>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }
}

impl<E: Event> IntoFuture for Publish<'_, E> {
    type Output = Result<(), Error>;
    type IntoFuture = PublishFuture;

    fn into_future(self) -> PublishFuture {
        let inner = &self.bus.inner;
        if inner.is_closed() {
            return PublishFuture::ready(Err(Error::closed().with_message_name(E::NAME)));
        }
        let table = inner.events.load();
        let Some(slot) = table.get(E::NAME) else {
            return PublishFuture::ready(Ok(()));
        };
        let Some(subs) = slot.get::<E>() else {
            return PublishFuture::ready(Err(super::name_clash(
                E::NAME,
                slot.type_name,
                std::any::type_name::<E>(),
            )));
        };
        let event = Arc::new(self.event);
        let meta = Arc::new(EventMeta {
            message_id: crate::id::next_message_id(),
            correlation_id: self.correlation_id,
            sender: inner.identity.node_id,
            scope: self.scope,
            headers: self.headers,
            published_at: None,
        });
        for (i, sub) in subs.iter().enumerate() {
            let delivery = Delivery {
                event: Arc::clone(&event),
                meta: Arc::clone(&meta),
            };
            match sub.tx.try_send(delivery) {
                Ok(()) => {}
                // The subscription was dropped a moment ago; it no longer wants events.
                Err(flume::TrySendError::Disconnected(_)) => {}
                Err(flume::TrySendError::Full(delivery)) => match sub.policy {
                    FullPolicy::DropNewest => {
                        sub.dropped.fetch_add(1, Ordering::Relaxed);
                        Counters::bump(&inner.counters.events_dropped);
                    }
                    FullPolicy::Wait => {
                        // Slow path: wait for this subscription, then serve the rest in order.
                        let Some(subs) = slot.get_arc::<E>() else {
                            return PublishFuture::ready(Ok(()));
                        };
                        let bus = self.bus.clone();
                        return PublishFuture {
                            state: PublishState::Waiting(Box::pin(async move {
                                let mut pending = Some(delivery);
                                for sub in &subs[i..] {
                                    let delivery = pending.take().unwrap_or_else(|| Delivery {
                                        event: Arc::clone(&event),
                                        meta: Arc::clone(&meta),
                                    });
                                    admit(&bus, sub, delivery).await;
                                }
                                Ok(())
                            })),
                        };
                    }
                },
            }
        }
        PublishFuture::ready(Ok(()))
    }
}

/// Admits one delivery to one subscription, honouring its policy.
async fn admit<E: Event>(bus: &Bus, sub: &crate::subscription::SubSender<E>, d: Delivery<E>) {
    match sub.policy {
        FullPolicy::Wait => {
            // An error means the subscription is gone: nobody to deliver to.
            let _ = sub.tx.send_async(d).await;
        }
        FullPolicy::DropNewest => {
            if let Err(flume::TrySendError::Full(_)) = sub.tx.try_send(d) {
                sub.dropped.fetch_add(1, Ordering::Relaxed);
                Counters::bump(&bus.inner.counters.events_dropped);
            }
        }
    }
}

impl<E: Event> fmt::Debug for Publish<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publish")
            .field("event", &E::NAME)
            .field("scope", &self.scope)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

/// The future of a [`Publish`].
#[must_use = "futures do nothing unless polled"]
pub struct PublishFuture {
    state: PublishState,
}

enum PublishState {
    Ready(Option<Result<(), Error>>),
    Waiting(BoxFuture<'static, Result<(), Error>>),
}

impl PublishFuture {
    fn ready(result: Result<(), Error>) -> Self {
        PublishFuture {
            state: PublishState::Ready(Some(result)),
        }
    }
}

impl Future for PublishFuture {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            PublishState::Ready(r) => Poll::Ready(r.take().unwrap_or(Ok(()))),
            PublishState::Waiting(fut) => fut.as_mut().poll(cx),
        }
    }
}

impl fmt::Debug for PublishFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            PublishState::Ready(_) => "ready",
            PublishState::Waiting(_) => "waiting",
        };
        f.debug_struct("PublishFuture")
            .field("state", &state)
            .finish()
    }
}
