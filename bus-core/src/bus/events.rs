//! Publishing events: [`Events`], the [`Publish`] builder and its [`PublishFuture`].

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use super::admit::{admit, Started};
use super::options::{request_setters, RequestOptions};
use super::Bus;
use crate::error::Error;
use crate::handler::BoxFuture;
use crate::message::Event;
use crate::scope::Scope;

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
            options: RequestOptions::new(),
            timeout: None,
        }
    }

    /// Publishes every event of `events`, in order, each as [`publish`](Events::publish) would,
    /// with the same options: for producers that have many events at hand. Returns a builder;
    /// `.await` it.
    ///
    /// Each event is offered to every subscription in scope at once; one that must wait for room
    /// somewhere is waited for before the next is offered, so every subscriber sees them in
    /// order. It stops at the first error (the bus shut down, the timeout passed); the events
    /// before it are published.
    ///
    /// # Examples
    ///
    /// ```
    /// # use meshbus_core::{Bus, Event};
    /// # use serde::{Deserialize, Serialize};
    /// #[derive(Serialize, Deserialize)]
    /// struct Reading(u32);
    /// impl Event for Reading { const NAME: &'static str = "docs.reading"; }
    ///
    /// # #[tokio::main] async fn main() -> Result<(), meshbus_core::Error> {
    /// let bus = Bus::builder().start().await?;
    /// let mut readings = bus.subscribe::<Reading>()?;
    /// bus.events().local().publish_all((0..3).map(Reading)).await?;
    /// for i in 0..3 {
    ///     assert_eq!(readings.recv().await.map(|r| r.0), Some(i));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn publish_all<E, I>(self, events: I) -> PublishAll<'a, E, I::IntoIter>
    where
        E: Event,
        I: IntoIterator<Item = E>,
        I::IntoIter: Send + 'a,
    {
        PublishAll {
            bus: self.bus,
            scope: self.scope,
            events: events.into_iter(),
            options: RequestOptions::new(),
            timeout: None,
        }
    }
}

/// Many events being published in order: set options, then `.await` it. Made by
/// [`Events::publish_all`].
#[must_use = "events are not published unless awaited"]
pub struct PublishAll<'a, E: Event, I: Iterator<Item = E>> {
    bus: &'a Bus,
    scope: Scope,
    events: I,
    /// Only headers and the correlation id: see [`RequestOptions`] for why.
    options: RequestOptions,
    timeout: Option<Duration>,
}

impl<E: Event, I: Iterator<Item = E>> PublishAll<'_, E, I> {
    request_setters!(common);

    /// Fails with [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) if the events are not all
    /// admitted within `timeout`, in all (see [`Publish::timeout`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl<'a, E, I> IntoFuture for PublishAll<'a, E, I>
where
    E: Event,
    I: Iterator<Item = E> + Send + 'a,
{
    type Output = Result<(), Error>;
    type IntoFuture = BoxFuture<'a, Result<(), Error>>;

    fn into_future(self) -> Self::IntoFuture {
        let PublishAll {
            bus,
            scope,
            events,
            options,
            timeout,
        } = self;
        Box::pin(async move {
            let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
            for event in events {
                // As a publish does: see `PublishFuture::poll`.
                tokio::task::coop::consume_budget().await;
                let left =
                    deadline.map(|d| d.saturating_duration_since(tokio::time::Instant::now()));
                match admit(bus, scope, event, &options, left) {
                    Started::Done(result) => result?,
                    Started::Waiting(waiting) => waiting.await?,
                }
            }
            Ok(())
        })
    }
}

impl<E: Event, I: Iterator<Item = E>> fmt::Debug for PublishAll<'_, E, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishAll")
            .field("event", &E::NAME)
            .field("scope", &self.scope)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// An event being published: set options, then `.await` it.
///
/// Nothing happens until the future is first polled. It then resolves once the event has been
/// admitted to the queue of every subscription in scope (or dropped and counted there, when
/// that subscription's policy is [`FullPolicy::DropNewest`](crate::FullPolicy::DropNewest)); it does not wait for the handlers.
/// Every subscription with room gets the event at once; the future then waits only for those
/// that are full and use [`FullPolicy::Wait`](crate::FullPolicy::Wait), one after the other.
///
/// A peer's subscriptions count the same way: the peer grants this node room for each event
/// name as its subscriptions drain (credit). Without room, the publish waits for that peer if
/// its subscriptions use `Wait`, and drops the event for it, before sending, if they all use
/// `DropNewest`. A peer whose link's queue is full is treated alike. Bound the wait with
/// [`timeout`](Publish::timeout).
///
/// An event handler that publishes into its own subscription's full queue with
/// [`FullPolicy::Wait`](crate::FullPolicy::Wait) waits for itself: give such subscriptions room, or
/// [`FullPolicy::DropNewest`](crate::FullPolicy::DropNewest).
///
/// # Cancel safety
///
/// Dropping the future while it waits leaves the event undelivered to the full subscriptions it
/// was still waiting for; every other subscription has it. Room it had taken at a peer and not
/// used is given back.
#[must_use = "an event is not published unless awaited"]
pub struct Publish<'a, E: Event> {
    bus: &'a Bus,
    scope: Scope,
    event: E,
    /// Only headers and the correlation id: see [`RequestOptions`] for why.
    options: RequestOptions,
    /// How long the publish may wait for room; `None`: as long as it takes.
    timeout: Option<Duration>,
}

impl<E: Event> Publish<'_, E> {
    request_setters!(common);

    /// Fails with [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) if some subscription in scope that makes publishers
    /// wait ([`FullPolicy::Wait`](crate::FullPolicy::Wait)) still had no room for the event after `timeout`. The
    /// subscriptions that had room have the event either way; the others do not get it.
    /// Without it, a publish waits for room however long it takes (a peer that stops
    /// answering is declared dead after its peer timeout, and then waited for no longer).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl<'a, E: Event> IntoFuture for Publish<'a, E> {
    type Output = Result<(), Error>;
    type IntoFuture = PublishFuture<'a, E>;

    fn into_future(self) -> PublishFuture<'a, E> {
        PublishFuture {
            state: PublishState::Start(Some(self)),
        }
    }
}

/// A publish taken apart by [`Publish::into_parts`].
#[derive(Debug)]
#[non_exhaustive]
pub struct PublishParts<'a, E> {
    /// The bus it was to be published on.
    pub bus: &'a Bus,
    /// Its scope.
    pub scope: Scope,
    /// The event.
    pub event: E,
    /// Its headers (the idempotency key among them, if set).
    pub headers: crate::Headers,
    /// Its correlation id, if set.
    pub correlation_id: Option<std::sync::Arc<str>>,
    /// Its timeout, if set.
    pub timeout: Option<Duration>,
}

impl<'a, E: Event> Publish<'a, E> {
    /// Takes the publish apart without publishing: for libraries built on the bus that
    /// publish differently, such as a durable stream's confirmed publish
    /// (`publish(e).confirmed()`).
    pub fn into_parts(self) -> PublishParts<'a, E> {
        let (headers, correlation_id) = self.options.into_parts();
        PublishParts {
            bus: self.bus,
            scope: self.scope,
            event: self.event,
            headers,
            correlation_id,
            timeout: self.timeout,
        }
    }
}

impl<E: Event> Publish<'_, E> {
    fn start(self) -> Started {
        admit(
            self.bus,
            self.scope,
            self.event,
            &self.options,
            self.timeout,
        )
    }
}

impl<E: Event> fmt::Debug for Publish<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publish")
            .field("event", &E::NAME)
            .field("scope", &self.scope)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The future of a [`Publish`].
#[must_use = "futures do nothing unless polled"]
pub struct PublishFuture<'a, E: Event> {
    state: PublishState<'a, E>,
}

enum PublishState<'a, E: Event> {
    Start(Option<Publish<'a, E>>),
    Waiting(BoxFuture<'static, Result<(), Error>>),
    Done,
}

// The event is only moved, never pinned in place; the waiting part is boxed.
impl<E: Event> Unpin for PublishFuture<'_, E> {}

impl<E: Event> Future for PublishFuture<'_, E> {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let PublishState::Start(publish) = &mut this.state {
            // A unit of the task's cooperative budget per publish, as a channel send takes: a
            // task that publishes in a loop, and never has to wait (every subscriber has room,
            // or drops), still lets the connections' writers and readers on its thread run.
            let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
            coop.made_progress();
            let Some(publish) = publish.take() else {
                this.state = PublishState::Done;
                return Poll::Ready(Ok(()));
            };
            match publish.start() {
                Started::Done(result) => {
                    this.state = PublishState::Done;
                    return Poll::Ready(result);
                }
                Started::Waiting(fut) => this.state = PublishState::Waiting(fut),
            }
        }
        match &mut this.state {
            PublishState::Waiting(fut) => {
                let result = std::task::ready!(fut.as_mut().poll(cx));
                this.state = PublishState::Done;
                Poll::Ready(result)
            }
            PublishState::Start(_) | PublishState::Done => Poll::Ready(Ok(())),
        }
    }
}

impl<E: Event> fmt::Debug for PublishFuture<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            PublishState::Start(_) => "not started",
            PublishState::Waiting(_) => "waiting",
            PublishState::Done => "done",
        };
        f.debug_struct("PublishFuture")
            .field("event", &E::NAME)
            .field("state", &state)
            .finish()
    }
}
