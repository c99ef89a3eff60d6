//! Confirmed publishes: subscribers get the event once, and every host in scope whose stream
//! captures it has appended it (once) when the publish resolves.

use std::sync::Arc;

use futures_util::StreamExt;
use meshbus_core::{Context, ErrorKind, HandlerError, Scope};
use meshbus_streams::{Error, PublishExt, StreamConfig, StreamsBuilderExt, StreamsExt};
use meshbus_transport_inmem::InMemNetwork;
use tokio::sync::mpsc;

use crate::support::*;

#[tokio::test]
async fn a_confirmed_publish_reaches_subscribers_and_every_capturing_host_once() {
    let (dir1, dir2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let net = InMemNetwork::new(21);
    let orders_host = host(&net, orders(dir1.path())).await;
    let audit_host = node(&net, "audit", &["host"])
        .stream(
            StreamConfig::new("audit")
                .event::<OrderPlaced>()
                .dir(dir2.path()),
        )
        .start()
        .await
        .unwrap();
    let (tx, mut seen) = mpsc::unbounded_channel();
    let subscriber = node(&net, "sub", &["host", "audit"])
        .event_handler(move |e: Arc<OrderPlaced>, _ctx: Context| {
            let _ = tx.send(e.id);
            async { Ok::<_, HandlerError>(()) }
        })
        .start()
        .await
        .unwrap();
    let client = node(&net, "client", &["host", "audit", "sub"])
        .start()
        .await
        .unwrap();
    within(
        "two capturing hosts and a subscriber",
        client.ready().subscribers::<OrderPlaced>(Scope::Network, 3),
    )
    .await;
    within(
        "two capture handlers",
        client
            .ready()
            .handlers_named("$streams.capture.orders.placed", Scope::Network, 2),
    )
    .await;

    for id in 0..5 {
        let mut got = client.streams().publish(placed(id)).await.unwrap();
        got.sort_by(|a, b| a.stream.cmp(&b.stream));
        let streams: Vec<(&str, u64)> = got.iter().map(|c| (c.stream.as_str(), c.offset)).collect();
        assert_eq!(streams, [("audit", id), ("orders", id)]);
        assert_eq!(got[0].node, audit_host.node_id());
        assert_eq!(got[1].node, orders_host.node_id());
    }
    // The same through the publish's own builder, with its key.
    let got = client
        .events()
        .scope(Scope::Network)
        .publish(placed(5))
        .header(meshbus_core::Headers::IDEMPOTENCY_KEY, "order-5")
        .confirmed()
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|c| c.offset == 5), "{got:?}");
    let again = client
        .events()
        .scope(Scope::Network)
        .publish(placed(5))
        .header(meshbus_core::Headers::IDEMPOTENCY_KEY, "order-5")
        .confirmed()
        .await
        .unwrap();
    assert!(
        again.iter().all(|c| c.offset == 5),
        "the key made it one record: {again:?}"
    );
    for id in [0, 1, 2, 3, 4, 5, 5] {
        assert_eq!(within("the subscriber's copy", seen.recv()).await, Some(id));
    }
    // Each host has each event once: the plain copy its capture got was passed over.
    let s = client.streams();
    for stream in ["orders", "audit"] {
        assert_eq!(s.info(stream).await.unwrap().records, 6, "{stream}");
        let ids: Vec<u64> = s
            .read::<OrderPlaced>(stream)
            .take(6)
            .map(|r| r.unwrap().value.id)
            .collect()
            .await;
        assert_eq!(ids, (0..6).collect::<Vec<_>>());
    }
    // A plain publish is still captured, best effort.
    client.events().publish(placed(6)).await.unwrap();
    let mut tail = s
        .read::<OrderPlaced>("orders")
        .from(meshbus_streams::From::Offset(6));
    assert_eq!(
        within("the plain copy", tail.next())
            .await
            .unwrap()
            .unwrap()
            .value
            .id,
        6
    );

    // No stream captures this event: the publish reaches its subscribers, then fails.
    let err = client.streams().publish(OrderCancelled { id: 1 }).await;
    // `orders` captures cancellations too, so this one is confirmed; from a scope that
    // excludes every host, nothing captures it.
    assert_eq!(err.unwrap().len(), 1);
    let err = client
        .streams()
        .scope(Scope::Local)
        .publish(placed(9))
        .await
        .unwrap_err();
    match err {
        Error::Bus(e) => assert_eq!(e.kind(), ErrorKind::NoHandler),
        other => panic!("{other}"),
    }
    for bus in [client, subscriber, audit_host, orders_host] {
        bus.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn two_streams_of_one_node_cannot_capture_one_event() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let err = meshbus_core::Bus::builder()
        .stream(
            StreamConfig::new("one")
                .event::<OrderPlaced>()
                .dir(a.path()),
        )
        .stream(
            StreamConfig::new("two")
                .event::<OrderPlaced>()
                .dir(b.path()),
        )
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.to_string().contains("$streams.capture.orders.placed"),
        "{err}"
    );
}
