//! Compression: when a body is offered to LZ4 and when the result is worth sending, and how
//! far a declared decompressed size may be believed.

use super::*;

/// LZ4 cannot expand a block by more than this factor (plus a few bytes): a declared
/// decompressed size beyond it is a lie, refused before allocating.
pub(super) const LZ4_MAX_RATIO: usize = 255;

/// Size of the decompressed-size prefix of a compressed body.
pub(super) const DECOMPRESSED_SIZE_LEN: usize = 4;

/// Whether a body of `body_len` bytes is offered to LZ4: over the threshold, and not over what
/// a receiver with default settings inflates ([`DEFAULT_MAX_DECOMPRESSED_SIZE`]).
pub(super) fn compressible(body_len: usize, threshold: usize) -> bool {
    body_len > threshold && body_len <= DEFAULT_MAX_DECOMPRESSED_SIZE
}

/// Whether an LZ4 block of `compressed` bytes is "clearly smaller" than the `body_len` bytes it
/// replaces: at least an eighth saved, counting the size prefix.
pub(super) fn worth_it(compressed: usize, body_len: usize) -> bool {
    compressed + DECOMPRESSED_SIZE_LEN <= body_len - body_len / 8
}
