//! A stalled subscriber: the subscriber process is stopped (SIGSTOP) by the driver while the
//! publisher publishes; the publisher reports its resident memory against its per-peer bound.

use std::time::{Duration, Instant};

use meshbus::prelude::*;
use meshbus::{Binary, FullPolicy};

use crate::msg::{bounded, builder, payload, rss, OrFail, RoleResult, Tick, Wire};

const BOUND: Duration = Duration::from_secs(20);

/// The subscriber: subscribes to [`Tick`] and reads it; prints `READY <bus addr>`, then
/// serves until its standard input closes (or the driver stops it).
pub(crate) async fn subscriber(wire: Wire) -> RoleResult {
    let listen = crate::listen_addr(wire);
    let bus = builder(wire)
        .name("stall-sub")
        .listen(listen.clone())
        // Our publisher is about to go silent for us: it is stopped, not dead.
        .peer_timeout(Duration::from_secs(120))
        .start()
        .await
        .or_fail("start the subscriber bus")?;
    let mut sub = bus.subscribe::<Tick>().or_fail("subscribe")?;
    let reader = tokio::spawn(async move { while sub.recv().await.is_some() {} });
    println!("READY {}", crate::msg::listening(&bus)?);
    crate::until_stdin_closes().await;
    reader.abort();
    let _ = bus.shutdown().await;
    crate::remove_socket(&listen);
    Ok(())
}

/// What the publisher does, from the driver's options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StallOpts {
    pub(crate) policy: FullPolicy,
    pub(crate) events: u64,
    pub(crate) payload: usize,
    pub(crate) bound_bytes: usize,
    pub(crate) secs: Duration,
}

/// The publisher: joins the subscriber, prints `READY`, waits for `GO` on its standard input
/// (the driver has stopped the subscriber by then), publishes, and prints
/// `RESULT stall <policy> <published> <secs to the last publish> <stalled 0|1>
/// <rss before> <rss peak> <hwm after> <peer_events_dropped> <peer_events_queue_full>
/// <bytes queued for the peer>`.
pub(crate) async fn publisher(wire: Wire, bus_addr: &str, opts: StallOpts) -> RoleResult {
    let bus = builder(wire)
        .name("stall-pub")
        .peers([bus_addr.to_owned()])
        .peer_queue_bytes(opts.bound_bytes)
        // Frames are not the bound here: bytes are.
        .peer_queue_capacity(1 << 20)
        // The stopped subscriber sends nothing: without this, it would be declared dead after
        // 5 s, its queue freed and the stall over.
        .peer_timeout(Duration::from_secs(120))
        .start()
        .await
        .or_fail("start the publisher bus")?;
    bounded(
        "the mesh",
        BOUND,
        bus.ready().subscribers::<Tick>(Scope::Cluster, 1),
    )
    .await;
    let body = payload(opts.payload);
    // Make the event once before measuring, so the allocator has seen its size.
    let template = Binary::from(body);
    println!("READY");
    let mut line = String::new();
    let stdin = tokio::io::stdin();
    let mut stdin = tokio::io::BufReader::new(stdin);
    bounded(
        "GO from the driver",
        BOUND,
        tokio::io::AsyncBufReadExt::read_line(&mut stdin, &mut line),
    )
    .await
    .or_fail("read GO")?;
    let (rss_before, _) = rss();
    let mut rss_peak = rss_before;
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + opts.secs;
    let mut published = 0u64;
    let mut last_ok = Duration::ZERO;
    let mut stalled = false;
    while published < opts.events {
        let publish = bus
            .events()
            // A copy per event, as the application of the other scenarios makes: the clone of a
            // `Binary` would share one buffer.
            .publish(Tick(Binary::copy_from_slice(&template)));
        match tokio::time::timeout_at(deadline, publish).await {
            Ok(r) => r.or_fail("publish")?,
            Err(_) => {
                stalled = true;
                break;
            }
        }
        published += 1;
        last_ok = start.elapsed();
        if published % 4096 == 0 {
            rss_peak = rss_peak.max(rss().0);
        }
    }
    let (rss_after, hwm) = rss();
    rss_peak = rss_peak.max(rss_after);
    let stats = bus.stats();
    // What the application can see of its slow peer.
    let peer = bus.peer_stats().into_iter().next();
    let queued = peer.as_ref().map_or(0, |p| p.queued_bytes);
    if let Some(p) = &peer {
        eprintln!("wire: stall-pub: peer_stats() says: {p:?}");
    }
    let policy = match opts.policy {
        FullPolicy::Wait => "wait",
        _ => "drop",
    };
    println!(
        "RESULT stall {policy} {published} {:.3} {} {rss_before} {rss_peak} {hwm} {} {} {queued}",
        last_ok.as_secs_f64(),
        u8::from(stalled),
        stats.peer_events_dropped,
        stats.peer_events_queue_full,
    );
    println!("DONE");
    // The subscriber is stopped: do not wait for a goodbye it cannot read.
    std::process::exit(0);
}
