//! The report: the tables, the targets and the machine they ran on.

use super::*;

pub(super) fn us(ns: f64) -> String {
    format!("{:.1} µs", ns / 1000.0)
}

pub(super) fn print_rtt(rows: &[RttRow]) {
    if rows.is_empty() {
        return;
    }
    println!("\n## Round trip (64 B payload unless --rtt-payload), p50 / p99\n");
    println!("| wire | placement | mode | raw p50 | meshbus p50 | ratio | raw p99 | meshbus p99 | ratio | samples raw / meshbus |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.2}x | {} | {} | {:.2}x | {} / {} |",
            r.wire.name(),
            r.place.name(),
            r.mode,
            us(r.raw.0),
            us(r.bus.0),
            r.bus.0 / r.raw.0,
            us(r.raw.1),
            us(r.bus.1),
            r.bus.1 / r.raw.1,
            r.raw.2,
            r.bus.2
        );
    }
}

pub(super) fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M/s", v / 1e6)
    } else {
        format!("{:.0} k/s", v / 1e3)
    }
}

pub(super) fn print_events(rows: &[EvRow]) {
    if rows.is_empty() {
        return;
    }
    println!(
        "\n## Events, one publisher process to one subscriber process (msgs/s at the subscriber)\n"
    );
    println!("| wire | placement | payload | raw coalescing writer | meshbus events | meshbus / raw | CPU per event, publisher + subscriber: raw | meshbus | meshbus received (dropped at the subscriber) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} B | {} | {} | {:.0}% | {:.2} + {:.2} µs | {:.2} + {:.2} µs | {} ({}) |",
            r.wire.name(),
            r.place.name(),
            r.size,
            rate(r.raw),
            rate(r.bus),
            100.0 * r.bus / r.raw,
            r.raw_cpu.0 / 1e3,
            r.raw_cpu.1 / 1e3,
            r.bus_cpu.0 / 1e3,
            r.bus_cpu.1 / 1e3,
            r.bus_count,
            r.bus_dropped
        );
    }
}

pub(super) fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

pub(super) fn print_loss(rows: &[EvRow]) {
    if rows.is_empty() {
        return;
    }
    println!("\n## Events to a `Wait` subscription of the default capacity (1024) whose consumer pauses now and then (--loss-pause-every, --loss-pause-ms), meshbus only, over TCP\n");
    println!("| placement | payload | rate | published | received | lost (published - received) | `remote_events_dropped` at the subscriber |");
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} B | {} | {} | {} | {} | {} |",
            r.place.name(),
            r.size,
            rate(r.bus),
            r.bus_sent,
            r.bus_count,
            r.bus_sent.saturating_sub(r.bus_count),
            r.bus_dropped
        );
    }
}

pub(super) fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// Issue 14's targets that these rows measure.
pub(super) fn print_targets(rtts: &[RttRow], evs: &[EvRow], losses: &[EvRow]) {
    println!("\n## Targets (issue 14)\n");
    for r in rtts.iter().filter(|r| r.wire != Wire::Ws) {
        let p50 = r.bus.0 / r.raw.0;
        let p99 = r.bus.1 / r.raw.1;
        let limit = match r.place {
            Placement::OneCore => Some(1.25),
            Placement::TwoCores => Some(1.1),
            Placement::Free => None,
        };
        let p50_verdict = limit.map_or(s("no p50 target unpinned"), |l| {
            format!("≤ {l}x: {}", verdict(p50 <= l))
        });
        println!(
            "- {} RTT {} {}: p50 {p50:.2}x ({p50_verdict}), p99 {p99:.2}x (≤ 2x: {})",
            r.wire.name(),
            r.place.name(),
            r.mode,
            verdict(p99 <= 2.0)
        );
    }
    for r in rtts.iter().filter(|r| r.wire == Wire::Ws) {
        let p50 = r.bus.0 / r.raw.0;
        println!(
            "- WS RTT {} {}: p50 {p50:.2}x raw WS (≤ 1.25x: {})",
            r.place.name(),
            r.mode,
            verdict(p50 <= 1.25)
        );
    }
    for r in evs.iter().filter(|r| r.wire == Wire::Tcp) {
        let f = r.bus / r.raw;
        let want = if r.size <= 64 { 0.8 } else { 0.9 };
        println!(
            "- TCP events {} B {}: {f:.2}x the raw coalescing writer (≥ {want}x: {})",
            r.size,
            r.place.name(),
            verdict(f >= want)
        );
    }
    for r in losses {
        let lost = r.bus_sent.saturating_sub(r.bus_count);
        println!(
            "- TCP events {} B {}, `Wait` subscriber of the default capacity: {lost} of {} lost (none: {})",
            r.size,
            r.place.name(),
            r.bus_sent,
            verdict(lost == 0)
        );
    }
}

pub(super) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| s("unknown"))
}

pub(super) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| s("unknown"))
}

pub(super) fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_else(|_| s("unknown"))
}

pub(super) fn date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|d| d.trim().to_owned())
        .unwrap_or_else(|| s("unknown"))
}

pub(super) fn command_line(args: &[String]) -> String {
    let mut c = s("cargo run --release -p meshbus-bench --bin wire");
    if !args.is_empty() {
        c.push_str(" -- ");
        c.push_str(&args.join(" "));
    }
    c
}
