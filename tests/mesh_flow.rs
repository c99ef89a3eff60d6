//! Flow control across the mesh: load spreading, and a stalled subscriber that must not stall
//! its link.

mod mesh_util;

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use mesh_util::*;
use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;
use meshbus::{FullPolicy, SubscriptionOptions};

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "mesh.name", reply = String)]
struct Name;

#[derive(Serialize, Deserialize, Event)]
#[meshbus(name = "mesh.blob")]
struct Blob(u32);

#[tokio::test(start_paused = true)]
async fn commands_spread_over_idle_nodes_one_at_a_time_and_fifty_at_a_time() {
    let net = InMemNetwork::new(50);
    let names = ["h1", "h2", "h3", "h4", "h5"];
    let mut handlers = Vec::new();
    for name in names {
        handlers.push(
            node(&net, name)
                .command_handler(|_: Name, ctx: Context| async move {
                    // Some work, so that requests overlap when sent 50 at a time.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    Ok::<_, HandlerError>(ctx.bus().name().to_owned())
                })
                .start()
                .await
                .unwrap(),
        );
    }
    let a = node(&net, "a")
        .peers(names.iter().map(|n| format!("inmem://{n}")))
        .start()
        .await
        .unwrap();
    within(
        "five handlers",
        a.ready().handlers::<Name>(Scope::Cluster, 5),
    )
    .await;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..1_000 {
        *counts
            .entry(a.commands().send(Name).await.unwrap())
            .or_default() += 1;
    }
    assert_eq!(counts.len(), 5, "{counts:?}");
    for (name, n) in &counts {
        assert!((199..=201).contains(n), "{name} got {n}: {counts:?}");
    }

    // 50 at a time: the least busy node gets the next one, so none gets twice its share.
    let replies: Vec<String> = futures_util::stream::iter(0..1_000)
        .map(|_| async { a.commands().send(Name).await.unwrap() })
        .buffer_unordered(50)
        .collect()
        .await;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in replies {
        *counts.entry(r).or_default() += 1;
    }
    assert_eq!(counts.len(), 5, "{counts:?}");
    assert!(counts.values().all(|n| *n <= 400), "{counts:?}");
    a.shutdown().await.unwrap();
    for bus in &handlers {
        bus.shutdown().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_stalled_subscriber_neither_stalls_its_link_nor_looks_dead() {
    let net = InMemNetwork::new(51);
    let b = node(&net, "b")
        .command_handler(|_: Name, _ctx| async { Ok::<_, HandlerError>("b".to_owned()) })
        .start()
        .await
        .unwrap();
    // Never read: its queue of 8 fills and stays full.
    let _stalled = b
        .subscribe_with::<Blob>(
            SubscriptionOptions::new()
                .capacity(8)
                .when_full(FullPolicy::Wait),
        )
        .unwrap();
    let a = node(&net, "a").peers(["inmem://b"]).start().await.unwrap();
    within("b", a.ready().subscribers::<Blob>(Scope::Cluster, 1)).await;

    for i in 0..100 {
        a.events().publish(Blob(i)).await.unwrap();
    }
    // Replies still flow on the same link, and across several peer timeouts b stays a peer.
    for _ in 0..10 {
        assert_eq!(a.commands().send(Name).await.unwrap(), "b");
        tokio::time::sleep(PEER_TIMEOUT).await; // idle time for liveness to judge
    }
    assert!(a.membership().borrow().peer_named("b").is_some());
    // b's reader dropped what did not fit, and counted it.
    assert_eq!(b.stats().remote_events_dropped, 100 - 8);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_frame_that_never_completes_closes_its_link_within_the_peer_timeout() {
    let net = InMemNetwork::new(52);
    let b = node(&net, "b").start().await.unwrap();
    let a = node(&net, "a").peers(["inmem://b"]).start().await.unwrap();
    within("the link", a.ready().peers(1)).await;
    // The first bytes of a 32-byte frame, and never the rest.
    let t0 = tokio::time::Instant::now();
    assert_eq!(
        net.inject("a", "b", bytes::Bytes::from_static(&[0, 0, 0, 32, 0x30])),
        1
    );
    until_view(&b, |v| v.peers.is_empty()).await;
    let closed_after = t0.elapsed();
    assert!(
        closed_after <= PEER_TIMEOUT + Duration::from_millis(1),
        "{closed_after:?}"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
