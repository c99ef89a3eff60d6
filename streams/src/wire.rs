//! What stream hosts and their clients say to each other: commands sent under run-time names
//! (`$streams.<stream>.<op>`, see [`command_name`]) so that the mesh routes each to the node
//! hosting that stream, and how a record keeps its event name and idempotency key in the log.

use meshbus_core::{Binary, Command};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::record::{NewRecord, Record};

/// The operations a host serves, by the last part of their command name.
pub(crate) mod op {
    pub(crate) const APPEND: &str = "append";
    pub(crate) const FETCH: &str = "fetch";
    pub(crate) const INFO: &str = "info";
    pub(crate) const PURGE: &str = "purge";
    pub(crate) const DELETE: &str = "delete";
    pub(crate) const CONSUMER: &str = "consumer";
    pub(crate) const NEXT: &str = "next";
    pub(crate) const ACK: &str = "ack";
    pub(crate) const CONSUMER_INFO: &str = "consumer_info";
    pub(crate) const CONSUMER_DELETE: &str = "consumer_delete";
    pub(crate) const CONSUMER_RESET: &str = "consumer_reset";
}

/// The command name under which a host appends a confirmed publish of `event` to the stream
/// capturing it: every host whose stream captures the event answers (`send_all`).
pub(crate) fn capture_name(event: &str) -> String {
    format!("$streams.capture.{event}")
}

/// The header a confirmed publish carries, so that the host's capture of the plain copy passes
/// it over (the confirmed append already wrote it).
pub(crate) const CONFIRMED_HEADER: &str = "$streams-confirmed";

/// The command name of operation `op` on `stream`.
pub(crate) fn command_name(stream: &str, op: &str) -> String {
    format!("$streams.{stream}.{op}")
}

/// The longest stream name: its command names must fit the mesh's name limit with room for
/// the prefix and the operation.
pub const MAX_STREAM_NAME: usize = 255;

/// Refuses a stream name that is empty, too long, or has characters that would confuse its
/// command names, file names or a reader of logs: letters, digits, `-` and `_` only.
pub(crate) fn check_stream_name(name: &str) -> Result<(), Error> {
    if is_name(name) {
        Ok(())
    } else {
        Err(Error::Invalid {
            stream: name.chars().take(64).collect(),
            reason: format!(
                "a stream name is 1 to {MAX_STREAM_NAME} ASCII letters, digits, `-` or `_`"
            ),
        })
    }
}

/// Whether `name` is a good stream or consumer name: 1 to [`MAX_STREAM_NAME`] ASCII letters,
/// digits, `-` or `_`.
pub(crate) fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_STREAM_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What the name of a dead-letter stream ends with (a hosted stream's name may not).
pub const DEAD_LETTER_SUFFIX: &str = "-dlq";

/// The name of the dead-letter stream of `stream`.
pub fn dead_letter_stream(stream: &str) -> String {
    format!("{stream}{DEAD_LETTER_SUFFIX}")
}

/// Headers a dead letter carries, besides those of the record it copies.
pub mod dead_letter {
    /// The stream the record came from.
    pub const STREAM: &str = "$dlq.stream";
    /// The consumer that gave up on it.
    pub const CONSUMER: &str = "$dlq.consumer";
    /// Its offset in the stream it came from.
    pub const OFFSET: &str = "$dlq.offset";
    /// How often it was delivered.
    pub const DELIVERIES: &str = "$dlq.deliveries";
    /// Why its last delivery failed, in words.
    pub const REASON: &str = "$dlq.reason";
}

/// The header under which a stored record keeps its event name.
pub(crate) const EVENT_HEADER: &str = "$event";
/// The header under which a stored record keeps its idempotency key.
pub(crate) const KEY_HEADER: &str = "$key";
/// The header of a record whose body is stored LZ4-compressed: its decompressed size.
pub(crate) const LZ4_HEADER: &str = "$lz4";
/// Bodies above this are stored compressed when that makes them smaller, as the wire sends
/// them ([`DEFAULT_COMPRESS_THRESHOLD`](meshbus_core::wire::frame::DEFAULT_COMPRESS_THRESHOLD)).
const COMPRESS_ABOVE: usize = meshbus_core::wire::frame::DEFAULT_COMPRESS_THRESHOLD;
/// The largest decompressed body a record may declare (a frame's limit).
const MAX_BODY: u32 = 16 << 20;

/// One event to append, as a client sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// The event's name.
    pub(crate) event: String,
    /// The idempotency key: an append repeating a key seen within the dedupe window gets the
    /// first append's offset.
    #[serde(default)]
    pub(crate) key: Option<String>,
    /// The user's headers.
    #[serde(default)]
    pub(crate) headers: Vec<(String, Binary)>,
    /// The event, encoded as on the wire (MessagePack).
    pub(crate) body: Binary,
}

/// Appends entries; the reply has one offset per entry, in order.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Append {
    pub(crate) entries: Vec<Entry>,
}

impl Command for Append {
    const NAME: &'static str = "$streams.append";
    type Reply = Result<Vec<u64>, WireError>;
}

/// Appends one captured event, confirmed; the reply names the stream and the offset.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Capture {
    pub(crate) entry: Entry,
}

impl Command for Capture {
    const NAME: &'static str = "$streams.capture";
    /// `None` from a host that gives way to another host of its stream.
    type Reply = Result<Option<(String, u64)>, WireError>;
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum From {
    /// The earliest record still held.
    Start,
    /// This offset (an error if retention or a purge removed it).
    Offset(u64),
    /// The first record stamped at or after this time (ms since the Unix epoch).
    Time(u64),
    /// The next record appended from now on.
    Tail,
}

/// Reads records: at most `max_records` and about `max_bytes`, waiting up to `wait_ms` for the
/// first one when there is none yet.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Fetch {
    pub(crate) from: From,
    pub(crate) max_records: u32,
    pub(crate) max_bytes: u32,
    pub(crate) wait_ms: u64,
    /// Only records of these event names (all when empty).
    #[serde(default)]
    pub(crate) events: Vec<String>,
}

impl Command for Fetch {
    const NAME: &'static str = "$streams.fetch";
    type Reply = Result<Fetched, WireError>;
}

/// A record as a reader gets it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WireRecord {
    pub(crate) offset: u64,
    pub(crate) timestamp: u64,
    pub(crate) event: String,
    pub(crate) headers: Vec<(String, Binary)>,
    pub(crate) body: Binary,
    /// The decompressed size of an LZ4-compressed body; 0 for a plain one.
    #[serde(default)]
    pub(crate) lz4: u32,
}

impl WireRecord {
    /// The record as readers and consumers hand it out, its body decompressed.
    ///
    /// # Errors
    /// As [`body`](Self::body).
    pub(crate) fn into_raw(self, stream: &str) -> Result<crate::RawRecord, Error> {
        let body = self.body(stream)?;
        Ok(crate::RawRecord {
            offset: self.offset,
            timestamp: self.timestamp,
            event: self.event,
            headers: self.headers,
            body,
        })
    }

    /// The body as it was appended: decompressed if it was stored compressed.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the compressed body does not decompress to its declared size.
    pub(crate) fn body(&self, stream: &str) -> Result<Binary, Error> {
        unpack(&self.body, self.lz4, stream, self.offset)
    }
}

fn unpack(body: &Binary, lz4: u32, stream: &str, offset: u64) -> Result<Binary, Error> {
    if lz4 == 0 {
        return Ok(body.clone());
    }
    let corrupt = || Error::Corrupt {
        stream: stream.to_owned(),
        offset,
    };
    if lz4 > MAX_BODY {
        return Err(corrupt());
    }
    lz4_flex::block::decompress(body, lz4 as usize)
        .map(Binary::from)
        .map_err(|_| corrupt())
}

/// The body of a stored record as it was appended.
pub(crate) fn body_of(record: &Record, stream: &str) -> Result<Binary, Error> {
    let lz4 = parts(record).lz4;
    unpack(
        &Binary::from(record.body.clone()),
        lz4,
        stream,
        record.offset,
    )
}

/// What a fetch found.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Fetched {
    pub(crate) records: Vec<WireRecord>,
    /// The offset to fetch from next: past the last record returned, or past records the
    /// filter skipped.
    pub(crate) next: u64,
}

/// Asks for a stream's [`StreamInfo`](crate::StreamInfo).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Info;

impl Command for Info {
    const NAME: &'static str = "$streams.info";
    type Reply = Result<crate::StreamInfo, WireError>;
}

/// Removes the records below `up_to` (all when `None`); the reply is `(removed, first)`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Purge {
    pub(crate) up_to: Option<u64>,
}

impl Command for Purge {
    const NAME: &'static str = "$streams.purge";
    type Reply = Result<(u64, u64), WireError>;
}

/// Deletes the stream's records and state: it starts again empty at offset 0.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Delete;

impl Command for Delete {
    const NAME: &'static str = "$streams.delete";
    type Reply = Result<(), WireError>;
}

/// Creates a durable consumer, or changes the configuration of an existing one (its cursor
/// stays); the reply is its info.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CreateConsumer {
    pub(crate) consumer: String,
    pub(crate) config: crate::ConsumerConfig,
    /// Whether an existing consumer takes `config` (else it keeps its own).
    #[serde(default)]
    pub(crate) update: bool,
}

impl Command for CreateConsumer {
    const NAME: &'static str = "$streams.consumer";
    type Reply = Result<crate::ConsumerInfo, WireError>;
}

/// Asks for up to `max` records for a member of `consumer`, waiting up to `wait_ms` for one.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Next {
    pub(crate) consumer: String,
    pub(crate) max: u32,
    pub(crate) wait_ms: u64,
}

/// A record handed to a member, with which delivery of it this is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WireDelivery {
    pub(crate) record: WireRecord,
    pub(crate) deliveries: u32,
}

impl Command for Next {
    const NAME: &'static str = "$streams.next";
    type Reply = Result<Vec<WireDelivery>, WireError>;
}

/// Acks (`nak: false`) or negatively acks offsets a member was given; a nak may ask for a
/// delay before the redelivery.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Ack {
    pub(crate) consumer: String,
    pub(crate) offsets: Vec<u64>,
    #[serde(default)]
    pub(crate) nak: bool,
    #[serde(default)]
    pub(crate) delay_ms: u64,
    /// Why a nak: the handler's error, kept with a dead letter.
    #[serde(default)]
    pub(crate) reason: Option<String>,
}

impl Command for Ack {
    const NAME: &'static str = "$streams.ack";
    type Reply = Result<(), WireError>;
}

/// Asks for a consumer's info.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct GetConsumer {
    pub(crate) consumer: String,
}

impl Command for GetConsumer {
    const NAME: &'static str = "$streams.consumer_info";
    type Reply = Result<crate::ConsumerInfo, WireError>;
}

/// Deletes a consumer and its state.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DeleteConsumer {
    pub(crate) consumer: String,
}

impl Command for DeleteConsumer {
    const NAME: &'static str = "$streams.consumer_delete";
    type Reply = Result<bool, WireError>;
}

/// Moves a consumer's cursor: every record from there on is delivered again.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ResetConsumer {
    pub(crate) consumer: String,
    pub(crate) to: From,
}

impl Command for ResetConsumer {
    const NAME: &'static str = "$streams.consumer_reset";
    type Reply = Result<crate::ConsumerInfo, WireError>;
}

/// An error as it crosses the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WireError {
    pub(crate) code: String,
    pub(crate) stream: String,
    #[serde(default)]
    pub(crate) offset: u64,
    #[serde(default)]
    pub(crate) earliest: u64,
    #[serde(default)]
    pub(crate) message: String,
}

impl WireError {
    /// The host of `stream` is not serving (it is shutting down): a client sees
    /// [`NoHandler`](meshbus_core::ErrorKind::NoHandler), as when no host is there.
    pub(crate) fn unavailable(stream: &str) -> Self {
        WireError {
            code: "unavailable".to_owned(),
            stream: stream.to_owned(),
            offset: 0,
            earliest: 0,
            message: format!("the host of `{stream}` is shutting down"),
        }
    }

    pub(crate) fn of(e: &Error, stream: &str) -> Self {
        let (code, offset, earliest) = match e {
            Error::Io { .. } => ("io", 0, 0),
            Error::Corrupt { offset, .. } => ("corrupt", *offset, 0),
            Error::OffsetGone {
                requested,
                earliest,
                ..
            } => ("offset_gone", *requested, *earliest),
            Error::DiskFull { .. } => ("disk_full", 0, 0),
            Error::TooLarge { size, max } => ("too_large", *size, *max),
            Error::Failed { .. } => ("failed", 0, 0),
            Error::Closed => ("closed", 0, 0),
            _ => ("invalid", 0, 0),
        };
        WireError {
            code: code.to_owned(),
            stream: stream.to_owned(),
            offset,
            earliest,
            message: e.to_string(),
        }
    }

    pub(crate) fn into_error(self) -> Error {
        let WireError {
            code,
            stream,
            offset,
            earliest,
            message,
        } = self;
        match code.as_str() {
            "corrupt" => Error::Corrupt { stream, offset },
            "offset_gone" => Error::OffsetGone {
                stream,
                requested: offset,
                earliest,
            },
            "disk_full" => Error::DiskFull { stream },
            "too_large" => Error::TooLarge {
                size: offset,
                max: earliest,
            },
            "failed" => Error::Failed { stream },
            "closed" => Error::Closed,
            "unavailable" => Error::Bus(
                meshbus_core::Error::new(meshbus_core::ErrorKind::NoHandler).with_detail(message),
            ),
            "io" => Error::Io {
                stream,
                kind: std::io::ErrorKind::Other,
                source: std::io::Error::other(message),
            },
            _ => Error::Invalid {
                stream,
                reason: message,
            },
        }
    }
}

/// The log record that stores `entry`, stamped `timestamp`.
pub(crate) fn to_record(entry: Entry, timestamp: u64) -> NewRecord {
    let mut headers = Vec::with_capacity(entry.headers.len() + 2);
    headers.push((EVENT_HEADER.to_owned(), bytes::Bytes::from(entry.event)));
    if let Some(key) = entry.key {
        headers.push((KEY_HEADER.to_owned(), bytes::Bytes::from(key)));
    }
    headers.extend(entry.headers.into_iter().map(|(k, v)| (k, v.into_bytes())));
    let mut body = entry.body.into_bytes();
    if body.len() > COMPRESS_ABOVE {
        if let Ok(size) = u32::try_from(body.len()) {
            let packed = lz4_flex::block::compress(&body);
            if packed.len() < body.len() {
                headers.push((LZ4_HEADER.to_owned(), bytes::Bytes::from(size.to_string())));
                body = bytes::Bytes::from(packed);
            }
        }
    }
    NewRecord {
        timestamp,
        headers,
        body,
    }
}

/// A stored record's event name, idempotency key and user headers.
pub(crate) struct Parts {
    pub(crate) event: String,
    pub(crate) key: Option<String>,
    pub(crate) headers: Vec<(String, Binary)>,
    /// The decompressed size of a compressed body, 0 for a plain one.
    pub(crate) lz4: u32,
}

/// Splits a stored record's headers into its event name, key and the user's headers.
pub(crate) fn parts(record: &Record) -> Parts {
    let mut parts = Parts {
        event: String::new(),
        key: None,
        headers: Vec::new(),
        lz4: 0,
    };
    for (k, v) in &record.headers {
        match k.as_str() {
            EVENT_HEADER => parts.event = String::from_utf8_lossy(v).into_owned(),
            KEY_HEADER => parts.key = Some(String::from_utf8_lossy(v).into_owned()),
            // An unreadable size reads as the largest, which `unpack` refuses as corrupt.
            LZ4_HEADER => {
                parts.lz4 = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(u32::MAX);
            }
            _ => parts.headers.push((k.clone(), Binary::from(v.clone()))),
        }
    }
    parts
}

/// A stored record as a reader gets it.
pub(crate) fn to_wire(record: Record) -> WireRecord {
    let Parts {
        event,
        headers,
        lz4,
        ..
    } = parts(&record);
    WireRecord {
        offset: record.offset,
        timestamp: record.timestamp,
        event,
        headers,
        body: Binary::from(record.body),
        lz4,
    }
}
