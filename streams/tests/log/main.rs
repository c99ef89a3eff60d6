//! Tests of the durable log (issue 16, item 1).

mod faults;
mod group;
mod purge;
mod recovery;
mod retention;
mod round_trip;

use std::sync::Arc;

use bytes::Bytes;
use meshbus_streams::{FaultStorage, Log, LogConfig, NewRecord, Record};

/// Record `i`: body, a header and a timestamp all derived from `i`.
pub(crate) fn rec(i: u64) -> NewRecord {
    let body = format!("record-{i}-{}", "x".repeat((i % 37) as usize));
    NewRecord::new(1_000 + 10 * i, Bytes::from(body))
        .header("i", Bytes::from(i.to_le_bytes().to_vec()))
}

/// Asserts that `r` is record `i` as [`rec`] made it, at offset `i`.
pub(crate) fn check(r: &Record, i: u64) {
    let want = rec(i);
    assert_eq!(r.offset, i);
    assert_eq!(r.timestamp, want.timestamp, "timestamp of {i}");
    assert_eq!(r.body, want.body, "body of {i}");
    assert_eq!(r.headers, want.headers, "headers of {i}");
}

/// Every record of the log from `from`, read in small chunks.
pub(crate) async fn read_all(log: &Log, from: u64) -> Vec<Record> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let got = log.read(next, 13).await.expect("read");
        let Some(last) = got.last() else { return out };
        next = last.offset + 1;
        out.extend(got);
    }
}

pub(crate) async fn open_fault(storage: &FaultStorage, config: LogConfig) -> Log {
    Log::open_with(Arc::new(storage.clone()), config)
        .await
        .expect("open")
}
