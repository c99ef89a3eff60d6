//! The node's actor: the one task that owns the node's mutable state.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;

use super::conn::{self, now_std, sleep_until_some, Ended, Reached, Side};
use super::credit::EventFlow;
use super::dispatch::Dispatch;
use super::routes::{CommandRoute, EventRoute, Routes};
use super::view::{self, MembershipView, PeerGroup, PeerInfo};
use super::warn::WarnLimit;
use super::{encode, NodeShared, PeerHandle};
use crate::discovery::{Discovery, DiscoveryEvent};
use crate::id::NodeId;
use crate::proto::admission::HandshakeLimiter;
use crate::proto::handshake::{arbitrate, Arbitration, ConnectionKey, LocalNode};
use crate::proto::interest::{LocalInterest, RemoteInterest};
use crate::proto::links::Links;
use crate::proto::membership::{DialRequest, Membership, MembershipConfig, Output};
use crate::stats::Counters;
use crate::transport::{Addr, Connection, Listener};
use crate::wire::control::{
    ControlMessage, Goodbye, GoodbyeReason, GossipMessage, GroupInterest, Interest,
};

mod admission;
mod groups;
mod interest;
mod reach;
mod tasks;

pub(crate) use admission::Admission;
use interest::send_interest;

use tasks::{accept_loop, dial_task, discovery_loop, Alone, ALONE_WARNING_AFTER};

/// What the node's tasks and the bus tell the actor.
#[derive(Debug)]
pub(crate) enum ActorMsg {
    /// A listener accepted a connection.
    Inbound(Connection),
    /// A connection completed its handshake; answer whether to keep it.
    PeerUp {
        peer: Arc<PeerHandle>,
        key: ConnectionKey,
        /// The dial that made it, if this node dialled.
        dial: Option<DialRequest>,
        keep: oneshot::Sender<bool>,
    },
    /// A connection ended.
    PeerDown {
        node_id: NodeId,
        conn_id: u64,
        ended: Ended,
    },
    /// A dial found nobody, or no handshake completed.
    DialFailed(DialRequest),
    /// A dial's handshake was refused as a duplicate: the node it reached keeps another
    /// connection to us.
    DialLinked(DialRequest),
    /// A peer's gossip.
    Gossip {
        node_id: NodeId,
        conn_id: u64,
        msg: GossipMessage,
    },
    /// A peer's interest snapshot or delta.
    Interest {
        node_id: NodeId,
        conn_id: u64,
        msg: Interest,
    },
    /// A peer asks for our interest snapshot.
    InterestRequest { node_id: NodeId, conn_id: u64 },
    /// A discovery mechanism found or lost a node.
    Discovered(DiscoveryEvent),
    /// The application gave further seed addresses (checked); answered once they are taken.
    AddPeers(Vec<String>, oneshot::Sender<()>),
    /// Dial this address once now and say whom the handshake reached (`Bus::connect`).
    Connect(Addr, oneshot::Sender<Result<NodeId, crate::Error>>),
    /// This node refused an inbound handshake at `remote`: it is logged (rate limited) and
    /// its host's handshakes are slowed down.
    Refused { remote: Addr, why: &'static str },
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
    dispatch: Weak<dyn Dispatch>,
    peers: HashMap<NodeId, PeerEntry>,
    /// What membership is told of `peers`, and the interest owed to them.
    links: Links,
    local: LocalInterest,
    /// The event names and group channels we take peers' events on, with the room each
    /// grants peers.
    local_events: BTreeMap<String, EventFlow>,
    /// Our groups, by channel, as the interest last told peers.
    local_groups: BTreeMap<String, GroupInterest>,
    membership: Membership,
    /// Live members that share no transport with us, as last published.
    foreign: Vec<NodeId>,
    /// Since when the node has had no peer while it has somewhere to look for one, and
    /// whether that was logged as a warning.
    alone: std::cell::Cell<Alone>,
    /// The membership's foreign generation `foreign` was read at.
    foreign_generation: u64,
    tasks: JoinSet<()>,
    /// One permit per inbound handshake under way.
    handshakes: Arc<Semaphore>,
    /// Handshakes per remote host.
    limiter: HandshakeLimiter,
    /// One permit per inbound handshake under way, for each remote host that has one (or had
    /// one lately: entries with none in use are dropped when the table is full).
    host_handshakes: HashMap<String, Arc<Semaphore>>,
    /// Refused handshakes are logged at most so often.
    refusals: WarnLimit,
}

/// The membership configuration the node runs with; `start()` validates it first.
pub(crate) fn membership_config(config: &super::NodeConfig, node_id: u128) -> MembershipConfig {
    MembershipConfig {
        // Seeded from the node id, itself from the builder's seed.
        rng_seed: (node_id as u64) ^ 0x006d_6573_6862_7573,
        schemes: config.transports.schemes().map(str::to_owned).collect(),
        ..config.membership.clone()
    }
}

/// Runs the node: listens, dials the seeds, and keeps the peers' table until shutdown.
pub(crate) async fn run(
    node: Arc<NodeShared>,
    dispatch: Weak<dyn Dispatch>,
    mut inbox: mpsc::Receiver<ActorMsg>,
    listeners: Vec<Box<dyn Listener>>,
    seeds: Vec<Addr>,
    discovery: Vec<Box<dyn Discovery>>,
) {
    let identity = node.identity();
    let config = membership_config(&node.config, identity.node_id);
    let seeds = seeds.iter().map(|a| a.as_str().to_owned());
    let membership = match Membership::new(identity, seeds, config, now_std()) {
        Ok(m) => m,
        Err(e) => {
            // `start()` validated the same configuration, so this is not expected.
            tracing::error!(error = %e, "membership could not start; the node stays local");
            return;
        }
    };
    let mut actor = Actor {
        node: Arc::clone(&node),
        dispatch,
        peers: HashMap::new(),
        links: Links::new(),
        local: LocalInterest::new(),
        local_events: BTreeMap::new(),
        local_groups: BTreeMap::new(),
        membership,
        foreign: Vec::new(),
        alone: std::cell::Cell::new(Alone::default()),
        foreign_generation: 0,
        tasks: JoinSet::new(),
        handshakes: Arc::new(Semaphore::new(
            node.config
                .max_concurrent_handshakes
                .min(Semaphore::MAX_PERMITS),
        )),
        limiter: HandshakeLimiter::new(node.config.handshake_rate),
        host_handshakes: HashMap::new(),
        refusals: WarnLimit::new(),
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
    for mut source in discovery {
        let (stopping, inbox) = (node.stopping.clone(), node.inbox.clone());
        actor.tasks.spawn(async move {
            tokio::select! {
                () = discovery_loop(&mut *source, inbox) => {}
                () = stopping.cancelled() => {}
            }
            // A source that has ended may still advertise us: it is withdrawn at shutdown.
            stopping.cancelled().await;
            source.shutdown().await;
        });
    }
    loop {
        let timer = actor
            .membership
            .poll_timeout()
            .map(tokio::time::Instant::from_std);
        tokio::select! {
            () = sleep_until_some(timer) => {
                // Owed interest before this tick's gossip takes the room on the control lanes:
                // a skipped gossip round repairs itself, a lost interest change does not.
                actor.pay_interest();
                let out = actor.membership.handle_timeout(now_std());
                actor.apply(out);
                actor.check_foreign();
                actor.check_alone();
            }
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
    fn on_msg(&mut self, msg: ActorMsg) -> Option<oneshot::Sender<()>> {
        match msg {
            ActorMsg::Inbound(c) => self.on_inbound(c),
            ActorMsg::PeerUp {
                peer,
                key,
                dial,
                keep,
            } => {
                let now = now_std();
                let mut out = self.membership.on_connected(&peer.identity, now);
                if let Some(dial) = &dial {
                    self.membership.on_dial_succeeded(dial, peer.node_id, now);
                }
                let _ = keep.send(self.on_peer_up(peer, key));
                self.apply(std::mem::take(&mut out));
                // A node we cannot dial may have dialled us: no longer unreachable.
                self.check_foreign();
            }
            ActorMsg::PeerDown {
                node_id,
                conn_id,
                ended,
            } => {
                if self
                    .peers
                    .get(&node_id)
                    .is_some_and(|p| p.handle.conn_id == conn_id)
                {
                    let entry = self.peers.remove(&node_id)?;
                    self.count_lost_in_flight(&entry);
                    // The two tables change together (`on_peer_up` inserts into both): a link
                    // missing here would be a bug, and the peer still goes from the routes.
                    let incarnation = match self.links.remove(node_id) {
                        Some(incarnation) => incarnation,
                        None => {
                            debug_assert!(false, "a peer without a link: {node_id}");
                            tracing::error!(%node_id, "a peer without a link");
                            entry.handle.identity.incarnation
                        }
                    };
                    self.publish();
                    let now = now_std();
                    let out = match ended {
                        Ended::Goodbye => self.membership.on_goodbye(node_id, incarnation, now),
                        Ended::Dead => self.membership.on_peer_dead(node_id, incarnation, now),
                        Ended::Broken(_) | Ended::ByUs => {
                            self.membership.on_disconnected(node_id, incarnation, now);
                            Vec::new()
                        }
                    };
                    self.apply(out);
                    self.check_foreign();
                }
            }
            ActorMsg::DialFailed(dial) => {
                self.node.counters.metrics.dials_failed.increment(1);
                self.membership.on_dial_failed(&dial, now_std());
                self.report_membership();
            }
            ActorMsg::DialLinked(dial) => {
                // Settled like a dial of a node we are linked to. If the link is not here
                // (yet: the peer's own connection may still be on its way to us, or no
                // longer), the dial is retried after its backoff; the address answered, so
                // it is no failure of the address, nor a sign the node is unreachable.
                let now = now_std();
                match self.links.settle_linked(&dial, &mut self.membership, now) {
                    Some(out) => self.apply(out),
                    None => self.membership.on_dial_not_made(&dial, now),
                }
                self.report_membership();
            }
            ActorMsg::Discovered(DiscoveryEvent::Found(identity)) => {
                let now = now_std();
                let mut out = self.membership.on_discovered(&identity, now);
                out.extend(self.links.relink_refuted(&mut self.membership, now));
                self.apply(out);
                self.check_foreign();
            }
            ActorMsg::AddPeers(addrs, done) => {
                self.membership.add_seeds(addrs, now_std());
                self.publish();
                let _ = done.send(());
            }
            ActorMsg::Discovered(DiscoveryEvent::Lost(node_id)) => {
                // Only a hint: the link decides whether the node is alive.
                tracing::debug!(node = %node_id, "no longer advertised");
            }
            ActorMsg::Gossip {
                node_id,
                conn_id,
                msg,
            } => {
                let send_limit = self
                    .peers
                    .get(&node_id)
                    .filter(|p| p.handle.conn_id == conn_id)
                    .map(|p| p.handle.send_codec.max_frame_size);
                if let Some(send_limit) = send_limit {
                    let now = now_std();
                    let mut out = self.membership.handle_gossip(node_id, msg, send_limit, now);
                    out.extend(self.links.relink_refuted(&mut self.membership, now));
                    self.apply(out);
                    self.check_foreign();
                }
            }
            ActorMsg::Interest {
                node_id,
                conn_id,
                msg,
            } => self.on_interest(node_id, conn_id, &msg),
            ActorMsg::InterestRequest { node_id, conn_id } => {
                self.on_interest_request(node_id, conn_id);
            }
            ActorMsg::Connect(addr, reply) => {
                let (node, dispatch) = (Arc::clone(&self.node), self.dispatch.clone());
                self.node.counters.metrics.dials.increment(1);
                self.tasks
                    .spawn(tasks::connect_task(node, dispatch, addr, reply));
            }
            ActorMsg::Refused { remote, why } => self.on_refused(&remote, why),
            ActorMsg::Shutdown(done) => return Some(done),
        }
        None
    }

    /// Admits an accepted connection to its handshake, or closes it at once (dropping it
    /// closes it): beyond the cap on concurrent inbound handshakes, or beyond its host's rate.
    fn on_inbound(&mut self, c: Connection) {
        let node = Arc::clone(&self.node);
        let turned_away = &node.counters.connections_turned_away;
        let Ok(permit) = Arc::clone(&self.handshakes).try_acquire_owned() else {
            tracing::debug!(remote = %c.remote, "too many handshakes under way: connection closed");
            Counters::bump(turned_away);
            return;
        };
        let host = c.remote.host().unwrap_or(c.remote.as_str()).to_owned();
        let Some(host_permit) = self.host_handshake(&host) else {
            tracing::debug!(remote = %c.remote, "too many handshakes under way from the host: connection closed");
            Counters::bump(turned_away);
            return;
        };
        if !self.limiter.admit(&host, now_std()) {
            tracing::debug!(remote = %c.remote, "handshake rate of the host exceeded: connection closed");
            Counters::bump(turned_away);
            return;
        }
        let admission = Admission {
            _node: permit,
            _host: host_permit,
        };
        let (node, dispatch) = (Arc::clone(&self.node), self.dispatch.clone());
        self.tasks.spawn(async move {
            conn::run(
                node,
                dispatch,
                c,
                Side::Inbound,
                None,
                Some(admission),
                None,
            )
            .await;
        });
    }

    /// An inbound handshake this node refused: its host pays for it in handshake rate, and
    /// the log says so (at most [`WarnLimit`]'s share).
    fn on_refused(&mut self, remote: &Addr, why: &'static str) {
        let now = now_std();
        Counters::bump(&self.node.counters.handshakes_refused);
        let host = remote.host().unwrap_or(remote.as_str());
        self.limiter.penalize(host, now);
        if let Some(suppressed) = self.refusals.allow(now) {
            tracing::warn!(%remote, reason = why, suppressed, "refused a handshake");
        }
    }

    /// Does what membership asks.
    fn apply(&mut self, out: Vec<Output>) {
        for o in out {
            match o {
                Output::SendTo(node_id, msg) => {
                    let Some(p) = self.peers.get(&node_id) else {
                        continue;
                    };
                    let bytes = msg
                        .to_frame()
                        .ok()
                        .and_then(|f| encode(&p.handle.send_codec, &f).ok());
                    if let Some(bytes) = bytes {
                        // A full control lane skips a round: gossip repairs itself.
                        let _ = p.handle.lanes.control.try_send(bytes);
                    }
                }
                Output::Dial(dial) => {
                    if let Some(out) =
                        self.links
                            .settle_linked(&dial, &mut self.membership, now_std())
                    {
                        self.apply(out);
                        continue;
                    }
                    let (node, dispatch) = (Arc::clone(&self.node), self.dispatch.clone());
                    self.node.counters.metrics.dials.increment(1);
                    self.tasks.spawn(dial_task(node, dispatch, dial));
                }
                Output::Joined(node_id) => tracing::debug!(node = %node_id, "member joined"),
                Output::Left(node_id) => tracing::debug!(node = %node_id, "member left"),
                Output::Refuted { incarnation } => {
                    tracing::info!(incarnation, "refuted a rumour of our death");
                    let mut identity = self.node.identity();
                    identity.incarnation = incarnation;
                    let local = LocalNode::new(identity)
                        .with_versions(self.node.local.load().versions())
                        .with_max_frame_size(self.node.local.load().max_frame_size())
                        .with_handshake_timeout(self.node.local.load().handshake_timeout());
                    self.node.local.store(Arc::new(local));
                }
            }
        }
    }

    fn on_peer_up(&mut self, peer: Arc<PeerHandle>, key: ConnectionKey) -> bool {
        let local_id = self.node.identity().node_id;
        let mut interest = RemoteInterest::new();
        if let Some(existing) = self.peers.get(&peer.node_id) {
            match arbitrate(local_id, peer.identity.node_id, existing.key, key) {
                Arbitration::KeepExisting | Arbitration::RejectNew { .. } => return false,
                Arbitration::ReplaceWithNew => {
                    // The old connection drains: what is under way on it finishes there, and
                    // nothing new is routed to it from now on.
                    existing.handle.set_unavailable();
                    existing.handle.retire.cancel();
                    // The same run of the node handles what it handled a moment ago: routes
                    // keep it until its snapshot on the new connection replaces this, rather
                    // than showing a node that handles nothing (and failing its commands with
                    // `NoHandler`) in between.
                    if existing.key.peer_incarnation == key.peer_incarnation {
                        interest = existing.interest.clone();
                    }
                }
            }
        }
        let sent = send_interest(&peer, &self.local.snapshot());
        peer.credit.offer(&self.flows());
        self.links.insert(peer.identity.clone(), !sent);
        self.peers.insert(
            peer.node_id,
            PeerEntry {
                handle: peer,
                key,
                interest,
            },
        );
        Counters::bump(&self.node.counters.links_established);
        self.publish();
        true
    }

    /// Copies the membership gauges into the bus's counters.
    fn report_membership(&self) {
        let c = &self.node.counters;
        let members = u64::try_from(self.membership.live_members()).unwrap_or(u64::MAX);
        let dials = u64::try_from(self.membership.dials_in_flight()).unwrap_or(u64::MAX);
        c.members.store(members, Ordering::Relaxed);
        c.dials_in_flight.store(dials, Ordering::Relaxed);
        c.dials_in_flight_peak.fetch_max(dials, Ordering::Relaxed);
        c.metrics.members_alive.set(members as f64);
        c.metrics.dials_in_flight.set(dials as f64);
    }

    /// Rebuilds the routing snapshot and the membership view.
    fn publish(&self) {
        let mut routes = Routes::default();
        let previous = self.node.routes.load();
        let mut peers = Vec::new();
        let metrics = &self.node.counters.metrics;
        metrics.peers_connected.set(self.peers.len() as f64);
        for p in self.peers.values() {
            routes.peers.push(Arc::clone(&p.handle));
            for c in p.interest.commands() {
                routes
                    .commands
                    .entry(c.to_owned())
                    .or_insert_with(|| {
                        let before = previous.commands.get(c);
                        CommandRoute {
                            peers: Vec::new(),
                            picker: before.map(|r| Arc::clone(&r.picker)).unwrap_or_default(),
                            metrics: before.map(|r| Arc::clone(&r.metrics)).unwrap_or_default(),
                        }
                    })
                    .peers
                    .push(Arc::clone(&p.handle));
            }
            for e in p.interest.events() {
                // A name the peer may not make us hold more of has no room, and no route.
                if let Some(credit) = p.handle.credit.sending(e) {
                    routes
                        .events
                        .entry(e.to_owned())
                        .or_default()
                        .push(EventRoute {
                            peer: Arc::clone(&p.handle),
                            credit,
                        });
                }
            }
            self.group_routes(p, &previous, &mut routes);
            let id = &p.handle.identity;
            peers.push(PeerInfo {
                node_id: p.handle.node_id,
                name: id.name.clone(),
                cluster: id.cluster.clone(),
                host_id: id.host_id.clone(),
                public_key: id.public_key,
                commands: p.interest.commands().map(str::to_owned).collect(),
                events: p.interest.events().map(str::to_owned).collect(),
                groups: p
                    .interest
                    .groups()
                    .map(|g| PeerGroup {
                        event: g.event.clone(),
                        group: g.group.clone(),
                        kind: g.kind,
                    })
                    .collect(),
            });
        }
        peers.sort_by_key(|p| p.node_id);
        groups::settle(&mut routes);
        self.node.routes.store(Arc::new(routes));
        let alone = peers.is_empty() && self.membership.has_somewhere_to_look();
        let was = self.alone.get();
        // A node without peers gets `ALONE_WARNING_AFTER` to find one before it warns
        // (`check_alone`): peers that leave or restart one by one are no news.
        let now = if alone {
            Alone {
                since: was.since.or(Some(now_std())),
                warned: was.warned,
            }
        } else {
            if was.warned && !self.node.stopping.is_cancelled() {
                tracing::info!(peers = peers.len(), "connected to the mesh again");
            }
            Alone::default()
        };
        self.alone.set(now);
        let unreachable = self.foreign.clone();
        self.node
            .membership
            .send_replace(view::shared(MembershipView {
                peers,
                unreachable,
                alone,
            }));
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
            p.handle.set_unavailable();
            p.handle.stop.cancel();
        }
        self.peers.clear();
        self.links.clear();
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
