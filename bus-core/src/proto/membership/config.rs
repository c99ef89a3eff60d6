//! The knobs of membership.

use super::*;

/// The knobs of [`Membership`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MembershipConfig {
    /// The most nodes we keep links to (dialled or being dialled; seeds included). Default 256.
    pub max_peers: usize,
    /// The most entries the table holds, tombstones included. When it is full, news of a
    /// further node first evicts a tombstone or a member we cannot reach, and is dropped if
    /// there is none. Bounds what a peer can make us store. Default 4096.
    pub max_members: usize,
    /// How often a gossip round starts. Default 1 s.
    pub gossip_interval: Duration,
    /// How many connected peers each round's digest goes to. Default 1.
    pub gossip_fanout: usize,
    /// Consecutive failed dials after which an address that is not a seed is forgotten.
    /// Default 5.
    pub forget_after_failures: u32,
    /// The redial schedule.
    pub backoff: Backoff,
    /// How long a tombstone is kept. It must outlive any stale news of the node still
    /// travelling; after it expires, such news brings the node back until it is found
    /// unreachable and buried again. Default 5 min.
    pub tombstone_ttl: Duration,
    /// How long a live member may go on failing every dial (counted from the first failure
    /// since we were last connected to it) before it is buried as `Dead`. A member with no
    /// address left to dial is buried at once. Default 5 min.
    pub unreachable_timeout: Duration,
    /// The largest gossip message we send, in bytes as framed; bigger answers are split.
    /// The runtime passes the send limit of each link to
    /// [`handle_gossip`](Membership::handle_gossip), and the smaller of the two applies.
    /// At least [`MIN_MESSAGE_SIZE`]. Default 512 KiB.
    pub max_message_size: usize,
    /// The seed of the random source (gossip partners, jitter).
    pub rng_seed: u64,
    /// The address schemes we can dial (`"tcp"`, `"ws"`), lower-case; empty means every
    /// scheme. A member none of whose addresses we can dial is never dialled nor buried by
    /// us: it is [`Route::Unreachable`] from here, and stays a member for the nodes that
    /// share a transport with it. Default empty.
    pub schemes: Vec<String>,
    /// Schemes that reach only nodes of our own host id, such as `"unix"` (a socket path means
    /// nothing on another machine). Default `["unix"]`.
    pub same_host_schemes: Vec<String>,
    /// The most dials under way at once (seeds included): a dial is under way from when it
    /// is handed out until it is reported failed or succeeded. Default 8.
    pub max_dials_in_flight: usize,
    /// How many dials may start per second, on average (a token bucket refilled at this
    /// rate). Default 64.
    pub dial_rate: u32,
    /// How many dials may start at once after a quiet spell (the token bucket's size).
    /// Default 8.
    pub dial_burst: u32,
    /// The most nodes new to the table that one peer's gossip may bring in per
    /// [`gossip_interval`](Self::gossip_interval); further new nodes in its deltas are
    /// ignored (news of nodes we hold is not counted). Default 64, the default `dial_rate`
    /// per default interval, so that one peer cannot bring in members faster than we can
    /// try them.
    pub max_introductions: usize,
}

impl MembershipConfig {
    /// Checks the configuration; [`Membership::new`] calls it.
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error when `max_peers`, `max_members` (which
    /// counts our own entry), `gossip_fanout` or `forget_after_failures` is zero, a duration
    /// (the gossip interval, the backoff base and cap, the tombstone lifetime, the
    /// unreachable timeout) is zero or over a day, the backoff cap is under its base, the
    /// jitter is not a number in `0.0..=1.0`, `max_message_size` is under
    /// [`MIN_MESSAGE_SIZE`], `max_dials_in_flight`, `dial_rate`, `dial_burst` or
    /// `max_introductions` is zero, or `dial_rate` is over [`MAX_DIAL_RATE`]. A zero interval
    /// or backoff would make [`poll_timeout`](Membership::poll_timeout) always due: a busy
    /// loop; a zero dial rate would never dial.
    pub fn validate(&self) -> Result<(), crate::Error> {
        if self.max_peers == 0
            || self.max_members < 2
            || self.gossip_fanout == 0
            || self.forget_after_failures == 0
        {
            return Err(crate::Error::config(
                "max_peers, gossip_fanout and forget_after_failures must be above zero, \
                 max_members at least 2",
            ));
        }
        if self.max_dials_in_flight == 0
            || self.dial_rate == 0
            || self.dial_rate > MAX_DIAL_RATE
            || self.dial_burst == 0
            || self.max_introductions == 0
        {
            return Err(crate::Error::config(
                "max_dials_in_flight, dial_burst and max_introductions must be above zero, \
                 dial_rate within 1..=10000 per second",
            ));
        }
        for d in [
            self.gossip_interval,
            self.backoff.base,
            self.backoff.cap,
            self.tombstone_ttl,
            self.unreachable_timeout,
        ] {
            if d.is_zero() || d > MAX_DURATION {
                return Err(crate::Error::config(
                    "membership durations must be above zero and at most a day",
                ));
            }
        }
        if self.backoff.cap < self.backoff.base {
            return Err(crate::Error::config(
                "the backoff cap must not be under its base",
            ));
        }
        if !(0.0..=1.0).contains(&self.backoff.jitter) {
            return Err(crate::Error::config(
                "the backoff jitter must be within 0.0..=1.0",
            ));
        }
        if self.max_message_size < MIN_MESSAGE_SIZE {
            return Err(crate::Error::config(
                "max_message_size must be at least 16 KiB",
            ));
        }
        Ok(())
    }
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            max_peers: 256,
            max_members: 4096,
            gossip_interval: Duration::from_secs(1),
            gossip_fanout: 1,
            forget_after_failures: 5,
            backoff: Backoff::default(),
            tombstone_ttl: Duration::from_secs(300),
            unreachable_timeout: Duration::from_secs(300),
            max_message_size: 512 * 1024,
            rng_seed: 0,
            schemes: Vec::new(),
            same_host_schemes: vec!["unix".to_owned()],
            max_dials_in_flight: 8,
            dial_rate: 64,
            dial_burst: 8,
            max_introductions: 64,
        }
    }
}
