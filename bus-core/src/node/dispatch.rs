//! The seam between the runtime and the layer above it.
//!
//! The runtime moves frames; what a peer's command or event *means* (which handler runs it, in
//! which context, how its reply is encoded) is decided above, by whatever implements
//! [`Dispatch`] (the bus). The runtime holds it weakly: a node whose bus is gone refuses
//! commands and drops events. Nothing under `node/` names the bus's types.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::credit::{EventFlow, Grant};
use super::peer::PeerHandle;
use crate::context::CancelSignal;
use crate::wire::control::{GroupInterest, ReplyError};
use crate::wire::{Frame, FrameCodec, FrameError};

/// What the runtime asks of the layer above it.
pub(crate) trait Dispatch: Send + Sync + 'static {
    /// Starts `cmd`, a command `peer` sent. `Ok` is a future that runs it and queues its reply
    /// (or nothing, if the caller gave up); the runtime polls it once at once (a large one is spawned
    /// at once: its body is made on a blocking thread) and spawns it if
    /// it did not finish. `Err` refuses it without running anything; the runtime answers with
    /// the error.
    fn command(
        self: Arc<Self>,
        peer: &PeerHandle,
        cmd: InboundCommand,
    ) -> Result<Answering, ReplyError>;

    /// What delivers the events `peer` sends, for one burst of frames.
    fn events(self: Arc<Self>, peer: &PeerHandle) -> Box<dyn EventSink>;

    /// The command names handled here and the event names subscribed to here, with how their
    /// subscriptions take peers' events: the interest the runtime announces to peers, and the
    /// room it grants them.
    fn interest(&self) -> LocalNames;
}

/// The names a node handles, as [`Dispatch::interest`] gives them.
#[derive(Debug, Default)]
pub(crate) struct LocalNames {
    pub(crate) commands: Vec<std::borrow::Cow<'static, str>>,
    pub(crate) events: Vec<(&'static str, EventFlow)>,
    /// The groups with members here, with the room each grants a peer on its channel.
    pub(crate) groups: Vec<(GroupInterest, EventFlow)>,
}

/// A peer's command, as the runtime hands it over.
pub(crate) struct InboundCommand {
    /// The frame without its body: kind, request id, name and headers.
    pub(crate) head: Frame,
    pub(crate) body: CommandBody,
    /// Where the answer goes.
    pub(crate) reply: ReplyTo,
}

/// A command's body: the bytes, or (for a large body) the job that makes them off the
/// executor's threads.
pub(crate) enum CommandBody {
    Bytes(Bytes),
    Large(BodyJob),
}

/// Makes a large command's body (decompresses it, or hands over the bytes as they came).
pub(crate) type BodyJob = Box<dyn FnOnce() -> Result<Bytes, FrameError> + Send>;

/// How a command's answer reaches its caller.
pub(crate) struct ReplyTo {
    /// The request id to answer.
    pub(crate) id: u64,
    /// The connection the command came on: its codec, its reply lane, its write-through gate
    /// (one reference count per command, not one for each).
    pub(crate) peer: Arc<PeerHandle>,
    /// Cancelled when the caller gives up (a `Cancel` frame) or the connection ends.
    pub(crate) cancel: CancelSignal,
}

impl ReplyTo {
    /// How the peer reads our frames.
    pub(crate) fn codec(&self) -> &FrameCodec {
        &self.peer.send_codec
    }

    /// The peer's reply lane.
    pub(crate) fn lane(&self) -> &mpsc::Sender<Bytes> {
        &self.peer.lanes.replies
    }

    /// Writes the framed answer from this call if the connection's writer is idle and nothing
    /// is queued before it; hands it back otherwise, for the reply lane.
    pub(crate) fn try_through(&self, frame: Bytes) -> Result<(), Bytes> {
        self.peer.try_through(frame)
    }
}

/// A command being answered: resolves once its reply is queued (or it was given up).
pub(crate) type Answering = futures_util::future::BoxFuture<'static, ()>;

/// Delivers the events of one peer.
pub(crate) trait EventSink: Send {
    /// Whether anything here subscribes to event `name` (a large body is not decompressed for
    /// nothing).
    fn wants(&self, name: &str) -> bool;

    /// Offers one event frame to the subscriptions of its name, never waiting. An event
    /// nothing subscribes to is dropped; `Err` is a body that does not decode. The sink may
    /// hold the event back to hand it over with the ones behind it, until
    /// [`flush`](Self::flush) or its drop.
    ///
    /// `credit` is the grant the event came under, if we granted the peer room for its name
    /// (the event already [counted](Grant::receive) there). Subscriptions that wait when full
    /// queue the event whatever their length, holding a [`Receipt`](super::credit::Receipt)
    /// for it until they take it off their queue: the grant bounds what the peer can add.
    /// Without credit, a full queue drops the event.
    fn deliver(&mut self, frame: &Frame, credit: Option<&Arc<Grant>>) -> Result<(), FrameError>;

    /// Hands the events held back to their subscriptions.
    fn flush(&mut self);

    /// Counts an event dropped unread because its body was over the decompressed limit.
    fn too_large(&self);
}
