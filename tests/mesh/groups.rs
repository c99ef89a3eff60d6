//! Groups (issue 15): each event goes to one member of each group in scope, wherever the
//! members are, and to every ungrouped subscriber.

use std::collections::{BTreeMap, BTreeSet};
use std::future::IntoFuture;

use crate::support::*;
use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;
use meshbus::{FullPolicy, GroupKind, Subscription, SubscriptionOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// An event from publisher `.0`, its `.1`-th.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Event)]
#[meshbus(name = "groups.job")]
struct Job(u32, u32);

fn group(name: &str) -> SubscriptionOptions {
    SubscriptionOptions::new().group(name)
}

fn exclusive(name: &str) -> SubscriptionOptions {
    SubscriptionOptions::new()
        .group(name)
        .group_kind(GroupKind::Exclusive)
}

/// Reads `sub` for ever, sending what it gets, tagged `tag`, to `out`.
fn forward(
    tag: &'static str,
    mut sub: Subscription<Job>,
    out: &mpsc::UnboundedSender<(&'static str, Job)>,
) {
    let out = out.clone();
    tokio::spawn(async move {
        while let Some(job) = sub.recv().await {
            if out.send((tag, *job)).is_err() {
                return;
            }
        }
    });
}

/// Subscribes on `bus` with `options` and forwards what it gets, tagged `tag`, to `out`.
fn join(
    out: &mpsc::UnboundedSender<(&'static str, Job)>,
    tag: &'static str,
    bus: &Bus,
    options: SubscriptionOptions,
) {
    forward(tag, bus.subscribe_with::<Job>(options).unwrap(), out);
}

/// The next `n` events `rx` gets, by tag.
async fn take(
    rx: &mut mpsc::UnboundedReceiver<(&'static str, Job)>,
    n: usize,
) -> BTreeMap<&'static str, Vec<Job>> {
    let mut got: BTreeMap<&'static str, Vec<Job>> = BTreeMap::new();
    for _ in 0..n {
        let (tag, job) = within("the events", rx.recv()).await.unwrap();
        got.entry(tag).or_default().push(job);
    }
    got
}

/// Publishes `n` jobs from `bus` as publisher `p`, one at a time.
async fn publish(bus: &Bus, p: u32, n: u32) {
    for i in 0..n {
        within("a publish", bus.events().publish(Job(p, i)))
            .await
            .unwrap();
    }
}

fn all_jobs(publishers: u32, n: u32) -> BTreeSet<Job> {
    (0..publishers)
        .flat_map(|p| (0..n).map(move |i| Job(p, i)))
        .collect()
}

/// a, b, c linked, a dialling the others.
async fn mesh(net: &InMemNetwork) -> (Bus, Bus, Bus) {
    let b = node(net, "b").start().await.unwrap();
    let c = node(net, "c").start().await.unwrap();
    let a = node(net, "a")
        .peers(["inmem://b", "inmem://c"])
        .start()
        .await
        .unwrap();
    within("the mesh", a.ready().peers(2)).await;
    within("the mesh", b.ready().peers(2)).await;
    (a, b, c)
}

#[tokio::test(start_paused = true)]
async fn a_group_gets_each_event_once_and_ungrouped_subscribers_all_of_them() {
    let net = InMemNetwork::new(150);
    let (a, b, c) = mesh(&net).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    join(&tx, "all", &a, SubscriptionOptions::new());
    join(&tx, "b", &b, group("billing"));
    join(&tx, "c", &c, group("billing"));
    for bus in [&a, &b] {
        within(
            "the members",
            bus.ready().members::<Job>("billing", Scope::Cluster, 2),
        )
        .await;
        within(
            "the subscribers",
            bus.ready().subscribers::<Job>(Scope::Cluster, 3),
        )
        .await;
    }
    // Two publishers, one of them a member itself.
    let n = 5_000;
    tokio::join!(publish(&a, 0, n), publish(&b, 1, n));
    let got = take(&mut rx, 4 * n as usize).await;
    let everything = all_jobs(2, n);
    let ungrouped: BTreeSet<Job> = got["all"].iter().copied().collect();
    assert_eq!(
        got["all"].len(),
        2 * n as usize,
        "the ungrouped subscriber got every event once"
    );
    assert_eq!(ungrouped, everything);
    let members: Vec<Job> = got["b"].iter().chain(&got["c"]).copied().collect();
    let unique: BTreeSet<Job> = members.iter().copied().collect();
    assert_eq!(
        members.len(),
        2 * n as usize,
        "the group got each event once"
    );
    assert_eq!(unique, everything);
    let share = got["b"].len() as f64 / members.len() as f64;
    assert!(
        (0.4..=0.6).contains(&share),
        "b took {share:.2} of the group's events"
    );
    // Both publishers count what they gave the group.
    for bus in [&a, &b] {
        let stats = bus.group_stats();
        assert_eq!(stats.len(), 1);
        assert_eq!(
            (stats[0].event.as_str(), stats[0].group.as_str()),
            ("groups.job", "billing")
        );
        assert_eq!(stats[0].delivered, u64::from(n));
        assert_eq!((stats[0].dropped, stats[0].no_member), (0, 0));
    }
    let view = a.membership().borrow().clone();
    let groups = &view.peer_named("b").unwrap().groups;
    assert_eq!(groups.len(), 1);
    assert_eq!(
        (groups[0].group.as_str(), groups[0].kind),
        ("billing", GroupKind::Shared)
    );
    assert!(
        view.peer_named("b").unwrap().events.is_empty(),
        "b has no ungrouped subscription"
    );
}

#[tokio::test(start_paused = true)]
async fn two_groups_and_ungrouped_subscribers_each_get_every_event_once() {
    let net = InMemNetwork::new(151);
    let (a, b, c) = mesh(&net).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    join(&tx, "a", &a, SubscriptionOptions::new());
    join(&tx, "c", &c, SubscriptionOptions::new());
    join(&tx, "billing-b", &b, group("billing"));
    join(&tx, "billing-c", &c, group("billing"));
    // Two members of `audit` on one node: the node hands each event to one of them.
    join(&tx, "audit-b1", &b, group("audit"));
    join(&tx, "audit-b2", &b, group("audit"));
    within(
        "billing",
        a.ready().members::<Job>("billing", Scope::Cluster, 2),
    )
    .await;
    within(
        "audit",
        a.ready().members::<Job>("audit", Scope::Cluster, 1),
    )
    .await;
    let n = 400;
    publish(&a, 0, n).await;
    let got = take(&mut rx, 4 * n as usize).await;
    let everything = all_jobs(1, n);
    let of = |tags: &[&str]| -> Vec<Job> {
        let mut jobs: Vec<Job> = tags
            .iter()
            .flat_map(|t| got.get(t).into_iter().flatten())
            .copied()
            .collect();
        jobs.sort();
        jobs
    };
    let once: Vec<Job> = everything.iter().copied().collect();
    assert_eq!(of(&["a"]), once);
    assert_eq!(of(&["c"]), once);
    assert_eq!(of(&["billing-b", "billing-c"]), once);
    assert_eq!(of(&["audit-b1", "audit-b2"]), once);
    // The node with two members shares between them.
    assert!(got.contains_key("audit-b1") && got.contains_key("audit-b2"));
    assert!(rx.try_recv().is_err(), "nothing more than once each");
}

#[tokio::test(start_paused = true)]
async fn events_go_to_the_remaining_member_when_one_dies_and_what_was_in_flight_is_counted() {
    let net = InMemNetwork::new(152);
    let (a, b, c) = mesh(&net).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    // b's member reads nothing: what a sends it stays in flight until b dies. Alone in the
    // group at first, it takes the first 16 (its room; the publisher waits for b's grant).
    let _stalled = b
        .subscribe_with::<Job>(group("billing").capacity(16))
        .unwrap();
    within(
        "billing",
        a.ready().members::<Job>("billing", Scope::Cluster, 1),
    )
    .await;
    publish(&a, 0, 16).await;
    // Then c joins: b is full, so the next 24 all go to c.
    join(&tx, "c", &c, group("billing"));
    within(
        "billing",
        a.ready().members::<Job>("billing", Scope::Cluster, 2),
    )
    .await;
    publish(&a, 0, 24).await;
    assert_eq!(take(&mut rx, 24).await["c"].len(), 24);
    assert!(a.group_stats()[0].passed_over >= 24, "b was passed over");
    net.kill("b");
    within("b's death", async {
        let mut view = a.membership();
        view.wait_for(|v| v.peer_named("b").is_none())
            .await
            .unwrap();
    })
    .await;
    let stats = a.group_stats();
    assert_eq!(stats[0].lost_in_flight, 16, "the 16 b never consumed");
    // Later events all go to c.
    publish(&a, 1, 50).await;
    let got = take(&mut rx, 50).await;
    assert_eq!(got["c"], (0..50).map(|i| Job(1, i)).collect::<Vec<_>>());
    drop(b);
}

#[tokio::test(start_paused = true)]
async fn an_exclusive_group_has_one_active_member_and_the_next_takes_over() {
    let net = InMemNetwork::new(153);
    let (a, b, c) = mesh(&net).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    join(&tx, "b", &b, exclusive("ledger"));
    join(&tx, "c", &c, exclusive("ledger"));
    for bus in [&a, &b, &c] {
        within(
            "ledger",
            bus.ready().members::<Job>("ledger", Scope::Cluster, 2),
        )
        .await;
    }
    // Two publishers: a, and one of the members.
    let n = 300;
    tokio::join!(publish(&a, 0, n), publish(&b, 1, n));
    let got = take(&mut rx, 2 * n as usize).await;
    assert_eq!(
        got.len(),
        1,
        "one active member, the same for both publishers: {:?}",
        got.keys()
    );
    let (&active, jobs) = got.iter().next().unwrap();
    for p in 0..2 {
        let from_p: Vec<u32> = jobs.iter().filter(|j| j.0 == p).map(|j| j.1).collect();
        assert_eq!(from_p, (0..n).collect::<Vec<_>>(), "publisher {p}'s order");
    }
    // The active member's node dies: the standby takes over once a declares it dead, within
    // the peer timeout.
    let (standby, dead) = if active == "b" { ("c", b) } else { ("b", c) };
    net.kill(active);
    let died = tokio::time::Instant::now();
    within("the death", async {
        let mut view = a.membership();
        view.wait_for(|v| v.peer_named(active).is_none())
            .await
            .unwrap();
    })
    .await;
    assert!(
        died.elapsed() <= PEER_TIMEOUT + HEARTBEAT,
        "{:?}",
        died.elapsed()
    );
    publish(&a, 2, 10).await;
    let got = take(&mut rx, 10).await;
    assert_eq!(got[standby], (0..10).map(|i| Job(2, i)).collect::<Vec<_>>());
    drop(dead);
}

#[tokio::test(start_paused = true)]
async fn an_unsubscribed_active_member_hands_over_at_once() {
    let net = InMemNetwork::new(154);
    let (a, b, c) = mesh(&net).await;
    let mut on_b = b.subscribe_with::<Job>(exclusive("ledger")).unwrap();
    let mut on_c = c.subscribe_with::<Job>(exclusive("ledger")).unwrap();
    within(
        "ledger",
        a.ready().members::<Job>("ledger", Scope::Cluster, 2),
    )
    .await;
    // Which one is active (the older: their clocks may put them in the same millisecond,
    // then the node id decides).
    publish(&a, 0, 1).await;
    let b_is_active = tokio::select! {
        _ = on_b.recv() => true,
        _ = on_c.recv() => false,
    };
    let (active, mut standby, active_node) = if b_is_active {
        (on_b, on_c, "b")
    } else {
        (on_c, on_b, "c")
    };
    drop(active);
    // The interest delta, not a timeout: no time needs to pass beyond its delivery.
    within("the active member leaving", async {
        let mut view = a.membership();
        view.wait_for(|v| {
            v.peer_named(active_node)
                .is_some_and(|p| p.groups.is_empty())
        })
        .await
        .unwrap();
    })
    .await;
    publish(&a, 1, 10).await;
    for i in 0..10 {
        assert_eq!(
            *within("the standby", standby.recv()).await.unwrap(),
            Job(1, i)
        );
    }
    drop((b, c));
}

#[tokio::test(start_paused = true)]
async fn a_full_member_is_passed_over_and_when_all_are_full_the_policy_applies() {
    let net = InMemNetwork::new(155);
    let (a, b, c) = mesh(&net).await;
    // Nobody reads: b has room for 4, c for 8.
    let stalled = |capacity, policy| group("billing").capacity(capacity).when_full(policy);
    let mut on_b = b
        .subscribe_with::<Job>(stalled(4, FullPolicy::Wait))
        .unwrap();
    let on_c = c
        .subscribe_with::<Job>(stalled(8, FullPolicy::Wait))
        .unwrap();
    within(
        "billing",
        a.ready().members::<Job>("billing", Scope::Cluster, 2),
    )
    .await;
    publish(&a, 0, 12).await;
    let stats = a.group_stats();
    assert!(stats[0].passed_over > 0, "b was passed over once full");
    assert_eq!(stats[0].delivered, 12);
    // Everyone full: the publisher waits (Wait) until a member has room.
    let mut waiting = std::pin::pin!(a.events().publish(Job(0, 12)).into_future());
    assert!(futures_util::poll!(waiting.as_mut()).is_pending());
    let first = within("b's first", on_b.recv()).await.unwrap();
    assert_eq!(first.0, 0);
    within("the held publish", waiting).await.unwrap();
    drop((on_b, on_c));

    // With DropNewest members, the publisher drops and counts instead.
    let _b = b
        .subscribe_with::<Job>(stalled(2, FullPolicy::DropNewest).group("drops"))
        .unwrap();
    let _c = c
        .subscribe_with::<Job>(stalled(2, FullPolicy::DropNewest).group("drops"))
        .unwrap();
    within(
        "drops",
        a.ready().members::<Job>("drops", Scope::Cluster, 2),
    )
    .await;
    publish(&a, 1, 10).await;
    let stats = a.group_stats();
    let drops = stats.iter().find(|s| s.group == "drops").unwrap();
    assert_eq!((drops.delivered, drops.dropped), (4, 6));
}

#[tokio::test(start_paused = true)]
async fn members_come_and_go_at_run_time_and_a_group_without_members_gets_nothing() {
    let net = InMemNetwork::new(156);
    let (a, b, c) = mesh(&net).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let on_b = b.subscribe_with::<Job>(group("billing")).unwrap();
    forward("b", on_b, &tx);
    within(
        "one member",
        a.ready().members::<Job>("billing", Scope::Cluster, 1),
    )
    .await;
    publish(&a, 0, 10).await;
    assert_eq!(take(&mut rx, 10).await["b"].len(), 10);
    let on_c = c.subscribe_with::<Job>(group("billing")).unwrap();
    within(
        "two members",
        a.ready().members::<Job>("billing", Scope::Cluster, 2),
    )
    .await;
    forward("c", on_c, &tx);
    // In turn, a run at a time: 10 were published to b alone, so 22 more finish its run,
    // then c has a run, then b again.
    let run = meshbus_core::proto::routing::RUN;
    publish(&a, 1, 2 * run as u32).await;
    let got = take(&mut rx, 2 * run).await;
    assert_eq!((got["b"].len(), got["c"].len()), (run, run), "in turn");
    drop(tx);
    // Every member leaves: the group is gone, and publishing to it is no error.
    drop((b, c));
    within("no members", async {
        let mut view = a.membership();
        view.wait_for(|v| v.peers.is_empty()).await.unwrap();
    })
    .await;
    publish(&a, 2, 3).await;
    assert_eq!(
        a.group_stats()[0].no_member,
        0,
        "a group with no member left is no group"
    );
}

/// a: cluster shop; b: cluster shop; c: cluster billing. Members of `g` on all three.
#[tokio::test(start_paused = true)]
async fn scopes_limit_the_members_a_publish_reaches() {
    let net = InMemNetwork::new(157);
    let b = node(&net, "b").cluster("shop").start().await.unwrap();
    let c = node(&net, "c").cluster("billing").start().await.unwrap();
    let a = node(&net, "a")
        .cluster("shop")
        .peers(["inmem://b", "inmem://c"])
        .start()
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    join(&tx, "a", &a, group("g"));
    join(&tx, "b", &b, group("g"));
    join(&tx, "c", &c, group("g"));
    // A group whose only member is in the other cluster.
    let _far = c.subscribe_with::<Job>(group("far")).unwrap();
    within("g", a.ready().members::<Job>("g", Scope::Network, 3)).await;
    within("far", a.ready().members::<Job>("far", Scope::Network, 1)).await;
    for i in 0..20 {
        a.events().cluster().publish(Job(0, i)).await.unwrap();
    }
    let got = take(&mut rx, 20).await;
    assert!(!got.contains_key("c"), "c is in another cluster");
    assert_eq!(got.values().map(Vec::len).sum::<usize>(), 20);
    let far = a
        .group_stats()
        .into_iter()
        .find(|s| s.group == "far")
        .unwrap();
    assert_eq!(
        (far.no_member, far.delivered),
        (20, 0),
        "no member of `far` in the cluster"
    );
    for i in 0..5 {
        a.events().local().publish(Job(1, i)).await.unwrap();
    }
    let got = take(&mut rx, 5).await;
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        ["a"],
        "Local: only a's member"
    );
    let run = meshbus_core::proto::routing::RUN;
    for i in 0..3 * run as u32 {
        a.events().network().publish(Job(2, i)).await.unwrap();
    }
    let got = take(&mut rx, 3 * run).await;
    assert_eq!(got.len(), 3, "Network: all three members, a run each");
}

#[tokio::test]
async fn a_group_name_that_could_not_travel_is_refused() {
    let bus = Bus::builder().start().await.unwrap();
    for name in ["", "a\u{1f}b", "tab\there"] {
        let err = bus.subscribe_with::<Job>(group(name)).unwrap_err();
        assert_eq!(err.kind(), meshbus::ErrorKind::Config, "{name:?}");
    }
    let err = bus
        .subscribe_with::<Job>(group(&"g".repeat(1024)))
        .unwrap_err();
    assert_eq!(err.kind(), meshbus::ErrorKind::Config);
    assert!(bus.subscribe_with::<Job>(group("fine")).is_ok());
}

/// A peer's groups that come and go leave no counters behind when nothing was published to
/// them (one entry per group a peer announced would be memory the peer decides).
#[tokio::test(start_paused = true)]
async fn groups_a_peer_announced_and_left_do_not_stay_in_group_stats() {
    let net = InMemNetwork::new(150);
    let b = node(&net, "b").start().await.unwrap();
    let a = node(&net, "a").peers(["inmem://b"]).start().await.unwrap();
    within("the link", a.ready().peers(1)).await;
    let names: Vec<String> = (0..50).map(|i| format!("g{i}")).collect();
    for name in &names {
        let sub = b.subscribe_with::<Job>(group(name)).unwrap();
        within(
            "the member",
            a.ready().members::<Job>(name, Scope::Network, 1),
        )
        .await;
        drop(sub);
    }
    // The last one gone too, as a sees it.
    let last = b.subscribe_with::<Job>(group("last")).unwrap();
    within(
        "the member",
        a.ready().members::<Job>("last", Scope::Network, 1),
    )
    .await;
    drop(last);
    assert!(
        a.group_stats().iter().all(|g| g.delivered == 0),
        "nothing was published"
    );
    assert!(
        a.group_stats().len() <= 1,
        "a keeps {} groups' counters, none ever published to, every one of them gone",
        a.group_stats().len()
    );
}
