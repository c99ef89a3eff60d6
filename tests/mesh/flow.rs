//! Flow control across the mesh: load spreading, and a stalled subscriber that must not stall
//! its link.

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::time::Duration;

use crate::support::*;
use futures_util::StreamExt;
use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;
use meshbus::{FullPolicy, SubscriptionOptions};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "mesh.name", reply = String)]
struct Name;

#[derive(Serialize, Deserialize, Event)]
#[meshbus(name = "mesh.blob")]
struct Blob(u32);

/// Subscribed to with `DropNewest` where `Blob` is with `Wait`.
#[derive(Serialize, Deserialize, Event)]
#[meshbus(name = "mesh.tock")]
struct Tock(u32);

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
                    HandlerResult::Ok(ctx.bus().name().to_owned())
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

/// A subscriber that stops reading: its node grants the publisher no more room than its queue
/// has, so the publisher waits (nothing is dropped at the subscriber), while the link stays
/// healthy for everything else and the subscriber is never taken for dead.
#[tokio::test(start_paused = true)]
async fn a_stalled_subscriber_makes_its_publisher_wait_without_stalling_its_link() {
    let net = InMemNetwork::new(51);
    let b = node(&net, "b")
        .command_handler(|_: Name, _ctx| async { HandlerResult::Ok("b".to_owned()) })
        .start()
        .await
        .unwrap();
    // Not read for now: its queue of 8 fills.
    let mut stalled = b
        .subscribe_with::<Blob>(
            SubscriptionOptions::new()
                .capacity(8)
                .when_full(FullPolicy::Wait),
        )
        .unwrap();
    let a = node(&net, "a").peers(["inmem://b"]).start().await.unwrap();
    within("b", a.ready().subscribers::<Blob>(Scope::Cluster, 1)).await;

    // b granted room for 8: those go at once, the 9th waits for room, here until it gives up.
    for i in 0..8 {
        let publish = a.events().publish(Blob(i)).timeout(Duration::from_secs(1));
        within("room granted", publish.into_future()).await.unwrap();
    }
    let err = a
        .events()
        .publish(Blob(8))
        .timeout(Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    let flow = &a.peer_stats()[0].events;
    assert_eq!(flow.len(), 1, "{flow:?}");
    assert_eq!(
        (
            flow[0].event.as_str(),
            flow[0].sent,
            flow[0].waited,
            flow[0].credit
        ),
        ("mesh.blob", 8, 1, 0),
        "{flow:?}"
    );
    assert_eq!(flow[0].when_full, FullPolicy::Wait);
    // Replies still flow on the same link, and across several peer timeouts b stays a peer.
    for _ in 0..10 {
        assert_eq!(a.commands().send(Name).await.unwrap(), "b");
        tokio::time::sleep(PEER_TIMEOUT).await; // idle time for liveness to judge
    }
    assert!(a.membership().borrow().peer_named("b").is_some());
    // Nothing was dropped at b: its queue holds the 8.
    assert_eq!(b.stats().remote_events_dropped, 0);
    let subs = b.subscription_stats();
    assert_eq!(
        (subs[0].queued, subs[0].delivered, subs[0].dropped),
        (8, 8, 0)
    );

    // Read again: room comes back, and the publisher goes on where it stopped.
    for i in 0..8 {
        assert_eq!(within("a queued event", stalled.recv()).await.unwrap().0, i);
    }
    for i in 8..40 {
        within("room again", a.events().publish(Blob(i)).into_future())
            .await
            .unwrap();
        assert_eq!(within("the next event", stalled.recv()).await.unwrap().0, i);
    }
    assert_eq!(b.stats().remote_events_dropped, 0);
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

#[tokio::test(start_paused = true)]
async fn a_slow_link_makes_publishers_wait_or_drop_as_configured() {
    let net = InMemNetwork::new(54);
    net.set_link_capacity(8);
    let b = node(&net, "b").start().await.unwrap();
    let mut sub = b
        .subscribe_with::<Blob>(SubscriptionOptions::new().capacity(1_000))
        .unwrap();
    // What c publishes: b's subscription drops when full, so c drops on a full link too.
    let mut tocks = b
        .subscribe_with::<Tock>(
            SubscriptionOptions::new()
                .capacity(1_000)
                .when_full(FullPolicy::DropNewest),
        )
        .unwrap();
    let waits = node(&net, "a")
        .peers(["inmem://b"])
        .peer_queue_capacity(4)
        .start()
        .await
        .unwrap();
    // Room for 1,024 frames but only 256 bytes: the byte budget is what fills.
    let drops = node(&net, "c")
        .peers(["inmem://b"])
        .peer_queue_bytes(256)
        .start()
        .await
        .unwrap();
    within("b", waits.ready().subscribers::<Blob>(Scope::Cluster, 1)).await;
    within("b", drops.ready().subscribers::<Tock>(Scope::Cluster, 1)).await;
    net.set_delay("a", "b", Duration::from_millis(100));
    net.set_delay("c", "b", Duration::from_millis(100));

    // Dropping: every publish resolves at once; what did not fit is counted.
    let t0 = tokio::time::Instant::now();
    for i in 0..100 {
        drops.events().publish(Tock(i)).await.unwrap();
    }
    assert_eq!(t0.elapsed(), Duration::ZERO);
    let dropped = drops.stats().peer_events_dropped;
    // At most the link's 8 frames and 256 bytes of ~30-byte frames got through.
    assert!(dropped > 70, "{dropped}");
    // The application sees which peer is slow, and what it cost.
    assert_eq!(drops.stats().peer_events_queue_full, dropped);
    let slow = drops.peer_stats();
    assert_eq!(slow.len(), 1, "{slow:?}");
    assert_eq!(slow[0].node_id, b.node_id());
    assert_eq!(slow[0].name, "b");
    assert_eq!(slow[0].events_dropped, dropped);
    assert_eq!(slow[0].events_queue_full, dropped);
    // ... and which subscription: b's `Tock`, which drops rather than makes c wait.
    let tock = slow[0]
        .events
        .iter()
        .find(|e| e.event == "mesh.tock")
        .unwrap();
    assert_eq!(
        (tock.event.as_str(), tock.dropped, tock.waited),
        ("mesh.tock", dropped, 0)
    );
    assert_eq!(tock.when_full, FullPolicy::DropNewest);
    assert_eq!(slow[0].queue_bytes_limit, 256);
    assert!(
        slow[0].queued_bytes > 0 && slow[0].queued_bytes <= 256,
        "{slow:?}"
    );

    // Waiting: publishes wait for room on the slow link; nothing is dropped.
    let t0 = tokio::time::Instant::now();
    for i in 0..100 {
        waits.events().publish(Blob(i)).await.unwrap();
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(100),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(waits.stats().peer_events_dropped, 0);
    let waited = waits.stats().peer_events_queue_full;
    assert!(waited > 0, "the publisher waited for a full queue");
    let slow = waits.peer_stats();
    assert_eq!(slow.len(), 1, "{slow:?}");
    assert_eq!(slow[0].events_queue_full, waited);
    assert_eq!(slow[0].events_dropped, 0);

    // b got all of a's, in order, and c's minus the dropped ones; both links are alive.
    let mut from_a = Vec::new();
    while from_a.len() < 100 {
        from_a.push(within("an event", sub.recv()).await.unwrap().0);
    }
    assert_eq!(from_a, (0..100).collect::<Vec<_>>());
    for _ in 0..100 - dropped {
        within("a tock", tocks.recv()).await.unwrap();
    }
    assert_eq!(b.membership().borrow().peers.len(), 2);
    for bus in [&waits, &drops, &b] {
        bus.shutdown().await.unwrap();
    }
}

/// A publish that waits for room on a full lane and is given up takes neither a slot nor its
/// share of the byte budget with it: what was sent arrives, the budget comes back whole, and
/// later publishes go through.
#[tokio::test(start_paused = true)]
async fn a_publish_given_up_while_it_waits_for_room_takes_nothing_with_it() {
    let net = InMemNetwork::new(55);
    net.set_link_capacity(8);
    let b = node(&net, "b").start().await.unwrap();
    let mut sub = b
        .subscribe_with::<Blob>(SubscriptionOptions::new().capacity(1_000))
        .unwrap();
    let a = node(&net, "a")
        .peers(["inmem://b"])
        .peer_queue_capacity(4)
        .peer_queue_bytes(4096)
        .start()
        .await
        .unwrap();
    within("b", a.ready().subscribers::<Blob>(Scope::Cluster, 1)).await;
    net.set_delay("a", "b", Duration::from_millis(100));

    let (mut sent, mut given_up) = (0u32, 0u32);
    for i in 0..200 {
        let publish = a.events().publish(Blob(i)).into_future();
        match tokio::time::timeout(Duration::from_millis(1), publish).await {
            Ok(done) => {
                done.unwrap();
                sent += 1;
            }
            Err(_) => given_up += 1,
        }
    }
    assert!(
        given_up > 100 && sent > 8,
        "sent {sent}, given up {given_up}"
    );
    for _ in 0..sent {
        within("a sent event", sub.recv()).await.unwrap();
    }
    let stats = a.peer_stats();
    assert_eq!(stats[0].queued_bytes, 0, "{stats:?}");

    // The whole budget and every slot are there for the next ones.
    for i in 0..50 {
        within(
            "a later publish",
            a.events().publish(Blob(1_000 + i)).into_future(),
        )
        .await
        .unwrap();
    }
    for _ in 0..50 {
        assert!(within("a later event", sub.recv()).await.unwrap().0 >= 1_000);
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn only_an_idle_link_sends_pings() {
    let net = InMemNetwork::new(55);
    let b = node(&net, "b").start().await.unwrap();
    let _sub = b.subscribe::<Blob>().unwrap();
    let a = node(&net, "a").peers(["inmem://b"]).start().await.unwrap();
    within("b", a.ready().subscribers::<Blob>(Scope::Cluster, 1)).await;

    // Idle for 20 heartbeat intervals: a's Pings and its Pongs to b's (and gossip).
    let before = net.link_stats("a", "b").sent;
    tokio::time::sleep(HEARTBEAT * 20).await;
    let idle = net.link_stats("a", "b").sent - before;
    assert!((36..=44).contains(&idle), "{idle}");

    // Busy for as long, an event every half interval: a sends no Ping (b, idle, still does,
    // and a answers). Were a to ping anyway, some 20 more frames would go.
    let before = net.link_stats("a", "b").sent;
    for i in 0..40 {
        a.events().publish(Blob(i)).await.unwrap();
        tokio::time::sleep(HEARTBEAT / 2).await;
    }
    let busy = net.link_stats("a", "b").sent - before;
    assert!((40 + 18..=40 + 26).contains(&busy), "{busy}");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
