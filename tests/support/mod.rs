//! Helpers shared by the mesh tests: nodes on one in-memory network.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;
use meshbus::{BusBuilder, MembershipView};

pub(crate) const HEARTBEAT: Duration = Duration::from_millis(100);
pub(crate) const PEER_TIMEOUT: Duration = Duration::from_millis(500);

/// A builder for node `name` listening on `inmem://name`, on host `host-1`, seeded by its name.
pub(crate) fn node(net: &InMemNetwork, name: &str) -> BusBuilder {
    let seed = name
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    Bus::builder()
        .name(name)
        .seed(seed)
        .host_id("host-1")
        .heartbeat_interval(HEARTBEAT)
        .peer_timeout(PEER_TIMEOUT)
        .transport(net.transport(name))
        .listen(format!("inmem://{name}"))
}

/// Awaits `fut`, failing the test if it takes longer than a minute of (paused) time.
pub(crate) async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(60), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Waits until `bus`'s membership satisfies `f`.
pub(crate) async fn until_view(bus: &Bus, f: impl Fn(&MembershipView) -> bool) {
    let mut rx = bus.membership();
    within("the membership", rx.wait_for(|v| f(v)))
        .await
        .unwrap();
}

pub(crate) mod alloc;
pub(crate) mod netns;
pub(crate) mod raw;
#[cfg(feature = "tcp")]
pub(crate) mod raw_tcp;
#[cfg(feature = "ws")]
pub(crate) mod ws;
