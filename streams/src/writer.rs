//! The writer thread: one per log, owns the append path, batches what is queued, fsyncs.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::config::FsyncPolicy;
use crate::error::{Error, Result};
use crate::format::{self, BatchHeader, SEGMENT_HEADER};
use crate::log::{lock, Shared};
use crate::record::{Appended, NewRecord};
use crate::recovery::{create_segment, remove};
use crate::segment::{self, index_name, log_name};

mod purge;

/// Work for the writer.
#[derive(Debug)]
pub(crate) enum Request {
    Append {
        records: Vec<NewRecord>,
        size: u64,
        reply: oneshot::Sender<Result<Appended>>,
        _permit: OwnedSemaphorePermit,
    },
    Sync(oneshot::Sender<Result<()>>),
    Retention(oneshot::Sender<Result<()>>),
    Purge {
        up_to: Option<u64>,
        reply: oneshot::Sender<Result<crate::log::Purged>>,
    },
    Close(oneshot::Sender<Result<()>>),
    Delete(oneshot::Sender<Result<()>>),
}

/// Requests taken from the queue at once (one group, one fsync).
const MAX_GROUP: usize = 4096;

type Reply = oneshot::Sender<Result<Appended>>;

pub(crate) struct Writer {
    shared: Arc<Shared>,
    rx: Receiver<Request>,
    /// Position after the last batch written to the active segment (readers may lag).
    len: u64,
    /// Offset the next record gets.
    next: u64,
    /// Batches written but not yet visible to readers: (position, header).
    unpublished: Vec<(u64, BatchHeader)>,
    /// When the first unsynced write happened.
    dirty_since: Option<Instant>,
    failed: bool,
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn new(shared: Arc<Shared>, rx: Receiver<Request>) -> Self {
        let (len, next) = {
            let st = lock(&shared.state);
            st.segments
                .last()
                .map_or((SEGMENT_HEADER, 0), |s| (s.len, s.next_offset))
        };
        Self {
            shared,
            rx,
            len,
            next,
            unpublished: Vec::new(),
            dirty_since: None,
            failed: false,
            buf: Vec::new(),
        }
    }

    fn stream(&self) -> &str {
        &self.shared.config.name
    }

    pub(crate) fn run(mut self) {
        loop {
            // Before sleeping, give appenders one chance to queue more: a writer that sleeps
            // at once is woken (a futex syscall) for every append under load, and then writes
            // many small batches instead of a few large ones.
            let ready = match self.rx.try_recv() {
                Ok(r) => Some(r),
                Err(_) => {
                    std::thread::yield_now();
                    self.rx.try_recv().ok()
                }
            };
            let first = match (ready, self.shared.config.fsync, self.dirty_since) {
                (Some(r), _, _) => r,
                (None, FsyncPolicy::Interval(d), Some(since)) => {
                    let wait = d.saturating_sub(since.elapsed());
                    match self.rx.recv_timeout(wait) {
                        Ok(r) => r,
                        Err(RecvTimeoutError::Timeout) => {
                            let _ = self.sync();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                (None, _, _) => match self.rx.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                },
            };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match self.rx.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            // In queue order: consecutive appends form one group, any other request is done
            // between them (a purge must see exactly the appends queued before it).
            let mut appends = Vec::new();
            for r in group {
                match r {
                    Request::Append {
                        records,
                        size,
                        reply,
                        ..
                    } => appends.push((records, size, reply)),
                    other => {
                        if !appends.is_empty() {
                            self.append_group(std::mem::take(&mut appends));
                        }
                        if self.serve(other) {
                            return;
                        }
                    }
                }
            }
            if !appends.is_empty() {
                self.append_group(appends);
            }
            // Under a steady stream of appends the queue never times out: the interval is
            // also kept here.
            if let (FsyncPolicy::Interval(d), Some(since)) =
                (self.shared.config.fsync, self.dirty_since)
            {
                if since.elapsed() >= d {
                    let _ = self.sync();
                }
            }
        }
        let _ = self.finish();
    }

    /// Does one request other than an append; true if the writer must stop.
    fn serve(&mut self, request: Request) -> bool {
        match request {
            Request::Sync(reply) => {
                let _ = reply.send(self.sync());
            }
            Request::Retention(reply) => {
                self.retention();
                let _ = reply.send(Ok(()));
            }
            Request::Purge { up_to, reply } => {
                let _ = reply.send(self.purge(up_to));
            }
            Request::Close(reply) => {
                let _ = reply.send(self.finish());
                return true;
            }
            Request::Delete(reply) => {
                let _ = reply.send(self.delete());
                return true;
            }
            Request::Append { .. } => {}
        }
        false
    }

    /// The last sync before the writer stops (none under `Never`).
    fn finish(&mut self) -> Result<()> {
        if self.shared.config.fsync == FsyncPolicy::Never {
            self.publish();
            Ok(())
        } else {
            self.sync()
        }
    }

    /// Writes a group of appends as few batches, then fsyncs once if the policy says so.
    fn append_group(&mut self, appends: Vec<(Vec<NewRecord>, u64, Reply)>) {
        if self.failed {
            for (_, _, reply) in appends {
                let _ = reply.send(Err(Error::Failed {
                    stream: self.stream().to_owned(),
                }));
            }
            return;
        }
        let max = self.shared.config.max_batch_bytes;
        let mut done: Vec<(Reply, Appended)> = Vec::new();
        let mut rest = appends.into_iter().peekable();
        let mut error: Option<Error> = None;
        while rest.peek().is_some() {
            // One batch: as many whole appends as fit in max_batch_bytes.
            let mut batch = Vec::new();
            let mut size = format::BATCH_HEADER as u64;
            while let Some((_, s, _)) = rest.peek() {
                let s = s.saturating_sub(format::BATCH_HEADER as u64);
                if !batch.is_empty() && size + s > max {
                    break;
                }
                size += s;
                batch.extend(rest.next());
            }
            let count: u64 = batch.iter().map(|(r, _, _)| r.len() as u64).sum();
            if count == 0 {
                for (_, _, reply) in batch {
                    done.push((
                        reply,
                        Appended {
                            first: self.next,
                            count: 0,
                        },
                    ));
                }
                continue;
            }
            match self.write_batch(batch.iter().flat_map(|(r, _, _)| r.iter()), size) {
                Ok(()) => {
                    let mut first = self.next - count;
                    for (records, _, reply) in batch {
                        let n = records.len() as u64;
                        done.push((reply, Appended { first, count: n }));
                        first += n;
                    }
                }
                Err(e) => {
                    for (_, _, reply) in batch.into_iter().chain(rest.by_ref()) {
                        let _ = reply.send(Err(e.duplicate()));
                    }
                    error = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = &error {
            tracing::warn!(stream = self.stream(), error = %e, "append failed");
        }
        let synced = match self.shared.config.fsync {
            FsyncPolicy::Always if !done.is_empty() => self.sync(),
            _ => {
                self.publish();
                Ok(())
            }
        };
        for (reply, appended) in done {
            let _ = reply.send(match &synced {
                Ok(()) => Ok(appended),
                Err(e) => Err(e.duplicate()),
            });
        }
    }

    /// Appends one batch to the active segment (rolling first if due). On error the segment is
    /// cut back, so nothing of the batch stays.
    fn write_batch<'a>(
        &mut self,
        records: impl Iterator<Item = &'a crate::NewRecord> + Clone,
        size: u64,
    ) -> Result<()> {
        self.maybe_roll(size)?;
        self.buf.clear();
        format::encode_batch(&mut self.buf, self.next, records);
        let file = {
            let st = lock(&self.shared.state);
            st.segments.last().map(|s| s.file.clone())
        };
        let Some(file) = file else {
            return Err(Error::Closed);
        };
        if let Err(e) = file.append(&self.buf) {
            if let Err(t) = file.truncate(self.len) {
                tracing::error!(stream = self.stream(), error = %t, "could not cut a failed write back");
                self.failed = true;
            }
            return Err(Error::io(self.stream(), e));
        }
        let Some(h) = format::parse_batch_header(&self.buf) else {
            return Err(Error::Closed);
        };
        self.unpublished.push((self.len, h));
        self.len += h.frame_len();
        self.next = h.end();
        self.dirty_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Makes written batches visible to readers.
    fn publish(&mut self) {
        if self.unpublished.is_empty() {
            return;
        }
        let interval = self.shared.config.index_interval;
        let mut st = lock(&self.shared.state);
        if let Some(seg) = st.segments.last_mut() {
            for (pos, h) in self.unpublished.drain(..) {
                seg.note_batch(pos, &h, interval);
            }
        }
    }

    /// Fsyncs the active segment, then publishes. A failed fsync fails the log.
    fn sync(&mut self) -> Result<()> {
        if self.failed {
            return Err(Error::Failed {
                stream: self.stream().to_owned(),
            });
        }
        if self.dirty_since.is_some() {
            let file = lock(&self.shared.state)
                .segments
                .last()
                .map(|s| s.file.clone());
            if let Some(file) = file {
                if let Err(e) = file.sync() {
                    tracing::error!(stream = self.stream(), error = %e, "fsync failed; the log takes no more appends");
                    self.failed = true;
                    self.unpublished.clear();
                    return Err(Error::io(self.stream(), e));
                }
            }
            self.dirty_since = None;
        }
        self.publish();
        Ok(())
    }

    /// Seals the active segment and starts the next if it is full or old.
    fn maybe_roll(&mut self, size: u64) -> Result<()> {
        let cfg = &self.shared.config;
        let (empty, opened) = {
            let st = lock(&self.shared.state);
            match st.segments.last() {
                Some(s) => (self.len <= SEGMENT_HEADER, s.opened),
                None => (true, Instant::now()),
            }
        };
        let full = self.len + size > cfg.segment_bytes;
        let old = cfg.segment_age.is_some_and(|a| opened.elapsed() >= a);
        if empty || !(full || old) {
            return Ok(());
        }
        self.roll()?;
        self.retention();
        Ok(())
    }

    /// Seals the active segment and starts an empty one at the next offset.
    fn roll(&mut self) -> Result<()> {
        // Sealing: the old segment is fsynced whatever the policy, so only the active segment
        // can ever lose a tail, then its index is persisted.
        self.dirty_since.get_or_insert_with(Instant::now);
        self.sync()?;
        let sealed = lock(&self.shared.state).segments.last().cloned();
        if let Some(seg) = sealed {
            if let Err(e) = segment::save_index(&*self.shared.storage, &seg) {
                tracing::warn!(stream = self.stream(), error = %e, "could not save an index; it is rebuilt on open");
            }
        }
        let seg = create_segment(&*self.shared.storage, self.next)
            .map_err(|e| Error::io(self.stream(), e))?;
        self.len = seg.len;
        lock(&self.shared.state).segments.push(seg);
        Ok(())
    }

    /// Deletes the whole sealed segments that retention no longer keeps, oldest first.
    pub(crate) fn retention(&mut self) {
        let r = self.shared.config.retention;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let removed = {
            let mut st = lock(&self.shared.state);
            let mut bytes: u64 = st.segments.iter().map(|s| s.len).sum();
            let next = st.next_offset();
            let mut removed = Vec::new();
            while st.segments.len() > 1 {
                let Some(oldest) = st.segments.first() else {
                    break;
                };
                let aged = r
                    .max_age
                    .is_some_and(|a| oldest.max_ts.saturating_add(a.as_millis() as u64) < now_ms);
                let big = r.max_bytes.is_some_and(|m| bytes > m);
                // Records below the purge floor are gone already: they do not count.
                let records = next.saturating_sub(st.first_offset());
                let many = r.max_records.is_some_and(|m| records > m);
                if !(aged || big || many) {
                    break;
                }
                let seg = st.segments.remove(0);
                bytes -= seg.len;
                removed.push(seg.base);
            }
            removed
        };
        for base in removed {
            self.remove_segment(base);
            tracing::debug!(stream = self.stream(), base, "segment deleted by retention");
        }
    }

    /// Removes the files of a segment already taken out of the state.
    fn remove_segment(&self, base: u64) {
        for name in [log_name(base), index_name(base)] {
            remove(&*self.shared.storage, &name, self.stream());
        }
        lock(&self.shared.cache).drop_segment(base);
    }
}
