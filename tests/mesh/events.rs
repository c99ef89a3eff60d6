//! Events across nodes of an in-memory mesh: exactly once, in publish order, by scope.

use std::time::Duration;

use crate::support::*;
use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event, Debug)]
#[meshbus(name = "mesh.tick")]
struct Tick(u32);

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "mesh.where", reply = String)]
struct Where;

/// Reads `n` events, then checks nothing more arrives.
async fn take(sub: &mut meshbus::Subscription<Tick>, n: usize) -> Vec<u32> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        got.push(within("an event", sub.recv()).await.unwrap().0);
    }
    assert!(
        tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .is_err(),
        "more events than published"
    );
    got
}

#[tokio::test(start_paused = true)]
async fn events_reach_every_subscribing_node_once_in_publish_order() {
    let net = InMemNetwork::new(10);
    let b = node(&net, "b").start().await.unwrap();
    let a = node(&net, "a").peers(["inmem://b"]).start().await.unwrap();
    let mut on_a = a.subscribe::<Tick>().unwrap();
    let mut on_b = b.subscribe::<Tick>().unwrap();
    within(
        "two subscribers",
        a.ready().subscribers::<Tick>(Scope::Cluster, 2),
    )
    .await;

    for i in 0..1_000 {
        a.events().publish(Tick(i)).await.unwrap();
    }
    let want: Vec<u32> = (0..1_000).collect();
    assert_eq!(take(&mut on_a, 1_000).await, want);
    assert_eq!(take(&mut on_b, 1_000).await, want);
    assert_eq!(b.stats().remote_events_dropped, 0);

    // Unsubscribing is an interest delta: b no longer gets them.
    drop(on_b);
    until_view(&a, |v| {
        v.peer_named("b").is_some_and(|p| p.events.is_empty())
    })
    .await;
    a.events().publish(Tick(7)).await.unwrap();
    assert_eq!(take(&mut on_a, 1).await, [7]);
    assert_eq!(
        net.link_stats("a", "b").sent,
        net.link_stats("a", "b").delivered
    );

    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// a: host-1/shop, b: host-1/billing, c: host-2/shop; a dials both.
#[tokio::test(start_paused = true)]
async fn scopes_pick_nodes_by_host_and_cluster() {
    let net = InMemNetwork::new(11);
    let answer = |name: &'static str| {
        move |_: Where, _ctx: Context| async move { HandlerResult::Ok(name.to_owned()) }
    };
    let b = node(&net, "b")
        .cluster("billing")
        .command_handler(answer("b"))
        .start()
        .await
        .unwrap();
    let c = node(&net, "c")
        .cluster("shop")
        .host_id("host-2")
        .command_handler(answer("c"))
        .start()
        .await
        .unwrap();
    let a = node(&net, "a")
        .cluster("shop")
        .peers(["inmem://b", "inmem://c"])
        .start()
        .await
        .unwrap();
    let mut subs: Vec<_> = [&a, &b, &c]
        .iter()
        .map(|bus| bus.subscribe::<Tick>().unwrap())
        .collect();
    within("the mesh", a.ready().subscribers::<Tick>(Scope::Network, 3)).await;
    within(
        "the handlers",
        a.ready().handlers::<Where>(Scope::Network, 2),
    )
    .await;

    // Commands: Machine is b (same host, other cluster), Cluster is c (same cluster, other host).
    assert_eq!(a.commands().machine().send(Where).await.unwrap(), "b");
    assert_eq!(a.commands().cluster().send(Where).await.unwrap(), "c");
    let mut network: Vec<String> = Vec::new();
    for _ in 0..4 {
        network.push(a.commands().network().send(Where).await.unwrap());
    }
    network.sort();
    assert_eq!(
        network,
        ["b", "b", "c", "c"],
        "round robin between idle nodes"
    );

    // Events: each scope reaches a, plus the nodes in it.
    a.events().machine().publish(Tick(1)).await.unwrap();
    a.events().cluster().publish(Tick(2)).await.unwrap();
    a.events().network().publish(Tick(3)).await.unwrap();
    a.events().local().publish(Tick(4)).await.unwrap();
    let [sa, sb, sc] = &mut subs[..] else {
        unreachable!()
    };
    assert_eq!(take(sa, 4).await, [1, 2, 3, 4]);
    assert_eq!(take(sb, 2).await, [1, 3]);
    assert_eq!(take(sc, 2).await, [2, 3]);

    for bus in [&a, &b, &c] {
        bus.shutdown().await.unwrap();
    }
}

/// Events with and without headers, interleaved in one burst: each keeps its own headers and
/// correlation id, every one has an id of its own, and all name their sender.
#[tokio::test(start_paused = true)]
async fn each_remote_event_keeps_its_own_headers_within_a_burst() {
    let net = InMemNetwork::new(12);
    let b = node(&net, "b").start().await.unwrap();
    let a = node(&net, "a").peers(["inmem://b"]).start().await.unwrap();
    let mut on_b = b.subscribe::<Tick>().unwrap();
    within(
        "b's subscription",
        a.ready().subscribers::<Tick>(Scope::Cluster, 1),
    )
    .await;

    // Published without awaiting in between, they are queued together and read as one burst.
    for i in 0..40u32 {
        let publish = a.events().publish(Tick(i));
        match i % 4 {
            1 => publish.header("tenant", format!("t{i}")).await.unwrap(),
            3 => publish.correlation_id(format!("c{i}")).await.unwrap(),
            _ => publish.await.unwrap(),
        }
    }
    let mut ids = std::collections::HashSet::new();
    for i in 0..40u32 {
        let (tick, ctx) = within("an event", on_b.recv_with_context()).await.unwrap();
        assert_eq!(tick.0, i);
        assert_eq!(ctx.sender(), a.node_id());
        let tenant = ctx.headers().get("tenant").map(str::to_owned);
        assert_eq!(tenant, (i % 4 == 1).then(|| format!("t{i}")), "event {i}");
        let correlation = ctx.correlation_id().map(str::to_owned);
        assert_eq!(
            correlation,
            (i % 4 == 3).then(|| format!("c{i}")),
            "event {i}"
        );
        assert!(ids.insert(ctx.message_id()), "event {i} repeats an id");
    }

    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
