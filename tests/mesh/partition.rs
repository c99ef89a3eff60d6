//! Partitions: each side keeps serving, and the mesh heals.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::*;
use futures_util::StreamExt;
use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "mesh.name", reply = String)]
struct Name;

async fn names_in_reach(bus: &Bus) -> BTreeSet<String> {
    bus.commands()
        .send_all(Name)
        .timeout(Duration::from_secs(1))
        .stream()
        .filter_map(|(_, r)| async move { r.ok() })
        .collect()
        .await
}

#[tokio::test(start_paused = true)]
async fn a_partitioned_mesh_serves_each_half_and_reconverges_after_heal() {
    // Several seeds: each gives other timings of burial, refutation and redial.
    for seed in 60..68 {
        partition_and_heal(seed).await;
    }
}

async fn partition_and_heal(seed: u64) {
    let net = InMemNetwork::new(seed);
    let names = ["p1", "p2", "p3", "p4"];
    let mut nodes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut b = node(&net, name).command_handler(|_: Name, ctx: Context| async move {
            HandlerResult::Ok(ctx.bus().name().to_owned())
        });
        if i > 0 {
            b = b.peers(["inmem://p1"]);
        }
        nodes.push(b.start().await.unwrap());
    }
    for bus in &nodes {
        within(
            "the full mesh",
            bus.ready().handlers::<Name>(Scope::Cluster, 4),
        )
        .await;
    }
    let all: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();

    net.partition(&[&["p1", "p2"], &["p3", "p4"]]);
    for bus in &nodes {
        until_view(bus, |v| v.peers.len() == 1).await;
    }
    // Each half serves inside itself.
    let left: BTreeSet<String> = ["p1", "p2"].iter().map(|n| n.to_string()).collect();
    let right: BTreeSet<String> = ["p3", "p4"].iter().map(|n| n.to_string()).collect();
    assert_eq!(names_in_reach(&nodes[0]).await, left);
    assert_eq!(names_in_reach(&nodes[3]).await, right);

    net.heal_all();
    for bus in &nodes {
        within("the healed mesh", bus.ready().peers(3)).await;
    }
    for bus in &nodes {
        within(
            "every handler",
            bus.ready().handlers::<Name>(Scope::Cluster, 4),
        )
        .await;
        assert_eq!(names_in_reach(bus).await, all, "from {}", bus.name());
        // No node twice, none resurrected: exactly the three others.
        let view = bus.membership().borrow().clone();
        let ids: BTreeSet<_> = view.peers.iter().map(|p| p.node_id).collect();
        assert_eq!(ids.len(), 3);
    }
    // Cross-half commands succeed.
    assert_eq!(
        nodes[0].commands().send_all(Name).await.len(),
        4,
        "p1 reaches all four"
    );
    for bus in &nodes {
        bus.shutdown().await.unwrap();
    }
}
