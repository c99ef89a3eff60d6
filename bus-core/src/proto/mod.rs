//! The mesh protocol as plain state: no sockets, tasks or clocks; every method takes `now`.
//!
//! The node runtime feeds these state machines the frames it reads and the time, and carries
//! out what they return; tests drive them with fake clocks and in-memory frames.

pub mod interest;
pub mod requests;
