//! Reachability: a node that shares no transport with us is reported, never redialled.

use std::time::Duration;

use crate::support::*;
use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;
use meshbus::transport::{Addr, Connection, Listener, Transport};
use meshbus::{async_trait, Error, ErrorKind};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "reach.name", reply = String)]
struct Name;

/// A transport of a scheme only one node has: it listens (nobody ever connects) and counts
/// the dials made to it, which must stay at zero.
#[derive(Debug, Clone, Default)]
struct Exotic {
    dials: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

#[derive(Debug)]
struct Idle(Addr);

#[async_trait]
impl Listener for Idle {
    fn local_addr(&self) -> &Addr {
        &self.0
    }
    async fn accept(&mut self) -> Result<Connection, Error> {
        std::future::pending().await
    }
}

#[async_trait]
impl Transport for Exotic {
    fn schemes(&self) -> &'static [&'static str] {
        &["exotic"]
    }
    async fn listen(&self, addr: &Addr) -> Result<Box<dyn Listener>, Error> {
        Ok(Box::new(Idle(addr.clone())))
    }
    async fn dial(&self, _addr: &Addr) -> Result<Connection, Error> {
        self.dials.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(Error::new(ErrorKind::Io).with_detail("nobody listens on exotic addresses"))
    }
}

#[tokio::test(start_paused = true)]
async fn a_node_sharing_no_transport_is_reported_unreachable_and_never_dialled() {
    let net = InMemNetwork::new(3);
    let exotic = Exotic::default();
    // `hub` speaks both; `far` is reachable only over the exotic transport, which `near`
    // lacks. `far` dials `hub` itself, so `hub` has a link to it; the link from `far` to
    // `near` is cut, so `far` cannot dial `near` either.
    let hub = node(&net, "hub")
        .transport(exotic.clone())
        .command_handler(|_: Name, _ctx: Context| async { HandlerResult::Ok("hub".to_owned()) })
        .start()
        .await
        .unwrap();
    net.cut("far", "near");
    let far = Bus::builder()
        .name("far")
        .seed(11)
        .host_id("host-1")
        .heartbeat_interval(HEARTBEAT)
        .peer_timeout(PEER_TIMEOUT)
        .transport(net.transport("far"))
        .transport(exotic.clone())
        .listen("exotic://far")
        .peers(["inmem://hub"])
        .command_handler(|_: Name, _ctx: Context| async { HandlerResult::Ok("far".to_owned()) })
        .start()
        .await
        .unwrap();
    let near = node(&net, "near")
        .peers(["inmem://hub"])
        .start()
        .await
        .unwrap();

    within("hub links both", hub.ready().peers(2)).await;
    let far_id = far.node_id();
    until_view(&near, |v| v.unreachable.contains(&far_id)).await;
    assert!(near.membership().borrow().peer(far_id).is_none());

    // A long while later: still no link, still reported, and no dial was ever tried.
    tokio::time::sleep(Duration::from_secs(120)).await;
    let view = near.membership().borrow().clone();
    assert_eq!(view.unreachable, vec![far_id]);
    assert_eq!(view.peers.len(), 1, "only the hub");
    assert_eq!(exotic.dials.load(std::sync::atomic::Ordering::SeqCst), 0);
    // `near` reaches only the hub's handler; `hub` still serves `far`'s.
    assert_eq!(near.commands().send(Name).await.unwrap(), "hub");
    assert!(hub.membership().borrow().peer(far_id).is_some());

    for bus in [near, far, hub] {
        bus.shutdown().await.unwrap();
    }
}
