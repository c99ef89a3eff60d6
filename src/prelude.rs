//! What a handler file needs: `use meshbus::prelude::*;`.
//!
//! The message and handler traits, the types every handler names ([`Bus`], [`Context`],
//! [`Scope`], [`Error`]), and the few more that writing a handler takes:
//!
//! - [`HandlerError`], the error a handler returns (`?` converts any `std::error::Error` into
//!   it), [`HandlerResult`], which ends a closure's async block without a turbofish, and
//!   [`ErrorKind`], to match the errors of a nested call;
//! - [`async_trait`], to implement [`CommandHandler`] and [`EventHandler`];
//! - [`from_services`], to register a handler built from the injected services;
//! - (feature `derive`) the `Command` and `Event` derives, which share their traits' names.
//!
//! Everything else is imported by name: `std::sync::Arc`, serde's `Serialize` and
//! `Deserialize`, [`Services`](crate::Services), [`SubscriptionOptions`](crate::SubscriptionOptions)
//! and [`EventHandlerExt`](crate::EventHandlerExt), whose `with_options` gives a subscriber its
//! options (it is not in the prelude: it applies to any value, and would put a `with_options`
//! method on everything in a handler file).

pub use meshbus_core::{
    async_trait, from_services, Bus, Command, CommandHandler, Context, Error, ErrorKind, Event,
    EventHandler, HandlerError, HandlerResult, Scope,
};

#[cfg(feature = "derive")]
pub use meshbus_macros::{Command, Event};

#[cfg(feature = "streams")]
pub use meshbus_streams::{PublishExt, StreamsBuilderExt, StreamsExt};
