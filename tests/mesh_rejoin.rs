//! Rejoining: a node whose only seed died finds the mesh again when the seed comes back, or
//! when it is given a new address at run time.

mod mesh_util;

use std::time::Duration;

use mesh_util::*;
use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;
use tokio::time::Instant;

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "rejoin.ping", reply = String)]
struct Ping;

async fn pinged(net: &InMemNetwork, name: &str) -> Bus {
    let me = name.to_owned();
    node(net, name)
        .command_handler(move |_: Ping, _ctx| {
            let me = me.clone();
            async move { Ok::<_, HandlerError>(me) }
        })
        .start()
        .await
        .unwrap()
}

/// Y, seeded only with X, which it joined; X then killed (no goodbye) and gone from Y's view.
async fn seeded_by_a_dead_x(net: &InMemNetwork) -> Bus {
    let x = pinged(net, "x").await;
    let y = node(net, "y").peers(["inmem://x"]).start().await.unwrap();
    within("x", y.ready().handlers::<Ping>(Scope::Cluster, 1)).await;
    net.kill("x");
    drop(x);
    until_view(&y, |v| v.peers.is_empty()).await;
    y
}

/// The bound on rejoining after the seed is back: the redial backoff's cap with its jitter
/// (30 s × 1.2), plus a heartbeat for the handshake and interest to land.
const REJOIN_BOUND: Duration = Duration::from_secs(37);

#[tokio::test(start_paused = true)]
async fn a_node_whose_only_seed_died_rejoins_when_it_restarts_at_its_address() {
    let net = InMemNetwork::new(41);
    // X dies (no goodbye) before Y learned of anyone else, and stays down a while: Y's
    // redials fail and back off.
    let y = seeded_by_a_dead_x(&net).await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    // Y says it is cut off; X's new run, with nothing to dial, is merely first.
    assert!(y.membership().borrow().peers.is_empty());
    assert!(y.membership().borrow().alone);

    // A new run of X, at the configured address.
    let x2 = pinged(&net, "x").await;
    assert!(!x2.membership().borrow().alone);
    let t0 = Instant::now();
    within(
        "y to rejoin x",
        y.ready().handlers::<Ping>(Scope::Cluster, 1),
    )
    .await;
    assert!(
        t0.elapsed() <= REJOIN_BOUND,
        "rejoined after {:?}",
        t0.elapsed()
    );
    assert_eq!(y.commands().send(Ping).await.unwrap(), "x");
    assert!(!y.membership().borrow().alone);
    y.shutdown().await.unwrap();
    x2.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_node_whose_only_seed_left_for_good_joins_an_address_added_at_run_time() {
    let net = InMemNetwork::new(42);
    let y = seeded_by_a_dead_x(&net).await;

    // The mesh lives on elsewhere; Y is told where.
    let z = pinged(&net, "z").await;
    y.add_peers(["inmem://z"]).await.unwrap();
    within("y to join z", y.ready().handlers::<Ping>(Scope::Cluster, 1)).await;
    assert_eq!(y.commands().send(Ping).await.unwrap(), "z");

    // A bad address is refused with a clear error, and changes nothing.
    let err = y.add_peers(["nonsense"]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    y.shutdown().await.unwrap();
    z.shutdown().await.unwrap();
}
