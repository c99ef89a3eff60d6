//! Which of two connections to one peer survives.

use super::*;

/// What [`arbitrate`] compares about one connection to a peer; see [`Established::key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionKey {
    /// Which end dialled the connection.
    pub direction: Direction,
    /// The peer's incarnation, as its handshake announced it.
    pub peer_incarnation: u64,
}

impl ConnectionKey {
    /// The node id of the node that dialled this connection.
    pub fn dialler(self, local_node_id: u128, peer_node_id: u128) -> u128 {
        match self.direction {
            Direction::Outbound => local_node_id,
            Direction::Inbound => peer_node_id,
        }
    }
}

/// Which of two connections to one peer survives.
///
/// The connection that loses is not cut: it drains (fenced with `Goodbye { replaced }`, it
/// finishes what is under way on it, then closes), so nothing is lost or sent twice.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Arbitration {
    /// Keep the existing connection and close the new one. The peer decides the same about
    /// the same two connections, so no message is needed; an acceptor that has not written its
    /// `Welcome` yet may answer `Reject { reason: Duplicate }` instead.
    KeepExisting,
    /// Keep the new connection and retire the existing one: new work goes to the new one, and
    /// the existing one drains what is under way on it before it closes.
    ReplaceWithNew,
    /// Refuse the new connection: it speaks for an older incarnation of the peer than the one
    /// we are connected to. Answer `Reject { reason }` if this node is the acceptor and has not
    /// welcomed it yet; close it in any case.
    RejectNew {
        /// The reason to send: [`RejectReason::Duplicate`].
        reason: RejectReason,
    },
}

/// Decides which connection to keep when a new connection to a peer completes its handshake
/// while an established one to the same peer exists.
///
/// `local_node_id` is ours, `peer_node_id` the peer's (the same for both connections).
///
/// - **A newer incarnation** of the peer on the new connection: the peer restarted and the
///   existing connection is half-open; [`ReplaceWithNew`](Arbitration::ReplaceWithNew).
/// - **An older incarnation**: stale; [`RejectNew`](Arbitration::RejectNew) with
///   [`RejectReason::Duplicate`].
/// - **The same incarnation, dialled by different ends** (a simultaneous dial): keep the
///   connection whose dialler has the smaller node id. Both ends compare the same two ids, so
///   both keep the same connection, whichever completed first.
/// - **The same incarnation, dialled by the same end**: the dialler dialled again, so it has
///   given up on the existing connection, which is half-open here;
///   [`ReplaceWithNew`](Arbitration::ReplaceWithNew). (A runtime does not dial a peer it is
///   connected to or already dialling, so this is a reconnect, not a race.)
///
/// Incarnations are compared as numbers, larger is newer: a node that keeps its node id across
/// restarts must start each run with a larger incarnation than the last (for example the start
/// time in the high bits and random bits below).
pub fn arbitrate(
    local_node_id: u128,
    peer_node_id: u128,
    existing: ConnectionKey,
    new: ConnectionKey,
) -> Arbitration {
    use std::cmp::Ordering;
    match new.peer_incarnation.cmp(&existing.peer_incarnation) {
        Ordering::Greater => Arbitration::ReplaceWithNew,
        Ordering::Less => Arbitration::RejectNew {
            reason: RejectReason::Duplicate,
        },
        Ordering::Equal if new.direction == existing.direction => Arbitration::ReplaceWithNew,
        Ordering::Equal => {
            let new_dialler = new.dialler(local_node_id, peer_node_id);
            let existing_dialler = existing.dialler(local_node_id, peer_node_id);
            if new_dialler < existing_dialler {
                Arbitration::ReplaceWithNew
            } else {
                Arbitration::KeepExisting
            }
        }
    }
}
