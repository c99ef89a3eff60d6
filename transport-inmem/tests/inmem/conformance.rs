//! The transport conformance suite of `meshbus_core::test_util`, over the in-memory transport.

use meshbus_core::test_util::check_transport;
use meshbus_transport_inmem::InMemNetwork;

#[tokio::test(start_paused = true)]
async fn the_inmem_transport_passes_the_conformance_suite() {
    let net = InMemNetwork::new(1);
    check_transport(&net.transport("node"), &"inmem://node".parse().unwrap()).await;
}
