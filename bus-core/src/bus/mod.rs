//! The [`Bus`]: one node of the mesh, and its local dispatch.

mod builder;
mod commands;
mod events;

use std::any::{Any, TypeId};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;

pub use builder::BusBuilder;
pub use commands::{Commands, ResponseFuture, SendCommand};
pub use events::{Events, Publish, PublishFuture};

use crate::error::{Error, ErrorKind};
use crate::handler::CommandHandler;
use crate::id::NodeId;
use crate::message::{Command, Event};
use crate::stats::{BusStats, Counters};
use crate::subscription::{SubSender, Subscription, SubscriptionOptions};

/// A node of the mesh: the handle through which a service sends commands, publishes events and
/// subscribes.
///
/// Made by [`Bus::builder`]. Cloning is cheap and every clone is the same node. Dropping the last
/// clone stops the bus's tasks; [`shutdown`](Bus::shutdown) does so gracefully.
///
/// # Examples
///
/// ```
/// use meshbus_core::{Bus, Command, HandlerError};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Double(u64);
/// impl Command for Double { const NAME: &'static str = "math.double"; type Reply = u64; }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), meshbus_core::Error> {
/// let bus = Bus::builder()
///     .command_handler(|cmd: Double, _ctx| async move { Ok::<_, HandlerError>(cmd.0 * 2) })
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

/// A registered command handler, its command type erased.
pub(crate) struct CommandSlot {
    pub(crate) type_id: TypeId,
    pub(crate) type_name: &'static str,
    /// An `Arc<dyn CommandHandler<C>>`.
    pub(crate) handler: Box<dyn Any + Send + Sync>,
}

impl CommandSlot {
    pub(crate) fn new<C: Command>(handler: Arc<dyn CommandHandler<C>>) -> Self {
        CommandSlot {
            type_id: TypeId::of::<C>(),
            type_name: std::any::type_name::<C>(),
            handler: Box::new(handler),
        }
    }

    pub(crate) fn get<C: Command>(&self) -> Option<&Arc<dyn CommandHandler<C>>> {
        self.handler.downcast_ref()
    }
}

/// The subscriptions of one event name, their event type erased.
#[derive(Clone)]
pub(crate) struct EventSlot {
    pub(crate) type_name: &'static str,
    /// An `Arc<Vec<Arc<SubSender<E>>>>`.
    pub(crate) subs: Arc<dyn Any + Send + Sync>,
}

pub(crate) type SubList<E> = Vec<Arc<SubSender<E>>>;

impl EventSlot {
    pub(crate) fn get<E: Event>(&self) -> Option<&SubList<E>> {
        self.subs.downcast_ref()
    }

    pub(crate) fn get_arc<E: Event>(&self) -> Option<Arc<SubList<E>>> {
        Arc::clone(&self.subs).downcast().ok()
    }
}

/// The routing snapshot for events: replaced as a whole when a subscription comes or goes, so
/// publishers read it without a lock.
pub(crate) type EventTable = FxHashMap<&'static str, EventSlot>;

/// Adds `sub` to `table`, checking that the name is not taken by another type.
pub(crate) fn table_with<E: Event>(
    table: &EventTable,
    sub: Arc<SubSender<E>>,
) -> Result<EventTable, Error> {
    let mut table = table.clone();
    let mut list: SubList<E> = match table.get(E::NAME) {
        Some(slot) => slot
            .get::<E>()
            .ok_or_else(|| name_clash(E::NAME, slot.type_name, std::any::type_name::<E>()))?
            .clone(),
        None => Vec::new(),
    };
    list.push(sub);
    table.insert(
        E::NAME,
        EventSlot {
            type_name: std::any::type_name::<E>(),
            subs: Arc::new(list),
        },
    );
    Ok(table)
}

pub(crate) fn name_clash(name: &str, registered: &str, used: &str) -> Error {
    Error::config(format!(
        "message name `{name}` is used by two types: `{registered}` and `{used}`; give one of them another name"
    ))
    .with_message_name(name.to_owned())
}

pub(crate) struct BusInner {
    pub(crate) identity: Identity,
    pub(crate) config: Config,
    pub(crate) commands: FxHashMap<&'static str, CommandSlot>,
    pub(crate) events: ArcSwap<EventTable>,
    pub(crate) closed: AtomicBool,
    /// Local command handlers running now (on their callers' tasks).
    pub(crate) in_flight: AtomicUsize,
    /// Woken when `in_flight` drops to zero after `closed` was set.
    pub(crate) drained: Notify,
    /// Tracks the subscription workers, so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
    /// Owns the subscription workers: dropping the bus aborts them.
    pub(crate) tasks: Mutex<JoinSet<()>>,
    pub(crate) next_subscription_id: AtomicU64,
    pub(crate) counters: Counters,
}

impl BusInner {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Counts a handler in flight until the guard drops.
    ///
    /// Callers take the guard *before* checking [`is_closed`](Self::is_closed): with both sides
    /// `SeqCst`, either the caller sees `closed`, or shutdown sees the count and waits for it.
    pub(crate) fn enter(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self)
    }

    /// Resolves once no handler is in flight. Only meaningful after `closed` is set.
    async fn wait_in_flight(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn unsubscribe<E: Event>(&self, id: u64) {
        self.events.rcu(|table| {
            let mut table = EventTable::clone(table);
            if let Some(list) = table.get(E::NAME).and_then(|slot| slot.get::<E>()) {
                let list: SubList<E> = list.iter().filter(|s| s.id != id).cloned().collect();
                if list.is_empty() {
                    table.remove(E::NAME);
                } else if let Some(slot) = table.get_mut(E::NAME) {
                    slot.subs = Arc::new(list);
                }
            }
            table
        });
    }
}

/// Keeps [`Bus::shutdown`] waiting while a handler runs.
pub(crate) struct InFlight<'a>(&'a BusInner);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 && self.0.is_closed() {
            self.0.drained.notify_waiters();
        }
    }
}

impl Bus {
    /// A builder for a new bus.
    pub fn builder() -> BusBuilder {
        BusBuilder::new()
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
    /// [`ErrorKind::Closed`] after shutdown; [`ErrorKind::Config`] if `E::NAME` is already
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
        if inner.is_closed() {
            return Err(Error::closed());
        }
        let id = inner.next_subscription_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = flume::bounded(options.get_capacity());
        let sub = Arc::new(SubSender {
            id,
            tx,
            policy: options.get_when_full(),
            dropped: AtomicU64::new(0),
        });
        let mut clash = None;
        inner
            .events
            .rcu(|table| match table_with(table, Arc::clone(&sub)) {
                Ok(t) => t,
                Err(e) => {
                    clash = Some(e);
                    EventTable::clone(table)
                }
            });
        if let Some(e) = clash {
            return Err(e);
        }
        Ok(Subscription {
            id,
            rx: rx.into_stream(),
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

    /// A snapshot of the bus's counters.
    pub fn stats(&self) -> BusStats {
        self.inner.counters.snapshot()
    }

    /// Whether [`shutdown`](Bus::shutdown) has begun.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Shuts the bus down gracefully.
    ///
    /// New commands, publishes and subscriptions fail with [`ErrorKind::Closed`] from the moment
    /// this is called. In-flight command handlers finish, and every event already admitted to a
    /// subscription's queue is handled, within the builder's
    /// [`shutdown_timeout`](BusBuilder::shutdown_timeout); then every task of the bus is stopped.
    /// Run-time [`Subscription`]s end once their queues are empty. Calling it again waits again.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Timeout`] when handlers were still running at the bound; they were aborted.
    pub async fn shutdown(&self) -> Result<(), Error> {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::SeqCst);
        // Dropping the senders lets each subscription worker drain its queue and end.
        inner.events.store(Arc::new(EventTable::default()));
        inner.tracker.close();
        let bound = inner.config.shutdown_timeout;
        let drained = async { tokio::join!(inner.wait_in_flight(), inner.tracker.wait()) };
        if tokio::time::timeout(bound, drained).await.is_err() {
            let still = inner.tracker.len() + inner.in_flight.load(Ordering::SeqCst);
            self.abort_tasks();
            return Err(Error::new(ErrorKind::Timeout).with_detail(format!(
                "shutdown: {still} handlers still running after {bound:?} were aborted"
            )));
        }
        self.abort_tasks();
        tracing::debug!(node = %inner.identity.node_id, "bus shut down");
        Ok(())
    }

    fn abort_tasks(&self) {
        if let Ok(mut tasks) = self.inner.tasks.lock() {
            tasks.abort_all();
        }
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
