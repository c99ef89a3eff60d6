//! Failure detection on an established connection.
//!
//! Any **whole** frame from the peer proves it alive. A link on which this node has sent nothing
//! for `heartbeat_interval` gets a `Ping`, so the peer sees life from us too. A peer from which
//! no whole frame has arrived for `peer_timeout` is dead, at exactly `last frame + peer_timeout`.
//! Bytes of an unfinished frame are not life: a frame whose first byte has arrived must be
//! complete within `frame_read_deadline`, or the peer is dead too, so a peer that trickles a
//! byte at a time cannot keep a connection open. A `Goodbye` makes the peer dead at once.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use meshbus_core::proto::liveness::{DeadReason, Liveness, LivenessConfig, LivenessEvent};
//!
//! # fn main() -> Result<(), meshbus_core::Error> {
//! let t0 = Instant::now();
//! let mut link = Liveness::new(LivenessConfig::default(), t0)?;
//! assert_eq!(link.poll(t0 + Duration::from_millis(1_000)), Some(LivenessEvent::SendPing));
//! assert_eq!(
//!     link.poll(t0 + Duration::from_millis(5_000)),
//!     Some(LivenessEvent::Dead { reason: DeadReason::Silent })
//! );
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::time::{Duration, Instant};

/// How often an idle link sends a `Ping` by default: every second.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// How long a peer may stay silent before it is dead, by default: 5 s.
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest duration accepted in the configuration: a day. Bounding it keeps
/// `instant + duration` from overflowing `Instant`.
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// The timing of failure detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessConfig {
    heartbeat_interval: Duration,
    peer_timeout: Duration,
    frame_read_deadline: Duration,
}

impl Default for LivenessConfig {
    /// [`DEFAULT_HEARTBEAT_INTERVAL`], and [`DEFAULT_PEER_TIMEOUT`] for both the peer timeout
    /// and the frame read deadline.
    fn default() -> Self {
        LivenessConfig {
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            peer_timeout: DEFAULT_PEER_TIMEOUT,
            frame_read_deadline: DEFAULT_PEER_TIMEOUT,
        }
    }
}

impl LivenessConfig {
    /// Sets how long this node may send nothing before it sends a `Ping`.
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// Sets how long the peer may send no whole frame before it is dead. It should be several
    /// of the peer's heartbeat intervals.
    pub fn with_peer_timeout(mut self, timeout: Duration) -> Self {
        self.peer_timeout = timeout;
        self
    }

    /// Sets how long one frame may take to arrive, from its first byte to its last.
    pub fn with_frame_read_deadline(mut self, deadline: Duration) -> Self {
        self.frame_read_deadline = deadline;
        self
    }

    /// How long this node may send nothing before it sends a `Ping`.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// How long the peer may send no whole frame before it is dead.
    pub fn peer_timeout(&self) -> Duration {
        self.peer_timeout
    }

    /// How long one frame may take to arrive, from its first byte to its last.
    pub fn frame_read_deadline(&self) -> Duration {
        self.frame_read_deadline
    }

    /// Checks the configuration; [`Liveness::new`] calls it.
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error when a duration is zero or over a day, or
    /// the heartbeat interval is not shorter than the peer timeout (an idle but healthy peer
    /// would look dead).
    pub fn validate(&self) -> Result<(), crate::Error> {
        for d in [
            self.heartbeat_interval,
            self.peer_timeout,
            self.frame_read_deadline,
        ] {
            if d.is_zero() || d > MAX_DURATION {
                return Err(crate::Error::config(
                    "liveness durations must be above zero and at most a day",
                ));
            }
        }
        if self.heartbeat_interval >= self.peer_timeout {
            return Err(crate::Error::config(
                "the heartbeat interval must be shorter than the peer timeout",
            ));
        }
        Ok(())
    }
}

/// What the connection should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LivenessEvent {
    /// This node has sent nothing for `heartbeat_interval`: send a `Ping`.
    SendPing,
    /// The peer is dead: close the connection, remove its routes and fail what waits on it
    /// with `PeerLost`.
    Dead {
        /// Why.
        reason: DeadReason,
    },
}

/// Why a peer is considered dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadReason {
    /// No whole frame arrived for `peer_timeout`.
    Silent,
    /// A frame's first byte arrived but the frame was not complete within its read deadline.
    FrameTooSlow,
    /// The peer said `Goodbye`.
    Goodbye,
}

impl fmt::Display for DeadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeadReason::Silent => "the peer was silent for longer than the peer timeout",
            DeadReason::FrameTooSlow => "a frame took longer than its read deadline to arrive",
            DeadReason::Goodbye => "the peer said goodbye",
        })
    }
}

impl From<DeadReason> for crate::Error {
    /// A [`PeerLost`](crate::ErrorKind::PeerLost) error naming the reason.
    fn from(reason: DeadReason) -> Self {
        crate::Error::new(crate::ErrorKind::PeerLost).with_detail(reason.to_string())
    }
}

/// Failure detection for one established connection.
///
/// The runtime reports what it reads and writes, arms a timer for
/// [`next_deadline`](Self::next_deadline), and calls [`poll`](Self::poll) whenever the timer
/// fires or something was reported, until `poll` returns `None`.
#[derive(Debug, Clone)]
pub struct Liveness {
    config: LivenessConfig,
    /// When the last whole frame arrived (or the connection was established).
    last_received: Instant,
    /// When this node last sent a frame (or the connection was established).
    last_sent: Instant,
    /// When the first byte of the frame being read arrived, if one is unfinished.
    partial_since: Option<Instant>,
    /// Why and since when the peer is dead.
    dead: Option<(DeadReason, Instant)>,
}

impl Liveness {
    /// Starts watching a connection whose handshake completed at `now`; the handshake's frames
    /// count as the first frames each way.
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error when [`LivenessConfig::validate`] fails.
    pub fn new(config: LivenessConfig, now: Instant) -> Result<Self, crate::Error> {
        config.validate()?;
        Ok(Liveness {
            config,
            last_received: now,
            last_sent: now,
            partial_since: None,
            dead: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LivenessConfig {
        &self.config
    }

    /// A whole frame arrived: the peer is alive, and no frame is half read.
    ///
    /// When more bytes than the frame arrived, call this for every whole frame and then
    /// [`on_partial_frame`](Self::on_partial_frame) if bytes of the next one remain.
    pub fn on_frame_received(&mut self, now: Instant) {
        self.last_received = self.last_received.max(now);
        self.partial_since = None;
    }

    /// Bytes of an unfinished frame arrived. This is not life: it starts the frame's read
    /// deadline if it has not started, and changes nothing else.
    pub fn on_partial_frame(&mut self, now: Instant) {
        if self.partial_since.is_none() {
            self.partial_since = Some(now);
        }
    }

    /// This node sent a frame (any frame): the link is not idle.
    pub fn on_frame_sent(&mut self, now: Instant) {
        self.last_sent = self.last_sent.max(now);
    }

    /// The peer said `Goodbye`: it is dead at once.
    pub fn on_goodbye(&mut self, now: Instant) {
        if self.dead.is_none() {
            self.dead = Some((DeadReason::Goodbye, now));
        }
    }

    /// Whether the peer has been found dead.
    pub fn is_dead(&self) -> bool {
        self.dead.is_some()
    }

    /// What to do at `now`, if anything.
    ///
    /// `Dead` comes first, and once returned it is returned on every later call. `SendPing`
    /// counts the `Ping` as sent at `now` (the runtime queues it), so the next one is due a
    /// `heartbeat_interval` later unless other frames go out first.
    pub fn poll(&mut self, now: Instant) -> Option<LivenessEvent> {
        if self.dead.is_none() {
            // Report the death whose deadline came first.
            let silent = (self.silent_deadline(), DeadReason::Silent);
            let slow = self
                .frame_deadline()
                .map(|deadline| (deadline, DeadReason::FrameTooSlow));
            let first = match slow {
                Some(slow) if slow.0 < silent.0 => slow,
                _ => silent,
            };
            if now >= first.0 {
                self.dead = Some((first.1, first.0));
            }
        }
        if let Some((reason, _)) = self.dead {
            return Some(LivenessEvent::Dead { reason });
        }
        if now >= self.ping_deadline() {
            self.last_sent = now;
            return Some(LivenessEvent::SendPing);
        }
        None
    }

    /// When [`poll`](Self::poll) next has something to say, if nothing is reported before: the
    /// earliest of the next `Ping`, the silence deadline and the read deadline of an
    /// unfinished frame. Once the peer is dead, the instant it died (already past).
    pub fn next_deadline(&self) -> Instant {
        if let Some((_, at)) = self.dead {
            return at;
        }
        let earliest = self.ping_deadline().min(self.silent_deadline());
        match self.frame_deadline() {
            Some(frame) => earliest.min(frame),
            None => earliest,
        }
    }

    fn silent_deadline(&self) -> Instant {
        after(self.last_received, self.config.peer_timeout)
    }

    fn ping_deadline(&self) -> Instant {
        after(self.last_sent, self.config.heartbeat_interval)
    }

    fn frame_deadline(&self) -> Option<Instant> {
        self.partial_since
            .map(|since| after(since, self.config.frame_read_deadline))
    }
}

/// `t + d`. The configuration bounds `d` to a day, which no `Instant` overflows in practice;
/// should one, the deadline is `t` itself, which errs towards declaring death, not hanging.
fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    const US: Duration = Duration::from_micros(1);

    fn dead(reason: DeadReason) -> Option<LivenessEvent> {
        Some(LivenessEvent::Dead { reason })
    }

    /// A link on which this node keeps sending (so no pings get in the way).
    fn busy_link(config: LivenessConfig, t0: Instant) -> Liveness {
        Liveness::new(config, t0).unwrap()
    }

    #[test]
    fn a_silent_peer_is_dead_at_exactly_the_peer_timeout() {
        let t0 = Instant::now();
        let mut link = busy_link(LivenessConfig::default(), t0);
        let death = ms(t0, 5_000);
        let mut t = t0;
        while t < death - US {
            link.on_frame_sent(t);
            assert_eq!(link.poll(t), None, "at {:?}", t - t0);
            t += Duration::from_millis(250);
        }
        link.on_frame_sent(death - US);
        assert_eq!(link.poll(death - US), None);
        assert!(!link.is_dead());
        assert_eq!(link.next_deadline(), death);
        assert_eq!(link.poll(death), dead(DeadReason::Silent));
        assert!(link.is_dead());
        // It stays dead, and frames arriving afterwards do not revive it.
        link.on_frame_received(ms(t0, 5_001));
        assert_eq!(link.poll(ms(t0, 5_002)), dead(DeadReason::Silent));
    }

    #[test]
    fn a_peer_that_sends_frames_stays_alive() {
        let t0 = Instant::now();
        let mut link = busy_link(LivenessConfig::default(), t0);
        // A whole frame every 4.9 s: each one pushes the death 5 s further.
        for i in 1..=20u64 {
            let t = ms(t0, i * 4_900);
            assert!(!matches!(
                link.poll(t - US),
                Some(LivenessEvent::Dead { .. })
            ));
            link.on_frame_received(t);
            link.on_frame_sent(t);
            assert_eq!(link.next_deadline(), t + DEFAULT_HEARTBEAT_INTERVAL);
        }
        let last = ms(t0, 20 * 4_900);
        link.on_frame_sent(last + Duration::from_millis(4_999));
        assert_eq!(link.poll(last + Duration::from_millis(4_999)), None);
        assert_eq!(
            link.poll(last + DEFAULT_PEER_TIMEOUT),
            dead(DeadReason::Silent)
        );
    }

    #[test]
    fn a_trickling_frame_does_not_keep_a_peer_alive() {
        let t0 = Instant::now();
        let mut link = busy_link(LivenessConfig::default(), t0);
        // A frame's bytes trickle in every 100 ms from t0 + 100 ms, and it never completes.
        let mut t = ms(t0, 100);
        while t < ms(t0, 5_000) {
            link.on_partial_frame(t);
            link.on_frame_sent(t);
            assert_eq!(link.poll(t), None);
            t += Duration::from_millis(100);
        }
        // Dead by silence at t0 + 5 s: the trickle proved nothing.
        assert_eq!(link.poll(ms(t0, 5_000)), dead(DeadReason::Silent));
    }

    #[test]
    fn a_trickling_frame_is_dead_at_its_read_deadline() {
        let t0 = Instant::now();
        let config = LivenessConfig::default().with_frame_read_deadline(Duration::from_secs(2));
        let mut link = busy_link(config, t0);
        // A whole frame at 1 s, then a frame whose bytes trickle in every 100 ms from 1.5 s.
        link.on_frame_received(ms(t0, 1_000));
        let first_byte = ms(t0, 1_500);
        let deadline = first_byte + Duration::from_secs(2);
        let mut t = first_byte;
        while t < deadline {
            link.on_partial_frame(t);
            link.on_frame_sent(t);
            assert_eq!(link.poll(t), None, "at {:?}", t - t0);
            t += Duration::from_millis(100);
        }
        assert_eq!(link.next_deadline(), deadline);
        assert_eq!(link.poll(deadline - US), None);
        assert_eq!(link.poll(deadline), dead(DeadReason::FrameTooSlow));
    }

    #[test]
    fn a_frame_that_completes_in_time_clears_its_read_deadline() {
        let t0 = Instant::now();
        let config = LivenessConfig::default().with_frame_read_deadline(Duration::from_secs(2));
        let mut link = busy_link(config, t0);
        link.on_partial_frame(ms(t0, 500));
        link.on_frame_received(ms(t0, 2_400));
        link.on_frame_sent(ms(t0, 2_400));
        // The read deadline (2.5 s) no longer applies; silence counts from 2.4 s.
        link.on_frame_sent(ms(t0, 3_000));
        assert_eq!(link.poll(ms(t0, 3_000)), None);
        link.on_frame_sent(ms(t0, 7_399));
        assert_eq!(link.poll(ms(t0, 7_399)), None);
        assert_eq!(link.poll(ms(t0, 7_400)), dead(DeadReason::Silent));
    }

    #[test]
    fn an_idle_link_asks_for_a_ping_every_heartbeat_interval() {
        let t0 = Instant::now();
        let mut link = busy_link(LivenessConfig::default(), t0);
        for i in 1..=10u64 {
            let due = ms(t0, i * 1_000);
            // The peer's own pings keep it alive; ours are what is tested.
            link.on_frame_received(due - Duration::from_millis(500));
            assert_eq!(link.next_deadline(), due);
            assert_eq!(link.poll(due - US), None);
            assert_eq!(link.poll(due), Some(LivenessEvent::SendPing));
            // Asked once: the ping counts as sent.
            assert_eq!(link.poll(due), None);
        }
    }

    #[test]
    fn sending_other_frames_postpones_the_ping() {
        let t0 = Instant::now();
        let mut link = busy_link(LivenessConfig::default(), t0);
        link.on_frame_sent(ms(t0, 800));
        assert_eq!(link.poll(ms(t0, 1_000)), None);
        assert_eq!(link.next_deadline(), ms(t0, 1_800));
        assert_eq!(link.poll(ms(t0, 1_800)), Some(LivenessEvent::SendPing));
    }

    #[test]
    fn a_goodbye_is_death_at_once() {
        let t0 = Instant::now();
        let mut link = busy_link(LivenessConfig::default(), t0);
        link.on_frame_received(ms(t0, 10));
        link.on_goodbye(ms(t0, 10));
        assert!(link.is_dead());
        assert_eq!(link.poll(ms(t0, 10)), dead(DeadReason::Goodbye));
        assert_eq!(link.next_deadline(), ms(t0, 10));
        let err: crate::Error = DeadReason::Goodbye.into();
        assert_eq!(err.kind(), ErrorKind::PeerLost);
    }

    #[test]
    fn bad_configuration_is_refused() {
        let t0 = Instant::now();
        let bad = [
            LivenessConfig::default().with_heartbeat_interval(Duration::ZERO),
            LivenessConfig::default().with_peer_timeout(Duration::from_secs(1)),
            LivenessConfig::default().with_frame_read_deadline(Duration::MAX),
        ];
        for config in bad {
            let err = Liveness::new(config, t0).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
        }
    }
}
