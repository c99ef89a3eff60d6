//! The reader's side of what a peer sends: its commands (run, answered, refused), its events
//! (delivered to the subscriptions), and the large bodies handled off the reader.

use super::*;
use crate::context::CancelSignal;

/// The reader's side of the requests a peer sends us.
pub(super) struct Inbound<'a> {
    pub(super) node: &'a NodeShared,
    /// The layer above, which runs commands and delivers events.
    pub(super) dispatch: &'a Weak<dyn Dispatch>,
    pub(super) peer: &'a Arc<PeerHandle>,
    pub(super) running: InboundRequests<CancelSignal>,
    /// The handlers running for this peer; each returns its request id. Dropped (aborted) with
    /// the connection.
    pub(super) handlers: JoinSet<u64>,
    /// The peer said it replaced this connection: it sends nothing new here.
    pub(super) peer_replaced: bool,
    /// The message names this peer sent, so that its frames decode without allocating them.
    pub(super) names: NameCache,
    /// The whole budget of [`large_bytes`](Self::large_bytes).
    pub(super) large_budget: usize,
    /// The bytes of large command bodies this peer may still have in running handlers: each
    /// such handler holds its body's size until it ends.
    pub(super) large_bytes: Arc<Semaphore>,
    /// The largest decompressed size a compressed body may declare.
    pub(super) max_decompressed: usize,
    /// Warnings about what this peer sends, rate limited.
    pub(super) warnings: std::sync::Mutex<WarnLimit>,
    /// The grant of the last event name seen, with the name as the name cache holds it.
    pub(super) last_grant: Option<(Arc<str>, Arc<Grant>)>,
}

/// A frame whose body is large: decompressed and decoded off the reader.
pub(super) enum Large {
    /// A body that came uncompressed.
    Plain(Frame),
    /// A body still to be decompressed.
    Compressed(CompressedFrame),
}

impl Large {
    /// The frame's kind, id, name and headers (and a body that may still be compressed).
    pub(super) fn head(&self) -> &Frame {
        match self {
            Large::Plain(frame) => frame,
            Large::Compressed(c) => c.frame(),
        }
    }

    /// The body's size once decompressed.
    pub(super) fn size(&self) -> usize {
        match self {
            Large::Plain(frame) => frame.body.len(),
            Large::Compressed(c) => c.decompressed_size(),
        }
    }

    /// The whole frame; decompressing is CPU work, for a blocking thread.
    pub(super) fn into_frame(self) -> Result<Frame, crate::wire::FrameError> {
        match self {
            Large::Plain(frame) => Ok(frame),
            Large::Compressed(c) => c.decompress(),
        }
    }
}

/// A large command admitted under the peer's budget: what its handler task holds.
pub(super) struct LargeCommand {
    /// The peer's budget for the body, given back when the handler ends.
    pub(super) permit: tokio::sync::OwnedSemaphorePermit,
    /// Makes the body (decompresses it, or hands it over).
    pub(super) body: Large,
}

impl Drop for Inbound<'_> {
    fn drop(&mut self) {
        self.cancel_all();
    }
}

impl Inbound<'_> {
    /// The connection is gone: every handler running for it sees `ctx.cancelled()`.
    pub(super) fn cancel_all(&mut self) {
        for (_, token) in self.running.on_peer_lost(self.peer.node_id) {
            token.cancel();
        }
    }

    /// Handles one frame; `Err` closes the connection.
    pub(super) async fn on_frame(&mut self, frame: Frame) -> Result<(), Ended> {
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
                    let _ = peer.try_send_now(&peer.lanes.control, bytes);
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
            FrameKind::Credit => match Credit::from_frame(&frame) {
                Ok(msg) => peer.credit.on_credit(&msg),
                Err(e) => {
                    tracing::warn!(peer = %peer.node_id, error = %e, "bad credit message: closing the connection");
                    return Err(Ended::Broken("bad credit message"));
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
                if let Some(mut sink) = self.events() {
                    self.on_event(&mut *sink, frame)?;
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
    pub(super) async fn on_large(&mut self, large: Large) -> Result<(), Ended> {
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
                    // Counted under its grant, and consumed at once.
                    if let Some(FrameName::Inline(name)) = &large.head().name {
                        let name = Arc::clone(name);
                        if let Some(grant) = self.credit(&name)? {
                            drop(grant.receipt(1));
                        }
                    }
                    if let Some(sink) = self.events() {
                        sink.too_large();
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
    pub(super) async fn on_large_event(&mut self, large: Large) -> Result<(), Ended> {
        let Some(mut sink) = self.events() else {
            return Ok(());
        };
        let head = large.head();
        let Some(FrameName::Inline(name)) = &head.name else {
            peer_warn!(self.warnings, peer = %self.peer.node_id, "an event without a name");
            return Ok(());
        };
        let name = Arc::clone(name);
        // Counted under its grant even when nothing takes it (its receipt dropped at once).
        let credit = self.credit(&name)?.cloned();
        // No subscriber: nothing to decompress.
        if !sink.wants(&name) {
            drop(credit.map(|grant| grant.receipt(1)));
            return Ok(());
        }
        let delivered = off_reader(move || {
            let frame = match large.into_frame() {
                Ok(frame) => frame,
                Err(e) => {
                    // Counted under its grant: consumed, though it never decompressed.
                    drop(credit.map(|grant| grant.receipt(1)));
                    return Err(e);
                }
            };
            let delivered = sink.deliver(&frame, credit.as_ref());
            sink.flush();
            Ok(delivered)
        })
        .await?;
        if let Err(e) = delivered {
            peer_warn!(self.warnings, peer = %self.peer.node_id, event = %name, error = %e, "event did not decode");
        }
        Ok(())
    }

    /// Answers request `id` at once with an error (the reader never waits: a full reply lane
    /// drops it, and the caller times out).
    pub(super) fn refuse(&self, id: u64, kind: ErrorKind, message: String) {
        self.refuse_with(id, ReplyError::new(kind, message));
    }

    /// As [`refuse`](Self::refuse), with the error made.
    pub(super) fn refuse_with(&self, id: u64, err: ReplyError) {
        if let Some(bytes) = encode_answer(&self.peer.send_codec, id, Err(err)) {
            let _ = self.peer.try_send_now(&self.peer.lanes.replies, bytes);
        }
    }

    /// Runs a peer's command; a `large` one has its body made and decoded on a blocking thread
    /// in its handler's task, and holds its share of the peer's budget until it ends.
    pub(super) fn on_command(&mut self, mut head: Frame, large: Option<LargeCommand>) {
        let id = head.request_id;
        let peer = self.peer;
        let Some(dispatch) = self.dispatch.upgrade() else {
            return self.refuse(id, ErrorKind::Closed, "the node is shutting down".into());
        };
        let token = CancelSignal::new();
        let (body, permit) = match large {
            Some(LargeCommand { permit, body }) => (
                CommandBody::Large(Box::new(move || body.into_frame().map(|f| f.body))),
                Some(permit),
            ),
            None => (CommandBody::Bytes(std::mem::take(&mut head.body)), None),
        };
        let reply = ReplyTo {
            id,
            peer: Arc::clone(peer),
            cancel: token.clone(),
        };
        let cmd = InboundCommand { head, body, reply };
        // Refusals of the command itself (no handler, a closing bus) come before the peer's
        // running requests are counted, so they name what is wrong rather than `Overloaded`.
        let mut answering = match dispatch.command(peer, cmd) {
            Ok(answering) => answering,
            Err(refused) => return self.refuse_with(id, refused),
        };
        // Checked, not taken: a handler that answers within the poll below never needs a slot.
        if let Err(o) = self.running.check(peer.node_id, id) {
            // Never polled: nothing of the handler ran.
            drop(answering);
            return self.refuse(
                id,
                ErrorKind::Overloaded,
                format!("{} requests already running for this peer", o.limit),
            );
        }
        if let Some(permit) = permit {
            // Cannot fail: checked just above, on this same reader.
            let _ = self.running.admit(peer.node_id, id, token);
            self.handlers.spawn(
                async move {
                    answering.await;
                    // Answered (or given up): the body and the command decoded from it are gone, the
                    // budget is free. (It is held while the reply waits for room on a full lane,
                    // which only slows a peer that does not read its replies.)
                    drop(permit);
                    id
                }
                .instrument(tracing::Span::current()),
            );
            return;
        }
        // Poll it once here: a handler that answers at once (the common case) replies without
        // a hand-off to a task of its own, which after an idle link is a wake-up, and without
        // a slot in `running` (no `Cancel` can come for it before it is done: this reader reads
        // the peer's next frame only after this returns). The future catches its handler's
        // panics, so polling it here cannot unwind into the reader. The waker is a no-op: one
        // still pending is spawned below, and its task's first poll registers the real waker.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if answering.as_mut().poll(&mut cx).is_pending() {
            // Cannot fail: checked above, and nothing was admitted since.
            let _ = self.running.admit(peer.node_id, id, token);
            self.handlers.spawn(
                async move {
                    answering.await;
                    id
                }
                .instrument(tracing::Span::current()),
            );
        }
    }

    /// What delivers this peer's events, or `None` once the bus is gone.
    pub(super) fn events(&self) -> Option<Box<dyn EventSink>> {
        Some(self.dispatch.upgrade()?.events(self.peer))
    }

    /// Offers one event to the subscriptions; `Err` (the connection closes) if the peer sent
    /// it beyond the room we granted.
    pub(super) fn on_event(&mut self, sink: &mut dyn EventSink, frame: Frame) -> Result<(), Ended> {
        let credit = match &frame.name {
            Some(FrameName::Inline(name)) => self.credit(name)?,
            _ => None,
        };
        if let Err(e) = sink.deliver(&frame, credit) {
            peer_warn!(self.warnings, peer = %self.peer.node_id, event = ?frame.name, error = %e, "event did not decode");
        }
        Ok(())
    }

    /// Counts one event of `name` under what we granted the peer and gives the grant, if we
    /// granted it anything; `Err` if the peer went beyond it. The last grant used is kept: a
    /// burst of events of one name looks it up once.
    pub(super) fn credit(&mut self, name: &Arc<str>) -> Result<Option<&Arc<Grant>>, Ended> {
        let cached = matches!(&self.last_grant,
            Some((last, _)) if Arc::ptr_eq(last, name) || **last == **name);
        if !cached {
            let Some(grant) = self.peer.credit.grant(name) else {
                return Ok(None);
            };
            self.last_grant = Some((Arc::clone(name), grant));
        }
        let Some((_, grant)) = &self.last_grant else {
            return Ok(None);
        };
        match grant.receive() {
            Ok(()) => Ok(Some(grant)),
            Err(overrun) => {
                tracing::warn!(
                    peer = %self.peer.node_id,
                    event = grant.name(),
                    limit = overrun.limit,
                    "events beyond the credit granted: closing the connection"
                );
                Err(Ended::Broken("events beyond the credit granted"))
            }
        }
    }
}

/// Runs `job` (decompressing, decoding) on a blocking thread and waits for it; an error (a
/// body that does not decompress) closes the connection, as it would have on the reader.
pub(super) async fn off_reader<T: Send + 'static>(
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
pub(super) fn is_request_id_zero(kind: FrameKind, id: u64) -> bool {
    id == 0
        && matches!(
            kind,
            FrameKind::Command | FrameKind::Reply | FrameKind::ReplyError | FrameKind::Cancel
        )
}
