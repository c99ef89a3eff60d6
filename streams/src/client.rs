//! Using streams from any node: [`StreamsExt::streams`] gives a [`Streams`] handle that appends
//! with confirmation, reads (replays and follows) and asks for a stream's info. Every call is a
//! command to the stream's host, found by the mesh; the host may be this node.

mod consume;
mod handler;
mod publish;
mod read;

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use meshbus_core::wire::body::encode_body;
use meshbus_core::{Binary, Bus, Command, Event, Scope};
use serde::Serialize;

use crate::error::Error;
use crate::wire::{self, command_name, op, Entry, WireError};
use crate::StreamInfo;
pub use consume::{Consumer, ConsumerBuilder, Message, DEFAULT_CONSUMER_BATCH};
pub(crate) use handler::register as register_stream_handler;
pub use handler::DeliveryContext;
pub use publish::{Confirmation, ConfirmedPublish, PublishExt};
pub use read::{FromRecord, RawRecord, Reader, StreamRecord, DEFAULT_BATCH, DEFAULT_WAIT};

/// Gives a [`Bus`] its streams.
pub trait StreamsExt {
    /// The streams of the mesh this bus is a node of.
    fn streams(&self) -> Streams<'_>;
}

impl StreamsExt for Bus {
    fn streams(&self) -> Streams<'_> {
        Streams {
            bus: self,
            scope: Scope::Network,
        }
    }
}

/// The streams of a mesh, seen from one node. Made by [`StreamsExt::streams`].
#[derive(Debug, Clone, Copy)]
pub struct Streams<'a> {
    pub(crate) bus: &'a Bus,
    pub(crate) scope: Scope,
}

impl<'a> Streams<'a> {
    /// Looks for hosts in `scope` only (the default is [`Scope::Network`]: one host per
    /// stream name and network).
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// Appends `event` to `stream` and resolves with its offset once the host has it under
    /// the stream's fsync policy. Set an idempotency key with [`Append::key`] to make a retry
    /// safe: within the stream's dedupe window the same key gets the first offset again.
    pub fn append<E: Event + Serialize>(self, stream: &str, event: E) -> Append<'a, E> {
        Append {
            streams: self,
            stream: stream.to_owned(),
            event,
            key: None,
            headers: Vec::new(),
            timeout: None,
        }
    }

    /// Publishes `event` to its subscribers like [`Events::publish`](meshbus_core::Events::publish)
    /// (in this handle's scope), and resolves only once every host in scope whose stream
    /// captures the event ([`StreamConfig::event`](crate::StreamConfig::event)) has appended
    /// it under its fsync policy: the confirmed publish.
    ///
    /// # Errors
    /// [`Error::Bus`] with [`NoHandler`](meshbus_core::ErrorKind::NoHandler) when no stream in
    /// scope captures the event (subscribers still got it); the first host's error otherwise
    /// (retry with the same [`key`](ConfirmedPublish::key)).
    pub fn publish<E: Event + Serialize>(self, event: E) -> ConfirmedPublish<'a, E> {
        ConfirmedPublish {
            streams: self,
            event,
            key: None,
            headers: Vec::new(),
            timeout: None,
        }
    }

    /// Appends `events` to `stream` as one batch (one command, one write): they get
    /// consecutive offsets unless some repeat an idempotency key.
    ///
    /// # Errors
    /// As [`append`](Self::append); nothing is appended when an event does not encode.
    pub async fn append_all<E, I>(self, stream: &str, events: I) -> Result<Vec<u64>, Error>
    where
        E: Event + Serialize,
        I: IntoIterator<Item = E>,
    {
        let entries = events
            .into_iter()
            .map(|e| entry(stream, &e, None, Vec::new()))
            .collect::<Result<Vec<_>, _>>()?;
        self.call(stream, op::APPEND, wire::Append { entries }, None)
            .await
    }

    /// What `stream` holds: offsets, records, bytes, segments, retention.
    ///
    /// # Errors
    /// [`Error::Bus`] with [`NoHandler`](meshbus_core::ErrorKind::NoHandler) when no node in
    /// scope hosts it.
    pub async fn info(self, stream: &str) -> Result<StreamInfo, Error> {
        self.call(stream, op::INFO, wire::Info, None).await
    }

    /// Removes the records of `stream` below offset `up_to`, or all of them with `None`.
    /// Offsets are not reused: the next append still gets the next offset. Readers asking
    /// for a removed offset get [`Error::OffsetGone`].
    ///
    /// # Errors
    /// As [`info`](Self::info), and the host's I/O errors.
    pub async fn purge(self, stream: &str, up_to: Option<u64>) -> Result<crate::Purged, Error> {
        let (removed, first_offset) = self
            .call(stream, op::PURGE, wire::Purge { up_to }, None)
            .await?;
        Ok(crate::Purged {
            removed,
            first_offset,
        })
    }

    /// Deletes every record of `stream` and its offsets: the host keeps hosting it (its
    /// configuration is the host's code), empty, from offset 0. Appends and reads running
    /// meanwhile fail.
    ///
    /// # Errors
    /// As [`purge`](Self::purge).
    pub async fn delete(self, stream: &str) -> Result<(), Error> {
        self.call(stream, op::DELETE, wire::Delete, None).await
    }

    /// Reads the `E` records of `stream`: choose where from with [`Reader::from`],
    /// then use it as a [`Stream`](futures_core::Stream).
    pub fn read<E: Event + serde::de::DeserializeOwned>(
        self,
        stream: &str,
    ) -> Reader<StreamRecord<E>> {
        Reader::new(self, stream, vec![E::NAME.to_owned()])
    }

    /// Reads the records of `stream` undecoded, whatever their event (or only those named
    /// with [`Reader::events`]).
    pub fn read_raw(self, stream: &str) -> Reader<RawRecord> {
        Reader::new(self, stream, Vec::new())
    }

    /// Sends `cmd` to the host of `stream` and unwraps its answer.
    pub(crate) async fn call<C, T>(
        self,
        stream: &str,
        op: &str,
        cmd: C,
        timeout: Option<Duration>,
    ) -> Result<T, Error>
    where
        C: Command<Reply = Result<T, WireError>>,
    {
        wire::check_stream_name(stream)?;
        let send = self
            .bus
            .commands()
            .scope(self.scope)
            .send_named(command_name(stream, op), cmd);
        let send = match timeout {
            Some(t) => send.timeout(t),
            None => send,
        };
        match send.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.into_error()),
            Err(e) => Err(Error::Bus(e)),
        }
    }
}

/// The entry that appends `event`.
fn entry<E: Event + Serialize>(
    stream: &str,
    event: &E,
    key: Option<String>,
    headers: Vec<(String, Binary)>,
) -> Result<Entry, Error> {
    let body = encode_body(event).map_err(|e| Error::Invalid {
        stream: stream.to_owned(),
        reason: format!("`{}` did not encode: {e}", E::NAME),
    })?;
    Ok(Entry {
        event: E::NAME.to_owned(),
        key,
        headers,
        body: body.into(),
    })
}

/// A confirmed append: set a key, headers or a timeout, then `.await` it for the offset.
#[must_use = "an append does nothing unless awaited"]
#[derive(Debug)]
pub struct Append<'a, E> {
    streams: Streams<'a>,
    stream: String,
    event: E,
    key: Option<String>,
    headers: Vec<(String, Binary)>,
    timeout: Option<Duration>,
}

impl<E> Append<'_, E> {
    /// The idempotency key: an append repeating it within the stream's dedupe window gets the
    /// first append's offset instead of a second record.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header the record keeps (keys starting with `$` are refused).
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Binary>) -> Self {
        self.headers.push((key.into(), value.into()));
        self
    }

    /// Gives up after `timeout` (the bus's request timeout by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl<'a, E: Event + Serialize> IntoFuture for Append<'a, E> {
    type Output = Result<u64, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<u64, Error>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let Append {
                streams,
                stream,
                event,
                key,
                headers,
                timeout,
            } = self;
            let entries = vec![entry(&stream, &event, key, headers)?];
            let offsets: Vec<u64> = streams
                .call(&stream, op::APPEND, wire::Append { entries }, timeout)
                .await?;
            offsets.first().copied().ok_or_else(|| Error::Invalid {
                stream,
                reason: "the host answered an append with no offset".to_owned(),
            })
        })
    }
}

/// Keeps a type parameter without owning one.
pub(crate) type Marker<T> = PhantomData<fn() -> T>;
