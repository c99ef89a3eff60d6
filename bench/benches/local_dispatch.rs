//! Local dispatch: what the bus costs over calling the handler yourself.
//!
//! `cargo bench -p meshbus-bench --bench local_dispatch`
//!
//! - `command/direct_dyn_call` is the baseline: the same handler called through
//!   `Arc<dyn CommandHandler<_>>`, with a context made once.
//! - `command/bus_*` send the command through `bus.commands().local()`.
//! - `publish/N` publishes one event to N subscribers and includes the subscribers' work (the
//!   runtime is single-threaded, so every queued event is handled inside the measured time).

#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use meshbus::prelude::*;
use meshbus::{EventHandlerExt, SubscriptionOptions};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "bench.add", reply = u64)]
struct Add(u64, u64);

#[derive(Serialize, Deserialize, Event)]
#[meshbus(name = "bench.tick")]
struct Tick(u64);

struct Adder;

#[async_trait]
impl CommandHandler<Add> for Adder {
    async fn handle(&self, cmd: Add, _ctx: Context) -> Result<u64, HandlerError> {
        Ok(cmd.0.wrapping_add(cmd.1))
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn commands(c: &mut Criterion) {
    let rt = runtime();
    let (bus_trait, bus_closure) = rt.block_on(async {
        let t = Bus::builder()
            .command_handler(Adder)
            .start()
            .await
            .expect("start");
        let c = Bus::builder()
            .command_handler(|cmd: Add, _ctx| async move {
                HandlerResult::Ok(cmd.0.wrapping_add(cmd.1))
            })
            .start()
            .await
            .expect("start");
        (t, c)
    });
    let direct: Arc<dyn CommandHandler<Add>> = Arc::new(Adder);
    let ctx = Context::local(&bus_trait);

    let mut g = c.benchmark_group("command");
    g.throughput(Throughput::Elements(1));
    g.bench_function("direct_dyn_call", |b| {
        b.to_async(&rt).iter(|| async {
            let r = direct.handle(Add(black_box(1), 2), ctx.clone()).await;
            black_box(r.ok())
        })
    });
    g.bench_function("bus_trait_handler", |b| {
        b.to_async(&rt).iter(|| async {
            let r = bus_trait
                .commands()
                .local()
                .send(Add(black_box(1), 2))
                .await;
            black_box(r.ok())
        })
    });
    g.bench_function("bus_trait_handler_no_timeout", |b| {
        b.to_async(&rt).iter(|| async {
            let r = bus_trait
                .commands()
                .local()
                .send(Add(black_box(1), 2))
                .no_timeout()
                .await;
            black_box(r.ok())
        })
    });
    g.bench_function("bus_closure_handler", |b| {
        b.to_async(&rt).iter(|| async {
            let r = bus_closure
                .commands()
                .local()
                .send(Add(black_box(1), 2))
                .await;
            black_box(r.ok())
        })
    });
    g.finish();
}

fn publish(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("publish");
    g.throughput(Throughput::Elements(1));
    for subscribers in [1usize, 8] {
        let counter = Arc::new(AtomicU64::new(0));
        let bus = rt.block_on(async {
            let mut builder = Bus::builder();
            for _ in 0..subscribers {
                let counter = Arc::clone(&counter);
                let count = move |e: Arc<Tick>, _ctx: Context| {
                    counter.fetch_add(e.0, Ordering::Relaxed);
                    async { HandlerResult::Ok(()) }
                };
                builder = builder
                    .event_handler(count.with_options(SubscriptionOptions::new().capacity(4096)));
            }
            builder.start().await.expect("start")
        });
        g.bench_function(format!("{subscribers}_subscribers"), |b| {
            b.to_async(&rt).iter(|| async {
                bus.events()
                    .publish(Tick(black_box(1)))
                    .await
                    .expect("publish");
            })
        });
        rt.block_on(bus.shutdown()).expect("shutdown");
        black_box(counter.load(Ordering::Relaxed));
    }
    g.finish();
}

criterion_group!(benches, commands, publish);
criterion_main!(benches);
