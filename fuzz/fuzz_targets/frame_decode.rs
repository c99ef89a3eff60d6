//! Feeds arbitrary bytes to `FrameCodec::decode` until it wants more bytes or fails.
//!
//! Besides "never panics, never allocates past the limit", it checks that every frame it
//! decodes encodes again (unless too large) and decodes back to itself.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use meshbus_core::wire::FrameCodec;

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
    }
});
