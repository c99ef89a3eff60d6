//! Nodes on one in-memory network, a host and its clients.

use std::future::IntoFuture;
use std::path::Path;
use std::time::Duration;

use meshbus_core::{Bus, BusBuilder, Event, Scope};
use meshbus_streams::{StreamConfig, StreamsBuilderExt};
use meshbus_transport_inmem::InMemNetwork;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OrderPlaced {
    pub(crate) id: u64,
    pub(crate) item: String,
}
impl Event for OrderPlaced {
    const NAME: &'static str = "orders.placed";
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OrderCancelled {
    pub(crate) id: u64,
}
impl Event for OrderCancelled {
    const NAME: &'static str = "orders.cancelled";
}

pub(crate) fn placed(id: u64) -> OrderPlaced {
    OrderPlaced {
        id,
        item: format!("item-{id}"),
    }
}

/// A node `name` of `net`, dialing `peers`.
pub(crate) fn node(net: &InMemNetwork, name: &str, peers: &[&str]) -> BusBuilder {
    Bus::builder()
        .name(name)
        .transport(net.transport(name))
        .listen(format!("inmem://{name}"))
        .peers(
            peers
                .iter()
                .map(|p| format!("inmem://{p}"))
                .collect::<Vec<_>>(),
        )
}

/// The stream `orders` in `dir`, capturing both order events.
pub(crate) fn orders(dir: &Path) -> StreamConfig {
    StreamConfig::new("orders")
        .event::<OrderPlaced>()
        .event::<OrderCancelled>()
        .dir(dir)
}

/// The node `host`, hosting `config`.
pub(crate) async fn host(net: &InMemNetwork, config: StreamConfig) -> Bus {
    node(net, "host", &[]).stream(config).start().await.unwrap()
}

/// A host of `config` and a client connected to it.
pub(crate) async fn host_and_client(net: &InMemNetwork, config: StreamConfig) -> (Bus, Bus) {
    let host = host(net, config).await;
    let client = node(net, "client", &["host"]).start().await.unwrap();
    within(
        "the host",
        client
            .ready()
            .handlers_named("$streams.orders.append", Scope::Network, 1),
    )
    .await;
    (host, client)
}

/// How long one step of a test may take before the test is declared hung.
pub(crate) const BOUND: Duration = Duration::from_secs(30);

/// Awaits `fut`, failing the test if it takes longer than [`BOUND`].
pub(crate) async fn within<T>(what: &str, fut: impl IntoFuture<Output = T>) -> T {
    match tokio::time::timeout(BOUND, fut.into_future()).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {BOUND:?} waiting for {what}"),
    }
}
