//! Ping-pong across two processes over TCP on loopback.
//!
//! In one terminal, start the server:
//!
//! ```sh
//! cargo run --example ping_pong -- serve            # serves until Ctrl-C, Ctrl-D or 10 minutes
//! cargo run --example ping_pong -- serve 60         # ... or 60 seconds
//! ```
//!
//! It listens on a port the system picks and prints one line a program can parse:
//!
//! ```text
//! listening tcp://127.0.0.1:41234
//! ```
//!
//! In another, join it and send pings:
//!
//! ```sh
//! cargo run --example ping_pong -- ping tcp://127.0.0.1:41234 20
//! ```
//!
//! The pinger waits until the server's handler is in its view of the mesh (no sleeps), sends N
//! pings (default 10) one after the other, prints each round trip as `reply <seq> in <µs> us`
//! and a summary, shuts down (the server sees its goodbye) and exits 0. The server stops when
//! its standard input closes, on Ctrl-C, or when its lifetime is over; it exits 0 too.

mod support;

use std::error::Error as StdError;
use std::io::Read;
use std::time::{Duration, Instant};

use meshbus::prelude::*;
use meshbus::tcp::TcpTransport;
use serde::{Deserialize, Serialize};

/// One ping; the server answers with the same sequence number and payload.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "demo.ping", reply = Pong)]
struct Ping {
    seq: u32,
    payload: Vec<u8>,
}

/// The answer to a [`Ping`].
#[derive(Serialize, Deserialize, Debug)]
struct Pong {
    seq: u32,
    payload: Vec<u8>,
}

/// How long `serve` runs without a lifetime argument.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);

/// How long `ping` waits for the server to appear.
const JOIN_BOUND: Duration = Duration::from_secs(10);

const USAGE: &str = "usage: ping_pong serve [SECONDS] | ping ADDR [N]";

#[tokio::main]
async fn main() -> Result<(), Box<dyn StdError>> {
    support::init_logging();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve"] => serve(DEFAULT_LIFETIME).await,
        ["serve", secs] => serve(Duration::from_secs(secs.parse()?)).await,
        ["ping", addr] => ping(addr, 10).await,
        ["ping", addr, n] => ping(addr, n.parse()?).await,
        _ => Err(USAGE.into()),
    }
}

/// The server's handler: the same sequence number and payload back.
async fn pong(ping: Ping, _ctx: Context) -> Result<Pong, HandlerError> {
    Ok(Pong {
        seq: ping.seq,
        payload: ping.payload,
    })
}

async fn serve(lifetime: Duration) -> Result<(), Box<dyn StdError>> {
    let bus = Bus::builder()
        .name("pong")
        .transport(TcpTransport::new())
        .listen("tcp://127.0.0.1:0")
        .command_handler(pong)
        .start()
        .await?;
    let addr = bus.listen_addrs().first().ok_or("no listen address")?;
    // The one line a script (or tests/processes.rs) reads to find us.
    println!("listening {addr}");

    let why = tokio::select! {
        _ = stdin_closed() => "stdin closed",
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = tokio::time::sleep(lifetime) => "lifetime over",
    };
    println!("stopping: {why}");
    bus.shutdown().await?;
    println!("stopped");
    Ok(())
}

/// Resolves when standard input reaches its end (or fails).
///
/// The read runs on a plain thread: tokio's stdin reads on its blocking pool, which a runtime
/// waits for when it shuts down, so a server stopped by Ctrl-C would hang until a key press.
/// The thread is left behind when we exit.
async fn stdin_closed() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let _reader = std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 256];
        // Bounded by the input: each pass consumes at least one byte, or ends the loop.
        while let Ok(1..) = stdin.read(&mut buf) {}
        let _ = tx.send(());
    });
    let _ = rx.await;
}

async fn ping(addr: &str, n: u32) -> Result<(), Box<dyn StdError>> {
    let bus = Bus::builder()
        .name("ping")
        .transport(TcpTransport::new())
        .peers([addr])
        .start()
        .await?;
    bus.ready()
        .handlers::<Ping>(Scope::Cluster, 1)
        .timeout(JOIN_BOUND)
        .await
        .map_err(|e| format!("no ping handler reachable at {addr}: {e}"))?;
    println!("joined {addr}");

    let mut rtts = Vec::with_capacity(n as usize);
    for seq in 1..=n {
        let started = Instant::now();
        let pong = bus
            .commands()
            .send(Ping {
                seq,
                payload: vec![0xAB; 64],
            })
            .timeout(Duration::from_secs(5))
            .await?;
        let rtt = started.elapsed();
        if pong.seq != seq || pong.payload.len() != 64 {
            return Err(format!("ping {seq} got the wrong answer: {pong:?}").into());
        }
        println!("reply {seq} in {} us", rtt.as_micros());
        rtts.push(rtt);
    }
    rtts.sort();
    if let (Some(min), Some(max)) = (rtts.first(), rtts.last()) {
        let median = rtts[rtts.len() / 2];
        println!(
            "{n} pings: min {} us, median {} us, max {} us",
            min.as_micros(),
            median.as_micros(),
            max.as_micros()
        );
    }
    bus.shutdown().await?;
    Ok(())
}
