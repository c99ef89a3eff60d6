//! What the application sees of the mesh: [`MembershipView`] and [`PeerInfo`].

use std::sync::Arc;

use crate::id::NodeId;

/// One connected peer and what it handles, as [`Bus::membership`](crate::Bus::membership) shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// The peer's node id.
    pub node_id: NodeId,
    /// Its name.
    pub name: String,
    /// Its cluster.
    pub cluster: String,
    /// Its host id.
    pub host_id: String,
    /// Its static public key, proven by the link's handshake (`None` only for a peer that
    /// left it out of its `Hello`: a hand-made one).
    pub public_key: Option<crate::trust::PublicKey>,
    /// The command names it handles, sorted.
    pub commands: Vec<String>,
    /// The event names it subscribes to outside any group, sorted.
    pub events: Vec<String>,
    /// The groups it has members in, sorted by event, then group.
    pub groups: Vec<PeerGroup>,
}

/// A group a peer has members in.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerGroup {
    /// The event name.
    pub event: String,
    /// The group's name.
    pub group: String,
    /// How the group shares its events, as the peer says.
    pub kind: crate::GroupKind,
}

/// The peers this node is connected to, replaced as a whole on every change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MembershipView {
    /// Connected peers, sorted by node id.
    pub peers: Vec<PeerInfo>,
    /// Live members we know of (through gossip or discovery) but cannot dial: none of the
    /// addresses they advertise uses a transport we have (Unix sockets count only on our own
    /// host). Other nodes may reach them; this node never redials them. Sorted.
    pub unreachable: Vec<NodeId>,
    /// No peer is connected although this node has somewhere to look for one (seed
    /// addresses, or members it learned of): it is cut off from the mesh, and keeps
    /// redialling with backoff. The node also logs a warning when this becomes true. False for
    /// a node with nothing to dial (the first node of a mesh, waiting for others).
    pub alone: bool,
}

impl MembershipView {
    /// The peer with `node_id`, if connected.
    pub fn peer(&self, node_id: NodeId) -> Option<&PeerInfo> {
        self.peers.iter().find(|p| p.node_id == node_id)
    }

    /// The peer named `name`, if connected.
    pub fn peer_named(&self, name: &str) -> Option<&PeerInfo> {
        self.peers.iter().find(|p| p.name == name)
    }
}

/// The view for a membership watch, from the actor's table.
pub(crate) fn shared(view: MembershipView) -> Arc<MembershipView> {
    Arc::new(view)
}
