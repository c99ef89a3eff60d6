//! The state machine alone, with time passed in.

use std::time::{Duration, Instant};

use super::{at, consumer, offsets, recs};
use crate::consumer::{AckError, Consumer, ConsumerConfig, DeadLetter, DeadReason, Delivery};

#[test]
fn out_of_order_acks_move_the_floor_exactly() {
    let t0 = Instant::now();
    let mut c = consumer(5, 100);
    assert_eq!(
        offsets(&c.take(t0, 100, recs(0..10))),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!((c.ack_floor(), c.position()), (0, 10));
    for (ack, floor) in [
        (3, 0),
        (1, 0),
        (2, 0),
        (0, 4),
        (6, 4),
        (5, 4),
        (4, 7),
        (9, 7),
    ] {
        c.ack(ack).unwrap();
        assert_eq!(c.ack_floor(), floor, "after acking {ack}");
    }
    // Done offsets above the floor are one run, not single offsets.
    assert_eq!(c.snapshot().acked, vec![(9, 10)]);
    c.ack(8).unwrap();
    assert_eq!(c.snapshot().acked, vec![(8, 10)]);
    c.ack(7).unwrap();
    assert_eq!(c.ack_floor(), 10);
    assert!(c.snapshot().acked.is_empty() && c.snapshot().pending.is_empty());
    let info = c.info(12);
    assert_eq!(
        (info.acked, info.pending, info.delivered, info.lag),
        (10, 0, 10, 2)
    );
}

#[test]
fn max_ack_pending_holds_first_deliveries_back_until_acks_come() {
    let t0 = Instant::now();
    let mut c = consumer(5, 3);
    assert_eq!(offsets(&c.take(t0, 10, recs(0..10))), vec![0, 1, 2]);
    assert_eq!(c.position(), 3, "records held back are not consumed");
    assert_eq!(c.room(), 0);
    assert!(c.take(t0, 10, recs(3..10)).is_empty());
    c.ack(1).unwrap();
    assert_eq!(offsets(&c.take(t0, 10, recs(3..10))), vec![3]);
    c.ack(0).unwrap();
    c.ack(2).unwrap();
    assert_eq!(offsets(&c.take(t0, 10, recs(4..10))), vec![4, 5]);
    assert_eq!(c.info(10).pending, 3);
}

#[test]
fn an_unacked_delivery_is_redelivered_after_ack_wait_with_its_count() {
    let t0 = Instant::now();
    let mut c = consumer(5, 100);
    c.take(t0, 10, recs(0..2));
    c.take(at(t0, 4), 10, recs(2..3));
    assert_eq!(c.next_deadline(), Some(at(t0, 10)));
    assert!(c.take(at(t0, 9), 10, recs(3..3)).is_empty());
    c.ack(1).unwrap();
    let again = c.take(at(t0, 10), 10, recs(3..4));
    // The redelivery first, with count 2, then the new record.
    assert_eq!(
        again,
        vec![
            Delivery {
                offset: 0,
                deliveries: 2
            },
            Delivery {
                offset: 3,
                deliveries: 1
            }
        ]
    );
    assert_eq!(c.next_deadline(), Some(at(t0, 14)));
    assert_eq!(
        c.take(at(t0, 14), 10, recs(4..4)),
        vec![Delivery {
            offset: 2,
            deliveries: 2
        }]
    );
    let info = c.info(4);
    assert_eq!((info.delivered, info.redelivered, info.pending), (6, 2, 3));
}

#[test]
fn redeliveries_ignore_max_ack_pending_but_respect_max() {
    let t0 = Instant::now();
    let mut c = consumer(5, 2);
    c.take(t0, 10, recs(0..5));
    assert_eq!(c.expired(at(t0, 10)), 2);
    assert!(c.has_redeliveries());
    assert_eq!(offsets(&c.take(at(t0, 10), 1, recs(2..5))), vec![0]);
    assert_eq!(offsets(&c.take(at(t0, 10), 5, recs(2..5))), vec![1]);
}

#[test]
fn a_record_past_max_deliveries_is_dead_lettered_once_and_the_floor_moves_on() {
    let t0 = Instant::now();
    let mut c = consumer(2, 100);
    c.take(t0, 10, recs(0..2));
    c.ack(1).unwrap();
    assert_eq!(
        c.take(at(t0, 10), 10, recs(2..2)),
        vec![Delivery {
            offset: 0,
            deliveries: 2
        }]
    );
    assert!(c.dead_letters().is_empty());
    assert!(
        c.take(at(t0, 20), 10, recs(2..2)).is_empty(),
        "not delivered a third time"
    );
    let dead = c.dead_letters();
    assert_eq!(
        dead,
        vec![DeadLetter {
            offset: 0,
            deliveries: 2,
            reason: DeadReason::AckWait
        }]
    );
    assert!(dead[0].to_string().contains("not acked within ack_wait"));
    assert!(c.dead_letters().is_empty(), "returned once");
    assert_eq!(c.ack_floor(), 2);
    assert_eq!(c.ack(0), Err(AckError::NotPending { offset: 0 }));
    let info = c.info(2);
    assert_eq!((info.dead_lettered, info.pending, info.acked), (1, 0, 1));
    assert_eq!(c.next_deadline(), None);
}

#[test]
fn a_nak_at_max_deliveries_dead_letters_at_once() {
    let t0 = Instant::now();
    let mut c = consumer(1, 100);
    c.take(t0, 10, recs(0..1));
    c.nak(0, Some(Duration::from_secs(60)), t0).unwrap();
    assert_eq!(
        c.dead_letters(),
        vec![DeadLetter {
            offset: 0,
            deliveries: 1,
            reason: DeadReason::Nacked
        }]
    );
    assert_eq!(c.ack_floor(), 1);
}

#[test]
fn a_nak_redelivers_after_its_delay_or_at_once() {
    let t0 = Instant::now();
    let mut c = consumer(5, 100);
    c.take(t0, 10, recs(0..3));
    c.nak(1, Some(Duration::from_secs(3)), at(t0, 1)).unwrap();
    assert_eq!(c.next_deadline(), Some(at(t0, 4)));
    assert!(c.take(at(t0, 3), 10, recs(3..3)).is_empty());
    assert_eq!(
        c.take(at(t0, 4), 10, recs(3..3)),
        vec![Delivery {
            offset: 1,
            deliveries: 2
        }]
    );
    // Without a delay: the next take, before new records.
    c.nak(2, None, at(t0, 5)).unwrap();
    assert_eq!(offsets(&c.take(at(t0, 5), 10, recs(3..4))), vec![2, 3]);
    // A nak of a record waiting for redelivery, or an ack of it, is taken.
    c.nak(0, None, at(t0, 5)).unwrap();
    c.nak(0, None, at(t0, 5)).unwrap();
    c.ack(0).unwrap();
    assert!(c.take(at(t0, 6), 10, recs(4..4)).is_empty());
}

#[test]
fn reset_moves_the_cursor_and_drops_pending() {
    let t0 = Instant::now();
    let mut c = consumer(5, 100);
    c.take(t0, 10, recs(0..6));
    for o in 0..4 {
        c.ack(o).unwrap();
    }
    c.reset(2);
    assert_eq!((c.ack_floor(), c.position(), c.info(6).pending), (2, 2, 0));
    assert_eq!(c.next_deadline(), None);
    assert_eq!(c.ack(4), Err(AckError::NeverDelivered { offset: 4 }));
    // Acked records at or above the new position are delivered again, as first deliveries.
    let again = c.take(at(t0, 1), 10, recs(0..6));
    assert_eq!(offsets(&again), vec![2, 3, 4, 5]);
    assert!(again.iter().all(|d| d.deliveries == 1));
    // Forwards: what lies below is passed over.
    c.reset(100);
    assert!(c.take(at(t0, 2), 10, recs(0..6)).is_empty());
    assert_eq!(offsets(&c.take(at(t0, 2), 10, recs(100..101))), vec![100]);
    assert_eq!(c.info(101).acked, 4, "counters survive a reset");
}

#[test]
fn acks_of_offsets_never_delivered_are_errors() {
    let t0 = Instant::now();
    let mut c = consumer(5, 100);
    assert_eq!(c.ack(0), Err(AckError::NeverDelivered { offset: 0 }));
    assert_eq!(
        c.nak(u64::MAX, None, t0),
        Err(AckError::NeverDelivered { offset: u64::MAX })
    );
    c.take(t0, 1, recs(0..5));
    assert_eq!(c.ack(1), Err(AckError::NeverDelivered { offset: 1 }));
    c.ack(0).unwrap();
    assert_eq!(c.ack(0), Err(AckError::NotPending { offset: 0 }));
    assert_eq!(c.nak(0, None, t0), Err(AckError::NotPending { offset: 0 }));
    assert_eq!(c.info(5).acked, 1);
}

#[test]
fn the_filter_passes_over_other_events_and_the_floor_follows() {
    let t0 = Instant::now();
    let config = ConsumerConfig::new().filter(["a"]);
    let mut c = Consumer::new("f", config, 0);
    let records = [
        (0, Some("a")),
        (1, Some("b")),
        (2, None),
        (3, Some("a")),
        (4, Some("b")),
    ];
    assert_eq!(offsets(&c.take(t0, 10, records)), vec![0, 3]);
    assert_eq!((c.position(), c.ack_floor()), (5, 0));
    assert_eq!(c.ack(1), Err(AckError::NotPending { offset: 1 }));
    c.ack(0).unwrap();
    assert_eq!(c.ack_floor(), 3);
    c.ack(3).unwrap();
    assert_eq!(c.ack_floor(), 5);
}

#[test]
fn records_gone_to_retention_are_skipped_and_counted() {
    let t0 = Instant::now();
    let mut c = consumer(5, 100);
    c.take(t0, 10, recs(0..5));
    c.ack(1).unwrap();
    c.ack(4).unwrap();
    c.skip_gone(3);
    assert_eq!((c.ack_floor(), c.position()), (3, 5));
    assert_eq!(c.snapshot().pending, vec![(3, 1)]);
    assert_eq!(c.info(5).gone, 2, "0 and 2 were pending");
    // A read that starts past the position: the offsets in between are gone too.
    assert_eq!(offsets(&c.take(t0, 10, recs(8..9))), vec![8]);
    assert_eq!(c.info(9).gone, 5);
    c.skip_gone(20);
    assert_eq!((c.ack_floor(), c.position(), c.info(20).gone), (20, 20, 18));
    assert!(c.snapshot().pending.is_empty() && c.next_deadline().is_none());
}

#[test]
fn changes_are_as_small_as_what_changed() {
    let t0 = Instant::now();
    let mut c = consumer(5, 20_000);
    assert!(c.changes().is_some_and(|ch| ch.config.is_some()));
    assert!(c.changes().is_none(), "nothing changed since");
    c.take(t0, 10_000, recs(0..10_000));
    let first = c.changes().unwrap();
    assert_eq!((first.pending.len(), first.acked.len()), (10_000, 0));
    assert!(first.config.is_none());
    c.ack(5_000).unwrap();
    let one = c.changes().unwrap();
    assert_eq!(one.pending, vec![(5_000, None)]);
    assert_eq!(one.acked, vec![(5_000, Some(5_001))]);
    c.ack(0).unwrap();
    let floor = c.changes().unwrap();
    assert_eq!(
        (floor.pending.len(), floor.acked.len(), floor.row.floor),
        (1, 0, 1)
    );
    c.reset(7);
    let reset = c.changes().unwrap();
    assert!(reset.clear && reset.pending.is_empty() && reset.acked.is_empty());
}

#[test]
fn a_restored_consumer_redelivers_after_ack_wait_from_the_load() {
    let t0 = Instant::now();
    let mut c = consumer(5, 100);
    c.take(t0, 10, recs(0..3));
    c.ack(1).unwrap();
    let restored = Consumer::restore("billing", c.config().clone(), c.snapshot(), at(t0, 100));
    let mut r = restored;
    assert_eq!(r.snapshot(), c.snapshot());
    assert!(
        r.changes().is_none(),
        "a restored consumer has nothing to write"
    );
    assert!(r.take(at(t0, 109), 10, recs(3..3)).is_empty());
    let again = r.take(at(t0, 110), 10, recs(3..3));
    assert_eq!(offsets(&again), vec![0, 2]);
    assert!(again.iter().all(|d| d.deliveries == 2));
}

#[test]
fn absurd_durations_do_not_overflow_the_clock() {
    let t0 = Instant::now();
    let config = ConsumerConfig::new().ack_wait(Duration::MAX);
    let mut c = Consumer::new("slow", config, 0);
    c.take(t0, 1, recs(0..1));
    c.nak(0, Some(Duration::MAX), t0).unwrap();
    assert!(c.next_deadline().is_some_and(|d| d > t0));
}

#[test]
fn a_new_config_is_written_and_applies_from_the_next_call() {
    let t0 = Instant::now();
    let mut c = consumer(5, 100);
    let _ = c.changes();
    c.take(t0, 10, recs(0..2));
    let lower = c.config().clone().max_deliveries(1).max_ack_pending(3);
    c.set_config(lower.clone());
    assert_eq!(c.changes().and_then(|ch| ch.config), Some(lower));
    assert_eq!(offsets(&c.take(t0, 10, recs(2..10))), vec![2]);
    c.expired(at(t0, 10));
    let dead: Vec<u64> = c.dead_letters().iter().map(|d| d.offset).collect();
    assert_eq!(dead, vec![0, 1, 2]);
}
