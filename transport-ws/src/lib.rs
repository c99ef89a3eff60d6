//! The WebSocket transport for [meshbus](https://docs.rs/meshbus): nodes talk over
//! `ws://host:port/path`, each binary WebSocket message carrying one whole frame.
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
