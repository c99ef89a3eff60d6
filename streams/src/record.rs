//! Records as appended and as read.

use bytes::Bytes;

/// A record to append: timestamp, headers and body. The log gives it its offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// Milliseconds since the Unix epoch, chosen by the appender (the log does not read a clock).
    pub timestamp: u64,
    /// A small list of key/value headers, kept in order.
    pub headers: Vec<(String, Bytes)>,
    /// The body, stored as given (opaque to the log).
    pub body: Bytes,
}

impl NewRecord {
    /// A record with no headers.
    pub fn new(timestamp: u64, body: impl Into<Bytes>) -> Self {
        Self {
            timestamp,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((key.into(), value.into()));
        self
    }
}

/// A record read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its offset: dense, from 0, one per record.
    pub offset: u64,
    /// Milliseconds since the Unix epoch, as the appender gave it.
    pub timestamp: u64,
    /// Its headers, in the order appended.
    pub headers: Vec<(String, Bytes)>,
    /// Its body, as appended.
    pub body: Bytes,
}

/// What a successful append returns: the offsets its records were given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first record of the append.
    pub first: u64,
    /// Number of records appended (their offsets are `first..first + count`).
    pub count: u64,
}

impl Appended {
    /// The offsets of the append's records.
    pub fn offsets(&self) -> std::ops::Range<u64> {
        self.first..self.first + self.count
    }
}
