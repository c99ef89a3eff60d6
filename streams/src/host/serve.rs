//! A stream's host at work: its log, the appends it takes (captured and confirmed), the
//! fetches it answers, waiting for the tail.

use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshbus_core::wire::body::encode_body;
use meshbus_core::{Context, Error as BusError, ErrorKind};
use tokio::sync::{watch, Semaphore};

mod consumer_ops;
mod finish;

use finish::Finish;

use super::dedupe::{Dedupe, Seen};
use super::{fsync_name, retention_info, StreamConfig};
use crate::error::Error;
use crate::log::Log;
use crate::wire::{self, Entry, Fetched, From, WireError};
use crate::StreamInfo;

/// The most entries one append may carry.
pub(crate) const MAX_APPEND_ENTRIES: usize = 10_000;
/// The most records one fetch returns.
pub(crate) const MAX_FETCH_RECORDS: u32 = 10_000;
/// The most body bytes one fetch returns (at least one record is returned whatever its size).
pub(crate) const MAX_FETCH_BYTES: u32 = 4 << 20;
/// The longest a fetch waits for a record.
pub(crate) const MAX_FETCH_WAIT: Duration = Duration::from_secs(60);
/// The longest idempotency key (the host remembers up to `dedupe_keys` of them).
const MAX_KEY: usize = 256;
/// The most records one fetch looks at when its filter passes them over.
const MAX_FETCH_SCAN: usize = 100_000;
/// The longest event name or header key an entry may carry.
const MAX_NAME: usize = 1024;
/// How many captured events may be appending at once; more wait.
const CAPTURES_IN_FLIGHT: usize = 512;
/// How often age-based retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// A stream this node hosts.
pub(crate) struct Host {
    pub(crate) name: String,
    /// Replaced when the stream is deleted.
    log: std::sync::Mutex<Log>,
    /// Bumped when the stream is deleted: an append of the old log does not move the tail.
    generation: Arc<std::sync::atomic::AtomicU64>,
    /// Where the log lives, to open it again after a delete.
    place: Place,
    /// Orders purges and deletes.
    admin: tokio::sync::Mutex<()>,
    config: crate::config::LogConfig,
    dedupe: Dedupe,
    /// The next offset readers may read: moved after each append resolves.
    tail: watch::Sender<u64>,
    captures: Arc<Semaphore>,
    pub(crate) rival: super::rival::Rival,
    /// The stream whose host serves this one: itself, or the stream a dead-letter stream
    /// belongs to (one host serves both, or neither).
    pub(crate) owner: String,
    /// Its durable consumers (none on a dead-letter stream).
    pub(super) consumers: Option<super::consumers::Consumers>,
    /// Its series, registered when it first learns its node (its first command or capture).
    pub(super) metrics: Arc<std::sync::OnceLock<crate::metrics::StreamMetrics>>,
}

/// Where a stream's files are.
enum Place {
    Dir(std::path::PathBuf),
    Storage(Arc<dyn crate::storage::Storage>),
}

impl Place {
    async fn open(&self, config: &crate::config::LogConfig) -> Result<Log, Error> {
        match self {
            Place::Dir(dir) => Log::open(dir, config.clone()).await,
            Place::Storage(storage) => Log::open_with(Arc::clone(storage), config.clone()).await,
        }
    }
}

/// Ends a request's wait at the tail: its caller gave up, or the bus is shutting down.
pub(crate) struct Stop(pub(crate) Context);

impl Stop {
    /// Resolves when the wait should end.
    pub(crate) async fn wait(&self) {
        let closing = self.0.bus().closing();
        tokio::select! {
            () = self.0.cancelled() => {}
            () = closing => {}
        }
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn clip(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Where the handlers of a stream find its host: set when the bus starts, emptied when it
/// shuts down.
#[derive(Default)]
pub(crate) struct HostCell(RwLock<Option<Arc<Host>>>);

impl HostCell {
    pub(crate) fn set(&self, host: Arc<Host>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(host);
    }

    pub(crate) fn get(&self) -> Option<Arc<Host>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn take(&self) -> Option<Arc<Host>> {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// The host behind a handler (set when the bus started), unless it refuses to serve because
/// another node hosts the same stream.
pub(crate) fn admit(cell: &HostCell, ctx: &Context) -> Result<Arc<Host>, WireError> {
    let Some(host) = cell.get() else {
        return Err(WireError::unavailable("this stream"));
    };
    host.rival.check(&host.owner, ctx)?;
    host.learn_node(ctx);
    Ok(host)
}

/// Milliseconds since the Unix epoch, by this host's clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn config_error(e: impl std::fmt::Display) -> BusError {
    BusError::new(ErrorKind::Config).with_detail(e.to_string())
}

impl Host {
    /// Opens (and recovers) the stream's log and remembers the idempotency keys of its last
    /// `dedupe_window`.
    pub(crate) async fn open(config: StreamConfig) -> Result<Arc<Host>, BusError> {
        if config.name.ends_with(wire::DEAD_LETTER_SUFFIX) {
            return Err(config_error(format!(
                "stream `{}`: names ending in `{}` are those of dead-letter streams",
                config.name,
                wire::DEAD_LETTER_SUFFIX
            )));
        }
        let owner = config.name.clone();
        let dir = config.dir.clone().filter(|_| config.storage.is_none());
        let (dead, consumers_dir) = match &dir {
            Some(dir) => {
                let mut log = config.log.clone();
                log.name = wire::dead_letter_stream(&config.name);
                let dead = StreamConfig::new(log.name.clone())
                    .dir(dir.join("dead-letters"))
                    .log(log);
                let mut dead = Host::open_plain(dead, None).await?;
                dead.owner = owner;
                (Some(Arc::new(dead)), Some(dir.as_path()))
            }
            None => (None, None),
        };
        let mut host = Host::open_plain(config, None).await?;
        let consumers =
            super::consumers::Consumers::open(&host.name, consumers_dir, dead, &host.log())
                .await
                .map_err(|e| config_error(format!("stream `{}`: {e}", host.name)))?;
        host.consumers = Some(consumers);
        let host = Arc::new(host);
        if host.config.retention.max_age.is_some() {
            tokio::spawn(retain(Arc::downgrade(&host)));
        }
        Ok(host)
    }

    /// Opens a stream's log and what appends need, without consumers.
    async fn open_plain(
        config: StreamConfig,
        consumers: Option<super::consumers::Consumers>,
    ) -> Result<Host, BusError> {
        wire::check_stream_name(&config.name).map_err(config_error)?;
        let place = match (&config.storage, &config.dir) {
            (Some(storage), _) => Place::Storage(Arc::clone(storage)),
            (None, Some(dir)) => Place::Dir(dir.clone()),
            (None, None) => {
                return Err(config_error(format!(
                    "stream `{}`: no directory; give one with `StreamConfig::dir`",
                    config.name
                )))
            }
        };
        let log = place
            .open(&config.log)
            .await
            .map_err(|e| config_error(format!("stream `{}` did not open: {e}", config.name)))?;
        let dedupe = Dedupe::new(config.dedupe_window, config.dedupe_keys);
        dedupe
            .recover(&log, now_ms())
            .await
            .map_err(|e| config_error(format!("stream `{}`: {e}", config.name)))?;
        let (tail, _) = watch::channel(log.info().next_offset);
        tracing::info!(stream = %config.name, next = *tail.borrow(), "stream open");
        Ok(Host {
            owner: config.name.clone(),
            name: config.name,
            config: config.log,
            log: std::sync::Mutex::new(log),
            generation: Arc::default(),
            place,
            admin: tokio::sync::Mutex::new(()),
            dedupe,
            tail,
            captures: Arc::new(Semaphore::new(CAPTURES_IN_FLIGHT)),
            rival: super::rival::Rival::default(),
            consumers,
            metrics: Arc::default(),
        })
    }

    /// Registers the stream's series, once, for the node `ctx` runs on.
    pub(crate) fn learn_node(&self, ctx: &Context) {
        self.metrics
            .get_or_init(|| crate::metrics::StreamMetrics::new(ctx.bus(), &self.name));
    }

    /// Appends an event a subscriber captured, best effort: a failure is logged.
    pub(crate) async fn capture<E: serde::Serialize>(
        &self,
        event: &'static str,
        value: &E,
        ctx: &Context,
    ) {
        self.learn_node(ctx);
        let body = match encode_body(value) {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(stream = %self.name, event, error = %e, "a captured event did not encode");
                return;
            }
        };
        let key = ctx
            .headers()
            .get(meshbus_core::Headers::IDEMPOTENCY_KEY)
            .map(str::to_owned);
        let entry = Entry {
            event: event.to_owned(),
            key,
            headers: Vec::new(),
            body: body.into(),
        };
        let Ok(permit) = Arc::clone(&self.captures).acquire_owned().await else {
            return;
        };
        // Queued in order now; the write is awaited on its own so that the next event can
        // queue behind it.
        let append = self.append_entries(vec![entry]);
        let name = self.name.clone();
        tokio::spawn(async move {
            if let Err(e) = append.await {
                tracing::warn!(stream = %name, error = %e, "a captured event was not appended");
            }
            drop(permit);
        });
    }

    /// A client's confirmed append.
    pub(crate) async fn append(&self, cmd: wire::Append) -> Result<Vec<u64>, WireError> {
        self.check(&cmd.entries)
            .map_err(|e| WireError::of(&e, &self.name))?;
        self.append_entries(cmd.entries)
            .await
            .map_err(|e| WireError::of(&e, &self.name))
    }

    /// A confirmed publish of `event`: appended like a confirmed append.
    pub(crate) async fn append_captured(
        &self,
        event: &str,
        cmd: wire::Capture,
    ) -> Result<(String, u64), WireError> {
        if cmd.entry.event != event {
            let e = Error::Invalid {
                stream: self.name.clone(),
                reason: format!("a capture of `{event}` carried `{}`", cmd.entry.event),
            };
            return Err(WireError::of(&e, &self.name));
        }
        let offsets = self
            .append(wire::Append {
                entries: vec![cmd.entry],
            })
            .await?;
        Ok((
            self.name.clone(),
            offsets.first().copied().unwrap_or(u64::MAX),
        ))
    }

    fn check(&self, entries: &[Entry]) -> Result<(), Error> {
        let invalid = |reason: String| Error::Invalid {
            stream: self.name.clone(),
            reason,
        };
        if entries.len() > MAX_APPEND_ENTRIES {
            return Err(invalid(format!(
                "an append of {} entries: the most is {MAX_APPEND_ENTRIES}",
                entries.len()
            )));
        }
        for e in entries {
            let long = e.event.len() > MAX_NAME
                || e.key.as_ref().is_some_and(|k| k.len() > MAX_KEY)
                || e.headers.iter().any(|(k, _)| k.len() > MAX_NAME);
            if e.event.is_empty() || long {
                return Err(invalid(
                    "an event name is empty, a name or header key is over 1024 bytes, or a key over 256"
                        .to_owned(),
                ));
            }
            if e.headers.iter().any(|(k, _)| k.starts_with('$')) {
                return Err(invalid(
                    "header keys starting with `$` are the stream's".to_owned(),
                ));
            }
        }
        Ok(())
    }

    /// Appends `entries`, giving a repeated idempotency key its first offset. Queues the new
    /// records in the log before it returns (so appends keep the order they were called in),
    /// then resolves once the log has them under its fsync policy.
    pub(crate) fn append_entries(
        &self,
        entries: Vec<Entry>,
    ) -> impl std::future::Future<Output = Result<Vec<u64>, Error>> + Send + 'static {
        let timestamp = now_ms();
        let mut offsets: Vec<Option<u64>> = vec![None; entries.len()];
        let mut waits = Vec::new();
        let mut claims = Vec::new();
        let mut fresh = Vec::with_capacity(entries.len());
        let mut fresh_at = Vec::with_capacity(entries.len());
        let mut fresh_bytes = 0u64;
        for (i, entry) in entries.into_iter().enumerate() {
            if let Some(key) = &entry.key {
                match self.dedupe.claim(key, timestamp) {
                    Seen::Done(offset) => {
                        offsets[i] = Some(offset);
                        continue;
                    }
                    Seen::Pending(rx) => {
                        waits.push((i, rx));
                        continue;
                    }
                    Seen::New(claim) => claims.push((fresh.len(), claim)),
                }
            }
            fresh_at.push(i);
            fresh_bytes += entry.body.len() as u64;
            fresh.push(wire::to_record(entry, timestamp));
        }
        // Queued under the log's lock, so that a delete swapping the log orders with it.
        let queued = (!fresh.is_empty()).then(|| {
            let log = crate::log::lock(&self.log);
            let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
            (log.append(fresh), generation, log.clone())
        });
        let metrics = Arc::clone(&self.metrics);
        let tail = self.tail.clone();
        let current = Arc::clone(&self.generation);
        let stream = self.name.clone();
        // The write's outcome is settled even if the caller gives up (a timeout, a lost
        // peer): a written record whose key were forgotten, or whose offset readers at the
        // tail did not learn, would be a duplicate on retry or a stall at the tail. Awaited in
        // place; finished on a task of its own only if dropped first.
        let completion = queued.map(|(queued, generation, log)| {
            Finish(Some(Box::pin(async move {
                let appended = queued.await;
                let first = appended.as_ref().ok().map(|a| a.first);
                for (j, claim) in claims {
                    claim.settle(first.map(|f| f + j as u64));
                }
                let appended = appended?;
                if let Some(m) = metrics.get() {
                    m.appended(appended.count, fresh_bytes, &log.info());
                }
                if current.load(std::sync::atomic::Ordering::SeqCst) == generation {
                    tail.send_if_modified(|t| {
                        let end = appended.first + appended.count;
                        (end > *t).then(|| *t = end).is_some()
                    });
                }
                Ok::<_, Error>(appended)
            })))
        });
        async move {
            if let Some(completion) = completion {
                let appended = completion.await?;
                for (j, i) in fresh_at.into_iter().enumerate() {
                    offsets[i] = Some(appended.first + j as u64);
                }
            }
            for (i, mut rx) in waits {
                let settled = rx
                    .wait_for(Option::is_some)
                    .await
                    .map(|v| *v)
                    .ok()
                    .flatten()
                    .flatten();
                match settled {
                    Some(offset) => offsets[i] = Some(offset),
                    None => return Err(Error::Invalid {
                        stream,
                        reason:
                            "an append with the same idempotency key failed at the same time; retry"
                                .to_owned(),
                    }),
                }
            }
            Ok(offsets.into_iter().map(|o| o.unwrap_or(u64::MAX)).collect())
        }
    }

    /// Answers a fetch: records from the start it names, filtered, waiting up to its
    /// `wait_ms` for the first one.
    pub(crate) async fn fetch(&self, f: wire::Fetch, stop: Stop) -> Result<Fetched, WireError> {
        self.fetch_inner(f, stop)
            .await
            .map_err(|e| WireError::of(&e, &self.name))
    }

    async fn fetch_inner(&self, f: wire::Fetch, stop: Stop) -> Result<Fetched, Error> {
        let max_records = f.max_records.clamp(1, MAX_FETCH_RECORDS) as usize;
        let max_bytes = f.max_bytes.clamp(1, MAX_FETCH_BYTES) as usize;
        let wait = Duration::from_millis(f.wait_ms).min(MAX_FETCH_WAIT);
        if f.events.len() > 256 || f.events.iter().any(|e| e.len() > MAX_NAME) {
            return Err(Error::Invalid {
                stream: self.name.clone(),
                reason: "a filter names at most 256 events of at most 1024 bytes".to_owned(),
            });
        }
        let log = self.log();
        let mut from = match f.from {
            From::Start => log.info().first_offset,
            From::Offset(n) => n,
            From::Time(t) => match log.offset_at_time(t).await? {
                Some(n) => n,
                None => *self.tail.borrow(),
            },
            From::Tail => *self.tail.borrow(),
        };
        let deadline = tokio::time::Instant::now() + wait;
        let mut tail = self.tail.subscribe();
        let mut scanned = 0usize;
        loop {
            let end = *tail.borrow_and_update();
            if from > end {
                return Err(Error::Invalid {
                    stream: self.name.clone(),
                    reason: format!("offset {from} is past the end of the stream (next is {end})"),
                });
            }
            if from < end {
                let records = log.read_bytes(from, max_records, max_bytes).await?;
                let Some(last) = records.last() else {
                    return Ok(Fetched {
                        records: Vec::new(),
                        next: from,
                    });
                };
                let next = last.offset + 1;
                let records: Vec<_> = records
                    .into_iter()
                    .map(wire::to_wire)
                    .filter(|r| f.events.is_empty() || f.events.contains(&r.event))
                    .collect();
                if !records.is_empty() {
                    return Ok(Fetched { records, next });
                }
                // Everything read was filtered out: go on from past it, within the wait and
                // a bound on what one request may make the host read.
                from = next;
                scanned += max_records;
                if tokio::time::Instant::now() < deadline && scanned < MAX_FETCH_SCAN {
                    continue;
                }
                return Ok(Fetched {
                    records,
                    next: from,
                });
            }
            let changed = tokio::select! {
                changed = tokio::time::timeout_at(deadline, tail.changed()) => changed.is_ok_and(|c| c.is_ok()),
                () = stop.wait() => false,
            };
            if !changed {
                return Ok(Fetched {
                    records: Vec::new(),
                    next: from,
                });
            }
        }
    }

    /// Closes the stream as the bus shuts down: its consumers' store once no request is using
    /// it, then its log (a last fsync). Requests still running get `Closed`.
    pub(crate) async fn close(&self) {
        if let Some(c) = &self.consumers {
            c.close().await;
        }
        if let Err(e) = self.log().close().await {
            tracing::warn!(stream = %self.name, error = %e, "closing the stream's log failed");
        }
    }

    /// The stream's log now (a cheap clone).
    pub(crate) fn log(&self) -> Log {
        crate::log::lock(&self.log).clone()
    }

    /// Removes the records below `up_to` (all when `None`); offsets are not reused.
    pub(crate) async fn purge(&self, cmd: wire::Purge) -> Result<(u64, u64), WireError> {
        let _admin = self.admin.lock().await;
        let purged = self
            .log()
            .purge(cmd.up_to)
            .await
            .map_err(|e| WireError::of(&e, &self.name))?;
        tracing::info!(stream = %self.name, removed = purged.removed, first = purged.first_offset, "stream purged");
        Ok((purged.removed, purged.first_offset))
    }

    /// Deletes the stream's records, keys and offsets: it starts again empty at offset 0.
    /// Appends and reads running meanwhile fail with `Closed`.
    pub(crate) async fn delete(&self) -> Result<(), WireError> {
        let _admin = self.admin.lock().await;
        let wire = |e: Error| WireError::of(&e, &self.name);
        self.log().delete().await.map_err(wire)?;
        let fresh = self.place.open(&self.config).await.map_err(wire)?;
        {
            let mut log = crate::log::lock(&self.log);
            *log = fresh;
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.tail.send_replace(0);
        }
        self.dedupe.clear();
        if let Some(c) = &self.consumers {
            c.clear().await.map_err(wire)?;
        }
        tracing::info!(stream = %self.name, "stream deleted");
        Ok(())
    }

    /// What the stream holds now.
    pub(crate) fn info(&self) -> Result<StreamInfo, WireError> {
        let info = self.log().info();
        Ok(StreamInfo {
            name: self.name.clone(),
            first_offset: info.first_offset,
            last_offset: info.next_offset.checked_sub(1).filter(|_| info.records > 0),
            next_offset: info.next_offset,
            records: info.records,
            bytes: info.bytes,
            segments: info.segments as u64,
            retention: retention_info(&self.config.retention),
            fsync: fsync_name(self.config.fsync),
        })
    }
}

/// Applies age-based retention every minute while the host lives.
async fn retain(host: Weak<Host>) {
    let mut every = tokio::time::interval(RETENTION_EVERY);
    every.tick().await;
    loop {
        every.tick().await;
        let Some(host) = host.upgrade() else { return };
        if let Err(e) = host.log().apply_retention().await {
            tracing::warn!(stream = %host.name, error = %e, "retention failed");
        }
    }
}
