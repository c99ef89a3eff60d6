//! Sending commands: [`Commands`], the [`SendCommand`] request builder and its
//! [`ResponseFuture`].

use std::fmt;
use std::future::{Future, IntoFuture};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::time::Sleep;

use super::{Bus, InFlight};
use crate::context::{Context, Deadline, Headers};
use crate::error::{Error, ErrorKind, HandlerError};
use crate::handler::{panic_message, BoxFuture};
use crate::message::Command;
use crate::scope::Scope;
use crate::stats::Counters;

/// Sends commands in a scope. Made by [`Bus::commands`]; the default scope is
/// [`Scope::Cluster`].
#[derive(Debug, Clone, Copy)]
pub struct Commands<'a> {
    bus: &'a Bus,
    scope: Scope,
}

impl<'a> Commands<'a> {
    pub(crate) fn new(bus: &'a Bus) -> Self {
        Commands {
            bus,
            scope: Scope::Cluster,
        }
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

    /// Sends `cmd` to exactly one handler in scope: the local one if there is one.
    ///
    /// Returns a request builder; `.await` it for the reply.
    pub fn send<C: Command>(self, cmd: C) -> SendCommand<'a, C> {
        SendCommand {
            bus: self.bus,
            scope: self.scope,
            cmd,
            timeout: Timeout::Default,
            headers: Headers::new(),
            correlation_id: None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Timeout {
    Default,
    Set(Option<Duration>),
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
    cmd: C,
    timeout: Timeout,
    headers: Headers,
    correlation_id: Option<Arc<str>>,
}

impl<C: Command> SendCommand<'_, C> {
    /// Fails with [`ErrorKind::Timeout`] if no reply came within `timeout` (overrides the bus's
    /// [`request_timeout`](crate::BusBuilder::request_timeout)).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Timeout::Set(Some(timeout));
        self
    }

    /// Waits for the reply however long it takes.
    pub fn no_timeout(mut self) -> Self {
        self.timeout = Timeout::Set(None);
        self
    }

    /// Attaches a header, readable by the handler in [`Context::headers`].
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Attaches an idempotency key: send the same key when retrying after a `Timeout` or
    /// `PeerLost`, so the handler can recognise the retry.
    pub fn idempotency_key(self, key: impl Into<String>) -> Self {
        self.header(Headers::IDEMPOTENCY_KEY, key)
    }

    /// Attaches a correlation id.
    pub fn correlation_id(mut self, id: impl Into<Arc<str>>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }
}

impl<'a, C: Command> IntoFuture for SendCommand<'a, C> {
    type Output = Result<C::Reply, Error>;
    type IntoFuture = ResponseFuture<'a, C::Reply>;

    fn into_future(self) -> ResponseFuture<'a, C::Reply> {
        let inner = &self.bus.inner;
        let guard = inner.enter();
        if inner.is_closed() {
            return ResponseFuture::done(Err(Error::closed().with_message_name(C::NAME)));
        }
        let Some(slot) = inner.commands.get(C::NAME) else {
            return ResponseFuture::done(Err(Error::new(ErrorKind::NoHandler)
                .with_message_name(C::NAME)
                .with_scope(self.scope)));
        };
        let Some(handler) = slot.get::<C>() else {
            return ResponseFuture::done(Err(super::name_clash(
                C::NAME,
                slot.type_name,
                std::any::type_name::<C>(),
            )));
        };
        let timeout = match self.timeout {
            Timeout::Default => inner.config.request_timeout,
            Timeout::Set(t) => t,
        };
        let ctx = Context {
            message_id: crate::id::next_message_id(),
            correlation_id: self.correlation_id,
            sender: inner.identity.node_id,
            scope: self.scope,
            deadline: Deadline::after(timeout),
            headers: self.headers,
            cancel: None,
            bus: self.bus.clone(),
        };
        let fut = handler.handle(self.cmd, ctx);
        ResponseFuture {
            state: State::Local(LocalCall {
                fut,
                timeout,
                sleep: None,
                name: C::NAME,
                bus: self.bus,
                _in_flight: guard,
            }),
        }
    }
}

impl<C: Command> fmt::Debug for SendCommand<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendCommand")
            .field("command", &C::NAME)
            .field("scope", &self.scope)
            .field("timeout", &self.timeout)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

/// The future of a [`SendCommand`]: resolves to the handler's reply or an [`Error`].
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture<'a, R> {
    state: State<'a, R>,
}

enum State<'a, R> {
    Done(Option<Result<R, Error>>),
    Local(LocalCall<'a, R>),
}

struct LocalCall<'a, R> {
    /// Borrows the handler from the bus's registry.
    fut: BoxFuture<'a, Result<R, HandlerError>>,
    timeout: Option<Duration>,
    /// Made on the first `Pending`, `timeout` from then: a handler that finishes at once never
    /// reads the clock or touches the timer.
    sleep: Option<Pin<Box<Sleep>>>,
    name: &'static str,
    bus: &'a Bus,
    /// Keeps shutdown waiting until this call is over.
    _in_flight: InFlight<'a>,
}

impl<R> ResponseFuture<'_, R> {
    fn done(result: Result<R, Error>) -> Self {
        ResponseFuture {
            state: State::Done(Some(result)),
        }
    }
}

// Nothing in the future is ever pinned in place: the handler's future is boxed, and the reply
// is only moved out.
impl<R> Unpin for ResponseFuture<'_, R> {}

impl<R> Future for ResponseFuture<'_, R> {
    type Output = Result<R, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let outcome = match &mut this.state {
            State::Done(result) => {
                return Poll::Ready(result.take().unwrap_or_else(|| {
                    Err(Error::new(ErrorKind::Closed)
                        .with_detail("response polled after completion"))
                }))
            }
            State::Local(call) => match poll_local(call, cx) {
                Poll::Ready(r) => r,
                Poll::Pending => return Poll::Pending,
            },
        };
        // Drops the handler future and the in-flight guard now, not when the caller drops us.
        this.state = State::Done(None);
        Poll::Ready(outcome)
    }
}

fn poll_local<R>(call: &mut LocalCall<'_, R>, cx: &mut TaskContext<'_>) -> Poll<Result<R, Error>> {
    match catch_unwind(AssertUnwindSafe(|| call.fut.as_mut().poll(cx))) {
        Ok(Poll::Ready(Ok(reply))) => return Poll::Ready(Ok(reply)),
        Ok(Poll::Ready(Err(err))) => {
            return Poll::Ready(Err(Error::new(ErrorKind::HandlerFailed)
                .with_message_name(call.name)
                .with_handler_message(err.message())))
        }
        Err(panic) => {
            let msg = panic_message(&*panic);
            tracing::error!(command = call.name, panic = %msg, "command handler panicked");
            Counters::bump(&call.bus.inner.counters.command_handler_panics);
            return Poll::Ready(Err(Error::new(ErrorKind::HandlerFailed)
                .with_message_name(call.name)
                .with_handler_message(msg)));
        }
        Ok(Poll::Pending) => {}
    }
    if let Some(timeout) = call.timeout {
        let sleep = call
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(
                Error::new(ErrorKind::Timeout).with_message_name(call.name)
            ));
        }
    }
    Poll::Pending
}

impl<R> fmt::Debug for ResponseFuture<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Done(_) => "done",
            State::Local(_) => "local",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
