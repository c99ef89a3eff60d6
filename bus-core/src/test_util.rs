//! A conformance suite for [`Transport`] implementations (feature `test-util`).
//!
//! Every transport owes the runtime the same contract (see [`crate::transport`]): a dial meets
//! an accept, frames arrive whole and in order, a frame over the reader's limit is refused
//! before it is allocated, a closed writer ends the other end's reader. [`check_transport`]
//! runs every check against one transport; each check is also public, for a transport that
//! wants to run them one test at a time. A failed check panics with what was wrong, as a test
//! assertion does: this module is for tests only.
//!
//! ```
//! # use meshbus_core::transport::{Addr, Connection, Listener, Transport};
//! # use meshbus_core::{async_trait, Error, ErrorKind};
//! # // A transport whose every call fails, so the example needs no network: a real one
//! # // passes `check_transport` instead of being refused by it.
//! # #[derive(Debug)]
//! # struct Broken;
//! # #[async_trait]
//! # impl Transport for Broken {
//! #     fn schemes(&self) -> &'static [&'static str] { &["broken"] }
//! #     async fn listen(&self, _: &Addr) -> Result<Box<dyn Listener>, Error> {
//! #         Err(Error::new(ErrorKind::Closed))
//! #     }
//! #     async fn dial(&self, _: &Addr) -> Result<Connection, Error> { Err(Error::new(ErrorKind::Closed)) }
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use meshbus_core::test_util::check_transport;
//!
//! // In a transport crate's tests: `check_transport(&MyTransport::new(), &addr).await`.
//! let addr = "broken://here".parse().unwrap();
//! let run = tokio::spawn(async move { check_transport(&Broken, &addr).await });
//! assert!(run.await.is_err(), "a transport that cannot listen fails the suite");
//! # }
//! ```

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::transport::{Addr, Connection, Listener, ReadEvent, ThroughWrite, Transport};
use crate::wire::{Frame, FrameCodec, FrameKind};
use crate::ErrorKind;

/// The bound on any one step of a check: a transport that takes longer is taken to hang.
pub const STEP_BOUND: Duration = Duration::from_secs(20);

/// Runs every check of this module against `transport`, each on a fresh listener on `listen`
/// (an address the transport can listen on more than once in a row, such as port 0).
///
/// # Panics
///
/// When the transport breaks its contract, naming the check and what went wrong.
pub async fn check_transport(transport: &dyn Transport, listen: &Addr) {
    dial_meets_accept(transport, listen).await;
    frames_arrive_whole_and_in_order(transport, listen).await;
    a_frame_at_the_limit_arrives_and_one_over_is_refused(transport, listen).await;
    closing_the_writer_ends_the_reader(transport, listen).await;
    a_write_through_left_unfinished_is_finished_by_the_writer(transport, listen).await;
    a_batch_larger_than_the_transport_holds_arrives_whole(transport, listen).await;
}

/// Listens on `listen`, dials the listener's resolved address and accepts: the two ends of
/// one connection, (dialled, accepted).
///
/// # Panics
///
/// When listening, dialling or accepting fails or hangs.
pub async fn connect(transport: &dyn Transport, listen: &Addr) -> (Connection, Connection) {
    let mut listener: Box<dyn Listener> = step("listen", transport.listen(listen))
        .await
        .unwrap_or_else(|e| panic!("listen on {listen}: {e}"));
    let resolved = listener.local_addr().clone();
    let (dialled, accepted) = step("dial and accept", async {
        tokio::join!(transport.dial(&resolved), listener.accept())
    })
    .await;
    let dialled = dialled.unwrap_or_else(|e| panic!("dial the resolved address {resolved}: {e}"));
    let accepted = accepted.unwrap_or_else(|e| panic!("accept on {resolved}: {e}"));
    (dialled, accepted)
}

/// The listener's resolved address is dialable, and a frame goes each way.
///
/// # Panics
///
/// When it is not so.
pub async fn dial_meets_accept(transport: &dyn Transport, listen: &Addr) {
    let (mut a, mut b) = connect(transport, listen).await;
    send(&mut a, vec![frame(1, 8)]).await;
    assert_eq!(
        next_frame(&mut b, LIMIT).await,
        frame(1, 8),
        "dialled to accepted"
    );
    send(&mut b, vec![frame(2, 8)]).await;
    assert_eq!(
        next_frame(&mut a, LIMIT).await,
        frame(2, 8),
        "accepted to dialled"
    );
}

/// Small frames, in one batch and in many, arrive whole, once each and in order.
///
/// # Panics
///
/// When a frame is lost, cut, repeated or reordered.
pub async fn frames_arrive_whole_and_in_order(transport: &dyn Transport, listen: &Addr) {
    let (mut a, mut b) = connect(transport, listen).await;
    let sent: Vec<Bytes> = (0..200).map(|i| frame(i, (i % 50) as usize)).collect();
    let (batch, singles) = sent.split_at(100);
    let write = async {
        send(&mut a, batch.to_vec()).await;
        for f in singles {
            send(&mut a, vec![f.clone()]).await;
        }
    };
    let read = async {
        let mut got = Vec::with_capacity(sent.len());
        while got.len() < sent.len() {
            got.push(next_frame(&mut b, LIMIT).await);
        }
        got
    };
    let ((), got) = tokio::join!(write, read);
    assert!(
        got == sent,
        "the frames arrived cut, repeated or out of order"
    );
}

/// A frame exactly at the reader's limit arrives whole; one a byte over it is refused with
/// [`TooLarge`](ErrorKind::TooLarge).
///
/// # Panics
///
/// When it is not so.
pub async fn a_frame_at_the_limit_arrives_and_one_over_is_refused(
    transport: &dyn Transport,
    listen: &Addr,
) {
    let big = frame(7, 256 * 1024);
    let at_limit = big.len() - 4;
    let (mut a, mut b) = connect(transport, listen).await;
    let (_, got) = tokio::join!(
        send(&mut a, vec![big.clone()]),
        next_frame(&mut b, at_limit)
    );
    assert!(got == big, "a frame at the limit arrived changed");

    let (mut a, mut b) = connect(transport, listen).await;
    let read = async {
        loop {
            match step("a refusal", b.reader.read(at_limit - 1)).await {
                Ok(ReadEvent::Partial) => continue,
                other => return other,
            }
        }
    };
    // The writer may fail or wait once the reader refused: only the reader's answer counts.
    let write = async {
        let _ = tokio::time::timeout(STEP_BOUND, a.writer.write_batch(&mut vec![big])).await;
    };
    let (got, ()) = tokio::join!(read, write);
    match got {
        Err(e) => assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}"),
        Ok(event) => panic!("a frame over the limit was not refused: {event:?}"),
    }
}

/// After the frames written before it, [`close`](crate::transport::FrameWriter::close) reaches
/// the other end as [`ReadEvent::Closed`].
///
/// # Panics
///
/// When the reader does not see the frames then the end.
pub async fn closing_the_writer_ends_the_reader(transport: &dyn Transport, listen: &Addr) {
    let (mut a, mut b) = connect(transport, listen).await;
    send(&mut a, vec![frame(1, 8), frame(2, 8)]).await;
    step("close", a.writer.close())
        .await
        .unwrap_or_else(|e| panic!("close: {e}"));
    assert_eq!(next_frame(&mut b, LIMIT).await, frame(1, 8));
    assert_eq!(next_frame(&mut b, LIMIT).await, frame(2, 8));
    loop {
        match step("the end", b.reader.read(LIMIT)).await {
            Ok(ReadEvent::Partial) => continue,
            Ok(ReadEvent::Closed) => break,
            other => panic!("expected the end of the connection, read {other:?}"),
        }
    }
}

/// How many frames [`a_write_through_left_unfinished_is_finished_by_the_writer`] writes through
/// at most while nobody reads, waiting for the transport to fill up.
const FILL_BOUND: u64 = 8192;

/// If the writer offers a [write-through](crate::transport::FrameWriter::write_through):
/// frames written through while nobody reads fill the transport until one is taken in part
/// (or taken and left unflushed, or not taken at all); the writer then finishes it before the
/// frames written after it, through the writer and through again, and the other end reads
/// every frame whole, once and in order. A transport without write-through passes as it is.
///
/// # Panics
///
/// When a frame is lost, cut, repeated or reordered, or the transport never fills up.
pub async fn a_write_through_left_unfinished_is_finished_by_the_writer(
    transport: &dyn Transport,
    listen: &Addr,
) {
    let (mut a, mut b) = connect(transport, listen).await;
    let Some(through) = a.writer.write_through() else {
        return;
    };
    assert!(
        a.writer.write_through().is_none(),
        "write_through is handed out once"
    );
    // Odd sizes, so a full socket tends to take the last frame in part: large frames first
    // (a Unix socket takes a frame of one buffer's size whole or not at all), smaller ones
    // for a transport that writes large frames only through its writer.
    let mut sent = Vec::new();
    let mut left = None;
    let mut size = 0;
    for try_size in [160 * 1024 + 11, 16 * 1024 + 11] {
        size = try_size;
        for id in 0..FILL_BOUND {
            let f = noisy_frame(id, size);
            match through.try_write(f.clone()) {
                ThroughWrite::Written => sent.push(f),
                ThroughWrite::NotTaken(back) => {
                    assert!(back == f, "a frame not taken came back changed");
                    break;
                }
                other => {
                    sent.push(f);
                    left = Some(other);
                    break;
                }
            }
        }
        if !sent.is_empty() || left.is_some() {
            break;
        }
    }
    assert!(
        sent.len() < FILL_BOUND as usize,
        "{FILL_BOUND} frames of {size} bytes written through, none refused or left unfinished"
    );
    let more: Vec<Bytes> = (0..8).map(|i| noisy_frame(FILL_BOUND + i, size)).collect();
    let write = async {
        // What the write-through left goes first: a rest as a frame of its own, an unflushed
        // frame with an empty batch.
        match left {
            Some(ThroughWrite::Rest(rest)) => send(&mut a, vec![rest]).await,
            Some(ThroughWrite::Unflushed) => send(&mut a, Vec::new()).await,
            _ => {}
        }
        send(&mut a, more[..4].to_vec()).await;
        // Through again once the writer is idle; what it does not take goes by the writer.
        for f in &more[4..] {
            match through.try_write(f.clone()) {
                ThroughWrite::Written => {}
                ThroughWrite::NotTaken(back) => send(&mut a, vec![back]).await,
                ThroughWrite::Rest(rest) => send(&mut a, vec![rest]).await,
                ThroughWrite::Unflushed => send(&mut a, Vec::new()).await,
            }
        }
    };
    let expected = sent.len() + more.len();
    let read = async {
        let mut got = Vec::with_capacity(expected);
        while got.len() < expected {
            got.push(next_frame(&mut b, LIMIT).await);
        }
        got
    };
    let ((), got) = tokio::join!(write, read);
    sent.extend(more);
    let first_bad = got.iter().zip(&sent).position(|(g, s)| g != s);
    assert!(
        first_bad.is_none(),
        "frame {first_bad:?} of {expected} arrived cut, repeated or out of order"
    );
}

/// One batch of many frames of odd sizes, megabytes more than a socket's buffers hold, read
/// while it is written: the transport takes it in many parts (a vectored write cut inside a
/// frame, or between two), and the other end reads every frame whole, once and in order.
///
/// # Panics
///
/// When a frame is lost, cut, repeated or reordered.
pub async fn a_batch_larger_than_the_transport_holds_arrives_whole(
    transport: &dyn Transport,
    listen: &Addr,
) {
    let (mut a, mut b) = connect(transport, listen).await;
    // More frames than one vectored write takes (1,024 slices), 8 MiB in all.
    let sent: Vec<Bytes> = (0..2048u64)
        .map(|id| noisy_frame(id, 1 + (id as usize * 4099) % 8192))
        .collect();
    let write = send(&mut a, sent.clone());
    let read = async {
        let mut got = Vec::with_capacity(sent.len());
        while got.len() < sent.len() {
            got.push(next_frame(&mut b, LIMIT).await);
        }
        got
    };
    let ((), got) = tokio::join!(write, read);
    let first_bad = got.iter().zip(&sent).position(|(g, s)| g != s);
    assert!(
        first_bad.is_none(),
        "frame {first_bad:?} of {} arrived cut, repeated or out of order",
        sent.len()
    );
}

/// The read limit of the checks but the one about the limit.
const LIMIT: usize = crate::wire::DEFAULT_MAX_FRAME_SIZE;

/// An encoded `Event` frame with request id `id` and a body of `len` bytes.
fn frame(id: u64, len: usize) -> Bytes {
    event_frame(id, (0..len).map(|i| (i as u64 ^ id) as u8).collect())
}

/// An encoded `Event` frame with request id `id` and `body`.
fn event_frame(id: u64, body: Vec<u8>) -> Bytes {
    let mut f = Frame::new(FrameKind::Event, Bytes::from(body));
    f.request_id = id;
    let mut buf = BytesMut::new();
    FrameCodec::default()
        .encode(&f, &mut buf)
        .unwrap_or_else(|e| panic!("encode a test frame: {e}"));
    buf.freeze()
}

/// As [`frame`], with a body that does not compress: its size on the wire is `len`.
fn noisy_frame(id: u64, len: usize) -> Bytes {
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let body: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    event_frame(id, body)
}

async fn send(conn: &mut Connection, mut frames: Vec<Bytes>) {
    step("a write", conn.writer.write_batch(&mut frames))
        .await
        .unwrap_or_else(|e| panic!("write_batch: {e}"));
    assert!(frames.is_empty(), "write_batch left frames in the batch");
}

/// The next whole frame on `conn`, reading through partial ones.
async fn next_frame(conn: &mut Connection, limit: usize) -> Bytes {
    if let Some(f) = conn
        .reader
        .try_read_frame(limit)
        .unwrap_or_else(|e| panic!("try_read_frame: {e}"))
    {
        return f;
    }
    loop {
        match step("a frame", conn.reader.read(limit)).await {
            Ok(ReadEvent::Frame(f)) => return f,
            Ok(ReadEvent::Partial) => continue,
            other => panic!("expected a frame, read {other:?}"),
        }
    }
}

async fn step<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP_BOUND, fut)
        .await
        .unwrap_or_else(|_| panic!("the transport hung on {what} for {STEP_BOUND:?}"))
}
