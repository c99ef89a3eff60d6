//! The reader's side of what a peer sends: its commands (run, answered, refused), its events
//! (delivered to the subscriptions), and the large bodies handled off the reader.

use super::*;

/// The reader's side of the requests a peer sends us.
pub(super) struct Inbound<'a> {
    pub(super) node: &'a NodeShared,
    pub(super) bus: &'a Weak<BusInner>,
    pub(super) peer: &'a Arc<PeerHandle>,
    pub(super) running: InboundRequests<CancellationToken>,
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
    pub(super) async fn on_large_event(&self, large: Large) -> Result<(), Ended> {
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
    pub(super) fn refuse(&self, id: u64, kind: ErrorKind, message: String) {
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
    pub(super) fn on_command(&mut self, frame: Frame, large: Option<LargeCommand>) {
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
    pub(super) fn event_target(&self) -> Option<EventTarget> {
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
    pub(super) fn meta(
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

    pub(super) fn on_event(&self, target: &EventTarget, frame: Frame) {
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

/// The bus, its event table and the sender's scope, shared by the events of one read burst.
pub(super) struct EventTarget {
    pub(super) bus: Arc<BusInner>,
    pub(super) table: Arc<EventTable>,
    pub(super) scope: Scope,
    /// The context of the burst's events without headers, made at the first.
    pub(super) plain: std::cell::OnceCell<Arc<EventMeta>>,
}

/// The encoded `Reply` or `ReplyError` for request `id`.
pub(super) fn reply_frame(
    codec: &FrameCodec,
    id: u64,
    outcome: Result<Bytes, ReplyError>,
) -> Option<Bytes> {
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
pub(super) fn scope_of(bus: &BusInner, peer: &PeerHandle) -> Scope {
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

pub(super) fn headers_of(frame: &Frame) -> Headers {
    let mut headers = Headers::new();
    if let Some(key) = &frame.headers.idempotency_key {
        headers.insert(Headers::IDEMPOTENCY_KEY, key.clone());
    }
    for (k, v) in &frame.headers.extra {
        headers.insert(k.clone(), v.clone());
    }
    headers
}
