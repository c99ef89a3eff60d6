//! Kill -9 of a stream's host during 100,000 confirmed appends (issue 16): the host runs in a
//! child process over TCP on 127.0.0.1, concurrent publishers in this process append to it
//! with idempotency keys, the host is killed with SIGKILL a third of the way through and
//! started again on the same directory, and the publishers retry what failed with the same
//! keys. At the end the stream holds exactly one record per key, at dense offsets from 0, each
//! confirmed offset with its body, and appending goes on at the next offset. Whether appends in
//! flight at the kill had been written depends on the timing, so a key appended before the
//! load is also appended again right after the restart: it must get its first offset back.
//!
//! One test per fsync policy: `Always`, and the default `Interval`. A kill -9 is
//! not a power cut: whatever the host wrote to the OS survives it whatever the policy, so with
//! `Interval` (and `Never`) every confirmed record must survive too. (What a power cut keeps
//! under each policy is tested over a fault-injecting storage, in `tests/log/faults.rs`.)
//!
//! Every append is a single confirmed append (`append(..).key(..)`, 16 publishers of 6,250
//! each): `append_all` takes no idempotency keys, and one key per record is what a retry
//! after the crash needs. Segments are 1 MiB, so the 100,000 records span several and the
//! crash may land anywhere in the log.
//!
//! The host is this test binary run again in host mode ([`SEED_ENV`] set). Every wait is
//! bounded and waits for a line the child prints, a count, or a change in the mesh, never for
//! a fixed time; the child is killed and reaped when its guard drops, so a failing test leaves
//! no process behind.

// A binary of its own: it spawns processes and loads the machine for tens of seconds.

#[path = "crash/child.rs"]
mod child;
#[path = "crash/load.rs"]
mod load;

use std::future::IntoFuture;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use meshbus_core::{Bus, BusBuilder, Event, Scope};
use meshbus_streams::{FsyncPolicy, LogConfig, StreamConfig, StreamsBuilderExt, StreamsExt};
use meshbus_transport_tcp::TcpTransport;
use serde::{Deserialize, Serialize};

use child::HostProc;

/// Set in the host child: the address of the node it dials.
const SEED_ENV: &str = "MESHBUS_STREAMS_CRASH_SEED";
/// Set in the host child: the stream's directory.
const DIR_ENV: &str = "MESHBUS_STREAMS_CRASH_DIR";
/// Set in the host child: the fsync policy, as [`policy_name`] writes it.
const FSYNC_ENV: &str = "MESHBUS_STREAMS_CRASH_FSYNC";

/// The host's name in the mesh.
const HOST_NAME: &str = "stream-host";
/// The command that finds the host.
const APPEND: &str = "$streams.orders.append";

/// The bound on one step (a line, a change in the mesh, an answer).
const BOUND: Duration = Duration::from_secs(30);
/// The bound on the whole load (100,000 appends and the restart).
const LOAD_BOUND: Duration = Duration::from_secs(300);
/// The bound on a host child's life.
const RUN_BOUND: Duration = Duration::from_secs(600);

const HEARTBEAT: Duration = Duration::from_millis(200);
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// What the publishers append: its body names its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Order {
    publisher: u32,
    seq: u32,
    key: String,
}
impl Event for Order {
    const NAME: &'static str = "crash.order";
}

/// The idempotency key of publisher `p`'s `i`th append.
fn key(p: u32, i: u32) -> String {
    format!("p{p}-{i}")
}

fn order(p: u32, i: u32) -> Order {
    Order {
        publisher: p,
        seq: i,
        key: key(p, i),
    }
}

/// How the host child is told its policy.
fn policy_name(policy: FsyncPolicy) -> &'static str {
    match policy {
        FsyncPolicy::Always => "always",
        FsyncPolicy::Interval(_) => "interval",
        FsyncPolicy::Never => "never",
    }
}

fn node(name: &str) -> BusBuilder {
    Bus::builder()
        .name(name)
        .cluster("crash")
        .heartbeat_interval(HEARTBEAT)
        .peer_timeout(PEER_TIMEOUT)
        .transport(TcpTransport::new())
        .listen("tcp://127.0.0.1:0")
}

/// Awaits `fut`, failing the test if it takes longer than `bound`.
async fn within<T>(what: &str, bound: Duration, fut: impl IntoFuture<Output = T>) -> T {
    match tokio::time::timeout(bound, fut.into_future()).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {bound:?} waiting for {what}"),
    }
}

/// The host child: not a test of its own. Run without [`SEED_ENV`] it returns at once.
///
/// It hosts stream `orders` in [`DIR_ENV`] with the policy of [`FSYNC_ENV`] (the default
/// `Interval` unless `always` or `never`), dials the seed, prints `host listening <addr>` once
/// its stream is open, and shuts down when its stdin closes (or after [`RUN_BOUND`]),
/// printing `host stopped`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_host() {
    let Ok(seed) = std::env::var(SEED_ENV) else {
        return;
    };
    let dir = PathBuf::from(std::env::var_os(DIR_ENV).expect("the stream's directory"));
    let mut log = LogConfig::new("orders").segment_bytes(1 << 20);
    match std::env::var(FSYNC_ENV).as_deref() {
        Ok("always") => log = log.fsync(FsyncPolicy::Always),
        Ok("never") => log = log.fsync(FsyncPolicy::Never),
        _ => {}
    }
    let bus = node(HOST_NAME)
        .peers([seed])
        .stream(
            StreamConfig::new("orders")
                .event::<Order>()
                .dir(dir)
                .log(log),
        )
        .start()
        .await
        .expect("the host starts");
    println!("host listening {}", bus.listen_addrs()[0]);

    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = String::new();
        // Bounded by the input: ends at its end.
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
        let _ = tx.send(());
    });
    let _ = tokio::time::timeout(RUN_BOUND, rx).await;
    bus.shutdown().await.expect("the host shuts down");
    println!("host stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_host_loses_no_confirmed_append_with_fsync_always() {
    kill_9_during_appends(FsyncPolicy::Always).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_host_loses_no_confirmed_append_with_fsync_interval() {
    kill_9_during_appends(FsyncPolicy::default()).await;
}

/// The whole scenario, for one policy.
async fn kill_9_during_appends(fsync: FsyncPolicy) {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let client = node("client").start().await.unwrap();
    let seed = client.listen_addrs()[0].to_string();

    let (mut host, addr) = HostProc::start(&seed, dir.path(), fsync).await;
    assert!(addr.starts_with("tcp://127.0.0.1:"), "{addr}");
    within(
        "the host",
        BOUND,
        client.ready().handlers_named(APPEND, Scope::Network, 1),
    )
    .await;
    let host_id = client
        .membership()
        .borrow()
        .peer_named(HOST_NAME)
        .expect("the host is a peer")
        .node_id;

    // The first order is appended once before the load (its publisher's own append of it
    // then gets offset 0 too), and once more after the restart, below.
    let first = within(
        "the first append",
        BOUND,
        client
            .streams()
            .append("orders", order(0, 0))
            .key(key(0, 0)),
    )
    .await
    .unwrap();
    assert_eq!(first, 0);

    let mut load = load::Load::start(&client);
    // A third of the way through, kill -9: no goodbye, no shutdown, no flush.
    let at_kill = within(
        "30,000 confirmed appends",
        LOAD_BOUND,
        load.confirmed_at_least(load::KILL_AT),
    )
    .await;
    host.kill_9();
    let killed = Instant::now();
    let mut view = client.membership();
    within(
        "the client to drop the killed host",
        BOUND,
        view.wait_for(|v| v.peer(host_id).is_none()),
    )
    .await
    .unwrap();

    // The same directory, a new process and port: it dials the client as the first did.
    let (host, _) = HostProc::start(&seed, dir.path(), fsync).await;
    within(
        "the restarted host",
        BOUND,
        client.ready().handlers_named(APPEND, Scope::Network, 1),
    )
    .await;
    let recovered = within("info", BOUND, client.streams().info("orders"))
        .await
        .unwrap();
    let restarted = Instant::now();
    assert!(
        recovered.next_offset >= at_kill,
        "{at_kill} appends were confirmed before the kill, {} records recovered",
        recovered.next_offset
    );
    // The restarted host read the keys of its dedupe window back from its log: a key
    // appended before the kill gets its first offset again, not a second record.
    let again = within(
        "a repeated append",
        BOUND,
        client
            .streams()
            .append("orders", order(0, 0))
            .key(key(0, 0)),
    )
    .await
    .unwrap();
    assert_eq!(again, 0);
    let info = within("info", BOUND, client.streams().info("orders"))
        .await
        .unwrap();
    assert_eq!(info.records, recovered.records, "{info:?}");
    load.host_restarted();
    let published = within("the publishers to finish", LOAD_BOUND, load.finish()).await;
    let loaded = Instant::now();

    let summary = load::check(&client, &published, recovered.next_offset).await;
    let checked = Instant::now();
    eprintln!(
        "fsync {}: {at_kill} confirmed at the kill, {} records recovered, {summary}; \
         load {:?} (restart {:?}), check {:?}, total {:?}",
        policy_name(fsync),
        recovered.next_offset,
        loaded - started,
        restarted - killed,
        checked - loaded,
        started.elapsed(),
    );

    within("the host to stop", BOUND, host.stop()).await;
    within("the client to stop", BOUND, client.shutdown())
        .await
        .unwrap();
}
