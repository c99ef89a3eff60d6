//! The mesh protocol as plain state: no sockets, tasks or clocks; every method takes `now`.

pub mod membership;
