//! Frame reader and writer over a byte stream (TCP, Unix sockets, anything `AsyncRead` /
//! `AsyncWrite`).

use std::fmt;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Decoder;

use super::{FrameReader, FrameWriter, ReadEvent, WriteThrough};
use crate::wire::{split_frame, FrameError};
use crate::{Error, ErrorKind};

/// How much room a read asks for when the buffer has none left.
const READ_CHUNK: usize = 8 * 1024;

/// How much room a read may ask for on a busy stream: each read that fills all the room it was
/// given doubles the next one's, up to this, so a stream that keeps the socket full is read in
/// a few system calls per megabyte; a read that takes less than half of its room goes back to
/// [`READ_CHUNK`], so a quiet stream keeps a small buffer.
const BUSY_READ_CHUNK: usize = 64 * 1024;

/// How much a reader's first read takes at most, into a buffer on the stack: a handshake
/// frame's usual size.
const FIRST_READ_CHUNK: usize = 512;

/// A batch buffer grown beyond this is given back after the batch, so one burst does not pin
/// its memory for the connection's lifetime.
const KEEP_BATCH_CAPACITY: usize = 256 * 1024;

/// After a frame larger than this, the bytes behind it move to a buffer of their own, so the
/// frame's allocation is freed with the frame instead of serving the connection's reads for the
/// rest of its life (a `BytesMut` split keeps the whole allocation it was split from).
const KEEP_READ_CAPACITY: usize = 64 * 1024;

/// The length-delimited framing of byte streams as a tokio-util [`Decoder`]: whole frames,
/// length prefix included, split off a [`BytesMut`] by [`split_frame`].
///
/// [`StreamFrameReader`] decodes with it; a transport of its own can too, as can
/// `tokio_util::codec::FramedRead` where the reader's extras are not needed. tokio-util's
/// `LengthDelimitedCodec` is not used: it reserves a frame's whole declared size as soon as the
/// prefix arrives (up to the limit, 16 MiB, for a peer that then sends nothing), where
/// [`split_frame`] grows the buffer at most 64 KiB ahead of what arrived, and it does not
/// refuse a length shorter than a frame's fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamFraming {
    /// The largest frame accepted, counting everything after the length prefix: a longer
    /// declared length is an error before anything is reserved.
    pub limit: usize,
}

impl Decoder for StreamFraming {
    type Item = Bytes;
    type Error = FramingError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FramingError> {
        split_frame(src, self.limit).map_err(FramingError::Frame)
    }
}

/// What [`StreamFraming`] fails with: a length the framing refuses, or, under
/// `tokio_util::codec::FramedRead`, the stream's own error. Either is final for the connection.
#[derive(Debug)]
pub enum FramingError {
    /// The declared length is over the limit or shorter than a frame's fixed header.
    Frame(FrameError),
    /// Reading the stream failed.
    Io(std::io::Error),
}

impl From<std::io::Error> for FramingError {
    fn from(e: std::io::Error) -> Self {
        FramingError::Io(e)
    }
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FramingError::Frame(e) => e.fmt(f),
            FramingError::Io(e) => write!(f, "read failed: {e}"),
        }
    }
}

impl std::error::Error for FramingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FramingError::Frame(e) => e.source(),
            FramingError::Io(e) => Some(e),
        }
    }
}

impl From<FramingError> for Error {
    fn from(e: FramingError) -> Self {
        match e {
            FramingError::Frame(e) => e.into(),
            FramingError::Io(e) => io_error("read failed", e),
        }
    }
}

fn io_error(what: &'static str, err: std::io::Error) -> Error {
    Error::new(ErrorKind::Io).with_detail(what).with_source(err)
}

/// A [`FrameReader`] over a byte stream: reads into a buffer and splits whole frames off by
/// their 4-byte big-endian length prefix ([`split_frame`]).
///
/// Memory grows with the bytes that actually arrive: a declared length over the limit is
/// refused before anything is reserved, and an announced large frame makes the buffer grow at
/// most 64 KiB ahead of what was received.
///
/// An end of stream between frames is [`ReadEvent::Closed`]; an end of stream in the middle of
/// a frame is an [`Io`](ErrorKind::Io) error (as `std::io::ErrorKind::UnexpectedEof`): the
/// peer went away, the frame was not malformed.
///
/// `read` is cancel safe: bytes are only ever read into the reader's own buffer.
pub struct StreamFrameReader<R> {
    io: R,
    buf: BytesMut,
    /// Whether the caller has heard of the unfinished frame's bytes now in `buf`.
    partial_reported: bool,
    /// Whether nothing has been read yet: the first read goes through a small buffer on the
    /// stack, so a connection that never sends anything allocates nothing.
    first_read: bool,
    /// The room the next read asks for: see [`BUSY_READ_CHUNK`].
    chunk: usize,
}

impl<R> StreamFrameReader<R> {
    /// A reader over `io`.
    pub fn new(io: R) -> Self {
        StreamFrameReader {
            io,
            buf: BytesMut::new(),
            partial_reported: false,
            first_read: true,
            chunk: READ_CHUNK,
        }
    }

    /// Splits a whole frame off the buffer, if there is one. After a large frame, what follows
    /// it (at most a few reads' worth) is copied to a small buffer: the large one goes when the
    /// frame is dropped, not when the connection is.
    fn split(&mut self, limit: usize) -> Result<Option<Bytes>, Error> {
        let frame = StreamFraming { limit }.decode(&mut self.buf)?;
        if let Some(frame) = &frame {
            self.partial_reported = false;
            if frame.len() > KEEP_READ_CAPACITY && self.buf.len() <= KEEP_READ_CAPACITY {
                self.buf = BytesMut::from(&self.buf[..]);
            }
        }
        Ok(frame)
    }

    /// The stream, and any bytes read from it but not yet returned as frames.
    pub fn into_parts(self) -> (R, BytesMut) {
        (self.io, self.buf)
    }
}

impl<R> fmt::Debug for StreamFrameReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamFrameReader")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<R: AsyncRead + Unpin + Send> FrameReader for StreamFrameReader<R> {
    async fn read(&mut self, limit: usize) -> Result<ReadEvent, Error> {
        loop {
            if let Some(frame) = self.split(limit)? {
                return Ok(ReadEvent::Frame(frame));
            }
            if !self.buf.is_empty() && !self.partial_reported {
                self.partial_reported = true;
                return Ok(ReadEvent::Partial);
            }
            let n = if self.first_read {
                // Connections opened and closed again without a word (probes, floods) then
                // leave nothing behind; the buffer every later read uses is made just as it
                // was before (a small first buffer kept would change how `BytesMut` grows it,
                // which cost a third of the 1 KiB event rate). Cancel safe: the bytes are
                // only taken from the stream when the read completes, and moved at once.
                let mut first = [0u8; FIRST_READ_CHUNK];
                let n = self
                    .io
                    .read(&mut first)
                    .await
                    .map_err(|e| io_error("read failed", e))?;
                self.first_read = false;
                if n > 0 {
                    self.buf.reserve(READ_CHUNK);
                    self.buf.extend_from_slice(&first[..n]);
                }
                n
            } else {
                if self.buf.capacity() - self.buf.len() < self.chunk / 2 {
                    self.buf.reserve(self.chunk);
                }
                let room = self.buf.capacity() - self.buf.len();
                // The only await: `read_buf` is cancel safe, and nothing above changes on
                // retry.
                let n = self
                    .io
                    .read_buf(&mut self.buf)
                    .await
                    .map_err(|e| io_error("read failed", e))?;
                self.chunk = if n == room {
                    (self.chunk * 2).min(BUSY_READ_CHUNK)
                } else if n < room / 2 {
                    READ_CHUNK
                } else {
                    self.chunk
                };
                n
            };
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(ReadEvent::Closed);
                }
                return Err(io_error(
                    "connection closed in the middle of a frame",
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
            self.partial_reported = false;
        }
    }

    fn try_read_frame(&mut self, limit: usize) -> Result<Option<Bytes>, Error> {
        self.split(limit)
    }
}

/// A [`FrameWriter`] over a byte stream: writes a whole batch at once, then flushes. A stream
/// that writes vectored (sockets do) is handed the batch's frames of 512 bytes or more as they
/// are, without a copy, and its smaller frames copied together; another gets the frames
/// concatenated into one buffer. The one frame of a batch of one is written as it is. After a failed write, the frames
/// left in the batch are those no byte of which reached the stream, or only part of.
///
/// `write_batch` is not cancel safe (see [`FrameWriter::write_batch`]).
///
/// It expects of `W` what operating-system sockets do: a write that fails took none of the
/// bytes it was given (one that takes some reports how many). The runtime sends the commands
/// a failed batch left over to other handlers, so a stream that can send part of what it then
/// reports as failed (an encrypting layer that writes records before an error) must not be
/// given to it as is: its writer must empty `frames` on any error instead.
pub struct StreamFrameWriter<W> {
    io: W,
    batch: BytesMut,
    closed: bool,
    /// Handed out once by `write_through`.
    through: Option<Box<dyn WriteThrough>>,
}

impl<W> StreamFrameWriter<W> {
    /// A writer over `io`.
    pub fn new(io: W) -> Self {
        StreamFrameWriter {
            io,
            batch: BytesMut::new(),
            closed: false,
            through: None,
        }
    }

    /// Offers `through` (writing to the same stream, without waiting: a
    /// [`StreamThrough`](super::StreamThrough) on a duplicate of the socket) as this writer's
    /// [`write_through`](FrameWriter::write_through). The bytes of a frame it took only in
    /// part come back to [`write_batch`](FrameWriter::write_batch) as a frame of their own,
    /// and are written as they are.
    pub fn with_through(mut self, through: impl WriteThrough + 'static) -> Self {
        self.through = Some(Box::new(through));
        self
    }

    /// The stream.
    pub fn into_inner(self) -> W {
        self.io
    }
}

impl<W> fmt::Debug for StreamFrameWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamFrameWriter")
            .field("closed", &self.closed)
            .field("through", &self.through.is_some())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<W: AsyncWrite + Unpin + Send> FrameWriter for StreamFrameWriter<W> {
    fn write_through(&mut self) -> Option<Box<dyn WriteThrough>> {
        self.through.take()
    }

    async fn write_batch(&mut self, frames: &mut Vec<Bytes>) -> Result<(), Error> {
        if self.closed {
            return Err(Error::new(ErrorKind::Closed).with_detail("writer closed"));
        }
        let written = match frames.as_slice() {
            [] => return Ok(()),
            [one] => write_counted(&mut self.io, one).await,
            many => {
                let vectored = self.io.is_write_vectored();
                // Copied into the batch buffer: every frame, or, writing vectored, the small
                // ones only (see [`WRITE_IN_PLACE`]).
                let copied = |f: &&Bytes| !vectored || f.len() < WRITE_IN_PLACE;
                let total = many.iter().filter(copied).map(|f| f.len()).sum();
                self.batch.clear();
                self.batch.reserve(total);
                for frame in many.iter().filter(copied) {
                    self.batch.extend_from_slice(frame);
                }
                let result = if vectored {
                    let parts = in_order(many, &self.batch);
                    write_vectored_counted(&mut self.io, &parts).await
                } else {
                    write_counted(&mut self.io, &self.batch).await
                };
                if self.batch.capacity() > KEEP_BATCH_CAPACITY {
                    self.batch = BytesMut::new();
                }
                result
            }
        };
        if let Err((done, e)) = written {
            // The frames written whole may have reached the peer; the rest (a frame cut short
            // included: the peer can never read it whole) did not, and stay in `frames`.
            let mut whole = 0;
            let mut end = 0;
            for frame in frames.iter() {
                end += frame.len();
                if end > done {
                    break;
                }
                whole += 1;
            }
            frames.drain(..whole);
            return Err(io_error("write failed", e));
        }
        frames.clear();
        self.io
            .flush()
            .await
            .map_err(|e| io_error("flush failed", e))
    }

    async fn close(&mut self) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.io
            .shutdown()
            .await
            .map_err(|e| io_error("shutdown failed", e))
    }
}

/// How many slices one vectored write hands over at most (Linux's `UIO_MAXIOV`; more is
/// refused with `EINVAL` by the system call).
const MAX_SLICES: usize = 1024;

/// Writing vectored, a frame of at least this many bytes is handed over as it is, a slice of
/// its own; smaller ones are copied into the batch buffer, each run of them one slice. The copy
/// of a frame this small costs about what the kernel spends on one more slice (a batch of
/// 64-byte events as 100–250 slices measured no cheaper than copied), and it keeps the slice
/// list short.
const WRITE_IN_PLACE: usize = 512;

/// The bytes of `frames` in order, as slices: the frames written in place as they are, each
/// run of smaller ones as the part of `copied` (where they were copied, in order) it took.
fn in_order<'a>(frames: &'a [Bytes], copied: &'a [u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let (mut start, mut end) = (0, 0);
    for frame in frames {
        if frame.len() < WRITE_IN_PLACE {
            end += frame.len();
            continue;
        }
        if end > start {
            parts.push(copied.get(start..end).unwrap_or_default());
            start = end;
        }
        parts.push(&frame[..]);
    }
    if end > start {
        parts.push(copied.get(start..end).unwrap_or_default());
    }
    parts
}

/// Writes all of `parts` (frames, and runs of frames copied together) with vectored writes
/// (`writev`), and says on failure how many bytes were written. A write that takes part of
/// them resumes at the first byte it did not take, in the middle of a slice if need be.
async fn write_vectored_counted<W: AsyncWrite + Unpin>(
    io: &mut W,
    parts: &[&[u8]],
) -> Result<(), (usize, std::io::Error)> {
    let mut done = 0;
    // The first part not written whole, and how much of it was.
    let (mut first, mut offset) = (0, 0);
    let mut slices = Vec::with_capacity(parts.len().min(MAX_SLICES));
    loop {
        // Parts written whole, empty ones included, are behind us.
        while let Some(p) = parts.get(first).filter(|p| offset >= p.len()) {
            offset -= p.len();
            first += 1;
        }
        let Some(rest) = parts.get(first..).filter(|r| !r.is_empty()) else {
            return Ok(());
        };
        slices.clear();
        slices.extend(rest.iter().take(MAX_SLICES).enumerate().map(|(i, p)| {
            let from = if i == 0 { offset } else { 0 };
            std::io::IoSlice::new(p.get(from..).unwrap_or_default())
        }));
        match io.write_vectored(&slices).await {
            Ok(0) => return Err((done, std::io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                done += n;
                offset += n;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err((done, e)),
        }
    }
}

/// Writes all of `buf`, as `write_all` does, but says on failure how many bytes were written.
async fn write_counted<W: AsyncWrite + Unpin>(
    io: &mut W,
    buf: &[u8],
) -> Result<(), (usize, std::io::Error)> {
    let mut done = 0;
    while let Some(rest) = buf.get(done..).filter(|r| !r.is_empty()) {
        match io.write(rest).await {
            Ok(0) => return Err((done, std::io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err((done, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
