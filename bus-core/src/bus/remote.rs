//! The bus's side of a command that crosses the network: running a command that arrived
//! encoded from a peer, and reading the reply that comes back.
//!
//! Every registered command handler gets a [`RemoteCommand`] entry beside its typed one. The
//! bus's inbound dispatch (`inbound.rs`) hands it the body of a peer's `Command` frame; it
//! answers with the body of a `Reply` frame, or a [`ReplyError`].

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;

use crate::context::Context;
use crate::error::{Error, ErrorKind};
#[cfg(test)]
use crate::handler::BoxFuture;
use crate::handler::{panic_message, CommandHandler};
use crate::node::dispatch::{Answering, CommandBody, ReplyTo};

use super::InFlightOwned;
use crate::message::Command;
use crate::wire::body::{decode_body, encode_body};
use crate::wire::control::ReplyError;

/// A command handler erased down to bytes: decode, run, encode, answer.
pub(crate) trait RemoteCommand: Send + Sync {
    /// Runs the command encoded in `body` and queues its answer on `reply`, holding `guard`
    /// until the answer is queued. A body that does not decode as the command, a handler's
    /// `Err` or panic, and a reply that does not encode all become a [`ReplyError`].
    ///
    /// A large body is made and decoded on a blocking thread, so that the CPU work of a big
    /// body never holds an executor thread.
    fn answer(
        &self,
        body: CommandBody,
        ctx: Context,
        reply: ReplyTo,
        guard: InFlightOwned,
    ) -> Answering;

    /// Runs the command encoded in `body` and gives back what its caller would read.
    #[cfg(test)]
    fn call(&self, body: Bytes, ctx: Context) -> BoxFuture<'static, Result<Bytes, ReplyError>>;
}

/// The [`RemoteCommand`] of one command type.
pub(crate) struct TypedRemoteCommand<C: Command> {
    /// The name it is registered under: `C::NAME` or a run-time name.
    pub(crate) name: Arc<str>,
    pub(crate) handler: Arc<dyn CommandHandler<C>>,
    /// The handler's series of the command, per scope.
    pub(crate) metrics: Arc<crate::metrics::CommandMetrics>,
    pub(crate) node: Arc<crate::metrics::NodeMetrics>,
}

impl<C: Command> RemoteCommand for TypedRemoteCommand<C> {
    fn answer(
        &self,
        body: CommandBody,
        ctx: Context,
        reply: ReplyTo,
        guard: InFlightOwned,
    ) -> Answering {
        let handler = Arc::clone(&self.handler);
        let name = Arc::clone(&self.name);
        let (metrics, node) = (Arc::clone(&self.metrics), Arc::clone(&self.node));
        let (scope, start) = (ctx.scope, std::time::Instant::now());
        Box::pin(async move {
            let outcome = run(&name, handler, body, ctx).await;
            metrics
                .handler(&node, &name, scope)
                .done(outcome.is_ok(), start);
            super::inbound::answer(reply, outcome).await;
            drop(guard);
        })
    }

    #[cfg(test)]
    fn call(&self, body: Bytes, ctx: Context) -> BoxFuture<'static, Result<Bytes, ReplyError>> {
        let handler = Arc::clone(&self.handler);
        let name = Arc::clone(&self.name);
        Box::pin(async move { run(&name, handler, CommandBody::Bytes(body), ctx).await })
    }
}

/// Decodes a peer's command; a large body is made and decoded on a blocking thread.
async fn decode<C: Command>(name: &Arc<str>, body: CommandBody) -> Result<C, ReplyError> {
    let job = match body {
        CommandBody::Bytes(body) => return decode_body(&body).map_err(|e| undecodable(name, e)),
        CommandBody::Large(job) => job,
    };
    let owned = Arc::clone(name);
    let decoded = tokio::task::spawn_blocking(move || -> Result<C, ReplyError> {
        let body = job().map_err(|e| {
            ReplyError::new(
                ErrorKind::Decode,
                format!("the body of `{owned}` did not decompress: {e}"),
            )
        })?;
        decode_body(&body).map_err(|e| undecodable(&owned, e))
    })
    .await;
    match decoded {
        Ok(cmd) => cmd,
        // A `Deserialize` impl panicked, or the runtime is shutting down.
        Err(e) => Err(ReplyError::new(
            ErrorKind::HandlerFailed,
            format!("decoding `{name}` failed: {e}"),
        )),
    }
}

fn undecodable(name: &str, e: impl std::fmt::Display) -> ReplyError {
    ReplyError::new(ErrorKind::Decode, format!("`{name}` did not decode: {e}"))
}

/// Decodes a peer's command, runs the handler on it and encodes its reply. The whole of it is
/// caught, not only the handler: a user's `Deserialize` or `Serialize` may panic too, and the
/// runtime polls this future on a connection's reader. A panic becomes a `HandlerFailed`
/// reply.
async fn run<C: Command>(
    name: &Arc<str>,
    handler: Arc<dyn CommandHandler<C>>,
    body: CommandBody,
    ctx: Context,
) -> Result<Bytes, ReplyError> {
    // The handler is called inside the caught future, so a panic before its own future
    // exists is caught too.
    let outcome = AssertUnwindSafe(async move {
        let cmd = decode::<C>(name, body).await?;
        let reply = handler
            .handle(cmd, ctx)
            .await
            .map_err(|err| ReplyError::new(ErrorKind::HandlerFailed, err.message()))?;
        encode_body(&reply).map_err(|e| {
            ReplyError::new(
                ErrorKind::Decode,
                format!("the reply to `{name}` did not encode: {e}"),
            )
        })
    })
    .catch_unwind()
    .await;
    outcome.unwrap_or_else(|panic| {
        let msg = panic_message(&*panic);
        tracing::error!(command = %name, panic = %msg, "a peer's command panicked");
        Err(ReplyError::new(ErrorKind::HandlerFailed, msg))
    })
}

/// The caller's view of what came back for a command sent to a peer.
pub(crate) fn read_reply<C: Command>(
    name: &str,
    outcome: Result<Bytes, ReplyError>,
) -> Result<C::Reply, Error> {
    match outcome {
        Ok(body) => decode_body(&body).map_err(|e| {
            Error::new(ErrorKind::Decode)
                .with_message_name(name.to_owned())
                .with_detail(format!("the reply did not decode: {e}"))
        }),
        Err(remote) => {
            let kind = remote.kind();
            let err = Error::new(kind).with_message_name(name.to_owned());
            Err(if kind == ErrorKind::HandlerFailed {
                err.with_handler_message(remote.message)
            } else if remote.message.is_empty() {
                err
            } else {
                err.with_detail(remote.message)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Bus, HandlerError};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct Divide {
        a: u32,
        b: u32,
    }
    impl Command for Divide {
        const NAME: &'static str = "test.divide";
        type Reply = u32;
    }

    async fn bus() -> Bus {
        Bus::builder()
            .command_handler(|cmd: Divide, _ctx| async move {
                if cmd.b == 7 {
                    panic!("seven");
                }
                cmd.a
                    .checked_div(cmd.b)
                    .ok_or_else(|| HandlerError::msg("division by zero"))
            })
            .start()
            .await
            .unwrap()
    }

    /// What a peer's command would get from `bus`, as the caller reads it.
    async fn remote_call(bus: &Bus, body: Bytes) -> Result<u32, Error> {
        let slot = bus.inner.commands.get(Divide::NAME).unwrap();
        let outcome = slot.remote.call(body, Context::local(bus)).await;
        read_reply::<Divide>(Divide::NAME, outcome)
    }

    #[tokio::test]
    async fn an_encoded_command_runs_and_its_reply_decodes() {
        let bus = bus().await;
        let body = encode_body(&Divide { a: 84, b: 2 }).unwrap();
        assert_eq!(remote_call(&bus, body).await.unwrap(), 42);
    }

    #[tokio::test]
    async fn handler_errors_and_panics_travel_back_with_their_message() {
        let bus = bus().await;
        let err = remote_call(&bus, encode_body(&Divide { a: 1, b: 0 }).unwrap())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::HandlerFailed);
        assert_eq!(err.handler_message(), Some("division by zero"));
        let err = remote_call(&bus, encode_body(&Divide { a: 1, b: 7 }).unwrap())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::HandlerFailed);
        assert!(err.handler_message().unwrap().contains("seven"));
        // The bus still serves.
        let ok = remote_call(&bus, encode_body(&Divide { a: 9, b: 3 }).unwrap()).await;
        assert_eq!(ok.unwrap(), 3);
    }

    #[tokio::test]
    async fn a_body_that_is_not_the_command_is_a_decode_error() {
        let bus = bus().await;
        for garbage in [
            Bytes::from_static(b"\xff\x00garbage"),
            Bytes::new(),
            encode_body(&"a string").unwrap(),
        ] {
            let err = remote_call(&bus, garbage).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Decode);
            assert_eq!(err.message_name(), Some("test.divide"));
        }
    }

    #[test]
    fn a_reply_that_does_not_decode_is_a_decode_error() {
        let err = read_reply::<Divide>(Divide::NAME, Ok(Bytes::from_static(b"\xc1"))).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode);
        let err = read_reply::<Divide>(
            Divide::NAME,
            Err(ReplyError::new(ErrorKind::Overloaded, "busy")),
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Overloaded);
        assert_eq!(err.detail(), Some("busy"));
    }
}
