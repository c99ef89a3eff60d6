//! One node, no network: commands, events and a bus's life.

#[path = "../support/mod.rs"]
mod support;

mod commands;
mod events;
mod groups;
mod lifecycle;
mod ready;
