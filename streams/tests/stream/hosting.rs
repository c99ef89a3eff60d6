//! Appending to a hosted stream: confirmed appends and their offsets, idempotency keys,
//! captured publishes, info, restarts of the host, and what fails how.

use futures_util::StreamExt;
use meshbus_core::{Bus, ErrorKind, Scope};
use meshbus_streams::{Error, StreamConfig, StreamsBuilderExt, StreamsExt};
use meshbus_transport_inmem::InMemNetwork;

use crate::support::*;

#[tokio::test]
async fn confirmed_appends_get_dense_offsets_and_info_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let net = InMemNetwork::new(1);
    let (host, client) = host_and_client(&net, orders(dir.path())).await;

    for id in 0..10 {
        let offset = client.streams().append("orders", placed(id)).await.unwrap();
        assert_eq!(offset, id);
    }
    let offsets = client
        .streams()
        .append_all("orders", (10..50).map(placed))
        .await
        .unwrap();
    assert_eq!(offsets, (10..50).collect::<Vec<_>>());
    // The host appends to its own stream through the same API.
    assert_eq!(
        host.streams()
            .append("orders", OrderCancelled { id: 3 })
            .await
            .unwrap(),
        50
    );

    let info = client.streams().info("orders").await.unwrap();
    assert_eq!(info.name, "orders");
    assert_eq!(
        (info.first_offset, info.last_offset, info.next_offset),
        (0, Some(50), 51)
    );
    assert_eq!(info.records, 51);
    assert!(info.bytes > 0 && info.segments == 1, "{info:?}");
    assert_eq!(info.fsync, "interval 100 ms");
    client.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_retried_append_with_the_same_key_gets_the_first_offset() {
    let dir = tempfile::tempdir().unwrap();
    let net = InMemNetwork::new(2);
    let (host, client) = host_and_client(&net, orders(dir.path())).await;
    let s = client.streams();

    let first = s.append("orders", placed(1)).key("order-1").await.unwrap();
    let other = s.append("orders", placed(2)).key("order-2").await.unwrap();
    let again = s.append("orders", placed(1)).key("order-1").await.unwrap();
    assert_eq!((first, other, again), (0, 1, 0));
    // Concurrent retries of one key while the first is being written: one record.
    let tries = (0..8).map(|_| s.append("orders", placed(3)).key("order-3").into_future());
    let offsets = futures_util::future::join_all(tries).await;
    let offsets: Vec<u64> = offsets.into_iter().map(Result::unwrap).collect();
    assert!(offsets.iter().all(|o| *o == 2), "{offsets:?}");
    assert_eq!(s.info("orders").await.unwrap().records, 3);

    // The host restarts: the keys of its dedupe window are read back from the log.
    client.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
    drop((host, client));
    let net = InMemNetwork::new(3);
    let (host, client) = host_and_client(&net, orders(dir.path())).await;
    let s = client.streams();
    assert_eq!(
        s.append("orders", placed(2)).key("order-2").await.unwrap(),
        1
    );
    assert_eq!(
        s.append("orders", placed(4)).key("order-4").await.unwrap(),
        3
    );
    assert_eq!(s.info("orders").await.unwrap().records, 4);
    client.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
}

use std::future::IntoFuture;

#[tokio::test]
async fn plain_publishes_of_captured_events_are_appended() {
    let dir = tempfile::tempdir().unwrap();
    let net = InMemNetwork::new(4);
    let (host, client) = host_and_client(&net, orders(dir.path())).await;
    within(
        "the host's capture",
        client.ready().subscribers::<OrderPlaced>(Scope::Cluster, 1),
    )
    .await;
    for id in 0..20 {
        client.events().publish(placed(id)).await.unwrap();
    }
    client
        .events()
        .publish(OrderCancelled { id: 7 })
        .await
        .unwrap();
    // Best effort, in the order published by one publisher.
    let mut reader = client.streams().read::<OrderPlaced>("orders");
    for id in 0..20 {
        let record = within("a captured event", reader.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.value, placed(id));
        assert_eq!(record.offset, id);
    }
    let mut cancelled = client.streams().read::<OrderCancelled>("orders");
    let record = within("the cancel", cancelled.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((record.offset, record.value.id), (20, 7));
    client.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_host_restart_keeps_every_record_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    {
        let net = InMemNetwork::new(5);
        let (host, client) = host_and_client(&net, orders(dir.path())).await;
        let offsets = client
            .streams()
            .append_all("orders", (0..100).map(placed))
            .await
            .unwrap();
        assert_eq!(offsets.last(), Some(&99));
        client.shutdown().await.unwrap();
        host.shutdown().await.unwrap();
    }
    let net = InMemNetwork::new(6);
    let (host, client) = host_and_client(&net, orders(dir.path())).await;
    assert_eq!(
        client
            .streams()
            .append("orders", placed(100))
            .await
            .unwrap(),
        100
    );
    let all: Vec<_> = client
        .streams()
        .read::<OrderPlaced>("orders")
        .take(101)
        .map(|r| r.unwrap().value.id)
        .collect()
        .await;
    assert_eq!(all, (0..101).collect::<Vec<_>>());
    client.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
}

#[tokio::test]
async fn no_host_bad_names_and_bad_directories_fail_clearly() {
    let bus = Bus::builder().start().await.unwrap();
    let err = bus.streams().append("orders", placed(1)).await.unwrap_err();
    let Error::Bus(e) = &err else { panic!("{err}") };
    assert_eq!(e.kind(), ErrorKind::NoHandler);
    let err = bus.streams().info("no/such").await.unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    let err = bus.streams().info(&"x".repeat(1 << 20)).await.unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    bus.shutdown().await.unwrap();

    // A stream without a directory, or with a bad name, stops `start`.
    let err = Bus::builder()
        .stream(StreamConfig::new("orders"))
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("no directory"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let err = Bus::builder()
        .stream(StreamConfig::new("a b").dir(dir.path()))
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    // Names ending in `-dlq` are the dead-letter streams'.
    let err = Bus::builder()
        .stream(StreamConfig::new("orders-dlq").dir(dir.path()))
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("dead-letter"), "{err}");
    // A file where the directory should be.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = Bus::builder()
        .stream(StreamConfig::new("orders").dir(&file))
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("did not open"), "{err}");
}

#[tokio::test]
async fn absurd_requests_get_errors_and_the_host_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let net = InMemNetwork::new(7);
    let (host, client) = host_and_client(&net, orders(dir.path())).await;
    let s = client.streams();
    let too_many = s
        .append_all("orders", (0..10_001).map(placed))
        .await
        .unwrap_err();
    assert!(matches!(too_many, Error::Invalid { .. }), "{too_many}");
    let dollar = s
        .append("orders", placed(1))
        .header("$event", "fake")
        .await
        .unwrap_err();
    assert!(matches!(dollar, Error::Invalid { .. }), "{dollar}");
    let long_key = s
        .append("orders", placed(1))
        .key("k".repeat(2000))
        .await
        .unwrap_err();
    assert!(matches!(long_key, Error::Invalid { .. }), "{long_key}");
    // Past the end of the stream.
    let mut past = s
        .read::<OrderPlaced>("orders")
        .from(meshbus_streams::From::Offset(5));
    let err = within("past the end", past.next())
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("past the end"), "{err}");
    // Nothing was appended, and the host still serves.
    assert_eq!(s.append("orders", placed(9)).await.unwrap(), 0);
    client.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_second_host_of_a_stream_gives_way_with_a_clear_error() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let net = InMemNetwork::new(8);
    let one = node(&net, "one", &[])
        .stream(orders(d1.path()))
        .start()
        .await
        .unwrap();
    let two = node(&net, "two", &["one"])
        .stream(orders(d2.path()))
        .start()
        .await
        .unwrap();
    within(
        "both hosts",
        one.ready()
            .handlers_named("$streams.orders.append", Scope::Network, 2),
    )
    .await;
    within(
        "both hosts",
        two.ready()
            .handlers_named("$streams.orders.append", Scope::Network, 2),
    )
    .await;
    let (winner, loser) = if one.node_id() < two.node_id() {
        (&one, &two)
    } else {
        (&two, &one)
    };
    // Each node's own handler answers its own requests: the loser refuses, naming the winner.
    let err = loser
        .streams()
        .append("orders", placed(1))
        .await
        .unwrap_err();
    match &err {
        Error::Invalid { reason, .. } => {
            assert!(reason.contains(&winner.node_id().to_string()), "{reason}");
        }
        other => panic!("{other}"),
    }
    assert!(loser.streams().info("orders").await.is_err());
    assert_eq!(
        winner.streams().append("orders", placed(1)).await.unwrap(),
        0
    );
    two.shutdown().await.unwrap();
    one.shutdown().await.unwrap();
}
