//! The idempotency keys a host remembers: an append repeating a key within the dedupe window
//! gets the first append's offset, even while that first append is still being written.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::error::Error;
use crate::log::{lock, Log};
use crate::wire;

/// How a key's append ended: `None` while it runs, then its offset, or `None` inside if it
/// failed.
type Outcome = Option<Option<u64>>;

/// The keys of one stream.
pub(crate) struct Dedupe {
    window_ms: u64,
    max: usize,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    keys: HashMap<String, Slot>,
    /// Keys by the time they were appended, oldest first: `(time, key)`.
    order: VecDeque<(u64, String)>,
}

enum Slot {
    Pending(watch::Receiver<Outcome>),
    Done { offset: u64, at: u64 },
}

/// What [`Dedupe::claim`] found.
pub(crate) enum Seen {
    /// Appended before, at this offset.
    Done(u64),
    /// Being appended now: wait for its outcome.
    Pending(watch::Receiver<Outcome>),
    /// New: the caller appends it and settles the claim.
    New(Claim),
}

/// A key being appended. Dropped unsettled, it is forgotten (its waiters see a failure).
pub(crate) struct Claim {
    key: String,
    at: u64,
    tx: watch::Sender<Outcome>,
    inner: Arc<Mutex<Inner>>,
    settled: bool,
}

impl Claim {
    /// The append ended: at `offset`, or failed (`None`, and the key is forgotten so that a
    /// retry appends it).
    pub(crate) fn settle(mut self, offset: Option<u64>) {
        self.finish(offset);
    }

    fn finish(&mut self, offset: Option<u64>) {
        if self.settled {
            return;
        }
        self.settled = true;
        let mut inner = lock(&self.inner);
        match offset {
            Some(offset) => {
                inner.keys.insert(
                    self.key.clone(),
                    Slot::Done {
                        offset,
                        at: self.at,
                    },
                );
                inner.order.push_back((self.at, self.key.clone()));
            }
            None => {
                inner.keys.remove(&self.key);
            }
        }
        drop(inner);
        self.tx.send_replace(Some(offset));
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.finish(None);
    }
}

impl Dedupe {
    pub(crate) fn new(window: Duration, max: usize) -> Self {
        Dedupe {
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            max,
            inner: Arc::default(),
        }
    }

    /// Forgets every key (the stream was deleted). Appends being written keep their claims.
    pub(crate) fn clear(&self) {
        let mut inner = lock(&self.inner);
        inner
            .keys
            .retain(|_, slot| matches!(slot, Slot::Pending(_)));
        inner.order.clear();
    }

    /// Looks `key` up at time `now` (ms), claiming it if it is new.
    pub(crate) fn claim(&self, key: &str, now: u64) -> Seen {
        let mut inner = lock(&self.inner);
        self.expire(&mut inner, now);
        match inner.keys.get(key) {
            Some(Slot::Done { offset, .. }) => return Seen::Done(*offset),
            Some(Slot::Pending(rx)) => return Seen::Pending(rx.clone()),
            None => {}
        }
        let (tx, rx) = watch::channel(None);
        // Into the order once appended: a pending key is never forgotten.
        inner.keys.insert(key.to_owned(), Slot::Pending(rx));
        Seen::New(Claim {
            key: key.to_owned(),
            at: now,
            tx,
            inner: Arc::clone(&self.inner),
            settled: false,
        })
    }

    /// Forgets keys older than the window, and the oldest beyond the most kept.
    fn expire(&self, inner: &mut Inner, now: u64) {
        let horizon = now.saturating_sub(self.window_ms);
        while let Some((at, _)) = inner.order.front() {
            if *at >= horizon && inner.order.len() <= self.max {
                break;
            }
            let Some((at, key)) = inner.order.pop_front() else {
                break;
            };
            // Only the entry this is the record of: a key forgotten and appended again has a
            // later one.
            if matches!(inner.keys.get(&key), Some(Slot::Done { at: a, .. }) if *a == at) {
                inner.keys.remove(&key);
            }
        }
    }

    /// Remembers the keys of the records appended within the window before `now`, read back
    /// from the log: a retry after the host restarted is still recognised.
    pub(crate) async fn recover(&self, log: &Log, now: u64) -> Result<(), Error> {
        let horizon = now.saturating_sub(self.window_ms);
        let Some(mut from) = log.offset_at_time(horizon).await? else {
            return Ok(());
        };
        loop {
            let records = log.read(from, 1024).await?;
            let Some(last) = records.last() else {
                return Ok(());
            };
            from = last.offset + 1;
            let mut inner = lock(&self.inner);
            for record in &records {
                if let Some(key) = wire::parts(record).key {
                    inner.keys.insert(
                        key.clone(),
                        Slot::Done {
                            offset: record.offset,
                            at: record.timestamp,
                        },
                    );
                    inner.order.push_back((record.timestamp, key));
                }
            }
            self.expire(&mut inner, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_remembered_for_the_window_then_forgotten() {
        let d = Dedupe::new(Duration::from_millis(100), 10);
        let Seen::New(claim) = d.claim("a", 1_000) else {
            panic!("new key")
        };
        assert!(matches!(d.claim("a", 1_010), Seen::Pending(_)));
        claim.settle(Some(7));
        assert!(matches!(d.claim("a", 1_050), Seen::Done(7)));
        assert!(matches!(d.claim("a", 1_100), Seen::Done(7)));
        assert!(matches!(d.claim("a", 1_101), Seen::New(_)));
    }

    #[test]
    fn a_failed_or_dropped_claim_lets_a_retry_append() {
        let d = Dedupe::new(Duration::from_secs(60), 10);
        let Seen::New(claim) = d.claim("k", 0) else {
            panic!("new key")
        };
        let Seen::Pending(mut rx) = d.claim("k", 1) else {
            panic!("pending")
        };
        claim.settle(None);
        assert_eq!(*rx.borrow_and_update(), Some(None));
        let Seen::New(again) = d.claim("k", 2) else {
            panic!("forgotten after a failure")
        };
        drop(again);
        assert!(matches!(d.claim("k", 3), Seen::New(_)));
    }

    #[test]
    fn at_most_max_keys_are_kept_oldest_forgotten_first() {
        let d = Dedupe::new(Duration::from_secs(60), 3);
        for (i, key) in ["a", "b", "c", "d"].into_iter().enumerate() {
            let Seen::New(claim) = d.claim(key, i as u64) else {
                panic!("new")
            };
            claim.settle(Some(i as u64));
        }
        // Claiming expires first: "a" is the oldest of four.
        assert!(matches!(d.claim("b", 10), Seen::Done(1)));
        assert!(matches!(d.claim("a", 10), Seen::New(_)));
    }
}
