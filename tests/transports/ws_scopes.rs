//! Every scope over real WebSocket links on 127.0.0.1, and what a listener does with plain
//! WebSocket clients: pings answered, text refused, a wrong path refused at the upgrade.

use std::collections::BTreeSet;

use crate::support::within;
use crate::support::ws::*;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use meshbus::prelude::*;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "ws.where", reply = String)]
struct Where;

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "ws.here", reply = String)]
struct Here;

#[derive(Serialize, Deserialize, Event, Debug)]
#[meshbus(name = "ws.news")]
struct News(u32);

/// A node that answers `Where` with its name.
fn answering(name: &str, host: &str, cluster: &str) -> meshbus::BusBuilder {
    ws_node(name, host, cluster).command_handler(|_: Where, ctx: Context| async move {
        Ok::<_, HandlerError>(ctx.bus().name().to_owned())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scope_over_websocket() {
    // a and b share a host, a and c share a cluster; b and c answer `Where`, a only `Here`.
    let a = ws_node("a", "host-1", "blue")
        .command_handler(|_: Here, _ctx| async { Ok::<_, HandlerError>("a".to_owned()) })
        .start()
        .await
        .unwrap();
    let b = answering("b", "host-1", "green")
        .peers([addr(&a)])
        .start()
        .await
        .unwrap();
    let c = answering("c", "host-2", "blue")
        .peers([addr(&a)])
        .start()
        .await
        .unwrap();
    let mut subs = Vec::new();
    for bus in [&a, &b, &c] {
        subs.push(bus.subscribe::<News>().unwrap());
    }
    within("b and c answer in the network", async {
        a.ready().handlers::<Where>(Scope::Network, 2).await;
        a.ready().subscribers::<News>(Scope::Network, 3).await;
        // b and c find each other by gossip.
        b.ready().peers(2).await;
        c.ready().peers(2).await;
    })
    .await;

    // Local: a's own handler, never a remote one.
    assert_eq!(a.commands().local().send(Here).await.unwrap(), "a");
    let err = a.commands().local().send(Where).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoHandler);
    // Machine: b shares a's host id, c does not.
    for _ in 0..4 {
        let reply = within("a Machine command", a.commands().machine().send(Where)).await;
        assert_eq!(reply.unwrap(), "b");
    }
    // Cluster: c shares a's cluster, b does not.
    for _ in 0..4 {
        let reply = within("a Cluster command", a.commands().cluster().send(Where)).await;
        assert_eq!(reply.unwrap(), "c");
    }
    // Network: both answer.
    let answers: BTreeSet<String> = within(
        "a Network send_all",
        a.commands().network().send_all(Where).collect::<Vec<_>>(),
    )
    .await
    .into_iter()
    .map(|(_, reply)| reply.unwrap())
    .collect();
    assert_eq!(answers, BTreeSet::from(["b".to_owned(), "c".to_owned()]));
    let reply = within("a Network command", a.commands().network().send(Where)).await;
    assert!(["b", "c"].contains(&reply.unwrap().as_str()));
    // c's own handler comes first.
    assert_eq!(c.commands().cluster().send(Where).await.unwrap(), "c");

    // An event in the Network scope reaches every subscriber once; in the Cluster scope
    // (a's is blue) it reaches a and c only.
    a.events().network().publish(News(1)).await.unwrap();
    a.events().cluster().publish(News(2)).await.unwrap();
    for (i, sub) in subs.iter_mut().enumerate() {
        let first = within("the Network event", sub.recv()).await.unwrap();
        assert_eq!(first.0, 1, "node {i}");
    }
    for i in [0, 2] {
        let second = within("the Cluster event", subs[i].recv()).await.unwrap();
        assert_eq!(second.0, 2, "node {i}");
    }
    // b is in another cluster: the next thing it gets is a later Network event, not News(2).
    a.events().network().publish(News(3)).await.unwrap();
    assert_eq!(within("b's next event", subs[1].recv()).await.unwrap().0, 3);

    for bus in [a, b, c] {
        within("shutdown", bus.shutdown()).await.unwrap();
    }
}

/// A plain WebSocket client of `bus`'s listener at `path`.
async fn raw_client(
    bus: &Bus,
    path: &str,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, WsError> {
    let port = port(bus);
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let url = format!("ws://127.0.0.1:{port}{path}");
    let (ws, _) = within("the upgrade", tokio_tungstenite::client_async(url, tcp)).await?;
    Ok(ws)
}

#[tokio::test]
async fn a_ping_from_a_plain_client_is_answered() {
    let node = ws_node("n", "host-1", "blue").start().await.unwrap();
    let mut ws = raw_client(&node, "/meshbus").await.unwrap();
    for i in 0..3u8 {
        ws.send(Message::Ping(Bytes::from(vec![i; 4])))
            .await
            .unwrap();
        let answer = within("a pong", ws.next()).await.unwrap().unwrap();
        assert_eq!(answer, Message::Pong(Bytes::from(vec![i; 4])));
    }
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_text_message_closes_the_connection() {
    let node = ws_node("n", "host-1", "blue").start().await.unwrap();
    let mut ws = raw_client(&node, "/meshbus").await.unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    // The node closes: a close message, then the end (or a reset).
    let end = within("the node to close the connection", ws.next()).await;
    assert!(
        matches!(end, None | Some(Err(_)) | Some(Ok(Message::Close(_)))),
        "{end:?}"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_wrong_path_is_refused_at_the_upgrade() {
    let node = ws_node("n", "host-1", "blue").start().await.unwrap();
    match raw_client(&node, "/elsewhere").await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 404),
        Err(other) => panic!("expected an HTTP error, got {other}"),
        Ok(_) => panic!("the upgrade to a wrong path succeeded"),
    }
    // The listener serves on: the right path still upgrades.
    assert!(raw_client(&node, "/meshbus").await.is_ok());
    node.shutdown().await.unwrap();
}

/// Tungstenite hands over a whole read buffer of messages without waiting: the reader still
/// lets the subscription's task run every so many frames, so a burst far larger than the
/// subscription's queue arrives whole, none dropped.
#[tokio::test]
async fn a_fast_websocket_reader_lets_its_subscription_keep_up() {
    const EVENTS: u32 = 20_000;
    let sub_bus = ws_node("sub", "h", "c").start().await.unwrap();
    let mut sub = sub_bus
        .subscribe_with::<News>(meshbus::SubscriptionOptions::new().capacity(256))
        .unwrap();
    let publisher = ws_node("pub", "h", "c")
        .peers([addr(&sub_bus)])
        .start()
        .await
        .unwrap();
    within(
        "the subscriber",
        publisher.ready().subscribers::<News>(Scope::Cluster, 1),
    )
    .await;

    let publish = async {
        for i in 0..=EVENTS {
            publisher.events().publish(News(i)).await.unwrap();
        }
    };
    let receive = async {
        let mut got = Vec::new();
        while got.len() <= EVENTS as usize {
            got.push(sub.recv().await.expect("an open subscription").0);
        }
        got
    };
    let (got, ()) = within("the burst", async { tokio::join!(receive, publish) }).await;
    assert_eq!(sub_bus.stats().remote_events_dropped, 0);
    assert_eq!(got, (0..=EVENTS).collect::<Vec<_>>());

    publisher.shutdown().await.unwrap();
    sub_bus.shutdown().await.unwrap();
}
