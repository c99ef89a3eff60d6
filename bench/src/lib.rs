//! Benchmarks of [meshbus](https://docs.rs/meshbus): the criterion benches in `benches/`, and
//! the `wire` program (`src/bin/wire/`), which measures meshbus over TCP, Unix sockets and
//! WebSocket against raw baselines in one run:
//! `cargo run --release -p meshbus-bench --bin wire -- --help`.
//!
//! Run them from the workspace root with
//! `cargo bench -p meshbus-bench --bench local_dispatch`. They live in their own package so
//! that the measured build does not include tokio's `test-util` feature, which the test suite
//! needs and which slows every clock read.
//!
//! ```
//! // The benchmarks measure code like this, against a direct call of the handler.
//! use meshbus::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Command)]
//! #[meshbus(reply = u64)]
//! struct Add(u64, u64);
//!
//! async fn add(c: Add, _ctx: Context) -> Result<u64, HandlerError> {
//!     Ok(c.0 + c.1)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), meshbus::Error> {
//! let bus = Bus::builder()
//!     .command_handler(add)
//!     .start()
//!     .await?;
//! assert_eq!(bus.commands().local().send(Add(1, 2)).await?, 3);
//! # Ok(())
//! # }
//! ```

#![doc(test(attr(deny(warnings))))]
