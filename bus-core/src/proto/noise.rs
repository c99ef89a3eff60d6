//! The secure channel under every link: a Noise handshake, then sealed records.
//!
//! Before `Hello` (see [`handshake`](super::handshake)), the two ends run
//! `Noise_XXpsk0_25519_ChaChaPoly_SHA256`: the network key is the pre-shared key, mixed in
//! before the first message, and each end proves it holds its static X25519 key. Afterwards
//! every byte either end sends is in a sealed record ([`Sealer`], [`Opener`]).
//!
//! # Units
//!
//! The handshake's messages travel as transport frames (a 4-byte big-endian length, then the
//! body), so every transport carries them unchanged. Each body starts with the magic `MBN1`
//! and a type byte:
//!
//! | type | from | body after magic and type |
//! |---|---|---|
//! | 1 `Init` | dialler | key id (8), versions min and max (`u16` each), cipher (1), Noise message 1 (`psk, e`) |
//! | 2 `Response` | acceptor | Noise message 2 (`e, ee, s, es`) |
//! | 3 `Finish` | dialler | Noise message 3 (`s, se`) |
//! | 4 `Refuse` | acceptor | a [`Refusal`] code (1), four zero bytes |
//!
//! The key id ([`NetworkKey::id`]) names the key the dialler used, so the acceptor takes the
//! same one from its keyring; an acceptor without it answers `Refuse { unknown key }` and the
//! dialler tries its next key on the same connection. The prologue, which both ends hash
//! before the first message, is `meshbus/noise/1`, the network name (a `u16` length, then the
//! bytes) and the `Init` header (magic, type, key id, versions): a dialler of another network,
//! or a header changed on the way (a downgraded version range, another key id), makes
//! message 1 fail its authentication at the acceptor, which then sends no handshake message,
//! only `Refuse { unauthorized }`. So does a dialler without the key: with `psk0`, message 1
//! is authenticated under the key, and checking it costs the acceptor no Diffie-Hellman with
//! the dialler's keys (only the setting up of its own handshake state).
//!
//! # Records
//!
//! After the handshake each transport frame is a record: the 4-byte length, then a
//! ChaCha20-Poly1305 ciphertext of at most [`MAX_RECORD`] bytes with its 16-byte tag. The
//! plaintexts of a direction's records, joined, are the stream of that direction's frames,
//! so many small frames share one record and a frame larger than a record spans several.
//! Nonces count records from 0 in each direction and are not sent: a record replayed,
//! dropped, reordered, cut or changed fails authentication, and the link closes.
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use meshbus_core::proto::noise::{NoiseConfig, SecureHandshake, SecureStep};
//! use meshbus_core::trust::{Identity, NetworkKey};
//!
//! # fn main() -> Result<(), meshbus_core::proto::noise::NoiseError> {
//! let key = NetworkKey::generate();
//! let config = |identity| NoiseConfig::new(identity, "prod").with_keys(vec![key.clone()]);
//! let (alice, bob) = (Identity::generate(), Identity::generate());
//! let (mut dialler, init) = SecureHandshake::dial(&config(alice.clone()))?;
//! let mut acceptor = SecureHandshake::accept(&config(bob.clone()));
//!
//! let SecureStep::Send(response) = acceptor.on_unit(&init)? else { panic!("bob answers") };
//! let SecureStep::Done { send: Some(finish), session: at_alice } = dialler.on_unit(&response)?
//! else {
//!     panic!("alice completes")
//! };
//! let SecureStep::Done { session: at_bob, .. } = acceptor.on_unit(&finish)? else {
//!     panic!("bob completes")
//! };
//! assert_eq!(at_alice.remote_key(), bob.public_key());
//! assert_eq!(at_bob.remote_key(), alice.public_key());
//!
//! let (mut seal, _) = at_alice.split();
//! let (_, mut open) = at_bob.split();
//! let mut records = Vec::new();
//! seal.seal_frames(&[Bytes::from_static(b"\0\0\0\x0ahello, bob")], &mut records, &mut Vec::new())?;
//! let mut plain = BytesMut::new();
//! open.open(&records[0], &mut plain)?;
//! assert_eq!(&plain[4..], b"hello, bob");
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::trust::{Cipher, Identity, KeyId, NetworkKey, PublicKey, MAX_NETWORK_KEYS};
use crate::wire::control::VersionRange;
use crate::wire::PREFIX_LEN;

mod record;

pub use record::{Opener, Sealer, MAX_PLAIN, MAX_RECORD, TAG_LEN};

/// The Noise protocol name, with the default cipher.
pub const NOISE_PATTERN: &str = "Noise_XXpsk0_25519_ChaChaPoly_SHA256";

/// The Noise protocol name with AES-256-GCM.
pub const NOISE_PATTERN_AES: &str = "Noise_XXpsk0_25519_AESGCM_SHA256";

/// The largest handshake unit, length prefix included.
pub const MAX_UNIT: usize = 512;

const MAGIC: [u8; 4] = *b"MBN1";
const PROLOGUE_LABEL: &[u8] = b"meshbus/noise/1";
const INIT: u8 = 1;
const RESPONSE: u8 = 2;
const FINISH: u8 = 3;
const REFUSE: u8 = 4;
/// Magic, type, key id, two versions, cipher.
const INIT_HEADER_LEN: usize = 4 + 1 + 8 + 2 + 2 + 1;

/// Why an acceptor refused a handshake, as its `Refuse` unit says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The acceptor holds no key of the id the dialler used.
    UnknownKey,
    /// The handshake failed its authentication (another key, network or prologue), or the
    /// acceptor does not allow the dialler's static key.
    Unauthorized,
    /// A code this version does not know.
    Other(u8),
}

impl Refusal {
    fn code(self) -> u8 {
        match self {
            Refusal::UnknownKey => 1,
            Refusal::Unauthorized => 2,
            Refusal::Other(c) => c,
        }
    }

    fn from_code(code: u8) -> Self {
        match code {
            1 => Refusal::UnknownKey,
            2 => Refusal::Unauthorized,
            c => Refusal::Other(c),
        }
    }
}

/// How a secure handshake failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NoiseError {
    /// The acceptor refused us.
    #[error("the peer refused the handshake ({0:?}): it holds none of our network keys, or another network name")]
    Refused(Refusal),
    /// The acceptor's static key is not one we allow.
    #[error("the peer's static key {0} is not in this node's allowed peers")]
    NotAllowed(PublicKey),
    /// The peer's message failed its authentication.
    #[error("the peer's handshake message failed authentication: {0}")]
    Unauthenticated(&'static str),
    /// A unit that is not the one expected, or not a unit at all.
    #[error("malformed handshake unit: {0}")]
    Malformed(&'static str),
    /// A record failed: too large, out of nonces or unauthenticated.
    #[error("record: {0}")]
    Record(&'static str),
    /// The handshake is over; nothing more may be fed to it.
    #[error("the secure handshake is over")]
    Finished,
    /// The Noise library refused the configuration.
    #[error("noise: {0}")]
    Noise(#[from] snow::Error),
}

impl From<NoiseError> for crate::Error {
    fn from(err: NoiseError) -> Self {
        use crate::ErrorKind;
        let kind = match &err {
            NoiseError::Refused(_) | NoiseError::NotAllowed(_) | NoiseError::Unauthenticated(_) => {
                ErrorKind::Unauthorized
            }
            NoiseError::Malformed(_) | NoiseError::Record(_) => ErrorKind::Decode,
            NoiseError::Finished => ErrorKind::Closed,
            NoiseError::Noise(_) => ErrorKind::Config,
        };
        crate::Error::new(kind)
            .with_detail(err.to_string())
            .with_source(err)
    }
}

/// What this node brings to every secure handshake.
#[derive(Debug, Clone)]
pub struct NoiseConfig {
    identity: Identity,
    keys: Vec<NetworkKey>,
    allowed: Option<Arc<[PublicKey]>>,
    network: String,
    versions: VersionRange,
    cipher: Cipher,
}

impl NoiseConfig {
    /// A node of `network` with static key pair `identity`, holding no network key (the
    /// [open](NetworkKey::open) one), speaking [`VersionRange::CURRENT`], allowing any peer.
    pub fn new(identity: Identity, network: impl Into<String>) -> Self {
        NoiseConfig {
            identity,
            keys: vec![NetworkKey::open()],
            allowed: None,
            network: network.into(),
            versions: VersionRange::CURRENT,
            cipher: Cipher::ChaChaPoly,
        }
    }

    /// Sets the keyring: dials use the first key the acceptor has, trying them in this order;
    /// accepts take any. Empty means the open key; more than [`MAX_NETWORK_KEYS`] are cut.
    pub fn with_keys(mut self, mut keys: Vec<NetworkKey>) -> Self {
        keys.truncate(MAX_NETWORK_KEYS);
        if keys.is_empty() {
            keys.push(NetworkKey::open());
        }
        self.keys = keys;
        self
    }

    /// Allows only peers with these static keys; `None` allows any holder of a network key.
    pub fn with_allowed(mut self, allowed: Option<Vec<PublicKey>>) -> Self {
        self.allowed = allowed.map(Arc::from);
        self
    }

    /// Sets the version range the dialler announces (and binds in the prologue).
    pub fn with_versions(mut self, versions: VersionRange) -> Self {
        self.versions = versions;
        self
    }

    /// Sets the cipher this node dials with (acceptors take either, as the dialler says).
    pub fn with_cipher(mut self, cipher: Cipher) -> Self {
        self.cipher = cipher;
        self
    }

    /// This node's static key pair.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The keyring.
    pub fn keys(&self) -> &[NetworkKey] {
        &self.keys
    }

    fn allows(&self, key: &PublicKey) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|allowed| allowed.contains(key))
    }

    /// A Noise handshake state under `key`, its prologue bound to our network and `header`
    /// (the `Init` unit's clear header).
    fn start(
        &self,
        key: &NetworkKey,
        header: &[u8],
        cipher: Cipher,
        initiator: bool,
    ) -> Result<snow::HandshakeState, NoiseError> {
        let pattern = match cipher {
            Cipher::ChaChaPoly => NOISE_PATTERN,
            Cipher::AesGcm => NOISE_PATTERN_AES,
        };
        let params: snow::params::NoiseParams = pattern.parse()?;
        let network = self.network.as_bytes();
        let network = &network[..network.len().min(usize::from(u16::MAX))];
        let mut prologue =
            Vec::with_capacity(PROLOGUE_LABEL.len() + 2 + network.len() + header.len());
        prologue.extend_from_slice(PROLOGUE_LABEL);
        prologue.put_u16(network.len() as u16);
        prologue.extend_from_slice(network);
        prologue.extend_from_slice(header);
        let builder = snow::Builder::new(params)
            .local_private_key(self.identity.secret())?
            .psk(0, key.as_bytes())?
            .prologue(&prologue)?;
        Ok(if initiator {
            builder.build_initiator()?
        } else {
            builder.build_responder()?
        })
    }
}

/// What the handshake asks of the runtime next.
#[derive(Debug)]
#[non_exhaustive]
pub enum SecureStep {
    /// Write this unit, then feed the next unit read.
    Send(Bytes),
    /// The handshake completed: write `send` if any (before any record), then seal and open
    /// everything with `session`.
    Done {
        /// The dialler's last unit (`Finish`), to write to the acceptor; `None` at the
        /// acceptor.
        send: Option<Bytes>,
        /// The keys of this link and the peer's static key.
        session: Session,
    },
    /// We refuse the dialler: write `send` (a clear `Refuse`), then close. `why` is for the
    /// log.
    Refuse {
        /// The `Refuse` unit.
        send: Bytes,
        /// Why, for the log.
        why: &'static str,
    },
}

/// The keys of an established link, and who is at the other end.
#[derive(Debug)]
pub struct Session {
    transport: Arc<snow::StatelessTransportState>,
    remote: PublicKey,
    key_id: KeyId,
}

impl Session {
    /// The peer's static key, proven by the handshake.
    pub fn remote_key(&self) -> PublicKey {
        self.remote
    }

    /// The id of the network key the link was made with.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The sealing and opening halves, for the writer and the reader.
    pub fn split(self) -> (Sealer, Opener) {
        (
            Sealer::new(Arc::clone(&self.transport)),
            Opener::new(self.transport),
        )
    }
}

#[derive(Debug)]
enum State {
    /// Dialler: `Init` sent under `keys[key]`, waiting for `Response` or `Refuse`.
    Dialled {
        hs: Box<snow::HandshakeState>,
        key: usize,
    },
    /// Acceptor: waiting for an `Init`; `attempts` made with unknown key ids so far.
    Accepting {
        attempts: usize,
    },
    /// Acceptor: `Response` sent, waiting for `Finish`.
    Responded {
        hs: Box<snow::HandshakeState>,
        key_id: KeyId,
    },
    Over,
}

/// The secure handshake of one connection, from either end: plain state, fed the units read,
/// returning the units to write. The runtime bounds it with the handshake's deadline.
#[derive(Debug)]
pub struct SecureHandshake {
    config: NoiseConfig,
    state: State,
}

impl SecureHandshake {
    /// Starts dialling: the handshake and the `Init` unit to write.
    ///
    /// # Errors
    ///
    /// [`NoiseError::Noise`] when the Noise library refuses the configuration.
    pub fn dial(config: &NoiseConfig) -> Result<(SecureHandshake, Bytes), NoiseError> {
        let mut handshake = SecureHandshake {
            config: config.clone(),
            state: State::Over,
        };
        let init = handshake.init(0)?;
        Ok((handshake, init))
    }

    /// Starts accepting: waits for the dialler's `Init`.
    pub fn accept(config: &NoiseConfig) -> SecureHandshake {
        SecureHandshake {
            config: config.clone(),
            state: State::Accepting { attempts: 0 },
        }
    }

    /// Whether this acceptor has answered an `Init` with `Refuse { unknown key }`: a dialler
    /// that gives up now holds none of its keys.
    pub fn refused_a_key(&self) -> bool {
        matches!(self.state, State::Accepting { attempts } if attempts > 0)
    }

    /// Whether the handshake has completed or failed.
    pub fn is_over(&self) -> bool {
        matches!(self.state, State::Over)
    }

    /// An `Init` under key `index` of the ring; the dialler now waits for its answer.
    fn init(&mut self, index: usize) -> Result<Bytes, NoiseError> {
        let key = &self.config.keys[index];
        let mut unit = unit_start(INIT);
        unit.put_slice(key.id().as_bytes());
        unit.put_u16(self.config.versions.min);
        unit.put_u16(self.config.versions.max);
        unit.put_u8(self.config.cipher.code());
        let mut hs = self
            .config
            .start(key, &unit[PREFIX_LEN..], self.config.cipher, true)?;
        let unit = unit_end(unit, &mut hs)?;
        self.state = State::Dialled {
            hs: Box::new(hs),
            key: index,
        };
        Ok(unit.freeze())
    }

    /// Handles one unit read from the peer (a whole transport frame, length prefix included).
    ///
    /// # Errors
    ///
    /// - [`NoiseError::Refused`]: the acceptor refused us, and we have no other key to try;
    /// - [`NoiseError::NotAllowed`]: the acceptor's static key is not allowed;
    /// - [`NoiseError::Unauthenticated`]: a message of the acceptor failed authentication;
    /// - [`NoiseError::Malformed`]: not the unit expected, at either end (an acceptor met with
    ///   garbage closes without a word);
    /// - [`NoiseError::Finished`]: the handshake was already over.
    ///
    /// After an error the handshake is over.
    pub fn on_unit(&mut self, unit: &[u8]) -> Result<SecureStep, NoiseError> {
        let state = std::mem::replace(&mut self.state, State::Over);
        let (kind, body) = parse_unit(unit)?;
        match (state, kind) {
            (State::Dialled { hs, key }, RESPONSE) => self.on_response(*hs, key, body),
            (State::Dialled { key, .. }, REFUSE) => {
                let refusal = Refusal::from_code(body.first().copied().unwrap_or(0));
                let next = key + 1;
                if refusal == Refusal::UnknownKey && next < self.config.keys.len() {
                    return self.init(next).map(SecureStep::Send);
                }
                Err(NoiseError::Refused(refusal))
            }
            (State::Accepting { attempts }, INIT) => self.on_init(unit, body, attempts),
            (State::Responded { hs, key_id }, FINISH) => self.on_finish(*hs, key_id, body),
            (State::Over, _) => Err(NoiseError::Finished),
            _ => Err(NoiseError::Malformed("not the handshake unit expected")),
        }
    }

    fn on_init(
        &mut self,
        unit: &[u8],
        body: &[u8],
        attempts: usize,
    ) -> Result<SecureStep, NoiseError> {
        // `body` follows magic and type; the header is the unit's clear start.
        if body.len() < INIT_HEADER_LEN - 5 {
            return Err(NoiseError::Malformed("a short Init"));
        }
        let header = &unit[PREFIX_LEN..PREFIX_LEN + INIT_HEADER_LEN];
        let mut id = [0; 8];
        id.copy_from_slice(&body[..8]);
        let Some(cipher) = Cipher::from_code(body[12]) else {
            return Err(NoiseError::Malformed("an Init with an unknown cipher"));
        };
        let message = &body[13..];
        let Some(key) = self.config.keys.iter().find(|k| k.id().as_bytes() == &id) else {
            let attempts = attempts + 1;
            if attempts >= MAX_NETWORK_KEYS {
                return Err(NoiseError::Malformed("too many Init units"));
            }
            self.state = State::Accepting { attempts };
            return Ok(SecureStep::Send(refuse_unit(Refusal::UnknownKey)));
        };
        let mut hs = self.config.start(key, header, cipher, false)?;
        let mut payload = [0; MAX_UNIT];
        if hs.read_message(message, &mut payload).is_err() {
            return Ok(SecureStep::Refuse {
                send: refuse_unit(Refusal::Unauthorized),
                why: "its first message failed authentication: a wrong network key, network name or version range",
            });
        }
        let unit = unit_end(unit_start(RESPONSE), &mut hs)?;
        self.state = State::Responded {
            hs: Box::new(hs),
            key_id: key.id(),
        };
        Ok(SecureStep::Send(unit.freeze()))
    }

    fn on_response(
        &mut self,
        mut hs: snow::HandshakeState,
        key: usize,
        body: &[u8],
    ) -> Result<SecureStep, NoiseError> {
        let mut payload = [0; MAX_UNIT];
        hs.read_message(body, &mut payload)
            .map_err(|_| NoiseError::Unauthenticated("the acceptor's answer"))?;
        let remote = remote_key(&hs)?;
        if !self.config.allows(&remote) {
            return Err(NoiseError::NotAllowed(remote));
        }
        let unit = unit_end(unit_start(FINISH), &mut hs)?;
        let session = Session {
            transport: Arc::new(hs.into_stateless_transport_mode()?),
            remote,
            key_id: self.config.keys[key].id(),
        };
        Ok(SecureStep::Done {
            send: Some(unit.freeze()),
            session,
        })
    }

    fn on_finish(
        &mut self,
        mut hs: snow::HandshakeState,
        key_id: KeyId,
        body: &[u8],
    ) -> Result<SecureStep, NoiseError> {
        let mut payload = [0; MAX_UNIT];
        if hs.read_message(body, &mut payload).is_err() {
            return Ok(SecureStep::Refuse {
                send: refuse_unit(Refusal::Unauthorized),
                why: "its last message failed authentication",
            });
        }
        let remote = remote_key(&hs)?;
        if !self.config.allows(&remote) {
            return Ok(SecureStep::Refuse {
                send: refuse_unit(Refusal::Unauthorized),
                why: "its static key is not among the allowed peers",
            });
        }
        let session = Session {
            transport: Arc::new(hs.into_stateless_transport_mode()?),
            remote,
            key_id,
        };
        Ok(SecureStep::Done {
            send: None,
            session,
        })
    }
}

fn remote_key(hs: &snow::HandshakeState) -> Result<PublicKey, NoiseError> {
    hs.get_remote_static()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .map(PublicKey::from_bytes)
        .ok_or(NoiseError::Malformed("no static key"))
}

/// A unit of type `kind` under construction: a length placeholder, magic and type.
fn unit_start(kind: u8) -> BytesMut {
    let mut unit = BytesMut::with_capacity(MAX_UNIT);
    unit.put_u32(0);
    unit.put_slice(&MAGIC);
    unit.put_u8(kind);
    unit
}

/// Ends `unit` with the next Noise message of `hs` and writes its length prefix.
fn unit_end(mut unit: BytesMut, hs: &mut snow::HandshakeState) -> Result<BytesMut, NoiseError> {
    let mut msg = [0; MAX_UNIT];
    let n = hs.write_message(&[], &mut msg)?;
    unit.put_slice(&msg[..n]);
    let len = (unit.len() - PREFIX_LEN) as u32;
    unit[..PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(unit)
}

fn refuse_unit(refusal: Refusal) -> Bytes {
    let mut unit = BytesMut::with_capacity(PREFIX_LEN + 10);
    unit.put_u32(10);
    unit.put_slice(&MAGIC);
    unit.put_u8(REFUSE);
    unit.put_u8(refusal.code());
    unit.put_u32(0);
    unit.freeze()
}

/// A unit's type and what follows magic and type.
fn parse_unit(unit: &[u8]) -> Result<(u8, &[u8]), NoiseError> {
    if unit.len() > MAX_UNIT {
        return Err(NoiseError::Malformed("a unit over the handshake's size"));
    }
    let body = unit
        .get(PREFIX_LEN..)
        .ok_or(NoiseError::Malformed("no length"))?;
    if body.len() < MAGIC.len() + 1 || body[..MAGIC.len()] != MAGIC {
        return Err(NoiseError::Malformed("not a meshbus secure handshake"));
    }
    Ok((body[MAGIC.len()], &body[MAGIC.len() + 1..]))
}

#[cfg(test)]
mod tests;
