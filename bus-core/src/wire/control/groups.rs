//! Groups in an [`Interest`](super::Interest): the subscriptions that share an event name's
//! events (one member of a group gets each event) or take them one at a time (an exclusive
//! group), and the name their events travel under.

use serde::{Deserialize, Serialize};

/// Separates an event name from a group name in a [group channel](group_channel). A message
/// name or a group name never contains it.
pub const GROUP_SEPARATOR: char = '\u{1f}';

/// The name a group's events travel under, in `Event` frames and in `Credit` grants:
/// `event`, [`GROUP_SEPARATOR`], `group`. A node sends an event to one member node of each
/// group under this name, besides (under the event's own name) to every node with ungrouped
/// subscriptions: a node with both gets two frames, and delivers each once.
///
/// # Examples
///
/// ```
/// use meshbus_core::wire::control::{group_channel, split_group_channel};
///
/// let channel = group_channel("orders.placed", "billing");
/// assert_eq!(split_group_channel(&channel), Some(("orders.placed", "billing")));
/// assert_eq!(split_group_channel("orders.placed"), None);
/// ```
pub fn group_channel(event: &str, group: &str) -> String {
    let mut channel = String::with_capacity(event.len() + group.len() + 1);
    channel.push_str(event);
    channel.push(GROUP_SEPARATOR);
    channel.push_str(group);
    channel
}

/// The event name and group name of a [group channel](group_channel); `None` for a plain
/// event name.
pub fn split_group_channel(name: &str) -> Option<(&str, &str)> {
    name.split_once(GROUP_SEPARATOR)
}

/// How a group shares its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupKind {
    /// Competing consumers: each event goes to one member, the publisher picks which (the one
    /// with the most room, in turn among equals).
    #[default]
    Shared,
    /// A single active consumer: every event goes to the same member, the oldest (the lowest
    /// [`GroupInterest::since`], then node id) of those a publisher can reach, in publish order;
    /// when it leaves, the next oldest takes over.
    Exclusive,
}

/// A node's membership of one group of one event name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInterest {
    /// The event name.
    pub event: String,
    /// The group's name.
    pub group: String,
    /// How the group shares its events.
    #[serde(default)]
    pub kind: GroupKind,
    /// When the node's oldest member of the group subscribed, in milliseconds since the Unix
    /// epoch on the node's own clock: exclusive groups take the oldest member first, so a
    /// member that joins later does not take the events over from the active one.
    #[serde(default)]
    pub since: u64,
}

impl GroupInterest {
    /// The name the group's events travel under.
    pub fn channel(&self) -> String {
        group_channel(&self.event, &self.group)
    }
}

/// A group a node left: the event name and the group's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupKey {
    /// The event name.
    pub event: String,
    /// The group's name.
    pub group: String,
}
