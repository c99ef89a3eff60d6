//! Helpers shared by the mesh tests: nodes on one in-memory network.

#![allow(dead_code)]

use std::future::IntoFuture;
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

/// How long any one step of a test may take before the test is declared hung: a minute, of
/// paused time in the in-memory tests (some steps wait out several peer timeouts and
/// backoffs), of real time over sockets. Waits whose bound is part of what a test asserts
/// use [`bounded`] or a timeout of their own.
pub(crate) const BOUND: Duration = Duration::from_secs(60);

/// Awaits `fut`, failing the test if it takes longer than [`BOUND`].
pub(crate) async fn within<T>(what: &str, fut: impl IntoFuture<Output = T>) -> T {
    bounded(BOUND, what, fut).await
}

/// Awaits `fut`, failing the test if it takes longer than `bound`.
pub(crate) async fn bounded<T>(bound: Duration, what: &str, fut: impl IntoFuture<Output = T>) -> T {
    match tokio::time::timeout(bound, fut.into_future()).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {bound:?} waiting for {what}"),
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
pub(crate) mod secure;
#[cfg(feature = "tcp")]
pub(crate) mod tcp;
#[cfg(feature = "ws")]
pub(crate) mod ws;
