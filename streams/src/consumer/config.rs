//! How a durable consumer is configured, and what it reports.

use std::time::Duration;

use serde::{Deserialize, Serialize};

// The reader's `From` (Start, Offset, Time, Tail) says where a new consumer starts too.
use crate::wire::From as StartAt;

/// Configuration of a durable consumer: a by-value builder, serializable (stored with the
/// consumer, shown by the admin API).
///
/// ```
/// use std::time::Duration;
/// use meshbus_streams::ConsumerConfig;
///
/// let config = ConsumerConfig::new()
///     .ack_wait(Duration::from_secs(10))
///     .max_deliveries(3)
///     .filter(["orders.placed"])
///     .start(meshbus_streams::From::Tail);
/// assert_eq!(config.max_ack_pending, 1000);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// How long a delivered record may stay unacknowledged before it is delivered again.
    #[serde(rename = "ack_wait_ms", with = "millis")]
    pub ack_wait: Duration,
    /// Deliveries of one record (the first included) before it goes to the dead-letter
    /// stream instead of being delivered again. At least 1.
    pub max_deliveries: u32,
    /// Records delivered and not yet acknowledged, at most; new deliveries wait for acks
    /// beyond it. At least 1.
    pub max_ack_pending: u32,
    /// Event names this consumer receives; empty means every record of the stream.
    pub filter: Vec<String>,
    /// Where a new consumer starts; only used when it is created (an existing consumer
    /// resumes from its stored cursor). [`From::Offset`](crate::From::Offset) below the
    /// stream's first record starts at that record.
    pub start: StartAt,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(30),
            max_deliveries: 5,
            max_ack_pending: 1000,
            filter: Vec::new(),
            start: StartAt::Start,
        }
    }
}

impl ConsumerConfig {
    /// The defaults: `ack_wait` 30 s, 5 deliveries, 1,000 pending acks, no filter, from the
    /// start of the stream ([`From::Start`](crate::From::Start)).
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a delivery waits for its ack before the record is delivered again.
    #[must_use]
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    /// Deliveries of one record before it is dead-lettered (at least 1).
    #[must_use]
    pub fn max_deliveries(mut self, deliveries: u32) -> Self {
        self.max_deliveries = deliveries.max(1);
        self
    }

    /// Records delivered and not yet acked, at most (at least 1).
    #[must_use]
    pub fn max_ack_pending(mut self, pending: u32) -> Self {
        self.max_ack_pending = pending.max(1);
        self
    }

    /// Receive only records of these event names (replaces an earlier filter).
    #[must_use]
    pub fn filter<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.filter = names.into_iter().map(Into::into).collect();
        self
    }

    /// Where a new consumer starts.
    #[must_use]
    pub fn start(mut self, start: StartAt) -> Self {
        self.start = start;
        self
    }

    /// Whether a record of event `name` (`None`: the record names no event) passes the filter.
    pub fn accepts(&self, name: Option<&str>) -> bool {
        self.filter.is_empty() || name.is_some_and(|n| self.filter.iter().any(|f| f == n))
    }

    /// `max_deliveries` as the state machine uses it (the fields are public, so a 0 can get
    /// past the builder).
    pub(crate) fn deliveries_cap(&self) -> u32 {
        self.max_deliveries.max(1)
    }

    /// `max_ack_pending` as the state machine uses it.
    pub(crate) fn pending_cap(&self) -> usize {
        usize::try_from(self.max_ack_pending.max(1)).unwrap_or(usize::MAX)
    }
}

/// What a durable consumer has done, as the admin API and `consumer_info` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConsumerInfo {
    /// The consumer's name.
    pub name: String,
    /// The next offset to be considered for a first delivery (the cursor).
    pub position: u64,
    /// Every offset below it is acknowledged, dead-lettered, filtered out or gone.
    pub ack_floor: u64,
    /// Acknowledgements taken, since the consumer was created.
    pub acked: u64,
    /// Records delivered and not yet acknowledged (waiting for an ack or for redelivery).
    pub pending: u64,
    /// Deliveries that were not a record's first.
    pub redelivered: u64,
    /// Records sent to the dead-letter stream after `max_deliveries`.
    pub dead_lettered: u64,
    /// Deliveries made, first and repeated.
    pub delivered: u64,
    /// Records deleted by retention or a purge before this consumer was done with them.
    pub gone: u64,
    /// Records still to be processed: those not yet delivered (from `position` to the end of
    /// the stream) plus the pending ones. With a filter it counts every record not yet
    /// looked at, so it is an upper bound.
    pub lag: u64,
}

/// Serde for a `Duration` as whole milliseconds, readable in JSON.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
