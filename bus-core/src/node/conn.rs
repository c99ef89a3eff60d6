//! One connection: the handshake, then a reader loop (with liveness) and an owned writer task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::actor::ActorMsg;
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
    ControlMessage, Goodbye, GoodbyeReason, GossipMessage, Interest, InterestRequest, RejectReason,
    ReplyError,
};
use crate::wire::{CompressedFrame, Decoded, Frame, FrameCodec, FrameKind, FrameName, NameCache};

mod handshake;
mod inbound;
mod writer;

use handshake::handshake;
use inbound::{Inbound, Large};
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

/// How many frames the reader handles at most before it looks at its timers and its other
/// work again.
const READ_BURST: usize = 256;

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
    Linked,
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
) -> Reached {
    let Connection {
        mut reader,
        mut writer,
        remote,
    } = conn;
    let outcome = handshake(&node, &mut *reader, &mut *writer, side).await;
    drop(admission);
    let established = match outcome {
        Ok(e) => e,
        Err(e) => {
            tracing::debug!(%remote, error = %e.error, "handshake failed");
            let _ = writer.close().await;
            return if e.duplicate {
                Reached::Linked
            } else {
                Reached::Nothing
            };
        }
    };
    let peer_id = NodeId::from_u128(established.peer.node_id);
    let conn_id = node.next_conn_id();
    let (lanes, receivers) = peer::lanes(node.config.lane_capacity);
    let mut identity = established.peer.clone();
    resolve_unspecified(&mut identity.addresses, &remote);
    let peer = Arc::new(PeerHandle::new(
        identity,
        established.key(),
        conn_id,
        lanes,
        established.send_codec(),
        node.config.lane_bytes,
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
        return Reached::Node(peer_id);
    }
    // One span per connection; its tasks carry it.
    let span = tracing::debug_span!("conn", peer = %peer_id, conn = conn_id, %remote);
    tracing::debug!(parent: &span, name = %peer.identity.name, "peer connected");
    let mut writer_task = JoinSet::new();
    let sent = Arc::new(LastSent::new());
    writer_task.spawn(
        write_loop(writer, receivers, Arc::clone(&peer), Arc::clone(&sent))
            .instrument(span.clone()),
    );
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

/// Reads frames until the connection ends; returns why it ended.
async fn read_loop(
    node: &NodeShared,
    peer: &Arc<PeerHandle>,
    inbound: &mut Inbound<'_>,
    reader: &mut dyn FrameReader,
    codec: FrameCodec,
    sent: &LastSent,
) -> Ended {
    let Ok(mut liveness) = Liveness::new(node.config.liveness, now_std()) else {
        return Ended::Broken("invalid liveness configuration");
    };
    let mut fence = Retirement::default();
    // Made once, not per turn of the loop: a new timer or cancellation waiter per frame
    // would register (and deregister) itself each time. A later deadline only moves the
    // timer's expiry, without touching the timer wheel.
    let stopped = peer.stop.cancelled();
    let retired = peer.retire.cancelled();
    let timer = tokio::time::sleep_until(tokio::time::Instant::from_std(liveness.next_deadline()));
    tokio::pin!(stopped, retired, timer);
    loop {
        if fence.is_retired() {
            if fence.wants_notice() && send_replaced_notice(peer) {
                fence.notice_sent();
            }
            let idle = !peer.has_pending() && inbound.handlers.is_empty();
            match fence.may_close(inbound.peer_replaced, idle, now_std()) {
                Some(Closing::Drained) => {
                    tracing::debug!(peer = %peer.node_id, "replaced connection drained");
                    return Ended::ByUs;
                }
                Some(Closing::BoundPassed) => {
                    tracing::debug!(peer = %peer.node_id, "replaced connection still busy: closing");
                    return Ended::ByUs;
                }
                None => {}
            }
        }
        // What the writer sent counts: only an idle link needs a Ping.
        liveness.on_frame_sent(sent.get());
        // The timer is only ever brought forward, or re-armed once it has fired. Every frame
        // sent or received moves the deadline later: rather than follow it on every turn, the
        // timer fires early (about once per heartbeat period), finds nothing due, and is
        // re-armed here.
        let deadline = tokio::time::Instant::from_std(liveness.next_deadline());
        if deadline < timer.deadline() || timer.is_elapsed() {
            timer.as_mut().reset(deadline);
        }
        tokio::select! {
            read = reader.read(codec.max_frame_size) => match read {
                Ok(ReadEvent::Frame(bytes)) => {
                    liveness.on_frame_received(now_std());
                    if let Err(ended) = on_burst(peer, inbound, reader, &codec, bytes).await {
                        return ended;
                    }
                }
                Ok(ReadEvent::Partial) => liveness.on_partial_frame(now_std()),
                Ok(ReadEvent::Closed) => return Ended::Broken("closed by the peer"),
                Err(e) => {
                    tracing::warn!(peer = %peer.node_id, error = %e, "read failed: closing the connection");
                    return Ended::Broken("read error");
                }
            },
            () = &mut timer => {
                liveness.on_frame_sent(sent.get());
                match liveness.poll(now_std()) {
                    Some(LivenessEvent::SendPing) => {
                        let ping = Frame::new(FrameKind::Ping, Bytes::new());
                        if let Ok(bytes) = encode(&peer.send_codec, &ping) {
                            let _ = peer.lanes.control.try_send(bytes);
                        }
                    }
                    Some(LivenessEvent::Dead { reason }) => {
                        tracing::info!(peer = %peer.node_id, %reason, "peer dead");
                        return Ended::Dead;
                    }
                    None => {}
                }
            }
            Some(done) = inbound.handlers.join_next() => {
                if let Ok(id) = done {
                    let _ = inbound.running.finish(peer.node_id, id);
                }
            }
            () = &mut stopped => return Ended::ByUs,
            () = &mut retired, if !fence.is_retired() => fence.retire(now_std()),
            // The fence decides at the top of the loop.
            () = sleep_until_some(fence.poll_timeout().map(tokio::time::Instant::from_std)) => {}
        }
    }
}

/// Queues our notice that this connection was replaced; `false` if the events lane or the
/// byte budget is full (the read loop tries again on its next turn).
///
/// The notice is a fence: the peer reads it as "nothing sent before this is still to come",
/// and closes once its own work here is done. So it goes on the events lane, the last in the
/// writer's order: the writer takes an event only once the command lane is empty, and events
/// in order, so every command and event queued before the notice is written before it. (On
/// the control lane it would overtake them, and they would reach a closed connection.)
fn send_replaced_notice(peer: &PeerHandle) -> bool {
    let notice = Goodbye {
        reason: GoodbyeReason::Replaced,
    };
    match notice.to_frame().map(|f| encode(&peer.send_codec, &f)) {
        Ok(Ok(bytes)) => peer.try_queue(&peer.lanes.events, bytes).is_ok(),
        // Cannot happen for this fixed message; the retirement bound still closes the link.
        _ => true,
    }
}

/// Handles `first`, then the frames the reader already holds behind it (at most
/// [`READ_BURST`]), without going back to the `select!` of the read loop for each: a burst of
/// small frames costs no timer, clock read or wake-up per frame.
async fn on_burst(
    peer: &PeerHandle,
    inbound: &mut Inbound<'_>,
    reader: &mut dyn FrameReader,
    codec: &FrameCodec,
    first: Bytes,
) -> Result<(), Ended> {
    let mut next = Some(first);
    let mut taken = 0;
    // The bus, its event table and the sender's scope, taken at the first event of the burst
    // and used for the events behind it (not an upgrade and a table load per frame). Let go
    // before any other frame, whose handling may wait. (A yield for the cooperative budget
    // between two events keeps it: the events after the yield are delivered as if they had
    // been read before it.)
    let mut events: Option<Arc<dyn EventSink>> = None;
    while let Some(bytes) = next.take() {
        // A compressed body over `LARGE_BODY` comes back undecompressed; a plain one over it is
        // decoded off the reader too. Either way the fast path below only compares a length.
        match codec.decode_frame_deferred(bytes, &mut inbound.names, LARGE_BODY) {
            Ok(Decoded::Frame(frame))
                if frame.kind == FrameKind::Event && frame.body.len() <= LARGE_BODY =>
            {
                if events.is_none() {
                    events = inbound.events();
                }
                if let Some(sink) = &events {
                    inbound.on_event(&**sink, frame);
                }
            }
            Ok(Decoded::Frame(frame))
                if frame.body.len() > LARGE_BODY
                    && matches!(frame.kind, FrameKind::Command | FrameKind::Event) =>
            {
                events = None;
                inbound.on_large(Large::Plain(frame)).await?;
            }
            Ok(Decoded::Frame(frame)) => {
                events = None;
                inbound.on_frame(frame).await?;
            }
            Ok(Decoded::Compressed(c)) => {
                events = None;
                inbound.on_large(Large::Compressed(c)).await?;
            }
            Err(e) => {
                tracing::warn!(peer = %peer.node_id, error = %e, "undecodable frame: closing the connection");
                return Err(Ended::Broken("undecodable frame"));
            }
        }
        taken += 1;
        if taken >= READ_BURST {
            break;
        }
        // One unit of the task's cooperative budget per frame: a reader fed faster than the
        // subscriptions it fills lets their tasks run every so many frames, instead of
        // filling their queues until they drop (a transport may hand over a whole socket
        // buffer of frames without waiting, which costs no budget of its own).
        tokio::task::coop::consume_budget().await;
        next = match reader.try_read_frame(codec.max_frame_size) {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(peer = %peer.node_id, error = %e, "read failed: closing the connection");
                return Err(Ended::Broken("read error"));
            }
        };
    }
    Ok(())
}

/// Sleeps until `at`, or forever.
pub(crate) async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
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
