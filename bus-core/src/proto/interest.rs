//! Interest: which commands a node handles and which events it subscribes to.
//!
//! A node sends each peer a snapshot when they connect, then numbered deltas as its handlers and
//! subscriptions change. A receiver that sees a gap in the numbers keeps what it has and asks for
//! a fresh snapshot ([`InterestRequest`]), once; deltas it has already applied are ignored.
//!
//! A snapshot is always authoritative: it comes on a new connection, or in answer to our own
//! request, on one ordered link, and a restarted peer numbers its interest from 0 again.
//! What a peer can make us hold is bounded: [`MAX_NAMES`] names of each kind, of at most
//! [`MAX_NAME_LEN`] bytes each. Names beyond those bounds are ignored, and the link is kept: we
//! route to the peer what it handles within them. (A later version, or a very large
//! application, may announce more; a node of this one still works with it, on what it holds.)

use std::collections::{BTreeMap, BTreeSet};

use crate::wire::control::{GroupInterest, GroupKey, Interest, InterestRequest, GROUP_SEPARATOR};

/// The most command names, and the most event names, one peer's interest may hold: the limit
/// the wire's [`Interest`] decoder keeps to.
pub use crate::wire::control::MAX_NAMES;

/// The longest message name accepted in an interest, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// This node's own interest, and the deltas that tell peers about changes.
///
/// Event subscriptions are counted: a second subscription to the same event name changes
/// nothing on the wire, and only the last unsubscription sends a delta.
///
/// # Examples
///
/// ```
/// use meshbus_core::proto::interest::{LocalInterest, RemoteInterest, Applied};
///
/// let mut local = LocalInterest::new();
/// local.add_command("orders.place");
/// let mut remote = RemoteInterest::new();
/// assert_eq!(remote.apply(&local.snapshot()), Applied::Changed);
/// let delta = local.subscribe("orders.placed").expect("a new subscription is news");
/// assert_eq!(remote.apply(&delta), Applied::Changed);
/// assert!(remote.handles("orders.place") && remote.subscribes("orders.placed"));
/// ```
#[derive(Debug, Default, Clone)]
pub struct LocalInterest {
    seq: u64,
    commands: BTreeSet<String>,
    events: BTreeMap<String, usize>,
    groups: BTreeMap<(String, String), GroupInterest>,
}

/// The key of a group in the interest maps: (event name, group name).
fn group_key(g: &GroupInterest) -> (String, String) {
    (g.event.clone(), g.group.clone())
}

impl LocalInterest {
    /// No commands, no subscriptions, sequence 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Everything, to send on connect or on an [`InterestRequest`].
    pub fn snapshot(&self) -> Interest {
        Interest {
            seq: self.seq,
            snapshot: true,
            commands_added: self.commands.iter().cloned().collect(),
            commands_removed: Vec::new(),
            events_added: self.events.keys().cloned().collect(),
            events_removed: Vec::new(),
            groups_added: self.groups.values().cloned().collect(),
            groups_removed: Vec::new(),
        }
    }

    /// Joins a group, or changes what we said of it (its kind, its `since`); the delta to
    /// send, if this is news.
    pub fn join_group(&mut self, group: GroupInterest) -> Option<Interest> {
        let key = group_key(&group);
        if self.groups.get(&key) == Some(&group) {
            return None;
        }
        self.groups.insert(key, group.clone());
        Some(self.delta(|d| d.groups_added.push(group)))
    }

    /// Leaves the group `group` of event `event`; the delta to send, if this is news.
    pub fn leave_group(&mut self, event: &str, group: &str) -> Option<Interest> {
        self.groups.remove(&(event.to_owned(), group.to_owned()))?;
        Some(self.delta(|d| {
            d.groups_removed.push(GroupKey {
                event: event.to_owned(),
                group: group.to_owned(),
            })
        }))
    }

    /// Starts handling `name`; the delta to send, if this is news.
    pub fn add_command(&mut self, name: &str) -> Option<Interest> {
        if !self.commands.insert(name.to_owned()) {
            return None;
        }
        Some(self.delta(|d| d.commands_added.push(name.to_owned())))
    }

    /// Stops handling `name`; the delta to send, if this is news.
    pub fn remove_command(&mut self, name: &str) -> Option<Interest> {
        if !self.commands.remove(name) {
            return None;
        }
        Some(self.delta(|d| d.commands_removed.push(name.to_owned())))
    }

    /// One more subscription to event `name`; a delta only for the first.
    pub fn subscribe(&mut self, name: &str) -> Option<Interest> {
        let count = self.events.entry(name.to_owned()).or_insert(0);
        *count += 1;
        (*count == 1).then(|| self.delta(|d| d.events_added.push(name.to_owned())))
    }

    /// One subscription to event `name` fewer; a delta only for the last.
    pub fn unsubscribe(&mut self, name: &str) -> Option<Interest> {
        let count = self.events.get_mut(name)?;
        *count -= 1;
        if *count > 0 {
            return None;
        }
        self.events.remove(name);
        Some(self.delta(|d| d.events_removed.push(name.to_owned())))
    }

    fn delta(&mut self, fill: impl FnOnce(&mut Interest)) -> Interest {
        self.seq += 1;
        let mut delta = Interest {
            seq: self.seq,
            snapshot: false,
            ..Interest::default()
        };
        fill(&mut delta);
        delta
    }
}

/// What applying an [`Interest`] message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The peer's interest changed.
    Changed,
    /// The message was valid but changed nothing (a repeated snapshot, say).
    Unchanged,
    /// A delta already applied, or older than the snapshot we have: ignored.
    Stale,
    /// A delta after a gap (or before any snapshot): ignored; send the returned
    /// [`RemoteInterest::snapshot_request`] and keep routing on what we have.
    Gap {
        /// The sequence number we expected.
        expected: u64,
        /// The one that came.
        got: u64,
    },
    /// A delta while a snapshot we asked for is on its way: ignored, and no new request.
    AwaitingSnapshot,
    /// Applied as far as the bounds allow: names over [`MAX_NAME_LEN`] bytes, and names that
    /// would take the peer's interest over [`MAX_NAMES`], were ignored.
    Truncated {
        /// Whether what was applied changed the peer's interest (and so the routes).
        changed: bool,
    },
}

/// What we know of one peer's interest.
///
/// Keep one per connection: a new connection starts with a new snapshot.
#[derive(Debug, Default, Clone)]
pub struct RemoteInterest {
    seq: Option<u64>,
    awaiting_snapshot: bool,
    commands: BTreeSet<String>,
    events: BTreeSet<String>,
    groups: BTreeMap<(String, String), GroupInterest>,
}

impl RemoteInterest {
    /// Nothing known yet: the peer handles nothing until its snapshot arrives.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last sequence number applied, if a snapshot has arrived.
    pub fn seq(&self) -> Option<u64> {
        self.seq
    }

    /// Applies a snapshot or a delta. Names beyond the bounds are ignored
    /// ([`Applied::Truncated`]); the rest is applied.
    pub fn apply(&mut self, msg: &Interest) -> Applied {
        let mut truncated = false;
        if msg.snapshot {
            self.awaiting_snapshot = false;
            let commands = bounded(&msg.commands_added, &mut truncated);
            let events = bounded(&msg.events_added, &mut truncated);
            let mut groups = BTreeMap::new();
            for group in &msg.groups_added {
                insert_group(&mut groups, group, &mut truncated);
            }
            let changed =
                commands != self.commands || events != self.events || groups != self.groups;
            self.commands = commands;
            self.events = events;
            self.groups = groups;
            self.seq = Some(msg.seq);
            return outcome(changed, truncated);
        }
        let expected = self.seq.map_or(0, |s| s.saturating_add(1));
        match self.seq {
            Some(seq) if msg.seq <= seq => return Applied::Stale,
            Some(_) if msg.seq == expected && !self.awaiting_snapshot => {}
            _ if self.awaiting_snapshot => return Applied::AwaitingSnapshot,
            _ => {
                self.awaiting_snapshot = true;
                return Applied::Gap {
                    expected,
                    got: msg.seq,
                };
            }
        }
        let mut changed = false;
        // Removals first: they make room for what the same delta adds.
        for name in &msg.commands_removed {
            changed |= self.commands.remove(name);
        }
        for name in &msg.events_removed {
            changed |= self.events.remove(name);
        }
        for key in &msg.groups_removed {
            changed |= self
                .groups
                .remove(&(key.event.clone(), key.group.clone()))
                .is_some();
        }
        for name in &msg.commands_added {
            changed |= insert_bounded(&mut self.commands, name, &mut truncated);
        }
        for name in &msg.events_added {
            changed |= insert_bounded(&mut self.events, name, &mut truncated);
        }
        for group in &msg.groups_added {
            changed |= insert_group(&mut self.groups, group, &mut truncated);
        }
        self.seq = Some(msg.seq);
        outcome(changed, truncated)
    }

    /// The request to send after a [`Applied::Gap`].
    pub fn snapshot_request(&self) -> InterestRequest {
        InterestRequest { have_seq: self.seq }
    }

    /// Whether the peer handles command `name`.
    pub fn handles(&self, name: &str) -> bool {
        self.commands.contains(name)
    }

    /// Whether the peer subscribes to event `name`.
    pub fn subscribes(&self, name: &str) -> bool {
        self.events.contains(name)
    }

    /// The command names the peer handles.
    pub fn commands(&self) -> impl Iterator<Item = &str> {
        self.commands.iter().map(String::as_str)
    }

    /// The event names the peer subscribes to.
    pub fn events(&self) -> impl Iterator<Item = &str> {
        self.events.iter().map(String::as_str)
    }

    /// The groups the peer has members in.
    pub fn groups(&self) -> impl Iterator<Item = &GroupInterest> {
        self.groups.values()
    }
}

/// Adds or updates `group` if it is within the bounds (names no longer than
/// [`MAX_NAME_LEN`] together, without the separator of a group channel; at most [`MAX_NAMES`]
/// groups); whether the map changed.
fn insert_group(
    groups: &mut BTreeMap<(String, String), GroupInterest>,
    group: &GroupInterest,
    truncated: &mut bool,
) -> bool {
    let key = group_key(group);
    let malformed = group.event.len() + group.group.len() + 1 > MAX_NAME_LEN
        || group.event.contains(GROUP_SEPARATOR)
        || group.group.contains(GROUP_SEPARATOR);
    if malformed || (groups.len() >= MAX_NAMES && !groups.contains_key(&key)) {
        *truncated = true;
        return false;
    }
    groups.insert(key, group.clone()).as_ref() != Some(group)
}

/// The names of a snapshot within the bounds; sets `truncated` if any were left out.
fn bounded(names: &[String], truncated: &mut bool) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for name in names {
        insert_bounded(&mut set, name, truncated);
    }
    set
}

/// Adds `name` if it is within the bounds; whether the set changed.
fn insert_bounded(set: &mut BTreeSet<String>, name: &str, truncated: &mut bool) -> bool {
    if name.len() > MAX_NAME_LEN || (set.len() >= MAX_NAMES && !set.contains(name)) {
        *truncated = true;
        return false;
    }
    set.insert(name.to_owned())
}

fn outcome(changed: bool, truncated: bool) -> Applied {
    match (changed, truncated) {
        (changed, true) => Applied::Truncated { changed },
        (true, false) => Applied::Changed,
        (false, false) => Applied::Unchanged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::control::ControlMessage;
    use crate::wire::frame::FrameCodec;
    use bytes::BytesMut;

    /// Sends `msg` through the real codec, as a peer would receive it.
    fn over_the_wire(msg: &Interest) -> Interest {
        let codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        codec.encode(&msg.to_frame().unwrap(), &mut buf).unwrap();
        let frame = codec.decode(&mut buf).unwrap().unwrap();
        Interest::from_frame(&frame).unwrap()
    }

    #[test]
    fn snapshot_then_deltas_track_the_peer() {
        let mut local = LocalInterest::new();
        local.add_command("a");
        local.subscribe("e");
        let mut remote = RemoteInterest::new();
        assert_eq!(
            remote.apply(&over_the_wire(&local.snapshot())),
            Applied::Changed
        );
        assert!(remote.handles("a") && remote.subscribes("e"));

        let d1 = local.add_command("b").unwrap();
        let d2 = local.remove_command("a").unwrap();
        let d3 = local.unsubscribe("e").unwrap();
        for d in [&d1, &d2, &d3] {
            assert_eq!(remote.apply(&over_the_wire(d)), Applied::Changed);
        }
        assert!(!remote.handles("a") && remote.handles("b") && !remote.subscribes("e"));
        assert_eq!(remote.seq(), Some(local.seq()));
    }

    #[test]
    fn an_interest_gap_asks_for_a_snapshot() {
        let mut local = LocalInterest::new();
        let mut remote = RemoteInterest::new();
        remote.apply(&local.snapshot());
        let d1 = local.add_command("a").unwrap();
        let _lost = local.add_command("b").unwrap();
        let d3 = local.add_command("c").unwrap();
        assert_eq!(remote.apply(&d1), Applied::Changed);
        // d2 never arrives: d3 is a gap and is not applied.
        assert_eq!(
            remote.apply(&d3),
            Applied::Gap {
                expected: 2,
                got: 3
            }
        );
        assert!(!remote.handles("c"));
        assert_eq!(remote.snapshot_request().have_seq, Some(1));
        // The snapshot the request brings repairs everything.
        assert_eq!(remote.apply(&local.snapshot()), Applied::Changed);
        assert!(remote.handles("a") && remote.handles("b") && remote.handles("c"));
        // The late d3 is now stale.
        assert_eq!(remote.apply(&d3), Applied::Stale);
    }

    #[test]
    fn a_delta_before_any_snapshot_is_a_gap() {
        let mut local = LocalInterest::new();
        let d = local.add_command("a").unwrap();
        let mut remote = RemoteInterest::new();
        assert!(matches!(remote.apply(&d), Applied::Gap { .. }));
        assert!(!remote.handles("a"));
        assert_eq!(remote.snapshot_request().have_seq, None);
    }

    #[test]
    fn repeated_and_older_messages_are_ignored() {
        let mut local = LocalInterest::new();
        let mut remote = RemoteInterest::new();
        let d1 = local.add_command("a").unwrap();
        let snap = local.snapshot();
        assert_eq!(remote.apply(&snap), Applied::Changed);
        assert_eq!(remote.apply(&snap), Applied::Unchanged);
        assert_eq!(remote.apply(&d1), Applied::Stale);
        assert!(remote.handles("a"));
    }

    #[test]
    fn a_restarted_peer_s_snapshot_replaces_what_we_knew() {
        let mut old_run = LocalInterest::new();
        for i in 0..5 {
            old_run.add_command(&format!("c{i}"));
        }
        let mut remote = RemoteInterest::new();
        remote.apply(&old_run.snapshot());
        // The peer restarts; its numbers start again at 0.
        let mut new_run = LocalInterest::new();
        new_run.add_command("fresh");
        assert_eq!(remote.apply(&new_run.snapshot()), Applied::Changed);
        assert!(remote.handles("fresh"));
        assert!(!remote.handles("c0"));
    }

    #[test]
    fn one_lost_delta_asks_for_one_snapshot() {
        let mut local = LocalInterest::new();
        let mut remote = RemoteInterest::new();
        remote.apply(&local.snapshot());
        let _lost = local.add_command("a");
        let mut gaps = 0;
        for i in 0..50 {
            let d = local.add_command(&format!("x{i}")).unwrap();
            match remote.apply(&d) {
                Applied::Gap { .. } => gaps += 1,
                other => assert_eq!(other, Applied::AwaitingSnapshot),
            }
        }
        assert_eq!(gaps, 1);
        // The snapshot ends the wait; deltas apply again after it.
        assert_eq!(remote.apply(&local.snapshot()), Applied::Changed);
        let d = local.add_command("after").unwrap();
        assert_eq!(remote.apply(&d), Applied::Changed);
    }

    #[test]
    fn a_peer_cannot_make_us_hold_unbounded_interest() {
        let mut remote = RemoteInterest::new();
        remote.apply(&Interest {
            seq: 0,
            snapshot: true,
            ..Interest::default()
        });
        let mut truncated = 0;
        let last = MAX_NAMES as u64 + 10;
        for seq in 1..=last {
            let d = Interest {
                seq,
                snapshot: false,
                events_added: vec![format!("junk-{seq}")],
                ..Interest::default()
            };
            match remote.apply(&d) {
                Applied::Changed => {}
                Applied::Truncated { .. } => truncated += 1,
                other => panic!("delta {seq}: {other:?}"),
            }
        }
        // Every delta was taken in order (none is a gap); the ones past the bound added nothing.
        assert_eq!(truncated, 10);
        assert_eq!(remote.seq(), Some(last));
        assert_eq!(remote.events().count(), MAX_NAMES);
        // A removal makes room for a later addition, in the same delta too.
        let d = Interest {
            seq: last + 1,
            snapshot: false,
            events_removed: vec!["junk-1".into()],
            events_added: vec!["wanted".into()],
            ..Interest::default()
        };
        assert_eq!(remote.apply(&d), Applied::Changed);
        assert!(remote.subscribes("wanted") && !remote.subscribes("junk-1"));

        // A snapshot with a name too long keeps the others.
        let long = Interest {
            seq: 0,
            snapshot: true,
            commands_added: vec!["x".repeat(MAX_NAME_LEN + 1), "ok".into()],
            ..Interest::default()
        };
        let mut remote = RemoteInterest::new();
        assert_eq!(remote.apply(&long), Applied::Truncated { changed: true });
        assert_eq!(remote.commands().collect::<Vec<_>>(), ["ok"]);
        let many = Interest {
            seq: 0,
            snapshot: true,
            commands_added: (0..=MAX_NAMES).map(|i| format!("{i:06}")).collect(),
            ..Interest::default()
        };
        assert_eq!(remote.apply(&many), Applied::Truncated { changed: true });
        assert_eq!(remote.commands().count(), MAX_NAMES);
        assert!(remote.handles("000000") && !remote.handles(&format!("{MAX_NAMES:06}")));
    }

    #[test]
    fn subscriptions_are_counted() {
        let mut local = LocalInterest::new();
        assert!(local.subscribe("e").is_some());
        assert!(
            local.subscribe("e").is_none(),
            "a second subscriber is no news"
        );
        assert!(local.unsubscribe("e").is_none(), "one subscriber is left");
        assert!(local.unsubscribe("e").is_some());
        assert!(local.unsubscribe("e").is_none(), "nothing left to remove");
        assert!(local.add_command("c").is_some());
        assert!(local.add_command("c").is_none());
        assert_eq!(local.seq(), 3);
    }

    fn group(event: &str, name: &str, since: u64) -> GroupInterest {
        GroupInterest {
            event: event.into(),
            group: name.into(),
            kind: crate::wire::control::GroupKind::Shared,
            since,
        }
    }

    #[test]
    fn groups_travel_in_snapshots_and_deltas() {
        let mut local = LocalInterest::new();
        assert!(local.join_group(group("e", "billing", 5)).is_some());
        // Said again, no news; a new `since` is.
        assert!(local.join_group(group("e", "billing", 5)).is_none());
        let mut remote = RemoteInterest::new();
        assert_eq!(
            remote.apply(&over_the_wire(&local.snapshot())),
            Applied::Changed
        );
        assert_eq!(
            remote.groups().cloned().collect::<Vec<_>>(),
            [group("e", "billing", 5)]
        );
        let d1 = local.join_group(group("e", "billing", 9)).unwrap();
        let d2 = local.join_group(group("e", "audit", 1)).unwrap();
        let d3 = local.leave_group("e", "billing").unwrap();
        assert!(local.leave_group("e", "billing").is_none());
        for d in [&d1, &d2, &d3] {
            assert_eq!(remote.apply(&over_the_wire(d)), Applied::Changed);
        }
        assert_eq!(
            remote.groups().cloned().collect::<Vec<_>>(),
            [group("e", "audit", 1)]
        );
        // A snapshot says everything: what it leaves out is gone.
        let mut other = LocalInterest::new();
        other.subscribe("e");
        remote.apply(&over_the_wire(&other.snapshot()));
        assert_eq!(remote.groups().count(), 0);
    }

    #[test]
    fn a_group_whose_names_could_not_make_a_channel_is_ignored() {
        let mut remote = RemoteInterest::new();
        let msg = Interest {
            snapshot: true,
            groups_added: vec![
                group("e\u{1f}x", "g", 0),
                group("e", "g\u{1f}y", 0),
                group(&"n".repeat(MAX_NAME_LEN), "g", 0),
                group("e", "ok", 0),
            ],
            ..Interest::default()
        };
        assert_eq!(
            remote.apply(&over_the_wire(&msg)),
            Applied::Truncated { changed: true }
        );
        assert_eq!(
            remote
                .groups()
                .map(|g| g.group.as_str())
                .collect::<Vec<_>>(),
            ["ok"]
        );
    }
}
