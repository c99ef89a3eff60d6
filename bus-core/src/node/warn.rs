//! Rate-limited warnings: a peer that keeps sending what we must warn about cannot flood the
//! logs.

use std::time::{Duration, Instant};

/// How many warnings about one peer are logged per [`WINDOW`].
const PER_WINDOW: u32 = 10;

/// The window of [`PER_WINDOW`].
const WINDOW: Duration = Duration::from_secs(60);

/// Counts one peer's warnings: the first [`PER_WINDOW`] of each minute are logged, the rest
/// only counted, and the count is logged with the next warning let through.
#[derive(Debug)]
pub(crate) struct WarnLimit {
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl WarnLimit {
    pub(crate) fn new() -> Self {
        WarnLimit {
            window_start: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Whether a warning at `now` may be logged; `Some(n)` when it may, `n` being how many
    /// were held back since the last one logged.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        let fresh = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= WINDOW);
        if fresh {
            self.window_start = Some(now);
            self.logged = 0;
        }
        if self.logged >= PER_WINDOW {
            self.suppressed = self.suppressed.saturating_add(1);
            return None;
        }
        self.logged += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// [`WarnLimit::allow`] now, through the lock its reader shares with the reader's helpers
/// (taken only when there is something to warn about).
pub(crate) fn allow_now(limit: &std::sync::Mutex<WarnLimit>) -> Option<u64> {
    let now = tokio::time::Instant::now().into_std();
    limit.lock().ok().and_then(|mut l| l.allow(now))
}

/// Logs a warning about a peer through its `Mutex<WarnLimit>`, with how many were held back.
macro_rules! peer_warn {
    ($limit:expr, $($arg:tt)+) => {
        if let Some(suppressed) = $crate::node::warn::allow_now(&$limit) {
            tracing::warn!(suppressed, $($arg)+);
        }
    };
}
pub(crate) use peer_warn;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_a_minute_then_the_count_of_those_held_back() {
        let t0 = Instant::now();
        let mut limit = WarnLimit::new();
        for i in 0..PER_WINDOW {
            assert_eq!(
                limit.allow(t0 + Duration::from_millis(u64::from(i))),
                Some(0)
            );
        }
        for i in 0..25 {
            assert_eq!(limit.allow(t0 + Duration::from_secs(1 + i)), None);
        }
        // A minute after the window opened, the next one is logged with the 25 held back.
        assert_eq!(limit.allow(t0 + WINDOW), Some(25));
        assert_eq!(limit.allow(t0 + WINDOW), Some(0));
    }
}
