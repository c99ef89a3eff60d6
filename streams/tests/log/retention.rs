use std::time::Duration;

use meshbus_streams::{Error, FsyncPolicy, Log, LogConfig, NewRecord, Retention};

use crate::{check, read_all, rec};

fn segment_files(dir: &std::path::Path) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| {
            let e = e.expect("entry");
            let name = e.file_name().to_string_lossy().into_owned();
            let base = name.strip_suffix(".log")?.parse().ok()?;
            Some((base, e.metadata().expect("meta").len()))
        })
        .collect();
    v.sort_unstable();
    v
}

#[tokio::test]
async fn retention_by_size_deletes_whole_segments_and_bounds_disk_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let retention = Retention {
        max_bytes: Some(8192),
        ..Retention::default()
    };
    let config = LogConfig::new("r")
        .segment_bytes(2048)
        .retention(retention)
        .fsync(FsyncPolicy::Never);
    let log = Log::open(dir.path(), config).await.expect("open");
    for i in 0..600 {
        log.append(vec![rec(i)]).await.expect("append");
        let on_disk: u64 = segment_files(dir.path()).iter().map(|s| s.1).sum();
        assert!(on_disk <= 8192 + 2048, "disk use {on_disk} after {i}");
    }
    let info = log.info();
    let files = segment_files(dir.path());
    assert!(info.first_offset > 0);
    assert_eq!(
        files[0].0, info.first_offset,
        "the first offset is a segment's base: whole segments go"
    );
    assert_eq!(files.len(), info.segments);
    let err = log
        .read(info.first_offset - 1, 10)
        .await
        .expect_err("deleted");
    match err {
        Error::OffsetGone {
            stream,
            requested,
            earliest,
        } => {
            assert_eq!(
                (stream.as_str(), requested, earliest),
                ("r", info.first_offset - 1, info.first_offset)
            );
        }
        other => panic!("{other:?}"),
    }
    let all = read_all(&log, info.first_offset).await;
    assert_eq!(all.len() as u64, 600 - info.first_offset);
    for r in &all {
        check(r, r.offset);
    }
    assert!(all.windows(2).all(|w| w[1].offset == w[0].offset + 1));
}

#[tokio::test]
async fn retention_by_count_and_never_the_active_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let retention = Retention {
        max_records: Some(50),
        ..Retention::default()
    };
    let config = LogConfig::new("r").segment_bytes(1024).retention(retention);
    let log = Log::open(dir.path(), config).await.expect("open");
    for i in 0..300 {
        log.append(vec![rec(i)]).await.expect("append");
    }
    let info = log.info();
    let files = segment_files(dir.path());
    let active_records = info.next_offset - files.last().expect("active").0;
    assert!(info.records <= 50 + active_records, "{info:?}");
    assert!(info.records >= 50, "keeps at least the limit: {info:?}");
    assert_eq!(files[0].0, info.first_offset);

    let dir = tempfile::tempdir().expect("tempdir");
    let retention = Retention {
        max_records: Some(0),
        max_bytes: Some(0),
        ..Retention::default()
    };
    let log = Log::open(dir.path(), LogConfig::new("r").retention(retention))
        .await
        .expect("open");
    log.append((0..5).map(rec).collect()).await.expect("append");
    log.apply_retention().await.expect("retention");
    assert_eq!(log.info().segments, 1);
    assert_eq!(
        read_all(&log, 0).await.len(),
        5,
        "the active segment is never deleted"
    );
}

#[tokio::test]
async fn retention_by_age_uses_record_timestamps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let retention = Retention {
        max_age: Some(Duration::from_secs(3600)),
        ..Retention::default()
    };
    let config = LogConfig::new("r").segment_bytes(512).retention(retention);
    let log = Log::open(dir.path(), config).await.expect("open");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    // Old records (1970) in the first segments, then fresh ones.
    for i in 0..40 {
        log.append(vec![NewRecord::new(i, vec![0u8; 40])])
            .await
            .expect("append");
    }
    let old_end = log.info().next_offset;
    for i in 0..40 {
        log.append(vec![NewRecord::new(now_ms + i, vec![1u8; 40])])
            .await
            .expect("append");
    }
    log.apply_retention().await.expect("retention");
    let info = log.info();
    assert!(info.first_offset > 0, "old segments deleted: {info:?}");
    assert!(
        info.first_offset <= old_end,
        "no segment with fresh records deleted: {info:?}"
    );
    let all = read_all(&log, info.first_offset).await;
    assert!(all.iter().filter(|r| r.timestamp >= now_ms).count() == 40);
}
