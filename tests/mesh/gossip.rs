//! Peer exchange: nodes that know only one seed find each other by gossip.

use crate::support::*;
use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "mesh.name", reply = String)]
struct Name;

#[tokio::test(start_paused = true)]
async fn five_nodes_joined_through_one_seed_reach_a_full_view() {
    let net = InMemNetwork::new(30);
    let names = ["n0", "n1", "n2", "n3", "n4"];
    let mut nodes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut builder = node(&net, name);
        if i > 0 {
            builder = builder.peers(["inmem://n0"]);
        }
        if i == 3 {
            builder = builder.command_handler(|_: Name, ctx: Context| async move {
                HandlerResult::Ok(ctx.bus().name().to_owned())
            });
        }
        nodes.push(builder.start().await.unwrap());
    }
    for (bus, name) in nodes.iter().zip(names) {
        within("a full view", bus.ready().peers(4)).await;
        let view = bus.membership().borrow().clone();
        let mut seen: Vec<&str> = view.peers.iter().map(|p| p.name.as_str()).collect();
        seen.sort_unstable();
        let others: Vec<&str> = names.iter().copied().filter(|n| *n != name).collect();
        assert_eq!(seen, others, "the view of {name}");
    }
    // n4 reaches n3's handler over the link gossip made.
    within(
        "n3's handler",
        nodes[4].ready().handlers::<Name>(Scope::Cluster, 1),
    )
    .await;
    assert_eq!(nodes[4].commands().send(Name).await.unwrap(), "n3");
    for bus in &nodes {
        bus.shutdown().await.unwrap();
    }
}

#[derive(Serialize, Deserialize, Event)]
#[meshbus(name = "mesh.seq")]
struct Seq {
    publisher: usize,
    n: u32,
}

#[tokio::test(start_paused = true)]
async fn twenty_nodes_through_one_seed_get_every_event_once_in_order() {
    const NODES: usize = 20;
    const PER_PUBLISHER: u32 = 3_334;
    let net = InMemNetwork::new(31);
    let mut nodes = Vec::new();
    for i in 0..NODES {
        let name = format!("g{i}");
        let mut builder = node(&net, &name);
        if i > 0 {
            builder = builder.peers(["inmem://g0"]);
        }
        nodes.push(builder.start().await.unwrap());
    }
    let options = meshbus::SubscriptionOptions::new().capacity(3 * PER_PUBLISHER as usize);
    let mut subs: Vec<_> = nodes
        .iter()
        .map(|b| b.subscribe_with::<Seq>(options.clone()).unwrap())
        .collect();
    for bus in &nodes {
        within("a full view", bus.ready().peers(NODES - 1)).await;
        within(
            "every subscriber",
            bus.ready().subscribers::<Seq>(Scope::Cluster, NODES),
        )
        .await;
    }
    let publishers = [0, 7, 19];
    let publish = |p: usize| {
        let bus = nodes[publishers[p]].clone();
        async move {
            for n in 0..PER_PUBLISHER {
                bus.events().publish(Seq { publisher: p, n }).await.unwrap();
            }
        }
    };
    tokio::join!(publish(0), publish(1), publish(2));
    for (i, sub) in subs.iter_mut().enumerate() {
        let mut next = [0u32; 3];
        for _ in 0..3 * PER_PUBLISHER {
            let e = within("an event", sub.recv()).await.unwrap();
            assert_eq!(
                e.n, next[e.publisher],
                "node g{i}, publisher {}",
                e.publisher
            );
            next[e.publisher] += 1;
        }
        assert_eq!(next, [PER_PUBLISHER; 3]);
    }
    for bus in &nodes {
        assert_eq!(bus.stats().remote_events_dropped, 0);
        bus.shutdown().await.unwrap();
    }
}

/// Reports what the test sends it.
#[derive(Debug)]
struct Told(tokio::sync::mpsc::Receiver<meshbus::discovery::DiscoveryEvent>);

#[async_trait]
impl meshbus::discovery::Discovery for Told {
    async fn advertise(
        &mut self,
        _local: &meshbus_core::wire::control::PeerIdentity,
    ) -> Result<(), Error> {
        Ok(())
    }
    async fn next(&mut self) -> Option<meshbus::discovery::DiscoveryEvent> {
        self.0.recv().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_node_found_by_discovery_is_dialled() {
    let net = InMemNetwork::new(32);
    let b = node(&net, "b")
        .command_handler(|_: Name, _ctx| async { HandlerResult::Ok("b".to_owned()) })
        .start()
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let a = node(&net, "a").discovery(Told(rx)).start().await.unwrap();
    assert!(a.membership().borrow().peers.is_empty());
    let found = meshbus_core::wire::control::PeerIdentity {
        node_id: b.node_id().as_u128(),
        incarnation: 0, // older than b's run: the handshake tells the truth
        name: "b".into(),
        network: "default".into(),
        cluster: "default".into(),
        host_id: "host-1".into(),
        addresses: vec!["inmem://b".into()],
        public_key: None,
    };
    tx.send(meshbus::discovery::DiscoveryEvent::Found(found))
        .await
        .unwrap();
    within("b's handler", a.ready().handlers::<Name>(Scope::Cluster, 1)).await;
    assert_eq!(a.commands().send(Name).await.unwrap(), "b");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
