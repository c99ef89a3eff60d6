//! The transport conformance suite of `meshbus_core::test_util`, over TCP and Unix sockets.

use meshbus_core::test_util::check_transport;
use meshbus_transport_tcp::TcpTransport;

#[tokio::test]
async fn tcp_passes_the_conformance_suite() {
    check_transport(&TcpTransport::new(), &"tcp://127.0.0.1:0".parse().unwrap()).await;
}

#[cfg(unix)]
#[tokio::test]
async fn unix_sockets_pass_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    // Each check listens anew on the same path: the previous listener removed its socket.
    let listen = format!("unix://{}/conformance.sock", dir.path().display());
    check_transport(&TcpTransport::new(), &listen.parse().unwrap()).await;
}
