//! [`SendAll`]: one command to every handler node in scope, replies as a stream
//! ([`SendAllStream`]) or all at once.

use std::borrow::Cow;
use std::fmt;
use std::future::IntoFuture;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures_core::Stream;
use futures_util::stream::{Collect, FuturesUnordered};
use futures_util::StreamExt;

use super::commands::remote_only_local;
use super::options::{request_setters, RequestOptions};
use super::outbound::{about, remote_call};
use super::{Bus, InFlight};
use crate::error::Error;
use crate::handler::BoxFuture;
use crate::id::NodeId;
use crate::message::Command;
use crate::node::encode;
use crate::proto::routing::{Here, Picker};
use crate::scope::Scope;
use crate::wire::body::{decode_body, encode_body};
use crate::wire::{Frame, FrameKind, FrameName};

type Answer<R> = (NodeId, Result<R, Error>);

/// A command to send to every node in scope that handles it: set options, then `.await` it
/// for every node's answer, or call [`stream`](Self::stream) to take them as they come.
///
/// Made by [`Commands::send_all`](crate::Commands::send_all). It has the options of
/// [`send`](crate::Commands::send) (see [`RequestOptions`]); they can only be set before it
/// starts, since a started `send_all` is a [`SendAllStream`], which has no setters. The command
/// is encoded once; the local handler (if any) gets a copy decoded from it.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), meshbus_core::Error> {
/// # use meshbus_core::{Bus, Command, Context, HandlerError};
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # struct Name;
/// # impl Command for Name { const NAME: &'static str = "doc.name"; type Reply = String; }
/// async fn name(_: Name, _ctx: Context) -> Result<String, HandlerError> {
///     Ok("me".to_owned())
/// }
/// use std::time::Duration;
/// use futures_util::StreamExt;
///
/// let bus = Bus::builder()
///     .command_handler(name)
///     .start()
///     .await?;
/// // Every answer at once...
/// let answers = bus.commands().send_all(Name).timeout(Duration::from_secs(1)).await;
/// assert_eq!(answers.len(), 1);
/// // ...or each as it comes.
/// let mut answers = bus.commands().send_all(Name).stream();
/// while let Some((node, reply)) = answers.next().await {
///     assert_eq!((node, reply?), (bus.node_id(), "me".to_owned()));
/// }
/// # Ok(()) }
/// ```
///
/// Once started there is nothing left to configure:
///
/// ```compile_fail,E0599
/// # fn f(bus: &meshbus_core::Bus) {
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # struct Name;
/// # impl meshbus_core::Command for Name { const NAME: &'static str = "doc.name"; type Reply = String; }
/// let started = bus.commands().send_all(Name).stream();
/// let _ = started.timeout(std::time::Duration::from_secs(1)); // no such method
/// # }
/// ```
#[must_use = "a send_all does nothing unless awaited or streamed"]
pub struct SendAll<'a, C: Command> {
    bus: &'a Bus,
    scope: Scope,
    remote_only: bool,
    /// `C::NAME`, or the name given to [`Commands::send_all_named`](crate::Commands::send_all_named).
    name: Cow<'static, str>,
    cmd: C,
    options: RequestOptions,
}

impl<'a, C: Command> SendAll<'a, C> {
    pub(crate) fn new(
        bus: &'a Bus,
        scope: Scope,
        remote_only: bool,
        name: Cow<'static, str>,
        cmd: C,
    ) -> Self {
        SendAll {
            bus,
            scope,
            remote_only,
            name,
            cmd,
            options: RequestOptions::new(),
        }
    }

    request_setters!(command);

    /// Starts it: a [`Stream`] of `(node, result)`, one per handler node, that ends when every
    /// one has answered, failed or run out of time. Nothing is sent until it is first polled.
    pub fn stream(self) -> SendAllStream<'a, C> {
        SendAllStream {
            state: AllState::Start(Some(self)),
        }
    }
}

impl<'a, C: Command> IntoFuture for SendAll<'a, C> {
    type Output = Vec<Answer<C::Reply>>;
    type IntoFuture = Collect<SendAllStream<'a, C>, Vec<Answer<C::Reply>>>;

    /// Every node's answer, in the order they came.
    fn into_future(self) -> Self::IntoFuture {
        self.stream().collect()
    }
}

/// A started [`SendAll`]: a [`Stream`] of `(node, result)`, one per handler node, that ends when
/// every one has answered, failed or run out of time.
///
/// # Cancel safety
///
/// Dropping the stream gives up on the answers still missing: their handlers are told with
/// `Cancel`, as for [`send`](crate::Commands::send).
#[must_use = "streams do nothing unless polled"]
pub struct SendAllStream<'a, C: Command> {
    state: AllState<'a, C>,
}

enum AllState<'a, C: Command> {
    Start(Option<SendAll<'a, C>>),
    Running {
        answers: FuturesUnordered<BoxFuture<'a, Answer<C::Reply>>>,
        /// Keeps shutdown waiting until the answers are in.
        _in_flight: InFlight<'a>,
    },
    Done,
}

// The command is only moved, never pinned in place; the answers are boxed.
impl<C: Command> Unpin for SendAllStream<'_, C> {}

impl<'a, C: Command> SendAll<'a, C> {
    fn start(self) -> Result<AllState<'a, C>, Error> {
        let bus = self.bus;
        let inner = &bus.inner;
        let guard = inner.enter();
        if bus.refuses_work() {
            return Err(Error::closed().with_message_name(self.name));
        }
        if self.remote_only && self.scope == Scope::Local {
            return Err(remote_only_local(self.name));
        }
        let timeout = self.options.timeout_or(inner.config.request_timeout);
        let answers: FuturesUnordered<BoxFuture<'a, Answer<C::Reply>>> = FuturesUnordered::new();
        let name = self.name;
        let body =
            encode_body(&self.cmd).map_err(|e| Error::from(e).with_message_name(name.clone()))?;
        if !self.remote_only && inner.commands.contains_key(&*name) {
            let me = inner.identity.node_id;
            let local =
                decode_body::<C>(&body).map_err(|e| Error::from(e).with_message_name(name.clone()));
            let send = bus.commands().local();
            let options = match timeout {
                Some(t) => self.options.clone().timeout(t),
                None => self.options.clone().no_timeout(),
            };
            let local_name = name.clone();
            answers.push(Box::pin(async move {
                let cmd = match local {
                    Ok(cmd) => cmd,
                    Err(e) => return (me, Err(e)),
                };
                (me, send.send_named(local_name, cmd).options(options).await)
            }));
        }
        if let Some(node) = inner.node.as_ref().filter(|_| self.scope != Scope::Local) {
            let here = Here {
                host_id: &inner.identity.host_id,
                cluster: &inner.identity.cluster,
            };
            let routes = node.routes();
            let candidates = routes
                .commands
                .get(&*name)
                .map_or(&[][..], |r| r.peers.as_slice());
            for peer in Picker::all_in_scope(candidates, here, self.scope) {
                let peer = Arc::clone(peer);
                let id = node.next_request_id();
                let mut frame = Frame::new(FrameKind::Command, body.clone());
                frame.request_id = id;
                frame.name = Some(FrameName::inline(&*name));
                frame.headers = self.options.frame_headers(timeout);
                let node_id = peer.node_id;
                match encode(&peer.send_codec, &frame) {
                    Ok(bytes) => {
                        let name = name.clone();
                        answers.push(Box::pin(async move {
                            let answer = remote_call::<C>(&name, peer, id, bytes, timeout).await;
                            (node_id, answer)
                        }));
                    }
                    Err(e) => {
                        let err = about(&peer, Error::from(e).with_message_name(name.clone()));
                        answers.push(Box::pin(async move { (node_id, Err(err)) }));
                    }
                }
            }
        }
        Ok(AllState::Running {
            answers,
            _in_flight: guard,
        })
    }
}

impl<C: Command> Stream for SendAllStream<'_, C> {
    type Item = (NodeId, Result<C::Reply, Error>);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let AllState::Start(start) = &mut this.state {
            let Some(start) = start.take() else {
                this.state = AllState::Done;
                return Poll::Ready(None);
            };
            let me = start.bus.node_id();
            match start.start() {
                Ok(state) => this.state = state,
                Err(e) => {
                    this.state = AllState::Done;
                    return Poll::Ready(Some((me, Err(e))));
                }
            }
        }
        match &mut this.state {
            AllState::Running { answers, .. } => {
                let next = std::task::ready!(Pin::new(answers).poll_next(cx));
                if next.is_none() {
                    this.state = AllState::Done;
                }
                Poll::Ready(next)
            }
            AllState::Start(_) | AllState::Done => Poll::Ready(None),
        }
    }
}

impl<C: Command> fmt::Debug for SendAllStream<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            AllState::Start(_) => "not started",
            AllState::Running { answers, .. } => {
                return f
                    .debug_struct("SendAllStream")
                    .field("command", &C::NAME)
                    .field("waiting", &answers.len())
                    .finish()
            }
            AllState::Done => "done",
        };
        f.debug_struct("SendAllStream")
            .field("command", &C::NAME)
            .field("state", &state)
            .finish()
    }
}

impl<C: Command> fmt::Debug for SendAll<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendAll")
            .field("command", &self.name)
            .field("scope", &self.scope)
            .field("remote_only", &self.remote_only)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}
