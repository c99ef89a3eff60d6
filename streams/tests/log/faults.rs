use std::time::Duration;

use meshbus_streams::{Error, FaultStorage, FsyncPolicy, LogConfig, NewRecord};

use crate::{check, open_fault, read_all, rec};

#[tokio::test]
async fn always_keeps_every_acknowledged_record_through_a_power_cut() {
    for seed in 0..4u64 {
        let fault = FaultStorage::new();
        let config = LogConfig::new("pc")
            .fsync(FsyncPolicy::Always)
            .segment_bytes(4096);
        let log = open_fault(&fault, config.clone()).await;
        let (acks_tx, mut acks_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let (log, acks_tx) = (log.clone(), acks_tx.clone());
            tasks.push(tokio::spawn(async move {
                for k in 0..400u64 {
                    let body = format!("t{t}-k{k}");
                    match log.append(vec![NewRecord::new(k, body.clone())]).await {
                        Ok(a) => {
                            let _ = acks_tx.send((a.first, body));
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        drop(acks_tx);
        let mut acked = Vec::new();
        while acked.len() < 150 + 50 * seed as usize {
            acked.push(acks_rx.recv().await.expect("an ack"));
        }
        fault.power_cut(seed);
        for t in tasks {
            t.await.expect("task");
        }
        while let Some(a) = acks_rx.recv().await {
            acked.push(a);
        }
        drop(log);

        let log = open_fault(&fault, config.clone()).await;
        let all = read_all(&log, 0).await;
        for (k, r) in all.iter().enumerate() {
            assert_eq!(r.offset, k as u64, "dense offsets");
        }
        for (offset, body) in &acked {
            let r = all
                .get(*offset as usize)
                .unwrap_or_else(|| panic!("acked offset {offset} lost (seed {seed})"));
            assert_eq!(r.body, body.as_bytes(), "acked offset {offset}");
        }
        let next = log
            .append(vec![NewRecord::new(1, "after")])
            .await
            .expect("append after the cut");
        assert_eq!(next.first, all.len() as u64);
    }
}

#[tokio::test]
async fn interval_and_never_keep_a_prefix_through_a_power_cut() {
    let policies = [
        FsyncPolicy::Never,
        FsyncPolicy::Interval(Duration::from_secs(3600)),
    ];
    for policy in policies {
        for seed in 0..6u64 {
            let fault = FaultStorage::new();
            let config = LogConfig::new("pc").fsync(policy).segment_bytes(2048);
            let log = open_fault(&fault, config.clone()).await;
            for i in (0..300).step_by(3) {
                log.append((i..i + 3).map(rec).collect())
                    .await
                    .expect("append");
            }
            let synced = if seed % 2 == 1 {
                // What an explicit sync covered survives, whatever the policy.
                log.sync().await.expect("sync");
                for i in (300..330).step_by(3) {
                    log.append((i..i + 3).map(rec).collect())
                        .await
                        .expect("append");
                }
                300
            } else {
                0
            };
            // Sealed segments were fsynced when sealed: everything before the active one.
            let sealed = active_base_of(&fault);
            fault.power_cut(seed);
            drop(log);
            let log = open_fault(&fault, config.clone()).await;
            let all = read_all(&log, 0).await;
            for (k, r) in all.iter().enumerate() {
                check(r, k as u64); // a prefix: no hole, no garbage
            }
            let kept = all.len() as u64;
            assert!(
                kept >= sealed.max(synced),
                "{policy:?} seed {seed}: kept {kept}, sealed {sealed}, synced {synced}"
            );
            let a = log
                .append(vec![rec(kept)])
                .await
                .expect("append after the cut");
            assert_eq!(a.first, kept);
        }
    }
}

/// Base offset of the active (newest) segment in `fault`.
fn active_base_of(fault: &FaultStorage) -> u64 {
    use meshbus_streams::Storage;
    fault
        .list()
        .expect("list")
        .iter()
        .filter_map(|n| n.strip_suffix(".log").and_then(|d| d.parse::<u64>().ok()))
        .max()
        .expect("a segment")
}

#[tokio::test]
async fn disk_full_fails_cleanly_and_appends_resume_when_space_returns() {
    for policy in [FsyncPolicy::Always, FsyncPolicy::Never] {
        let fault = FaultStorage::new();
        let config = LogConfig::new("full").fsync(policy);
        let log = open_fault(&fault, config.clone()).await;
        for i in 0..20 {
            log.append(vec![rec(i)]).await.expect("append");
        }
        fault.set_space(Some(fault.total_bytes() + 50));
        let err = log
            .append(vec![NewRecord::new(5, vec![1u8; 200])])
            .await
            .expect_err("disk full");
        assert!(
            matches!(&err, Error::DiskFull { stream } if stream == "full"),
            "{err:?}"
        );
        let err = log
            .append((20..30).map(rec).collect())
            .await
            .expect_err("still full");
        assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
        assert_eq!(log.info().next_offset, 20);
        let all = read_all(&log, 0).await;
        assert_eq!(all.len(), 20);
        for (k, r) in all.iter().enumerate() {
            check(r, k as u64);
        }
        fault.set_space(None);
        let a = log.append(vec![rec(20)]).await.expect("space is back");
        assert_eq!(a.first, 20);
        log.close().await.expect("close");
        let log = open_fault(&fault, config).await;
        let all = read_all(&log, 0).await;
        assert_eq!(all.len(), 21, "no partial batch was left behind");
        for (k, r) in all.iter().enumerate() {
            check(r, k as u64);
        }
    }
}

#[tokio::test]
async fn disk_full_when_rolling_a_segment_fails_cleanly() {
    let fault = FaultStorage::new();
    let config = LogConfig::new("full")
        .segment_bytes(300)
        .fsync(FsyncPolicy::Never);
    let log = open_fault(&fault, config.clone()).await;
    let mut next = 0;
    while log.info().segments < 2 {
        log.append(vec![rec(next)]).await.expect("append");
        next += 1;
    }
    fault.set_space(Some(fault.total_bytes() + 10));
    let mut failed = 0;
    for _ in 0..20 {
        match log.append(vec![rec(next)]).await {
            Ok(a) => {
                assert_eq!(a.first, next);
                next += 1;
            }
            Err(e) => {
                assert!(matches!(e, Error::DiskFull { .. }), "{e:?}");
                failed += 1;
            }
        }
    }
    assert!(failed > 0);
    fault.set_space(None);
    for _ in 0..20 {
        let a = log.append(vec![rec(next)]).await.expect("append");
        assert_eq!(a.first, next);
        next += 1;
    }
    let all = read_all(&log, 0).await;
    assert_eq!(all.len() as u64, next);
    for (k, r) in all.iter().enumerate() {
        check(r, k as u64);
    }
}
