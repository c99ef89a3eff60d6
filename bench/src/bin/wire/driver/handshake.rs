//! The handshake scenario: one server process, one client process that dials it again and
//! again with a fresh node each time.

use super::*;

/// One series of dials.
#[derive(Debug, Clone)]
pub(super) struct HsRow {
    place: Placement,
    dial: String,
    /// Nanoseconds: (p50, mean, p99) until the link is up.
    link: (f64, f64, f64),
    /// Nanoseconds: (p50, mean, p99) until the first command is answered.
    usable: (f64, f64, f64),
    /// CPU nanoseconds per dial: the client's timed part, the server's whole share.
    client_cpu: f64,
    server_cpu: f64,
    dials: u64,
}

/// Warm-up dials before each measured series (their server CPU is not counted).
const WARM: u64 = 10;

fn server_cpu(server: &mut Proc) -> Result<f64, String> {
    server.say("CPU");
    let line = server.wait_line("CPU ", Duration::from_secs(10))?;
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("hs-server: bad line `{line}`"))
}

/// `dials` dials of each kind in `kinds` (`add`, `connect`) over `wire` in `place`.
pub(super) fn scenario(
    wire: Wire,
    place: Placement,
    kinds: &[String],
    dials: u64,
) -> Result<Vec<HsRow>, String> {
    let (server_cpu_no, client_cpu_no) = place.cpus();
    let t = wire.name();
    let mut server = Proc::spawn(
        "hs-server",
        &[s("--role"), s("hs-server"), s("--transport"), s(t)],
        server_cpu_no,
    )?;
    let ready = server.wait_line("READY", Duration::from_secs(20))?;
    let addr = ready
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| format!("hs-server: bad line `{ready}`"))?
        .to_owned();
    let client = |kind: &str, n: u64| -> Result<Vec<Vec<String>>, String> {
        let args = [
            s("--role"),
            s("hs-client"),
            s("--transport"),
            s(t),
            s("--bus"),
            addr.clone(),
            s("--hs-dial"),
            s(kind),
            s("--hs-dials"),
            n.to_string(),
        ];
        let c = Proc::spawn("hs-client", &args, client_cpu_no)?;
        c.results(Duration::from_secs(300))
    };
    let mut rows = Vec::new();
    for kind in kinds {
        client(kind, WARM)?;
        // Let the server finish with the last warm-up link before reading its clock.
        std::thread::sleep(Duration::from_millis(300));
        let before = server_cpu(&mut server)?;
        let results = client(kind, dials)?;
        std::thread::sleep(Duration::from_millis(300));
        let after = server_cpu(&mut server)?;
        let r = results
            .iter()
            .find(|r| r.len() >= 9 && r[0] == "hs")
            .ok_or_else(|| s("hs-client: no result"))?;
        let f = |i: usize| r[i].parse::<f64>().unwrap_or(f64::NAN);
        let n: u64 = r[8].parse().unwrap_or(0);
        rows.push(HsRow {
            place,
            dial: kind.clone(),
            link: (f(1), f(2), f(3)),
            usable: (f(4), f(5), f(6)),
            client_cpu: f(7),
            server_cpu: (after - before) / n.max(1) as f64,
            dials: n,
        });
    }
    Ok(rows)
}

pub(super) fn print(rows: &[HsRow]) {
    if rows.is_empty() {
        return;
    }
    println!(
        "\n## Handshakes over TCP loopback: a fresh node dials the server (p50 / mean / p99)\n"
    );
    println!("| placement | dial | link up | first command answered | CPU per dial: client (timed part) + server | dials |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} / {} / {} | {} / {} / {} | {} + {} | {} |",
            r.place.name(),
            r.dial,
            us(r.link.0),
            us(r.link.1),
            us(r.link.2),
            us(r.usable.0),
            us(r.usable.1),
            us(r.usable.2),
            us(r.client_cpu),
            us(r.server_cpu),
            r.dials
        );
    }
}
