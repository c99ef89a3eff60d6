//! The two halves of an in-memory connection.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, watch};

use crate::network::{ConnShared, InMemNetwork, Packet, Verdict};
use meshbus_core::wire::{frame_len, split_frame};
use meshbus_core::{Error, ErrorKind, FrameReader, FrameWriter, ReadEvent};

/// Resolves once the connection is killed.
async fn killed(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|k| *k).await.is_err() {
        // The sender lives as long as `ConnShared`, which the caller holds: never happens.
        std::future::pending::<()>().await;
    }
}

/// Reads the frames of one direction of a connection, from `from` to `to`.
pub(crate) struct InMemReader {
    net: InMemNetwork,
    from: Arc<str>,
    to: Arc<str>,
    rx: mpsc::Receiver<Packet>,
    /// A delayed packet waiting for its time, kept here so a cancelled read loses nothing.
    held: Option<Packet>,
    /// Bytes of an unfinished frame (only ever from `inject`).
    buf: BytesMut,
    partial_reported: bool,
    killed: watch::Receiver<bool>,
    _shared: Arc<ConnShared>,
}

impl InMemReader {
    pub(crate) fn new(
        net: InMemNetwork,
        from: Arc<str>,
        to: Arc<str>,
        rx: mpsc::Receiver<Packet>,
        shared: Arc<ConnShared>,
    ) -> Self {
        InMemReader {
            net,
            from,
            to,
            rx,
            held: None,
            buf: BytesMut::new(),
            partial_reported: false,
            killed: shared.killed(),
            _shared: shared,
        }
    }

    /// The next packet that has arrived and survived the link, or `None` at the end.
    async fn next_packet(&mut self) -> Option<Packet> {
        loop {
            let packet = match self.held.take() {
                Some(p) => p,
                None => self.rx.recv().await?,
            };
            if let Some(at) = packet.deliver_at {
                if at > tokio::time::Instant::now() {
                    self.held = Some(packet);
                    tokio::time::sleep_until(at).await;
                    continue;
                }
            }
            if self.net.on_arrival(&self.from, &self.to) {
                return Some(packet);
            }
        }
    }
}

impl fmt::Debug for InMemReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemReader")
            .field("from", &self.from)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

/// Frames arrive whole, so `read` returns [`ReadEvent::Frame`] and [`ReadEvent::Closed`]; only
/// bytes pushed with [`InMemNetwork::inject`] that are not exactly one frame go through a
/// buffer as on a byte stream, and may give [`ReadEvent::Partial`]. A killed connection reads
/// `Closed` at once, even in the middle of a frame. Cancel safe.
#[async_trait]
impl FrameReader for InMemReader {
    async fn read(&mut self, limit: usize) -> Result<ReadEvent, Error> {
        loop {
            if *self.killed.borrow() {
                return Ok(ReadEvent::Closed);
            }
            if let Some(frame) = split_frame(&mut self.buf, limit)? {
                self.partial_reported = false;
                return Ok(ReadEvent::Frame(frame));
            }
            if !self.buf.is_empty() && !self.partial_reported {
                self.partial_reported = true;
                return Ok(ReadEvent::Partial);
            }
            let mut kill = self.killed.clone();
            let packet = tokio::select! {
                biased;
                () = killed(&mut kill) => return Ok(ReadEvent::Closed),
                p = self.next_packet() => p,
            };
            let Some(Packet { bytes, .. }) = packet else {
                if self.buf.is_empty() {
                    return Ok(ReadEvent::Closed);
                }
                return Err(Error::new(ErrorKind::Io)
                    .with_detail("connection closed in the middle of a frame"));
            };
            if self.buf.is_empty() && frame_len(&bytes, limit)? == Some(bytes.len()) {
                return Ok(ReadEvent::Frame(bytes));
            }
            self.buf.extend_from_slice(&bytes);
            self.partial_reported = false;
        }
    }
}

/// Writes the frames of one direction of a connection, from `from` to `to`.
pub(crate) struct InMemWriter {
    net: InMemNetwork,
    from: Arc<str>,
    to: Arc<str>,
    tx: Option<mpsc::Sender<Packet>>,
    killed: watch::Receiver<bool>,
    _shared: Arc<ConnShared>,
}

impl InMemWriter {
    pub(crate) fn new(
        net: InMemNetwork,
        from: Arc<str>,
        to: Arc<str>,
        tx: mpsc::Sender<Packet>,
        shared: Arc<ConnShared>,
    ) -> Self {
        InMemWriter {
            net,
            from,
            to,
            tx: Some(tx),
            killed: shared.killed(),
            _shared: shared,
        }
    }
}

impl fmt::Debug for InMemWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemWriter")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("closed", &self.tx.is_none())
            .finish_non_exhaustive()
    }
}

/// Removes the frames already handed over, even when the write is cancelled.
struct Sent<'a> {
    frames: &'a mut Vec<Bytes>,
    n: usize,
}

impl Drop for Sent<'_> {
    fn drop(&mut self) {
        let n = self.n.min(self.frames.len());
        self.frames.drain(..n);
    }
}

fn reset() -> Error {
    Error::new(ErrorKind::Io).with_detail("connection reset: a node of the link was killed")
}

/// Sends the frames one by one, each waiting for room on the link (a reader that does not
/// read makes the writer wait). Cancel safe, unlike a byte stream's writer: when the future is
/// dropped, the frames already handed over are gone from `frames` and the rest remain, so the
/// call can be repeated.
#[async_trait]
impl FrameWriter for InMemWriter {
    async fn write_batch(&mut self, frames: &mut Vec<Bytes>) -> Result<(), Error> {
        let Some(tx) = &self.tx else {
            return Err(Error::new(ErrorKind::Closed).with_detail("writer closed"));
        };
        let mut sent = Sent { frames, n: 0 };
        while let Some(frame) = sent.frames.get(sent.n).cloned() {
            if *self.killed.borrow() {
                return Err(reset());
            }
            let permit = tokio::select! {
                biased;
                () = killed(&mut self.killed) => return Err(reset()),
                permit = tx.reserve() => permit.map_err(|_| {
                    Error::new(ErrorKind::Io).with_detail("broken pipe: the other end is gone")
                })?,
            };
            match self.net.on_send(&self.from, &self.to) {
                Verdict::Drop => {}
                Verdict::Deliver(deliver_at) => permit.send(Packet {
                    bytes: frame,
                    deliver_at,
                }),
            }
            sent.n += 1;
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<(), Error> {
        self.tx = None;
        Ok(())
    }
}
