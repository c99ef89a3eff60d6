//! The in-memory transport for [meshbus](https://docs.rs/meshbus).
//!
//! **Not built yet:** an in-process network of nodes with fault injection (`inmem://name`) arrives with the node runtime (issue 5). Until then this crate only reserves its
//! place in the workspace, so that the `meshbus` facade's `inmem` feature compiles. Every node
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
