//! The mesh protocol as plain state: no sockets, tasks or clocks; every method takes `now`.
//!
//! The runtime moves bytes and time into these types and acts on what they return, so tests
//! drive them with fake instants (`t0 + Duration::from_millis(..)`) and in-memory frames.
//!
//! - [`handshake`]: `Hello` / `Welcome` / `Reject` on a new connection, and which of two
//!   connections to one peer survives.
//! - [`liveness`]: heartbeats and failure detection on an established connection.

pub mod handshake;
pub mod liveness;
