//! `wire`: meshbus over real sockets on loopback, against raw tokio baselines measured in the
//! same run; what a subscription of the default capacity loses; fan-out to many subscriber
//! processes against 1 → 1; and a stalled subscriber beside healthy ones.
//!
//! ```sh
//! cargo run --release -p meshbus-bench --bin wire            # everything, about 3 minutes
//! cargo run --release -p meshbus-bench --bin wire -- --quick # a shorter run
//! cargo run --release -p meshbus-bench --bin wire -- --help
//! ```
//!
//! The driver (this program without `--role`) starts every measured node as a child process
//! of its own (the same program with `--role ...`), pinned to CPUs as the placement says, and
//! reads results from their standard output. Every wait is bounded; children are killed by
//! handle when the driver is done with them (or gives up on them).

#![allow(missing_docs)]

mod driver;
mod events;
mod fanout;
mod handshake;
mod msg;
mod raw;
mod rtt;
mod stall;

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use meshbus::FullPolicy;

use crate::msg::Wire;

const HELP: &str = "\
wire: meshbus against raw sockets on loopback (round trips, event throughput, loss at the
default capacity, fan-out, a stalled subscriber beside healthy ones)

usage: wire [options]

  --only rtt,events,loss,fanout,group,stall,handshake
                               what to run (default: all but group and handshake); loss:
                               meshbus events over TCP to a `Wait` subscription of the
                               default capacity (1024), what is lost; fanout: one publisher
                               to --fan-subs subscriber processes against 1 -> 1; group:
                               one publisher to a group of --group-subs member processes
                               (each event to one) against 1 -> 1; stall: a stopped subscriber beside healthy ones;
                               handshake: fresh nodes dialling a server (--hs-dial)
  --wires tcp,unix,ws          which wires (default: all three)
  --placements 1core,2cores,free
                               1core: both processes on CPU 0; 2cores: server on CPU 1, client
                               on CPU 0; free: unpinned (default: all three for round trips,
                               1core,2cores,free for events and loss too)
  --event-placements LIST      placements of the event (and loss) runs
  --rounds N                   turns of raw and meshbus per measurement (default 2)
  --passes N                   passes over every wire in turn, averaged: the wires are
                               compared on the mean (default 1)
  --rtt-payload BYTES          round-trip payload (default 64)
  --rtt-samples N              back-to-back round trips per turn, at most (default 20000)
  --rtt-secs S                 ...and seconds per turn, at most (default 0.5)
  --paced N                    paced round trips (one per ms) per turn (default 500)
  --sizes 64,1024              event payloads (default 64,1024)
  --event-secs S               seconds of publishing per turn (default 1)
  --event-max N                events per turn, at most (default 10000000)
  --bus-only                   events and round trips: meshbus turns only (for profiles)
  --raw-only                   events and round trips: raw turns only
  --loss-pause-every N         loss: the consumer pauses after every N events (default 16384;
                               0: never)
  --loss-pause-ms MS           ...for this long (default 2)
  --fan-subs N                 fan-out subscriber processes (default 10)
  --fan-payload BYTES          fan-out payload (default 64)
  --fan-placements split,free  split: publisher on CPU 0, every subscriber on CPU 1; free:
                               unpinned (default: both)
  --hs-dial add,connect         handshake: how a fresh node dials the server, once per
                               dial: add: `add_peers` then `ready().peers(1)`; connect:
                               `Bus::connect` (builds with the `trust` feature only)
                               (default: add)
  --hs-dials N                 handshake: dials per series, each a fresh node (default 200)
  --group-subs N               group members (processes) (default 2)
  --group-placements split,free
                               as --fan-placements, for the group (default: both)
  --stall-healthy N            healthy subscriber processes beside the stopped one (default 1)
  --stall-variants wait,drop    wait: the stopped subscription is `Wait`; drop: `DropNewest`
                               (default: both)
  --stall-events N             events published at the stalled subscriber (default 1000000)
  --stall-payload BYTES        their payload (default 1024)
  --stall-bound-mib M          the publisher's peer_queue_bytes (default 16)
  --stall-secs S               bound on the stalled publishing (default 6)
  (every node of the stall runs with peer_timeout 120 s: the stopped one is not declared dead)
  --metrics                    every process installs a Prometheus recorder
                               (metrics-exporter-prometheus) before its bus starts, with its
                               upkeep every 5 s: the cost of recording (issue 18)
  --quick                      fewer samples and shorter turns (a smoke run)
";

/// Command-line options: `--key value` pairs and flags.
#[derive(Debug, Default)]
pub(crate) struct Opts {
    map: HashMap<String, String>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let mut map = HashMap::new();
        let mut it = args.iter().peekable();
        while let Some(a) = it.next() {
            let Some(key) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument `{a}`"));
            };
            let value = match it.peek() {
                Some(v) if !v.starts_with("--") => it.next().cloned().unwrap_or_default(),
                _ => String::from("1"),
            };
            map.insert(key.to_owned(), value);
        }
        Ok(Opts { map })
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub(crate) fn str(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    pub(crate) fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> T {
        match self.map.get(key) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| {
                eprintln!("wire: --{key} {v}: not a number");
                std::process::exit(2)
            }),
        }
    }

    pub(crate) fn secs(&self, key: &str, default: f64) -> Duration {
        Duration::from_secs_f64(self.num(key, default))
    }

    pub(crate) fn list(&self, key: &str, default: &str) -> Vec<String> {
        self.str(key)
            .unwrap_or(default)
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    pub(crate) fn wire(&self) -> Wire {
        self.str("transport")
            .and_then(Wire::parse)
            .unwrap_or_else(|| {
                eprintln!("wire: --transport tcp|unix|ws is required");
                std::process::exit(2)
            })
    }

    fn need(&self, key: &str) -> &str {
        self.str(key).unwrap_or_else(|| {
            eprintln!("wire: --{key} is required for this role");
            std::process::exit(2)
        })
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match Opts::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("wire: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    if opts.has("help") {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    if let Some(cpu) = opts.str("cpu") {
        let cpu: usize = cpu.parse().unwrap_or(0);
        if let Err(e) = pin_to(cpu) {
            eprintln!("wire: cannot pin to CPU {cpu}: {e}");
            return ExitCode::from(2);
        }
    }
    if opts.str("role").is_none() {
        return driver::run(&opts, &args);
    }
    name_thread(role_of(&opts));
    if opts.has("metrics") {
        install_prometheus();
    }
    // The role runs for the life of the process.
    let opts: &'static Opts = Box::leak(Box::new(opts));
    let role = opts.str("role").unwrap_or_default();
    let role_name = role;
    // One thread per process: the baseline and the bus get the same runtime, and placement
    // means what it says.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wire: no tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Each role runs in a spawned task, as a service's work does, not in the `block_on`
    // future: that future is not a task, and every wake-up of it from a task (a reply that
    // the bus's reader task hands over) costs the runtime an extra poll of its driver, a
    // system call that raw code doing its own reads in that future never pays.
    let role = rt.spawn(async move {
        match role {
            "rtt-server" => rtt::server(opts.wire()).await,
            "rtt-client" => {
                let o = rtt::RttOpts {
                    payload: opts.num("rtt-payload", 64),
                    rounds: opts.num("rounds", 2),
                    samples: opts.num("rtt-samples", 20_000),
                    secs: opts.secs("rtt-secs", 0.5),
                    paced: opts.num("paced", 500),
                    bus_only: opts.has("bus-only"),
                    raw_only: opts.has("raw-only"),
                };
                rtt::client(opts.wire(), opts.need("raw"), opts.need("bus"), o).await
            }
            "ev-sub" => {
                let o = events::SubOpts {
                    capacity: opts.num("sub-capacity", 1 << 16),
                    pause_every: opts.num("sub-pause-every", 0),
                    pause: opts.secs("sub-pause-ms", 0.0) / 1000,
                };
                events::subscriber(opts.wire(), o).await
            }
            "ev-pub" => {
                let o = events::EventOpts {
                    sizes: opts
                        .list("sizes", "64,1024")
                        .iter()
                        .filter_map(|s| s.parse().ok())
                        .collect(),
                    rounds: opts.num("rounds", 2),
                    secs: opts.secs("event-secs", 1.0),
                    max: opts.num("event-max", 10_000_000),
                    bus_only: opts.has("bus-only"),
                    raw_only: opts.has("raw-only"),
                };
                events::publisher(opts.wire(), opts.need("raw"), opts.need("bus"), o).await
            }
            "hs-server" => handshake::server(opts.wire()).await,
            "hs-client" => {
                let dial = opts.str("hs-dial").unwrap_or("add");
                let Some(dial) = handshake::Dial::parse(dial) else {
                    eprintln!("wire: --hs-dial {dial}: not known to this build");
                    std::process::exit(2);
                };
                handshake::client(
                    opts.wire(),
                    opts.need("bus"),
                    dial,
                    opts.num("hs-dials", 200),
                )
                .await
            }
            "stall-sub" => stall::subscriber(opts.wire(), policy(opts.str("policy"))).await,
            "stall-pub" => {
                let o = stall::StallOpts {
                    subscribers: opts.num("stall-subs", 1),
                    events: opts.num("stall-events", 1_000_000),
                    payload: opts.num("stall-payload", 1024),
                    bound_bytes: opts.num::<usize>("stall-bound-mib", 16) << 20,
                    secs: opts.secs("stall-secs", 6.0),
                };
                stall::publisher(opts.wire(), opts.need("bus"), o).await
            }
            "fan-sub" => {
                fanout::subscriber(opts.wire(), opts.num("index", 0), opts.has("fan-group")).await
            }
            "fan-pub" => {
                fanout::publisher(
                    opts.wire(),
                    opts.need("bus"),
                    opts.num("fan-subs", 10),
                    opts.num("fan-payload", 64),
                    opts.has("fan-group"),
                )
                .await
            }
            other => {
                eprintln!("wire: unknown role `{other}`");
                std::process::exit(2);
            }
        }
    });
    match rt.block_on(role) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("wire: {role_name}: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("wire: {role_name} failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Installs a Prometheus recorder as the process's global one, with a thread that runs its
/// upkeep (draining histograms) every 5 s for at most an hour, as an exporter would.
fn install_prometheus() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    if let Err(e) = metrics::set_global_recorder(recorder) {
        eprintln!("wire: no Prometheus recorder: {e}");
        return;
    }
    let _ = std::thread::Builder::new()
        .name("upkeep".into())
        .spawn(move || {
            for _ in 0..720 {
                std::thread::sleep(Duration::from_secs(5));
                handle.run_upkeep();
            }
        });
}

fn role_of(opts: &Opts) -> &str {
    opts.str("role").unwrap_or_default()
}

/// `drop` means [`FullPolicy::DropNewest`], anything else [`FullPolicy::Wait`].
fn policy(v: Option<&str>) -> FullPolicy {
    if v == Some("drop") {
        FullPolicy::DropNewest
    } else {
        FullPolicy::Wait
    }
}

/// Names this thread after the role (its `comm`), so that a profile of the whole process tree
/// tells the roles apart (`perf report --comm ev-pub`).
fn name_thread(role: &str) {
    let mut name = [0u8; 16];
    for (d, b) in name.iter_mut().zip(role.bytes().take(15)) {
        *d = b;
    }
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from `name`,
    // which is 16 bytes long and ends with at least one NUL.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0);
    }
}

/// Pins this thread (and the threads it starts later) to `cpu`.
fn pin_to(cpu: usize) -> std::io::Result<()> {
    // SAFETY: `set` is a plain bit set on our stack, initialised by CPU_ZERO; the call reads
    // `size_of::<cpu_set_t>()` bytes of it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Where a node of `wire` listens.
pub(crate) fn listen_addr(wire: Wire) -> String {
    match wire {
        Wire::Tcp => "tcp://127.0.0.1:0".into(),
        Wire::Unix => format!("unix://{}", msg::socket_path("bus").display()),
        Wire::Ws => "ws://127.0.0.1:0/meshbus".into(),
    }
}

/// Removes the socket file of a `unix://` listen address.
pub(crate) fn remove_socket(listen: &str) {
    if let Some(path) = listen.strip_prefix("unix://") {
        let _ = std::fs::remove_file(path);
    }
}

/// Resolves when standard input reaches its end: the driver closed it (or died).
pub(crate) async fn until_stdin_closes() {
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}
