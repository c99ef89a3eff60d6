//! What the application sees of the mesh: [`MembershipView`] and the [`Ready`] futures.

use std::sync::Arc;

use crate::bus::Bus;
use crate::id::NodeId;
use crate::message::{Command, Event};
use crate::proto::routing::Here;
use crate::scope::Scope;

/// One connected peer and what it handles, as [`Bus::membership`] shows it.
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
    /// The command names it handles, sorted.
    pub commands: Vec<String>,
    /// The event names it subscribes to, sorted.
    pub events: Vec<String>,
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

/// Futures that resolve once the mesh is ready for something. Made by [`Bus::ready`].
///
/// Wait on these instead of sleeping: they resolve as soon as the membership shows enough
/// nodes, and never if it never does (bound them with `tokio::time::timeout`).
#[derive(Debug, Clone, Copy)]
pub struct Ready<'a> {
    pub(crate) bus: &'a Bus,
}

impl Ready<'_> {
    /// Resolves once at least `n` nodes in `scope` handle command `C`, this node included.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn handlers<C: Command>(self, scope: Scope, n: usize) {
        let local = self.bus.inner.commands.contains_key(C::NAME);
        self.until(scope, n, move |_, p| match p {
            None => local,
            Some(p) => p.commands.iter().any(|c| c == C::NAME),
        })
        .await;
    }

    /// Resolves once at least `n` nodes in `scope` subscribe to event `E`, this node included.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn subscribers<E: Event>(self, scope: Scope, n: usize) {
        self.until(scope, n, |bus, p| match p {
            None => bus.inner.events.load().contains_key(E::NAME),
            Some(p) => p.events.iter().any(|e| e == E::NAME),
        })
        .await;
    }

    /// Resolves once at least `n` peers are connected (this node not counted).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn peers(self, n: usize) {
        let mut rx = self.bus.membership();
        let _ = rx.wait_for(|view| view.peers.len() >= n).await;
    }

    /// Waits until `counts` holds for `n` nodes in scope: the local node is `None`.
    async fn until(self, scope: Scope, n: usize, counts: impl Fn(&Bus, Option<&PeerInfo>) -> bool) {
        let bus = self.bus;
        let id = &bus.inner.identity;
        let here = Here {
            host_id: &id.host_id,
            cluster: &id.cluster,
        };
        let mut rx = bus.membership();
        let _ = rx
            .wait_for(|view| {
                let local = usize::from(counts(bus, None));
                let remote = if scope == Scope::Local {
                    0
                } else {
                    view.peers
                        .iter()
                        .filter(|p| here.in_scope(scope, &p.host_id, &p.cluster))
                        .filter(|p| counts(bus, Some(p)))
                        .count()
                };
                local + remote >= n
            })
            .await;
    }
}

/// The view for a membership watch, from the actor's table.
pub(crate) fn shared(view: MembershipView) -> Arc<MembershipView> {
    Arc::new(view)
}
