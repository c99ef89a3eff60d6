//! Backpressure across the network: three nodes on loopback TCP, one publisher and two
//! subscribers that read at very different speeds.
//!
//! ```sh
//! cargo run --example backpressure
//! ```
//!
//! It exits by itself within a few seconds. `sensors` publishes 2,000 readings with
//! `publish_all`. `archive` stores each one slowly, with a queue of 16 and the default `Wait`
//! policy: it must miss none, so its node grants `sensors` room for 16 readings at a time and
//! more as it works through them. `dashboard` keeps its own queue of 16 with `DropNewest`: it
//! wants the latest readings and never holds anyone up, so `sensors` drops readings for it, before
//! they are sent, whenever it has no room. What each side saw is printed at the end: the
//! subscriber's end (`subscription_stats`) and the publisher's end (`peer_stats`).

mod support;

use std::error::Error as StdError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshbus::prelude::*;
use meshbus::tcp::TcpTransport;
use meshbus::{BusBuilder, EventHandlerExt, FullPolicy, SubscriptionOptions};
use serde::{Deserialize, Serialize};

/// One sensor reading.
#[derive(Serialize, Deserialize, Event, Debug)]
#[meshbus(name = "plant.reading")]
struct Reading {
    seq: u32,
    celsius: f32,
}

const READINGS: u32 = 2_000;

fn node(name: &str) -> BusBuilder {
    Bus::builder()
        .name(name)
        .transport(TcpTransport::new())
        .listen("tcp://127.0.0.1:0")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn StdError>> {
    support::init_logging();

    // The archive stores every reading, a little slowly.
    let stored = Arc::new(AtomicU64::new(0));
    let archive = {
        let stored = Arc::clone(&stored);
        node("archive")
            .event_handler(
                (move |r: Arc<Reading>, _ctx: Context| {
                    let stored = Arc::clone(&stored);
                    async move {
                        if r.seq % 100 == 0 {
                            // A write to slow storage, now and then.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        stored.fetch_add(1, Ordering::Relaxed);
                        HandlerResult::Ok(())
                    }
                })
                .with_options(SubscriptionOptions::new().capacity(16)),
            )
            .start()
            .await?
    };
    // The dashboard shows the latest readings and drops what it has no room for.
    let shown = Arc::new(AtomicU64::new(0));
    let dashboard = {
        let shown = Arc::clone(&shown);
        node("dashboard")
            .event_handler(
                (move |_: Arc<Reading>, _ctx: Context| {
                    let shown = Arc::clone(&shown);
                    async move {
                        shown.fetch_add(1, Ordering::Relaxed);
                        // Redrawing takes a while.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        HandlerResult::Ok(())
                    }
                })
                .with_options(
                    SubscriptionOptions::new()
                        .capacity(16)
                        .when_full(FullPolicy::DropNewest),
                ),
            )
            .start()
            .await?
    };
    let sensors = node("sensors")
        .peers([
            archive.listen_addrs()[0].to_string(),
            dashboard.listen_addrs()[0].to_string(),
        ])
        .start()
        .await?;
    sensors
        .ready()
        .subscribers::<Reading>(Scope::Cluster, 2)
        .timeout(Duration::from_secs(10))
        .await?;

    let started = Instant::now();
    sensors
        .events()
        .publish_all((0..READINGS).map(|seq| Reading {
            seq,
            celsius: 20.0 + (seq % 7) as f32 / 2.0,
        }))
        .timeout(Duration::from_secs(30))
        .await?;
    println!(
        "sensors: {READINGS} readings published in {:?} (paced by the archive)",
        started.elapsed()
    );

    // The archive gets every reading; wait for the last ones to be stored.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stored.load(Ordering::Relaxed) < u64::from(READINGS) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "archive: stored {} of {READINGS}",
        stored.load(Ordering::Relaxed)
    );
    println!(
        "dashboard: showed {} of {READINGS} (it drops what it has no room for)",
        shown.load(Ordering::Relaxed)
    );

    // The publisher's end: per subscriber node, what was sent, waited for and dropped.
    for peer in sensors.peer_stats() {
        for e in &peer.events {
            println!(
                "sensors -> {}: {} sent, {} publishes waited, {} dropped before sending ({:?})",
                peer.name, e.sent, e.waited, e.dropped, e.when_full
            );
        }
    }
    // The subscribers' end.
    for (name, bus) in [("archive", &archive), ("dashboard", &dashboard)] {
        for s in bus.subscription_stats() {
            println!(
                "{name}: {} delivered, {} dropped here, {} queued now (capacity {})",
                s.delivered, s.dropped, s.queued, s.capacity
            );
        }
    }
    if stored.load(Ordering::Relaxed) != u64::from(READINGS) {
        return Err("the archive missed readings".into());
    }

    for bus in [sensors, archive, dashboard] {
        bus.shutdown().await?;
    }
    Ok(())
}
