use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use meshbus_streams::{FaultStorage, FsyncPolicy, LogConfig};

use crate::{check, open_fault, read_all, rec};

/// A bound on waits that only a broken log would reach (not a timing assertion).
const LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Polls `fut` once.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut *fut).poll(cx))).await
}

#[tokio::test]
async fn always_resolves_only_after_the_fsync_that_covers_it() {
    let fault = FaultStorage::new();
    let log = open_fault(&fault, LogConfig::new("g").fsync(FsyncPolicy::Always)).await;
    fault.hold_syncs();
    let mut append = pin!(log.append(vec![rec(0)]));
    let f = fault.clone();
    let held = tokio::task::spawn_blocking(move || f.wait_for_held_syncs(1, LIMIT))
        .await
        .expect("wait");
    assert!(held, "the first fsync never started");
    // The writer has written the batch and is inside the fsync: the append must not be done.
    assert!(poll_once(&mut append).await.is_pending());
    fault.release_syncs();
    assert_eq!(append.await.expect("append").first, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_under_always_share_fsyncs() {
    let fault = FaultStorage::new();
    let log = open_fault(&fault, LogConfig::new("g").fsync(FsyncPolicy::Always)).await;
    let before = fault.syncs();
    // The first append's fsync is held, so the 63 others queue behind it.
    fault.hold_syncs();
    let first = log.append(vec![rec(0)]);
    let f = fault.clone();
    let held = tokio::task::spawn_blocking(move || f.wait_for_held_syncs(1, LIMIT))
        .await
        .expect("wait");
    assert!(held, "the first fsync never started");
    // Each call queues its append at once; 63 concurrent appenders.
    let rest: Vec<_> = (1..64)
        .map(|i| tokio::spawn(log.append(vec![rec(i)])))
        .collect();
    fault.release_syncs();
    let mut offsets = vec![first.await.expect("first").first];
    for t in rest {
        offsets.push(t.await.expect("task").expect("append").first);
    }
    let syncs = fault.syncs() - before;
    assert_eq!(
        syncs, 2,
        "64 appends, one fsync for the first and one for the 63 queued behind it"
    );
    offsets.sort_unstable();
    assert_eq!(offsets, (0..64).collect::<Vec<_>>());
    // Each append kept its own record (a shared batch, not a mixed one).
    let all = read_all(&log, 0).await;
    assert_eq!(all.len(), 64);
    let mut bodies: Vec<_> = all.iter().map(|r| r.body.clone()).collect();
    bodies.sort();
    let mut want: Vec<_> = (0..64).map(|i| rec(i).body).collect();
    want.sort();
    assert_eq!(bodies, want);
}

#[tokio::test]
async fn appends_from_one_task_keep_their_order() {
    let fault = FaultStorage::new();
    let log = open_fault(&fault, LogConfig::new("g").fsync(FsyncPolicy::Never)).await;
    let futures: Vec<_> = (0..50).map(|i| log.append(vec![rec(i)])).collect();
    for (i, f) in futures.into_iter().enumerate().rev() {
        assert_eq!(f.await.expect("append").first, i as u64);
    }
    for (k, r) in read_all(&log, 0).await.iter().enumerate() {
        check(r, k as u64);
    }
}
