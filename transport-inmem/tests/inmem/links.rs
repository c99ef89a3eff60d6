use bytes::Bytes;
use futures_util::FutureExt;
use meshbus_core::{ErrorKind, ReadEvent, Transport};
use meshbus_transport_inmem::InMemNetwork;

use crate::util::*;

#[tokio::test]
async fn frames_round_trip_both_ways_and_addresses_are_reported() {
    let net = InMemNetwork::new(1);
    let mut l = listen(&net, "b").await;
    assert_eq!(l.local_addr().as_str(), "inmem://b");
    let (mut a, mut b) = connect(&net, "a", &mut l).await;
    assert_eq!(a.remote.as_str(), "inmem://b");
    assert_eq!(b.remote.as_str(), "inmem://a");

    send(&mut a, [1, 2, 3]).await;
    send(&mut b, [4]).await;
    assert_eq!(ready_ids(&mut b), [1, 2, 3]);
    assert_eq!(ready_ids(&mut a), [4]);
    // The frame comes out byte for byte as written.
    send(&mut a, [9]).await;
    assert_eq!(
        b.reader.read(LIMIT).await.unwrap(),
        ReadEvent::Frame(frame(9))
    );
}

#[tokio::test]
async fn batches_keep_their_order() {
    let net = InMemNetwork::new(1);
    let (mut a, mut b) = pair(&net, "a", "b").await;
    send(&mut a, 0..40).await;
    send(&mut a, 40..50).await;
    assert_eq!(ready_ids(&mut b), (0..50).collect::<Vec<_>>());
    let stats = net.link_stats("a", "b");
    assert_eq!((stats.sent, stats.delivered, stats.dropped), (50, 50, 0));
    assert_eq!(net.link_stats("b", "a").sent, 0);
}

#[tokio::test]
async fn a_reader_that_does_not_read_makes_the_writer_wait_and_nothing_is_lost() {
    let net = InMemNetwork::new(1);
    net.set_link_capacity(4);
    let (mut a, mut b) = pair(&net, "a", "b").await;
    let mut batch = frames(0..10);
    assert!(a.writer.write_batch(&mut batch).now_or_never().is_none());
    // Cancelled after 4: those are gone from the batch, the rest wait.
    assert_eq!(batch.len(), 6);
    assert_eq!(ready_ids(&mut b), [0, 1, 2, 3]);
    assert!(a.writer.write_batch(&mut batch).now_or_never().is_none());
    assert_eq!(batch.len(), 2);
    assert_eq!(ready_ids(&mut b), [4, 5, 6, 7]);
    a.writer.write_batch(&mut batch).await.unwrap();
    assert!(batch.is_empty());
    assert_eq!(ready_ids(&mut b), [8, 9]);
}

#[tokio::test]
async fn a_cancelled_read_or_accept_loses_nothing() {
    let net = InMemNetwork::new(1);
    let mut l = listen(&net, "b").await;
    assert!(l.accept().now_or_never().is_none());
    let mut a = net.transport("a").dial(l.local_addr()).await.unwrap();
    let mut b = l.accept().await.unwrap();
    assert!(b.reader.read(LIMIT).now_or_never().is_none());
    send(&mut a, [5]).await;
    assert_eq!(read_id(&mut b).await, 5);
}

#[tokio::test]
async fn dialling_nobody_is_an_io_error_and_other_schemes_are_config_errors() {
    let net = InMemNetwork::new(1);
    let t = net.transport("a");
    let err = t
        .dial(&"inmem://nobody".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(err.to_string().contains("refused"), "{err}");
    let err = t
        .dial(&"tcp://127.0.0.1:1".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(t.schemes(), ["inmem"]);
}

#[tokio::test]
async fn a_dropped_listener_frees_its_name() {
    let net = InMemNetwork::new(1);
    let addr = "inmem://svc".parse().unwrap();
    let l = net.transport("b").listen(&addr).await.unwrap();
    let err = net.transport("c").listen(&addr).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(err.to_string().contains("in use"), "{err}");
    drop(l);
    let err = net.transport("a").dial(&addr).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    let mut l = net.transport("c").listen(&addr).await.unwrap();
    net.transport("a").dial(&addr).await.unwrap();
    l.accept().await.unwrap();
}

#[tokio::test]
async fn dropping_one_end_closes_the_other() {
    let net = InMemNetwork::new(1);
    let (a, mut b) = pair(&net, "a", "b").await;
    drop(a);
    assert_eq!(b.reader.read(LIMIT).await.unwrap(), ReadEvent::Closed);
    let err = b.writer.write_batch(&mut frames([1])).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
}

#[tokio::test]
async fn close_delivers_what_was_written_then_closed() {
    let net = InMemNetwork::new(1);
    let (mut a, mut b) = pair(&net, "a", "b").await;
    send(&mut a, [1, 2]).await;
    a.writer.close().await.unwrap();
    assert_eq!(read_id(&mut b).await, 1);
    assert_eq!(read_id(&mut b).await, 2);
    assert_eq!(b.reader.read(LIMIT).await.unwrap(), ReadEvent::Closed);
    let err = a.writer.write_batch(&mut frames([3])).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    // The other direction still works (a half close).
    send(&mut b, [4]).await;
    assert_eq!(read_id(&mut a).await, 4);
}

#[tokio::test]
async fn injected_bytes_are_read_as_a_byte_stream() {
    let net = InMemNetwork::new(1);
    let (mut a, mut b) = pair(&net, "a", "b").await;
    let (f1, f2) = (frame(1), frame(2));

    // Two frames in one push, then one frame in two pushes.
    assert_eq!(
        net.inject("a", "b", [f1.clone(), f2.clone()].concat().into()),
        1
    );
    assert_eq!(ready_ids(&mut b), [1, 2]);
    net.inject("a", "b", f1.slice(..7));
    assert_eq!(b.reader.read(LIMIT).await.unwrap(), ReadEvent::Partial);
    assert!(b.reader.read(LIMIT).now_or_never().is_none());
    net.inject("a", "b", f1.slice(7..));
    assert_eq!(b.reader.read(LIMIT).await.unwrap(), ReadEvent::Frame(f1));

    // Nothing flows the other way, and a length over the limit is refused.
    assert_eq!(net.inject("c", "b", Bytes::from_static(b"x")), 0);
    net.inject("b", "a", Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]));
    assert_eq!(
        a.reader.read(LIMIT).await.unwrap_err().kind(),
        ErrorKind::TooLarge
    );
    // A frame under the limit but over the reader's own (handshake) limit.
    send(&mut a, [3]).await;
    assert_eq!(
        b.reader.read(5).await.unwrap_err().kind(),
        ErrorKind::TooLarge
    );
}
