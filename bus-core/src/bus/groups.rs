//! The groups with members on this node: each event of a group goes to one of its members.
//!
//! A slot's subscriptions are split at each change: those outside any group get every event,
//! and each group's members share theirs. Which member node gets an event is the publisher's
//! choice (`proto::routing::pick_member`); this is the choice among this node's own members,
//! and what this node tells peers of its groups.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use super::registry::SubList;
use crate::error::Error;
use crate::node::credit::EventFlow;
use crate::proto::interest::MAX_NAME_LEN;
use crate::proto::routing::Picker;
use crate::stats::{GroupCounters, GroupTable};
use crate::subscription::{FullPolicy, GroupKind, SubSender, SubscriptionOptions};
use crate::wire::control::{group_channel, GroupInterest, GROUP_SEPARATOR};

mod offer;
mod pick;
mod wait;

pub(crate) use offer::{offer, Here};
pub(crate) use pick::{targets, Picked, Picks, Publisher};

/// One group's members on this node, oldest first.
pub(crate) struct LocalGroup<E> {
    pub(crate) info: GroupInfo,
    pub(crate) members: SubList<E>,
    /// Whose turn it is among members with equal room.
    turn: AtomicUsize,
    /// The turns among member nodes when no peer has members (else the route's are used).
    picker: Picker,
    /// The group's counters, once a publish here needed them.
    counters: OnceLock<Arc<GroupCounters>>,
}

/// What this node says of one of its groups, whatever the event's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupInfo {
    pub(crate) event: &'static str,
    pub(crate) name: Arc<str>,
    /// The name its events travel under.
    pub(crate) channel: Arc<str>,
    /// The oldest member's kind.
    pub(crate) kind: GroupKind,
    /// When the oldest member subscribed.
    pub(crate) since: u64,
    /// The room a peer is granted on the channel.
    pub(crate) flow: EventFlow,
}

impl GroupInfo {
    /// The group as the interest announces it.
    pub(crate) fn interest(&self) -> GroupInterest {
        GroupInterest {
            event: self.event.to_owned(),
            group: self.name.to_string(),
            kind: self.kind,
            since: self.since,
        }
    }
}

/// Splits `all` (in subscription order) into the subscriptions outside any group and the
/// groups, each with its members oldest first.
pub(crate) fn split<E>(event: &'static str, all: &SubList<E>) -> (SubList<E>, Vec<LocalGroup<E>>) {
    let mut ungrouped = Vec::new();
    let mut groups: Vec<LocalGroup<E>> = Vec::new();
    for sub in all {
        let Some((name, kind)) = sub.group() else {
            ungrouped.push(Arc::clone(sub));
            continue;
        };
        match groups.iter_mut().find(|g| g.info.name == *name) {
            Some(group) => group.members.push(Arc::clone(sub)),
            None => groups.push(LocalGroup {
                info: GroupInfo {
                    event,
                    name: Arc::clone(name),
                    channel: Arc::from(group_channel(event, name)),
                    kind: *kind,
                    since: sub.since(),
                    flow: EventFlow {
                        window: 1,
                        wait: true,
                    },
                },
                members: vec![Arc::clone(sub)],
                turn: AtomicUsize::new(0),
                picker: Picker::default(),
                counters: OnceLock::new(),
            }),
        }
    }
    for group in &mut groups {
        group.members.sort_by_key(|m| (m.since(), m.id()));
        if let Some(oldest) = group.members.first() {
            group.info.since = oldest.since();
        }
        group.info.flow = group_flow(group.info.kind, &group.members);
    }
    (ungrouped, groups)
}

/// The room a peer is granted on a group's channel: what the members that take its events can
/// queue (all of a shared group's, the active one's of an exclusive group); the publisher waits
/// when it is spent if any member waits when full.
fn group_flow<E>(kind: GroupKind, members: &SubList<E>) -> EventFlow {
    let takers = match kind {
        GroupKind::Shared => members.as_slice(),
        GroupKind::Exclusive => &members[..members.len().min(1)],
    };
    let window: usize = takers.iter().map(|m| m.capacity()).sum();
    EventFlow {
        window: u32::try_from(window.max(1)).unwrap_or(u32::MAX),
        wait: members.iter().any(|m| m.policy() == FullPolicy::Wait),
    }
}

impl<E> LocalGroup<E> {
    /// The group's counters in `table`.
    pub(crate) fn counters(&self, table: &GroupTable) -> Arc<GroupCounters> {
        Arc::clone(
            self.counters
                .get_or_init(|| table.of(self.info.event, &self.info.name)),
        )
    }

    /// The member that takes the next events: an exclusive group's oldest; in a shared group,
    /// the one with the most room in its queue, in turn among equals.
    /// (A member whose receiving end went, and which the next table leaves out, is passed
    /// over at once.)
    pub(crate) fn pick(&self) -> Option<&Arc<SubSender<E>>> {
        let mut open = self.members.iter().filter(|m| !m.is_closed());
        if self.info.kind == GroupKind::Exclusive {
            return open.next();
        }
        let room = |m: &Arc<SubSender<E>>| m.capacity().saturating_sub(m.queued());
        let most = open.clone().map(room).max()?;
        let tied = open.filter(|m| room(m) == most);
        let ties = tied.clone().count().max(1);
        let turn = self.turn.fetch_add(1, Ordering::Relaxed) % ties;
        tied.clone().nth(turn).or_else(|| tied.clone().next())
    }

    /// How many more events the group's members here have room for: what a publisher on this
    /// node weighs against the room of member nodes elsewhere.
    pub(crate) fn room(&self) -> u64 {
        let room = |m: &Arc<SubSender<E>>| m.capacity().saturating_sub(m.queued());
        let room = match self.info.kind {
            GroupKind::Exclusive => self.members.first().map_or(0, room),
            GroupKind::Shared => self.members.iter().map(room).max().unwrap_or(0),
        };
        u64::try_from(room).unwrap_or(u64::MAX)
    }
}

/// Refuses a subscription to `event` whose group could not travel: an empty group name, or one
/// with a control character (a group channel's separator among them), or one too long to make
/// a channel with the event's name; and an event name with the separator in it.
pub(crate) fn check(event: &str, options: &SubscriptionOptions) -> Result<(), Error> {
    let refuse = |why: String| Err(Error::config(why).with_message_name(event.to_owned()));
    if event.contains(GROUP_SEPARATOR) {
        return refuse(format!(
            "event name `{}` holds U+001F, which separates an event from a group on the wire",
            event.escape_debug()
        ));
    }
    let Some(group) = &options.group else {
        return Ok(());
    };
    if group.is_empty() || group.chars().any(char::is_control) {
        return refuse(format!(
            "group name `{}` is empty or holds a control character",
            group.escape_debug()
        ));
    }
    if event.len() + 1 + group.len() > MAX_NAME_LEN {
        return refuse(format!(
            "group name `{group}` is too long: with the event's name it must fit in {} bytes",
            MAX_NAME_LEN - 1
        ));
    }
    Ok(())
}
