//! Readers: a [`Stream`] of a stream's records that catches up from where it starts, then
//! follows the tail. Records come in fetches of at most `batch` records, one fetch ahead of
//! what the reader has handed out: the host never sends more than the reader asked for.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use meshbus_core::wire::body::decode_body;
use meshbus_core::{Binary, Bus, Event, Scope};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use super::{Marker, Streams};
use crate::error::Error;
use crate::wire::{self, op, Fetched, From, WireRecord};

/// The default [`Reader::batch`].
pub const DEFAULT_BATCH: u32 = 256;
/// The default [`Reader::wait`].
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);
/// Time a fetch may take beyond its wait before the request times out.
const FETCH_SLACK: Duration = Duration::from_secs(30);

/// A record read as an `E`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StreamRecord<E> {
    /// Its offset in the stream.
    pub offset: u64,
    /// When the host appended it (ms since the Unix epoch, by the host's clock).
    pub timestamp: u64,
    /// The headers it was appended with.
    pub headers: Vec<(String, Binary)>,
    /// The event.
    pub value: E,
}

/// A record read undecoded.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RawRecord {
    /// Its offset in the stream.
    pub offset: u64,
    /// When the host appended it (ms since the Unix epoch, by the host's clock).
    pub timestamp: u64,
    /// The name of its event.
    pub event: String,
    /// The headers it was appended with.
    pub headers: Vec<(String, Binary)>,
    /// The event as encoded on the wire (MessagePack).
    pub body: Binary,
}

/// What a reader makes of a record.
pub trait FromRecord: Sized + Send + 'static {
    /// Makes one of `record` of `stream`.
    ///
    /// # Errors
    /// [`Error::Decode`] when the body is not what is expected.
    fn from_record(stream: &str, record: RawRecord) -> Result<Self, Error>;
}

impl<E: Event + DeserializeOwned> FromRecord for StreamRecord<E> {
    fn from_record(stream: &str, r: RawRecord) -> Result<Self, Error> {
        let value = decode_body(&r.body).map_err(|e| Error::Decode {
            stream: stream.to_owned(),
            offset: r.offset,
            message: format!("`{}` did not decode as `{}`: {e}", r.event, E::NAME),
        })?;
        Ok(StreamRecord {
            offset: r.offset,
            timestamp: r.timestamp,
            headers: r.headers,
            value,
        })
    }
}

impl FromRecord for RawRecord {
    fn from_record(_: &str, r: RawRecord) -> Result<Self, Error> {
        Ok(r)
    }
}

/// A reader of one stream: set where it starts and how it fetches, then poll it as a
/// [`Stream`] of `Result<T, Error>`. Made by [`Streams::read`] and [`Streams::read_raw`].
///
/// It ends after the first error other than a record that does not decode (which is yielded
/// and passed over): a host that is gone, an offset retention removed, damage on the host's
/// disk. Start a new reader from the last offset seen to go on.
#[must_use = "a reader reads nothing unless polled"]
pub struct Reader<T> {
    bus: Bus,
    scope: Scope,
    stream: String,
    events: Vec<String>,
    next: From,
    batch: u32,
    max_bytes: u32,
    wait: Duration,
    buffer: VecDeque<WireRecord>,
    inflight: Option<JoinHandle<Result<Fetched, Error>>>,
    ended: bool,
    _out: Marker<T>,
}

impl<T: FromRecord> Reader<T> {
    pub(crate) fn new(streams: Streams<'_>, stream: &str, events: Vec<String>) -> Self {
        Reader {
            bus: streams.bus.clone(),
            scope: streams.scope,
            stream: stream.to_owned(),
            events,
            next: From::Start,
            batch: DEFAULT_BATCH,
            max_bytes: crate::host::MAX_FETCH_BYTES,
            wait: DEFAULT_WAIT,
            buffer: VecDeque::new(),
            inflight: None,
            ended: false,
            _out: Marker::default(),
        }
    }

    /// Where to start: the first record held ([`From::Start`], the default), an offset, the
    /// first record at or after a time, or the next record appended ([`From::Tail`]).
    pub fn from(mut self, from: From) -> Self {
        self.next = from;
        self
    }

    /// Records per fetch at most: the reader's credit (default 256). At most two fetches'
    /// worth is held at once.
    pub fn batch(mut self, records: u32) -> Self {
        self.batch = records.clamp(1, crate::host::MAX_FETCH_RECORDS);
        self
    }

    /// How long the host holds a fetch open waiting for a new record at the tail (default
    /// 5 s) before it answers empty and the reader asks again.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait.min(crate::host::MAX_FETCH_WAIT);
        self
    }

    /// Only records of these event names (a typed reader already reads only its own).
    pub fn events<I, S>(mut self, events: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.events = events.into_iter().map(Into::into).collect();
        self
    }

    /// Where the next fetch starts: past every record handed out and buffered.
    pub fn position(&self) -> From {
        self.next
    }

    fn start_fetch(&mut self) {
        let bus = self.bus.clone();
        let (scope, stream) = (self.scope, self.stream.clone());
        let cmd = wire::Fetch {
            from: self.next,
            max_records: self.batch,
            max_bytes: self.max_bytes,
            wait_ms: u64::try_from(self.wait.as_millis()).unwrap_or(u64::MAX),
            events: self.events.clone(),
        };
        let timeout = self.wait + FETCH_SLACK;
        self.inflight = Some(tokio::spawn(async move {
            let streams = Streams { bus: &bus, scope };
            // A reader does not hold its bus's shutdown for the wait at the tail.
            tokio::select! {
                fetched = streams.call(&stream, op::FETCH, cmd, Some(timeout)) => fetched,
                () = bus.closing() => Err(Error::Closed),
            }
        }));
    }
}

impl<T> Drop for Reader<T> {
    fn drop(&mut self) {
        if let Some(fetch) = self.inflight.take() {
            fetch.abort();
        }
    }
}

impl<T: FromRecord> Stream for Reader<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.ended && this.buffer.is_empty() {
                return Poll::Ready(None);
            }
            // One fetch ahead: the next is asked for while the last is handed out.
            if this.inflight.is_none()
                && !this.ended
                && this.buffer.len() <= this.batch as usize / 2
            {
                this.start_fetch();
            }
            if let Some(record) = this.buffer.pop_front() {
                let raw = record.into_raw(&this.stream);
                return Poll::Ready(Some(raw.and_then(|raw| T::from_record(&this.stream, raw))));
            }
            let Some(fetch) = this.inflight.as_mut() else {
                return Poll::Ready(None);
            };
            let done = ready!(Pin::new(fetch).poll(cx));
            this.inflight = None;
            match done {
                Ok(Ok(fetched)) => {
                    this.next = From::Offset(fetched.next);
                    this.buffer.extend(fetched.records);
                }
                Ok(Err(e)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Err(e) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(Error::Invalid {
                        stream: this.stream.clone(),
                        reason: format!("the fetch task failed: {e}"),
                    })));
                }
            }
        }
    }
}

impl<T> std::fmt::Debug for Reader<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("stream", &self.stream)
            .field("next", &self.next)
            .field("batch", &self.batch)
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}
