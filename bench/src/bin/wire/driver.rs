//! The driver: starts the measured processes with their placement, collects their results and
//! prints the tables and the targets.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::msg::Wire;
use crate::Opts;

mod fanout;
mod handshake;
mod proc;
mod report;
mod stall;

use crate::msg::SubReport;
use proc::Proc;
use report::*;

/// Where the two processes of a scenario run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Both on CPU 0.
    OneCore,
    /// Server (subscriber) on CPU 1, client (publisher) on CPU 0.
    TwoCores,
    /// Wherever the scheduler puts them.
    Free,
}

impl Placement {
    fn parse(s: &str) -> Option<Placement> {
        match s {
            "1core" => Some(Placement::OneCore),
            "2cores" => Some(Placement::TwoCores),
            "free" => Some(Placement::Free),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Placement::OneCore => "1core",
            Placement::TwoCores => "2cores",
            Placement::Free => "free",
        }
    }

    /// (server CPU, client CPU).
    fn cpus(self) -> (Option<usize>, Option<usize>) {
        match self {
            Placement::OneCore => (Some(0), Some(0)),
            Placement::TwoCores => (Some(1), Some(0)),
            Placement::Free => (None, None),
        }
    }
}

fn s(v: &str) -> String {
    v.to_owned()
}

#[derive(Debug, Clone)]
struct RttRow {
    wire: Wire,
    place: Placement,
    mode: String,
    raw: (f64, f64, u64),
    bus: (f64, f64, u64),
}

#[derive(Debug, Clone)]
struct EvRow {
    wire: Wire,
    place: Placement,
    size: usize,
    raw: f64,
    bus: f64,
    bus_dropped: u64,
    bus_count: u64,
    bus_sent: u64,
    /// CPU nanoseconds per event: (publisher, subscriber), raw then meshbus.
    raw_cpu: (f64, f64),
    bus_cpu: (f64, f64),
}

/// Runs what the options ask for and prints the report.
pub(crate) fn run(opts: &Opts, args: &[String]) -> ExitCode {
    let quick = opts.has("quick");
    let only = opts.list("only", "rtt,events,loss,fanout,stall");
    let wires: Vec<Wire> = opts
        .list("wires", "tcp,unix,ws")
        .iter()
        .filter_map(|w| Wire::parse(w))
        .collect();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let placements = |key: &str, default: &str| -> Vec<Placement> {
        opts.list(key, default)
            .iter()
            .filter_map(|p| Placement::parse(p))
            .filter(|p| {
                let ok = *p != Placement::TwoCores || cpus >= 2;
                if !ok {
                    eprintln!("wire: one CPU only: skipping the 2cores placement");
                }
                ok
            })
            .collect()
    };
    let rtt_places = placements("placements", "1core,2cores,free");
    let ev_places = if opts.has("event-placements") {
        placements("event-placements", "")
    } else if opts.has("placements") {
        rtt_places.clone()
    } else {
        placements("placements", "1core,2cores,free")
    };
    // Options passed on to the children as they are.
    let mut pass: Vec<String> = Vec::new();
    for key in [
        "rounds",
        "rtt-payload",
        "rtt-samples",
        "rtt-secs",
        "paced",
        "sizes",
        "event-secs",
        "event-max",
        "stall-events",
        "stall-payload",
        "stall-bound-mib",
        "stall-secs",
        "bus-only",
        "raw-only",
        "loss-pause-every",
        "loss-pause-ms",
        "metrics",
    ] {
        if let Some(v) = opts.str(key) {
            pass.extend([format!("--{key}"), v.to_owned()]);
        }
    }
    if quick {
        for (k, v) in [
            ("rounds", "1"),
            ("rtt-samples", "5000"),
            ("rtt-secs", "0.2"),
            ("paced", "200"),
            ("event-secs", "0.3"),
        ] {
            if !opts.has(k) {
                pass.extend([format!("--{k}"), v.to_owned()]);
            }
        }
    }

    let started = Instant::now();
    let load_before = loadavg();
    println!("# meshbus wire benchmark\n");
    println!("- command: `{}`", command_line(args));
    println!("- date: {}", date());
    println!("- CPU: {} ({cpus} CPUs online)", cpu_model());
    println!("- kernel: {}", kernel());
    println!("- load average at start: {load_before}");
    println!("- each process: a current-thread tokio runtime (one thread)");
    if opts.has("metrics") {
        println!("- metrics: a Prometheus recorder installed in every process (`--metrics`)");
    }
    println!();

    let mut rtts = Vec::new();
    let mut evs = Vec::new();
    let mut failures = Vec::new();

    // Passes go over every wire in turn, so that a drift of the machine's speed over the run
    // touches each wire alike: the wires are compared with each other on the mean of their
    // passes (and each pass is measured against its own raw baseline, as always).
    let passes: usize = opts.num("passes", 1).max(1);
    let each = Passes {
        passes,
        wires: &wires,
        pass: &pass,
    };
    if only.iter().any(|o| o == "rtt") {
        let runs = each.run("round trips", &rtt_places, rtt_scenario, &mut failures);
        rtts = rtt_mean_of_passes(&runs);
    }
    if only.iter().any(|o| o == "events") {
        let runs = each.run("events", &ev_places, event_scenario, &mut failures);
        evs = events_mean_of_passes(&runs);
    }
    let mut losses = Vec::new();
    if only.iter().any(|o| o == "loss") {
        let mut loss_pass = pass.to_vec();
        loss_pass.extend([s("--bus-only"), s("1")]);
        let tcp = Passes {
            passes: 1,
            wires: &[Wire::Tcp],
            pass: &loss_pass,
        };
        losses = tcp.run(
            "events to a subscription of the default capacity",
            &ev_places,
            loss_scenario,
            &mut failures,
        );
    }
    let mut fans = Vec::new();
    // Fan-out (every subscriber gets every event) and a group (each event to one member).
    for (mode, subs_key, subs_default, places_key, group) in [
        ("fanout", "fan-subs", 10, "fan-placements", false),
        ("group", "group-subs", 2, "group-placements", true),
    ] {
        if !only.iter().any(|o| o == mode) {
            continue;
        }
        let subs: usize = opts.num(subs_key, subs_default);
        let size: usize = opts.num("fan-payload", 64);
        let rounds: usize = opts.num("rounds", 2);
        let secs: f64 = opts.num("event-secs", if quick { 0.3 } else { 1.0 });
        let max: u64 = opts.num("event-max", 10_000_000);
        for place in opts.list(places_key, "split,free") {
            let Some(place) = fanout::FanPlace::parse(&place) else {
                failures.push(format!("unknown {mode} placement `{place}`"));
                continue;
            };
            eprintln!("wire: {mode} 1 -> {subs} ({place:?})");
            match fanout::scenario(place, subs, size, rounds, secs, max, group) {
                Ok(row) => fans.push(row),
                Err(e) => failures.push(e),
            }
        }
    }
    let mut stalls = Vec::new();
    if only.iter().any(|o| o == "stall") {
        let healthy: usize = opts.num("stall-healthy", 1);
        for variant in opts.list("stall-variants", "wait,drop") {
            eprintln!("wire: stalled subscriber ({variant})");
            match stall::scenario(&variant, healthy, &pass) {
                Ok(row) => stalls.push(row),
                Err(e) => failures.push(e),
            }
        }
    }

    let mut hss = Vec::new();
    if only.iter().any(|o| o == "handshake") {
        let kinds = opts.list("hs-dial", "add");
        let dials: u64 = opts.num("hs-dials", if quick { 20 } else { 200 });
        for &wire in &wires {
            for &place in &rtt_places {
                eprintln!("wire: handshakes over {} ({})", wire.name(), place.name());
                match handshake::scenario(wire, place, &kinds, dials) {
                    Ok(rows) => hss.extend(rows),
                    Err(e) => failures.push(e),
                }
            }
        }
    }

    print_rtt(&rtts);
    print_events(&evs);
    handshake::print(&hss);
    print_loss(&losses);
    fanout::print(&fans);
    stall::print(&stalls);
    print_targets(&rtts, &evs, &losses);
    fanout::targets(&fans);
    stall::targets(&stalls);
    println!(
        "\n- load average at end: {}; whole run {:.0} s",
        loadavg(),
        started.elapsed().as_secs_f64()
    );
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        for f in &failures {
            eprintln!("wire: FAILED: {f}");
        }
        ExitCode::FAILURE
    }
}

fn rtt_scenario(wire: Wire, place: Placement, pass: &[String]) -> Result<Vec<RttRow>, String> {
    let (server_cpu, client_cpu) = place.cpus();
    let t = wire.name();
    let server = Proc::spawn(
        "rtt-server",
        &[s("--role"), s("rtt-server"), s("--transport"), s(t)],
        server_cpu,
    )?;
    let ready = server.wait_line("READY", Duration::from_secs(20))?;
    let parts: Vec<&str> = ready.split_whitespace().collect();
    let (raw, bus) = (parts[1], parts[2]);
    let mut args = vec![
        s("--role"),
        s("rtt-client"),
        s("--transport"),
        s(t),
        s("--raw"),
        s(raw),
        s("--bus"),
        s(bus),
    ];
    args.extend_from_slice(pass);
    let client = Proc::spawn("rtt-client", &args, client_cpu)?;
    let results = client.results(Duration::from_secs(120))?;
    drop(client);
    drop(server);
    let get = |mode: &str, imp: &str| -> (f64, f64, u64) {
        results
            .iter()
            .find(|r| r.len() >= 6 && r[0] == "rtt" && r[1] == mode && r[2] == imp)
            .map_or((f64::NAN, f64::NAN, 0), |r| {
                (
                    r[3].parse().unwrap_or(f64::NAN),
                    r[4].parse().unwrap_or(f64::NAN),
                    r[5].parse().unwrap_or(0),
                )
            })
    };
    Ok(["b2b", "paced"]
        .into_iter()
        .map(|mode| RttRow {
            wire,
            place,
            mode: s(mode),
            raw: get(mode, "raw"),
            bus: get(mode, "bus"),
        })
        .collect())
}

fn event_scenario(wire: Wire, place: Placement, pass: &[String]) -> Result<Vec<EvRow>, String> {
    events(wire, place, pass, &[])
}

/// The events with a `Wait` subscription of the default capacity (1024) instead of 65,536,
/// meshbus only, and a consumer that pauses now and then: what is lost.
fn loss_scenario(wire: Wire, place: Placement, pass: &[String]) -> Result<Vec<EvRow>, String> {
    let passed = |key: &str, default: &str| {
        pass.windows(2)
            .find(|w| w[0] == key)
            .map_or(s(default), |w| w[1].clone())
    };
    let sub_args = [
        s("--sub-capacity"),
        s("1024"),
        s("--sub-pause-every"),
        passed("--loss-pause-every", "16384"),
        s("--sub-pause-ms"),
        passed("--loss-pause-ms", "2"),
    ];
    events(wire, place, pass, &sub_args)
}

fn events(
    wire: Wire,
    place: Placement,
    pass: &[String],
    sub_args: &[String],
) -> Result<Vec<EvRow>, String> {
    let (sub_cpu, pub_cpu) = place.cpus();
    let t = wire.name();
    let mut args = vec![s("--role"), s("ev-sub"), s("--transport"), s(t)];
    args.extend_from_slice(sub_args);
    let sub = Proc::spawn("ev-sub", &args, sub_cpu)?;
    let ready = sub.wait_line("READY", Duration::from_secs(20))?;
    let parts: Vec<&str> = ready.split_whitespace().collect();
    let mut args = vec![
        s("--role"),
        s("ev-pub"),
        s("--transport"),
        s(t),
        s("--raw"),
        s(parts[1]),
        s("--bus"),
        s(parts[2]),
    ];
    args.extend_from_slice(pass);
    let publisher = Proc::spawn("ev-pub", &args, pub_cpu)?;
    let results = publisher.results(Duration::from_secs(150))?;
    drop(publisher);
    drop(sub);
    let mut rows: Vec<EvRow> = Vec::new();
    for r in results.iter().filter(|r| r.len() >= 9 && r[0] == "ev") {
        let size: usize = r[1].parse().unwrap_or(0);
        let rate: f64 = r[3].parse().unwrap_or(f64::NAN);
        let at = match rows.iter().position(|x| x.size == size) {
            Some(at) => at,
            None => {
                rows.push(EvRow {
                    wire,
                    place,
                    size,
                    raw: f64::NAN,
                    bus: f64::NAN,
                    bus_dropped: 0,
                    bus_count: 0,
                    bus_sent: 0,
                    raw_cpu: (f64::NAN, f64::NAN),
                    bus_cpu: (f64::NAN, f64::NAN),
                });
                rows.len() - 1
            }
        };
        let row = &mut rows[at];
        let cpu = (
            r[7].parse().unwrap_or(f64::NAN),
            r[8].parse().unwrap_or(f64::NAN),
        );
        if r[2] == "raw" {
            row.raw = rate;
            row.raw_cpu = cpu;
        } else {
            row.bus_cpu = cpu;
            row.bus = rate;
            row.bus_count = r[4].parse().unwrap_or(0);
            row.bus_sent = r[5].parse().unwrap_or(0);
            row.bus_dropped = r[6].parse().unwrap_or(0);
        }
    }
    Ok(rows)
}

/// A measurement of one wire in one placement: its rows, or why it failed.
type Scenario<R> = fn(Wire, Placement, &[String]) -> Result<Vec<R>, String>;

/// Runs a scenario for every wire and placement, `passes` times over.
struct Passes<'a> {
    passes: usize,
    wires: &'a [Wire],
    /// Options passed on to the children.
    pass: &'a [String],
}

impl Passes<'_> {
    /// Every row of every pass; a scenario that fails is added to `failures`.
    fn run<R>(
        &self,
        what: &str,
        places: &[Placement],
        scenario: Scenario<R>,
        failures: &mut Vec<String>,
    ) -> Vec<R> {
        let mut runs = Vec::new();
        for pass_no in 0..self.passes {
            for &wire in self.wires {
                for &place in places {
                    eprintln!(
                        "wire: {what} over {} ({}), pass {}",
                        wire.name(),
                        place.name(),
                        pass_no + 1
                    );
                    match scenario(wire, place, self.pass) {
                        Ok(rows) => runs.extend(rows),
                        Err(e) => failures.push(e),
                    }
                }
            }
        }
        runs
    }
}

/// One row per wire, placement and mode: the mean of its passes' percentiles, and the sum of
/// their samples.
fn rtt_mean_of_passes(runs: &[RttRow]) -> Vec<RttRow> {
    let mut out: Vec<(RttRow, f64)> = Vec::new();
    for r in runs {
        let same =
            |x: &(RttRow, f64)| x.0.wire == r.wire && x.0.place == r.place && x.0.mode == r.mode;
        match out.iter_mut().find(|x| same(x)) {
            None => out.push((r.clone(), 1.0)),
            Some((m, n)) => {
                let mean = |a: f64, b: f64| (a * *n + b) / (*n + 1.0);
                for (m, r) in [(&mut m.raw, &r.raw), (&mut m.bus, &r.bus)] {
                    *m = (mean(m.0, r.0), mean(m.1, r.1), m.2 + r.2);
                }
                *n += 1.0;
            }
        }
    }
    out.into_iter().map(|(row, _)| row).collect()
}

/// One row per wire, placement and size: the mean of its passes' rates and CPU figures, and
/// the sum of their counts.
fn events_mean_of_passes(runs: &[EvRow]) -> Vec<EvRow> {
    let mut out: Vec<(EvRow, f64)> = Vec::new();
    for r in runs {
        let same =
            |x: &(EvRow, f64)| x.0.wire == r.wire && x.0.place == r.place && x.0.size == r.size;
        match out.iter_mut().find(|x| same(x)) {
            None => out.push((r.clone(), 1.0)),
            Some((m, n)) => {
                let mean = |a: f64, b: f64| (a * *n + b) / (*n + 1.0);
                m.raw = mean(m.raw, r.raw);
                m.bus = mean(m.bus, r.bus);
                m.raw_cpu = (
                    mean(m.raw_cpu.0, r.raw_cpu.0),
                    mean(m.raw_cpu.1, r.raw_cpu.1),
                );
                m.bus_cpu = (
                    mean(m.bus_cpu.0, r.bus_cpu.0),
                    mean(m.bus_cpu.1, r.bus_cpu.1),
                );
                m.bus_count += r.bus_count;
                m.bus_sent += r.bus_sent;
                m.bus_dropped += r.bus_dropped;
                *n += 1.0;
            }
        }
    }
    out.into_iter().map(|(row, _)| row).collect()
}
