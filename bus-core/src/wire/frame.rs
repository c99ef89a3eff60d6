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

/// How far ahead of the received bytes the decoder reserves for an incomplete frame.
const RESERVE_AHEAD: usize = 64 * 1024;

/// Size of the length prefix.
pub const PREFIX_LEN: usize = 4;

/// Size of the header part every frame has: kind, flags, request id.
const FIXED_HEADER_LEN: usize = 1 + 1 + 8;

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
}

mod compress;
mod decode;
mod deferred;
mod encode;
mod framing;
mod name_cache;
mod types;

use compress::*;
#[cfg(test)]
use encode::{SCRATCH, SCRATCH_KEEP};

pub use deferred::{CompressedFrame, Decoded};
pub(crate) use encode::exact_bytes;
pub use framing::{frame_len, peek_kind_and_id, split_frame, with_remaining_deadline};
pub use name_cache::NameCache;
pub use types::{flags, Frame, FrameError, FrameHeaders, FrameKind, FrameName};

#[cfg(test)]
mod tests;
