//! Trust: who gets into a mesh, what crosses its links, and who a node may claim to be.

#[path = "../support/mod.rs"]
mod support;

mod keys;
mod links;
mod rotation;
mod script;
#[cfg(feature = "tcp")]
mod tcp;

use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;
use meshbus::trust::NetworkKey;
use meshbus::BusBuilder;
use serde::{Deserialize, Serialize};

/// The command every node of these tests handles: answers its own name.
#[derive(Debug, Serialize, Deserialize, Command)]
#[meshbus(name = "trust.whoami", reply = String)]
pub(crate) struct WhoAmI;

/// Node `name` on `net` holding `keys` (none: keyless), answering [`WhoAmI`].
pub(crate) fn keyed(net: &InMemNetwork, name: &str, keys: &[&NetworkKey]) -> BusBuilder {
    let builder = support::node(net, name).command_handler(|_: WhoAmI, ctx: Context| async move {
        HandlerResult::Ok(ctx.bus().name().to_owned())
    });
    if keys.is_empty() {
        builder
    } else {
        builder.network_keys(keys.iter().map(|k| (*k).clone()))
    }
}

/// Waits until `bus`'s stats satisfy `f`, letting the other tasks run (time is paused in the
/// in-memory tests, so nothing else moves it).
pub(crate) async fn until_stats(bus: &Bus, f: impl Fn(&meshbus::BusStats) -> bool) {
    for _ in 0..100_000 {
        if f(&bus.stats()) {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the stats never came to it: {:?}", bus.stats());
}
