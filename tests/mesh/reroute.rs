//! Routing around a death: a connection that fails is out of every route at once, and a
//! command that never left for it goes to another handler instead of failing with `PeerLost`.

use std::time::Duration;

use crate::support::*;
use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;
use meshbus::Binary;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

/// A job, and a payload that sets its size on the wire.
#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "reroute.work", reply = (String, u64))]
struct Work(u32, Binary);

/// Bytes that do not compress (xorshift from a fixed seed).
fn payload(n: usize) -> Binary {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// A node that answers `Work` with its own name and the milliseconds its caller still waits.
async fn worker(net: &InMemNetwork, name: &str, seeds: &[&str]) -> Bus {
    let me = name.to_owned();
    node(net, name)
        // Long enough that only the test's kill ends a link, however long the test waits.
        .heartbeat_interval(Duration::from_secs(1))
        .peer_timeout(Duration::from_secs(600))
        .peers(seeds.iter().map(|s| format!("inmem://{s}")))
        .command_handler(move |_: Work, ctx: Context| {
            let me = me.clone();
            let left = ctx.deadline().map_or(u64::MAX, |at| {
                let left = at.saturating_duration_since(tokio::time::Instant::now());
                u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
            });
            async move { HandlerResult::Ok((me, left)) }
        })
        .start()
        .await
        .unwrap()
}

/// Waits, bounded, until `f` holds; it reads state that offers no change notification.
async fn until(what: &str, f: impl Fn() -> bool) {
    within(what, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn commands_still_queued_for_a_peer_that_dies_go_to_another_handler() {
    const N: u32 = 40;
    let net = InMemNetwork::new(31);
    // One frame in flight per direction: a link whose frames are held back stalls its writer
    // after one frame, and what is queued behind stays on the sender's lanes. Every frame on a
    // link is a sealed record, and one record carries as many small frames as fit (64 KiB of
    // them): commands of 48 KB each make any two records on the link carry at most two whole
    // commands, as two frames in flight did in clear.
    net.set_link_capacity(1);
    let job = payload(48_000);
    let a = worker(&net, "a", &[]).await;
    let client = node(&net, "client")
        .heartbeat_interval(Duration::from_secs(1))
        .peer_timeout(Duration::from_secs(600))
        .peers(["inmem://a"])
        .start()
        .await
        .unwrap();
    within("a", client.ready().handlers::<Work>(Scope::Cluster, 1)).await;

    // Nothing from the client reaches `a` any more: its writer blocks behind the first frame.
    net.set_delay("client", "a", Duration::from_secs(3600));
    let mut calls = JoinSet::new();
    for i in 0..N {
        let (client, job) = (client.clone(), job.clone());
        calls.spawn(async move {
            client
                .commands()
                .send(Work(i, job))
                .timeout(Duration::from_secs(60))
                .await
        });
    }
    // Every command is queued for `a` (the one handler so far): at most two frames (the one
    // written, the one the blocked write holds) have left the lanes.
    until("the commands queued for a", || {
        client
            .peer_stats()
            .iter()
            .any(|p| p.node_id == a.node_id() && p.queued_bytes > 0)
            && net.link_stats("client", "a").sent >= 1
    })
    .await;
    let b = worker(&net, "b", &["client"]).await;
    within("b", client.ready().handlers::<Work>(Scope::Cluster, 2)).await;
    // 20 of the commands' 60 s pass before `a` dies (the paused clock moved on by hand).
    tokio::time::advance(Duration::from_secs(20)).await;

    net.kill("a");
    let mut by_b = 0;
    let mut lost = 0;
    while let Some(r) = calls.join_next().await {
        match r.unwrap() {
            Ok((from, left_ms)) => {
                assert_eq!(from, "b", "a reply from a node that was cut off");
                // Sent on with the time its caller still waits, not the 60 s it started with.
                assert!(left_ms <= 40_000, "the handler was given {left_ms} ms");
                by_b += 1;
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::PeerLost, "{e}");
                lost += 1;
            }
        }
    }
    // Only what may have been written to `a` is lost: the frame on the link and the batch
    // its writer was writing (one frame, as the link holds one). Before rerouting, all 40 were.
    assert!(lost <= 2, "{lost} commands failed with PeerLost");
    assert_eq!(by_b + lost, N);
    client.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_command_sent_after_a_link_failed_never_picks_it() {
    // Two handlers; `a` dies. Every command sent from the moment the client's reader saw the
    // link close goes to `b`, before the membership view drops `a`.
    let net = InMemNetwork::new(32);
    let a = worker(&net, "a", &[]).await;
    let b = worker(&net, "b", &["a"]).await;
    let client = node(&net, "client")
        .peers(["inmem://a", "inmem://b"])
        .start()
        .await
        .unwrap();
    within(
        "a and b",
        client.ready().handlers::<Work>(Scope::Cluster, 2),
    )
    .await;
    net.kill("a");
    // Whatever the actor has published yet, no command fails: each one either never picks
    // `a` (its link is known to have failed) or, picked in the instant before, is rerouted
    // since nothing of it was written.
    for i in 0..200 {
        let (from, _) = client
            .commands()
            .send(Work(i, Binary::default()))
            .await
            .unwrap();
        assert_eq!(from, "b");
    }
    until_view(&client, |v| {
        v.peers.iter().all(|p| p.node_id != a.node_id())
    })
    .await;
    client.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
