//! Handler traits, and the erased forms the bus stores.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;

use crate::context::Context;
use crate::error::HandlerError;
use crate::message::{Command, Event};

/// A boxed, `Send` future.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Handles one command type: exactly one handler per command name answers.
///
/// Implement it with `#[async_trait]` (re-exported in the prelude) for a handler with state and
/// injected services; a plain async closure registered with
/// [`BusBuilder::command_handler`](crate::BusBuilder::command_handler) does for the rest.
///
/// # Examples
///
/// ```
/// use async_trait::async_trait;
/// use meshbus_core::{Bus, Command, CommandHandler, Context, HandlerError};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Add(u32, u32);
/// impl Command for Add { const NAME: &'static str = "calc.add"; type Reply = u32; }
///
/// struct Adder;
///
/// #[async_trait]
/// impl CommandHandler<Add> for Adder {
///     async fn handle(&self, cmd: Add, _ctx: Context) -> Result<u32, HandlerError> {
///         cmd.0.checked_add(cmd.1).ok_or_else(|| HandlerError::msg("overflow"))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), meshbus_core::Error> {
/// let bus = Bus::builder().command_handler_with(|_| Ok(Adder)).start().await?;
/// assert_eq!(bus.commands().local().send(Add(2, 3)).await?, 5);
/// // A handler is a plain value too: call it directly in a unit test.
/// let sum = Adder.handle(Add(1, 1), Context::local(&bus)).await;
/// assert_eq!(sum.ok(), Some(2));
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait CommandHandler<C: Command>: Send + Sync + 'static {
    /// Handles one command and returns its reply.
    ///
    /// An `Err` reaches the caller as [`ErrorKind::HandlerFailed`](crate::ErrorKind::HandlerFailed)
    /// with the error's message; so does a panic, and the bus keeps serving.
    async fn handle(&self, cmd: C, ctx: Context) -> Result<C::Reply, HandlerError>;
}

/// Handles one event type: every subscriber in scope gets each event.
///
/// The event is shared between the subscribers of one process, hence `&E`.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use async_trait::async_trait;
/// use meshbus_core::{Bus, Context, Event, EventHandler, HandlerError};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Tick(u64);
/// impl Event for Tick { const NAME: &'static str = "clock.tick"; }
///
/// #[derive(Default)]
/// struct LastTick(AtomicU64);
///
/// #[async_trait]
/// impl EventHandler<Tick> for LastTick {
///     async fn handle(&self, tick: &Tick, _ctx: Context) -> Result<(), HandlerError> {
///         self.0.store(tick.0, Ordering::Relaxed);
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), meshbus_core::Error> {
/// let bus = Bus::builder().start().await?;
/// let last = LastTick::default();
/// last.handle(&Tick(9), Context::local(&bus)).await.ok();
/// assert_eq!(last.0.load(Ordering::Relaxed), 9);
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait EventHandler<E: Event>: Send + Sync + 'static {
    /// Handles one event. An `Err` or a panic is logged and counted in
    /// [`BusStats`](crate::BusStats); the subscription goes on with the next event.
    async fn handle(&self, event: &E, ctx: Context) -> Result<(), HandlerError>;
}

/// A closure registered as a command handler.
pub(crate) struct CommandFnHandler<F>(pub(crate) F);

#[async_trait]
impl<C, F, Fut> CommandHandler<C> for CommandFnHandler<F>
where
    C: Command,
    F: Fn(C, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<C::Reply, HandlerError>> + Send + 'static,
{
    async fn handle(&self, cmd: C, ctx: Context) -> Result<C::Reply, HandlerError> {
        (self.0)(cmd, ctx).await
    }
}

/// What the bus stores for a subscriber: trait handlers get `&E`, closures the `Arc<E>`.
pub(crate) trait ErasedEventHandler<E: Event>: Send + Sync + 'static {
    fn call(&self, event: Arc<E>, ctx: Context) -> BoxFuture<'_, Result<(), HandlerError>>;
}

/// A trait handler registered as a subscriber.
pub(crate) struct EventTraitHandler<H>(pub(crate) H);

impl<E: Event, H: EventHandler<E>> ErasedEventHandler<E> for EventTraitHandler<H> {
    fn call(&self, event: Arc<E>, ctx: Context) -> BoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(async move { self.0.handle(&event, ctx).await })
    }
}

/// A closure registered as a subscriber.
pub(crate) struct EventFnHandler<F>(pub(crate) F);

impl<E, F, Fut> ErasedEventHandler<E> for EventFnHandler<F>
where
    E: Event,
    F: Fn(Arc<E>, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn call(&self, event: Arc<E>, ctx: Context) -> BoxFuture<'_, Result<(), HandlerError>> {
        // The closure is called inside the future, so that a panic in its synchronous part is
        // caught where the future's panics are.
        Box::pin(async move { (self.0)(event, ctx).await })
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        format!("handler panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("handler panicked: {s}")
    } else {
        "handler panicked".to_owned()
    }
}
