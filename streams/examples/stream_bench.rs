//! Streams on the bus (issue 16), each case against a baseline measured in the same run:
//!
//! - `replay`: replaying a stream with `Log::read_bytes` from offset 0 to the end, against a
//!   raw sequential read of the same segment files; then through the bus, a `Reader` over TCP
//!   loopback from a host in the same process.
//! - `publish`: confirmed appends over TCP to a host (`bus.streams().append`) with C concurrent
//!   callers, against meshbus commands to a trivial handler on the same host node.
//! - `publish-2p`: the same with the host in a child process (this program, `host publish`).
//! - `memory`: the resident memory of a host process while a slow reader replays a 1 GiB
//!   stream.
//!
//! `cargo run --release -p meshbus-streams --example stream_bench -- <case>...` with cases
//! `replay`, `publish`, `publish-2p`, `memory` (none given: `replay publish memory`);
//! `replay-log` and `replay-bus` are the two halves of `replay`. `STREAM_BENCH_BODY`,
//! `STREAM_BENCH_CALLERS` and `STREAM_BENCH_APPEND_ONLY=1` narrow `publish` for a profile.
//! Every loop is bounded in count and time; files go to the temporary directory and are
//! removed; sockets are on 127.0.0.1, port 0.

#[path = "stream_bench/child.rs"]
mod child;
// Cases live in `stream_bench/` (a root file's `mod` looks beside it, hence the paths).
#[path = "stream_bench/memory.rs"]
mod memory;
#[path = "stream_bench/publish.rs"]
mod publish;
#[path = "stream_bench/replay.rs"]
mod replay;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use meshbus_core::{Binary, Bus, BusBuilder, Event, Scope};
use meshbus_transport_tcp::TcpTransport;
use serde::{Deserialize, Serialize};

/// The event the benchmark appends: opaque bytes (MessagePack binary).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Blob {
    data: Binary,
}

impl Event for Blob {
    const NAME: &'static str = "bench.blob";
}

/// The header under which the host keeps a record's event name (as the host writes it).
const EVENT_HEADER: &str = "$event";

/// Every wait of this program is bounded by this.
const BOUND: Duration = Duration::from_secs(60);

/// Awaits `fut` for at most [`BOUND`], or ends the process.
async fn bounded<T>(what: &str, fut: impl std::future::IntoFuture<Output = T>) -> T {
    match tokio::time::timeout(BOUND, fut.into_future()).await {
        Ok(v) => v,
        Err(_) => {
            eprintln!("stream_bench: {what} took over {BOUND:?}; giving up");
            std::process::exit(3);
        }
    }
}

/// A node on TCP loopback.
fn node(name: &str) -> BusBuilder {
    Bus::builder()
        .name(name)
        .cluster("bench")
        .transport(TcpTransport::new())
        .listen("tcp://127.0.0.1:0")
}

/// The address `bus` listens on.
fn listening(bus: &Bus) -> String {
    bus.listen_addrs()
        .first()
        .map(ToString::to_string)
        .expect("the bus listens")
}

/// A client node dialling `host`, once it sees the host of `stream`.
async fn client_of(host: &str, stream: &str) -> Bus {
    let client = node("client")
        .peers([host.to_owned()])
        .start()
        .await
        .expect("client starts");
    let append = format!("$streams.{stream}.append");
    bounded(
        "the host",
        client.ready().handlers_named(&append, Scope::Network, 1),
    )
    .await;
    client
}

/// `n` bodies of `len` random bytes, slices of one buffer: records that LZ4 cannot shrink,
/// and that do not repeat within its 64 KiB window when used in turn.
fn bodies(len: usize, n: usize) -> Vec<Bytes> {
    let mut rng = fastrand::Rng::with_seed(16);
    let all = Bytes::from((0..len * n).map(|_| rng.u8(..)).collect::<Vec<u8>>());
    (0..n).map(|i| all.slice(i * len..(i + 1) * len)).collect()
}

/// A fresh directory under the temporary directory.
fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "meshbus-stream-bench-{}-{what}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Bytes of the segment files in `dir`.
fn segment_bytes(dir: &Path) -> u64 {
    segment_files(dir)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// The segment files of `dir`, oldest first.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    files
}

fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn mb_per_sec(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// A multi-threaded runtime of two workers (the machine has two cores).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Resident memory of process `pid` ("self" for this one), in bytes.
fn rss_of(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// This process's CPU time (user + system, all threads, in clock ticks of 10 ms) and its
/// live threads' context switches (voluntary + involuntary), from `/proc`.
fn counters() -> (Duration, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with the last ')'): utime and stime are the
    // 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    let mut switches = 0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            switches += status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    (Duration::from_millis(ticks * 10), switches)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("host") {
        // The child process of the `memory` and `publish-2p` cases.
        let (Some(kind), Some(dir)) = (args.get(1), args.get(2)) else {
            eprintln!("stream_bench host <memory|publish> <dir>");
            std::process::exit(2);
        };
        child::host_process(kind, Path::new(dir));
        return;
    }
    let cases: Vec<&str> = if args.is_empty() {
        vec!["replay", "publish", "memory"]
    } else {
        args.iter().map(String::as_str).collect()
    };
    let started = Instant::now();
    for case in cases {
        match case {
            "replay" => replay::run(true, true),
            "replay-log" => replay::run(true, false),
            "replay-bus" => replay::run(false, true),
            "publish" => publish::run(false),
            "publish-2p" => publish::run(true),
            "memory" => memory::run(),
            other => {
                eprintln!("stream_bench: unknown case `{other}` (replay, replay-log, replay-bus, publish, publish-2p, memory)");
                std::process::exit(2);
            }
        }
    }
    println!("total {:.1} s", started.elapsed().as_secs_f64());
}
