//! The core of [meshbus]: message traits, handlers with injected services, dispatch by scope,
//! and the node runtime.
//!
//! Applications depend on the `meshbus` facade, which re-exports what they name from this crate
//! (and the transport and discovery SPI as `meshbus::transport` and `meshbus::discovery`) and,
//! per cargo feature, the transports and discovery. Transport crates, the benchmarks and the fuzz
//! targets depend on this one, which also holds the wire format ([`wire`]) and the protocol state
//! machines ([`proto`]).
//!
//! ```
//! use meshbus_core::{Bus, Command, Context, Event, HandlerError};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Ping { text: String }
//! impl Command for Ping { const NAME: &'static str = "diag.ping"; type Reply = String; }
//!
//! #[derive(Serialize, Deserialize)]
//! struct Pinged { text: String }
//! impl Event for Pinged { const NAME: &'static str = "diag.pinged"; }
//!
//! // A handler is an async fn: its return type says what `?` converts errors into.
//! async fn ping(cmd: Ping, ctx: Context) -> Result<String, HandlerError> {
//!     ctx.bus().events().publish(Pinged { text: cmd.text.clone() }).await?;
//!     Ok(format!("pong {}", cmd.text))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), meshbus_core::Error> {
//! let bus = Bus::builder()
//!     .command_handler(ping)
//!     .start()
//!     .await?;
//! let mut pinged = bus.subscribe::<Pinged>()?;
//! let reply = bus.commands().local().send(Ping { text: "hi".into() }).await?;
//! assert_eq!(reply, "pong hi");
//! assert_eq!(pinged.recv().await.unwrap().text, "hi");
//! bus.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! [meshbus]: https://docs.rs/meshbus

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

pub mod binary;
mod bus;
mod context;
pub mod discovery;
mod error;
mod handler;
mod id;
mod message;
pub mod metrics;
mod node;
pub mod proto;
mod scope;
mod services;
mod stats;
mod subscription;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;
pub mod transport;
pub mod trust;
pub mod wire;

pub use async_trait::async_trait;
pub use binary::Binary;
pub use bus::{
    Bus, BusBuilder, Commands, Events, HandlersReady, IntoPeerAddrs, MembersReady,
    NamedHandlersReady, PeerAddr, PeersReady, Publish, PublishAll, PublishFuture, PublishParts,
    Ready, RequestOptions, ResponseFuture, SendAll, SendAllStream, SendCommand, SubscribersReady,
    TimedReady,
};
pub use context::{Context, Headers};
pub use error::{Error, ErrorKind, HandlerError};
pub use handler::{
    from_services, marker, CommandHandler, EventHandler, EventHandlerExt, FromServices,
    HandlerResult, IntoCommandHandler, IntoEventHandler, WithOptions,
};
pub use id::NodeId;
pub use message::{Command, Event};
pub use node::{MembershipView, PeerGroup, PeerInfo};
pub use scope::Scope;
pub use services::Services;
pub use stats::{BusStats, GroupStats, PeerEventStats, PeerStats, SubscriptionStats};
pub use subscription::{FullPolicy, GroupKind, Subscription, SubscriptionOptions};
pub use transport::{
    Addr, Connection, FrameReader, FrameWriter, Listener, ReadEvent, Transport, Transports,
};
