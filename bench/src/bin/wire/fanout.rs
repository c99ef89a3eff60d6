//! Fan-out: one publisher process to N subscriber processes (each its own node), against
//! 1 → 1 with the same processes and links: [`TickOne`] has one subscriber (subscriber 0),
//! [`Tick`] all of them. The driver orders each run and collects the figures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshbus::prelude::*;
use meshbus::{Binary, SubscriptionOptions};

use crate::msg::{
    bounded, builder, cpu_ns, payload, OrFail, Orders, RoleResult, Tick, TickOne, Wire,
};

const BOUND: Duration = Duration::from_secs(30);

/// The group the subscribers of the `group` scenario join.
pub(crate) const GROUP: &str = "fan";

/// Events a subscriber has seen since its last report.
#[derive(Default)]
struct Seen {
    count: AtomicU64,
    /// Nanoseconds since the process's `base` (+1, so that 0 means "none yet").
    first: AtomicU64,
    last: AtomicU64,
    cpu_first: AtomicU64,
}

impl Seen {
    fn hit(&self, base: Instant) {
        let now = base.elapsed().as_nanos() as u64 + 1;
        if self.count.fetch_add(1, Ordering::Relaxed) == 0 {
            self.first.store(now, Ordering::Relaxed);
            self.cpu_first.store(cpu_ns(), Ordering::Relaxed);
        }
        self.last.store(now, Ordering::Relaxed);
    }
}

/// A subscriber: subscribes to [`Tick`] (and, as subscriber 0, to [`TickOne`]) with room for
/// 65,536 events, prints `READY <bus addr>`, then on `REPORT <published>` waits (bounded)
/// until it has seen them all, or its bus dropped the rest, and prints `RESULT fansub <index>
/// <count> <nanos first..last> <dropped> <CPU ns since the first event>`. It ends when its
/// standard input closes.
///
/// With `group`, it subscribes to [`Tick`] as a member of the group [`GROUP`]: each event goes
/// to one of the subscribers (the `group` scenario).
pub(crate) async fn subscriber(wire: Wire, index: usize, group: bool) -> RoleResult {
    let listen = crate::listen_addr(wire);
    let bus = builder(wire)
        .name(format!("fan-sub-{index}"))
        .listen(listen.clone())
        .start()
        .await
        .or_fail("start the subscriber bus")?;
    let base = Instant::now();
    let seen = Arc::new(Seen::default());
    let opts = SubscriptionOptions::new().capacity(1 << 16);
    let tick_opts = if group {
        opts.clone().group(GROUP)
    } else {
        opts.clone()
    };
    let mut all = bus.subscribe_with::<Tick>(tick_opts).or_fail("subscribe")?;
    let s = Arc::clone(&seen);
    let mut readers = vec![tokio::spawn(async move {
        while let Some(tick) = all.recv().await {
            std::hint::black_box(&tick.0);
            s.hit(base);
        }
    })];
    if index == 0 {
        let mut one = bus.subscribe_with::<TickOne>(opts).or_fail("subscribe")?;
        let s = Arc::clone(&seen);
        readers.push(tokio::spawn(async move {
            while let Some(tick) = one.recv().await {
                std::hint::black_box(&tick.0);
                s.hit(base);
            }
        }));
    }
    println!("READY {}", crate::msg::listening(&bus)?);
    let mut orders = Orders::new();
    let mut dropped_before = 0;
    while let Some(line) = orders.next(Duration::from_secs(300)).await {
        let Some(published) = line
            .strip_prefix("REPORT ")
            .and_then(|n| n.trim().parse::<u64>().ok())
        else {
            continue;
        };
        let dropped = || bus.stats().remote_events_dropped - dropped_before;
        let asked = Instant::now();
        let (mut got, mut moved) = (seen.count.load(Ordering::Relaxed), Instant::now());
        while got + dropped() < published
            && moved.elapsed() < Duration::from_secs(2)
            && asked.elapsed() < BOUND
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let now = seen.count.load(Ordering::Relaxed);
            if now != got {
                (got, moved) = (now, Instant::now());
            }
        }
        let count = seen.count.swap(0, Ordering::Relaxed);
        let first = seen.first.swap(0, Ordering::Relaxed);
        let last = seen.last.swap(0, Ordering::Relaxed);
        let cpu = cpu_ns().saturating_sub(seen.cpu_first.swap(0, Ordering::Relaxed));
        let d = dropped();
        dropped_before += d;
        println!(
            "RESULT fansub {index} {count} {} {d} {cpu}",
            last.saturating_sub(first)
        );
        println!("DONE");
    }
    for r in readers {
        r.abort();
    }
    let _ = bus.shutdown().await;
    crate::remove_socket(&listen);
    Ok(())
}

/// The publisher: joins the `subscribers` subscribers (comma-separated addresses), prints
/// `READY`, then obeys its standard input:
/// - `RUN one|all <secs> <max>`: publishes [`TickOne`] (1 → 1) or [`Tick`] (1 → N) of
///   `payload` bytes for `secs` or `max` events, prints `RESULT sent <n>` and `DONE`;
/// - `CPU`: prints `RESULT cpu <CPU ns since the last RUN began>` and `DONE` (the driver asks
///   once every subscriber has reported, so the writing of the run is in it).
pub(crate) async fn publisher(
    wire: Wire,
    bus_addrs: &str,
    subscribers: usize,
    size: usize,
    group: bool,
) -> RoleResult {
    let builder = builder(wire)
        .name("fan-pub")
        .peers(bus_addrs.split(',').map(str::to_owned));
    let bus = crate::msg::publisher(builder, subscribers, BOUND).await?;
    bounded(
        "the mesh",
        BOUND,
        bus.ready().subscribers::<TickOne>(Scope::Cluster, 1),
    )
    .await;
    if group {
        bounded(
            "the group",
            BOUND,
            bus.ready()
                .members::<Tick>(GROUP, Scope::Cluster, subscribers),
        )
        .await;
    }
    let body = payload(size);
    println!("READY");
    let mut orders = Orders::new();
    let mut cpu_start = cpu_ns();
    while let Some(line) = orders.next(Duration::from_secs(300)).await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["RUN", mode, secs, max] => {
                let secs = Duration::from_secs_f64(secs.parse().unwrap_or(1.0));
                let max: u64 = max.parse().unwrap_or(10_000_000);
                cpu_start = cpu_ns();
                let start = Instant::now();
                let mut sent = 0u64;
                while sent < max {
                    // The application makes each event: one allocation and one copy.
                    let bytes = Binary::from(body.to_vec());
                    let publish = async {
                        if *mode == "one" {
                            bus.events().publish(TickOne(bytes)).await
                        } else {
                            bus.events().publish(Tick(bytes)).await
                        }
                    };
                    bounded("a publish", BOUND, publish)
                        .await
                        .or_fail("publish")?;
                    sent += 1;
                    if sent % 1024 == 0 && start.elapsed() >= secs {
                        break;
                    }
                }
                println!("RESULT sent {sent}");
                println!("DONE");
            }
            ["CPU"] => {
                println!("RESULT cpu {}", cpu_ns().saturating_sub(cpu_start));
                println!("DONE");
            }
            _ => {}
        }
    }
    let _ = bus.shutdown().await;
    Ok(())
}
