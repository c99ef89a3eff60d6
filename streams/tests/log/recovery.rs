use meshbus_streams::{Error, FaultStorage, FsyncPolicy, LogConfig, Storage};
use proptest::prelude::*;

use crate::{check, open_fault, read_all, rec};

const SEGMENT: &str = "00000000000000000000.log";

/// Appends `sizes.len()` appends of `sizes[k]` records; returns the file length after each.
fn build(fault: &FaultStorage, sizes: &[u64]) -> (Vec<u64>, Vec<u64>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let log = open_fault(fault, LogConfig::new("rec").fsync(FsyncPolicy::Never)).await;
        let (mut ends, mut counts, mut next) = (Vec::new(), Vec::new(), 0);
        for &n in sizes {
            log.append((next..next + n).map(rec).collect())
                .await
                .expect("append");
            next += n;
            ends.push(fault.file_len(SEGMENT).expect("segment"));
            counts.push(next);
        }
        log.close().await.expect("close");
        (ends, counts)
    })
}

/// Reopens and checks that exactly `kept` records survive and the next append gets `kept`.
fn reopen_expect(fault: &FaultStorage, kept: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let log = open_fault(fault, LogConfig::new("rec")).await;
        let all = read_all(&log, 0).await;
        assert_eq!(all.len() as u64, kept);
        for (k, r) in all.iter().enumerate() {
            check(r, k as u64);
        }
        let a = log
            .append(vec![rec(kept)])
            .await
            .expect("append after recovery");
        assert_eq!(a.first, kept);
        check(&log.read(kept, 1).await.expect("read")[0], kept);
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_torn_tail_keeps_every_whole_batch_before_it(
        sizes in prop::collection::vec(1u64..5, 1..20),
        cut in any::<prop::sample::Index>(),
    ) {
        let fault = FaultStorage::new();
        let (ends, counts) = build(&fault, &sizes);
        let end = *ends.last().expect("one");
        let at = 16 + cut.index((end - 16) as usize) as u64; // somewhere after the header
        fault.tear(SEGMENT, at);
        let whole = ends.iter().take_while(|&&e| e <= at).count();
        let kept = if whole == 0 { 0 } else { counts[whole - 1] };
        reopen_expect(&fault, kept);
    }

    #[test]
    fn a_flipped_byte_in_the_last_batch_keeps_everything_before_it(
        sizes in prop::collection::vec(1u64..5, 1..20),
        pick in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let fault = FaultStorage::new();
        let (ends, counts) = build(&fault, &sizes);
        let start = if ends.len() >= 2 { ends[ends.len() - 2] } else { 16 };
        let end = *ends.last().expect("one");
        let pos = start + pick.index((end - start) as usize) as u64;
        prop_assert!(fault.flip(SEGMENT, pos, mask));
        let kept = if counts.len() >= 2 { counts[counts.len() - 2] } else { 0 };
        reopen_expect(&fault, kept);
    }
}

#[tokio::test]
async fn damage_in_a_sealed_segment_is_an_error_naming_the_offset() {
    let fault = FaultStorage::new();
    let config = LogConfig::new("sealed").segment_bytes(600);
    let log = open_fault(&fault, config.clone()).await;
    for i in 0..60 {
        log.append(vec![rec(i)]).await.expect("append");
    }
    log.close().await.expect("close");
    let mut bases: Vec<u64> = fault
        .list()
        .expect("list")
        .iter()
        .filter_map(|n| n.strip_suffix(".log")?.parse().ok())
        .collect();
    bases.sort_unstable();
    assert!(bases.len() >= 3);
    // The last byte of the first segment belongs to its last record, offset bases[1] - 1.
    let first = format!("{:020}.log", bases[0]);
    let len = fault.file_len(&first).expect("len");
    assert!(fault.flip(&first, len - 1, 0xff));
    for drop_index in [false, true] {
        if drop_index {
            fault
                .remove(&format!("{:020}.index", bases[0]))
                .expect("remove index");
        }
        let log = open_fault(&fault, config.clone()).await;
        let err = log.read(0, 1000).await.expect_err("corrupt");
        match err {
            Error::Corrupt { stream, offset } => {
                assert_eq!((stream.as_str(), offset), ("sealed", bases[1] - 1))
            }
            other => panic!("{other:?}"),
        }
        // Everything before the damage and after the segment still reads.
        let before = log
            .read(0, (bases[1] - 1) as usize)
            .await
            .expect("before the damage");
        assert_eq!(before.len() as u64, bases[1] - 1);
        let after = read_all(&log, bases[1]).await;
        // (60 records, plus the one appended at the end of the first round)
        assert_eq!(after.len() as u64, 60 + u64::from(drop_index) - bases[1]);
        for r in &after {
            check(r, r.offset);
        }
        assert_eq!(
            log.append(vec![rec(60)]).await.expect("append").first,
            60 + u64::from(drop_index)
        );
        log.close().await.expect("close");
    }
}
