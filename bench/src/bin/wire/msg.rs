//! The messages the program sends, and the helpers every role shares.

use std::time::Duration;

use meshbus::prelude::*;
use meshbus::Binary;
use serde::{Deserialize, Serialize};

/// The round-trip command: the server answers with the payload it got.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "bench.echo", reply = Binary)]
pub(crate) struct Echo(pub(crate) Binary);

/// The throughput event.
#[derive(Serialize, Deserialize, Event)]
#[meshbus(name = "bench.tick")]
pub(crate) struct Tick(pub(crate) Binary);

/// The fan-out scenario's 1 → 1 event: only one of its subscribers takes it, so that the
/// 1 → 1 baseline runs with the same processes and links as the 1 → 10 runs.
#[derive(Serialize, Deserialize, Event)]
#[meshbus(name = "bench.tick1")]
pub(crate) struct TickOne(pub(crate) Binary);

/// Sent after a run of events: the subscriber answers once it has seen `published` events (or
/// after a bound), with what it saw.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "bench.drain", reply = SubReport)]
pub(crate) struct Drain {
    pub(crate) published: u64,
}

/// What a subscriber saw of one run.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct SubReport {
    /// Events received.
    pub(crate) count: u64,
    /// From the first event received to the last.
    pub(crate) nanos: u64,
    /// Events the subscriber's bus dropped (its subscription queue was full).
    pub(crate) dropped: u64,
    /// CPU time the subscriber's process spent from the first event to the report.
    pub(crate) cpu_nanos: u64,
}

impl SubReport {
    pub(crate) fn rate(&self) -> f64 {
        if self.nanos == 0 || self.count < 2 {
            return 0.0;
        }
        // `count - 1` intervals between the first and the last event.
        (self.count - 1) as f64 / (self.nanos as f64 / 1e9)
    }
}

/// Which wire a scenario runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    Tcp,
    Unix,
    Ws,
}

impl Wire {
    pub(crate) fn parse(s: &str) -> Option<Wire> {
        match s {
            "tcp" => Some(Wire::Tcp),
            "unix" => Some(Wire::Unix),
            "ws" => Some(Wire::Ws),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Wire::Tcp => "tcp",
            Wire::Unix => "unix",
            Wire::Ws => "ws",
        }
    }
}

/// A bus builder with the transport of `wire`; with the `trust` feature and
/// `MESHBUS_BENCH_CIPHER=aes` in the environment, links dial with AES-256-GCM.
pub(crate) fn builder(wire: Wire) -> meshbus::BusBuilder {
    let b = Bus::builder().cluster("bench");
    #[cfg(feature = "trust")]
    let b = if std::env::var("MESHBUS_BENCH_CIPHER").as_deref() == Ok("aes") {
        b.cipher(meshbus::trust::Cipher::AesGcm)
    } else {
        b
    };
    match wire {
        Wire::Tcp | Wire::Unix => b.transport(meshbus::tcp::TcpTransport::new()),
        Wire::Ws => b.transport(meshbus::ws::WsTransport::new()),
    }
}

/// A fresh socket path under the temporary directory.
pub(crate) fn socket_path(what: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "meshbus-wire-{}-{what}-{:x}.sock",
        std::process::id(),
        fastrand::u32(..)
    ))
}

/// A payload of `len` bytes that LZ4 cannot shrink (not that frames this small are offered to
/// it).
pub(crate) fn payload(len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(7);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// CPU time (user and system) this process has used so far, in nanoseconds.
pub(crate) fn cpu_ns() -> u64 {
    // SAFETY: getrusage(2) fills the zeroed struct we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return 0;
        }
        usage
    };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Resident memory of this process, and its peak, in bytes, from `/proc/self/status`.
pub(crate) fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Why a role could not go on: the step that failed, and its error.
pub(crate) type RoleResult<T = ()> = Result<T, String>;

/// Names the step an error came from, for a role that ends on it (`.or_fail("what")?`).
pub(crate) trait OrFail<T> {
    fn or_fail(self, what: &str) -> RoleResult<T>;
}

impl<T, E: std::fmt::Display> OrFail<T> for Result<T, E> {
    fn or_fail(self, what: &str) -> RoleResult<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// The address `bus` listens on, for the driver to pass on.
pub(crate) fn listening(bus: &Bus) -> RoleResult<String> {
    bus.listen_addrs()
        .first()
        .map(ToString::to_string)
        .ok_or_else(|| "the bus listens nowhere".to_owned())
}

/// Waits at most `bound` for `fut`, or ends the process with a message: every wait of this
/// program is bounded.
pub(crate) async fn bounded<T>(
    what: &str,
    bound: Duration,
    fut: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(bound, fut).await {
        Ok(v) => v,
        Err(_) => {
            eprintln!("wire: {what} took over {bound:?}; giving up");
            std::process::exit(3);
        }
    }
}

/// Starts a publisher's bus from `builder` and waits (at most `bound`) until `subscribers`
/// subscribers of [`Tick`] are in its routes.
pub(crate) async fn publisher(
    builder: meshbus::BusBuilder,
    subscribers: usize,
    bound: Duration,
) -> RoleResult<Bus> {
    let bus = builder.start().await.or_fail("start the publisher bus")?;
    bounded(
        "the mesh",
        bound,
        bus.ready().subscribers::<Tick>(Scope::Cluster, subscribers),
    )
    .await;
    Ok(bus)
}

/// Orders from the driver: lines on standard input.
pub(crate) struct Orders {
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::io::Stdin>>,
}

impl Orders {
    pub(crate) fn new() -> Self {
        use tokio::io::AsyncBufReadExt;
        Orders {
            lines: tokio::io::BufReader::new(tokio::io::stdin()).lines(),
        }
    }

    /// The next line, or `None` once standard input is closed (or after `bound` without one).
    pub(crate) async fn next(&mut self, bound: Duration) -> Option<String> {
        match tokio::time::timeout(bound, self.lines.next_line()).await {
            Ok(Ok(line)) => line,
            _ => None,
        }
    }
}
