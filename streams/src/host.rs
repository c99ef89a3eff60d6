//! Hosting a stream: [`StreamConfig`] and [`StreamsBuilderExt::stream`], which make a node the
//! host of a stream. The host opens the stream's log when the bus starts, captures the events
//! the stream names, and serves the stream's commands (`$streams.<stream>.append`, `.fetch`,
//! `.info`) to every node of the mesh.

mod consumers;
mod dedupe;
mod rival;
mod serve;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meshbus_core::{BusBuilder, Context, Event, HandlerError};

use crate::config::{FsyncPolicy, LogConfig, Retention};
use crate::storage::Storage;
use crate::wire::{self, command_name, op};
use crate::ConsumerConfig;
pub(crate) use consumers::MAX_NEXT;
pub(crate) use serve::{Host, HostCell, Stop, MAX_FETCH_BYTES, MAX_FETCH_RECORDS, MAX_FETCH_WAIT};

/// The default [`StreamConfig::dedupe_window`].
pub const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(120);

/// The default [`StreamConfig::dedupe_keys`].
pub const DEFAULT_DEDUPE_KEYS: usize = 100_000;

/// Adds an event name to a stream's capture: a subscriber registered on the host's builder.
type Capture = Box<dyn FnOnce(BusBuilder, Arc<HostCell>) -> BusBuilder + Send>;

/// What a node hosts: one durable stream, its directory, which events it captures, and how
/// its log keeps them.
///
/// ```no_run
/// # use meshbus_core::{Bus, Event};
/// # use meshbus_streams::{FsyncPolicy, Retention, StreamConfig, StreamsBuilderExt};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct OrderPlaced { id: u64 }
/// # impl Event for OrderPlaced { const NAME: &'static str = "orders.placed"; }
/// # async fn run() -> Result<(), meshbus_core::Error> {
/// let bus = Bus::builder()
///     .stream(
///         StreamConfig::new("orders")
///             .event::<OrderPlaced>()
///             .dir("/var/lib/shop/streams/orders")
///             .fsync(FsyncPolicy::Always)
///             .retention(Retention { max_bytes: Some(1 << 30), ..Retention::default() }),
///     )
///     .start()
///     .await?;
/// # Ok(()) }
/// ```
#[must_use = "a stream config does nothing until given to `BusBuilder::stream`"]
pub struct StreamConfig {
    pub(crate) name: String,
    pub(crate) events: Vec<&'static str>,
    captures: Vec<Capture>,
    pub(crate) dir: Option<PathBuf>,
    pub(crate) storage: Option<Arc<dyn Storage>>,
    pub(crate) log: LogConfig,
    pub(crate) dedupe_window: Duration,
    pub(crate) dedupe_keys: usize,
}

impl StreamConfig {
    /// The stream `name`: 1 to 255 ASCII letters, digits, `-` or `_` (checked when the bus
    /// starts). One node per network hosts a given name.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        StreamConfig {
            log: LogConfig::new(name.clone()),
            name,
            events: Vec::new(),
            captures: Vec::new(),
            dir: None,
            storage: None,
            dedupe_window: DEFAULT_DEDUPE_WINDOW,
            dedupe_keys: DEFAULT_DEDUPE_KEYS,
        }
    }

    /// Captures event `E`: every `E` published in a scope that reaches the host is appended,
    /// best effort, like any subscriber's copy, and a confirmed publish of `E`
    /// ([`Streams::publish`](crate::Streams::publish)) is appended before it resolves.
    /// Confirmed appends ([`Streams::append`](crate::Streams::append)) are not limited to these
    /// names.
    ///
    /// One node may host several streams, but only one of them may capture a given event
    /// (start fails otherwise); streams on different nodes may capture the same event.
    pub fn event<E: Event + serde::Serialize>(mut self) -> Self {
        self.events.push(E::NAME);
        self.captures.push(Box::new(|builder, cell| {
            let confirmed = Arc::clone(&cell);
            builder
                .event_handler(move |event: Arc<E>, ctx: Context| {
                    let cell = Arc::clone(&cell);
                    async move {
                        let Some(host) = cell.get() else {
                            return Ok::<(), HandlerError>(());
                        };
                        let confirmed = ctx.headers().get(wire::CONFIRMED_HEADER).is_some();
                        if !confirmed && host.rival.check(&host.owner, &ctx).is_ok() {
                            host.capture(E::NAME, &*event, &ctx).await;
                        }
                        Ok(())
                    }
                })
                .command_handler_named(
                    wire::capture_name(E::NAME),
                    move |cmd: wire::Capture, ctx: Context| {
                        let host = confirmed.get();
                        async move {
                            let Some(host) = host else {
                                return Ok::<_, HandlerError>(Err(wire::WireError::unavailable(
                                    E::NAME,
                                )));
                            };
                            // A host that gives way to another says so: not an error for the
                            // publisher, whose event the other host appends.
                            if host.rival.check(&host.owner, &ctx).is_err() {
                                return Ok(Ok(None));
                            }
                            Ok(host.append_captured(E::NAME, cmd).await.map(Some))
                        }
                    },
                )
        }));
        self
    }

    /// The directory of the stream's files (created if missing). Required.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Keeps the stream's files in `storage` instead of a directory: a fault-injecting storage
    /// in tests.
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// When appends are flushed to disk: see [`FsyncPolicy`]. The default is
    /// [`FsyncPolicy::Interval`] of 100 ms.
    pub fn fsync(mut self, policy: FsyncPolicy) -> Self {
        self.log = self.log.fsync(policy);
        self
    }

    /// Which old segments are deleted: see [`Retention`]. The default keeps everything.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.log = self.log.retention(retention);
        self
    }

    /// Everything else of the stream's log (segment size and age, caches, limits); its name
    /// stays the stream's.
    pub fn log(mut self, log: LogConfig) -> Self {
        self.log = LogConfig {
            name: self.name.clone(),
            ..log
        };
        self
    }

    /// How long an idempotency key is remembered: an append repeating a key within the
    /// window gets the first append's offset instead of a second record. Default 2 minutes.
    pub fn dedupe_window(mut self, window: Duration) -> Self {
        self.dedupe_window = window;
        self
    }

    /// How many idempotency keys are remembered at most (the oldest are forgotten first).
    /// Default 100,000.
    pub fn dedupe_keys(mut self, keys: usize) -> Self {
        self.dedupe_keys = keys;
        self
    }
}

impl std::fmt::Debug for StreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamConfig")
            .field("name", &self.name)
            .field("events", &self.events)
            .field("dir", &self.dir)
            .field("log", &self.log)
            .field("dedupe_window", &self.dedupe_window)
            .finish_non_exhaustive()
    }
}

/// Makes a node the host of durable streams.
pub trait StreamsBuilderExt: Sized {
    /// Hosts the stream `config` describes: its log is opened (and recovered) when the bus
    /// starts, which fails if the directory cannot be used.
    fn stream(self, config: StreamConfig) -> Self;

    /// Runs `handler` on this node as a member of durable consumer `consumer` of `stream`
    /// (hosted here or anywhere in the network), created with `config` if it does not exist:
    /// each record of event `E` goes to one member of the consumer; the handler's `Ok` acks
    /// it, its `Err` or a panic negatively acks it (it is delivered again, up to
    /// `max_deliveries`, then dead-lettered). The member starts with the bus, retries while
    /// the host is not reachable, and stops when the bus shuts down; a record it was
    /// handling then is delivered again after `ack_wait`.
    ///
    /// ```no_run
    /// # use meshbus_core::{Bus, Event, HandlerError};
    /// # use meshbus_streams::{ConsumerConfig, StreamsBuilderExt};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct OrderPlaced { id: u64 }
    /// # impl Event for OrderPlaced { const NAME: &'static str = "orders.placed"; }
    /// # async fn run() -> Result<(), meshbus_core::Error> {
    /// let bus = Bus::builder()
    ///     .stream_handler("orders", "billing", ConsumerConfig::new(), |order: OrderPlaced, ctx| async move {
    ///         println!("bill order {} (delivery {})", order.id, ctx.deliveries);
    ///         Ok::<_, HandlerError>(())
    ///     })
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    fn stream_handler<E, F, Fut>(
        self,
        stream: &str,
        consumer: &str,
        config: ConsumerConfig,
        handler: F,
    ) -> Self
    where
        E: Event + serde::de::DeserializeOwned,
        F: Fn(E, crate::DeliveryContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static;
}

impl StreamsBuilderExt for BusBuilder {
    fn stream_handler<E, F, Fut>(
        self,
        stream: &str,
        consumer: &str,
        config: ConsumerConfig,
        handler: F,
    ) -> Self
    where
        E: Event + serde::de::DeserializeOwned,
        F: Fn(E, crate::DeliveryContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let config = if config.filter.is_empty() {
            config.filter([E::NAME])
        } else {
            config
        };
        crate::client::register_stream_handler(
            self,
            stream.to_owned(),
            consumer.to_owned(),
            config,
            handler,
        )
    }

    fn stream(self, mut config: StreamConfig) -> Self {
        let cell: Arc<HostCell> = Arc::default();
        let name = config.name.clone();
        let mut builder = self;
        for capture in std::mem::take(&mut config.captures) {
            builder = capture(builder, Arc::clone(&cell));
        }
        let opened = Arc::clone(&cell);
        let dead: Arc<HostCell> = Arc::default();
        let dead_opened = Arc::clone(&dead);
        builder = builder.setup(move |_services| async move {
            let host = Host::open(config).await?;
            if let Some(d) = host.dead_letters() {
                dead_opened.set(d);
            }
            opened.set(host);
            Ok(())
        });
        // Closed once the bus has drained: every event queued for capture is appended first.
        let (closed, dead_closed) = (Arc::clone(&cell), Arc::clone(&dead));
        builder = builder.on_shutdown(move || async move {
            for cell in [closed, dead_closed] {
                if let Some(host) = cell.take() {
                    host.close().await;
                }
            }
        });
        builder = serve_log(builder, &wire::dead_letter_stream(&name), &dead);
        let builder = serve_log(builder, &name, &cell);
        let named = |op: &str| command_name(&name, op);
        builder
            .command_handler_named(
                named(op::APPEND),
                serving(
                    &cell,
                    |h, cmd: wire::Append| async move { h.append(cmd).await },
                ),
            )
            .command_handler_named(
                named(op::CONSUMER),
                serving(&cell, |h, cmd: wire::CreateConsumer| async move {
                    h.create_consumer(cmd).await
                }),
            )
            .command_handler_named(
                named(op::NEXT),
                waiting(&cell, |h, cmd: wire::Next, stop| async move {
                    h.next(cmd, stop).await
                }),
            )
            .command_handler_named(
                named(op::ACK),
                serving(&cell, |h, cmd: wire::Ack| async move { h.ack(cmd).await }),
            )
            .command_handler_named(
                named(op::CONSUMER_INFO),
                serving(&cell, |h, cmd: wire::GetConsumer| async move {
                    h.consumer_info(cmd).await
                }),
            )
            .command_handler_named(
                named(op::CONSUMER_RESET),
                serving(&cell, |h, cmd: wire::ResetConsumer| async move {
                    h.reset_consumer(cmd).await
                }),
            )
            .command_handler_named(
                named(op::CONSUMER_DELETE),
                serving(&cell, |h, cmd: wire::DeleteConsumer| async move {
                    h.delete_consumer(cmd).await
                }),
            )
    }
}

/// Registers what every hosted log serves, a stream or a dead-letter stream: fetch, purge,
/// delete and info of stream `name`.
fn serve_log(builder: BusBuilder, name: &str, cell: &Arc<HostCell>) -> BusBuilder {
    let named = |op: &str| command_name(name, op);
    builder
        .command_handler_named(
            named(op::FETCH),
            waiting(cell, |h, cmd: wire::Fetch, stop| async move {
                h.fetch(cmd, stop).await
            }),
        )
        .command_handler_named(
            named(op::PURGE),
            serving(
                cell,
                |h, cmd: wire::Purge| async move { h.purge(cmd).await },
            ),
        )
        .command_handler_named(
            named(op::DELETE),
            serving(cell, |h, _: wire::Delete| async move { h.delete().await }),
        )
        .command_handler_named(
            named(op::INFO),
            serving(cell, |h, _: wire::Info| async move { h.info() }),
        )
}

/// A command handler that runs `f` on the host once it is open and not refused (see
/// [`Host::admit`]), and answers with the refusal otherwise.
pub(crate) fn serving<C, T, F, Fut>(
    cell: &Arc<HostCell>,
    f: F,
) -> impl Fn(C, Context) -> BoxFuture<Result<Result<T, wire::WireError>, HandlerError>>
       + Send
       + Sync
       + Clone
       + 'static
where
    C: Send + 'static,
    T: Send + 'static,
    F: Fn(Arc<Host>, C) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<T, wire::WireError>> + Send + 'static,
{
    waiting(cell, move |host, cmd, _stop| f(host, cmd))
}

/// [`serving`] for requests that may wait at the tail (a fetch, a pull): `f` gets a [`Stop`]
/// that ends the wait when the caller gives up or the bus shuts down, so that a wait never
/// holds a shutdown.
pub(crate) fn waiting<C, T, F, Fut>(
    cell: &Arc<HostCell>,
    f: F,
) -> impl Fn(C, Context) -> BoxFuture<Result<Result<T, wire::WireError>, HandlerError>>
       + Send
       + Sync
       + Clone
       + 'static
where
    C: Send + 'static,
    T: Send + 'static,
    F: Fn(Arc<Host>, C, Stop) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<T, wire::WireError>> + Send + 'static,
{
    let cell = Arc::clone(cell);
    move |cmd: C, ctx: Context| {
        let admitted = serve::admit(&cell, &ctx);
        let f = f.clone();
        Box::pin(async move {
            Ok(match admitted {
                Ok(host) => f(host, cmd, Stop(ctx)).await,
                Err(refused) => Err(refused),
            })
        })
    }
}

/// A boxed future of a handler.
pub(crate) type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

/// The policy a stream's info reports.
pub(crate) fn fsync_name(policy: FsyncPolicy) -> String {
    match policy {
        FsyncPolicy::Always => "always".to_owned(),
        FsyncPolicy::Interval(d) => format!("interval {} ms", d.as_millis()),
        FsyncPolicy::Never => "never".to_owned(),
    }
}

/// A retention as a stream's info reports it.
pub(crate) fn retention_info(r: &Retention) -> crate::RetentionInfo {
    crate::RetentionInfo {
        max_age_ms: r
            .max_age
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        max_bytes: r.max_bytes,
        max_records: r.max_records,
    }
}
