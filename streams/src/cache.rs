//! A bounded cache of decoded batches, least recently used out first.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::format::BatchHeader;
use crate::record::Record;

/// A verified, decoded batch.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) header: BatchHeader,
    pub(crate) records: Vec<Record>,
}

/// Key: (segment base offset, position in the segment file).
type Key = (u64, u64);

/// Decoded batches up to a byte budget (counted by frame size).
#[derive(Debug)]
pub(crate) struct Cache {
    cap: u64,
    used: u64,
    tick: u64,
    map: HashMap<Key, (Arc<Batch>, u64)>,
    order: BTreeMap<u64, Key>,
}

impl Cache {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap: cap as u64,
            used: 0,
            tick: 0,
            map: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    pub(crate) fn get(&mut self, key: Key) -> Option<Arc<Batch>> {
        self.tick += 1;
        let tick = self.tick;
        let (batch, t) = self.map.get_mut(&key)?;
        self.order.remove(t);
        *t = tick;
        self.order.insert(tick, key);
        Some(batch.clone())
    }

    pub(crate) fn insert(&mut self, key: Key, batch: Arc<Batch>) {
        let size = batch.header.frame_len();
        if size > self.cap || self.map.contains_key(&key) {
            return;
        }
        while self.used + size > self.cap {
            let Some((_, old)) = self.order.pop_first() else {
                break;
            };
            if let Some((b, _)) = self.map.remove(&old) {
                self.used -= b.header.frame_len();
            }
        }
        self.tick += 1;
        self.used += size;
        self.order.insert(self.tick, key);
        self.map.insert(key, (batch, self.tick));
    }

    /// Forgets every batch of the segment with base offset `base`.
    pub(crate) fn drop_segment(&mut self, base: u64) {
        let keys: Vec<Key> = self.map.keys().filter(|k| k.0 == base).copied().collect();
        for k in keys {
            if let Some((b, t)) = self.map.remove(&k) {
                self.used -= b.header.frame_len();
                self.order.remove(&t);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(len: u32) -> Arc<Batch> {
        let header = BatchHeader {
            length: len - 4,
            crc: 0,
            base: 0,
            count: 1,
            max_ts: 0,
        };
        Arc::new(Batch {
            header,
            records: Vec::new(),
        })
    }

    #[test]
    fn stays_within_budget_and_evicts_least_recent() {
        let mut c = Cache::new(300);
        c.insert((0, 1), batch(100));
        c.insert((0, 2), batch(100));
        c.insert((0, 3), batch(100));
        assert!(c.get((0, 1)).is_some()); // 2 is now the least recent
        c.insert((0, 4), batch(100));
        assert!(c.used() <= 300);
        assert!(c.get((0, 2)).is_none());
        assert!(c.get((0, 1)).is_some());
        c.insert((0, 5), batch(400)); // over the whole budget: not kept
        assert!(c.get((0, 5)).is_none());
        c.drop_segment(0);
        assert_eq!(c.used(), 0);
    }
}
