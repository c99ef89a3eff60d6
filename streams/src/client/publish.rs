//! Confirmed publishes: an event goes to its subscribers like any publish, and the publish
//! resolves only once every host in scope whose stream captures the event has appended it.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use meshbus_core::{Binary, ErrorKind, Event, NodeId};
use serde::Serialize;

use super::{entry, Streams};
use crate::error::Error;
use crate::wire::{self, capture_name, WireError};

/// Where a confirmed publish was appended: by which host, to which stream, at which offset.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Confirmation {
    /// The host.
    pub node: NodeId,
    /// Its stream that captures the event.
    pub stream: String,
    /// The event's offset there.
    pub offset: u64,
}

/// `publish(e).confirmed()`: turns a publish into a confirmed one.
pub trait PublishExt<'a, E> {
    /// The confirmed form of this publish, as [`Streams::publish`] makes it (in the publish's
    /// scope, with its headers; its idempotency key becomes the append's key).
    ///
    /// ```no_run
    /// # use meshbus_core::{Bus, Event};
    /// # use meshbus_streams::PublishExt;
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct OrderPlaced { id: u64 }
    /// # impl Event for OrderPlaced { const NAME: &'static str = "orders.placed"; }
    /// # async fn run(bus: Bus) -> Result<(), meshbus_streams::Error> {
    /// let confirmations = bus.events().publish(OrderPlaced { id: 7 }).confirmed().await?;
    /// # Ok(()) }
    /// ```
    fn confirmed(self) -> ConfirmedPublish<'a, E>;
}

impl<'a, E: Event + Serialize> PublishExt<'a, E> for meshbus_core::Publish<'a, E> {
    fn confirmed(self) -> ConfirmedPublish<'a, E> {
        let parts = self.into_parts();
        let key_name = meshbus_core::Headers::IDEMPOTENCY_KEY;
        ConfirmedPublish {
            streams: Streams {
                bus: parts.bus,
                scope: parts.scope,
            },
            event: parts.event,
            key: parts.headers.get(key_name).map(str::to_owned),
            headers: parts
                .headers
                .iter()
                .filter(|(k, _)| *k != key_name)
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            timeout: parts.timeout,
        }
    }
}

/// A confirmed publish: set a key, headers or a timeout, then `.await` it. Made by
/// [`Streams::publish`] or [`PublishExt::confirmed`].
#[must_use = "a publish does nothing unless awaited"]
#[derive(Debug)]
pub struct ConfirmedPublish<'a, E> {
    pub(super) streams: Streams<'a>,
    pub(super) event: E,
    pub(super) key: Option<String>,
    pub(super) headers: Vec<(String, String)>,
    pub(super) timeout: Option<Duration>,
}

impl<E> ConfirmedPublish<'_, E> {
    /// The idempotency key: a retry with the same key within a stream's dedupe window is
    /// not appended a second time (subscribers may see the event twice).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header: subscribers see it in their context, streams keep it with the record.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((key.into(), value.into()));
        self
    }

    /// Gives up waiting for the hosts after `timeout` (the bus's request timeout by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl<'a, E: Event + Serialize> IntoFuture for ConfirmedPublish<'a, E> {
    type Output = Result<Vec<Confirmation>, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let ConfirmedPublish {
                streams,
                event,
                key,
                headers,
                timeout,
            } = self;
            let stored: Vec<(String, Binary)> = headers
                .iter()
                .map(|(k, v)| (k.clone(), Binary::from(v.clone())))
                .collect();
            let entry = entry(E::NAME, &event, key, stored)?;
            let mut all = streams
                .bus
                .commands()
                .scope(streams.scope)
                .send_all_named(capture_name(E::NAME), wire::Capture { entry });
            if let Some(t) = timeout {
                all = all.timeout(t);
            }
            let mut publish = streams
                .bus
                .events()
                .scope(streams.scope)
                .publish(event)
                .header(wire::CONFIRMED_HEADER, "1");
            for (k, v) in headers {
                publish = publish.header(k, v);
            }
            let (answers, published) =
                futures_util::future::join(all.into_future(), publish.into_future()).await;
            published.map_err(Error::Bus)?;
            let mut done = Vec::with_capacity(answers.len());
            let mut failed = None;
            for (node, answer) in answers {
                match answer {
                    Ok(Ok(Some((stream, offset)))) => done.push(Confirmation {
                        node,
                        stream,
                        offset,
                    }),
                    // A host that gives way to another host of its stream.
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => {
                        failed.get_or_insert(WireError::into_error(e));
                    }
                    Err(e) => {
                        failed.get_or_insert(Error::Bus(e));
                    }
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
            if done.is_empty() {
                return Err(Error::Bus(
                    meshbus_core::Error::new(ErrorKind::NoHandler).with_detail(format!(
                        "no stream in {:?} scope captures `{}`",
                        streams.scope,
                        E::NAME
                    )),
                ));
            }
            Ok(done)
        })
    }
}
