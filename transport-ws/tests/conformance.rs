//! The transport conformance suite of `meshbus_core::test_util`, over WebSocket.

use meshbus_core::test_util::check_transport;
use meshbus_transport_ws::WsTransport;

#[tokio::test]
async fn websocket_passes_the_conformance_suite() {
    let listen = "ws://127.0.0.1:0/meshbus".parse().unwrap();
    check_transport(&WsTransport::new(), &listen).await;
}
