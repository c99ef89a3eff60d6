//! The log's errors.

use std::io;

/// Something the log could not do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error other than a full disk.
    #[error("stream {stream}: I/O error ({kind:?}): {source}")]
    Io {
        /// The stream.
        stream: String,
        /// The error's kind, for matching without the source.
        kind: io::ErrorKind,
        /// The error from the storage.
        #[source]
        source: io::Error,
    },
    /// A batch failed its checksum or framing while being read.
    #[error("stream {stream}: corrupt data at offset {offset}")]
    Corrupt {
        /// The stream.
        stream: String,
        /// The first offset that could not be read.
        offset: u64,
    },
    /// The offset asked for was deleted by retention or a purge.
    #[error("stream {stream}: offset {requested} is gone, the earliest is {earliest}")]
    OffsetGone {
        /// The stream.
        stream: String,
        /// The offset asked for.
        requested: u64,
        /// The earliest offset still in the log.
        earliest: u64,
    },
    /// The disk is full; nothing of the failed append was kept.
    #[error("stream {stream}: disk full")]
    DiskFull {
        /// The stream.
        stream: String,
    },
    /// An append is larger than `max_batch_bytes`, or a header does not fit its length field.
    #[error("append of {size} bytes is over the limit of {max}")]
    TooLarge {
        /// Encoded size of the append (or of the offending header).
        size: u64,
        /// The limit.
        max: u64,
    },
    /// An fsync failed earlier: what reached the disk is unknown, so the log takes no more
    /// appends until it is opened again (which runs recovery).
    #[error("stream {stream}: an fsync failed, reopen the log to recover")]
    Failed {
        /// The stream.
        stream: String,
    },
    /// The log was closed (or its writer thread is gone), or the bus is shutting down.
    #[error("the stream is closed")]
    Closed,
    /// The bus could not reach the stream's host, or the host did not answer: its
    /// [`kind`](meshbus_core::Error::kind) says why ([`NoHandler`](meshbus_core::ErrorKind::NoHandler)
    /// when no node in scope hosts the stream, [`PeerLost`](meshbus_core::ErrorKind::PeerLost),
    /// [`Timeout`](meshbus_core::ErrorKind::Timeout)). An append that failed so may have been
    /// written: retry it with the same idempotency key.
    #[error("stream request failed: {0}")]
    Bus(#[source] meshbus_core::Error),
    /// The host refused a request: a bad name, an absurd size, an unknown consumer.
    #[error("stream {stream}: {reason}")]
    Invalid {
        /// The stream.
        stream: String,
        /// Why.
        reason: String,
    },
    /// A record's body is not the event the reader expects.
    #[error("stream {stream}: the record at offset {offset} did not decode: {message}")]
    Decode {
        /// The stream.
        stream: String,
        /// The record's offset.
        offset: u64,
        /// What went wrong.
        message: String,
    },
}

impl Error {
    /// Maps an I/O error of stream `stream`: a full disk becomes [`Error::DiskFull`].
    pub(crate) fn io(stream: &str, e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::StorageFull || e.kind() == io::ErrorKind::QuotaExceeded {
            Error::DiskFull {
                stream: stream.to_owned(),
            }
        } else {
            Error::Io {
                stream: stream.to_owned(),
                kind: e.kind(),
                source: e,
            }
        }
    }

    /// A copy for every request of a failed group (io::Error is not `Clone`).
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Error::Io {
                stream,
                kind,
                source,
            } => Error::Io {
                stream: stream.clone(),
                kind: *kind,
                source: io::Error::new(*kind, source.to_string()),
            },
            Error::Corrupt { stream, offset } => Error::Corrupt {
                stream: stream.clone(),
                offset: *offset,
            },
            Error::OffsetGone {
                stream,
                requested,
                earliest,
            } => Error::OffsetGone {
                stream: stream.clone(),
                requested: *requested,
                earliest: *earliest,
            },
            Error::DiskFull { stream } => Error::DiskFull {
                stream: stream.clone(),
            },
            Error::TooLarge { size, max } => Error::TooLarge {
                size: *size,
                max: *max,
            },
            Error::Failed { stream } => Error::Failed {
                stream: stream.clone(),
            },
            Error::Closed => Error::Closed,
            Error::Bus(e) => {
                Error::Bus(meshbus_core::Error::new(e.kind()).with_detail(e.to_string()))
            }
            Error::Invalid { stream, reason } => Error::Invalid {
                stream: stream.clone(),
                reason: reason.clone(),
            },
            Error::Decode {
                stream,
                offset,
                message,
            } => Error::Decode {
                stream: stream.clone(),
                offset: *offset,
                message: message.clone(),
            },
        }
    }
}

/// The log's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

const _: () = {
    const fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Error>();
};
