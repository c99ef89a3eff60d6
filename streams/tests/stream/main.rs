//! Streams on a mesh (issue 16): a node hosts a stream; other nodes append with confirmation,
//! read, replay and follow it, and ask for its info.

mod admin;
mod confirmed;
mod consumers;
mod faults;
mod hosting;
mod metrics;
mod reading;
mod review;
mod support;
