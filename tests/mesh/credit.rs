//! Backpressure across the network (issue 14): a subscriber's node grants each publishing peer
//! room per event name as its subscriptions drain; a publisher without room waits for that
//! subscriber only, or drops before sending when the subscriber drops.

use std::future::IntoFuture;

use crate::support::raw::{Got, RawPeer};
use crate::support::*;
use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;
use meshbus::{FullPolicy, SubscriptionOptions};
use meshbus_core::wire::control::{ControlMessage, Credit};
use meshbus_core::wire::{Frame, FrameKind, FrameName};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Event)]
#[meshbus(name = "credit.tick")]
struct Tick(u32);

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "credit.echo")]
struct Echo;

/// Node `name`, answering `Echo`: a round trip with it is a fence for what went before.
async fn answers_echo(net: &InMemNetwork, name: &str) -> Bus {
    node(net, name)
        .command_handler(|_: Echo, _ctx| async { HandlerResult::Ok(()) })
        .start()
        .await
        .unwrap()
}

/// `a` publishes `ticks` with `publish_all` while `sub` reads: every one arrives, in order.
async fn publish_all_while_reading(
    a: &Bus,
    mut sub: meshbus::Subscription<Tick>,
    ticks: std::ops::Range<u32>,
) {
    let n = ticks.len();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < n {
            got.push(sub.recv().await.unwrap().0);
        }
        got
    });
    within(
        "the events",
        a.events()
            .publish_all(ticks.clone().map(Tick))
            .into_future(),
    )
    .await
    .unwrap();
    let got = within("the subscriber's events", reader).await.unwrap();
    assert_eq!(got, ticks.collect::<Vec<_>>());
}

fn stalled(capacity: usize, policy: FullPolicy) -> SubscriptionOptions {
    SubscriptionOptions::new()
        .capacity(capacity)
        .when_full(policy)
}

#[tokio::test(start_paused = true)]
async fn a_stalled_wait_subscriber_holds_back_its_publisher_but_no_other_subscriber() {
    let net = InMemNetwork::new(140);
    let b = node(&net, "b").start().await.unwrap();
    let c = node(&net, "c").start().await.unwrap();
    // b reads nothing for now; c reads as events come.
    let mut slow = b
        .subscribe_with::<Tick>(stalled(4, FullPolicy::Wait))
        .unwrap();
    let mut fast = c.subscribe::<Tick>().unwrap();
    let a = node(&net, "a")
        .peers(["inmem://b", "inmem://c"])
        .start()
        .await
        .unwrap();
    within("b and c", a.ready().subscribers::<Tick>(Scope::Cluster, 2)).await;

    let a2 = a.clone();
    let publisher = tokio::spawn(async move {
        for i in 0..20 {
            a2.events().publish(Tick(i)).await.unwrap();
        }
    });
    // b granted room for 4: the 5th publish waits for b, and c has it all the same.
    for i in 0..5 {
        assert_eq!(within("c's event", fast.recv()).await.unwrap().0, i);
    }
    let b_id = b.node_id();
    let stats = a.peer_stats();
    let to_b = stats.iter().find(|p| p.node_id == b_id).unwrap();
    assert_eq!(
        (
            to_b.events[0].sent,
            to_b.events[0].waited,
            to_b.events[0].credit
        ),
        (4, 1, 0),
        "{to_b:?}"
    );
    assert!(!publisher.is_finished(), "the 5th publish waits for b");
    // What binds is visible: b's own queue, not a's link to it (nothing queued there).
    assert_eq!(to_b.queued_frames, 0);
    assert_eq!(to_b.queue_frames_limit, 1024);
    assert!(to_b.last_heard.elapsed() <= PEER_TIMEOUT, "{to_b:?}");
    assert_eq!(b.subscription_stats()[0].queued, 4);

    // b reads: every event comes, in order, none dropped, and the publisher finishes.
    for i in 0..20 {
        assert_eq!(within("b's event", slow.recv()).await.unwrap().0, i);
    }
    within("the publisher", publisher).await.unwrap();
    for i in 5..20 {
        assert_eq!(within("c's event", fast.recv()).await.unwrap().0, i);
    }
    for bus in [&b, &c] {
        assert_eq!(bus.stats().remote_events_dropped, 0);
        assert_eq!(bus.subscription_stats()[0].dropped, 0);
    }
    assert_eq!(a.stats().peer_events_dropped, 0);
    for bus in [&a, &b, &c] {
        bus.shutdown().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_drop_newest_subscriber_is_dropped_for_before_sending_and_never_waited_for() {
    let net = InMemNetwork::new(141);
    let b = answers_echo(&net, "b").await;
    let mut slow = b
        .subscribe_with::<Tick>(stalled(4, FullPolicy::DropNewest))
        .unwrap();
    let a = node(&net, "a").peers(["inmem://b"]).start().await.unwrap();
    within("b", a.ready().subscribers::<Tick>(Scope::Cluster, 1)).await;
    let before = net.link_stats("a", "b").sent;

    let t0 = tokio::time::Instant::now();
    for i in 0..100 {
        within("a publish", a.events().publish(Tick(i)).into_future())
            .await
            .unwrap();
    }
    assert_eq!(t0.elapsed(), std::time::Duration::ZERO, "never waited");
    let flow = &a.peer_stats()[0].events[0];
    assert_eq!(
        (flow.sent, flow.dropped, flow.waited, flow.when_full),
        (4, 96, 0, FullPolicy::DropNewest),
        "{flow:?}"
    );
    assert_eq!(a.stats().peer_events_dropped, 96);
    // Only what b had room for crossed the link; b dropped nothing itself.
    assert!(
        net.link_stats("a", "b").sent - before <= 4 + 2,
        "pings aside"
    );
    // However long b does not read, no room comes back: a round trip lets b's grants (were
    // there any) reach a before its reply, on the control lane; a still drops everything.
    a.commands().send(Echo).await.unwrap();
    for i in 100..200 {
        a.events().publish(Tick(i)).await.unwrap();
    }
    assert_eq!(a.peer_stats()[0].events[0].sent, 4);
    for i in 0..4 {
        assert_eq!(within("b's event", slow.recv()).await.unwrap().0, i);
    }
    assert_eq!(b.stats().remote_events_dropped, 0);
    // b read them: room again for the next ones.
    a.commands().send(Echo).await.unwrap();
    within("a publish", a.events().publish(Tick(200)).into_future())
        .await
        .unwrap();
    assert_eq!(within("b's event", slow.recv()).await.unwrap().0, 200);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn wait_and_drop_newest_subscriptions_on_one_node_each_get_what_they_asked_for() {
    let net = InMemNetwork::new(142);
    let b = node(&net, "b").start().await.unwrap();
    let mut waits = b
        .subscribe_with::<Tick>(stalled(4, FullPolicy::Wait))
        .unwrap();
    let mut drops = b
        .subscribe_with::<Tick>(stalled(2, FullPolicy::DropNewest))
        .unwrap();
    let a = node(&net, "a").peers(["inmem://b"]).start().await.unwrap();
    within("b", a.ready().subscribers::<Tick>(Scope::Cluster, 1)).await;
    // The node waits for its `Wait` subscription: room for 4, granted by the smaller `Wait`
    // queue; the `DropNewest` one keeps 2 of them and drops 2, counted at b.
    for i in 0..4 {
        within("a publish", a.events().publish(Tick(i)).into_future())
            .await
            .unwrap();
    }
    let err = a
        .events()
        .publish(Tick(4))
        .timeout(std::time::Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    let subs = b.subscription_stats();
    let (w, d) = (&subs[0], &subs[1]);
    assert_eq!((w.when_full, w.queued, w.dropped), (FullPolicy::Wait, 4, 0));
    assert_eq!(
        (d.when_full, d.queued, d.dropped),
        (FullPolicy::DropNewest, 2, 2)
    );
    assert_eq!(b.stats().remote_events_dropped, 2);
    for i in 0..4 {
        assert_eq!(within("the wait one", waits.recv()).await.unwrap().0, i);
    }
    for i in 0..2 {
        assert_eq!(within("the drop one", drops.recv()).await.unwrap().0, i);
    }
    // Room came back with the `Wait` queue's reads (the timed-out publish took none).
    within("a publish", a.events().publish(Tick(5)).into_future())
        .await
        .unwrap();
    assert_eq!(within("the wait one", waits.recv()).await.unwrap().0, 5);
    assert_eq!(within("the drop one", drops.recv()).await.unwrap().0, 5);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// The seed of the raw peer's static key (so of its node id).
const X_SEED: u128 = 0xc0ffee;

fn tick_frame(i: u32) -> Frame {
    let mut frame = Frame::new(
        FrameKind::Event,
        meshbus_core::wire::body::encode_body(&Tick(i)).unwrap(),
    );
    frame.name = Some(FrameName::inline(Tick::NAME));
    frame
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_sends_beyond_the_room_it_was_granted_is_disconnected() {
    let net = InMemNetwork::new(143);
    let b = node(&net, "b").start().await.unwrap();
    let mut sub = b
        .subscribe_with::<Tick>(stalled(2, FullPolicy::Wait))
        .unwrap();
    let x = RawPeer::new(&net, "x", X_SEED);
    let mut conn = x.connect("inmem://b").await;
    // b tells x what it subscribes to, and how much room it grants.
    let frame = conn
        .recv_where("credit", |f| f.kind == FrameKind::Credit)
        .await;
    let credit = Credit::from_frame(&frame).unwrap();
    assert_eq!(credit.grants.len(), 1, "{credit:?}");
    let grant = &credit.grants[0];
    assert_eq!(
        (grant.name.as_str(), grant.limit, grant.wait),
        (Tick::NAME, 2, true)
    );

    for i in 0..3 {
        conn.send(tick_frame(i)).await;
    }
    // The third was beyond the limit: the connection closes; the two granted arrived.
    loop {
        if let Got::Closed = conn.recv().await {
            break;
        }
    }
    for i in 0..2 {
        assert_eq!(within("a granted event", sub.recv()).await.unwrap().0, i);
    }
    assert_eq!(b.stats().remote_events_dropped, 0);
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn publish_all_sends_in_order_and_waits_for_room_between_events() {
    let net = InMemNetwork::new(144);
    let b = node(&net, "b").start().await.unwrap();
    let mut sub = b
        .subscribe_with::<Tick>(stalled(4, FullPolicy::Wait))
        .unwrap();
    let a = node(&net, "a").peers(["inmem://b"]).start().await.unwrap();
    within("b", a.ready().subscribers::<Tick>(Scope::Cluster, 1)).await;

    // Room for 4: the batch stops at its timeout after the 4th, and says so.
    let err = a
        .events()
        .publish_all((0..20).map(Tick))
        .timeout(std::time::Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(a.peer_stats()[0].events[0].sent, 4);
    for i in 0..4 {
        assert_eq!(within("b's event", sub.recv()).await.unwrap().0, i);
    }

    // With the subscriber reading, a batch of 1,000 arrives whole and in order, 4 at a time.
    publish_all_while_reading(&a, sub, 100..1_100).await;
    assert_eq!(b.stats().remote_events_dropped, 0);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Grants that find the subscriber's control lane full are not lost: its writer sends the
/// latest limits with its next batch. (Were they dropped, the publisher would wait forever.)
#[tokio::test(start_paused = true)]
async fn grants_that_find_a_full_control_lane_still_reach_the_publisher() {
    let net = InMemNetwork::new(145);
    net.set_link_capacity(1);
    // One frame per lane: a grant per event (a window of 2) mostly finds the lane taken.
    let b = node(&net, "b")
        .peer_queue_capacity(1)
        .start()
        .await
        .unwrap();
    let sub = b
        .subscribe_with::<Tick>(stalled(2, FullPolicy::Wait))
        .unwrap();
    let a = node(&net, "a").peers(["inmem://b"]).start().await.unwrap();
    within("b", a.ready().subscribers::<Tick>(Scope::Cluster, 1)).await;
    net.set_delay("b", "a", std::time::Duration::from_millis(5));
    publish_all_while_reading(&a, sub, 0..300).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Room is per peer, not per connection: a peer that reconnects while its earlier events are
/// still queued here gets only what they left of the window, and the rest as they are consumed.
/// (A fresh window per connection would let a peer pile up events in a stalled queue by
/// reconnecting.)
#[tokio::test(start_paused = true)]
async fn a_peer_that_reconnects_gets_only_the_room_its_queued_events_left() {
    let net = InMemNetwork::new(146);
    let b = answers_echo(&net, "b").await;
    let mut sub = b
        .subscribe_with::<Tick>(stalled(2, FullPolicy::Wait))
        .unwrap();
    let x = RawPeer::new(&net, "x", X_SEED);
    let limit = |frame: &Frame| Credit::from_frame(frame).unwrap().grants[0].limit;
    let is_credit = |f: &Frame| f.kind == FrameKind::Credit;

    let mut first = x.connect("inmem://b").await;
    assert_eq!(limit(&first.recv_where("credit", is_credit).await), 2);
    first.send(tick_frame(0)).await;
    first.send(tick_frame(1)).await;
    // A round trip behind them: b has queued both by the time it answers.
    let id = first.send_command(&Echo).await;
    first.recv_reply::<()>(id).await;
    drop(first);
    until_view(&b, |v| v.peers.is_empty()).await;

    let mut second = x.connect("inmem://b").await;
    assert_eq!(
        limit(&second.recv_where("credit", is_credit).await),
        0,
        "the two queued events still count against x's window"
    );
    // b takes them off its queue: the room they held comes to the new connection.
    for i in 0..2 {
        assert_eq!(within("a queued event", sub.recv()).await.unwrap().0, i);
    }
    // ...up to the window, and no more: the raised limits stop at 2.
    let mut raised = 0;
    while raised < 2 {
        raised = limit(&second.recv_where("credit", is_credit).await);
        assert!(raised <= 2, "{raised}");
    }
    // Two fit; a third, unconsumed, would be beyond the window: the connection closes.
    for i in 2..5 {
        second.send(tick_frame(i)).await;
    }
    second.closed().await;
    for i in 2..4 {
        assert_eq!(within("the next event", sub.recv()).await.unwrap().0, i);
    }
    b.shutdown().await.unwrap();
}
