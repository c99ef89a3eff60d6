//! The stalled-subscriber scenario: one subscriber process stopped, healthy ones beside it.

use super::*;

/// How the stalled subscription and the publisher are set up.
pub(super) const VARIANTS: &[(&str, &str)] = &[
    // (name, what it is)
    ("wait", "stalled subscription `Wait`, publisher's defaults"),
    (
        "drop",
        "stalled subscription `DropNewest`, publisher's defaults",
    ),
];

/// What one subscriber said after the run.
#[derive(Debug, Clone, Default)]
pub(super) struct SubRow {
    pub(super) count: u64,
    pub(super) rate: f64,
    pub(super) longest_gap_ms: f64,
    pub(super) silence_ms: f64,
    pub(super) remote_dropped: u64,
    pub(super) events_dropped: u64,
    pub(super) waited_ms: f64,
}

#[derive(Debug, Clone)]
pub(super) struct StallRow {
    pub(super) variant: String,
    pub(super) published: u64,
    pub(super) secs: f64,
    /// From the healthy subscribers' `START` to the publisher's end, as the driver saw it.
    pub(super) end_ms: f64,
    pub(super) gave_up: bool,
    pub(super) rss_before: u64,
    pub(super) rss_peak: u64,
    /// (event number, ms after GO) of the first publish that waited, if any did.
    pub(super) first_wait: Option<(u64, f64)>,
    pub(super) waits: u64,
    pub(super) waited_ms: f64,
    pub(super) longest_wait_ms: f64,
    /// The event number the longest wait came at.
    pub(super) longest_at: u64,
    pub(super) peer_dropped: u64,
    pub(super) queue_full: u64,
    pub(super) queued: u64,
    pub(super) bound: u64,
    pub(super) healthy: Vec<SubRow>,
    pub(super) stalled: SubRow,
}

fn sub_row(r: &[String]) -> SubRow {
    let f = |i: usize| r.get(i).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
    let n = |i: usize| r.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
    SubRow {
        count: n(1),
        rate: f(2),
        longest_gap_ms: f(3),
        silence_ms: f(4),
        remote_dropped: n(5),
        events_dropped: n(6),
        waited_ms: f(7),
    }
}

fn one_result(p: &Proc, what: &str, bound: Duration) -> Result<Vec<String>, String> {
    p.results(bound)?
        .into_iter()
        .find(|r| r.first().map(String::as_str) == Some(what))
        .ok_or_else(|| format!("no `{what}` result"))
}

/// Runs one variant: every process unpinned (three or more processes on two CPUs).
pub(super) fn scenario(variant: &str, healthy: usize, pass: &[String]) -> Result<StallRow, String> {
    let sub_policy = if variant == "wait" { "wait" } else { "drop" };
    let sub_args = |policy: &str| {
        vec![
            s("--role"),
            s("stall-sub"),
            s("--transport"),
            s("tcp"),
            s("--policy"),
            s(policy),
        ]
    };
    let stalled = Proc::spawn("stall-sub (stopped)", &sub_args(sub_policy), None)?;
    let mut addrs = vec![ready_addr(&stalled)?];
    let mut others = Vec::new();
    for _ in 0..healthy {
        let p = Proc::spawn("stall-sub (healthy)", &sub_args("wait"), None)?;
        addrs.push(ready_addr(&p)?);
        others.push(p);
    }
    let mut args = vec![
        s("--role"),
        s("stall-pub"),
        s("--transport"),
        s("tcp"),
        s("--bus"),
        addrs.join(","),
        s("--stall-subs"),
        (healthy + 1).to_string(),
    ];
    args.extend_from_slice(pass);
    let mut publisher = Proc::spawn("stall-pub", &args, None)?;
    publisher.wait_line("READY", Duration::from_secs(30))?;
    // The stopped subscriber reads nothing: its process is frozen.
    stalled.signal(libc::SIGSTOP);
    for o in &mut others {
        o.say("START");
    }
    for o in &others {
        o.wait_line("STARTED", Duration::from_secs(10))?;
    }
    let start = Instant::now();
    publisher.say("GO");
    let r = one_result(&publisher, "stall", Duration::from_secs(120));
    let end_ms = start.elapsed().as_secs_f64() * 1000.0;
    stalled.signal(libc::SIGCONT);
    let r = r?;
    let mut healthy_rows = Vec::new();
    for o in &mut others {
        o.say(&format!("REPORT {} {end_ms:.1}", r[1]));
    }
    for o in &others {
        healthy_rows.push(sub_row(&one_result(
            o,
            "stallsub",
            Duration::from_secs(60),
        )?));
    }
    let mut stalled = stalled;
    stalled.say(&format!("REPORT {} {end_ms:.1}", r[1]));
    let stalled_row = sub_row(&one_result(&stalled, "stallsub", Duration::from_secs(60))?);
    drop(publisher);
    drop(stalled);
    drop(others);
    let n = |i: usize| r.get(i).and_then(|v| v.parse().ok()).unwrap_or(0u64);
    let f = |i: usize| r.get(i).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
    let first_wait = r
        .get(6)
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|&v| v >= 0)
        .map(|v| (v as u64, f(7)));
    Ok(StallRow {
        variant: s(variant),
        published: n(1),
        secs: f(2),
        end_ms,
        gave_up: r.get(3).map(String::as_str) == Some("1"),
        rss_before: n(4),
        rss_peak: n(5),
        first_wait,
        waits: n(8),
        waited_ms: f(9),
        longest_wait_ms: f(10),
        longest_at: n(15),
        peer_dropped: n(11),
        queue_full: n(12),
        queued: n(13),
        bound: n(14),
        healthy: healthy_rows,
        stalled: stalled_row,
    })
}

fn ready_addr(p: &Proc) -> Result<String, String> {
    let ready = p.wait_line("READY", Duration::from_secs(30))?;
    ready
        .split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .ok_or_else(|| format!("a READY without an address: {ready}"))
}

pub(super) fn print(rows: &[StallRow]) {
    if rows.is_empty() {
        return;
    }
    println!("\n## Stalled subscriber (its process SIGSTOPped) beside healthy ones, over TCP\n");
    for (name, what) in VARIANTS {
        println!("- {name}: {what}");
    }
    println!("\nThe publisher:\n");
    println!("| variant | published | in | gave up at the bound | first wait (event, after) | publishes that waited | waited in all | longest wait (at event) | RSS before | RSS peak | growth | limit (2 x bound + 16 MiB) | `peer_events_dropped` | `peer_events_queue_full` | most queued for a peer |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let growth = r.rss_peak.saturating_sub(r.rss_before);
        println!(
            "| {} | {} | {:.2} s | {} | {} | {} | {:.0} ms | {:.0} ms (#{}) | {} | {} | {} | {} | {} | {} | {} |",
            r.variant,
            r.published,
            r.secs,
            if r.gave_up { "yes" } else { "no" },
            r.first_wait
                .map_or(s("none"), |(n, ms)| format!("#{n}, {ms:.0} ms")),
            r.waits,
            r.waited_ms,
            r.longest_wait_ms,
            r.longest_at,
            mib(r.rss_before),
            mib(r.rss_peak),
            mib(growth),
            mib(2 * r.bound + (16 << 20)),
            r.peer_dropped,
            r.queue_full,
            mib(r.queued)
        );
    }
    println!("\nThe subscribers (healthy: during the publishing; stopped: after SIGCONT, until it had everything or 2 s without an event):\n");
    println!("| variant | subscriber | received / published | rate (first..last) | longest gap | silent before the publisher's end | dropped at it (remote, subscription) | it waited for the rest |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        let all = r
            .healthy
            .iter()
            .map(|h| ("healthy", h))
            .chain([("stopped", &r.stalled)]);
        for (who, h) in all {
            println!(
                "| {} | {who} | {} / {} | {} | {:.0} ms | {:.0} ms | {}, {} | {:.0} ms |",
                r.variant,
                h.count,
                r.published,
                rate(h.rate),
                h.longest_gap_ms,
                h.silence_ms,
                h.remote_dropped,
                h.events_dropped,
                h.waited_ms
            );
        }
    }
}

/// Within this, an event "reaches the others at once", and a wait is not a stall.
const AT_ONCE_MS: f64 = 100.0;

pub(super) fn targets(rows: &[StallRow]) {
    for r in rows {
        let growth = r.rss_peak.saturating_sub(r.rss_before);
        let limit = 2 * r.bound + (16 << 20);
        let healthy_all = r.healthy.iter().all(|h| h.count >= r.published);
        // How long after the last publish the healthy ones had their last event (the START
        // the driver measures from comes a few ms before GO, so this errs high).
        let lag = r
            .healthy
            .iter()
            .map(|h| (r.end_ms - h.silence_ms - r.secs * 1000.0).max(0.0))
            .fold(0.0, f64::max);
        let waited = match r.first_wait {
            None => s("the publisher never waited"),
            Some((n, ms)) => format!(
                "the publisher first waited at event #{n} ({ms:.0} ms in), longest at #{} ({:.0} ms)",
                r.longest_at, r.longest_wait_ms
            ),
        };
        let mut line = format!(
            "- stalled subscriber ({}): {waited}; published {} of 1,000,000 max{}; RSS growth {} ≤ {}: {}; every published event reached the healthy ones at once: {} (the last {lag:.0} ms after the last publish)",
            r.variant,
            r.published,
            if r.gave_up { " (gave up at the time bound)" } else { "" },
            mib(growth),
            mib(limit),
            verdict(growth <= limit),
            verdict(healthy_all && lag < AT_ONCE_MS),
        );
        if r.variant == "wait" {
            line.push_str(&format!(
                "; nothing lost after it resumes: {} ({} of {})",
                verdict(r.stalled.count >= r.published),
                r.stalled.count,
                r.published
            ));
        } else {
            // Short waits are the healthy `Wait` subscribers' own flow control.
            let held = r.gave_up || r.longest_wait_ms >= AT_ONCE_MS;
            line.push_str(&format!(
                "; the stopped subscriber never holds the publisher (no wait of {AT_ONCE_MS} ms or more): {}",
                verdict(!held)
            ));
        }
        println!("{line}");
    }
}
