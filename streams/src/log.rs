//! The `Log` handle: opening, appending, reading, purging, deleting.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tokio::sync::{oneshot, Semaphore, TryAcquireError};

use crate::cache::Cache;
use crate::config::LogConfig;
use crate::error::{Error, Result};
use crate::format;
use crate::record::{Appended, NewRecord, Record};
use crate::recovery::{recover, Recovered};
use crate::segment::Segment;
use crate::storage::{FsStorage, Storage};
use crate::writer::{Request, Writer};

/// Locks a mutex, ignoring poison (no code panics while holding these locks; if one did, the
/// data is still consistent at every unlock point).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// State shared by the handle, the writer thread and readers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: LogConfig,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) state: Mutex<State>,
    pub(crate) cache: Mutex<Cache>,
    /// Set by [`Log::delete`]: reads fail with [`Error::Closed`] from then on.
    pub(crate) deleted: AtomicBool,
    /// The directory, when the log was opened on one (removed by [`Log::delete`] if empty).
    pub(crate) dir: Option<PathBuf>,
}

/// The segments, oldest first; the last is the active one. Never empty.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) segments: Vec<Segment>,
    /// The purge floor: offsets below it are gone even where their segment is still on disk.
    pub(crate) floor: u64,
}

impl State {
    /// The earliest readable offset: the floor or the first segment's base, whichever is
    /// higher (retention deletes whole segments and may pass the floor).
    pub(crate) fn first_offset(&self) -> u64 {
        let base = self.segments.first().map_or(0, |s| s.base);
        base.max(self.floor)
    }

    /// The offset the next record gets.
    pub(crate) fn next_offset(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.next_offset)
    }
}

/// What [`Log::purge`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Records removed by this purge (0 if the log held nothing below the requested offset).
    pub removed: u64,
    /// The earliest offset left: reads below it fail with [`Error::OffsetGone`].
    pub first_offset: u64,
}

/// What the log holds, as [`Log::info`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogInfo {
    /// The earliest offset still held (equal to `next_offset` when the log is empty).
    pub first_offset: u64,
    /// The offset the next record will get.
    pub next_offset: u64,
    /// Records held (those at or above `first_offset`).
    pub records: u64,
    /// Bytes of segment files readers can see (a segment that holds the purge floor counts
    /// whole).
    pub bytes: u64,
    /// Segment files.
    pub segments: usize,
}

/// A durable, segmented, append-only log in one directory. Cheap to clone.
///
/// Appends go to a dedicated writer thread through a bounded queue; reads run on tokio's
/// blocking pool. No method blocks the calling runtime thread.
#[derive(Debug, Clone)]
pub struct Log {
    inner: Arc<Handle>,
}

#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Request>,
    permits: Arc<Semaphore>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn closed<T>(_: T) -> Error {
    Error::Closed
}

impl Log {
    /// Opens (or creates) the log in directory `dir`, recovering it if it was not closed cleanly.
    ///
    /// # Errors
    /// An I/O error, or [`Error::Corrupt`] if the active segment's header is unreadable.
    pub async fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log> {
        let dir = dir.as_ref().to_path_buf();
        let name = config.name.clone();
        let path = dir.clone();
        let storage = tokio::task::spawn_blocking(move || FsStorage::new(path))
            .await
            .map_err(closed)?
            .map_err(|e| Error::io(&name, e))?;
        Self::open_in(Arc::new(storage), config, Some(dir)).await
    }

    /// Opens (or creates) the log kept in `storage`, e.g. a [`FaultStorage`](crate::FaultStorage).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub async fn open_with(storage: Arc<dyn Storage>, config: LogConfig) -> Result<Log> {
        Self::open_in(storage, config, None).await
    }

    async fn open_in(
        storage: Arc<dyn Storage>,
        config: LogConfig,
        dir: Option<PathBuf>,
    ) -> Result<Log> {
        tokio::task::spawn_blocking(move || Self::open_blocking(storage, config, dir))
            .await
            .map_err(closed)?
    }

    fn open_blocking(
        storage: Arc<dyn Storage>,
        config: LogConfig,
        dir: Option<PathBuf>,
    ) -> Result<Log> {
        let Recovered { segments, floor } = recover(&*storage, &config)?;
        let cache = Mutex::new(Cache::new(config.cache_bytes));
        let permits = Arc::new(Semaphore::new(config.queue));
        let shared = Arc::new(Shared {
            config,
            storage,
            state: Mutex::new(State { segments, floor }),
            cache,
            deleted: AtomicBool::new(false),
            dir,
        });
        let (tx, rx) = mpsc::channel();
        let writer = Writer::new(shared.clone(), rx);
        let thread = std::thread::Builder::new()
            .name(format!("meshbus-log-{}", shared.config.name))
            .spawn(move || writer.run())
            .map_err(|e| Error::io(&shared.config.name, e))?;
        Ok(Log {
            inner: Arc::new(Handle {
                shared,
                tx,
                permits,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Appends `records` as one batch; resolves with their offsets once they are written under
    /// the fsync policy (with [`FsyncPolicy::Always`](crate::FsyncPolicy::Always), once an fsync
    /// covering them is done).
    ///
    /// The append is queued when this method is called, if the queue has room, so appends
    /// made one after another from one task keep their order even if their futures are
    /// awaited later or together. Concurrent appends may share a batch and an fsync.
    ///
    /// # Errors
    /// [`Error::TooLarge`] (nothing queued), [`Error::DiskFull`] or [`Error::Io`] (nothing of
    /// this append is kept), [`Error::Failed`] after an fsync error, [`Error::Closed`].
    ///
    /// # Cancel safety
    /// Dropping the future does not withdraw a queued append: it may still be written.
    pub fn append(
        &self,
        records: Vec<NewRecord>,
    ) -> impl Future<Output = Result<Appended>> + Send + 'static {
        let queued = self.enqueue(records);
        async move {
            let rx = match queued {
                Err(e) => return Err(e),
                Ok(Ok(rx)) => rx,
                Ok(Err((permits, tx, records, size))) => {
                    let permit = permits.acquire_owned().await.map_err(closed)?;
                    let (reply, rx) = oneshot::channel();
                    tx.send(Request::Append {
                        records,
                        size,
                        reply,
                        _permit: permit,
                    })
                    .map_err(closed)?;
                    rx
                }
            };
            rx.await.map_err(closed)?
        }
    }

    #[allow(clippy::type_complexity)]
    fn enqueue(
        &self,
        records: Vec<NewRecord>,
    ) -> Result<
        std::result::Result<
            oneshot::Receiver<Result<Appended>>,
            (Arc<Semaphore>, mpsc::Sender<Request>, Vec<NewRecord>, u64),
        >,
    > {
        let max = self.inner.shared.config.max_batch_bytes;
        for r in &records {
            let too_long = r
                .headers
                .iter()
                .find(|(k, _)| k.len() > usize::from(u16::MAX));
            if let Some((k, _)) = too_long {
                return Err(Error::TooLarge {
                    size: k.len() as u64,
                    max: u64::from(u16::MAX),
                });
            }
            if r.headers.len() > usize::from(u16::MAX) {
                return Err(Error::TooLarge {
                    size: r.headers.len() as u64,
                    max: u64::from(u16::MAX),
                });
            }
        }
        let size = format::batch_size(&records) as u64;
        if size > max || records.len() > u32::MAX as usize {
            return Err(Error::TooLarge { size, max });
        }
        let h = &self.inner;
        match h.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let (reply, rx) = oneshot::channel();
                h.tx.send(Request::Append {
                    records,
                    size,
                    reply,
                    _permit: permit,
                })
                .map_err(closed)?;
                Ok(Ok(rx))
            }
            Err(TryAcquireError::NoPermits) => {
                Ok(Err((h.permits.clone(), h.tx.clone(), records, size)))
            }
            Err(TryAcquireError::Closed) => Err(Error::Closed),
        }
    }

    /// Up to `max_records` records from offset `from`, in offset order; empty at the tail.
    ///
    /// # Errors
    /// [`Error::OffsetGone`] below the first offset (deleted by retention or a purge),
    /// [`Error::Corrupt`] naming the offset that could not be read, [`Error::Io`],
    /// [`Error::Closed`] once the log was [deleted](Self::delete).
    pub async fn read(&self, from: u64, max_records: usize) -> Result<Vec<Record>> {
        let shared = self.inner.shared.clone();
        tokio::task::spawn_blocking(move || shared.read_above_floor(from, max_records, usize::MAX))
            .await
            .map_err(closed)?
    }

    /// Like [`read`](Self::read), stopping at the first record that brings the bodies' total to
    /// `max_bytes` or beyond (at least one record is returned if there is one).
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub async fn read_bytes(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>> {
        let shared = self.inner.shared.clone();
        tokio::task::spawn_blocking(move || shared.read_above_floor(from, max_records, max_bytes))
            .await
            .map_err(closed)?
    }

    /// The offset of the first record (in offset order) whose timestamp is at or after `ts`
    /// (milliseconds since the Unix epoch); `None` if there is none yet. Only records at or
    /// after the first offset count: a purged or retained record is never the answer.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub async fn offset_at_time(&self, ts: u64) -> Result<Option<u64>> {
        let shared = self.inner.shared.clone();
        tokio::task::spawn_blocking(move || shared.offset_at_time_above_floor(ts))
            .await
            .map_err(closed)?
    }

    /// Up to `max_records` records from the first whose timestamp is at or after `ts`.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub async fn read_from_time(&self, ts: u64, max_records: usize) -> Result<Vec<Record>> {
        match self.offset_at_time(ts).await? {
            Some(offset) => self.read(offset, max_records).await,
            None => Ok(Vec::new()),
        }
    }

    /// What the log holds now.
    pub fn info(&self) -> LogInfo {
        let st = lock(&self.inner.shared.state);
        let next_offset = st.next_offset();
        let first_offset = st.first_offset().min(next_offset);
        LogInfo {
            first_offset,
            next_offset,
            records: next_offset - first_offset,
            bytes: st.segments.iter().map(|s| s.len).sum(),
            segments: st.segments.len(),
        }
    }

    /// Fsyncs what was appended so far (whatever the policy).
    ///
    /// # Errors
    /// An I/O error; [`Error::Closed`].
    pub async fn sync(&self) -> Result<()> {
        self.request(Request::Sync).await
    }

    /// Applies retention now (it also runs whenever a segment is sealed).
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub async fn apply_retention(&self) -> Result<()> {
        self.request(Request::Retention).await
    }

    /// Stops the writer after what is queued, with a last fsync (none under `Never`), and
    /// waits for its thread. Other clones of this handle can still read.
    ///
    /// # Errors
    /// The last fsync's error; [`Error::Closed`] if already closed.
    pub async fn close(self) -> Result<()> {
        let result = self.request(Request::Close).await;
        let thread = lock(&self.inner.thread).take();
        if let Some(t) = thread {
            // The thread has answered Close and is returning; joining is brief.
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        result
    }

    /// Removes every record below `up_to` (clamped to the next offset), or every record with
    /// `None`. Offsets are never reused: the next append still gets the next offset.
    ///
    /// The purge goes through the writer, so it is ordered with appends: like
    /// [`append`](Self::append), it is queued when this method is called, and appends queued
    /// before it are purged with `None`. What was appended is fsynced first (whatever the
    /// policy). Whole segments below the new first offset are deleted; a segment that holds
    /// it stays on disk, and a small floor file (see the crate docs) makes the first offset
    /// durable before any segment is deleted, so that after a crash at any point, reads
    /// below it stay gone and no record at or above it is lost. Purging everything seals a
    /// non-empty active segment and starts an empty one at the next offset.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::DiskFull`] if the floor could not be made durable (nothing
    /// was purged), [`Error::Failed`] after an fsync error, [`Error::Closed`].
    ///
    /// # Cancel safety
    /// Dropping the future does not withdraw the purge: it may still happen.
    pub fn purge(
        &self,
        up_to: Option<u64>,
    ) -> impl Future<Output = Result<Purged>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let sent = self.inner.tx.send(Request::Purge { up_to, reply });
        async move {
            sent.map_err(closed)?;
            rx.await.map_err(closed)?
        }
    }

    /// Closes the log and removes its files: segments, indexes and floor files, oldest segment
    /// first (a crash half way leaves a log holding a suffix, never a purged record), then the
    /// directory if [`open`](Self::open) was given one and nothing else is left in it. Appends
    /// queued before the call are written first (and deleted). Every clone of this handle
    /// gets [`Error::Closed`] from then on, for reads too.
    ///
    /// # Errors
    /// The first error removing a file (the others are still removed); [`Error::Closed`] if
    /// the log was already closed or deleted.
    pub async fn delete(self) -> Result<()> {
        let result = self.request(Request::Delete).await;
        let thread = lock(&self.inner.thread).take();
        if let Some(t) = thread {
            // The thread has answered Delete and is returning; joining is brief.
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        result
    }

    async fn request(&self, make: fn(oneshot::Sender<Result<()>>) -> Request) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.inner.tx.send(make(reply)).map_err(closed)?;
        rx.await.map_err(closed)?
    }
}

/// Records a time search reads at once when it must skip records below the floor.
const SCAN_CHUNK: usize = 256;

impl Shared {
    fn check_open(&self) -> Result<()> {
        if self.deleted.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// [`read`](Shared::read), refusing offsets below the first offset (the purge floor
    /// included, which may lie inside a segment).
    pub(crate) fn read_above_floor(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>> {
        self.check_open()?;
        let earliest = lock(&self.state).first_offset();
        if from < earliest {
            return Err(Error::OffsetGone {
                stream: self.config.name.clone(),
                requested: from,
                earliest,
            });
        }
        match self.read(from, max_records, max_bytes) {
            Err(Error::OffsetGone {
                stream,
                requested,
                earliest,
            }) => Err(Error::OffsetGone {
                stream,
                requested,
                // Retention or a purge went past `from` meanwhile; name what is left now.
                earliest: earliest.max(lock(&self.state).first_offset()),
            }),
            other => other,
        }
    }

    /// [`offset_at_time`](Shared::offset_at_time), where records below the floor do not count.
    pub(crate) fn offset_at_time_above_floor(&self, ts: u64) -> Result<Option<u64>> {
        self.check_open()?;
        let floor = lock(&self.state).floor;
        match self.offset_at_time(ts)? {
            Some(o) if o < floor => self.offset_at_time_from(ts, floor),
            found => Ok(found),
        }
    }

    /// The first record at or after offset `from` whose timestamp is at least `ts`. Reads only
    /// the segments that can hold one, each from its time index entry or `from`.
    fn offset_at_time_from(&self, ts: u64, from: u64) -> Result<Option<u64>> {
        let spans: Vec<(u64, u64)> = lock(&self.state)
            .segments
            .iter()
            .filter(|s| s.next_offset > from && s.records() > 0 && s.max_ts >= ts)
            .map(|s| (s.seek_time(ts).1.max(from), s.next_offset))
            .collect();
        for (start, end) in spans {
            let mut at = start;
            while at < end {
                let got = self.read_above_floor(at, SCAN_CHUNK, usize::MAX)?;
                let Some(last) = got.last() else { break };
                let hit = got
                    .iter()
                    .take_while(|r| r.offset < end)
                    .find(|r| r.timestamp >= ts);
                if let Some(r) = hit {
                    return Ok(Some(r.offset));
                }
                at = last.offset + 1;
            }
        }
        Ok(None)
    }
}
