//! The stream host's series, through the [`metrics`](https://docs.rs/metrics) facade (the
//! application installs the recorder; see `meshbus_core::metrics` for the bus's own).
//!
//! Registered the first time the host serves a command or captures an event (when it learns
//! its node's id and name), and per consumer the first time the consumer is read; kept with
//! the host. Labels: `node`, `node_name`, `stream`, and `consumer` for a consumer's.
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `meshbus_stream_appended_records_total` | counter | records appended (a repeated idempotency key not counted) |
//! | `meshbus_stream_appended_bytes_total` | counter | their body bytes |
//! | `meshbus_stream_records` | gauge | records in the log, set after each append |
//! | `meshbus_stream_bytes` | gauge | bytes of the log's segments, set after each append |
//! | `meshbus_stream_consumer_lag` | gauge | records the consumer has not had acknowledged (after each read) |
//! | `meshbus_stream_consumer_pending` | gauge | records delivered and not yet acknowledged |
//! | `meshbus_stream_consumer_redeliveries_total` | counter | records delivered again |

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Label};

use crate::log::LogInfo;

/// A stream's series and its consumers'.
#[derive(Debug)]
pub(crate) struct StreamMetrics {
    labels: Vec<Label>,
    appended_records: Counter,
    appended_bytes: Counter,
    records: Gauge,
    bytes: Gauge,
    consumers: Mutex<HashMap<String, Arc<ConsumerMetrics>>>,
}

/// One consumer's series.
#[derive(Debug)]
pub(crate) struct ConsumerMetrics {
    lag: Gauge,
    pending: Gauge,
    redelivered: Counter,
}

impl StreamMetrics {
    /// Registers stream `stream`'s series for the node of `bus`.
    pub(crate) fn new(bus: &meshbus_core::Bus, stream: &str) -> Self {
        let labels = vec![
            Label::new("node", bus.node_id().to_string()),
            Label::new("node_name", bus.name().to_owned()),
            Label::new("stream", stream.to_owned()),
        ];
        StreamMetrics {
            appended_records: metrics::counter!(
                "meshbus_stream_appended_records_total",
                labels.clone()
            ),
            appended_bytes: metrics::counter!(
                "meshbus_stream_appended_bytes_total",
                labels.clone()
            ),
            records: metrics::gauge!("meshbus_stream_records", labels.clone()),
            bytes: metrics::gauge!("meshbus_stream_bytes", labels.clone()),
            consumers: Mutex::default(),
            labels,
        }
    }

    /// Counts `records` records of `bytes` body bytes appended; `info` is the log after them.
    pub(crate) fn appended(&self, records: u64, bytes: u64, info: &LogInfo) {
        self.appended_records.increment(records);
        self.appended_bytes.increment(bytes);
        self.records.set(info.records as f64);
        self.bytes.set(info.bytes as f64);
    }

    /// Consumer `name`'s series, registered the first time.
    pub(crate) fn consumer(&self, name: &str) -> Arc<ConsumerMetrics> {
        let mut all = crate::log::lock(&self.consumers);
        if let Some(c) = all.get(name) {
            return Arc::clone(c);
        }
        let mut labels = self.labels.clone();
        labels.push(Label::new("consumer", name.to_owned()));
        let c = Arc::new(ConsumerMetrics {
            lag: metrics::gauge!("meshbus_stream_consumer_lag", labels.clone()),
            pending: metrics::gauge!("meshbus_stream_consumer_pending", labels.clone()),
            redelivered: metrics::counter!("meshbus_stream_consumer_redeliveries_total", labels),
        });
        all.insert(name.to_owned(), Arc::clone(&c));
        c
    }
}

impl ConsumerMetrics {
    /// Sets the consumer's figures from its `info`.
    pub(crate) fn update(&self, info: &crate::ConsumerInfo) {
        self.lag.set(info.lag as f64);
        self.pending.set(info.pending as f64);
        self.redelivered.absolute(info.redelivered);
    }
}
