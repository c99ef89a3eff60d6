//! A connection's halves inside the secure channel: frames sealed into records on the way
//! out, records opened and split into frames on the way in (see
//! [`proto::noise`](crate::proto::noise)). The runtime wraps every connection in them once
//! the secure handshake completes; a tool that speaks the protocol by hand does the same.

use std::sync::Mutex;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use crate::error::{Error, ErrorKind};
use crate::proto::noise::{NoiseError, Opener, Sealer, MAX_RECORD};
use crate::transport::{FrameReader, FrameWriter, ReadEvent, ThroughWrite, WriteThrough};
use crate::wire::split_frame;

fn record_error(e: NoiseError) -> Error {
    Error::from(e)
}

/// What the writer and its write-through share: the sealer (one nonce sequence for both) and
/// bytes to write, as they are, before the next record.
#[derive(Debug)]
struct WriteSide {
    sealer: Sealer,
    /// The handshake's last unit, or the rest of a record a write-through wrote in part.
    raw: Option<Bytes>,
}

/// A [`FrameWriter`] that seals each batch of frames into records and writes those on the
/// transport's writer; its write-through (if the transport has one) seals a lone frame as one
/// record.
#[derive(Debug)]
pub struct SealedWriter {
    inner: Box<dyn FrameWriter>,
    side: std::sync::Arc<Mutex<WriteSide>>,
    records: Vec<Bytes>,
    ends: Vec<usize>,
}

impl SealedWriter {
    /// Seals with `sealer` on `inner`; `first`, if any, is written as it is before anything
    /// else (the dialler's last handshake unit, sent with its `Hello`).
    pub fn new(inner: Box<dyn FrameWriter>, sealer: Sealer, first: Option<Bytes>) -> Self {
        SealedWriter {
            inner,
            side: std::sync::Arc::new(Mutex::new(WriteSide { sealer, raw: first })),
            records: Vec::new(),
            ends: Vec::new(),
        }
    }
}

fn poisoned() -> Error {
    Error::new(ErrorKind::Closed).with_detail("the link's sealer is unusable")
}

#[async_trait]
impl FrameWriter for SealedWriter {
    async fn write_batch(&mut self, frames: &mut Vec<Bytes>) -> Result<(), Error> {
        self.records.clear();
        self.ends.clear();
        let raw = {
            let mut side = self.side.lock().map_err(|_| poisoned())?;
            let raw = side.raw.take();
            self.records.extend(raw.iter().cloned());
            side.sealer
                .seal_frames(frames, &mut self.records, &mut self.ends)
                .map_err(record_error)?;
            usize::from(raw.is_some())
        };
        let total = self.records.len();
        match self.inner.write_batch(&mut self.records).await {
            Ok(()) => {
                frames.clear();
                Ok(())
            }
            Err(e) => {
                // The frames whose last record the transport took went whole; the rest did not.
                let written = (total - self.records.len()).saturating_sub(raw);
                let whole = self.ends.iter().take_while(|&&end| end <= written).count();
                frames.drain(..whole);
                Err(e)
            }
        }
    }

    fn write_through(&mut self) -> Option<Box<dyn WriteThrough>> {
        let inner = self.inner.write_through()?;
        Some(Box::new(SealedThrough {
            inner,
            side: std::sync::Arc::clone(&self.side),
        }))
    }

    async fn close(&mut self) -> Result<(), Error> {
        self.inner.close().await
    }
}

/// Writes a lone frame from the sender's call: sealed as one record, on the transport's own
/// write-through.
#[derive(Debug)]
struct SealedThrough {
    inner: Box<dyn WriteThrough>,
    side: std::sync::Arc<Mutex<WriteSide>>,
}

impl WriteThrough for SealedThrough {
    fn try_write(&self, frame: Bytes) -> ThroughWrite {
        let Ok(mut side) = self.side.lock() else {
            return ThroughWrite::NotTaken(frame);
        };
        if side.raw.is_some() {
            return ThroughWrite::NotTaken(frame);
        }
        let before = side.sealer.sealed();
        // A frame over one record is the writer's to split.
        let Ok(record) = side.sealer.seal_frame(&frame) else {
            return ThroughWrite::NotTaken(frame);
        };
        match self.inner.try_write(record) {
            ThroughWrite::Written => ThroughWrite::Written,
            ThroughWrite::Unflushed => ThroughWrite::Unflushed,
            // None of the record reached the transport: its nonce is unused, and the frame
            // goes to the writer, which seals it again under the same nonce.
            ThroughWrite::NotTaken(_) => {
                side.sealer.rewind_to(before);
                ThroughWrite::NotTaken(frame)
            }
            // The rest of the record is ciphertext: the writer writes it as it is, before
            // anything else, when the runtime flushes.
            ThroughWrite::Rest(rest) => {
                side.raw = Some(rest);
                ThroughWrite::Unflushed
            }
        }
    }
}

/// A [`FrameReader`] that opens the records the transport's reader reads and hands out the
/// frames they carry. A record that fails authentication is a [`Decode`](ErrorKind::Decode)
/// error: the link must close.
#[derive(Debug)]
pub struct SealedReader {
    inner: Box<dyn FrameReader>,
    opener: Opener,
    plain: BytesMut,
}

impl SealedReader {
    /// Opens records read from `inner` with `opener`.
    pub fn new(inner: Box<dyn FrameReader>, opener: Opener) -> Self {
        SealedReader {
            inner,
            opener,
            plain: BytesMut::new(),
        }
    }

    fn open(&mut self, record: &[u8]) -> Result<(), Error> {
        self.opener
            .open(record, &mut self.plain)
            .map_err(record_error)
    }

    fn take(&mut self, limit: usize) -> Result<Option<Bytes>, Error> {
        Ok(split_frame(&mut self.plain, limit)?)
    }
}

#[async_trait]
impl FrameReader for SealedReader {
    async fn read(&mut self, limit: usize) -> Result<ReadEvent, Error> {
        if let Some(frame) = self.take(limit)? {
            return Ok(ReadEvent::Frame(frame));
        }
        // Cancel safe: the inner read is, and what it returns is opened before any await.
        match self.inner.read(MAX_RECORD).await? {
            ReadEvent::Frame(record) => {
                self.open(&record)?;
                Ok(match self.take(limit)? {
                    Some(frame) => ReadEvent::Frame(frame),
                    None => ReadEvent::Partial,
                })
            }
            ReadEvent::Closed if !self.plain.is_empty() => Err(Error::new(ErrorKind::Io)
                .with_detail("the connection closed in the middle of a frame")),
            other => Ok(other),
        }
    }

    fn try_read_frame(&mut self, limit: usize) -> Result<Option<Bytes>, Error> {
        loop {
            if let Some(frame) = self.take(limit)? {
                return Ok(Some(frame));
            }
            match self.inner.try_read_frame(MAX_RECORD)? {
                Some(record) => self.open(&record)?,
                None => return Ok(None),
            }
        }
    }
}
