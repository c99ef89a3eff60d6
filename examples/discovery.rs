//! A node that finds the others by mDNS, with no addresses configured, and greets them.
//!
//! ```sh
//! MESHBUS_MDNS_NETNS=1 ip netns exec NS \
//!     cargo run --example discovery --features mdns,tcp -- NAME [PEERS]
//! ```
//!
//! **mDNS sends multicast on every interface that is up.** Run this only inside a network
//! namespace (the README's "Discovery on a LAN (mDNS)" builds three of them on a bridge) or on a
//! LAN you own: it refuses to start unless `MESHBUS_MDNS_NETNS=1` says you did. CI never runs it.
//!
//! Every node needs the network's key, beyond loopback: make one with
//! `openssl rand -base64 32 > network.key` and give its path in `MESHBUS_NETWORK_KEY_FILE`
//! to every node.
//!
//! The node listens on `tcp://0.0.0.0:0`, advertises itself as `_meshbus._tcp.local.` and
//! prints every change of its peers. Once `PEERS` other nodes (default 2) have joined, it sends
//! `Hello` to each of them (`send_all`), prints the replies and publishes a `Greeted` event that
//! every node prints. It keeps serving until Ctrl-C (or, with `--once`, until it has heard the
//! others' `Greeted` too), then says goodbye, over TCP and mDNS, so the others drop it at once.

mod support;

use std::sync::Arc;
use std::time::Duration;

use meshbus::mdns::Mdns;
use meshbus::prelude::*;
use meshbus::tcp::TcpTransport;
use serde::{Deserialize, Serialize};

/// Asks a node for its greeting.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "discovery.hello", reply = String)]
struct Hello {
    from: String,
}

/// Tells everyone who was greeted.
#[derive(Serialize, Deserialize, Event)]
#[meshbus(name = "discovery.greeted")]
struct Greeted {
    by: String,
    nodes: usize,
}

const CONFIRM: &str = "MESHBUS_MDNS_NETNS";

/// The network key, from the file `MESHBUS_NETWORK_KEY_FILE` names.
fn network_key() -> Result<meshbus::trust::NetworkKey, Box<dyn std::error::Error>> {
    let path = std::env::var("MESHBUS_NETWORK_KEY_FILE").map_err(|_| {
        "set MESHBUS_NETWORK_KEY_FILE to a file made by `openssl rand -base64 32 > network.key`"
    })?;
    Ok(meshbus::trust::NetworkKey::from_file(path)?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    support::init_logging();
    if std::env::var(CONFIRM).as_deref() != Ok("1") {
        eprintln!(
            "discovery: refusing to start. mDNS multicasts on every interface that is up; run \
             this inside a network namespace (see the README, \"Discovery on a LAN (mDNS)\") and \
             set {CONFIRM}=1 to confirm."
        );
        std::process::exit(2);
    }
    let mut args = std::env::args().skip(1).filter(|a| a != "--once");
    let once = std::env::args().any(|a| a == "--once");
    let name = args.next().unwrap_or_else(|| "node".to_owned());
    let want: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(2);

    // The greetings of the others, counted so that `--once` leaves only after hearing them.
    let (greetings, mut greeted_by) = tokio::sync::mpsc::channel::<()>(64);
    let bus = Bus::builder()
        .name(name.clone())
        // Namespaces share /etc/machine-id; a host id per node keeps `Machine` meaningful.
        .host_id(format!("host-{name}"))
        .transport(TcpTransport::new())
        .network_key(network_key()?)
        .listen("tcp://0.0.0.0:0")
        .discovery(Mdns::new())
        .command_handler(
            async |hello: Hello, ctx: Context| -> Result<String, HandlerError> {
                Ok(format!("{} greets {}", ctx.bus().name(), hello.from))
            },
        )
        // A closure that captures state returns an async block: `HandlerResult::Ok` names its
        // error type, which nothing else in the block does.
        .event_handler(move |e: Arc<Greeted>, ctx: Context| {
            let greetings = greetings.clone();
            async move {
                println!("{}: {} greeted {} nodes", ctx.bus().name(), e.by, e.nodes);
                let _ = greetings.try_send(());
                HandlerResult::Ok(())
            }
        })
        .start()
        .await?;
    println!(
        "{name}: node {} listening on {:?}",
        bus.node_id(),
        bus.listen_addrs()
    );

    // Print the peers as they come and go, until `want` of them have joined.
    let mut view = bus.membership();
    let joined = async {
        loop {
            let peers: Vec<String> = view
                .borrow_and_update()
                .peers
                .iter()
                .map(|p| format!("{} ({})", p.name, p.host_id))
                .collect();
            println!("{name}: {} peers: {}", peers.len(), peers.join(", "));
            if peers.len() >= want || view.changed().await.is_err() {
                return;
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), joined)
        .await
        .is_err()
    {
        eprintln!("{name}: fewer than {want} peers after 30 s; is mDNS reaching the others?");
    }
    if let Err(e) = bus
        .ready()
        .handlers::<Hello>(Scope::Cluster, want + 1)
        .timeout(Duration::from_secs(10))
        .await
    {
        eprintln!("{name}: {e}");
    }

    let mut replies = bus
        .commands()
        .cluster()
        .send_all(Hello { from: name.clone() })
        .stream();
    let mut greeted = 0;
    while let Some((node, reply)) = futures_util::StreamExt::next(&mut replies).await {
        match reply {
            Ok(text) => {
                greeted += 1;
                println!("{name}: {node}: {text}");
            }
            Err(e) => println!("{name}: {node}: {e}"),
        }
    }
    drop(replies);
    bus.events()
        .publish(Greeted {
            by: name.clone(),
            nodes: greeted,
        })
        .await?;

    if once {
        // Our own greeting counts too: wait for the others' before leaving.
        let heard = async {
            for _ in 0..=want {
                greeted_by.recv().await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), heard).await;
    } else {
        println!("{name}: serving; Ctrl-C to stop");
        let _ = tokio::signal::ctrl_c().await;
    }
    bus.shutdown().await?;
    println!("{name}: said goodbye");
    Ok(())
}
