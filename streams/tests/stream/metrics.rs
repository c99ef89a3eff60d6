//! The host's stream series (issue 18), with a debugging recorder installed for the test on
//! its thread (the test's current-thread runtime runs host and client).

use futures_util::StreamExt;
use meshbus_streams::StreamsExt;
use meshbus_transport_inmem::InMemNetwork;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

use crate::support::*;

#[tokio::test]
async fn appends_sizes_and_a_consumers_lag_are_recorded_for_the_host() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let dir = tempfile::tempdir().unwrap();
    let net = InMemNetwork::new(43);
    let (host, client) = host_and_client(&net, orders(dir.path())).await;
    let s = client.streams();
    s.append_all("orders", (0..25).map(placed)).await.unwrap();
    let mut member = s
        .consumer::<OrderPlaced>("orders", "billing")
        .batch(10)
        .await
        .unwrap();
    for id in 0..10 {
        let m = within("a delivery", member.next()).await.unwrap().unwrap();
        assert_eq!(m.offset(), id);
    }
    drop(member);
    let info = s.consumer_info("orders", "billing").await.unwrap();
    assert!(info.pending >= 10, "{info:?}");

    let host_id = host.node_id().to_string();
    let mut seen = std::collections::BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let (_, key) = key.into_parts();
        let labels: std::collections::BTreeMap<String, String> = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        if !key.name().starts_with("meshbus_stream") {
            continue;
        }
        assert_eq!(labels.get("node"), Some(&host_id), "{key:?}");
        assert_eq!(labels.get("node_name").map(String::as_str), Some("host"));
        assert_eq!(labels.get("stream").map(String::as_str), Some("orders"));
        let value = match value {
            DebugValue::Counter(n) => n as f64,
            DebugValue::Gauge(g) => g.into_inner(),
            DebugValue::Histogram(_) => panic!("{key:?}"),
        };
        seen.insert(
            key.name().to_owned(),
            (labels.get("consumer").cloned(), value),
        );
    }
    let get = |name: &str| {
        seen.get(name)
            .unwrap_or_else(|| panic!("{name}: {seen:?}"))
            .1
    };
    assert_eq!(get("meshbus_stream_appended_records_total"), 25.0);
    assert!(get("meshbus_stream_appended_bytes_total") > 0.0);
    assert_eq!(get("meshbus_stream_records"), 25.0);
    assert!(get("meshbus_stream_bytes") > 0.0);
    assert_eq!(
        seen["meshbus_stream_consumer_lag"].0.as_deref(),
        Some("billing")
    );
    assert_eq!(get("meshbus_stream_consumer_lag"), info.lag as f64);
    assert_eq!(get("meshbus_stream_consumer_pending"), info.pending as f64);
    assert_eq!(get("meshbus_stream_consumer_redeliveries_total"), 0.0);

    client.shutdown().await.unwrap();
    host.shutdown().await.unwrap();
}
