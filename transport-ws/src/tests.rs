//! The transport over real sockets on 127.0.0.1: frames both ways, limits, malformed
//! messages, pings, paths and timeouts.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use meshbus_core::transport::Addr;
use meshbus_core::wire::{Frame, FrameCodec, FrameKind, DEFAULT_MAX_FRAME_SIZE};
use meshbus_core::{Connection, ErrorKind, Listener, ReadEvent, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::{WsTransport, FRAGMENT_SIZE};

const LIMIT: usize = DEFAULT_MAX_FRAME_SIZE;
const BOUND: Duration = Duration::from_secs(10);

async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, fut).await.expect("timed out")
}

/// An encoded frame of `kind` with a body of `len` bytes.
fn frame(kind: FrameKind, len: usize) -> Bytes {
    let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let codec = FrameCodec {
        compress_threshold: usize::MAX,
        ..FrameCodec::default()
    };
    let mut buf = BytesMut::new();
    codec
        .encode(&Frame::new(kind, Bytes::from(body)), &mut buf)
        .unwrap();
    buf.freeze()
}

/// The next frame or error, skipping `Partial`s (a large message may arrive in pieces).
async fn next(
    reader: &mut dyn meshbus_core::FrameReader,
    limit: usize,
) -> Result<ReadEvent, meshbus_core::Error> {
    within(async {
        loop {
            match reader.read(limit).await {
                Ok(ReadEvent::Partial) => continue,
                other => return other,
            }
        }
    })
    .await
}

async fn listen(t: &WsTransport) -> Box<dyn Listener> {
    t.listen(&"ws://127.0.0.1:0/mesh".parse().unwrap())
        .await
        .unwrap()
}

/// A connected pair: (dialled, accepted).
async fn pair(t: &WsTransport) -> (Connection, Connection, Box<dyn Listener>) {
    let mut listener = listen(t).await;
    let addr = listener.local_addr().clone();
    let (dialled, accepted) =
        within(async { tokio::join!(t.dial(&addr), listener.accept()) }).await;
    (dialled.unwrap(), accepted.unwrap(), listener)
}

/// A plain tungstenite client upgraded to `path` on `listener`.
async fn raw_client(listener: &dyn Listener, path: &str) -> WebSocketStream<TcpStream> {
    let port = port(listener);
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let url = format!("ws://127.0.0.1:{port}{path}");
    let (ws, _) = within(tokio_tungstenite::client_async(url, tcp))
        .await
        .unwrap();
    ws
}

fn port(listener: &dyn Listener) -> u16 {
    let addr = listener.local_addr().rest();
    let authority = addr.split('/').next().unwrap();
    authority.rsplit_once(':').unwrap().1.parse().unwrap()
}

#[tokio::test]
async fn port_zero_reports_the_port_and_keeps_the_path() {
    let listener = listen(&WsTransport::new()).await;
    let addr = listener.local_addr();
    assert_eq!(addr.scheme(), "ws");
    assert!(addr.rest().starts_with("127.0.0.1:"), "{addr}");
    assert!(addr.rest().ends_with("/mesh"), "{addr}");
    assert_ne!(port(&*listener), 0);
}

#[tokio::test]
async fn frames_cross_whole_both_ways_including_fragmented_ones() {
    let t = WsTransport::new();
    let (mut a, mut b, _l) = pair(&t).await;
    let sent = vec![
        frame(FrameKind::Ping, 0),
        frame(FrameKind::Event, 1000),
        frame(FrameKind::Event, 3 * FRAGMENT_SIZE + 17), // several WebSocket fragments
        frame(FrameKind::Pong, 0),
    ];
    let mut batch = sent.clone();
    within(a.writer.write_batch(&mut batch)).await.unwrap();
    assert!(batch.is_empty(), "the batch is drained");
    for want in &sent {
        let got = next(&mut *b.reader, LIMIT).await.unwrap();
        assert_eq!(got, ReadEvent::Frame(want.clone()));
    }
    let mut back = vec![frame(FrameKind::Command, 10)];
    within(b.writer.write_batch(&mut back)).await.unwrap();
    assert_eq!(
        next(&mut *a.reader, LIMIT).await.unwrap(),
        ReadEvent::Frame(frame(FrameKind::Command, 10))
    );
    within(a.writer.close()).await.unwrap();
    assert_eq!(
        next(&mut *b.reader, LIMIT).await.unwrap(),
        ReadEvent::Closed
    );
    let err = a
        .writer
        .write_batch(&mut vec![frame(FrameKind::Ping, 0)])
        .await;
    assert_eq!(err.unwrap_err().kind(), ErrorKind::Closed);
}

#[tokio::test]
async fn a_message_over_max_message_size_is_too_large() {
    let small = WsTransport::new().max_message_size(64 * 1024);
    let mut listener = listen(&small).await;
    let mut raw = raw_client(&*listener, "/mesh").await;
    let mut node = within(listener.accept()).await.unwrap();
    // 3 fragments of 30 KiB: each fragment passes, the message does not.
    let big = frame(FrameKind::Event, 90 * 1024);
    let mut start = 0;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
    while start < big.len() {
        let end = big.len().min(start + 30 * 1024);
        let op = if start == 0 {
            Data::Binary
        } else {
            Data::Continue
        };
        let piece = WsFrame::message(big.slice(start..end), OpCode::Data(op), end == big.len());
        if raw.feed(Message::Frame(piece)).await.is_err() {
            break;
        }
        start = end;
    }
    let _ = raw.flush().await;
    let err = next(&mut *node.reader, LIMIT).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
}

#[tokio::test]
async fn malformed_messages_are_decode_errors() {
    let t = WsTransport::new();
    let mut listener = listen(&t).await;
    let good = frame(FrameKind::Ping, 0);
    let mut longer = BytesMut::from(&good[..]);
    longer.put_u8(0); // one byte more than the prefix says
    let mut shorter = BytesMut::new(); // the prefix promises more than the message holds
    shorter.put_u32(100);
    shorter.put_slice(&[0; 20]);
    let cases: Vec<(&str, Message)> = vec![
        ("too long", Message::Binary(longer.freeze())),
        ("too short", Message::Binary(shorter.freeze())),
        ("no prefix", Message::Binary(Bytes::from_static(&[0, 0]))),
        ("empty", Message::Binary(Bytes::new())),
        ("text", Message::text("hello")),
    ];
    for (what, message) in cases {
        let mut raw = raw_client(&*listener, "/mesh").await;
        let mut node = within(listener.accept()).await.unwrap();
        raw.send(message).await.unwrap();
        let err = next(&mut *node.reader, LIMIT).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode, "{what}: {err}");
    }
}

#[tokio::test]
async fn pings_are_answered_while_the_node_writes_nothing() {
    let t = WsTransport::new();
    let mut listener = listen(&t).await;
    let mut raw = raw_client(&*listener, "/mesh").await;
    let mut node = within(listener.accept()).await.unwrap();
    // The node only reads; its writer is idle.
    let reader = tokio::spawn(async move {
        let mut events = Vec::new();
        loop {
            match node.reader.read(LIMIT).await {
                Ok(ReadEvent::Closed) | Err(_) => return events,
                Ok(e) => events.push(e),
            }
        }
    });
    raw.send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    let pong = within(raw.next()).await.unwrap().unwrap();
    assert_eq!(pong, Message::Pong(Bytes::from_static(b"are you there")));
    raw.send(Message::Binary(frame(FrameKind::Ping, 0)))
        .await
        .unwrap();
    raw.close(None).await.unwrap();
    let events = within(reader).await.unwrap();
    assert!(
        events.contains(&ReadEvent::Frame(frame(FrameKind::Ping, 0))),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_wrong_path_is_refused_at_the_upgrade() {
    let t = WsTransport::new();
    let listener = listen(&t).await;
    let wrong: Addr = format!("ws://127.0.0.1:{}/other", port(&*listener))
        .parse()
        .unwrap();
    let err = within(t.dial(&wrong)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(err.to_string().contains("404"), "{err}");
}

#[tokio::test]
async fn half_a_message_is_partial_and_read_is_cancel_safe() {
    let t = WsTransport::new();
    let mut listener = listen(&t).await;
    let mut raw = raw_client(&*listener, "/mesh").await;
    let mut node = within(listener.accept()).await.unwrap();
    // A cancelled read loses nothing.
    assert!(
        tokio::time::timeout(Duration::from_millis(20), node.reader.read(LIMIT))
            .await
            .is_err()
    );
    let big = frame(FrameKind::Event, 2 * FRAGMENT_SIZE + 5);
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
    let first = WsFrame::message(
        big.slice(..FRAGMENT_SIZE),
        OpCode::Data(Data::Binary),
        false,
    );
    raw.send(Message::Frame(first)).await.unwrap();
    assert_eq!(
        within(node.reader.read(LIMIT)).await.unwrap(),
        ReadEvent::Partial
    );
    // The fragment may arrive in several pieces, each a `Partial`; then nothing more arrives
    // and the next read waits (and is cancelled).
    let mut waited = false;
    for _ in 0..100 {
        match tokio::time::timeout(Duration::from_millis(20), node.reader.read(LIMIT)).await {
            Ok(event) => assert_eq!(event.unwrap(), ReadEvent::Partial),
            Err(_) => {
                waited = true;
                break;
            }
        }
    }
    assert!(waited, "half a message is never a frame");
    for (range, last) in [
        (FRAGMENT_SIZE..2 * FRAGMENT_SIZE, false),
        (2 * FRAGMENT_SIZE..big.len(), true),
    ] {
        let piece = WsFrame::message(big.slice(range), OpCode::Data(Data::Continue), last);
        raw.send(Message::Frame(piece)).await.unwrap();
    }
    loop {
        match within(node.reader.read(LIMIT)).await.unwrap() {
            ReadEvent::Partial => continue,
            got => {
                assert_eq!(got, ReadEvent::Frame(big));
                break;
            }
        }
    }
}

#[tokio::test]
async fn a_client_that_never_upgrades_is_dropped() {
    let t = WsTransport::new().upgrade_timeout(Duration::from_millis(200));
    let listener = listen(&t).await;
    let mut tcp = TcpStream::connect(("127.0.0.1", port(&*listener)))
        .await
        .unwrap();
    tcp.write_all(b"GET /mesh HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = within(tcp.read(&mut buf)).await.unwrap_or(0);
    assert_eq!(n, 0, "the listener closes the connection");
}

#[tokio::test]
async fn a_dial_nobody_answers_is_an_io_error() {
    let t = WsTransport::new().connect_timeout(Duration::from_secs(2));
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr: Addr = format!("ws://127.0.0.1:{port}/mesh").parse().unwrap();
    let err = within(t.dial(&addr)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    let bad: Addr = "tcp://127.0.0.1:1".parse().unwrap();
    assert_eq!(t.dial(&bad).await.unwrap_err().kind(), ErrorKind::Config);
}

#[tokio::test]
async fn dropping_the_listener_stops_listening() {
    let t = WsTransport::new();
    let listener = listen(&t).await;
    let addr = listener.local_addr().clone();
    drop(listener);
    // The accept task ends with its owner; the port is closed (possibly after a moment).
    let refused = within(async {
        loop {
            if t.dial(&addr).await.is_err() {
                return true;
            }
            // Not synchronisation but a bounded retry: nothing says when the accept task has
            // ended, so dial again until the port refuses.
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(refused);
}

#[tokio::test]
async fn a_burst_is_taken_without_waiting_and_what_is_not_a_frame_waits_for_read() {
    let t = WsTransport::new();
    let mut listener = listen(&t).await;
    let mut raw = raw_client(&*listener, "/mesh").await;
    let mut node = within(listener.accept()).await.unwrap();
    let frames: Vec<Bytes> = (0..5).map(|i| frame(FrameKind::Event, i * 10)).collect();
    for f in &frames {
        raw.feed(Message::Binary(f.clone())).await.unwrap();
    }
    raw.feed(Message::Ping(Bytes::from_static(b"p")))
        .await
        .unwrap();
    raw.feed(Message::text("not a frame")).await.unwrap();
    raw.flush().await.unwrap();

    // The first frame is waited for. All the messages went out in one write on loopback, so
    // the read that found the first took in the rest: they come without waiting.
    let ReadEvent::Frame(first) = next(&mut *node.reader, LIMIT).await.unwrap() else {
        panic!("expected a frame");
    };
    assert_eq!(first, frames[0]);
    let mut got = vec![first];
    while let Some(f) = node.reader.try_read_frame(LIMIT).unwrap() {
        got.push(f);
    }
    assert_eq!(got, frames, "the burst, the ping skipped");
    // The text message is not lost by a burst that stops at it: `read` reports it.
    assert_eq!(node.reader.try_read_frame(LIMIT).unwrap(), None);
    let err = next(&mut *node.reader, LIMIT).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
}
