//! Nodes in separate processes over TCP on 127.0.0.1: the quickstart, a two-process
//! `ping_pong`, and a child node killed with SIGKILL while it handles a request.
//!
//! The examples are run from the binaries `cargo test` built next to this test's (in
//! `target/<profile>/examples/`); when they are missing (a run of this test target alone), they
//! are built with the cargo that runs the tests, bounded in time. (Run alone after editing an
//! example, this target may find the example's older binary: `cargo test` rebuilds it.) The killed node is this test
//! binary run again in node mode ([`NODE_ENV`]). Every wait is bounded and waits for a line the
//! child prints or a change in the mesh, never for a fixed time; every child is killed and
//! reaped when its guard drops, so a failing test leaves no process behind.

// A binary of its own, not in a suite: it builds and spawns the examples as child processes,
// which are slow and share the machine's ports and CPU with whatever else runs in the binary.

#![cfg(feature = "tcp")]

#[path = "support/mod.rs"]
mod support;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command as Process, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use meshbus::prelude::*;
use meshbus::tcp::TcpTransport;
use meshbus::BusBuilder;
use serde::{Deserialize, Serialize};
use support::within;
use tokio::sync::mpsc;

/// Set in a child started by [`a_node_killed_with_sigkill_fails_its_requests_with_peer_lost`]:
/// the child runs [`child_node`] instead of tests. Its value is the seed address.
const NODE_ENV: &str = "MESHBUS_PROCESS_TEST_NODE";

/// The bound on one step (a line, a reply, a change in the mesh).
const BOUND: Duration = Duration::from_secs(30);

/// The bound on a whole child run (the quickstart, a ping run).
const RUN_BOUND: Duration = Duration::from_secs(120);

/// The bound on building a missing example.
const BUILD_BOUND: Duration = Duration::from_secs(900);

const HEARTBEAT: Duration = Duration::from_millis(200);
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

#[path = "processes/child.rs"]
mod child;

use child::{run_example, ChildProc};

// ----- the examples -----

#[tokio::test]
async fn the_quickstart_runs_and_exits_zero() {
    let quickstart = run_example("quickstart", &[]).await;
    let (status, out) = quickstart.finish().await;
    assert!(status.success(), "quickstart: {status}; output: {out:#?}");
    let has = |text: &str| out.iter().any(|l| l.contains(text));
    for line in [
        "orders listens on tcp://127.0.0.1:",
        "mesh ready",
        "local command answered: hello, web",
        "placed order 1",
        "[billing] invoice for order 1 (book)",
        "web saw OrderPlaced for order 1",
        "web saw InvoiceSent for order 1",
        "order refused: handler for `shop.place-order` failed",
        "quantity must be at least 1",
        "charged over the network: receipt-1",
        "not in our cluster: no handler for `finance.charge` in scope cluster",
        "cancelled order 1",
        "orders shut down",
        "done",
    ] {
        assert!(has(line), "no line with {line:?} in {out:#?}");
    }
}

#[tokio::test]
async fn ping_pong_across_two_processes() {
    let mut serve = run_example("ping_pong", &["serve", "120"]).await;
    let addr = serve.line_after("listening ").await;
    assert!(addr.starts_with("tcp://127.0.0.1:"), "{addr}");

    let ping = run_example("ping_pong", &["ping", &addr, "20"]).await;
    let (status, out) = ping.finish().await;
    assert!(status.success(), "ping: {status}; output: {out:#?}");
    let replies: Vec<_> = out.iter().filter(|l| l.starts_with("reply ")).collect();
    assert_eq!(replies.len(), 20, "{out:#?}");
    for (i, line) in replies.iter().enumerate() {
        assert!(line.starts_with(&format!("reply {} in ", i + 1)), "{line}");
    }
    assert!(
        out.iter().any(|l| l.starts_with("20 pings: min ")),
        "{out:#?}"
    );

    // The server stops when its stdin closes, and exits 0.
    serve.close_stdin();
    assert_eq!(serve.line_after("stopping: ").await, "stdin closed");
    let (status, out) = serve.finish().await;
    assert!(status.success(), "serve: {status}; output: {out:#?}");
}

// ----- a node killed with SIGKILL -----

/// Held by the child until it is killed.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "proc.slow", reply = String)]
struct Slow(u32);

/// Answered by the surviving in-process node.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "proc.echo", reply = String)]
struct Echo(String);

fn node(name: &str) -> BusBuilder {
    Bus::builder()
        .name(name)
        .host_id("proc-host")
        .cluster("proc")
        .heartbeat_interval(HEARTBEAT)
        .peer_timeout(PEER_TIMEOUT)
        .transport(TcpTransport::new())
        .listen("tcp://127.0.0.1:0")
}

/// The child node: not a test of its own. Run without [`NODE_ENV`] it returns at once.
///
/// It joins the seed, prints `node listening <addr>`, and answers `Slow` by printing
/// `node handling slow <n>` and then holding the request until it is cancelled or the process
/// dies. It stops when its stdin closes or after [`RUN_BOUND`].
#[tokio::test]
async fn child_node() {
    let Ok(seed) = std::env::var(NODE_ENV) else {
        return;
    };
    let bus = node("child")
        .peers([seed])
        .command_handler(|cmd: Slow, ctx: Context| async move {
            println!("node handling slow {}", cmd.0);
            tokio::select! {
                _ = ctx.cancelled() => Err(HandlerError::msg("cancelled")),
                _ = tokio::time::sleep(RUN_BOUND) => Ok(format!("slow {} done", cmd.0)),
            }
        })
        .start()
        .await
        .expect("the child node starts");
    println!("node listening {}", bus.listen_addrs()[0]);
    serve_until_stdin_closes(bus).await;
}

/// Keeps a child's node running until its stdin closes (or [`RUN_BOUND`]), then shuts it down.
async fn serve_until_stdin_closes(bus: Bus) {
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
    let _ = bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_fails_its_requests_with_peer_lost() {
    // caller sends; survivor serves Echo; the child (another process) holds Slow.
    let caller = node("caller").start().await.unwrap();
    let seed = caller.listen_addrs()[0].to_string();
    let survivor = node("survivor")
        .peers([seed.clone()])
        .command_handler(|e: Echo, _ctx| async move { HandlerResult::Ok(e.0) })
        .start()
        .await
        .unwrap();

    let mut cmd = Process::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_node", "--nocapture", "--test-threads=1"])
        .env(NODE_ENV, &seed);
    let mut child = ChildProc::spawn("child", cmd);
    let child_addr = child.line_after("node listening ").await;
    assert!(child_addr.starts_with("tcp://127.0.0.1:"), "{child_addr}");
    within("the mesh of three", async {
        caller.ready().handlers::<Slow>(Scope::Cluster, 1).await;
        caller.ready().handlers::<Echo>(Scope::Cluster, 1).await;
        survivor.ready().peers(2).await;
    })
    .await;
    let child_id = caller
        .membership()
        .borrow()
        .peer_named("child")
        .expect("the child is a peer")
        .node_id;

    // A request the child answers... never: it holds it.
    let in_flight = {
        let caller = caller.clone();
        tokio::spawn(async move {
            caller
                .commands()
                .send(Slow(1))
                .timeout(Duration::from_secs(60))
                .await
        })
    };
    assert_eq!(child.line_after("node handling slow ").await, "1");

    // SIGKILL: no goodbye, no shutdown.
    let killed = Instant::now();
    child.child.kill().expect("killing the child");
    let outcome = tokio::time::timeout(PEER_TIMEOUT + Duration::from_secs(3), in_flight)
        .await
        .expect("the in-flight request ends within peer_timeout (+ slack)")
        .expect("the request task");
    let err = outcome.expect_err("the child never answered");
    assert_eq!(err.kind(), ErrorKind::PeerLost, "{err}");
    assert_eq!(err.peer(), Some(child_id), "{err}");
    eprintln!("PeerLost {:?} after the kill", killed.elapsed());
    // Reaped here; the guard would do it too.
    let status = child.child.wait().unwrap();
    assert!(!status.success(), "killed: {status}");

    // Once it is out of the view, a new request finds no handler, at once.
    let mut view = caller.membership();
    within(
        "the caller to drop the child",
        view.wait_for(|v| v.peer(child_id).is_none()),
    )
    .await
    .unwrap();
    let err = within(
        "a request to the dead child",
        caller.commands().send(Slow(2)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoHandler, "{err}");

    // The survivor serves on, and drops the child too.
    let reply = within(
        "the survivor's reply",
        caller.commands().send(Echo("still here".into())),
    )
    .await
    .unwrap();
    assert_eq!(reply, "still here");
    let mut view = survivor.membership();
    within(
        "the survivor to drop the child",
        view.wait_for(|v| v.peer(child_id).is_none()),
    )
    .await
    .unwrap();
    assert_eq!(survivor.membership().borrow().peers.len(), 1);

    for bus in [&caller, &survivor] {
        within("shutdown", bus.shutdown()).await.unwrap();
    }
}

// ----- chaos: nodes killed and restarted under load -----

/// Set in a child started by [`killed_and_restarted_nodes_lose_no_unsent_command`]: the child
/// runs [`chaos_node`]. Its value is `<seed> <listen address>`.
const CHAOS_ENV: &str = "MESHBUS_PROCESS_TEST_CHAOS";

/// Answered with its own number by every chaos node.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "proc.work", reply = u64)]
struct Work(u64);

/// A chaos node: not a test of its own. Run without [`CHAOS_ENV`] it returns at once.
///
/// It listens on the address it is given, joins the seed, prints `chaos listening`, and
/// answers each `Work(n)` with `n`, printing `chaos got <n>` first. It stops when its stdin
/// closes or after [`RUN_BOUND`].
#[tokio::test]
async fn chaos_node() {
    let Ok(env) = std::env::var(CHAOS_ENV) else {
        return;
    };
    let (seed, listen) = env.split_once(' ').expect("seed and address");
    let bus = Bus::builder()
        .name("chaos")
        .host_id("proc-host")
        .cluster("proc")
        .heartbeat_interval(HEARTBEAT)
        .peer_timeout(PEER_TIMEOUT)
        .transport(TcpTransport::new())
        .listen(listen)
        .peers([seed])
        .command_handler(|w: Work, _ctx| async move {
            println!("chaos got {}", w.0);
            HandlerResult::Ok(w.0)
        })
        .start()
        .await
        .expect("the chaos node starts");
    println!("chaos listening {}", bus.listen_addrs()[0]);
    serve_until_stdin_closes(bus).await;
}

/// Starts a chaos node on `listen`; its output lines are collected into `seen` (drained as
/// they come, so the child never blocks on a full pipe).
async fn chaos_child(
    seed: &str,
    listen: &str,
    seen: &std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    drains: &mut tokio::task::JoinSet<()>,
) -> ChildProc {
    let mut cmd = Process::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "chaos_node", "--nocapture", "--test-threads=1"])
        .env(CHAOS_ENV, format!("{seed} {listen}"));
    let mut proc = ChildProc::spawn("chaos", cmd);
    proc.line_after("chaos listening ").await;
    let mut lines = std::mem::replace(&mut proc.lines, mpsc::channel(1).1);
    let seen = std::sync::Arc::clone(seen);
    drains.spawn(async move {
        // Ends when the child's stdout closes (it exits or is killed).
        while let Some(line) = lines.recv().await {
            seen.lock().unwrap().push(line);
        }
    });
    proc
}

/// A free loopback address for a node that restarts at the same address.
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("tcp://{}", l.local_addr().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_nodes_lose_no_unsent_command() {
    const NODES: usize = 4;
    const IN_FLIGHT: usize = 50;
    const KILLS: usize = 8;
    let caller = node("caller").start().await.unwrap();
    let seed = caller.listen_addrs()[0].to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut drains = tokio::task::JoinSet::new();
    let addrs: Vec<String> = (0..NODES).map(|_| free_addr()).collect();
    let mut children = Vec::new();
    for addr in &addrs {
        children.push(chaos_child(&seed, addr, &seen, &mut drains).await);
    }
    within(
        "four workers",
        caller.ready().handlers::<Work>(Scope::Cluster, NODES),
    )
    .await;

    // 50 commands in flight at all times, each with its own number, until told to stop.
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    // How many commands have ended, whichever way: the chaos below goes by it.
    let (ended_tx, mut ended) = tokio::sync::watch::channel(0u64);
    let ended_tx = std::sync::Arc::new(ended_tx);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let (caller, stop, next) = (caller.clone(), stop.clone(), next.clone());
        let ended_tx = std::sync::Arc::clone(&ended_tx);
        load.spawn(async move {
            let mut outcomes = Vec::new();
            while !*stop.borrow() {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let r = caller
                    .commands()
                    .send(Work(n))
                    .timeout(Duration::from_secs(10))
                    .await;
                outcomes.push((n, r));
                ended_tx.send_modify(|e| *e += 1);
            }
            outcomes
        });
    }
    // The chaos: each time another 2,000 commands have ended, one node is killed (SIGKILL) and
    // started again at its address, while the load runs on.
    for k in 0..KILLS {
        let target = *ended.borrow_and_update() + 2_000;
        within("the load to go on", ended.wait_for(|e| *e >= target))
            .await
            .unwrap();
        let i = (k * 3) % NODES;
        children[i].child.kill().expect("killing a node");
        children[i].child.wait().expect("reaping it");
        children[i] = chaos_child(&seed, &addrs[i], &seen, &mut drains).await;
    }
    within(
        "the workers back",
        caller.ready().handlers::<Work>(Scope::Cluster, NODES),
    )
    .await;
    stop_tx.send_replace(true);
    let mut answered = 0;
    let mut lost = 0;
    while let Some(outcomes) = within("the load to stop (no hang)", load.join_next()).await {
        for (n, r) in outcomes.unwrap() {
            match r {
                Ok(reply) => {
                    assert_eq!(reply, n, "a reply to another command");
                    answered += 1;
                }
                Err(e) => {
                    // Three workers are up at any time: nothing that was never written to
                    // the dead one may fail, and nothing times out or finds no handler.
                    assert_eq!(e.kind(), ErrorKind::PeerLost, "command {n}: {e}");
                    assert!(
                        !e.to_string().contains("before the command was sent"),
                        "command {n} failed although it never left: {e}"
                    );
                    lost += 1;
                }
            }
        }
    }
    eprintln!("{answered} answered, {lost} lost with PeerLost over {KILLS} kills");
    assert!(
        lost <= KILLS * IN_FLIGHT,
        "{lost} lost: more than the commands in flight at each kill"
    );
    assert!(answered > 0);
    // No command ran twice: every number the workers printed, printed once.
    for child in &mut children {
        let _ = child.child.kill();
        let _ = child.child.wait();
    }
    while within("the outputs", drains.join_next()).await.is_some() {}
    let mut ran: Vec<u64> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| {
            l.split_once("chaos got ")
                .and_then(|(_, n)| n.trim().parse().ok())
        })
        .collect();
    let total = ran.len();
    ran.sort_unstable();
    ran.dedup();
    assert_eq!(ran.len(), total, "a command ran twice");
    within("shutdown", caller.shutdown()).await.unwrap();
}

// ----- a group member killed with SIGKILL -----

/// Set in a child started by [`a_killed_group_member_loses_only_what_it_held`]: the child runs
/// [`group_member_node`]. Its value is the seed address.
const GROUP_ENV: &str = "MESHBUS_PROCESS_TEST_GROUP";

/// The grouped event.
#[derive(Debug, Serialize, Deserialize, Event)]
#[meshbus(name = "proc.job")]
struct Job(u32);

/// The child's room: it holds this many jobs unread.
const CHILD_ROOM: usize = 8;

/// A member of group `billing`: not a test of its own. Run without [`GROUP_ENV`] it returns at
/// once. It joins the seed, subscribes with room for [`CHILD_ROOM`] jobs and reads none,
/// prints `member listening`, and stops when its stdin closes or after [`RUN_BOUND`].
#[tokio::test]
async fn group_member_node() {
    let Ok(seed) = std::env::var(GROUP_ENV) else {
        return;
    };
    let bus = node("member")
        .peers([seed])
        .start()
        .await
        .expect("the member starts");
    let _held = bus
        .subscribe_with::<Job>(
            meshbus::SubscriptionOptions::new()
                .group("billing")
                .capacity(CHILD_ROOM),
        )
        .expect("the member subscribes");
    println!("member listening {}", bus.listen_addrs()[0]);
    serve_until_stdin_closes(bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_group_member_loses_only_what_it_held() {
    let publisher = node("publisher").start().await.unwrap();
    let seed = publisher.listen_addrs()[0].to_string();
    let mut cmd = Process::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "group_member_node",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(GROUP_ENV, &seed);
    let mut child = ChildProc::spawn("member", cmd);
    child.line_after("member listening ").await;
    within(
        "the child member",
        publisher
            .ready()
            .members::<Job>("billing", Scope::Cluster, 1),
    )
    .await;
    // The child is the only member: it takes the first jobs, up to its room, and holds them.
    for i in 0..CHILD_ROOM as u32 {
        within("a publish", publisher.events().publish(Job(i)))
            .await
            .unwrap();
    }
    // A second member, which reads: with the child full, every later job goes to it.
    let survivor = node("survivor").peers([seed]).start().await.unwrap();
    let mut jobs = survivor
        .subscribe_with::<Job>(meshbus::SubscriptionOptions::new().group("billing"))
        .unwrap();
    within(
        "both members",
        publisher
            .ready()
            .members::<Job>("billing", Scope::Cluster, 2),
    )
    .await;
    let first = CHILD_ROOM as u32;
    for i in first..first + 20 {
        within("a publish", publisher.events().publish(Job(i)))
            .await
            .unwrap();
    }
    let child_id = publisher
        .membership()
        .borrow()
        .peer_named("member")
        .unwrap()
        .node_id;
    child.child.kill().expect("killing the child");
    let mut view = publisher.membership();
    within(
        "the publisher to drop the child",
        view.wait_for(|v| v.peer(child_id).is_none()),
    )
    .await
    .unwrap();
    let stats = publisher.group_stats();
    assert_eq!(stats[0].lost_in_flight, CHILD_ROOM as u64, "{stats:?}");
    for i in first + 20..first + 40 {
        within("a publish", publisher.events().publish(Job(i)))
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..40 {
        got.push(within("the survivor's jobs", jobs.recv()).await.unwrap().0);
    }
    assert_eq!(got, (first..first + 40).collect::<Vec<_>>());
    let _ = child.child.wait();
    for bus in [&publisher, &survivor] {
        within("shutdown", bus.shutdown()).await.unwrap();
    }
}
