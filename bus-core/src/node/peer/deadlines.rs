//! The requests' deadlines on one connection: one watcher, no timer per request.
//!
//! A caller's timeout used to be a `tokio::time::Sleep` per request, registered in the
//! runtime's timer wheel when the request was sent and cleared when its reply came: a
//! round trip's largest cost after the system calls that a raw ping-pong does not have. Now
//! the deadline is a field of the request's entry in the pending table, and one task per
//! connection sleeps until the table's next check (see
//! [`PendingRequests`](crate::proto::requests::PendingRequests)); a request due sooner wakes
//! it, which requests with the same timeout, sent in order, never need to.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::{Answer, PeerHandle};
use crate::node::conn::{now_std, sleep_until_some};
use crate::proto::requests::cancel_frame;

impl PeerHandle {
    /// Answers [`Answer::TimedOut`] to every request waiting here whose deadline has come, and
    /// tells the peer with a `Cancel` for each. Runs for the connection's life; ends when the
    /// connection is gone (its requests then fail all at once).
    pub(crate) async fn watch_deadlines(&self) {
        loop {
            let next = self.pending.lock().ok().and_then(|p| p.next_check());
            tokio::select! {
                () = self.gone.cancelled() => return,
                // A request due before `next`: look again.
                () = self.deadlines.notified() => continue,
                () = sleep_until_some(next.map(Instant::from_std)) => {}
            }
            let expired = match self.pending.lock() {
                Ok(mut pending) => pending.expire(now_std()),
                Err(_) => return,
            };
            for (id, tx) in expired {
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
                // The caller may have given up a moment ago; the peer is told all the same.
                let _ = tx.send(Answer::TimedOut);
                self.send_cancel(&cancel_frame(id));
            }
        }
    }
}
