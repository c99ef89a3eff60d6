//! Durable consumers: the permanent queue on top of a stream (issue 16, items 5 and 6).
//!
//! This module is the part of a durable consumer that needs neither the bus nor the log: a
//! state machine ([`Consumer`], sans-io: the host passes `now` and the records it read) and its
//! crash-safe store ([`ConsumerStore`], one redb file per stream directory). The host serves
//! them over the bus.
//!
//! # The model
//!
//! A consumer walks its stream with a **position**: the next offset it looks at for a first
//! delivery. The host reads records from the position and offers them; those the consumer's
//! filter accepts are delivered (to one member each: members of one consumer compete), the
//! others are passed over. A delivered record is **pending** until a member acks it. At most
//! `max_ack_pending` records are pending: beyond that, first deliveries wait for acks
//! (redeliveries do not, as they add no pending record).
//!
//! A pending record not acked within `ack_wait` of its delivery, or negatively acked (at once
//! or after a delay), is **delivered again**, with its delivery count one higher, lowest
//! offset first and before any first delivery. A record whose last failed delivery was its
//! `max_deliveries`-th is not delivered again: it is handed to the host once as a
//! **dead letter** (offset, count, reason) for the dead-letter stream, and counts as done.
//!
//! The **ack floor** is the offset below which everything is done: acked, dead-lettered,
//! filtered out or removed by retention. Acks may arrive in any order: done offsets above the
//! floor are kept as runs (`start..end`), and the floor moves over a run as soon as the gap
//! before it fills, so the state stays small however acks interleave. Invariants: `floor <=
//! position`; every offset below the position is done or pending; a record acked is not
//! delivered again unless a reset moves the position back over it.
//!
//! # Delivery guarantee: at least once
//!
//! A record is delivered until it is acked or dead-lettered, so a member may see it more than
//! once (after a crash, a slow handler or a lost ack); its delivery count tells. The host
//! groups the changes of many deliveries and acks into one [`ConsumerStore::commit`] (one
//! fsync), and a crash can fall between an event and the commit that records it:
//!
//! - **Delivery, then crash before its commit**: after the restart the record is pending (or,
//!   if its first delivery was not committed, not yet delivered) and is delivered again; its
//!   delivery count is then lower than the deliveries that really happened, by those since
//!   the last commit (normally one), so a poison record may get that many extra tries.
//! - **Ack, then crash before its commit**: the ack is lost and the record is delivered again.
//!   A member learns that its ack counts only when the host answers it, after the commit; once
//!   an ack's commit has returned, that record is never delivered again.
//! - **Dead letter**: the host appends it to the dead-letter stream before committing the
//!   change that marks it done; a crash in between dead-letters it again after the restart.
//!
//! Deadlines are not stored: after a restart every pending record waits `ack_wait` from the
//! load (its count kept) and is then redelivered, as the members that held it are presumably
//! gone with the old run.

//! # How the host drives it
//!
//! On open: [`ConsumerStore::open_in`] the stream's directory (blocking pool),
//! [`ConsumerStore::load_all`], [`Consumer::restore`] each, then [`Consumer::skip_gone`] with
//! the log's first offset. A new consumer is [`Consumer::new`] at the offset its
//! [`From`](crate::From) resolves to. Then, whenever a member asks for records, an ack or nak
//! arrives, or [`Consumer::next_deadline`] passes:
//!
//! 1. [`Consumer::take`] with `now`, the member's credit, and the records read from
//!    [`Consumer::position`] (skip the read when [`Consumer::room`] is 0); send the deliveries
//!    (redeliveries are read again by offset);
//! 2. [`Consumer::dead_letters`]: append each to the dead-letter stream with its reason;
//! 3. gather [`Consumer::changes`] of every consumer touched into one
//!    [`ConsumerStore::commit`]; answer the acks it covers only after it returns.
//!
//! A failed commit leaves the store at the previous commit while the consumers in memory have
//! moved on: stop serving the stream's consumers and reload them from the store.

mod config;
mod machine;
mod ranges;
mod state;
mod store;
#[cfg(test)]
mod tests;

pub use config::{ConsumerConfig, ConsumerInfo};
#[cfg(test)]
pub(crate) use machine::{AckError, Delivery};
pub(crate) use machine::{Consumer, DeadLetter, DeadReason};
pub(crate) use state::Change;
#[cfg(test)]
pub(crate) use state::{PersistedState, StateRow};
pub(crate) use store::ConsumerStore;
#[cfg(test)]
pub(crate) use store::{Loaded, StoreError};
