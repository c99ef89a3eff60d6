//! [`BusBuilder`]: configuration, services and handler registration.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;

mod trust;

pub(crate) use trust::check_local;

use super::registry::{add_command, add_subscriber, Registration, Registry};
use super::{Bus, BusInner, Config, Identity};
use crate::discovery::Discovery;
use crate::error::Error;
use crate::handler::{BoxFuture, IntoCommandHandler, IntoEventHandler};
use crate::message::{Command, Event};
use crate::node::{MembershipView, NodeConfig, NodeShared};
use crate::services::Services;
use crate::stats::Counters;
use crate::transport::{Addr, Transport};
use crate::wire::control::PeerIdentity;

/// A step of [`BusBuilder::on_shutdown`].
pub(crate) type OnShutdown = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// A task of [`BusBuilder::on_start`].
type OnStart = Box<dyn FnOnce(Bus) -> BoxFuture<'static, ()> + Send>;

/// An async step of [`BusBuilder::setup`].
type Setup = Box<dyn FnOnce(&Services) -> BoxFuture<'static, Result<(), Error>> + Send>;

/// Configures and starts a [`Bus`].
///
/// Registration is mediator style: every handler is declared here, before start. Handler
/// factories ([`from_services`](crate::from_services)) run inside [`start`](BusBuilder::start)
/// with the registered [`Services`]; the first failing factory makes `start` fail.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use meshbus_core::{
///     async_trait, from_services, Bus, Command, CommandHandler, Context, HandlerError,
/// };
/// use serde::{Deserialize, Serialize};
///
/// struct Greeting(String);
///
/// #[derive(Serialize, Deserialize)]
/// struct Greet(String);
/// impl Command for Greet { const NAME: &'static str = "greet"; type Reply = String; }
///
/// struct Greeter { greeting: Arc<Greeting> }
///
/// #[async_trait]
/// impl CommandHandler<Greet> for Greeter {
///     async fn handle(&self, cmd: Greet, _ctx: Context) -> Result<String, HandlerError> {
///         Ok(format!("{}, {}", self.greeting.0, cmd.0))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), meshbus_core::Error> {
/// let bus = Bus::builder()
///     .cluster("shop")
///     .service(Greeting("hello".into()))
///     .command_handler(from_services(|s| Ok(Greeter { greeting: s.get()? })))
///     .start()
///     .await?;
/// assert_eq!(bus.commands().send(Greet("Ada".into())).await?, "hello, Ada");
/// # bus.shutdown().await
/// # }
/// ```
#[must_use = "a builder does nothing until `start` is awaited"]
pub struct BusBuilder {
    name: Option<String>,
    network: String,
    cluster: String,
    host_id: Option<String>,
    seed: Option<u64>,
    services: Services,
    registrations: Vec<Registration>,
    setups: Vec<Setup>,
    starts: Vec<OnStart>,
    stops: Vec<OnShutdown>,
    config: Config,
    node: NodeConfig,
    discovery: Vec<Box<dyn Discovery>>,
    trust: trust::TrustOptions,
}

impl BusBuilder {
    /// The default [`request_timeout`](BusBuilder::request_timeout).
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    /// The default [`shutdown_timeout`](BusBuilder::shutdown_timeout).
    pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

    pub(crate) fn new() -> Self {
        BusBuilder {
            name: None,
            network: "default".to_owned(),
            cluster: "default".to_owned(),
            host_id: None,
            seed: None,
            services: Services::new(),
            registrations: Vec::new(),
            setups: Vec::new(),
            starts: Vec::new(),
            stops: Vec::new(),
            config: Config {
                request_timeout: Some(Self::DEFAULT_REQUEST_TIMEOUT),
                shutdown_timeout: Self::DEFAULT_SHUTDOWN_TIMEOUT,
            },
            node: NodeConfig::new(),
            discovery: Vec::new(),
            trust: trust::TrustOptions::default(),
        }
    }

    /// Adds a discovery mechanism (mDNS, ...): the nodes it finds are dialled like nodes
    /// learned from gossip. Needs a transport.
    pub fn discovery(mut self, discovery: impl Discovery) -> Self {
        self.discovery.push(Box::new(discovery));
        self
    }

    /// Adds a transport (the in-memory network, TCP, ...). With none, the bus is local only.
    /// For a scheme served by several, the one added first wins.
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.node.transports.push(Arc::new(transport));
        self
    }

    /// Listens on `addr` (`"inmem://a"`, `"tcp://0.0.0.0:7000"`), with the transport of its
    /// scheme. May be called several times.
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.node.listen.push(addr.into());
        self
    }

    /// Static seed addresses: dialled at start, and again (with backoff) whenever the link to
    /// one is lost. Takes what another node's [`listen_addrs`](Bus::listen_addrs) returns
    /// (`&[Addr]`, `Vec<Addr>`, one `Addr` or `&Addr`) as well as text (`["tcp://10.0.0.5:7000"]`,
    /// an iterator of `String`s); see [`IntoPeerAddrs`](crate::IntoPeerAddrs). An address that
    /// does not parse fails [`start`](Self::start).
    pub fn peers(mut self, addrs: impl super::IntoPeerAddrs) -> Self {
        self.node.peers.extend(addrs.into_addr_strings());
        self
    }

    /// How long a link may carry nothing from this node before it sends a `Ping`
    /// (default 1 s). Must be shorter than the [`peer_timeout`](Self::peer_timeout).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.node.liveness = self.node.liveness.with_heartbeat_interval(interval);
        self
    }

    /// How long a peer may be silent before it is dead: its routes are removed and every
    /// request waiting on it fails with `PeerLost` (default 5 s). Also bounds how long one
    /// frame may take to arrive.
    pub fn peer_timeout(mut self, timeout: Duration) -> Self {
        self.node.liveness = self
            .node
            .liveness
            .with_peer_timeout(timeout)
            .with_frame_read_deadline(timeout);
        self
    }

    /// How often this node starts a gossip round with a peer, exchanging what each knows of
    /// the mesh (default 1 s). Shorter spreads news of joins and deaths faster for more
    /// traffic. Above zero and at most a day; [`start`](Self::start) checks.
    pub fn gossip_interval(mut self, interval: Duration) -> Self {
        self.node.membership.gossip_interval = interval;
        self
    }

    /// The redial schedule of seeds and members this node has no link to: the first retry
    /// after `base`, doubling up to `cap`, each ±20 % (defaults 250 ms and 30 s). Seeds are
    /// redialled on this schedule for as long as the bus runs. `base` above zero, `cap` at
    /// least `base` and at most a day; [`start`](Self::start) checks.
    pub fn redial_backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.node.membership.backoff.base = base;
        self.node.membership.backoff.cap = cap;
        self
    }

    /// How long a member this node cannot reach (every dial fails) stays a member before it
    /// is declared dead (default 5 min). A member with no address left to dial goes at once.
    pub fn unreachable_timeout(mut self, timeout: Duration) -> Self {
        self.node.membership.unreachable_timeout = timeout;
        self
    }

    /// How long a dead or departed node is remembered, so that stale gossip cannot bring it
    /// back (default 5 min). It should outlive any stale news still travelling in the mesh.
    pub fn tombstone_ttl(mut self, ttl: Duration) -> Self {
        self.node.membership.tombstone_ttl = ttl;
        self
    }

    /// The most nodes this node keeps links to, dials under way included (default 256).
    pub fn max_peers(mut self, n: usize) -> Self {
        self.node.membership.max_peers = n;
        self
    }

    /// The most nodes this node remembers, itself and dead ones included (default 4096): what
    /// gossip can make it store is bounded by this.
    pub fn max_members(mut self, n: usize) -> Self {
        self.node.membership.max_members = n;
        self
    }

    /// How many dials this node makes at once at most (default 8), and how many it may start
    /// per second (`rate`, default 64) after a burst of `burst` (default 8): a node told of
    /// thousands of members it cannot reach tries them at this pace, not all at once. All above
    /// zero, `rate` at most 10,000; [`start`](Self::start) checks.
    pub fn dial_limits(mut self, in_flight: usize, rate: u32, burst: u32) -> Self {
        let m = &mut self.node.membership;
        m.max_dials_in_flight = in_flight;
        m.dial_rate = rate;
        m.dial_burst = burst;
        self
    }

    /// How many nodes new to this node one peer's gossip may bring in per gossip interval
    /// (default 64); further new nodes in that peer's news are ignored, the link kept.
    pub fn max_introductions(mut self, n: usize) -> Self {
        self.node.membership.max_introductions = n;
        self
    }

    /// How long a new connection may take to complete its handshake, from being accepted or
    /// dialled to the last handshake frame (default 10 s,
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`](crate::proto::handshake::DEFAULT_HANDSHAKE_TIMEOUT)). A
    /// connection that has not said who it is by then is closed, so a client that opens a
    /// socket and trickles bytes (or none) cannot hold it open. Must be above zero and at most a
    /// day; [`start`](Self::start) checks.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.node.handshake_timeout = timeout;
        self
    }

    /// How many inbound handshakes may be under way at once, node-wide (default 64, at least
    /// 1). A connection accepted beyond it is closed at once, before its handshake starts, and
    /// never queued: a flood of connections that each hold a handshake open (up to
    /// [`handshake_timeout`](Self::handshake_timeout)) cannot take more than this many tasks,
    /// and a peer that was refused dials again after its backoff. Outbound handshakes are not
    /// counted.
    pub fn max_concurrent_handshakes(mut self, limit: usize) -> Self {
        self.node.max_concurrent_handshakes = limit.max(1);
        self
    }

    /// How many inbound handshakes one remote host may have under way at once (default 16,
    /// at least 1; the remote address's host, or the whole address for a transport without
    /// hosts, such as in-memory). A connection beyond it is closed at once, like one beyond
    /// [`max_concurrent_handshakes`](Self::max_concurrent_handshakes): one host's connections
    /// that say nothing cannot hold every place, and the others' handshakes go on.
    pub fn max_concurrent_handshakes_per_host(mut self, limit: usize) -> Self {
        self.node.max_concurrent_handshakes_per_host = limit.max(1);
        self
    }

    /// How many handshakes one remote host may start: `Some(limit)` gives each host (the
    /// remote address's host; the whole address for a transport without hosts, such as
    /// in-memory) a token bucket of [`RateLimit::burst`](crate::proto::admission::RateLimit::burst)
    /// handshakes refilled at [`RateLimit::per_second`](crate::proto::admission::RateLimit::per_second);
    /// `None` sets no limit. A connection beyond it is closed at once. The default,
    /// [`RateLimit::DEFAULT`](crate::proto::admission::RateLimit::DEFAULT), is bursts of 256
    /// then 64 per second: room for dozens of nodes on one host joining at once, while a host
    /// that opens thousands of connections is slowed to that rate.
    pub fn handshake_rate_per_host(
        mut self,
        limit: Option<crate::proto::admission::RateLimit>,
    ) -> Self {
        self.node.handshake_rate = limit;
        self
    }

    /// How many command handlers run at once for one peer (default 1024); beyond it a command
    /// is answered with `Overloaded` at once.
    pub fn max_in_flight_per_peer(mut self, limit: usize) -> Self {
        self.node.max_in_flight_per_peer = limit.max(1);
        self
    }

    /// The largest size a compressed body from a peer may declare it decompresses to (default
    /// 4 MiB, [`DEFAULT_MAX_DECOMPRESSED_SIZE`](crate::wire::DEFAULT_MAX_DECOMPRESSED_SIZE);
    /// at least 64 KiB). A body declaring more is refused before anything is allocated or
    /// decompressed: a command is answered with `TooLarge`, a reply fails its request with
    /// `TooLarge`, an event is dropped and counted in
    /// [`BusStats::remote_events_too_large`](crate::BusStats::remote_events_too_large). The
    /// link stays up: the frame was well formed.
    ///
    /// LZ4 inflates up to 255 times, so this bounds what a few kilobytes on the wire can cost.
    /// Senders never compress a body over 4 MiB, so a peer with default settings is never
    /// refused; raise it (up to the frame limit, 16 MiB) only together with peers that send
    /// larger compressed bodies.
    pub fn max_decompressed_size(mut self, bytes: usize) -> Self {
        self.node.max_decompressed_size = bytes.max(crate::node::LARGE_BODY);
        self
    }

    /// How many bytes of large command bodies (over 64 KiB once decompressed) the handlers
    /// running for one peer may hold at once (default 32 MiB). A large command beyond it is
    /// answered with `Overloaded` at once, before its body is decompressed; a body larger than
    /// the whole budget is admitted only when no other large one is running. Other peers are
    /// not affected.
    pub fn max_inbound_bytes_per_peer(mut self, bytes: usize) -> Self {
        self.node.max_inbound_bytes_per_peer = bytes.max(1);
        self
    }

    /// How many bytes of commands and events may wait for one peer's link (default 64 MiB);
    /// beyond it, senders wait, or drop events when the peer's subscriptions of that event
    /// drop ([`FullPolicy::DropNewest`](crate::FullPolicy::DropNewest)). A frame larger than
    /// the whole budget waits until the queue is empty.
    pub fn peer_queue_bytes(mut self, bytes: usize) -> Self {
        self.node.lane_bytes = bytes.max(1);
        self
    }

    /// How many frames each of a peer's lanes (control, replies, commands, events) holds
    /// (default 1024). A full command or event lane makes senders wait.
    pub fn peer_queue_capacity(mut self, frames: usize) -> Self {
        self.node.lane_capacity = frames.max(1);
        self
    }

    /// The node's name, for logs and membership (default: `node-` and the start of its id).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The network this node joins (default `"default"`). Nodes of other networks are ignored.
    pub fn network(mut self, network: impl Into<String>) -> Self {
        self.network = network.into();
        self
    }

    /// The cluster this node belongs to (default `"default"`), for the
    /// [`Cluster`](crate::Scope::Cluster) scope.
    pub fn cluster(mut self, cluster: impl Into<String>) -> Self {
        self.cluster = cluster.into();
        self
    }

    /// The host id for the [`Machine`](crate::Scope::Machine) scope (default: the contents of
    /// `/etc/machine-id`, else the host name). Tests and network namespaces set their own.
    pub fn host_id(mut self, host_id: impl Into<String>) -> Self {
        self.host_id = Some(host_id.into());
        self
    }

    /// Seeds the bus's randomness (node id, jitter), so a test can replay a run.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// How long a caller waits for a reply unless the request sets its own
    /// ([`SendCommand::timeout`](crate::SendCommand::timeout)); `None` waits forever.
    /// Default 30 s.
    pub fn request_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// How long [`Bus::shutdown`] lets in-flight handlers run before it aborts them.
    /// Default 10 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.config.shutdown_timeout = timeout;
        self
    }

    /// Registers a shared service that handler factories can [`get`](Services::get).
    pub fn service<T: Send + Sync + 'static>(mut self, service: T) -> Self {
        self.services.insert(service);
        self
    }

    /// Registers a service that is already shared.
    pub fn service_arc<T: Send + Sync + 'static>(mut self, service: Arc<T>) -> Self {
        self.services.insert_arc(service);
        self
    }

    /// Registers the handler of command `C`: an async fn or closure
    /// `(C, Context) -> Result<C::Reply, E>` (any `E: Into<HandlerError>`), a value implementing
    /// [`CommandHandler<C>`](crate::CommandHandler), or a factory made with
    /// [`from_services`](crate::from_services) that builds one inside
    /// [`start`](BusBuilder::start). A command has one handler per node.
    ///
    /// ```
    /// # use meshbus_core::{Bus, Command, Context, HandlerError};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Ping;
    /// # impl Command for Ping { const NAME: &'static str = "ping"; type Reply = (); }
    /// async fn ping(_: Ping, _ctx: Context) -> Result<(), HandlerError> {
    ///     Ok(())
    /// }
    ///
    /// let _builder = Bus::builder().command_handler(ping);
    /// ```
    pub fn command_handler<C, M, H>(self, handler: H) -> Self
    where
        C: Command,
        H: IntoCommandHandler<C, M>,
    {
        self.register(move |services, reg| {
            add_command(reg, C::NAME.into(), handler.build(services)?)
        })
    }

    /// Registers a handler of command `C` under `name` instead of `C::NAME`: callers reach it
    /// with [`Commands::send_named`](crate::Commands::send_named) and the same name.
    ///
    /// For libraries built on the bus whose command names are known only at run time (a node
    /// hosting the durable stream `orders` handles `$streams.orders.append`). Names starting
    /// with `$` are meant for such libraries. The name follows the rules of every command
    /// name: one handler per name and node, one type per name.
    pub fn command_handler_named<C, M, H>(
        self,
        name: impl Into<Cow<'static, str>>,
        handler: H,
    ) -> Self
    where
        C: Command,
        H: IntoCommandHandler<C, M>,
    {
        let name = name.into();
        self.register(move |services, reg| add_command(reg, name, handler.build(services)?))
    }

    /// Registers a subscriber of event `E`, in the shapes
    /// [`command_handler`](Self::command_handler) takes (an async fn or closure gets the event as
    /// an `Arc<E>`). It runs with the default [`SubscriptionOptions`](crate::SubscriptionOptions) unless given its own with
    /// [`with_options`](crate::EventHandlerExt::with_options).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use meshbus_core::{Bus, Context, Event, EventHandlerExt, HandlerError, SubscriptionOptions};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Tick;
    /// # impl Event for Tick { const NAME: &'static str = "tick"; }
    /// async fn on_tick(_: Arc<Tick>, _ctx: Context) -> Result<(), HandlerError> {
    ///     Ok(())
    /// }
    ///
    /// let _builder = Bus::builder()
    ///     .event_handler(on_tick)
    ///     .event_handler(on_tick.with_options(SubscriptionOptions::new().concurrency(4)));
    /// ```
    pub fn event_handler<E, M, H>(self, handler: H) -> Self
    where
        E: Event,
        H: IntoEventHandler<E, M>,
    {
        self.register(move |services, reg| {
            let (handler, options) = handler.build(services)?;
            add_subscriber(reg, handler, options)
        })
    }

    /// Adds an async step that [`start`](Self::start) runs, in the order added, before it
    /// builds any handler: open a database, a log or a connection pool that handlers use. An
    /// error ends `start` with that error, before the node joins any mesh.
    ///
    /// The step gets the [`Services`] (clone what it needs out of them); what it makes reaches
    /// the handlers through something they share with it, such as an `Arc<OnceLock<T>>`.
    ///
    /// ```
    /// # use std::sync::{Arc, OnceLock};
    /// # use meshbus_core::{Bus, Command, Context, HandlerError};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Count;
    /// # impl Command for Count { const NAME: &'static str = "count"; type Reply = usize; }
    /// # async fn load_table() -> Vec<u8> { vec![1, 2, 3] }
    /// # #[tokio::main] async fn main() -> Result<(), meshbus_core::Error> {
    /// let table: Arc<OnceLock<Vec<u8>>> = Arc::default();
    /// let (fill, read) = (Arc::clone(&table), Arc::clone(&table));
    /// let bus = Bus::builder()
    ///     .setup(move |_services| async move {
    ///         let _ = fill.set(load_table().await);
    ///         Ok(())
    ///     })
    ///     .command_handler(move |_: Count, _ctx: Context| {
    ///         let n = read.get().map_or(0, Vec::len);
    ///         async move { Ok::<_, HandlerError>(n) }
    ///     })
    ///     .start()
    ///     .await?;
    /// assert_eq!(bus.commands().send(Count).await?, 3);
    /// # bus.shutdown().await }
    /// ```
    pub fn setup<F, Fut>(mut self, step: F) -> Self
    where
        F: FnOnce(&Services) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        self.setups.push(Box::new(move |services: &Services| {
            Box::pin(step(services)) as BoxFuture<'static, _>
        }));
        self
    }

    /// Runs `task` on the bus once it has started, as one of its own tasks: it gets a
    /// handler's handle to the bus (which does not keep the bus running) and should end soon
    /// after [`Bus::closing`] resolves: shutdown waits for it (within its
    /// `shutdown_timeout`), then aborts it; dropping the last application handle aborts it
    /// too. For background work of libraries built on the bus, such as a durable stream's
    /// consumer loop.
    ///
    /// ```
    /// # use meshbus_core::Bus;
    /// # #[tokio::main] async fn main() -> Result<(), meshbus_core::Error> {
    /// let (tx, rx) = tokio::sync::oneshot::channel();
    /// let bus = Bus::builder()
    ///     .on_start(move |bus: Bus| async move {
    ///         let _ = tx.send(bus.node_id());
    ///         bus.closing().await;
    ///     })
    ///     .start()
    ///     .await?;
    /// assert_eq!(rx.await.ok(), Some(bus.node_id()));
    /// bus.shutdown().await
    /// # }
    /// ```
    pub fn on_start<F, Fut>(mut self, task: F) -> Self
    where
        F: FnOnce(Bus) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.starts.push(Box::new(move |bus: Bus| {
            Box::pin(task(bus)) as BoxFuture<'static, ()>
        }));
        self
    }

    /// Adds a step that [`Bus::shutdown`] runs once the bus has drained (every in-flight
    /// command answered, every queued event handled, every [`on_start`](Self::on_start)
    /// task ended) and before it stops the bus's tasks, in the order added, within its
    /// `shutdown_timeout`: close a store or flush a log that handlers wrote to. Not run when
    /// the bus is dropped without a shutdown.
    pub fn on_shutdown<F, Fut>(mut self, step: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.stops
            .push(Box::new(move || Box::pin(step()) as BoxFuture<'static, ()>));
        self
    }

    fn register(
        mut self,
        f: impl FnOnce(&Services, &mut Registry) -> Result<(), Error> + Send + 'static,
    ) -> Self {
        self.registrations.push(Box::new(f));
        self
    }

    /// Builds the handlers and starts the bus on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) when a handler factory fails (a missing
    /// service is named), when two handlers are registered for one command name, or when one
    /// message name is used by two types.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub async fn start(self) -> Result<Bus, Error> {
        // A seeded bus derives its static key, so its node id, from the seed: tests replay.
        let seeded = self.seed.map(|seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            std::array::from_fn(|_| rng.u8(..))
        });
        let trust = self.trust.resolve(&self.network, seeded)?;
        let public_key = trust.noise.identity().public_key();
        let node_id = public_key.node_id();
        for step in self.setups {
            step(&self.services).await?;
        }
        let name = self
            .name
            .unwrap_or_else(|| format!("node-{:08x}", (node_id.as_u128() >> 96) as u32));
        // Registered with the recorder installed now; with none, every handle is a no-op.
        let metrics = Arc::new(crate::metrics::NodeMetrics::new(node_id, &name));
        let mut reg = Registry {
            metrics: Arc::clone(&metrics),
            ..Registry::default()
        };
        for registration in self.registrations {
            registration(&self.services, &mut reg)?;
        }
        let Registry {
            commands,
            events,
            workers,
            next_subscription_id,
            metrics: _,
        } = reg;
        let networked = !self.node.transports.is_empty();
        let addresses = !(self.node.listen.is_empty()
            && self.node.peers.is_empty()
            && self.discovery.is_empty());
        if addresses && !networked {
            return Err(Error::config(
                "`listen`, `peers` and `discovery` need a transport: add one with `.transport(..)`",
            ));
        }
        self.node.liveness.validate()?;
        if self.node.handshake_timeout.is_zero()
            || self.node.handshake_timeout > Duration::from_secs(24 * 60 * 60)
        {
            return Err(Error::config(
                "the handshake timeout must be above zero and at most a day",
            ));
        }
        let listen = crate::node::parse_addrs(&self.node.listen)?;
        let seeds = crate::node::parse_addrs(&self.node.peers)?;
        if trust.local_only {
            for addr in &listen {
                trust::check_local(addr, "listening on")?;
            }
            for addr in &seeds {
                trust::check_local(addr, "dialling")?;
            }
        }
        let identity = Identity {
            node_id,
            name,
            network: self.network,
            cluster: self.cluster,
            host_id: self.host_id.unwrap_or_else(default_host_id),
        };
        if networked {
            crate::node::membership_config(&self.node, node_id.as_u128()).validate()?;
        }
        let mut listeners = Vec::new();
        for addr in &listen {
            listeners.push(self.node.transports.listen(addr).await?);
        }
        let listen_addrs: Vec<Addr> = listeners.iter().map(|l| l.local_addr().clone()).collect();
        let counters = Arc::new(Counters::new(metrics));
        let membership = Arc::new(tokio::sync::watch::Sender::new(Arc::new(
            MembershipView::default(),
        )));
        let node = networked.then(|| {
            let peer_identity = PeerIdentity {
                node_id: node_id.as_u128(),
                incarnation: crate::node::incarnation_now(),
                name: identity.name.clone(),
                network: identity.network.clone(),
                cluster: identity.cluster.clone(),
                host_id: identity.host_id.clone(),
                addresses: listeners
                    .iter()
                    .map(|l| l.local_addr().as_str().to_owned())
                    .collect(),
                public_key: Some(public_key),
            };
            NodeShared::new(
                peer_identity,
                trust.noise,
                trust.local_only,
                self.node,
                Arc::clone(&counters),
                Arc::clone(&membership),
            )
        });
        if let Some((shared, _)) = &node {
            shared.validate_identity()?;
        }
        let mut discovery = self.discovery;
        if let Some((shared, _)) = &node {
            let local = shared.identity();
            for d in &mut discovery {
                d.advertise(&local).await?;
            }
        }
        tracing::debug!(
            node = %identity.node_id,
            name = %identity.name,
            commands = commands.len(),
            events = events.len(),
            "bus starting"
        );
        let inner = Arc::new(BusInner {
            identity,
            public_key,
            config: self.config,
            commands,
            events: ArcSwap::from_pointee(events),
            closed: AtomicBool::new(false),
            closing: tokio_util::sync::CancellationToken::new(),
            shutdown_hooks: Mutex::new(self.stops),
            sealed: AtomicBool::new(false),
            sealed_token: tokio_util::sync::CancellationToken::new(),
            in_flight: AtomicUsize::new(0),
            drained: tokio::sync::Notify::new(),
            tracker: TaskTracker::new(),
            tasks: Mutex::new(JoinSet::new()),
            next_subscription_id: AtomicU64::new(next_subscription_id),
            counters,
            node: node.as_ref().map(|(shared, _)| Arc::clone(shared)),
            membership,
            listen_addrs,
        });
        {
            let mut tasks = inner
                .tasks
                .lock()
                .map_err(|_| Error::config("bus task set poisoned"))?;
            for worker in workers {
                let fut = worker(Arc::downgrade(&inner));
                tasks.spawn(inner.tracker.track_future(fut));
            }
            if let Some((shared, inbox)) = node {
                let dispatch: std::sync::Weak<BusInner> = Arc::downgrade(&inner);
                tasks.spawn(crate::node::run_actor(
                    shared, dispatch, inbox, listeners, seeds, discovery,
                ));
            }
            for task in self.starts {
                let fut = task(Bus::for_handler(Arc::clone(&inner)));
                tasks.spawn(inner.tracker.track_future(fut));
            }
        }
        Ok(Bus::owning(inner))
    }
}

/// The machine's stable id: `/etc/machine-id`, else the host name, else `"unknown-host"`.
fn default_host_id() -> String {
    [
        "/etc/machine-id",
        "/var/lib/dbus/machine-id",
        "/etc/hostname",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .map(|s| s.trim().to_owned())
    .find(|s| !s.is_empty())
    .unwrap_or_else(|| "unknown-host".to_owned())
}

impl fmt::Debug for BusBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusBuilder")
            .field("name", &self.name)
            .field("network", &self.network)
            .field("cluster", &self.cluster)
            .field("host_id", &self.host_id)
            .field("services", &self.services)
            .field("handlers", &self.registrations.len())
            .field("setups", &self.setups.len())
            .field("on_start", &self.starts.len())
            .field("on_shutdown", &self.stops.len())
            .field("config", &self.config)
            .field("node", &self.node)
            .field("discovery", &self.discovery)
            .finish_non_exhaustive()
    }
}
