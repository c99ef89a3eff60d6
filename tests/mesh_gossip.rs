//! Peer exchange: nodes that know only one seed find each other by gossip.

mod mesh_util;

use mesh_util::*;
use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;

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
                Ok::<_, HandlerError>(ctx.bus().name().to_owned())
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
