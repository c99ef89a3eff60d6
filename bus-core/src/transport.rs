//! Transports: how bytes get between nodes.
//!
//! A [`Transport`] turns an [`Addr`] into a [`Listener`] or an outbound [`Connection`]. A
//! connection reads whole frames ([`FrameReader`]) and writes batches of frames
//! ([`FrameWriter`]), so one system call can carry many; the core does everything else
//! (handshake, liveness, routing), so a transport is small. Byte-stream transports (TCP, Unix
//! sockets) wrap their halves in [`StreamFrameReader`] and [`StreamFrameWriter`]; a transport
//! with its own message framing (WebSocket, the in-memory one) implements the two traits
//! directly. [`Transports`] picks a transport by an address's scheme.
//!
//! A writer may also offer a [`WriteThrough`] ([`FrameWriter::write_through`]): the runtime
//! then writes a lone frame (a command, a reply, a ping or pong) from the sender's own call
//! while the writer task is idle and nothing is queued before the frame, saving that task a
//! wake-up; the writer finishes whatever such a write left ([`ThroughWrite`]) before anything
//! else. [`StreamThrough`] does it for byte streams; a transport without it simply works one
//! task wake-up per lone frame slower.
//!
//! Frames here are opaque [`Bytes`]: each is one whole encoded frame, length prefix included,
//! as [`FrameCodec::encode`](crate::wire::FrameCodec::encode) writes it and
//! [`FrameCodec::decode`](crate::wire::FrameCodec::decode) reads it.
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use meshbus_core::transport::{FrameReader, FrameWriter, ReadEvent, StreamFrameReader, StreamFrameWriter};
//! use meshbus_core::wire::{Frame, FrameCodec, FrameKind};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), meshbus_core::Error> {
//! let (a, b) = tokio::io::duplex(1024);
//! let mut writer = StreamFrameWriter::new(a);
//! let mut reader = StreamFrameReader::new(b);
//!
//! let codec = FrameCodec::default();
//! let mut batch = Vec::new();
//! for kind in [FrameKind::Ping, FrameKind::Pong] {
//!     let mut buf = BytesMut::new();
//!     codec.encode(&Frame::new(kind, Bytes::new()), &mut buf)?;
//!     batch.push(buf.freeze());
//! }
//! writer.write_batch(&mut batch).await?; // one write for both frames
//! assert!(batch.is_empty());
//!
//! for kind in [FrameKind::Ping, FrameKind::Pong] {
//!     let ReadEvent::Frame(bytes) = reader.read(codec.max_frame_size).await? else {
//!         panic!("expected a frame");
//!     };
//!     let frame = codec.decode(&mut BytesMut::from(&bytes[..]))?.expect("a whole frame");
//!     assert_eq!(frame.kind, kind);
//! }
//! writer.close().await?;
//! assert!(matches!(reader.read(codec.max_frame_size).await?, ReadEvent::Closed));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::Error;

mod addr;
mod sealed;
mod stream;
mod through;

pub use addr::Addr;
pub use sealed::{SealedReader, SealedWriter};
pub use stream::{FramingError, StreamFrameReader, StreamFrameWriter, StreamFraming};
pub use through::{StreamThrough, ThroughWrite, WriteThrough};

/// A way to reach other nodes: listens on and dials addresses of its [schemes](Self::schemes).
///
/// Implementations are cheap handles; the bus keeps one per scheme in [`Transports`].
#[async_trait]
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// The address schemes this transport serves (`&["tcp", "unix"]`), lower-case.
    fn schemes(&self) -> &'static [&'static str];

    /// Starts listening on `addr`.
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error for an address this transport cannot
    /// serve; an [`Io`](crate::ErrorKind::Io) error when the address is taken or unusable.
    async fn listen(&self, addr: &Addr) -> Result<Box<dyn Listener>, Error>;

    /// Opens a connection to `addr`.
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error for an address this transport cannot
    /// serve; an [`Io`](crate::ErrorKind::Io) error when nobody answers (refused, unreachable,
    /// timed out).
    async fn dial(&self, addr: &Addr) -> Result<Connection, Error>;
}

/// Accepts inbound connections on one address. Dropping it stops listening.
#[async_trait]
pub trait Listener: Send + fmt::Debug {
    /// The address actually listened on, with anything left open resolved (port 0 replaced by
    /// the port the system chose).
    fn local_addr(&self) -> &Addr;

    /// Waits for the next inbound connection.
    ///
    /// # Errors
    ///
    /// An [`Io`](crate::ErrorKind::Io) error for a failed accept (often transient, such as
    /// running out of file descriptors: the caller should back off and retry);
    /// [`Closed`](crate::ErrorKind::Closed) when the listener can never accept again.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: when the future is dropped before it completes, no connection is lost.
    async fn accept(&mut self) -> Result<Connection, Error>;
}

/// One established connection: its two halves and a description of the other end.
///
/// The halves are independent, so the runtime can give each to its own task.
#[derive(Debug)]
pub struct Connection {
    /// Reads frames from the other end.
    pub reader: Box<dyn FrameReader>,
    /// Writes frames to the other end.
    pub writer: Box<dyn FrameWriter>,
    /// The best description of the other end: the address dialled, or the peer address of an
    /// accepted connection. For logs; not necessarily an address the peer listens on.
    pub remote: Addr,
}

/// What [`FrameReader::read`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadEvent {
    /// One whole encoded frame, length prefix included, as
    /// [`FrameCodec::decode`](crate::wire::FrameCodec::decode) expects. Proof that the peer
    /// is alive.
    Frame(Bytes),
    /// Bytes of an unfinished frame are buffered and no whole frame is. **Not** proof of
    /// life: the liveness check starts the frame's read deadline
    /// ([`Liveness::on_partial_frame`](crate::proto::liveness::Liveness::on_partial_frame)).
    /// Returned at most once per arrival of bytes, so the caller simply reads again.
    Partial,
    /// The other end closed the connection cleanly, between frames.
    Closed,
}

/// The reading half of a [`Connection`].
#[async_trait]
pub trait FrameReader: Send + fmt::Debug {
    /// Waits for the next whole frame, or for bytes of one, or for the end.
    ///
    /// `limit` bounds a frame's declared length, counting everything after the 4-byte length
    /// prefix, like [`FrameCodec::max_frame_size`](crate::wire::FrameCodec::max_frame_size);
    /// it may change from call to call (it grows after the handshake).
    ///
    /// # Errors
    ///
    /// - [`TooLarge`](crate::ErrorKind::TooLarge) when a frame declares a length over
    ///   `limit`, found before anything of that size is allocated;
    /// - [`Decode`](crate::ErrorKind::Decode) when the length prefix is impossible (shorter
    ///   than a frame header);
    /// - [`Io`](crate::ErrorKind::Io) when the transport fails, including an end of stream in
    ///   the middle of a frame.
    ///
    /// Any error is final: the caller closes the connection.
    ///
    /// # Cancel safety
    ///
    /// Implementations must be cancel safe, so the runtime can use `read` in `select!`: when
    /// the future is dropped before it completes, no bytes are lost and the next call goes on
    /// where this one stopped.
    async fn read(&mut self, limit: usize) -> Result<ReadEvent, Error>;

    /// The next whole frame if the reader already holds it, without waiting and without
    /// touching the transport: `Ok(None)` when the next frame needs more bytes (or the
    /// reader buffers nothing). After [`read`](Self::read) returned a frame, the runtime takes
    /// the rest of a burst this way, without a wait per frame. The default returns `Ok(None)`.
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read), for the frames it would have returned.
    fn try_read_frame(&mut self, limit: usize) -> Result<Option<Bytes>, Error> {
        let _ = limit;
        Ok(None)
    }
}

/// The writing half of a [`Connection`].
#[async_trait]
pub trait FrameWriter: Send + fmt::Debug {
    /// Writes every frame of `frames`, in order, in as few writes as the transport allows, and
    /// drains the vector (its capacity is kept for the next batch). Returns once the frames
    /// are handed to the transport (flushed to the socket, queued on the in-memory link); a
    /// transport with bounded buffers makes this wait, which is how a slow reader pushes back.
    ///
    /// # Errors
    ///
    /// An [`Io`](crate::ErrorKind::Io) error when the connection is broken (reset, closed by
    /// the other end); [`Closed`](crate::ErrorKind::Closed) after [`close`](Self::close).
    /// After an error the caller drops the connection. The frames still in `frames` then were
    /// not handed to the transport whole (none of their bytes, or only part of a frame, which
    /// the other end can never read whole); those removed may have reached the peer. A
    /// transport that cannot tell removes them all. The runtime sends commands it knows were
    /// not written to another handler.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe in general: a byte stream may have taken part of a frame. If the future
    /// is dropped before it completes, the caller must treat the connection as broken. (An
    /// implementation may promise more; see its docs.)
    async fn write_batch(&mut self, frames: &mut Vec<Bytes>) -> Result<(), Error>;

    /// The write-through side of this writer, if the transport has one: what writes a lone
    /// frame from the sender's call while this writer is idle (see [`WriteThrough`]). Handed
    /// out once; the default (and every later call) is `None`, and a transport without it
    /// works as well, one task wake-up per lone frame slower.
    ///
    /// A writer that offers it must accept what a write-through left over: a
    /// [`ThroughWrite::Rest`] as a frame of its own in `write_batch`, and an empty batch as
    /// "flush what a [`ThroughWrite::Unflushed`] left".
    fn write_through(&mut self) -> Option<Box<dyn WriteThrough>> {
        None
    }

    /// Flushes and closes the writing direction; the other end reads
    /// [`ReadEvent::Closed`] once it has read everything written before.
    ///
    /// # Errors
    ///
    /// An [`Io`](crate::ErrorKind::Io) error when the final flush or shutdown fails.
    async fn close(&mut self) -> Result<(), Error>;
}

/// The transports a node can use, picked by an address's scheme.
///
/// ```
/// use meshbus_core::transport::Transports;
///
/// let transports = Transports::new();
/// assert!(transports.is_empty());
/// assert!(transports.get("tcp").is_none());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Transports {
    list: Vec<Arc<dyn Transport>>,
}

impl Transports {
    /// No transports.
    pub fn new() -> Self {
        Transports::default()
    }

    /// Adds `transport`; for a scheme served by several, the one added first wins.
    pub fn with(mut self, transport: impl Transport) -> Self {
        self.push(Arc::new(transport));
        self
    }

    /// Adds a shared transport; for a scheme served by several, the one added first wins.
    pub fn push(&mut self, transport: Arc<dyn Transport>) {
        self.list.push(transport);
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The transport serving `scheme` (lower-case), if any.
    pub fn get(&self, scheme: &str) -> Option<&Arc<dyn Transport>> {
        self.list.iter().find(|t| t.schemes().contains(&scheme))
    }

    /// Every scheme served, in the order the transports were added.
    pub fn schemes(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.list.iter().flat_map(|t| t.schemes().iter().copied())
    }

    fn for_addr(&self, addr: &Addr) -> Result<&Arc<dyn Transport>, Error> {
        self.get(addr.scheme()).ok_or_else(|| {
            Error::config(format!(
                "no transport for `{}` (enable its cargo feature, and configure the transport for it, such as TLS for `wss`): {addr}",
                addr.scheme()
            ))
        })
    }

    /// Listens on `addr` with the transport of its scheme.
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error when no transport serves the scheme;
    /// otherwise as [`Transport::listen`].
    pub async fn listen(&self, addr: &Addr) -> Result<Box<dyn Listener>, Error> {
        self.for_addr(addr)?.listen(addr).await
    }

    /// Dials `addr` with the transport of its scheme.
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error when no transport serves the scheme;
    /// otherwise as [`Transport::dial`].
    pub async fn dial(&self, addr: &Addr) -> Result<Connection, Error> {
        self.for_addr(addr)?.dial(addr).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[derive(Debug)]
    struct Fake(&'static [&'static str], &'static str);

    #[async_trait]
    impl Transport for Fake {
        fn schemes(&self) -> &'static [&'static str] {
            self.0
        }
        async fn listen(&self, _addr: &Addr) -> Result<Box<dyn Listener>, Error> {
            Err(Error::new(ErrorKind::Io).with_detail(self.1))
        }
        async fn dial(&self, _addr: &Addr) -> Result<Connection, Error> {
            Err(Error::new(ErrorKind::Io).with_detail(self.1))
        }
    }

    #[tokio::test]
    async fn transports_pick_by_scheme_first_added_wins() {
        let t = Transports::new()
            .with(Fake(&["tcp", "unix"], "first"))
            .with(Fake(&["unix", "ws"], "second"));
        assert_eq!(
            t.schemes().collect::<Vec<_>>(),
            ["tcp", "unix", "unix", "ws"]
        );
        let dial = |s: &str| {
            let t = t.clone();
            let addr: Addr = s.parse().unwrap();
            async move { t.dial(&addr).await.unwrap_err() }
        };
        assert_eq!(dial("unix:///x").await.detail(), Some("first"));
        assert_eq!(dial("ws://h:1/").await.detail(), Some("second"));
        let none = dial("inmem://a").await;
        assert_eq!(none.kind(), ErrorKind::Config);
        assert!(
            none.to_string().contains("no transport for `inmem`"),
            "{none}"
        );
        let listen = t.listen(&"tcp://h:1".parse().unwrap()).await.unwrap_err();
        assert_eq!(listen.detail(), Some("first"));
    }
}
