use std::collections::HashSet;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::Binary;
use crate::wire::body::{decode_body, encode_body};
use crate::wire::{FrameCodec, FrameHeaders, FrameKind};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Upload {
    data: Binary,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct UploadVec {
    data: Vec<u8>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct UploadWith {
    #[serde(with = "crate::binary")]
    data: Vec<u8>,
    #[serde(with = "crate::binary")]
    shared: Bytes,
}

/// Bytes spread over the whole range, half of them 128 or more (two bytes each as integers).
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

/// The body of a struct with one field named `data`: a one-entry map, then the key.
const DATA_KEY: &[u8] = &[0x81, 0xa4, b'd', b'a', b't', b'a'];

#[test]
fn a_kib_payload_is_one_bin16_value() {
    let data = payload(1024);
    let body = encode_body(&Upload {
        data: Binary::from(data.clone()),
    })
    .unwrap();

    let (key, value) = body.split_at(DATA_KEY.len());
    assert_eq!(key, DATA_KEY);
    // bin16 (0xc5), a big-endian length of 1024, then the bytes as they are.
    assert_eq!(&value[..3], &[0xc5, 0x04, 0x00]);
    assert_eq!(&value[3..], &data[..]);
    assert_eq!(body.len(), DATA_KEY.len() + 3 + 1024);

    // The same bytes in a `Vec<u8>` field: an array16 of integers, half of them two bytes.
    let as_vec = encode_body(&UploadVec { data }).unwrap();
    assert_eq!(as_vec[DATA_KEY.len()], 0xdc);
    assert_eq!(as_vec.len(), DATA_KEY.len() + 3 + 1024 + 512);
}

#[test]
fn a_short_payload_is_bin8_and_an_empty_one_two_bytes() {
    let body = encode_body(&Binary::from(vec![1, 2, 3])).unwrap();
    assert_eq!(&body[..], &[0xc4, 3, 1, 2, 3]);
    let body = encode_body(&Binary::new()).unwrap();
    assert_eq!(&body[..], &[0xc4, 0]);
    let body = encode_body(&Binary::from(payload(70_000))).unwrap();
    assert_eq!(&body[..5], &[0xc6, 0x00, 0x01, 0x11, 0x70]);
}

#[test]
fn the_with_helper_writes_vec_and_bytes_fields_as_bin_too() {
    let msg = UploadWith {
        data: payload(300),
        shared: Bytes::from_static(b"shared"),
    };
    let body = encode_body(&msg).unwrap();
    // A two-entry map; "data" then bin16 of 300 bytes; "shared" then bin8 of 6.
    assert_eq!(body.len(), 1 + 5 + 3 + 300 + 7 + 2 + 6);
    assert_eq!(body[6], 0xc5);
    assert_eq!(decode_body::<UploadWith>(&body).unwrap(), msg);
}

#[test]
fn a_frame_with_a_binary_body_round_trips_through_the_codec() {
    let codec = FrameCodec::default();
    // 1 KiB stays uncompressed; 64 KiB of a repeated pattern goes through LZ4.
    for len in [0, 1024, 64 * 1024] {
        let msg = Upload {
            data: Binary::from(payload(len)),
        };
        let mut buf = BytesMut::new();
        codec
            .encode_message(
                FrameKind::Event,
                0,
                "files.upload",
                &FrameHeaders::default(),
                &msg,
                &mut buf,
            )
            .unwrap();
        let frame = codec.decode(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty());
        assert_eq!(
            decode_body::<Upload>(&frame.body).unwrap(),
            msg,
            "{len} bytes"
        );
    }
}

#[test]
fn an_older_senders_vec_field_and_a_string_decode_as_binary() {
    let data = payload(1024);
    let old = encode_body(&UploadVec { data: data.clone() }).unwrap();
    assert_eq!(decode_body::<Upload>(&old).unwrap().data, data);
    // And the other way: what an older receiver's `Vec<u8>` makes of a bin.
    let new = encode_body(&Upload {
        data: Binary::from(data.clone()),
    })
    .unwrap();
    assert_eq!(decode_body::<UploadVec>(&new).unwrap().data, data);

    let text = encode_body(&"héllo").unwrap();
    assert_eq!(decode_body::<Binary>(&text).unwrap(), "héllo".as_bytes());
}

#[test]
fn malformed_input_is_an_error() {
    let cases: [(&str, &[u8]); 9] = [
        ("empty", &[]),
        ("nil", &[0xc0]),
        ("an integer", &[0x05]),
        ("a map", &[0x80]),
        ("bin8 shorter than it says", &[0xc4, 5, 1, 2]),
        ("bin32 declaring 4 GiB", &[0xc6, 0xff, 0xff, 0xff, 0xff, 1]),
        ("an array with 256 in it", &[0x92, 0x01, 0xcd, 0x01, 0x00]),
        ("an array with -1 in it", &[0x92, 0x01, 0xff]),
        (
            "array32 declaring 4 G elements",
            &[0xdd, 0xff, 0xff, 0xff, 0xff, 1, 2],
        ),
    ];
    for (what, bytes) in cases {
        assert!(decode_body::<Binary>(bytes).is_err(), "{what}");
        assert!(decode_body::<UploadWith>(bytes).is_err(), "{what}");
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_body::<Binary>(&bytes);
        let _ = decode_body::<Upload>(&bytes);
    }

    #[test]
    fn any_payload_round_trips(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let body = encode_body(&Binary::from(data.clone())).unwrap();
        prop_assert!(body.len() <= data.len() + 3);
        prop_assert_eq!(decode_body::<Binary>(&body).unwrap(), data);
    }
}

#[test]
fn debug_shows_the_length_and_a_prefix_only() {
    let big = Binary::from(vec![b'x'; 1 << 20]);
    let shown = format!("{big:?}");
    assert_eq!(
        shown,
        format!("Binary(1048576 bytes: b\"{}\"..)", "x".repeat(32))
    );
    assert_eq!(
        format!("{:?}", Binary::from_static(b"a\n\xff")),
        "Binary(3 bytes: b\"a\\n\\xff\")"
    );
}

#[test]
fn clones_share_the_buffer_and_conversions_do_not_copy() {
    let v = payload(100);
    let ptr = v.as_ptr();
    let a = Binary::from(v);
    let b = a.clone();
    assert_eq!(a.as_ptr(), ptr);
    assert_eq!(b.as_ptr(), ptr);
    drop(a);
    let back = b.into_vec();
    assert_eq!(back.as_ptr(), ptr);

    let s = String::from("text");
    let ptr = s.as_ptr();
    assert_eq!(Binary::from(s).as_bytes().as_ptr(), ptr);
}

#[test]
fn equality_hashing_and_borrowing_follow_the_bytes() {
    let a = Binary::from_static(b"abc");
    assert_eq!(a, Binary::from(vec![b'a', b'b', b'c']));
    assert_eq!(a, *b"abc");
    assert_eq!(a, b"abc"[..]);
    assert_eq!(a, b"abc".to_vec());
    assert_eq!(a, Bytes::from_static(b"abc"));
    assert!(Binary::from("abb") < a);
    let set: HashSet<Binary> = [a.clone()].into_iter().collect();
    assert!(set.contains(&b"abc"[..]));
    assert_eq!(Binary::from_iter(*b"abc"), a);
    assert_eq!(Bytes::from(a), Bytes::from_static(b"abc"));
}
