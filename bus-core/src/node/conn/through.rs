//! The write-through gate: who may write to a connection's transport right now, the writer task
//! or a sender writing its lone frame itself.
//!
//! The writer task owns the transport's [`FrameWriter`](crate::transport::FrameWriter); the gate holds the transport's
//! [`WriteThrough`] (if it has one). A sender writes through only when, under the gate's lock,
//! the writer is parked with nothing in hand, nothing is left over from an earlier
//! write-through, and the control, replies and commands lanes are empty: then no frame queued
//! before it, on its lane or on one that goes first, is still to be written, so writing it now
//! keeps each lane's order and the lanes' priority (an event still queued may be overtaken,
//! as the writer would overtake it too). The writer takes frames off its lanes under the same
//! lock and is busy from then until it parks again with every lane empty, so a frame it holds
//! is never overtaken either. What the transport did not take whole is left to the writer,
//! which writes it before anything else.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::now_std;
use super::writer::LastSent;
use crate::node::peer::{LaneReceivers, Lanes, Queued};
use crate::transport::{ThroughWrite, WriteThrough};

/// The gate between a connection's writer task and the senders that write through.
#[derive(Debug)]
pub(crate) struct Gate {
    state: Mutex<State>,
    /// The lanes a frame written through must find empty (events may be overtaken).
    control: mpsc::Sender<Bytes>,
    replies: mpsc::Sender<Bytes>,
    commands: mpsc::Sender<Queued>,
    /// Set when a frame is written through whole, for the liveness check.
    sent: Arc<LastSent>,
}

#[derive(Debug)]
struct State {
    /// The transport's write-through; `None` when it has none or the gate is shut.
    port: Option<Box<dyn WriteThrough>>,
    /// The writer holds frames or is writing: it is idle only while parked on empty lanes.
    busy: bool,
    /// What a write-through left for the writer.
    left: Left,
    /// The parked writer, woken when something is left for it.
    waker: Option<Waker>,
}

/// What a write-through left for the writer, to be written before anything else.
#[derive(Debug, Default)]
pub(super) enum Left {
    #[default]
    Nothing,
    /// The bytes of a frame the transport took only in part.
    Rest(Bytes),
    /// A frame the transport took whole into its own buffer and did not flush.
    Flush,
}

/// What the writer takes next.
pub(super) enum Next {
    /// What a write-through left: first of all.
    Left(Left),
    /// A frame of the control or replies lane.
    Frame(Bytes),
    /// A frame of the commands or events lane, with its share of the byte budget.
    Queued(Queued),
}

impl Gate {
    /// A gate for a connection whose transport offers `port` (or nothing), and whose senders
    /// queue on `lanes`.
    pub(super) fn new(
        port: Option<Box<dyn WriteThrough>>,
        lanes: &Lanes,
        sent: Arc<LastSent>,
    ) -> Self {
        Gate {
            state: Mutex::new(State {
                port,
                // Until the writer first parks.
                busy: true,
                left: Left::Nothing,
                waker: None,
            }),
            control: lanes.control.clone(),
            replies: lanes.replies.clone(),
            commands: lanes.commands.clone(),
            sent,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `frame` (a control frame, a reply or a command) at once if the writer is idle
    /// and nothing waits before it; otherwise hands it back, for its lane. Never waits: a
    /// gate another thread holds counts as busy.
    pub(crate) fn try_write(&self, frame: Bytes) -> Result<(), Bytes> {
        let Ok(mut state) = self.state.try_lock() else {
            return Err(frame);
        };
        if state.busy || !matches!(state.left, Left::Nothing) || !self.lanes_empty() {
            return Err(frame);
        }
        let Some(port) = &state.port else {
            return Err(frame);
        };
        let left = match port.try_write(frame) {
            ThroughWrite::Written => {
                drop(state);
                self.sent.set(now_std());
                return Ok(());
            }
            ThroughWrite::NotTaken(frame) => return Err(frame),
            ThroughWrite::Rest(rest) => Left::Rest(rest),
            ThroughWrite::Unflushed => Left::Flush,
        };
        // The writer finishes it (and sets `sent` then).
        state.left = left;
        if let Some(waker) = &state.waker {
            waker.wake_by_ref();
        }
        Ok(())
    }

    /// Whether nothing is queued (or being queued) on the lanes a frame written through must
    /// not overtake.
    fn lanes_empty(&self) -> bool {
        fn empty<T>(lane: &mpsc::Sender<T>) -> bool {
            lane.capacity() == lane.max_capacity()
        }
        empty(&self.control) && empty(&self.replies) && empty(&self.commands)
    }

    /// The writer's next work: what a write-through left, else the first frame of the lanes
    /// in priority order. Taken under the gate's lock, and the writer is busy from then on;
    /// it is idle again only when this finds nothing.
    pub(super) fn poll_next(
        &self,
        rx: &mut LaneReceivers,
        owed: impl FnOnce() -> Option<Bytes>,
        cx: &mut Context<'_>,
    ) -> Poll<Next> {
        let mut state = self.lock();
        let left = std::mem::take(&mut state.left);
        let next = if !matches!(left, Left::Nothing) {
            Some(Next::Left(left))
        } else if let Some(b) = owed() {
            // A control frame that found its lane full (a grant of credit), kept aside.
            Some(Next::Frame(b))
        } else if let Poll::Ready(Some(b)) = rx.control.poll_recv(cx) {
            Some(Next::Frame(b))
        } else if let Poll::Ready(Some(b)) = rx.replies.poll_recv(cx) {
            Some(Next::Frame(b))
        } else if let Poll::Ready(Some(q)) = rx.commands.poll_recv(cx) {
            Some(Next::Queued(q))
        } else if let Poll::Ready(Some(q)) = rx.events.0.poll_recv(cx) {
            Some(Next::Queued(q))
        } else {
            None
        };
        match next {
            Some(next) => {
                state.busy = true;
                Poll::Ready(next)
            }
            None => {
                state.busy = false;
                match &mut state.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    slot => *slot = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    /// Wakes the writer if it is parked, to look at what [`poll_next`](Self::poll_next) was
    /// given to send besides the lanes (whoever sets that, sets it before calling this).
    pub(crate) fn wake_writer(&self) {
        let waker = self.lock().waker.take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Nothing more is written through (the connection closes or failed): the transport's
    /// write-through is dropped, and the writer counts as busy for good.
    pub(crate) fn shut(&self) {
        let mut state = self.lock();
        state.busy = true;
        state.waker = None;
        let port = state.port.take();
        drop(state);
        drop(port);
    }

    /// What a write-through left for the writer, taken (for a writer that closes).
    pub(super) fn take_left(&self) -> Left {
        std::mem::take(&mut self.lock().left)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::node::peer::lanes;

    /// A transport's write-through that takes `take` bytes of each frame at most (all of it
    /// when `None`), or leaves each frame unflushed, and records what it took.
    #[derive(Debug, Default)]
    struct Script {
        take: Option<usize>,
        unflushed: bool,
        took: Mutex<Vec<Bytes>>,
        calls: AtomicUsize,
    }

    #[derive(Debug)]
    struct Port(Arc<Script>);

    impl WriteThrough for Port {
        fn try_write(&self, frame: Bytes) -> ThroughWrite {
            let s = &self.0;
            s.calls.fetch_add(1, Ordering::Relaxed);
            if s.unflushed {
                s.took.lock().unwrap().push(frame);
                return ThroughWrite::Unflushed;
            }
            match s.take {
                Some(0) => ThroughWrite::NotTaken(frame),
                Some(n) if n < frame.len() => {
                    s.took.lock().unwrap().push(frame.slice(..n));
                    ThroughWrite::Rest(frame.slice(n..))
                }
                _ => {
                    s.took.lock().unwrap().push(frame);
                    ThroughWrite::Written
                }
            }
        }
    }

    fn open(script: &Arc<Script>) -> (Gate, Lanes, LaneReceivers, Arc<LastSent>) {
        let (lanes, rx) = lanes(8);
        let sent = Arc::new(LastSent::new());
        let port: Box<dyn WriteThrough> = Box::new(Port(Arc::clone(script)));
        let gate = Gate::new(Some(port), &lanes, Arc::clone(&sent));
        (gate, lanes, rx, sent)
    }

    fn poll(gate: &Gate, rx: &mut LaneReceivers) -> Poll<Next> {
        gate.poll_next(rx, || None, &mut Context::from_waker(Waker::noop()))
    }

    fn frame(n: u8) -> Bytes {
        Bytes::from(vec![n; 16])
    }

    #[test]
    fn nothing_goes_through_before_the_writer_first_parks() {
        let script = Arc::new(Script::default());
        let (gate, _lanes, mut rx, _) = open(&script);
        assert_eq!(gate.try_write(frame(1)), Err(frame(1)));
        assert!(poll(&gate, &mut rx).is_pending());
        assert_eq!(gate.try_write(frame(2)), Ok(()));
        assert_eq!(*script.took.lock().unwrap(), [frame(2)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_frame_written_through_counts_as_sent() {
        let script = Arc::new(Script::default());
        let (gate, _lanes, mut rx, sent) = open(&script);
        assert!(poll(&gate, &mut rx).is_pending());
        let before = sent.get();
        tokio::time::advance(std::time::Duration::from_secs(3)).await;
        assert_eq!(gate.try_write(frame(1)), Ok(()));
        assert!(sent.get() >= before + std::time::Duration::from_secs(3));
    }

    #[test]
    fn a_frame_queued_first_or_held_by_the_writer_is_never_overtaken() {
        let script = Arc::new(Script::default());
        let (gate, lanes, mut rx, _) = open(&script);
        assert!(poll(&gate, &mut rx).is_pending());
        // Queued on any lane a frame written through must not overtake: queued, not written.
        for lane in [&lanes.control, &lanes.replies] {
            lane.try_send(frame(1)).unwrap();
            assert_eq!(gate.try_write(frame(2)), Err(frame(2)));
            // The writer takes it: busy until it parks on empty lanes again.
            assert!(matches!(poll(&gate, &mut rx), Poll::Ready(Next::Frame(f)) if f == frame(1)));
            assert_eq!(gate.try_write(frame(2)), Err(frame(2)));
            assert!(poll(&gate, &mut rx).is_pending());
        }
        lanes
            .commands
            .try_send(Queued {
                bytes: frame(3),
                permits: 16,
            })
            .unwrap();
        assert_eq!(gate.try_write(frame(2)), Err(frame(2)));
        assert!(matches!(poll(&gate, &mut rx), Poll::Ready(Next::Queued(q)) if q.permits == 16));
        assert!(poll(&gate, &mut rx).is_pending());
        // A reserved slot is a frame on its way to the lane.
        let slot = lanes.commands.try_reserve().unwrap();
        assert_eq!(gate.try_write(frame(2)), Err(frame(2)));
        drop(slot);
        // An event waiting may be overtaken, as the writer would overtake it.
        lanes
            .events
            .try_send(Queued {
                bytes: frame(4),
                permits: 16,
            })
            .unwrap();
        assert_eq!(gate.try_write(frame(2)), Ok(()));
        assert_eq!(*script.took.lock().unwrap(), [frame(2)]);
    }

    #[test]
    fn the_rest_of_a_frame_taken_in_part_goes_first_and_nothing_passes_it() {
        let script = Arc::new(Script {
            take: Some(5),
            ..Script::default()
        });
        let (gate, lanes, mut rx, _) = open(&script);
        assert!(poll(&gate, &mut rx).is_pending());
        assert_eq!(gate.try_write(frame(1)), Ok(()));
        // Until the writer has written the rest, nothing else goes through.
        assert_eq!(gate.try_write(frame(2)), Err(frame(2)));
        lanes.control.try_send(frame(9)).unwrap();
        match poll(&gate, &mut rx) {
            Poll::Ready(Next::Left(Left::Rest(rest))) => assert_eq!(rest, frame(1).slice(5..)),
            _ => panic!("the rest was not first"),
        }
        assert!(matches!(poll(&gate, &mut rx), Poll::Ready(Next::Frame(f)) if f == frame(9)));
        assert!(poll(&gate, &mut rx).is_pending());
        assert_eq!(script.calls.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_frame_left_unflushed_is_flushed_by_the_writer_first() {
        let script = Arc::new(Script {
            unflushed: true,
            ..Script::default()
        });
        let (gate, _lanes, mut rx, _) = open(&script);
        assert!(poll(&gate, &mut rx).is_pending());
        assert_eq!(gate.try_write(frame(1)), Ok(()));
        assert_eq!(gate.try_write(frame(2)), Err(frame(2)));
        assert!(matches!(
            poll(&gate, &mut rx),
            Poll::Ready(Next::Left(Left::Flush))
        ));
        assert!(poll(&gate, &mut rx).is_pending());
        assert_eq!(gate.try_write(frame(2)), Ok(()));
    }

    #[test]
    fn a_frame_not_taken_comes_back_and_a_shut_gate_takes_nothing() {
        let script = Arc::new(Script {
            take: Some(0),
            ..Script::default()
        });
        let (gate, _lanes, mut rx, _) = open(&script);
        assert!(poll(&gate, &mut rx).is_pending());
        assert_eq!(gate.try_write(frame(1)), Err(frame(1)));
        assert!(poll(&gate, &mut rx).is_pending());

        let script = Arc::new(Script::default());
        let (gate, _lanes, mut rx, _) = open(&script);
        assert!(poll(&gate, &mut rx).is_pending());
        gate.shut();
        assert_eq!(gate.try_write(frame(1)), Err(frame(1)));
        // Even once the writer parks again.
        assert!(poll(&gate, &mut rx).is_pending());
        assert_eq!(gate.try_write(frame(1)), Err(frame(1)));
        assert_eq!(script.calls.load(Ordering::Relaxed), 0);
    }
}
