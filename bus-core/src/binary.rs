//! Byte payloads that travel as MessagePack `bin`: the [`Binary`] field type, and
//! [`serialize`]/[`deserialize`] for `#[serde(with = "meshbus::binary")]` on a `Vec<u8>` or
//! [`Bytes`] field.
//!
//! Serde serializes a `Vec<u8>` as a sequence, so a message body carries one MessagePack integer
//! per byte: 1 byte each below 128, 2 above, and a call into the serializer for every one. A
//! field of type [`Binary`] (or a `Vec<u8>` marked `#[serde(with = "meshbus::binary")]`) is
//! written as one `bin` value instead: a marker, a length of 1, 2 or 4 bytes and the bytes
//! themselves, copied in one go.
//!
//! Decoding reads a `bin` as a slice of the received body and copies it once into the field.
//! For tolerance it also accepts a MessagePack string (its UTF-8 bytes) and an array of
//! integers from 0 to 255, which is what a `Vec<u8>` field of an older sender looks like, so a
//! field can switch from `Vec<u8>` to [`Binary`] in a rolling deploy. Anything else is a decode
//! error, never a panic.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

#[cfg(test)]
mod tests;

/// A byte payload for a message field: cheap to clone, and serialized as MessagePack `bin`.
///
/// Use it for any field that holds raw bytes (a file, an image, an encoded blob): a 1 KiB
/// payload takes 1,027 bytes on the wire as `Binary`, where a `Vec<u8>` field takes one
/// MessagePack integer per byte (about 1.5 KiB for random bytes) and encodes and decodes
/// byte by byte. It wraps [`bytes::Bytes`], so cloning it (to publish the same payload
/// twice, say) copies no bytes, and it derefs to `[u8]`.
///
/// A `Vec<u8>` or `Bytes` field can get the same encoding with
/// `#[serde(with = "meshbus::binary")]`; see the [module docs](self).
///
/// # Examples
///
/// ```
/// use meshbus_core::{wire::body, Binary, Event};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Uploaded {
///     name: String,
///     data: Binary,
/// }
/// impl Event for Uploaded { const NAME: &'static str = "files.uploaded"; }
///
/// # fn main() -> Result<(), meshbus_core::wire::FrameError> {
/// let event = Uploaded { name: "a.bin".into(), data: Binary::from(vec![0xff; 1024]) };
/// let encoded = body::encode_body(&event)?;
/// // 1,024 bytes of data, plus a few for the field names and lengths; a `Vec<u8>` field
/// // would take two bytes for each 0xff.
/// assert!(encoded.len() < 1024 + 32);
///
/// let decoded: Uploaded = body::decode_body(&encoded)?;
/// assert_eq!(decoded.data, event.data);
/// assert_eq!(decoded.data.len(), 1024);
/// assert_eq!(&decoded.data[..2], &[0xff, 0xff]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Binary(Bytes);

impl Binary {
    /// An empty payload; allocates nothing.
    pub const fn new() -> Self {
        Binary(Bytes::new())
    }

    /// A payload of static bytes; allocates and copies nothing.
    pub const fn from_static(bytes: &'static [u8]) -> Self {
        Binary(Bytes::from_static(bytes))
    }

    /// A payload holding a copy of `bytes`.
    pub fn copy_from_slice(bytes: &[u8]) -> Self {
        Binary(Bytes::copy_from_slice(bytes))
    }

    /// The bytes, as the [`Bytes`] this payload wraps (no copy).
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The [`Bytes`] this payload wraps (no copy).
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The bytes as a `Vec<u8>`: no copy when this is the only handle to a buffer that came
    /// from a `Vec<u8>`, a copy otherwise.
    pub fn into_vec(self) -> Vec<u8> {
        Vec::from(self.0)
    }
}

impl Deref for Binary {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Binary {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Borrow<[u8]> for Binary {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

/// How many bytes `Debug` shows before it elides the rest: a payload may be megabytes.
const DEBUG_PREFIX: usize = 32;

impl fmt::Debug for Binary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.0[..self.0.len().min(DEBUG_PREFIX)];
        write!(
            f,
            "Binary({} bytes: b\"{}\"",
            self.0.len(),
            shown.escape_ascii()
        )?;
        if shown.len() < self.0.len() {
            f.write_str("..")?;
        }
        f.write_str(")")
    }
}

impl From<Bytes> for Binary {
    fn from(bytes: Bytes) -> Self {
        Binary(bytes)
    }
}

impl From<Vec<u8>> for Binary {
    /// Takes the vector's buffer over; copies nothing.
    fn from(bytes: Vec<u8>) -> Self {
        Binary(Bytes::from(bytes))
    }
}

impl From<Box<[u8]>> for Binary {
    fn from(bytes: Box<[u8]>) -> Self {
        Binary(Bytes::from(bytes))
    }
}

impl From<&'static [u8]> for Binary {
    fn from(bytes: &'static [u8]) -> Self {
        Binary(Bytes::from_static(bytes))
    }
}

impl<const N: usize> From<&'static [u8; N]> for Binary {
    fn from(bytes: &'static [u8; N]) -> Self {
        Binary(Bytes::from_static(bytes))
    }
}

impl From<String> for Binary {
    /// The string's UTF-8 bytes; copies nothing.
    fn from(s: String) -> Self {
        Binary(Bytes::from(s))
    }
}

impl From<&'static str> for Binary {
    fn from(s: &'static str) -> Self {
        Binary(Bytes::from_static(s.as_bytes()))
    }
}

impl From<Binary> for Bytes {
    fn from(b: Binary) -> Self {
        b.0
    }
}

impl From<Binary> for Vec<u8> {
    fn from(b: Binary) -> Self {
        b.into_vec()
    }
}

impl FromIterator<u8> for Binary {
    fn from_iter<I: IntoIterator<Item = u8>>(iter: I) -> Self {
        Binary(Bytes::from_iter(iter))
    }
}

impl PartialEq<[u8]> for Binary {
    fn eq(&self, other: &[u8]) -> bool {
        self.0 == other
    }
}

impl PartialEq<&[u8]> for Binary {
    fn eq(&self, other: &&[u8]) -> bool {
        self.0 == *other
    }
}

impl<const N: usize> PartialEq<[u8; N]> for Binary {
    fn eq(&self, other: &[u8; N]) -> bool {
        self.0 == other[..]
    }
}

impl PartialEq<Vec<u8>> for Binary {
    fn eq(&self, other: &Vec<u8>) -> bool {
        self.0 == other[..]
    }
}

impl PartialEq<Bytes> for Binary {
    fn eq(&self, other: &Bytes) -> bool {
        self.0 == other
    }
}

impl Serialize for Binary {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Binary {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_bytes(BytesVisitor)
            .map(Binary::from)
    }
}

/// Serializes any byte buffer as MessagePack `bin`: the `serialize` half of
/// `#[serde(with = "meshbus::binary")]`, for a `Vec<u8>`, `Bytes` or `Box<[u8]>` field (or
/// `#[serde(serialize_with = "meshbus::binary::serialize")]` for any `AsRef<[u8]>`).
///
/// # Examples
///
/// ```
/// use meshbus_core::wire::body;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Chunk {
///     #[serde(with = "meshbus_core::binary")] // `meshbus::binary` through the facade
///     data: Vec<u8>,
/// }
///
/// # fn main() -> Result<(), meshbus_core::wire::FrameError> {
/// let chunk = Chunk { data: vec![200; 100] };
/// let encoded = body::encode_body(&chunk)?;
/// assert!(encoded.len() < 100 + 16); // a `bin` value, not 100 two-byte integers
/// assert_eq!(body::decode_body::<Chunk>(&encoded)?.data, chunk.data);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// Whatever the serializer returns for `serialize_bytes` (rmp-serde: a failed write).
pub fn serialize<T, S>(bytes: &T, serializer: S) -> Result<S::Ok, S::Error>
where
    T: AsRef<[u8]> + ?Sized,
    S: Serializer,
{
    serializer.serialize_bytes(bytes.as_ref())
}

/// Deserializes a byte buffer written by [`serialize`] (or as a string, or as an array of
/// bytes): the `deserialize` half of `#[serde(with = "meshbus::binary")]`, for any field type
/// made from a `Vec<u8>` without a copy (`Vec<u8>`, `Bytes`, `Box<[u8]>`, [`Binary`]).
///
/// An `Option<Vec<u8>>` cannot take `with`; make it an `Option<Binary>`.
///
/// # Errors
///
/// The deserializer's error when the input is none of `bin`, a string or an array of integers
/// from 0 to 255.
pub fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
where
    T: From<Vec<u8>>,
    D: Deserializer<'de>,
{
    deserializer.deserialize_bytes(BytesVisitor).map(T::from)
}

/// Reads `bin`, a string or an array of bytes into a vector: the one copy out of the input.
struct BytesVisitor;

/// How many elements an array's declared length may reserve before they are read: the length
/// comes from the peer.
const PREALLOC_LIMIT: usize = 4096;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes (MessagePack bin, a string, or an array of integers 0 to 255)")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        Ok(v.as_bytes().to_vec())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Vec<u8>, E> {
        Ok(v.into_bytes())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(PREALLOC_LIMIT));
        while let Some(byte) = seq.next_element::<u8>()? {
            out.push(byte);
        }
        Ok(out)
    }
}
