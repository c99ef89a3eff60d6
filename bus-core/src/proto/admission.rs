//! Admission of inbound connections: how many handshakes one remote host may start.
//!
//! Every inbound connection costs the node a task, a handshake and, once established, a place
//! in membership. A host that opens connections as fast as it can (complete handshakes, each
//! then closed, or garbage) would make that cost the node's whole budget. [`HandshakeLimiter`]
//! gives each remote host a token bucket: [`RateLimit::burst`] handshakes at once, then
//! [`RateLimit::per_second`]; a connection beyond it is closed before its handshake starts.
//! (The runtime also caps how many inbound handshakes run at once, node-wide.)
//!
//! Plain state with a `now`, like the rest of `proto`: tests drive it with a fake clock.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use meshbus_core::proto::admission::{HandshakeLimiter, RateLimit};
//!
//! let mut limiter = HandshakeLimiter::new(Some(RateLimit::new(10, 2)));
//! let t0 = Instant::now();
//! assert!(limiter.admit("10.0.0.1", t0));
//! assert!(limiter.admit("10.0.0.1", t0));
//! assert!(!limiter.admit("10.0.0.1", t0)); // the burst is spent
//! assert!(limiter.admit("10.0.0.2", t0)); // another host has its own bucket
//! assert!(limiter.admit("10.0.0.1", t0 + Duration::from_millis(100))); // 10 per second
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How many handshakes one remote host may start: a burst, then a steady rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    per_second: u32,
    burst: u32,
}

impl RateLimit {
    /// The default per remote host: bursts of 256 handshakes, then 64 per second.
    ///
    /// A host that runs many nodes (every test and example of this workspace runs up to 50
    /// on 127.0.0.1, all joining at once) needs one handshake per node and link, plus redials;
    /// a flood of thousands is slowed to 64 per second.
    pub const DEFAULT: RateLimit = RateLimit {
        per_second: 64,
        burst: 256,
    };

    /// `burst` handshakes at once, refilled at `per_second`; both at least 1.
    pub const fn new(per_second: u32, burst: u32) -> Self {
        RateLimit {
            per_second: if per_second == 0 { 1 } else { per_second },
            burst: if burst == 0 { 1 } else { burst },
        }
    }

    /// Handshakes per second once the burst is spent.
    pub const fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Handshakes a host may start at once.
    pub const fn burst(&self) -> u32 {
        self.burst
    }

    /// How long an empty bucket takes to refill: after that, a host's bucket is as good as
    /// new, and forgetting it loses nothing.
    fn refill_time(&self) -> Duration {
        Duration::from_secs_f64(f64::from(self.burst) / f64::from(self.per_second))
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit::DEFAULT
    }
}

/// One host's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// The bucket refilled up to `now`.
    fn refilled(self, limit: RateLimit, now: Instant) -> Bucket {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        let tokens = self.tokens + elapsed * f64::from(limit.per_second);
        Bucket {
            tokens: tokens.min(f64::from(limit.burst)),
            at: now.max(self.at),
        }
    }

    fn is_full(self, limit: RateLimit, now: Instant) -> bool {
        self.refilled(limit, now).tokens >= f64::from(limit.burst)
    }
}

/// Token buckets of handshakes, one per remote host; see the [module docs](self).
///
/// At most [`max_hosts`](Self::with_max_hosts) hosts are tracked (default
/// [`DEFAULT_MAX_HOSTS`](Self::DEFAULT_MAX_HOSTS)), so many source addresses cannot make it
/// grow without bound. When the table is full, hosts whose bucket has refilled are forgotten
/// (they lose nothing: a new bucket is a full one); if none has, a new host is refused until
/// one has. That scan runs at most once per refill time, so a flood from many addresses costs
/// O(1) per connection on average.
#[derive(Debug, Clone)]
pub struct HandshakeLimiter {
    limit: Option<RateLimit>,
    buckets: HashMap<String, Bucket>,
    max_hosts: usize,
    /// When a full table may be scanned for refilled buckets again.
    next_prune: Option<Instant>,
}

impl HandshakeLimiter {
    /// How many remote hosts are tracked at most, by default.
    pub const DEFAULT_MAX_HOSTS: usize = 4096;

    /// A limiter with `limit` per host; `None` admits every handshake.
    pub fn new(limit: Option<RateLimit>) -> Self {
        HandshakeLimiter {
            limit,
            buckets: HashMap::new(),
            max_hosts: Self::DEFAULT_MAX_HOSTS,
            next_prune: None,
        }
    }

    /// Sets how many remote hosts are tracked at most (at least 1).
    pub fn with_max_hosts(mut self, max_hosts: usize) -> Self {
        self.max_hosts = max_hosts.max(1);
        self
    }

    /// The limit per host, if any.
    pub fn limit(&self) -> Option<RateLimit> {
        self.limit
    }

    /// How many hosts are tracked now.
    pub fn hosts(&self) -> usize {
        self.buckets.len()
    }

    /// Whether `host` may start a handshake at `now`; if so, it is counted.
    ///
    /// `host` is the remote address's host (`Addr::host`), or the whole address for a
    /// transport without hosts.
    pub fn admit(&mut self, host: &str, now: Instant) -> bool {
        let Some(limit) = self.limit else {
            return true;
        };
        if let Some(bucket) = self.buckets.get_mut(host) {
            let mut refilled = bucket.refilled(limit, now);
            let admitted = refilled.tokens >= 1.0;
            if admitted {
                refilled.tokens -= 1.0;
            }
            *bucket = refilled;
            return admitted;
        }
        if self.buckets.len() >= self.max_hosts && !self.prune(limit, now) {
            return false;
        }
        let bucket = Bucket {
            tokens: f64::from(limit.burst) - 1.0,
            at: now,
        };
        self.buckets.insert(host.to_owned(), bucket);
        true
    }

    /// Charges `host` for a handshake it failed (a wrong network key, garbage):
    /// [`FAILURE_COST`](Self::FAILURE_COST) more handshakes' worth, down to a debt of one
    /// burst. A host that keeps failing is soon held to a fraction of the rate, while one
    /// that fails now and then (a node mid key rotation) hardly notices.
    pub fn penalize(&mut self, host: &str, now: Instant) {
        let Some(limit) = self.limit else {
            return;
        };
        if let Some(bucket) = self.buckets.get_mut(host) {
            let mut refilled = bucket.refilled(limit, now);
            refilled.tokens = (refilled.tokens - Self::FAILURE_COST).max(-f64::from(limit.burst));
            *bucket = refilled;
        }
    }

    /// What a failed handshake costs its host, in handshakes: [`penalize`](Self::penalize).
    pub const FAILURE_COST: f64 = 16.0;

    /// Forgets hosts whose bucket has refilled; whether there is room now. Scans at most once
    /// per refill time.
    fn prune(&mut self, limit: RateLimit, now: Instant) -> bool {
        if self.next_prune.is_some_and(|at| now < at) {
            return false;
        }
        self.buckets.retain(|_, b| !b.is_full(limit, now));
        self.next_prune = now.checked_add(limit.refill_time());
        self.buckets.len() < self.max_hosts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn failed_handshakes_cost_their_host_more() {
        let mut l = HandshakeLimiter::new(Some(RateLimit::new(10, 32)));
        let t0 = Instant::now();
        assert!(l.admit("bad", t0));
        assert!(l.admit("good", t0));
        // Two failures spend the rest of the burst and more.
        l.penalize("bad", t0);
        l.penalize("bad", t0);
        assert!(!l.admit("bad", t0));
        assert!(l.admit("good", t0), "another host is untouched");
        // The debt is paid back at the rate: 0.1 s per handshake, from about -1.
        assert!(!l.admit("bad", ms(t0, 100)));
        assert!(l.admit("bad", ms(t0, 250)));
        // However many failures, the debt stops at one burst.
        for _ in 0..1000 {
            l.penalize("bad", ms(t0, 250));
        }
        assert!(!l.admit("bad", ms(t0, 250 + 3_200)));
        assert!(l.admit("bad", ms(t0, 250 + 3_400)));
    }

    #[test]
    fn a_host_gets_its_burst_then_the_rate() {
        let mut l = HandshakeLimiter::new(Some(RateLimit::new(10, 5)));
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(l.admit("a", t0), "handshake {i} of the burst");
        }
        assert!(!l.admit("a", t0));
        assert!(!l.admit("a", ms(t0, 99)), "not a whole token yet");
        assert!(l.admit("a", ms(t0, 100)));
        assert!(!l.admit("a", ms(t0, 100)));
        // Over 10 s at most 10 per second more, whatever the attempts.
        let admitted = (0..10_000)
            .filter(|i| l.admit("a", ms(t0, 100 + i)))
            .count();
        assert!((99..=101).contains(&admitted), "{admitted}");
        // An idle host refills to its burst, and no further.
        let later = ms(t0, 60_000);
        assert_eq!((0..100).filter(|_| l.admit("a", later)).count(), 5);
    }

    #[test]
    fn hosts_have_their_own_buckets() {
        let mut l = HandshakeLimiter::new(Some(RateLimit::new(1, 2)));
        let t0 = Instant::now();
        assert_eq!((0..10).filter(|_| l.admit("10.0.0.1", t0)).count(), 2);
        assert_eq!((0..10).filter(|_| l.admit("10.0.0.2", t0)).count(), 2);
        assert_eq!(l.hosts(), 2);
    }

    #[test]
    fn no_limit_admits_everything_and_tracks_nothing() {
        let mut l = HandshakeLimiter::new(None);
        let t0 = Instant::now();
        assert!((0..100_000).all(|_| l.admit("a", t0)));
        assert_eq!(l.hosts(), 0);
    }

    #[test]
    fn zero_is_read_as_one() {
        assert_eq!(RateLimit::new(0, 0), RateLimit::new(1, 1));
        assert_eq!(RateLimit::default(), RateLimit::DEFAULT);
    }

    #[test]
    fn the_table_of_hosts_is_bounded_and_refilled_hosts_make_room() {
        let limit = RateLimit::new(10, 10); // refills in 1 s
        let mut l = HandshakeLimiter::new(Some(limit)).with_max_hosts(3);
        let t0 = Instant::now();
        for h in ["a", "b", "c"] {
            assert!(l.admit(h, t0));
        }
        // Full, and nobody has refilled: a new host waits.
        assert!(!l.admit("d", t0));
        assert!(!l.admit("d", ms(t0, 500)));
        assert_eq!(l.hosts(), 3);
        // Known hosts go on as before.
        assert!(l.admit("a", ms(t0, 500)));
        // Refilled buckets are forgotten at the next scan, once per refill time.
        assert!(l.admit("d", ms(t0, 1_000)), "b and c refilled: room");
        assert!(l.hosts() <= 3);
        // Thousands of hosts never make it hold more than its bound.
        for i in 0..5_000 {
            let _ = l.admit(&format!("10.0.{}.{}", i / 256, i % 256), ms(t0, 1_000 + i));
            assert!(l.hosts() <= 3);
        }
    }
}
