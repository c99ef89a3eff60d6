//! Commands in the Local scope: typed replies, services, errors, timeouts, panics, cancellation.

use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use meshbus::prelude::*;
use meshbus::Headers;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Barrier, Mutex};

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "test.add", reply = u64)]
struct Add {
    a: u64,
    b: u64,
}

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "test.record")]
struct Record;

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "test.greet", reply = String)]
struct Greet(String);

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "test.boom", reply = u32)]
struct Boom {
    panic: bool,
}

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "test.wait")]
struct Wait;

struct Greeting(&'static str);
struct Punctuation(char);

struct Greeter {
    greeting: Arc<Greeting>,
    punctuation: Arc<Punctuation>,
}

#[async_trait]
impl CommandHandler<Greet> for Greeter {
    async fn handle(&self, cmd: Greet, _ctx: Context) -> Result<String, HandlerError> {
        Ok(format!(
            "{}, {}{}",
            self.greeting.0, cmd.0, self.punctuation.0
        ))
    }
}

fn adder() -> meshbus::BusBuilder {
    Bus::builder().command_handler(|cmd: Add, _ctx| async move {
        cmd.a
            .checked_add(cmd.b)
            .ok_or_else(|| HandlerError::msg("sum overflows u64"))
    })
}

#[tokio::test]
async fn typed_reply_round_trip() {
    let bus = adder().start().await.unwrap();
    let sum: u64 = bus
        .commands()
        .local()
        .send(Add { a: 40, b: 2 })
        .await
        .unwrap();
    assert_eq!(sum, 42);
    // The default scope finds the local handler too.
    assert_eq!(bus.commands().send(Add { a: 1, b: 2 }).await.unwrap(), 3);
    bus.shutdown().await.unwrap();
}

#[tokio::test]
async fn unit_reply_waits_for_the_handler_to_finish() {
    let done = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&done);
    let bus = Bus::builder()
        .command_handler(move |_: Record, _ctx| {
            let flag = Arc::clone(&flag);
            async move {
                // Not synchronisation: the handler pends a few times before it finishes.
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                flag.store(true, Ordering::SeqCst);
                HandlerResult::Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    bus.commands().local().send(Record).await.unwrap();
    assert!(
        done.load(Ordering::SeqCst),
        "Ok(()) came before the handler finished"
    );
}

#[tokio::test]
async fn handler_built_from_injected_services() {
    let bus = Bus::builder()
        .service(Greeting("hello"))
        .service_arc(Arc::new(Punctuation('!')))
        .command_handler(from_services(|s| {
            Ok(Greeter {
                greeting: s.get()?,
                punctuation: s.get()?,
            })
        }))
        .start()
        .await
        .unwrap();
    let reply = bus
        .commands()
        .local()
        .send(Greet("Ada".into()))
        .await
        .unwrap();
    assert_eq!(reply, "hello, Ada!");
}

#[tokio::test]
async fn missing_service_fails_start_naming_it() {
    let err = Bus::builder()
        .service(Greeting("hello"))
        .command_handler(from_services(|s| {
            Ok(Greeter {
                greeting: s.get()?,
                punctuation: s.get()?,
            })
        }))
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.to_string().contains("Punctuation"),
        "error does not name the missing service: {err}"
    );
}

#[tokio::test]
async fn two_handlers_for_one_command_fail_start() {
    let err = adder()
        .command_handler(|cmd: Add, _ctx| async move { HandlerResult::Ok(cmd.a) })
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(err.message_name(), Some("test.add"));
}

#[tokio::test]
async fn two_types_with_one_name_fail_start() {
    #[derive(Serialize, Deserialize, Command)]
    #[meshbus(name = "test.add", reply = u64)]
    struct OtherAdd;
    let err = adder()
        .command_handler(|_: OtherAdd, _ctx| async move { HandlerResult::Ok(0) })
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("OtherAdd"), "{err}");
}

#[tokio::test]
async fn no_handler_fails_at_once_naming_message_and_scope() {
    let bus = Bus::builder().start().await.unwrap();
    let result = bus
        .commands()
        .local()
        .send(Add { a: 1, b: 1 })
        .into_future()
        .now_or_never()
        .expect("NoHandler must not wait");
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoHandler);
    assert_eq!(err.message_name(), Some("test.add"));
    assert_eq!(err.scope(), Some(Scope::Local));
    assert_eq!(err.to_string(), "no handler for `test.add` in scope local");
}

#[tokio::test(start_paused = true)]
async fn a_slow_handler_times_out() {
    let bus = Bus::builder()
        .command_handler(|_: Wait, _ctx| async move {
            std::future::pending::<()>().await;
            HandlerResult::Ok(())
        })
        .start()
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let err = bus
        .commands()
        .local()
        .send(Wait)
        .timeout(Duration::from_millis(250))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(err.message_name(), Some("test.wait"));
    assert_eq!(started.elapsed(), Duration::from_millis(250));
}

#[tokio::test(start_paused = true)]
async fn the_builder_request_timeout_applies_by_default() {
    let bus = Bus::builder()
        .request_timeout(Some(Duration::from_secs(3)))
        .command_handler(|_: Wait, _ctx| async move {
            std::future::pending::<()>().await;
            HandlerResult::Ok(())
        })
        .start()
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let err = bus.commands().send(Wait).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(started.elapsed(), Duration::from_secs(3));
}

#[tokio::test]
async fn handler_error_message_reaches_the_caller() {
    let bus = adder().start().await.unwrap();
    let err = bus
        .commands()
        .local()
        .send(Add { a: u64::MAX, b: 1 })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HandlerFailed);
    assert_eq!(err.handler_message(), Some("sum overflows u64"));
    assert_eq!(
        err.to_string(),
        "handler for `test.add` failed: sum overflows u64"
    );
}

#[tokio::test]
async fn a_panicking_handler_gives_handler_failed_and_the_bus_keeps_serving() {
    let bus = Bus::builder()
        .command_handler(|cmd: Boom, _ctx| async move {
            // Not synchronisation: the handler pends once, so that it panics on a later poll.
            tokio::task::yield_now().await;
            if cmd.panic {
                panic!("kaboom");
            }
            HandlerResult::Ok(7)
        })
        .start()
        .await
        .unwrap();
    let err = bus
        .commands()
        .local()
        .send(Boom { panic: true })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HandlerFailed);
    assert!(err.handler_message().unwrap().contains("kaboom"), "{err:?}");
    assert_eq!(bus.stats().command_handler_panics, 1);
    let ok = bus
        .commands()
        .local()
        .send(Boom { panic: false })
        .await
        .unwrap();
    assert_eq!(ok, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_run_concurrently() {
    // Both handlers wait at a barrier of two: they finish only if they run at the same time.
    let barrier = Arc::new(Barrier::new(2));
    let bus = Bus::builder()
        .service_arc(Arc::clone(&barrier))
        .command_handler(from_services(|s| {
            let barrier: Arc<Barrier> = s.get()?;
            Ok(BarrierHandler(barrier))
        }))
        .start()
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        bus.commands()
            .local()
            .send(Wait)
            .timeout(Duration::from_secs(10)),
        bus.commands()
            .local()
            .send(Wait)
            .timeout(Duration::from_secs(10)),
    );
    a.unwrap();
    b.unwrap();
}

struct BarrierHandler(Arc<Barrier>);

#[async_trait]
impl CommandHandler<Wait> for BarrierHandler {
    async fn handle(&self, _: Wait, _ctx: Context) -> Result<(), HandlerError> {
        self.0.wait().await;
        Ok(())
    }
}

#[tokio::test]
async fn a_cancelled_caller_does_not_stop_the_bus() {
    let (entered_tx, entered_rx) = oneshot::channel::<()>();
    let entered_tx = Arc::new(Mutex::new(Some(entered_tx)));
    let dropped = Arc::new(AtomicUsize::new(0));
    let bus = Bus::builder()
        .command_handler({
            let dropped = Arc::clone(&dropped);
            move |_: Wait, _ctx| {
                let entered_tx = Arc::clone(&entered_tx);
                let guard = DropCounter(Arc::clone(&dropped));
                async move {
                    let _guard = guard;
                    if let Some(tx) = entered_tx.lock().await.take() {
                        let _ = tx.send(());
                    }
                    std::future::pending::<()>().await;
                    HandlerResult::Ok(())
                }
            }
        })
        .command_handler(|cmd: Add, _ctx| async move { HandlerResult::Ok(cmd.a + cmd.b) })
        .start()
        .await
        .unwrap();

    let caller = {
        let bus = bus.clone();
        tokio::spawn(async move { bus.commands().local().send(Wait).no_timeout().await })
    };
    entered_rx.await.unwrap();
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    // The abandoned handler was dropped with its caller...
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    // ...and the bus still serves, and shuts down without waiting for the abandoned call.
    assert_eq!(
        bus.commands()
            .local()
            .send(Add { a: 2, b: 3 })
            .await
            .unwrap(),
        5
    );
    tokio::time::timeout(Duration::from_secs(5), bus.shutdown())
        .await
        .expect("shutdown waited for a cancelled call")
        .unwrap();
}

struct DropCounter(Arc<AtomicUsize>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn the_context_carries_sender_scope_headers_and_deadline() {
    #[derive(Serialize, Deserialize, Command)]
    #[meshbus(name = "test.ctx", reply = (String, String, Option<String>, Option<String>, bool, String))]
    struct Inspect;

    let bus = Bus::builder()
        .command_handler(|_: Inspect, ctx: Context| async move {
            HandlerResult::Ok((
                ctx.sender().to_string(),
                ctx.scope().to_string(),
                ctx.idempotency_key().map(str::to_owned),
                ctx.correlation_id().map(str::to_owned),
                ctx.deadline().is_some(),
                ctx.headers().get("tenant").unwrap_or_default().to_owned(),
            ))
        })
        .start()
        .await
        .unwrap();
    let (sender, scope, key, corr, has_deadline, tenant) = bus
        .commands()
        .machine()
        .send(Inspect)
        .idempotency_key("order-17")
        .correlation_id("flow-1")
        .header("tenant", "acme")
        .timeout(Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(sender, bus.node_id().to_string());
    assert_eq!(scope, "machine");
    assert_eq!(key.as_deref(), Some("order-17"));
    assert_eq!(corr.as_deref(), Some("flow-1"));
    assert!(has_deadline);
    assert_eq!(tenant, "acme");
    assert_eq!(Headers::IDEMPOTENCY_KEY, "idempotency-key");

    let (.., has_deadline, _) = bus.commands().send(Inspect).no_timeout().await.unwrap();
    assert!(!has_deadline);
}

#[tokio::test]
async fn a_handler_can_send_commands_through_its_context() {
    #[derive(Serialize, Deserialize, Command)]
    #[meshbus(name = "test.add-twice", reply = u64)]
    struct AddTwice(u64);

    let bus = adder()
        .command_handler(|cmd: AddTwice, ctx: Context| async move {
            let once = ctx
                .bus()
                .commands()
                .local()
                .send(Add { a: cmd.0, b: cmd.0 })
                .await?;
            HandlerResult::Ok(
                ctx.bus()
                    .commands()
                    .local()
                    .send(Add { a: once, b: cmd.0 })
                    .await?,
            )
        })
        .start()
        .await
        .unwrap();
    assert_eq!(bus.commands().send(AddTwice(5)).await.unwrap(), 15);
}

/// A handler written without `#[async_trait]` that panics before it makes its future.
struct EagerPanic;

impl CommandHandler<Boom> for EagerPanic {
    fn handle<'a, 'b>(
        &'a self,
        cmd: Boom,
        _ctx: Context,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<u32, HandlerError>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        if cmd.panic {
            panic!("before the future");
        }
        Box::pin(async { Ok(1) })
    }
}

#[tokio::test]
async fn a_panic_before_the_handler_future_gives_handler_failed() {
    let bus = Bus::builder()
        .command_handler(from_services(|_| Ok(EagerPanic)))
        .start()
        .await
        .unwrap();
    let err = bus.commands().send(Boom { panic: true }).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HandlerFailed);
    assert!(err.handler_message().unwrap().contains("before the future"));
    assert_eq!(bus.stats().command_handler_panics, 1);
    assert_eq!(bus.commands().send(Boom { panic: false }).await.unwrap(), 1);
}
