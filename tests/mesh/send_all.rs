//! `send_all`: one command to every handler node in scope.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::*;
use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;
use meshbus::NodeId;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "mesh.name", reply = String)]
struct Name;

#[tokio::test(start_paused = true)]
async fn send_all_asks_every_handler_node_and_reports_the_missing_one() {
    let net = InMemNetwork::new(40);
    let mut handlers = Vec::new();
    for name in ["b", "c", "d", "e"] {
        let bus = node(&net, name)
            .command_handler(|_: Name, ctx: Context| async move {
                HandlerResult::Ok(ctx.bus().name().to_owned())
            })
            .start()
            .await
            .unwrap();
        handlers.push(bus);
    }
    let a = node(&net, "a")
        .peers(["inmem://b", "inmem://c", "inmem://d", "inmem://e"])
        .start()
        .await
        .unwrap();
    within(
        "four handlers",
        a.ready().handlers::<Name>(Scope::Cluster, 4),
    )
    .await;
    let names: BTreeMap<NodeId, String> = handlers
        .iter()
        .map(|b| (b.node_id(), b.name().to_owned()))
        .collect();

    let answers = a.commands().send_all(Name).await;
    assert_eq!(answers.len(), 4);
    for (node, reply) in &answers {
        assert_eq!(reply.as_ref().unwrap(), &names[node]);
    }

    // e is cut off: three replies, and a timeout for e by the deadline.
    net.cut("a", "e");
    let t0 = tokio::time::Instant::now();
    let deadline = Duration::from_millis(200);
    let answers = a.commands().send_all(Name).timeout(deadline).await;
    assert_eq!(t0.elapsed(), deadline);
    assert_eq!(answers.len(), 4);
    let e = handlers[3].node_id();
    for (node, reply) in &answers {
        if *node == e {
            assert_eq!(reply.as_ref().unwrap_err().kind(), ErrorKind::Timeout);
        } else {
            assert_eq!(reply.as_ref().unwrap(), &names[node]);
        }
    }
    a.shutdown().await.unwrap();
    for bus in &handlers {
        bus.shutdown().await.unwrap();
    }
}
