//! Exponential backoff with jitter, the one retry schedule of the crate: membership's redials,
//! the node's accept loop and the WebSocket transport's accept loop all use [`Backoff`].
//!
//! It is sans-io like the rest of `proto`: it takes the attempt number and an rng and returns a
//! [`Duration`]; the caller sleeps. A seeded rng replays the same delays.

use std::time::Duration;

/// Exponential backoff with jitter: `min(cap, base × 2^attempt)`, then multiplied by a random
/// factor in `[1 − jitter, 1 + jitter]`.
///
/// So a delay is never more than `cap × (1 + jitter)`; at the cap, the jitter still spreads
/// redials of many nodes apart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The delay before the first retry (attempt 0), before jitter.
    pub base: Duration,
    /// The largest delay before jitter.
    pub cap: Duration,
    /// The jitter fraction, clamped to `0.0..=1.0`.
    pub jitter: f64,
}

impl Default for Backoff {
    /// 250 ms, doubling up to 30 s, ±20 %.
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(250),
            cap: Duration::from_secs(30),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay of retry number `attempt` (0 for the first) before jitter:
    /// `min(cap, base × 2^attempt)`.
    pub fn centre(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay of retry number `attempt`, with jitter drawn from `rng` (one draw per call,
    /// whatever the jitter, so a seeded run replays).
    pub fn delay(&self, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        let centre = self.centre(attempt);
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let factor = 1.0 + jitter * (rng.f64() * 2.0 - 1.0);
        Duration::try_from_secs_f64(centre.as_secs_f64() * factor).unwrap_or(centre)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn backoff(base: u64, cap: u64, jitter: f64) -> Backoff {
        Backoff {
            base: MS * base as u32,
            cap: MS * cap as u32,
            jitter,
        }
    }

    #[test]
    fn the_centre_doubles_from_the_base_up_to_the_cap() {
        let b = backoff(10, 1000, 0.0);
        let centres: Vec<_> = (0..9).map(|a| b.centre(a)).collect();
        let ms = [10, 20, 40, 80, 160, 320, 640, 1000, 1000];
        assert_eq!(centres, ms.map(|m| MS * m).to_vec());
    }

    #[test]
    fn a_huge_attempt_number_stays_at_the_cap() {
        let b = backoff(250, 30_000, 0.0);
        assert_eq!(b.centre(31), b.cap);
        assert_eq!(b.centre(32), b.cap);
        assert_eq!(b.centre(u32::MAX), b.cap);
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(b.delay(u32::MAX, &mut rng), b.cap);
    }

    #[test]
    fn without_jitter_the_delay_is_the_centre() {
        let b = backoff(10, 1000, 0.0);
        let mut rng = fastrand::Rng::with_seed(7);
        for attempt in 0..12 {
            assert_eq!(b.delay(attempt, &mut rng), b.centre(attempt));
        }
    }

    #[test]
    fn jitter_stays_within_its_fraction_and_spreads_delays() {
        let b = backoff(100, 100, 0.2);
        let mut rng = fastrand::Rng::with_seed(42);
        let delays: Vec<_> = (0..200).map(|_| b.delay(0, &mut rng)).collect();
        assert!(delays.iter().all(|d| (MS * 80..=MS * 120).contains(d)));
        assert!(delays.iter().any(|d| *d < MS * 95) && delays.iter().any(|d| *d > MS * 105));
    }

    #[test]
    fn a_jitter_out_of_range_is_clamped_and_nan_means_none() {
        let mut rng = fastrand::Rng::with_seed(3);
        let wide = backoff(100, 100, 5.0);
        assert!((0..200).all(|_| wide.delay(0, &mut rng) <= MS * 200));
        let nan = backoff(100, 100, f64::NAN);
        assert_eq!(nan.delay(0, &mut rng), MS * 100);
    }

    #[test]
    fn a_seeded_rng_replays_the_same_delays() {
        let b = Backoff::default();
        let run = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (0..10).map(|a| b.delay(a, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }
}
