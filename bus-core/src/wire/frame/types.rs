//! What a frame is: its kind, flags, name, headers and body, and what can go wrong reading one.

use super::*;

/// The bits of the flags byte.
///
/// All eight bits are assigned in protocol version 1; new optional fields need a new protocol
/// version (negotiated in the handshake) rather than a new bit.
pub mod flags {
    /// The name is a `u16` id interned on this connection.
    pub const NAME_ID: u8 = 0x01;
    /// The name is inline: `u16` length, then UTF-8 bytes.
    pub const NAME_INLINE: u8 = 0x02;
    /// A correlation id header follows: `u16` length, then UTF-8 bytes.
    pub const CORRELATION_ID: u8 = 0x04;
    /// A remaining-deadline header follows: `u64` microseconds.
    pub const DEADLINE: u8 = 0x08;
    /// An idempotency key header follows: `u16` length, then UTF-8 bytes.
    pub const IDEMPOTENCY_KEY: u8 = 0x10;
    /// A trace context header follows: `u16` length, then UTF-8 bytes.
    pub const TRACE_CONTEXT: u8 = 0x20;
    /// Extra user headers follow: `u16` count, then key/value pairs of (`u16` length, bytes).
    pub const EXTRA_HEADERS: u8 = 0x40;
    /// The body is a `u32` decompressed size followed by an LZ4 block.
    pub const COMPRESSED: u8 = 0x80;
}

/// What a frame is. The kind byte means the same in every protocol version, so a node can
/// always read a `Hello` or a `Reject`, whatever the peer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameKind {
    /// The dialling side opens the handshake (body: [`Hello`](crate::wire::control::Hello)).
    Hello,
    /// The accepting side accepts the handshake (body: [`Welcome`](crate::wire::control::Welcome)).
    Welcome,
    /// The accepting side refuses the handshake (body: [`Reject`](crate::wire::control::Reject)).
    Reject,
    /// A heartbeat on an idle link; answered with `Pong`.
    Ping,
    /// The answer to a `Ping`.
    Pong,
    /// The peer is leaving on purpose (body: [`Goodbye`](crate::wire::control::Goodbye)).
    Goodbye,
    /// The handlers and subscriptions of the sender, a snapshot or a delta (body:
    /// [`Interest`](crate::wire::control::Interest)).
    Interest,
    /// Asks the peer for a fresh interest snapshot (after a gap in the delta sequence).
    InterestRequest,
    /// Membership gossip: a digest, a summary or a difference (body:
    /// [`GossipMessage`](crate::wire::control::GossipMessage)).
    Gossip,
    /// Room the sender grants for events of some names on this connection (body:
    /// [`Credit`](crate::wire::control::Credit)).
    Credit,
    /// A command; the request id matches its reply.
    Command,
    /// A handler's successful reply to the command with the same request id.
    Reply,
    /// A failed reply to the command with the same request id.
    ReplyError,
    /// The caller gave up on the command with the same request id.
    Cancel,
    /// An event.
    Event,
}

impl FrameKind {
    /// Every kind, in wire-byte order.
    pub const ALL: [FrameKind; 15] = [
        FrameKind::Hello,
        FrameKind::Welcome,
        FrameKind::Reject,
        FrameKind::Ping,
        FrameKind::Pong,
        FrameKind::Goodbye,
        FrameKind::Interest,
        FrameKind::InterestRequest,
        FrameKind::Gossip,
        FrameKind::Credit,
        FrameKind::Command,
        FrameKind::Reply,
        FrameKind::ReplyError,
        FrameKind::Cancel,
        FrameKind::Event,
    ];

    /// The kind's byte on the wire.
    pub const fn to_u8(self) -> u8 {
        match self {
            FrameKind::Hello => 0x01,
            FrameKind::Welcome => 0x02,
            FrameKind::Reject => 0x03,
            FrameKind::Ping => 0x04,
            FrameKind::Pong => 0x05,
            FrameKind::Goodbye => 0x06,
            FrameKind::Interest => 0x10,
            FrameKind::InterestRequest => 0x11,
            FrameKind::Gossip => 0x12,
            FrameKind::Credit => 0x13,
            FrameKind::Command => 0x20,
            FrameKind::Reply => 0x21,
            FrameKind::ReplyError => 0x22,
            FrameKind::Cancel => 0x23,
            FrameKind::Event => 0x30,
        }
    }

    /// The kind of a wire byte.
    ///
    /// # Errors
    ///
    /// [`FrameError::UnknownKind`] for a byte no kind uses.
    pub const fn from_u8(byte: u8) -> Result<Self, FrameError> {
        Ok(match byte {
            0x01 => FrameKind::Hello,
            0x02 => FrameKind::Welcome,
            0x03 => FrameKind::Reject,
            0x04 => FrameKind::Ping,
            0x05 => FrameKind::Pong,
            0x06 => FrameKind::Goodbye,
            0x10 => FrameKind::Interest,
            0x11 => FrameKind::InterestRequest,
            0x12 => FrameKind::Gossip,
            0x13 => FrameKind::Credit,
            0x20 => FrameKind::Command,
            0x21 => FrameKind::Reply,
            0x22 => FrameKind::ReplyError,
            0x23 => FrameKind::Cancel,
            0x30 => FrameKind::Event,
            other => return Err(FrameError::UnknownKind(other)),
        })
    }

    /// Whether the frame belongs to the connection's own upkeep (handshake, heartbeats,
    /// interest, gossip, cancel) rather than to application traffic.
    pub const fn is_control(self) -> bool {
        !matches!(
            self,
            FrameKind::Command | FrameKind::Reply | FrameKind::ReplyError | FrameKind::Event
        )
    }
}

impl TryFrom<u8> for FrameKind {
    type Error = FrameError;

    fn try_from(byte: u8) -> Result<Self, FrameError> {
        FrameKind::from_u8(byte)
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The message name a frame is about: inline, or an id interned on this connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FrameName {
    /// A `u16` id the two ends of this connection agreed on for a name.
    Id(u16),
    /// The name itself.
    Inline(Arc<str>),
}

impl FrameName {
    /// An inline name.
    pub fn inline(name: impl Into<Arc<str>>) -> Self {
        FrameName::Inline(name.into())
    }
}

/// The optional headers of a frame. Each one travels only when it is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FrameHeaders {
    /// An application-chosen id that ties related messages together.
    pub correlation_id: Option<String>,
    /// The time the caller still waits, measured when the frame was encoded: a remaining
    /// duration, never a wall-clock instant, so clocks need not agree. Travels in whole
    /// microseconds (rounded down, saturating at `u64::MAX`).
    pub deadline: Option<Duration>,
    /// The caller's idempotency key, for handlers that deduplicate retries.
    pub idempotency_key: Option<String>,
    /// Trace context (for example a W3C `traceparent`).
    pub trace_context: Option<String>,
    /// Further user headers, in order.
    pub extra: Vec<(String, String)>,
}

impl FrameHeaders {
    /// Whether no header is set.
    pub fn is_empty(&self) -> bool {
        self.correlation_id.is_none()
            && self.deadline.is_none()
            && self.idempotency_key.is_none()
            && self.trace_context.is_none()
            && self.extra.is_empty()
    }
}

/// One frame: what the codec reads and writes.
///
/// The body is the uncompressed body; compression is the codec's business.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Frame {
    /// What the frame is.
    pub kind: FrameKind,
    /// The request id of a command and of its reply, error or cancel; 0 for other kinds.
    pub request_id: u64,
    /// The message name, if the kind has one.
    pub name: Option<FrameName>,
    /// The optional headers.
    pub headers: FrameHeaders,
    /// The body, uncompressed.
    pub body: Bytes,
}

impl Frame {
    /// A frame of `kind` with the given body, request id 0, no name and no headers.
    pub fn new(kind: FrameKind, body: Bytes) -> Self {
        Frame {
            kind,
            request_id: 0,
            name: None,
            headers: FrameHeaders::default(),
            body,
        }
    }
}

/// Why a frame could not be encoded or decoded.
///
/// Any decode error is final for the connection: the codec makes no promise about what is left
/// in the buffer, and the connection should be closed with the error logged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A frame, or a body once decompressed, is larger than the limit.
    #[error("frame of {declared} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The declared or computed size.
        declared: usize,
        /// The limit in force.
        limit: usize,
    },
    /// A field runs past the end of its frame.
    #[error("frame truncated in {what}")]
    Truncated {
        /// The field.
        what: &'static str,
    },
    /// The frame's structure is impossible.
    #[error("malformed frame: {what}")]
    Malformed {
        /// What is wrong.
        what: &'static str,
    },
    /// The kind byte names no kind.
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownKind(u8),
    /// A text field is not UTF-8.
    #[error("{what} is not UTF-8")]
    BadUtf8 {
        /// The field.
        what: &'static str,
    },
    /// A name or header is too long for its `u16` length (or there are too many extra headers).
    #[error("{what} is {len} long, over the limit of 65535")]
    FieldTooLong {
        /// The field.
        what: &'static str,
        /// Its length (or count).
        len: usize,
    },
    /// The LZ4 block is corrupt or decompresses to more than its declared size.
    #[error("LZ4 body does not decompress")]
    Decompress(#[source] lz4_flex::block::DecompressError),
    /// The LZ4 block decompresses to fewer bytes than its declared size.
    #[error("LZ4 body decompressed to {actual} bytes, {declared} declared")]
    DecompressedSizeMismatch {
        /// The size the frame declared.
        declared: usize,
        /// The size the block produced.
        actual: usize,
    },
    /// The buffer for a decompressed body could not be allocated.
    #[error("cannot allocate {0} bytes for a decompressed body")]
    Alloc(usize),
    /// A body could not be encoded as MessagePack.
    #[error("body does not encode")]
    EncodeBody(#[source] rmp_serde::encode::Error),
    /// A body is not the MessagePack of the expected type.
    #[error("body does not decode")]
    DecodeBody(#[source] rmp_serde::decode::Error),
}

impl From<FrameError> for crate::Error {
    fn from(err: FrameError) -> Self {
        let kind = match err {
            FrameError::TooLarge { .. } => crate::ErrorKind::TooLarge,
            _ => crate::ErrorKind::Decode,
        };
        crate::Error::new(kind)
            .with_detail(err.to_string())
            .with_source(err)
    }
}
