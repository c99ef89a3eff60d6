//! Metrics through the `metrics` facade: a 3-node mesh with a debugging recorder installed for
//! the test (on the test's thread: the in-memory mesh runs on one current-thread runtime), after
//! known traffic, records what was sent, handled, delivered and dropped, with the node's labels.

use std::collections::BTreeMap;
use std::future::IntoFuture;

use crate::support::*;
use futures_util::FutureExt;
use meshbus::inmem::InMemNetwork;
use meshbus::prelude::*;
use meshbus::{FullPolicy, SubscriptionOptions};
use std::sync::atomic::{AtomicUsize, Ordering};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "metrics.ping", reply = u32)]
struct Ping(u32);

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "metrics.fail", reply = ())]
struct Fail;

#[derive(Serialize, Deserialize, Command)]
#[meshbus(name = "metrics.here", reply = ())]
struct Here;

#[derive(Serialize, Deserialize, Event)]
#[meshbus(name = "metrics.tick")]
struct Tick(u32);

#[derive(Serialize, Deserialize, Event)]
#[meshbus(name = "metrics.tock")]
struct Tock(u32);

/// The debugging recorder, counting the handles registered with it: a hot path that looked
/// a handle up per message would register one per message.
struct Counting {
    inner: DebuggingRecorder,
    registered: AtomicUsize,
}

impl Counting {
    fn registered(&self) -> usize {
        self.registered.load(Ordering::SeqCst)
    }
}

impl Recorder for Counting {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description);
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.registered.fetch_add(1, Ordering::SeqCst);
        self.inner.register_counter(key, metadata)
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.registered.fetch_add(1, Ordering::SeqCst);
        self.inner.register_gauge(key, metadata)
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.registered.fetch_add(1, Ordering::SeqCst);
        self.inner.register_histogram(key, metadata)
    }
}

/// One series as the recorder holds it: its labels and its value.
#[derive(Debug)]
struct Series {
    kind: MetricKind,
    labels: BTreeMap<String, String>,
    value: DebugValue,
}

/// Every series now, by name.
fn scrape(snapshotter: &Snapshotter) -> BTreeMap<String, Vec<Series>> {
    let mut out: BTreeMap<String, Vec<Series>> = BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let (kind, key) = key.into_parts();
        let labels = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        out.entry(key.name().to_owned()).or_default().push(Series {
            kind,
            labels,
            value,
        });
    }
    out
}

/// The one series `name` whose labels include all of `labels`.
fn one<'a>(
    all: &'a BTreeMap<String, Vec<Series>>,
    name: &str,
    labels: &[(&str, &str)],
) -> &'a Series {
    let found: Vec<&Series> = all
        .get(name)
        .into_iter()
        .flatten()
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    found[0]
}

fn counter(all: &BTreeMap<String, Vec<Series>>, name: &str, labels: &[(&str, &str)]) -> u64 {
    let s = one(all, name, labels);
    assert_eq!(s.kind, MetricKind::Counter, "{name}");
    match s.value {
        DebugValue::Counter(n) => n,
        ref v => panic!("{name}: {v:?}"),
    }
}

fn gauge(all: &BTreeMap<String, Vec<Series>>, name: &str, labels: &[(&str, &str)]) -> f64 {
    match one(all, name, labels).value {
        DebugValue::Gauge(g) => g.into_inner(),
        ref v => panic!("{name}: {v:?}"),
    }
}

fn samples(all: &BTreeMap<String, Vec<Series>>, name: &str, labels: &[(&str, &str)]) -> usize {
    match &one(all, name, labels).value {
        DebugValue::Histogram(h) => h.len(),
        v => panic!("{name}: {v:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_mesh_records_the_traffic_it_carries_labelled_by_node() {
    let inner = DebuggingRecorder::new();
    let snapshotter = inner.snapshotter();
    let recorder = Counting {
        inner,
        registered: AtomicUsize::new(0),
    };
    // Every bus of the test registers its handles here, on this thread.
    let _guard = metrics::set_default_local_recorder(&recorder);
    let net = InMemNetwork::new(50);
    let b = node(&net, "b")
        .command_handler(|Ping(n): Ping, _ctx: Context| async move { HandlerResult::Ok(n + 1) })
        .start()
        .await
        .unwrap();
    let c = node(&net, "c")
        .peers(["inmem://b"])
        .command_handler(|_: Fail, _ctx: Context| async move {
            HandlerResult::<()>::Err(HandlerError::msg("no"))
        })
        .start()
        .await
        .unwrap();
    let mut ticks = c.subscribe::<Tick>().unwrap();
    let a = node(&net, "a")
        .peers(["inmem://b", "inmem://c"])
        .command_handler(|_: Here, _ctx: Context| async move { HandlerResult::Ok(()) })
        .start()
        .await
        .unwrap();
    for bus in [&a, &b, &c] {
        within("a full mesh", bus.ready().peers(2)).await;
    }
    within("b's handler", a.ready().handlers::<Ping>(Scope::Cluster, 1)).await;
    within("c's handler", a.ready().handlers::<Fail>(Scope::Cluster, 1)).await;
    within(
        "c's subscriber",
        a.ready().subscribers::<Tick>(Scope::Cluster, 1),
    )
    .await;

    // Known traffic from a: 5 pings to b, 2 failing commands to c, 3 local commands, 10 ticks
    // to c, and 10 tocks into a full local queue of 4 that drops.
    for i in 0..5 {
        assert_eq!(a.commands().send(Ping(i)).await.unwrap(), i + 1);
    }
    for _ in 0..2 {
        assert!(a.commands().send(Fail).await.is_err());
    }
    for _ in 0..3 {
        a.commands().local().send(Here).await.unwrap();
    }
    for i in 0..10 {
        a.events().publish(Tick(i)).await.unwrap();
    }
    for i in 0..10 {
        assert_eq!(within("a tick", ticks.recv()).await.unwrap().0, i);
    }
    let _full = a
        .subscribe_with::<Tock>(
            SubscriptionOptions::new()
                .capacity(4)
                .when_full(FullPolicy::DropNewest),
        )
        .unwrap();
    for i in 0..10 {
        a.events()
            .publish(Tock(i))
            .into_future()
            .now_or_never()
            .expect("a drop-newest publish waited")
            .unwrap();
    }

    let all = scrape(&snapshotter);
    let (a_id, b_id, c_id) = (
        a.node_id().to_string(),
        b.node_id().to_string(),
        c.node_id().to_string(),
    );
    let a_lbl = &[("node", a_id.as_str()), ("node_name", "a")][..];
    let b_lbl = &[("node", b_id.as_str()), ("node_name", "b")][..];
    let c_lbl = &[("node", c_id.as_str()), ("node_name", "c")][..];

    // Peers: each node sees the other two.
    for lbl in [a_lbl, b_lbl, c_lbl] {
        assert_eq!(
            gauge(&all, "meshbus_peers", &with(lbl, &[("state", "connected")])),
            2.0
        );
    }

    // Commands at the caller, per name and scope.
    let ping = [("command", "metrics.ping"), ("scope", "cluster")];
    assert_eq!(
        counter(&all, "meshbus_commands_sent_total", &with(a_lbl, &ping)),
        5
    );
    assert_eq!(
        counter(&all, "meshbus_commands_failed_total", &with(a_lbl, &ping)),
        0
    );
    assert_eq!(
        samples(
            &all,
            "meshbus_command_duration_seconds",
            &with(a_lbl, &ping)
        ),
        5
    );
    let fail = [("command", "metrics.fail"), ("scope", "cluster")];
    assert_eq!(
        counter(&all, "meshbus_commands_sent_total", &with(a_lbl, &fail)),
        2
    );
    assert_eq!(
        counter(&all, "meshbus_commands_failed_total", &with(a_lbl, &fail)),
        2
    );
    let here = [("command", "metrics.here"), ("scope", "local")];
    assert_eq!(
        counter(&all, "meshbus_commands_sent_total", &with(a_lbl, &here)),
        3
    );
    assert_eq!(
        counter(&all, "meshbus_commands_handled_total", &with(a_lbl, &here)),
        3
    );
    assert_eq!(gauge(&all, "meshbus_commands_in_flight", a_lbl), 0.0);

    // At the handlers: the scope the caller shares with them (one host: `machine`).
    let ping_there = [("command", "metrics.ping"), ("scope", "machine")];
    assert_eq!(
        counter(
            &all,
            "meshbus_commands_handled_total",
            &with(b_lbl, &ping_there)
        ),
        5
    );
    assert_eq!(
        counter(
            &all,
            "meshbus_commands_handler_failed_total",
            &with(b_lbl, &ping_there)
        ),
        0
    );
    assert_eq!(
        samples(
            &all,
            "meshbus_command_handler_duration_seconds",
            &with(b_lbl, &ping_there)
        ),
        5
    );
    let fail_there = [("command", "metrics.fail"), ("scope", "machine")];
    assert_eq!(
        counter(
            &all,
            "meshbus_commands_handled_total",
            &with(c_lbl, &fail_there)
        ),
        2
    );
    assert_eq!(
        counter(
            &all,
            "meshbus_commands_handler_failed_total",
            &with(c_lbl, &fail_there)
        ),
        2
    );
    // Nothing handled a command it was not sent.
    assert!(one_absent(
        &all,
        "meshbus_commands_handled_total",
        &with(c_lbl, &[("command", "metrics.ping")])
    ));

    // Events: c's subscription got the 10 ticks; a's full one kept 4 and dropped 6.
    let tick = [("event", "metrics.tick")];
    assert_eq!(
        counter(
            &all,
            "meshbus_subscription_delivered_total",
            &with(c_lbl, &tick)
        ),
        10
    );
    assert_eq!(
        counter(
            &all,
            "meshbus_subscription_dropped_total",
            &with(c_lbl, &tick)
        ),
        0
    );
    let tock = [("event", "metrics.tock")];
    assert_eq!(
        counter(
            &all,
            "meshbus_subscription_delivered_total",
            &with(a_lbl, &tock)
        ),
        4
    );
    assert_eq!(
        counter(
            &all,
            "meshbus_subscription_dropped_total",
            &with(a_lbl, &tock)
        ),
        6
    );
    assert_eq!(
        gauge(
            &all,
            "meshbus_subscription_queue_depth",
            &with(a_lbl, &tock)
        ),
        4.0
    );
    assert_eq!(
        counter(
            &all,
            "meshbus_events_dropped_total",
            &with(a_lbl, &[("source", "local")])
        ),
        6
    );
    assert_eq!(a.stats().events_dropped, 6);

    // Frames and bytes per peer: what a sent b (5 pings at least) b read from a.
    let to_b = with(a_lbl, &[("peer_name", "b")]);
    let from_a = with(b_lbl, &[("peer_name", "a")]);
    assert!(counter(&all, "meshbus_peer_frames_sent_total", &to_b) >= 5);
    assert!(counter(&all, "meshbus_peer_frames_received_total", &from_a) >= 5);
    assert!(counter(&all, "meshbus_peer_sent_bytes_total", &to_b) > 0);
    assert!(counter(&all, "meshbus_peer_received_bytes_total", &from_a) > 0);
    let peer_b = one(&all, "meshbus_peer_frames_sent_total", &to_b);
    assert_eq!(peer_b.labels.get("peer"), Some(&b_id));

    // Links: each node kept at least one per peer; nothing refused on a mesh of one network.
    for lbl in [a_lbl, b_lbl, c_lbl] {
        assert!(counter(&all, "meshbus_links_established_total", lbl) >= 2);
        assert_eq!(counter(&all, "meshbus_handshakes_refused_total", lbl), 0);
    }
    // Every series carries the node's labels.
    for (name, series) in &all {
        for s in series {
            assert!(
                s.labels.contains_key("node") && s.labels.contains_key("node_name"),
                "{name}"
            );
            assert!(name.starts_with("meshbus_"), "{name}");
        }
    }

    // The same traffic again registers no handle: each was looked up once, when its peer,
    // subscription or command (name and scope) was first seen. (A snapshot of the debugging
    // recorder takes its counters: what follows counts the second round alone.)
    let registered = recorder.registered();
    for i in 0..5 {
        a.commands().send(Ping(i)).await.unwrap();
    }
    for _ in 0..2 {
        assert!(a.commands().send(Fail).await.is_err());
    }
    for _ in 0..3 {
        a.commands().local().send(Here).await.unwrap();
    }
    for i in 0..10 {
        a.events().publish(Tick(i)).await.unwrap();
    }
    for i in 0..10 {
        assert_eq!(within("a tick", ticks.recv()).await.unwrap().0, i);
    }
    for i in 0..10 {
        a.events()
            .publish(Tock(i))
            .into_future()
            .now_or_never()
            .unwrap()
            .unwrap();
    }
    assert_eq!(recorder.registered(), registered);
    let all = scrape(&snapshotter);
    assert_eq!(
        counter(&all, "meshbus_commands_sent_total", &with(a_lbl, &ping)),
        5
    );
    assert_eq!(
        counter(
            &all,
            "meshbus_commands_handled_total",
            &with(b_lbl, &ping_there)
        ),
        5
    );
    assert_eq!(
        counter(&all, "meshbus_commands_failed_total", &with(a_lbl, &fail)),
        2
    );
    assert_eq!(
        counter(&all, "meshbus_commands_handled_total", &with(a_lbl, &here)),
        3
    );
    assert_eq!(
        counter(
            &all,
            "meshbus_subscription_delivered_total",
            &with(c_lbl, &tick)
        ),
        10
    );
    assert_eq!(
        counter(
            &all,
            "meshbus_subscription_dropped_total",
            &with(a_lbl, &tock)
        ),
        10
    );

    for bus in [a, b, c] {
        bus.shutdown().await.unwrap();
    }
}

/// The node's labels and `extra`.
fn with<'a>(node: &[(&'a str, &'a str)], extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    node.iter().chain(extra).copied().collect()
}

/// No series `name` has all of `labels`.
fn one_absent(all: &BTreeMap<String, Vec<Series>>, name: &str, labels: &[(&str, &str)]) -> bool {
    !all.get(name).into_iter().flatten().any(|s| {
        labels
            .iter()
            .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

#[tokio::test]
async fn with_no_recorder_the_bus_runs_and_its_stats_still_count() {
    // The default recorder is the no-op one: every handle does nothing, the stats still count.
    let bus = Bus::builder()
        .command_handler(|Ping(n): Ping, _ctx: Context| async move { HandlerResult::Ok(n) })
        .start()
        .await
        .unwrap();
    assert_eq!(bus.commands().send(Ping(3)).await.unwrap(), 3);
    let _full = bus
        .subscribe_with::<Tock>(
            SubscriptionOptions::new()
                .capacity(1)
                .when_full(FullPolicy::DropNewest),
        )
        .unwrap();
    for i in 0..3 {
        bus.events().publish(Tock(i)).await.unwrap();
    }
    assert_eq!(bus.stats().events_dropped, 2);
    bus.shutdown().await.unwrap();
}
