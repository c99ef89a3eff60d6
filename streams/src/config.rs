//! How a log is configured.

use std::time::Duration;

/// When appended records are flushed to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every append resolves only after an fsync that covers it. Concurrent appends share one
    /// fsync (group commit).
    Always,
    /// Appends resolve once written to the OS; the writer fsyncs at most this long after the
    /// first unsynced write. A power cut loses at most the last interval's records, always a
    /// suffix.
    Interval(Duration),
    /// The log never fsyncs records (segments are still fsynced when they are sealed). A power
    /// cut keeps a prefix of what was appended.
    Never,
}

impl Default for FsyncPolicy {
    fn default() -> Self {
        FsyncPolicy::Interval(Duration::from_millis(100))
    }
}

/// Which old segments are deleted. Limits combine: a segment goes when any says so. Only whole
/// sealed segments are deleted, oldest first, never the active one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Delete a segment whose newest record timestamp is older than this.
    pub max_age: Option<Duration>,
    /// Delete the oldest segments while the log's bytes on disk exceed this.
    pub max_bytes: Option<u64>,
    /// Delete the oldest segments while the log holds more records than this.
    pub max_records: Option<u64>,
}

/// Configuration of one log (one stream directory).
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub(crate) name: String,
    pub(crate) segment_bytes: u64,
    pub(crate) segment_age: Option<Duration>,
    pub(crate) index_interval: u64,
    pub(crate) max_batch_bytes: u64,
    pub(crate) fsync: FsyncPolicy,
    pub(crate) retention: Retention,
    pub(crate) cache_bytes: usize,
    pub(crate) queue: usize,
}

impl LogConfig {
    /// Defaults for the stream `name` (the name is used in errors and logs only).
    ///
    /// Segments of 64 MiB or 7 days, an index entry every 4 KiB, appends up to 8 MiB,
    /// [`FsyncPolicy::Interval`] of 100 ms, no retention, an 8 MiB read cache and a queue of
    /// 1,024 appends.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            segment_bytes: 64 << 20,
            segment_age: Some(Duration::from_secs(7 * 24 * 3600)),
            index_interval: 4096,
            max_batch_bytes: 8 << 20,
            fsync: FsyncPolicy::default(),
            retention: Retention::default(),
            cache_bytes: 8 << 20,
            queue: 1024,
        }
    }

    /// A segment is sealed and a new one started once it holds this many bytes.
    #[must_use]
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes.max(1);
        self
    }

    /// A segment is sealed at the first append after it has been open this long.
    #[must_use]
    pub fn segment_age(mut self, age: Option<Duration>) -> Self {
        self.segment_age = age;
        self
    }

    /// Bytes of log between two entries of the sparse index.
    #[must_use]
    pub fn index_interval(mut self, bytes: u64) -> Self {
        self.index_interval = bytes;
        self
    }

    /// Largest append (encoded, in bytes); larger ones fail with [`Error::TooLarge`](crate::Error::TooLarge).
    #[must_use]
    pub fn max_batch_bytes(mut self, bytes: u64) -> Self {
        self.max_batch_bytes = bytes.clamp(64, u64::from(u32::MAX / 2));
        self
    }

    /// The fsync policy.
    #[must_use]
    pub fn fsync(mut self, policy: FsyncPolicy) -> Self {
        self.fsync = policy;
        self
    }

    /// The retention limits.
    #[must_use]
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Bytes of decoded batches the read cache keeps.
    #[must_use]
    pub fn cache_bytes(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// Appends that may wait for the writer; more wait for room.
    #[must_use]
    pub fn queue(mut self, appends: usize) -> Self {
        self.queue = appends.clamp(1, 1 << 20);
        self
    }
}
