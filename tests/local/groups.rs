//! Groups within one bus: its members share the events, the one with the most room first; with
//! every member full, a `Wait` publish goes to whichever member has room first.

use std::future::IntoFuture;

use meshbus::prelude::*;
use meshbus::SubscriptionOptions;
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
#[meshbus(name = "local.groups.job")]
struct Job(u32);

fn member(capacity: usize) -> SubscriptionOptions {
    SubscriptionOptions::new().group("g").capacity(capacity)
}

#[tokio::test]
async fn members_here_share_by_room_and_a_full_group_waits_for_any_of_them() {
    let bus = Bus::builder().start().await.unwrap();
    let mut small = bus.subscribe_with::<Job>(member(1)).unwrap();
    let mut large = bus.subscribe_with::<Job>(member(2)).unwrap();
    // Three events fill both queues: each goes where there is the most room.
    for i in 0..3 {
        bus.events().local().publish(Job(i)).await.unwrap();
    }
    let queued =
        |bus: &Bus| -> Vec<u64> { bus.subscription_stats().iter().map(|s| s.queued).collect() };
    assert_eq!(queued(&bus), [1, 2]);
    // Every member full: the publish waits. With no room anywhere the pick goes in turn, and
    // here names the large member (its fourth pick); room freed at the small one lets the
    // publish through all the same.
    let mut held = std::pin::pin!(bus.events().local().publish(Job(3)).into_future());
    assert!(futures_util::poll!(held.as_mut()).is_pending());
    let first = small.recv().await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), held)
        .await
        .expect("the publish goes to the member that had room first")
        .unwrap();
    assert_eq!(queued(&bus), [1, 2]);
    let mut got: Vec<u32> = vec![first.0, small.recv().await.unwrap().0];
    for _ in 0..2 {
        got.push(large.recv().await.unwrap().0);
    }
    got.sort();
    assert_eq!(got, [0, 1, 2, 3], "each event once");
}

#[tokio::test]
async fn a_full_exclusive_group_waits_for_its_active_member_only() {
    let bus = Bus::builder().start().await.unwrap();
    let exclusive = |capacity| member(capacity).group_kind(meshbus::GroupKind::Exclusive);
    let mut active = bus.subscribe_with::<Job>(exclusive(1)).unwrap();
    let standby = bus.subscribe_with::<Job>(exclusive(8)).unwrap();
    bus.events().local().publish(Job(0)).await.unwrap();
    // The active member is full; the standby has room, but order needs the active one.
    let mut held = std::pin::pin!(bus.events().local().publish(Job(1)).into_future());
    assert!(futures_util::poll!(held.as_mut()).is_pending());
    assert_eq!(active.recv().await.unwrap().0, 0);
    tokio::time::timeout(std::time::Duration::from_secs(5), held)
        .await
        .expect("the active member has room again")
        .unwrap();
    assert_eq!(active.recv().await.unwrap().0, 1);
    let stats = bus.subscription_stats();
    assert_eq!(stats[1].delivered, 0, "the standby got nothing");
    drop(standby);
}
