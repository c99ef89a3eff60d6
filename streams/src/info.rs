//! What a host reports of its streams.

use serde::{Deserialize, Serialize};

/// What a stream holds, as its host reports it ([`Streams::info`](crate::Streams::info)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StreamInfo {
    /// The stream's name.
    pub name: String,
    /// The earliest offset still held (equal to `next_offset` when the stream is empty).
    pub first_offset: u64,
    /// The offset of the newest record, if there is one.
    pub last_offset: Option<u64>,
    /// The offset the next record will get.
    pub next_offset: u64,
    /// Records held.
    pub records: u64,
    /// Bytes of segment files.
    pub bytes: u64,
    /// Segment files.
    pub segments: u64,
    /// What retention deletes.
    pub retention: RetentionInfo,
    /// The fsync policy, in words (`always`, `interval 100 ms`, `never`).
    pub fsync: String,
}

/// A stream's retention limits, as its info reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RetentionInfo {
    /// Records older than this many milliseconds go (whole segments at a time).
    pub max_age_ms: Option<u64>,
    /// The most bytes of segment files kept (plus the active segment).
    pub max_bytes: Option<u64>,
    /// The most records kept (whole segments at a time).
    pub max_records: Option<u64>,
}
