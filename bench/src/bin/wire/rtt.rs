//! Round trips: a raw echo and a meshbus command, on the same wire, measured in turns by one
//! client process against one server process.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use meshbus::prelude::*;
use meshbus::Binary;

use crate::msg::{bounded, builder, payload, Echo, OrFail, RoleResult, Wire};
use crate::raw::{self, EchoClient, RawListener};

const BOUND: Duration = Duration::from_secs(20);

/// The server: a raw echo server and a bus that answers [`Echo`]; prints
/// `READY <raw addr> <bus addr>` and serves until its standard input closes.
pub(crate) async fn server(wire: Wire) -> RoleResult {
    let raw = RawListener::bind(wire)
        .await
        .or_fail("bind the raw listener")?;
    let raw_addr = raw.addr();
    let echo = tokio::spawn(raw::echo_server(raw, wire));
    let listen = crate::listen_addr(wire);
    let bus = builder(wire)
        .name("rtt-server")
        .listen(listen.clone())
        .command_handler(|e: Echo, _ctx| async move { HandlerResult::Ok(e.0) })
        .start()
        .await
        .or_fail("start the server bus")?;
    println!("READY {raw_addr} {}", crate::msg::listening(&bus)?);
    crate::until_stdin_closes().await;
    echo.abort();
    let _ = bus.shutdown().await;
    crate::remove_socket(&listen);
    Ok(())
}

/// What the client measures, from the driver's options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RttOpts {
    pub(crate) payload: usize,
    pub(crate) rounds: usize,
    /// Back-to-back: at most this many round trips per turn...
    pub(crate) samples: u64,
    /// ...and at most this long.
    pub(crate) secs: Duration,
    /// Paced (one every millisecond): this many per turn.
    pub(crate) paced: u64,
    /// Skip the raw turns (for profiles).
    pub(crate) bus_only: bool,
    /// Skip the meshbus turns (to count the raw baseline's system calls).
    pub(crate) raw_only: bool,
}

fn hist() -> RoleResult<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).or_fail("histogram bounds")
}

/// The client: warms both up, then takes turns (raw, meshbus; back-to-back, then paced) for
/// `rounds` rounds, and prints `RESULT rtt <mode> <impl> <p50 ns> <p99 ns> <n>` lines.
pub(crate) async fn client(
    wire: Wire,
    raw_addr: &str,
    bus_addr: &str,
    opts: RttOpts,
) -> RoleResult {
    let mut raw = bounded("raw connect", BOUND, EchoClient::connect(wire, raw_addr))
        .await
        .or_fail("connect to the raw echo server")?;
    let bus = builder(wire)
        .name("rtt-client")
        .peers([bus_addr.to_owned()])
        .start()
        .await
        .or_fail("start the client bus")?;
    bounded(
        "the mesh",
        BOUND,
        bus.ready().handlers::<Echo>(Scope::Cluster, 1),
    )
    .await;
    let body = payload(opts.payload);
    let frame = EchoClient::frame(&body);
    let body_bytes = Bytes::from(body.clone());
    let mut one = Turn {
        raw: &mut raw,
        bus: &bus,
        frame: &frame,
        body: &body_bytes,
        vec: &body,
    };
    // Warm up both paths (connections, allocator, caches).
    let turns: &[Impl] = match (opts.bus_only, opts.raw_only) {
        (true, _) => &[Impl::Bus],
        (false, true) => &[Impl::Raw],
        (false, false) => &[Impl::Raw, Impl::Bus],
    };
    for &imp in turns {
        let mut h = hist()?;
        one.back_to_back(imp, &mut h, 2000, Duration::from_millis(300))
            .await?;
    }
    let mut h = [hist()?, hist()?, hist()?, hist()?];
    for round in 0..opts.rounds {
        // Alternate who goes first, so a drift in load does not always favour one.
        let order = if round % 2 == 0 {
            [Impl::Raw, Impl::Bus]
        } else {
            [Impl::Bus, Impl::Raw]
        };
        for imp in order.into_iter().filter(|i| turns.contains(i)) {
            one.back_to_back(imp, &mut h[imp as usize], opts.samples, opts.secs)
                .await?;
        }
        for imp in order.into_iter().filter(|i| turns.contains(i)) {
            one.paced(imp, &mut h[2 + imp as usize], opts.paced).await?;
        }
    }
    for (i, (mode, imp)) in [
        ("b2b", "raw"),
        ("b2b", "bus"),
        ("paced", "raw"),
        ("paced", "bus"),
    ]
    .into_iter()
    .enumerate()
    {
        let h = &h[i];
        println!(
            "RESULT rtt {mode} {imp} {} {} {}",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.len()
        );
    }
    println!("DONE");
    let _ = bus.shutdown().await;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Impl {
    Raw = 0,
    Bus = 1,
}

struct Turn<'a> {
    raw: &'a mut EchoClient,
    bus: &'a Bus,
    frame: &'a Bytes,
    body: &'a Bytes,
    vec: &'a Vec<u8>,
}

impl Turn<'_> {
    async fn once(&mut self, imp: Impl) -> RoleResult<Duration> {
        let start = Instant::now();
        match imp {
            Impl::Raw => {
                self.raw
                    .round_trip(self.frame, self.body)
                    .await
                    .or_fail("raw round trip")?;
            }
            Impl::Bus => {
                let reply = self
                    .bus
                    .commands()
                    .send(Echo(Binary::from(self.vec.clone())))
                    .await
                    .or_fail("meshbus round trip")?;
                if reply.len() != self.vec.len() {
                    return Err(format!(
                        "the echo has {} bytes, the payload {}",
                        reply.len(),
                        self.vec.len()
                    ));
                }
            }
        }
        Ok(start.elapsed())
    }

    async fn back_to_back(
        &mut self,
        imp: Impl,
        h: &mut Histogram<u64>,
        n: u64,
        secs: Duration,
    ) -> RoleResult {
        let start = Instant::now();
        for i in 0..n {
            let rtt = bounded("a round trip", BOUND, self.once(imp)).await?;
            let _ = h.record(rtt.as_nanos() as u64);
            if i % 256 == 255 && start.elapsed() >= secs {
                break;
            }
        }
        Ok(())
    }

    /// One round trip every millisecond: each request finds an idle link.
    async fn paced(&mut self, imp: Impl, h: &mut Histogram<u64>, n: u64) -> RoleResult {
        let mut next = tokio::time::Instant::now();
        for _ in 0..n {
            next += Duration::from_millis(1);
            let now = tokio::time::Instant::now();
            if next < now {
                next = now;
            }
            tokio::time::sleep_until(next).await;
            let rtt = bounded("a round trip", BOUND, self.once(imp)).await?;
            let _ = h.record(rtt.as_nanos() as u64);
        }
        Ok(())
    }
}
