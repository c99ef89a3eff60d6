//! Admission of inbound connections over real sockets on loopback: a host that floods a node
//! with handshakes is held to its rate, connections beyond the cap on concurrent handshakes
//! are closed at once, and a legitimate peer keeps being served and can still join.
//!
//! The flooding host is `::1` and the legitimate peers come from `127.0.0.1`: two hosts, both
//! loopback. Every loop is bounded in count and every wait in time; no sleeps.

#![cfg(feature = "tcp")]

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::secure::{self, SecureStream};
use crate::support::within;
use bytes::BytesMut;
use meshbus::prelude::*;
use meshbus::tcp::TcpTransport;
use meshbus::transport::ReadEvent;
use meshbus::BusBuilder;
use meshbus::RateLimit;
use meshbus_core::wire::control::{ControlMessage, Hello, PeerIdentity, VersionRange};
use meshbus_core::wire::{FrameCodec, FrameKind};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Longer than any wait here (`support::BOUND`): a connection closed within one was refused,
/// not timed out.
const PATIENT_HANDSHAKE: Duration = Duration::from_secs(180);

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "admission.echo", reply = u32)]
struct Echo(u32);

/// A node listening on 127.0.0.1 and ::1; its addresses as (v4 `tcp://..`, v6 socket).
async fn target(configure: impl FnOnce(BusBuilder) -> BusBuilder) -> (Bus, String, SocketAddr) {
    let builder = Bus::builder()
        .name("target")
        .transport(TcpTransport::new())
        .listen("tcp://127.0.0.1:0")
        .listen("tcp://[::1]:0")
        .handshake_timeout(PATIENT_HANDSHAKE)
        .command_handler(|e: Echo, _ctx| async move { HandlerResult::Ok(e.0) });
    let node = configure(builder).start().await.unwrap();
    let addrs = node.listen_addrs();
    let v4 = addrs
        .iter()
        .find(|a| a.host() == Some("127.0.0.1"))
        .unwrap()
        .to_string();
    let v6 = addrs
        .iter()
        .find(|a| a.host() == Some("[::1]"))
        .unwrap()
        .rest()
        .parse()
        .unwrap();
    (node, v4, v6)
}

/// A peer from 127.0.0.1 that joins `addr` and gets an answer from it.
async fn legitimate_peer(addr: &str, name: &str) -> Bus {
    let peer = Bus::builder()
        .name(name)
        .transport(TcpTransport::new())
        .peers([addr.to_owned()])
        .start()
        .await
        .unwrap();
    within(
        "the peer to join",
        peer.ready().handlers::<Echo>(Scope::Cluster, 1),
    )
    .await;
    served(&peer, 1).await;
    peer
}

async fn served(peer: &Bus, n: u32) {
    let reply = within("a round trip", peer.commands().send(Echo(n))).await;
    assert_eq!(reply.unwrap(), n);
}

/// Connects to `addr`, runs the secure handshake and says `Hello` as the node whose static key
/// comes from `seed`, and reads the answer: whether the node welcomed it (else it closed the
/// connection without a word, before or during the secure handshake, or after it).
async fn handshake_once(addr: SocketAddr, seed: u128) -> bool {
    let stream = within("a connect", TcpStream::connect(addr)).await.unwrap();
    let key = secure::identity(seed);
    let mut conn = match SecureStream::dial(stream, &key).await {
        Ok(conn) => conn,
        Err(e) => {
            // Closed or reset: refused; anything else is a fault of ours.
            assert!(
                matches!(e.kind(), ErrorKind::Unauthorized | ErrorKind::Io),
                "{e}"
            );
            return false;
        }
    };
    let hello = Hello {
        versions: VersionRange::CURRENT,
        identity: PeerIdentity {
            node_id: key.node_id().as_u128(),
            incarnation: 1,
            name: "flood".into(),
            network: "default".into(),
            cluster: "default".into(),
            host_id: "elsewhere".into(),
            addresses: Vec::new(),
            public_key: Some(key.public_key()),
        },
        max_frame_size: 1 << 20,
    };
    let codec = FrameCodec::handshake();
    let mut buf = BytesMut::new();
    codec.encode(&hello.to_frame().unwrap(), &mut buf).unwrap();
    // A refused connection may be closed before the Hello is written.
    let _ = conn.writer.write_all(&buf).await;
    loop {
        match within("an answer", conn.reader.read(codec.max_frame_size)).await {
            Ok(ReadEvent::Frame(bytes)) => {
                let frame = codec
                    .decode(&mut BytesMut::from(&bytes[..]))
                    .unwrap()
                    .unwrap();
                assert_eq!(frame.kind, FrameKind::Welcome, "{frame:?}");
                return true;
            }
            Ok(ReadEvent::Partial) => continue,
            Ok(ReadEvent::Closed) | Err(_) => return false,
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_host_flooding_handshakes_is_held_to_its_rate_while_others_join() {
    const BURST: u32 = 10;
    const PER_SECOND: u32 = 2;
    const FLOOD: u32 = 200;
    let (node, v4, v6) =
        target(|b| b.handshake_rate_per_host(Some(RateLimit::new(PER_SECOND, BURST)))).await;
    let first = legitimate_peer(&v4, "first").await;

    // Complete handshakes in a row from ::1, each closed once answered.
    let since = Instant::now();
    let mut welcomed = 0u32;
    for i in 0..FLOOD {
        if handshake_once(v6, 0xF100_0000 + u128::from(i)).await {
            welcomed += 1;
        }
    }
    let elapsed = since.elapsed().as_secs_f64();
    // The burst is welcomed; beyond it, at most the rate over the time the flood took.
    assert!(welcomed >= BURST, "{welcomed} welcomed");
    let allowed = f64::from(BURST) + f64::from(PER_SECOND) * elapsed + 1.0;
    assert!(
        f64::from(welcomed) <= allowed,
        "{welcomed} welcomed in {elapsed:.1} s, at most {allowed:.1} allowed"
    );
    assert!(welcomed < FLOOD);

    // The established peer is served, and another host (127.0.0.1) still joins.
    served(&first, 2).await;
    let second = legitimate_peer(&v4, "second").await;
    served(&second, 3).await;

    for bus in [second, first, node] {
        within("shutdown", bus.shutdown()).await.unwrap();
    }
}

#[tokio::test]
async fn connections_beyond_the_concurrent_handshakes_are_closed_at_once() {
    const CAP: usize = 4;
    let (node, v4, v6) = target(|b| {
        b.max_concurrent_handshakes(CAP)
            .handshake_rate_per_host(None)
    })
    .await;
    let first = legitimate_peer(&v4, "first").await;

    // CAP connections that never say a word hold every handshake place (for a minute).
    let mut silent = Vec::new();
    for _ in 0..CAP {
        silent.push(within("a connect", TcpStream::connect(v6)).await.unwrap());
    }
    // Each further one is closed at once, long before its handshake could time out. They are
    // accepted in order, so the silent ones hold their places first.
    let since = Instant::now();
    for i in 0..20u32 {
        assert!(
            !handshake_once(v6, 0xC0DE_0000 + u128::from(i)).await,
            "connection {i} beyond the cap was welcomed"
        );
    }
    assert!(since.elapsed() < PATIENT_HANDSHAKE);
    // The established peer is served throughout.
    served(&first, 2).await;

    // Once the silent ones go, their places are free: a new peer joins.
    drop(silent);
    let second = legitimate_peer(&v4, "second").await;
    served(&second, 3).await;

    for bus in [second, first, node] {
        within("shutdown", bus.shutdown()).await.unwrap();
    }
}

#[tokio::test]
async fn one_host_takes_at_most_its_share_of_the_handshakes_under_way() {
    const CAP: usize = 8;
    const PER_HOST: usize = 2;
    let (node, v4, v6) = target(|b| {
        b.max_concurrent_handshakes(CAP)
            .max_concurrent_handshakes_per_host(PER_HOST)
    })
    .await;
    // One host (::1) opens as many silent connections as the node has places, and says
    // nothing: only its share is held; the others are closed at once.
    let mut silent = Vec::new();
    for _ in 0..CAP {
        silent.push(within("a connect", TcpStream::connect(v6)).await.unwrap());
    }
    let since = Instant::now();
    for i in 0..5u32 {
        assert!(
            !handshake_once(v6, 0x5A5A_0000 + u128::from(i)).await,
            "connection {i} beyond the host's share was welcomed"
        );
    }
    assert!(since.elapsed() < PATIENT_HANDSHAKE);
    // Another host (127.0.0.1) joins meanwhile: the node's other places are free.
    let peer = legitimate_peer(&v4, "other-host").await;
    served(&peer, 1).await;
    drop(silent);
    for bus in [peer, node] {
        within("shutdown", bus.shutdown()).await.unwrap();
    }
}
