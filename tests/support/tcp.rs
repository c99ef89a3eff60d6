//! Nodes over TCP and Unix-domain sockets, in real time.

use meshbus::prelude::*;
use meshbus::tcp::TcpTransport;
use meshbus::BusBuilder;

/// A builder for node `name` on `host`, in `cluster`, over TCP (or a Unix socket, by the
/// scheme of `listen`), listening on `listen`.
pub(crate) fn tcp_node(name: &str, host: &str, cluster: &str, listen: &str) -> BusBuilder {
    Bus::builder()
        .name(name)
        .host_id(host)
        .cluster(cluster)
        .transport(TcpTransport::new())
        .listen(listen)
}

/// A builder for node `name` on `host`, in `cluster`, listening on the Unix socket
/// `<dir>/<name>.sock`.
#[cfg(unix)]
pub(crate) fn unix_node(
    name: &str,
    host: &str,
    cluster: &str,
    dir: &std::path::Path,
) -> BusBuilder {
    let listen = format!("unix://{}/{name}.sock", dir.display());
    tcp_node(name, host, cluster, &listen)
}
