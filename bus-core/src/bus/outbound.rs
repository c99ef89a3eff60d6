//! A command's way to a peer: sending its frame, waiting for the answer, sending it to another
//! handler when its connection failed before it was written, and taking it back (a `Cancel`)
//! when the caller gives up.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::remote::read_reply;
use crate::error::{Error, ErrorKind};
use crate::message::Command;
use crate::node::{Answer, NodeShared, PeerHandle, ReplyOutcome};
use crate::proto::routing::Here;
use crate::scope::Scope;
use crate::wire::{with_remaining_deadline, PREFIX_LEN};

/// How many times a command that was never sent is sent to another handler at most.
const MAX_REROUTES: usize = 4;

/// What a command needs to find another handler when its connection failed before it was
/// written.
pub(super) struct Reroute {
    pub(super) node: Arc<NodeShared>,
    pub(super) scope: Scope,
}

impl Reroute {
    /// Another available handler of `name` in scope that can take `bytes`, if there is one.
    /// The connection that failed is already out of the routes' picks.
    fn next(&self, name: &str, bytes: &Bytes) -> Option<Arc<PeerHandle>> {
        let (host_id, cluster) = self.node.here_ids();
        let here = Here {
            host_id: &host_id,
            cluster: &cluster,
        };
        let routes = self.node.routes();
        let route = routes.commands.get(name)?;
        // Only those whose limit takes the frame (a rare path: the copy costs nothing that
        // matters here).
        let fit: Vec<Arc<PeerHandle>> = route
            .peers
            .iter()
            .filter(|p| bytes.len().saturating_sub(PREFIX_LEN) <= p.send_codec.max_frame_size)
            .cloned()
            .collect();
        route.picker.pick(&fit, here, self.scope).map(Arc::clone)
    }
}

/// Sends an encoded command to `peer` and waits for its answer. A command whose connection
/// failed before any byte of it was written never reached a handler, so it goes to another
/// handler in scope (at most [`MAX_REROUTES`] times, within the same timeout) rather than
/// failing with `PeerLost`: at-most-once still holds.
///
/// The timeout is a deadline in the pending table of the connection the command waits on,
/// which that connection's watcher enforces: no timer per request.
pub(super) async fn routed_call<C: Command>(
    name: Cow<'static, str>,
    route: Reroute,
    mut peer: Arc<PeerHandle>,
    id: u64,
    mut bytes: Bytes,
    timeout: Option<Duration>,
) -> Result<C::Reply, Error> {
    let deadline = deadline_after(timeout);
    let mut reroutes = 0;
    loop {
        match attempt(&peer, id, bytes, deadline).await {
            Attempt::Answered(outcome) => {
                return read_reply::<C>(&name, outcome).map_err(|e| about(&peer, e))
            }
            Attempt::Lost => return Err(lost(&name, &peer)),
            // The handler it was last sent to is the one that did not answer in time.
            Attempt::TimedOut => return Err(timed_out(&name, &peer)),
            Attempt::NotSent(back) => {
                // The handler it goes to now gets the time the caller still waits.
                bytes = match deadline {
                    Some(at) => {
                        let left = at.saturating_duration_since(now_std());
                        with_remaining_deadline(&back, left).unwrap_or(back)
                    }
                    None => back,
                };
                let next = (reroutes < MAX_REROUTES)
                    .then(|| route.next(&name, &bytes))
                    .flatten();
                let Some(next) = next else {
                    return Err(not_sent(&name, &peer));
                };
                tracing::debug!(
                    command = %name,
                    from = %peer.node_id,
                    to = %next.node_id,
                    "the link failed before the command was sent: sent to another handler"
                );
                reroutes += 1;
                peer = next;
            }
        }
    }
}

/// Sends an encoded command to `peer` and waits for its answer; a command that was never sent
/// fails with `PeerLost` too (for `send_all`, which asks each node once).
///
/// The pending entry is removed at once when the caller gives up (the future is dropped or
/// times out), and the peer is told with `Cancel`.
pub(super) async fn remote_call<C: Command>(
    name: &str,
    peer: Arc<PeerHandle>,
    id: u64,
    bytes: Bytes,
    timeout: Option<Duration>,
) -> Result<C::Reply, Error> {
    let outcome = match attempt(&peer, id, bytes, deadline_after(timeout)).await {
        Attempt::Answered(outcome) => outcome,
        Attempt::Lost => return Err(lost(name, &peer)),
        Attempt::NotSent(_) => return Err(not_sent(name, &peer)),
        Attempt::TimedOut => return Err(timed_out(name, &peer)),
    };
    read_reply::<C>(name, outcome).map_err(|e| about(&peer, e))
}

/// The deadline `timeout` from now (on the runtime's clock, which tests may pause); none for
/// no timeout, or one too far to name.
fn deadline_after(timeout: Option<Duration>) -> Option<std::time::Instant> {
    timeout.and_then(|t| now_std().checked_add(t))
}

fn now_std() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// `peer` did not answer before the caller's deadline.
fn timed_out(name: &str, peer: &PeerHandle) -> Error {
    about(
        peer,
        Error::new(ErrorKind::Timeout).with_message_name(name.to_owned()),
    )
}

/// The peer was lost after the command may have been written: the outcome is unknown.
fn lost(name: &str, peer: &PeerHandle) -> Error {
    about(
        peer,
        Error::new(ErrorKind::PeerLost).with_message_name(name.to_owned()),
    )
}

/// `err` is about `peer`: it names it by id and node name.
pub(super) fn about(peer: &PeerHandle, err: Error) -> Error {
    err.with_peer(peer.node_id, peer.identity.name.as_str())
}

/// The peer was lost before the command was written, and no other handler could take it.
fn not_sent(name: &str, peer: &PeerHandle) -> Error {
    lost(name, peer).with_detail("the link failed before the command was sent: it did not run")
}

/// How one try of sending a command to one peer ended.
enum Attempt {
    Answered(ReplyOutcome),
    /// No byte of it was written; here it is back.
    NotSent(Bytes),
    /// The peer was lost after it may have been written.
    Lost,
    /// The deadline came first; the peer was told with a `Cancel`.
    TimedOut,
}

/// Registers request `id` with `peer` until `deadline`, queues its frame and waits for the
/// answer.
///
/// # Cancel safety
///
/// Dropping it removes the pending entry and queues a `Cancel` for the peer.
async fn attempt(
    peer: &PeerHandle,
    id: u64,
    bytes: Bytes,
    deadline: Option<std::time::Instant>,
) -> Attempt {
    let (tx, mut rx) = oneshot::channel();
    if !peer.register(id, tx, deadline) {
        return Attempt::NotSent(bytes);
    }
    let pending = Pending { peer, id };
    // Room at once (the usual case): queue without the waiter on `gone` that waiting for room
    // needs.
    match peer.try_send_command(bytes) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(bytes)) => {
            // Waiting for room ends early when the request does (its deadline came): the
            // queueing goes first, so a connection that is gone hands the frame back.
            let queued = tokio::select! {
                biased;
                queued = peer.queue(&peer.lanes.commands, bytes) => queued,
                answer = &mut rx => return pending.answered(answer),
            };
            if let Err(bytes) = queued {
                pending.disarm();
                return Attempt::NotSent(bytes);
            }
        }
        Err(mpsc::error::TrySendError::Closed(bytes)) => {
            pending.disarm();
            return Attempt::NotSent(bytes);
        }
    }
    let answer = rx.await;
    pending.answered(answer)
}

/// What the pending entry's waiter was told. Its sender is dropped when the peer is lost
/// after the frame may have been written.
fn read_answer(answer: Result<Answer, oneshot::error::RecvError>) -> Attempt {
    match answer {
        Ok(Answer::Reply(outcome)) => Attempt::Answered(outcome),
        Ok(Answer::NotSent(bytes)) => Attempt::NotSent(bytes),
        Ok(Answer::TimedOut) => Attempt::TimedOut,
        Err(_) => Attempt::Lost,
    }
}

/// Removes a request's pending entry when its caller stops waiting, and tells the peer.
struct Pending<'p> {
    peer: &'p PeerHandle,
    id: u64,
}

impl Pending<'_> {
    /// The frame never reached the lanes: the entry goes without a `Cancel`.
    fn disarm(self) {
        self.peer.forget(self.id);
        std::mem::forget(self);
    }

    /// The waiter was answered (or its sender dropped): whoever did so took the entry out of
    /// the table first, so there is nothing to remove (and no lock to take).
    fn answered(self, answer: Result<Answer, oneshot::error::RecvError>) -> Attempt {
        std::mem::forget(self);
        read_answer(answer)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        // Still waiting: the caller gave up (a reply or the peer's loss removes it first).
        self.peer.give_up(self.id);
    }
}
