//! Commands across nodes of an in-memory mesh: replies, errors, panics, NoHandler, cancel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "mesh.add", reply = u64)]
struct Add {
    a: u64,
    b: u64,
}

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "mesh.slow_unit")]
struct SlowUnit;

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "mesh.boom", reply = u32)]
struct Boom {
    panic: bool,
}

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "mesh.nobody")]
struct Nobody;

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "mesh.whoami", reply = String)]
struct WhoAmI;

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "mesh.hang")]
struct Hang;

#[tokio::test(start_paused = true)]
async fn a_command_sent_on_one_node_is_handled_on_another() {
    let net = InMemNetwork::new(1);
    let done = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&done);
    let b = node(&net, "b")
        .command_handler(|c: Add, _ctx| async move { HandlerResult::Ok(c.a + c.b) })
        .command_handler(|_: WhoAmI, ctx: Context| async move {
            HandlerResult::Ok(format!("{} from {}", ctx.bus().name(), ctx.sender()))
        })
        .command_handler(move |_: SlowUnit, _ctx| {
            let flag = Arc::clone(&flag);
            async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                flag.store(true, Ordering::SeqCst);
                HandlerResult::Ok(())
            }
        })
        .command_handler(|c: Boom, _ctx| async move {
            if c.panic {
                panic!("kaboom");
            }
            Err::<u32, _>(HandlerError::msg("it failed"))
        })
        .start()
        .await
        .unwrap();
    let a = node(&net, "a").peers(["inmem://b"]).start().await.unwrap();
    within("b's handlers", a.ready().handlers::<Add>(Scope::Cluster, 1)).await;

    assert_eq!(a.commands().send(Add { a: 2, b: 3 }).await.unwrap(), 5);
    let who = a.commands().send(WhoAmI).await.unwrap();
    assert_eq!(who, format!("b from {}", a.node_id()));

    // A `()` reply comes back only once the handler has finished.
    a.commands().send(SlowUnit).await.unwrap();
    assert!(done.load(Ordering::SeqCst));

    let err = a.commands().send(Boom { panic: false }).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HandlerFailed);
    assert_eq!(err.handler_message(), Some("it failed"));
    assert_eq!(err.peer(), Some(b.node_id()));
    let err = a.commands().send(Boom { panic: true }).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HandlerFailed);
    assert!(err.handler_message().unwrap().contains("kaboom"), "{err}");
    // b still serves after the panic.
    assert_eq!(a.commands().send(Add { a: 1, b: 1 }).await.unwrap(), 2);

    // Nobody handles it: NoHandler at once, without waiting for any timeout.
    let t0 = Instant::now();
    let err = a.commands().send(Nobody).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoHandler);
    assert_eq!(err.message_name(), Some("mesh.nobody"));
    assert_eq!(Instant::now(), t0);

    // The Local scope never goes remote.
    let err = a
        .commands()
        .local()
        .send(Add { a: 1, b: 2 })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoHandler);
    assert_eq!(err.scope(), Some(Scope::Local));

    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_local_handler_wins_over_a_remote_one() {
    let net = InMemNetwork::new(2);
    let b = node(&net, "b")
        .command_handler(|_: WhoAmI, _ctx| async { HandlerResult::Ok("b".to_owned()) })
        .start()
        .await
        .unwrap();
    let a = node(&net, "a")
        .peers(["inmem://b"])
        .command_handler(|_: WhoAmI, _ctx| async { HandlerResult::Ok("a".to_owned()) })
        .start()
        .await
        .unwrap();
    within(
        "both handlers",
        a.ready().handlers::<WhoAmI>(Scope::Cluster, 2),
    )
    .await;
    for _ in 0..5 {
        assert_eq!(a.commands().send(WhoAmI).await.unwrap(), "a");
    }
    assert_eq!(b.commands().send(WhoAmI).await.unwrap(), "b");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_times_out_cancels_the_remote_handler() {
    let net = InMemNetwork::new(3);
    let (tx, mut cancelled) = mpsc::channel::<bool>(1);
    let b = node(&net, "b")
        .command_handler(move |_: Hang, ctx: Context| {
            let tx = tx.clone();
            async move {
                let deadline_set = ctx.deadline().is_some();
                tokio::select! {
                    () = ctx.cancelled() => { let _ = tx.send(deadline_set).await; }
                    // Hangs until cancelled; the test's own bound fails it otherwise.
                    () = std::future::pending() => {}
                }
                HandlerResult::Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    let a = node(&net, "a").peers(["inmem://b"]).start().await.unwrap();
    within("b's handler", a.ready().handlers::<Hang>(Scope::Cluster, 1)).await;

    let err = a
        .commands()
        .send(Hang)
        .timeout(Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    // The handler saw the cancel, and had the caller's deadline.
    assert!(within("the handler's cancel", cancelled.recv())
        .await
        .unwrap());
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_shorter_timeout_sent_later_fires_first_and_each_fires_at_its_own() {
    let net = InMemNetwork::new(3);
    let (tx, mut cancelled) = mpsc::channel::<()>(4);
    let b = node(&net, "b")
        .command_handler(move |_: Hang, ctx: Context| {
            let tx = tx.clone();
            async move {
                ctx.cancelled().await;
                let _ = tx.send(()).await;
                HandlerResult::Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    let a = node(&net, "a").peers(["inmem://b"]).start().await.unwrap();
    within("b's handler", a.ready().handlers::<Hang>(Scope::Cluster, 1)).await;

    // The connection's deadline watcher first sleeps until the long one's deadline; the short
    // one, sent after it, must wake it sooner. (Paused time: the clock only moves to timers.)
    let start = Instant::now();
    let long = tokio::spawn({
        let a = a.clone();
        async move {
            let err = a
                .commands()
                .send(Hang)
                .timeout(Duration::from_secs(30))
                .await
                .unwrap_err();
            (err.kind(), Instant::now())
        }
    });
    tokio::task::yield_now().await;
    let short = a.commands().send(Hang).timeout(Duration::from_secs(1));
    let err = within("the short request", short).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    let short_at = Instant::now() - start;
    assert!(
        short_at >= Duration::from_secs(1) && short_at < Duration::from_secs(30),
        "the short request timed out {short_at:?} after it was sent"
    );
    assert!(!long.is_finished(), "the long request still waits");
    within("the short one's cancel", cancelled.recv()).await;
    let (kind, long_at) = within("the long request", long).await.unwrap();
    assert_eq!(kind, ErrorKind::Timeout);
    assert!(long_at - start >= Duration::from_secs(30));
    within("the long one's cancel", cancelled.recv()).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_dropped_request_cancels_the_remote_handler() {
    let net = InMemNetwork::new(4);
    let (tx, mut events) = mpsc::channel::<&'static str>(4);
    let b = node(&net, "b")
        .command_handler(move |_: Hang, ctx: Context| {
            let tx = tx.clone();
            async move {
                let _ = tx.send("started").await;
                ctx.cancelled().await;
                let _ = tx.send("cancelled").await;
                HandlerResult::Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    let a = node(&net, "a").peers(["inmem://b"]).start().await.unwrap();
    within("b's handler", a.ready().handlers::<Hang>(Scope::Cluster, 1)).await;
    {
        let call = a.commands().send(Hang).no_timeout();
        tokio::select! {
            _ = call => panic!("the handler never answers"),
            started = events.recv() => assert_eq!(started, Some("started")),
        }
    } // the request is dropped here
    assert_eq!(within("the cancel", events.recv()).await, Some("cancelled"));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "mesh.big", reply = usize)]
struct Big(String);

#[tokio::test(start_paused = true)]
async fn a_command_over_the_peers_frame_limit_is_too_large_and_not_sent() {
    let net = InMemNetwork::new(5);
    let b = node(&net, "b")
        .command_handler(|c: Big, _ctx| async move { HandlerResult::Ok(c.0.len()) })
        .start()
        .await
        .unwrap();
    let a = node(&net, "a").peers(["inmem://b"]).start().await.unwrap();
    within("b's handler", a.ready().handlers::<Big>(Scope::Cluster, 1)).await;
    // A large body travels (compressed or not) ...
    let ok = "y".repeat(1 << 20);
    assert_eq!(a.commands().send(Big(ok)).await.unwrap(), 1 << 20);
    // ... one over the 16 MiB limit does not, and nothing goes on the link.
    let sent = net.link_stats("a", "b").sent;
    let err = a
        .commands()
        .send(Big("x".repeat(17 << 20)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert_eq!(net.link_stats("a", "b").sent, sent);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "mesh.wait", reply = u32)]
struct Wait;

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "mesh.open")]
struct Open(u32);

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "mesh.late_boom", reply = u32)]
struct LateBoom;

// The reader polls a handler once before it spawns it: these cover a handler that answers on
// that first poll, one that is pending then and woken later, and one that panics after it.
#[tokio::test(start_paused = true)]
async fn handlers_that_answer_at_once_or_later_both_reply_and_free_their_slot() {
    let net = InMemNetwork::new(31);
    // `Wait` parks on a oneshot that only `Open` fills: it is pending on its first poll, and
    // its wake-up must reach the task it continues in.
    let (open_tx, open_rx) = tokio::sync::oneshot::channel::<u32>();
    let open_tx = Arc::new(std::sync::Mutex::new(Some(open_tx)));
    let open_rx = Arc::new(tokio::sync::Mutex::new(Some(open_rx)));
    // `Wait` says when it holds its slot, so that `Open` is sent only then.
    let waiting_entered = Arc::new(tokio::sync::Notify::new());
    let entered = Arc::clone(&waiting_entered);
    let b = node(&net, "b")
        .max_in_flight_per_peer(2)
        .command_handler(|c: Add, _ctx| async move { HandlerResult::Ok(c.a + c.b) })
        .command_handler(move |_: Wait, _ctx| {
            let open_rx = Arc::clone(&open_rx);
            let entered = Arc::clone(&entered);
            async move {
                let rx = open_rx.lock().await.take();
                entered.notify_one();
                let n = match rx {
                    Some(rx) => rx.await.unwrap_or(0),
                    None => 0,
                };
                HandlerResult::Ok(n)
            }
        })
        .command_handler(move |Open(n): Open, _ctx| {
            let open_tx = Arc::clone(&open_tx);
            async move {
                if let Some(tx) = open_tx.lock().unwrap().take() {
                    let _ = tx.send(n);
                }
                HandlerResult::Ok(())
            }
        })
        .command_handler(|_: LateBoom, _ctx| async move {
            // Not synchronisation: the handler pends once, so that it panics on a later poll.
            tokio::task::yield_now().await;
            panic!("late kaboom");
            #[allow(unreachable_code)]
            HandlerResult::Ok(0)
        })
        .start()
        .await
        .unwrap();
    let a = node(&net, "a").peers(["inmem://b"]).start().await.unwrap();
    within("b's handlers", a.ready().handlers::<Add>(Scope::Cluster, 1)).await;

    // Immediate handlers give their in-flight slot back at once: far more of them than the
    // cap of 2, sent at the same time, all answer (none is Overloaded). (Were each spawned,
    // the reader would admit a burst of them before any ran.)
    let calls = (0..64u64)
        .map(|i| std::future::IntoFuture::into_future(a.commands().send(Add { a: i, b: 1 })));
    let replies = within(
        "64 immediate replies",
        futures_util::future::join_all(calls),
    )
    .await;
    for (i, reply) in replies.into_iter().enumerate() {
        assert_eq!(reply.unwrap(), i as u64 + 1);
    }

    // A pending handler holds one slot; an immediate one still fits beside it and opens it.
    let waiting = a.commands().send(Wait).no_timeout();
    let opener = async {
        waiting_entered.notified().await;
        a.commands().send(Open(7)).await
    };
    let (waited, opened) = within("the waiting handler", async {
        tokio::join!(waiting, opener)
    })
    .await;
    opened.unwrap();
    assert_eq!(waited.unwrap(), 7);

    // A panic after the first poll is still the caller's HandlerFailed, and b keeps serving.
    let err = a.commands().send(LateBoom).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HandlerFailed);
    assert!(
        err.handler_message().unwrap().contains("late kaboom"),
        "{err}"
    );
    assert_eq!(a.commands().send(Add { a: 1, b: 1 }).await.unwrap(), 2);

    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn immediate_replies_that_find_the_reply_lane_full_still_arrive() {
    let net = InMemNetwork::new(32);
    let b = node(&net, "b")
        // One frame per lane: a burst of immediate replies finds the reply lane full, and
        // those replies wait in tasks of their own (the reader never waits).
        .peer_queue_capacity(1)
        .command_handler(|c: Add, _ctx| async move { HandlerResult::Ok(c.a + c.b) })
        .start()
        .await
        .unwrap();
    let a = node(&net, "a").peers(["inmem://b"]).start().await.unwrap();
    within("b's handler", a.ready().handlers::<Add>(Scope::Cluster, 1)).await;
    let calls = (0..64u64)
        .map(|i| std::future::IntoFuture::into_future(a.commands().send(Add { a: i, b: 2 })));
    let replies = within("64 replies", futures_util::future::join_all(calls)).await;
    for (i, reply) in replies.into_iter().enumerate() {
        assert_eq!(reply.unwrap(), i as u64 + 2);
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// A command whose `Deserialize` panics on 13 and whose `Serialize` panics on 21: user code
/// that runs outside the handler.
#[derive(Command, Debug)]
#[meshbus(name = "mesh.fragile", reply = Fragile)]
struct Fragile(u32);

impl Serialize for Fragile {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        assert!(self.0 != 21, "fragile serialize");
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for Fragile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        assert!(n != 13, "fragile deserialize");
        Ok(Fragile(n))
    }
}

// A panic in a peer's `Deserialize` (decoding the command, on the reader's first poll) or
// `Serialize` (encoding the reply) is the caller's HandlerFailed, like a handler's panic: the
// link stays up and the node keeps serving.
#[tokio::test(start_paused = true)]
async fn a_panic_decoding_a_command_or_encoding_its_reply_is_handler_failed() {
    let net = InMemNetwork::new(37);
    let b = node(&net, "b")
        .command_handler(
            |c: Fragile, _ctx: Context| async move { HandlerResult::Ok(Fragile(c.0 + 1)) },
        )
        .start()
        .await
        .unwrap();
    let a = node(&net, "a").peers(["inmem://b"]).start().await.unwrap();
    within(
        "b's handler",
        a.ready().handlers::<Fragile>(Scope::Cluster, 1),
    )
    .await;

    let err = a.commands().send(Fragile(13)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HandlerFailed, "{err}");
    let msg = err.handler_message().unwrap_or_default();
    assert!(msg.contains("fragile deserialize"), "{err}");
    // The reply to 20 is 21, which panics as b encodes it.
    let err = a.commands().send(Fragile(20)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HandlerFailed, "{err}");
    let msg = err.handler_message().unwrap_or_default();
    assert!(msg.contains("fragile serialize"), "{err}");

    assert_eq!(a.membership().borrow().peers.len(), 1, "the link stayed up");
    assert_eq!(a.commands().send(Fragile(1)).await.unwrap().0, 2);
    for bus in [&a, &b] {
        bus.shutdown().await.unwrap();
    }
}
