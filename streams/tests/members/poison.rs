//! Poison records, in one process on an in-memory network: a record its handler always
//! fails (or its member never acks) is delivered `max_deliveries` times, then copied to the
//! dead-letter stream `orders-dlq` with its offset, delivery count and reason, and the
//! consumer moves on.

use std::time::Duration;

use futures_util::StreamExt;
use meshbus_core::{Bus, BusBuilder, HandlerError};
use meshbus_streams::{
    dead_letter, ConsumerConfig, DeliveryContext, From, RawRecord, StreamConfig, StreamsBuilderExt,
    StreamsExt,
};
use meshbus_transport_inmem::InMemNetwork;
use tokio::sync::mpsc;

use super::{within, Item, APPEND, BOUND};

/// The record every handler fails.
const POISON: u64 = 2;
/// Records appended: `0..RECORDS`.
const RECORDS: u64 = 5;

fn node(net: &InMemNetwork, name: &str) -> BusBuilder {
    Bus::builder()
        .name(name)
        .transport(net.transport(name))
        .listen(format!("inmem://{name}"))
}

/// The host of `orders` in `dir`, and `member` started on the same network.
async fn host_and(net: &InMemNetwork, dir: &std::path::Path, member: BusBuilder) -> (Bus, Bus) {
    let host = node(net, "host")
        .stream(StreamConfig::new("orders").event::<Item>().dir(dir))
        .start()
        .await
        .unwrap();
    let member = member.peers(["inmem://host"]).start().await.unwrap();
    within(
        "the host",
        BOUND,
        member
            .ready()
            .handlers_named(APPEND, meshbus_core::Scope::Network, 1),
    )
    .await;
    let offsets = host
        .streams()
        .append_all("orders", (0..RECORDS).map(|id| Item { id }))
        .await
        .unwrap();
    assert_eq!(offsets, (0..RECORDS).collect::<Vec<_>>());
    (host, member)
}

/// The first record of `orders-dlq`, waited for.
async fn first_dead_letter(bus: &Bus) -> RawRecord {
    let mut dlq = bus
        .streams()
        .read_raw(&meshbus_streams::dead_letter_stream("orders"))
        .from(From::Start);
    within("a dead letter", BOUND, dlq.next())
        .await
        .expect("the reader follows the tail")
        .expect("reading the dead-letter stream")
}

fn header<'a>(record: &'a RawRecord, name: &str) -> &'a str {
    let (_, value) = record
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no header {name}: {:?}", record.headers));
    std::str::from_utf8(value).expect("a text header")
}

/// Checks the dead letter of [`POISON`] after 3 deliveries, whose reason starts with `why`.
fn check_dead_letter(dead: &RawRecord, why: &str) {
    assert_eq!(dead.offset, 0, "the first dead letter");
    assert_eq!(dead.event, <Item as meshbus_core::Event>::NAME);
    let item: Item = rmp_serde::from_slice(&dead.body).expect("the body as sent");
    assert_eq!(item, Item { id: POISON });
    assert_eq!(header(dead, dead_letter::OFFSET), POISON.to_string());
    assert_eq!(header(dead, dead_letter::DELIVERIES), "3");
    assert_eq!(header(dead, dead_letter::STREAM), "orders");
    assert_eq!(header(dead, dead_letter::CONSUMER), super::CONSUMER);
    let reason = header(dead, dead_letter::REASON);
    assert!(reason.starts_with(why), "{reason}");
    assert!(reason.contains("delivered 3 times"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_always_fails_is_retried_then_dead_lettered() {
    let net = InMemNetwork::new(16);
    let dir = tempfile::tempdir().unwrap();
    let (calls, mut seen) = mpsc::unbounded_channel();
    let worker = node(&net, "worker").stream_handler(
        "orders",
        super::CONSUMER,
        ConsumerConfig::new().max_deliveries(3).ack_wait(BOUND),
        move |item: Item, ctx: DeliveryContext| {
            let calls = calls.clone();
            async move {
                let _ = calls.send((ctx.offset, ctx.deliveries, item.id));
                if item.id == POISON {
                    Err(HandlerError::msg("poison"))
                } else {
                    Ok(())
                }
            }
        },
    );
    let (host, worker) = host_and(&net, dir.path(), worker).await;

    // The dead letter is written once the poison record's third try failed.
    let dead = first_dead_letter(&host).await;
    check_dead_letter(&dead, "nak");

    // Each good record once; the poison one three times, counted 1, 2, 3.
    let mut handled = Vec::new();
    while let Ok(call) = seen.try_recv() {
        handled.push(call);
    }
    handled.sort_unstable();
    assert_eq!(
        handled,
        vec![
            (0, 1, 0),
            (1, 1, 1),
            (POISON, 1, POISON),
            (POISON, 2, POISON),
            (POISON, 3, POISON),
            (3, 1, 3),
            (4, 1, 4)
        ]
    );
    let info = within(
        "consumer info",
        BOUND,
        host.streams().consumer_info("orders", super::CONSUMER),
    )
    .await
    .unwrap();
    assert_eq!(
        (info.ack_floor, info.pending, info.acked, info.dead_lettered),
        (RECORDS, 0, RECORDS - 1, 1),
        "{info:?}"
    );
    assert_eq!((info.delivered, info.redelivered), (7, 2), "{info:?}");
    let dlq = within(
        "dead-letter stream info",
        BOUND,
        host.streams()
            .info(&meshbus_streams::dead_letter_stream("orders")),
    )
    .await
    .unwrap();
    assert_eq!(dlq.records, 1, "{dlq:?}");

    worker.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_never_acked_is_dead_lettered_after_its_last_ack_wait() {
    let net = InMemNetwork::new(17);
    let dir = tempfile::tempdir().unwrap();
    let (host, member) = host_and(&net, dir.path(), node(&net, "member")).await;
    let mut consumer = within(
        "joining",
        BOUND,
        member
            .streams()
            .consumer::<Item>("orders", super::CONSUMER)
            .ack_wait(Duration::from_millis(500))
            .max_deliveries(3)
            .batch(1),
    )
    .await
    .unwrap();
    // Every record but the poison one is acked; the poison one is left to time out, three
    // times. The member keeps pulling: the host gives up on a record when a pull finds its
    // last ack_wait over.
    let (events, mut seen) = mpsc::unbounded_channel();
    let pulling = tokio::spawn(async move {
        while let Some(message) = consumer.next().await {
            let message = message.expect("a delivery");
            if message.record.value.id == POISON {
                let _ = events.send(Err(message.deliveries));
            } else if message.ack().await.is_ok() {
                let _ = events.send(Ok(message.offset()));
            }
        }
    });
    let dead = first_dead_letter(&host).await;
    check_dead_letter(&dead, "ack_wait");
    // Each good record acked (a slow machine may have redelivered one: its ack counts
    // once), the poison one tried three times.
    let mut tries = Vec::new();
    let mut acked = std::collections::BTreeSet::new();
    while acked.len() < RECORDS as usize - 1 {
        match within("the acks", BOUND, seen.recv()).await {
            Some(Ok(offset)) => {
                acked.insert(offset);
            }
            Some(Err(n)) => tries.push(n),
            None => panic!("the member ended"),
        }
    }
    pulling.abort();
    while let Ok(Err(n)) = seen.try_recv() {
        tries.push(n);
    }
    assert_eq!(tries, [1, 2, 3]);
    let info = within(
        "consumer info",
        BOUND,
        host.streams().consumer_info("orders", super::CONSUMER),
    )
    .await
    .unwrap();
    assert_eq!(
        (info.ack_floor, info.pending, info.dead_lettered),
        (RECORDS, 0, 1),
        "{info:?}"
    );
    member.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
}

/// A record negatively acked at its last delivery must reach the dead-letter stream even if
/// no member pulls again before the host stops.
/// (It failed while `Consumers::ack` left the dead letter in memory for the next pull.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_nacked_at_its_last_delivery_is_dead_lettered_before_the_host_stops() {
    let dir = tempfile::tempdir().unwrap();
    let net = InMemNetwork::new(18);
    let (host, member) = host_and(&net, dir.path(), node(&net, "member")).await;
    let mut consumer = within(
        "joining",
        BOUND,
        member
            .streams()
            .consumer::<Item>("orders", super::CONSUMER)
            .ack_wait(BOUND)
            .max_deliveries(3)
            .batch(1),
    )
    .await
    .unwrap();
    // One record a pull: after the third nak nothing is pulled, nothing is in hand.
    let mut naks = 0;
    while naks < 3 {
        let message = within("a delivery", BOUND, consumer.next())
            .await
            .expect("a consumer does not end")
            .expect("a delivery");
        if message.record.value.id == POISON {
            message.nak(None).await.unwrap();
            naks += 1;
        } else {
            message.ack().await.unwrap();
        }
    }
    let info = host
        .streams()
        .consumer_info("orders", super::CONSUMER)
        .await
        .unwrap();
    assert_eq!(info.dead_lettered, 1, "{info:?}");
    drop(consumer);
    member.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
    drop((host, member));

    // The host again, on its directory; a member takes the rest.
    let net = InMemNetwork::new(19);
    let host = node(&net, "host")
        .stream(StreamConfig::new("orders").event::<Item>().dir(dir.path()))
        .start()
        .await
        .unwrap();
    let mut consumer = within(
        "joining again",
        BOUND,
        host.streams()
            .consumer::<Item>("orders", super::CONSUMER)
            .batch(1),
    )
    .await
    .unwrap();
    for _ in POISON + 1..RECORDS {
        let message = within("a delivery", BOUND, consumer.next())
            .await
            .expect("a consumer does not end")
            .expect("a delivery");
        message.ack().await.unwrap();
    }
    let info = host
        .streams()
        .consumer_info("orders", super::CONSUMER)
        .await
        .unwrap();
    assert_eq!(
        (info.ack_floor, info.dead_lettered),
        (RECORDS, 1),
        "{info:?}"
    );
    let dlq = host
        .streams()
        .info(&meshbus_streams::dead_letter_stream("orders"))
        .await
        .unwrap();
    assert_eq!(dlq.records, 1, "the dead letter was lost: {dlq:?}");
    drop(consumer);
    host.shutdown().await.unwrap();
}
