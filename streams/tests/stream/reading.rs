//! Reading a hosted stream: replay from the start, an offset or a time, following the tail,
//! filters, raw records, and offsets that retention removed.

use std::time::Duration;

use futures_util::StreamExt;
use meshbus_streams::{Error, From, LogConfig, Retention, StreamsExt};
use meshbus_transport_inmem::InMemNetwork;

use crate::support::*;

/// Milliseconds since the Unix epoch, as a host stamps records.
fn now_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    u64::try_from(since.as_millis()).unwrap()
}

/// The next `n` ids a reader yields.
async fn ids<S>(reader: &mut S, n: usize) -> Vec<u64>
where
    S: futures_util::Stream<Item = Result<meshbus_streams::StreamRecord<OrderPlaced>, Error>>
        + Unpin,
{
    let mut out = Vec::new();
    while out.len() < n {
        let record = within("a record", reader.next()).await.unwrap().unwrap();
        assert_eq!(record.offset, record.value.id, "offsets follow the appends");
        out.push(record.value.id);
    }
    out
}

#[tokio::test]
async fn replay_from_start_offset_and_time_gives_exact_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let net = InMemNetwork::new(11);
    let (host, client) = host_and_client(&net, orders(dir.path())).await;
    let s = client.streams();
    s.append_all("orders", (0..300).map(placed)).await.unwrap();

    // Small batches: several fetches, one ahead of the other.
    let mut all = s.read::<OrderPlaced>("orders").batch(7);
    assert_eq!(ids(&mut all, 300).await, (0..300).collect::<Vec<_>>());

    let mut mid = s.read::<OrderPlaced>("orders").from(From::Offset(123));
    assert_eq!(ids(&mut mid, 177).await, (123..300).collect::<Vec<_>>());

    // From a time: the first record stamped at or after it.
    let stamped: Vec<(u64, u64)> = s
        .read_raw("orders")
        .take(300)
        .map(|r| {
            let r = r.unwrap();
            (r.offset, r.timestamp)
        })
        .collect()
        .await;
    let later: Vec<(u64, u64)> = {
        // The next appends are stamped later than every earlier one: the host (this process)
        // stamps by the clock, so wait for the clock to pass the last stamp.
        let last = stamped.iter().map(|(_, ts)| *ts).max().unwrap();
        within("the clock to pass the last stamp", async {
            while now_ms() <= last {
                tokio::task::yield_now().await;
            }
        })
        .await;
        s.append_all("orders", (300..310).map(placed))
            .await
            .unwrap();
        s.read_raw("orders")
            .from(From::Offset(300))
            .take(10)
            .map(|r| {
                let r = r.unwrap();
                (r.offset, r.timestamp)
            })
            .collect()
            .await
    };
    let t = later[0].1;
    let first_at_t = stamped
        .iter()
        .chain(&later)
        .find(|(_, ts)| *ts >= t)
        .unwrap()
        .0;
    let mut timed = s.read::<OrderPlaced>("orders").from(From::Time(t));
    let got = ids(&mut timed, (310 - first_at_t) as usize).await;
    assert_eq!(got, (first_at_t..310).collect::<Vec<_>>());
    client.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_reader_catches_up_then_follows_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let net = InMemNetwork::new(12);
    let (host, client) = host_and_client(&net, orders(dir.path())).await;
    let s = client.streams();
    s.append_all("orders", (0..50).map(placed)).await.unwrap();

    let mut from_start = s
        .read::<OrderPlaced>("orders")
        .wait(Duration::from_millis(200));
    assert_eq!(ids(&mut from_start, 50).await, (0..50).collect::<Vec<_>>());
    let mut tail = s
        .read::<OrderPlaced>("orders")
        .from(From::Tail)
        .wait(Duration::from_millis(200));
    // The tail reader sees nothing of what was there; appends made while both wait reach
    // both, in order. Which append the tail reader starts at depends on when its first
    // fetch reached the host, so keep appending until it sees one.
    let mut next = 50;
    let first = loop {
        s.append("orders", placed(next)).await.unwrap();
        next += 1;
        let got = tokio::time::timeout(Duration::from_millis(50), tail.next()).await;
        if let Ok(Some(record)) = got {
            break record.unwrap().value.id;
        }
        assert!(next < 1_000, "the tail reader never saw an append");
    };
    assert!(first >= 50);
    s.append_all("orders", (next..next + 20).map(placed))
        .await
        .unwrap();
    let end = next + 20;
    assert_eq!(
        ids(&mut tail, (end - first - 1) as usize).await,
        (first + 1..end).collect::<Vec<_>>()
    );
    assert_eq!(
        ids(&mut from_start, (end - 50) as usize).await,
        (50..end).collect::<Vec<_>>()
    );
    client.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
}

#[tokio::test]
async fn readers_filter_by_event_and_raw_readers_see_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let net = InMemNetwork::new(13);
    let (host, client) = host_and_client(&net, orders(dir.path())).await;
    let s = client.streams();
    for id in 0..30 {
        if id % 3 == 0 {
            s.append("orders", OrderCancelled { id }).await.unwrap();
        } else {
            s.append("orders", placed(id)).await.unwrap();
        }
    }
    let cancelled: Vec<(u64, u64)> = s
        .read::<OrderCancelled>("orders")
        .batch(4)
        .take(10)
        .map(|r| {
            let r = r.unwrap();
            (r.offset, r.value.id)
        })
        .collect()
        .await;
    assert_eq!(
        cancelled,
        (0..30).step_by(3).map(|i| (i, i)).collect::<Vec<_>>()
    );
    let raw: Vec<(u64, String)> = s
        .read_raw("orders")
        .take(30)
        .map(|r| {
            let r = r.unwrap();
            (r.offset, r.event)
        })
        .collect()
        .await;
    for (offset, event) in raw {
        let want = if offset % 3 == 0 {
            "orders.cancelled"
        } else {
            "orders.placed"
        };
        assert_eq!(event, want);
    }
    client.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_offset_retention_removed_is_an_error_naming_the_earliest() {
    let dir = tempfile::tempdir().unwrap();
    let net = InMemNetwork::new(14);
    let config = orders(dir.path()).log(LogConfig::new("x").segment_bytes(4096).retention(
        Retention {
            max_records: Some(100),
            ..Retention::default()
        },
    ));
    let (host, client) = host_and_client(&net, config).await;
    let s = client.streams();
    for chunk in 0..10 {
        s.append_all("orders", (chunk * 50..chunk * 50 + 50).map(placed))
            .await
            .unwrap();
    }
    let info = s.info("orders").await.unwrap();
    assert!(info.first_offset > 0, "{info:?}");
    assert!(info.records < 500, "{info:?}");
    let mut gone = s.read::<OrderPlaced>("orders").from(From::Offset(0));
    let err = within("the error", gone.next()).await.unwrap().unwrap_err();
    match err {
        Error::OffsetGone {
            requested,
            earliest,
            ..
        } => assert_eq!((requested, earliest), (0, info.first_offset)),
        other => panic!("{other}"),
    }
    assert!(
        within("the end", gone.next()).await.is_none(),
        "a reader ends after an error"
    );
    // From the start is from the earliest held.
    let mut start = s.read::<OrderPlaced>("orders");
    let first = within("a record", start.next()).await.unwrap().unwrap();
    assert_eq!(first.offset, info.first_offset);
    client.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
}

#[tokio::test]
async fn large_bodies_are_stored_compressed_and_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let net = InMemNetwork::new(15);
    let (host, client) = host_and_client(&net, orders(dir.path())).await;
    let s = client.streams();
    let big = OrderPlaced {
        id: 1,
        item: "a long and repetitive description ".repeat(4_000),
    };
    s.append("orders", big.clone()).await.unwrap();
    s.append("orders", placed(2)).await.unwrap();
    // About 136 KB of body; LZ4 makes it a few hundred bytes on disk.
    let info = s.info("orders").await.unwrap();
    assert!(info.bytes < 16 * 1024, "{info:?}");
    let mut reader = s.read::<OrderPlaced>("orders");
    assert_eq!(
        within("the big one", reader.next())
            .await
            .unwrap()
            .unwrap()
            .value,
        big
    );
    assert_eq!(
        within("the small one", reader.next())
            .await
            .unwrap()
            .unwrap()
            .value
            .id,
        2
    );
    // A raw reader gets the body as appended (MessagePack), not compressed.
    let raw = within("raw", s.read_raw("orders").next())
        .await
        .unwrap()
        .unwrap();
    let decoded: OrderPlaced = meshbus_core::wire::body::decode_body(&raw.body).unwrap();
    assert_eq!(decoded, big);
    // A consumer member gets it whole too.
    let mut member = s.consumer::<OrderPlaced>("orders", "c").await.unwrap();
    let m = within("a delivery", member.next()).await.unwrap().unwrap();
    assert_eq!(m.record.value, big);
    client.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
}
