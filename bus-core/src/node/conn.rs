//! One connection: the handshake, then a reader loop (with liveness) and an owned writer task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::actor::ActorMsg;
use super::credit::Grant;
use super::dispatch::{CommandBody, Dispatch, EventSink, InboundCommand, ReplyTo};
use super::peer::{self, LaneReceivers, PeerHandle, Queued};
use super::warn::{peer_warn, WarnLimit};
use super::{encode, NodeShared, LARGE_BODY};
use crate::error::{Error, ErrorKind};
use crate::id::NodeId;
use crate::proto::handshake::{ConnectionKey, Established, Handshake, HandshakeError, Step};
use crate::proto::liveness::{Liveness, LivenessEvent};
use crate::proto::membership::DialRequest;
use crate::proto::requests::InboundRequests;
use crate::proto::retirement::{Closing, Retirement};
use crate::transport::{Addr, Connection, FrameReader, FrameWriter, ReadEvent};
use crate::wire::control::{
    encode_answer, ControlMessage, Credit, Goodbye, GoodbyeReason, GossipMessage, Interest,
    InterestRequest, RejectReason, ReplyError,
};
use crate::wire::{CompressedFrame, Decoded, Frame, FrameCodec, FrameKind, FrameName, NameCache};

mod handshake;
mod inbound;
mod on_wake;
mod reader;
pub(super) mod through;
mod writer;

use handshake::{handshake, Halves};
use inbound::{Inbound, Large};
use reader::read_loop;
pub(crate) use reader::sleep_until_some;
use writer::{unsent_commands, write_loop, LastSent};

/// Which end of the connection this node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Inbound,
    Outbound,
}

/// Why a connection ended, as far as membership cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The peer said goodbye.
    Goodbye,
    /// The peer was silent past the timeout (or trickled a frame too slowly).
    Dead,
    /// The link broke or carried garbage: the peer may well be alive.
    Broken(&'static str),
    /// This node closed it (shutdown, or a replaced connection).
    ByUs,
}

/// How long a closing connection's writer may take to send what is queued.
const FLUSH_BOUND: Duration = Duration::from_secs(1);

/// How long the handlers of a lost connection get, once cancelled, to finish before they are
/// aborted: time to see `ctx.cancelled()` and clean up.
const CANCEL_GRACE: Duration = Duration::from_secs(1);

pub(crate) fn now_std() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// What a connection's handshake reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reached {
    /// The handshake completed with this node.
    Node(NodeId),
    /// The acceptor answered `Reject { duplicate }`: it keeps another connection to us.
    Linked(NodeId),
    /// No handshake completed.
    Nothing,
}

/// Runs a connection to its end. `admission` is held until the handshake ends: the places this
/// connection takes among the node's and its host's concurrent inbound handshakes.
pub(crate) async fn run(
    node: Arc<NodeShared>,
    dispatch: Weak<dyn Dispatch>,
    conn: Connection,
    side: Side,
    dial: Option<DialRequest>,
    admission: Option<super::actor::Admission>,
    notify: Option<oneshot::Sender<Result<NodeId, Error>>>,
) -> Reached {
    let Connection {
        reader,
        writer,
        remote,
    } = conn;
    let mut halves = Halves { reader, writer };
    let outcome = handshake(&node, &mut halves, side).await;
    drop(admission);
    let Halves {
        mut reader,
        mut writer,
    } = halves;
    let established = match outcome {
        Ok((established, _)) => established,
        Err(e) => {
            tracing::debug!(%remote, error = %e.error, "handshake failed");
            if let Some(why) = e.refused.filter(|_| side == Side::Inbound) {
                let refused = ActorMsg::Refused {
                    remote: remote.clone(),
                    why,
                };
                let _ = node.inbox.send(refused).await;
            }
            let _ = writer.close().await;
            let peer = e.peer.map(|key| key.node_id());
            if let Some(tx) = notify {
                let _ = tx.send(match peer.filter(|_| e.duplicate) {
                    Some(peer) => Ok(peer),
                    None => Err(e.error),
                });
            }
            return match (e.duplicate, peer) {
                (true, Some(peer)) => Reached::Linked(peer),
                _ => Reached::Nothing,
            };
        }
    };
    let peer_id = NodeId::from_u128(established.peer.node_id);
    let conn_id = node.next_conn_id();
    let (lanes, receivers) = peer::lanes(node.config.lane_capacity);
    let mut identity = established.peer.clone();
    resolve_unspecified(&mut identity.addresses, &remote);
    let sent = Arc::new(LastSent::new());
    let gate = through::Gate::new(writer.write_through(), &lanes, Arc::clone(&sent));
    let peer = Arc::new(PeerHandle::new(
        identity,
        established.key(),
        conn_id,
        lanes,
        established.send_codec(),
        node.config.lane_bytes,
        gate,
        Arc::clone(&node.inflows),
        node.counters.metrics.peer(peer_id, &established.peer.name),
    ));
    let (keep_tx, keep_rx) = oneshot::channel();
    let up = ActorMsg::PeerUp {
        peer: Arc::clone(&peer),
        key: established.key(),
        dial,
        keep: keep_tx,
    };
    if node.inbox.send(up).await.is_err() || !keep_rx.await.unwrap_or(false) {
        tracing::debug!(peer = %peer_id, "duplicate connection closed");
        let _ = writer.close().await;
        if let Some(tx) = notify {
            let _ = tx.send(Ok(peer_id));
        }
        return Reached::Node(peer_id);
    }
    if let Some(tx) = notify {
        let _ = tx.send(Ok(peer_id));
    }
    // One span per connection; its tasks carry it.
    let span = tracing::debug_span!("conn", peer = %peer_id, conn = conn_id, %remote);
    tracing::debug!(parent: &span, name = %peer.identity.name, "peer connected");
    let mut writer_task = JoinSet::new();
    writer_task.spawn(
        write_loop(writer, receivers, Arc::clone(&peer), Arc::clone(&sent))
            .instrument(span.clone()),
    );
    // The deadlines of the requests we send here: one watcher, not a timer per request. It
    // ends when the connection is gone, or is aborted with this set.
    let mut deadlines = JoinSet::new();
    let watched = Arc::clone(&peer);
    deadlines.spawn(async move { watched.watch_deadlines().await });
    // A semaphore holds at most `MAX_PERMITS`, and a body takes its share as a `u32`.
    let large_budget = node
        .config
        .max_inbound_bytes_per_peer
        .min(Semaphore::MAX_PERMITS)
        .min(u32::MAX as usize);
    let mut inbound = Inbound {
        node: &node,
        dispatch: &dispatch,
        peer: &peer,
        running: InboundRequests::new(node.config.max_in_flight_per_peer),
        handlers: JoinSet::new(),
        peer_replaced: false,
        names: NameCache::new(),
        large_budget,
        large_bytes: Arc::new(Semaphore::new(large_budget)),
        max_decompressed: node.config.max_decompressed_size,
        warnings: std::sync::Mutex::new(WarnLimit::new()),
        last_grant: None,
    };
    let ended = read_loop(
        &node,
        &peer,
        &mut inbound,
        &mut *reader,
        established.receive_codec(),
        &sent,
    )
    .instrument(span.clone())
    .await;
    match ended {
        // Worth seeing by default: the link failed, not a node's choice.
        Ended::Broken(reason) => {
            tracing::info!(peer = %peer_id, name = %peer.identity.name, %reason, "connection closed")
        }
        _ => tracing::debug!(peer = %peer_id, ?ended, "connection closed"),
    }
    // Out of every route before anything else: no new request picks this connection.
    peer.mark_gone();
    // A link that failed or that the peer left is not flushed: its writer stops now and hands
    // back what it never took off the lanes. Closing on purpose (shutdown, a drained replaced
    // connection) lets the writer send what is queued first.
    match ended {
        Ended::ByUs => peer.stop.cancel(),
        Ended::Goodbye | Ended::Dead | Ended::Broken(_) => peer.abort(),
    }
    let receivers = match tokio::time::timeout(FLUSH_BOUND, writer_task.join_next()).await {
        Ok(Some(Ok(receivers))) => Some(receivers),
        _ => None,
    };
    writer_task.abort_all();
    // Commands the writer never took were never written: their callers may send them to
    // another handler. Every other request waiting here fails with `PeerLost`.
    let unsent = receivers.map(unsent_commands).unwrap_or_default();
    peer.fail_all(unsent);
    let _ = node
        .inbox
        .send(ActorMsg::PeerDown {
            node_id: peer_id,
            conn_id,
            ended,
        })
        .await;
    // Handlers still running for this peer are told to stop and get a moment to do so.
    inbound.cancel_all();
    let grace = async { while inbound.handlers.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(CANCEL_GRACE, grace)
        .instrument(span.clone())
        .await;
    drop(inbound);
    peer.stop.cancel();
    Reached::Node(peer_id)
}

/// A peer that listens on every interface advertises `tcp://0.0.0.0:port`, which is nowhere
/// to dial. The host this connection reached it at (or came from) is one of its interfaces, so
/// such an address is rewritten to that host; the rewritten one is what membership stores and
/// gossips. Addresses of other schemes, and connections with no host (in-memory, Unix), are
/// left alone.
fn resolve_unspecified(addresses: &mut [String], remote: &Addr) {
    let Some(host) = remote.host().filter(|_| !remote.has_unspecified_host()) else {
        return;
    };
    for text in addresses.iter_mut() {
        let Ok(addr) = Addr::parse(text) else {
            continue;
        };
        if addr.has_unspecified_host() {
            if let Some(resolved) = addr.with_host(host) {
                *text = resolved.as_str().to_owned();
            }
        }
    }
}

/// A gate without write-through over `lanes`, for tests elsewhere in the runtime.
#[cfg(test)]
pub(crate) fn gate_for_tests(lanes: &peer::Lanes) -> through::Gate {
    through::Gate::new(None, lanes, Arc::new(LastSent::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_on_every_interface_takes_the_host_the_connection_used() {
        let mut addrs = vec![
            "tcp://0.0.0.0:7000".to_owned(),
            "ws://[::]:80/mesh".to_owned(),
            "tcp://10.0.0.9:7001".to_owned(),
            "unix:///run/a.sock".to_owned(),
        ];
        let remote: Addr = "tcp://192.168.1.5:53211".parse().unwrap();
        resolve_unspecified(&mut addrs, &remote);
        assert_eq!(
            addrs,
            [
                "tcp://192.168.1.5:7000",
                "ws://192.168.1.5:80/mesh",
                "tcp://10.0.0.9:7001",
                "unix:///run/a.sock"
            ]
        );
        // No host to go by: nothing changes.
        let before = vec!["tcp://0.0.0.0:7000".to_owned()];
        for remote in ["inmem://a", "unix:///x.sock", "tcp://0.0.0.0:1"] {
            let mut addrs = before.clone();
            resolve_unspecified(&mut addrs, &remote.parse().unwrap());
            assert_eq!(addrs, before, "{remote}");
        }
    }
}
