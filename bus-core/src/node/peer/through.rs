//! Sending a lone frame at once: written through the connection's
//! [`Gate`](crate::node::conn::through::Gate) when its writer is idle and nothing waits before
//! it, queued on its lane otherwise.

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::PeerHandle;

impl PeerHandle {
    /// Writes `frame` (a control frame, a reply or a command) from this call if the writer is
    /// idle and nothing is queued before it; hands it back otherwise, for its lane.
    pub(crate) fn try_through(&self, frame: Bytes) -> Result<(), Bytes> {
        if self.is_aborted() {
            return Err(frame);
        }
        let len = frame.len();
        self.gate.try_write(frame)?;
        self.counters.sent(1, len);
        Ok(())
    }

    /// Sends a control frame or a reply now: written through if it can be, else queued on
    /// `lane` if it has room.
    pub(crate) fn try_send_now(
        &self,
        lane: &mpsc::Sender<Bytes>,
        frame: Bytes,
    ) -> Result<(), TrySendError<Bytes>> {
        match self.try_through(frame) {
            Ok(()) => Ok(()),
            Err(frame) => lane.try_send(frame),
        }
    }

    /// Sends a command frame now: written through if it can be (it then holds none of the
    /// byte budget), else queued on the commands lane if the lane and the budget have room.
    pub(crate) fn try_send_command(&self, frame: Bytes) -> Result<(), TrySendError<Bytes>> {
        match self.try_through(frame) {
            Ok(()) => Ok(()),
            Err(frame) => self.try_queue(&self.lanes.commands, frame),
        }
    }
}
