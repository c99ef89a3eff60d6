//! Handshakes: how long a fresh node takes from dialling a server to a link it can use, and
//! the CPU the dialler spends on it (the driver reads the server's share from the server).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use meshbus::prelude::*;
use meshbus::Binary;

use crate::msg::{bounded, builder, cpu_ns, payload, Echo, OrFail, Orders, RoleResult, Wire};

const BOUND: Duration = Duration::from_secs(20);

/// The server: a bus that answers [`Echo`]; prints `READY <bus addr>`, then `CPU <ns>` (its
/// process's CPU time so far) for every `CPU` line on its standard input, until it closes.
pub(crate) async fn server(wire: Wire) -> RoleResult {
    let listen = crate::listen_addr(wire);
    let bus = builder(wire)
        .name("hs-server")
        // Hundreds of dials a second from 127.0.0.1 are what the per-host handshake limit
        // (bursts of 256, then 64 a second) is there to slow down; this measures the handshake.
        .handshake_rate_per_host(None)
        .listen(listen.clone())
        .command_handler(|e: Echo, _ctx| async move { HandlerResult::Ok(e.0) })
        .start()
        .await
        .or_fail("start the server bus")?;
    println!("READY {}", crate::msg::listening(&bus)?);
    let mut orders = Orders::new();
    while let Some(line) = orders.next(Duration::from_secs(600)).await {
        if line == "CPU" {
            println!("CPU {}", cpu_ns());
        }
    }
    let _ = bus.shutdown().await;
    crate::remove_socket(&listen);
    Ok(())
}

/// How the client dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dial {
    /// `add_peers([addr])`, then `ready().peers(1)`: works on every build.
    AddPeers,
    /// `Bus::connect(addr)`, which returns once the handshake is done (issue 17's API).
    #[cfg(feature = "trust")]
    Connect,
}

impl Dial {
    pub(crate) fn parse(s: &str) -> Option<Dial> {
        match s {
            "add" => Some(Dial::AddPeers),
            #[cfg(feature = "trust")]
            "connect" => Some(Dial::Connect),
            _ => None,
        }
    }
}

/// The client: `dials` times, starts a fresh node (not timed), dials the server and times
/// (a) until the link is up (`link`), (b) until the server's handler is known and one
/// 64-byte command has been answered (`usable`); shuts the node down (not timed). Prints
/// `RESULT hs <link p50> <link mean> <link p99> <usable p50> <usable mean> <usable p99>
/// <client CPU ns per dial, timed part> <dials>`, all in nanoseconds.
pub(crate) async fn client(wire: Wire, bus_addr: &str, dial: Dial, dials: u64) -> RoleResult {
    let hist = || Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).or_fail("bounds");
    let (mut link, mut usable) = (hist()?, hist()?);
    let body = payload(64);
    let mut cpu = 0u64;
    for _ in 0..dials {
        let bus = builder(wire)
            .name("hs-client")
            .start()
            .await
            .or_fail("start the client bus")?;
        let cpu0 = cpu_ns();
        let t0 = Instant::now();
        match dial {
            Dial::AddPeers => {
                bus.add_peers([bus_addr.to_owned()])
                    .await
                    .or_fail("add_peers")?;
                bounded("the link", BOUND, bus.ready().peers(1)).await;
            }
            #[cfg(feature = "trust")]
            Dial::Connect => {
                bounded("connect", BOUND, bus.connect(bus_addr))
                    .await
                    .or_fail("connect")?;
            }
        }
        let up = t0.elapsed();
        bounded(
            "the handler",
            BOUND,
            bus.ready().handlers::<Echo>(Scope::Cluster, 1),
        )
        .await;
        let reply = bounded("the first command", BOUND, async {
            bus.commands().send(Echo(Binary::from(body.clone()))).await
        })
        .await
        .or_fail("the first command")?;
        let used = t0.elapsed();
        cpu += cpu_ns().saturating_sub(cpu0);
        if reply.len() != body.len() {
            return Err(format!(
                "the echo has {} bytes, not {}",
                reply.len(),
                body.len()
            ));
        }
        let _ = link.record(up.as_nanos() as u64);
        let _ = usable.record(used.as_nanos() as u64);
        let _ = bus.shutdown().await;
    }
    println!(
        "RESULT hs {} {:.0} {} {} {:.0} {} {} {}",
        link.value_at_quantile(0.5),
        link.mean(),
        link.value_at_quantile(0.99),
        usable.value_at_quantile(0.5),
        usable.mean(),
        usable.value_at_quantile(0.99),
        cpu / dials.max(1),
        link.len()
    );
    println!("DONE");
    Ok(())
}
