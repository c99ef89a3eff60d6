//! The builder form of a durable consumer: a handler registered at start-up whose `Ok` acks
//! and whose `Err` or panic negatively acks, run by a member task the bus starts.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use meshbus_core::{Binary, Bus, BusBuilder, Event, HandlerError, Scope};
use serde::de::DeserializeOwned;

use super::read::StreamRecord;
use super::StreamsExt;
use crate::ConsumerConfig;

/// What a stream handler knows of the record it handles besides its value.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeliveryContext {
    /// The stream.
    pub stream: String,
    /// The consumer.
    pub consumer: String,
    /// The record's offset.
    pub offset: u64,
    /// When it was appended (ms since the Unix epoch, by the host's clock).
    pub timestamp: u64,
    /// Which delivery of it this is: 1 for the first.
    pub deliveries: u32,
    /// Its headers.
    pub headers: Vec<(String, Binary)>,
    bus: Bus,
}

impl DeliveryContext {
    /// The bus, to send commands or publish from the handler.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }
}

/// The longest pause between tries to join a consumer whose host is not reachable.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Registers `handler` as a member of durable consumer `consumer` of `stream` (created with
/// `config` if it does not exist): the bus runs it from start to shutdown.
pub(crate) fn register<E, F, Fut>(
    builder: BusBuilder,
    stream: String,
    consumer: String,
    config: ConsumerConfig,
    handler: F,
) -> BusBuilder
where
    E: Event + DeserializeOwned,
    F: Fn(E, DeliveryContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    builder.on_start(move |bus: Bus| async move {
        member(&bus, &stream, &consumer, config, &handler).await;
    })
}

/// Joins the consumer (retrying while its host is not there), then handles its records one
/// at a time until the bus begins to shut down. A record being handled then is finished and
/// settled first; one that the shutdown leaves unsettled is delivered again after
/// `ack_wait`.
async fn member<E, F, Fut>(
    bus: &Bus,
    stream: &str,
    consumer: &str,
    config: ConsumerConfig,
    handler: &F,
) where
    E: Event + DeserializeOwned,
    F: Fn(E, DeliveryContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    let streams = bus.streams().scope(Scope::Network);
    let closing = bus.closing();
    tokio::pin!(closing);
    let mut pause = Duration::from_millis(50);
    let mut member = loop {
        let joining = std::future::IntoFuture::into_future(
            streams
                .consumer::<E>(stream, consumer)
                .config(config.clone()),
        );
        let joined = tokio::select! {
            () = &mut closing => return,
            joined = joining => joined,
        };
        match joined {
            Ok(member) => break member,
            Err(e) => {
                tracing::debug!(stream, consumer, error = %e, "joining the consumer failed; trying again");
                tokio::select! {
                    () = &mut closing => return,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(MAX_RETRY);
            }
        }
    };
    loop {
        // Only the wait for the next record is cut short by a shutdown: a record in hand is
        // handled and settled first.
        let message = tokio::select! {
            biased;
            () = &mut closing => return,
            message = member.next() => message,
        };
        let Some(message) = message else { return };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                if !bus.is_closed() {
                    tracing::warn!(stream, consumer, error = %e, "pulling records failed");
                }
                continue;
            }
        };
        let (record, deliveries, acker) = message.into_parts();
        let StreamRecord {
            offset,
            timestamp,
            headers,
            value,
            ..
        } = record;
        let ctx = DeliveryContext {
            stream: stream.to_owned(),
            consumer: consumer.to_owned(),
            offset,
            timestamp,
            deliveries,
            headers,
            bus: bus.clone(),
        };
        let outcome = AssertUnwindSafe(async { handler(value, ctx).await })
            .catch_unwind()
            .await;
        let settled = match outcome {
            Ok(Ok(())) => acker.ack().await,
            Ok(Err(e)) => {
                tracing::warn!(stream, consumer, offset, error = %e, "stream handler failed: the record will be delivered again");
                acker.nak_because(format!("the handler failed: {e}")).await
            }
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(stream, consumer, offset, panic = %msg, "stream handler panicked: the record will be delivered again");
                acker
                    .nak_because(format!("the handler panicked: {msg}"))
                    .await
            }
        };
        if let Err(e) = settled {
            tracing::warn!(stream, consumer, offset, error = %e, "settling a record failed: it will be delivered again");
        }
    }
}
