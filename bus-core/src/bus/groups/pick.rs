//! A publisher's choice of one member per group: among this node's own members and the member
//! nodes of the routing snapshot, in the publish's scope.

use std::sync::Arc;

use super::LocalGroup;
use crate::id::NodeId;
use crate::node::{GroupRoute, MemberRoute};
use crate::proto::routing::{member_in_scope, pick_member, Candidate, Here, Member, MemberPick};
use crate::scope::Scope;
use crate::stats::{GroupCounters, GroupTable};
use crate::subscription::SubSender;
use crate::wire::control::GroupKind;

/// Where one group's copy of an event goes.
pub(crate) enum Target<'a, E> {
    /// A member here (the one picked), of this node's members of the group.
    Here(&'a Arc<SubSender<E>>, &'a LocalGroup<E>),
    /// A member node elsewhere, and the group's channel.
    Peer(&'a MemberRoute, &'a Arc<str>),
}

/// One group's pick for an event.
pub(crate) struct Picked<'a, E> {
    /// Where it goes (without room there when every member in scope was full).
    pub(crate) target: Target<'a, E>,
    /// When every member of a shared group in scope was full: the other members in scope,
    /// whichever of them has room first may take the event instead.
    pub(crate) others: Vec<Target<'a, E>>,
    /// How the group shares its events (an exclusive group waits for its active member only).
    pub(crate) kind: GroupKind,
    pub(crate) counters: Arc<GroupCounters>,
}

/// Each group's pick for one publish: inline for the usual one or two groups, so that a
/// publish allocates nothing for them.
pub(crate) type Picks<'a, E> = smallvec::SmallVec<[Picked<'a, E>; 2]>;

/// Who is publishing: this node, as a member of its own groups.
#[derive(Clone, Copy)]
pub(crate) struct Publisher<'a> {
    pub(crate) here: Here<'a>,
    pub(crate) node_id: NodeId,
    pub(crate) scope: Scope,
}

/// A member of a group as the pick sees it: this node, or a member node elsewhere.
enum Cand<'a, E> {
    Here(&'a LocalGroup<E>, Publisher<'a>),
    Peer(&'a MemberRoute),
}

impl<E> Candidate for Cand<'_, E> {
    fn host_id(&self) -> &str {
        match self {
            Cand::Here(_, p) => p.here.host_id,
            Cand::Peer(m) => m.host_id(),
        }
    }

    fn cluster(&self) -> &str {
        match self {
            Cand::Here(_, p) => p.here.cluster,
            Cand::Peer(m) => m.cluster(),
        }
    }

    fn in_flight(&self) -> usize {
        0
    }

    fn is_available(&self) -> bool {
        match self {
            Cand::Here(..) => true,
            Cand::Peer(m) => m.is_available(),
        }
    }
}

impl<E> Member for Cand<'_, E> {
    fn room(&self) -> u64 {
        match self {
            Cand::Here(g, _) => g.room(),
            Cand::Peer(m) => m.room(),
        }
    }

    fn seniority(&self) -> (u64, u128) {
        match self {
            Cand::Here(g, p) => (g.info.since, p.node_id.as_u128()),
            Cand::Peer(m) => m.seniority(),
        }
    }

    fn is_here(&self) -> bool {
        matches!(self, Cand::Here(..))
    }
}

/// One member per group of the event, for a publish by `publisher`: the groups with members
/// here (`local`) and on peers (`remote`). A group with no member in scope counts it and gets
/// nothing.
pub(crate) fn targets<'a, E>(
    event: &str,
    publisher: Publisher<'a>,
    local: &'a [LocalGroup<E>],
    remote: &'a [GroupRoute],
    table: &GroupTable,
) -> Picks<'a, E> {
    let mut out = Picks::new();
    let remote_only = remote
        .iter()
        .filter(|r| !local.iter().any(|l| l.info.name == r.name));
    for group in local {
        let counters = group.counters(table);
        let route = remote.iter().find(|r| r.name == group.info.name);
        // The peers' kind rules when their oldest member is older than ours.
        let cands: smallvec::SmallVec<[Cand<'a, E>; 4]> =
            std::iter::once(Cand::Here(group, publisher))
                .chain(
                    route
                        .into_iter()
                        .flat_map(|r| r.members.iter().map(Cand::Peer)),
                )
                .collect();
        let oldest = cands.iter().min_by_key(|c| c.seniority());
        let kind = match (oldest, route) {
            (Some(Cand::Peer(m)), _) => m.kind,
            _ => group.info.kind,
        };
        let picker = route.map_or(&group.picker, |r| &*r.picker);
        let pick = pick_member(picker, &cands, publisher.here, publisher.scope, kind);
        let target = |c: &Cand<'a, E>| match *c {
            Cand::Here(g, _) => g.pick().map(|m| Target::Here(m, g)),
            Cand::Peer(m) => route.map(|r| Target::Peer(m, &r.channel)),
        };
        out.extend(picked(pick, &cands, publisher, kind, target, counters));
    }
    for route in remote_only {
        let counters = route.counters(event, table);
        let pick = pick_member(
            &route.picker,
            &route.members,
            publisher.here,
            publisher.scope,
            route.kind,
        );
        let target = |m: &'a MemberRoute| Some(Target::Peer(m, &route.channel));
        out.extend(picked(
            pick,
            &route.members,
            publisher,
            route.kind,
            target,
            counters,
        ));
    }
    out
}

/// What one group's pick comes to, counted: nothing (no member in scope), the member with
/// room (counting a full one passed over), or, when every member in scope is full, the one
/// picked and (in a shared group) the others in scope, any of which may be waited for.
fn picked<'a, 'm, C: Member, E>(
    pick: MemberPick<'m, C>,
    members: &'m [C],
    publisher: Publisher<'_>,
    kind: GroupKind,
    target: impl Fn(&'m C) -> Option<Target<'a, E>>,
    counters: Arc<GroupCounters>,
) -> Option<Picked<'a, E>> {
    let (c, others) = match pick {
        MemberPick::Nobody => {
            counters.no_member.bump();
            return None;
        }
        MemberPick::Room(c) => {
            if kind == GroupKind::Shared && in_scope(members, publisher).any(|m| m.room() == 0) {
                counters.passed_over.bump();
            }
            (c, Vec::new())
        }
        MemberPick::Full(c) if kind == GroupKind::Shared => {
            let others = in_scope(members, publisher)
                .filter(|m| !std::ptr::eq(*m, c))
                .filter_map(&target)
                .collect();
            (c, others)
        }
        MemberPick::Full(c) => (c, Vec::new()),
    };
    Some(Picked {
        target: target(c)?,
        others,
        kind,
        counters,
    })
}

/// The members in scope of a publish.
fn in_scope<'a, 'p, C: Member>(
    members: &'a [C],
    publisher: Publisher<'p>,
) -> impl Iterator<Item = &'a C> + use<'a, 'p, C> {
    members
        .iter()
        .filter(move |m| member_in_scope(*m, publisher.here, publisher.scope))
}
