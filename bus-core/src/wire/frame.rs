//! The frame: a length prefix, a fixed binary header and a body.
//!
//! All integers are big-endian. Sizes in bytes:
//!
//! | field | size | present when |
//! |---|---|---|
//! | total length of everything after this prefix | 4 (`u32`) | always |
//! | kind ([`FrameKind`]) | 1 | always |
//! | flags ([`flags`]) | 1 | always |
//! | request id | 8 (`u64`) | always (0 when the kind has none) |
//! | name id | 2 (`u16`) | flag [`flags::NAME_ID`] |
//! | name inline: length, UTF-8 | 2 + n | flag [`flags::NAME_INLINE`] |
//! | correlation id: length, bytes | 2 + n | flag [`flags::CORRELATION_ID`] |
//! | remaining deadline, microseconds | 8 (`u64`) | flag [`flags::DEADLINE`] |
//! | idempotency key: length, bytes | 2 + n | flag [`flags::IDEMPOTENCY_KEY`] |
//! | trace context: length, bytes | 2 + n | flag [`flags::TRACE_CONTEXT`] |
//! | extra headers: count, then (length, key, length, value) each | 2 + Σ(4 + k + v) | flag [`flags::EXTRA_HEADERS`] |
//! | body | the rest | always (may be empty) |
//!
//! With flag [`flags::COMPRESSED`] the body is a `u32` decompressed size followed by an LZ4
//! block (lz4_flex's block format, no frame header).
//!
//! The decoder never trusts a peer's lengths: the total length is checked against
//! [`FrameCodec::max_frame_size`] before anything is reserved, every field is checked against
//! the bytes that remain, and the decompressed size is checked against the same limit before
//! the output buffer is allocated.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The default limit on a frame's size after the handshake: 16 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

/// The limit on a frame's size before the handshake completes: 64 KiB.
pub const HANDSHAKE_MAX_FRAME_SIZE: usize = 64 * 1024;

/// Bodies larger than this (4 KiB) are offered to LZ4 by default.
pub const DEFAULT_COMPRESS_THRESHOLD: usize = 4 * 1024;

/// The largest body of a control frame ([`FrameKind::is_control`]), after decompression.
///
/// Control bodies decode into owned collections (names, gossip entries) that take several times
/// their encoded size in memory; this bound keeps what one peer's frame can make us allocate
/// small, whatever `max_frame_size` allows for user messages.
pub const MAX_CONTROL_BODY: usize = 1024 * 1024;

/// The default cap on the declared decompressed size of an LZ4 body a node accepts: 4 MiB.
///
/// Well below [`DEFAULT_MAX_FRAME_SIZE`]: a compressed body costs its sender about 1/255 of
/// what it costs the receiver to inflate, so the cap bounds that lever where the frame limit
/// alone would let 65 KB on the wire become 16 MiB of memory and work. Senders match it: a body
/// larger than this is never compressed ([`FrameCodec::encode`]), so two nodes with default
/// settings never refuse each other's bodies.
pub const DEFAULT_MAX_DECOMPRESSED_SIZE: usize = 4 * 1024 * 1024;

/// LZ4 cannot expand a block by more than this factor (plus a few bytes): a declared
/// decompressed size beyond it is a lie, refused before allocating.
const LZ4_MAX_RATIO: usize = 255;

/// How far ahead of the received bytes the decoder reserves for an incomplete frame.
const RESERVE_AHEAD: usize = 64 * 1024;

/// Size of the length prefix.
pub const PREFIX_LEN: usize = 4;

/// Size of the header part every frame has: kind, flags, request id.
const FIXED_HEADER_LEN: usize = 1 + 1 + 8;

/// Size of the decompressed-size prefix of a compressed body.
const DECOMPRESSED_SIZE_LEN: usize = 4;

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
    /// The dialling side opens the handshake (body: [`Hello`](super::control::Hello)).
    Hello,
    /// The accepting side accepts the handshake (body: [`Welcome`](super::control::Welcome)).
    Welcome,
    /// The accepting side refuses the handshake (body: [`Reject`](super::control::Reject)).
    Reject,
    /// A heartbeat on an idle link; answered with `Pong`.
    Ping,
    /// The answer to a `Ping`.
    Pong,
    /// The peer is leaving on purpose (body: [`Goodbye`](super::control::Goodbye)).
    Goodbye,
    /// The handlers and subscriptions of the sender, a snapshot or a delta (body:
    /// [`Interest`](super::control::Interest)).
    Interest,
    /// Asks the peer for a fresh interest snapshot (after a gap in the delta sequence).
    InterestRequest,
    /// Membership gossip: a digest, a summary or a difference (body:
    /// [`GossipMessage`](super::control::GossipMessage)).
    Gossip,
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
    pub const ALL: [FrameKind; 14] = [
        FrameKind::Hello,
        FrameKind::Welcome,
        FrameKind::Reject,
        FrameKind::Ping,
        FrameKind::Pong,
        FrameKind::Goodbye,
        FrameKind::Interest,
        FrameKind::InterestRequest,
        FrameKind::Gossip,
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

/// Encodes and decodes frames: a decoder/encoder pair over [`BytesMut`].
///
/// It holds only limits, so it is `Copy`; a connection typically uses one value with its own
/// `max_frame_size` to decode and one with the peer's advertised limit to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCodec {
    /// The largest frame accepted or produced, counting everything after the length prefix;
    /// also the largest decompressed body. Values over `u32::MAX` act as `u32::MAX`.
    pub max_frame_size: usize,
    /// Bodies longer than this are offered to LZ4; `usize::MAX` turns compression off.
    pub compress_threshold: usize,
}

impl Default for FrameCodec {
    /// [`DEFAULT_MAX_FRAME_SIZE`] and [`DEFAULT_COMPRESS_THRESHOLD`].
    fn default() -> Self {
        FrameCodec {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            compress_threshold: DEFAULT_COMPRESS_THRESHOLD,
        }
    }
}

impl FrameCodec {
    /// The codec of a connection whose handshake has not completed: frames up to
    /// [`HANDSHAKE_MAX_FRAME_SIZE`].
    pub const fn handshake() -> Self {
        FrameCodec {
            max_frame_size: HANDSHAKE_MAX_FRAME_SIZE,
            compress_threshold: DEFAULT_COMPRESS_THRESHOLD,
        }
    }

    /// A codec with the given frame size limit and the default compression threshold.
    pub const fn with_max_frame_size(max_frame_size: usize) -> Self {
        FrameCodec {
            max_frame_size,
            compress_threshold: DEFAULT_COMPRESS_THRESHOLD,
        }
    }

    fn limit(&self) -> usize {
        self.max_frame_size.min(u32::MAX as usize)
    }

    /// Takes one whole frame off the front of `src`.
    ///
    /// Returns `Ok(None)` when `src` does not yet hold a whole frame; nothing is consumed then,
    /// and, once the length is known and within the limit, `src` has room reserved for the rest.
    /// On `Ok(Some(_))` exactly that frame's bytes are consumed. An uncompressed body shares
    /// `src`'s memory (no copy).
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLarge`] when the declared length or the decompressed size is over
    /// [`max_frame_size`](Self::max_frame_size), checked before anything is reserved or
    /// allocated; otherwise the error that names what is malformed. An error is final for the
    /// connection.
    pub fn decode(&self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(mut frame) = split_frame(src, self.limit())? else {
            return Ok(None);
        };
        frame.advance(PREFIX_LEN);
        self.parse(frame, None).map(Some)
    }

    /// Decodes one whole frame, length prefix included, as [`split_frame`] (or a message-based
    /// transport) hands it over, without copying it: the body shares `frame`'s memory.
    ///
    /// # Errors
    ///
    /// As [`decode`](Self::decode); also [`FrameError::Malformed`] when the length prefix does
    /// not match the frame's size.
    pub fn decode_frame(&self, frame: Bytes) -> Result<Frame, FrameError> {
        self.decode_whole(frame, None)
    }

    /// As [`decode_frame`](Self::decode_frame), taking an inline name that `names` already
    /// holds from it rather than allocating it again: the reader of a connection keeps one
    /// [`NameCache`], since a peer repeats the same few names in every frame.
    ///
    /// # Errors
    ///
    /// As [`decode_frame`](Self::decode_frame).
    pub fn decode_frame_cached(
        &self,
        frame: Bytes,
        names: &mut NameCache,
    ) -> Result<Frame, FrameError> {
        self.decode_whole(frame, Some(names))
    }

    /// As [`decode_frame_cached`](Self::decode_frame_cached), except that a compressed body
    /// declaring more than `inline_limit` bytes is not decompressed: it comes back as a
    /// [`Decoded::Compressed`], whose declared size the caller can weigh (against its budget,
    /// or a cap of its own) before it pays for the decompression, which it can then run
    /// elsewhere ([`CompressedFrame::decompress`]). Every check of the frame, the declared size's
    /// included, is done here as for the other decoders.
    ///
    /// # Errors
    ///
    /// As [`decode_frame`](Self::decode_frame).
    pub fn decode_frame_deferred(
        &self,
        mut frame: Bytes,
        names: &mut NameCache,
        inline_limit: usize,
    ) -> Result<Decoded, FrameError> {
        self.check_whole(&frame)?;
        frame.advance(PREFIX_LEN);
        self.parse_deferred(frame, Some(names), inline_limit)
    }

    /// Checks that `frame` is exactly one whole frame, then parses what follows its prefix.
    fn decode_whole(
        &self,
        mut frame: Bytes,
        names: Option<&mut NameCache>,
    ) -> Result<Frame, FrameError> {
        self.check_whole(&frame)?;
        frame.advance(PREFIX_LEN);
        self.parse(frame, names)
    }

    fn check_whole(&self, frame: &[u8]) -> Result<(), FrameError> {
        match frame_len(frame, self.limit())? {
            Some(whole) if whole == frame.len() => Ok(()),
            _ => Err(FrameError::Malformed {
                what: "the length prefix does not match the frame",
            }),
        }
    }

    fn parse(&self, frame: Bytes, names: Option<&mut NameCache>) -> Result<Frame, FrameError> {
        match self.parse_deferred(frame, names, usize::MAX)? {
            Decoded::Frame(frame) => Ok(frame),
            // Every size is within `usize::MAX`: decompressed inline.
            Decoded::Compressed(c) => c.decompress(),
        }
    }

    fn parse_deferred(
        &self,
        frame: Bytes,
        names: Option<&mut NameCache>,
        inline_limit: usize,
    ) -> Result<Decoded, FrameError> {
        let mut r = Reader(frame);
        let kind = FrameKind::from_u8(r.u8("kind")?)?;
        let flag_bits = r.u8("flags")?;
        let request_id = r.u64("request id")?;

        let name = match (
            flag_bits & flags::NAME_ID != 0,
            flag_bits & flags::NAME_INLINE != 0,
        ) {
            (false, false) => None,
            (true, false) => Some(FrameName::Id(r.u16("name id")?)),
            (false, true) => Some(FrameName::Inline(match names {
                Some(names) => r.with_bytes("name", |b| names.get_utf8(b))?,
                None => r.with_str("name", |s| Arc::from(s))?,
            })),
            (true, true) => {
                return Err(FrameError::Malformed {
                    what: "both name flags are set",
                })
            }
        };

        let mut headers = FrameHeaders::default();
        if flag_bits & flags::CORRELATION_ID != 0 {
            headers.correlation_id = Some(r.str("correlation id")?);
        }
        if flag_bits & flags::DEADLINE != 0 {
            headers.deadline = Some(Duration::from_micros(r.u64("deadline")?));
        }
        if flag_bits & flags::IDEMPOTENCY_KEY != 0 {
            headers.idempotency_key = Some(r.str("idempotency key")?);
        }
        if flag_bits & flags::TRACE_CONTEXT != 0 {
            headers.trace_context = Some(r.str("trace context")?);
        }
        if flag_bits & flags::EXTRA_HEADERS != 0 {
            let count = r.u16("extra header count")?;
            // Each pair takes at least 4 bytes, so the count is bounded by what remains; the
            // capacity is capped by that, not by the peer's number.
            let cap = usize::from(count).min(r.0.len() / 4);
            let mut extra = Vec::with_capacity(cap);
            for _ in 0..count {
                let key = r.str("extra header key")?;
                let value = r.str("extra header value")?;
                extra.push((key, value));
            }
            headers.extra = extra;
        }

        let body_limit = if kind.is_control() {
            self.limit().min(MAX_CONTROL_BODY)
        } else {
            self.limit()
        };
        let compressed = flag_bits & flags::COMPRESSED != 0;
        let mut frame = Frame {
            kind,
            request_id,
            name,
            headers,
            body: Bytes::new(),
        };
        if compressed {
            let declared = r.u32("decompressed size")? as usize;
            if declared > body_limit {
                return Err(FrameError::TooLarge {
                    declared,
                    limit: body_limit,
                });
            }
            // A 20-byte block cannot inflate to 16 MiB: refuse the lie before zeroing the buffer.
            if declared > r.0.len().saturating_mul(LZ4_MAX_RATIO).saturating_add(16) {
                return Err(FrameError::Malformed {
                    what: "decompressed size beyond what LZ4 can produce from the block",
                });
            }
            frame.body = r.0;
            let deferred = CompressedFrame { frame, declared };
            if declared > inline_limit {
                return Ok(Decoded::Compressed(deferred));
            }
            return deferred.decompress().map(Decoded::Frame);
        }
        if r.0.len() > body_limit {
            return Err(FrameError::TooLarge {
                declared: r.0.len(),
                limit: body_limit,
            });
        }
        frame.body = r.0;
        Ok(Decoded::Frame(frame))
    }

    /// Appends `frame` to `dst`, compressing the body when that pays.
    ///
    /// The body is offered to LZ4 when it is longer than
    /// [`compress_threshold`](Self::compress_threshold), and sent compressed only when the
    /// compressed form plus its 4-byte size prefix is at most 7/8 of the original. Compressing
    /// a large body is real CPU work: an async caller should encode big frames off the
    /// executor's threads (`spawn_blocking`).
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLarge`] when the encoded frame (after the length prefix) or the
    /// uncompressed body is over [`max_frame_size`](Self::max_frame_size);
    /// [`FrameError::FieldTooLong`] when a name or header does not fit its `u16` length. On
    /// error nothing is written to `dst`.
    pub fn encode(&self, frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let limit = self.limit();
        if frame.kind.is_control() && frame.body.len() > MAX_CONTROL_BODY {
            return Err(FrameError::TooLarge {
                declared: frame.body.len(),
                limit: MAX_CONTROL_BODY,
            });
        }
        let name = frame.name.as_ref().map(|n| match n {
            FrameName::Id(id) => NameRef::Id(*id),
            FrameName::Inline(name) => NameRef::Inline(name),
        });
        let head = Head::new(frame.kind, frame.request_id, name, &frame.headers)?;

        let body_len = frame.body.len();
        if body_len > limit {
            return Err(FrameError::TooLarge {
                declared: body_len,
                limit,
            });
        }
        let compressed = if compressible(body_len, self.compress_threshold) {
            let c = lz4_flex::block::compress(&frame.body);
            worth_it(c.len(), body_len).then_some(c)
        } else {
            None
        };
        let wire_body_len = match &compressed {
            Some(c) => DECOMPRESSED_SIZE_LEN + c.len(),
            None => body_len,
        };

        let total = head.len.saturating_add(wire_body_len);
        if total > limit {
            return Err(FrameError::TooLarge {
                declared: total,
                limit,
            });
        }

        // Nothing fails past this point, so `dst` is either untouched or holds the whole frame.
        dst.reserve(PREFIX_LEN + total);
        dst.put_u32(total as u32);
        head.put(dst, compressed.is_some());
        match compressed {
            Some(c) => {
                dst.put_u32(body_len as u32);
                dst.put_slice(&c);
            }
            None => dst.put_slice(&frame.body),
        }
        Ok(())
    }

    /// Appends the frame of a message named `name` whose body is `body` encoded as
    /// [`encode_body`](super::body::encode_body) does, serializing it straight into `dst`:
    /// no intermediate body buffer and no copy of an uncompressed body. The bytes are those
    /// [`encode`](Self::encode) writes for the same frame, compression included.
    ///
    /// # Errors
    ///
    /// As [`encode`](Self::encode), and [`FrameError::EncodeBody`] when the body's `Serialize`
    /// impl fails. On error nothing is written to `dst` (it may have grown its capacity).
    pub fn encode_message<T: serde::Serialize + ?Sized>(
        &self,
        kind: FrameKind,
        request_id: u64,
        name: &str,
        headers: &FrameHeaders,
        body: &T,
        dst: &mut BytesMut,
    ) -> Result<(), FrameError> {
        let start = dst.len();
        let result = self.encode_message_at(start, kind, request_id, name, headers, body, dst);
        if result.is_err() {
            dst.truncate(start);
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn encode_message_at<T: serde::Serialize + ?Sized>(
        &self,
        start: usize,
        kind: FrameKind,
        request_id: u64,
        name: &str,
        headers: &FrameHeaders,
        body: &T,
        dst: &mut BytesMut,
    ) -> Result<(), FrameError> {
        let limit = self.limit();
        let head = Head::new(kind, request_id, Some(NameRef::Inline(name)), headers)?;
        // Room for a small body up front, so that most bodies serialize without growing the
        // buffer.
        dst.reserve(PREFIX_LEN + head.len + BODY_GUESS);
        dst.put_u32(0);
        head.put(dst, false);
        let body_start = dst.len();
        rmp_serde::encode::write_named(&mut (&mut *dst).writer(), body)
            .map_err(FrameError::EncodeBody)?;
        let body_len = dst.len() - body_start;
        let body_limit = if kind.is_control() {
            limit.min(MAX_CONTROL_BODY)
        } else {
            limit
        };
        if body_len > body_limit {
            return Err(FrameError::TooLarge {
                declared: body_len,
                limit: body_limit,
            });
        }
        if compressible(body_len, self.compress_threshold) {
            let c = lz4_flex::block::compress(&dst[body_start..]);
            if worth_it(c.len(), body_len) {
                dst.truncate(body_start);
                dst.put_u32(body_len as u32);
                dst.put_slice(&c);
                // The flags byte follows the prefix and the kind byte.
                if let Some(f) = dst.get_mut(start + PREFIX_LEN + 1) {
                    *f |= flags::COMPRESSED;
                }
            }
        }
        let total = dst.len() - start - PREFIX_LEN;
        if total > limit {
            return Err(FrameError::TooLarge {
                declared: total,
                limit,
            });
        }
        if let Some(prefix) = dst.get_mut(start..start + PREFIX_LEN) {
            prefix.copy_from_slice(&(total as u32).to_be_bytes());
        }
        Ok(())
    }

    /// [`encode`](Self::encode) into a buffer of the frame's own, sized exactly.
    ///
    /// A small frame is serialized into a buffer the thread keeps and copied out into an
    /// allocation of exactly its size; a `Bytes` made that way is freed without a reference
    /// count, where a grown `BytesMut` frozen into `Bytes` costs a second allocation for its
    /// shared header. A large frame keeps the buffer it was serialized into.
    ///
    /// # Errors
    ///
    /// As [`encode`](Self::encode).
    pub fn encode_to_bytes(&self, frame: &Frame) -> Result<Bytes, FrameError> {
        exact_bytes(|dst| self.encode(frame, dst))
    }

    /// [`encode_message`](Self::encode_message) into a buffer of the frame's own, sized exactly
    /// as [`encode_to_bytes`](Self::encode_to_bytes) does.
    ///
    /// # Errors
    ///
    /// As [`encode_message`](Self::encode_message).
    pub fn encode_message_to_bytes<T: serde::Serialize + ?Sized>(
        &self,
        kind: FrameKind,
        request_id: u64,
        name: &str,
        headers: &FrameHeaders,
        body: &T,
    ) -> Result<Bytes, FrameError> {
        exact_bytes(|dst| self.encode_message(kind, request_id, name, headers, body, dst))
    }
}

/// What [`FrameCodec::decode_frame_deferred`] read: a frame, or one whose large compressed body
/// is still to be decompressed.
#[derive(Debug)]
pub enum Decoded {
    /// A whole frame, its body decompressed if it was compressed.
    Frame(Frame),
    /// A frame whose compressed body declares more than the caller's inline limit.
    Compressed(CompressedFrame),
}

/// A decoded frame whose body is still an LZ4 block: its kind, name and headers are read, and
/// its declared decompressed size has passed the codec's checks (within the frame limit, and
/// within what LZ4 can produce from the block).
#[derive(Debug)]
pub struct CompressedFrame {
    /// The frame, with the LZ4 block (without its size prefix) as its body.
    frame: Frame,
    declared: usize,
}

impl CompressedFrame {
    /// The frame's kind, request id, name and headers; its body is the LZ4 block.
    pub fn frame(&self) -> &Frame {
        &self.frame
    }

    /// The size the body declares it decompresses to.
    pub fn decompressed_size(&self) -> usize {
        self.declared
    }

    /// The whole frame, its body decompressed: CPU work in proportion to
    /// [`decompressed_size`](Self::decompressed_size), which an async caller should run off
    /// the executor's threads (`spawn_blocking`) when it is large.
    ///
    /// # Errors
    ///
    /// [`FrameError::Alloc`] when the output cannot be allocated, [`FrameError::Decompress`]
    /// for a corrupt block or one that would write more than declared,
    /// [`FrameError::DecompressedSizeMismatch`] for one that writes less.
    pub fn decompress(self) -> Result<Frame, FrameError> {
        let CompressedFrame {
            mut frame,
            declared,
        } = self;
        let mut out = Vec::new();
        out.try_reserve_exact(declared)
            .map_err(|_| FrameError::Alloc(declared))?;
        out.resize(declared, 0);
        let actual = lz4_flex::block::decompress_into(&frame.body, &mut out)
            .map_err(FrameError::Decompress)?;
        if actual != declared {
            return Err(FrameError::DecompressedSizeMismatch { declared, actual });
        }
        frame.body = Bytes::from(out);
        Ok(frame)
    }
}

/// Frames (and bodies) up to this size are copied out of the thread's scratch buffer; a larger
/// one takes the buffer with it (the copy would cost more than the second allocation it saves), unless the
/// buffer is more than twice its size (a body that compressed well). The thread never keeps a
/// buffer larger than this.
const SCRATCH_KEEP: usize = 16 * 1024;

thread_local! {
    static SCRATCH: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

/// Runs `fill` on this thread's scratch buffer (or on a new one, should a `Serialize` impl
/// encode a frame of its own while `fill` runs) and returns what it wrote as `Bytes` of their own.
pub(crate) fn exact_bytes(
    fill: impl Fn(&mut BytesMut) -> Result<(), FrameError>,
) -> Result<Bytes, FrameError> {
    let own = || -> Result<Bytes, FrameError> {
        let mut dst = BytesMut::new();
        fill(&mut dst)?;
        Ok(dst.freeze())
    };
    SCRATCH
        .try_with(|scratch| {
            let Ok(mut dst) = scratch.try_borrow_mut() else {
                return own();
            };
            dst.clear();
            let filled = fill(&mut dst).map(|()| {
                if dst.len() <= SCRATCH_KEEP || dst.capacity() / 2 > dst.len() {
                    // `to_vec` allocates exactly `len`, so the `Bytes` needs no shared header.
                    Bytes::from(dst.to_vec())
                } else {
                    std::mem::take(&mut *dst).freeze()
                }
            });
            // An uncompressed body is serialized before it is compressed: whatever the outcome,
            // a buffer grown past the bound is not kept.
            if dst.capacity() > SCRATCH_KEEP {
                *dst = BytesMut::new();
            }
            filled
        })
        .unwrap_or_else(|_| own())
}

/// The inline names a connection has seen, so that a name a peer repeats (every event of a
/// type carries its name) decodes without an allocation. See
/// [`FrameCodec::decode_frame_cached`].
///
/// Bounded whatever the peer sends: at most [`NameCache::ENTRIES`] names of at most
/// [`NameCache::MAX_NAME_LEN`] bytes; a longer name is allocated each time, and a new name
/// beyond the bound takes the place of an older one in turn.
#[derive(Debug, Default)]
pub struct NameCache {
    names: Vec<Arc<str>>,
    /// The entry the next new name replaces once the cache is full.
    next: usize,
}

impl NameCache {
    /// How many names a cache holds at most.
    pub const ENTRIES: usize = 32;
    /// The longest name a cache keeps.
    pub const MAX_NAME_LEN: usize = 128;

    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The name whose UTF-8 is `bytes`: a cached one is found by its bytes, without checking
    /// them again; anything else is checked, then made and cached as [`get`](Self::get) does.
    fn get_utf8(&mut self, bytes: &[u8]) -> Result<Arc<str>, FrameError> {
        if let Some(cached) = self.find(bytes) {
            return Ok(cached);
        }
        match std::str::from_utf8(bytes) {
            Ok(name) => Ok(self.insert(name)),
            Err(_) => Err(FrameError::BadUtf8 { what: "name" }),
        }
    }

    /// `name` as an `Arc<str>`: the cached one if `name` is cached, else a new one, which is
    /// cached if it is short enough.
    pub fn get(&mut self, name: &str) -> Arc<str> {
        match self.find(name.as_bytes()) {
            Some(cached) => cached,
            None => self.insert(name),
        }
    }

    fn find(&self, bytes: &[u8]) -> Option<Arc<str>> {
        self.names
            .iter()
            .find(|n| n.as_bytes() == bytes)
            .map(Arc::clone)
    }

    /// A new `Arc<str>` of `name`, cached if it is short enough.
    fn insert(&mut self, name: &str) -> Arc<str> {
        let fresh: Arc<str> = Arc::from(name);
        if name.len() <= Self::MAX_NAME_LEN {
            if self.names.len() < Self::ENTRIES {
                self.names.push(Arc::clone(&fresh));
            } else if let Some(slot) = self.names.get_mut(self.next) {
                *slot = Arc::clone(&fresh);
                self.next = (self.next + 1) % Self::ENTRIES;
            }
        }
        fresh
    }
}

/// How many body bytes [`FrameCodec::encode_message`] reserves before serializing.
const BODY_GUESS: usize = 128;

/// Whether a body of `body_len` bytes is offered to LZ4: over the threshold, and not over what
/// a receiver with default settings inflates ([`DEFAULT_MAX_DECOMPRESSED_SIZE`]).
fn compressible(body_len: usize, threshold: usize) -> bool {
    body_len > threshold && body_len <= DEFAULT_MAX_DECOMPRESSED_SIZE
}

/// Whether an LZ4 block of `compressed` bytes is "clearly smaller" than the `body_len` bytes it
/// replaces: at least an eighth saved, counting the size prefix.
fn worth_it(compressed: usize, body_len: usize) -> bool {
    compressed + DECOMPRESSED_SIZE_LEN <= body_len - body_len / 8
}

/// A frame's name, borrowed.
#[derive(Clone, Copy)]
enum NameRef<'a> {
    Id(u16),
    Inline(&'a str),
}

/// Everything of a frame between its length prefix and its body, checked and measured.
struct Head<'a> {
    kind: FrameKind,
    request_id: u64,
    name: Option<NameRef<'a>>,
    headers: &'a FrameHeaders,
    /// The flags, without [`flags::COMPRESSED`].
    flag_bits: u8,
    /// The encoded size of the head.
    len: usize,
}

impl<'a> Head<'a> {
    fn new(
        kind: FrameKind,
        request_id: u64,
        name: Option<NameRef<'a>>,
        h: &'a FrameHeaders,
    ) -> Result<Self, FrameError> {
        let mut flag_bits = 0u8;
        let mut len = FIXED_HEADER_LEN;
        match name {
            None => {}
            Some(NameRef::Id(_)) => {
                flag_bits |= flags::NAME_ID;
                len += 2;
            }
            Some(NameRef::Inline(name)) => {
                flag_bits |= flags::NAME_INLINE;
                len += str_len("name", name)?;
            }
        }
        if let Some(v) = &h.correlation_id {
            flag_bits |= flags::CORRELATION_ID;
            len += str_len("correlation id", v)?;
        }
        if h.deadline.is_some() {
            flag_bits |= flags::DEADLINE;
            len += 8;
        }
        if let Some(v) = &h.idempotency_key {
            flag_bits |= flags::IDEMPOTENCY_KEY;
            len += str_len("idempotency key", v)?;
        }
        if let Some(v) = &h.trace_context {
            flag_bits |= flags::TRACE_CONTEXT;
            len += str_len("trace context", v)?;
        }
        if !h.extra.is_empty() {
            flag_bits |= flags::EXTRA_HEADERS;
            if h.extra.len() > usize::from(u16::MAX) {
                return Err(FrameError::FieldTooLong {
                    what: "extra header count",
                    len: h.extra.len(),
                });
            }
            len += 2;
            for (k, v) in &h.extra {
                len += str_len("extra header key", k)?;
                len += str_len("extra header value", v)?;
            }
        }
        Ok(Head {
            kind,
            request_id,
            name,
            headers: h,
            flag_bits,
            len,
        })
    }

    /// Writes the head; every length in it was checked by [`Head::new`].
    fn put(&self, dst: &mut BytesMut, compressed: bool) {
        let h = self.headers;
        let mut flag_bits = self.flag_bits;
        if compressed {
            flag_bits |= flags::COMPRESSED;
        }
        dst.put_u8(self.kind.to_u8());
        dst.put_u8(flag_bits);
        dst.put_u64(self.request_id);
        match self.name {
            None => {}
            Some(NameRef::Id(id)) => dst.put_u16(id),
            Some(NameRef::Inline(name)) => put_str(dst, name),
        }
        if let Some(v) = &h.correlation_id {
            put_str(dst, v);
        }
        if let Some(d) = h.deadline {
            dst.put_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        }
        if let Some(v) = &h.idempotency_key {
            put_str(dst, v);
        }
        if let Some(v) = &h.trace_context {
            put_str(dst, v);
        }
        if !h.extra.is_empty() {
            dst.put_u16(h.extra.len() as u16);
            for (k, v) in &h.extra {
                put_str(dst, k);
                put_str(dst, v);
            }
        }
    }
}

/// The size of the whole frame (length prefix included) that starts `src`, once its length
/// prefix is there.
///
/// Returns `Ok(None)` when `src` holds fewer than [`PREFIX_LEN`] bytes. `limit` bounds the
/// declared length (everything after the prefix), as [`FrameCodec::max_frame_size`] does.
///
/// # Errors
///
/// [`FrameError::TooLarge`] when the declared length is over `limit`;
/// [`FrameError::Malformed`] when it is shorter than the fixed header every frame has.
pub fn frame_len(src: &[u8], limit: usize) -> Result<Option<usize>, FrameError> {
    let Some(mut prefix) = src.get(..PREFIX_LEN) else {
        return Ok(None);
    };
    let declared = prefix.get_u32() as usize;
    let limit = limit.min(u32::MAX as usize);
    if declared > limit {
        return Err(FrameError::TooLarge { declared, limit });
    }
    if declared < FIXED_HEADER_LEN {
        return Err(FrameError::Malformed {
            what: "length shorter than the fixed header",
        });
    }
    // Only a 32-bit `usize` can overflow here (a `u32` length plus the prefix).
    match declared.checked_add(PREFIX_LEN) {
        Some(whole) => Ok(Some(whole)),
        None => Err(FrameError::TooLarge { declared, limit }),
    }
}

/// The encoded frame `frame` (length prefix included) with its remaining deadline set to
/// `remaining`, everything else as it was: for a frame sent again later than it was encoded.
/// `None` if it has no deadline field, or is too short to hold the fields its flags announce.
pub fn with_remaining_deadline(frame: &[u8], remaining: Duration) -> Option<Bytes> {
    let flag_bits = *frame.get(PREFIX_LEN + 1)?;
    if flag_bits & flags::DEADLINE == 0 {
        return None;
    }
    let str16_at = |at: usize| -> Option<usize> {
        let len = frame.get(at..at + 2)?;
        Some(2 + usize::from(u16::from_be_bytes([len[0], len[1]])))
    };
    let mut at = PREFIX_LEN + FIXED_HEADER_LEN;
    if flag_bits & flags::NAME_ID != 0 {
        at += 2;
    }
    if flag_bits & flags::NAME_INLINE != 0 {
        at += str16_at(at)?;
    }
    if flag_bits & flags::CORRELATION_ID != 0 {
        at += str16_at(at)?;
    }
    frame.get(at..at + 8)?;
    let mut out = BytesMut::from(frame);
    let micros = u64::try_from(remaining.as_micros()).unwrap_or(u64::MAX);
    out[at..at + 8].copy_from_slice(&micros.to_be_bytes());
    Some(out.freeze())
}

/// The kind and request id of the encoded frame `frame` (length prefix included), read from
/// its fixed header without parsing the rest; `None` if it is too short or of an unknown kind.
pub fn peek_kind_and_id(frame: &[u8]) -> Option<(FrameKind, u64)> {
    let mut header = frame.get(PREFIX_LEN..PREFIX_LEN + FIXED_HEADER_LEN)?;
    let kind = FrameKind::from_u8(header.get_u8()).ok()?;
    let _flags = header.get_u8();
    Some((kind, header.get_u64()))
}

/// Takes the bytes of one whole frame, length prefix included, off the front of `src`, without
/// parsing it: the framing step of a byte-stream transport, whose output
/// [`FrameCodec::decode`] accepts.
///
/// Returns `Ok(None)` when `src` does not yet hold a whole frame; nothing is consumed then.
/// Once the length is known and within `limit`, `src` has room reserved for the rest of the
/// frame, but never more than 64 KiB beyond what it holds: a peer that announces a large frame
/// and then trickles does not make us hold its announced size.
///
/// # Errors
///
/// As [`frame_len`]: a declared length over `limit` (checked before anything is reserved) or
/// shorter than the fixed header. An error is final for the connection.
pub fn split_frame(src: &mut BytesMut, limit: usize) -> Result<Option<Bytes>, FrameError> {
    let Some(whole) = frame_len(src, limit)? else {
        return Ok(None);
    };
    if src.len() < whole {
        // Grow with the bytes that arrive, not with what the peer announces.
        src.reserve((whole - src.len()).min(RESERVE_AHEAD));
        return Ok(None);
    }
    Ok(Some(src.split_to(whole).freeze()))
}

/// The encoded size of a `u16`-length-prefixed string.
fn str_len(what: &'static str, s: &str) -> Result<usize, FrameError> {
    if s.len() > usize::from(u16::MAX) {
        return Err(FrameError::FieldTooLong { what, len: s.len() });
    }
    Ok(2 + s.len())
}

/// Writes a string whose length [`str_len`] has checked.
fn put_str(dst: &mut BytesMut, s: &str) {
    dst.put_u16(s.len() as u16);
    dst.put_slice(s.as_bytes());
}

/// Reads fields off the front of one complete frame, checking each length first.
struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize, what: &'static str) -> Result<(), FrameError> {
        if self.0.len() < n {
            Err(FrameError::Truncated { what })
        } else {
            Ok(())
        }
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, FrameError> {
        self.need(1, what)?;
        Ok(self.0.get_u8())
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, FrameError> {
        self.need(2, what)?;
        Ok(self.0.get_u16())
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, FrameError> {
        self.need(4, what)?;
        Ok(self.0.get_u32())
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, FrameError> {
        self.need(8, what)?;
        Ok(self.0.get_u64())
    }

    /// A `u16`-length-prefixed UTF-8 string.
    fn str(&mut self, what: &'static str) -> Result<String, FrameError> {
        self.with_str(what, str::to_owned)
    }

    /// A `u16`-length-prefixed UTF-8 string, borrowed by `f` (one allocation for an
    /// `Arc<str>`, not a `String` and then an `Arc<str>`).
    fn with_str<T>(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&str) -> T,
    ) -> Result<T, FrameError> {
        self.with_bytes(what, |bytes| match std::str::from_utf8(bytes) {
            Ok(s) => Ok(f(s)),
            Err(_) => Err(FrameError::BadUtf8 { what }),
        })
    }

    /// `u16`-length-prefixed bytes, borrowed in place by `f`, then skipped.
    fn with_bytes<T>(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&[u8]) -> Result<T, FrameError>,
    ) -> Result<T, FrameError> {
        let len = usize::from(self.u16(what)?);
        let Some(bytes) = self.0.get(..len) else {
            return Err(FrameError::Truncated { what });
        };
        let out = f(bytes);
        self.0.advance(len);
        out
    }
}

#[cfg(test)]
mod tests;
