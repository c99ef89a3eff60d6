//! Helpers shared by the WebSocket tests: nodes on real sockets on 127.0.0.1.

#![allow(dead_code)]

use std::time::Duration;

use meshbus::prelude::*;
use meshbus::ws::WsTransport;
use meshbus::BusBuilder;

pub(crate) const HEARTBEAT: Duration = Duration::from_millis(200);
pub(crate) const PEER_TIMEOUT: Duration = Duration::from_secs(3);

/// A builder for node `name` on `host`, in `cluster`, listening on a free WebSocket port.
pub(crate) fn ws_node(name: &str, host: &str, cluster: &str) -> BusBuilder {
    Bus::builder()
        .name(name)
        .host_id(host)
        .cluster(cluster)
        .heartbeat_interval(HEARTBEAT)
        .peer_timeout(PEER_TIMEOUT)
        .transport(WsTransport::new())
        .listen("ws://127.0.0.1:0/meshbus")
}

/// `bus`'s WebSocket address, `ws://127.0.0.1:<port>/meshbus`.
pub(crate) fn addr(bus: &Bus) -> String {
    let addrs = bus.listen_addrs();
    let addr = addrs.first().expect("the node listens");
    assert_eq!(addr.scheme(), "ws");
    addr.to_string()
}

/// The port of `bus`'s WebSocket listener.
pub(crate) fn port(bus: &Bus) -> u16 {
    let addr = addr(bus);
    let authority = addr
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .expect("an authority");
    authority
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("a port")
}
