//! The [`Bus`]: one node of the mesh, and its local dispatch.

mod admit;
mod builder;
mod commands;
mod events;
mod groups;
mod inbound;
mod lifecycle;
mod outbound;
mod peer_events;
mod registry;

use lifecycle::Owner;
pub(crate) use lifecycle::{InFlight, InFlightOwned};
use registry::{name_clash, table_with};
pub(crate) use registry::{CommandSlot, EventSlot, EventTable, SubList};
pub(crate) mod options;
mod peer_addrs;
mod ready;
pub(crate) mod remote;
mod send_all;

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use builder::BusBuilder;
pub use commands::{Commands, ResponseFuture, SendCommand};
pub use events::{Events, Publish, PublishAll, PublishFuture, PublishParts};
pub use options::RequestOptions;
pub use peer_addrs::{IntoPeerAddrs, PeerAddr};
pub use ready::{
    HandlersReady, MembersReady, NamedHandlersReady, PeersReady, Ready, SubscribersReady,
    TimedReady,
};
pub use send_all::{SendAll, SendAllStream};

use crate::error::Error;
use crate::id::NodeId;
use crate::message::Event;
use crate::node::{MembershipView, NodeShared};
use crate::stats::{BusStats, Counters, GroupStats, PeerStats, SubscriptionStats};
use crate::subscription::{Subscription, SubscriptionOptions};
use crate::transport::Addr;

/// A node of the mesh: the handle through which a service sends commands, publishes events and
/// subscribes.
///
/// Made by [`Bus::builder`]. Cloning is cheap and every clone is the same node. Dropping the last
/// clone stops the bus's tasks; [`shutdown`](Bus::shutdown) does so gracefully.
///
/// # Examples
///
/// ```
/// use meshbus_core::{Bus, Command, Context, HandlerError};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Double(u64);
/// impl Command for Double { const NAME: &'static str = "math.double"; type Reply = u64; }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), meshbus_core::Error> {
/// let bus = Bus::builder()
///     .command_handler(async |cmd: Double, _ctx: Context| -> Result<u64, HandlerError> {
///         Ok(cmd.0 * 2)
///     })
///     .start()
///     .await?;
/// assert_eq!(bus.commands().local().send(Double(21)).await?, 42);
/// bus.shutdown().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Bus {
    pub(crate) inner: Arc<BusInner>,
    /// Present on the application's handles: when the last one is dropped, the bus's tasks stop.
    /// Absent on the handle a handler reaches through its [`Context`](crate::Context), so that a
    /// running handler never keeps its own bus alive.
    owner: Option<Arc<Owner>>,
}

/// Who this node is.
#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) node_id: NodeId,
    pub(crate) name: String,
    pub(crate) network: String,
    pub(crate) cluster: String,
    pub(crate) host_id: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) shutdown_timeout: Duration,
}

pub(crate) struct BusInner {
    pub(crate) identity: Identity,
    /// Our static public key (the node id is derived from it).
    pub(crate) public_key: crate::trust::PublicKey,
    pub(crate) config: Config,
    pub(crate) commands: FxHashMap<std::borrow::Cow<'static, str>, CommandSlot>,
    pub(crate) events: ArcSwap<EventTable>,
    /// Shutdown has begun: the application's handles are refused new work.
    pub(crate) closed: AtomicBool,
    /// Cancelled when shutdown begins: see [`Bus::closing`].
    pub(crate) closing: tokio_util::sync::CancellationToken,
    /// Run by shutdown once the bus has drained: see [`BusBuilder::on_shutdown`].
    pub(crate) shutdown_hooks: Mutex<Vec<builder::OnShutdown>>,
    /// In-flight commands have drained: handlers' handles are refused too, and the subscription
    /// queues are closing.
    pub(crate) sealed: AtomicBool,
    /// Cancelled when the bus seals: publishes still waiting for room give up with `Closed`.
    pub(crate) sealed_token: CancellationToken,
    /// Local command handlers running now (on their callers' tasks).
    pub(crate) in_flight: AtomicUsize,
    /// Woken when `in_flight` drops to zero after `closed` was set.
    pub(crate) drained: Notify,
    /// Tracks the subscription workers, so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
    /// Owns the subscription workers: dropping the bus aborts them.
    pub(crate) tasks: Mutex<JoinSet<()>>,
    pub(crate) next_subscription_id: AtomicU64,
    pub(crate) counters: Arc<Counters>,
    /// The node runtime, when the bus has a transport.
    pub(crate) node: Option<Arc<NodeShared>>,
    /// The peers and their interest, for [`Bus::membership`].
    pub(crate) membership: Arc<tokio::sync::watch::Sender<Arc<MembershipView>>>,
    /// What the listeners actually listen on, for [`Bus::listen_addrs`].
    pub(crate) listen_addrs: Vec<Addr>,
}

impl BusInner {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Our handlers or subscriptions changed: readiness watchers and peers are told.
    pub(crate) fn interest_changed(&self) {
        self.membership.send_modify(|_| {});
        if let Some(node) = &self.node {
            node.local_interest_changed();
        }
    }

    pub(crate) fn unsubscribe<E: Event>(&self, id: u64) {
        self.events.rcu(|table| {
            let mut table = EventTable::clone(table);
            if let Some(list) = table.get(E::NAME).and_then(|slot| slot.all::<E>()) {
                let list: SubList<E> = list.iter().filter(|s| s.id() != id).cloned().collect();
                if list.is_empty() {
                    table.remove(E::NAME);
                } else {
                    table.insert(E::NAME, EventSlot::of(list));
                }
            }
            table
        });
        self.interest_changed();
    }
}

impl Bus {
    /// A builder for a new bus.
    pub fn builder() -> BusBuilder {
        BusBuilder::new()
    }

    /// Resolves once the bus begins to shut down (or at once if it has): background work
    /// such as a task started with [`BusBuilder::on_start`] stops taking new work then.
    pub fn closing(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.inner.closing.clone().cancelled_owned()
    }

    /// The application's first handle to a new bus.
    pub(crate) fn owning(inner: Arc<BusInner>) -> Self {
        let owner = Arc::new(Owner(Arc::downgrade(&inner)));
        Bus {
            inner,
            owner: Some(owner),
        }
    }

    /// The handle a handler gets: it does not keep the bus's tasks running.
    pub(crate) fn for_handler(inner: Arc<BusInner>) -> Self {
        Bus { inner, owner: None }
    }

    /// A handler's handle to the same bus.
    pub(crate) fn handler_handle(&self) -> Self {
        Bus::for_handler(Arc::clone(&self.inner))
    }

    /// Whether this handle may no longer start work: the application's handles stop when
    /// shutdown begins, handlers' handles only once in-flight commands have drained, so that a
    /// finishing handler can still publish its outcome.
    pub(crate) fn refuses_work(&self) -> bool {
        match self.owner {
            Some(_) => self.inner.closed.load(Ordering::SeqCst),
            None => self.inner.sealed.load(Ordering::SeqCst),
        }
    }

    /// Sends commands: `bus.commands().local().send(cmd).await`.
    pub fn commands(&self) -> Commands<'_> {
        Commands::new(self)
    }

    /// Publishes events: `bus.events().publish(event).await`.
    pub fn events(&self) -> Events<'_> {
        Events::new(self)
    }

    /// Subscribes to events of type `E` at run time, with the default
    /// [`SubscriptionOptions`] (its concurrency does not apply: the stream's consumer decides).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed) after shutdown; [`ErrorKind::Config`](crate::ErrorKind::Config) if `E::NAME` is already
    /// subscribed with another type.
    pub fn subscribe<E: Event>(&self) -> Result<Subscription<E>, Error> {
        self.subscribe_with(SubscriptionOptions::new())
    }

    /// Subscribes to events of type `E` at run time, with a queue as `options` say.
    ///
    /// # Errors
    ///
    /// As [`subscribe`](Bus::subscribe).
    pub fn subscribe_with<E: Event>(
        &self,
        options: SubscriptionOptions,
    ) -> Result<Subscription<E>, Error> {
        let inner = &self.inner;
        if self.refuses_work() {
            return Err(Error::closed());
        }
        groups::check(E::NAME, &options)?;
        let id = inner.next_subscription_id.fetch_add(1, Ordering::Relaxed);
        let metrics = inner
            .counters
            .metrics
            .subscription(E::NAME, id, options.group.as_deref());
        let (sub, rx) = crate::subscription::queue::<E>(E::NAME, id, &options, metrics);
        let mut clash = None;
        inner
            .events
            .rcu(|table| match table_with(table, Arc::clone(&sub)) {
                Ok(t) => {
                    // `rcu` may retry: only the attempt that lands counts.
                    clash = None;
                    t
                }
                Err(e) => {
                    clash = Some(e);
                    EventTable::clone(table)
                }
            });
        if let Some(e) = clash {
            return Err(e);
        }
        // Shutdown may have sealed the bus (and emptied the table) between the check above and
        // the insert: then the subscription would never end. Take it back out.
        if inner.sealed.load(Ordering::SeqCst) {
            inner.unsubscribe::<E>(id);
            return Err(Error::closed());
        }
        inner.interest_changed();
        Ok(Subscription {
            id,
            rx,
            bus: Arc::downgrade(inner),
            _event: PhantomData,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.identity.node_id
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.inner.identity.name
    }

    /// The network this node belongs to.
    pub fn network(&self) -> &str {
        &self.inner.identity.network
    }

    /// The cluster this node belongs to.
    pub fn cluster(&self) -> &str {
        &self.inner.identity.cluster
    }

    /// The host id that decides the [`Machine`](crate::Scope::Machine) scope.
    pub fn host_id(&self) -> &str {
        &self.inner.identity.host_id
    }

    /// The addresses this node listens on, one per [`listen`](BusBuilder::listen) call and in
    /// that order, as the transports resolved them: a port 0 is replaced by the port the
    /// system chose (`tcp://127.0.0.1:0` becomes `tcp://127.0.0.1:41234`). Empty when the bus
    /// listens on nothing.
    ///
    /// These are what other nodes of this machine can dial, e.g. as their
    /// [`peers`](BusBuilder::peers); an address with an unspecified host (`0.0.0.0`) is
    /// reported as such.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), meshbus_core::Error> {
    /// let bus = meshbus_core::Bus::builder().start().await?;
    /// assert!(bus.listen_addrs().is_empty());
    /// # bus.shutdown().await
    /// # }
    /// ```
    pub fn listen_addrs(&self) -> &[Addr] {
        &self.inner.listen_addrs
    }

    /// A watch of the peers this node is connected to and what each handles and subscribes to.
    ///
    /// Without a transport the view never has peers.
    pub fn membership(&self) -> tokio::sync::watch::Receiver<Arc<MembershipView>> {
        self.inner.membership.subscribe()
    }

    /// Adds seed addresses at run time: each is dialled at once and then, like the seeds given
    /// to [`BusBuilder::peers`], redialled with backoff whenever this node has no link to the
    /// node behind it, for as long as the bus runs. For a node cut off from the mesh
    /// ([`MembershipView::alone`]) whose seeds moved. Takes what [`BusBuilder::peers`] takes
    /// (another node's [`listen_addrs`](Self::listen_addrs), text). An address already a seed
    /// is dialled again now.
    ///
    /// # Errors
    ///
    /// [`Config`](crate::ErrorKind::Config) if an address does not parse (nothing is added
    /// then) or the bus has no transport; [`Closed`](crate::ErrorKind::Closed) once the bus is
    /// shutting down.
    pub async fn add_peers(&self, addrs: impl IntoPeerAddrs) -> Result<(), Error> {
        let addrs = addrs.into_addr_strings();
        let parsed = crate::node::parse_addrs(&addrs)?;
        let Some(node) = &self.inner.node else {
            return Err(Error::config(
                "`add_peers` needs a transport: add one with `BusBuilder::transport`",
            ));
        };
        if node.local_only {
            for addr in &parsed {
                builder::check_local(addr, "dialling")?;
            }
        }
        node.add_peers(parsed.iter().map(|a| a.as_str().to_owned()).collect())
            .await
    }

    /// Dials `addr` once now and waits for the handshake: the id of the node that answered.
    /// The link then stays up like any other (it is not kept as a seed to redial).
    ///
    /// # Errors
    ///
    /// - [`Unauthorized`](crate::ErrorKind::Unauthorized) when the other node refused us (it
    ///   holds none of our network keys, is of another network, or does not allow our static
    ///   key) or we refused it (its static key is not among
    ///   [`allow_peers`](crate::BusBuilder::allow_peers));
    /// - [`Io`](crate::ErrorKind::Io) when nobody answers,
    ///   [`Timeout`](crate::ErrorKind::Timeout) when the handshake takes too long;
    /// - [`Config`](crate::ErrorKind::Config) for an address no transport serves, or one
    ///   beyond this machine for a node without a network key.
    pub async fn connect(&self, addr: &str) -> Result<NodeId, Error> {
        let addr = Addr::parse(addr)?;
        let Some(node) = &self.inner.node else {
            return Err(Error::config(
                "`connect` needs a transport: add one with `BusBuilder::transport`",
            ));
        };
        if node.local_only {
            builder::check_local(&addr, "dialling")?;
        }
        node.connect(addr).await
    }

    /// This node's static public key: its [`node_id`](Self::node_id) is derived from it, and
    /// peers that pin keys ([`allow_peers`](crate::BusBuilder::allow_peers)) list it.
    pub fn public_key(&self) -> crate::trust::PublicKey {
        self.inner.public_key
    }

    /// Replaces the network keyring for the handshakes to come, for rotating keys without
    /// downtime: links up now keep the keys they were made with. See
    /// [`BusBuilder::network_keys`](crate::BusBuilder::network_keys).
    ///
    /// # Errors
    ///
    /// [`Config`](crate::ErrorKind::Config) for an empty keyring or one of more than
    /// [`MAX_NETWORK_KEYS`](crate::trust::MAX_NETWORK_KEYS) keys (a keyless node cannot
    /// become keyed while it runs, nor the other way round), or a bus without a transport.
    pub fn set_network_keys(
        &self,
        keys: impl IntoIterator<Item = crate::trust::NetworkKey>,
    ) -> Result<(), Error> {
        let keys: Vec<_> = keys.into_iter().collect();
        if keys.is_empty() || keys.len() > crate::trust::MAX_NETWORK_KEYS {
            return Err(Error::config(format!(
                "a keyring holds 1 to {} keys; {} given",
                crate::trust::MAX_NETWORK_KEYS,
                keys.len()
            )));
        }
        let Some(node) = &self.inner.node else {
            return Err(Error::config(
                "`set_network_keys` needs a transport: add one with `BusBuilder::transport`",
            ));
        };
        if node.local_only {
            return Err(Error::config(
                "this node started without a network key; start it with one to rotate keys",
            ));
        }
        node.set_network_keys(keys);
        Ok(())
    }

    /// Futures that resolve once the mesh is ready: `bus.ready().handlers::<C>(scope, n).await`.
    pub fn ready(&self) -> Ready<'_> {
        Ready::new(self)
    }

    /// A snapshot of the bus's counters.
    pub fn stats(&self) -> BusStats {
        self.inner.counters.snapshot()
    }

    /// What this node has queued for each connected peer, sorted by node
    /// id: a peer that reads slower than we publish shows a queue near its bound and a growing
    /// [`events_queue_full`](PeerStats::events_queue_full). The counters belong to the
    /// current connection to the peer and start again from zero when it reconnects.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), meshbus_core::Error> {
    /// let bus = meshbus_core::Bus::builder().start().await?;
    /// for peer in bus.peer_stats() {
    ///     if peer.events_queue_full > 0 {
    ///         println!("{} is slow: {} bytes queued", peer.name, peer.queued_bytes);
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn peer_stats(&self) -> Vec<PeerStats> {
        let Some(node) = self.inner.node.as_ref() else {
            return Vec::new();
        };
        let routes = node.routes();
        let mut out: Vec<PeerStats> = routes.peers.iter().map(|p| p.stats()).collect();
        out.sort_by_key(|s| s.node_id);
        out
    }

    /// Every subscription of this bus (registered handlers and run-time
    /// [`subscribe`](Bus::subscribe)s) with what it received, what waited for it and what it
    /// dropped: the subscriber's end of event flow control. Sorted by event name, then id.
    ///
    /// # Examples
    ///
    /// ```
    /// # use meshbus_core::{Bus, Event};
    /// # use serde::{Deserialize, Serialize};
    /// #[derive(Serialize, Deserialize)]
    /// struct Tick;
    /// impl Event for Tick { const NAME: &'static str = "docs.tick"; }
    ///
    /// # #[tokio::main] async fn main() -> Result<(), meshbus_core::Error> {
    /// let bus = Bus::builder().start().await?;
    /// let mut ticks = bus.subscribe::<Tick>()?;
    /// bus.events().local().publish(Tick).await?;
    /// let stats = bus.subscription_stats();
    /// assert_eq!((stats[0].event, stats[0].delivered, stats[0].queued), ("docs.tick", 1, 1));
    /// ticks.recv().await;
    /// assert_eq!(bus.subscription_stats()[0].queued, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn subscription_stats(&self) -> Vec<SubscriptionStats> {
        let table = self.inner.events.load();
        let mut out = Vec::new();
        for slot in table.values() {
            (slot.stats)(slot, &mut out);
        }
        out.sort_by(|a, b| a.event.cmp(b.event).then(a.id.cmp(&b.id)));
        out
    }

    /// Per group, what this node's publishers sent it: delivered to a member, passed over a
    /// full member, dropped (every member full), published with no member in scope, and lost
    /// in flight to a member node that went away. Sorted by event, then group; a group appears
    /// once something has been published to it, and stays.
    pub fn group_stats(&self) -> Vec<GroupStats> {
        self.inner.counters.groups.snapshot()
    }

    /// Whether [`shutdown`](Bus::shutdown) has begun.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = &self.inner.identity;
        f.debug_struct("Bus")
            .field("node_id", &id.node_id)
            .field("name", &id.name)
            .field("network", &id.network)
            .field("cluster", &id.cluster)
            .field("host_id", &id.host_id)
            .field("closed", &self.inner.is_closed())
            .finish_non_exhaustive()
    }
}
