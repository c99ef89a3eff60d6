//! Whether the node reaches the mesh: members it shares no transport with, and a node that
//! has found no peer.

use super::{Actor, ALONE_WARNING_AFTER};
use crate::id::NodeId;
use crate::node::conn::now_std;

impl Actor {
    /// Reports live members that share no transport with us: they are never dialled (not
    /// redialled forever), and the application sees them in the membership view.
    ///
    /// Membership says when its set changed, so this costs nothing after most events.
    pub(super) fn check_foreign(&mut self) {
        self.report_membership();
        let generation = self.membership.foreign_generation();
        if generation == self.foreign_generation {
            return;
        }
        self.foreign_generation = generation;
        let mut foreign: Vec<NodeId> = self.membership.foreign().collect();
        foreign.sort_unstable();
        if foreign == self.foreign {
            return;
        }
        for id in foreign.iter().filter(|id| !self.foreign.contains(id)) {
            if let Some(m) = self.membership.member(*id) {
                tracing::warn!(
                    node = %id,
                    name = %m.identity().name,
                    addresses = ?m.identity().addresses,
                    "unreachable: this node shares no transport with us"
                );
            }
        }
        self.foreign = foreign;
        self.publish();
    }

    /// Warns once that the node has found no peer since it started, if it has looked for
    /// [`ALONE_WARNING_AFTER`].
    pub(super) fn check_alone(&self) {
        let alone = self.alone.get();
        if !self.node.stopping.is_cancelled()
            && alone.since.is_some_and(|since| {
                now_std().saturating_duration_since(since) >= ALONE_WARNING_AFTER
            })
        {
            self.alone.set(alone.warn(&self.membership));
        }
    }
}
