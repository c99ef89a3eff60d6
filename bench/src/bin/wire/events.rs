//! Event throughput: one publisher process to one subscriber process, raw coalescing writer
//! against meshbus events, measured in turns.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshbus::prelude::*;
use meshbus::{Binary, SubscriptionOptions};

use crate::msg::{bounded, builder, payload, Drain, OrFail, RoleResult, SubReport, Tick, Wire};
use crate::raw::{self, RawListener, RunReport};

const BOUND: Duration = Duration::from_secs(30);

/// What the subscriber has seen since its last report.
struct Seen {
    base: Instant,
    count: AtomicU64,
    /// Nanoseconds since `base` (+1, so that 0 means "none yet").
    first: AtomicU64,
    last: AtomicU64,
    /// The process's CPU time at the first event.
    cpu_first: AtomicU64,
}

impl Seen {
    fn hit(&self) {
        let now = self.base.elapsed().as_nanos() as u64 + 1;
        if self.count.fetch_add(1, Ordering::Relaxed) == 0 {
            self.first.store(now, Ordering::Relaxed);
            self.cpu_first
                .store(crate::msg::cpu_ns(), Ordering::Relaxed);
        }
        self.last.store(now, Ordering::Relaxed);
    }

    /// (count, nanos from the first event to the last, CPU nanos since the first).
    fn take(&self) -> (u64, u64, u64) {
        let count = self.count.swap(0, Ordering::Relaxed);
        let first = self.first.swap(0, Ordering::Relaxed);
        let last = self.last.swap(0, Ordering::Relaxed);
        let cpu = crate::msg::cpu_ns().saturating_sub(self.cpu_first.swap(0, Ordering::Relaxed));
        (count, last.saturating_sub(first), cpu)
    }
}

/// How the subscriber's subscription and its consumer behave.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SubOpts {
    /// Queue capacity of the `Wait` subscription.
    pub(crate) capacity: usize,
    /// The consumer pauses for `pause` after every `pause_every` events (0: never), as a
    /// consumer that sometimes waits for something else does.
    pub(crate) pause_every: u64,
    pub(crate) pause: Duration,
}

/// The subscriber: a raw counting server and a bus subscribed to [`Tick`] as `opts` say;
/// prints `READY <raw addr> <bus addr>` and serves until its standard input closes.
pub(crate) async fn subscriber(wire: Wire, opts: SubOpts) -> RoleResult {
    let raw = RawListener::bind(wire)
        .await
        .or_fail("bind the raw listener")?;
    let raw_addr = raw.addr();
    let counter = tokio::spawn(raw::count_server(raw, wire));
    let seen = Arc::new(Seen {
        base: Instant::now(),
        count: AtomicU64::new(0),
        first: AtomicU64::new(0),
        last: AtomicU64::new(0),
        cpu_first: AtomicU64::new(0),
    });
    let dropped_before = Arc::new(AtomicU64::new(0));
    let listen = crate::listen_addr(wire);
    let drain_seen = Arc::clone(&seen);
    let bus = builder(wire)
        .name("ev-sub")
        .listen(listen.clone())
        .command_handler(move |d: Drain, ctx: Context| {
            let seen = Arc::clone(&drain_seen);
            let dropped_before = Arc::clone(&dropped_before);
            async move {
                // Events and this command travel on different lanes: wait for the events
                // still in flight, within a bound.
                let until = Instant::now() + Duration::from_secs(5);
                // This subscription's own count of events dropped for it.
                let dropped = || {
                    let subs = ctx.bus().subscription_stats();
                    subs.iter().map(|s| s.dropped).sum::<u64>()
                };
                while seen.count.load(Ordering::Relaxed)
                    + dropped().saturating_sub(dropped_before.load(Ordering::Relaxed))
                    < d.published
                    && Instant::now() < until
                {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let (count, nanos, cpu_nanos) = seen.take();
                let now = dropped();
                let before = dropped_before.swap(now, Ordering::Relaxed);
                HandlerResult::Ok(SubReport {
                    count,
                    nanos,
                    dropped: now - before,
                    cpu_nanos,
                })
            }
        })
        .start()
        .await
        .or_fail("start the subscriber bus")?;
    let mut sub = bus
        .subscribe_with::<Tick>(SubscriptionOptions::new().capacity(opts.capacity))
        .or_fail("subscribe")?;
    let consumer = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(tick) = sub.recv().await {
            std::hint::black_box(&tick.0);
            seen.hit();
            n += 1;
            if opts.pause_every > 0 && n % opts.pause_every == 0 {
                tokio::time::sleep(opts.pause).await;
            }
        }
    });
    println!("READY {raw_addr} {}", crate::msg::listening(&bus)?);
    crate::until_stdin_closes().await;
    counter.abort();
    consumer.abort();
    let _ = bus.shutdown().await;
    crate::remove_socket(&listen);
    Ok(())
}

/// What the publisher does, from the driver's options.
#[derive(Debug, Clone)]
pub(crate) struct EventOpts {
    pub(crate) sizes: Vec<usize>,
    pub(crate) rounds: usize,
    pub(crate) secs: Duration,
    pub(crate) max: u64,
    /// Skip the raw runs (for profiles, and for the runs that only count what is lost).
    pub(crate) bus_only: bool,
    /// Skip the meshbus runs (to count the raw baseline's system calls).
    pub(crate) raw_only: bool,
}

/// The publisher: for each size and round, a raw run and a meshbus run (in alternating order);
/// prints `RESULT ev <size> <impl> <msgs/s at the subscriber> <received> <sent> <dropped>
/// <publisher CPU ns per event> <subscriber CPU ns per event>`.
pub(crate) async fn publisher(
    wire: Wire,
    raw_addr: &str,
    bus_addr: &str,
    opts: EventOpts,
) -> RoleResult {
    let builder = builder(wire).name("ev-pub").peers([bus_addr.to_owned()]);
    let bus = crate::msg::publisher(builder, 1, BOUND).await?;
    for &size in &opts.sizes {
        let body = payload(size);
        // A short warm-up of each.
        let short = Duration::from_millis(200);
        if !opts.bus_only {
            bounded(
                "raw warm-up",
                BOUND,
                raw::blast(wire, raw_addr, &body, short, opts.max),
            )
            .await
            .or_fail("raw warm-up")?;
        }
        if !opts.raw_only {
            bounded(
                "bus warm-up",
                BOUND,
                bus_blast(&bus, &body, short, opts.max),
            )
            .await?;
        }
        let (mut raw_total, mut bus_total) = (Total::default(), Total::default());
        for round in 0..opts.rounds {
            let raw_first = round % 2 == 0;
            for turn in 0..2 {
                if (turn == 0) == raw_first {
                    if opts.bus_only {
                        continue;
                    }
                    let r = bounded(
                        "a raw run",
                        BOUND,
                        raw::blast(wire, raw_addr, &body, opts.secs, opts.max),
                    )
                    .await
                    .or_fail("raw run")?;
                    raw_total.add(r);
                } else if !opts.raw_only {
                    let r = bounded(
                        "a meshbus run",
                        BOUND,
                        bus_blast(&bus, &body, opts.secs, opts.max),
                    )
                    .await?;
                    bus_total.add(r);
                }
            }
        }
        for (name, t) in [("raw", raw_total), ("bus", bus_total)] {
            let r = t.0;
            println!(
                "RESULT ev {size} {name} {:.0} {} {} {} {:.0} {:.0}",
                t.rate(),
                r.count,
                r.sent,
                r.dropped,
                r.pub_cpu as f64 / r.sent.max(1) as f64,
                r.sub_cpu as f64 / r.count.max(1) as f64,
            );
        }
    }
    println!("DONE");
    let _ = bus.shutdown().await;
    Ok(())
}

/// The sum of a kind's runs.
#[derive(Debug, Default, Clone, Copy)]
struct Total(RunReport);

impl Total {
    fn add(&mut self, r: RunReport) {
        let t = &mut self.0;
        t.sent += r.sent;
        t.count += r.count;
        t.nanos += r.nanos;
        t.dropped += r.dropped;
        t.pub_cpu += r.pub_cpu;
        t.sub_cpu += r.sub_cpu;
    }

    fn rate(&self) -> f64 {
        SubReport {
            count: self.0.count,
            nanos: self.0.nanos,
            ..SubReport::default()
        }
        .rate()
    }
}

/// One meshbus run: publishes [`Tick`]s for `secs` or `max` events, then asks the subscriber
/// what it saw.
async fn bus_blast(bus: &Bus, body: &[u8], secs: Duration, max: u64) -> RoleResult<RunReport> {
    let start = Instant::now();
    let cpu = crate::msg::cpu_ns();
    let mut sent = 0u64;
    while sent < max {
        // The application makes each event: one allocation and one copy, as the raw producer.
        bus.events()
            .publish(Tick(Binary::from(body.to_vec())))
            .await
            .or_fail("publish")?;
        sent += 1;
        if sent % 1024 == 0 && start.elapsed() >= secs {
            break;
        }
    }
    let report = bus
        .commands()
        .send(Drain { published: sent })
        .timeout(Duration::from_secs(20))
        .await
        .or_fail("the subscriber's report")?;
    Ok(RunReport {
        sent,
        count: report.count,
        nanos: report.nanos,
        dropped: report.dropped,
        pub_cpu: crate::msg::cpu_ns().saturating_sub(cpu),
        sub_cpu: report.cpu_nanos,
    })
}
