//! Faults in an in-memory mesh: crashes, silent peers, goodbyes, garbage on a link.

use std::time::Duration;

use crate::support::raw::RawPeer;
use crate::support::*;
use bytes::Bytes;
use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "mesh.hang")]
struct Hang;

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "mesh.echo", reply = u32)]
struct Echo(u32);

/// b handles `Hang` (never answers, reports when it starts) and `Echo`.
async fn server(net: &InMemNetwork, name: &str) -> (Bus, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel(8);
    let bus = node(net, name)
        .command_handler(move |_: Hang, _ctx| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(()).await;
                std::future::pending::<()>().await;
                HandlerResult::Ok(())
            }
        })
        .command_handler(|e: Echo, _ctx| async move { HandlerResult::Ok(e.0) })
        .start()
        .await
        .unwrap();
    (bus, rx)
}

async fn client(net: &InMemNetwork, name: &str, seed: &str) -> Bus {
    let bus = node(net, name)
        .peers([format!("inmem://{seed}")])
        .start()
        .await
        .unwrap();
    within(
        "the server",
        bus.ready().handlers::<Echo>(Scope::Cluster, 1),
    )
    .await;
    bus
}

#[tokio::test(start_paused = true)]
async fn a_killed_peer_fails_requests_with_peer_lost_then_no_handler() {
    let net = InMemNetwork::new(20);
    let (b, mut started) = server(&net, "b").await;
    let a = client(&net, "a", "b").await;

    let t0 = Instant::now();
    let call = a.commands().send(Hang).timeout(Duration::from_secs(60));
    let (result, ()) = tokio::join!(call, async {
        started.recv().await.unwrap();
        net.kill("b");
    });
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PeerLost);
    assert_eq!(err.peer(), Some(b.node_id()));
    assert!(t0.elapsed() <= PEER_TIMEOUT, "{:?}", t0.elapsed());

    until_view(&a, |v| v.peers.is_empty()).await;
    let err = a.commands().send(Echo(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoHandler);
    a.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_dead_at_the_peer_timeout() {
    let net = InMemNetwork::new(21);
    let (b, mut started) = server(&net, "b").await;
    let a = client(&net, "a", "b").await;

    let call = a.commands().send(Hang).timeout(Duration::from_secs(60));
    let mut cut_at = None;
    let (result, ()) = tokio::join!(call, async {
        started.recv().await.unwrap();
        net.cut("a", "b"); // a black hole: no frame, no close
        cut_at = Some(Instant::now());
    });
    let lost_after = cut_at.unwrap().elapsed();
    assert_eq!(result.unwrap_err().kind(), ErrorKind::PeerLost);
    // Dead once nothing arrived for the peer timeout: not before, and not much after.
    assert!(lost_after >= PEER_TIMEOUT - HEARTBEAT, "{lost_after:?}");
    assert!(lost_after <= PEER_TIMEOUT, "{lost_after:?}");
    until_view(&a, |v| v.peers.is_empty()).await;

    // Healed, the seed is dialled again and serves.
    net.heal("a", "b");
    within("the redial", a.ready().handlers::<Echo>(Scope::Cluster, 1)).await;
    assert_eq!(a.commands().send(Echo(5)).await.unwrap(), 5);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_graceful_shutdown_is_seen_at_once() {
    let net = InMemNetwork::new(22);
    let (b, _started) = server(&net, "b").await;
    let a = client(&net, "a", "b").await;
    assert_eq!(a.membership().borrow().peers.len(), 1);

    let t0 = Instant::now();
    b.shutdown().await.unwrap();
    until_view(&a, |v| v.peers.is_empty()).await;
    assert!(t0.elapsed() < PEER_TIMEOUT, "{:?}", t0.elapsed());
    let err = a.commands().send(Echo(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoHandler);
    a.shutdown().await.unwrap();
}

/// Each link is a secure channel: bytes injected on it are not one of its records and fail
/// their authentication; the same bytes sent by a peer inside its channel reach the frame
/// decoder. Either way that connection closes, and only that one.
#[tokio::test(start_paused = true)]
async fn garbage_on_a_link_closes_that_connection_only() {
    let net = InMemNetwork::new(23);
    let (b, _started) = server(&net, "b").await;
    let a = client(&net, "a", "b").await;
    let c = client(&net, "c", "b").await;
    until_view(&b, |v| v.peers.len() == 2).await;
    let x = RawPeer::new(&net, "x", 23);

    let garbage: [&[u8]; 3] = [
        // A whole frame of an unknown kind.
        &[0, 0, 0, 10, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        // A length far over the limit.
        &[0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        // A Hello after the handshake.
        &[0, 0, 0, 10, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ];
    for bytes in garbage {
        // Injected on a's link, under no key.
        assert_eq!(net.inject("a", "b", Bytes::from_static(bytes)), 1);
        until_view(&b, |v| v.peer_named("a").is_none()).await;
        // c is still served while a's link is down.
        assert_eq!(c.commands().send(Echo(3)).await.unwrap(), 3);
        // a dials again and is served.
        within("a's redial", a.ready().handlers::<Echo>(Scope::Cluster, 1)).await;
        until_view(&b, |v| v.peer_named("a").is_some()).await;
        assert_eq!(a.commands().send(Echo(4)).await.unwrap(), 4);

        // Sealed by x on its own link: the frame decoder gets them, and closes that link.
        let mut conn = x.connect("inmem://b").await;
        until_view(&b, |v| v.peer_named("x").is_some()).await;
        conn.send_bytes(Bytes::from_static(bytes)).await;
        conn.closed().await;
        until_view(&b, |v| v.peer_named("x").is_none()).await;
        assert_eq!(c.commands().send(Echo(5)).await.unwrap(), 5);
        assert_eq!(a.commands().send(Echo(6)).await.unwrap(), 6);
    }
    // x is served again on a new connection.
    let mut conn = x.connect("inmem://b").await;
    let id = conn.send_command(&Echo(7)).await;
    assert_eq!(conn.recv_reply::<u32>(id).await, 7);
    for bus in [&a, &b, &c] {
        bus.shutdown().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn commands_beyond_the_per_peer_cap_are_overloaded() {
    let net = InMemNetwork::new(24);
    let (tx, mut started) = mpsc::channel(8);
    let b = node(&net, "b")
        .max_in_flight_per_peer(2)
        .command_handler(move |_: Hang, _ctx| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(()).await;
                std::future::pending::<()>().await;
                HandlerResult::Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    let a = node(&net, "a").peers(["inmem://b"]).start().await.unwrap();
    within("b", a.ready().handlers::<Hang>(Scope::Cluster, 1)).await;
    let one = a.commands().send(Hang).no_timeout();
    let two = a.commands().send(Hang).no_timeout();
    tokio::select! {
        _ = async { tokio::join!(one, two) } => panic!("they never answer"),
        () = async {
            started.recv().await.unwrap();
            started.recv().await.unwrap();
            let err = a.commands().send(Hang).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Overloaded);
        } => {}
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_hello_of_another_version_is_rejected_and_the_node_keeps_serving() {
    use meshbus_core::wire::control::{ControlMessage, Reject, RejectReason, VersionRange};

    let net = InMemNetwork::new(25);
    let (b, _started) = server(&net, "b").await;
    let a = client(&net, "a", "b").await;
    let x = RawPeer::new(&net, "x", 42);

    // A later version, and the previous one (which knows no groups, and would take a group's
    // events as everyone's), in a Hello inside a secure channel that x completed.
    for version in [99, meshbus_core::wire::PROTOCOL_VERSION - 1] {
        let mut hello = x.hello();
        hello.versions = VersionRange {
            min: version,
            max: version,
        };
        // The connection is closed after the Reject.
        let answer = x.hello_refused("inmem://b", &hello).await;
        let reject = Reject::from_frame(&answer).unwrap();
        assert_eq!(reject.reason, RejectReason::VersionMismatch);
    }
    // b never counted x as a peer, and still serves a.
    assert!(b.membership().borrow().peers.iter().all(|p| p.name != "x"));
    assert_eq!(a.commands().send(Echo(9)).await.unwrap(), 9);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn dropping_a_bus_stops_its_node_and_peers_notice() {
    let net = InMemNetwork::new(26);
    let (b, _started) = server(&net, "b").await;
    let a = client(&net, "a", "b").await;
    drop(b);
    until_view(&a, |v| v.peers.is_empty()).await;
    let err = a.commands().send(Echo(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoHandler);
    a.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_never_completes_the_handshake_is_closed_at_the_handshake_timeout() {
    use meshbus::transport::{ReadEvent, Transport};

    let net = InMemNetwork::new(27);
    let b = node(&net, "b")
        .handshake_timeout(Duration::from_millis(300))
        .command_handler(|e: Echo, _ctx| async move { HandlerResult::Ok(e.0) })
        .start()
        .await
        .unwrap();
    assert_eq!(b.listen_addrs(), ["inmem://b".parse().unwrap()]);
    let a = client(&net, "a", "b").await;

    let t0 = Instant::now();
    let mut raw = net
        .transport("x")
        .dial(&"inmem://b".parse().unwrap())
        .await
        .unwrap();
    // Half a frame: a length prefix promising 100 bytes, then 10 of them.
    let mut half = vec![0, 0, 0, 100];
    half.extend_from_slice(&[7; 10]);
    raw.writer
        .write_batch(&mut vec![Bytes::from(half)])
        .await
        .unwrap();
    let end = within("the close", raw.reader.read(1 << 16)).await;
    assert!(matches!(end, Ok(ReadEvent::Closed) | Err(_)), "{end:?}");
    assert_eq!(Instant::now() - t0, Duration::from_millis(300));
    assert_eq!(a.commands().send(Echo(3)).await.unwrap(), 3);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_zero_handshake_timeout_is_a_config_error() {
    let net = InMemNetwork::new(28);
    let err = node(&net, "b")
        .handshake_timeout(Duration::ZERO)
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("handshake timeout"), "{err}");
}
