//! Administration of a hosted stream: purge up to an offset, purge all, delete.

use futures_util::StreamExt;
use meshbus_streams::{Error, From, StreamsExt};
use meshbus_transport_inmem::InMemNetwork;

use crate::support::*;

#[tokio::test]
async fn purge_removes_below_an_offset_or_all_and_offsets_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let net = InMemNetwork::new(31);
    let (host, client) = host_and_client(&net, orders(dir.path())).await;
    let s = client.streams();
    s.append_all("orders", (0..100).map(placed)).await.unwrap();

    let purged = s.purge("orders", Some(40)).await.unwrap();
    assert_eq!((purged.removed, purged.first_offset), (40, 40));
    let info = s.info("orders").await.unwrap();
    assert_eq!(
        (info.first_offset, info.records, info.next_offset),
        (40, 60, 100)
    );
    let mut gone = s.read::<OrderPlaced>("orders").from(From::Offset(39));
    match within("the error", gone.next()).await.unwrap().unwrap_err() {
        Error::OffsetGone { earliest, .. } => assert_eq!(earliest, 40),
        other => panic!("{other}"),
    }
    let first = s
        .read::<OrderPlaced>("orders")
        .next()
        .await
        .unwrap()
        .unwrap();
    assert_eq!((first.offset, first.value.id), (40, 40));

    let purged = s.purge("orders", None).await.unwrap();
    assert_eq!((purged.removed, purged.first_offset), (60, 100));
    let info = s.info("orders").await.unwrap();
    assert_eq!((info.records, info.last_offset), (0, None));
    assert_eq!(s.append("orders", placed(100)).await.unwrap(), 100);
    client.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
}

#[tokio::test]
async fn delete_empties_the_stream_and_starts_again_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let net = InMemNetwork::new(32);
    let (host, client) = host_and_client(&net, orders(dir.path())).await;
    let s = client.streams();
    s.append_all("orders", (0..10).map(placed)).await.unwrap();
    assert_eq!(s.append("orders", placed(10)).key("k").await.unwrap(), 10);
    s.delete("orders").await.unwrap();
    let info = s.info("orders").await.unwrap();
    assert_eq!(
        (info.first_offset, info.next_offset, info.records),
        (0, 0, 0)
    );
    // Keys are forgotten with the records.
    assert_eq!(s.append("orders", placed(7)).key("k").await.unwrap(), 0);
    let only: Vec<u64> = s
        .read::<OrderPlaced>("orders")
        .take(1)
        .map(|r| r.unwrap().value.id)
        .collect()
        .await;
    assert_eq!(only, [7]);
    client.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
    // What is on disk is the new stream.
    let net = InMemNetwork::new(33);
    let (host, client) = host_and_client(&net, orders(dir.path())).await;
    assert_eq!(client.streams().info("orders").await.unwrap().records, 1);
    client.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
}
