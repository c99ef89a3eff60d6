//! Trust: the network key that lets a node in, and the static key that says who it is.
//!
//! Every link starts with a Noise handshake (`Noise_XXpsk0_25519_ChaChaPoly_SHA256`, see
//! [`proto::noise`](crate::proto::noise)) before anything else crosses it, and every frame
//! after it is encrypted and authenticated:
//!
//! - A [`NetworkKey`] is the network's shared secret (32 random bytes, written as base64). Only
//!   a node holding it completes a handshake; one without it is refused at its first message.
//!   A node keeps a keyring of up to [`MAX_NETWORK_KEYS`] so keys can be rotated without
//!   downtime: it dials with the first key the other side has, and accepts any of them.
//! - An [`Identity`] is a node's static X25519 key pair, new at every start or kept in a file
//!   for a stable id. A node's [`NodeId`] is derived from its [`PublicKey`]
//!   ([`NodeId::from_public_key`]), and the handshake proves the peer holds the private half,
//!   so no node can claim another's id.
//!
//! ```
//! use meshbus_core::trust::{Identity, NetworkKey};
//!
//! let key = NetworkKey::generate();
//! let text = key.to_base64(); // what operators hand to every node
//! assert_eq!(text.parse::<NetworkKey>().ok(), Some(key.clone()));
//!
//! let identity = Identity::generate();
//! let id = identity.node_id();
//! assert_eq!(id, meshbus_core::NodeId::from_public_key(&identity.public_key()));
//! ```

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::error::{Error, ErrorKind};
use crate::id::NodeId;

/// The most network keys a node holds at once: the current one and those being rotated in or
/// out.
pub const MAX_NETWORK_KEYS: usize = 8;

const NODE_ID_LABEL: &[u8] = b"meshbus node id v1";
const KEY_ID_LABEL: &[u8] = b"meshbus network key id v1";
const OPEN_KEY_LABEL: &[u8] = b"meshbus open network v1";

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        ctx.update(part);
    }
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn random_32() -> [u8; 32] {
    use ring::rand::SecureRandom;
    let mut out = [0; 32];
    // The system's random source failing is not something a node can run without.
    if ring::rand::SystemRandom::new().fill(&mut out).is_err() {
        panic!("the operating system's random number generator failed");
    }
    out
}

fn decode_32(text: &str, what: &str) -> Result<[u8; 32], Error> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| Error::config(format!("{what} is not base64: {e}")))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        Error::config(format!(
            "{what} must be 32 bytes, base64 encoded (44 characters); it is {} bytes",
            bytes.len()
        ))
    })
}

/// The cipher of a link's handshake and records: ChaCha20-Poly1305 (the default, fast
/// everywhere) or AES-256-GCM (faster where the processor has AES instructions). The dialler
/// picks (see [`BusBuilder::cipher`](crate::BusBuilder::cipher)); an acceptor takes either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Cipher {
    /// `ChaChaPoly`: ChaCha20-Poly1305.
    #[default]
    ChaChaPoly,
    /// `AESGCM`: AES-256-GCM.
    AesGcm,
}

impl Cipher {
    pub(crate) fn code(self) -> u8 {
        match self {
            Cipher::ChaChaPoly => 1,
            Cipher::AesGcm => 2,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Cipher::ChaChaPoly),
            2 => Some(Cipher::AesGcm),
            _ => None,
        }
    }
}

/// A network's shared secret: 32 random bytes. Nodes holding it let each other in; others are
/// refused at their first handshake message.
///
/// Written as base64 text (`openssl rand -base64 32` makes one). `Debug` shows only its
/// [`id`](Self::id), never the key.
#[derive(Clone, PartialEq, Eq)]
pub struct NetworkKey([u8; 32]);

impl NetworkKey {
    /// A new random key.
    pub fn generate() -> Self {
        NetworkKey(random_32())
    }

    /// The key from its 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        NetworkKey(bytes)
    }

    /// The key's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key from base64 text (surrounding whitespace ignored).
    ///
    /// # Errors
    ///
    /// A [`Config`](ErrorKind::Config) error for text that is not base64 of 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, Error> {
        decode_32(text, "the network key").map(NetworkKey)
    }

    /// The key as base64 text.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Reads the key from a file holding its base64 text.
    ///
    /// # Errors
    ///
    /// An [`Io`](ErrorKind::Io) error when the file cannot be read; a
    /// [`Config`](ErrorKind::Config) error when it does not hold a key.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(ErrorKind::Io)
                .with_detail(format!(
                    "cannot read the network key file {}: {e}",
                    path.display()
                ))
                .with_source(e)
        })?;
        Self::from_base64(&text).map_err(|e| {
            Error::config(format!(
                "{}: {}",
                path.display(),
                e.detail().unwrap_or("not a network key")
            ))
        })
    }

    /// The key's public name: the first 8 bytes of a SHA-256 of it. It travels in clear at
    /// the start of a handshake so the other side can pick the same key from its keyring;
    /// it tells nothing about the key.
    pub fn id(&self) -> KeyId {
        let hash = sha256(&[KEY_ID_LABEL, &self.0]);
        let mut id = [0; 8];
        id.copy_from_slice(&hash[..8]);
        KeyId(id)
    }

    /// The key of a node given none: a fixed, public value, so keyless nodes (on loopback,
    /// Unix sockets, in memory) run the same handshake and encryption as keyed ones. It
    /// keeps out nobody who knows meshbus; keyed and keyless nodes never talk.
    pub fn open() -> Self {
        NetworkKey(sha256(&[OPEN_KEY_LABEL]))
    }
}

impl fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetworkKey({})", self.id())
    }
}

impl FromStr for NetworkKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::from_base64(s)
    }
}

/// The public name of a [`NetworkKey`] ([`NetworkKey::id`]), shown as 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub(crate) [u8; 8]);

impl KeyId {
    /// The id's 8 bytes.
    pub fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A node's static X25519 public key, written as base64. Its [`NodeId`] is derived from it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The key from its 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        PublicKey(bytes)
    }

    /// The key's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key from base64 text.
    ///
    /// # Errors
    ///
    /// A [`Config`](ErrorKind::Config) error for text that is not base64 of 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, Error> {
        decode_32(text, "the public key").map(PublicKey)
    }

    /// The key as base64 text.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The id of the node holding this key.
    pub fn node_id(&self) -> NodeId {
        NodeId::from_public_key(self)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::from_base64(s)
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyBytes;
        impl<'de> serde::de::Visitor<'de> for KeyBytes {
            type Value = PublicKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("32 bytes of an X25519 public key")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<PublicKey, E> {
                <[u8; 32]>::try_from(v)
                    .map(PublicKey)
                    .map_err(|_| E::invalid_length(v.len(), &self))
            }
        }
        deserializer.deserialize_bytes(KeyBytes)
    }
}

impl NodeId {
    /// The id of the node whose static key is `key`: the first 16 bytes of a SHA-256 of it.
    /// Finding another key with the same id takes about 2^128 tries.
    pub fn from_public_key(key: &PublicKey) -> NodeId {
        let hash = sha256(&[NODE_ID_LABEL, &key.0]);
        let mut id = [0; 16];
        id.copy_from_slice(&hash[..16]);
        NodeId::from_u128(u128::from_be_bytes(id))
    }
}

/// A node's static X25519 key pair: who it is. `Debug` shows only the public half.
///
/// A bus generates one at every start unless given one
/// ([`BusBuilder::identity`](crate::BusBuilder::identity),
/// [`identity_file`](crate::BusBuilder::identity_file)), so its node id is new each time;
/// one kept in a file gives a stable id (and the same entry in peers' pin lists).
#[derive(Clone)]
pub struct Identity {
    secret: [u8; 32],
    public: PublicKey,
}

impl Identity {
    /// A new random key pair.
    pub fn generate() -> Self {
        Identity::from_secret(random_32())
    }

    /// The key pair of an X25519 private key.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let public = curve25519_dalek::MontgomeryPoint::mul_base_clamped(secret).to_bytes();
        Identity {
            secret,
            public: PublicKey(public),
        }
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// The node id this key pair gives.
    pub fn node_id(&self) -> NodeId {
        NodeId::from_public_key(&self.public)
    }

    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// Reads the key pair from `path`, or creates one there (readable by its owner only,
    /// mode 0600 on Unix) if there is no file: the file holds the private key as base64 text.
    ///
    /// # Errors
    ///
    /// An [`Io`](ErrorKind::Io) error when the file cannot be read or created; a
    /// [`Config`](ErrorKind::Config) error when it does not hold a key.
    pub fn load_or_create(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        match Self::load(path) {
            Err(e) if e.kind() == ErrorKind::Io && !path.exists() => {}
            other => return other,
        }
        let identity = Identity::generate();
        // Written whole under a temporary name, then linked into place: the file is either
        // absent or complete, whatever crashes, and of two processes creating it at once one
        // wins and the other reads the winner's.
        let tmp = path.with_file_name(format!(
            ".{}.{}-{:x}.tmp",
            path.file_name()
                .map_or_else(|| "identity".into(), |n| n.to_string_lossy()),
            std::process::id(),
            fastrand::u64(..)
        ));
        let written = write_private(&tmp, &format!("{}\n", STANDARD.encode(identity.secret)));
        let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(identity),
            // Another process created it first: theirs is the identity.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => Err(io_error("cannot create the identity file", path, e)),
        }
    }

    /// Reads the key pair from `path` (the private key as base64 text). A file others may
    /// read is used, with a warning.
    ///
    /// # Errors
    ///
    /// As [`load_or_create`](Self::load_or_create), and an [`Io`](ErrorKind::Io) error when
    /// there is no file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| io_error("cannot read the identity file", path, e))?;
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    "the identity file can be read by others: `chmod 600` it"
                );
            }
        }
        let secret = decode_32(&text, "the identity file").map_err(|e| {
            Error::config(format!(
                "{}: {}",
                path.display(),
                e.detail().unwrap_or("not a private key")
            ))
        })?;
        Ok(Identity::from_secret(secret))
    }
}

/// Writes `text` to a new file at `path`, readable by its owner only, and syncs it.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Io)
        .with_detail(format!("{what} {}: {e}", path.display()))
        .with_source(e)
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_base64_and_bad_text_is_a_config_error() {
        let key = NetworkKey::generate();
        assert_eq!(NetworkKey::from_base64(&key.to_base64()).unwrap(), key);
        assert_ne!(NetworkKey::generate(), key);
        for bad in ["", "not base64!", "AAAA"] {
            let e = NetworkKey::from_base64(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{bad}");
        }
        let debug = format!("{key:?}");
        assert!(!debug.contains(&key.to_base64()), "{debug}");
        assert!(debug.contains(&key.id().to_string()), "{debug}");
    }

    #[test]
    fn node_ids_follow_the_public_key_and_key_ids_the_key() {
        let a = Identity::generate();
        let b = Identity::from_secret(*a.secret());
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(a.node_id(), b.node_id());
        assert_ne!(Identity::generate().node_id(), a.node_id());
        // X25519 of a known scalar (RFC 7748 §6.1, Alice's key).
        let alice = Identity::from_secret(hex32(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        assert_eq!(
            alice.public_key().as_bytes(),
            &hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        let k = NetworkKey::from_bytes([1; 32]);
        assert_eq!(k.id(), NetworkKey::from_bytes([1; 32]).id());
        assert_ne!(k.id(), NetworkKey::from_bytes([2; 32]).id());
        assert_ne!(NetworkKey::open().id(), k.id());
    }

    fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    #[test]
    fn an_identity_file_is_created_private_and_read_back() {
        let dir = tempfile_dir();
        let path = dir.join("node.key");
        let first = Identity::load_or_create(&path).unwrap();
        let again = Identity::load_or_create(&path).unwrap();
        assert_eq!(first.public_key(), again.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "garbage").unwrap();
        let e = Identity::load_or_create(&path).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.to_string().contains("node.key"), "{e}");
        let missing = Identity::load(dir.join("none")).unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::Io);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn processes_creating_one_identity_file_at_once_all_get_the_same_identity() {
        let dir = tempfile_dir();
        let path = dir.join("shared.key");
        let keys: Vec<PublicKey> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| Identity::load_or_create(&path).unwrap().public_key()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
        // Nothing but the identity is left in the directory.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["shared.key"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "meshbus-trust-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
