//! The routing snapshot: which peers handle a command or subscribe to an event.

use std::sync::{Arc, OnceLock};

use rustc_hash::FxHashMap;

use super::credit::Credit;
use super::PeerHandle;
use crate::proto::routing::{Candidate, Member, Picker};
use crate::stats::{GroupCounters, GroupTable};
use crate::wire::control::GroupKind;

/// Rebuilt by the actor whenever a peer or its interest changes, and swapped in as a whole, so
/// senders read it without a lock.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    /// Every connected peer, whatever it handles.
    pub(crate) peers: Vec<Arc<PeerHandle>>,
    pub(crate) commands: FxHashMap<String, CommandRoute>,
    pub(crate) events: FxHashMap<String, Vec<EventRoute>>,
    /// The groups with members on peers, by event name.
    pub(crate) groups: FxHashMap<String, Vec<GroupRoute>>,
}

/// A group with members on peers: one of them gets each event.
#[derive(Debug)]
pub(crate) struct GroupRoute {
    pub(crate) name: Arc<str>,
    /// The name its events travel under.
    pub(crate) channel: Arc<str>,
    /// As its oldest member node says.
    pub(crate) kind: GroupKind,
    pub(crate) members: Vec<MemberRoute>,
    /// Whose turn it is among members with equal room; kept across snapshots.
    pub(crate) picker: Arc<Picker>,
    /// The group's counters, once a publish needed them (a group nothing is published to
    /// takes no room in the table); kept across snapshots.
    pub(crate) counters: Arc<OnceLock<Arc<GroupCounters>>>,
}

impl GroupRoute {
    /// The group's counters in `table`.
    pub(crate) fn counters(&self, event: &str, table: &GroupTable) -> Arc<GroupCounters> {
        Arc::clone(self.counters.get_or_init(|| table.of(event, &self.name)))
    }
}

/// A peer with members of a group, and the room it granted us on the group's channel.
#[derive(Debug, Clone)]
pub(crate) struct MemberRoute {
    pub(crate) route: EventRoute,
    /// When its oldest member subscribed.
    pub(crate) since: u64,
    /// The group's kind, as this peer says.
    pub(crate) kind: GroupKind,
}

impl Candidate for MemberRoute {
    fn host_id(&self) -> &str {
        self.route.host_id()
    }

    fn cluster(&self) -> &str {
        self.route.cluster()
    }

    fn in_flight(&self) -> usize {
        self.route.in_flight()
    }

    fn is_available(&self) -> bool {
        self.route.is_available()
    }
}

impl Member for MemberRoute {
    fn room(&self) -> u64 {
        self.route.credit.window.available()
    }

    fn seniority(&self) -> (u64, u128) {
        (self.since, self.route.peer.node_id.as_u128())
    }
}

/// A peer that subscribes to an event name, with the room it granted us for that name.
#[derive(Debug, Clone)]
pub(crate) struct EventRoute {
    pub(crate) peer: Arc<PeerHandle>,
    pub(crate) credit: Arc<Credit>,
}

impl Candidate for EventRoute {
    fn host_id(&self) -> &str {
        &self.peer.identity.host_id
    }

    fn cluster(&self) -> &str {
        &self.peer.identity.cluster
    }

    fn in_flight(&self) -> usize {
        self.peer.in_flight()
    }

    fn is_available(&self) -> bool {
        self.peer.is_available()
    }
}

/// The peers that handle one command, and whose turn it is among them (per command, so that
/// interleaving commands does not skew any one command's round robin).
#[derive(Debug, Default)]
pub(crate) struct CommandRoute {
    pub(crate) peers: Vec<Arc<PeerHandle>>,
    /// Shared with the snapshots before and after, so the turns go on across changes.
    pub(crate) picker: Arc<Picker>,
    /// The caller's series of the command, per scope; kept across snapshots like `picker`.
    pub(crate) metrics: Arc<crate::metrics::CommandMetrics>,
}
