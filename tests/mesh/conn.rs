//! Connections over their life: a replaced connection drains, the handlers of a lost one get
//! a grace period, and interest that did not fit a full control lane still arrives.

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::Duration;

use crate::support::raw::{ping, Got, RawConn, RawPeer};
use crate::support::*;
use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;
use meshbus::{MembershipView, PeerInfo};
use meshbus_core::wire::FrameKind;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

/// Handled by the node under test: answers `n * 10` once released.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "conn.slow", reply = u32)]
struct Slow(u32);

/// Handled by the raw peer: the node under test sends it.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "conn.work", reply = u32)]
struct Work(u32);

#[derive(Serialize, Deserialize, Event)]
#[meshbus(name = "conn.news")]
struct News(u32);

/// Its handler waits for the cancel, then cleans up (which takes a while) and reports.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "conn.polite")]
struct Polite;

/// Its handler ignores the cancel; a guard reports when the handler is dropped.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "conn.stubborn")]
struct Stubborn;

/// How long a replaced connection may stay open for work under way
/// (`proto::retirement::RETIRE_BOUND`).
const RETIRE_BOUND: Duration = Duration::from_secs(30);

/// How long a lost connection's handlers get after their cancel (the runtime's
/// `CANCEL_GRACE`).
const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// The seed of the raw peer's static key (so of its node id).
const X_SEED: u128 = 0x00c0_ffee_0000_0000_0000_0000_0000_0001;

/// Node `b` handling `Slow`: each call reports that it started, then waits for `release`.
async fn slow_server(net: &InMemNetwork) -> (Bus, mpsc::Receiver<u32>, Arc<Notify>) {
    let (started_tx, started) = mpsc::channel(8);
    let release = Arc::new(Notify::new());
    let gate = Arc::clone(&release);
    let b = node(net, "b")
        .command_handler(move |s: Slow, _ctx| {
            let (started_tx, gate) = (started_tx.clone(), Arc::clone(&gate));
            async move {
                let _ = started_tx.send(s.0).await;
                gate.notified().await;
                HandlerResult::Ok(s.0 * 10)
            }
        })
        .start()
        .await
        .unwrap();
    (b, started, release)
}

/// The raw peer `x`, as `b` sees it.
fn x_in(view: &MembershipView) -> Option<&PeerInfo> {
    view.peers
        .iter()
        .find(|p| p.node_id == crate::support::secure::identity(X_SEED).node_id())
}

/// Node `b`, and the raw peer `x` handling `Work` over a connection that `x` does not read
/// until told to: one frame in flight per direction, so what `b` sends `x` queues at `b`.
async fn b_and_a_stalled_x(net: &InMemNetwork) -> (Bus, RawPeer, RawConn) {
    let b = node(net, "b")
        .peer_timeout(Duration::from_secs(600))
        .start()
        .await
        .unwrap();
    net.set_link_capacity(1);
    let x = RawPeer::new(net, "x", X_SEED);
    let conn = x.connect_with("inmem://b", false).await;
    conn.send_interest(0, &[Work::NAME], &[]).await;
    until_view(&b, |v| {
        x_in(v).is_some_and(|p| p.commands == [Work::NAME.to_owned()])
    })
    .await;
    (b, x, conn)
}

#[tokio::test(start_paused = true)]
async fn a_replaced_connection_finishes_its_requests_and_handlers_then_closes() {
    let net = InMemNetwork::new(60);
    let (b, mut started, release) = slow_server(&net).await;
    let x = RawPeer::new(&net, "x", X_SEED);

    // The first connection: x handles `Work`, and each side has a request under way on it.
    let mut old = x.connect("inmem://b").await;
    old.send_interest(0, &[Work::NAME], &[]).await;
    until_view(&b, |v| {
        x_in(v).is_some_and(|p| p.commands == [Work::NAME.to_owned()])
    })
    .await;
    let b2 = b.clone();
    let first = tokio::spawn(async move {
        b2.commands()
            .send(Work(1))
            .timeout(Duration::from_secs(120))
            .await
    });
    let (work_id, Work(n)) = old.recv_command::<Work>().await;
    assert_eq!(n, 1);
    let slow_id = old.send_command(&Slow(7)).await;
    assert_eq!(within("the handler", started.recv()).await, Some(7));

    // x dials again as the same run of the same node: arbitration replaces the old connection
    // (same incarnation, same dialler). b's interest snapshot on the new one shows b kept it.
    let mut new = x.connect("inmem://b").await;
    let snapshot = new.recv_interest().await;
    assert!(snapshot.snapshot);
    assert_eq!(snapshot.commands_added, [Slow::NAME.to_owned()]);
    // The replacement did not make x look like a node that handles nothing.
    let view = b.membership().borrow().clone();
    let seen = x_in(&view).map(|p| p.commands.clone());
    assert_eq!(seen, Some(vec![Work::NAME.to_owned()]), "{view:?}");
    new.send_interest(0, &[Work::NAME], &[]).await;
    // Each end tells the other on the old connection that it replaced it.
    old.recv_replaced().await;
    old.send_replaced().await;

    // b's request on the old connection gets its real reply there, not PeerLost.
    old.reply(work_id, &11u32).await;
    let reply = within("the first reply", first).await.unwrap();
    assert_eq!(reply.unwrap(), 11);

    // New requests go over the new connection; the old one carries none.
    let b2 = b.clone();
    let second = tokio::spawn(async move { b2.commands().send(Work(2)).await });
    let (id, Work(n)) = new.recv_command::<Work>().await;
    assert_eq!(n, 2);
    new.reply(id, &22u32).await;
    assert_eq!(
        within("the second reply", second).await.unwrap().unwrap(),
        22
    );

    // The old connection stays open while b's handler for it runs, whatever time passes
    // (x answers b's pings on both connections meanwhile).
    let nothing_new = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match old.recv().await {
                Got::Frame(f) => assert_ne!(f.kind, FrameKind::Command, "{f:?}"),
                Got::Closed => panic!("the old connection closed with a handler running"),
            }
        }
    })
    .await;
    assert!(
        nothing_new.is_err(),
        "5 s with neither a command nor the close"
    );

    // The handler answers on the old connection, which then closes at once: drained.
    release.notify_one();
    let t0 = Instant::now();
    assert_eq!(old.recv_reply::<u32>(slow_id).await, 70);
    old.closed().await;
    assert!(t0.elapsed() < HEARTBEAT, "{:?}", t0.elapsed());

    // The end of the old connection did not take x with it.
    let view = b.membership().borrow().clone();
    assert!(x_in(&view).is_some(), "{view:?}");
    let b2 = b.clone();
    let third = tokio::spawn(async move { b2.commands().send(Work(3)).await });
    let (id, Work(n)) = new.recv_command::<Work>().await;
    assert_eq!(n, 3);
    new.reply(id, &33u32).await;
    assert_eq!(within("the third reply", third).await.unwrap().unwrap(), 33);
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_replaced_connection_with_a_handler_that_never_ends_closes_at_the_bound() {
    let net = InMemNetwork::new(61);
    let (b, mut started, _release) = slow_server(&net).await;
    let x = RawPeer::new(&net, "x", X_SEED);

    let mut old = x.connect("inmem://b").await;
    old.send_command(&Slow(1)).await;
    assert_eq!(within("the handler", started.recv()).await, Some(1));
    let mut new = x.connect("inmem://b").await;
    new.recv_interest().await;
    let retired_at = Instant::now();

    old.closed().await;
    let open = retired_at.elapsed();
    assert!(open >= RETIRE_BOUND, "{open:?}");
    assert!(open <= RETIRE_BOUND + CANCEL_GRACE, "{open:?}");
    // The new connection lives on.
    let view = b.membership().borrow().clone();
    assert!(x_in(&view).is_some(), "{view:?}");
    b.shutdown().await.unwrap();
}

/// Sends what happened to a handler, and when.
type Log = mpsc::Sender<(&'static str, Instant)>;

/// Reports when the handler holding it is dropped (finished or aborted).
struct OnDrop(Log);

impl Drop for OnDrop {
    fn drop(&mut self) {
        let _ = self.0.try_send(("stubborn dropped", Instant::now()));
    }
}

#[tokio::test(start_paused = true)]
async fn the_handlers_of_a_lost_peer_are_cancelled_then_get_a_grace_period() {
    const CLEANUP: Duration = Duration::from_millis(200);
    let net = InMemNetwork::new(62);
    let (log, mut events) = mpsc::channel(16);
    let (polite_log, stubborn_log) = (log.clone(), log);
    let b = node(&net, "b")
        .command_handler(move |_: Polite, ctx: Context| {
            let log = polite_log.clone();
            async move {
                log.send(("polite started", Instant::now())).await.unwrap();
                ctx.cancelled().await;
                log.send(("polite cancelled", Instant::now()))
                    .await
                    .unwrap();
                tokio::time::sleep(CLEANUP).await; // cleaning up takes time
                log.send(("polite cleaned up", Instant::now()))
                    .await
                    .unwrap();
                HandlerResult::Ok(())
            }
        })
        .command_handler(move |_: Stubborn, _ctx| {
            let log = stubborn_log.clone();
            async move {
                let _guard = OnDrop(log.clone());
                log.send(("stubborn started", Instant::now()))
                    .await
                    .unwrap();
                std::future::pending::<()>().await;
                HandlerResult::Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    let a = node(&net, "a").peers(["inmem://b"]).start().await.unwrap();
    within("b", a.ready().handlers::<Stubborn>(Scope::Cluster, 1)).await;

    let long = Duration::from_secs(600);
    let calls = async {
        tokio::join!(
            a.commands().send(Polite).timeout(long),
            a.commands().send(Stubborn).timeout(long),
        )
    };
    let mut cut_at = None;
    let mut seen = std::collections::BTreeMap::new();
    let ((polite, stubborn), ()) = tokio::join!(calls, async {
        for _ in 0..2 {
            let (what, at) = within("a handler", events.recv()).await.unwrap();
            seen.insert(what, at);
        }
        net.cut("a", "b");
        cut_at = Some(Instant::now());
        for _ in 0..3 {
            let (what, at) = within("the handlers' end", events.recv()).await.unwrap();
            seen.insert(what, at);
        }
    });
    assert_eq!(polite.unwrap_err().kind(), ErrorKind::PeerLost);
    assert_eq!(stubborn.unwrap_err().kind(), ErrorKind::PeerLost);

    // b finds a dead within the peer timeout and cancels what it runs for it.
    let cancelled = seen["polite cancelled"];
    let lost_after = cancelled - cut_at.unwrap();
    assert!(lost_after <= PEER_TIMEOUT, "{lost_after:?}");
    // The polite handler gets to finish its clean-up, past an `.await`.
    assert_eq!(seen["polite cleaned up"] - cancelled, CLEANUP);
    // The stubborn one is aborted: after the grace, not before, and not later.
    assert_eq!(seen["stubborn dropped"] - cancelled, CANCEL_GRACE);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn interest_that_did_not_fit_a_full_control_lane_is_sent_later() {
    let net = InMemNetwork::new(63);
    // One frame per lane, and a long peer timeout: x stops reading for a while.
    let b = node(&net, "b")
        .peer_queue_capacity(1)
        .peer_timeout(Duration::from_secs(600))
        .start()
        .await
        .unwrap();
    // c is a witness: it learns of b's subscription as soon as b's actor has handled it.
    let c = node(&net, "c").peers(["inmem://b"]).start().await.unwrap();
    until_view(&c, |v| v.peers.iter().any(|p| p.name == "b")).await;

    // x's connection holds one frame each way, and x does not read: b's writer to x stalls
    // with one frame on the link and one in hand, and one more fills the control lane. x's
    // pings make b queue pongs there; once six are on the link, b has handled at least four.
    net.set_link_capacity(1);
    let x = RawPeer::new(&net, "x", X_SEED);
    let mut conn = x.connect_with("inmem://b", false).await;
    for _ in 0..6 {
        conn.send(ping()).await;
    }
    conn.flush().await;

    // b subscribes at run time: the delta for x does not fit.
    let _news = b.subscribe::<News>().unwrap();
    until_view(&c, |v| {
        v.peers
            .iter()
            .any(|p| p.name == "b" && p.events == [News::NAME.to_owned()])
    })
    .await;

    // Once x reads again, b's interest reaches it without any further change: as a
    // snapshot, since the delta was never sent.
    conn.resume_reading();
    let resumed = Instant::now();
    let first = conn.recv_interest().await;
    assert!(first.snapshot && first.events_added.is_empty(), "{first:?}");
    let owed = conn.recv_interest().await;
    assert!(owed.snapshot, "{owed:?}");
    assert_eq!(owed.events_added, [News::NAME.to_owned()]);
    assert_eq!(owed.commands_added, Vec::<String>::new());
    // Paid on the next timer tick that finds room (gossip ticks every second).
    assert!(
        resumed.elapsed() <= Duration::from_secs(1),
        "{:?}",
        resumed.elapsed()
    );
    b.shutdown().await.unwrap();
    c.shutdown().await.unwrap();
}

/// The ends retire the same connection at different times (half a round trip apart at
/// least), so the first to retire cannot know what the other still sends there. The fence on
/// the wire settles it: each end says `Goodbye { Replaced }` on the old connection once it
/// sends nothing new there, and closes it only once drained *and* fenced by the peer.
#[tokio::test(start_paused = true)]
async fn a_request_sent_on_a_connection_while_its_replacement_is_made_is_answered() {
    let net = InMemNetwork::new(64);
    let (b, mut started, release) = slow_server(&net).await;
    let x = RawPeer::new(&net, "x", X_SEED);
    let mut old = x.connect("inmem://b").await;

    // 100 ms each way: b welcomes the new connection (and retires the old one) 100 ms after x
    // dials it, while x learns of it only 100 ms later. A request x sends on the old
    // connection in between (as a node does until its own handshake completes) reaches b after
    // b retired that connection.
    net.set_delay("x", "b", Duration::from_millis(100));
    let (mut new, id) = tokio::join!(x.connect("inmem://b"), async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        old.send_command(&Slow(5)).await
    });
    new.recv_interest().await;
    // Only now does x, like a node, fence the old connection: after the request it sent there.
    old.send_replaced().await;
    assert_eq!(within("the handler", started.recv()).await, Some(5));
    release.notify_one();
    assert_eq!(old.recv_reply::<u32>(id).await, 50);
    // Drained on both sides: b closes it.
    old.closed().await;
    b.shutdown().await.unwrap();
}

/// `Goodbye { Replaced }` is a fence: the peer takes it to mean that nothing sent before it is
/// still to come on that connection, and closes the connection once its own work there is
/// done. So the notice must follow every command and event the node queued there before it
/// retired the connection; on the control lane it overtakes them, and a real peer that
/// drains on it closes the connection with those commands still on the way (their callers
/// get `PeerLost`, their events are lost).
#[tokio::test(start_paused = true)]
async fn the_replaced_notice_follows_the_commands_queued_before_it() {
    let net = InMemNetwork::new(65);
    let (b, x, mut old) = b_and_a_stalled_x(&net).await;
    // b's writer to x stalls: the first command is in its hands, the next ones queue. One
    // poll of each call queues its command, in this order; x never answers, so each stays
    // pending.
    let mut calls = Vec::new();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for n in 0..4 {
        let mut call = Box::pin(
            b.commands()
                .send(Work(n))
                .timeout(Duration::from_secs(120))
                .into_future(),
        );
        assert!(call.as_mut().poll(&mut cx).is_pending());
        calls.push(call);
    }

    // x dials again: b replaces the old connection and fences it.
    let mut new = x.connect("inmem://b").await;
    new.recv_interest().await;
    old.resume_reading();
    let mut order = Vec::new();
    while order.iter().filter(|k| **k == "command").count() < 4 || !order.contains(&"fence") {
        match old.recv().await {
            Got::Frame(f) if f.kind == FrameKind::Command => order.push("command"),
            Got::Frame(f) if f.kind == FrameKind::Goodbye => order.push("fence"),
            Got::Frame(_) => {}
            Got::Closed => panic!("closed: {order:?}"),
        }
    }
    assert_eq!(
        order,
        ["command", "command", "command", "command", "fence"],
        "commands b queued on the old connection before retiring it came after its fence"
    );
    drop(calls);
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_cancel_never_overtakes_its_queued_command() {
    let net = InMemNetwork::new(66);
    let (b, _x, mut conn) = b_and_a_stalled_x(&net).await;
    // Each caller gives up after 10 ms, while its command still waits in b's queue.
    for n in 0..3 {
        let err = b
            .commands()
            .send(Work(n))
            .timeout(Duration::from_millis(10))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
    }
    conn.resume_reading();
    // x sees each command before its cancel.
    let mut seen: Vec<(FrameKind, u64)> = Vec::new();
    while seen.iter().filter(|(k, _)| *k == FrameKind::Cancel).count() < 3 {
        match conn.recv().await {
            Got::Frame(f) if matches!(f.kind, FrameKind::Command | FrameKind::Cancel) => {
                seen.push((f.kind, f.request_id));
            }
            Got::Frame(_) => {}
            Got::Closed => panic!("closed: {seen:?}"),
        }
    }
    for (i, (kind, id)) in seen.iter().enumerate() {
        if *kind == FrameKind::Cancel {
            let command_at = seen
                .iter()
                .position(|(k, c)| *k == FrameKind::Command && c == id);
            assert!(
                command_at.is_some_and(|at| at < i),
                "the cancel of {id} came before its command: {seen:?}"
            );
        }
    }
    b.shutdown().await.unwrap();
}
