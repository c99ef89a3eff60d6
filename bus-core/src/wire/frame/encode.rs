//! Encoding: a [`Frame`] (or a message's name, headers and body) in, its bytes out.

use super::*;

impl FrameCodec {
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
    /// [`encode_body`](crate::wire::body::encode_body) does, serializing it straight into `dst`:
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
pub(super) const SCRATCH_KEEP: usize = 16 * 1024;

thread_local! {
    pub(super) static SCRATCH: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
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
