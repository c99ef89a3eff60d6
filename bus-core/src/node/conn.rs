//! One connection: the handshake, then a reader loop (with liveness) and an owned writer task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::actor::ActorMsg;
use super::peer::{self, LaneReceivers, PeerHandle, Queued};
use super::warn::{peer_warn, WarnLimit};
use super::{encode, NodeShared, LARGE_BODY};
use crate::bus::{Bus, BusInner, EventTable};
use crate::context::{Context, Deadline, Headers};
use crate::error::{Error, ErrorKind};
use crate::id::NodeId;
use crate::proto::handshake::{ConnectionKey, Established, Handshake, HandshakeError, Step};
use crate::proto::liveness::{Liveness, LivenessEvent};
use crate::proto::membership::DialRequest;
use crate::proto::requests::{deadline_from_remaining, InboundRequests};
use crate::proto::routing::Here;
use crate::scope::Scope;
use crate::stats::Counters;
use crate::subscription::EventMeta;
use crate::transport::{Addr, Connection, FrameReader, FrameWriter, ReadEvent};
use crate::wire::control::{
    ControlMessage, Goodbye, GoodbyeReason, GossipMessage, Interest, InterestRequest, RejectReason,
    ReplyError,
};
use crate::wire::{CompressedFrame, Decoded, Frame, FrameCodec, FrameKind, FrameName, NameCache};

mod handshake;
mod writer;

use handshake::handshake;
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

/// How long a replaced connection stays open for the replies and handlers still under way on
/// it. Both ends replace the same connection (arbitration is symmetric), so each waits for
/// its own requests; this bounds a handler that never ends.
const RETIRE_BOUND: Duration = Duration::from_secs(30);

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
    bus: Weak<BusInner>,
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
        bus: &bus,
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
    // Set once another connection replaced this one: when it must close at the latest.
    let mut retired_until: Option<tokio::time::Instant> = None;
    // Whether our `Goodbye { Replaced }` notice is queued.
    let mut notice_sent = false;
    // Made once, not per turn of the loop: a new timer or cancellation waiter per frame
    // would register (and deregister) itself each time. A later deadline only moves the
    // timer's expiry, without touching the timer wheel.
    let stopped = peer.stop.cancelled();
    let retired = peer.retire.cancelled();
    let timer = tokio::time::sleep_until(tokio::time::Instant::from_std(liveness.next_deadline()));
    tokio::pin!(stopped, retired, timer);
    loop {
        if retired_until.is_some() {
            notice_sent = notice_sent || send_replaced_notice(peer);
            if notice_sent
                && inbound.peer_replaced
                && !peer.has_pending()
                && inbound.handlers.is_empty()
            {
                tracing::debug!(peer = %peer.node_id, "replaced connection drained");
                return Ended::ByUs;
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
            () = &mut retired, if retired_until.is_none() => {
                retired_until = Some(tokio::time::Instant::now() + RETIRE_BOUND);
            }
            () = sleep_until_some(retired_until) => {
                tracing::debug!(peer = %peer.node_id, "replaced connection still busy: closing");
                return Ended::ByUs;
            }
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
    let mut events: Option<EventTarget> = None;
    while let Some(bytes) = next.take() {
        // A compressed body over `LARGE_BODY` comes back undecompressed; a plain one over it is
        // decoded off the reader too. Either way the fast path below only compares a length.
        match codec.decode_frame_deferred(bytes, &mut inbound.names, LARGE_BODY) {
            Ok(Decoded::Frame(frame))
                if frame.kind == FrameKind::Event && frame.body.len() <= LARGE_BODY =>
            {
                if events.is_none() {
                    events = inbound.event_target();
                }
                if let Some(target) = &events {
                    inbound.on_event(target, frame);
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

/// The reader's side of the requests a peer sends us.
struct Inbound<'a> {
    node: &'a NodeShared,
    bus: &'a Weak<BusInner>,
    peer: &'a Arc<PeerHandle>,
    running: InboundRequests<CancellationToken>,
    /// The handlers running for this peer; each returns its request id. Dropped (aborted) with
    /// the connection.
    handlers: JoinSet<u64>,
    /// The peer said it replaced this connection: it sends nothing new here.
    peer_replaced: bool,
    /// The message names this peer sent, so that its frames decode without allocating them.
    names: NameCache,
    /// The whole budget of [`large_bytes`](Self::large_bytes).
    large_budget: usize,
    /// The bytes of large command bodies this peer may still have in running handlers: each
    /// such handler holds its body's size until it ends.
    large_bytes: Arc<Semaphore>,
    /// The largest decompressed size a compressed body may declare.
    max_decompressed: usize,
    /// Warnings about what this peer sends, rate limited.
    warnings: std::sync::Mutex<WarnLimit>,
}

/// A frame whose body is large: decompressed and decoded off the reader.
enum Large {
    /// A body that came uncompressed.
    Plain(Frame),
    /// A body still to be decompressed.
    Compressed(CompressedFrame),
}

impl Large {
    /// The frame's kind, id, name and headers (and a body that may still be compressed).
    fn head(&self) -> &Frame {
        match self {
            Large::Plain(frame) => frame,
            Large::Compressed(c) => c.frame(),
        }
    }

    /// The body's size once decompressed.
    fn size(&self) -> usize {
        match self {
            Large::Plain(frame) => frame.body.len(),
            Large::Compressed(c) => c.decompressed_size(),
        }
    }

    /// The whole frame; decompressing is CPU work, for a blocking thread.
    fn into_frame(self) -> Result<Frame, crate::wire::FrameError> {
        match self {
            Large::Plain(frame) => Ok(frame),
            Large::Compressed(c) => c.decompress(),
        }
    }
}

/// A large command admitted under the peer's budget: what its handler task holds.
struct LargeCommand {
    /// The peer's budget for the body, given back when the handler ends.
    permit: tokio::sync::OwnedSemaphorePermit,
    /// Makes the body (decompresses it, or hands it over).
    body: Large,
}

impl Drop for Inbound<'_> {
    fn drop(&mut self) {
        self.cancel_all();
    }
}

impl Inbound<'_> {
    /// The connection is gone: every handler running for it sees `ctx.cancelled()`.
    fn cancel_all(&mut self) {
        for (_, token) in self.running.on_peer_lost(self.peer.node_id) {
            token.cancel();
        }
    }

    /// Handles one frame; `Err` closes the connection.
    async fn on_frame(&mut self, frame: Frame) -> Result<(), Ended> {
        let peer = self.peer;
        match frame.kind {
            // Request ids are never 0: no reply to such a command could be matched, and no
            // request of ours has that id. Only a broken or hostile peer sends one.
            kind if is_request_id_zero(kind, frame.request_id) => {
                tracing::warn!(peer = %peer.node_id, ?kind, "request id 0: closing the connection");
                return Err(Ended::Broken("request id 0"));
            }
            FrameKind::Ping => {
                let mut pong = Frame::new(FrameKind::Pong, Bytes::new());
                pong.request_id = frame.request_id;
                if let Ok(bytes) = encode(&peer.send_codec, &pong) {
                    let _ = peer.lanes.control.try_send(bytes);
                }
            }
            FrameKind::Pong => {}
            FrameKind::Goodbye => match Goodbye::from_frame(&frame) {
                Ok(Goodbye {
                    reason: GoodbyeReason::Replaced,
                }) => self.peer_replaced = true,
                _ => return Err(Ended::Goodbye),
            },
            FrameKind::Gossip => match GossipMessage::from_frame(&frame) {
                Ok(msg) => {
                    let msg = ActorMsg::Gossip {
                        node_id: peer.node_id,
                        conn_id: peer.conn_id,
                        msg,
                    };
                    let _ = self.node.inbox.send(msg).await;
                }
                // Gossip repairs itself in a later round.
                Err(e) => tracing::debug!(peer = %peer.node_id, error = %e, "bad gossip message"),
            },
            FrameKind::Interest => match Interest::from_frame(&frame) {
                Ok(msg) => {
                    let msg = ActorMsg::Interest {
                        node_id: peer.node_id,
                        conn_id: peer.conn_id,
                        msg,
                    };
                    let _ = self.node.inbox.send(msg).await;
                }
                Err(e) => {
                    peer_warn!(self.warnings, peer = %peer.node_id, error = %e, "bad interest message")
                }
            },
            FrameKind::InterestRequest => {
                if InterestRequest::from_frame(&frame).is_ok() {
                    let msg = ActorMsg::InterestRequest {
                        node_id: peer.node_id,
                        conn_id: peer.conn_id,
                    };
                    let _ = self.node.inbox.send(msg).await;
                }
            }
            FrameKind::Command => self.on_command(frame, None),
            FrameKind::Reply => peer.complete(frame.request_id, Ok(frame.body)),
            FrameKind::ReplyError => {
                let err = ReplyError::from_frame(&frame).unwrap_or_else(|e| {
                    ReplyError::new(ErrorKind::Decode, format!("malformed error reply: {e}"))
                });
                peer.complete(frame.request_id, Err(err));
            }
            FrameKind::Cancel => {
                if let Some(token) = self.running.cancel(peer.node_id, frame.request_id) {
                    token.cancel();
                }
            }
            FrameKind::Event => {
                if let Some(target) = self.event_target() {
                    self.on_event(&target, frame);
                }
            }
            FrameKind::Hello | FrameKind::Welcome | FrameKind::Reject => {
                tracing::warn!(peer = %peer.node_id, kind = ?frame.kind, "handshake frame after the handshake");
                return Err(Ended::Broken("handshake frame after the handshake"));
            }
        }
        Ok(())
    }

    /// Handles a frame whose body is large. Commands are refused (over the cap, over the peer's
    /// budget) or handed to a task at once, so the reader does not wait for them; everything
    /// else is decompressed and decoded on a blocking thread while this reader waits, which
    /// slows this peer's reads only (and keeps its events in order), never other connections.
    async fn on_large(&mut self, large: Large) -> Result<(), Ended> {
        let head = large.head();
        let (kind, id, size) = (head.kind, head.request_id, large.size());
        if is_request_id_zero(kind, id) {
            tracing::warn!(peer = %self.peer.node_id, ?kind, "request id 0: closing the connection");
            return Err(Ended::Broken("request id 0"));
        }
        let over_cap = matches!(large, Large::Compressed(_)) && size > self.max_decompressed;
        let too_large = || {
            format!(
                "a compressed body of {size} bytes is over the limit of {} bytes \
                 (max_decompressed_size)",
                self.max_decompressed
            )
        };
        match kind {
            FrameKind::Command => {
                if over_cap {
                    self.refuse(id, ErrorKind::TooLarge, too_large());
                    return Ok(());
                }
                // A body larger than the whole budget takes all of it.
                let share = u32::try_from(size.min(self.large_budget)).unwrap_or(u32::MAX);
                let Ok(permit) = Arc::clone(&self.large_bytes).try_acquire_many_owned(share) else {
                    self.refuse(
                        id,
                        ErrorKind::Overloaded,
                        format!(
                            "{} bytes of large bodies already in handlers for this peer \
                             (max_inbound_bytes_per_peer)",
                            self.large_budget
                                .saturating_sub(self.large_bytes.available_permits())
                        ),
                    );
                    return Ok(());
                };
                let mut head = head.clone();
                head.body = Bytes::new();
                self.on_command(
                    head,
                    Some(LargeCommand {
                        permit,
                        body: large,
                    }),
                );
                Ok(())
            }
            FrameKind::Event => {
                if over_cap {
                    if let Some(bus) = self.bus.upgrade() {
                        Counters::bump(&bus.counters.remote_events_too_large);
                    }
                    tracing::debug!(peer = %self.peer.node_id, size, "event body over the decompressed limit: dropped");
                    return Ok(());
                }
                self.on_large_event(large).await
            }
            FrameKind::Reply if over_cap => {
                let err = ReplyError::new(ErrorKind::TooLarge, too_large());
                self.peer.complete(id, Err(err));
                Ok(())
            }
            _ => {
                let frame = off_reader(move || large.into_frame()).await?;
                self.on_frame(frame).await
            }
        }
    }

    /// Delivers a large event from a blocking thread, which decompresses and decodes it once
    /// for every subscription; the reader waits for it, so this peer's events stay in order.
    async fn on_large_event(&self, large: Large) -> Result<(), Ended> {
        let Some(target) = self.event_target() else {
            return Ok(());
        };
        let head = large.head();
        let Some(FrameName::Inline(name)) = &head.name else {
            peer_warn!(self.warnings, peer = %self.peer.node_id, "an event without a name");
            return Ok(());
        };
        // No subscriber: nothing to decompress.
        let Some(slot) = target.table.get(&**name).cloned() else {
            return Ok(());
        };
        let correlation_id = head.headers.correlation_id.clone().map(Arc::from);
        let meta = self.meta(target.scope, correlation_id, headers_of(head));
        let name = Arc::clone(name);
        let bus = target.bus;
        let message_id = crate::id::next_message_id();
        let delivered = off_reader(move || {
            let frame = large.into_frame()?;
            Ok((slot.deliver)(
                &slot,
                &frame.body,
                message_id,
                &meta,
                &bus.counters,
            ))
        })
        .await?;
        if let Err(e) = delivered {
            peer_warn!(self.warnings, peer = %self.peer.node_id, event = %name, error = %e, "event did not decode");
        }
        Ok(())
    }

    /// Answers request `id` at once with an error (the reader never waits: a full reply lane
    /// drops it, and the caller times out).
    fn refuse(&self, id: u64, kind: ErrorKind, message: String) {
        let err = ReplyError::new(kind, message);
        if let Ok(mut frame) = err.to_frame() {
            frame.request_id = id;
            if let Ok(bytes) = encode(&self.peer.send_codec, &frame) {
                let _ = self.peer.lanes.replies.try_send(bytes);
            }
        }
    }

    /// Runs a peer's command; a `large` one has its body made and decoded on a blocking thread
    /// in its handler's task, and holds its share of the peer's budget until it ends.
    fn on_command(&mut self, frame: Frame, large: Option<LargeCommand>) {
        let id = frame.request_id;
        let peer = self.peer;
        let Some(bus) = self.bus.upgrade() else {
            return self.refuse(id, ErrorKind::Closed, "the node is shutting down".into());
        };
        let Some(FrameName::Inline(name)) = &frame.name else {
            return self.refuse(id, ErrorKind::Decode, "a command without a name".into());
        };
        let Some(slot) = bus.commands.get(&**name) else {
            return self.refuse(id, ErrorKind::NoHandler, format!("no handler for `{name}`"));
        };
        let guard = bus.enter_owned();
        if bus.is_closed() {
            return self.refuse(id, ErrorKind::Closed, "the node is shutting down".into());
        }
        let token = CancellationToken::new();
        if let Err(o) = self.running.admit(peer.node_id, id, token.clone()) {
            return self.refuse(
                id,
                ErrorKind::Overloaded,
                format!("{} requests already running for this peer", o.limit),
            );
        }
        let deadline = match frame.headers.deadline {
            Some(remaining) => {
                let at = deadline_from_remaining(remaining, now_std());
                Deadline::After {
                    timeout: remaining,
                    at: OnceLock::from(tokio::time::Instant::from_std(at)),
                }
            }
            None => Deadline::None,
        };
        let ctx = Context {
            message_id: crate::id::next_message_id(),
            correlation_id: frame.headers.correlation_id.clone().map(Arc::from),
            sender: peer.node_id,
            scope: scope_of(&bus, peer),
            deadline,
            headers: headers_of(&frame),
            cancel: Some(token.clone()),
            bus: Bus::for_handler(Arc::clone(&bus)),
        };
        let codec = peer.send_codec;
        let replies = peer.lanes.replies.clone();
        let span = tracing::Span::current();
        if let Some(LargeCommand { permit, body }) = large {
            let fut = slot
                .remote
                .call_large(Box::new(move || body.into_frame().map(|f| f.body)), ctx);
            drop(bus);
            self.handlers.spawn(
                async move {
                    let _guard = guard;
                    let outcome = fut.await;
                    // The body and the command decoded from it are gone: the budget is free.
                    drop(permit);
                    if token.is_cancelled() {
                        return id;
                    }
                    if let Some(bytes) = reply_frame(&codec, id, outcome) {
                        let _ = replies.send(bytes).await;
                    }
                    id
                }
                .instrument(span),
            );
            return;
        }
        let mut fut = slot.remote.call(frame.body, ctx);
        drop(bus);
        // Poll the handler once here: one that answers at once (the common case) replies
        // without a hand-off to a task of its own, which after an idle link is a wake-up. The
        // future catches its handler's panics, so polling it here cannot unwind into the
        // reader. The waker is a no-op: a handler still pending is spawned below, and its
        // task's first poll registers the real waker.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let outcome = match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(outcome) => Some(outcome),
            std::task::Poll::Pending => None,
        };
        match outcome {
            Some(outcome) => {
                // Nothing can have cancelled it yet: the reader is still on this frame.
                let Some(bytes) = reply_frame(&codec, id, outcome) else {
                    let _ = self.running.finish(peer.node_id, id);
                    return;
                };
                match replies.try_send(bytes) {
                    Ok(()) => {
                        let _ = self.running.finish(peer.node_id, id);
                    }
                    // A full reply lane: a task waits for room, so the reader never does.
                    Err(mpsc::error::TrySendError::Full(bytes)) => {
                        self.handlers.spawn(
                            async move {
                                let _guard = guard;
                                if !token.is_cancelled() {
                                    let _ = replies.send(bytes).await;
                                }
                                id
                            }
                            .instrument(span),
                        );
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        let _ = self.running.finish(peer.node_id, id);
                    }
                }
            }
            None => {
                self.handlers.spawn(
                    async move {
                        let _guard = guard;
                        let outcome = fut.await;
                        // A caller that gave up wants no answer.
                        if token.is_cancelled() {
                            return id;
                        }
                        let bytes = reply_frame(&codec, id, outcome);
                        if let Some(bytes) = bytes {
                            let _ = replies.send(bytes).await;
                        }
                        id
                    }
                    .instrument(span),
                );
            }
        }
    }

    /// What delivering events needs, or `None` once the bus is gone.
    fn event_target(&self) -> Option<EventTarget> {
        let bus = self.bus.upgrade()?;
        let table = bus.events.load_full();
        let scope = scope_of(&bus, self.peer);
        Some(EventTarget {
            bus,
            table,
            scope,
            plain: std::cell::OnceCell::new(),
        })
    }

    /// The context of this peer's events in `scope`.
    fn meta(
        &self,
        scope: Scope,
        correlation_id: Option<Arc<str>>,
        headers: Headers,
    ) -> Arc<EventMeta> {
        Arc::new(EventMeta {
            correlation_id,
            sender: self.peer.node_id,
            scope,
            headers,
            published_at: None,
        })
    }

    fn on_event(&self, target: &EventTarget, frame: Frame) {
        let Some(FrameName::Inline(name)) = &frame.name else {
            peer_warn!(self.warnings, peer = %self.peer.node_id, "an event without a name");
            return;
        };
        let Some(slot) = target.table.get(&**name) else {
            return;
        };
        let message_id = crate::id::next_message_id();
        let with_headers;
        let meta = if frame.headers.is_empty() {
            target
                .plain
                .get_or_init(|| self.meta(target.scope, None, Headers::new()))
        } else {
            let correlation_id = frame.headers.correlation_id.clone().map(Arc::from);
            with_headers = self.meta(target.scope, correlation_id, headers_of(&frame));
            &with_headers
        };
        if let Err(e) = (slot.deliver)(slot, &frame.body, message_id, meta, &target.bus.counters) {
            peer_warn!(self.warnings, peer = %self.peer.node_id, event = %name, error = %e, "event did not decode");
        }
    }
}

/// Runs `job` (decompressing, decoding) on a blocking thread and waits for it; an error (a
/// body that does not decompress) closes the connection, as it would have on the reader.
async fn off_reader<T: Send + 'static>(
    job: impl FnOnce() -> Result<T, crate::wire::FrameError> + Send + 'static,
) -> Result<T, Ended> {
    match tokio::task::spawn_blocking(job).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "undecodable frame: closing the connection");
            Err(Ended::Broken("undecodable frame"))
        }
        Err(e) => {
            tracing::warn!(error = %e, "decoding a frame failed: closing the connection");
            Err(Ended::Broken("decoding failed"))
        }
    }
}

/// Whether a frame of `kind` carries the request id 0 that no request has: no reply to such a
/// command could be matched, and no request of ours has that id. Only a broken or hostile
/// peer sends one; the connection is closed.
fn is_request_id_zero(kind: FrameKind, id: u64) -> bool {
    id == 0
        && matches!(
            kind,
            FrameKind::Command | FrameKind::Reply | FrameKind::ReplyError | FrameKind::Cancel
        )
}

/// The bus, its event table and the sender's scope, shared by the events of one read burst.
struct EventTarget {
    bus: Arc<BusInner>,
    table: Arc<EventTable>,
    scope: Scope,
    /// The context of the burst's events without headers, made at the first.
    plain: std::cell::OnceCell<Arc<EventMeta>>,
}

/// The encoded `Reply` or `ReplyError` for request `id`.
fn reply_frame(codec: &FrameCodec, id: u64, outcome: Result<Bytes, ReplyError>) -> Option<Bytes> {
    let mut frame = match outcome {
        Ok(body) => Frame::new(FrameKind::Reply, body),
        Err(e) => e.to_frame().ok()?,
    };
    frame.request_id = id;
    match encode(codec, &frame) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            let mut err = ReplyError::new(ErrorKind::TooLarge, e.to_string())
                .to_frame()
                .ok()?;
            err.request_id = id;
            encode(codec, &err).ok()
        }
    }
}

/// The narrowest scope the sender is in, as seen from here.
fn scope_of(bus: &BusInner, peer: &PeerHandle) -> Scope {
    let here = Here {
        host_id: &bus.identity.host_id,
        cluster: &bus.identity.cluster,
    };
    let (h, c) = (&peer.identity.host_id, &peer.identity.cluster);
    [Scope::Machine, Scope::Cluster]
        .into_iter()
        .find(|s| here.in_scope(*s, h, c))
        .unwrap_or(Scope::Network)
}

fn headers_of(frame: &Frame) -> Headers {
    let mut headers = Headers::new();
    if let Some(key) = &frame.headers.idempotency_key {
        headers.insert(Headers::IDEMPOTENCY_KEY, key.clone());
    }
    for (k, v) in &frame.headers.extra {
        headers.insert(k.clone(), v.clone());
    }
    headers
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
