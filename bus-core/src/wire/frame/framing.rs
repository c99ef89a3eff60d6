//! Byte-level framing: a frame's length, splitting whole frames off a stream, and reading or
//! patching a few fixed header fields without parsing the frame.

use super::*;

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
        let mut len = frame.get(at..)?;
        Some(2 + usize::from(len.try_get_u16().ok()?))
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
