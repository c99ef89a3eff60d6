//! Confirmed publish over TCP: `bus.streams().append` with C concurrent callers against
//! meshbus commands to a trivial handler on the same host node, same body, same concurrency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use meshbus_core::{Binary, Bus, Command, Context, HandlerError, Scope};
use meshbus_streams::{FsyncPolicy, StreamConfig, StreamsBuilderExt, StreamsExt};
use serde::{Deserialize, Serialize};

use crate::{bounded, client_of, listening, node, per_sec, runtime, Blob};

/// The baseline's command: the same bytes as the appended event, answered with nothing.
#[derive(Debug, Serialize, Deserialize)]
struct Sink {
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

/// `total` operations (or as many as [`CAP`] allows) from `callers` concurrent tasks, each
/// awaiting its own before the next; returns the operations done and the time.
async fn measure(client: &Bus, op: Op, body: &Bytes, callers: u64, total: u64) -> (u64, Duration) {
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
    (done, start.elapsed())
}

pub(crate) fn run() {
    let rt = runtime();
    rt.block_on(async {
        let dir = crate::temp_dir("publish");
        let host = node("host")
            .stream(StreamConfig::new("never").dir(dir.join("never")).fsync(FsyncPolicy::Never))
            .stream(
                StreamConfig::new("always")
                    .dir(dir.join("always"))
                    .fsync(FsyncPolicy::Always),
            )
            .command_handler(|_: Sink, _ctx: Context| async move { Ok::<(), HandlerError>(()) })
            .start()
            .await
            .expect("host starts");
        let client = client_of(&listening(&host), "never").await;
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

        for body in [64usize, 1024] {
            let data = crate::bodies(body, 1).remove(0);
            for callers in [1u64, 16, 64] {
                let total = if callers == 1 { 20_000 } else { 100_000 };
                for round in 1..=ROUNDS {
                    let (n_cmd, t_cmd) = measure(&client, Op::Command, &data, callers, total).await;
                    let (n_app, t_app) =
                        measure(&client, Op::Append("never"), &data, callers, total).await;
                    let (cmd, app) = (per_sec(n_cmd, t_cmd), per_sec(n_app, t_app));
                    println!(
                        "publish body={body:>4} B callers={callers:>2} round={round} fsync=never: append {app:>8.0}/s ({n_app}), command {cmd:>8.0}/s ({n_cmd}), append/command {:.2}",
                        app / cmd
                    );
                }
            }
        }
        // For information: `Always` with 64 callers (64 B), against the same command rate.
        let data = crate::bodies(64, 1).remove(0);
        for round in 1..=ROUNDS {
            let (n_cmd, t_cmd) = measure(&client, Op::Command, &data, 64, 20_000).await;
            let (n_app, t_app) = measure(&client, Op::Append("always"), &data, 64, 20_000).await;
            let (cmd, app) = (per_sec(n_cmd, t_cmd), per_sec(n_app, t_app));
            println!(
                "publish body=  64 B callers=64 round={round} fsync=always: append {app:>8.0}/s ({n_app}), command {cmd:>8.0}/s ({n_cmd}), append/command {:.2}",
                app / cmd
            );
        }
        let _ = client.shutdown().await;
        let _ = host.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}
