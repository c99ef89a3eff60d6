//! meshbus is an embedded, brokerless, peer-to-peer message bus for Rust services.
//!
//! A service links the library and becomes a node: it sends **commands** (request/reply:
//! exactly one handler answers with a typed result) and publishes **events** (fire and forget:
//! every subscriber gets a copy) to handlers in its own process, on its machine, in its cluster
//! or across the network, with no broker in between. Handlers are registered at start-up,
//! mediator style, with their dependencies injected from [`Services`].
//!
//! ```
//! use std::sync::Arc;
//!
//! use meshbus::from_services;
//! use meshbus::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Command)]
//! #[meshbus(name = "diag.ping", reply = String)]
//! struct Ping { text: String }
//!
//! #[derive(Serialize, Deserialize, Event)]
//! #[meshbus(name = "users.created")]
//! struct UserCreated { user_id: u64 }
//!
//! struct Greeting(String);
//!
//! struct PongHandler { greeting: Arc<Greeting> }
//!
//! #[async_trait]
//! impl CommandHandler<Ping> for PongHandler {
//!     async fn handle(&self, cmd: Ping, _ctx: Context) -> Result<String, HandlerError> {
//!         Ok(format!("{} {}", self.greeting.0, cmd.text))
//!     }
//! }
//!
//! async fn user_created(e: Arc<UserCreated>, _ctx: Context) -> Result<(), HandlerError> {
//!     println!("user {} created", e.user_id);
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), meshbus::Error> {
//! let bus = Bus::builder()
//!     .cluster("shop")
//!     .service(Greeting("pong".into()))
//!     .command_handler(from_services(|s| Ok(PongHandler { greeting: s.get()? })))
//!     .event_handler(user_created)
//!     .start()
//!     .await?;
//!
//! let reply = bus.commands().local().send(Ping { text: "hi".into() }).await?;
//! assert_eq!(reply, "pong hi");
//! bus.events().publish(UserCreated { user_id: 7 }).await?;
//! bus.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `inmem` | yes | [`inmem`]: an in-memory network of nodes in one process, for tests |
//! | `derive` | yes | `#[derive(Event)]` and `#[derive(Command)]` |
//! | `tcp` | yes | `tcp`: TCP and Unix-domain socket transport |
//! | `ws` | no | `ws`: WebSocket transport |
//! | `tls` | no | `wss://` in `ws`: the WebSocket transport over TLS (rustls, ring) |
//! | `mdns` | no | `mdns`: zero-configuration discovery on the local link |
//! | `full` | no | all of the above |
//!
//! # Scopes
//!
//! | scope | who may answer or receive |
//! |---|---|
//! | [`Scope::Local`] | handlers in this `Bus` instance; nothing is serialized |
//! | [`Scope::Machine`] | nodes with our host id |
//! | [`Scope::Cluster`] | nodes with our cluster name (the default) |
//! | [`Scope::Network`] | every node of our network |

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

// The root lists what applications name; the transport and discovery SPI, for crates that add
// a transport or a discovery mechanism, sit in their own modules; the wire format and protocol
// state machines are the core crate's (`meshbus-core`), not the facade's.
pub use meshbus_core::{
    async_trait, from_services, Addr, Binary, Bus, BusBuilder, BusStats, Command, CommandHandler,
    Commands, Context, Error, ErrorKind, Event, EventHandler, EventHandlerExt, Events,
    FromServices, FullPolicy, GroupKind, GroupStats, HandlerError, HandlerResult, HandlersReady,
    Headers, IntoCommandHandler, IntoEventHandler, IntoPeerAddrs, MembersReady, MembershipView,
    NamedHandlersReady, NodeId, PeerAddr, PeerEventStats, PeerGroup, PeerInfo, PeerStats,
    PeersReady, Publish, PublishAll, PublishFuture, PublishParts, Ready, RequestOptions,
    ResponseFuture, Scope, SendAll, SendAllStream, SendCommand, Services, SubscribersReady,
    Subscription, SubscriptionOptions, SubscriptionStats, TimedReady, WithOptions,
};

/// Byte payloads: [`Binary`], and `#[serde(with = "meshbus::binary")]` for `Vec<u8>` and
/// `Bytes` fields, both written as MessagePack `bin` rather than one integer per byte.
pub use meshbus_core::binary;

/// How many handshakes one remote host may start, for
/// [`BusBuilder::handshake_rate_per_host`].
pub use meshbus_core::proto::admission::RateLimit;

/// The transport SPI: what a crate implements to carry frames between nodes (the in-memory,
/// TCP and WebSocket transports are built on it).
pub mod transport {
    pub use meshbus_core::transport::*;
}

/// Trust: network keys, node identities (static key pairs) and public keys; see
/// [`BusBuilder::network_key`].
pub use meshbus_core::trust;

/// What the bus records through the `metrics` facade: every series' name, type, labels and
/// meaning.
pub use meshbus_core::metrics;

/// The discovery SPI: what a crate implements to find nodes to dial (mDNS is built on it).
pub mod discovery {
    pub use meshbus_core::discovery::*;
}

/// `#[derive(Event)]`: implements [`Event`] with the type's name as the wire name, or the name
/// given by `#[meshbus(name = "...")]`.
#[cfg(feature = "derive")]
#[cfg_attr(docsrs, doc(cfg(feature = "derive")))]
pub use meshbus_macros::Event;

/// `#[derive(Command)]`: implements [`Command`]; `#[meshbus(reply = Type)]` sets the reply type
/// (default `()`), `#[meshbus(name = "...")]` the wire name (default: the type's name).
#[cfg(feature = "derive")]
#[cfg_attr(docsrs, doc(cfg(feature = "derive")))]
pub use meshbus_macros::Command;

/// The in-memory transport.
#[cfg(feature = "inmem")]
#[cfg_attr(docsrs, doc(cfg(feature = "inmem")))]
pub use meshbus_transport_inmem as inmem;

/// The TCP and Unix-domain socket transport.
#[cfg(feature = "tcp")]
#[cfg_attr(docsrs, doc(cfg(feature = "tcp")))]
pub use meshbus_transport_tcp as tcp;

/// The WebSocket transport (`wss://` too with the `tls` feature).
#[cfg(feature = "ws")]
#[cfg_attr(docsrs, doc(cfg(feature = "ws")))]
pub use meshbus_transport_ws as ws;

/// Discovery with mDNS / DNS-SD.
#[cfg(feature = "mdns")]
#[cfg_attr(docsrs, doc(cfg(feature = "mdns")))]
pub use meshbus_discovery_mdns as mdns;

/// Durable streams: a node hosts a stream on its disk; any node appends with confirmation,
/// replays and follows it, and consumes it durably.
#[cfg(feature = "streams")]
#[cfg_attr(docsrs, doc(cfg(feature = "streams")))]
pub use meshbus_streams as streams;

pub mod prelude;

#[doc(hidden)]
pub mod __private {
    pub use meshbus_core;
}

/// The README's examples, compiled and run as doc tests so they stay true (with the
/// `streams` feature, which one of them uses: `cargo test --workspace --all-features`).
#[cfg(all(doctest, feature = "streams"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
