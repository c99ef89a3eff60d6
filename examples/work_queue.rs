//! Competing consumers and a single active consumer: two instances of a `billing` service
//! share the work of one event, two instances of a `ledger` service take turns being the one
//! that records it, and an `audit` service sees every event. Five nodes on loopback TCP.
//!
//! ```sh
//! cargo run --example work_queue
//! ```
//!
//! It exits by itself within a few seconds. `shop` publishes 1,000 `OrderPlaced` events.
//! `billing-1` and `billing-2` subscribe in the group `billing`: each order is charged once,
//! by one of them, and they share the orders about evenly. `ledger-1` and `ledger-2` subscribe
//! in the exclusive group `ledger`: the older member records every order, in order; when it
//! shuts down halfway, the other takes over. `audit` subscribes outside any group and sees
//! every order.

mod support;

use std::error::Error as StdError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshbus::prelude::*;
use meshbus::tcp::TcpTransport;
use meshbus::{BusBuilder, EventHandlerExt, GroupKind, SubscriptionOptions};
use serde::{Deserialize, Serialize};

/// An order was placed.
#[derive(Serialize, Deserialize, Event, Debug)]
#[meshbus(name = "shop.order_placed")]
struct OrderPlaced {
    order: u32,
    cents: u64,
}

const ORDERS: u32 = 1_000;

fn node(name: &str) -> BusBuilder {
    Bus::builder()
        .name(name)
        .transport(TcpTransport::new())
        .listen("tcp://127.0.0.1:0")
}

/// A service instance that counts the orders it handles, subscribed with `options`.
async fn instance(
    name: &str,
    options: SubscriptionOptions,
    count: &Arc<AtomicU64>,
) -> Result<Bus, meshbus::Error> {
    let count = Arc::clone(count);
    node(name)
        .event_handler(
            (move |_: Arc<OrderPlaced>, _ctx: Context| {
                let count = Arc::clone(&count);
                async move {
                    count.fetch_add(1, Ordering::Relaxed);
                    HandlerResult::Ok(())
                }
            })
            .with_options(options),
        )
        .start()
        .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn StdError>> {
    support::init_logging();
    let counts: Vec<Arc<AtomicU64>> = (0..5).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let billing = SubscriptionOptions::new().group("billing");
    let ledger = SubscriptionOptions::new()
        .group("ledger")
        .group_kind(GroupKind::Exclusive);
    let services = [
        instance("billing-1", billing.clone(), &counts[0]).await?,
        instance("billing-2", billing, &counts[1]).await?,
        instance("ledger-1", ledger.clone(), &counts[2]).await?,
        instance("ledger-2", ledger, &counts[3]).await?,
        instance("audit", SubscriptionOptions::new(), &counts[4]).await?,
    ];
    let shop = node("shop")
        .peers(services.iter().map(|s| s.listen_addrs()[0].to_string()))
        .start()
        .await?;
    let ready = Duration::from_secs(10);
    shop.ready()
        .members::<OrderPlaced>("billing", Scope::Cluster, 2)
        .timeout(ready)
        .await?;
    shop.ready()
        .members::<OrderPlaced>("ledger", Scope::Cluster, 2)
        .timeout(ready)
        .await?;
    shop.ready()
        .subscribers::<OrderPlaced>(Scope::Cluster, 5)
        .timeout(ready)
        .await?;

    let publish = |orders: std::ops::Range<u32>| {
        shop.events()
            .publish_all(orders.map(|order| OrderPlaced {
                order,
                cents: 100 + u64::from(order % 50),
            }))
            .timeout(Duration::from_secs(30))
    };
    publish(0..ORDERS / 2).await?;
    // The active ledger instance leaves; the other takes over at once (its interest says so).
    let [b1, b2, l1, l2, audit] = services;
    let seen = |i: usize| counts[i].load(Ordering::Relaxed);
    let until = Instant::now() + Duration::from_secs(10);
    while seen(2) + seen(3) < u64::from(ORDERS / 2) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (active, standby) = if seen(2) > 0 { (l1, l2) } else { (l2, l1) };
    println!("ledger: {} recorded the first half", active.name());
    active.shutdown().await?;
    shop.ready()
        .members::<OrderPlaced>("ledger", Scope::Cluster, 1)
        .timeout(ready)
        .await?;
    publish(ORDERS / 2..ORDERS).await?;

    let total = |s: &[usize]| s.iter().map(|&i| seen(i)).sum::<u64>();
    let until = Instant::now() + Duration::from_secs(10);
    while (total(&[0, 1]) < u64::from(ORDERS) || seen(4) < u64::from(ORDERS))
        && Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "billing: billing-1 charged {}, billing-2 charged {} (each order once: {})",
        seen(0),
        seen(1),
        total(&[0, 1])
    );
    println!(
        "ledger: ledger-1 recorded {}, ledger-2 recorded {}",
        seen(2),
        seen(3)
    );
    println!("audit: saw {} of {ORDERS}", seen(4));
    for g in shop.group_stats() {
        println!(
            "shop -> group {}: {} delivered, {} passed over a full member, {} dropped",
            g.group, g.delivered, g.passed_over, g.dropped
        );
    }
    if total(&[0, 1]) != u64::from(ORDERS) || seen(4) != u64::from(ORDERS) {
        return Err("an order was missed or handled twice".into());
    }
    for bus in [shop, b1, b2, standby, audit] {
        bus.shutdown().await?;
    }
    Ok(())
}
