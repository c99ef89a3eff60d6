//! The connection's writer: batches what the lanes hold, and hands back what it never wrote.

use super::through::{Left, Next};
use super::*;

/// How many frames a writer takes off its lanes for one batch at most.
pub(super) const BATCH_BUDGET: usize = 256;

/// When the writer last wrote, for the reader's liveness check (which owns the `Liveness`).
#[derive(Debug)]
pub(super) struct LastSent {
    base: std::time::Instant,
    micros: AtomicU64,
}

impl LastSent {
    pub(super) fn new() -> Self {
        LastSent {
            base: now_std(),
            micros: AtomicU64::new(0),
        }
    }

    pub(super) fn set(&self, at: std::time::Instant) {
        let micros = at.saturating_duration_since(self.base).as_micros();
        self.micros
            .fetch_max(u64::try_from(micros).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(super) fn get(&self) -> std::time::Instant {
        let micros = Duration::from_micros(self.micros.load(Ordering::Relaxed));
        self.base.checked_add(micros).unwrap_or(self.base)
    }
}

/// Writes what the lanes hold: waits for any frame, then takes everything queued (control
/// first, events last, up to a batch budget) and writes it in one batch. An idle link writes a
/// lone frame at once (or its sender already wrote it through the
/// [`Gate`](super::through::Gate); what that left is written first of all). On `stop`, sends
/// what is queued and closes; on `abort` (the link failed) or a failed write, stops at once. Returns what was never written: the lanes,
/// holding what was never taken off them, and the frames of a failed write that the transport
/// did not take.
pub(super) async fn write_loop(
    writer: Box<dyn FrameWriter>,
    rx: LaneReceivers,
    peer: Arc<PeerHandle>,
    sent: Arc<LastSent>,
) -> Unwritten {
    let unwritten = write_lanes(writer, rx, &peer, &sent).await;
    peer.gate.shut();
    unwritten
}

async fn write_lanes(
    mut writer: Box<dyn FrameWriter>,
    mut rx: LaneReceivers,
    peer: &PeerHandle,
    sent: &LastSent,
) -> Unwritten {
    let budget = peer.budget();
    let gate = &peer.gate;
    let mut batch = Vec::new();
    // The byte budget of the frames in `batch`, given back at once when they are written (one
    // release per batch, not one per frame).
    let mut held = Held(0);
    // One waiter each for the whole loop, not one registered and dropped per batch.
    let stopped = peer.stop.cancelled();
    let aborted = peer.abort.cancelled();
    tokio::pin!(stopped, aborted);
    loop {
        // Checked before each batch, without a lock: a failed link writes nothing more, even
        // while its lanes stay full. (The waiter below only wakes an idle writer.)
        if peer.is_aborted() {
            return Unwritten { rx, batch };
        }
        // A grant of credit that found the control lane full comes with the lanes.
        let owed = || peer.credit.take_owed();
        let next = tokio::select! {
            biased;
            next = std::future::poll_fn(|cx| gate.poll_next(&mut rx, owed, cx)) => next,
            () = &mut aborted => return Unwritten { rx, batch },
            () = &mut stopped => {
                gate.shut();
                let left = gate.take_left();
                drain(&mut rx, &mut batch, &mut held, usize::MAX);
                let flush = async {
                    if let Left::Rest(rest) = left {
                        writer.write_batch(&mut vec![rest]).await?;
                    }
                    writer.write_batch(&mut batch).await
                };
                tokio::select! {
                    biased;
                    _ = flush => {}
                    () = &mut aborted => {}
                }
                let _ = writer.close().await;
                batch.clear();
                return Unwritten { rx, batch };
            }
        };
        match next {
            Next::Frame(b) => batch.push(b),
            Next::Queued(q) => batch.push(held.take(q)),
            // Flushed by the batch's write, empty or not.
            Next::Left(Left::Flush | Left::Nothing) => {}
            Next::Left(Left::Rest(rest)) => {
                // On its own: the rest of a frame is not a frame the failure path could name.
                let mut rest = vec![rest];
                let written = tokio::select! {
                    biased;
                    w = writer.write_batch(&mut rest) => w,
                    () = &mut aborted => return Unwritten { rx, batch },
                };
                if let Err(e) = written {
                    return failed(peer, e, rx, batch);
                }
                sent.set(now_std());
                continue;
            }
        }
        drain(&mut rx, &mut batch, &mut held, BATCH_BUDGET);
        let (frames, bytes) = (batch.len(), batch.iter().map(Bytes::len).sum::<usize>());
        // The write first: one that completes at once never polls the abort waiter.
        let written = tokio::select! {
            biased;
            w = writer.write_batch(&mut batch) => w,
            () = &mut aborted => {
                // A write given up part way may have sent any of the batch.
                batch.clear();
                return Unwritten { rx, batch };
            }
        };
        if let Err(e) = written {
            return failed(peer, e, rx, batch);
        }
        sent.set(now_std());
        held.release(&budget);
        peer.counters.sent(frames, bytes);
        peer.counters.queued_bytes.set(peer.queued_bytes() as f64);
    }
}

/// A write failed: the connection closes. The transport left in `batch` what it did not
/// write; what is still on the lanes was not written either.
fn failed(peer: &PeerHandle, e: Error, rx: LaneReceivers, batch: Vec<Bytes>) -> Unwritten {
    tracing::debug!(error = %e, "write failed: closing the connection");
    // Out of the routes now, not when the reader notices.
    peer.set_unavailable();
    peer.stop.cancel();
    Unwritten { rx, batch }
}

/// What a stopped writer never wrote.
pub(super) struct Unwritten {
    /// The lanes, with what the writer never took off them.
    rx: LaneReceivers,
    /// Frames of a failed write that the transport did not take.
    batch: Vec<Bytes>,
}

/// The commands a stopped writer never wrote, by request id: those of its failed batch that
/// the transport did not take, and those still on the commands lane. The lane is closed first,
/// so no sender adds one after this looked.
pub(super) fn unsent_commands(unwritten: Unwritten) -> Vec<(u64, Bytes)> {
    let Unwritten { mut rx, batch } = unwritten;
    rx.commands.close();
    let mut frames = batch;
    while let Ok(q) = rx.commands.try_recv() {
        frames.push(q.bytes);
    }
    frames
        .into_iter()
        .filter_map(|bytes| match crate::wire::peek_kind_and_id(&bytes) {
            Some((FrameKind::Command, id)) => Some((id, bytes)),
            _ => None,
        })
        .collect()
}

/// Budget permits taken off queued frames and not yet given back.
pub(super) struct Held(usize);

impl Held {
    /// The frame of `q`, its share of the budget now held until the batch is written.
    fn take(&mut self, q: Queued) -> Bytes {
        self.0 += q.permits as usize;
        q.bytes
    }

    fn release(&mut self, budget: &Semaphore) {
        if self.0 > 0 {
            budget.add_permits(std::mem::take(&mut self.0));
        }
    }
}

pub(super) fn drain(
    rx: &mut LaneReceivers,
    batch: &mut Vec<Bytes>,
    held: &mut Held,
    budget: usize,
) {
    for lane in [&mut rx.control, &mut rx.replies] {
        while batch.len() < budget {
            match lane.try_recv() {
                Ok(b) => batch.push(b),
                Err(_) => break,
            }
        }
    }
    while batch.len() < budget {
        match rx.commands.try_recv() {
            Ok(q) => batch.push(held.take(q)),
            Err(_) => break,
        }
    }
    // The events lane gives up everything it holds under one lock.
    rx.events.0.drain(batch, &mut held.0, budget);
}
