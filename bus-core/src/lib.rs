//! The core of [meshbus]: message traits, handlers with injected services, dispatch by scope,
//! and the node runtime.
//!
//! Applications depend on the `meshbus` facade, which re-exports this crate and, per cargo
//! feature, the transports and discovery. Transport crates depend on this one.
//!
//! ```
//! use meshbus_core::{Bus, Command, Event, HandlerError};
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
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), meshbus_core::Error> {
//! let bus = Bus::builder()
//!     .command_handler(|cmd: Ping, ctx| async move {
//!         ctx.bus().events().publish(Pinged { text: cmd.text.clone() }).await?;
//!         Ok::<_, HandlerError>(format!("pong {}", cmd.text))
//!     })
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

mod bus;
mod context;
pub mod discovery;
mod error;
mod handler;
mod id;
mod message;
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
pub mod wire;

pub use async_trait::async_trait;
pub use bus::{
    Bus, BusBuilder, Commands, Events, Publish, PublishFuture, ResponseFuture, SendAll, SendCommand,
};
pub use context::{Context, Headers};
pub use error::{Error, ErrorKind, HandlerError};
pub use handler::{CommandHandler, EventHandler};
pub use id::NodeId;
pub use message::{Command, Event};
pub use node::{MembershipView, PeerInfo, Ready};
pub use scope::Scope;
pub use services::Services;
pub use stats::{BusStats, PeerStats};
pub use subscription::{FullPolicy, Subscription, SubscriptionOptions};
pub use transport::{
    Addr, Connection, FrameReader, FrameWriter, Listener, ReadEvent, Transport, Transports,
};
