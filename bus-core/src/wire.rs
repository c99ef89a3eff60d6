//! The wire protocol: frames, bodies and control messages, as plain bytes in and values out.
//!
//! This module is sans-io: nothing here touches sockets, tasks or clocks. A transport reads bytes
//! into a [`BytesMut`](bytes::BytesMut) and calls [`FrameCodec::decode`] until it returns
//! `Ok(None)`; a writer calls [`FrameCodec::encode`] for each queued frame and writes the buffer
//! in one go. The layout is written down in `docs/PROTOCOL.md`.
//!
//! - [`frame`]: the length-prefixed binary frame, its kinds, flags and headers, and LZ4.
//! - [`body`]: MessagePack bodies (rmp-serde).
//! - [`control`]: the control messages (handshake, interest, gossip) carried in bodies.
//!
//! ```
//! use bytes::BytesMut;
//! use meshbus_core::wire::{body, Frame, FrameCodec, FrameKind, FrameName};
//!
//! # fn main() -> Result<(), meshbus_core::wire::FrameError> {
//! let codec = FrameCodec::default();
//! let mut frame = Frame::new(FrameKind::Command, body::encode_body(&"hi")?);
//! frame.request_id = 7;
//! frame.name = Some(FrameName::inline("diag.ping"));
//!
//! let mut buf = BytesMut::new();
//! codec.encode(&frame, &mut buf)?;
//! let decoded = codec.decode(&mut buf)?.expect("a whole frame is in the buffer");
//! assert_eq!(decoded, frame);
//! assert_eq!(body::decode_body::<String>(&decoded.body)?, "hi");
//! assert!(buf.is_empty());
//! # Ok(())
//! # }
//! ```

pub mod body;
pub mod control;
pub mod frame;

pub use control::PROTOCOL_VERSION;
pub use frame::{
    frame_len, peek_kind_and_id, split_frame, with_remaining_deadline, CompressedFrame, Decoded,
    Frame, FrameCodec, FrameError, FrameHeaders, FrameKind, FrameName, NameCache,
    DEFAULT_COMPRESS_THRESHOLD, DEFAULT_MAX_DECOMPRESSED_SIZE, DEFAULT_MAX_FRAME_SIZE,
    HANDSHAKE_MAX_FRAME_SIZE, PREFIX_LEN,
};
