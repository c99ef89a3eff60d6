//! A connection's reader: frames in bursts, liveness, and the retirement of a replaced
//! connection.

use super::*;

/// How many frames the reader handles at most before it looks at its timers and its other
/// work again.
const READ_BURST: usize = 256;

/// Reads frames until the connection ends; returns why it ended.
pub(super) async fn read_loop(
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
    // Polled only once woken, not on each of the loop's turns.
    let stopped = on_wake::OnWake::new(peer.stop.cancelled());
    let retired = on_wake::OnWake::new(peer.retire.cancelled());
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
                    let now = now_std();
                    liveness.on_frame_received(now);
                    peer.heard(now);
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
                            let _ = peer.try_send_now(&peer.lanes.control, bytes);
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
        Ok(Ok(bytes)) => peer.try_queue_event(bytes).is_ok(),
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
    // and used for the events behind it (not an upgrade and a table load per frame). It hands
    // the events to their subscriptions a run at a time; let go (which hands over what it
    // holds) before any other frame, whose handling may wait. (A yield for the cooperative
    // budget between two events keeps it, once it has handed over what it holds: the events
    // after the yield are delivered as if they had been read before it.)
    let mut events: Option<Box<dyn EventSink>> = None;
    // Frames and bytes of the burst, recorded once at its end.
    let mut tally = crate::metrics::Tally::received(&peer.counters);
    while let Some(bytes) = next.take() {
        tally.frame(bytes.len());
        // A compressed body over `LARGE_BODY` comes back undecompressed; a plain one over it is
        // decoded off the reader too. Either way the fast path below only compares a length.
        match codec.decode_frame_deferred(bytes, &mut inbound.names, LARGE_BODY) {
            Ok(Decoded::Frame(frame))
                if frame.kind == FrameKind::Event && frame.body.len() <= LARGE_BODY =>
            {
                if events.is_none() {
                    events = inbound.events();
                }
                if let Some(sink) = &mut events {
                    inbound.on_event(&mut **sink, frame)?;
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
        if !tokio::task::coop::has_budget_remaining() {
            if let Some(sink) = &mut events {
                sink.flush();
            }
        }
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
