//! Discovery sources beside seeds and gossip, on the in-memory network.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::support::*;
use meshbus::discovery::{Discovery, DiscoveryEvent};
use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;
use meshbus_core::wire::control::PeerIdentity;
use tokio::sync::mpsc;

/// Reports what the test sends it, and counts its shutdowns.
#[derive(Debug)]
struct Told {
    rx: mpsc::Receiver<DiscoveryEvent>,
    shutdowns: Arc<AtomicUsize>,
}

#[async_trait]
impl Discovery for Told {
    async fn advertise(&mut self, _local: &PeerIdentity) -> Result<(), Error> {
        Ok(())
    }
    async fn next(&mut self) -> Option<DiscoveryEvent> {
        self.rx.recv().await
    }
    async fn shutdown(&mut self) {
        self.shutdowns.fetch_add(1, Ordering::SeqCst);
    }
}

fn told() -> (Told, mpsc::Sender<DiscoveryEvent>, Arc<AtomicUsize>) {
    let (tx, rx) = mpsc::channel(4);
    let shutdowns = Arc::new(AtomicUsize::new(0));
    let source = Told {
        rx,
        shutdowns: Arc::clone(&shutdowns),
    };
    (source, tx, shutdowns)
}

fn found(bus: &Bus, name: &str) -> DiscoveryEvent {
    DiscoveryEvent::Found(PeerIdentity {
        node_id: bus.node_id().as_u128(),
        incarnation: 0, // older than the node's run: the handshake tells the truth
        name: name.into(),
        network: "default".into(),
        cluster: "default".into(),
        host_id: "host-1".into(),
        addresses: vec![format!("inmem://{name}")],
        public_key: None,
    })
}

/// A node with a seed and two discovery sources meets all of them, and the nodes only its seed
/// knows: every source adds to one membership.
#[tokio::test(start_paused = true)]
async fn seeds_gossip_and_several_discovery_sources_combine() {
    let net = InMemNetwork::new(41);
    let mut others = Vec::new();
    for name in ["seed", "gossiped", "first", "second"] {
        let mut b = node(&net, name);
        if name == "gossiped" {
            b = b.peers(["inmem://seed"]);
        }
        others.push(b.start().await.unwrap());
    }
    within("seed and gossiped to meet", others[0].ready().peers(1)).await;
    let (one, tx1, shut1) = told();
    let (two, tx2, shut2) = told();
    let a = node(&net, "a")
        .peers(["inmem://seed"])
        .discovery(one)
        .discovery(two)
        .start()
        .await
        .unwrap();
    tx1.send(found(&others[2], "first")).await.unwrap();
    tx2.send(found(&others[3], "second")).await.unwrap();
    // The second source ends: what it found stays, and it is still shut down with the bus.
    drop(tx2);
    within("a full view", a.ready().peers(4)).await;
    let mut seen: Vec<String> = a
        .membership()
        .borrow()
        .peers
        .iter()
        .map(|p| p.name.clone())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, ["first", "gossiped", "second", "seed"]);
    assert_eq!(shut2.load(Ordering::SeqCst), 0, "shut down before the bus");

    a.shutdown().await.unwrap();
    assert_eq!(shut1.load(Ordering::SeqCst), 1);
    assert_eq!(shut2.load(Ordering::SeqCst), 1);
    drop(tx1);
    for b in others {
        b.shutdown().await.unwrap();
    }
}
