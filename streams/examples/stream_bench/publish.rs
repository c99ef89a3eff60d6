//! Confirmed publish over TCP: `bus.streams().append` with C concurrent callers against
//! meshbus commands to a trivial handler on the same host node, same body, same concurrency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::path::Path;

use bytes::Bytes;
use meshbus_core::{Binary, Bus, BusBuilder, Command, Scope};
use meshbus_streams::{FsyncPolicy, StreamConfig, StreamsBuilderExt, StreamsExt};
use serde::{Deserialize, Serialize};

use crate::{bounded, client_of, listening, node, per_sec, runtime, Blob};

/// The baseline's command: the same bytes as the appended event, answered with nothing.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Sink {
    data: Binary,
}

impl Command for Sink {
    const NAME: &'static str = "bench.sink";
    type Reply = ();
}

/// Rounds of each measurement, interleaved.
const ROUNDS: usize = 3;
/// The longest one measurement may run; it then stops and counts what was done.
const CAP: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Command,
    Append(&'static str),
}

/// What one measurement did: operations, time, and (both buses are in this process) CPU time
/// and context switches per operation.
#[derive(Debug, Clone, Copy)]
struct Done {
    n: u64,
    time: Duration,
    cpu_us: f64,
    switches: f64,
}

/// `total` operations (or as many as [`CAP`] allows) from `callers` concurrent tasks, each
/// awaiting its own before the next.
async fn measure(client: &Bus, op: Op, body: &Bytes, callers: u64, total: u64) -> Done {
    let (cpu0, sw0) = crate::counters();
    let tickets = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (client, tickets, data) = (client.clone(), tickets.clone(), Binary::from(body.clone()));
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while tickets.fetch_add(1, Ordering::Relaxed) < total && start.elapsed() < CAP {
                match op {
                    Op::Command => client
                        .commands()
                        .scope(Scope::Network)
                        .send(Sink { data: data.clone() })
                        .await
                        .expect("command"),
                    Op::Append(stream) => {
                        client
                            .streams()
                            .append(stream, Blob { data: data.clone() })
                            .await
                            .expect("append");
                    }
                }
                done += 1;
            }
            done
        }));
    }
    let mut done = 0;
    for t in tasks {
        done += bounded("a caller", t).await.expect("caller");
    }
    let time = start.elapsed();
    let (cpu1, sw1) = crate::counters();
    let per = done.max(1) as f64;
    Done {
        n: done,
        time,
        cpu_us: (cpu1 - cpu0).as_secs_f64() * 1e6 / per,
        switches: (sw1 - sw0) as f64 / per,
    }
}

/// One line: the append rate against the command rate, and the counters of each.
fn line(place: &str, body: usize, callers: u64, round: usize, fsync: &str, app: Done, cmd: Done) {
    let (a, c) = (per_sec(app.n, app.time), per_sec(cmd.n, cmd.time));
    println!(
        "publish {place} body={body:>4} B callers={callers:>2} round={round} fsync={fsync}: append {a:>8.0}/s ({}, {:.1} us CPU, {:.2} switches per op), command {c:>8.0}/s ({}, {:.1} us CPU, {:.2} switches per op), append/command {:.2}",
        app.n, app.cpu_us, app.switches, cmd.n, cmd.cpu_us, cmd.switches, a / c
    );
}

/// The host's node: streams `never` and `always` under `dir`, and the `Sink` handler.
pub(crate) fn host_node(dir: &Path) -> BusBuilder {
    node("host")
        .stream(
            StreamConfig::new("never")
                .dir(dir.join("never"))
                .fsync(FsyncPolicy::Never),
        )
        .stream(
            StreamConfig::new("always")
                .dir(dir.join("always"))
                .fsync(FsyncPolicy::Always),
        )
        .command_handler(crate::child::sink)
}

/// `two_processes`: the host runs in a child process (the CPU and switch counts are then the
/// client process's only); otherwise a second `Bus` in this process.
pub(crate) fn run(two_processes: bool) {
    let rt = runtime();
    let dir = crate::temp_dir("publish");
    let child = two_processes.then(|| crate::child::HostChild::spawn("publish", &dir));
    let place = if two_processes { "2p" } else { "1p" };
    rt.block_on(async {
        let host = match &child {
            Some(_) => None,
            None => Some(host_node(&dir).start().await.expect("host starts")),
        };
        let addr = match (&child, &host) {
            (Some(c), _) => c.addr.clone(),
            (None, Some(h)) => listening(h),
            (None, None) => unreachable!("a host either way"),
        };
        let client = client_of(&addr, "never").await;
        bounded(
            "the command handler",
            client.ready().handlers::<Sink>(Scope::Network, 1),
        )
        .await;
        bounded(
            "the always stream",
            client
                .ready()
                .handlers_named("$streams.always.append", Scope::Network, 1),
        )
        .await;
        // Warm both paths up (connections, buffers, the log's first segment).
        let warm = Bytes::from(vec![1u8; 64]);
        measure(&client, Op::Command, &warm, 16, 2_000).await;
        measure(&client, Op::Append("never"), &warm, 16, 2_000).await;

        // `STREAM_BENCH_BODY` / `STREAM_BENCH_CALLERS` keep one size / one concurrency (for a
        // profile of one case).
        let only = |var: &str| std::env::var(var).ok().and_then(|v| v.parse::<u64>().ok());
        let (only_body, only_callers) = (only("STREAM_BENCH_BODY"), only("STREAM_BENCH_CALLERS"));
        // `STREAM_BENCH_APPEND_ONLY=1`: appends only (their profile without the commands').
        let append_only = std::env::var("STREAM_BENCH_APPEND_ONLY").is_ok_and(|v| v == "1");
        for body in [64usize, 1024]
            .into_iter()
            .filter(|b| only_body.is_none_or(|o| o == *b as u64))
        {
            let data = crate::bodies(body, 1).remove(0);
            for callers in [1u64, 16, 64]
                .into_iter()
                .filter(|c| only_callers.is_none_or(|o| o == *c))
            {
                let total = if callers == 1 { 20_000 } else { 100_000 };
                for round in 1..=ROUNDS {
                    let cmd = if append_only {
                        Done {
                            n: 1,
                            time: Duration::from_secs(1),
                            cpu_us: 0.0,
                            switches: 0.0,
                        }
                    } else {
                        measure(&client, Op::Command, &data, callers, total).await
                    };
                    let app = measure(&client, Op::Append("never"), &data, callers, total).await;
                    line(place, body, callers, round, "never", app, cmd);
                }
            }
        }
        // For information: `Always` with 64 callers (64 B), against the same command rate.
        let data = crate::bodies(64, 1).remove(0);
        for round in (1..=ROUNDS).filter(|_| !append_only) {
            let cmd = measure(&client, Op::Command, &data, 64, 20_000).await;
            let app = measure(&client, Op::Append("always"), &data, 64, 20_000).await;
            line(place, 64, 64, round, "always", app, cmd);
        }
        let _ = client.shutdown().await;
        if let Some(host) = host {
            let _ = host.shutdown().await;
        }
    });
    if let Some(child) = child {
        child.finish();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
