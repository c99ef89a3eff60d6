//! Review of issue 16 (helper V): failing tests that show bugs found in review.

use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use meshbus_core::Bus;
use meshbus_streams::{
    FsStorage, FsyncPolicy, Storage, StorageFile, StreamConfig, StreamsBuilderExt, StreamsExt,
};

use super::support::{placed, within, OrderPlaced};

/// Holds every fsync while closed.
#[derive(Debug, Default)]
struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn set(&self, closed: bool) {
        *self.closed.lock().unwrap() = closed;
        self.opened.notify_all();
    }

    fn pass(&self) {
        let mut closed = self.closed.lock().unwrap();
        while *closed {
            closed = self.opened.wait(closed).unwrap();
        }
    }
}

#[derive(Debug)]
struct Gated {
    inner: FsStorage,
    gate: Arc<Gate>,
}

#[derive(Debug)]
struct GatedFile {
    inner: Arc<dyn StorageFile>,
    gate: Arc<Gate>,
}

impl Storage for Gated {
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(GatedFile {
            inner: self.inner.open(name, create)?,
            gate: Arc::clone(&self.gate),
        }))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }
    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }
}

impl StorageFile for GatedFile {
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        self.inner.append(buf)
    }
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_at(pos, buf)
    }
    fn sync(&self) -> io::Result<()> {
        self.gate.pass();
        self.inner.sync()
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

/// A confirmed append whose caller gives up while the host is still writing it (a timeout
/// here; a lost connection aborts the host's handler the same way) is written all the same,
/// but its idempotency key is forgotten: the retry the docs recommend appends a second record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_the_caller_gave_up_gets_the_first_offset() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let storage = Gated {
        inner: FsStorage::new(dir.path()).unwrap(),
        gate: Arc::clone(&gate),
    };
    let host = Bus::builder()
        .stream(
            StreamConfig::new("orders")
                .event::<OrderPlaced>()
                .storage(Arc::new(storage))
                .fsync(FsyncPolicy::Always),
        )
        .start()
        .await
        .unwrap();
    gate.set(true);
    // The writer is held in its fsync: the caller gives up first.
    let first = host
        .streams()
        .append("orders", placed(1))
        .key("order-1")
        .timeout(Duration::from_millis(200))
        .await;
    assert!(first.is_err(), "the fsync is held: {first:?}");
    gate.set(false);
    // The retry with the same key, as `Streams::append` recommends.
    let retry = within(
        "the retry",
        host.streams().append("orders", placed(1)).key("order-1"),
    )
    .await
    .unwrap();
    let info = within("info", host.streams().info("orders")).await.unwrap();
    assert_eq!(
        (retry, info.records),
        (0, 1),
        "the key's first append was written, yet the retry got a second record"
    );
    host.shutdown().await.unwrap();
}

/// Shutdown handles every event already admitted to a subscription's queue (the core's
/// promise), but the host closes its log as soon as shutdown *begins* (`Bus::closing`): the
/// captures still queued then find no host and are dropped without a word.
#[tokio::test(flavor = "current_thread")]
async fn events_admitted_before_shutdown_are_all_captured() {
    const EVENTS: u64 = 600;
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let storage = Gated {
        inner: FsStorage::new(dir.path()).unwrap(),
        gate: Arc::clone(&gate),
    };
    let host = Bus::builder()
        .stream(
            StreamConfig::new("orders")
                .event::<OrderPlaced>()
                .storage(Arc::new(storage))
                .fsync(FsyncPolicy::Always),
        )
        .start()
        .await
        .unwrap();
    // Writes wait in their fsync: at most 512 captures are under way, the rest stay queued.
    gate.set(true);
    for id in 0..EVENTS {
        within("a publish", host.events().publish(placed(id)))
            .await
            .unwrap();
    }
    let watcher = host.clone();
    let shutdown = tokio::spawn(async move { host.shutdown().await });
    watcher.closing().await;
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
    gate.set(false);
    let _ = within("the shutdown", shutdown).await.unwrap();
    drop(watcher);
    let log = meshbus_streams::Log::open(dir.path(), meshbus_streams::LogConfig::new("orders"))
        .await
        .unwrap();
    let records = log.info().records;
    log.close().await.unwrap();
    assert_eq!(
        records, EVENTS,
        "events admitted before shutdown were not captured"
    );
}

/// A remote reader waiting at the tail holds its host's shutdown for the whole wait, even
/// after the reader is dropped: fetches are served with `serving`, not `waiting` (only
/// consumers' pulls end when their caller gives up or the bus shuts down).
#[tokio::test(flavor = "current_thread")]
async fn a_fetch_waiting_at_the_tail_does_not_hold_the_hosts_shutdown() {
    use futures_util::StreamExt;
    use meshbus_streams::From;

    let net = meshbus_transport_inmem::InMemNetwork::new(1601);
    let dir = tempfile::tempdir().unwrap();
    let host = super::support::node(&net, "host", &[])
        .shutdown_timeout(Duration::from_secs(2))
        .stream(super::support::orders(dir.path()))
        .start()
        .await
        .unwrap();
    let client = super::support::node(&net, "client", &["host"])
        .start()
        .await
        .unwrap();
    within(
        "the host",
        client
            .ready()
            .handlers_named("$streams.orders.append", meshbus_core::Scope::Network, 1),
    )
    .await;
    let mut reader = client
        .streams()
        .read::<OrderPlaced>("orders")
        .from(From::Tail)
        .wait(Duration::from_secs(60));
    // Starts the fetch task; it sends its command at its first poll.
    assert!(futures_util::poll!(reader.next()).is_pending());
    tokio::task::yield_now().await;
    // Behind the fetch on the same connection: once answered, the fetch is at the host.
    within("info", client.streams().info("orders"))
        .await
        .unwrap();
    drop(reader);
    let shut = within("the host's shutdown", host.shutdown()).await;
    assert!(
        shut.is_ok(),
        "a dropped reader's fetch held the host: {shut:?}"
    );
    client.shutdown().await.unwrap();
}

/// While a second host of a stream gives way, it still answers every confirmed publish of the
/// events the stream captures with its refusal: the publish fails although the serving host
/// appended the event (and a retry without a key appends it again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_gives_way_does_not_fail_confirmed_publishes() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let net = meshbus_transport_inmem::InMemNetwork::new(1602);
    let one = super::support::node(&net, "one", &[])
        .stream(super::support::orders(d1.path()))
        .start()
        .await
        .unwrap();
    let two = super::support::node(&net, "two", &["one"])
        .stream(super::support::orders(d2.path()))
        .start()
        .await
        .unwrap();
    for bus in [&one, &two] {
        within(
            "both hosts",
            bus.ready().handlers_named(
                "$streams.capture.orders.placed",
                meshbus_core::Scope::Network,
                2,
            ),
        )
        .await;
    }
    let winner = if one.node_id() < two.node_id() {
        &one
    } else {
        &two
    };
    // The loser learns of the winner on its first request.
    let _ = within("a request", two.streams().info("orders")).await;
    let _ = within("a request", one.streams().info("orders")).await;
    let published = within("the publish", winner.streams().publish(placed(1))).await;
    assert!(
        published.is_ok(),
        "the serving host appended it, yet: {published:?}"
    );
    two.shutdown().await.unwrap();
    one.shutdown().await.unwrap();
}

/// A stream handler's error travels with its nak as the dead letter's reason, cut at 1,024
/// bytes by `&r[..1024]`: a byte index, which panics inside a multi-byte character. The
/// host's ack handler panics, the nak is lost, and the record waits out `ack_wait` instead
/// of going to the dead-letter stream at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_non_ascii_handler_error_still_dead_letters_the_record() {
    use futures_util::StreamExt;
    use meshbus_core::HandlerError;
    use meshbus_streams::ConsumerConfig;

    #[derive(Debug)]
    struct Refused(String);
    impl std::fmt::Display for Refused {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for Refused {}

    let dir = tempfile::tempdir().unwrap();
    let config = ConsumerConfig::new()
        .max_deliveries(1)
        .ack_wait(Duration::from_secs(3600));
    let host = Bus::builder()
        .stream(super::support::orders(dir.path()))
        .stream_handler(
            "orders",
            "billing",
            config,
            |_: OrderPlaced, _ctx| async move {
                // "the handler failed: x" is 21 bytes; then 2-byte characters: byte 1024 is
                // inside one.
                Err::<(), HandlerError>(Refused(format!("x{}", "é".repeat(600))).into())
            },
        )
        .start()
        .await
        .unwrap();
    host.streams().append("orders", placed(1)).await.unwrap();
    let dead = within(
        "the dead letter (the nak was lost if this times out)",
        host.streams().read_raw("orders-dlq").next(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(dead.event, "orders.placed");
    host.shutdown().await.unwrap();
}
