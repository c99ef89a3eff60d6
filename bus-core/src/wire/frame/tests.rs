use super::*;
use crate::wire::body::encode_body;
use proptest::prelude::*;

fn codec() -> FrameCodec {
    FrameCodec::default()
}

fn encode(codec: &FrameCodec, frame: &Frame) -> BytesMut {
    let mut buf = BytesMut::new();
    codec.encode(frame, &mut buf).unwrap();
    buf
}

#[test]
fn decode_frame_takes_one_whole_frame_and_shares_its_memory() {
    let codec = codec();
    let mut frame = Frame::new(FrameKind::Event, incompressible(200));
    frame.name = Some(FrameName::inline("users.created"));
    frame.headers = full_headers();
    let bytes = encode(&codec, &frame).freeze();
    let decoded = codec.decode_frame(bytes.clone()).unwrap();
    assert_eq!(decoded, frame);
    // The body is a view into the frame, not a copy.
    let start = bytes.as_ptr() as usize;
    let body = decoded.body.as_ptr() as usize;
    assert!(body >= start && body < start + bytes.len());
    // A frame cut short, or with bytes after it, is malformed; a length over the limit is
    // refused.
    assert!(codec.decode_frame(bytes.slice(..bytes.len() - 1)).is_err());
    let mut longer = BytesMut::from(&bytes[..]);
    longer.extend_from_slice(b"x");
    assert!(codec.decode_frame(longer.freeze()).is_err());
    let small = FrameCodec {
        max_frame_size: 100,
        ..FrameCodec::default()
    };
    assert!(matches!(
        small.decode_frame(bytes),
        Err(FrameError::TooLarge { .. })
    ));
}

fn round_trip(codec: &FrameCodec, frame: &Frame) -> Frame {
    let mut buf = encode(codec, frame);
    let decoded = codec.decode(&mut buf).unwrap().expect("a whole frame");
    assert!(buf.is_empty(), "exactly one frame consumed");
    decoded
}

fn full_headers() -> FrameHeaders {
    FrameHeaders {
        correlation_id: Some("corr-1".into()),
        deadline: Some(Duration::from_micros(1_500_000)),
        idempotency_key: Some("key-ü".into()),
        trace_context: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        extra: vec![("a".into(), "1".into()), ("".into(), "".into())],
    }
}

/// Each header alone, none, and all of them.
fn header_variants() -> Vec<FrameHeaders> {
    let all = full_headers();
    let mut v = vec![FrameHeaders::default(), all.clone()];
    v.push(FrameHeaders {
        correlation_id: all.correlation_id.clone(),
        ..Default::default()
    });
    v.push(FrameHeaders {
        deadline: all.deadline,
        ..Default::default()
    });
    v.push(FrameHeaders {
        idempotency_key: all.idempotency_key.clone(),
        ..Default::default()
    });
    v.push(FrameHeaders {
        trace_context: all.trace_context.clone(),
        ..Default::default()
    });
    v.push(FrameHeaders {
        extra: all.extra.clone(),
        ..Default::default()
    });
    v
}

fn compressible(len: usize) -> Bytes {
    let pattern = b"meshbus compresses repetitive bodies; ";
    Bytes::from(
        pattern
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect::<Vec<u8>>(),
    )
}

fn incompressible(len: usize) -> Bytes {
    let mut rng = fastrand::Rng::with_seed(7);
    Bytes::from((0..len).map(|_| rng.u8(..)).collect::<Vec<u8>>())
}

fn flags_of(encoded: &[u8]) -> u8 {
    encoded[PREFIX_LEN + 1]
}

#[test]
fn every_kind_round_trips_with_each_header_name_and_body() {
    let codec = codec();
    let names = [
        None,
        Some(FrameName::Id(513)),
        Some(FrameName::inline("users.created")),
    ];
    let bodies = [
        Bytes::new(),
        Bytes::from_static(b"\x91\xa2hi"),
        compressible(64 * 1024),
    ];
    let mut compressed_seen = 0;
    for kind in FrameKind::ALL {
        for headers in header_variants() {
            for name in &names {
                for body in &bodies {
                    let frame = Frame {
                        kind,
                        request_id: u64::MAX - 1,
                        name: name.clone(),
                        headers: headers.clone(),
                        body: body.clone(),
                    };
                    let encoded = encode(&codec, &frame);
                    if flags_of(&encoded) & flags::COMPRESSED != 0 {
                        compressed_seen += 1;
                    }
                    assert_eq!(round_trip(&codec, &frame), frame);
                }
            }
        }
    }
    // Every frame with the 64 KiB body went compressed.
    assert_eq!(
        compressed_seen,
        FrameKind::ALL.len() * header_variants().len() * names.len()
    );
}

#[test]
fn kind_bytes_are_distinct_and_round_trip() {
    let mut seen = std::collections::HashSet::new();
    for kind in FrameKind::ALL {
        assert!(seen.insert(kind.to_u8()));
        assert_eq!(FrameKind::from_u8(kind.to_u8()).unwrap(), kind);
    }
    for byte in 0..=u8::MAX {
        if !seen.contains(&byte) {
            assert!(matches!(
                FrameKind::try_from(byte),
                Err(FrameError::UnknownKind(b)) if b == byte
            ));
        }
    }
}

#[test]
fn a_compressible_body_is_compressed() {
    let codec = codec();
    let frame = Frame::new(FrameKind::Event, compressible(64 * 1024));
    let encoded = encode(&codec, &frame);
    assert_ne!(flags_of(&encoded) & flags::COMPRESSED, 0);
    assert!(encoded.len() < 64 * 1024 / 4, "{} bytes", encoded.len());
    assert_eq!(round_trip(&codec, &frame), frame);
}

#[test]
fn an_incompressible_body_is_not_compressed() {
    let codec = codec();
    let frame = Frame::new(FrameKind::Event, incompressible(64 * 1024));
    let encoded = encode(&codec, &frame);
    assert_eq!(flags_of(&encoded) & flags::COMPRESSED, 0);
    assert_eq!(encoded.len(), PREFIX_LEN + FIXED_HEADER_LEN + 64 * 1024);
    assert_eq!(round_trip(&codec, &frame), frame);
}

#[test]
fn bodies_up_to_the_threshold_are_not_compressed() {
    let codec = codec();
    let at = Frame::new(FrameKind::Event, compressible(DEFAULT_COMPRESS_THRESHOLD));
    assert_eq!(flags_of(&encode(&codec, &at)) & flags::COMPRESSED, 0);
    let above = Frame::new(
        FrameKind::Event,
        compressible(DEFAULT_COMPRESS_THRESHOLD + 1),
    );
    assert_ne!(flags_of(&encode(&codec, &above)) & flags::COMPRESSED, 0);
    let off = FrameCodec {
        compress_threshold: usize::MAX,
        ..codec
    };
    assert_eq!(flags_of(&encode(&off, &above)) & flags::COMPRESSED, 0);
}

#[test]
fn a_split_frame_decodes_only_when_complete() {
    let codec = codec();
    for body in [Bytes::from_static(b"body"), compressible(8 * 1024)] {
        let frame = Frame {
            kind: FrameKind::Command,
            request_id: 3,
            name: Some(FrameName::inline("diag.ping")),
            headers: full_headers(),
            body,
        };
        let encoded = encode(&codec, &frame).freeze();
        for cut in 0..encoded.len() {
            let mut buf = BytesMut::from(&encoded[..cut]);
            assert!(codec.decode(&mut buf).unwrap().is_none(), "cut at {cut}");
            assert_eq!(buf.len(), cut, "nothing consumed at {cut}");
            buf.extend_from_slice(&encoded[cut..]);
            assert_eq!(codec.decode(&mut buf).unwrap().as_ref(), Some(&frame));
            assert!(buf.is_empty());
        }
        // And fed one byte at a time into one buffer, as a reader would.
        let mut buf = BytesMut::new();
        let mut decoded = None;
        for (i, byte) in encoded.iter().enumerate() {
            buf.put_u8(*byte);
            decoded = codec.decode(&mut buf).unwrap();
            assert_eq!(decoded.is_some(), i + 1 == encoded.len());
        }
        assert_eq!(decoded, Some(frame));
    }
}

#[test]
fn frames_back_to_back_decode_one_at_a_time() {
    let codec = codec();
    let first = Frame {
        request_id: 1,
        name: Some(FrameName::Id(4)),
        ..Frame::new(FrameKind::Command, Bytes::from_static(b"one"))
    };
    let second = Frame {
        headers: full_headers(),
        ..Frame::new(FrameKind::Event, compressible(10_000))
    };
    let mut buf = BytesMut::new();
    codec.encode(&first, &mut buf).unwrap();
    codec.encode(&second, &mut buf).unwrap();
    buf.extend_from_slice(&[0, 0]); // the start of a third
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(first));
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(second));
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert_eq!(&buf[..], &[0, 0]);
}

#[test]
fn an_oversized_length_is_refused_before_reserving() {
    let codec = FrameCodec::handshake();
    let declared = 16 * 1024 * 1024;
    let mut buf = BytesMut::with_capacity(64);
    buf.put_u32(declared as u32);
    buf.put_u8(FrameKind::Hello.to_u8());
    let capacity = buf.capacity();
    match codec.decode(&mut buf) {
        Err(FrameError::TooLarge {
            declared: d,
            limit: HANDSHAKE_MAX_FRAME_SIZE,
        }) => assert_eq!(d, declared),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(buf.capacity(), capacity, "no room was reserved");
    assert_eq!(buf.len(), 5, "nothing consumed");

    // One byte over the limit is refused; exactly the limit is awaited.
    let mut over = BytesMut::new();
    over.put_u32(HANDSHAKE_MAX_FRAME_SIZE as u32 + 1);
    assert!(matches!(
        codec.decode(&mut over),
        Err(FrameError::TooLarge { .. })
    ));
    assert!(over.capacity() < HANDSHAKE_MAX_FRAME_SIZE);
    let mut at = BytesMut::new();
    at.put_u32(HANDSHAKE_MAX_FRAME_SIZE as u32);
    assert!(codec.decode(&mut at).unwrap().is_none());
}

#[test]
fn an_announced_frame_does_not_reserve_its_whole_size() {
    // A peer that declares a frame at the limit and then trickles it must not make the decoder
    // hold the whole declared size up front.
    let codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    buf.put_u32(DEFAULT_MAX_FRAME_SIZE as u32);
    buf.put_u8(FrameKind::Event.to_u8());
    assert!(codec.decode(&mut buf).unwrap().is_none());
    assert!(
        buf.capacity() <= 2 * RESERVE_AHEAD,
        "reserved {} bytes for a frame that has not arrived",
        buf.capacity()
    );
}

#[test]
fn split_frame_takes_whole_frames_with_their_prefix() {
    let codec = codec();
    let first = encode(&codec, &Frame::new(FrameKind::Ping, Bytes::new())).freeze();
    let second = encode(
        &codec,
        &Frame::new(FrameKind::Event, Bytes::from_static(b"\xc0")),
    )
    .freeze();
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&first);
    buf.extend_from_slice(&second[..5]);
    assert_eq!(
        frame_len(&buf, DEFAULT_MAX_FRAME_SIZE).unwrap(),
        Some(first.len())
    );
    let split = split_frame(&mut buf, DEFAULT_MAX_FRAME_SIZE)
        .unwrap()
        .unwrap();
    assert_eq!(split, first);
    assert_eq!(
        codec
            .decode(&mut BytesMut::from(&split[..]))
            .unwrap()
            .unwrap()
            .kind,
        FrameKind::Ping
    );
    assert_eq!(split_frame(&mut buf, DEFAULT_MAX_FRAME_SIZE).unwrap(), None);
    assert_eq!(&buf[..], &second[..5], "nothing consumed while incomplete");
    buf.extend_from_slice(&second[5..]);
    assert_eq!(
        split_frame(&mut buf, DEFAULT_MAX_FRAME_SIZE).unwrap(),
        Some(second)
    );
    assert!(buf.is_empty());
    assert_eq!(frame_len(&[0, 0, 0], 100).unwrap(), None);
    assert!(matches!(
        frame_len(&[0, 0, 0, 101], 100),
        Err(FrameError::TooLarge {
            declared: 101,
            limit: 100
        })
    ));
    assert!(matches!(
        frame_len(&[0, 0, 0, 9], 100),
        Err(FrameError::Malformed { .. })
    ));
}

/// A hand-built compressed frame: kind Event, no name or headers, the given decompressed-size
/// prefix and LZ4 block.
fn compressed_frame(declared_size: u32, block: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u32((FIXED_HEADER_LEN + 4 + block.len()) as u32);
    buf.put_u8(FrameKind::Event.to_u8());
    buf.put_u8(flags::COMPRESSED);
    buf.put_u64(0);
    buf.put_u32(declared_size);
    buf.put_slice(block);
    buf
}

#[test]
fn a_lying_decompressed_size_is_an_error() {
    let codec = FrameCodec::handshake();
    let original = compressible(10_000);
    let block = lz4_flex::block::compress(&original);

    // The honest frame decodes.
    let mut honest = compressed_frame(original.len() as u32, &block);
    assert_eq!(codec.decode(&mut honest).unwrap().unwrap().body, original);

    // Over the limit: refused before allocating.
    let mut huge = compressed_frame(u32::MAX, &block);
    assert!(matches!(
        codec.decode(&mut huge),
        Err(FrameError::TooLarge { declared, .. }) if declared == u32::MAX as usize
    ));

    // Larger than what the block holds.
    let mut larger = compressed_frame(original.len() as u32 + 1, &block);
    assert!(matches!(
        codec.decode(&mut larger),
        Err(FrameError::DecompressedSizeMismatch {
            declared: 10_001,
            actual: 10_000
        })
    ));

    // Smaller than what the block holds.
    let mut smaller = compressed_frame(original.len() as u32 - 1, &block);
    assert!(matches!(
        codec.decode(&mut smaller),
        Err(FrameError::Decompress(_))
    ));

    // Not LZ4 at all, and no size prefix.
    let mut garbage = compressed_frame(100, &[0xff; 8]);
    assert!(codec.decode(&mut garbage).is_err());
    let mut short = BytesMut::new();
    short.put_u32(FIXED_HEADER_LEN as u32 + 2);
    short.put_u8(FrameKind::Event.to_u8());
    short.put_u8(flags::COMPRESSED);
    short.put_u64(0);
    short.put_u16(0);
    assert!(matches!(
        codec.decode(&mut short),
        Err(FrameError::Truncated {
            what: "decompressed size"
        })
    ));
}

#[test]
fn encoding_over_the_limit_is_refused_and_writes_nothing() {
    let codec = FrameCodec::with_max_frame_size(1024);
    let mut buf = BytesMut::from(&b"earlier"[..]);

    let big = Frame::new(FrameKind::Event, incompressible(1024));
    match codec.encode(&big, &mut buf) {
        Err(FrameError::TooLarge { declared, limit }) => {
            assert_eq!((declared, limit), (1024 + FIXED_HEADER_LEN, 1024))
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(&buf[..], b"earlier");

    // A body over the limit is refused even if it would compress into it: the receiver
    // refuses a decompressed size over its limit.
    let squashy = Frame::new(FrameKind::Event, compressible(2048));
    assert!(matches!(
        codec.encode(&squashy, &mut buf),
        Err(FrameError::TooLarge { declared: 2048, .. })
    ));
    assert_eq!(&buf[..], b"earlier");

    // Exactly the limit fits.
    let exact = Frame::new(
        FrameKind::Event,
        incompressible(1024 - FIXED_HEADER_LEN - 2 - 3),
    );
    let exact = Frame {
        name: Some(FrameName::inline("abc")),
        ..exact
    };
    codec.encode(&exact, &mut buf).unwrap();
    assert_eq!(buf.len(), 7 + PREFIX_LEN + 1024);
}

/// A user message as the bus sends one: a struct with named fields and a byte string.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Message {
    text: String,
    count: u32,
    #[serde(with = "crate::binary")]
    data: Vec<u8>,
}

fn message(data: Vec<u8>) -> Message {
    Message {
        text: "hello".into(),
        count: 7,
        data,
    }
}

/// What [`FrameCodec::encode_message`] must produce: the body encoded on its own, then framed.
fn encode_the_old_way(
    codec: &FrameCodec,
    kind: FrameKind,
    request_id: u64,
    name: &str,
    headers: &FrameHeaders,
    body: &Message,
) -> Result<BytesMut, FrameError> {
    let mut frame = Frame::new(kind, encode_body(body)?);
    frame.request_id = request_id;
    frame.name = Some(FrameName::inline(name));
    frame.headers = headers.clone();
    let mut buf = BytesMut::new();
    codec.encode(&frame, &mut buf)?;
    Ok(buf)
}

#[test]
fn encode_message_writes_the_bytes_encode_writes_and_round_trips() {
    let codec = codec();
    for headers in header_variants() {
        for data in [
            vec![],
            vec![1, 2, 3],
            incompressible(300).to_vec(),
            vec![9; 10_000],
        ] {
            let body = message(data);
            let old = encode_the_old_way(
                &codec,
                FrameKind::Event,
                3,
                "users.created",
                &headers,
                &body,
            )
            .unwrap();
            let mut new = BytesMut::from(&b"before"[..]);
            codec
                .encode_message(
                    FrameKind::Event,
                    3,
                    "users.created",
                    &headers,
                    &body,
                    &mut new,
                )
                .unwrap();
            assert_eq!(&new[..6], b"before");
            assert_eq!(&new[6..], &old[..]);
            new.advance(6);
            let decoded = codec.decode(&mut new).unwrap().unwrap();
            assert!(new.is_empty());
            assert_eq!(decoded.kind, FrameKind::Event);
            assert_eq!(decoded.request_id, 3);
            assert_eq!(decoded.name, Some(FrameName::inline("users.created")));
            assert_eq!(decoded.headers, headers);
            assert_eq!(
                crate::wire::body::decode_body::<Message>(&decoded.body).unwrap(),
                body
            );
        }
    }
    // The large compressible body went through LZ4.
    let mut buf = BytesMut::new();
    codec
        .encode_message(
            FrameKind::Event,
            0,
            "x",
            &FrameHeaders::default(),
            &message(vec![9; 10_000]),
            &mut buf,
        )
        .unwrap();
    assert_ne!(flags_of(&buf) & flags::COMPRESSED, 0);
}

#[test]
fn encode_message_over_the_limit_is_refused_and_writes_nothing() {
    let codec = FrameCodec::with_max_frame_size(1024);
    let headers = FrameHeaders::default();
    let mut buf = BytesMut::from(&b"earlier"[..]);
    for data in [incompressible(1024).to_vec(), vec![0; 2048]] {
        let err = codec
            .encode_message(FrameKind::Event, 0, "x", &headers, &message(data), &mut buf)
            .unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err:?}");
        assert_eq!(&buf[..], b"earlier");
    }
    let long = "n".repeat(usize::from(u16::MAX) + 1);
    assert!(matches!(
        codec.encode_message(
            FrameKind::Event,
            0,
            &long,
            &headers,
            &message(vec![]),
            &mut buf
        ),
        Err(FrameError::FieldTooLong { .. })
    ));
    assert_eq!(&buf[..], b"earlier");

    /// A value whose `Serialize` fails halfway through.
    struct Fails;
    impl serde::Serialize for Fails {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::{Error, SerializeSeq};
            let mut seq = s.serialize_seq(Some(2))?;
            seq.serialize_element("written")?;
            Err(S::Error::custom("no"))
        }
    }
    assert!(matches!(
        codec.encode_message(FrameKind::Event, 0, "x", &headers, &Fails, &mut buf),
        Err(FrameError::EncodeBody(_))
    ));
    assert_eq!(&buf[..], b"earlier");
}

#[test]
fn to_bytes_writes_what_encode_writes_whatever_the_size_and_after_an_error() {
    let codec = codec();
    let headers = full_headers();
    // Small (copied out of the scratch buffer), just over the scratch bound, large and
    // compressible: each equal to what `encode_message` writes into a buffer of its own.
    for data in [
        vec![1, 2, 3],
        incompressible(20_000).to_vec(),
        vec![9; 100_000],
    ] {
        let body = message(data);
        let mut want = BytesMut::new();
        codec
            .encode_message(FrameKind::Command, 5, "a.b", &headers, &body, &mut want)
            .unwrap();
        let got = codec
            .encode_message_to_bytes(FrameKind::Command, 5, "a.b", &headers, &body)
            .unwrap();
        assert_eq!(&got[..], &want[..]);
        let frame = codec.decode(&mut want).unwrap().unwrap();
        assert_eq!(&codec.encode_to_bytes(&frame).unwrap()[..], &got[..]);
    }
    // A failed encoding leaves nothing behind for the next one.
    let small = FrameCodec::with_max_frame_size(1024);
    let err = small
        .encode_message_to_bytes(FrameKind::Event, 0, "x", &headers, &message(vec![7; 5000]))
        .unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { .. }), "{err:?}");
    let ok = small
        .encode_message_to_bytes(FrameKind::Event, 0, "x", &headers, &message(vec![1]))
        .unwrap();
    let mut want = BytesMut::new();
    small
        .encode_message(
            FrameKind::Event,
            0,
            "x",
            &headers,
            &message(vec![1]),
            &mut want,
        )
        .unwrap();
    assert_eq!(&ok[..], &want[..]);
}

#[test]
fn the_scratch_buffer_is_never_kept_large() {
    let codec = codec();
    // 1 MiB that compresses to a few KiB (serialized whole before it is compressed), one that
    // does not compress, and one over the limit.
    let small = FrameCodec::with_max_frame_size(64 * 1024);
    for (codec, data) in [
        (&codec, vec![7; 1 << 20]),
        (&codec, incompressible(100_000).to_vec()),
        (&small, incompressible(100_000).to_vec()),
    ] {
        let _ = codec.encode_message_to_bytes(
            FrameKind::Event,
            0,
            "x",
            &FrameHeaders::default(),
            &message(data),
        );
        let kept = SCRATCH.with(|s| s.borrow().capacity());
        assert!(kept <= SCRATCH_KEEP, "{kept}");
    }
}

#[test]
fn a_body_that_encodes_a_frame_while_it_serializes_gets_a_buffer_of_its_own() {
    /// Encodes a frame of its own from inside `serialize`, while the thread's scratch buffer
    /// is in use by the outer frame.
    struct Nested;
    impl serde::Serialize for Nested {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let inner = FrameCodec::default()
                .encode_message_to_bytes(
                    FrameKind::Event,
                    1,
                    "inner",
                    &FrameHeaders::default(),
                    &message(vec![4; 8]),
                )
                .map_err(serde::ser::Error::custom)?;
            s.serialize_bytes(&inner)
        }
    }
    let codec = codec();
    let outer = codec
        .encode_message_to_bytes(
            FrameKind::Event,
            2,
            "outer",
            &FrameHeaders::default(),
            &Nested,
        )
        .unwrap();
    let frame = codec
        .decode(&mut BytesMut::from(&outer[..]))
        .unwrap()
        .unwrap();
    let inner: crate::Binary = crate::wire::body::decode_body(&frame.body).unwrap();
    let inner = codec
        .decode(&mut BytesMut::from(&inner[..]))
        .unwrap()
        .unwrap();
    assert_eq!(inner.name, Some(FrameName::inline("inner")));
    assert_eq!(
        crate::wire::body::decode_body::<Message>(&inner.body).unwrap(),
        message(vec![4; 8])
    );
}

#[test]
fn encoding_a_field_over_u16_is_refused() {
    let codec = codec();
    let long = "x".repeat(usize::from(u16::MAX) + 1);
    let mut buf = BytesMut::new();
    let frame = Frame {
        name: Some(FrameName::inline(long.as_str())),
        ..Frame::new(FrameKind::Event, Bytes::new())
    };
    assert!(matches!(
        codec.encode(&frame, &mut buf),
        Err(FrameError::FieldTooLong { what: "name", .. })
    ));
    let headers = FrameHeaders {
        extra: vec![("k".into(), long)],
        ..Default::default()
    };
    let frame = Frame {
        headers,
        ..Frame::new(FrameKind::Event, Bytes::new())
    };
    assert!(matches!(
        codec.encode(&frame, &mut buf),
        Err(FrameError::FieldTooLong {
            what: "extra header value",
            ..
        })
    ));
    assert!(buf.is_empty());

    // The longest allowed name fits.
    let frame = Frame {
        name: Some(FrameName::inline("y".repeat(usize::from(u16::MAX)))),
        ..Frame::new(FrameKind::Event, Bytes::new())
    };
    assert_eq!(round_trip(&codec, &frame), frame);
}

#[test]
fn deadlines_travel_as_whole_microseconds() {
    let codec = codec();
    let mut frame = Frame::new(FrameKind::Command, Bytes::new());
    frame.headers.deadline = Some(Duration::from_nanos(2_500_999));
    assert_eq!(
        round_trip(&codec, &frame).headers.deadline,
        Some(Duration::from_micros(2_500))
    );
    frame.headers.deadline = Some(Duration::MAX);
    assert_eq!(
        round_trip(&codec, &frame).headers.deadline,
        Some(Duration::from_micros(u64::MAX))
    );
}

/// A frame with the given kind byte, flags and the rest of its header and body.
fn raw_frame(kind: u8, flag_bits: u8, rest: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u32((FIXED_HEADER_LEN + rest.len()) as u32);
    buf.put_u8(kind);
    buf.put_u8(flag_bits);
    buf.put_u64(0);
    buf.put_slice(rest);
    buf
}

#[test]
fn malformed_frames_are_errors() {
    let codec = codec();
    let decode = |mut buf: BytesMut| codec.decode(&mut buf);

    assert!(matches!(
        decode(raw_frame(0x00, 0, b"")),
        Err(FrameError::UnknownKind(0))
    ));
    assert!(matches!(
        decode(raw_frame(0xff, 0, b"")),
        Err(FrameError::UnknownKind(0xff))
    ));
    assert!(matches!(
        decode(raw_frame(
            0x30,
            flags::NAME_ID | flags::NAME_INLINE,
            &[0, 1, 0, 1, b'a']
        )),
        Err(FrameError::Malformed { .. })
    ));
    assert!(matches!(
        decode(raw_frame(0x30, flags::NAME_INLINE, &[0, 2, 0xc3, 0x28])),
        Err(FrameError::BadUtf8 { what: "name" })
    ));
    assert!(matches!(
        decode(raw_frame(0x30, flags::NAME_INLINE, &[0, 9, b'a'])),
        Err(FrameError::Truncated { what: "name" })
    ));
    assert!(matches!(
        decode(raw_frame(0x30, flags::DEADLINE, &[0, 0, 0])),
        Err(FrameError::Truncated { what: "deadline" })
    ));
    // A count of 65535 extra headers with nothing behind it fails without a big allocation.
    assert!(matches!(
        decode(raw_frame(0x30, flags::EXTRA_HEADERS, &[0xff, 0xff])),
        Err(FrameError::Truncated {
            what: "extra header key"
        })
    ));
    // A length shorter than the fixed header.
    let mut short = BytesMut::new();
    short.put_u32(3);
    short.put_slice(&[0x30, 0, 0]);
    assert!(matches!(decode(short), Err(FrameError::Malformed { .. })));
}

#[test]
fn frame_errors_map_to_bus_error_kinds() {
    let e: crate::Error = FrameError::TooLarge {
        declared: 10,
        limit: 5,
    }
    .into();
    assert_eq!(e.kind(), crate::ErrorKind::TooLarge);
    assert_eq!(
        e.detail(),
        Some("frame of 10 bytes is over the limit of 5 bytes")
    );
    assert!(std::error::Error::source(&e).is_some());
    let e: crate::Error = FrameError::UnknownKind(9).into();
    assert_eq!(e.kind(), crate::ErrorKind::Decode);
    assert_eq!(e.to_string(), "decode error: unknown frame kind 0x09");
}

/// Encodes the example frame of `docs/PROTOCOL.md` and prints its hex dump; the assertion keeps
/// the document honest.
#[test]
fn protocol_doc_example_frame() {
    #[derive(serde::Serialize)]
    struct Ping {
        text: String,
    }
    let frame = Frame {
        request_id: 7,
        name: Some(FrameName::inline("diag.ping")),
        ..Frame::new(
            FrameKind::Command,
            encode_body(&Ping { text: "hi".into() }).unwrap(),
        )
    };
    let encoded = encode(&codec(), &frame);
    let dump = hex_dump(&encoded);
    println!("{dump}");
    assert_eq!(
        dump,
        "\
00000000  00 00 00 1e 20 02 00 00  00 00 00 00 00 07 00 09  |.... ...........|
00000010  64 69 61 67 2e 70 69 6e  67 81 a4 74 65 78 74 a2  |diag.ping..text.|
00000020  68 69                                             |hi|"
    );
}

/// `hexdump -C` style, without the trailing offset line.
fn hex_dump(bytes: &[u8]) -> String {
    let mut lines = Vec::new();
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let mut hex = String::new();
        for j in 0..16 {
            if j == 8 {
                hex.push(' ');
            }
            match chunk.get(j) {
                Some(b) => hex.push_str(&format!("{b:02x} ")),
                None => hex.push_str("   "),
            }
        }
        let ascii: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        lines.push(format!("{:08x}  {hex} |{ascii}|", i * 16));
    }
    lines.join("\n")
}

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z.]{1,12}", "\\PC{0,8}"]
}

fn arb_headers() -> impl Strategy<Value = FrameHeaders> {
    (
        proptest::option::of(arb_text()),
        proptest::option::of(any::<u64>().prop_map(Duration::from_micros)),
        proptest::option::of(arb_text()),
        proptest::option::of(arb_text()),
        proptest::collection::vec((arb_text(), arb_text()), 0..4),
    )
        .prop_map(
            |(correlation_id, deadline, idempotency_key, trace_context, extra)| FrameHeaders {
                correlation_id,
                deadline,
                idempotency_key,
                trace_context,
                extra,
            },
        )
}

fn arb_name() -> impl Strategy<Value = Option<FrameName>> {
    prop_oneof![
        Just(None),
        any::<u16>().prop_map(|id| Some(FrameName::Id(id))),
        arb_text().prop_map(|s| Some(FrameName::inline(s))),
    ]
}

fn arb_body() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256).prop_map(Bytes::from),
        // Long runs: above the threshold and compressible.
        (any::<u8>(), 4097..20_000usize).prop_map(|(b, n)| Bytes::from(vec![b; n])),
    ]
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    (
        proptest::sample::select(FrameKind::ALL.to_vec()),
        any::<u64>(),
        arb_name(),
        arb_headers(),
        arb_body(),
    )
        .prop_map(|(kind, request_id, name, headers, body)| Frame {
            kind,
            request_id,
            name,
            headers,
            body,
        })
}

/// Decodes until the codec wants more bytes or fails; must never panic.
fn decode_all(codec: &FrameCodec, buf: &mut BytesMut) -> Result<usize, FrameError> {
    let mut frames = 0;
    while codec.decode(buf)?.is_some() {
        frames += 1;
    }
    Ok(frames)
}

proptest! {
    #[test]
    fn prop_every_frame_round_trips(frame in arb_frame()) {
        let codec = codec();
        let mut buf = BytesMut::new();
        codec.encode(&frame, &mut buf).unwrap();
        let decoded = codec.decode(&mut buf).unwrap();
        prop_assert_eq!(decoded, Some(frame));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn prop_encode_message_matches_encode(
        kind in proptest::sample::select(FrameKind::ALL.to_vec()),
        request_id in any::<u64>(),
        name in arb_text(),
        headers in arb_headers(),
        data in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..256),
            (any::<u8>(), 4097..20_000usize).prop_map(|(b, n)| vec![b; n]),
        ],
    ) {
        let codec = codec();
        let body = message(data);
        let old = encode_the_old_way(&codec, kind, request_id, &name, &headers, &body);
        let mut new = BytesMut::new();
        let result = codec.encode_message(kind, request_id, &name, &headers, &body, &mut new);
        match (old, result) {
            (Ok(old), Ok(())) => prop_assert_eq!(&new[..], &old[..]),
            (Err(_), Err(_)) => prop_assert!(new.is_empty()),
            (old, new) => prop_assert!(false, "old {:?}, new {:?}", old.map(|_| ()), new),
        }
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = decode_all(&FrameCodec::handshake(), &mut buf);
    }

    /// Arbitrary bytes behind a plausible prefix, so that the header parser sees them.
    #[test]
    fn prop_arbitrary_frames_never_panic(
        kind in proptest::sample::select(FrameKind::ALL.to_vec()),
        flag_bits in any::<u8>(),
        rest in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut buf = raw_frame(kind.to_u8(), flag_bits, &rest);
        let _ = decode_all(&codec(), &mut buf);
    }

    #[test]
    fn prop_truncated_frames_wait_for_more(frame in arb_frame(), cut in any::<prop::sample::Index>()) {
        let codec = codec();
        let mut whole = BytesMut::new();
        codec.encode(&frame, &mut whole).unwrap();
        let cut = cut.index(whole.len());
        let mut buf = BytesMut::from(&whole[..cut]);
        prop_assert!(codec.decode(&mut buf).unwrap().is_none());
        prop_assert_eq!(buf.len(), cut);
    }

    /// A valid frame whose length prefix claims less than it holds: the decoder sees a frame
    /// cut inside its header or body, and must answer with an error or a (different) frame.
    #[test]
    fn prop_short_length_prefixes_never_panic(frame in arb_frame(), cut in any::<prop::sample::Index>()) {
        let codec = codec();
        let mut whole = BytesMut::new();
        codec.encode(&frame, &mut whole).unwrap();
        let len = whole.len() - PREFIX_LEN;
        let claimed = cut.index(len);
        whole[..PREFIX_LEN].copy_from_slice(&(claimed as u32).to_be_bytes());
        let _ = decode_all(&codec, &mut whole);
    }
}

/// Like [`compressed_frame`], with the frame kind to use.
fn compressed_frame_of(kind: FrameKind, declared_size: u32, block: &[u8]) -> BytesMut {
    let mut buf = compressed_frame(declared_size, block);
    if let Some(byte) = buf.get_mut(PREFIX_LEN) {
        *byte = kind.to_u8();
    }
    buf
}

#[test]
fn the_decompression_limit_holds_at_its_boundary() {
    let codec = FrameCodec::handshake();
    let limit = HANDSHAKE_MAX_FRAME_SIZE;
    // A body of exactly the limit, honestly declared, inflates...
    let at = vec![0u8; limit];
    let block = lz4_flex::block::compress(&at);
    let mut frame = compressed_frame(limit as u32, &block);
    assert_eq!(codec.decode(&mut frame).unwrap().unwrap().body.len(), limit);
    // ...one byte more does not, and is refused before inflating.
    let over = vec![0u8; limit + 1];
    let block = lz4_flex::block::compress(&over);
    let mut frame = compressed_frame(limit as u32 + 1, &block);
    assert!(matches!(
        codec.decode(&mut frame),
        Err(FrameError::TooLarge { .. })
    ));
}

#[test]
fn a_tiny_block_cannot_claim_a_huge_body() {
    // 16 bytes of block may not claim 8 MiB: refused before the buffer is zeroed.
    let codec = FrameCodec::default();
    let block = lz4_flex::block::compress(&[0u8; 64]);
    assert!(block.len() < 32);
    let mut frame = compressed_frame(8 * 1024 * 1024, &block);
    assert!(matches!(
        codec.decode(&mut frame),
        Err(FrameError::Malformed { .. })
    ));
}

#[test]
fn control_bodies_are_capped_well_below_the_frame_limit() {
    let codec = FrameCodec::default();
    // A user event may be large...
    let big = Frame::new(FrameKind::Event, compressible(2 * MAX_CONTROL_BODY));
    assert_eq!(round_trip(&codec, &big).body.len(), 2 * MAX_CONTROL_BODY);
    // ...a control message may not, neither sent...
    let interest = Frame::new(FrameKind::Interest, incompressible(MAX_CONTROL_BODY + 1));
    let mut buf = BytesMut::new();
    assert!(matches!(
        codec.encode(&interest, &mut buf),
        Err(FrameError::TooLarge { .. })
    ));
    assert!(buf.is_empty());
    // ...nor received, compressed or not.
    let event = Frame::new(FrameKind::Event, incompressible(MAX_CONTROL_BODY + 1));
    let mut raw = encode(&codec, &event);
    if let Some(byte) = raw.get_mut(PREFIX_LEN) {
        *byte = FrameKind::Gossip.to_u8();
    }
    assert!(matches!(
        codec.decode(&mut raw),
        Err(FrameError::TooLarge { .. })
    ));
    let body = vec![0u8; MAX_CONTROL_BODY + 1];
    let block = lz4_flex::block::compress(&body);
    let mut packed = compressed_frame_of(FrameKind::Interest, body.len() as u32, &block);
    assert!(matches!(
        codec.decode(&mut packed),
        Err(FrameError::TooLarge { .. })
    ));
}

#[test]
fn cached_decoding_shares_repeated_names_and_stays_bounded() {
    let codec = codec();
    let mut names = NameCache::new();
    let mut frame = Frame::new(FrameKind::Event, Bytes::from_static(b"\x90"));
    frame.name = Some(FrameName::inline("users.created"));
    let bytes = encode(&codec, &frame).freeze();
    let first = codec
        .decode_frame_cached(bytes.clone(), &mut names)
        .unwrap();
    let second = codec
        .decode_frame_cached(bytes.clone(), &mut names)
        .unwrap();
    assert_eq!(first, frame);
    assert_eq!(second, frame);
    match (&first.name, &second.name) {
        (Some(FrameName::Inline(a)), Some(FrameName::Inline(b))) => assert!(Arc::ptr_eq(a, b)),
        other => panic!("expected inline names, got {other:?}"),
    }
    // The same checks as `decode_frame`, names included: a name that is not UTF-8 is refused
    // with a cache full of names (it is looked up by its bytes first).
    assert!(codec
        .decode_frame_cached(bytes.slice(..bytes.len() - 1), &mut names)
        .is_err());
    let bad = raw_frame(0x30, flags::NAME_INLINE, &[0, 2, 0xc3, 0x28]).freeze();
    assert!(matches!(
        codec.decode_frame_cached(bad, &mut names),
        Err(FrameError::BadUtf8 { what: "name" })
    ));
    let truncated = raw_frame(0x30, flags::NAME_INLINE, &[0, 9, b'a']).freeze();
    assert!(matches!(
        codec.decode_frame_cached(truncated, &mut names),
        Err(FrameError::Truncated { what: "name" })
    ));

    // Many names, and long ones: every one decodes, the cache keeps a bounded few.
    for i in 0..200 {
        let name = if i % 2 == 0 {
            format!("event.{i}")
        } else {
            "z".repeat(NameCache::MAX_NAME_LEN + i)
        };
        assert_eq!(&*names.get(&name), name.as_str());
    }
    assert!(names.names.len() <= NameCache::ENTRIES);
    assert!(names
        .names
        .iter()
        .all(|n| n.len() <= NameCache::MAX_NAME_LEN));
}

#[test]
fn the_kind_and_request_id_are_read_without_parsing() {
    let mut frame = Frame::new(FrameKind::Command, Bytes::from_static(b"\x80"));
    frame.request_id = 0x0102_0304_0506_0708;
    frame.name = Some(FrameName::inline("diag.ping"));
    let bytes = FrameCodec::default().encode_to_bytes(&frame).unwrap();
    assert_eq!(
        peek_kind_and_id(&bytes),
        Some((FrameKind::Command, 0x0102_0304_0506_0708))
    );
    assert_eq!(peek_kind_and_id(&bytes[..13]), None, "a cut header");
    let mut unknown = bytes.to_vec();
    unknown[4] = 0xff;
    assert_eq!(peek_kind_and_id(&unknown), None, "an unknown kind");
}

#[test]
fn a_large_compressed_body_is_handed_back_undecompressed_with_its_declared_size() {
    let codec = codec();
    let mut names = NameCache::new();
    let original = compressible(200_000);
    let block = lz4_flex::block::compress(&original);
    let wire = compressed_frame(original.len() as u32, &block).freeze();

    // Over the inline limit: nothing is decompressed, the declared size is known.
    let Decoded::Compressed(c) = codec
        .decode_frame_deferred(wire.clone(), &mut names, 64 * 1024)
        .unwrap()
    else {
        panic!("expected a deferred body");
    };
    assert_eq!(c.decompressed_size(), 200_000);
    assert_eq!(c.frame().kind, FrameKind::Event);
    assert_eq!(c.frame().body.len(), block.len());
    assert_eq!(c.decompress().unwrap().body, original);

    // Within it: decompressed at once, as `decode_frame` does.
    let Decoded::Frame(f) = codec
        .decode_frame_deferred(wire.clone(), &mut names, 200_000)
        .unwrap()
    else {
        panic!("expected a whole frame");
    };
    assert_eq!(f, codec.decode_frame(wire).unwrap());

    // The declared size is checked before it is deferred: over the frame limit, or more than
    // LZ4 can make of the block, is an error at once.
    let small = FrameCodec::with_max_frame_size(100_000);
    let wire = compressed_frame(original.len() as u32, &block).freeze();
    assert!(matches!(
        small.decode_frame_deferred(wire, &mut names, 1024),
        Err(FrameError::TooLarge {
            declared: 200_000,
            ..
        })
    ));
    let lie = compressed_frame(16 << 20, &block[..100]).freeze();
    assert!(matches!(
        codec.decode_frame_deferred(lie, &mut names, 1024),
        Err(FrameError::Malformed { .. })
    ));
}

#[test]
fn bodies_over_the_default_decompressed_cap_travel_uncompressed() {
    let codec = codec();
    let at = Frame::new(
        FrameKind::Event,
        Bytes::from(vec![0u8; DEFAULT_MAX_DECOMPRESSED_SIZE]),
    );
    let over = Frame::new(
        FrameKind::Event,
        Bytes::from(vec![0u8; DEFAULT_MAX_DECOMPRESSED_SIZE + 1]),
    );
    let flags_of = |buf: &BytesMut| buf[PREFIX_LEN + 1];
    assert_ne!(flags_of(&encode(&codec, &at)) & flags::COMPRESSED, 0);
    let plain = encode(&codec, &over);
    assert_eq!(flags_of(&plain) & flags::COMPRESSED, 0);
    assert_eq!(codec.decode(&mut plain.clone()).unwrap().unwrap(), over);
    // `encode_message` follows the same rule.
    let body = serde_bytes_like(DEFAULT_MAX_DECOMPRESSED_SIZE + 16);
    let bytes = codec
        .encode_message_to_bytes(FrameKind::Event, 0, "big", &FrameHeaders::default(), &body)
        .unwrap();
    assert_eq!(bytes[PREFIX_LEN + 1] & flags::COMPRESSED, 0);
}

/// A body that serializes to about `len` bytes of MessagePack and compresses very well.
fn serde_bytes_like(len: usize) -> String {
    "a".repeat(len)
}

#[test]
fn a_frame_sent_again_carries_the_time_it_has_left() {
    let codec = FrameCodec::default();
    let mut frame = Frame::new(FrameKind::Command, Bytes::from_static(b"\x80"));
    frame.request_id = 9;
    frame.name = Some(FrameName::inline("diag.ping"));
    frame.headers.correlation_id = Some("corr-1".into());
    frame.headers.deadline = Some(Duration::from_secs(30));
    frame.headers.idempotency_key = Some("key".into());
    let bytes = codec.encode_to_bytes(&frame).unwrap();
    let again = with_remaining_deadline(&bytes, Duration::from_millis(2_500)).unwrap();
    let mut expected = frame.clone();
    expected.headers.deadline = Some(Duration::from_millis(2_500));
    assert_eq!(codec.decode_frame(again).unwrap(), expected);
    // No deadline to set, or not the whole header: nothing.
    frame.headers.deadline = None;
    let without = codec.encode_to_bytes(&frame).unwrap();
    assert_eq!(with_remaining_deadline(&without, Duration::ZERO), None);
    assert_eq!(with_remaining_deadline(&bytes[..20], Duration::ZERO), None);
}
