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

mod deferred;
mod framing;
mod name_cache;
mod types;

pub use deferred::{CompressedFrame, Decoded};
pub use framing::{frame_len, peek_kind_and_id, split_frame, with_remaining_deadline};
pub use name_cache::NameCache;
pub use types::{flags, Frame, FrameError, FrameHeaders, FrameKind, FrameName};

#[cfg(test)]
mod tests;
