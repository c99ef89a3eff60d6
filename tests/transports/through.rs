//! Write-through under load, over TCP, Unix sockets and WebSocket: commands and their replies
//! written from the sender's call while the connection's writer is idle, mixed with frames
//! the writer batches (events, and whatever finds the writer busy), with replies large enough
//! to fill the socket so that a write-through is taken only in part and its writer finishes
//! it. Every reply arrives whole, once and to its caller; commands and events each keep the
//! order they were sent in; the byte budget comes back. Real time: every wait is bounded and
//! waits for an event of the mesh, never a sleep.

#![cfg(any(feature = "tcp", feature = "ws"))]

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Waker};

use crate::support::{bounded, within};
use meshbus::prelude::*;
use meshbus::{BusBuilder, HandlerResult, SubscriptionOptions};
use serde::{Deserialize, Serialize};

use crate::scopes::RUN_BOUND;

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "through.echo", reply = Echoed)]
struct Echo {
    seq: u32,
    /// How many bytes of padding the reply carries.
    reply_len: u32,
    pad: Pad,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Echoed {
    seq: u32,
    pad: Pad,
}

/// Bytes as MessagePack binary (a `Vec<u8>` would be an array of integers).
#[derive(Debug, PartialEq)]
struct Pad(Vec<u8>);

impl Serialize for Pad {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Pad {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Pad;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Pad, E> {
                Ok(Pad(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Pad, E> {
                Ok(Pad(v))
            }
        }
        d.deserialize_byte_buf(Visit)
    }
}

#[derive(Serialize, Deserialize, Event, Debug)]
#[meshbus(name = "through.mark")]
struct Mark(u32);

/// How many commands (and events between them) a run sends.
const COMMANDS: u32 = 240;

/// `len` bytes that do not compress, made from `seq`.
fn padding(seq: u32, len: usize) -> Pad {
    let mut x = u64::from(seq).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut pad = Vec::with_capacity(len + 8);
    while pad.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pad.extend_from_slice(&x.to_le_bytes());
    }
    pad.truncate(len);
    Pad(pad)
}

/// Polls `fut` once, so that a command's frame is sent (written through or queued) now, in
/// the order of these calls.
fn poll_once<F: Future + Unpin>(fut: &mut F) -> Option<F::Output> {
    match Pin::new(fut).poll(&mut TaskContext::from_waker(Waker::noop())) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

/// A server whose handler records the order commands arrive in and answers each with a reply
/// of `reply_len` bytes of padding; a client that sends [`COMMANDS`] commands without waiting
/// for their replies, in order, publishing an event after each.
async fn interleaved_over(node: impl Fn(&str) -> BusBuilder, reply_len: usize) {
    let arrived = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&arrived);
    let server = node("server")
        .command_handler(move |c: Echo, _ctx: Context| {
            // Recorded in the handler's first poll, which the connection's reader makes in
            // the order the frames arrive.
            seen.lock().unwrap().push(c.seq);
            async move {
                HandlerResult::Ok(Echoed {
                    seq: c.seq,
                    pad: padding(c.seq, c.reply_len as usize),
                })
            }
        })
        .start()
        .await
        .unwrap();
    let mut marks = server
        .subscribe_with::<Mark>(SubscriptionOptions::new().capacity(COMMANDS as usize + 1))
        .unwrap();
    let client = node("client")
        .peers([server.listen_addrs()[0].to_string()])
        .start()
        .await
        .unwrap();
    within(
        "the handler",
        client.ready().handlers::<Echo>(Scope::Cluster, 1),
    )
    .await;
    within(
        "the subscriber",
        client.ready().subscribers::<Mark>(Scope::Cluster, 1),
    )
    .await;

    let run = async {
        let mut calls = Vec::new();
        let mut done = Vec::new();
        for seq in 0..COMMANDS {
            let mut call = Box::pin(
                client
                    .commands()
                    .send(Echo {
                        seq,
                        reply_len: reply_len as u32,
                        pad: padding(seq, 4 * 1024),
                    })
                    .into_future(),
            );
            match poll_once(&mut call) {
                Some(reply) => done.push((seq, reply)),
                None => calls.push((seq, call)),
            }
            client.events().publish(Mark(seq)).await.unwrap();
        }
        for (seq, call) in calls {
            done.push((seq, call.await));
        }
        done
    };
    let done = bounded(RUN_BOUND, "the commands", run).await;
    assert_eq!(done.len(), COMMANDS as usize);
    for (seq, reply) in done {
        let reply = reply.unwrap_or_else(|e| panic!("command {seq}: {e}"));
        assert!(
            reply
                == Echoed {
                    seq,
                    pad: padding(seq, reply_len),
                },
            "the reply to command {seq} arrived changed or to another caller"
        );
    }
    assert_eq!(
        *arrived.lock().unwrap(),
        (0..COMMANDS).collect::<Vec<_>>(),
        "the commands arrived out of order"
    );
    let mut got = Vec::new();
    while got.len() < COMMANDS as usize {
        got.push(within("an event", marks.recv()).await.unwrap().0);
    }
    assert_eq!(
        got,
        (0..COMMANDS).collect::<Vec<_>>(),
        "events out of order"
    );
    // Every frame written gave its share of the byte budget back (the writer gives it back
    // just after its write, which may be a moment after the reply arrived).
    for bus in [&client, &server] {
        within("the budget back", async {
            while bus.peer_stats().iter().any(|p| p.queued_bytes != 0) {
                tokio::task::yield_now().await;
            }
        })
        .await;
    }
    for bus in [&client, &server] {
        within("shutdown", bus.shutdown()).await.unwrap();
    }
}

#[cfg(feature = "tcp")]
#[tokio::test]
async fn tcp_write_through_keeps_order_and_finishes_what_the_socket_took_in_part() {
    use crate::support::tcp::tcp_node;
    interleaved_over(
        |name| tcp_node(name, "h", "c", "tcp://127.0.0.1:0"),
        96 * 1024,
    )
    .await;
}

#[cfg(all(feature = "tcp", unix))]
#[tokio::test]
async fn unix_write_through_keeps_order_and_finishes_what_the_socket_took_in_part() {
    use crate::support::tcp::unix_node;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    // Larger than a Unix socket's buffer unit, which takes a smaller frame whole or not at all.
    interleaved_over(move |name| unix_node(name, "h", "c", &path), 160 * 1024).await;
}

#[cfg(feature = "ws")]
#[tokio::test]
async fn websocket_write_through_keeps_order_and_finishes_what_it_left_unflushed() {
    use crate::support::ws::ws_node;
    // Within one WebSocket fragment: larger frames are only written by the writer.
    interleaved_over(|name| ws_node(name, "h", "c"), 48 * 1024).await;
}
