//! The actor's side of interest exchange with peers: their snapshots and deltas, their
//! requests for ours, and the snapshots owed to peers whose control lane was full.

use super::Actor;
use crate::id::NodeId;
use crate::node::{encode, PeerHandle};
use crate::proto::interest::Applied;
use crate::wire::control::{ControlMessage, Interest};

impl Actor {
    pub(super) fn on_interest(&mut self, node_id: NodeId, conn_id: u64, msg: &Interest) {
        let Some(p) = self.peers.get_mut(&node_id) else {
            return;
        };
        if p.handle.conn_id != conn_id {
            return;
        }
        match p.interest.apply(msg) {
            Applied::Changed => self.publish(),
            Applied::Truncated { changed } => {
                tracing::debug!(peer = %node_id, "interest over the bounds: the names beyond them are ignored");
                // A peer repeating names it may not add costs no rebuild of the routes.
                if changed {
                    self.publish();
                }
            }
            Applied::Unchanged | Applied::Stale | Applied::AwaitingSnapshot => {}
            Applied::Gap { .. } => {
                let request = p.interest.snapshot_request();
                if let Ok(frame) = request.to_frame() {
                    if let Ok(bytes) = encode(&p.handle.send_codec, &frame) {
                        let _ = p.handle.lanes.control.try_send(bytes);
                    }
                }
            }
        }
    }

    /// A peer asks for our interest snapshot.
    pub(super) fn on_interest_request(&mut self, node_id: NodeId, conn_id: u64) {
        let snapshot = self.local.snapshot();
        if let Some(p) = self.peers.get(&node_id) {
            if p.handle.conn_id == conn_id {
                let sent = send_interest(&p.handle, &snapshot);
                // Every grant again too: limits only grow, so a repeat changes nothing.
                p.handle.credit.resend();
                self.links.interest_sent(node_id, sent);
            }
        }
    }

    /// Sends the interest snapshots owed to peers whose control lane was full.
    pub(super) fn pay_interest(&mut self) {
        let snapshot = self.local.snapshot();
        for node in self.links.owed() {
            if let Some(p) = self.peers.get(&node) {
                let sent = send_interest(&p.handle, &snapshot);
                self.links.paid(node, sent);
            }
        }
    }
}

/// Queues `msg` on the peer's control lane; `false` if it did not fit (or could not be
/// encoded), and a snapshot is owed.
pub(super) fn send_interest(peer: &PeerHandle, msg: &Interest) -> bool {
    let sent = msg
        .to_frame()
        .ok()
        .and_then(|f| encode(&peer.send_codec, &f).ok())
        .is_some_and(|bytes| peer.lanes.control.try_send(bytes).is_ok());
    if !sent {
        tracing::debug!(peer = %peer.node_id, "interest not sent now: the control lane is full");
    }
    sent
}
