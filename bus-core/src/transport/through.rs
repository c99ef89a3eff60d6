//! Write-through: a lone frame written from the sender's own call, without the writer task.
//!
//! A connection's writer task batches what its lanes hold. A frame sent while that task is
//! idle and every lane is empty would cost a task wake-up and a poll before its write; a
//! transport that can write without waiting offers a [`WriteThrough`] instead, and the runtime
//! writes such a frame at once from the sender's call. The runtime guarantees that a
//! `WriteThrough` is never used while its [`FrameWriter`](super::FrameWriter) writes, nor
//! twice at once, and that whatever a write-through left unfinished is finished through the
//! writer before anything else is written.

use std::fmt;
use std::io::Write;

use bytes::Bytes;

/// How much of a frame a [`WriteThrough::try_write`] handed to the transport.
#[derive(Debug)]
#[must_use]
pub enum ThroughWrite {
    /// The whole frame went to the transport, flushed.
    Written,
    /// Nothing of it was taken (the transport is full, busy or broken): here it is back, for
    /// the writer's lanes.
    NotTaken(Bytes),
    /// Only part of the frame was taken: these are the bytes that were not. The caller writes
    /// them with [`FrameWriter::write_batch`](super::FrameWriter::write_batch), as one frame
    /// of their own, before anything else (a byte stream writes them as they are).
    Rest(Bytes),
    /// The whole frame was taken into the transport's own buffer but not flushed: the caller
    /// calls [`FrameWriter::write_batch`](super::FrameWriter::write_batch) (an empty batch
    /// will do) before writing anything else, which flushes it.
    Unflushed,
}

/// Writes a lone frame at once, never waiting: the write-through side of a connection's
/// writer, handed out once by
/// [`FrameWriter::write_through`](super::FrameWriter::write_through).
///
/// The caller uses it only while the writer is idle, from one thread at a time, and finishes
/// what it left ([`ThroughWrite::Rest`], [`ThroughWrite::Unflushed`]) through the writer
/// before anything else.
pub trait WriteThrough: Send + Sync + fmt::Debug {
    /// Hands as much of `frame` (one whole encoded frame) to the transport as it takes now,
    /// without waiting. A failure of the transport is [`ThroughWrite::NotTaken`]: the writer
    /// meets it on its own next write and ends the connection as usual.
    fn try_write(&self, frame: Bytes) -> ThroughWrite;
}

/// A [`WriteThrough`] for byte streams (TCP, Unix sockets): writes on a second handle of the
/// same socket, such as a duplicate of its descriptor, which must be in non-blocking mode (a
/// duplicate shares the original's mode). A write the socket takes in part leaves the rest,
/// as [`ThroughWrite::Rest`], for the stream's [`StreamFrameWriter`](super::StreamFrameWriter).
pub struct StreamThrough<D> {
    io: D,
}

impl<D> StreamThrough<D>
where
    D: Send + Sync + 'static,
    for<'a> &'a D: Write,
{
    /// Write-through on `io`, a non-blocking handle of the socket the writer writes to.
    pub fn new(io: D) -> Self {
        StreamThrough { io }
    }
}

impl<D> fmt::Debug for StreamThrough<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamThrough").finish_non_exhaustive()
    }
}

impl<D> WriteThrough for StreamThrough<D>
where
    D: Send + Sync + 'static,
    for<'a> &'a D: Write,
{
    fn try_write(&self, frame: Bytes) -> ThroughWrite {
        loop {
            return match (&self.io).write(&frame) {
                Ok(n) if n >= frame.len() => ThroughWrite::Written,
                Ok(0) => ThroughWrite::NotTaken(frame),
                Ok(n) => ThroughWrite::Rest(frame.slice(n..)),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // Full (`WouldBlock`) or broken: the writer finds out which on its own write.
                Err(_) => ThroughWrite::NotTaken(frame),
            };
        }
    }
}
