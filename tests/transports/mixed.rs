//! A mesh whose links are partly TCP and partly WebSocket, on 127.0.0.1.
//!
//! - `hub` has both transports and listens on `tcp://` and `ws://`;
//! - `web` has only the WebSocket transport: it dials `hub` over WS;
//! - `tcp` has only the TCP transport: it dials `hub` over TCP.
//!
//! Commands and events flow end to end over both kinds of link. `web` and `tcp` learn of each
//! other by gossip through `hub`, but share no transport: each lists the other in
//! `membership().unreachable` and never links to it. Routing is over direct links only (no
//! relaying through `hub`, see DESIGN §9), so a command that only the other one handles gets
//! `NoHandler` at once, and an event one of them publishes does not reach the other.

#![cfg(all(feature = "tcp", feature = "ws"))]

use std::time::Duration;

use crate::support::within;
use meshbus::prelude::*;
use meshbus::tcp::TcpTransport;
use meshbus::ws::WsTransport;
use meshbus::{BusBuilder, NodeId, Subscription};
use serde::{Deserialize, Serialize};

/// Answered by `hub`.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "mixed.ask-hub", reply = String)]
struct AskHub(String);

/// Answered by `web`.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "mixed.ask-web", reply = String)]
struct AskWeb(String);

/// Answered by `tcp`.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "mixed.ask-tcp", reply = String)]
struct AskTcp(String);

/// Every node subscribes.
#[derive(Serialize, Deserialize, Event, Debug)]
#[meshbus(name = "mixed.news")]
struct News {
    from: String,
    n: u32,
}

fn node(name: &str) -> BusBuilder {
    Bus::builder()
        .name(name)
        .host_id("host-1")
        .cluster("mixed")
        .heartbeat_interval(Duration::from_millis(200))
        .peer_timeout(Duration::from_secs(3))
}

/// A handler that answers with the node's name and what it was asked.
fn answer<C: Command<Reply = String>>(
    text: impl Fn(&C) -> &str + Send + Sync + 'static,
) -> impl Fn(C, Context) -> std::future::Ready<Result<String, HandlerError>> + Send + Sync + 'static
{
    move |cmd, ctx| std::future::ready(Ok(format!("{}: {}", ctx.bus().name(), text(&cmd))))
}

async fn next_news(sub: &mut Subscription<News>) -> (String, u32) {
    let news = within("an event", sub.recv())
        .await
        .expect("an open subscription");
    (news.from.clone(), news.n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_of_tcp_and_websocket_links() {
    let hub = node("hub")
        .transport(TcpTransport::new())
        .transport(WsTransport::new())
        .listen("tcp://127.0.0.1:0")
        .listen("ws://127.0.0.1:0/meshbus")
        .command_handler(answer(|c: &AskHub| &c.0))
        .start()
        .await
        .unwrap();
    let [hub_tcp, hub_ws] = [0, 1].map(|i| hub.listen_addrs()[i].clone());
    assert_eq!((hub_tcp.scheme(), hub_ws.scheme()), ("tcp", "ws"));

    let web = node("web")
        .transport(WsTransport::new())
        .listen("ws://127.0.0.1:0/meshbus")
        .peers([hub_ws.to_string()])
        .command_handler(answer(|c: &AskWeb| &c.0))
        .start()
        .await
        .unwrap();
    let tcp = node("tcp")
        .transport(TcpTransport::new())
        .listen("tcp://127.0.0.1:0")
        .peers([hub_tcp.to_string()])
        .command_handler(answer(|c: &AskTcp| &c.0))
        .start()
        .await
        .unwrap();
    let mut subs: Vec<_> = [&hub, &web, &tcp]
        .iter()
        .map(|bus| bus.subscribe::<News>().unwrap())
        .collect();

    within("the links to hub", async {
        hub.ready().handlers::<AskWeb>(Scope::Cluster, 1).await;
        hub.ready().handlers::<AskTcp>(Scope::Cluster, 1).await;
        hub.ready().subscribers::<News>(Scope::Cluster, 3).await;
        web.ready().handlers::<AskHub>(Scope::Cluster, 1).await;
        tcp.ready().handlers::<AskHub>(Scope::Cluster, 1).await;
    })
    .await;

    // web and tcp hear of each other from hub, and find no address they can dial.
    let unreachable = |bus: &Bus, other: NodeId| {
        let mut view = bus.membership();
        async move {
            view.wait_for(|v| v.unreachable.contains(&other))
                .await
                .map(|_| ())
        }
    };
    within(
        "web to list tcp as unreachable",
        unreachable(&web, tcp.node_id()),
    )
    .await
    .unwrap();
    within(
        "tcp to list web as unreachable",
        unreachable(&tcp, web.node_id()),
    )
    .await
    .unwrap();

    // Commands, both ways on each kind of link.
    let reply = within(
        "web -> hub over WS",
        web.commands().send(AskHub("hi".into())),
    )
    .await;
    assert_eq!(reply.unwrap(), "hub: hi");
    let reply = within(
        "tcp -> hub over TCP",
        tcp.commands().send(AskHub("yo".into())),
    )
    .await;
    assert_eq!(reply.unwrap(), "hub: yo");
    let reply = within(
        "hub -> web over WS",
        hub.commands().send(AskWeb("a".into())),
    )
    .await;
    assert_eq!(reply.unwrap(), "web: a");
    let reply = within(
        "hub -> tcp over TCP",
        hub.commands().send(AskTcp("b".into())),
    )
    .await;
    assert_eq!(reply.unwrap(), "tcp: b");

    // Routing is over direct links only: nothing relays web's command through hub to tcp.
    let err = web.commands().send(AskTcp("x".into())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoHandler);
    let err = tcp
        .commands()
        .network()
        .send(AskWeb("x".into()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoHandler);

    // Events: hub's reach both; web's reach hub (and web itself) but not tcp, tcp's not web.
    web.events()
        .publish(News {
            from: "web".into(),
            n: 1,
        })
        .await
        .unwrap();
    tcp.events()
        .publish(News {
            from: "tcp".into(),
            n: 2,
        })
        .await
        .unwrap();
    let [s_hub, s_web, s_tcp] = &mut subs[..] else {
        unreachable!()
    };
    let mut at_hub = vec![next_news(s_hub).await, next_news(s_hub).await];
    at_hub.sort();
    assert_eq!(at_hub, [("tcp".to_owned(), 2), ("web".to_owned(), 1)]);
    assert_eq!(next_news(s_web).await, ("web".to_owned(), 1));
    assert_eq!(next_news(s_tcp).await, ("tcp".to_owned(), 2));
    // hub publishes once both events reached it: the next event web and tcp get is hub's, so
    // neither got the other's (each reached hub first, and nothing links web and tcp).
    hub.events()
        .publish(News {
            from: "hub".into(),
            n: 3,
        })
        .await
        .unwrap();
    for sub in [s_hub, s_web, s_tcp] {
        assert_eq!(next_news(sub).await, ("hub".to_owned(), 3));
    }

    // Still apart, and not dialled: web and tcp each have hub as their one peer.
    for (bus, other) in [(&web, tcp.node_id()), (&tcp, web.node_id())] {
        let view = bus.membership().borrow().clone();
        assert_eq!(view.peers.len(), 1, "{}: {view:?}", bus.name());
        assert_eq!(view.peers[0].name, "hub");
        assert!(view.unreachable.contains(&other));
    }
    let view = hub.membership().borrow().clone();
    assert_eq!(view.peers.len(), 2, "{view:?}");
    assert!(view.unreachable.is_empty(), "{view:?}");

    for bus in [&web, &tcp, &hub] {
        within("shutdown", bus.shutdown()).await.unwrap();
    }
}
