//! Everything a handler file needs: `use meshbus::prelude::*;`.
//!
//! The bus and its handle types, the message and handler traits, `async_trait`, serde's derive
//! traits, `Arc`, and (feature `derive`) the message derives.

pub use std::sync::Arc;

pub use meshbus_core::{
    async_trait, Bus, Command, CommandHandler, Context, Error, ErrorKind, Event, EventHandler,
    HandlerError, Scope, Services,
};
pub use serde::{Deserialize, Serialize};

#[cfg(feature = "derive")]
pub use meshbus_macros::{Command, Event};
