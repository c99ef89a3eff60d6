//! Events in the Local scope: fan-out, ordering, queues and their policies, panics, run-time
//! subscriptions.

use std::future::IntoFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use meshbus::prelude::*;
use meshbus::{EventHandlerExt, FullPolicy, SubscriptionOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify, Semaphore};

#[derive(Serialize, Deserialize, Event, Debug, PartialEq)]
#[meshbus(name = "test.numbered")]
struct Numbered(u32);

/// An event that is not `Clone`: subscribers share it.
#[derive(Serialize, Deserialize, Event)]
#[meshbus(name = "test.big")]
struct Big {
    payload: Vec<u8>,
}

#[tokio::test]
async fn two_subscribers_both_get_the_same_event() {
    let (tx, mut rx) = mpsc::channel::<(&'static str, usize)>(4);
    let (tx1, tx2) = (tx.clone(), tx);
    let bus = Bus::builder()
        .event_handler(move |e: Arc<Big>, _ctx: Context| {
            let tx = tx1.clone();
            async move {
                tx.send(("first", Arc::as_ptr(&e) as usize)).await.ok();
                HandlerResult::Ok(())
            }
        })
        .event_handler(move |e: Arc<Big>, _ctx: Context| {
            let tx = tx2.clone();
            async move {
                tx.send(("second", Arc::as_ptr(&e) as usize)).await.ok();
                HandlerResult::Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    bus.events()
        .local()
        .publish(Big {
            payload: vec![7; 1024],
        })
        .await
        .unwrap();
    let mut got = [rx.recv().await.unwrap(), rx.recv().await.unwrap()];
    got.sort();
    assert_eq!(got[0].0, "first");
    assert_eq!(got[1].0, "second");
    // One value, shared: both saw the same allocation.
    assert_eq!(got[0].1, got[1].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_subscription_sees_1000_events_in_publish_order() {
    let (tx, mut rx) = mpsc::channel::<u32>(2000);
    let bus = Bus::builder()
        .event_handler(move |e: Arc<Numbered>, _ctx: Context| {
            let tx = tx.clone();
            async move {
                // Not synchronisation: yield so that a reordering bus would have every chance to show it.
                if e.0 % 7 == 0 {
                    tokio::task::yield_now().await;
                }
                tx.send(e.0).await.ok();
                HandlerResult::Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    for i in 0..1000 {
        bus.events().publish(Numbered(i)).await.unwrap();
    }
    let mut seen = Vec::with_capacity(1000);
    for _ in 0..1000 {
        seen.push(rx.recv().await.unwrap());
    }
    assert_eq!(seen, (0..1000).collect::<Vec<_>>());
}

#[tokio::test]
async fn publish_without_subscribers_is_ok() {
    let bus = Bus::builder().start().await.unwrap();
    bus.events().publish(Numbered(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_lets_a_subscription_run_events_at_once() {
    // Four events whose handlers each wait for all four to have started: this finishes only if
    // the subscription runs them concurrently.
    let started = Arc::new(Semaphore::new(0));
    let (done_tx, mut done_rx) = mpsc::channel::<u32>(4);
    let bus = Bus::builder()
        .event_handler(
            {
                let started = Arc::clone(&started);
                move |e: Arc<Numbered>, _ctx: Context| {
                    let started = Arc::clone(&started);
                    let done_tx = done_tx.clone();
                    async move {
                        started.add_permits(1);
                        let _all = started.acquire_many(4).await.unwrap();
                        started.add_permits(4);
                        done_tx.send(e.0).await.ok();
                        HandlerResult::Ok(())
                    }
                }
            }
            .with_options(SubscriptionOptions::new().concurrency(4)),
        )
        .start()
        .await
        .unwrap();
    for i in 0..4 {
        bus.events().publish(Numbered(i)).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(
            tokio::time::timeout(Duration::from_secs(10), done_rx.recv())
                .await
                .expect("handlers did not run concurrently")
                .unwrap(),
        );
    }
    got.sort();
    assert_eq!(got, vec![0, 1, 2, 3]);
}

#[tokio::test]
async fn a_full_queue_makes_the_publisher_wait() {
    let gate = Arc::new(Notify::new());
    let entered = Arc::new(Notify::new());
    let handled = Arc::new(AtomicUsize::new(0));
    let bus = Bus::builder()
        .event_handler(
            {
                let gate = Arc::clone(&gate);
                let entered = Arc::clone(&entered);
                let handled = Arc::clone(&handled);
                move |_: Arc<Numbered>, _ctx: Context| {
                    let gate = Arc::clone(&gate);
                    let entered = Arc::clone(&entered);
                    let handled = Arc::clone(&handled);
                    async move {
                        entered.notify_one();
                        gate.notified().await;
                        handled.fetch_add(1, Ordering::SeqCst);
                        HandlerResult::Ok(())
                    }
                }
            }
            .with_options(SubscriptionOptions::new().capacity(2)),
        )
        .start()
        .await
        .unwrap();
    // The handler takes one event and blocks; two more fill the queue.
    let mut admitted = 0;
    for i in 0..10 {
        match bus
            .events()
            .publish(Numbered(i))
            .into_future()
            .now_or_never()
        {
            Some(r) => {
                r.unwrap();
                admitted += 1;
            }
            None => break,
        }
        // The worker takes the first event into the handler, freeing its place in the queue.
        if i == 0 {
            entered.notified().await;
        }
    }
    assert_eq!(
        admitted, 3,
        "one in the handler, two in the queue, then wait"
    );
    let blocked = bus.events().publish(Numbered(99));
    let mut blocked = Box::pin(blocked.into_future());
    assert!((&mut blocked).now_or_never().is_none());
    gate.notify_one();
    // Once the handler finishes one event there is room, and the publish completes.
    blocked.await.unwrap();
    assert_eq!(bus.stats().events_dropped, 0);
}

#[tokio::test]
async fn drop_newest_counts_what_it_drops() {
    let gate = Arc::new(Notify::new());
    let (seen_tx, mut seen) = mpsc::channel::<u32>(100);
    let bus = Bus::builder()
        .event_handler(
            {
                let gate = Arc::clone(&gate);
                move |e: Arc<Numbered>, _ctx: Context| {
                    let gate = Arc::clone(&gate);
                    let seen_tx = seen_tx.clone();
                    async move {
                        gate.notified().await;
                        seen_tx.send(e.0).await.ok();
                        HandlerResult::Ok(())
                    }
                }
            }
            .with_options(
                SubscriptionOptions::new()
                    .capacity(4)
                    .when_full(FullPolicy::DropNewest),
            ),
        )
        .start()
        .await
        .unwrap();
    let mut sub = bus.subscribe::<Numbered>().unwrap();
    for i in 0..100 {
        // Never waits: a full subscription drops instead.
        bus.events()
            .publish(Numbered(i))
            .into_future()
            .now_or_never()
            .expect("drop-newest publish waited")
            .unwrap();
    }
    // The handler holds at most 1 + 4 events; the run-time subscription (capacity 1024, Wait)
    // got every event.
    let dropped = bus.stats().events_dropped;
    assert!((95..=96).contains(&dropped), "dropped {dropped}");
    for i in 0..100 {
        assert_eq!(sub.recv().await.unwrap().0, i);
    }
    // What the full subscription kept are the oldest events, in order: the newest were dropped.
    let kept = 100 - dropped as u32;
    for i in 0..kept {
        gate.notify_one();
        assert_eq!(seen.recv().await, Some(i));
    }
}

#[tokio::test]
async fn a_panicking_event_handler_is_counted_and_the_subscription_goes_on() {
    let (tx, mut rx) = mpsc::channel::<u32>(8);
    let bus = Bus::builder()
        .event_handler(move |e: Arc<Numbered>, _ctx: Context| {
            let tx = tx.clone();
            async move {
                match e.0 {
                    1 => panic!("event one"),
                    2 => Err(HandlerError::msg("event two")),
                    n => {
                        tx.send(n).await.ok();
                        Ok(())
                    }
                }
            }
        })
        .start()
        .await
        .unwrap();
    for i in 0..4 {
        bus.events().publish(Numbered(i)).await.unwrap();
    }
    assert_eq!(rx.recv().await, Some(0));
    assert_eq!(rx.recv().await, Some(3));
    let stats = bus.stats();
    assert_eq!(stats.event_handler_panics, 1);
    assert_eq!(stats.event_handler_errors, 1);
}

struct Counter(AtomicUsize);

struct CountingHandler {
    counter: Arc<Counter>,
    scopes: mpsc::Sender<Scope>,
}

#[async_trait]
impl EventHandler<Numbered> for CountingHandler {
    async fn handle(&self, event: Arc<Numbered>, ctx: Context) -> Result<(), HandlerError> {
        self.counter.0.fetch_add(event.0 as usize, Ordering::SeqCst);
        self.scopes.send(ctx.scope()).await.ok();
        Ok(())
    }
}

#[tokio::test]
async fn a_trait_subscriber_built_from_services() {
    let counter = Arc::new(Counter(AtomicUsize::new(0)));
    let (scopes_tx, mut scopes) = mpsc::channel(1);
    let bus = Bus::builder()
        .service_arc(Arc::clone(&counter))
        .service(scopes_tx)
        .event_handler(from_services(|s| {
            Ok(CountingHandler {
                counter: s.get()?,
                scopes: mpsc::Sender::clone(&*s.get::<mpsc::Sender<Scope>>()?),
            })
        }))
        .start()
        .await
        .unwrap();
    bus.events().publish(Numbered(5)).await.unwrap();
    assert_eq!(scopes.recv().await, Some(Scope::Cluster));
    assert_eq!(counter.0.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_run_time_subscription_is_a_stream_and_unsubscribes_on_drop() {
    let bus = Bus::builder().start().await.unwrap();
    let mut sub = bus.subscribe::<Numbered>().unwrap();
    bus.events().publish(Numbered(1)).await.unwrap();
    bus.events().publish(Numbered(2)).await.unwrap();
    assert_eq!(sub.next().await.unwrap().0, 1);
    assert_eq!(sub.recv().await.unwrap().0, 2);
    drop(sub);
    // With the only subscription gone, a publish with a capacity-1 policy elsewhere would not
    // matter; check the table is empty by subscribing a different type under the same name.
    #[derive(Serialize, Deserialize, Event)]
    #[meshbus(name = "test.numbered")]
    struct SameName;
    let _other = bus
        .subscribe::<SameName>()
        .expect("the dropped subscription still holds the name");
    let clash = bus.subscribe::<Numbered>().unwrap_err();
    assert_eq!(clash.kind(), ErrorKind::Config);
}

#[tokio::test]
async fn publish_sees_headers_and_correlation_in_the_context() {
    let (tx, mut rx) = mpsc::channel::<(Option<String>, Option<String>, String)>(1);
    let bus = Bus::builder()
        .event_handler(move |_: Arc<Numbered>, ctx: Context| {
            let tx = tx.clone();
            async move {
                let sender = ctx.sender().to_string();
                tx.send((
                    ctx.headers().get("k").map(str::to_owned),
                    ctx.correlation_id().map(str::to_owned),
                    sender,
                ))
                .await
                .ok();
                HandlerResult::Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    bus.events()
        .publish(Numbered(0))
        .header("k", "v")
        .correlation_id("c-1")
        .await
        .unwrap();
    let (k, c, sender) = rx.recv().await.unwrap();
    assert_eq!(k.as_deref(), Some("v"));
    assert_eq!(c.as_deref(), Some("c-1"));
    assert_eq!(sender, bus.node_id().to_string());
}

#[tokio::test]
async fn a_full_subscription_does_not_hold_up_the_others() {
    let gate = Arc::new(Notify::new());
    let entered = Arc::new(Notify::new());
    let bus = Bus::builder()
        .event_handler(
            {
                let gate = Arc::clone(&gate);
                let entered = Arc::clone(&entered);
                move |_: Arc<Numbered>, _ctx: Context| {
                    let gate = Arc::clone(&gate);
                    let entered = Arc::clone(&entered);
                    async move {
                        entered.notify_one();
                        gate.notified().await;
                        HandlerResult::Ok(())
                    }
                }
            }
            .with_options(SubscriptionOptions::new().capacity(1)),
        )
        .start()
        .await
        .unwrap();
    let mut other = bus.subscribe::<Numbered>().unwrap();
    // The slow handler takes 0 and blocks, 1 fills its queue; 2 must wait for it...
    bus.events().publish(Numbered(0)).await.unwrap();
    entered.notified().await;
    bus.events().publish(Numbered(1)).await.unwrap();
    let mut third = Box::pin(bus.events().publish(Numbered(2)).into_future());
    assert!((&mut third).now_or_never().is_none());
    // ...but the subscription with room already has it.
    for i in 0..3 {
        assert_eq!(other.recv().await.unwrap().0, i);
    }
    gate.notify_one();
    third.await.unwrap();
}

#[tokio::test]
async fn a_panic_before_the_handler_future_is_caught_and_counted() {
    let (tx, mut rx) = mpsc::channel::<u32>(4);
    let bus = Bus::builder()
        .event_handler(move |e: Arc<Numbered>, _ctx: Context| {
            // The synchronous part of the closure, before its future exists.
            assert_ne!(e.0, 1, "event one");
            let tx = tx.clone();
            async move {
                tx.send(e.0).await.ok();
                HandlerResult::Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    for i in 0..3 {
        bus.events().publish(Numbered(i)).await.unwrap();
    }
    assert_eq!(rx.recv().await, Some(0));
    assert_eq!(
        rx.recv().await,
        Some(2),
        "the subscription died with the panic"
    );
    assert_eq!(bus.stats().event_handler_panics, 1);
}

#[tokio::test]
async fn a_run_time_subscription_can_read_the_context() {
    let bus = Bus::builder().start().await.unwrap();
    let mut sub = bus.subscribe::<Numbered>().unwrap();
    bus.events()
        .publish(Numbered(4))
        .header("tenant", "acme")
        .correlation_id("c-9")
        .await
        .unwrap();
    let (event, ctx) = sub.recv_with_context().await.unwrap();
    assert_eq!(event.0, 4);
    assert_eq!(ctx.headers().get("tenant"), Some("acme"));
    assert_eq!(ctx.correlation_id(), Some("c-9"));
    assert_eq!(ctx.sender(), bus.node_id());
    assert_eq!(ctx.scope(), Scope::Cluster);
}
