//! The TCP and Unix-domain socket transport for [meshbus](https://docs.rs/meshbus).
//!
//! **Not built yet:** length-delimited frames over `tcp://host:port` and `unix:///path` arrives with the TCP and WebSocket issue (issue 6). Until then this crate only reserves its
//! place in the workspace, so that the `meshbus` facade's `tcp` feature compiles. Every node
//! already works in one process over the local bus:
//!
//! ```
//! use meshbus_core::{Bus, Command, HandlerError};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Echo(String);
//! impl Command for Echo { const NAME: &'static str = "echo"; type Reply = String; }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), meshbus_core::Error> {
//! let bus = Bus::builder()
//!     .command_handler(|e: Echo, _ctx| async move { Ok::<_, HandlerError>(e.0) })
//!     .start()
//!     .await?;
//! assert_eq!(bus.commands().local().send(Echo("hi".into())).await?, "hi");
//! # bus.shutdown().await
//! # }
//! ```

#![doc(test(attr(deny(warnings))))]
