//! The node runtime: the tasks that put a [`Bus`](crate::Bus) on the network.
//!
//! One actor task owns the node's mutable state (its peers, their interest, our own interest)
//! and is told about everything by messages on a bounded inbox. Each connection has one task
//! that runs the handshake and then reads, and one writer task it owns; both end with the
//! connection. Senders on the hot path never talk to the actor: they read the routing snapshot
//! ([`Routes`]) and queue frames on a peer's lanes; a command, reply, ping or pong that finds
//! the connection's writer idle and nothing queued before it is written from the sender's own
//! call instead (write-through, when the transport offers it), saving the writer a wake-up.

mod actor;
mod conn;
pub(crate) mod credit;
pub(crate) mod dispatch;
mod peer;
mod routes;
mod view;
mod warn;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify};

pub(crate) use actor::{membership_config, run as run_actor, ActorMsg};
#[cfg(test)]
pub(crate) use peer::handle_for_tests;
pub(crate) use peer::{Answer, PeerHandle, ReplyOutcome};
pub(crate) use routes::{EventRoute, GroupRoute, MemberRoute, Routes};
pub use view::{MembershipView, PeerGroup, PeerInfo};

use crate::proto::handshake::LocalNode;
use crate::proto::liveness::LivenessConfig;
use crate::proto::noise::NoiseConfig;
use crate::transport::{Addr, Transports};
use crate::wire::control::PeerIdentity;
use crate::wire::{Frame, FrameCodec, FrameError};

/// The network settings of a bus, from its builder.
#[derive(Debug, Clone)]
pub(crate) struct NodeConfig {
    pub(crate) transports: Transports,
    pub(crate) listen: Vec<String>,
    pub(crate) peers: Vec<String>,
    pub(crate) liveness: LivenessConfig,
    pub(crate) max_in_flight_per_peer: usize,
    pub(crate) lane_capacity: usize,
    pub(crate) lane_bytes: usize,
    /// Gossip, dialling and tombstone settings; the runtime fills in the seed of its random
    /// source and the schemes it has transports for.
    pub(crate) membership: crate::proto::membership::MembershipConfig,
    pub(crate) handshake_timeout: Duration,
    /// The largest decompressed size a compressed command, reply or event body may declare.
    pub(crate) max_decompressed_size: usize,
    /// The bytes of large command bodies (over [`LARGE_BODY`]) one peer may have in running
    /// handlers.
    pub(crate) max_inbound_bytes_per_peer: usize,
    /// Inbound handshakes under way at once, node-wide; a connection beyond is closed at once.
    pub(crate) max_concurrent_handshakes: usize,
    /// Inbound handshakes under way at once from one remote host.
    pub(crate) max_concurrent_handshakes_per_host: usize,
    /// Handshakes one remote host may start; `None`: no limit.
    pub(crate) handshake_rate: Option<crate::proto::admission::RateLimit>,
}

/// Bodies larger than this (once decompressed) are decompressed and decoded off the
/// connection's reader, and count against the peer's inbound byte budget; smaller ones stay on
/// the reader's fast path.
pub(crate) const LARGE_BODY: usize = 64 * 1024;

impl NodeConfig {
    /// The default number of frames each lane of a peer holds.
    pub(crate) const DEFAULT_LANE_CAPACITY: usize = 1024;
    /// The default byte budget of a peer's queued commands and events: 64 MiB.
    pub(crate) const DEFAULT_LANE_BYTES: usize = 64 * 1024 * 1024;
    /// The default cap on handlers run at once for one peer.
    pub(crate) const DEFAULT_MAX_IN_FLIGHT_PER_PEER: usize = 1024;
    /// The default budget of large inbound command bodies per peer: 32 MiB, twice the default
    /// frame limit.
    pub(crate) const DEFAULT_MAX_INBOUND_BYTES_PER_PEER: usize = 32 * 1024 * 1024;
    /// The default cap on inbound handshakes under way at once from one remote host: a
    /// quarter of the node-wide cap, so one host's silent connections leave the rest to others.
    pub(crate) const DEFAULT_MAX_CONCURRENT_HANDSHAKES_PER_HOST: usize = 16;
    /// The default cap on inbound handshakes under way at once.
    pub(crate) const DEFAULT_MAX_CONCURRENT_HANDSHAKES: usize = 64;

    pub(crate) fn new() -> Self {
        NodeConfig {
            transports: Transports::new(),
            listen: Vec::new(),
            peers: Vec::new(),
            liveness: LivenessConfig::default(),
            max_in_flight_per_peer: Self::DEFAULT_MAX_IN_FLIGHT_PER_PEER,
            lane_capacity: Self::DEFAULT_LANE_CAPACITY,
            lane_bytes: Self::DEFAULT_LANE_BYTES,
            membership: crate::proto::membership::MembershipConfig::default(),
            handshake_timeout: crate::proto::handshake::DEFAULT_HANDSHAKE_TIMEOUT,
            max_decompressed_size: crate::wire::DEFAULT_MAX_DECOMPRESSED_SIZE,
            max_inbound_bytes_per_peer: Self::DEFAULT_MAX_INBOUND_BYTES_PER_PEER,
            max_concurrent_handshakes: Self::DEFAULT_MAX_CONCURRENT_HANDSHAKES,
            max_concurrent_handshakes_per_host: Self::DEFAULT_MAX_CONCURRENT_HANDSHAKES_PER_HOST,
            handshake_rate: Some(crate::proto::admission::RateLimit::DEFAULT),
        }
    }
}

/// What the bus's handles share with the node's tasks.
pub(crate) struct NodeShared {
    /// Who we are in handshakes; replaced when membership refutes a rumour of our death with a
    /// higher incarnation.
    pub(in crate::node) local: ArcSwap<LocalNode>,
    /// Our static key and network keyring for the secure handshake; the keyring is replaced
    /// by `Bus::set_network_keys`.
    pub(in crate::node) trust: ArcSwap<NoiseConfig>,
    /// No network key and not `insecure`: addresses beyond this machine are not dialled.
    pub(crate) local_only: bool,
    pub(in crate::node) config: NodeConfig,
    /// The routing snapshot: replaced by the actor, read without a lock by senders.
    pub(in crate::node) routes: ArcSwap<Routes>,
    next_request_id: AtomicU64,
    pub(in crate::node) inbox: mpsc::Sender<ActorMsg>,
    /// Our handlers or subscriptions changed: the actor tells the peers.
    pub(in crate::node) interest_changed: Notify,
    next_conn_id: AtomicU64,
    /// Cancelled at shutdown: listeners and seed dialling stop.
    pub(in crate::node) stopping: tokio_util::sync::CancellationToken,
    /// The counters the node keeps up to date (membership gauges), shared with the bus.
    pub(in crate::node) counters: Arc<crate::stats::Counters>,
    /// Where the actor publishes the peers and their interest, for the bus's watchers.
    pub(in crate::node) membership: Arc<tokio::sync::watch::Sender<Arc<MembershipView>>>,
    /// Each peer's events not yet consumed here, per name, across its connections.
    pub(in crate::node) inflows: Arc<credit::Inflows>,
}

impl std::fmt::Debug for NodeShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeShared")
            .field("node_id", &self.local.load().identity().node_id)
            .finish_non_exhaustive()
    }
}

/// The capacity of the actor's inbox.
const INBOX_CAPACITY: usize = 256;

impl NodeShared {
    pub(crate) fn new(
        identity: PeerIdentity,
        trust: NoiseConfig,
        local_only: bool,
        config: NodeConfig,
        counters: Arc<crate::stats::Counters>,
        membership: Arc<tokio::sync::watch::Sender<Arc<MembershipView>>>,
    ) -> (Arc<NodeShared>, mpsc::Receiver<ActorMsg>) {
        let (inbox, rx) = mpsc::channel(INBOX_CAPACITY);
        let shared = NodeShared {
            local: ArcSwap::from_pointee(
                LocalNode::new(identity).with_handshake_timeout(config.handshake_timeout),
            ),
            trust: ArcSwap::from_pointee(trust),
            local_only,
            config,
            routes: ArcSwap::from_pointee(Routes::default()),
            next_request_id: AtomicU64::new(1),
            inbox,
            interest_changed: Notify::new(),
            next_conn_id: AtomicU64::new(1),
            stopping: tokio_util::sync::CancellationToken::new(),
            counters,
            membership,
            inflows: Arc::default(),
        };
        (Arc::new(shared), rx)
    }

    /// The routing snapshot: who handles and subscribes to what, read without a lock.
    pub(crate) fn routes(&self) -> arc_swap::Guard<Arc<Routes>> {
        self.routes.load()
    }

    /// Where this node is, for routing by scope: its host id and cluster.
    pub(crate) fn here_ids(&self) -> (String, String) {
        let local = self.local.load();
        let identity = local.identity();
        (identity.host_id.clone(), identity.cluster.clone())
    }

    /// Our handlers or subscriptions changed: the actor tells the peers.
    pub(crate) fn local_interest_changed(&self) {
        self.interest_changed.notify_one();
    }

    /// Replaces the network keyring for the handshakes to come; links up now keep theirs.
    pub(crate) fn set_network_keys(&self, keys: Vec<crate::trust::NetworkKey>) {
        let next = (**self.trust.load()).clone().with_keys(keys);
        self.trust.store(Arc::new(next));
    }

    /// Dials `addr` once now: whom the handshake reached, or why it failed.
    pub(crate) async fn connect(&self, addr: Addr) -> Result<crate::NodeId, crate::Error> {
        let (tx, rx) = oneshot::channel();
        let closed = || crate::Error::closed().with_detail("the bus is shutting down");
        self.inbox
            .send(ActorMsg::Connect(addr, tx))
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// Dials `addrs` now and keeps them as seeds (see `Bus::add_peers`).
    pub(crate) async fn add_peers(&self, addrs: Vec<String>) -> Result<(), crate::Error> {
        let (tx, rx) = oneshot::channel();
        let closed = || crate::Error::closed().with_detail("the bus is shutting down");
        self.inbox
            .send(ActorMsg::AddPeers(addrs, tx))
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())
    }

    /// Checks the identity this node presents against the limits peers hold it to.
    pub(crate) fn validate_identity(&self) -> Result<(), crate::Error> {
        Ok(self.local.load().validate()?)
    }

    /// The handshake identity this node presents, as discovery advertises it.
    pub(crate) fn identity(&self) -> PeerIdentity {
        self.local.load().identity().clone()
    }

    /// A request id unique on this node (never 0).
    pub(crate) fn next_request_id(&self) -> u64 {
        self.next_request_id.fetch_add(1, Ordering::Relaxed).max(1)
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Says goodbye to every peer and stops the node's tasks, waiting at most `bound`.
    pub(crate) async fn shutdown(&self, bound: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.inbox.send(ActorMsg::Shutdown(tx)).await.is_ok() {
            let _ = tokio::time::timeout(bound, rx).await;
        }
    }
}

/// Parses the configured addresses.
pub(crate) fn parse_addrs(list: &[String]) -> Result<Vec<Addr>, crate::Error> {
    list.iter().map(|a| Addr::parse(a)).collect()
}

/// One encoded frame, ready for a lane.
pub(crate) fn encode(codec: &FrameCodec, frame: &Frame) -> Result<Bytes, FrameError> {
    codec.encode_to_bytes(frame)
}

/// The start of this run in microseconds since the UNIX epoch: a later run of a node compares
/// larger, as arbitration and membership expect of incarnations.
pub(crate) fn incarnation_now() -> u64 {
    unix_micros_now().max(1)
}

/// The wall clock in microseconds since the UNIX epoch (0 for a clock set before it): what a
/// handshake checks peers' incarnations against.
pub(crate) fn unix_micros_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
