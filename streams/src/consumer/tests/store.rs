//! The redb store: round trips, grouped commits, deletes, and files it must refuse.

use std::time::{Duration, Instant};

use super::{at, consumer, recs};
use crate::consumer::{
    Change, Consumer, ConsumerConfig, ConsumerStore, Loaded, StateRow, StoreError,
};

fn commit(store: &ConsumerStore, consumers: &mut [&mut Consumer]) {
    let changes: Vec<Change> = consumers
        .iter_mut()
        .filter_map(|c| c.changes())
        .map(Change::Update)
        .collect();
    store.commit(&changes).unwrap();
}

fn loaded(c: &Consumer) -> Loaded {
    Loaded {
        name: c.name().to_owned(),
        config: c.config().clone(),
        state: c.snapshot(),
    }
}

#[test]
fn commit_drop_reopen_loads_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let mut a = consumer(3, 100);
    let config = ConsumerConfig::new()
        .filter(["a", "b"])
        .start(crate::From::Time(1_700_000_000_000))
        .ack_wait(Duration::from_millis(1_500));
    let mut b = Consumer::new("audit", config, 40);
    {
        let store = ConsumerStore::open_in(dir.path()).unwrap();
        assert!(store.load_all().unwrap().is_empty());
        a.take(t0, 100, recs(0..20));
        b.take(t0, 100, recs(40..45));
        commit(&store, &mut [&mut a, &mut b]);
        for o in [3, 4, 9, 0, 1, 15] {
            a.ack(o).unwrap();
        }
        a.nak(5, None, t0).unwrap();
        a.take(t0, 100, recs(20..20));
        a.take(at(t0, 10), 100, recs(20..22));
        b.ack(41).unwrap();
        commit(&store, &mut [&mut a, &mut b]);
    }
    let store = ConsumerStore::open(dir.path().join(ConsumerStore::FILE_NAME)).unwrap();
    assert_eq!(store.path(), dir.path().join(ConsumerStore::FILE_NAME));
    let all = store.load_all().unwrap();
    assert_eq!(all, vec![loaded(&b), loaded(&a)]);
    assert_eq!(all[1].state.row.floor, 2);
    assert_eq!(all[1].state.acked, vec![(3, 5), (9, 10), (15, 16)]);
    assert!(
        all[1].state.pending.contains(&(5, 3)),
        "{:?}",
        all[1].state.pending
    );
    assert_eq!(all[1].state.row.redelivered, a.info(0).redelivered);
}

#[test]
fn uncommitted_changes_are_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let mut c = consumer(5, 100);
    let store = ConsumerStore::open_in(dir.path()).unwrap();
    c.take(t0, 10, recs(0..4));
    commit(&store, &mut [&mut c]);
    let committed = loaded(&c);
    c.ack(0).unwrap();
    c.ack(2).unwrap();
    drop(store);
    let store = ConsumerStore::open_in(dir.path()).unwrap();
    assert_eq!(store.load_all().unwrap(), vec![committed]);
}

#[test]
fn reset_and_delete_remove_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let store = ConsumerStore::open_in(dir.path()).unwrap();
    let mut c = consumer(5, 100);
    let mut other = Consumer::new("other", ConsumerConfig::new(), 0);
    c.take(t0, 10, recs(0..8));
    other.take(t0, 10, recs(0..3));
    c.ack(3).unwrap();
    commit(&store, &mut [&mut c, &mut other]);
    c.reset(5);
    commit(&store, &mut [&mut c]);
    let all = store.load_all().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].state, c.snapshot());
    assert!(all[0].state.pending.is_empty() && all[0].state.acked.is_empty());
    assert!(store.delete("billing").unwrap());
    assert!(!store.delete("billing").unwrap());
    assert_eq!(store.load_all().unwrap(), vec![loaded(&other)]);
    // A consumer created again under the name starts clean.
    let mut again = Consumer::new("billing", ConsumerConfig::new(), 2);
    commit(&store, &mut [&mut again]);
    assert_eq!(store.load_all().unwrap()[0], loaded(&again));
}

#[test]
fn a_file_that_is_not_a_store_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(ConsumerStore::FILE_NAME);
    for garbage in [
        vec![0xAB; 10_000],
        b"not a database".to_vec(),
        vec![0; 4096],
    ] {
        std::fs::write(&path, &garbage).unwrap();
        let err = ConsumerStore::open(&path).unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
    let missing_dir = dir.path().join("no").join("such").join("dir.redb");
    let err = ConsumerStore::open(&missing_dir).unwrap_err();
    assert!(err.to_string().contains("dir.redb"), "{err}");
    let crate_err = err.into_error("orders");
    assert!(matches!(crate_err, crate::Error::Io { ref stream, .. } if stream == "orders"));
}

#[test]
fn a_truncated_store_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(ConsumerStore::FILE_NAME);
    {
        let store = ConsumerStore::open(&path).unwrap();
        let mut c = consumer(5, 100);
        c.take(Instant::now(), 500, recs(0..500));
        commit(&store, &mut [&mut c]);
    }
    let full = std::fs::read(&path).unwrap();
    let mut refused = 0;
    for len in [full.len() / 2, 1000, 100] {
        std::fs::write(&path, &full[..len]).unwrap();
        // redb 2.6 asserts on a truncated file; the store must turn that into an error.
        match ConsumerStore::open(&path).and_then(|s| s.load_all()) {
            Ok(_) => {}
            Err(e) => {
                assert!(e.to_string().contains(ConsumerStore::FILE_NAME), "{e}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0);
}

#[test]
fn flipped_bytes_give_errors_or_a_valid_state_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(ConsumerStore::FILE_NAME);
    let t0 = Instant::now();
    {
        let store = ConsumerStore::open(&path).unwrap();
        let mut c = consumer(5, 1000);
        c.take(t0, 300, recs(0..300));
        for o in (0..300).step_by(3) {
            c.ack(o).unwrap();
        }
        commit(&store, &mut [&mut c]);
    }
    let full = std::fs::read(&path).unwrap();
    let mut rng = fastrand::Rng::with_seed(16);
    for _ in 0..40 {
        let mut bytes = full.clone();
        let at = rng.usize(..bytes.len());
        bytes[at] ^= 1 << rng.u8(..8);
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(all) = ConsumerStore::open(&path).and_then(|s| s.load_all()) {
            // Whatever loads has passed validation.
            for c in all {
                c.state.validate().unwrap();
            }
        }
    }
}

#[test]
fn contradictory_rows_are_reported_with_the_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let store = ConsumerStore::open_in(dir.path()).unwrap();
    let mut c = consumer(5, 100);
    let mut changes = c.changes().unwrap();
    // A position beyond the floor with nothing pending or done in between.
    changes.row = StateRow {
        floor: 0,
        position: 3,
        ..StateRow::default()
    };
    store.commit(&[Change::Update(changes)]).unwrap();
    let err = store.load_all().unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }));
    let text = err.to_string();
    assert!(
        text.contains("billing") && text.contains(ConsumerStore::FILE_NAME),
        "{text}"
    );
    let crate_err = err.into_error("orders");
    assert!(matches!(
        crate_err,
        crate::Error::Io {
            kind: std::io::ErrorKind::InvalidData,
            ..
        }
    ));
}

#[test]
fn a_store_of_a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(ConsumerStore::FILE_NAME);
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
        txn.open_table(meta).unwrap().insert("version", 2).unwrap();
        txn.commit().unwrap();
    }
    let err = ConsumerStore::open(&path).unwrap_err();
    assert!(err.to_string().contains("format version 2"), "{err}");
}

#[test]
fn a_store_open_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = ConsumerStore::open_in(dir.path()).unwrap();
    let err = ConsumerStore::open_in(dir.path()).unwrap_err();
    assert!(err.to_string().contains(ConsumerStore::FILE_NAME), "{err}");
}

#[test]
fn the_config_round_trips_through_serde() {
    let config = ConsumerConfig::new()
        .ack_wait(Duration::from_millis(2_500))
        .max_deliveries(0)
        .filter(["x"])
        .start(crate::From::Offset(9));
    assert_eq!(config.max_deliveries, 1, "clamped");
    let bytes = rmp_serde::to_vec_named(&config).unwrap();
    let back: ConsumerConfig = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(back, config);
    // Fields missing from an older encoding take their defaults.
    #[derive(serde::Serialize)]
    struct Old {
        max_deliveries: u32,
    }
    let old = rmp_serde::to_vec_named(&Old { max_deliveries: 7 }).unwrap();
    let back: ConsumerConfig = rmp_serde::from_slice(&old).unwrap();
    assert_eq!(back, ConsumerConfig::new().max_deliveries(7));
}

/// Prints what a commit costs for consumers of different sizes (the store writes only the
/// rows that changed, so the time should not grow with the number of pending records).
#[test]
#[ignore = "a measurement: cargo test --release -p meshbus-streams --lib commit_cost -- --ignored --nocapture"]
fn commit_cost_follows_the_change_not_the_state() {
    let t0 = Instant::now();
    for (pending, acks_per_commit) in [(200, 1), (10_000, 1), (100_000, 1), (100_000, 100)] {
        let dir = tempfile::tempdir().unwrap();
        let store = ConsumerStore::open_in(dir.path()).unwrap();
        let mut c = consumer(5, 200_000);
        c.take(t0, pending, recs(0..pending as u64));
        commit(&store, &mut [&mut c]);
        let commits = 100;
        let started = Instant::now();
        // Odd offsets: every ack leaves a gap, the worst case for the done ranges.
        let mut next = 1;
        for _ in 0..commits {
            for _ in 0..acks_per_commit {
                c.ack(next).unwrap();
                next += 2;
            }
            commit(&store, &mut [&mut c]);
        }
        let per_commit = started.elapsed() / commits;
        let bytes = std::fs::metadata(store.path()).unwrap().len();
        println!(
            "pending {pending:>6}, {acks_per_commit:>3} acks per commit: {per_commit:>10.2?} per commit, file {bytes} bytes"
        );
    }
}
