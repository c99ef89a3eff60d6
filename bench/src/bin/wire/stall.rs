//! A stalled subscriber among healthy ones: one subscriber process is stopped (SIGSTOP) by the
//! driver while the publisher publishes; the healthy subscribers report how they fared during
//! the stall, the publisher how long it waited and how its memory grew, and the stopped one,
//! once resumed (SIGCONT), what it received.
//!
//! Each role takes its orders as lines on its standard input (from the driver) and answers
//! with `RESULT` lines on its standard output.

use std::future::{Future, IntoFuture};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshbus::{Binary, FullPolicy, SubscriptionOptions};

use crate::msg::{bounded, builder, payload, rss, OrFail, Orders, RoleResult, Tick, Wire};

const BOUND: Duration = Duration::from_secs(20);

/// Long enough that no node of the scenario declares the stopped one (or, once it resumes,
/// the publisher it has not heard from while stopped) dead during a run.
pub(crate) const PEER_TIMEOUT: Duration = Duration::from_secs(120);

/// What a subscriber has seen since `START`: events and the longest silence.
struct Gaps {
    start: Instant,
    count: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    /// The longest time between two events received (or between `START` and the first).
    longest: Duration,
}

impl Gaps {
    fn new() -> Self {
        Gaps {
            start: Instant::now(),
            count: 0,
            first: None,
            last: None,
            longest: Duration::ZERO,
        }
    }

    fn hit(&mut self) {
        let now = Instant::now();
        let before = self.last.unwrap_or(self.start);
        self.longest = self.longest.max(now.duration_since(before));
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.count += 1;
    }
}

/// A subscriber: subscribes to [`Tick`] with `policy` and the default capacity, prints
/// `READY <bus addr>`, then obeys its standard input:
/// - `START`: counts from now, and says `STARTED`;
/// - `REPORT <published> <publisher's end, ms after START>`: waits (bounded) until it has seen
///   `published` events or its bus has dropped the rest, then prints `RESULT stallsub <count>
///   <rate over first..last> <longest gap ms> <silence from the last event to the publisher's
///   end, ms> <remote_events_dropped> <events_dropped> <ms it waited for the rest>`.
///
/// It ends when its standard input closes.
pub(crate) async fn subscriber(wire: Wire, policy: FullPolicy) -> RoleResult {
    let listen = crate::listen_addr(wire);
    let bus = builder(wire)
        .name("stall-sub")
        .listen(listen.clone())
        .peer_timeout(PEER_TIMEOUT)
        .start()
        .await
        .or_fail("start the subscriber bus")?;
    let mut sub = bus
        .subscribe_with::<Tick>(SubscriptionOptions::new().when_full(policy))
        .or_fail("subscribe")?;
    let gaps = Arc::new(Mutex::new(Gaps::new()));
    let total = Arc::new(AtomicU64::new(0));
    let (g, t) = (Arc::clone(&gaps), Arc::clone(&total));
    let reader = tokio::spawn(async move {
        while let Some(tick) = sub.recv().await {
            std::hint::black_box(&tick.0);
            t.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut g) = g.lock() {
                g.hit();
            }
        }
    });
    println!("READY {}", crate::msg::listening(&bus)?);
    let mut orders = Orders::new();
    while let Some(line) = orders.next(Duration::from_secs(300)).await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            Some("START") => {
                total.store(0, Ordering::Relaxed);
                if let Ok(mut g) = gaps.lock() {
                    *g = Gaps::new();
                }
                println!("STARTED");
            }
            Some("REPORT") => {
                let published: u64 = words.get(1).and_then(|w| w.parse().ok()).unwrap_or(0);
                let end_ms: f64 = words.get(2).and_then(|w| w.parse().ok()).unwrap_or(0.0);
                let asked = Instant::now();
                // The subscription's own count of events dropped for it.
                let dropped = || {
                    let subs = bus.subscription_stats();
                    subs.iter().map(|s| s.dropped).sum::<u64>()
                };
                // Until everything is accounted for, or nothing came for 2 s (events dropped
                // at the publisher never come), within 30 s.
                let (mut seen, mut moved) = (total.load(Ordering::Relaxed), Instant::now());
                while seen + dropped() < published
                    && moved.elapsed() < Duration::from_secs(2)
                    && asked.elapsed() < Duration::from_secs(30)
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let now = total.load(Ordering::Relaxed);
                    if now != seen {
                        (seen, moved) = (now, Instant::now());
                    }
                }
                let waited = asked.elapsed();
                let stats = bus.stats();
                let Ok(g) = gaps.lock() else {
                    return Err("the gaps lock is poisoned".into());
                };
                let span = match (g.first, g.last) {
                    (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
                    _ => 0.0,
                };
                let rate = if span > 0.0 && g.count > 1 {
                    (g.count - 1) as f64 / span
                } else {
                    0.0
                };
                let end = g.start + Duration::from_secs_f64(end_ms / 1000.0);
                let silence = end.saturating_duration_since(g.last.unwrap_or(g.start));
                println!(
                    "RESULT stallsub {} {rate:.0} {:.3} {:.3} {} {} {:.0}",
                    g.count,
                    g.longest.as_secs_f64() * 1000.0,
                    silence.as_secs_f64() * 1000.0,
                    stats.remote_events_dropped,
                    stats.events_dropped,
                    waited.as_secs_f64() * 1000.0,
                );
                println!("DONE");
            }
            _ => {}
        }
    }
    reader.abort();
    let _ = bus.shutdown().await;
    crate::remove_socket(&listen);
    Ok(())
}

/// What the publisher does, from the driver's options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StallOpts {
    pub(crate) subscribers: usize,
    pub(crate) events: u64,
    pub(crate) payload: usize,
    pub(crate) bound_bytes: usize,
    pub(crate) secs: Duration,
}

/// The publisher: joins the subscribers, prints `READY`, waits for `GO` on its standard input
/// (the driver has stopped one subscriber by then), publishes `events` events within `secs`,
/// and prints `RESULT stall <published> <secs to the last publish> <gave up 0|1> <rss before>
/// <rss peak> <first wait: event number or -1> <first wait: ms after GO> <waits> <ms waited in
/// all> <longest wait ms> <peer_events_dropped> <peer_events_queue_full> <queued bytes, most of
/// any peer> <queue_bytes_limit> <event number of the longest wait>`, then stays up (the stopped subscriber's events are still
/// queued here) until its standard input closes.
pub(crate) async fn publisher(wire: Wire, bus_addrs: &str, opts: StallOpts) -> RoleResult {
    let builder = builder(wire)
        .name("stall-pub")
        .peers(bus_addrs.split(',').map(str::to_owned))
        .peer_queue_bytes(opts.bound_bytes)
        // The stopped subscriber sends nothing: without this, it would be declared dead after
        // 5 s, its queue freed and the stall over.
        .peer_timeout(PEER_TIMEOUT);
    let bus = crate::msg::publisher(builder, opts.subscribers, BOUND).await?;
    let body = payload(opts.payload);
    // Make the event once before measuring, so the allocator has seen its size.
    let template = Binary::from(body);
    println!("READY");
    let mut orders = Orders::new();
    match bounded("GO from the driver", BOUND, orders.next(BOUND)).await {
        Some(l) if l.trim() == "GO" => {}
        other => return Err(format!("expected GO, got {other:?}")),
    }
    let (rss_before, _) = rss();
    let mut rss_peak = rss_before;
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + opts.secs;
    let mut published = 0u64;
    let mut last_ok = Duration::ZERO;
    let mut gave_up = false;
    let mut first_wait: Option<(u64, Duration)> = None;
    let (mut waits, mut waited, mut longest) = (0u64, Duration::ZERO, Duration::ZERO);
    // The event number the longest wait came at.
    let mut longest_at = 0u64;
    while published < opts.events {
        let t0 = Instant::now();
        // Bounded from outside by the run's deadline (`timeout_at`), so that a publish that
        // waits is seen waiting; `publish(..).timeout(..)` would bound it the same way.
        // A copy per event, as the application of the other scenarios makes: the clone of a
        // `Binary` would share one buffer.
        let event = Tick(Binary::copy_from_slice(&template));
        let mut publish = std::pin::pin!(bus.events().publish(event).into_future());
        // A wait is a publish that is not ready when first polled (a time threshold would
        // count the scheduler's preemptions too).
        let mut pending = false;
        let watched = std::future::poll_fn(|cx| {
            let poll = publish.as_mut().poll(cx);
            pending |= poll.is_pending();
            poll
        });
        match tokio::time::timeout_at(deadline, watched).await {
            Ok(r) => r.or_fail("publish")?,
            Err(_) => {
                gave_up = true;
            }
        }
        let took = t0.elapsed();
        if pending {
            first_wait.get_or_insert((published, t0.duration_since(start)));
            waits += 1;
            waited += took;
            if took > longest {
                (longest, longest_at) = (took, published);
            }
        }
        if gave_up {
            break;
        }
        published += 1;
        last_ok = start.elapsed();
        if published % 4096 == 0 {
            rss_peak = rss_peak.max(rss().0);
        }
    }
    let (rss_after, _) = rss();
    rss_peak = rss_peak.max(rss_after);
    let stats = bus.stats();
    let peers = bus.peer_stats();
    let queued = peers.iter().map(|p| p.queued_bytes).max().unwrap_or(0);
    let limit = peers.first().map_or(0, |p| p.queue_bytes_limit);
    for p in &peers {
        eprintln!("wire: stall-pub: peer_stats() says: {p:?}");
    }
    let (fw_n, fw_ms) =
        first_wait.map_or((-1i64, -1.0), |(n, t)| (n as i64, t.as_secs_f64() * 1000.0));
    println!(
        "RESULT stall {published} {:.3} {} {rss_before} {rss_peak} {fw_n} {fw_ms:.1} {waits} {:.1} {:.1} {} {} {queued} {limit} {longest_at}",
        last_ok.as_secs_f64(),
        u8::from(gave_up),
        waited.as_secs_f64() * 1000.0,
        longest.as_secs_f64() * 1000.0,
        stats.peer_events_dropped,
        stats.peer_events_queue_full,
    );
    println!("DONE");
    // Stay up while the resumed subscriber drains what is queued for it here.
    while orders.next(Duration::from_secs(120)).await.is_some() {}
    // The subscriber may be gone or stopped: do not wait for a goodbye.
    std::process::exit(0);
}
