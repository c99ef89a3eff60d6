//! The events lane: a ring of frames behind a lock, not a channel.
//!
//! Publishers push one frame at a time (one lock, and a wake-up only when the writer is parked
//! on an empty lane); the writer takes everything queued in one go, and gives the room back in
//! one step per batch rather than one per frame. Bounded in frames (the lane's capacity) and,
//! with the commands lane, by the peer's byte budget, which the frames' [`Queued::permits`]
//! hold.
//!
//! The byte budget is taken a slice at a time too: a push that finds too little of it paid for
//! takes a slice of the budget (a small part of it, chosen by the peer), and the frames pushed after it
//! spend that slice under the lane's own lock, without touching the budget's semaphore. What
//! is left of the slice goes to the writer with the batch it drains, and back to the budget
//! with the frames' shares once they are written: nothing is held paid for after a drain, so
//! a frame that needs the whole budget never waits for it behind a slice.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::sync::futures::Notified;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, Semaphore};

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
    /// Byte budget taken off the peer's semaphore for frames not yet pushed.
    prepaid: u32,
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
                prepaid: 0,
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

    /// Queues the frame `bytes`, whose share of the byte budget is `permits`, if the lane and
    /// the budget both have room now; hands it back if the lane is full, the budget short or
    /// the lane closed. The share is spent from what an earlier push paid for; when that is too
    /// little, this push pays for a slice of `prepay` bytes of `budget` (or, near its end, for
    /// just what it needs).
    pub(crate) fn try_send_paying(
        &self,
        bytes: Bytes,
        permits: u32,
        budget: &Semaphore,
        prepay: u32,
    ) -> Result<(), TrySendError<Bytes>> {
        let writer = {
            let mut ring = self.lock();
            if ring.closed {
                return Err(TrySendError::Closed(bytes));
            }
            if ring.frames.len() >= self.capacity {
                ring.waiting = true;
                return Err(TrySendError::Full(bytes));
            }
            if ring.prepaid < permits {
                let short = permits - ring.prepaid;
                let slice = short.max(prepay);
                let paid = [slice, short]
                    .into_iter()
                    .find(|&n| budget.try_acquire_many(n).map(|p| p.forget()).is_ok());
                let Some(paid) = paid else {
                    return Err(TrySendError::Full(bytes));
                };
                ring.prepaid += paid;
            }
            ring.prepaid -= permits;
            ring.frames.push_back(Queued { bytes, permits });
            ring.writer.take()
        };
        if let Some(writer) = writer {
            writer.wake();
        }
        Ok(())
    }

    /// Byte budget paid for and not yet spent on a frame.
    pub(crate) fn prepaid(&self) -> u32 {
        self.lock().prepaid
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
    /// shares of the byte budget to `permits`, and what was paid for and not spent. One lock
    /// for all of them.
    pub(crate) fn drain(&self, batch: &mut Vec<Bytes>, permits: &mut usize, budget: usize) {
        let mut ring = self.lock();
        *permits += std::mem::take(&mut ring.prepaid) as usize;
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

    #[test]
    fn pushes_spend_a_slice_of_the_budget_and_the_writer_gives_back_what_is_left() {
        let (lane, rx) = EventLane::new(8);
        let budget = Semaphore::new(1000);
        let frame = Bytes::from(vec![0; 10]);
        // The first push pays for a slice of 100, the next ones spend it.
        for _ in 0..3 {
            assert!(lane
                .try_send_paying(frame.clone(), 10, &budget, 100)
                .is_ok());
        }
        assert_eq!((budget.available_permits(), lane.prepaid()), (900, 70));
        // The writer takes the frames' shares and what was left of the slice.
        let (mut batch, mut permits) = (Vec::new(), 0);
        rx.0.drain(&mut batch, &mut permits, 256);
        assert_eq!((batch.len(), permits, lane.prepaid()), (3, 100, 0));
        budget.add_permits(permits);
        // Near the budget's end, a push pays for its own share only.
        budget.forget_permits(995);
        assert!(lane.try_send_paying(frame.clone(), 4, &budget, 100).is_ok());
        assert_eq!((budget.available_permits(), lane.prepaid()), (1, 0));
        // Without room in the budget, nothing is queued and nothing taken.
        assert!(matches!(
            lane.try_send_paying(frame, 10, &budget, 100),
            Err(TrySendError::Full(_))
        ));
        assert_eq!((budget.available_permits(), lane.len()), (1, 1));
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
