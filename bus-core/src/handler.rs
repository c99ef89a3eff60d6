//! Handler traits, and the erased forms the bus stores.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;

use crate::context::Context;
use crate::error::{Error, HandlerError};
use crate::message::{Command, Event};
use crate::services::Services;
use crate::subscription::SubscriptionOptions;

/// A boxed, `Send` future.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Handles one command type: exactly one handler per command name answers.
///
/// Implement it with `#[async_trait]` (re-exported in the prelude) for a handler with state and
/// injected services; a plain async fn registered with
/// [`BusBuilder::command_handler`](crate::BusBuilder::command_handler) does for the rest. Its
/// error type is `HandlerError`, which `?` converts any `std::error::Error` into.
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
/// let bus = Bus::builder().command_handler(Adder).start().await?;
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
/// The event is shared between the subscribers of one process, so a handler gets it as an
/// `Arc<E>`, as a closure handler and a [`Subscription`](crate::Subscription) do: it can keep
/// it or move it into a task without a copy.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
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
///     async fn handle(&self, tick: Arc<Tick>, _ctx: Context) -> Result<(), HandlerError> {
///         self.0.store(tick.0, Ordering::Relaxed);
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), meshbus_core::Error> {
/// let bus = Bus::builder().start().await?;
/// let last = LastTick::default();
/// last.handle(Arc::new(Tick(9)), Context::local(&bus)).await.ok();
/// assert_eq!(last.0.load(Ordering::Relaxed), 9);
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait EventHandler<E: Event>: Send + Sync + 'static {
    /// Handles one event. An `Err` or a panic is logged and counted in
    /// [`BusStats`](crate::BusStats); the subscription goes on with the next event.
    async fn handle(&self, event: Arc<E>, ctx: Context) -> Result<(), HandlerError>;
}

/// What a handler returns, with the error type fixed: `HandlerResult::Ok(x)` ends an async
/// block whose error type nothing else names (as `anyhow::Ok` does), so no turbofish is needed.
///
/// A handler may return any `Result<R, E>` with `E: Into<HandlerError>`; an async fn names its
/// error type in its signature, but the async block a capturing closure returns cannot, and
/// `Ok(x)` alone leaves `E` unknown.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use meshbus_core::{Bus, Command, Context, HandlerResult};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Next;
/// # impl Command for Next { const NAME: &'static str = "next"; type Reply = u32; }
///
/// let counter = Arc::new(AtomicU32::new(0));
/// let _builder = Bus::builder().command_handler(move |_: Next, _ctx: Context| {
///     let counter = Arc::clone(&counter);
///     async move { HandlerResult::Ok(counter.fetch_add(1, Ordering::Relaxed)) }
/// });
/// ```
pub type HandlerResult<T = ()> = Result<T, HandlerError>;

/// What [`BusBuilder::command_handler`](crate::BusBuilder::command_handler) takes: a handler of
/// command `C`, in one of three shapes.
///
/// - an async fn or closure `(C, Context) -> Result<C::Reply, E>`, for any
///   `E: Into<HandlerError>` (`HandlerError`, the bus's own [`Error`](crate::Error), or any
///   `std::error::Error`);
/// - a value implementing [`CommandHandler<C>`];
/// - a factory that builds one of the above from the [`Services`] inside
///   [`start`](crate::BusBuilder::start): [`from_services`].
///
/// `M` only tells the three apart; it is inferred. A function of the wrong shape is refused
/// with a message that says which shapes fit:
///
/// ```compile_fail,E0277
/// # use meshbus_core::{Bus, Command, Context, HandlerError};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Ping;
/// # impl Command for Ping { const NAME: &'static str = "ping"; type Reply = String; }
/// // The reply of `Ping` is a `String`: "`fn(Ping, Context) -> .. {ping}` is not a handler of
/// // command `Ping`".
/// async fn ping(_: Ping, _ctx: Context) -> Result<u32, HandlerError> {
///     Ok(1)
/// }
///
/// let _builder = Bus::builder().command_handler::<Ping, _, _>(ping);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a handler of command `{C}`",
    label = "not a handler of `{C}`",
    note = "a command handler is an async fn or closure `(C, Context) -> Result<C::Reply, E>` with `E: Into<HandlerError>`, a value implementing `CommandHandler<C>`, or `from_services(|services| ..)` building one",
    note = "a closure's arguments need their types: `|cmd: {C}, ctx: Context|`"
)]
pub trait IntoCommandHandler<C: Command, M>: Send + 'static {
    /// Builds the handler; factories run here, inside `start`.
    #[doc(hidden)]
    fn build(self, services: &Services) -> Result<Arc<dyn CommandHandler<C>>, Error>;
}

/// What [`BusBuilder::event_handler`](crate::BusBuilder::event_handler) takes: a subscriber of
/// event `E`, in the shapes of [`IntoCommandHandler`] (an async fn or closure
/// `(Arc<E>, Context) -> Result<(), E2>`, a value implementing [`EventHandler<E>`], or
/// [`from_services`]), optionally with its [`SubscriptionOptions`] attached by
/// [`EventHandlerExt::with_options`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a subscriber of event `{E}`",
    label = "not a subscriber of `{E}`",
    note = "an event handler is an async fn or closure `(Arc<E>, Context) -> Result<(), E2>` with `E2: Into<HandlerError>`, a value implementing `EventHandler<E>`, or `from_services(|services| ..)` building one",
    note = "a closure's arguments need their types: `|event: Arc<{E}>, ctx: Context|`"
)]
pub trait IntoEventHandler<E: Event, M>: Send + 'static {
    /// Builds the subscriber and says how its subscription queues and runs events; factories
    /// run here, inside `start`.
    #[doc(hidden)]
    fn build(self, services: &Services) -> Result<Subscriber<E>, Error>;
}

/// A built subscriber and its options.
pub(crate) type Subscriber<E> = (Arc<dyn EventHandler<E>>, SubscriptionOptions);

/// Tells the shapes of [`IntoCommandHandler`] and [`IntoEventHandler`] apart, so that their
/// impls do not overlap. Never named by users.
pub mod marker {
    use std::marker::PhantomData;

    /// An async fn or closure returning `Fut`, whose error is `E`.
    #[allow(missing_debug_implementations)]
    pub struct AsyncFn<Fut, E>(PhantomData<fn() -> (Fut, E)>);
    /// A value implementing the handler trait.
    #[allow(missing_debug_implementations)]
    pub struct Value;
    /// A factory building `H`, itself a handler of shape `M`.
    #[allow(missing_debug_implementations)]
    pub struct Factory<H, M>(PhantomData<fn() -> (H, M)>);
    /// A subscriber of shape `M` with its options.
    #[allow(missing_debug_implementations)]
    pub struct WithOptions<M>(PhantomData<fn() -> M>);
}

/// A handler factory: `f` runs inside [`start`](crate::BusBuilder::start) with the registered
/// [`Services`], and the first failing factory makes `start` fail.
///
/// ```
/// use std::sync::Arc;
/// use meshbus_core::{async_trait, from_services, Bus, Command, CommandHandler, Context, HandlerError};
/// use serde::{Deserialize, Serialize};
///
/// struct Greeting(String);
///
/// #[derive(Serialize, Deserialize)]
/// struct Greet(String);
/// impl Command for Greet { const NAME: &'static str = "greet"; type Reply = String; }
///
/// struct Greeter { greeting: Arc<Greeting> }
///
/// #[async_trait]
/// impl CommandHandler<Greet> for Greeter {
///     async fn handle(&self, cmd: Greet, _ctx: Context) -> Result<String, HandlerError> {
///         Ok(format!("{}, {}", self.greeting.0, cmd.0))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), meshbus_core::Error> {
/// let bus = Bus::builder()
///     .service(Greeting("hello".into()))
///     .command_handler(from_services(|s| Ok(Greeter { greeting: s.get()? })))
///     .start()
///     .await?;
/// assert_eq!(bus.commands().send(Greet("Ada".into())).await?, "hello, Ada");
/// # bus.shutdown().await
/// # }
/// ```
pub fn from_services<F, H>(f: F) -> FromServices<F>
where
    F: FnOnce(&Services) -> Result<H, Error> + Send + 'static,
{
    FromServices(f)
}

/// A handler factory, made by [`from_services`].
#[must_use = "a factory does nothing until it is registered"]
pub struct FromServices<F>(F);

impl<F> fmt::Debug for FromServices<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FromServices")
    }
}

/// A subscriber with its [`SubscriptionOptions`], made by [`EventHandlerExt::with_options`].
#[must_use = "a subscriber does nothing until it is registered"]
#[derive(Debug)]
pub struct WithOptions<H> {
    handler: H,
    options: SubscriptionOptions,
}

/// Attaches [`SubscriptionOptions`] to a subscriber:
/// `.event_handler(on_tick.with_options(SubscriptionOptions::new().concurrency(4)))`.
///
/// Implemented for every value (a subscriber may be a closure, a function, a handler value or
/// a factory), so it is imported by name rather than through the prelude.
pub trait EventHandlerExt: Sized {
    /// This subscriber, queued and run as `options` say. Given twice, the outer options are
    /// the ones that count, as with any builder setter called twice.
    fn with_options(self, options: SubscriptionOptions) -> WithOptions<Self> {
        WithOptions {
            handler: self,
            options,
        }
    }
}

impl<T: Send + 'static> EventHandlerExt for T {}

/// An async fn or closure as a [`CommandHandler`].
struct FnCommand<F, Fut, E>(F, PhantomData<fn() -> (Fut, E)>);

#[async_trait]
impl<C, F, Fut, E> CommandHandler<C> for FnCommand<F, Fut, E>
where
    C: Command,
    F: Fn(C, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<C::Reply, E>> + Send + 'static,
    E: Into<HandlerError> + 'static,
{
    async fn handle(&self, cmd: C, ctx: Context) -> Result<C::Reply, HandlerError> {
        (self.0)(cmd, ctx).await.map_err(Into::into)
    }
}

impl<C, F, Fut, E> IntoCommandHandler<C, marker::AsyncFn<Fut, E>> for F
where
    C: Command,
    F: Fn(C, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<C::Reply, E>> + Send + 'static,
    E: Into<HandlerError> + 'static,
{
    fn build(self, _: &Services) -> Result<Arc<dyn CommandHandler<C>>, Error> {
        Ok(Arc::new(FnCommand(self, PhantomData)))
    }
}

impl<C: Command, H: CommandHandler<C>> IntoCommandHandler<C, marker::Value> for H {
    fn build(self, _: &Services) -> Result<Arc<dyn CommandHandler<C>>, Error> {
        Ok(Arc::new(self))
    }
}

impl<C, F, H, M> IntoCommandHandler<C, marker::Factory<H, M>> for FromServices<F>
where
    C: Command,
    F: FnOnce(&Services) -> Result<H, Error> + Send + 'static,
    H: IntoCommandHandler<C, M>,
{
    fn build(self, services: &Services) -> Result<Arc<dyn CommandHandler<C>>, Error> {
        (self.0)(services)?.build(services)
    }
}

/// An async fn or closure as an [`EventHandler`].
struct FnEvent<F, Fut, Er>(F, PhantomData<fn() -> (Fut, Er)>);

#[async_trait]
impl<E, F, Fut, Er> EventHandler<E> for FnEvent<F, Fut, Er>
where
    E: Event,
    F: Fn(Arc<E>, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Er>> + Send + 'static,
    Er: Into<HandlerError> + 'static,
{
    async fn handle(&self, event: Arc<E>, ctx: Context) -> Result<(), HandlerError> {
        // The closure is called inside the future, so that a panic in its synchronous part is
        // caught where the future's panics are.
        (self.0)(event, ctx).await.map_err(Into::into)
    }
}

impl<E, F, Fut, Er> IntoEventHandler<E, marker::AsyncFn<Fut, Er>> for F
where
    E: Event,
    F: Fn(Arc<E>, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Er>> + Send + 'static,
    Er: Into<HandlerError> + 'static,
{
    fn build(self, _: &Services) -> Result<Subscriber<E>, Error> {
        Ok((
            Arc::new(FnEvent(self, PhantomData)),
            SubscriptionOptions::new(),
        ))
    }
}

impl<E: Event, H: EventHandler<E>> IntoEventHandler<E, marker::Value> for H {
    fn build(self, _: &Services) -> Result<Subscriber<E>, Error> {
        Ok((Arc::new(self), SubscriptionOptions::new()))
    }
}

impl<E, F, H, M> IntoEventHandler<E, marker::Factory<H, M>> for FromServices<F>
where
    E: Event,
    F: FnOnce(&Services) -> Result<H, Error> + Send + 'static,
    H: IntoEventHandler<E, M>,
{
    fn build(self, services: &Services) -> Result<Subscriber<E>, Error> {
        (self.0)(services)?.build(services)
    }
}

impl<E, M, H> IntoEventHandler<E, marker::WithOptions<M>> for WithOptions<H>
where
    E: Event,
    H: IntoEventHandler<E, M>,
{
    fn build(self, services: &Services) -> Result<Subscriber<E>, Error> {
        let (handler, _) = self.handler.build(services)?;
        Ok((handler, self.options))
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

#[cfg(test)]
mod tests {
    use std::fmt;
    use std::sync::Arc;

    use serde::{Deserialize, Serialize};
    use tokio::sync::mpsc;

    use crate::{
        from_services, Bus, Command, Context, Error, ErrorKind, Event, EventHandler,
        EventHandlerExt, FullPolicy, HandlerError, HandlerResult, SubscriptionOptions,
    };

    #[derive(Serialize, Deserialize)]
    struct Half(u32);
    impl Command for Half {
        const NAME: &'static str = "test.half";
        type Reply = u32;
    }

    #[derive(Serialize, Deserialize)]
    struct Relay(u32);
    impl Command for Relay {
        const NAME: &'static str = "test.relay";
        type Reply = u32;
    }

    #[derive(Serialize, Deserialize)]
    struct Seen(u32);
    impl Event for Seen {
        const NAME: &'static str = "test.seen";
    }

    /// A user's own error type, not `HandlerError`.
    #[derive(Debug)]
    struct Odd(u32);
    impl fmt::Display for Odd {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{} is odd", self.0)
        }
    }
    impl std::error::Error for Odd {}

    async fn half(cmd: Half, _ctx: Context) -> Result<u32, Odd> {
        if cmd.0 % 2 == 0 {
            Ok(cmd.0 / 2)
        } else {
            Err(Odd(cmd.0))
        }
    }

    /// Returns the bus's own `Error` from a nested call, as it is.
    async fn relay(cmd: Relay, ctx: Context) -> Result<u32, Error> {
        ctx.bus().commands().local().send(Half(cmd.0)).await
    }

    #[tokio::test]
    async fn a_handler_may_return_any_error_that_converts_into_handler_error() {
        let bus = Bus::builder()
            .command_handler(half)
            .command_handler(relay)
            .start()
            .await
            .unwrap();
        assert_eq!(bus.commands().local().send(Half(8)).await.unwrap(), 4);
        let err = bus.commands().local().send(Half(3)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::HandlerFailed);
        assert!(err.to_string().contains("3 is odd"), "{err}");
        assert_eq!(bus.commands().local().send(Relay(6)).await.unwrap(), 3);
        let err = bus.commands().local().send(Relay(5)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::HandlerFailed);
        assert!(err.to_string().contains("5 is odd"), "{err}");
    }

    struct Forward(mpsc::UnboundedSender<u32>);

    #[async_trait::async_trait]
    impl EventHandler<Seen> for Forward {
        async fn handle(&self, event: Arc<Seen>, _ctx: Context) -> Result<(), HandlerError> {
            self.0.send(event.0).ok();
            Ok(())
        }
    }

    #[tokio::test]
    async fn every_shape_registers_through_one_method_per_kind() {
        let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
        let (started_tx, mut started) = mpsc::unbounded_channel::<u32>();
        let gate = Arc::new(tokio::sync::Notify::new());
        let held = Arc::clone(&gate);
        let bus = Bus::builder()
            .service(tx)
            .event_handler(from_services(|s| {
                let tx: Arc<mpsc::UnboundedSender<u32>> = s.get()?;
                Ok(Forward((*tx).clone()))
            }))
            .event_handler(
                (move |e: Arc<Seen>, _ctx: Context| {
                    let started = started_tx.clone();
                    let gate = Arc::clone(&held);
                    async move {
                        started.send(e.0).ok();
                        gate.notified().await;
                        HandlerResult::Ok(())
                    }
                })
                .with_options(
                    SubscriptionOptions::new()
                        .capacity(1)
                        .when_full(FullPolicy::DropNewest),
                ),
            )
            .start()
            .await
            .unwrap();
        bus.events().publish(Seen(1)).await.unwrap();
        assert_eq!(rx.recv().await, Some(1));
        // The closure holds event 1; its queue of one takes event 2 and drops event 3, which
        // with the default options would make the publisher wait instead.
        assert_eq!(started.recv().await, Some(1));
        bus.events().publish(Seen(2)).await.unwrap();
        bus.events().publish(Seen(3)).await.unwrap();
        assert_eq!(bus.stats().events_dropped, 1);
        gate.notify_one();
        assert_eq!(started.recv().await, Some(2));
        gate.notify_one();
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, Some(3));
    }

    #[tokio::test]
    async fn a_failing_factory_fails_start_and_names_the_service() {
        struct Missing;
        let err = Bus::builder()
            .command_handler(from_services(|s| {
                let _: Arc<Missing> = s.get()?;
                Ok(move |cmd: Half, ctx: Context| half(cmd, ctx))
            }))
            .start()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("Missing"), "{err}");
    }
}
