//! The in-memory transport for [meshbus](https://docs.rs/meshbus): whole meshes inside one
//! process, with fault injection for tests.
//!
//! An [`InMemNetwork`] holds listeners by name; each node gets its [`InMemTransport`] with
//! [`InMemNetwork::transport`] and listens on and dials `inmem://name`. A connection is a pair
//! of bounded channels carrying whole frames, so a reader that does not read pushes back on
//! the writer. Faults are set between node names: [`cut`](InMemNetwork::cut) and
//! [`partition`](InMemNetwork::partition) (a black hole, the connections stay open),
//! [`set_delay`](InMemNetwork::set_delay) (tokio time, exact under a paused clock),
//! [`set_drop_rate`](InMemNetwork::set_drop_rate) (seeded), [`kill`](InMemNetwork::kill) (a
//! crash) and [`inject`](InMemNetwork::inject) (raw bytes), with per-link counters
//! ([`link_stats`](InMemNetwork::link_stats)).
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use meshbus_core::wire::{Frame, FrameCodec, FrameKind};
//! use meshbus_core::{ReadEvent, Transport};
//! use meshbus_transport_inmem::InMemNetwork;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), meshbus_core::Error> {
//! let net = InMemNetwork::new(42);
//! let mut listener = net.transport("b").listen(&"inmem://b".parse()?).await?;
//! let mut a = net.transport("a").dial(listener.local_addr()).await?;
//! let mut b = listener.accept().await?;
//! assert_eq!(b.remote.as_str(), "inmem://a");
//!
//! let codec = FrameCodec::default();
//! let mut frame = BytesMut::new();
//! codec.encode(&Frame::new(FrameKind::Ping, Bytes::new()), &mut frame)?;
//! a.writer.write_batch(&mut vec![frame.freeze()]).await?;
//!
//! let ReadEvent::Frame(bytes) = b.reader.read(codec.max_frame_size).await? else {
//!     panic!("expected a frame");
//! };
//! let ping = codec.decode(&mut BytesMut::from(&bytes[..]))?.expect("one whole frame");
//! assert_eq!(ping.kind, FrameKind::Ping);
//!
//! net.cut("a", "b"); // frames now vanish both ways; the connection stays open
//! assert!(net.transport("a").dial(&"inmem://b".parse()?).await.is_err());
//! # Ok(())
//! # }
//! ```

#![doc(test(attr(deny(warnings))))]

mod conn;
mod network;
mod transport;

pub use network::{InMemNetwork, LinkStats, DEFAULT_LINK_CAPACITY};
pub use transport::{InMemListener, InMemTransport, SCHEME};
