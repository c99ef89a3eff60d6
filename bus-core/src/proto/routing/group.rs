//! Which member of a group gets an event.
//!
//! The publisher decides, from what it already knows, without asking anyone: a shared group's
//! events go to its member nodes in turn, a [run](RUN) at a time, passing over those without
//! room for one (what that
//! node granted us and we have not used), so that members share the work evenly while they
//! keep up and a member whose queue is full gets nothing more until it has room; an exclusive
//! group's events all go to its oldest member, so that every publisher that can reach the same
//! members picks the same one.
//!
//! (Turns rather than the most room: a member node's room as we see it lags behind its queue by
//! up to a quarter of its window, the grant's step, so "most room" would favour this node's own
//! members, whose room is seen at once.)

use super::{Candidate, Here, Picker};
use crate::scope::Scope;
use crate::wire::control::GroupKind;

/// How many events in a row a shared group's member node gets before the next takes its
/// turn: a run of events to one node goes out in one write and is read in one burst there;
/// one event each in turn would halve every batch on the way (each node still gets its share,
/// give or take a run).
pub const RUN: usize = 32;

/// A node with members of a group, as a publisher sees it.
pub trait Member: Candidate {
    /// How many more of the group's events it has room for now.
    fn room(&self) -> u64;
    /// Its place in an exclusive group's order: the lowest goes first. (The member's `since`,
    /// then its node id: the oldest member stays active while younger ones join.)
    fn seniority(&self) -> (u64, u128);
    /// Whether it is this node (in every scope, [`Scope::Local`] included).
    fn is_here(&self) -> bool {
        false
    }
}

/// Whether `m` may get an event published in `scope` from `here`: it is available, and this
/// node or a node in the scope.
pub fn member_in_scope<C: Member>(m: &C, here: Here<'_>, scope: Scope) -> bool {
    m.is_available() && (m.is_here() || here.in_scope(scope, m.host_id(), m.cluster()))
}

/// Which member gets an event.
#[derive(Debug)]
pub enum MemberPick<'c, C> {
    /// This one, which has room.
    Room(&'c C),
    /// None in scope has room: this one is the one to wait for (or to drop for).
    Full(&'c C),
    /// No member is in scope.
    Nobody,
}

/// Picks the member of a group of `kind` that gets the next event published in `scope`.
///
/// # Examples
///
/// ```
/// use meshbus_core::proto::routing::{pick_member, Candidate, Here, Member, MemberPick, Picker};
/// use meshbus_core::wire::control::GroupKind;
/// use meshbus_core::Scope;
///
/// struct Node { id: u128, room: u64, since: u64 }
/// impl Candidate for Node {
///     fn host_id(&self) -> &str { "h" }
///     fn cluster(&self) -> &str { "c" }
///     fn in_flight(&self) -> usize { 0 }
/// }
/// impl Member for Node {
///     fn room(&self) -> u64 { self.room }
///     fn seniority(&self) -> (u64, u128) { (self.since, self.id) }
/// }
///
/// let members = [Node { id: 1, room: 0, since: 10 }, Node { id: 2, room: 8, since: 20 }];
/// let here = Here { host_id: "h", cluster: "c" };
/// let picker = Picker::default();
/// // Shared: the full member is passed over.
/// let MemberPick::Room(m) = pick_member(&picker, &members, here, Scope::Network, GroupKind::Shared)
/// else { panic!() };
/// assert_eq!(m.id, 2);
/// // Exclusive: the oldest, full or not.
/// let MemberPick::Full(m) = pick_member(&picker, &members, here, Scope::Network, GroupKind::Exclusive)
/// else { panic!() };
/// assert_eq!(m.id, 1);
/// ```
pub fn pick_member<'c, C: Member>(
    picker: &Picker,
    members: &'c [C],
    here: Here<'_>,
    scope: Scope,
    kind: GroupKind,
) -> MemberPick<'c, C> {
    let in_scope = |m: &&C| member_in_scope(*m, here, scope);
    let by_room = |m: &'c C| {
        if m.room() > 0 {
            MemberPick::Room(m)
        } else {
            MemberPick::Full(m)
        }
    };
    if kind == GroupKind::Exclusive {
        return members
            .iter()
            .filter(in_scope)
            .min_by_key(|m| m.seniority())
            .map_or(MemberPick::Nobody, by_room);
    }
    // In turn among the members in scope that have room; with none that has room, in turn
    // among all of them (the one to wait for changes from one event to the next as well).
    let with_room = |m: &&C| in_scope(m) && m.room() > 0;
    let (count, pick_full) = match members.iter().filter(with_room).count() {
        0 => (members.iter().filter(in_scope).count(), true),
        n => (n, false),
    };
    if count == 0 {
        return MemberPick::Nobody;
    }
    let turn = (picker.next_turn(scope) / RUN) % count;
    let picked = if pick_full {
        members.iter().filter(in_scope).nth(turn)
    } else {
        members.iter().filter(with_room).nth(turn)
    };
    // Rooms may change under us between the count and the pick: any member in scope will do.
    picked
        .or_else(|| members.iter().find(in_scope))
        .map_or(MemberPick::Nobody, by_room)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    struct Node {
        id: u128,
        cluster: &'static str,
        room: Cell<u64>,
        since: u64,
        here: bool,
    }

    impl Candidate for Node {
        fn host_id(&self) -> &str {
            "h"
        }
        fn cluster(&self) -> &str {
            self.cluster
        }
        fn in_flight(&self) -> usize {
            0
        }
    }

    impl Member for Node {
        fn room(&self) -> u64 {
            self.room.get()
        }
        fn seniority(&self) -> (u64, u128) {
            (self.since, self.id)
        }
        fn is_here(&self) -> bool {
            self.here
        }
    }

    fn node(id: u128, room: u64, since: u64) -> Node {
        Node {
            id,
            cluster: "c",
            room: Cell::new(room),
            since,
            here: false,
        }
    }

    const HERE: Here<'static> = Here {
        host_id: "elsewhere",
        cluster: "c",
    };

    fn picked(pick: MemberPick<'_, Node>) -> Option<(u128, bool)> {
        match pick {
            MemberPick::Room(m) => Some((m.id, true)),
            MemberPick::Full(m) => Some((m.id, false)),
            MemberPick::Nobody => None,
        }
    }

    #[test]
    fn shared_members_with_equal_room_take_turns_a_run_at_a_time() {
        let members = [node(1, 8, 0), node(2, 8, 0), node(3, 8, 0)];
        let picker = Picker::default();
        let mut counts = [0usize; 4];
        let mut order = Vec::new();
        for _ in 0..30 * RUN {
            let pick = pick_member(&picker, &members, HERE, Scope::Network, GroupKind::Shared);
            let id = picked(pick).unwrap().0;
            counts[id as usize] += 1;
            if order.last() != Some(&id) {
                order.push(id);
            }
        }
        assert_eq!(counts, [0, 10 * RUN, 10 * RUN, 10 * RUN]);
        assert_eq!(order.len(), 30, "a run at a time: {order:?}");
    }

    #[test]
    fn a_shared_member_without_room_is_passed_over() {
        // Each event spends a unit of the member's room, as a publish does.
        let members = [node(1, 4, 0), node(2, 2, 0)];
        let picker = Picker::default();
        let mut counts = [0usize; 3];
        for _ in 0..6 {
            let pick = pick_member(&picker, &members, HERE, Scope::Network, GroupKind::Shared);
            let MemberPick::Room(m) = pick else {
                panic!("a member had room")
            };
            m.room.set(m.room.get() - 1);
            counts[m.id as usize] += 1;
        }
        // In turn while both have room, then all to the one that still has.
        assert_eq!(counts, [0, 4, 2]);
        // Every member full: one of them, to wait for.
        let pick = pick_member(&picker, &members, HERE, Scope::Network, GroupKind::Shared);
        assert!(matches!(picked(pick), Some((_, false))));
    }

    #[test]
    fn exclusive_takes_the_oldest_in_scope_whatever_its_room() {
        let mut members = [node(5, 0, 10), node(1, 9, 20), node(2, 9, 10)];
        let picker = Picker::default();
        let pick =
            |m: &[Node], scope| picked(pick_member(&picker, m, HERE, scope, GroupKind::Exclusive));
        // Oldest first, then the lowest node id among the equally old.
        assert_eq!(pick(&members, Scope::Network), Some((2, true)));
        members[2].since = 30;
        assert_eq!(pick(&members, Scope::Network), Some((5, false)));
        // Out of scope members do not count.
        members[0].cluster = "other";
        assert_eq!(pick(&members, Scope::Cluster), Some((1, true)));
        assert_eq!(pick(&members, Scope::Local), None);
    }

    #[test]
    fn this_node_is_a_member_in_every_scope() {
        let mut members = [node(1, 3, 0), node(2, 3, 5)];
        members[1].here = true;
        let picker = Picker::default();
        for kind in [GroupKind::Shared, GroupKind::Exclusive] {
            let pick = pick_member(&picker, &members, HERE, Scope::Local, kind);
            assert_eq!(picked(pick), Some((2, true)));
        }
        assert_eq!(
            picked(pick_member(
                &picker,
                &members[..1],
                HERE,
                Scope::Local,
                GroupKind::Shared
            )),
            None
        );
    }
}
