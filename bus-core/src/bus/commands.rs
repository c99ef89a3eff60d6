//! Sending commands: [`Commands`], the [`SendCommand`] request builder and its
//! [`ResponseFuture`].

use std::borrow::Cow;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::time::Sleep;

use super::options::{request_setters, RequestOptions};
use super::outbound::{about, routed_call, Reroute};
use super::send_all::SendAll;
use super::{Bus, InFlight};
use crate::context::{Context, Deadline};
use crate::error::{Error, ErrorKind, HandlerError};
use crate::handler::{panic_message, BoxFuture};
use crate::message::Command;
use crate::metrics::CallMetrics;
use crate::proto::routing::Here;
use crate::scope::Scope;
use crate::stats::Counters;
use crate::wire::FrameKind;

/// Sends commands in a scope. Made by [`Bus::commands`]; the default scope is
/// [`Scope::Cluster`].
///
/// A command goes to the local handler when this node has one, else to a peer in scope;
/// [`remote_only`](Self::remote_only) skips the local handler.
#[derive(Debug, Clone, Copy)]
pub struct Commands<'a> {
    bus: &'a Bus,
    scope: Scope,
    remote_only: bool,
}

impl<'a> Commands<'a> {
    pub(crate) fn new(bus: &'a Bus) -> Self {
        Commands {
            bus,
            scope: Scope::Cluster,
            remote_only: false,
        }
    }

    /// Only handlers on other nodes, even when this node handles the command too (by default
    /// the local handler answers). A command with no remote handler in scope fails with
    /// [`ErrorKind::NoHandler`]; combined with [`Scope::Local`] every request fails with
    /// [`ErrorKind::Config`], since no handler can be both.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), meshbus_core::Error> {
    /// # use meshbus_core::{Bus, Command, Context, ErrorKind, HandlerError};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Name;
    /// # impl Command for Name { const NAME: &'static str = "doc.name"; type Reply = String; }
    /// async fn name(_: Name, _ctx: Context) -> Result<String, HandlerError> {
    ///     Ok("me".to_owned())
    /// }
    /// let bus = Bus::builder()
    ///     .command_handler(name)
    ///     .start()
    ///     .await?;
    /// assert_eq!(bus.commands().send(Name).await?, "me");
    /// // Alone, this node has no peer to ask.
    /// let err = bus.commands().remote_only().send(Name).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::NoHandler);
    /// # Ok(()) }
    /// ```
    pub fn remote_only(mut self) -> Self {
        self.remote_only = true;
        self
    }

    /// Only handlers in this bus instance; nothing is serialized.
    pub fn local(self) -> Self {
        self.scope(Scope::Local)
    }

    /// Handlers on nodes with our host id.
    pub fn machine(self) -> Self {
        self.scope(Scope::Machine)
    }

    /// Handlers on nodes of our cluster.
    pub fn cluster(self) -> Self {
        self.scope(Scope::Cluster)
    }

    /// Handlers on every node of our network.
    pub fn network(self) -> Self {
        self.scope(Scope::Network)
    }

    /// Handlers in `scope`.
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// Sends `cmd` to every node in scope that handles it (this one included) and yields
    /// `(node, result)` as each answers; the stream ends when all have answered, failed or run
    /// out of time.
    ///
    /// With [`remote_only`](Self::remote_only) this node's own handler is not asked.
    pub fn send_all<C: Command>(self, cmd: C) -> SendAll<'a, C> {
        self.send_all_named(C::NAME, cmd)
    }

    /// [`send_all`](Self::send_all) under `name` instead of `C::NAME`: every node in scope
    /// whose handler is registered under that name with
    /// [`command_handler_named`](crate::BusBuilder::command_handler_named) answers.
    pub fn send_all_named<C: Command>(
        self,
        name: impl Into<Cow<'static, str>>,
        cmd: C,
    ) -> SendAll<'a, C> {
        SendAll::new(self.bus, self.scope, self.remote_only, name.into(), cmd)
    }

    /// Sends `cmd` to exactly one handler in scope: the local one if there is one (unless
    /// [`remote_only`](Self::remote_only)).
    ///
    /// Returns a request builder; `.await` it for the reply.
    pub fn send<C: Command>(self, cmd: C) -> SendCommand<'a, C> {
        self.send_named(C::NAME, cmd)
    }

    /// Sends `cmd` under `name` instead of `C::NAME`, to the handler registered under that
    /// name with [`command_handler_named`](crate::BusBuilder::command_handler_named).
    ///
    /// For libraries built on the bus whose command names are known only at run time (a
    /// durable stream's `append` goes to the node hosting that stream); otherwise the same as
    /// [`send`](Self::send).
    ///
    /// ```
    /// # use meshbus_core::{Bus, Command, Context, HandlerError};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Get;
    /// # impl Command for Get { const NAME: &'static str = "kv.get"; type Reply = String; }
    /// # #[tokio::main] async fn main() -> Result<(), meshbus_core::Error> {
    /// let bus = Bus::builder()
    ///     .command_handler_named("kv.get.eu", |_: Get, _ctx: Context| async {
    ///         Ok::<_, HandlerError>("eu".to_owned())
    ///     })
    ///     .start()
    ///     .await?;
    /// assert_eq!(bus.commands().send_named("kv.get.eu", Get).await?, "eu");
    /// assert!(bus.commands().send(Get).await.is_err()); // nothing handles plain `kv.get`
    /// # bus.shutdown().await }
    /// ```
    pub fn send_named<C: Command>(
        self,
        name: impl Into<Cow<'static, str>>,
        cmd: C,
    ) -> SendCommand<'a, C> {
        SendCommand {
            bus: self.bus,
            scope: self.scope,
            remote_only: self.remote_only,
            name: name.into(),
            cmd,
            options: RequestOptions::new(),
        }
    }
}

/// A command request: set options, then `.await` it for `Result<C::Reply, Error>`.
///
/// # Cancel safety
///
/// Dropping the request (or its future) stops the wait at once. A local handler runs on the
/// caller's task, so dropping the future also drops the handler at its next `.await`.
#[must_use = "a request does nothing unless awaited"]
pub struct SendCommand<'a, C: Command> {
    bus: &'a Bus,
    scope: Scope,
    remote_only: bool,
    /// `C::NAME`, or the name given to [`Commands::send_named`].
    name: Cow<'static, str>,
    cmd: C,
    options: RequestOptions,
}

impl<C: Command> SendCommand<'_, C> {
    request_setters!(command);
}

impl<'a, C: Command> IntoFuture for SendCommand<'a, C> {
    type Output = Result<C::Reply, Error>;
    type IntoFuture = ResponseFuture<'a, C>;

    /// Nothing happens until the future is first polled.
    fn into_future(self) -> ResponseFuture<'a, C> {
        ResponseFuture {
            state: State::Start(Some(self)),
        }
    }
}

impl<'a, C: Command> SendCommand<'a, C> {
    /// Looks the handler up and starts it: a local one on the caller's task, else a remote one
    /// picked from the routing snapshot.
    fn start(self) -> Result<Call<'a, C>, Error> {
        let bus = self.bus;
        let inner = &bus.inner;
        let guard = inner.enter();
        if bus.refuses_work() {
            return Err(Error::closed().with_message_name(self.name));
        }
        if self.remote_only {
            if self.scope == Scope::Local {
                return Err(remote_only_local(self.name));
            }
            return self.start_remote(guard);
        }
        let Some(slot) = inner.commands.get(&*self.name) else {
            return self.start_remote(guard);
        };
        let Some(handler) = slot.get::<C>() else {
            return Err(super::name_clash(
                &self.name,
                slot.type_name,
                std::any::type_name::<C>(),
            ));
        };
        let timeout = self.options.timeout_or(inner.config.request_timeout);
        let (headers, correlation_id) = self.options.into_parts();
        let mut ctx = Context::new(
            crate::id::next_message_id(),
            inner.identity.node_id,
            self.scope,
            bus.handler_handle(),
        );
        ctx.correlation_id = correlation_id;
        ctx.deadline = Deadline::after(timeout);
        ctx.headers = headers;
        let (cmd, name) = (self.cmd, self.name);
        // A hand-written handler may run code (and panic) before it returns its future.
        let fut = catch_unwind(AssertUnwindSafe(|| handler.handle(cmd, ctx)))
            .map_err(|panic| handler_panicked(bus, name.clone(), &*panic))?;
        let metrics =
            CallMetrics::start_local(&inner.counters.metrics, &slot.metrics, &name, self.scope);
        Ok(Call::Local(LocalCall {
            fut,
            timeout,
            sleep: None,
            name,
            bus,
            metrics,
            _in_flight: guard,
        }))
    }

    /// No local handler: the least busy peer in scope gets the command, or `NoHandler` at once.
    fn start_remote(self, guard: InFlight<'a>) -> Result<Call<'a, C>, Error> {
        let inner = &self.bus.inner;
        let no_handler = || {
            Error::new(ErrorKind::NoHandler)
                .with_message_name(self.name.clone())
                .with_scope(self.scope)
        };
        let Some(node) = inner.node.as_ref().filter(|_| self.scope != Scope::Local) else {
            inner.counters.metrics.commands_unrouted.increment(1);
            return Err(no_handler());
        };
        let here = Here {
            host_id: &inner.identity.host_id,
            cluster: &inner.identity.cluster,
        };
        let routes = node.routes();
        let Some((peer, route)) = routes.commands.get(&*self.name).and_then(|route| {
            let peer = route.picker.pick(&route.peers, here, self.scope)?;
            Some((peer, route))
        }) else {
            inner.counters.metrics.commands_unrouted.increment(1);
            return Err(no_handler());
        };
        let peer = Arc::clone(peer);
        let timeout = self.options.timeout_or(inner.config.request_timeout);
        let id = node.next_request_id();
        let with_name = |e: Error| about(&peer, e.with_message_name(self.name.clone()));
        let headers = self.options.frame_headers(timeout);
        // Encoded once, straight into the frame, with the peer's limit: too large fails here
        // and nothing is sent.
        let bytes = peer
            .send_codec
            .encode_message_to_bytes(FrameKind::Command, id, &self.name, &headers, &self.cmd)
            .map_err(|e| with_name(e.into()))?;
        let metrics = CallMetrics::start(
            &inner.counters.metrics,
            &route.metrics,
            &self.name,
            self.scope,
        );
        let route = Reroute {
            node: Arc::clone(node),
            scope: self.scope,
        };
        Ok(Call::Remote(RemoteCall {
            metrics,
            fut: Box::pin(routed_call::<C>(self.name, route, peer, id, bytes, timeout)),
            _in_flight: guard,
        }))
    }
}

/// A request asked for a remote handler in the `Local` scope.
pub(super) fn remote_only_local(name: impl Into<Cow<'static, str>>) -> Error {
    Error::config("`remote_only` with `Scope::Local`: no handler is both remote and local")
        .with_message_name(name)
        .with_scope(Scope::Local)
}

fn handler_panicked(
    bus: &Bus,
    name: Cow<'static, str>,
    panic: &(dyn std::any::Any + Send),
) -> Error {
    let msg = panic_message(panic);
    tracing::error!(command = %name, panic = %msg, "command handler panicked");
    Counters::bump(&bus.inner.counters.command_handler_panics);
    Error::new(ErrorKind::HandlerFailed)
        .with_message_name(name)
        .with_handler_message(msg)
}

impl<C: Command> fmt::Debug for SendCommand<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendCommand")
            .field("command", &self.name)
            .field("scope", &self.scope)
            .field("remote_only", &self.remote_only)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The future of a [`SendCommand`]: resolves to the handler's reply or an [`Error`].
///
/// It borrows the [`Bus`]; to send from a spawned task, move a clone of the bus into the task.
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture<'a, C: Command> {
    state: State<'a, C>,
}

enum State<'a, C: Command> {
    Start(Option<SendCommand<'a, C>>),
    Local(LocalCall<'a, C::Reply>),
    Remote(RemoteCall<'a, C>),
    Done,
}

/// A started command: on this node, or sent to a peer.
enum Call<'a, C: Command> {
    Local(LocalCall<'a, C::Reply>),
    Remote(RemoteCall<'a, C>),
}

struct RemoteCall<'a, C: Command> {
    fut: BoxFuture<'static, Result<C::Reply, Error>>,
    /// In flight until dropped; its outcome and latency recorded once answered.
    metrics: CallMetrics,
    /// Keeps shutdown waiting until this call is over.
    _in_flight: InFlight<'a>,
}

struct LocalCall<'a, R> {
    /// Borrows the handler from the bus's registry.
    fut: BoxFuture<'a, Result<R, HandlerError>>,
    timeout: Option<Duration>,
    /// Made on the first `Pending`, `timeout` from then: a handler that finishes at once never
    /// reads the clock or touches the timer.
    sleep: Option<Pin<Box<Sleep>>>,
    name: Cow<'static, str>,
    bus: &'a Bus,
    /// In flight until dropped; its outcome and latency recorded once answered.
    metrics: CallMetrics,
    /// Keeps shutdown waiting until this call is over.
    _in_flight: InFlight<'a>,
}

// Nothing in the future is ever pinned in place: the handler's future and the timer are boxed,
// and the command and reply are only moved.
impl<C: Command> Unpin for ResponseFuture<'_, C> {}

impl<C: Command> Future for ResponseFuture<'_, C> {
    type Output = Result<C::Reply, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let State::Start(send) = &mut this.state {
            let Some(send) = send.take() else {
                this.state = State::Done;
                return Poll::Ready(Err(polled_after_completion()));
            };
            match send.start() {
                Ok(Call::Local(call)) => this.state = State::Local(call),
                Ok(Call::Remote(call)) => this.state = State::Remote(call),
                Err(e) => {
                    this.state = State::Done;
                    return Poll::Ready(Err(e));
                }
            }
        }
        let outcome = match &mut this.state {
            State::Local(call) => match poll_local(call, cx) {
                Poll::Ready(r) => r,
                Poll::Pending => return Poll::Pending,
            },
            State::Remote(call) => match call.fut.as_mut().poll(cx) {
                Poll::Ready(r) => r,
                Poll::Pending => return Poll::Pending,
            },
            State::Start(_) | State::Done => Err(polled_after_completion()),
        };
        // Drops the handler future and the in-flight guard now, not when the caller drops us.
        match std::mem::replace(&mut this.state, State::Done) {
            State::Local(call) => call.metrics.done(outcome.is_ok()),
            State::Remote(call) => call.metrics.done(outcome.is_ok()),
            State::Start(_) | State::Done => {}
        }
        Poll::Ready(outcome)
    }
}

fn polled_after_completion() -> Error {
    Error::new(ErrorKind::Closed).with_detail("response polled after completion")
}

fn poll_local<R>(call: &mut LocalCall<'_, R>, cx: &mut TaskContext<'_>) -> Poll<Result<R, Error>> {
    match catch_unwind(AssertUnwindSafe(|| call.fut.as_mut().poll(cx))) {
        Ok(Poll::Ready(Ok(reply))) => return Poll::Ready(Ok(reply)),
        Ok(Poll::Ready(Err(err))) => {
            return Poll::Ready(Err(Error::new(ErrorKind::HandlerFailed)
                .with_message_name(call.name.clone())
                .with_handler_message(err.message())))
        }
        Err(panic) => {
            return Poll::Ready(Err(handler_panicked(call.bus, call.name.clone(), &*panic)))
        }
        Ok(Poll::Pending) => {}
    }
    if let Some(timeout) = call.timeout {
        let sleep = call
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(
                Error::new(ErrorKind::Timeout).with_message_name(call.name.clone())
            ));
        }
    }
    Poll::Pending
}

impl<C: Command> fmt::Debug for ResponseFuture<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Start(_) => "not started",
            State::Local(_) => "local",
            State::Remote(_) => "remote",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("command", &C::NAME)
            .field("state", &state)
            .finish()
    }
}
