//! The events lane: a ring of frames behind a lock, not a channel.
//!
//! Publishers push one frame at a time (one lock, and a wake-up only when the writer is parked
//! on an empty lane); the writer takes everything queued in one go, and gives the room back in
//! one step per batch rather than one per frame. Bounded in frames (the lane's capacity) and,
//! with the commands lane, by the peer's byte budget, which the frames' [`Queued::permits`]
//! hold.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::sync::futures::Notified;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::Notify;

use super::Queued;

/// The events lane of one connection, shared by its senders and its writer.
#[derive(Debug)]
pub(crate) struct EventLane {
    ring: Mutex<Ring>,
    capacity: usize,
    /// Woken when the writer took frames off a full lane, or the lane closed.
    room: Notify,
}

#[derive(Debug)]
struct Ring {
    frames: VecDeque<Queued>,
    /// The writer is gone: nothing more is queued.
    closed: bool,
    /// The writer, parked on an empty lane.
    writer: Option<Waker>,
    /// A sender waits for room.
    waiting: bool,
}

/// The writer's end: dropping it (the connection's writer is done) closes the lane.
#[derive(Debug)]
pub(crate) struct EventLaneRx(pub(crate) Arc<EventLane>);

impl Drop for EventLaneRx {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl EventLane {
    /// A lane of `capacity` frames, and its writer's end.
    pub(crate) fn new(capacity: usize) -> (Arc<EventLane>, EventLaneRx) {
        let lane = Arc::new(EventLane {
            ring: Mutex::new(Ring {
                frames: VecDeque::new(),
                closed: false,
                writer: None,
                waiting: false,
            }),
            capacity: capacity.max(1),
            room: Notify::new(),
        });
        (Arc::clone(&lane), EventLaneRx(lane))
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `q` if there is room; hands it back if the lane is full or closed.
    pub(crate) fn try_send(&self, q: Queued) -> Result<(), TrySendError<Queued>> {
        let writer = {
            let mut ring = self.lock();
            if ring.closed {
                return Err(TrySendError::Closed(q));
            }
            if ring.frames.len() >= self.capacity {
                ring.waiting = true;
                return Err(TrySendError::Full(q));
            }
            ring.frames.push_back(q);
            ring.writer.take()
        };
        if let Some(writer) = writer {
            writer.wake();
        }
        Ok(())
    }

    /// A waiter for room, to be enabled before [`try_send`](Self::try_send) is tried again.
    pub(crate) fn room(&self) -> Notified<'_> {
        self.room.notified()
    }

    /// Frames queued now.
    pub(crate) fn len(&self) -> usize {
        self.lock().frames.len()
    }

    /// The lane's capacity, in frames.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// For the writer: the next frame, or `None` once the lane is closed and empty.
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Queued>> {
        let mut ring = self.lock();
        match ring.frames.pop_front() {
            Some(q) => {
                let freed = std::mem::take(&mut ring.waiting);
                drop(ring);
                if freed {
                    self.room.notify_waiters();
                }
                Poll::Ready(Some(q))
            }
            None if ring.closed => Poll::Ready(None),
            None => {
                match &mut ring.writer {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    slot => *slot = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    /// For the writer: moves queued frames into `batch` until it holds `budget`, adding their
    /// shares of the byte budget to `permits`. One lock for all of them.
    pub(crate) fn drain(&self, batch: &mut Vec<Bytes>, permits: &mut usize, budget: usize) {
        let mut ring = self.lock();
        let mut took = false;
        while batch.len() < budget {
            let Some(q) = ring.frames.pop_front() else {
                break;
            };
            *permits += q.permits as usize;
            batch.push(q.bytes);
            took = true;
        }
        let freed = took && std::mem::take(&mut ring.waiting);
        drop(ring);
        if freed {
            self.room.notify_waiters();
        }
    }

    /// Nothing more is queued; what was is dropped, and senders waiting for room give up.
    fn close(&self) {
        let left = {
            let mut ring = self.lock();
            ring.closed = true;
            ring.writer = None;
            std::mem::take(&mut ring.frames)
        };
        drop(left);
        self.room.notify_waiters();
    }

    /// Whether the writer is gone.
    #[cfg(test)]
    fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(n: u8) -> Queued {
        Queued {
            bytes: Bytes::from(vec![n]),
            permits: 1,
        }
    }

    #[test]
    fn frames_come_out_in_order_and_a_full_lane_hands_them_back() {
        let (lane, rx) = EventLane::new(2);
        assert!(lane.try_send(q(1)).is_ok() && lane.try_send(q(2)).is_ok());
        assert!(matches!(lane.try_send(q(3)), Err(TrySendError::Full(_))));
        let (mut batch, mut permits) = (Vec::new(), 0);
        rx.0.drain(&mut batch, &mut permits, 256);
        assert_eq!(batch, [Bytes::from(vec![1]), Bytes::from(vec![2])]);
        assert_eq!(permits, 2);
        assert!(lane.try_send(q(3)).is_ok());
        assert_eq!(lane.len(), 1);
    }

    #[tokio::test]
    async fn a_sender_waiting_for_room_is_woken_when_the_writer_takes_frames() {
        let (lane, rx) = EventLane::new(1);
        assert!(lane.try_send(q(1)).is_ok());
        let room = lane.room();
        tokio::pin!(room);
        room.as_mut().enable();
        assert!(matches!(lane.try_send(q(2)), Err(TrySendError::Full(_))));
        let waker = futures_util::task::noop_waker();
        assert!(matches!(
            rx.0.poll_recv(&mut Context::from_waker(&waker)),
            Poll::Ready(Some(_))
        ));
        room.await;
        assert!(lane.try_send(q(2)).is_ok());
    }

    #[tokio::test]
    async fn the_writers_end_dropped_closes_the_lane_and_frees_waiting_senders() {
        let (lane, rx) = EventLane::new(1);
        assert!(lane.try_send(q(1)).is_ok());
        let room = lane.room();
        tokio::pin!(room);
        room.as_mut().enable();
        drop(rx);
        room.await;
        assert!(lane.is_closed());
        assert!(matches!(lane.try_send(q(2)), Err(TrySendError::Closed(_))));
        assert_eq!(lane.len(), 0);
    }

    #[test]
    fn the_parked_writer_is_woken_by_the_next_frame() {
        let (lane, rx) = EventLane::new(4);
        let woken = Arc::new(std::sync::atomic::AtomicBool::new(false));
        struct Flag(Arc<std::sync::atomic::AtomicBool>);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let waker = Waker::from(Arc::new(Flag(Arc::clone(&woken))));
        assert!(rx
            .0
            .poll_recv(&mut Context::from_waker(&waker))
            .is_pending());
        assert!(lane.try_send(q(1)).is_ok());
        assert!(woken.load(std::sync::atomic::Ordering::SeqCst));
    }
}
