//! Nodes of an in-memory mesh: commands, events, connections, membership and faults.

#[path = "../support/mod.rs"]
mod support;

mod binary;
mod commands;
mod conn;
mod credit;
mod discovery;
mod events;
mod faults;
mod flow;
mod gossip;
mod groups;
mod handshake;
mod metrics;
mod named;
mod partition;
mod reach;
mod rejoin;
mod request_api;
mod reroute;
mod send_all;
