//! The TCP and Unix-domain socket transport for [meshbus](https://docs.rs/meshbus).
//!
//! Give a bus a [`TcpTransport`] and it listens on and dials `tcp://host:port` and
//! `unix:///path`. Frames travel behind a 4-byte length prefix; everything queued for a link is
//! written with one system call, and `TCP_NODELAY` is on, so an idle link sends at once. A lone
//! frame sent while the link's writer is idle is written from the sender's own call, on a
//! duplicate of the socket's descriptor
//! ([`StreamThrough`](meshbus_core::transport::StreamThrough)), without waking the writer.
//! Listen on port 0 and ask the bus where it ended up with
//! [`Bus::listen_addrs`](meshbus_core::Bus::listen_addrs):
//!
//! ```
//! use std::time::Duration;
//! use meshbus_core::{Bus, Command, Context, HandlerError, Scope};
//! use meshbus_transport_tcp::TcpTransport;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Echo(String);
//! impl Command for Echo { const NAME: &'static str = "echo"; type Reply = String; }
//!
//! async fn echo(e: Echo, _ctx: Context) -> Result<String, HandlerError> {
//!     Ok(e.0)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), meshbus_core::Error> {
//! let server = Bus::builder()
//!     .name("server")
//!     .transport(TcpTransport::new())
//!     .listen("tcp://127.0.0.1:0") // the system picks a free port
//!     .command_handler(echo)
//!     .start()
//!     .await?;
//! let server_addr = server.listen_addrs()[0].to_string(); // tcp://127.0.0.1:<port>
//!
//! let client = Bus::builder()
//!     .name("client")
//!     .transport(TcpTransport::new())
//!     .peers([server_addr])
//!     .start()
//!     .await?;
//! // Wait for the mesh, not for a fixed time.
//! tokio::time::timeout(
//!     Duration::from_secs(10),
//!     client.ready().handlers::<Echo>(Scope::Cluster, 1),
//! )
//! .await
//! .expect("the server joins within 10 s");
//!
//! let reply = client.commands().send(Echo("hi over tcp".into())).await?;
//! assert_eq!(reply, "hi over tcp");
//! client.shutdown().await?;
//! server.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Addresses
//!
//! | address | meaning |
//! |---|---|
//! | `tcp://127.0.0.1:7000` | IPv4 |
//! | `tcp://[::1]:7000` | IPv6, in brackets |
//! | `tcp://node-1.example:7000` | a host name, resolved when dialling (and when listening) |
//! | `tcp://0.0.0.0:0` | listen on every interface, on a port the system picks |
//! | `unix:///run/app/bus.sock` | a Unix-domain socket at an absolute path (Unix only) |
//!
//! A malformed address is a [`Config`](meshbus_core::ErrorKind::Config) error that says what
//! is wrong; a refused, unreachable or silent peer is an [`Io`](meshbus_core::ErrorKind::Io)
//! error with the system's error as its source. See [`TcpTransport`] for the details (connect
//! timeout, stale Unix socket files).

#![doc(test(attr(deny(warnings))))]

mod addr;
mod tcp;
mod transport;
mod unix;

pub use addr::{TCP_SCHEME, UNIX_SCHEME};
pub use transport::TcpTransport;

/// Runs a test's body with a bound, so that a broken socket test fails instead of hanging.
#[cfg(test)]
async fn bounded<T>(body: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(std::time::Duration::from_secs(30), body).await {
        Ok(v) => v,
        Err(_) => panic!("the test took over 30 s"),
    }
}
