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

pub(super) fn print_stall(rows: &[StallRow]) {
    if rows.is_empty() {
        return;
    }
    println!("\n## Stalled subscriber (its process SIGSTOPped), publisher over TCP\n");
    println!("| policy | published | in | rate | stalled | RSS before | RSS peak | growth | limit (2 x bound + 16 MiB) | `stats().peer_events_dropped` | `stats().peer_events_queue_full` | `peer_stats()[0].queued_bytes` |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let growth = r.rss_peak.saturating_sub(r.rss_before);
        println!(
            "| {} | {} | {:.2} s | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.policy,
            r.published,
            r.secs,
            rate(r.published as f64 / r.secs.max(1e-9)),
            if r.stalled { "yes" } else { "no" },
            mib(r.rss_before),
            mib(r.rss_peak),
            mib(growth),
            mib(2 * r.bound + (16 << 20)),
            r.dropped,
            r.queue_full,
            mib(r.queued)
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

pub(super) fn print_targets(rtts: &[RttRow], evs: &[EvRow], stalls: &[StallRow]) {
    println!("\n## Targets\n");
    for r in rtts.iter().filter(|r| r.wire == Wire::Tcp) {
        let p50 = r.bus.0 / r.raw.0;
        let p99 = r.bus.1 / r.raw.1;
        let limit = match r.place {
            Placement::OneCore => Some(2.0),
            Placement::TwoCores => Some(1.5),
            Placement::Free => None,
        };
        match limit {
            Some(l) => println!(
                "- TCP RTT {} {}: p50 {p50:.2}x (≤ {l}x: {}), p99 {p99:.2}x (≤ 3x: {})",
                r.place.name(),
                r.mode,
                verdict(p50 <= l),
                verdict(p99 <= 3.0)
            ),
            None => println!(
                "- TCP RTT {} {}: p50 {p50:.2}x (no p50 target unpinned), p99 {p99:.2}x (≤ 3x: {})",
                r.place.name(),
                r.mode,
                verdict(p99 <= 3.0)
            ),
        }
    }
    for r in evs.iter().filter(|r| r.wire == Wire::Tcp && r.size == 64) {
        let f = r.bus / r.raw;
        println!(
            "- TCP events 64 B {}: {:.0}% of the raw baseline (≥ 50%: {})",
            r.place.name(),
            100.0 * f,
            verdict(f >= 0.5)
        );
    }
    let find_rtt = |w: Wire, p: Placement, m: &str| {
        rtts.iter()
            .find(|r| r.wire == w && r.place == p && r.mode == m)
    };
    for r in rtts.iter().filter(|r| r.wire == Wire::Tcp) {
        if let Some(ws) = find_rtt(Wire::Ws, r.place, &r.mode) {
            let f = ws.bus.0 / r.bus.0;
            println!(
                "- WS vs TCP RTT {} {}: meshbus p50 {f:.2}x TCP's (≤ 1.5x: {})",
                r.place.name(),
                r.mode,
                verdict(f <= 1.5)
            );
        }
        if let Some(ux) = find_rtt(Wire::Unix, r.place, &r.mode) {
            let f = ux.bus.0 / r.bus.0;
            println!(
                "- Unix vs TCP RTT {} {}: meshbus p50 {f:.2}x TCP's (< 1x: {})",
                r.place.name(),
                r.mode,
                verdict(f < 1.0)
            );
        }
    }
    for r in evs.iter().filter(|r| r.wire == Wire::Tcp) {
        let other = |w: Wire| {
            evs.iter()
                .find(|x| x.wire == w && x.place == r.place && x.size == r.size)
        };
        if let Some(ws) = other(Wire::Ws) {
            let f = r.bus / ws.bus;
            println!(
                "- WS vs TCP events {} B {}: TCP does {f:.2}x WS's rate (≤ 1.5x: {})",
                r.size,
                r.place.name(),
                verdict(f <= 1.5)
            );
        }
        if let Some(ux) = other(Wire::Unix) {
            let f = ux.bus / r.bus;
            println!(
                "- Unix vs TCP events {} B {}: Unix does {f:.2}x TCP's rate (> 1x: {})",
                r.size,
                r.place.name(),
                verdict(f > 1.0)
            );
        }
    }
    for r in stalls {
        let growth = r.rss_peak.saturating_sub(r.rss_before);
        let limit = 2 * r.bound + (16 << 20);
        let what = if r.policy == "wait" {
            format!(
                "publisher {} after {} events",
                if r.stalled {
                    "stalled"
                } else {
                    "did not stall"
                },
                r.published
            )
        } else {
            format!("{} drops counted", r.dropped)
        };
        println!(
            "- stalled subscriber ({}): RSS growth {} ≤ {}: {}; {what}",
            r.policy,
            mib(growth),
            mib(limit),
            verdict(growth <= limit)
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
