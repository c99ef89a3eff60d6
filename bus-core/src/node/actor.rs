//! The node's actor: the one task that owns the node's mutable state.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::conn::{self, Side};
use super::routes::Routes;
use super::view::{self, MembershipView, PeerInfo};
use super::{encode, NodeShared, PeerHandle};
use crate::bus::BusInner;
use crate::id::NodeId;
use crate::proto::handshake::{arbitrate, Arbitration, ConnectionKey};
use crate::proto::interest::{Applied, LocalInterest, RemoteInterest};
use crate::transport::{Addr, Connection, Listener};
use crate::wire::control::{ControlMessage, Goodbye, GoodbyeReason, Interest};

/// What the node's tasks and the bus tell the actor.
#[derive(Debug)]
pub(crate) enum ActorMsg {
    /// A listener accepted a connection.
    Inbound(Connection),
    /// A connection completed its handshake; answer whether to keep it.
    PeerUp {
        peer: Arc<PeerHandle>,
        key: ConnectionKey,
        keep: oneshot::Sender<bool>,
    },
    /// A connection ended.
    PeerDown { node_id: NodeId, conn_id: u64 },
    /// A peer's interest snapshot or delta.
    Interest {
        node_id: NodeId,
        conn_id: u64,
        msg: Interest,
    },
    /// A peer asks for our interest snapshot.
    InterestRequest { node_id: NodeId, conn_id: u64 },
    /// Say goodbye, close every connection, stop.
    Shutdown(oneshot::Sender<()>),
}

struct PeerEntry {
    handle: Arc<PeerHandle>,
    key: ConnectionKey,
    interest: RemoteInterest,
}

struct Actor {
    node: Arc<NodeShared>,
    bus: Weak<BusInner>,
    peers: HashMap<NodeId, PeerEntry>,
    local: LocalInterest,
    /// The event names in `local`, to diff against the subscription table.
    local_events: BTreeSet<String>,
    tasks: JoinSet<()>,
}

/// Runs the node: listens, dials the seeds, and keeps the peers' table until shutdown.
pub(crate) async fn run(
    node: Arc<NodeShared>,
    bus: Weak<BusInner>,
    mut inbox: mpsc::Receiver<ActorMsg>,
    listeners: Vec<Box<dyn Listener>>,
    seeds: Vec<Addr>,
) {
    let mut actor = Actor {
        node: Arc::clone(&node),
        bus,
        peers: HashMap::new(),
        local: LocalInterest::new(),
        local_events: BTreeSet::new(),
        tasks: JoinSet::new(),
    };
    actor.init_interest();
    for listener in listeners {
        let (stopping, inbox) = (node.stopping.clone(), node.inbox.clone());
        actor.tasks.spawn(async move {
            tokio::select! {
                () = accept_loop(listener, inbox) => {}
                () = stopping.cancelled() => {}
            }
        });
    }
    for seed in seeds {
        let (node, bus) = (Arc::clone(&actor.node), actor.bus.clone());
        actor.tasks.spawn(dial_loop(node, bus, seed));
    }
    loop {
        tokio::select! {
            msg = inbox.recv() => {
                let Some(msg) = msg else { break };
                if let Some(done) = actor.on_msg(msg) {
                    actor.shutdown().await;
                    let _ = done.send(());
                    break;
                }
            }
            () = node.interest_changed.notified() => actor.on_local_interest(),
            Some(_) = actor.tasks.join_next() => {}
        }
    }
}

impl Actor {
    fn init_interest(&mut self) {
        let Some(bus) = self.bus.upgrade() else {
            return;
        };
        for name in bus.commands.keys() {
            let _ = self.local.add_command(name);
        }
        for name in bus.events.load().keys() {
            let _ = self.local.subscribe(name);
            self.local_events.insert((*name).to_owned());
        }
    }

    fn on_msg(&mut self, msg: ActorMsg) -> Option<oneshot::Sender<()>> {
        match msg {
            ActorMsg::Inbound(c) => {
                let (node, bus) = (Arc::clone(&self.node), self.bus.clone());
                self.tasks.spawn(async move {
                    conn::run(node, bus, c, Side::Inbound).await;
                });
            }
            ActorMsg::PeerUp { peer, key, keep } => {
                let _ = keep.send(self.on_peer_up(peer, key));
            }
            ActorMsg::PeerDown { node_id, conn_id } => {
                if self
                    .peers
                    .get(&node_id)
                    .is_some_and(|p| p.handle.conn_id == conn_id)
                {
                    self.peers.remove(&node_id);
                    self.publish();
                }
            }
            ActorMsg::Interest {
                node_id,
                conn_id,
                msg,
            } => self.on_interest(node_id, conn_id, &msg),
            ActorMsg::InterestRequest { node_id, conn_id } => {
                if let Some(p) = self.peers.get(&node_id) {
                    if p.handle.conn_id == conn_id {
                        send_interest(&p.handle, &self.local.snapshot());
                    }
                }
            }
            ActorMsg::Shutdown(done) => return Some(done),
        }
        None
    }

    fn on_peer_up(&mut self, peer: Arc<PeerHandle>, key: ConnectionKey) -> bool {
        let local_id = self.node.identity().node_id;
        if let Some(existing) = self.peers.get(&peer.node_id) {
            match arbitrate(local_id, peer.identity.node_id, existing.key, key) {
                Arbitration::KeepExisting | Arbitration::RejectNew { .. } => return false,
                Arbitration::ReplaceWithNew => existing.handle.stop.cancel(),
            }
        }
        send_interest(&peer, &self.local.snapshot());
        self.peers.insert(
            peer.node_id,
            PeerEntry {
                handle: peer,
                key,
                interest: RemoteInterest::new(),
            },
        );
        self.publish();
        true
    }

    fn on_interest(&mut self, node_id: NodeId, conn_id: u64, msg: &Interest) {
        let Some(p) = self.peers.get_mut(&node_id) else {
            return;
        };
        if p.handle.conn_id != conn_id {
            return;
        }
        match p.interest.apply(msg) {
            Applied::Changed => self.publish(),
            Applied::Unchanged | Applied::Stale => {}
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

    /// Our subscriptions changed: tell every peer the difference.
    fn on_local_interest(&mut self) {
        let Some(bus) = self.bus.upgrade() else {
            return;
        };
        let now: BTreeSet<String> = bus.events.load().keys().map(|k| (*k).to_owned()).collect();
        let mut deltas = Vec::new();
        for added in now.difference(&self.local_events) {
            deltas.extend(self.local.subscribe(added));
        }
        for removed in self.local_events.difference(&now) {
            deltas.extend(self.local.unsubscribe(removed));
        }
        self.local_events = now;
        for delta in &deltas {
            for p in self.peers.values() {
                send_interest(&p.handle, delta);
            }
        }
    }

    /// Rebuilds the routing snapshot and the membership view.
    fn publish(&self) {
        let mut routes = Routes::default();
        let mut peers = Vec::new();
        for p in self.peers.values() {
            for c in p.interest.commands() {
                routes
                    .commands
                    .entry(c.to_owned())
                    .or_default()
                    .push(Arc::clone(&p.handle));
            }
            for e in p.interest.events() {
                routes
                    .events
                    .entry(e.to_owned())
                    .or_default()
                    .push(Arc::clone(&p.handle));
            }
            let id = &p.handle.identity;
            peers.push(PeerInfo {
                node_id: p.handle.node_id,
                name: id.name.clone(),
                cluster: id.cluster.clone(),
                host_id: id.host_id.clone(),
                commands: p.interest.commands().map(str::to_owned).collect(),
                events: p.interest.events().map(str::to_owned).collect(),
            });
        }
        peers.sort_by_key(|p| p.node_id);
        self.node.routes.store(Arc::new(routes));
        if let Some(bus) = self.bus.upgrade() {
            bus.membership
                .send_replace(view::shared(MembershipView { peers }));
        }
    }

    /// Goodbye to every peer; each writer sends what is queued, then closes.
    async fn shutdown(&mut self) {
        self.node.stopping.cancel();
        let goodbye = Goodbye {
            reason: GoodbyeReason::Shutdown,
        };
        for p in self.peers.values() {
            if let Ok(frame) = goodbye.to_frame() {
                if let Ok(bytes) = encode(&p.handle.send_codec, &frame) {
                    let _ = p.handle.lanes.control.try_send(bytes);
                }
            }
            p.handle.stop.cancel();
        }
        self.peers.clear();
        self.publish();
        // The connections end once their writers have flushed; bounded, since a stuck link must
        // not hold shutdown.
        let drain = async {
            while let Some(r) = self.tasks.join_next().await {
                let _ = r;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
        self.tasks.abort_all();
    }
}

fn send_interest(peer: &PeerHandle, msg: &Interest) {
    let sent = msg
        .to_frame()
        .ok()
        .and_then(|f| encode(&peer.send_codec, &f).ok())
        .map(|bytes| peer.lanes.control.try_send(bytes).is_ok());
    if sent != Some(true) {
        tracing::warn!(peer = %peer.node_id, "interest not sent: the control lane is full");
    }
}

/// Accepts connections and hands them to the actor.
async fn accept_loop(mut listener: Box<dyn Listener>, inbox: mpsc::Sender<ActorMsg>) {
    let mut backoff = Duration::from_millis(10);
    loop {
        match listener.accept().await {
            Ok(c) => {
                backoff = Duration::from_millis(10);
                if inbox.send(ActorMsg::Inbound(c)).await.is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == crate::ErrorKind::Closed => return,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Dials a seed, runs the connection, and dials again when it ends (with backoff).
async fn dial_loop(node: Arc<NodeShared>, bus: Weak<BusInner>, addr: Addr) {
    let base = node.config.redial_backoff;
    let mut backoff = base;
    let stopping = node.stopping.clone();
    loop {
        if stopping.is_cancelled() || bus.upgrade().is_none_or(|b| b.is_closed()) {
            return;
        }
        let dialled = tokio::select! {
            d = node.config.transports.dial(&addr) => d,
            () = stopping.cancelled() => return,
        };
        match dialled {
            Ok(c) => {
                backoff = base;
                let reached = conn::run(Arc::clone(&node), bus.clone(), c, Side::Outbound).await;
                // Connected to that node by another link (it dialled us too): dial again only
                // once that link is gone.
                if let (Some(peer), Some(b)) = (reached, bus.upgrade()) {
                    let mut rx = b.membership.subscribe();
                    drop(b);
                    tokio::select! {
                        _ = rx.wait_for(|v| v.peer(peer).is_none()) => {}
                        () = stopping.cancelled() => return,
                    }
                }
            }
            Err(e) => {
                tracing::debug!(%addr, error = %e, "dial failed");
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stopping.cancelled() => return,
        }
    }
}
