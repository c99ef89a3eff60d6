//! The two halves of a WebSocket connection.

use std::fmt;
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll, Waker};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use meshbus_core::transport::Addr;
use meshbus_core::transport::{ThroughWrite, WriteThrough};
use meshbus_core::wire::frame_len;
use meshbus_core::{Connection, Error, ErrorKind, FrameReader, FrameWriter, ReadEvent};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::error::ws_error;
use crate::stream::Stream;
use crate::FRAGMENT_SIZE;

/// An upgraded WebSocket, over TCP or TLS.
pub(crate) type Ws = WebSocketStream<Stream>;

/// Splits an upgraded WebSocket into the two halves of a [`Connection`].
///
/// The halves share the socket through the lock of [`StreamExt::split`], held only while one
/// of them is polled. The reader answers pings: tungstenite queues the pong when it reads a
/// ping and writes it out at the start of the next read, which [`WsReader::read`] makes at
/// once, so pongs go out even while the writer has nothing to send.
pub(crate) fn connection(ws: Ws, arrived: Arc<AtomicU64>, remote: Addr) -> Connection {
    let (sink, stream) = ws.split();
    // The upgrade's bytes are not news for the caller.
    let seen = arrived.load(Ordering::Relaxed);
    Connection {
        reader: Box::new(WsReader {
            stream,
            arrived,
            seen,
            stashed: None,
            ended: false,
        }),
        writer: Box::new(WsWriter::new(sink)),
        remote,
    }
}

/// Reads frames: each binary WebSocket message is one whole frame, length prefix included.
pub(crate) struct WsReader {
    stream: SplitStream<Ws>,
    /// Bytes read from the socket so far, counted by [`Counted`](crate::stream::Counted).
    arrived: Arc<AtomicU64>,
    /// `arrived` when the caller last heard of bytes (a frame, or `Partial`).
    seen: u64,
    /// A message [`try_read_frame`](FrameReader::try_read_frame) took that is not a frame
    /// (a close, a text message, an error): the next `read` answers it.
    stashed: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    /// The stream ended under `try_read_frame`: the next `read` says so.
    ended: bool,
}

impl fmt::Debug for WsReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsReader")
            .field("arrived", &self.arrived.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What one poll of the WebSocket gave.
enum Polled {
    Message(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    /// Bytes arrived and no message is whole yet.
    Partial,
}

/// Checks that a binary message is one whole frame within `limit`: its length prefix declares
/// exactly the bytes that follow.
fn check_frame(bytes: &Bytes, limit: usize) -> Result<(), Error> {
    match frame_len(bytes, limit)? {
        Some(whole) if whole == bytes.len() => Ok(()),
        Some(whole) => Err(Error::new(ErrorKind::Decode).with_detail(format!(
            "a WebSocket message of {} bytes holds a frame of {whole}",
            bytes.len()
        ))),
        None => Err(Error::new(ErrorKind::Decode).with_detail(format!(
            "a WebSocket message of {} bytes is shorter than a length prefix",
            bytes.len()
        ))),
    }
}

/// Every binary message is returned as [`ReadEvent::Frame`] once its length prefix is checked
/// against `limit` and against the message's size; pings and pongs are skipped (tungstenite
/// answers pings); a close message is [`ReadEvent::Closed`]; a text message is a
/// [`Decode`](ErrorKind::Decode) error. Bytes that arrive without completing a message give
/// [`ReadEvent::Partial`], pings included: they are not frames, so not proof of life.
///
/// Cancel safe: tungstenite keeps what it has read of an unfinished message in the stream.
impl WsReader {
    /// Waits for the next message, or for bytes of an unfinished one (`Partial`).
    async fn poll_message(&mut self) -> Polled {
        poll_fn(|cx| match self.stream.poll_next_unpin(cx) {
            Poll::Ready(item) => Poll::Ready(Polled::Message(item)),
            Poll::Pending => {
                let arrived = self.arrived.load(Ordering::Relaxed);
                if arrived != self.seen {
                    self.seen = arrived;
                    Poll::Ready(Polled::Partial)
                } else {
                    Poll::Pending
                }
            }
        })
        .await
    }
}

#[async_trait]
impl FrameReader for WsReader {
    async fn read(&mut self, limit: usize) -> Result<ReadEvent, Error> {
        loop {
            if self.ended {
                return Ok(ReadEvent::Closed);
            }
            let polled = match self.stashed.take() {
                Some(message) => Polled::Message(Some(message)),
                None => self.poll_message().await,
            };
            let message = match polled {
                Polled::Partial => return Ok(ReadEvent::Partial),
                Polled::Message(None) => return Ok(ReadEvent::Closed),
                Polled::Message(Some(Err(e))) => return Err(ws_error("read failed", e)),
                Polled::Message(Some(Ok(message))) => message,
            };
            match message {
                Message::Binary(bytes) => {
                    self.seen = self.arrived.load(Ordering::Relaxed);
                    check_frame(&bytes, limit)?;
                    return Ok(ReadEvent::Frame(bytes));
                }
                Message::Text(_) => {
                    return Err(Error::new(ErrorKind::Decode)
                        .with_detail("a text WebSocket message: meshbus speaks binary only"))
                }
                Message::Close(_) => return Ok(ReadEvent::Closed),
                // The next poll writes the queued pong.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// A binary message tungstenite already holds whole, without waiting: the rest of a burst.
    /// Anything else it finds (a close, a text message, an error) is kept for the next
    /// [`read`](FrameReader::read), which answers it as usual; pings and pongs are skipped.
    fn try_read_frame(&mut self, limit: usize) -> Result<Option<Bytes>, Error> {
        if self.ended || self.stashed.is_some() {
            return Ok(None);
        }
        let mut cx = Context::from_waker(Waker::noop());
        // Bounded: a burst of control messages ends the attempt, `read` goes on from there.
        for _ in 0..16 {
            match self.stream.poll_next_unpin(&mut cx) {
                Poll::Pending => return Ok(None),
                Poll::Ready(None) => {
                    self.ended = true;
                    return Ok(None);
                }
                Poll::Ready(Some(Ok(Message::Binary(bytes)))) => {
                    self.seen = self.arrived.load(Ordering::Relaxed);
                    check_frame(&bytes, limit)?;
                    return Ok(Some(bytes));
                }
                Poll::Ready(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => {}
                Poll::Ready(Some(other)) => {
                    self.stashed = Some(other);
                    return Ok(None);
                }
            }
        }
        Ok(None)
    }
}

/// The write half of the WebSocket, shared by the writer and its write-through. The runtime
/// never uses both at once; the lock is taken only inside a poll, never across a wait.
type SharedSink = Arc<Mutex<SplitSink<Ws, Message>>>;

fn lock(sink: &SharedSink) -> MutexGuard<'_, SplitSink<Ws, Message>> {
    sink.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes frames, each as one binary WebSocket message.
pub(crate) struct WsWriter {
    sink: SharedSink,
    closed: bool,
    /// Handed out once by `write_through`.
    through: Option<WsThrough>,
}

impl fmt::Debug for WsWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsWriter")
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl WsWriter {
    fn new(sink: SplitSink<Ws, Message>) -> Self {
        let sink = Arc::new(Mutex::new(sink));
        WsWriter {
            through: Some(WsThrough {
                sink: Arc::clone(&sink),
            }),
            sink,
            closed: false,
        }
    }

    /// Queues one message with tungstenite, once it has room.
    async fn send(&self, message: Message) -> Result<(), Error> {
        let mut message = Some(message);
        poll_fn(|cx| {
            let mut sink = lock(&self.sink);
            ready!(sink.poll_ready_unpin(cx))?;
            match message.take() {
                Some(m) => Poll::Ready(sink.start_send_unpin(m)),
                None => Poll::Ready(Ok(())),
            }
        })
        .await
        .map_err(|e| ws_error("write failed", e))
    }

    /// Queues one frame as a binary message, split into WebSocket fragments of at most
    /// [`FRAGMENT_SIZE`] bytes (the receiver refuses larger WebSocket frames, so a peer cannot
    /// make it reserve a huge frame up front).
    async fn feed(&self, frame: Bytes) -> Result<(), Error> {
        if frame.len() <= FRAGMENT_SIZE {
            // Moved, not cloned: the clone of a `Bytes` made from a vector allocates.
            return self.send(Message::Binary(frame)).await;
        }
        let mut start = 0;
        while start < frame.len() {
            let end = frame.len().min(start.saturating_add(FRAGMENT_SIZE));
            let opcode = if start == 0 {
                OpCode::Data(Data::Binary)
            } else {
                OpCode::Data(Data::Continue)
            };
            let fragment = Frame::message(frame.slice(start..end), opcode, end == frame.len());
            self.send(Message::Frame(fragment)).await?;
            start = end;
        }
        Ok(())
    }
}

/// Feeds every frame of the batch to tungstenite's write buffer, then flushes once (an empty
/// batch flushes what a write-through left). Not cancel safe.
#[async_trait]
impl FrameWriter for WsWriter {
    async fn write_batch(&mut self, frames: &mut Vec<Bytes>) -> Result<(), Error> {
        if self.closed {
            return Err(Error::new(ErrorKind::Closed).with_detail("writer closed"));
        }
        for frame in frames.drain(..) {
            self.feed(frame).await?;
        }
        poll_fn(|cx| lock(&self.sink).poll_flush_unpin(cx))
            .await
            .map_err(|e| ws_error("flush failed", e))?;
        Ok(())
    }

    fn write_through(&mut self) -> Option<Box<dyn WriteThrough>> {
        self.through
            .take()
            .map(|t| Box::new(t) as Box<dyn WriteThrough>)
    }

    /// Sends a close message and flushes; the other end reads [`ReadEvent::Closed`].
    async fn close(&mut self) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        match poll_fn(|cx| lock(&self.sink).poll_close_unpin(cx)).await {
            Ok(()) | Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed) => Ok(()),
            Err(e) => Err(ws_error("close failed", e)),
        }
    }
}

/// Writes a lone frame of at most [`FRAGMENT_SIZE`] bytes as one binary message through the
/// same tungstenite sink as the writer, so that tungstenite's own messages (the pongs it owes)
/// stay in one stream with ours. Never waits: a sink whose lock is taken, or that has no room,
/// takes nothing; a message taken and not flushed at once is flushed by the writer.
#[derive(Debug)]
struct WsThrough {
    sink: SharedSink,
}

impl WriteThrough for WsThrough {
    fn try_write(&self, frame: Bytes) -> ThroughWrite {
        if frame.len() > FRAGMENT_SIZE {
            return ThroughWrite::NotTaken(frame);
        }
        let Ok(mut sink) = self.sink.try_lock() else {
            return ThroughWrite::NotTaken(frame);
        };
        let mut cx = Context::from_waker(Waker::noop());
        if !matches!(sink.poll_ready_unpin(&mut cx), Poll::Ready(Ok(()))) {
            return ThroughWrite::NotTaken(frame);
        }
        if sink.start_send_unpin(Message::Binary(frame)).is_err() {
            // Taken and refused: the writer's flush meets the same error and ends the link.
            return ThroughWrite::Unflushed;
        }
        match sink.poll_flush_unpin(&mut cx) {
            Poll::Ready(Ok(())) => ThroughWrite::Written,
            // Not all written (or the link failed): the writer's flush goes on, or fails.
            Poll::Ready(Err(_)) | Poll::Pending => ThroughWrite::Unflushed,
        }
    }
}
