//! Durable consumers in one process: acks move the cursor, members compete, unacked records
//! come back after `ack_wait`, `max_ack_pending` holds deliveries back, resets and info, the
//! cursor survives restarts of members and host, poison records are dead-lettered.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use meshbus_core::{HandlerError, Scope};
use meshbus_streams::{
    dead_letter, ConsumerConfig, Error, From, Message, StreamRecord, StreamsBuilderExt, StreamsExt,
};
use meshbus_transport_inmem::InMemNetwork;
use tokio::sync::mpsc;

use crate::support::*;

type Member = meshbus_streams::Consumer<StreamRecord<OrderPlaced>>;

/// Consumer `name` of `orders` once it has `n` acks, asking its host again until then.
async fn acked(bus: &meshbus_core::Bus, name: &str, n: u64) -> meshbus_streams::ConsumerInfo {
    within("the acks", async {
        loop {
            let info = bus.streams().consumer_info("orders", name).await.unwrap();
            if info.acked >= n {
                return info;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
}

/// The next message of `member`.
async fn next(member: &mut Member) -> Message<StreamRecord<OrderPlaced>> {
    within("a delivery", member.next()).await.unwrap().unwrap()
}

#[tokio::test]
async fn acks_move_the_cursor_and_a_new_member_resumes_there() {
    let dir = tempfile::tempdir().unwrap();
    let net = InMemNetwork::new(41);
    let (host, client) = host_and_client(&net, orders(dir.path())).await;
    let s = client.streams();
    s.append_all("orders", (0..100).map(placed)).await.unwrap();

    // Short enough for the test to wait it out, long enough for the acks of the first member.
    let ack_wait = Duration::from_secs(2);
    let mut member = s
        .consumer::<OrderPlaced>("orders", "billing")
        .ack_wait(ack_wait)
        .batch(10)
        .await
        .unwrap();
    for id in 0..65 {
        let m = next(&mut member).await;
        assert_eq!((m.offset(), m.record.value.id, m.deliveries), (id, id, 1));
        if id < 60 {
            m.ack().await.unwrap();
        }
    }
    // Records 60..70 are with this member (five handed out, five in its buffer), unacked.
    drop(member);
    let info = s.consumer_info("orders", "billing").await.unwrap();
    assert_eq!(info.acked, 60);
    assert_eq!(info.ack_floor, 60);
    assert_eq!(info.pending, 10);
    assert_eq!(info.position, 70);

    // Another member: the held records come back after ack_wait, the rest first.
    let mut member = s
        .consumer::<OrderPlaced>("orders", "billing")
        .ack_wait(ack_wait)
        .batch(10)
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 40 {
        let m = next(&mut member).await;
        seen.push((m.offset(), m.deliveries));
        m.ack().await.unwrap();
    }
    seen.sort_unstable();
    let offsets: Vec<u64> = seen.iter().map(|(o, _)| *o).collect();
    assert_eq!(
        offsets,
        (60..100).collect::<Vec<_>>(),
        "no acked record again"
    );
    // The held ten are the only redeliveries.
    for (offset, deliveries) in seen {
        let want = if offset < 70 { 2 } else { 1 };
        assert_eq!(deliveries, want, "offset {offset}");
    }
    let info = s.consumer_info("orders", "billing").await.unwrap();
    assert_eq!(
        (info.acked, info.pending, info.redelivered, info.lag),
        (100, 0, 10, 0)
    );
    client.shutdown().await.unwrap();
    host.shutdown().await.unwrap();

    // The host restarts: the cursor is where it was.
    let net = InMemNetwork::new(42);
    let (host, client) = host_and_client(&net, orders(dir.path())).await;
    let s = client.streams();
    s.append("orders", placed(100)).await.unwrap();
    let mut member = s
        .consumer::<OrderPlaced>("orders", "billing")
        .await
        .unwrap();
    let m = next(&mut member).await;
    assert_eq!((m.offset(), m.deliveries), (100, 1));
    m.ack().await.unwrap();
    assert_eq!(
        s.consumer_info("orders", "billing").await.unwrap().acked,
        101
    );
    client.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
}

#[tokio::test]
async fn members_of_one_consumer_compete_and_consumers_each_get_everything() {
    let dir = tempfile::tempdir().unwrap();
    let net = InMemNetwork::new(43);
    let host = host(&net, orders(dir.path())).await;
    let (tx, mut rx) = mpsc::unbounded_channel::<(&'static str, u64)>();
    let mut members = Vec::new();
    for (name, consumer) in [("m1", "billing"), ("m2", "billing"), ("m3", "audit")] {
        let tx = tx.clone();
        let bus = node(&net, name, &["host"])
            .stream_handler(
                "orders",
                consumer,
                ConsumerConfig::new(),
                move |e: OrderPlaced, _ctx| {
                    let _ = tx.send((name, e.id));
                    async { Ok::<_, HandlerError>(()) }
                },
            )
            .start()
            .await
            .unwrap();
        members.push(bus);
    }
    within(
        "the host",
        host.ready()
            .handlers_named("$streams.orders.append", Scope::Local, 1),
    )
    .await;
    host.streams()
        .append_all("orders", (0..400).map(placed))
        .await
        .unwrap();
    let (mut billing, mut audit) = (Vec::new(), Vec::new());
    while billing.len() < 400 || audit.len() < 400 {
        let (who, id) = within("a handled record", rx.recv()).await.unwrap();
        match who {
            "m3" => audit.push(id),
            _ => billing.push((who, id)),
        }
    }
    assert_eq!(
        audit,
        (0..400).collect::<Vec<_>>(),
        "a consumer alone gets all, in order"
    );
    let ids: BTreeSet<u64> = billing.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids.len(), 400, "each record once among the members");
    assert!(billing.iter().any(|(w, _)| *w == "m1") && billing.iter().any(|(w, _)| *w == "m2"));
    // A member acks after its handler returned: the acks may still be on their way.
    let info = acked(&host, "billing", 400).await;
    for bus in members {
        bus.shutdown().await.unwrap();
    }
    assert_eq!((info.acked, info.ack_floor), (400, 400));
    host.shutdown().await.unwrap();
}

#[tokio::test]
async fn max_ack_pending_holds_deliveries_back_until_acks_come() {
    let dir = tempfile::tempdir().unwrap();
    let net = InMemNetwork::new(44);
    let (host, client) = host_and_client(&net, orders(dir.path())).await;
    let s = client.streams();
    s.append_all("orders", (0..20).map(placed)).await.unwrap();
    let mut member = s
        .consumer::<OrderPlaced>("orders", "capped")
        .max_ack_pending(5)
        .batch(100)
        .wait(Duration::from_millis(100))
        .await
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(next(&mut member).await);
    }
    // Nothing more while five are pending: the pull comes back empty after its wait.
    let more = tokio::time::timeout(Duration::from_millis(400), member.next()).await;
    assert!(more.is_err(), "a sixth delivery with five pending");
    assert_eq!(
        s.consumer_info("orders", "capped").await.unwrap().pending,
        5
    );
    for m in held.drain(..2) {
        m.ack().await.unwrap();
    }
    let a = next(&mut member).await;
    let b = next(&mut member).await;
    assert_eq!((a.offset(), b.offset()), (5, 6));
    let more = tokio::time::timeout(Duration::from_millis(400), member.next()).await;
    assert!(more.is_err(), "only as many as were acked");
    client.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_reset_redelivers_from_there_and_bad_acks_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let net = InMemNetwork::new(45);
    let (host, client) = host_and_client(&net, orders(dir.path())).await;
    let s = client.streams();
    s.append_all("orders", (0..30).map(placed)).await.unwrap();
    let mut member = s.consumer::<OrderPlaced>("orders", "c").await.unwrap();
    for _ in 0..30 {
        next(&mut member).await.ack().await.unwrap();
    }
    let info = s
        .reset_consumer("orders", "c", From::Offset(12))
        .await
        .unwrap();
    assert_eq!((info.position, info.pending), (12, 0));
    let m = next(&mut member).await;
    assert_eq!((m.offset(), m.record.value.id), (12, 12));
    m.ack().await.unwrap();
    // Acked twice: no longer pending.
    let again = m.ack().await.unwrap_err();
    assert!(again.to_string().contains("not pending"), "{again}");
    // Unknown consumers and bad names.
    let err = s.consumer_info("orders", "nobody").await.unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    let err = s
        .consumer::<OrderPlaced>("orders", "a b")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert!(s.delete_consumer("orders", "c").await.unwrap());
    assert!(!s.delete_consumer("orders", "c").await.unwrap());
    client.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_poison_record_is_retried_then_dead_lettered_and_the_consumer_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let net = InMemNetwork::new(46);
    let host = host(&net, orders(dir.path())).await;
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, u32)>();
    let tries = Arc::new(tx);
    let member = node(&net, "member", &["host"])
        .stream_handler(
            "orders",
            "billing",
            ConsumerConfig::new().max_deliveries(3),
            move |e: OrderPlaced, ctx| {
                let _ = tries.send((e.id, ctx.deliveries));
                async move {
                    if e.id == 1 {
                        return Err(HandlerError::msg("poison"));
                    }
                    Ok(())
                }
            },
        )
        .start()
        .await
        .unwrap();
    host.streams()
        .append_all("orders", (0..3).map(placed))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 5 {
        seen.push(within("a try", rx.recv()).await.unwrap());
    }
    let poison: Vec<u32> = seen
        .iter()
        .filter(|(id, _)| *id == 1)
        .map(|(_, d)| *d)
        .collect();
    assert_eq!(poison, [1, 2, 3]);
    assert!(seen.contains(&(0, 1)) && seen.contains(&(2, 1)), "{seen:?}");

    let s = host.streams();
    let dead = within("the dead letter", s.read_raw("orders-dlq").next())
        .await
        .unwrap()
        .unwrap();
    let header = |k: &str| {
        dead.headers
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(header(dead_letter::OFFSET).as_deref(), Some("1"));
    assert_eq!(header(dead_letter::DELIVERIES).as_deref(), Some("3"));
    assert_eq!(header(dead_letter::CONSUMER).as_deref(), Some("billing"));
    let reason = header(dead_letter::REASON).unwrap();
    assert!(
        reason.starts_with("nak") && reason.contains("poison"),
        "{reason}"
    );
    assert_eq!(dead.event, "orders.placed");
    let value: OrderPlaced = meshbus_core::wire::body::decode_body(&dead.body).unwrap();
    assert_eq!(value.id, 1);
    member.shutdown().await.unwrap();
    let info = s.consumer_info("orders", "billing").await.unwrap();
    assert_eq!((info.dead_lettered, info.acked, info.ack_floor), (1, 2, 3));
    assert_eq!(s.info("orders-dlq").await.unwrap().records, 1);
    host.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_filtered_consumer_passes_over_other_events_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let net = InMemNetwork::new(47);
    let (host, client) = host_and_client(&net, orders(dir.path())).await;
    let s = client.streams();
    s.append_all("orders", (0..2_000).map(placed))
        .await
        .unwrap();
    s.append("orders", OrderCancelled { id: 7 }).await.unwrap();
    // Each pull waits up to a minute at the tail: passing over 2,000 records a batch at a
    // time must not wait between batches.
    let mut member = s
        .consumer::<OrderCancelled>("orders", "cancellations")
        .wait(Duration::from_secs(60))
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(20), member.next())
        .await
        .expect("the cancellation without waiting out the pulls")
        .unwrap()
        .unwrap();
    assert_eq!((m.offset(), m.record.value.id), (2_000, 7));
    m.ack().await.unwrap();
    let info = s.consumer_info("orders", "cancellations").await.unwrap();
    assert_eq!((info.ack_floor, info.acked), (2_001, 1));
    client.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_ack_wakes_a_member_waiting_for_room_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let net = InMemNetwork::new(48);
    let (host, client) = host_and_client(&net, orders(dir.path())).await;
    let s = client.streams();
    s.append_all("orders", (0..2).map(placed)).await.unwrap();
    // One pending at most, and pulls that wait a minute at the host.
    let mut member = s
        .consumer::<OrderPlaced>("orders", "one-at-a-time")
        .max_ack_pending(1)
        .wait(Duration::from_secs(60))
        .await
        .unwrap();
    let first = next(&mut member).await;
    assert_eq!(first.offset(), 0);
    // The member's next pull goes out first (one poll starts it; this test's runtime has one
    // thread, so the pull's task runs at the yield) and waits at the host for room...
    let mut second = Box::pin(member.next());
    assert!(futures_util::poll!(&mut second).is_pending());
    tokio::task::yield_now().await;
    // ... which the ack, sent after it on the same link, makes: it must wake the pull, well
    // before its minute is up.
    first.ack().await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(20), second)
        .await
        .expect("the waiting pull woken by the ack")
        .unwrap()
        .unwrap();
    assert_eq!(m.offset(), 1);
    m.ack().await.unwrap();
    let info = s.consumer_info("orders", "one-at-a-time").await.unwrap();
    assert_eq!((info.acked, info.ack_floor), (2, 2));
    client.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
}
