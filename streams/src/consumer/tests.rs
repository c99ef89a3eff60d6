//! Tests of the durable consumer: the state machine driven by an explicit clock, the store on
//! a temporary directory, and a property test mixing both with simulated crashes.

mod machine;
mod props;
mod store;

use std::time::{Duration, Instant};

use super::{Consumer, ConsumerConfig, Delivery};

/// Records `range` of a stream whose every record is of event `"a"`.
fn recs(range: std::ops::Range<u64>) -> Vec<(u64, Option<&'static str>)> {
    range.map(|o| (o, Some("a"))).collect()
}

/// The offsets of `deliveries`.
fn offsets(deliveries: &[Delivery]) -> Vec<u64> {
    deliveries.iter().map(|d| d.offset).collect()
}

/// A consumer from offset 0 with `ack_wait` 10 s and the given limits.
fn consumer(max_deliveries: u32, max_ack_pending: u32) -> Consumer {
    let config = ConsumerConfig::new()
        .ack_wait(Duration::from_secs(10))
        .max_deliveries(max_deliveries)
        .max_ack_pending(max_ack_pending);
    Consumer::new("billing", config, 0)
}

/// `t0` plus `secs` seconds.
fn at(t0: Instant, secs: u64) -> Instant {
    t0 + Duration::from_secs(secs)
}
