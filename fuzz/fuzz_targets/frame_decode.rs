//! Feeds arbitrary bytes to `FrameCodec::decode` until it wants more bytes or fails.
//!
//! Besides "never panics, never allocates past the limit", it checks that every frame it
//! decodes encodes again (unless too large) and decodes back to itself, and that the deferred
//! decoder (a large compressed body handed back undecompressed) agrees with the plain one.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use meshbus_core::wire::{split_frame, Decoded, FrameCodec, NameCache};

fuzz_target!(|data: &[u8]| {
    for codec in [FrameCodec::handshake(), FrameCodec::default()] {
        let mut buf = BytesMut::from(data);
        while let Ok(Some(frame)) = codec.decode(&mut buf) {
            let mut again = BytesMut::new();
            if codec.encode(&frame, &mut again).is_ok() {
                let back = codec.decode(&mut again);
                assert!(
                    matches!(&back, Ok(Some(f)) if *f == frame),
                    "re-encoded frame does not decode to itself: {back:?}"
                );
                assert!(again.is_empty());
            }
        }
        // The deferred decoder, with a small inline limit so that compressed bodies are
        // handed back: decompressed later, they give what the plain decoder gives.
        let mut buf = BytesMut::from(data);
        let mut names = NameCache::new();
        while let Ok(Some(whole)) = split_frame(&mut buf, codec.max_frame_size) {
            let plain = codec.decode_frame(whole.clone());
            let deferred = match codec.decode_frame_deferred(whole, &mut names, 16) {
                Ok(Decoded::Frame(f)) => Ok(f),
                Ok(Decoded::Compressed(c)) => c.decompress(),
                Err(e) => Err(e),
            };
            match (&plain, &deferred) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "the deferred decoder disagrees"),
                (Err(_), Err(_)) => {}
                _ => panic!("one decoder failed: plain {plain:?}, deferred {deferred:?}"),
            }
        }
    }
});
