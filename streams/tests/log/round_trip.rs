use meshbus_streams::{Error, FsyncPolicy, Log, LogConfig, NewRecord};

use crate::{check, read_all, rec};

#[tokio::test]
async fn round_trip_across_segment_rolls_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig::new("orders")
        .segment_bytes(1024)
        .index_interval(128)
        .fsync(FsyncPolicy::Never);
    let log = Log::open(dir.path(), config.clone()).await.expect("open");
    let mut i = 0u64;
    let mut n = 1;
    while i < 200 {
        let batch: Vec<_> = (i..(i + n).min(200)).map(rec).collect();
        let count = batch.len() as u64;
        let a = log.append(batch).await.expect("append");
        assert_eq!((a.first, a.count), (i, count), "offsets are dense");
        i += count;
        n = n % 5 + 1;
    }
    let info = log.info();
    assert_eq!(
        (info.first_offset, info.next_offset, info.records),
        (0, 200, 200)
    );
    assert!(info.segments > 3, "rolled by size: {info:?}");
    let all = read_all(&log, 0).await;
    assert_eq!(all.len(), 200);
    for (k, r) in all.iter().enumerate() {
        check(r, k as u64);
    }
    let mid = log.read(123, 5).await.expect("read");
    assert_eq!(
        mid.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![123, 124, 125, 126, 127]
    );
    assert!(log.read(200, 10).await.expect("tail").is_empty());
    assert!(log
        .read(10_000, 10)
        .await
        .expect("past the tail")
        .is_empty());
    log.close().await.expect("close");

    // Sealed segments have persisted indexes; the names are base offsets.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let logs = names.iter().filter(|n| n.ends_with(".log")).count();
    let indexes = names.iter().filter(|n| n.ends_with(".index")).count();
    assert_eq!(indexes, logs - 1, "{names:?}");
    assert_eq!(names[0], "00000000000000000000.index");

    // Reopen with the indexes, and once more without them (rebuilt by scanning).
    for remove_indexes in [false, true] {
        if remove_indexes {
            for n in names.iter().filter(|n| n.ends_with(".index")) {
                std::fs::remove_file(dir.path().join(n)).expect("remove index");
            }
        }
        let log = Log::open(dir.path(), config.clone()).await.expect("reopen");
        assert_eq!(log.info().next_offset, 200 + u64::from(remove_indexes));
        let all = read_all(&log, 0).await;
        for (k, r) in all.iter().take(200).enumerate() {
            check(r, k as u64);
        }
        if !remove_indexes {
            let a = log
                .append(vec![rec(200)])
                .await
                .expect("append after reopen");
            assert_eq!(a.first, 200);
        }
        log.close().await.expect("close");
    }
    assert!(
        dir.path().join("00000000000000000000.index").exists(),
        "a rebuilt index is saved"
    );
}

#[tokio::test]
async fn read_from_time_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig::new("t").segment_bytes(700).index_interval(64);
    let log = Log::open(dir.path(), config).await.expect("open");
    for i in 0..120 {
        log.append(vec![rec(i)]).await.expect("append");
    }
    // rec(i) has timestamp 1000 + 10 i.
    assert_eq!(log.offset_at_time(0).await.expect("t"), Some(0));
    assert_eq!(log.offset_at_time(1_000).await.expect("t"), Some(0));
    assert_eq!(log.offset_at_time(1_001).await.expect("t"), Some(1));
    assert_eq!(
        log.offset_at_time(1_000 + 10 * 77).await.expect("t"),
        Some(77)
    );
    assert_eq!(
        log.offset_at_time(1_000 + 10 * 77 + 5).await.expect("t"),
        Some(78)
    );
    assert_eq!(
        log.offset_at_time(1_000 + 10 * 119).await.expect("t"),
        Some(119)
    );
    assert_eq!(
        log.offset_at_time(1_000 + 10 * 119 + 1).await.expect("t"),
        None
    );
    let got = log
        .read_from_time(1_000 + 10 * 50 - 3, 4)
        .await
        .expect("read");
    assert_eq!(
        got.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![50, 51, 52, 53]
    );
    check(&got[0], 50);
}

#[tokio::test]
async fn time_lookup_with_timestamps_out_of_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogConfig::new("t").index_interval(1))
        .await
        .expect("open");
    for ts in [50u64, 10, 70, 20, 90, 30] {
        log.append(vec![NewRecord::new(ts, "x")])
            .await
            .expect("append");
    }
    // The first record in offset order whose timestamp is at least t.
    assert_eq!(log.offset_at_time(60).await.expect("t"), Some(2));
    assert_eq!(log.offset_at_time(15).await.expect("t"), Some(0));
    assert_eq!(log.offset_at_time(80).await.expect("t"), Some(4));
    assert_eq!(log.offset_at_time(91).await.expect("t"), None);
}

#[tokio::test]
async fn too_large_appends_are_refused_before_queueing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogConfig::new("big").max_batch_bytes(1024))
        .await
        .expect("open");
    let err = log
        .append(vec![NewRecord::new(1, vec![0u8; 2000])])
        .await
        .expect_err("too large");
    assert!(matches!(err, Error::TooLarge { max: 1024, .. }), "{err:?}");
    let key = "k".repeat(70_000);
    let err = log
        .append(vec![NewRecord::new(1, "b").header(key, "v")])
        .await
        .expect_err("key too long");
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
    let a = log
        .append(vec![NewRecord::new(1, "fits")])
        .await
        .expect("append");
    assert_eq!(a.first, 0, "nothing of the refused appends took an offset");
    let empty = log.append(Vec::new()).await.expect("empty append");
    assert_eq!((empty.first, empty.count), (1, 0));
}

#[tokio::test]
async fn bounded_reads_stop_at_the_byte_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogConfig::new("b").cache_bytes(0))
        .await
        .expect("open");
    let body = vec![7u8; 100];
    log.append((0..10).map(|i| NewRecord::new(i, body.clone())).collect())
        .await
        .expect("append");
    let got = log.read_bytes(0, 100, 250).await.expect("read");
    assert_eq!(got.len(), 3, "stops at the record reaching the budget");
    let got = log.read_bytes(0, 100, 1).await.expect("read");
    assert_eq!(got.len(), 1, "at least one record");
}

#[tokio::test]
async fn segments_roll_by_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    // An age of zero: every append after the first of a segment starts a new one.
    let config = LogConfig::new("age").segment_age(Some(std::time::Duration::ZERO));
    let log = Log::open(dir.path(), config).await.expect("open");
    for i in 0..5 {
        log.append(vec![rec(i)]).await.expect("append");
    }
    assert_eq!(log.info().segments, 5);
    let all = read_all(&log, 0).await;
    for (k, r) in all.iter().enumerate() {
        check(r, k as u64);
    }
    let config = LogConfig::new("age").segment_age(None);
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), config).await.expect("open");
    for i in 0..5 {
        log.append(vec![rec(i)]).await.expect("append");
    }
    assert_eq!(log.info().segments, 1);
}
