//! Scopes across a 3-node mesh over loopback TCP: which nodes a command or an event reaches.
//!
//! ```sh
//! cargo run --example scopes
//! ```
//!
//! It exits by itself. `a` and `b` share a machine (host id `host-1`) but not a cluster; `a`
//! and `c` share the cluster `shop` but not a machine. (All three run in this process on
//! `tcp://127.0.0.1:0`; the host ids are set by hand, as network namespaces or containers
//! would.) `b` and `c` join through `a`'s address and find each other by gossip.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use meshbus::prelude::*;
use meshbus::tcp::TcpTransport;
use meshbus::Subscription;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "demo.where", reply = String)]
struct Where;

#[derive(Serialize, Deserialize, Event)]
#[meshbus(name = "demo.announce")]
struct Announce(String);

async fn start(
    name: &'static str,
    cluster: &str,
    host: &str,
    seed: Option<&str>,
) -> Result<Bus, Error> {
    Bus::builder()
        .name(name)
        .cluster(cluster)
        .host_id(host)
        .transport(TcpTransport::new())
        .listen("tcp://127.0.0.1:0")
        .peers(seed) // everyone joins through `a`; gossip does the rest
        .command_handler(move |_: Where, _ctx: Context| async move {
            HandlerResult::Ok(name.to_owned())
        })
        .start()
        .await
}

/// Waits for `what`, at most 10 s.
async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| format!("gave up waiting 10 s for {what}"))
}

/// The announcements `sub` got before the end marker (an empty one, published last to the
/// whole network, so everything published before it has arrived once it has).
async fn heard(sub: &mut Subscription<Announce>) -> Result<Vec<String>, String> {
    let mut got = Vec::new();
    // Bounded: each pass takes one event, and the marker ends it.
    loop {
        match within("an announcement", sub.recv()).await? {
            Some(a) if a.0.is_empty() => return Ok(got),
            Some(a) => got.push(a.0.clone()),
            None => return Err("the subscription ended".into()),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    support::init_logging();
    let a = start("a", "shop", "host-1", None).await?;
    let seed = a.listen_addrs()[0].to_string();
    let b = start("b", "billing", "host-1", Some(&seed)).await?;
    let c = start("c", "shop", "host-2", Some(&seed)).await?;
    let nodes = [&a, &b, &c];
    let mut subs = Vec::new();
    for bus in nodes {
        subs.push(bus.subscribe::<Announce>()?);
    }

    // No sleeps: wait until every node handles and subscribes.
    within("the mesh", async {
        a.ready().handlers::<Where>(Scope::Network, 3).await;
        a.ready().subscribers::<Announce>(Scope::Network, 3).await;
    })
    .await?;

    // A local handler always wins, so ask from a node that would rather not answer itself:
    // `send_all` shows every handler in each scope.
    for scope in [Scope::Local, Scope::Machine, Scope::Cluster, Scope::Network] {
        let mut all = a.commands().scope(scope).send_all(Where).stream();
        let mut who = Vec::new();
        while let Some((_, reply)) = all.next().await {
            who.push(reply?);
        }
        who.sort();
        println!("commands in scope {scope}: answered by {who:?}");
    }
    for scope in [Scope::Local, Scope::Machine, Scope::Cluster, Scope::Network] {
        a.events()
            .scope(scope)
            .publish(Announce(format!("hello, {scope}")))
            .await?;
        a.events()
            .network()
            .publish(Announce(String::new()))
            .await?;
        let mut who = Vec::new();
        for (bus, sub) in nodes.iter().zip(&mut subs) {
            if !heard(sub).await?.is_empty() {
                who.push(bus.name().to_owned());
            }
        }
        println!("event in scope {scope}: heard by {who:?}");
    }

    drop(subs);
    for bus in nodes {
        bus.shutdown().await?;
    }
    Ok(())
}
