//! Hostile bytes written to a live node's TCP port: random bytes, an HTTP request, a 4 GiB
//! length prefix (before and after a handshake), half a frame that never completes, and a
//! connection that says nothing. Each time the node closes that connection, allocates nothing
//! of the declared size (a counting allocator records the largest single allocation), and
//! keeps serving its healthy peer. Bytes in clear meet the secure handshake; after a completed
//! one (secure handshake and `Hello`), the 4 GiB prefix is sealed, so the frame decoder meets
//! it.
//!
//! Real time and real sockets: every wait is bounded, and every wait is for an event (an end
//! of stream, a reply), never a sleep.

// A binary of its own, not in a suite: it installs a counting `#[global_allocator]`, which is
// per binary and would count (and be disturbed by) every other test's allocations.

#![cfg(feature = "tcp")]

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use meshbus::prelude::*;
use meshbus::tcp::TcpTransport;
use meshbus::transport::{FrameReader, ReadEvent};
use serde::{Deserialize, Serialize};
use support::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use support::alloc::{Counting, LARGEST};
use support::raw_tcp;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The tests of this file share the allocation record, so they take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Far below any declared size here (4 GiB, 1.2 GB for "GET "), and below the 16 MiB frame
/// limit, so even a frame of the largest allowed size being reserved would show.
const LARGEST_ALLOWED: usize = 4 * 1024 * 1024;

/// The handshake timeout of the node under attack, in the tests that do not wait for it: an
/// input that is closed well before it was refused for what it is.
const PATIENT_HANDSHAKE: Duration = Duration::from_secs(30);

/// The handshake timeout in the slow tests.
const SHORT_HANDSHAKE: Duration = Duration::from_millis(300);

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "hostile.echo", reply = u32)]
struct Echo(u32);

/// A node listening on TCP, and a healthy peer connected to it.
struct Target {
    node: Bus,
    addr: SocketAddr,
    peer: Bus,
    round_trips: u32,
}

impl Target {
    async fn start(handshake_timeout: Duration) -> Target {
        let node = Bus::builder()
            .name("target")
            .transport(TcpTransport::new())
            .listen("tcp://127.0.0.1:0")
            .handshake_timeout(handshake_timeout)
            .command_handler(|e: Echo, _ctx| async move { HandlerResult::Ok(e.0) })
            .start()
            .await
            .unwrap();
        let listen = node.listen_addrs()[0].clone();
        let addr = listen
            .rest()
            .parse()
            .expect("a tcp listener reports ip:port");
        let peer = Bus::builder()
            .name("healthy")
            .transport(TcpTransport::new())
            .peers([listen.to_string()])
            .start()
            .await
            .unwrap();
        within("the mesh", peer.ready().handlers::<Echo>(Scope::Cluster, 1)).await;
        Target {
            node,
            addr,
            peer,
            round_trips: 0,
        }
    }

    /// The healthy peer still gets answers over its link, which was never dropped.
    async fn still_serves(&mut self) {
        self.round_trips += 1;
        let n = self.round_trips;
        let reply = within("a round trip", self.peer.commands().send(Echo(n))).await;
        assert_eq!(reply.unwrap(), n);
        let view = self.node.membership().borrow().clone();
        assert!(view.peer(self.peer.node_id()).is_some(), "{view:?}");
    }

    async fn stop(self) {
        within("shutdown", self.peer.shutdown()).await.unwrap();
        within("shutdown", self.node.shutdown()).await.unwrap();
    }
}

/// Reads until the node closes the connection (end of stream or reset), discarding what it
/// sends; returns how long that took from `since`.
async fn closed_by_the_node(stream: &mut TcpStream, since: Instant, what: &str) -> Duration {
    let mut buf = [0u8; 4096];
    within(
        &format!("the node to close the connection after {what}"),
        async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) => return,
                    Ok(_) => continue,
                    Err(e) => {
                        use std::io::ErrorKind as K;
                        assert!(
                            matches!(e.kind(), K::ConnectionReset | K::ConnectionAborted),
                            "{what}: {e}"
                        );
                        return;
                    }
                }
            }
        },
    )
    .await;
    since.elapsed()
}

/// Reads frames inside the secure channel until the node closes the connection; returns how
/// long that took from `since`.
async fn closed_inside_the_channel(reader: &mut dyn FrameReader, since: Instant) -> Duration {
    within(
        "the node to close the connection after a 4 GiB prefix",
        async {
            loop {
                match reader.read(1 << 20).await {
                    Ok(ReadEvent::Closed) => return,
                    Ok(_) => continue,
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::Io, "{e}");
                        return;
                    }
                }
            }
        },
    )
    .await;
    since.elapsed()
}

/// Connects, writes `bytes`, and waits for the node to close; checks the allocation record.
async fn attack(target: &Target, bytes: &[u8], what: &str) -> Duration {
    LARGEST.store(0, Ordering::SeqCst);
    let since = Instant::now();
    let mut stream = TcpStream::connect(target.addr).await.unwrap();
    // The node may close before everything is written; that is the outcome looked for.
    let _ = stream.write_all(bytes).await;
    let took = closed_by_the_node(&mut stream, since, what).await;
    let largest = LARGEST.load(Ordering::SeqCst);
    assert!(
        largest < LARGEST_ALLOWED,
        "{what}: an allocation of {largest} bytes"
    );
    took
}

/// Bytes from a fixed seed (xorshift), the same on every run.
fn random_bytes(n: usize, mut state: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

#[tokio::test]
async fn garbage_and_huge_prefixes_are_refused_for_what_they_are() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut target = Target::start(PATIENT_HANDSHAKE).await;
    let a_4gib_prefix: &[u8] = &[0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4, 5, 6, 7, 8];
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "random bytes",
            random_bytes(64 * 1024, 0x9E37_79B9_7F4A_7C15),
        ),
        (
            "an HTTP request",
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\n\r\n"
                .to_vec(),
        ),
        ("a 4 GiB length prefix", a_4gib_prefix.to_vec()),
        // Just under 4 GiB and a prefix alone, nothing after it.
        ("a 4 GiB - 2 length prefix", vec![0xFF, 0xFF, 0xFF, 0xFE]),
    ];
    for (what, bytes) in cases {
        let took = attack(&target, &bytes, what).await;
        // Refused on sight, not timed out: the handshake timeout is far away.
        assert!(took < PATIENT_HANDSHAKE, "{what}: closed after {took:?}");
        target.still_serves().await;
    }
    target.stop().await;
}

#[tokio::test]
async fn a_4_gib_prefix_after_a_completed_handshake_is_refused_too() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut target = Target::start(PATIENT_HANDSHAKE).await;

    let stream = TcpStream::connect(target.addr).await.unwrap();
    let (key, identity) = raw_tcp::own_identity(0xBAD_C0DE, "mallory");
    let (mut conn, _) = raw_tcp::handshake(stream, &key, identity, 1 << 20).await;
    within(
        "mallory to join",
        target
            .node
            .membership()
            .wait_for(|v| v.peers.iter().any(|p| p.name == "mallory")),
    )
    .await
    .unwrap();

    // Now past the handshake, where frames may be up to 16 MiB: declare 4 GiB, sealed, so
    // the node's frame decoder reads the prefix.
    LARGEST.store(0, Ordering::SeqCst);
    let since = Instant::now();
    let _ = conn
        .writer
        .write_all(&[0xFF, 0xFF, 0xFF, 0xFF, 9, 9, 9, 9])
        .await;
    let took = closed_inside_the_channel(&mut *conn.reader, since).await;
    let largest = LARGEST.load(Ordering::SeqCst);
    assert!(
        largest < LARGEST_ALLOWED,
        "an allocation of {largest} bytes"
    );
    assert!(took < PATIENT_HANDSHAKE);
    within(
        "mallory to be dropped",
        target
            .node
            .membership()
            .wait_for(|v| v.peers.iter().all(|p| p.name != "mallory")),
    )
    .await
    .unwrap();
    target.still_serves().await;
    target.stop().await;
}

#[tokio::test]
async fn half_a_frame_or_silence_is_closed_at_the_handshake_timeout() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut target = Target::start(SHORT_HANDSHAKE).await;
    // A prefix promising a 100-byte frame, then 10 of them: a slow loris.
    let mut half = vec![0, 0, 0, 100];
    half.extend_from_slice(&[0x42; 10]);
    for (what, bytes) in [("half a frame", half), ("nothing at all", Vec::new())] {
        let took = attack(&target, &bytes, what).await;
        // The node accepted after our connect returned, and its clock starts there.
        assert!(
            took >= SHORT_HANDSHAKE - Duration::from_millis(10),
            "{what}: closed after {took:?}, before the handshake timeout"
        );
        target.still_serves().await;
    }
    target.stop().await;
}
