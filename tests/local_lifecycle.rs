//! Start-up, shutdown, drop, and the promise that the Local path never serializes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use meshbus::prelude::*;
use meshbus::SubscriptionOptions;
use serde::de::{self, Deserializer};
use serde::ser::{self, Serializer};
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
                    Ok(cmd.0 + 1)
                }
            }
        })
        .event_handler_opts(SubscriptionOptions::new().capacity(64), {
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
                    Ok(())
                }
            }
        })
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

    let shutdown = tokio::spawn({
        let bus = bus.clone();
        async move { bus.shutdown().await }
    });
    // Wait (without sleeping) until shutdown has begun.
    while !bus.is_closed() {
        tokio::task::yield_now().await;
    }
    let refused = bus.commands().local().send(Slow(0)).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Closed);
    let refused = bus.events().publish(Tick(99)).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Closed);
    assert_eq!(
        bus.subscribe::<Tick>().unwrap_err().kind(),
        ErrorKind::Closed
    );
    assert!(!shutdown.is_finished());

    // Let the command and the first event finish: shutdown then completes, having drained.
    release.notify_waiters();
    release.notify_one();
    release.notify_one();
    assert_eq!(in_flight.await.unwrap().unwrap(), 42);
    shutdown.await.unwrap().unwrap();
    assert_eq!(
        handled.load(Ordering::SeqCst),
        20,
        "accepted events were lost"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_gives_up_on_stuck_handlers_after_its_bound() {
    let (entered_tx, mut entered_rx) = mpsc::channel::<()>(1);
    let bus = Bus::builder()
        .shutdown_timeout(Duration::from_secs(2))
        .event_handler(move |_: Arc<Tick>, _ctx: Context| {
            let entered_tx = entered_tx.clone();
            async move {
                entered_tx.send(()).await.ok();
                std::future::pending::<()>().await;
                Ok(())
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
    async fn handle(&self, _: &Tick, _ctx: Context) -> Result<(), HandlerError> {
        Ok(())
    }
}

#[tokio::test]
async fn dropping_the_bus_stops_its_tasks() {
    let (tx, rx) = oneshot::channel();
    let bus = Bus::builder()
        .service(DropSignal(std::sync::Mutex::new(Some(tx))))
        .event_handler_with_opts(SubscriptionOptions::new().concurrency(3), |s| {
            Ok(Holder(s.get()?))
        })
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
        .command_handler(|cmd: Unserializable, _ctx| async move { Ok(Unserializable(cmd.0 * 2)) })
        .event_handler({
            let seen = Arc::clone(&seen);
            move |e: Arc<Unserializable>, _ctx: Context| {
                let seen = Arc::clone(&seen);
                async move {
                    seen.lock().await.push(e.0);
                    Ok(())
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
