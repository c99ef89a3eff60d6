//! The table's indexes (dial queue, burials, expiries, counts, digest hash): where each entry
//! belongs in them, and keeping them in step as entries change.

use super::*;

impl Membership {
    /// Where `m` belongs in the indexes.
    pub(super) fn keys(&self, node: NodeId, m: &Member) -> Keys {
        let hash = m.hash();
        if node == self.me {
            return Keys {
                hash,
                ..Keys::default()
            };
        }
        let alive = m.state == MemberState::Alive;
        let dialable = m.dial_address().is_some();
        let pending = alive && !m.connected && dialable;
        Keys {
            hash,
            alive,
            connected: m.connected,
            in_flight: m.dial.in_flight,
            dial: (pending && !m.dial.in_flight).then_some((m.dial.next_attempt, m.fresh)),
            burial: self.burial_due(node, m),
            expiry: m.expires_at,
            foreign: (alive && !m.connected && m.has_address() && !dialable)
                .then_some(m.changed_at),
        }
    }

    /// Moves `node` from the index places `old` to `new`.
    pub(super) fn move_keys(&mut self, node: NodeId, old: &Keys, new: &Keys) {
        self.hash = self.hash.wrapping_sub(old.hash).wrapping_add(new.hash);
        if old.alive != new.alive {
            if new.alive {
                self.alive += 1;
            } else {
                self.alive = self.alive.saturating_sub(1);
            }
        }
        if old.connected != new.connected {
            if new.connected {
                self.connected.insert(node);
            } else {
                self.connected.remove(&node);
            }
        }
        if old.in_flight != new.in_flight {
            if new.in_flight {
                self.member_dials += 1;
            } else {
                self.member_dials = self.member_dials.saturating_sub(1);
            }
        }
        if old.dial != new.dial {
            if let Some((at, probation)) = old.dial {
                let queue = if probation {
                    &mut self.probation_due
                } else {
                    &mut self.dial_due
                };
                queue.remove(&(at, node));
            }
            if let Some((at, probation)) = new.dial {
                let queue = if probation {
                    &mut self.probation_due
                } else {
                    &mut self.dial_due
                };
                queue.insert((at, node));
            }
        }
        for (set, old, new) in [
            (&mut self.burials, old.burial, new.burial),
            (&mut self.expiries, old.expiry, new.expiry),
        ] {
            if old != new {
                if let Some(at) = old {
                    set.remove(&(at, node));
                }
                if let Some(at) = new {
                    set.insert((at, node));
                }
            }
        }
        if old.foreign != new.foreign {
            if let Some(at) = old.foreign {
                self.foreign.remove(&(at, node));
            }
            if let Some(at) = new.foreign {
                self.foreign.insert((at, node));
            }
            if old.foreign.is_some() != new.foreign.is_some() {
                self.foreign_generation = self.foreign_generation.wrapping_add(1);
            }
        }
    }

    /// Puts `node` back in its index places after its entry changed.
    pub(super) fn reindex(&mut self, node: NodeId) {
        let Some(m) = self.table.get(&node) else {
            return;
        };
        let (old, new) = (m.keys, self.keys(node, m));
        if old == new {
            return;
        }
        self.move_keys(node, &old, &new);
        if let Some(m) = self.table.get_mut(&node) {
            m.keys = new;
        }
    }

    pub(super) fn insert_member(&mut self, node: NodeId, mut m: Member) {
        let new = self.keys(node, &m);
        m.keys = new;
        if let Some(old) = self.table.insert(node, m) {
            // Not expected: callers insert only ids the table lacks.
            self.move_keys(node, &old.keys, &Keys::default());
        }
        self.move_keys(node, &Keys::default(), &new);
    }

    pub(super) fn remove_member(&mut self, node: NodeId) -> Option<Member> {
        let m = self.table.remove(&node)?;
        self.move_keys(node, &m.keys, &Keys::default());
        Some(m)
    }

    /// Every index rebuilt from the table equals the one kept: what the tests check after
    /// every step.
    #[cfg(test)]
    pub(crate) fn assert_indexes(&self) {
        let mut fresh = Membership::empty(
            self.config.clone(),
            self.me,
            self.network.clone(),
            self.rules.clone(),
            self.refilled_at,
        );
        for (id, m) in &self.table {
            assert_eq!(m.keys, self.keys(*id, m), "stale index keys of {id}");
            fresh.insert_member(*id, m.clone());
        }
        assert_eq!(fresh.hash, self.hash);
        assert_eq!(fresh.alive, self.alive);
        assert_eq!(fresh.connected, self.connected);
        assert_eq!(fresh.member_dials, self.member_dials);
        assert_eq!(fresh.dial_due, self.dial_due);
        assert_eq!(fresh.probation_due, self.probation_due);
        assert_eq!(fresh.burials, self.burials);
        assert_eq!(fresh.expiries, self.expiries);
        assert_eq!(fresh.foreign, self.foreign);
        assert_eq!(self.failed_addrs.len(), self.failed_order.len());
        assert!(self.failed_addrs.len() <= self.config.max_members);
    }
}
