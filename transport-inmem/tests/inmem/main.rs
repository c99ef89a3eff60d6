//! The in-memory transport: links, backpressure and faults.

mod conformance;
mod faults;
mod links;
mod util;
