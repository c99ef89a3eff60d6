//! MessagePack bodies (rmp-serde).
//!
//! Every body, control message or user message, is encoded with struct fields **named** (a
//! MessagePack map keyed by field name, `rmp_serde::to_vec_named`). Names cost a few bytes per
//! field but let nodes running different versions talk: a field added later with
//! `#[serde(default)]` is simply absent in an older sender's body, and a field an older receiver
//! does not know is ignored. This matters for user types too, because a mesh runs mixed versions
//! of an application during a rolling deploy. Large bodies are LZ4-compressed by the frame codec,
//! which takes most of the repeated names back out.
//!
//! The decoder accepts a struct as a map or as an array, so a later version may switch some
//! bodies to the compact array form without breaking receivers of this one.

use bytes::{BufMut, Bytes};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::frame::FrameError;

/// Encodes `value` as MessagePack with named fields.
///
/// # Errors
///
/// [`FrameError::EncodeBody`] when the value's `Serialize` impl fails.
pub fn encode_body<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, FrameError> {
    // Serialized into the thread's scratch buffer and copied out at its exact size: no
    // growing vector, and no shared header for the `Bytes` made of it.
    super::frame::exact_bytes(|dst| {
        rmp_serde::encode::write_named(&mut dst.writer(), value).map_err(FrameError::EncodeBody)
    })
}

/// Decodes a MessagePack body into a `T`.
///
/// Meant for untrusted input: rmp-serde reads strings and binaries out of the slice, checking
/// their lengths against it, and serde caps what a collection's declared length may
/// preallocate; the tests feed it lying lengths and arbitrary bytes. Bytes after the value are
/// ignored.
///
/// # Errors
///
/// [`FrameError::DecodeBody`] when `bytes` is not the MessagePack of a `T`.
pub fn decode_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    rmp_serde::from_slice(bytes).map_err(FrameError::DecodeBody)
}

/// Deserializes a sequence keeping its first `N` elements: the rest are read past as
/// [`IgnoredAny`](serde::de::IgnoredAny), so nothing past element `N` is kept or collected.
/// For collections a peer controls, whose entries beyond a bound the receiver ignores.
pub(crate) fn first_n<'de, D, T, const N: usize>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct Bounded<T, const N: usize>(std::marker::PhantomData<T>);

    impl<'de, T: serde::Deserialize<'de>, const N: usize> serde::de::Visitor<'de> for Bounded<T, N> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a sequence")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(N).min(1024));
            while out.len() < N {
                match seq.next_element()? {
                    Some(item) => out.push(item),
                    None => return Ok(out),
                }
            }
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(out)
        }
    }

    deserializer.deserialize_seq(Bounded::<T, N>(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V1 {
        text: String,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V2 {
        text: String,
        #[serde(default)]
        count: u32,
    }

    #[test]
    fn round_trips() {
        let v = V2 {
            text: "hi".into(),
            count: 3,
        };
        let bytes = encode_body(&v).unwrap();
        assert_eq!(decode_body::<V2>(&bytes).unwrap(), v);
    }

    #[test]
    fn fields_can_be_added_and_ignored() {
        let old = encode_body(&V1 { text: "a".into() }).unwrap();
        assert_eq!(
            decode_body::<V2>(&old).unwrap(),
            V2 {
                text: "a".into(),
                count: 0
            }
        );
        let new = encode_body(&V2 {
            text: "b".into(),
            count: 9,
        })
        .unwrap();
        assert_eq!(decode_body::<V1>(&new).unwrap(), V1 { text: "b".into() });
    }

    #[test]
    fn compact_arrays_are_accepted_too() {
        let compact = rmp_serde::to_vec(&V1 { text: "c".into() }).unwrap();
        assert_eq!(
            decode_body::<V1>(&compact).unwrap(),
            V1 { text: "c".into() }
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(
            decode_body::<V1>(&[0xc1, 0xff, 0x00]),
            Err(FrameError::DecodeBody(_))
        ));
        // A str32 header claiming 4 GiB with nothing behind it must fail, not allocate.
        assert!(decode_body::<String>(&[0xdb, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
