//! The mesh protocol as plain state: no sockets, tasks or clocks; every method takes `now`.
//!
//! The runtime moves bytes and time into these types and acts on what they return, so tests
//! drive them with fake instants (`t0 + Duration::from_millis(..)`) and in-memory frames.

pub mod handshake;
pub mod liveness;
