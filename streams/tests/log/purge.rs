//! Purge and delete (issue 16, item 6).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use meshbus_streams::{
    Error, FaultStorage, FsyncPolicy, Log, LogConfig, NewRecord, Purged, Storage, StorageFile,
};

use crate::{check, open_fault, read_all, rec};

/// Base offsets of the segment files in `storage`, in order.
fn bases(storage: &dyn Storage) -> Vec<u64> {
    let mut v: Vec<u64> = storage
        .list()
        .expect("list")
        .iter()
        .filter_map(|n| n.strip_suffix(".log").and_then(|d| d.parse().ok()))
        .collect();
    v.sort_unstable();
    v
}

/// Appends records `from..to`, one append each.
async fn fill(log: &Log, from: u64, to: u64) {
    for i in from..to {
        let a = log.append(vec![rec(i)]).await.expect("append");
        assert_eq!(a.first, i);
    }
}

/// Asserts that reading `offset` fails with `OffsetGone` naming `earliest`.
async fn assert_gone(log: &Log, offset: u64, earliest: u64) {
    match log.read(offset, 10).await {
        Err(Error::OffsetGone {
            requested,
            earliest: e,
            ..
        }) => assert_eq!((requested, e), (offset, earliest), "read of {offset}"),
        other => panic!("read of {offset} below {earliest}: {other:?}"),
    }
}

/// Asserts that the log holds exactly records `first..next` as [`rec`] made them.
async fn assert_holds(log: &Log, first: u64, next: u64) {
    let info = log.info();
    assert_eq!(
        (info.first_offset, info.next_offset),
        (first, next),
        "{info:?}"
    );
    assert_eq!(info.records, next - first, "{info:?}");
    let all = read_all(log, first).await;
    assert_eq!(all.len() as u64, next - first);
    for r in &all {
        check(r, r.offset);
    }
    if first > 0 {
        assert_gone(log, first - 1, first).await;
        assert_gone(log, 0, first).await;
    }
}

#[tokio::test]
async fn purge_up_to_an_offset_inside_a_segment() {
    let fault = FaultStorage::new();
    let config = LogConfig::new("p").segment_bytes(1024);
    let log = open_fault(&fault, config).await;
    fill(&log, 0, 200).await;
    let before = bases(&fault);
    assert!(before.len() > 6, "{before:?}");
    let mid = before[3] + 5;
    assert!(mid < before[4]);

    let p = log.purge(Some(mid)).await.expect("purge");
    assert_eq!(
        p,
        Purged {
            removed: mid,
            first_offset: mid
        }
    );
    assert_holds(&log, mid, 200).await;
    assert_eq!(log.info().segments, before.len() - 3);
    assert_eq!(
        bases(&fault),
        before[3..],
        "whole segments below went, not more"
    );
    let floor = format!("{mid:020}.purged");
    assert!(fault.list().expect("list").contains(&floor));

    // The time search starts at the floor too.
    assert_eq!(log.offset_at_time(0).await.expect("time"), Some(mid));
    let ts = rec(mid + 10).timestamp;
    assert_eq!(log.offset_at_time(ts).await.expect("time"), Some(mid + 10));
    let from_time = log.read_from_time(0, 3).await.expect("read from time");
    assert_eq!(from_time.first().map(|r| r.offset), Some(mid));

    // Nothing below the first offset is left to purge; the floor never goes back.
    let again = log.purge(Some(mid - 2)).await.expect("purge below");
    assert_eq!(
        again,
        Purged {
            removed: 0,
            first_offset: mid
        }
    );
    // Up to a segment's base: that segment stays whole, the one before it goes.
    let p = log.purge(Some(before[5])).await.expect("purge to a base");
    assert_eq!(p.removed, before[5] - mid);
    assert_eq!(bases(&fault)[0], before[5]);
    assert_holds(&log, before[5], 200).await;
    assert_eq!(
        fault
            .list()
            .expect("list")
            .iter()
            .filter(|n| n.ends_with(".purged"))
            .count(),
        1,
        "older floor files are removed"
    );
}

#[tokio::test]
async fn purge_all_then_append_continues_the_offsets() {
    let fault = FaultStorage::new();
    let config = LogConfig::new("p")
        .segment_bytes(1024)
        .fsync(FsyncPolicy::Never);
    let log = open_fault(&fault, config.clone()).await;
    fill(&log, 0, 100).await;
    let p = log.purge(None).await.expect("purge all");
    assert_eq!(
        p,
        Purged {
            removed: 100,
            first_offset: 100
        }
    );
    let info = log.info();
    assert_eq!((info.records, info.segments), (0, 1), "{info:?}");
    assert_eq!(bases(&fault), vec![100], "a new empty active segment");
    assert_holds(&log, 100, 100).await;
    assert_eq!(log.offset_at_time(0).await.expect("time"), None);

    let a = log.append(vec![rec(100)]).await.expect("append");
    assert_eq!(a.first, 100, "offsets are never reused");
    assert_holds(&log, 100, 101).await;

    // Up to far past the end: clamped to the next offset.
    let p = log.purge(Some(u64::MAX)).await.expect("purge past the end");
    assert_eq!(
        p,
        Purged {
            removed: 1,
            first_offset: 101
        }
    );
    log.close().await.expect("close");
    let log = open_fault(&fault, config).await;
    assert_holds(&log, 101, 101).await;
    fill(&log, 101, 110).await;
    assert_holds(&log, 101, 110).await;
}

#[tokio::test]
async fn a_reopened_log_keeps_its_floor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig::new("p").fsync(FsyncPolicy::Never);
    let log = Log::open(dir.path(), config.clone()).await.expect("open");
    fill(&log, 0, 50).await;
    // One segment: the floor lies inside the active segment.
    let p = log.purge(Some(20)).await.expect("purge");
    assert_eq!(p.first_offset, 20);
    fill(&log, 50, 60).await;
    log.close().await.expect("close");
    assert!(dir.path().join("00000000000000000020.purged").exists());

    let log = Log::open(dir.path(), config.clone()).await.expect("reopen");
    assert_holds(&log, 20, 60).await;
    assert_eq!(log.offset_at_time(0).await.expect("time"), Some(20));
    fill(&log, 60, 70).await;
    drop(log); // not closed: the writer's last sync runs as the handle goes
    let log = Log::open(dir.path(), config).await.expect("reopen");
    assert_holds(&log, 20, 70).await;
}

#[tokio::test]
async fn the_time_search_skips_records_below_the_floor() {
    let fault = FaultStorage::new();
    let log = open_fault(&fault, LogConfig::new("t").index_interval(64)).await;
    // Timestamps out of order: 2 and 9 are late, 5..9 early.
    let ts = [10, 11, 9_000, 13, 14, 1, 2, 3, 4, 9_500, 20];
    for (i, &t) in ts.iter().enumerate() {
        let a = log
            .append(vec![NewRecord::new(t, format!("r{i}"))])
            .await
            .expect("append");
        assert_eq!(a.first, i as u64);
    }
    assert_eq!(log.offset_at_time(5_000).await.expect("time"), Some(2));
    log.purge(Some(5)).await.expect("purge");
    assert_eq!(log.offset_at_time(5_000).await.expect("time"), Some(9));
    assert_eq!(log.offset_at_time(9_600).await.expect("time"), None);
    assert_eq!(log.offset_at_time(0).await.expect("time"), Some(5));
    let got = log.read_from_time(5_000, 10).await.expect("read from time");
    let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![9, 10]);
}

#[tokio::test]
async fn a_purge_is_ordered_with_appends() {
    let fault = FaultStorage::new();
    let log = open_fault(&fault, LogConfig::new("o").segment_bytes(512)).await;
    fill(&log, 0, 30).await;
    // Queued in this order, awaited together: the purge takes the first append, not the second.
    let before = log.append(vec![rec(30)]);
    let purge = log.purge(None);
    let after = log.append(vec![rec(31)]);
    let (before, purge, after) = tokio::join!(before, purge, after);
    assert_eq!(before.expect("append").first, 30);
    assert_eq!(
        purge.expect("purge"),
        Purged {
            removed: 31,
            first_offset: 31
        }
    );
    assert_eq!(after.expect("append").first, 31);
    assert_holds(&log, 31, 32).await;

    // Concurrent appenders during a purge: offsets stay dense and nothing at or above the
    // new first offset is lost.
    let (acks_tx, mut acks_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let (log, acks_tx) = (log.clone(), acks_tx.clone());
        tasks.push(tokio::spawn(async move {
            for k in 0..150u64 {
                let body = format!("t{t}-{k}");
                let a = log
                    .append(vec![NewRecord::new(k, body.clone())])
                    .await
                    .expect("append");
                let _ = acks_tx.send((a.first, body));
            }
        }));
    }
    drop(acks_tx);
    let mut acked = Vec::new();
    while acked.len() < 170 {
        acked.push(acks_rx.recv().await.expect("an ack"));
    }
    let p = log.purge(None).await.expect("purge");
    for t in tasks {
        t.await.expect("task");
    }
    while let Some(a) = acks_rx.recv().await {
        acked.push(a);
    }
    acked.sort();
    let offsets: Vec<u64> = acked.iter().map(|a| a.0).collect();
    assert_eq!(offsets, (32..632).collect::<Vec<_>>(), "dense, no reuse");
    assert!(p.first_offset >= 32 + 170 && p.first_offset <= 632, "{p:?}");
    let all = read_all(&log, p.first_offset).await;
    let want: Vec<_> = acked.iter().filter(|a| a.0 >= p.first_offset).collect();
    assert_eq!(all.len(), want.len());
    for (r, (offset, body)) in all.iter().zip(want) {
        assert_eq!((r.offset, &r.body[..]), (*offset, body.as_bytes()));
    }
    assert_gone(&log, p.first_offset - 1, p.first_offset).await;
}

#[tokio::test]
async fn retention_and_the_floor_agree_on_the_first_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let retention = meshbus_streams::Retention {
        max_records: Some(40),
        ..Default::default()
    };
    let config = LogConfig::new("r")
        .segment_bytes(1024)
        .retention(retention)
        .fsync(FsyncPolicy::Never);
    let log = Log::open(dir.path(), config).await.expect("open");
    fill(&log, 0, 30).await;
    let p = log.purge(Some(17)).await.expect("purge");
    assert_eq!(p.first_offset, 17);
    assert_holds(&log, 17, 30).await;
    // Appending on: retention deletes whole segments, and once it passes the floor the
    // first offset is the first segment's base.
    let mut next = 30;
    while log.info().first_offset == 17 {
        assert!(next < 400, "retention never passed the floor");
        fill(&log, next, next + 1).await;
        next += 1;
    }
    let info = log.info();
    let first_file = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| {
            let name = e.expect("entry").file_name().to_string_lossy().into_owned();
            name.strip_suffix(".log")?.parse::<u64>().ok()
        })
        .min()
        .expect("a segment");
    assert!(info.first_offset > 17);
    assert_eq!(info.first_offset, first_file);
    assert_holds(&log, first_file, next).await;
}

/// Storage over a [`FaultStorage`] that crashes at the `n`th write-like step once armed:
/// that step cuts the power (what was not synced is lost) and fails, and so does every
/// write-like step after it. Steps: creating a file, removing one, append, sync, truncate.
#[derive(Debug)]
struct CrashAt {
    fault: FaultStorage,
    state: Arc<CrashState>,
}

#[derive(Debug)]
struct CrashState {
    fault: FaultStorage,
    /// Steps left before the crash; `u64::MAX` while not armed.
    left: AtomicU64,
    fired: AtomicBool,
    seed: u64,
}

impl CrashState {
    fn step(&self) -> io::Result<()> {
        if self.fired.load(Ordering::SeqCst) {
            return Err(io::Error::other("crashed"));
        }
        let left = self.left.load(Ordering::SeqCst);
        if left == u64::MAX {
            return Ok(());
        }
        if left == 0 {
            self.fired.store(true, Ordering::SeqCst);
            self.fault.power_cut(self.seed);
            return Err(io::Error::other("crashed"));
        }
        self.left.store(left - 1, Ordering::SeqCst);
        Ok(())
    }
}

impl CrashAt {
    fn new(fault: &FaultStorage, seed: u64) -> Self {
        Self {
            fault: fault.clone(),
            state: Arc::new(CrashState {
                fault: fault.clone(),
                left: AtomicU64::new(u64::MAX),
                fired: AtomicBool::new(false),
                seed,
            }),
        }
    }
}

impl Storage for CrashAt {
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        if create {
            self.state.step()?;
        }
        Ok(Arc::new(CrashFile {
            file: self.fault.open(name, create)?,
            state: self.state.clone(),
        }))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.state.step()?;
        self.fault.remove(name)
    }

    fn list(&self) -> io::Result<Vec<String>> {
        self.fault.list()
    }
}

#[derive(Debug)]
struct CrashFile {
    file: Arc<dyn StorageFile>,
    state: Arc<CrashState>,
}

impl StorageFile for CrashFile {
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        self.state.step()?;
        self.file.append(buf)
    }

    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_at(pos, buf)
    }

    fn sync(&self) -> io::Result<()> {
        self.state.step()?;
        self.file.sync()
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.state.step()?;
        self.file.truncate(len)
    }

    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
}

/// Crashes a purge at each of its steps in turn, then reopens: the purge either took effect
/// (the first offset is the floor) or did nothing, every record at or above the first offset
/// is there, none below it is readable, and appends go on at the next offset.
async fn crash_at_each_step(policy: FsyncPolicy, up_to: Option<u64>) {
    const RECORDS: u64 = 120;
    let config = LogConfig::new("c").segment_bytes(1024).fsync(policy);
    let mut step = 0;
    loop {
        let fault = FaultStorage::new();
        let crash = Arc::new(CrashAt::new(&fault, step));
        let log = Log::open_with(crash.clone(), config.clone())
            .await
            .expect("open");
        fill(&log, 0, RECORDS).await;
        let target = up_to.unwrap_or(RECORDS);
        assert!(bases(&fault).len() > 5);
        crash.state.left.store(step, Ordering::SeqCst);
        let purged = log.purge(up_to).await;
        let fired = crash.state.fired.load(Ordering::SeqCst);
        if !fired {
            assert_eq!(
                *purged.as_ref().expect("purge without a crash"),
                Purged {
                    removed: target,
                    first_offset: target
                }
            );
            fault.power_cut(step);
        }
        drop(log);

        let mut before: Option<(u64, u64)> = None;
        for round in 0..2 {
            let log = open_fault(&fault, config.clone()).await;
            let info = log.info();
            let first = info.first_offset;
            let what = format!("{policy:?} {up_to:?}, crash at step {step}, round {round}");
            match before {
                None => {
                    assert!(first == 0 || first == target, "{what}: {info:?}");
                    if purged.is_ok() {
                        assert_eq!(first, target, "{what}: an acknowledged purge holds");
                    }
                    if policy == FsyncPolicy::Always || first == target {
                        // The purge fsyncs before the floor is written: nothing at or above
                        // it is lost.
                        assert_eq!(info.next_offset, RECORDS, "{what}: {info:?}");
                    }
                }
                Some(b) => assert_eq!(b, (first, info.next_offset), "{what}: stable"),
            }
            assert_holds(&log, first, info.next_offset).await;
            let on_disk = bases(&fault);
            assert!(
                on_disk.get(1).is_none_or(|&b| b > first),
                "{what}: open deletes the segments a crash left below the floor: {on_disk:?}"
            );
            fill(&log, info.next_offset, info.next_offset + 3).await;
            log.close().await.expect("close");
            before = Some((first, info.next_offset + 3));
        }
        if !fired {
            break;
        }
        step += 1;
        assert!(step < 200, "a purge takes fewer steps");
    }
    assert!(step > 4, "the purge was crashed at {step} steps");
}

#[tokio::test]
async fn a_crash_at_each_step_of_a_purge_up_to_an_offset() {
    crash_at_each_step(FsyncPolicy::Always, Some(57)).await;
    crash_at_each_step(FsyncPolicy::Never, Some(57)).await;
}

#[tokio::test]
async fn a_crash_at_each_step_of_a_purge_of_everything() {
    crash_at_each_step(FsyncPolicy::Always, None).await;
    crash_at_each_step(FsyncPolicy::Never, None).await;
}

#[tokio::test]
async fn delete_removes_the_files_and_clones_see_closed() {
    let parent = tempfile::tempdir().expect("tempdir");
    let dir = parent.path().join("orders");
    let log = Log::open(&dir, LogConfig::new("d").segment_bytes(512))
        .await
        .expect("open");
    fill(&log, 0, 40).await;
    log.purge(Some(7)).await.expect("purge");
    let clone = log.clone();
    assert!(std::fs::read_dir(&dir).expect("dir").count() > 3);
    log.delete().await.expect("delete");
    assert!(!dir.exists(), "the directory is gone");
    assert!(matches!(clone.read(10, 5).await, Err(Error::Closed)));
    assert!(matches!(clone.offset_at_time(0).await, Err(Error::Closed)));
    assert!(matches!(
        clone.append(vec![rec(40)]).await,
        Err(Error::Closed)
    ));
    assert!(matches!(clone.purge(None).await, Err(Error::Closed)));
    assert!(matches!(clone.sync().await, Err(Error::Closed)));
    assert!(matches!(clone.delete().await, Err(Error::Closed)));

    // A file that is not the log's stays, and so does its directory.
    let log = Log::open(&dir, LogConfig::new("d")).await.expect("open");
    fill(&log, 0, 5).await;
    std::fs::write(dir.join("notes.txt"), b"mine").expect("write");
    log.delete().await.expect("delete");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("notes.txt")]);

    // In any storage: every file goes.
    let fault = FaultStorage::new();
    let log = open_fault(&fault, LogConfig::new("d").segment_bytes(512)).await;
    fill(&log, 0, 40).await;
    log.purge(Some(3)).await.expect("purge");
    log.delete().await.expect("delete");
    assert_eq!(fault.list().expect("list"), Vec::<String>::new());
}

#[tokio::test]
async fn a_crash_at_each_step_of_a_delete_leaves_all_or_nothing() {
    const RECORDS: u64 = 60;
    let config = LogConfig::new("c")
        .segment_bytes(512)
        .fsync(FsyncPolicy::Always);
    let mut step = 0;
    loop {
        let fault = FaultStorage::new();
        let crash = Arc::new(CrashAt::new(&fault, step));
        let log = Log::open_with(crash.clone(), config.clone())
            .await
            .expect("open");
        fill(&log, 0, RECORDS).await;
        log.purge(Some(9)).await.expect("purge");
        crash.state.left.store(step, Ordering::SeqCst);
        let deleted = log.delete().await;
        let fired = crash.state.fired.load(Ordering::SeqCst);
        if !fired {
            deleted.expect("delete without a crash");
            assert_eq!(fault.list().expect("list"), Vec::<String>::new());
            break;
        }
        let log = open_fault(&fault, config.clone()).await;
        let info = log.info();
        // The whole log, an empty one that goes on at the next offset, or a new one.
        let (first, next) = (info.first_offset, info.next_offset);
        assert!(
            [(9, RECORDS), (RECORDS, RECORDS), (0, 0)].contains(&(first, next)),
            "crash at step {step}: {info:?}"
        );
        assert_holds(&log, first, next).await;
        fill(&log, next, next + 2).await;
        step += 1;
        assert!(step < 200, "a delete takes fewer steps");
    }
    assert!(step > 4, "the delete was crashed at {step} steps");
}
