//! Durable streams across processes: a host process keeps the stream `orders` on its disk; the
//! producer (this process) publishes orders with confirmation; a replaying reader reads them
//! back from the start; two member processes of the durable consumer `billing` share the
//! orders, each handled once and acknowledged.
//!
//! ```sh
//! cargo run --example streams --features streams
//! ```
//!
//! It exits by itself within a few seconds. The stream's files go to a temporary directory,
//! removed at the end. Each child process is this example run again with a role (`host DIR`,
//! `member ADDR NAME`); they talk over loopback TCP and stop when this process closes their
//! standard input.

mod support;

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures_util::StreamExt;
use meshbus::prelude::*;
use meshbus::streams::{ConsumerConfig, From, StreamConfig};
use meshbus::tcp::TcpTransport;
use meshbus::BusBuilder;
use serde::{Deserialize, Serialize};

/// An order was placed.
#[derive(Serialize, Deserialize, Event, Debug, Clone)]
#[meshbus(name = "shop.order_placed")]
struct OrderPlaced {
    order: u32,
    cents: u64,
}

const ORDERS: u32 = 20;

fn node(name: &str) -> BusBuilder {
    Bus::builder()
        .name(name)
        .transport(TcpTransport::new())
        .listen("tcp://127.0.0.1:0")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn StdError>> {
    support::init_logging();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["host", dir] => host(dir).await,
        ["member", addr, name] => member(addr, name).await,
        _ => producer().await,
    }
}

/// The host: keeps the stream `orders` (capturing `OrderPlaced`) in `dir`.
async fn host(dir: &str) -> Result<(), Box<dyn StdError>> {
    let bus = node("host")
        .stream(StreamConfig::new("orders").event::<OrderPlaced>().dir(dir))
        .start()
        .await?;
    println!("listening {}", bus.listen_addrs()[0]);
    wait_for_stdin_to_close().await;
    bus.shutdown().await?;
    Ok(())
}

/// A member of the durable consumer `billing`: bills each order it is handed, once.
async fn member(addr: &str, name: &str) -> Result<(), Box<dyn StdError>> {
    let me = name.to_owned();
    let bus = node(name)
        .peers([addr])
        .stream_handler(
            "orders",
            "billing",
            ConsumerConfig::new().ack_wait(Duration::from_secs(5)),
            move |order: OrderPlaced, ctx| {
                println!(
                    "billed {} {} (delivery {})",
                    order.order, me, ctx.deliveries
                );
                async { HandlerResult::Ok(()) }
            },
        )
        .start()
        .await?;
    wait_for_stdin_to_close().await;
    bus.shutdown().await?;
    Ok(())
}

/// Reads stdin to its end on a thread (the parent closing it is the signal to stop).
async fn wait_for_stdin_to_close() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = tx.send(());
    });
    // At most ten minutes, whatever happens to the parent.
    let _ = tokio::time::timeout(Duration::from_secs(600), rx).await;
}

/// A child process of this example, whose stdout lines arrive on a channel; killed if still
/// running when dropped.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

fn spawn(args: &[&str]) -> Result<Proc, Box<dyn StdError>> {
    let mut child = Process::new(std::env::current_exe()?)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let stdin = child.stdin.take();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    Ok(Proc {
        child,
        stdin,
        lines,
    })
}

impl Proc {
    /// The next line, within a bound.
    fn line(&self) -> Result<String, Box<dyn StdError>> {
        Ok(self.lines.recv_timeout(Duration::from_secs(60))?)
    }

    /// Closes its stdin and waits for it to exit.
    fn stop(mut self) -> Result<(), Box<dyn StdError>> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.flush();
        }
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The producer: starts the host and two members, publishes orders with confirmation, reads
/// them back, and waits until the members have billed every order once.
async fn producer() -> Result<(), Box<dyn StdError>> {
    let dir = tempfile::tempdir()?;
    let dir_arg = dir
        .path()
        .to_str()
        .ok_or("a temporary directory with a UTF-8 path")?;
    let host = spawn(&["host", dir_arg])?;
    let addr = host
        .line()?
        .strip_prefix("listening ")
        .ok_or("the host did not say where it listens")?
        .to_owned();
    println!(
        "host process {} keeps stream `orders` at {addr}",
        host.child.id()
    );
    let members = [
        spawn(&["member", &addr, "billing-1"])?,
        spawn(&["member", &addr, "billing-2"])?,
    ];

    let bus = node("shop").peers([addr.as_str()]).start().await?;
    bus.ready()
        .handlers_named("$streams.capture.shop.order_placed", Scope::Network, 1)
        .timeout(Duration::from_secs(30))
        .await?;

    // A confirmed publish resolves once the host has the order on its disk.
    for order in 0..ORDERS {
        let cents = 1_000 + u64::from(order) * 25;
        let confirmed = bus.streams().publish(OrderPlaced { order, cents }).await?;
        let c = &confirmed[0];
        println!("order {order}: stream `{}` offset {}", c.stream, c.offset);
    }

    // A reader replays the stream from its start.
    let replayed: Vec<u32> = bus
        .streams()
        .read::<OrderPlaced>("orders")
        .from(From::Start)
        .take(ORDERS as usize)
        .map(|r| r.map(|r| r.value.order))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    println!("replayed from the start: {replayed:?}");

    // The members share the orders: each billed once, by one of them.
    let mut billed: BTreeMap<u32, String> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while billed.len() < ORDERS as usize {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("only {} orders billed within a minute", billed.len()).into());
        }
        for m in &members {
            while let Ok(line) = m.lines.try_recv() {
                let mut words = line.split_whitespace().skip(1);
                if let (Some(order), Some(by)) = (words.next(), words.next()) {
                    let order: u32 = order.parse()?;
                    if let Some(first) = billed.insert(order, by.to_owned()) {
                        println!("order {order} billed again (by {first} before): a redelivery");
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let by_one = billed.values().filter(|b| *b == "billing-1").count();
    println!(
        "billed {} orders: {by_one} by billing-1, {} by billing-2",
        billed.len(),
        billed.len() - by_one
    );
    // A member acks an order once its handler has returned: wait for the last acks.
    let mut info = bus.streams().consumer_info("orders", "billing").await?;
    while info.acked < u64::from(ORDERS) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        info = bus.streams().consumer_info("orders", "billing").await?;
    }
    println!(
        "consumer `billing`: acked {}, pending {}, lag {}",
        info.acked, info.pending, info.lag
    );

    bus.shutdown().await?;
    for m in members {
        m.stop()?;
    }
    host.stop()?;
    Ok(())
}
