//! The retirement fence driven with a fake clock.

use super::*;

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn a_connection_in_use_never_closes_and_has_no_timer() {
    let t0 = Instant::now();
    let r = Retirement::default();
    assert!(!r.is_retired());
    assert!(!r.wants_notice());
    assert_eq!(r.poll_timeout(), None);
    assert_eq!(r.may_close(true, true, t0 + s(3600)), None);
}

#[test]
fn a_retired_connection_closes_once_both_ends_are_done() {
    let t0 = Instant::now();
    let mut r = Retirement::new(s(30));
    r.retire(t0);
    assert!(r.wants_notice());
    // Without our notice queued, the peer may still be sending: not drained.
    assert_eq!(r.may_close(true, true, t0 + s(1)), None);
    r.notice_sent();
    assert!(!r.wants_notice());
    // Our reply still awaited, or the peer's notice not yet read: not drained.
    assert_eq!(r.may_close(true, false, t0 + s(1)), None);
    assert_eq!(r.may_close(false, true, t0 + s(1)), None);
    assert_eq!(r.may_close(true, true, t0 + s(1)), Some(Closing::Drained));
}

#[test]
fn the_bound_closes_a_busy_retired_connection() {
    let t0 = Instant::now();
    let mut r = Retirement::new(s(30));
    r.retire(t0 + s(5));
    // A second retirement does not move the bound.
    r.retire(t0 + s(20));
    assert_eq!(r.poll_timeout(), Some(t0 + s(35)));
    assert_eq!(
        r.may_close(false, false, t0 + s(35) - Duration::from_millis(1)),
        None
    );
    assert_eq!(
        r.may_close(false, false, t0 + s(35)),
        Some(Closing::BoundPassed)
    );
    // Whether the notice went out or not.
    r.notice_sent();
    assert_eq!(
        r.may_close(true, false, t0 + s(40)),
        Some(Closing::BoundPassed)
    );
}
