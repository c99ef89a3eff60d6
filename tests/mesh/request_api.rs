//! The request API across an in-memory mesh: shared request options, `remote_only`, and
//! seeds given as the `Addr`s another node listens on.

use std::time::Duration;

use crate::support::*;
use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;
use meshbus::{ErrorKind, HandlerResult, RequestOptions};
use serde::{Deserialize, Serialize};

/// Never answers; tells the test it started.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "api.stuck")]
struct Stuck;

/// Always fails.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "api.fail")]
struct Fail;

/// Replies with the node's name and what the handler saw of the request's options.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "api.who", reply = String)]
struct Who;

fn who(
    name: &'static str,
) -> impl Fn(Who, Context) -> std::future::Ready<Result<String, HandlerError>> + Clone {
    move |_: Who, ctx: Context| {
        std::future::ready(Ok(format!(
            "{name} tenant={} corr={} key={}",
            ctx.headers().get("tenant").unwrap_or("-"),
            ctx.correlation_id().unwrap_or("-"),
            ctx.idempotency_key().unwrap_or("-"),
        )))
    }
}

/// `a` and `b` both handle `Who`; `a` seeds itself with `b`'s listen address as an `Addr`.
async fn pair(net: &InMemNetwork) -> (Bus, Bus) {
    let b = node(net, "b")
        .command_handler(who("b"))
        .start()
        .await
        .unwrap();
    let a = node(net, "a")
        .peers(b.listen_addrs())
        .command_handler(who("a"))
        .start()
        .await
        .unwrap();
    within(
        "both handlers",
        a.ready().handlers::<Who>(Scope::Cluster, 2),
    )
    .await;
    (a, b)
}

#[tokio::test(start_paused = true)]
async fn remote_only_reaches_the_remote_handler_while_the_default_prefers_the_local_one() {
    let net = InMemNetwork::new(13);
    let (a, b) = pair(&net).await;
    assert!(a.commands().send(Who).await.unwrap().starts_with("a "));
    for _ in 0..3 {
        let reply = a
            .commands()
            .cluster()
            .remote_only()
            .send(Who)
            .await
            .unwrap();
        assert!(reply.starts_with("b "), "{reply}");
    }
    // send_all without this node's own handler.
    let answers = a.commands().remote_only().send_all(Who).await;
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0, b.node_id());
    assert_eq!(a.commands().send_all(Who).await.len(), 2);

    // Local and remote-only exclude each other.
    let err = a
        .commands()
        .local()
        .remote_only()
        .send(Who)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let answers = a.commands().local().remote_only().send_all(Who).await;
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].1.as_ref().unwrap_err().kind(), ErrorKind::Config);

    // No remote candidate once b is gone, although a still handles it.
    b.shutdown().await.unwrap();
    within("b's route to go", until_view(&a, |v| v.peers.is_empty())).await;
    let err = a.commands().remote_only().send(Who).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoHandler);
    a.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn send_and_send_all_carry_the_same_options_to_local_and_remote_handlers() {
    let net = InMemNetwork::new(13);
    let (a, b) = pair(&net).await;
    let options = RequestOptions::new()
        .timeout(Duration::from_secs(5))
        .header("tenant", "acme")
        .correlation_id("order-42")
        .idempotency_key("k1");
    let seen = "tenant=acme corr=order-42 key=k1";
    let local = a
        .commands()
        .send(Who)
        .options(options.clone())
        .await
        .unwrap();
    assert_eq!(local, format!("a {seen}"));
    let remote = a
        .commands()
        .remote_only()
        .send(Who)
        .options(options.clone())
        .await
        .unwrap();
    assert_eq!(remote, format!("b {seen}"));
    let mut all: Vec<String> = a
        .commands()
        .send_all(Who)
        .header("tenant", "acme")
        .correlation_id("order-42")
        .idempotency_key("k1")
        .await
        .into_iter()
        .map(|(_, r)| r.unwrap())
        .collect();
    all.sort();
    assert_eq!(all, [format!("a {seen}"), format!("b {seen}")]);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn add_peers_takes_one_addr() {
    let net = InMemNetwork::new(13);
    let b = node(&net, "b")
        .command_handler(who("b"))
        .start()
        .await
        .unwrap();
    let a = node(&net, "a").start().await.unwrap();
    a.add_peers(&b.listen_addrs()[0]).await.unwrap();
    within("b's handler", a.ready().handlers::<Who>(Scope::Cluster, 1)).await;
    assert!(a.commands().send(Who).await.unwrap().starts_with("b "));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn errors_about_a_peer_name_it() {
    let net = InMemNetwork::new(13);
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let b = node(&net, "b")
        .command_handler(move |_: Stuck, _ctx: Context| {
            let started_tx = started_tx.clone();
            async move {
                started_tx.send(()).ok();
                std::future::pending::<Result<(), HandlerError>>().await
            }
        })
        .command_handler(|_: Fail, _ctx: Context| async {
            HandlerResult::<()>::Err(HandlerError::msg("no"))
        })
        .start()
        .await
        .unwrap();
    let a = node(&net, "a")
        .peers(b.listen_addrs())
        .start()
        .await
        .unwrap();
    within(
        "b's handlers",
        a.ready().handlers::<Fail>(Scope::Cluster, 1),
    )
    .await;
    let named_b = |err: &meshbus::Error| {
        assert_eq!(err.peer(), Some(b.node_id()), "{err}");
        assert_eq!(err.peer_name(), Some("b"), "{err}");
        assert!(err.to_string().contains("[peer b "), "{err}");
    };

    let err = a.commands().send(Fail).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HandlerFailed);
    named_b(&err);

    let err = a
        .commands()
        .send(Stuck)
        .timeout(Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    named_b(&err);
    within("the first Stuck", started.recv()).await.unwrap();

    let (lost, ()) = tokio::join!(a.commands().send(Stuck).no_timeout(), async {
        within("the second Stuck", started.recv()).await.unwrap();
        net.cut("a", "b");
    });
    let err = lost.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PeerLost);
    named_b(&err);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
