//! The nodes we hold a link to, as membership must count them: the run of the node each link
//! reaches, and whether an interest snapshot is owed to it.
//!
//! The runtime keeps the connections; this table decides what membership is told about them
//! (a dial of a linked node is settled rather than made; a link whose node refuted a rumour of
//! its death is counted again at the new incarnation) and which peers are owed interest.

use std::collections::HashMap;
use std::time::Instant;

use crate::proto::membership::{DialRequest, Membership, Output};
use crate::wire::control::{MemberState, PeerIdentity};
use crate::NodeId;

/// One link, as membership sees it.
#[derive(Debug)]
struct Link {
    /// The identity the handshake gave (its addresses resolved against the connection).
    identity: PeerIdentity,
    /// The run of the node this link reaches: the handshake's incarnation, raised when the
    /// node refutes a rumour of its death (a node id names one process, so a newer
    /// incarnation of it is the same process at the other end of this link).
    incarnation: u64,
    /// An interest message to this peer did not fit its control lane: a snapshot is owed,
    /// sent on the next timer tick that finds room (a lost last delta would otherwise go
    /// unnoticed until our interest changes again).
    owes_interest: bool,
}

/// The linked nodes; see the [module docs](self).
#[derive(Debug, Default)]
pub struct Links {
    links: HashMap<NodeId, Link>,
}

impl Links {
    /// No links.
    pub fn new() -> Self {
        Self::default()
    }

    /// A link to `identity`'s node is up (replacing any earlier one to it), at the handshake's
    /// incarnation; `owes_interest` if our interest snapshot could not be sent on it.
    pub fn insert(&mut self, identity: PeerIdentity, owes_interest: bool) {
        let node = NodeId::from_u128(identity.node_id);
        self.links.insert(
            node,
            Link {
                incarnation: identity.incarnation,
                identity,
                owes_interest,
            },
        );
    }

    /// The link to `node` is gone; returns the incarnation it reached, for membership (so the
    /// end of an old run's link never buries a newer one).
    pub fn remove(&mut self, node: NodeId) -> Option<u64> {
        self.links.remove(&node).map(|l| l.incarnation)
    }

    /// Forgets every link.
    pub fn clear(&mut self) {
        self.links.clear();
    }

    /// The incarnation the link to `node` reaches, if linked.
    pub fn incarnation(&self, node: NodeId) -> Option<u64> {
        self.links.get(&node).map(|l| l.incarnation)
    }

    /// Records whether an interest message to `node` was sent: one that was not leaves a
    /// snapshot owed. A sent message pays nothing owed (only a snapshot does: see
    /// [`Links::paid`]).
    pub fn interest_sent(&mut self, node: NodeId, sent: bool) {
        if let Some(l) = self.links.get_mut(&node) {
            l.owes_interest |= !sent;
        }
    }

    /// Whether an interest snapshot is owed to `node`.
    pub fn owes_interest(&self, node: NodeId) -> bool {
        self.links.get(&node).is_some_and(|l| l.owes_interest)
    }

    /// The nodes owed an interest snapshot: the runtime sends each one and reports with
    /// [`Links::paid`].
    pub fn owed(&self) -> Vec<NodeId> {
        self.links
            .iter()
            .filter(|(_, l)| l.owes_interest)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Records whether the snapshot owed to `node` went out.
    pub fn paid(&mut self, node: NodeId, sent: bool) {
        if let Some(l) = self.links.get_mut(&node) {
            l.owes_interest = !sent;
        }
    }

    /// A dial of a node we already have a link to (by its id, or by an address it
    /// advertises) is not made: a second connection would only replace the first and fail
    /// what waits on it. Membership is told the node is linked. Returns `None` if no link
    /// settles the dial (it is to be made), else what membership asks.
    pub fn settle_linked(
        &mut self,
        dial: &DialRequest,
        membership: &mut Membership,
        now: Instant,
    ) -> Option<Vec<Output>> {
        let node = self
            .links
            .iter()
            .find(|(id, l)| match dial.node {
                Some(node) => **id == node,
                None => l.identity.addresses.contains(&dial.addr),
            })
            .map(|(id, _)| *id)?;
        let out = self.relink(node, membership, now);
        let linked = membership
            .member(node)
            .is_some_and(|m| m.state() == MemberState::Alive && m.is_connected());
        if linked {
            membership.on_dial_succeeded(dial, node, now);
        } else {
            // A tombstone behind a live link: back off until gossip settles it (the node hears
            // of its death over this link and refutes). Never "succeeded" while membership
            // does not count the link, or it would ask for the same dial at once, forever.
            membership.on_dial_not_made(dial, now);
        }
        Some(out)
    }

    /// After news that may carry newer incarnations of linked nodes (gossip, discovery):
    /// links whose node refuted are counted again at the new incarnation.
    pub fn relink_refuted(&mut self, membership: &mut Membership, now: Instant) -> Vec<Output> {
        let refuted: Vec<NodeId> = self
            .links
            .iter()
            .filter(|(id, l)| {
                membership.member(**id).is_some_and(|m| {
                    m.state() == MemberState::Alive
                        && !m.is_connected()
                        && m.incarnation() > l.incarnation
                })
            })
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::new();
        for node in refuted {
            tracing::debug!(%node, "linked node refuted its death; link counted again");
            out.extend(self.relink(node, membership, now));
        }
        out
    }

    /// Tells membership that the link to `node` is up, at the newest incarnation membership
    /// holds of it if that is newer than the link's: the node refuted a rumour of its death,
    /// and the refutation reached us as gossip rather than a new handshake.
    fn relink(&mut self, node: NodeId, membership: &mut Membership, now: Instant) -> Vec<Output> {
        let Some(link) = self.links.get_mut(&node) else {
            return Vec::new();
        };
        if let Some(m) = membership.member(node) {
            if m.state() == MemberState::Alive && m.incarnation() > link.incarnation {
                link.incarnation = m.incarnation();
            }
        }
        let mut identity = link.identity.clone();
        identity.incarnation = link.incarnation;
        membership.on_connected(&identity, now)
    }
}

#[cfg(test)]
mod tests;
