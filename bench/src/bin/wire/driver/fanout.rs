//! The fan-out scenario: one publisher process, N subscriber processes, 1 → 1 and 1 → N
//! measured in turns with the same processes.

use super::*;

/// Where the processes of the fan-out run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FanPlace {
    /// Publisher on CPU 0, every subscriber on CPU 1.
    Split,
    /// Everyone unpinned.
    Free,
}

impl FanPlace {
    pub(super) fn parse(v: &str) -> Option<FanPlace> {
        match v {
            "split" => Some(FanPlace::Split),
            "free" => Some(FanPlace::Free),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FanPlace::Split => "split (publisher CPU 0, subscribers CPU 1)",
            FanPlace::Free => "free (unpinned)",
        }
    }

    /// (publisher CPU, subscribers' CPU).
    fn cpus(self) -> (Option<usize>, Option<usize>) {
        match self {
            FanPlace::Split => (Some(0), Some(1)),
            FanPlace::Free => (None, None),
        }
    }
}

/// One subscriber's total over the measured runs of a mode.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct SubTotal {
    count: u64,
    nanos: u64,
    dropped: u64,
    cpu: u64,
}

impl SubTotal {
    fn rate(&self) -> f64 {
        SubReport {
            count: self.count,
            nanos: self.nanos,
            ..SubReport::default()
        }
        .rate()
    }
}

#[derive(Debug, Clone)]
pub(super) struct FanRow {
    place: FanPlace,
    size: usize,
    subs: usize,
    /// 1 → 1: events published, publisher CPU ns, subscriber 0's total.
    one: (u64, u64, SubTotal),
    /// 1 → N: events published, publisher CPU ns, every subscriber's total.
    all: (u64, u64, Vec<SubTotal>),
    /// The N subscribers are members of one group: each event goes to one of them.
    group: bool,
}

fn results_of(p: &Proc, what: &str) -> Result<Vec<Vec<String>>, String> {
    let r = p.results(Duration::from_secs(60))?;
    Ok(r.into_iter()
        .filter(|r| r.first().map(String::as_str) == Some(what))
        .collect())
}

/// One run of `mode`: returns (sent, publisher CPU ns, per subscriber (count, nanos, dropped,
/// cpu)).
fn run(
    publisher: &mut Proc,
    subs: &mut [Proc],
    mode: &str,
    secs: f64,
    max: u64,
) -> Result<(u64, u64, Vec<SubTotal>), String> {
    publisher.say(&format!("RUN {mode} {secs} {max}"));
    let sent: u64 = results_of(publisher, "sent")?
        .first()
        .and_then(|r| r.get(1))
        .and_then(|v| v.parse().ok())
        .ok_or("fan-pub: no `sent`")?;
    let asked = if mode == "one" { &mut subs[..1] } else { subs };
    for sub in asked.iter_mut() {
        sub.say(&format!("REPORT {sent}"));
    }
    let mut totals = Vec::new();
    for sub in asked.iter() {
        let r = results_of(sub, "fansub")?;
        let r = r.first().ok_or("fan-sub: no result")?;
        let n = |i: usize| r.get(i).and_then(|v| v.parse().ok()).unwrap_or(0u64);
        totals.push(SubTotal {
            count: n(2),
            nanos: n(3),
            dropped: n(4),
            cpu: n(5),
        });
    }
    publisher.say("CPU");
    let cpu: u64 = results_of(publisher, "cpu")?
        .first()
        .and_then(|r| r.get(1))
        .and_then(|v| v.parse().ok())
        .ok_or("fan-pub: no `cpu`")?;
    Ok((sent, cpu, totals))
}

/// Runs the fan-out at `place`: `rounds` rounds of a 1 → 1 and a 1 → N run (alternating
/// which goes first), after a short warm-up of each.
pub(super) fn scenario(
    place: FanPlace,
    subs_n: usize,
    size: usize,
    rounds: usize,
    secs: f64,
    max: u64,
    group: bool,
) -> Result<FanRow, String> {
    let (pub_cpu, sub_cpu) = place.cpus();
    let group_flag: &[String] = if group { &[s("--fan-group")][..] } else { &[] };
    let mut subs = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..subs_n {
        let args = [
            s("--role"),
            s("fan-sub"),
            s("--transport"),
            s("tcp"),
            s("--index"),
            i.to_string(),
        ];
        let p = Proc::spawn("fan-sub", &[&args[..], group_flag].concat(), sub_cpu)?;
        let ready = p.wait_line("READY", Duration::from_secs(30))?;
        addrs.push(
            ready
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned(),
        );
        subs.push(p);
    }
    let args = [
        s("--role"),
        s("fan-pub"),
        s("--transport"),
        s("tcp"),
        s("--bus"),
        addrs.join(","),
        s("--fan-subs"),
        subs_n.to_string(),
        s("--fan-payload"),
        size.to_string(),
    ];
    let mut publisher = Proc::spawn("fan-pub", &[&args[..], group_flag].concat(), pub_cpu)?;
    publisher.wait_line("READY", Duration::from_secs(60))?;
    for mode in ["one", "all"] {
        run(&mut publisher, &mut subs, mode, 0.2, max)?;
    }
    let mut row = FanRow {
        place,
        size,
        subs: subs_n,
        one: (0, 0, SubTotal::default()),
        all: (0, 0, vec![SubTotal::default(); subs_n]),
        group,
    };
    let add = |t: &mut SubTotal, r: &SubTotal| {
        t.count += r.count;
        t.nanos += r.nanos;
        t.dropped += r.dropped;
        t.cpu += r.cpu;
    };
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            ["one", "all"]
        } else {
            ["all", "one"]
        };
        for mode in order {
            let (sent, cpu, totals) = run(&mut publisher, &mut subs, mode, secs, max)?;
            if mode == "one" {
                row.one.0 += sent;
                row.one.1 += cpu;
                add(&mut row.one.2, &totals[0]);
            } else {
                row.all.0 += sent;
                row.all.1 += cpu;
                for (t, r) in row.all.2.iter_mut().zip(&totals) {
                    add(t, r);
                }
            }
        }
    }
    drop(publisher);
    drop(subs);
    Ok(row)
}

fn us2(ns: f64) -> String {
    format!("{:.2} µs", ns / 1000.0)
}

pub(super) fn print(rows: &[FanRow]) {
    let (groups, rows): (Vec<&FanRow>, Vec<&FanRow>) = rows.iter().partition(|r| r.group);
    print_groups(&groups);
    if rows.is_empty() {
        return;
    }
    println!("\n## Fan-out over TCP: one publisher process to N subscriber processes, against 1 → 1 in the same run\n");
    println!("| placement | payload | 1 → 1 rate | 1 → N: subscribers | slowest | mean | fastest | slowest / 1 → 1 | sum of the N | publisher CPU per event 1 → 1 | 1 → N | ratio | subscriber CPU per event 1 → 1 / 1 → N (mean) | dropped at the subscribers 1 → 1 / 1 → N |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let rates: Vec<f64> = r.all.2.iter().map(SubTotal::rate).collect();
        let one = r.one.2.rate();
        let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let max = rates.iter().copied().fold(0.0, f64::max);
        let mean = rates.iter().sum::<f64>() / rates.len().max(1) as f64;
        let pub_one = r.one.1 as f64 / r.one.0.max(1) as f64;
        let pub_all = r.all.1 as f64 / r.all.0.max(1) as f64;
        let sub_one = r.one.2.cpu as f64 / r.one.2.count.max(1) as f64;
        let sub_all = r
            .all
            .2
            .iter()
            .map(|t| t.cpu as f64 / t.count.max(1) as f64)
            .sum::<f64>()
            / r.all.2.len().max(1) as f64;
        println!(
            "| {} | {} B | {} | {} | {} | {} | {} | {:.0}% | {} | {} | {} | {:.2}x | {} / {} | {} / {} |",
            r.place.name(),
            r.size,
            rate(one),
            r.subs,
            rate(min),
            rate(mean),
            rate(max),
            100.0 * min / one,
            rate(rates.iter().sum()),
            us2(pub_one),
            us2(pub_all),
            pub_all / pub_one,
            us2(sub_one),
            us2(sub_all),
            r.one.2.dropped,
            r.all.2.iter().map(|t| t.dropped).sum::<u64>(),
        );
    }
}

/// The group's total rate (the members' rates summed) against 1 → 1.
fn group_ratio(r: &FanRow) -> f64 {
    let total: f64 = r.all.2.iter().map(SubTotal::rate).sum();
    total / r.one.2.rate()
}

fn print_groups(rows: &[&FanRow]) {
    if rows.is_empty() {
        return;
    }
    println!("\n## A group over TCP: one publisher process to a group of N member processes (each event to one), against 1 → 1 in the same run\n");
    println!("| placement | payload | 1 → 1 rate | members | each member | group total | total / 1 → 1 | publisher CPU per event 1 → 1 / group | events received / published |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let rates: Vec<String> = r.all.2.iter().map(|t| rate(t.rate())).collect();
        let pub_one = r.one.1 as f64 / r.one.0.max(1) as f64;
        let pub_all = r.all.1 as f64 / r.all.0.max(1) as f64;
        let got: u64 = r.all.2.iter().map(|t| t.count).sum();
        println!(
            "| {} | {} B | {} | {} | {} | {} | {:.2}x | {} / {} | {got} / {} |",
            r.place.name(),
            r.size,
            rate(r.one.2.rate()),
            r.subs,
            rates.join(", "),
            rate(r.all.2.iter().map(SubTotal::rate).sum()),
            group_ratio(r),
            us2(pub_one),
            us2(pub_all),
            r.all.0,
        );
    }
}

pub(super) fn targets(rows: &[FanRow]) {
    for r in rows.iter().filter(|r| r.group) {
        println!(
            "- group of {} {} B, {}: total {:.2}x 1 → 1 (≥ 0.9x: {})",
            r.subs,
            r.size,
            r.place.name(),
            group_ratio(r),
            verdict(group_ratio(r) >= 0.9)
        );
    }
    for r in rows.iter().filter(|r| !r.group) {
        let one = r.one.2.rate();
        let min = r
            .all
            .2
            .iter()
            .map(SubTotal::rate)
            .fold(f64::INFINITY, f64::min);
        let cpu =
            (r.all.1 as f64 / r.all.0.max(1) as f64) / (r.one.1 as f64 / r.one.0.max(1) as f64);
        println!(
            "- fan-out 1 → {} {} B, {}: slowest subscriber {:.0}% of 1 → 1 (≥ 50%: {}); publisher CPU per event {cpu:.2}x 1 → 1's (≤ 2x: {})",
            r.subs,
            r.size,
            r.place.name(),
            100.0 * min / one,
            verdict(min >= 0.5 * one),
            verdict(cpu <= 2.0)
        );
    }
}
