//! Commands under names chosen at run time (`command_handler_named` / `send_named`): the seam
//! that libraries built on the bus (durable streams, the CLI) route by.

use crate::support::*;
use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "named.get", reply = String)]
struct Get(u32);

fn answer(
    tag: &'static str,
) -> impl Fn(Get, Context) -> std::future::Ready<HandlerResult<String>> + Clone {
    move |g: Get, _ctx| std::future::ready(Ok(format!("{tag}{}", g.0)))
}

#[tokio::test(start_paused = true)]
async fn run_time_names_route_to_the_node_that_registered_them() {
    let net = InMemNetwork::new(1);
    let eu = node(&net, "eu")
        .command_handler_named(String::from("$kv.eu.get"), answer("eu"))
        .start()
        .await
        .unwrap();
    let us = node(&net, "us")
        .command_handler_named("$kv.us.get", answer("us"))
        .peers(["inmem://eu"])
        .start()
        .await
        .unwrap();
    let client = node(&net, "client")
        .peers(["inmem://eu", "inmem://us"])
        .start()
        .await
        .unwrap();
    within(
        "eu",
        client
            .ready()
            .handlers_named("$kv.eu.get", Scope::Cluster, 1),
    )
    .await;
    within(
        "us",
        client
            .ready()
            .handlers_named("$kv.us.get", Scope::Cluster, 1),
    )
    .await;

    // One type, two names, two nodes: each name reaches the node that registered it.
    for i in 0..8 {
        let eu_says = client
            .commands()
            .send_named("$kv.eu.get", Get(i))
            .await
            .unwrap();
        assert_eq!(eu_says, format!("eu{i}"));
        let name = format!("$kv.{}.get", "us");
        let us_says = client.commands().send_named(name, Get(i)).await.unwrap();
        assert_eq!(us_says, format!("us{i}"));
    }
    // A local named handler answers on its own node.
    assert_eq!(
        us.commands()
            .send_named("$kv.us.get", Get(1))
            .await
            .unwrap(),
        "us1"
    );
    assert_eq!(
        eu.commands()
            .send_named("$kv.us.get", Get(2))
            .await
            .unwrap(),
        "us2"
    );

    // The type's own name is not handled anywhere: NoHandler names what was asked for.
    let err = client.commands().send(Get(0)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoHandler);
    assert_eq!(err.message_name(), Some("named.get"));
    let err = client
        .commands()
        .send_named("$kv.asia.get", Get(0))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoHandler);
    assert_eq!(err.message_name(), Some("$kv.asia.get"));
    for bus in [client, us, eu] {
        bus.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn bad_run_time_names_are_refused_at_start() {
    for (name, says) in [
        (String::new(), "is empty"),
        ("a\nb".to_owned(), "control character"),
        ("x".repeat(2000), "longer"),
    ] {
        let err = Bus::builder()
            .command_handler_named(name, answer("x"))
            .start()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains(says), "{err}");
    }
    // Two handlers under one run-time name are refused like two of one type.
    let err = Bus::builder()
        .command_handler_named("$a", answer("1"))
        .command_handler_named("$a", answer("2"))
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("two handlers"), "{err}");
}
