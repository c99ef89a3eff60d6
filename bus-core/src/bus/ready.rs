//! [`Ready`]: named futures that resolve once the mesh is ready for something.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use super::Bus;
use crate::error::{Error, ErrorKind};
use crate::handler::BoxFuture;
use crate::message::{Command, Event};
use crate::node::{MembershipView, PeerInfo};
use crate::proto::routing::Here;
use crate::scope::Scope;

/// Futures that resolve once the mesh is ready for something. Made by [`Bus::ready`].
///
/// Wait on these instead of sleeping: they resolve as soon as the membership shows enough
/// nodes. Awaited as they are they wait for as long as it takes; bound them with
/// `.timeout(d)`, which resolves to an [`ErrorKind::Timeout`] error saying how many of how
/// many were reached.
///
/// # Counting
///
/// Every readiness future counts *nodes that meet its condition*, and this node counts like
/// any other when it meets it: [`handlers`](Self::handlers) counts this node if it handles
/// the command, [`subscribers`](Self::subscribers) if it subscribes to the event (in every
/// scope, [`Scope::Local`] included). [`peers`](Self::peers) counts connected peers, which
/// this node never is.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), meshbus_core::Error> {
/// use std::time::Duration;
///
/// let bus = meshbus_core::Bus::builder().start().await?;
/// // No peer will come: the wait ends in a timeout naming what was missing.
/// let err = bus.ready().peers(1).timeout(Duration::from_millis(10)).await.unwrap_err();
/// assert_eq!(err.kind(), meshbus_core::ErrorKind::Timeout);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Ready<'a> {
    bus: &'a Bus,
}

impl<'a> Ready<'a> {
    pub(crate) fn new(bus: &'a Bus) -> Self {
        Ready { bus }
    }

    /// Resolves once at least `n` nodes in `scope` handle command `C`, this node included.
    pub fn handlers<C: Command>(self, scope: Scope, n: usize) -> HandlersReady<'a, C> {
        let wait = Wait::new(self.bus, Goal::Handlers(C::NAME, scope), n);
        HandlersReady {
            wait,
            fut: Box::pin(wait.run()),
            _command: PhantomData,
        }
    }

    /// Resolves once at least `n` nodes in `scope` subscribe to event `E` (in a group or
    /// not), this node included.
    pub fn subscribers<E: Event>(self, scope: Scope, n: usize) -> SubscribersReady<'a, E> {
        let wait = Wait::new(self.bus, Goal::Subscribers(E::NAME, scope), n);
        SubscribersReady {
            wait,
            fut: Box::pin(wait.run()),
            _event: PhantomData,
        }
    }

    /// Resolves once at least `n` nodes in `scope` have members of group `group` of event
    /// `E`, this node included.
    pub fn members<E: Event>(self, group: &'a str, scope: Scope, n: usize) -> MembersReady<'a, E> {
        let wait = Wait::new(self.bus, Goal::Members(E::NAME, group, scope), n);
        MembersReady {
            wait,
            fut: Box::pin(wait.run()),
            _event: PhantomData,
        }
    }

    /// Resolves once at least `n` nodes in `scope` handle the command registered under `name`
    /// with [`command_handler_named`](crate::BusBuilder::command_handler_named), this node
    /// included.
    pub fn handlers_named(self, name: &'a str, scope: Scope, n: usize) -> NamedHandlersReady<'a> {
        let wait = Wait::new(self.bus, Goal::Handlers(name, scope), n);
        NamedHandlersReady {
            wait,
            fut: Box::pin(wait.run()),
        }
    }

    /// Resolves once at least `n` peers are connected (this node is not a peer).
    pub fn peers(self, n: usize) -> PeersReady<'a> {
        let wait = Wait::new(self.bus, Goal::Peers, n);
        PeersReady {
            wait,
            fut: Box::pin(wait.run()),
        }
    }
}

/// What a readiness future waits for.
#[derive(Debug, Clone, Copy)]
enum Goal<'a> {
    Handlers(&'a str, Scope),
    Subscribers(&'static str, Scope),
    Members(&'static str, &'a str, Scope),
    Peers,
}

/// The shared part of every readiness future: which bus, what, how many.
#[derive(Clone, Copy)]
struct Wait<'a> {
    bus: &'a Bus,
    goal: Goal<'a>,
    n: usize,
}

impl<'a> Wait<'a> {
    fn new(bus: &'a Bus, goal: Goal<'a>, n: usize) -> Self {
        Wait { bus, goal, n }
    }

    /// How many nodes meet the goal in `view`.
    fn count(&self, view: &MembershipView) -> usize {
        let inner = &self.bus.inner;
        let (scope, local) = match self.goal {
            Goal::Peers => return view.peers.len(),
            Goal::Handlers(name, scope) => (scope, inner.commands.contains_key(name)),
            Goal::Subscribers(name, scope) => (scope, inner.events.load().contains_key(name)),
            Goal::Members(name, group, scope) => (
                scope,
                inner
                    .events
                    .load()
                    .get(name)
                    .is_some_and(|slot| slot.group_info.iter().any(|g| &*g.name == group)),
            ),
        };
        let remote = if scope == Scope::Local {
            0
        } else {
            let id = &inner.identity;
            let here = Here {
                host_id: &id.host_id,
                cluster: &id.cluster,
            };
            view.peers
                .iter()
                .filter(|p| here.in_scope(scope, &p.host_id, &p.cluster))
                .filter(|p| self.peer_meets(p))
                .count()
        };
        usize::from(local) + remote
    }

    fn peer_meets(&self, peer: &PeerInfo) -> bool {
        match self.goal {
            Goal::Handlers(name, _) => peer.commands.iter().any(|c| c == name),
            Goal::Subscribers(name, _) => {
                peer.events.iter().any(|e| e == name) || peer.groups.iter().any(|g| g.event == name)
            }
            Goal::Members(name, group, _) => peer
                .groups
                .iter()
                .any(|g| g.event == name && g.group == group),
            Goal::Peers => true,
        }
    }

    /// Waits until the goal is met; never resolves if it never is (or the bus is dropped
    /// before).
    async fn run(self) {
        let mut rx = self.bus.membership();
        if rx
            .wait_for(|view| self.count(view) >= self.n)
            .await
            .is_err()
        {
            // The membership's sender is gone: nothing will ever change.
            std::future::pending::<()>().await;
        }
    }

    /// [`run`](Self::run) bounded by `timeout`.
    async fn run_for(self, timeout: Duration) -> Result<(), Error> {
        if tokio::time::timeout(timeout, self.run()).await.is_ok() {
            return Ok(());
        }
        let reached = self.count(&self.bus.membership().borrow());
        let what = match self.goal {
            Goal::Handlers(name, scope) => {
                format!(
                    "{reached} of {} nodes handling `{name}` in {scope:?} scope",
                    self.n
                )
            }
            Goal::Subscribers(name, scope) => format!(
                "{reached} of {} nodes subscribed to `{name}` in {scope:?} scope",
                self.n
            ),
            Goal::Members(name, group, scope) => format!(
                "{reached} of {} nodes with members of group `{group}` of `{name}` in {scope:?} scope",
                self.n
            ),
            Goal::Peers => format!("{reached} of {} peers connected", self.n),
        };
        let mut err = Error::new(ErrorKind::Timeout).with_detail(format!("not ready: {what}"));
        match self.goal {
            Goal::Handlers(name, scope)
            | Goal::Subscribers(name, scope)
            | Goal::Members(name, _, scope) => {
                err = err.with_message_name(name.to_owned()).with_scope(scope);
            }
            Goal::Peers => {}
        }
        Err(err)
    }
}

impl fmt::Debug for Wait<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wait")
            .field("goal", &self.goal)
            .field("n", &self.n)
            .finish_non_exhaustive()
    }
}

/// A readiness wait bounded in time: resolves to `Ok(())`, or an [`ErrorKind::Timeout`]
/// error whose [`detail`](Error::detail) says how many of how many were reached. Made by the
/// `timeout` of [`HandlersReady`], [`SubscribersReady`] and [`PeersReady`].
///
/// # Cancel safety
///
/// Cancel safe: it only watches the membership.
#[must_use = "futures do nothing unless polled"]
pub struct TimedReady<'a> {
    wait: Wait<'a>,
    fut: BoxFuture<'a, Result<(), Error>>,
}

impl Future for TimedReady<'_> {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        self.fut.as_mut().poll(cx)
    }
}

impl fmt::Debug for TimedReady<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimedReady")
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

macro_rules! readiness {
    ($(#[$doc:meta])* $name:ident $(<$p:ident: $bound:ident, $field:ident>)?) => {
        $(#[$doc])*
        ///
        /// A future: `.await` it to wait however long it takes, or bound it with
        /// [`timeout`](Self::timeout) first.
        ///
        /// # Cancel safety
        ///
        /// Cancel safe: it only watches the membership.
        #[must_use = "futures do nothing unless polled"]
        pub struct $name<'a $(, $p: $bound)?> {
            wait: Wait<'a>,
            fut: BoxFuture<'a, ()>,
            $($field: PhantomData<fn() -> $p>,)?
        }

        impl<'a $(, $p: $bound)?> $name<'a $(, $p)?> {
            /// Gives up after `timeout` with an [`ErrorKind::Timeout`] error saying how many
            /// of how many were reached.
            pub fn timeout(self, timeout: Duration) -> TimedReady<'a> {
                let wait = self.wait;
                TimedReady { wait, fut: Box::pin(wait.run_for(timeout)) }
            }
        }

        impl<$($p: $bound)?> Future for $name<'_ $(, $p)?> {
            type Output = ();

            fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
                self.fut.as_mut().poll(cx)
            }
        }

        impl<$($p: $bound)?> fmt::Debug for $name<'_ $(, $p)?> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).field("wait", &self.wait).finish()
            }
        }
    };
}

readiness! {
    /// Waits until enough nodes handle a command. Made by [`Ready::handlers`].
    HandlersReady<C: Command, _command>
}

readiness! {
    /// Waits until enough nodes handle a command by a run-time name. Made by
    /// [`Ready::handlers_named`].
    NamedHandlersReady
}

readiness! {
    /// Waits until enough nodes subscribe to an event. Made by [`Ready::subscribers`].
    SubscribersReady<E: Event, _event>
}

readiness! {
    /// Waits until enough nodes have members of a group. Made by [`Ready::members`].
    MembersReady<E: Event, _event>
}

readiness! {
    /// Waits until enough peers are connected. Made by [`Ready::peers`].
    PeersReady
}
