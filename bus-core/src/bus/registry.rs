//! The handler registry: what each registration adds to a bus being started (command slots,
//! subscriptions and their workers), the type-erased tables dispatch reads, and the
//! subscription workers that run event handlers.

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak};

use futures_util::FutureExt;
use rustc_hash::FxHashMap;

use super::groups::{GroupInfo, LocalGroup};
use super::peer_events::RemoteBatch;
use super::{remote, Bus, BusInner};
use crate::error::Error;
use crate::handler::{panic_message, BoxFuture, CommandHandler, EventHandler};
use crate::message::{Command, Event};
use crate::metrics::{CommandMetrics, NodeMetrics};
use crate::node::credit::EventFlow;
use crate::proto::interest::MAX_NAME_LEN;
use crate::services::Services;
use crate::stats::Counters;
use crate::stats::SubscriptionStats;
use crate::subscription::{queue, FullPolicy, SubReceiver, SubSender, SubscriptionOptions};

/// What a registration adds to the bus being started.
#[derive(Default)]
pub(super) struct Registry {
    pub(super) commands: FxHashMap<Cow<'static, str>, CommandSlot>,
    pub(super) events: EventTable,
    pub(super) workers: Vec<Worker>,
    pub(super) next_subscription_id: u64,
    /// Where the subscriptions' series are registered.
    pub(super) metrics: Arc<crate::metrics::NodeMetrics>,
}

/// A subscription worker, waiting for the bus to exist.
pub(super) type Worker = Box<dyn FnOnce(Weak<BusInner>) -> BoxFuture<'static, ()> + Send>;

pub(super) type Registration =
    Box<dyn FnOnce(&Services, &mut Registry) -> Result<(), Error> + Send>;

/// A registered command handler, its command type erased.
pub(crate) struct CommandSlot {
    pub(crate) type_id: TypeId,
    pub(crate) type_name: &'static str,
    /// An `Arc<dyn CommandHandler<C>>`.
    pub(crate) handler: Box<dyn Any + Send + Sync>,
    /// The same handler for commands that arrive encoded from peers.
    pub(crate) remote: Arc<dyn remote::RemoteCommand>,
    /// The command's series per scope, at the caller and at the handler.
    pub(crate) metrics: Arc<CommandMetrics>,
}

impl CommandSlot {
    pub(crate) fn new<C: Command>(
        name: &str,
        handler: Arc<dyn CommandHandler<C>>,
        node: &Arc<NodeMetrics>,
    ) -> Self {
        let metrics = Arc::new(CommandMetrics::default());
        CommandSlot {
            type_id: TypeId::of::<C>(),
            type_name: std::any::type_name::<C>(),
            remote: Arc::new(remote::TypedRemoteCommand {
                name: name.into(),
                handler: Arc::clone(&handler),
                metrics: Arc::clone(&metrics),
                node: Arc::clone(node),
            }),
            handler: Box::new(handler),
            metrics,
        }
    }

    pub(crate) fn get<C: Command>(&self) -> Option<&Arc<dyn CommandHandler<C>>> {
        self.handler.downcast_ref()
    }
}

/// See [`EventSlot::batch`].
pub(crate) type MakeBatch = fn(&EventSlot, Option<&str>) -> Option<Box<dyn RemoteBatch>>;

/// The subscriptions of one event name, their event type erased.
#[derive(Clone)]
pub(crate) struct EventSlot {
    pub(crate) type_name: &'static str,
    /// A `SubList<E>`: every subscription, in subscription order.
    all: Arc<dyn Any + Send + Sync>,
    /// A `SubList<E>`: the subscriptions outside any group, which get every event.
    pub(crate) subs: Arc<dyn Any + Send + Sync>,
    /// A `Vec<LocalGroup<E>>`: the groups with members here.
    groups: Arc<dyn Any + Send + Sync>,
    /// How many subscriptions are outside any group.
    ungrouped: usize,
    /// What the groups are, for the interest.
    pub(crate) group_info: Vec<GroupInfo>,
    /// How the subscriptions outside any group take peers' events: the room granted to each
    /// peer.
    pub(crate) flow: EventFlow,
    /// Makes what hands a run of peers' events to the subscriptions outside any group (no
    /// group given) or to one member of a group (`None` if there is no such group here).
    pub(crate) batch: MakeBatch,
    /// Adds each subscription's stats.
    pub(crate) stats: fn(&EventSlot, &mut Vec<SubscriptionStats>),
}

fn subscription_stats<E: Event>(slot: &EventSlot, out: &mut Vec<SubscriptionStats>) {
    if let Some(subs) = slot.all::<E>() {
        out.extend(subs.iter().map(|s| s.stats()));
    }
}

pub(crate) type SubList<E> = Vec<Arc<SubSender<E>>>;

impl EventSlot {
    /// The subscriptions outside any group.
    pub(crate) fn get<E: Event>(&self) -> Option<&SubList<E>> {
        self.subs.downcast_ref()
    }

    /// Whether some subscription is outside any group.
    pub(crate) fn has_ungrouped(&self) -> bool {
        self.ungrouped > 0
    }

    /// Every subscription, grouped or not.
    pub(crate) fn all<E: Event>(&self) -> Option<&SubList<E>> {
        self.all.downcast_ref()
    }

    /// The groups with members here.
    pub(crate) fn groups<E: Event>(&self) -> Option<&Vec<LocalGroup<E>>> {
        self.groups.downcast_ref()
    }

    /// The groups with members here, to hold on to.
    pub(crate) fn groups_arc<E: Event>(&self) -> Option<Arc<Vec<LocalGroup<E>>>> {
        Arc::clone(&self.groups).downcast().ok()
    }

    /// The slot of the subscriptions in `list`.
    pub(crate) fn of<E: Event>(list: SubList<E>) -> Self {
        let (ungrouped, groups) = super::groups::split(E::NAME, &list);
        EventSlot {
            type_name: std::any::type_name::<E>(),
            flow: flow_of(&ungrouped),
            ungrouped: ungrouped.len(),
            group_info: groups.iter().map(|g| g.info.clone()).collect(),
            all: Arc::new(list),
            subs: Arc::new(ungrouped),
            groups: Arc::new(groups),
            batch: super::peer_events::batch::<E>,
            stats: subscription_stats::<E>,
        }
    }
}

/// The room one peer is granted for the events of `list`: the smallest capacity among the
/// subscriptions that make publishers wait (or among all, when none does).
fn flow_of<E>(list: &SubList<E>) -> EventFlow {
    let wait = list.iter().any(|s| s.policy() == FullPolicy::Wait);
    let window = list
        .iter()
        .filter(|s| !wait || s.policy() == FullPolicy::Wait)
        .map(|s| s.capacity())
        .min()
        .unwrap_or(SubscriptionOptions::DEFAULT_CAPACITY);
    EventFlow {
        window: u32::try_from(window).unwrap_or(u32::MAX),
        wait,
    }
}

/// The routing snapshot for events: replaced as a whole when a subscription comes or goes, so
/// publishers read it without a lock.
pub(crate) type EventTable = FxHashMap<&'static str, EventSlot>;

/// Adds `sub` to `table`, checking that the name is not taken by another type.
pub(super) fn table_with<E: Event>(
    table: &EventTable,
    sub: Arc<SubSender<E>>,
) -> Result<EventTable, Error> {
    let mut table = table.clone();
    let mut list: SubList<E> = match table.get(E::NAME) {
        Some(slot) => slot
            .all::<E>()
            .ok_or_else(|| name_clash(E::NAME, slot.type_name, std::any::type_name::<E>()))?
            .clone(),
        None => Vec::new(),
    };
    list.push(sub);
    table.insert(E::NAME, EventSlot::of(list));
    Ok(table)
}

pub(super) fn name_clash(name: &str, registered: &str, used: &str) -> Error {
    Error::config(format!(
        "message name `{name}` is used by two types: `{registered}` and `{used}`; give one of them another name"
    ))
    .with_message_name(name.to_owned())
}

pub(super) fn add_command<C: Command>(
    reg: &mut Registry,
    name: Cow<'static, str>,
    f: Arc<dyn CommandHandler<C>>,
) -> Result<(), Error> {
    check_name(&name)?;
    if let Some(existing) = reg.commands.get(&name) {
        let err = if existing.type_id == std::any::TypeId::of::<C>() {
            Error::config(format!(
                "two handlers registered for command `{name}`; a command has exactly one handler per node"
            ))
            .with_message_name(name)
        } else {
            name_clash(&name, existing.type_name, std::any::type_name::<C>())
        };
        return Err(err);
    }
    let slot = CommandSlot::new(&name, f, &reg.metrics);
    reg.commands.insert(name, slot);
    Ok(())
}

/// Refuses a command name no frame can carry, or that would confuse a reader of logs.
fn check_name(name: &str) -> Result<(), Error> {
    let problem = if name.is_empty() {
        "is empty".to_owned()
    } else if name.len() > MAX_NAME_LEN {
        format!("is longer than {MAX_NAME_LEN} bytes")
    } else if name.chars().any(char::is_control) {
        "has a control character".to_owned()
    } else {
        return Ok(());
    };
    let shown: String = name.chars().take(64).collect();
    Err(Error::config(format!(
        "the command name `{}` {problem}",
        shown.escape_debug()
    ))
    .with_message_name(name.to_owned()))
}

pub(super) fn add_subscriber<E: Event>(
    reg: &mut Registry,
    f: Arc<dyn EventHandler<E>>,
    options: SubscriptionOptions,
) -> Result<(), Error> {
    super::groups::check(E::NAME, &options)?;
    let id = reg.next_subscription_id;
    reg.next_subscription_id += 1;
    let metrics = reg
        .metrics
        .subscription(E::NAME, id, options.group.as_deref());
    let (sub, rx) = queue::<E>(E::NAME, id, &options, metrics);
    reg.events = table_with(&reg.events, sub)?;
    for _ in 0..options.concurrency {
        let rx = rx.clone();
        let f = Arc::clone(&f);
        let span = tracing::debug_span!("subscription", event = E::NAME, id);
        reg.workers.push(Box::new(move |bus| {
            Box::pin(tracing::Instrument::instrument(
                run_subscriber(rx, f, bus),
                span,
            ))
        }));
    }
    Ok(())
}

/// Runs one subscription worker: takes events off the queue one at a time until the queue is
/// closed and empty, or the bus is gone.
async fn run_subscriber<E: Event>(
    mut rx: SubReceiver<E>,
    handler: Arc<dyn EventHandler<E>>,
    bus: Weak<BusInner>,
) {
    while let Some(delivery) = rx.recv().await {
        let Some(inner) = bus.upgrade() else { return };
        let message_id = delivery.message_id;
        let ctx = delivery
            .meta
            .context(message_id, Bus::for_handler(Arc::clone(&inner)));
        let outcome = AssertUnwindSafe(handler.handle(delivery.event, ctx))
            .catch_unwind()
            .await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                Counters::bump(&inner.counters.event_handler_errors);
                tracing::warn!(event = E::NAME, message_id, error = %err, "event handler failed");
            }
            Err(panic) => {
                Counters::bump(&inner.counters.event_handler_panics);
                tracing::error!(
                    event = E::NAME,
                    message_id,
                    panic = %panic_message(&*panic),
                    "event handler panicked"
                );
            }
        }
    }
}
