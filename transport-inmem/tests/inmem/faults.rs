use std::time::Duration;

use futures_util::FutureExt;
use meshbus_core::{Connection, ErrorKind, ReadEvent, Transport};
use meshbus_transport_inmem::InMemNetwork;
use tokio::time::Instant;

use crate::util::*;

#[tokio::test]
async fn a_cut_drops_frames_both_ways_and_blocks_dials_until_healed() {
    let net = InMemNetwork::new(1);
    let (mut a, mut b) = pair(&net, "a", "b").await;
    let _lb = listen(&net, "b2").await; // another listener of another node
    let mut la = listen(&net, "a").await;

    // A frame in flight when the cable is pulled is lost too.
    send(&mut a, [0]).await;
    net.cut("b", "a");
    assert!(net.is_cut("a", "b"));
    send(&mut a, [1, 2, 3]).await; // writes succeed: a black hole
    send(&mut b, [4]).await;
    assert_eq!(ready_ids(&mut b), Vec::<u64>::new());
    assert_eq!(ready_ids(&mut a), Vec::<u64>::new());
    let s = net.link_stats("a", "b");
    assert_eq!((s.sent, s.delivered, s.dropped), (4, 0, 4));
    assert_eq!(net.link_stats("b", "a").dropped, 1);

    for (from, to) in [("a", "inmem://b"), ("b", "inmem://a")] {
        let err = net
            .transport(from)
            .dial(&to.parse().unwrap())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io, "{from} -> {to}");
    }
    // Other links are untouched.
    connect(&net, "c", &mut la).await;

    net.heal("a", "b");
    assert!(!net.is_cut("a", "b"));
    send(&mut a, [5]).await;
    send(&mut b, [6]).await;
    assert_eq!(ready_ids(&mut b), [5]);
    assert_eq!(ready_ids(&mut a), [6]);
    connect(&net, "b", &mut la).await;
}

/// Every node listens on its name and every pair is connected, the first dialling.
async fn mesh(
    net: &InMemNetwork,
    names: &[&'static str],
) -> Vec<(&'static str, &'static str, Connection, Connection)> {
    let mut listeners = Vec::new();
    for n in names {
        listeners.push(listen(net, n).await);
    }
    let mut links = Vec::new();
    for (i, x) in names.iter().enumerate() {
        for (l, y) in listeners.iter_mut().zip(names).skip(i + 1) {
            let (cx, cy) = connect(net, x, l).await;
            links.push((*x, *y, cx, cy));
        }
    }
    links
}

/// Whether a frame gets through each way.
async fn flows(cx: &mut Connection, cy: &mut Connection) -> (bool, bool) {
    send(cx, [1]).await;
    send(cy, [2]).await;
    (ready_ids(cy) == [1], ready_ids(cx) == [2])
}

#[tokio::test]
async fn a_partition_cuts_across_groups_only_until_heal_all() {
    let net = InMemNetwork::new(1);
    let mut links = mesh(&net, &["a", "b", "c", "d", "e"]).await;
    net.partition(&[&["a", "b"], &["c", "d"]]);
    for (x, y, cx, cy) in links.iter_mut() {
        let across = (["a", "b"].contains(x) && ["c", "d"].contains(y))
            || (["c", "d"].contains(x) && ["a", "b"].contains(y));
        assert_eq!(net.is_cut(x, y), across, "{x}-{y}");
        assert_eq!(flows(cx, cy).await, (!across, !across), "{x}-{y}");
    }
    net.heal_all();
    for (x, y, cx, cy) in links.iter_mut() {
        assert_eq!(flows(cx, cy).await, (true, true), "{x}-{y}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_delay_holds_each_frame_exactly_and_keeps_order() {
    let net = InMemNetwork::new(1);
    let (mut a, mut b) = pair(&net, "a", "b").await;
    net.set_delay("a", "b", Duration::from_millis(100));
    let t0 = Instant::now();
    send(&mut a, [1]).await;
    tokio::time::advance(Duration::from_millis(50)).await;
    send(&mut a, [2]).await;
    // Shrinking the delay does not let a later frame overtake.
    net.set_delay("b", "a", Duration::from_millis(10));
    send(&mut a, [3]).await;
    tokio::time::advance(Duration::from_millis(49)).await;
    assert!(b.reader.read(LIMIT).now_or_never().is_none());

    assert_eq!(read_id(&mut b).await, 1);
    assert_eq!(t0.elapsed(), Duration::from_millis(100));
    assert_eq!(read_id(&mut b).await, 2);
    assert_eq!(t0.elapsed(), Duration::from_millis(150));
    assert_eq!(read_id(&mut b).await, 3);
    assert_eq!(t0.elapsed(), Duration::from_millis(150));

    // The other direction has the same delay; zero removes it.
    send(&mut b, [4]).await;
    assert_eq!(read_id(&mut a).await, 4);
    assert_eq!(t0.elapsed(), Duration::from_millis(160));
    net.set_delay("a", "b", Duration::ZERO);
    send(&mut a, [5]).await;
    assert_eq!(ready_ids(&mut b), [5]);
}

/// The ids delivered out of 1000 sent a -> b with a 30 % drop rate; with `noise`, traffic on
/// another lossy link is interleaved.
async fn lossy_run(seed: u64, noise: bool) -> Vec<u64> {
    let net = InMemNetwork::new(seed);
    net.set_link_capacity(1000);
    let (mut a, mut b) = pair(&net, "a", "b").await;
    let (mut c, mut d) = pair(&net, "c", "d").await;
    net.set_drop_rate("a", "b", 0.3);
    net.set_drop_rate("c", "d", 0.5);
    for chunk in 0..10 {
        send(&mut a, chunk * 100..(chunk + 1) * 100).await;
        if noise {
            send(&mut c, 0..chunk).await;
        }
    }
    let got = ready_ids(&mut b);
    drop(ready_ids(&mut d));
    let s = net.link_stats("a", "b");
    assert_eq!(s.sent, 1000);
    assert_eq!(s.delivered + s.dropped, 1000);
    assert_eq!(s.delivered, got.len() as u64);
    got
}

#[tokio::test]
async fn the_drop_rate_is_deterministic_per_seed_and_about_right() {
    let run = lossy_run(7, false).await;
    assert!(
        (600..=800).contains(&run.len()),
        "{} of 1000 delivered",
        run.len()
    );
    assert!(run.windows(2).all(|w| w[0] < w[1]), "order kept");
    assert_eq!(lossy_run(7, false).await, run);
    assert_eq!(lossy_run(7, true).await, run, "other links do not disturb");
    assert_ne!(lossy_run(8, false).await, run);
}

#[tokio::test]
async fn rates_of_zero_and_one_drop_nothing_and_everything() {
    let net = InMemNetwork::new(3);
    let (mut a, mut b) = pair(&net, "a", "b").await;
    net.set_drop_rate("a", "b", 1.5);
    send(&mut a, 0..20).await;
    assert!(ready_ids(&mut b).is_empty());
    net.set_drop_rate("a", "b", f64::NAN);
    send(&mut a, 0..20).await;
    assert_eq!(ready_ids(&mut b).len(), 20);
}

#[tokio::test]
async fn kill_closes_every_connection_of_the_node_and_frees_its_name() {
    let net = InMemNetwork::new(1);
    let old_b = net.transport("b");
    let mut lb = old_b.listen(&"inmem://b".parse().unwrap()).await.unwrap();
    let (mut a, mut ba) = connect(&net, "a", &mut lb).await;
    let (mut c, mut bc) = connect(&net, "c", &mut lb).await;
    let (mut x, mut y) = pair(&net, "x", "y").await;
    send(&mut a, [1]).await; // in flight: lost

    net.kill("b");
    for conn in [&mut a, &mut c, &mut ba, &mut bc] {
        assert_eq!(conn.reader.read(LIMIT).await.unwrap(), ReadEvent::Closed);
    }
    let err = a.writer.write_batch(&mut frames([2])).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert_eq!(lb.accept().await.unwrap_err().kind(), ErrorKind::Closed);
    // Nobody listens on b now; the crashed incarnation can do nothing.
    let b_addr = "inmem://b".parse().unwrap();
    assert_eq!(
        net.transport("a").dial(&b_addr).await.unwrap_err().kind(),
        ErrorKind::Io
    );
    let err = old_b.listen(&b_addr).await.unwrap_err();
    assert!(err.to_string().contains("killed"), "{err}");
    // Others are untouched.
    send(&mut x, [3]).await;
    assert_eq!(ready_ids(&mut y), [3]);

    // A restarted b listens and is reachable again.
    let mut lb = net.transport("b").listen(&b_addr).await.unwrap();
    let (mut a, mut b) = connect(&net, "a", &mut lb).await;
    send(&mut a, [4]).await;
    assert_eq!(ready_ids(&mut b), [4]);
}
