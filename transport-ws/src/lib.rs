//! The WebSocket transport for [meshbus](https://docs.rs/meshbus): nodes talk over
//! `ws://host:port/path` (or `wss://` with the `tls` feature, see
//! [below](#tls-wss)), each binary WebSocket message carrying one whole frame.
//!
//! Add a [`WsTransport`] to a bus, listen on a `ws://` address (port 0 picks a free port,
//! which [`Bus::listen_addrs`](meshbus_core::Bus::listen_addrs) reports) and name peers by
//! theirs:
//!
//! ```
//! use std::time::Duration;
//! use meshbus_core::{Bus, Command, Context, HandlerError, Scope};
//! use meshbus_transport_ws::WsTransport;
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
//!     .transport(WsTransport::new())
//!     .listen("ws://127.0.0.1:0/meshbus")
//!     .command_handler(echo)
//!     .start()
//!     .await?;
//! let addr = server.listen_addrs()[0].to_string(); // ws://127.0.0.1:<port>/meshbus
//!
//! let client = Bus::builder()
//!     .transport(WsTransport::new())
//!     .peers([addr])
//!     .start()
//!     .await?;
//! # tokio::time::timeout(Duration::from_secs(10), async {
//! client.ready().handlers::<Echo>(Scope::Cluster, 1).await; // the mesh has formed
//! let reply = client.commands().cluster().send(Echo("hi".into())).await?;
//! assert_eq!(reply, "hi");
//! # Ok::<_, meshbus_core::Error>(()) }).await.expect("the example timed out")?;
//! client.shutdown().await?;
//! server.shutdown().await
//! # }
//! ```
//!
//! # On the wire
//!
//! - The dialling node connects over TCP (`TCP_NODELAY` on) and upgrades to WebSocket with a
//!   `GET` of the address's path; a listener answers another path with `404 Not Found`. Dial
//!   and upgrade are bounded by [`WsTransport::connect_timeout`] and
//!   [`WsTransport::upgrade_timeout`], so a client that never finishes its upgrade is dropped.
//! - Every frame is one binary message, sent as WebSocket fragments of at most
//!   [`FRAGMENT_SIZE`] bytes. The receiver checks that the frame's length prefix matches the
//!   message's size and the current frame limit; a message over
//!   [`WsTransport::max_message_size`] closes the connection with a `TooLarge` error.
//!   Reading a WebSocket frame header reserves the frame's declared length, so WebSocket
//!   frames over [`FRAGMENT_SIZE`] are refused: a peer announcing a huge frame makes us
//!   allocate nothing of it, and a message grows only with the bytes that arrive.
//! - Text messages are refused (the connection closes with a `Decode` error); pings are
//!   answered with pongs; a close message ends the connection cleanly.
//! - A batch of frames is written with one flush. A lone frame of at most [`FRAGMENT_SIZE`]
//!   bytes sent while the link's writer is idle is written from the sender's own call
//!   ([`FrameWriter::write_through`](meshbus_core::FrameWriter::write_through)), through the
//!   same tungstenite sink as the writer's, so the pongs tungstenite owes stay in one stream
//!   with our messages.
//!
//! # TLS (`wss://`)
//!
//! With the `tls` feature the same transport also serves `wss://host:port/path`: TLS 1.3 or
//! 1.2 (rustls with the ring provider) under the WebSocket, for links that cross proxies and
//! load balancers. TLS proves the listener's certificate to the dialler; it does not replace
//! the bus's own handshake, which runs inside it.
//!

#![cfg_attr(
    feature = "tls",
    doc = r#"
- A listener on `wss://` presents a certificate chain and key:
  [`WsTransport::tls_server`] with [`TlsServer::from_pem_files`] (or a rustls
  `ServerConfig` of your own). Without one, `listen` is a
  [`Config`](meshbus_core::ErrorKind::Config) error.
- A dialler trusts the roots you give it, and nothing else (no system or bundled roots):
  [`WsTransport::tls_client`] with [`TlsClient::with_roots_pem`] (or a rustls
  `ClientConfig`). Without one, dialling `wss://` is a `Config` error.
- The server's certificate must name the dialled address's host, a DNS name or an IP
  address. A refused certificate fails the dial with
  [`Unauthorized`](meshbus_core::ErrorKind::Unauthorized).
- The TLS handshake counts against [`WsTransport::connect_timeout`] and
  [`WsTransport::upgrade_timeout`], and against the listener's cap on connections in the
  middle of their upgrade. A client that fails it (a plain `ws://` client, garbage, a
  certificate it refuses) is dropped; the listener keeps accepting.
- Frames are written as over `ws://`, write-through included.

A node on `wss://` and one dialling it. The certificate is made on the spot here; a real
mesh loads its own with `TlsServer::from_pem_files("node.pem", "node.key")` and
`TlsClient::with_roots_pem("ca.pem")`.

```
use std::time::Duration;
use meshbus_core::{Bus, Command, Context, HandlerError, Scope};
use meshbus_transport_ws::{TlsClient, TlsServer, WsTransport};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Echo(String);
impl Command for Echo { const NAME: &'static str = "echo"; type Reply = String; }

async fn echo(e: Echo, _ctx: Context) -> Result<String, HandlerError> {
    Ok(e.0)
}

# #[tokio::main(flavor = "current_thread")]
# async fn main() -> Result<(), Box<dyn std::error::Error>> {
// A self-signed certificate for 127.0.0.1, which is then its own root.
let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])?;
let (cert, key) = (made.cert.pem(), made.signing_key.serialize_pem());
let wss = WsTransport::new()
    .tls_server(TlsServer::from_pem_bytes(cert.as_bytes(), key.as_bytes())?)
    .tls_client(TlsClient::with_roots_pem_bytes(cert.as_bytes())?);

let server = Bus::builder()
    .transport(wss.clone())
    .listen("wss://127.0.0.1:0/meshbus")
    .command_handler(echo)
    .start()
    .await?;
let addr = server.listen_addrs()[0].to_string(); // wss://127.0.0.1:<port>/meshbus

let client = Bus::builder().transport(wss).peers([addr]).start().await?;
# tokio::time::timeout(Duration::from_secs(10), async {
client.ready().handlers::<Echo>(Scope::Cluster, 1).await;
let reply = client.commands().cluster().send(Echo("over TLS".into())).await?;
assert_eq!(reply, "over TLS");
# Ok::<_, meshbus_core::Error>(()) }).await??;
client.shutdown().await?;
server.shutdown().await?;
# Ok(())
# }
```
"#
)]
#![cfg_attr(
    not(feature = "tls"),
    doc = "This build lacks the `tls` feature: `wss://` addresses are refused."
)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod addr;
mod conn;
mod error;
mod stream;
#[cfg(feature = "tls")]
mod tls;
mod transport;

#[cfg(test)]
mod tests;

#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use tls::{TlsClient, TlsServer};
pub use transport::{
    WsListener, WsTransport, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_UPGRADE_TIMEOUT, FRAGMENT_SIZE, SCHEME, TLS_SCHEME,
};

/// The rustls this crate builds on, for [`TlsServer::new`] and [`TlsClient::new`]
/// configurations of your own.
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use rustls;
