//! Metrics through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! The bus records; the application picks the backend by installing a recorder (for example
//! `metrics-exporter-prometheus`), as it picks a `tracing` subscriber. With no recorder
//! installed every handle is a no-op. Handles are registered with the recorder that is
//! installed when the bus starts (and when a peer connects, a subscription is made, a group or
//! a command name is first seen), never per message: they are stored next to what they measure
//! (the bus's counters, each peer connection, each subscription, each group's counters, each
//! command slot and command route).
//!
//! Every series carries the labels `node` (the node id, 32 hex digits) and `node_name`.
//!
//! # Node
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `meshbus_peers` | gauge | `state` = `connected` | peers with an established link |
//! | `meshbus_members` | gauge | `state` = `alive` | live members known, this node not counted |
//! | `meshbus_dials_in_flight` | gauge | | dials under way |
//! | `meshbus_dials_total` | counter | | dials started (membership's and `connect`'s) |
//! | `meshbus_dials_failed_total` | counter | | membership's dials that found nobody or completed no handshake |
//! | `meshbus_links_established_total` | counter | | links that completed their handshake and were kept |
//! | `meshbus_handshakes_refused_total` | counter | | inbound handshakes refused (key, network, garbage) |
//! | `meshbus_connections_turned_away_total` | counter | | inbound connections closed before their handshake (caps, rate) |
//! | `meshbus_events_dropped_total` | counter | `source` = `local` / `remote` | events dropped for a full subscription queue (every subscription) |
//! | `meshbus_event_handler_errors_total` | counter | | event handler invocations that returned `Err` |
//! | `meshbus_event_handler_panics_total` | counter | | event handler invocations that panicked |
//! | `meshbus_command_handler_panics_total` | counter | | command handler invocations that panicked |
//! | `meshbus_commands_in_flight` | gauge | | commands sent by this node and not yet answered |
//! | `meshbus_commands_unrouted_total` | counter | | commands that found no handler in scope (`NoHandler`) |
//!
//! # Commands
//!
//! Labels `command` (the name it is sent under) and `scope` (`local`, `machine`, `cluster`,
//! `network`): at the caller, the scope it sent in; at the handler, the narrowest scope it
//! shares with the caller (`local` for the node's own calls). A command that finds no handler
//! counts only in `meshbus_commands_unrouted_total`.
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `meshbus_commands_sent_total` | counter | commands started towards a handler (local or remote) |
//! | `meshbus_commands_failed_total` | counter | of those, the ones whose caller got an error |
//! | `meshbus_command_duration_seconds` | histogram | caller's latency, start to answer |
//! | `meshbus_commands_handled_total` | counter | commands this node's handler ran |
//! | `meshbus_commands_handler_failed_total` | counter | of those, the ones that failed (`Err`, panic, decode) |
//! | `meshbus_command_handler_duration_seconds` | histogram | handler's time, decode to reply |
//!
//! # Peers
//!
//! Labels `peer` (its node id) and `peer_name`. Frames and bytes are counted per batch the
//! connection reads or writes, not per frame.
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `meshbus_peer_frames_received_total` | counter | frames read from the peer |
//! | `meshbus_peer_received_bytes_total` | counter | their bytes (frame bodies and headers) |
//! | `meshbus_peer_frames_sent_total` | counter | frames written to the peer (batches and write-through) |
//! | `meshbus_peer_sent_bytes_total` | counter | their bytes |
//! | `meshbus_peer_queued_bytes` | gauge | bytes queued for the peer, set after each batch written |
//! | `meshbus_peer_events_queue_full_total` | counter | events that found the peer's lane or room full (waited or dropped) |
//! | `meshbus_peer_events_dropped_total` | counter | events dropped for the peer |
//!
//! # Subscriptions
//!
//! Labels `event`, `subscription` (its id in this bus) and `group` (empty when none).
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `meshbus_subscription_delivered_total` | counter | events queued for it |
//! | `meshbus_subscription_waits_total` | counter | publishes that found its queue full and waited |
//! | `meshbus_subscription_dropped_total` | counter | events dropped for it (full, `DropNewest`) |
//! | `meshbus_subscription_queue_depth` | gauge | events in its queue, set when events are queued |
//!
//! # Groups
//!
//! Labels `event` and `group`.
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `meshbus_group_delivered_total` | counter | events given to a member |
//! | `meshbus_group_passed_over_total` | counter | members passed over because full |
//! | `meshbus_group_dropped_total` | counter | events dropped: every member in scope full |
//! | `meshbus_group_no_member_total` | counter | events with no member in scope |
//! | `meshbus_group_lost_in_flight_total` | counter | events sent to a member node that went away before it gave room back |
//!
//! # Streams (`meshbus-streams`, on the node hosting the stream)
//!
//! Labels `stream`, and `consumer` for a consumer's. Registered the first time the host serves
//! a command or captures an event, and per consumer the first time it is read.
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `meshbus_stream_appended_records_total` | counter | records appended (a repeated idempotency key not counted) |
//! | `meshbus_stream_appended_bytes_total` | counter | their body bytes |
//! | `meshbus_stream_records` | gauge | records in the log, set after each append |
//! | `meshbus_stream_bytes` | gauge | bytes of the log's segments, set after each append |
//! | `meshbus_stream_consumer_lag` | gauge | records not yet acknowledged: behind the cursor and pending (set after each read) |
//! | `meshbus_stream_consumer_pending` | gauge | records delivered and not yet acknowledged |
//! | `meshbus_stream_consumer_redeliveries_total` | counter | records delivered again |

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use metrics::{Counter, Gauge, Histogram, Label};

use crate::scope::Scope;

/// A count kept twice: in an atomic the bus's `*_stats` read, and in a metrics counter.
#[derive(Debug)]
pub(crate) struct Count {
    n: AtomicU64,
    metric: Counter,
}

impl Default for Count {
    /// A count with no metric.
    fn default() -> Self {
        Count::new(Counter::noop())
    }
}

impl Count {
    /// A count whose metric is `metric` (a handle registered once).
    pub(crate) fn new(metric: Counter) -> Self {
        Count {
            n: AtomicU64::new(0),
            metric,
        }
    }

    /// Adds one.
    pub(crate) fn bump(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub(crate) fn add(&self, n: u64) {
        self.n.fetch_add(n, Ordering::Relaxed);
        self.metric.increment(n);
    }

    /// The count now.
    pub(crate) fn get(&self) -> u64 {
        self.n.load(Ordering::Relaxed)
    }
}

/// The labels of one node and the handles of its node-wide series.
#[derive(Debug)]
pub(crate) struct NodeMetrics {
    labels: Vec<Label>,
    pub(crate) peers_connected: Gauge,
    pub(crate) members_alive: Gauge,
    pub(crate) dials_in_flight: Gauge,
    pub(crate) dials: Counter,
    pub(crate) dials_failed: Counter,
    pub(crate) commands_in_flight: Gauge,
    pub(crate) commands_unrouted: Counter,
}

impl Default for NodeMetrics {
    /// No labels, every handle a no-op (for tests of the parts alone).
    fn default() -> Self {
        NodeMetrics {
            labels: Vec::new(),
            peers_connected: Gauge::noop(),
            members_alive: Gauge::noop(),
            dials_in_flight: Gauge::noop(),
            dials: Counter::noop(),
            dials_failed: Counter::noop(),
            commands_in_flight: Gauge::noop(),
            commands_unrouted: Counter::noop(),
        }
    }
}

impl NodeMetrics {
    /// Registers the node's series with the recorder installed now.
    pub(crate) fn new(node: crate::id::NodeId, name: &str) -> Self {
        let labels = vec![
            Label::new("node", node.to_string()),
            Label::new("node_name", name.to_owned()),
        ];
        let mut m = NodeMetrics {
            labels,
            ..NodeMetrics::default()
        };
        m.peers_connected = m.gauge("meshbus_peers", &[("state", "connected")]);
        m.members_alive = m.gauge("meshbus_members", &[("state", "alive")]);
        m.dials_in_flight = m.gauge("meshbus_dials_in_flight", &[]);
        m.dials = m.counter("meshbus_dials_total", &[]);
        m.dials_failed = m.counter("meshbus_dials_failed_total", &[]);
        m.commands_in_flight = m.gauge("meshbus_commands_in_flight", &[]);
        m.commands_unrouted = m.counter("meshbus_commands_unrouted_total", &[]);
        m
    }

    fn with(&self, extra: &[(&'static str, &str)]) -> Vec<Label> {
        let mut labels = self.labels.clone();
        labels.extend(extra.iter().map(|(k, v)| Label::new(*k, (*v).to_owned())));
        labels
    }

    /// A counter of this node, labelled also with `extra`.
    pub(crate) fn counter(&self, name: &'static str, extra: &[(&'static str, &str)]) -> Counter {
        metrics::counter!(name, self.with(extra))
    }

    /// A [`Count`] of this node, labelled also with `extra`.
    pub(crate) fn count(&self, name: &'static str, extra: &[(&'static str, &str)]) -> Count {
        Count::new(self.counter(name, extra))
    }

    /// A gauge of this node, labelled also with `extra`.
    pub(crate) fn gauge(&self, name: &'static str, extra: &[(&'static str, &str)]) -> Gauge {
        metrics::gauge!(name, self.with(extra))
    }

    /// A histogram of this node, labelled also with `extra`.
    pub(crate) fn histogram(
        &self,
        name: &'static str,
        extra: &[(&'static str, &str)],
    ) -> Histogram {
        metrics::histogram!(name, self.with(extra))
    }

    /// The series of a subscription.
    pub(crate) fn subscription(&self, event: &str, id: u64, group: Option<&str>) -> SubMetrics {
        let id = id.to_string();
        let extra = [
            ("event", event),
            ("subscription", id.as_str()),
            ("group", group.unwrap_or("")),
        ];
        SubMetrics {
            delivered: self.counter("meshbus_subscription_delivered_total", &extra),
            waited: self.counter("meshbus_subscription_waits_total", &extra),
            dropped: self.counter("meshbus_subscription_dropped_total", &extra),
            depth: self.gauge("meshbus_subscription_queue_depth", &extra),
        }
    }

    /// The series of a peer connection.
    pub(crate) fn peer(&self, peer: crate::id::NodeId, peer_name: &str) -> PeerMetrics {
        let id = peer.to_string();
        let extra = [("peer", id.as_str()), ("peer_name", peer_name)];
        PeerMetrics {
            frames_in: self.counter("meshbus_peer_frames_received_total", &extra),
            bytes_in: self.counter("meshbus_peer_received_bytes_total", &extra),
            frames_out: self.counter("meshbus_peer_frames_sent_total", &extra),
            bytes_out: self.counter("meshbus_peer_sent_bytes_total", &extra),
            queued_bytes: self.gauge("meshbus_peer_queued_bytes", &extra),
            events_queue_full: self.count("meshbus_peer_events_queue_full_total", &extra),
            events_dropped: self.count("meshbus_peer_events_dropped_total", &extra),
        }
    }

    /// The series of a command name in `scope` at its caller.
    fn caller(&self, name: &str, scope: Scope) -> CommandSeries {
        let extra = [("command", name), ("scope", scope.as_str())];
        CommandSeries {
            count: self.counter("meshbus_commands_sent_total", &extra),
            failed: self.counter("meshbus_commands_failed_total", &extra),
            seconds: self.histogram("meshbus_command_duration_seconds", &extra),
        }
    }

    /// The series of a command name in `scope` at its handler.
    fn handler(&self, name: &str, scope: Scope) -> CommandSeries {
        let extra = [("command", name), ("scope", scope.as_str())];
        CommandSeries {
            count: self.counter("meshbus_commands_handled_total", &extra),
            failed: self.counter("meshbus_commands_handler_failed_total", &extra),
            seconds: self.histogram("meshbus_command_handler_duration_seconds", &extra),
        }
    }
}

/// The series of one subscription, made with it.
#[derive(Debug)]
pub(crate) struct SubMetrics {
    pub(crate) delivered: Counter,
    pub(crate) waited: Counter,
    pub(crate) dropped: Counter,
    pub(crate) depth: Gauge,
}

/// The series of one peer connection, made when it is established.
#[derive(Debug)]
pub(crate) struct PeerMetrics {
    pub(crate) frames_in: Counter,
    pub(crate) bytes_in: Counter,
    pub(crate) frames_out: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) queued_bytes: Gauge,
    pub(crate) events_queue_full: Count,
    pub(crate) events_dropped: Count,
}

impl Default for SubMetrics {
    fn default() -> Self {
        SubMetrics {
            delivered: Counter::noop(),
            waited: Counter::noop(),
            dropped: Counter::noop(),
            depth: Gauge::noop(),
        }
    }
}

impl Default for PeerMetrics {
    fn default() -> Self {
        PeerMetrics {
            frames_in: Counter::noop(),
            bytes_in: Counter::noop(),
            frames_out: Counter::noop(),
            bytes_out: Counter::noop(),
            queued_bytes: Gauge::noop(),
            events_queue_full: Count::default(),
            events_dropped: Count::default(),
        }
    }
}

/// Frames and bytes of one batch read from a peer, recorded once when dropped (whatever way
/// the batch ends).
pub(crate) struct Tally<'a> {
    frames: u64,
    bytes: u64,
    metrics: &'a PeerMetrics,
}

impl<'a> Tally<'a> {
    pub(crate) fn received(metrics: &'a PeerMetrics) -> Self {
        Tally {
            frames: 0,
            bytes: 0,
            metrics,
        }
    }

    pub(crate) fn frame(&mut self, bytes: usize) {
        self.frames += 1;
        self.bytes += bytes as u64;
    }
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        if self.frames > 0 {
            self.metrics.frames_in.increment(self.frames);
            self.metrics.bytes_in.increment(self.bytes);
        }
    }
}

impl PeerMetrics {
    /// Counts frames written to the peer.
    pub(crate) fn sent(&self, frames: usize, bytes: usize) {
        self.frames_out.increment(frames as u64);
        self.bytes_out.increment(bytes as u64);
    }
}

/// Count, failures and latency of one command name in one scope, at one side.
#[derive(Debug)]
pub(crate) struct CommandSeries {
    count: Counter,
    failed: Counter,
    seconds: Histogram,
}

impl CommandSeries {
    /// Counts one command done: `ok` or not, `since` it started.
    pub(crate) fn done(&self, ok: bool, since: Instant) {
        self.count.increment(1);
        if !ok {
            self.failed.increment(1);
        }
        self.seconds.record(since.elapsed().as_secs_f64());
    }
}

/// The series of one command name, one per scope, each registered the first time a command
/// is sent or handled in that scope and kept with the name's slot or route.
#[derive(Debug, Default)]
pub(crate) struct CommandMetrics {
    caller: [OnceLock<CommandSeries>; 4],
    handler: [OnceLock<CommandSeries>; 4],
}

fn scope_index(scope: Scope) -> usize {
    match scope {
        Scope::Local => 0,
        Scope::Machine => 1,
        Scope::Cluster => 2,
        Scope::Network => 3,
    }
}

impl CommandMetrics {
    /// The caller's series of `name` in `scope`.
    pub(crate) fn caller(&self, node: &NodeMetrics, name: &str, scope: Scope) -> &CommandSeries {
        self.caller[scope_index(scope)].get_or_init(|| node.caller(name, scope))
    }

    /// The handler's series of `name` in `scope`.
    pub(crate) fn handler(&self, node: &NodeMetrics, name: &str, scope: Scope) -> &CommandSeries {
        self.handler[scope_index(scope)].get_or_init(|| node.handler(name, scope))
    }
}

/// A command sent and not yet answered: counts it in flight until dropped, and records its
/// outcome and latency once answered.
pub(crate) struct CallMetrics {
    node: Arc<NodeMetrics>,
    series: Arc<CommandMetrics>,
    scope: Scope,
    /// The handler ran on this node, in the caller's task: its series are recorded too.
    local: bool,
    start: Instant,
}

impl CallMetrics {
    /// Starts counting a command sent under `name` (its series are registered now only the
    /// first time the name is sent in `scope`).
    pub(crate) fn start(
        node: &Arc<NodeMetrics>,
        series: &Arc<CommandMetrics>,
        name: &str,
        scope: Scope,
    ) -> Self {
        series.caller(node, name, scope);
        node.commands_in_flight.increment(1.0);
        CallMetrics {
            node: Arc::clone(node),
            series: Arc::clone(series),
            scope,
            local: false,
            start: Instant::now(),
        }
    }

    /// As [`start`](Self::start), for a command this node's own handler runs.
    pub(crate) fn start_local(
        node: &Arc<NodeMetrics>,
        series: &Arc<CommandMetrics>,
        name: &str,
        scope: Scope,
    ) -> Self {
        series.handler(node, name, scope);
        let mut call = Self::start(node, series, name, scope);
        call.local = true;
        call
    }

    /// The command was answered (`ok`) or failed.
    pub(crate) fn done(self, ok: bool) {
        let i = scope_index(self.scope);
        if let Some(s) = self.series.caller[i].get() {
            s.done(ok, self.start);
        }
        if self.local {
            if let Some(s) = self.series.handler[i].get() {
                s.done(ok, self.start);
            }
        }
    }
}

impl Drop for CallMetrics {
    fn drop(&mut self) {
        self.node.commands_in_flight.decrement(1.0);
    }
}

impl std::fmt::Debug for CallMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallMetrics")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}
