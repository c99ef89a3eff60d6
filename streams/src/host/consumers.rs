//! The durable consumers of a hosted stream: their state machines, their redb store, the
//! records members pull, acks, and the dead-letter stream.
//!
//! Every request of one stream's consumers takes one lock, in turn: a `next` reads records,
//! lets the consumer pick what to deliver, writes dead letters, commits the changes (one redb
//! transaction) and only then answers; an ack is answered once its commit returned, so an
//! acked record is never delivered again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshbus_core::Binary;
use tokio::sync::{watch, Mutex};

use crate::consumer::{Change, Consumer, ConsumerStore, DeadLetter, DeadReason};
use crate::error::Error;
use crate::log::Log;
use crate::wire::{self, dead_letter, From, WireDelivery};
use crate::{ConsumerConfig, ConsumerInfo};

/// The most records one `next` hands out.
pub(crate) const MAX_NEXT: u32 = 1_000;
/// The most durable consumers per stream.
const MAX_CONSUMERS: usize = 1_024;
/// The most records a consumer may have pending.
const MAX_PENDING: u32 = 100_000;
/// The most offsets one ack carries.
const MAX_ACKS: usize = 10_000;

/// See [`Consumers::uncommitted`].
struct Uncommitted(Option<Arc<std::sync::atomic::AtomicBool>>);

impl Uncommitted {
    fn done(mut self) {
        self.0 = None;
    }
}

impl Drop for Uncommitted {
    fn drop(&mut self) {
        if let Some(stale) = self.0.take() {
            stale.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// A stream's durable consumers.
pub(crate) struct Consumers {
    stream: String,
    /// Taken out when the stream closes.
    store: std::sync::Mutex<Option<Arc<ConsumerStore>>>,
    state: Mutex<HashMap<String, Consumer>>,
    closed: std::sync::atomic::AtomicBool,
    /// Set when a change was made in memory and not committed (a failed commit, an error or
    /// a dropped request in between): the next request reloads the consumers from the store.
    stale: Arc<std::sync::atomic::AtomicBool>,
    /// Per consumer, bumped on its acks, naks, reset and creation: its waiting `next`s look
    /// again (the tail wakes every consumer's).
    waiters: std::sync::Mutex<HashMap<String, watch::Sender<u64>>>,
    /// The dead-letter stream (none without a directory).
    pub(crate) dead: Option<Arc<super::Host>>,
}

fn invalid(stream: &str, reason: impl Into<String>) -> Error {
    Error::Invalid {
        stream: stream.to_owned(),
        reason: reason.into(),
    }
}

/// Refuses a consumer name that is empty, long or odd, as for stream names.
fn check_name(stream: &str, name: &str) -> Result<(), Error> {
    if wire::is_name(name) {
        Ok(())
    } else {
        Err(invalid(
            stream,
            "a consumer name is 1 to 255 ASCII letters, digits, `-` or `_`",
        ))
    }
}

impl Consumers {
    /// Loads the consumers stored in `dir` (none without a directory: consumers then fail
    /// with an error saying so).
    pub(crate) async fn open(
        stream: &str,
        dir: Option<&std::path::Path>,
        dead: Option<Arc<super::Host>>,
        log: &Log,
    ) -> Result<Consumers, Error> {
        let mut consumers = HashMap::new();
        let store = match dir {
            Some(dir) => {
                let dir = dir.to_path_buf();
                let name = stream.to_owned();
                let (store, loaded) = tokio::task::spawn_blocking(move || {
                    let store = ConsumerStore::open_in(&dir).map_err(|e| e.into_error(&name))?;
                    let loaded = store.load_all().map_err(|e| e.into_error(&name))?;
                    Ok::<_, Error>((store, loaded))
                })
                .await
                .map_err(|e| invalid(stream, format!("loading consumers failed: {e}")))??;
                let now = Instant::now();
                let first = log.info().first_offset;
                for l in loaded {
                    let mut c = Consumer::restore(l.name.clone(), l.config, l.state, now);
                    c.skip_gone(first);
                    consumers.insert(l.name, c);
                }
                Some(Arc::new(store))
            }
            None => None,
        };
        Ok(Consumers {
            stream: stream.to_owned(),
            store: std::sync::Mutex::new(store),
            state: Mutex::new(consumers),
            waiters: std::sync::Mutex::default(),
            closed: std::sync::atomic::AtomicBool::new(false),
            stale: Arc::default(),
            dead,
        })
    }

    fn store(&self) -> Result<Arc<ConsumerStore>, Error> {
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        crate::log::lock(&self.store).clone().ok_or_else(|| {
            invalid(
                &self.stream,
                "durable consumers need the stream to have a directory (`StreamConfig::dir`)",
            )
        })
    }

    /// Closes the store once no request is using it (commits run under the state lock).
    pub(crate) async fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        let _state = self.state.lock().await;
        crate::log::lock(&self.store).take();
    }

    /// The consumers, reloaded from the store first if memory ran ahead of it.
    async fn lock(&self) -> Result<tokio::sync::MutexGuard<'_, HashMap<String, Consumer>>, Error> {
        let mut state = self.state.lock().await;
        if self.stale.load(std::sync::atomic::Ordering::SeqCst) {
            let store = self.store()?;
            let stream = self.stream.clone();
            let loaded = tokio::task::spawn_blocking(move || {
                store.load_all().map_err(|e| e.into_error(&stream))
            })
            .await
            .map_err(|e| invalid(&self.stream, format!("reloading consumers failed: {e}")))??;
            let now = Instant::now();
            *state = loaded
                .into_iter()
                .map(|l| {
                    let c = Consumer::restore(l.name.clone(), l.config, l.state, now);
                    (l.name, c)
                })
                .collect();
            self.stale.store(false, std::sync::atomic::Ordering::SeqCst);
            tracing::warn!(stream = %self.stream, "consumers reloaded from their store after a change that was not committed");
        }
        Ok(state)
    }

    /// Marks memory as running ahead of the store until [`Uncommitted::done`]: an error or a
    /// drop before then makes the next request reload.
    fn uncommitted(&self) -> Uncommitted {
        Uncommitted(Some(Arc::clone(&self.stale)))
    }

    /// Writes `changes` in one transaction.
    async fn commit(&self, changes: Vec<Change>) -> Result<(), Error> {
        if changes.is_empty() {
            return Ok(());
        }
        let store = self.store()?;
        let stream = self.stream.clone();
        tokio::task::spawn_blocking(move || {
            store.commit(&changes).map_err(|e| e.into_error(&stream))
        })
        .await
        .map_err(|e| invalid(&self.stream, format!("a consumer commit failed: {e}")))?
    }

    /// What a `next` of consumer `name` waits on besides the tail. Senders nobody waits on
    /// are dropped when there are many (the names are checked, so this stays bounded).
    fn waiter(&self, name: &str) -> watch::Receiver<u64> {
        let mut waiters = crate::log::lock(&self.waiters);
        if waiters.len() >= 2 * MAX_CONSUMERS {
            waiters.retain(|_, tx| tx.receiver_count() > 0);
        }
        waiters
            .entry(name.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Wakes the waiting `next`s of consumer `name` (of every consumer with `None`).
    fn wake(&self, name: Option<&str>) {
        let waiters = crate::log::lock(&self.waiters);
        let bump = |tx: &watch::Sender<u64>| tx.send_modify(|n| *n = n.wrapping_add(1));
        match name {
            Some(name) => waiters.get(name).into_iter().for_each(bump),
            None => waiters.values().for_each(bump),
        }
    }

    /// Where [`From`] is in `log` now.
    async fn resolve(log: &Log, from: From) -> Result<u64, Error> {
        let info = log.info();
        Ok(match from {
            From::Start => info.first_offset,
            From::Offset(n) => n.clamp(info.first_offset, info.next_offset),
            From::Time(t) => log.offset_at_time(t).await?.unwrap_or(info.next_offset),
            From::Tail => info.next_offset,
        })
    }

    /// Creates consumer `name`, or gives an existing one `config` (its cursor stays).
    pub(crate) async fn create(
        &self,
        log: &Log,
        name: &str,
        config: ConsumerConfig,
        update: bool,
    ) -> Result<ConsumerInfo, Error> {
        if config.max_ack_pending > MAX_PENDING {
            return Err(invalid(
                &self.stream,
                format!("max_ack_pending is at most {MAX_PENDING}"),
            ));
        }
        check_name(&self.stream, name)?;
        if config.filter.len() > 256 || config.filter.iter().any(|f| f.len() > 1024) {
            return Err(invalid(
                &self.stream,
                "a filter names at most 256 events of at most 1024 bytes",
            ));
        }
        self.store()?;
        let mut state = self.lock().await?;
        let start = if state.contains_key(name) {
            0
        } else if state.len() >= MAX_CONSUMERS {
            return Err(invalid(
                &self.stream,
                format!("a stream has at most {MAX_CONSUMERS} consumers"),
            ));
        } else {
            Self::resolve(log, config.start).await?
        };
        let pending = self.uncommitted();
        let consumer = match state.get_mut(name) {
            Some(c) => {
                if update && *c.config() != config {
                    c.set_config(config);
                }
                c
            }
            None => state
                .entry(name.to_owned())
                .or_insert_with(|| Consumer::new(name, config, start)),
        };
        let changes: Vec<Change> = consumer.changes().map(Change::Update).into_iter().collect();
        let info = consumer.info(log.info().next_offset);
        self.commit(changes).await?;
        pending.done();
        drop(state);
        self.wake(Some(name));
        Ok(info)
    }

    /// Up to `max` records for a member of `name`, waiting up to `wait` for one.
    pub(crate) async fn next(
        &self,
        log: &Log,
        tail: &watch::Sender<u64>,
        name: &str,
        max: u32,
        wait: Duration,
        stop: &super::Stop,
    ) -> Result<(Vec<WireDelivery>, Option<crate::ConsumerInfo>), Error> {
        let max = max.clamp(1, MAX_NEXT) as usize;
        let deadline = tokio::time::Instant::now() + wait;
        let mut tail = tail.subscribe();
        check_name(&self.stream, name)?;
        let mut changed = self.waiter(name);
        loop {
            tail.borrow_and_update();
            changed.borrow_and_update();
            let (out, next_deadline, moved, info) = self.take(log, name, max).await?;
            if !out.is_empty() {
                return Ok((out, Some(info)));
            }
            // Everything read was filtered out: read on at once while there is more.
            if moved && tokio::time::Instant::now() < deadline {
                continue;
            }
            let until = match next_deadline {
                Some(at) => deadline.min(tokio::time::Instant::from_std(at)),
                None => deadline,
            };
            if tokio::time::Instant::now() >= deadline {
                return Ok((out, Some(info)));
            }
            tokio::select! {
                _ = tail.changed() => {}
                _ = changed.changed() => {}
                () = tokio::time::sleep_until(until) => {}
                () = stop.wait() => return Ok((out, Some(info))),
            }
        }
    }

    /// One try of [`next`](Self::next): what the consumer delivers now, and when it may
    /// deliver again if nothing.
    async fn take(
        &self,
        log: &Log,
        name: &str,
        max: usize,
    ) -> Result<
        (
            Vec<WireDelivery>,
            Option<Instant>,
            bool,
            crate::ConsumerInfo,
        ),
        Error,
    > {
        let mut state = self.lock().await?;
        let consumer = state
            .get_mut(name)
            .ok_or_else(|| invalid(&self.stream, format!("no consumer `{name}`")))?;
        let pending = self.uncommitted();
        let first = log.info().first_offset;
        consumer.skip_gone(first);
        let before = consumer.position();
        // New records only when there is room for them; redeliveries come first anyway.
        let fresh = if consumer.room() > 0 && consumer.position() < log.info().next_offset {
            log.read_bytes(
                consumer.position(),
                max,
                crate::host::MAX_FETCH_BYTES as usize,
            )
            .await?
        } else {
            Vec::new()
        };
        let fresh: Vec<(crate::record::Record, String)> = fresh
            .into_iter()
            .map(|r| {
                let event = wire::parts(&r).event;
                (r, event)
            })
            .collect();
        let now = Instant::now();
        let picked = consumer.take(
            now,
            max,
            fresh.iter().map(|(r, e)| (r.offset, Some(e.as_str()))),
        );
        let dead = consumer.dead_letters();
        let mut out = Vec::with_capacity(picked.len());
        for d in &picked {
            let record = match fresh.iter().find(|(r, _)| r.offset == d.offset) {
                Some((r, _)) => r.clone(),
                None => match log.read(d.offset, 1).await {
                    Ok(mut rs) if rs.first().is_some_and(|r| r.offset == d.offset) => {
                        rs.swap_remove(0)
                    }
                    // Removed by retention or a purge since: the consumer passes over it.
                    Ok(_) | Err(Error::OffsetGone { .. }) => continue,
                    Err(e) => return Err(e),
                },
            };
            out.push(WireDelivery {
                record: wire::to_wire(record),
                deliveries: d.deliveries,
            });
        }
        self.bury(log, name, &dead, None).await?;
        let next_deadline = consumer.next_deadline();
        let changes: Vec<Change> = consumer.changes().map(Change::Update).into_iter().collect();
        let next = log.info().next_offset;
        let moved = consumer.position() != before && consumer.position() < next;
        let info = consumer.info(next);
        self.commit(changes).await?;
        pending.done();
        Ok((out, next_deadline, moved, info))
    }

    /// Appends each dead letter to the dead-letter stream: the record with why it died.
    async fn bury(
        &self,
        log: &Log,
        consumer: &str,
        dead: &[DeadLetter],
        why: Option<&str>,
    ) -> Result<(), Error> {
        let Some(host) = &self.dead else {
            return Ok(());
        };
        let mut entries = Vec::with_capacity(dead.len());
        for d in dead {
            let Ok(mut found) = log.read(d.offset, 1).await else {
                continue;
            };
            let Some(r) = found.pop().filter(|r| r.offset == d.offset) else {
                continue;
            };
            let reason = match d.reason {
                DeadReason::AckWait => "ack_wait",
                DeadReason::Nacked => "nak",
            };
            let wire::Parts {
                event, mut headers, ..
            } = wire::parts(&r);
            let body = wire::body_of(&r, &self.stream)?;
            for (k, v) in [
                (dead_letter::STREAM, self.stream.clone()),
                (dead_letter::CONSUMER, consumer.to_owned()),
                (dead_letter::OFFSET, d.offset.to_string()),
                (dead_letter::DELIVERIES, d.deliveries.to_string()),
                (
                    dead_letter::REASON,
                    match why {
                        Some(why) => format!("{reason}: {d}: {why}"),
                        None => format!("{reason}: {d}"),
                    },
                ),
            ] {
                headers.push((k.to_owned(), Binary::from(v)));
            }
            tracing::warn!(stream = %self.stream, consumer, offset = d.offset, deliveries = d.deliveries, reason, "dead-lettered");
            entries.push(wire::Entry {
                event,
                key: None,
                headers,
                body,
            });
        }
        if !entries.is_empty() {
            host.append_entries(entries).await?;
        }
        Ok(())
    }

    /// Acks (or naks, with an optional delay) `offsets` of `name`. Every offset is tried;
    /// the first that could not be taken is the error.
    pub(crate) async fn ack(
        &self,
        log: &Log,
        name: &str,
        offsets: &[u64],
        nak: Option<Option<Duration>>,
        why: Option<&str>,
    ) -> Result<(), Error> {
        if offsets.len() > MAX_ACKS {
            return Err(invalid(
                &self.stream,
                format!(
                    "an ack of {} offsets: the most is {MAX_ACKS}",
                    offsets.len()
                ),
            ));
        }
        let mut state = self.lock().await?;
        let consumer = state
            .get_mut(name)
            .ok_or_else(|| invalid(&self.stream, format!("no consumer `{name}`")))?;
        let pending = self.uncommitted();
        let now = Instant::now();
        let mut refused = None;
        for &offset in offsets {
            let done = match nak {
                None => consumer.ack(offset),
                Some(delay) => consumer.nak(offset, delay, now),
            };
            if let Err(e) = done {
                refused.get_or_insert(e);
            }
        }
        // A nak of a last delivery dead-letters the record now, before the commit that
        // marks it done: written to the dead-letter stream, then committed.
        let dead = consumer.dead_letters();
        self.bury(log, name, &dead, why).await?;
        let changes: Vec<Change> = consumer.changes().map(Change::Update).into_iter().collect();
        self.commit(changes).await?;
        pending.done();
        drop(state);
        self.wake(Some(name));
        match refused {
            None => Ok(()),
            Some(e) => Err(invalid(&self.stream, format!("consumer `{name}`: {e}"))),
        }
    }

    /// Consumer `name`'s info.
    pub(crate) async fn info(&self, log: &Log, name: &str) -> Result<ConsumerInfo, Error> {
        let state = self.lock().await?;
        let consumer = state
            .get(name)
            .ok_or_else(|| invalid(&self.stream, format!("no consumer `{name}`")))?;
        Ok(consumer.info(log.info().next_offset))
    }

    /// Moves consumer `name`'s cursor to `to`: what follows is delivered again.
    pub(crate) async fn reset(
        &self,
        log: &Log,
        name: &str,
        to: From,
    ) -> Result<ConsumerInfo, Error> {
        let at = Self::resolve(log, to).await?;
        let mut state = self.lock().await?;
        let consumer = state
            .get_mut(name)
            .ok_or_else(|| invalid(&self.stream, format!("no consumer `{name}`")))?;
        let pending = self.uncommitted();
        consumer.reset(at);
        let changes: Vec<Change> = consumer.changes().map(Change::Update).into_iter().collect();
        let info = consumer.info(log.info().next_offset);
        self.commit(changes).await?;
        pending.done();
        drop(state);
        self.wake(Some(name));
        Ok(info)
    }

    /// Deletes consumer `name`; `false` if there was none.
    pub(crate) async fn delete(&self, name: &str) -> Result<bool, Error> {
        let mut state = self.lock().await?;
        let pending = self.uncommitted();
        let existed = state.remove(name).is_some();
        self.commit(vec![Change::Delete(name.to_owned())]).await?;
        pending.done();
        drop(state);
        self.wake(Some(name));
        Ok(existed)
    }

    /// Deletes every consumer (the stream was deleted).
    pub(crate) async fn clear(&self) -> Result<(), Error> {
        let mut state = self.lock().await?;
        let pending = self.uncommitted();
        let changes: Vec<Change> = state
            .drain()
            .map(|(name, _)| Change::Delete(name))
            .collect();
        self.commit(changes).await?;
        pending.done();
        drop(state);
        self.wake(None);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogConfig;
    use crate::record::NewRecord;

    /// A change made in memory and never committed (here: a request dropped between the two)
    /// is undone by the next request, which reloads the consumers from the store.
    #[tokio::test]
    async fn an_uncommitted_change_is_reloaded_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::new("s")).await.unwrap();
        let records = (0..10).map(|i| NewRecord::new(i, "x")).collect();
        log.append(records).await.unwrap();
        let consumers = Consumers::open("s", Some(dir.path()), None, &log)
            .await
            .unwrap();
        consumers
            .create(&log, "c", ConsumerConfig::new(), true)
            .await
            .unwrap();
        // Three delivered and committed.
        let (out, _, _, _) = consumers.take(&log, "c", 3).await.unwrap();
        assert_eq!(out.len(), 3);
        // Two more taken in memory by a request that is then dropped before its commit.
        {
            let mut state = consumers.lock().await.unwrap();
            let pending = consumers.uncommitted();
            let c = state.get_mut("c").unwrap();
            let taken = c.take(Instant::now(), 2, [(3, None), (4, None)]);
            assert_eq!(taken.len(), 2);
            assert_eq!(c.position(), 5);
            drop(pending);
        }
        // The next request sees what the store holds: position 3, three pending.
        let info = consumers.info(&log, "c").await.unwrap();
        assert_eq!((info.position, info.pending), (3, 3));
        // And once committed, nothing is reloaded again.
        let (out, _, _, _) = consumers.take(&log, "c", 2).await.unwrap();
        assert_eq!(
            out.iter().map(|d| d.record.offset).collect::<Vec<_>>(),
            [3, 4]
        );
        assert!(!consumers.stale.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(consumers.info(&log, "c").await.unwrap().position, 5);
    }
}
