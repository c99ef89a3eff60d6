//! The in-memory transport: links, backpressure and faults.

mod faults;
mod links;
mod util;
