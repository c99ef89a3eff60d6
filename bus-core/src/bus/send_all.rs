//! [`SendAll`]: one command to every handler node in scope, replies as a stream.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures_core::Stream;
use futures_util::stream::FuturesUnordered;

use super::commands::remote_call;
use super::{Bus, InFlight};
use crate::context::Headers;
use crate::error::Error;
use crate::handler::BoxFuture;
use crate::id::NodeId;
use crate::message::Command;
use crate::node::{encode, frame_headers};
use crate::proto::routing::{Here, Picker};
use crate::scope::Scope;
use crate::wire::body::{decode_body, encode_body};
use crate::wire::{Frame, FrameKind, FrameName};

type Answer<R> = (NodeId, Result<R, Error>);

/// A command sent to every node in scope that handles it: a [`Stream`] of `(node, result)`,
/// one per handler node, that ends when every one has answered, failed or run out of time.
///
/// Made by [`Commands::send_all`](crate::Commands::send_all). Nothing is sent until it is first
/// polled; set options before. The command is encoded once; the local handler (if any) gets a
/// copy decoded from it.
///
/// # Cancel safety
///
/// Dropping the stream gives up on the answers still missing: their handlers are told with
/// `Cancel`, as for [`send`](crate::Commands::send).
#[must_use = "streams do nothing unless polled"]
pub struct SendAll<'a, C: Command> {
    state: AllState<'a, C>,
}

struct Start<'a, C> {
    bus: &'a Bus,
    scope: Scope,
    cmd: C,
    timeout: Option<Option<Duration>>,
    headers: Headers,
    correlation_id: Option<Arc<str>>,
}

enum AllState<'a, C: Command> {
    Start(Option<Start<'a, C>>),
    Running {
        answers: FuturesUnordered<BoxFuture<'a, Answer<C::Reply>>>,
        /// Keeps shutdown waiting until the answers are in.
        _in_flight: InFlight<'a>,
    },
    Done,
}

// The command is only moved, never pinned in place; the answers are boxed.
impl<C: Command> Unpin for SendAll<'_, C> {}

impl<'a, C: Command> SendAll<'a, C> {
    pub(crate) fn new(bus: &'a Bus, scope: Scope, cmd: C) -> Self {
        SendAll {
            state: AllState::Start(Some(Start {
                bus,
                scope,
                cmd,
                timeout: None,
                headers: Headers::new(),
                correlation_id: None,
            })),
        }
    }

    fn start_mut(&mut self) -> Option<&mut Start<'a, C>> {
        match &mut self.state {
            AllState::Start(Some(s)) => Some(s),
            _ => None,
        }
    }

    /// How long to wait for the answers (overrides the bus's
    /// [`request_timeout`](crate::BusBuilder::request_timeout)); a node that has not answered
    /// by then yields [`ErrorKind::Timeout`](crate::ErrorKind::Timeout). Has no effect once polled.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        if let Some(s) = self.start_mut() {
            s.timeout = Some(Some(timeout));
        }
        self
    }

    /// Attaches a header, readable by the handlers in [`Context::headers`](crate::Context::headers).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        if let Some(s) = self.start_mut() {
            s.headers.insert(name, value);
        }
        self
    }

    /// Attaches a correlation id.
    pub fn correlation_id(mut self, id: impl Into<Arc<str>>) -> Self {
        if let Some(s) = self.start_mut() {
            s.correlation_id = Some(id.into());
        }
        self
    }
}

impl<'a, C: Command> Start<'a, C> {
    fn start(self) -> Result<AllState<'a, C>, Error> {
        let bus = self.bus;
        let inner = &bus.inner;
        let guard = inner.enter();
        if bus.refuses_work() {
            return Err(Error::closed().with_message_name(C::NAME));
        }
        let timeout = self.timeout.unwrap_or(inner.config.request_timeout);
        let answers: FuturesUnordered<BoxFuture<'a, Answer<C::Reply>>> = FuturesUnordered::new();
        let body = encode_body(&self.cmd).map_err(|e| Error::from(e).with_message_name(C::NAME))?;
        if inner.commands.contains_key(C::NAME) {
            let me = inner.identity.node_id;
            let local =
                decode_body::<C>(&body).map_err(|e| Error::from(e).with_message_name(C::NAME));
            let send = bus.commands().local();
            let headers = self.headers.clone();
            let correlation_id = self.correlation_id.clone();
            answers.push(Box::pin(async move {
                let cmd = match local {
                    Ok(cmd) => cmd,
                    Err(e) => return (me, Err(e)),
                };
                let mut request = send.send(cmd);
                for (k, v) in headers.iter() {
                    request = request.header(k, v);
                }
                if let Some(id) = correlation_id {
                    request = request.correlation_id(id);
                }
                let request = match timeout {
                    Some(t) => request.timeout(t),
                    None => request.no_timeout(),
                };
                (me, request.await)
            }));
        }
        if let Some(node) = inner.node.as_ref().filter(|_| self.scope != Scope::Local) {
            let here = Here {
                host_id: &inner.identity.host_id,
                cluster: &inner.identity.cluster,
            };
            let routes = node.routes.load();
            let candidates = routes
                .commands
                .get(C::NAME)
                .map_or(&[][..], |r| r.peers.as_slice());
            for peer in Picker::all_in_scope(candidates, here, self.scope) {
                let peer = Arc::clone(peer);
                let id = node.next_request_id();
                let mut frame = Frame::new(FrameKind::Command, body.clone());
                frame.request_id = id;
                frame.name = Some(FrameName::inline(C::NAME));
                frame.headers =
                    frame_headers(&self.headers, self.correlation_id.as_deref(), timeout);
                let node_id = peer.node_id;
                match encode(&peer.send_codec, &frame) {
                    Ok(bytes) => answers.push(Box::pin(async move {
                        (node_id, remote_call::<C>(peer, id, bytes, timeout).await)
                    })),
                    Err(e) => {
                        let err = Error::from(e).with_message_name(C::NAME);
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

impl<C: Command> Stream for SendAll<'_, C> {
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

impl<C: Command> fmt::Debug for SendAll<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            AllState::Start(_) => "not started",
            AllState::Running { answers, .. } => {
                return f
                    .debug_struct("SendAll")
                    .field("command", &C::NAME)
                    .field("waiting", &answers.len())
                    .finish()
            }
            AllState::Done => "done",
        };
        f.debug_struct("SendAll")
            .field("command", &C::NAME)
            .field("state", &state)
            .finish()
    }
}
