//! Rejoining: a node whose only seed died finds the mesh again when the seed comes back, or
//! when it is given a new address at run time.

use std::time::Duration;

use crate::support::*;
use meshbus::inmem::{InMemNetwork, InMemTransport};
use meshbus::prelude::*;
use meshbus::transport::{Connection, Listener, Transport};
use meshbus::{Addr, BusBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

/// A node's in-memory transport that counts the node's dials, so that a test can wait for
/// its redials rather than for time.
#[derive(Debug)]
struct CountingDials {
    inner: InMemTransport,
    dials: watch::Sender<u32>,
}

#[async_trait]
impl Transport for CountingDials {
    fn schemes(&self) -> &'static [&'static str] {
        self.inner.schemes()
    }

    async fn listen(&self, addr: &Addr) -> Result<Box<dyn Listener>, Error> {
        self.inner.listen(addr).await
    }

    async fn dial(&self, addr: &Addr) -> Result<Connection, Error> {
        self.dials.send_modify(|n| *n += 1);
        self.inner.dial(addr).await
    }
}

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "rejoin.ping", reply = String)]
struct Ping;

async fn pinged(net: &InMemNetwork, name: &str) -> Bus {
    let me = name.to_owned();
    node(net, name)
        .command_handler(move |_: Ping, _ctx| {
            let me = me.clone();
            async move { HandlerResult::Ok(me) }
        })
        .start()
        .await
        .unwrap()
}

/// Y (built by `y`), seeded only with X, which it joined; X then killed (no goodbye) and gone
/// from Y's view.
async fn seeded_by_a_dead_x(net: &InMemNetwork, y: BusBuilder) -> Bus {
    let x = pinged(net, "x").await;
    let y = y.peers(["inmem://x"]).start().await.unwrap();
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
    // X dies (no goodbye) before Y learned of anyone else, and stays down while Y's redials
    // fail and back off: six of them, so the next waits 8 s or more.
    let (dials, mut dialled) = watch::channel(0);
    let y = Bus::builder()
        .name("y")
        .host_id("host-1")
        .heartbeat_interval(HEARTBEAT)
        .peer_timeout(PEER_TIMEOUT)
        .transport(CountingDials {
            inner: net.transport("y"),
            dials,
        });
    let y = seeded_by_a_dead_x(&net, y).await;
    let before = *dialled.borrow_and_update();
    within("y's redials", dialled.wait_for(|n| *n >= before + 6))
        .await
        .unwrap();
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
    let y = seeded_by_a_dead_x(&net, node(&net, "y")).await;

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
