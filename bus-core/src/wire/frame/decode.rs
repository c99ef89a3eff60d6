//! Decoding: one whole frame's bytes in, a checked [`Frame`] out.

use super::*;

impl FrameCodec {
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
}

/// Reads fields off the front of one complete frame, checking each length first.
struct Reader(Bytes);

impl Reader {
    // `Buf`'s checked getters: a field cut short is an error naming it, never a panic.
    fn u8(&mut self, what: &'static str) -> Result<u8, FrameError> {
        self.0
            .try_get_u8()
            .map_err(|_| FrameError::Truncated { what })
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, FrameError> {
        self.0
            .try_get_u16()
            .map_err(|_| FrameError::Truncated { what })
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, FrameError> {
        self.0
            .try_get_u32()
            .map_err(|_| FrameError::Truncated { what })
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, FrameError> {
        self.0
            .try_get_u64()
            .map_err(|_| FrameError::Truncated { what })
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
