//! Inbound dispatch: the bus's side of the runtime's [`Dispatch`] seam.
//!
//! The runtime reads a peer's frames and hands over its commands and events; here they find
//! their handlers and subscriptions, get their [`Context`], and commands get their reply
//! framed and queued. The runtime never names the bus's types: it holds the bus as a
//! `Weak<dyn Dispatch>`.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::peer_events::PeerEvents;
use super::BusInner;
use crate::context::{Context, Deadline, Headers};
use crate::error::ErrorKind;
use crate::node::dispatch::{Answering, Dispatch, EventSink, InboundCommand, LocalNames, ReplyTo};
use crate::node::PeerHandle;
use crate::proto::requests::deadline_from_remaining;
use crate::proto::routing::Here;
use crate::scope::Scope;
use crate::wire::control::{encode_answer, ReplyError};
use crate::wire::{Frame, FrameName};

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

    fn events(self: Arc<Self>, peer: &PeerHandle) -> Box<dyn EventSink> {
        // A sealed bus has an empty table: its events are dropped as unsubscribed.
        let table = self.events.load_full();
        let scope = scope_of(&self, peer);
        Box::new(PeerEvents {
            bus: self,
            table,
            sender: peer.node_id,
            scope,
            plain: None,
            run: None,
        })
    }

    fn interest(&self) -> LocalNames {
        let table = self.events.load();
        LocalNames {
            commands: self.commands.keys().cloned().collect(),
            // A name whose subscriptions are all in groups is announced by its groups only.
            events: table
                .iter()
                .filter(|(_, slot)| slot.has_ungrouped())
                .map(|(name, slot)| (*name, slot.flow))
                .collect(),
            groups: table
                .values()
                .flat_map(|slot| &slot.group_info)
                .map(|g| (g.interest(), g.flow))
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
