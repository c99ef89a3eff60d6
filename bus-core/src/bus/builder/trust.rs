//! The builder's trust settings: network keys, the node's identity, pinned peers, and the
//! check that keeps a keyless node off the network.

use std::path::PathBuf;

use super::BusBuilder;
use crate::error::Error;
use crate::proto::noise::NoiseConfig;
use crate::transport::Addr;
use crate::trust::{Cipher, Identity, NetworkKey, PublicKey, MAX_NETWORK_KEYS};

/// What the builder was told about trust.
#[derive(Debug, Default)]
pub(super) struct TrustOptions {
    keys: Vec<NetworkKey>,
    key_files: Vec<PathBuf>,
    identity: Option<Identity>,
    identity_file: Option<PathBuf>,
    allowed: Option<Vec<PublicKey>>,
    insecure: bool,
    cipher: Cipher,
}

impl BusBuilder {
    /// The network's secret key: only nodes holding it get in, and every frame is encrypted
    /// under keys derived from it and the two nodes' static keys. The same as
    /// [`network_keys([key])`](Self::network_keys).
    ///
    /// A node without a key runs on loopback, Unix sockets and in-memory networks only
    /// (see [`insecure`](Self::insecure)); keyed and keyless nodes never talk.
    ///
    /// ```
    /// use meshbus_core::trust::NetworkKey;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), meshbus_core::Error> {
    /// let key: NetworkKey = "q0j3Ge7T0P8mH4bXcqm9sSUUo8Jk1tNj5l6Kq4m2v1Y=".parse()?;
    /// let bus = meshbus_core::Bus::builder().network_key(key).start().await?;
    /// # bus.shutdown().await
    /// # }
    /// ```
    pub fn network_key(self, key: NetworkKey) -> Self {
        self.network_keys([key])
    }

    /// The network's keyring, for rotating keys without downtime: the node dials with the
    /// first key of this list that the other side holds and accepts any of them. Rotate from
    /// `k1` to `k2` by giving every node `[k2, k1]` (one by one, with
    /// [`Bus::set_network_keys`](crate::Bus::set_network_keys) or a restart), then `[k2]`.
    /// At most [`MAX_NETWORK_KEYS`]; more fail [`start`](Self::start).
    pub fn network_keys(mut self, keys: impl IntoIterator<Item = NetworkKey>) -> Self {
        self.trust.keys = keys.into_iter().collect();
        self
    }

    /// Reads the network key at start from `path` (base64 text, as
    /// `openssl rand -base64 32 > network.key` writes it), after any keys given before; a
    /// missing or bad file fails [`start`](Self::start).
    pub fn network_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.trust.key_files.push(path.into());
        self
    }

    /// This node's static key pair; by default a new one at every start (so a new node id).
    pub fn identity(mut self, identity: Identity) -> Self {
        self.trust.identity = Some(identity);
        self
    }

    /// Keeps this node's static key pair in `path`: read at start, or created there (mode
    /// 0600) if missing, so the node keeps its id and public key across restarts.
    pub fn identity_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.trust.identity_file = Some(path.into());
        self
    }

    /// Links only with nodes holding one of these static keys (pinning): the others are
    /// refused in the handshake, as dialler and as acceptor. By default any holder of the
    /// network key is let in.
    pub fn allow_peers(mut self, keys: impl IntoIterator<Item = PublicKey>) -> Self {
        self.trust.allowed.get_or_insert_with(Vec::new).extend(keys);
        self
    }

    /// The cipher this node dials with (default ChaCha20-Poly1305); it accepts links in
    /// either, as the dialler chooses.
    pub fn cipher(mut self, cipher: Cipher) -> Self {
        self.trust.cipher = cipher;
        self
    }

    /// Lets a node without a network key listen on and dial addresses beyond loopback. Its
    /// links are still encrypted, but under a key everyone knows: anyone who can reach the
    /// node can join the mesh. A warning is logged at start. Not for production.
    pub fn insecure(mut self) -> Self {
        self.trust.insecure = true;
        self
    }
}

/// The trust a node starts with: its Noise configuration and whether it must keep to local
/// addresses.
pub(super) struct Trust {
    /// The node's static key pair, keyring, pinned peers and cipher.
    pub(super) noise: NoiseConfig,
    /// No network key and not `insecure`: only loopback, Unix and in-memory addresses.
    pub(super) local_only: bool,
}

impl TrustOptions {
    /// Loads what is in files, checks the rest: the trust of a node of `network`. `seeded`
    /// gives an identity derived from the builder's seed when none was set.
    pub(super) fn resolve(self, network: &str, seeded: Option<[u8; 32]>) -> Result<Trust, Error> {
        let mut keys = self.keys;
        for path in &self.key_files {
            keys.push(NetworkKey::from_file(path)?);
        }
        if keys.len() > MAX_NETWORK_KEYS {
            return Err(Error::config(format!(
                "{} network keys given; a node holds at most {MAX_NETWORK_KEYS}",
                keys.len()
            )));
        }
        let identity = match (self.identity, self.identity_file) {
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    "both `identity` and `identity_file` are set: choose one",
                ))
            }
            (Some(identity), None) => identity,
            (None, Some(path)) => Identity::load_or_create(path)?,
            (None, None) => seeded.map_or_else(Identity::generate, Identity::from_secret),
        };
        if self.allowed.as_ref().is_some_and(Vec::is_empty) {
            return Err(Error::config(
                "`allow_peers` was given no key: the node would link with nobody",
            ));
        }
        let local_only = keys.is_empty() && !self.insecure;
        if keys.is_empty() && self.insecure {
            tracing::warn!(
                "this node runs without a network key (`insecure`): anyone who reaches it can join the mesh"
            );
        }
        let noise = NoiseConfig::new(identity, network)
            .with_keys(keys)
            .with_allowed(self.allowed)
            .with_cipher(self.cipher);
        Ok(Trust { noise, local_only })
    }
}

/// Refuses, for a node without a network key, an address beyond this machine.
pub(crate) fn check_local(addr: &Addr, what: &str) -> Result<(), Error> {
    if addr.is_local() {
        return Ok(());
    }
    Err(Error::config(format!(
        "{what} {addr} without a network key: anyone who reaches it could join the mesh. \
         Give every node the network's key with `.network_key(key)` or \
         `.network_key_file(\"network.key\")` (make one with `openssl rand -base64 32 > network.key` \
         or `NetworkKey::generate()`), or call `.insecure()` to run without one (not for production)"
    )))
}
