//! Rotating the network key across a running mesh.

use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;
use meshbus::trust::NetworkKey;
use meshbus::ErrorKind;

use crate::support::within;
use crate::{keyed, WhoAmI};

/// Every node asks every node (itself included) who it is; all must answer.
async fn all_answer(nodes: &[Bus]) {
    for n in nodes {
        let replies = within("the answers", n.commands().cluster().send_all(WhoAmI)).await;
        assert_eq!(replies.len(), nodes.len(), "{}", n.name());
        for (from, reply) in replies {
            reply.unwrap_or_else(|e| panic!("{}: the request to {from} failed: {e}", n.name()));
        }
    }
}

async fn meshed(nodes: &[Bus]) {
    for n in nodes {
        within(
            "the mesh",
            n.ready().handlers::<WhoAmI>(Scope::Cluster, nodes.len()),
        )
        .await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_key_rotates_across_five_nodes_without_a_link_dropping() {
    let net = InMemNetwork::new(23);
    let (k1, k2) = (NetworkKey::generate(), NetworkKey::generate());
    let mut nodes = Vec::new();
    for i in 0..5 {
        let mut b = keyed(&net, &format!("n{i}"), &[&k1]);
        if i > 0 {
            b = b.peers(["inmem://n0"]);
        }
        nodes.push(b.start().await.unwrap());
    }
    meshed(&nodes).await;
    // Every node knows every other's proven public key.
    for n in &nodes {
        let view = n.membership().borrow().clone();
        for other in nodes.iter().filter(|o| o.node_id() != n.node_id()) {
            let peer = view.peer(other.node_id()).expect("a peer");
            assert_eq!(peer.public_key, Some(other.public_key()));
        }
    }
    let links: Vec<u64> = nodes.iter().map(|n| n.stats().links_established).collect();

    // [k1] → [k2, k1], node by node, requests all along.
    for (i, n) in nodes.iter().enumerate() {
        n.set_network_keys([k2.clone(), k1.clone()]).unwrap();
        all_answer(&nodes).await;
        if i == 2 {
            // Mid-rotation, a node with [k2, k1] joins: k2 where the other has it, k1 where not.
            let late = keyed(&net, "mid", &[&k2, &k1])
                .peers(["inmem://n4"])
                .start()
                .await
                .unwrap();
            within(
                "mid's links",
                late.ready().handlers::<WhoAmI>(Scope::Cluster, 6),
            )
            .await;
            late.shutdown().await.unwrap();
        }
    }
    // → [k2].
    for n in &nodes {
        n.set_network_keys([k2.clone()]).unwrap();
        all_answer(&nodes).await;
    }
    // No link dropped: each node made exactly one more link, mid's.
    for (n, before) in nodes.iter().zip(&links) {
        assert_eq!(n.stats().links_established, before + 1, "{}", n.name());
    }
    // A new node with k2 joins; one with k1 only is refused.
    let fresh = keyed(&net, "fresh", &[&k2])
        .peers(["inmem://n0"])
        .start()
        .await
        .unwrap();
    within(
        "fresh's links",
        fresh.ready().handlers::<WhoAmI>(Scope::Cluster, 6),
    )
    .await;
    let stale = keyed(&net, "stale", &[&k1]).start().await.unwrap();
    for i in 0..5 {
        let err = stale.connect(&format!("inmem://n{i}")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unauthorized);
    }
    for bus in nodes.into_iter().chain([fresh, stale]) {
        bus.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_keyring_cannot_be_emptied_nor_given_to_a_keyless_node() {
    let net = InMemNetwork::new(24);
    let keyless = keyed(&net, "keyless", &[]).start().await.unwrap();
    let err = keyless
        .set_network_keys([NetworkKey::generate()])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let err = keyed(&net, "nobody", &[])
        .allow_peers([])
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let keyed_node = keyed(&net, "k", &[&NetworkKey::generate()])
        .start()
        .await
        .unwrap();
    let err = keyed_node.set_network_keys([]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let many = (0..9).map(|_| NetworkKey::generate());
    assert_eq!(
        keyed_node.set_network_keys(many).unwrap_err().kind(),
        ErrorKind::Config
    );
    keyless.shutdown().await.unwrap();
    keyed_node.shutdown().await.unwrap();
}
