//! Start-up, shutdown, drop, and the promise that the Local path never serializes.

use std::future::IntoFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use meshbus::prelude::*;
use meshbus::{EventHandlerExt, SubscriptionOptions};
use serde::de::{self, Deserializer};
use serde::ser::{self, Serializer};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Mutex, Notify};

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "test.slow", reply = u32)]
struct Slow(u32);

#[derive(Serialize, Deserialize, Event)]
#[meshbus(name = "test.tick")]
struct Tick(u32);

#[tokio::test]
async fn shutdown_drains_in_flight_work_and_refuses_new_work() {
    let (entered_tx, mut entered_rx) = mpsc::channel::<()>(1);
    let release = Arc::new(Notify::new());
    let handled = Arc::new(AtomicUsize::new(0));
    let bus = Bus::builder()
        .command_handler({
            let release = Arc::clone(&release);
            move |cmd: Slow, _ctx| {
                let release = Arc::clone(&release);
                let entered_tx = entered_tx.clone();
                async move {
                    entered_tx.send(()).await.ok();
                    release.notified().await;
                    HandlerResult::Ok(cmd.0 + 1)
                }
            }
        })
        .event_handler(
            {
                let release = Arc::clone(&release);
                let handled = Arc::clone(&handled);
                move |_: Arc<Tick>, _ctx: Context| {
                    let release = Arc::clone(&release);
                    let handled = Arc::clone(&handled);
                    async move {
                        if handled.load(Ordering::SeqCst) == 0 {
                            release.notified().await;
                        }
                        handled.fetch_add(1, Ordering::SeqCst);
                        HandlerResult::Ok(())
                    }
                }
            }
            .with_options(SubscriptionOptions::new().capacity(64)),
        )
        .start()
        .await
        .unwrap();

    // One command in flight, and 20 events accepted while the subscriber is stuck on the first.
    let in_flight = tokio::spawn({
        let bus = bus.clone();
        async move { bus.commands().local().send(Slow(41)).no_timeout().await }
    });
    entered_rx.recv().await.unwrap();
    for i in 0..20 {
        bus.events().publish(Tick(i)).await.unwrap();
    }

    // Shutdown begins at its first poll: it closes the bus at once, then waits for the drain.
    let mut shutdown = Box::pin(bus.shutdown());
    assert!((&mut shutdown).now_or_never().is_none());
    assert!(bus.is_closed());
    let refused = bus.commands().local().send(Slow(0)).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Closed);
    let refused = bus.events().publish(Tick(99)).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Closed);
    assert_eq!(
        bus.subscribe::<Tick>().unwrap_err().kind(),
        ErrorKind::Closed
    );
    assert!(
        (&mut shutdown).now_or_never().is_none(),
        "shutdown waits for the drain"
    );

    // Let the command and the first event finish: shutdown then completes, having drained.
    release.notify_waiters();
    release.notify_one();
    release.notify_one();
    assert_eq!(in_flight.await.unwrap().unwrap(), 42);
    shutdown.await.unwrap();
    assert_eq!(
        handled.load(Ordering::SeqCst),
        20,
        "accepted events were lost"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_gives_up_on_stuck_handlers_after_its_bound() {
    let (entered_tx, mut entered_rx) = mpsc::channel::<()>(1);
    let (dropped_tx, dropped_rx) = oneshot::channel();
    let signal = Arc::new(DropSignal(std::sync::Mutex::new(Some(dropped_tx))));
    let bus = Bus::builder()
        .shutdown_timeout(Duration::from_secs(2))
        .event_handler(move |_: Arc<Tick>, _ctx: Context| {
            let entered_tx = entered_tx.clone();
            let held = Arc::clone(&signal);
            async move {
                let _held = held;
                entered_tx.send(()).await.ok();
                std::future::pending::<()>().await;
                HandlerResult::Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    bus.events().publish(Tick(0)).await.unwrap();
    entered_rx.recv().await.unwrap();
    let started = tokio::time::Instant::now();
    let err = bus.shutdown().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    // The stuck handler was aborted, and what it owned released.
    tokio::time::timeout(Duration::from_secs(60), dropped_rx)
        .await
        .expect("the stuck handler still runs")
        .unwrap();
}

/// Sends a message on drop, so a test can see that what a handler owned was released.
struct DropSignal(std::sync::Mutex<Option<oneshot::Sender<()>>>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }
}

/// Owns the signal and never reads it: its drop is what the test watches.
struct Holder(#[allow(dead_code)] Arc<DropSignal>);

#[async_trait]
impl EventHandler<Tick> for Holder {
    async fn handle(&self, _: Arc<Tick>, _ctx: Context) -> Result<(), HandlerError> {
        Ok(())
    }
}

#[tokio::test]
async fn dropping_the_bus_stops_its_tasks() {
    let (tx, rx) = oneshot::channel();
    let bus = Bus::builder()
        .service(DropSignal(std::sync::Mutex::new(Some(tx))))
        .event_handler(
            from_services(|s| Ok(Holder(s.get()?)))
                .with_options(SubscriptionOptions::new().concurrency(3)),
        )
        .start()
        .await
        .unwrap();
    bus.events().publish(Tick(1)).await.unwrap();
    drop(bus);
    // The workers own the handler, which owns the service: it is dropped only when every worker
    // task has ended. A leaked task would keep it alive and this would time out.
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("the bus's tasks outlived it")
        .unwrap();
}

/// A message whose serde impls always fail: the Local path must never call them.
#[derive(Debug)]
struct Unserializable(u32);

impl Serialize for Unserializable {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(ser::Error::custom("the local path serialized a message"))
    }
}

impl<'de> Deserialize<'de> for Unserializable {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(de::Error::custom("the local path deserialized a message"))
    }
}

impl Command for Unserializable {
    const NAME: &'static str = "test.unserializable";
    type Reply = Unserializable;
}

impl Event for Unserializable {
    const NAME: &'static str = "test.unserializable-event";
}

#[tokio::test]
async fn the_local_path_never_serializes() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let bus = Bus::builder()
        .command_handler(|cmd: Unserializable, _ctx| async move {
            HandlerResult::Ok(Unserializable(cmd.0 * 2))
        })
        .event_handler({
            let seen = Arc::clone(&seen);
            move |e: Arc<Unserializable>, _ctx: Context| {
                let seen = Arc::clone(&seen);
                async move {
                    seen.lock().await.push(e.0);
                    HandlerResult::Ok(())
                }
            }
        })
        .start()
        .await
        .unwrap();
    for scope in [Scope::Local, Scope::Machine, Scope::Cluster, Scope::Network] {
        let reply = bus
            .commands()
            .scope(scope)
            .send(Unserializable(21))
            .await
            .unwrap();
        assert_eq!(reply.0, 42);
        bus.events()
            .scope(scope)
            .publish(Unserializable(7))
            .await
            .unwrap();
    }
    bus.shutdown().await.unwrap();
    assert_eq!(*seen.lock().await, vec![7, 7, 7, 7]);
}

#[tokio::test]
async fn identity_is_configurable_and_seeded() {
    let a = Bus::builder()
        .name("orders-1")
        .network("lab")
        .cluster("shop")
        .host_id("host-a")
        .seed(7)
        .start()
        .await
        .unwrap();
    let b = Bus::builder().seed(7).start().await.unwrap();
    let c = Bus::builder().seed(8).start().await.unwrap();
    assert_eq!(a.name(), "orders-1");
    assert_eq!(a.network(), "lab");
    assert_eq!(a.cluster(), "shop");
    assert_eq!(a.host_id(), "host-a");
    assert_eq!(a.node_id(), b.node_id(), "a seed replays the node id");
    assert_ne!(a.node_id(), c.node_id());
    assert_eq!(b.network(), "default");
    assert!(!b.host_id().is_empty());
}

#[test]
fn derive_names_default_to_the_type_name() {
    #[derive(Serialize, Deserialize, Event)]
    struct OrderPlaced;
    #[derive(Serialize, Deserialize, Command)]
    struct CancelOrder;
    #[derive(Serialize, Deserialize, Command)]
    #[meshbus(reply = Vec<u8>)]
    struct Fetch;
    assert_eq!(<OrderPlaced as Event>::NAME, "OrderPlaced");
    assert_eq!(<CancelOrder as Command>::NAME, "CancelOrder");
    let _: <CancelOrder as Command>::Reply = ();
    let _: <Fetch as Command>::Reply = Vec::<u8>::new();
    assert_eq!(<Tick as Event>::NAME, "test.tick");
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_an_in_flight_command() {
    let (entered_tx, mut entered_rx) = mpsc::channel::<()>(1);
    let release = Arc::new(Notify::new());
    let bus = Bus::builder()
        .command_handler({
            let release = Arc::clone(&release);
            move |cmd: Slow, _ctx| {
                let release = Arc::clone(&release);
                let entered_tx = entered_tx.clone();
                async move {
                    entered_tx.send(()).await.ok();
                    release.notified().await;
                    HandlerResult::Ok(cmd.0)
                }
            }
        })
        .start()
        .await
        .unwrap();
    let call = tokio::spawn({
        let bus = bus.clone();
        async move { bus.commands().send(Slow(5)).no_timeout().await }
    });
    entered_rx.recv().await.unwrap();
    let shutdown = bus.shutdown();
    tokio::pin!(shutdown);
    // With the handler held, shutdown cannot finish (time runs on while everything waits).
    assert!(
        tokio::time::timeout(Duration::from_secs(5), &mut shutdown)
            .await
            .is_err(),
        "shutdown returned while a command was in flight"
    );
    release.notify_one();
    shutdown.await.unwrap();
    assert_eq!(call.await.unwrap().unwrap(), 5);
}

#[tokio::test]
async fn a_finishing_handler_may_still_publish_while_the_bus_drains() {
    #[derive(Serialize, Deserialize, Event)]
    #[meshbus(name = "test.done")]
    struct Done(u32);

    let (entered_tx, mut entered_rx) = mpsc::channel::<()>(1);
    let (done_tx, mut done_rx) = mpsc::channel::<u32>(1);
    let release = Arc::new(Notify::new());
    let bus = Bus::builder()
        .command_handler({
            let release = Arc::clone(&release);
            move |cmd: Slow, ctx: Context| {
                let release = Arc::clone(&release);
                let entered_tx = entered_tx.clone();
                async move {
                    entered_tx.send(()).await.ok();
                    release.notified().await;
                    // Shutdown has begun, but work in flight can still report its outcome.
                    ctx.bus().events().publish(Done(cmd.0)).await?;
                    HandlerResult::Ok(cmd.0)
                }
            }
        })
        .event_handler(move |e: Arc<Done>, _ctx: Context| {
            let done_tx = done_tx.clone();
            async move {
                done_tx.send(e.0).await.ok();
                HandlerResult::Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    let call = tokio::spawn({
        let bus = bus.clone();
        async move { bus.commands().send(Slow(9)).no_timeout().await }
    });
    entered_rx.recv().await.unwrap();
    // Shutdown closes the bus at its first poll, then waits for the handler in flight.
    let mut shutdown = Box::pin(bus.shutdown());
    assert!((&mut shutdown).now_or_never().is_none());
    assert_eq!(
        bus.events().publish(Done(0)).await.unwrap_err().kind(),
        ErrorKind::Closed,
        "the application is refused once shutdown has begun"
    );
    release.notify_one();
    assert_eq!(call.await.unwrap().unwrap(), 9);
    shutdown.await.unwrap();
    assert_eq!(done_rx.recv().await, Some(9), "the outcome event was lost");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_bus_while_a_handler_runs_stops_its_tasks() {
    let (tx, rx) = oneshot::channel();
    let (entered_tx, mut entered_rx) = mpsc::channel::<()>(1);
    let signal = Arc::new(DropSignal(std::sync::Mutex::new(Some(tx))));
    let bus = Bus::builder()
        .event_handler(move |_: Arc<Tick>, _ctx: Context| {
            let held = Arc::clone(&signal);
            let entered_tx = entered_tx.clone();
            async move {
                let _held = held;
                entered_tx.send(()).await.ok();
                std::future::pending::<()>().await;
                HandlerResult::Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    bus.events().publish(Tick(0)).await.unwrap();
    entered_rx.recv().await.unwrap();
    drop(bus);
    tokio::time::timeout(Duration::from_secs(3600), rx)
        .await
        .expect("a running handler kept its bus and tasks alive")
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_from_inside_a_handler_does_not_wait_for_itself() {
    #[derive(Serialize, Deserialize, Command)]
    #[meshbus(name = "test.stop")]
    struct Stop;

    let bus = Bus::builder()
        .command_handler(|_: Stop, ctx: Context| async move {
            ctx.bus().shutdown().await?;
            HandlerResult::Ok(())
        })
        .start()
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    bus.commands().send(Stop).await.unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "shutdown waited for its own caller"
    );
    assert!(bus.is_closed());
    assert_eq!(
        bus.commands().send(Stop).await.unwrap_err().kind(),
        ErrorKind::Closed
    );
    bus.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_publish_waiting_for_room_gives_up_when_the_bus_seals() {
    let bus = Bus::builder()
        .event_handler(|_: Arc<Tick>, _ctx: Context| async { HandlerResult::Ok(()) })
        .start()
        .await
        .unwrap();
    // A run-time subscription nobody reads, with room for one event.
    let unread = bus
        .subscribe_with::<Tick>(SubscriptionOptions::new().capacity(1))
        .unwrap();
    bus.events().publish(Tick(0)).await.unwrap();
    let mut waiting = Box::pin(bus.events().publish(Tick(1)).into_future());
    assert!(
        (&mut waiting).now_or_never().is_none(),
        "the publish should wait for room"
    );
    let started = tokio::time::Instant::now();
    bus.shutdown().await.unwrap();
    assert!(
        started.elapsed() < meshbus::BusBuilder::DEFAULT_SHUTDOWN_TIMEOUT,
        "shutdown hit its bound"
    );
    assert_eq!(waiting.await.unwrap_err().kind(), ErrorKind::Closed);
    drop(unread);
}

#[tokio::test]
async fn a_run_time_subscription_ends_after_shutdown_once_read_empty() {
    let bus = Bus::builder().start().await.unwrap();
    let mut sub = bus.subscribe::<Tick>().unwrap();
    bus.events().publish(Tick(1)).await.unwrap();
    bus.shutdown().await.unwrap();
    assert_eq!(
        sub.recv().await.map(|t| t.0),
        Some(1),
        "a queued event was lost"
    );
    assert!(sub.recv().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_while_shutting_down_never_leaves_a_subscription_that_cannot_end() {
    // A race: run it a bounded number of times. A subscription that was granted must end once
    // shutdown has returned.
    for _ in 0..500 {
        let bus = Bus::builder().start().await.unwrap();
        let subscribe = tokio::spawn({
            let bus = bus.clone();
            async move { bus.subscribe::<Tick>() }
        });
        let shutdown = tokio::spawn({
            let bus = bus.clone();
            async move { bus.shutdown().await }
        });
        shutdown.await.unwrap().unwrap();
        if let Ok(mut sub) = subscribe.await.unwrap() {
            let next = tokio::time::timeout(Duration::from_secs(10), sub.recv())
                .await
                .expect("a subscription granted during shutdown never ended");
            assert!(next.is_none());
        }
    }
}

#[tokio::test]
async fn a_request_never_polled_does_not_hold_up_shutdown() {
    let bus = Bus::builder()
        .command_handler(|cmd: Slow, _ctx| async move { HandlerResult::Ok(cmd.0) })
        .start()
        .await
        .unwrap();
    let idle = bus.commands().send(Slow(1)).into_future();
    tokio::time::timeout(Duration::from_secs(10), bus.shutdown())
        .await
        .expect("an unpolled request held up shutdown")
        .unwrap();
    // Polled after shutdown, it is refused rather than run.
    assert_eq!(idle.await.unwrap_err().kind(), ErrorKind::Closed);
}
