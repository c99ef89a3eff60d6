//! Scopes across a 3-node in-memory mesh: which nodes a command or an event reaches.
//!
//! `a` and `b` share a machine (host id `host-1`) but not a cluster; `a` and `c` share the
//! cluster `shop` but not a machine. Run with `cargo run --example scopes`; it exits by itself.

use std::time::Duration;

use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "demo.where", reply = String)]
struct Where;

#[derive(Serialize, Deserialize, Event)]
#[meshbus(name = "demo.announce")]
struct Announce(String);

async fn start(
    net: &InMemNetwork,
    name: &'static str,
    cluster: &str,
    host: &str,
) -> Result<Bus, Error> {
    Bus::builder()
        .name(name)
        .cluster(cluster)
        .host_id(host)
        .transport(net.transport(name))
        .listen(format!("inmem://{name}"))
        .peers(["inmem://a"]) // everyone joins through `a`; gossip does the rest
        .command_handler(
            move |_: Where, _ctx| async move { Ok::<_, HandlerError>(name.to_owned()) },
        )
        .event_handler(move |e: Arc<Announce>, _ctx: Context| async move {
            println!("  {name} heard: {}", e.0);
            Ok(())
        })
        .start()
        .await
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let net = InMemNetwork::new(1);
    let a = start(&net, "a", "shop", "host-1").await?;
    let b = start(&net, "b", "billing", "host-1").await?;
    let c = start(&net, "c", "shop", "host-2").await?;

    // No sleeps: wait until every node handles and subscribes.
    let ready = async {
        a.ready().handlers::<Where>(Scope::Network, 3).await;
        a.ready().subscribers::<Announce>(Scope::Network, 3).await;
    };
    tokio::time::timeout(Duration::from_secs(10), ready)
        .await
        .map_err(|_| Error::new(ErrorKind::Timeout).with_detail("the mesh did not form"))?;

    // A local handler always wins, so ask from a node that would rather not answer itself:
    // `send_all` shows every handler in each scope.
    for scope in [Scope::Local, Scope::Machine, Scope::Cluster, Scope::Network] {
        let mut all = a.commands().scope(scope).send_all(Where);
        let mut who = Vec::new();
        while let Some((_, reply)) = futures_util::StreamExt::next(&mut all).await {
            who.push(reply?);
        }
        who.sort();
        println!("commands in scope {scope}: answered by {who:?}");
    }
    for scope in [Scope::Local, Scope::Machine, Scope::Cluster, Scope::Network] {
        println!("event in scope {scope}:");
        a.events()
            .scope(scope)
            .publish(Announce(format!("hello, {scope}")))
            .await?;
        // Let the subscribers print before the next one (for a tidy demo only).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    for bus in [&a, &b, &c] {
        bus.shutdown().await?;
    }
    Ok(())
}
