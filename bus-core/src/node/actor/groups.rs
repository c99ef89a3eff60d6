//! The actor's side of groups: the routes to peers' group members, and what was in flight to
//! a member node that went away.

use std::sync::Arc;

use super::{Actor, PeerEntry};
use crate::node::routes::{EventRoute, GroupRoute, MemberRoute, Routes};
use crate::proto::routing::Member;
use crate::wire::control::split_group_channel;

impl Actor {
    /// Adds `p`'s groups to `routes`, each with the room `p` granted us on its channel.
    pub(super) fn group_routes(&self, p: &PeerEntry, previous: &Routes, routes: &mut Routes) {
        for group in p.interest.groups() {
            let channel = group.channel();
            // A channel the peer may not make us hold more of has no room, and no route.
            let Some(credit) = p.handle.credit.sending(&channel) else {
                continue;
            };
            let member = MemberRoute {
                route: EventRoute {
                    peer: Arc::clone(&p.handle),
                    credit,
                },
                since: group.since,
                kind: group.kind,
            };
            let list = routes.groups.entry(group.event.clone()).or_default();
            match list.iter_mut().find(|g| *g.name == *group.group) {
                Some(route) => route.members.push(member),
                None => {
                    let before = previous
                        .groups
                        .get(&group.event)
                        .and_then(|l| l.iter().find(|g| *g.name == *group.group));
                    list.push(GroupRoute {
                        name: Arc::from(group.group.as_str()),
                        channel: Arc::from(channel),
                        kind: group.kind,
                        members: vec![member],
                        picker: before.map(|g| Arc::clone(&g.picker)).unwrap_or_default(),
                        counters: before.map(|g| Arc::clone(&g.counters)).unwrap_or_default(),
                    });
                }
            }
        }
    }

    /// `entry`'s peer went away: the events we sent its group members that it had not given
    /// room back for may be lost; each group counts them.
    pub(super) fn count_lost_in_flight(&self, entry: &PeerEntry) {
        for credit in entry.handle.credit.all_sending() {
            let Some((event, group)) = split_group_channel(&credit.name) else {
                continue;
            };
            let lost = credit.unconfirmed();
            if lost > 0 {
                let counters = self.node.counters.groups.of(event, group);
                counters.lost_in_flight.add(lost);
            }
        }
    }
}

/// Each group takes the kind its oldest member node says, and lists its members oldest first
/// (an exclusive group's order).
pub(super) fn settle(routes: &mut Routes) {
    for group in routes.groups.values_mut().flatten() {
        group.members.sort_by_key(Member::seniority);
        if let Some(oldest) = group.members.first() {
            group.kind = oldest.kind;
        }
    }
}
