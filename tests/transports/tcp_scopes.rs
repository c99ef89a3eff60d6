//! The TCP transport under the bus: a node listening on every interface, a fast reader. (The
//! scope matrix over TCP, IPv6 and Unix sockets is in `scopes.rs`.) Real time, so every wait
//! is bounded and waits for an event of the mesh (membership, a reply, a marker event), never
//! a sleep.

#![cfg(feature = "tcp")]

use crate::support::tcp::tcp_node;
use crate::support::{bounded, within};
use meshbus::prelude::*;
use meshbus::tcp::TcpTransport;
use meshbus::trust::NetworkKey;
use meshbus::SubscriptionOptions;

use crate::scopes::{ticks_until_marker, Here, Tick, MARKER, RUN_BOUND};

/// A node listening on every interface advertises `tcp://0.0.0.0:port`; the peer that reached
/// it rewrites that to the host it used, so a third node that only hears of it by gossip can
/// still dial it. Listening beyond loopback takes a network key: the three nodes share one.
#[tokio::test]
async fn a_node_listening_on_every_interface_is_reached_through_gossip() {
    let key = NetworkKey::generate();
    let run = async {
        let a = tcp_node("a", "host-1", "shop", "tcp://0.0.0.0:0")
            .network_key(key.clone())
            .command_handler(|_: Here, _ctx: Context| async { HandlerResult::Ok("a".to_owned()) })
            .start()
            .await
            .unwrap();
        let port = a.listen_addrs()[0]
            .as_str()
            .rsplit(':')
            .next()
            .unwrap()
            .to_owned();
        let b = tcp_node("b", "host-1", "shop", "tcp://127.0.0.1:0")
            .network_key(key.clone())
            .peers([format!("tcp://127.0.0.1:{port}")])
            .start()
            .await
            .unwrap();
        // c listens nowhere, so only c can make the link to a.
        let c = Bus::builder()
            .name("c")
            .host_id("host-1")
            .cluster("shop")
            .network_key(key.clone())
            .transport(TcpTransport::new())
            .peers([b.listen_addrs()[0].to_string()])
            .start()
            .await
            .unwrap();
        within("c links a", c.ready().handlers::<Here>(Scope::Cluster, 1)).await;
        assert_eq!(c.commands().send(Here).await.unwrap(), "a");
        for bus in [&c, &b, &a] {
            within("shutdown", bus.shutdown()).await.unwrap();
        }
    };
    bounded(RUN_BOUND, "the run", run).await;
}

/// A reader that finds many frames waiting lets the subscription's task run every so many of
/// them: a burst far larger than the subscription's queue arrives whole, none dropped, though
/// the reader never waits for a subscriber.
#[tokio::test]
async fn a_fast_reader_lets_its_subscription_keep_up() {
    burst_to_a_subscription_of(256, 20_000).await;
}

/// Credit (issue 14): the subscriber's node grants room for one event at a time, so however
/// fast the publisher, the reader never finds the queue full of events it must drop.
#[tokio::test]
async fn a_subscription_of_one_loses_nothing_to_a_fast_publisher() {
    burst_to_a_subscription_of(1, 5_000).await;
}

/// Publishes `events` as fast as one task can over TCP to a subscription of `capacity`: every
/// one arrives, in order, and none is dropped.
async fn burst_to_a_subscription_of(capacity: usize, events: u32) {
    let sub_bus = tcp_node("sub", "h", "c", "tcp://127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let addr = sub_bus.listen_addrs()[0].clone();
    let mut sub = sub_bus
        .subscribe_with::<Tick>(SubscriptionOptions::new().capacity(capacity))
        .unwrap();
    let publisher = tcp_node("pub", "h", "c", "tcp://127.0.0.1:0")
        .peers([addr.to_string()])
        .start()
        .await
        .unwrap();
    within(
        "the subscriber",
        publisher.ready().subscribers::<Tick>(Scope::Cluster, 1),
    )
    .await;

    let publish = async {
        for i in 0..events {
            publisher.events().publish(Tick(i)).await.unwrap();
        }
        publisher.events().publish(Tick(MARKER)).await.unwrap();
    };
    let (got, ()) = bounded(RUN_BOUND, "the burst", async {
        tokio::join!(ticks_until_marker(&mut sub), publish)
    })
    .await;
    assert_eq!(sub_bus.stats().remote_events_dropped, 0);
    assert_eq!(got, (0..events).collect::<Vec<_>>());

    publisher.shutdown().await.unwrap();
    sub_bus.shutdown().await.unwrap();
}
