//! When a replaced connection may close.
//!
//! Arbitration keeps one connection per pair of nodes; the one it replaces drains rather than
//! dropping what is under way on it. Both ends replace the same connection (arbitration is
//! symmetric), so each tells the other with a `Goodbye { Replaced }` notice, a fence after
//! everything it sent there, and closes once it has sent that notice, heard the peer's, and
//! has nothing of its own pending: no reply awaited, no handler running. A bound closes it
//! anyway, so a handler that never ends cannot hold it open.

use std::time::{Duration, Instant};

/// How long a replaced connection stays open at most for the replies and handlers still
/// under way on it.
pub const RETIRE_BOUND: Duration = Duration::from_secs(30);

/// Why a retired connection may close now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// Both ends are done with it: our notice is queued, the peer's was read, and nothing of
    /// ours is pending.
    Drained,
    /// The bound passed with work still under way.
    BoundPassed,
}

/// The retirement fence of one connection; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Retirement {
    bound: Duration,
    /// Set once another connection replaced this one: when it must close at the latest.
    until: Option<Instant>,
    /// Whether our `Goodbye { Replaced }` notice is queued.
    notice_sent: bool,
}

impl Default for Retirement {
    fn default() -> Self {
        Self::new(RETIRE_BOUND)
    }
}

impl Retirement {
    /// A connection in use, that closes at the latest `bound` after it is retired.
    pub fn new(bound: Duration) -> Self {
        Self {
            bound,
            until: None,
            notice_sent: false,
        }
    }

    /// Another connection replaced this one at `now`. Only the first call counts: the bound
    /// runs from the replacement.
    pub fn retire(&mut self, now: Instant) {
        if self.until.is_none() {
            self.until = Some(now + self.bound);
        }
    }

    /// Whether the connection was retired.
    pub fn is_retired(&self) -> bool {
        self.until.is_some()
    }

    /// Whether our notice is still to be queued (the runtime tries until it fits, then calls
    /// [`Retirement::notice_sent`]).
    pub fn wants_notice(&self) -> bool {
        self.is_retired() && !self.notice_sent
    }

    /// Our notice is queued.
    pub fn notice_sent(&mut self) {
        self.notice_sent = true;
    }

    /// When the bound closes the connection, if it is retired.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.until
    }

    /// Whether the connection may close at `now`: `peer_replaced` once the peer's notice was
    /// read, `idle` while nothing of ours is pending on it (no reply awaited, no handler
    /// running). `None` while it is in use, or still draining.
    pub fn may_close(&self, peer_replaced: bool, idle: bool, now: Instant) -> Option<Closing> {
        let until = self.until?;
        if self.notice_sent && peer_replaced && idle {
            Some(Closing::Drained)
        } else if now >= until {
            Some(Closing::BoundPassed)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests;
