//! Random sequences of deliveries, acks, naks, time, resets, retention, commits and crashes
//! against a model of what the consumer owes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::consumer::{AckError, Change, Consumer, ConsumerConfig, ConsumerStore, PersistedState};

#[derive(Debug, Clone)]
enum Op {
    /// The stream grows by this many records.
    Append(u8),
    /// The host asks for up to this many deliveries.
    Take(u8),
    /// Ack the n-th pending record.
    Ack(u16),
    /// Ack any offset: an error unless it is pending.
    AckAny(u16),
    /// Nak the n-th pending record with this delay in seconds (0: none).
    Nak(u16, u8),
    /// Time passes, in seconds.
    Advance(u8),
    /// Reset to an offset (clamped into the stream).
    Reset(u16),
    /// Retention removes this many more records from the front.
    Gone(u8),
    /// The host commits the changes.
    Commit,
    /// The host dies: what was not committed is lost, the store is reopened and loaded.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1..12u8).prop_map(Op::Append),
        4 => (0..10u8).prop_map(Op::Take),
        4 => any::<u16>().prop_map(Op::Ack),
        1 => (0..80u16).prop_map(Op::AckAny),
        2 => (any::<u16>(), 0..8u8).prop_map(|(p, d)| Op::Nak(p, d)),
        2 => (1..12u8).prop_map(Op::Advance),
        1 => (0..80u16).prop_map(Op::Reset),
        1 => (0..6u8).prop_map(Op::Gone),
        2 => Just(Op::Commit),
        1 => Just(Op::Crash),
    ]
}

/// What the consumer owes: pending offsets with their delivery counts, and the offsets that
/// must not be delivered again (acked or dead-lettered, and not reset over since).
#[derive(Debug, Clone, Default)]
struct Model {
    pending: BTreeMap<u64, u32>,
    finished: BTreeSet<u64>,
}

struct World {
    config: ConsumerConfig,
    dir: tempfile::TempDir,
    store: Option<ConsumerStore>,
    consumer: Consumer,
    model: Model,
    committed: (Model, PersistedState),
    stream_next: u64,
    earliest: u64,
    now: Instant,
}

/// Records of the stream: every third is event `"b"`, the rest `"a"`.
fn name(offset: u64) -> Option<&'static str> {
    Some(if offset % 3 == 0 { "b" } else { "a" })
}

impl World {
    fn store(&self) -> &ConsumerStore {
        self.store.as_ref().expect("store open")
    }

    fn commit(&mut self) {
        let changes: Vec<Change> = self
            .consumer
            .changes()
            .map(Change::Update)
            .into_iter()
            .collect();
        self.store().commit(&changes).unwrap();
        self.committed = (self.model.clone(), self.consumer.snapshot());
    }

    fn nth_pending(&self, n: u16) -> Option<u64> {
        let len = self.model.pending.len();
        (len > 0).then(|| *self.model.pending.keys().nth(usize::from(n) % len).unwrap())
    }

    fn drain_dead_letters(&mut self) {
        for dl in self.consumer.dead_letters() {
            let count = self.model.pending.remove(&dl.offset);
            assert_eq!(count, Some(dl.deliveries), "dead letter {dl:?}");
            assert_eq!(dl.deliveries, self.config.max_deliveries);
            self.model.finished.insert(dl.offset);
        }
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Append(n) => self.stream_next += u64::from(n),
            Op::Take(max) => {
                let from = self.consumer.position().max(self.earliest);
                let to = self.stream_next.min(from + 16);
                let records: Vec<_> = (from..to).map(|o| (o, name(o))).collect();
                let got = self.consumer.take(self.now, usize::from(max), records);
                assert!(got.len() <= usize::from(max));
                for d in got {
                    assert!(
                        !self.model.finished.contains(&d.offset),
                        "{d:?} was finished"
                    );
                    assert!(self.config.accepts(name(d.offset)));
                    let before = self.model.pending.get(&d.offset).copied().unwrap_or(0);
                    assert_eq!(d.deliveries, before + 1, "{d:?}");
                    assert!(d.deliveries <= self.config.max_deliveries);
                    self.model.pending.insert(d.offset, d.deliveries);
                }
                self.drain_dead_letters();
            }
            Op::Ack(n) => {
                if let Some(offset) = self.nth_pending(n) {
                    self.consumer.ack(offset).unwrap();
                    self.model.pending.remove(&offset);
                    self.model.finished.insert(offset);
                }
            }
            Op::AckAny(offset) => {
                let offset = u64::from(offset);
                let got = self.consumer.ack(offset);
                if self.model.pending.remove(&offset).is_some() {
                    assert_eq!(got, Ok(()));
                    self.model.finished.insert(offset);
                } else if offset >= self.consumer.position() {
                    assert_eq!(got, Err(AckError::NeverDelivered { offset }));
                } else {
                    assert_eq!(got, Err(AckError::NotPending { offset }));
                }
            }
            Op::Nak(n, delay) => {
                if let Some(offset) = self.nth_pending(n) {
                    let delay = Duration::from_secs(u64::from(delay));
                    self.consumer.nak(offset, Some(delay), self.now).unwrap();
                    self.drain_dead_letters();
                }
            }
            Op::Advance(secs) => {
                self.now += Duration::from_secs(u64::from(secs));
                self.consumer.expired(self.now);
                self.drain_dead_letters();
            }
            Op::Reset(to) => {
                let to = u64::from(to).clamp(self.earliest, self.stream_next);
                self.consumer.reset(to);
                self.model.pending.clear();
                self.model.finished.retain(|&o| o < to);
            }
            Op::Gone(n) => {
                self.earliest = (self.earliest + u64::from(n)).min(self.stream_next);
                self.consumer.skip_gone(self.earliest);
                let earliest = self.earliest;
                self.model.pending.retain(|&o, _| o >= earliest);
            }
            Op::Commit => self.commit(),
            Op::Crash => {
                self.store = None;
                let store = ConsumerStore::open_in(self.dir.path()).unwrap();
                let mut all = store.load_all().unwrap();
                assert_eq!(all.len(), 1);
                let loaded = all.remove(0);
                assert_eq!(loaded.config, self.config);
                assert_eq!(
                    loaded.state, self.committed.1,
                    "the store gives back the last commit"
                );
                self.consumer =
                    Consumer::restore(loaded.name, loaded.config, loaded.state, self.now);
                self.store = Some(store);
                self.model = self.committed.0.clone();
                self.consumer.skip_gone(self.earliest);
                let earliest = self.earliest;
                self.model.pending.retain(|&o, _| o >= earliest);
            }
        }
    }

    fn check(&self) {
        let snap = self.consumer.snapshot();
        snap.validate().unwrap();
        let pending: BTreeMap<u64, u32> = snap.pending.iter().copied().collect();
        assert_eq!(pending, self.model.pending);
        assert!(pending.len() <= self.config.max_ack_pending as usize);
        let position = self.consumer.position();
        assert!(self.consumer.ack_floor() <= position);
        assert!(position <= self.stream_next && self.earliest <= self.consumer.ack_floor());
        // Every finished offset still in the stream is behind the cursor and not pending.
        for &o in self.model.finished.range(self.earliest..) {
            assert!(o < position && !pending.contains_key(&o), "{o} finished");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_histories_keep_the_invariants(
        max_deliveries in 1..4u32,
        max_ack_pending in 1..8u32,
        filtered in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let mut config = ConsumerConfig::new()
            .ack_wait(Duration::from_secs(5))
            .max_deliveries(max_deliveries)
            .max_ack_pending(max_ack_pending);
        if filtered {
            config = config.filter(["a"]);
        }
        let dir = tempfile::tempdir().unwrap();
        let store = ConsumerStore::open_in(dir.path()).unwrap();
        let consumer = Consumer::new("c", config.clone(), 0);
        let mut world = World {
            config,
            dir,
            store: Some(store),
            consumer,
            model: Model::default(),
            committed: (Model::default(), PersistedState::default()),
            stream_next: 0,
            earliest: 0,
            now: Instant::now(),
        };
        world.commit();
        for op in &ops {
            world.step(op);
            world.check();
        }
    }
}
