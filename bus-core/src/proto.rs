//! The mesh protocol as plain state: no sockets, tasks or clocks; every method takes `now`.
//!
//! The node runtime feeds these state machines the frames it reads and the time, and carries
//! out what they return, so tests drive them with fake instants (`t0 + Duration::from_millis(..)`)
//! and in-memory frames.

pub mod admission;
pub mod backoff;
pub mod credit;
pub mod handshake;
pub mod interest;
pub mod links;
pub mod liveness;
pub mod membership;
pub mod noise;
pub mod requests;
pub mod retirement;
pub mod routing;
