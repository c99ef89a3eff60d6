//! The actor's side of interest exchange with peers: their snapshots and deltas, their
//! requests for ours, and the snapshots owed to peers whose control lane was full.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::Actor;
use crate::id::NodeId;
use crate::node::credit::EventFlow;
use crate::node::dispatch::LocalNames;
use crate::node::{encode, PeerHandle};
use crate::proto::interest::Applied;
use crate::wire::control::{ControlMessage, GroupInterest, Interest};

/// Our interest as the layer above gives it: the event names and group channels we take
/// peers' events on (with the room each grants), and our groups by channel.
struct Local {
    flows: BTreeMap<String, EventFlow>,
    groups: BTreeMap<String, GroupInterest>,
}

impl Local {
    fn of(names: LocalNames) -> (Vec<Cow<'static, str>>, Vec<&'static str>, Self) {
        let events: Vec<&'static str> = names.events.iter().map(|(name, _)| *name).collect();
        let mut flows: BTreeMap<String, EventFlow> = names
            .events
            .into_iter()
            .map(|(name, flow)| (name.to_owned(), flow))
            .collect();
        let mut groups = BTreeMap::new();
        for (group, flow) in names.groups {
            let channel = group.channel();
            flows.insert(channel.clone(), flow);
            groups.insert(channel, group);
        }
        (names.commands, events, Local { flows, groups })
    }
}

impl Actor {
    pub(super) fn init_interest(&mut self) {
        let Some(dispatch) = self.dispatch.upgrade() else {
            return;
        };
        let (commands, events, local) = Local::of(dispatch.interest());
        for name in commands {
            let _ = self.local.add_command(&name);
        }
        for name in events {
            let _ = self.local.subscribe(name);
        }
        for group in local.groups.values() {
            let _ = self.local.join_group(group.clone());
        }
        self.local_events = local.flows;
        self.local_groups = local.groups;
    }

    /// Our subscriptions changed: tell every peer the difference.
    pub(super) fn on_local_interest(&mut self) {
        let Some(dispatch) = self.dispatch.upgrade() else {
            return;
        };
        let (_, events, now) = Local::of(dispatch.interest());
        let mut deltas = Vec::new();
        // Event names outside groups: what `local` subscribes to.
        let was: Vec<&str> = self
            .local_events
            .keys()
            .filter(|n| !self.local_groups.contains_key(*n))
            .map(String::as_str)
            .collect();
        for added in events.iter().filter(|n| !was.contains(n)) {
            deltas.extend(self.local.subscribe(added));
        }
        for removed in was.iter().filter(|n| !events.contains(n)) {
            deltas.extend(self.local.unsubscribe(removed));
        }
        for (channel, group) in &now.groups {
            if self.local_groups.get(channel) != Some(group) {
                deltas.extend(self.local.join_group(group.clone()));
            }
        }
        for (channel, group) in &self.local_groups {
            if !now.groups.contains_key(channel) {
                deltas.extend(self.local.leave_group(&group.event, &group.group));
            }
        }
        // New names and channels, and those whose subscriptions now take peers' events
        // otherwise.
        let offers: Vec<(&str, EventFlow)> = now
            .flows
            .iter()
            .filter(|(name, flow)| self.local_events.get(*name) != Some(flow))
            .map(|(name, flow)| (name.as_str(), *flow))
            .collect();
        for delta in &deltas {
            for (node, p) in &self.peers {
                let sent = send_interest(&p.handle, delta);
                self.links.interest_sent(*node, sent);
            }
        }
        if !offers.is_empty() {
            for p in self.peers.values() {
                p.handle.credit.offer(&offers);
            }
        }
        self.local_events = now.flows;
        self.local_groups = now.groups;
    }

    /// The room each of our event names and group channels grants a peer.
    pub(super) fn flows(&self) -> Vec<(&str, EventFlow)> {
        self.local_events
            .iter()
            .map(|(name, flow)| (name.as_str(), *flow))
            .collect()
    }

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
