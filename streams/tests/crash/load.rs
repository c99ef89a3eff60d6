//! The load: concurrent publishers of keyed confirmed appends that keep what failed and retry
//! it with the same key once the host is back; and the check of the stream they leave.

use std::sync::Arc;

use futures_util::StreamExt;
use meshbus_core::{Bus, ErrorKind};
use meshbus_streams::{Error, From, StreamsExt};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{key, order, within, Order, BOUND, LOAD_BOUND};

/// Publishers appending at once.
pub(crate) const PUBLISHERS: u32 = 16;
/// Appends per publisher: 100,000 in all.
pub(crate) const PER_PUBLISHER: u32 = 6_250;
/// Appends in all.
pub(crate) const TOTAL: u64 = PUBLISHERS as u64 * PER_PUBLISHER as u64;
/// The host is killed once this many appends were confirmed.
pub(crate) const KILL_AT: u64 = 30_000;
/// The most one append may take: a bound, never reached when all goes well.
const APPEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// What one publisher saw.
#[derive(Debug, Default)]
pub(crate) struct Published {
    pub(crate) publisher: u32,
    /// The offset each of its appends was confirmed at, by sequence number.
    pub(crate) offsets: Vec<u64>,
    /// Its appends that failed, and how; each was retried with the same key until confirmed.
    pub(crate) failed: Vec<(u32, ErrorKind)>,
}

/// The publishers at work.
pub(crate) struct Load {
    tasks: JoinSet<Published>,
    /// Appends confirmed so far, by all publishers.
    confirmed: watch::Receiver<u64>,
    /// How many times the host was started again.
    restarts: watch::Sender<u32>,
}

impl Load {
    /// Starts [`PUBLISHERS`] publishers on `bus`.
    pub(crate) fn start(bus: &Bus) -> Load {
        let (confirmed_tx, confirmed) = watch::channel(0u64);
        let confirmed_tx = Arc::new(confirmed_tx);
        let (restarts, restarts_rx) = watch::channel(0u32);
        let mut tasks = JoinSet::new();
        for p in 0..PUBLISHERS {
            tasks.spawn(publish(
                bus.clone(),
                p,
                restarts_rx.clone(),
                Arc::clone(&confirmed_tx),
            ));
        }
        Load {
            tasks,
            confirmed,
            restarts,
        }
    }

    /// Resolves once at least `n` appends were confirmed, with how many were then.
    pub(crate) async fn confirmed_at_least(&mut self, n: u64) -> u64 {
        *self
            .confirmed
            .wait_for(|c| *c >= n)
            .await
            .expect("the publishers run")
    }

    /// Tells the publishers waiting after a failure that the host is back.
    pub(crate) fn host_restarted(&self) {
        self.restarts.send_modify(|r| *r += 1);
    }

    /// Waits for every publisher to have all its appends confirmed.
    pub(crate) async fn finish(mut self) -> Vec<Published> {
        let mut all = Vec::new();
        while let Some(done) = self.tasks.join_next().await {
            all.push(done.expect("a publisher panicked"));
        }
        all.sort_by_key(|p| p.publisher);
        all
    }
}

/// Publisher `p`: appends its [`PER_PUBLISHER`] orders one after the other, each with its key.
/// An append that fails (the host was killed) is retried with the same key once the host is
/// back, that is once `restarts` moved past what it was when the append was sent: an append
/// that fails after the restart waits for a restart that never comes, and the test times out.
async fn publish(
    bus: Bus,
    p: u32,
    mut restarts: watch::Receiver<u32>,
    confirmed: Arc<watch::Sender<u64>>,
) -> Published {
    let mut out = Published {
        publisher: p,
        ..Published::default()
    };
    let mut i = 0;
    while i < PER_PUBLISHER {
        let restarts_seen = *restarts.borrow_and_update();
        let appended = bus
            .streams()
            .append("orders", order(p, i))
            .key(key(p, i))
            .timeout(APPEND_TIMEOUT)
            .await;
        match appended {
            Ok(offset) => {
                out.offsets.push(offset);
                confirmed.send_modify(|c| *c += 1);
                i += 1;
            }
            Err(Error::Bus(e)) => {
                let kind = e.kind();
                assert!(
                    matches!(
                        kind,
                        ErrorKind::PeerLost | ErrorKind::NoHandler | ErrorKind::Timeout
                    ),
                    "append {}: {e}",
                    key(p, i)
                );
                out.failed.push((i, kind));
                within(
                    "the host to be started again",
                    LOAD_BOUND,
                    restarts.wait_for(|r| *r > restarts_seen),
                )
                .await
                .expect("the test runs");
            }
            Err(e) => panic!("append {}: {e}", key(p, i)),
        }
    }
    out
}

/// Reads the whole stream from the start and checks it against what the publishers were
/// told: exactly [`TOTAL`] records at offsets `0..TOTAL`, one per key, each confirmed offset
/// holding its own order; then appends once more and gets the next offset. `recovered` is the
/// next offset of the restarted host before the retries: a retry answered below it was a
/// record written before the kill and found by its key. Returns a line of figures.
pub(crate) async fn check(bus: &Bus, published: &[Published], recovered: u64) -> String {
    // Where each key is in the stream, by publisher and sequence number.
    let mut found = vec![vec![None::<u64>; PER_PUBLISHER as usize]; PUBLISHERS as usize];
    let mut reader = bus
        .streams()
        .read::<Order>("orders")
        .from(From::Start)
        .batch(10_000);
    within("reading the stream", LOAD_BOUND, async {
        for expected in 0..TOTAL {
            let record = reader
                .next()
                .await
                .expect("the reader follows the tail")
                .unwrap_or_else(|e| panic!("reading offset {expected}: {e}"));
            assert_eq!(record.offset, expected, "a gap in the offsets");
            let Order {
                publisher,
                seq,
                key: body_key,
            } = &record.value;
            assert_eq!(*body_key, key(*publisher, *seq), "a body of its own");
            let slot = found
                .get_mut(*publisher as usize)
                .and_then(|f| f.get_mut(*seq as usize))
                .unwrap_or_else(|| panic!("offset {expected}: an order never sent: {body_key}"));
            assert!(
                slot.is_none(),
                "{body_key} twice: at {slot:?} and {expected}"
            );
            *slot = Some(expected);
        }
    })
    .await;
    drop(reader);

    let mut failed = 0;
    let mut retried_below = 0;
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for p in published {
        assert_eq!(p.offsets.len(), PER_PUBLISHER as usize);
        for (i, offset) in p.offsets.iter().enumerate() {
            let at = found[p.publisher as usize][i];
            assert_eq!(
                at,
                Some(*offset),
                "{} was confirmed at {offset}",
                key(p.publisher, i as u32)
            );
        }
        for (i, kind) in &p.failed {
            failed += 1;
            *kinds.entry(format!("{kind:?}")).or_default() += 1;
            if p.offsets[*i as usize] < recovered {
                retried_below += 1;
            }
        }
    }
    let info = within("info", BOUND, bus.streams().info("orders"))
        .await
        .unwrap();
    assert_eq!(
        (info.first_offset, info.next_offset, info.records),
        (0, TOTAL, TOTAL),
        "{info:?}"
    );
    // Appending goes on at the next offset.
    let next = within(
        "an append after the check",
        BOUND,
        bus.streams()
            .append("orders", order(PUBLISHERS, 0))
            .key("after"),
    )
    .await
    .unwrap();
    assert_eq!(next, TOTAL);
    format!(
        "{failed} appends failed ({kinds:?}) and were retried, {retried_below} of them \
         answered from before the kill by key, {} segments",
        info.segments
    )
}
