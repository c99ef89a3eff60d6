//! Durable consumers from a member's side: [`Streams::consumer`] creates (or joins) a consumer
//! and gives a [`Consumer`], a [`Stream`] of [`Message`]s to ack; members of one consumer
//! compete for its records.

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use meshbus_core::{Bus, Scope};
use tokio::task::JoinHandle;

use super::read::{FromRecord, RawRecord};
use super::{Marker, Streams};
use crate::error::Error;
use crate::wire::{self, op, From, WireDelivery};
use crate::{ConsumerConfig, ConsumerInfo};

/// The default [`ConsumerBuilder::batch`].
pub const DEFAULT_CONSUMER_BATCH: u32 = 16;
/// Time a `next` may take beyond its wait before the request times out.
const SLACK: Duration = Duration::from_secs(30);
/// The longest pause after a failed pull before the next.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where a member's acks go.
#[derive(Debug, Clone)]
struct Target {
    bus: Bus,
    scope: Scope,
    stream: String,
    consumer: String,
}

impl Target {
    fn streams(&self) -> Streams<'_> {
        Streams {
            bus: &self.bus,
            scope: self.scope,
        }
    }

    async fn ack(
        &self,
        offsets: Vec<u64>,
        nak: bool,
        delay: Option<Duration>,
        reason: Option<String>,
    ) -> Result<(), Error> {
        let cmd = wire::Ack {
            consumer: self.consumer.clone(),
            offsets,
            nak,
            delay_ms: delay.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            reason,
        };
        self.streams().call(&self.stream, op::ACK, cmd, None).await
    }

    async fn create(&self, config: ConsumerConfig, update: bool) -> Result<ConsumerInfo, Error> {
        let cmd = wire::CreateConsumer {
            consumer: self.consumer.clone(),
            config,
            update,
        };
        self.streams()
            .call(&self.stream, op::CONSUMER, cmd, None)
            .await
    }
}

/// A record handed to this member: ack it when handled, or nak it to have it delivered
/// again. Unacked, it is delivered again after the consumer's `ack_wait`.
#[derive(Debug)]
pub struct Message<T> {
    /// The record.
    pub record: T,
    /// Which delivery of the record this is: 1 for the first, more after redeliveries.
    pub deliveries: u32,
    offset: u64,
    target: Arc<Target>,
}

/// What acks one message, apart from its record.
#[derive(Debug)]
pub(crate) struct Acker {
    offset: u64,
    target: Arc<Target>,
}

impl Acker {
    pub(crate) async fn ack(&self) -> Result<(), Error> {
        self.target.ack(vec![self.offset], false, None, None).await
    }

    /// A nak saying why (the handler's error): a dead letter keeps it.
    pub(crate) async fn nak_because(&self, reason: String) -> Result<(), Error> {
        self.target
            .ack(vec![self.offset], true, None, Some(reason))
            .await
    }
}

impl<T> Message<T> {
    /// The record's offset in the stream.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The record, its delivery count and what acks it.
    pub(crate) fn into_parts(self) -> (T, u32, Acker) {
        let acker = Acker {
            offset: self.offset,
            target: self.target,
        };
        (self.record, self.deliveries, acker)
    }

    /// Acknowledges the record: once this returns `Ok`, it is never delivered again (unless
    /// the consumer is reset to before it).
    ///
    /// # Errors
    /// The host is not reachable ([`Error::Bus`]; the record will be delivered again), or the
    /// record is no longer pending ([`Error::Invalid`]: redelivered meanwhile, after
    /// `ack_wait`).
    pub async fn ack(&self) -> Result<(), Error> {
        self.target.ack(vec![self.offset], false, None, None).await
    }

    /// Negatively acknowledges the record: it is delivered again, after `delay` if given,
    /// or goes to the dead-letter stream if this was its last allowed delivery.
    ///
    /// # Errors
    /// As [`ack`](Self::ack).
    pub async fn nak(&self, delay: Option<Duration>) -> Result<(), Error> {
        self.target.ack(vec![self.offset], true, delay, None).await
    }
}

/// Configures a durable consumer before joining it: `.await` it for a [`Consumer`]. Made by
/// [`Streams::consumer`] and [`Streams::consumer_raw`].
#[must_use = "a consumer is not created unless awaited"]
#[derive(Debug)]
pub struct ConsumerBuilder<T> {
    target: Target,
    config: ConsumerConfig,
    /// A setter was called: an existing consumer takes this configuration.
    explicit: bool,
    batch: u32,
    wait: Duration,
    _out: Marker<T>,
}

impl<T> ConsumerBuilder<T> {
    pub(super) fn new(streams: Streams<'_>, stream: &str, name: &str, filter: Vec<String>) -> Self {
        ConsumerBuilder {
            target: Target {
                bus: streams.bus.clone(),
                scope: streams.scope,
                stream: stream.to_owned(),
                consumer: name.to_owned(),
            },
            config: ConsumerConfig::new().filter(filter),
            explicit: false,
            batch: DEFAULT_CONSUMER_BATCH,
            wait: super::read::DEFAULT_WAIT,
            _out: Marker::default(),
        }
    }

    /// The whole configuration at once (replaces what was set before, filter included).
    ///
    /// A consumer that exists keeps its configuration unless the builder sets one (this or
    /// any setter below); a member that only joins takes the consumer as it is.
    pub fn config(mut self, config: ConsumerConfig) -> Self {
        self.config = config;
        self.explicit = true;
        self
    }

    /// See [`ConsumerConfig::ack_wait`].
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.config = self.config.ack_wait(wait);
        self.explicit = true;
        self
    }

    /// See [`ConsumerConfig::max_deliveries`].
    pub fn max_deliveries(mut self, deliveries: u32) -> Self {
        self.config = self.config.max_deliveries(deliveries);
        self.explicit = true;
        self
    }

    /// See [`ConsumerConfig::max_ack_pending`].
    pub fn max_ack_pending(mut self, pending: u32) -> Self {
        self.config = self.config.max_ack_pending(pending);
        self.explicit = true;
        self
    }

    /// Where a new consumer starts (an existing one resumes from its cursor).
    pub fn from(mut self, from: From) -> Self {
        self.config = self.config.start(from);
        self.explicit = true;
        self
    }

    /// Only records of these event names (a typed consumer takes only its own by default).
    pub fn events<I, S>(mut self, events: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config = self.config.filter(events);
        self.explicit = true;
        self
    }

    /// Records this member asks for at once (default 16). It asks again once it has
    /// handed them all out; held records are not delivered to other members meanwhile.
    pub fn batch(mut self, records: u32) -> Self {
        self.batch = records.clamp(1, crate::host::MAX_NEXT);
        self
    }

    /// How long the host holds a pull open waiting for a record (default 5 s).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait.min(crate::host::MAX_FETCH_WAIT);
        self
    }
}

impl<T: FromRecord> IntoFuture for ConsumerBuilder<T> {
    type Output = Result<Consumer<T>, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            self.target
                .create(self.config.clone(), self.explicit)
                .await?;
            Ok(Consumer {
                target: Arc::new(self.target),
                config: self.config,
                batch: self.batch,
                wait: self.wait,
                buffer: VecDeque::new(),
                inflight: None,
                backoff: Duration::ZERO,
                _out: Marker::default(),
            })
        })
    }
}

/// A member of a durable consumer: a [`Stream`] of [`Message`]s, pulled from the host in
/// batches. It does not end: after an error (the host unreachable, restarting) it yields the
/// error, waits a little (up to 5 s, longer after each failure in a row), joins the consumer
/// again and goes on.
#[must_use = "a consumer receives nothing unless polled"]
pub struct Consumer<T> {
    target: Arc<Target>,
    config: ConsumerConfig,
    batch: u32,
    wait: Duration,
    buffer: VecDeque<WireDelivery>,
    inflight: Option<JoinHandle<Result<Vec<WireDelivery>, Error>>>,
    /// The pause before the next pull after a failure; zero after a success.
    backoff: Duration,
    _out: Marker<T>,
}

impl<T: FromRecord> Consumer<T> {
    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.target.consumer
    }

    /// The consumer's info, from its host.
    ///
    /// # Errors
    /// As [`Streams::consumer_info`].
    pub async fn info(&self) -> Result<ConsumerInfo, Error> {
        self.target
            .streams()
            .consumer_info(&self.target.stream, &self.target.consumer)
            .await
    }

    fn pull(&mut self) {
        let target = self.target.clone();
        let cmd = wire::Next {
            consumer: target.consumer.clone(),
            max: self.batch,
            wait_ms: u64::try_from(self.wait.as_millis()).unwrap_or(u64::MAX),
        };
        let timeout = self.wait + SLACK;
        let (backoff, config) = (self.backoff, self.config.clone());
        self.inflight = Some(tokio::spawn(async move {
            let pull = async {
                if !backoff.is_zero() {
                    tokio::time::sleep(backoff).await;
                    // The host may have restarted without this consumer, or lost it: join
                    // again.
                    target.create(config, false).await?;
                }
                target
                    .streams()
                    .call(&target.stream, op::NEXT, cmd, Some(timeout))
                    .await
            };
            // A member does not hold its bus's shutdown for the wait at the tail.
            tokio::select! {
                pulled = pull => pulled,
                () = target.bus.closing() => Err(Error::Closed),
            }
        }));
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        if let Some(pull) = self.inflight.take() {
            pull.abort();
        }
    }
}

impl<T: FromRecord> Stream for Consumer<T> {
    type Item = Result<Message<T>, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(d) = this.buffer.pop_front() {
                let offset = d.record.offset;
                let raw = match d.record.into_raw(&this.target.stream) {
                    Ok(raw) => raw,
                    Err(e) => return Poll::Ready(Some(Err(e))),
                };
                let message = match T::from_record(&this.target.stream, raw) {
                    Ok(record) => Ok(Message {
                        record,
                        deliveries: d.deliveries,
                        offset,
                        target: Arc::clone(&this.target),
                    }),
                    Err(e) => {
                        // Nobody can handle it here: nak it at once (it is dead-lettered
                        // after `max_deliveries`, with why).
                        let target = Arc::clone(&this.target);
                        let reason = e.to_string();
                        tokio::spawn(async move {
                            let _ = target.ack(vec![offset], true, None, Some(reason)).await;
                        });
                        Err(e)
                    }
                };
                return Poll::Ready(Some(message));
            }
            if this.inflight.is_none() {
                this.pull();
            }
            let Some(pull) = this.inflight.as_mut() else {
                continue;
            };
            let done = ready!(Pin::new(pull).poll(cx));
            this.inflight = None;
            match done {
                Ok(Ok(deliveries)) => {
                    this.backoff = Duration::ZERO;
                    this.buffer.extend(deliveries);
                }
                Ok(Err(e)) => {
                    this.backoff =
                        (this.backoff * 2).clamp(Duration::from_millis(100), MAX_BACKOFF);
                    return Poll::Ready(Some(Err(e)));
                }
                Err(e) => {
                    this.backoff = MAX_BACKOFF;
                    return Poll::Ready(Some(Err(Error::Invalid {
                        stream: this.target.stream.clone(),
                        reason: format!("the pull task failed: {e}"),
                    })));
                }
            }
        }
    }
}

impl<T> std::fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("stream", &self.target.stream)
            .field("consumer", &self.target.consumer)
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}

impl<'a> Streams<'a> {
    /// Joins durable consumer `name` of `stream`, creating it if it does not exist (with
    /// the builder's configuration; an existing consumer takes the new configuration and
    /// keeps its cursor). Takes the `E` records only unless given other
    /// [`events`](ConsumerBuilder::events).
    pub fn consumer<E>(self, stream: &str, name: &str) -> ConsumerBuilder<super::StreamRecord<E>>
    where
        E: meshbus_core::Event + serde::de::DeserializeOwned,
    {
        ConsumerBuilder::new(self, stream, name, vec![E::NAME.to_owned()])
    }

    /// [`consumer`](Self::consumer) with records undecoded, of every event name unless
    /// filtered with [`events`](ConsumerBuilder::events).
    pub fn consumer_raw(self, stream: &str, name: &str) -> ConsumerBuilder<RawRecord> {
        ConsumerBuilder::new(self, stream, name, Vec::new())
    }

    /// Consumer `name`'s position, ack floor, acked, pending, redelivered, dead-lettered
    /// and lag.
    ///
    /// # Errors
    /// [`Error::Invalid`] when there is no such consumer; as [`info`](Self::info).
    pub async fn consumer_info(self, stream: &str, name: &str) -> Result<ConsumerInfo, Error> {
        let cmd = wire::GetConsumer {
            consumer: name.to_owned(),
        };
        self.call(stream, op::CONSUMER_INFO, cmd, None).await
    }

    /// Moves consumer `name`'s cursor to `to` (an offset, a time, the start or the tail):
    /// every record from there on is delivered again, and nothing is pending.
    ///
    /// # Errors
    /// As [`consumer_info`](Self::consumer_info).
    pub async fn reset_consumer(
        self,
        stream: &str,
        name: &str,
        to: From,
    ) -> Result<ConsumerInfo, Error> {
        let cmd = wire::ResetConsumer {
            consumer: name.to_owned(),
            to,
        };
        self.call(stream, op::CONSUMER_RESET, cmd, None).await
    }

    /// Deletes consumer `name` and its state; `false` if there was none.
    ///
    /// # Errors
    /// As [`info`](Self::info).
    pub async fn delete_consumer(self, stream: &str, name: &str) -> Result<bool, Error> {
        let cmd = wire::DeleteConsumer {
            consumer: name.to_owned(),
        };
        self.call(stream, op::CONSUMER_DELETE, cmd, None).await
    }
}
