//! Hostile clients against a live node listening on WebSocket, which also has a healthy peer:
//! random bytes, an HTTP request that is no upgrade, a 4 GiB WebSocket frame header, a 4 GiB
//! frame length prefix (in clear, where the secure handshake meets it, and sealed after a
//! completed handshake, where the frame decoder does), half a frame that never completes, and
//! an upgrade that never finishes. Each connection is closed by the node within a bound,
//! nothing of the declared size is allocated (a counting allocator records the largest single
//! allocation), and the node keeps serving its peer.

// A binary of its own, not in a suite: it installs a counting `#[global_allocator]`, which is
// per binary and would count (and be disturbed by) every other test's allocations.

#[path = "support/mod.rs"]
mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use meshbus::prelude::*;
use meshbus::transport::{ReadEvent, Transport};
use meshbus::ws::WsTransport;
use meshbus_core::wire::control::{Hello, PeerIdentity, VersionRange};
use serde::{Deserialize, Serialize};
use support::alloc::{Counting, LARGEST};
use support::ws::*;
use support::{secure, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[global_allocator]
static ALLOC: Counting = Counting;

/// No allocation may reach this: the core's default frame limit is 16 MiB, and a node
/// that reserved a declared 16 MiB (let alone 4 GiB) would show here.
const ALLOCATION_CEILING: usize = 1024 * 1024;

/// The node's upgrade and handshake timeouts.
const SHORT: Duration = Duration::from_millis(500);

/// How long the node may take to close a hostile connection.
const CLOSE_BOUND: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "hostile.add", reply = u64)]
struct Add(u64, u64);

/// Reads until the node closes the connection (end of stream or reset), discarding what it
/// sends (an HTTP error, a WebSocket close); fails past [`CLOSE_BOUND`].
async fn closed_by_node(what: &str, tcp: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let mut received = 0usize;
    let closed = tokio::time::timeout(CLOSE_BOUND, async {
        // Bounded: the node sends little (a response or a close frame) before closing.
        while received < 1024 * 1024 {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => received += n,
            }
        }
        false
    })
    .await;
    assert_eq!(
        closed,
        Ok(true),
        "{what}: the node did not close the connection within {CLOSE_BOUND:?}"
    );
    started.elapsed()
}

/// Connects to `port` and upgrades to WebSocket at `path`, returning the raw socket.
async fn upgraded(port: u16, path: &str) -> TcpStream {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let url = format!("ws://127.0.0.1:{port}{path}");
    let (ws, _) = within("the upgrade", tokio_tungstenite::client_async(url, tcp))
        .await
        .unwrap();
    // The node sends nothing before the dialler's first handshake unit, so nothing is lost
    // here.
    ws.into_inner()
}

/// A masked client WebSocket frame header: FIN + binary, the 64-bit length form.
fn ws_header(len: u64) -> Vec<u8> {
    let mut h = vec![0x82, 0x80 | 127];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[1, 2, 3, 4]); // mask key
    h
}

/// A masked client WebSocket binary frame carrying `payload` whole.
fn ws_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut f = ws_header(payload.len() as u64);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Random-looking bytes from a fixed seed (xorshift).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_are_closed_and_the_node_serves_on() {
    let target = Bus::builder()
        .name("target")
        .heartbeat_interval(HEARTBEAT)
        .peer_timeout(PEER_TIMEOUT)
        .handshake_timeout(SHORT)
        .transport(WsTransport::new().upgrade_timeout(SHORT))
        .listen("ws://127.0.0.1:0/meshbus")
        .command_handler(|c: Add, _ctx| async move { HandlerResult::Ok(c.0 + c.1) })
        .start()
        .await
        .unwrap();
    let healthy = ws_node("healthy", "host-1", "default")
        .peers([addr(&target)])
        .start()
        .await
        .unwrap();
    within(
        "the healthy peer",
        healthy.ready().handlers::<Add>(Scope::Cluster, 1),
    )
    .await;
    let port = port(&target);
    let mut round = 0u64;
    let mut serves = async |after: &str| {
        round += 1;
        let reply = within(after, healthy.commands().send(Add(round, 1))).await;
        assert_eq!(reply.unwrap(), round + 1, "a round trip after {after}");
    };
    serves("start").await;

    // Random bytes instead of an HTTP request.
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let _ = tcp.write_all(&noise(4096, 7)).await;
    closed_by_node("random bytes", &mut tcp).await;
    serves("random bytes").await;

    // An HTTP request that is not an upgrade.
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.write_all(b"GET /meshbus HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    closed_by_node("a plain HTTP request", &mut tcp).await;
    serves("a plain HTTP request").await;

    // A WebSocket frame header announcing ~4 GiB, and a little of it.
    let mut tcp = upgraded(port, "/meshbus").await;
    let mut attack = ws_header(u64::from(u32::MAX));
    attack.extend_from_slice(&[0u8; 64]);
    tcp.write_all(&attack).await.unwrap();
    closed_by_node("a 4 GiB WebSocket frame header", &mut tcp).await;
    serves("a 4 GiB WebSocket frame header").await;

    // A whole WebSocket message whose meshbus length prefix declares ~4 GiB, in clear: the
    // secure handshake reads it as its first unit.
    let mut tcp = upgraded(port, "/meshbus").await;
    let mut frame = u32::MAX.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0u8; 60]);
    tcp.write_all(&ws_frame(&frame)).await.unwrap();
    closed_by_node("a 4 GiB frame length prefix", &mut tcp).await;
    serves("a 4 GiB frame length prefix").await;

    // The same prefix after a completed handshake (secure channel, `Hello`), sealed: the frame
    // decoder reads it, where frames may be up to 16 MiB.
    let conn = WsTransport::new()
        .dial(&addr(&target).parse().unwrap())
        .await
        .unwrap();
    let key = secure::identity(0xBAD_C0DE);
    let hello = Hello {
        versions: VersionRange::CURRENT,
        identity: PeerIdentity {
            node_id: key.node_id().as_u128(),
            incarnation: 1,
            name: "mallory".into(),
            network: "default".into(),
            cluster: "default".into(),
            host_id: "elsewhere".into(),
            addresses: Vec::new(),
            public_key: Some(key.public_key()),
        },
        max_frame_size: 1 << 20,
    };
    let mut mallory = secure::join(conn.reader, conn.writer, &key, &hello).await;
    let _ = mallory
        .writer
        .write_batch(&mut vec![Bytes::from(frame.clone())])
        .await;
    let closed = tokio::time::timeout(CLOSE_BOUND, async {
        loop {
            match mallory.reader.read(1 << 20).await {
                Ok(ReadEvent::Frame(_) | ReadEvent::Partial) => continue,
                Ok(_) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a sealed 4 GiB prefix: the node did not close the connection within {CLOSE_BOUND:?}"
    );
    within(
        "mallory to be dropped",
        target
            .membership()
            .wait_for(|v| v.peer_named("mallory").is_none()),
    )
    .await
    .unwrap();
    serves("a sealed 4 GiB frame length prefix").await;

    // Slowloris: half a WebSocket frame (announcing 1000 bytes, sending 10), then nothing;
    // the handshake timeout closes it.
    let mut tcp = upgraded(port, "/meshbus").await;
    let mut half = ws_header(1000);
    half.extend_from_slice(&[0u8; 10]);
    tcp.write_all(&half).await.unwrap();
    let took = closed_by_node("half a frame", &mut tcp).await;
    assert!(
        took >= SHORT / 2,
        "closed after {took:?}, before any timeout"
    );
    serves("half a frame").await;

    // An upgrade request that never ends; the upgrade timeout closes it.
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.write_all(b"GET /meshbus HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        .await
        .unwrap();
    let took = closed_by_node("an unfinished upgrade", &mut tcp).await;
    assert!(
        took >= SHORT / 2,
        "closed after {took:?}, before any timeout"
    );
    serves("an unfinished upgrade").await;

    // Still one peer, still the healthy one.
    let view = target.membership().borrow().clone();
    assert_eq!(view.peers.len(), 1, "{view:?}");
    assert!(view.peer_named("healthy").is_some());

    let largest = LARGEST.load(Ordering::Relaxed);
    println!("largest single allocation: {largest} bytes");
    assert!(
        largest < ALLOCATION_CEILING,
        "an allocation of {largest} bytes: something reserved a declared size"
    );

    within("shutdown", healthy.shutdown()).await.unwrap();
    within("shutdown", target.shutdown()).await.unwrap();
}

#[tokio::test]
async fn a_zero_handshake_timeout_is_a_config_error() {
    let err = Bus::builder()
        .handshake_timeout(Duration::ZERO)
        .transport(WsTransport::new())
        .listen("ws://127.0.0.1:0/meshbus")
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}
