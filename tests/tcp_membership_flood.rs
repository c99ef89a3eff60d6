//! Issue 12: a peer announces 10,000 live members at unreachable loopback addresses (closed
//! ports; half of them at one shared address, half at distinct ones), again every second
//! for 30 s. Real sockets on 127.0.0.1, the node in this process:
//!
//! - the node's CPU time over the 30 s (read from `/proc/self/stat`, so it includes the
//!   attacker and the healthy peer of this process) stays under [`CPU_BOUND`] of one core;
//! - the healthy peer's median round trip during the attack stays within 2x of before
//!   (a baseline under [`RTT_FLOOR`] counts as that floor: loopback noise on a shared
//!   machine);
//! - at most `max_dials_in_flight` (8) dials are ever under way;
//! - the members announced are forgotten: at most `max_introductions` (64) per interval are
//!   taken, each is buried at its first failed dial, and [`FORGET_BOUND`] after the last
//!   update the node holds no live member but its two peers.

// A binary of its own, not in a suite: it reads the whole process's CPU time from
// `/proc/self/stat`, so any other test running beside it would be counted as the node's.

#![cfg(all(feature = "tcp", target_os = "linux"))]

#[path = "support/mod.rs"]
mod support;

use support::raw_tcp;

use std::time::Duration;

use bytes::BytesMut;
use meshbus::prelude::*;
use meshbus::tcp::TcpTransport;
use meshbus::transport::ReadEvent;
use meshbus_core::wire::control::{
    ControlMessage, GossipDelta, GossipEntry, GossipMessage, MemberState,
};
use meshbus_core::wire::FrameCodec;
use serde::{Deserialize, Serialize};
use support::within;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The node's CPU over the attack, as a fraction of one core.
const CPU_BOUND: f64 = 0.25;
/// The smallest baseline round trip the 2x bound is taken of.
const RTT_FLOOR: Duration = Duration::from_millis(1);
/// How long after the last update the announced members are all gone.
const FORGET_BOUND: Duration = Duration::from_secs(10);
const ATTACK: Duration = Duration::from_secs(30);
const MEMBERS: usize = 10_000;

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "flood.echo", reply = u32)]
struct Echo(u32);

/// This process's CPU time (user + system), from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc_sysconf_clk_tck() };
    Duration::from_secs_f64(ticks as f64 / hz as f64)
}

extern "C" {
    fn sysconf(name: i32) -> i64;
}

/// `sysconf(_SC_CLK_TCK)`; `_SC_CLK_TCK` is 2 on Linux.
unsafe fn libc_sysconf_clk_tck() -> i64 {
    sysconf(2).max(1)
}

/// A loopback port nobody listens on: bound, then closed.
async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

async fn median_rtt(peer: &Bus, n: u32, first: u32) -> Duration {
    let mut rtts = Vec::new();
    // Paced like the round trips during the attack, so both are measured alike.
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    for i in 0..n {
        pace.tick().await;
        let since = Instant::now();
        let reply = within("a round trip", peer.commands().send(Echo(first + i))).await;
        assert_eq!(reply.unwrap(), first + i);
        rtts.push(since.elapsed());
    }
    rtts.sort();
    rtts[rtts.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_unreachable_members_do_not_disturb_the_node() {
    let node = Bus::builder()
        .name("target")
        .transport(TcpTransport::new())
        .listen("tcp://127.0.0.1:0")
        .command_handler(|e: Echo, _ctx| async move { HandlerResult::Ok(e.0) })
        .start()
        .await
        .unwrap();
    let listen = node.listen_addrs()[0].clone();
    let addr: std::net::SocketAddr = listen.rest().parse().unwrap();
    let peer = Bus::builder()
        .name("healthy")
        .transport(TcpTransport::new())
        .peers([listen.to_string()])
        .start()
        .await
        .unwrap();
    within("the mesh", peer.ready().handlers::<Echo>(Scope::Cluster, 1)).await;
    let before = median_rtt(&peer, 100, 0).await;

    // Mallory joins with a handshake (its node id its key's), then gossips about members of
    // made-up ids: gossip about others is believed within bounds, not checked against keys.
    let stream = TcpStream::connect(addr).await.unwrap();
    let identity = |node_id: u128, addresses| {
        raw_tcp::identity(node_id, &format!("junk-{node_id}"), addresses)
    };
    let (key, mallory) = raw_tcp::own_identity(0xBAD_C0DE, "junk-mallory");
    let (conn, _) = raw_tcp::handshake(stream, &key, mallory, 1 << 24).await;

    // Half at one shared closed port, half at distinct loopback addresses (127.0.x.y) on
    // another closed port: every dial is refused at once.
    let (shared, distinct) = (closed_port().await, closed_port().await);
    let entries: Vec<GossipEntry> = (0..MEMBERS)
        .map(|i| {
            let addr = if i % 2 == 0 {
                format!("tcp://127.0.0.1:{shared}")
            } else {
                format!("tcp://127.0.{}.{}:{distinct}", 1 + i / 250, 1 + i % 250)
            };
            GossipEntry::from_identity(
                &identity(0x1_0000 + i as u128, vec![addr]),
                MemberState::Alive,
            )
        })
        .collect();
    // In two deltas: one frame of all 10,000 is over a body size the codec takes.
    let mut update = BytesMut::new();
    for half in entries.chunks(MEMBERS / 2) {
        let delta = GossipMessage::Delta(GossipDelta {
            entries: half.to_vec(),
            want: Vec::new(),
        });
        FrameCodec::default()
            .encode(&delta.to_frame().unwrap(), &mut update)
            .unwrap();
    }
    let update = update.freeze();
    let (mut reader, mut write_half) = (conn.reader, conn.writer);
    // What the node sends mallory is read and dropped, so its writer never waits on us.
    let drain = tokio::spawn(async move {
        while matches!(
            reader.read(1 << 24).await,
            Ok(ReadEvent::Frame(_) | ReadEvent::Partial)
        ) {}
    });

    let cpu_before = cpu_time();
    let start = Instant::now();
    let mut sent = 0u32;
    let mut rtts = Vec::new();
    let mut i = 1_000u32;
    // Paced, so the CPU measured is the node's, not a busy client's.
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    while start.elapsed() < ATTACK {
        pace.tick().await;
        if start.elapsed() >= Duration::from_secs(u64::from(sent)) {
            write_half.write_all(&update).await.unwrap();
            sent += 1;
        }
        let since = Instant::now();
        let reply = within("a round trip", peer.commands().send(Echo(i))).await;
        assert_eq!(reply.unwrap(), i);
        rtts.push(since.elapsed());
        i += 1;
        assert!(node.stats().dials_in_flight <= 8, "{:?}", node.stats());
    }
    let cpu = cpu_time().saturating_sub(cpu_before).as_secs_f64() / start.elapsed().as_secs_f64();
    rtts.sort();
    let during = rtts[rtts.len() / 2];
    let stats = node.stats();
    eprintln!(
        "{sent} updates of {MEMBERS} members: CPU {:.1}% of a core, median round trip {before:?} \
         before, {during:?} during ({} round trips); {stats:?}",
        cpu * 100.0,
        rtts.len()
    );
    assert!(sent >= 25, "only {sent} updates sent");
    assert!(cpu < CPU_BOUND, "CPU {:.1}% of a core", cpu * 100.0);
    assert!(
        during <= 2 * before.max(RTT_FLOOR),
        "round trips went from {before:?} to {during:?}"
    );
    assert!(stats.dials_in_flight_peak <= 8, "{stats:?}");
    assert!(
        stats.dials_in_flight_peak >= 1,
        "nothing was dialled: {stats:?}"
    );

    // The announced members are forgotten; the node still serves its peer.
    let forgotten = async {
        loop {
            if node.stats().members <= 2 {
                break;
            }
            // Polled: the gauge has no watch. Bounded by FORGET_BOUND below.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(FORGET_BOUND, forgotten)
        .await
        .unwrap_or_else(|_| panic!("members still held: {:?}", node.stats()));
    let reply = within("a round trip", peer.commands().send(Echo(7))).await;
    assert_eq!(reply.unwrap(), 7);
    drop(write_half);
    drain.abort();
    within("shutdown", peer.shutdown()).await.unwrap();
    within("shutdown", node.shutdown()).await.unwrap();
}
