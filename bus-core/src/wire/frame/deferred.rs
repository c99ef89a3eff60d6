//! A decoded frame whose large compressed body is still to be decompressed.

use super::*;

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
    pub(super) frame: Frame,
    pub(super) declared: usize,
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
