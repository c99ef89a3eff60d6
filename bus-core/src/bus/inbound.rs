//! Inbound dispatch: the bus's side of the runtime's [`Dispatch`] seam.
//!
//! The runtime reads a peer's frames and hands over its commands and events; here they find
//! their handlers and subscriptions, get their [`Context`], and commands get their reply
//! framed and queued. The runtime never names the bus's types: it holds the bus as a
//! `Weak<dyn Dispatch>`.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{BusInner, EventTable};
use crate::context::{Context, Deadline, Headers};
use crate::error::ErrorKind;
use crate::node::credit::Receipt;
use crate::node::dispatch::{Answering, Dispatch, EventSink, InboundCommand, LocalNames, ReplyTo};
use crate::node::PeerHandle;
use crate::proto::requests::deadline_from_remaining;
use crate::proto::routing::Here;
use crate::scope::Scope;
use crate::stats::Counters;
use crate::subscription::EventMeta;
use crate::wire::control::{encode_answer, ReplyError};
use crate::wire::{Frame, FrameError, FrameName};

impl Dispatch for BusInner {
    fn command(
        self: Arc<Self>,
        peer: &PeerHandle,
        cmd: InboundCommand,
    ) -> Result<Answering, ReplyError> {
        let InboundCommand { head, body, reply } = cmd;
        let Some(FrameName::Inline(name)) = &head.name else {
            return Err(ReplyError::new(
                ErrorKind::Decode,
                "a command without a name",
            ));
        };
        let Some(slot) = self.commands.get(&**name) else {
            return Err(ReplyError::new(
                ErrorKind::NoHandler,
                format!("no handler for `{name}`"),
            ));
        };
        // The guard before the check: see `BusInner::enter`.
        let guard = self.enter_owned();
        if self.is_closed() {
            return Err(shutting_down());
        }
        let deadline = match head.headers.deadline {
            Some(remaining) => {
                let now = tokio::time::Instant::now();
                let at = deadline_from_remaining(remaining, now.into_std());
                Deadline::After {
                    timeout: remaining,
                    at: OnceLock::from(tokio::time::Instant::from_std(at)),
                }
            }
            None => Deadline::None,
        };
        let mut ctx = Context::new(
            crate::id::next_message_id(),
            peer.node_id,
            scope_of(&self, peer),
            super::Bus::for_handler(Arc::clone(&self)),
        );
        ctx.correlation_id = head.headers.correlation_id.clone().map(Arc::from);
        ctx.deadline = deadline;
        ctx.headers = headers_of(&head);
        ctx.cancel = Some(reply.cancel.clone());
        Ok(slot.remote.answer(body, ctx, reply, guard))
    }

    fn events(self: Arc<Self>, peer: &PeerHandle) -> Arc<dyn EventSink> {
        // A sealed bus has an empty table: its events are dropped as unsubscribed.
        let table = self.events.load_full();
        let scope = scope_of(&self, peer);
        Arc::new(PeerEvents {
            bus: self,
            table,
            sender: peer.node_id,
            scope,
            plain: OnceLock::new(),
        })
    }

    fn interest(&self) -> LocalNames {
        LocalNames {
            commands: self.commands.keys().copied().collect(),
            events: self
                .events
                .load()
                .iter()
                .map(|(name, slot)| (*name, slot.flow))
                .collect(),
        }
    }
}

fn shutting_down() -> ReplyError {
    ReplyError::new(ErrorKind::Closed, "the node is shutting down")
}

/// Frames `outcome` as the answer to `reply`'s request and queues it, unless the caller gave
/// up. Waits only when the peer's reply lane is full.
pub(crate) async fn answer(reply: ReplyTo, outcome: Result<Bytes, ReplyError>) {
    if reply.cancel.is_cancelled() {
        return;
    }
    let Some(bytes) = encode_answer(reply.codec(), reply.id, outcome) else {
        return;
    };
    let Err(bytes) = reply.try_through(bytes) else {
        return;
    };
    if let Err(mpsc::error::TrySendError::Full(bytes)) = reply.lane().try_send(bytes) {
        let _ = reply.lane().send(bytes).await;
    }
}

/// The subscriptions one peer's events reach during a burst of its frames: the table and the
/// sender's scope are read once per burst, not per event.
struct PeerEvents {
    bus: Arc<BusInner>,
    table: Arc<EventTable>,
    sender: crate::id::NodeId,
    scope: Scope,
    /// The context of the burst's events without headers, made at the first.
    plain: OnceLock<Arc<EventMeta>>,
}

impl PeerEvents {
    fn meta(&self, correlation_id: Option<Arc<str>>, headers: Headers) -> Arc<EventMeta> {
        Arc::new(EventMeta {
            correlation_id,
            sender: self.sender,
            scope: self.scope,
            headers,
        })
    }
}

impl EventSink for PeerEvents {
    fn wants(&self, name: &str) -> bool {
        self.table.contains_key(name)
    }

    fn deliver(&self, frame: &Frame, receipt: Option<Receipt>) -> Result<(), FrameError> {
        let Some(FrameName::Inline(name)) = &frame.name else {
            return Err(FrameError::Malformed {
                what: "an event without a name",
            });
        };
        let Some(slot) = self.table.get(&**name) else {
            return Ok(());
        };
        let message_id = crate::id::next_message_id();
        let with_headers;
        let meta = if frame.headers.is_empty() {
            self.plain.get_or_init(|| self.meta(None, Headers::new()))
        } else {
            let correlation_id = frame.headers.correlation_id.clone().map(Arc::from);
            with_headers = self.meta(correlation_id, headers_of(frame));
            &with_headers
        };
        (slot.deliver)(
            slot,
            &frame.body,
            message_id,
            meta,
            receipt,
            &self.bus.counters,
        )
    }

    fn too_large(&self) {
        Counters::bump(&self.bus.counters.remote_events_too_large);
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

/// The headers a handler sees of a peer's frame.
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
