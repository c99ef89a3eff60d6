//! A host whose disk fills up or holds damage: the request at fault gets a clear error, what
//! was confirmed stays, and the host keeps serving.

use std::sync::Arc;

use futures_util::StreamExt;
use meshbus_streams::{Error, FaultStorage, From, LogConfig, Storage, StreamConfig, StreamsExt};
use meshbus_transport_inmem::InMemNetwork;

use crate::support::*;

/// The stream `orders` on `fault`, with small segments.
fn on(fault: &Arc<FaultStorage>) -> StreamConfig {
    let storage: Arc<dyn Storage> = Arc::clone(fault) as Arc<dyn Storage>;
    StreamConfig::new("orders")
        .event::<OrderPlaced>()
        .storage(storage)
        .log(LogConfig::new("x").segment_bytes(2048))
}

#[tokio::test]
async fn a_full_disk_fails_appends_cleanly_and_they_work_again_with_room() {
    let fault = Arc::new(FaultStorage::new());
    let net = InMemNetwork::new(51);
    let (host, client) = host_and_client(&net, on(&fault)).await;
    let s = client.streams();
    s.append_all("orders", (0..50).map(placed)).await.unwrap();

    fault.set_space(Some(fault.total_bytes()));
    let err = s.append("orders", placed(50)).await.unwrap_err();
    assert!(matches!(err, Error::DiskFull { .. }), "{err}");
    let err = s
        .append_all("orders", (50..60).map(placed))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DiskFull { .. }), "{err}");
    // Reads and info go on; nothing confirmed was harmed and no offset was taken.
    assert_eq!(s.info("orders").await.unwrap().next_offset, 50);
    let ids: Vec<u64> = s
        .read::<OrderPlaced>("orders")
        .take(50)
        .map(|r| r.unwrap().value.id)
        .collect()
        .await;
    assert_eq!(ids, (0..50).collect::<Vec<_>>());

    fault.set_space(None);
    assert_eq!(s.append("orders", placed(50)).await.unwrap(), 50);
    client.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
}

#[tokio::test]
async fn damage_is_an_error_naming_the_offset_and_other_offsets_still_serve() {
    let fault = Arc::new(FaultStorage::new());
    let net = InMemNetwork::new(52);
    let (host, client) = host_and_client(&net, on(&fault)).await;
    let s = client.streams();
    for chunk in 0..20 {
        s.append_all("orders", (chunk * 10..chunk * 10 + 10).map(placed))
            .await
            .unwrap();
    }
    // Damage the first (sealed) segment past its header.
    let first = "00000000000000000000.log";
    assert!(fault.file_len(first).unwrap() > 100);
    assert!(fault.flip(first, 60, 0xff));

    let mut broken = s.read::<OrderPlaced>("orders").from(From::Start);
    match within("the error", broken.next()).await.unwrap() {
        Err(Error::Corrupt { stream, offset }) => {
            assert_eq!(stream, "orders");
            assert_eq!(offset, 0);
        }
        other => panic!("{:?}", other.map(|r| r.offset)),
    }
    // Offsets in later segments, info and appends are served.
    let info = s.info("orders").await.unwrap();
    assert!(info.segments > 2, "{info:?}");
    let mut later = s.read::<OrderPlaced>("orders").from(From::Offset(190));
    let r = within("a later record", later.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.offset, r.value.id), (190, 190));
    assert_eq!(s.append("orders", placed(200)).await.unwrap(), 200);
    client.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
}
