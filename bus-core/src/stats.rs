//! Counters a program can read to see what the bus dropped or what failed, and which peers
//! read slower than we send.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::id::NodeId;
use crate::metrics::{Count, NodeMetrics};

/// A snapshot of the bus's counters, from [`Bus::stats`](crate::Bus::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusStats {
    /// Events dropped because a subscription's queue was full and its policy is
    /// [`FullPolicy::DropNewest`](crate::FullPolicy::DropNewest).
    pub events_dropped: u64,
    /// Event handler invocations that returned `Err`.
    pub event_handler_errors: u64,
    /// Event handler invocations that panicked.
    pub event_handler_panics: u64,
    /// Command handler invocations that panicked (each became a `HandlerFailed` for its caller).
    pub command_handler_panics: u64,
    /// Events from peers dropped because a subscription's queue was full: a connection never
    /// waits for a subscriber, whatever its policy.
    pub remote_events_dropped: u64,
    /// Events not queued for a peer because its event lane was full and the publisher's policy
    /// drops.
    pub peer_events_dropped: u64,
    /// Events that found a peer's queue full (its byte budget or its event lane), whatever
    /// the policy: with [`FullPolicy::Wait`](crate::FullPolicy::Wait) the publisher waited
    /// for that peer, with `DropNewest` the event was dropped for it. A growing count means a
    /// peer reads slower than we publish; [`Bus::peer_stats`](crate::Bus::peer_stats) says
    /// which.
    pub peer_events_queue_full: u64,
    /// Events from peers dropped unread because their compressed body declared more than
    /// [`BusBuilder::max_decompressed_size`](crate::BusBuilder::max_decompressed_size).
    pub remote_events_too_large: u64,
    /// Live members of the mesh this node knows of, itself not counted (a gauge): at most
    /// the membership's table size.
    pub members: u64,
    /// Dials under way (a gauge): at most the membership's `max_dials_in_flight`.
    pub dials_in_flight: u64,
    /// The most dials that were ever under way at once.
    pub dials_in_flight_peak: u64,
    /// Links that completed their handshake and were kept, since start: a link that drops
    /// and comes back counts again.
    pub links_established: u64,
    /// Inbound handshakes this node refused: a wrong or missing network key, another
    /// network, a static key not allowed, garbage.
    pub handshakes_refused: u64,
    /// Inbound connections closed before their handshake began: too many handshakes under
    /// way, or their host over its handshake rate (which refused handshakes lower).
    pub connections_turned_away: u64,
}

/// What this node has queued for one peer, from [`Bus::peer_stats`](crate::Bus::peer_stats):
/// how an application sees that a peer is slow (its queue stays near its bound, events find
/// it full) and what that cost (events dropped for it).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerStats {
    /// The peer's node id.
    pub node_id: NodeId,
    /// Its name.
    pub name: String,
    /// Bytes of commands and events queued for the peer and not yet written to its link.
    pub queued_bytes: u64,
    /// The bound on `queued_bytes`, from
    /// [`BusBuilder::peer_queue_bytes`](crate::BusBuilder::peer_queue_bytes).
    pub queue_bytes_limit: u64,
    /// Frames queued on the fuller of the peer's command and event lanes: the other bound, in
    /// frames, that may bind before the bytes do.
    pub queued_frames: u64,
    /// The bound on `queued_frames`: each lane's capacity, from
    /// [`BusBuilder::peer_queue_capacity`](crate::BusBuilder::peer_queue_capacity).
    pub queue_frames_limit: u64,
    /// When a frame from the peer last arrived (the connection's start, before any did). A
    /// peer silent for longer than the peer timeout is declared dead.
    pub last_heard: std::time::Instant,
    /// Events that found this peer's queue full: the publisher waited for it
    /// ([`FullPolicy::Wait`](crate::FullPolicy::Wait)) or dropped the event for it
    /// (`DropNewest`).
    pub events_queue_full: u64,
    /// Events dropped for this peer: its queue was full and the policy drops, or the event
    /// was over its frame size limit.
    pub events_dropped: u64,
    /// Per event name the peer subscribes to: what was sent, waited for and dropped, and the
    /// room (credit) its subscriptions grant now. Sorted by name.
    pub events: Vec<PeerEventStats>,
}

/// One event name a peer subscribes to, as its publishers here see it: the publisher's end of
/// that peer's subscriptions. Part of [`PeerStats`].
///
/// The peer grants room (credit) as its subscriptions take events off their queues; a
/// publisher that finds none waits for it when the peer's subscriptions use
/// [`FullPolicy::Wait`](crate::FullPolicy::Wait), and drops the event here, before it is sent,
/// when they all use `DropNewest`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerEventStats {
    /// The event name.
    pub event: String,
    /// Events of this name sent to the peer (queued for its link).
    pub sent: u64,
    /// Publishes that found no room and waited for the peer.
    pub waited: u64,
    /// Events dropped for the peer: no room and its subscriptions drop, or its link's queue
    /// was full.
    pub dropped: u64,
    /// How many more events may be sent now before the peer grants more room.
    pub credit: u64,
    /// What a publisher does when there is no room: what the peer's subscriptions asked for.
    pub when_full: crate::FullPolicy,
}

/// One subscription of this node, from [`Bus::subscription_stats`](crate::Bus::subscription_stats):
/// the subscriber's end of the flow of its events.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionStats {
    /// The event name.
    pub event: &'static str,
    /// The subscription's id, unique in this bus.
    pub id: u64,
    /// Events queued for it, from this node's publishers and from peers.
    pub delivered: u64,
    /// Publishes on this node that found its queue full and waited for room.
    pub waited: u64,
    /// Events dropped for it: its queue was full and its policy is `DropNewest`.
    pub dropped: u64,
    /// Events in its queue now. Peers' events may take it beyond `capacity`, each peer by at
    /// most the room it was granted.
    pub queued: u64,
    /// Its capacity.
    pub capacity: u64,
    /// Its policy when full.
    pub when_full: crate::FullPolicy,
    /// The group it is a member of, if any.
    pub group: Option<String>,
}

/// One group, as this node's publishers see it, from
/// [`Bus::group_stats`](crate::Bus::group_stats): what they sent its members, wherever those
/// are.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupStats {
    /// The event name.
    pub event: String,
    /// The group's name.
    pub group: String,
    /// Events given to a member (queued here, or sent to a member node).
    pub delivered: u64,
    /// Events that passed over a member in scope whose queue (or room granted to us) was full,
    /// for one with room.
    pub passed_over: u64,
    /// Events dropped because every member in scope was full and the group drops when full.
    pub dropped: u64,
    /// Events published with no member of the group in scope. Not an error for the publish: an
    /// event nobody subscribes to is not one either.
    pub no_member: u64,
    /// Events sent to a member node that went away before it gave us room back for them: an
    /// upper bound of what was lost in flight (the node may have handled some of them).
    pub lost_in_flight: u64,
}

/// The counters of one group, shared by the routing snapshots and this node's own members.
#[derive(Debug, Default)]
pub(crate) struct GroupCounters {
    pub(crate) delivered: Count,
    pub(crate) passed_over: Count,
    pub(crate) dropped: Count,
    pub(crate) no_member: Count,
    pub(crate) lost_in_flight: Count,
}

impl GroupCounters {
    fn new(m: &NodeMetrics, event: &str, group: &str) -> Self {
        let extra = [("event", event), ("group", group)];
        GroupCounters {
            delivered: m.count("meshbus_group_delivered_total", &extra),
            passed_over: m.count("meshbus_group_passed_over_total", &extra),
            dropped: m.count("meshbus_group_dropped_total", &extra),
            no_member: m.count("meshbus_group_no_member_total", &extra),
            lost_in_flight: m.count("meshbus_group_lost_in_flight_total", &extra),
        }
    }
}

/// Every group's counters, by (event, group), made when first needed and kept for the bus's
/// life (a group that comes back counts on).
#[derive(Debug, Default)]
pub(crate) struct GroupTable {
    table: std::sync::Mutex<
        std::collections::BTreeMap<(String, String), std::sync::Arc<GroupCounters>>,
    >,
    /// Where a group's series are registered, when it is first seen.
    metrics: std::sync::Arc<NodeMetrics>,
}

impl GroupTable {
    /// The most groups it keeps counters for; a group beyond them counts on counters of its
    /// own that [`snapshot`](Self::snapshot) does not show (group names come from peers).
    pub(crate) const MAX_GROUPS: usize = crate::wire::control::MAX_NAMES;

    /// The counters of group `group` of event `event`.
    pub(crate) fn of(&self, event: &str, group: &str) -> std::sync::Arc<GroupCounters> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let key = (event.to_owned(), group.to_owned());
        if table.len() >= Self::MAX_GROUPS && !table.contains_key(&key) {
            return std::sync::Arc::default();
        }
        std::sync::Arc::clone(table.entry(key).or_insert_with(|| {
            std::sync::Arc::new(GroupCounters::new(&self.metrics, event, group))
        }))
    }

    /// Every group's counters now.
    pub(crate) fn snapshot(&self) -> Vec<GroupStats> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table
            .iter()
            .map(|((event, group), c)| GroupStats {
                event: event.clone(),
                group: group.clone(),
                delivered: c.delivered.get(),
                passed_over: c.passed_over.get(),
                dropped: c.dropped.get(),
                no_member: c.no_member.get(),
                lost_in_flight: c.lost_in_flight.get(),
            })
            .collect()
    }
}

/// A subscription's counters, shared by its sending and receiving ends.
#[derive(Debug, Default)]
pub(crate) struct SubCounters {
    pub(crate) delivered: AtomicU64,
    pub(crate) waited: AtomicU64,
    pub(crate) dropped: AtomicU64,
    /// The same, and the queue's depth, as metrics.
    pub(crate) metrics: crate::metrics::SubMetrics,
}

/// The bus's counters: what [`BusStats`] reports, each also a metric, and the handles of the
/// node's other series.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) events_dropped: Count,
    pub(crate) event_handler_errors: Count,
    pub(crate) event_handler_panics: Count,
    pub(crate) command_handler_panics: Count,
    pub(crate) remote_events_dropped: Count,
    pub(crate) peer_events_dropped: AtomicU64,
    pub(crate) peer_events_queue_full: AtomicU64,
    pub(crate) remote_events_too_large: AtomicU64,
    pub(crate) members: AtomicU64,
    pub(crate) dials_in_flight: AtomicU64,
    pub(crate) dials_in_flight_peak: AtomicU64,
    pub(crate) links_established: Count,
    pub(crate) handshakes_refused: Count,
    pub(crate) connections_turned_away: Count,
    /// Each group's counters.
    pub(crate) groups: GroupTable,
    /// The node's labels and its node-wide series.
    pub(crate) metrics: std::sync::Arc<NodeMetrics>,
}

/// Something [`Counters::bump`] adds one to.
pub(crate) trait Bump {
    fn bump(&self);
}

impl Bump for AtomicU64 {
    fn bump(&self) {
        self.fetch_add(1, Ordering::Relaxed);
    }
}

impl Bump for Count {
    fn bump(&self) {
        Count::bump(self);
    }
}

impl Counters {
    /// The counters of a bus whose series are registered with `metrics`.
    pub(crate) fn new(metrics: std::sync::Arc<NodeMetrics>) -> Self {
        let m = &*metrics;
        Counters {
            events_dropped: m.count("meshbus_events_dropped_total", &[("source", "local")]),
            remote_events_dropped: m.count("meshbus_events_dropped_total", &[("source", "remote")]),
            event_handler_errors: m.count("meshbus_event_handler_errors_total", &[]),
            event_handler_panics: m.count("meshbus_event_handler_panics_total", &[]),
            command_handler_panics: m.count("meshbus_command_handler_panics_total", &[]),
            links_established: m.count("meshbus_links_established_total", &[]),
            handshakes_refused: m.count("meshbus_handshakes_refused_total", &[]),
            connections_turned_away: m.count("meshbus_connections_turned_away_total", &[]),
            groups: GroupTable {
                table: std::sync::Mutex::default(),
                metrics: std::sync::Arc::clone(&metrics),
            },
            metrics,
            ..Counters::default()
        }
    }

    pub(crate) fn bump(counter: &impl Bump) {
        counter.bump();
    }

    pub(crate) fn snapshot(&self) -> BusStats {
        BusStats {
            events_dropped: self.events_dropped.get(),
            event_handler_errors: self.event_handler_errors.get(),
            event_handler_panics: self.event_handler_panics.get(),
            command_handler_panics: self.command_handler_panics.get(),
            remote_events_dropped: self.remote_events_dropped.get(),
            peer_events_dropped: self.peer_events_dropped.load(Ordering::Relaxed),
            peer_events_queue_full: self.peer_events_queue_full.load(Ordering::Relaxed),
            remote_events_too_large: self.remote_events_too_large.load(Ordering::Relaxed),
            members: self.members.load(Ordering::Relaxed),
            dials_in_flight: self.dials_in_flight.load(Ordering::Relaxed),
            dials_in_flight_peak: self.dials_in_flight_peak.load(Ordering::Relaxed),
            links_established: self.links_established.get(),
            handshakes_refused: self.handshakes_refused.get(),
            connections_turned_away: self.connections_turned_away.get(),
        }
    }
}
