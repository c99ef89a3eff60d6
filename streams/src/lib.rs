//! Durable streams for meshbus: a node hosts a stream in a segmented, append-only log on its
//! own disk; every node appends to it with confirmation, replays and follows it, and consumes
//! it durably. The facade re-exports this crate as `meshbus::streams` (feature `streams`).
//!
//! ```
//! use futures_util::StreamExt;
//! use meshbus_core::{Bus, Event, HandlerError};
//! use meshbus_streams::{ConsumerConfig, From, StreamConfig, StreamsBuilderExt, StreamsExt};
//!
//! #[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
//! struct OrderPlaced { order: u32 }
//! impl Event for OrderPlaced { const NAME: &'static str = "shop.order_placed"; }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let (tx, mut billed) = tokio::sync::mpsc::unbounded_channel();
//! let bus = Bus::builder()
//!     // This node hosts `orders`, capturing every `OrderPlaced` published in its scope.
//!     .stream(StreamConfig::new("orders").event::<OrderPlaced>().dir(dir.path()))
//!     // ... and runs a member of the durable consumer `billing`: `Ok` acks.
//!     .stream_handler("orders", "billing", ConsumerConfig::new(), move |o: OrderPlaced, _ctx| {
//!         let _ = tx.send(o.order);
//!         async { Ok::<_, HandlerError>(()) }
//!     })
//!     .start()
//!     .await?;
//!
//! // Confirmed: resolves once the host has it, with its offset.
//! assert_eq!(bus.streams().append("orders", OrderPlaced { order: 1 }).key("o-1").await?, 0);
//! let confirmed = bus.streams().publish(OrderPlaced { order: 2 }).await?;
//! assert_eq!(confirmed[0].offset, 1);
//!
//! // Replay from the start, then follow the tail.
//! let mut reader = bus.streams().read::<OrderPlaced>("orders").from(From::Start);
//! assert_eq!(reader.next().await.unwrap()?.value, OrderPlaced { order: 1 });
//!
//! // Each order was handled once by the consumer's member (and acked once it returned).
//! assert_eq!(billed.recv().await, Some(1));
//! assert_eq!(billed.recv().await, Some(2));
//! bus.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! The rest of these docs are about the log itself ([`Log`]), which a host keeps for each
//! stream, and which can be used on its own:
//!
//! ```
//! use meshbus_streams::{FsyncPolicy, Log, LogConfig, NewRecord};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let config = LogConfig::new("orders").fsync(FsyncPolicy::Always);
//! let log = Log::open(dir.path(), config).await?;
//!
//! // One append call is one batch; the records get dense offsets from 0.
//! let appended = log
//!     .append(vec![
//!         NewRecord::new(1_700_000_000_000, "first").header("kind", "OrderPlaced"),
//!         NewRecord::new(1_700_000_000_500, "second"),
//!     ])
//!     .await?;
//! assert_eq!(appended.offsets(), 0..2);
//!
//! let records = log.read(1, 100).await?;
//! assert_eq!(&records[0].body[..], b"second");
//! assert_eq!(log.offset_at_time(1_700_000_000_100).await?, Some(1));
//!
//! // Purging removes the records below an offset; offsets are never reused.
//! let purged = log.purge(Some(1)).await?;
//! assert_eq!((purged.removed, purged.first_offset), (1, 1));
//! assert!(log.read(0, 10).await.is_err());
//! assert_eq!(log.append(vec![NewRecord::new(1_700_000_001_000, "third")]).await?.first, 2);
//! log.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Guarantees
//!
//! - **Offsets** are dense: the records of a log are numbered 0, 1, 2, ... with no gap, also
//!   across a crash, a recovery or a failed append (a failed append takes no offset).
//! - **Acknowledgement.** An append resolves once its records are written under the log's
//!   [`FsyncPolicy`]:
//!   - [`Always`](FsyncPolicy::Always): after an fsync that covers them. Concurrent appends
//!     are written as one batch and share one fsync (group commit). Every acknowledged
//!     record survives a power cut. Readers see records only once they are fsynced.
//!   - [`Interval(d)`](FsyncPolicy::Interval) (the default, 100 ms): once written to the OS; an
//!     fsync follows within `d`. A power cut loses at most what was appended since the last
//!     fsync, and only ever a *suffix*: what survives is a prefix of the log, with no hole and
//!     no garbage. [`Log::sync`] forces an fsync.
//!   - [`Never`](FsyncPolicy::Never): as `Interval`, without the periodic fsync.
//!
//!   Whatever the policy, a segment is fsynced when it is sealed, so a power cut can only
//!   shorten the active (newest) segment. Under `Interval` and `Never` readers see records
//!   once they are written, so a reader may have seen a record that a power cut then removes.
//! - **Atomic appends.** The records of one append call always share one batch (one
//!   checksum), so after a crash an append is there whole or not at all.
//! - **Recovery** on open scans the active segment and every segment whose index is missing
//!   or stale. The active segment is cut at the first batch with an impossible length, a
//!   wrong checksum or an unexpected base offset; every batch before it is kept and the next
//!   append continues at the next offset. Damage in a *sealed* segment is not cut (that would
//!   leave a hole): reading into it returns [`Error::Corrupt`] naming the stream and the first
//!   offset that cannot be read, and everything else stays readable.
//! - **Retention** ([`Retention`]: by record age, total bytes, record count) deletes whole
//!   sealed segments, oldest first, never the active one. It runs whenever a segment is
//!   sealed and on [`Log::apply_retention`]. A read below the first offset returns
//!   [`Error::OffsetGone`] naming the earliest offset. With `max_bytes`, the segment files stay
//!   within the limit plus the active segment. `max_records` counts the records at or above
//!   the first offset only.
//! - **Purge** ([`Log::purge`]): everything, or every record below an offset. The purge is
//!   ordered with appends (it goes through the writer). It sets the log's *floor*: the first
//!   offset is then the floor or the first segment's base, whichever is higher (retention may
//!   pass the floor). Reads below it return [`Error::OffsetGone`], the time search and
//!   [`Log::info`] ignore the records below it, and the next append still gets the next
//!   offset: offsets are never reused, also after purging everything (which seals a non-empty
//!   active segment and starts an empty one at the next offset). Whole segments below the
//!   floor are deleted; the one that holds it stays on disk until retention or a later purge
//!   deletes it. Crash safety: the purge fsyncs what was appended, makes the floor durable
//!   (a floor file, below), and only then deletes segments, oldest first. A crash at any point
//!   leaves the purge done or not done (open finishes deleting the segments of a durable
//!   floor), never loses a record at or above the floor and never makes one below it readable.
//! - **Delete** ([`Log::delete`]) closes the log and removes its files, then its directory if
//!   nothing else is in it; every clone of the handle gets [`Error::Closed`], reads included. It
//!   first makes a floor at the next offset durable, then removes segments oldest first and
//!   floor files last: a crash half way leaves the whole log, or an empty one that goes on at
//!   the next offset, or nothing.
//! - **Disk full**: the append fails with [`Error::DiskFull`], the partial write is cut back,
//!   earlier records are untouched and appends work again once there is room. A failed
//!   *fsync* is different: what reached the disk is then unknown, so the log refuses further
//!   appends ([`Error::Failed`]) until it is opened again.
//!
//! # Threads and memory
//!
//! Each log has one writer thread fed by a bounded queue ([`LogConfig::queue`]): it drains
//! everything queued, writes it as few batches as [`LogConfig::max_batch_bytes`] allows, fsyncs
//! once if the policy asks, then answers every append. A dedicated thread rather than
//! `spawn_blocking` per append because the writer is the one place that orders appends, groups
//! them and owns the periodic fsync; no runtime thread ever waits for the disk. Reads run on
//! tokio's blocking pool, take a snapshot of the segment list under a short lock and read the
//! files without it, so readers and the writer do not wait for each other. Decoded batches go
//! through a bounded LRU cache ([`LogConfig::cache_bytes`]); nothing holds a whole stream in
//! memory.
//!
//! All file access goes through the [`Storage`] trait: [`FsStorage`] on `std::fs`, and
//! [`FaultStorage`] in memory for tests, which can cut the power (lose what was not synced),
//! fill the disk and flip bytes.
//!
//! # On-disk format (version 1)
//!
//! A stream is a directory of segment files. Every integer is **little-endian**; timestamps
//! are milliseconds since the Unix epoch (`u64`), given by the appender.
//!
//! **Segment files** are named by their base offset, 20 decimal digits:
//! `00000000000000000000.log`, `00000000000000004096.log`, ... Each starts with a 16-byte
//! header and continues with batches, back to back:
//!
//! | bytes | field |
//! |---|---|
//! | 6 | magic `MBSLOG` |
//! | 2 | format version, `1` |
//! | 8 | base offset (must match the name) |
//!
//! **A batch** (one append, or several concurrent ones):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | `length`: bytes of the batch after this field (at least 32) |
//! | 4 | `crc`: CRC-32C (Castagnoli) of every byte after this field |
//! | 8 | base offset: the offset of its first record |
//! | 4 | record count (at least 1) |
//! | 8 | timestamp of the first record |
//! | 8 | largest timestamp in the batch |
//! | ... | records, `count` of them |
//!
//! **A record**:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | timestamp |
//! | 2 | number of headers `n` |
//! | n × (2 + k + 4 + v) | each header: key length `k`, key (UTF-8), value length `v`, value |
//! | 4 | body length `b` |
//! | b | body, exactly as appended |
//!
//! A record's offset is its batch's base offset plus its position in the batch. A batch
//! whose records do not fill its length exactly is damaged.
//!
//! **Index files** (`<base>.index`, next to the segment): one file holds both the sparse
//! offset index and the time index. An entry is written for the first batch and then for a
//! batch at least [`LogConfig::index_interval`] bytes (default 4 KiB) after the previous entry.
//!
//! | bytes | field |
//! |---|---|
//! | 6 + 2 + 8 | magic `MBSIDX`, version `1`, base offset |
//! | 4 | number of entries |
//! | 24 each | batch base offset (u64), position in the segment (u64), largest timestamp of every record before that batch (u64) |
//! | 8 + 8 + 8 | largest timestamp of the segment, segment length covered, next offset |
//! | 4 | CRC-32C of everything before |
//!
//! An offset is found by binary search for the last entry at or before it, then a scan of at
//! most one interval. A time `t` is found in the first segment whose largest timestamp is at
//! least `t`, from the last entry whose "largest timestamp before" is below `t` (that column
//! never decreases, so no earlier record can qualify): the answer is the first record *in
//! offset order* whose timestamp is at least `t`, even when timestamps are not monotonic.
//!
//! Indexes are **persisted only for sealed segments**, once, when the segment is sealed
//! (after its fsync); a sealed segment never changes, so its index never goes stale, and
//! opening a large log does not read every segment. The active segment's index lives in
//! memory and is rebuilt by the recovery scan that open does anyway. An index file that is
//! torn, fails its checksum or does not match its segment's length is ignored, rebuilt by
//! scanning, and written again.
//!
//! **Floor files** (`<floor>.purged`, 20 decimal digits like a segment) record a purge: no
//! offset below `floor` is readable. A purge creates the file (the directory is fsynced, so
//! the name is durable), writes it, fsyncs it, and only then deletes segments and older floor
//! files. On open, the log's floor is the highest floor whose file is whole; other floor
//! files (older ones, or a torn one from a purge that crashed before its fsync and so never
//! took effect) are removed, and so are the segments wholly below the floor. A log never
//! purged has no floor file (its floor is 0).
//!
//! | bytes | field |
//! |---|---|
//! | 6 | magic `MBSPRG` |
//! | 2 | format version, `1` |
//! | 8 | floor (must match the name) |
//! | 4 | CRC-32C of the 16 bytes before |

mod cache;
mod config;
mod consumer;
mod crc;
mod error;
mod format;
mod log;
mod metrics;
mod reader;
mod record;
mod recovery;
mod segment;
mod storage;
mod writer;

pub use client::{
    Append, Confirmation, ConfirmedPublish, Consumer, ConsumerBuilder, DeliveryContext, FromRecord,
    Message, PublishExt, RawRecord, Reader, StreamRecord, Streams, StreamsExt, DEFAULT_BATCH,
    DEFAULT_CONSUMER_BATCH, DEFAULT_WAIT,
};
pub use config::{FsyncPolicy, LogConfig, Retention};
pub use consumer::{ConsumerConfig, ConsumerInfo};
pub use error::{Error, Result};
pub use host::{StreamConfig, StreamsBuilderExt, DEFAULT_DEDUPE_KEYS, DEFAULT_DEDUPE_WINDOW};
pub use log::{Log, LogInfo, Purged};
pub use record::{Appended, NewRecord, Record};
pub use storage::{FaultStorage, FsStorage, Storage, StorageFile};
pub use wire::{dead_letter, dead_letter_stream, From, DEAD_LETTER_SUFFIX, MAX_STREAM_NAME};

mod client;
mod host;
mod info;
mod wire;

pub use info::{RetentionInfo, StreamInfo};
