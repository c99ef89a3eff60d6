//! What a WebSocket listener does with plain WebSocket clients: pings answered, text refused,
//! a wrong path refused at the upgrade. (The scope matrix over WebSocket is in `scopes.rs`.)

use crate::support::within;
use crate::support::ws::*;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use meshbus::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

#[derive(Serialize, Deserialize, Event, Debug)]
#[meshbus(name = "ws.news")]
struct News(u32);

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
